/* Store backends: where segment files live. Capture and apply see only this API. */
#ifndef SLUICE_STORE_BACKEND_H
#define SLUICE_STORE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sluice_store sluice_store;
typedef struct sluice_segment sluice_segment;
typedef struct sluice_store_watch sluice_store_watch;
typedef struct sluice_store_lock sluice_store_lock;

#define SLUICE_SEGMENT_NAME_SIZE 21 /* 16 hex digits + ".seg" + NUL */

/*
 * sluice_store_open opens a store named by spec: "file://PATH" or a plain
 * path for a local directory (created if missing).
 */
bool sluice_store_open(const char *spec, sluice_store **out);
/* sluice_store_close releases the store; NULL is a no-op. */
void sluice_store_close(sluice_store *store);
/* sluice_store_location describes the store for messages. */
const char *sluice_store_location(const sluice_store *store);

/* sluice_store_valid_stream_name accepts [A-Za-z0-9._-]{1,128}, not starting with '.'. */
bool sluice_store_valid_stream_name(const char *name);

/* sluice_store_segment_name formats the name of the segment starting at first_txseq. */
void sluice_store_segment_name(uint64_t first_txseq, char out[SLUICE_SEGMENT_NAME_SIZE]);

/*
 * sluice_store_list returns the first txseq of every segment of stream in
 * ascending order (*firsts is owned by the caller; free()). A stream that
 * does not exist has no segments. Files that are not segment names are
 * counted in *strays when strays is not NULL.
 */
bool sluice_store_list(sluice_store *store, const char *stream, uint64_t **firsts, size_t *n,
		       size_t *strays);

/* sluice_store_list_calls counts the listings of this store handle (diagnostics, tests). */
uint64_t sluice_store_list_calls(const sluice_store *store);

/*
 * sluice_store_segment_open opens a segment for reading or, with writable,
 * for appending; create makes a new empty segment (failing if it exists) and
 * makes its name durable.
 */
bool sluice_store_segment_open(sluice_store *store, const char *stream, uint64_t first_txseq,
			       bool writable, bool create, sluice_segment **out);
/* sluice_store_segment_remove deletes a segment (only an unsealed, empty one). */
bool sluice_store_segment_remove(sluice_store *store, const char *stream, uint64_t first_txseq);

const char *sluice_segment_name(const sluice_segment *seg);
bool sluice_segment_size(sluice_segment *seg, uint64_t *size);
/* sluice_segment_read reads up to len bytes at off; *got < len only at the end. */
bool sluice_segment_read(sluice_segment *seg, uint64_t off, void *buf, size_t len, size_t *got);
bool sluice_segment_append(sluice_segment *seg, const void *data, size_t len);
/* sluice_segment_sync makes everything appended so far durable. */
bool sluice_segment_sync(sluice_segment *seg);
/* sluice_segment_truncate cuts the segment to size bytes, durably. */
bool sluice_segment_truncate(sluice_segment *seg, uint64_t size);
/* sluice_segment_seal makes a finished segment durable and immutable. */
bool sluice_segment_seal(sluice_segment *seg);
/* sluice_segment_close releases the handle; NULL is a no-op. */
void sluice_segment_close(sluice_segment *seg);

/*
 * sluice_store_lock takes the exclusive right to append to stream, held
 * until sluice_store_unlock; fails (and says who holds it) if another
 * writer has it.
 */
bool sluice_store_lock_stream(sluice_store *store, const char *stream, sluice_store_lock **out);
/* sluice_store_unlock releases the lock; NULL is a no-op. */
void sluice_store_unlock(sluice_store_lock *lock);

/*
 * sluice_store_watch_open prepares to wait for changes to a stream (new
 * segments, appended bytes), without polling delays where the backend can.
 */
bool sluice_store_watch_open(sluice_store *store, const char *stream, sluice_store_watch **out);
/* sluice_store_watch_wait: 1 when something may have changed, 0 on timeout, -1 on error. */
int sluice_store_watch_wait(sluice_store_watch *watch, int timeout_ms);
void sluice_store_watch_close(sluice_store_watch *watch);

#endif
