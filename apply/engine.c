/*
 * The apply engine: reads the verified stream in txseq order and drives a
 * target (target.h) through it. Bounds, filters, dry run, counters, the
 * decision after a failure (reconnect, retry with backoff, apply again with
 * conflict handling, stop) and the reconnect loop live here; SQL, MongoDB
 * commands and the progress records live in the targets.
 */
#include "apply.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "clock.h"
#include "log.h"
#include "mongotarget.h"
#include "pgtarget.h"
#include "reader.h"
#include "records.h"
#include "target.h"

struct sluice_apply_ctx {
	const sluice_apply_options *o;
	sluice_apply_stats *stats;
	sluice_target *t; /* owned */

	sluice_apply_rel *rels; /* owned */
	size_t nrels;
	uint32_t next_generation;
	char **nodes; /* owned: origin node names seen, interned */
	uint32_t nnodes;

	/* counts as of the last confirmed commit: what a rollback returns to */
	sluice_apply_stats committed_stats;

	uint64_t expect_txseq; /* the next transaction must be this one */
	bool in_txn;
	sluice_apply_txn txn;
	bool done; /* a bound was reached */

	uint64_t exists_txseq; /* EXISTS: the transaction applied again with conflict handling */

	/* grouped apply: complete source transactions in an open target transaction */
	bool grouping;            /* the options and the target allow it */
	bool txn_grouped;         /* the open target transaction is a group */
	bool group_open;          /* ... and holds complete transactions, none in progress */
	uint64_t group_first;     /* its first transaction */
	uint32_t group_txns;      /* complete transactions in it */
	uint64_t group_bytes;     /* bytes of row data in it */
	int64_t group_start_ms;   /* when it began */
	uint64_t group_frame;     /* the frame it began in */
	int64_t last_wait_ms;     /* when the stream last had nothing more (0: never) */
	bool group_end;           /* the transaction in progress ends its group */
	uint64_t ungroup_through; /* transactions up to here are applied one at a time */
	uint64_t alone_txseq;     /* this transaction begins a group of its own (not joined) */

	/* the transaction failing transiently, for backoff and the loud report */
	uint64_t retry_txseq;
	int retry_attempts;
	int64_t retry_since_ms, retry_report_ms;
	int64_t last_log_ms;

	/* for metrics */
	int64_t last_report_ms;
	uint64_t base_frames, base_bytes; /* read by readers closed before this one */
	sluice_reader *reader;            /* borrowed: the one open now, or NULL */
	/* commit times of transactions begun, by txseq modulo the size: a commit
	 * result arrives after later transactions were begun (pipelining) */
	struct {
		uint64_t txseq;
		int64_t commit_us;
	} begun[4096];
};

static const char *const retry_names[SLUICE_RETRY_COUNT] = {
	"deadlock", "serialization", "lock_timeout", "canceled", "shutdown", "connection",
};

const char *
sluice_retry_cause_name(sluice_retry_cause c)
{
	return c < SLUICE_RETRY_COUNT ? retry_names[c] : "unknown";
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
	o->max_txn_writes = 10000;
	o->group_size = 1000;
	o->group_bytes = 16u << 20;
	o->group_ms = 200;
	/* The default group size, for running a whole test suite ungrouped. */
	const char *gs = getenv("SLUICE_APPLY_GROUP_SIZE");
	char *end = NULL;
	unsigned long v = gs ? strtoul(gs, &end, 10) : 0;
	if (gs != NULL && end != gs && *end == '\0' && v >= 1 && v <= UINT32_MAX)
		o->group_size = (uint32_t)v;
}

/* ---- what targets see ------------------------------------------------------ */

const sluice_apply_options *
sluice_apply_ctx_options(const sluice_apply_ctx *ctx)
{
	return ctx->o;
}

sluice_apply_stats *
sluice_apply_ctx_stats(sluice_apply_ctx *ctx)
{
	return ctx->stats;
}

const sluice_apply_rel *
sluice_apply_rel_at(const sluice_apply_ctx *ctx, uint32_t ri)
{
	return ri < ctx->nrels ? &ctx->rels[ri] : NULL;
}

const char *
sluice_apply_node(const sluice_apply_ctx *ctx, uint32_t node_index)
{
	return node_index < ctx->nnodes ? ctx->nodes[node_index] : "";
}

/*
 * engine_report refreshes the live counters and hands them to the report
 * callback, at most once a second unless forced.
 */
static void
engine_report(sluice_apply_ctx *e, bool force)
{
	if (e->o->report == NULL)
		return;
	int64_t now = sluice_clock_mono_ms();
	if (!force && now - e->last_report_ms < 1000)
		return;
	e->last_report_ms = now;
	sluice_apply_stats *s = e->stats;
	s->frames = e->base_frames;
	s->bytes = e->base_bytes;
	if (e->reader != NULL) {
		sluice_reader_counters rc;
		sluice_reader_counters_get(e->reader, &rc);
		s->frames += rc.frames;
		s->bytes += rc.bytes;
		if (rc.head_txseq > s->head_txseq)
			s->head_txseq = rc.head_txseq;
	}
	if (s->applied_txseq < s->resumed_after)
		s->applied_txseq = s->resumed_after;
	if (s->head_txseq < s->applied_txseq)
		s->head_txseq = s->applied_txseq;
	e->o->report(e->o->report_arg, s);
}

