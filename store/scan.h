/* Segment scanner: walks the frames of one segment, authenticating each. */
#ifndef SLUICE_STORE_SCAN_H
#define SLUICE_STORE_SCAN_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "buf.h"
#include "frame.h"
#include "keys.h"

typedef enum sluice_scan_status {
	SLUICE_SCAN_FRAME = 1,      /* an authenticated frame is in the result */
	SLUICE_SCAN_END = 0,        /* no more bytes */
	SLUICE_SCAN_TORN = -1,      /* an incomplete frame ends the segment */
	SLUICE_SCAN_IO = -2,        /* the backend failed (it logged why) */
	SLUICE_SCAN_BAD = -3,       /* damaged frame: see frame_status */
	SLUICE_SCAN_UNTRUSTED = -4, /* frame signed by a key not in the trust set */
} sluice_scan_status;

/* One frame as the scanner returns it; payload is borrowed until the next call. */
typedef struct sluice_scan_frame {
	uint64_t offset; /* of the header within the segment */
	sluice_frame_header hdr;
	uint8_t header_bytes[SLUICE_FRAME_HEADER_SIZE];
	uint8_t hash[SLUICE_FRAME_HASH_SIZE]; /* chain hash of this frame */
	const uint8_t *payload;               /* borrowed */
	sluice_frame_status frame_status;     /* cause for SLUICE_SCAN_BAD */
} sluice_scan_frame;

typedef struct sluice_scan sluice_scan;

/*
 * sluice_scan_open starts scanning seg (borrowed) at offset 0. Frames are
 * authenticated against trust (borrowed).
 */
sluice_scan *sluice_scan_create(sluice_segment *seg, const sluice_trust *trust);
void sluice_scan_free(sluice_scan *scan);

/* sluice_scan_seek continues at offset (a frame start found by an earlier scan). */
void sluice_scan_seek(sluice_scan *scan, uint64_t offset);
uint64_t sluice_scan_offset(const sluice_scan *scan);

/*
 * sluice_scan_next reads, parses and authenticates (signature, then payload
 * hash) the frame at the current offset and advances past it.
 * On SLUICE_SCAN_TORN and errors the offset stays at the frame start.
 * An incomplete header, or a complete correctly-signed header whose payload
 * runs past the end, is torn; trailing zero bytes are torn too.
 */
sluice_scan_status sluice_scan_next(sluice_scan *scan, sluice_scan_frame *out);

/*
 * sluice_scan_next_header parses the header at the current offset WITHOUT
 * authenticating it and skips its payload (payload stays NULL). Only for
 * listing what a segment claims to hold; never decode anything after it.
 */
sluice_scan_status sluice_scan_next_header(sluice_scan *scan, sluice_scan_frame *out);

#endif
