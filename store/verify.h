/* Whole-stream verification: every frame, the chain across segments, txseq density, seals. */
#ifndef SLUICE_STORE_VERIFY_H
#define SLUICE_STORE_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "keys.h"

typedef struct sluice_verify_report {
	uint64_t segments;
	uint64_t frames;
	uint64_t transactions;
	uint64_t records;
	uint64_t bytes;
	uint64_t first_txseq; /* 0 when the stream holds no transaction */
	uint64_t last_txseq;
	int64_t time_min, time_max;
	int64_t newest_commit_us;    /* largest commit time in a Commit record, 0 if none */
	int64_t newest_heartbeat_us; /* largest time of a signed Heartbeat record, 0 if none */
	uint64_t problems;           /* errors: the stream is not whole */
	uint64_t warnings;           /* torn tail, unfinished last transaction, stray files */
	bool torn;
} sluice_verify_report;

/*
 * Called once per finding. segment is the file name (or NULL for the stream),
 * frame_offset is -1 when the finding is about the segment as a whole.
 */
typedef void (*sluice_verify_finding_fn)(void *ctx, bool is_error, const char *segment,
					 int64_t frame_offset, const char *cause);

/*
 * sluice_verify_stream authenticates and checks every frame of stream and
 * reports each problem through finding. A torn tail of the newest segment is
 * a warning. Returns false only when the store could not be read at all.
 */
bool sluice_verify_stream(sluice_store *store, const char *stream, const sluice_trust *trust,
			  sluice_verify_finding_fn finding, void *ctx,
			  sluice_verify_report *report);

/*
 * sluice_verify_freshness reads the newest segment (and the one before it,
 * when the newest holds no heartbeat) through an authenticating reader and
 * returns the newest commit and heartbeat times in it (0: none). Logs and
 * returns false when the stream cannot be read there.
 */
bool sluice_verify_freshness(sluice_store *store, const char *stream, const sluice_trust *trust,
			     int64_t *commit_us, int64_t *heartbeat_us);

/* Where a stream ends, as its newest segments say (sluice status reads it). */
typedef struct sluice_stream_head {
	uint64_t segments;    /* segments in the store; 0: the stream does not exist */
	uint64_t txseq;       /* the last complete transaction, 0: none */
	int64_t commit_us;    /* the newest commit time in the segments read, 0: none */
	int64_t heartbeat_us; /* the newest signed heartbeat in them, 0: none */
} sluice_stream_head;

/*
 * sluice_verify_head reads the newest segment (and the one before it, when
 * the newest holds no heartbeat) through an authenticating reader: the
 * stream's last complete transaction and freshness. Logs and returns false
 * when the stream cannot be read there.
 */
bool sluice_verify_head(sluice_store *store, const char *stream, const sluice_trust *trust,
			sluice_stream_head *out);

#endif
