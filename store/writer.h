/* Stream writer: records into signed frames and segments, durably, with crash recovery. */
#ifndef SLUICE_STORE_WRITER_H
#define SLUICE_STORE_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "keys.h"
#include "records.h"

typedef struct sluice_writer sluice_writer;

typedef struct sluice_writer_options {
	size_t frame_target;     /* cut a frame when its records reach this size */
	uint64_t segment_target; /* seal a segment once it passes this size between transactions */
	int zstd_level;
	/*
	 * Frames cut but not yet written, at most: the writer's threads
	 * compress them (encode_threads at once), then sign and write them in
	 * order, while the next frame fills.
	 */
	size_t queue_frames;
	size_t encode_threads;
	/*
	 * Seal the open segment at the first flush between transactions once it
	 * is this old (0: only by size). Stores that show only sealed segments
	 * need it for readers to see recent commits.
	 */
	int64_t segment_max_age_ms;
	/*
	 * Borrowed, may be NULL: earlier keys of the stream. Recovery reads the
	 * newest frames; those written before the handover to the writer's key
	 * are signed by the key it succeeded, whose public key it needs.
	 */
	const sluice_trust *trust;
} sluice_writer_options;

/*
 * sluice_writer_default_options: 1 MiB frames, 64 MiB segments, zstd level 1,
 * 4 queued frames, 2 encoding threads.
 */
sluice_writer_options sluice_writer_default_options(void);

/* What the writer found at the end of the stream when it opened it. */
typedef struct sluice_writer_recovery {
	uint64_t torn_bytes;    /* bytes of an incomplete frame cut off */
	uint64_t partial_bytes; /* bytes of an unfinished transaction cut off */
	uint64_t partial_txseq; /* that transaction's txseq, 0 if none */
	bool removed_segment;   /* an empty or wholly partial segment was deleted */
} sluice_writer_recovery;

/*
 * sluice_writer_open opens stream in store for appending with key (borrowed;
 * both outlive the writer). The key in force at the end of an existing stream
 * must be this key: the stream was started with it, or a handover named it
 * (docs/format.md §8.4). Frames before that handover are authenticated with
 * options->trust. A torn last frame and an unfinished last transaction are cut off
 * (described in *recovery when not NULL) and the chain continues.
 */
bool sluice_writer_open(sluice_store *store, const char *stream, const sluice_key *key,
			const sluice_writer_options *options, sluice_writer **out,
			sluice_writer_recovery *recovery);

/*
 * sluice_writer_append adds a record. Begin and SnapshotBegin get the next
 * txseq (written into the record); Commit and SnapshotEnd get the open one.
 * Relation records are kept and written into each segment before the first
 * change that needs them. Row changes need an open transaction.
 */
bool sluice_writer_append(sluice_writer *w, sluice_record *rec);

/*
 * sluice_writer_flush writes the pending frame and makes everything durable
 * (in the store, or in the spool of a store that is durable only at a seal;
 * see sluice_store_caps). It seals instead when the segment is due by age.
 */
bool sluice_writer_flush(sluice_writer *w);

/*
 * sluice_writer_flush_async is sluice_writer_flush without the wait: the
 * writer's threads make it durable while the caller goes on appending;
 * sluice_writer_durable_txseq and _position move once they have.
 * @return false once the writer has failed.
 */
bool sluice_writer_flush_async(sluice_writer *w);

/*
 * sluice_writer_flush_due: a transaction was committed since a flush was
 * last asked for, or the open segment is due to seal by age.
 */
bool sluice_writer_flush_due(const sluice_writer *w);

/*
 * sluice_writer_unflushed_bytes: record bytes appended since a flush was
 * last asked for (what the next one has to make durable).
 */
uint64_t sluice_writer_unflushed_bytes(const sluice_writer *w);

/* sluice_writer_flushing: a flush or seal asked for is still being done. */
bool sluice_writer_flushing(const sluice_writer *w);

/*
 * sluice_writer_failed: an append, a flush or the writer's threads failed
 * (logged where it happened); the writer writes nothing more.
 */
bool sluice_writer_failed(const sluice_writer *w);

/* sluice_writer_seal_due_ms: ms until the open segment is due to seal by age; -1: not due. */
int64_t sluice_writer_seal_due_ms(const sluice_writer *w);

/*
 * sluice_writer_seal flushes and seals the open segment (at a transaction
 * boundary) and waits for it. Appends seal by size without waiting.
 */
bool sluice_writer_seal(sluice_writer *w);

/*
 * sluice_writer_handover ends the writer's use of its key: between
 * transactions, it writes the pending records, then one frame signed by the
 * current key holding only a KeyHandover to next_pk with reason (may be
 * NULL), and makes it durable. Every later frame of the stream must be signed
 * by next_pk, so the writer accepts no more records; reopen the stream with
 * the successor's secret key to go on.
 */
bool sluice_writer_handover(sluice_writer *w, const uint8_t next_pk[32], const char *reason);

/* sluice_writer_close flushes (unless the writer failed) and releases; NULL is a no-op. */
bool sluice_writer_close(sluice_writer *w);

/*
 * Last transaction fully appended (0 if none), last one the store took (safe
 * from a crash of this process) and last one durable where the store keeps
 * it (what may be acknowledged).
 */
uint64_t sluice_writer_last_txseq(const sluice_writer *w);
uint64_t sluice_writer_synced_txseq(const sluice_writer *w);
uint64_t sluice_writer_durable_txseq(const sluice_writer *w);
/*
 * Source position (docs/format.md §7.6) where the stream ends, 0 if unknown:
 * the end LSN of the last commit (PostgreSQL), or the cluster time of the last
 * commit, snapshot or positioned heartbeat (MongoDB); and the commit time of
 * the last committed transaction.
 */
uint64_t sluice_writer_last_position(const sluice_writer *w);
int64_t sluice_writer_last_commit_time(const sluice_writer *w);
/*
 * The resume token at that position (borrowed until the next append; NULL and
 * *len 0 when there is none: PostgreSQL, or a MongoDB snapshot's cluster time).
 */
const uint8_t *sluice_writer_last_token(const sluice_writer *w, size_t *len);
/* Source position of the last durable commit: what capture may acknowledge. */
uint64_t sluice_writer_durable_position(const sluice_writer *w);
/* Frames and bytes (headers and compressed payloads) this writer has written. */
void sluice_writer_counters(const sluice_writer *w, uint64_t *frames, uint64_t *bytes);
/* True while a transaction is open. */
bool sluice_writer_in_transaction(const sluice_writer *w);

#endif
