/*
 * Unit tests of the apply engine's decisions (apply/engine.c), driven by a
 * scripted fake target through sluice_apply_run_target: no database needed.
 * The fake keeps an in-memory model of what a real target would hold (its
 * progress, the transactions it committed and their changes, the open
 * transaction) and fails where its script says.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "target.h"

#define NTXN     5
#define MAX_TXN  64
#define REL_NAME "public.items"

/* rows_of: the number of rows of transaction txseq in the test stream (2..4). */
static size_t
rows_of(uint64_t txseq)
{
	return 2 + (size_t)(txseq % 3);
}

static uint64_t
rows_through(uint64_t from, uint64_t to)
{
	uint64_t n = 0;
	for (uint64_t x = from; x <= to; x++)
		n += rows_of(x);
	return n;
}

/* change_call: the number of the change() call (1, 2, ...) of row idx of txseq in a clean run. */
static int
change_call(uint64_t txseq, size_t idx)
{
	return (int)(rows_through(1, txseq - 1) + idx + 1);
}

/* ---- the fake target ------------------------------------------------------ */

/* The script: each failure fires once (open: busy_opens times) and is then spent. */
typedef struct fake_script {
	int change_at;                  /* the k-th call of change() fails; 0: none */
	sluice_target_status change_st; /* with this status */
	int change_cause;               /* failure.cause of a RETRY */
	int commit_at;                  /* the k-th call of commit() fails; 0: none */
	sluice_target_status commit_st; /* with this status */
	int commit_cause;               /* failure.cause of a RETRY */
	int busy_opens;                 /* open() returns BUSY this many times first */
	bool check_fails;               /* check() returns FAILED */
} fake_script;

typedef struct fake {
	fake_script script;
	sluice_apply_ctx *ctx;
	bool dry_run;
	bool groups; /* the fake takes grouped transactions (join) */

	/* the target's model */
	bool connected;
	uint64_t progress;           /* committed progress: last txseq applied */
	uint64_t committed[MAX_TXN]; /* txseqs committed, in order */
	uint32_t committed_changes[MAX_TXN];
	size_t ncommitted;
	bool in_txn;
	uint64_t txseq;        /* of the open transaction */
	uint32_t open_changes; /* changes of the open transaction, dropped on rollback */
	bool grouped;          /* the open transaction is a group: group_first..txseq */
	uint64_t group_first;
	uint32_t changes_of[MAX_TXN]; /* changes of each transaction in the open one */
	uint32_t dry_changes; /* a dry run: changes of its one never-committed transaction */

	/* calls */
	int opens, busy_returned, closes, frees, progress_calls, progress_name_calls;
	int relations, checks, begins, changes, commits, rollbacks, flushes, truncates;
	int begins_of[MAX_TXN];                          /* per txseq */
	int joins, joins_of[MAX_TXN], alone_of[MAX_TXN]; /* joined, begun not grouped */
} fake;

typedef struct fake_target {
	sluice_target base;
	fake *f;
} fake_target;

static fake *
F(sluice_target *t)
{
	return ((fake_target *)t)->f;
}

static sluice_target_status
fake_fail(sluice_target *t, sluice_target_status st, int cause, const char *code, const char *msg)
{
	fake *f = F(t);
	t->failure = (sluice_target_failure){.cause = cause};
	t->failure.txseq = st == SLUICE_TARGET_EXISTS ? f->txseq : 0;
	snprintf(t->failure.code, sizeof(t->failure.code), "%s", code);
	snprintf(t->failure.message, sizeof(t->failure.message), "%s", msg);
	return st;
}

/* fake_drop abandons the open transaction: none of its changes stay. */
static void
fake_drop(fake *f)
{
	f->in_txn = false;
	f->open_changes = 0;
	f->grouped = false;
	memset(f->changes_of, 0, sizeof(f->changes_of));
}

static sluice_target_status
fake_open(sluice_target *t, uint64_t *resume)
{
	fake *f = F(t);
	f->opens++;
	assert_false(f->connected);
	if (f->busy_returned < f->script.busy_opens) {
		f->busy_returned++;
		return fake_fail(t, SLUICE_TARGET_BUSY, -1, "55006", "progress held elsewhere");
	}
	f->connected = true;
	*resume = f->progress;
	return SLUICE_TARGET_OK;
}

