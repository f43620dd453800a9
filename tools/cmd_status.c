/* sluice status: each pipeline's position, head, lag and health, from sluice run or the stores. */
#include "cmd_status.h"

#include <bson/bson.h>
#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "backend.h"
#include "buf.h"
#include "cli.h"
#include "config.h"
#include "json.h"
#include "keys.h"
#include "log.h"
#include "pgconn.h"
#include "run_pipeline.h"
#include "verify.h"

/* Exit statuses of sluice status beyond the common ones (cli.h). */
#define STATUS_EXIT_NOT_READY 1 /* sluice run answered: a pipeline is not ready */
#define STATUS_EXIT_OFFLINE   4 /* nothing answered: everything read from stores and targets */

static void
status_help(FILE *f)
{
	fprintf(f, "Usage: sluice status --config FILE [--json] [--offline] [--listen ADDR:PORT]\n"
		   "\n"
		   "Show each pipeline of a sluice run configuration: its state, position (the\n"
		   "last transaction durable in the stream, or applied to the target), the\n"
		   "stream's head, the lag and its health.\n"
		   "\n"
		   "While sluice run serves the configuration's listen address, the figures are\n"
		   "its /status. Otherwise (nothing answers there, no listen address, or\n"
		   "--offline) they are read from the stores and databases themselves: each\n"
		   "stream's head from the newest segments of its store (authenticated with the\n"
		   "pipeline's keys), each apply's progress from its target (the replication\n"
		   "origin, or the progress document; nothing is written), and for a PostgreSQL\n"
		   "capture its slot's confirmed position and the WAL written after it.\n"
		   "\n"
		   "Options:\n"
		   "  -c, --config FILE      the configuration of sluice run\n"
		   "      --json             one JSON object instead of a table\n"
		   "      --offline          do not ask sluice run; read the stores and databases\n"
		   "      --listen ADDR:PORT ask sluice run there instead of the file's listen\n"
		   "  -h, --help             show this help\n"
		   "\n"
		   "Exit status: 0 sluice run answered and every pipeline is ready, 1 sluice run\n"
		   "answered and a pipeline is not ready, 2 usage error or a configuration with\n"
		   "errors, 3 a store or database could not be read (or sluice run answered\n"
		   "something else than its status), 4 sluice run did not answer and everything\n"
		   "was read from the stores and databases.\n");
}

/* One pipeline as status shows it. */
typedef struct status_row {
	const sluice_config_pipeline *pl; /* borrowed from the configuration */
	char state[48];
	bool have_done, have_head;
	uint64_t done_txseq; /* capture: durable in the stream; apply: applied */
	uint64_t head_txseq; /* the stream's last complete transaction */
	double lag_seconds;  /* -1: unknown */
	bool have_slot;      /* a PostgreSQL capture's slot was read */
	uint64_t slot_lsn;   /* its confirmed_flush_lsn */
	int64_t wal_behind;  /* WAL written after it, -1: unknown */
	bool healthy;
	char health[512];
} status_row;

/* status_http_body collects a response body (at most 4 MiB). */
static size_t
status_http_body(char *data, size_t size, size_t n, void *arg)
{
	sluice_buf *b = arg;
	if (b->len + size * n > 4u << 20)
		return 0;
	sluice_buf_append(b, data, size * n);
	return size * n;
}

/*
 * status_fetch asks sluice run at listen (ADDR:PORT as in the file) for
 * /status. @return 1 with the body, 0 when nothing answers there, -1 when
 * something else answered (logged).
 */
