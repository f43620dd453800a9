/*
 * mongo_loader: the plainest libmongoc loader of change events, the baseline
 * of tools/bench.sh's MongoDB apply benchmark. It reads change events (raw
 * BSON back to back, as mongo_cs_reader writes them) from a file and writes
 * them to a deployment with unordered bulk writes per collection, 1000
 * operations at a time, without transactions and without any progress
 * record: insert → insertOne(fullDocument); update → updateOne(documentKey,
 * {$set: updatedFields, $unset: removedFields}); replace →
 * replaceOne(documentKey, fullDocument); delete → deleteOne(documentKey).
 * Other events are skipped.
 *   mongo_loader URI FILE
 * Prints the number of operations written. Exit status: 0 done, 1 an error
 * (said on stderr), 2 usage.
 */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 1000

typedef struct ns_bulk {
	char db[128], coll[128];
	mongoc_collection_t *c;
	mongoc_bulk_operation_t *bulk;
	int n;
} ns_bulk;

static ns_bulk bulks[256];
static int nbulks;
static unsigned long long written;

static bool
flush(ns_bulk *b)
{
	if (b->n == 0)
		return true;
	bson_t reply;
	bson_error_t err;
	bool ok = mongoc_bulk_operation_execute(b->bulk, &reply, &err) != 0;
	if (!ok)
		fprintf(stderr, "mongo_loader: bulk write to %s.%s: %s\n", b->db, b->coll,
			err.message);
	bson_destroy(&reply);
	mongoc_bulk_operation_destroy(b->bulk);
	written += (unsigned long long)b->n;
	b->bulk = NULL;
	b->n = 0;
	return ok;
}

static ns_bulk *
bulk_for(mongoc_client_t *client, const char *db, const char *coll)
{
	for (int i = 0; i < nbulks; i++)
		if (strcmp(bulks[i].db, db) == 0 && strcmp(bulks[i].coll, coll) == 0)
			return &bulks[i];
	if (nbulks == (int)(sizeof(bulks) / sizeof(bulks[0]))) {
		fprintf(stderr, "mongo_loader: more than 256 collections\n");
		exit(1);
	}
	ns_bulk *b = &bulks[nbulks++];
	snprintf(b->db, sizeof(b->db), "%s", db);
	snprintf(b->coll, sizeof(b->coll), "%s", coll);
	b->c = mongoc_client_get_collection(client, db, coll);
	return b;
}

static bool
doc_field(const bson_t *ev, const char *name, bson_t *out)
{
	bson_iter_t it;
	const uint8_t *data;
	uint32_t len;
	if (!bson_iter_init_find(&it, ev, name) || !BSON_ITER_HOLDS_DOCUMENT(&it))
		return false;
	bson_iter_document(&it, &len, &data);
	return bson_init_static(out, data, len);
}

