/*
 * The PostgreSQL target (target.h): SQL through libpq's pipeline mode,
 * batched inserts, the stream's progress in a replication origin committed
 * with each transaction, the conflict strategies through locked probes and
 * sluice's schema (tombstones, conflict log) on a prepared node.
 */
#include "pgtarget.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "json.h"
#include "log.h"
#include "netchange.h"
#include "pgconn.h"
#include "pgprepare.h"
#include "records.h"
#include "target.h"

/* Statement results are read back at least this often inside one transaction. */
#define PGT_MAX_PENDING 1000

/* What a queued pipeline command was, to interpret its result. */
typedef enum pgt_kind {
	PGT_K_CONTROL,        /* BEGIN, COMMIT, set-up: must succeed */
	PGT_K_PREPARE,        /* PQsendPrepare */
	PGT_K_INSERT_UPSERT,  /* RETURNING (xmax = 0): inserted, or updated an existing row */
	PGT_K_UPDATE_UPSERT,  /* update with a full row: inserted when missing */
	PGT_K_UPDATE_PLAIN,   /* UPDATE: 0 rows when missing */
	PGT_K_DELETE,         /* DELETE: 0 rows when missing */
	PGT_K_INSERT_NOTHING, /* INSERT ... DO NOTHING: 0 rows when present */
	PGT_K_APPEND_UPDATE,  /* append: insert a missing row, never overwrite */
	PGT_K_PROBE_ROW,      /* timestamp: version of the target row */
	PGT_K_PROBE_TOMB,     /* timestamp: version of a tombstone */
	PGT_K_TS_WRITE,       /* timestamp: the write it decided on */
	PGT_K_BATCH_INSERT,   /* many inserts in one statement: count written, keys that existed */
	PGT_K_APPEND_PROBE_UPD, /* append: partial update, does the row exist? */
	PGT_K_APPEND_PROBE_DEL, /* append: delete, does the row exist? */
	PGT_K_BATCH_PLAIN,      /* many inserts, no conflict handling: fails if a row exists */
	PGT_K_COMMIT,           /* COMMIT: its transaction is applied once this succeeds */
	PGT_K_IDENT_MOVE,       /* delete before re-inserting a row whose key or ALWAYS identity
				     changed */
	PGT_K_MOVED_UPSERT,     /* the upsert after it: missing when nothing was deleted */
	PGT_K_NET_WRITE, /* grouped: net changes of many rows (the server checks the count) */
} pgt_kind;

typedef struct pgt_pending {
	pgt_kind kind;
	uint32_t rel_index;
	char *key;      /* owned: JSON array of the key values, for the conflict log */
	PGresult *res;  /* probes keep their result */
	uint32_t rows;  /* rows sent in a batch */
	uint64_t txseq; /* transaction it belongs to (several may be in flight) */
	int64_t commit_us;
	uint32_t node; /* index into apply.nodes */
	char op;       /* 'I', 'U', 'D' of the change it belongs to, 0 for none */
	/* the COMMIT of a group: its first transaction, and the inserts, updates and deletes
	   folded into its net changes (counted when it commits) */
	uint64_t first_txseq;
	uint64_t counts[3];
} pgt_pending;

typedef struct pgt_rel {
	bool defined;              /* the engine described it */
	uint32_t generation;       /* the engine's: names this definition's statements */
	const char *schema, *name; /* borrowed from the engine's relation (it calls
				      pgt_relation again when it redefines one) */
	char *qname;               /* owned: "schema"."name" */
	const char *label;         /* borrowed likewise: schema.name, for messages and tombstones */
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
	bool has_unique;    /* the target has a unique index on exactly the key columns */
	bool tracked;       /* the target table has sluice's delete tracking */
	int ts_col;         /* --timestamp-column index, -1 */
	size_t net_rows;    /* net changes held for it (grouped apply) */
} pgt_rel;

typedef struct pgt_stmt {
	char *key;  /* owned */
	char *name; /* owned: returned to callers, so it stays put when stmts grows */
} pgt_stmt;

typedef struct pgt {
	sluice_target base; /* first: the engine sees this */
	sluice_apply_ctx *ctx;
	const sluice_apply_options *o;
	sluice_apply_stats *stats; /* the engine's: results are counted into it */
	PGconn *conn;              /* owned */
	char origin[600];
	char progress_name[640];
	bool schema_installed;
	char local_node[256];

	pgt_rel *rels; /* owned, by the engine's relation index */
	size_t nrels;
	pgt_stmt *stmts; /* owned */
	size_t nstmts;

	pgt_pending *pending; /* owned queue of the current pipeline batch */
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

	/* the transaction being applied */
	bool in_txn;
	bool txn_open_on_target;
	uint64_t txseq;
	int64_t commit_us;
	char commit_ts[64]; /* as timestamptz text */
	char node[256];
	uint32_t cur_node; /* the engine's interned node index */
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
	size_t committed_rows;    /* as of the last COMMIT result: what a rollback returns to */
	bool busy;                /* the origin was still held by another session */

	/*
	 * Replace inserts batches of new rows with a plain INSERT (no ON CONFLICT:
	 * about half the server time). When a row exists after all, the
	 * transaction fails (unique violation), is rolled back with everything
	 * after it, and is applied again with conflict handling (EXISTS).
	 */
	uint64_t safe_through; /* transactions up to here use ON CONFLICT */
	bool retry_safe;       /* the pipeline failed on a row that exists */
	bool moved;            /* the last PGT_K_IDENT_MOVE deleted the row it re-inserts */

	/*
	 * Grouped apply (target.h): the open transaction holds source
	 * transactions group_first..txseq; their changes of tables that allow
	 * it are folded into net (netchange.h) and written as multi-row
	 * statements whose row counts must be what the source had.
	 */
	bool grouped;
	uint64_t group_first;
	uint64_t group_counts[3]; /* inserts, updates, deletes folded into net */
	sluice_net net;
	bool send_failed; /* a statement could not be queued outside an operation */
} pgt;

/*
 * pgt_classify tells whether a SQLSTATE is transient: which cause, or -1 for
 * a permanent error (schema mismatch, constraint, type error, ...) that stops
 * apply.
 */
static int
pgt_classify(const char *sqlstate)
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

/* pgt_format_ts writes µs since the epoch as a timestamptz literal. */
static void
pgt_format_ts(int64_t us, char *out, size_t size)
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
pgt_push(pgt *a, pgt_kind kind, uint32_t rel_index, char *key)
{
	if (a->cur_op != 0)
		rel_index = a->cur_rel; /* prepares and tombstones of a change too */
	if (a->npending == a->cap_pending) {
		a->cap_pending = a->cap_pending ? 2 * a->cap_pending : 256;
		pgt_pending *p = realloc(a->pending, a->cap_pending * sizeof(*p));
		if (p == NULL)
			abort();
		a->pending = p;
	}
	a->pending[a->npending++] = (pgt_pending){.kind = kind,
						  .rel_index = rel_index,
						  .key = key,
						  .txseq = a->txseq,
						  .commit_us = a->commit_us,
						  .node = a->cur_node,
						  .op = a->cur_op};
}

/*
 * pgt_send_prepared_bin queues a prepared statement whose parameters may be
 * binary: lengths and formats as PQsendQueryPrepared takes them (NULL: text).
 */
static bool
pgt_send_prepared_bin(pgt *a, const char *stmt, int n, const char *const *values,
		      const int *lengths, const int *formats, pgt_kind kind, uint32_t rel_index,
		      char *key)
{
	if (!PQsendQueryPrepared(a->conn, stmt, n, values, lengths, formats, 0)) {
		sluice_log_error("could not send a statement to the target: %s",
				 sluice_pg_error_line(a->conn));
		free(key);
		return false;
	}
	pgt_push(a, kind, rel_index, key);
	return true;
}

/* pgt_send_prepared queues a prepared statement with text parameters. */
static bool
pgt_send_prepared(pgt *a, const char *stmt, int n, const char *const *values, pgt_kind kind,
		  uint32_t rel_index, char *key)
{
	return pgt_send_prepared_bin(a, stmt, n, values, NULL, NULL, kind, rel_index, key);
}

static bool
pgt_send_sql(pgt *a, const char *sql, int n, const char *const *values, pgt_kind kind)
{
	if (!PQsendQueryParams(a->conn, sql, n, NULL, values, NULL, NULL, 0)) {
		sluice_log_error("could not send \"%.60s\" to the target: %s", sql,
				 sluice_pg_error_line(a->conn));
		return false;
	}
	pgt_push(a, kind, 0, NULL);
	return true;
}

static void pgt_count_result(pgt *a, pgt_pending *p, PGresult *res);
static bool pgt_net_flush(pgt *a);

/* pgt_restore_rows forgets the conflict rows of transactions that did not commit. */
static void
pgt_restore_rows(pgt *a)
{
	if (a->conflict_rows.len > a->committed_rows)
		a->conflict_rows.len = a->committed_rows;
}

/*
 * pgt_drain sends a sync and reads every queued result. Results of probes
 * stay in their entries (keep_probes) for the caller. Returns false when a
 * statement failed (the error is in a->first_error) or the connection broke.
 */
static bool
pgt_drain(pgt *a, bool keep_probes)
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
		pgt_pending *p = &a->pending[i];
		if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) {
			if (ok && st == PGRES_FATAL_ERROR) {
				const char *msg = PQresultErrorMessage(res);
				snprintf(a->first_error, sizeof(a->first_error), "%s", msg);
				for (char *c = a->first_error; *c; c++)
					if (*c == '\n')
						*c = ' ';
				/* a grouped statement's own words on rows it did not find */
				char *own = p->kind == PGT_K_NET_WRITE
						    ? strstr(a->first_error, "\"sluice: ")
						    : NULL;
				if (own != NULL) {
					memmove(a->first_error, own + 9, strlen(own + 9) + 1);
					a->first_error[strcspn(a->first_error, "\"")] = '\0';
				}
				a->error_index = (int)i;
				a->error_txseq = p->txseq;
				a->error_op = p->op;
				a->error_rel = p->rel_index;
				const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
				snprintf(a->error_state, sizeof(a->error_state), "%s",
					 state ? state : "");
				a->error_transient = pgt_classify(state) >= 0;
				a->retry_safe = p->kind == PGT_K_BATCH_PLAIN && state != NULL &&
						strcmp(state, "23505") == 0;
			}
			ok = false;
			PQclear(res);
		} else if (keep_probes &&
			   (p->kind == PGT_K_PROBE_ROW || p->kind == PGT_K_PROBE_TOMB)) {
			p->res = res;
		} else {
			if (ok && p->kind == PGT_K_COMMIT) {
				a->stats->inserts += p->counts[0];
				a->stats->updates += p->counts[1];
				a->stats->deletes += p->counts[2];
				if (p->first_txseq != 0)
					sluice_apply_group_committed(a->ctx, p->first_txseq,
								     p->txseq);
				else
					sluice_apply_committed(a->ctx, p->txseq);
				a->committed_rows = a->conflict_rows.len;
			} else if (ok)
				pgt_count_result(a, p, res);
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
pgt_clear_pending(pgt *a)
{
	for (size_t i = 0; i < a->npending; i++) {
		free(a->pending[i].key);
		PQclear(a->pending[i].res);
	}
	a->npending = 0;
}

/* ---- conflicts --------------------------------------------------------- */

/* pgt_conflict counts a case and queues its log row. */
static void
pgt_conflict_at(pgt *a, uint64_t txseq, int64_t commit_us, const char *node, sluice_conflict c,
		const pgt_rel *rel, const char *key, const char *local_time, const char *local_node,
		const char *resolution)
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
			  sluice_conflict_name(c));
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
	pgt_format_ts(commit_us, ts, sizeof(ts));
	sluice_buf_printf(b, ",\"remote_time\":\"%s\",\"remote_node\":", ts);
	sluice_json_append_string(b, node, strlen(node));
	sluice_buf_printf(b, ",\"resolution\":\"%s\"}\n", resolution);
}

