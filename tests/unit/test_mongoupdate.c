/*
 * Unit tests of sluice_mongo_apply_update (apply/mongo/mongoupdate.c): a change
 * event's updateDescription applied to a document, compared byte for byte with
 * the document it must give (the semantics of apply_update in
 * tests/mongo/stream_replay.py; tests/mongo/test_update_oracle.py checks random
 * cases against that oracle).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <bson/bson.h>

#include "bson_zoo.h"
#include "mongoupdate.h"

/* ------------------------------------------------------------ raw BSON */

/* A raw BSON document written element by element (for values libbson would rewrite). */
typedef struct rawdoc {
	uint8_t *b;
	size_t n, cap;
} rawdoc;

static void
rd_put(rawdoc *d, const void *p, size_t len)
{
	if (d->n + len > d->cap) {
		d->cap = (d->n + len) * 2 + 64;
		d->b = realloc(d->b, d->cap);
		assert_non_null(d->b);
	}
	if (len > 0)
		memcpy(d->b + d->n, p, len);
	d->n += len;
}

static void
rd_u32(rawdoc *d, uint32_t v)
{
	uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	rd_put(d, le, 4);
}

static void
rd_begin(rawdoc *d)
{
	memset(d, 0, sizeof(*d));
	rd_u32(d, 0);
}

/* rd_el appends an element: type, key, the value's bytes as they are. */
static void
rd_el(rawdoc *d, uint8_t type, const char *key, const void *val, size_t vlen)
{
	rd_put(d, &type, 1);
	rd_put(d, key, strlen(key) + 1);
	rd_put(d, val, vlen);
}

static void
rd_end(rawdoc *d)
{
	uint8_t z = 0;
	rd_put(d, &z, 1);
	d->b[0] = (uint8_t)d->n;
	d->b[1] = (uint8_t)(d->n >> 8);
	d->b[2] = (uint8_t)(d->n >> 16);
	d->b[3] = (uint8_t)(d->n >> 24);
}

/* rd_str appends a BSON string value (length, bytes, NUL) of len bytes. */
static void
rd_str(rawdoc *d, const char *s, size_t len)
{
	uint8_t z = 0;
	rd_u32(d, (uint32_t)len + 1);
	rd_put(d, s, len);
	rd_put(d, &z, 1);
}

/* ------------------------------------------------------------ checks */

static void
print_hex(const char *what, const uint8_t *p, size_t n)
{
	print_message("%s (%zu bytes): ", what, n);
	for (size_t i = 0; i < n; i++)
		print_message("%02x", p[i]);
	print_message("\n");
}

static void
print_json(const char *what, const uint8_t *p, size_t n)
{
	bson_t b;
	if (bson_init_static(&b, p, n)) {
		char *j = bson_as_canonical_extended_json(&b, NULL);
		print_message("%s: %s\n", what, j != NULL ? j : "(not printable)");
		bson_free(j);
	}
}

/* expect_raw: applying ud to doc gives want, byte for byte. */
static void
expect_raw(const uint8_t *doc, size_t doc_len, const uint8_t *ud, size_t ud_len,
	   const uint8_t *want, size_t want_len)
{
	bson_t out;
	bson_init(&out);
	char err[256] = "unset";
	bool ok = sluice_mongo_apply_update(doc, doc_len, ud, ud_len, &out, err, sizeof(err));
	if (!ok)
		print_error("sluice_mongo_apply_update failed: %s\n", err);
	assert_true(ok);
	assert_string_equal(err, "");
	const uint8_t *got = bson_get_data(&out);
	if (out.len != want_len || memcmp(got, want, want_len) != 0) {
		print_json("document", doc, doc_len);
		print_json("update  ", ud, ud_len);
		print_json("want    ", want, want_len);
		print_json("got     ", got, out.len);
		print_hex("want", want, want_len);
		print_hex("got ", got, out.len);
		bson_destroy(&out);
		fail_msg("the result differs from the expected document");
	}
	bson_destroy(&out);
}

/* expect: as expect_raw with documents; it destroys doc, ud and want. */
static void
expect(bson_t *doc, bson_t *ud, bson_t *want)
{
	expect_raw(bson_get_data(doc), doc->len, bson_get_data(ud), ud->len, bson_get_data(want),
		   want->len);
	bson_destroy(doc);
	bson_destroy(ud);
	bson_destroy(want);
}

/* expect_fail_raw: applying ud to doc fails with an error message. */
static void
expect_fail_raw(const uint8_t *doc, size_t doc_len, const uint8_t *ud, size_t ud_len)
{
	/* In buffers of their own size, so that ASan sees any read past them. */
	uint8_t *d = malloc(doc_len ? doc_len : 1), *u = malloc(ud_len ? ud_len : 1);
	assert_non_null(d);
	assert_non_null(u);
	if (doc_len)
		memcpy(d, doc, doc_len);
	if (ud_len)
		memcpy(u, ud, ud_len);
	bson_t out;
	bson_init(&out);
	char err[256] = "";
	bool ok = sluice_mongo_apply_update(d, doc_len, u, ud_len, &out, err, sizeof(err));
	print_message("error: %s\n", err);
	assert_false(ok);
	assert_true(strlen(err) > 0);
	/* A tiny or absent error buffer is not overrun. */
	char small[4] = {'x', 'x', 'x', 'x'};
	bson_reinit(&out);
	assert_false(sluice_mongo_apply_update(d, doc_len, u, ud_len, &out, small, 2));
	assert_int_equal(small[1], '\0');
	assert_int_equal(small[2], 'x');
	bson_reinit(&out);
	assert_false(sluice_mongo_apply_update(d, doc_len, u, ud_len, &out, NULL, 0));
	bson_destroy(&out);
	free(d);
	free(u);
}

static void
expect_fail(bson_t *doc, bson_t *ud)
{
	expect_fail_raw(bson_get_data(doc), doc->len, bson_get_data(ud), ud->len);
	bson_destroy(doc);
	bson_destroy(ud);
}

