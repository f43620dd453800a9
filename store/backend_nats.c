/* NATS JetStream store backend: nats://HOSTS/JSSTREAM, one message per frame (libnats). */
#include "backend_nats.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "buf.h"
#include "clock.h"
#include "frame.h"
#include "log.h"
#include "query.h"
#include "natslog.h"

/* Publishing is retried (leader elections, a server restarting) for this long. */
#define NATS_RETRY_MS 120000
/* Catching up with the stream's last message at first use may take this long. */
#define NATS_SYNC_MS 60000
/* Room left in a message for its headers under the server's max_payload. */
#define NATS_HEADER_ROOM 1024
/*
 * A writer is presumed alive while its subject received a message this
 * recently (capture writes a heartbeat every 10 s by default while idle).
 */
#define NATS_WRITER_QUIET_S 30
/* Default JetStream de-duplication window when sluice creates the stream (seconds). */
#define NATS_DEDUP_DEFAULT_S 120

typedef struct nats_store nats_store;

/* One sluice stream of the JetStream stream: its model and its consumer. */
typedef struct nats_stream {
	nats_store *store;        /* borrowed: the owner */
	char *name;               /* owned */
	char *subject;            /* owned: PREFIX.<name>.frames */
	sluice_natslog *log;      /* owned */
	natsSubscription *sub;    /* owned; NULL for a writer (its own publishes update log) */
	bool writer;              /* holds the stream: publishes with expected sequences */
	bool reported;            /* the model's problem was logged */
	uint64_t start_seq;       /* stream sequence the consumer started at (0: the first) */
	struct nats_stream *next; /* owned: the next in the store's list */
} nats_stream;

struct nats_store {
	natsConnection *nc;   /* owned */
	jsCtx *js;            /* owned */
	char *jsstream;       /* owned: the JetStream stream's name */
	char *prefix;         /* owned: subject prefix ("sluice") */
	char *shown;          /* owned: nats://HOSTS/JSSTREAM for messages, no credentials */
	size_t max_piece;     /* bytes of segment in one message */
	nats_stream *streams; /* owned */
};

typedef struct nats_segment {
	nats_stream *st; /* borrowed */
	uint64_t first;
	bool writable;
} nats_segment;

typedef struct nats_watch {
	nats_stream *st; /* borrowed */
} nats_watch;

/* Connections share libnats; it is closed with the last one. */
static int nats_open_count;

/* nats_query_int reads a non-negative integer parameter (absent: *out unchanged). */
static bool
nats_query_int(const char *query, const char *name, int64_t max, int64_t *out)
{
	char val[64];
	if (!sluice_store_query_param(query, name, val, sizeof(val)))
		return true;
	char *end = NULL;
	errno = 0;
	long long v = strtoll(val, &end, 10);
	if (errno != 0 || end == val || *end != '\0' || v < 0 || v > max) {
		sluice_log_error(
			"invalid NATS store option %s=\"%s\": expected an integer from 0 to "
			"%" PRId64,
			name, val, max);
		return false;
	}
	*out = v;
	return true;
}

