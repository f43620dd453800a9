/* Writer -> reader round trips: records come back identical, txseq dense, segments whole. */
#include "testutil.h"

#include <dirent.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scan.h"

/* ---- the expected stream ---- */

/* One record as appended (packed after the writer filled in txseq and times). */
typedef struct exp_entry {
	sluice_buf packed;
	bool is_def; /* a Relation: not expected in place, emitted before its first use */
	uint32_t rel_id;
} exp_entry;

typedef struct expect {
	exp_entry *v;
	size_t n, cap;
} expect;

static void
expect_push(expect *e, const sluice_record *rec)
{
	if (e->n == e->cap) {
		e->cap = e->cap ? 2 * e->cap : 256;
		e->v = realloc(e->v, e->cap * sizeof(*e->v));
		assert_non_null(e->v);
	}
	exp_entry *x = &e->v[e->n++];
	memset(x, 0, sizeof(*x));
	tu_pack(&rec->base, &x->packed);
	if (rec->body_case == SLUICE__V1__RECORD__BODY_RELATION) {
		x->is_def = true;
		x->rel_id = rec->relation->id;
	}
}

static void
expect_free(expect *e)
{
	for (size_t i = 0; i < e->n; i++)
		sluice_buf_free(&e->v[i].packed);
	free(e->v);
	memset(e, 0, sizeof(*e));
}

/* ---- generating transactions ---- */

#define REL_ORDERS 16390u

typedef struct gen {
	sluice_writer *w;
	sluice_arena *a;
	expect *e;
	int64_t time;
	uint64_t lsn;
	uint64_t rng;
	uint64_t ntx;       /* txseq of the last Begin/SnapshotBegin */
	int64_t begin_time; /* commit time of the open transaction */
	uint32_t changes;
	int orders_version;
} gen;

/* put appends rec, checks what the writer filled in, and records the expectation. */
static void
put(gen *g, sluice_record *rec)
{
	tu_append(g->w, rec);
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_BEGIN:
		g->ntx++;
		assert_int_equal(rec->begin->txseq, g->ntx);
		g->begin_time = rec->begin->commit_time_us;
		g->changes = 0;
		assert_true(sluice_writer_in_transaction(g->w));
		break;
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN:
		g->ntx++;
		assert_int_equal(rec->snapshot_begin->txseq, g->ntx);
		g->changes = 0;
		break;
	case SLUICE__V1__RECORD__BODY_COMMIT:
		assert_int_equal(rec->commit->txseq, g->ntx);
		assert_true(rec->commit->commit_time_us == g->begin_time);
		assert_int_equal(sluice_writer_last_txseq(g->w), g->ntx);
		assert_false(sluice_writer_in_transaction(g->w));
		break;
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_END:
		assert_int_equal(rec->snapshot_end->txseq, g->ntx);
		assert_int_equal(sluice_writer_last_txseq(g->w), g->ntx);
		break;
	default:
		g->changes++;
		break;
	}
	expect_push(g->e, rec);
}

static int64_t
next_time(gen *g)
{
	g->time += 1000 + (int64_t)(tu_rand(&g->rng) % 5000);
	return g->time;
}

static sluice_record *
begin_rec(gen *g)
{
	int64_t t = next_time(g);
	g->lsn += 0x100;
	sluice_record *b = tu_begin(g->a, t, g->lsn, "node-\xc3\xa5");
	b->begin->has_source_xid = true;
	b->begin->source_xid = 700 + g->ntx;
	return b;
}

static sluice_record *
commit_rec(gen *g)
{
	g->lsn += 0x28;
	sluice_record *c = tu_commit(g->a, g->lsn, g->changes);
	c->commit->commit_time_us = 12345; /* the writer replaces it with the begin's */
	return c;
}

static sluice_record *
orders_relation(gen *g)
{
	static const char *const v1[] = {"order_id:20", "customer:25", "note:25", "payload:17"};
	static const char *const v2[] = {"order_id:20", "customer:25", "note:25", "payload:17",
					 "shipped_at:1184"};
	sluice_record *r =
		g->orders_version == 1
			? tu_relation(g->a, REL_ORDERS, "sales", "orders \xe2\x9c\x93", 4, v1)
			: tu_relation(g->a, REL_ORDERS, "sales", "orders \xe2\x9c\x93", 5, v2);
	r->relation->columns[2]->type_name = tu_strdup(g->a, "character varying(40)");
	r->relation->columns[2]->type_modifier = 44;
	return r;
}

/* A row with NULL, unchanged TOAST, non-ASCII text and binary with embedded zeros. */
static Sluice__V1__Row *
odd_row(gen *g, uint64_t id, bool toast)
{
	static const uint8_t zeros[] = {0, 1, 0, 0, 'x', 0, 0xff, 0};
	char idtext[32];
	snprintf(idtext, sizeof(idtext), "%" PRIu64, id);
	Sluice__V1__ValueKind kinds[5] = {
		SLUICE__V1__VALUE_KIND__VALUE_TEXT,
		SLUICE__V1__VALUE_KIND__VALUE_TEXT,
		SLUICE__V1__VALUE_KIND__VALUE_NULL,
		toast ? SLUICE__V1__VALUE_KIND__VALUE_UNCHANGED_TOAST
		      : SLUICE__V1__VALUE_KIND__VALUE_BINARY,
		SLUICE__V1__VALUE_KIND__VALUE_TEXT,
	};
	ProtobufCBinaryData vals[5];
	vals[0] = tu_text(g->a, idtext);
	vals[1] = tu_text(g->a,
			  "J\xc3\xbcrgen \xe5\xbc\xa0\xe4\xbc\x9f \xf0\x9f\x9a\x80 \"q\" \\ \n");
	vals[2] = tu_bin(g->a, "", 0);
	vals[3] = toast ? tu_bin(g->a, "", 0) : tu_bin(g->a, zeros, sizeof(zeros));
	vals[4] = tu_text(g->a, "2024-02-29 23:59:59.999999+00");
	return tu_row(g->a, g->orders_version == 1 ? 4 : 5, kinds, vals);
}

static void
txn_empty(gen *g)
{
	put(g, begin_rec(g));
	put(g, commit_rec(g));
}

static void
txn_tiny(gen *g)
{
	put(g, begin_rec(g));
	put(g, tu_std_insert(g->a, g->rng, g->ntx * 1000, 8));
	put(g, commit_rec(g));
}

