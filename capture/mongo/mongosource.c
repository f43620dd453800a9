/* MongoDB capture source: change events as raw BSON, transactions whole, resume by token. */
#include "mongosource.h"

#include <inttypes.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "mongoconn.h"
#include "mongoevent.h"
#include "records.h"

/* Server error codes that end a change stream for good (docs/architecture.md). */
#define MONGO_E_HISTORY_LOST    286         /* ChangeStreamHistoryLost */
#define MONGO_E_FATAL           280         /* ChangeStreamFatalError */
#define MONGO_E_BAD_RESUME      260         /* InvalidResumeToken */
#define MONGO_E_NO_MATCHING_DOC 47          /* NoMatchingDocument: a required image is missing */
#define MONGO_E_NO_PRE_IMAGE_ID 51770       /* the same, from servers that record no image id */
#define MONGO_RELATION_MAX      100000      /* distinct namespaces one run keeps ids for */
#define MONGO_SNAPSHOT_LOG_MS   5000        /* progress of a long copy */
#define MONGO_QUEUE_BYTES       (32u << 20) /* events fetched ahead of the engine, at most */

/* What the fetcher thread hands over: an event, an empty batch, or the error that ended it. */
typedef enum mongo_item_kind {
	MONGO_ITEM_EVENT,
	MONGO_ITEM_EMPTY, /* an empty getMore; doc: its postBatchResumeToken or NULL */
	MONGO_ITEM_ERROR,
} mongo_item_kind;

typedef struct mongo_item {
	struct mongo_item *next;
	mongo_item_kind kind;
	sluice_buf docs; /* owned: EVENT: events, back to back; EMPTY: the token, if any */
	size_t off;      /* EVENT: the next event to hand to the engine */
	bson_error_t err;
} mongo_item;

#define MONGO_CHUNK_BYTES (1u << 20) /* events the fetcher appends to one queued item */

/* mongo_item_free releases an item; NULL is a no-op. */
static void
mongo_item_free(mongo_item *item)
{
	if (item == NULL)
		return;
	sluice_buf_free(&item->docs);
	free(item);
}

typedef struct mongo_relation {
	uint32_t id;
	char *ns;       /* owned: "db.coll" */
	bool announced; /* its Relation record went to the writer since the last start */
} mongo_relation;

struct sluice_mongosource {
	const sluice_capture_options *o; /* borrowed */
	mongoc_uri_t *uri;               /* owned */
	mongoc_client_t *client;         /* owned while open */
	mongoc_change_stream_t *stream;  /* owned while started; the fetcher's alone once it runs */

	/*
	 * The fetcher thread reads the change stream ahead of the engine (getMore
	 * round trips overlap the writing of the previous batch) into a queue
	 * bounded by MONGO_QUEUE_BYTES (64 MiB). After start, only it uses client and
	 * stream, until close joins it.
	 */
	pthread_t fetcher;
	bool fetching;       /* the fetcher thread exists */
	pthread_mutex_t mu;  /* guards everything below */
	pthread_cond_t more; /* an item was queued, or the fetcher ended */
	pthread_cond_t room; /* an item was taken, or stop_fetch was set */
	mongo_item *head, *tail;
	mongo_item *cur; /* the engine's: taken off the queue, events being handed over */
	bool sleeping;   /* the engine waits for an item */
	size_t queued;   /* bytes of queued documents */
	bool stop_fetch; /* close asks the fetcher to end */
	bool fetch_done; /* the fetcher ended (error or invalidate) */
	bool want_more;  /* the engine found the queue empty: the fetcher may read on */
	char hosts[256]; /* host list for messages: never the credentials */

	/* the transaction being received */
	bool open;
	bool open_is_txn; /* a multi-document transaction: more events may follow */
	sluice_buf open_lsid;
	int64_t open_txn_number;
	uint64_t open_ct;
	sluice_buf last_token; /* owned: _id of the last event handed to the engine */
	bool connected_once;   /* a client was made: later failures to make one are transient */

	/* namespaces with a Relation record written since start */
	mongo_relation *rels;
	size_t nrels;

	bool fatal;         /* the stream cannot go on: start says FATAL */
	bool invalidated;   /* an invalidate ended the stream: start after it */
	bool warned_filter; /* said once that filtering happens here */
	/*
	 * A namespace change sluice apply announced in its progress document
	 * (ddl: {op, db, coll}) before running it outside a transaction: the
	 * matching event is apply's, not the application's, and is left out.
	 */
	char ddl_op[32], ddl_db[256], ddl_coll[256];
};

typedef struct sluice_mongosource mongo;

/* ---- small helpers -------------------------------------------------------- */

/* mongo_ct packs a BSON timestamp as an ordered position. */
static uint64_t
mongo_ct(uint32_t t, uint32_t i)
{
	return ((uint64_t)t << 32) | i;
}

static void
mongo_format_position(uint64_t position, char *out, size_t size)
{
	snprintf(out, size, "Timestamp(%" PRIu32 ", %" PRIu32 ")", (uint32_t)(position >> 32),
		 (uint32_t)position);
}

static int64_t
mongo_position_time_us(uint64_t position)
{
	return (int64_t)(position >> 32) * 1000000;
}

/* mongo_relation_hash: FNV-1a of "db.coll", the relation id of a namespace. */
static uint32_t
mongo_relation_hash(const char *ns)
{
	uint32_t h = 2166136261u;
	for (const unsigned char *p = (const unsigned char *)ns; *p; p++) {
		h ^= *p;
		h *= 16777619u;
	}
	return h;
}

/*
 * mongo_relation_id finds the relation id of db.coll: a hash of the name, the
 * same in every run, so that a stream names a collection the same way across
 * restarts. Two names with one hash in a run stop capture (never seen in
 * practice; said plainly if it happens). *fresh: the caller is to write its
 * Relation record now (the first use since the writer was opened).
 */
