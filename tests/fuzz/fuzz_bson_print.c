/*
 * Fuzz target for inspect's rendering of records (tools/print.c), above all
 * of MongoDB's raw BSON fields, whose bytes come from the store: every JSON
 * line must be one line of strict, compact JSON whose record object never
 * holds a key twice (a cut value carries its own marker), without any
 * marker when nothing is cut, every text line one line, and print_bson must
 * judge the bytes the same way in both modes and at any cut. Input layout:
 * fuzz_bson_print.h.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "buf.h"
#include "fuzz_bson_print.h"
#include "json.h"
#include "print.h"
#include "records.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Deeper than any line print can write: 150 BSON levels, two JSON levels each at most. */
#define FBP_JSON_MAX_DEPTH 400

static void
fbp_fail(const char *what, const sluice_buf *out)
{
	fprintf(stderr, "fuzz_bson_print: property violated: %s: %.*s\n", what,
		(int)(out->len < 2000 ? out->len : 2000), out->len ? (const char *)out->data : "");
	abort();
}

/*
 * A strict JSON (RFC 8259) checker that also refuses whitespace: print writes
 * none. With distinct, the members of the outermost object (a record's own
 * fields) must have distinct keys; other objects may repeat one (a BSON
 * document can).
 */
typedef struct fbp_json {
	const uint8_t *p, *end;
	bool distinct;
} fbp_json;

/* Most members of a record object: far more than print writes. */
#define FBP_MAX_MEMBERS 64

static bool fbp_json_value(fbp_json *j, int depth);

static bool
fbp_digit(const fbp_json *j)
{
	return j->p < j->end && *j->p >= '0' && *j->p <= '9';
}

static bool
fbp_json_literal(fbp_json *j, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
		return false;
	j->p += n;
	return true;
}

static bool
fbp_json_string(fbp_json *j)
{
	if (j->p == j->end || *j->p != '"')
		return false;
	j->p++;
	while (j->p < j->end) {
		uint8_t c = *j->p;
		if (c == '"') {
			j->p++;
			return true;
		}
		if (c < 0x20)
			return false;
		if (c == '\\') {
			if (++j->p == j->end)
				return false;
			c = *j->p++;
			if (c == 'u') {
				for (int i = 0; i < 4; i++, j->p++)
					if (j->p == j->end || !((*j->p >= '0' && *j->p <= '9') ||
								(*j->p >= 'a' && *j->p <= 'f') ||
								(*j->p >= 'A' && *j->p <= 'F')))
						return false;
			} else if (c == 0 || strchr("\"\\/bfnrt", c) == NULL)
				return false;
			continue;
		}
		size_t n = sluice_json_utf8_len(j->p, (size_t)(j->end - j->p));
		if (n == 0)
			return false;
		j->p += n;
	}
	return false;
}

static bool
fbp_json_number(fbp_json *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (!fbp_digit(j))
		return false;
	if (*j->p++ != '0')
		while (fbp_digit(j))
			j->p++;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (!fbp_digit(j))
			return false;
		while (fbp_digit(j))
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (!fbp_digit(j))
			return false;
		while (fbp_digit(j))
			j->p++;
	}
	return true;
}

/* fbp_json_members reads the rest of an object (object) or array after its opening. */
static bool
fbp_json_members(fbp_json *j, int depth, bool object)
{
	char close = object ? '}' : ']';
	const uint8_t *keys[FBP_MAX_MEMBERS];
	size_t key_lens[FBP_MAX_MEMBERS], nkeys = 0;
	if (j->p < j->end && *j->p == close) {
		j->p++;
		return true;
	}
	for (;;) {
		const uint8_t *key = j->p;
		if (object && (!fbp_json_string(j) || j->p == j->end || *j->p++ != ':'))
			return false;
		if (object && depth == 0 &&
		    j->distinct) { /* written by print: compared as written */
			size_t len = (size_t)(j->p - 1 - key);
			for (size_t k = 0; k < nkeys; k++)
				if (key_lens[k] == len && memcmp(keys[k], key, len) == 0)
					return false;
			if (nkeys == FBP_MAX_MEMBERS)
				return false;
			keys[nkeys] = key;
			key_lens[nkeys++] = len;
		}
		if (!fbp_json_value(j, depth + 1) || j->p == j->end)
			return false;
		char c = (char)*j->p++;
		if (c == close)
			return true;
		if (c != ',')
			return false;
	}
}

static bool
fbp_json_value(fbp_json *j, int depth)
{
	if (j->p == j->end || depth > FBP_JSON_MAX_DEPTH)
		return false;
	switch (*j->p) {
	case '{':
	case '[':
		return fbp_json_members(j, depth, *j->p++ == '{');
	case '"':
		return fbp_json_string(j);
	case 't':
		return fbp_json_literal(j, "true");
	case 'f':
		return fbp_json_literal(j, "false");
	case 'n':
		return fbp_json_literal(j, "null");
	default:
		return fbp_json_number(j);
	}
}

