/* Capture sources: the table of functions a source plugs into the capture engine with. */
#ifndef SLUICE_CAPTURE_SOURCE_H
#define SLUICE_CAPTURE_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "records.h"
#include "writer.h"

/*
 * A source position is an ordered 64-bit value: a PostgreSQL LSN, or a
 * MongoDB cluster time (seconds << 32 | increment), which a resume token
 * accompanies. The engine only compares positions, keeps tokens and hands
 * both back to the source; what they mean is the source's (position_kind,
 * format_position). docs/format.md §7.6 says how the stream keeps them.
 */
typedef enum sluice_source_position_kind {
	SLUICE_SOURCE_POSITION_LSN,          /* PostgreSQL WAL position */
	SLUICE_SOURCE_POSITION_CLUSTER_TIME, /* MongoDB cluster time, with resume tokens */
} sluice_source_position_kind;

/* Result of opening or starting a source. */
typedef enum sluice_source_status {
	SLUICE_SOURCE_OK,
	SLUICE_SOURCE_RETRY, /* transient: connection lost or refused */
	SLUICE_SOURCE_BUSY,  /* held by another reader, e.g. a killed capture's walsender */
	SLUICE_SOURCE_FATAL, /* configuration problem: stop */
} sluice_source_status;

/* Result of one receive. */
typedef enum sluice_source_receive {
	SLUICE_SOURCE_RECEIVED, /* one message handled */
	SLUICE_SOURCE_IDLE,     /* nothing buffered: the engine does its idle work, then waits */
	SLUICE_SOURCE_LOST,     /* connection lost or undecodable data: the engine reconnects */
	SLUICE_SOURCE_RESTART,  /* the source must start again (not a failure): at once */
} sluice_source_receive;

/* The engine's side of a running capture, where a source emits its records (opaque). */
typedef struct sluice_capture_sink sluice_capture_sink;

/*
 * sluice_source_ops is what a source implements. state is the source's own
 * (opaque to the engine, created by the source's constructor, released by
 * free). Functions that fail log the cause once.
 */
typedef struct sluice_source_ops {
	const char *name;
	sluice_source_position_kind position_kind;
	/* format_position writes a position as the source's users know it. */
	void (*format_position)(uint64_t position, char *out, size_t size);
	/*
	 * position_time_us tells the wall time a position stands for (µs since
	 * the epoch) when positions are times, so that --until-time can stop an
	 * idle source; NULL when they are not.
	 */
	int64_t (*position_time_us)(uint64_t position);
	/* open connects and checks (or with --create, sets up) the source. */
	sluice_source_status (*open)(void *state, sluice_capture_sink *sink);
	/* current_position reads the source's present end: --exit-when-caught-up stops there. */
	bool (*current_position)(void *state, uint64_t *position);
	/*
	 * start begins streaming after *resume (the end of the stream's last
	 * transaction; sluice_capture_sink_resume_token has the token there). A
	 * source that first copies a snapshot writes it through
	 * sluice_capture_sink_writer and moves *resume to where the copy is
	 * consistent.
	 */
	sluice_source_status (*start)(void *state, sluice_capture_sink *sink, uint64_t *resume);
	/* receive handles at most one buffered message, emitting into sink; never blocks. */
	sluice_source_receive (*receive)(void *state, sluice_capture_sink *sink);
	/* wait blocks until data arrives or ms pass; false when the connection is lost. */
	bool (*wait)(void *state, int ms);
	/*
	 * ack tells the source what it received and what is durable in the
	 * stream (it may forget everything up to durable); with reply_requested
	 * it asks the source to report its position back
	 * (sluice_capture_sink_keepalive).
	 */
	bool (*ack)(void *state, uint64_t received, uint64_t durable, bool reply_requested);
	/* busy_subject names what was busy, e.g. `replication slot "s"`. */
	const char *(*busy_subject)(void *state);
	/* busy_reason says who holds it, after start or open returned BUSY. */
	const char *(*busy_reason)(void *state);
	/* close disconnects; the engine may open again. */
	void (*close)(void *state);
	/* free releases the state; NULL is a no-op. */
	void (*free)(void *state);
} sluice_source_ops;

/*
 * The sink. A source transaction is begin, then changes (relations may come
 * before any of them), then commit. The engine writes the Begin record only
 * with the first change, so a transaction left empty takes no txseq, and it
 * drops transactions already in the stream or past the --until bound.
 * Records are borrowed for the call.
 */

/*
 * sluice_capture_sink_begin starts a source transaction ending at
 * b->source_lsn; b (txseq unset) is copied, origin_node included until
 * commit. Past the stop bound it only marks the run done.
 */
bool sluice_capture_sink_begin(sluice_capture_sink *s, const Sluice__V1__Begin *b,
			       uint64_t position);
/*
 * sluice_capture_sink_origin records the replication origin of the open
 * transaction (name copied); with skip, a transaction with no change written
 * yet is left out of the stream.
 */
void sluice_capture_sink_origin(sluice_capture_sink *s, const char *name, uint64_t origin_lsn,
				bool skip);
/* sluice_capture_sink_relation describes a relation (kept by the writer for its segments). */
bool sluice_capture_sink_relation(sluice_capture_sink *s, sluice_record *rec);
/* sluice_capture_sink_change writes a row change or truncate of the open transaction. */
bool sluice_capture_sink_change(sluice_capture_sink *s, sluice_record *rec);
/* sluice_capture_sink_message writes a logical message; non-transactional ones only between
 * transactions. */
bool sluice_capture_sink_message(sluice_capture_sink *s, sluice_record *rec, bool transactional);
/* sluice_capture_sink_commit ends the open transaction at end_position. */
bool sluice_capture_sink_commit(sluice_capture_sink *s, uint64_t end_position);
/*
 * sluice_capture_sink_commit_token ends it at end_position with the resume
 * token there (copied; raw BSON), which the stream keeps for a restart.
 */
bool sluice_capture_sink_commit_token(sluice_capture_sink *s, uint64_t end_position,
				      const uint8_t *token, size_t token_len);
/* sluice_capture_sink_progress reports that the source has sent everything up to position. */
void sluice_capture_sink_progress(sluice_capture_sink *s, uint64_t position);
/*
 * sluice_capture_sink_keepalive reports the source's position while it sends
 * no data: when nothing is in flight the engine may acknowledge it (so an idle
 * source does not retain history for nothing); with reply_requested it
 * acknowledges at once.
 */
bool sluice_capture_sink_keepalive(sluice_capture_sink *s, uint64_t position, bool reply_requested);
/*
 * sluice_capture_sink_keepalive_token is keepalive with the resume token of
 * that position (copied): heartbeats carry it, so that a restart after idling
 * resumes there (a MongoDB postBatchResumeToken).
 */
bool sluice_capture_sink_keepalive_token(sluice_capture_sink *s, uint64_t position,
					 const uint8_t *token, size_t token_len);
/*
 * sluice_capture_sink_resume_token is the resume token at the stream's end
 * (borrowed until the next record; NULL and *len 0 when there is none).
 */
const uint8_t *sluice_capture_sink_resume_token(sluice_capture_sink *s, size_t *len);
/*
 * sluice_capture_sink_stopping tells that the engine stops before the
 * transaction just begun (it is past the bound): emit nothing more for it.
 */
bool sluice_capture_sink_stopping(const sluice_capture_sink *s);
/* sluice_capture_sink_writer is the engine's writer (borrowed), for snapshot copies. */
sluice_writer *sluice_capture_sink_writer(sluice_capture_sink *s);

#endif
