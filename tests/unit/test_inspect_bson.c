/*
 * sluice inspect on MongoDB records: raw BSON fields print as canonical
 * extended JSON that parses back (bson_new_from_json) to the same bytes, next
 * to those bytes in base64; positions, MongoDB relations and namespace
 * changes print their fields; BSON that is not a document prints as
 * <name>_invalid with its bytes and never as JSON text; values over 1 MiB
 * (documents, their base64, PostgreSQL text and binary values) are cut each
 * in its own marker, never with a key twice in a line, and printed whole
 * with --full-values. argv[1] is the sluice binary. print_bson itself
 * refuses a string, key or binary value too long for libbson to render.
 */
#include "testutil.h"

#include <bson/bson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "bson_zoo.h"
#include "print.h"

static const char *ib_sluice;

#define IB_REL      7u
#define IB_PG_REL   8u /* a PostgreSQL table with a text and a binary column */
#define IB_TIME     INT64_C(1700000000000000)
#define IB_BIG      ((size_t)1200 * 1024) /* a string past inspect's 1 MiB cut */
#define IB_MAX_DOCS 64

/* The BSON fields inspect renders, by the name it prints them under. */
static const char *const ib_names[] = {"document", "document_key", "update_description",
				       "resume_token", "event"};

/* One BSON field as written, in stream order. */
typedef struct ib_doc {
	char type[32];    /* record type name */
	const char *name; /* field name in the output */
	sluice_buf bytes; /* printed cut: the prefix */
	size_t cut_len;   /* printed cut: the whole size; 0: printed whole */
} ib_doc;

typedef struct ib_list {
	ib_doc v[IB_MAX_DOCS];
	size_t n;
} ib_list;

static void
ib_list_add(ib_list *l, const char *type, const char *name, const uint8_t *data, size_t len)
{
	assert_true(l->n < IB_MAX_DOCS);
	ib_doc *d = &l->v[l->n++];
	snprintf(d->type, sizeof(d->type), "%s", type);
	d->name = name;
	d->cut_len = 0;
	memset(&d->bytes, 0, sizeof(d->bytes));
	sluice_buf_append(&d->bytes, data, len);
}

static void
ib_list_free(ib_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		sluice_buf_free(&l->v[i].bytes);
	l->n = 0;
}

/* What the test wrote: the valid and the invalid BSON fields, in order. */
typedef struct ib_expect {
	ib_list valid;
	ib_list invalid;
	sluice_buf deep;    /* the document nested PRINT_BSON_MAX_DEPTH deep */
	size_t big_len;     /* BSON size of the huge document */
	sluice_buf pg_text; /* the huge PostgreSQL text value */
	sluice_buf pg_bin;  /* the huge PostgreSQL binary value */
	uint32_t commit_t;  /* cluster time of the first commit */
	uint32_t commit_i;
} ib_expect;

static ProtobufCBinaryData
ib_field(sluice_arena *a, const uint8_t *data, size_t len)
{
	return tu_bin(a, data, len);
}

/* ib_set records a valid BSON field of a record and copies it into the arena. */
static ProtobufCBinaryData
ib_set(sluice_arena *a, ib_expect *e, const char *type, const char *name, const bson_t *b)
{
	ib_list_add(&e->valid, type, name, bson_get_data(b), b->len);
	return ib_field(a, bson_get_data(b), b->len);
}

static Sluice__V1__SourcePosition *
ib_position(sluice_arena *a, uint32_t t, uint32_t i, const ProtobufCBinaryData *token)
{
	Sluice__V1__SourcePosition *p = sluice_arena_alloc(a, sizeof(*p));
	sluice__v1__source_position__init(p);
	p->has_cluster_time = true;
	p->cluster_time = (uint64_t)t << 32 | i;
	if (token != NULL) {
		p->has_resume_token = true;
		p->resume_token = *token;
	}
	return p;
}

static sluice_record *
ib_begin(sluice_arena *a, ib_expect *e, uint32_t n)
{
	sluice_record *r = tu_begin(a, IB_TIME + n, 0, "mongo1");
	r->begin->has_source_lsn = false;
	bson_t *token = bson_zoo_resume_token(n);
	r->begin->has_source_token = true;
	r->begin->source_token = ib_set(a, e, "begin", "resume_token", token);
	bson_destroy(token);
	return r;
}

static sluice_record *
ib_commit(sluice_arena *a, ib_expect *e, uint32_t t, uint32_t i)
{
	sluice_record *r = tu_commit(a, 0, 1);
	r->commit->has_end_lsn = false;
	bson_t *token = bson_zoo_resume_token(t ^ i);
	ProtobufCBinaryData tok = ib_set(a, e, "commit", "resume_token", token);
	bson_destroy(token);
	r->commit->position = ib_position(a, t, i, &tok);
	return r;
}

static sluice_record *
ib_insert(sluice_arena *a, const uint8_t *data, size_t len)
{
	sluice_record *r = tu_insert(a, IB_REL, NULL);
	r->insert->has_document = true;
	r->insert->document = ib_field(a, data, len);
	return r;
}