static int
status_fetch(const char *listen, sluice_buf *body)
{
	char url[320];
	const char *colon = strrchr(listen, ':');
	if (colon == NULL)
		return 0;
	const char *host = listen;
	int hl = (int)(colon - listen);
	/* A wildcard address is served on loopback too. */
	if (hl == 0 || (hl == 1 && listen[0] == '*') || strncmp(listen, "0.0.0.0:", 8) == 0) {
		host = "127.0.0.1";
		hl = 9;
	} else if (strncmp(listen, "[::]:", 5) == 0) {
		host = "[::1]";
		hl = 5;
	}
	snprintf(url, sizeof(url), "http://%.*s%s/status", hl, host, colon);
	CURL *c = curl_easy_init();
	if (c == NULL) {
		sluice_log_error("could not initialise libcurl");
		return -1;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, status_http_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	CURLcode rc = curl_easy_perform(c);
	long code = 0;
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(c);
	if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_OPERATION_TIMEDOUT ||
	    rc == CURLE_COULDNT_RESOLVE_HOST) {
		sluice_log_debug("nothing answers at %s: %s", url, curl_easy_strerror(rc));
		return 0;
	}
	if (rc != CURLE_OK || code != 200) {
		sluice_log_error("%s answered %s (HTTP %ld): is it sluice run?", url,
				 rc == CURLE_OK ? "an error" : curl_easy_strerror(rc), code);
		return -1;
	}
	return 1;
}

/* status_iter_u64 reads a number member of doc (0 when absent or null). */
static uint64_t
status_iter_u64(const bson_t *doc, const char *key)
{
	bson_iter_t it;
	if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_NUMBER(&it))
		return 0;
	int64_t v = bson_iter_as_int64(&it);
	return v < 0 ? 0 : (uint64_t)v;
}

/*
 * status_from_endpoint fills rows from sluice run's /status body.
 * @return false after logging when the body is not a status.
 */
static bool
status_from_endpoint(const sluice_buf *body, status_row *rows, size_t n)
{
	bson_error_t err;
	bson_t *doc = bson_new_from_json(body->data, (ssize_t)body->len, &err);
	bson_iter_t it;
	if (doc == NULL || !bson_iter_init_find(&it, doc, "pipelines") ||
	    !BSON_ITER_HOLDS_DOCUMENT(&it)) {
		sluice_log_error("the status from sluice run does not parse: %s",
				 doc == NULL ? err.message : "no \"pipelines\"");
		bson_destroy(doc);
		return false;
	}
	for (size_t i = 0; i < n; i++) {
		status_row *r = &rows[i];
		snprintf(r->state, sizeof(r->state), "absent");
		snprintf(r->health, sizeof(r->health),
			 "not in the configuration sluice run has loaded (SIGHUP reloads it)");
		r->lag_seconds = -1;
		bson_iter_t one;
		if (!bson_iter_recurse(&it, &one) || !bson_iter_find(&one, r->pl->name) ||
		    !BSON_ITER_HOLDS_DOCUMENT(&one))
			continue;
		uint32_t len;
		const uint8_t *data;
		bson_t v;
		bson_iter_document(&one, &len, &data);
		if (!bson_init_static(&v, data, len))
			continue;
		bson_iter_t f;
		if (bson_iter_init_find(&f, &v, "state") && BSON_ITER_HOLDS_UTF8(&f))
			snprintf(r->state, sizeof(r->state), "%s", bson_iter_utf8(&f, NULL));
		r->healthy = bson_iter_init_find(&f, &v, "ready") && BSON_ITER_HOLDS_BOOL(&f) &&
			     bson_iter_bool(&f);
		snprintf(r->health, sizeof(r->health), "%s", r->healthy ? "ready" : "not ready");
		if (bson_iter_init_find(&f, &v, "reason") && BSON_ITER_HOLDS_UTF8(&f))
			snprintf(r->health, sizeof(r->health), "%s: %s",
				 r->healthy ? "ready" : "not ready", bson_iter_utf8(&f, NULL));
		r->done_txseq = status_iter_u64(&v, "done_txseq");
		r->head_txseq = status_iter_u64(&v, "head_txseq");
		r->have_done = r->have_head = true;
		if (bson_iter_init_find(&f, &v, "lag_seconds") && BSON_ITER_HOLDS_NUMBER(&f))
			r->lag_seconds = bson_iter_as_double(&f);
	}
	bson_destroy(doc);
	return true;
}

