/* sluice run --child: one pipeline of the configuration, run as sluice capture or apply would. */
#include "run_pipeline.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apply.h"
#include "backend.h"
#include "capture.h"
#include "cli.h"
#include "clock.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "stats.h"

typedef struct run_child {
	const sluice_config_pipeline *pl;
	int stats_fd; /* -1: none */
	sluice_rate rate;
	sluice_pipeline_stats out;
	/* capture from PostgreSQL: WAL the slot retains, asked every 10 s */
	const char *conninfo; /* borrowed */
	const char *slot;     /* borrowed */
	PGconn *wal_conn;     /* owned */
	int64_t wal_asked_ms;
} run_child;

/* run_send writes the stats record (whole: it is smaller than PIPE_BUF). */
static void
run_send(run_child *c, sluice_pipeline_state state)
{
	if (c->stats_fd < 0)
		return;
	c->out.magic = SLUICE_PIPELINE_STATS_MAGIC;
	c->out.state = (uint32_t)state;
	c->out.sent_us = sluice_clock_unix_us();
	c->out.throttled_ms = c->rate.waited_ms;
	ssize_t n;
	do
		n = write(c->stats_fd, &c->out, sizeof(c->out));
	while (n < 0 && errno == EINTR);
	/* A supervisor that is gone or slow loses a record, never the pipeline. */
}

