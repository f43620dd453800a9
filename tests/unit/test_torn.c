/* Torn tails and unfinished transactions: verify warns, the writer cuts them off and goes on. */
#include "testutil.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* newest_segment returns the first txseq of the newest segment. */
static uint64_t
newest_segment(tu_env *env, size_t *nsegs)
{
	uint64_t *firsts = NULL;
	size_t n = tu_segments(env, &firsts);
	assert_true(n > 0);
	uint64_t last = firsts[n - 1];
	free(firsts);
	if (nsegs)
		*nsegs = n;
	return last;
}

static void
verify_clean(sluice_store *store, const sluice_trust *trust, uint64_t transactions)
{
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(store, TU_STREAM, trust, &fd, &rep);
	if (rep.problems || rep.warnings)
		tu_findings_print(&fd);
	assert_int_equal(rep.problems, 0);
	assert_int_equal(rep.warnings, 0);
	assert_false(rep.torn);
	assert_int_equal(rep.transactions, transactions);
	assert_int_equal(rep.last_txseq, transactions);
	tu_findings_free(&fd);
}

/* read_expect reads everything and checks 1..last dense, ending in WAIT. */
static void
read_expect(sluice_store *store, const sluice_trust *trust, uint64_t last, int64_t last_time)
{
	tu_read_stats st;
	tu_read_all(store, TU_STREAM, trust, 1, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_true(st.dense);
	assert_int_equal(st.first_txseq, last ? 1 : 0);
	assert_int_equal(st.last_txseq, last);
	assert_int_equal(st.transactions, last);
	if (last_time != 0)
		assert_true(st.last_commit_time == last_time);
}

#define TORN_TIME_BASE 1000000

/*
 * Every cut inside the last frame of the newest segment: verify warns (torn,
 * no problem), the writer cuts the torn bytes off, and the stream continues
 * right after the last complete transaction.
 */
static void
test_torn_every_offset_of_last_frame(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "torn");
	sluice_arena *a = sluice_arena_create();

	/* Several sealed segments first. */
	sluice_writer_options small = tu_writer_options(1024, 6 * 1024);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &small, &w, NULL));
	tu_append(w, tu_std_relation(a));
	uint64_t t;
	for (t = 1; t <= 12; t++) {
		sluice_arena_reset(a);
		assert_int_equal(tu_append_txn(w, a, TORN_TIME_BASE + (int64_t)t, 3, 2, 600), t);
	}
	assert_true(sluice_writer_close(w));

	/* Then frames in an unsealed newest segment, the last one small. */
	sluice_writer_options big = tu_writer_options(64 * 1024, 1024 * 1024);
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &big, &w, NULL));
	tu_append(w, tu_std_relation(a));
	for (; t <= 14; t++) {
		sluice_arena_reset(a);
		assert_int_equal(tu_append_txn(w, a, TORN_TIME_BASE + (int64_t)t, 3, 2, 300), t);
		assert_true(sluice_writer_flush(w));
	}
	const uint64_t K = t; /* the transaction in the last frame */
	sluice_arena_reset(a);
	assert_int_equal(tu_append_txn(w, a, TORN_TIME_BASE + (int64_t)K, 3, 1, 64), K);
	assert_true(sluice_writer_flush(w));
	assert_int_equal(sluice_writer_durable_txseq(w), K);
	assert_true(sluice_writer_close(w));
	verify_clean(env.store, env.trust, K);

	size_t nsegs = 0;
	uint64_t newest = newest_segment(&env, &nsegs);
	assert_true(nsegs >= 3);
	char path[TU_PATH_MAX];
	tu_segment_path(&env, newest, path);
	assert_int_equal(tu_file_mode(path), 0644);
	tu_frame_info *fr = NULL;
	size_t nf = tu_segment_frames(path, &fr);
	assert_true(nf >= 2);
	const uint64_t F = fr[nf - 1].offset, S = fr[nf - 1].size;
	assert_int_equal(F + S, tu_file_size(path));
	assert_int_equal(fr[nf - 1].hdr.txseq_start, K);
	assert_int_equal(fr[nf - 1].hdr.txseq_end, K + 1);
	assert_int_equal(fr[nf - 1].hdr.flags & (SLUICE_FRAME_OPEN | SLUICE_FRAME_SEAL), 0);
	assert_true(S > SLUICE_FRAME_HEADER_SIZE + 16 && S < 1024);
	free(fr);

	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(newest, name);
	for (uint64_t L = F; L < F + S; L++) {
		char store_dir[TU_PATH_MAX], stream_dir[TU_PATH_MAX], cut[TU_PATH_MAX];
		tu_path(store_dir, "%s/cut%" PRIu64, env.dir, L);
		assert_int_equal(mkdir(store_dir, 0755), 0);
		tu_path(stream_dir, "%s/%s", store_dir, TU_STREAM);
		tu_copy_dir(env.stream_dir, stream_dir);
		tu_path(cut, "%s/%s", stream_dir, name);
		tu_truncate_file(cut, L);
		sluice_store *s = NULL;
		assert_true(sluice_store_open(store_dir, &s));

		/* Verify: a torn tail is a warning, not a problem. */
		tu_findings fd;
		sluice_verify_report rep;
		tu_verify(s, TU_STREAM, env.trust, &fd, &rep);
		bool torn_expected = L > F; /* at L == F the last frame is simply absent */
		if (rep.problems != 0 || rep.torn != torn_expected) {
			fprintf(stderr, "  cut at %" PRIu64 " (frame %" PRIu64 "+%" PRIu64 "):\n",
				L, F, L - F);
			tu_findings_print(&fd);
		}
		assert_int_equal(rep.problems, 0);
		assert_int_equal(rep.torn, torn_expected);
		assert_int_equal(rep.warnings, torn_expected ? 1 : 0);
		if (torn_expected) {
			assert_string_equal(fd.v[0].segment, name);
			assert_int_equal(fd.v[0].offset, (int64_t)F);
		}
		assert_int_equal(rep.last_txseq, K - 1);
		tu_findings_free(&fd);

		/* A reader returns what is complete and then waits. */
		read_expect(s, env.trust, K - 1, TORN_TIME_BASE + (int64_t)(K - 1));

		/* The writer cuts the torn bytes off and continues after K-1. */
		sluice_writer_recovery rec;
		memset(&rec, 0xAA, sizeof(rec));
		assert_true(sluice_writer_open(s, TU_STREAM, env.kp.key, &big, &w, &rec));
		assert_int_equal(rec.torn_bytes, L - F);
		assert_int_equal(rec.partial_bytes, 0);
		assert_int_equal(rec.partial_txseq, 0);
		assert_false(rec.removed_segment);
		assert_int_equal(sluice_writer_last_txseq(w), K - 1);
		assert_true(sluice_writer_last_commit_time(w) == TORN_TIME_BASE + (int64_t)(K - 1));
		assert_int_equal(tu_file_size(cut), F);
		sluice_arena_reset(a);
		tu_append(w, tu_std_relation(a));
		assert_int_equal(tu_append_txn(w, a, 5000000, 4, 2, 50), K);
		assert_int_equal(tu_append_txn(w, a, 5000001, 4, 1, 50), K + 1);
		assert_true(sluice_writer_close(w));

		verify_clean(s, env.trust, K + 1);
		read_expect(s, env.trust, K + 1, 5000001);
		sluice_store_close(s);
		tu_rmrf(store_dir);
	}
	sluice_arena_free(a);
	tu_env_free(&env);
}

