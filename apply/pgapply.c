/* PostgreSQL apply: verified replay of a stream, exactly-once progress, conflict strategies. */
#include "pgapply.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "buf.h"
#include "clock.h"
#include "json.h"
#include "log.h"
#include "pgconn.h"
#include "reader.h"
#include "records.h"

/* Statement results are read back at least this often inside one transaction. */
#define APPLY_MAX_PENDING 1000

/* What a queued pipeline command was, to interpret its result. */
typedef enum apply_kind {
	APPLY_K_CONTROL,        /* BEGIN, COMMIT, set-up: must succeed */
	APPLY_K_PREPARE,        /* PQsendPrepare */
	APPLY_K_INSERT_UPSERT,  /* RETURNING (xmax = 0): inserted, or updated an existing row */
	APPLY_K_UPDATE_UPSERT,  /* update with a full row: inserted when missing */
	APPLY_K_UPDATE_PLAIN,   /* UPDATE: 0 rows when missing */
	APPLY_K_DELETE,         /* DELETE: 0 rows when missing */
	APPLY_K_INSERT_NOTHING, /* INSERT ... DO NOTHING: 0 rows when present */
	APPLY_K_APPEND_UPDATE,  /* append: insert a missing row, never overwrite */
	APPLY_K_PROBE_ROW,      /* timestamp: version of the target row */
	APPLY_K_PROBE_TOMB,     /* timestamp: version of a tombstone */
	APPLY_K_TS_WRITE,       /* timestamp: the write it decided on */
	APPLY_K_BATCH_INSERT, /* many inserts in one statement: count written, keys that existed */
	APPLY_K_APPEND_PROBE_UPD, /* append: partial update, does the row exist? */
	APPLY_K_APPEND_PROBE_DEL, /* append: delete, does the row exist? */
	APPLY_K_BATCH_PLAIN,      /* many inserts, no conflict handling: fails if a row exists */
	APPLY_K_COMMIT,           /* COMMIT: its transaction is applied once this succeeds */
	APPLY_K_IDENT_MOVE,       /* delete before re-inserting a row whose key or ALWAYS identity
				     changed */
	APPLY_K_MOVED_UPSERT,     /* the upsert after it: missing when nothing was deleted */
} apply_kind;

typedef struct apply_pending {
	apply_kind kind;
	uint32_t rel_index;
	char *key;      /* owned: JSON array of the key values, for the conflict log */
	PGresult *res;  /* probes keep their result */
	uint32_t rows;  /* rows sent in a batch */
	uint64_t txseq; /* transaction it belongs to (several may be in flight) */
	int64_t commit_us;
	uint32_t node; /* index into apply.nodes */
	char op;       /* 'I', 'U', 'D' of the change it belongs to, 0 for none */
} apply_pending;

typedef struct apply_rel {
	uint32_t id;
	uint32_t generation; /* bumps when the stream redefines the relation */
	char *schema, *name; /* owned */
	char *qname;         /* owned: "schema"."name" */
	char *label;         /* owned: schema.name, for messages and tombstones */
	char *tomb_rel; /* owned: quote_ident(schema).quote_ident(name), as the trigger names it */
	char *qtarget;  /* owned: what UPDATE, DELETE and SELECT name: ONLY qname, or qname
			   for a partitioned table (whose rows are its partitions') */
	int ncols;
	char **cols;        /* owned */
	char **qcols;       /* owned, quoted */
	char **types;       /* owned: type names from the stream, "" when unknown */
	bool *key;          /* owned */
	bool *ident_always; /* owned: GENERATED ALWAYS AS IDENTITY on the target */
	bool *text_eq;      /* owned: matched by text form: the type has no equality */
	bool overriding;    /* inserts need OVERRIDING SYSTEM VALUE */
	int nkeys;
	bool full_identity; /* no key: every column identifies the row */
	bool included;
	bool local;      /* in sluice's own schema: node-local, never written from a stream */
	bool warned;     /* the skip of a local relation was logged */
	bool checked;    /* compared with the target table */
	bool has_unique; /* the target has a unique index on exactly the key columns */
	bool tracked;    /* the target table has sluice's delete tracking */
	int ts_col;      /* --timestamp-column index, -1 */
} apply_rel;

typedef struct apply_stmt {
	char *key;  /* owned */
	char *name; /* owned: returned to callers, so it stays put when stmts grows */
} apply_stmt;

typedef struct apply {
	const sluice_apply_options *o;
	sluice_apply_stats *stats;
	PGconn *conn; /* owned */
	char origin[600];
	bool schema_installed;
	char local_node[256];

	apply_rel *rels; /* owned */
	size_t nrels;
	uint32_t next_generation;
	apply_stmt *stmts; /* owned */
	size_t nstmts;

	apply_pending *pending; /* owned queue of the current pipeline batch */
	size_t npending, cap_pending;
	char first_error[1024];
	int error_index;
	uint64_t error_txseq;
	char error_op;        /* the change the failed command belonged to (0: none) */
	uint32_t error_rel;   /* its relation */
	char error_state[6];  /* SQLSTATE of the first error, "" when none */
	bool error_transient; /* worth applying the same transaction again */
	bool error_lost;      /* the results stopped: the connection is gone (libpq may
				 not say so yet) */

	/* the change being queued: failures name its table and operation */
	char cur_op;
	uint32_t cur_rel;

	uint64_t expect_txseq; /* the next transaction must be this one */
	char **nodes;          /* owned: origin node names seen, interned */
	uint32_t nnodes;
	uint32_t cur_node;

	/* the transaction being applied */
	bool in_txn;
	bool txn_open_on_target;
	uint64_t txseq;
	int64_t commit_us;
	char commit_ts[64]; /* as timestamptz text */
	char node[256];
	char last_origin_node[256];
	bool dry_open;

	/* consecutive complete inserts into one relation, sent as one statement */
	bool batch_open;
	uint32_t batch_rel;
	uint32_t batch_rows;
	sluice_buf *batch_cols; /* owned: one text[] literal per column */
	int batch_ncols;
	uint64_t *batch_hashes; /* owned: open-addressed set of key hashes */
	sluice_buf batch_first; /* owned: the first row's values, NUL-separated */
	bool *batch_first_null; /* owned: which of them are NULL */
	int batch_first_cap;
	char *batch_first_key; /* owned: its key as JSON, for the conflict log */

	/* conflicts found after a pipelined commit (replace, append) */
	sluice_buf conflict_rows; /* owned: queued conflict log inserts as JSON lines */
	bool done;
	bool busy; /* the origin was still held by another session */

	/*
	 * Replace inserts batches of new rows with a plain INSERT (no ON CONFLICT:
	 * about half the server time). When a row exists after all, the
	 * transaction fails (unique violation), is rolled back with everything
	 * after it, and is applied again with conflict handling.
	 */
	/* counts and conflict rows as of the last COMMIT result: what a rollback returns to */
	sluice_apply_stats committed_stats;
	size_t committed_rows;

	uint64_t safe_through; /* transactions up to here use ON CONFLICT */
	bool retry_safe;       /* the pipeline failed on a row that exists */
	bool moved;            /* the last APPLY_K_IDENT_MOVE deleted the row it re-inserts */
	bool resume_unique;    /* resuming after such a row: the failed one cannot have committed */

	/* the transaction failing transiently, for backoff and the loud report */
	uint64_t retry_txseq;
	int retry_attempts;
	int64_t retry_since_ms, retry_report_ms;
	int64_t last_log_ms;
} apply;

static const char *const apply_conflict_names[SLUICE_CONFLICT_COUNT] = {
	"insert_exists",  "insert_deleted",     "update_newer_local", "update_missing",
	"update_deleted", "delete_newer_local", "delete_missing",
};

const char *
sluice_conflict_name(sluice_conflict c)
{
	return c < SLUICE_CONFLICT_COUNT ? apply_conflict_names[c] : "unknown";
}

static const char *const apply_retry_names[SLUICE_RETRY_COUNT] = {
	"deadlock", "serialization", "lock_timeout", "canceled", "shutdown", "connection",
};

const char *
sluice_retry_cause_name(sluice_retry_cause c)
{
	return c < SLUICE_RETRY_COUNT ? apply_retry_names[c] : "unknown";
}

int
sluice_apply_classify(const char *sqlstate)
{
	if (sqlstate == NULL || strlen(sqlstate) != 5)
		return -1;
	if (strcmp(sqlstate, "40P01") == 0)
		return SLUICE_RETRY_DEADLOCK;
	if (strcmp(sqlstate, "40001") == 0)
		return SLUICE_RETRY_SERIALIZATION;
	if (strcmp(sqlstate, "55P03") == 0)
		return SLUICE_RETRY_LOCK_TIMEOUT;
	if (strcmp(sqlstate, "57014") == 0)
		return SLUICE_RETRY_CANCELED; /* apply never cancels its own statements */
	if (strncmp(sqlstate, "57P0", 4) == 0 && sqlstate[4] >= '1' && sqlstate[4] <= '3')
		return SLUICE_RETRY_SHUTDOWN;
	if (strncmp(sqlstate, "08", 2) == 0)
		return SLUICE_RETRY_CONNECTION;
	return -1;
}

void
sluice_apply_default_options(sluice_apply_options *o)
{
	memset(o, 0, sizeof(*o));
	o->strategy = SLUICE_STRATEGY_REPLACE;
	o->follow = true;
	o->conflict_log = true;
	o->tombstone_horizon_s = 7 * 24 * 3600;
	o->clock_skew_tolerance_us = 1000000;
	o->retry_report_s = 300;
}

