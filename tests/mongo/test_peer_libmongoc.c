/* Proves the libmongoc 1.23.1 paths sluice uses (insert, transaction, watch, resume) against a URI.
 */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <string.h>

static int tpl_failures;

static void
tpl_check(const char *desc, bool ok)
{
	printf("%s %s\n", ok ? "ok  " : "FAIL", desc);
	if (!ok)
		tpl_failures++;
}

/* tpl_read reads up to n events within timeout_ms; their copies go to out. */
static size_t
tpl_read(mongoc_change_stream_t *s, bson_t **out, size_t n, int64_t timeout_ms)
{
	size_t got = 0;
	int64_t deadline = bson_get_monotonic_time() / 1000 + timeout_ms;
	const bson_t *doc;
	bson_error_t err;
	while (got < n && bson_get_monotonic_time() / 1000 < deadline) {
		if (mongoc_change_stream_next(s, &doc)) {
			out[got++] = bson_copy(doc);
		} else if (mongoc_change_stream_error_document(s, &err, NULL)) {
			fprintf(stderr, "change stream error: %s\n", err.message);
			break;
		}
	}
	return got;
}

static int32_t
tpl_key(const bson_t *ev)
{
	bson_iter_t it;
	if (bson_iter_init(&it, ev) && bson_iter_find_descendant(&it, "documentKey._id", &it) &&
	    BSON_ITER_HOLDS_INT32(&it))
		return bson_iter_int32(&it);
	return -1;
}

static uint64_t
tpl_cluster_time(const bson_t *ev)
{
	bson_iter_t it;
	uint32_t t = 0, i = 0;
	if (bson_iter_init_find(&it, ev, "clusterTime") && BSON_ITER_HOLDS_TIMESTAMP(&it))
		bson_iter_timestamp(&it, &t, &i);
	return (uint64_t)t << 32 | i;
}

static void
tpl_free(bson_t **evs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		bson_destroy(evs[i]);
}