/* ib_nested returns {a: {a: ... {}}} with the innermost document depth levels down. */
static bson_t *
ib_nested(int depth)
{
	bson_t *d = bson_new();
	for (int i = 0; i < depth; i++) {
		bson_t *outer = bson_new();
		BSON_APPEND_DOCUMENT(outer, "a", d);
		bson_destroy(d);
		d = outer;
	}
	return d;
}

/* ib_nested_scopes returns code with a scope holding code with a scope ... depth times. */
static bson_t *
ib_nested_scopes(int depth)
{
	bson_t *d = bson_new();
	for (int i = 0; i < depth; i++) {
		bson_t *outer = bson_new();
		BSON_APPEND_CODE_WITH_SCOPE(outer, "f", "x", d);
		bson_destroy(d);
		d = outer;
	}
	return d;
}

/* ib_corrupt appends an insert of bytes that are not a printable document. */
static void
ib_corrupt(sluice_writer *w, sluice_arena *a, ib_expect *e, const uint8_t *data, size_t len)
{
	ib_list_add(&e->invalid, "insert", "document", data, len);
	tu_append(w, ib_insert(a, data, len));
}

/* ib_write_stream writes the MongoDB records of the test into env's stream. */
static void
ib_write_stream(tu_env *env, ib_expect *e)
{
	sluice_arena *a = sluice_arena_create();
	sluice_writer_options o = tu_writer_options(1 << 20, 64 << 20);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env->store, TU_STREAM, env->kp.key, &o, &w, NULL));

	sluice_record *rel = tu_relation(a, IB_REL, "shop", "orders", 0, NULL);
	rel->relation->has_replica_identity = false;
	rel->relation->source = SLUICE__V1__SOURCE_KIND__SOURCE_MONGODB;
	tu_append(w, rel);

	/* txseq 1: insert, update, delete of the type zoo. */
	bson_t *zoo = bson_zoo_new();
	bson_t *key = BCON_NEW("_id", BCON_INT32(42));
	bson_t *desc = BCON_NEW("updatedFields", "{", "a.b", BCON_INT32(1), "array.1", "x", "}",
				"removedFields", "[", "gone", "]", "truncatedArrays", "[", "{",
				"field", "array", "newSize", BCON_INT32(1), "}", "]");
	tu_append(w, ib_begin(a, e, 1));
	sluice_record *r = tu_insert(a, IB_REL, NULL);
	r->insert->has_document = true;
	r->insert->document = ib_set(a, e, "insert", "document", zoo);
	tu_append(w, r);
	r = tu_rec(a);
	Sluice__V1__Update *up = sluice_arena_alloc(a, sizeof(*up));
	sluice__v1__update__init(up);
	up->relation_id = IB_REL;
	up->has_document_key = true;
	up->document_key = ib_set(a, e, "update", "document_key", key);
	up->has_update_description = true;
	up->update_description = ib_set(a, e, "update", "update_description", desc);
	up->has_document = true;
	up->document = ib_set(a, e, "update", "document", zoo);
	r->body_case = SLUICE__V1__RECORD__BODY_UPDATE;
	r->update = up;
	tu_append(w, r);
	r = tu_rec(a);
	Sluice__V1__Delete *del = sluice_arena_alloc(a, sizeof(*del));
	sluice__v1__delete__init(del);
	del->relation_id = IB_REL;
	del->has_document_key = true;
	del->document_key = ib_set(a, e, "delete", "document_key", key);
	r->body_case = SLUICE__V1__RECORD__BODY_DELETE;
	r->delete_ = del;
	tu_append(w, r);
	e->commit_t = 1700000000;
	e->commit_i = 7;
	tu_append(w, ib_commit(a, e, e->commit_t, e->commit_i));

	/* An idle heartbeat with a postBatchResumeToken. */
	r = tu_heartbeat(a, IB_TIME + 10, 0);
	r->heartbeat->has_source_lsn = false;
	bson_t *token = bson_zoo_resume_token(99);
	ProtobufCBinaryData tok = ib_set(a, e, "heartbeat", "resume_token", token);
	bson_destroy(token);
	r->heartbeat->position = ib_position(a, 1700000001, 1, &tok);
	tu_append(w, r);

	/* txseq 2: a snapshot at a cluster time (no token) with one document. */
	r = tu_rec(a);
	Sluice__V1__SnapshotBegin *sb = sluice_arena_alloc(a, sizeof(*sb));
	sluice__v1__snapshot_begin__init(sb);
	sb->time_us = IB_TIME + 20;
	sb->origin_node = tu_strdup(a, "mongo1");
	sb->position = ib_position(a, 1700000002, 3, NULL);
	r->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN;
	r->snapshot_begin = sb;
	tu_append(w, r);
	r = tu_rec(a);
	Sluice__V1__SnapshotRow *row = sluice_arena_alloc(a, sizeof(*row));
	sluice__v1__snapshot_row__init(row);
	row->relation_id = IB_REL;
	row->has_document = true;
	row->document = ib_set(a, e, "snapshot_row", "document", key);
	r->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW;
	r->snapshot_row = row;
	tu_append(w, r);
	r = tu_rec(a);
	Sluice__V1__SnapshotEnd *se = sluice_arena_alloc(a, sizeof(*se));
	sluice__v1__snapshot_end__init(se);
	se->has_row_count = true;
	se->row_count = 1;
	r->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_END;
	r->snapshot_end = se;
	tu_append(w, r);

	/* txseq 3: a rename, with the change event as received. */
	tu_append(w, ib_begin(a, e, 3));
	token = bson_zoo_resume_token(3);
	bson_t *event =
		BCON_NEW("_id", BCON_DOCUMENT(token), "operationType", "rename", "clusterTime",
			 BCON_TIMESTAMP(1700000003, 1), "wallTime", BCON_DATE_TIME(1700000003000),
			 "ns", "{", "db", "shop", "coll", "orders", "}", "to", "{", "db", "archive",
			 "coll", "orders.2023", "}");
	bson_destroy(token);
	r = tu_rec(a);
	Sluice__V1__NamespaceChange *nc = sluice_arena_alloc(a, sizeof(*nc));
	sluice__v1__namespace_change__init(nc);
	nc->operation = tu_strdup(a, "rename");
	nc->database = tu_strdup(a, "shop");
	nc->collection = tu_strdup(a, "orders");
	nc->to_database = tu_strdup(a, "archive");
	nc->to_collection = tu_strdup(a, "orders.2023");
	nc->has_event = true;
	nc->event = ib_set(a, e, "namespace_change", "event", event);
	r->body_case = SLUICE__V1__RECORD__BODY_NAMESPACE_CHANGE;
	r->namespace_change = nc;
	tu_append(w, r);
	tu_append(w, ib_commit(a, e, 1700000003, 1));
	bson_destroy(event);

	/* txseq 4: documents that are not printable documents, each one an insert. */
	tu_append(w, ib_begin(a, e, 4));
	static const uint8_t none[1];
	ib_corrupt(w, a, e, none, 0);
	sluice_buf bad = {0};
	sluice_buf_append(&bad, bson_get_data(zoo), zoo->len);
	bad.data[0]++; /* declared length one more than the bytes */
	ib_corrupt(w, a, e, bad.data, bad.len);
	bad.data[0]--;
	bad.data[bad.len - 1] = 1; /* not NUL-terminated */
	ib_corrupt(w, a, e, bad.data, bad.len);
	sluice_buf_reset(&bad);
	static const uint8_t short_subdoc[] = {12, 0, 0, 0, 0x03, 'x', 0, 4, 0, 0, 0, 0};
	ib_corrupt(w, a, e, short_subdoc, sizeof(short_subdoc));
	static const uint8_t unknown_type[] = {8, 0, 0, 0, 0x20, 'x', 0, 0};
	ib_corrupt(w, a, e, unknown_type, sizeof(unknown_type));
	static const uint8_t trailing[] = {7, 0, 0, 0, 0, 0x0A, 0}; /* bytes after the end */
	ib_corrupt(w, a, e, trailing, sizeof(trailing));
	bson_t *b = bson_new();
	bson_append_utf8(b, "s", -1, "\xff\xfe", 2);
	ib_corrupt(w, a, e, bson_get_data(b), b->len);
	bson_destroy(b);
	b = bson_new();
	bson_append_utf8(b, "overlong", -1, "a\xc0\x80z", 4);
	ib_corrupt(w, a, e, bson_get_data(b), b->len);
	bson_destroy(b);
	b = bson_new();
	BSON_APPEND_INT32(b, "\xc3\x28", 1); /* a key that is not UTF-8 */
	ib_corrupt(w, a, e, bson_get_data(b), b->len);
	bson_destroy(b);
	b = ib_nested(PRINT_BSON_MAX_DEPTH + 1);
	ib_corrupt(w, a, e, bson_get_data(b), b->len);
	bson_destroy(b);
	b = ib_nested_scopes(5000); /* libbson renders scopes recursively, without a limit */
	ib_corrupt(w, a, e, bson_get_data(b), b->len);
	bson_destroy(b);
	tu_append(w, ib_commit(a, e, 1700000004, 1));

	/* txseq 5: the deepest document rendered, and one past inspect's cut. */
	tu_append(w, ib_begin(a, e, 5));
	b = ib_nested(PRINT_BSON_MAX_DEPTH);
	sluice_buf_append(&e->deep, bson_get_data(b), b->len);
	tu_append(w, ib_insert(a, bson_get_data(b), b->len));
	bson_destroy(b);
	char *big = malloc(IB_BIG + 1);
	assert_non_null(big);
	memset(big, 'x', IB_BIG);
	big[IB_BIG] = '\0';
	b = BCON_NEW("big", BCON_UTF8(big));
	e->big_len = b->len;
	r = tu_insert(a, IB_REL, NULL);
	r->insert->has_document = true;
	r->insert->document = ib_set(a, e, "insert", "document", b);
	tu_append(w, r);
	bson_destroy(b);
	tu_append(w, ib_commit(a, e, 1700000005, 1));

	/*
	 * txseq 6: an update (as with updateLookup) whose update_description
	 * and document are both over 1 MiB: each is cut on its own.
	 */
	tu_append(w, ib_begin(a, e, 6));
	uint8_t *noise = malloc(IB_BIG);
	assert_non_null(noise);
	uint64_t seed = 6;
	tu_rand_bytes(&seed, noise, IB_BIG);
	memset(big, 'y', IB_BIG);
	bson_t *key43 = BCON_NEW("_id", BCON_INT32(43));
	bson_t *big_desc = BCON_NEW("updatedFields", "{", "s", BCON_UTF8(big), "}", "removedFields",
				    "[", "]", "truncatedArrays", "[", "]");
	bson_t *big_doc = BCON_NEW("_id", BCON_INT32(43), "s", BCON_UTF8(big), "bin",
				   BCON_BIN(BSON_SUBTYPE_BINARY, noise, (uint32_t)IB_BIG));
	r = tu_rec(a);
	up = sluice_arena_alloc(a, sizeof(*up));
	sluice__v1__update__init(up);
	up->relation_id = IB_REL;
	up->has_document_key = true;
	up->document_key = ib_set(a, e, "update", "document_key", key43);
	up->has_update_description = true;
	up->update_description = ib_set(a, e, "update", "update_description", big_desc);
	up->has_document = true;
	up->document = ib_set(a, e, "update", "document", big_doc);
	r->body_case = SLUICE__V1__RECORD__BODY_UPDATE;
	r->update = up;
	tu_append(w, r);
	tu_append(w, ib_commit(a, e, 1700000006, 1));
	bson_destroy(key43);
	bson_destroy(big_desc);
	bson_destroy(big_doc);

	/* txseq 7: a PostgreSQL row with a text and a binary value over 1 MiB. */
	static const char *const pg_cols[] = {"t", "b"};
	tu_append(w, tu_relation(a, IB_PG_REL, "public", "big", 2, pg_cols));
	tu_append(w, tu_begin(a, IB_TIME + 70, 0x7000, "pg1"));
	for (size_t i = 0; i < IB_BIG; i++)
		big[i] = (char)('0' + i % 10);
	sluice_buf_append(&e->pg_text, big, IB_BIG);
	sluice_buf_append(&e->pg_bin, noise, IB_BIG);
	Sluice__V1__ValueKind kinds[2] = {SLUICE__V1__VALUE_KIND__VALUE_TEXT,
					  SLUICE__V1__VALUE_KIND__VALUE_BINARY};
	ProtobufCBinaryData vals[2] = {ib_field(a, e->pg_text.data, e->pg_text.len),
				       ib_field(a, e->pg_bin.data, e->pg_bin.len)};
	tu_append(w, tu_insert(a, IB_PG_REL, tu_row(a, 2, kinds, vals)));
	tu_append(w, tu_commit(a, 0x7100, 1));
	free(noise);
	free(big);

	assert_true(sluice_writer_close(w));
	sluice_buf_free(&bad);
	bson_destroy(zoo);
	bson_destroy(key);
	bson_destroy(desc);
	sluice_arena_free(a);
}