/* engine_count_txn counts an applied transaction. */
static void
engine_count_txn(sluice_apply_ctx *e, uint64_t txseq)
{
	sluice_apply_stats *s = e->stats;
	size_t slot = txseq % (sizeof(e->begun) / sizeof(e->begun[0]));
	if (e->begun[slot].txseq == txseq)
		s->applied_commit_us = e->begun[slot].commit_us;
	if (!e->o->dry_run && txseq > s->applied_txseq)
		s->applied_txseq = txseq;
	s->transactions++;
	if (s->first_txseq == 0)
		s->first_txseq = txseq;
	s->last_txseq = txseq;
	if (txseq >= e->retry_txseq)
		e->retry_attempts = 0; /* the transaction that kept failing went through */
}

void
sluice_apply_part_committed(sluice_apply_ctx *ctx)
{
	ctx->committed_stats = *ctx->stats;
}

void
sluice_apply_committed(sluice_apply_ctx *ctx, uint64_t txseq)
{
	engine_count_txn(ctx, txseq);
	ctx->committed_stats = *ctx->stats;
}

void
sluice_apply_group_committed(sluice_apply_ctx *ctx, uint64_t first, uint64_t last)
{
	for (uint64_t txseq = first; txseq <= last; txseq++)
		engine_count_txn(ctx, txseq);
	ctx->committed_stats = *ctx->stats;
}

/*
 * engine_restore forgets the counts of transactions that did not commit
 * (rolled back, or lost with the connection): they are counted when applied
 * again. Retries happened, committed or not.
 */
static void
engine_restore(sluice_apply_ctx *e)
{
	sluice_apply_stats *s = e->stats;
	bool refused = s->refused;
	uint64_t resumed_after = s->resumed_after;
	uint64_t retries[SLUICE_RETRY_COUNT];
	memcpy(retries, s->retries, sizeof(retries));
	sluice_apply_stats live = *s;
	*s = e->committed_stats;
	s->refused = refused;
	s->resumed_after = resumed_after;
	s->connected = live.connected;
	s->head_txseq = live.head_txseq;
	s->heartbeat_us = live.heartbeat_us;
	s->frames = live.frames;
	s->bytes = live.bytes;
	memcpy(s->retries, retries, sizeof(retries));
}

/* ---- relations ----------------------------------------------------------------- */

static char *
engine_strdup(const char *s)
{
	char *d = strdup(s);
	if (d == NULL)
		abort();
	return d;
}

/* engine_ts_column finds --timestamp-column for a relation, or NULL. */
static const char *
engine_ts_column(const sluice_apply_ctx *e, const char *space, const char *name)
{
	char full[600];
	snprintf(full, sizeof(full), "%s.%s", space, name);
	for (size_t i = 0; i < e->o->nts_columns; i++) {
		const char *spec = e->o->ts_columns[i];
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

/* engine_relation takes a (new) description of relation ri from the stream. */
static void
engine_relation(sluice_apply_ctx *e, uint32_t ri, const Sluice__V1__Relation *src)
{
	sluice_apply_rel *r = &e->rels[ri];
	free(r->space);
	free(r->name);
	free(r->label);
	memset(r, 0, sizeof(*r));
	r->id = src->id;
	r->generation = ++e->next_generation;
	r->space = engine_strdup(src->schema);
	r->name = engine_strdup(src->name);
	size_t llen = strlen(src->schema) + strlen(src->name) + 2;
	r->label = malloc(llen);
	if (r->label == NULL)
		abort();
	snprintf(r->label, llen, "%s.%s", src->schema, src->name);
	r->local = strcmp(r->space, SLUICE_APPLY_LOCAL_SPACE) == 0;
	r->included = !r->local && sluice_filter_match(&e->o->filter, r->space, r->name);
	r->ts_column = engine_ts_column(e, r->space, r->name);
	e->t->ops->relation(e->t, ri, src);
}

/*
 * engine_rel_ready finds relation relid of the stream (*ri) and tells whether
 * its changes are applied (*wanted: included by the filters, not in sluice's
 * own namespace); the target checks a wanted relation the first time.
 */
static sluice_target_status
engine_rel_ready(sluice_apply_ctx *e, const sluice_reader *reader, uint32_t relid, uint32_t *ri,
		 bool *wanted)
{
	*ri = UINT32_MAX;
	*wanted = false;
	for (size_t i = 0; i < e->nrels; i++)
		if (e->rels[i].id == relid)
			*ri = (uint32_t)i;
	if (*ri == UINT32_MAX) {
		const Sluice__V1__Relation *src = sluice_reader_relation(reader, relid);
		if (src == NULL) {
			sluice_log_error("txseq %" PRIu64 ": change of relation %" PRIu32
					 " that the stream never described",
					 e->txn.txseq, relid);
			e->t->failure = (sluice_target_failure){.cause = -1};
			return SLUICE_TARGET_FAILED;
		}
		sluice_apply_rel *p = realloc(e->rels, (e->nrels + 1) * sizeof(*p));
		if (p == NULL)
			abort();
		e->rels = p;
		memset(&e->rels[e->nrels], 0, sizeof(e->rels[0]));
		*ri = (uint32_t)e->nrels++;
		engine_relation(e, *ri, src);
	}
	sluice_apply_rel *r = &e->rels[*ri];
	if (r->local && !r->warned) {
		sluice_log_warn("stream \"%s\" holds changes of %s, in sluice's own node-local "
				"schema: not applied (txseq %" PRIu64 ")",
				e->o->stream, r->label, e->txn.txseq);
		r->warned = true;
	}
	if (!r->included)
		return SLUICE_TARGET_OK;
	if (!r->checked) {
		sluice_target_status st =
			e->t->ops->check(e->t, *ri, sluice_reader_relation(reader, relid));
		if (st != SLUICE_TARGET_OK)
			return st;
		r->checked = true;
	}
	*wanted = true;
	return SLUICE_TARGET_OK;
}

/* engine_row_bytes counts the bytes of row data of a change, for --group-bytes. */
static uint64_t
engine_row_bytes(const sluice_record *rec)
{
	const Sluice__V1__Row *rows[2] = {NULL, NULL};
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_INSERT:
		rows[0] = rec->insert->new_row;
		break;
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
		rows[0] = rec->snapshot_row->row;
		break;
	case SLUICE__V1__RECORD__BODY_UPDATE:
		rows[0] = rec->update->new_row;
		rows[1] = rec->update->old_row;
		break;
	default:
		rows[0] = rec->delete_->old_row;
	}
	uint64_t n = 0;
	for (int r = 0; r < 2; r++)
		for (size_t i = 0; rows[r] != NULL && i < rows[r]->n_values; i++)
			n += rows[r]->values[i].len + 1;
	return n;
}

/* engine_change routes one row change of the stream. */
static sluice_target_status
engine_change(sluice_apply_ctx *e, const sluice_reader *reader, const sluice_record *rec)
{
	uint32_t relid = 0;
	char op;
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_INSERT:
		relid = rec->insert->relation_id;
		op = 'I';
		break;
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
		relid = rec->snapshot_row->relation_id;
		op = 'I';
		break;
	case SLUICE__V1__RECORD__BODY_UPDATE:
		relid = rec->update->relation_id;
		op = 'U';
		break;
	default:
		relid = rec->delete_->relation_id;
		op = 'D';
	}
	uint32_t ri;
	bool wanted;
	sluice_target_status st = engine_rel_ready(e, reader, relid, &ri, &wanted);
	if (st != SLUICE_TARGET_OK)
		return st;
	if (!wanted) {
		e->stats->skipped++;
		return SLUICE_TARGET_OK;
	}
	if (e->txn_grouped)
		e->group_bytes += engine_row_bytes(rec);
	if (e->o->rate != NULL)
		sluice_rate_take(e->o->rate, 1,
				 e->o->rate->bytes_per_s ? sluice__v1__record__get_packed_size(rec)
							 : 0,
				 e->o->stop);
	return e->t->ops->change(e->t, ri, op, rec);
}