static sluice_target_status
fake_progress(sluice_target *t, uint64_t *resume)
{
	fake *f = F(t);
	f->progress_calls++;
	assert_true(f->connected);
	assert_false(f->in_txn);
	*resume = f->progress;
	return SLUICE_TARGET_OK;
}

static const char *
fake_progress_name(const sluice_target *t)
{
	((const fake_target *)t)->f->progress_name_calls++;
	return "fake progress";
}

static void
fake_relation(sluice_target *t, uint32_t ri, const Sluice__V1__Relation *desc)
{
	fake *f = F(t);
	f->relations++;
	assert_int_equal(ri, 0);
	assert_int_equal(desc->id, TU_REL_ID);
}

static sluice_target_status
fake_check(sluice_target *t, uint32_t ri, const Sluice__V1__Relation *desc)
{
	fake *f = F(t);
	f->checks++;
	assert_true(f->connected);
	assert_int_equal(desc->id, TU_REL_ID);
	const sluice_apply_rel *r = sluice_apply_rel_at(f->ctx, ri);
	assert_non_null(r);
	assert_string_equal(r->label, REL_NAME);
	assert_true(r->included);
	if (f->script.check_fails)
		return fake_fail(t, SLUICE_TARGET_FAILED, -1, "42703", "column \"bio\" is missing");
	return SLUICE_TARGET_OK;
}

static sluice_target_status
fake_begin(sluice_target *t, const sluice_apply_txn *txn)
{
	fake *f = F(t);
	f->begins++;
	assert_true(f->connected);
	assert_false(f->in_txn);
	assert_true(txn->txseq > 0 && txn->txseq < MAX_TXN);
	if (!f->dry_run) /* transactions come in order, right after the progress */
		assert_int_equal(txn->txseq, f->progress + 1);
	assert_string_equal(txn->node, "node-a");
	f->begins_of[txn->txseq]++;
	if (!txn->grouped)
		f->alone_of[txn->txseq]++;
	assert_true(!txn->grouped || f->groups);
	f->in_txn = true;
	f->txseq = txn->txseq;
	f->open_changes = 0;
	f->grouped = txn->grouped;
	f->group_first = txn->txseq;
	return SLUICE_TARGET_OK;
}

static sluice_target_status
fake_join(sluice_target *t, const sluice_apply_txn *txn)
{
	fake *f = F(t);
	f->joins++;
	assert_true(f->connected);
	assert_true(f->in_txn && f->grouped);
	assert_true(txn->grouped);
	assert_int_equal(txn->txseq, f->txseq + 1);
	assert_true(txn->txseq < MAX_TXN);
	f->joins_of[txn->txseq]++;
	f->txseq = txn->txseq;
	return SLUICE_TARGET_OK;
}

static sluice_target_status
fake_change(sluice_target *t, uint32_t ri, char op, const sluice_record *rec)
{
	fake *f = F(t);
	f->changes++;
	assert_true(f->connected);
	assert_true(f->in_txn);
	assert_int_equal(op, 'I');
	assert_int_equal(rec->body_case, SLUICE__V1__RECORD__BODY_INSERT);
	assert_int_equal(rec->insert->relation_id, TU_REL_ID);
	assert_string_equal(sluice_apply_rel_at(f->ctx, ri)->label, REL_NAME);
	if (f->changes == f->script.change_at) {
		sluice_target_status st = f->script.change_st;
		switch (st) {
		case SLUICE_TARGET_RETRY:
			st = fake_fail(t, st, f->script.change_cause, "40P01", "deadlock detected");
			break;
		case SLUICE_TARGET_EXISTS:
			st = fake_fail(t, st, -1, "23505", "duplicate key value");
			break;
		case SLUICE_TARGET_LOST:
			st = fake_fail(t, st, -1, "08006", "server closed the connection");
			f->connected = false;
			fake_drop(f); /* gone with the connection */
			break;
		default:
			st = fake_fail(t, st, -1, "23502", "null value in column \"name\"");
		}
		t->failure.op = op;
		t->failure.rel = ri;
		return st;
	}
	f->open_changes++;
	f->changes_of[f->txseq]++;
	sluice_apply_ctx_stats(f->ctx)->inserts++;
	return SLUICE_TARGET_OK;
}