static bool
mongo_relation_id(mongo *s, const char *db, const char *coll, uint32_t *id, bool *fresh)
{
	char ns[512];
	snprintf(ns, sizeof(ns), "%s.%s", db, coll);
	uint32_t h = mongo_relation_hash(ns);
	for (size_t i = 0; i < s->nrels; i++) {
		if (s->rels[i].id != h)
			continue;
		if (strcmp(s->rels[i].ns, ns) != 0) {
			sluice_log_error("collections %s and %s have the same relation id %" PRIu32
					 " in the stream; capture them into separate streams",
					 s->rels[i].ns, ns, h);
			s->fatal = true;
			return false;
		}
		*id = h;
		*fresh = !s->rels[i].announced;
		s->rels[i].announced = true;
		return true;
	}
	if (s->nrels >= MONGO_RELATION_MAX) {
		sluice_log_error("more than %d collections in one capture", MONGO_RELATION_MAX);
		s->fatal = true;
		return false;
	}
	mongo_relation *r = realloc(s->rels, (s->nrels + 1) * sizeof(*r));
	if (r == NULL)
		abort();
	s->rels = r;
	s->rels[s->nrels].id = h;
	s->rels[s->nrels].announced = true;
	s->rels[s->nrels].ns = strdup(ns);
	if (s->rels[s->nrels].ns == NULL)
		abort();
	s->nrels++;
	*id = h;
	*fresh = true;
	return true;
}

/* mongo_relation_record fills a Relation record describing db.coll. */
static void
mongo_relation_record(Sluice__V1__Relation *rel, uint32_t id, const char *db, const char *coll)
{
	sluice__v1__relation__init(rel);
	rel->id = id;
	rel->schema = (char *)db;
	rel->name = (char *)coll;
	rel->has_source = true;
	rel->source = SLUICE__V1__SOURCE_KIND__SOURCE_MONGODB;
}

/* mongo_watched tells whether db.coll is inside what --db/--collection asked for. */
static bool
mongo_watched(const mongo *s, const char *db, const char *coll)
{
	const sluice_capture_options *o = s->o;
	if (o->n_databases == 0 && o->n_collections == 0)
		return true;
	for (size_t i = 0; i < o->n_databases; i++)
		if (strcmp(o->databases[i], db) == 0)
			return true;
	if (coll == NULL)
		return false;
	size_t dl = strlen(db);
	for (size_t i = 0; i < o->n_collections; i++) {
		const char *c = o->collections[i];
		if (strncmp(c, db, dl) == 0 && c[dl] == '.' && strcmp(c + dl + 1, coll) == 0)
			return true;
	}
	return false;
}

/* mongo_bin points a protobuf bytes field at a BSON document (borrowed). */
static ProtobufCBinaryData
mongo_bin(const uint8_t *data, uint32_t len)
{
	ProtobufCBinaryData b = {.len = len, .data = (uint8_t *)data};
	return b;
}

/* ---- connection ------------------------------------------------------------ */

sluice_mongosource *
sluice_mongosource_create(const sluice_capture_options *o)
{
	mongo *s = calloc(1, sizeof(*s));
	if (s == NULL)
		abort();
	s->o = o;
	sluice_mongo_init();
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->more, NULL);
	pthread_cond_init(&s->room, NULL);
	return s;
}

static sluice_source_status
mongo_open(void *state, sluice_capture_sink *sink)
{
	(void)sink;
	mongo *s = state;
	bson_error_t err;
	if (s->fatal)
		return SLUICE_SOURCE_FATAL;
	if (s->uri == NULL) {
		s->uri = sluice_mongo_uri(s->o->source, "sluice-capture");
		if (s->uri == NULL)
			return SLUICE_SOURCE_FATAL;
		sluice_mongo_hosts(s->uri, s->hosts, sizeof(s->hosts));
	}
	s->client = mongoc_client_new_from_uri_with_error(s->uri, &err);
	if (s->client == NULL) {
		/* e.g. a mongodb+srv:// name that does not resolve just now */
		sluice_log_error("MongoDB client for %s: %s", s->hosts,
				 sluice_mongo_error_text(&err));
		return s->connected_once ? SLUICE_SOURCE_RETRY : SLUICE_SOURCE_FATAL;
	}
	s->connected_once = true;
	mongoc_client_set_error_api(s->client, MONGOC_ERROR_API_VERSION_2);
	bson_t cmd = BSON_INITIALIZER, reply;
	BSON_APPEND_INT32(&cmd, "ping", 1);
	bool ok = mongoc_client_command_simple(s->client, "admin", &cmd, NULL, &reply, &err);
	bson_destroy(&cmd);
	bson_destroy(&reply);
	if (!ok) {
		sluice_log_error("cannot reach MongoDB at %s: %s", s->hosts,
				 sluice_mongo_error_text(&err));
		return SLUICE_SOURCE_RETRY;
	}
	return SLUICE_SOURCE_OK;
}

/*
 * mongo_cluster_time asks the deployment for its majority-committed cluster
 * time: the operationTime of a read with readConcern majority (a change
 * stream returns nothing past that point, so neither the caught-up target nor
 * a snapshot's time may lie beyond it). The read is a find of a collection
 * that need not exist, in the first watched database (admin when the whole
 * deployment is watched).
 */
static bool
mongo_cluster_time(mongo *s, uint32_t *t, uint32_t *i)
{
	const sluice_capture_options *o = s->o;
	char db[128] = "admin";
	if (o->n_databases > 0)
		snprintf(db, sizeof(db), "%s", o->databases[0]);
	else if (o->n_collections > 0)
		snprintf(db, sizeof(db), "%.*s", (int)strcspn(o->collections[0], "."),
			 o->collections[0]);
	bson_error_t err;
	bson_t cmd = BSON_INITIALIZER, rc, reply;
	BSON_APPEND_UTF8(&cmd, "find", "sluice_cluster_time_probe");
	BSON_APPEND_INT32(&cmd, "limit", 1);
	BSON_APPEND_BOOL(&cmd, "singleBatch", true);
	BSON_APPEND_DOCUMENT_BEGIN(&cmd, "readConcern", &rc);
	BSON_APPEND_UTF8(&rc, "level", "majority");
	bson_append_document_end(&cmd, &rc);
	bool ok = mongoc_client_command_simple(s->client, db, &cmd, NULL, &reply, &err);
	bson_destroy(&cmd);
	if (!ok) {
		bson_destroy(&reply);
		sluice_log_error("cannot read the cluster time of %s: %s", s->hosts,
				 sluice_mongo_error_text(&err));
		return false;
	}
	bson_iter_t it;
	bool found =
		bson_iter_init_find(&it, &reply, "operationTime") && BSON_ITER_HOLDS_TIMESTAMP(&it);
	if (found)
		bson_iter_timestamp(&it, t, i);
	bson_destroy(&reply);
	if (!found)
		sluice_log_error("%s reports no operationTime: change streams need a replica set "
				 "or a sharded cluster",
				 s->hosts);
	return found;
}

