/* sluice-mongo-peer: a MongoDB replica-set primary for tests, speaking the wire protocol. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <bson/bson.h>

#include "wire.h"

#define MPEER_MAX_CONNS    256
#define MPEER_MAX_SESSIONS 10000
#define MPEER_DB_MAX       64
#define MPEER_COLL_MAX     256
#define MPEER_NS_MAX       (MPW_DB_MAX + MPEER_COLL_MAX + 64)
#define MPEER_BATCH_BYTES  (8 * 1024 * 1024)
#define MPEER_TOMBS_MAX    10000 /* deleted _ids remembered per collection for write conflicts */

/* Error codes the peer answers with (MongoDB's error_codes.yml). */
#define MPEER_E_BAD_VALUE          2
#define MPEER_E_ILLEGAL_OPERATION  20
#define MPEER_E_FAILED_TO_PARSE    9
#define MPEER_E_TYPE_MISMATCH      14
#define MPEER_E_NS_NOT_FOUND       26
#define MPEER_E_CONFLICTING_OPS    40
#define MPEER_E_CURSOR_NOT_FOUND   43
#define MPEER_E_NO_MATCHING_DOC    47
#define MPEER_E_CMD_NOT_FOUND      59
#define MPEER_E_IMMUTABLE_FIELD    66
#define MPEER_E_INVALID_NS         73
#define MPEER_E_WRITE_CONFLICT     112
#define MPEER_E_TXN_TOO_OLD        225
#define MPEER_E_NO_SUCH_TXN        251
#define MPEER_E_TXN_COMMITTED      256
#define MPEER_E_INVALID_TOKEN      260
#define MPEER_E_NOT_IN_TXN         263
#define MPEER_E_FATAL_STREAM       280
#define MPEER_E_HISTORY_LOST       286
#define MPEER_E_DUPLICATE_KEY      11000
#define MPEER_E_UNRECOGNIZED_STAGE 40324
#define MPEER_E_BOTH_RESUME        50865

static volatile sig_atomic_t mpeer_stop;
static int mpeer_port;
static char mpeer_host[64];
static const char *mpeer_state_path; /* borrowed from argv */
static bool mpeer_standalone;        /* --standalone: no replica set, no transactions */
static size_t mpeer_history = 100000;
static int32_t mpeer_next_conn_id = 1;

/* mpeer_log writes one line to stderr, prefixed with the program name. */
static void mpeer_log(const char *fmt, ...) BSON_GNUC_PRINTF(1, 2);
static void
mpeer_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("sluice-mongo-peer: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static int64_t
mpeer_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
mpeer_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- cluster time ---- */

/* A Timestamp as seconds << 32 | increment, so that integer order is time order. */
static uint64_t mpeer_last_ts;

/* mpeer_ts_next hands out the next cluster time: never backwards, unique. */
static uint64_t
mpeer_ts_next(void)
{
	uint64_t secs = (uint64_t)(mpeer_now_ms() / 1000);
	uint64_t last_secs = mpeer_last_ts >> 32;
	if (secs > last_secs)
		mpeer_last_ts = secs << 32 | 1;
	else
		mpeer_last_ts++;
	return mpeer_last_ts;
}

/* mpeer_ts_now is the cluster time reported when nothing is written: the last one handed out. */
static uint64_t
mpeer_ts_now(void)
{
	if (mpeer_last_ts == 0)
		return mpeer_ts_next();
	return mpeer_last_ts;
}

static bool
mpeer_append_ts(bson_t *b, const char *key, uint64_t ts)
{
	return bson_append_timestamp(b, key, -1, (uint32_t)(ts >> 32), (uint32_t)ts);
}

/* ---- collections ---- */

/*
 * Write stamps, for write conflicts between a transaction and other writes:
 * every insert, update, replacement and delete of a document, and every
 * collection coming to be under a name (creation, rename), takes the next
 * value of mpeer_wstamp. A transaction's copy of a collection remembers the
 * value when it was taken; a document the transaction writes whose real
 * stamp (or deletion record) is newer changed after that snapshot.
 */
static uint64_t mpeer_wstamp;

/* A deleted document's {_id} and the stamp of its deletion. */
typedef struct {
	bson_t *key; /* owned */
	uint64_t stamp;
} mpeer_tomb;

typedef struct {
	char db[MPEER_DB_MAX];
	char name[MPEER_COLL_MAX];
	bson_t **docs;    /* owned, each owned; _id is every document's first field */
	uint64_t *stamps; /* owned, parallel to docs: the stamp of each document's last write */
	size_t n, cap;
	bool images;      /* changeStreamPreAndPostImages.enabled: writes keep the pre-image */
	uint64_t created; /* the stamp when this collection came to be under its name */
	uint64_t mod;     /* the stamp of its newest write (created at first) */
	/* Real collections: the latest MPEER_TOMBS_MAX deletions, a ring in stamp order. */
	mpeer_tomb *tombs; /* owned */
	size_t tomb_head, tomb_n, tomb_cap;
	uint64_t tomb_lost; /* the stamp of the newest deletion record dropped (0: none) */
	/* A transaction's copy: no deletion records; the snapshot it reflects. */
	bool is_copy;
	uint64_t snap;        /* mpeer_wstamp when the copy was taken */
	uint64_t src_created; /* the real collection's created then (0: there was none) */
} mpeer_coll;

static mpeer_coll **mpeer_colls; /* owned */
static size_t mpeer_ncolls, mpeer_colls_cap;

static void
mpeer_coll_free(mpeer_coll *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++)
		bson_destroy(c->docs[i]);
	free(c->docs);
	free(c->stamps);
	for (size_t i = 0; i < c->tomb_n; i++)
		bson_destroy(c->tombs[(c->tomb_head + i) % c->tomb_cap].key);
	free(c->tombs);
	free(c);
}

static mpeer_coll *
mpeer_coll_new(const char *db, const char *name)
{
	mpeer_coll *c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	bson_strncpy(c->db, db, sizeof c->db);
	bson_strncpy(c->name, name, sizeof c->name);
	c->created = c->mod = ++mpeer_wstamp;
	return c;
}

static mpeer_coll *
mpeer_coll_copy(const mpeer_coll *src)
{
	mpeer_coll *c = mpeer_coll_new(src->db, src->name);
	if (c == NULL)
		return NULL;
	c->docs = calloc(src->n ? src->n : 1, sizeof *c->docs);
	c->stamps = calloc(src->n ? src->n : 1, sizeof *c->stamps);
	if (c->docs == NULL || c->stamps == NULL) {
		mpeer_coll_free(c);
		return NULL;
	}
	c->cap = src->n ? src->n : 1;
	c->images = src->images;
	for (size_t i = 0; i < src->n; i++) {
		c->stamps[c->n] = src->stamps[i];
		c->docs[c->n++] = bson_copy(src->docs[i]);
	}
	return c;
}

/* mpeer_coll_push appends doc (taking ownership), stamped as a new write. */
static bool
mpeer_coll_push(mpeer_coll *c, bson_t *doc)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		bson_t **d = realloc(c->docs, cap * sizeof *d);
		if (d == NULL) {
			bson_destroy(doc);
			return false;
		}
		c->docs = d;
		uint64_t *st = realloc(c->stamps, cap * sizeof *st);
		if (st == NULL) {
			bson_destroy(doc);
			return false;
		}
		c->stamps = st;
		c->cap = cap;
	}
	c->stamps[c->n] = c->mod = ++mpeer_wstamp;
	c->docs[c->n++] = doc;
	return true;
}

/* mpeer_coll_set replaces document i with doc (taking ownership), stamped as a new write. */
static void
mpeer_coll_set(mpeer_coll *c, size_t i, bson_t *doc)
{
	bson_destroy(c->docs[i]);
	c->docs[i] = doc;
	c->stamps[i] = c->mod = ++mpeer_wstamp;
}

static bson_t *mpeer_key_of(const bson_t *doc);

/* mpeer_coll_tomb records the deletion of doc from a real collection, dropping the oldest record
 * past MPEER_TOMBS_MAX (or when memory runs out: the loss is then remembered in tomb_lost). */
static void
mpeer_coll_tomb(mpeer_coll *c, const bson_t *doc, uint64_t stamp)
{
	if (c->tomb_n == c->tomb_cap && c->tomb_cap < MPEER_TOMBS_MAX) {
		size_t cap = c->tomb_cap ? c->tomb_cap * 2 : 16;
		if (cap > MPEER_TOMBS_MAX)
			cap = MPEER_TOMBS_MAX;
		mpeer_tomb *t = malloc(cap * sizeof *t);
		if (t != NULL) {
			for (size_t i = 0; i < c->tomb_n; i++)
				t[i] = c->tombs[(c->tomb_head + i) % c->tomb_cap];
			free(c->tombs);
			c->tombs = t;
			c->tomb_cap = cap;
			c->tomb_head = 0;
		}
	}
	if (c->tomb_cap == 0) {
		c->tomb_lost = stamp;
		return;
	}
	if (c->tomb_n == c->tomb_cap) {
		mpeer_tomb *old = &c->tombs[c->tomb_head];
		c->tomb_lost = old->stamp;
		bson_destroy(old->key);
		c->tomb_head = (c->tomb_head + 1) % c->tomb_cap;
		c->tomb_n--;
	}
	mpeer_tomb *t = &c->tombs[(c->tomb_head + c->tomb_n++) % c->tomb_cap];
	t->key = mpeer_key_of(doc);
	t->stamp = stamp;
}

/* mpeer_coll_remove deletes document i; a real collection records the deletion. */
static void
mpeer_coll_remove(mpeer_coll *c, size_t i)
{
	uint64_t stamp = c->mod = ++mpeer_wstamp;
	if (!c->is_copy)
		mpeer_coll_tomb(c, c->docs[i], stamp);
	bson_destroy(c->docs[i]);
	memmove(c->docs + i, c->docs + i + 1, (c->n - i - 1) * sizeof *c->docs);
	memmove(c->stamps + i, c->stamps + i + 1, (c->n - i - 1) * sizeof *c->stamps);
	c->n--;
}

static mpeer_coll *
mpeer_find_coll(const char *db, const char *name)
{
	for (size_t i = 0; i < mpeer_ncolls; i++)
		if (strcmp(mpeer_colls[i]->db, db) == 0 && strcmp(mpeer_colls[i]->name, name) == 0)
			return mpeer_colls[i];
	return NULL;
}

static mpeer_coll *
mpeer_get_coll(const char *db, const char *name)
{
	mpeer_coll *c = mpeer_find_coll(db, name);
	if (c != NULL)
		return c;
	if (mpeer_ncolls == mpeer_colls_cap) {
		size_t cap = mpeer_colls_cap ? mpeer_colls_cap * 2 : 16;
		mpeer_coll **n = realloc(mpeer_colls, cap * sizeof *n);
		if (n == NULL)
			return NULL;
		mpeer_colls = n;
		mpeer_colls_cap = cap;
	}
	c = mpeer_coll_new(db, name);
	if (c != NULL)
		mpeer_colls[mpeer_ncolls++] = c;
	return c;
}

static void
mpeer_drop_coll(mpeer_coll *c)
{
	for (size_t i = 0; i < mpeer_ncolls; i++) {
		if (mpeer_colls[i] == c) {
			memmove(mpeer_colls + i, mpeer_colls + i + 1,
				(mpeer_ncolls - i - 1) * sizeof *mpeer_colls);
			mpeer_ncolls--;
			break;
		}
	}
	mpeer_coll_free(c);
}

/* ---- values, filters and updates ---- */

static bool
mpeer_is_number(bson_type_t t)
{
	return t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64 || t == BSON_TYPE_DOUBLE;
}

static double
mpeer_as_double(const bson_value_t *v)
{
	switch (v->value_type) {
	case BSON_TYPE_INT32:
		return v->value.v_int32;
	case BSON_TYPE_INT64:
		return (double)v->value.v_int64;
	default:
		return v->value.v_double;
	}
}

/* mpeer_values_equal compares like MongoDB's equality: numbers by value, the rest by bytes. */
static bool
mpeer_values_equal(const bson_value_t *a, const bson_value_t *b)
{
	if (mpeer_is_number(a->value_type) && mpeer_is_number(b->value_type)) {
		if (a->value_type == BSON_TYPE_DOUBLE || b->value_type == BSON_TYPE_DOUBLE)
			return mpeer_as_double(a) == mpeer_as_double(b);
		int64_t x = a->value_type == BSON_TYPE_INT32 ? a->value.v_int32 : a->value.v_int64;
		int64_t y = b->value_type == BSON_TYPE_INT32 ? b->value.v_int32 : b->value.v_int64;
		return x == y;
	}
	if (a->value_type != b->value_type)
		return false;
	bson_t x = BSON_INITIALIZER, y = BSON_INITIALIZER;
	bool eq = bson_append_value(&x, "", 0, a) && bson_append_value(&y, "", 0, b) &&
		  x.len == y.len && memcmp(bson_get_data(&x), bson_get_data(&y), x.len) == 0;
	bson_destroy(&x);
	bson_destroy(&y);
	return eq;
}

/* mpeer_doc_id finds the _id of a stored document. */
static bool
mpeer_doc_id(const bson_t *doc, bson_iter_t *it)
{
	return bson_iter_init_find(it, doc, "_id");
}

/* mpeer_match_one tests one filter field against doc: 1 matches, 0 does not, -1 unsupported. */
static int
mpeer_match_one(const bson_t *doc, const char *key, bson_iter_t *cond)
{
	bson_iter_t it, found;
	bool present = false;
	if (bson_iter_init(&it, doc)) {
		if (strchr(key, '.') != NULL)
			present = bson_iter_find_descendant(&it, key, &found);
		else
			present = bson_iter_find(&it, key) && (found = it, true);
	}
	bson_value_t missing = {.value_type = BSON_TYPE_NULL};
	const bson_value_t *have = present ? bson_iter_value(&found) : &missing;

	if (BSON_ITER_HOLDS_DOCUMENT(cond)) {
		bson_iter_t ops;
		if (bson_iter_recurse(cond, &ops) && bson_iter_next(&ops) &&
		    bson_iter_key(&ops)[0] == '$') {
			bson_iter_recurse(cond, &ops);
			while (bson_iter_next(&ops)) {
				const char *op = bson_iter_key(&ops);
				const bson_value_t *v = bson_iter_value(&ops);
				bool r;
				if (strcmp(op, "$eq") == 0) {
					r = mpeer_values_equal(have, v);
				} else if (strcmp(op, "$ne") == 0) {
					r = !mpeer_values_equal(have, v);
				} else if (strcmp(op, "$exists") == 0) {
					r = present == bson_iter_as_bool(&ops);
				} else if (strcmp(op, "$in") == 0 || strcmp(op, "$nin") == 0) {
					bson_iter_t arr;
					if (!BSON_ITER_HOLDS_ARRAY(&ops) ||
					    !bson_iter_recurse(&ops, &arr))
						return -1;
					r = false;
					while (bson_iter_next(&arr))
						if (mpeer_values_equal(have, bson_iter_value(&arr)))
							r = true;
					if (op[1] == 'n')
						r = !r;
				} else {
					return -1;
				}
				if (!r)
					return 0;
			}
			return 1;
		}
	}
	return mpeer_values_equal(have, bson_iter_value(cond)) ? 1 : 0;
}

/* mpeer_match tests a whole filter (implicit AND of fields): 1, 0, or -1 unsupported. */
static int
mpeer_match(const bson_t *doc, const bson_t *filter)
{
	bson_iter_t it;
	if (filter == NULL || !bson_iter_init(&it, filter))
		return 1;
	while (bson_iter_next(&it)) {
		const char *key = bson_iter_key(&it);
		if (key[0] == '$') {
			if (strcmp(key, "$and") != 0 || !BSON_ITER_HOLDS_ARRAY(&it))
				return -1;
			bson_iter_t arr;
			bson_iter_recurse(&it, &arr);
			while (bson_iter_next(&arr)) {
				uint32_t l;
				const uint8_t *d;
				bson_t sub;
				if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
					return -1;
				bson_iter_document(&arr, &l, &d);
				if (!bson_init_static(&sub, d, l))
					return -1;
				int r = mpeer_match(doc, &sub);
				if (r != 1)
					return r;
			}
			continue;
		}
		int r = mpeer_match_one(doc, key, &it);
		if (r != 1)
			return r;
	}
	return 1;
}

/* mpeer_err carries a MongoDB error from deep helpers up to the command that answers it. */
typedef struct {
	int32_t code;
	char msg[512];
} mpeer_err;

static bool mpeer_fail(mpeer_err *e, int32_t code, const char *fmt, ...) BSON_GNUC_PRINTF(3, 4);
static bool
mpeer_fail(mpeer_err *e, int32_t code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	e->code = code;
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	return false;
}

/* mpeer_normalize_doc returns a copy of doc with _id first (an ObjectId when it had none). */
static bson_t *
mpeer_normalize_doc(const bson_t *doc, mpeer_err *e)
{
	bson_iter_t it;
	bson_t *out = bson_new();
	if (mpeer_doc_id(doc, &it)) {
		if (BSON_ITER_HOLDS_ARRAY(&it) || BSON_ITER_HOLDS_REGEX(&it)) {
			bson_destroy(out);
			mpeer_fail(e, MPEER_E_BAD_VALUE, "can't use an array or regex for _id");
			return NULL;
		}
		bson_append_iter(out, "_id", 3, &it);
	} else {
		bson_oid_t oid;
		bson_oid_init(&oid, NULL);
		bson_append_oid(out, "_id", 3, &oid);
	}
	if (bson_iter_init(&it, doc)) {
		while (bson_iter_next(&it))
			if (strcmp(bson_iter_key(&it), "_id") != 0)
				bson_append_iter(out, NULL, 0, &it);
	}
	return out;
}

/* mpeer_find_by_id returns the index of the document whose _id equals id, or -1. */
static ssize_t
mpeer_find_by_id(const mpeer_coll *c, const bson_value_t *id)
{
	for (size_t i = 0; i < c->n; i++) {
		bson_iter_t it;
		if (mpeer_doc_id(c->docs[i], &it) && mpeer_values_equal(bson_iter_value(&it), id))
			return (ssize_t)i;
	}
	return -1;
}

