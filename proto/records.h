/* Record codec: length-prefixed protobuf records inside a frame payload. */
#ifndef SLUICE_PROTO_RECORDS_H
#define SLUICE_PROTO_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "buf.h"
#include "sluice.pb-c.h"

typedef Sluice__V1__Record sluice_record;

/* Largest single encoded record accepted by the decoder. */
#define SLUICE_RECORD_MAX_SIZE ((size_t)1 << 30)

typedef enum sluice_records_status {
	SLUICE_RECORDS_OK = 0,
	SLUICE_RECORDS_END = 1,        /* no bytes left */
	SLUICE_RECORDS_TRUNCATED = -1, /* length prefix or body runs past the payload */
	SLUICE_RECORDS_TOO_LARGE = -2, /* length prefix above SLUICE_RECORD_MAX_SIZE */
	SLUICE_RECORDS_INVALID = -3,   /* protobuf decoding failed */
	SLUICE_RECORDS_MEMORY = -4,    /* decoding would pass the arena's limit */
} sluice_records_status;

const char *sluice_records_strerror(sluice_records_status status);

/* sluice_records_pack appends rec to out as a varint length and the message. */
void sluice_records_pack(const sluice_record *rec, sluice_buf *out);

/* sluice_records_pack_generic is the same through protobuf-c alone (tests compare both). */
void sluice_records_pack_generic(const sluice_record *rec, sluice_buf *out);

/*
 * sluice_records_unpack decodes the record at *offset of data[0..len) into
 * memory from arena and advances *offset.
 * @return SLUICE_RECORDS_OK with *out set, SLUICE_RECORDS_END at the end of the
 * data, or a negative status.
 */
sluice_records_status sluice_records_unpack(const uint8_t *data, size_t len, size_t *offset,
					    sluice_arena *arena, sluice_record **out);

/* sluice_records_type_name returns "begin", "insert", ... or "unknown". */
const char *sluice_records_type_name(const sluice_record *rec);

/*
 * sluice_records_relation_id tells which relation a row change refers to.
 * @return true and sets *id for insert, update, delete and snapshot_row.
 */
bool sluice_records_relation_id(const sluice_record *rec, uint32_t *id);

#endif
