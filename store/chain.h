/* Stream-level checks: hash chain, frame order, txseq density, seals, record order. */
#ifndef SLUICE_STORE_CHAIN_H
#define SLUICE_STORE_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "frame.h"
#include "keys.h"
#include "records.h"

typedef enum sluice_chain_status {
	SLUICE_CHAIN_OK = 0,
	SLUICE_CHAIN_E_STREAM = -1,       /* frame belongs to another stream */
	SLUICE_CHAIN_E_PREV_HASH = -2,    /* prev_hash is not the previous frame's hash */
	SLUICE_CHAIN_E_FRAME_SEQ = -3,    /* frame number is not the previous + 1 */
	SLUICE_CHAIN_E_TXSEQ_GAP = -4,    /* txseq does not continue where the last frame ended */
	SLUICE_CHAIN_E_CONT = -5,         /* continuation flag disagrees with the previous frame */
	SLUICE_CHAIN_E_FIRST = -6,        /* first-frame flag wrong for the position */
	SLUICE_CHAIN_E_NAME = -7,         /* segment name is not its first txseq */
	SLUICE_CHAIN_E_AFTER_SEAL = -8,   /* frame after the segment's seal */
	SLUICE_CHAIN_E_RECORD_ORDER = -9, /* begin/commit out of order or wrong txseq */
	SLUICE_CHAIN_E_FRAME_END = -10,   /* records disagree with the header's txseq range */
	SLUICE_CHAIN_E_TIME = -11,        /* commit time outside the header's time range */
	SLUICE_CHAIN_E_GENESIS = -12,     /* first frame does not chain to the stream's genesis */
	SLUICE_CHAIN_E_KEY = -13,         /* frame signed by a key other than the key in force */
	SLUICE_CHAIN_E_HANDOVER = -14,    /* key handover malformed or not alone in its frame */
} sluice_chain_status;

const char *sluice_chain_strerror(sluice_chain_status status);

/* Chain state: a plain value, copied freely. */
typedef struct sluice_chain {
	uint64_t stream_id;
	bool anchored; /* prev_hash/next_frame_seq/txseq_end are known */
	uint8_t prev_hash[SLUICE_FRAME_HASH_SIZE];
	uint64_t next_frame_seq;
	uint64_t txseq_end; /* header txseq_end of the previous frame */
	bool open;          /* previous frame ended inside a transaction */
	bool sealed;        /* current segment has seen its seal */
	/*
	 * The key in force (docs/format.md §8.4): unknown until the first frame
	 * checked, whose key must be a trust root; then only that key, until a
	 * handover names its successor. key_pk is set once a handover gave the
	 * public key (a root's comes from the trust set).
	 */
	bool key_known;
	uint8_t key_id[SLUICE_FRAME_KEY_ID_SIZE];
	bool key_has_pk;
	uint8_t key_pk[32];
	bool handover; /* the current frame hands over to next_pk */
	uint8_t next_pk[32];
	/* record state within the current frame */
	sluice_frame_header frame; /* header of the frame being checked */
	uint64_t cur_txseq;        /* transaction open, 0 when between transactions */
	bool cur_snapshot;         /* the open transaction is a snapshot */
	bool cur_kind_known;       /* its Begin or SnapshotBegin was seen */
	uint64_t next_txseq;       /* next transaction to begin */
	uint32_t records_seen;
} sluice_chain;

/* sluice_chain_init starts at the genesis of stream: txseq 1, frame 0. */
void sluice_chain_init(sluice_chain *chain, const char *stream);
/*
 * sluice_chain_init_unanchored starts with no knowledge of earlier frames:
 * the first frame checked is accepted as it is (for reading from the middle).
 */
void sluice_chain_init_unanchored(sluice_chain *chain, const char *stream);

/*
 * sluice_chain_key gives the public key that may sign the next frame, whose
 * header names key_id: the key in force once one is known, else a trust root
 * (trust borrowed). NULL when that key may not sign here.
 */
const uint8_t *sluice_chain_key(const sluice_chain *chain, const sluice_trust *trust,
				const uint8_t key_id[SLUICE_FRAME_KEY_ID_SIZE]);

/*
 * sluice_chain_check tells whether a frame header would link to the chain
 * (every check of sluice_chain_frame on the header) without advancing it.
 */
sluice_chain_status sluice_chain_check(const sluice_chain *chain, const sluice_frame_header *hdr,
				       bool first_in_segment, uint64_t segment_first);

/*
 * sluice_chain_frame checks an authenticated frame header against the chain
 * and advances it. first_in_segment tells whether it is at offset 0 of the
 * segment named by segment_first.
 */
sluice_chain_status sluice_chain_frame(sluice_chain *chain, const sluice_frame_header *hdr,
				       const uint8_t hash[SLUICE_FRAME_HASH_SIZE],
				       bool first_in_segment, uint64_t segment_first);

/* sluice_chain_record checks one decoded record of the current frame. */
sluice_chain_status sluice_chain_record(sluice_chain *chain, const sluice_record *rec);

/*
 * sluice_chain_frame_end checks that the frame's records ended where its
 * header says; after a frame holding a handover, the successor is in force.
 */
sluice_chain_status sluice_chain_frame_end(sluice_chain *chain);

/* sluice_chain_segment_start resets the per-segment state (seal seen). */
void sluice_chain_segment_start(sluice_chain *chain);

#endif