/* apply_format_ts writes µs since the epoch as a timestamptz literal. */
static void
apply_format_ts(int64_t us, char *out, size_t size)
{
	time_t sec = (time_t)(us / 1000000);
	int64_t frac = us % 1000000;
	if (frac < 0) {
		frac += 1000000;
		sec--;
	}
	struct tm tm;
	gmtime_r(&sec, &tm);
	snprintf(out, size, "%04d-%02d-%02d %02d:%02d:%02d.%06" PRId64 "+00", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* ---- pipeline plumbing ------------------------------------------------- */

static void
apply_push(apply *a, apply_kind kind, uint32_t rel_index, char *key)
{
	if (a->cur_op != 0)
		rel_index = a->cur_rel; /* prepares and tombstones of a change too */
	if (a->npending == a->cap_pending) {
		a->cap_pending = a->cap_pending ? 2 * a->cap_pending : 256;
		apply_pending *p = realloc(a->pending, a->cap_pending * sizeof(*p));
		if (p == NULL)
			abort();
		a->pending = p;
	}
	a->pending[a->npending++] = (apply_pending){.kind = kind,
						    .rel_index = rel_index,
						    .key = key,
						    .txseq = a->txseq,
						    .commit_us = a->commit_us,
						    .node = a->cur_node,
						    .op = a->cur_op};
}

/* apply_send_params queues a prepared statement. */
static bool
apply_send_prepared(apply *a, const char *stmt, int n, const char *const *values, apply_kind kind,
		    uint32_t rel_index, char *key)
{
	if (!PQsendQueryPrepared(a->conn, stmt, n, values, NULL, NULL, 0)) {
		sluice_log_error("could not send a statement to the target: %s",
				 sluice_pg_error_line(a->conn));
		free(key);
		return false;
	}
	apply_push(a, kind, rel_index, key);
	return true;
}

static bool
apply_send_sql(apply *a, const char *sql, int n, const char *const *values, apply_kind kind)
{
	if (!PQsendQueryParams(a->conn, sql, n, NULL, values, NULL, NULL, 0)) {
		sluice_log_error("could not send \"%.60s\" to the target: %s", sql,
				 sluice_pg_error_line(a->conn));
		return false;
	}
	apply_push(a, kind, 0, NULL);
	return true;
}

static void apply_count_result(apply *a, apply_pending *p, PGresult *res);

/*
 * apply_restore_committed forgets the counts and conflict rows of
 * transactions that did not commit (rolled back, or lost with the
 * connection): they are counted when applied again.
 */
static void
apply_restore_committed(apply *a)
{
	sluice_apply_stats *s = a->stats;
	bool refused = s->refused;
	uint64_t resumed_after = s->resumed_after;
	uint64_t retries[SLUICE_RETRY_COUNT];
	memcpy(retries, s->retries, sizeof(retries));
	*s = a->committed_stats;
	s->refused = refused;
	s->resumed_after = resumed_after;
	memcpy(s->retries, retries, sizeof(retries)); /* retries happened, committed or not */
	if (a->conflict_rows.len > a->committed_rows)
		a->conflict_rows.len = a->committed_rows;
}

/* apply_count_txn counts an applied transaction (at its COMMIT's result). */
static void
apply_count_txn(apply *a, uint64_t txseq)
{
	a->stats->transactions++;
	if (a->stats->first_txseq == 0)
		a->stats->first_txseq = txseq;
	a->stats->last_txseq = txseq;
	if (txseq >= a->retry_txseq)
		a->retry_attempts = 0; /* the transaction that kept failing went through */
}

/*
 * apply_drain sends a sync and reads every queued result. Results of probes
 * stay in their entries (keep_probes) for the caller. Returns false when a
 * statement failed (the error is in a->first_error) or the connection broke.
 */
static bool
apply_drain(apply *a, bool keep_probes)
{
	a->error_lost = false;
	if (PQpipelineSync(a->conn) != 1) {
		snprintf(a->first_error, sizeof(a->first_error), "could not sync: %s",
			 sluice_pg_error_line(a->conn));
		a->error_lost = true;
		return false;
	}
	bool ok = true;
	a->first_error[0] = '\0';
	a->error_index = -1;
	a->error_txseq = 0;
	a->error_op = 0;
	a->error_state[0] = '\0';
	a->error_transient = false;
	a->moved = false;
	for (size_t i = 0; i < a->npending; i++) {
		PGresult *res = PQgetResult(a->conn);
		if (res == NULL) {
			snprintf(a->first_error, sizeof(a->first_error), "lost the target: %s",
				 sluice_pg_error_line(a->conn));
			a->error_lost = true;
			return false;
		}
		ExecStatusType st = PQresultStatus(res);
		apply_pending *p = &a->pending[i];
		if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) {
			if (ok && st == PGRES_FATAL_ERROR) {
				const char *msg = PQresultErrorMessage(res);
				snprintf(a->first_error, sizeof(a->first_error), "%s", msg);
				for (char *c = a->first_error; *c; c++)
					if (*c == '\n')
						*c = ' ';
				a->error_index = (int)i;
				a->error_txseq = p->txseq;
				a->error_op = p->op;
				a->error_rel = p->rel_index;
				const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
				snprintf(a->error_state, sizeof(a->error_state), "%s",
					 state ? state : "");
				a->error_transient = sluice_apply_classify(state) >= 0;
				a->retry_safe = p->kind == APPLY_K_BATCH_PLAIN && state != NULL &&
						strcmp(state, "23505") == 0;
			}
			ok = false;
			PQclear(res);
		} else if (keep_probes &&
			   (p->kind == APPLY_K_PROBE_ROW || p->kind == APPLY_K_PROBE_TOMB)) {
			p->res = res;
		} else {
			if (ok && p->kind == APPLY_K_COMMIT) {
				apply_count_txn(a, p->txseq);
				a->committed_stats = *a->stats;
				a->committed_rows = a->conflict_rows.len;
			} else if (ok)
				apply_count_result(a, p, res);
			PQclear(res);
		}
		/* Each command's results end with a NULL. */
		PGresult *end = PQgetResult(a->conn);
		if (end != NULL) {
			PQclear(end);
			snprintf(a->first_error, sizeof(a->first_error),
				 "unexpected extra result from the target");
			return false;
		}
	}
	if (!ok && a->retry_safe)
		apply_restore_committed(a);
	PGresult *sync = PQgetResult(a->conn);
	if (sync == NULL || PQresultStatus(sync) != PGRES_PIPELINE_SYNC) {
		PQclear(sync);
		if (ok)
			snprintf(a->first_error, sizeof(a->first_error), "lost the target: %s",
				 sluice_pg_error_line(a->conn));
		a->error_lost = true;
		return false;
	}
	PQclear(sync);
	return ok;
}

static void
apply_clear_pending(apply *a)
{
	for (size_t i = 0; i < a->npending; i++) {
		free(a->pending[i].key);
		PQclear(a->pending[i].res);
	}
	a->npending = 0;
}

/* ---- conflicts --------------------------------------------------------- */

/* apply_conflict counts a case and queues its log row. */
static void
apply_conflict_at(apply *a, uint64_t txseq, int64_t commit_us, const char *node, sluice_conflict c,
		  const apply_rel *rel, const char *key, const char *local_time,
		  const char *local_node, const char *resolution)
{
	a->stats->conflicts[c]++;
	if (!a->o->conflict_log || !a->schema_installed || a->o->dry_run)
		return;
	/* One JSON object per line; inserted through json_populate_record later. */
	sluice_buf *b = &a->conflict_rows;
	sluice_buf_printf(b, "{\"stream\":");
	sluice_json_append_string(b, a->o->stream, strlen(a->o->stream));
	sluice_buf_printf(b, ",\"txseq\":%" PRIu64 ",\"relation\":", txseq);
	sluice_json_append_string(b, rel->label, strlen(rel->label));
	sluice_buf_printf(b, ",\"key\":%s,\"kind\":\"%s\",\"local_time\":", key ? key : "null",
			  apply_conflict_names[c]);
	if (local_time && local_time[0])
		sluice_json_append_string(b, local_time, strlen(local_time));
	else
		sluice_buf_append_str(b, "null");
	sluice_buf_append_str(b, ",\"local_node\":");
	if (local_node)
		sluice_json_append_string(b, local_node, strlen(local_node));
	else
		sluice_buf_append_str(b, "null");
	char ts[64];
	apply_format_ts(commit_us, ts, sizeof(ts));
	sluice_buf_printf(b, ",\"remote_time\":\"%s\",\"remote_node\":", ts);
	sluice_json_append_string(b, node, strlen(node));
	sluice_buf_printf(b, ",\"resolution\":\"%s\"}\n", resolution);
}

/* apply_conflict records a conflict of the transaction being applied now. */
static void
apply_conflict(apply *a, sluice_conflict c, const apply_rel *rel, const char *key,
	       const char *local_time, const char *local_node, const char *resolution)
{
	apply_conflict_at(a, a->txseq, a->commit_us, a->node, c, rel, key, local_time, local_node,
			  resolution);
}

/* apply_send_conflict_log queues the INSERT of every conflict row collected so far. */
static bool
apply_send_conflict_log(apply *a)
{
	if (a->conflict_rows.len == 0)
		return true;
	sluice_buf_append_byte(&a->conflict_rows, '\0');
	const char *params[1] = {(const char *)a->conflict_rows.data};
	bool ok = apply_send_sql(
		a,
		"INSERT INTO sluice.conflicts (stream, txseq, relation, key, kind, local_time, "
		"local_node, remote_time, remote_node, resolution) "
		"SELECT r.stream, r.txseq, r.relation, r.key, r.kind, r.local_time, r.local_node, "
		"r.remote_time, r.remote_node, r.resolution "
		"FROM regexp_split_to_table(rtrim($1, E'\\n'), E'\\n') AS l, "
		"json_populate_record(NULL::sluice.conflicts, l::json) AS r",
		1, params, APPLY_K_CONTROL);
	sluice_buf_reset(&a->conflict_rows);
	a->committed_rows = 0;
	return ok;
}

static void
apply_count_result(apply *a, apply_pending *p, PGresult *res)
{
	const apply_rel *rel = p->kind == APPLY_K_CONTROL || p->kind == APPLY_K_PREPARE
				       ? NULL
				       : &a->rels[p->rel_index];
	long tuples = strtol(PQcmdTuples(res), NULL, 10);
	bool first_true = PQntuples(res) > 0 && PQgetvalue(res, 0, 0)[0] == 't';
	switch (p->kind) {
	case APPLY_K_INSERT_UPSERT:
		if (PQntuples(res) == 0 || first_true)
			a->stats->inserts++;
		else {
			a->stats->updates++;
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_INSERT_EXISTS, rel, p->key, NULL, NULL,
					  "remote");
		}
		break;
	case APPLY_K_IDENT_MOVE:
		a->moved = tuples > 0;
		break;
	case APPLY_K_MOVED_UPSERT:
		a->stats->updates++;
		if (!a->moved)
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_UPDATE_MISSING, rel, p->key, NULL, NULL,
					  "inserted");
		a->moved = false;
		break;
	case APPLY_K_UPDATE_UPSERT:
		a->stats->updates++;
		if (first_true && !a->moved)
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_UPDATE_MISSING, rel, p->key, NULL, NULL,
					  "inserted");
		a->moved = false;
		break;
	case APPLY_K_UPDATE_PLAIN:
		if (tuples > 0)
			a->stats->updates++;
		else
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_UPDATE_MISSING, rel, p->key, NULL, NULL,
					  "skipped");
		break;
	case APPLY_K_DELETE:
		if (tuples > 0)
			a->stats->deletes++;
		else
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_DELETE_MISSING, rel, p->key, NULL, NULL,
					  "skipped");
		break;
	case APPLY_K_INSERT_NOTHING:
		if (PQntuples(res) > 0)
			a->stats->inserts++;
		else
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_INSERT_EXISTS, rel, p->key, NULL, NULL,
					  "kept_local");
		break;
	case APPLY_K_BATCH_PLAIN:
		a->stats->inserts += (uint64_t)tuples;
		break;
	case APPLY_K_BATCH_INSERT: {
		/* A row with the count of rows written; the key of each row that existed. */
		uint32_t written = 0, existed = 0;
		for (int i = 0; i < PQntuples(res); i++) {
			if (PQgetisnull(res, i, 0)) {
				written = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
				continue;
			}
			existed++;
			a->stats->updates++;
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_INSERT_EXISTS, rel, PQgetvalue(res, i, 0),
					  NULL, NULL, "remote");
		}
		a->stats->inserts += written - existed;
		/* DO NOTHING writes no row for a key that exists. */
		for (uint32_t i = written; i < p->rows; i++)
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_INSERT_EXISTS, rel, NULL, NULL, NULL,
					  "kept_local");
		break;
	}
	case APPLY_K_APPEND_PROBE_UPD:
		if (first_true)
			a->stats->skipped++;
		else
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_UPDATE_MISSING, rel, p->key, NULL, NULL,
					  "skipped");
		break;
	case APPLY_K_APPEND_PROBE_DEL:
		if (first_true)
			a->stats->skipped++;
		else
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_DELETE_MISSING, rel, p->key, NULL, NULL,
					  "skipped");
		break;
	case APPLY_K_APPEND_UPDATE:
		if (PQntuples(res) > 0) {
			a->stats->inserts++;
			apply_conflict_at(a, p->txseq, p->commit_us, a->nodes[p->node],
					  SLUICE_CONFLICT_UPDATE_MISSING, rel, p->key, NULL, NULL,
					  "inserted");
		} else
			a->stats->skipped++;
		break;
	default:
		break;
	}
}

/* ---- relations and statements ------------------------------------------ */

static void
apply_free_rel(apply_rel *r)
{
	for (int i = 0; i < r->ncols; i++) {
		free(r->cols[i]);
		PQfreemem(r->qcols[i]);
		free(r->types[i]);
	}
	free(r->types);
	free(r->cols);
	free(r->qcols);
	free(r->key);
	free(r->ident_always);
	free(r->text_eq);
	free(r->qtarget);
	free(r->schema);
	free(r->name);
	free(r->qname);
	free(r->label);
	free(r->tomb_rel);
}

static char *
apply_strdup(const char *s)
{
	char *d = strdup(s);
	if (d == NULL)
		abort();
	return d;
}

/* apply_ts_column finds --timestamp-column for a table, or NULL. */
static const char *
apply_ts_column(const apply *a, const char *schema, const char *name)
{
	char full[600];
	snprintf(full, sizeof(full), "%s.%s", schema, name);
	for (size_t i = 0; i < a->o->nts_columns; i++) {
		const char *spec = a->o->ts_columns[i];
		const char *eq = strchr(spec, '=');
		if (eq == NULL)
			continue;
		size_t n = (size_t)(eq - spec);
		if ((strlen(full) == n && strncmp(spec, full, n) == 0) ||
		    (strlen(name) == n && strncmp(spec, name, n) == 0))
			return eq + 1;
	}
	return NULL;
}

/* apply_relation takes a (new) description of a relation from the stream. */
static void
apply_relation(apply *a, const Sluice__V1__Relation *src)
{
	apply_rel *r = NULL;
	for (size_t i = 0; i < a->nrels; i++)
		if (a->rels[i].id == src->id)
			r = &a->rels[i];
	if (r != NULL) {
		apply_free_rel(r);
	} else {
		apply_rel *p = realloc(a->rels, (a->nrels + 1) * sizeof(*p));
		if (p == NULL)
			abort();
		a->rels = p;
		r = &a->rels[a->nrels++];
	}
	memset(r, 0, sizeof(*r));
	r->id = src->id;
	r->generation = ++a->next_generation;
	r->schema = apply_strdup(src->schema);
	r->name = apply_strdup(src->name);
	char *qs = PQescapeIdentifier(a->conn, src->schema, strlen(src->schema));
	char *qn = PQescapeIdentifier(a->conn, src->name, strlen(src->name));
	size_t len = strlen(qs) + strlen(qn) + 2;
	r->qname = malloc(len);
	if (r->qname == NULL)
		abort();
	snprintf(r->qname, len, "%s.%s", qs, qn);
	size_t llen = strlen(src->schema) + strlen(src->name) + 2;
	r->label = malloc(llen);
	if (r->label == NULL)
		abort();
	snprintf(r->label, llen, "%s.%s", src->schema, src->name);
	PQfreemem(qs);
	PQfreemem(qn);
	r->ncols = (int)src->n_columns;
	r->cols = calloc((size_t)r->ncols + 1, sizeof(char *));
	r->qcols = calloc((size_t)r->ncols + 1, sizeof(char *));
	r->key = calloc((size_t)r->ncols + 1, sizeof(bool));
	r->types = calloc((size_t)r->ncols + 1, sizeof(char *));
	r->ident_always = calloc((size_t)r->ncols + 1, sizeof(bool));
	r->text_eq = calloc((size_t)r->ncols + 1, sizeof(bool));
	if (r->cols == NULL || r->qcols == NULL || r->key == NULL || r->types == NULL ||
	    r->ident_always == NULL || r->text_eq == NULL)
		abort();
	for (int i = 0; i < r->ncols; i++) {
		r->types[i] =
			apply_strdup(src->columns[i]->type_name ? src->columns[i]->type_name : "");
		r->cols[i] = apply_strdup(src->columns[i]->name);
		r->qcols[i] = PQescapeIdentifier(a->conn, r->cols[i], strlen(r->cols[i]));
		r->key[i] = src->columns[i]->has_key && src->columns[i]->key;
		if (r->key[i])
			r->nkeys++;
	}
	r->full_identity =
		(src->has_replica_identity && src->replica_identity == 'f') || r->nkeys == 0;
	if (r->nkeys == 0)
		for (int i = 0; i < r->ncols; i++) {
			r->key[i] = true;
			r->nkeys++;
		}
	r->local = strcmp(r->schema, SLUICE_PG_LOCAL_SCHEMA) == 0;
	r->included = !r->local && sluice_filter_match(&a->o->filter, r->schema, r->name);
	r->ts_col = -1;
	const char *tsc = apply_ts_column(a, r->schema, r->name);
	for (int i = 0; tsc && i < r->ncols; i++)
		if (strcmp(r->cols[i], tsc) == 0)
			r->ts_col = i;
}

/*
 * apply_check_equality finds the columns of a table identified by all its
 * columns whose type has no equality (json, point, xml, box, ... and arrays,
 * domains and composites of them): those are matched by their text form,
 * which is what the stream's old row image holds. A type has equality when
 * it, or what it is binary-coercible to, has a default btree or hash
 * operator class (binary-coercible only implicitly: xml is explicitly
 * binary-coercible to text, but xml = xml does not exist); arrays, domains
 * and composites have it when every type inside them does.
 */
static bool
apply_check_equality(apply *a, apply_rel *r)
{
	const char *params[2] = {r->schema, r->name};
	PGresult *res = PQexecParams(
		a->conn,
		"WITH RECURSIVE t(root, typ) AS ("
		"  SELECT a.attname::text, a.atttypid FROM pg_attribute a"
		"   WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass"
		"     AND a.attnum > 0 AND NOT a.attisdropped"
		"  UNION"
		"  SELECT t.root, x.typ FROM t JOIN pg_type ty ON ty.oid = t.typ,"
		"   LATERAL unnest(CASE WHEN ty.typtype = 'd' THEN ARRAY[ty.typbasetype]"
		"     WHEN ty.typcategory = 'A' AND ty.typelem <> 0 THEN ARRAY[ty.typelem]"
		"     WHEN ty.typtype = 'c' THEN ARRAY(SELECT ca.atttypid FROM pg_attribute ca"
		"       WHERE ca.attrelid = ty.typrelid AND ca.attnum > 0 AND NOT ca.attisdropped)"
		"     ELSE '{}'::oid[] END) AS x(typ))"
		"SELECT DISTINCT t.root FROM t JOIN pg_type ty ON ty.oid = t.typ"
		" WHERE ty.typtype = 'b' AND NOT (ty.typcategory = 'A' AND ty.typelem <> 0)"
		"   AND NOT EXISTS (SELECT 1 FROM pg_opclass oc"
		"     JOIN pg_am am ON am.oid = oc.opcmethod"
		"     WHERE am.amname IN ('btree', 'hash') AND oc.opcdefault"
		"       AND (oc.opcintype = ty.oid OR EXISTS (SELECT 1 FROM pg_cast c"
		"         WHERE c.castsource = ty.oid AND c.casttarget = oc.opcintype"
		"           AND c.castmethod = 'b' AND c.castcontext = 'i')))",
		2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		sluice_log_error("could not read the column types of %s on the target: %s",
				 r->label, sluice_pg_error_line(a->conn));
		PQclear(res);
		return false;
	}
	for (int i = 0; i < r->ncols; i++) {
		r->text_eq[i] = false;
		for (int t = 0; t < PQntuples(res); t++)
			if (strcmp(PQgetvalue(res, t, 0), r->cols[i]) == 0)
				r->text_eq[i] = true;
	}
	PQclear(res);
	return true;
}

