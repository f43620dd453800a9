/* MongoDB wire-protocol codec of the test peer: decodes requests, encodes replies. */
#ifndef SLUICE_MONGO_PEER_WIRE_H
#define SLUICE_MONGO_PEER_WIRE_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MPW_HEADER_SIZE 16
#define MPW_DB_MAX      128
/* Largest message accepted: the maxMessageSizeBytes the peer advertises. */
#define MPW_MAX_MESSAGE 48000000

#define MPW_OP_REPLY 1
#define MPW_OP_QUERY 2004
#define MPW_OP_MSG   2013

#define MPW_MSG_CHECKSUM_PRESENT 0x1u
#define MPW_MSG_MORE_TO_COME     0x2u
#define MPW_MSG_EXHAUST_ALLOWED  0x10000u

typedef enum {
	MPW_OK = 0,
	MPW_ERR_SHORT,   /* fewer bytes than the header or the declared length */
	MPW_ERR_LENGTH,  /* declared length out of bounds */
	MPW_ERR_OPCODE,  /* an opcode the peer does not serve */
	MPW_ERR_FLAGS,   /* a required flag bit the peer does not know */
	MPW_ERR_BSON,    /* a document that is truncated or invalid */
	MPW_ERR_SECTION, /* OP_MSG sections malformed (kind, sizes, not one body) */
	MPW_ERR_QUERY,   /* OP_QUERY malformed (namespace, not a command) */
	MPW_ERR_NOMEM,
} mpw_status;

/* mpw_request is a decoded request; the caller owns it and frees it with mpw_request_free. */
typedef struct {
	int32_t request_id;
	int32_t op_code;
	bool more_to_come;   /* OP_MSG moreToCome: the client wants no reply */
	bson_t *command;     /* owned: the body with kind-1 sequences merged in as arrays */
	char db[MPW_DB_MAX]; /* $db (OP_MSG) or the namespace's database (OP_QUERY) */
} mpw_request;

/*
 * mpw_message_length reads the declared length of the message starting at buf
 * (have bytes available). @return MPW_OK with *len set, MPW_ERR_SHORT when
 * fewer than 4 bytes are there, MPW_ERR_LENGTH when the length is below the
 * header size or above MPW_MAX_MESSAGE.
 */
mpw_status mpw_message_length(const uint8_t *buf, size_t have, size_t *len);

/*
 * mpw_decode decodes one whole message of exactly len bytes into *req.
 * @return MPW_OK, or an error; on error *req holds nothing to free.
 */
mpw_status mpw_decode(const uint8_t *msg, size_t len, mpw_request *req);

/* mpw_request_free releases what mpw_decode put in req (NULL is a no-op). */
void mpw_request_free(mpw_request *req);

/* mpw_strerror names a status. */
const char *mpw_strerror(mpw_status st);

/*
 * mpw_encode_reply appends to out (grown with realloc) a reply to request
 * request_id of opcode op_code: OP_REPLY for OP_QUERY, OP_MSG otherwise.
 * @return false when memory ran out or the reply is too large.
 */
bool mpw_encode_reply(uint8_t **out, size_t *out_len, size_t *out_cap, int32_t request_id,
		      int32_t op_code, const bson_t *doc);

#endif
