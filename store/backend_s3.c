/* S3 store backend: one object per sealed segment, written once; the open segment in a spool. */
#include "backend_s3.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend_file.h"
#include "backoff.h"
#include "buf.h"
#include "clock.h"
#include "log.h"
#include "query.h"
#include "segname.h"
#include "s3xml.h"

/* The lease object that fences a second writer of a stream (see s3_lock_stream). */
#define S3_LEASE_NAME    ".writer.lease"
#define S3_LEASE_TTL_S   60
#define S3_LEASE_RENEW_S 20
/* A file in the spool naming this spool as a writer (its lease holder id). */
#define S3_SPOOL_ID_NAME ".sluice-writer-id"
/* Reads fetch at least this much per range GET (segments are immutable). */
#define S3_READ_WINDOW (8u * 1024 * 1024)
/* Sealed segments above this size go up in parts of S3_PART_SIZE. */
#define S3_MULTIPART_MIN (16u * 1024 * 1024)
#define S3_PART_SIZE     (8u * 1024 * 1024)
/* Responses other than object bodies are small: refuse anything larger. */
#define S3_MAX_SMALL_RESPONSE (4u * 1024 * 1024)
#define S3_MAX_KEY            1024

typedef struct s3_store {
	char *bucket;   /* owned */
	char *prefix;   /* owned: "" or ending in '/' */
	char *endpoint; /* owned: scheme://host[:port], no trailing '/' */
	char *region;   /* owned */
	bool path_style;
	char *userpwd; /* owned, secret: "ACCESS_KEY:SECRET_KEY", wiped on close */
	char *token;   /* owned, secret: "x-amz-security-token: …" header or NULL */
	char sigv4[96];
	CURL *curl; /* owned: one handle, so that connections are reused */
	int max_attempts;
	int max_keys;         /* ListObjectsV2 page size, 0: the server's (tests page with less) */
	size_t multipart_min; /* segments from this size up go in parts (tests: less) */
	size_t part_size;

	/* writing */
	void *spool;           /* owned by sluice_backend_file_ops, NULL without a spool */
	char *spool_dir;       /* owned */
	char holder[64];       /* this spool's writer id, the lease holder */
	int64_t lease_renewed; /* monotonic ms of the last lease write, 0: none held */
	char *lease_stream;    /* owned: the stream whose lease is held */
} s3_store;

typedef struct s3_segment {
	s3_store *st;
	void *file; /* owned by the file ops: the segment in the spool, or NULL */
	char key[S3_MAX_KEY];
	char stream[160];
	char name[SLUICE_SEGMENT_NAME_SIZE];
	uint64_t size; /* remote: the object's size */
	sluice_buf window;
	uint64_t window_off;
} s3_segment;

typedef struct s3_lock {
	s3_store *st;
	void *file_lock; /* owned by the file ops: the spool's lock */
} s3_lock;

/* One HTTP exchange. */
typedef struct s3_req {
	const char *method;
	const char *key;   /* object key, NULL for the bucket */
	const char *query; /* already encoded, or NULL */
	const void *body;
	size_t body_len;
	bool if_none_match;
	bool range;
	uint64_t range_off, range_len;
	sluice_buf *out; /* response body, may be NULL */
	size_t out_max;
	/* results */
	long status;
	char etag[128];
	uint64_t length; /* Content-Length of a HEAD answer */
	char code[64];   /* S3 error code from the body */
	sluice_buf err;  /* the body of an answer with no out buffer (an error's XML) */
} s3_req;

typedef enum s3_result {
	S3_OK,
	S3_NOT_FOUND,
	S3_PRECONDITION, /* 412: If-None-Match found the object */
	S3_CONFLICT,     /* 409: a concurrent conditional write */
	S3_FAILED,       /* logged */
} s3_result;

static bool s3_global_ready;
/* Store calls finish what they started: their waits are not cut short by signals. */
static const volatile sig_atomic_t s3_never_stop = 0;

static void s3_close_state(s3_store *st);

/* s3_strdup_n copies n bytes of s. */
static char *
s3_strdup_n(const char *s, size_t n)
{
	char *p = malloc(n + 1);
	if (p == NULL)
		abort();
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/* s3_read_profile reads the credentials of profile from an AWS credentials file. */
static void
s3_read_profile(const char *path, const char *profile, char *id, char *secret, char *token,
		size_t cap)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	char line[2048];
	bool in = false;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *s = line;
		while (*s == ' ' || *s == '\t')
			s++;
		s[strcspn(s, "\r\n")] = '\0';
		if (*s == '[') {
			char *e = strchr(s, ']');
			in = e != NULL && (size_t)(e - s - 1) == strlen(profile) &&
			     strncmp(s + 1, profile, strlen(profile)) == 0;
			continue;
		}
		if (!in || *s == '#' || *s == ';')
			continue;
		char *eq = strchr(s, '=');
		if (eq == NULL)
			continue;
		char *k = s, *v = eq + 1;
		char *ke = eq;
		while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
			ke--;
		*ke = '\0';
		while (*v == ' ' || *v == '\t')
			v++;
		size_t vl = strlen(v);
		while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			v[--vl] = '\0';
		char *dst = strcmp(k, "aws_access_key_id") == 0       ? id
			    : strcmp(k, "aws_secret_access_key") == 0 ? secret
			    : strcmp(k, "aws_session_token") == 0     ? token
								      : NULL;
		if (dst != NULL && vl < cap)
			memcpy(dst, v, vl + 1);
	}
	sodium_memzero(line, sizeof(line));
	fclose(f);
}

/* s3_credentials finds credentials: the environment, then ~/.aws/credentials. */
static bool
s3_credentials(s3_store *st)
{
	char id[256] = "", secret[256] = "", token[4096] = "";
	const char *e;
	if ((e = getenv("AWS_ACCESS_KEY_ID")) != NULL && strlen(e) < sizeof(id))
		snprintf(id, sizeof(id), "%s", e);
	if ((e = getenv("AWS_SECRET_ACCESS_KEY")) != NULL && strlen(e) < sizeof(secret))
		snprintf(secret, sizeof(secret), "%s", e);
	if ((e = getenv("AWS_SESSION_TOKEN")) != NULL && strlen(e) < sizeof(token))
		snprintf(token, sizeof(token), "%s", e);
	if (id[0] == '\0' || secret[0] == '\0') {
		char path[PATH_MAX];
		const char *file = getenv("AWS_SHARED_CREDENTIALS_FILE");
		const char *home = getenv("HOME");
		const char *profile = getenv("AWS_PROFILE");
		if (profile == NULL || profile[0] == '\0')
			profile = "default";
		if (file != NULL && file[0] != '\0')
			snprintf(path, sizeof(path), "%s", file);
		else if (home != NULL)
			snprintf(path, sizeof(path), "%s/.aws/credentials", home);
		else
			path[0] = '\0';
		id[0] = secret[0] = token[0] = '\0';
		if (path[0] != '\0')
			s3_read_profile(path, profile, id, secret, token, sizeof(id));
		if (id[0] == '\0' || secret[0] == '\0') {
			sluice_log_error("no S3 credentials: set AWS_ACCESS_KEY_ID and "
					 "AWS_SECRET_ACCESS_KEY, or profile \"%s\" in %s",
					 profile, path[0] ? path : "~/.aws/credentials");
			return false;
		}
	}
	size_t n = strlen(id) + strlen(secret) + 2;
	st->userpwd = malloc(n);
	if (st->userpwd == NULL)
		abort();
	snprintf(st->userpwd, n, "%s:%s", id, secret);
	if (token[0] != '\0') {
		n = strlen(token) + 32;
		st->token = malloc(n);
		if (st->token == NULL)
			abort();
		snprintf(st->token, n, "x-amz-security-token: %s", token);
	}
	sodium_memzero(secret, sizeof(secret));
	sodium_memzero(token, sizeof(token));
	return true;
}

