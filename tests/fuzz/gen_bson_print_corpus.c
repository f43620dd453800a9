/*
 * Writes seed inputs for fuzz_bson_print: the BSON type zoo, change events,
 * resume tokens, nesting at and past the limit and malformed documents in
 * every record field, and encoded MongoDB records. Layout: fuzz_bson_print.h.
 */
#include <bson/bson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bson_zoo.h"
#include "buf.h"
#include "fuzz_bson_print.h"
#include "print.h"
#include "records.h"

static const char *gbp_dir;
static bool gbp_ok = true;

static void
gbp_write(const char *name, const sluice_buf *b)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", gbp_dir, name);
	FILE *f = fopen(path, "wb");
	if (f == NULL || fwrite(b->data, 1, b->len, f) != b->len || fclose(f) != 0) {
		fprintf(stderr, "gen_bson_print_corpus: could not write %s\n", path);
		gbp_ok = false;
	}
}

/* gbp_field writes one input: the bytes in field slot, with a cut for print_bson. */
static void
gbp_field(const char *name, unsigned slot, uint8_t cut, const uint8_t *data, size_t len)
{
	sluice_buf b = {0};
	sluice_buf_append_byte(&b, (uint8_t)slot);
	sluice_buf_append_byte(&b, cut);
	sluice_buf_append(&b, data, len);
	char file[128];
	snprintf(file, sizeof(file), "field%u-%s", slot, name);
	gbp_write(file, &b);
	sluice_buf_free(&b);
}

static void
gbp_doc(const char *name, unsigned slot, uint8_t cut, const bson_t *doc)
{
	gbp_field(name, slot, cut, bson_get_data(doc), doc->len);
}

/* gbp_nested returns {a: {a: ... {}}}, or code-with-scope chains with scopes. */
static bson_t *
gbp_nested(int depth, bool scopes)
{
	bson_t *d = bson_new();
	for (int i = 0; i < depth; i++) {
		bson_t *outer = bson_new();
		if (scopes)
			BSON_APPEND_CODE_WITH_SCOPE(outer, "f", "x", d);
		else if (i % 2)
			BSON_APPEND_ARRAY(outer, "0", d);
		else
			BSON_APPEND_DOCUMENT(outer, "a", d);
		bson_destroy(d);
		d = outer;
	}
	return d;
}

static bson_t *
gbp_event(const char *op)
{
	bson_t *token = bson_zoo_resume_token(17);
	bson_t *zoo = bson_zoo_new();
	bson_t *e = BCON_NEW(
		"_id", BCON_DOCUMENT(token), "operationType", BCON_UTF8(op), "clusterTime",
		BCON_TIMESTAMP(1700000000, 3), "wallTime", BCON_DATE_TIME(1700000000123), "ns", "{",
		"db", "shop", "coll", "orders", "}", "documentKey", "{", "_id", BCON_INT32(1), "}",
		"updateDescription", "{", "updatedFields", "{", "a.b", BCON_INT32(1), "}",
		"removedFields", "[", "c", "]", "truncatedArrays", "[", "]", "}", "fullDocument",
		BCON_DOCUMENT(zoo), "to", "{", "db", "archive", "coll", "orders2", "}");
	bson_destroy(token);
	bson_destroy(zoo);
	return e;
}