static bool
fbp_json_ok(const uint8_t *p, size_t len, bool distinct)
{
	fbp_json j = {p, p + len, distinct};
	return fbp_json_value(&j, 0) && j.p == j.end;
}

/* fbp_one_line tells whether out[from..] is one line: a newline at its end and none before. */
static bool
fbp_one_line(const sluice_buf *out, size_t from)
{
	return out->len > from && out->data[out->len - 1] == '\n' &&
	       memchr(out->data + from, '\n', out->len - from - 1) == NULL;
}

/*
 * fbp_has_marker tells whether a JSON line holds a truncation marker: data
 * never looks like one (in canonical Extended JSON a document's field is
 * never a bare number, and strings have their quotes escaped).
 */
static bool
fbp_has_marker(const sluice_buf *out)
{
	static const char marker[] = "{\"truncated\":true,\"bytes\":";
	size_t n = sizeof(marker) - 1;
	for (const uint8_t *p = out->data; out->len >= n && p <= out->data + out->len - n; p++) {
		p = memchr(p, '{', (size_t)(out->data + out->len - n + 1 - p));
		if (p == NULL)
			return false;
		if (memcmp(p, marker, n) == 0 && p[n] >= '0' && p[n] <= '9')
			return true;
	}
	return false;
}

/*
 * fbp_print_record prints rec both ways, values cut at max. JSON must be one
 * line of JSON whose record object has no key twice, and without a marker
 * when max cuts nothing; text one line too when text_line (strings from
 * decoded records are printed raw).
 */
static void
fbp_print_record(const sluice_record *rec, bool text_line, size_t max)
{
	sluice_buf out = {0};
	print_record(&out, true, rec, 3, NULL, max);
	if (!fbp_one_line(&out, 0) || !fbp_json_ok(out.data, out.len - 1, true))
		fbp_fail("a JSON line that is not one line of JSON with distinct keys", &out);
	if (max == SIZE_MAX && fbp_has_marker(&out))
		fbp_fail("a value cut though nothing is", &out);
	sluice_buf_reset(&out);
	print_record(&out, false, rec, 3, NULL, max);
	if (text_line && !fbp_one_line(&out, 0))
		fbp_fail("a text line that is not one line", &out);
	sluice_buf_free(&out);
}

/*
 * fbp_check_cut checks a rendering cut at max against the whole one: the
 * same if the whole fits, else marked as cut, and in text a prefix of the
 * whole of at most max bytes followed by ...<len bytes>.
 */
static void
fbp_check_cut(const sluice_buf *whole, const sluice_buf *cut, bool json, size_t len, size_t max)
{
	if (whole->len <= max) {
		if (cut->len != whole->len || memcmp(cut->data, whole->data, whole->len) != 0)
			fbp_fail("a rendering that fits, cut", cut);
		return;
	}
	static const char marker[] = "{\"truncated\":true,\"bytes\":";
	if (json) {
		if (cut->len < sizeof(marker) - 1 || memcmp(cut->data, marker, sizeof(marker) - 1))
			fbp_fail("a rendering too long, not cut", cut);
		return;
	}
	char tail[48];
	int n = snprintf(tail, sizeof(tail), "...<%zu bytes>", len);
	size_t keep = cut->len - (size_t)n;
	if (cut->len < (size_t)n || keep > max || memcmp(cut->data + keep, tail, (size_t)n) ||
	    (keep > 0 && memcmp(cut->data, whole->data, keep)))
		fbp_fail("a text rendering too long, not cut to a prefix of it", cut);
}

/*
 * fbp_print_bson renders the bytes directly, whole and cut at max: the bytes
 * are a document in every mode or in none, renderings are JSON, and a cut
 * one is what fbp_check_cut expects.
 */
static void
fbp_print_bson(const uint8_t *bson, size_t len, size_t max)
{
	sluice_buf whole = {0}, cut = {0};
	for (int json = 0; json <= 1; json++) {
		sluice_buf_reset(&whole);
		sluice_buf_reset(&cut);
		bool ok = print_bson(&whole, json, bson, len, SIZE_MAX);
		if (ok != (whole.len > 0) || (ok && !fbp_json_ok(whole.data, whole.len, false)))
			fbp_fail("extended JSON that is not JSON", &whole);
		if (print_bson(&cut, json, bson, len, max) != ok)
			fbp_fail("bytes judged otherwise when cut", &cut);
		if (json && print_bson(&cut, false, bson, len, SIZE_MAX) != ok)
			fbp_fail("bytes judged otherwise in relaxed mode", &cut);
		if (!ok)
			continue;
		sluice_buf_reset(&cut);
		(void)print_bson(&cut, json, bson, len, max);
		if (json && !fbp_json_ok(cut.data, cut.len, false))
			fbp_fail("a cut rendering that is not JSON", &cut);
		fbp_check_cut(&whole, &cut, json, len, max);
	}
	sluice_buf_free(&whole);
	sluice_buf_free(&cut);
}

/*
 * fbp_print_slot puts the bytes into one MongoDB BSON field of a record and
 * prints it, values cut at max and whole.
 */