static bool
load(mongoc_client_t *client, const bson_t *ev)
{
	bson_iter_t it, ns;
	const char *op = NULL, *db = NULL, *coll = NULL;
	if (bson_iter_init_find(&it, ev, "operationType") && BSON_ITER_HOLDS_UTF8(&it))
		op = bson_iter_utf8(&it, NULL);
	if (bson_iter_init_find(&it, ev, "ns") && bson_iter_recurse(&it, &ns))
		while (bson_iter_next(&ns)) {
			if (strcmp(bson_iter_key(&ns), "db") == 0)
				db = bson_iter_utf8(&ns, NULL);
			else if (strcmp(bson_iter_key(&ns), "coll") == 0)
				coll = bson_iter_utf8(&ns, NULL);
		}
	if (op == NULL || db == NULL || coll == NULL)
		return true;
	bson_t doc, key, ud;
	bool has_doc = doc_field(ev, "fullDocument", &doc);
	bool has_key = doc_field(ev, "documentKey", &key);
	ns_bulk *b = NULL;
	if (strcmp(op, "insert") == 0 || strcmp(op, "update") == 0 || strcmp(op, "replace") == 0 ||
	    strcmp(op, "delete") == 0)
		b = bulk_for(client, db, coll);
	else
		return true;
	if (b->bulk == NULL) {
		bson_t opts = BSON_INITIALIZER;
		BSON_APPEND_BOOL(&opts, "ordered", false);
		b->bulk = mongoc_collection_create_bulk_operation_with_opts(b->c, &opts);
		bson_destroy(&opts);
	}
	bson_error_t err;
	bool ok = true;
	if (strcmp(op, "insert") == 0 && has_doc) {
		mongoc_bulk_operation_insert(b->bulk, &doc);
	} else if (strcmp(op, "replace") == 0 && has_doc && has_key) {
		ok = mongoc_bulk_operation_replace_one_with_opts(b->bulk, &key, &doc, NULL, &err);
	} else if (strcmp(op, "delete") == 0 && has_key) {
		ok = mongoc_bulk_operation_remove_one_with_opts(b->bulk, &key, NULL, &err);
	} else if (strcmp(op, "update") == 0 && has_key &&
		   doc_field(ev, "updateDescription", &ud)) {
		bson_t u = BSON_INITIALIZER, uf, unset;
		if (doc_field(&ud, "updatedFields", &uf) && !bson_empty(&uf))
			BSON_APPEND_DOCUMENT(&u, "$set", &uf);
		if (bson_iter_init_find(&it, &ud, "removedFields") && BSON_ITER_HOLDS_ARRAY(&it)) {
			bson_iter_t rf;
			bson_iter_recurse(&it, &rf);
			bson_init(&unset);
			while (bson_iter_next(&rf))
				if (BSON_ITER_HOLDS_UTF8(&rf))
					BSON_APPEND_UTF8(&unset, bson_iter_utf8(&rf, NULL), "");
			if (!bson_empty(&unset))
				BSON_APPEND_DOCUMENT(&u, "$unset", &unset);
			bson_destroy(&unset);
		}
		bool empty = bson_empty(&u);
		if (!empty)
			ok = mongoc_bulk_operation_update_one_with_opts(b->bulk, &key, &u, NULL,
									&err);
		bson_destroy(&u);
		if (empty)
			return true; /* nothing to write */
	} else {
		return true; /* not an event this loader writes */
	}
	if (!ok) {
		fprintf(stderr, "mongo_loader: %s\n", err.message);
		return false;
	}
	b->n++;
	return b->n < BATCH || flush(b);
}

int
main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: mongo_loader URI FILE\n");
		return 2;
	}
	FILE *f = fopen(argv[2], "rb");
	if (f == NULL) {
		perror("mongo_loader: open");
		return 2;
	}
	mongoc_init();
	bson_error_t err;
	mongoc_uri_t *uri = mongoc_uri_new_with_error(argv[1], &err);
	if (uri == NULL) {
		fprintf(stderr, "mongo_loader: %s\n", err.message);
		return 2;
	}
	mongoc_client_t *client = mongoc_client_new_from_uri(uri);
	mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
	bson_reader_t *reader = bson_reader_new_from_fd(fileno(f), false);
	const bson_t *ev;
	bool eof = false;
	int rc = 0;
	while ((ev = bson_reader_read(reader, &eof)) != NULL)
		if (!load(client, ev)) {
			rc = 1;
			break;
		}
	for (int i = 0; rc == 0 && i < nbulks; i++)
		if (!flush(&bulks[i]))
			rc = 1;
	if (rc == 0 && !eof) {
		fprintf(stderr, "mongo_loader: %s is not a sequence of BSON documents\n", argv[2]);
		rc = 1;
	}
	printf("%llu\n", written);
	bson_reader_destroy(reader);
	for (int i = 0; i < nbulks; i++) {
		if (bulks[i].bulk)
			mongoc_bulk_operation_destroy(bulks[i].bulk);
		mongoc_collection_destroy(bulks[i].c);
	}
	mongoc_client_destroy(client);
	mongoc_uri_destroy(uri);
	mongoc_cleanup();
	fclose(f);
	return rc;
}