/* mpeer_inc adds two numbers with MongoDB's widening: int32 overflows into int64. */
static bool
mpeer_inc(const bson_value_t *a, const bson_value_t *b, bson_value_t *out)
{
	if (a->value_type == BSON_TYPE_DOUBLE || b->value_type == BSON_TYPE_DOUBLE) {
		out->value_type = BSON_TYPE_DOUBLE;
		out->value.v_double = mpeer_as_double(a) + mpeer_as_double(b);
		return true;
	}
	int64_t x = a->value_type == BSON_TYPE_INT32 ? a->value.v_int32 : a->value.v_int64;
	int64_t y = b->value_type == BSON_TYPE_INT32 ? b->value.v_int32 : b->value.v_int64;
	int64_t s;
	if (__builtin_add_overflow(x, y, &s))
		return false;
	if (a->value_type == BSON_TYPE_INT32 && b->value_type == BSON_TYPE_INT32 &&
	    s >= INT32_MIN && s <= INT32_MAX) {
		out->value_type = BSON_TYPE_INT32;
		out->value.v_int32 = (int32_t)s;
	} else {
		out->value_type = BSON_TYPE_INT64;
		out->value.v_int64 = s;
	}
	return true;
}

static bool
mpeer_is_operator_update(const bson_t *u)
{
	bson_iter_t it;
	return bson_iter_init(&it, u) && bson_iter_next(&it) && bson_iter_key(&it)[0] == '$';
}

/* mpeer_op_field finds field name in the operator document op of update u. */
static bool
mpeer_op_field(const bson_t *u, const char *op, const char *name, bson_iter_t *out)
{
	bson_iter_t it, sub;
	if (!bson_iter_init_find(&it, u, op) || !bson_iter_recurse(&it, &sub))
		return false;
	while (bson_iter_next(&sub)) {
		if (strcmp(bson_iter_key(&sub), name) == 0) {
			*out = sub;
			return true;
		}
	}
	return false;
}

/*
 * mpeer_apply_ops applies $set/$unset/$inc (and $setOnInsert when inserting)
 * of u to old into out; updated/removed collect the updateDescription.
 */
static bool
mpeer_apply_ops(const bson_t *old, const bson_t *u, bool inserting, bson_t *out, bson_t *updated,
		bson_t *removed, mpeer_err *e)
{
	bson_iter_t it, sub, f;
	uint32_t nremoved = 0;

	/* Validate the operators and their fields first. */
	bson_iter_init(&it, u);
	while (bson_iter_next(&it)) {
		const char *op = bson_iter_key(&it);
		if (strcmp(op, "$set") != 0 && strcmp(op, "$unset") != 0 &&
		    strcmp(op, "$inc") != 0 && strcmp(op, "$setOnInsert") != 0)
			return mpeer_fail(e, MPEER_E_FAILED_TO_PARSE,
					  "Unknown modifier: %s (not implemented by the peer)", op);
		if (!BSON_ITER_HOLDS_DOCUMENT(&it) || !bson_iter_recurse(&it, &sub))
			return mpeer_fail(e, MPEER_E_FAILED_TO_PARSE,
					  "Modifiers operate on fields but we found another type");
		while (bson_iter_next(&sub)) {
			const char *name = bson_iter_key(&sub);
			if (strchr(name, '.') != NULL || name[0] == '$' || name[0] == '\0')
				return mpeer_fail(e, MPEER_E_BAD_VALUE,
						  "field path '%s' is not supported by the peer",
						  name);
			if (strcmp(op, "$inc") == 0 && !mpeer_is_number(bson_iter_type(&sub)))
				return mpeer_fail(e, MPEER_E_TYPE_MISMATCH,
						  "Cannot increment with non-numeric argument");
			bson_iter_t other;
			const char *ops[] = {"$set", "$unset", "$inc", "$setOnInsert"};
			for (size_t k = 0; k < 4; k++)
				if (strcmp(ops[k], op) != 0 &&
				    mpeer_op_field(u, ops[k], name, &other))
					return mpeer_fail(e, MPEER_E_CONFLICTING_OPS,
							  "Updating the path '%s' would create a "
							  "conflict at '%s'",
							  name, name);
		}
	}

	/* Existing fields in their order, then new ones in the update's order. */
	bson_iter_init(&it, old);
	while (bson_iter_next(&it)) {
		const char *name = bson_iter_key(&it);
		const bson_value_t *cur = bson_iter_value(&it);
		bool is_id = strcmp(name, "_id") == 0;
		if (mpeer_op_field(u, "$unset", name, &f)) {
			if (is_id)
				return mpeer_fail(
					e, MPEER_E_IMMUTABLE_FIELD,
					"Performing an update on the path '_id' would modify "
					"the immutable field '_id'");
			char key[16];
			const char *k;
			bson_uint32_to_string(nremoved++, &k, key, sizeof key);
			bson_append_utf8(removed, k, -1, name, -1);
			continue;
		}
		bool set = mpeer_op_field(u, "$set", name, &f) ||
			   (inserting && mpeer_op_field(u, "$setOnInsert", name, &f));
		if (set) {
			const bson_value_t *nv = bson_iter_value(&f);
			if (is_id && !mpeer_values_equal(cur, nv))
				return mpeer_fail(
					e, MPEER_E_IMMUTABLE_FIELD,
					"Performing an update on the path '_id' would modify "
					"the immutable field '_id'");
			bson_append_value(out, name, -1, nv);
			if (!is_id && !mpeer_values_equal(cur, nv))
				bson_append_value(updated, name, -1, nv);
			continue;
		}
		if (mpeer_op_field(u, "$inc", name, &f)) {
			bson_value_t sum;
			if (is_id)
				return mpeer_fail(
					e, MPEER_E_IMMUTABLE_FIELD,
					"Performing an update on the path '_id' would modify "
					"the immutable field '_id'");
			if (!mpeer_is_number(cur->value_type))
				return mpeer_fail(
					e, MPEER_E_TYPE_MISMATCH,
					"Cannot apply $inc to a value of non-numeric type");
			if (!mpeer_inc(cur, bson_iter_value(&f), &sum))
				return mpeer_fail(e, MPEER_E_BAD_VALUE,
						  "Failed to apply $inc: integer overflow");
			bson_append_value(out, name, -1, &sum);
			bson_append_value(updated, name, -1, &sum);
			continue;
		}
		bson_append_value(out, name, -1, cur);
	}
	const char *adders[] = {"$set", "$inc", "$setOnInsert"};
	for (size_t k = 0; k < 3; k++) {
		if (k == 2 && !inserting)
			break;
		if (!bson_iter_init_find(&it, u, adders[k]) || !bson_iter_recurse(&it, &sub))
			continue;
		while (bson_iter_next(&sub)) {
			const char *name = bson_iter_key(&sub);
			if (bson_has_field(old, name))
				continue;
			bson_append_value(out, name, -1, bson_iter_value(&sub));
			bson_append_value(updated, name, -1, bson_iter_value(&sub));
		}
	}
	return true;
}

/* mpeer_apply_replacement builds old's _id followed by the replacement's fields. */
static bool
mpeer_apply_replacement(const bson_t *old, const bson_t *u, bson_t *out, mpeer_err *e)
{
	bson_iter_t oid, rid, it;
	if (!mpeer_doc_id(old, &oid))
		return mpeer_fail(e, MPEER_E_BAD_VALUE, "document without _id");
	if (mpeer_doc_id(u, &rid) &&
	    !mpeer_values_equal(bson_iter_value(&oid), bson_iter_value(&rid)))
		return mpeer_fail(
			e, MPEER_E_IMMUTABLE_FIELD,
			"After applying the update, the (immutable) field '_id' was found "
			"to have been altered");
	bson_append_iter(out, "_id", 3, &oid);
	bson_iter_init(&it, u);
	while (bson_iter_next(&it))
		if (strcmp(bson_iter_key(&it), "_id") != 0)
			bson_append_iter(out, NULL, 0, &it);
	return true;
}

/* ---- oplog ---- */

typedef enum {
	MPEER_OP_INSERT = 'i',
	MPEER_OP_UPDATE = 'u',
	MPEER_OP_REPLACE = 'r',
	MPEER_OP_DELETE = 'd',
	MPEER_OP_DROP = 'D',
	MPEER_OP_RENAME = 'R',
	MPEER_OP_DROP_DB = 'X',
} mpeer_opkind;

typedef struct {
	uint64_t ts;
	uint32_t idx; /* position among the entries sharing ts (a transaction's txnOpIndex) */
	int64_t wall_ms;
	char op; /* mpeer_opkind */
	char db[MPEER_DB_MAX];
	char coll[MPEER_COLL_MAX];
	char to_db[MPEER_DB_MAX];
	char to_coll[MPEER_COLL_MAX];
	bson_t *key;  /* owned: documentKey {_id} */
	bson_t *doc;  /* owned: full document (insert, replace) or post-image (update) */
	bson_t *upd;  /* owned: updateDescription (update) */
	bson_t *pre;  /* owned: the document before an update, replace or delete, when the
			 collection kept images then (NULL: none) */
	bson_t *lsid; /* owned: the transaction's lsid, NULL outside transactions */
	int64_t txn_number;
} mpeer_entry;

static mpeer_entry *mpeer_oplog; /* owned ring: mpeer_oplog_n entries from mpeer_oplog_head */
static size_t mpeer_oplog_head, mpeer_oplog_n, mpeer_oplog_cap;
/* The position of the newest entry trimmed from the history (0: none ever was). */
static uint64_t mpeer_trimmed_ts;
static uint32_t mpeer_trimmed_idx;

static void
mpeer_entry_clear(mpeer_entry *e)
{
	if (e->key)
		bson_destroy(e->key);
	if (e->doc)
		bson_destroy(e->doc);
	if (e->upd)
		bson_destroy(e->upd);
	if (e->pre)
		bson_destroy(e->pre);
	if (e->lsid)
		bson_destroy(e->lsid);
	memset(e, 0, sizeof *e);
}

static mpeer_entry *
mpeer_oplog_at(size_t i)
{
	return &mpeer_oplog[(mpeer_oplog_head + i) % mpeer_oplog_cap];
}

/* mpeer_oplog_append takes ownership of e's documents; the oldest entry leaves past --history. */
static bool
mpeer_oplog_append(mpeer_entry *e)
{
	if (mpeer_oplog_n == mpeer_oplog_cap) {
		size_t cap = mpeer_oplog_cap ? mpeer_oplog_cap * 2 : 256;
		mpeer_entry *n = calloc(cap, sizeof *n);
		if (n == NULL) {
			mpeer_log("out of memory growing the oplog");
			mpeer_entry_clear(e);
			return false;
		}
		for (size_t i = 0; i < mpeer_oplog_n; i++)
			n[i] = *mpeer_oplog_at(i);
		free(mpeer_oplog);
		mpeer_oplog = n;
		mpeer_oplog_cap = cap;
		mpeer_oplog_head = 0;
	}
	*mpeer_oplog_at(mpeer_oplog_n++) = *e;
	memset(e, 0, sizeof *e);
	while (mpeer_oplog_n > mpeer_history) {
		mpeer_entry *old = mpeer_oplog_at(0);
		mpeer_trimmed_ts = old->ts;
		mpeer_trimmed_idx = old->idx;
		mpeer_entry_clear(old);
		mpeer_oplog_head = (mpeer_oplog_head + 1) % mpeer_oplog_cap;
		mpeer_oplog_n--;
	}
	return true;
}

/* A list of entries: a write's effects before they reach the oplog or a transaction. */
typedef struct {
	mpeer_entry *v; /* owned */
	size_t n, cap;
} mpeer_entries;

static mpeer_entry *
mpeer_entries_add(mpeer_entries *l, char op, const char *db, const char *coll)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		mpeer_entry *n = realloc(l->v, cap * sizeof *n);
		if (n == NULL)
			return NULL;
		l->v = n;
		l->cap = cap;
	}
	mpeer_entry *e = &l->v[l->n++];
	memset(e, 0, sizeof *e);
	e->op = op;
	bson_strncpy(e->db, db, sizeof e->db);
	bson_strncpy(e->coll, coll, sizeof e->coll);
	return e;
}

static void
mpeer_entries_free(mpeer_entries *l)
{
	for (size_t i = 0; i < l->n; i++)
		mpeer_entry_clear(&l->v[i]);
	free(l->v);
	memset(l, 0, sizeof *l);
}

/* mpeer_key_of builds {_id: ...} of a stored document. */
static bson_t *
mpeer_key_of(const bson_t *doc)
{
	bson_iter_t it;
	bson_t *k = bson_new();
	if (mpeer_doc_id(doc, &it))
		bson_append_iter(k, "_id", 3, &it);
	return k;
}

/* ---- resume tokens ---- */

/*
 * A token's _data is hex of: 0x82, the cluster time (8 bytes big-endian,
 * seconds then increment, as MongoDB's KeyString does), the entry's index at
 * that time (4 bytes) and a kind byte. Tokens therefore sort by cluster time.
 */
#define MPEER_TOKEN_HWM        0x00
#define MPEER_TOKEN_EVENT      0x80
#define MPEER_TOKEN_INVALIDATE 0x81
#define MPEER_TOKEN_HEX        28

static void
mpeer_append_token(bson_t *b, const char *key, uint64_t ts, uint32_t idx, int kind)
{
	uint8_t raw[14];
	char hex[MPEER_TOKEN_HEX + 1];
	raw[0] = 0x82;
	for (int i = 0; i < 8; i++)
		raw[1 + i] = (uint8_t)(ts >> (56 - 8 * i));
	for (int i = 0; i < 4; i++)
		raw[9 + i] = (uint8_t)(idx >> (24 - 8 * i));
	raw[13] = (uint8_t)kind;
	for (int i = 0; i < 14; i++)
		snprintf(hex + 2 * i, 3, "%02X", raw[i]);
	bson_t t;
	bson_append_document_begin(b, key, -1, &t);
	bson_append_utf8(&t, "_data", 5, hex, MPEER_TOKEN_HEX);
	bson_append_document_end(b, &t);
}

/* mpeer_parse_token decodes a token this peer issued; false when it is not one. */
static bool
mpeer_parse_token(bson_iter_t *tok, uint64_t *ts, uint32_t *idx, int *kind)
{
	bson_iter_t d;
	uint32_t len;
	if (!BSON_ITER_HOLDS_DOCUMENT(tok) || !bson_iter_recurse(tok, &d) ||
	    !bson_iter_find(&d, "_data") || !BSON_ITER_HOLDS_UTF8(&d))
		return false;
	const char *hex = bson_iter_utf8(&d, &len);
	if (len != MPEER_TOKEN_HEX)
		return false;
	uint8_t raw[14];
	for (int i = 0; i < 14; i++) {
		unsigned v = 0;
		for (int j = 0; j < 2; j++) {
			char c = hex[2 * i + j];
			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'A' && c <= 'F')
				v |= (unsigned)(c - 'A' + 10);
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else
				return false;
		}
		raw[i] = (uint8_t)v;
	}
	if (raw[0] != 0x82)
		return false;
	*ts = 0;
	for (int i = 0; i < 8; i++)
		*ts = *ts << 8 | raw[1 + i];
	*idx = 0;
	for (int i = 0; i < 4; i++)
		*idx = *idx << 8 | raw[9 + i];
	*kind = raw[13];
	return *kind == MPEER_TOKEN_HWM || *kind == MPEER_TOKEN_EVENT ||
	       *kind == MPEER_TOKEN_INVALIDATE;
}

/* ---- cursors ---- */

typedef enum { MPEER_CURSOR_FIND, MPEER_CURSOR_STREAM } mpeer_cursor_kind;
/* A change stream's use of the stored pre- and post-images. */
enum { MPEER_IMAGE_OFF, MPEER_IMAGE_WHEN_AVAILABLE, MPEER_IMAGE_REQUIRED };
typedef enum { MPEER_LEVEL_COLL, MPEER_LEVEL_DB, MPEER_LEVEL_CLUSTER } mpeer_level;

typedef struct mpeer_cursor {
	int64_t id;
	mpeer_cursor_kind kind;
	char ns[MPEER_NS_MAX];
	/* find */
	bson_t **docs; /* owned, each owned */
	size_t n, pos;
	/* change stream */
	mpeer_level level;
	char db[MPEER_DB_MAX];
	char coll[MPEER_COLL_MAX];
	bool lookup;
	int post;        /* fullDocument for updates from the stored images: MPEER_IMAGE_* */
	int before;      /* fullDocumentBeforeChange: MPEER_IMAGE_* */
	uint64_t pos_ts; /* the last position delivered: events after it come next */
	int64_t pos_idx;
	struct mpeer_cursor *next;
} mpeer_cursor;

static mpeer_cursor *mpeer_cursors; /* owned list */
static int64_t mpeer_next_cursor_id;

static void
mpeer_cursor_free(mpeer_cursor *c)
{
	if (c == NULL)
		return;
	for (size_t i = c->pos; i < c->n; i++)
		bson_destroy(c->docs[i]);
	free(c->docs);
	free(c);
}

static mpeer_cursor *
mpeer_cursor_new(mpeer_cursor_kind kind, const char *db, const char *coll)
{
	mpeer_cursor *c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	if (mpeer_next_cursor_id == 0)
		mpeer_next_cursor_id = ((int64_t)getpid() << 32) + 1000;
	c->id = mpeer_next_cursor_id++;
	c->kind = kind;
	snprintf(c->ns, sizeof c->ns, "%s.%s", db, coll);
	bson_strncpy(c->db, db, sizeof c->db);
	bson_strncpy(c->coll, coll, sizeof c->coll);
	c->next = mpeer_cursors;
	mpeer_cursors = c;
	return c;
}

