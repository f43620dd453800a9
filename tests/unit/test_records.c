/* Record codec: the one-pass row encoder emits exactly protobuf-c's bytes; framing round trips. */
#include "testutil.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* both_equal packs rec with the fast and the generic encoder and compares. */
static void
both_equal(const sluice_record *rec, const char *what)
{
	sluice_buf fast = {0}, generic = {0};
	sluice_buf_append(&fast, "pre", 3); /* both append to what is there */
	sluice_buf_append(&generic, "pre", 3);
	sluice_records_pack(rec, &fast);
	sluice_records_pack_generic(rec, &generic);
	if (fast.len != generic.len || memcmp(fast.data, generic.data, fast.len) != 0)
		fail_msg("%s: fast encoder wrote %zu bytes, protobuf-c %zu bytes (or they differ)",
			 what, fast.len, generic.len);

	/* And the bytes decode back to the same message. */
	sluice_arena *a = sluice_arena_create();
	size_t off = 3;
	sluice_record *back = NULL;
	assert_int_equal(sluice_records_unpack(fast.data, fast.len, &off, a, &back),
			 SLUICE_RECORDS_OK);
	assert_int_equal(off, fast.len);
	assert_true(tu_msg_equal(&back->base, &rec->base));
	assert_int_equal(sluice_records_unpack(fast.data, fast.len, &off, a, &back),
			 SLUICE_RECORDS_END);
	sluice_arena_free(a);
	sluice_buf_free(&fast);
	sluice_buf_free(&generic);
}

static Sluice__V1__Row *
row_of(sluice_arena *a, uint64_t *rng, size_t nkinds, size_t nvalues, const size_t *lens)
{
	Sluice__V1__Row *row = sluice_arena_alloc(a, sizeof(*row));
	sluice__v1__row__init(row);
	row->n_kinds = nkinds;
	row->kinds = sluice_arena_alloc(a, (nkinds ? nkinds : 1) * sizeof(*row->kinds));
	for (size_t i = 0; i < nkinds; i++)
		row->kinds[i] = (Sluice__V1__ValueKind)(tu_rand(rng) % 4);
	row->n_values = nvalues;
	row->values = sluice_arena_alloc(a, (nvalues ? nvalues : 1) * sizeof(*row->values));
	for (size_t i = 0; i < nvalues; i++) {
		size_t len = lens ? lens[i] : (size_t)(tu_rand(rng) % 300);
		row->values[i].len = len;
		row->values[i].data = sluice_arena_alloc(a, len ? len : 1);
		tu_rand_bytes(rng, row->values[i].data, len);
	}
	return row;
}