/* pgt_conflict records a conflict of the transaction being applied now. */
static void
pgt_conflict(pgt *a, sluice_conflict c, const pgt_rel *rel, const char *key, const char *local_time,
	     const char *local_node, const char *resolution)
{
	pgt_conflict_at(a, a->txseq, a->commit_us, a->node, c, rel, key, local_time, local_node,
			resolution);
}

/* pgt_send_conflict_log queues the INSERT of every conflict row collected so far. */
static bool
pgt_send_conflict_log(pgt *a)
{
	if (a->conflict_rows.len == 0)
		return true;
	sluice_buf_append_byte(&a->conflict_rows, '\0');
	const char *params[1] = {(const char *)a->conflict_rows.data};
	bool ok = pgt_send_sql(
		a,
		"INSERT INTO sluice.conflicts (stream, txseq, relation, key, kind, local_time, "
		"local_node, remote_time, remote_node, resolution) "
		"SELECT r.stream, r.txseq, r.relation, r.key, r.kind, r.local_time, r.local_node, "
		"r.remote_time, r.remote_node, r.resolution "
		"FROM regexp_split_to_table(rtrim($1, E'\\n'), E'\\n') AS l, "
		"json_populate_record(NULL::sluice.conflicts, l::json) AS r",
		1, params, PGT_K_CONTROL);
	sluice_buf_reset(&a->conflict_rows);
	a->committed_rows = 0;
	return ok;
}

static void
pgt_count_result(pgt *a, pgt_pending *p, PGresult *res)
{
	const pgt_rel *rel = p->kind == PGT_K_CONTROL || p->kind == PGT_K_PREPARE
				     ? NULL
				     : &a->rels[p->rel_index];
	long tuples = strtol(PQcmdTuples(res), NULL, 10);
	bool first_true = PQntuples(res) > 0 && PQgetvalue(res, 0, 0)[0] == 't';
	switch (p->kind) {
	case PGT_K_INSERT_UPSERT:
		if (PQntuples(res) == 0 || first_true)
			a->stats->inserts++;
		else {
			a->stats->updates++;
			pgt_conflict_at(
				a, p->txseq, p->commit_us, sluice_apply_node(a->ctx, p->node),
				SLUICE_CONFLICT_INSERT_EXISTS, rel, p->key, NULL, NULL, "remote");
		}
		break;
	case PGT_K_IDENT_MOVE:
		a->moved = tuples > 0;
		break;
	case PGT_K_MOVED_UPSERT:
		a->stats->updates++;
		if (!a->moved)
			pgt_conflict_at(a, p->txseq, p->commit_us,
					sluice_apply_node(a->ctx, p->node),
					SLUICE_CONFLICT_UPDATE_MISSING, rel, p->key, NULL, NULL,
					"inserted");
		a->moved = false;
		break;
	case PGT_K_UPDATE_UPSERT:
		a->stats->updates++;
		if (first_true && !a->moved)
			pgt_conflict_at(a, p->txseq, p->commit_us,
					sluice_apply_node(a->ctx, p->node),
					SLUICE_CONFLICT_UPDATE_MISSING, rel, p->key, NULL, NULL,
					"inserted");
		a->moved = false;
		break;
	case PGT_K_UPDATE_PLAIN:
		if (tuples > 0)
			a->stats->updates++;
		else
			pgt_conflict_at(
				a, p->txseq, p->commit_us, sluice_apply_node(a->ctx, p->node),
				SLUICE_CONFLICT_UPDATE_MISSING, rel, p->key, NULL, NULL, "skipped");
		break;
	case PGT_K_DELETE:
		if (tuples > 0)
			a->stats->deletes++;
		else
			pgt_conflict_at(
				a, p->txseq, p->commit_us, sluice_apply_node(a->ctx, p->node),
				SLUICE_CONFLICT_DELETE_MISSING, rel, p->key, NULL, NULL, "skipped");
		break;
	case PGT_K_INSERT_NOTHING:
		if (PQntuples(res) > 0)
			a->stats->inserts++;
		else
			pgt_conflict_at(a, p->txseq, p->commit_us,
					sluice_apply_node(a->ctx, p->node),
					SLUICE_CONFLICT_INSERT_EXISTS, rel, p->key, NULL, NULL,
					"kept_local");
		break;
	case PGT_K_BATCH_PLAIN:
		a->stats->inserts += (uint64_t)tuples;
		break;
	case PGT_K_BATCH_INSERT: {
		/* A row with the count of rows written; the key of each row that existed. */
		uint32_t written = 0, existed = 0;
		for (int i = 0; i < PQntuples(res); i++) {
			if (PQgetisnull(res, i, 0)) {
				written = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
				continue;
			}
			existed++;
			a->stats->updates++;
			pgt_conflict_at(a, p->txseq, p->commit_us,
					sluice_apply_node(a->ctx, p->node),
					SLUICE_CONFLICT_INSERT_EXISTS, rel, PQgetvalue(res, i, 0),
					NULL, NULL, "remote");
		}
		a->stats->inserts += written - existed;
		/* DO NOTHING writes no row for a key that exists. */
		for (uint32_t i = written; i < p->rows; i++)
			pgt_conflict_at(
				a, p->txseq, p->commit_us, sluice_apply_node(a->ctx, p->node),
				SLUICE_CONFLICT_INSERT_EXISTS, rel, NULL, NULL, NULL, "kept_local");
		break;
	}
	case PGT_K_APPEND_PROBE_UPD:
		if (first_true)
			a->stats->skipped++;
		else
			pgt_conflict_at(
				a, p->txseq, p->commit_us, sluice_apply_node(a->ctx, p->node),
				SLUICE_CONFLICT_UPDATE_MISSING, rel, p->key, NULL, NULL, "skipped");
		break;
	case PGT_K_APPEND_PROBE_DEL:
		if (first_true)
			a->stats->skipped++;
		else
			pgt_conflict_at(
				a, p->txseq, p->commit_us, sluice_apply_node(a->ctx, p->node),
				SLUICE_CONFLICT_DELETE_MISSING, rel, p->key, NULL, NULL, "skipped");
		break;
	case PGT_K_APPEND_UPDATE:
		if (PQntuples(res) > 0) {
			a->stats->inserts++;
			pgt_conflict_at(a, p->txseq, p->commit_us,
					sluice_apply_node(a->ctx, p->node),
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
pgt_free_rel(pgt_rel *r)
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
	free(r->qname);
	free(r->tomb_rel);
}

static char *
pgt_strdup(const char *s)
{
	char *d = strdup(s);
	if (d == NULL)
		abort();
	return d;
}

/* pgt_relation takes the stream's (new) description of relation ri. */
static void
pgt_relation(sluice_target *t, uint32_t ri, const Sluice__V1__Relation *src)
{
	pgt *a = (pgt *)t;
	if (ri >= a->nrels) {
		pgt_rel *p = realloc(a->rels, (ri + 1) * sizeof(*p));
		if (p == NULL)
			abort();
		memset(p + a->nrels, 0, (ri + 1 - a->nrels) * sizeof(*p));
		a->rels = p;
		a->nrels = ri + 1;
	}
	/* Net changes held are written with the definitions they were taken with. */
	if (ri < a->nrels && a->rels[ri].net_rows > 0 && !pgt_net_flush(a))
		a->send_failed = true;
	pgt_rel *r = &a->rels[ri];
	if (r->defined)
		pgt_free_rel(r);
	memset(r, 0, sizeof(*r));
	const sluice_apply_rel *er = sluice_apply_rel_at(a->ctx, ri);
	r->defined = true;
	r->generation = er->generation;
	r->schema = er->space;
	r->name = er->name;
	char *qs = PQescapeIdentifier(a->conn, src->schema, strlen(src->schema));
	char *qn = PQescapeIdentifier(a->conn, src->name, strlen(src->name));
	size_t len = strlen(qs) + strlen(qn) + 2;
	r->qname = malloc(len);
	if (r->qname == NULL)
		abort();
	snprintf(r->qname, len, "%s.%s", qs, qn);
	r->label = er->label;
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
			pgt_strdup(src->columns[i]->type_name ? src->columns[i]->type_name : "");
		r->cols[i] = pgt_strdup(src->columns[i]->name);
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
	r->ts_col = -1;
	for (int i = 0; er->ts_column && i < r->ncols; i++)
		if (strcmp(r->cols[i], er->ts_column) == 0)
			r->ts_col = i;
}

/*
 * pgt_check_equality finds the columns of a table identified by all its
 * columns whose type has no equality (json, point, xml, box, ... and arrays,
 * domains and composites of them): those are matched by their text form,
 * which is what the stream's old row image holds. A type has equality when
 * it, or what it is binary-coercible to, has a default btree or hash
 * operator class (binary-coercible only implicitly: xml is explicitly
 * binary-coercible to text, but xml = xml does not exist); arrays, domains
 * and composites have it when every type inside them does.
 */
static bool
pgt_check_equality(pgt *a, pgt_rel *r)
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
 * pgt_check_rel compares a relation of the stream with the target table
 * before anything is written to it: every stream column must exist with the
 * same type, and target-only columns must be fillable by default.
 */
static bool
pgt_check_rel(pgt *a, pgt_rel *r, const Sluice__V1__Relation *src)
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
		r->tomb_rel = pgt_strdup(PQgetvalue(res, 0, 5));
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
	if (r->full_identity && !pgt_check_equality(a, r))
		return false;
	return true;
}

/* pgt_stmt_find returns the prepared statement named by key, or NULL. */
static const char *
pgt_stmt_find(const pgt *a, const char *key)
{
	for (size_t i = 0; i < a->nstmts; i++)
		if (strcmp(a->stmts[i].key, key) == 0)
			return a->stmts[i].name;
	return NULL;
}

/*
 * pgt_stmt_get returns the prepared statement for key, preparing sql if it
 * is new. Callers on the per-row path check pgt_stmt_find first, so that
 * the SQL text is only built once per statement.
 */
static const char *
pgt_stmt_get(pgt *a, const char *key, const char *sql, int nparams, bool *ok)
{
	const char *found = pgt_stmt_find(a, key);
	if (found != NULL)
		return found;
	pgt_stmt *p = realloc(a->stmts, (a->nstmts + 1) * sizeof(*p));
	if (p == NULL)
		abort();
	a->stmts = p;
	pgt_stmt *s = &a->stmts[a->nstmts];
	char name[24];
	snprintf(name, sizeof(name), "sl%zu", a->nstmts);
	s->key = pgt_strdup(key);
	s->name = pgt_strdup(name);
	if (!PQsendPrepare(a->conn, s->name, sql, nparams, NULL)) {
		sluice_log_error("could not prepare a statement on the target: %s",
				 sluice_pg_error_line(a->conn));
		free(s->key);
		free(s->name);
		*ok = false;
		return NULL;
	}
	pgt_push(a, PGT_K_PREPARE, 0, NULL);
	a->nstmts++;
	return s->name;
}

/* pgt_stmt_prepare terminates sql and prepares it under key. */
static const char *
pgt_stmt_prepare(pgt *a, const char *key, sluice_buf *sql, int nparams, bool *ok)
{
	sluice_buf_append_byte(sql, '\0');
	return pgt_stmt_get(a, key, (const char *)sql->data, nparams, ok);
}

/* A row image with the values to send. */
typedef struct pgt_row {
	const char **v; /* value per column, NULL for SQL NULL */
	bool *present;  /* false for an unchanged TOAST value */
	bool complete;  /* every column known */
} pgt_row;

static void
pgt_row_from(const pgt_rel *r, const Sluice__V1__Row *row, pgt_row *out, sluice_buf *text)
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

/* pgt_key_json renders the key values of row as a JSON array of strings. */
static char *
pgt_key_json(const pgt_rel *r, const pgt_row *row)
{
	return sluice_net_key_json(r->ncols, r->key, row->v);
}

/*
 * pgt_param appends parameter $n for column i with the column's type, so
 * that the server reads the value with that type's input function (an
 * untyped composite or domain-over-composite parameter cannot be read).
 */
static void
pgt_param(sluice_buf *sql, const pgt_rel *r, int i, int n)
{
	if (r->types[i][0])
		sluice_buf_printf(sql, "$%d::%s", n, r->types[i]);
	else
		sluice_buf_printf(sql, "$%d", n);
}

/* pgt_settable tells whether an UPDATE may write column i (present, not ALWAYS identity). */
static bool
pgt_settable(const pgt_rel *r, const bool *present, int i)
{
	return present[i] && !r->ident_always[i];
}

/*
 * pgt_where appends the key condition with parameters from *next on. A
 * table identified by all its columns and without a unique key can hold equal
 * rows: the condition then picks one of them by ctid, so that deleting or
 * updating one of two equal rows changes one row on the target too.
 */
static void
pgt_where(sluice_buf *sql, const pgt_rel *r, const char *alias, int *next)
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
			pgt_param(sql, r, i, *next);
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
 * pgt_existed_sql appends whether the row an upsert wrote existed before
 * (it was updated, not inserted). xmax tells it for a table, but a system
 * column cannot be returned from a partitioned table: there, look the key
 * up in the statement's snapshot, which does not see the statement's own
 * writes.
 */
static void
pgt_existed_sql(sluice_buf *sql, const pgt_rel *r)
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

/* pgt_insert_sql builds INSERT of the present columns; tail is the conflict clause. */
static void
pgt_insert_sql(sluice_buf *sql, const pgt_rel *r, const bool *present, const char *mode)
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
				pgt_param(sql, r, i, k++);
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
			if (pgt_settable(r, present, i) && !r->key[i])
				sluice_buf_printf(sql, "%s%s = EXCLUDED.%s",
						  set++ ? ", " : " DO UPDATE SET ", r->qcols[i],
						  r->qcols[i]);
		if (set == 0)
			sluice_buf_append_str(sql, " DO NOTHING");
		sluice_buf_append_str(sql, " RETURNING NOT ");
		pgt_existed_sql(sql, r);
	} else if (strcmp(mode, "nothing") == 0) {
		sluice_buf_append_str(sql, " ON CONFLICT DO NOTHING RETURNING true");
	} else {
		sluice_buf_append_str(sql, " RETURNING true");
	}
}

