/* Writes seed messages for fuzz_mongo_wire: the OP_QUERY handshake and OP_MSG shapes drivers send.
 */
#include <bson/bson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GMW_OP_QUERY 2004
#define GMW_OP_MSG   2013

static void
gmw_i32(uint8_t *p, int32_t v)
{
	uint32_t u = (uint32_t)v;
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(u >> (8 * i));
}

static bool
gmw_write(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
		fprintf(stderr, "gen_mongo_wire_corpus: could not write %s\n", path);
		return false;
	}
	return true;
}

/* gmw_msg frames an OP_MSG with a body and, when seq is given, one kind-1 section. */
static bool
gmw_msg(const char *dir, const char *name, uint32_t flags, const bson_t *body, const char *ident,
	const bson_t *seq, int nseq)
{
	uint8_t buf[8192];
	size_t n = 16;
	gmw_i32(buf + n, (int32_t)flags);
	n += 4;
	buf[n++] = 0;
	memcpy(buf + n, bson_get_data(body), body->len);
	n += body->len;
	if (ident != NULL) {
		size_t start = n;
		buf[n++] = 1;
		n += 4;
		memcpy(buf + n, ident, strlen(ident) + 1);
		n += strlen(ident) + 1;
		for (int i = 0; i < nseq; i++) {
			memcpy(buf + n, bson_get_data(&seq[i]), seq[i].len);
			n += seq[i].len;
		}
		gmw_i32(buf + start + 1, (int32_t)(n - start - 1));
	}
	if (flags & 1u) {
		memset(buf + n, 0, 4); /* checksum */
		n += 4;
	}
	gmw_i32(buf, (int32_t)n);
	gmw_i32(buf + 4, 7);
	gmw_i32(buf + 8, 0);
	gmw_i32(buf + 12, GMW_OP_MSG);
	return gmw_write(dir, name, buf, n);
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_mongo_wire_corpus DIR\n");
		return 2;
	}
	const char *dir = argv[1];
	bool ok = true;

	/* OP_QUERY isMaster on admin.$cmd, as libmongoc 1.23.1 and pymongo 3.11 open with. */
	uint8_t q[1024];
	bson_t *hello = BCON_NEW("isMaster", BCON_INT32(1), "helloOk", BCON_BOOL(true), "client",
				 "{", "driver", "{", "name", "mongoc", "}", "}");
	size_t n = 16;
	gmw_i32(q + n, 4);
	n += 4;
	memcpy(q + n, "admin.$cmd", 11);
	n += 11;
	gmw_i32(q + n, 0);
	gmw_i32(q + n + 4, -1);
	n += 8;
	memcpy(q + n, bson_get_data(hello), hello->len);
	n += hello->len;
	gmw_i32(q, (int32_t)n);
	gmw_i32(q + 4, 1);
	gmw_i32(q + 8, 0);
	gmw_i32(q + 12, GMW_OP_QUERY);
	ok = ok && gmw_write(dir, "op_query_ismaster", q, n);

	bson_t *ping = BCON_NEW("ping", BCON_INT32(1), "$db", "admin");
	ok = ok && gmw_msg(dir, "op_msg_ping", 0, ping, NULL, NULL, 0);
	ok = ok && gmw_msg(dir, "op_msg_checksum", 1, ping, NULL, NULL, 0);

	bson_t *ins = BCON_NEW("insert", "c", "ordered", BCON_BOOL(true), "$db", "db", "lsid", "{",
			       "id", BCON_INT32(1), "}", "txnNumber", BCON_INT64(1));
	bson_t docs[2];
	bson_init(&docs[0]);
	BSON_APPEND_INT32(&docs[0], "_id", 1);
	bson_init(&docs[1]);
	BSON_APPEND_UTF8(&docs[1], "_id", "two");
	ok = ok && gmw_msg(dir, "op_msg_insert_seq", 0, ins, "documents", docs, 2);
	ok = ok && gmw_msg(dir, "op_msg_insert_w0", 2, ins, "documents", docs, 2);

	bson_t *agg = BCON_NEW("aggregate", "c", "pipeline", "[", "{", "$changeStream", "{",
			       "fullDocument", "updateLookup", "}", "}", "]", "cursor", "{", "}",
			       "$db", "db");
	ok = ok && gmw_msg(dir, "op_msg_change_stream", 0, agg, NULL, NULL, 0);

	bson_destroy(hello);
	bson_destroy(ping);
	bson_destroy(ins);
	bson_destroy(agg);
	bson_destroy(&docs[0]);
	bson_destroy(&docs[1]);
	return ok ? 0 : 1;
}
