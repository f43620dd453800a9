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

/* How a store is opened beyond its name (all optional). */
typedef struct sluice_store_options {
	/*
	 * Borrowed: a local directory for the segment being written, for stores
	 * that cannot append (object stores). Needed only to write.
	 */
	const char *spool;
	/*
	 * Stores that cannot append: count a frame durable once the spool has
	 * fsynced it, instead of once the store has confirmed its sealed segment.
	 */
	bool ack_local;
	/*
	 * Create what the store needs to exist if it is missing (the JetStream
	 * stream of a nats:// store; a directory is always created).
	 */
	bool create;
} sluice_store_options;

/* What a backend can do; the writer and the reader adapt to it. */
typedef struct sluice_store_caps {
	/* Readers see a segment grow while it is written; otherwise a segment
	 * appears only once it is sealed, whole. */
	bool append_visible;
	/* Changes are notified (sluice_store_watch_*); otherwise readers poll. */
	bool watch;
	/* sluice_segment_write makes a chunk durable in the store itself; otherwise
	 * only sluice_segment_seal does (and a write only protects against a crash
	 * of the writer, through its spool). */
	bool durable_write;
	/* Listing a stream costs about as much as probing one name. */
	bool cheap_list;
	/* Largest chunk one sluice_segment_write takes at once (a hint). */
	size_t max_chunk;
} sluice_store_caps;

/*
 * sluice_store_open opens a store named by spec: "file://PATH" or a plain
 * path for a local directory (created if missing), or
 * "s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=1]" for an S3
 * bucket, or "nats://HOST:PORT[,HOST:PORT...]/JSSTREAM[?creds=FILE&...]" for
 * a NATS JetStream stream (docs/architecture.md, "Stores"). The backend is
 * chosen by the URI scheme.
 */
bool sluice_store_open(const char *spec, sluice_store **out);
/* sluice_store_open_with is sluice_store_open with options (NULL: defaults). */
bool sluice_store_open_with(const char *spec, const sluice_store_options *options,
			    sluice_store **out);
/* sluice_store_close releases the store; NULL is a no-op. */
void sluice_store_close(sluice_store *store);
/* sluice_store_location describes the store for messages (never with credentials). */
const char *sluice_store_location(const sluice_store *store);
/* sluice_store_caps_get tells what the store's backend can do. */
const sluice_store_caps *sluice_store_caps_get(const sluice_store *store);

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

/*
 * sluice_store_read_from tells the store that this handle reads stream from
 * the segment holding from_txseq on, before it first lists or reads it (a
 * reader resuming mid-stream). A hint: stores that list names ignore it; a
 * NATS store starts replaying the stream at that segment's first message
 * instead of the stream's first, and its listings then omit earlier
 * segments. Given after the handle has used the stream, it has no effect.
 */
void sluice_store_read_from(sluice_store *store, const char *stream, uint64_t from_txseq);

/* sluice_store_list_calls counts the listings of this store handle (diagnostics, tests). */
uint64_t sluice_store_list_calls(const sluice_store *store);

/*
 * sluice_store_segment_open opens a segment for reading or, with writable,
 * for writing on (the writer's own unsealed segment, after a crash); create
 * makes a new empty segment (failing if it exists) and makes its name
 * durable.
 */
bool sluice_store_segment_open(sluice_store *store, const char *stream, uint64_t first_txseq,
			       bool writable, bool create, sluice_segment **out);
/*
 * sluice_store_segment_probe tells whether the segment starting at
 * first_txseq exists, without listing the stream (a stat, a HEAD request).
 */
bool sluice_store_segment_probe(sluice_store *store, const char *stream, uint64_t first_txseq,
				bool *exists);
/*
 * sluice_store_segment_put stores a whole sealed segment at once. It never
 * replaces a segment: one with the same name and the same bytes is success
 * (a repeated copy), one with other bytes is an error.
 */
bool sluice_store_segment_put(sluice_store *store, const char *stream, uint64_t first_txseq,
			      const void *data, size_t len);
/* sluice_store_segment_remove deletes a segment (only an unsealed, empty one). */
bool sluice_store_segment_remove(sluice_store *store, const char *stream, uint64_t first_txseq);

const char *sluice_segment_name(const sluice_segment *seg);
bool sluice_segment_size(sluice_segment *seg, uint64_t *size);
/* sluice_segment_read reads up to len bytes at off; *got < len only at the end. */
bool sluice_segment_read(sluice_segment *seg, uint64_t off, void *buf, size_t len, size_t *got);
/*
 * sluice_segment_write makes chunk (whole frames) durable after everything
 * written before it; see sluice_store_caps.durable_write for where. With
 * durable false it only writes it (and starts its writeback): the next
 * durable write, or the seal, makes it durable. The writer passes false for
 * the chunks it pushes inside a large transaction, which nobody waits for.
 * len may be 0: a durable write of nothing makes the earlier writes durable.
 */
bool sluice_segment_write(sluice_segment *seg, const void *chunk, size_t len, bool durable);
/* sluice_segment_truncate cuts the segment to size bytes, durably. */
bool sluice_segment_truncate(sluice_segment *seg, uint64_t size);
/*
 * sluice_segment_seal makes a finished segment durable in the store and
 * immutable (an object store uploads it here).
 */
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
 * sluice_store_lock_held tells, without logging, whether another writer
 * holds the right to append to stream now (a standby waits while it does).
 * @return false after logging when the store could not be asked.
 */
bool sluice_store_lock_held(sluice_store *store, const char *stream, bool *held);

/*
 * sluice_store_watch_open prepares to wait for changes to a stream (new
 * segments, appended bytes); it fails quietly where caps.watch is false.
 */
bool sluice_store_watch_open(sluice_store *store, const char *stream, sluice_store_watch **out);
/* sluice_store_watch_wait: 1 when something may have changed, 0 on timeout, -1 on error. */
int sluice_store_watch_wait(sluice_store_watch *watch, int timeout_ms);
void sluice_store_watch_close(sluice_store_watch *watch);

#endif
