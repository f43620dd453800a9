/* mongo_writer: the numbered MongoDB write workload of workload.py, written with libmongoc.
 *
 *   mongo_writer --uri URI --name W --db DB --count N [--rate R] --log FILE
 *
 * Same steps, documents, markers and log lines as workload.py (see its header):
 * step i is one source transaction with marker "W:i"; each acknowledged step
 * appends {"m", "status", "multi", "ops"} to the log. Any error: status 1.
 */
#include <errno.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MW_ID_MAX  96
#define MW_OPS_MAX 8

typedef struct {
	const char *type; /* borrowed: a literal */
	char ns[160];
	char id[MW_ID_MAX];
} mw_op;

/* mw_ids is the writer's list of its live _ids in one collection. */
typedef struct {
	char (*v)[MW_ID_MAX]; /* owned */
	size_t n, cap;
} mw_ids;

typedef struct {
	mongoc_client_t *client;                          /* owned */
	mongoc_collection_t *items, *events, *txlog, *c2; /* owned */
	char ns_items[160], ns_events[160], ns_txlog[160], ns_c2[160];
	const char *name; /* borrowed: argv */
	mw_op ops[MW_OPS_MAX];
	size_t n_ops;
} mw_writer;

static void
mw_ids_add(mw_ids *l, const char *id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 256;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (l->v == NULL) {
			fprintf(stderr, "mongo_writer: out of memory\n");
			exit(1);
		}
	}
	snprintf(l->v[l->n++], MW_ID_MAX, "%s", id);
}

/* mw_ids_remove removes id, keeping the order (as list.remove does in workload.py). */
static void
mw_ids_remove(mw_ids *l, const char *id)
{
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->v[i], id) == 0) {
			memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof(*l->v));
			l->n--;
			return;
		}
	}
}

static void
mw_op_add(mw_writer *w, const char *type, const char *ns, const char *id)
{
	if (w->n_ops == MW_OPS_MAX)
		abort();
	mw_op *op = &w->ops[w->n_ops++];
	op->type = type;
	if (snprintf(op->ns, sizeof(op->ns), "%s", ns) >= (int)sizeof(op->ns) ||
	    snprintf(op->id, sizeof(op->id), "%s", id) >= (int)sizeof(op->id))
		abort();
}

static void
mw_fail(const char *what, const bson_error_t *err)
{
	fprintf(stderr, "mongo_writer: %s: %s (domain %u code %u)\n", what, err->message,
		err->domain, err->code);
	exit(1);
}

/* mw_item fills doc with the item document of workload.py's item(). */
static void
mw_item(bson_t *doc, const char *id, const char *name, int32_t i, const char *marker)
{
	char pad[64];
	int n = i % 37;
	memset(pad, 'p', (size_t)n);
	pad[n] = '\0';
	bson_init(doc);
	BSON_APPEND_UTF8(doc, "_id", id);
	BSON_APPEND_UTF8(doc, "w", name);
	BSON_APPEND_INT32(doc, "n", i);
	BSON_APPEND_UTF8(doc, "op", marker);
	BSON_APPEND_INT32(doc, "cnt", 0);
	BSON_APPEND_UTF8(doc, "pad", pad);
	BSON_APPEND_DOUBLE(doc, "f", i / 4.0);
	BSON_APPEND_INT64(doc, "big", (int64_t)i * 1000003);
}

/* mw_opts is {session} for a write inside a transaction, or empty. */
static void
mw_opts(bson_t *opts, mongoc_client_session_t *s)
{
	bson_error_t err;
	bson_init(opts);
	if (s != NULL && !mongoc_client_session_append(s, opts, &err))
		mw_fail("session", &err);
}

static void
mw_insert(mongoc_collection_t *c, const bson_t *doc, mongoc_client_session_t *s)
{
	bson_t opts;
	bson_error_t err;
	mw_opts(&opts, s);
	if (!mongoc_collection_insert_one(c, doc, &opts, NULL, &err))
		mw_fail("insert", &err);
	bson_destroy(&opts);
}

/* mw_update runs update (an operator document, or a replacement when replace). */
static void
mw_update(mongoc_collection_t *c, const char *id, const bson_t *update, bool replace,
	  mongoc_client_session_t *s)
{
	bson_t opts, reply;
	bson_error_t err;
	bson_t *q = BCON_NEW("_id", BCON_UTF8(id));
	mw_opts(&opts, s);
	bool ok = replace ? mongoc_collection_replace_one(c, q, update, &opts, &reply, &err)
			  : mongoc_collection_update_one(c, q, update, &opts, &reply, &err);
	if (!ok)
		mw_fail(replace ? "replace" : "update", &err);
	bson_iter_t it;
	if (!bson_iter_init_find(&it, &reply, "modifiedCount") || bson_iter_as_int64(&it) != 1) {
		fprintf(stderr, "mongo_writer: %s of %s modified nothing\n",
			replace ? "replace" : "update", id);
		exit(1);
	}
	bson_destroy(&reply);
	bson_destroy(&opts);
	bson_destroy(q);
}

