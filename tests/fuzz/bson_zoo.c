/* A BSON document with every type, shared by the inspect test and the fuzz_bson_print seeds. */
#include "bson_zoo.h"

#include <math.h>
#include <stdio.h>

bson_t *
bson_zoo_new(void)
{
	static const uint8_t bin[16] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0xfe, 0xff, 0x10,
					0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x0a, 0x0d};
	static const char text[] = "NUL\0inside \"quoted\" \\ \n\t\x01 é 日本 🎉";
	bson_t *d = bson_new();
	bson_t child, grand;
	bson_oid_t oid;
	bson_decimal128_t dec;

	bson_oid_init_from_string(&oid, "65f0a1b2c3d4e5f601234567");
	BSON_APPEND_OID(d, "_id", &oid);
	BSON_APPEND_INT32(d, "i32", 1);
	BSON_APPEND_INT32(d, "i32min", INT32_MIN);
	BSON_APPEND_INT32(d, "i32max", INT32_MAX);
	BSON_APPEND_INT64(d, "i64", 1);
	BSON_APPEND_INT64(d, "i64min", INT64_MIN);
	BSON_APPEND_INT64(d, "i64max", INT64_MAX);
	BSON_APPEND_DOUBLE(d, "d", 0.1);
	BSON_APPEND_DOUBLE(d, "d_int", 3.0);
	BSON_APPEND_DOUBLE(d, "d_zero", 0.0);
	BSON_APPEND_DOUBLE(d, "d_negzero", -0.0);
	BSON_APPEND_DOUBLE(d, "d_nan", NAN);
	BSON_APPEND_DOUBLE(d, "d_inf", INFINITY);
	BSON_APPEND_DOUBLE(d, "d_neginf", -INFINITY);
	BSON_APPEND_DOUBLE(d, "d_big", 1.7976931348623157e308);
	BSON_APPEND_DOUBLE(d, "d_tiny", 4.9406564584124654e-324);
	static const char *const decimals[] = {"1.0",
					       "-1.23400E-6000",
					       "0E-6176",
					       "-0",
					       "9.999999999999999999999999999999999E+6144",
					       "NaN",
					       "-Infinity",
					       "12345.6789"};
	for (size_t i = 0; i < sizeof(decimals) / sizeof(decimals[0]); i++) {
		char key[16];
		snprintf(key, sizeof(key), "dec%zu", i);
		bson_decimal128_from_string(decimals[i], &dec);
		BSON_APPEND_DECIMAL128(d, key, &dec);
	}
	BSON_APPEND_DATE_TIME(d, "date", 1700000000123);
	BSON_APPEND_DATE_TIME(d, "date_neg", -62135596800000);  /* 0001-01-01 */
	BSON_APPEND_DATE_TIME(d, "date_late", 253402300800000); /* 10000-01-01 */
	BSON_APPEND_TIMESTAMP(d, "ts", 1700000000, 7);
	BSON_APPEND_TIMESTAMP(d, "ts_max", UINT32_MAX, UINT32_MAX);
	BSON_APPEND_BINARY(d, "bin0", BSON_SUBTYPE_BINARY, bin, 7);
	BSON_APPEND_BINARY(d, "bin0_empty", BSON_SUBTYPE_BINARY, bin, 0);
	BSON_APPEND_BINARY(d, "bin2", BSON_SUBTYPE_BINARY_DEPRECATED, bin, 3);
	BSON_APPEND_BINARY(d, "uuid", BSON_SUBTYPE_UUID, bin, 16);
	BSON_APPEND_BINARY(d, "md5", BSON_SUBTYPE_MD5, bin, 16);
	BSON_APPEND_BINARY(d, "user", BSON_SUBTYPE_USER, bin, 5);
	BSON_APPEND_REGEX(d, "re", "^a\"b\\\\c/é$", "imx");
	BSON_APPEND_REGEX(d, "re_plain", "", "");
	BSON_APPEND_MINKEY(d, "min");
	BSON_APPEND_MAXKEY(d, "max");
	BSON_APPEND_NULL(d, "null");
	BSON_APPEND_UNDEFINED(d, "undefined");
	BSON_APPEND_BOOL(d, "true", true);
	BSON_APPEND_BOOL(d, "false", false);
	bson_append_utf8(d, "text", -1, text, (int)sizeof(text) - 1);
	BSON_APPEND_UTF8(d, "empty", "");
	BSON_APPEND_SYMBOL(d, "symbol", "sym");
	BSON_APPEND_CODE(d, "code", "function () { return \"x\"; }");
	bson_t *scope =
		BCON_NEW("x", BCON_INT32(1), "nested", "{", "y", "[", BCON_INT64(2), "]", "}");
	BSON_APPEND_CODE_WITH_SCOPE(d, "code_scope", "f(x)", scope);
	bson_destroy(scope);
	BSON_APPEND_DBPOINTER(d, "dbpointer", "db.coll", &oid);

	/* Names that look alike: a dotted name and the path it resembles, a repeat, "". */
	BSON_APPEND_INT32(d, "a.b", 1);
	BSON_APPEND_DOCUMENT_BEGIN(d, "a", &child);
	BSON_APPEND_INT32(&child, "b", 2);
	BSON_APPEND_INT32(&child, "a.b", 3);
	bson_append_document_end(d, &child);
	BSON_APPEND_INT32(d, "twice", 1);
	BSON_APPEND_UTF8(d, "twice", "again");
	BSON_APPEND_INT32(d, "", 0);
	BSON_APPEND_INT32(d, "quote\"back\\slash", 0);
	BSON_APPEND_INT32(d, "ключ", 0);

	/* [1, "two", [[], {"k": [null]}], {}] */
	bson_t inner, leaf;
	BSON_APPEND_ARRAY_BEGIN(d, "array", &child);
	BSON_APPEND_INT32(&child, "0", 1);
	BSON_APPEND_UTF8(&child, "1", "two");
	BSON_APPEND_ARRAY_BEGIN(&child, "2", &grand);
	BSON_APPEND_ARRAY_BEGIN(&grand, "0", &inner);
	bson_append_array_end(&grand, &inner);
	BSON_APPEND_DOCUMENT_BEGIN(&grand, "1", &inner);
	BSON_APPEND_ARRAY_BEGIN(&inner, "k", &leaf);
	BSON_APPEND_NULL(&leaf, "0");
	bson_append_array_end(&inner, &leaf);
	bson_append_document_end(&grand, &inner);
	bson_append_array_end(&child, &grand);
	BSON_APPEND_DOCUMENT_BEGIN(&child, "3", &grand);
	bson_append_document_end(&child, &grand);
	bson_append_array_end(d, &child);
	return d;
}

bson_t *
bson_zoo_resume_token(uint32_t n)
{
	char data[64];
	/* The shape of a MongoDB 6 token: hex of a KeyString with the cluster time first. */
	snprintf(data, sizeof(data), "8265%08X000000012B022C0100296E5A1004%08X46645F6964", n, n);
	return BCON_NEW("_data", BCON_UTF8(data));
}