/* gbp_records writes encoded MongoDB records, one of each kind with BSON in it. */
static void
gbp_records(void)
{
	bson_t *zoo = bson_zoo_new();
	bson_t *token = bson_zoo_resume_token(5);
	bson_t *event = gbp_event("drop");
	ProtobufCBinaryData z = {zoo->len, (uint8_t *)bson_get_data(zoo)};
	ProtobufCBinaryData t = {token->len, (uint8_t *)bson_get_data(token)};
	ProtobufCBinaryData ev = {event->len, (uint8_t *)bson_get_data(event)};
	char origin[] = "mongo1", db[] = "shop", coll[] = "orders", op[] = "drop";
	sluice_buf b = {0};
	sluice_buf_append_byte(&b, FBP_RECORDS);

	sluice_record rec = SLUICE__V1__RECORD__INIT;
	Sluice__V1__Relation rel = SLUICE__V1__RELATION__INIT;
	rel.id = 7;
	rel.schema = db;
	rel.name = coll;
	rel.has_source = true;
	rel.source = SLUICE__V1__SOURCE_KIND__SOURCE_MONGODB;
	rec.body_case = SLUICE__V1__RECORD__BODY_RELATION;
	rec.relation = &rel;
	sluice_records_pack(&rec, &b);

	Sluice__V1__Begin begin = SLUICE__V1__BEGIN__INIT;
	begin.txseq = 1;
	begin.commit_time_us = 1700000000000000;
	begin.origin_node = origin;
	begin.has_source_token = true;
	begin.source_token = t;
	rec.body_case = SLUICE__V1__RECORD__BODY_BEGIN;
	rec.begin = &begin;
	sluice_records_pack(&rec, &b);

	Sluice__V1__Insert insert = SLUICE__V1__INSERT__INIT;
	insert.relation_id = 7;
	insert.has_document = true;
	insert.document = z;
	rec.body_case = SLUICE__V1__RECORD__BODY_INSERT;
	rec.insert = &insert;
	sluice_records_pack(&rec, &b);

	Sluice__V1__Update update = SLUICE__V1__UPDATE__INIT;
	update.relation_id = 7;
	update.has_document_key = update.has_update_description = update.has_document = true;
	update.document_key = t;
	update.update_description = ev;
	update.document = z;
	rec.body_case = SLUICE__V1__RECORD__BODY_UPDATE;
	rec.update = &update;
	sluice_records_pack(&rec, &b);

	Sluice__V1__Delete delete_ = SLUICE__V1__DELETE__INIT;
	delete_.relation_id = 7;
	delete_.has_document_key = true;
	delete_.document_key = t;
	rec.body_case = SLUICE__V1__RECORD__BODY_DELETE;
	rec.delete_ = &delete_;
	sluice_records_pack(&rec, &b);

	Sluice__V1__NamespaceChange ns = SLUICE__V1__NAMESPACE_CHANGE__INIT;
	ns.operation = op;
	ns.database = db;
	ns.collection = coll;
	ns.has_event = true;
	ns.event = ev;
	rec.body_case = SLUICE__V1__RECORD__BODY_NAMESPACE_CHANGE;
	rec.namespace_change = &ns;
	sluice_records_pack(&rec, &b);

	Sluice__V1__SourcePosition pos = SLUICE__V1__SOURCE_POSITION__INIT;
	pos.has_cluster_time = true;
	pos.cluster_time = (uint64_t)1700000000 << 32 | 9;
	pos.has_resume_token = true;
	pos.resume_token = t;
	Sluice__V1__Commit commit = SLUICE__V1__COMMIT__INIT;
	commit.txseq = 1;
	commit.commit_time_us = 1700000000000000;
	commit.position = &pos;
	rec.body_case = SLUICE__V1__RECORD__BODY_COMMIT;
	rec.commit = &commit;
	sluice_records_pack(&rec, &b);

	Sluice__V1__Heartbeat heartbeat = SLUICE__V1__HEARTBEAT__INIT;
	heartbeat.time_us = 1700000000000001;
	heartbeat.position = &pos;
	rec.body_case = SLUICE__V1__RECORD__BODY_HEARTBEAT;
	rec.heartbeat = &heartbeat;
	sluice_records_pack(&rec, &b);

	Sluice__V1__SnapshotBegin sb = SLUICE__V1__SNAPSHOT_BEGIN__INIT;
	sb.txseq = 2;
	sb.time_us = 1700000000000002;
	sb.origin_node = origin;
	pos.has_resume_token = false;
	sb.position = &pos;
	rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN;
	rec.snapshot_begin = &sb;
	sluice_records_pack(&rec, &b);

	Sluice__V1__SnapshotRow row = SLUICE__V1__SNAPSHOT_ROW__INIT;
	row.relation_id = 7;
	row.has_document = true;
	row.document = z;
	rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW;
	rec.snapshot_row = &row;
	sluice_records_pack(&rec, &b);
	gbp_write("records-mongodb", &b);

	/* A relation of a source kind this reader does not know. */
	sluice_buf_reset(&b);
	sluice_buf_append_byte(&b, FBP_RECORDS);
	rel.source = (Sluice__V1__SourceKind)7;
	rec.body_case = SLUICE__V1__RECORD__BODY_RELATION;
	rec.relation = &rel;
	sluice_records_pack(&rec, &b);
	gbp_write("records-unknown-source", &b);

	sluice_buf_free(&b);
	bson_destroy(zoo);
	bson_destroy(token);
	bson_destroy(event);
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_bson_print_corpus DIR\n");
		return 2;
	}
	gbp_dir = argv[1];

	bson_t *zoo = bson_zoo_new();
	bson_t *empty = bson_new();
	bson_t *token = bson_zoo_resume_token(1);
	for (unsigned slot = 0; slot < FBP_NSLOTS; slot++) {
		gbp_doc("zoo", slot, FBP_NO_CUT, zoo);
		gbp_doc("empty", slot, FBP_NO_CUT, empty);
		gbp_doc("token", slot, 4, token);
	}
	gbp_doc("zoo-cut16", FBP_SLOT_INSERT_DOCUMENT, 2, zoo);
	gbp_doc("zoo-cut800", FBP_SLOT_INSERT_DOCUMENT, 100, zoo);
	gbp_doc("zoo-cut0", FBP_SLOT_UPDATE, 0, zoo);

	static const char *const ops[] = {"insert", "update", "replace",      "delete",
					  "drop",   "rename", "dropDatabase", "invalidate"};
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		bson_t *e = gbp_event(ops[i]);
		char name[64];
		snprintf(name, sizeof(name), "event-%s", ops[i]);
		gbp_doc(name, FBP_SLOT_NAMESPACE_EVENT, 40, e);
		bson_destroy(e);
	}

	bson_t *d = gbp_nested(PRINT_BSON_MAX_DEPTH, false);
	gbp_doc("deepest", FBP_SLOT_INSERT_DOCUMENT, FBP_NO_CUT, d);
	bson_destroy(d);
	d = gbp_nested(PRINT_BSON_MAX_DEPTH + 1, false);
	gbp_doc("too-deep", FBP_SLOT_INSERT_DOCUMENT, FBP_NO_CUT, d);
	bson_destroy(d);
	d = gbp_nested(PRINT_BSON_MAX_DEPTH, true);
	gbp_doc("deepest-scopes", FBP_SLOT_SNAPSHOT_ROW, FBP_NO_CUT, d);
	bson_destroy(d);
	d = gbp_nested(PRINT_BSON_MAX_DEPTH + 1, true);
	gbp_doc("too-deep-scopes", FBP_SLOT_SNAPSHOT_ROW, FBP_NO_CUT, d);
	bson_destroy(d);

	/* Many small elements: the cut lands inside the document. */
	d = bson_new();
	for (int i = 0; i < 400; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i);
		BSON_APPEND_UTF8(d, key, i % 3 ? "日本語" : "a\"b\\c");
	}
	gbp_doc("wide-cut", FBP_SLOT_UPDATE, 37, d);
	bson_destroy(d);

	/* Malformed documents (each rejected by a different check). */
	static const struct {
		const char *name;
		uint8_t bytes[24];
		size_t len;
	} bad[] = {
		{"short", {4, 0, 0, 0}, 4},
		{"length-mismatch", {6, 0, 0, 0, 0}, 5},
		{"no-terminator", {5, 0, 0, 0, 1}, 5},
		{"embedded-4-bytes", {12, 0, 0, 0, 0x03, 'x', 0, 4, 0, 0, 0, 0}, 12},
		{"unknown-type", {8, 0, 0, 0, 0x20, 'x', 0, 0}, 8},
		{"bytes-after-end", {7, 0, 0, 0, 0, 0x0A, 0}, 7},
		{"bad-utf8-value", {15, 0, 0, 0, 0x02, 's', 0, 3, 0, 0, 0, 0xff, 0xfe, 0, 0}, 15},
		{"overlong-nul",
		 {16, 0, 0, 0, 0x02, 's', 0, 4, 0, 0, 0, 'a', 0xc0, 0x80, 0, 0},
		 16},
		{"bad-utf8-key", {13, 0, 0, 0, 0x10, 0xc3, 0x28, 0, 1, 0, 0, 0, 0}, 13},
		{"bool-2", {9, 0, 0, 0, 0x08, 'b', 0, 2, 0}, 9},
		{"string-past-end", {14, 0, 0, 0, 0x02, 's', 0, 0x40, 0, 0, 0, 'a', 0, 0}, 14},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		gbp_field(bad[i].name, (unsigned)i % FBP_NSLOTS, FBP_NO_CUT, bad[i].bytes,
			  bad[i].len);

	gbp_records();
	bson_destroy(zoo);
	bson_destroy(empty);
	bson_destroy(token);
	return gbp_ok ? 0 : 1;
}