/* ib_run runs sluice inspect --records [--json] [--full-values] and returns its output
 * (NUL-terminated). */
static void
ib_run(const tu_env *env, bool json, bool full, sluice_buf *out)
{
	char cmd[4 * TU_PATH_MAX];
	int n = snprintf(cmd, sizeof(cmd),
			 "'%s' inspect --store '%s' --stream %s --trust '%s' --records%s%s",
			 ib_sluice, env->store_dir, TU_STREAM, env->kp.pubpath,
			 json ? " --json" : "", full ? " --full-values" : "");
	assert_true(n > 0 && (size_t)n < sizeof(cmd));
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	char chunk[65536];
	size_t got;
	while ((got = fread(chunk, 1, sizeof(chunk), p)) > 0)
		sluice_buf_append(out, chunk, got);
	int st = pclose(p);
	assert_true(st != -1 && WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	sluice_buf_append_byte(out, 0);
}

/* ib_decode64 decodes base64 text into out. */
static void
ib_decode64(const char *b64, size_t len, sluice_buf *out)
{
	sluice_buf_reset(out);
	sluice_buf_reserve(out, len + 1);
	size_t bin_len = 0;
	assert_int_equal(sodium_base642bin(out->data, out->cap, b64, len, NULL, &bin_len, NULL,
					   sodium_base64_VARIANT_ORIGINAL),
			 0);
	out->len = bin_len;
}

/*
 * ib_marker tells whether the value at it is a truncation marker (an object
 * whose first member is "truncated":true; no document of the test starts so)
 * and checks that it is exactly {"truncated":true,"bytes":N,"prefix":"..."},
 * each key once; N and the prefix are returned.
 */
static bool
ib_marker(const bson_iter_t *it, size_t *bytes, const char **prefix, uint32_t *prefix_len)
{
	bson_iter_t m;
	if (!BSON_ITER_HOLDS_DOCUMENT(it))
		return false;
	assert_true(bson_iter_recurse(it, &m));
	if (!bson_iter_next(&m) || strcmp(bson_iter_key(&m), "truncated") != 0 ||
	    !BSON_ITER_HOLDS_BOOL(&m))
		return false;
	assert_true(bson_iter_bool(&m));
	assert_true(bson_iter_next(&m));
	assert_string_equal(bson_iter_key(&m), "bytes");
	assert_true(BSON_ITER_HOLDS_INT(&m));
	*bytes = (size_t)bson_iter_as_int64(&m);
	assert_true(bson_iter_next(&m));
	assert_string_equal(bson_iter_key(&m), "prefix");
	assert_true(BSON_ITER_HOLDS_UTF8(&m));
	*prefix = bson_iter_utf8(&m, prefix_len);
	assert_false(bson_iter_next(&m));
	return true;
}

/*
 * ib_bytes reads member name of obj: base64 (the bytes into out; returns 0)
 * or a marker of it (the prefix's bytes, the first 1 MiB, into out; returns
 * the whole size).
 */
static size_t
ib_bytes(const bson_t *obj, const char *name, sluice_buf *out)
{
	bson_iter_t it;
	size_t whole = 0;
	const char *b64;
	uint32_t len;
	assert_true(bson_iter_init_find(&it, obj, name));
	if (ib_marker(&it, &whole, &b64, &len)) {
		ib_decode64(b64, len, out);
		assert_true(whole > PRINT_MAX_VALUE);
		assert_int_equal(out->len, PRINT_MAX_VALUE);
		return whole;
	}
	assert_true(BSON_ITER_HOLDS_UTF8(&it));
	b64 = bson_iter_utf8(&it, &len);
	ib_decode64(b64, len, out);
	return 0;
}

/* ib_canonical is inspect's rendering of bson: canonical extended JSON without spaces. */
static void
ib_canonical(const sluice_buf *bson, sluice_buf *out)
{
	bson_t doc;
	size_t n = 0;
	assert_true(bson_init_static(&doc, bson->data, bson->len));
	char *text = bson_as_canonical_extended_json(&doc, &n);
	assert_non_null(text);
	sluice_buf_reset(out);
	bool in_string = false, escaped = false;
	for (size_t i = 0; i < n; i++) {
		char c = text[i];
		if (in_string) {
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
		} else if (c == ' ')
			continue;
		else if (c == '"')
			in_string = true;
		sluice_buf_append_byte(out, (uint8_t)c);
	}
	bson_free(text);
}

static const char *
ib_str(const bson_t *line, const char *name)
{
	bson_iter_t it;
	if (!bson_iter_init_find(&it, line, name) || !BSON_ITER_HOLDS_UTF8(&it))
		return NULL;
	return bson_iter_utf8(&it, NULL);
}

static int64_t
ib_int(const bson_t *line, const char *path)
{
	bson_iter_t it;
	assert_true(bson_iter_init(&it, line) && bson_iter_find_descendant(&it, path, &it));
	assert_true(BSON_ITER_HOLDS_NUMBER(&it));
	return bson_iter_as_int64(&it);
}

/*
 * ib_assert_distinct_keys checks a line's own members: no key twice (libbson
 * keeps both), and no truncation marker's key among them: a marker belongs
 * to its value.
 */
static void
ib_assert_distinct_keys(const bson_t *line)
{
	bson_iter_t a, b;
	assert_true(bson_iter_init(&a, line));
	while (bson_iter_next(&a)) {
		const char *key = bson_iter_key(&a);
		if (strcmp(key, "truncated") == 0 || strcmp(key, "bytes") == 0 ||
		    strcmp(key, "prefix") == 0)
			fail_msg("a marker's key \"%s\" among a line's members", key);
		b = a;
		while (bson_iter_next(&b))
			if (strcmp(key, bson_iter_key(&b)) == 0)
				fail_msg("key \"%s\" twice in a line", key);
	}
}

/* ib_bson_name tells which BSON field a member of a line is about (NULL: none), and how. */
static const char *
ib_bson_name(const char *key, bool *invalid, bool *base64)
{
	for (size_t k = 0; k < sizeof(ib_names) / sizeof(ib_names[0]); k++) {
		size_t n = strlen(ib_names[k]);
		if (strncmp(key, ib_names[k], n) != 0)
			continue;
		*invalid = strcmp(key + n, "_invalid") == 0;
		*base64 = strcmp(key + n, "_bson_base64") == 0;
		if (key[n] == '\0' || *invalid || *base64)
			return ib_names[k];
	}
	return NULL;
}

/*
 * ib_check_line checks the BSON fields of one JSON line (parsed) and collects
 * them in order (a cut one with its prefix and size); want lists the fields
 * written, in the same order. Without full a field whose rendering is over
 * 1 MiB is a marker, checked against the rendering of the bytes written.
 * @return how many markers the line holds.
 */
static size_t
ib_check_line(const bson_t *line, ib_list *valid, ib_list *invalid, const ib_expect *want,
	      bool full)
{
	const char *type = ib_str(line, "type");
	assert_non_null(type);
	ib_assert_distinct_keys(line);
	sluice_buf b64 = {0}, text = {0};
	size_t fields = 0, base64s = 0, markers = 0;
	bson_iter_t it;
	assert_true(bson_iter_init(&it, line));
	while (bson_iter_next(&it)) {
		bool is_invalid, is_base64;
		const char *name = ib_bson_name(bson_iter_key(&it), &is_invalid, &is_base64);
		if (name == NULL)
			continue;
		char key[64];
		snprintf(key, sizeof(key), "%s_bson_base64", name);
		if (is_base64) {
			base64s++;
			continue;
		}
		fields++;
		size_t cut = ib_bytes(line, key, &b64);
		if (cut != 0)
			markers++;
		if (is_invalid) {
			assert_true(BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it));
			assert_int_equal(cut, 0);
			ib_list_add(invalid, type, name, b64.data, b64.len);
			continue;
		}
		ib_list_add(valid, type, name, b64.data, b64.len);
		valid->v[valid->n - 1].cut_len = cut;
		assert_true(valid->n <= want->valid.n);
		const ib_doc *w = &want->valid.v[valid->n - 1];
		size_t bytes;
		const char *prefix;
		uint32_t prefix_len;
		if (ib_marker(&it, &bytes, &prefix, &prefix_len)) {
			/* {"truncated":true,"bytes":N,"prefix":"..."}: the rendering's first 1 MiB
			 */
			markers++;
			assert_false(full);
			assert_int_equal(bytes, w->bytes.len);
			ib_canonical(&w->bytes, &text);
			assert_true(text.len > PRINT_MAX_VALUE);
			assert_true(prefix_len <= PRINT_MAX_VALUE &&
				    prefix_len + 4 > PRINT_MAX_VALUE);
			assert_memory_equal(prefix, text.data, prefix_len);
			continue;
		}
		/* Canonical extended JSON parsed back: the very bytes in base64, and as written. */
		assert_true(BSON_ITER_HOLDS_DOCUMENT(&it));
		assert_int_equal(cut, 0);
		uint32_t len;
		const uint8_t *data;
		bson_iter_document(&it, &len, &data);
		assert_int_equal(len, b64.len);
		assert_memory_equal(data, b64.data, len);
	}
	assert_int_equal(fields, base64s);
	sluice_buf_free(&b64);
	sluice_buf_free(&text);
	return markers;
}

