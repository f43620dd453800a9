/* The version watcher: local writes on a MongoDB target, recorded in sluice.versions. */
#include "mongowatch.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "mongoconn.h"
#include "mongoevent.h"
#include "mongoversion.h"

/* How long a catch-up may wait for its marker before it gives up (the caller retries). */
#define WATCH_CATCH_UP_MS 30000

struct sluice_mongo_watch {
	mongoc_client_t *client; /* owned */
	mongoc_collection_t *markers, *versions;
	mongoc_change_stream_t *cs; /* owned; NULL until opened or after an error */
	char hosts[512];
	char stream[256];
	char node[SLUICE_MONGO_NODE_NAME_MAX];
	bson_t *resume; /* owned: the last event handled (a reopen resumes after it) */
	uint64_t start; /* without resume: the cluster time to start at */
	bson_t *marker; /* owned: the token of the last marker seen */
	int64_t n;      /* the marker counter */
	bool marker_seen;
	/* the transaction of the last event: apply's own ones are left out whole */
	bool group_open, group_skip;
	int64_t group_txn;
	uint64_t group_ct;
	sluice_buf group_lsid;
	uint64_t recorded;
};

sluice_mongo_watch *
sluice_mongo_watch_new(const mongoc_uri_t *uri, const char *hosts, const char *stream,
		       const char *node, const bson_t *token, uint64_t start)
{
	sluice_mongo_watch *w = calloc(1, sizeof(*w));
	if (w == NULL)
		abort();
	snprintf(w->hosts, sizeof(w->hosts), "%s", hosts);
	snprintf(w->stream, sizeof(w->stream), "%s", stream);
	snprintf(w->node, sizeof(w->node), "%s", node);
	if (token != NULL)
		w->resume = bson_copy(token);
	w->start = start;
	w->n = (int64_t)sluice_clock_unix_us(); /* differs from any marker an earlier run wrote */
	mongoc_uri_t *u = mongoc_uri_copy(uri);
	mongoc_uri_set_appname(u, "sluice-apply-watch");
	bson_error_t err;
	w->client = mongoc_client_new_from_uri_with_error(u, &err);
	mongoc_uri_destroy(u);
	if (w->client == NULL) {
		sluice_log_error("MongoDB client for %s: %s", hosts, sluice_mongo_error_text(&err));
		free(w);
		return NULL;
	}
	mongoc_client_set_error_api(w->client, MONGOC_ERROR_API_VERSION_2);
	w->markers =
		mongoc_client_get_collection(w->client, SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_WATCH);
	w->versions = mongoc_client_get_collection(w->client, SLUICE_MONGO_LOCAL_DB,
						   SLUICE_MONGO_VERSIONS);
	return w;
}

static bool
watch_open(sluice_mongo_watch *w, bson_error_t *err, bson_t *reply)
{
	bson_t pipeline = BSON_INITIALIZER, opts = BSON_INITIALIZER;
	BSON_APPEND_UTF8(&opts, "fullDocument", "updateLookup");
	BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", 500);
	if (w->resume != NULL)
		BSON_APPEND_DOCUMENT(&opts, "resumeAfter", w->resume);
	else
		BSON_APPEND_TIMESTAMP(&opts, "startAtOperationTime", (uint32_t)(w->start >> 32),
				      (uint32_t)w->start);
	w->cs = mongoc_client_watch(w->client, &pipeline, &opts);
	bson_destroy(&pipeline);
	bson_destroy(&opts);
	const bson_t *r = NULL;
	if (mongoc_change_stream_error_document(w->cs, err, &r)) {
		if (reply != NULL && r != NULL)
			bson_copy_to(r, reply);
		mongoc_change_stream_destroy(w->cs);
		w->cs = NULL;
		return false;
	}
	return true;
}

/* watch_entry reads the entry of id (NULL-safe: v->found false when none). */
static bool
watch_entry(sluice_mongo_watch *w, const bson_t *id, sluice_mongo_version *v, bson_error_t *err)
{
	bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
	BSON_APPEND_DOCUMENT(&filter, "_id", id);
	BSON_APPEND_INT64(&opts, "limit", 1);
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(w->versions, &filter, &opts, NULL);
	bson_destroy(&filter);
	bson_destroy(&opts);
	const bson_t *doc;
	memset(v, 0, sizeof(*v));
	if (mongoc_cursor_next(cur, &doc))
		sluice_mongo_version_parse(bson_get_data(doc), doc->len, v);
	bool ok = !mongoc_cursor_error(cur, err);
	mongoc_cursor_destroy(cur);
	return ok;
}

