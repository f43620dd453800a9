/* The table of functions a store backend implements (private to store/). */
#ifndef SLUICE_STORE_BACKEND_OPS_H
#define SLUICE_STORE_BACKEND_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/*
 * A backend keeps the segments of streams under a location. It declares what
 * it can do in caps (backend.h); the writer and the reader adapt to that
 * instead of assuming POSIX files:
 *
 * - segment_create/segment_write/segment_seal are how a segment is written:
 *   segment_write makes one chunk of whole frames durable after the ones
 *   before it (where caps.durable_write is false, "durable" means kept by the
 *   writer's own spool, and the segment reaches the store at segment_seal);
 *   a segment never changes after segment_seal returns.
 * - segment_put stores a whole, sealed segment at once, never replacing one.
 * - segment_open/segment_size/segment_read read a segment (ranges of bytes);
 *   segment_probe tells whether a segment exists without listing the stream.
 * - watch_* are NULL where the backend cannot notify (caps.watch false): the
 *   reader then polls with backoff.
 * - read_from is a hint before a reader's first use of a stream: it starts at
 *   the segment holding from_txseq. NULL where there is nothing to gain (a
 *   directory or a bucket lists names and reads only the segments asked
 *   for); a backend that replays a stream to know its segments (NATS) starts
 *   the replay at that segment, and its listings may then omit earlier ones.
 * - segment_truncate and segment_remove serve crash recovery of the segment
 *   the writer itself is writing; never of a sealed one.
 */
typedef struct sluice_store_ops {
	const char *scheme; /* "file", "s3" */
	bool (*open)(const char *location, const sluice_store_options *options, void **state,
		     sluice_store_caps *caps);
	void (*close)(void *state);
	void (*read_from)(void *state, const char *stream, uint64_t from_txseq);
	bool (*list)(void *state, const char *stream, uint64_t **firsts, size_t *n, size_t *strays);
	bool (*segment_probe)(void *state, const char *stream, const char *name, bool *exists);
	bool (*segment_open)(void *state, const char *stream, const char *name, bool writable,
			     void **seg);
	bool (*segment_create)(void *state, const char *stream, const char *name, void **seg);
	bool (*segment_put)(void *state, const char *stream, const char *name, const void *data,
			    size_t len);
	bool (*segment_remove)(void *state, const char *stream, const char *name);
	bool (*segment_size)(void *seg, uint64_t *size);
	bool (*segment_read)(void *seg, uint64_t off, void *buf, size_t len, size_t *got);
	bool (*segment_write)(void *seg, const void *chunk, size_t len, bool durable);
	bool (*segment_truncate)(void *seg, uint64_t size);
	bool (*segment_seal)(void *seg);
	void (*segment_close)(void *seg);
	bool (*lock)(void *state, const char *stream, void **lock);
	void (*unlock)(void *lock);
	/* whether another writer holds the stream's lock now, quietly (a standby asks) */
	bool (*lock_held)(void *state, const char *stream, bool *held);
	bool (*watch_open)(void *state, const char *stream, void **watch);
	int (*watch_wait)(void *watch, int timeout_ms);
	void (*watch_close)(void *watch);
} sluice_store_ops;

#endif
