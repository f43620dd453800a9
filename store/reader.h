/* Stream reader: authenticated, chain-checked records in txseq order, optionally live. */
#ifndef SLUICE_STORE_READER_H
#define SLUICE_STORE_READER_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "keys.h"
#include "records.h"

typedef struct sluice_reader sluice_reader;

/* Where the last returned record came from. */
typedef struct sluice_reader_position {
	uint64_t segment_first; /* segment name as a number */
	uint64_t frame_offset;
	uint64_t frame_seq;
	uint64_t txseq; /* transaction the record belongs to, 0 between transactions */
} sluice_reader_position;

typedef enum sluice_reader_status {
	SLUICE_READER_REWIND = 2, /* the writer restarted and cut the unfinished transaction
				     whose records were returned last (position txseq):
				     discard them; the stream goes on from before it */
	SLUICE_READER_RECORD = 1, /* *rec is set */
	SLUICE_READER_WAIT = 0,   /* everything complete so far was returned */
	SLUICE_READER_ERROR = -1, /* damage, untrusted key or I/O error (logged once) */
} sluice_reader_status;

/*
 * sluice_reader_open reads stream from the segment holding from_txseq
 * (1 = the start). Records of transactions before from_txseq are skipped;
 * relation descriptions are always tracked. store and trust are borrowed.
 */
bool sluice_reader_open(sluice_store *store, const char *stream, const sluice_trust *trust,
			uint64_t from_txseq, sluice_reader **out);
void sluice_reader_close(sluice_reader *r);

/*
 * sluice_reader_next returns the next record. The record and everything it
 * points to stay valid until the next call. Every frame is authenticated
 * (signature, payload hash) before it is decompressed or decoded.
 */
sluice_reader_status sluice_reader_next(sluice_reader *r, const sluice_record **rec);

/* sluice_reader_wait blocks until the stream may have grown or timeout_ms passed. */
bool sluice_reader_wait(sluice_reader *r, int timeout_ms);

const sluice_reader_position *sluice_reader_position_get(const sluice_reader *r);

/* What a reader has authenticated so far, for metrics. */
typedef struct sluice_reader_counters {
	uint64_t frames;     /* frames authenticated and decoded */
	uint64_t bytes;      /* their size in the store (headers and compressed payloads) */
	uint64_t head_txseq; /* the last complete transaction seen in the stream */
} sluice_reader_counters;

/* sluice_reader_counters_get reports what the reader has read. */
void sluice_reader_counters_get(const sluice_reader *r, sluice_reader_counters *out);

/* sluice_reader_relation returns the latest description of relation id, or NULL. */
const Sluice__V1__Relation *sluice_reader_relation(const sluice_reader *r, uint32_t id);

/* sluice_reader_error describes the error after SLUICE_READER_ERROR. */
const char *sluice_reader_error(const sluice_reader *r);

#endif
