/* Tampering with sealed segments: every damaged byte, missing, duplicated or swapped segment is
 * found. */
#include "testutil.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where a clean read found each record. */
typedef struct rec_pos {
	uint64_t segment_first;
	uint64_t frame_offset;
} rec_pos;

typedef struct tamper_fixture {
	tu_env env;
	uint64_t *firsts;
	size_t nsegs;
	uint64_t ntx;
	rec_pos *recs;
	size_t nrecs;
	int copies;
} tamper_fixture;

static void
read_positions(sluice_store *store, const sluice_trust *trust, rec_pos **out, size_t *n)
{
	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(store, TU_STREAM, trust, 1, &r));
	size_t cap = 0;
	*out = NULL;
	*n = 0;
	for (;;) {
		const sluice_record *rec;
		sluice_reader_status s = sluice_reader_next(r, &rec);
		if (s == SLUICE_READER_ERROR)
			fail_msg("clean stream: %s", sluice_reader_error(r));
		if (s == SLUICE_READER_WAIT)
			break;
		if (s != SLUICE_READER_RECORD)
			fail_msg("unexpected reader status %d", (int)s);
		if (*n == cap) {
			cap = cap ? 2 * cap : 1024;
			*out = realloc(*out, cap * sizeof(**out));
			assert_non_null(*out);
		}
		const sluice_reader_position *p = sluice_reader_position_get(r);
		(*out)[*n].segment_first = p->segment_first;
		(*out)[*n].frame_offset = p->frame_offset;
		(*n)++;
	}
	sluice_reader_close(r);
}

static int
tamper_setup(void **state)
{
	tamper_fixture *f = calloc(1, sizeof(*f));
	tu_env_init(&f->env, "tamper");
	sluice_writer_options o = tu_writer_options(2048, 16 * 1024);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(f->env.store, TU_STREAM, f->env.kp.key, &o, &w, NULL));
	sluice_arena *a = sluice_arena_create();
	tu_append(w, tu_std_relation(a));
	for (uint64_t t = 1; t <= 60; t++) {
		sluice_arena_reset(a);
		/* 3 rows of ~900 random bytes: a transaction spans two 2 KiB frames. */
		assert_int_equal(tu_append_txn(w, a, (int64_t)(t * 1000), 11, 3, 900), t);
	}
	f->ntx = 60;
	assert_true(sluice_writer_close(w));
	sluice_arena_free(a);

	f->nsegs = tu_segments(&f->env, &f->firsts);
	assert_true(f->nsegs >= 5);
	read_positions(f->env.store, f->env.trust, &f->recs, &f->nrecs);

	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(f->env.store, TU_STREAM, f->env.trust, &fd, &rep);
	assert_int_equal(rep.problems, 0);
	assert_int_equal(rep.warnings, 0);
	tu_findings_free(&fd);
	*state = f;
	return 0;
}

static int
tamper_teardown(void **state)
{
	tamper_fixture *f = *state;
	free(f->firsts);
	free(f->recs);
	tu_env_free(&f->env);
	free(f);
	return 0;
}

/* records_before counts clean records in frames before (seg, off). */
static size_t
records_before(const tamper_fixture *f, uint64_t seg, uint64_t off)
{
	size_t n = 0;
	for (size_t i = 0; i < f->nrecs; i++)
		if (f->recs[i].segment_first < seg ||
		    (f->recs[i].segment_first == seg && f->recs[i].frame_offset < off))
			n++;
	return n;
}

/*
 * expect_reader_stops reads the stream and checks that it ends in an error
 * after exactly the records of frames before (seg, off), none from after.
 */
