/* A BSON document with every type, shared by the inspect test and the fuzz_bson_print seeds. */
#ifndef SLUICE_TESTS_FUZZ_BSON_ZOO_H
#define SLUICE_TESTS_FUZZ_BSON_ZOO_H

#include <bson/bson.h>

/*
 * bson_zoo_new returns a new document (bson_destroy it) holding every BSON
 * type whose canonical extended JSON parses back to the same bytes:
 * Decimal128, int32/int64 extremes, doubles including -0.0, NaN and
 * infinities, dates before and after 1970, timestamps, binary subtypes 0, 2,
 * 4, 5 and 0x80, a regex, min/max key, deprecated types (undefined, symbol,
 * DBPointer, code, code with scope), nested arrays and documents, strings
 * with NUL, quotes, control characters and non-ASCII text, and field names
 * that look alike: "a.b" next to a: {b}, a name twice, the empty name.
 */
bson_t *bson_zoo_new(void);

/* bson_zoo_resume_token returns a change stream resume token {_data: "82..."} for n. */
bson_t *bson_zoo_resume_token(uint32_t n);

#endif