/* txn_bulk: nrows inserts of incompressible blobs; spans frames when large. */
static void
txn_bulk(gen *g, size_t nrows, size_t blob)
{
	put(g, begin_rec(g));
	for (size_t i = 0; i < nrows; i++)
		put(g, tu_std_insert(g->a, g->rng, g->ntx * 1000 + i, blob));
	put(g, commit_rec(g));
}

static void
txn_mixed(gen *g)
{
	static const uint8_t token[] = {0x16, 0, 0, 0, 0x02, 'k', 0, 0x05, 0, 0, 0, 'v', 0, 0};
	sluice_record *b = begin_rec(g);
	b->begin->has_source_token = true;
	b->begin->source_token = tu_bin(g->a, token, sizeof(token));
	b->begin->has_origin_lsn = true;
	b->begin->origin_lsn = 0xABCDEF;
	put(g, b);
	/* pgoutput sends the relation inside the transaction, before its first use. */
	put(g, orders_relation(g));

	uint64_t id = g->ntx * 1000;
	put(g, tu_insert(g->a, REL_ORDERS, odd_row(g, id, false)));

	sluice_record *u = tu_rec(g->a);
	u->body_case = SLUICE__V1__RECORD__BODY_UPDATE;
	u->update = sluice_arena_alloc(g->a, sizeof(*u->update));
	sluice__v1__update__init(u->update);
	u->update->relation_id = REL_ORDERS;
	u->update->has_old_kind = true;
	u->update->old_kind = SLUICE__V1__OLD_KIND__OLD_KEY;
	u->update->old_row = odd_row(g, id, false);
	u->update->new_row = odd_row(g, id + 1, true);
	put(g, u);

	sluice_record *u2 = tu_rec(g->a);
	u2->body_case = SLUICE__V1__RECORD__BODY_UPDATE;
	u2->update = sluice_arena_alloc(g->a, sizeof(*u2->update));
	sluice__v1__update__init(u2->update);
	u2->update->relation_id = TU_REL_ID;
	u2->update->has_document_key = true;
	u2->update->document_key = tu_bin(g->a, token, sizeof(token));
	u2->update->has_update_description = true;
	u2->update->update_description = tu_bin(g->a, "\0\0\0\0", 4);
	put(g, u2);

	sluice_record *m = tu_rec(g->a);
	m->body_case = SLUICE__V1__RECORD__BODY_MESSAGE;
	m->message = sluice_arena_alloc(g->a, sizeof(*m->message));
	sluice__v1__logical_message__init(m->message);
	m->message->has_transactional = true;
	m->message->transactional = true;
	m->message->prefix = tu_strdup(g->a, "app/audit");
	m->message->has_content = true;
	m->message->content = tu_bin(g->a, "a\0b\0c", 5);
	put(g, m);

	sluice_record *d = tu_rec(g->a);
	d->body_case = SLUICE__V1__RECORD__BODY_DELETE;
	d->delete_ = sluice_arena_alloc(g->a, sizeof(*d->delete_));
	sluice__v1__delete__init(d->delete_);
	d->delete_->relation_id = REL_ORDERS;
	d->delete_->has_old_kind = true;
	d->delete_->old_kind = SLUICE__V1__OLD_KIND__OLD_FULL;
	d->delete_->old_row = odd_row(g, id + 2, false);
	put(g, d);

	sluice_record *ins = tu_std_insert(g->a, g->rng, id + 3, 100);
	ins->insert->has_document = true;
	ins->insert->document = tu_bin(g->a, token, sizeof(token));
	put(g, ins);

	sluice_record *t = tu_rec(g->a);
	t->body_case = SLUICE__V1__RECORD__BODY_TRUNCATE;
	t->truncate = sluice_arena_alloc(g->a, sizeof(*t->truncate));
	sluice__v1__truncate__init(t->truncate);
	t->truncate->n_relation_ids = 2;
	t->truncate->relation_ids = sluice_arena_alloc(g->a, 2 * sizeof(uint32_t));
	t->truncate->relation_ids[0] = TU_REL_ID;
	t->truncate->relation_ids[1] = REL_ORDERS;
	t->truncate->has_cascade = true;
	t->truncate->cascade = true;
	t->truncate->has_restart_identity = true;
	t->truncate->restart_identity = false;
	put(g, t);
	put(g, commit_rec(g));
}

static void
txn_snapshot(gen *g, size_t nrows)
{
	sluice_record *sb = tu_rec(g->a);
	sb->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN;
	sb->snapshot_begin = sluice_arena_alloc(g->a, sizeof(*sb->snapshot_begin));
	sluice__v1__snapshot_begin__init(sb->snapshot_begin);
	sb->snapshot_begin->time_us = next_time(g);
	sb->snapshot_begin->has_consistent_lsn = true;
	sb->snapshot_begin->consistent_lsn = g->lsn;
	sb->snapshot_begin->snapshot_name = tu_strdup(g->a, "00000003-00000002-1");
	sb->snapshot_begin->origin_node = tu_strdup(g->a, "node-a");
	put(g, sb);
	put(g, orders_relation(g));
	for (size_t i = 0; i < nrows; i++) {
		sluice_record *r = tu_rec(g->a);
		r->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW;
		r->snapshot_row = sluice_arena_alloc(g->a, sizeof(*r->snapshot_row));
		sluice__v1__snapshot_row__init(r->snapshot_row);
		if (i % 2 == 0) {
			r->snapshot_row->relation_id = REL_ORDERS;
			r->snapshot_row->row = odd_row(g, i, false);
		} else {
			sluice_record *ins = tu_std_insert(g->a, g->rng, 900000 + i, 300);
			r->snapshot_row->relation_id = TU_REL_ID;
			r->snapshot_row->row = ins->insert->new_row;
		}
		put(g, r);
	}
	sluice_record *se = tu_rec(g->a);
	se->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_END;
	se->snapshot_end = sluice_arena_alloc(g->a, sizeof(*se->snapshot_end));
	sluice__v1__snapshot_end__init(se->snapshot_end);
	se->snapshot_end->has_row_count = true;
	se->snapshot_end->row_count = nrows;
	se->snapshot_end->has_relation_count = true;
	se->snapshot_end->relation_count = 2;
	put(g, se);
}