static bool
mongo_current_position(void *state, uint64_t *position)
{
	mongo *s = state;
	uint32_t t, i;
	if (!mongo_cluster_time(s, &t, &i))
		return false;
	/* Everything at this time is committed: the stream has caught up past it. */
	*position = mongo_ct(t, i) + 1;
	return true;
}

/* ---- snapshot -------------------------------------------------------------- */

/* mongo_snapshot_list_collections appends db's collections (not views, not system.*) to names. */
static bool
mongo_list_collections(mongo *s, const char *db, char ***names, size_t *n)
{
	bson_error_t err;
	mongoc_database_t *d = mongoc_client_get_database(s->client, db);
	bson_t opts = BSON_INITIALIZER, filter;
	BSON_APPEND_DOCUMENT_BEGIN(&opts, "filter", &filter);
	BSON_APPEND_UTF8(&filter, "type",
			 "collection"); /* not views: their documents are computed */
	bson_append_document_end(&opts, &filter);
	char **got = mongoc_database_get_collection_names_with_opts(d, &opts, &err);
	bson_destroy(&opts);
	mongoc_database_destroy(d);
	if (got == NULL) {
		sluice_log_error("cannot list the collections of database %s: %s", db,
				 sluice_mongo_error_text(&err));
		return false;
	}
	for (char **p = got; *p; p++) {
		if (strncmp(*p, "system.", 7) == 0 || !mongo_watched(s, db, *p))
			continue;
		char **r = realloc(*names, (*n + 1) * sizeof(*r));
		if (r == NULL)
			abort();
		*names = r;
		size_t len = strlen(db) + strlen(*p) + 2;
		(*names)[*n] = malloc(len);
		if ((*names)[*n] == NULL)
			abort();
		snprintf((*names)[*n], len, "%s.%s", db, *p);
		(*n)++;
	}
	bson_strfreev(got);
	return true;
}

/* mongo_snapshot_namespaces lists every collection the snapshot copies, as "db.coll". */
static bool
mongo_snapshot_namespaces(mongo *s, char ***names, size_t *n)
{
	const sluice_capture_options *o = s->o;
	if (o->n_databases == 0 && o->n_collections == 0) {
		bson_error_t err;
		char **dbs = mongoc_client_get_database_names_with_opts(s->client, NULL, &err);
		if (dbs == NULL) {
			sluice_log_error("cannot list the databases of %s: %s", s->hosts,
					 sluice_mongo_error_text(&err));
			return false;
		}
		bool ok = true;
		for (char **p = dbs; *p && ok; p++)
			if (strcmp(*p, "admin") != 0 && strcmp(*p, "local") != 0 &&
			    strcmp(*p, "config") != 0)
				ok = mongo_list_collections(s, *p, names, n);
		bson_strfreev(dbs);
		return ok;
	}
	for (size_t i = 0; i < o->n_databases; i++)
		if (!mongo_list_collections(s, o->databases[i], names, n))
			return false;
	for (size_t i = 0; i < o->n_collections; i++) {
		const char *c = o->collections[i];
		const char *dot = strchr(c, '.');
		bool listed = false;
		for (size_t k = 0; k < o->n_databases; k++)
			if (strncmp(o->databases[k], c, (size_t)(dot - c)) == 0 &&
			    o->databases[k][dot - c] == '\0')
				listed = true;
		if (listed)
			continue;
		char **r = realloc(*names, (*n + 1) * sizeof(*r));
		if (r == NULL)
			abort();
		*names = r;
		(*names)[*n] = strdup(c);
		if ((*names)[*n] == NULL)
			abort();
		(*n)++;
	}
	return true;
}

/*
 * mongo_copy_collection appends a SnapshotRow per document of db.coll. With
 * *at_time, it reads at cluster time T (readConcern snapshot, atClusterTime);
 * a server that refuses that on the first batch is read without it
 * (*at_time cleared: the change stream from T reconciles what moved).
 */
static bool
mongo_copy_collection(mongo *s, sluice_writer *w, const char *db, const char *coll, uint32_t relid,
		      uint32_t t, uint32_t i, bool *at_time, uint64_t *rows, int64_t *last_log)
{
	mongoc_collection_t *c = mongoc_client_get_collection(s->client, db, coll);
	for (;;) {
		bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, rc;
		BSON_APPEND_INT32(&opts, "batchSize", 1000);
		/* Read at T; else majority-committed data from T on (never a write that
		 * may be rolled back, never before T). */
		BSON_APPEND_DOCUMENT_BEGIN(&opts, "readConcern", &rc);
		BSON_APPEND_UTF8(&rc, "level", *at_time ? "snapshot" : "majority");
		BSON_APPEND_TIMESTAMP(&rc, *at_time ? "atClusterTime" : "afterClusterTime", t, i);
		bson_append_document_end(&opts, &rc);
		mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, &opts, NULL);
		bson_destroy(&filter);
		bson_destroy(&opts);
		const bson_t *doc;
		uint64_t copied = 0;
		bson_error_t err;
		while (mongoc_cursor_next(cur, &doc)) {
			Sluice__V1__SnapshotRow row = SLUICE__V1__SNAPSHOT_ROW__INIT;
			row.relation_id = relid;
			row.has_document = true;
			row.document = mongo_bin(bson_get_data(doc), doc->len);
			sluice_record rec = SLUICE__V1__RECORD__INIT;
			rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW;
			rec.snapshot_row = &row;
			sluice_rate_take(s->o->rate, 1, doc->len, s->o->stop);
			if (!sluice_writer_append(w, &rec)) {
				mongoc_cursor_destroy(cur);
				mongoc_collection_destroy(c);
				return false;
			}
			copied++;
			(*rows)++;
			int64_t now = sluice_clock_mono_ms();
			if (now - *last_log >= MONGO_SNAPSHOT_LOG_MS) {
				sluice_log_info("snapshot: %s.%s: %" PRIu64
						" documents copied (%" PRIu64 " in all)",
						db, coll, copied, *rows);
				*last_log = now;
			}
			if (*s->o->stop) {
				mongoc_cursor_destroy(cur);
				mongoc_collection_destroy(c);
				sluice_log_info("snapshot interrupted by a signal: the next run "
						"copies again");
				return false;
			}
		}
		bool failed = mongoc_cursor_error(cur, &err);
		mongoc_cursor_destroy(cur);
		if (!failed)
			break;
		if (*at_time && copied == 0) {
			sluice_log_info("%s does not read at a cluster time (%s): copying the "
					"present documents; the change stream from the snapshot's "
					"time reconciles what moves meanwhile",
					s->hosts, sluice_mongo_error_text(&err));
			*at_time = false;
			continue;
		}
		sluice_log_error("snapshot of %s.%s failed after %" PRIu64 " documents: %s", db,
				 coll, copied, sluice_mongo_error_text(&err));
		mongoc_collection_destroy(c);
		return false;
	}
	mongoc_collection_destroy(c);
	return true;
}

