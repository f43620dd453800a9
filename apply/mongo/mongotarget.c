/*
 * The MongoDB target (target.h): each stream transaction is one
 * multi-document transaction holding its changes, its conflict-log entries
 * and the stream's progress document (sluice.progress), so a kill at any
 * moment leaves either all of it or none. Documents are written as the
 * stream holds them (raw BSON, no client-side validation): inserts and
 * replacements whole, updates by applying the event's updateDescription to
 * the target's copy (mongoupdate.c), deletes by documentKey.
 */
#include "mongotarget.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "filter.h"
#include "log.h"
#include "mongoconn.h"
#include "mongoprepare.h"
#include "mongoupdate.h"
#include "mongoversion.h"
#include "mongowatch.h"
#include "records.h"
#include "target.h"

#define MT_MAX_DOCUMENT_BYTES (16 * 1024 * 1024 + 16 * 1024)

/* Per relation of the engine (its names are the engine's: sluice_apply_rel_at). */
typedef struct mt_rel {
	mongoc_collection_t *c; /* owned; made at first use on the current client */
} mt_rel;

typedef struct mt {
	sluice_target base; /* first: the engine sees this */
	sluice_apply_ctx *ctx;
	const sluice_apply_options *o;
	sluice_apply_stats *stats;
	mongoc_uri_t *uri; /* owned */
	char hosts[512];
	mongoc_client_t *client;        /* owned */
	mongoc_client_session_t *cs;    /* owned */
	bool transactions;              /* a replica set or mongos: multi-document transactions */
	mongoc_collection_t *progress;  /* owned: sluice.progress */
	mongoc_collection_t *conflicts; /* owned: sluice.conflicts */
	char progress_name[600];

	/* --strategy timestamp: versions of documents (mongoversion.h, mongowatch.h) */
	mongoc_collection_t *versions; /* owned: sluice.versions */
	sluice_mongo_watch *watch;     /* owned; made at the first open */
	bson_t *watch_resume;          /* owned: the watcher's position in the progress */
	char local_node[SLUICE_MONGO_NODE_NAME_MAX];
	uint64_t local_start; /* where the watcher starts without a position */
	/* a document whose entry is behind it was seen in this transaction: caught up since */
	uint64_t stale_txseq;
	int stale_attempts;
	bool delta_warned;

	mt_rel *rels; /* owned, by the engine's relation index */
	size_t nrels;

	/* the transaction being applied */
	bool in_txn;
	uint64_t txseq;
	int64_t commit_us;
	char node[256];
	bool progress_written; /* the open transaction's progress says txseq is done */
	/* the progress document as the open transaction sees it (prog_) and as committed (c_) */
	uint64_t prog_txseq, c_prog_txseq;
	bool prog_exists, c_prog_exists;
	int64_t writes; /* progress writes: each one differs, so each is an event */
	/*
	 * A source transaction with more writes than --max-txn-writes is applied
	 * in parts, each a MongoDB transaction whose progress names the source
	 * changes done so far (skip_txseq, skip_changes): a later run skips them.
	 */
	uint64_t skip_txseq, skip_changes, skip_left;
	uint64_t txn_changes; /* changes of the open source transaction, earlier parts included */
	uint32_t part_writes; /* changes in the open MongoDB transaction */
	bool split_logged;
} mt;

/* ---- errors -------------------------------------------------------------------- */

/*
 * mt_fail tells the engine what a failed command means. Network and server
 * selection errors lose the connection; TransientTransactionError,
 * WriteConflict and a primary stepping down or shutting down are retried
 * (the whole transaction, from the progress); an unknown commit result is
 * retried too: the progress document tells whether the commit happened.
 */
static sluice_target_status
mt_fail(mt *t, const char *what, const bson_error_t *err, const bson_t *reply, char op, uint32_t ri)
{
	sluice_target_failure *f = &t->base.failure;
	f->txseq = t->in_txn ? t->txseq : 0;
	f->op = op;
	f->rel = ri;
	f->cause = -1;
	snprintf(f->code, sizeof(f->code), "%" PRIu32, err->code);
	snprintf(f->message, sizeof(f->message), "%s: %s", what, sluice_mongo_error_text(err));
	bool transient = (reply != NULL &&
			  (mongoc_error_has_label(reply, "TransientTransactionError") ||
			   mongoc_error_has_label(reply, "UnknownTransactionCommitResult") ||
			   mongoc_error_has_label(reply, "RetryableWriteError")));
	if (err->domain == MONGOC_ERROR_STREAM || err->domain == MONGOC_ERROR_SERVER_SELECTION) {
		f->cause = SLUICE_RETRY_CONNECTION;
		return SLUICE_TARGET_LOST;
	}
	/* the codes below are the server's: a driver error may reuse the numbers */
	bool server = err->domain == MONGOC_ERROR_SERVER ||
		      err->domain == MONGOC_ERROR_WRITE_CONCERN_ERROR;
	switch (server ? err->code : 0) {
	case 112: /* WriteConflict */
	case 251: /* NoSuchTransaction: the transaction was aborted under us */
	case 24:  /* LockTimeout */
		f->cause = SLUICE_RETRY_SERIALIZATION;
		return SLUICE_TARGET_RETRY;
	case 6:     /* HostUnreachable */
	case 89:    /* NetworkTimeout */
	case 9001:  /* SocketException */
	case 91:    /* ShutdownInProgress */
	case 189:   /* PrimarySteppedDown */
	case 262:   /* ExceededTimeLimit */
	case 10107: /* NotWritablePrimary */
	case 11600: /* InterruptedAtShutdown */
	case 11601: /* Interrupted */
	case 11602: /* InterruptedDueToReplStateChange */
	case 13435: /* NotPrimaryNoSecondaryOk */
	case 13436: /* NotPrimaryOrSecondary */
		f->cause = SLUICE_RETRY_SHUTDOWN;
		return SLUICE_TARGET_RETRY;
	default:
		break;
	}
	if (transient) {
		f->cause = SLUICE_RETRY_SERIALIZATION;
		return SLUICE_TARGET_RETRY;
	}
	return SLUICE_TARGET_FAILED;
}

/* mt_failf reports a failure sluice itself found (a record it cannot apply). */
static sluice_target_status mt_failf(mt *t, char op, uint32_t ri, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static sluice_target_status
mt_failf(mt *t, char op, uint32_t ri, const char *fmt, ...)
{
	sluice_target_failure *f = &t->base.failure;
	f->txseq = t->in_txn ? t->txseq : 0;
	f->op = op;
	f->rel = ri;
	f->cause = -1;
	f->code[0] = '\0';
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->message, sizeof(f->message), fmt, ap);
	va_end(ap);
	return SLUICE_TARGET_FAILED;
}

/* ---- connection ------------------------------------------------------------------- */

/* mt_opts starts command options: the session when a transaction is open, no validation. */
static bool
mt_opts(mt *t, bson_t *opts, bson_error_t *err)
{
	bson_init(opts);
	BSON_APPEND_BOOL(opts, "validate", false);
	if (t->cs != NULL && t->in_txn && t->transactions && !t->o->dry_run)
		return mongoc_client_session_append(t->cs, opts, err);
	return true;
}