static void
expect_reader_stops(const tamper_fixture *f, sluice_store *store, const sluice_trust *trust,
		    uint64_t seg, uint64_t off)
{
	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(store, TU_STREAM, trust, 1, &r));
	size_t n = 0;
	sluice_reader_status s;
	for (;;) {
		const sluice_record *rec;
		s = sluice_reader_next(r, &rec);
		if (s != SLUICE_READER_RECORD)
			break;
		const sluice_reader_position *p = sluice_reader_position_get(r);
		if (!(p->segment_first < seg || (p->segment_first == seg && p->frame_offset < off)))
			fail_msg("reader returned a record of segment %" PRIu64 " frame %" PRIu64
				 " at/after the damage at segment %" PRIu64 " offset %" PRIu64,
				 p->segment_first, p->frame_offset, seg, off);
		n++;
	}
	if (s != SLUICE_READER_ERROR)
		fail_msg("reader returned %s instead of an error (damage at segment %" PRIu64
			 " offset %" PRIu64 ")",
			 s == SLUICE_READER_WAIT ? "WAIT" : "?", seg, off);
	assert_true(strlen(sluice_reader_error(r)) > 0);
	assert_int_equal(n, records_before(f, seg, off));
	sluice_reader_close(r);
}

/* expect_error_at verifies and checks every error names segment seg at offset off. */
static void
expect_error_at(sluice_store *store, const sluice_trust *trust, uint64_t seg, int64_t off,
		const char *what)
{
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(seg, name);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(store, TU_STREAM, trust, &fd, &rep);
	bool ok = rep.problems > 0 && tu_findings_has_error(&fd, name, off);
	for (size_t i = 0; i < fd.n; i++)
		if (fd.v[i].is_error &&
		    (strcmp(fd.v[i].segment, name) != 0 || fd.v[i].offset != off))
			ok = false; /* blamed the wrong place */
	if (!ok) {
		fprintf(stderr, "  %s: expected errors only at %s offset %" PRId64 "\n", what, name,
			off);
		tu_findings_print(&fd);
	}
	tu_findings_free(&fd);
	if (!ok)
		fail_msg("%s not reported at %s offset %" PRId64, what, name, off);
}

static void
expect_clean(sluice_store *store, const sluice_trust *trust)
{
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(store, TU_STREAM, trust, &fd, &rep);
	if (rep.problems != 0)
		tu_findings_print(&fd);
	assert_int_equal(rep.problems, 0);
	assert_int_equal(rep.warnings, 0);
	tu_findings_free(&fd);
}

typedef struct field_byte {
	const char *name;
	int off; /* header offset, or -1..-3 for payload first/middle/last byte */
} field_byte;

static const field_byte field_bytes[] = {
	{"magic[0]", 0},        {"magic[3]", 3},         {"version", 4},
	{"flags", 6},           {"flags(high)", 7},      {"stream_id", 8},
	{"frame_seq", 16},      {"txseq_start", 24},     {"txseq_start(high)", 31},
	{"txseq_end", 32},      {"txseq_end(high)", 39}, {"time_min", 40},
	{"time_max", 48},       {"payload_len", 56},     {"payload_len(high)", 59},
	{"raw_len", 60},        {"record_count", 64},    {"codec", 68},
	{"schema_version", 69}, {"reserved", 70},        {"key_id[0]", 72},
	{"key_id[7]", 79},      {"payload_hash[0]", 80}, {"payload_hash[31]", 111},
	{"prev_hash[0]", 112},  {"prev_hash[15]", 127},  {"prev_hash[31]", 143},
	{"signature[0]", 144},  {"signature[31]", 175},  {"signature[63]", 207},
	{"payload[first]", -1}, {"payload[middle]", -2}, {"payload[last]", -3},
};