/*
 * mongo_snapshot copies every watched collection as one snapshot transaction
 * at cluster time T and sets *resume to T: the change stream starts there.
 */
static bool
mongo_snapshot(mongo *s, sluice_capture_sink *sink, uint64_t *resume)
{
	uint32_t t, i;
	if (!mongo_cluster_time(s, &t, &i))
		return false;
	char **names = NULL;
	size_t n = 0;
	bool ok = false;
	if (!mongo_snapshot_namespaces(s, &names, &n))
		goto done;
	sluice_writer *w = sluice_capture_sink_writer(sink);
	sluice_log_info("snapshot of %zu collections at Timestamp(%" PRIu32 ", %" PRIu32 ")", n, t,
			i);
	Sluice__V1__SourcePosition pos = SLUICE__V1__SOURCE_POSITION__INIT;
	pos.has_cluster_time = true;
	pos.cluster_time = mongo_ct(t, i);
	Sluice__V1__SnapshotBegin sb = SLUICE__V1__SNAPSHOT_BEGIN__INIT;
	sb.time_us = sluice_clock_unix_us();
	sb.origin_node = (char *)s->o->node;
	sb.position = &pos;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN;
	rec.snapshot_begin = &sb;
	if (!sluice_writer_append(w, &rec))
		goto done;
	bool at_time = true;
	uint64_t rows = 0;
	int64_t last_log = sluice_clock_mono_ms();
	for (size_t k = 0; k < n; k++) {
		char *dot = strchr(names[k], '.');
		*dot = '\0';
		const char *db = names[k], *coll = dot + 1;
		uint32_t id;
		bool fresh;
		if (!mongo_relation_id(s, db, coll, &id, &fresh))
			goto done;
		Sluice__V1__Relation rel;
		mongo_relation_record(&rel, id, db, coll);
		sluice_record rr = SLUICE__V1__RECORD__INIT;
		rr.body_case = SLUICE__V1__RECORD__BODY_RELATION;
		rr.relation = &rel;
		if (!sluice_writer_append(w, &rr))
			goto done;
		if (!mongo_copy_collection(s, w, db, coll, id, t, i, &at_time, &rows, &last_log))
			goto done;
	}
	Sluice__V1__SnapshotEnd se = SLUICE__V1__SNAPSHOT_END__INIT;
	se.has_row_count = true;
	se.row_count = rows;
	se.has_relation_count = true;
	se.relation_count = (uint32_t)n;
	sluice_record re = SLUICE__V1__RECORD__INIT;
	re.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_END;
	re.snapshot_end = &se;
	if (!sluice_writer_append(w, &re) || !sluice_writer_flush(w))
		goto done;
	sluice_log_info("snapshot done: %" PRIu64 " documents of %zu collections%s", rows, n,
			at_time ? " read at its cluster time" : "");
	*resume = mongo_ct(t, i);
	ok = true;
done:
	for (size_t k = 0; k < n; k++)
		free(names[k]);
	free(names);
	return ok;
}

/* ---- the change stream ----------------------------------------------------- */

/* mongo_stream_error classifies a change stream error: fatal ones are said and remembered. */
static void
mongo_stream_error(mongo *s, const bson_error_t *err, const char *when)
{
	if (err->code == MONGO_E_HISTORY_LOST || err->code == MONGO_E_FATAL ||
	    err->code == MONGO_E_BAD_RESUME) {
		const char *name = err->code == MONGO_E_HISTORY_LOST ? "ChangeStreamHistoryLost"
				   : err->code == MONGO_E_FATAL      ? "ChangeStreamFatalError"
								     : "InvalidResumeToken";
		sluice_log_error("%s the change stream of %s: %s (%s, code %" PRIu32
				 "): the point where the stream left off is no longer in the "
				 "oplog (or its token is not valid there), so the changes since "
				 "then cannot be read. Recover with a new snapshot into a new "
				 "stream: sluice capture --snapshot --stream NEW ...",
				 when, s->hosts, sluice_mongo_error_text(err), name, err->code);
		s->fatal = true;
		return;
	}
	if (err->code == MONGO_E_NO_MATCHING_DOC || err->code == MONGO_E_NO_PRE_IMAGE_ID) {
		/*
		 * fullDocumentBeforeChange (or fullDocument) "required" and the
		 * server has no image for an event: it is not resumable, and a
		 * resume would meet the same event again.
		 */
		sluice_log_error("%s the change stream of %s: %s (%s, code %" PRIu32
				 "): --full-document-before-change required, but the server "
				 "has no pre-image for a change (the collection does not keep "
				 "them: changeStreamPreAndPostImages, or they expired). Enable "
				 "them with collMod for later changes, or continue with "
				 "--full-document-before-change whenAvailable",
				 when, s->hosts, sluice_mongo_error_text(err),
				 err->code == MONGO_E_NO_MATCHING_DOC ? "NoMatchingDocument"
								      : "pre-image id missing",
				 err->code);
		s->fatal = true;
		return;
	}
	sluice_log_warn("%s the change stream of %s: %s (code %" PRIu32 ")", when, s->hosts,
			sluice_mongo_error_text(err), err->code);
}