/* status_trust is the trust set a pipeline reads its stream with (a capture: its own key). */
static sluice_trust *
status_trust(const sluice_config *cfg, const sluice_config_pipeline *pl)
{
	sluice_trust *t = run_pipeline_trust(cfg, pl);
	if (t == NULL || pl->kind != SLUICE_PIPELINE_CAPTURE)
		return t;
	const sluice_config_key *k = sluice_config_key_find(cfg, pl->key);
	bool ok;
	if (k->public_file != NULL) {
		ok = sluice_trust_add_file(t, k->public_file);
	} else {
		sluice_key *key = NULL;
		ok = sluice_key_load(k->secret_file, &key);
		if (ok)
			sluice_trust_add(t, sluice_key_public(key));
		sluice_key_free(key);
	}
	if (!ok) {
		sluice_trust_free(t);
		return NULL;
	}
	return t;
}

/* status_slot reads a PostgreSQL capture's slot: its confirmed position and the WAL after it. */
static bool
status_slot(status_row *r, const char *conninfo)
{
	char slot[160];
	if (r->pl->slot != NULL)
		snprintf(slot, sizeof(slot), "%s", r->pl->slot);
	else
		run_pipeline_default_name(r->pl->stream, slot, sizeof(slot));
	PGconn *conn = sluice_pg_connect(conninfo, false, "the source");
	if (conn == NULL) {
		snprintf(r->health, sizeof(r->health), "the source could not be read (logged)");
		return false;
	}
	const char *params[1] = {slot};
	PGresult *res = sluice_pg_query(
		conn,
		"SELECT confirmed_flush_lsn, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint "
		"FROM pg_replication_slots WHERE slot_name = $1",
		1, params);
	bool ok = res != NULL;
	if (ok && PQntuples(res) == 0) {
		snprintf(r->health, sizeof(r->health), "no replication slot \"%s\" on the source",
			 slot);
		ok = false;
	} else if (ok && !PQgetisnull(res, 0, 0)) {
		r->have_slot = sluice_pg_lsn_parse(PQgetvalue(res, 0, 0), &r->slot_lsn);
		r->wal_behind =
			PQgetisnull(res, 0, 1) ? -1 : strtoll(PQgetvalue(res, 0, 1), NULL, 10);
	}
	if (res == NULL)
		snprintf(r->health, sizeof(r->health), "the source could not be read (logged)");
	PQclear(res);
	PQfinish(conn);
	return ok;
}

/*
 * status_offline_one reads pipeline r->pl from its store and its source or
 * target. @return false when something could not be read (r->health says what).
 */