/* nats_valid_name accepts a JetStream stream name or subject token: [A-Za-z0-9_-]{1,64}. */
static bool
nats_valid_name(const char *s, size_t max)
{
	size_t len = strlen(s);
	if (len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* nats_last_error describes the last libnats failure of this thread. */
static const char *
nats_last_error(natsStatus s)
{
	natsStatus last = NATS_OK;
	const char *text = nats_GetLastError(&last);
	return text != NULL && text[0] != '\0' ? text : natsStatus_GetText(s);
}

/*
 * nats_retryable: a failure a server restart or a leader election explains
 * (timeouts, no responders while a stream has no leader, a connection being
 * re-established, JetStream "temporarily unavailable"); not a definite answer
 * of the JetStream API (wrong last sequence, too large, no such stream).
 */
static bool
nats_retryable(natsStatus s, jsErrCode jerr)
{
	if (jerr == JSClusterNotAvailErr || (jerr > 0 && jerr < 1000)) /* 503, 408 */
		return true;
	/* libnats reports no responders as JSNotEnabledErr: a stream without a leader */
	if (s == NATS_NO_RESPONDERS)
		return true;
	if (jerr != 0)
		return false;
	return s != NATS_INVALID_ARG && s != NATS_NOT_PERMITTED && s != NATS_MAX_PAYLOAD &&
	       s != NATS_CONNECTION_CLOSED && s != NATS_ILLEGAL_STATE;
}

static void
nats_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* nats_build_servers turns "h1:p1,h2:p2" into URLs (owned array of owned strings). */
static bool
nats_build_servers(const char *hosts, bool tls, char ***urls, int *n)
{
	const char *list = hosts;
	if (list[0] == '\0') {
		list = getenv("NATS_URL");
		if (list == NULL || list[0] == '\0') {
			sluice_log_error(
				"NATS store names no server: use nats://HOST:PORT/JSSTREAM or "
				"set NATS_URL");
			return false;
		}
	}
	int cap = 1;
	for (const char *p = list; *p; p++)
		cap += *p == ',';
	char **out = calloc((size_t)cap, sizeof(*out));
	if (out == NULL)
		abort();
	int count = 0;
	const char *p = list;
	while (*p != '\0' && count < cap) {
		size_t len = strcspn(p, ",");
		if (len > 0) {
			bool has_scheme = memmem(p, len, "://", 3) != NULL;
			size_t sz = len + 16;
			out[count] = malloc(sz);
			if (out[count] == NULL)
				abort();
			snprintf(out[count], sz, "%s%.*s",
				 has_scheme ? "" : (tls ? "tls://" : "nats://"), (int)len, p);
			count++;
		}
		p += len;
		if (*p == ',')
			p++;
	}
	if (count == 0) {
		free(out);
		sluice_log_error("NATS store names no server");
		return false;
	}
	*urls = out;
	*n = count;
	return true;
}

/* nats_shown_hosts copies hosts without user:password@ or token@ (for messages). */
static void
nats_shown_hosts(const char *hosts, sluice_buf *out)
{
	const char *p = hosts;
	while (*p != '\0') {
		size_t len = strcspn(p, ",");
		const char *start = p;
		for (size_t i = 0; i < len; i++)
			if (p[i] == '@' || (i + 3 <= len && memcmp(p + i, "://", 3) == 0))
				start = p + i + (p[i] == '@' ? 1 : 3);
		sluice_buf_append(out, start, len - (size_t)(start - p));
		p += len;
		if (*p == ',') {
			sluice_buf_append_byte(out, ',');
			p++;
		}
	}
}

/* nats_ensure_jsstream checks that the JetStream stream exists, creating it if asked. */
static bool
nats_ensure_jsstream(nats_store *ns, const char *query, bool create)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = NATS_OK;
	for (int attempt = 0;; attempt++) {
		jerr = 0;
		s = js_GetStreamInfo(&si, ns->js, ns->jsstream, NULL, &jerr);
		if (s == NATS_OK || !nats_retryable(s, jerr) || attempt >= 10)
			break;
		nats_sleep_ms(sluice_backoff_ms(attempt + 1, 100, 2000));
	}
	if (s == NATS_OK) {
		jsStreamInfo_Destroy(si);
		return true;
	}
	if (s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
		sluice_log_error("could not get JetStream stream \"%s\" on %s: %s", ns->jsstream,
				 ns->shown, nats_last_error(s));
		return false;
	}
	if (!create) {
		sluice_log_error("JetStream stream \"%s\" does not exist on %s; create it with "
				 "\"sluice capture --create --store %s ...\" (or ?create=1 in the "
				 "store URI; options replicas=N, max_age=SECONDS, max_bytes=N)",
				 ns->jsstream, ns->shown, ns->shown);
		return false;
	}
	int64_t replicas = 1, max_age = 0, max_bytes = 0, dedup = NATS_DEDUP_DEFAULT_S;
	if (!nats_query_int(query, "replicas", 5, &replicas) ||
	    !nats_query_int(query, "max_age", INT64_MAX / 1000000000, &max_age) ||
	    !nats_query_int(query, "max_bytes", INT64_MAX, &max_bytes) ||
	    !nats_query_int(query, "dedup_window", INT64_MAX / 1000000000, &dedup))
		return false;
	char subjects[160];
	snprintf(subjects, sizeof(subjects), "%s.>", ns->prefix);
	const char *subj[] = {subjects};
	jsStreamConfig cfg;
	jsStreamConfig_Init(&cfg);
	cfg.Name = ns->jsstream;
	cfg.Subjects = subj;
	cfg.SubjectsLen = 1;
	cfg.Storage = js_FileStorage;
	cfg.Retention = js_LimitsPolicy;
	cfg.Replicas = replicas > 0 ? replicas : 1;
	cfg.MaxAge = max_age * 1000000000LL;
	cfg.MaxBytes = max_bytes > 0 ? max_bytes : -1;
	cfg.Duplicates = dedup * 1000000000LL;
	cfg.Discard = js_DiscardNew; /* a full stream refuses frames rather than losing old ones */
	cfg.DenyDelete = true;       /* published frames are written once */
	cfg.DenyPurge = true;
	cfg.AllowDirect = true;
	jerr = 0;
	s = js_AddStream(&si, ns->js, &cfg, NULL, &jerr);
	if (s != NATS_OK && jerr != JSStreamNameExistErr) {
		sluice_log_error("could not create JetStream stream \"%s\" on %s: %s", ns->jsstream,
				 ns->shown, nats_last_error(s));
		return false;
	}
	jsStreamInfo_Destroy(si);
	sluice_log_info("created JetStream stream \"%s\" on %s (subjects %s, %" PRId64 " "
			"replicas)",
			ns->jsstream, ns->shown, subjects, cfg.Replicas);
	return true;
}

static void nats_close(void *state);

static bool
nats_open(const char *location, const sluice_store_options *options, void **state,
	  sluice_store_caps *caps)
{
	bool ok = false;
	natsOptions *opts = NULL;
	char **urls = NULL;
	int nurls = 0;
	char *loc = strdup(location);
	if (loc == NULL)
		abort();
	nats_store *ns = calloc(1, sizeof(*ns));
	if (ns == NULL)
		abort();
	nats_open_count++;

	char *query = strchr(loc, '?');
	if (query != NULL)
		*query++ = '\0';
	else
		query = loc + strlen(loc);
	char *slash = strchr(loc, '/');
	if (slash == NULL || !nats_valid_name(slash + 1, 64)) {
		/* not named: the hosts may carry user:password@ */
		sluice_log_error("invalid NATS store: use nats://HOST:PORT[,HOST:PORT...]/JSSTREAM "
				 "(a JetStream stream name: letters, digits, '_', '-')");
		goto cleanup;
	}
	*slash = '\0';
	const char *hosts = loc;
	ns->jsstream = strdup(slash + 1);
	char val[1024];
	ns->prefix = strdup(
		sluice_store_query_param(query, "subjects", val, sizeof(val)) ? val : "sluice");
	if (ns->jsstream == NULL || ns->prefix == NULL)
		abort();
	if (!nats_valid_name(ns->prefix, 64)) {
		sluice_log_error("invalid NATS subject prefix \"%s\": letters, digits, '_', '-'",
				 ns->prefix);
		goto cleanup;
	}
	sluice_buf shown = {0};
	sluice_buf_append_str(&shown, "nats://");
	nats_shown_hosts(hosts[0] ? hosts : (getenv("NATS_URL") ? getenv("NATS_URL") : ""), &shown);
	sluice_buf_printf(&shown, "/%s", ns->jsstream);
	sluice_buf_append_byte(&shown, '\0');
	ns->shown = (char *)shown.data;

	bool tls =
		sluice_store_query_param(query, "tls", val, sizeof(val)) && strcmp(val, "0") != 0;
	if (!nats_build_servers(hosts, tls, &urls, &nurls))
		goto cleanup;
	natsStatus s = natsOptions_Create(&opts);
	if (s == NATS_OK)
		s = natsOptions_SetServers(opts, (const char **)urls, nurls);
	if (s == NATS_OK)
		s = natsOptions_SetName(opts, "sluice");
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(opts, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(opts, 250);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(opts, 5000);
	if (s == NATS_OK && tls)
		s = natsOptions_SetSecure(opts, true);
	if (s == NATS_OK && sluice_store_query_param(query, "ca", val, sizeof(val)))
		s = natsOptions_LoadCATrustedCertificates(opts, val);
	if (s == NATS_OK && sluice_store_query_param(query, "cert", val, sizeof(val))) {
		char key[1024];
		if (!sluice_store_query_param(query, "key", key, sizeof(key))) {
			sluice_log_error(
				"NATS store option cert= needs key= (the client key file)");
			goto cleanup;
		}
		s = natsOptions_LoadCertificatesChain(opts, val, key);
	}
	if (s == NATS_OK && sluice_store_query_param(query, "creds", val, sizeof(val)))
		s = natsOptions_SetUserCredentialsFromFiles(opts, val, NULL);
	else if (s == NATS_OK && getenv("NATS_CREDS") != NULL && getenv("NATS_CREDS")[0] != '\0')
		s = natsOptions_SetUserCredentialsFromFiles(opts, getenv("NATS_CREDS"), NULL);
	if (s == NATS_OK && sluice_store_query_param(query, "nkey", val, sizeof(val))) {
		char seed[1024];
		if (!sluice_store_query_param(query, "seed", seed, sizeof(seed))) {
			sluice_log_error("NATS store option nkey=PUBLIC needs seed=FILE");
			goto cleanup;
		}
		s = natsOptions_SetNKeyFromSeed(opts, val, seed);
	}
	if (s == NATS_OK && getenv("NATS_TOKEN") != NULL && getenv("NATS_TOKEN")[0] != '\0')
		s = natsOptions_SetToken(opts, getenv("NATS_TOKEN"));
	if (s != NATS_OK) {
		sluice_log_error("invalid NATS options for %s: %s", ns->shown, nats_last_error(s));
		goto cleanup;
	}
	s = natsConnection_Connect(&ns->nc, opts);
	if (s != NATS_OK) {
		sluice_log_error("could not connect to NATS %s: %s", ns->shown, nats_last_error(s));
		goto cleanup;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = 5000;
	s = natsConnection_JetStream(&ns->js, ns->nc, &jo);
	if (s != NATS_OK) {
		sluice_log_error("could not use JetStream on %s: %s", ns->shown,
				 nats_last_error(s));
		goto cleanup;
	}
	int64_t maxp = natsConnection_GetMaxPayload(ns->nc);
	if (maxp <= NATS_HEADER_ROOM * 2) {
		sluice_log_error("NATS server %s allows messages of %" PRId64 " bytes only",
				 ns->shown, maxp);
		goto cleanup;
	}
	ns->max_piece = (size_t)(maxp - NATS_HEADER_ROOM);
	bool create =
		options->create || (sluice_store_query_param(query, "create", val, sizeof(val)) &&
				    strcmp(val, "0") != 0);
	if (!nats_ensure_jsstream(ns, query, create))
		goto cleanup;

	caps->append_visible = true; /* a frame is readable once JetStream acknowledged it */
	caps->watch = true;          /* readers are pushed new messages */
	caps->durable_write = true;  /* a write returns once JetStream acknowledged every frame */
	caps->cheap_list = true;     /* the listing comes from the replayed model */
	caps->max_chunk = 4 * 1024 * 1024;
	*state = ns;
	ns = NULL;
	ok = true;

cleanup:
	for (int i = 0; i < nurls; i++)
		free(urls[i]);
	free(urls);
	natsOptions_Destroy(opts);
	free(loc);
	if (ns != NULL)
		nats_close(ns);
	return ok;
}

static void
nats_stream_free(nats_stream *st)
{
	if (st->start_seq > 0)
		sluice_log_info("stream \"%s\" in %s: %" PRIu64 " messages replayed from stream "
				"sequence %" PRIu64 " (%" PRIu64
				" of earlier segments passed over)",
				st->name, st->store->shown, sluice_natslog_applied(st->log),
				st->start_seq, sluice_natslog_skipped(st->log));
	if (st->sub != NULL) {
		natsSubscription_Unsubscribe(st->sub);
		natsSubscription_Destroy(st->sub);
	}
	sluice_natslog_free(st->log);
	free(st->name);
	free(st->subject);
	free(st);
}

static void
nats_close(void *state)
{
	nats_store *ns = state;
	if (ns == NULL)
		return;
	while (ns->streams != NULL) {
		nats_stream *st = ns->streams;
		ns->streams = st->next;
		nats_stream_free(st);
	}
	jsCtx_Destroy(ns->js);
	if (ns->nc != NULL) {
		natsConnection_FlushTimeout(ns->nc, 2000);
		natsConnection_Close(ns->nc);
		natsConnection_Destroy(ns->nc);
	}
	free(ns->jsstream);
	free(ns->prefix);
	free(ns->shown);
	free(ns);
	if (--nats_open_count == 0)
		nats_CloseAndWait(2000);
}

/* nats_msg_seq: the stream sequence of a message from a consumer or a direct get. */
static bool
nats_msg_seq(natsMsg *msg, uint64_t *seq)
{
	uint64_t direct = natsMsg_GetSequence(msg);
	if (direct != 0) {
		*seq = direct;
		return true;
	}
	jsMsgMetaData *meta = NULL;
	if (natsMsg_GetMetaData(&meta, msg) != NATS_OK)
		return false;
	*seq = meta->Sequence.Stream;
	jsMsgMetaData_Destroy(meta);
	return true;
}

static const char *
nats_header(natsMsg *msg, const char *key)
{
	const char *v = NULL;
	return natsMsgHeader_Get(msg, key, &v) == NATS_OK ? v : NULL;
}

/* nats_msg_decode reads a message's sluice headers. */
static sluice_natslog_status
nats_msg_decode(natsMsg *msg, sluice_natslog_msg *out)
{
	return sluice_natslog_parse(nats_header(msg, SLUICE_NATSLOG_HDR_SEGMENT),
				    nats_header(msg, SLUICE_NATSLOG_HDR_OFFSET),
				    nats_header(msg, SLUICE_NATSLOG_HDR_TRUNCATE),
				    nats_header(msg, SLUICE_NATSLOG_HDR_REMOVE), out);
}

/* nats_take replays one delivered message into the stream's model. */
static void
nats_take(nats_stream *st, natsMsg *msg)
{
	uint64_t seq = 0;
	if (!nats_msg_seq(msg, &seq)) {
		natsMsg_Destroy(msg);
		return; /* not a stream message (a status the library left us) */
	}
	sluice_natslog_msg m;
	sluice_natslog_status rc = nats_msg_decode(msg, &m);
	if (rc != SLUICE_NATSLOG_OK) {
		if (seq > sluice_natslog_last_seq(st->log))
			sluice_natslog_break(st->log, seq, rc);
	} else {
		sluice_natslog_apply(st->log, seq, &m, natsMsg_GetData(msg),
				     (size_t)natsMsg_GetDataLength(msg));
	}
	natsMsg_Destroy(msg);
}

/* nats_check logs the model's problem (once per stream handle) and says whether it has one. */
static bool
nats_check(nats_stream *st)
{
	uint64_t seq = 0;
	sluice_natslog_status p = sluice_natslog_problem(st->log, &seq);
	if (p == SLUICE_NATSLOG_OK)
		return true;
	sluice_log_error("stream \"%s\" in %s: message at stream sequence %" PRIu64 " on %s: %s",
			 st->name, st->store->shown, seq, st->subject, sluice_natslog_strerror(p));
	st->reported = true;
	return false;
}

/* nats_drain replays the messages already delivered, without waiting. */
static void
nats_drain(nats_stream *st)
{
	if (st->sub == NULL)
		return;
	for (;;) {
		natsMsg *msg = NULL;
		if (natsSubscription_NextMsg(&msg, st->sub, 0) != NATS_OK)
			return;
		nats_take(st, msg);
	}
}

/* nats_fetch gets one message again by stream sequence (bytes dropped from memory). */
static bool
nats_fetch(void *ctx, uint64_t seq, uint64_t segment, uint64_t offset, sluice_buf *out)
{
	nats_stream *st = ctx;
	natsMsg *msg = NULL;
	jsErrCode jerr = 0;
	natsStatus s = NATS_OK;
	for (int attempt = 0;; attempt++) {
		s = js_GetMsg(&msg, st->store->js, st->store->jsstream, seq, NULL, &jerr);
		if (s == NATS_OK || !nats_retryable(s, jerr) || attempt >= 20)
			break;
		nats_sleep_ms(sluice_backoff_ms(attempt + 1, 50, 1000));
	}
	if (s != NATS_OK) {
		sluice_log_error("could not get message %" PRIu64 " of JetStream stream \"%s\" on "
				 "%s: %s",
				 seq, st->store->jsstream, st->store->shown, nats_last_error(s));
		return false;
	}
	sluice_natslog_msg m;
	bool ok = strcmp(natsMsg_GetSubject(msg), st->subject) == 0 &&
		  nats_msg_decode(msg, &m) == SLUICE_NATSLOG_OK && m.kind == SLUICE_NATSLOG_BYTES &&
		  m.segment == segment && m.value == offset;
	if (ok)
		sluice_buf_append(out, natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg));
	else
		sluice_log_error("message %" PRIu64
				 " of JetStream stream \"%s\" on %s changed since "
				 "it was read",
				 seq, st->store->jsstream, st->store->shown);
	natsMsg_Destroy(msg);
	return ok;
}

/*
 * nats_last_subject_msg: the stream sequence of the last message on subject
 * (0: none), its message id and when the server stored it (time_ns: wall
 * clock nanoseconds, optional).
 */
static bool
nats_last_subject_msg(nats_stream *st, uint64_t *seq, char *msgid, size_t cap, int64_t *time_ns)
{
	natsMsg *msg = NULL;
	jsErrCode jerr = 0;
	natsStatus s = NATS_OK;
	for (int attempt = 0;; attempt++) {
		jerr = 0;
		s = js_GetLastMsg(&msg, st->store->js, st->store->jsstream, st->subject, NULL,
				  &jerr);
		if (s == NATS_OK || !nats_retryable(s, jerr) || attempt >= 20)
			break;
		nats_sleep_ms(sluice_backoff_ms(attempt + 1, 50, 1000));
	}
	if (msgid != NULL && cap > 0)
		msgid[0] = '\0';
	if (time_ns != NULL)
		*time_ns = 0;
	if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
		*seq = 0;
		return true;
	}
	if (s != NATS_OK) {
		sluice_log_error(
			"could not get the last message on %s of JetStream stream \"%s\" on "
			"%s: %s",
			st->subject, st->store->jsstream, st->store->shown, nats_last_error(s));
		return false;
	}
	*seq = natsMsg_GetSequence(msg);
	if (time_ns != NULL)
		*time_ns = natsMsg_GetTime(msg);
	const char *id = nats_header(msg, "Nats-Msg-Id");
	if (msgid != NULL && id != NULL)
		snprintf(msgid, cap, "%s", id);
	natsMsg_Destroy(msg);
	return true;
}

static bool
nats_last_subject_seq(nats_stream *st, uint64_t *seq, char *msgid, size_t cap)
{
	return nats_last_subject_msg(st, seq, msgid, cap, NULL);
}

/* nats_last_age_s: seconds since the last message on the stream's subject (-1: none). */
static bool
nats_last_age_s(nats_stream *st, int64_t *age_s)
{
	uint64_t seq = 0;
	int64_t t = 0;
	if (!nats_last_subject_msg(st, &seq, NULL, 0, &t))
		return false;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
	*age_s = seq == 0 || t <= 0 ? -1 : (now_ns > t ? (now_ns - t) / 1000000000LL : 0);
	return true;
}

/*
 * nats_next_on_subject finds the first message on the stream's subject at
 * or after stream sequence seq (a direct get): 1 with its sequence and
 * segment, 0 when there is none, -1 when it could not be read or is not a
 * sluice message (quietly: the caller then replays from the start).
 */
static int
nats_next_on_subject(nats_stream *st, uint64_t seq, uint64_t *found, uint64_t *segment)
{
	jsDirectGetMsgOptions dg;
	jsDirectGetMsgOptions_Init(&dg);
	dg.Sequence = seq;
	dg.NextBySubject = st->subject;
	natsMsg *msg = NULL;
	natsStatus s = NATS_OK;
	for (int attempt = 0;; attempt++) {
		s = js_DirectGetMsg(&msg, st->store->js, st->store->jsstream, NULL, &dg);
		if (s == NATS_OK || s == NATS_NOT_FOUND || !nats_retryable(s, 0) || attempt >= 5)
			break;
		nats_sleep_ms(sluice_backoff_ms(attempt + 1, 50, 1000));
	}
	if (s == NATS_NOT_FOUND)
		return 0;
	if (s != NATS_OK)
		return -1;
	sluice_natslog_msg m;
	int rc = -1;
	uint64_t at = 0;
	if (nats_msg_seq(msg, &at) && at >= seq && nats_msg_decode(msg, &m) == SLUICE_NATSLOG_OK) {
		*found = at;
		*segment = m.segment;
		rc = 1;
	}
	natsMsg_Destroy(msg);
	return rc;
}

/*
 * nats_start_seq finds where a reader of the segment holding from_txseq
 * starts: the first message of the last segment named at or before
 * from_txseq. Segments are written in ascending order, so two binary
 * searches over stream sequences with direct-get requests (next message on
 * the subject) find it in about 2 log2(messages) requests. The messages are
 * untrusted: a stream that is not in order only moves where the replay
 * starts, and what is read from there is verified as always. false: start
 * at the stream's first message.
 */
static bool
nats_start_seq(nats_stream *st, uint64_t from_txseq, uint64_t *start, uint64_t *segment,
	       int *lookups)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	if (js_GetStreamInfo(&si, st->store->js, st->store->jsstream, NULL, &jerr) != NATS_OK)
		return false;
	bool direct = si->Config != NULL && (si->Config->AllowDirect || si->Config->MirrorDirect);
	uint64_t first = si->State.FirstSeq > 0 ? si->State.FirstSeq : 1;
	jsStreamInfo_Destroy(si);
	uint64_t last = 0;
	if (!direct) {
		sluice_log_info("JetStream stream \"%s\" on %s does not allow direct gets: "
				"stream \"%s\" is replayed from its first message",
				st->store->jsstream, st->store->shown, st->name);
		return false;
	}
	if (!nats_last_subject_seq(st, &last, NULL, 0) || last < first)
		return false;
	*lookups = 0;
	/* The first sequence p whose next message names a segment after from_txseq. */
	uint64_t lo = first, hi = last + 1, at = 0, seg = 0;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		int rc = nats_next_on_subject(st, mid, &at, &seg);
		(*lookups)++;
		if (rc < 0)
			return false;
		if (rc == 0 || seg > from_txseq)
			hi = mid;
		else
			lo = at + 1 < hi ? at + 1 : hi;
	}
	if (lo == first) /* no segment at or before from_txseq */
		return false;
	uint64_t want = 0;
	(*lookups)++;
	if (nats_next_on_subject(st, lo - 1, &at, &want) != 1 || want > from_txseq)
		return false;
	/* The first message naming that segment (or a later one). */
	hi = lo - 1;
	lo = first;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		int rc = nats_next_on_subject(st, mid, &at, &seg);
		(*lookups)++;
		if (rc < 0)
			return false;
		if (rc == 0 || seg >= want)
			hi = mid;
		else
			lo = at + 1 < hi ? at + 1 : hi;
	}
	(*lookups)++;
	if (nats_next_on_subject(st, lo, &at, &seg) != 1 || seg < want)
		return false;
	*start = at;
	*segment = want;
	return true;
}