static void
test_records_fast_encoder_edge_cases(void **state)
{
	(void)state;
	sluice_arena *a = sluice_arena_create();
	uint64_t rng = 5;
	/* Value lengths around every varint boundary and the short-copy cut-off. */
	static const size_t lens[] = {0,   1,   15,    16,    17,    126,     127,
				      128, 129, 16383, 16384, 16385, 2097151, 2097152};
	const size_t nl = sizeof(lens) / sizeof(lens[0]);
	static const uint32_t relids[] = {0, 1, 127, 128, 16383, 16384, UINT32_MAX};

	for (size_t r = 0; r < sizeof(relids) / sizeof(relids[0]); r++) {
		sluice_arena_reset(a);
		sluice_record *ins = tu_insert(a, relids[r], row_of(a, &rng, nl, nl, lens));
		both_equal(ins, "insert with boundary lengths");
	}

	/* Empty row, kinds without values, values without kinds, no row at all. */
	sluice_arena_reset(a);
	both_equal(tu_insert(a, 5, row_of(a, &rng, 0, 0, NULL)), "insert with empty row");
	both_equal(tu_insert(a, 5, row_of(a, &rng, 7, 0, NULL)), "insert, kinds only");
	both_equal(tu_insert(a, 5, row_of(a, &rng, 0, 7, NULL)), "insert, values only");
	both_equal(tu_insert(a, 5, NULL), "insert without row");

	/* 200 kinds: the packed kinds field needs a two-byte length. */
	both_equal(tu_insert(a, 6, row_of(a, &rng, 200, 200, NULL)), "insert with 200 columns");

	/* Out-of-range enum values are encoded like protobuf-c does. */
	Sluice__V1__Row *odd = row_of(a, &rng, 4, 4, NULL);
	odd->kinds[0] = (Sluice__V1__ValueKind)200;
	odd->kinds[1] = (Sluice__V1__ValueKind)128;
	odd->kinds[2] = (Sluice__V1__ValueKind)0x7fffffff;
	both_equal(tu_insert(a, 7, odd), "insert with out-of-range enum values");

	/* Documents (present but empty, and large). */
	sluice_record *doc = tu_insert(a, 8, NULL);
	doc->insert->has_document = true;
	doc->insert->document = tu_bin(a, "", 0);
	both_equal(doc, "insert with empty document");
	doc->insert->document.len = 20000;
	doc->insert->document.data = sluice_arena_alloc(a, 20000);
	tu_rand_bytes(&rng, doc->insert->document.data, 20000);
	doc->insert->new_row = row_of(a, &rng, 3, 3, NULL);
	both_equal(doc, "insert with row and document");

	/* Update with every field, and with each optional field alone. */
	for (int mask = 0; mask < 64; mask++) {
		sluice_arena_reset(a);
		sluice_record *u = tu_rec(a);
		u->body_case = SLUICE__V1__RECORD__BODY_UPDATE;
		u->update = sluice_arena_alloc(a, sizeof(*u->update));
		sluice__v1__update__init(u->update);
		u->update->relation_id = 300 + (uint32_t)mask;
		if (mask & 1) {
			u->update->has_old_kind = true;
			u->update->old_kind = (Sluice__V1__OldKind)(mask % 3);
		}
		if (mask & 2)
			u->update->old_row = row_of(a, &rng, 3, 3, NULL);
		if (mask & 4)
			u->update->new_row = row_of(a, &rng, 3, 3, NULL);
		if (mask & 8) {
			u->update->has_document_key = true;
			u->update->document_key = tu_bin(a, "\0k\0", 3);
		}
		if (mask & 16) {
			u->update->has_update_description = true;
			u->update->update_description = tu_bin(a, "", 0);
		}
		if (mask & 32) {
			u->update->has_document = true;
			u->update->document = tu_bin(a, "doc", 3);
		}
		both_equal(u, "update");

		sluice_record *d = tu_rec(a);
		d->body_case = SLUICE__V1__RECORD__BODY_DELETE;
		d->delete_ = sluice_arena_alloc(a, sizeof(*d->delete_));
		sluice__v1__delete__init(d->delete_);
		d->delete_->relation_id = (uint32_t)mask << 20;
		if (mask & 1) {
			d->delete_->has_old_kind = true;
			d->delete_->old_kind = SLUICE__V1__OLD_KIND__OLD_FULL;
		}
		if (mask & 2)
			d->delete_->old_row = row_of(a, &rng, 2, 2, NULL);
		if (mask & 8) {
			d->delete_->has_document_key = true;
			d->delete_->document_key = tu_bin(a, "key", 3);
		}
		both_equal(d, "delete");

		sluice_record *s = tu_rec(a);
		s->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW;
		s->snapshot_row = sluice_arena_alloc(a, sizeof(*s->snapshot_row));
		sluice__v1__snapshot_row__init(s->snapshot_row);
		s->snapshot_row->relation_id = (uint32_t)mask;
		if (mask & 2)
			s->snapshot_row->row = row_of(a, &rng, 5, 5, NULL);
		if (mask & 32) {
			s->snapshot_row->has_document = true;
			s->snapshot_row->document = tu_bin(a, "\0", 1);
		}
		both_equal(s, "snapshot row");
	}
	sluice_arena_free(a);
}