/* s3_key builds the object key PREFIX STREAM/NAME. */
static void
s3_key(const s3_store *st, const char *stream, const char *name, char out[S3_MAX_KEY])
{
	snprintf(out, S3_MAX_KEY, "%s%s/%s", st->prefix, stream, name);
}

/* s3_escape_path percent-encodes key for a URL path, keeping '/'. */
static void
s3_escape_path(const char *key, sluice_buf *out)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
		unsigned char c = *p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~' || c == '/')
			sluice_buf_append_byte(out, c);
		else {
			sluice_buf_append_byte(out, '%');
			sluice_buf_append_byte(out, (uint8_t)hex[c >> 4]);
			sluice_buf_append_byte(out, (uint8_t)hex[c & 15]);
		}
	}
}

/* s3_escape_query percent-encodes a query value (everything but unreserved). */
static void
s3_escape_query(const char *v, sluice_buf *out)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		unsigned char c = *p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~')
			sluice_buf_append_byte(out, c);
		else {
			sluice_buf_append_byte(out, '%');
			sluice_buf_append_byte(out, (uint8_t)hex[c >> 4]);
			sluice_buf_append_byte(out, (uint8_t)hex[c & 15]);
		}
	}
}

static size_t
s3_write_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	s3_req *req = arg;
	size_t n = size * nmemb;
	if (req->out == NULL) {
		/* Kept only to name the error code of a failed request. */
		if (req->err.len + n <= 16384)
			sluice_buf_append(&req->err, data, n);
		return n;
	}
	if (req->out->len + n > req->out_max)
		return 0; /* abort: larger than the caller accepts */
	sluice_buf_append(req->out, data, n);
	return n;
}

static size_t
s3_header_cb(char *data, size_t size, size_t nmemb, void *arg)
{
	s3_req *req = arg;
	size_t n = size * nmemb;
	if (n > 5 && strncasecmp(data, "etag:", 5) == 0) {
		size_t i = 5;
		while (i < n && (data[i] == ' ' || data[i] == '\t'))
			i++;
		size_t e = n;
		while (e > i && (data[e - 1] == '\r' || data[e - 1] == '\n' || data[e - 1] == ' '))
			e--;
		size_t len = e - i < sizeof(req->etag) - 1 ? e - i : sizeof(req->etag) - 1;
		memcpy(req->etag, data + i, len);
		req->etag[len] = '\0';
	}
	return n;
}

/* s3_retryable_status: statuses a retry can fix (throttling, server errors). */
static bool
s3_retryable_status(long status)
{
	return status == 500 || status == 502 || status == 503 || status == 504 || status == 429 ||
	       status == 408;
}

/* s3_describe names the request for messages: METHOD s3://bucket/key. */
static void
s3_describe(const s3_store *st, const s3_req *req, char *out, size_t cap)
{
	snprintf(out, cap, "%s s3://%s/%s%s%s", req->method, st->bucket, req->key ? req->key : "",
		 req->query ? "?" : "", req->query ? req->query : "");
}

/*
 * s3_perform runs one request, retrying what retrying can fix (timeouts,
 * resets, refused connections, 5xx, SlowDown) with capped jittered backoff.
 * Statuses 404, 409 and 412 are returned to the caller; any other failure is
 * logged with the bucket, key and HTTP status.
 */