static void *mongo_fetch(void *arg);

static sluice_source_status
mongo_start(void *state, sluice_capture_sink *sink, uint64_t *resume)
{
	mongo *s = state;
	const sluice_capture_options *o = s->o;
	if (s->fatal)
		return SLUICE_SOURCE_FATAL;
	for (size_t k = 0; k < s->nrels; k++)
		s->rels[k].announced = false; /* a reopened writer has forgotten every relation */
	s->open = false;
	sluice_buf_reset(&s->last_token);
	sluice_writer *w = sluice_capture_sink_writer(sink);
	size_t token_len = 0;
	const uint8_t *token = sluice_capture_sink_resume_token(sink, &token_len);
	if (o->snapshot && sluice_writer_last_txseq(w) == 0 && *resume == 0) {
		if (!mongo_snapshot(s, sink, resume))
			return s->fatal || *o->stop ? SLUICE_SOURCE_FATAL : SLUICE_SOURCE_RETRY;
		token = NULL;
		token_len = 0;
	} else if (o->snapshot && sluice_writer_last_txseq(w) != 0) {
		static bool said;
		if (!said)
			sluice_log_info("the stream has transactions already: --snapshot is not "
					"taken again");
		said = true;
	}

	bson_t opts = BSON_INITIALIZER, pipeline = BSON_INITIALIZER;
	/*
	 * How long a getMore waits on the server for events: it bounds how late
	 * the last transaction of a quiet spell is committed and flushed. Catching
	 * up, it is short: the run ends one empty getMore after the last event.
	 */
	int await = o->max_flush_delay_ms;
	if (o->exit_when_caught_up)
		await = 25;
	if (await < 10)
		await = 10;
	if (await > 1000)
		await = 1000;
	BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", await);
	if (o->full_document != NULL)
		BSON_APPEND_UTF8(&opts, "fullDocument", o->full_document);
	if (o->full_document_before_change != NULL)
		BSON_APPEND_UTF8(&opts, "fullDocumentBeforeChange", o->full_document_before_change);
	if (token_len > 0) {
		bson_t tok;
		if (!bson_init_static(&tok, token, token_len)) {
			sluice_log_error("the stream's last resume token is not a BSON document");
			bson_destroy(&opts);
			s->fatal = true;
			return SLUICE_SOURCE_FATAL;
		}
		/* startAfter, not resumeAfter: the token may be an invalidate's. */
		BSON_APPEND_DOCUMENT(&opts, "startAfter", &tok);
	} else if (*resume != 0) {
		/*
		 * Only a snapshot leaves a time without a token: its copy holds
		 * everything committed at or before T (read at T, or later without a
		 * snapshot read concern), so changes start just after T.
		 */
		uint64_t after = *resume + 1;
		BSON_APPEND_TIMESTAMP(&opts, "startAtOperationTime", (uint32_t)(after >> 32),
				      (uint32_t)after);
	}
	/*
	 * sluice apply marks its transactions with a write to sluice.progress,
	 * which a database or collection stream does not see: where an apply
	 * writes to this deployment, watch all of it so that apply's transactions
	 * are left out (no echo in two-way replication).
	 */
	bool narrow = (o->n_databases == 0 && o->n_collections == 1) ||
		      (o->n_databases == 1 && o->n_collections == 0);
	if (narrow) {
		bson_error_t herr;
		mongoc_database_t *sd =
			mongoc_client_get_database(s->client, SLUICE_MONGO_LOCAL_DB);
		if (mongoc_database_has_collection(sd, SLUICE_MONGO_PROGRESS, &herr)) {
			narrow = false;
			if (!s->warned_filter)
				sluice_log_info("sluice apply writes to this deployment (%s.%s "
						"exists): watching the deployment, so that its "
						"transactions are left out, and keeping the named "
						"database or collection",
						SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_PROGRESS);
			s->warned_filter = true;
		}
		mongoc_database_destroy(sd);
	}
	if (narrow && o->n_databases == 0 && o->n_collections == 1) {
		const char *c = o->collections[0];
		const char *dot = strchr(c, '.');
		char db[256];
		snprintf(db, sizeof(db), "%.*s", (int)(dot - c), c);
		mongoc_collection_t *coll = mongoc_client_get_collection(s->client, db, dot + 1);
		s->stream = mongoc_collection_watch(coll, &pipeline, &opts);
		mongoc_collection_destroy(coll);
	} else if (narrow && o->n_databases == 1 && o->n_collections == 0) {
		mongoc_database_t *d = mongoc_client_get_database(s->client, o->databases[0]);
		s->stream = mongoc_database_watch(d, &pipeline, &opts);
		mongoc_database_destroy(d);
	} else {
		if (o->n_databases + o->n_collections > 1 && !s->warned_filter) {
			sluice_log_info("watching the deployment and keeping the named databases "
					"and collections");
			s->warned_filter = true;
		}
		s->stream = mongoc_client_watch(s->client, &pipeline, &opts);
	}
	bson_destroy(&opts);
	bson_destroy(&pipeline);
	bson_error_t err;
	const bson_t *reply;
	if (mongoc_change_stream_error_document(s->stream, &err, &reply)) {
		mongo_stream_error(s, &err, "starting");
		return s->fatal ? SLUICE_SOURCE_FATAL : SLUICE_SOURCE_RETRY;
	}
	if (pthread_create(&s->fetcher, NULL, mongo_fetch, s) != 0) {
		sluice_log_error("cannot start the change stream reader thread");
		s->fatal = true;
		return SLUICE_SOURCE_FATAL;
	}
	s->fetching = true;
	char p[64];
	mongo_format_position(*resume, p, sizeof(p));
	sluice_log_info("watching %s %s", s->hosts,
			token_len ? "after the stream's last resume token"
			: *resume ? p
				  : "from now");
	return SLUICE_SOURCE_OK;
}

/* mongo_is_invalidate tells whether an event is an invalidate (the last of its cursor). */
static bool
mongo_is_invalidate(const bson_t *ev)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, ev, "operationType") && BSON_ITER_HOLDS_UTF8(&it) &&
	       strcmp(bson_iter_utf8(&it, NULL), "invalidate") == 0;
}

