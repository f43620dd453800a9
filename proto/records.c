/* Record codec: length-prefixed protobuf records inside a frame payload. */
#include "records.h"

#include <stdlib.h>
#include <string.h>

const char *
sluice_records_strerror(sluice_records_status status)
{
	switch (status) {
	case SLUICE_RECORDS_OK:
		return "ok";
	case SLUICE_RECORDS_END:
		return "end of payload";
	case SLUICE_RECORDS_TRUNCATED:
		return "record runs past the end of the payload";
	case SLUICE_RECORDS_TOO_LARGE:
		return "record length above the limit";
	case SLUICE_RECORDS_INVALID:
		return "record is not a valid protobuf Record";
	case SLUICE_RECORDS_MEMORY:
		return "decoded records of the frame exceed the memory limit";
	}
	return "unknown record status";
}

/*
 * Row changes are most of a stream, and protobuf-c walks every message twice
 * (size, then bytes). The functions below encode the row-change records in
 * one pass, computing each nested length first, and emit exactly the bytes
 * protobuf-c would (fields in number order, packed kinds, repeated values);
 * tests/unit compares both encoders byte for byte.
 */

/* Wire tags: (field number << 3) | wire type (0 varint, 2 length-delimited). */
#define RECORDS_TAG_VARINT(f) ((uint8_t)(((f) << 3) | 0))
#define RECORDS_TAG_LEN(f)    ((uint8_t)(((f) << 3) | 2))

