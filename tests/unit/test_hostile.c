/*
 * Hostile stores: the suite builds a directory of damaged copies of one
 * stream and checks that verify, the reader and the writer reach the same
 * verdict on each, in bounded time and memory (issue 10).
 */
#include "testutil.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What a check found, as bits of the child's exit status. */
#define V_ERROR_AT 0x01 /* verify reported an error at the expected segment and offset */
#define V_TORN     0x02 /* verify called something a torn tail */
#define V_READ_ERR 0x04 /* the reader stopped with an error */
#define V_WRITER   0x08 /* a writer opened the stream (and may have cut it) */
#define V_VERIFY_E 0x10 /* verify reported at least one error */

/* The verdict every tool must reach on a damaged store. */
#define V_DAMAGED (V_ERROR_AT | V_READ_ERR | V_VERIFY_E)

typedef struct hostile_fixture {
	tu_env env;
	uint64_t *firsts; /* owned: segments of the clean stream */
	size_t nsegs;
	uint64_t ntx;
	char newest[TU_PATH_MAX];
	tu_frame_info *frames; /* owned: frames of the newest segment */
	size_t nframes;
	int cases;
} hostile_fixture;

typedef struct hostile_case {
	char store_dir[TU_PATH_MAX];
	char stream_dir[TU_PATH_MAX];
	char newest[TU_PATH_MAX]; /* the newest segment of the copy */
} hostile_case;

static int
hostile_setup(void **state)
{
	hostile_fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	tu_env_init(&f->env, "hostile");
	sluice_arena *a = sluice_arena_create();
	sluice_writer_options o = tu_writer_options(2048, 12 * 1024);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(f->env.store, TU_STREAM, f->env.kp.key, &o, &w, NULL));
	tu_append(w, tu_std_relation(a));
	for (uint64_t t = 1; t <= 30; t++) {
		sluice_arena_reset(a);
		assert_int_equal(tu_append_txn(w, a, (int64_t)(t * 1000), 21, 2, 700), t);
		assert_true(sluice_writer_flush(w));
	}
	assert_true(sluice_writer_close(w));
	sluice_arena_free(a);
	f->ntx = 30;
	f->nsegs = tu_segments(&f->env, &f->firsts);
	assert_true(f->nsegs >= 3);
	tu_segment_path(&f->env, f->firsts[f->nsegs - 1], f->newest);
	f->nframes = tu_segment_frames(f->newest, &f->frames);
	assert_true(f->nframes >= 3);
	*state = f;
	return 0;
}

static int
hostile_teardown(void **state)
{
	hostile_fixture *f = *state;
	free(f->firsts);
	free(f->frames);
	tu_env_free(&f->env);
	free(f);
	return 0;
}

/* hostile_copy makes a fresh copy of the clean stream: one hostile store of the directory. */
static void
hostile_copy(hostile_fixture *f, const char *tag, hostile_case *c)
{
	char dir[TU_PATH_MAX];
	tu_path(dir, "%s/hostile", f->env.dir);
	if (mkdir(dir, 0755) != 0)
		assert_int_equal(errno, EEXIST);
	tu_path(c->store_dir, "%s/%s", dir, tag);
	assert_int_equal(mkdir(c->store_dir, 0755), 0);
	tu_path(c->stream_dir, "%s/%s", c->store_dir, TU_STREAM);
	tu_copy_dir(f->env.stream_dir, c->stream_dir);
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(f->firsts[f->nsegs - 1], name);
	tu_path(c->newest, "%s/%s", c->stream_dir, name);
	f->cases++;
}

/* Finding callback of the child: notes an error at the expected place. */
typedef struct child_ctx {
	const char *segment;
	int64_t offset; /* -2: any offset */
	int bits;
} child_ctx;

static void
child_finding(void *ctx, bool is_error, const char *segment, int64_t off, const char *cause)
{
	child_ctx *c = ctx;
	if (getenv("HOSTILE_VERBOSE"))
		fprintf(stderr, "    %s: %s @%" PRId64 ": %s\n", is_error ? "error" : "warning",
			segment ? segment : "-", off, cause);
	if (!is_error)
		return;
	c->bits |= V_VERIFY_E;
	if (segment != NULL && strcmp(segment, c->segment) == 0 &&
	    (c->offset == -2 || c->offset == off))
		c->bits |= V_ERROR_AT;
}