/*
 * apply_check_rel compares a relation of the stream with the target table
 * before anything is written to it: every stream column must exist with the
 * same type, and target-only columns must be fillable by default.
 */
static bool
apply_check_rel(apply *a, apply_rel *r, const Sluice__V1__Relation *src)
{
	const char *params[2] = {r->schema, r->name};
	PGresult *res = PQexecParams(
		a->conn,
		"SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
		"       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', "
		"       a.attgenerated <> '', quote_ident($1) || '.' || quote_ident($2), "
		"       a.attidentity, c.relkind "
		"  FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid "
		"   AND a.attnum > 0 AND NOT a.attisdropped "
		" WHERE c.oid = (quote_ident($1) || '.' || quote_ident($2))::regclass "
		" ORDER BY a.attnum",
		2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		sluice_log_error("table %s does not exist on the target (or cannot be read): %s",
				 r->label, sluice_pg_error_line(a->conn));
		PQclear(res);
		return false;
	}
	sluice_buf diff = {0};
	int ndiff = 0;
	for (int i = 0; i < r->ncols; i++) {
		const char *want = src->columns[i]->type_name ? src->columns[i]->type_name : "";
		int found = -1;
		for (int t = 0; t < PQntuples(res); t++)
			if (strcmp(PQgetvalue(res, t, 0), r->cols[i]) == 0)
				found = t;
		if (found < 0) {
			sluice_buf_printf(&diff, "%s%s (%s): missing on the target",
					  ndiff ? "; " : "", r->cols[i], want);
			ndiff++;
		} else if (want[0] && strcmp(PQgetvalue(res, found, 1), want) != 0) {
			sluice_buf_printf(&diff, "%s%s: %s in the stream, %s on the target",
					  ndiff ? "; " : "", r->cols[i], want,
					  PQgetvalue(res, found, 1));
			ndiff++;
		} else if (PQgetvalue(res, found, 4)[0] == 't') {
			sluice_buf_printf(&diff, "%s%s: generated on the target", ndiff ? "; " : "",
					  r->cols[i]);
			ndiff++;
		} else
			r->ident_always[i] = PQgetvalue(res, found, 6)[0] == 'a';
	}
	r->overriding = false;
	for (int i = 0; i < r->ncols; i++)
		r->overriding = r->overriding || r->ident_always[i];
	for (int t = 0; t < PQntuples(res); t++) {
		bool in_stream = false;
		for (int i = 0; i < r->ncols; i++)
			if (strcmp(PQgetvalue(res, t, 0), r->cols[i]) == 0)
				in_stream = true;
		if (!in_stream && PQgetvalue(res, t, 2)[0] == 't' &&
		    PQgetvalue(res, t, 3)[0] != 't') {
			sluice_buf_printf(&diff,
					  "%s%s: NOT NULL without a default on the target, "
					  "not in the stream",
					  ndiff ? "; " : "", PQgetvalue(res, t, 0));
			ndiff++;
		}
	}
	free(r->tomb_rel);
	r->tomb_rel = NULL;
	free(r->qtarget);
	r->qtarget = NULL;
	if (PQntuples(res) > 0) {
		r->tomb_rel = apply_strdup(PQgetvalue(res, 0, 5));
		bool partitioned = PQgetvalue(res, 0, 7)[0] == 'p';
		sluice_buf q = {0};
		sluice_buf_printf(&q, "%s%s", partitioned ? "" : "ONLY ", r->qname);
		sluice_buf_append_byte(&q, '\0');
		r->qtarget = (char *)q.data;
	}
	PQclear(res);
	if (ndiff > 0) {
		sluice_buf_append_byte(&diff, '\0');
		sluice_log_error("table %s differs between the stream and the target: %s", r->label,
				 (const char *)diff.data);
		sluice_buf_free(&diff);
		return false;
	}
	sluice_buf_free(&diff);

	/* A unique index on exactly the key columns allows ON CONFLICT (key). */
	sluice_buf keys = {0};
	for (int i = 0; i < r->ncols; i++)
		if (r->key[i])
			sluice_buf_printf(&keys, "%s%s", keys.len ? "," : "", r->cols[i]);
	sluice_buf_append_byte(&keys, '\0');
	const char *p3[3] = {r->schema, r->name, (const char *)keys.data};
	res = PQexecParams(
		a->conn,
		"SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = (quote_ident($1) || "
		"'.' "
		"|| quote_ident($2))::regclass AND i.indisunique AND i.indpred IS NULL AND "
		"i.indexprs IS NULL AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM "
		"pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = "
		"(SELECT array_agg(x ORDER BY x) FROM unnest(string_to_array($3, ',')) x)), "
		"EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = (quote_ident($1) || '.' || "
		"quote_ident($2))::regclass AND t.tgname = 'sluice_record_delete')",
		3, NULL, p3, NULL, NULL, 0);
	sluice_buf_free(&keys);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		sluice_log_error("could not read the indexes of %s: %s", r->label,
				 sluice_pg_error_line(a->conn));
		PQclear(res);
		return false;
	}
	r->has_unique = !r->full_identity && PQgetvalue(res, 0, 0)[0] == 't';
	r->tracked = PQgetvalue(res, 0, 1)[0] == 't';
	PQclear(res);
	if (r->full_identity && !apply_check_equality(a, r))
		return false;
	r->checked = true;
	return true;
}

/* apply_stmt_find returns the prepared statement named by key, or NULL. */
static const char *
apply_stmt_find(const apply *a, const char *key)
{
	for (size_t i = 0; i < a->nstmts; i++)
		if (strcmp(a->stmts[i].key, key) == 0)
			return a->stmts[i].name;
	return NULL;
}

/*
 * apply_stmt_get returns the prepared statement for key, preparing sql if it
 * is new. Callers on the per-row path check apply_stmt_find first, so that
 * the SQL text is only built once per statement.
 */
static const char *
apply_stmt_get(apply *a, const char *key, const char *sql, int nparams, bool *ok)
{
	const char *found = apply_stmt_find(a, key);
	if (found != NULL)
		return found;
	apply_stmt *p = realloc(a->stmts, (a->nstmts + 1) * sizeof(*p));
	if (p == NULL)
		abort();
	a->stmts = p;
	apply_stmt *s = &a->stmts[a->nstmts];
	char name[24];
	snprintf(name, sizeof(name), "sl%zu", a->nstmts);
	s->key = apply_strdup(key);
	s->name = apply_strdup(name);
	if (!PQsendPrepare(a->conn, s->name, sql, nparams, NULL)) {
		sluice_log_error("could not prepare a statement on the target: %s",
				 sluice_pg_error_line(a->conn));
		free(s->key);
		free(s->name);
		*ok = false;
		return NULL;
	}
	apply_push(a, APPLY_K_PREPARE, 0, NULL);
	a->nstmts++;
	return s->name;
}

/* apply_stmt_prepare terminates sql and prepares it under key. */
static const char *
apply_stmt_prepare(apply *a, const char *key, sluice_buf *sql, int nparams, bool *ok)
{
	sluice_buf_append_byte(sql, '\0');
	return apply_stmt_get(a, key, (const char *)sql->data, nparams, ok);
}

/* A row image with the values to send. */
typedef struct apply_row {
	const char **v; /* value per column, NULL for SQL NULL */
	bool *present;  /* false for an unchanged TOAST value */
	bool complete;  /* every column known */
} apply_row;

static void
apply_row_from(const apply_rel *r, const Sluice__V1__Row *row, apply_row *out, sluice_buf *text)
{
	/* Values are not NUL-terminated in the record: copy them into one buffer. */
	size_t *offs = calloc((size_t)r->ncols + 1, sizeof(size_t));
	if (offs == NULL)
		abort();
	out->complete = true;
	for (int i = 0; i < r->ncols; i++) {
		out->present[i] = true;
		out->v[i] = NULL;
		offs[i] = SIZE_MAX;
		if (row == NULL || (size_t)i >= row->n_kinds) {
			out->present[i] = false;
			out->complete = false;
			continue;
		}
		switch (row->kinds[i]) {
		case SLUICE__V1__VALUE_KIND__VALUE_NULL:
			break;
		case SLUICE__V1__VALUE_KIND__VALUE_UNCHANGED_TOAST:
			out->present[i] = false;
			out->complete = false;
			break;
		default:
			offs[i] = text->len;
			if ((size_t)i < row->n_values)
				sluice_buf_append(text, row->values[i].data, row->values[i].len);
			sluice_buf_append_byte(text, '\0');
		}
	}
	for (int i = 0; i < r->ncols; i++)
		if (offs[i] != SIZE_MAX)
			out->v[i] = (const char *)text->data + offs[i];
	free(offs);
}

/* apply_key_json renders the key values of row as a JSON array of strings. */
static char *
apply_key_json(const apply_rel *r, const apply_row *row)
{
	sluice_buf b = {0};
	sluice_buf_append_byte(&b, '[');
	bool first = true;
	for (int i = 0; i < r->ncols; i++) {
		if (!r->key[i])
			continue;
		if (!first)
			sluice_buf_append_str(&b, ", ");
		first = false;
		if (row->v[i] == NULL)
			sluice_buf_append_str(&b, "null");
		else
			sluice_json_append_string(&b, row->v[i], strlen(row->v[i]));
	}
	sluice_buf_append_str(&b, "]");
	sluice_buf_append_byte(&b, '\0');
	return (char *)b.data;
}

/*
 * apply_param appends parameter $n for column i with the column's type, so
 * that the server reads the value with that type's input function (an
 * untyped composite or domain-over-composite parameter cannot be read).
 */
static void
apply_param(sluice_buf *sql, const apply_rel *r, int i, int n)
{
	if (r->types[i][0])
		sluice_buf_printf(sql, "$%d::%s", n, r->types[i]);
	else
		sluice_buf_printf(sql, "$%d", n);
}

/* apply_settable tells whether an UPDATE may write column i (present, not ALWAYS identity). */
static bool
apply_settable(const apply_rel *r, const bool *present, int i)
{
	return present[i] && !r->ident_always[i];
}

/*
 * apply_where appends the key condition with parameters from *next on. A
 * table identified by all its columns and without a unique key can hold equal
 * rows: the condition then picks one of them by ctid, so that deleting or
 * updating one of two equal rows changes one row on the target too.
 */
static void
apply_where(sluice_buf *sql, const apply_rel *r, const char *alias, int *next)
{
	bool one = r->full_identity && !r->has_unique;
	/* tableoid too: ctids repeat across the partitions of a partitioned table */
	if (one)
		sluice_buf_printf(
			sql, " WHERE (%stableoid, %sctid) = (SELECT tableoid, ctid FROM %s WHERE ",
			alias, alias, r->qtarget);
	else
		sluice_buf_append_str(sql, " WHERE ");
	bool first = true;
	for (int i = 0; i < r->ncols; i++) {
		if (!r->key[i])
			continue;
		sluice_buf_printf(sql, "%s%s%s", first ? "" : " AND ", one ? "" : alias,
				  r->qcols[i]);
		if (r->text_eq[i])
			sluice_buf_printf(sql, "::text IS NOT DISTINCT FROM $%d::text", *next);
		else {
			sluice_buf_append_str(sql,
					      r->full_identity ? " IS NOT DISTINCT FROM " : " = ");
			apply_param(sql, r, i, *next);
			/*
			 * Rows that are equal but not identical (1.0 and 1.00, 0 and -0,
			 * '1 day' and '24 hours'): the one the source changed is the one
			 * whose text is the old image's.
			 */
			if (one)
				sluice_buf_printf(sql,
						  " AND %s::text IS NOT DISTINCT FROM $%d::text",
						  r->qcols[i], *next);
		}
		(*next)++;
		first = false;
	}
	if (first)
		sluice_buf_append_str(sql, "true"); /* a table without columns */
	if (one)
		sluice_buf_append_str(sql, " LIMIT 1)");
}

/*
 * apply_existed_sql appends whether the row an upsert wrote existed before
 * (it was updated, not inserted). xmax tells it for a table, but a system
 * column cannot be returned from a partitioned table: there, look the key
 * up in the statement's snapshot, which does not see the statement's own
 * writes.
 */
static void
apply_existed_sql(sluice_buf *sql, const apply_rel *r)
{
	if (!r->has_unique) {
		sluice_buf_append_str(sql, "false"); /* no ON CONFLICT: every row is new */
		return;
	}
	if (strncmp(r->qtarget, "ONLY ", 5) == 0) {
		sluice_buf_append_str(sql, "(sluice_new.xmax <> 0)");
		return;
	}
	sluice_buf_printf(sql, "EXISTS (SELECT 1 FROM %s sluice_old WHERE ", r->qname);
	for (int i = 0, k = 0; i < r->ncols; i++)
		if (r->key[i])
			sluice_buf_printf(sql, "%ssluice_old.%s = sluice_new.%s",
					  k++ ? " AND " : "", r->qcols[i], r->qcols[i]);
	sluice_buf_append_str(sql, ")");
}