/*
 * nats_subscribe starts the ordered consumer of the stream's subject from
 * stream sequence start_seq (0: its first message).
 */
static bool
nats_subscribe(nats_stream *st)
{
	jsSubOptions so;
	jsSubOptions_Init(&so);
	so.Stream = st->store->jsstream;
	so.Ordered = true;
	so.Config.DeliverPolicy = js_DeliverAll;
	if (st->start_seq > 0) {
		so.Config.DeliverPolicy = js_DeliverByStartSequence;
		so.Config.OptStartSeq = st->start_seq;
	}
	jsErrCode jerr = 0;
	natsStatus s = NATS_OK;
	for (int attempt = 0;; attempt++) {
		jerr = 0;
		s = js_SubscribeSync(&st->sub, st->store->js, st->subject, NULL, &so, &jerr);
		if (s == NATS_OK || !nats_retryable(s, jerr) || attempt >= 20)
			break;
		nats_sleep_ms(sluice_backoff_ms(attempt + 1, 50, 1000));
	}
	if (s != NATS_OK) {
		sluice_log_error("could not consume %s of JetStream stream \"%s\" on %s: %s",
				 st->subject, st->store->jsstream, st->store->shown,
				 nats_last_error(s));
		st->sub = NULL;
		return false;
	}
	natsSubscription_SetPendingLimits(st->sub, -1, 256 * 1024 * 1024);
	return true;
}