/* mongo_fetch is the fetcher thread: change stream items into the queue. */
static void *
mongo_fetch(void *arg)
{
	mongo *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->mu);
		while (!s->stop_fetch && s->queued >= MONGO_QUEUE_BYTES)
			pthread_cond_wait(&s->room, &s->mu);
		bool stop = s->stop_fetch;
		pthread_mutex_unlock(&s->mu);
		if (stop)
			break;
		const bson_t *ev, *reply;
		bson_error_t err;
		bool last = false;
		mongo_item_kind kind;
		const bson_t *doc = NULL;
		if (mongoc_change_stream_next(s->stream, &ev)) {
			kind = MONGO_ITEM_EVENT;
			doc = ev;
			last = mongo_is_invalidate(ev);
		} else if (mongoc_change_stream_error_document(s->stream, &err, &reply)) {
			kind = MONGO_ITEM_ERROR;
			last = true;
		} else {
			/* read right after the empty batch: its postBatchResumeToken */
			kind = MONGO_ITEM_EMPTY;
			doc = mongoc_change_stream_get_resume_token(s->stream);
		}
		pthread_mutex_lock(&s->mu);
		mongo_item *item = s->tail;
		/* Events join the newest queued chunk while the engine has not taken it. */
		if (kind != MONGO_ITEM_EVENT || item == NULL || item->kind != MONGO_ITEM_EVENT ||
		    item->docs.len >= MONGO_CHUNK_BYTES) {
			item = calloc(1, sizeof(*item));
			if (item == NULL)
				abort();
			item->kind = kind;
			if (kind == MONGO_ITEM_ERROR)
				item->err = err;
			if (s->tail != NULL)
				s->tail->next = item;
			else
				s->head = item;
			s->tail = item;
		}
		if (doc != NULL) {
			sluice_buf_append(&item->docs, bson_get_data(doc), doc->len);
			s->queued += doc->len;
		}
		if (s->sleeping)
			pthread_cond_signal(&s->more);
		/*
		 * After an empty batch, wait until the engine has taken it and asks
		 * for more: an engine that stops there (caught up) then finds no
		 * getMore in flight to wait for.
		 */
		if (kind == MONGO_ITEM_EMPTY) {
			s->want_more = false;
			while (!s->stop_fetch && !s->want_more)
				pthread_cond_wait(&s->room, &s->mu);
		}
		pthread_mutex_unlock(&s->mu);
		if (last)
			break;
	}
	pthread_mutex_lock(&s->mu);
	s->fetch_done = true;
	pthread_cond_signal(&s->more);
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* mongo_stop_fetcher ends and joins the fetcher thread and empties its queue. */
static void
mongo_stop_fetcher(mongo *s)
{
	if (s->fetching) {
		pthread_mutex_lock(&s->mu);
		s->stop_fetch = true;
		pthread_cond_broadcast(&s->room);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->fetcher, NULL); /* at most one getMore wait (maxAwaitTimeMS) */
		s->fetching = false;
	}
	while (s->head != NULL) {
		mongo_item *n = s->head->next;
		mongo_item_free(s->head);
		s->head = n;
	}
	mongo_item_free(s->cur);
	s->cur = NULL;
	s->tail = NULL;
	s->queued = 0;
	s->stop_fetch = false;
	s->fetch_done = false;
}

/* mongo_commit ends the open transaction at the last event's token. */
static bool
mongo_commit(mongo *s, sluice_capture_sink *sink)
{
	s->open = false;
	if (!sluice_capture_sink_commit_token(sink, s->open_ct, s->last_token.data,
					      s->last_token.len))
		return false;
	/*
	 * Everything at its cluster time is read: a transaction ends at the first
	 * event not in it or at an empty batch, and any other event is an oplog
	 * entry of its own (replica sets: one entry per cluster time).
	 */
	sluice_capture_sink_progress(sink, s->open_ct + 1);
	return true;
}

/* mongo_emit_change writes the record of one insert, update, replace or delete event. */
static bool
mongo_emit_change(mongo *s, sluice_capture_sink *sink, const sluice_mongo_event *ev)
{
	uint32_t id;
	bool fresh;
	if (!mongo_relation_id(s, ev->db, ev->coll, &id, &fresh))
		return false;
	if (fresh) {
		Sluice__V1__Relation rel;
		mongo_relation_record(&rel, id, ev->db, ev->coll);
		sluice_record rr = SLUICE__V1__RECORD__INIT;
		rr.body_case = SLUICE__V1__RECORD__BODY_RELATION;
		rr.relation = &rel;
		if (!sluice_capture_sink_relation(sink, &rr))
			return false;
	}
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	Sluice__V1__Insert ins = SLUICE__V1__INSERT__INIT;
	Sluice__V1__Update upd = SLUICE__V1__UPDATE__INIT;
	Sluice__V1__Delete del = SLUICE__V1__DELETE__INIT;
	if (strcmp(ev->op, "insert") == 0) {
		ins.relation_id = id;
		ins.has_document = true;
		ins.document = mongo_bin(ev->full, ev->full_len);
		rec.body_case = SLUICE__V1__RECORD__BODY_INSERT;
		rec.insert = &ins;
	} else if (strcmp(ev->op, "delete") == 0) {
		del.relation_id = id;
		del.has_document_key = true;
		del.document_key = mongo_bin(ev->key, ev->key_len);
		del.has_document_before = ev->before != NULL;
		del.document_before = mongo_bin(ev->before, ev->before_len);
		rec.body_case = SLUICE__V1__RECORD__BODY_DELETE;
		rec.delete_ = &del;
	} else {
		/* update (updateDescription, fullDocument if looked up) or replace (fullDocument)
		 */
		upd.relation_id = id;
		upd.has_document_key = true;
		upd.document_key = mongo_bin(ev->key, ev->key_len);
		upd.has_update_description = ev->update != NULL;
		upd.update_description = mongo_bin(ev->update, ev->update_len);
		upd.has_document = ev->full != NULL;
		upd.document = mongo_bin(ev->full, ev->full_len);
		upd.has_document_before = ev->before != NULL;
		upd.document_before = mongo_bin(ev->before, ev->before_len);
		rec.body_case = SLUICE__V1__RECORD__BODY_UPDATE;
		rec.update = &upd;
	}
	return sluice_capture_sink_change(sink, &rec);
}