int
main(int argc, char **argv)
{
	bson_error_t err;
	bson_t *evs[4] = {0}, *later[4] = {0};
	size_t n = 0, m = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: test_peer_libmongoc MONGODB_URI\n");
		return 2;
	}
	mongoc_init();
	mongoc_client_t *client = mongoc_client_new(argv[1]);
	if (client == NULL) {
		fprintf(stderr, "invalid URI %s\n", argv[1]);
		return 2;
	}
	mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
	mongoc_collection_t *coll = mongoc_client_get_collection(client, "sluice_libmongoc", "c");
	mongoc_collection_drop(coll, NULL); /* absent is fine */

	bson_t *pipeline = BCON_NEW("pipeline", "[", "]");
	bson_t *opts = BCON_NEW("maxAwaitTimeMS", BCON_INT64(200));
	mongoc_change_stream_t *stream = mongoc_collection_watch(coll, pipeline, opts);
	tpl_check("watch starts", !mongoc_change_stream_error_document(stream, &err, NULL));

	bson_t *d1 = BCON_NEW("_id", BCON_INT32(1));
	tpl_check("insert_one", mongoc_collection_insert_one(coll, d1, NULL, NULL, &err));

	mongoc_client_session_t *session = mongoc_client_start_session(client, NULL, &err);
	tpl_check("start a session", session != NULL);
	bool txn_ok = session && mongoc_client_session_start_transaction(session, NULL, &err);
	bson_t sopts = BSON_INITIALIZER;
	txn_ok = txn_ok && mongoc_client_session_append(session, &sopts, &err);
	bson_t *d2 = BCON_NEW("_id", BCON_INT32(2)), *d3 = BCON_NEW("_id", BCON_INT32(3));
	txn_ok = txn_ok && mongoc_collection_insert_one(coll, d2, &sopts, NULL, &err) &&
		 mongoc_collection_insert_one(coll, d3, &sopts, NULL, &err);
	txn_ok = txn_ok && mongoc_client_session_commit_transaction(session, NULL, &err);
	if (!txn_ok)
		fprintf(stderr, "transaction: %s\n", err.message);
	tpl_check("a transaction of two inserts commits", txn_ok);

	n = tpl_read(stream, evs, 3, 10000);
	tpl_check("the stream shows the insert and the transaction's two inserts",
		  n == 3 && tpl_key(evs[0]) == 1 && tpl_key(evs[1]) == 2 && tpl_key(evs[2]) == 3);
	tpl_check("the transaction's events share a clusterTime, after the first insert's",
		  n == 3 && tpl_cluster_time(evs[1]) == tpl_cluster_time(evs[2]) &&
			  tpl_cluster_time(evs[1]) > tpl_cluster_time(evs[0]));
	tpl_check("transaction events carry lsid and txnNumber",
		  n == 3 && bson_has_field(evs[1], "lsid") && bson_has_field(evs[1], "txnNumber") &&
			  !bson_has_field(evs[0], "lsid"));
	mongoc_change_stream_destroy(stream);

	if (n >= 1) {
		bson_iter_t it;
		bson_t token;
		uint32_t l;
		const uint8_t *data;
		bson_iter_init_find(&it, evs[0], "_id");
		bson_iter_document(&it, &l, &data);
		bson_init_static(&token, data, l);
		bson_t *ropts = BCON_NEW("maxAwaitTimeMS", BCON_INT64(200));
		BSON_APPEND_DOCUMENT(ropts, "resumeAfter", &token);
		stream = mongoc_collection_watch(coll, pipeline, ropts);
		m = tpl_read(stream, later, 3, 2000);
		tpl_check("resumeAfter a saved token yields exactly the later events",
			  m == 2 && tpl_key(later[0]) == 2 && tpl_key(later[1]) == 3);
		tpl_check("the resumed stream has no error",
			  !mongoc_change_stream_error_document(stream, &err, NULL));
		mongoc_change_stream_destroy(stream);
		bson_destroy(ropts);
	}

	mongoc_cursor_t *cur =
		mongoc_collection_find_with_opts(coll, &(bson_t)BSON_INITIALIZER, NULL, NULL);
	const bson_t *doc;
	bson_iter_t it1;
	int found = 0;
	while (mongoc_cursor_next(cur, &doc))
		found++;
	tpl_check("find sees the three committed documents",
		  found == 3 && !mongoc_cursor_error(cur, &err));
	mongoc_cursor_destroy(cur);

	/* A write conflict: the transaction reads document 1, another write updates it, the
	 * transaction's update of it fails with 112 labelled TransientTransactionError. */
	mongoc_client_session_t *s2 = mongoc_client_start_session(client, NULL, &err);
	bson_t s2opts = BSON_INITIALIZER, reply;
	bson_t *q1 = BCON_NEW("_id", BCON_INT32(1));
	bson_t *set_out = BCON_NEW("$set", "{", "v", BCON_UTF8("outside"), "}");
	bson_t *set_txn = BCON_NEW("$set", "{", "v", BCON_UTF8("txn"), "}");
	bool wc_ok = s2 && mongoc_client_session_start_transaction(s2, NULL, &err) &&
		     mongoc_client_session_append(s2, &s2opts, &err);
	if (wc_ok) {
		cur = mongoc_collection_find_with_opts(coll, q1, &s2opts, NULL);
		wc_ok = mongoc_cursor_next(cur, &doc);
		mongoc_cursor_destroy(cur);
	}
	tpl_check("a second transaction reads document 1", wc_ok);
	tpl_check("an update of document 1 outside the transaction",
		  mongoc_collection_update_one(coll, q1, set_out, NULL, NULL, &err));
	bool upd = mongoc_collection_update_one(coll, q1, set_txn, &s2opts, &reply, &err);
	tpl_check("the transaction's update of document 1 fails with 112 WriteConflict, "
		  "labelled TransientTransactionError",
		  !upd && err.domain == MONGOC_ERROR_SERVER && err.code == 112 &&
			  mongoc_error_has_label(&reply, "TransientTransactionError"));
	bson_destroy(&reply);
	if (s2)
		mongoc_client_session_abort_transaction(s2, NULL);
	cur = mongoc_collection_find_with_opts(coll, q1, NULL, NULL);
	tpl_check("the outside update survives",
		  mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it1, doc, "v") &&
			  BSON_ITER_HOLDS_UTF8(&it1) &&
			  strcmp(bson_iter_utf8(&it1, NULL), "outside") == 0);
	mongoc_cursor_destroy(cur);
	bson_destroy(q1);
	bson_destroy(set_out);
	bson_destroy(set_txn);
	bson_destroy(&s2opts);
	if (s2)
		mongoc_client_session_destroy(s2);

	tpl_free(evs, n);
	tpl_free(later, m);
	bson_destroy(&sopts);
	bson_destroy(d1);
	bson_destroy(d2);
	bson_destroy(d3);
	bson_destroy(pipeline);
	bson_destroy(opts);
	mongoc_client_session_destroy(session);
	mongoc_collection_destroy(coll);
	mongoc_client_destroy(client);
	mongoc_cleanup();
	printf("%d failed\n", tpl_failures);
	return tpl_failures ? 1 : 0;
}