static sluice_target_status
fake_truncate(sluice_target *t, const uint32_t *ris, size_t n, bool restart_identity, bool cascade)
{
	(void)ris;
	(void)n;
	(void)restart_identity;
	(void)cascade;
	F(t)->truncates++;
	return SLUICE_TARGET_OK;
}

static sluice_target_status
fake_commit(sluice_target *t)
{
	fake *f = F(t);
	f->commits++;
	assert_true(f->connected);
	assert_true(f->in_txn);
	if (f->commits == f->script.commit_at) {
		fake_drop(f); /* a failed commit commits nothing */
		return fake_fail(t, f->script.commit_st, f->script.commit_cause, "40001",
				 "could not serialize access");
	}
	if (f->dry_run) { /* a dry run commits nothing: its one transaction goes on */
		f->dry_changes += f->open_changes;
		fake_drop(f);
		return SLUICE_TARGET_OK;
	}
	for (uint64_t x = f->group_first; x <= f->txseq; x++) {
		assert_true(f->ncommitted < MAX_TXN);
		f->committed[f->ncommitted] = x;
		f->committed_changes[f->ncommitted] = f->changes_of[x];
		f->ncommitted++;
	}
	f->progress = f->txseq;
	if (f->grouped)
		sluice_apply_group_committed(f->ctx, f->group_first, f->txseq);
	else
		sluice_apply_committed(f->ctx, f->txseq);
	fake_drop(f);
	return SLUICE_TARGET_OK;
}

static sluice_target_status
fake_flush(sluice_target *t)
{
	fake *f = F(t);
	f->flushes++;
	assert_true(f->connected);
	return SLUICE_TARGET_OK;
}

static sluice_target_status
fake_rollback(sluice_target *t, bool after_failure)
{
	(void)after_failure;
	fake *f = F(t);
	f->rollbacks++;
	fake_drop(f);
	f->dry_changes = 0;
	return SLUICE_TARGET_OK;
}

static void
fake_close(sluice_target *t)
{
	fake *f = F(t);
	f->closes++;
	f->connected = false;
	fake_drop(f);
	f->dry_changes = 0;
}

static void
fake_free(sluice_target *t)
{
	F(t)->frees++;
	free(t);
}

static const sluice_target_ops fake_ops = {
	.kind = "fake",
	.code_name = "CODE",
	.open = fake_open,
	.progress = fake_progress,
	.progress_name = fake_progress_name,
	.relation = fake_relation,
	.check = fake_check,
	.begin = fake_begin,
	.change = fake_change,
	.truncate = fake_truncate,
	.commit = fake_commit,
	.flush = fake_flush,
	.rollback = fake_rollback,
	.close = fake_close,
	.free = fake_free,
};

static sluice_target *
fake_make(sluice_apply_ctx *ctx, void *arg)
{
	fake *f = arg;
	fake_target *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	/* the same fake, taking grouped transactions */
	static sluice_target_ops fake_group_ops;
	fake_group_ops = fake_ops;
	fake_group_ops.join = fake_join;
	t->base.ops = f->groups ? &fake_group_ops : &fake_ops;
	t->base.groups = f->groups;
	t->f = f;
	f->ctx = ctx;
	f->dry_run = sluice_apply_ctx_options(ctx)->dry_run;
	return &t->base;
}

/* ---- the stream and the runs ------------------------------------------------ */

static volatile sig_atomic_t stop_flag;

/* make_stream writes the standard relation and transactions 1..n (no snapshot first). */
static void
make_stream(tu_env *env, const char *tag, uint64_t n)
{
	tu_env_init(env, tag);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env->store, TU_STREAM, env->kp.key, NULL, &w, NULL));
	sluice_arena *a = sluice_arena_create();
	tu_append(w, tu_std_relation(a));
	for (uint64_t x = 1; x <= n; x++) {
		sluice_arena_reset(a);
		assert_int_equal(tu_append_txn(w, a, 1700000000000000 + (int64_t)x * 1000, 42,
					       rows_of(x), 16),
				 x);
	}
	sluice_arena_free(a);
	assert_true(sluice_writer_close(w));
}