static mpeer_cursor *
mpeer_cursor_find(int64_t id)
{
	for (mpeer_cursor *c = mpeer_cursors; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

static void
mpeer_cursor_kill(int64_t id)
{
	for (mpeer_cursor **pp = &mpeer_cursors; *pp; pp = &(*pp)->next) {
		if ((*pp)->id == id) {
			mpeer_cursor *c = *pp;
			*pp = c->next;
			mpeer_cursor_free(c);
			return;
		}
	}
}

/* ---- sessions and transactions ---- */

typedef enum {
	MPEER_TXN_NONE,
	MPEER_TXN_ACTIVE,
	MPEER_TXN_COMMITTED,
	MPEER_TXN_ABORTED
} mpeer_txn_state;

typedef struct mpeer_session {
	uint8_t id[16];
	bson_t *lsid; /* owned: the lsid document as the client sent it */
	int64_t txn;  /* the newest txnNumber seen */
	mpeer_txn_state state;
	mpeer_coll **copies; /* owned: the transaction's private view of the collections it wrote */
	size_t ncopies;
	mpeer_entries pending; /* the transaction's effects, in order */
	bool has_retry;
	int64_t retry_txn;
	bson_t *retry_reply; /* owned: the reply to retry_txn, answered again to a retry */
	int64_t last_used_ms;
	struct mpeer_session *next;
} mpeer_session;

static mpeer_session *mpeer_sessions; /* owned list */
static size_t mpeer_nsessions;

static void
mpeer_txn_discard(mpeer_session *s)
{
	for (size_t i = 0; i < s->ncopies; i++)
		mpeer_coll_free(s->copies[i]);
	free(s->copies);
	s->copies = NULL;
	s->ncopies = 0;
	mpeer_entries_free(&s->pending);
}

static void
mpeer_session_free(mpeer_session *s)
{
	if (s == NULL)
		return;
	mpeer_txn_discard(s);
	if (s->lsid)
		bson_destroy(s->lsid);
	if (s->retry_reply)
		bson_destroy(s->retry_reply);
	free(s);
}

/* mpeer_session_get finds or creates the session of an lsid {id: UUID}; NULL if malformed. */
static mpeer_session *
mpeer_session_get(bson_iter_t *lsid_it)
{
	bson_iter_t id;
	bson_subtype_t sub;
	uint32_t len;
	const uint8_t *data;
	if (!BSON_ITER_HOLDS_DOCUMENT(lsid_it) || !bson_iter_recurse(lsid_it, &id) ||
	    !bson_iter_find(&id, "id") || !BSON_ITER_HOLDS_BINARY(&id))
		return NULL;
	bson_iter_binary(&id, &sub, &len, &data);
	if (len != 16)
		return NULL;
	for (mpeer_session *s = mpeer_sessions; s; s = s->next) {
		if (memcmp(s->id, data, 16) == 0) {
			s->last_used_ms = mpeer_mono_ms();
			return s;
		}
	}
	if (mpeer_nsessions >= MPEER_MAX_SESSIONS) {
		/* Forget the least recently used session that has no open transaction. */
		mpeer_session **victim = NULL;
		for (mpeer_session **pp = &mpeer_sessions; *pp; pp = &(*pp)->next)
			if ((*pp)->state != MPEER_TXN_ACTIVE &&
			    (victim == NULL || (*pp)->last_used_ms < (*victim)->last_used_ms))
				victim = pp;
		if (victim == NULL)
			return NULL;
		mpeer_session *v = *victim;
		*victim = v->next;
		mpeer_session_free(v);
		mpeer_nsessions--;
	}
	mpeer_session *s = calloc(1, sizeof *s);
	if (s == NULL)
		return NULL;
	memcpy(s->id, data, 16);
	uint32_t dl;
	const uint8_t *dd;
	bson_iter_document(lsid_it, &dl, &dd);
	s->lsid = bson_new_from_data(dd, dl);
	s->txn = -1;
	s->last_used_ms = mpeer_mono_ms();
	s->next = mpeer_sessions;
	mpeer_sessions = s;
	mpeer_nsessions++;
	return s;
}

static void
mpeer_session_end(const uint8_t *id)
{
	for (mpeer_session **pp = &mpeer_sessions; *pp; pp = &(*pp)->next) {
		if (memcmp((*pp)->id, id, 16) == 0) {
			mpeer_session *s = *pp;
			*pp = s->next;
			mpeer_session_free(s);
			mpeer_nsessions--;
			return;
		}
	}
}

/* ---- failCommand ---- */

typedef struct {
	bool on;
	int64_t times; /* -1: alwaysOn */
	int64_t skip;
	bson_t *data; /* owned: the data document */
} mpeer_failpoint;

static mpeer_failpoint mpeer_fp;

/* ---- commands ---- */

struct mpeer_conn;

typedef enum { MPEER_REPLY, MPEER_PARK, MPEER_CLOSE } mpeer_outcome;

typedef struct {
	struct mpeer_conn *conn; /* borrowed */
	const bson_t *cmd;       /* borrowed */
	const char *db;
	const char *name;
	mpeer_session *session; /* borrowed, NULL without lsid */
	bool in_txn;            /* part of a multi-document transaction */
	bool retryable;         /* a retryable write: txnNumber without autocommit */
	int64_t txn_number;
	bool mutated; /* the data or the oplog changed: save the state file */
	bson_t *reply;
	/* A parked getMore. */
	int64_t park_cursor;
	int32_t park_batch;
	int64_t park_deadline;
} mpeer_ctx;

static const char *
mpeer_code_name(int32_t code)
{
	switch (code) {
	case 1:
		return "InternalError";
	case MPEER_E_BAD_VALUE:
		return "BadValue";
	case 6:
		return "HostUnreachable";
	case 7:
		return "HostNotFound";
	case MPEER_E_FAILED_TO_PARSE:
		return "FailedToParse";
	case MPEER_E_TYPE_MISMATCH:
		return "TypeMismatch";
	case MPEER_E_ILLEGAL_OPERATION:
		return "IllegalOperation";
	case MPEER_E_NS_NOT_FOUND:
		return "NamespaceNotFound";
	case MPEER_E_CONFLICTING_OPS:
		return "ConflictingUpdateOperators";
	case MPEER_E_CURSOR_NOT_FOUND:
		return "CursorNotFound";
	case MPEER_E_NO_MATCHING_DOC:
		return "NoMatchingDocument";
	case MPEER_E_CMD_NOT_FOUND:
		return "CommandNotFound";
	case MPEER_E_IMMUTABLE_FIELD:
		return "ImmutableField";
	case MPEER_E_INVALID_NS:
		return "InvalidNamespace";
	case 89:
		return "NetworkTimeout";
	case 91:
		return "ShutdownInProgress";
	case MPEER_E_WRITE_CONFLICT:
		return "WriteConflict";
	case 189:
		return "PrimarySteppedDown";
	case MPEER_E_TXN_TOO_OLD:
		return "TransactionTooOld";
	case MPEER_E_NO_SUCH_TXN:
		return "NoSuchTransaction";
	case MPEER_E_TXN_COMMITTED:
		return "TransactionCommitted";
	case MPEER_E_INVALID_TOKEN:
		return "InvalidResumeToken";
	case 262:
		return "ExceededTimeLimit";
	case MPEER_E_NOT_IN_TXN:
		return "OperationNotSupportedInTransaction";
	case MPEER_E_FATAL_STREAM:
		return "ChangeStreamFatalError";
	case MPEER_E_HISTORY_LOST:
		return "ChangeStreamHistoryLost";
	case 10107:
		return "NotWritablePrimary";
	case MPEER_E_DUPLICATE_KEY:
		return "DuplicateKey";
	case 11600:
		return "InterruptedAtShutdown";
	case 11602:
		return "InterruptedDueToReplStateChange";
	case 13435:
		return "NotPrimaryNoSecondaryOk";
	case 13436:
		return "NotPrimaryOrSecondary";
	}
	return "UnknownError";
}

/* mpeer_error_reply replaces the reply with {ok:0, errmsg, code, codeName}. */
static mpeer_outcome
mpeer_error_reply(mpeer_ctx *c, int32_t code, const char *msg)
{
	bson_reinit(c->reply);
	bson_append_double(c->reply, "ok", 2, 0.0);
	bson_append_utf8(c->reply, "errmsg", 6, msg, -1);
	bson_append_int32(c->reply, "code", 4, code);
	bson_append_utf8(c->reply, "codeName", 8, mpeer_code_name(code), -1);
	if (code == MPEER_E_NO_SUCH_TXN || code == MPEER_E_WRITE_CONFLICT) {
		bson_t labels;
		bson_append_array_begin(c->reply, "errorLabels", 11, &labels);
		bson_append_utf8(&labels, "0", 1, "TransientTransactionError", -1);
		bson_append_array_end(c->reply, &labels);
	}
	return MPEER_REPLY;
}

static mpeer_outcome mpeer_errorf(mpeer_ctx *c, int32_t code, const char *fmt, ...)
	BSON_GNUC_PRINTF(3, 4);
static mpeer_outcome
mpeer_errorf(mpeer_ctx *c, int32_t code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return mpeer_error_reply(c, code, msg);
}

static mpeer_outcome
mpeer_ok(mpeer_ctx *c)
{
	bson_append_double(c->reply, "ok", 2, 1.0);
	return MPEER_REPLY;
}

/* mpeer_coll_name reads the collection named by the command's first field. */
static bool
mpeer_coll_name(mpeer_ctx *c, char *out, size_t cap)
{
	bson_iter_t it;
	uint32_t len;
	if (!bson_iter_init(&it, c->cmd) || !bson_iter_next(&it) || !BSON_ITER_HOLDS_UTF8(&it))
		return false;
	const char *s = bson_iter_utf8(&it, &len);
	if (len == 0 || len >= cap || memchr(s, 0, len) != NULL || s[0] == '$')
		return false;
	memcpy(out, s, len + 1);
	return true;
}

static bool
mpeer_get_int64(const bson_t *b, const char *key, int64_t *out)
{
	bson_iter_t it;
	if (!bson_iter_init_find(&it, b, key) || !mpeer_is_number(bson_iter_type(&it)))
		return false;
	*out = bson_iter_as_int64(&it);
	return true;
}

static bool
mpeer_get_bool(const bson_t *b, const char *key, bool dflt)
{
	bson_iter_t it;
	if (!bson_iter_init_find(&it, b, key))
		return dflt;
	return bson_iter_as_bool(&it);
}

/* mpeer_get_doc points sub at the document field key of b. */
static bool
mpeer_get_doc(const bson_t *b, const char *key, bson_t *sub)
{
	bson_iter_t it;
	uint32_t l;
	const uint8_t *d;
	if (!bson_iter_init_find(&it, b, key) ||
	    !(BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)))
		return false;
	if (BSON_ITER_HOLDS_DOCUMENT(&it))
		bson_iter_document(&it, &l, &d);
	else
		bson_iter_array(&it, &l, &d);
	return bson_init_static(sub, d, l);
}

/* mpeer_view gives the collection a command reads or writes: a transaction's copy or the real one.
 */
static mpeer_coll *
mpeer_view(mpeer_ctx *c, const char *coll, bool create)
{
	if (c->in_txn) {
		mpeer_session *s = c->session;
		for (size_t i = 0; i < s->ncopies; i++)
			if (strcmp(s->copies[i]->db, c->db) == 0 &&
			    strcmp(s->copies[i]->name, coll) == 0)
				return s->copies[i];
		mpeer_coll *real = mpeer_find_coll(c->db, coll);
		if (real == NULL && !create)
			return NULL;
		uint64_t snap = mpeer_wstamp;
		mpeer_coll *copy = real ? mpeer_coll_copy(real) : mpeer_coll_new(c->db, coll);
		if (copy == NULL)
			return NULL;
		copy->is_copy = true;
		copy->snap = snap;
		copy->src_created = real ? real->created : 0;
		mpeer_coll **n = realloc(s->copies, (s->ncopies + 1) * sizeof *n);
		if (n == NULL) {
			mpeer_coll_free(copy);
			return NULL;
		}
		s->copies = n;
		s->copies[s->ncopies++] = copy;
		return copy;
	}
	return create ? mpeer_get_coll(c->db, coll) : mpeer_find_coll(c->db, coll);
}

/*
 * mpeer_txn_conflict says whether the real document with _id id of a
 * transaction's copy changed after the copy was taken: inserted, updated,
 * replaced or deleted since (deleted conservatively when the deletion records
 * no longer reach back that far), or its collection created, dropped or
 * renamed since. A transaction that writes such a document has a write
 * conflict (MongoDB: 112 WriteConflict).
 */
static bool
mpeer_txn_conflict(const mpeer_coll *copy, const bson_value_t *id)
{
	const mpeer_coll *real = mpeer_find_coll(copy->db, copy->name);
	if ((real ? real->created : 0) != copy->src_created)
		return true;
	if (real == NULL || real->mod <= copy->snap)
		return false; /* nothing written there since the snapshot: no lookup */
	ssize_t i = mpeer_find_by_id(real, id);
	if (i >= 0)
		return real->stamps[i] > copy->snap;
	if (real->tomb_lost > copy->snap)
		return true;
	for (size_t k = real->tomb_n; k > 0; k--) {
		const mpeer_tomb *t = &real->tombs[(real->tomb_head + k - 1) % real->tomb_cap];
		bson_iter_t it;
		if (t->stamp <= copy->snap)
			break; /* the ring is in stamp order: older ones cannot be newer than snap
				*/
		if (bson_iter_init_find(&it, t->key, "_id") &&
		    mpeer_values_equal(bson_iter_value(&it), id))
			return true;
	}
	return false;
}

/* mpeer_txn_conflict_doc is mpeer_txn_conflict for the _id of doc, on a transaction's copy. */
static bool
mpeer_txn_conflict_doc(const mpeer_coll *coll, const bson_t *doc)
{
	bson_iter_t it;
	return coll->is_copy && mpeer_doc_id(doc, &it) &&
	       mpeer_txn_conflict(coll, bson_iter_value(&it));
}

/* mpeer_write_conflict aborts the open transaction and answers 112 WriteConflict, labelled
 * TransientTransactionError (mpeer_error_reply); a later command of it gets 251. */
static mpeer_outcome
mpeer_write_conflict(mpeer_ctx *c, mpeer_entries *effects)
{
	mpeer_entries_free(effects);
	mpeer_txn_discard(c->session);
	c->session->state = MPEER_TXN_ABORTED;
	return mpeer_errorf(
		c, MPEER_E_WRITE_CONFLICT,
		"WriteConflict error: this operation conflicted with another "
		"operation. Please retry your operation or multi-document transaction.");
}

/* mpeer_publish sends a write's effects to the oplog, or into the open transaction. */
static bool
mpeer_publish(mpeer_ctx *c, mpeer_entries *l)
{
	bool ok = true;
	if (l->n > 0)
		c->mutated = true;
	for (size_t i = 0; i < l->n; i++) {
		mpeer_entry *e = &l->v[i];
		if (c->in_txn) {
			mpeer_entry *p =
				mpeer_entries_add(&c->session->pending, e->op, e->db, e->coll);
			if (p == NULL) {
				ok = false;
				continue;
			}
			*p = *e;
			memset(e, 0, sizeof *e);
			continue;
		}
		e->ts = mpeer_ts_next();
		e->idx = 0;
		e->wall_ms = mpeer_now_ms();
		if (!mpeer_oplog_append(e))
			ok = false;
	}
	mpeer_entries_free(l);
	return ok;
}

static void
mpeer_append_index_error(bson_t *errors, uint32_t *nerr, int32_t index, int32_t code,
			 const char *msg)
{
	char key[16];
	const char *k;
	bson_t e;
	bson_uint32_to_string((*nerr)++, &k, key, sizeof key);
	bson_append_document_begin(errors, k, -1, &e);
	bson_append_int32(&e, "index", 5, index);
	bson_append_int32(&e, "code", 4, code);
	bson_append_utf8(&e, "codeName", 8, mpeer_code_name(code), -1);
	bson_append_utf8(&e, "errmsg", 6, msg, -1);
	bson_append_document_end(errors, &e);
}

static void
mpeer_dup_msg(char *buf, size_t cap, const mpeer_coll *coll, const bson_t *doc)
{
	bson_iter_t it;
	char *id = NULL;
	if (mpeer_doc_id(doc, &it)) {
		bson_t k = BSON_INITIALIZER;
		bson_append_iter(&k, "_id", 3, &it);
		id = bson_as_relaxed_extended_json(&k, NULL);
		bson_destroy(&k);
	}
	snprintf(buf, cap, "E11000 duplicate key error collection: %s.%s index: _id_ dup key: %s",
		 coll->db, coll->name, id ? id : "{}");
	bson_free(id);
}

static mpeer_outcome
mpeer_cmd_insert(mpeer_ctx *c)
{
	char name[MPEER_COLL_MAX];
	bson_t docs, errors;
	bson_iter_t it;
	mpeer_entries effects = {0};
	mpeer_err e;
	int32_t n = 0;
	uint32_t nerr = 0;

	if (!mpeer_coll_name(c, name, sizeof name))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
	if (!mpeer_get_doc(c->cmd, "documents", &docs))
		return mpeer_errorf(c, MPEER_E_FAILED_TO_PARSE, "insert needs documents");
	bool ordered = mpeer_get_bool(c->cmd, "ordered", true);
	mpeer_coll *coll = mpeer_view(c, name, true);
	if (coll == NULL)
		return mpeer_errorf(c, 1, "out of memory");
	bson_init(&errors);
	bson_iter_init(&it, &docs);
	for (int32_t index = 0; bson_iter_next(&it); index++) {
		uint32_t l;
		const uint8_t *d;
		bson_t in;
		if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
			mpeer_append_index_error(&errors, &nerr, index, MPEER_E_TYPE_MISMATCH,
						 "document to insert is not a document");
			if (ordered)
				break;
			continue;
		}
		bson_iter_document(&it, &l, &d);
		bson_init_static(&in, d, l);
		bson_t *doc = mpeer_normalize_doc(&in, &e);
		if (doc == NULL) {
			mpeer_append_index_error(&errors, &nerr, index, e.code, e.msg);
			if (ordered)
				break;
			continue;
		}
		bson_iter_t id;
		mpeer_doc_id(doc, &id);
		if (mpeer_find_by_id(coll, bson_iter_value(&id)) >= 0) {
			char msg[512];
			mpeer_dup_msg(msg, sizeof msg, coll, doc);
			bson_destroy(doc);
			mpeer_append_index_error(&errors, &nerr, index, MPEER_E_DUPLICATE_KEY, msg);
			if (ordered)
				break;
			continue;
		}
		if (mpeer_txn_conflict_doc(coll, doc)) {
			bson_destroy(doc);
			bson_destroy(&errors);
			return mpeer_write_conflict(c, &effects);
		}
		mpeer_entry *en = mpeer_entries_add(&effects, MPEER_OP_INSERT, c->db, name);
		if (en == NULL || !mpeer_coll_push(coll, bson_copy(doc))) {
			bson_destroy(doc);
			break;
		}
		en->key = mpeer_key_of(doc);
		en->doc = doc;
		n++;
	}
	mpeer_publish(c, &effects);
	bson_append_int32(c->reply, "n", 1, n);
	if (nerr > 0)
		bson_append_array(c->reply, "writeErrors", 11, &errors);
	bson_destroy(&errors);
	return mpeer_ok(c);
}