/* ------------------------------------------------------------ updatedFields */

static void
test_set_top_in_place(void **state)
{
	(void)state;
	expect(BCON_NEW("_id", BCON_INT32(1), "a", BCON_INT32(1), "b", BCON_UTF8("x"), "c",
			BCON_BOOL(true)),
	       BCON_NEW("updatedFields", "{", "b", BCON_DOUBLE(2.5), "}", "removedFields", "[", "]",
			"truncatedArrays", "[", "]"),
	       BCON_NEW("_id", BCON_INT32(1), "a", BCON_INT32(1), "b", BCON_DOUBLE(2.5), "c",
			BCON_BOOL(true)));
	/* A document replaced by a scalar, a scalar by a document, several fields at once. */
	expect(BCON_NEW("a", "{", "x", BCON_INT32(1), "}", "b", BCON_INT32(2), "c", BCON_INT32(3)),
	       BCON_NEW("updatedFields", "{", "c", "[", BCON_INT32(7), "]", "a", BCON_NULL, "b",
			"{", "y", BCON_UTF8("z"), "}", "}"),
	       BCON_NEW("a", BCON_NULL, "b", "{", "y", BCON_UTF8("z"), "}", "c", "[", BCON_INT32(7),
			"]"));
}

static void
test_set_new_field_last(void **state)
{
	(void)state;
	expect(BCON_NEW("_id", BCON_INT32(1), "z", BCON_INT32(1), "a", BCON_INT32(2)),
	       BCON_NEW("updatedFields", "{", "m", BCON_INT64(5), "b", BCON_UTF8("new"), "}"),
	       BCON_NEW("_id", BCON_INT32(1), "z", BCON_INT32(1), "a", BCON_INT32(2), "m",
			BCON_INT64(5), "b", BCON_UTF8("new")));
	/* An empty document, and an update description with nothing in it. */
	expect(bson_new(), BCON_NEW("updatedFields", "{", "a", BCON_INT32(1), "}"),
	       BCON_NEW("a", BCON_INT32(1)));
	expect(BCON_NEW("a", BCON_INT32(1)), bson_new(), BCON_NEW("a", BCON_INT32(1)));
}

static void
test_set_dotted_nested(void **state)
{
	(void)state;
	expect(BCON_NEW("a", "{", "b", BCON_INT32(1), "c", BCON_INT32(2), "}", "d", BCON_INT32(3)),
	       BCON_NEW("updatedFields", "{", "a.b", "{", "x", BCON_INT32(1), "}", "a.e",
			BCON_BOOL(false), "}"),
	       BCON_NEW("a", "{", "b", "{", "x", BCON_INT32(1), "}", "c", BCON_INT32(2), "e",
			BCON_BOOL(false), "}", "d", BCON_INT32(3)));
	/* Three levels down; the value set before is walked into by a later path. */
	expect(BCON_NEW("a", "{", "b", "{", "c", BCON_INT32(1), "}", "}"),
	       BCON_NEW("updatedFields", "{", "a.b.c", BCON_INT32(2), "n", "{", "k", BCON_INT32(1),
			"}", "n.l", BCON_INT32(2), "}"),
	       BCON_NEW("a", "{", "b", "{", "c", BCON_INT32(2), "}", "}", "n", "{", "k",
			BCON_INT32(1), "l", BCON_INT32(2), "}"));
}

static void
test_set_missing_parents(void **state)
{
	(void)state;
	expect(BCON_NEW("a", BCON_INT32(1), "x", "{", "}"),
	       BCON_NEW("updatedFields", "{", "b.c.d", BCON_INT32(1), "x.y.z", BCON_UTF8("v"),
			"n.0", BCON_INT32(5), "}"),
	       BCON_NEW("a", BCON_INT32(1), "x", "{", "y", "{", "z", BCON_UTF8("v"), "}", "}", "b",
			"{", "c", "{", "d", BCON_INT32(1), "}", "}",
			/* a missing parent is a document, even before a numeric part */
			"n", "{", "0", BCON_INT32(5), "}"));
	/* A scalar on the way is replaced by a document (a replay over a later state). */
	expect(BCON_NEW("a", BCON_INT32(1), "b", BCON_INT32(2)),
	       BCON_NEW("updatedFields", "{", "a.b", BCON_INT32(3), "}"),
	       BCON_NEW("a", "{", "b", BCON_INT32(3), "}", "b", BCON_INT32(2)));
}

static void
test_set_array_element(void **state)
{
	(void)state;
	expect(BCON_NEW("a", "[", BCON_INT32(1), BCON_INT32(2), BCON_INT32(3), "]"),
	       BCON_NEW("updatedFields", "{", "a.1", BCON_UTF8("two"), "}"),
	       BCON_NEW("a", "[", BCON_INT32(1), BCON_UTF8("two"), BCON_INT32(3), "]"));
	/* Into a document in an array, and an array in an array. */
	expect(BCON_NEW("a", "[", BCON_INT32(1), "{", "k", BCON_INT32(1), "}", "[", BCON_INT32(0),
			"]", "]"),
	       BCON_NEW("updatedFields", "{", "a.1.k", BCON_INT32(2), "a.1.j", BCON_INT32(3),
			"a.2.0", BCON_INT32(9), "}"),
	       BCON_NEW("a", "[", BCON_INT32(1), "{", "k", BCON_INT32(2), "j", BCON_INT32(3), "}",
			"[", BCON_INT32(9), "]", "]"));
}