static void
options(sluice_apply_options *o)
{
	sluice_apply_default_options(o);
	o->target = "fake://";
	o->stream = TU_STREAM;
	o->follow = false;
	o->stop = &stop_flag;
}

static bool
run(tu_env *env, const sluice_apply_options *o, fake *f, sluice_apply_stats *stats)
{
	bool ok = sluice_apply_run_target(env->store, env->trust, o, stats, fake_make, f);
	assert_int_equal(stop_flag, 0);
	assert_int_equal(f->frees, 1);
	return ok;
}

static uint64_t
retries_total(const sluice_apply_stats *s)
{
	uint64_t n = 0;
	for (int c = 0; c < SLUICE_RETRY_COUNT; c++)
		n += s->retries[c];
	return n;
}

/* assert_committed: the fake committed exactly from..to, in order, each with all its rows. */
static void
assert_committed(const fake *f, uint64_t from, uint64_t to)
{
	assert_int_equal(f->ncommitted, to >= from ? to - from + 1 : 0);
	for (size_t i = 0; i < f->ncommitted; i++) {
		assert_int_equal(f->committed[i], from + i);
		assert_int_equal(f->committed_changes[i], rows_of(from + i));
	}
	assert_int_equal(f->progress, to >= from ? to : from - 1);
	assert_false(f->in_txn);
}

/* assert_counts: the counters of a clean run that applied from..to. */
static void
assert_counts(const sluice_apply_stats *s, uint64_t from, uint64_t to)
{
	assert_int_equal(s->transactions, to - from + 1);
	assert_int_equal(s->inserts, rows_through(from, to));
	assert_int_equal(s->updates, 0);
	assert_int_equal(s->deletes, 0);
	assert_int_equal(s->truncates, 0);
	assert_int_equal(s->skipped, 0);
	assert_int_equal(s->first_txseq, from);
	assert_int_equal(s->last_txseq, to);
	assert_false(s->refused);
}

/* ---- tests -------------------------------------------------------------------- */

/* A clean run applies every transaction once, in order, and counts it. */
static void
test_clean_run(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-clean", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {0};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(s.resumed_after, 0);
	assert_int_equal(retries_total(&s), 0);
	assert_int_equal(f.opens, 1);
	assert_int_equal(f.closes, 0);
	assert_int_equal(f.checks, 1); /* once per relation and connection */
	assert_int_equal(f.begins, NTXN);
	assert_int_equal(f.changes, rows_through(1, NTXN));
	assert_int_equal(f.rollbacks, 0);
	tu_env_free(&env);
}

/* A target at progress k gets k+1..N only. */
static void
test_resume(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-resume", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {.progress = 2};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 3, NTXN);
	assert_counts(&s, 3, NTXN);
	assert_int_equal(s.resumed_after, 2);
	assert_int_equal(f.begins_of[1] + f.begins_of[2], 0);

	/* A target that is caught up applies nothing and succeeds. */
	fake g = {.progress = NTXN};
	assert_true(run(&env, &o, &g, &s));
	assert_int_equal(g.begins, 0);
	assert_int_equal(g.ncommitted, 0);
	assert_int_equal(s.transactions, 0);
	assert_int_equal(s.resumed_after, NTXN);
	tu_env_free(&env);
}

/*
 * A transient failure on the third change of txseq 2: txseq 2 is rolled
 * back and applied again once, and the counters end as a clean run's.
 */
static void
test_retry_on_change(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-retry", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {.script = {.change_at = change_call(2, 2),
			     .change_st = SLUICE_TARGET_RETRY,
			     .change_cause = SLUICE_RETRY_DEADLOCK}};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(s.retries[SLUICE_RETRY_DEADLOCK], 1);
	assert_int_equal(retries_total(&s), 1);
	assert_int_equal(f.begins_of[1], 1);
	assert_int_equal(f.begins_of[2], 2);
	assert_int_equal(f.begins_of[3], 1);
	assert_int_equal(f.rollbacks, 1);
	assert_int_equal(f.progress_calls, 1); /* applied again from the target's progress */
	assert_int_equal(f.opens, 1);          /* without reconnecting */
	assert_int_equal(f.changes, rows_through(1, NTXN) + 3);
	tu_env_free(&env);
}

