/* Live follow: a reader at the live end waits and then sees what a writer appends, across seals. */
#include "testutil.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* wait_for_change calls sluice_reader_wait and checks it came back early. */
static void
wait_for_change(sluice_reader *r)
{
	int64_t t0 = now_ms();
	assert_true(sluice_reader_wait(r, 1000));
	int64_t took = now_ms() - t0;
	if (took >= 900)
		fail_msg("sluice_reader_wait did not notice the append (took %" PRId64 " ms)",
			 took);
}

/*
 * read_txns reads until WAIT and checks that exactly transactions
 * first..last came out, in order, each Begin from segment seg_of(txseq).
 */
static void
read_txns(sluice_reader *r, uint64_t first, uint64_t last, const uint64_t *segment_of)
{
	uint64_t next = first;
	bool open = false;
	for (;;) {
		const sluice_record *rec = NULL;
		sluice_reader_status s = sluice_reader_next(r, &rec);
		if (s == SLUICE_READER_ERROR)
			fail_msg("reader: %s", sluice_reader_error(r));
		if (s == SLUICE_READER_WAIT)
			break;
		if (s != SLUICE_READER_RECORD)
			fail_msg("unexpected reader status %d", (int)s);
		const sluice_reader_position *pos = sluice_reader_position_get(r);
		if (rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN) {
			assert_false(open);
			assert_int_equal(rec->begin->txseq, next);
			if (segment_of != NULL)
				assert_int_equal(pos->segment_first, segment_of[next]);
			open = true;
		} else if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT) {
			assert_true(open);
			assert_int_equal(rec->commit->txseq, next);
			open = false;
			next++;
		} else if (rec->body_case == SLUICE__V1__RECORD__BODY_INSERT) {
			assert_true(open);
			uint32_t id = rec->insert->relation_id;
			assert_non_null(sluice_reader_relation(r, id));
		}
	}
	assert_false(open);
	assert_int_equal(next, last + 1);
}

static void
test_live_follow(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "live");
	sluice_arena *a = sluice_arena_create();
	sluice_writer_options o = tu_writer_options(64 * 1024, 1024 * 1024);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, NULL));
	tu_append(w, tu_std_relation(a));
	assert_int_equal(tu_append_txn(w, a, 10, 1, 2, 20), 1);
	assert_int_equal(tu_append_txn(w, a, 20, 1, 2, 20), 2);
	assert_true(sluice_writer_flush(w));

	/* segment_of[txseq]: where each transaction's Begin must come from */
	uint64_t segment_of[16] = {0, 1, 1, 1, 4, 4, 6, 6};

	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(env.store, TU_STREAM, env.trust, 1, &r));
	read_txns(r, 1, 2, segment_of);
	const sluice_record *rec = NULL;
	assert_int_equal(sluice_reader_next(r, &rec), SLUICE_READER_WAIT);

	/* Nothing happens: the wait really waits (up to its timeout). */
	int64_t t0 = now_ms();
	assert_true(sluice_reader_wait(r, 100));
	assert_true(now_ms() - t0 >= 60);
	assert_int_equal(sluice_reader_next(r, &rec), SLUICE_READER_WAIT);

	/* Appended but not flushed: nothing visible yet. */
	sluice_arena_reset(a);
	assert_int_equal(tu_append_txn(w, a, 30, 1, 2, 20), 3);
	assert_int_equal(sluice_reader_next(r, &rec), SLUICE_READER_WAIT);
	assert_true(sluice_writer_flush(w));
	wait_for_change(r);
	read_txns(r, 3, 3, segment_of);

	/* An explicit seal: the seal frame alone brings no record. */
	assert_true(sluice_writer_seal(w));
	wait_for_change(r);
	assert_int_equal(sluice_reader_next(r, &rec), SLUICE_READER_WAIT);
	/* The next transaction opens a new segment; the reader moves into it. */
	sluice_arena_reset(a);
	assert_int_equal(tu_append_txn(w, a, 40, 1, 2, 20), 4);
	assert_true(sluice_writer_flush(w));
	wait_for_change(r);
	read_txns(r, 4, 4, segment_of);
	assert_true(sluice_writer_close(w));

	/* A writer with a small segment target rotates on its own at a commit. */
	sluice_writer_options tiny = tu_writer_options(64 * 1024, 2048);
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &tiny, &w, NULL));
	sluice_arena_reset(a);
	tu_append(w, tu_std_relation(a));
	assert_int_equal(tu_append_txn(w, a, 50, 1, 1, 4000), 5); /* fills segment 4: sealed */
	assert_int_equal(tu_append_txn(w, a, 60, 1, 1, 10), 6);   /* segment 6 */
	assert_int_equal(tu_append_txn(w, a, 70, 1, 1, 10), 7);
	assert_true(sluice_writer_flush(w));
	wait_for_change(r);
	read_txns(r, 5, 7, segment_of);
	assert_int_equal(sluice_reader_next(r, &rec), SLUICE_READER_WAIT);
	assert_true(sluice_writer_close(w));
	sluice_reader_close(r);

	uint64_t *firsts = NULL;
	size_t n = tu_segments(&env, &firsts);
	assert_int_equal(n, 3);
	assert_int_equal(firsts[0], 1);
	assert_int_equal(firsts[1], 4);
	assert_int_equal(firsts[2], 6);
	free(firsts);
	sluice_arena_free(a);
	tu_env_free(&env);
}

