/* MongoDB wire-protocol codec of the test peer: decodes requests, encodes replies. */
#include "wire.h"

#include <stdlib.h>
#include <string.h>

/* mpw_get_i32 reads a little-endian int32; the caller has checked the bounds. */
static int32_t
mpw_get_i32(const uint8_t *p)
{
	uint32_t v =
		(uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	return (int32_t)v;
}

static void
mpw_put_i32(uint8_t *p, int32_t v)
{
	uint32_t u = (uint32_t)v;
	p[0] = (uint8_t)u;
	p[1] = (uint8_t)(u >> 8);
	p[2] = (uint8_t)(u >> 16);
	p[3] = (uint8_t)(u >> 24);
}

mpw_status
mpw_message_length(const uint8_t *buf, size_t have, size_t *len)
{
	if (have < 4)
		return MPW_ERR_SHORT;
	int32_t l = mpw_get_i32(buf);
	if (l < MPW_HEADER_SIZE || l > MPW_MAX_MESSAGE)
		return MPW_ERR_LENGTH;
	*len = (size_t)l;
	return MPW_OK;
}

/*
 * mpw_document checks that a BSON document starts at p with at most avail
 * bytes left, and that it is valid; its length goes to *doc_len.
 */
static mpw_status
mpw_document(const uint8_t *p, size_t avail, size_t *doc_len)
{
	if (avail < 5)
		return MPW_ERR_BSON;
	int32_t l = mpw_get_i32(p);
	if (l < 5 || (size_t)l > avail)
		return MPW_ERR_BSON;
	bson_t b;
	if (!bson_init_static(&b, p, (size_t)l))
		return MPW_ERR_BSON;
	size_t off;
	if (!bson_validate(&b, BSON_VALIDATE_NONE, &off))
		return MPW_ERR_BSON;
	*doc_len = (size_t)l;
	return MPW_OK;
}

/* mpw_cstring finds the NUL ending a string at p within avail bytes; its length goes to *n. */
static bool
mpw_cstring(const uint8_t *p, size_t avail, size_t *n)
{
	const uint8_t *z = memchr(p, 0, avail);
	if (z == NULL)
		return false;
	*n = (size_t)(z - p);
	return true;
}

/* mpw_set_db copies a database name into req->db, refusing empty or oversized ones. */
static mpw_status
mpw_set_db(mpw_request *req, const char *name, size_t n)
{
	if (n == 0 || n >= sizeof req->db || memchr(name, 0, n) != NULL)
		return MPW_ERR_QUERY;
	memcpy(req->db, name, n);
	req->db[n] = '\0';
	return MPW_OK;
}

static mpw_status
mpw_decode_query(const uint8_t *msg, size_t len, mpw_request *req)
{
	const uint8_t *p = msg + MPW_HEADER_SIZE;
	size_t avail = len - MPW_HEADER_SIZE;
	size_t n, dl;
	mpw_status st;

	if (avail < 4)
		return MPW_ERR_SHORT;
	p += 4; /* flags: none changes how a command is answered */
	avail -= 4;
	if (!mpw_cstring(p, avail, &n))
		return MPW_ERR_QUERY;
	/* Only commands are served: the namespace is "<db>.$cmd". */
	if (n < 6 || memcmp(p + n - 5, ".$cmd", 5) != 0)
		return MPW_ERR_QUERY;
	if ((st = mpw_set_db(req, (const char *)p, n - 5)) != MPW_OK)
		return st;
	p += n + 1;
	avail -= n + 1;
	if (avail < 8)
		return MPW_ERR_SHORT;
	p += 8; /* numberToSkip, numberToReturn */
	avail -= 8;
	if ((st = mpw_document(p, avail, &dl)) != MPW_OK)
		return st;
	bson_t q;
	if (!bson_init_static(&q, p, dl))
		return MPW_ERR_BSON;
	/* Drivers wrap the command in $query when they add $readPreference. */
	bson_iter_t it;
	if (bson_iter_init_find(&it, &q, "$query")) {
		if (!BSON_ITER_HOLDS_DOCUMENT(&it))
			return MPW_ERR_QUERY;
		uint32_t il;
		const uint8_t *ip;
		bson_iter_document(&it, &il, &ip);
		req->command = bson_new_from_data(ip, il);
	} else {
		req->command = bson_copy(&q);
	}
	if (req->command == NULL)
		return MPW_ERR_NOMEM;
	if (bson_empty(req->command)) {
		bson_destroy(req->command);
		req->command = NULL;
		return MPW_ERR_QUERY;
	}
	return MPW_OK;
}

static mpw_status
mpw_decode_msg(const uint8_t *msg, size_t len, mpw_request *req)
{
	const uint8_t *p = msg + MPW_HEADER_SIZE;
	size_t avail = len - MPW_HEADER_SIZE;
	const uint8_t *body = NULL;
	size_t body_len = 0;
	mpw_status st;

	if (avail < 4)
		return MPW_ERR_SHORT;
	uint32_t flags = (uint32_t)mpw_get_i32(p);
	/* Bits 0-15 are required: refuse any this peer does not understand. */
	if ((flags & 0xffffu) & ~(MPW_MSG_CHECKSUM_PRESENT | MPW_MSG_MORE_TO_COME))
		return MPW_ERR_FLAGS;
	req->more_to_come = (flags & MPW_MSG_MORE_TO_COME) != 0;
	p += 4;
	avail -= 4;
	if (flags & MPW_MSG_CHECKSUM_PRESENT) {
		if (avail < 4)
			return MPW_ERR_SHORT;
		avail -= 4; /* the CRC-32C is not checked: loopback tests only */
	}

	/* First pass: validate every section and find the one body. */
	const uint8_t *q = p;
	size_t left = avail;
	while (left > 0) {
		uint8_t kind = q[0];
		q++;
		left--;
		if (kind == 0) {
			size_t dl;
			if (body != NULL)
				return MPW_ERR_SECTION;
			if ((st = mpw_document(q, left, &dl)) != MPW_OK)
				return st;
			body = q;
			body_len = dl;
			q += dl;
			left -= dl;
		} else if (kind == 1) {
			if (left < 4)
				return MPW_ERR_SECTION;
			int32_t sl = mpw_get_i32(q);
			if (sl < 5 || (size_t)sl > left)
				return MPW_ERR_SECTION;
			size_t n, dl;
			size_t inner = (size_t)sl - 4;
			/* The identifier becomes a key: libbson rejects keys that are not UTF-8. */
			if (!mpw_cstring(q + 4, inner, &n) || n == 0 ||
			    !bson_utf8_validate((const char *)q + 4, n, false))
				return MPW_ERR_SECTION;
			const uint8_t *d = q + 4 + n + 1;
			size_t dleft = inner - n - 1;
			while (dleft > 0) {
				if ((st = mpw_document(d, dleft, &dl)) != MPW_OK)
					return st;
				d += dl;
				dleft -= dl;
			}
			q += sl;
			left -= (size_t)sl;
		} else {
			return MPW_ERR_SECTION;
		}
	}
	if (body == NULL)
		return MPW_ERR_SECTION;

	bson_t b;
	if (!bson_init_static(&b, body, body_len))
		return MPW_ERR_BSON;
	bson_iter_t it;
	if (!bson_iter_init_find(&it, &b, "$db") || !BSON_ITER_HOLDS_UTF8(&it))
		return MPW_ERR_SECTION;
	uint32_t dbl;
	const char *db = bson_iter_utf8(&it, &dbl);
	if ((st = mpw_set_db(req, db, dbl)) != MPW_OK)
		return st;
	if (bson_empty(&b))
		return MPW_ERR_SECTION;

	req->command = bson_copy(&b);
	if (req->command == NULL)
		return MPW_ERR_NOMEM;

	/* Second pass: append each document sequence as an array named by its identifier. */
	q = p;
	left = avail;
	while (left > 0) {
		uint8_t kind = q[0];
		q++;
		left--;
		if (kind == 0) {
			q += body_len;
			left -= body_len;
			continue;
		}
		size_t sl = (size_t)mpw_get_i32(q);
		const char *ident = (const char *)q + 4;
		size_t n = strlen(ident);
		if (bson_has_field(req->command, ident))
			goto bad_section;
		const uint8_t *d = q + 4 + n + 1;
		size_t dleft = sl - 4 - n - 1;
		bson_t arr;
		if (!bson_append_array_begin(req->command, ident, (int)n, &arr))
			goto nomem;
		uint32_t idx = 0;
		while (dleft > 0) {
			size_t dl = (size_t)mpw_get_i32(d);
			bson_t doc;
			char key[16];
			const char *k;
			if (!bson_init_static(&doc, d, dl))
				goto bad_section;
			bson_uint32_to_string(idx++, &k, key, sizeof key);
			if (!bson_append_document(&arr, k, -1, &doc))
				goto nomem;
			d += dl;
			dleft -= dl;
		}
		if (!bson_append_array_end(req->command, &arr))
			goto nomem;
		q += sl;
		left -= sl;
	}
	size_t off;
	if (!bson_validate(req->command, BSON_VALIDATE_NONE, &off))
		goto bad_section;
	return MPW_OK;

bad_section:
	bson_destroy(req->command);
	req->command = NULL;
	return MPW_ERR_SECTION;
nomem:
	bson_destroy(req->command);
	req->command = NULL;
	return MPW_ERR_NOMEM;
}

mpw_status
mpw_decode(const uint8_t *msg, size_t len, mpw_request *req)
{
	size_t declared;
	mpw_status st;

	memset(req, 0, sizeof *req);
	if (len < MPW_HEADER_SIZE)
		return MPW_ERR_SHORT;
	if ((st = mpw_message_length(msg, len, &declared)) != MPW_OK)
		return st;
	if (declared != len)
		return MPW_ERR_LENGTH;
	req->request_id = mpw_get_i32(msg + 4);
	req->op_code = mpw_get_i32(msg + 12);
	if (req->op_code == MPW_OP_QUERY)
		st = mpw_decode_query(msg, len, req);
	else if (req->op_code == MPW_OP_MSG)
		st = mpw_decode_msg(msg, len, req);
	else
		st = MPW_ERR_OPCODE;
	if (st != MPW_OK)
		memset(req, 0, sizeof *req);
	return st;
}

void
mpw_request_free(mpw_request *req)
{
	if (req == NULL)
		return;
	if (req->command != NULL)
		bson_destroy(req->command);
	req->command = NULL;
}

const char *
mpw_strerror(mpw_status st)
{
	switch (st) {
	case MPW_OK:
		return "ok";
	case MPW_ERR_SHORT:
		return "message shorter than its parts";
	case MPW_ERR_LENGTH:
		return "message length out of bounds";
	case MPW_ERR_OPCODE:
		return "unsupported opcode";
	case MPW_ERR_FLAGS:
		return "unknown required OP_MSG flag";
	case MPW_ERR_BSON:
		return "invalid BSON document";
	case MPW_ERR_SECTION:
		return "malformed OP_MSG sections";
	case MPW_ERR_QUERY:
		return "malformed OP_QUERY command";
	case MPW_ERR_NOMEM:
		return "out of memory";
	}
	return "unknown status";
}

bool
mpw_encode_reply(uint8_t **out, size_t *out_len, size_t *out_cap, int32_t request_id,
		 int32_t op_code, const bson_t *doc)
{
	/* OP_REPLY: flags, cursorID, startingFrom, numberReturned; OP_MSG: flags, kind 0. */
	size_t extra = op_code == MPW_OP_QUERY ? 20 : 5;
	size_t total = MPW_HEADER_SIZE + extra + doc->len;
	if (total > (size_t)MPW_MAX_MESSAGE)
		return false;
	if (*out_len + total > *out_cap) {
		size_t cap = *out_cap ? *out_cap : 4096;
		while (cap < *out_len + total)
			cap *= 2;
		uint8_t *n = realloc(*out, cap);
		if (n == NULL)
			return false;
		*out = n;
		*out_cap = cap;
	}
	static uint32_t mpw_next_id = 1;
	uint8_t *p = *out + *out_len;
	mpw_put_i32(p, (int32_t)total);
	mpw_put_i32(p + 4, (int32_t)(mpw_next_id++ & 0x7fffffffu));
	mpw_put_i32(p + 8, request_id);
	p += MPW_HEADER_SIZE;
	if (op_code == MPW_OP_QUERY) {
		mpw_put_i32(p - 4, MPW_OP_REPLY);
		memset(p, 0, 16);       /* responseFlags, cursorID 0, startingFrom 0 */
		mpw_put_i32(p + 16, 1); /* numberReturned */
		p += 20;
	} else {
		mpw_put_i32(p - 4, MPW_OP_MSG);
		memset(p, 0, 4); /* flags 0: never checksumPresent (mongo-peer.md) */
		p[4] = 0;        /* kind 0 */
		p += 5;
	}
	memcpy(p, bson_get_data(doc), doc->len);
	*out_len += total;
	return true;
}