/* write_unfinished writes txns 1..3, then txn 4 over several frames, flushed and left open. */
static void
write_unfinished(tu_env *env, sluice_arena *a, bool seal_before)
{
	sluice_writer_options o = tu_writer_options(512, 1024 * 1024);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env->store, TU_STREAM, env->kp.key, &o, &w, NULL));
	tu_append(w, tu_std_relation(a));
	for (uint64_t t = 1; t <= 3; t++)
		assert_int_equal(tu_append_txn(w, a, (int64_t)t * 10, 5, 1, 32), t);
	if (seal_before)
		assert_true(sluice_writer_seal(w));
	assert_true(sluice_writer_flush(w));
	assert_int_equal(sluice_writer_durable_txseq(w), 3);

	sluice_record *b = tu_begin(a, 40, 1, "node-a");
	tu_append(w, b);
	assert_int_equal(b->begin->txseq, 4);
	for (int i = 0; i < 10; i++)
		tu_append(w, tu_std_insert(a, 6, 4000 + (uint64_t)i, 300));
	assert_true(sluice_writer_flush(w));
	for (int i = 10; i < 15; i++)
		tu_append(w, tu_std_insert(a, 6, 4000 + (uint64_t)i, 300));
	assert_true(sluice_writer_in_transaction(w));
	assert_int_equal(sluice_writer_durable_txseq(w), 3);
	/* close flushes but leaves the transaction open in the stream */
	assert_true(sluice_writer_close(w));
}