/* pgt_colset_key names a statement: relation generation, operation, column set. */
static void
pgt_colset_key(char *out, size_t size, const pgt_rel *r, const char *op, const bool *present)
{
	int n = snprintf(out, size, "%" PRIu32 ":%s:", r->generation, op);
	for (int i = 0; i < r->ncols && (size_t)n + 2 < size; i++)
		out[n++] = present[i] ? '1' : '0';
	out[n] = '\0';
}

/* ---- applying changes ---------------------------------------------------- */

/* Parameters for one statement: values in order, owned text in a buffer. */
typedef struct pgt_params {
	const char **v;
	int n;
} pgt_params;

static void
pgt_params_add(pgt_params *p, const char *v)
{
	p->v[p->n++] = v;
}

/* pgt_params_present adds the values of row's present columns; returns how many. */
static int
pgt_params_present(pgt_params *p, const pgt_rel *r, const pgt_row *row)
{
	int n = 0;
	for (int i = 0; i < r->ncols; i++)
		if (row->present[i]) {
			pgt_params_add(p, row->v[i]);
			n++;
		}
	return n;
}

/* pgt_params_set adds the values of the columns an UPDATE of row writes. */
static void
pgt_params_set(pgt_params *p, const pgt_rel *r, const pgt_row *row)
{
	for (int i = 0; i < r->ncols; i++)
		if (pgt_settable(r, row->present, i))
			pgt_params_add(p, row->v[i]);
}

/* pgt_params_key adds the values of row's key columns. */
static void
pgt_params_key(pgt_params *p, const pgt_rel *r, const pgt_row *row)
{
	for (int i = 0; i < r->ncols; i++)
		if (r->key[i])
			pgt_params_add(p, row->v[i]);
}

/*
 * pgt_update_sql appends an UPDATE of the columns pgt_params_set sends
 * (parameters from *next on), then the key condition. With nothing to write
 * (every column is the key, or an ALWAYS identity column) it is a locking
 * SELECT of the row, whose row count tells whether it exists.
 */
static void
pgt_update_sql(sluice_buf *sql, const pgt_rel *r, const bool *present, int *next)
{
	int first = *next;
	for (int i = 0; i < r->ncols; i++)
		if (pgt_settable(r, present, i)) {
			if (*next == first)
				sluice_buf_printf(sql, "UPDATE %s SET ", r->qtarget);
			else
				sluice_buf_append_str(sql, ", ");
			sluice_buf_printf(sql, "%s = ", r->qcols[i]);
			pgt_param(sql, r, i, (*next)++);
		}
	if (*next == first) {
		sluice_buf_printf(sql, "SELECT 1 FROM %s", r->qtarget);
		pgt_where(sql, r, "", next);
		sluice_buf_append_str(sql, " FOR UPDATE");
		return;
	}
	pgt_where(sql, r, "", next);
}

/* pgt_maybe_drain reads results back when many are queued (large transactions). */
static bool
pgt_maybe_drain(pgt *a)
{
	if (a->npending < PGT_MAX_PENDING)
		return true;
	bool ok = pgt_drain(a, false);
	pgt_clear_pending(a);
	return ok;
}

/* ---- batched inserts ------------------------------------------------------ */

#define PGT_BATCH_ROWS 1000
/*
 * ... and at most this many bytes of values: the server materialises the
 * unnest of a statement's arrays, and past work_mem (4 MB by default) it
 * spills them to a temporary file (wide rows, W4).
 */
#define PGT_BATCH_BYTES ((size_t)2 << 20)
#define PGT_BATCH_SLOTS 4096 /* hash set size: > 2 * PGT_BATCH_ROWS */

/* pgt_hash is FNV-1a over a key's JSON text. */
static uint64_t
pgt_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 1099511628211ULL;
	}
	return h ? h : 1;
}

/*
 * Arrays go to the server in binary (array_recv): a header of ndim 1, a
 * has-null flag, the element type (text) and one dimension, then each element
 * as a 32-bit length (-1: NULL) and its bytes. Parsing a text[] literal with
 * array_in cost the target more than writing the rows when values are large
 * (docs/benchmarks.md, W4); array_recv only checks each element's encoding.
 */
#define PGT_ARRAY_HEADER 20
#define PGT_TEXTOID      25

static void
pgt_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
pgt_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* pgt_array_elem appends one element (NULL: SQL NULL) to a binary text[] value. */
static void
pgt_array_elem(sluice_buf *b, const char *v)
{
	if (b->len == 0) {
		uint8_t h[PGT_ARRAY_HEADER];
		pgt_put_be32(h, 1);               /* ndim */
		pgt_put_be32(h + 4, 0);           /* has nulls */
		pgt_put_be32(h + 8, PGT_TEXTOID); /* element type */
		pgt_put_be32(h + 12, 0);          /* elements so far */
		pgt_put_be32(h + 16, 1);          /* lower bound */
		sluice_buf_append(b, h, sizeof(h));
	}
	pgt_put_be32(b->data + 12, pgt_get_be32(b->data + 12) + 1);
	uint8_t len[4];
	if (v == NULL) {
		pgt_put_be32(b->data + 4, 1);
		pgt_put_be32(len, UINT32_MAX); /* -1 */
		sluice_buf_append(b, len, sizeof(len));
		return;
	}
	size_t n = strlen(v);
	pgt_put_be32(len, (uint32_t)n);
	sluice_buf_append(b, len, sizeof(len));
	sluice_buf_append(b, v, n);
}

/* pgt_array_done finishes b (an empty array when nothing was added); returns its length. */
static int
pgt_array_done(sluice_buf *b)
{
	if (b->len == 0) {
		uint8_t h[12];
		pgt_put_be32(h, 0); /* ndim 0: '{}' */
		pgt_put_be32(h + 4, 0);
		pgt_put_be32(h + 8, PGT_TEXTOID);
		sluice_buf_append(b, h, sizeof(h));
	}
	return (int)b->len;
}

/*
 * pgt_send_arrays queues statement stmt with arrays[0..n) as binary text[]
 * parameters, followed by extra as a text parameter unless it is NULL.
 */
static bool
pgt_send_arrays(pgt *a, const char *stmt, sluice_buf *arrays, int n, const char *extra,
		pgt_kind kind, uint32_t rel_index)
{
	const char **vals = calloc((size_t)n + 1, sizeof(char *));
	int *lens = calloc((size_t)n + 1, sizeof(int));
	int *fmts = calloc((size_t)n + 1, sizeof(int));
	if (vals == NULL || lens == NULL || fmts == NULL)
		abort();
	for (int i = 0; i < n; i++) {
		lens[i] = pgt_array_done(&arrays[i]);
		fmts[i] = 1;
		vals[i] = (const char *)arrays[i].data;
	}
	int nparams = n;
	if (extra != NULL)
		vals[nparams++] = extra;
	bool ok = pgt_send_prepared_bin(a, stmt, nparams, vals, lens, fmts, kind, rel_index, NULL);
	free(vals);
	free(lens);
	free(fmts);
	return ok;
}

