/* sluice prepare for a MongoDB target. */
#include "mongoprepare.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "mongoconn.h"
#include "mongoversion.h"
#include "mongowatch.h"

#define NODE_ID "node"

int
sluice_mongo_node_read(mongoc_client_t *client, char *name, size_t cap, uint64_t *start,
		       bson_error_t *err)
{
	mongoc_collection_t *c =
		mongoc_client_get_collection(client, SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_NODE);
	bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
	BSON_APPEND_UTF8(&filter, "_id", NODE_ID);
	BSON_APPEND_INT64(&opts, "limit", 1);
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, &opts, NULL);
	bson_destroy(&filter);
	bson_destroy(&opts);
	const bson_t *doc;
	int found = 0;
	if (mongoc_cursor_next(cur, &doc)) {
		bson_iter_t it;
		found = 1;
		name[0] = '\0';
		*start = 0;
		if (bson_iter_init_find(&it, doc, "name") && BSON_ITER_HOLDS_UTF8(&it))
			snprintf(name, cap, "%s", bson_iter_utf8(&it, NULL));
		if (bson_iter_init_find(&it, doc, "start") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
			uint32_t t, i;
			bson_iter_timestamp(&it, &t, &i);
			*start = ((uint64_t)t << 32) | i;
		}
		if (name[0] == '\0' || *start == 0) {
			bson_set_error(err, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID,
				       "%s.%s was not written by sluice prepare",
				       SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_NODE);
			found = -1;
		}
	}
	if (mongoc_cursor_error(cur, err))
		found = -1;
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(c);
	return found;
}

/* prepare_client connects to uri; NULL (logged) when it cannot. */
static mongoc_client_t *
prepare_client(const char *text, char *hosts, size_t cap)
{
	sluice_mongo_init();
	mongoc_uri_t *uri = sluice_mongo_uri(text, "sluice-prepare");
	if (uri == NULL)
		return NULL;
	sluice_mongo_hosts(uri, hosts, cap);
	bson_error_t err;
	mongoc_client_t *c = mongoc_client_new_from_uri_with_error(uri, &err);
	mongoc_uri_destroy(uri);
	if (c == NULL) {
		sluice_log_error("MongoDB client for %s: %s", hosts, sluice_mongo_error_text(&err));
		return NULL;
	}
	mongoc_client_set_error_api(c, MONGOC_ERROR_API_VERSION_2);
	return c;
}

/* prepare_now reads the deployment's cluster time (operationTime of a ping). */
static bool
prepare_now(mongoc_client_t *c, uint32_t *t, uint32_t *i, bson_error_t *err)
{
	bson_t cmd = BSON_INITIALIZER, reply;
	BSON_APPEND_INT32(&cmd, "ping", 1);
	bool ok = mongoc_client_command_simple(c, "admin", &cmd, NULL, &reply, err);
	bson_iter_t it;
	if (ok && (!bson_iter_init_find(&it, &reply, "operationTime") ||
		   !BSON_ITER_HOLDS_TIMESTAMP(&it))) {
		bson_set_error(err, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID,
			       "the server's reply has no operationTime: is it a replica set "
			       "(change streams need one)?");
		ok = false;
	} else if (ok)
		bson_iter_timestamp(&it, t, i);
	bson_destroy(&reply);
	bson_destroy(&cmd);
	return ok;
}