static void
test_tamper_every_field(void **state)
{
	tamper_fixture *f = *state;
	/* The first segment and a middle one; both sealed. */
	size_t targets[] = {0, f->nsegs / 2};
	size_t flips = 0;
	for (size_t t = 0; t < 2; t++) {
		uint64_t seg = f->firsts[targets[t]];
		char path[TU_PATH_MAX];
		tu_segment_path(&f->env, seg, path);
		assert_int_equal(tu_file_mode(path), 0444);
		tu_frame_info *fr = NULL;
		size_t nf = tu_segment_frames(path, &fr);
		assert_true(nf >= 3);
		assert_true(fr[nf - 1].hdr.flags & SLUICE_FRAME_SEAL);
		size_t which[] = {0, nf / 2, nf - 1};
		for (size_t k = 0; k < 3; k++) {
			const tu_frame_info *fi = &fr[which[k]];
			for (size_t b = 0; b < sizeof(field_bytes) / sizeof(field_bytes[0]); b++) {
				uint64_t plen = fi->size - SLUICE_FRAME_HEADER_SIZE;
				uint64_t at;
				if (field_bytes[b].off >= 0)
					at = fi->offset + (uint64_t)field_bytes[b].off;
				else if (field_bytes[b].off == -1)
					at = fi->offset + SLUICE_FRAME_HEADER_SIZE;
				else if (field_bytes[b].off == -2)
					at = fi->offset + SLUICE_FRAME_HEADER_SIZE + plen / 2;
				else
					at = fi->offset + fi->size - 1;
				char what[160];
				snprintf(what, sizeof(what),
					 "flip of %s in frame %zu/%zu of segment %zu",
					 field_bytes[b].name, which[k], nf, targets[t]);
				tu_flip_byte(path, at, 0x01);
				expect_error_at(f->env.store, f->env.trust, seg,
						(int64_t)fi->offset, what);
				expect_reader_stops(f, f->env.store, f->env.trust, seg, fi->offset);
				tu_flip_byte(path, at, 0x01);
				flips++;
			}
		}
		assert_int_equal(tu_file_mode(path), 0444);
		free(fr);
	}
	assert_int_equal(flips, 2 * 3 * (sizeof(field_bytes) / sizeof(field_bytes[0])));
	/* Every flip was undone: the stream is whole again. */
	expect_clean(f->env.store, f->env.trust);
}

/* make_copy copies the pristine stream into a new store; returns it. */
static sluice_store *
make_copy(tamper_fixture *f, char store_dir[TU_PATH_MAX], char stream_dir[TU_PATH_MAX])
{
	tu_path(store_dir, "%s/copy%d", f->env.dir, f->copies++);
	assert_int_equal(mkdir(store_dir, 0755), 0);
	tu_path(stream_dir, "%s/%s", store_dir, TU_STREAM);
	tu_copy_dir(f->env.stream_dir, stream_dir);
	sluice_store *s = NULL;
	assert_true(sluice_store_open(store_dir, &s));
	expect_clean(s, f->env.trust);
	return s;
}

static void
seg_path(const char *stream_dir, uint64_t first, char out[TU_PATH_MAX])
{
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(first, name);
	tu_path(out, "%s/%s", stream_dir, name);
}

static void
test_tamper_delete_middle_segment(void **state)
{
	tamper_fixture *f = *state;
	char sd[TU_PATH_MAX], st[TU_PATH_MAX], p[TU_PATH_MAX];
	sluice_store *s = make_copy(f, sd, st);
	size_t k = f->nsegs / 2;
	seg_path(st, f->firsts[k], p);
	assert_int_equal(unlink(p), 0);
	/* The gap shows at the first frame of the segment after the missing one. */
	expect_error_at(s, f->env.trust, f->firsts[k + 1], 0, "deleted middle segment");
	expect_reader_stops(f, s, f->env.trust, f->firsts[k], 0);
	sluice_store_close(s);
}

static void
test_tamper_delete_first_segment(void **state)
{
	tamper_fixture *f = *state;
	char sd[TU_PATH_MAX], st[TU_PATH_MAX], p[TU_PATH_MAX];
	sluice_store *s = make_copy(f, sd, st);
	seg_path(st, f->firsts[0], p);
	assert_int_equal(unlink(p), 0);
	/* The stream no longer starts at its genesis. */
	expect_error_at(s, f->env.trust, f->firsts[1], 0, "deleted first segment");
	sluice_store_close(s);
}