/* apply_insert_sql builds INSERT of the present columns; tail is the conflict clause. */
static void
apply_insert_sql(sluice_buf *sql, const apply_rel *r, const bool *present, const char *mode)
{
	sluice_buf_printf(sql, "INSERT INTO %s AS sluice_new", r->qname);
	int n = 0;
	for (int i = 0; i < r->ncols; i++)
		if (present[i])
			sluice_buf_printf(sql, "%s%s", n++ ? ", " : " (", r->qcols[i]);
	if (n == 0)
		sluice_buf_append_str(sql, " DEFAULT VALUES");
	else {
		/* the stream's values of ALWAYS identity columns, as the subscriber writes them */
		sluice_buf_printf(sql, ")%s VALUES (",
				  r->overriding ? " OVERRIDING SYSTEM VALUE" : "");
		for (int i = 0, k = 1; i < r->ncols; i++)
			if (present[i]) {
				sluice_buf_append_str(sql, k > 1 ? ", " : "");
				apply_param(sql, r, i, k++);
			}
		sluice_buf_append_str(sql, ")");
	}
	if (strcmp(mode, "upsert") == 0 && r->has_unique) {
		sluice_buf_append_str(sql, " ON CONFLICT (");
		int k = 0;
		for (int i = 0; i < r->ncols; i++)
			if (r->key[i])
				sluice_buf_printf(sql, "%s%s", k++ ? ", " : "", r->qcols[i]);
		sluice_buf_append_str(sql, ")");
		int set = 0;
		for (int i = 0; i < r->ncols; i++)
			if (apply_settable(r, present, i) && !r->key[i])
				sluice_buf_printf(sql, "%s%s = EXCLUDED.%s",
						  set++ ? ", " : " DO UPDATE SET ", r->qcols[i],
						  r->qcols[i]);
		if (set == 0)
			sluice_buf_append_str(sql, " DO NOTHING");
		sluice_buf_append_str(sql, " RETURNING NOT ");
		apply_existed_sql(sql, r);
	} else if (strcmp(mode, "nothing") == 0) {
		sluice_buf_append_str(sql, " ON CONFLICT DO NOTHING RETURNING true");
	} else {
		sluice_buf_append_str(sql, " RETURNING true");
	}
}

/* apply_colset_key names a statement: relation generation, operation, column set. */
static void
apply_colset_key(char *out, size_t size, const apply_rel *r, const char *op, const bool *present)
{
	int n = snprintf(out, size, "%" PRIu32 ":%s:", r->generation, op);
	for (int i = 0; i < r->ncols && (size_t)n + 2 < size; i++)
		out[n++] = present[i] ? '1' : '0';
	out[n] = '\0';
}

/* ---- applying changes ---------------------------------------------------- */

/* Parameters for one statement: values in order, owned text in a buffer. */
typedef struct apply_params {
	const char **v;
	int n;
} apply_params;

static void
apply_params_add(apply_params *p, const char *v)
{
	p->v[p->n++] = v;
}

/* apply_params_present adds the values of row's present columns; returns how many. */
static int
apply_params_present(apply_params *p, const apply_rel *r, const apply_row *row)
{
	int n = 0;
	for (int i = 0; i < r->ncols; i++)
		if (row->present[i]) {
			apply_params_add(p, row->v[i]);
			n++;
		}
	return n;
}

/* apply_params_set adds the values of the columns an UPDATE of row writes. */
static void
apply_params_set(apply_params *p, const apply_rel *r, const apply_row *row)
{
	for (int i = 0; i < r->ncols; i++)
		if (apply_settable(r, row->present, i))
			apply_params_add(p, row->v[i]);
}

/* apply_params_key adds the values of row's key columns. */
static void
apply_params_key(apply_params *p, const apply_rel *r, const apply_row *row)
{
	for (int i = 0; i < r->ncols; i++)
		if (r->key[i])
			apply_params_add(p, row->v[i]);
}

/*
 * apply_update_sql appends an UPDATE of the columns apply_params_set sends
 * (parameters from *next on), then the key condition. With nothing to write
 * (every column is the key, or an ALWAYS identity column) it is a locking
 * SELECT of the row, whose row count tells whether it exists.
 */
static void
apply_update_sql(sluice_buf *sql, const apply_rel *r, const bool *present, int *next)
{
	int first = *next;
	for (int i = 0; i < r->ncols; i++)
		if (apply_settable(r, present, i)) {
			if (*next == first)
				sluice_buf_printf(sql, "UPDATE %s SET ", r->qtarget);
			else
				sluice_buf_append_str(sql, ", ");
			sluice_buf_printf(sql, "%s = ", r->qcols[i]);
			apply_param(sql, r, i, (*next)++);
		}
	if (*next == first) {
		sluice_buf_printf(sql, "SELECT 1 FROM %s", r->qtarget);
		apply_where(sql, r, "", next);
		sluice_buf_append_str(sql, " FOR UPDATE");
		return;
	}
	apply_where(sql, r, "", next);
}

/* apply_maybe_drain reads results back when many are queued (large transactions). */
static bool
apply_maybe_drain(apply *a)
{
	if (a->npending < APPLY_MAX_PENDING)
		return true;
	bool ok = apply_drain(a, false);
	apply_clear_pending(a);
	return ok;
}

/* ---- batched inserts ------------------------------------------------------ */

#define APPLY_BATCH_ROWS  1000
#define APPLY_BATCH_SLOTS 4096 /* hash set size: > 2 * APPLY_BATCH_ROWS */

/* apply_hash is FNV-1a over a key's JSON text. */
static uint64_t
apply_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 1099511628211ULL;
	}
	return h ? h : 1;
}

/* apply_array_elem appends one element to a text[] literal. */
static void
apply_array_elem(sluice_buf *b, const char *v)
{
	sluice_buf_append_byte(b, b->len == 0 ? '{' : ',');
	if (v == NULL) {
		sluice_buf_append_str(b, "NULL");
		return;
	}
	sluice_buf_append_byte(b, '"');
	for (const char *c = v; *c; c++) {
		if (*c == '"' || *c == '\\')
			sluice_buf_append_byte(b, '\\');
		sluice_buf_append_byte(b, (uint8_t)*c);
	}
	sluice_buf_append_byte(b, '"');
}

/* apply_batch_insert_sql: INSERT of every column from one text[] parameter per column. */
static void
apply_batch_insert_sql(sluice_buf *sql, const apply_rel *r)
{
	sluice_buf_printf(sql, "INSERT INTO %s AS sluice_new (", r->qname);
	for (int i = 0; i < r->ncols; i++)
		sluice_buf_printf(sql, "%s%s", i ? ", " : "", r->qcols[i]);
	sluice_buf_printf(sql, ")%s SELECT ", r->overriding ? " OVERRIDING SYSTEM VALUE" : "");
	for (int i = 0; i < r->ncols; i++)
		sluice_buf_printf(sql, "%su.x%d::%s", i ? ", " : "", i, r->types[i]);
	sluice_buf_append_str(sql, " FROM unnest(");
	for (int i = 0; i < r->ncols; i++)
		sluice_buf_printf(sql, "%s$%d::text[]", i ? ", " : "", i + 1);
	sluice_buf_append_str(sql, ") AS u(");
	for (int i = 0; i < r->ncols; i++)
		sluice_buf_printf(sql, "%sx%d", i ? ", " : "", i);
	sluice_buf_append_str(sql, ")");
}

/* apply_batch_flush queues the batched rows as one INSERT ... SELECT FROM unnest(...). */
static bool
apply_batch_flush(apply *a)
{
	if (!a->batch_open)
		return true;
	a->batch_open = false;
	apply_rel *r = &a->rels[a->batch_rel];
	bool append = a->o->strategy == SLUICE_STRATEGY_APPEND;
	bool ok = true;
	char key[64];
	if (a->batch_rows == 1) {
		/* One row: a plain single-row statement is cheaper than unnest(). */
		const char **vals = calloc((size_t)r->ncols + 1, sizeof(char *));
		bool *present = calloc((size_t)r->ncols + 1, sizeof(bool));
		if (vals == NULL || present == NULL)
			abort();
		size_t off = 0;
		for (int i = 0; i < r->ncols; i++) {
			present[i] = true;
			const char *v = (const char *)a->batch_first.data + off;
			vals[i] = a->batch_first_null[i] ? NULL : v;
			off += strlen(v) + 1;
		}
		char skey[512];
		apply_colset_key(skey, sizeof(skey), r, "iu", present);
		const char *name = apply_stmt_find(a, skey);
		if (name == NULL) {
			sluice_buf sql = {0};
			apply_insert_sql(&sql, r, present, "upsert");
			name = apply_stmt_prepare(a, skey, &sql, r->ncols, &ok);
			sluice_buf_free(&sql);
		}
		if (ok)
			ok = apply_send_prepared(a, name, r->ncols, vals, APPLY_K_INSERT_UPSERT,
						 a->batch_rel, a->batch_first_key);
		else
			free(a->batch_first_key);
		a->batch_first_key = NULL;
		free(present);
		free(vals);
		for (int i = 0; i < a->batch_ncols; i++)
			sluice_buf_reset(&a->batch_cols[i]);
		a->batch_rows = 0;
		return ok && apply_maybe_drain(a);
	}
	free(a->batch_first_key);
	a->batch_first_key = NULL;
	bool plain = a->o->strategy == SLUICE_STRATEGY_REPLACE && !a->o->dry_run && r->has_unique &&
		     a->txseq > a->safe_through;
	snprintf(key, sizeof(key), "%" PRIu32 ":%s", r->generation, plain ? "plain" : "batch");
	const char *name = apply_stmt_find(a, key);
	if (name == NULL && plain) {
		sluice_buf sql = {0};
		apply_batch_insert_sql(&sql, r);
		name = apply_stmt_prepare(a, key, &sql, r->ncols, &ok);
		sluice_buf_free(&sql);
	} else if (name == NULL) {
		sluice_buf sql = {0};
		/*
		 * One result row with the count of rows written, then one row per
		 * row that existed (its key, for the conflict log): not a row back
		 * per inserted row.
		 */
		sluice_buf_append_str(&sql, "WITH ins(upd");
		for (int i = 0, k = 0; i < r->ncols; i++)
			if (r->key[i])
				sluice_buf_printf(&sql, ", k%d", k++);
		sluice_buf_append_str(&sql, ") AS (");
		apply_batch_insert_sql(&sql, r);
		if (append)
			sluice_buf_append_str(&sql, " ON CONFLICT DO NOTHING");
		else if (r->has_unique) {
			sluice_buf_append_str(&sql, " ON CONFLICT (");
			int k = 0;
			for (int i = 0; i < r->ncols; i++)
				if (r->key[i])
					sluice_buf_printf(&sql, "%s%s", k++ ? ", " : "",
							  r->qcols[i]);
			sluice_buf_append_str(&sql, ")");
			int set = 0;
			for (int i = 0; i < r->ncols; i++)
				if (!r->key[i] && !r->ident_always[i])
					sluice_buf_printf(&sql, "%s%s = EXCLUDED.%s",
							  set++ ? ", " : " DO UPDATE SET ",
							  r->qcols[i], r->qcols[i]);
			if (set == 0)
				sluice_buf_append_str(&sql, " DO NOTHING");
		}
		sluice_buf_append_str(&sql, " RETURNING ");
		apply_existed_sql(&sql, r);
		int nk = 0;
		for (int i = 0; i < r->ncols; i++)
			if (r->key[i]) {
				sluice_buf_printf(&sql, ", %s", r->qcols[i]);
				nk++;
			}
		sluice_buf_append_str(&sql, ") SELECT NULL::text, count(*) FROM ins UNION ALL "
					    "SELECT to_jsonb(ARRAY[");
		for (int k = 0; k < nk; k++)
			sluice_buf_printf(&sql, "%sformat('%%s', k%d)", k ? ", " : "", k);
		sluice_buf_append_str(&sql, "]::text[])::text, NULL FROM ins WHERE upd");
		name = apply_stmt_prepare(a, key, &sql, r->ncols, &ok);
		sluice_buf_free(&sql);
	}
	const char **vals = calloc((size_t)r->ncols + 1, sizeof(char *));
	if (vals == NULL)
		abort();
	for (int i = 0; i < r->ncols; i++) {
		sluice_buf_append_byte(&a->batch_cols[i], '}');
		sluice_buf_append_byte(&a->batch_cols[i], '\0');
		vals[i] = (const char *)a->batch_cols[i].data;
	}
	if (ok)
		ok = apply_send_prepared(a, name, r->ncols, vals,
					 plain ? APPLY_K_BATCH_PLAIN : APPLY_K_BATCH_INSERT,
					 a->batch_rel, NULL);
	if (ok)
		a->pending[a->npending - 1].rows = a->batch_rows;
	free(vals);
	for (int i = 0; i < a->batch_ncols; i++)
		sluice_buf_reset(&a->batch_cols[i]);
	a->batch_rows = 0;
	return ok && apply_maybe_drain(a);
}

/*
 * apply_batch_add adds a complete insert to the batch (flushing first when it
 * belongs to another relation, repeats a key or the batch is full).
 * @return false only on failure; *taken tells whether the row was batched.
 */
static bool
apply_batch_add(apply *a, uint32_t ri, const apply_row *row, const char *keyjson, bool *taken)
{
	apply_rel *r = &a->rels[ri];
	*taken = false;
	if (r->ncols == 0)
		return apply_batch_flush(a); /* nothing to unnest: INSERT ... DEFAULT VALUES */
	/*
	 * One at a time when a column has no type to cast to, or is a regclass:
	 * text::regclass is not its input function (it refuses "-", the zero oid).
	 */
	for (int i = 0; i < r->ncols; i++)
		if (r->types[i][0] == '\0' || strncmp(r->types[i], "regclass", 8) == 0)
			return apply_batch_flush(a);
	/* Append logs each kept row with its key: one statement per row there. */
	if (a->o->strategy == SLUICE_STRATEGY_APPEND || (!r->has_unique && !r->full_identity))
		return apply_batch_flush(a);
	uint64_t h = apply_hash(keyjson);
	if (a->batch_open && (a->batch_rel != ri || a->batch_rows >= APPLY_BATCH_ROWS)) {
		if (!apply_batch_flush(a))
			return false;
	}
	if (a->batch_open) {
		/* The same key twice in one statement is not allowed by ON CONFLICT. */
		for (size_t s = h % APPLY_BATCH_SLOTS;; s = (s + 1) % APPLY_BATCH_SLOTS) {
			if (a->batch_hashes[s] == 0)
				break;
			if (a->batch_hashes[s] == h) {
				if (!apply_batch_flush(a))
					return false;
				break;
			}
		}
	}
	if (!a->batch_open) {
		if (a->batch_ncols < r->ncols) {
			sluice_buf *p = realloc(a->batch_cols, (size_t)r->ncols * sizeof(*p));
			if (p == NULL)
				abort();
			for (int i = a->batch_ncols; i < r->ncols; i++)
				memset(&p[i], 0, sizeof(p[i]));
			a->batch_cols = p;
			a->batch_ncols = r->ncols;
		}
		if (a->batch_hashes == NULL) {
			a->batch_hashes = calloc(APPLY_BATCH_SLOTS, sizeof(uint64_t));
			if (a->batch_hashes == NULL)
				abort();
		} else
			memset(a->batch_hashes, 0, APPLY_BATCH_SLOTS * sizeof(uint64_t));
		for (int i = 0; i < a->batch_ncols; i++)
			sluice_buf_reset(&a->batch_cols[i]);
		a->batch_open = true;
		a->batch_rel = ri;
		a->batch_rows = 0;
	}
	for (size_t s = h % APPLY_BATCH_SLOTS;; s = (s + 1) % APPLY_BATCH_SLOTS)
		if (a->batch_hashes[s] == 0) {
			a->batch_hashes[s] = h;
			break;
		}
	if (a->batch_rows == 0) {
		if (a->batch_first_cap < r->ncols) {
			bool *p = realloc(a->batch_first_null, (size_t)r->ncols * sizeof(bool));
			if (p == NULL)
				abort();
			a->batch_first_null = p;
			a->batch_first_cap = r->ncols;
		}
		sluice_buf_reset(&a->batch_first);
		for (int i = 0; i < r->ncols; i++) {
			a->batch_first_null[i] = row->v[i] == NULL;
			sluice_buf_append_str(&a->batch_first, row->v[i] ? row->v[i] : "");
			sluice_buf_append_byte(&a->batch_first, '\0');
		}
		free(a->batch_first_key);
		a->batch_first_key = apply_strdup(keyjson);
	}
	for (int i = 0; i < r->ncols; i++)
		apply_array_elem(&a->batch_cols[i], row->v[i]);
	a->batch_rows++;
	*taken = true;
	return true;
}