static void
heartbeat(gen *g)
{
	sluice_record *h = tu_heartbeat(g->a, next_time(g), g->lsn);
	h->heartbeat->has_last_txseq = true;
	h->heartbeat->last_txseq = g->ntx;
	put(g, h);
}

static void
message_outside(gen *g)
{
	sluice_record *m = tu_rec(g->a);
	m->body_case = SLUICE__V1__RECORD__BODY_MESSAGE;
	m->message = sluice_arena_alloc(g->a, sizeof(*m->message));
	sluice__v1__logical_message__init(m->message);
	m->message->has_transactional = true;
	m->message->transactional = false;
	m->message->prefix = tu_strdup(g->a, "ddl");
	m->message->has_content = true;
	m->message->content = tu_bin(g->a, "\0ALTER\0", 7);
	put(g, m);
}

/* ---- checking a stream against the expectation ---- */

typedef struct check_result {
	uint64_t records; /* all records read, relations included */
	uint64_t transactions;
	uint64_t segments_seen;
	uint64_t max_frames_per_txn;
} check_result;

static bool
rel_in(const uint32_t *ids, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/*
 * check_stream reads the whole stream and compares it with e: every non-Relation
 * record byte-identical and in order; each Relation record equal to the latest
 * definition appended before it and present in every segment before the first
 * change that needs it; txseq dense; every segment's first transaction equal
 * to its name.
 */
static void
check_stream(tu_env *env, const expect *e, check_result *res)
{
	memset(res, 0, sizeof(*res));
	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(env->store, TU_STREAM, env->trust, 1, &r));
	size_t idx = 0;
	/* latest definitions */
	uint32_t def_ids[16];
	const sluice_buf *def_val[16];
	size_t ndefs = 0;
	/* relations emitted in the current segment */
	uint32_t seg_rels[16];
	size_t nseg_rels = 0;
	uint64_t cur_seg = 0;
	bool seg_begin_seen = false;
	uint64_t open = 0, last_txseq = 0;
	uint64_t txn_frames = 0, last_frame_seq = UINT64_MAX;
	sluice_buf packed = {0};

	for (;;) {
		const sluice_record *rec = NULL;
		sluice_reader_status s = sluice_reader_next(r, &rec);
		if (s == SLUICE_READER_ERROR)
			fail_msg("reader error: %s", sluice_reader_error(r));
		if (s == SLUICE_READER_WAIT)
			break;
		if (s != SLUICE_READER_RECORD)
			fail_msg("unexpected reader status %d", (int)s);
		res->records++;
		const sluice_reader_position *pos = sluice_reader_position_get(r);
		if (pos->segment_first != cur_seg) {
			assert_true(pos->segment_first > cur_seg);
			cur_seg = pos->segment_first;
			nseg_rels = 0;
			seg_begin_seen = false;
			res->segments_seen++;
			/* A segment starts between transactions. */
			assert_int_equal(open, 0);
		}
		if (open != 0 && pos->frame_seq != last_frame_seq) {
			txn_frames++;
			if (txn_frames > res->max_frames_per_txn)
				res->max_frames_per_txn = txn_frames;
		}
		last_frame_seq = pos->frame_seq;

		while (idx < e->n && e->v[idx].is_def) {
			size_t k;
			for (k = 0; k < ndefs; k++)
				if (def_ids[k] == e->v[idx].rel_id)
					break;
			if (k == ndefs) {
				assert_true(ndefs < 16);
				def_ids[ndefs++] = e->v[idx].rel_id;
			}
			def_val[k] = &e->v[idx].packed;
			idx++;
		}
		tu_pack(&rec->base, &packed);

		if (rec->body_case == SLUICE__V1__RECORD__BODY_RELATION) {
			size_t k;
			for (k = 0; k < ndefs; k++)
				if (def_ids[k] == rec->relation->id)
					break;
			assert_true(k < ndefs);
			assert_int_equal(packed.len, def_val[k]->len);
			assert_memory_equal(packed.data, def_val[k]->data, packed.len);
			if (!rel_in(seg_rels, nseg_rels, rec->relation->id))
				seg_rels[nseg_rels++] = rec->relation->id;
			continue;
		}

		if (idx >= e->n)
			fail_msg("reader returned an unexpected extra %s record",
				 sluice_records_type_name(rec));
		if (packed.len != e->v[idx].packed.len ||
		    memcmp(packed.data, e->v[idx].packed.data, packed.len) != 0) {
			sluice_record *want = sluice__v1__record__unpack(NULL, e->v[idx].packed.len,
									 e->v[idx].packed.data);
			char wname[32];
			snprintf(wname, sizeof(wname), "%s",
				 want ? sluice_records_type_name(want) : "?");
			if (want)
				sluice__v1__record__free_unpacked(want, NULL);
			fail_msg("record %zu: reader returned %s (txseq %" PRIu64
				 "), but %s was written there",
				 idx, sluice_records_type_name(rec), pos->txseq, wname);
		}
		idx++;

		/* Relations of changes must be known from this segment alone. */
		uint32_t relid;
		if (sluice_records_relation_id(rec, &relid)) {
			assert_true(rel_in(seg_rels, nseg_rels, relid));
			const Sluice__V1__Relation *rel = sluice_reader_relation(r, relid);
			assert_non_null(rel);
			assert_int_equal(rel->id, relid);
		}
		if (rec->body_case == SLUICE__V1__RECORD__BODY_TRUNCATE)
			for (size_t i = 0; i < rec->truncate->n_relation_ids; i++)
				assert_true(rel_in(seg_rels, nseg_rels,
						   rec->truncate->relation_ids[i]));

		uint64_t b = 0;
		if (rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN)
			b = rec->begin->txseq;
		else if (rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN)
			b = rec->snapshot_begin->txseq;
		if (b != 0) {
			assert_int_equal(open, 0);
			assert_int_equal(b, last_txseq + 1);
			if (!seg_begin_seen) {
				/* The segment is named by the first txseq it holds. */
				assert_int_equal(b, cur_seg);
				seg_begin_seen = true;
			}
			open = b;
			txn_frames = 1;
		}
		if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT ||
		    rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_END) {
			uint64_t c = rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT
					     ? rec->commit->txseq
					     : rec->snapshot_end->txseq;
			assert_int_equal(c, open);
			assert_int_equal(pos->txseq, c);
			last_txseq = c;
			open = 0;
			res->transactions++;
		} else {
			/* Inside a transaction its txseq, between transactions 0. */
			assert_int_equal(pos->txseq, open);
		}
	}
	while (idx < e->n && e->v[idx].is_def)
		idx++;
	assert_int_equal(idx, e->n);
	assert_int_equal(open, 0);
	sluice_buf_free(&packed);
	sluice_reader_close(r);
}