/*
 * nats_catch_up replays the stream up to the last message on its subject
 * as of now, so that a listing sees everything published before it.
 */
static bool
nats_catch_up(nats_stream *st)
{
	uint64_t last = 0;
	if (!nats_last_subject_seq(st, &last, NULL, 0))
		return false;
	int64_t deadline = sluice_clock_mono_ms() + NATS_SYNC_MS;
	while (sluice_natslog_last_seq(st->log) < last &&
	       sluice_natslog_problem(st->log, NULL) == SLUICE_NATSLOG_OK) {
		natsMsg *msg = NULL;
		natsStatus s = natsSubscription_NextMsg(&msg, st->sub, 1000);
		if (s == NATS_OK) {
			nats_take(st, msg);
			continue;
		}
		if (sluice_clock_mono_ms() > deadline) {
			sluice_log_error("stream \"%s\" in %s: read up to stream sequence %" PRIu64
					 " of %" PRIu64 " in %d s: %s",
					 st->name, st->store->shown,
					 sluice_natslog_last_seq(st->log), last,
					 NATS_SYNC_MS / 1000, nats_last_error(s));
			return false;
		}
	}
	return true;
}

/*
 * nats_stream_get_from finds or sets up the model of a sluice stream, caught
 * up; a new one replays from the segment holding from_txseq (0: all).
 */