static void
test_records_fast_encoder_random(void **state)
{
	(void)state;
	sluice_arena *a = sluice_arena_create();
	uint64_t rng = 2024;
	for (int i = 0; i < 3000; i++) {
		sluice_arena_reset(a);
		size_t nk = (size_t)(tu_rand(&rng) % 40);
		size_t nv = (tu_rand(&rng) % 8 == 0) ? (size_t)(tu_rand(&rng) % 40) : nk;
		sluice_record *rec =
			tu_insert(a, (uint32_t)tu_rand(&rng), row_of(a, &rng, nk, nv, NULL));
		switch (i % 4) {
		case 0:
			break;
		case 1: {
			sluice_record *u = tu_rec(a);
			u->body_case = SLUICE__V1__RECORD__BODY_UPDATE;
			u->update = sluice_arena_alloc(a, sizeof(*u->update));
			sluice__v1__update__init(u->update);
			u->update->relation_id = rec->insert->relation_id;
			u->update->has_old_kind = true;
			u->update->old_kind = SLUICE__V1__OLD_KIND__OLD_KEY;
			u->update->old_row = row_of(a, &rng, nk, nk, NULL);
			u->update->new_row = rec->insert->new_row;
			rec = u;
			break;
		}
		case 2: {
			sluice_record *d = tu_rec(a);
			d->body_case = SLUICE__V1__RECORD__BODY_DELETE;
			d->delete_ = sluice_arena_alloc(a, sizeof(*d->delete_));
			sluice__v1__delete__init(d->delete_);
			d->delete_->relation_id = rec->insert->relation_id;
			d->delete_->old_row = rec->insert->new_row;
			rec = d;
			break;
		}
		default: {
			sluice_record *s = tu_rec(a);
			s->body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW;
			s->snapshot_row = sluice_arena_alloc(a, sizeof(*s->snapshot_row));
			sluice__v1__snapshot_row__init(s->snapshot_row);
			s->snapshot_row->relation_id = rec->insert->relation_id;
			s->snapshot_row->row = rec->insert->new_row;
			rec = s;
			break;
		}
		}
		char what[64];
		snprintf(what, sizeof(what), "random record %d", i);
		both_equal(rec, what);
	}
	sluice_arena_free(a);
}

/* Other record types take the generic path; they must round trip too. */
static void
test_records_other_types_round_trip(void **state)
{
	(void)state;
	sluice_arena *a = sluice_arena_create();
	both_equal(tu_begin(a, -1, 0xFFFFFFFFFFFFFFFFull,
			    "n\xc3\xb8"
			    "de"),
		   "begin");
	both_equal(tu_commit(a, 1, 0), "commit");
	both_equal(tu_heartbeat(a, 0, 0), "heartbeat");
	both_equal(tu_std_relation(a), "relation");
	sluice_record *t = tu_rec(a);
	t->body_case = SLUICE__V1__RECORD__BODY_TRUNCATE;
	t->truncate = sluice_arena_alloc(a, sizeof(*t->truncate));
	sluice__v1__truncate__init(t->truncate);
	both_equal(t, "truncate without relations");

	/* A payload of several records decodes in order; damage is reported. */
	sluice_buf p = {0};
	sluice_records_pack(tu_begin(a, 5, 6, "x"), &p);
	sluice_records_pack(tu_std_insert(a, 1, 2, 500), &p);
	sluice_records_pack(tu_commit(a, 7, 1), &p);
	size_t off = 0;
	sluice_record *r = NULL;
	assert_int_equal(sluice_records_unpack(p.data, p.len, &off, a, &r), SLUICE_RECORDS_OK);
	assert_int_equal(r->body_case, SLUICE__V1__RECORD__BODY_BEGIN);
	assert_int_equal(sluice_records_unpack(p.data, p.len, &off, a, &r), SLUICE_RECORDS_OK);
	assert_int_equal(r->body_case, SLUICE__V1__RECORD__BODY_INSERT);
	assert_int_equal(r->insert->new_row->values[3].len, 500);
	assert_int_equal(sluice_records_unpack(p.data, p.len, &off, a, &r), SLUICE_RECORDS_OK);
	assert_int_equal(r->body_case, SLUICE__V1__RECORD__BODY_COMMIT);
	assert_int_equal(sluice_records_unpack(p.data, p.len, &off, a, &r), SLUICE_RECORDS_END);
	/* cut short */
	off = 0;
	assert_int_equal(sluice_records_unpack(p.data, p.len - 1, &off, a, &r), SLUICE_RECORDS_OK);
	assert_int_equal(sluice_records_unpack(p.data, p.len - 1, &off, a, &r), SLUICE_RECORDS_OK);
	size_t before = off;
	assert_int_equal(sluice_records_unpack(p.data, p.len - 1, &off, a, &r),
			 SLUICE_RECORDS_TRUNCATED);
	assert_int_equal(off, before);
	/* a length prefix above the limit */
	uint8_t big[] = {0x81, 0x80, 0x80, 0x80, 0x08};
	off = 0;
	assert_int_equal(sluice_records_unpack(big, sizeof(big), &off, a, &r),
			 SLUICE_RECORDS_TOO_LARGE);
	/* not a Record: a Begin without its required fields */
	uint8_t bad[] = {0x02, 0x0a, 0x00};
	off = 0;
	assert_int_equal(sluice_records_unpack(bad, sizeof(bad), &off, a, &r),
			 SLUICE_RECORDS_INVALID);
	sluice_buf_free(&p);
	sluice_arena_free(a);
}