/*
 * ib_check_pg_line checks the row with the huge PostgreSQL values: cut each
 * in its own marker (the binary one inside its {"base64":...}), or whole
 * with full. @return how many markers it holds.
 */
static size_t
ib_check_pg_line(const bson_t *line, const ib_expect *e, bool full)
{
	bson_iter_t it, v;
	size_t markers = 0, bytes;
	const char *prefix;
	uint32_t len;
	ib_assert_distinct_keys(line);
	assert_true(bson_iter_init(&it, line) && bson_iter_find_descendant(&it, "new.t", &v));
	if (ib_marker(&v, &bytes, &prefix, &len)) {
		markers++;
		assert_false(full);
		assert_int_equal(bytes, e->pg_text.len);
		assert_int_equal(len, PRINT_MAX_VALUE);
	} else {
		assert_true(full && BSON_ITER_HOLDS_UTF8(&v));
		prefix = bson_iter_utf8(&v, &len);
		assert_int_equal(len, e->pg_text.len);
	}
	assert_memory_equal(prefix, e->pg_text.data, len);

	assert_true(bson_iter_init(&it, line) && bson_iter_find_descendant(&it, "new.b", &v));
	assert_true(BSON_ITER_HOLDS_DOCUMENT(&v));
	const uint8_t *data;
	bson_iter_document(&v, &len, &data);
	bson_t bin;
	assert_true(bson_init_static(&bin, data, len));
	sluice_buf got = {0};
	size_t cut = ib_bytes(&bin, "base64", &got);
	if (cut != 0) {
		markers++;
		assert_false(full);
		assert_int_equal(cut, e->pg_bin.len);
	} else {
		assert_true(full);
		assert_int_equal(got.len, e->pg_bin.len);
	}
	assert_memory_equal(got.data, e->pg_bin.data, got.len);
	sluice_buf_free(&got);
	return markers;
}

