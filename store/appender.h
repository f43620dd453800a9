/* Frame appender: the writer's second thread, which encodes frames and appends them in order. */
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
 * One thread (the writer's) hands over work; the appender's own thread does
 * it in the order it was handed over: compressing, hashing, chaining and
 * signing each frame, and writing frames, sealing and creating segments
 * through the store. At most `depth` pieces of work wait at once, so its
 * memory is bounded by `depth` frames' records plus one chunk of encoded
 * frames. Nothing it does counts as done until sluice_appender_wait returns
 * true: only then may the writer call what it handed over written or durable.
 */
typedef struct sluice_appender sluice_appender;

/* Where the stream ends, for the appender to go on from: a plain value. */
typedef struct sluice_appender_tail {
	uint8_t prev_hash[SLUICE_FRAME_HASH_SIZE]; /* chain hash of the last frame, or genesis */
	uint64_t next_frame_seq;
	sluice_segment *seg; /* owned by the appender once created; NULL: no segment open */
	uint64_t seg_size;   /* bytes in seg */
	uint64_t seg_frames; /* frames in seg */
} sluice_appender_tail;

typedef struct sluice_appender_options {
	int zstd_level;
	size_t max_chunk; /* hand encoded frames to the store once they reach this size */
	size_t depth;     /* pieces of work that may wait (at least 1) */
} sluice_appender_options;

/*
 * sluice_appender_create starts the appender of stream in store, signing with
 * key (all borrowed; they outlive it), continuing from tail (its segment is
 * the appender's from here on, also when creation fails).
 * @return NULL after logging when the thread or the zstd contexts cannot be made.
 */
sluice_appender *sluice_appender_create(sluice_store *store, const char *stream,
					const sluice_key *key,
					const sluice_appender_options *options,
					const sluice_appender_tail *tail);

/*
 * sluice_appender_free finishes what was handed over (skipped after a
 * failure), stops the thread, closes the open segment and releases
 * everything; NULL is a no-op. Call sluice_appender_wait first to learn
 * whether it all succeeded.
 */
void sluice_appender_free(sluice_appender *a);

/*
 * The calls that hand over work block while `depth` pieces wait, and return
 * false (without logging: the cause was logged when it happened) once the
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

/* sluice_appender_push hands the frames encoded so far to the store, to make them durable. */
bool sluice_appender_push(sluice_appender *a);

/* sluice_appender_seal pushes, then seals the open segment and closes it. */
bool sluice_appender_seal(sluice_appender *a);

/*
 * sluice_appender_wait blocks until everything handed over is done.
 * @return true when all of it succeeded, false once anything failed (logged
 * where it happened; the appender stays failed).
 */
bool sluice_appender_wait(sluice_appender *a);

/*
 * sluice_appender_segment_size: bytes of the open segment, frames not yet
 * handed to the store included. Exact once sluice_appender_wait returned;
 * before, it may not count what is still waiting.
 */
uint64_t sluice_appender_segment_size(sluice_appender *a);

/* sluice_appender_counters: frames and bytes (headers and payloads) encoded so far. */
void sluice_appender_counters(sluice_appender *a, uint64_t *frames, uint64_t *bytes);

#endif