/* engine_truncate empties the included tables (replace and timestamp; append keeps data). */
static sluice_target_status
engine_truncate(sluice_apply_ctx *e, const sluice_reader *reader, const Sluice__V1__Truncate *tr)
{
	if (e->o->strategy == SLUICE_STRATEGY_APPEND) {
		e->stats->skipped++;
		return SLUICE_TARGET_OK;
	}
	uint32_t *ris = calloc(tr->n_relation_ids + 1, sizeof(uint32_t));
	if (ris == NULL)
		abort();
	size_t n = 0;
	sluice_target_status st = SLUICE_TARGET_OK;
	for (size_t i = 0; st == SLUICE_TARGET_OK && i < tr->n_relation_ids; i++) {
		if (sluice_reader_relation(reader, tr->relation_ids[i]) == NULL)
			continue;
		uint32_t ri;
		bool wanted;
		st = engine_rel_ready(e, reader, tr->relation_ids[i], &ri, &wanted);
		if (st == SLUICE_TARGET_OK && wanted)
			ris[n++] = ri;
	}
	if (st == SLUICE_TARGET_OK && n > 0) {
		st = e->t->ops->truncate(e->t, ris, n,
					 tr->has_restart_identity && tr->restart_identity,
					 tr->has_cascade && tr->cascade);
		e->stats->truncates++;
	}
	free(ris);
	return st;
}

/*
 * engine_namespace_change passes a MongoDB drop, rename or dropDatabase to
 * the target when the filters take its namespace, or counts it as skipped.
 * A rename out of the namespaces the filters take is a drop there; a rename
 * into them brings documents the target never received: apply warns (a new
 * snapshot is needed for them) and skips it.
 */
static sluice_target_status
engine_namespace_change(sluice_apply_ctx *e, const Sluice__V1__NamespaceChange *nc)
{
	const char *db = nc->database ? nc->database : "";
	const char *coll = nc->collection ? nc->collection : "";
	bool wanted = e->t->ops->namespace_change != NULL && db[0] != '\0' &&
		      strcmp(db, SLUICE_APPLY_LOCAL_SPACE) != 0;
	if (wanted && coll[0] != '\0')
		wanted = sluice_filter_match(&e->o->filter, db, coll);
	const char *op = nc->operation ? nc->operation : "";
	if (strcmp(op, "rename") == 0 && e->t->ops->namespace_change != NULL && nc->to_database &&
	    nc->to_collection) {
		bool to_wanted =
			strcmp(nc->to_database, SLUICE_APPLY_LOCAL_SPACE) != 0 &&
			sluice_filter_match(&e->o->filter, nc->to_database, nc->to_collection);
		if (wanted && !to_wanted) {
			Sluice__V1__NamespaceChange drop = *nc;
			drop.operation = (char *)"drop";
			drop.to_database = drop.to_collection = NULL;
			return e->t->ops->namespace_change(e->t, &drop);
		}
		if (!wanted && to_wanted)
			sluice_log_warn("txseq %" PRIu64 ": %s.%s was renamed to %s.%s, which the "
					"filters take: its documents are not on the target (take "
					"a new snapshot to have them)",
					e->txn.txseq, db, coll, nc->to_database, nc->to_collection);
	}
	if (!wanted) {
		e->stats->skipped++;
		return SLUICE_TARGET_OK;
	}
	return e->t->ops->namespace_change(e->t, nc);
}

/* ---- transactions ------------------------------------------------------------- */