/* A transient failure of a commit: that transaction is applied again, once. */
static void
test_retry_on_commit(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-retry-commit", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {.script = {.commit_at = 3,
			     .commit_st = SLUICE_TARGET_RETRY,
			     .commit_cause = SLUICE_RETRY_SERIALIZATION}};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(s.retries[SLUICE_RETRY_SERIALIZATION], 1);
	assert_int_equal(retries_total(&s), 1);
	assert_int_equal(f.begins_of[3], 2);
	assert_int_equal(f.commits, NTXN + 1);
	tu_env_free(&env);
}

/* EXISTS: the transaction is applied again (with conflict handling), not counted as a retry. */
static void
test_exists(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-exists", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {.script = {.change_at = change_call(4, 1), .change_st = SLUICE_TARGET_EXISTS}};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(retries_total(&s), 0);
	assert_int_equal(f.begins_of[4], 2);
	assert_int_equal(f.begins_of[5], 1);
	assert_int_equal(f.rollbacks, 1);
	assert_int_equal(f.opens, 1);
	tu_env_free(&env);
}

/* LOST: the target is closed and opened again; nothing is lost or applied twice. */
static void
test_lost(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-lost", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {.script = {.change_at = change_call(3, 1), .change_st = SLUICE_TARGET_LOST}};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(s.retries[SLUICE_RETRY_CONNECTION], 1);
	assert_int_equal(retries_total(&s), 1);
	assert_int_equal(s.resumed_after, 0); /* the progress at the first connection */
	assert_int_equal(f.opens, 2);
	assert_int_equal(f.closes, 1);
	assert_int_equal(f.checks, 2); /* the relation is checked again on the new connection */
	assert_int_equal(f.begins_of[3], 2);
	assert_int_equal(f.begins_of[2], 1);
	tu_env_free(&env);
}

/* A few BUSY opens are waited out. */
static void
test_busy_then_open(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-busy-ok", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {.script = {.busy_opens = 2}};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(f.opens, 3);
	assert_int_equal(s.retries[SLUICE_RETRY_CONNECTION], 2); /* counted as reconnects */
	assert_int_equal(f.progress_name_calls, 0);
	tu_env_free(&env);
}

/* BUSY seven times in a row (the first open and six more): the run fails, nothing applied. */
static void
test_busy_gives_up(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-busy", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {.script = {.busy_opens = 100}};
	sluice_apply_stats s;
	assert_false(run(&env, &o, &f, &s));
	assert_int_equal(f.opens, 7);
	assert_int_equal(f.progress_name_calls, 1); /* the message names what stayed in use */
	assert_int_equal(f.begins, 0);
	assert_int_equal(f.ncommitted, 0);
	assert_int_equal(s.transactions, 0);
	assert_int_equal(s.retries[SLUICE_RETRY_CONNECTION], 6);
	assert_false(s.refused);
	tu_env_free(&env);
}

/* A refused change stops the run: its transaction is rolled back, earlier ones stay. */
static void
test_failed_change(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-failed", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {.script = {.change_at = change_call(3, 1), .change_st = SLUICE_TARGET_FAILED}};
	sluice_apply_stats s;
	assert_false(run(&env, &o, &f, &s));
	assert_committed(&f, 1, 2);
	assert_int_equal(f.rollbacks, 1);
	assert_int_equal(f.open_changes, 0);
	assert_int_equal(f.begins_of[3], 1);
	assert_int_equal(f.begins_of[4], 0);
	assert_counts(&s, 1, 2); /* the first change of txseq 3 was taken back */
	assert_int_equal(retries_total(&s), 0);
	assert_false(s.refused);
	tu_env_free(&env);
}

/*
 * A commit the target refuses (a pipelining target learns of a refused
 * change at commit): the run fails, earlier transactions stay committed and
 * the counters are those of the committed ones.
 */
