/* Segment scanner: walks the frames of one segment, authenticating each header first. */
#ifndef SLUICE_STORE_SCAN_H
#define SLUICE_STORE_SCAN_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "buf.h"
#include "chain.h"
#include "frame.h"
#include "keys.h"

/*
 * The most bytes one interrupted append can leave after the last complete
 * frame: one header and the largest payload. A longer tail is damage, and no
 * scan reads further than this to decide.
 */
#define SLUICE_SCAN_MAX_TORN ((uint64_t)SLUICE_FRAME_HEADER_SIZE + SLUICE_FRAME_MAX_PAYLOAD)

typedef enum sluice_scan_status {
	SLUICE_SCAN_FRAME = 1,      /* an authenticated frame is in the result */
	SLUICE_SCAN_END = 0,        /* no more bytes */
	SLUICE_SCAN_TORN = -1,      /* an incomplete frame ends the segment */
	SLUICE_SCAN_IO = -2,        /* the backend failed (it logged why) */
	SLUICE_SCAN_BAD = -3,       /* damaged frame: see frame_status */
	SLUICE_SCAN_UNTRUSTED = -4, /* signed by a key that may not sign here: not a trust
				       root, or not the key in force (see key_bound) */
} sluice_scan_status;

/* One frame as the scanner returns it; payload is borrowed until the next call. */
typedef struct sluice_scan_frame {
	uint64_t offset; /* of the header within the segment */
	sluice_frame_header hdr;
	uint8_t header_bytes[SLUICE_FRAME_HEADER_SIZE];
	uint8_t hash[SLUICE_FRAME_HASH_SIZE]; /* chain hash of this frame */
	const uint8_t *payload;               /* borrowed */
	sluice_frame_status frame_status;     /* cause for SLUICE_SCAN_BAD */
	sluice_chain_status chain_status;     /* or this: an incomplete frame that does not link */
	bool key_bound; /* SLUICE_SCAN_UNTRUSTED: a key was in force, key_in_force */
	uint8_t key_in_force[SLUICE_FRAME_KEY_ID_SIZE];
} sluice_scan_frame;

/* sluice_scan_cause describes why a frame was not accepted (SLUICE_SCAN_BAD or TORN). */
const char *sluice_scan_cause(const sluice_scan_frame *f);

/*
 * sluice_scan_key_problem formats why a SLUICE_SCAN_UNTRUSTED frame's key may
 * not sign it, naming the key that signed and the key in force, into out.
 */
void sluice_scan_key_problem(const sluice_scan_frame *f, char *out, size_t size);

typedef struct sluice_scan sluice_scan;

/*
 * sluice_scan_create starts scanning seg (borrowed), the segment named by
 * segment_first, at offset 0. Frames are authenticated against trust (borrowed).
 */
sluice_scan *sluice_scan_create(sluice_segment *seg, uint64_t segment_first,
				const sluice_trust *trust);
void sluice_scan_free(sluice_scan *scan);

/* sluice_scan_seek continues at offset (a frame start found by an earlier scan). */
void sluice_scan_seek(sluice_scan *scan, uint64_t offset);
uint64_t sluice_scan_offset(const sluice_scan *scan);

/*
 * sluice_scan_next reads the frame at the current offset: header first
 * (structure, the key allowed at this point of chain, signature), then the payload in bounded
 * pieces while hashing it; nothing is allocated for a header that is not authentic. On
 * SLUICE_SCAN_FRAME it advances past the frame; the caller checks the link with sluice_chain_frame.
 * On SLUICE_SCAN_TORN and errors the offset stays at the frame start.
 *
 * chain (borrowed; NULL: no link required, any trusted key) is the state
 * before this frame; its key in force (sluice_chain_key) is the only key that
 * may sign the frame, or, before any frame was checked, a trust root.
 * What follows the last complete frame is torn only when it is what one
 * interrupted append of the next frame leaves (docs/format.md §9): fewer
 * bytes than a header; an authentic header that links to chain, with its
 * payload cut short or ending in zeroed blocks; or, for a header that does
 * not authenticate, at most SLUICE_SCAN_MAX_TORN bytes that are all zero
 * from the frame start or from the first block boundary inside the header.
 * Everything else is SLUICE_SCAN_BAD or SLUICE_SCAN_UNTRUSTED.
 */
sluice_scan_status sluice_scan_next(sluice_scan *scan, const sluice_chain *chain,
				    sluice_scan_frame *out);

/*
 * sluice_scan_next_header parses the header at the current offset WITHOUT
 * authenticating it and skips its payload (payload stays NULL). Only for
 * listing what a segment claims to hold; never decode anything after it.
 */
sluice_scan_status sluice_scan_next_header(sluice_scan *scan, sluice_scan_frame *out);

#endif