/* child_check runs verify, a reader and a writer on the store and exits with the bits. */
static void __attribute__((noreturn))
child_check(const hostile_fixture *f, const hostile_case *c, const char *segment, int64_t off)
{
	sluice_store *s = NULL;
	if (!sluice_store_open(c->store_dir, &s))
		_exit(100);
	child_ctx ctx = {.segment = segment, .offset = off, .bits = 0};
	sluice_verify_report rep;
	if (!sluice_verify_stream(s, TU_STREAM, f->env.trust, child_finding, &ctx, &rep))
		_exit(101);
	if (rep.torn)
		ctx.bits |= V_TORN;
	sluice_reader *r = NULL;
	if (sluice_reader_open(s, TU_STREAM, f->env.trust, 1, &r)) {
		const sluice_record *rec;
		sluice_reader_status st;
		while ((st = sluice_reader_next(r, &rec)) == SLUICE_READER_RECORD)
			;
		if (st == SLUICE_READER_ERROR)
			ctx.bits |= V_READ_ERR;
		sluice_reader_close(r);
	} else
		ctx.bits |= V_READ_ERR;
	sluice_writer *w = NULL;
	if (sluice_writer_open(s, TU_STREAM, f->env.kp.key, NULL, &w, NULL)) {
		ctx.bits |= V_WRITER;
		sluice_writer_close(w);
	}
	sluice_store_close(s);
	_exit(ctx.bits);
}

/*
 * hostile_expect checks the store in a child process with a time limit and
 * asserts the verdict bits, the time taken and the child's peak memory.
 */
static void
hostile_expect(const hostile_fixture *f, const hostile_case *c, const char *what,
	       const char *segment, int64_t off, int want, int seconds, long max_rss_mib)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm((unsigned)seconds);
		child_check(f, c, segment, off);
	}
	int status = 0;
	struct rusage ru;
	memset(&ru, 0, sizeof(ru));
	assert_int_equal(wait4(pid, &status, 0, &ru), pid);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (WIFSIGNALED(status))
		fail_msg("%s: the check was killed by signal %d after %.1f s (stalled?)", what,
			 WTERMSIG(status), secs);
	assert_true(WIFEXITED(status));
	int got = WEXITSTATUS(status);
	if (got != want)
		fail_msg("%s: verdict %#x, expected %#x (error at %s@%" PRId64 " %#x, torn %#x, "
			 "reader error %#x, writer opened %#x)",
			 what, got, want, segment, off, V_ERROR_AT, V_TORN, V_READ_ERR, V_WRITER);
	long rss_mib = ru.ru_maxrss / 1024;
	if (max_rss_mib > 0 && rss_mib > max_rss_mib)
		fail_msg("%s: the check used %ld MiB (limit %ld MiB)", what, rss_mib, max_rss_mib);
}

static void
newest_name(const hostile_fixture *f, char name[SLUICE_SEGMENT_NAME_SIZE])
{
	sluice_store_segment_name(f->firsts[f->nsegs - 1], name);
}

/* append_bytes appends len copies of byte to a file, keeping its mode. */
static void
append_bytes(const char *path, uint8_t byte, size_t len)
{
	sluice_buf b = {0};
	tu_read_file(path, &b);
	sluice_buf_reserve(&b, len);
	memset(b.data + b.len, byte, len);
	b.len += len;
	tu_write_file(path, b.data, b.len);
	sluice_buf_free(&b);
}

/*
 * Finding 1: a tampered last frame followed by zero bytes, or by non-zero
 * filler up to a block boundary and then zeros, is damage, not a torn tail.
 */