static s3_result
s3_perform(s3_store *st, s3_req *req)
{
	sluice_buf url = {0};
	struct curl_slist *hdrs = NULL;
	s3_result result = S3_FAILED;
	char what[S3_MAX_KEY + 128];
	s3_describe(st, req, what, sizeof(what));

	if (st->path_style) {
		sluice_buf_printf(&url, "%s/%s", st->endpoint, st->bucket);
	} else {
		const char *sep = strstr(st->endpoint, "://");
		size_t scheme_len = sep ? (size_t)(sep - st->endpoint) + 3 : 0;
		sluice_buf_append(&url, st->endpoint, scheme_len);
		sluice_buf_printf(&url, "%s.%s", st->bucket, st->endpoint + scheme_len);
	}
	sluice_buf_append_byte(&url, '/');
	if (req->key != NULL)
		s3_escape_path(req->key, &url);
	if (req->query != NULL) {
		sluice_buf_append_byte(&url, '?');
		sluice_buf_append_str(&url, req->query);
	}
	sluice_buf_append_byte(&url, '\0');

	/* The payload hash is part of the signature S3 checks. */
	uint8_t digest[crypto_hash_sha256_BYTES];
	char hexd[crypto_hash_sha256_BYTES * 2 + 1];
	crypto_hash_sha256(digest, req->body ? req->body : (const void *)"", req->body_len);
	sodium_bin2hex(hexd, sizeof(hexd), digest, sizeof(digest));
	char h[256];
	snprintf(h, sizeof(h), "x-amz-content-sha256: %s", hexd);
	hdrs = curl_slist_append(hdrs, h);
	if (req->if_none_match)
		hdrs = curl_slist_append(hdrs, "If-None-Match: *");
	if (st->token != NULL)
		hdrs = curl_slist_append(hdrs, st->token);
	if (req->range) {
		snprintf(h, sizeof(h), "Range: bytes=%" PRIu64 "-%" PRIu64, req->range_off,
			 req->range_off + req->range_len - 1);
		hdrs = curl_slist_append(hdrs, h);
	}
	if (req->body != NULL || strcmp(req->method, "PUT") == 0 ||
	    strcmp(req->method, "POST") == 0)
		hdrs = curl_slist_append(hdrs, "Content-Type: application/octet-stream");

	size_t out_start = req->out ? req->out->len : 0;
	for (int attempt = 1;; attempt++) {
		CURL *c = st->curl;
		curl_easy_reset(c);
		curl_easy_setopt(c, CURLOPT_URL, (const char *)url.data);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
		/* A transfer stalled below 1 byte/s for 30 s counts as a timeout. */
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
		curl_easy_setopt(c, CURLOPT_USERPWD, st->userpwd);
		curl_easy_setopt(c, CURLOPT_AWS_SIGV4, st->sigv4);
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s3_write_cb);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, req);
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, s3_header_cb);
		curl_easy_setopt(c, CURLOPT_HEADERDATA, req);
		curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
		if (strcmp(req->method, "HEAD") == 0)
			curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
		else if (strcmp(req->method, "GET") != 0) {
			curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
			curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body ? req->body : "");
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		}
		if (req->out)
			req->out->len = out_start;
		req->etag[0] = '\0';
		req->code[0] = '\0';
		req->status = 0;
		sluice_buf_reset(&req->err);
		CURLcode cc = curl_easy_perform(c);
		char why[192];
		if (cc == CURLE_OK) {
			curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &req->status);
			if (strcmp(req->method, "HEAD") == 0) {
				curl_off_t cl = -1;
				curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
				req->length = cl > 0 ? (uint64_t)cl : 0;
			}
			if (req->status >= 300) {
				const sluice_buf *b = req->out != NULL ? req->out : &req->err;
				size_t p = req->out != NULL ? out_start : 0, n = 0;
				(void)sluice_s3xml_next((const char *)b->data, b->len, &p, "Code",
							req->code, sizeof(req->code), &n);
			}
			if (req->status >= 200 && req->status < 300) {
				result = S3_OK;
				break;
			}
			if (req->status == 404 && strcmp(req->code, "NoSuchBucket") != 0) {
				result = S3_NOT_FOUND;
				break;
			}
			if (req->status == 412) {
				result = S3_PRECONDITION;
				break;
			}
			if (req->status == 409 && strcmp(req->method, "PUT") == 0) {
				result = S3_CONFLICT;
				break;
			}
			snprintf(why, sizeof(why), "HTTP %ld%s%s", req->status,
				 req->code[0] ? " " : "", req->code);
			if (!s3_retryable_status(req->status)) {
				sluice_log_error("%s failed: %s", what, why);
				break;
			}
		} else {
			if (cc == CURLE_WRITE_ERROR && req->out != NULL &&
			    req->out->len >= req->out_max) {
				sluice_log_error("%s failed: the answer is larger than %zu bytes",
						 what, req->out_max);
				break;
			}
			snprintf(why, sizeof(why), "%s", curl_easy_strerror(cc));
			if (cc == CURLE_URL_MALFORMAT || cc == CURLE_UNSUPPORTED_PROTOCOL ||
			    cc == CURLE_SSL_CACERT_BADFILE ||
			    cc == CURLE_PEER_FAILED_VERIFICATION ||
			    cc == CURLE_COULDNT_RESOLVE_HOST) {
				sluice_log_error("%s failed: %s", what, why);
				break;
			}
		}
		if (attempt >= st->max_attempts) {
			sluice_log_error("%s failed after %d attempts: %s", what, attempt, why);
			break;
		}
		int delay = sluice_backoff_ms(attempt, 200, 5000);
		if (req->status == 503 && strcmp(req->code, "SlowDown") == 0)
			delay = sluice_backoff_ms(attempt + 2, 200, 10000);
		sluice_log_warn("%s: %s; retrying in %d ms (attempt %d of %d)", what, why, delay,
				attempt, st->max_attempts);
		sluice_sleep_ms(delay, &s3_never_stop);
	}
	sluice_buf_free(&req->err);
	curl_slist_free_all(hdrs);
	sluice_buf_free(&url);
	return result;
}

/* s3_head asks for an object's size; *exists false on 404. */
static bool
s3_head(s3_store *st, const char *key, bool *exists, uint64_t *size)
{
	s3_req req = {.method = "HEAD", .key = key};
	s3_result r = s3_perform(st, &req);
	*exists = r == S3_OK;
	if (size)
		*size = req.length;
	return r == S3_OK || r == S3_NOT_FOUND;
}

/* s3_get reads a whole (small or segment-sized) object into out; *exists false on 404. */
static bool
s3_get(s3_store *st, const char *key, sluice_buf *out, size_t max, bool *exists)
{
	s3_req req = {.method = "GET", .key = key, .out = out, .out_max = max};
	s3_result r = s3_perform(st, &req);
	*exists = r == S3_OK;
	return r == S3_OK || r == S3_NOT_FOUND;
}

/*
 * s3_same_object tells whether the object at key holds exactly data: a
 * segment uploaded before a crash is found again, anything else is another
 * writer's. *prefix tells that it holds a strict prefix of data: a partial
 * upload that a server without a Content-Length check kept (S3 answers such
 * a request with IncompleteBody and stores nothing).
 */
static bool
s3_same_object(s3_store *st, const char *key, const void *data, size_t len, bool *same,
	       bool *prefix)
{
	sluice_buf got = {0};
	bool exists = false;
	*same = *prefix = false;
	if (!s3_get(st, key, &got, len + 1, &exists)) {
		sluice_buf_free(&got);
		return false;
	}
	*same = exists && got.len == len && memcmp(got.data, data, len) == 0;
	*prefix = exists && got.len < len && memcmp(got.data, data, got.len) == 0;
	sluice_buf_free(&got);
	return true;
}

