/* Shared helpers for the cmocka unit tests of the stream format. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Temporary directories still to remove at exit (a failed test skips its cleanup). */
static char *tu_tempdirs[256];
static size_t tu_ntempdirs;

static int tu_rm_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw);

static void
tu_cleanup_tempdirs(void)
{
	for (size_t i = 0; i < tu_ntempdirs; i++) {
		if (tu_tempdirs[i] == NULL)
			continue;
		nftw(tu_tempdirs[i], tu_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
		free(tu_tempdirs[i]);
		tu_tempdirs[i] = NULL;
	}
	tu_ntempdirs = 0;
}

void
tu_setup_process(void)
{
	atexit(tu_cleanup_tempdirs);
	if (sodium_init() < 0) {
		fprintf(stderr, "sodium_init failed\n");
		abort();
	}
	sluice_log_setup(SLUICE_LOG_ERROR, SLUICE_LOG_TEXT);
}

/* ---- files ---- */

void
tu_path(char *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, TU_PATH_MAX, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && n < TU_PATH_MAX);
}

char *
tu_mkdtemp(const char *tag)
{
	const char *base = getenv("TMPDIR");
	if (base == NULL || base[0] == '\0')
		base = "/tmp";
	char *path = malloc(TU_PATH_MAX);
	assert_non_null(path);
	tu_path(path, "%s/sluice-unit-%s-XXXXXX", base, tag);
	assert_non_null(mkdtemp(path));
	if (tu_ntempdirs < sizeof(tu_tempdirs) / sizeof(tu_tempdirs[0])) {
		tu_tempdirs[tu_ntempdirs] = strdup(path);
		tu_ntempdirs++;
	}
	return path;
}

static int
tu_rm_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	if (type == FTW_DP)
		return rmdir(path);
	return unlink(path);
}

void
tu_rmrf(const char *path)
{
	if (path == NULL)
		return;
	nftw(path, tu_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	for (size_t i = 0; i < tu_ntempdirs; i++) {
		if (tu_tempdirs[i] != NULL && strcmp(tu_tempdirs[i], path) == 0) {
			free(tu_tempdirs[i]);
			tu_tempdirs[i] = NULL;
		}
	}
}

void
tu_read_file(const char *path, sluice_buf *out)
{
	sluice_buf_reset(out);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	for (;;) {
		sluice_buf_reserve(out, 65536);
		ssize_t n = read(fd, out->data + out->len, out->cap - out->len);
		assert_true(n >= 0);
		if (n == 0)
			break;
		out->len += (size_t)n;
	}
	close(fd);
}

static void
tu_write_all(int fd, const void *data, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, (const char *)data + off, len - off);
		assert_true(n > 0);
		off += (size_t)n;
	}
}