/*
 * engine_joins tells whether transaction txseq goes into the open group:
 * within its limits, not a snapshot, not to be applied one at a time.
 */
static bool
engine_joins(const sluice_apply_ctx *e, uint64_t txseq, bool snapshot)
{
	const sluice_apply_options *o = e->o;
	return e->group_open && !snapshot && txseq != e->alone_txseq &&
	       txseq > e->ungroup_through && e->group_txns < o->group_size &&
	       e->group_bytes < o->group_bytes &&
	       sluice_clock_mono_ms() - e->group_start_ms < o->group_ms;
}

/* engine_group_commit commits the open group (complete transactions only). */
static sluice_target_status
engine_group_commit(sluice_apply_ctx *e)
{
	e->group_open = false;
	e->txn_grouped = false;
	return e->t->ops->commit(e->t);
}

/* engine_group_full tells whether the group ends with the transaction just completed. */
static bool
engine_group_full(const sluice_apply_ctx *e)
{
	const sluice_apply_options *o = e->o;
	int64_t now = sluice_clock_mono_ms();
	if (e->group_end || e->group_txns >= o->group_size || e->group_bytes >= o->group_bytes ||
	    now - e->group_start_ms >= o->group_ms)
		return true;
	/*
	 * Following a live stream (it had nothing more within the last second),
	 * a group ends where the frame it began in ends: when frames arrive in a
	 * burst, the first transactions of the burst then commit without waiting
	 * for the whole burst to be read and folded. Catching up, groups span
	 * frames.
	 */
	return e->reader != NULL && e->last_wait_ms != 0 && now - e->last_wait_ms < 1000 &&
	       sluice_reader_position_get(e->reader)->frame_seq != e->group_frame;
}

/*
 * engine_begin starts transaction txseq: in the open group (engine_joins
 * decided it), or in a target transaction of its own, grouped when
 * grouping is on and it is neither a snapshot nor to be applied alone.
 */
static sluice_target_status
engine_begin(sluice_apply_ctx *e, uint64_t txseq, int64_t commit_us, const char *node,
	     bool snapshot)
{
	if (e->expect_txseq != 0 && txseq != e->expect_txseq) {
		sluice_log_error("txseq gap: the target has applied up to txseq %" PRIu64
				 " but the stream continues at %" PRIu64,
				 e->expect_txseq - 1, txseq);
		e->stats->refused = true;
		e->t->failure = (sluice_target_failure){.cause = -1};
		return SLUICE_TARGET_FAILED;
	}
	e->expect_txseq = txseq + 1;
	uint32_t ni = 0;
	while (ni < e->nnodes && strcmp(e->nodes[ni], node) != 0)
		ni++;
	if (ni == e->nnodes) {
		char **p = realloc(e->nodes, (e->nnodes + 1) * sizeof(*p));
		if (p == NULL)
			abort();
		e->nodes = p;
		e->nodes[e->nnodes++] = engine_strdup(node);
	}
	e->txn = (sluice_apply_txn){
		.txseq = txseq, .commit_us = commit_us, .node = e->nodes[ni], .node_index = ni};
	size_t slot = txseq % (sizeof(e->begun) / sizeof(e->begun[0]));
	e->begun[slot].txseq = txseq;
	e->begun[slot].commit_us = commit_us;
	e->in_txn = true;
	int64_t now_us = sluice_clock_unix_us();
	if (commit_us - now_us > e->o->clock_skew_tolerance_us) {
		e->stats->clock_skew_warnings++;
		sluice_log_warn("txseq %" PRIu64 " from node \"%s\" was committed %.3f s in this "
				"node's future: clocks disagree (run NTP on every node)",
				txseq, node, (double)(commit_us - now_us) / 1e6);
	}
	if (e->group_open) {
		e->group_open = false; /* a transaction is in progress in it */
		e->txn.grouped = true;
		return e->t->ops->join(e->t, &e->txn);
	}
	e->txn.grouped = e->grouping && !snapshot && txseq > e->ungroup_through;
	e->txn_grouped = e->txn.grouped;
	if (e->txn_grouped) {
		e->group_first = txseq;
		e->group_txns = 0;
		e->group_bytes = 0;
		e->group_start_ms = sluice_clock_mono_ms();
		e->group_frame =
			e->reader != NULL ? sluice_reader_position_get(e->reader)->frame_seq : 0;
		e->group_end = false;
	}
	return e->t->ops->begin(e->t, &e->txn);
}

/*
 * engine_rollback abandons the open transaction (rewind, stop, refused
 * stream, a failure). It was not applied: it is the transaction expected
 * next (a restarted writer writes a cut one again with the same txseq), and
 * the counters return to the last confirmed commit (a dry run keeps what it
 * counted: nothing commits there).
 */
static sluice_target_status
engine_rollback(sluice_apply_ctx *e, bool after_failure)
{
	if (e->in_txn)
		e->expect_txseq = e->txn.txseq;
	if (e->txn_grouped)
		e->expect_txseq = e->group_first; /* the whole group is rolled back */
	e->in_txn = false;
	e->txn_grouped = false;
	e->group_open = false;
	sluice_target_status st = e->t->ops->rollback(e->t, after_failure);
	if (!e->o->dry_run)
		engine_restore(e);
	return st;
}

static sluice_target_status
engine_commit(sluice_apply_ctx *e)
{
	e->in_txn = false;
	sluice_target_status st = e->t->ops->commit(e->t);
	if (st == SLUICE_TARGET_OK && e->o->dry_run)
		engine_count_txn(e, e->txn.txseq); /* nothing commits: counted as queued */
	return st;
}

/* ---- failures ------------------------------------------------------------------- */