static void
test_hostile_damage_disguised_as_torn(void **state)
{
	hostile_fixture *f = *state;
	char name[SLUICE_SEGMENT_NAME_SIZE];
	newest_name(f, name);
	const tu_frame_info *last = &f->frames[f->nframes - 1];
	uint64_t payload = last->offset + SLUICE_FRAME_HEADER_SIZE;
	uint64_t end = last->offset + last->size;
	hostile_case c;

	/* The payload altered, then zeros from a block boundary after the end. */
	hostile_copy(f, "tampered-zero-padded", &c);
	tu_flip_byte(c.newest, payload + 5, 0x01);
	uint64_t boundary = (end + 4095) / 4096 * 4096;
	append_bytes(c.newest, 0, (size_t)(boundary - end + 4096));
	hostile_expect(f, &c, "tampered + zeros", name, (int64_t)last->offset, V_DAMAGED, 30, 0);

	/* The same with non-zero filler up to the boundary first. */
	hostile_copy(f, "tampered-filler-zeros", &c);
	tu_flip_byte(c.newest, payload + 5, 0x01);
	append_bytes(c.newest, 0x5a, (size_t)(boundary - end));
	append_bytes(c.newest, 0, 8192);
	hostile_expect(f, &c, "tampered + filler + zeros", name, (int64_t)last->offset, V_DAMAGED,
		       30, 0);

	/* The header altered (a flag bit) and the frame's own bytes zeroed from inside it. */
	hostile_copy(f, "tampered-header-zeros", &c);
	tu_flip_byte(c.newest, last->offset + 40, 0x01); /* time_min */
	append_bytes(c.newest, 0, 4096);
	hostile_expect(f, &c, "tampered header + zeros", name, (int64_t)last->offset, V_DAMAGED, 30,
		       0);

	/* An authentic header of an earlier frame replayed at the end, payload cut short. */
	hostile_copy(f, "replayed-header", &c);
	sluice_buf seg = {0};
	tu_read_file(c.newest, &seg);
	sluice_buf_append(&seg, seg.data + f->frames[1].offset, SLUICE_FRAME_HEADER_SIZE + 3);
	tu_write_file(c.newest, seg.data, seg.len);
	sluice_buf_free(&seg);
	hostile_expect(f, &c, "replayed header", name, (int64_t)end, V_DAMAGED, 30, 0);

	/* Zeros over a frame in the middle, complete frames after it: damage. */
	hostile_copy(f, "zeroed-middle-frame", &c);
	sluice_buf z = {0};
	tu_read_file(c.newest, &z);
	memset(z.data + f->frames[1].offset, 0, f->frames[1].size);
	tu_write_file(c.newest, z.data, z.len);
	sluice_buf_free(&z);
	hostile_expect(f, &c, "zeroed middle frame", name, (int64_t)f->frames[1].offset, V_DAMAGED,
		       30, 0);

	/* The writer never truncated any of them. */
	hostile_copy(f, "check-untouched", &c);
	tu_flip_byte(c.newest, payload + 5, 0x01);
	append_bytes(c.newest, 0, (size_t)(boundary - end + 4096));
	uint64_t size = tu_file_size(c.newest);
	hostile_expect(f, &c, "writer refuses", name, (int64_t)last->offset, V_DAMAGED, 30, 0);
	assert_int_equal(tu_file_size(c.newest), size);
}

/* Genuine crash leftovers stay torn tails: the writer cuts them and goes on. */
static void
test_hostile_genuine_torn_tails(void **state)
{
	hostile_fixture *f = *state;
	char name[SLUICE_SEGMENT_NAME_SIZE];
	newest_name(f, name);
	const tu_frame_info *last = &f->frames[f->nframes - 1];
	uint64_t end = last->offset + last->size;
	hostile_case c;

	/* Zeros allocated after the last frame (the next append's blocks never written). */
	hostile_copy(f, "zeros-after-last", &c);
	append_bytes(c.newest, 0, 5000);
	hostile_expect(f, &c, "zero tail", name, -2, V_TORN | V_WRITER, 30, 0);
	assert_int_equal(tu_file_size(c.newest), end);

	/* The last frame cut inside its payload. */
	hostile_copy(f, "cut-payload", &c);
	tu_truncate_file(c.newest, end - 7);
	hostile_expect(f, &c, "cut payload", name, -2, V_TORN | V_WRITER, 30, 0);
	assert_int_equal(tu_file_size(c.newest), last->offset);
}

