/* The JetStream message model (store/natslog.c): header decoding and segment replay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "natslog.h"

static const char SEG1[] = "0000000000000001";

static void
test_parse(void **state)
{
	(void)state;
	sluice_natslog_msg m;
	assert_int_equal(sluice_natslog_parse(SEG1, "0", NULL, NULL, &m), SLUICE_NATSLOG_OK);
	assert_int_equal(m.kind, SLUICE_NATSLOG_BYTES);
	assert_int_equal(m.segment, 1);
	assert_int_equal(sluice_natslog_parse("00000000000004d2", "1234", NULL, NULL, &m),
			 SLUICE_NATSLOG_OK);
	assert_int_equal(m.segment, 1234);
	assert_int_equal(m.value, 1234);
	assert_int_equal(sluice_natslog_parse(SEG1, NULL, "17", NULL, &m), SLUICE_NATSLOG_OK);
	assert_int_equal(m.kind, SLUICE_NATSLOG_TRUNCATE);
	assert_int_equal(sluice_natslog_parse(SEG1, NULL, NULL, "1", &m), SLUICE_NATSLOG_OK);
	assert_int_equal(m.kind, SLUICE_NATSLOG_REMOVE);
	/* Refused: missing, malformed, ambiguous, out of range. */
	const char *bad_segments[] = {NULL,
				      "",
				      "1",
				      "000000000000000",
				      "00000000000000001",
				      "000000000000000A",
				      "0000000000000000",
				      "000000000000000g",
				      " 000000000000001"};
	for (size_t i = 0; i < sizeof(bad_segments) / sizeof(bad_segments[0]); i++)
		assert_int_equal(sluice_natslog_parse(bad_segments[i], "0", NULL, NULL, &m),
				 SLUICE_NATSLOG_E_HEADER);
	const char *bad_offsets[] = {
		"", "-1", "+1", "01", "1 ", "0x10", "1099511627777", "99999999999999999999999"};
	for (size_t i = 0; i < sizeof(bad_offsets) / sizeof(bad_offsets[0]); i++)
		assert_int_equal(sluice_natslog_parse(SEG1, bad_offsets[i], NULL, NULL, &m),
				 SLUICE_NATSLOG_E_HEADER);
	assert_int_equal(sluice_natslog_parse(SEG1, NULL, NULL, NULL, &m), SLUICE_NATSLOG_E_HEADER);
	assert_int_equal(sluice_natslog_parse(SEG1, "0", "0", NULL, &m), SLUICE_NATSLOG_E_HEADER);
	assert_int_equal(sluice_natslog_parse(SEG1, NULL, NULL, "0", &m), SLUICE_NATSLOG_E_HEADER);
}

static sluice_natslog_status
put(sluice_natslog *log, uint64_t seq, uint64_t seg, uint64_t off, const char *bytes)
{
	sluice_natslog_msg m = {SLUICE_NATSLOG_BYTES, seg, off};
	return sluice_natslog_apply(log, seq, &m, bytes, strlen(bytes));
}

static void
assert_segment(sluice_natslog *log, uint64_t seg, const char *want)
{
	char buf[64];
	size_t got = 0;
	uint64_t size = 0;
	assert_int_equal(sluice_natslog_size(log, seg, &size), SLUICE_NATSLOG_OK);
	assert_int_equal(size, strlen(want));
	assert_int_equal(sluice_natslog_read(log, seg, 0, buf, sizeof(buf), &got),
			 SLUICE_NATSLOG_OK);
	assert_int_equal(got, strlen(want));
	assert_memory_equal(buf, want, got);
}