/*
 * apply_ident_move prepares the update of a complete row into a table with
 * GENERATED ALWAYS identity columns, which no UPDATE (nor ON CONFLICT DO
 * UPDATE) may set: when the row's identity value or key changes, the old
 * row is deleted here and the upsert that follows inserts the new one
 * (OVERRIDING SYSTEM VALUE). Otherwise this deletes nothing and the upsert
 * updates the row in place.
 */
static bool
apply_ident_move(apply *a, uint32_t ri, const apply_row *newr, const apply_row *keyrow,
		 apply_kind kind)
{
	apply_rel *r = &a->rels[ri];
	char key[64];
	bool ok = true;
	const char **vals = calloc((size_t)r->ncols * 2 + 2, sizeof(char *));
	if (vals == NULL)
		abort();
	apply_params p = {.v = vals};
	apply_params_key(&p, r, keyrow);
	for (int i = 0; i < r->ncols; i++)
		if (r->ident_always[i] || r->key[i])
			apply_params_add(&p, newr->v[i]);
	snprintf(key, sizeof(key), "%" PRIu32 ":move", r->generation);
	const char *name = apply_stmt_find(a, key);
	if (name == NULL) {
		sluice_buf sql = {0};
		sluice_buf_printf(&sql, "DELETE FROM %s", r->qtarget);
		int next = 1;
		apply_where(&sql, r, "", &next);
		sluice_buf_append_str(&sql, " AND (false");
		for (int i = 0; i < r->ncols; i++)
			if (r->ident_always[i] || r->key[i]) {
				sluice_buf_printf(&sql, " OR %s IS DISTINCT FROM ", r->qcols[i]);
				apply_param(&sql, r, i, next++);
			}
		sluice_buf_append_str(&sql, ")");
		name = apply_stmt_prepare(a, key, &sql, p.n, &ok);
		sluice_buf_free(&sql);
	}
	if (ok)
		ok = apply_send_prepared(a, name, p.n, p.v, kind, ri, NULL);
	free(vals);
	return ok;
}

/* apply_pipelined queues the pipelined write of replace/append for one change. */
static bool
apply_pipelined(apply *a, uint32_t ri, char op, const apply_row *newr, const apply_row *oldr)
{
	apply_rel *r = &a->rels[ri];
	bool ok = true;
	char key[512];
	sluice_buf sql = {0};
	const apply_row *keyrow = oldr ? oldr : newr;
	const char **vals = calloc((size_t)r->ncols * 2 + 2, sizeof(char *));
	if (vals == NULL)
		abort();
	apply_params p = {.v = vals};
	char *keyjson = apply_key_json(r, keyrow);
	bool append = a->o->strategy == SLUICE_STRATEGY_APPEND;
	bool key_changed = false;
	if (oldr && newr)
		for (int i = 0; i < r->ncols; i++)
			if (r->key[i] && newr->present[i] &&
			    ((oldr->v[i] == NULL) != (newr->v[i] == NULL) ||
			     (oldr->v[i] && newr->v[i] && strcmp(oldr->v[i], newr->v[i]) != 0)))
				key_changed = true;

	if (op == 'I' && newr->complete) {
		bool taken = false;
		if (!apply_batch_add(a, ri, newr, keyjson, &taken))
			ok = false;
		if (!ok || taken)
			goto out;
	} else if (!apply_batch_flush(a)) {
		ok = false;
		goto out;
	}
	bool keyed = r->has_unique || !r->full_identity;
	apply_kind kind;
	const char *name = NULL;
	if (op == 'I' || (op == 'U' && newr->complete && !key_changed && keyed)) {
		/* insert, or an update that carries the whole row: upsert */
		kind = op == 'I' ? (append ? APPLY_K_INSERT_NOTHING : APPLY_K_INSERT_UPSERT)
				 : (append ? APPLY_K_APPEND_UPDATE : APPLY_K_UPDATE_UPSERT);
		apply_colset_key(key, sizeof(key), r,
				 op == 'I' ? (append ? "in" : "iu") : (append ? "an" : "uu"),
				 newr->present);
		/* first: preparing it may move the statement names that name points into */
		if (op == 'U' && !append && r->overriding && r->has_unique)
			ok = apply_ident_move(a, ri, newr, keyrow, APPLY_K_IDENT_MOVE);
		int n = apply_params_present(&p, r, newr);
		if (ok && (name = apply_stmt_find(a, key)) == NULL) {
			apply_insert_sql(&sql, r, newr->present, append ? "nothing" : "upsert");
			name = apply_stmt_prepare(a, key, &sql, n, &ok);
		}
	} else if (append) {
		/* Never overwrite or delete; a change of a missing row is still counted. */
		kind = op == 'U' ? APPLY_K_APPEND_PROBE_UPD : APPLY_K_APPEND_PROBE_DEL;
		snprintf(key, sizeof(key), "%" PRIu32 ":exists", r->generation);
		apply_params_key(&p, r, keyrow);
		if ((name = apply_stmt_find(a, key)) == NULL) {
			sluice_buf_printf(&sql, "SELECT EXISTS (SELECT 1 FROM %s", r->qtarget);
			int next = 1;
			apply_where(&sql, r, "", &next);
			sluice_buf_append_str(&sql, ")");
			name = apply_stmt_prepare(a, key, &sql, p.n, &ok);
		}
	} else if (op == 'U' && key_changed && newr->complete && keyed) {
		/*
		 * The row moves to a new key: delete the old, then upsert the new,
		 * as two statements (in one, the INSERT would not see the CTE's
		 * delete and fail on any other unique column of the row). Missing
		 * only if there was no old row to move.
		 */
		kind = APPLY_K_MOVED_UPSERT;
		/* first: preparing it may move the statement names that name points into */
		ok = apply_ident_move(a, ri, newr, keyrow, APPLY_K_IDENT_MOVE);
		apply_colset_key(key, sizeof(key), r, "iu", newr->present);
		int n = apply_params_present(&p, r, newr);
		if (ok && (name = apply_stmt_find(a, key)) == NULL) {
			apply_insert_sql(&sql, r, newr->present, "upsert");
			name = apply_stmt_prepare(a, key, &sql, n, &ok);
		}
	} else if (op == 'U') {
		/* Unchanged TOAST values stay as they are on the target. */
		kind = APPLY_K_UPDATE_PLAIN;
		apply_colset_key(key, sizeof(key), r, "up", newr->present);
		apply_params_set(&p, r, newr);
		apply_params_key(&p, r, keyrow);
		if ((name = apply_stmt_find(a, key)) == NULL) {
			int next = 1;
			apply_update_sql(&sql, r, newr->present, &next);
			name = apply_stmt_prepare(a, key, &sql, p.n, &ok);
		}
	} else {
		kind = APPLY_K_DELETE;
		snprintf(key, sizeof(key), "%" PRIu32 ":del", r->generation);
		apply_params_key(&p, r, keyrow);
		if ((name = apply_stmt_find(a, key)) == NULL) {
			sluice_buf_printf(&sql, "DELETE FROM %s", r->qtarget);
			int next = 1;
			apply_where(&sql, r, "", &next);
			name = apply_stmt_prepare(a, key, &sql, p.n, &ok);
		}
	}
	if (ok)
		ok = apply_send_prepared(a, name, p.n, p.v, kind, ri, keyjson);
	else
		free(keyjson);
	keyjson = NULL;
out:
	free(keyjson);
	free(vals);
	sluice_buf_free(&sql);
	return ok && apply_maybe_drain(a);
}

/*
 * apply_tomb_key_expr appends the tombstone key of a row as the trigger
 * builds it: each key value through its column type, printed with the
 * canonical settings of this session and of sluice.record_delete().
 */
static void
apply_tomb_key_expr(sluice_buf *sql, const apply_rel *r, int first)
{
	sluice_buf_append_str(sql, "to_jsonb(ARRAY[");
	int k = 0;
	for (int i = 0; i < r->ncols; i++) {
		if (!r->key[i])
			continue;
		sluice_buf_printf(sql, "%sformat('%%s', $%d::%s)", k ? ", " : "", first + k,
				  r->types[i][0] ? r->types[i] : "text");
		k++;
	}
	sluice_buf_append_str(sql, "]::text[])");
}

/* Result of a timestamp probe. */
typedef struct apply_probe {
	bool present;
	bool remote_wins;
	char at[64];
	char node[256];
} apply_probe;

static void
apply_read_probe(PGresult *res, apply_probe *p)
{
	memset(p, 0, sizeof(*p));
	if (res == NULL || PQntuples(res) == 0)
		return;
	p->present = true;
	/* "" when the writer has no commit time (frozen, or this transaction's own row) */
	snprintf(p->at, sizeof(p->at), "%s", PQgetvalue(res, 0, 0));
	snprintf(p->node, sizeof(p->node), "%s", PQgetvalue(res, 0, 1));
	p->remote_wins = PQgetvalue(res, 0, 2)[0] == 't';
}