static void
test_failed_commit(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-failed-commit", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {
		.script = {.commit_at = 3, .commit_st = SLUICE_TARGET_FAILED, .commit_cause = -1}};
	sluice_apply_stats s;
	assert_false(run(&env, &o, &f, &s));
	assert_committed(&f, 1, 2);
	assert_int_equal(f.begins_of[3], 1);
	assert_int_equal(f.begins_of[4], 0);
	assert_counts(&s, 1, 2); /* the rows of txseq 3 did not commit */
	assert_int_equal(retries_total(&s), 0);
	tu_env_free(&env);
}

/* A relation the target refuses: nothing is applied. */
static void
test_check_failed(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-check", NTXN);
	sluice_apply_options o;
	options(&o);
	fake f = {.script = {.check_fails = true}};
	sluice_apply_stats s;
	assert_false(run(&env, &o, &f, &s));
	assert_int_equal(f.checks, 1);
	assert_int_equal(f.changes, 0);
	assert_int_equal(f.begins, 1);
	assert_int_equal(f.rollbacks, 1);
	assert_int_equal(f.ncommitted, 0);
	assert_false(f.in_txn);
	assert_int_equal(s.transactions, 0);
	tu_env_free(&env);
}

/* --until-txseq stops after that transaction. */
static void
test_until_txseq(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-until", NTXN);
	sluice_apply_options o;
	options(&o);
	o.until_txseq = 3;
	fake f = {0};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 1, 3);
	assert_counts(&s, 1, 3);
	assert_int_equal(f.begins_of[4], 0);

	/* Resumed past the bound: nothing more. */
	fake g = {.progress = 3};
	assert_true(run(&env, &o, &g, &s));
	assert_int_equal(g.begins, 0);
	assert_int_equal(s.transactions, 0);
	tu_env_free(&env);
}

/*
 * A dry run: the target's commit() is called for every transaction but
 * commits nothing (no sluice_apply_committed, the progress stays); the
 * engine counts each transaction as queued when commit() returns OK, and
 * rolls back the target's one transaction at the end, keeping the counts.
 */
static void
test_dry_run(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-dry", NTXN);
	sluice_apply_options o;
	options(&o);
	o.dry_run = true;
	fake f = {0};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_int_equal(f.ncommitted, 0);
	assert_int_equal(f.progress, 0);
	assert_int_equal(f.commits, NTXN);
	assert_int_equal(f.rollbacks, 1); /* the dry run's one transaction, at the end */
	assert_int_equal(f.dry_changes, 0);
	assert_counts(&s, 1, NTXN);

	/* A transient failure in a dry run starts over from the progress, counts included. */
	fake g = {.script = {.change_at = change_call(2, 1),
			     .change_st = SLUICE_TARGET_RETRY,
			     .change_cause = SLUICE_RETRY_LOCK_TIMEOUT}};
	assert_true(run(&env, &o, &g, &s));
	assert_int_equal(g.ncommitted, 0);
	assert_int_equal(g.begins_of[1], 2);
	assert_int_equal(g.begins_of[2], 2);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(s.retries[SLUICE_RETRY_LOCK_TIMEOUT], 1);
	tu_env_free(&env);
}

/* An excluded relation: its changes are skipped, never sent; the transactions still commit. */
static void
test_filter_exclude(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-filter", NTXN);
	sluice_apply_options o;
	options(&o);
	const char *exclude[] = {"public.*"};
	o.filter.exclude = exclude;
	o.filter.nexclude = 1;
	fake f = {0};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_int_equal(f.changes, 0);
	assert_int_equal(f.checks, 0);
	assert_int_equal(f.ncommitted, NTXN);
	for (size_t i = 0; i < f.ncommitted; i++) {
		assert_int_equal(f.committed[i], i + 1);
		assert_int_equal(f.committed_changes[i], 0);
	}
	assert_int_equal(f.progress, NTXN); /* progress recorded */
	assert_int_equal(s.transactions, NTXN);
	assert_int_equal(s.skipped, rows_through(1, NTXN));
	assert_int_equal(s.inserts, 0);
	assert_int_equal(s.first_txseq, 1);
	assert_int_equal(s.last_txseq, NTXN);
	tu_env_free(&env);
}