static size_t
records_varint_size(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static void
records_put_varint(sluice_buf *out, uint64_t v)
{
	uint8_t *p = out->data + out->len;
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	out->len = (size_t)(p - out->data);
}

/* records_row_kinds_size is the payload size of the packed kinds field. */
static size_t
records_row_kinds_size(const Sluice__V1__Row *row)
{
	size_t n = row->n_kinds;
	/* Kinds are small enums: one byte each unless out of range. */
	for (size_t i = 0; i < row->n_kinds; i++)
		if ((uint32_t)row->kinds[i] >= 0x80)
			n += records_varint_size((uint64_t)(int64_t)row->kinds[i]) - 1;
	return n;
}

/* records_row_size is the encoded size of a Row message body. */
static size_t
records_row_size(const Sluice__V1__Row *row, size_t kinds_size)
{
	size_t n = 0;
	if (row->n_kinds > 0)
		n += 1 + records_varint_size(kinds_size) + kinds_size;
	n += row->n_values; /* one tag byte per value */
	for (size_t i = 0; i < row->n_values; i++) {
		size_t len = row->values[i].len;
		n += len + (len < 0x80 ? 1 : records_varint_size(len));
	}
	return n;
}

/* records_put_row writes a Row body (out has room for it). */
static void
records_put_row(sluice_buf *out, const Sluice__V1__Row *row, size_t kinds_size)
{
	uint8_t *p = out->data + out->len;
	if (row->n_kinds > 0) {
		*p++ = RECORDS_TAG_LEN(1);
		out->len = (size_t)(p - out->data);
		records_put_varint(out, kinds_size);
		for (size_t i = 0; i < row->n_kinds; i++)
			records_put_varint(out, (uint64_t)(int64_t)row->kinds[i]);
		p = out->data + out->len;
	}
	for (size_t i = 0; i < row->n_values; i++) {
		size_t len = row->values[i].len;
		const uint8_t *src = row->values[i].data;
		*p++ = RECORDS_TAG_LEN(2);
		if (len < 0x80) {
			*p++ = (uint8_t)len;
			/* Short values dominate: a byte loop beats a memcpy call. */
			if (len <= 16) {
				for (size_t k = 0; k < len; k++)
					p[k] = src[k];
			} else
				memcpy(p, src, len);
			p += len;
		} else {
			out->len = (size_t)(p - out->data);
			records_put_varint(out, len);
			p = out->data + out->len;
			memcpy(p, src, len);
			p += len;
		}
	}
	out->len = (size_t)(p - out->data);
}

/* One field of a row-change message, in field-number order. */
typedef struct records_field {
	uint8_t number;
	uint8_t kind; /* 0 varint, 1 row, 2 bytes */
	uint64_t varint;
	const Sluice__V1__Row *row;
	size_t row_kinds, row_size;
	const ProtobufCBinaryData *bytes;
} records_field;

/* records_pack_fields writes record field rec_field holding a message of fields. */
static void
records_pack_fields(sluice_buf *out, uint8_t rec_field, records_field *f, size_t nf)
{
	size_t body = 0;
	for (size_t i = 0; i < nf; i++) {
		switch (f[i].kind) {
		case 0:
			body += 1 + records_varint_size(f[i].varint);
			break;
		case 1:
			f[i].row_kinds = records_row_kinds_size(f[i].row);
			f[i].row_size = records_row_size(f[i].row, f[i].row_kinds);
			body += 1 + records_varint_size(f[i].row_size) + f[i].row_size;
			break;
		default:
			body += 1 + records_varint_size(f[i].bytes->len) + f[i].bytes->len;
		}
	}
	size_t record = 1 + records_varint_size(body) + body;
	sluice_buf_reserve(out, 10 + record);
	records_put_varint(out, record);
	out->data[out->len++] = RECORDS_TAG_LEN(rec_field);
	records_put_varint(out, body);
	for (size_t i = 0; i < nf; i++) {
		switch (f[i].kind) {
		case 0:
			out->data[out->len++] = RECORDS_TAG_VARINT(f[i].number);
			records_put_varint(out, f[i].varint);
			break;
		case 1:
			out->data[out->len++] = RECORDS_TAG_LEN(f[i].number);
			records_put_varint(out, f[i].row_size);
			records_put_row(out, f[i].row, f[i].row_kinds);
			break;
		default:
			out->data[out->len++] = RECORDS_TAG_LEN(f[i].number);
			records_put_varint(out, f[i].bytes->len);
			if (f[i].bytes->len > 0)
				memcpy(out->data + out->len, f[i].bytes->data, f[i].bytes->len);
			out->len += f[i].bytes->len;
		}
	}
}

#define RECORDS_ADD_VARINT(n, v)                                                                   \
	(f[nf++] = (records_field){.number = (n), .kind = 0, .varint = (v)})
#define RECORDS_ADD_ROW(n, r)   (f[nf++] = (records_field){.number = (n), .kind = 1, .row = (r)})
#define RECORDS_ADD_BYTES(n, b) (f[nf++] = (records_field){.number = (n), .kind = 2, .bytes = (b)})

/* records_row_plain tells whether a row has only what the fast path encodes. */
static bool
records_row_plain(const Sluice__V1__Row *row)
{
	if (row == NULL)
		return true;
	if (row->base.n_unknown_fields != 0)
		return false;
	for (size_t i = 0; i < row->n_kinds; i++)
		if ((uint32_t)row->kinds[i] >= 0x80)
			return false;
	return true;
}

/*
 * records_pack_fast encodes row changes in one pass; false for other records
 * and for anything unusual (unknown fields kept from decoding, enum values
 * out of range), which protobuf-c encodes instead.
 */
static bool
records_pack_fast(const sluice_record *rec, sluice_buf *out)
{
	records_field f[10];
	size_t nf = 0;
	if (rec->base.n_unknown_fields != 0)
		return false;
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_INSERT:
		if (rec->insert->base.n_unknown_fields || !records_row_plain(rec->insert->new_row))
			return false;
		break;
	case SLUICE__V1__RECORD__BODY_UPDATE:
		if (rec->update->base.n_unknown_fields ||
		    !records_row_plain(rec->update->old_row) ||
		    !records_row_plain(rec->update->new_row) ||
		    (uint32_t)rec->update->old_kind >= 0x80)
			return false;
		break;
	case SLUICE__V1__RECORD__BODY_DELETE:
		if (rec->delete_->base.n_unknown_fields ||
		    !records_row_plain(rec->delete_->old_row) ||
		    (uint32_t)rec->delete_->old_kind >= 0x80)
			return false;
		break;
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
		if (rec->snapshot_row->base.n_unknown_fields ||
		    !records_row_plain(rec->snapshot_row->row))
			return false;
		break;
	default:
		return false;
	}
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_INSERT: {
		const Sluice__V1__Insert *x = rec->insert;
		RECORDS_ADD_VARINT(1, x->relation_id);
		if (x->new_row)
			RECORDS_ADD_ROW(2, x->new_row);
		if (x->has_document)
			RECORDS_ADD_BYTES(3, &x->document);
		records_pack_fields(out, 4, f, nf);
		return true;
	}
	case SLUICE__V1__RECORD__BODY_UPDATE: {
		const Sluice__V1__Update *x = rec->update;
		RECORDS_ADD_VARINT(1, x->relation_id);
		if (x->has_old_kind)
			RECORDS_ADD_VARINT(2, (uint64_t)(int64_t)x->old_kind);
		if (x->old_row)
			RECORDS_ADD_ROW(3, x->old_row);
		if (x->new_row)
			RECORDS_ADD_ROW(4, x->new_row);
		if (x->has_document_key)
			RECORDS_ADD_BYTES(5, &x->document_key);
		if (x->has_update_description)
			RECORDS_ADD_BYTES(6, &x->update_description);
		if (x->has_document)
			RECORDS_ADD_BYTES(7, &x->document);
		if (x->has_document_before)
			RECORDS_ADD_BYTES(8, &x->document_before);
		records_pack_fields(out, 5, f, nf);
		return true;
	}
	case SLUICE__V1__RECORD__BODY_DELETE: {
		const Sluice__V1__Delete *x = rec->delete_;
		RECORDS_ADD_VARINT(1, x->relation_id);
		if (x->has_old_kind)
			RECORDS_ADD_VARINT(2, (uint64_t)(int64_t)x->old_kind);
		if (x->old_row)
			RECORDS_ADD_ROW(3, x->old_row);
		if (x->has_document_key)
			RECORDS_ADD_BYTES(4, &x->document_key);
		if (x->has_document_before)
			RECORDS_ADD_BYTES(5, &x->document_before);
		records_pack_fields(out, 6, f, nf);
		return true;
	}
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW: {
		const Sluice__V1__SnapshotRow *x = rec->snapshot_row;
		RECORDS_ADD_VARINT(1, x->relation_id);
		if (x->row)
			RECORDS_ADD_ROW(2, x->row);
		if (x->has_document)
			RECORDS_ADD_BYTES(3, &x->document);
		records_pack_fields(out, 10, f, nf);
		return true;
	}
	default:
		return false;
	}
}