/* An array whose keys are not 0, 1, 2...: its elements are found by name, as in the oracle. */
static void
test_set_irregular_array(void **state)
{
	(void)state;
	const uint8_t one[] = {1, 0, 0, 0}, two[] = {2, 0, 0, 0}, nine[] = {9, 0, 0, 0};
	rawdoc arr, doc, warr, want;
	rd_begin(&arr);
	rd_el(&arr, BSON_TYPE_INT32, "0", one, 4);
	rd_el(&arr, BSON_TYPE_INT32, "2", two, 4);
	rd_el(&arr, BSON_TYPE_INT32, "2", two, 4);
	rd_end(&arr);
	rd_begin(&doc);
	rd_el(&doc, BSON_TYPE_ARRAY, "a", arr.b, arr.n);
	rd_end(&doc);
	/* a.2 is the first element named 2; a.1 is missing and the array long enough: appended. */
	rd_begin(&warr);
	rd_el(&warr, BSON_TYPE_INT32, "0", one, 4);
	rd_el(&warr, BSON_TYPE_INT32, "2", nine, 4);
	rd_el(&warr, BSON_TYPE_INT32, "2", two, 4);
	rd_el(&warr, BSON_TYPE_INT32, "1", nine, 4);
	rd_el(&warr, BSON_TYPE_NULL, "4", NULL, 0);
	rd_el(&warr, BSON_TYPE_INT32, "5", nine, 4);
	rd_end(&warr);
	rd_begin(&want);
	rd_el(&want, BSON_TYPE_ARRAY, "a", warr.b, warr.n);
	rd_end(&want);
	bson_t *ud = BCON_NEW("updatedFields", "{", "a.2", BCON_INT32(9), "a.1", BCON_INT32(9),
			      "a.5", BCON_INT32(9), "}");
	expect_raw(doc.b, doc.n, bson_get_data(ud), ud->len, want.b, want.n);
	bson_destroy(ud);
	free(arr.b);
	free(doc.b);
	free(warr.b);
	free(want.b);
}

static void
test_set_array_past_end(void **state)
{
	(void)state;
	expect(BCON_NEW("a", "[", BCON_INT32(1), "]", "b", BCON_INT32(0)),
	       BCON_NEW("updatedFields", "{", "a.3", BCON_INT32(4), "}"),
	       BCON_NEW("a", "[", BCON_INT32(1), BCON_NULL, BCON_NULL, BCON_INT32(4), "]", "b",
			BCON_INT32(0)));
	/* Right at the end; past the end with a document created in the new element. */
	expect(BCON_NEW("a", "[", BCON_INT32(1), "]", "e", "[", "]"),
	       BCON_NEW("updatedFields", "{", "a.1", BCON_INT32(2), "e.2.x", BCON_INT32(1), "}"),
	       BCON_NEW("a", "[", BCON_INT32(1), BCON_INT32(2), "]", "e", "[", BCON_NULL, BCON_NULL,
			"{", "x", BCON_INT32(1), "}", "]"));
}

static void
test_set_numeric_name_in_document(void **state)
{
	(void)state;
	/* In a document, "1" is a field name: set in place, or appended without padding. */
	expect(BCON_NEW("a", "{", "1", BCON_UTF8("x"), "0", BCON_UTF8("y"), "}"),
	       BCON_NEW("updatedFields", "{", "a.1", BCON_INT32(5), "a.7", BCON_INT32(6), "}"),
	       BCON_NEW("a", "{", "1", BCON_INT32(5), "0", BCON_UTF8("y"), "7", BCON_INT32(6),
			"}"));
	/* A top-level numeric name. */
	expect(BCON_NEW("0", BCON_INT32(1)),
	       BCON_NEW("updatedFields", "{", "2", BCON_INT32(2), "}"),
	       BCON_NEW("0", BCON_INT32(1), "2", BCON_INT32(2)));
}

static void
test_set_name_into_array(void **state)
{
	(void)state;
	/*
	 * A part that is not an index into an array: the server refuses such
	 * an update, so it comes only from a replay over a later state; as in
	 * the oracle, the array becomes a document that a later change sets
	 * right.
	 */
	expect(BCON_NEW("a", "[", BCON_INT32(1), BCON_INT32(2), "]", "b", BCON_INT32(1)),
	       BCON_NEW("updatedFields", "{", "a.x", BCON_INT32(5), "}"),
	       BCON_NEW("a", "{", "x", BCON_INT32(5), "}", "b", BCON_INT32(1)));
	expect(BCON_NEW("a", "[", BCON_INT32(1), "]"),
	       BCON_NEW("updatedFields", "{", "a.-1.y", BCON_INT32(5), "}"),
	       BCON_NEW("a", "{", "-1", "{", "y", BCON_INT32(5), "}", "}"));
	/* Nothing is removed or truncated through a name into an array. */
	expect(BCON_NEW("a", "[", BCON_INT32(1), "]"),
	       BCON_NEW("removedFields", "[", BCON_UTF8("a.x"), "]", "truncatedArrays", "[", "{",
			"field", BCON_UTF8("a.x"), "newSize", BCON_INT32(0), "}", "]"),
	       BCON_NEW("a", "[", BCON_INT32(1), "]"));
}

/* ------------------------------------------------------------ removedFields, truncatedArrays */

static void
test_remove(void **state)
{
	(void)state;
	expect(BCON_NEW("a", BCON_INT32(1), "b", "{", "c", BCON_INT32(1), "d", BCON_INT32(2), "}",
			"e", "[", BCON_INT32(1), BCON_INT32(2), BCON_INT32(3), "]", "f",
			BCON_INT32(4)),
	       BCON_NEW("updatedFields", "{", "}", "removedFields", "[", BCON_UTF8("a"),
			BCON_UTF8("b.c"), BCON_UTF8("e.1"), "]"),
	       BCON_NEW("b", "{", "d", BCON_INT32(2), "}", "e", "[", BCON_INT32(1), BCON_NULL,
			BCON_INT32(3), "]", "f", BCON_INT32(4)));
	/* Missing paths, paths through scalars and past an array's end change nothing. */
	expect(BCON_NEW("a", BCON_INT32(1), "e", "[", BCON_INT32(1), "]"),
	       BCON_NEW("removedFields", "[", BCON_UTF8("z"), BCON_UTF8("a.b"), BCON_UTF8("e.5"),
			BCON_UTF8("y.z.w"), "]"),
	       BCON_NEW("a", BCON_INT32(1), "e", "[", BCON_INT32(1), "]"));
	/* Set, then removed in the same event: the removal comes after. */
	expect(BCON_NEW("a", BCON_INT32(1)),
	       BCON_NEW("updatedFields", "{", "b.c", BCON_INT32(1), "}", "removedFields", "[",
			BCON_UTF8("b.c"), BCON_UTF8("a"), "]"),
	       BCON_NEW("b", "{", "}"));
}