/* check_segment_files checks names, modes and frame layout of every segment file. */
static void
check_segment_files(tu_env *env, bool last_sealed, uint64_t *nsegs_out)
{
	uint64_t *firsts = NULL;
	size_t strays = 99, n = 0;
	assert_true(sluice_store_list(env->store, TU_STREAM, &firsts, &n, &strays));
	assert_int_equal(strays, 0);
	assert_true(n > 0);
	assert_int_equal(firsts[0], 1);

	/* The directory holds exactly these names: 16 lowercase hex digits + ".seg". */
	DIR *d = opendir(env->stream_dir);
	assert_non_null(d);
	struct dirent *de;
	size_t files = 0;
	while ((de = readdir(d)) != NULL) {
		/* The writer's lock file (store/backend_file.c) is not a segment. */
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    strcmp(de->d_name, ".writer.lock") == 0)
			continue;
		files++;
		if (strlen(de->d_name) != 20)
			fail_msg("unexpected file \"%s\" in the stream directory", de->d_name);
		assert_string_equal(de->d_name + 16, ".seg");
		for (int i = 0; i < 16; i++)
			assert_non_null(strchr("0123456789abcdef", de->d_name[i]));
		uint64_t v = strtoull(de->d_name, NULL, 16);
		bool found = false;
		for (size_t i = 0; i < n; i++)
			found = found || firsts[i] == v;
		assert_true(found);
	}
	closedir(d);
	assert_int_equal(files, n);

	for (size_t i = 0; i < n; i++) {
		char path[TU_PATH_MAX];
		tu_segment_path(env, firsts[i], path);
		bool sealed = i + 1 < n || last_sealed;
		assert_int_equal(tu_file_mode(path), sealed ? 0444 : 0644);
		tu_frame_info *fr = NULL;
		size_t nf = tu_segment_frames(path, &fr);
		assert_true(nf > 0);
		uint64_t total = 0;
		for (size_t k = 0; k < nf; k++) {
			total += fr[k].size;
			assert_int_equal((fr[k].hdr.flags & SLUICE_FRAME_FIRST) != 0, k == 0);
			assert_int_equal((fr[k].hdr.flags & SLUICE_FRAME_SEAL) != 0,
					 sealed && k + 1 == nf);
		}
		assert_int_equal(total, tu_file_size(path));
		/* The first frame starts at the txseq the name says, between transactions. */
		assert_int_equal(fr[0].hdr.txseq_start, firsts[i]);
		assert_int_equal(fr[0].hdr.flags & SLUICE_FRAME_CONT, 0);
		if (i + 1 < n)
			assert_int_equal(fr[nf - 1].hdr.txseq_end, firsts[i + 1]);
		free(fr);
	}
	*nsegs_out = n;
	free(firsts);
}

static void
check_verify_clean(tu_env *env, uint64_t segments, uint64_t transactions, uint64_t records)
{
	tu_findings f;
	sluice_verify_report rep;
	tu_verify(env->store, TU_STREAM, env->trust, &f, &rep);
	if (rep.problems != 0 || rep.warnings != 0)
		tu_findings_print(&f);
	assert_int_equal(rep.problems, 0);
	assert_int_equal(rep.warnings, 0);
	assert_false(rep.torn);
	assert_int_equal(rep.segments, segments);
	assert_int_equal(rep.transactions, transactions);
	assert_int_equal(rep.records, records);
	assert_int_equal(rep.first_txseq, transactions ? 1 : 0);
	assert_int_equal(rep.last_txseq, transactions);
	tu_findings_free(&f);
}

/*
 * check_segments_alone opens a reader at the first txseq of each later
 * segment and checks that the relation of its first change is known.
 */
static void
check_segments_alone(tu_env *env, size_t *checked_out)
{
	uint64_t *firsts = NULL;
	size_t n = tu_segments(env, &firsts);
	size_t checked = 0;
	for (size_t i = 1; i < n; i++) {
		for (int shift = 0; shift < 2; shift++) {
			uint64_t from = firsts[i] + (uint64_t)shift;
			sluice_reader *r = NULL;
			assert_true(
				sluice_reader_open(env->store, TU_STREAM, env->trust, from, &r));
			bool first_begin = true;
			for (;;) {
				const sluice_record *rec = NULL;
				sluice_reader_status s = sluice_reader_next(r, &rec);
				if (s == SLUICE_READER_ERROR)
					fail_msg("reader from %" PRIu64 ": %s", from,
						 sluice_reader_error(r));
				if (s == SLUICE_READER_WAIT)
					break;
				if (s != SLUICE_READER_RECORD)
					fail_msg("unexpected reader status %d", (int)s);
				const sluice_reader_position *pos = sluice_reader_position_get(r);
				assert_true(pos->segment_first >= firsts[i]);
				if (rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN ||
				    rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN) {
					uint64_t t =
						rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN
							? rec->begin->txseq
							: rec->snapshot_begin->txseq;
					if (first_begin)
						assert_int_equal(t, from);
					first_begin = false;
				}
				uint32_t relid;
				if (sluice_records_relation_id(rec, &relid)) {
					assert_false(first_begin);
					assert_true(pos->txseq >= from);
					if (shift == 0)
						assert_int_equal(pos->segment_first, firsts[i]);
					const Sluice__V1__Relation *rel =
						sluice_reader_relation(r, relid);
					assert_non_null(rel);
					assert_int_equal(rel->id, relid);
					assert_true(rel->n_columns >= 4);
					if (shift == 0)
						checked++;
					break;
				}
				/* Nothing from before the start point comes out. */
				if (pos->txseq != 0)
					assert_true(pos->txseq >= from);
			}
			sluice_reader_close(r);
		}
	}
	*checked_out = checked;
	free(firsts);
}

/*
 * check_commits_end_frames: no Commit/SnapshotEnd lies in a frame that ends
 * inside a transaction (OPEN). Writer recovery keeps only frames without OPEN,
 * so a commit in an OPEN frame could be lost after being reported durable.
 */