void
sluice_records_pack_generic(const sluice_record *rec, sluice_buf *out)
{
	size_t size = protobuf_c_message_get_packed_size(&rec->base);
	sluice_buf_append_varint(out, size);
	sluice_buf_reserve(out, size);
	size_t written = protobuf_c_message_pack(&rec->base, out->data + out->len);
	out->len += written;
}

void
sluice_records_pack(const sluice_record *rec, sluice_buf *out)
{
	if (records_pack_fast(rec, out))
		return;
	sluice_records_pack_generic(rec, out);
}

static void *
records_arena_alloc(void *data, size_t size)
{
	return sluice_arena_try_alloc(data, size);
}

static void
records_arena_free(void *data, void *ptr)
{
	(void)data;
	(void)ptr;
}

sluice_records_status
sluice_records_unpack(const uint8_t *data, size_t len, size_t *offset, sluice_arena *arena,
		      sluice_record **out)
{
	size_t pos = *offset;
	if (pos >= len)
		return SLUICE_RECORDS_END;

	uint64_t size = 0;
	int shift = 0;
	for (;;) {
		if (pos >= len)
			return SLUICE_RECORDS_TRUNCATED;
		if (shift > 63)
			return SLUICE_RECORDS_INVALID;
		uint8_t byte = data[pos++];
		size |= (uint64_t)(byte & 0x7F) << shift;
		if ((byte & 0x80) == 0)
			break;
		shift += 7;
	}
	if (size > SLUICE_RECORD_MAX_SIZE)
		return SLUICE_RECORDS_TOO_LARGE;
	if (size > len - pos)
		return SLUICE_RECORDS_TRUNCATED;

	ProtobufCAllocator allocator = {
		.alloc = records_arena_alloc,
		.free = records_arena_free,
		.allocator_data = arena,
	};
	sluice_record *rec = sluice__v1__record__unpack(&allocator, (size_t)size, data + pos);
	if (rec == NULL)
		return sluice_arena_over_limit(arena) ? SLUICE_RECORDS_MEMORY
						      : SLUICE_RECORDS_INVALID;
	*offset = pos + (size_t)size;
	*out = rec;
	return SLUICE_RECORDS_OK;
}

const char *
sluice_records_type_name(const sluice_record *rec)
{
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_BEGIN:
		return "begin";
	case SLUICE__V1__RECORD__BODY_COMMIT:
		return "commit";
	case SLUICE__V1__RECORD__BODY_RELATION:
		return "relation";
	case SLUICE__V1__RECORD__BODY_INSERT:
		return "insert";
	case SLUICE__V1__RECORD__BODY_UPDATE:
		return "update";
	case SLUICE__V1__RECORD__BODY_DELETE:
		return "delete";
	case SLUICE__V1__RECORD__BODY_TRUNCATE:
		return "truncate";
	case SLUICE__V1__RECORD__BODY_MESSAGE:
		return "message";
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN:
		return "snapshot_begin";
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
		return "snapshot_row";
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_END:
		return "snapshot_end";
	case SLUICE__V1__RECORD__BODY_HEARTBEAT:
		return "heartbeat";
	case SLUICE__V1__RECORD__BODY_KEY_HANDOVER:
		return "key_handover";
	case SLUICE__V1__RECORD__BODY_NAMESPACE_CHANGE:
		return "namespace_change";
	default:
		return "unknown";
	}
}

bool
sluice_records_relation_id(const sluice_record *rec, uint32_t *id)
{
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_INSERT:
		*id = rec->insert->relation_id;
		return true;
	case SLUICE__V1__RECORD__BODY_UPDATE:
		*id = rec->update->relation_id;
		return true;
	case SLUICE__V1__RECORD__BODY_DELETE:
		*id = rec->delete_->relation_id;
		return true;
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW:
		*id = rec->snapshot_row->relation_id;
		return true;
	default:
		return false;
	}
}