static nats_stream *
nats_stream_get_from(nats_store *ns, const char *name, uint64_t from_txseq)
{
	for (nats_stream *st = ns->streams; st != NULL; st = st->next)
		if (strcmp(st->name, name) == 0) {
			nats_drain(st);
			return st;
		}
	/* A subject token may not be empty: no "..", no '.' at the end. */
	size_t len = strlen(name);
	if (len == 0 || name[len - 1] == '.' || strstr(name, "..") != NULL) {
		sluice_log_error("stream name \"%s\" cannot name a NATS subject (no \"..\" and no "
				 "'.' at the end)",
				 name);
		return NULL;
	}
	nats_stream *st = calloc(1, sizeof(*st));
	if (st == NULL)
		abort();
	st->store = ns;
	st->name = strdup(name);
	size_t cap = strlen(ns->prefix) + len + 16;
	st->subject = malloc(cap);
	if (st->name == NULL || st->subject == NULL)
		abort();
	snprintf(st->subject, cap, "%s.%s.frames", ns->prefix, name);
	st->log = sluice_natslog_create(nats_fetch, st);
	uint64_t segment = 0;
	int lookups = 0;
	if (from_txseq > 1 && nats_start_seq(st, from_txseq, &st->start_seq, &segment, &lookups)) {
		sluice_natslog_set_floor(st->log, segment);
		sluice_log_info("stream \"%s\" in %s: reading from stream sequence %" PRIu64
				" (segment %016" PRIx64 ".seg, holding txseq %" PRIu64
				"; found in %d lookups)",
				name, ns->shown, st->start_seq, segment, from_txseq, lookups);
	}
	if (!nats_subscribe(st) || !nats_catch_up(st)) {
		nats_stream_free(st);
		return NULL;
	}
	st->next = ns->streams;
	ns->streams = st;
	return st;
}