/* mt_read_progress reads the last txseq applied from the progress document. */
static sluice_target_status
mt_read_progress(mt *t, uint64_t *resume)
{
	bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
	BSON_APPEND_UTF8(&filter, "_id", t->o->stream);
	BSON_APPEND_INT64(&opts, "limit", 1);
	/*
	 * local, not majority: a commit this apply saw acknowledged must be read
	 * back, or the next progress write would not match and stop apply.
	 */
	mongoc_read_concern_t *rc = mongoc_read_concern_new();
	mongoc_read_concern_set_level(rc, MONGOC_READ_CONCERN_LEVEL_LOCAL);
	mongoc_read_concern_append(rc, &opts);
	mongoc_read_concern_destroy(rc);
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(t->progress, &filter, &opts, NULL);
	bson_destroy(&filter);
	bson_destroy(&opts);
	const bson_t *doc;
	*resume = 0;
	sluice_target_status st = SLUICE_TARGET_OK;
	bool found = false;
	uint64_t part_txseq = 0, part_changes = 0;
	if (mongoc_cursor_next(cur, &doc)) {
		bson_iter_t it, part;
		found = true;
		if (bson_iter_init_find(&it, doc, "part") && BSON_ITER_HOLDS_DOCUMENT(&it) &&
		    bson_iter_recurse(&it, &part))
			while (bson_iter_next(&part)) {
				if (!BSON_ITER_HOLDS_INT64(&part) && !BSON_ITER_HOLDS_INT32(&part))
					continue;
				if (strcmp(bson_iter_key(&part), "txseq") == 0)
					part_txseq = (uint64_t)bson_iter_as_int64(&part);
				else if (strcmp(bson_iter_key(&part), "changes") == 0)
					part_changes = (uint64_t)bson_iter_as_int64(&part);
			}
		if (bson_iter_init_find(&it, doc, "watch") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
			uint32_t wl;
			const uint8_t *wd;
			bson_t w;
			bson_iter_document(&it, &wl, &wd);
			if (t->watch_resume != NULL)
				bson_destroy(t->watch_resume);
			t->watch_resume = bson_init_static(&w, wd, wl) ? bson_copy(&w) : NULL;
		}
		if (bson_iter_init_find(&it, doc, "txseq") &&
		    (BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_INT32(&it)) &&
		    bson_iter_as_int64(&it) >= 0)
			*resume = (uint64_t)bson_iter_as_int64(&it);
		else
			st = mt_failf(t, 0, 0,
				      "the progress document of stream \"%s\" in %s.%s has no "
				      "txseq: it was not written by sluice",
				      t->o->stream, SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_PROGRESS);
	}
	bson_error_t err;
	const bson_t *reply = NULL;
	if (mongoc_cursor_error_document(cur, &err, &reply))
		st = mt_fail(t, "reading the progress", &err, reply, 0, 0);
	mongoc_cursor_destroy(cur);
	if (st == SLUICE_TARGET_OK) {
		t->prog_txseq = t->c_prog_txseq = *resume;
		t->prog_exists = t->c_prog_exists = found;
		bool part = part_txseq == *resume + 1 && part_changes > 0;
		t->skip_txseq = part ? part_txseq : 0;
		t->skip_changes = part ? part_changes : 0;
	}
	return st;
}

/*
 * mt_open_versions sets last-writer-wins up: the node's name and the start
 * of its version watcher (sluice prepare), and the watcher itself, which
 * resumes where the progress says (or at the start).
 */
static sluice_target_status
mt_open_versions(mt *t)
{
	if (!t->transactions) {
		sluice_log_error("--strategy timestamp needs a replica set at %s: document "
				 "versions are read from the target's change stream",
				 t->hosts);
		return mt_failf(t, 0, 0, "%s", "");
	}
	bson_error_t err;
	int found = sluice_mongo_node_read(t->client, t->local_node, sizeof(t->local_node),
					   &t->local_start, &err);
	if (found < 0)
		return mt_fail(t, "reading sluice.node", &err, NULL, 0, 0);
	if (found == 0) {
		sluice_log_error("--strategy timestamp: the MongoDB target at %s has no node name "
				 "and no version tracking: run sluice prepare --target URI --node "
				 "NAME first (NAME as the --node of a capture of that deployment)",
				 t->hosts);
		return mt_failf(t, 0, 0, "%s", "");
	}
	if (t->watch == NULL) {
		t->watch = sluice_mongo_watch_new(t->uri, t->hosts, t->o->stream, t->local_node,
						  t->watch_resume, t->local_start);
		if (t->watch == NULL) {
			t->base.failure.cause = SLUICE_RETRY_CONNECTION;
			return SLUICE_TARGET_LOST;
		}
		sluice_log_info("last writer wins on node \"%s\": local writes are versioned from "
				"the target's change stream (%s)",
				t->local_node,
				t->watch_resume ? "resuming after apply's last position"
						: "from sluice prepare on");
	}
	return SLUICE_TARGET_OK;
}

static sluice_target_status
mt_open(sluice_target *base, uint64_t *resume)
{
	mt *t = (mt *)base;
	bson_error_t err;
	sluice_mongo_init();
	if (t->uri == NULL) {
		t->uri = sluice_mongo_uri(t->o->target, "sluice-apply");
		if (t->uri == NULL)
			return mt_failf(t, 0, 0, "%s", "");
		sluice_mongo_hosts(t->uri, t->hosts, sizeof(t->hosts));
		snprintf(t->progress_name, sizeof(t->progress_name),
			 "progress document \"%s\" in %s.%s", t->o->stream, SLUICE_MONGO_LOCAL_DB,
			 SLUICE_MONGO_PROGRESS);
	}
	t->client = mongoc_client_new_from_uri_with_error(t->uri, &err);
	if (t->client == NULL) {
		sluice_log_error("MongoDB client for %s: %s", t->hosts,
				 sluice_mongo_error_text(&err));
		t->base.failure.cause = SLUICE_RETRY_CONNECTION;
		return SLUICE_TARGET_LOST;
	}
	mongoc_client_set_error_api(t->client, MONGOC_ERROR_API_VERSION_2);
	bson_t cmd = BSON_INITIALIZER, reply;
	BSON_APPEND_INT32(&cmd, "hello", 1);
	bool ok = mongoc_client_command_simple(t->client, "admin", &cmd, NULL, &reply, &err);
	bson_destroy(&cmd);
	if (!ok) {
		bson_destroy(&reply);
		sluice_log_error("cannot reach the MongoDB target at %s: %s", t->hosts,
				 sluice_mongo_error_text(&err));
		t->base.failure.cause = SLUICE_RETRY_CONNECTION;
		return SLUICE_TARGET_LOST;
	}
	bson_iter_t it;
	t->transactions = bson_iter_init_find(&it, &reply, "setName") ||
			  (bson_iter_init_find(&it, &reply, "msg") && BSON_ITER_HOLDS_UTF8(&it) &&
			   strcmp(bson_iter_utf8(&it, NULL), "isdbgrid") == 0);
	bson_destroy(&reply);
	if (!t->transactions && !t->o->at_least_once) {
		sluice_log_error(
			"the MongoDB target at %s is a standalone server: without multi-document "
			"transactions a change and the stream's progress cannot commit together, "
			"so exactly once is impossible there. Run it as a replica set (a single "
			"member will do: mongod --replSet rs0, then rs.initiate()), or pass "
			"--at-least-once to apply anyway (after a crash the last transaction may "
			"be applied twice)",
			t->hosts);
		return mt_failf(t, 0, 0, "%s", "");
	}
	t->cs = mongoc_client_start_session(t->client, NULL, &err);
	if (t->cs == NULL) {
		sluice_log_error("cannot start a session on the MongoDB target at %s: %s", t->hosts,
				 sluice_mongo_error_text(&err));
		return mt_fail(t, "starting a session", &err, NULL, 0, 0);
	}
	t->progress = mongoc_client_get_collection(t->client, SLUICE_MONGO_LOCAL_DB,
						   SLUICE_MONGO_PROGRESS);
	t->conflicts = mongoc_client_get_collection(t->client, SLUICE_MONGO_LOCAL_DB,
						    SLUICE_MONGO_CONFLICTS);
	t->versions = mongoc_client_get_collection(t->client, SLUICE_MONGO_LOCAL_DB,
						   SLUICE_MONGO_VERSIONS);
	sluice_target_status st = mt_read_progress(t, resume);
	if (st == SLUICE_TARGET_OK && t->o->strategy == SLUICE_STRATEGY_TIMESTAMP)
		st = mt_open_versions(t);
	return st;
}