static void
check_commits_end_frames(tu_env *env, uint64_t *commits_checked)
{
	uint64_t *firsts = NULL;
	size_t n = tu_segments(env, &firsts);
	tu_frame_info **frames = calloc(n, sizeof(*frames));
	size_t *nframes = calloc(n, sizeof(*nframes));
	for (size_t i = 0; i < n; i++) {
		char path[TU_PATH_MAX];
		tu_segment_path(env, firsts[i], path);
		nframes[i] = tu_segment_frames(path, &frames[i]);
	}
	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(env->store, TU_STREAM, env->trust, 1, &r));
	uint64_t checked = 0;
	for (;;) {
		const sluice_record *rec;
		sluice_reader_status st = sluice_reader_next(r, &rec);
		if (st == SLUICE_READER_ERROR)
			fail_msg("reader: %s", sluice_reader_error(r));
		if (st == SLUICE_READER_WAIT)
			break;
		if (st != SLUICE_READER_RECORD)
			fail_msg("unexpected reader status %d", (int)st);
		if (rec->body_case != SLUICE__V1__RECORD__BODY_COMMIT &&
		    rec->body_case != SLUICE__V1__RECORD__BODY_SNAPSHOT_END)
			continue;
		const sluice_reader_position *pos = sluice_reader_position_get(r);
		bool found = false;
		for (size_t i = 0; i < n && !found; i++) {
			if (firsts[i] != pos->segment_first)
				continue;
			for (size_t k = 0; k < nframes[i]; k++) {
				if (frames[i][k].offset != pos->frame_offset)
					continue;
				found = true;
				if (frames[i][k].hdr.flags & SLUICE_FRAME_OPEN)
					fail_msg("commit of txseq %" PRIu64 " is in an OPEN frame "
						 "(segment %" PRIu64 " offset %" PRIu64 ")",
						 pos->txseq, pos->segment_first, pos->frame_offset);
				assert_true(frames[i][k].hdr.txseq_end > pos->txseq);
			}
		}
		assert_true(found);
		checked++;
	}
	sluice_reader_close(r);
	for (size_t i = 0; i < n; i++)
		free(frames[i]);
	free(frames);
	free(nframes);
	free(firsts);
	*commits_checked = checked;
}

/* ---- tests ---- */

static void
test_stream_empty_and_tiny(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "tiny");
	sluice_writer *w = NULL;
	sluice_writer_recovery rec;
	memset(&rec, 0xAA, sizeof(rec));
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, &rec));
	assert_int_equal(rec.torn_bytes, 0);
	assert_int_equal(rec.partial_bytes, 0);
	assert_int_equal(rec.partial_txseq, 0);
	assert_false(rec.removed_segment);
	assert_int_equal(sluice_writer_last_txseq(w), 0);

	expect e = {0};
	gen g = {.w = w,
		 .a = sluice_arena_create(),
		 .e = &e,
		 .time = 1700000000000000ll,
		 .lsn = 0x1000000,
		 .rng = 1,
		 .orders_version = 1};
	put(&g, tu_std_relation(g.a));
	txn_empty(&g); /* 1: Begin + Commit only */
	heartbeat(&g);
	txn_tiny(&g);  /* 2 */
	txn_empty(&g); /* 3 */
	txn_mixed(&g); /* 4 */
	message_outside(&g);
	txn_tiny(&g); /* 5 */
	assert_int_equal(sluice_writer_last_txseq(w), 5);
	assert_true(sluice_writer_last_position(w) == g.lsn);
	assert_true(sluice_writer_last_commit_time(w) == g.begin_time);
	assert_true(sluice_writer_flush(w));
	assert_int_equal(sluice_writer_durable_txseq(w), 5);
	heartbeat(&g);
	assert_true(sluice_writer_close(w));

	check_result res;
	check_stream(&env, &e, &res);
	assert_int_equal(res.transactions, 5);
	assert_int_equal(res.segments_seen, 1);
	uint64_t nsegs;
	check_segment_files(&env, false, &nsegs);
	assert_int_equal(nsegs, 1);
	check_verify_clean(&env, 1, 5, res.records);

	/* The writer reopens a clean stream without cutting anything and continues. */
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, &rec));
	assert_int_equal(rec.torn_bytes, 0);
	assert_int_equal(rec.partial_bytes, 0);
	assert_int_equal(rec.partial_txseq, 0);
	assert_false(rec.removed_segment);
	assert_int_equal(sluice_writer_last_txseq(w), 5);
	assert_true(sluice_writer_last_position(w) == g.lsn);
	assert_true(sluice_writer_last_commit_time(w) == g.begin_time);
	g.w = w;
	put(&g, tu_std_relation(g.a));
	txn_tiny(&g); /* 6 */
	assert_true(sluice_writer_close(w));
	check_stream(&env, &e, &res);
	assert_int_equal(res.transactions, 6);
	check_verify_clean(&env, 1, 6, res.records);

	expect_free(&e);
	sluice_arena_free(g.a);
	tu_env_free(&env);
}

static void
test_stream_writer_rejects_misuse(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "misuse");
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	sluice_arena *a = sluice_arena_create();
	tu_append(w, tu_std_relation(a));
	assert_false(sluice_writer_append(w, tu_commit(a, 1, 0)));
	assert_false(sluice_writer_append(w, tu_std_insert(a, 1, 1, 4)));
	tu_append(w, tu_begin(a, 10, 1, "n"));
	assert_false(sluice_writer_append(w, tu_begin(a, 11, 2, "n")));
	assert_false(sluice_writer_append(w, tu_heartbeat(a, 12, 3)));
	assert_false(sluice_writer_seal(w));
	tu_append(w, tu_std_insert(a, 1, 2, 4));
	tu_append(w, tu_commit(a, 5, 1));
	assert_int_equal(sluice_writer_last_txseq(w), 1);
	assert_false(sluice_writer_open(env.store, "bad/name", env.kp.key, NULL, &w, NULL));
	assert_true(sluice_writer_close(w));

	tu_read_stats st;
	tu_read_all(env.store, TU_STREAM, env.trust, 1, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_int_equal(st.transactions, 1);
	assert_int_equal(st.records, 4); /* relation, begin, insert, commit */
	check_verify_clean(&env, 1, 1, 4);
	sluice_arena_free(a);
	tu_env_free(&env);
}