/* watch_record writes the version of one local write of a document. */
static bool
watch_record(sluice_mongo_watch *w, const sluice_mongo_event *ev, bson_error_t *err)
{
	bson_t key, full, vid;
	bson_iter_t id;
	bool have_id = (ev->key != NULL && bson_init_static(&key, ev->key, ev->key_len) &&
			bson_iter_init_find(&id, &key, "_id")) ||
		       (ev->full != NULL && bson_init_static(&full, ev->full, ev->full_len) &&
			bson_iter_init_find(&id, &full, "_id"));
	if (!have_id)
		return true; /* nothing to key a version by */
	sluice_mongo_version_id(&vid, ev->db, ev->coll, &id);
	sluice_mongo_version v;
	bool ok = watch_entry(w, &vid, &v, err);
	if (ok) {
		v.found = true;
		v.t = ev->wall_us;
		snprintf(v.node, sizeof(v.node), "%s", w->node);
		if (strcmp(ev->op, "delete") == 0) {
			v.present = false;
			sluice_mongo_version_tomb(&v, ev->wall_us, w->node);
		} else {
			/*
			 * updateLookup gives the document as it is now, which may
			 * hold later writes: their events come before the marker
			 * and set the entry again. None (deleted since): the delete
			 * follows.
			 */
			v.present = ev->full != NULL &&
				    sluice_mongo_version_hash(ev->full, ev->full_len, v.h);
		}
		bson_t entry, filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, reply;
		sluice_mongo_version_build(&entry, &vid, &v);
		BSON_APPEND_DOCUMENT(&filter, "_id", &vid);
		BSON_APPEND_BOOL(&opts, "upsert", true);
		ok = mongoc_collection_replace_one(w->versions, &filter, &entry, &opts, &reply,
						   err);
		bson_destroy(&reply);
		bson_destroy(&opts);
		bson_destroy(&filter);
		bson_destroy(&entry);
		if (ok)
			w->recorded++;
	}
	bson_destroy(&vid);
	return ok;
}

/*
 * watch_forget removes the entries of a dropped or renamed collection (or of
 * every collection of a dropped database): its documents went without
 * delete events.
 */
static bool
watch_forget(sluice_mongo_watch *w, const sluice_mongo_event *ev, bson_error_t *err)
{
	bson_t filter = BSON_INITIALIZER, reply;
	if (strcmp(ev->op, "dropDatabase") == 0)
		BSON_APPEND_UTF8(&filter, "db", ev->db);
	else {
		char ns[600];
		snprintf(ns, sizeof(ns), "%s.%s", ev->db, ev->coll ? ev->coll : "");
		BSON_APPEND_UTF8(&filter, "ns", ns);
	}
	bool ok = mongoc_collection_delete_many(w->versions, &filter, NULL, &reply, err);
	bson_destroy(&reply);
	bson_destroy(&filter);
	return ok;
}

/* watch_event handles one event; *marker tells that it was this catch-up's marker. */
static bool
watch_event(sluice_mongo_watch *w, const bson_t *raw, bool *marker, bson_error_t *err)
{
	sluice_mongo_event ev;
	const char *why;
	*marker = false;
	if (!sluice_mongo_event_decode(bson_get_data(raw), raw->len, &ev, &why)) {
		bson_set_error(err, MONGOC_ERROR_BSON, MONGOC_ERROR_BSON_INVALID,
			       "a change event of the target cannot be read: %s", why);
		return false;
	}
	if (ev.in_txn) {
		bool same = w->group_open && ev.txn_number == w->group_txn &&
			    ev.cluster_time == w->group_ct && ev.lsid_len == w->group_lsid.len &&
			    memcmp(ev.lsid, w->group_lsid.data, ev.lsid_len) == 0;
		if (!same) {
			w->group_open = true;
			w->group_txn = ev.txn_number;
			w->group_ct = ev.cluster_time;
			sluice_buf_reset(&w->group_lsid);
			sluice_buf_append(&w->group_lsid, ev.lsid, ev.lsid_len);
			/* apply's transactions (any stream's) start with their progress */
			w->group_skip = ev.db != NULL && ev.coll != NULL &&
					strcmp(ev.db, SLUICE_MONGO_LOCAL_DB) == 0 &&
					strcmp(ev.coll, SLUICE_MONGO_PROGRESS) == 0;
		}
		if (w->group_skip)
			return true;
	} else
		w->group_open = false;
	if (ev.db != NULL && strcmp(ev.db, SLUICE_MONGO_LOCAL_DB) == 0) {
		bson_t full;
		bson_iter_t it;
		if (ev.coll != NULL && strcmp(ev.coll, SLUICE_MONGO_WATCH) == 0 &&
		    ev.full != NULL && bson_init_static(&full, ev.full, ev.full_len) &&
		    bson_iter_init_find(&it, &full, "_id") && BSON_ITER_HOLDS_UTF8(&it) &&
		    strcmp(bson_iter_utf8(&it, NULL), w->stream) == 0 &&
		    bson_iter_init_find(&it, &full, "n") && BSON_ITER_HOLDS_INT64(&it) &&
		    bson_iter_int64(&it) == w->n)
			*marker = true;
		return true; /* sluice's own database holds no application documents */
	}
	if (ev.db == NULL)
		return true;
	if (sluice_mongo_event_is_row(ev.op))
		return ev.coll == NULL || watch_record(w, &ev, err);
	if (strcmp(ev.op, "drop") == 0 || strcmp(ev.op, "rename") == 0 ||
	    strcmp(ev.op, "dropDatabase") == 0)
		return watch_forget(w, &ev, err);
	return true;
}