/* mpeer_upsert_seed builds the document an upsert starts from: the filter's equality fields. */
static void
mpeer_upsert_seed(const bson_t *q, bson_t *seed)
{
	bson_iter_t it;
	if (!bson_iter_init(&it, q))
		return;
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (k[0] == '$' || strchr(k, '.') != NULL)
			continue;
		if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
			bson_iter_t sub;
			if (bson_iter_recurse(&it, &sub) && bson_iter_next(&sub)) {
				if (strcmp(bson_iter_key(&sub), "$eq") == 0) {
					bson_append_value(seed, k, -1, bson_iter_value(&sub));
					continue;
				}
				if (bson_iter_key(&sub)[0] == '$')
					continue;
			}
		}
		bson_append_iter(seed, k, -1, &it);
	}
}

/* mpeer_update_one applies update u to coll->docs[i]; *changed when the document differs. */
static bool
mpeer_update_doc(mpeer_coll *coll, size_t i, const bson_t *u, mpeer_entries *effects, bool *changed,
		 mpeer_err *e)
{
	const bson_t *old = coll->docs[i];
	bson_t *out = bson_new();
	bson_t updated = BSON_INITIALIZER, removed = BSON_INITIALIZER;
	bool op = mpeer_is_operator_update(u);
	bool ok = op ? mpeer_apply_ops(old, u, false, out, &updated, &removed, e)
		     : mpeer_apply_replacement(old, u, out, e);
	*changed = false;
	bool differs = ok && (out->len != old->len ||
			      memcmp(bson_get_data(out), bson_get_data(old), old->len) != 0);
	/* A no-op update writes nothing, so it cannot conflict (as in MongoDB). */
	if (differs && mpeer_txn_conflict_doc(coll, old))
		ok = mpeer_fail(e, MPEER_E_WRITE_CONFLICT, "write conflict");
	if (ok && differs) {
		mpeer_entry *en = mpeer_entries_add(
			effects, op ? MPEER_OP_UPDATE : MPEER_OP_REPLACE, coll->db, coll->name);
		if (en == NULL) {
			ok = mpeer_fail(e, 1, "out of memory");
		} else {
			en->key = mpeer_key_of(old);
			en->doc = bson_copy(out);
			if (coll->images)
				en->pre = bson_copy(old);
			if (op) {
				bson_t arr;
				en->upd = bson_new();
				bson_append_document(en->upd, "updatedFields", -1, &updated);
				bson_append_array(en->upd, "removedFields", -1, &removed);
				bson_append_array_begin(en->upd, "truncatedArrays", -1, &arr);
				bson_append_array_end(en->upd, &arr);
			}
			mpeer_coll_set(coll, i, out);
			out = NULL;
			*changed = true;
		}
	}
	if (out)
		bson_destroy(out);
	bson_destroy(&updated);
	bson_destroy(&removed);
	return ok;
}