/*
 * Finding 2: a forged header naming the trusted key with a 1 GiB payload is
 * refused before anything of that size is allocated or read.
 */
static void
test_hostile_forged_length_no_allocation(void **state)
{
	hostile_fixture *f = *state;
	char name[SLUICE_SEGMENT_NAME_SIZE];
	newest_name(f, name);
	hostile_case c;
	hostile_copy(f, "forged-1gib", &c);
	sluice_buf seg = {0};
	tu_read_file(c.newest, &seg);
	uint64_t at = seg.len;
	/* A copy of the last header, lengths raised (the signature no longer matches). */
	const tu_frame_info *last = &f->frames[f->nframes - 1];
	uint8_t h[SLUICE_FRAME_HEADER_SIZE];
	memcpy(h, seg.data + last->offset, sizeof(h));
	uint32_t big = (uint32_t)1 << 30;
	for (int i = 0; i < 4; i++) {
		h[56 + i] = (uint8_t)(big >> (8 * i)); /* payload_len */
		h[60 + i] = (uint8_t)(big >> (8 * i)); /* raw_len */
	}
	sluice_buf_append(&seg, h, sizeof(h));
	tu_write_file(c.newest, seg.data, seg.len);
	sluice_buf_free(&seg);
	/* The claimed payload is present (sparse), full of bytes that are not zero at its end. */
	tu_truncate_file(c.newest, at + SLUICE_FRAME_HEADER_SIZE + big);
	hostile_expect(f, &c, "forged 1 GiB frame", name, (int64_t)at, V_DAMAGED, 60, 600);
}

/* Finding 3: a FIFO or a symbolic link where a segment should be is refused, never waited on. */
static void
test_hostile_not_regular_files(void **state)
{
	hostile_fixture *f = *state;
	hostile_case c;
	char name[SLUICE_SEGMENT_NAME_SIZE], path[TU_PATH_MAX];

	hostile_copy(f, "fifo", &c);
	uint64_t next = f->firsts[f->nsegs - 1];
	assert_int_equal(unlink(c.newest), 0);
	assert_int_equal(mkfifo(c.newest, 0644), 0);
	sluice_store_segment_name(next, name);
	hostile_expect(f, &c, "fifo segment", name, -2, V_ERROR_AT | V_READ_ERR | V_VERIFY_E, 20,
		       0);

	hostile_copy(f, "symlink", &c);
	tu_path(path, "%s.real", c.newest);
	assert_int_equal(rename(c.newest, path), 0);
	assert_int_equal(symlink(path, c.newest), 0);
	hostile_expect(f, &c, "symlinked segment", name, -2, V_ERROR_AT | V_READ_ERR | V_VERIFY_E,
		       20, 0);
}

/* Finding 3: a sparse zero tail of 1 TiB is damage, decided without reading it. */
static void
test_hostile_sparse_zero_tail(void **state)
{
	hostile_fixture *f = *state;
	char name[SLUICE_SEGMENT_NAME_SIZE];
	newest_name(f, name);
	hostile_case c;
	hostile_copy(f, "sparse-1tib", &c);
	uint64_t size = tu_file_size(c.newest);
	if (truncate(c.newest, (off_t)(size + ((uint64_t)1 << 40))) != 0) {
		/* The file system has no room for such a file; nothing to test here. */
		fprintf(stderr, "  (sparse 1 TiB file not supported here: %s)\n", strerror(errno));
		return;
	}
	hostile_expect(f, &c, "sparse 1 TiB zero tail", name, (int64_t)size, V_DAMAGED, 20, 0);
}

/* make_empty creates an empty file. */
static void
make_empty(const char *path)
{
	FILE *fp = fopen(path, "wx");
	assert_non_null(fp);
	fclose(fp);
}

/* seal_copy seals the newest segment of a copy, so that the next one is expected. */
static void
seal_copy(const hostile_fixture *f, const hostile_case *c)
{
	sluice_store *s = NULL;
	assert_true(sluice_store_open(c->store_dir, &s));
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(s, TU_STREAM, f->env.kp.key, NULL, &w, NULL));
	assert_true(sluice_writer_seal(w));
	assert_true(sluice_writer_close(w));
	sluice_store_close(s);
}

