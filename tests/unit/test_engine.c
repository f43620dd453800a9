/* Unit tests of the capture engine's decisions, driven by a scripted fake source. */
#include "testutil.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "capture.h"
#include "engine.h"
#include "source.h"

#define REL_ID 7

typedef enum fake_kind {
	FAKE_BEGIN,
	FAKE_ORIGIN,
	FAKE_INSERT,
	FAKE_COMMIT,
	FAKE_KEEPALIVE,
	FAKE_IDLE
} fake_kind;

typedef struct fake_event {
	fake_kind kind;
	uint64_t position; /* BEGIN: final position, COMMIT: end, KEEPALIVE: source end */
	bool reply;        /* KEEPALIVE: reply requested */
} fake_event;

typedef struct fake_ack {
	uint64_t received, durable;
	uint64_t writer_durable; /* the stream's durable end when the ack was sent */
	bool unflushed;          /* a commit was not yet durable then */
} fake_ack;

typedef struct fake {
	const fake_event *script;
	size_t n, next;
	sluice_capture_sink *sink;
	volatile sig_atomic_t stop;
	fake_ack acks[256];
	size_t nacks;
	int opens, closes;
	sluice_arena *arena;
} fake;

static void
fake_format(uint64_t position, char *out, size_t size)
{
	snprintf(out, size, "%llu", (unsigned long long)position);
}

static sluice_source_status
fake_open(void *state, sluice_capture_sink *sink)
{
	fake *f = state;
	f->sink = sink;
	f->opens++;
	return SLUICE_SOURCE_OK;
}

static bool
fake_current_position(void *state, uint64_t *position)
{
	(void)state;
	*position = 0;
	return true;
}

static sluice_source_status
fake_start(void *state, sluice_capture_sink *sink, uint64_t *resume)
{
	(void)state;
	(void)resume;
	const char *cols[2] = {"id:23", "v:25"};
	sluice_arena *a = ((fake *)state)->arena;
	return sluice_capture_sink_relation(sink, tu_relation(a, REL_ID, "public", "t", 2, cols))
		       ? SLUICE_SOURCE_OK
		       : SLUICE_SOURCE_FATAL;
}

static bool
fake_insert(fake *f)
{
	Sluice__V1__ValueKind kinds[2] = {SLUICE__V1__VALUE_KIND__VALUE_TEXT,
					  SLUICE__V1__VALUE_KIND__VALUE_TEXT};
	ProtobufCBinaryData values[2] = {tu_text(f->arena, "1"), tu_text(f->arena, "x")};
	Sluice__V1__Insert ins = SLUICE__V1__INSERT__INIT;
	ins.relation_id = REL_ID;
	ins.new_row = tu_row(f->arena, 2, kinds, values);
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_INSERT;
	rec.insert = &ins;
	return sluice_capture_sink_change(f->sink, &rec);
}

static sluice_source_receive
fake_receive(void *state, sluice_capture_sink *sink)
{
	fake *f = state;
	if (f->next == f->n) {
		f->stop = 1; /* the script is played: a clean stop */
		return SLUICE_SOURCE_IDLE;
	}
	const fake_event *ev = &f->script[f->next++];
	bool ok = true;
	Sluice__V1__Begin b = SLUICE__V1__BEGIN__INIT;
	switch (ev->kind) {
	case FAKE_BEGIN:
		b.commit_time_us = 1700000000000000;
		b.has_source_lsn = true;
		b.source_lsn = ev->position;
		ok = sluice_capture_sink_begin(sink, &b, ev->position);
		break;
	case FAKE_ORIGIN:
		sluice_capture_sink_origin(sink, "elsewhere", 1, true);
		break;
	case FAKE_INSERT:
		ok = fake_insert(f);
		break;
	case FAKE_COMMIT:
		sluice_capture_sink_progress(sink, ev->position);
		ok = sluice_capture_sink_commit(sink, ev->position);
		break;
	case FAKE_KEEPALIVE:
		ok = sluice_capture_sink_keepalive(sink, ev->position, ev->reply);
		break;
	case FAKE_IDLE:
		return SLUICE_SOURCE_IDLE;
	}
	return ok ? SLUICE_SOURCE_RECEIVED : SLUICE_SOURCE_LOST;
}

static bool
fake_wait(void *state, int ms)
{
	(void)state;
	usleep((useconds_t)(ms > 5 ? 5 : ms) * 1000);
	return true;
}

static bool
fake_ack_fn(void *state, uint64_t received, uint64_t durable, bool reply_requested)
{
	fake *f = state;
	(void)reply_requested;
	assert_true(f->nacks < sizeof(f->acks) / sizeof(f->acks[0]));
	sluice_writer *w = sluice_capture_sink_writer(f->sink);
	f->acks[f->nacks++] = (fake_ack){
		.received = received,
		.durable = durable,
		.writer_durable = sluice_writer_durable_position(w),
		.unflushed = sluice_writer_last_txseq(w) > sluice_writer_durable_txseq(w),
	};
	return true;
}

static const char *
fake_busy(void *state)
{
	(void)state;
	return "fake";
}

static void
fake_close(void *state)
{
	((fake *)state)->closes++;
}

static void
fake_free(void *state)
{
	(void)state;
}