static mpeer_outcome
mpeer_cmd_update(mpeer_ctx *c)
{
	char name[MPEER_COLL_MAX];
	bson_t updates, errors, upserted;
	bson_iter_t it;
	mpeer_entries effects = {0};
	mpeer_err e;
	int32_t n = 0, nmod = 0;
	uint32_t nerr = 0, nups = 0;

	if (!mpeer_coll_name(c, name, sizeof name))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
	if (!mpeer_get_doc(c->cmd, "updates", &updates))
		return mpeer_errorf(c, MPEER_E_FAILED_TO_PARSE, "update needs updates");
	bool ordered = mpeer_get_bool(c->cmd, "ordered", true);
	mpeer_coll *coll = mpeer_view(c, name, true);
	if (coll == NULL)
		return mpeer_errorf(c, 1, "out of memory");
	bson_init(&errors);
	bson_init(&upserted);
	bson_iter_init(&it, &updates);
	for (int32_t index = 0; bson_iter_next(&it); index++) {
		uint32_t l;
		const uint8_t *d;
		bson_t spec, q, u;
		bool failed = false;
		if (!BSON_ITER_HOLDS_DOCUMENT(&it))
			goto parse_error;
		bson_iter_document(&it, &l, &d);
		bson_init_static(&spec, d, l);
		if (!mpeer_get_doc(&spec, "q", &q))
			goto parse_error;
		bson_iter_t ui;
		if (!bson_iter_init_find(&ui, &spec, "u") || !BSON_ITER_HOLDS_DOCUMENT(&ui)) {
			mpeer_append_index_error(&errors, &nerr, index, MPEER_E_FAILED_TO_PARSE,
						 "u must be a document (pipelines are not "
						 "implemented by the peer)");
			if (ordered)
				break;
			continue;
		}
		mpeer_get_doc(&spec, "u", &u);
		bool multi = mpeer_get_bool(&spec, "multi", false);
		bool upsert = mpeer_get_bool(&spec, "upsert", false);
		bool op = mpeer_is_operator_update(&u);
		if (multi && !op) {
			mpeer_append_index_error(
				&errors, &nerr, index, MPEER_E_FAILED_TO_PARSE,
				"multi update is not supported for replacement-style "
				"update");
			if (ordered)
				break;
			continue;
		}
		int32_t matched = 0;
		for (size_t i = 0; i < coll->n; i++) {
			int m = mpeer_match(coll->docs[i], &q);
			if (m < 0) {
				mpeer_fail(&e, MPEER_E_BAD_VALUE,
					   "query operator not implemented by the peer");
				failed = true;
				break;
			}
			if (m == 0)
				continue;
			bool changed;
			matched++;
			if (!mpeer_update_doc(coll, i, &u, &effects, &changed, &e)) {
				failed = true;
				break;
			}
			if (changed)
				nmod++;
			if (!multi)
				break;
		}
		if (!failed && matched == 0 && upsert) {
			bson_t seed = BSON_INITIALIZER, out = BSON_INITIALIZER;
			bson_t updated = BSON_INITIALIZER, removed = BSON_INITIALIZER;
			mpeer_upsert_seed(&q, &seed);
			bool ok =
				op ? mpeer_apply_ops(&seed, &u, true, &out, &updated, &removed, &e)
				   : true;
			if (!op) {
				bson_iter_t sid;
				/* A replacement keeps the filter's _id unless it has its own. */
				if (!bson_has_field(&u, "_id") && mpeer_doc_id(&seed, &sid))
					bson_append_iter(&out, "_id", 3, &sid);
				bson_concat(&out, &u);
			}
			bson_t *doc = ok ? mpeer_normalize_doc(&out, &e) : NULL;
			if (doc == NULL) {
				failed = true;
			} else {
				bson_iter_t id;
				mpeer_doc_id(doc, &id);
				if (mpeer_find_by_id(coll, bson_iter_value(&id)) >= 0) {
					mpeer_dup_msg(e.msg, sizeof e.msg, coll, doc);
					e.code = MPEER_E_DUPLICATE_KEY;
					failed = true;
					bson_destroy(doc);
				} else if (mpeer_txn_conflict_doc(coll, doc)) {
					mpeer_fail(&e, MPEER_E_WRITE_CONFLICT, "write conflict");
					failed = true;
					bson_destroy(doc);
				} else {
					mpeer_entry *en = mpeer_entries_add(
						&effects, MPEER_OP_INSERT, c->db, name);
					if (en != NULL && mpeer_coll_push(coll, bson_copy(doc))) {
						char key[16];
						const char *k;
						bson_t up;
						en->key = mpeer_key_of(doc);
						en->doc = doc;
						bson_uint32_to_string(nups++, &k, key, sizeof key);
						bson_append_document_begin(&upserted, k, -1, &up);
						bson_append_int32(&up, "index", 5, index);
						bson_append_value(&up, "_id", 3,
								  bson_iter_value(&id));
						bson_append_document_end(&upserted, &up);
						matched = 1;
					} else {
						bson_destroy(doc);
						mpeer_fail(&e, 1, "out of memory");
						failed = true;
					}
				}
			}
			bson_destroy(&seed);
			bson_destroy(&out);
			bson_destroy(&updated);
			bson_destroy(&removed);
		}
		n += matched;
		if (failed && e.code == MPEER_E_WRITE_CONFLICT) {
			bson_destroy(&errors);
			bson_destroy(&upserted);
			return mpeer_write_conflict(c, &effects);
		}
		if (failed) {
			mpeer_append_index_error(&errors, &nerr, index, e.code, e.msg);
			if (ordered)
				break;
		}
		continue;
	parse_error:
		bson_destroy(&errors);
		bson_destroy(&upserted);
		mpeer_publish(c, &effects);
		return mpeer_errorf(c, MPEER_E_FAILED_TO_PARSE, "malformed update statement");
	}
	mpeer_publish(c, &effects);
	bson_append_int32(c->reply, "n", 1, n);
	bson_append_int32(c->reply, "nModified", 9, nmod);
	if (nups > 0)
		bson_append_array(c->reply, "upserted", 8, &upserted);
	if (nerr > 0)
		bson_append_array(c->reply, "writeErrors", 11, &errors);
	bson_destroy(&errors);
	bson_destroy(&upserted);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_delete(mpeer_ctx *c)
{
	char name[MPEER_COLL_MAX];
	bson_t deletes;
	bson_iter_t it;
	mpeer_entries effects = {0};
	int32_t n = 0;

	if (!mpeer_coll_name(c, name, sizeof name))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
	if (!mpeer_get_doc(c->cmd, "deletes", &deletes))
		return mpeer_errorf(c, MPEER_E_FAILED_TO_PARSE, "delete needs deletes");
	mpeer_coll *coll = mpeer_view(c, name, false);
	bson_iter_init(&it, &deletes);
	while (bson_iter_next(&it)) {
		uint32_t l;
		const uint8_t *d;
		bson_t spec, q;
		int64_t limit = 0;
		if (!BSON_ITER_HOLDS_DOCUMENT(&it))
			break;
		bson_iter_document(&it, &l, &d);
		bson_init_static(&spec, d, l);
		if (!mpeer_get_doc(&spec, "q", &q))
			break;
		mpeer_get_int64(&spec, "limit", &limit);
		for (size_t i = 0; coll != NULL && i < coll->n;) {
			int m = mpeer_match(coll->docs[i], &q);
			if (m < 0) {
				mpeer_publish(c, &effects);
				return mpeer_errorf(c, MPEER_E_BAD_VALUE,
						    "query operator not implemented by the peer");
			}
			if (m == 0) {
				i++;
				continue;
			}
			if (mpeer_txn_conflict_doc(coll, coll->docs[i]))
				return mpeer_write_conflict(c, &effects);
			mpeer_entry *en = mpeer_entries_add(&effects, MPEER_OP_DELETE, c->db, name);
			if (en != NULL) {
				en->key = mpeer_key_of(coll->docs[i]);
				if (coll->images)
					en->pre = bson_copy(coll->docs[i]);
			}
			mpeer_coll_remove(coll, i);
			n++;
			if (limit == 1)
				break;
		}
	}
	mpeer_publish(c, &effects);
	bson_append_int32(c->reply, "n", 1, n);
	return mpeer_ok(c);
}

/* mpeer_append_batch moves documents into a cursor batch array, bounded in count and bytes. */
static void
mpeer_append_batch(bson_t *arr, bson_t **docs, size_t *pos, size_t n, int64_t limit)
{
	size_t bytes = 0;
	uint32_t k = 0;
	while (*pos < n && (limit <= 0 || k < (uint64_t)limit)) {
		bson_t *d = docs[*pos];
		if (k > 0 && bytes + d->len > MPEER_BATCH_BYTES)
			break;
		char key[16];
		const char *ks;
		bson_uint32_to_string(k++, &ks, key, sizeof key);
		bson_append_document(arr, ks, -1, d);
		bytes += d->len;
		bson_destroy(d);
		docs[(*pos)++] = NULL;
	}
}

static void
mpeer_append_cursor(bson_t *reply, int64_t id, const char *ns, const char *batch_name,
		    const bson_t *batch, const bson_t *pbrt)
{
	bson_t cur;
	bson_append_document_begin(reply, "cursor", 6, &cur);
	bson_append_array(&cur, batch_name, -1, batch);
	bson_append_int64(&cur, "id", 2, id);
	bson_append_utf8(&cur, "ns", 2, ns, -1);
	if (pbrt != NULL)
		bson_append_document(&cur, "postBatchResumeToken", -1, pbrt);
	bson_append_document_end(reply, &cur);
}

static mpeer_outcome
mpeer_cmd_find(mpeer_ctx *c)
{
	char name[MPEER_COLL_MAX], ns[MPEER_NS_MAX];
	bson_t filter, sort, proj;
	int64_t limit = 0, skip = 0, batch = 101;
	bool have_filter;

	if (!mpeer_coll_name(c, name, sizeof name))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
	have_filter = mpeer_get_doc(c->cmd, "filter", &filter);
	if (mpeer_get_doc(c->cmd, "sort", &sort) && !bson_empty(&sort))
		return mpeer_errorf(c, MPEER_E_BAD_VALUE, "sort is not implemented by the peer");
	if (mpeer_get_doc(c->cmd, "projection", &proj) && !bson_empty(&proj))
		return mpeer_errorf(c, MPEER_E_BAD_VALUE,
				    "projection is not implemented by the peer");
	mpeer_get_int64(c->cmd, "limit", &limit);
	mpeer_get_int64(c->cmd, "skip", &skip);
	mpeer_get_int64(c->cmd, "batchSize", &batch);
	bool single = mpeer_get_bool(c->cmd, "singleBatch", false) || limit < 0;
	if (limit < 0)
		limit = -limit;
	snprintf(ns, sizeof ns, "%s.%s", c->db, name);

	mpeer_coll *coll = mpeer_view(c, name, false);
	size_t cap = coll ? coll->n : 0, n = 0, pos = 0;
	bson_t **docs = calloc(cap ? cap : 1, sizeof *docs);
	if (docs == NULL)
		return mpeer_errorf(c, 1, "out of memory");
	for (size_t i = 0; i < cap; i++) {
		int m = mpeer_match(coll->docs[i], have_filter ? &filter : NULL);
		if (m < 0) {
			for (size_t j = 0; j < n; j++)
				bson_destroy(docs[j]);
			free(docs);
			return mpeer_errorf(c, MPEER_E_BAD_VALUE,
					    "query operator not implemented by the peer");
		}
		if (m == 0)
			continue;
		if (skip > 0) {
			skip--;
			continue;
		}
		if (limit > 0 && n >= (size_t)limit)
			break;
		docs[n++] = bson_copy(coll->docs[i]);
	}
	bson_t arr = BSON_INITIALIZER;
	mpeer_append_batch(&arr, docs, &pos, n, batch);
	int64_t id = 0;
	if (pos < n && !single) {
		mpeer_cursor *cur = mpeer_cursor_new(MPEER_CURSOR_FIND, c->db, name);
		if (cur != NULL) {
			cur->docs = docs;
			cur->n = n;
			cur->pos = pos;
			id = cur->id;
			docs = NULL;
		}
	}
	if (docs != NULL) {
		for (size_t j = pos; j < n; j++)
			bson_destroy(docs[j]);
		free(docs);
	}
	mpeer_append_cursor(c->reply, id, ns, "firstBatch", &arr, NULL);
	bson_destroy(&arr);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_count(mpeer_ctx *c)
{
	char name[MPEER_COLL_MAX];
	bson_t q;
	int32_t n = 0;
	if (!mpeer_coll_name(c, name, sizeof name))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
	bool have_q = mpeer_get_doc(c->cmd, "query", &q);
	mpeer_coll *coll = mpeer_view(c, name, false);
	for (size_t i = 0; coll && i < coll->n; i++) {
		int m = mpeer_match(coll->docs[i], have_q ? &q : NULL);
		if (m < 0)
			return mpeer_errorf(c, MPEER_E_BAD_VALUE,
					    "query operator not implemented by the peer");
		n += m;
	}
	bson_append_int32(c->reply, "n", 1, n);
	return mpeer_ok(c);
}

/* ---- change streams ---- */

/* mpeer_pos_before is (ts, idx) < (ts2, idx2) with idx -1 before every index. */
static bool
mpeer_pos_before(uint64_t ts, int64_t idx, uint64_t ts2, int64_t idx2)
{
	return ts < ts2 || (ts == ts2 && idx < idx2);
}

static bool
mpeer_system_ns(const char *db, const char *coll)
{
	return strcmp(db, "admin") == 0 || strcmp(db, "config") == 0 || strcmp(db, "local") == 0 ||
	       (coll != NULL && strncmp(coll, "system.", 7) == 0);
}

static void
mpeer_append_ns(bson_t *ev, const char *key, const char *db, const char *coll)
{
	bson_t ns;
	bson_append_document_begin(ev, key, -1, &ns);
	bson_append_utf8(&ns, "db", 2, db, -1);
	if (coll != NULL)
		bson_append_utf8(&ns, "coll", 4, coll, -1);
	bson_append_document_end(ev, &ns);
}

static const char *
mpeer_op_name(char op)
{
	switch (op) {
	case MPEER_OP_INSERT:
		return "insert";
	case MPEER_OP_UPDATE:
		return "update";
	case MPEER_OP_REPLACE:
		return "replace";
	case MPEER_OP_DELETE:
		return "delete";
	case MPEER_OP_DROP:
		return "drop";
	case MPEER_OP_RENAME:
		return "rename";
	default:
		return "dropDatabase";
	}
}

/*
 * mpeer_image_missing fails a change event that needs an image it has not
 * (mode required): 47 NoMatchingDocument, worded as MongoDB 6.0+ does.
 */
static bson_t *
mpeer_image_missing(bson_t *ev, const char *which, mpeer_err *err)
{
	char *json = bson_as_relaxed_extended_json(ev, NULL);
	mpeer_fail(err, MPEER_E_NO_MATCHING_DOC,
		   "Change stream was configured to require a %s for all update, delete and "
		   "replace events, but the %s was not found for event: %s",
		   which, which, json ? json : "?");
	bson_free(json);
	bson_destroy(ev);
	return NULL;
}

/*
 * mpeer_build_event renders one oplog entry as a change event; NULL with *err
 * when the stream requires an image the entry has not.
 */
static bson_t *
mpeer_build_event(const mpeer_cursor *cur, const mpeer_entry *e, mpeer_err *err)
{
	bson_t *ev = bson_new();
	mpeer_append_token(ev, "_id", e->ts, e->idx, MPEER_TOKEN_EVENT);
	bson_append_utf8(ev, "operationType", -1, mpeer_op_name(e->op), -1);
	mpeer_append_ts(ev, "clusterTime", e->ts);
	bson_append_date_time(ev, "wallTime", -1, e->wall_ms);
	mpeer_append_ns(ev, "ns", e->db, e->op == MPEER_OP_DROP_DB ? NULL : e->coll);
	if (e->op == MPEER_OP_RENAME)
		mpeer_append_ns(ev, "to", e->to_db, e->to_coll);
	if (e->key != NULL)
		bson_append_document(ev, "documentKey", -1, e->key);
	if (e->op == MPEER_OP_UPDATE)
		bson_append_document(ev, "updateDescription", -1, e->upd);
	if (e->op == MPEER_OP_INSERT || e->op == MPEER_OP_REPLACE) {
		bson_append_document(ev, "fullDocument", -1, e->doc);
	} else if (e->op == MPEER_OP_UPDATE && cur->lookup) {
		/* updateLookup: the document as it is now, null when it is gone. */
		mpeer_coll *coll = mpeer_find_coll(e->db, e->coll);
		bson_iter_t id;
		ssize_t i = -1;
		if (coll != NULL && bson_iter_init_find(&id, e->key, "_id"))
			i = mpeer_find_by_id(coll, bson_iter_value(&id));
		if (i >= 0)
			bson_append_document(ev, "fullDocument", -1, coll->docs[i]);
		else
			bson_append_null(ev, "fullDocument", -1);
	} else if (e->op == MPEER_OP_UPDATE && cur->post != MPEER_IMAGE_OFF) {
		/*
		 * whenAvailable / required: the post-image comes from the stored
		 * images, so only where the collection kept them at the time.
		 */
		if (e->pre != NULL)
			bson_append_document(ev, "fullDocument", -1, e->doc);
		else if (cur->post == MPEER_IMAGE_REQUIRED)
			return mpeer_image_missing(ev, "post-image", err);
		else
			bson_append_null(ev, "fullDocument", -1);
	}
	if (e->lsid != NULL) {
		bson_append_int64(ev, "txnNumber", -1, e->txn_number);
		bson_append_document(ev, "lsid", -1, e->lsid);
	}
	if (cur->before != MPEER_IMAGE_OFF &&
	    (e->op == MPEER_OP_UPDATE || e->op == MPEER_OP_REPLACE || e->op == MPEER_OP_DELETE)) {
		if (e->pre != NULL)
			bson_append_document(ev, "fullDocumentBeforeChange", -1, e->pre);
		else if (cur->before == MPEER_IMAGE_REQUIRED)
			return mpeer_image_missing(ev, "pre-image", err);
		else
			bson_append_null(ev, "fullDocumentBeforeChange", -1);
	}
	return ev;
}

/* mpeer_stream_scope: 0 the entry is not the cursor's, 1 an event, 2 an event then invalidate. */
static int
mpeer_stream_scope(const mpeer_cursor *cur, const mpeer_entry *e)
{
	switch (cur->level) {
	case MPEER_LEVEL_COLL:
		if (e->op == MPEER_OP_DROP_DB)
			return strcmp(e->db, cur->db) == 0 ? 3 : 0;
		if (strcmp(e->db, cur->db) != 0 || strcmp(e->coll, cur->coll) != 0)
			return 0;
		return e->op == MPEER_OP_DROP || e->op == MPEER_OP_RENAME ? 2 : 1;
	case MPEER_LEVEL_DB:
		if (strcmp(e->db, cur->db) != 0 || mpeer_system_ns(e->db, e->coll))
			return 0;
		return e->op == MPEER_OP_DROP_DB ? 2 : 1;
	case MPEER_LEVEL_CLUSTER:
		return mpeer_system_ns(e->db, e->op == MPEER_OP_DROP_DB ? NULL : e->coll) ? 0 : 1;
	}
	return 0;
}

/* mpeer_oplog_first_after finds the first oplog index after position (ts, idx). */
static size_t
mpeer_oplog_first_after(uint64_t ts, int64_t idx)
{
	size_t lo = 0, hi = mpeer_oplog_n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const mpeer_entry *e = mpeer_oplog_at(mid);
		if (mpeer_pos_before(ts, idx, e->ts, e->idx))
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/*
 * mpeer_stream_fill appends to arr the cursor's next events (at most limit;
 * 0 no limit but the batch bytes, negative none),
 * advancing its position; *closed when an invalidate ended the stream.
 * Returns the number of events; *pbrt gets the postBatchResumeToken. An
 * event that cannot be built fails the whole batch: *err, and *failed.
 */
static uint32_t
mpeer_stream_fill(mpeer_cursor *cur, bson_t *arr, int64_t limit, bool *closed, bson_t *pbrt,
		  bool *failed, mpeer_err *err)
{
	*failed = false;
	uint32_t k = 0;
	size_t bytes = 0;
	bool last_is_event = false;
	uint32_t last_idx = 0;
	int last_kind = MPEER_TOKEN_EVENT;
	*closed = false;
	for (size_t i = mpeer_oplog_first_after(cur->pos_ts, cur->pos_idx);
	     i < mpeer_oplog_n && (limit == 0 || (int64_t)k < limit) && bytes < MPEER_BATCH_BYTES;
	     i++) {
		const mpeer_entry *e = mpeer_oplog_at(i);
		int scope = mpeer_stream_scope(cur, e);
		char key[16];
		const char *ks;
		if (scope == 1 || scope == 2) {
			bson_t *ev = mpeer_build_event(cur, e, err);
			if (ev == NULL) {
				*failed = true;
				return 0;
			}
			bson_uint32_to_string(k++, &ks, key, sizeof key);
			bson_append_document(arr, ks, -1, ev);
			bytes += ev->len;
			bson_destroy(ev);
		}
		cur->pos_ts = e->ts;
		cur->pos_idx = e->idx;
		last_is_event = scope != 0;
		last_idx = e->idx;
		last_kind = MPEER_TOKEN_EVENT;
		if (scope >= 2) {
			bson_t inv;
			bson_uint32_to_string(k++, &ks, key, sizeof key);
			bson_append_document_begin(arr, ks, -1, &inv);
			mpeer_append_token(&inv, "_id", e->ts, e->idx, MPEER_TOKEN_INVALIDATE);
			bson_append_utf8(&inv, "operationType", -1, "invalidate", -1);
			mpeer_append_ts(&inv, "clusterTime", e->ts);
			bson_append_document_end(arr, &inv);
			last_kind = MPEER_TOKEN_INVALIDATE;
			*closed = true;
			break;
		}
	}
	bson_reinit(pbrt);
	if (last_is_event) {
		mpeer_append_token(pbrt, "t", cur->pos_ts, last_idx, last_kind);
	} else if (cur->pos_idx < 0) {
		/* Nothing seen since a start time T: a high-water mark just before T. */
		mpeer_append_token(pbrt, "t", cur->pos_ts - 1, UINT32_MAX, MPEER_TOKEN_HWM);
	} else {
		mpeer_append_token(pbrt, "t", cur->pos_ts, (uint32_t)cur->pos_idx, MPEER_TOKEN_HWM);
	}
	/* The token is the sub-document. */
	bson_iter_t it;
	bson_t tmp;
	uint32_t l;
	const uint8_t *d;
	bson_iter_init_find(&it, pbrt, "t");
	bson_iter_document(&it, &l, &d);
	bson_init_static(&tmp, d, l);
	bson_t *copy = bson_copy(&tmp);
	bson_reinit(pbrt);
	bson_concat(pbrt, copy);
	bson_destroy(copy);
	return k;
}

/* mpeer_oplog_has tells whether the entry at (ts, idx) is still in the history. */
static bool
mpeer_oplog_has(uint64_t ts, uint32_t idx)
{
	size_t i = mpeer_oplog_first_after(ts, (int64_t)idx - 1);
	return i < mpeer_oplog_n && mpeer_oplog_at(i)->ts == ts && mpeer_oplog_at(i)->idx == idx;
}

static mpeer_outcome
mpeer_cmd_change_stream(mpeer_ctx *c, const bson_t *opts, const bson_t *pipeline)
{
	bson_iter_t it, tok;
	char coll[MPEER_COLL_MAX] = "";
	mpeer_level level;
	bson_t cursor_opts;
	int64_t batch = 101;

	/* Only $changeStream itself: further stages would need a query engine. */
	if (bson_count_keys(pipeline) != 1)
		return mpeer_errorf(c, MPEER_E_UNRECOGNIZED_STAGE,
				    "only a lone $changeStream stage is implemented by the peer");
	bson_iter_init(&it, c->cmd);
	bson_iter_next(&it);
	if (BSON_ITER_HOLDS_UTF8(&it)) {
		if (!mpeer_coll_name(c, coll, sizeof coll))
			return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
		level = MPEER_LEVEL_COLL;
	} else if (mpeer_get_bool(opts, "allChangesForCluster", false)) {
		if (strcmp(c->db, "admin") != 0)
			return mpeer_errorf(c, MPEER_E_INVALID_NS,
					    "allChangesForCluster needs the admin database");
		level = MPEER_LEVEL_CLUSTER;
	} else {
		if (mpeer_system_ns(c->db, NULL))
			return mpeer_errorf(c, MPEER_E_INVALID_NS, "cannot watch the %s database",
					    c->db);
		level = MPEER_LEVEL_DB;
	}
	bool lookup = false;
	int post = MPEER_IMAGE_OFF, before = MPEER_IMAGE_OFF;
	if (bson_iter_init_find(&it, opts, "fullDocument")) {
		if (!BSON_ITER_HOLDS_UTF8(&it))
			return mpeer_errorf(c, MPEER_E_TYPE_MISMATCH,
					    "BSON field '$changeStream.fullDocument' is the wrong "
					    "type, expected type 'string'");
		const char *fd = bson_iter_utf8(&it, NULL);
		if (strcmp(fd, "updateLookup") == 0)
			lookup = true;
		else if (strcmp(fd, "whenAvailable") == 0)
			post = MPEER_IMAGE_WHEN_AVAILABLE;
		else if (strcmp(fd, "required") == 0)
			post = MPEER_IMAGE_REQUIRED;
		else if (strcmp(fd, "default") != 0)
			return mpeer_errorf(c, MPEER_E_BAD_VALUE,
					    "Enumeration value '%s' for field "
					    "'$changeStream.fullDocument' is not a valid value.",
					    fd);
	}
	if (bson_iter_init_find(&it, opts, "fullDocumentBeforeChange")) {
		if (!BSON_ITER_HOLDS_UTF8(&it))
			return mpeer_errorf(
				c, MPEER_E_TYPE_MISMATCH,
				"BSON field '$changeStream.fullDocumentBeforeChange' is "
				"the wrong type, expected type 'string'");
		const char *fb = bson_iter_utf8(&it, NULL);
		if (strcmp(fb, "whenAvailable") == 0)
			before = MPEER_IMAGE_WHEN_AVAILABLE;
		else if (strcmp(fb, "required") == 0)
			before = MPEER_IMAGE_REQUIRED;
		else if (strcmp(fb, "off") != 0)
			return mpeer_errorf(
				c, MPEER_E_BAD_VALUE,
				"Enumeration value '%s' for field "
				"'$changeStream.fullDocumentBeforeChange' is not a valid "
				"value.",
				fb);
	}
	if (mpeer_get_doc(c->cmd, "cursor", &cursor_opts))
		mpeer_get_int64(&cursor_opts, "batchSize", &batch);

	bool has_resume = bson_iter_init_find(&tok, opts, "resumeAfter");
	bool has_start = bson_has_field(opts, "startAfter");
	bool has_time = bson_has_field(opts, "startAtOperationTime");
	if (has_resume + has_start + has_time > 1)
		return mpeer_errorf(c, MPEER_E_BOTH_RESUME,
				    "only one of resumeAfter, startAfter and startAtOperationTime");
	uint64_t pos_ts;
	int64_t pos_idx;
	if (has_resume || has_start) {
		uint64_t ts;
		uint32_t idx;
		int kind;
		if (has_start)
			bson_iter_init_find(&tok, opts, "startAfter");
		if (!mpeer_parse_token(&tok, &ts, &idx, &kind))
			return mpeer_errorf(c, MPEER_E_INVALID_TOKEN,
					    "resume token was not issued by this peer");
		if (kind == MPEER_TOKEN_INVALIDATE && has_resume)
			return mpeer_errorf(c, MPEER_E_INVALID_TOKEN,
					    "cannot resume after an invalidate: use startAfter");
		pos_ts = ts;
		pos_idx = idx;
		if (mpeer_trimmed_ts != 0 &&
		    mpeer_pos_before(pos_ts, pos_idx, mpeer_trimmed_ts, mpeer_trimmed_idx))
			return mpeer_errorf(c, MPEER_E_HISTORY_LOST,
					    "Resume of change stream was not possible, as the "
					    "resume point may no longer be in the oplog");
		bool trimmed_here = mpeer_trimmed_ts == ts && mpeer_trimmed_idx == idx;
		if (kind != MPEER_TOKEN_HWM && !trimmed_here && !mpeer_oplog_has(ts, idx))
			return mpeer_errorf(c, MPEER_E_FATAL_STREAM,
					    "cannot resume stream; the resume token was not found");
	} else if (has_time) {
		uint32_t t, i;
		bson_iter_init_find(&it, opts, "startAtOperationTime");
		if (!BSON_ITER_HOLDS_TIMESTAMP(&it))
			return mpeer_errorf(c, MPEER_E_TYPE_MISMATCH,
					    "startAtOperationTime must be a Timestamp");
		bson_iter_timestamp(&it, &t, &i);
		pos_ts = (uint64_t)t << 32 | i;
		pos_idx = -1;
		if (mpeer_trimmed_ts != 0 &&
		    mpeer_pos_before(pos_ts, pos_idx, mpeer_trimmed_ts, mpeer_trimmed_idx))
			return mpeer_errorf(c, MPEER_E_HISTORY_LOST,
					    "Resume of change stream was not possible, as the "
					    "resume point may no longer be in the oplog");
	} else {
		pos_ts = mpeer_ts_now();
		pos_idx = UINT32_MAX;
	}

	mpeer_cursor *cur = mpeer_cursor_new(MPEER_CURSOR_STREAM, c->db,
					     level == MPEER_LEVEL_COLL ? coll : "$cmd.aggregate");
	if (cur == NULL)
		return mpeer_errorf(c, 1, "out of memory");
	cur->level = level;
	cur->lookup = lookup;
	cur->post = post;
	cur->before = before;
	cur->pos_ts = pos_ts;
	cur->pos_idx = pos_idx;
	bson_t arr = BSON_INITIALIZER, pbrt = BSON_INITIALIZER;
	bool closed = false, failed;
	mpeer_err err;
	/* batchSize 0 asks for an empty first batch (limit -1 delivers nothing). */
	mpeer_stream_fill(cur, &arr, batch <= 0 ? -1 : batch, &closed, &pbrt, &failed, &err);
	if (failed) {
		mpeer_cursor_kill(cur->id);
		bson_destroy(&arr);
		bson_destroy(&pbrt);
		return mpeer_errorf(c, err.code, "%s", err.msg);
	}
	int64_t id = cur->id;
	char ns[sizeof cur->ns];
	bson_strncpy(ns, cur->ns, sizeof ns);
	if (closed) {
		mpeer_cursor_kill(cur->id);
		id = 0;
	}
	mpeer_append_cursor(c->reply, id, ns, "firstBatch", &arr, &pbrt);
	bson_destroy(&arr);
	bson_destroy(&pbrt);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_aggregate(mpeer_ctx *c)
{
	bson_t pipeline, first, opts;
	bson_iter_t it;
	if (!mpeer_get_doc(c->cmd, "pipeline", &pipeline))
		return mpeer_errorf(c, MPEER_E_FAILED_TO_PARSE, "aggregate needs a pipeline");
	if (bson_iter_init(&it, &pipeline) && bson_iter_next(&it) &&
	    BSON_ITER_HOLDS_DOCUMENT(&it)) {
		uint32_t l;
		const uint8_t *d;
		bson_iter_document(&it, &l, &d);
		bson_init_static(&first, d, l);
		if (mpeer_get_doc(&first, "$changeStream", &opts)) {
			if (c->in_txn)
				return mpeer_errorf(
					c, MPEER_E_NOT_IN_TXN,
					"$changeStream is not allowed in a transaction");
			return mpeer_cmd_change_stream(c, &opts, &pipeline);
		}
	}
	return mpeer_errorf(c, MPEER_E_UNRECOGNIZED_STAGE,
			    "only $changeStream pipelines are implemented by the peer");
}

/* mpeer_getmore_stream answers a change stream getMore, or parks it until events or its deadline.
 */
static mpeer_outcome
mpeer_getmore_stream(mpeer_ctx *c, mpeer_cursor *cur, int64_t batch, bool deadline_passed)
{
	bson_t arr = BSON_INITIALIZER, pbrt = BSON_INITIALIZER;
	bool closed, failed;
	mpeer_err err;
	uint32_t n = mpeer_stream_fill(cur, &arr, batch, &closed, &pbrt, &failed, &err);
	if (failed) {
		/* As a server does: the error ends the cursor. */
		mpeer_cursor_kill(cur->id);
		bson_destroy(&arr);
		bson_destroy(&pbrt);
		bson_reinit(c->reply);
		return mpeer_errorf(c, err.code, "%s", err.msg);
	}
	if (n == 0 && !deadline_passed) {
		bson_destroy(&arr);
		bson_destroy(&pbrt);
		return MPEER_PARK;
	}
	int64_t id = cur->id;
	char ns[sizeof cur->ns];
	bson_strncpy(ns, cur->ns, sizeof ns);
	if (closed) {
		mpeer_cursor_kill(cur->id);
		id = 0;
	}
	bson_reinit(c->reply);
	mpeer_append_cursor(c->reply, id, ns, "nextBatch", &arr, &pbrt);
	bson_destroy(&arr);
	bson_destroy(&pbrt);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_getmore(mpeer_ctx *c)
{
	bson_iter_t it;
	int64_t batch = 0, max_time = 1000;
	if (!bson_iter_init_find(&it, c->cmd, "getMore") || !BSON_ITER_HOLDS_INT64(&it))
		return mpeer_errorf(c, MPEER_E_TYPE_MISMATCH, "getMore must be an int64 cursor id");
	int64_t id = bson_iter_int64(&it);
	mpeer_get_int64(c->cmd, "batchSize", &batch);
	mpeer_get_int64(c->cmd, "maxTimeMS", &max_time);
	mpeer_cursor *cur = mpeer_cursor_find(id);
	if (cur == NULL)
		return mpeer_errorf(c, MPEER_E_CURSOR_NOT_FOUND, "cursor id %" PRId64 " not found",
				    id);
	if (cur->kind == MPEER_CURSOR_STREAM) {
		c->park_cursor = id;
		c->park_batch = batch > 0 && batch < INT32_MAX ? (int32_t)batch : 0;
		c->park_deadline = mpeer_mono_ms() + (max_time > 0 ? max_time : 1000);
		return mpeer_getmore_stream(c, cur, c->park_batch, false);
	}
	bson_t arr = BSON_INITIALIZER;
	mpeer_append_batch(&arr, cur->docs, &cur->pos, cur->n, batch);
	char ns[sizeof cur->ns];
	bson_strncpy(ns, cur->ns, sizeof ns);
	if (cur->pos == cur->n) {
		mpeer_cursor_kill(id);
		id = 0;
	}
	mpeer_append_cursor(c->reply, id, ns, "nextBatch", &arr, NULL);
	bson_destroy(&arr);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_killcursors(mpeer_ctx *c)
{
	bson_t ids, killed = BSON_INITIALIZER, unknown = BSON_INITIALIZER;
	bson_iter_t it;
	uint32_t nk = 0, nu = 0;
	if (!mpeer_get_doc(c->cmd, "cursors", &ids))
		return mpeer_errorf(c, MPEER_E_FAILED_TO_PARSE, "killCursors needs cursors");
	bson_iter_init(&it, &ids);
	while (bson_iter_next(&it)) {
		char key[16];
		const char *k;
		if (!BSON_ITER_HOLDS_INT64(&it))
			continue;
		int64_t id = bson_iter_int64(&it);
		bool found = mpeer_cursor_find(id) != NULL;
		mpeer_cursor_kill(id);
		bson_uint32_to_string(found ? nk++ : nu++, &k, key, sizeof key);
		bson_append_int64(found ? &killed : &unknown, k, -1, id);
	}
	bson_append_array(c->reply, "cursorsKilled", -1, &killed);
	bson_append_array(c->reply, "cursorsNotFound", -1, &unknown);
	bson_destroy(&killed);
	bson_destroy(&unknown);
	return mpeer_ok(c);
}

/* mpeer_apply_entry replays a committed transaction's effect on the real collections. */
static void
mpeer_apply_entry(const mpeer_entry *e)
{
	mpeer_coll *coll = mpeer_get_coll(e->db, e->coll);
	bson_iter_t id;
	if (coll == NULL || e->key == NULL || !bson_iter_init_find(&id, e->key, "_id"))
		return;
	ssize_t i = mpeer_find_by_id(coll, bson_iter_value(&id));
	if (e->op == MPEER_OP_DELETE) {
		if (i >= 0)
			mpeer_coll_remove(coll, (size_t)i);
		return;
	}
	bson_t *doc = bson_copy(e->doc);
	if (i >= 0) {
		mpeer_coll_set(coll, (size_t)i, doc);
	} else {
		mpeer_coll_push(coll, doc);
	}
}

static mpeer_outcome
mpeer_cmd_commit(mpeer_ctx *c)
{
	mpeer_session *s = c->session;
	if (s == NULL || !c->in_txn)
		return mpeer_errorf(c, MPEER_E_NO_SUCH_TXN, "no transaction to commit");
	if (s->state == MPEER_TXN_COMMITTED)
		return mpeer_ok(c); /* a retried commit */
	if (s->state != MPEER_TXN_ACTIVE)
		return mpeer_errorf(c, MPEER_E_NO_SUCH_TXN,
				    "Transaction %" PRId64 " has been aborted", s->txn);
	/*
	 * A document the transaction wrote that another write changed after the
	 * transaction's copy was taken: MongoDB would have made that write wait
	 * for the transaction, or failed the transaction's own write; the peer
	 * applied the other write at once, so the transaction, serialized after
	 * it, fails now with the same error.
	 */
	for (size_t i = 0; i < s->pending.n; i++) {
		const mpeer_entry *e = &s->pending.v[i];
		bson_iter_t id;
		if (e->key == NULL || !bson_iter_init_find(&id, e->key, "_id"))
			continue;
		for (size_t k = 0; k < s->ncopies; k++) {
			const mpeer_coll *copy = s->copies[k];
			if (strcmp(copy->db, e->db) == 0 && strcmp(copy->name, e->coll) == 0) {
				if (mpeer_txn_conflict(copy, bson_iter_value(&id))) {
					mpeer_entries none = {0};
					return mpeer_write_conflict(c, &none);
				}
				break;
			}
		}
	}
	/* All of a transaction's events share one cluster time, in order (mongo-peer.md §2). */
	uint64_t ts = s->pending.n > 0 ? mpeer_ts_next() : 0;
	int64_t wall = mpeer_now_ms();
	for (size_t i = 0; i < s->pending.n; i++) {
		mpeer_entry *e = &s->pending.v[i];
		mpeer_apply_entry(e);
		e->ts = ts;
		e->idx = (uint32_t)i;
		e->wall_ms = wall;
		e->lsid = bson_copy(s->lsid);
		e->txn_number = s->txn;
		mpeer_oplog_append(e);
		c->mutated = true;
	}
	s->pending.n = 0;
	mpeer_txn_discard(s);
	s->state = MPEER_TXN_COMMITTED;
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_abort(mpeer_ctx *c)
{
	mpeer_session *s = c->session;
	if (s == NULL || !c->in_txn)
		return mpeer_errorf(c, MPEER_E_NO_SUCH_TXN, "no transaction to abort");
	if (s->state == MPEER_TXN_COMMITTED)
		return mpeer_errorf(c, MPEER_E_TXN_COMMITTED,
				    "Transaction %" PRId64 " has been committed", s->txn);
	if (s->state != MPEER_TXN_ACTIVE)
		return mpeer_errorf(c, MPEER_E_NO_SUCH_TXN,
				    "Transaction %" PRId64 " has been aborted", s->txn);
	mpeer_txn_discard(s);
	s->state = MPEER_TXN_ABORTED;
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_end_sessions(mpeer_ctx *c)
{
	bson_t ids;
	bson_iter_t it;
	if (mpeer_get_doc(c->cmd, "endSessions", &ids)) {
		bson_iter_init(&it, &ids);
		while (bson_iter_next(&it)) {
			bson_iter_t id;
			bson_subtype_t sub;
			uint32_t len;
			const uint8_t *data;
			if (BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &id) &&
			    bson_iter_find(&id, "id") && BSON_ITER_HOLDS_BINARY(&id)) {
				bson_iter_binary(&id, &sub, &len, &data);
				if (len == 16)
					mpeer_session_end(data);
			}
		}
	}
	return mpeer_ok(c);
}

/* mpeer_log_ddl appends a DDL entry (drop, rename, dropDatabase) to the oplog. */
static void
mpeer_log_ddl(mpeer_ctx *c, char op, const char *db, const char *coll, const char *to_db,
	      const char *to_coll)
{
	mpeer_entries l = {0};
	mpeer_entry *e = mpeer_entries_add(&l, op, db, coll ? coll : "");
	if (e != NULL && to_db != NULL) {
		bson_strncpy(e->to_db, to_db, sizeof e->to_db);
		bson_strncpy(e->to_coll, to_coll, sizeof e->to_coll);
	}
	bool in_txn = c->in_txn;
	c->in_txn = false;
	mpeer_publish(c, &l);
	c->in_txn = in_txn;
}

static mpeer_outcome
mpeer_cmd_drop(mpeer_ctx *c)
{
	char name[MPEER_COLL_MAX];
	if (!mpeer_coll_name(c, name, sizeof name))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
	mpeer_coll *coll = mpeer_find_coll(c->db, name);
	if (coll == NULL)
		return mpeer_errorf(c, MPEER_E_NS_NOT_FOUND, "ns not found");
	mpeer_drop_coll(coll);
	mpeer_log_ddl(c, MPEER_OP_DROP, c->db, name, NULL, NULL);
	bson_append_int32(c->reply, "nIndexesWas", -1, 1);
	bson_append_utf8(c->reply, "ns", 2, name, -1);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_drop_database(mpeer_ctx *c)
{
	/* As on a replica set: a drop per collection, then dropDatabase (mongo-peer.md §7). */
	for (size_t i = 0; i < mpeer_ncolls;) {
		if (strcmp(mpeer_colls[i]->db, c->db) != 0) {
			i++;
			continue;
		}
		char name[MPEER_COLL_MAX];
		bson_strncpy(name, mpeer_colls[i]->name, sizeof name);
		mpeer_drop_coll(mpeer_colls[i]);
		mpeer_log_ddl(c, MPEER_OP_DROP, c->db, name, NULL, NULL);
	}
	mpeer_log_ddl(c, MPEER_OP_DROP_DB, c->db, NULL, NULL, NULL);
	bson_append_utf8(c->reply, "dropped", -1, c->db, -1);
	return mpeer_ok(c);
}

/* mpeer_split_ns splits "db.coll" into its parts, checking their sizes. */
static bool
mpeer_split_ns(const char *ns, char *db, char *coll)
{
	const char *dot = strchr(ns, '.');
	if (dot == NULL || dot == ns || (size_t)(dot - ns) >= MPEER_DB_MAX || dot[1] == '\0' ||
	    strlen(dot + 1) >= MPEER_COLL_MAX)
		return false;
	memcpy(db, ns, (size_t)(dot - ns));
	db[dot - ns] = '\0';
	bson_strncpy(coll, dot + 1, MPEER_COLL_MAX);
	return true;
}

static mpeer_outcome
mpeer_cmd_rename(mpeer_ctx *c)
{
	bson_iter_t it;
	char fdb[MPEER_DB_MAX], fcoll[MPEER_COLL_MAX], tdb[MPEER_DB_MAX], tcoll[MPEER_COLL_MAX];
	if (!bson_iter_init_find(&it, c->cmd, "renameCollection") || !BSON_ITER_HOLDS_UTF8(&it) ||
	    !mpeer_split_ns(bson_iter_utf8(&it, NULL), fdb, fcoll))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid source namespace");
	if (!bson_iter_init_find(&it, c->cmd, "to") || !BSON_ITER_HOLDS_UTF8(&it) ||
	    !mpeer_split_ns(bson_iter_utf8(&it, NULL), tdb, tcoll))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid target namespace");
	mpeer_coll *from = mpeer_find_coll(fdb, fcoll);
	if (from == NULL)
		return mpeer_errorf(c, MPEER_E_NS_NOT_FOUND, "source namespace does not exist");
	mpeer_coll *to = mpeer_find_coll(tdb, tcoll);
	if (to != NULL) {
		if (!mpeer_get_bool(c->cmd, "dropTarget", false))
			return mpeer_errorf(c, 48, "target namespace exists");
		mpeer_drop_coll(to);
		mpeer_log_ddl(c, MPEER_OP_DROP, tdb, tcoll, NULL, NULL);
	}
	bson_strncpy(from->db, tdb, sizeof from->db);
	bson_strncpy(from->name, tcoll, sizeof from->name);
	from->created = ++mpeer_wstamp; /* a transaction's snapshot of either name is stale now */
	mpeer_log_ddl(c, MPEER_OP_RENAME, fdb, fcoll, tdb, tcoll);
	return mpeer_ok(c);
}

/*
 * mpeer_images_option reads changeStreamPreAndPostImages: {enabled: <bool>}
 * of create or collMod: 0 absent, 1 read into *enabled, -1 an error answered.
 */
static int
mpeer_images_option(mpeer_ctx *c, bool *enabled, mpeer_outcome *out)
{
	bson_iter_t it, sub;
	if (!bson_iter_init_find(&it, c->cmd, "changeStreamPreAndPostImages"))
		return 0;
	if (!BSON_ITER_HOLDS_DOCUMENT(&it)) {
		*out = mpeer_errorf(c, MPEER_E_TYPE_MISMATCH,
				    "BSON field 'changeStreamPreAndPostImages' is the wrong type, "
				    "expected type 'object'");
		return -1;
	}
	bool found = false;
	bson_iter_recurse(&it, &sub);
	while (bson_iter_next(&sub)) {
		if (strcmp(bson_iter_key(&sub), "enabled") != 0) {
			*out = mpeer_errorf(c, 40415,
					    "BSON field 'changeStreamPreAndPostImages.%s' is an "
					    "unknown field.",
					    bson_iter_key(&sub));
			return -1;
		}
		if (!BSON_ITER_HOLDS_BOOL(&sub)) {
			*out = mpeer_errorf(c, MPEER_E_TYPE_MISMATCH,
					    "BSON field 'changeStreamPreAndPostImages.enabled' is "
					    "the wrong type, expected type 'bool'");
			return -1;
		}
		*enabled = bson_iter_bool(&sub);
		found = true;
	}
	if (!found) {
		*out = mpeer_errorf(c, 40414,
				    "BSON field 'changeStreamPreAndPostImages.enabled' is missing "
				    "but a required field");
		return -1;
	}
	return 1;
}

static mpeer_outcome
mpeer_cmd_create(mpeer_ctx *c)
{
	char name[MPEER_COLL_MAX];
	bool images = false;
	mpeer_outcome out;
	if (!mpeer_coll_name(c, name, sizeof name))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
	if (mpeer_images_option(c, &images, &out) < 0)
		return out;
	if (mpeer_find_coll(c->db, name) != NULL)
		return mpeer_errorf(c, 48, "Collection %s.%s already exists.", c->db, name);
	mpeer_coll *coll = mpeer_get_coll(c->db, name);
	if (coll == NULL)
		return mpeer_errorf(c, 1, "out of memory");
	coll->images = images;
	c->mutated = true;
	return mpeer_ok(c);
}

/* mpeer_cmd_coll_mod: only changeStreamPreAndPostImages; it leaves no change event. */
static mpeer_outcome
mpeer_cmd_coll_mod(mpeer_ctx *c)
{
	char name[MPEER_COLL_MAX];
	bool images = false;
	mpeer_outcome out;
	bson_iter_t it;
	if (!mpeer_coll_name(c, name, sizeof name))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
	bson_iter_init(&it, c->cmd);
	bson_iter_next(&it);
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		if (k[0] != '$' && strcmp(k, "changeStreamPreAndPostImages") != 0 &&
		    strcmp(k, "lsid") != 0 && strcmp(k, "txnNumber") != 0 &&
		    strcmp(k, "writeConcern") != 0 && strcmp(k, "comment") != 0)
			return mpeer_errorf(c, MPEER_E_BAD_VALUE,
					    "collMod option '%s' is not implemented by the peer",
					    k);
	}
	int r = mpeer_images_option(c, &images, &out);
	if (r < 0)
		return out;
	mpeer_coll *coll = mpeer_find_coll(c->db, name);
	if (coll == NULL)
		return mpeer_errorf(c, MPEER_E_NS_NOT_FOUND, "ns does not exist: %s.%s", c->db,
				    name);
	if (r > 0 && coll->images != images) {
		coll->images = images;
		c->mutated = true;
	}
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_list_collections(mpeer_ctx *c)
{
	bson_t arr = BSON_INITIALIZER;
	uint32_t k = 0;
	char ns[MPEER_NS_MAX];
	for (size_t i = 0; i < mpeer_ncolls; i++) {
		if (strcmp(mpeer_colls[i]->db, c->db) != 0)
			continue;
		char key[16];
		const char *ks;
		bson_t d, o, info;
		bson_uint32_to_string(k++, &ks, key, sizeof key);
		bson_append_document_begin(&arr, ks, -1, &d);
		bson_append_utf8(&d, "name", 4, mpeer_colls[i]->name, -1);
		bson_append_utf8(&d, "type", 4, "collection", -1);
		bson_append_document_begin(&d, "options", -1, &o);
		if (mpeer_colls[i]->images) {
			bson_t img;
			bson_append_document_begin(&o, "changeStreamPreAndPostImages", -1, &img);
			bson_append_bool(&img, "enabled", -1, true);
			bson_append_document_end(&o, &img);
		}
		bson_append_document_end(&d, &o);
		bson_append_document_begin(&d, "info", -1, &info);
		bson_append_bool(&info, "readOnly", -1, false);
		bson_append_document_end(&d, &info);
		bson_append_document_end(&arr, &d);
	}
	snprintf(ns, sizeof ns, "%s.$cmd.listCollections", c->db);
	mpeer_append_cursor(c->reply, 0, ns, "firstBatch", &arr, NULL);
	bson_destroy(&arr);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_list_indexes(mpeer_ctx *c)
{
	char name[MPEER_COLL_MAX], ns[MPEER_NS_MAX];
	if (!mpeer_coll_name(c, name, sizeof name))
		return mpeer_errorf(c, MPEER_E_INVALID_NS, "invalid collection name");
	if (mpeer_find_coll(c->db, name) == NULL)
		return mpeer_errorf(c, MPEER_E_NS_NOT_FOUND, "ns does not exist: %s.%s", c->db,
				    name);
	bson_t arr = BSON_INITIALIZER, d, key;
	bson_append_document_begin(&arr, "0", 1, &d);
	bson_append_int32(&d, "v", 1, 2);
	bson_append_document_begin(&d, "key", 3, &key);
	bson_append_int32(&key, "_id", 3, 1);
	bson_append_document_end(&d, &key);
	bson_append_utf8(&d, "name", 4, "_id_", -1);
	bson_append_document_end(&arr, &d);
	snprintf(ns, sizeof ns, "%s.%s", c->db, name);
	mpeer_append_cursor(c->reply, 0, ns, "firstBatch", &arr, NULL);
	bson_destroy(&arr);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_list_databases(mpeer_ctx *c)
{
	bson_t arr = BSON_INITIALIZER;
	uint32_t k = 0;
	for (size_t i = 0; i < mpeer_ncolls; i++) {
		bool seen = false;
		for (size_t j = 0; j < i; j++)
			if (strcmp(mpeer_colls[j]->db, mpeer_colls[i]->db) == 0)
				seen = true;
		if (seen)
			continue;
		char key[16];
		const char *ks;
		bson_t d;
		bson_uint32_to_string(k++, &ks, key, sizeof key);
		bson_append_document_begin(&arr, ks, -1, &d);
		bson_append_utf8(&d, "name", 4, mpeer_colls[i]->db, -1);
		bson_append_double(&d, "sizeOnDisk", -1, 0.0);
		bson_append_bool(&d, "empty", -1, false);
		bson_append_document_end(&arr, &d);
	}
	bson_append_array(c->reply, "databases", -1, &arr);
	bson_append_double(c->reply, "totalSize", -1, 0.0);
	bson_destroy(&arr);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_build_info(mpeer_ctx *c)
{
	bson_t v;
	bson_append_utf8(c->reply, "version", -1, "5.0.0-sluice-mongo-peer", -1);
	bson_append_array_begin(c->reply, "versionArray", -1, &v);
	bson_append_int32(&v, "0", 1, 5);
	bson_append_int32(&v, "1", 1, 0);
	bson_append_int32(&v, "2", 1, 0);
	bson_append_int32(&v, "3", 1, 0);
	bson_append_array_end(c->reply, &v);
	bson_append_int32(c->reply, "maxBsonObjectSize", -1, 16777216);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_hello(mpeer_ctx *c, bool legacy)
{
	char me[96];
	bson_t hosts;
	bson_oid_t election;
	snprintf(me, sizeof me, "%s:%d", mpeer_host, mpeer_port);
	bson_append_bool(c->reply, legacy ? "ismaster" : "isWritablePrimary", -1, true);
	bson_append_bool(c->reply, "helloOk", -1, true);
	/* a standalone mongod names no set, hosts, primary, election (but has sessions) */
	if (!mpeer_standalone) {
		bson_append_utf8(c->reply, "setName", -1, "rs0", -1);
		bson_append_int32(c->reply, "setVersion", -1, 1);
		bson_append_array_begin(c->reply, "hosts", -1, &hosts);
		bson_append_utf8(&hosts, "0", 1, me, -1);
		bson_append_array_end(c->reply, &hosts);
		bson_append_utf8(c->reply, "me", -1, me, -1);
		bson_append_utf8(c->reply, "primary", -1, me, -1);
		bson_append_bool(c->reply, "secondary", -1, false);
		bson_oid_init_from_string(&election, "7fffffff0000000000000001");
		bson_append_oid(c->reply, "electionId", -1, &election);
	}
	/* Integer widths matter: libmongoc marks a server failed on a wrong type. */
	bson_append_int32(c->reply, "maxBsonObjectSize", -1, 16777216);
	bson_append_int32(c->reply, "maxMessageSizeBytes", -1, MPW_MAX_MESSAGE);
	bson_append_int32(c->reply, "maxWriteBatchSize", -1, 100000);
	bson_append_date_time(c->reply, "localTime", -1, mpeer_now_ms());
	bson_append_int32(c->reply, "logicalSessionTimeoutMinutes", -1, 30);
	bson_append_int32(c->reply, "connectionId", -1, 1);
	bson_append_int32(c->reply, "minWireVersion", -1, 0);
	bson_append_int32(c->reply, "maxWireVersion", -1, 13);
	bson_append_bool(c->reply, "readOnly", -1, false);
	return mpeer_ok(c);
}

static mpeer_outcome
mpeer_cmd_configure_failpoint(mpeer_ctx *c)
{
	bson_iter_t it;
	bson_t data;
	if (!bson_iter_init_find(&it, c->cmd, "configureFailPoint") || !BSON_ITER_HOLDS_UTF8(&it) ||
	    strcmp(bson_iter_utf8(&it, NULL), "failCommand") != 0)
		return mpeer_errorf(c, MPEER_E_BAD_VALUE,
				    "only the failCommand fail point is implemented by the peer");
	if (!bson_iter_init_find(&it, c->cmd, "mode"))
		return mpeer_errorf(c, MPEER_E_BAD_VALUE, "configureFailPoint needs a mode");
	int64_t times = -1, skip = 0;
	bool on = true;
	if (BSON_ITER_HOLDS_UTF8(&it)) {
		const char *mode = bson_iter_utf8(&it, NULL);
		if (strcmp(mode, "off") == 0)
			on = false;
		else if (strcmp(mode, "alwaysOn") != 0)
			return mpeer_errorf(c, MPEER_E_BAD_VALUE, "unknown mode %s", mode);
	} else if (BSON_ITER_HOLDS_DOCUMENT(&it)) {
		bson_t m;
		uint32_t l;
		const uint8_t *d;
		bson_iter_document(&it, &l, &d);
		bson_init_static(&m, d, l);
		if (mpeer_get_int64(&m, "times", &times)) {
			if (times <= 0)
				on = false;
		} else if (!mpeer_get_int64(&m, "skip", &skip)) {
			return mpeer_errorf(c, MPEER_E_BAD_VALUE, "mode needs times or skip");
		}
	} else {
		return mpeer_errorf(c, MPEER_E_TYPE_MISMATCH, "mode must be a string or document");
	}
	if (on && (!mpeer_get_doc(c->cmd, "data", &data) || !bson_has_field(&data, "failCommands")))
		return mpeer_errorf(c, MPEER_E_BAD_VALUE, "failCommand needs data.failCommands");
	if (mpeer_fp.data)
		bson_destroy(mpeer_fp.data);
	mpeer_fp.data = on ? bson_copy(&data) : NULL;
	mpeer_fp.on = on;
	mpeer_fp.times = times;
	mpeer_fp.skip = skip;
	bson_append_int32(c->reply, "count", -1, 0);
	return mpeer_ok(c);
}

/* ---- dispatch ---- */

typedef struct mpeer_conn {
	int fd;
	uint8_t *in; /* owned: bytes read, not yet a whole message */
	size_t in_len, in_cap;
	uint8_t *out; /* owned: replies not yet written */
	size_t out_len, out_cap, out_off;
	bool dead;
	char app[128]; /* the handshake's client.application.name */
	/* A getMore waiting for change events. */
	bool parked;
	int32_t park_req;
	int32_t park_op;
	int64_t park_cursor;
	int32_t park_batch;
	int64_t park_deadline;
} mpeer_conn;

/* mpeer_failpoint_hits decides whether failCommand fails this command now. */
static bool
mpeer_failpoint_hits(const mpeer_ctx *c)
{
	bson_iter_t it, list;
	if (!mpeer_fp.on || strcmp(c->name, "configureFailPoint") == 0)
		return false;
	bool listed = false;
	if (bson_iter_init_find(&it, mpeer_fp.data, "failCommands") && BSON_ITER_HOLDS_ARRAY(&it) &&
	    bson_iter_recurse(&it, &list)) {
		while (bson_iter_next(&list))
			if (BSON_ITER_HOLDS_UTF8(&list) &&
			    strcmp(bson_iter_utf8(&list, NULL), c->name) == 0)
				listed = true;
	}
	if (!listed)
		return false;
	if (bson_iter_init_find(&it, mpeer_fp.data, "appName") && BSON_ITER_HOLDS_UTF8(&it) &&
	    strcmp(bson_iter_utf8(&it, NULL), c->conn->app) != 0)
		return false;
	if (mpeer_fp.skip > 0) {
		mpeer_fp.skip--;
		return false;
	}
	if (mpeer_fp.times > 0 && --mpeer_fp.times == 0)
		mpeer_fp.on = false;
	return true;
}

/* mpeer_failpoint_fire answers the command as data says: a closed connection or an error. */
static mpeer_outcome
mpeer_failpoint_fire(mpeer_ctx *c, const bson_t *data)
{
	bson_iter_t it;
	if (mpeer_get_bool(data, "closeConnection", false))
		return MPEER_CLOSE;
	int64_t code = 1;
	mpeer_get_int64(data, "errorCode", &code);
	mpeer_errorf(c, (int32_t)code, "Failing command %s via 'failCommand' failpoint", c->name);
	if (bson_iter_init_find(&it, data, "errorLabels") && BSON_ITER_HOLDS_ARRAY(&it)) {
		/* The configured labels replace the server's own (mongo-peer.md §3). */
		bson_t *copy = bson_new();
		bson_copy_to_excluding_noinit(c->reply, copy, "errorLabels", NULL);
		bson_append_iter(copy, "errorLabels", -1, &it);
		bson_reinit(c->reply);
		bson_concat(c->reply, copy);
		bson_destroy(copy);
	}
	return MPEER_REPLY;
}

/* mpeer_begin_session applies lsid/txnNumber/autocommit; false when it answered an error. */
static bool
mpeer_begin_session(mpeer_ctx *c, bson_t **cached)
{
	bson_iter_t it;
	*cached = NULL;
	if (!bson_iter_init_find(&it, c->cmd, "lsid"))
		return true;
	c->session = mpeer_session_get(&it);
	if (c->session == NULL) {
		mpeer_errorf(c, MPEER_E_BAD_VALUE, "malformed lsid, or too many sessions");
		return false;
	}
	mpeer_session *s = c->session;
	if (!bson_iter_init_find(&it, c->cmd, "txnNumber"))
		return true;
	if (!BSON_ITER_HOLDS_INT64(&it)) {
		mpeer_errorf(c, MPEER_E_TYPE_MISMATCH, "txnNumber must be an int64");
		return false;
	}
	if (mpeer_standalone) {
		/* what mongod answers a transaction or retryable write without a replica set */
		mpeer_errorf(c, MPEER_E_ILLEGAL_OPERATION,
			     "Transaction numbers are only allowed on a replica set member or "
			     "mongos");
		return false;
	}
	int64_t n = bson_iter_int64(&it);
	c->txn_number = n;
	if (n < s->txn) {
		mpeer_errorf(c, MPEER_E_TXN_TOO_OLD, "txnNumber %" PRId64 " is older than %" PRId64,
			     n, s->txn);
		return false;
	}
	if (!bson_has_field(c->cmd, "autocommit")) {
		/* A retryable write: answer a retry with the first reply, run it once. */
		if (n == s->txn && s->has_retry) {
			*cached = bson_copy(s->retry_reply);
			return true;
		}
		if (s->state == MPEER_TXN_ACTIVE)
			mpeer_txn_discard(s);
		s->state = MPEER_TXN_NONE;
		s->txn = n;
		c->retryable = true;
		return true;
	}
	if (mpeer_get_bool(c->cmd, "autocommit", true)) {
		mpeer_errorf(c, MPEER_E_BAD_VALUE, "autocommit must be false when given");
		return false;
	}
	if (mpeer_get_bool(c->cmd, "startTransaction", false)) {
		if (n == s->txn && s->state != MPEER_TXN_NONE) {
			mpeer_errorf(c, MPEER_E_CONFLICTING_OPS,
				     "transaction %" PRId64 " has already been started", n);
			return false;
		}
		if (s->state == MPEER_TXN_ACTIVE)
			mpeer_txn_discard(s);
		s->txn = n;
		s->state = MPEER_TXN_ACTIVE;
		s->has_retry = false;
		c->in_txn = true;
		return true;
	}
	bool ends = strcmp(c->name, "commitTransaction") == 0 ||
		    strcmp(c->name, "abortTransaction") == 0;
	if (n != s->txn || (s->state != MPEER_TXN_ACTIVE && !ends)) {
		mpeer_errorf(c, MPEER_E_NO_SUCH_TXN,
			     "Given transaction number %" PRId64
			     " does not match any in-progress transactions",
			     n);
		return false;
	}
	c->in_txn = true;
	return true;
}

static mpeer_outcome
mpeer_run(mpeer_ctx *c)
{
	const char *n = c->name;
	bool writes =
		strcmp(n, "insert") == 0 || strcmp(n, "update") == 0 || strcmp(n, "delete") == 0;
	if (c->in_txn && !writes && strcmp(n, "find") != 0 && strcmp(n, "count") != 0 &&
	    strcmp(n, "commitTransaction") != 0 && strcmp(n, "abortTransaction") != 0 &&
	    strcmp(n, "aggregate") != 0 && strcmp(n, "getMore") != 0 &&
	    strcmp(n, "killCursors") != 0)
		return mpeer_errorf(c, MPEER_E_NOT_IN_TXN,
				    "Cannot run '%s' in a multi-document transaction.", n);
	if (strcmp(n, "insert") == 0)
		return mpeer_cmd_insert(c);
	if (strcmp(n, "update") == 0)
		return mpeer_cmd_update(c);
	if (strcmp(n, "delete") == 0)
		return mpeer_cmd_delete(c);
	if (strcmp(n, "find") == 0)
		return mpeer_cmd_find(c);
	if (strcmp(n, "count") == 0)
		return mpeer_cmd_count(c);
	if (strcmp(n, "getMore") == 0)
		return mpeer_cmd_getmore(c);
	if (strcmp(n, "killCursors") == 0)
		return mpeer_cmd_killcursors(c);
	if (strcmp(n, "aggregate") == 0)
		return mpeer_cmd_aggregate(c);
	if (strcmp(n, "commitTransaction") == 0)
		return mpeer_cmd_commit(c);
	if (strcmp(n, "abortTransaction") == 0)
		return mpeer_cmd_abort(c);
	if (strcmp(n, "endSessions") == 0)
		return mpeer_cmd_end_sessions(c);
	if (strcmp(n, "hello") == 0)
		return mpeer_cmd_hello(c, false);
	if (strcmp(n, "isMaster") == 0 || strcmp(n, "ismaster") == 0)
		return mpeer_cmd_hello(c, true);
	if (strcmp(n, "ping") == 0)
		return mpeer_ok(c);
	if (strcmp(n, "buildInfo") == 0 || strcmp(n, "buildinfo") == 0)
		return mpeer_cmd_build_info(c);
	if (strcmp(n, "listDatabases") == 0)
		return mpeer_cmd_list_databases(c);
	if (strcmp(n, "listCollections") == 0)
		return mpeer_cmd_list_collections(c);
	if (strcmp(n, "listIndexes") == 0)
		return mpeer_cmd_list_indexes(c);
	if (strcmp(n, "createIndexes") == 0)
		return mpeer_ok(c); /* only _id is indexed; other indexes change nothing here */
	if (strcmp(n, "create") == 0)
		return mpeer_cmd_create(c);
	if (strcmp(n, "collMod") == 0)
		return mpeer_cmd_coll_mod(c);
	if (strcmp(n, "drop") == 0)
		return mpeer_cmd_drop(c);
	if (strcmp(n, "dropDatabase") == 0)
		return mpeer_cmd_drop_database(c);
	if (strcmp(n, "renameCollection") == 0)
		return mpeer_cmd_rename(c);
	if (strcmp(n, "configureFailPoint") == 0)
		return mpeer_cmd_configure_failpoint(c);
	return mpeer_errorf(c, MPEER_E_CMD_NOT_FOUND, "no such command: '%s'", n);
}

/* mpeer_finish_reply adds the cluster time every reply gossips (a standalone has none). */
static void
mpeer_finish_reply(bson_t *reply)
{
	uint64_t now = mpeer_ts_now();
	bson_t ct, sig;
	uint8_t hash[20] = {0};
	if (mpeer_standalone)
		return;
	bson_append_document_begin(reply, "$clusterTime", -1, &ct);
	mpeer_append_ts(&ct, "clusterTime", now);
	bson_append_document_begin(&ct, "signature", -1, &sig);
	bson_append_binary(&sig, "hash", -1, BSON_SUBTYPE_BINARY, hash, sizeof hash);
	bson_append_int64(&sig, "keyId", -1, 0);
	bson_append_document_end(&ct, &sig);
	bson_append_document_end(reply, &ct);
	mpeer_append_ts(reply, "operationTime", now);
}

static bool mpeer_state_save(void);

/* mpeer_handle runs one decoded request on conn; the reply goes to conn's output. */
static void
mpeer_handle(mpeer_conn *conn, const mpw_request *req)
{
	bson_t reply = BSON_INITIALIZER;
	bson_t *cached = NULL;
	bson_iter_t it;
	mpeer_ctx c = {.conn = conn, .cmd = req->command, .db = req->db, .reply = &reply};
	mpeer_outcome out = MPEER_REPLY;

	bson_iter_init(&it, req->command);
	bson_iter_next(&it);
	c.name = bson_iter_key(&it);
	if ((strcmp(c.name, "isMaster") == 0 || strcmp(c.name, "ismaster") == 0 ||
	     strcmp(c.name, "hello") == 0) &&
	    bson_iter_init_find(&it, req->command, "client")) {
		bson_iter_t app;
		if (BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &app) &&
		    bson_iter_find_descendant(&app, "application.name", &app) &&
		    BSON_ITER_HOLDS_UTF8(&app))
			bson_strncpy(conn->app, bson_iter_utf8(&app, NULL), sizeof conn->app);
	}

	if (strlen(req->db) >= MPEER_DB_MAX) {
		mpeer_errorf(&c, MPEER_E_INVALID_NS, "database name too long");
	} else if (mpeer_failpoint_hits(&c)) {
		/* The data may be replaced by the command itself: keep a copy. */
		bson_t *data = bson_copy(mpeer_fp.data);
		out = mpeer_failpoint_fire(&c, data);
		bson_destroy(data);
	} else if (mpeer_begin_session(&c, &cached)) {
		if (cached != NULL) {
			bson_reinit(&reply);
			bson_copy_to_excluding_noinit(cached, &reply, "$clusterTime",
						      "operationTime", NULL);
			bson_destroy(cached);
		} else {
			out = mpeer_run(&c);
		}
		if (out == MPEER_REPLY && c.retryable && c.session != NULL) {
			if (c.session->retry_reply)
				bson_destroy(c.session->retry_reply);
			c.session->retry_reply = bson_copy(&reply);
			c.session->retry_txn = c.txn_number;
			c.session->has_retry = true;
		}
	}
	if (c.mutated && mpeer_state_path != NULL)
		mpeer_state_save();
	if (out == MPEER_CLOSE) {
		conn->dead = true;
	} else if (out == MPEER_PARK) {
		conn->parked = true;
		conn->park_req = req->request_id;
		conn->park_op = req->op_code;
		conn->park_cursor = c.park_cursor;
		conn->park_batch = c.park_batch;
		conn->park_deadline = c.park_deadline;
	} else if (!req->more_to_come) {
		mpeer_finish_reply(&reply);
		if (!mpw_encode_reply(&conn->out, &conn->out_len, &conn->out_cap, req->request_id,
				      req->op_code, &reply)) {
			mpeer_log("could not encode a reply of %u bytes: closing the connection",
				  reply.len);
			conn->dead = true;
		}
	}
	bson_destroy(&reply);
}

/* mpeer_wake answers a parked getMore when events arrived or its deadline passed. */
static void
mpeer_wake(mpeer_conn *conn, int64_t now)
{
	bson_t reply = BSON_INITIALIZER;
	mpeer_ctx c = {.conn = conn, .reply = &reply, .name = "getMore"};
	mpeer_cursor *cur = mpeer_cursor_find(conn->park_cursor);
	mpeer_outcome out;
	if (cur == NULL)
		out = mpeer_errorf(&c, MPEER_E_CURSOR_NOT_FOUND, "cursor id %" PRId64 " not found",
				   conn->park_cursor);
	else
		out = mpeer_getmore_stream(&c, cur, conn->park_batch, now >= conn->park_deadline);
	if (out == MPEER_REPLY) {
		conn->parked = false;
		mpeer_finish_reply(&reply);
		if (!mpw_encode_reply(&conn->out, &conn->out_len, &conn->out_cap, conn->park_req,
				      conn->park_op, &reply))
			conn->dead = true;
	}
	bson_destroy(&reply);
}

/* ---- state file ---- */

/*
 * The state file is a sequence of BSON documents: a header, then every
 * collection, document and oplog entry. It is rewritten (temporary file, then
 * rename) after every command that changed something, so that a restart
 * keeps each acknowledged write.
 */
static bool
mpeer_state_write_doc(FILE *f, const bson_t *b)
{
	return fwrite(bson_get_data(b), 1, b->len, f) == b->len;
}

static bool
mpeer_state_save(void)
{
	char tmp[4096];
	bool ok = true;
	snprintf(tmp, sizeof tmp, "%s.tmp", mpeer_state_path);
	FILE *f = fopen(tmp, "wb");
	if (f == NULL) {
		mpeer_log("could not open state file \"%s\": %s", tmp, strerror(errno));
		return false;
	}
	bson_t b = BSON_INITIALIZER;
	bson_append_utf8(&b, "kind", -1, "peer", -1);
	bson_append_int32(&b, "version", -1, 1);
	mpeer_append_ts(&b, "lastTs", mpeer_last_ts);
	mpeer_append_ts(&b, "trimmedTs", mpeer_trimmed_ts);
	bson_append_int64(&b, "trimmedIdx", -1, mpeer_trimmed_idx);
	ok = ok && mpeer_state_write_doc(f, &b);
	for (size_t i = 0; ok && i < mpeer_ncolls; i++) {
		const mpeer_coll *coll = mpeer_colls[i];
		bson_reinit(&b);
		bson_append_utf8(&b, "kind", -1, "coll", -1);
		bson_append_utf8(&b, "db", -1, coll->db, -1);
		bson_append_utf8(&b, "coll", -1, coll->name, -1);
		bson_append_bool(&b, "images", -1, coll->images);
		ok = mpeer_state_write_doc(f, &b);
		for (size_t j = 0; ok && j < coll->n; j++) {
			bson_reinit(&b);
			bson_append_utf8(&b, "kind", -1, "doc", -1);
			bson_append_document(&b, "doc", -1, coll->docs[j]);
			ok = mpeer_state_write_doc(f, &b);
		}
	}
	for (size_t i = 0; ok && i < mpeer_oplog_n; i++) {
		const mpeer_entry *e = mpeer_oplog_at(i);
		bson_reinit(&b);
		bson_append_utf8(&b, "kind", -1, "entry", -1);
		mpeer_append_ts(&b, "ts", e->ts);
		bson_append_int64(&b, "idx", -1, e->idx);
		bson_append_date_time(&b, "wall", -1, e->wall_ms);
		bson_append_int32(&b, "op", -1, e->op);
		bson_append_utf8(&b, "db", -1, e->db, -1);
		bson_append_utf8(&b, "coll", -1, e->coll, -1);
		bson_append_utf8(&b, "toDb", -1, e->to_db, -1);
		bson_append_utf8(&b, "toColl", -1, e->to_coll, -1);
		if (e->key)
			bson_append_document(&b, "key", -1, e->key);
		if (e->doc)
			bson_append_document(&b, "doc", -1, e->doc);
		if (e->upd)
			bson_append_document(&b, "upd", -1, e->upd);
		if (e->pre)
			bson_append_document(&b, "pre", -1, e->pre);
		if (e->lsid) {
			bson_append_document(&b, "lsid", -1, e->lsid);
			bson_append_int64(&b, "txnNumber", -1, e->txn_number);
		}
		ok = mpeer_state_write_doc(f, &b);
	}
	bson_destroy(&b);
	if (fclose(f) != 0)
		ok = false;
	if (!ok) {
		mpeer_log("could not write state file \"%s\": %s", tmp, strerror(errno));
		return false;
	}
	if (rename(tmp, mpeer_state_path) != 0) {
		mpeer_log("could not rename \"%s\" to \"%s\": %s", tmp, mpeer_state_path,
			  strerror(errno));
		return false;
	}
	return true;
}

static bson_t *
mpeer_state_sub(const bson_t *b, const char *key)
{
	bson_t sub;
	return mpeer_get_doc(b, key, &sub) ? bson_copy(&sub) : NULL;
}

static bool
mpeer_state_str(const bson_t *b, const char *key, char *out, size_t cap)
{
	bson_iter_t it;
	uint32_t len;
	if (!bson_iter_init_find(&it, b, key) || !BSON_ITER_HOLDS_UTF8(&it))
		return false;
	const char *s = bson_iter_utf8(&it, &len);
	if (len >= cap)
		return false;
	memcpy(out, s, len + 1);
	return true;
}

static uint64_t
mpeer_state_ts(const bson_t *b, const char *key)
{
	bson_iter_t it;
	uint32_t t = 0, i = 0;
	if (bson_iter_init_find(&it, b, key) && BSON_ITER_HOLDS_TIMESTAMP(&it))
		bson_iter_timestamp(&it, &t, &i);
	return (uint64_t)t << 32 | i;
}

/* mpeer_state_load reads the state file if it exists; false when it is unreadable. */
static bool
mpeer_state_load(void)
{
	bson_error_t err;
	bool eof = false, ok = true;
	mpeer_coll *coll = NULL;
	if (access(mpeer_state_path, F_OK) != 0)
		return true;
	bson_reader_t *r = bson_reader_new_from_file(mpeer_state_path, &err);
	if (r == NULL) {
		mpeer_log("could not open state file \"%s\": %s", mpeer_state_path, err.message);
		return false;
	}
	const bson_t *b;
	while (ok && (b = bson_reader_read(r, &eof)) != NULL) {
		char kind[16], db[MPEER_DB_MAX], name[MPEER_COLL_MAX];
		size_t off;
		if (!bson_validate(b, BSON_VALIDATE_NONE, &off) ||
		    !mpeer_state_str(b, "kind", kind, sizeof kind)) {
			ok = false;
			break;
		}
		if (strcmp(kind, "peer") == 0) {
			int64_t idx = 0;
			mpeer_last_ts = mpeer_state_ts(b, "lastTs");
			mpeer_trimmed_ts = mpeer_state_ts(b, "trimmedTs");
			mpeer_get_int64(b, "trimmedIdx", &idx);
			mpeer_trimmed_idx = (uint32_t)idx;
		} else if (strcmp(kind, "coll") == 0) {
			ok = mpeer_state_str(b, "db", db, sizeof db) &&
			     mpeer_state_str(b, "coll", name, sizeof name) &&
			     (coll = mpeer_get_coll(db, name)) != NULL;
			if (ok)
				coll->images = mpeer_get_bool(b, "images", false);
		} else if (strcmp(kind, "doc") == 0) {
			bson_t *doc = mpeer_state_sub(b, "doc");
			ok = coll != NULL && doc != NULL && mpeer_coll_push(coll, doc);
		} else if (strcmp(kind, "entry") == 0) {
			mpeer_entry e = {0};
			int64_t v = 0;
			e.ts = mpeer_state_ts(b, "ts");
			mpeer_get_int64(b, "idx", &v);
			e.idx = (uint32_t)v;
			bson_iter_t it;
			if (bson_iter_init_find(&it, b, "wall") && BSON_ITER_HOLDS_DATE_TIME(&it))
				e.wall_ms = bson_iter_date_time(&it);
			mpeer_get_int64(b, "op", &v);
			e.op = (char)v;
			ok = mpeer_state_str(b, "db", e.db, sizeof e.db) &&
			     mpeer_state_str(b, "coll", e.coll, sizeof e.coll) &&
			     mpeer_state_str(b, "toDb", e.to_db, sizeof e.to_db) &&
			     mpeer_state_str(b, "toColl", e.to_coll, sizeof e.to_coll);
			e.key = mpeer_state_sub(b, "key");
			e.doc = mpeer_state_sub(b, "doc");
			e.upd = mpeer_state_sub(b, "upd");
			e.pre = mpeer_state_sub(b, "pre");
			e.lsid = mpeer_state_sub(b, "lsid");
			mpeer_get_int64(b, "txnNumber", &e.txn_number);
			bool shaped = (e.op != MPEER_OP_INSERT && e.op != MPEER_OP_REPLACE &&
				       e.op != MPEER_OP_UPDATE) ||
				      (e.key && e.doc && (e.op != MPEER_OP_UPDATE || e.upd));
			if (ok && shaped)
				ok = mpeer_oplog_append(&e);
			else
				mpeer_entry_clear(&e);
			ok = ok && shaped;
		}
	}
	bson_reader_destroy(r);
	if (!ok || !eof) {
		mpeer_log("state file \"%s\" is corrupt", mpeer_state_path);
		return false;
	}
	mpeer_log("loaded %zu collections and %zu oplog entries from \"%s\"", mpeer_ncolls,
		  mpeer_oplog_n, mpeer_state_path);
	return true;
}

/* ---- network ---- */

static mpeer_conn *mpeer_conns[MPEER_MAX_CONNS];

static void
mpeer_conn_close(size_t i)
{
	mpeer_conn *c = mpeer_conns[i];
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
	mpeer_conns[i] = NULL;
}

/* mpeer_conn_process handles every whole message in conn's input, unless parked. */
static void
mpeer_conn_process(mpeer_conn *conn)
{
	while (!conn->dead && !conn->parked && conn->in_len >= MPW_HEADER_SIZE) {
		size_t len;
		mpw_status st = mpw_message_length(conn->in, conn->in_len, &len);
		if (st != MPW_OK) {
			mpeer_log("closing a connection: %s", mpw_strerror(st));
			conn->dead = true;
			return;
		}
		if (conn->in_len < len)
			return;
		mpw_request req;
		st = mpw_decode(conn->in, len, &req);
		if (st != MPW_OK) {
			mpeer_log("closing a connection: %s", mpw_strerror(st));
			conn->dead = true;
			return;
		}
		mpeer_handle(conn, &req);
		mpw_request_free(&req);
		memmove(conn->in, conn->in + len, conn->in_len - len);
		conn->in_len -= len;
	}
}

static void
mpeer_conn_read(mpeer_conn *conn)
{
	/* Room for the largest message plus one read, never more. */
	size_t want = conn->in_len + 65536;
	if (want > (size_t)MPW_MAX_MESSAGE + 65536)
		want = (size_t)MPW_MAX_MESSAGE + 65536;
	if (conn->in_cap < want) {
		uint8_t *n = realloc(conn->in, want);
		if (n == NULL) {
			conn->dead = true;
			return;
		}
		conn->in = n;
		conn->in_cap = want;
	}
	if (conn->in_cap == conn->in_len) {
		conn->dead = true;
		return;
	}
	ssize_t r = recv(conn->fd, conn->in + conn->in_len, conn->in_cap - conn->in_len, 0);
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
		conn->dead = true;
		return;
	}
	if (r > 0)
		conn->in_len += (size_t)r;
}

static void
mpeer_conn_write(mpeer_conn *conn)
{
	while (conn->out_off < conn->out_len) {
		ssize_t w = send(conn->fd, conn->out + conn->out_off, conn->out_len - conn->out_off,
				 MSG_NOSIGNAL);
		if (w < 0) {
			if (errno != EAGAIN && errno != EINTR)
				conn->dead = true;
			return;
		}
		conn->out_off += (size_t)w;
	}
	conn->out_off = conn->out_len = 0;
}

static void
mpeer_on_signal(int sig)
{
	(void)sig;
	mpeer_stop = 1;
}

static int
mpeer_listen(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0) {
		mpeer_log("could not create a socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0) {
		mpeer_log("could not listen on 127.0.0.1:%d: %s", port, strerror(errno));
		close(fd);
		return -1;
	}
	socklen_t al = sizeof a;
	getsockname(fd, (struct sockaddr *)&a, &al);
	mpeer_port = ntohs(a.sin_port);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

static void
mpeer_accept(int lfd)
{
	int fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		return;
	size_t slot = MPEER_MAX_CONNS;
	for (size_t i = 0; i < MPEER_MAX_CONNS; i++)
		if (mpeer_conns[i] == NULL) {
			slot = i;
			break;
		}
	mpeer_conn *c = slot < MPEER_MAX_CONNS ? calloc(1, sizeof *c) : NULL;
	if (c == NULL) {
		mpeer_log("refusing a connection: %d connections open", MPEER_MAX_CONNS);
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	c->fd = fd;
	mpeer_conns[slot] = c;
	mpeer_next_conn_id++;
}

/* mpeer_serve runs the event loop until SIGTERM or SIGINT. */
static void
mpeer_serve(int lfd)
{
	struct pollfd pfd[MPEER_MAX_CONNS + 1];
	size_t map[MPEER_MAX_CONNS + 1];
	while (!mpeer_stop) {
		int64_t now = mpeer_mono_ms();
		int timeout = 1000;
		nfds_t n = 0;
		pfd[n].fd = lfd;
		pfd[n].events = POLLIN;
		n++;
		for (size_t i = 0; i < MPEER_MAX_CONNS; i++) {
			mpeer_conn *c = mpeer_conns[i];
			if (c == NULL)
				continue;
			if (c->parked) {
				int64_t left = c->park_deadline - now;
				if (left < timeout)
					timeout = left < 0 ? 0 : (int)left;
			}
			pfd[n].fd = c->fd;
			pfd[n].events = (c->parked ? 0 : POLLIN) | (c->out_len ? POLLOUT : 0);
			map[n] = i;
			n++;
		}
		if (poll(pfd, n, timeout) < 0 && errno != EINTR) {
			mpeer_log("poll failed: %s", strerror(errno));
			return;
		}
		if (pfd[0].revents & POLLIN)
			mpeer_accept(lfd);
		for (nfds_t k = 1; k < n; k++) {
			mpeer_conn *c = mpeer_conns[map[k]];
			if (pfd[k].revents & (POLLIN | POLLHUP | POLLERR))
				mpeer_conn_read(c);
			if (!c->dead)
				mpeer_conn_process(c);
		}
		/* Parked getMores see what this round wrote, or time out. */
		now = mpeer_mono_ms();
		for (size_t i = 0; i < MPEER_MAX_CONNS; i++) {
			mpeer_conn *c = mpeer_conns[i];
			if (c == NULL)
				continue;
			if (c->parked && !c->dead) {
				mpeer_wake(c, now);
				if (!c->parked)
					mpeer_conn_process(c);
			}
			if (!c->dead && c->out_len > 0)
				mpeer_conn_write(c);
			if (c->dead)
				mpeer_conn_close(i);
		}
	}
}

static void
mpeer_usage(FILE *f)
{
	fputs("usage: sluice-mongo-peer --port PORT [--state FILE] [--history N] [--standalone]\n"
	      "\n"
	      "A MongoDB replica-set primary (setName rs0) for tests, on 127.0.0.1:PORT\n"
	      "(PORT 0 picks a free one). Connect with mongodb://127.0.0.1:PORT/?replicaSet=rs0.\n"
	      "  --state FILE  keep the data and the oplog in FILE across restarts\n"
	      "  --history N   keep N oplog entries (default 100000); older resume points\n"
	      "                answer ChangeStreamHistoryLost (286)\n"
	      "  --standalone  answer hello like a standalone mongod (no setName, hosts,\n"
	      "                primary): connect with ?directConnection=true; txnNumber\n"
	      "                (transactions, retryable writes) is refused with 20\n"
	      "Runs until SIGTERM or SIGINT. See tests/mongo/README.md.\n",
	      f);
}

static bool
mpeer_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

int
main(int argc, char **argv)
{
	long port = -1, history = (long)mpeer_history;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			mpeer_usage(stdout);
			return 0;
		}
		if (strcmp(a, "--standalone") == 0) {
			mpeer_standalone = true;
			continue;
		}
		if (i + 1 >= argc) {
			mpeer_usage(stderr);
			return 2;
		}
		const char *v = argv[++i];
		if (strcmp(a, "--port") == 0) {
			if (!mpeer_parse_long(v, 0, 65535, &port)) {
				mpeer_log("invalid port \"%s\"", v);
				return 2;
			}
		} else if (strcmp(a, "--state") == 0) {
			mpeer_state_path = v;
		} else if (strcmp(a, "--history") == 0) {
			if (!mpeer_parse_long(v, 1, 100000000, &history)) {
				mpeer_log("invalid history \"%s\"", v);
				return 2;
			}
		} else {
			mpeer_usage(stderr);
			return 2;
		}
	}
	if (port < 0) {
		mpeer_usage(stderr);
		return 2;
	}
	mpeer_history = (size_t)history;
	bson_strncpy(mpeer_host, "127.0.0.1", sizeof mpeer_host);

	struct sigaction sa = {.sa_handler = mpeer_on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (mpeer_state_path != NULL && !mpeer_state_load())
		return 1;
	int lfd = mpeer_listen((int)port);
	if (lfd < 0)
		return 1;
	printf("listening on 127.0.0.1:%d\n", mpeer_port);
	fflush(stdout);
	mpeer_log("listening on 127.0.0.1:%d (history %zu entries%s%s)", mpeer_port, mpeer_history,
		  mpeer_state_path ? ", state " : "", mpeer_state_path ? mpeer_state_path : "");
	mpeer_serve(lfd);
	bool ok = mpeer_state_path == NULL || mpeer_state_save();
	for (size_t i = 0; i < MPEER_MAX_CONNS; i++)
		if (mpeer_conns[i] != NULL)
			mpeer_conn_close(i);
	close(lfd);
	mpeer_log("stopped");
	return ok ? 0 : 1;
}