static sluice_target_status
mt_progress(sluice_target *base, uint64_t *resume)
{
	return mt_read_progress((mt *)base, resume);
}

static const char *
mt_progress_name(const sluice_target *base)
{
	return ((const mt *)base)->progress_name;
}

/* ---- relations ------------------------------------------------------------------------ */

/* mt_relation takes a (new) description of relation ri: its collection handle is made again. */
static void
mt_relation(sluice_target *base, uint32_t ri, const Sluice__V1__Relation *desc)
{
	mt *t = (mt *)base;
	(void)desc;
	if (ri >= t->nrels) {
		mt_rel *p = realloc(t->rels, (ri + 1) * sizeof(*p));
		if (p == NULL)
			abort();
		memset(p + t->nrels, 0, (ri + 1 - t->nrels) * sizeof(*p));
		t->rels = p;
		t->nrels = ri + 1;
	}
	if (t->rels[ri].c != NULL)
		mongoc_collection_destroy(t->rels[ri].c);
	t->rels[ri].c = NULL;
}

/* mt_label names relation ri (db.coll) for messages and the conflict log. */
static const char *
mt_label(const mt *t, uint32_t ri)
{
	return sluice_apply_rel_at(t->ctx, ri)->label;
}

/* mt_check accepts collections of MongoDB streams (a PostgreSQL stream has rows, not documents). */
static sluice_target_status
mt_check(sluice_target *base, uint32_t ri, const Sluice__V1__Relation *desc)
{
	mt *t = (mt *)base;
	if (desc == NULL || !desc->has_source ||
	    desc->source != SLUICE__V1__SOURCE_KIND__SOURCE_MONGODB)
		return mt_failf(t, 0, ri,
				"relation %s of stream \"%s\" is not a MongoDB collection: a "
				"MongoDB target applies streams captured from MongoDB",
				mt_label(t, ri), t->o->stream);
	const sluice_apply_rel *r = sluice_apply_rel_at(t->ctx, ri);
	if (r->space[0] == '\0' || r->name[0] == '\0')
		return mt_failf(t, 0, ri, "relation %s has an empty database or collection name",
				r->label);
	return SLUICE_TARGET_OK;
}

static mongoc_collection_t *
mt_coll(mt *t, uint32_t ri)
{
	mt_rel *r = &t->rels[ri];
	if (r->c == NULL) {
		const sluice_apply_rel *er = sluice_apply_rel_at(t->ctx, ri);
		r->c = mongoc_client_get_collection(t->client, er->space, er->name);
	}
	return r->c;
}

/* ---- transactions ------------------------------------------------------------------ */

static sluice_target_status mt_write_progress(mt *t, uint64_t done, uint64_t part_changes,
					      const Sluice__V1__NamespaceChange *ddl);

static sluice_target_status
mt_begin(sluice_target *base, const sluice_apply_txn *txn)
{
	mt *t = (mt *)base;
	t->txseq = txn->txseq;
	t->commit_us = txn->commit_us;
	snprintf(t->node, sizeof(t->node), "%s", txn->node);
	t->in_txn = true;
	t->progress_written = false;
	t->txn_changes = 0;
	t->part_writes = 0;
	t->split_logged = false;
	t->skip_left = txn->txseq == t->skip_txseq ? t->skip_changes : 0;
	bson_error_t err;
	if (t->watch != NULL) {
		/*
		 * every local write committed before now gets its version first
		 * (a dry run too: it records local versions, applies nothing)
		 */
		bson_t reply;
		if (!sluice_mongo_watch_catch_up(t->watch, &err, &reply)) {
			sluice_target_status st =
				mt_fail(t, "reading the target's change stream for versions", &err,
					&reply, 0, 0);
			bson_destroy(&reply);
			return st;
		}
		bson_destroy(&reply);
	}
	if (t->o->dry_run || !t->transactions)
		return SLUICE_TARGET_OK;
	if (!mongoc_client_session_start_transaction(t->cs, NULL, &err))
		return mt_fail(t, "starting a transaction", &err, NULL, 0, 0);
	/*
	 * The progress first: a capture on this deployment sees it as the
	 * transaction's first event and leaves the whole transaction out.
	 */
	sluice_target_status st = mt_write_progress(t, t->txseq, 0, NULL);
	t->progress_written = st == SLUICE_TARGET_OK;
	return st;
}

/*
 * mt_split commits the part of the open source transaction applied so far
 * (its progress names the changes done) and opens the next part, which
 * again starts with a progress write.
 */
static sluice_target_status
mt_split(mt *t)
{
	if (!t->split_logged)
		sluice_log_info("txseq %" PRIu64 " has more than %" PRIu32
				" writes: applying it in parts (a MongoDB transaction may not run "
				"long; the parts are not atomic on the target)",
				t->txseq, t->o->max_txn_writes);
	t->split_logged = true;
	sluice_target_status st = mt_write_progress(t, t->txseq - 1, t->txn_changes, NULL);
	if (st != SLUICE_TARGET_OK)
		return st;
	bson_t reply;
	bson_error_t err;
	if (!mongoc_client_session_commit_transaction(t->cs, &reply, &err)) {
		st = mt_fail(t, "committing a part", &err, &reply, 0, 0);
		bson_destroy(&reply);
		return st;
	}
	bson_destroy(&reply);
	t->c_prog_txseq = t->prog_txseq;
	t->c_prog_exists = t->prog_exists;
	t->skip_txseq = t->txseq;
	t->skip_changes = t->txn_changes;
	sluice_apply_part_committed(t->ctx); /* its counts stay: a resume skips its changes */
	t->part_writes = 0;
	t->progress_written = false;
	if (!mongoc_client_session_start_transaction(t->cs, NULL, &err))
		return mt_fail(t, "starting a transaction", &err, NULL, 0, 0);
	return mt_write_progress(t, t->txseq - 1, t->txn_changes, NULL);
}

/*
 * mt_conflict counts a conflict and, with the conflict log on, records it in
 * sluice.conflicts in the transaction: stream, txseq, relation, the
 * documentKey, the case, the remote version and the resolution.
 */