/* ib_assert_lists_equal compares what was printed with what was written. @return the cut ones. */
static size_t
ib_assert_lists_equal(const ib_list *got, const ib_list *want)
{
	size_t cut = 0;
	assert_int_equal(got->n, want->n);
	for (size_t i = 0; i < want->n; i++) {
		assert_string_equal(got->v[i].type, want->v[i].type);
		assert_string_equal(got->v[i].name, want->v[i].name);
		if (got->v[i].cut_len != 0) {
			/* printed as the base64 of its first 1 MiB */
			cut++;
			assert_int_equal(got->v[i].cut_len, want->v[i].bytes.len);
			assert_int_equal(got->v[i].bytes.len, PRINT_MAX_VALUE);
		} else
			assert_int_equal(got->v[i].bytes.len, want->v[i].bytes.len);
		if (got->v[i].bytes.len > 0)
			assert_memory_equal(got->v[i].bytes.data, want->v[i].bytes.data,
					    got->v[i].bytes.len);
	}
	return cut;
}

/* ib_deep_text is the compact JSON of ib_nested(depth): {"a":{"a":...{}...}}. */
static void
ib_deep_text(int depth, sluice_buf *out)
{
	for (int i = 0; i < depth; i++)
		sluice_buf_append_str(out, "{\"a\":");
	sluice_buf_append_str(out, "{}");
	for (int i = 0; i < depth; i++)
		sluice_buf_append_byte(out, '}');
}