/* s3_multipart uploads data to key in parts; the object appears only when completed. */
static s3_result
s3_multipart(s3_store *st, const char *key, const void *data, size_t len, bool if_none_match)
{
	sluice_buf out = {0}, body = {0}, q = {0};
	char upload_id[512], etag[128];
	size_t n = 0, pos = 0;
	s3_result result = S3_FAILED;
	s3_req create = {.method = "POST",
			 .key = key,
			 .query = "uploads=",
			 .out = &out,
			 .out_max = S3_MAX_SMALL_RESPONSE};
	if (s3_perform(st, &create) != S3_OK)
		goto cleanup;
	if (sluice_s3xml_next((const char *)out.data, out.len, &pos, "UploadId", upload_id,
			      sizeof(upload_id), &n) != SLUICE_S3XML_OK ||
	    n == 0) {
		sluice_log_error("POST s3://%s/%s?uploads: the answer names no UploadId",
				 st->bucket, key);
		goto cleanup;
	}
	sluice_buf uid = {0};
	s3_escape_query(upload_id, &uid);
	sluice_buf_append_byte(&uid, '\0');
	sluice_buf_append_str(&body, "<CompleteMultipartUpload>");
	int part = 0;
	for (size_t off = 0; off < len; off += st->part_size) {
		part++;
		size_t plen = len - off < st->part_size ? len - off : st->part_size;
		sluice_buf_reset(&q);
		sluice_buf_printf(&q, "partNumber=%d&uploadId=%s", part, (const char *)uid.data);
		sluice_buf_append_byte(&q, '\0');
		s3_req put = {.method = "PUT",
			      .key = key,
			      .query = (const char *)q.data,
			      .body = (const char *)data + off,
			      .body_len = plen};
		if (s3_perform(st, &put) != S3_OK || put.etag[0] == '\0') {
			if (put.status >= 200 && put.status < 300)
				sluice_log_error("PUT s3://%s/%s part %d: the answer has no ETag",
						 st->bucket, key, part);
			goto abort_upload;
		}
		snprintf(etag, sizeof(etag), "%s", put.etag);
		sluice_buf_printf(&body, "<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>",
				  part, etag);
	}
	sluice_buf_append_str(&body, "</CompleteMultipartUpload>");
	sluice_buf_reset(&q);
	sluice_buf_printf(&q, "uploadId=%s", (const char *)uid.data);
	sluice_buf_append_byte(&q, '\0');
	sluice_buf_reset(&out);
	s3_req complete = {.method = "POST",
			   .key = key,
			   .query = (const char *)q.data,
			   .body = body.data,
			   .body_len = body.len,
			   .if_none_match = if_none_match,
			   .out = &out,
			   .out_max = S3_MAX_SMALL_RESPONSE};
	result = s3_perform(st, &complete);
	/* S3 can answer 200 with an error in the body. */
	pos = 0;
	char code[64];
	if (result == S3_OK && sluice_s3xml_next((const char *)out.data, out.len, &pos, "Code",
						 code, sizeof(code), &n) == SLUICE_S3XML_OK) {
		sluice_log_error("POST s3://%s/%s?uploadId=…: completing the upload failed: %s",
				 st->bucket, key, code);
		result = S3_FAILED;
	}
	if (result == S3_OK) {
		sluice_buf_free(&uid);
		goto cleanup;
	}
abort_upload:
	/* A partial upload is never visible as an object; abort it to free its parts. */
	sluice_buf_reset(&q);
	sluice_buf_printf(&q, "uploadId=%s", (const char *)uid.data);
	sluice_buf_append_byte(&q, '\0');
	{
		s3_req abort_req = {.method = "DELETE", .key = key, .query = (const char *)q.data};
		(void)s3_perform(st, &abort_req);
	}
	sluice_buf_free(&uid);
cleanup:
	sluice_buf_free(&out);
	sluice_buf_free(&body);
	sluice_buf_free(&q);
	return result;
}

/* s3_put_object uploads data to key in one PUT or, from S3_MULTIPART_MIN, in parts. */
static s3_result
s3_put_object(s3_store *st, const char *key, const void *data, size_t len, bool if_none_match)
{
	if (len >= st->multipart_min)
		return s3_multipart(st, key, data, len, if_none_match);
	s3_req put = {.method = "PUT",
		      .key = key,
		      .body = data,
		      .body_len = len,
		      .if_none_match = if_none_match};
	return s3_perform(st, &put);
}

/*
 * s3_put_once stores data at key unless an object is there: a conditional
 * create where the server honours If-None-Match, and a look before writing
 * for servers that ignore it. An existing object with the same bytes is
 * success (an upload repeated after a crash).
 */
static bool
s3_put_once(s3_store *st, const char *key, const void *data, size_t len)
{
	bool exists = false, same = false, prefix = false;
	if (!s3_head(st, key, &exists, NULL))
		return false;
	s3_result r = S3_PRECONDITION;
	if (!exists)
		r = s3_put_object(st, key, data, len, true);
	if (r == S3_OK)
		return true;
	if (r != S3_PRECONDITION && r != S3_CONFLICT)
		return false;
	if (!s3_same_object(st, key, data, len, &same, &prefix))
		return false;
	if (same)
		return true;
	if (prefix) {
		/*
		 * No reader accepts a segment without its seal, and the whole
		 * segment only adds bytes after these: completing it changes
		 * nothing anyone has read.
		 */
		sluice_log_warn("s3://%s/%s holds only the start of this segment (a partial "
				"upload the server kept): uploading it whole",
				st->bucket, key);
		return s3_put_object(st, key, data, len, false) == S3_OK;
	}
	sluice_log_error("s3://%s/%s already exists with other contents: another writer wrote "
			 "this segment (segments are never overwritten)",
			 st->bucket, key);
	return false;
}

/* s3_lease_parse reads holder and expiry out of a lease object. */
static bool
s3_lease_parse(const sluice_buf *b, char *holder, size_t cap, int64_t *expires)
{
	char text[512];
	size_t n = b->len < sizeof(text) - 1 ? b->len : sizeof(text) - 1;
	if (n > 0) /* an empty object (one being written, on some servers) has no data */
		memcpy(text, b->data, n);
	text[n] = '\0';
	char *h = strstr(text, "holder ");
	char *e = strstr(text, "expires ");
	if (h == NULL || e == NULL)
		return false;
	h += 7;
	size_t hl = strcspn(h, "\n");
	if (hl == 0 || hl >= cap)
		return false;
	memcpy(holder, h, hl);
	holder[hl] = '\0';
	char *end = NULL;
	long long v = strtoll(e + 8, &end, 10);
	if (end == e + 8)
		return false;
	*expires = v;
	return true;
}

/* s3_lease_write writes this spool's lease on stream, valid for S3_LEASE_TTL_S. */
static bool
s3_lease_write(s3_store *st, const char *stream)
{
	char key[S3_MAX_KEY], body[256];
	s3_key(st, stream, S3_LEASE_NAME, key);
	int len = snprintf(body, sizeof(body), "sluice-lease 1\nholder %s\nexpires %lld\n",
			   st->holder, (long long)time(NULL) + S3_LEASE_TTL_S);
	s3_req put = {.method = "PUT", .key = key, .body = body, .body_len = (size_t)len};
	if (s3_perform(st, &put) != S3_OK)
		return false;
	st->lease_renewed = sluice_clock_mono_ms();
	return true;
}

/*
 * s3_lease_check reads the lease of stream: *mine when this spool holds it,
 * *free when nobody does (absent or expired); otherwise logs who does.
 */
static bool
s3_lease_check(s3_store *st, const char *stream, bool *mine, bool *free_, bool quiet)
{
	char key[S3_MAX_KEY], holder[128];
	sluice_buf b = {0};
	bool exists = false;
	int64_t expires = 0;
	s3_key(st, stream, S3_LEASE_NAME, key);
	*mine = *free_ = false;
	if (!s3_get(st, key, &b, 4096, &exists)) {
		sluice_buf_free(&b);
		return false;
	}
	if (!exists) {
		*free_ = true;
	} else if (!s3_lease_parse(&b, holder, sizeof(holder), &expires)) {
		sluice_log_warn("s3://%s/%s is not a lease sluice wrote; taking it over",
				st->bucket, key);
		*free_ = true;
	} else if (strcmp(holder, st->holder) == 0) {
		*mine = true;
	} else if (expires < (int64_t)time(NULL)) {
		*free_ = true;
	} else if (!quiet) {
		sluice_log_error("stream \"%s\" in s3://%s/%s is being written by another capture "
				 "(lease s3://%s/%s held by %s for %lld more seconds)",
				 stream, st->bucket, st->prefix, st->bucket, key, holder,
				 (long long)(expires - time(NULL)));
	}
	sluice_buf_free(&b);
	return true;
}