static nats_stream *
nats_stream_get(nats_store *ns, const char *name)
{
	return nats_stream_get_from(ns, name, 0);
}

static void
nats_read_from(void *state, const char *stream, uint64_t from_txseq)
{
	nats_store *ns = state;
	for (nats_stream *st = ns->streams; st != NULL; st = st->next)
		if (strcmp(st->name, stream) == 0)
			return;                       /* replayed already */
	nats_stream_get_from(ns, stream, from_txseq); /* a failure shows at the listing */
}

/* nats_msg_id names a message for JetStream's de-duplication: its place and its bytes. */
static void
nats_msg_id(const nats_stream *st, const sluice_natslog_msg *m, const void *data, size_t len,
	    char *out, size_t cap)
{
	uint8_t h[8];
	crypto_generichash(h, sizeof(h), data, len, NULL, 0);
	static const char kinds[] = "?btr";
	int n = snprintf(out, cap, "%s:%016" PRIx64 ":%c%" PRIu64 ":", st->name, m->segment,
			 kinds[m->kind], m->value);
	if (m->kind != SLUICE_NATSLOG_BYTES) /* a cut is told apart by where it happens */
		n += snprintf(out + n, cap - (size_t)n, "@%" PRIu64 ":",
			      sluice_natslog_last_seq(st->log));
	for (size_t i = 0; i < sizeof(h) && (size_t)n + 2 < cap; i++)
		n += snprintf(out + n, cap - (size_t)n, "%02x", h[i]);
}

/*
 * nats_publish publishes one message of the stream, expecting the last
 * message on the subject to be the last one this writer knows (a second
 * writer is fenced), and replays it into the model once JetStream has
 * acknowledged it. Failures a server restart or a leader election explains
 * are retried with the same message id, so that a message stored whose
 * acknowledgement was lost is not stored twice.
 */
static bool
nats_publish(nats_stream *st, const sluice_natslog_msg *m, const void *data, size_t len)
{
	nats_store *ns = st->store;
	char id[256], value[32], segment[17];
	nats_msg_id(st, m, data, len, id, sizeof(id));
	snprintf(segment, sizeof(segment), "%016" PRIx64, m->segment);
	snprintf(value, sizeof(value), "%" PRIu64, m->value);
	uint64_t expect = sluice_natslog_last_seq(st->log);
	natsMsg *msg = NULL;
	natsStatus s = natsMsg_Create(&msg, st->subject, NULL, data, (int)len);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, SLUICE_NATSLOG_HDR_SEGMENT, segment);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg,
				      m->kind == SLUICE_NATSLOG_BYTES ? SLUICE_NATSLOG_HDR_OFFSET
				      : m->kind == SLUICE_NATSLOG_TRUNCATE
					      ? SLUICE_NATSLOG_HDR_TRUNCATE
					      : SLUICE_NATSLOG_HDR_REMOVE,
				      m->kind == SLUICE_NATSLOG_REMOVE ? "1" : value);
	if (s != NATS_OK) {
		sluice_log_error("could not make a NATS message: %s", nats_last_error(s));
		natsMsg_Destroy(msg);
		return false;
	}
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MsgId = id;
	if (expect == 0)
		po.ExpectNoMessage = true;
	else
		po.ExpectLastSubjectSeq = expect;
	int64_t deadline = sluice_clock_mono_ms() + NATS_RETRY_MS;
	uint64_t seq = 0;
	bool ok = false;
	for (int attempt = 0;; attempt++) {
		jsPubAck *pa = NULL;
		jsErrCode jerr = 0;
		s = js_PublishMsg(&pa, ns->js, msg, &po, &jerr);
		if (s == NATS_OK) {
			seq = pa->Sequence;
			jsPubAck_Destroy(pa);
			ok = true;
			break;
		}
		if (jerr == JSStreamWrongLastSequenceErr) {
			/* Our own earlier attempt, stored after all? Else another writer. */
			char last_id[256];
			uint64_t last = 0;
			if (nats_last_subject_seq(st, &last, last_id, sizeof(last_id)) &&
			    strcmp(last_id, id) == 0 && last > expect) {
				seq = last;
				ok = true;
				break;
			}
			sluice_log_error(
				"stream \"%s\" in %s is being written by another writer: the "
				"last message on %s is %" PRIu64 ", this writer expected %" PRIu64
				" (a second capture of the stream?)",
				st->name, ns->shown, st->subject, last, expect);
			break;
		}
		if (!nats_retryable(s, jerr) || sluice_clock_mono_ms() > deadline) {
			sluice_log_error("could not publish to %s of JetStream stream \"%s\" on "
					 "%s: %s (status "
					 "%d, JetStream error %d)",
					 st->subject, ns->jsstream, ns->shown, nats_last_error(s),
					 (int)s, (int)jerr);
			break;
		}
		if (attempt == 0)
			sluice_log_warn("publishing to %s on %s: %s; retrying", st->subject,
					ns->shown, nats_last_error(s));
		nats_sleep_ms(sluice_backoff_ms(attempt + 1, 50, 1000));
	}
	natsMsg_Destroy(msg);
	if (!ok)
		return false;
	if (seq <= expect) {
		sluice_log_error("stream \"%s\" in %s: JetStream acknowledged message %" PRIu64
				 " as a duplicate of one before %" PRIu64,
				 st->name, ns->shown, seq, expect);
		return false;
	}
	if (sluice_natslog_apply(st->log, seq, m, data, len) != SLUICE_NATSLOG_OK)
		return nats_check(st);
	return true;
}