static void
engine_log_counters(const sluice_apply_ctx *e, const char *what)
{
	const sluice_apply_stats *s = e->stats;
	char conflicts[512] = "";
	size_t n = 0;
	for (int c = 0; c < SLUICE_CONFLICT_COUNT; c++)
		if (s->conflicts[c] && n < sizeof(conflicts))
			n += (size_t)snprintf(
				conflicts + n, sizeof(conflicts) - n, "%s%s=%" PRIu64, n ? " " : "",
				sluice_conflict_name((sluice_conflict)c), s->conflicts[c]);
	char retries[256] = "";
	size_t nr = 0;
	for (int c = 0; c < SLUICE_RETRY_COUNT; c++)
		if (s->retries[c] && nr < sizeof(retries))
			nr += (size_t)snprintf(retries + nr, sizeof(retries) - nr, "%s%s=%" PRIu64,
					       nr ? " " : "", retry_names[c], s->retries[c]);
	sluice_log_info("%s: %" PRIu64 " transactions (txseq %" PRIu64 "..%" PRIu64 "), %" PRIu64
			" inserts, %" PRIu64 " updates, %" PRIu64 " deletes, %" PRIu64
			" truncates, %" PRIu64 " skipped; retries: %s; conflicts: %s",
			what, s->transactions, s->first_txseq, s->last_txseq, s->inserts,
			s->updates, s->deletes, s->truncates, s->skipped, nr ? retries : "none",
			n ? conflicts : "none");
}

typedef enum apply_outcome {
	APPLY_DONE,    /* caught up, bound reached, or stopped */
	APPLY_RETRY,   /* lost the target: reconnect */
	APPLY_RESUME,  /* apply again from the target's progress */
	APPLY_FAILED,  /* the target refused a change, or a schema mismatch */
	APPLY_REFUSED, /* the stream failed verification */
} apply_outcome;

/* engine_describe_failure names the change a failure belongs to. */
static void
engine_describe_failure(const sluice_apply_ctx *e, char *out, size_t size)
{
	const sluice_target_failure *f = &e->t->failure;
	uint64_t txseq = f->txseq ? f->txseq : e->txn.txseq;
	const char *what = f->op == 'I'   ? "insert"
			   : f->op == 'U' ? "update"
			   : f->op == 'D' ? "delete"
					  : NULL;
	if (what != NULL && f->rel < e->nrels)
		snprintf(out, size, "txseq %" PRIu64 " (%s of %s)", txseq, what,
			 e->rels[f->rel].label);
	else
		snprintf(out, size, "txseq %" PRIu64, txseq);
}

/*
 * engine_abandon rolls back what failed (and what was queued after it) so
 * that it is applied again from the target's progress.
 */
static apply_outcome
engine_abandon(sluice_apply_ctx *e)
{
	e->done = false; /* a bound reached past the failure is reached again */
	sluice_target_status st = engine_rollback(e, true);
	if (st != SLUICE_TARGET_OK) {
		sluice_log_error("could not roll back on the target: %s", e->t->failure.message);
		return st == SLUICE_TARGET_LOST ? APPLY_RETRY : APPLY_FAILED;
	}
	return APPLY_RESUME;
}

/*
 * engine_retry rolls back after a transient failure (deadlock, serialization
 * failure, lock timeout, cancelled statement, server shutting down) and
 * applies the same transaction again from the target's progress after a
 * capped, jittered backoff. A transaction is never skipped: one that keeps
 * failing is reported loudly every --retry-report seconds and still retried.
 */
static apply_outcome
engine_retry(sluice_apply_ctx *e)
{
	const sluice_target_failure *f = &e->t->failure;
	int cause =
		f->cause >= 0 && f->cause < SLUICE_RETRY_COUNT ? f->cause : SLUICE_RETRY_CONNECTION;
	uint64_t failed = f->txseq ? f->txseq : e->txn.txseq;
	char what[700];
	engine_describe_failure(e, what, sizeof(what));
	int64_t now = sluice_clock_mono_ms();
	if (failed != e->retry_txseq || e->retry_attempts == 0) {
		e->retry_txseq = failed;
		e->retry_attempts = 0;
		e->retry_since_ms = now;
		e->retry_report_ms = now + e->o->retry_report_s * 1000;
	}
	e->retry_attempts++;
	int delay = sluice_backoff_ms(e->retry_attempts, 20, 5000);
	sluice_log_warn("%s failed on the target with %s %s (%s), transient: rolled back, "
			"applying it again in %d ms (attempt %d): %s",
			what, e->t->ops->code_name, f->code,
			sluice_retry_cause_name((sluice_retry_cause)cause), delay,
			e->retry_attempts, f->message);
	if (now >= e->retry_report_ms) {
		sluice_log_error("txseq %" PRIu64 " has failed transiently for %" PRId64
				 " s (%d attempts, last %s %s): still retrying; look for "
				 "what holds its rows on the target",
				 failed, (now - e->retry_since_ms) / 1000, e->retry_attempts,
				 e->t->ops->code_name, f->code);
		e->retry_report_ms = now + e->o->retry_report_s * 1000;
	}
	apply_outcome out = engine_abandon(e);
	if (out != APPLY_RESUME)
		return out;
	/* A dry run starts over from the target's progress: forget what it counted. */
	if (e->o->dry_run)
		engine_restore(e);
	e->stats->retries[cause]++;
	e->exists_txseq = 0;
	sluice_sleep_ms(delay, e->o->stop);
	return APPLY_RESUME;
}