mode_t
tu_file_mode(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

uint64_t
tu_file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

void
tu_copy_file(const char *src, const char *dst)
{
	sluice_buf b = {0};
	tu_read_file(src, &b);
	mode_t mode = tu_file_mode(src);
	int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	tu_write_all(fd, b.data, b.len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
	sluice_buf_free(&b);
}

void
tu_copy_dir(const char *src, const char *dst)
{
	assert_int_equal(mkdir(dst, 0755), 0);
	DIR *d = opendir(src);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char s[TU_PATH_MAX], t[TU_PATH_MAX];
		tu_path(s, "%s/%s", src, de->d_name);
		tu_path(t, "%s/%s", dst, de->d_name);
		tu_copy_file(s, t);
	}
	closedir(d);
}

void
tu_write_file(const char *path, const void *data, size_t len)
{
	mode_t mode = tu_file_mode(path);
	assert_int_equal(chmod(path, 0644), 0);
	int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	assert_true(fd >= 0);
	tu_write_all(fd, data, len);
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

void
tu_flip_byte(const char *path, uint64_t off, uint8_t mask)
{
	mode_t mode = tu_file_mode(path);
	assert_int_equal(chmod(path, 0644), 0);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	uint8_t b;
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= mask;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

void
tu_truncate_file(const char *path, uint64_t len)
{
	mode_t mode = tu_file_mode(path);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(truncate(path, (off_t)len), 0);
	assert_int_equal(chmod(path, mode), 0);
}

/* ---- keys ---- */

void
tu_keypair_make(tu_keypair *kp, const char *dir, const char *name)
{
	memset(kp, 0, sizeof(*kp));
	char prefix[TU_PATH_MAX];
	tu_path(prefix, "%s/%s", dir, name);
	tu_path(kp->keypath, "%s.key", prefix);
	tu_path(kp->pubpath, "%s.pub", prefix);
	assert_true(sluice_keys_generate(prefix, false, kp->id_hex));
	assert_int_equal(strlen(kp->id_hex), 16);
	assert_true(sluice_key_load(kp->keypath, &kp->key));
	char hex[SLUICE_KEY_ID_HEX_SIZE];
	sluice_keys_id_hex(sluice_key_id(kp->key), hex);
	assert_string_equal(hex, kp->id_hex);
}

void
tu_keypair_free(tu_keypair *kp)
{
	sluice_key_free(kp->key);
	kp->key = NULL;
}

sluice_trust *
tu_trust_of(const char *pubpath, ...)
{
	sluice_trust *t = sluice_trust_create();
	va_list ap;
	va_start(ap, pubpath);
	for (const char *p = pubpath; p != NULL; p = va_arg(ap, const char *))
		assert_true(sluice_trust_add_file(t, p));
	va_end(ap);
	return t;
}

/* ---- env ---- */

void
tu_env_init(tu_env *env, const char *tag)
{
	memset(env, 0, sizeof(*env));
	env->dir = tu_mkdtemp(tag);
	char keys[TU_PATH_MAX];
	tu_path(keys, "%s/keys", env->dir);
	assert_int_equal(mkdir(keys, 0700), 0);
	tu_keypair_make(&env->kp, keys, "writer");
	env->trust = tu_trust_of(env->kp.pubpath, (const char *)NULL);
	tu_path(env->store_dir, "%s/store", env->dir);
	tu_path(env->stream_dir, "%s/%s", env->store_dir, TU_STREAM);
	assert_true(sluice_store_open(env->store_dir, &env->store));
}

void
tu_env_reopen_store(tu_env *env)
{
	sluice_store_close(env->store);
	env->store = NULL;
	assert_true(sluice_store_open(env->store_dir, &env->store));
}

void
tu_env_free(tu_env *env)
{
	sluice_store_close(env->store);
	sluice_trust_free(env->trust);
	tu_keypair_free(&env->kp);
	tu_rmrf(env->dir);
	free(env->dir);
	memset(env, 0, sizeof(*env));
}

void
tu_segment_path(const tu_env *env, uint64_t first, char out[TU_PATH_MAX])
{
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(first, name);
	tu_path(out, "%s/%s", env->stream_dir, name);
}

size_t
tu_segments(tu_env *env, uint64_t **firsts)
{
	size_t n = 0;
	assert_true(sluice_store_list(env->store, TU_STREAM, firsts, &n, NULL));
	return n;
}

sluice_writer_options
tu_writer_options(size_t frame_target, uint64_t segment_target)
{
	sluice_writer_options o = sluice_writer_default_options();
	o.frame_target = frame_target;
	o.segment_target = segment_target;
	return o;
}

/* ---- frames ---- */

size_t
tu_segment_frames(const char *path, tu_frame_info **out)
{
	sluice_buf b = {0};
	tu_read_file(path, &b);
	size_t n = 0, cap = 0;
	tu_frame_info *v = NULL;
	uint64_t off = 0;
	while (off + SLUICE_FRAME_HEADER_SIZE <= b.len) {
		sluice_frame_header h;
		if (sluice_frame_parse_header(b.data + off, b.len - off, &h) != SLUICE_FRAME_OK)
			break;
		uint64_t size = SLUICE_FRAME_HEADER_SIZE + (uint64_t)h.payload_len;
		if (off + size > b.len)
			break;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			v = realloc(v, cap * sizeof(*v));
			assert_non_null(v);
		}
		v[n].offset = off;
		v[n].size = size;
		v[n].hdr = h;
		n++;
		off += size;
	}
	sluice_buf_free(&b);
	*out = v;
	return n;
}

/* ---- verify ---- */

static void
tu_finding_cb(void *ctx, bool is_error, const char *segment, int64_t frame_offset,
	      const char *cause)
{
	tu_findings *f = ctx;
	tu_finding *v = realloc(f->v, (f->n + 1) * sizeof(*v));
	if (v == NULL)
		abort();
	f->v = v;
	tu_finding *x = &f->v[f->n++];
	memset(x, 0, sizeof(*x));
	x->is_error = is_error;
	snprintf(x->segment, sizeof(x->segment), "%s", segment ? segment : "");
	x->offset = frame_offset;
	snprintf(x->cause, sizeof(x->cause), "%s", cause ? cause : "");
}

void
tu_verify(sluice_store *store, const char *stream, const sluice_trust *trust, tu_findings *findings,
	  sluice_verify_report *report)
{
	findings->v = NULL;
	findings->n = 0;
	assert_true(sluice_verify_stream(store, stream, trust, tu_finding_cb, findings, report));
	/* The counters must agree with the callbacks. */
	uint64_t errors = 0, warnings = 0;
	for (size_t i = 0; i < findings->n; i++) {
		if (findings->v[i].is_error)
			errors++;
		else
			warnings++;
	}
	assert_int_equal(errors, report->problems);
	assert_int_equal(warnings, report->warnings);
}

void
tu_findings_free(tu_findings *f)
{
	free(f->v);
	f->v = NULL;
	f->n = 0;
}

void
tu_findings_print(const tu_findings *f)
{
	for (size_t i = 0; i < f->n; i++)
		fprintf(stderr, "  finding: %s segment=%s offset=%" PRId64 ": %s\n",
			f->v[i].is_error ? "ERROR" : "warning", f->v[i].segment, f->v[i].offset,
			f->v[i].cause);
}

bool
tu_findings_has_error(const tu_findings *f, const char *segment, int64_t offset)
{
	for (size_t i = 0; i < f->n; i++) {
		if (!f->v[i].is_error)
			continue;
		if (segment != NULL && strcmp(f->v[i].segment, segment) != 0)
			continue;
		if (offset != -2 && f->v[i].offset != offset)
			continue;
		return true;
	}
	return false;
}

/* ---- records ---- */

static void *
tu_alloc(sluice_arena *a, size_t size)
{
	void *p = sluice_arena_alloc(a, size);
	memset(p, 0, size);
	return p;
}

char *
tu_strdup(sluice_arena *a, const char *s)
{
	size_t n = strlen(s);
	char *p = sluice_arena_alloc(a, n + 1);
	memcpy(p, s, n + 1);
	return p;
}

ProtobufCBinaryData
tu_bin(sluice_arena *a, const void *data, size_t len)
{
	ProtobufCBinaryData b;
	b.len = len;
	b.data = sluice_arena_alloc(a, len ? len : 1);
	if (len)
		memcpy(b.data, data, len);
	return b;
}

ProtobufCBinaryData
tu_text(sluice_arena *a, const char *s)
{
	return tu_bin(a, s, strlen(s));
}

sluice_record *
tu_rec(sluice_arena *a)
{
	sluice_record *r = tu_alloc(a, sizeof(*r));
	sluice__v1__record__init(r);
	return r;
}

sluice_record *
tu_begin(sluice_arena *a, int64_t time_us, uint64_t source_lsn, const char *origin)
{
	sluice_record *r = tu_rec(a);
	Sluice__V1__Begin *b = tu_alloc(a, sizeof(*b));
	sluice__v1__begin__init(b);
	b->commit_time_us = time_us;
	b->has_source_lsn = true;
	b->source_lsn = source_lsn;
	b->origin_node = tu_strdup(a, origin);
	r->body_case = SLUICE__V1__RECORD__BODY_BEGIN;
	r->begin = b;
	return r;
}

sluice_record *
tu_commit(sluice_arena *a, uint64_t end_lsn, uint32_t change_count)
{
	sluice_record *r = tu_rec(a);
	Sluice__V1__Commit *c = tu_alloc(a, sizeof(*c));
	sluice__v1__commit__init(c);
	c->has_end_lsn = true;
	c->end_lsn = end_lsn;
	c->has_change_count = true;
	c->change_count = change_count;
	r->body_case = SLUICE__V1__RECORD__BODY_COMMIT;
	r->commit = c;
	return r;
}

sluice_record *
tu_heartbeat(sluice_arena *a, int64_t time_us, uint64_t lsn)
{
	sluice_record *r = tu_rec(a);
	Sluice__V1__Heartbeat *h = tu_alloc(a, sizeof(*h));
	sluice__v1__heartbeat__init(h);
	h->time_us = time_us;
	h->has_source_lsn = true;
	h->source_lsn = lsn;
	r->body_case = SLUICE__V1__RECORD__BODY_HEARTBEAT;
	r->heartbeat = h;
	return r;
}

sluice_record *
tu_relation(sluice_arena *a, uint32_t id, const char *schema, const char *name, size_t ncols,
	    const char *const *cols)
{
	sluice_record *r = tu_rec(a);
	Sluice__V1__Relation *rel = tu_alloc(a, sizeof(*rel));
	sluice__v1__relation__init(rel);
	rel->id = id;
	rel->schema = tu_strdup(a, schema);
	rel->name = tu_strdup(a, name);
	rel->has_replica_identity = true;
	rel->replica_identity = 'd';
	rel->has_source = true;
	rel->source = SLUICE__V1__SOURCE_KIND__SOURCE_POSTGRES;
	rel->n_columns = ncols;
	rel->columns = tu_alloc(a, (ncols ? ncols : 1) * sizeof(*rel->columns));
	for (size_t i = 0; i < ncols; i++) {
		Sluice__V1__Column *c = tu_alloc(a, sizeof(*c));
		sluice__v1__column__init(c);
		const char *colon = strchr(cols[i], ':');
		size_t nlen = colon ? (size_t)(colon - cols[i]) : strlen(cols[i]);
		c->name = sluice_arena_alloc(a, nlen + 1);
		memcpy(c->name, cols[i], nlen);
		c->name[nlen] = '\0';
		c->has_type_oid = true;
		c->type_oid = colon ? (uint32_t)strtoul(colon + 1, NULL, 10) : 25;
		c->has_type_modifier = true;
		c->type_modifier = -1;
		if (i == 0) {
			c->has_key = true;
			c->key = true;
		}
		rel->columns[i] = c;
	}
	r->body_case = SLUICE__V1__RECORD__BODY_RELATION;
	r->relation = rel;
	return r;
}

Sluice__V1__Row *
tu_row(sluice_arena *a, size_t n, const Sluice__V1__ValueKind *kinds,
       const ProtobufCBinaryData *values)
{
	Sluice__V1__Row *row = tu_alloc(a, sizeof(*row));
	sluice__v1__row__init(row);
	row->n_kinds = n;
	row->kinds = tu_alloc(a, (n ? n : 1) * sizeof(*row->kinds));
	row->n_values = n;
	row->values = tu_alloc(a, (n ? n : 1) * sizeof(*row->values));
	for (size_t i = 0; i < n; i++) {
		row->kinds[i] = kinds[i];
		row->values[i] = values[i];
	}
	return row;
}

sluice_record *
tu_insert(sluice_arena *a, uint32_t relid, Sluice__V1__Row *row)
{
	sluice_record *r = tu_rec(a);
	Sluice__V1__Insert *ins = tu_alloc(a, sizeof(*ins));
	sluice__v1__insert__init(ins);
	ins->relation_id = relid;
	ins->new_row = row;
	r->body_case = SLUICE__V1__RECORD__BODY_INSERT;
	r->insert = ins;
	return r;
}

sluice_record *
tu_std_relation(sluice_arena *a)
{
	static const char *const cols[] = {"id:20", "name:25", "bio:25", "blob:17"};
	return tu_relation(a, TU_REL_ID, "public", "items", 4, cols);
}

sluice_record *
tu_std_insert(sluice_arena *a, uint64_t seed, uint64_t id, size_t blob_len)
{
	uint64_t st = seed ^ (id * 0x9E3779B97F4A7C15ull);
	char idtext[32], name[64];
	snprintf(idtext, sizeof(idtext), "%" PRIu64, id);
	snprintf(name, sizeof(name), "item-%" PRIu64 "-%016" PRIx64, id, tu_rand(&st));
	uint8_t *blob = sluice_arena_alloc(a, blob_len ? blob_len : 1);
	tu_rand_bytes(&st, blob, blob_len);
	Sluice__V1__ValueKind kinds[4] = {SLUICE__V1__VALUE_KIND__VALUE_TEXT,
					  SLUICE__V1__VALUE_KIND__VALUE_TEXT,
					  (id % 3 == 0) ? SLUICE__V1__VALUE_KIND__VALUE_NULL
							: SLUICE__V1__VALUE_KIND__VALUE_TEXT,
					  SLUICE__V1__VALUE_KIND__VALUE_BINARY};
	ProtobufCBinaryData vals[4];
	vals[0] = tu_text(a, idtext);
	vals[1] = tu_text(a, name);
	vals[2] = (id % 3 == 0) ? tu_bin(a, "", 0) : tu_text(a, "bio: caf\xc3\xa9 \xe2\x82\xac");
	vals[3].len = blob_len;
	vals[3].data = blob;
	return tu_insert(a, TU_REL_ID, tu_row(a, 4, kinds, vals));
}

void
tu_append(sluice_writer *w, sluice_record *rec)
{
	assert_true(sluice_writer_append(w, rec));
}

uint64_t
tu_append_txn(sluice_writer *w, sluice_arena *a, int64_t time_us, uint64_t seed, size_t nrows,
	      size_t blob_len)
{
	sluice_record *b = tu_begin(a, time_us, (uint64_t)time_us * 16, "node-a");
	tu_append(w, b);
	uint64_t txseq = b->begin->txseq;
	for (size_t i = 0; i < nrows; i++)
		tu_append(w, tu_std_insert(a, seed, txseq * 1000 + i, blob_len));
	sluice_record *c = tu_commit(a, (uint64_t)time_us * 16 + 8, (uint32_t)nrows);
	tu_append(w, c);
	assert_int_equal(c->commit->txseq, txseq);
	return txseq;
}

/* ---- packing ---- */

void
tu_pack(const ProtobufCMessage *m, sluice_buf *out)
{
	sluice_buf_reset(out);
	size_t size = protobuf_c_message_get_packed_size(m);
	sluice_buf_reserve(out, size ? size : 1);
	out->len = protobuf_c_message_pack(m, out->data);
	assert_int_equal(out->len, size);
}

bool
tu_msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
	sluice_buf x = {0}, y = {0};
	tu_pack(a, &x);
	tu_pack(b, &y);
	bool eq = x.len == y.len && (x.len == 0 || memcmp(x.data, y.data, x.len) == 0);
	sluice_buf_free(&x);
	sluice_buf_free(&y);
	return eq;
}

/* ---- prng ---- */

uint64_t
tu_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

void
tu_rand_bytes(uint64_t *state, uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i + 8 <= n) {
		uint64_t v = tu_rand(state);
		memcpy(p + i, &v, 8);
		i += 8;
	}
	if (i < n) {
		uint64_t v = tu_rand(state);
		memcpy(p + i, &v, n - i);
	}
}

