/* pgoutput codec: replication CopyData framing and logical replication messages (protocol 1). */
#ifndef SLUICE_CAPTURE_POSTGRES_PGOUTPUT_H
#define SLUICE_CAPTURE_POSTGRES_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sluice_pgo_status {
	SLUICE_PGO_OK = 0,
	SLUICE_PGO_E_TRUNCATED = -1, /* message ends before a field */
	SLUICE_PGO_E_UNKNOWN = -2,   /* unknown message type */
	SLUICE_PGO_E_STRING = -3,    /* string without its terminating NUL */
	SLUICE_PGO_E_TUPLE = -4,     /* unknown column kind in tuple data */
	SLUICE_PGO_E_TRAILING = -5,  /* bytes after the end of the message */
	SLUICE_PGO_E_FIELD = -6,     /* field value out of range (flags, counts, markers) */
} sluice_pgo_status;

const char *sluice_pgo_strerror(sluice_pgo_status status);

/* Replication protocol CopyData messages from the server. */
typedef struct sluice_pgo_copydata {
	char type;            /* 'w' XLogData, 'k' primary keepalive */
	uint64_t wal_start;   /* 'w' */
	uint64_t wal_end;     /* 'w' and 'k' */
	int64_t send_time;    /* PostgreSQL epoch µs */
	bool reply_requested; /* 'k' */
	const uint8_t *data;  /* 'w': the pgoutput message, borrowed */
	size_t len;
} sluice_pgo_copydata;

sluice_pgo_status sluice_pgo_decode_copydata(const uint8_t *buf, size_t len,
					     sluice_pgo_copydata *out);

/*
 * sluice_pgo_encode_status writes a standby status update ('r', 34 bytes)
 * with written/flushed/applied positions and the time now (PostgreSQL µs).
 */
void sluice_pgo_encode_status(uint8_t out[34], uint64_t written, uint64_t flushed, uint64_t applied,
			      int64_t now_pg_us, bool reply_requested);

/* One column value of TupleData: kind 'n' null, 'u' unchanged TOAST, 't' text, 'b' binary. */
typedef struct sluice_pgo_value {
	char kind;
	uint32_t len;
	const uint8_t *data; /* borrowed */
} sluice_pgo_value;

typedef struct sluice_pgo_tuple {
	uint16_t ncols;
	sluice_pgo_value *cols; /* borrowed from the decoder until the next decode */
} sluice_pgo_tuple;

typedef struct sluice_pgo_column {
	uint8_t flags; /* 1 = part of the replica identity key */
	const char *name;
	uint32_t type_oid;
	int32_t type_modifier;
} sluice_pgo_column;

typedef struct sluice_pgo_msg {
	char type; /* 'B','C','O','R','Y','I','U','D','T','M' */
	union {
		struct {
			uint64_t final_lsn;
			int64_t commit_time; /* PostgreSQL epoch µs */
			uint32_t xid;
		} begin;
		struct {
			uint8_t flags;
			uint64_t commit_lsn;
			uint64_t end_lsn;
			int64_t commit_time;
		} commit;
		struct {
			uint64_t lsn;
			const char *name;
		} origin;
		struct {
			uint32_t relid;
			const char *nspname;
			const char *relname;
			uint8_t replident;
			uint16_t ncols;
			sluice_pgo_column *cols; /* borrowed from the decoder */
		} relation;
		struct {
			uint32_t oid;
			const char *nspname;
			const char *typname;
		} typedesc;
		struct {
			uint32_t relid;
			char old_kind; /* 'K' key, 'O' old row, 0 none */
			sluice_pgo_tuple old_tuple;
			sluice_pgo_tuple new_tuple;
		} change; /* 'I' (new only), 'U', 'D' (old only) */
		struct {
			uint32_t nrels;
			uint8_t options;       /* 1 cascade, 2 restart identity */
			const uint8_t *relids; /* nrels big-endian uint32, borrowed */
		} truncate;
		struct {
			uint8_t flags; /* 1 transactional */
			uint64_t lsn;
			const char *prefix;
			uint32_t len;
			const uint8_t *content;
		} message;
	};
} sluice_pgo_msg;

typedef struct sluice_pgo_decoder sluice_pgo_decoder;

sluice_pgo_decoder *sluice_pgo_decoder_create(void);
/* sluice_pgo_decoder_free releases it; NULL is a no-op. */
void sluice_pgo_decoder_free(sluice_pgo_decoder *dec);

/*
 * sluice_pgo_decode decodes one pgoutput message (protocol version 1). Every
 * pointer in *out points into buf or into the decoder's scratch space and is
 * valid until the next call.
 */
sluice_pgo_status sluice_pgo_decode(sluice_pgo_decoder *dec, const uint8_t *buf, size_t len,
				    sluice_pgo_msg *out);

/* sluice_pgo_truncate_relid reads relation i of a Truncate message. */
uint32_t sluice_pgo_truncate_relid(const sluice_pgo_msg *msg, uint32_t i);

#endif