bool
sluice_mongo_prepare_install(const char *uri, const char *node, int64_t horizon_s)
{
	char hosts[512], have[SLUICE_MONGO_NODE_NAME_MAX];
	mongoc_client_t *c = prepare_client(uri, hosts, sizeof(hosts));
	if (c == NULL)
		return false;
	bson_error_t err;
	uint64_t start;
	bool ok = false;
	int found = sluice_mongo_node_read(c, have, sizeof(have), &start, &err);
	if (found < 0) {
		sluice_log_error("reading %s.%s on %s: %s", SLUICE_MONGO_LOCAL_DB,
				 SLUICE_MONGO_NODE, hosts, sluice_mongo_error_text(&err));
		goto done;
	}
	if (found == 1 && strcmp(have, node) != 0) {
		sluice_log_error("the MongoDB deployment at %s is node \"%s\" already: every node "
				 "keeps one name (run prepare --undo --all first to rename it, "
				 "which forgets its document versions)",
				 hosts, have);
		goto done;
	}
	if (found == 0) {
		uint32_t t, i;
		if (!prepare_now(c, &t, &i, &err)) {
			sluice_log_error("reading the cluster time of %s: %s", hosts,
					 sluice_mongo_error_text(&err));
			goto done;
		}
		mongoc_collection_t *nc =
			mongoc_client_get_collection(c, SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_NODE);
		bson_t doc = BSON_INITIALIZER;
		BSON_APPEND_UTF8(&doc, "_id", NODE_ID);
		BSON_APPEND_UTF8(&doc, "name", node);
		BSON_APPEND_TIMESTAMP(&doc, "start", t, i);
		bool w = mongoc_collection_insert_one(nc, &doc, NULL, NULL, &err);
		bson_destroy(&doc);
		mongoc_collection_destroy(nc);
		if (!w) {
			sluice_log_error("writing %s.%s on %s: %s", SLUICE_MONGO_LOCAL_DB,
					 SLUICE_MONGO_NODE, hosts, sluice_mongo_error_text(&err));
			goto done;
		}
	}
	/* the TTL index removes tombstones past the horizon; ns finds a dropped collection's */
	bson_t cmd = BSON_INITIALIZER, idx, ix, key, reply;
	BSON_APPEND_UTF8(&cmd, "createIndexes", SLUICE_MONGO_VERSIONS);
	BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &idx);
	BSON_APPEND_DOCUMENT_BEGIN(&idx, "0", &ix);
	BSON_APPEND_DOCUMENT_BEGIN(&ix, "key", &key);
	BSON_APPEND_INT32(&key, "deleted_at", 1);
	bson_append_document_end(&ix, &key);
	BSON_APPEND_UTF8(&ix, "name", "sluice_tombstones");
	BSON_APPEND_INT64(&ix, "expireAfterSeconds", horizon_s);
	bson_append_document_end(&idx, &ix);
	BSON_APPEND_DOCUMENT_BEGIN(&idx, "1", &ix);
	BSON_APPEND_DOCUMENT_BEGIN(&ix, "key", &key);
	BSON_APPEND_INT32(&key, "ns", 1);
	bson_append_document_end(&ix, &key);
	BSON_APPEND_UTF8(&ix, "name", "sluice_ns");
	bson_append_document_end(&idx, &ix);
	bson_append_array_end(&cmd, &idx);
	mongoc_database_t *db = mongoc_client_get_database(c, SLUICE_MONGO_LOCAL_DB);
	ok = mongoc_database_write_command_with_opts(db, &cmd, NULL, &reply, &err);
	mongoc_database_destroy(db);
	bson_destroy(&reply);
	bson_destroy(&cmd);
	if (!ok) {
		sluice_log_error("creating the indexes of %s.%s on %s: %s", SLUICE_MONGO_LOCAL_DB,
				 SLUICE_MONGO_VERSIONS, hosts, sluice_mongo_error_text(&err));
		goto done;
	}
	sluice_log_info("%s is node \"%s\"%s: its local writes are versioned from then on by "
			"apply --strategy timestamp, tombstones kept %" PRId64 " s",
			hosts, node, found == 1 ? " (already prepared)" : "", horizon_s);
done:
	mongoc_client_destroy(c);
	return ok;
}

bool
sluice_mongo_prepare_undo(const char *uri, bool all)
{
	char hosts[512];
	if (!all) {
		sluice_log_info("a MongoDB target has no triggers to remove: --undo --all drops "
				"%s.%s, %s.%s and %s.%s",
				SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_NODE, SLUICE_MONGO_LOCAL_DB,
				SLUICE_MONGO_VERSIONS, SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_WATCH);
		return true;
	}
	mongoc_client_t *c = prepare_client(uri, hosts, sizeof(hosts));
	if (c == NULL)
		return false;
	const char *names[] = {SLUICE_MONGO_NODE, SLUICE_MONGO_VERSIONS, SLUICE_MONGO_WATCH};
	bool ok = true;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && ok; i++) {
		bson_error_t err;
		mongoc_collection_t *coll =
			mongoc_client_get_collection(c, SLUICE_MONGO_LOCAL_DB, names[i]);
		ok = mongoc_collection_drop_with_opts(coll, NULL, &err) || err.code == 26;
		if (!ok)
			sluice_log_error("dropping %s.%s on %s: %s", SLUICE_MONGO_LOCAL_DB,
					 names[i], hosts, sluice_mongo_error_text(&err));
		mongoc_collection_destroy(coll);
	}
	if (ok)
		sluice_log_info("dropped %s.%s, %s.%s and %s.%s on %s", SLUICE_MONGO_LOCAL_DB,
				SLUICE_MONGO_NODE, SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_VERSIONS,
				SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_WATCH, hosts);
	mongoc_client_destroy(c);
	return ok;
}
