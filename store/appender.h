/* Frame appender: the writer's threads; frames compressed in parallel, written in order. */
#ifndef SLUICE_STORE_APPENDER_H
#define SLUICE_STORE_APPENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "buf.h"
#include "frame.h"
#include "keys.h"

/*
 * One thread (the writer's) hands work over; the appender does it on
 * threads of its own, in the order it was handed over. Encoding threads
 * (one or more) compress frames and hash their payloads, several frames at
 * once; the store thread takes the frames in order, links each to the chain
 * (previous hash, frame number, FIRST flag), signs it and writes it, makes
 * what was written durable, and creates and seals segments through the
 * store. So while the store waits for a disk or a server, the next frames
 * are compressed, and while they are, the writer fills the next one.
 *
 * The queue is bounded: at most `depth` pieces of work wait or are being
 * done, so memory is bounded by `depth` frames (records and compressed
 * payload) plus one chunk of frames for the store.
 *
 * Nothing handed over counts as done until the appender says so: a push or
 * a seal carries a mark (what the writer had written when it asked) that
 * the appender reports back once everything before it is durable.
 */
typedef struct sluice_appender sluice_appender;

/* What the writer had written when it asked for a push or a seal: a plain value. */
typedef struct sluice_appender_mark {
	uint64_t txseq;    /* last transaction committed in a frame handed over */
	uint64_t position; /* its source position */
} sluice_appender_mark;

/* Where the stream ends, for the appender to go on from: a plain value. */
typedef struct sluice_appender_tail {
	uint8_t prev_hash[SLUICE_FRAME_HASH_SIZE]; /* chain hash of the last frame, or genesis */
	uint64_t next_frame_seq;
	sluice_segment *seg;         /* owned by the appender once created; NULL: no segment open */
	uint64_t seg_size;           /* bytes in seg */
	uint64_t seg_frames;         /* frames in seg */
	sluice_appender_mark synced; /* what the store holds durably (in its spool, or itself) */
	sluice_appender_mark sealed; /* what sealed segments hold */
} sluice_appender_tail;

typedef struct sluice_appender_options {
	int zstd_level;
	size_t max_chunk; /* hand encoded frames to the store once they reach this size */
	size_t depth;     /* pieces of work queued at most (at least encoders + 1) */
	size_t encoders;  /* encoding threads (1 to 16) */
} sluice_appender_options;

/*
 * sluice_appender_create starts the appender of stream in store, signing with
 * key (all borrowed; they outlive it), continuing from tail (its segment is
 * the appender's from here on, also when creation fails).
 * @return NULL after logging when a thread or the zstd contexts cannot be made.
 */
sluice_appender *sluice_appender_create(sluice_store *store, const char *stream,
					const sluice_key *key,
					const sluice_appender_options *options,
					const sluice_appender_tail *tail);

/*
 * sluice_appender_free finishes what was handed over (dropped after a
 * failure), stops the threads, closes the open segment and releases
 * everything; NULL is a no-op. Call sluice_appender_wait first to learn
 * whether it all succeeded.
 */
void sluice_appender_free(sluice_appender *a);

/*
 * The calls that hand work over block while `depth` pieces wait, and return
 * false (without logging: the cause was logged where it happened) once the
 * appender has failed; everything handed over after a failure is dropped.
 */

/* sluice_appender_open_segment creates the segment named by first_txseq and appends to it. */
bool sluice_appender_open_segment(sluice_appender *a, uint64_t first_txseq);

/*
 * sluice_appender_frame hands over the records raw[0..len) as the next frame
 * of the open segment, with the header fields the caller chose in *hdr
 * (flags other than FIRST, txseq range, times, record count). The appender
 * sets the rest: FIRST, stream id, frame number, key id and the chain. It
 * takes those bytes without copying them, by exchanging buffers, and leaves
 * what followed them (raw[len..)) at the start of *raw.
 */
bool sluice_appender_frame(sluice_appender *a, const sluice_frame_header *hdr, sluice_buf *raw,
			   size_t len);

/*
 * sluice_appender_push asks for every frame handed over to become durable
 * in the store (in its spool, for a store durable only at a seal); mark is
 * reported as synced once they are.
 */
bool sluice_appender_push(sluice_appender *a, sluice_appender_mark mark);

/* sluice_appender_seal is a push that then seals the open segment and closes it (mark: sealed). */
bool sluice_appender_seal(sluice_appender *a, sluice_appender_mark mark);

/*
 * sluice_appender_wait blocks until everything handed over is done.
 * @return true when all of it succeeded, false once anything failed.
 */
bool sluice_appender_wait(sluice_appender *a);

/* sluice_appender_failed: something failed (logged where it did); nothing more is written. */
bool sluice_appender_failed(sluice_appender *a);

/* sluice_appender_pending: a push or seal handed over is not done yet. */
bool sluice_appender_pending(sluice_appender *a);

/* sluice_appender_marks: the marks of the last push (synced) and the last seal (sealed) done. */
void sluice_appender_marks(sluice_appender *a, sluice_appender_mark *synced,
			   sluice_appender_mark *sealed);

/*
 * sluice_appender_segment_size: bytes of the open segment, frames not yet
 * written included. Exact once sluice_appender_wait returned; before, it may
 * not count frames still waiting to be encoded.
 */
uint64_t sluice_appender_segment_size(sluice_appender *a);

/* sluice_appender_counters: frames and bytes (headers and payloads) encoded so far. */
void sluice_appender_counters(sluice_appender *a, uint64_t *frames, uint64_t *bytes);

#endif
