/*
 * Seed corpus for fuzz_frame: writes a small stream with sluice_writer, signed
 * by the fixed test key of fuzz_common.h, and turns its segments and frames
 * into one seed file per fuzzing mode. Deterministic: the same build gives
 * the same files.
 *
 * usage: fuzz_gen_corpus OUTDIR
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "buf.h"
#include "frame.h"
#include "fuzz_common.h"
#include "keys.h"
#include "log.h"
#include "records.h"
#include "scan.h"
#include "writer.h"

#define GEN_T0           INT64_C(1700000000000000) /* commit times, µs */
#define GEN_REL_ACCOUNTS 16385
#define GEN_REL_EVENTS   16390

static const char *gen_outdir;
static size_t gen_files, gen_bytes;

static void __attribute__((noreturn)) gen_die(const char *what)
{
	fprintf(stderr, "fuzz_gen_corpus: %s\n", what);
	exit(1);
}

/* gen_write_seed writes OUTDIR/name holding the selector byte followed by data. */
static void
gen_write_seed(const char *name, uint8_t selector, const uint8_t *data, size_t len)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", gen_outdir, name) >= (int)sizeof(path))
		gen_die("path too long");
	FILE *f = fopen(path, "wb");
	if (f == NULL || fputc(selector, f) == EOF || (len > 0 && fwrite(data, 1, len, f) != len) ||
	    fclose(f) != 0)
		gen_die("could not write a seed file");
	gen_files++;
	gen_bytes += len + 1;
}

/* gen_key_file writes the test key in the format of store/keys.c and loads it back. */
static sluice_key *
gen_key_file(const char *dir)
{
	uint8_t pk[32], sk[64], id[SLUICE_FRAME_KEY_ID_SIZE];
	crypto_sign_ed25519_seed_keypair(pk, sk, fuzz_key_seed);
	sluice_keys_id(pk, id);
	char id_hex[SLUICE_KEY_ID_HEX_SIZE];
	sluice_keys_id_hex(id, id_hex);
	char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
	sodium_bin2base64(b64, sizeof(b64), fuzz_key_seed, sizeof(fuzz_key_seed),
			  sodium_base64_VARIANT_ORIGINAL);
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/test.key", dir) >= (int)sizeof(path))
		gen_die("path too long");
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || fchmod(fd, 0600) != 0)
		gen_die("could not create the key file");
	char line[256];
	int n = snprintf(line, sizeof(line), "sluice-ed25519-secret-v1 %s %s\n", id_hex, b64);
	if (write(fd, line, (size_t)n) != n || close(fd) != 0)
		gen_die("could not write the key file");
	sluice_key *key = NULL;
	if (!sluice_key_load(path, &key))
		gen_die("could not load the key file");
	unlink(path);
	if (memcmp(sluice_key_public(key), pk, sizeof(pk)) != 0)
		gen_die("loaded key differs from the seed's");
	return key;
}

/* Record construction helpers: each fills caller-owned messages and appends. */

static void
gen_append(sluice_writer *w, sluice_record *rec)
{
	if (!sluice_writer_append(w, rec))
		gen_die("sluice_writer_append failed");
}

static void
gen_relation(sluice_writer *w, uint32_t id, const char *name, const char *const *cols,
	     const uint32_t *oids, size_t ncols)
{
	Sluice__V1__Column colv[8];
	Sluice__V1__Column *colp[8];
	for (size_t i = 0; i < ncols; i++) {
		Sluice__V1__Column c = SLUICE__V1__COLUMN__INIT;
		c.name = (char *)cols[i];
		c.has_type_oid = 1;
		c.type_oid = oids[i];
		c.type_name = oids[i] == 1700 ? "numeric(10,2)" : NULL;
		c.has_key = i == 0;
		c.key = i == 0;
		colv[i] = c;
		colp[i] = &colv[i];
	}
	Sluice__V1__Relation rel = SLUICE__V1__RELATION__INIT;
	rel.id = id;
	rel.schema = "public";
	rel.name = (char *)name;
	rel.has_replica_identity = 1;
	rel.replica_identity = 'd';
	rel.n_columns = ncols;
	rel.columns = colp;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_RELATION;
	rec.relation = &rel;
	gen_append(w, &rec);
}