static sluice_target_status
mt_conflict(mt *t, uint32_t ri, sluice_conflict c, const bson_t *key, const char *resolution,
	    const sluice_mongo_version *local)
{
	t->stats->conflicts[c]++;
	if (!t->o->conflict_log || t->o->dry_run)
		return SLUICE_TARGET_OK;
	bson_t doc = BSON_INITIALIZER, opts;
	BSON_APPEND_UTF8(&doc, "stream", t->o->stream);
	BSON_APPEND_INT64(&doc, "txseq", (int64_t)t->txseq);
	BSON_APPEND_UTF8(&doc, "relation", mt_label(t, ri));
	BSON_APPEND_DOCUMENT(&doc, "key", key);
	BSON_APPEND_UTF8(&doc, "kind", sluice_conflict_name(c));
	if (local != NULL && local->found) {
		BSON_APPEND_DATE_TIME(&doc, "local_time", local->t / 1000);
		BSON_APPEND_UTF8(&doc, "local_node", local->node);
	} else {
		BSON_APPEND_NULL(&doc, "local_time");
		BSON_APPEND_NULL(&doc, "local_node");
	}
	BSON_APPEND_DATE_TIME(&doc, "remote_time", t->commit_us / 1000);
	BSON_APPEND_UTF8(&doc, "remote_node", t->node);
	BSON_APPEND_UTF8(&doc, "resolution", resolution);
	bson_error_t err;
	bson_t reply;
	sluice_target_status st = SLUICE_TARGET_OK;
	if (!mt_opts(t, &opts, &err))
		st = mt_fail(t, "logging a conflict", &err, NULL, 0, ri);
	else {
		if (!mongoc_collection_insert_one(t->conflicts, &doc, &opts, &reply, &err))
			st = mt_fail(t, "logging a conflict", &err, &reply, 0, ri);
		bson_destroy(&reply);
	}
	bson_destroy(&opts);
	bson_destroy(&doc);
	return st;
}

/* mt_find reads the document of c matching filter (in the transaction), if any. */
static sluice_target_status
mt_find(mt *t, mongoc_collection_t *c, uint32_t ri, char op, const bson_t *filter, bson_t *found,
	bool *present)
{
	bson_t opts;
	bson_error_t err;
	*present = false;
	if (!mt_opts(t, &opts, &err)) {
		bson_destroy(&opts);
		return mt_fail(t, "reading a document", &err, NULL, op, ri);
	}
	BSON_APPEND_INT64(&opts, "limit", 1);
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, filter, &opts, NULL);
	bson_destroy(&opts);
	const bson_t *doc;
	if (mongoc_cursor_next(cur, &doc)) {
		bson_copy_to(doc, found);
		*present = true;
	}
	const bson_t *reply = NULL;
	sluice_target_status st = SLUICE_TARGET_OK;
	if (mongoc_cursor_error_document(cur, &err, &reply)) {
		st = mt_fail(t, "reading a document", &err, reply, op, ri);
		if (*present)
			bson_destroy(found);
		*present = false;
	}
	mongoc_cursor_destroy(cur);
	return st;
}

/* mt_write_result reads whether an upsert inserted (upsertedCount) or matched a document. */
static bool
mt_upserted(const bson_t *reply)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, reply, "upsertedCount") && bson_iter_as_int64(&it) > 0;
}

static int64_t
mt_count(const bson_t *reply, const char *field)
{
	bson_iter_t it;
	return bson_iter_init_find(&it, reply, field) ? bson_iter_as_int64(&it) : 0;
}

/* mt_replace writes doc over the document matching filter (upsert: or inserts it). */
static sluice_target_status
mt_replace(mt *t, uint32_t ri, char op, const bson_t *filter, const bson_t *doc, bool upsert,
	   bool *inserted, bool *matched)
{
	bson_t opts, reply;
	bson_error_t err;
	*inserted = *matched = false;
	if (!mt_opts(t, &opts, &err)) {
		bson_destroy(&opts);
		return mt_fail(t, "writing a document", &err, NULL, op, ri);
	}
	if (upsert)
		BSON_APPEND_BOOL(&opts, "upsert", true);
	bool ok = mongoc_collection_replace_one(mt_coll(t, ri), filter, doc, &opts, &reply, &err);
	bson_destroy(&opts);
	sluice_target_status st = SLUICE_TARGET_OK;
	if (!ok)
		st = mt_fail(t, "writing a document", &err, &reply, op, ri);
	else {
		*inserted = mt_upserted(&reply);
		*matched = mt_count(&reply, "matchedCount") > 0;
	}
	bson_destroy(&reply);
	return st;
}

static sluice_target_status
mt_insert(mt *t, uint32_t ri, char op, const bson_t *doc)
{
	bson_t opts, reply;
	bson_error_t err;
	if (!mt_opts(t, &opts, &err)) {
		bson_destroy(&opts);
		return mt_fail(t, "inserting a document", &err, NULL, op, ri);
	}
	bool ok = mongoc_collection_insert_one(mt_coll(t, ri), doc, &opts, &reply, &err);
	bson_destroy(&opts);
	sluice_target_status st =
		ok ? SLUICE_TARGET_OK : mt_fail(t, "inserting a document", &err, &reply, op, ri);
	bson_destroy(&reply);
	return st;
}

static sluice_target_status
mt_delete(mt *t, uint32_t ri, const bson_t *filter, bool *deleted)
{
	bson_t opts, reply;
	bson_error_t err;
	*deleted = false;
	if (!mt_opts(t, &opts, &err)) {
		bson_destroy(&opts);
		return mt_fail(t, "deleting a document", &err, NULL, 'D', ri);
	}
	bool ok = mongoc_collection_delete_one(mt_coll(t, ri), filter, &opts, &reply, &err);
	bson_destroy(&opts);
	sluice_target_status st = SLUICE_TARGET_OK;
	if (!ok)
		st = mt_fail(t, "deleting a document", &err, &reply, 'D', ri);
	else
		*deleted = mt_count(&reply, "deletedCount") > 0;
	bson_destroy(&reply);
	return st;
}

/* mt_bson makes a read-only view of a record's raw BSON field; false when absent or bad. */
static bool
mt_bson(const ProtobufCBinaryData *b, bool has, bson_t *out)
{
	return has && b->len >= 5 && bson_init_static(out, b->data, b->len);
}

/* mt_id_filter makes {_id: <doc's _id>}; false when the document has none. */
static bool
mt_id_filter(const bson_t *doc, bson_t *filter)
{
	bson_iter_t it;
	if (!bson_iter_init_find(&it, doc, "_id"))
		return false;
	bson_init(filter);
	return bson_append_iter(filter, "_id", 3, &it);
}

/*
 * mt_update writes a remote change over the document found: the update
 * description (ud) applied to it, or the whole document doc. written
 * (initialised here) is the document as written (a dry run writes nothing).
 */
static sluice_target_status
mt_update(mt *t, uint32_t ri, char op, const bson_t *filter, const bson_t *found, const bson_t *ud,
	  const bson_t *doc, bson_t *written)
{
	bool inserted, matched;
	bson_init(written);
	if (ud == NULL) {
		bson_concat(written, doc);
		return t->o->dry_run
			       ? SLUICE_TARGET_OK
			       : mt_replace(t, ri, op, filter, doc, false, &inserted, &matched);
	}
	char why[256];
	if (!sluice_mongo_apply_update(bson_get_data(found), found->len, bson_get_data(ud), ud->len,
				       written, why, sizeof(why)))
		return mt_failf(t, op, ri, "its update description cannot be applied: %s", why);
	if (written->len > MT_MAX_DOCUMENT_BYTES)
		return mt_failf(t, op, ri, "the updated document would take %" PRIu32 " bytes",
				written->len);
	return t->o->dry_run ? SLUICE_TARGET_OK
			     : mt_replace(t, ri, op, filter, written, false, &inserted, &matched);
}

