/* Record codec: length-prefixed protobuf records inside a frame payload. */
#include "records.h"

#include <stdlib.h>

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
	}
	return "unknown record status";
}

void
sluice_records_pack(const sluice_record *rec, sluice_buf *out)
{
	size_t size = protobuf_c_message_get_packed_size(&rec->base);
	sluice_buf_append_varint(out, size);
	sluice_buf_reserve(out, size);
	size_t written = protobuf_c_message_pack(&rec->base, out->data + out->len);
	out->len += written;
}

static void *
records_arena_alloc(void *data, size_t size)
{
	return sluice_arena_alloc(data, size);
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
		return SLUICE_RECORDS_INVALID;
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