/* pgt_batch_insert_sql: INSERT of every column from one text[] parameter per column. */
static void
pgt_batch_insert_sql(sluice_buf *sql, const pgt_rel *r)
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

/* pgt_batch_flush queues the batched rows as one INSERT ... SELECT FROM unnest(...). */
static bool
pgt_batch_flush(pgt *a)
{
	if (!a->batch_open)
		return true;
	a->batch_open = false;
	pgt_rel *r = &a->rels[a->batch_rel];
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
		pgt_colset_key(skey, sizeof(skey), r, "iu", present);
		const char *name = pgt_stmt_find(a, skey);
		if (name == NULL) {
			sluice_buf sql = {0};
			pgt_insert_sql(&sql, r, present, "upsert");
			name = pgt_stmt_prepare(a, skey, &sql, r->ncols, &ok);
			sluice_buf_free(&sql);
		}
		if (ok)
			ok = pgt_send_prepared(a, name, r->ncols, vals, PGT_K_INSERT_UPSERT,
					       a->batch_rel, a->batch_first_key);
		else
			free(a->batch_first_key);
		a->batch_first_key = NULL;
		free(present);
		free(vals);
		for (int i = 0; i < a->batch_ncols; i++)
			sluice_buf_reset(&a->batch_cols[i]);
		a->batch_rows = 0;
		return ok && pgt_maybe_drain(a);
	}
	free(a->batch_first_key);
	a->batch_first_key = NULL;
	bool plain = a->o->strategy == SLUICE_STRATEGY_REPLACE && !a->o->dry_run && r->has_unique &&
		     a->txseq > a->safe_through;
	snprintf(key, sizeof(key), "%" PRIu32 ":%s", r->generation, plain ? "plain" : "batch");
	const char *name = pgt_stmt_find(a, key);
	if (name == NULL && plain) {
		sluice_buf sql = {0};
		pgt_batch_insert_sql(&sql, r);
		name = pgt_stmt_prepare(a, key, &sql, r->ncols, &ok);
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
		pgt_batch_insert_sql(&sql, r);
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
		pgt_existed_sql(&sql, r);
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
		name = pgt_stmt_prepare(a, key, &sql, r->ncols, &ok);
		sluice_buf_free(&sql);
	}
	if (ok)
		ok = pgt_send_arrays(a, name, a->batch_cols, r->ncols, NULL,
				     plain ? PGT_K_BATCH_PLAIN : PGT_K_BATCH_INSERT, a->batch_rel);
	if (ok)
		a->pending[a->npending - 1].rows = a->batch_rows;
	for (int i = 0; i < a->batch_ncols; i++)
		sluice_buf_reset(&a->batch_cols[i]);
	a->batch_rows = 0;
	return ok && pgt_maybe_drain(a);
}

/*
 * pgt_batch_add adds a complete insert to the batch (flushing first when it
 * belongs to another relation, repeats a key or the batch is full).
 * @return false only on failure; *taken tells whether the row was batched.
 */
static bool
pgt_batch_add(pgt *a, uint32_t ri, const pgt_row *row, const char *keyjson, bool *taken)
{
	pgt_rel *r = &a->rels[ri];
	*taken = false;
	if (r->ncols == 0)
		return pgt_batch_flush(a); /* nothing to unnest: INSERT ... DEFAULT VALUES */
	/*
	 * One at a time when a column has no type to cast to, or is a regclass:
	 * text::regclass is not its input function (it refuses "-", the zero oid).
	 */
	for (int i = 0; i < r->ncols; i++)
		if (r->types[i][0] == '\0' || strncmp(r->types[i], "regclass", 8) == 0)
			return pgt_batch_flush(a);
	/* Append logs each kept row with its key: one statement per row there. */
	if (a->o->strategy == SLUICE_STRATEGY_APPEND || (!r->has_unique && !r->full_identity))
		return pgt_batch_flush(a);
	uint64_t h = pgt_hash(keyjson);
	size_t held = 0;
	if (a->batch_open && a->batch_rel == ri)
		for (int i = 0; i < r->ncols; i++)
			held += a->batch_cols[i].len;
	if (a->batch_open &&
	    (a->batch_rel != ri || a->batch_rows >= PGT_BATCH_ROWS || held >= PGT_BATCH_BYTES)) {
		if (!pgt_batch_flush(a))
			return false;
	}
	if (a->batch_open) {
		/* The same key twice in one statement is not allowed by ON CONFLICT. */
		for (size_t s = h % PGT_BATCH_SLOTS;; s = (s + 1) % PGT_BATCH_SLOTS) {
			if (a->batch_hashes[s] == 0)
				break;
			if (a->batch_hashes[s] == h) {
				if (!pgt_batch_flush(a))
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
			a->batch_hashes = calloc(PGT_BATCH_SLOTS, sizeof(uint64_t));
			if (a->batch_hashes == NULL)
				abort();
		} else
			memset(a->batch_hashes, 0, PGT_BATCH_SLOTS * sizeof(uint64_t));
		for (int i = 0; i < a->batch_ncols; i++)
			sluice_buf_reset(&a->batch_cols[i]);
		a->batch_open = true;
		a->batch_rel = ri;
		a->batch_rows = 0;
	}
	for (size_t s = h % PGT_BATCH_SLOTS;; s = (s + 1) % PGT_BATCH_SLOTS)
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
		a->batch_first_key = pgt_strdup(keyjson);
	}
	for (int i = 0; i < r->ncols; i++)
		pgt_array_elem(&a->batch_cols[i], row->v[i]);
	a->batch_rows++;
	*taken = true;
	return true;
}

/* ---- grouped apply: net changes ------------------------------------------- */

/* Net changes held before they are written out, inside one source transaction too. */
#define PGT_NET_MAX_ENTRIES 20000
#define PGT_NET_MAX_BYTES   (16u << 20)

/*
 * pgt_net_fits tells whether changes of r can be folded into net changes:
 * rows found by a unique key of the target, every column of a type to cast
 * text to, no ALWAYS identity column (an UPDATE cannot write it), no delete
 * tracking (tombstones take the version of each delete's own transaction).
 */
static bool
pgt_net_fits(const pgt_rel *r)
{
	if (!r->has_unique || r->full_identity || r->overriding || r->tracked || r->ncols == 0)
		return false;
	for (int i = 0; i < r->ncols; i++)
		if (r->types[i][0] == '\0' || strncmp(r->types[i], "regclass", 8) == 0 ||
		    (r->key[i] && r->text_eq[i]))
			return false;
	return true;
}

/* pgt_net_update_col tells whether an UPDATE of e writes column i. */
static bool
pgt_net_update_col(const pgt_rel *r, const sluice_net_entry *e, int i)
{
	return !r->key[i] && pgt_settable(r, e->present, i);
}

/*
 * pgt_net_sql builds the statement for entries like e: the key columns and
 * the columns written arrive as text[] parameters, one per column, in
 * cols[] order (*ncols of them).
 */
static void
pgt_net_sql(sluice_buf *sql, const pgt_rel *r, const sluice_net_entry *e, sluice_net_kind kind,
	    int *cols, int *ncols)
{
	int n = 0, nset = 0;
	for (int i = 0; i < r->ncols; i++)
		if (r->key[i])
			cols[n++] = i;
	if (kind == SLUICE_NET_UPDATE)
		for (int i = 0; i < r->ncols; i++)
			if (pgt_net_update_col(r, e, i)) {
				cols[n++] = i;
				nset++;
			}
	*ncols = n;
	/* The count of rows found must be the one given last ($n+1): else fail, with words. */
	sluice_buf_append_str(sql, "WITH sluice_w AS (");
	if (kind == SLUICE_NET_UPDATE && nset > 0) {
		sluice_buf_printf(sql, "UPDATE %s AS sluice_t SET ", r->qtarget);
		for (int j = 0, k = 0; j < n; j++)
			if (!r->key[cols[j]])
				sluice_buf_printf(sql, "%s%s = sluice_u.x%d::%s", k++ ? ", " : "",
						  r->qcols[cols[j]], j, r->types[cols[j]]);
		sluice_buf_append_str(sql, " FROM ");
	} else if (kind == SLUICE_NET_DELETE) {
		sluice_buf_printf(sql, "DELETE FROM %s AS sluice_t USING ", r->qtarget);
	} else {
		/* an update of key columns only, or rows that must not exist: find them */
		sluice_buf_printf(sql, "SELECT 1 FROM %s AS sluice_t, ", r->qtarget);
	}
	sluice_buf_append_str(sql, "unnest(");
	for (int j = 0; j < n; j++)
		sluice_buf_printf(sql, "%s$%d::text[]", j ? ", " : "", j + 1);
	sluice_buf_append_str(sql, ") AS sluice_u(");
	for (int j = 0; j < n; j++)
		sluice_buf_printf(sql, "%sx%d", j ? ", " : "", j);
	sluice_buf_append_str(sql, ") WHERE ");
	for (int j = 0, k = 0; j < n; j++)
		if (r->key[cols[j]])
			sluice_buf_printf(sql, "%ssluice_t.%s = sluice_u.x%d::%s",
					  k++ ? " AND " : "", r->qcols[cols[j]], j,
					  r->types[cols[j]]);
	if (kind == SLUICE_NET_UPDATE && nset == 0)
		sluice_buf_append_str(sql, " FOR UPDATE OF sluice_t");
	else if (kind != SLUICE_NET_ABSENT)
		sluice_buf_append_str(sql, " RETURNING 1");
	sluice_buf_printf(sql,
			  ") SELECT CASE WHEN count(*) = $%d::bigint THEN 0 ELSE ('sluice: "
			  "grouped %s found ' || count(*) || ' of ' || $%d::bigint || ' rows where "
			  "the source had them')::int END FROM sluice_w",
			  n + 1,
			  kind == SLUICE_NET_UPDATE   ? "update"
			  : kind == SLUICE_NET_DELETE ? "delete"
						      : "insert and delete",
			  n + 1);
}