/* A reader opened before the stream exists sees it appear. */
static void
test_live_stream_appears(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "live-new");
	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(env.store, TU_STREAM, env.trust, 1, &r));
	const sluice_record *rec = NULL;
	assert_int_equal(sluice_reader_next(r, &rec), SLUICE_READER_WAIT);

	sluice_arena *a = sluice_arena_create();
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	tu_append(w, tu_std_relation(a));
	assert_int_equal(tu_append_txn(w, a, 10, 1, 3, 20), 1);
	assert_true(sluice_writer_flush(w));
	wait_for_change(r);
	read_txns(r, 1, 1, NULL);

	/* And keeps following it. */
	sluice_arena_reset(a);
	assert_int_equal(tu_append_txn(w, a, 20, 1, 3, 20), 2);
	assert_true(sluice_writer_flush(w));
	wait_for_change(r);
	read_txns(r, 2, 2, NULL);
	assert_true(sluice_writer_close(w));
	sluice_reader_close(r);
	sluice_arena_free(a);
	tu_env_free(&env);
}

/*
 * A reader following the live end has read frames of a transaction that never
 * commits (OPEN frames, provisional per docs/format.md section 9). The writer
 * restarts, cuts them off and writes other frames from the same point. The
 * reader says SLUICE_READER_REWIND once (position txseq = the cut one), then
 * delivers the transaction written in its place and what follows, with no
 * record of the cut transaction after the rewind.
 *
 * variant 0: the new tail is shorter than the cut one; 1: longer;
 * 2: the unfinished transaction was alone in its segment, which recovery
 *    deletes, and the reader waits before the writer creates it again.
 */