/* boundary_of returns the end offset of the last frame that does not end inside a transaction. */
static uint64_t
boundary_of(const char *path, size_t *open_frames)
{
	tu_frame_info *fr = NULL;
	size_t nf = tu_segment_frames(path, &fr);
	uint64_t b = 0;
	size_t open = 0;
	for (size_t i = 0; i < nf; i++) {
		if (fr[i].hdr.flags & SLUICE_FRAME_OPEN)
			open++;
		else {
			b = fr[i].offset + fr[i].size;
			open = 0;
		}
	}
	free(fr);
	*open_frames = open;
	return b;
}

/* finish_after_recovery commits a new transaction 4 and checks the result. */
static void
finish_after_recovery(tu_env *env, sluice_arena *a, sluice_writer *w)
{
	assert_int_equal(sluice_writer_last_txseq(w), 3);
	assert_false(sluice_writer_in_transaction(w));
	tu_append(w, tu_std_relation(a));
	sluice_record *b = tu_begin(a, 99, 2, "node-b");
	tu_append(w, b);
	assert_int_equal(b->begin->txseq, 4);
	tu_append(w, tu_std_insert(a, 7, 77, 10));
	tu_append(w, tu_commit(a, 3, 1));
	assert_true(sluice_writer_close(w));
	verify_clean(env->store, env->trust, 4);

	/* Transaction 4 is the new one: one insert, nothing left of the old one. */
	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(env->store, TU_STREAM, env->trust, 4, &r));
	const sluice_record *rec;
	int inserts = 0, begins = 0;
	sluice_reader_status s;
	while ((s = sluice_reader_next(r, &rec)) == SLUICE_READER_RECORD) {
		if (rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN) {
			begins++;
			assert_int_equal(rec->begin->txseq, 4);
			assert_string_equal(rec->begin->origin_node, "node-b");
		}
		if (rec->body_case == SLUICE__V1__RECORD__BODY_INSERT) {
			inserts++;
			assert_true(rec->insert->new_row->values[0].len == 2);
			assert_memory_equal(rec->insert->new_row->values[0].data, "77", 2);
		}
	}
	assert_int_equal(s, SLUICE_READER_WAIT);
	assert_int_equal(begins, 1);
	assert_int_equal(inserts, 1);
	sluice_reader_close(r);
	read_expect(env->store, env->trust, 4, 99);
}

static void
test_torn_unfinished_transaction(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "partial");
	sluice_arena *a = sluice_arena_create();
	write_unfinished(&env, a, false);

	uint64_t newest = newest_segment(&env, NULL);
	char path[TU_PATH_MAX];
	tu_segment_path(&env, newest, path);
	size_t open_frames = 0;
	uint64_t boundary = boundary_of(path, &open_frames);
	uint64_t size = tu_file_size(path);
	assert_true(open_frames >= 3); /* the open transaction spans several frames */
	assert_true(boundary > 0 && boundary < size);

	/* Verify: the unfinished transaction is a warning only. */
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(env.store, TU_STREAM, env.trust, &fd, &rep);
	assert_int_equal(rep.problems, 0);
	assert_false(rep.torn);
	assert_int_equal(rep.warnings, 1);
	assert_int_equal(rep.last_txseq, 3);
	tu_findings_free(&fd);

	sluice_writer_recovery rec;
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, &rec));
	assert_int_equal(rec.partial_txseq, 4);
	assert_int_equal(rec.partial_bytes, size - boundary);
	assert_int_equal(rec.torn_bytes, 0);
	assert_false(rec.removed_segment);
	assert_int_equal(tu_file_size(path), boundary);
	sluice_arena_reset(a);
	finish_after_recovery(&env, a, w);
	sluice_arena_free(a);
	tu_env_free(&env);
}