static void
test_stream_many_segments(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "many");
	sluice_writer_options o = tu_writer_options(4096, 64 * 1024);
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, NULL));
	expect e = {0};
	gen g = {.w = w,
		 .a = sluice_arena_create(),
		 .e = &e,
		 .time = 1600000000000000ll,
		 .lsn = 0x5000000,
		 .rng = 42,
		 .orders_version = 1};
	put(&g, tu_std_relation(g.a));

	for (int i = 0; i < 320; i++) {
		sluice_arena_reset(g.a);
		/* Reopen the writer once in the middle; relations must be given again. */
		if (i == 150) {
			assert_true(sluice_writer_close(w));
			sluice_writer_recovery rec;
			assert_true(
				sluice_writer_open(env.store, TU_STREAM, env.kp.key, &o, &w, &rec));
			assert_int_equal(rec.torn_bytes + rec.partial_bytes, 0);
			assert_int_equal(sluice_writer_last_txseq(w), g.ntx);
			g.w = w;
			put(&g, tu_std_relation(g.a));
		}
		/* Redefine the orders relation (a column added) once. */
		if (i == 200)
			g.orders_version = 2;
		switch (i % 10) {
		case 0:
			txn_empty(&g);
			break;
		case 1:
		case 5:
			txn_tiny(&g);
			break;
		case 2:
		case 7:
			txn_mixed(&g);
			break;
		case 3:
			txn_bulk(&g, 12, 1200); /* ~15 KiB: spans 4 KiB frames */
			break;
		case 4:
			heartbeat(&g);
			txn_bulk(&g, 3, 700);
			break;
		case 6:
			if (i % 40 == 6)
				txn_snapshot(&g, 25);
			else
				txn_bulk(&g, 5, 2000);
			break;
		case 8:
			message_outside(&g);
			txn_tiny(&g);
			break;
		default:
			txn_bulk(&g, 1, 5000); /* one row larger than a frame */
			heartbeat(&g);
			break;
		}
		if (i % 37 == 0) {
			assert_true(sluice_writer_flush(w));
			assert_int_equal(sluice_writer_durable_txseq(w), g.ntx);
			assert_true(sluice_writer_durable_position(w) ==
				    sluice_writer_last_position(w));
		}
	}
	uint64_t ntx = g.ntx;
	assert_true(sluice_writer_close(w));

	check_result res;
	check_stream(&env, &e, &res);
	assert_int_equal(res.transactions, ntx);
	assert_true(res.max_frames_per_txn >= 3);
	uint64_t nsegs;
	check_segment_files(&env, false, &nsegs);
	assert_true(nsegs >= 10);
	assert_int_equal(res.segments_seen, nsegs);
	check_verify_clean(&env, nsegs, ntx, res.records);

	size_t checked = 0;
	check_segments_alone(&env, &checked);
	assert_int_equal(checked, nsegs - 1);

	uint64_t commits = 0;
	check_commits_end_frames(&env, &commits);
	assert_int_equal(commits, ntx);
	print_message("many: %" PRIu64 " transactions, %" PRIu64 " records, %" PRIu64
		      " segments (%zu checked alone), up to %" PRIu64 " frames per transaction\n",
		      ntx, res.records, nsegs, checked, res.max_frames_per_txn);

	/* Reading from the middle of the stream starts at that transaction. */
	tu_read_stats st;
	tu_read_all(env.store, TU_STREAM, env.trust, ntx / 2, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_true(st.dense);
	assert_int_equal(st.first_txseq, ntx / 2);
	assert_int_equal(st.last_txseq, ntx);
	assert_int_equal(st.transactions, ntx - ntx / 2 + 1);

	expect_free(&e);
	sluice_arena_free(g.a);
	tu_env_free(&env);
}

/* ---- the large transaction ---- */

#define LARGE_SEED      0x5EED5EEDull
#define LARGE_BLOB      49152u
#define LARGE_MIN_BYTES (66ull * 1024 * 1024) /* > 64 MiB with margin */

static void
test_stream_large_transaction(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "large");
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	sluice_arena *a = sluice_arena_create();
	tu_append(w, tu_std_relation(a));
	assert_int_equal(tu_append_txn(w, a, 1000, LARGE_SEED, 2, 64), 1);

	/* Transaction 2: rows regenerated from (seed, id) when reading. */
	sluice_record *b = tu_begin(a, 2000, 77, "node-big");
	tu_append(w, b);
	assert_int_equal(b->begin->txseq, 2);
	uint64_t bytes = 0, nrows = 0;
	while (bytes < LARGE_MIN_BYTES) {
		sluice_arena_reset(a);
		sluice_record *ins = tu_std_insert(a, LARGE_SEED, 2000000 + nrows,
						   LARGE_BLOB + (size_t)(nrows % 7));
		bytes += protobuf_c_message_get_packed_size(&ins->base);
		tu_append(w, ins);
		nrows++;
	}
	sluice_arena_reset(a);
	sluice_record *c = tu_commit(a, 78, (uint32_t)nrows);
	tu_append(w, c);
	assert_int_equal(c->commit->txseq, 2);
	for (uint64_t t = 3; t <= 5; t++) {
		sluice_arena_reset(a);
		assert_int_equal(tu_append_txn(w, a, (int64_t)t * 1000, LARGE_SEED, 3, 100), t);
	}
	assert_true(sluice_writer_close(w));

	/* Read everything back, regenerating the large transaction's rows. */
	sluice_reader *r = NULL;
	assert_true(sluice_reader_open(env.store, TU_STREAM, env.trust, 1, &r));
	uint64_t records = 0, row = 0, txns = 0, big_frames = 0, last_off = UINT64_MAX;
	uint64_t last_seg = UINT64_MAX;
	sluice_buf x = {0}, y = {0};
	for (;;) {
		const sluice_record *rec = NULL;
		sluice_reader_status s = sluice_reader_next(r, &rec);
		if (s == SLUICE_READER_ERROR)
			fail_msg("reader: %s", sluice_reader_error(r));
		if (s == SLUICE_READER_WAIT)
			break;
		if (s != SLUICE_READER_RECORD)
			fail_msg("unexpected reader status %d", (int)s);
		records++;
		const sluice_reader_position *pos = sluice_reader_position_get(r);
		if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT) {
			txns++;
			assert_int_equal(rec->commit->txseq, txns);
		}
		if (rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN) {
			assert_int_equal(rec->begin->txseq, txns + 1);
			if (pos->segment_first != last_seg)
				assert_int_equal(pos->segment_first, rec->begin->txseq);
			last_seg = pos->segment_first;
		}
		if (pos->txseq != 2 || rec->body_case != SLUICE__V1__RECORD__BODY_INSERT)
			continue;
		if (pos->frame_offset != last_off || big_frames == 0) {
			big_frames++;
			last_off = pos->frame_offset;
		}
		sluice_arena_reset(a);
		sluice_record *want =
			tu_std_insert(a, LARGE_SEED, 2000000 + row, LARGE_BLOB + (size_t)(row % 7));
		tu_pack(&want->base, &x);
		tu_pack(&rec->base, &y);
		if (x.len != y.len || memcmp(x.data, y.data, x.len) != 0)
			fail_msg("row %" PRIu64 " of the large transaction differs", row);
		row++;
	}
	sluice_reader_close(r);
	sluice_buf_free(&x);
	sluice_buf_free(&y);
	assert_int_equal(row, nrows);
	assert_int_equal(txns, 5);
	print_message("large: %" PRIu64 " rows, %" PRIu64 " record bytes, %" PRIu64 " frames\n",
		      nrows, bytes, big_frames);
	assert_true(big_frames >= 60); /* 1 MiB frames */

	/* The large transaction filled its segment: the next ones start a new one. */
	uint64_t *firsts = NULL;
	size_t n = tu_segments(&env, &firsts);
	assert_int_equal(n, 2);
	assert_int_equal(firsts[0], 1);
	assert_int_equal(firsts[1], 3);
	free(firsts);
	check_verify_clean(&env, 2, 5, records);

	/* The segment after it is readable alone. */
	size_t checked = 0;
	check_segments_alone(&env, &checked);
	assert_int_equal(checked, 1);

	sluice_arena_free(a);
	tu_env_free(&env);
}