/* nats_publish_bytes publishes chunk (whole frames) at the end of segment first. */
static bool
nats_publish_bytes(nats_stream *st, uint64_t first, const uint8_t *chunk, size_t len)
{
	size_t pos = 0;
	while (pos < len) {
		/* One message per frame; a frame over the server's message limit goes in pieces. */
		size_t frame = len - pos;
		sluice_frame_header h;
		if (sluice_frame_parse_header(chunk + pos, len - pos, &h) == SLUICE_FRAME_OK &&
		    (uint64_t)SLUICE_FRAME_HEADER_SIZE + h.payload_len <= len - pos)
			frame = SLUICE_FRAME_HEADER_SIZE + (size_t)h.payload_len;
		size_t done = 0;
		while (done < frame) {
			size_t n = frame - done;
			if (n > st->store->max_piece)
				n = st->store->max_piece;
			uint64_t size = 0;
			sluice_natslog_size(st->log, first, &size);
			sluice_natslog_msg m = {SLUICE_NATSLOG_BYTES, first, size};
			if (!nats_publish(st, &m, chunk + pos + done, n))
				return false;
			done += n;
		}
		pos += frame;
	}
	return true;
}

static bool
nats_parse_name(const char *name, uint64_t *first)
{
	char hex[17];
	if (strlen(name) != 20 || strcmp(name + 16, ".seg") != 0)
		return false;
	memcpy(hex, name, 16);
	hex[16] = '\0';
	sluice_natslog_msg m;
	return sluice_natslog_parse(hex, "0", NULL, NULL, &m) == SLUICE_NATSLOG_OK &&
	       (*first = m.segment, true);
}

static bool
nats_list(void *state, const char *stream, uint64_t **firsts, size_t *n, size_t *strays)
{
	nats_stream *st = nats_stream_get(state, stream);
	if (st == NULL || !nats_check(st))
		return false;
	sluice_natslog_list(st->log, firsts, n);
	*strays = 0;
	return true;
}

static bool
nats_segment_probe(void *state, const char *stream, const char *name, bool *exists)
{
	uint64_t first = 0;
	nats_stream *st = nats_stream_get(state, stream);
	if (st == NULL || !nats_check(st) || !nats_parse_name(name, &first))
		return false;
	*exists = sluice_natslog_exists(st->log, first);
	return true;
}

static bool
nats_segment_open(void *state, const char *stream, const char *name, bool writable, void **seg)
{
	uint64_t first = 0;
	nats_stream *st = nats_stream_get(state, stream);
	if (st == NULL || !nats_check(st) || !nats_parse_name(name, &first))
		return false;
	if (!sluice_natslog_exists(st->log, first)) {
		sluice_log_error(
			"could not open segment %s of stream \"%s\" in %s: it does not exist", name,
			stream, st->store->shown);
		return false;
	}
	nats_segment *s = calloc(1, sizeof(*s));
	if (s == NULL)
		abort();
	s->st = st;
	s->first = first;
	s->writable = writable;
	sluice_natslog_pin(st->log, first);
	*seg = s;
	return true;
}

static bool
nats_segment_create(void *state, const char *stream, const char *name, void **seg)
{
	uint64_t first = 0;
	nats_stream *st = nats_stream_get(state, stream);
	if (st == NULL || !nats_check(st) || !nats_parse_name(name, &first))
		return false;
	if (sluice_natslog_add(st->log, first) != SLUICE_NATSLOG_OK) {
		sluice_log_error("could not create segment %s of stream \"%s\" in %s: it exists",
				 name, stream, st->store->shown);
		return false;
	}
	nats_segment *s = calloc(1, sizeof(*s));
	if (s == NULL)
		abort();
	s->st = st;
	s->first = first;
	s->writable = true;
	sluice_natslog_pin(st->log, first);
	*seg = s;
	return true;
}

static bool
nats_segment_put(void *state, const char *stream, const char *name, const void *data, size_t len)
{
	uint64_t first = 0;
	nats_stream *st = nats_stream_get(state, stream);
	if (st == NULL || !nats_check(st) || !nats_parse_name(name, &first))
		return false;
	if (sluice_natslog_exists(st->log, first)) {
		uint64_t size = 0;
		sluice_natslog_size(st->log, first, &size);
		bool same = size == len;
		uint8_t *have = malloc(len ? len : 1);
		if (have == NULL)
			abort();
		size_t got = 0;
		if (same) {
			sluice_natslog_pin(st->log, first);
			same = sluice_natslog_read(st->log, first, 0, have, len, &got) ==
				       SLUICE_NATSLOG_OK &&
			       got == len && memcmp(have, data, len) == 0;
			sluice_natslog_unpin(st->log, first);
		}
		free(have);
		if (!same)
			sluice_log_error("segment %s of stream \"%s\" in %s exists with other "
					 "contents; not replaced",
					 name, stream, st->store->shown);
		return same;
	}
	if (sluice_natslog_add(st->log, first) != SLUICE_NATSLOG_OK)
		return false;
	bool ok = nats_publish_bytes(st, first, data, len);
	if (!ok)
		sluice_natslog_drop(st->log, first);
	return ok;
}

static bool
nats_segment_remove(void *state, const char *stream, const char *name)
{
	uint64_t first = 0;
	nats_stream *st = nats_stream_get(state, stream);
	if (st == NULL || !nats_check(st) || !nats_parse_name(name, &first))
		return false;
	if (!sluice_natslog_published(st->log, first)) {
		sluice_natslog_drop(st->log, first);
		return true;
	}
	sluice_natslog_msg m = {SLUICE_NATSLOG_REMOVE, first, 0};
	return nats_publish(st, &m, NULL, 0);
}

static bool
nats_segment_size(void *seg, uint64_t *size)
{
	nats_segment *s = seg;
	nats_drain(s->st);
	if (!nats_check(s->st))
		return false;
	if (sluice_natslog_size(s->st->log, s->first, size) != SLUICE_NATSLOG_OK) {
		*size = 0; /* removed since it was opened: a reader sees it empty */
	}
	return true;
}

static bool
nats_segment_read(void *seg, uint64_t off, void *buf, size_t len, size_t *got)
{
	nats_segment *s = seg;
	if (!nats_check(s->st))
		return false;
	sluice_natslog_status rc = sluice_natslog_read(s->st->log, s->first, off, buf, len, got);
	if (rc == SLUICE_NATSLOG_E_MISSING) {
		*got = 0;
		return true;
	}
	if (rc != SLUICE_NATSLOG_OK) {
		sluice_log_error(
			"could not read segment %016" PRIx64 ".seg of stream \"%s\" in %s: %s",
			s->first, s->st->name, s->st->store->shown, sluice_natslog_strerror(rc));
		return false;
	}
	return true;
}