static void
test_torn_unfinished_transaction_with_torn_frame(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "partial-torn");
	sluice_arena *a = sluice_arena_create();
	write_unfinished(&env, a, false);

	uint64_t newest = newest_segment(&env, NULL);
	char path[TU_PATH_MAX];
	tu_segment_path(&env, newest, path);
	size_t open_frames = 0;
	uint64_t boundary = boundary_of(path, &open_frames);
	tu_frame_info *fr = NULL;
	size_t nf = tu_segment_frames(path, &fr);
	uint64_t last_off = fr[nf - 1].offset, last_size = fr[nf - 1].size;
	free(fr);
	tu_truncate_file(path, last_off + last_size - 5);

	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(env.store, TU_STREAM, env.trust, &fd, &rep);
	assert_int_equal(rep.problems, 0);
	assert_true(rep.torn);
	tu_findings_free(&fd);

	sluice_writer_recovery rec;
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, &rec));
	assert_int_equal(rec.partial_txseq, 4);
	assert_int_equal(rec.torn_bytes, last_size - 5);
	assert_int_equal(rec.partial_bytes, last_off - boundary);
	assert_int_equal(tu_file_size(path), boundary);
	sluice_arena_reset(a);
	finish_after_recovery(&env, a, w);
	sluice_arena_free(a);
	tu_env_free(&env);
}

/* The unfinished transaction is the only thing in a new segment: the segment goes. */
static void
test_torn_unfinished_transaction_alone_in_segment(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "partial-seg");
	sluice_arena *a = sluice_arena_create();
	write_unfinished(&env, a, true);
	uint64_t *firsts = NULL;
	size_t n = tu_segments(&env, &firsts);
	assert_int_equal(n, 2);
	assert_int_equal(firsts[1], 4);
	free(firsts);

	sluice_writer_recovery rec;
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, &rec));
	assert_int_equal(rec.partial_txseq, 4);
	assert_true(rec.partial_bytes > 0);
	assert_int_equal(rec.torn_bytes, 0);
	assert_true(rec.removed_segment);
	n = tu_segments(&env, &firsts);
	assert_int_equal(n, 1);
	free(firsts);
	sluice_arena_reset(a);
	finish_after_recovery(&env, a, w);
	n = tu_segments(&env, &firsts);
	assert_int_equal(n, 2);
	assert_int_equal(firsts[1], 4);
	free(firsts);
	sluice_arena_free(a);
	tu_env_free(&env);
}

/*
 * Whatever sluice_writer_durable_txseq / sluice_writer_durable_position report
 * after a flush must survive a crash and writer recovery (capture acknowledges
 * durable_end_lsn to the source, which may then discard it). Here a committed
 * transaction shares its frame with the start of the next one, which never
 * commits: the frame is cut (frame_target reached) while OPEN and flushed.
 */
static void
committed_txn_in_open_frame(bool after_flushed_txns)
{
	tu_env env;
	tu_env_init(&env, "durable");
	sluice_arena *a = sluice_arena_create();
	sluice_writer_options o = tu_writer_options(4096, 1024 * 1024);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, NULL));
	tu_append(w, tu_std_relation(a));
	uint64_t base = 0;
	if (after_flushed_txns) {
		for (uint64_t t = 1; t <= 3; t++)
			assert_int_equal(tu_append_txn(w, a, (int64_t)t, 8, 1, 16), t);
		assert_true(sluice_writer_flush(w));
		base = 3;
	}
	/* A small committed transaction stays in the pending frame... */
	assert_int_equal(tu_append_txn(w, a, 500, 8, 1, 16), base + 1);
	/* ...and the next one's first row fills the frame, which is cut while it is open. */
	sluice_record *b = tu_begin(a, 600, 1, "node-a");
	tu_append(w, b);
	assert_int_equal(b->begin->txseq, base + 2);
	tu_append(w, tu_std_insert(a, 9, 1, 5000));
	assert_true(sluice_writer_flush(w));
	uint64_t durable = sluice_writer_durable_txseq(w);
	uint64_t durable_lsn = sluice_writer_durable_position(w);
	assert_true(durable >= base);
	assert_true(sluice_writer_close(w)); /* crash-like: transaction base+2 never commits */

	sluice_writer_recovery rec;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, &rec));
	assert_int_equal(rec.partial_txseq, base + 2);
	uint64_t kept = sluice_writer_last_txseq(w);
	if (kept < durable || sluice_writer_last_position(w) < durable_lsn)
		fprintf(stderr,
			"  BUG: writer reported txseq %" PRIu64 " (end LSN %" PRIu64
			") durable, but recovery kept only up to txseq %" PRIu64
			" (end LSN %" PRIu64 "), cutting %" PRIu64 " bytes\n",
			durable, durable_lsn, kept, sluice_writer_last_position(w),
			rec.partial_bytes);
	assert_true(kept >= durable);
	assert_true(sluice_writer_last_position(w) >= durable_lsn);
	assert_int_equal(tu_append_txn(w, a, 700, 8, 1, 16), kept + 1);
	assert_true(sluice_writer_close(w));
	verify_clean(env.store, env.trust, kept + 1);
	read_expect(env.store, env.trust, kept + 1, 700);
	sluice_arena_free(a);
	tu_env_free(&env);
}