/* apply_timestamp resolves one change by last-writer-wins (conflicts.md). */
static bool
apply_timestamp(apply *a, uint32_t ri, char op, const apply_row *newr, const apply_row *oldr)
{
	apply_rel *r = &a->rels[ri];
	bool ok = true;
	char key[512];
	sluice_buf sql = {0};
	const apply_row *keyrow = oldr ? oldr : newr;
	const char **vals = calloc((size_t)r->ncols * 3 + 8, sizeof(char *));
	if (vals == NULL)
		abort();
	char *keyjson = apply_key_json(r, keyrow);

	/* 1. versions of the row (locked) and of its tombstone */
	apply_params p = {.v = vals};
	snprintf(key, sizeof(key), "%" PRIu32 ":probe%s", r->generation,
		 r->ts_col >= 0 ? "ts" : "");
	apply_params_add(&p, a->commit_ts);
	apply_params_add(&p, a->node);
	int next = 3;
	const char *tsval = NULL;
	if (r->ts_col >= 0) {
		tsval = newr && newr->present[r->ts_col] ? newr->v[r->ts_col] : NULL;
		apply_params_add(&p, tsval);
		next = 4;
	}
	apply_params_key(&p, r, keyrow);
	const char *probe = apply_stmt_find(a, key);
	if (probe == NULL) {
		/*
		 * The row is locked in a sub-select: when a concurrent local writer
		 * commits first, the version is computed from the row as re-read.
		 */
		if (r->ts_col >= 0)
			sluice_buf_printf(
				&sql,
				"SELECT (sluice.version(x.xm)).at, (sluice.version(x.xm)).node, "
				"CASE WHEN x.tc IS NULL OR $3::timestamptz IS NULL THEN "
				"sluice.remote_wins(x.xm, $1, $2) WHEN $3::timestamptz <> x.tc "
				"THEN $3::timestamptz > x.tc ELSE $2 > "
				"coalesce((sluice.version(x.xm)).node, '') END FROM (SELECT "
				"t.xmin AS xm, t.%s AS tc FROM %s t",
				r->qcols[r->ts_col], r->qtarget);
		else
			sluice_buf_printf(
				&sql,
				"SELECT (sluice.version(x.xm)).at, (sluice.version(x.xm)).node, "
				"sluice.remote_wins(x.xm, $1, $2) FROM (SELECT t.xmin AS xm "
				"FROM %s t",
				r->qtarget);
		apply_where(&sql, r, "t.", &next);
		sluice_buf_append_str(&sql, " FOR UPDATE OF t) x");
		probe = apply_stmt_prepare(a, key, &sql, p.n, &ok);
	}
	/*
	 * A table without a unique key may hold equal rows, each a row of its
	 * own: an insert there is never a conflict, and is not probed.
	 */
	bool probing = !(op == 'I' && r->full_identity && !r->has_unique);
	if (ok && probing)
		ok = apply_send_prepared(a, probe, p.n, p.v, APPLY_K_PROBE_ROW, ri, NULL);
	/*
	 * Tombstone keys are built on the server, through the column types. A
	 * table identified by all its columns has no key to keep a tombstone
	 * under (sluice prepare tracks no deletes there either).
	 */
	if (ok && probing && !r->full_identity) {
		snprintf(key, sizeof(key), "%" PRIu32 ":tprobe", r->generation);
		const char *tname = apply_stmt_find(a, key);
		if (tname == NULL) {
			sluice_buf_reset(&sql);
			sluice_buf_append_str(
				&sql,
				"SELECT v.at, v.node, sluice.remote_wins(tb.xmin, $1, $2) "
				"FROM sluice.tombstones tb, LATERAL sluice.version(tb.xmin) v "
				"WHERE tb.rel = $3 AND tb.key = ");
			apply_tomb_key_expr(&sql, r, 4);
			tname = apply_stmt_prepare(a, key, &sql, 3 + r->nkeys, &ok);
		}
		apply_params tpp = {.v = vals + r->ncols + 2};
		apply_params_add(&tpp, a->commit_ts);
		apply_params_add(&tpp, a->node);
		apply_params_add(&tpp, r->tomb_rel);
		apply_params_key(&tpp, r, keyrow);
		if (ok)
			ok = apply_send_prepared(a, tname, tpp.n, tpp.v, APPLY_K_PROBE_TOMB, ri,
						 NULL);
	}
	if (ok && probing && !apply_drain(a, true))
		ok = false;
	apply_probe row, tomb;
	memset(&row, 0, sizeof(row));
	memset(&tomb, 0, sizeof(tomb));
	for (size_t i = 0; ok && i < a->npending; i++) {
		if (a->pending[i].kind == APPLY_K_PROBE_ROW)
			apply_read_probe(a->pending[i].res, &row);
		else if (a->pending[i].kind == APPLY_K_PROBE_TOMB)
			apply_read_probe(a->pending[i].res, &tomb);
	}
	if (probing || !ok)
		apply_clear_pending(a); /* read back (or failed); else still in flight */
	if (!ok)
		goto out;
	/* A tombstone blocks only when the delete is newer than this change. */
	bool tomb_blocks = tomb.present && !tomb.remote_wins;

	/* 2. decide and write */
	enum { W_NONE, W_INSERT, W_UPDATE_ALL, W_UPDATE, W_DELETE, W_TOMB } w = W_NONE;
	if (op == 'I') {
		if (!row.present) {
			if (tomb_blocks)
				apply_conflict(a, SLUICE_CONFLICT_INSERT_DELETED, r, keyjson,
					       tomb.at, tomb.node, "skipped");
			else
				w = W_INSERT;
		} else if (row.remote_wins) {
			apply_conflict(a, SLUICE_CONFLICT_INSERT_EXISTS, r, keyjson, row.at,
				       row.node, "remote");
			w = W_UPDATE_ALL;
		} else
			apply_conflict(a, SLUICE_CONFLICT_INSERT_EXISTS, r, keyjson, row.at,
				       row.node, "kept_local");
	} else if (op == 'U') {
		if (row.present && row.remote_wins)
			w = W_UPDATE;
		else if (row.present)
			apply_conflict(a, SLUICE_CONFLICT_UPDATE_NEWER_LOCAL, r, keyjson, row.at,
				       row.node, "kept_local");
		else if (tomb_blocks)
			apply_conflict(a, SLUICE_CONFLICT_UPDATE_DELETED, r, keyjson, tomb.at,
				       tomb.node, "skipped");
		else if (newr->complete) {
			apply_conflict(a, SLUICE_CONFLICT_UPDATE_MISSING, r, keyjson, NULL, NULL,
				       "inserted");
			w = W_INSERT;
		} else
			apply_conflict(a, SLUICE_CONFLICT_UPDATE_MISSING, r, keyjson, NULL, NULL,
				       "skipped");
	} else {
		if (row.present && row.remote_wins)
			w = W_DELETE;
		else {
			if (row.present)
				apply_conflict(a, SLUICE_CONFLICT_DELETE_NEWER_LOCAL, r, keyjson,
					       row.at, row.node, "kept_local");
			else
				apply_conflict(a, SLUICE_CONFLICT_DELETE_MISSING, r, keyjson, NULL,
					       NULL, "tombstone");
			w = W_TOMB;
		}
	}

	sluice_buf_reset(&sql);
	p.n = 0;
	next = 1;
	if (w == W_INSERT) {
		apply_colset_key(key, sizeof(key), r, "tin", newr->present);
		apply_params_present(&p, r, newr);
		if (apply_stmt_find(a, key) == NULL)
			apply_insert_sql(&sql, r, newr->present, "nothing");
		a->stats->inserts++;
	} else if ((w == W_UPDATE || w == W_UPDATE_ALL) && r->overriding && newr->complete &&
		   r->has_unique) {
		/* ALWAYS identity: move the row when its identity or key changes, then upsert */
		ok = apply_ident_move(a, ri, newr, keyrow, APPLY_K_TS_WRITE);
		apply_colset_key(key, sizeof(key), r, "tmv", newr->present);
		apply_params_present(&p, r, newr);
		if (apply_stmt_find(a, key) == NULL)
			apply_insert_sql(&sql, r, newr->present, "upsert");
		a->stats->updates++;
	} else if (w == W_UPDATE || w == W_UPDATE_ALL) {
		apply_colset_key(key, sizeof(key), r, "tup", newr->present);
		apply_params_set(&p, r, newr);
		apply_params_key(&p, r, keyrow);
		if (apply_stmt_find(a, key) == NULL)
			apply_update_sql(&sql, r, newr->present, &next);
		a->stats->updates++;
	} else if (w == W_DELETE) {
		snprintf(key, sizeof(key), "%" PRIu32 ":del", r->generation);
		apply_params_key(&p, r, keyrow);
		if (apply_stmt_find(a, key) == NULL) {
			sluice_buf_printf(&sql, "DELETE FROM %s", r->qtarget);
			apply_where(&sql, r, "", &next);
		}
		a->stats->deletes++;
	}
	if (w != W_NONE && w != W_TOMB) {
		const char *name = apply_stmt_prepare(a, key, &sql, p.n, &ok);
		if (ok)
			ok = apply_send_prepared(a, name, p.n, p.v, APPLY_K_TS_WRITE, ri, NULL);
	}
	/* Deletes leave a tombstone at the remote version (the trigger does it when tracked). */
	if (ok && !r->full_identity && (w == W_TOMB || (w == W_DELETE && !r->tracked))) {
		snprintf(key, sizeof(key), "%" PRIu32 ":tomb", r->generation);
		const char *tname = apply_stmt_find(a, key);
		if (tname == NULL) {
			sluice_buf_reset(&sql);
			sluice_buf_append_str(
				&sql, "INSERT INTO sluice.tombstones AS t (rel, key) VALUES ($1, ");
			apply_tomb_key_expr(&sql, r, 4);
			sluice_buf_append_str(&sql,
					      ") ON CONFLICT (rel, key) DO UPDATE SET deleted_at = "
					      "now() WHERE sluice.remote_wins(t.xmin, $2, $3)");
			tname = apply_stmt_prepare(a, key, &sql, 3 + r->nkeys, &ok);
		}
		apply_params up = {.v = vals + r->ncols + 2};
		apply_params_add(&up, r->tomb_rel);
		apply_params_add(&up, a->commit_ts);
		apply_params_add(&up, a->node);
		apply_params_key(&up, r, keyrow);
		if (ok)
			ok = apply_send_prepared(a, tname, up.n, up.v, APPLY_K_CONTROL, ri, NULL);
	}
	if (ok)
		ok = apply_maybe_drain(a);
out:
	free(keyjson);
	free(vals);
	sluice_buf_free(&sql);
	return ok;
}

/*
 * apply_rel_ready finds the relation relid of the stream (*ri) and tells
 * whether its changes are applied (*wanted: included by the filters, not in
 * sluice's own schema); a wanted relation is compared with the target table
 * the first time. Returns false on failure (logged).
 */
static bool
apply_rel_ready(apply *a, const sluice_reader *reader, uint32_t relid, uint32_t *ri, bool *wanted)
{
	*ri = UINT32_MAX;
	*wanted = false;
	for (size_t i = 0; i < a->nrels; i++)
		if (a->rels[i].id == relid)
			*ri = (uint32_t)i;
	if (*ri == UINT32_MAX) {
		const Sluice__V1__Relation *src = sluice_reader_relation(reader, relid);
		if (src == NULL) {
			sluice_log_error("txseq %" PRIu64 ": change of relation %" PRIu32
					 " that the stream never described",
					 a->txseq, relid);
			return false;
		}
		apply_relation(a, src);
		*ri = (uint32_t)(a->nrels - 1);
	}
	apply_rel *r = &a->rels[*ri];
	if (r->local && !r->warned) {
		sluice_log_warn("stream \"%s\" holds changes of %s, in sluice's own node-local "
				"schema: not applied (txseq %" PRIu64 ")",
				a->o->stream, r->label, a->txseq);
		r->warned = true;
	}
	if (!r->included)
		return true;
	if (!r->checked) {
		/* Results of earlier statements first: the check uses plain queries. */
		if (!apply_batch_flush(a))
			return false;
		if (a->npending > 0) {
			bool ok = apply_drain(a, false);
			apply_clear_pending(a);
			if (!ok)
				return false;
		}
		if (PQexitPipelineMode(a->conn) != 1) {
			sluice_log_error("could not leave pipeline mode: %s",
					 sluice_pg_error_line(a->conn));
			return false;
		}
		bool ok = apply_check_rel(a, r, sluice_reader_relation(reader, relid));
		if (PQenterPipelineMode(a->conn) != 1)
			ok = false;
		if (!ok)
			return false;
	}
	*wanted = true;
	return true;
}

/* apply_change routes one row change of the stream. */
static bool
apply_change(apply *a, const sluice_reader *reader, const sluice_record *rec)
{
	uint32_t relid = 0;
	const Sluice__V1__Row *newrow = NULL, *oldrow = NULL;
	char op;
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_INSERT:
		relid = rec->insert->relation_id;
		newrow = rec->insert->new_row;
		op = 'I';
		break;
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
		relid = rec->snapshot_row->relation_id;
		newrow = rec->snapshot_row->row;
		op = 'I';
		break;
	case SLUICE__V1__RECORD__BODY_UPDATE:
		relid = rec->update->relation_id;
		newrow = rec->update->new_row;
		oldrow = rec->update->old_row;
		op = 'U';
		break;
	default:
		relid = rec->delete_->relation_id;
		oldrow = rec->delete_->old_row;
		op = 'D';
	}
	uint32_t ri;
	bool wanted;
	if (!apply_rel_ready(a, reader, relid, &ri, &wanted))
		return false;
	if (!wanted) {
		a->stats->skipped++;
		return true;
	}
	apply_rel *r = &a->rels[ri];
	a->cur_op = op;
	a->cur_rel = ri;
	sluice_buf text = {0};
	const char **nv = calloc((size_t)r->ncols + 1, sizeof(char *));
	const char **ov = calloc((size_t)r->ncols + 1, sizeof(char *));
	bool *np = calloc((size_t)r->ncols + 1, sizeof(bool));
	bool *opr = calloc((size_t)r->ncols + 1, sizeof(bool));
	if (nv == NULL || ov == NULL || np == NULL || opr == NULL)
		abort();
	apply_row newr = {.v = nv, .present = np}, oldr = {.v = ov, .present = opr};
	/* Both rows' text goes into one buffer: fill it fully before taking pointers. */
	sluice_buf ntext = {0};
	if (newrow)
		apply_row_from(r, newrow, &newr, &ntext);
	if (oldrow)
		apply_row_from(r, oldrow, &oldr, &text);
	bool ok =
		a->o->strategy == SLUICE_STRATEGY_TIMESTAMP
			? apply_timestamp(a, ri, op, newrow ? &newr : NULL, oldrow ? &oldr : NULL)
			: apply_pipelined(a, ri, op, newrow ? &newr : NULL, oldrow ? &oldr : NULL);
	a->cur_op = 0; /* a failure is reported by apply_failed, naming the change */
	free(opr);
	free(np);
	free(ov);
	free(nv);
	sluice_buf_free(&ntext);
	sluice_buf_free(&text);
	return ok;
}

/* apply_truncate empties the included tables (replace and timestamp; append keeps data). */
static bool
apply_truncate(apply *a, const sluice_reader *reader, const Sluice__V1__Truncate *t)
{
	if (!apply_batch_flush(a))
		return false;
	if (a->o->strategy == SLUICE_STRATEGY_APPEND) {
		a->stats->skipped++;
		return true;
	}
	sluice_buf sql = {0};
	int n = 0;
	bool ok = true;
	for (size_t i = 0; ok && i < t->n_relation_ids; i++) {
		if (sluice_reader_relation(reader, t->relation_ids[i]) == NULL)
			continue;
		uint32_t ri;
		bool wanted;
		ok = apply_rel_ready(a, reader, t->relation_ids[i], &ri, &wanted);
		/* ONLY each table: the source names every table it truncated */
		if (ok && wanted)
			sluice_buf_printf(&sql, "%s%s", n++ ? ", " : "TRUNCATE ",
					  a->rels[ri].qtarget);
	}
	if (ok && n > 0) {
		if (t->has_restart_identity && t->restart_identity)
			sluice_buf_append_str(&sql, " RESTART IDENTITY");
		if (t->has_cascade && t->cascade)
			sluice_buf_append_str(&sql, " CASCADE");
		sluice_buf_append_byte(&sql, '\0');
		ok = apply_send_sql(a, (const char *)sql.data, 0, NULL, APPLY_K_CONTROL);
		a->stats->truncates++;
	}
	sluice_buf_free(&sql);
	return ok;
}

/* ---- transactions ------------------------------------------------------ */

static void
apply_lsn_text(uint64_t v, char *out, size_t size)
{
	snprintf(out, size, "%X/%X", (unsigned)(v >> 32), (unsigned)(v & 0xFFFFFFFFu));
}

static bool
apply_begin(apply *a, uint64_t txseq, int64_t commit_us, const char *node)
{
	if (a->expect_txseq != 0 && txseq != a->expect_txseq) {
		sluice_log_error("txseq gap: the target has applied up to txseq %" PRIu64
				 " but the stream continues at %" PRIu64,
				 a->expect_txseq - 1, txseq);
		a->stats->refused = true;
		return false;
	}
	a->expect_txseq = txseq + 1;
	a->txseq = txseq;
	a->commit_us = commit_us;
	apply_format_ts(commit_us, a->commit_ts, sizeof(a->commit_ts));
	snprintf(a->node, sizeof(a->node), "%s", node);
	a->in_txn = true;
	uint32_t ni = 0;
	while (ni < a->nnodes && strcmp(a->nodes[ni], node) != 0)
		ni++;
	if (ni == a->nnodes) {
		char **p = realloc(a->nodes, (a->nnodes + 1) * sizeof(*p));
		if (p == NULL)
			abort();
		a->nodes = p;
		a->nodes[a->nnodes++] = apply_strdup(node);
	}
	a->cur_node = ni;
	int64_t now_us = sluice_clock_unix_us();
	if (commit_us - now_us > a->o->clock_skew_tolerance_us) {
		a->stats->clock_skew_warnings++;
		sluice_log_warn("txseq %" PRIu64 " from node \"%s\" was committed %.3f s in this "
				"node's future: clocks disagree (run NTP on every node)",
				txseq, node, (double)(commit_us - now_us) / 1e6);
	}
	if (a->o->dry_run) {
		if (!a->dry_open && !apply_send_sql(a, "BEGIN", 0, NULL, APPLY_K_CONTROL))
			return false;
		a->dry_open = true;
		a->txn_open_on_target = true;
		return true;
	}
	char lsn[32];
	apply_lsn_text(txseq, lsn, sizeof(lsn));
	const char *params[3] = {lsn, a->commit_ts, node};
	/* Delete tracking (sluice prepare) records tombstones at the remote version. */
	if (!apply_send_prepared(a, "sl_begin", 0, NULL, APPLY_K_CONTROL, 0, NULL) ||
	    !(a->schema_installed
		      ? apply_send_prepared(a, "sl_setup_v", 3, params, APPLY_K_CONTROL, 0, NULL)
		      : apply_send_prepared(a, "sl_setup", 2, params, APPLY_K_CONTROL, 0, NULL)))
		return false;
	a->txn_open_on_target = true;
	if (a->schema_installed && strcmp(a->last_origin_node, node) != 0) {
		const char *op[2] = {a->origin, node};
		if (!apply_send_sql(
			    a,
			    "INSERT INTO sluice.origin_node VALUES ($1, $2) ON CONFLICT (roname) "
			    "DO UPDATE SET node = EXCLUDED.node",
			    2, op, APPLY_K_CONTROL))
			return false;
		snprintf(a->last_origin_node, sizeof(a->last_origin_node), "%s", node);
	}
	return true;
}