static void
test_replay(void **state)
{
	(void)state;
	sluice_natslog *log = sluice_natslog_create(NULL, NULL);
	assert_int_equal(put(log, 3, 1, 0, "abc"), SLUICE_NATSLOG_OK);
	assert_int_equal(put(log, 5, 1, 3, "defg"), SLUICE_NATSLOG_OK);
	assert_int_equal(put(log, 6, 9, 0, "xy"), SLUICE_NATSLOG_OK);
	assert_segment(log, 1, "abcdefg");
	/* A read across pieces, from the middle. */
	char buf[4];
	size_t got = 0;
	assert_int_equal(sluice_natslog_read(log, 1, 2, buf, 3, &got), SLUICE_NATSLOG_OK);
	assert_int_equal(got, 3);
	assert_memory_equal(buf, "cde", 3);
	/* A delivered-again message (a writer's own publish) is ignored. */
	assert_int_equal(put(log, 5, 1, 3, "defg"), SLUICE_NATSLOG_OK);
	/* A cut inside a piece, then bytes again from there. */
	sluice_natslog_msg cut = {SLUICE_NATSLOG_TRUNCATE, 1, 5};
	assert_int_equal(sluice_natslog_apply(log, 7, &cut, NULL, 0), SLUICE_NATSLOG_OK);
	assert_segment(log, 1, "abcde");
	assert_int_equal(put(log, 8, 1, 5, "Z"), SLUICE_NATSLOG_OK);
	assert_segment(log, 1, "abcdeZ");
	sluice_natslog_msg rm = {SLUICE_NATSLOG_REMOVE, 9, 0};
	assert_int_equal(sluice_natslog_apply(log, 10, &rm, NULL, 0), SLUICE_NATSLOG_OK);
	assert_false(sluice_natslog_exists(log, 9));
	uint64_t *firsts = NULL;
	size_t n = 0;
	sluice_natslog_list(log, &firsts, &n);
	assert_int_equal(n, 1);
	assert_int_equal(firsts[0], 1);
	free(firsts);
	assert_int_equal(sluice_natslog_last_seq(log), 10);
	sluice_natslog_free(log);
}

static void
test_refused(void **state)
{
	(void)state;
	/* A removed message leaves a gap: the model breaks there, for good. */
	sluice_natslog *log = sluice_natslog_create(NULL, NULL);
	assert_int_equal(put(log, 1, 1, 0, "abc"), SLUICE_NATSLOG_OK);
	assert_int_equal(put(log, 3, 1, 6, "ghi"), SLUICE_NATSLOG_E_OFFSET);
	uint64_t seq = 0;
	assert_int_equal(sluice_natslog_problem(log, &seq), SLUICE_NATSLOG_E_OFFSET);
	assert_int_equal(seq, 3);
	assert_int_equal(put(log, 4, 1, 3, "def"), SLUICE_NATSLOG_E_OFFSET);
	sluice_natslog_free(log);
	/* A replayed message (bytes again at an earlier offset). */
	log = sluice_natslog_create(NULL, NULL);
	assert_int_equal(put(log, 1, 1, 0, "abc"), SLUICE_NATSLOG_OK);
	assert_int_equal(put(log, 2, 1, 0, "abc"), SLUICE_NATSLOG_E_OFFSET);
	sluice_natslog_free(log);
	/* Cuts beyond the end or of a missing segment; empty bytes. */
	log = sluice_natslog_create(NULL, NULL);
	assert_int_equal(put(log, 1, 1, 0, "abc"), SLUICE_NATSLOG_OK);
	sluice_natslog_msg cut = {SLUICE_NATSLOG_TRUNCATE, 1, 4};
	assert_int_equal(sluice_natslog_apply(log, 2, &cut, NULL, 0), SLUICE_NATSLOG_E_TRUNCATE);
	sluice_natslog_free(log);
	log = sluice_natslog_create(NULL, NULL);
	sluice_natslog_msg rm = {SLUICE_NATSLOG_REMOVE, 5, 0};
	assert_int_equal(sluice_natslog_apply(log, 2, &rm, NULL, 0), SLUICE_NATSLOG_E_TRUNCATE);
	sluice_natslog_free(log);
	log = sluice_natslog_create(NULL, NULL);
	sluice_natslog_msg empty = {SLUICE_NATSLOG_BYTES, 1, 0};
	assert_int_equal(sluice_natslog_apply(log, 1, &empty, "", 0), SLUICE_NATSLOG_E_HEADER);
	sluice_natslog_free(log);
}