static void
gen_begin(sluice_writer *w, int64_t t)
{
	Sluice__V1__Begin b = SLUICE__V1__BEGIN__INIT;
	b.commit_time_us = t;
	b.has_source_lsn = 1;
	b.source_lsn = (uint64_t)t / 1000;
	b.has_source_xid = 1;
	b.source_xid = 700 + (uint64_t)(t % 1000);
	b.origin_node = "node-a";
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_BEGIN;
	rec.begin = &b;
	gen_append(w, &rec);
}

static void
gen_commit(sluice_writer *w, uint64_t end_lsn, uint32_t changes)
{
	Sluice__V1__Commit c = SLUICE__V1__COMMIT__INIT;
	c.has_end_lsn = 1;
	c.end_lsn = end_lsn;
	c.has_change_count = 1;
	c.change_count = changes;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_COMMIT;
	rec.commit = &c;
	gen_append(w, &rec);
}

/* gen_row fills row with text values (NULL for SQL NULL, "" + toast for unchanged TOAST). */
static void
gen_row(Sluice__V1__Row *row, Sluice__V1__ValueKind *kinds, ProtobufCBinaryData *vals,
	const char *const *text, size_t n, bool toast_last)
{
	Sluice__V1__Row r = SLUICE__V1__ROW__INIT;
	for (size_t i = 0; i < n; i++) {
		if (toast_last && i + 1 == n) {
			kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_UNCHANGED_TOAST;
			vals[i].data = NULL;
			vals[i].len = 0;
		} else if (text[i] == NULL) {
			kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_NULL;
			vals[i].data = NULL;
			vals[i].len = 0;
		} else {
			kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_TEXT;
			vals[i].data = (uint8_t *)text[i];
			vals[i].len = strlen(text[i]);
		}
	}
	r.n_kinds = n;
	r.kinds = kinds;
	r.n_values = n;
	r.values = vals;
	*row = r;
}

static void
gen_insert(sluice_writer *w, uint32_t rel, const char *const *text, size_t n)
{
	Sluice__V1__ValueKind kinds[4];
	ProtobufCBinaryData vals[4];
	Sluice__V1__Row row;
	gen_row(&row, kinds, vals, text, n, false);
	Sluice__V1__Insert ins = SLUICE__V1__INSERT__INIT;
	ins.relation_id = rel;
	ins.new_row = &row;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_INSERT;
	rec.insert = &ins;
	gen_append(w, &rec);
}

static void
gen_heartbeat(sluice_writer *w, int64_t t)
{
	Sluice__V1__Heartbeat hb = SLUICE__V1__HEARTBEAT__INIT;
	hb.time_us = t;
	hb.has_source_lsn = 1;
	hb.source_lsn = (uint64_t)t / 1000;
	hb.has_last_txseq = 1;
	hb.last_txseq = sluice_writer_last_txseq(w);
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_HEARTBEAT;
	rec.heartbeat = &hb;
	gen_append(w, &rec);
}

static void
gen_snapshot(sluice_writer *w, int64_t t)
{
	Sluice__V1__SnapshotBegin sb = SLUICE__V1__SNAPSHOT_BEGIN__INIT;
	sb.time_us = t;
	sb.has_consistent_lsn = 1;
	sb.consistent_lsn = 0x16B3748;
	sb.snapshot_name = "00000003-00000002-1";
	sb.origin_node = "node-a";
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN;
	rec.snapshot_begin = &sb;
	gen_append(w, &rec);
	for (int i = 0; i < 3; i++) {
		char id[16], payload[48];
		snprintf(id, sizeof(id), "%d", i + 1);
		snprintf(payload, sizeof(payload), "{\"kind\": \"snapshot\", \"n\": %d}", i);
		const char *text[2] = {id, payload};
		Sluice__V1__ValueKind kinds[2];
		ProtobufCBinaryData vals[2];
		Sluice__V1__Row row;
		gen_row(&row, kinds, vals, text, 2, false);
		Sluice__V1__SnapshotRow sr = SLUICE__V1__SNAPSHOT_ROW__INIT;
		sr.relation_id = GEN_REL_EVENTS;
		sr.row = &row;
		sluice_record r = SLUICE__V1__RECORD__INIT;
		r.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW;
		r.snapshot_row = &sr;
		gen_append(w, &r);
	}
	Sluice__V1__SnapshotEnd se = SLUICE__V1__SNAPSHOT_END__INIT;
	se.has_row_count = 1;
	se.row_count = 3;
	se.has_relation_count = 1;
	se.relation_count = 1;
	sluice_record end = SLUICE__V1__RECORD__INIT;
	end.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_END;
	end.snapshot_end = &se;
	gen_append(w, &end);
}