/*
 * apply_rollback abandons the open target transaction (rewind, stop, refused
 * stream, a retry after a row that existed). It was not applied: it is the
 * transaction expected next (a restarted writer writes a cut one again with
 * the same txseq), its record of the stream's node may be gone with it, and
 * the counters return to the last COMMIT result. Returns false when the
 * target did not take the ROLLBACK.
 */
static bool
apply_rollback(apply *a)
{
	if (a->in_txn)
		a->expect_txseq = a->txseq;
	a->in_txn = false;
	a->batch_open = false;
	a->batch_rows = 0;
	if (!a->txn_open_on_target)
		return true;
	a->txn_open_on_target = false;
	a->dry_open = false;
	a->last_origin_node[0] = '\0';
	bool ok = apply_send_sql(a, "ROLLBACK", 0, NULL, APPLY_K_CONTROL) && apply_drain(a, false);
	apply_clear_pending(a);
	/* A dry run counts what it would have done: nothing commits there. */
	if (!a->o->dry_run)
		apply_restore_committed(a);
	return ok;
}

/*
 * apply_flush_results reads back everything in flight (between transactions)
 * and logs the conflicts it found, in a transaction of their own.
 */
static bool
apply_flush_results(apply *a)
{
	bool ok = true;
	if (a->npending > 0) {
		ok = apply_drain(a, false);
		apply_clear_pending(a);
	}
	if (ok && a->conflict_rows.len > 0 && !a->in_txn && !a->o->dry_run) {
		ok = apply_send_sql(a, "BEGIN", 0, NULL, APPLY_K_CONTROL) &&
		     apply_send_conflict_log(a) &&
		     apply_send_sql(a, "COMMIT", 0, NULL, APPLY_K_CONTROL) && apply_drain(a, false);
		apply_clear_pending(a);
	}
	return ok;
}

/*
 * apply_commit queues the COMMIT. Several transactions may be in flight
 * under one sync: after a failure PostgreSQL skips every command up to the
 * sync, so no later transaction can commit past a failed one, and the
 * origin progress never skips a transaction.
 */
static bool
apply_commit(apply *a)
{
	bool ok = apply_batch_flush(a);
	if (!a->o->dry_run) {
		if (ok && a->o->strategy == SLUICE_STRATEGY_TIMESTAMP)
			ok = apply_send_conflict_log(a);
		ok = ok && apply_send_prepared(a, "sl_commit", 0, NULL, APPLY_K_COMMIT, 0, NULL);
		a->txn_open_on_target = false;
	}
	a->in_txn = false;
	if (ok && a->npending >= APPLY_MAX_PENDING)
		ok = apply_flush_results(a);
	if (!ok)
		return false;
	if (a->o->dry_run)
		apply_count_txn(a, a->txseq); /* nothing commits: counted as queued */
	return true;
}

/* ---- set-up and the main loop ---------------------------------------------- */

static void
apply_log_counters(const apply *a, const char *what)
{
	const sluice_apply_stats *s = a->stats;
	char conflicts[512] = "";
	size_t n = 0;
	for (int c = 0; c < SLUICE_CONFLICT_COUNT; c++)
		if (s->conflicts[c] && n < sizeof(conflicts))
			n += (size_t)snprintf(conflicts + n, sizeof(conflicts) - n, "%s%s=%" PRIu64,
					      n ? " " : "", apply_conflict_names[c],
					      s->conflicts[c]);
	char retries[256] = "";
	size_t nr = 0;
	for (int c = 0; c < SLUICE_RETRY_COUNT; c++)
		if (s->retries[c] && nr < sizeof(retries))
			nr += (size_t)snprintf(retries + nr, sizeof(retries) - nr, "%s%s=%" PRIu64,
					       nr ? " " : "", apply_retry_names[c], s->retries[c]);
	sluice_log_info("%s: %" PRIu64 " transactions (txseq %" PRIu64 "..%" PRIu64 "), %" PRIu64
			" inserts, %" PRIu64 " updates, %" PRIu64 " deletes, %" PRIu64
			" truncates, %" PRIu64 " skipped; retries: %s; conflicts: %s",
			what, s->transactions, s->first_txseq, s->last_txseq, s->inserts,
			s->updates, s->deletes, s->truncates, s->skipped, nr ? retries : "none",
			n ? conflicts : "none");
}

/*
 * apply_origin_marker names the database-level setting that marks the
 * database owning a replication origin (origins belong to the cluster).
 */