/* mongo_emit_namespace writes a drop, rename, dropDatabase, invalidate or other event whole. */
static bool
mongo_emit_namespace(sluice_capture_sink *sink, const sluice_mongo_event *ev, const uint8_t *raw,
		     uint32_t raw_len)
{
	Sluice__V1__NamespaceChange nc = SLUICE__V1__NAMESPACE_CHANGE__INIT;
	nc.operation = (char *)ev->op;
	nc.database = (char *)ev->db;
	nc.collection = (char *)ev->coll;
	nc.to_database = (char *)ev->to_db;
	nc.to_collection = (char *)ev->to_coll;
	nc.has_event = true;
	nc.event = mongo_bin(raw, raw_len);
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_NAMESPACE_CHANGE;
	rec.namespace_change = &nc;
	return sluice_capture_sink_change(sink, &rec);
}

/* mongo_note_ddl keeps the namespace change a progress document of apply announces. */
static void
mongo_note_ddl(mongo *s, const sluice_mongo_event *ev)
{
	bson_t doc;
	bson_iter_t it, ddl;
	s->ddl_op[0] = s->ddl_db[0] = s->ddl_coll[0] = '\0';
	if (ev->full == NULL || !bson_init_static(&doc, ev->full, ev->full_len) ||
	    !bson_iter_init_find(&it, &doc, "ddl") || !BSON_ITER_HOLDS_DOCUMENT(&it) ||
	    !bson_iter_recurse(&it, &ddl))
		return;
	while (bson_iter_next(&ddl)) {
		if (!BSON_ITER_HOLDS_UTF8(&ddl))
			continue;
		const char *k = bson_iter_key(&ddl), *v = bson_iter_utf8(&ddl, NULL);
		if (strcmp(k, "op") == 0)
			snprintf(s->ddl_op, sizeof(s->ddl_op), "%s", v);
		else if (strcmp(k, "db") == 0)
			snprintf(s->ddl_db, sizeof(s->ddl_db), "%s", v);
		else if (strcmp(k, "coll") == 0)
			snprintf(s->ddl_coll, sizeof(s->ddl_coll), "%s", v);
	}
}

/*
 * mongo_apply_ddl tells whether a namespace event is the one apply announced
 * (a dropDatabase also takes the drops of its collections that come before
 * it).
 */
static bool
mongo_apply_ddl(mongo *s, const sluice_mongo_event *ev)
{
	if (s->ddl_op[0] == '\0' || ev->db == NULL || strcmp(ev->db, s->ddl_db) != 0)
		return false;
	const char *coll = ev->coll ? ev->coll : "";
	if (strcmp(s->ddl_op, "dropDatabase") == 0) {
		if (strcmp(ev->op, "drop") == 0)
			return true;
		if (strcmp(ev->op, "dropDatabase") != 0)
			return false;
	} else if (strcmp(ev->op, s->ddl_op) != 0 || strcmp(coll, s->ddl_coll) != 0)
		return false;
	s->ddl_op[0] = '\0';
	return true;
}

/* mongo_event handles one change event: false when the stream must reconnect. */
static bool
mongo_event(mongo *s, sluice_capture_sink *sink, const bson_t *raw)
{
	sluice_mongo_event ev;
	const char *why;
	if (!sluice_mongo_event_decode(bson_get_data(raw), raw->len, &ev, &why)) {
		sluice_log_error("a change event from %s cannot be captured: %s", s->hosts, why);
		return false;
	}
	if (s->open) {
		bool same = ev.in_txn && s->open_is_txn && ev.txn_number == s->open_txn_number &&
			    ev.cluster_time == s->open_ct && ev.lsid_len == s->open_lsid.len &&
			    memcmp(ev.lsid, s->open_lsid.data, ev.lsid_len) == 0;
		if (!same && !mongo_commit(s, sink))
			return false;
	}
	if (!s->open) {
		Sluice__V1__Begin b = SLUICE__V1__BEGIN__INIT;
		b.commit_time_us = ev.wall_us;
		b.has_source_token = true;
		b.source_token = mongo_bin(ev.token, ev.token_len);
		if (!sluice_capture_sink_begin(sink, &b, ev.cluster_time))
			return false;
		if (sluice_capture_sink_stopping(sink))
			return true; /* past the bound: the engine stops before this one */
		s->open = true;
		s->open_ct = ev.cluster_time;
		s->open_is_txn = ev.in_txn;
		s->open_txn_number = ev.txn_number;
		sluice_buf_reset(&s->open_lsid);
		if (ev.in_txn)
			sluice_buf_append(&s->open_lsid, ev.lsid, ev.lsid_len);
	}
	sluice_buf_reset(&s->last_token);
	sluice_buf_append(&s->last_token, ev.token, ev.token_len);
	sluice_capture_sink_progress(sink, ev.cluster_time);

	bool ok = true;
	bool invalidate = strcmp(ev.op, "invalidate") == 0;
	if (ev.db != NULL && strcmp(ev.db, SLUICE_MONGO_LOCAL_DB) == 0) {
		/*
		 * sluice's node-local database is never captured. sluice apply writes
		 * the stream's progress document there first in every transaction:
		 * a transaction that starts with it is apply's, and is left out (no
		 * echo in two-way replication).
		 */
		if (ev.coll != NULL && strcmp(ev.coll, SLUICE_MONGO_PROGRESS) == 0) {
			sluice_capture_sink_origin(sink, "sluice apply", 0, true);
			mongo_note_ddl(s, &ev);
		}
	} else if (!sluice_mongo_event_is_row(ev.op) && mongo_apply_ddl(s, &ev)) {
		/* apply's own namespace change (announced): left out */
	} else if (sluice_mongo_event_is_row(ev.op)) {
		if (mongo_watched(s, ev.db, ev.coll))
			ok = mongo_emit_change(s, sink, &ev);
	} else if (invalidate || ev.db == NULL || mongo_watched(s, ev.db, ev.coll) ||
		   (ev.to_db != NULL && mongo_watched(s, ev.to_db, ev.to_coll))) {
		ok = mongo_emit_namespace(sink, &ev, bson_get_data(raw), raw->len);
		if (invalidate) {
			sluice_log_info(
				"the change stream was invalidated (its collection or "
				"database was dropped or renamed): watching again after it");
			s->invalidated = true;
		}
	}
	if (!ok)
		return false;
	if (!ev.in_txn)
		return mongo_commit(s, sink);
	return true;
}