/* gen_changes: update, delete, truncate and a message in one transaction. */
static void
gen_changes(sluice_writer *w, int64_t t)
{
	gen_begin(w, t);

	const char *old_text[3] = {"1", NULL, NULL};
	const char *new_text[3] = {"1", "alice b.", "ignored"};
	Sluice__V1__ValueKind ok[3], nk[3];
	ProtobufCBinaryData ov[3], nv[3];
	Sluice__V1__Row old_row, new_row;
	gen_row(&old_row, ok, ov, old_text, 3, false);
	gen_row(&new_row, nk, nv, new_text, 3, true);
	Sluice__V1__Update up = SLUICE__V1__UPDATE__INIT;
	up.relation_id = GEN_REL_ACCOUNTS;
	up.has_old_kind = 1;
	up.old_kind = SLUICE__V1__OLD_KIND__OLD_KEY;
	up.old_row = &old_row;
	up.new_row = &new_row;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_UPDATE;
	rec.update = &up;
	gen_append(w, &rec);

	/* A document-style update and delete (MongoDB source). */
	static const uint8_t doc_key[] = {0x16, 0, 0, 0, 0x10, '_', 'i', 'd', 0, 7, 0, 0, 0, 0};
	static const uint8_t desc[] = {0x05, 0, 0, 0, 0};
	Sluice__V1__Update mu = SLUICE__V1__UPDATE__INIT;
	mu.relation_id = GEN_REL_EVENTS;
	mu.has_document_key = 1;
	mu.document_key.data = (uint8_t *)doc_key;
	mu.document_key.len = sizeof(doc_key);
	mu.has_update_description = 1;
	mu.update_description.data = (uint8_t *)desc;
	mu.update_description.len = sizeof(desc);
	sluice_record mrec = SLUICE__V1__RECORD__INIT;
	mrec.body_case = SLUICE__V1__RECORD__BODY_UPDATE;
	mrec.update = &mu;
	gen_append(w, &mrec);

	Sluice__V1__Delete del = SLUICE__V1__DELETE__INIT;
	del.relation_id = GEN_REL_ACCOUNTS;
	del.has_old_kind = 1;
	del.old_kind = SLUICE__V1__OLD_KIND__OLD_KEY;
	del.old_row = &old_row;
	sluice_record drec = SLUICE__V1__RECORD__INIT;
	drec.body_case = SLUICE__V1__RECORD__BODY_DELETE;
	drec.delete_ = &del;
	gen_append(w, &drec);

	uint32_t rels[2] = {GEN_REL_ACCOUNTS, GEN_REL_EVENTS};
	Sluice__V1__Truncate tr = SLUICE__V1__TRUNCATE__INIT;
	tr.n_relation_ids = 2;
	tr.relation_ids = rels;
	tr.has_cascade = 1;
	tr.cascade = 1;
	sluice_record trec = SLUICE__V1__RECORD__INIT;
	trec.body_case = SLUICE__V1__RECORD__BODY_TRUNCATE;
	trec.truncate = &tr;
	gen_append(w, &trec);

	Sluice__V1__LogicalMessage msg = SLUICE__V1__LOGICAL_MESSAGE__INIT;
	msg.has_transactional = 1;
	msg.transactional = 1;
	msg.prefix = "app";
	msg.has_content = 1;
	msg.content.data = (uint8_t *)"hello";
	msg.content.len = 5;
	msg.has_lsn = 1;
	msg.lsn = 0x16B4000;
	sluice_record mgrec = SLUICE__V1__RECORD__INIT;
	mgrec.body_case = SLUICE__V1__RECORD__BODY_MESSAGE;
	mgrec.message = &msg;
	gen_append(w, &mgrec);

	gen_commit(w, 0x16B4100, 5);
}