/*
 * Finding 5: every tool reaches the same verdict on the same segment list:
 * an extra 0000000000000000.seg, and an empty newest segment with a name
 * that is not where the stream goes on.
 */
static void
test_hostile_one_verdict_on_segment_names(void **state)
{
	hostile_fixture *f = *state;
	hostile_case c;
	char path[TU_PATH_MAX], src[TU_PATH_MAX];
	const char *zero = "0000000000000000.seg";

	hostile_copy(f, "segment-zero-copy", &c);
	tu_path(src, "%s/0000000000000001.seg", c.stream_dir);
	tu_path(path, "%s/%s", c.stream_dir, zero);
	tu_copy_file(src, path);
	/* The writer looks only at the tail, which is whole: it may open. */
	hostile_expect(f, &c, "copy as segment 0", zero, -2, V_DAMAGED | V_WRITER, 30, 0);

	hostile_copy(f, "segment-zero-empty", &c);
	tu_path(path, "%s/%s", c.stream_dir, zero);
	make_empty(path);
	hostile_expect(f, &c, "empty segment 0", zero, -2, V_DAMAGED | V_WRITER, 30, 0);

	char name[SLUICE_SEGMENT_NAME_SIZE];
	hostile_copy(f, "empty-misnamed-newest", &c);
	seal_copy(f, &c);
	sluice_store_segment_name(f->ntx + 3, name);
	tu_path(path, "%s/%s", c.stream_dir, name);
	make_empty(path);
	hostile_expect(f, &c, "empty misnamed newest", name, -1, V_DAMAGED, 30, 0);
	assert_int_equal(access(path, F_OK), 0); /* the writer did not remove it */

	/* Correctly named, the same empty segment is where the writer goes on. */
	hostile_copy(f, "empty-named-newest", &c);
	seal_copy(f, &c);
	sluice_store_segment_name(f->ntx + 1, name);
	tu_path(path, "%s/%s", c.stream_dir, name);
	make_empty(path);
	hostile_expect(f, &c, "empty newest", name, -2, V_WRITER, 30, 0);
}

/*
 * Finding 7: a stream cut back to an older state is whole, but its newest
 * signed heartbeat (and commit) time shows it: verify reports both, and
 * sluice_verify_freshness finds them from the newest segments alone.
 */
static void
test_hostile_rollback_shows_in_freshness(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "fresh");
	sluice_arena *a = sluice_arena_create();
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	tu_append(w, tu_std_relation(a));
	const int64_t t1 = 1700000000000000, t2 = t1 + 3600000000;
	assert_int_equal(tu_append_txn(w, a, t1 - 5, 1, 1, 10), 1);
	tu_append(w, tu_heartbeat(a, t1, 1));
	assert_true(sluice_writer_flush(w));
	char path[TU_PATH_MAX];
	tu_segment_path(&env, 1, path);
	uint64_t old_size = tu_file_size(path);
	assert_int_equal(tu_append_txn(w, a, t2 - 5, 1, 1, 10), 2);
	tu_append(w, tu_heartbeat(a, t2, 2));
	assert_true(sluice_writer_close(w));

	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(env.store, TU_STREAM, env.trust, &fd, &rep);
	assert_int_equal(rep.problems, 0);
	assert_true(rep.newest_heartbeat_us == t2);
	assert_true(rep.newest_commit_us == t2 - 5);
	tu_findings_free(&fd);
	int64_t c = 0, h = 0;
	assert_true(sluice_verify_freshness(env.store, TU_STREAM, env.trust, &c, &h));
	assert_true(h == t2 && c == t2 - 5);

	/* Rolled back to the first flush: still whole, but an hour older. */
	tu_truncate_file(path, old_size);
	tu_verify(env.store, TU_STREAM, env.trust, &fd, &rep);
	assert_int_equal(rep.problems, 0);
	assert_int_equal(rep.warnings, 0);
	assert_true(rep.newest_heartbeat_us == t1);
	tu_findings_free(&fd);
	assert_true(sluice_verify_freshness(env.store, TU_STREAM, env.trust, &c, &h));
	assert_true(h == t1 && c == t1 - 5);
	sluice_arena_free(a);
	tu_env_free(&env);
}