/* pgt_net_send queues one statement for es[0..n): one relation, kind and column set. */
static bool
pgt_net_send(pgt *a, sluice_net_entry **es, size_t n)
{
	const sluice_net_entry *e0 = es[0];
	pgt_rel *r = &a->rels[e0->rel];
	sluice_net_kind kind = sluice_net_kind_of(e0);
	int *cols = calloc((size_t)r->ncols + 1, sizeof(int));
	sluice_buf *arrays = calloc((size_t)r->ncols + 1, sizeof(sluice_buf));
	if (cols == NULL || arrays == NULL)
		abort();
	int ncols = 0;
	bool ok = true;
	char key[512];
	const char *name = NULL;
	sluice_buf sql = {0};
	if (kind == SLUICE_NET_INSERT) {
		for (int i = 0; i < r->ncols; i++)
			cols[i] = i;
		ncols = r->ncols;
		snprintf(key, sizeof(key), "%" PRIu32 ":plain", r->generation);
		if ((name = pgt_stmt_find(a, key)) == NULL) {
			pgt_batch_insert_sql(&sql, r);
			name = pgt_stmt_prepare(a, key, &sql, ncols, &ok);
		}
	} else {
		pgt_colset_key(key, sizeof(key), r,
			       kind == SLUICE_NET_UPDATE   ? "nu"
			       : kind == SLUICE_NET_DELETE ? "nd"
							   : "na",
			       kind == SLUICE_NET_UPDATE ? e0->present : r->key);
		pgt_net_sql(&sql, r, e0, kind, cols, &ncols);
		if ((name = pgt_stmt_find(a, key)) == NULL)
			name = pgt_stmt_prepare(a, key, &sql, ncols + 1, &ok);
	}
	for (size_t k = 0; k < n; k++)
		for (int j = 0; j < ncols; j++)
			pgt_array_elem(&arrays[j], es[k]->v[cols[j]]);
	char op = kind == SLUICE_NET_INSERT ? 'I' : kind == SLUICE_NET_UPDATE ? 'U' : 'D';
	char want[24];
	snprintf(want, sizeof(want), "%zu", kind == SLUICE_NET_ABSENT ? (size_t)0 : n);
	a->cur_op = op;
	a->cur_rel = e0->rel;
	/* a plain INSERT writes every row or fails: no count to check */
	if (ok)
		ok = pgt_send_arrays(a, name, arrays, ncols,
				     kind != SLUICE_NET_INSERT ? want : NULL, PGT_K_NET_WRITE,
				     e0->rel);
	a->cur_op = 0;
	for (int j = 0; j < r->ncols; j++)
		sluice_buf_free(&arrays[j]);
	free(arrays);
	free(cols);
	sluice_buf_free(&sql);
	return ok && pgt_maybe_drain(a);
}

/* pgt_net_bytes is the size of e's values. */
static size_t
pgt_net_bytes(const sluice_net_entry *e)
{
	size_t n = 0;
	for (int i = 0; i < e->ncols; i++)
		if (e->v[i] != NULL)
			n += strlen(e->v[i]);
	return n;
}

/* pgt_net_same tells whether b goes into the statement of a. */
static bool
pgt_net_same(const sluice_net_entry *a, const sluice_net_entry *b)
{
	sluice_net_kind k = sluice_net_kind_of(a);
	return a->rel == b->rel && k == sluice_net_kind_of(b) &&
	       (k != SLUICE_NET_UPDATE ||
		memcmp(a->present, b->present, (size_t)a->ncols * sizeof(bool)) == 0);
}

/*
 * pgt_net_flush writes the net changes held so far, after the batched
 * inserts queued before them: per table, deletes, checks, updates, inserts,
 * so that a key deleted and inserted again, or moved, is free when written.
 */
static bool
pgt_net_flush(pgt *a)
{
	if (a->net.n == 0)
		return true;
	bool ok = pgt_batch_flush(a);
	sluice_net_entry **es = sluice_net_sorted(&a->net);
	for (size_t i = 0; ok && i < a->net.n;) {
		size_t j = i + 1, bytes = pgt_net_bytes(es[i]);
		while (j < a->net.n && j - i < PGT_BATCH_ROWS && bytes < PGT_BATCH_BYTES &&
		       pgt_net_same(es[i], es[j]))
			bytes += pgt_net_bytes(es[j++]);
		ok = pgt_net_send(a, es + i, j - i);
		i = j;
	}
	sluice_net_reset(&a->net);
	for (size_t i = 0; i < a->nrels; i++)
		a->rels[i].net_rows = 0;
	return ok;
}

/*
 * pgt_net_add folds a change of relation ri into the net changes of the
 * group when its table allows it (*taken), writing them out when many are
 * held.
 */
static bool
pgt_net_add(pgt *a, uint32_t ri, char op, const pgt_row *newr, const pgt_row *oldr, bool *taken)
{
	pgt_rel *r = &a->rels[ri];
	*taken = false;
	if (!pgt_net_fits(r))
		return true;
	size_t held = a->net.n;
	sluice_net_row nr = {0}, orow = {0};
	if (newr != NULL)
		nr = (sluice_net_row){
			.v = newr->v, .present = newr->present, .complete = newr->complete};
	if (oldr != NULL)
		orow = (sluice_net_row){
			.v = oldr->v, .present = oldr->present, .complete = oldr->complete};
	if (!sluice_net_add(&a->net, ri, r->ncols, r->key, op, newr ? &nr : NULL,
			    oldr ? &orow : NULL))
		return true;
	*taken = true;
	r->net_rows += a->net.n - held;
	a->group_counts[op == 'I' ? 0 : op == 'U' ? 1 : 2]++;
	if (a->net.n >= PGT_NET_MAX_ENTRIES || a->net.bytes >= PGT_NET_MAX_BYTES)
		return pgt_net_flush(a);
	return true;
}

/*
 * pgt_ident_move prepares the update of a complete row into a table with
 * GENERATED ALWAYS identity columns, which no UPDATE (nor ON CONFLICT DO
 * UPDATE) may set: when the row's identity value or key changes, the old
 * row is deleted here and the upsert that follows inserts the new one
 * (OVERRIDING SYSTEM VALUE). Otherwise this deletes nothing and the upsert
 * updates the row in place.
 */
static bool
pgt_ident_move(pgt *a, uint32_t ri, const pgt_row *newr, const pgt_row *keyrow, pgt_kind kind)
{
	pgt_rel *r = &a->rels[ri];
	char key[64];
	bool ok = true;
	const char **vals = calloc((size_t)r->ncols * 2 + 2, sizeof(char *));
	if (vals == NULL)
		abort();
	pgt_params p = {.v = vals};
	pgt_params_key(&p, r, keyrow);
	for (int i = 0; i < r->ncols; i++)
		if (r->ident_always[i] || r->key[i])
			pgt_params_add(&p, newr->v[i]);
	snprintf(key, sizeof(key), "%" PRIu32 ":move", r->generation);
	const char *name = pgt_stmt_find(a, key);
	if (name == NULL) {
		sluice_buf sql = {0};
		sluice_buf_printf(&sql, "DELETE FROM %s", r->qtarget);
		int next = 1;
		pgt_where(&sql, r, "", &next);
		sluice_buf_append_str(&sql, " AND (false");
		for (int i = 0; i < r->ncols; i++)
			if (r->ident_always[i] || r->key[i]) {
				sluice_buf_printf(&sql, " OR %s IS DISTINCT FROM ", r->qcols[i]);
				pgt_param(&sql, r, i, next++);
			}
		sluice_buf_append_str(&sql, ")");
		name = pgt_stmt_prepare(a, key, &sql, p.n, &ok);
		sluice_buf_free(&sql);
	}
	if (ok)
		ok = pgt_send_prepared(a, name, p.n, p.v, kind, ri, NULL);
	free(vals);
	return ok;
}

/* pgt_pipelined queues the pipelined write of replace/append for one change. */
static bool
pgt_pipelined(pgt *a, uint32_t ri, char op, const pgt_row *newr, const pgt_row *oldr)
{
	pgt_rel *r = &a->rels[ri];
	bool ok = true;
	char key[512];
	sluice_buf sql = {0};
	const pgt_row *keyrow = oldr ? oldr : newr;
	const char **vals = calloc((size_t)r->ncols * 2 + 2, sizeof(char *));
	if (vals == NULL)
		abort();
	pgt_params p = {.v = vals};
	char *keyjson = pgt_key_json(r, keyrow);
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
		if (!pgt_batch_add(a, ri, newr, keyjson, &taken))
			ok = false;
		if (!ok || taken)
			goto out;
	} else if (!pgt_batch_flush(a)) {
		ok = false;
		goto out;
	}
	bool keyed = r->has_unique || !r->full_identity;
	pgt_kind kind;
	const char *name = NULL;
	if (op == 'I' || (op == 'U' && newr->complete && !key_changed && keyed)) {
		/* insert, or an update that carries the whole row: upsert */
		kind = op == 'I' ? (append ? PGT_K_INSERT_NOTHING : PGT_K_INSERT_UPSERT)
				 : (append ? PGT_K_APPEND_UPDATE : PGT_K_UPDATE_UPSERT);
		pgt_colset_key(key, sizeof(key), r,
			       op == 'I' ? (append ? "in" : "iu") : (append ? "an" : "uu"),
			       newr->present);
		/* first: preparing it may move the statement names that name points into */
		if (op == 'U' && !append && r->overriding && r->has_unique)
			ok = pgt_ident_move(a, ri, newr, keyrow, PGT_K_IDENT_MOVE);
		int n = pgt_params_present(&p, r, newr);
		if (ok && (name = pgt_stmt_find(a, key)) == NULL) {
			pgt_insert_sql(&sql, r, newr->present, append ? "nothing" : "upsert");
			name = pgt_stmt_prepare(a, key, &sql, n, &ok);
		}
	} else if (append) {
		/* Never overwrite or delete; a change of a missing row is still counted. */
		kind = op == 'U' ? PGT_K_APPEND_PROBE_UPD : PGT_K_APPEND_PROBE_DEL;
		snprintf(key, sizeof(key), "%" PRIu32 ":exists", r->generation);
		pgt_params_key(&p, r, keyrow);
		if ((name = pgt_stmt_find(a, key)) == NULL) {
			sluice_buf_printf(&sql, "SELECT EXISTS (SELECT 1 FROM %s", r->qtarget);
			int next = 1;
			pgt_where(&sql, r, "", &next);
			sluice_buf_append_str(&sql, ")");
			name = pgt_stmt_prepare(a, key, &sql, p.n, &ok);
		}
	} else if (op == 'U' && key_changed && newr->complete && keyed) {
		/*
		 * The row moves to a new key: delete the old, then upsert the new,
		 * as two statements (in one, the INSERT would not see the CTE's
		 * delete and fail on any other unique column of the row). Missing
		 * only if there was no old row to move.
		 */
		kind = PGT_K_MOVED_UPSERT;
		/* first: preparing it may move the statement names that name points into */
		ok = pgt_ident_move(a, ri, newr, keyrow, PGT_K_IDENT_MOVE);
		pgt_colset_key(key, sizeof(key), r, "iu", newr->present);
		int n = pgt_params_present(&p, r, newr);
		if (ok && (name = pgt_stmt_find(a, key)) == NULL) {
			pgt_insert_sql(&sql, r, newr->present, "upsert");
			name = pgt_stmt_prepare(a, key, &sql, n, &ok);
		}
	} else if (op == 'U') {
		/* Unchanged TOAST values stay as they are on the target. */
		kind = PGT_K_UPDATE_PLAIN;
		pgt_colset_key(key, sizeof(key), r, "up", newr->present);
		pgt_params_set(&p, r, newr);
		pgt_params_key(&p, r, keyrow);
		if ((name = pgt_stmt_find(a, key)) == NULL) {
			int next = 1;
			pgt_update_sql(&sql, r, newr->present, &next);
			name = pgt_stmt_prepare(a, key, &sql, p.n, &ok);
		}
	} else {
		kind = PGT_K_DELETE;
		snprintf(key, sizeof(key), "%" PRIu32 ":del", r->generation);
		pgt_params_key(&p, r, keyrow);
		if ((name = pgt_stmt_find(a, key)) == NULL) {
			sluice_buf_printf(&sql, "DELETE FROM %s", r->qtarget);
			int next = 1;
			pgt_where(&sql, r, "", &next);
			name = pgt_stmt_prepare(a, key, &sql, p.n, &ok);
		}
	}
	if (ok)
		ok = pgt_send_prepared(a, name, p.n, p.v, kind, ri, keyjson);
	else
		free(keyjson);
	keyjson = NULL;
