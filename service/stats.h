/*
 * The record a pipeline's child sends its supervisor about once a second
 * (a pipe; smaller than PIPE_BUF, so each write arrives whole).
 */
#ifndef SLUICE_SERVICE_STATS_H
#define SLUICE_SERVICE_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "apply.h"
#include "conflict.h"

#define SLUICE_PIPELINE_STATS_MAGIC 0x534c5331u /* "SLS1" */

typedef enum sluice_pipeline_state {
	SLUICE_PIPELINE_STARTING = 0, /* opening the store, the key, the source or target */
	SLUICE_PIPELINE_STANDBY,      /* another process writes the stream: waiting for it */
	SLUICE_PIPELINE_RUNNING,      /* connected and working */
	SLUICE_PIPELINE_RECONNECTING, /* lost the source or target, retrying */
	SLUICE_PIPELINE_STOPPED,      /* the engine returned */
} sluice_pipeline_state;

typedef struct sluice_pipeline_stats {
	uint32_t magic;
	uint32_t state;  /* sluice_pipeline_state */
	int64_t sent_us; /* wall clock when sent */
	/* counters of this run of the child */
	uint64_t transactions, changes, frames, bytes;
	uint64_t inserts, updates, deletes, truncates, skipped;
	uint64_t conflicts[SLUICE_CONFLICT_COUNT];
	uint64_t retries[SLUICE_RETRY_COUNT];
	uint64_t reconnects;
	uint64_t throttled_ms;
	/* positions (gauges) */
	bool lsn_positions;
	uint64_t source_position; /* capture: newest source position heard of */
	uint64_t acked_position;  /* capture: durable position acknowledged to the source */
	uint64_t head_txseq;      /* the stream's last complete transaction known */
	uint64_t done_txseq;      /* capture: durable txseq; apply: applied txseq */
	int64_t done_commit_us;   /* source commit time of done_txseq, 0: unknown */
	int64_t heartbeat_us;     /* newest signed heartbeat written/read, 0: none */
	int64_t wal_retained;     /* capture (PostgreSQL): WAL the slot retains, -1: unknown */
} sluice_pipeline_stats;

#endif