/*
 * engine_split rolls back a grouped transaction that failed for a reason
 * other than a transient one (a row not where the source had it, a unique
 * violation from writing the net change in another order, a trigger, ...):
 * its source transactions, and any begun after it, are applied again one
 * at a time, with the conflict handling of ungrouped apply.
 */
static apply_outcome
engine_split(sluice_apply_ctx *e)
{
	sluice_target_failure *f = &e->t->failure;
	char what[700];
	engine_describe_failure(e, what, sizeof(what));
	/* The failed statement holds changes of transactions up to its own. */
	uint64_t through = f->txseq ? f->txseq : e->txn.txseq;
	sluice_log_info("grouped apply stopped at %s: %s%s%s%s; applying the transactions "
			"up to txseq %" PRIu64 " again one at a time",
			what, f->message[0] ? f->message : "failed", f->code[0] ? " (" : "",
			f->code[0] ? f->code : "", f->code[0] ? ")" : "", through);
	f->message[0] = '\0';
	if (through > e->ungroup_through)
		e->ungroup_through = through;
	return engine_abandon(e);
}

/*
 * engine_failed decides what follows a failed target operation: reconnect,
 * apply again from the target's progress (one at a time, after a grouped
 * transaction failed), or stop.
 */
static apply_outcome
engine_failed(sluice_apply_ctx *e, sluice_target_status st)
{
	sluice_target_failure *f = &e->t->failure;
	if (e->grouping && st != SLUICE_TARGET_LOST && st != SLUICE_TARGET_RETRY &&
	    (f->txseq ? f->txseq : e->txn.txseq) > e->ungroup_through)
		return engine_split(e);
	if (st == SLUICE_TARGET_EXISTS) {
		uint64_t failed = f->txseq ? f->txseq : e->txn.txseq;
		sluice_log_info("txseq %" PRIu64 ": a row it inserts exists on the target; "
				"applying it again with conflict handling",
				failed);
		apply_outcome out = engine_abandon(e);
		if (out == APPLY_RESUME)
			e->exists_txseq = failed;
		return out;
	}
	if (st == SLUICE_TARGET_RETRY)
		return engine_retry(e);
	bool lost = st == SLUICE_TARGET_LOST;
	char what[700];
	engine_describe_failure(e, what, sizeof(what));
	if (lost)
		sluice_log_warn("lost the target while applying %s: %s", what, f->message);
	else if (f->message[0]) {
		char code[64] = "";
		if (f->code[0])
			snprintf(code, sizeof(code), " (%s %s)", e->t->ops->code_name, f->code);
		sluice_log_error("could not apply %s on the target: %s%s", what, f->message, code);
	}
	f->message[0] = '\0';
	if (lost) {
		/* gone with the connection: nothing to roll back there */
		if (e->in_txn)
			e->expect_txseq = e->txn.txseq;
		e->in_txn = false;
	} else if (e->in_txn)
		engine_rollback(e, false);
	else if (!e->o->dry_run)
		engine_restore(e); /* a refused commit or flush: what it held did not commit */
	return lost ? APPLY_RETRY : APPLY_FAILED;
}

/* ---- the stream ------------------------------------------------------------------ */

/* engine_past_bound tells whether a transaction starting now lies past --until-*. */
static bool
engine_past_bound(const sluice_apply_ctx *e, uint64_t txseq, int64_t time_us, uint64_t lsn)
{
	const sluice_apply_options *o = e->o;
	if (o->until_txseq && txseq > o->until_txseq)
		return true;
	if (o->until_time_us && time_us > o->until_time_us)
		return true;
	if (o->until_lsn && lsn > o->until_lsn)
		return true;
	return false;
}

