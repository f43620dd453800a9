/*
 * Apply: verified replay of a stream into a target database, exactly once,
 * with the conflict strategies of conflicts.md. The target kind comes from
 * the --target URI; the engine (engine.c) is the same for every target.
 */
#ifndef SLUICE_APPLY_APPLY_H
#define SLUICE_APPLY_APPLY_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "conflict.h"
#include "filter.h"
#include "keys.h"
#include "rate.h"

struct sluice_apply_stats;

typedef struct sluice_apply_options {
	const char *target; /* libpq conninfo, or a mongodb:// URI */
	const char *stream;
	const char *origin; /* PostgreSQL: replication origin; NULL: sluice_<stream>@<database>
			       (or an existing sluice_<stream> this database owns) */
	sluice_strategy strategy;
	sluice_table_filter filter;
	const char **ts_columns; /* "schema.table=column" or "table=column", borrowed */
	size_t nts_columns;
	int64_t until_time_us; /* 0: none; µs since the Unix epoch */
	uint64_t until_txseq;  /* 0: none */
	uint64_t until_lsn;    /* 0: none; source LSN of the commit */
	bool dry_run;
	bool at_least_once;      /* MongoDB: apply to a standalone server (no transactions) */
	uint32_t max_txn_writes; /* MongoDB: apply a longer source transaction in parts; 0: never */
	bool follow;             /* wait for new transactions at the end of the stream */
	/*
	 * Grouped apply: consecutive source transactions in one target
	 * transaction, up to this many transactions, bytes of row data and
	 * milliseconds since the group began (group_size 1: one target
	 * transaction per source transaction, one statement per change).
	 */
	uint32_t group_size;
	uint64_t group_bytes;
	int64_t group_ms;
	bool conflict_log;
	int64_t tombstone_horizon_s;
	int64_t clock_skew_tolerance_us;
	int64_t retry_report_s; /* a transaction failing transiently this long is reported loudly */
	volatile sig_atomic_t *stop;
	sluice_rate *rate; /* borrowed, NULL: unlimited: row changes and bytes per second */
	/* Called about once a second from the engine's loop and at the end (NULL: none). */
	void (*report)(void *arg, const struct sluice_apply_stats *stats);
	void *report_arg;
} sluice_apply_options;

void sluice_apply_default_options(sluice_apply_options *o);

/*
 * Transient target failures: the transaction is rolled back and applied
 * again after a capped, jittered backoff (or after a reconnect), never
 * skipped. Counted per cause.
 */
typedef enum sluice_retry_cause {
	SLUICE_RETRY_DEADLOCK = 0,  /* PostgreSQL 40P01 */
	SLUICE_RETRY_SERIALIZATION, /* PostgreSQL 40001 */
	SLUICE_RETRY_LOCK_TIMEOUT,  /* PostgreSQL 55P03 lock_not_available */
	SLUICE_RETRY_CANCELED,      /* PostgreSQL 57014: statement_timeout, pg_cancel_backend */
	SLUICE_RETRY_SHUTDOWN,      /* PostgreSQL 57P01..57P03: the server stops or starts */
	SLUICE_RETRY_CONNECTION,    /* a lost or refused connection (PostgreSQL 08xxx) */
	SLUICE_RETRY_COUNT,
} sluice_retry_cause;

const char *sluice_retry_cause_name(sluice_retry_cause c);

typedef struct sluice_apply_stats {
	uint64_t transactions;
	uint64_t inserts, updates, deletes, truncates, skipped;
	uint64_t conflicts[SLUICE_CONFLICT_COUNT];
	uint64_t clock_skew_warnings;
	uint64_t retries[SLUICE_RETRY_COUNT]; /* transient failures, by cause */
	uint64_t first_txseq, last_txseq;     /* applied this run */
	uint64_t resumed_after;               /* the target's progress at start */
	bool refused;                         /* the stream failed verification */
	/* for metrics (the service): kept up to date while running */
	bool connected;            /* the target is open */
	uint64_t applied_txseq;    /* the target's progress: the last transaction committed */
	int64_t applied_commit_us; /* its commit time at the source, 0: unknown */
	uint64_t head_txseq;       /* the last complete transaction seen in the stream */
	int64_t heartbeat_us;      /* the newest signed heartbeat read, 0: none */
	uint64_t frames, bytes;    /* read from the store and authenticated */
} sluice_apply_stats;

/*
 * sluice_apply_run applies stream to the target until caught up (unless
 * following), until a bound, or until stopped. store and trust are borrowed.
 * @return true on success; false after logging the cause (stats->refused
 * tells a bad stream from a target failure).
 */
bool sluice_apply_run(sluice_store *store, const sluice_trust *trust, const sluice_apply_options *o,
		      sluice_apply_stats *stats);

/*
 * sluice_apply_progress_read reads where apply of o->stream stands on
 * o->target (o->origin names a PostgreSQL target's origin as for apply),
 * writing nothing: the last txseq applied, with *found false when apply
 * never ran there. sluice status uses it while nothing runs.
 * @return false after logging when the target could not be read.
 */
bool sluice_apply_progress_read(const sluice_apply_options *o, uint64_t *txseq, bool *found);

#endif