/* watch_mark writes this catch-up's marker: {_id: stream, n}. */
static bool
watch_mark(sluice_mongo_watch *w, bson_error_t *err, bson_t *reply)
{
	bson_t filter = BSON_INITIALIZER, doc = BSON_INITIALIZER, opts = BSON_INITIALIZER, r;
	BSON_APPEND_UTF8(&filter, "_id", w->stream);
	BSON_APPEND_UTF8(&doc, "_id", w->stream);
	BSON_APPEND_INT64(&doc, "n", ++w->n);
	BSON_APPEND_BOOL(&opts, "upsert", true);
	bool ok = mongoc_collection_replace_one(w->markers, &filter, &doc, &opts, &r, err);
	if (!ok && reply != NULL)
		bson_copy_to(&r, reply);
	bson_destroy(&r);
	bson_destroy(&opts);
	bson_destroy(&doc);
	bson_destroy(&filter);
	return ok;
}

bool
sluice_mongo_watch_catch_up(sluice_mongo_watch *w, bson_error_t *err, bson_t *reply)
{
	if (reply != NULL)
		bson_init(reply);
	if (w->cs == NULL && !watch_open(w, err, reply))
		return false;
	if (!watch_mark(w, err, reply))
		return false;
	int64_t deadline = sluice_clock_mono_ms() + WATCH_CATCH_UP_MS;
	for (;;) {
		const bson_t *doc;
		while (mongoc_change_stream_next(w->cs, &doc)) {
			bool marker;
			if (!watch_event(w, doc, &marker, err)) {
				/*
				 * The cursor has moved past this event: reopen at the
				 * last event handled (w->resume), so that the retry
				 * handles this one again instead of skipping it.
				 */
				mongoc_change_stream_destroy(w->cs);
				w->cs = NULL;
				return false;
			}
			const bson_t *tok = mongoc_change_stream_get_resume_token(w->cs);
			if (tok != NULL) {
				if (w->resume != NULL)
					bson_destroy(w->resume);
				w->resume = bson_copy(tok);
			}
			if (marker) {
				if (w->marker != NULL)
					bson_destroy(w->marker);
				w->marker = tok != NULL ? bson_copy(tok) : NULL;
				return true;
			}
		}
		const bson_t *r = NULL;
		if (mongoc_change_stream_error_document(w->cs, err, &r)) {
			if (reply != NULL && r != NULL) {
				bson_destroy(reply);
				bson_copy_to(r, reply);
			}
			mongoc_change_stream_destroy(w->cs);
			w->cs = NULL; /* reopened after the last event handled */
			return false;
		}
		if (sluice_clock_mono_ms() > deadline) {
			bson_set_error(err, MONGOC_ERROR_STREAM, MONGOC_ERROR_STREAM_SOCKET,
				       "the target's change stream did not bring the marker "
				       "written %d s ago",
				       WATCH_CATCH_UP_MS / 1000);
			mongoc_change_stream_destroy(w->cs);
			w->cs = NULL;
			return false;
		}
	}
}

const bson_t *
sluice_mongo_watch_token(const sluice_mongo_watch *w)
{
	return w->marker;
}

uint64_t
sluice_mongo_watch_recorded(const sluice_mongo_watch *w)
{
	return w->recorded;
}

void
sluice_mongo_watch_free(sluice_mongo_watch *w)
{
	if (w == NULL)
		return;
	if (w->cs != NULL)
		mongoc_change_stream_destroy(w->cs);
	mongoc_collection_destroy(w->markers);
	mongoc_collection_destroy(w->versions);
	mongoc_client_destroy(w->client);
	if (w->resume != NULL)
		bson_destroy(w->resume);
	if (w->marker != NULL)
		bson_destroy(w->marker);
	sluice_buf_free(&w->group_lsid);
	free(w);
}