static void
mw_delete(mongoc_collection_t *c, const char *id, mongoc_client_session_t *s)
{
	bson_t opts;
	bson_error_t err;
	bson_t *q = BCON_NEW("_id", BCON_UTF8(id));
	mw_opts(&opts, s);
	if (!mongoc_collection_delete_one(c, q, &opts, NULL, &err))
		mw_fail("delete", &err);
	bson_destroy(&opts);
	bson_destroy(q);
}

static mongoc_client_session_t *
mw_begin(mw_writer *w)
{
	bson_error_t err;
	mongoc_client_session_t *s = mongoc_client_start_session(w->client, NULL, &err);
	if (s == NULL)
		mw_fail("start session", &err);
	if (!mongoc_client_session_start_transaction(s, NULL, &err))
		mw_fail("start transaction", &err);
	return s;
}

static void
mw_commit(mongoc_client_session_t *s)
{
	bson_error_t err;
	if (!mongoc_client_session_commit_transaction(s, NULL, &err))
		mw_fail("commit", &err);
	mongoc_client_session_destroy(s);
}

static void
mw_abort(mongoc_client_session_t *s)
{
	bson_error_t err;
	if (!mongoc_client_session_abort_transaction(s, &err))
		mw_fail("abort", &err);
	mongoc_client_session_destroy(s);
}

static void
mw_log(FILE *log, const char *marker, bool committed, bool multi, const mw_writer *w)
{
	fprintf(log, "{\"m\": \"%s\", \"status\": \"%s\", \"multi\": %s, \"ops\": [", marker,
		committed ? "committed" : "aborted", multi ? "true" : "false");
	for (size_t i = 0; i < w->n_ops; i++)
		fprintf(log, "%s[\"%s\", \"%s\", \"%s\"]", i ? ", " : "", w->ops[i].type,
			w->ops[i].ns, w->ops[i].id);
	fputs("]}\n", log);
	if (fflush(log) != 0) {
		fprintf(stderr, "mongo_writer: could not write the log: %s\n", strerror(errno));
		exit(1);
	}
}