/* Only one writer per stream at a time; readers are not affected. */
static void
test_stream_writer_lock(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "lock");
	sluice_arena *a = sluice_arena_create();
	sluice_writer *w1 = NULL, *w2 = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w1, NULL));
	tu_append(w1, tu_std_relation(a));
	assert_int_equal(tu_append_txn(w1, a, 1, 1, 1, 8), 1);
	assert_true(sluice_writer_flush(w1));
	/* A second writer on the same stream (another store handle, too) is refused. */
	assert_false(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w2, NULL));
	sluice_store *other = NULL;
	assert_true(sluice_store_open(env.store_dir, &other));
	assert_false(sluice_writer_open(other, TU_STREAM, env.kp.key, NULL, &w2, NULL));
	/* A writer of another stream in the same store is fine. */
	assert_true(sluice_writer_open(env.store, "other-stream", env.kp.key, NULL, &w2, NULL));
	assert_true(sluice_writer_close(w2));
	/* The refused attempts did not disturb the first writer. */
	tu_read_stats st;
	tu_read_all(env.store, TU_STREAM, env.trust, 1, &st);
	assert_int_equal(st.end, SLUICE_READER_WAIT);
	assert_int_equal(st.last_txseq, 1);
	assert_int_equal(tu_append_txn(w1, a, 2, 1, 1, 8), 2);
	assert_true(sluice_writer_close(w1));
	/* Released on close. */
	assert_true(sluice_writer_open(other, TU_STREAM, env.kp.key, NULL, &w2, NULL));
	assert_int_equal(sluice_writer_last_txseq(w2), 2);
	assert_true(sluice_writer_close(w2));
	sluice_store_close(other);
	check_verify_clean(&env, 1, 2, st.records + 3);
	sluice_arena_free(a);
	tu_env_free(&env);
}

/*
 * Reading from txseq 1 ("the start") returns every record of the stream,
 * including heartbeats and non-transactional messages before transaction 1.
 */
static void
test_stream_reader_from_start_returns_everything(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "start");
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	expect e = {0};
	gen g = {.w = w,
		 .a = sluice_arena_create(),
		 .e = &e,
		 .time = 1000,
		 .lsn = 0x10,
		 .rng = 3,
		 .orders_version = 1};
	heartbeat(&g);       /* before any transaction */
	message_outside(&g); /* e.g. a non-transactional logical message */
	put(&g, tu_std_relation(g.a));
	txn_tiny(&g);
	heartbeat(&g);
	txn_tiny(&g);
	assert_true(sluice_writer_close(w));
	check_result res;
	check_stream(&env, &e, &res);
	assert_int_equal(res.transactions, 2);
	check_verify_clean(&env, 1, 2, res.records);
	expect_free(&e);
	sluice_arena_free(g.a);
	tu_env_free(&env);
}

/*
 * An explicit seal between transactions when the open segment holds no
 * transaction (only a heartbeat written after the previous seal): the stream
 * must still be able to go on.
 */
/* pos_commit: a MongoDB-style commit at cluster time ct with a resume token. */
static sluice_record *
pos_commit(sluice_arena *a, uint64_t ct, const char *token)
{
	sluice_record *r = tu_commit(a, 0, 1);
	r->commit->has_end_lsn = false;
	Sluice__V1__SourcePosition *p = sluice_arena_alloc(a, sizeof(*p));
	sluice__v1__source_position__init(p);
	p->has_cluster_time = true;
	p->cluster_time = ct;
	p->has_resume_token = token != NULL;
	if (token)
		p->resume_token = tu_bin(a, token, strlen(token));
	r->commit->position = p;
	return r;
}

/* pos_heartbeat: a heartbeat with a MongoDB position (no LSN). */
static sluice_record *
pos_heartbeat(sluice_arena *a, int64_t t, uint64_t ct, const char *token)
{
	sluice_record *r = tu_heartbeat(a, t, 0);
	r->heartbeat->has_source_lsn = false;
	Sluice__V1__SourcePosition *p = sluice_arena_alloc(a, sizeof(*p));
	sluice__v1__source_position__init(p);
	p->has_cluster_time = true;
	p->cluster_time = ct;
	p->has_resume_token = true;
	p->resume_token = tu_bin(a, token, strlen(token));
	r->heartbeat->position = p;
	return r;
}