/*
 * s3_lease_renew makes sure this spool still holds the lease of stream
 * before anything is uploaded into it, renewing it when due. A writer
 * whose lease another took over is fenced: it uploads nothing more.
 */
static bool
s3_lease_renew(s3_store *st, const char *stream, bool force)
{
	if (st->lease_renewed == 0)
		return true; /* reading or copying: no lease */
	if (!force && sluice_clock_mono_ms() - st->lease_renewed < S3_LEASE_RENEW_S * 1000)
		return true;
	bool mine = false, free_ = false;
	if (!s3_lease_check(st, stream, &mine, &free_, false))
		return false;
	if (!mine) {
		sluice_log_error("stream \"%s\": this capture lost its lease on s3://%s/%s%s/%s; "
				 "another writer took the stream over: stopping",
				 stream, st->bucket, st->prefix, stream, S3_LEASE_NAME);
		st->lease_renewed = 0;
		return false;
	}
	return s3_lease_write(st, stream);
}

/* s3_spool_id reads (or makes) the writer id of the spool directory. */
static bool
s3_spool_id(s3_store *st)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/%s", st->spool_dir, S3_SPOOL_ID_NAME);
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		bool ok = fgets(st->holder, sizeof(st->holder), f) != NULL;
		fclose(f);
		st->holder[strcspn(st->holder, "\r\n")] = '\0';
		if (ok && st->holder[0] != '\0')
			return true;
	}
	uint8_t rnd[12];
	randombytes_buf(rnd, sizeof(rnd));
	char host[64] = "host";
	(void)gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	host[strcspn(host, " \t\n")] = '\0';
	char hex[sizeof(rnd) * 2 + 1];
	sodium_bin2hex(hex, sizeof(hex), rnd, sizeof(rnd));
	snprintf(st->holder, sizeof(st->holder), "%.30s-%s", host, hex);
	char tmp[PATH_MAX + 48];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL || fprintf(f, "%s\n", st->holder) < 0 || fflush(f) != 0 ||
	    fsync(fileno(f)) != 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
		sluice_log_error("could not write the writer id \"%s\": %m", path);
		return false;
	}
	return true;
}

static bool
s3_open(const char *location, const sluice_store_options *options, void **state,
	sluice_store_caps *caps)
{
	if (!s3_global_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || sodium_init() < 0) {
			sluice_log_error("could not initialise libcurl");
			return false;
		}
		s3_global_ready = true;
	}
	s3_store *st = calloc(1, sizeof(*st));
	if (st == NULL)
		abort();
	st->max_attempts = 10;
	st->multipart_min = S3_MULTIPART_MIN;
	st->part_size = S3_PART_SIZE;
	const char *q = strchr(location, '?');
	size_t path_len = q ? (size_t)(q - location) : strlen(location);
	const char *query = q ? q + 1 : "";
	size_t blen = strcspn(location, "/?");
	if (blen == 0 || blen > 63) {
		sluice_log_error("invalid S3 store \"s3://%.*s\": expected s3://BUCKET/PREFIX",
				 (int)(path_len > 200 ? 200 : path_len), location);
		goto fail;
	}
	st->bucket = s3_strdup_n(location, blen);
	const char *prefix = location + blen;
	size_t plen = path_len - blen;
	while (plen > 0 && *prefix == '/') {
		prefix++;
		plen--;
	}
	while (plen > 0 && prefix[plen - 1] == '/')
		plen--;
	st->prefix = malloc(plen + 2);
	if (st->prefix == NULL)
		abort();
	memcpy(st->prefix, prefix, plen);
	st->prefix[plen] = '\0';
	if (plen > 0)
		memcpy(st->prefix + plen, "/", 2); /* room was reserved above */

	char val[512];
	const char *env;
	if (sluice_store_query_param(query, "region", val, sizeof(val)))
		st->region = strdup(val);
	else if ((env = getenv("AWS_REGION")) != NULL && env[0])
		st->region = strdup(env);
	else if ((env = getenv("AWS_DEFAULT_REGION")) != NULL && env[0])
		st->region = strdup(env);
	else
		st->region = strdup("us-east-1");
	bool custom = true;
	if (sluice_store_query_param(query, "endpoint", val, sizeof(val)))
		st->endpoint = strdup(val);
	else if ((env = getenv("AWS_ENDPOINT_URL_S3")) != NULL && env[0])
		st->endpoint = strdup(env);
	else if ((env = getenv("AWS_ENDPOINT_URL")) != NULL && env[0])
		st->endpoint = strdup(env);
	else {
		snprintf(val, sizeof(val), "https://s3.%s.amazonaws.com", st->region);
		st->endpoint = strdup(val);
		custom = false;
	}
	if (st->region == NULL || st->endpoint == NULL)
		abort();
	if (strchr(st->region, ':') != NULL) {
		sluice_log_error("invalid S3 region \"%s\"", st->region);
		goto fail;
	}
	size_t el = strlen(st->endpoint);
	while (el > 0 && st->endpoint[el - 1] == '/')
		st->endpoint[--el] = '\0';
	if (strncmp(st->endpoint, "http://", 7) != 0 && strncmp(st->endpoint, "https://", 8) != 0) {
		sluice_log_error("invalid S3 endpoint \"%s\": expected http://HOST[:PORT] or "
				 "https://HOST[:PORT]",
				 st->endpoint);
		goto fail;
	}
	/* A custom endpoint (MinIO, s3rver, …) rarely has per-bucket host names. */
	st->path_style = custom;
	if (sluice_store_query_param(query, "path_style", val, sizeof(val)))
		st->path_style = strcmp(val, "1") == 0 || strcmp(val, "true") == 0;
	if (sluice_store_query_param(query, "max_keys", val, sizeof(val))) {
		char *end = NULL;
		long v = strtol(val, &end, 10);
		if (*end == '\0' && v >= 1 && v <= 1000)
			st->max_keys = (int)v;
	}
	/* For tests: multipart uploads of small segments (S3 wants parts of 5 MiB and up). */
	if (sluice_store_query_param(query, "multipart_min", val, sizeof(val))) {
		char *end = NULL;
		long long v = strtoll(val, &end, 10);
		if (*end == '\0' && v >= 1)
			st->multipart_min = (size_t)v;
	}
	if (sluice_store_query_param(query, "part_size", val, sizeof(val))) {
		char *end = NULL;
		long long v = strtoll(val, &end, 10);
		if (*end == '\0' && v >= 1024)
			st->part_size = (size_t)v;
	}
	if (sluice_store_query_param(query, "retries", val, sizeof(val))) {
		char *end = NULL;
		long v = strtol(val, &end, 10);
		if (*end == '\0' && v >= 1 && v <= 100)
			st->max_attempts = (int)v;
	}
	snprintf(st->sigv4, sizeof(st->sigv4), "aws:amz:%s:s3", st->region);
	if (!s3_credentials(st))
		goto fail;
	st->curl = curl_easy_init();
	if (st->curl == NULL) {
		sluice_log_error("could not create a libcurl handle");
		goto fail;
	}
	/* Find a missing bucket or refused credentials now, with their status. */
	{
		s3_req req = {.method = "HEAD"};
		s3_result r = s3_perform(st, &req);
		if (r == S3_NOT_FOUND)
			sluice_log_error("HEAD s3://%s/ failed: HTTP 404 (no such bucket)",
					 st->bucket);
		if (r != S3_OK)
			goto fail;
	}
	if (options->spool != NULL) {
		st->spool_dir = strdup(options->spool);
		if (st->spool_dir == NULL)
			abort();
		sluice_store_caps ignored;
		if (!sluice_backend_file_ops.open(options->spool, options, &st->spool, &ignored))
			goto fail;
		if (!s3_spool_id(st))
			goto fail;
	}
	caps->append_visible = false;
	caps->watch = false;
	caps->durable_write = options->ack_local;
	caps->cheap_list = false;
	caps->max_chunk = 4 * 1024 * 1024;
	*state = st;
	return true;