static void
apply_origin_marker(const char *origin, char *marker, size_t size)
{
	snprintf(marker, size, "sluice.origin_");
	for (const char *c = origin; *c && strlen(marker) + 1 < size; c++) {
		size_t n = strlen(marker);
		marker[n] = (char)((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ? *c : '_');
		marker[n + 1] = '\0';
	}
}

/*
 * apply_default_origin names the origin when --origin is not given:
 * sluice_<stream>@<database>, so that a second database of the same cluster
 * (a point-in-time replay next to a live copy) gets its own progress. An
 * origin sluice_<stream> (the name before this default) that this database
 * owns keeps being used, so no progress is lost on upgrade.
 */
static bool
apply_default_origin(apply *a)
{
	char legacy[600], marker[128];
	snprintf(legacy, sizeof(legacy), "sluice_%s", a->o->stream);
	apply_origin_marker(legacy, marker, sizeof(marker));
	const char *params[2] = {legacy, marker};
	PGresult *res = sluice_pg_query(
		a->conn,
		"SELECT current_database(), pg_replication_origin_oid($1) IS NOT NULL AND "
		"coalesce(current_setting($2, true), '') = 'owner'",
		2, params);
	if (res == NULL)
		return false;
	if (PQgetvalue(res, 0, 1)[0] == 't') {
		snprintf(a->origin, sizeof(a->origin), "%s", legacy);
		sluice_log_info("using replication origin \"%s\", which this database already "
				"owns (named before the default included the database)",
				legacy);
	} else
		snprintf(a->origin, sizeof(a->origin), "sluice_%s@%s", a->o->stream,
			 PQgetvalue(res, 0, 0));
	PQclear(res);
	return true;
}

/* apply_setup connects and prepares the session; returns the txseq to resume after. */
static bool
apply_setup(apply *a, uint64_t *resume, bool *fatal)
{
	const sluice_apply_options *o = a->o;
	*fatal = false;
	a->conn = sluice_pg_connect(o->target, false, "the target");
	if (a->conn == NULL)
		return false;
	if (!sluice_pg_exec(a->conn, "SET synchronous_commit = off") ||
	    !sluice_pg_exec(a->conn, "SET session_replication_role = replica") ||
	    !sluice_pg_set_canonical(a->conn)) {
		*fatal = true;
		return false;
	}
	if (a->origin[0] == '\0' && !apply_default_origin(a)) {
		*fatal = true;
		return false;
	}
	const char *params[1] = {a->origin};
	PGresult *res = sluice_pg_query(a->conn, "SELECT pg_replication_origin_oid($1)", 1, params);
	if (res == NULL) {
		*fatal = true;
		return false;
	}
	bool exists = !PQgetisnull(res, 0, 0);
	PQclear(res);
	*resume = 0;
	/*
	 * Replication origins belong to the cluster, not to a database: the
	 * database that created one is marked (a database-level setting), and
	 * another database may not take over its progress silently.
	 */
	char marker[128];
	apply_origin_marker(a->origin, marker, sizeof(marker));
	const char *mp[1] = {marker};
	if (exists) {
		res = sluice_pg_query(a->conn, "SELECT coalesce(current_setting($1, true), '')", 1,
				      mp);
		bool mine = res != NULL && strcmp(PQgetvalue(res, 0, 0), "owner") == 0;
		PQclear(res);
		if (!mine) {
			sluice_log_error(
				"replication origin \"%s\" already tracks stream \"%s\" for "
				"another database of this cluster (origins are per cluster): "
				"give this database its own with --origin NAME",
				a->origin, o->stream);
			*fatal = true;
			return false;
		}
	}
	if (!exists && !o->dry_run) {
		/*
		 * The origin and its owner mark in one transaction: an apply killed
		 * between the two would leave an origin that no database owns, and
		 * every later run would refuse it.
		 */
		res = sluice_pg_query(
			a->conn,
			"SELECT format('ALTER DATABASE %I SET %I = %L', current_database(), "
			"$1::text, 'owner')",
			1, mp);
		bool created = res != NULL && sluice_pg_exec(a->conn, "BEGIN");
		PGresult *cr = created ? sluice_pg_query(a->conn,
							 "SELECT pg_replication_origin_create($1)",
							 1, params)
				       : NULL;
		created = cr != NULL && sluice_pg_exec(a->conn, PQgetvalue(res, 0, 0)) &&
			  sluice_pg_exec(a->conn, "COMMIT");
		PQclear(cr);
		PQclear(res);
		if (!created) {
			PQclear(PQexec(a->conn, "ROLLBACK"));
			*fatal = true;
			return false;
		}
		sluice_log_info("created replication origin \"%s\" for stream \"%s\"", a->origin,
				o->stream);
	}
	if (exists) {
		res = sluice_pg_query(a->conn, "SELECT pg_replication_origin_progress($1, true)", 1,
				      params);
		if (res == NULL) {
			*fatal = true;
			return false;
		}
		uint64_t lsn = 0;
		if (!PQgetisnull(res, 0, 0) && sluice_pg_lsn_parse(PQgetvalue(res, 0, 0), &lsn))
			*resume = lsn;
		PQclear(res);
	}
	if (!o->dry_run) {
		res = PQexecParams(a->conn, "SELECT pg_replication_origin_session_setup($1)", 1,
				   NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			/* The backend of a killed apply may still hold it for a moment: retry. */
			bool busy = strstr(PQresultErrorMessage(res), "already active") != NULL;
			if (busy)
				sluice_log_warn("replication origin \"%s\" is still in use: %s",
						a->origin, sluice_pg_error_line(a->conn));
			else
				sluice_log_error("could not set up replication origin \"%s\": %s",
						 a->origin, sluice_pg_error_line(a->conn));
			PQclear(res);
			*fatal = !busy;
			a->busy = busy;
			return false;
		}
		PQclear(res);
	}
	int installed = sluice_prepare_installed(a->conn);
	if (installed < 0) {
		*fatal = true;
		return false;
	}
	a->schema_installed = installed == 1;
	a->local_node[0] = '\0';
	if (a->schema_installed)
		sluice_prepare_node(a->conn, a->local_node, sizeof(a->local_node));
	if (o->strategy == SLUICE_STRATEGY_TIMESTAMP) {
		res = sluice_pg_query(a->conn, "SELECT current_setting('track_commit_timestamp')",
				      0, NULL);
		if (res == NULL || strcmp(PQgetvalue(res, 0, 0), "on") != 0) {
			sluice_log_error(
				"--strategy timestamp needs track_commit_timestamp = on on the "
				"target (ALTER SYSTEM SET track_commit_timestamp = on; then "
				"restart PostgreSQL)");
			PQclear(res);
			*fatal = true;
			return false;
		}
		PQclear(res);
		if (!a->schema_installed || a->local_node[0] == '\0') {
			sluice_log_error("--strategy timestamp needs the node prepared: run sluice "
					 "prepare --target ... --node NAME first");
			*fatal = true;
			return false;
		}
		res = sluice_pg_query(
			a->conn,
			"SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid "
			"= "
			"c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN "
			"('pg_catalog', 'information_schema', 'sluice') AND n.nspname NOT LIKE "
			"'pg_toast%' AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = "
			"c.oid "
			"AND t.tgname = 'sluice_record_delete') ORDER BY 1, 2",
			0, NULL);
		for (int i = 0; res && i < PQntuples(res); i++)
			if (sluice_filter_match(&o->filter, PQgetvalue(res, i, 0),
						PQgetvalue(res, i, 1)))
				sluice_log_warn(
					"table %s.%s has no delete tracking: a local delete "
					"there cannot win against an older remote update (run "
					"sluice prepare)",
					PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
		PQclear(res);
	}
	if (a->schema_installed && !o->dry_run && o->tombstone_horizon_s > 0) {
		char horizon[32];
		snprintf(horizon, sizeof(horizon), "%" PRId64, o->tombstone_horizon_s);
		const char *hp[1] = {horizon};
		res = sluice_pg_query(a->conn,
				      "DELETE FROM sluice.tombstones WHERE deleted_at < now() - "
				      "make_interval(secs => $1::double precision)",
				      1, hp);
		if (res && strcmp(PQcmdTuples(res), "0") != 0)
			sluice_log_info("removed %s tombstones older than the horizon",
					PQcmdTuples(res));
		PQclear(res);
	}
	/*
	 * Per-transaction statements, prepared once per connection. The origin
	 * progress is written by the commit record, which only a transaction
	 * with an xid has: pg_current_xact_id() gives one to a transaction that
	 * writes nothing (every change filtered out, or kept local), so that
	 * its progress is recorded too and it is not read again on every run.
	 */
	static const char *const control[][2] = {
		{"sl_begin", "BEGIN"},
		{"sl_commit", "COMMIT"},
		{"sl_setup",
		 "SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2::timestamptz), "
		 "pg_current_xact_id()"},
		{"sl_setup_v",
		 "SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2::timestamptz), "
		 "set_config('sluice.remote_time', $2::text, true), "
		 "set_config('sluice.remote_node', $3::text, true), pg_current_xact_id()"},
	};
	for (size_t i = 0; i < sizeof(control) / sizeof(control[0]); i++) {
		res = PQprepare(a->conn, control[i][0], control[i][1], 0, NULL);
		bool prepared = PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
		if (!prepared) {
			sluice_log_error("could not prepare \"%s\" on the target: %s",
					 control[i][1], sluice_pg_error_line(a->conn));
			*fatal = true;
			return false;
		}
	}
	if (PQenterPipelineMode(a->conn) != 1) {
		sluice_log_error("could not enter pipeline mode on the target");
		*fatal = true;
		return false;
	}
	return true;
}

/* apply_past_bound tells whether a transaction starting now lies past --until-*. */
static bool
apply_past_bound(const apply *a, uint64_t txseq, int64_t time_us, uint64_t lsn)
{
	const sluice_apply_options *o = a->o;
	if (o->until_txseq && txseq > o->until_txseq)
		return true;
	if (o->until_time_us && time_us > o->until_time_us)
		return true;
	if (o->until_lsn && lsn > o->until_lsn)
		return true;
	return false;
}

typedef enum apply_outcome {
	APPLY_DONE,    /* caught up, bound reached, or stopped */
	APPLY_RETRY,   /* lost the target: reconnect */
	APPLY_RESUME,  /* a row to insert existed: apply again from the target's progress */
	APPLY_FAILED,  /* target refused a change, or a schema mismatch */
	APPLY_REFUSED, /* the stream failed verification */
} apply_outcome;

/* apply_progress reads the origin's progress: the last transaction committed on the target. */
static bool
apply_progress(apply *a, uint64_t *resume)
{
	if (PQexitPipelineMode(a->conn) != 1) {
		sluice_log_error("could not leave pipeline mode: %s",
				 sluice_pg_error_line(a->conn));
		return false;
	}
	const char *params[1] = {a->origin};
	PGresult *res = sluice_pg_query(a->conn, "SELECT pg_replication_origin_progress($1, false)",
					1, params);
	bool ok = res != NULL;
	*resume = 0;
	if (ok && !PQgetisnull(res, 0, 0))
		ok = sluice_pg_lsn_parse(PQgetvalue(res, 0, 0), resume);
	PQclear(res);
	if (PQenterPipelineMode(a->conn) != 1)
		ok = false;
	return ok;
}

/*
 * apply_abandon ends the target transaction that failed on a row that exists
 * (and the ones queued after it, which the server skipped): the transaction
 * is applied again, with conflict handling, from the target's progress.
 */
static apply_outcome
apply_abandon(apply *a)
{
	apply_clear_pending(a); /* the failed drain read everything */
	a->retry_safe = false;
	a->error_transient = false;
	a->first_error[0] = '\0';
	a->done = false; /* a bound reached past the failure is reached again */
	/* The failed transaction block is still open on the target (unless COMMIT failed). */
	a->txn_open_on_target = PQtransactionStatus(a->conn) != PQTRANS_IDLE;
	if (!apply_rollback(a)) {
		sluice_log_error("could not roll back on the target: %s", a->first_error);
		return PQstatus(a->conn) != CONNECTION_OK || a->error_lost ? APPLY_RETRY
									   : APPLY_FAILED;
	}
	return APPLY_RESUME;
}

/* apply_describe_failure names the change a failed command belonged to. */
static void
apply_describe_failure(const apply *a, char *out, size_t size)
{
	uint64_t txseq = a->error_txseq ? a->error_txseq : a->txseq;
	const char *what = a->error_op == 'I'   ? "insert"
			   : a->error_op == 'U' ? "update"
			   : a->error_op == 'D' ? "delete"
						: NULL;
	if (what != NULL && a->error_rel < a->nrels)
		snprintf(out, size, "txseq %" PRIu64 " (%s of %s)", txseq, what,
			 a->rels[a->error_rel].label);
	else
		snprintf(out, size, "txseq %" PRIu64, txseq);
}

/*
 * apply_retry rolls back after a transient failure (deadlock, serialization
 * failure, lock timeout, cancelled statement, server shutting down) and
 * applies the same transaction again from the target's progress after a
 * capped, jittered backoff. A transaction is never skipped: one that keeps
 * failing is reported loudly every --retry-report seconds and still retried.
 */
static apply_outcome
apply_retry(apply *a)
{
	int cause = sluice_apply_classify(a->error_state);
	uint64_t failed = a->error_txseq ? a->error_txseq : a->txseq;
	char what[700];
	apply_describe_failure(a, what, sizeof(what));
	int64_t now = sluice_clock_mono_ms();
	if (failed != a->retry_txseq || a->retry_attempts == 0) {
		a->retry_txseq = failed;
		a->retry_attempts = 0;
		a->retry_since_ms = now;
		a->retry_report_ms = now + a->o->retry_report_s * 1000;
	}
	a->retry_attempts++;
	int delay = sluice_backoff_ms(a->retry_attempts, 20, 5000);
	sluice_log_warn("%s failed on the target with SQLSTATE %s (%s), transient: rolled back, "
			"applying it again in %d ms (attempt %d): %s",
			what, a->error_state, sluice_retry_cause_name((sluice_retry_cause)cause),
			delay, a->retry_attempts, a->first_error);
	if (now >= a->retry_report_ms) {
		sluice_log_error("txseq %" PRIu64 " has failed transiently for %" PRId64
				 " s (%d attempts, last SQLSTATE %s): still retrying; look for "
				 "what holds its rows on the target",
				 failed, (now - a->retry_since_ms) / 1000, a->retry_attempts,
				 a->error_state);
		a->retry_report_ms = now + a->o->retry_report_s * 1000;
	}
	apply_outcome out = apply_abandon(a);
	if (out != APPLY_RESUME)
		return out;
	/* A dry run starts over from the target's progress: forget what it counted. */
	if (a->o->dry_run)
		apply_restore_committed(a);
	a->stats->retries[cause]++;
	a->resume_unique = false;
	sluice_sleep_ms(delay, a->o->stop);
	return APPLY_RESUME;
}

/*
 * apply_failed decides what follows a failed statement or a lost target:
 * reconnect, apply again from the target's progress (a row to insert
 * existed), or stop.
 */
static apply_outcome
apply_failed(apply *a)
{
	bool lost = PQstatus(a->conn) != CONNECTION_OK || a->error_lost;
	if (a->retry_safe && !lost) {
		uint64_t failed = a->error_txseq;
		sluice_log_info("txseq %" PRIu64 ": a row it inserts exists on the target; "
				"applying it again with conflict handling",
				failed);
		apply_outcome out = apply_abandon(a);
		if (out == APPLY_RESUME) {
			a->safe_through = failed;
			a->resume_unique = true;
		}
		return out;
	}
	if (a->error_transient && !lost)
		return apply_retry(a);
	char what[700];
	apply_describe_failure(a, what, sizeof(what));
	if (lost)
		sluice_log_warn("lost the target while applying %s: %s", what,
				a->first_error[0] ? a->first_error : sluice_pg_error_line(a->conn));
	else if (a->first_error[0])
		sluice_log_error("could not apply %s on the target: %s%s%s%s", what, a->first_error,
				 a->error_state[0] ? " (SQLSTATE " : "", a->error_state,
				 a->error_state[0] ? ")" : "");
	a->first_error[0] = '\0';
	if (lost)
		a->txn_open_on_target = false; /* gone with the connection: nothing to roll back */
	if (a->in_txn)
		apply_rollback(a);
	return lost ? APPLY_RETRY : APPLY_FAILED;
}

static apply_outcome
apply_stream(apply *a, sluice_store *store, const sluice_trust *trust, uint64_t resume)
{
	sluice_reader *reader = NULL;
	apply_outcome out = APPLY_FAILED;
	if (!sluice_reader_open(store, a->o->stream, trust, resume + 1, &reader))
		return APPLY_FAILED;
	a->expect_txseq = resume + 1;
	a->last_log_ms = sluice_clock_mono_ms();
	for (;;) {
		if (*a->o->stop) {
			if (a->in_txn)
				apply_rollback(a);
			if (!apply_flush_results(a))
				apply_failed(a);
			sluice_log_info("stopping on signal");
			out = APPLY_DONE;
			break;
		}
		const sluice_record *rec = NULL;
		sluice_reader_status st = sluice_reader_next(reader, &rec);
		if (st == SLUICE_READER_ERROR) {
			/* Nothing of the bad frame was applied: its transaction is rolled back;
			 * what was sent before it is read back, so the exit reports it. */
			if (a->in_txn)
				apply_rollback(a);
			else if (!apply_flush_results(a))
				apply_failed(a);
			a->stats->refused = true;
			sluice_log_error("refusing stream \"%s\": %s", a->o->stream,
					 sluice_reader_error(reader));
			out = APPLY_REFUSED;
			break;
		}
		if (st == SLUICE_READER_REWIND) {
			if (a->in_txn)
				apply_rollback(a);
			continue;
		}
		if (st == SLUICE_READER_WAIT) {
			if (!a->in_txn && !apply_flush_results(a)) {
				out = apply_failed(a);
				break;
			}
			if (!a->o->follow) {
				if (a->in_txn)
					apply_rollback(a); /* an unfinished tail is not applied */
				out = APPLY_DONE;
				break;
			}
			sluice_reader_wait(reader, 1000);
			if (sluice_clock_mono_ms() - a->last_log_ms >= 10000) {
				apply_log_counters(a, "apply");
				a->last_log_ms = sluice_clock_mono_ms();
			}
			continue;
		}
		bool ok = true;
		switch (rec->body_case) {
		case SLUICE__V1__RECORD__BODY_RELATION:
			for (size_t i = 0; i < a->nrels; i++)
				if (a->rels[i].id == rec->relation->id)
					apply_relation(a, rec->relation);
			break;
		case SLUICE__V1__RECORD__BODY_BEGIN: {
			const Sluice__V1__Begin *b = rec->begin;
			if (apply_past_bound(a, b->txseq, b->commit_time_us,
					     b->has_source_lsn ? b->source_lsn : 0)) {
				a->done = true;
				break;
			}
			ok = apply_begin(a, b->txseq, b->commit_time_us, b->origin_node);
			break;
		}
		case SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN: {
			const Sluice__V1__SnapshotBegin *b = rec->snapshot_begin;
			if (apply_past_bound(a, b->txseq, b->time_us,
					     b->has_consistent_lsn ? b->consistent_lsn : 0)) {
				a->done = true;
				break;
			}
			ok = apply_begin(a, b->txseq, b->time_us, b->origin_node);
			break;
		}
		case SLUICE__V1__RECORD__BODY_INSERT:
		case SLUICE__V1__RECORD__BODY_UPDATE:
		case SLUICE__V1__RECORD__BODY_DELETE:
		case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
			if (a->in_txn)
				ok = apply_change(a, reader, rec);
			break;
		case SLUICE__V1__RECORD__BODY_TRUNCATE:
			if (a->in_txn)
				ok = apply_truncate(a, reader, rec->truncate);
			break;
		case SLUICE__V1__RECORD__BODY_COMMIT:
		case SLUICE__V1__RECORD__BODY_SNAPSHOT_END:
			if (a->in_txn)
				ok = apply_commit(a);
			break;
		default:
			break;
		}
		if (!ok) {
			out = apply_failed(a);
			break;
		}
		if (a->done) {
			out = apply_flush_results(a) ? APPLY_DONE : apply_failed(a);
			break;
		}
	}
	sluice_reader_close(reader);
	return out;
}

bool
sluice_apply_run(sluice_store *store, const sluice_trust *trust, const sluice_apply_options *o,
		 sluice_apply_stats *stats)
{
	apply a;
	memset(&a, 0, sizeof(a));
	memset(stats, 0, sizeof(*stats));
	a.o = o;
	a.stats = stats;
	if (o->origin != NULL)
		snprintf(a.origin, sizeof(a.origin), "%s", o->origin); /* else named at set-up */
	bool ok = false;
	int attempt = 0;
	for (;;) {
		uint64_t resume = 0;
		bool fatal = false;
		if (apply_setup(&a, &resume, &fatal)) {
			if (attempt == 0)
				stats->resumed_after = resume;
			sluice_log_info("applying stream \"%s\" from txseq %" PRIu64
					" (%s strategy%s)",
					o->stream, resume + 1,
					o->strategy == SLUICE_STRATEGY_TIMESTAMP ? "timestamp"
					: o->strategy == SLUICE_STRATEGY_APPEND  ? "append"
										 : "replace",
					o->dry_run ? ", dry run: nothing is committed" : "");
			attempt = 0;
			apply_outcome out = apply_stream(&a, store, trust, resume);
			while (out == APPLY_RESUME) {
				if (!apply_progress(&a, &resume)) {
					out = PQstatus(a.conn) != CONNECTION_OK ? APPLY_RETRY
										: APPLY_FAILED;
					break;
				}
				if (a.resume_unique && resume >= a.safe_through) {
					/* cannot happen: the failed transaction would be committed
					 */
					sluice_log_error("txseq %" PRIu64
							 " failed but the target's progress "
							 "is %" PRIu64,
							 a.safe_through, resume);
					out = APPLY_FAILED;
					break;
				}
				out = apply_stream(&a, store, trust, resume);
			}
			if (out == APPLY_DONE) {
				if (a.dry_open)
					apply_rollback(&a);
				ok = true;
				break;
			}
			if (out != APPLY_RETRY)
				break;
		} else if (fatal || (a.conn == NULL && attempt == 0) || (a.busy && attempt >= 6)) {
			if (a.busy)
				sluice_log_error(
					"replication origin \"%s\" stayed in use: is another apply "
					"running for stream \"%s\"?",
					a.origin, o->stream);
			break;
		}
		a.busy = false;
		/* Lost the target: start over from its progress. */
		apply_restore_committed(&a);
		PQfinish(a.conn);
		a.conn = NULL;
		a.in_txn = false;
		a.txn_open_on_target = false;
		a.last_origin_node[0] = '\0';
		apply_clear_pending(&a);
		for (size_t i = 0; i < a.nstmts; i++) {
			free(a.stmts[i].key);
			free(a.stmts[i].name);
		}
		a.nstmts = 0;
		for (size_t i = 0; i < a.nrels; i++)
			a.rels[i].checked = false;
		attempt++;
		int cause = sluice_apply_classify(a.error_state);
		stats->retries[cause >= 0 ? cause : SLUICE_RETRY_CONNECTION]++;
		a.error_state[0] = '\0';
		a.error_lost = false;
		int delay = sluice_backoff_ms(attempt, 500, 16000);
		sluice_log_warn("lost the target; reconnecting in %d ms (attempt %d)", delay,
				attempt);
		sluice_sleep_ms(delay, o->stop);
		if (*o->stop) {
			ok = true;
			break;
		}
	}
	apply_log_counters(&a, o->dry_run ? "dry run (nothing committed)" : "apply");
	apply_clear_pending(&a);
	free(a.pending);
	for (size_t i = 0; i < a.nstmts; i++) {
		free(a.stmts[i].key);
		free(a.stmts[i].name);
	}
	free(a.stmts);
	for (size_t i = 0; i < a.nrels; i++)
		apply_free_rel(&a.rels[i]);
	free(a.rels);
	sluice_buf_free(&a.conflict_rows);
	for (int i = 0; i < a.batch_ncols; i++)
		sluice_buf_free(&a.batch_cols[i]);
	free(a.batch_cols);
	free(a.batch_hashes);
	sluice_buf_free(&a.batch_first);
	free(a.batch_first_null);
	free(a.batch_first_key);
	for (uint32_t i = 0; i < a.nnodes; i++)
		free(a.nodes[i]);
	free(a.nodes);
	PQfinish(a.conn);
	return ok;
}