static void
ib_expect_free(ib_expect *e)
{
	ib_list_free(&e->valid);
	ib_list_free(&e->invalid);
	sluice_buf_free(&e->deep);
	sluice_buf_free(&e->pg_text);
	sluice_buf_free(&e->pg_bin);
}

/*
 * ib_check_json checks inspect --records --json [--full-values]: every BSON
 * field printed as written, every line with distinct keys, the values over
 * 1 MiB cut each in its own marker (the update of txseq 6 has four: two
 * documents, two base64) or, with full, printed whole.
 */
static void
ib_check_json(const char *name, bool full)
{
	tu_env env;
	tu_env_init(&env, name);
	ib_expect e;
	memset(&e, 0, sizeof(e));
	ib_write_stream(&env, &e);

	sluice_buf out = {0}, deep = {0};
	ib_run(&env, true, full, &out);
	ib_deep_text(PRINT_BSON_MAX_DEPTH, &deep);
	sluice_buf_append_byte(&deep, 0);

	ib_list valid = {.n = 0}, invalid = {.n = 0};
	bool saw_deep = false, saw_relation = false, saw_rename = false, saw_pg = false;
	size_t commits = 0, heartbeats = 0, snapshots = 0, markers = 0, big_updates = 0;
	char *next = NULL;
	for (char *l = (char *)out.data; *l != '\0'; l = next) {
		char *nl = strchr(l, '\n');
		assert_non_null(nl); /* every line ends */
		*nl = '\0';
		next = nl + 1;
		char *d = strstr(l, (const char *)deep.data);
		if (d != NULL) {
			/* Too deep for libbson's JSON reader (100 levels): compared as text. */
			assert_false(saw_deep);
			saw_deep = true;
			assert_true(d - l > 12 && strncmp(d - 12, ",\"document\":", 12) == 0);
			continue;
		}
		bson_error_t err;
		bson_t *line = bson_new_from_json((const uint8_t *)l, -1, &err);
		if (line == NULL)
			fail_msg("inspect line is not extended JSON (%s): %.300s", err.message, l);
		const char *type = ib_str(line, "type");
		size_t m = ib_check_line(line, &valid, &invalid, &e, full);
		markers += m;
		if (strcmp(type, "relation") == 0) {
			const char *rel = ib_str(line, "relation");
			if (strcmp(rel, "public.big") == 0) {
				assert_string_equal(ib_str(line, "source"), "postgres");
			} else {
				saw_relation = true;
				assert_string_equal(rel, "shop.orders");
				assert_string_equal(ib_str(line, "source"), "mongodb");
			}
		} else if (strcmp(type, "update") == 0) {
			if (m > 0) {
				big_updates++;
				assert_int_equal(m, 4);
			}
		} else if (strcmp(type, "insert") == 0 &&
			   strcmp(ib_str(line, "relation"), "public.big") == 0) {
			assert_false(saw_pg);
			saw_pg = true;
			markers += ib_check_pg_line(line, &e, full);
		} else if (strcmp(type, "commit") == 0) {
			if (commits++ == 0) {
				assert_int_equal(ib_int(line, "cluster_time.t"), e.commit_t);
				assert_int_equal(ib_int(line, "cluster_time.i"), e.commit_i);
			}
		} else if (strcmp(type, "heartbeat") == 0) {
			heartbeats++;
			assert_int_equal(ib_int(line, "cluster_time.t"), 1700000001);
			assert_int_equal(ib_int(line, "cluster_time.i"), 1);
		} else if (strcmp(type, "snapshot_begin") == 0) {
			snapshots++;
			assert_int_equal(ib_int(line, "cluster_time.t"), 1700000002);
			assert_int_equal(ib_int(line, "cluster_time.i"), 3);
		} else if (strcmp(type, "namespace_change") == 0) {
			saw_rename = true;
			assert_string_equal(ib_str(line, "operation"), "rename");
			assert_string_equal(ib_str(line, "database"), "shop");
			assert_string_equal(ib_str(line, "collection"), "orders");
			assert_string_equal(ib_str(line, "to_database"), "archive");
			assert_string_equal(ib_str(line, "to_collection"), "orders.2023");
		}
		bson_destroy(line);
	}
	assert_true(saw_relation && saw_rename && saw_deep && saw_pg);
	assert_int_equal(commits, 6);
	assert_int_equal(heartbeats, 1);
	assert_int_equal(snapshots, 1);
	/* Cut: the big insert (document, base64), the update (4), the PostgreSQL row (2). */
	assert_int_equal(markers, full ? 0 : 8);
	assert_int_equal(big_updates, full ? 0 : 1);
	/* In base64: the big insert's document, the update's description and document. */
	assert_int_equal(ib_assert_lists_equal(&valid, &e.valid), full ? 0 : 3);
	assert_int_equal(ib_assert_lists_equal(&invalid, &e.invalid), 0);

	ib_list_free(&valid);
	ib_list_free(&invalid);
	ib_expect_free(&e);
	sluice_buf_free(&deep);
	sluice_buf_free(&out);
	tu_env_free(&env);
}

