/*
 * Fuzz target for apply/mongo/mongoupdate.c: a change event's updateDescription
 * applied to a document. Input: 4 bytes little-endian, the document's length n
 * (cut to what there is); then n bytes of document; the rest is the update
 * description. Both go in buffers of their own exact size.
 *
 * Properties (a failure aborts): a refusal says why; an accepted result is
 * well-formed BSON, nested values included, of 16 MiB at most; when every
 * field name of both inputs is UTF-8, so is every name of the result; when the
 * inputs are wholly valid (names and string values UTF-8), the result passes
 * bson_validate; an empty update description gives the document back.
 *
 * (bson_validate itself cannot be the test of the inputs: libbson 1.23 stops
 * validating a nested document at a string value that is not UTF-8 and
 * reports it valid, and the update keeps such values as they are.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

#include "mongoupdate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
violated(const char *what)
{
	fprintf(stderr, "fuzz_mongo_update: property violated: %s\n", what);
	abort();
}

/* What walk found in a document. */
typedef struct walked {
	bool names_utf8;  /* every field name is UTF-8 without NUL */
	bool values_utf8; /* every string, code, symbol, regex and DBPointer name is UTF-8 */
} walked;

static bool
utf8(const char *s, size_t len, bool allow_nul)
{
	return bson_utf8_validate(s, len, allow_nul);
}

/*
 * walk: every element of the document, and of those nested in it, can be
 * iterated (false if not); w says what the names and strings hold.
 */
static bool
walk(const uint8_t *data, size_t len, int depth, walked *w)
{
	bson_t b;
	bson_iter_t it;
	if (depth > 1000 || !bson_init_static(&b, data, len) || !bson_iter_init(&it, &b))
		return false;
	while (bson_iter_next(&it)) {
		const char *key = bson_iter_key(&it), *s = NULL, *opts = NULL;
		uint32_t slen = 0, sub_len = 0;
		const uint8_t *sub = NULL;
		const bson_oid_t *oid;
		if (!utf8(key, strlen(key), false))
			w->names_utf8 = false;
		switch (bson_iter_type(&it)) {
		case BSON_TYPE_DOCUMENT:
			bson_iter_document(&it, &sub_len, &sub);
			break;
		case BSON_TYPE_ARRAY:
			bson_iter_array(&it, &sub_len, &sub);
			break;
		case BSON_TYPE_CODEWSCOPE:
			s = bson_iter_codewscope(&it, &slen, &sub_len, &sub);
			break;
		case BSON_TYPE_UTF8:
			s = bson_iter_utf8(&it, &slen);
			break;
		case BSON_TYPE_CODE:
			s = bson_iter_code(&it, &slen);
			break;
		case BSON_TYPE_SYMBOL:
			s = bson_iter_symbol(&it, &slen);
			break;
		case BSON_TYPE_DBPOINTER:
			bson_iter_dbpointer(&it, &slen, &s, &oid);
			break;
		case BSON_TYPE_REGEX:
			s = bson_iter_regex(&it, &opts);
			slen = (uint32_t)strlen(s);
			if (!utf8(opts, strlen(opts), false))
				w->values_utf8 = false;
			break;
		default:
			break;
		}
		if (s != NULL && !utf8(s, slen, true))
			w->values_utf8 = false;
		if (sub != NULL && !walk(sub, sub_len, depth + 1, w))
			return false;
	}
	return it.err_off == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	size_t n = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 |
		   (size_t)data[3] << 24;
	data += 4;
	size -= 4;
	if (n > size)
		n = size;
	uint8_t *doc = malloc(n ? n : 1), *ud = malloc(size - n ? size - n : 1);
	if (doc == NULL || ud == NULL)
		abort();
	memcpy(doc, data, n);
	memcpy(ud, data + n, size - n);

	bson_t out;
	bson_init(&out);
	char err[256];
	memset(err, 'x', sizeof(err));
	if (sluice_mongo_apply_update(doc, n, ud, size - n, &out, err, sizeof(err))) {
		if (err[0] != '\0')
			violated("an error message on success");
		walked wd = {true, true}, wu = {true, true}, wo = {true, true};
		if (!walk(doc, n, 0, &wd) || !walk(ud, size - n, 0, &wu))
			violated("an input that is not well-formed BSON was accepted");
		if (!walk(bson_get_data(&out), out.len, 0, &wo))
			violated("the result is not well-formed BSON");
		if (wd.names_utf8 && wu.names_utf8 && !wo.names_utf8)
			violated("UTF-8 field names gave a result with a name that is not UTF-8");
		size_t off;
		if (wd.names_utf8 && wu.names_utf8 && wd.values_utf8 && wu.values_utf8 &&
		    !bson_validate(&out, BSON_VALIDATE_NONE, &off))
			violated("valid input gave a result bson_validate refuses");
		if (out.len > 16u << 20)
			violated("the result is larger than 16 MiB");
		if (size - n == 5 && (out.len != n || memcmp(bson_get_data(&out), doc, n) != 0))
			violated("an empty update description changed the document");
	} else if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0') {
		violated("a refusal without a message");
	}
	bson_destroy(&out);
	free(doc);
	free(ud);
	return 0;
}