static bool
status_offline_one(const sluice_config *cfg, status_row *r)
{
	const sluice_config_pipeline *pl = r->pl;
	snprintf(r->state, sizeof(r->state), "not running");
	r->lag_seconds = -1;
	r->wal_behind = -1;
	bool ok = false;
	sluice_trust *trust = NULL;
	sluice_store *store = NULL;
	char *conn = NULL;
	char why[400];
	int64_t segment_seconds;
	sluice_stream_head head;
	trust = status_trust(cfg, pl);
	if (trust == NULL) {
		snprintf(r->health, sizeof(r->health), "its keys could not be read (logged)");
		goto cleanup;
	}
	if (!run_pipeline_store_open(cfg, pl, false, &store, &segment_seconds) ||
	    !sluice_verify_head(store, pl->stream, trust, &head)) {
		snprintf(r->health, sizeof(r->health), "its stream could not be read (logged)");
		goto cleanup;
	}
	r->head_txseq = head.txseq;
	r->have_head = true;
	if (!sluice_config_secret_read(&pl->conn, &conn, why, sizeof(why))) {
		snprintf(r->health, sizeof(r->health), "%s", why);
		goto cleanup;
	}
	bool mongodb =
		strncmp(conn, "mongodb://", 10) == 0 || strncmp(conn, "mongodb+srv://", 14) == 0;
	if (pl->kind == SLUICE_PIPELINE_CAPTURE) {
		/* What the stream holds is what capture made durable. */
		r->done_txseq = head.txseq;
		r->have_done = true;
		if (!mongodb && !status_slot(r, conn))
			goto cleanup;
		if (r->wal_behind > 0) {
			char size[32];
			cli_format_bytes((uint64_t)r->wal_behind, size, sizeof(size));
			snprintf(r->health, sizeof(r->health),
				 "the source has %s of WAL after the slot's position", size);
		} else {
			snprintf(r->health, sizeof(r->health), "%s",
				 head.segments == 0 ? "the stream is empty" : "readable");
		}
		r->healthy = true;
		ok = true;
		goto cleanup;
	}
	sluice_apply_options o;
	sluice_apply_default_options(&o);
	o.target = conn;
	o.stream = pl->stream;
	o.origin = pl->origin;
	bool found = false;
	if (!sluice_apply_progress_read(&o, &r->done_txseq, &found)) {
		snprintf(r->health, sizeof(r->health), "the target could not be read (logged)");
		goto cleanup;
	}
	r->have_done = true;
	if (r->done_txseq >= r->head_txseq)
		r->lag_seconds = 0;
	if (!found)
		snprintf(r->health, sizeof(r->health), "never applied to this target");
	else if (r->done_txseq >= r->head_txseq)
		snprintf(r->health, sizeof(r->health), "caught up");
	else
		snprintf(r->health, sizeof(r->health), "behind by %" PRIu64 " transactions",
			 r->head_txseq - r->done_txseq);
	r->healthy = true;
	ok = true;

cleanup:
	if (conn != NULL) {
		sodium_memzero(conn, strlen(conn));
		free(conn);
	}
	sluice_store_close(store);
	sluice_trust_free(trust);
	return ok;
}

/* status_lag writes a row's lag: transactions, and seconds when known. */
static void
status_lag(const status_row *r, char *out, size_t size)
{
	if (!r->have_done || !r->have_head) {
		snprintf(out, size, "-");
		return;
	}
	uint64_t txns = r->head_txseq > r->done_txseq ? r->head_txseq - r->done_txseq : 0;
	if (r->lag_seconds >= 0)
		snprintf(out, size, "%" PRIu64 " txn, %.1f s", txns, r->lag_seconds);
	else
		snprintf(out, size, "%" PRIu64 " txn", txns);
}

static void
status_print_table(const status_row *rows, size_t n, const char *source)
{
	printf("%s\n", source);
	enum { COLS = 8 };
	static const char *const heads[COLS] = {"PIPELINE", "KIND", "STREAM", "STATE",
						"POSITION", "HEAD", "LAG",    "HEALTH"};
	char(*cells)[COLS][160] = calloc(n ? n : 1, sizeof(*cells));
	if (cells == NULL)
		abort();
	size_t width[COLS];
	for (int c = 0; c < COLS; c++)
		width[c] = strlen(heads[c]);
	for (size_t i = 0; i < n; i++) {
		const status_row *r = &rows[i];
		snprintf(cells[i][0], 160, "%s", r->pl->name);
		snprintf(cells[i][1], 160, "%s",
			 r->pl->kind == SLUICE_PIPELINE_CAPTURE ? "capture" : "apply");
		snprintf(cells[i][2], 160, "%s", r->pl->stream);
		snprintf(cells[i][3], 160, "%s", r->state);
		if (r->have_done && r->have_slot) {
			char lsn[32];
			cli_format_lsn(r->slot_lsn, lsn, sizeof(lsn));
			snprintf(cells[i][4], 160, "%" PRIu64 " (slot %s)", r->done_txseq, lsn);
		} else if (r->have_done)
			snprintf(cells[i][4], 160, "%" PRIu64, r->done_txseq);
		else
			snprintf(cells[i][4], 160, "-");
		if (r->have_head)
			snprintf(cells[i][5], 160, "%" PRIu64, r->head_txseq);
		else
			snprintf(cells[i][5], 160, "-");
		status_lag(r, cells[i][6], 160);
		for (int c = 0; c < COLS - 1; c++)
			if (strlen(cells[i][c]) > width[c])
				width[c] = strlen(cells[i][c]);
	}
	for (int c = 0; c < COLS - 1; c++)
		printf("%-*s  ", (int)width[c], heads[c]);
	printf("%s\n", heads[COLS - 1]);
	for (size_t i = 0; i < n; i++) {
		for (int c = 0; c < COLS - 1; c++)
			printf("%-*s  ", (int)width[c], cells[i][c]);
		printf("%s\n", rows[i].health);
	}
	free(cells);
}