static void
test_inspect_bson_json(void **state)
{
	(void)state;
	ib_check_json("inspect-bson", false);
}

static void
test_inspect_bson_json_full_values(void **state)
{
	(void)state;
	ib_check_json("inspect-bson-full", true);
}

/* ib_count counts the occurrences of needle in text. */
static size_t
ib_count(const char *text, const char *needle)
{
	size_t n = 0;
	for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void
ib_check_text(const char *name, bool full)
{
	tu_env env;
	tu_env_init(&env, name);
	ib_expect e;
	memset(&e, 0, sizeof(e));
	ib_write_stream(&env, &e);

	sluice_buf out = {0};
	ib_run(&env, false, full, &out);
	const char *t = (const char *)out.data;
	/* Relaxed extended JSON: plain numbers, ISO dates. */
	assert_non_null(strstr(t, " relation_id=7 relation=shop.orders source=mongodb\n"));
	assert_non_null(strstr(t, " document={\"_id\":{\"$oid\":\"65f0a1b2c3d4e5f601234567\"},"
				  "\"i32\":1,\"i32min\":-2147483648,"));
	assert_non_null(strstr(t, "\"date\":{\"$date\":\"2023-11-14T22:13:20.123Z\"}"));
	assert_non_null(strstr(t, " document_key={\"_id\":42}"));
	assert_non_null(
		strstr(t, " cluster_time=Timestamp(1700000000,7) resume_token={\"_data\":"));
	assert_non_null(strstr(t, " operation=rename database=shop collection=orders "
				  "to_database=archive to_collection=orders.2023 event={\"_id\":"));
	assert_non_null(strstr(t, " document=<0 bytes invalid BSON>\n"));
	char tail[64];
	snprintf(tail, sizeof(tail), "xxx...<%zu bytes>\n", e.big_len);
	assert_true((strstr(t, tail) == NULL) == full);
	/* Cut: the big insert, the update's description and document, the PostgreSQL text. */
	assert_int_equal(ib_count(t, "...<"), full ? 0 : 4);
	snprintf(tail, sizeof(tail), "789\", b=<%zu bytes>)\n", e.pg_bin.len);
	assert_true((strstr(t, tail) != NULL) == full);
	assert_int_equal(ib_count(t, " bytes invalid BSON>"), e.invalid.n);

	ib_expect_free(&e);
	sluice_buf_free(&out);
	tu_env_free(&env);
}

static void
test_inspect_bson_text(void **state)
{
	(void)state;
	ib_check_text("inspect-bson-text", false);
}

static void
test_inspect_bson_text_full_values(void **state)
{
	(void)state;
	ib_check_text("inspect-bson-text-full", true);
}

/*
 * test_print_bson_limits: a string, key or binary value over
 * PRINT_BSON_MAX_STRING is not rendered (libbson 1.23 aborts once its text
 * passes 2 GiB; a record can hold 1 GiB), one of that size is.
 */
static void
test_print_bson_limits(void **state)
{
	(void)state;
	size_t n = PRINT_BSON_MAX_STRING + 1;
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, 'x', n);
	s[n] = '\0';
	bson_t *over[3] = {bson_new(), bson_new(), bson_new()};
	assert_true(bson_append_utf8(over[0], "s", 1, s, (int)n));
	assert_true(bson_append_int32(over[1], s, (int)n, 1));
	assert_true(bson_append_binary(over[2], "b", 1, BSON_SUBTYPE_BINARY, (const uint8_t *)s,
				       (uint32_t)n));
	bson_t *at = bson_new();
	assert_true(bson_append_utf8(at, "s", 1, s, (int)n - 1));
	for (int json = 0; json <= 1; json++) {
		sluice_buf out = {0};
		for (size_t i = 0; i < 3; i++) {
			assert_false(print_bson(&out, json, bson_get_data(over[i]), over[i]->len,
						SIZE_MAX));
			assert_int_equal(out.len, 0);
		}
		if (json) { /* rendered, then cut (libbson escapes the string whole: slow) */
			assert_true(print_bson(&out, json, bson_get_data(at), at->len,
					       PRINT_MAX_VALUE));
			assert_true(out.len > PRINT_MAX_VALUE && out.len < PRINT_MAX_VALUE + 64);
		}
		sluice_buf_free(&out);
	}
	for (size_t i = 0; i < 3; i++)
		bson_destroy(over[i]);
	bson_destroy(at);
	free(s);
}

int
main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: test_inspect_bson PATH/TO/sluice\n");
		return 2;
	}
	ib_sluice = argv[1];
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_inspect_bson_json),
		cmocka_unit_test(test_inspect_bson_json_full_values),
		cmocka_unit_test(test_inspect_bson_text),
		cmocka_unit_test(test_inspect_bson_text_full_values),
		cmocka_unit_test(test_print_bson_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