static void
test_tamper_duplicate_segment(void **state)
{
	tamper_fixture *f = *state;
	char sd[TU_PATH_MAX], st[TU_PATH_MAX], src[TU_PATH_MAX], dst[TU_PATH_MAX];
	sluice_store *s = make_copy(f, sd, st);
	/* A copy of segment k under a valid name between k and k+1. */
	size_t k = f->nsegs / 2;
	assert_true(f->firsts[k + 1] > f->firsts[k] + 1);
	seg_path(st, f->firsts[k], src);
	seg_path(st, f->firsts[k] + 1, dst);
	tu_copy_file(src, dst);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(s, TU_STREAM, f->env.trust, &fd, &rep);
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(f->firsts[k] + 1, name);
	if (!tu_findings_has_error(&fd, name, 0))
		tu_findings_print(&fd);
	assert_true(rep.problems > 0);
	assert_true(tu_findings_has_error(&fd, name, 0));
	tu_findings_free(&fd);
	expect_reader_stops(f, s, f->env.trust, f->firsts[k] + 1, 0);
	sluice_store_close(s);
}

static void
test_tamper_duplicate_last_sealed_as_newest(void **state)
{
	tamper_fixture *f = *state;
	char sd[TU_PATH_MAX], st[TU_PATH_MAX], src[TU_PATH_MAX], dst[TU_PATH_MAX];
	sluice_store *s = make_copy(f, sd, st);
	/* A copy of the first segment placed after the newest one. */
	seg_path(st, f->firsts[0], src);
	seg_path(st, f->ntx + 5, dst);
	tu_copy_file(src, dst);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(s, TU_STREAM, f->env.trust, &fd, &rep);
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(f->ntx + 5, name);
	if (!tu_findings_has_error(&fd, name, 0))
		tu_findings_print(&fd);
	assert_true(tu_findings_has_error(&fd, name, 0));
	tu_findings_free(&fd);
	sluice_store_close(s);
}

static void
test_tamper_replace_segment(void **state)
{
	tamper_fixture *f = *state;
	char sd[TU_PATH_MAX], st[TU_PATH_MAX], a[TU_PATH_MAX], b[TU_PATH_MAX];
	sluice_store *s = make_copy(f, sd, st);
	/* Segment 3's bytes replaced by segment 1's (both sealed, same key). */
	sluice_buf data = {0};
	seg_path(st, f->firsts[1], a);
	seg_path(st, f->firsts[3], b);
	tu_read_file(a, &data);
	tu_write_file(b, data.data, data.len);
	sluice_buf_free(&data);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(s, TU_STREAM, f->env.trust, &fd, &rep);
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(f->firsts[3], name);
	if (!tu_findings_has_error(&fd, name, 0))
		tu_findings_print(&fd);
	assert_true(tu_findings_has_error(&fd, name, 0));
	tu_findings_free(&fd);
	expect_reader_stops(f, s, f->env.trust, f->firsts[3], 0);
	sluice_store_close(s);
}