static apply_outcome
engine_stream(sluice_apply_ctx *e, sluice_store *store, const sluice_trust *trust, uint64_t resume)
{
	sluice_target *t = e->t;
	sluice_reader *reader = NULL;
	apply_outcome out = APPLY_FAILED;
	if (!sluice_reader_open(store, e->o->stream, trust, resume + 1, &reader))
		return APPLY_FAILED;
	e->expect_txseq = resume + 1;
	e->last_log_ms = sluice_clock_mono_ms();
	e->reader = reader;
	for (;;) {
		sluice_target_status st = SLUICE_TARGET_OK;
		engine_report(e, false);
		if (*e->o->stop) {
			if (e->in_txn)
				engine_rollback(e, false);
			else if (e->group_open)
				st = engine_group_commit(e); /* complete transactions: a boundary */
			if (st == SLUICE_TARGET_OK)
				st = t->ops->flush(t);
			if (st != SLUICE_TARGET_OK)
				engine_failed(e, st);
			sluice_log_info("stopping on signal");
			out = APPLY_DONE;
			break;
		}
		const sluice_record *rec = NULL;
		sluice_reader_status rs = sluice_reader_next(reader, &rec);
		if (rs == SLUICE_READER_ERROR) {
			/* Nothing of the bad frame was applied: its transaction is rolled back;
			 * what was sent before it is read back, so the exit reports it. */
			if (e->in_txn && e->txn_grouped && e->group_txns > 0) {
				/* Commit the complete transactions before it first. */
				engine_rollback(e, false);
				e->alone_txseq = e->txn.txseq;
				out = APPLY_RESUME;
				break;
			}
			if (e->in_txn) {
				engine_rollback(e, false);
			} else {
				if (e->group_open)
					st = engine_group_commit(e);
				if (st == SLUICE_TARGET_OK)
					st = t->ops->flush(t);
				if (st != SLUICE_TARGET_OK)
					engine_failed(e, st);
			}
			e->stats->refused = true;
			sluice_log_error("refusing stream \"%s\": %s", e->o->stream,
					 sluice_reader_error(reader));
			out = APPLY_REFUSED;
			break;
		}
		if (rs == SLUICE_READER_REWIND) {
			/*
			 * The rollback also reads back what was queued before the cut
			 * transaction: if one of those failed, going on would let later
			 * transactions commit past it.
			 */
			bool group = e->in_txn && e->txn_grouped && e->group_txns > 0;
			if (e->in_txn && (st = engine_rollback(e, false)) != SLUICE_TARGET_OK) {
				out = engine_failed(e, st);
				break;
			}
			if (group) {
				/* The group's complete transactions went with it: read them
				 * again, and the cut one after them in a group of its own. */
				e->alone_txseq = e->txn.txseq;
				out = APPLY_RESUME;
				break;
			}
			continue;
		}
		if (rs == SLUICE_READER_WAIT) {
			e->last_wait_ms = sluice_clock_mono_ms();
			if (!e->in_txn && e->group_open &&
			    (st = engine_group_commit(e)) != SLUICE_TARGET_OK) {
				out = engine_failed(e, st);
				break;
			}
			if (!e->in_txn && (st = t->ops->flush(t)) != SLUICE_TARGET_OK) {
				out = engine_failed(e, st);
				break;
			}
			if (!e->o->follow) {
				bool group = e->in_txn && e->txn_grouped && e->group_txns > 0;
				if (e->in_txn)
					engine_rollback(
						e, false); /* an unfinished tail is not applied */
				if (group) {
					/* ... but the complete transactions of its group are */
					e->alone_txseq = e->txn.txseq;
					out = APPLY_RESUME;
					break;
				}
				out = APPLY_DONE;
				break;
			}
			sluice_reader_wait(reader, 1000);
			if (sluice_clock_mono_ms() - e->last_log_ms >= 10000) {
				engine_log_counters(e, "apply");
				e->last_log_ms = sluice_clock_mono_ms();
			}
			continue;
		}
		switch (rec->body_case) {
		case SLUICE__V1__RECORD__BODY_RELATION:
			/* A relation (re)described ends the group: before it, or after its
			 * transaction. */
			if (!e->in_txn && e->group_open)
				st = engine_group_commit(e);
			else if (e->txn_grouped)
				e->group_end = true;
			for (size_t i = 0; st == SLUICE_TARGET_OK && i < e->nrels; i++)
				if (e->rels[i].id == rec->relation->id)
					engine_relation(e, (uint32_t)i, rec->relation);
			break;
		case SLUICE__V1__RECORD__BODY_BEGIN: {
			const Sluice__V1__Begin *b = rec->begin;
			if (engine_past_bound(e, b->txseq, b->commit_time_us,
					      b->has_source_lsn ? b->source_lsn : 0)) {
				e->done = true;
				break;
			}
			if (e->group_open && !engine_joins(e, b->txseq, false))
				st = engine_group_commit(e);
			if (st == SLUICE_TARGET_OK)
				st = engine_begin(e, b->txseq, b->commit_time_us, b->origin_node,
						  false);
			break;
		}
		case SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN: {
			const Sluice__V1__SnapshotBegin *b = rec->snapshot_begin;
			if (engine_past_bound(e, b->txseq, b->time_us,
					      b->has_consistent_lsn ? b->consistent_lsn : 0)) {
				e->done = true;
				break;
			}
			if (e->group_open)
				st = engine_group_commit(e);
			if (st == SLUICE_TARGET_OK)
				st = engine_begin(e, b->txseq, b->time_us, b->origin_node, true);
			break;
		}
		case SLUICE__V1__RECORD__BODY_INSERT:
		case SLUICE__V1__RECORD__BODY_UPDATE:
		case SLUICE__V1__RECORD__BODY_DELETE:
		case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
			if (e->in_txn)
				st = engine_change(e, reader, rec);
			break;
		case SLUICE__V1__RECORD__BODY_TRUNCATE:
			if (e->in_txn) {
				e->group_end = true; /* truncates end a group */
				st = engine_truncate(e, reader, rec->truncate);
			}
			break;
		case SLUICE__V1__RECORD__BODY_NAMESPACE_CHANGE:
			if (e->in_txn) {
				e->group_end = true;
				st = engine_namespace_change(e, rec->namespace_change);
			}
			break;
		case SLUICE__V1__RECORD__BODY_COMMIT:
		case SLUICE__V1__RECORD__BODY_SNAPSHOT_END:
			if (e->in_txn && e->txn_grouped) {
				/* complete: the group takes more, or commits */
				e->in_txn = false;
				e->group_open = true;
				e->group_txns++;
				if (engine_group_full(e))
					st = engine_group_commit(e);
			} else if (e->in_txn)
				st = engine_commit(e);
			break;
		case SLUICE__V1__RECORD__BODY_HEARTBEAT:
			if (rec->heartbeat->time_us > e->stats->heartbeat_us)
				e->stats->heartbeat_us = rec->heartbeat->time_us;
			break;
		default:
			break;
		}
		if (st != SLUICE_TARGET_OK) {
			out = engine_failed(e, st);
			break;
		}
		if (e->done) {
			if (e->group_open)
				st = engine_group_commit(e);
			if (st == SLUICE_TARGET_OK)
				st = t->ops->flush(t);
			out = st == SLUICE_TARGET_OK ? APPLY_DONE : engine_failed(e, st);
			break;
		}
	}
	sluice_reader_counters rc;
	sluice_reader_counters_get(reader, &rc);
	e->base_frames += rc.frames;
	e->base_bytes += rc.bytes;
	if (rc.head_txseq > e->stats->head_txseq)
		e->stats->head_txseq = rc.head_txseq;
	e->reader = NULL;
	sluice_reader_close(reader);
	return out;
}