/*
 * A row change decoded with a field this version does not know (as written
 * by a later schema version) keeps it in unknown_fields; protobuf-c packs it
 * again. The fast encoder must produce the same bytes.
 */
static void
test_records_fast_encoder_unknown_fields(void **state)
{
	(void)state;
	sluice_arena *a = sluice_arena_create();
	/* Record{insert(4): Insert{relation_id(1)=9, field 15 varint = 1}} */
	const uint8_t wire[] = {0x22, 0x04, 0x08, 0x09, 0x78, 0x01};
	sluice_buf in = {0};
	sluice_buf_append_varint(&in, sizeof(wire));
	sluice_buf_append(&in, wire, sizeof(wire));
	size_t off = 0;
	sluice_record *r = NULL;
	assert_int_equal(sluice_records_unpack(in.data, in.len, &off, a, &r), SLUICE_RECORDS_OK);
	assert_int_equal(r->body_case, SLUICE__V1__RECORD__BODY_INSERT);
	assert_int_equal(r->insert->relation_id, 9);
	assert_int_equal(r->insert->base.n_unknown_fields, 1);
	sluice_buf generic = {0};
	sluice_records_pack_generic(r, &generic);
	assert_int_equal(generic.len, in.len);
	assert_memory_equal(generic.data, in.data, in.len);
	both_equal(r, "insert with an unknown field");
	sluice_buf_free(&generic);
	sluice_buf_free(&in);
	sluice_arena_free(a);
}

/*
 * Negative enum values (int32 on the wire: protobuf-c writes them as 10-byte
 * sign-extended varints). The generated enum types have an unsigned
 * underlying type, so the fast encoder's (int64_t) cast zero-extends.
 */
static void
test_records_fast_encoder_negative_enum(void **state)
{
	(void)state;
	sluice_arena *a = sluice_arena_create();
	uint64_t rng = 9;
	Sluice__V1__Row *row = row_of(a, &rng, 2, 2, NULL);
	row->kinds[0] = (Sluice__V1__ValueKind)-1;
	both_equal(tu_insert(a, 7, row), "insert with a negative value kind");
	sluice_record *d = tu_rec(a);
	d->body_case = SLUICE__V1__RECORD__BODY_DELETE;
	d->delete_ = sluice_arena_alloc(a, sizeof(*d->delete_));
	sluice__v1__delete__init(d->delete_);
	d->delete_->relation_id = 1;
	d->delete_->has_old_kind = true;
	d->delete_->old_kind = (Sluice__V1__OldKind)-2;
	both_equal(d, "delete with a negative old kind");
	sluice_arena_free(a);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_records_fast_encoder_edge_cases),
		cmocka_unit_test(test_records_fast_encoder_random),
		cmocka_unit_test(test_records_other_types_round_trip),
		cmocka_unit_test(test_records_fast_encoder_unknown_fields),
		cmocka_unit_test(test_records_fast_encoder_negative_enum),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