/* Bytes dropped from memory are fetched again by sequence. */
static int fetches;

static bool
fetch_again(void *ctx, uint64_t seq, uint64_t segment, uint64_t offset, sluice_buf *out)
{
	(void)ctx;
	fetches++;
	char piece[16];
	snprintf(piece, sizeof(piece), "%c%c", (char)('a' + seq), (char)('a' + segment + offset));
	sluice_buf_append(out, piece, 2);
	return true;
}

static void
test_trim(void **state)
{
	(void)state;
	sluice_natslog *log = sluice_natslog_create(fetch_again, NULL);
	sluice_natslog_msg m = {SLUICE_NATSLOG_BYTES, 1, 0};
	char b[2] = {'a' + 1, 'a' + 1};
	assert_int_equal(sluice_natslog_apply(log, 1, &m, b, 2), SLUICE_NATSLOG_OK);
	assert_int_equal(sluice_natslog_kept_bytes(log), 2);
	/* A newer segment: the older one, not open, is dropped from memory. */
	assert_int_equal(put(log, 2, 7, 0, "zz"), SLUICE_NATSLOG_OK);
	assert_int_equal(sluice_natslog_kept_bytes(log), 2);
	fetches = 0;
	assert_segment(log, 1, "bb");
	assert_int_equal(fetches, 1);
	/* Pinned (open), it is kept once read. */
	sluice_natslog_pin(log, 1);
	assert_segment(log, 1, "bb");
	assert_segment(log, 1, "bb");
	assert_int_equal(fetches, 2);
	assert_int_equal(sluice_natslog_kept_bytes(log), 4);
	sluice_natslog_unpin(log, 1);
	assert_int_equal(sluice_natslog_kept_bytes(log), 2);
	sluice_natslog_free(log);
}

/* A reader starting mid-stream holds segments from its floor on only. */
static void
test_floor(void **state)
{
	(void)state;
	sluice_natslog *log = sluice_natslog_create(NULL, NULL);
	assert_int_equal(put(log, 10, 1, 0, "abc"), SLUICE_NATSLOG_OK);
	sluice_natslog_set_floor(log, 5);
	assert_false(sluice_natslog_exists(log, 1));
	/* Bytes of an earlier segment not at its (unknown) end, a cut and a removal of
	 * one: passed over, not a break. */
	assert_int_equal(put(log, 11, 1, 3, "def"), SLUICE_NATSLOG_OK);
	assert_int_equal(put(log, 12, 5, 0, "xy"), SLUICE_NATSLOG_OK);
	sluice_natslog_msg cut = {SLUICE_NATSLOG_TRUNCATE, 3, 9};
	assert_int_equal(sluice_natslog_apply(log, 13, &cut, NULL, 0), SLUICE_NATSLOG_OK);
	sluice_natslog_msg rm = {SLUICE_NATSLOG_REMOVE, 4, 0};
	assert_int_equal(sluice_natslog_apply(log, 14, &rm, NULL, 0), SLUICE_NATSLOG_OK);
	assert_int_equal(put(log, 15, 5, 2, "z"), SLUICE_NATSLOG_OK);
	assert_int_equal(sluice_natslog_problem(log, NULL), SLUICE_NATSLOG_OK);
	assert_segment(log, 5, "xyz");
	assert_int_equal(sluice_natslog_skipped(log), 3);
	assert_int_equal(sluice_natslog_applied(log), 6);
	uint64_t *firsts = NULL;
	size_t n = 0;
	sluice_natslog_list(log, &firsts, &n);
	assert_int_equal(n, 1);
	assert_int_equal(firsts[0], 5);
	free(firsts);
	/* From the floor on, the model refuses as before. */
	assert_int_equal(put(log, 16, 5, 9, "q"), SLUICE_NATSLOG_E_OFFSET);
	sluice_natslog_free(log);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),   cmocka_unit_test(test_replay),
		cmocka_unit_test(test_refused), cmocka_unit_test(test_trim),
		cmocka_unit_test(test_floor),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