static double
mw_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
mw_usage(void)
{
	fprintf(stderr,
		"usage: mongo_writer --uri URI --name W --db DB --count N [--rate R] --log FILE\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	const char *uri = NULL, *name = NULL, *dbname = NULL, *logpath = NULL;
	long count = -1;
	double rate = 0;
	for (int a = 1; a + 1 < argc; a += 2) {
		char *end = NULL;
		if (strcmp(argv[a], "--uri") == 0)
			uri = argv[a + 1];
		else if (strcmp(argv[a], "--name") == 0)
			name = argv[a + 1];
		else if (strcmp(argv[a], "--db") == 0)
			dbname = argv[a + 1];
		else if (strcmp(argv[a], "--log") == 0)
			logpath = argv[a + 1];
		else if (strcmp(argv[a], "--count") == 0) {
			count = strtol(argv[a + 1], &end, 10);
			if (*end != '\0' || count < 0)
				mw_usage();
		} else if (strcmp(argv[a], "--rate") == 0) {
			rate = strtod(argv[a + 1], &end);
			if (*end != '\0' || rate < 0)
				mw_usage();
		} else
			mw_usage();
	}
	if (argc % 2 != 1 || !uri || !name || !dbname || !logpath || count < 0)
		mw_usage();

	mongoc_init();
	mw_writer w = {0};
	w.name = name;
	bson_error_t err;
	mongoc_uri_t *muri = mongoc_uri_new_with_error(uri, &err);
	if (muri == NULL)
		mw_fail("URI", &err);
	mongoc_uri_set_option_as_int32(muri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 15000);
	w.client = mongoc_client_new_from_uri(muri);
	mongoc_uri_destroy(muri);
	mongoc_client_set_error_api(w.client, MONGOC_ERROR_API_VERSION_2);
	mongoc_client_set_appname(w.client, "mongo_writer");
	char db2[128];
	snprintf(db2, sizeof(db2), "%s_b", dbname);
	w.items = mongoc_client_get_collection(w.client, dbname, "items");
	w.events = mongoc_client_get_collection(w.client, dbname, "events");
	w.txlog = mongoc_client_get_collection(w.client, dbname, "txlog");
	w.c2 = mongoc_client_get_collection(w.client, db2, "c2");
	snprintf(w.ns_items, sizeof(w.ns_items), "%s.items", dbname);
	snprintf(w.ns_events, sizeof(w.ns_events), "%s.events", dbname);
	snprintf(w.ns_txlog, sizeof(w.ns_txlog), "%s.txlog", dbname);
	snprintf(w.ns_c2, sizeof(w.ns_c2), "%s.c2", db2);
	FILE *log = fopen(logpath, "a");
	if (log == NULL) {
		fprintf(stderr, "mongo_writer: could not open \"%s\": %s\n", logpath,
			strerror(errno));
		return 1;
	}

	mw_ids live = {0}, live_c2 = {0};
	long committed = 0, aborted = 0;
	double t0 = mw_now();
	for (long il = 1; il <= count; il++) {
		int32_t i = (int32_t)il;
		if (rate > 0) {
			double delay = t0 + (il - 1) / rate - mw_now();
			if (delay > 0) {
				struct timespec ts = {(time_t)delay,
						      (long)((delay - (time_t)delay) * 1e9)};
				nanosleep(&ts, NULL);
			}
		}
		char marker[MW_ID_MAX], id[MW_ID_MAX], tid[MW_ID_MAX], gone[MW_ID_MAX];
		snprintf(marker, sizeof(marker), "%s:%d", name, i);
		int k = i % 20;
		bool multi = k == 7 || k == 17 || k == 18 || k == 9;
		bool ok_commit = true;
		w.n_ops = 0;
		if (live.n == 0 && k != 0 && k != 1 && k != 2 && k != 10 && k != 11 && k != 12 &&
		    k != 8 && k != 19) {
			k = 0;
			multi = false;
		}
		if (live.n > 0)
			snprintf(tid, sizeof(tid), "%s", live.v[((size_t)i * 7919) % live.n]);
		bson_t doc;
		switch (k) {
		case 0:
		case 1:
		case 2:
		case 10:
		case 11:
		case 12:
			snprintf(id, sizeof(id), "%s-%d-0", name, i);
			mw_item(&doc, id, name, i, marker);
			mw_insert(w.items, &doc, NULL);
			bson_destroy(&doc);
			mw_ids_add(&live, id);
			mw_op_add(&w, "insert", w.ns_items, id);
			break;
		case 3:
		case 13: {
			bson_t *u = BCON_NEW("$set", "{", "op", BCON_UTF8(marker), "}", "$inc", "{",
					     "cnt", BCON_INT32(1), "}");
			mw_update(w.items, tid, u, false, NULL);
			bson_destroy(u);
			mw_op_add(&w, "update", w.ns_items, tid);
			break;
		}
		case 4:
		case 14: {
			bson_t *u = BCON_NEW("$set", "{", "op", BCON_UTF8(marker), "}", "$unset",
					     "{", "pad", BCON_UTF8(""), "}");
			mw_update(w.items, tid, u, false, NULL);
			bson_destroy(u);
			mw_op_add(&w, "update", w.ns_items, tid);
			break;
		}
		case 5:
		case 15: {
			bson_t *r = BCON_NEW("w", BCON_UTF8(name), "n", BCON_INT32(i), "op",
					     BCON_UTF8(marker), "r", BCON_BOOL(true), "cnt",
					     BCON_INT32(0));
			mw_update(w.items, tid, r, true, NULL);
			bson_destroy(r);
			mw_op_add(&w, "replace", w.ns_items, tid);
			break;
		}
		case 6:
		case 16:
			mw_delete(w.items, tid, NULL);
			mw_ids_remove(&live, tid);
			mw_op_add(&w, "delete", w.ns_items, tid);
			break;
		case 7:
		case 17: {
			mongoc_client_session_t *s = mw_begin(&w);
			char new_ids[2][MW_ID_MAX];
			for (int j = 1; j <= 2; j++) {
				snprintf(new_ids[j - 1], MW_ID_MAX, "%s-%d-%d", name, i, j);
				mw_item(&doc, new_ids[j - 1], name, i, marker);
				mw_insert(w.items, &doc, s);
				bson_destroy(&doc);
				mw_op_add(&w, "insert", w.ns_items, new_ids[j - 1]);
			}
			bson_t *u = BCON_NEW("$set", "{", "op", BCON_UTF8(marker), "}", "$inc", "{",
					     "cnt", BCON_INT32(1), "}");
			mw_update(w.items, tid, u, false, s);
			bson_destroy(u);
			mw_op_add(&w, "update", w.ns_items, tid);
			snprintf(gone, sizeof(gone), "%s", live.v[((size_t)i * 31) % live.n]);
			mw_delete(w.items, gone, s);
			mw_op_add(&w, "delete", w.ns_items, gone);
			snprintf(id, sizeof(id), "%s-%d-e", name, i);
			bson_t *e = BCON_NEW("_id", BCON_UTF8(id), "op", BCON_UTF8(marker), "kind",
					     BCON_UTF8("event"));
			mw_insert(w.events, e, s);
			bson_destroy(e);
			mw_op_add(&w, "insert", w.ns_events, id);
			bson_t *t = BCON_NEW("_id", BCON_UTF8(marker), "op", BCON_UTF8(marker),
					     "kind", BCON_UTF8("multi"));
			mw_insert(w.txlog, t, s);
			bson_destroy(t);
			mw_op_add(&w, "insert", w.ns_txlog, marker);
			mw_commit(s);
			mw_ids_remove(&live, gone);
			mw_ids_add(&live, new_ids[0]);
			mw_ids_add(&live, new_ids[1]);
			break;
		}
		case 8: {
			snprintf(id, sizeof(id), "%s-%d", name, i);
			bson_t *c = BCON_NEW("_id", BCON_UTF8(id), "op", BCON_UTF8(marker), "v",
					     BCON_INT32(i));
			mw_insert(w.c2, c, NULL);
			bson_destroy(c);
			mw_ids_add(&live_c2, id);
			mw_op_add(&w, "insert", w.ns_c2, id);
			break;
		}
		case 18: {
			mongoc_client_session_t *s = mw_begin(&w);
			snprintf(id, sizeof(id), "%s-%d", name, i);
			bson_t *c = BCON_NEW("_id", BCON_UTF8(id), "op", BCON_UTF8(marker), "v",
					     BCON_INT32(i));
			mw_insert(w.c2, c, s);
			bson_destroy(c);
			mw_op_add(&w, "insert", w.ns_c2, id);
			bson_t *u = BCON_NEW("$set", "{", "op", BCON_UTF8(marker), "}");
			mw_update(w.items, tid, u, false, s);
			bson_destroy(u);
			mw_op_add(&w, "update", w.ns_items, tid);
			bson_t *t = BCON_NEW("_id", BCON_UTF8(marker), "op", BCON_UTF8(marker),
					     "kind", BCON_UTF8("cross"));
			mw_insert(w.txlog, t, s);
			bson_destroy(t);
			mw_op_add(&w, "insert", w.ns_txlog, marker);
			mw_commit(s);
			mw_ids_add(&live_c2, id);
			break;
		}
		case 9: {
			mongoc_client_session_t *s = mw_begin(&w);
			snprintf(id, sizeof(id), "%s-%d-a", name, i);
			mw_item(&doc, id, name, i, marker);
			mw_insert(w.items, &doc, s);
			bson_destroy(&doc);
			mw_op_add(&w, "insert", w.ns_items, id);
			bson_t *u = BCON_NEW("$set", "{", "op", BCON_UTF8(marker), "}");
			mw_update(w.items, tid, u, false, s);
			bson_destroy(u);
			mw_op_add(&w, "update", w.ns_items, tid);
			bson_t *t = BCON_NEW("_id", BCON_UTF8(marker), "op", BCON_UTF8(marker),
					     "kind", BCON_UTF8("aborted"));
			mw_insert(w.txlog, t, s);
			bson_destroy(t);
			mw_op_add(&w, "insert", w.ns_txlog, marker);
			mw_abort(s);
			ok_commit = false;
			break;
		}
		case 19:
			if (live_c2.n > 0) {
				char cid[MW_ID_MAX];
				snprintf(cid, sizeof(cid), "%s",
					 live_c2.v[((size_t)i * 7919) % live_c2.n]);
				bson_t *u = BCON_NEW("$set", "{", "op", BCON_UTF8(marker), "}");
				mw_update(w.c2, cid, u, false, NULL);
				bson_destroy(u);
				mw_op_add(&w, "update", w.ns_c2, cid);
			} else {
				snprintf(id, sizeof(id), "%s-%d", name, i);
				bson_t *c = BCON_NEW("_id", BCON_UTF8(id), "op", BCON_UTF8(marker),
						     "v", BCON_INT32(i));
				mw_insert(w.c2, c, NULL);
				bson_destroy(c);
				mw_ids_add(&live_c2, id);
				mw_op_add(&w, "insert", w.ns_c2, id);
			}
			break;
		default:
			abort();
		}
		if (ok_commit)
			committed++;
		else
			aborted++;
		mw_log(log, marker, ok_commit, multi, &w);
	}
	printf("writer %s (libmongoc): %ld transactions committed, %ld aborted in %.1f s\n", name,
	       committed, aborted, mw_now() - t0);
	fclose(log);
	free(live.v);
	free(live_c2.v);
	mongoc_collection_destroy(w.items);
	mongoc_collection_destroy(w.events);
	mongoc_collection_destroy(w.txlog);
	mongoc_collection_destroy(w.c2);
	mongoc_client_destroy(w.client);
	mongoc_cleanup();
	return 0;
}