out:
	free(keyjson);
	free(vals);
	sluice_buf_free(&sql);
	return ok && pgt_maybe_drain(a);
}

/*
 * pgt_tomb_key_expr appends the tombstone key of a row as the trigger
 * builds it: each key value through its column type, printed with the
 * canonical settings of this session and of sluice.record_delete().
 */
static void
pgt_tomb_key_expr(sluice_buf *sql, const pgt_rel *r, int first)
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
typedef struct pgt_probe {
	bool present;
	bool remote_wins;
	char at[64];
	char node[256];
} pgt_probe;

static void
pgt_read_probe(PGresult *res, pgt_probe *p)
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

/* pgt_timestamp resolves one change by last-writer-wins (conflicts.md). */
static bool
pgt_timestamp(pgt *a, uint32_t ri, char op, const pgt_row *newr, const pgt_row *oldr)
{
	pgt_rel *r = &a->rels[ri];
	bool ok = true;
	char key[512];
	sluice_buf sql = {0};
	const pgt_row *keyrow = oldr ? oldr : newr;
	const char **vals = calloc((size_t)r->ncols * 3 + 8, sizeof(char *));
	if (vals == NULL)
		abort();
	char *keyjson = pgt_key_json(r, keyrow);

	/* 1. versions of the row (locked) and of its tombstone */
	pgt_params p = {.v = vals};
	snprintf(key, sizeof(key), "%" PRIu32 ":probe%s", r->generation,
		 r->ts_col >= 0 ? "ts" : "");
	pgt_params_add(&p, a->commit_ts);
	pgt_params_add(&p, a->node);
	int next = 3;
	const char *tsval = NULL;
	if (r->ts_col >= 0) {
		tsval = newr && newr->present[r->ts_col] ? newr->v[r->ts_col] : NULL;
		pgt_params_add(&p, tsval);
		next = 4;
	}
	pgt_params_key(&p, r, keyrow);
	const char *probe = pgt_stmt_find(a, key);
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
		pgt_where(&sql, r, "t.", &next);
		sluice_buf_append_str(&sql, " FOR UPDATE OF t) x");
		probe = pgt_stmt_prepare(a, key, &sql, p.n, &ok);
	}
	/*
	 * A table without a unique key may hold equal rows, each a row of its
	 * own: an insert there is never a conflict, and is not probed.
	 */
	bool probing = !(op == 'I' && r->full_identity && !r->has_unique);
	if (ok && probing)
		ok = pgt_send_prepared(a, probe, p.n, p.v, PGT_K_PROBE_ROW, ri, NULL);
	/*
	 * Tombstone keys are built on the server, through the column types. A
	 * table identified by all its columns has no key to keep a tombstone
	 * under (sluice prepare tracks no deletes there either).
	 */
	if (ok && probing && !r->full_identity) {
		snprintf(key, sizeof(key), "%" PRIu32 ":tprobe", r->generation);
		const char *tname = pgt_stmt_find(a, key);
		if (tname == NULL) {
			sluice_buf_reset(&sql);
			sluice_buf_append_str(
				&sql,
				"SELECT v.at, v.node, sluice.remote_wins(tb.xmin, $1, $2) "
				"FROM sluice.tombstones tb, LATERAL sluice.version(tb.xmin) v "
				"WHERE tb.rel = $3 AND tb.key = ");
			pgt_tomb_key_expr(&sql, r, 4);
			tname = pgt_stmt_prepare(a, key, &sql, 3 + r->nkeys, &ok);
		}
		pgt_params tpp = {.v = vals + r->ncols + 2};
		pgt_params_add(&tpp, a->commit_ts);
		pgt_params_add(&tpp, a->node);
		pgt_params_add(&tpp, r->tomb_rel);
		pgt_params_key(&tpp, r, keyrow);
		if (ok)
			ok = pgt_send_prepared(a, tname, tpp.n, tpp.v, PGT_K_PROBE_TOMB, ri, NULL);
	}
	if (ok && probing && !pgt_drain(a, true))
		ok = false;
	pgt_probe row, tomb;
	memset(&row, 0, sizeof(row));
	memset(&tomb, 0, sizeof(tomb));
	for (size_t i = 0; ok && i < a->npending; i++) {
		if (a->pending[i].kind == PGT_K_PROBE_ROW)
			pgt_read_probe(a->pending[i].res, &row);
		else if (a->pending[i].kind == PGT_K_PROBE_TOMB)
			pgt_read_probe(a->pending[i].res, &tomb);
	}
	if (probing || !ok)
		pgt_clear_pending(a); /* read back (or failed); else still in flight */
	if (!ok)
		goto out;
	/* 2. decide (conflicts.md) and write */
	sluice_row_state st = {
		.present = row.present,
		.remote_newer = row.remote_wins,
		/* a tombstone blocks only when the delete is newer than this change */
		.tombstone_newer = tomb.present && !tomb.remote_wins,
		.complete = newr != NULL && newr->complete,
	};
	sluice_decision d = sluice_conflict_decide(SLUICE_STRATEGY_TIMESTAMP, op, &st);
	if (d.conflict != SLUICE_CONFLICT_NONE) {
		/* the local version that decided: the tombstone's, the row's, or none */
		const pgt_probe *local =
			d.conflict == SLUICE_CONFLICT_INSERT_DELETED ||
					d.conflict == SLUICE_CONFLICT_UPDATE_DELETED
				? &tomb
			: row.present ? &row
				      : NULL;
		pgt_conflict(a, d.conflict, r, keyjson, local ? local->at : NULL,
			     local ? local->node : NULL, d.resolution);
	}
	enum {
		W_NONE,
		W_INSERT,
		W_UPDATE,
		W_DELETE,
		W_TOMB
	} w = d.write == SLUICE_WRITE_INSERT      ? W_INSERT
	      : d.write == SLUICE_WRITE_UPDATE    ? W_UPDATE
	      : d.write == SLUICE_WRITE_DELETE    ? W_DELETE
	      : d.write == SLUICE_WRITE_TOMBSTONE ? W_TOMB
						  : W_NONE;

	sluice_buf_reset(&sql);
	p.n = 0;
	next = 1;
	if (w == W_INSERT) {
		pgt_colset_key(key, sizeof(key), r, "tin", newr->present);
		pgt_params_present(&p, r, newr);
		if (pgt_stmt_find(a, key) == NULL)
			pgt_insert_sql(&sql, r, newr->present, "nothing");
		a->stats->inserts++;
	} else if (w == W_UPDATE && r->overriding && newr->complete && r->has_unique) {
		/* ALWAYS identity: move the row when its identity or key changes, then upsert */
		ok = pgt_ident_move(a, ri, newr, keyrow, PGT_K_TS_WRITE);
		pgt_colset_key(key, sizeof(key), r, "tmv", newr->present);
		pgt_params_present(&p, r, newr);
		if (pgt_stmt_find(a, key) == NULL)
			pgt_insert_sql(&sql, r, newr->present, "upsert");
		a->stats->updates++;
	} else if (w == W_UPDATE) {
		pgt_colset_key(key, sizeof(key), r, "tup", newr->present);
		pgt_params_set(&p, r, newr);
		pgt_params_key(&p, r, keyrow);
		if (pgt_stmt_find(a, key) == NULL)
			pgt_update_sql(&sql, r, newr->present, &next);
		a->stats->updates++;
	} else if (w == W_DELETE) {
		snprintf(key, sizeof(key), "%" PRIu32 ":del", r->generation);
		pgt_params_key(&p, r, keyrow);
		if (pgt_stmt_find(a, key) == NULL) {
			sluice_buf_printf(&sql, "DELETE FROM %s", r->qtarget);
			pgt_where(&sql, r, "", &next);
		}
		a->stats->deletes++;
	}
	if (w != W_NONE && w != W_TOMB) {
		const char *name = pgt_stmt_prepare(a, key, &sql, p.n, &ok);
		if (ok)
			ok = pgt_send_prepared(a, name, p.n, p.v, PGT_K_TS_WRITE, ri, NULL);
	}
	/* Deletes leave a tombstone at the remote version (the trigger does it when tracked). */
	if (ok && !r->full_identity && (w == W_TOMB || (w == W_DELETE && !r->tracked))) {
		snprintf(key, sizeof(key), "%" PRIu32 ":tomb", r->generation);
		const char *tname = pgt_stmt_find(a, key);
		if (tname == NULL) {
			sluice_buf_reset(&sql);
			sluice_buf_append_str(
				&sql, "INSERT INTO sluice.tombstones AS t (rel, key) VALUES ($1, ");
			pgt_tomb_key_expr(&sql, r, 4);
			sluice_buf_append_str(&sql,
					      ") ON CONFLICT (rel, key) DO UPDATE SET deleted_at = "
					      "now() WHERE sluice.remote_wins(t.xmin, $2, $3)");
			tname = pgt_stmt_prepare(a, key, &sql, 3 + r->nkeys, &ok);
		}
		pgt_params up = {.v = vals + r->ncols + 2};
		pgt_params_add(&up, r->tomb_rel);
		pgt_params_add(&up, a->commit_ts);
		pgt_params_add(&up, a->node);
		pgt_params_key(&up, r, keyrow);
		if (ok)
			ok = pgt_send_prepared(a, tname, up.n, up.v, PGT_K_CONTROL, ri, NULL);
	}
	if (ok)
		ok = pgt_maybe_drain(a);
out:
	free(keyjson);
	free(vals);
	sluice_buf_free(&sql);
	return ok;
}

/* ---- status ------------------------------------------------------------------ */

/*
 * pgt_status tells the engine what a failed operation means: the connection
 * is gone (LOST), a row an optimistic insert took for new exists (EXISTS),
 * a transient error (RETRY), or a permanent one (FAILED); the failure names
 * the change and carries the server's words.
 */