fail:
	s3_close_state(st);
	return false;
}

/* s3_close_state releases everything a store holds; secrets are wiped first. */
static void
s3_close_state(s3_store *st)
{
	if (st == NULL)
		return;
	if (st->userpwd != NULL) {
		sodium_memzero(st->userpwd, strlen(st->userpwd));
		free(st->userpwd);
	}
	if (st->token != NULL) {
		sodium_memzero(st->token, strlen(st->token));
		free(st->token);
	}
	if (st->curl != NULL)
		curl_easy_cleanup(st->curl);
	if (st->spool != NULL)
		sluice_backend_file_ops.close(st->spool);
	free(st->spool_dir);
	free(st->lease_stream);
	free(st->bucket);
	free(st->prefix);
	free(st->endpoint);
	free(st->region);
	free(st);
}

static void
s3_close(void *state)
{
	s3_close_state(state);
}

/* s3_push_first appends v to a growable array. */
static void
s3_push_first(uint64_t **list, size_t *n, size_t *cap, uint64_t v)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		uint64_t *p = realloc(*list, *cap * sizeof(*p));
		if (p == NULL)
			abort();
		*list = p;
	}
	(*list)[(*n)++] = v;
}

/*
 * s3_list lists the stream's objects with ListObjectsV2, page by page, and
 * adds the segments of the spool (the one being written, or sealed ones not
 * uploaded yet).
 */
static bool
s3_list(void *state, const char *stream, uint64_t **firsts, size_t *n, size_t *strays)
{
	s3_store *st = state;
	char prefix[S3_MAX_KEY];
	snprintf(prefix, sizeof(prefix), "%s%s/", st->prefix, stream);
	size_t prefix_len = strlen(prefix);
	uint64_t *list = NULL;
	size_t count = 0, cap = 0;
	char token[1024] = "";
	sluice_buf out = {0}, q = {0};
	bool ok = false;
	*firsts = NULL;
	*n = 0;
	*strays = 0;
	for (int page = 0;; page++) {
		sluice_buf_reset(&q);
		sluice_buf_append_str(&q, "list-type=2");
		if (st->max_keys > 0)
			sluice_buf_printf(&q, "&max-keys=%d", st->max_keys);
		if (token[0] != '\0') {
			sluice_buf_append_str(&q, "&continuation-token=");
			s3_escape_query(token, &q);
		}
		sluice_buf_append_str(&q, "&prefix=");
		s3_escape_query(prefix, &q);
		sluice_buf_append_byte(&q, '\0');
		sluice_buf_reset(&out);
		s3_req req = {.method = "GET",
			      .query = (const char *)q.data,
			      .out = &out,
			      .out_max = S3_MAX_SMALL_RESPONSE};
		if (s3_perform(st, &req) != S3_OK) {
			if (req.status == 404)
				sluice_log_error(
					"GET s3://%s/?list-type=2&prefix=%s failed: HTTP 404",
					st->bucket, prefix);
			goto cleanup;
		}
		const char *xml = (const char *)out.data;
		size_t pos = 0, len = 0;
		char key[S3_MAX_KEY];
		sluice_s3xml_status xs;
		while ((xs = sluice_s3xml_next(xml, out.len, &pos, "Key", key, sizeof(key),
					       &len)) == SLUICE_S3XML_OK) {
			uint64_t first;
			if (len <= prefix_len || strncmp(key, prefix, prefix_len) != 0) {
				(*strays)++;
				continue;
			}
			const char *name = key + prefix_len;
			if (strcmp(name, S3_LEASE_NAME) == 0)
				continue;
			if (!sluice_segname_parse(name, &first)) {
				(*strays)++;
				continue;
			}
			s3_push_first(&list, &count, &cap, first);
		}
		if (xs != SLUICE_S3XML_NONE) {
			sluice_log_error("GET s3://%s/?list-type=2&prefix=%s: could not read the "
					 "listing: %s",
					 st->bucket, prefix, sluice_s3xml_strerror(xs));
			goto cleanup;
		}
		char truncated[16] = "";
		pos = 0;
		(void)sluice_s3xml_next(xml, out.len, &pos, "IsTruncated", truncated,
					sizeof(truncated), &len);
		if (strcmp(truncated, "true") != 0)
			break;
		pos = 0;
		if (sluice_s3xml_next(xml, out.len, &pos, "NextContinuationToken", token,
				      sizeof(token), &len) != SLUICE_S3XML_OK ||
		    len == 0) {
			sluice_log_error("GET s3://%s/?list-type=2&prefix=%s: a truncated listing "
					 "without a continuation token",
					 st->bucket, prefix);
			goto cleanup;
		}
		if (page > 1000000) {
			sluice_log_error("s3://%s/%s: too many listing pages", st->bucket, prefix);
			goto cleanup;
		}
	}
	if (st->spool != NULL) {
		uint64_t *local = NULL;
		size_t nlocal = 0, lstrays = 0;
		if (!sluice_backend_file_ops.list(st->spool, stream, &local, &nlocal, &lstrays))
			goto cleanup;
		for (size_t i = 0; i < nlocal; i++)
			s3_push_first(&list, &count, &cap, local[i]);
		free(local);
	}
	if (count > 1)
		qsort(list, count, sizeof(*list), sluice_segname_cmp);
	/* A segment both uploaded and still in the spool (a crash between the two) is one. */
	size_t w = 0;
	for (size_t i = 0; i < count; i++)
		if (w == 0 || list[w - 1] != list[i])
			list[w++] = list[i];
	*firsts = list;
	*n = w;
	list = NULL;
	ok = true;
cleanup:
	free(list);
	sluice_buf_free(&out);
	sluice_buf_free(&q);
	return ok;
}