static void
test_tamper_swap_segments(void **state)
{
	tamper_fixture *f = *state;
	char sd[TU_PATH_MAX], st[TU_PATH_MAX], a[TU_PATH_MAX], b[TU_PATH_MAX];
	sluice_store *s = make_copy(f, sd, st);
	sluice_buf da = {0}, db = {0};
	seg_path(st, f->firsts[1], a);
	seg_path(st, f->firsts[2], b);
	tu_read_file(a, &da);
	tu_read_file(b, &db);
	tu_write_file(a, db.data, db.len);
	tu_write_file(b, da.data, da.len);
	sluice_buf_free(&da);
	sluice_buf_free(&db);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(s, TU_STREAM, f->env.trust, &fd, &rep);
	char na[SLUICE_SEGMENT_NAME_SIZE], nb[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(f->firsts[1], na);
	sluice_store_segment_name(f->firsts[2], nb);
	bool ok = tu_findings_has_error(&fd, na, 0) && tu_findings_has_error(&fd, nb, 0);
	if (!ok)
		tu_findings_print(&fd);
	assert_true(ok);
	tu_findings_free(&fd);
	expect_reader_stops(f, s, f->env.trust, f->firsts[1], 0);
	sluice_store_close(s);
}

static void
test_tamper_cut_sealed_segment(void **state)
{
	tamper_fixture *f = *state;
	char sd[TU_PATH_MAX], st[TU_PATH_MAX], p[TU_PATH_MAX];
	sluice_store *s = make_copy(f, sd, st);
	size_t k = 1;
	seg_path(st, f->firsts[k], p);
	tu_frame_info *fr = NULL;
	size_t nf = tu_segment_frames(p, &fr);
	assert_true(nf >= 3);
	/* A few bytes missing at the end of a segment that is not the newest. */
	tu_truncate_file(p, tu_file_size(p) - 3);
	expect_error_at(s, f->env.trust, f->firsts[k], (int64_t)fr[nf - 1].offset,
			"cut sealed segment");
	/* The whole seal frame missing: a later segment exists after an unsealed one. */
	tu_truncate_file(p, fr[nf - 1].offset);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(s, TU_STREAM, f->env.trust, &fd, &rep);
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(f->firsts[k], name);
	if (!tu_findings_has_error(&fd, name, -1))
		tu_findings_print(&fd);
	assert_true(tu_findings_has_error(&fd, name, -1));
	tu_findings_free(&fd);
	/* The reader gets every record of the segment, then refuses to go on. */
	expect_reader_stops(f, s, f->env.trust, f->firsts[k + 1], 0);
	free(fr);
	sluice_store_close(s);
}

static void
test_tamper_untrusted_key(void **state)
{
	tamper_fixture *f = *state;
	tu_keypair other;
	char keys[TU_PATH_MAX];
	tu_path(keys, "%s/keys", f->env.dir);
	tu_keypair_make(&other, keys, "other");

	/* Trusting only B: the stream signed by A is not accepted. */
	sluice_trust *only_b = tu_trust_of(other.pubpath, (const char *)NULL);
	tu_findings fd;
	sluice_verify_report rep;
	tu_verify(f->env.store, TU_STREAM, only_b, &fd, &rep);
	assert_true(rep.problems >= 1);
	char first[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(f->firsts[0], first);
	assert_true(tu_findings_has_error(&fd, first, 0));
	bool mentions = false;
	for (size_t i = 0; i < fd.n; i++)
		if (fd.v[i].is_error && strstr(fd.v[i].cause, "not trusted") != NULL &&
		    strstr(fd.v[i].cause, f->env.kp.id_hex) != NULL)
			mentions = true;
	assert_true(mentions);
	tu_findings_free(&fd);
	expect_reader_stops(f, f->env.store, only_b, f->firsts[0], 0);

	/* An empty trust set trusts nothing. */
	sluice_trust *none = sluice_trust_create();
	tu_verify(f->env.store, TU_STREAM, none, &fd, &rep);
	assert_true(rep.problems >= 1);
	tu_findings_free(&fd);
	sluice_trust_free(none);

	/* Trusting A and B passes. */
	sluice_trust *both = tu_trust_of(other.pubpath, f->env.kp.pubpath, (const char *)NULL);
	expect_clean(f->env.store, both);
	tu_read_stats rs;
	tu_read_all(f->env.store, TU_STREAM, both, 1, &rs);
	assert_int_equal(rs.end, SLUICE_READER_WAIT);
	assert_int_equal(rs.transactions, f->ntx);

	/* A writer with key B refuses to continue a stream signed by A. */
	sluice_writer *w = NULL;
	assert_false(sluice_writer_open(f->env.store, TU_STREAM, other.key, NULL, &w, NULL));
	expect_clean(f->env.store, f->env.trust);

	sluice_trust_free(both);
	sluice_trust_free(only_b);
	tu_keypair_free(&other);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tamper_every_field),
		cmocka_unit_test(test_tamper_delete_middle_segment),
		cmocka_unit_test(test_tamper_delete_first_segment),
		cmocka_unit_test(test_tamper_duplicate_segment),
		cmocka_unit_test(test_tamper_duplicate_last_sealed_as_newest),
		cmocka_unit_test(test_tamper_replace_segment),
		cmocka_unit_test(test_tamper_swap_segments),
		cmocka_unit_test(test_tamper_cut_sealed_segment),
		cmocka_unit_test(test_tamper_untrusted_key),
	};
	return cmocka_run_group_tests(tests, tamper_setup, tamper_teardown);
}