/*
 * mt_stale asks for the transaction again: the document was written locally
 * after the version watcher last caught up (its entry in sluice.versions is
 * behind it). The next attempt catches the watcher up first.
 */
static sluice_target_status
mt_stale(mt *t, char op, uint32_t ri)
{
	sluice_target_failure *f = &t->base.failure;
	f->txseq = t->txseq;
	f->op = op;
	f->rel = ri;
	f->cause = SLUICE_RETRY_SERIALIZATION;
	snprintf(f->code, sizeof(f->code), "%s", "stale");
	snprintf(f->message, sizeof(f->message), "%s",
		 "a local write to the document is newer than its entry in sluice.versions: "
		 "reading the target's change stream again");
	return SLUICE_TARGET_RETRY;
}

/*
 * mt_change_lww applies one change under last writer wins: the document and
 * its version entry are read in the transaction, the version order decides
 * (conflicts.md), and the entry is written with the document.
 */
static sluice_target_status
mt_change_lww(mt *t, uint32_t ri, char op, const bson_t *filter, const bson_t *keyp,
	      const bson_t *doc, const bson_t *ud)
{
	const sluice_apply_rel *er = sluice_apply_rel_at(t->ctx, ri);
	bson_iter_t id;
	if (!bson_iter_init_find(&id, filter, "_id"))
		return mt_failf(t, op, ri, "a change without an _id");
	bool dry = t->o->dry_run, present = false, has_entry = false;
	bson_t vid, vfilter = BSON_INITIALIZER, found, entry;
	sluice_mongo_version v;
	memset(&v, 0, sizeof(v));
	sluice_mongo_version_id(&vid, er->space, er->name, &id);
	BSON_APPEND_DOCUMENT(&vfilter, "_id", &vid);
	sluice_target_status st = mt_find(t, t->versions, ri, op, &vfilter, &entry, &has_entry);
	if (st == SLUICE_TARGET_OK && has_entry) {
		sluice_mongo_version_parse(bson_get_data(&entry), entry.len, &v);
		bson_destroy(&entry);
	}
	if (st == SLUICE_TARGET_OK)
		st = mt_find(t, mt_coll(t, ri), ri, op, filter, &found, &present);
	if (st != SLUICE_TARGET_OK)
		goto out;

	sluice_version local = {.known = v.found, .time_us = v.t, .node = v.node};
	bool matches = sluice_mongo_version_matches(&v, present ? bson_get_data(&found) : NULL,
						    present ? found.len : 0) ||
		       (!v.found && !present);
	if (!matches) {
		if (t->stale_txseq != t->txseq) {
			t->stale_txseq = t->txseq;
			t->stale_attempts = 0;
		}
		if (!v.found && (t->stale_attempts > 0 || dry)) {
			/* no entry after a catch-up: written before sluice prepare, older than all
			 */
			local.known = false;
		} else if (t->stale_attempts >= 5 && !dry) {
			/*
			 * Still behind after five catch-ups: the document keeps being
			 * written locally. Its last write is at most as old as now.
			 */
			local = (sluice_version){.known = true,
						 .time_us = sluice_clock_unix_us(),
						 .node = t->local_node};
		} else if (!dry) {
			t->stale_attempts++;
			st = mt_stale(t, op, ri);
			goto out;
		}
	}
	sluice_version remote = {.known = true, .time_us = t->commit_us, .node = t->node};
	sluice_version tomb = {.known = v.tomb, .time_us = v.dt, .node = v.dnode};
	sluice_row_state rs = {.present = present,
			       .remote_newer = sluice_version_newer(&remote, &local),
			       .tombstone_newer = v.tomb && sluice_version_newer(&tomb, &remote),
			       .complete = doc != NULL};
	sluice_decision d = sluice_conflict_decide(SLUICE_STRATEGY_TIMESTAMP, op, &rs);
	sluice_mongo_version nv = v;
	nv.found = true;
	bool write_entry = true;
	switch (d.write) {
	case SLUICE_WRITE_INSERT:
		if (!dry)
			st = mt_insert(t, ri, op, doc);
		nv.present = sluice_mongo_version_hash(bson_get_data(doc), doc->len, nv.h);
		if (op == 'I')
			t->stats->inserts++;
		else
			t->stats->updates++;
		break;
	case SLUICE_WRITE_UPDATE: {
		bson_t written;
		/*
		 * The whole document when the stream has it: a delta applied to
		 * a document that took other writes than the source's would
		 * give another document, and the nodes would not converge.
		 */
		if (op == 'U' && doc == NULL && !t->delta_warned) {
			sluice_log_warn("stream \"%s\" has updates without their document: "
					"applied as deltas, which converge only where both nodes "
					"held the same document; capture with --full-document "
					"(required, or updateLookup) for last writer wins",
					t->o->stream);
			t->delta_warned = true;
		}
		st = mt_update(t, ri, op, filter, &found, doc == NULL ? ud : NULL, doc, &written);
		nv.present = sluice_mongo_version_hash(bson_get_data(&written), written.len, nv.h);
		bson_destroy(&written);
		t->stats->updates++;
		break;
	}
	case SLUICE_WRITE_DELETE: {
		bool deleted;
		if (!dry)
			st = mt_delete(t, ri, filter, &deleted);
		nv.present = false;
		sluice_mongo_version_tomb(&nv, t->commit_us, t->node);
		t->stats->deletes++;
		break;
	}
	case SLUICE_WRITE_TOMBSTONE:
		/* a delete that lost, or of a missing document: its tombstone is kept */
		sluice_mongo_version_tomb(&nv, t->commit_us, t->node);
		if (!v.found || !present) {
			nv.present = false;
			nv.t = nv.dt;
			snprintf(nv.node, sizeof(nv.node), "%s", nv.dnode);
		}
		write_entry = !v.found || nv.dt != v.dt || strcmp(nv.dnode, v.dnode) != 0;
		break;
	default:
		write_entry = false;
		if (d.conflict == SLUICE_CONFLICT_NONE)
			t->stats->skipped++;
		break;
	}
	if (d.write == SLUICE_WRITE_INSERT || d.write == SLUICE_WRITE_UPDATE ||
	    d.write == SLUICE_WRITE_DELETE) {
		nv.t = t->commit_us;
		snprintf(nv.node, sizeof(nv.node), "%s", t->node);
	}
	if (st == SLUICE_TARGET_OK && write_entry && !dry) {
		bson_t e, opts, reply;
		bson_error_t err;
		sluice_mongo_version_build(&e, &vid, &nv);
		if (!mt_opts(t, &opts, &err))
			st = mt_fail(t, "writing a version", &err, NULL, op, ri);
		else {
			BSON_APPEND_BOOL(&opts, "upsert", true);
			if (!mongoc_collection_replace_one(t->versions, &vfilter, &e, &opts, &reply,
							   &err))
				st = mt_fail(t, "writing a version", &err, &reply, op, ri);
			bson_destroy(&reply);
		}
		bson_destroy(&opts);
		bson_destroy(&e);
	}
	if (st == SLUICE_TARGET_OK && d.conflict != SLUICE_CONFLICT_NONE)
		st = mt_conflict(t, ri, d.conflict, keyp, d.resolution, &v);
out:
	if (present)
		bson_destroy(&found);
	bson_destroy(&vfilter);
	bson_destroy(&vid);
	return st;
}