/* run_wal_retained asks the source how much WAL the slot holds back (every 10 s). */
static void
run_wal_retained(run_child *c)
{
	if (c->conninfo == NULL)
		return;
	int64_t now = sluice_clock_mono_ms();
	if (c->wal_asked_ms != 0 && now - c->wal_asked_ms < 10000)
		return;
	c->wal_asked_ms = now;
	if (c->wal_conn == NULL || PQstatus(c->wal_conn) != CONNECTION_OK) {
		PQfinish(c->wal_conn);
		const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
		const char *vals[] = {c->conninfo, "5", "sluice-metrics", NULL};
		c->wal_conn = PQconnectdbParams(keys, vals, 1);
		if (PQstatus(c->wal_conn) != CONNECTION_OK) {
			c->out.wal_retained = -1;
			return;
		}
	}
	const char *params[] = {c->slot};
	PGresult *r = PQexecParams(c->wal_conn,
				   "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM "
				   "pg_replication_slots WHERE slot_name = $1",
				   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
		c->out.wal_retained = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	else
		c->out.wal_retained = -1;
	PQclear(r);
}

static void
run_capture_report(void *arg, const sluice_capture_stats *s)
{
	run_child *c = arg;
	c->out.transactions = s->transactions;
	c->out.changes = s->changes;
	c->out.frames = s->frames;
	c->out.bytes = s->bytes;
	c->out.reconnects = s->reconnects;
	c->out.lsn_positions = s->lsn_positions;
	c->out.source_position = s->received_position;
	c->out.acked_position = s->acked_lsn;
	c->out.head_txseq = s->durable_txseq;
	c->out.done_txseq = s->durable_txseq;
	if (s->durable_commit_us != 0)
		c->out.done_commit_us = s->durable_commit_us;
	c->out.heartbeat_us = s->heartbeat_us;
	run_wal_retained(c);
	run_send(c, s->streaming ? SLUICE_PIPELINE_RUNNING : SLUICE_PIPELINE_RECONNECTING);
}

static void
run_apply_report(void *arg, const sluice_apply_stats *s)
{
	run_child *c = arg;
	c->out.transactions = s->transactions;
	c->out.inserts = s->inserts;
	c->out.updates = s->updates;
	c->out.deletes = s->deletes;
	c->out.truncates = s->truncates;
	c->out.skipped = s->skipped;
	c->out.changes = s->inserts + s->updates + s->deletes;
	memcpy(c->out.conflicts, s->conflicts, sizeof(c->out.conflicts));
	memcpy(c->out.retries, s->retries, sizeof(c->out.retries));
	c->out.frames = s->frames;
	c->out.bytes = s->bytes;
	c->out.head_txseq = s->head_txseq;
	c->out.done_txseq = s->applied_txseq;
	if (s->applied_commit_us != 0)
		c->out.done_commit_us = s->applied_commit_us;
	c->out.heartbeat_us = s->heartbeat_us;
	run_send(c, s->connected ? SLUICE_PIPELINE_RUNNING : SLUICE_PIPELINE_RECONNECTING);
}

void
run_pipeline_default_name(const char *stream, char *out, size_t size)
{
	snprintf(out, size, "sluice_%s", stream);
	for (char *p = out; *p; p++) {
		*p = (char)tolower((unsigned char)*p);
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			*p = '_';
	}
}

bool
run_pipeline_store_open(const sluice_config *cfg, const sluice_config_pipeline *pl, bool writing,
			sluice_store **store, int64_t *segment_seconds)
{
	const sluice_config_store *s = sluice_config_store_find(cfg, pl->store);
	const struct {
		const sluice_config_secret *secret;
		const char *env;
	} creds[] = {
		{&s->access_key_id, "AWS_ACCESS_KEY_ID"},
		{&s->secret_access_key, "AWS_SECRET_ACCESS_KEY"},
		{&s->session_token, "AWS_SESSION_TOKEN"},
	};
	enum { NCREDS = sizeof(creds) / sizeof(creds[0]) };
	/*
	 * The S3 backend reads its credentials from the environment when it
	 * opens: the store's own go there for that moment only, and what was
	 * there before comes back after (sluice status opens every pipeline's
	 * store in one process; one store's keys must not serve the next).
	 */
	char *saved[NCREDS] = {0};
	bool any = false;
	for (size_t i = 0; i < NCREDS; i++)
		any = any || creds[i].secret->given;
	for (size_t i = 0; i < NCREDS && any; i++) {
		const char *old = getenv(creds[i].env);
		saved[i] = old != NULL ? strdup(old) : NULL;
		unsetenv(creds[i].env); /* a key id without a token must not take another's token */
	}
	bool ok = true;
	for (size_t i = 0; i < NCREDS && ok; i++) {
		if (!creds[i].secret->given)
			continue;
		char *v = NULL;
		char why[512];
		if (!sluice_config_secret_read(creds[i].secret, &v, why, sizeof(why))) {
			sluice_log_error("store \"%s\": %s", s->name, why);
			ok = false;
			break;
		}
		setenv(creds[i].env, v, 1);
		sodium_memzero(v, strlen(v));
		free(v);
	}
	if (ok) {
		sluice_store_options so = {0};
		if (writing) {
			so.spool = s->spool;
			so.ack_local = s->ack != NULL && strcmp(s->ack, "local") == 0;
		}
		*segment_seconds =
			s->segment_seconds == UINT64_MAX ? -1 : (int64_t)s->segment_seconds;
		ok = sluice_store_open_with(s->url, &so, store);
	}
	for (size_t i = 0; i < NCREDS && any; i++) {
		if (saved[i] != NULL) {
			setenv(creds[i].env, saved[i], 1);
			sodium_memzero(saved[i], strlen(saved[i]));
			free(saved[i]);
		} else
			unsetenv(creds[i].env);
	}
	return ok;
}

sluice_trust *
run_pipeline_trust(const sluice_config *cfg, const sluice_config_pipeline *pl)
{
	sluice_trust *t = sluice_trust_create();
	for (size_t i = 0; i < pl->trust.n; i++) {
		const sluice_config_key *k = sluice_config_key_find(cfg, pl->trust.v[i]);
		if (!sluice_trust_add_file(t, k->public_file)) {
			sluice_trust_free(t);
			return NULL;
		}
	}
	return t;
}

/*
 * run_wait_standby waits while another process writes the stream: the
 * standby of two sluice run processes with the same capture. It returns
 * once the lock is free (the writer then takes it; of two standbys racing,
 * the loser fails to and is restarted, to wait again).
 */
static bool
run_wait_standby(run_child *c, sluice_store *store, const char *stream, volatile sig_atomic_t *stop)
{
	bool said = false;
	while (!*stop) {
		bool held = false;
		if (!sluice_store_lock_held(store, stream, &held))
			return false;
		if (!held) {
			if (said)
				sluice_log_info("stream \"%s\" is free: taking over", stream);
			return true;
		}
		if (!said)
			sluice_log_info("standby: stream \"%s\" is written by another process; "
					"taking over when it stops",
					stream);
		said = true;
		run_send(c, SLUICE_PIPELINE_STANDBY);
		sluice_sleep_ms(500, stop);
	}
	return true;
}

static int
run_capture(run_child *c, const sluice_config *cfg, const char *conn, bool once,
	    volatile sig_atomic_t *stop)
{
	const sluice_config_pipeline *pl = c->pl;
	sluice_capture_options o;
	sluice_capture_default_options(&o);
	char slot[128], pub[128];
	o.source = conn;
	o.stream = pl->stream;
	o.node = pl->node ? pl->node : pl->stream;
	run_pipeline_default_name(pl->stream, slot, sizeof(slot));
	run_pipeline_default_name(pl->stream, pub, sizeof(pub));
	o.slot = pl->slot ? pl->slot : slot;
	o.publication = pl->publication ? pl->publication : pub;
	o.create = pl->create;
	o.allow_no_identity = pl->allow_no_identity;
	o.snapshot = pl->snapshot;
	o.forward_origins = pl->forward_origins;
	o.messages = pl->messages;
	o.exit_when_caught_up = once;
	o.progress = false;
	if (!pl->heartbeat)
		o.heartbeat_interval_ms = 0;
	else if (pl->heartbeat_interval_ms > 0)
		o.heartbeat_interval_ms = (int)pl->heartbeat_interval_ms;
	if (pl->status_interval_ms > 0)
		o.status_interval_ms = (int)pl->status_interval_ms;
	if (pl->zstd_level != UINT64_MAX)
		o.writer.zstd_level = (int)pl->zstd_level;
	o.databases = (const char *const *)pl->databases.v;
	o.n_databases = pl->databases.n;
	o.collections = (const char *const *)pl->collections.v;
	o.n_collections = pl->collections.n;
	if (pl->full_document && strcmp(pl->full_document, "default") != 0)
		o.full_document = pl->full_document;
	if (pl->full_document_before_change && strcmp(pl->full_document_before_change, "off") != 0)
		o.full_document_before_change = pl->full_document_before_change;
	o.stop = stop;
	o.rate = &c->rate;
	o.report = run_capture_report;
	o.report_arg = c;
	bool mongodb =
		strncmp(conn, "mongodb://", 10) == 0 || strncmp(conn, "mongodb+srv://", 14) == 0;
	if (!mongodb) {
		c->conninfo = conn;
		c->slot = o.slot;
	}
	if (o.snapshot && !o.create && !mongodb) {
		sluice_log_error("pipeline \"%s\": snapshot needs create (the snapshot is taken "
				 "when the slot is created)",
				 pl->name);
		return SLUICE_EXIT_USAGE;
	}

	int rc = SLUICE_EXIT_FAILURE;
	sluice_key *key = NULL;
	sluice_store *store = NULL;
	sluice_trust *trust = NULL;
	int64_t segment_seconds;
	const sluice_config_key *k = sluice_config_key_find(cfg, pl->key);
	if (pl->trust.n > 0) {
		trust = run_pipeline_trust(cfg, pl);
		if (trust == NULL)
			goto cleanup;
		o.writer.trust = trust;
	}
	if (!sluice_key_load(k->secret_file, &key))
		goto cleanup;
	if (!run_pipeline_store_open(cfg, pl, true, &store, &segment_seconds))
		goto cleanup;
	if (segment_seconds < 0)
		segment_seconds = sluice_store_caps_get(store)->append_visible ? 0 : 2;
	o.writer.segment_max_age_ms = segment_seconds * 1000;
	if (!run_wait_standby(c, store, pl->stream, stop))
		goto cleanup;
	if (*stop) {
		rc = SLUICE_EXIT_OK;
		goto cleanup;
	}
	run_send(c, SLUICE_PIPELINE_STARTING);
	sluice_capture_stats st;
	bool ok = sluice_capture_run(store, key, &o, &st);
	sluice_log_info("capture %s: %" PRIu64 " transactions (txseq %" PRIu64 "..%" PRIu64
			"), %" PRIu64 " changes, %" PRIu64 " reconnects, %s %s",
			ok ? "stopped" : "failed", st.transactions, st.first_txseq, st.last_txseq,
			st.changes, st.reconnects, mongodb ? "last position" : "acknowledged",
			st.position);
	rc = ok ? SLUICE_EXIT_OK : SLUICE_EXIT_FAILURE;

cleanup:
	run_send(c, SLUICE_PIPELINE_STOPPED);
	sluice_store_close(store);
	sluice_key_free(key);
	sluice_trust_free(trust);
	return rc;
}

static int
run_apply(run_child *c, const sluice_config *cfg, const char *conn, bool once,
	  volatile sig_atomic_t *stop)
{
	const sluice_config_pipeline *pl = c->pl;
	sluice_apply_options o;
	sluice_apply_default_options(&o);
	o.target = conn;
	o.stream = pl->stream;
	o.origin = pl->origin;
	if (pl->strategy == NULL || strcmp(pl->strategy, "replace") == 0)
		o.strategy = SLUICE_STRATEGY_REPLACE;
	else if (strcmp(pl->strategy, "append") == 0)
		o.strategy = SLUICE_STRATEGY_APPEND;
	else
		o.strategy = SLUICE_STRATEGY_TIMESTAMP;
	o.filter.include = (const char **)pl->include.v;
	o.filter.ninclude = pl->include.n;
	o.filter.exclude = (const char **)pl->exclude.v;
	o.filter.nexclude = pl->exclude.n;
	o.ts_columns = (const char **)pl->timestamp_columns.v;
	o.nts_columns = pl->timestamp_columns.n;
	o.until_txseq = pl->until_txseq;
	if (pl->until_time && !cli_parse_time("until_time", pl->until_time, &o.until_time_us))
		return SLUICE_EXIT_USAGE;
	o.conflict_log = pl->conflict_log;
	if (pl->tombstone_horizon_ms > 0)
		o.tombstone_horizon_s = pl->tombstone_horizon_ms / 1000;
	if (pl->retry_report_ms > 0)
		o.retry_report_s = pl->retry_report_ms / 1000 ? pl->retry_report_ms / 1000 : 1;
	if (pl->max_txn_writes != UINT64_MAX)
		o.max_txn_writes = (uint32_t)pl->max_txn_writes;
	if (pl->group_size != UINT64_MAX)
		o.group_size = pl->group_size ? (uint32_t)pl->group_size : 1;
	if (pl->group_bytes != UINT64_MAX)
		o.group_bytes = pl->group_bytes;
	if (pl->group_ms > 0)
		o.group_ms = pl->group_ms;
	o.follow = !once && !o.until_txseq && !o.until_time_us;
	o.stop = stop;
	o.rate = &c->rate;
	o.report = run_apply_report;
	o.report_arg = c;

	int rc = SLUICE_EXIT_FAILURE;
	sluice_store *store = NULL;
	int64_t segment_seconds;
	sluice_trust *trust = run_pipeline_trust(cfg, pl);
	if (trust == NULL || !run_pipeline_store_open(cfg, pl, false, &store, &segment_seconds))
		goto cleanup;
	run_send(c, SLUICE_PIPELINE_STARTING);
	sluice_apply_stats st;
	bool ok = sluice_apply_run(store, trust, &o, &st);
	rc = ok ? SLUICE_EXIT_OK : st.refused ? SLUICE_EXIT_PROBLEM : SLUICE_EXIT_FAILURE;

cleanup:
	run_send(c, SLUICE_PIPELINE_STOPPED);
	sluice_store_close(store);
	sluice_trust_free(trust);
	return rc;
}

int
run_pipeline_child(const char *file, const char *text, size_t len, const char *name, int stats_fd,
		   bool once)
{
	sluice_buf errors = {0};
	size_t nerrors = 0;
	sluice_config *cfg = sluice_config_parse(file, text, len, &errors, &nerrors);
	if (cfg == NULL) {
		/* The supervisor checked this very text; the environment may have changed. */
		sluice_log_error("configuration %s: %.*s", file, (int)errors.len,
				 errors.data ? (const char *)errors.data : "");
		sluice_buf_free(&errors);
		return SLUICE_EXIT_USAGE;
	}
	sluice_buf_free(&errors);
	int rc = SLUICE_EXIT_USAGE;
	char *conn = NULL;
	run_child c = {.stats_fd = stats_fd};
	/* never block on a slow supervisor: a full pipe loses a record, not the pipeline */
	if (stats_fd >= 0)
		fcntl(stats_fd, F_SETFL, fcntl(stats_fd, F_GETFL) | O_NONBLOCK);
	c.out.wal_retained = -1;
	c.pl = sluice_config_pipeline_find(cfg, name);
	if (c.pl == NULL) {
		sluice_log_error("configuration %s has no pipeline \"%s\"", file, name);
		goto cleanup;
	}
	sluice_log_set_pipeline(c.pl->name);
	sluice_rate_init(&c.rate, c.pl->max_rows_per_s, c.pl->max_bytes_per_s);
	char why[512];
	if (!sluice_config_secret_read(&c.pl->conn, &conn, why, sizeof(why))) {
		sluice_log_error("pipeline \"%s\": %s", name,
				 why); /* names the file or variable, never the secret */
		rc = SLUICE_EXIT_FAILURE;
		goto cleanup;
	}
	volatile sig_atomic_t *stop = cli_stop_on_signals();
	run_send(&c, SLUICE_PIPELINE_STARTING);
	if (c.pl->kind == SLUICE_PIPELINE_CAPTURE)
		rc = run_capture(&c, cfg, conn, once, stop);
	else
		rc = run_apply(&c, cfg, conn, once, stop);

cleanup:
	PQfinish(c.wal_conn);
	if (conn != NULL) {
		sodium_memzero(conn, strlen(conn));
		free(conn);
	}
	sluice_log_set_pipeline(NULL);
	sluice_config_free(cfg);
	return rc;
}