/* s3_in_spool tells whether the spool holds segment name of stream. */
static bool
s3_in_spool(s3_store *st, const char *stream, const char *name)
{
	bool exists = false;
	return st->spool != NULL &&
	       sluice_backend_file_ops.segment_probe(st->spool, stream, name, &exists) && exists;
}

static bool
s3_segment_probe(void *state, const char *stream, const char *name, bool *exists)
{
	s3_store *st = state;
	char key[S3_MAX_KEY];
	if (s3_in_spool(st, stream, name)) {
		*exists = true;
		return true;
	}
	s3_key(st, stream, name, key);
	return s3_head(st, key, exists, NULL);
}

/* s3_segment_new prepares a handle. */
static s3_segment *
s3_segment_new(s3_store *st, const char *stream, const char *name)
{
	s3_segment *seg = calloc(1, sizeof(*seg));
	if (seg == NULL)
		abort();
	seg->st = st;
	snprintf(seg->stream, sizeof(seg->stream), "%s", stream);
	snprintf(seg->name, sizeof(seg->name), "%s", name);
	s3_key(st, stream, name, seg->key);
	return seg;
}

static bool
s3_segment_open(void *state, const char *stream, const char *name, bool writable, void **out)
{
	s3_store *st = state;
	s3_segment *seg = s3_segment_new(st, stream, name);
	if (s3_in_spool(st, stream, name)) {
		if (!sluice_backend_file_ops.segment_open(st->spool, stream, name, writable,
							  &seg->file))
			goto fail;
		*out = seg;
		return true;
	}
	if (writable) {
		sluice_log_error("could not open s3://%s/%s for writing: an uploaded segment is "
				 "never written again",
				 st->bucket, seg->key);
		goto fail;
	}
	bool exists = false;
	if (!s3_head(st, seg->key, &exists, &seg->size))
		goto fail;
	if (!exists) {
		sluice_log_error("could not open segment s3://%s/%s: HTTP 404 (no such object)",
				 st->bucket, seg->key);
		goto fail;
	}
	*out = seg;
	return true;
fail:
	free(seg);
	return false;
}

static bool
s3_segment_create(void *state, const char *stream, const char *name, void **out)
{
	s3_store *st = state;
	if (st->spool == NULL) {
		sluice_log_error("writing to an S3 store needs a spool directory for the open "
				 "segment (--spool DIR)");
		return false;
	}
	bool exists = false;
	char key[S3_MAX_KEY];
	s3_key(st, stream, name, key);
	if (!s3_head(st, key, &exists, NULL))
		return false;
	if (exists) {
		sluice_log_error("could not create segment s3://%s/%s: it exists (another writer?)",
				 st->bucket, key);
		return false;
	}
	s3_segment *seg = s3_segment_new(st, stream, name);
	if (!sluice_backend_file_ops.segment_create(st->spool, stream, name, &seg->file)) {
		free(seg);
		return false;
	}
	*out = seg;
	return true;
}

static bool
s3_segment_put(void *state, const char *stream, const char *name, const void *data, size_t len)
{
	s3_store *st = state;
	char key[S3_MAX_KEY];
	s3_key(st, stream, name, key);
	if (!s3_lease_renew(st, stream, false))
		return false;
	return s3_put_once(st, key, data, len);
}

static bool
s3_segment_remove(void *state, const char *stream, const char *name)
{
	s3_store *st = state;
	if (!s3_in_spool(st, stream, name)) {
		sluice_log_error("could not remove segment s3://%s/%s%s/%s: only a segment still "
				 "in the spool is ever removed",
				 st->bucket, st->prefix, stream, name);
		return false;
	}
	return sluice_backend_file_ops.segment_remove(st->spool, stream, name);
}

static bool
s3_segment_size(void *handle, uint64_t *size)
{
	s3_segment *seg = handle;
	if (seg->file != NULL)
		return sluice_backend_file_ops.segment_size(seg->file, size);
	*size = seg->size;
	return true;
}

static bool
s3_segment_read(void *handle, uint64_t off, void *buf, size_t len, size_t *got)
{
	s3_segment *seg = handle;
	if (seg->file != NULL)
		return sluice_backend_file_ops.segment_read(seg->file, off, buf, len, got);
	*got = 0;
	if (off >= seg->size || len == 0)
		return true;
	if (len > seg->size - off)
		len = (size_t)(seg->size - off);
	if (off < seg->window_off || off + len > seg->window_off + seg->window.len) {
		/* One range GET for this read and what is likely read next. */
		uint64_t want = len > S3_READ_WINDOW ? len : S3_READ_WINDOW;
		if (want > seg->size - off)
			want = seg->size - off;
		sluice_buf_reset(&seg->window);
		seg->window_off = off;
		s3_req req = {.method = "GET",
			      .key = seg->key,
			      .range = true,
			      .range_off = off,
			      .range_len = want,
			      .out = &seg->window,
			      .out_max = (size_t)want};
		s3_result r = s3_perform(seg->st, &req);
		if (r != S3_OK) {
			if (r == S3_NOT_FOUND)
				sluice_log_error("could not read s3://%s/%s: HTTP 404 (it was "
						 "deleted)",
						 seg->st->bucket, seg->key);
			sluice_buf_reset(&seg->window);
			return false;
		}
		if (req.status != 206 && !(off == 0 && want == seg->size)) {
			sluice_log_error("GET s3://%s/%s: the server ignored the byte range "
					 "(HTTP %ld)",
					 seg->st->bucket, seg->key, req.status);
			sluice_buf_reset(&seg->window);
			return false;
		}
	}
	uint64_t rel = off - seg->window_off;
	size_t avail = seg->window.len > rel ? (size_t)(seg->window.len - rel) : 0;
	size_t n = len < avail ? len : avail;
	memcpy(buf, seg->window.data + rel, n);
	*got = n;
	return true;
}

static bool
s3_segment_write(void *handle, const void *chunk, size_t len, bool durable)
{
	s3_segment *seg = handle;
	if (seg->file == NULL)
		return false;
	if (!sluice_backend_file_ops.segment_write(seg->file, chunk, len, durable))
		return false;
	/* An idle stream's heartbeats keep its lease. */
	return s3_lease_renew(seg->st, seg->stream, false);
}