static void
test_torn_durable_txn_sharing_open_frame_mid_segment(void **state)
{
	(void)state;
	committed_txn_in_open_frame(true);
}

static void
test_torn_durable_txn_sharing_open_frame_first_frame(void **state)
{
	(void)state;
	committed_txn_in_open_frame(false);
}

/* copy_store copies env's stream into a fresh store directory named tag. */
static sluice_store *
copy_store(tu_env *env, const char *tag, char store_dir[TU_PATH_MAX], char seg[TU_PATH_MAX],
	   uint64_t segment_first)
{
	char stream_dir[TU_PATH_MAX];
	char name[SLUICE_SEGMENT_NAME_SIZE];
	tu_path(store_dir, "%s/%s", env->dir, tag);
	assert_int_equal(mkdir(store_dir, 0755), 0);
	tu_path(stream_dir, "%s/%s", store_dir, TU_STREAM);
	tu_copy_dir(env->stream_dir, stream_dir);
	sluice_store_segment_name(segment_first, name);
	tu_path(seg, "%s/%s", stream_dir, name);
	sluice_store *s = NULL;
	assert_true(sluice_store_open(store_dir, &s));
	return s;
}

/* zero_range sets bytes [from, to) of a file to zero (and grows it if to is past the end). */
static void
zero_range(const char *path, uint64_t from, uint64_t to)
{
	sluice_buf b = {0};
	tu_read_file(path, &b);
	if (to > b.len) {
		sluice_buf_reserve(&b, to - b.len);
		memset(b.data + b.len, 0, to - b.len);
		b.len = to;
	}
	memset(b.data + from, 0, to - from);
	tu_write_file(path, b.data, b.len);
	sluice_buf_free(&b);
}

/* expect_torn_recovery: verify warns torn; the writer cuts cut bytes and keeps txns 1..last. */
static void
expect_torn_recovery(sluice_store *s, const tu_env *env, const char *seg, uint64_t cut,
		     uint64_t keep_size, uint64_t last)
{
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(s, TU_STREAM, env->trust, &fd, &rep);
	if (rep.problems || !rep.torn)
		tu_findings_print(&fd);
	assert_int_equal(rep.problems, 0);
	assert_true(rep.torn);
	tu_findings_free(&fd);
	read_expect(s, env->trust, last, 0);
	sluice_writer_recovery rec;
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(s, TU_STREAM, env->kp.key, NULL, &w, &rec));
	assert_int_equal(rec.torn_bytes, cut);
	assert_int_equal(rec.partial_bytes, 0);
	assert_int_equal(sluice_writer_last_txseq(w), last);
	assert_true(sluice_writer_close(w));
	assert_int_equal(tu_file_size(seg), keep_size);
	verify_clean(s, env->trust, last);
}

/* expect_damage: verify reports an error at the frame; the writer refuses to start. */
static void
expect_damage(sluice_store *s, const tu_env *env, uint64_t segment_first, uint64_t frame_off,
	      uint64_t readable_last)
{
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(segment_first, name);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(s, TU_STREAM, env->trust, &fd, &rep);
	if (!tu_findings_has_error(&fd, name, (int64_t)frame_off))
		tu_findings_print(&fd);
	assert_true(tu_findings_has_error(&fd, name, (int64_t)frame_off));
	assert_false(rep.torn);
	tu_findings_free(&fd);
	tu_read_stats st;
	tu_read_all(s, TU_STREAM, env->trust, 1, &st);
	assert_int_equal(st.end, SLUICE_READER_ERROR);
	assert_int_equal(st.last_txseq, readable_last);
	sluice_writer *w = NULL;
	assert_false(sluice_writer_open(s, TU_STREAM, env->kp.key, NULL, &w, NULL));
}

