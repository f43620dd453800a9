/* PostgreSQL apply: verified replay of a stream, exactly-once progress, conflict strategies. */
#ifndef SLUICE_APPLY_PGAPPLY_H
#define SLUICE_APPLY_PGAPPLY_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "keys.h"
#include "pgprepare.h"

typedef enum sluice_strategy {
	SLUICE_STRATEGY_REPLACE = 0,   /* the stream is the source of truth */
	SLUICE_STRATEGY_APPEND = 1,    /* only add what is missing */
	SLUICE_STRATEGY_TIMESTAMP = 2, /* last writer wins (conflicts.md) */
} sluice_strategy;

typedef struct sluice_apply_options {
	const char *target; /* libpq conninfo */
	const char *stream;
	const char *origin; /* replication origin; NULL: sluice_<stream>@<database> (or
			       an existing sluice_<stream> this database owns) */
	sluice_strategy strategy;
	sluice_table_filter filter;
	const char **ts_columns; /* "schema.table=column" or "table=column", borrowed */
	size_t nts_columns;
	int64_t until_time_us; /* 0: none; µs since the Unix epoch */
	uint64_t until_txseq;  /* 0: none */
	uint64_t until_lsn;    /* 0: none; source LSN of the commit */
	bool dry_run;
	bool follow; /* wait for new transactions at the end of the stream */
	bool conflict_log;
	int64_t tombstone_horizon_s;
	int64_t clock_skew_tolerance_us;
	int64_t retry_report_s; /* a transaction failing transiently this long is reported loudly */
	volatile sig_atomic_t *stop;
} sluice_apply_options;

void sluice_apply_default_options(sluice_apply_options *o);

/* Conflict cases of conflicts.md, counted per run. */
typedef enum sluice_conflict {
	SLUICE_CONFLICT_INSERT_EXISTS = 0,
	SLUICE_CONFLICT_INSERT_DELETED,
	SLUICE_CONFLICT_UPDATE_NEWER_LOCAL,
	SLUICE_CONFLICT_UPDATE_MISSING,
	SLUICE_CONFLICT_UPDATE_DELETED,
	SLUICE_CONFLICT_DELETE_NEWER_LOCAL,
	SLUICE_CONFLICT_DELETE_MISSING,
	SLUICE_CONFLICT_COUNT,
} sluice_conflict;

const char *sluice_conflict_name(sluice_conflict c);

/*
 * Transient target failures: the transaction is rolled back and applied
 * again after a capped, jittered backoff (or after a reconnect), never
 * skipped. Counted per cause.
 */
typedef enum sluice_retry_cause {
	SLUICE_RETRY_DEADLOCK = 0,  /* 40P01 */
	SLUICE_RETRY_SERIALIZATION, /* 40001 */
	SLUICE_RETRY_LOCK_TIMEOUT,  /* 55P03 lock_not_available */
	SLUICE_RETRY_CANCELED,      /* 57014: statement_timeout, pg_cancel_backend */
	SLUICE_RETRY_SHUTDOWN,      /* 57P01..57P03: the server stops, restarts or starts */
	SLUICE_RETRY_CONNECTION,    /* 08xxx, a lost or refused connection */
	SLUICE_RETRY_COUNT,
} sluice_retry_cause;

const char *sluice_retry_cause_name(sluice_retry_cause c);

/*
 * sluice_apply_classify tells whether a SQLSTATE is transient: which cause,
 * or -1 for a permanent error (schema mismatch, constraint, type error, ...)
 * that stops apply.
 */
int sluice_apply_classify(const char *sqlstate);

typedef struct sluice_apply_stats {
	uint64_t transactions;
	uint64_t inserts, updates, deletes, truncates, skipped;
	uint64_t conflicts[SLUICE_CONFLICT_COUNT];
	uint64_t clock_skew_warnings;
	uint64_t retries[SLUICE_RETRY_COUNT]; /* transient failures, by cause */
	uint64_t first_txseq, last_txseq;     /* applied this run */
	uint64_t resumed_after;               /* origin progress at start */
	bool refused;                         /* the stream failed verification */
} sluice_apply_stats;

/*
 * sluice_apply_run applies stream to the target until caught up (unless
 * following), until a bound, or until stopped. store and trust are borrowed.
 * @return true on success; false after logging the cause (stats->refused
 * tells a bad stream from a target failure).
 */
bool sluice_apply_run(sluice_store *store, const sluice_trust *trust, const sluice_apply_options *o,
		      sluice_apply_stats *stats);

#endif