static bool
s3_segment_truncate(void *handle, uint64_t size)
{
	s3_segment *seg = handle;
	if (seg->file == NULL)
		return false;
	return sluice_backend_file_ops.segment_truncate(seg->file, size);
}

/* s3_read_file reads a whole spool file. */
static bool
s3_read_file(const char *path, sluice_buf *out)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		sluice_log_error("could not open \"%s\": %m", path);
		return false;
	}
	char buf[65536];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		sluice_buf_append(out, buf, n);
	bool ok = !ferror(f);
	if (!ok)
		sluice_log_error("could not read \"%s\": %m", path);
	fclose(f);
	return ok;
}

/*
 * s3_upload_spooled uploads a sealed segment from the spool, then removes
 * it there: the object is the segment from then on.
 */
static bool
s3_upload_spooled(s3_store *st, const char *stream, const char *name)
{
	char path[PATH_MAX + 64], dir[PATH_MAX], key[S3_MAX_KEY];
	snprintf(dir, sizeof(dir), "%s/%s", st->spool_dir, stream);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	s3_key(st, stream, name, key);
	sluice_buf data = {0};
	bool ok = s3_read_file(path, &data) && s3_lease_renew(st, stream, true) &&
		  s3_put_once(st, key, data.data, data.len);
	sluice_buf_free(&data);
	if (!ok)
		return false;
	if (unlink(path) != 0) {
		sluice_log_error("could not remove \"%s\" after uploading it: %m", path);
		return false;
	}
	return true;
}

static bool
s3_segment_seal(void *handle)
{
	s3_segment *seg = handle;
	if (seg->file == NULL)
		return false;
	if (!sluice_backend_file_ops.segment_seal(seg->file))
		return false;
	return s3_upload_spooled(seg->st, seg->stream, seg->name);
}

static void
s3_segment_close(void *handle)
{
	s3_segment *seg = handle;
	if (seg == NULL)
		return;
	if (seg->file != NULL)
		sluice_backend_file_ops.segment_close(seg->file);
	sluice_buf_free(&seg->window);
	free(seg);
}

/*
 * s3_lock_stream fences other writers of stream: the spool's own lock (one process
 * per spool), then the stream's lease object in the bucket, written and read
 * back (servers without conditional writes let the last writer win; the
 * loser sees it). Sealed segments a crash left in the spool are uploaded.
 */
static bool
s3_lock_stream(void *state, const char *stream, void **out)
{
	s3_store *st = state;
	if (st->spool == NULL) {
		sluice_log_error("writing to an S3 store needs a spool directory for the open "
				 "segment (--spool DIR)");
		return false;
	}
	s3_lock *l = calloc(1, sizeof(*l));
	if (l == NULL)
		abort();
	l->st = st;
	if (!sluice_backend_file_ops.lock(st->spool, stream, &l->file_lock))
		goto fail;
	bool mine = false, free_ = false;
	if (!s3_lease_check(st, stream, &mine, &free_, false))
		goto fail;
	if (!mine && !free_)
		goto fail;
	if (!s3_lease_write(st, stream))
		goto fail;
	if (!mine) {
		/* Let a writer that raced us write its lease too; then see who won. */
		sluice_sleep_ms(1000, &s3_never_stop);
		if (!s3_lease_check(st, stream, &mine, &free_, false))
			goto fail;
		if (!mine) {
			if (free_)
				sluice_log_error("stream \"%s\": the lease on s3://%s/%s%s/%s "
						 "changed while it was taken; not writing",
						 stream, st->bucket, st->prefix, stream,
						 S3_LEASE_NAME);
			goto fail;
		}
	}
	free(st->lease_stream);
	st->lease_stream = strdup(stream);
	if (st->lease_stream == NULL)
		abort();
	/* Sealed (read-only) segments in the spool did not finish their upload. */
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/%s", st->spool_dir, stream);
	uint64_t *local = NULL;
	size_t nlocal = 0, strays = 0;
	if (!sluice_backend_file_ops.list(st->spool, stream, &local, &nlocal, &strays))
		goto fail;
	for (size_t i = 0; i < nlocal; i++) {
		char name[SLUICE_SEGMENT_NAME_SIZE], path[PATH_MAX + 64];
		sluice_store_segment_name(local[i], name);
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		struct stat sb;
		if (stat(path, &sb) == 0 && (sb.st_mode & 0222) == 0) {
			sluice_log_info("uploading segment %s of stream \"%s\", sealed before an "
					"interruption",
					name, stream);
			if (!s3_upload_spooled(st, stream, name)) {
				free(local);
				goto fail;
			}
		}
	}
	free(local);
	*out = l;
	return true;
fail:
	st->lease_renewed = 0;
	if (l->file_lock != NULL)
		sluice_backend_file_ops.unlock(l->file_lock);
	free(l);
	return false;
}

static void
s3_unlock(void *handle)
{
	s3_lock *l = handle;
	if (l == NULL)
		return;
	s3_store *st = l->st;
	/* Give the stream up at once, so that a successor need not wait for the lease to end. */
	if (st->lease_renewed != 0 && st->lease_stream != NULL) {
		bool mine = false, free_ = false;
		char key[S3_MAX_KEY];
		s3_key(st, st->lease_stream, S3_LEASE_NAME, key);
		if (s3_lease_check(st, st->lease_stream, &mine, &free_, false) && mine) {
			s3_req del = {.method = "DELETE", .key = key};
			(void)s3_perform(st, &del);
		}
	}
	st->lease_renewed = 0;
	sluice_backend_file_ops.unlock(l->file_lock);
	free(l);
}

/* s3_lock_held: a lease of another holder that has not expired (this spool's is not held). */
static bool
s3_lock_held(void *state, const char *stream, bool *held)
{
	bool mine = false, free_ = false;
	if (!s3_lease_check(state, stream, &mine, &free_, true))
		return false;
	*held = !mine && !free_;
	return true;
}

const sluice_store_ops sluice_backend_s3_ops = {
	.scheme = "s3",
	.open = s3_open,
	.close = s3_close,
	.list = s3_list,
	.segment_probe = s3_segment_probe,
	.segment_open = s3_segment_open,
	.segment_create = s3_segment_create,
	.segment_put = s3_segment_put,
	.segment_remove = s3_segment_remove,
	.segment_size = s3_segment_size,
	.segment_read = s3_segment_read,
	.segment_write = s3_segment_write,
	.segment_truncate = s3_segment_truncate,
	.segment_seal = s3_segment_seal,
	.segment_close = s3_segment_close,
	.lock = s3_lock_stream,
	.unlock = s3_unlock,
	.lock_held = s3_lock_held,
	.watch_open = NULL,
	.watch_wait = NULL,
	.watch_close = NULL,
};