/*
 * mt_apply_change does what the decision says for one change. present is
 * what the target held (found by a read in the transaction); for replace's
 * inserts and replacements the upsert tells it instead, without a read.
 */
static sluice_target_status
mt_change_one(mt *t, uint32_t ri, char op, const sluice_record *rec)
{
	bson_t doc, key, ud, filter;
	const bson_t *keyp = &key; /* the key logged with a conflict */
	bool has_doc = false, has_key = false, has_ud = false;
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_INSERT:
		has_doc = mt_bson(&rec->insert->document, rec->insert->has_document, &doc);
		break;
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
		has_doc = mt_bson(&rec->snapshot_row->document, rec->snapshot_row->has_document,
				  &doc);
		break;
	case SLUICE__V1__RECORD__BODY_UPDATE:
		has_doc = mt_bson(&rec->update->document, rec->update->has_document, &doc);
		has_key = mt_bson(&rec->update->document_key, rec->update->has_document_key, &key);
		has_ud = mt_bson(&rec->update->update_description,
				 rec->update->has_update_description, &ud);
		break;
	default:
		has_key =
			mt_bson(&rec->delete_->document_key, rec->delete_->has_document_key, &key);
	}
	if (op == 'I') {
		if (!has_doc || !mt_id_filter(&doc, &filter))
			return mt_failf(t, op, ri, "an insert without a document with an _id");
		keyp = &filter;
	} else {
		if (!has_key)
			return mt_failf(t, op, ri, "a change without a documentKey");
		bson_copy_to(&key, &filter); /* the whole documentKey: shard key fields too */
	}
	if (op == 'U' && !has_ud && !has_doc) {
		bson_destroy(&filter);
		return mt_failf(t, op, ri, "a replacement without its document");
	}

	sluice_strategy strategy = t->o->strategy;
	sluice_target_status st = SLUICE_TARGET_OK;
	bool dry = t->o->dry_run;
	if (strategy == SLUICE_STRATEGY_TIMESTAMP) {
		st = mt_change_lww(t, ri, op, &filter, keyp, has_doc ? &doc : NULL,
				   has_ud ? &ud : NULL);
		bson_destroy(&filter);
		return st;
	}
	bool inserted = false, matched = false, present = false, deleted = false;
	bson_t found;
	/* replace: inserts and whole replacements go out as upserts, without a read */
	if (strategy == SLUICE_STRATEGY_REPLACE && !dry && (op == 'I' || (op == 'U' && !has_ud))) {
		st = mt_replace(t, ri, op, &filter, &doc, true, &inserted, &matched);
		if (st == SLUICE_TARGET_OK) {
			sluice_row_state rs = {.present = !inserted, .complete = true};
			sluice_decision d = sluice_conflict_decide(strategy, op, &rs);
			if (op == 'I' && inserted)
				t->stats->inserts++;
			else
				t->stats->updates++;
			if (d.conflict != SLUICE_CONFLICT_NONE)
				st = mt_conflict(t, ri, d.conflict, keyp, d.resolution, NULL);
		}
		bson_destroy(&filter);
		return st;
	}
	if (strategy == SLUICE_STRATEGY_REPLACE && !dry && op == 'D') {
		st = mt_delete(t, ri, &filter, &deleted);
		if (st == SLUICE_TARGET_OK) {
			if (deleted)
				t->stats->deletes++;
			else
				st = mt_conflict(t, ri, SLUICE_CONFLICT_DELETE_MISSING, keyp,
						 "skipped", NULL);
		}
		bson_destroy(&filter);
		return st;
	}
	/* everything else reads the target's document first */
	st = mt_find(t, mt_coll(t, ri), ri, op, &filter, &found, &present);
	if (st != SLUICE_TARGET_OK) {
		bson_destroy(&filter);
		return st;
	}
	sluice_row_state rs = {.present = present, .complete = has_doc};
	sluice_decision d = sluice_conflict_decide(strategy, op, &rs);
	switch (d.write) {
	case SLUICE_WRITE_INSERT:
		if (!dry)
			st = mt_insert(t, ri, op, &doc);
		if (op == 'I' || strategy == SLUICE_STRATEGY_APPEND)
			t->stats->inserts++;
		else
			t->stats->updates++; /* replace counts an update that inserted as an update
					      */
		break;
	case SLUICE_WRITE_UPDATE: {
		bson_t written;
		st = mt_update(t, ri, op, &filter, &found, has_ud && op == 'U' ? &ud : NULL, &doc,
			       &written);
		bson_destroy(&written);
		t->stats->updates++;
		break;
	}
	case SLUICE_WRITE_DELETE:
		if (!dry)
			st = mt_delete(t, ri, &filter, &deleted);
		t->stats->deletes++;
		break;
	default:
		if (d.conflict == SLUICE_CONFLICT_NONE)
			t->stats->skipped++; /* append keeps what the target has */
		break;
	}
	if (st == SLUICE_TARGET_OK && d.conflict != SLUICE_CONFLICT_NONE)
		st = mt_conflict(t, ri, d.conflict, keyp, d.resolution, NULL);
	if (present)
		bson_destroy(&found);
	bson_destroy(&filter);
	return st;
}

static sluice_target_status
mt_change(sluice_target *base, uint32_t ri, char op, const sluice_record *rec)
{
	mt *t = (mt *)base;
	t->txn_changes++;
	if (t->skip_left > 0) {
		t->skip_left--; /* an earlier part of this transaction applied it */
		return SLUICE_TARGET_OK;
	}
	sluice_target_status st = mt_change_one(t, ri, op, rec);
	if (st == SLUICE_TARGET_OK && t->transactions && !t->o->dry_run &&
	    t->o->max_txn_writes > 0 && ++t->part_writes >= t->o->max_txn_writes)
		st = mt_split(t);
	return st;
}

static sluice_target_status
mt_truncate(sluice_target *base, const uint32_t *ris, size_t n, bool restart_identity, bool cascade)
{
	mt *t = (mt *)base;
	(void)restart_identity;
	(void)cascade;
	for (size_t i = 0; i < n; i++) {
		bson_t opts, reply, all = BSON_INITIALIZER;
		bson_error_t err;
		if (t->o->dry_run)
			continue;
		if (!mt_opts(t, &opts, &err)) {
			bson_destroy(&opts);
			return mt_fail(t, "emptying a collection", &err, NULL, 0, ris[i]);
		}
		bool ok = mongoc_collection_delete_many(mt_coll(t, ris[i]), &all, &opts, &reply,
							&err);
		bson_destroy(&opts);
		sluice_target_status st =
			ok ? SLUICE_TARGET_OK
			   : mt_fail(t, "emptying a collection", &err, &reply, 0, ris[i]);
		bson_destroy(&reply);
		if (st != SLUICE_TARGET_OK)
			return st;
	}
	return SLUICE_TARGET_OK;
}

/* mt_ns_missing tells a namespace error that means "already done" (26 NamespaceNotFound). */
static bool
mt_ns_missing(const bson_error_t *err)
{
	return err->code == 26;
}

/* mt_drop drops db.coll; a collection that is not there is already dropped. */
static sluice_target_status
mt_drop(mt *t, const char *db, const char *coll)
{
	bson_error_t err;
	mongoc_collection_t *c = mongoc_client_get_collection(t->client, db, coll);
	bool ok = mongoc_collection_drop_with_opts(c, NULL, &err) || mt_ns_missing(&err);
	mongoc_collection_destroy(c);
	return ok ? SLUICE_TARGET_OK : mt_fail(t, "dropping a collection", &err, NULL, 0, 0);
}