/* ---- reading ---- */

void
tu_read_all(sluice_store *store, const char *stream, const sluice_trust *trust, uint64_t from_txseq,
	    tu_read_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->dense = true;
	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(store, stream, trust, from_txseq, &r));
	uint64_t open = 0, expect_next = 0;
	for (;;) {
		const sluice_record *rec = NULL;
		sluice_reader_status s = sluice_reader_next(r, &rec);
		if (s != SLUICE_READER_RECORD) {
			st->end = s;
			break;
		}
		st->records++;
		uint64_t begin_txseq = 0;
		if (rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN)
			begin_txseq = rec->begin->txseq;
		else if (rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN)
			begin_txseq = rec->snapshot_begin->txseq;
		if (begin_txseq != 0) {
			if (open != 0 || (expect_next != 0 && begin_txseq != expect_next))
				st->dense = false;
			if (st->first_txseq == 0)
				st->first_txseq = begin_txseq;
			open = begin_txseq;
			expect_next = begin_txseq + 1;
		}
		uint64_t end_txseq = 0;
		if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT) {
			end_txseq = rec->commit->txseq;
			st->last_commit_time = rec->commit->commit_time_us;
		} else if (rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_END)
			end_txseq = rec->snapshot_end->txseq;
		if (end_txseq != 0) {
			if (end_txseq != open)
				st->dense = false;
			open = 0;
			st->transactions++;
			st->last_txseq = end_txseq;
		}
		const sluice_reader_position *pos = sluice_reader_position_get(r);
		if (rec->body_case != SLUICE__V1__RECORD__BODY_RELATION &&
		    rec->body_case != SLUICE__V1__RECORD__BODY_HEARTBEAT &&
		    rec->body_case != SLUICE__V1__RECORD__BODY_MESSAGE && pos->txseq != open &&
		    end_txseq == 0)
			st->dense = false;
	}
	if (st->end == SLUICE_READER_ERROR)
		fprintf(stderr, "  reader error: %s\n", sluice_reader_error(r));
	sluice_reader_close(r);
}
