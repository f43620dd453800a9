/* Checked-frame cursor: the records of one authenticated, linked frame, decoded within limits. */
#ifndef SLUICE_STORE_CURSOR_H
#define SLUICE_STORE_CURSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "chain.h"
#include "frame.h"
#include "records.h"
#include "scan.h"

/*
 * Every reader of a stream (sluice_reader, sluice_verify_stream, writer
 * recovery) takes a frame through the same steps, so that all reach the same
 * verdict for the same bytes: sluice_scan_next authenticates it (header
 * first) and decides torn versus damage, sluice_chain_frame links it, and
 * this cursor decompresses it and hands out its records one at a time,
 * checking their order against the chain, their count against the header,
 * and the memory they decode into (SLUICE_FRAME_MAX_DECODED).
 */
typedef struct sluice_cursor sluice_cursor;

typedef enum sluice_cursor_status {
	SLUICE_CURSOR_RECORD = 1,     /* a record is returned */
	SLUICE_CURSOR_END = 0,        /* the records ended where the header says */
	SLUICE_CURSOR_E_FRAME = -1,   /* the payload does not decompress as stated */
	SLUICE_CURSOR_E_RECORDS = -2, /* a record does not decode, or the limits are passed */
	SLUICE_CURSOR_E_CHAIN = -3,   /* records out of order or disagreeing with the header */
} sluice_cursor_status;

sluice_cursor *sluice_cursor_create(void);
/* sluice_cursor_free releases it; NULL is a no-op. */
void sluice_cursor_free(sluice_cursor *c);

/*
 * sluice_cursor_load decompresses the payload of f, which sluice_scan_next
 * authenticated and sluice_chain_frame linked (f is only read during the call).
 * @return SLUICE_CURSOR_END when the frame is ready, or SLUICE_CURSOR_E_FRAME.
 */
sluice_cursor_status sluice_cursor_load(sluice_cursor *c, const sluice_scan_frame *f);

/*
 * sluice_cursor_next decodes the next record of the loaded frame and checks
 * it with sluice_chain_record; after the last one, sluice_chain_frame_end.
 * *rec stays valid until the next sluice_cursor_load.
 */
sluice_cursor_status sluice_cursor_next(sluice_cursor *c, sluice_chain *chain,
					const sluice_record **rec);

/* sluice_cursor_cause describes the last error (a static string). */
const char *sluice_cursor_cause(const sluice_cursor *c);

#endif