/*
 * mt_announce_ddl commits a progress write that names the namespace change
 * about to run outside any transaction: a capture of this deployment leaves
 * out the event that follows (no echo of apply's drops and renames in two-way
 * replication). The progress itself stays at the last complete transaction.
 */
static sluice_target_status
mt_announce_ddl(mt *t, const Sluice__V1__NamespaceChange *nc)
{
	if (!t->transactions)
		return SLUICE_TARGET_OK;
	bson_error_t err;
	if (!mongoc_client_session_start_transaction(t->cs, NULL, &err))
		return mt_fail(t, "starting a transaction", &err, NULL, 0, 0);
	sluice_target_status st = mt_write_progress(t, t->prog_txseq, 0, nc);
	if (st != SLUICE_TARGET_OK)
		return st;
	bson_t reply;
	if (!mongoc_client_session_commit_transaction(t->cs, &reply, &err))
		st = mt_fail(t, "committing", &err, &reply, 0, 0);
	bson_destroy(&reply);
	if (st == SLUICE_TARGET_OK) {
		t->c_prog_txseq = t->prog_txseq;
		t->c_prog_exists = t->prog_exists;
	}
	return st;
}

/*
 * mt_namespace_change applies a drop, rename or dropDatabase. MongoDB runs
 * them outside transactions, so the transaction is ended first and the
 * progress is written after (mt_commit starts one for it): after a crash in
 * between the change is applied again, which finds it done (a drop of a
 * missing collection, a rename whose source is gone) and goes on.
 */
static sluice_target_status
mt_namespace_change(sluice_target *base, const Sluice__V1__NamespaceChange *nc)
{
	mt *t = (mt *)base;
	const char *op = nc->operation ? nc->operation : "";
	const char *db = nc->database ? nc->database : "";
	const char *coll = nc->collection ? nc->collection : "";
	if (t->o->dry_run || (strcmp(op, "drop") != 0 && strcmp(op, "rename") != 0 &&
			      strcmp(op, "dropDatabase") != 0)) {
		t->stats->skipped++; /* invalidate, create, index changes: nothing to write */
		return SLUICE_TARGET_OK;
	}
	if (t->transactions && mongoc_client_session_in_transaction(t->cs)) {
		bson_error_t err;
		mongoc_client_session_abort_transaction(t->cs, &err);
		t->progress_written = false;
		t->prog_txseq = t->c_prog_txseq;
		t->prog_exists = t->c_prog_exists;
	}
	sluice_target_status st = mt_announce_ddl(t, nc);
	if (st != SLUICE_TARGET_OK)
		return st;
	bson_error_t err;
	if (strcmp(op, "drop") == 0) {
		st = mt_drop(t, db, coll);
	} else if (strcmp(op, "rename") == 0) {
		const char *to_db = nc->to_database ? nc->to_database : "";
		const char *to_coll = nc->to_collection ? nc->to_collection : "";
		if (to_db[0] == '\0' || to_coll[0] == '\0')
			return mt_failf(t, 0, 0, "a rename of %s.%s without its new name", db,
					coll);
		mongoc_collection_t *c = mongoc_client_get_collection(t->client, db, coll);
		bool ok = mongoc_collection_rename_with_opts(c, to_db, to_coll, true, NULL, &err) ||
			  mt_ns_missing(&err);
		mongoc_collection_destroy(c);
		if (!ok)
			st = mt_fail(t, "renaming a collection", &err, NULL, 0, 0);
	} else if (t->o->filter.ninclude == 0 && t->o->filter.nexclude == 0) {
		mongoc_database_t *d = mongoc_client_get_database(t->client, db);
		bool ok = mongoc_database_drop_with_opts(d, NULL, &err) || mt_ns_missing(&err);
		mongoc_database_destroy(d);
		if (!ok)
			st = mt_fail(t, "dropping a database", &err, NULL, 0, 0);
	} else {
		/* with filters, only the collections they take */
		mongoc_database_t *d = mongoc_client_get_database(t->client, db);
		char **names = mongoc_database_get_collection_names_with_opts(d, NULL, &err);
		mongoc_database_destroy(d);
		if (names == NULL)
			return mt_fail(t, "listing collections", &err, NULL, 0, 0);
		for (size_t i = 0; names[i] != NULL && st == SLUICE_TARGET_OK; i++)
			if (sluice_filter_match(&t->o->filter, db, names[i]))
				st = mt_drop(t, db, names[i]);
		bson_strfreev(names);
	}
	return st;
}

/*
 * mt_write_progress records DONE as the last complete transaction (and, with
 * part_changes, how many changes of the open one earlier parts applied). The
 * filter holds the progress as this transaction sees it: if another apply
 * moved it in the meantime, nothing matches, the upsert collides on _id and
 * the transaction fails instead of applying a transaction twice. Where no
 * progress document existed, it is inserted: if another apply wrote one
 * since, the insert collides on _id (a filter of {_id} alone would match that
 * document and overwrite its progress). Every write differs from the one
 * before (a counter), so each is an event a capture sees.
 */
static sluice_target_status
mt_write_progress(mt *t, uint64_t done, uint64_t part_changes,
		  const Sluice__V1__NamespaceChange *ddl)
{
	bson_t filter = BSON_INITIALIZER, doc = BSON_INITIALIZER, opts, reply;
	bson_error_t err;
	BSON_APPEND_UTF8(&filter, "_id", t->o->stream);
	BSON_APPEND_INT64(&filter, "txseq", (int64_t)t->prog_txseq);
	BSON_APPEND_UTF8(&doc, "_id", t->o->stream);
	BSON_APPEND_INT64(&doc, "txseq", (int64_t)done);
	if (part_changes > 0) {
		bson_t part;
		BSON_APPEND_DOCUMENT_BEGIN(&doc, "part", &part);
		BSON_APPEND_INT64(&part, "txseq", (int64_t)t->txseq);
		BSON_APPEND_INT64(&part, "changes", (int64_t)part_changes);
		bson_append_document_end(&doc, &part);
	}
	if (ddl != NULL) {
		bson_t d;
		BSON_APPEND_DOCUMENT_BEGIN(&doc, "ddl", &d);
		BSON_APPEND_UTF8(&d, "op", ddl->operation ? ddl->operation : "");
		BSON_APPEND_UTF8(&d, "db", ddl->database ? ddl->database : "");
		BSON_APPEND_UTF8(&d, "coll", ddl->collection ? ddl->collection : "");
		bson_append_document_end(&doc, &d);
	}
	BSON_APPEND_DATE_TIME(&doc, "commit_time", t->commit_us / 1000);
	BSON_APPEND_UTF8(&doc, "node", t->node);
	const bson_t *watch = t->watch ? sluice_mongo_watch_token(t->watch) : NULL;
	if (watch != NULL)
		BSON_APPEND_DOCUMENT(&doc, "watch", watch); /* where a restart resumes versions */
	BSON_APPEND_INT64(&doc, "writes", ++t->writes);
	sluice_target_status st = SLUICE_TARGET_OK;
	if (!mt_opts(t, &opts, &err))
		st = mt_fail(t, "recording the progress", &err, NULL, 0, 0);
	else {
		bool ok;
		if (t->prog_exists) {
			BSON_APPEND_BOOL(&opts, "upsert", true);
			ok = mongoc_collection_replace_one(t->progress, &filter, &doc, &opts,
							   &reply, &err);
		} else
			ok = mongoc_collection_insert_one(t->progress, &doc, &opts, &reply, &err);
		if (!ok) {
			if (err.code == 11000)
				st = mt_failf(
					t, 0, 0,
					"the progress of stream \"%s\" moved past txseq %" PRIu64
					" while this apply ran: is another apply running for "
					"it?",
					t->o->stream, t->prog_txseq);
			else
				st = mt_fail(t, "recording the progress", &err, &reply, 0, 0);
		} else {
			t->prog_txseq = done;
			t->prog_exists = true;
		}
		bson_destroy(&reply);
	}
	bson_destroy(&opts);
	bson_destroy(&filter);
	bson_destroy(&doc);
	return st;
}