static void
test_truncate(void **state)
{
	(void)state;
	expect(BCON_NEW("a", "[", BCON_INT32(1), BCON_INT32(2), BCON_INT32(3), BCON_INT32(4),
			BCON_INT32(5), "]", "b", "{", "c", "[", BCON_INT32(1), BCON_INT32(2), "]",
			"}"),
	       BCON_NEW("updatedFields", "{", "a.3", BCON_INT32(9), "}", "removedFields", "[", "]",
			"truncatedArrays", "[", "{", "field", BCON_UTF8("a"), "newSize",
			BCON_INT32(2), "}", "{", "field", BCON_UTF8("b.c"), "newSize",
			BCON_INT64(0), "}", "]"),
	       BCON_NEW("a", "[", BCON_INT32(1), BCON_INT32(2), BCON_NULL, BCON_INT32(9), "]", "b",
			"{", "c", "[", "]", "}"));
	/* Cut, then an element at the new end set. */
	expect(BCON_NEW("a", "[", BCON_INT32(1), BCON_INT32(2), BCON_INT32(3), "]"),
	       BCON_NEW("updatedFields", "{", "a.1", BCON_UTF8("x"), "}", "truncatedArrays", "[",
			"{", "field", BCON_UTF8("a"), "newSize", BCON_INT32(2), "}", "]"),
	       BCON_NEW("a", "[", BCON_INT32(1), BCON_UTF8("x"), "]"));
	/* newSize past the end, a field that is not an array, a missing field: nothing. */
	expect(BCON_NEW("a", "[", BCON_INT32(1), "]", "s", BCON_INT32(1)),
	       BCON_NEW("truncatedArrays", "[", "{", "field", BCON_UTF8("a"), "newSize",
			BCON_INT32(5), "}", "{", "field", BCON_UTF8("s"), "newSize", BCON_INT32(0),
			"}", "{", "field", BCON_UTF8("m.n"), "newSize", BCON_INT32(0), "}", "]"),
	       BCON_NEW("a", "[", BCON_INT32(1), "]", "s", BCON_INT32(1)));
}

/* ------------------------------------------------------------ disambiguatedPaths */

static void
test_disambiguated_paths(void **state)
{
	(void)state;
	/* "a.b" is one field name; 1 an index. a: {b} next to it is not touched. */
	expect(BCON_NEW("a.b", "{", "c", "[", BCON_INT32(0), "{", "d", BCON_INT32(1), "}",
			BCON_INT32(2), BCON_INT32(3), "]", "}", "a", "{", "b", BCON_INT32(1), "}"),
	       BCON_NEW("updatedFields", "{", "a.b.c.1.d", BCON_INT32(2), "a.b.n", BCON_INT32(3),
			"}", "removedFields", "[", BCON_UTF8("a.b.c.2"), "]", "truncatedArrays",
			"[", "{", "field", BCON_UTF8("a.b.c"), "newSize", BCON_INT32(3), "}", "]",
			"disambiguatedPaths", "{", "a.b.c.1.d", "[", BCON_UTF8("a.b"),
			BCON_UTF8("c"), BCON_INT32(1), BCON_UTF8("d"), "]", "a.b.c.2", "[",
			BCON_UTF8("a.b"), BCON_UTF8("c"), BCON_INT64(2), "]", "a.b.c", "[",
			BCON_UTF8("a.b"), BCON_UTF8("c"), "]", "a.b.n", "[", BCON_UTF8("a.b"),
			BCON_UTF8("n"), "]", "}"),
	       BCON_NEW("a.b", "{", "c", "[", BCON_INT32(0), "{", "d", BCON_INT32(2), "}",
			BCON_NULL, "]", "n", BCON_INT32(3), "}", "a", "{", "b", BCON_INT32(1),
			"}"));
	/* A path without an entry is split at dots; a string part "1" is an index too. */
	expect(BCON_NEW("a", "{", "b", BCON_INT32(1), "}", "x", "[", BCON_INT32(0), "]"),
	       BCON_NEW("updatedFields", "{", "a.b", BCON_INT32(2), "x.1", BCON_INT32(5), "}",
			"disambiguatedPaths", "{", "x.1", "[", BCON_UTF8("x"), BCON_UTF8("1"), "]",
			"}"),
	       BCON_NEW("a", "{", "b", BCON_INT32(2), "}", "x", "[", BCON_INT32(0), BCON_INT32(5),
			"]"));
	/* An integer part into a document names the field of its digits. */
	expect(BCON_NEW("d", "{", "3", BCON_INT32(0), "}"),
	       BCON_NEW("updatedFields", "{", "d.3", BCON_INT32(1), "}", "disambiguatedPaths", "{",
			"d.3", "[", BCON_UTF8("d"), BCON_INT32(3), "]", "}"),
	       BCON_NEW("d", "{", "3", BCON_INT32(1), "}"));
}

/* ------------------------------------------------------------ values kept byte for byte */

/* types_elements writes the elements of every kind whose bytes libbson could rewrite, and a few
 * more. */