static sluice_source_receive mongo_item_handle(mongo *s, sluice_capture_sink *sink,
					       mongo_item *item);

static sluice_source_receive
mongo_receive(void *state, sluice_capture_sink *sink)
{
	mongo *s = state;
	if (s->stream == NULL || s->fatal)
		return SLUICE_SOURCE_LOST;
	if (s->invalidated) {
		/* The cursor is closed: start again after the invalidate (startAfter). */
		if (s->open && !mongo_commit(s, sink))
			return SLUICE_SOURCE_LOST;
		s->invalidated = false;
		return SLUICE_SOURCE_RESTART;
	}
	if (s->cur == NULL) {
		pthread_mutex_lock(&s->mu);
		mongo_item *item = s->head;
		bool done = s->fetch_done;
		if (item == NULL && !s->want_more) {
			s->want_more = true;
			pthread_cond_signal(&s->room);
		}
		if (item != NULL) {
			s->head = item->next;
			if (s->head == NULL)
				s->tail = NULL;
			item->next = NULL;
			s->queued -= item->docs.len;
			pthread_cond_signal(&s->room);
		}
		pthread_mutex_unlock(&s->mu);
		if (item == NULL)
			return done ? SLUICE_SOURCE_LOST : SLUICE_SOURCE_IDLE;
		s->cur = item;
	}
	sluice_source_receive r = mongo_item_handle(s, sink, s->cur);
	if (s->cur->kind != MONGO_ITEM_EVENT || s->cur->off >= s->cur->docs.len) {
		mongo_item_free(s->cur);
		s->cur = NULL;
	}
	return r;
}

/* mongo_item_handle handles one item of the fetcher's queue. */
static sluice_source_receive
mongo_item_handle(mongo *s, sluice_capture_sink *sink, mongo_item *item)
{
	if (item->kind == MONGO_ITEM_EVENT) {
		/* One event: libmongoc checked each document's length when it read the reply. */
		const uint8_t *p = item->docs.data + item->off;
		uint32_t len = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
			       (uint32_t)p[3] << 24;
		bson_t ev;
		if (len > item->docs.len - item->off || !bson_init_static(&ev, p, len)) {
			sluice_log_error("a change event from %s is cut short", s->hosts);
			item->off = item->docs.len;
			return SLUICE_SOURCE_LOST;
		}
		item->off += len;
		return mongo_event(s, sink, &ev) ? SLUICE_SOURCE_RECEIVED : SLUICE_SOURCE_LOST;
	}
	if (item->kind == MONGO_ITEM_ERROR) {
		mongo_stream_error(s, &item->err, "reading");
		return SLUICE_SOURCE_LOST;
	}
	bson_t token;
	const bson_t *pbrt = NULL;
	if (item->docs.len > 0 && bson_init_static(&token, item->docs.data, item->docs.len))
		pbrt = &token;
	uint64_t ct;
	/*
	 * An empty getMore: the server has returned every event it has. On a
	 * replica set a transaction's events are never split by an empty batch,
	 * so an open transaction is complete. The postBatchResumeToken is either
	 * the last event's _id (it was the newest entry) or a high-water mark:
	 * everything up to its cluster time has been read.
	 */
	if (s->open && !mongo_commit(s, sink))
		return SLUICE_SOURCE_LOST;
	if (pbrt != NULL && sluice_mongo_token_time(bson_get_data(pbrt), pbrt->len, &ct) &&
	    !sluice_capture_sink_keepalive_token(sink, ct + 1, bson_get_data(pbrt), pbrt->len))
		return SLUICE_SOURCE_LOST;
	return SLUICE_SOURCE_IDLE;
}

static bool
mongo_wait(void *state, int ms)
{
	mongo *s = state;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&s->mu);
	if (s->head == NULL && !s->fetch_done) {
		s->sleeping = true;
		(void)pthread_cond_timedwait(&s->more, &s->mu, &until);
		s->sleeping = false;
	}
	pthread_mutex_unlock(&s->mu);
	return true;
}

static bool
mongo_ack(void *state, uint64_t received, uint64_t durable, bool reply_requested)
{
	/* The stream holds the resume token: the server keeps nothing for sluice. */
	(void)state;
	(void)received;
	(void)durable;
	(void)reply_requested;
	return true;
}

static const char *
mongo_busy_subject(void *state)
{
	(void)state;
	return "the MongoDB deployment";
}

static const char *
mongo_busy_reason(void *state)
{
	(void)state;
	return "unknown";
}

static void
mongo_close(void *state)
{
	mongo *s = state;
	mongo_stop_fetcher(s);
	if (s->stream != NULL)
		mongoc_change_stream_destroy(s->stream);
	s->stream = NULL;
	if (s->client != NULL)
		mongoc_client_destroy(s->client);
	s->client = NULL;
	s->open = false;
}

static void
mongo_free(void *state)
{
	sluice_mongosource_free(state);
}

void
sluice_mongosource_free(sluice_mongosource *s)
{
	if (s == NULL)
		return;
	mongo_close(s);
	if (s->uri != NULL)
		mongoc_uri_destroy(s->uri);
	for (size_t i = 0; i < s->nrels; i++)
		free(s->rels[i].ns);
	free(s->rels);
	sluice_buf_free(&s->open_lsid);
	sluice_buf_free(&s->last_token);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->more);
	pthread_cond_destroy(&s->room);
	free(s);
}

const sluice_source_ops sluice_mongosource_ops = {
	.name = "MongoDB",
	.position_kind = SLUICE_SOURCE_POSITION_CLUSTER_TIME,
	.format_position = mongo_format_position,
	.position_time_us = mongo_position_time_us,
	.open = mongo_open,
	.current_position = mongo_current_position,
	.start = mongo_start,
	.receive = mongo_receive,
	.wait = mongo_wait,
	.ack = mongo_ack,
	.busy_subject = mongo_busy_subject,
	.busy_reason = mongo_busy_reason,
	.close = mongo_close,
	.free = mongo_free,
};