static void
status_print_json(const status_row *rows, size_t n, const char *listen, bool online)
{
	sluice_buf b = {0};
	sluice_buf_printf(&b, "{\"source\":\"%s\",\"endpoint\":", online ? "sluice run" : "stores");
	if (listen != NULL)
		sluice_json_append_string(&b, listen, strlen(listen));
	else
		sluice_buf_append_str(&b, "null");
	sluice_buf_append_str(&b, ",\"pipelines\":{");
	for (size_t i = 0; i < n; i++) {
		const status_row *r = &rows[i];
		sluice_buf_append_str(&b, i ? "," : "");
		sluice_json_append_string(&b, r->pl->name, strlen(r->pl->name));
		sluice_buf_printf(&b, ":{\"kind\":\"%s\",\"stream\":",
				  r->pl->kind == SLUICE_PIPELINE_CAPTURE ? "capture" : "apply");
		sluice_json_append_string(&b, r->pl->stream, strlen(r->pl->stream));
		sluice_buf_append_str(&b, ",\"state\":");
		sluice_json_append_string(&b, r->state, strlen(r->state));
		if (r->have_done)
			sluice_buf_printf(&b, ",\"position_txseq\":%" PRIu64, r->done_txseq);
		else
			sluice_buf_append_str(&b, ",\"position_txseq\":null");
		if (r->have_head)
			sluice_buf_printf(&b, ",\"head_txseq\":%" PRIu64, r->head_txseq);
		else
			sluice_buf_append_str(&b, ",\"head_txseq\":null");
		if (r->have_done && r->have_head)
			sluice_buf_printf(
				&b, ",\"lag_transactions\":%" PRIu64,
				r->head_txseq > r->done_txseq ? r->head_txseq - r->done_txseq : 0);
		else
			sluice_buf_append_str(&b, ",\"lag_transactions\":null");
		if (r->lag_seconds >= 0)
			sluice_buf_printf(&b, ",\"lag_seconds\":%.3f", r->lag_seconds);
		else
			sluice_buf_append_str(&b, ",\"lag_seconds\":null");
		if (r->have_slot) {
			char lsn[32];
			cli_format_lsn(r->slot_lsn, lsn, sizeof(lsn));
			sluice_buf_printf(&b, ",\"slot_confirmed_lsn\":\"%s\"", lsn);
			if (r->wal_behind >= 0)
				sluice_buf_printf(&b, ",\"slot_wal_behind_bytes\":%" PRId64,
						  r->wal_behind);
		}
		sluice_buf_printf(&b, ",\"healthy\":%s,\"health\":", r->healthy ? "true" : "false");
		sluice_json_append_string(&b, r->health, strlen(r->health));
		sluice_buf_append_str(&b, "}");
	}
	sluice_buf_append_str(&b, "}}\n");
	fwrite(b.data, 1, b.len, stdout);
	sluice_buf_free(&b);
}

