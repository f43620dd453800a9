/*
 * Seeds for fuzz_mongo_update: documents and update descriptions covering each
 * feature (4 bytes little-endian, the document's length; the document; the
 * update description), and a few malformed ones.
 */
#include <bson/bson.h>
#include <stdio.h>
#include <stdlib.h>

#include "bson_zoo.h"

static const char *seed_dir;

static void
write_raw(const char *name, const uint8_t *doc, uint32_t doc_len, const uint8_t *ud,
	  uint32_t ud_len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", seed_dir, name);
	uint8_t le[4] = {(uint8_t)doc_len, (uint8_t)(doc_len >> 8), (uint8_t)(doc_len >> 16),
			 (uint8_t)(doc_len >> 24)};
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(le, 1, 4, f) != 4 || fwrite(doc, 1, doc_len, f) != doc_len ||
	    fwrite(ud, 1, ud_len, f) != ud_len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* seed writes doc and ud, and destroys them. */
static void
seed(const char *name, bson_t *doc, bson_t *ud)
{
	write_raw(name, bson_get_data(doc), doc->len, bson_get_data(ud), ud->len);
	bson_destroy(doc);
	bson_destroy(ud);
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	seed_dir = argv[1];

	seed("set-top", BCON_NEW("_id", BCON_INT32(1), "a", BCON_INT32(1), "b", BCON_UTF8("x")),
	     BCON_NEW("updatedFields", "{", "a", BCON_DOUBLE(2.5), "c", BCON_BOOL(true), "}",
		      "removedFields", "[", "]", "truncatedArrays", "[", "]"));
	seed("set-nested", BCON_NEW("a", "{", "b", BCON_INT32(1), "c", "{", "}", "}"),
	     BCON_NEW("updatedFields", "{", "a.b", "{", "x", BCON_INT32(1), "}", "a.c.d.e",
		      BCON_INT32(2), "n.m", BCON_NULL, "}"));
	seed("set-array", BCON_NEW("a", "[", BCON_INT32(1), "{", "k", BCON_INT32(1), "}", "]"),
	     BCON_NEW("updatedFields", "{", "a.0", BCON_UTF8("x"), "a.1.k", BCON_INT32(2), "a.4",
		      BCON_INT32(3), "a.6.z", BCON_INT32(4), "}"));
	seed("set-numeric-name", BCON_NEW("a", "{", "1", BCON_UTF8("x"), "}"),
	     BCON_NEW("updatedFields", "{", "a.1", BCON_INT32(5), "a.3", BCON_INT32(6), "}"));
	seed("set-name-into-array", BCON_NEW("a", "[", BCON_INT32(1), "]", "s", BCON_INT32(1)),
	     BCON_NEW("updatedFields", "{", "a.x", BCON_INT32(5), "s.t", BCON_INT32(6), "}"));
	seed("remove",
	     BCON_NEW("a", BCON_INT32(1), "b", "{", "c", BCON_INT32(1), "}", "e", "[",
		      BCON_INT32(1), BCON_INT32(2), "]"),
	     BCON_NEW("updatedFields", "{", "}", "removedFields", "[", BCON_UTF8("a"),
		      BCON_UTF8("b.c"), BCON_UTF8("e.1"), BCON_UTF8("z.y"), "]"));
	seed("truncate",
	     BCON_NEW("a", "[", BCON_INT32(1), BCON_INT32(2), BCON_INT32(3), "]", "b", "{", "c",
		      "[", BCON_INT32(1), "]", "}"),
	     BCON_NEW("updatedFields", "{", "a.3", BCON_INT32(9), "}", "truncatedArrays", "[", "{",
		      "field", BCON_UTF8("a"), "newSize", BCON_INT32(1), "}", "{", "field",
		      BCON_UTF8("b.c"), "newSize", BCON_INT64(0), "}", "]"));
	seed("disambiguated",
	     BCON_NEW("a.b", "{", "c", "[", BCON_INT32(0), "{", "d", BCON_INT32(1), "}", "]", "}",
		      "a", "{", "b", BCON_INT32(1), "}"),
	     BCON_NEW("updatedFields", "{", "a.b.c.1.d", BCON_INT32(2), "}", "removedFields", "[",
		      BCON_UTF8("a.b.c.0"), "]", "truncatedArrays", "[", "{", "field",
		      BCON_UTF8("a.b.c"), "newSize", BCON_INT32(2), "}", "]", "disambiguatedPaths",
		      "{", "a.b.c.1.d", "[", BCON_UTF8("a.b"), BCON_UTF8("c"), BCON_INT32(1),
		      BCON_UTF8("d"), "]", "a.b.c.0", "[", BCON_UTF8("a.b"), BCON_UTF8("c"),
		      BCON_INT64(0), "]", "a.b.c", "[", BCON_UTF8("a.b"), BCON_UTF8("c"), "]",
		      "}"));
	/* Found by fuzzing: a part that is not UTF-8 must not become a field name. */
	seed("disambiguated-not-utf8", BCON_NEW("a", "[", BCON_INT32(1), "]"),
	     BCON_NEW("updatedFields", "{", "a.b", BCON_INT32(2), "}", "disambiguatedPaths", "{",
		      "a.b", "[", BCON_UTF8("a.\xa5"), BCON_UTF8("b"), "]", "}"));
	/* A string value that is not UTF-8, then a name that is not (bson_validate misses it). */
	seed("not-utf8", BCON_NEW("a", BCON_INT32(1)),
	     BCON_NEW("updatedFields", "{", "s", BCON_UTF8("\x82"), "\x9e.z", BCON_INT32(4), "}"));
	seed("dollar-names", BCON_NEW("$a", BCON_INT32(1), "x.y", "{", "$b", BCON_INT32(2), "}"),
	     BCON_NEW("updatedFields", "{", "x.y", BCON_INT32(3), "$a", BCON_INT32(4), "}"));

	/* The type zoo: untouched, walked into, and as a value set. */
	bson_t *zoo = bson_zoo_new();
	bson_t *doc = bson_new();
	BSON_APPEND_DOCUMENT(doc, "z", zoo);
	seed("zoo-walked", doc, BCON_NEW("updatedFields", "{", "z.new", BCON_INT32(1), "}"));
	bson_t *ud = bson_new(), uf;
	BSON_APPEND_DOCUMENT_BEGIN(ud, "updatedFields", &uf);
	BSON_APPEND_DOCUMENT(&uf, "v.w", zoo);
	bson_append_document_end(ud, &uf);
	seed("zoo-value", BCON_NEW("v", "[", "]"), ud);
	doc = bson_copy(zoo);
	seed("zoo-empty-update", doc, bson_new());
	bson_destroy(zoo);

	/* Raw values libbson would rewrite: unsorted regex options, code with a NUL. */
	const uint8_t raw[] = {28,  0, 0, 0, 0x0b, 'r', 0,   'a', 0,   'x', 'm',  'i', 0, 0x0d,
			       'c', 0, 4, 0, 0,    0,   'a', 0,   'b', 0,   0x0a, 'n', 0, 0};
	ud = BCON_NEW("updatedFields", "{", "n", BCON_INT32(1), "}");
	write_raw("raw-values", raw, sizeof(raw), bson_get_data(ud), ud->len);
	/* Malformed: the document cut short, a nested length past its end. */
	write_raw("malformed-short", raw, sizeof(raw) - 3, bson_get_data(ud), ud->len);
	const uint8_t nested[] = {17, 0, 0, 0, 3, 'a', 0, 9, 0, 0, 0, 0x10, 'b', 0, 1, 0, 0};
	write_raw("malformed-nested", nested, sizeof(nested), bson_get_data(ud), ud->len);
	bson_destroy(ud);
	return 0;
}