/* engine_target makes the target the URI names. */
static sluice_target *
engine_target(sluice_apply_ctx *e)
{
	const char *uri = e->o->target;
	if (strncmp(uri, "mongodb://", 10) == 0 || strncmp(uri, "mongodb+srv://", 14) == 0)
		return sluice_mongo_target_create(e);
	return sluice_pg_target_create(e);
}

static void
engine_free(sluice_apply_ctx *e)
{
	if (e->t != NULL)
		e->t->ops->free(e->t);
	for (size_t i = 0; i < e->nrels; i++) {
		free(e->rels[i].space);
		free(e->rels[i].name);
		free(e->rels[i].label);
	}
	free(e->rels);
	for (uint32_t i = 0; i < e->nnodes; i++)
		free(e->nodes[i]);
	free(e->nodes);
}

static sluice_target *
engine_target_of_uri(sluice_apply_ctx *e, void *arg)
{
	(void)arg;
	return engine_target(e);
}

bool
sluice_apply_run(sluice_store *store, const sluice_trust *trust, const sluice_apply_options *o,
		 sluice_apply_stats *stats)
{
	return sluice_apply_run_target(store, trust, o, stats, engine_target_of_uri, NULL);
}

bool
sluice_apply_progress_read(const sluice_apply_options *o, uint64_t *txseq, bool *found)
{
	const char *uri = o->target;
	if (strncmp(uri, "mongodb://", 10) == 0 || strncmp(uri, "mongodb+srv://", 14) == 0)
		return sluice_mongo_target_progress_read(o, txseq, found);
	return sluice_pg_target_progress_read(o, txseq, found);
}

bool
sluice_apply_run_target(sluice_store *store, const sluice_trust *trust,
			const sluice_apply_options *o, sluice_apply_stats *stats,
			sluice_target *(*make)(sluice_apply_ctx *ctx, void *arg), void *arg)
{
	sluice_apply_ctx e;
	memset(&e, 0, sizeof(e));
	memset(stats, 0, sizeof(*stats));
	e.o = o;
	e.stats = stats;
	e.t = make(&e, arg);
	if (e.t == NULL)
		return false;
	sluice_target *t = e.t;
	bool ok = false;
	int attempt = 0;
	bool connected_once = false;
	for (;;) {
		uint64_t resume = 0;
		t->failure = (sluice_target_failure){.cause = -1};
		sluice_target_status st = t->ops->open(t, &resume);
		if (st == SLUICE_TARGET_OK) {
			if (!connected_once)
				stats->resumed_after = resume;
			stats->connected = true;
			e.grouping = o->group_size > 1 && !o->dry_run && t->groups &&
				     t->ops->join != NULL;
			if (resume > stats->applied_txseq)
				stats->applied_txseq = resume;
			engine_report(&e, true);
			connected_once = true;
			sluice_log_info("applying stream \"%s\" from txseq %" PRIu64
					" (%s strategy%s)",
					o->stream, resume + 1, sluice_strategy_name(o->strategy),
					o->dry_run ? ", dry run: nothing is committed" : "");
			attempt = 0;
			apply_outcome out = engine_stream(&e, store, trust, resume);
			while (out == APPLY_RESUME) {
				st = t->ops->progress(t, &resume);
				if (st != SLUICE_TARGET_OK) {
					out = st == SLUICE_TARGET_LOST ? APPLY_RETRY : APPLY_FAILED;
					break;
				}
				if (e.exists_txseq != 0 && resume >= e.exists_txseq) {
					/* cannot happen: the failed transaction would be committed
					 */
					sluice_log_error("txseq %" PRIu64
							 " failed but the target's "
							 "progress is %" PRIu64,
							 e.exists_txseq, resume);
					out = APPLY_FAILED;
					break;
				}
				out = engine_stream(&e, store, trust, resume);
			}
			if (out == APPLY_DONE) {
				if (o->dry_run)
					engine_rollback(&e,
							false); /* the dry run's one transaction */
				ok = true;
				break;
			}
			if (out != APPLY_RETRY)
				break;
		} else if (st == SLUICE_TARGET_FAILED ||
			   (st == SLUICE_TARGET_LOST && !connected_once && attempt == 0) ||
			   (st == SLUICE_TARGET_BUSY && attempt >= 6)) {
			if (st == SLUICE_TARGET_BUSY)
				sluice_log_error("%s stayed in use: is another apply running for "
						 "stream \"%s\"?",
						 t->ops->progress_name(t), o->stream);
			break;
		}
		/* Lost the target: start over from its progress. */
		stats->connected = false;
		engine_restore(&e);
		t->ops->close(t);
		e.in_txn = false;
		e.txn_grouped = false;
		e.group_open = false;
		for (size_t i = 0; i < e.nrels; i++)
			e.rels[i].checked = false;
		attempt++;
		int cause = t->failure.cause;
		stats->retries[cause >= 0 && cause < SLUICE_RETRY_COUNT
				       ? cause
				       : SLUICE_RETRY_CONNECTION]++;
		int delay = sluice_backoff_ms(attempt, 500, 16000);
		sluice_log_warn("lost the target; reconnecting in %d ms (attempt %d)", delay,
				attempt);
		engine_report(&e, true);
		sluice_sleep_ms(delay, o->stop);
		if (*o->stop) {
			ok = true;
			break;
		}
	}
	engine_log_counters(&e, o->dry_run ? "dry run (nothing committed)" : "apply");
	stats->connected = false;
	engine_report(&e, true);
	engine_free(&e);
	return ok;
}
