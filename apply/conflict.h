/*
 * The conflict decision of conflicts.md as a pure function: given what the
 * target holds for a row, what a remote change does there under each
 * strategy, which conflict case it is and how it was resolved. Targets find
 * the facts (PostgreSQL by a locked probe or by what an upsert returned,
 * MongoDB by reading the row and its version in the transaction) and write
 * what this decides.
 */
#ifndef SLUICE_APPLY_CONFLICT_H
#define SLUICE_APPLY_CONFLICT_H

#include <stdbool.h>
#include <stdint.h>

typedef enum sluice_strategy {
	SLUICE_STRATEGY_REPLACE = 0,   /* the stream is the source of truth */
	SLUICE_STRATEGY_APPEND = 1,    /* only add what is missing */
	SLUICE_STRATEGY_TIMESTAMP = 2, /* last writer wins (conflicts.md) */
} sluice_strategy;

const char *sluice_strategy_name(sluice_strategy s);

/* Conflict cases of conflicts.md, counted per run. */
typedef enum sluice_conflict {
	SLUICE_CONFLICT_NONE = -1,
	SLUICE_CONFLICT_INSERT_EXISTS = 0,
	SLUICE_CONFLICT_INSERT_DELETED,
	SLUICE_CONFLICT_UPDATE_NEWER_LOCAL,
	SLUICE_CONFLICT_UPDATE_MISSING,
	SLUICE_CONFLICT_UPDATE_DELETED,
	SLUICE_CONFLICT_DELETE_NEWER_LOCAL,
	SLUICE_CONFLICT_DELETE_MISSING,
	SLUICE_CONFLICT_COUNT,
} sluice_conflict;

/* sluice_conflict_name: "insert_exists", ... as in the conflict log; "unknown" out of range. */
const char *sluice_conflict_name(sluice_conflict c);

/*
 * A row version: the commit time (µs since the Unix epoch) and origin node
 * of the transaction that last wrote the row or its tombstone. known is
 * false for a writer without a commit time (a frozen xmin): older than
 * anything.
 */
typedef struct sluice_version {
	bool known;
	int64_t time_us;
	const char *node; /* borrowed; "" when none */
} sluice_version;

/*
 * sluice_version_newer tells whether a is newer than b in the total order of
 * conflicts.md: later commit time; on equal times the greater node name
 * (bytewise). An unknown version is older than every known one.
 */
bool sluice_version_newer(const sluice_version *a, const sluice_version *b);

/* What the target holds where a remote change lands. */
typedef struct sluice_row_state {
	bool present;         /* the row exists */
	bool remote_newer;    /* timestamp: the change is newer than the row's version */
	bool tombstone_newer; /* timestamp: a tombstone newer than the change is kept */
	bool complete;        /* the change carries every column of its new row */
} sluice_row_state;

/* What to write. */
typedef enum sluice_write {
	SLUICE_WRITE_NONE = 0,  /* leave the target as it is */
	SLUICE_WRITE_INSERT,    /* insert the remote row */
	SLUICE_WRITE_UPDATE,    /* write the remote change over the row */
	SLUICE_WRITE_DELETE,    /* delete the row (timestamp: and keep a tombstone) */
	SLUICE_WRITE_TOMBSTONE, /* timestamp: delete nothing, keep a tombstone */
} sluice_write;

typedef struct sluice_decision {
	sluice_write write;
	sluice_conflict conflict; /* SLUICE_CONFLICT_NONE when the target held what was expected */
	const char *resolution;   /* the conflict log's resolution: "remote", "kept_local",
				     "skipped", "inserted", "tombstone"; NULL without a conflict */
} sluice_decision;

/*
 * sluice_conflict_decide: what a remote insert ('I'), update ('U') or
 * delete ('D') does under strategy s on a row in state st (conflicts.md's
 * table for timestamp; replace: the remote change always wins and an
 * update of a missing row inserts it when complete; append: only what is
 * missing is added).
 */
sluice_decision sluice_conflict_decide(sluice_strategy s, char op, const sluice_row_state *st);

#endif