static const sluice_source_ops fake_ops = {
	.name = "fake",
	.position_kind = SLUICE_SOURCE_POSITION_LSN,
	.format_position = fake_format,
	.open = fake_open,
	.current_position = fake_current_position,
	.start = fake_start,
	.receive = fake_receive,
	.wait = fake_wait,
	.ack = fake_ack_fn,
	.busy_subject = fake_busy,
	.busy_reason = fake_busy,
	.close = fake_close,
	.free = fake_free,
};

/* run_script plays script through the engine into a fresh stream and returns what it did. */
static void
run_script(tu_env *env, fake *f, const fake_event *script, size_t n, int heartbeat_ms,
	   sluice_capture_stats *stats)
{
	memset(f, 0, sizeof(*f));
	f->script = script;
	f->n = n;
	f->arena = sluice_arena_create();
	sluice_capture_options o;
	sluice_capture_default_options(&o);
	o.source = "fake";
	o.stream = TU_STREAM;
	o.node = "test";
	o.min_flush_gap_ms = 0;
	o.max_flush_delay_ms = 60000; /* flushes come from idleness, not from the delay */
	o.heartbeat_interval_ms = heartbeat_ms;
	o.stop = &f->stop;
	assert_true(sluice_capture_engine_run(env->store, env->kp.key, &o, &fake_ops, f, stats));
	sluice_arena_free(f->arena);
}

/*
 * The engine acknowledges only positions whose commit is durable in the
 * stream, and positions an idle source reported between transactions once
 * every commit received before them is durable.
 */
static void
test_acks_only_durable(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "engine-ack");
	const fake_event script[] = {
		{FAKE_BEGIN, 100, false},    {FAKE_INSERT, 0, false},
		{FAKE_COMMIT, 200, false},   {FAKE_KEEPALIVE, 250, true}, /* before the flush */
		{FAKE_IDLE, 0, false},       {FAKE_KEEPALIVE, 300, true}, /* idle: confirmable */
		{FAKE_BEGIN, 400, false},    {FAKE_INSERT, 0, false},
		{FAKE_KEEPALIVE, 450, true}, /* inside a transaction: not confirmable */
	};
	fake f;
	sluice_capture_stats stats;
	run_script(&env, &f, script, sizeof(script) / sizeof(script[0]), 0, &stats);
	assert_int_equal(stats.transactions, 1);
	assert_int_equal(stats.changes, 2);
	assert_true(f.nacks >= 3);
	bool saw_300 = false;
	uint64_t last = 0;
	for (size_t i = 0; i < f.nacks; i++) {
		const fake_ack *a = &f.acks[i];
		/*
		 * Never more than the stream holds durably, except an idle source's
		 * own end, and that only once the commit at 200 is durable.
		 */
		if (a->durable > a->writer_durable) {
			assert_true(a->durable == 250 || a->durable == 300);
			assert_int_equal(a->writer_durable, 200);
			assert_false(a->unflushed);
		}
		assert_true(a->durable < 400);
		assert_true(a->durable >= last);
		last = a->durable;
		saw_300 |= a->durable == 300;
	}
	assert_true(saw_300);
	assert_int_equal(stats.acked_lsn, 300);
	assert_int_equal(f.opens, 1);
	tu_env_free(&env);
}

/* A transaction from another origin is skipped, and acknowledged once flushed. */
static void
test_skips_origin(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "engine-origin");
	const fake_event script[] = {
		{FAKE_BEGIN, 100, false},  {FAKE_ORIGIN, 0, false}, {FAKE_INSERT, 0, false},
		{FAKE_COMMIT, 200, false}, {FAKE_IDLE, 0, false},
	};
	fake f;
	sluice_capture_stats stats;
	run_script(&env, &f, script, sizeof(script) / sizeof(script[0]), 0, &stats);
	assert_int_equal(stats.transactions, 0);
	assert_int_equal(stats.skipped_origin, 1);
	assert_int_equal(stats.acked_lsn, 200);
	tu_env_free(&env);
}

/* An idle source gets heartbeat records carrying the position it reported. */
static void
test_heartbeats_when_idle(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "engine-heartbeat");
	fake_event script[40];
	size_t n = 0;
	script[n++] = (fake_event){FAKE_BEGIN, 100, false};
	script[n++] = (fake_event){FAKE_INSERT, 0, false};
	script[n++] = (fake_event){FAKE_COMMIT, 200, false};
	script[n++] = (fake_event){FAKE_KEEPALIVE, 500, false};
	while (n < 40)
		script[n++] = (fake_event){FAKE_IDLE, 0, false};
	fake f;
	sluice_capture_stats stats;
	run_script(&env, &f, script, n, 1, &stats);

	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(env.store, TU_STREAM, env.trust, 1, &r));
	const sluice_record *rec;
	size_t heartbeats = 0, commits = 0;
	sluice_reader_status st;
	while ((st = sluice_reader_next(r, &rec)) == SLUICE_READER_RECORD) {
		if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT)
			commits++;
		if (rec->body_case == SLUICE__V1__RECORD__BODY_HEARTBEAT) {
			heartbeats++;
			assert_int_equal(rec->heartbeat->source_lsn, 500);
			assert_int_equal(rec->heartbeat->last_txseq, 1);
		}
	}
	assert_int_equal(st, SLUICE_READER_WAIT);
	sluice_reader_close(r);
	assert_int_equal(commits, 1);
	assert_true(heartbeats >= 1);
	tu_env_free(&env);
}

int
main(void)
{
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_acks_only_durable),
		cmocka_unit_test(test_skips_origin),
		cmocka_unit_test(test_heartbeats_when_idle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