/* gen_stream writes the whole test stream into store. */
static void
gen_stream(sluice_store *store, const sluice_key *key)
{
	sluice_writer_options opt = sluice_writer_default_options();
	opt.frame_target = 400;
	opt.segment_target = 2500;
	opt.zstd_level = 1;
	sluice_writer *w = NULL;
	if (!sluice_writer_open(store, FUZZ_STREAM, key, &opt, &w, NULL))
		gen_die("sluice_writer_open failed");

	static const char *const acols[3] = {"id", "name", "balance"};
	static const uint32_t aoids[3] = {20, 25, 1700};
	static const char *const ecols[2] = {"id", "payload"};
	static const uint32_t eoids[2] = {20, 3802};
	gen_relation(w, GEN_REL_ACCOUNTS, "accounts", acols, aoids, 3);
	gen_relation(w, GEN_REL_EVENTS, "events", ecols, eoids, 2);

	int64_t t = GEN_T0;
	gen_heartbeat(w, t);

	gen_begin(w, t += 1000);
	const char *r1[3] = {"1", "alice", "10.00"};
	const char *r2[3] = {"2", "bob", NULL};
	gen_insert(w, GEN_REL_ACCOUNTS, r1, 3);
	gen_insert(w, GEN_REL_ACCOUNTS, r2, 3);
	gen_commit(w, 0x16B3000, 2);

	gen_snapshot(w, t += 1000);
	gen_changes(w, t += 1000);

	/* A transaction larger than a frame: OPEN and CONT frames. */
	gen_begin(w, t += 1000);
	for (int i = 0; i < 24; i++) {
		char id[16], payload[64];
		snprintf(id, sizeof(id), "%d", 100 + i);
		snprintf(payload, sizeof(payload), "{\"event\": %d, \"pad\": \"%.*s\"}", i, i,
			 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		const char *text[2] = {id, payload};
		gen_insert(w, GEN_REL_EVENTS, text, 2);
	}
	gen_commit(w, 0x16B5000, 24);
	if (!sluice_writer_flush(w))
		gen_die("sluice_writer_flush failed");
	gen_heartbeat(w, t += 1000);

	/* Small transactions until the segment is sealed, and some more after. */
	for (int i = 0; i < 12; i++) {
		gen_begin(w, t += 1000);
		char id[16], name[32];
		snprintf(id, sizeof(id), "%d", 10 + i);
		snprintf(name, sizeof(name), "user-%d", i);
		const char *text[3] = {id, name, "0.50"};
		gen_insert(w, GEN_REL_ACCOUNTS, text, 3);
		gen_commit(w, 0x16B6000 + (uint64_t)i * 0x100, 1);
		if (i == 7 && !sluice_writer_seal(w))
			gen_die("sluice_writer_seal failed");
	}

	/* An unfinished transaction at the end of the stream. */
	gen_begin(w, t += 1000);
	const char *r3[3] = {"99", "carol", "1.00"};
	gen_insert(w, GEN_REL_ACCOUNTS, r3, 3);
	if (!sluice_writer_close(w))
		gen_die("sluice_writer_close failed");
}

/* gen_read_segment reads a whole segment into out. */
static void
gen_read_segment(sluice_store *store, uint64_t first, sluice_buf *out)
{
	sluice_segment *seg = NULL;
	uint64_t size = 0;
	if (!sluice_store_segment_open(store, FUZZ_STREAM, first, false, false, &seg) ||
	    !sluice_segment_size(seg, &size))
		gen_die("could not open a segment");
	sluice_buf_reset(out);
	sluice_buf_reserve(out, (size_t)size);
	size_t got = 0;
	if (!sluice_segment_read(seg, 0, out->data, (size_t)size, &got) || got != size)
		gen_die("could not read a segment");
	out->len = got;
	sluice_segment_close(seg);
}

static void
gen_put24(sluice_buf *b, uint32_t v)
{
	for (int i = 0; i < 3; i++)
		sluice_buf_append_byte(b, (uint8_t)(v >> (8 * i)));
}

/* gen_segment_seeds turns segment number idx (bytes) into seeds for every mode. */
static void
gen_segment_seeds(sluice_store *store, uint64_t first, size_t idx, const sluice_buf *bytes,
		  const sluice_trust *trust, sluice_frame_codec *codec)
{
	char name[64];
	snprintf(name, sizeof(name), "segment-%zu", idx);
	gen_write_seed(name, FUZZ_SELECTOR(FUZZ_MODE_SEGMENT, idx == 0 ? FUZZ_OPT_ANCHORED : 0),
		       bytes->data, bytes->len);

	sluice_segment *seg = NULL;
	if (!sluice_store_segment_open(store, FUZZ_STREAM, first, false, false, &seg))
		gen_die("could not open a segment");
	sluice_scan *scan = sluice_scan_create(seg, first, trust);
	sluice_buf frames = {0}, raw = {0}, one = {0};
	size_t k = 0;
	sluice_scan_frame f;
	sluice_scan_status st;
	while ((st = sluice_scan_next(scan, NULL, &f)) == SLUICE_SCAN_FRAME) {
		if (sluice_frame_decompress(codec, &f.hdr, f.payload, &raw) != SLUICE_FRAME_OK ||
		    raw.len > 0xFFFF)
			gen_die("could not decompress a frame of the test stream");
		uint64_t dtx = f.hdr.txseq_end - f.hdr.txseq_start;
		if (k < FUZZ_MAX_FRAMES) {
			sluice_buf_append_byte(&frames, (uint8_t)(f.hdr.flags & 0x0F));
			sluice_buf_append_byte(&frames, (uint8_t)(dtx > 255 ? 255 : dtx));
			sluice_buf_append_byte(&frames, (uint8_t)raw.len);
			sluice_buf_append_byte(&frames, (uint8_t)(raw.len >> 8));
			sluice_buf_append(&frames, raw.data, raw.len);
		}
		/* Compressed payloads of the first frames of the first segment. */
		if (idx == 0 && k < 4) {
			sluice_buf_reset(&one);
			gen_put24(&one, f.hdr.raw_len);
			sluice_buf_append(&one, f.payload, f.hdr.payload_len);
			snprintf(name, sizeof(name), "zstd-%zu-%zu", idx, k);
			gen_write_seed(name,
				       FUZZ_SELECTOR(FUZZ_MODE_ZSTD,
						     FUZZ_OPT_CONTENT_SIZE | FUZZ_OPT_RECORDS),
				       one.data, one.len);

			sluice_buf_reset(&one);
			sluice_buf_append_byte(&one, (uint8_t)(f.hdr.flags & 0x0F));
			sluice_buf_append_byte(&one, (uint8_t)f.hdr.record_count);
			sluice_buf_append_byte(&one, (uint8_t)(dtx > 255 ? 255 : dtx));
			gen_put24(&one, f.hdr.raw_len);
			sluice_buf_append(&one, f.payload, f.hdr.payload_len);
			snprintf(name, sizeof(name), "signed-%zu-%zu", idx, k);
			gen_write_seed(name, FUZZ_SELECTOR(FUZZ_MODE_SIGNED, 0), one.data, one.len);
			snprintf(name, sizeof(name), "signed-%zu-%zu-cut", idx, k);
			gen_write_seed(name, FUZZ_SELECTOR(FUZZ_MODE_SIGNED, FUZZ_OPT_CUT),
				       one.data, one.len);
		}
		k++;
	}
	if (st != SLUICE_SCAN_END)
		gen_die("the test stream does not scan cleanly");
	snprintf(name, sizeof(name), "frames-%zu", idx);
	gen_write_seed(name, FUZZ_SELECTOR(FUZZ_MODE_FRAMES, 0), frames.data, frames.len);
	snprintf(name, sizeof(name), "frames-%zu-cut", idx);
	gen_write_seed(name, FUZZ_SELECTOR(FUZZ_MODE_FRAMES, FUZZ_OPT_TRUNCATE), frames.data,
		       frames.len);

	/* Damaged copies of the first segment: a torn tail and a zero-filled tail. */
	if (idx == 0) {
		size_t cut = SLUICE_FRAME_HEADER_SIZE + (bytes->len - SLUICE_FRAME_HEADER_SIZE) / 2;
		gen_write_seed("segment-0-torn",
			       FUZZ_SELECTOR(FUZZ_MODE_SEGMENT, FUZZ_OPT_ANCHORED), bytes->data,
			       cut);
		sluice_buf_reset(&one);
		sluice_buf_append(&one, bytes->data, bytes->len);
		uint8_t zeros[300] = {0};
		sluice_buf_append(&one, zeros, sizeof(zeros));
		gen_write_seed("segment-0-zeros",
			       FUZZ_SELECTOR(FUZZ_MODE_SEGMENT, FUZZ_OPT_ANCHORED), one.data,
			       one.len);
	}
	sluice_buf_free(&frames);
	sluice_buf_free(&raw);
	sluice_buf_free(&one);
	sluice_scan_free(scan);
	sluice_segment_close(seg);
}

/*
 * gen_negative_enum_seed: one frame holding an insert whose row has a value
 * kind of -1, as protobuf-c packs it (a sign-extended 10-byte varint). The
 * one-pass encoder once packed it as a 5-byte varint instead.
 */
static void
gen_negative_enum_seed(void)
{
	Sluice__V1__ValueKind kinds[1] = {(Sluice__V1__ValueKind)-1};
	ProtobufCBinaryData vals[1] = {{0, NULL}};
	Sluice__V1__Row row = SLUICE__V1__ROW__INIT;
	row.n_kinds = 1;
	row.kinds = kinds;
	row.n_values = 1;
	row.values = vals;
	Sluice__V1__Insert ins = SLUICE__V1__INSERT__INIT;
	ins.relation_id = GEN_REL_ACCOUNTS;
	ins.new_row = &row;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_INSERT;
	rec.insert = &ins;
	sluice_buf raw = {0}, in = {0};
	sluice_records_pack_generic(&rec, &raw);
	sluice_buf_append_byte(&in, SLUICE_FRAME_FIRST);
	sluice_buf_append_byte(&in, 0);
	sluice_buf_append_byte(&in, (uint8_t)raw.len);
	sluice_buf_append_byte(&in, (uint8_t)(raw.len >> 8));
	sluice_buf_append(&in, raw.data, raw.len);
	gen_write_seed("records-negative-enum", FUZZ_SELECTOR(FUZZ_MODE_FRAMES, 0), in.data,
		       in.len);
	sluice_buf_free(&raw);
	sluice_buf_free(&in);
}

/* gen_handover_raw packs a KeyHandover naming pk as a frame payload into out. */
static void
gen_handover_raw(const uint8_t pk[32], sluice_buf *out)
{
	Sluice__V1__KeyHandover ho = SLUICE__V1__KEY_HANDOVER__INIT;
	ho.next_public_key.data = (uint8_t *)pk;
	ho.next_public_key.len = 32;
	ho.reason = "fuzz seed";
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_KEY_HANDOVER;
	rec.key_handover = &ho;
	sluice_records_pack(&rec, out);
}

/* gen_frame_input appends one frame of a FUZZ_MODE_FRAMES input. */
static void
gen_frame_input(sluice_buf *in, uint8_t ctl, const sluice_buf *raw)
{
	sluice_buf_append_byte(in, ctl);
	sluice_buf_append_byte(in, 0);
	sluice_buf_append_byte(in, (uint8_t)raw->len);
	sluice_buf_append_byte(in, (uint8_t)(raw->len >> 8));
	sluice_buf_append(in, raw->data, raw->len);
}

/*
 * gen_handover_seeds: key handovers for FUZZ_MODE_FRAMES: to the successor
 * key (the frames after it are signed by it), to a key the target has no
 * secret for (the frames stop), and one not alone in its frame (refused).
 */
static void
gen_handover_seeds(void)
{
	uint8_t pk2[32], sk2[64], other[32];
	crypto_sign_ed25519_seed_keypair(pk2, sk2, fuzz_key2_seed);
	memset(other, 0x5a, sizeof(other));
	sluice_buf ho = {0}, hb = {0}, in = {0};
	Sluice__V1__Heartbeat h = SLUICE__V1__HEARTBEAT__INIT;
	h.time_us = 1000;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_HEARTBEAT;
	rec.heartbeat = &h;
	sluice_records_pack(&rec, &hb);

	gen_handover_raw(pk2, &ho);
	gen_frame_input(&in, SLUICE_FRAME_FIRST, &hb);
	gen_frame_input(&in, 0, &ho);
	gen_frame_input(&in, 0, &hb);
	gen_frame_input(&in, SLUICE_FRAME_SEAL, &(sluice_buf){0});
	gen_write_seed("frames-handover", FUZZ_SELECTOR(FUZZ_MODE_FRAMES, 0), in.data, in.len);
	gen_write_seed("frames-handover-cut", FUZZ_SELECTOR(FUZZ_MODE_FRAMES, FUZZ_OPT_TRUNCATE),
		       in.data, in.len);

	sluice_buf_reset(&in);
	sluice_buf_reset(&ho);
	gen_handover_raw(other, &ho);
	gen_frame_input(&in, SLUICE_FRAME_FIRST, &ho);
	gen_frame_input(&in, 0, &hb);
	gen_write_seed("frames-handover-unknown", FUZZ_SELECTOR(FUZZ_MODE_FRAMES, 0), in.data,
		       in.len);

	sluice_buf_reset(&in);
	sluice_buf_append(&hb, ho.data, ho.len);
	gen_frame_input(&in, SLUICE_FRAME_FIRST, &hb);
	gen_write_seed("frames-handover-not-alone", FUZZ_SELECTOR(FUZZ_MODE_FRAMES, 0), in.data,
		       in.len);
	sluice_buf_free(&ho);
	sluice_buf_free(&hb);
	sluice_buf_free(&in);
}

int
main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
		return 2;
	}
	gen_outdir = argv[1];
	if (mkdir(gen_outdir, 0755) != 0 && errno != EEXIST)
		gen_die("could not create the output directory");
	if (sodium_init() < 0)
		gen_die("sodium_init failed");
	sluice_log_setup(SLUICE_LOG_WARN, SLUICE_LOG_TEXT);

	const char *tmp = getenv("TMPDIR");
	char work[PATH_MAX];
	snprintf(work, sizeof(work), "%s/sluice-gen-corpus-XXXXXX",
		 tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(work) == NULL)
		gen_die("mkdtemp failed");
	sluice_key *key = gen_key_file(work);
	char store_dir[PATH_MAX];
	if (snprintf(store_dir, sizeof(store_dir), "%s/store", work) >= (int)sizeof(store_dir))
		gen_die("path too long");
	sluice_store *store = NULL;
	if (!sluice_store_open(store_dir, &store))
		gen_die("could not open the store");

	gen_stream(store, key);

	sluice_trust *trust = sluice_trust_create();
	sluice_trust_add(trust, sluice_key_public(key));
	sluice_frame_codec *codec = sluice_frame_codec_create(1);
	if (codec == NULL)
		gen_die("could not create zstd contexts");
	uint64_t *firsts = NULL;
	size_t n = 0;
	if (!sluice_store_list(store, FUZZ_STREAM, &firsts, &n, NULL) || n < 2)
		gen_die("the test stream should span several segments");
	sluice_buf bytes = {0};
	for (size_t i = 0; i < n; i++) {
		gen_read_segment(store, firsts[i], &bytes);
		gen_segment_seeds(store, firsts[i], i, &bytes, trust, codec);
	}

	/* A few hand-made inputs: an empty frame and a seal, and an empty segment. */
	static const uint8_t seal_frames[] = {
		SLUICE_FRAME_FIRST, 0, 0, 0, SLUICE_FRAME_SEAL, 0, 0, 0,
	};
	gen_write_seed("frames-seal", FUZZ_SELECTOR(FUZZ_MODE_FRAMES, 0), seal_frames,
		       sizeof(seal_frames));
	gen_write_seed("segment-empty", FUZZ_SELECTOR(FUZZ_MODE_SEGMENT, FUZZ_OPT_ANCHORED), NULL,
		       0);
	gen_negative_enum_seed();
	gen_handover_seeds();
	/* A record of unknown fields only, one with an overlong tag of field number 0. */
	static const uint8_t field0[] = {
		SLUICE_FRAME_FIRST, 0, 7, 0, 0x06, 0xe8, 0x00, 0x00, 0x80, 0x00, 0x00,
	};
	gen_write_seed("records-unknown-field-0", FUZZ_SELECTOR(FUZZ_MODE_FRAMES, 0), field0,
		       sizeof(field0));

	/* Clean up the temporary store. */
	for (size_t i = 0; i < n; i++) {
		char name[SLUICE_SEGMENT_NAME_SIZE], path[PATH_MAX];
		sluice_store_segment_name(firsts[i], name);
		if (snprintf(path, sizeof(path), "%s/%s/%s", store_dir, FUZZ_STREAM, name) <
		    (int)sizeof(path))
			unlink(path);
	}
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", store_dir, FUZZ_STREAM) >= (int)sizeof(path) ||
	    rmdir(path) != 0 || rmdir(store_dir) != 0 || rmdir(work) != 0)
		fprintf(stderr, "fuzz_gen_corpus: could not remove %s\n", work);

	sluice_buf_free(&bytes);
	free(firsts);
	sluice_frame_codec_free(codec);
	sluice_trust_free(trust);
	sluice_store_close(store);
	sluice_key_free(key);
	printf("fuzz_gen_corpus: %zu segments, %zu seed files, %zu bytes in %s\n", n, gen_files,
	       gen_bytes, gen_outdir);
	return 0;
}