/*
 * Finding 8: a reader lists the stream directory once and follows the
 * segments it names, instead of listing it again at every segment switch.
 */
static void
test_hostile_listing_once(void **state)
{
	hostile_fixture *f = *state;
	hostile_case c;
	hostile_copy(f, "many-junk-files", &c);
	char path[TU_PATH_MAX];
	for (int i = 0; i < 2000; i++) {
		tu_path(path, "%s/junk-%04d.tmp", c.stream_dir, i);
		make_empty(path);
	}
	sluice_store *s = NULL;
	assert_true(sluice_store_open(c.store_dir, &s));
	tu_read_stats st;
	tu_read_all(s, TU_STREAM, f->env.trust, 1, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_int_equal(st.last_txseq, f->ntx);
	/* Once at the start and once at the live end, whatever the number of segments. */
	if (sluice_store_list_calls(s) > 2)
		fail_msg("the reader listed the stream %" PRIu64 " times for %zu segments",
			 sluice_store_list_calls(s), f->nsegs);
	sluice_store_close(s);
}

/*
 * Finding 4: a frame validly signed by the trusted key whose few KB of
 * payload decompress to millions of empty records is refused as soon as it
 * holds more records than its header counts, without decoding the rest.
 */
static void
test_hostile_decode_bomb(void **state)
{
	hostile_fixture *f = *state;
	char name[SLUICE_SEGMENT_NAME_SIZE];
	newest_name(f, name);
	hostile_case c;
	hostile_copy(f, "decode-bomb", &c);
	sluice_buf seg = {0};
	tu_read_file(c.newest, &seg);
	const tu_frame_info *last = &f->frames[f->nframes - 1];
	sluice_frame_header h;
	memset(&h, 0, sizeof(h));
	h.stream_id = last->hdr.stream_id;
	h.frame_seq = last->hdr.frame_seq + 1;
	h.txseq_start = h.txseq_end = last->hdr.txseq_end;
	h.record_count = 10;
	memcpy(h.key_id, sluice_key_id(f->env.kp.key), SLUICE_FRAME_KEY_ID_SIZE);
	sluice_frame_hash(seg.data + last->offset, h.prev_hash);
	size_t raw_len = (size_t)64 << 20; /* 64 Mi empty records */
	uint8_t *raw = calloc(1, raw_len);
	assert_non_null(raw);
	sluice_frame_codec *codec = sluice_frame_codec_create(3);
	uint8_t hash[SLUICE_FRAME_HASH_SIZE];
	uint64_t at = seg.len;
	assert_int_equal(sluice_frame_encode(codec, &h, raw, raw_len,
					     sluice_key_secret(f->env.kp.key), &seg, hash),
			 SLUICE_FRAME_OK);
	assert_true(seg.len - at < 64 * 1024); /* a few KB on disk */
	free(raw);
	sluice_frame_codec_free(codec);
	tu_write_file(c.newest, seg.data, seg.len);
	sluice_buf_free(&seg);
	hostile_expect(f, &c, "decode bomb", name, (int64_t)at, V_DAMAGED, 60, 400);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostile_damage_disguised_as_torn),
		cmocka_unit_test(test_hostile_genuine_torn_tails),
		cmocka_unit_test(test_hostile_forged_length_no_allocation),
		cmocka_unit_test(test_hostile_not_regular_files),
		cmocka_unit_test(test_hostile_sparse_zero_tail),
		cmocka_unit_test(test_hostile_one_verdict_on_segment_names),
		cmocka_unit_test(test_hostile_rollback_shows_in_freshness),
		cmocka_unit_test(test_hostile_listing_once),
		cmocka_unit_test(test_hostile_decode_bomb),
	};
	return cmocka_run_group_tests(tests, hostile_setup, hostile_teardown);
}