/* Every publish waits for JetStream's acknowledgement: a chunk is durable either way. */
static bool
nats_segment_write(void *seg, const void *chunk, size_t len, bool durable)
{
	(void)durable;
	nats_segment *s = seg;
	if (!s->writable) {
		sluice_log_error("segment %016" PRIx64 ".seg is not open for writing", s->first);
		return false;
	}
	if (len == 0)
		return true; /* a sync of earlier writes: those were acknowledged already */
	return nats_publish_bytes(s->st, s->first, chunk, len);
}

static bool
nats_segment_truncate(void *seg, uint64_t size)
{
	nats_segment *s = seg;
	uint64_t have = 0;
	if (sluice_natslog_size(s->st->log, s->first, &have) != SLUICE_NATSLOG_OK)
		return false;
	if (have == size)
		return true;
	sluice_natslog_msg m = {SLUICE_NATSLOG_TRUNCATE, s->first, size};
	return nats_publish(s->st, &m, NULL, 0);
}

static bool
nats_segment_seal(void *seg)
{
	(void)seg; /* every frame, the seal frame too, was acknowledged by JetStream when written */
	return true;
}

static void
nats_segment_close(void *seg)
{
	nats_segment *s = seg;
	if (s == NULL)
		return;
	sluice_natslog_unpin(s->st->log, s->first);
	free(s);
}

/*
 * nats_lock makes this store handle the stream's writer. There is no lock
 * to take: every publish expects the last message on the subject to be the
 * one this writer knows, so a second writer's first publish, or this one's
 * after it, fails. The consumer is stopped: from here the writer's own
 * publishes keep the model.
 */
static bool
nats_lock(void *state, const char *stream, void **lock)
{
	nats_stream *st = nats_stream_get(state, stream);
	if (st == NULL || !nats_check(st) || (st->sub != NULL && !nats_catch_up(st)) ||
	    !nats_check(st))
		return false;
	if (st->writer) {
		sluice_log_error("stream \"%s\" in %s is already being written by this process",
				 stream, st->store->shown);
		return false;
	}
	/*
	 * Fencing has no lease: a second writer is stopped at its first publish.
	 * A stream written to moments ago may have another writer (or be this
	 * writer's own, restarted after a crash): say so now.
	 */
	int64_t age = -1;
	if (nats_last_age_s(st, &age) && age >= 0 && age < NATS_WRITER_QUIET_S)
		sluice_log_warn("stream \"%s\" in %s received a message %" PRId64 " s ago: if "
				"another writer is still running, whichever publishes second is "
				"fenced (a restart after a crash is expected to see this)",
				stream, st->store->shown, age);
	if (st->sub != NULL) {
		natsSubscription_Unsubscribe(st->sub);
		natsSubscription_Destroy(st->sub);
		st->sub = NULL;
	}
	st->writer = true;
	*lock = st;
	return true;
}

static void
nats_unlock(void *lock)
{
	nats_stream *st = lock;
	if (st != NULL)
		st->writer = false;
}

/*
 * nats_lock_held (a standby asks): another writer is presumed to hold the
 * stream while its subject received a message in the last
 * NATS_WRITER_QUIET_S seconds (its heartbeats); a stream quiet longer, or
 * empty, is free. This process's own writer does not count.
 */
static bool
nats_lock_held(void *state, const char *stream, bool *held)
{
	nats_store *ns = state;
	for (nats_stream *st = ns->streams; st != NULL; st = st->next)
		if (strcmp(st->name, stream) == 0 && st->writer) {
			*held = false;
			return true;
		}
	size_t cap = strlen(ns->prefix) + strlen(stream) + 16;
	char *subject = malloc(cap);
	if (subject == NULL)
		abort();
	snprintf(subject, cap, "%s.%s.frames", ns->prefix, stream);
	nats_stream probe = {.store = ns, .name = (char *)stream, .subject = subject};
	int64_t age = -1;
	bool ok = nats_last_age_s(&probe, &age);
	free(subject);
	if (ok)
		*held = age >= 0 && age < NATS_WRITER_QUIET_S;
	return ok;
}

static bool
nats_watch_open(void *state, const char *stream, void **watch)
{
	nats_stream *st = nats_stream_get(state, stream);
	if (st == NULL || st->sub == NULL)
		return false;
	nats_watch *w = calloc(1, sizeof(*w));
	if (w == NULL)
		abort();
	w->st = st;
	*watch = w;
	return true;
}

static int
nats_watch_wait(void *watch, int timeout_ms)
{
	nats_watch *w = watch;
	natsMsg *msg = NULL;
	natsStatus s = natsSubscription_NextMsg(&msg, w->st->sub, timeout_ms > 0 ? timeout_ms : 0);
	if (s == NATS_OK) {
		nats_take(w->st, msg);
		nats_drain(w->st);
		return 1;
	}
	if (s == NATS_TIMEOUT)
		return 0;
	/* The connection is down: the library reconnects and the ordered consumer resumes. */
	nats_sleep_ms(timeout_ms > 200 ? 200 : (timeout_ms > 0 ? timeout_ms : 0));
	return 0;
}

static void
nats_watch_close(void *watch)
{
	free(watch);
}

const sluice_store_ops sluice_backend_nats_ops = {
	.scheme = "nats",
	.open = nats_open,
	.close = nats_close,
	.read_from = nats_read_from,
	.list = nats_list,
	.segment_probe = nats_segment_probe,
	.segment_open = nats_segment_open,
	.segment_create = nats_segment_create,
	.segment_put = nats_segment_put,
	.segment_remove = nats_segment_remove,
	.segment_size = nats_segment_size,
	.segment_read = nats_segment_read,
	.segment_write = nats_segment_write,
	.segment_truncate = nats_segment_truncate,
	.segment_seal = nats_segment_seal,
	.segment_close = nats_segment_close,
	.lock = nats_lock,
	.unlock = nats_unlock,
	.lock_held = nats_lock_held,
	.watch_open = nats_watch_open,
	.watch_wait = nats_watch_wait,
	.watch_close = nats_watch_close,
};
