/* Seeds for fuzz_mongo_event: change events of every kind, as a server sends them, and tokens. */
#include <bson/bson.h>
#include <stdio.h>
#include <stdlib.h>

#include "bson_zoo.h"

static void
write_seed(const char *dir, const char *name, const bson_t *b)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(bson_get_data(b), 1, b->len, f) != b->len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* event builds a change event of op on db.coll at Timestamp(t, i). */
static bson_t *
event(const char *op, uint32_t t, uint32_t i, bool txn, bool full, bool key, bool update)
{
	bson_t *ev = bson_new(), child, sub;
	bson_t *tok = bson_zoo_resume_token(t);
	BSON_APPEND_DOCUMENT(ev, "_id", tok);
	bson_destroy(tok);
	BSON_APPEND_UTF8(ev, "operationType", op);
	BSON_APPEND_TIMESTAMP(ev, "clusterTime", t, i);
	BSON_APPEND_DATE_TIME(ev, "wallTime", (int64_t)t * 1000);
	BSON_APPEND_DOCUMENT_BEGIN(ev, "ns", &child);
	BSON_APPEND_UTF8(&child, "db", "shop");
	BSON_APPEND_UTF8(&child, "coll", "orders");
	bson_append_document_end(ev, &child);
	if (full) {
		bson_t *zoo = bson_zoo_new();
		BSON_APPEND_DOCUMENT(ev, "fullDocument", zoo);
		bson_destroy(zoo);
	}
	if (key) {
		BSON_APPEND_DOCUMENT_BEGIN(ev, "documentKey", &child);
		BSON_APPEND_INT32(&child, "_id", 7);
		bson_append_document_end(ev, &child);
	}
	if (update) {
		BSON_APPEND_DOCUMENT_BEGIN(ev, "updateDescription", &child);
		BSON_APPEND_DOCUMENT_BEGIN(&child, "updatedFields", &sub);
		BSON_APPEND_INT64(&sub, "n", 2);
		BSON_APPEND_UTF8(&sub, "a.b", "dotted");
		bson_append_document_end(&child, &sub);
		BSON_APPEND_ARRAY_BEGIN(&child, "removedFields", &sub);
		BSON_APPEND_UTF8(&sub, "0", "gone");
		bson_append_array_end(&child, &sub);
		BSON_APPEND_ARRAY_BEGIN(&child, "truncatedArrays", &sub);
		bson_append_array_end(&child, &sub);
		bson_append_document_end(ev, &child);
	}
	if (txn) {
		uint8_t uuid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
		BSON_APPEND_DOCUMENT_BEGIN(ev, "lsid", &child);
		BSON_APPEND_BINARY(&child, "id", BSON_SUBTYPE_UUID, uuid, sizeof(uuid));
		bson_append_document_end(ev, &child);
		BSON_APPEND_INT64(ev, "txnNumber", 3);
	}
	return ev;
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	struct {
		const char *name, *op;
		bool txn, full, key, update;
	} seeds[] = {
		{"insert", "insert", false, true, true, false},
		{"insert-txn", "insert", true, true, true, false},
		{"update", "update", false, false, true, true},
		{"update-lookup", "update", true, true, true, true},
		{"replace", "replace", false, true, true, false},
		{"delete", "delete", false, false, true, false},
		{"drop", "drop", false, false, false, false},
		{"dropDatabase", "dropDatabase", false, false, false, false},
		{"invalidate", "invalidate", false, false, false, false},
		{"insert-no-full", "insert", false, false, true, false},
	};
	for (size_t k = 0; k < sizeof(seeds) / sizeof(seeds[0]); k++) {
		bson_t *ev = event(seeds[k].op, 1796325656 + (uint32_t)k, (uint32_t)k, seeds[k].txn,
				   seeds[k].full, seeds[k].key, seeds[k].update);
		write_seed(dir, seeds[k].name, ev);
		bson_destroy(ev);
	}
	bson_t *ren = event("rename", 1796325700, 1, false, false, false, false), to;
	BSON_APPEND_DOCUMENT_BEGIN(ren, "to", &to);
	BSON_APPEND_UTF8(&to, "db", "shop");
	BSON_APPEND_UTF8(&to, "coll", "orders_old");
	bson_append_document_end(ren, &to);
	write_seed(dir, "rename", ren);
	bson_destroy(ren);
	/* fullDocumentBeforeChange: a pre-image on an update, null on a delete. */
	bson_t *pre = event("update", 1796325701, 2, false, true, true, true), doc;
	BSON_APPEND_DOCUMENT_BEGIN(pre, "fullDocumentBeforeChange", &doc);
	BSON_APPEND_INT32(&doc, "_id", 7);
	BSON_APPEND_INT64(&doc, "n", 1);
	bson_append_document_end(pre, &doc);
	write_seed(dir, "update-before", pre);
	bson_destroy(pre);
	bson_t *del = event("delete", 1796325702, 3, false, false, true, false);
	BSON_APPEND_NULL(del, "fullDocumentBeforeChange");
	write_seed(dir, "delete-before-null", del);
	bson_destroy(del);
	bson_t *tok = bson_zoo_resume_token(42);
	write_seed(dir, "token", tok);
	bson_destroy(tok);
	return 0;
}