static sluice_target_status
mt_commit(sluice_target *base)
{
	mt *t = (mt *)base;
	if (t->o->dry_run) {
		t->in_txn = false;
		return SLUICE_TARGET_OK;
	}
	if (t->transactions && !mongoc_client_session_in_transaction(t->cs)) {
		/* a namespace change ended the transaction: the progress gets one of its own */
		bson_error_t err;
		if (!mongoc_client_session_start_transaction(t->cs, NULL, &err))
			return mt_fail(t, "starting a transaction", &err, NULL, 0, 0);
	}
	/* without transactions (--at-least-once) the progress comes after the changes */
	sluice_target_status st =
		t->progress_written ? SLUICE_TARGET_OK : mt_write_progress(t, t->txseq, 0, NULL);
	if (st != SLUICE_TARGET_OK)
		return st;
	if (t->transactions) {
		bson_t reply;
		bson_error_t err;
		if (!mongoc_client_session_commit_transaction(t->cs, &reply, &err)) {
			st = mt_fail(t, "committing", &err, &reply, 0, 0);
			bson_destroy(&reply);
			return st;
		}
		bson_destroy(&reply);
	}
	t->in_txn = false;
	t->c_prog_txseq = t->prog_txseq;
	t->c_prog_exists = t->prog_exists;
	t->skip_txseq = t->skip_changes = 0;
	sluice_apply_committed(t->ctx, t->txseq);
	return SLUICE_TARGET_OK;
}

static sluice_target_status
mt_flush(sluice_target *base)
{
	(void)base;
	return SLUICE_TARGET_OK; /* nothing is queued: every command waits for its reply */
}

static sluice_target_status
mt_rollback(sluice_target *base, bool after_failure)
{
	mt *t = (mt *)base;
	(void)after_failure;
	t->in_txn = false;
	t->prog_txseq = t->c_prog_txseq;
	t->prog_exists = t->c_prog_exists;
	if (t->cs == NULL || !mongoc_client_session_in_transaction(t->cs))
		return SLUICE_TARGET_OK;
	/*
	 * An abort that fails leaves nothing either: a failed command already
	 * ended the transaction on the server, or the server drops it.
	 */
	bson_error_t err;
	mongoc_client_session_abort_transaction(t->cs, &err);
	return SLUICE_TARGET_OK;
}

static void
mt_close(sluice_target *base)
{
	mt *t = (mt *)base;
	for (size_t i = 0; i < t->nrels; i++)
		if (t->rels[i].c != NULL) {
			mongoc_collection_destroy(t->rels[i].c);
			t->rels[i].c = NULL;
		}
	if (t->progress != NULL)
		mongoc_collection_destroy(t->progress);
	if (t->conflicts != NULL)
		mongoc_collection_destroy(t->conflicts);
	if (t->versions != NULL)
		mongoc_collection_destroy(t->versions);
	t->progress = t->conflicts = t->versions = NULL;
	if (t->cs != NULL)
		mongoc_client_session_destroy(t->cs);
	t->cs = NULL;
	if (t->client != NULL)
		mongoc_client_destroy(t->client);
	t->client = NULL;
	t->in_txn = false;
}

static void
mt_free(sluice_target *base)
{
	mt *t = (mt *)base;
	mt_close(base); /* the collection handles too */
	free(t->rels);
	sluice_mongo_watch_free(t->watch);
	if (t->watch_resume != NULL)
		bson_destroy(t->watch_resume);
	if (t->uri != NULL)
		mongoc_uri_destroy(t->uri);
	free(t);
}

static const sluice_target_ops mt_ops = {
	.kind = "MongoDB",
	.code_name = "code",
	.open = mt_open,
	.progress = mt_progress,
	.progress_name = mt_progress_name,
	.relation = mt_relation,
	.check = mt_check,
	.begin = mt_begin,
	.change = mt_change,
	.truncate = mt_truncate,
	.namespace_change = mt_namespace_change,
	.commit = mt_commit,
	.flush = mt_flush,
	.rollback = mt_rollback,
	.close = mt_close,
	.free = mt_free,
};

sluice_target *
sluice_mongo_target_create(sluice_apply_ctx *ctx)
{
	mt *t = calloc(1, sizeof(*t));
	if (t == NULL)
		abort();
	t->base.ops = &mt_ops;
	t->ctx = ctx;
	t->o = sluice_apply_ctx_options(ctx);
	t->stats = sluice_apply_ctx_stats(ctx);
	return &t->base;
}

bool
sluice_mongo_target_progress_read(const sluice_apply_options *o, uint64_t *txseq, bool *found)
{
	*txseq = 0;
	*found = false;
	sluice_mongo_init();
	mongoc_uri_t *uri = sluice_mongo_uri(o->target, "sluice-status");
	if (uri == NULL)
		return false;
	char hosts[512];
	sluice_mongo_hosts(uri, hosts, sizeof(hosts));
	bson_error_t err;
	bool ok = false;
	mongoc_collection_t *progress = NULL;
	mongoc_cursor_t *cur = NULL;
	mongoc_client_t *client = mongoc_client_new_from_uri_with_error(uri, &err);
	if (client == NULL) {
		sluice_log_error("MongoDB client for %s: %s", hosts, sluice_mongo_error_text(&err));
		goto cleanup;
	}
	mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
	progress =
		mongoc_client_get_collection(client, SLUICE_MONGO_LOCAL_DB, SLUICE_MONGO_PROGRESS);
	bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
	BSON_APPEND_UTF8(&filter, "_id", o->stream);
	BSON_APPEND_INT64(&opts, "limit", 1);
	cur = mongoc_collection_find_with_opts(progress, &filter, &opts, NULL);
	bson_destroy(&filter);
	bson_destroy(&opts);
	const bson_t *doc;
	bson_iter_t it;
	if (mongoc_cursor_next(cur, &doc)) {
		*found = true;
		if (bson_iter_init_find(&it, doc, "txseq") &&
		    (BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_INT32(&it)) &&
		    bson_iter_as_int64(&it) >= 0)
			*txseq = (uint64_t)bson_iter_as_int64(&it);
	}
	if (mongoc_cursor_error(cur, &err)) {
		sluice_log_error("cannot read the progress of stream \"%s\" on the MongoDB "
				 "target at %s: %s",
				 o->stream, hosts, sluice_mongo_error_text(&err));
		goto cleanup;
	}
	ok = true;

cleanup:
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(progress);
	mongoc_client_destroy(client);
	mongoc_uri_destroy(uri);
	return ok;
}