static void
restart_variant(int variant)
{
	tu_env env;
	tu_env_init(&env, "live-restart");
	sluice_arena *a = sluice_arena_create();
	sluice_writer_options o = tu_writer_options(1024, 1024 * 1024);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, NULL));
	tu_append(w, tu_std_relation(a));
	assert_int_equal(tu_append_txn(w, a, 10, 1, 1, 20), 1);
	if (variant == 2)
		assert_true(sluice_writer_seal(w));
	assert_true(sluice_writer_flush(w));
	sluice_record *b = tu_begin(a, 20, 1, "old");
	tu_append(w, b);
	assert_int_equal(b->begin->txseq, 2);
	for (int i = 0; i < 6; i++)
		tu_append(w, tu_std_insert(a, 1, 100 + (uint64_t)i, 600));
	assert_true(sluice_writer_flush(w));

	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(env.store, TU_STREAM, env.trust, 1, &r));
	const sluice_record *rec = NULL;
	sluice_reader_status s;
	int old_rows = 0;
	while ((s = sluice_reader_next(r, &rec)) == SLUICE_READER_RECORD)
		if (rec->body_case == SLUICE__V1__RECORD__BODY_INSERT)
			old_rows++;
	assert_int_equal(s, SLUICE_READER_WAIT);
	assert_true(old_rows > 0);           /* the reader saw provisional rows of txn 2 */
	assert_true(sluice_writer_close(w)); /* txn 2 never commits */

	sluice_writer_recovery rec_info;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, &rec_info));
	assert_int_equal(rec_info.partial_txseq, 2);
	assert_int_equal(rec_info.removed_segment, variant == 2);

	int rewinds = 0;
	bool new2 = false, done3 = false;
	if (variant == 2) {
		/* Segment 2 is gone and nothing replaced it yet. */
		for (;;) {
			s = sluice_reader_next(r, &rec);
			if (s == SLUICE_READER_REWIND) {
				rewinds++;
				assert_int_equal(sluice_reader_position_get(r)->txseq, 2);
				continue;
			}
			break;
		}
		if (s == SLUICE_READER_ERROR)
			fail_msg("reader after the segment was removed: %s",
				 sluice_reader_error(r));
		assert_int_equal(s, SLUICE_READER_WAIT);
	}

	sluice_arena_reset(a);
	tu_append(w, tu_std_relation(a));
	b = tu_begin(a, 30, 2, "new");
	tu_append(w, b);
	assert_int_equal(b->begin->txseq, 2);
	tu_append(w, tu_std_insert(a, 2, 200, variant == 1 ? 9000 : 10));
	tu_append(w, tu_commit(a, 3, 1));
	assert_int_equal(tu_append_txn(w, a, 40, 2, 1, 10), 3);
	assert_true(sluice_writer_flush(w));

	for (int round = 0; round < 5 && !done3; round++) {
		assert_true(sluice_reader_wait(r, 200));
		for (;;) {
			s = sluice_reader_next(r, &rec);
			if (s == SLUICE_READER_REWIND) {
				rewinds++;
				assert_false(new2);
				assert_int_equal(sluice_reader_position_get(r)->txseq, 2);
				continue;
			}
			if (s != SLUICE_READER_RECORD)
				break;
			const sluice_reader_position *pos = sluice_reader_position_get(r);
			if (rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN) {
				/* after the rewind: the new txn 2, then 3 */
				assert_int_equal(rewinds, 1);
				if (rec->begin->txseq == 2) {
					assert_string_equal(rec->begin->origin_node, "new");
					new2 = true;
				} else {
					assert_int_equal(rec->begin->txseq, 3);
					assert_true(new2);
				}
			}
			if (rec->body_case == SLUICE__V1__RECORD__BODY_INSERT) {
				/* no row of the cut transaction comes out again */
				assert_true(new2);
				assert_true(pos->txseq == 2 || pos->txseq == 3);
			}
			if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT &&
			    rec->commit->txseq == 3)
				done3 = true;
		}
		if (s == SLUICE_READER_ERROR)
			fail_msg("after the writer restart (variant %d) the reader failed: %s",
				 variant, sluice_reader_error(r));
	}
	if (!done3)
		fail_msg("after the writer restart (variant %d) the reader never delivered txn 3",
			 variant);
	assert_int_equal(rewinds, 1);
	assert_true(sluice_writer_close(w));
	sluice_reader_close(r);

	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(env.store, TU_STREAM, env.trust, &fd, &rep);
	assert_int_equal(rep.problems, 0);
	assert_int_equal(rep.last_txseq, 3);
	tu_findings_free(&fd);
	sluice_arena_free(a);
	tu_env_free(&env);
}

static void
test_live_restart_shorter_tail(void **state)
{
	(void)state;
	restart_variant(0);
}

static void
test_live_restart_longer_tail(void **state)
{
	(void)state;
	restart_variant(1);
}

static void
test_live_restart_segment_removed(void **state)
{
	(void)state;
	restart_variant(2);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_live_follow),
		cmocka_unit_test(test_live_stream_appears),
		cmocka_unit_test(test_live_restart_shorter_tail),
		cmocka_unit_test(test_live_restart_longer_tail),
		cmocka_unit_test(test_live_restart_segment_removed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