/* status_load reads and checks the configuration; problems go to stderr. */
static sluice_config *
status_load(const char *path)
{
	sluice_buf text = {0}, errors = {0};
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		sluice_log_error("could not open configuration \"%s\": %m", path);
		return NULL;
	}
	char chunk[8192];
	size_t got;
	while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
		sluice_buf_append(&text, chunk, got);
	bool read_ok = !ferror(f);
	fclose(f);
	sluice_config *c = NULL;
	if (!read_ok) {
		sluice_log_error("could not read configuration \"%s\"", path);
	} else {
		size_t nerrors = 0;
		c = sluice_config_parse(path, text.data ? (const char *)text.data : "", text.len,
					&errors, &nerrors);
		if (c == NULL)
			fwrite(errors.data, 1, errors.len, stderr);
	}
	sluice_buf_free(&text);
	sluice_buf_free(&errors);
	return c;
}

int
cmd_status(int argc, char **argv)
{
	enum { OPT_JSON = 1000, OPT_OFFLINE, OPT_LISTEN };
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"json", no_argument, NULL, OPT_JSON},
		{"offline", no_argument, NULL, OPT_OFFLINE},
		{"listen", required_argument, NULL, OPT_LISTEN},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *path = NULL, *listen = NULL;
	bool json = false, offline = false;
	int c;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case OPT_JSON:
			json = true;
			break;
		case OPT_OFFLINE:
			offline = true;
			break;
		case OPT_LISTEN:
			listen = optarg;
			break;
		case 'h':
			status_help(stdout);
			return SLUICE_EXIT_OK;
		default:
			return cli_usage_error("status", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("status", "unexpected argument \"%s\"", argv[optind]);
	if (path == NULL)
		return cli_usage_error("status", "--config is required");
	if (offline && listen != NULL)
		return cli_usage_error("status", "--offline and --listen exclude each other");
	sluice_config *cfg = status_load(path);
	if (cfg == NULL)
		return SLUICE_EXIT_USAGE;
	if (listen == NULL)
		listen = cfg->listen;
	status_row *rows = calloc(cfg->npipelines ? cfg->npipelines : 1, sizeof(*rows));
	if (rows == NULL)
		abort();
	for (size_t i = 0; i < cfg->npipelines; i++)
		rows[i].pl = &cfg->pipelines[i];
	int rc = SLUICE_EXIT_FAILURE;
	sluice_buf body = {0};
	int answered = 0;
	if (!offline && listen != NULL)
		answered = status_fetch(listen, &body);
	char source[400];
	if (answered < 0)
		goto cleanup;
	if (answered > 0) {
		if (!status_from_endpoint(&body, rows, cfg->npipelines))
			goto cleanup;
		snprintf(source, sizeof(source), "from sluice run at %s", listen);
		rc = SLUICE_EXIT_OK;
		for (size_t i = 0; i < cfg->npipelines; i++)
			if (!rows[i].healthy)
				rc = STATUS_EXIT_NOT_READY;
	} else {
		if (offline || listen == NULL)
			snprintf(source, sizeof(source), "read from the stores and databases%s",
				 offline ? " (--offline)" : " (the configuration has no listen)");
		else
			snprintf(source, sizeof(source),
				 "sluice run does not answer at %s: read from the stores and "
				 "databases",
				 listen);
		rc = STATUS_EXIT_OFFLINE;
		for (size_t i = 0; i < cfg->npipelines; i++)
			if (!status_offline_one(cfg, &rows[i]))
				rc = SLUICE_EXIT_FAILURE;
	}
	if (json)
		status_print_json(rows, cfg->npipelines, listen, answered > 0);
	else
		status_print_table(rows, cfg->npipelines, source);

cleanup:
	sluice_buf_free(&body);
	free(rows);
	sluice_config_free(cfg);
	return rc;
}