static sluice_target_status
pgt_status(pgt *a)
{
	sluice_target_failure *f = &a->base.failure;
	bool lost = a->conn == NULL || PQstatus(a->conn) != CONNECTION_OK || a->error_lost;
	f->txseq = a->error_txseq;
	f->op = a->error_op;
	f->rel = a->error_rel;
	f->cause = pgt_classify(a->error_state);
	snprintf(f->code, sizeof(f->code), "%s", a->error_state);
	snprintf(f->message, sizeof(f->message), "%s", a->first_error);
	if (a->retry_safe && !lost) {
		a->safe_through = a->error_txseq;
		return SLUICE_TARGET_EXISTS;
	}
	if (a->error_transient && !lost)
		return SLUICE_TARGET_RETRY;
	if (lost) {
		if (f->message[0] == '\0' && a->conn != NULL)
			snprintf(f->message, sizeof(f->message), "%s",
				 sluice_pg_error_line(a->conn));
		a->txn_open_on_target = false; /* gone with the connection: nothing to roll back */
		a->in_txn = false;
		return SLUICE_TARGET_LOST;
	}
	return SLUICE_TARGET_FAILED;
}

/* pgt_done turns the outcome of a step into a status. */
static sluice_target_status
pgt_done(pgt *a, bool ok)
{
	return ok ? SLUICE_TARGET_OK : pgt_status(a);
}

/* ---- the target operations ------------------------------------------------------ */

/* pgt_check compares relation ri with the target table before its first change. */
static sluice_target_status
pgt_check(sluice_target *t, uint32_t ri, const Sluice__V1__Relation *desc)
{
	pgt *a = (pgt *)t;
	/* Results of earlier statements first: the check uses plain queries. */
	if (!pgt_batch_flush(a))
		return pgt_status(a);
	if (a->npending > 0) {
		bool ok = pgt_drain(a, false);
		pgt_clear_pending(a);
		if (!ok)
			return pgt_status(a);
	}
	if (PQexitPipelineMode(a->conn) != 1) {
		sluice_log_error("could not leave pipeline mode: %s",
				 sluice_pg_error_line(a->conn));
		return pgt_status(a);
	}
	bool ok = pgt_check_rel(a, &a->rels[ri], desc);
	if (PQenterPipelineMode(a->conn) != 1)
		ok = false;
	return pgt_done(a, ok);
}

/* pgt_change writes one row change. */
static sluice_target_status
pgt_change(sluice_target *t, uint32_t ri, char op, const sluice_record *rec)
{
	pgt *a = (pgt *)t;
	const Sluice__V1__Row *newrow = NULL, *oldrow = NULL;
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_INSERT:
		newrow = rec->insert->new_row;
		break;
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
		newrow = rec->snapshot_row->row;
		break;
	case SLUICE__V1__RECORD__BODY_UPDATE:
		newrow = rec->update->new_row;
		oldrow = rec->update->old_row;
		break;
	default:
		oldrow = rec->delete_->old_row;
	}
	pgt_rel *r = &a->rels[ri];
	a->cur_op = op;
	a->cur_rel = ri;
	sluice_buf text = {0};
	const char **nv = calloc((size_t)r->ncols + 1, sizeof(char *));
	const char **ov = calloc((size_t)r->ncols + 1, sizeof(char *));
	bool *np = calloc((size_t)r->ncols + 1, sizeof(bool));
	bool *opr = calloc((size_t)r->ncols + 1, sizeof(bool));
	if (nv == NULL || ov == NULL || np == NULL || opr == NULL)
		abort();
	pgt_row newr = {.v = nv, .present = np}, oldr = {.v = ov, .present = opr};
	/* Both rows' text goes into one buffer: fill it fully before taking pointers. */
	sluice_buf ntext = {0};
	if (newrow)
		pgt_row_from(r, newrow, &newr, &ntext);
	if (oldrow)
		pgt_row_from(r, oldrow, &oldr, &text);
	bool ok = true, taken = false;
	if (a->grouped) {
		/*
		 * Folded into the group's net changes, or written on its own after
		 * those of its table (the order between tables does not matter:
		 * foreign keys do not fire with session_replication_role replica).
		 */
		ok = pgt_net_add(a, ri, op, newrow ? &newr : NULL, oldrow ? &oldr : NULL, &taken);
		if (ok && !taken && a->rels[ri].net_rows > 0)
			ok = pgt_net_flush(a);
	}
	if (ok && !taken)
		ok = a->o->strategy == SLUICE_STRATEGY_TIMESTAMP
			     ? pgt_timestamp(a, ri, op, newrow ? &newr : NULL,
					     oldrow ? &oldr : NULL)
			     : pgt_pipelined(a, ri, op, newrow ? &newr : NULL,
					     oldrow ? &oldr : NULL);
	a->cur_op = 0; /* a failure is reported by the engine, naming the change */
	free(opr);
	free(np);
	free(ov);
	free(nv);
	sluice_buf_free(&ntext);
	sluice_buf_free(&text);
	return pgt_done(a, ok);
}

/* pgt_truncate empties the tables ris (ONLY each: the source names every table it truncated). */
static sluice_target_status
pgt_truncate(sluice_target *t, const uint32_t *ris, size_t n, bool restart_identity, bool cascade)
{
	pgt *a = (pgt *)t;
	if (!pgt_net_flush(a) || !pgt_batch_flush(a))
		return pgt_status(a);
	sluice_buf sql = {0};
	for (size_t i = 0; i < n; i++)
		sluice_buf_printf(&sql, "%s%s", i ? ", " : "TRUNCATE ", a->rels[ris[i]].qtarget);
	if (restart_identity)
		sluice_buf_append_str(&sql, " RESTART IDENTITY");
	if (cascade)
		sluice_buf_append_str(&sql, " CASCADE");
	sluice_buf_append_byte(&sql, '\0');
	bool ok = pgt_send_sql(a, (const char *)sql.data, 0, NULL, PGT_K_CONTROL);
	sluice_buf_free(&sql);
	return pgt_done(a, ok);
}

static void
pgt_lsn_text(uint64_t v, char *out, size_t size)
{
	snprintf(out, size, "%X/%X", (unsigned)(v >> 32), (unsigned)(v & 0xFFFFFFFFu));
}

/* pgt_take_txn makes txn the source transaction being applied. */
static void
pgt_take_txn(pgt *a, const sluice_apply_txn *txn)
{
	a->txseq = txn->txseq;
	a->commit_us = txn->commit_us;
	pgt_format_ts(txn->commit_us, a->commit_ts, sizeof(a->commit_ts));
	snprintf(a->node, sizeof(a->node), "%s", txn->node);
	a->cur_node = txn->node_index;
	a->in_txn = true;
}

/*
 * pgt_begin opens the transaction: its commit record carries the origin's
 * progress (the txseq, as an LSN) and the origin commit time.
 */
static sluice_target_status
pgt_begin(sluice_target *t, const sluice_apply_txn *txn)
{
	pgt *a = (pgt *)t;
	pgt_take_txn(a, txn);
	const char *node = txn->node;
	if (txn->grouped) {
		/* The origin's progress is set up at the group's commit, for its last one. */
		a->grouped = true;
		a->group_first = txn->txseq;
		memset(a->group_counts, 0, sizeof(a->group_counts));
		a->send_failed = false;
		if (!pgt_send_prepared(a, "sl_begin", 0, NULL, PGT_K_CONTROL, 0, NULL))
			return pgt_status(a);
		a->txn_open_on_target = true;
		return SLUICE_TARGET_OK;
	}
	if (a->o->dry_run) {
		if (!a->dry_open && !pgt_send_sql(a, "BEGIN", 0, NULL, PGT_K_CONTROL))
			return pgt_status(a);
		a->dry_open = true;
		a->txn_open_on_target = true;
		return SLUICE_TARGET_OK;
	}
	char lsn[32];
	pgt_lsn_text(txn->txseq, lsn, sizeof(lsn));
	const char *params[3] = {lsn, a->commit_ts, node};
	/* Delete tracking (sluice prepare) records tombstones at the remote version. */
	if (!pgt_send_prepared(a, "sl_begin", 0, NULL, PGT_K_CONTROL, 0, NULL) ||
	    !(a->schema_installed
		      ? pgt_send_prepared(a, "sl_setup_v", 3, params, PGT_K_CONTROL, 0, NULL)
		      : pgt_send_prepared(a, "sl_setup", 2, params, PGT_K_CONTROL, 0, NULL)))
		return pgt_status(a);
	a->txn_open_on_target = true;
	if (a->schema_installed && strcmp(a->last_origin_node, node) != 0) {
		const char *op[2] = {a->origin, node};
		if (!pgt_send_sql(a,
				  "INSERT INTO sluice.origin_node VALUES ($1, $2) ON CONFLICT "
				  "(roname) DO UPDATE SET node = EXCLUDED.node",
				  2, op, PGT_K_CONTROL))
			return pgt_status(a);
		snprintf(a->last_origin_node, sizeof(a->last_origin_node), "%s", node);
	}
	return SLUICE_TARGET_OK;
}

/* pgt_join takes the next source transaction into the open group. */
static sluice_target_status
pgt_join(sluice_target *t, const sluice_apply_txn *txn)
{
	pgt_take_txn((pgt *)t, txn);
	return SLUICE_TARGET_OK;
}

/* pgt_group_reset forgets the group: its net changes, counts and findings. */
static void
pgt_group_reset(pgt *a)
{
	a->grouped = false;
	sluice_net_reset(&a->net);
	for (size_t i = 0; i < a->nrels; i++)
		a->rels[i].net_rows = 0;
	memset(a->group_counts, 0, sizeof(a->group_counts));
	a->send_failed = false;
}

/*
 * pgt_rollback abandons the open target transaction. After a failure the
 * failed transaction block (and the ones queued after it, which the server
 * skipped) may still be open, unless its COMMIT was what failed. Its record
 * of the stream's node may be gone with it, and the conflict rows return to
 * the last COMMIT result.
 */
static sluice_target_status
pgt_rollback(sluice_target *t, bool after_failure)
{
	pgt *a = (pgt *)t;
	if (after_failure) {
		pgt_clear_pending(a); /* the failed drain read everything */
		a->retry_safe = false;
		a->error_transient = false;
		a->first_error[0] = '\0';
		a->txn_open_on_target = PQtransactionStatus(a->conn) != PQTRANS_IDLE;
	}
	a->in_txn = false;
	a->batch_open = false;
	a->batch_rows = 0;
	pgt_group_reset(a);
	pgt_restore_rows(a);
	if (!a->txn_open_on_target)
		return SLUICE_TARGET_OK;
	a->txn_open_on_target = false;
	a->dry_open = false;
	a->last_origin_node[0] = '\0';
	bool ok = pgt_send_sql(a, "ROLLBACK", 0, NULL, PGT_K_CONTROL) && pgt_drain(a, false);
	pgt_clear_pending(a);
	return pgt_done(a, ok);
}

/*
 * pgt_flush_results reads back everything in flight (between transactions)
 * and logs the conflicts it found, in a transaction of their own.
 */