static void
fbp_print_slot(unsigned slot, const uint8_t *bson, size_t len, size_t max)
{
	ProtobufCBinaryData d = {len, (uint8_t *)bson};
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	Sluice__V1__SourcePosition pos = SLUICE__V1__SOURCE_POSITION__INIT;
	Sluice__V1__Begin begin = SLUICE__V1__BEGIN__INIT;
	Sluice__V1__Commit commit = SLUICE__V1__COMMIT__INIT;
	Sluice__V1__Insert insert = SLUICE__V1__INSERT__INIT;
	Sluice__V1__Update update = SLUICE__V1__UPDATE__INIT;
	Sluice__V1__Delete delete_ = SLUICE__V1__DELETE__INIT;
	Sluice__V1__SnapshotBegin snapshot_begin = SLUICE__V1__SNAPSHOT_BEGIN__INIT;
	Sluice__V1__SnapshotRow snapshot_row = SLUICE__V1__SNAPSHOT_ROW__INIT;
	Sluice__V1__Heartbeat heartbeat = SLUICE__V1__HEARTBEAT__INIT;
	Sluice__V1__NamespaceChange ns = SLUICE__V1__NAMESPACE_CHANGE__INIT;
	char origin[] = "mongo1", op[] = "rename", db[] = "shop", coll[] = "orders";

	pos.has_cluster_time = true;
	pos.cluster_time = (uint64_t)1700000000 << 32 | 7;
	pos.has_resume_token = true;
	pos.resume_token = d;
	switch (slot) {
	case FBP_SLOT_BEGIN_TOKEN:
		begin.origin_node = origin;
		begin.has_source_token = true;
		begin.source_token = d;
		rec.body_case = SLUICE__V1__RECORD__BODY_BEGIN;
		rec.begin = &begin;
		break;
	case FBP_SLOT_COMMIT_TOKEN:
		commit.position = &pos;
		rec.body_case = SLUICE__V1__RECORD__BODY_COMMIT;
		rec.commit = &commit;
		break;
	case FBP_SLOT_INSERT_DOCUMENT:
		insert.has_document = true;
		insert.document = d;
		rec.body_case = SLUICE__V1__RECORD__BODY_INSERT;
		rec.insert = &insert;
		break;
	case FBP_SLOT_UPDATE:
		update.has_document_key = update.has_update_description = update.has_document =
			true;
		update.document_key = update.update_description = update.document = d;
		rec.body_case = SLUICE__V1__RECORD__BODY_UPDATE;
		rec.update = &update;
		break;
	case FBP_SLOT_DELETE_KEY:
		delete_.has_document_key = true;
		delete_.document_key = d;
		rec.body_case = SLUICE__V1__RECORD__BODY_DELETE;
		rec.delete_ = &delete_;
		break;
	case FBP_SLOT_SNAPSHOT_BEGIN_TOKEN:
		snapshot_begin.origin_node = origin;
		snapshot_begin.position = &pos;
		rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN;
		rec.snapshot_begin = &snapshot_begin;
		break;
	case FBP_SLOT_SNAPSHOT_ROW:
		snapshot_row.has_document = true;
		snapshot_row.document = d;
		rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW;
		rec.snapshot_row = &snapshot_row;
		break;
	case FBP_SLOT_HEARTBEAT_TOKEN:
		heartbeat.position = &pos;
		rec.body_case = SLUICE__V1__RECORD__BODY_HEARTBEAT;
		rec.heartbeat = &heartbeat;
		break;
	default:
		ns.operation = op;
		ns.database = ns.to_database = db;
		ns.collection = ns.to_collection = coll;
		ns.has_event = true;
		ns.event = d;
		rec.body_case = SLUICE__V1__RECORD__BODY_NAMESPACE_CHANGE;
		rec.namespace_change = &ns;
		break;
	}
	fbp_print_record(&rec, true, max);
	if (max != SIZE_MAX)
		fbp_print_record(&rec, true, SIZE_MAX);
}

/* fbp_print_records decodes records (as in a frame payload) and prints each, whole and cut. */
static void
fbp_print_records(const uint8_t *data, size_t size)
{
	sluice_arena *arena = sluice_arena_create();
	sluice_arena_set_limit(arena, (size_t)64 << 20);
	size_t off = 0;
	sluice_record *rec;
	while (sluice_records_unpack(data, size, &off, arena, &rec) == SLUICE_RECORDS_OK) {
		fbp_print_record(rec, false, SIZE_MAX);
		fbp_print_record(rec, false, FBP_RECORDS_CUT);
	}
	sluice_arena_free(arena);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] == FBP_RECORDS) {
		fbp_print_records(data + 1, size - 1);
		return 0;
	}
	if (size < 2)
		return 0;
	const uint8_t *bson = data + 2;
	size_t len = size - 2;
	size_t max = data[1] == FBP_NO_CUT ? SIZE_MAX : (size_t)data[1] * 8;
	fbp_print_slot(data[0] % FBP_NSLOTS, bson, len, max);
	fbp_print_bson(bson, len, max);
	return 0;
}