static void
types_elements(rawdoc *d)
{
	uint8_t v[64];
	/* doubles: a signalling NaN with a payload, a quiet one, -0.0 */
	const uint64_t nans[] = {0x7ff0000000000001ull, 0xfff8000000abcdefull,
				 0x8000000000000000ull};
	const char *dnames[] = {"snan", "qnan", "negzero"};
	for (size_t i = 0; i < 3; i++) {
		for (int k = 0; k < 8; k++)
			v[k] = (uint8_t)(nans[i] >> (8 * k));
		rd_el(d, BSON_TYPE_DOUBLE, dnames[i], v, 8);
	}
	/* decimal128 (any 16 bytes), with a non-canonical encoding */
	for (int k = 0; k < 16; k++)
		v[k] = (uint8_t)(0xf0 + k);
	rd_el(d, BSON_TYPE_DECIMAL128, "dec", v, 16);
	/* binary subtype 4, 0x80 and the old subtype 2 with its inner length */
	const uint8_t bin4[] = {16, 0, 0, 0,  4,  1,  2,  3,  4,  5, 6,
				7,  8, 9, 10, 11, 12, 13, 14, 15, 16};
	rd_el(d, BSON_TYPE_BINARY, "uuid", bin4, sizeof(bin4));
	const uint8_t bin80[] = {3, 0, 0, 0, 0x80, 0, 0xff, 0};
	rd_el(d, BSON_TYPE_BINARY, "user", bin80, sizeof(bin80));
	const uint8_t bin2[] = {6, 0, 0, 0, 2, 2, 0, 0, 0, 'h', 'i'};
	rd_el(d, BSON_TYPE_BINARY, "bin2", bin2, sizeof(bin2));
	/* regexes: options out of order, repeated, unknown (libbson would sort and drop them) */
	const char re1[] = "^a.*b$\0xmi";
	rd_el(d, BSON_TYPE_REGEX, "re", re1, sizeof(re1));
	const char re2[] = "\0ssqi";
	rd_el(d, BSON_TYPE_REGEX, "re2", re2, sizeof(re2));
	/* timestamp, int64, int32, date, oid, bools, min/max key, null, undefined */
	const uint8_t ts[] = {7, 0, 0, 0, 0xf0, 0x53, 0x65, 0x65};
	rd_el(d, BSON_TYPE_TIMESTAMP, "ts", ts, 8);
	const uint8_t i64[] = {0, 0, 0, 0, 0, 0, 0, 0x80};
	rd_el(d, BSON_TYPE_INT64, "i64", i64, 8);
	const uint8_t i32[] = {0xff, 0xff, 0xff, 0x7f};
	rd_el(d, BSON_TYPE_INT32, "i32", i32, 4);
	rd_el(d, BSON_TYPE_DATE_TIME, "date", i64, 8);
	const uint8_t oid[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
	rd_el(d, BSON_TYPE_OID, "oid", oid, 12);
	const uint8_t t = 1, f = 0;
	rd_el(d, BSON_TYPE_BOOL, "t", &t, 1);
	rd_el(d, BSON_TYPE_BOOL, "f", &f, 1);
	rd_el(d, BSON_TYPE_MINKEY, "min", NULL, 0);
	rd_el(d, BSON_TYPE_MAXKEY, "max", NULL, 0);
	rd_el(d, BSON_TYPE_NULL, "null", NULL, 0);
	rd_el(d, BSON_TYPE_UNDEFINED, "undef", NULL, 0);
	/* strings, code and symbol holding a NUL (libbson's code append stops at it) */
	rawdoc s;
	const char nul[] = "a\0b";
	const uint8_t types[] = {BSON_TYPE_UTF8, BSON_TYPE_CODE, BSON_TYPE_SYMBOL};
	const char *snames[] = {"str", "code", "sym"};
	for (size_t i = 0; i < 3; i++) {
		memset(&s, 0, sizeof(s));
		rd_str(&s, nul, 3);
		rd_el(d, types[i], snames[i], s.b, s.n);
		free(s.b);
	}
	/* code with scope whose code holds a NUL */
	rawdoc scope;
	rd_begin(&scope);
	rd_el(&scope, BSON_TYPE_INT32, "x", i32, 4);
	rd_end(&scope);
	memset(&s, 0, sizeof(s));
	rd_u32(&s, (uint32_t)(4 + 4 + 4 + scope.n));
	rd_str(&s, nul, 3);
	rd_put(&s, scope.b, scope.n);
	rd_el(d, BSON_TYPE_CODEWSCOPE, "cws", s.b, s.n);
	free(s.b);
	free(scope.b);
	/* DBPointer, its collection name holding a NUL */
	memset(&s, 0, sizeof(s));
	rd_str(&s, "db\0c", 4);
	rd_put(&s, oid, 12);
	rd_el(d, BSON_TYPE_DBPOINTER, "dbp", s.b, s.n);
	free(s.b);
	/* '$' and dotted names, the empty name, a name twice */
	rd_el(d, BSON_TYPE_INT32, "$set", i32, 4);
	rd_el(d, BSON_TYPE_INT32, "x.y", i32, 4);
	rd_el(d, BSON_TYPE_INT32, "", i32, 4);
	rd_el(d, BSON_TYPE_INT32, "twice", i32, 4);
	rd_el(d, BSON_TYPE_INT64, "twice", i64, 8);
}

/* types_doc: a document of types_elements, in a field "n" too when nested. */
static void
types_doc(rawdoc *d, bool nested, bool extra)
{
	const uint8_t one[] = {1, 0, 0, 0};
	rd_begin(d);
	if (nested) {
		rawdoc in;
		types_doc(&in, false, extra);
		rd_el(d, BSON_TYPE_INT32, "_id", one, 4);
		rd_el(d, BSON_TYPE_DOCUMENT, "n", in.b, in.n);
		free(in.b);
		rd_end(d);
		return;
	}
	types_elements(d);
	if (extra)
		rd_el(d, BSON_TYPE_INT32, "added", one, 4);
	rd_end(d);
}

static void
test_values_kept(void **state)
{
	(void)state;
	rawdoc doc, want;
	/* Untouched at the top level; then walked into (every element copied one by one). */
	for (int nested = 0; nested < 2; nested++) {
		types_doc(&doc, nested, false);
		types_doc(&want, nested, true);
		bson_t *ud = BCON_NEW("updatedFields", "{", nested ? "n.added" : "added",
				      BCON_INT32(1), "}");
		expect_raw(doc.b, doc.n, bson_get_data(ud), ud->len, want.b, want.n);
		bson_destroy(ud);
		free(doc.b);
		free(want.b);
	}
	/*
	 * The values of updatedFields keep their bytes too: each element of
	 * types_elements set by a path of its own ("v.<name>"), into an empty v.
	 */
	rawdoc uf, ud, vals;
	rd_begin(&vals);
	types_elements(&vals);
	rd_end(&vals);
	bson_t bvals;
	assert_true(bson_init_static(&bvals, vals.b, vals.n));
	bson_iter_t it;
	assert_true(bson_iter_init(&it, &bvals));
	rd_begin(&uf);
	rd_begin(&want);
	rawdoc inner;
	rd_begin(&inner);
	while (bson_iter_next(&it)) {
		const char *key = bson_iter_key(&it);
		if (strcmp(key, "twice") == 0 || strchr(key, '.') != NULL || key[0] == '\0')
			continue; /* one path each, split the plain way */
		char path[64];
		snprintf(path, sizeof(path), "v.%s", key);
		const uint8_t *raw = it.raw + it.d1;
		size_t len = it.next_off - it.d1;
		rd_el(&uf, (uint8_t)bson_iter_type(&it), path, raw, len);
		rd_el(&inner, (uint8_t)bson_iter_type(&it), key, raw, len);
	}
	rd_end(&uf);
	rd_end(&inner);
	rd_el(&want, BSON_TYPE_DOCUMENT, "v", inner.b, inner.n);
	rd_end(&want);
	rd_begin(&ud);
	rd_el(&ud, BSON_TYPE_DOCUMENT, "updatedFields", uf.b, uf.n);
	rd_end(&ud);
	rd_begin(&doc);
	rawdoc empty;
	rd_begin(&empty);
	rd_end(&empty);
	rd_el(&doc, BSON_TYPE_DOCUMENT, "v", empty.b, empty.n);
	rd_end(&doc);
	expect_raw(doc.b, doc.n, ud.b, ud.n, want.b, want.n);
	free(empty.b);
	free(doc.b);
	free(ud.b);
	free(uf.b);
	free(inner.b);
	free(want.b);
	free(vals.b);
}

/* '$' and dotted names the update does not name stay as they are; so does bson_zoo's document. */
static void
test_dollar_and_dotted_names_untouched(void **state)
{
	(void)state;
	for (int nested = 0; nested < 2; nested++) {
		bson_t *zoo = bson_zoo_new(), *doc = bson_new(), *want = bson_new();
		bson_t *zoo2 = bson_copy(zoo);
		BSON_APPEND_UTF8(zoo2, "new", "v");
		if (nested) {
			BSON_APPEND_DOCUMENT(doc, "z", zoo);
			BSON_APPEND_DOCUMENT(want, "z", zoo2);
		} else {
			bson_concat(doc, zoo);
			bson_concat(want, zoo2);
		}
		expect(doc,
		       BCON_NEW("updatedFields", "{", nested ? "z.new" : "new", BCON_UTF8("v"),
				"}"),
		       want);
		bson_destroy(zoo);
		bson_destroy(zoo2);
	}
	expect(BCON_NEW("$a", BCON_INT32(1), "x.y", "{", "$b", BCON_INT32(2), "}", "a", "{", "$c.d",
			BCON_INT32(3), "$", BCON_INT32(4), "}", "$$", "[", BCON_INT32(1), "]"),
	       BCON_NEW("updatedFields", "{", "a.e", BCON_UTF8("v"), "}", "removedFields", "[",
			BCON_UTF8("x"), "]"),
	       BCON_NEW("$a", BCON_INT32(1), "x.y", "{", "$b", BCON_INT32(2), "}", "a", "{", "$c.d",
			BCON_INT32(3), "$", BCON_INT32(4), "e", BCON_UTF8("v"), "}", "$$", "[",
			BCON_INT32(1), "]"));
	/* A '$' name set and removed by its path, as the server reports it. */
	expect(BCON_NEW("a", "{", "$x", BCON_INT32(1), "$y", BCON_INT32(2), "}"),
	       BCON_NEW("updatedFields", "{", "a.$x", BCON_INT32(5), "$top", BCON_INT32(6), "}",
			"removedFields", "[", BCON_UTF8("a.$y"), "]"),
	       BCON_NEW("a", "{", "$x", BCON_INT32(5), "}", "$top", BCON_INT32(6)));
}

/* The result's elements are appended to what out holds already. */
static void
test_appends_to_out(void **state)
{
	(void)state;
	bson_t *doc = BCON_NEW("a", BCON_INT32(1));
	bson_t *ud = BCON_NEW("updatedFields", "{", "b", BCON_INT32(2), "}");
	bson_t *want = BCON_NEW("pre", BCON_UTF8("x"), "a", BCON_INT32(1), "b", BCON_INT32(2));
	bson_t out;
	bson_init(&out);
	BSON_APPEND_UTF8(&out, "pre", "x");
	char err[128];
	assert_true(sluice_mongo_apply_update(bson_get_data(doc), doc->len, bson_get_data(ud),
					      ud->len, &out, err, sizeof(err)));
	assert_int_equal(out.len, want->len);
	assert_memory_equal(bson_get_data(&out), bson_get_data(want), want->len);
	bson_destroy(&out);
	bson_destroy(doc);
	bson_destroy(ud);
	bson_destroy(want);
}

/* ------------------------------------------------------------ refused input */

static void
test_malformed(void **state)
{
	(void)state;
	bson_t *doc = BCON_NEW("a", BCON_INT32(1), "b", "{", "c", BCON_INT32(2), "}");
	bson_t *ud = BCON_NEW("updatedFields", "{", "a", BCON_INT32(2), "}");
	const uint8_t *d = bson_get_data(doc), *u = bson_get_data(ud);

	/* Truncated document or update description; nothing at all. */
	expect_fail_raw(d, doc->len - 1, u, ud->len);
	expect_fail_raw(d, doc->len, u, ud->len - 1);
	expect_fail_raw(d, 0, u, ud->len);
	expect_fail_raw(d, doc->len, u, 3);

	/* A length prefix that is not the length; a missing terminator. */
	uint8_t *bad = malloc(doc->len);
	assert_non_null(bad);
	memcpy(bad, d, doc->len);
	bad[0]++;
	expect_fail_raw(bad, doc->len, u, ud->len);
	bad[0] -= 2;
	expect_fail_raw(bad, doc->len, u, ud->len);
	memcpy(bad, d, doc->len);
	bad[doc->len - 1] = 1;
	expect_fail_raw(bad, doc->len, u, ud->len);
	/* A nested document whose inner length runs past it, not walked by the update. */
	memcpy(bad, d, doc->len);
	size_t boff = 4 + 1 + 2 + 4; /* "a": int32, then "b"'s type byte */
	assert_int_equal(bad[boff], BSON_TYPE_DOCUMENT);
	bad[boff + 3]++; /* b's length */
	expect_fail_raw(bad, doc->len, u, ud->len);
	/* A nested document holding an unknown type. */
	memcpy(bad, d, doc->len);
	bad[boff + 3 + 4] = 0x42;
	expect_fail_raw(bad, doc->len, u, ud->len);
	/* A bool that is neither 0 nor 1, at the top and nested. */
	bson_t *bl = BCON_NEW("t", BCON_BOOL(true), "n", "{", "t", BCON_BOOL(true), "}");
	uint8_t *blb = malloc(bl->len);
	assert_non_null(blb);
	memcpy(blb, bson_get_data(bl), bl->len);
	blb[4 + 1 + 2] = 2;
	expect_fail_raw(blb, bl->len, u, ud->len);
	memcpy(blb, bson_get_data(bl), bl->len);
	blb[bl->len - 3] = 2;
	expect_fail_raw(blb, bl->len, u, ud->len);
	free(blb);
	bson_destroy(bl);
	free(bad);

	/* updatedFields not a document; removedFields not an array or holding an int. */
	expect_fail(BCON_NEW("a", BCON_INT32(1)), BCON_NEW("updatedFields", BCON_INT32(1)));
	expect_fail(BCON_NEW("a", BCON_INT32(1)),
		    BCON_NEW("updatedFields", "[", BCON_INT32(1), "]"));
	expect_fail(BCON_NEW("a", BCON_INT32(1)), BCON_NEW("removedFields", BCON_UTF8("a")));
	expect_fail(BCON_NEW("a", BCON_INT32(1)),
		    BCON_NEW("removedFields", "[", BCON_UTF8("a"), BCON_INT32(1), "]"));
	/* truncatedArrays not an array, an entry not a document, without newSize or field. */
	expect_fail(BCON_NEW("a", "[", "]"), BCON_NEW("truncatedArrays", "{", "}"));
	expect_fail(BCON_NEW("a", "[", "]"), BCON_NEW("truncatedArrays", "[", BCON_INT32(1), "]"));
	expect_fail(BCON_NEW("a", "[", "]"),
		    BCON_NEW("truncatedArrays", "[", "{", "field", BCON_UTF8("a"), "}", "]"));
	expect_fail(BCON_NEW("a", "[", "]"),
		    BCON_NEW("truncatedArrays", "[", "{", "newSize", BCON_INT32(0), "}", "]"));
	expect_fail(BCON_NEW("a", "[", "]"),
		    BCON_NEW("truncatedArrays", "[", "{", "field", BCON_UTF8("a"), "newSize",
			     BCON_DOUBLE(1.0), "}", "]"));
	expect_fail(BCON_NEW("a", "[", "]"),
		    BCON_NEW("truncatedArrays", "[", "{", "field", BCON_UTF8("a"), "newSize",
			     BCON_INT32(-1), "}", "]"));
	/* A disambiguatedPaths part neither a string nor an integer. */
	expect_fail(BCON_NEW("a", BCON_INT32(1)),
		    BCON_NEW("updatedFields", "{", "a", BCON_INT32(2), "}", "disambiguatedPaths",
			     "{", "a", "[", BCON_DOUBLE(1.0), "]", "}"));
	/* A disambiguatedPaths part that could not be a field name: a NUL, not UTF-8. */
	expect_fail(BCON_NEW("a", BCON_INT32(1)),
		    BCON_NEW("updatedFields", "{", "a", BCON_INT32(2), "}", "disambiguatedPaths",
			     "{", "a", "[", BCON_UTF8("a\xa5"), "]", "}"));
	bson_t *nul = BCON_NEW("updatedFields", "{", "a", BCON_INT32(2), "}"), dis, parts;
	BSON_APPEND_DOCUMENT_BEGIN(nul, "disambiguatedPaths", &dis);
	BSON_APPEND_ARRAY_BEGIN(&dis, "a", &parts);
	bson_append_utf8(&parts, "0", -1, "a\0b", 3);
	bson_append_array_end(&dis, &parts);
	bson_append_document_end(nul, &dis);
	expect_fail(BCON_NEW("a", BCON_INT32(1)), nul);
	/* An array index past the limit; a path deeper than the limit. */
	expect_fail(BCON_NEW("a", "[", "]"),
		    BCON_NEW("updatedFields", "{", "a.99999999", BCON_INT32(1), "}"));
	expect_fail(BCON_NEW("a", "[", "]"),
		    BCON_NEW("updatedFields", "{", "a.2000000", BCON_INT32(1), "}"));
	char deep[2 * 300 + 1];
	for (int i = 0; i < 300; i++) {
		deep[2 * i] = 'p';
		deep[2 * i + 1] = '.';
	}
	deep[2 * 300 - 1] = '\0';
	expect_fail(BCON_NEW("a", BCON_INT32(1)),
		    BCON_NEW("updatedFields", "{", deep, BCON_INT32(1), "}"));
	expect_fail(BCON_NEW("a", BCON_INT32(1)),
		    BCON_NEW("removedFields", "[", BCON_UTF8(deep), "]"));

	bson_destroy(doc);
	bson_destroy(ud);
}

/* nested_doc returns {"a": {"a": ... {}}} with depth documents below the top. */
static void
nested_doc(rawdoc *d, int depth)
{
	static const uint8_t el[] = {BSON_TYPE_DOCUMENT, 'a', 0};
	memset(d, 0, sizeof(*d));
	for (int i = 0; i < depth; i++) { /* each level: length, then the element "a" */
		rd_u32(d, (uint32_t)(5 + 8 * (depth - i)));
		rd_put(d, el, sizeof(el));
	}
	rd_u32(d, 5);
	uint8_t z = 0;
	for (int i = 0; i <= depth; i++) /* the terminators */
		rd_put(d, &z, 1);
}

/* Input nested deeper than 200 levels is refused, at any depth without a crash. */
static void
test_deep(void **state)
{
	(void)state;
	bson_t *ud = BCON_NEW("updatedFields", "{", "b", BCON_INT32(1), "}");
	rawdoc d, want;
	nested_doc(&d, 200);
	rd_begin(&want);
	rd_put(&want, d.b + 4, d.n - 5);
	const uint8_t one[] = {1, 0, 0, 0};
	rd_el(&want, BSON_TYPE_INT32, "b", one, 4);
	rd_end(&want);
	expect_raw(d.b, d.n, bson_get_data(ud), ud->len, want.b, want.n);
	free(d.b);
	free(want.b);
	int deep[] = {201, 100000};
	for (size_t i = 0; i < 2; i++) {
		nested_doc(&d, deep[i]);
		expect_fail_raw(d.b, d.n, bson_get_data(ud), ud->len);
		/* The same as a value in updatedFields. */
		rawdoc uf, u;
		rd_begin(&uf);
		rd_el(&uf, BSON_TYPE_DOCUMENT, "v", d.b, d.n);
		rd_end(&uf);
		rd_begin(&u);
		rd_el(&u, BSON_TYPE_DOCUMENT, "updatedFields", uf.b, uf.n);
		rd_end(&u);
		bson_t *empty = bson_new();
		expect_fail_raw(bson_get_data(empty), empty->len, u.b, u.n);
		bson_destroy(empty);
		free(uf.b);
		free(u.b);
		free(d.b);
	}
	bson_destroy(ud);
}

/* A result past 16 MiB is refused. */
static void
test_too_large(void **state)
{
	(void)state;
	size_t n = 9u << 20;
	uint8_t *blob = calloc(1, n);
	assert_non_null(blob);
	bson_t *doc = bson_new();
	BSON_APPEND_BINARY(doc, "a", BSON_SUBTYPE_BINARY, blob, (uint32_t)n);
	bson_t *ud = bson_new(), uf;
	BSON_APPEND_DOCUMENT_BEGIN(ud, "updatedFields", &uf);
	BSON_APPEND_BINARY(&uf, "b", BSON_SUBTYPE_BINARY, blob, (uint32_t)n);
	bson_append_document_end(ud, &uf);
	expect_fail(doc, ud);
	/* Just under it is fine. */
	doc = bson_new();
	BSON_APPEND_BINARY(doc, "a", BSON_SUBTYPE_BINARY, blob, (uint32_t)n);
	ud = bson_new();
	BSON_APPEND_DOCUMENT_BEGIN(ud, "updatedFields", &uf);
	BSON_APPEND_BINARY(&uf, "b", BSON_SUBTYPE_BINARY, blob, (uint32_t)((16u << 20) - n - 64));
	bson_append_document_end(ud, &uf);
	bson_t out;
	bson_init(&out);
	char err[128];
	bool ok = sluice_mongo_apply_update(bson_get_data(doc), doc->len, bson_get_data(ud),
					    ud->len, &out, err, sizeof(err));
	if (!ok)
		print_error("%s\n", err);
	assert_true(ok);
	assert_true(out.len <= 16u << 20);
	bson_destroy(&out);
	bson_destroy(doc);
	bson_destroy(ud);
	free(blob);

	/* Arrays padded with a million nulls: one fits, three would not (refused while padding). */
	doc = BCON_NEW("a", "[", "]", "b", "[", "]", "c", "[", "]");
	ud = BCON_NEW("updatedFields", "{", "a.1000000", BCON_INT32(1), "}");
	bson_init(&out);
	ok = sluice_mongo_apply_update(bson_get_data(doc), doc->len, bson_get_data(ud), ud->len,
				       &out, err, sizeof(err));
	if (!ok)
		print_error("%s\n", err);
	assert_true(ok);
	bson_iter_t it, arr;
	assert_true(bson_iter_init_find(&it, &out, "a"));
	assert_true(bson_iter_recurse(&it, &arr));
	assert_true(bson_iter_find(&arr, "999999"));
	assert_true(BSON_ITER_HOLDS_NULL(&arr));
	assert_true(bson_iter_next(&arr));
	assert_string_equal(bson_iter_key(&arr), "1000000");
	assert_int_equal(bson_iter_int32(&arr), 1);
	bson_destroy(&out);
	bson_destroy(ud);
	expect_fail(doc, BCON_NEW("updatedFields", "{", "a.1000000", BCON_INT32(1), "b.1000000",
				  BCON_INT32(1), "c.1000000", BCON_INT32(1), "}"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_top_in_place),
		cmocka_unit_test(test_set_new_field_last),
		cmocka_unit_test(test_set_dotted_nested),
		cmocka_unit_test(test_set_missing_parents),
		cmocka_unit_test(test_set_array_element),
		cmocka_unit_test(test_set_irregular_array),
		cmocka_unit_test(test_set_array_past_end),
		cmocka_unit_test(test_set_numeric_name_in_document),
		cmocka_unit_test(test_set_name_into_array),
		cmocka_unit_test(test_remove),
		cmocka_unit_test(test_truncate),
		cmocka_unit_test(test_disambiguated_paths),
		cmocka_unit_test(test_values_kept),
		cmocka_unit_test(test_dollar_and_dotted_names_untouched),
		cmocka_unit_test(test_appends_to_out),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_deep),
		cmocka_unit_test(test_too_large),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