static bool
pgt_flush_results(pgt *a)
{
	bool ok = true;
	if (a->npending > 0) {
		ok = pgt_drain(a, false);
		pgt_clear_pending(a);
	}
	if (ok && a->conflict_rows.len > 0 && !a->in_txn && !a->o->dry_run) {
		ok = pgt_send_sql(a, "BEGIN", 0, NULL, PGT_K_CONTROL) && pgt_send_conflict_log(a) &&
		     pgt_send_sql(a, "COMMIT", 0, NULL, PGT_K_CONTROL) && pgt_drain(a, false);
		pgt_clear_pending(a);
	}
	return ok;
}

static sluice_target_status
pgt_flush(sluice_target *t)
{
	pgt *a = (pgt *)t;
	return pgt_done(a, pgt_flush_results(a));
}

/*
 * pgt_commit queues the COMMIT. Several transactions may be in flight
 * under one sync: after a failure PostgreSQL skips every command up to the
 * sync, so no later transaction can commit past a failed one, and the
 * origin progress never skips a transaction.
 */
/*
 * pgt_group_commit writes the group's net changes and queues the COMMIT,
 * with the last transaction's progress. A net statement that does not find
 * the rows where the source had them fails on the server, so the COMMIT
 * after it is skipped (as after any failure in the pipeline).
 */
static sluice_target_status
pgt_group_commit(pgt *a)
{
	bool ok = !a->send_failed && pgt_net_flush(a) && pgt_batch_flush(a);
	char lsn[32];
	pgt_lsn_text(a->txseq, lsn, sizeof(lsn));
	const char *params[2] = {lsn, a->commit_ts};
	ok = pgt_send_prepared(a, "sl_setup", 2, params, PGT_K_CONTROL, 0, NULL) &&
	     pgt_send_prepared(a, "sl_commit", 0, NULL, PGT_K_COMMIT, 0, NULL);
	if (ok) {
		pgt_pending *p = &a->pending[a->npending - 1];
		p->first_txseq = a->group_first;
		memcpy(p->counts, a->group_counts, sizeof(p->counts));
	}
	a->txn_open_on_target = false;
	a->in_txn = false;
	pgt_group_reset(a);
	if (ok && a->npending >= PGT_MAX_PENDING)
		ok = pgt_flush_results(a);
	return pgt_done(a, ok);
}

static sluice_target_status
pgt_commit(sluice_target *t)
{
	pgt *a = (pgt *)t;
	if (a->grouped)
		return pgt_group_commit(a);
	bool ok = pgt_batch_flush(a);
	if (!a->o->dry_run) {
		if (ok && a->o->strategy == SLUICE_STRATEGY_TIMESTAMP)
			ok = pgt_send_conflict_log(a);
		ok = ok && pgt_send_prepared(a, "sl_commit", 0, NULL, PGT_K_COMMIT, 0, NULL);
		a->txn_open_on_target = false;
	}
	a->in_txn = false;
	if (ok && a->npending >= PGT_MAX_PENDING)
		ok = pgt_flush_results(a);
	return pgt_done(a, ok);
}

/* ---- set-up ---------------------------------------------------------------- */

/*
 * pgt_origin_marker names the database-level setting that marks the
 * database owning a replication origin (origins belong to the cluster).
 */
static void
pgt_origin_marker(const char *origin, char *marker, size_t size)
{
	snprintf(marker, size, "sluice.origin_");
	for (const char *c = origin; *c && strlen(marker) + 1 < size; c++) {
		size_t n = strlen(marker);
		marker[n] = (char)((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ? *c : '_');
		marker[n + 1] = '\0';
	}
}

/*
 * pgt_origin_default names the origin when --origin is not given:
 * sluice_<stream>@<database>, so that a second database of the same cluster
 * (a point-in-time replay next to a live copy) gets its own progress. An
 * origin sluice_<stream> (the name before this default) that this database
 * owns keeps being used, so no progress is lost on upgrade. *legacy tells
 * which one it is.
 */
static bool
pgt_origin_default(PGconn *conn, const char *stream, char *out, size_t size, bool *legacy_used)
{
	char legacy[600], marker[128];
	snprintf(legacy, sizeof(legacy), "sluice_%s", stream);
	pgt_origin_marker(legacy, marker, sizeof(marker));
	const char *params[2] = {legacy, marker};
	PGresult *res = sluice_pg_query(
		conn,
		"SELECT current_database(), pg_replication_origin_oid($1) IS NOT NULL AND "
		"coalesce(current_setting($2, true), '') = 'owner'",
		2, params);
	if (res == NULL)
		return false;
	*legacy_used = PQgetvalue(res, 0, 1)[0] == 't';
	if (*legacy_used)
		snprintf(out, size, "%s", legacy);
	else
		snprintf(out, size, "sluice_%s@%s", stream, PQgetvalue(res, 0, 0));
	PQclear(res);
	return true;
}

/* pgt_default_origin sets a->origin to the default origin (pgt_origin_default). */
static bool
pgt_default_origin(pgt *a)
{
	bool legacy = false;
	if (!pgt_origin_default(a->conn, a->o->stream, a->origin, sizeof(a->origin), &legacy))
		return false;
	if (legacy)
		sluice_log_info("using replication origin \"%s\", which this database already "
				"owns (named before the default included the database)",
				a->origin);
	return true;
}

/* pgt_setup connects and prepares the session; returns the txseq to resume after. */
static bool
pgt_setup(pgt *a, uint64_t *resume, bool *fatal)
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
	if (a->origin[0] == '\0' && !pgt_default_origin(a)) {
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
	pgt_origin_marker(a->origin, marker, sizeof(marker));
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

/* pgt_progress reads the origin's progress: the last transaction committed on the target. */
static sluice_target_status
pgt_progress(sluice_target *t, uint64_t *resume)
{
	pgt *a = (pgt *)t;
	if (PQexitPipelineMode(a->conn) != 1) {
		sluice_log_error("could not leave pipeline mode: %s",
				 sluice_pg_error_line(a->conn));
		return pgt_status(a);
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
	return pgt_done(a, ok);
}

static const char *
pgt_progress_name(const sluice_target *t)
{
	return ((const pgt *)t)->progress_name;
}

/* pgt_open connects and sets the session up; *resume is the origin's progress. */
static sluice_target_status
pgt_open(sluice_target *t, uint64_t *resume)
{
	pgt *a = (pgt *)t;
	bool fatal = false;
	a->busy = false;
	if (pgt_setup(a, resume, &fatal)) {
		snprintf(a->progress_name, sizeof(a->progress_name), "replication origin \"%s\"",
			 a->origin);
		/* Rows' versions on a prepared node are their own transactions' commit times. */
		a->base.groups = !a->schema_installed &&
				 a->o->strategy == SLUICE_STRATEGY_REPLACE && !a->o->dry_run;
		return SLUICE_TARGET_OK;
	}
	snprintf(a->progress_name, sizeof(a->progress_name), "replication origin \"%s\"",
		 a->origin);
	a->base.failure.cause = pgt_classify(a->error_state);
	if (a->conn == NULL)
		return SLUICE_TARGET_LOST;
	if (a->busy)
		return SLUICE_TARGET_BUSY;
	return fatal ? SLUICE_TARGET_FAILED : SLUICE_TARGET_LOST;
}

/* pgt_close drops the connection and what belongs to it: statements, queued results. */
static void
pgt_close(sluice_target *t)
{
	pgt *a = (pgt *)t;
	pgt_restore_rows(a);
	PQfinish(a->conn);
	a->conn = NULL;
	a->in_txn = false;
	a->txn_open_on_target = false;
	a->dry_open = false;
	a->batch_open = false;
	a->batch_rows = 0;
	pgt_group_reset(a);
	a->last_origin_node[0] = '\0';
	pgt_clear_pending(a);
	for (size_t i = 0; i < a->nstmts; i++) {
		free(a->stmts[i].key);
		free(a->stmts[i].name);
	}
	a->nstmts = 0;
	a->error_state[0] = '\0';
	a->error_lost = false;
	a->retry_safe = false;
	a->error_transient = false;
	a->first_error[0] = '\0';
}

static void
pgt_free(sluice_target *t)
{
	pgt *a = (pgt *)t;
	pgt_close(t);
	free(a->pending);
	free(a->stmts);
	for (size_t i = 0; i < a->nrels; i++)
		if (a->rels[i].defined)
			pgt_free_rel(&a->rels[i]);
	free(a->rels);
	sluice_buf_free(&a->conflict_rows);
	for (int i = 0; i < a->batch_ncols; i++)
		sluice_buf_free(&a->batch_cols[i]);
	free(a->batch_cols);
	free(a->batch_hashes);
	sluice_buf_free(&a->batch_first);
	free(a->batch_first_null);
	free(a->batch_first_key);
	sluice_net_free(&a->net);
	free(a);
}

static const sluice_target_ops pgt_ops = {
	.kind = "PostgreSQL",
	.code_name = "SQLSTATE",
	.open = pgt_open,
	.progress = pgt_progress,
	.progress_name = pgt_progress_name,
	.relation = pgt_relation,
	.check = pgt_check,
	.begin = pgt_begin,
	.join = pgt_join,
	.change = pgt_change,
	.truncate = pgt_truncate,
	.commit = pgt_commit,
	.flush = pgt_flush,
	.rollback = pgt_rollback,
	.close = pgt_close,
	.free = pgt_free,
};

sluice_target *
sluice_pg_target_create(sluice_apply_ctx *ctx)
{
	pgt *a = calloc(1, sizeof(*a));
	if (a == NULL)
		abort();
	a->base.ops = &pgt_ops;
	a->ctx = ctx;
	a->o = sluice_apply_ctx_options(ctx);
	a->stats = sluice_apply_ctx_stats(ctx);
	if (a->o->origin != NULL)
		snprintf(a->origin, sizeof(a->origin), "%s",
			 a->o->origin); /* else named at set-up */
	return &a->base;
}

bool
sluice_pg_target_progress_read(const sluice_apply_options *o, uint64_t *txseq, bool *found)
{
	*txseq = 0;
	*found = false;
	char origin[640];
	bool legacy = false;
	PGconn *conn = sluice_pg_connect(o->target, false, "the target");
	if (conn == NULL)
		return false;
	bool ok = false;
	PGresult *res = NULL;
	if (o->origin != NULL)
		snprintf(origin, sizeof(origin), "%s", o->origin);
	else if (!pgt_origin_default(conn, o->stream, origin, sizeof(origin), &legacy))
		goto cleanup;
	/* Read only: no origin is created, and its progress is not flushed. */
	const char *params[1] = {origin};
	res = sluice_pg_query(conn,
			      "SELECT pg_replication_origin_progress(roname, false) FROM "
			      "pg_replication_origin WHERE roname = $1",
			      1, params);
	if (res == NULL)
		goto cleanup;
	uint64_t lsn = 0;
	if (PQntuples(res) == 1) {
		*found = true;
		if (!PQgetisnull(res, 0, 0) && sluice_pg_lsn_parse(PQgetvalue(res, 0, 0), &lsn))
			*txseq = lsn;
	}
	ok = true;

cleanup:
	PQclear(res);
	PQfinish(conn);
	return ok;
}