/*
 * Zero bytes at the end of the newest segment (space allocated by a crashed
 * append whose data never reached the disk) are a torn tail when they start
 * where a frame starts or, inside the last frame, at a 4 KiB block boundary;
 * zeros elsewhere inside a frame are damage.
 */
static void
test_torn_zero_filled_tail(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "zeros");
	sluice_arena *a = sluice_arena_create();
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	tu_append(w, tu_std_relation(a));
	for (uint64_t t = 1; t <= 3; t++) {
		assert_int_equal(tu_append_txn(w, a, (int64_t)t, 2, 2, 100), t);
		assert_true(sluice_writer_flush(w));
	}
	/* The last frame: ~9 KiB of incompressible bytes, so it spans a 4 KiB boundary. */
	assert_int_equal(tu_append_txn(w, a, 4, 2, 1, 9000), 4);
	assert_true(sluice_writer_close(w));
	char path[TU_PATH_MAX];
	tu_segment_path(&env, 1, path);
	tu_frame_info *fr = NULL;
	size_t nf = tu_segment_frames(path, &fr);
	assert_int_equal(nf, 4);
	const uint64_t F = fr[3].offset, E = fr[3].offset + fr[3].size;
	free(fr);
	assert_int_equal(E, tu_file_size(path));
	uint64_t B = (F + SLUICE_FRAME_HEADER_SIZE + 4095) / 4096 * 4096;
	assert_true(B > F + SLUICE_FRAME_HEADER_SIZE && B + 64 < E);

	char sd[TU_PATH_MAX], seg[TU_PATH_MAX];
	sluice_store *s;

	/* Zeros appended after the last frame: torn, cut off, nothing lost. */
	s = copy_store(&env, "appended", sd, seg, 1);
	zero_range(seg, E, E + 100);
	expect_torn_recovery(s, &env, seg, 100, E, 4);
	sluice_store_close(s);

	/* The whole last frame zeroed: torn from its start. */
	s = copy_store(&env, "whole", sd, seg, 1);
	zero_range(seg, F, E);
	expect_torn_recovery(s, &env, seg, E - F, F, 3);
	sluice_store_close(s);

	/* The last frame zeroed from a block boundary inside its payload to the end. */
	s = copy_store(&env, "block", sd, seg, 1);
	zero_range(seg, B, E);
	expect_torn_recovery(s, &env, seg, E - F, F, 3);
	sluice_store_close(s);

	/*
	 * Zeros from a point that is neither a frame start nor a block boundary,
	 * covering whole blocks to the end: the blocks never reached the disk, torn.
	 */
	s = copy_store(&env, "unaligned", sd, seg, 1);
	zero_range(seg, B + 1, E);
	tu_flip_byte(seg, B, 0x5A); /* the run of zeros starts at B + 1 exactly */
	expect_torn_recovery(s, &env, seg, E - F, F, 3);
	sluice_store_close(s);

	/* A run of zeros inside the payload, not reaching the end: damage. */
	s = copy_store(&env, "inside", sd, seg, 1);
	zero_range(seg, F + SLUICE_FRAME_HEADER_SIZE + 100, F + SLUICE_FRAME_HEADER_SIZE + 300);
	expect_damage(s, &env, 1, F, 3);
	sluice_store_close(s);

	/* An earlier (complete) frame zeroed while later frames follow: damage. */
	s = copy_store(&env, "earlier", sd, seg, 1);
	tu_frame_info *fr2 = NULL;
	tu_segment_frames(seg, &fr2);
	zero_range(seg, fr2[1].offset, fr2[1].offset + fr2[1].size);
	expect_damage(s, &env, 1, fr2[1].offset, 1);
	free(fr2);
	sluice_store_close(s);

	sluice_arena_free(a);
	tu_env_free(&env);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_torn_every_offset_of_last_frame),
		cmocka_unit_test(test_torn_zero_filled_tail),
		cmocka_unit_test(test_torn_unfinished_transaction),
		cmocka_unit_test(test_torn_unfinished_transaction_with_torn_frame),
		cmocka_unit_test(test_torn_unfinished_transaction_alone_in_segment),
		cmocka_unit_test(test_torn_durable_txn_sharing_open_frame_mid_segment),
		cmocka_unit_test(test_torn_durable_txn_sharing_open_frame_first_frame),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