/*
 * Grouped: transactions go into groups of --group-size, each committed once
 * with the progress of its last transaction, every transaction counted.
 */
static void
test_grouped(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-grouped", NTXN);
	sluice_apply_options o;
	options(&o);
	o.group_size = 2;
	fake f = {.groups = true};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	/* {1} {2,3} {4,5}: the relation described inside txseq 1 ends its group */
	assert_int_equal(f.commits, 3);
	assert_int_equal(f.joins, 2);
	assert_int_equal(f.joins_of[3] + f.joins_of[5], 2);
	for (uint64_t x = 1; x <= NTXN; x++)
		assert_int_equal(f.alone_of[x], 0);

	/* --group-size 1: one target transaction each, none grouped */
	o.group_size = 1;
	fake g = {.groups = true};
	assert_true(run(&env, &o, &g, &s));
	assert_committed(&g, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(g.commits, NTXN);
	assert_int_equal(g.joins, 0);
	for (uint64_t x = 1; x <= NTXN; x++)
		assert_int_equal(g.alone_of[x], 1);

	/* a dry run does not group */
	o.group_size = 1000;
	o.dry_run = true;
	fake d = {.groups = true};
	assert_true(run(&env, &o, &d, &s));
	assert_int_equal(d.joins, 0);
	tu_env_free(&env);
}

/*
 * A grouped transaction that fails other than transiently (here a change of
 * txseq 4, in the group 2..5; txseq 1 is a group of its own, see above) is
 * rolled back whole; transactions up to the
 * one that failed are applied again one at a time, and grouping goes on
 * after them. Nothing is lost or applied twice, and the counters are a
 * clean run's.
 */
static void
test_grouped_split(void **state)
{
	(void)state;
	tu_env env;
	make_stream(&env, "apply-grouped-split", NTXN);
	sluice_apply_options o;
	options(&o);
	o.group_size = 1000; /* not SLUICE_APPLY_GROUP_SIZE's (tools/test.sh sets it to 1) */
	fake f = {.groups = true,
		  .script = {.change_at = change_call(4, 1), .change_st = SLUICE_TARGET_FAILED}};
	sluice_apply_stats s;
	assert_true(run(&env, &o, &f, &s));
	assert_committed(&f, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(f.rollbacks, 1);
	assert_int_equal(f.alone_of[1], 0);
	for (uint64_t x = 2; x <= 4; x++)
		assert_int_equal(f.alone_of[x], 1);
	assert_int_equal(f.alone_of[5], 0); /* grouped again after the split */
	assert_int_equal(f.begins_of[5], 1);
	assert_int_equal(f.joins_of[3] + f.joins_of[4], 2); /* the first try */
	assert_int_equal(retries_total(&s), 0);

	/* A refused commit of a group: the same, through the commit. */
	fake g = {
		.groups = true,
		.script = {.commit_at = 1, .commit_st = SLUICE_TARGET_FAILED, .commit_cause = -1}};
	assert_true(run(&env, &o, &g, &s));
	assert_committed(&g, 1, NTXN);
	assert_counts(&s, 1, NTXN);
	assert_int_equal(g.alone_of[1], 1); /* the group {1} failed: txseq 1 alone */
	for (uint64_t x = 2; x <= NTXN; x++)
		assert_int_equal(g.alone_of[x], 0);
	assert_int_equal(g.rollbacks, 1);
	tu_env_free(&env);
}

int
main(void)
{
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clean_run),       cmocka_unit_test(test_resume),
		cmocka_unit_test(test_retry_on_change), cmocka_unit_test(test_retry_on_commit),
		cmocka_unit_test(test_exists),          cmocka_unit_test(test_lost),
		cmocka_unit_test(test_busy_then_open),  cmocka_unit_test(test_busy_gives_up),
		cmocka_unit_test(test_failed_change),   cmocka_unit_test(test_failed_commit),
		cmocka_unit_test(test_check_failed),    cmocka_unit_test(test_until_txseq),
		cmocka_unit_test(test_dry_run),         cmocka_unit_test(test_filter_exclude),
		cmocka_unit_test(test_grouped),         cmocka_unit_test(test_grouped_split),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