static void
assert_position(sluice_writer *w, uint64_t ct, const char *token)
{
	size_t len;
	const uint8_t *t = sluice_writer_last_token(w, &len);
	assert_true(sluice_writer_last_position(w) == ct);
	if (token == NULL) {
		assert_null(t);
		assert_int_equal(len, 0);
	} else {
		assert_int_equal(len, strlen(token));
		assert_memory_equal(t, token, len);
	}
}

/*
 * A MongoDB stream's end position (docs/format.md §7.6): the newest of the last
 * commit, snapshot and positioned heartbeat, with its resume token, read back
 * by a reopened writer, also when the heartbeat is in a later segment than the
 * commit and when the last frames were torn off.
 */
static void
test_stream_source_positions(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "positions");
	sluice_arena *a = sluice_arena_create();
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	assert_position(w, 0, NULL);

	/* A snapshot at cluster time 100: a time, no token. */
	sluice_record *sb = tu_rec(a);
	Sluice__V1__SnapshotBegin *b = sluice_arena_alloc(a, sizeof(*b));
	sluice__v1__snapshot_begin__init(b);
	b->time_us = 1000;
	b->origin_node = "n";
	Sluice__V1__SourcePosition *p = sluice_arena_alloc(a, sizeof(*p));
	sluice__v1__source_position__init(p);
	p->has_cluster_time = true;
	p->cluster_time = 100;
	b->position = p;
	sb->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN;
	sb->snapshot_begin = b;
	tu_append(w, sb);
	sluice_record *se = tu_rec(a);
	Sluice__V1__SnapshotEnd *e = sluice_arena_alloc(a, sizeof(*e));
	sluice__v1__snapshot_end__init(e);
	se->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_END;
	se->snapshot_end = e;
	tu_append(w, se);
	assert_position(w, 100, NULL);
	assert_true(sluice_writer_close(w));
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	assert_position(w, 100, NULL);

	/* A transaction at 200 with its token, then a heartbeat at 300 in a new segment. */
	tu_append(w, tu_std_relation(a));
	tu_append(w, tu_begin(a, 2000, 0, "n"));
	tu_append(w, tu_std_insert(a, 1, 1, 10));
	tu_append(w, pos_commit(a, 200, "tok-200"));
	assert_position(w, 200, "tok-200");
	assert_true(sluice_writer_close(w));
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	assert_position(w, 200, "tok-200");
	assert_true(sluice_writer_seal(w));
	tu_append(w, pos_heartbeat(a, 3000, 300, "hwm-300"));
	/* An older heartbeat position never moves the end back. */
	tu_append(w, pos_heartbeat(a, 3001, 250, "hwm-250"));
	assert_position(w, 300, "hwm-300");
	assert_true(sluice_writer_close(w));
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	assert_position(w, 300, "hwm-300");

	/* A transaction cut off unfinished leaves the end where it was. */
	tu_append(w, tu_begin(a, 4000, 0, "n"));
	tu_append(w, tu_std_insert(a, 2, 2, 10));
	assert_true(sluice_writer_flush(w));
	sluice_writer_recovery rec;
	sluice_writer *w2 = NULL;
	/* Reopen while the first writer holds an open transaction: simulate a crash. */
	assert_true(sluice_writer_close(w));
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w2, &rec));
	assert_int_equal(rec.partial_txseq, 3);
	assert_position(w2, 300, "hwm-300");
	tu_append(w2, tu_begin(a, 5000, 0, "n"));
	tu_append(w2, tu_std_relation(a));
	tu_append(w2, tu_std_insert(a, 3, 3, 10));
	tu_append(w2, pos_commit(a, 400, "tok-400"));
	assert_true(sluice_writer_close(w2));
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	assert_position(w, 400, "tok-400");
	assert_int_equal(sluice_writer_last_txseq(w), 3);
	assert_true(sluice_writer_close(w));
	sluice_arena_free(a);
	tu_env_free(&env);
}

static void
test_stream_seal_segment_without_transaction(void **state)
{
	(void)state;
	tu_env env;
	tu_env_init(&env, "sealhb");
	sluice_writer *w = NULL;
	assert_true(sluice_writer_open(env.store, TU_STREAM, env.kp.key, NULL, &w, NULL));
	expect e = {0};
	gen g = {.w = w,
		 .a = sluice_arena_create(),
		 .e = &e,
		 .time = 1000,
		 .lsn = 0x10,
		 .rng = 4,
		 .orders_version = 1};
	put(&g, tu_std_relation(g.a));
	txn_tiny(&g); /* 1 */
	assert_true(sluice_writer_seal(w));
	heartbeat(&g); /* opens segment 2 */
	bool sealed = sluice_writer_seal(w);
	/* Whether or not that seal is refused, the next transaction must work. */
	sluice_record *b = begin_rec(&g);
	bool began = sluice_writer_append(w, b);
	if (!began)
		fprintf(stderr,
			"  BUG: after sealing a segment holding only a heartbeat (seal %s), "
			"the next Begin fails\n",
			sealed ? "accepted" : "refused");
	assert_true(began);
	g.ntx++;
	g.begin_time = b->begin->commit_time_us;
	g.changes = 0;
	expect_push(&e, b);
	put(&g, tu_std_insert(g.a, 4, 2000, 10));
	put(&g, commit_rec(&g));
	assert_true(sluice_writer_close(w));
	check_result res;
	check_stream(&env, &e, &res);
	assert_int_equal(res.transactions, 2);
	tu_findings f;
	sluice_verify_report rep;
	tu_verify(env.store, TU_STREAM, env.trust, &f, &rep);
	if (rep.problems)
		tu_findings_print(&f);
	assert_int_equal(rep.problems, 0);
	tu_findings_free(&f);
	expect_free(&e);
	sluice_arena_free(g.a);
	tu_env_free(&env);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_empty_and_tiny),
		cmocka_unit_test(test_stream_writer_rejects_misuse),
		cmocka_unit_test(test_stream_writer_lock),
		cmocka_unit_test(test_stream_reader_from_start_returns_everything),
		cmocka_unit_test(test_stream_seal_segment_without_transaction),
		cmocka_unit_test(test_stream_source_positions),
		cmocka_unit_test(test_stream_many_segments),
		cmocka_unit_test(test_stream_large_transaction),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
