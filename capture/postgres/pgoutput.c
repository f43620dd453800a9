/* pgoutput codec: replication CopyData framing and logical replication messages (protocol 1). */
#include "pgoutput.h"

#include <stdlib.h>
#include <string.h>

/* Message types of the replication protocol and of pgoutput. */
#define PGO_XLOGDATA  'w'
#define PGO_KEEPALIVE 'k'
#define PGO_STATUS    'r'
#define PGO_BEGIN     'B'
#define PGO_COMMIT    'C'
#define PGO_ORIGIN    'O'
#define PGO_RELATION  'R'
#define PGO_TYPE      'Y'
#define PGO_INSERT    'I'
#define PGO_UPDATE    'U'
#define PGO_DELETE    'D'
#define PGO_TRUNCATE  'T'
#define PGO_MESSAGE   'M'

struct sluice_pgo_decoder {
	sluice_pgo_value *values; /* owned: old tuple values, then new tuple values */
	size_t nvalues;
	sluice_pgo_column *columns; /* owned */
	size_t ncolumns;
};

/* A bounds-checked cursor over one message. */
typedef struct pgo_reader {
	const uint8_t *p;
	size_t left;
	bool bad;
} pgo_reader;

const char *
sluice_pgo_strerror(sluice_pgo_status status)
{
	switch (status) {
	case SLUICE_PGO_OK:
		return "ok";
	case SLUICE_PGO_E_TRUNCATED:
		return "message is truncated";
	case SLUICE_PGO_E_UNKNOWN:
		return "unknown message type";
	case SLUICE_PGO_E_STRING:
		return "string is not terminated";
	case SLUICE_PGO_E_TUPLE:
		return "unknown column kind in tuple data";
	case SLUICE_PGO_E_TRAILING:
		return "unexpected bytes after the message";
	case SLUICE_PGO_E_FIELD:
		return "field value out of range";
	}
	return "unknown pgoutput status";
}

static uint8_t
pgo_u8(pgo_reader *r)
{
	if (r->left < 1) {
		r->bad = true;
		return 0;
	}
	uint8_t v = r->p[0];
	r->p++;
	r->left--;
	return v;
}

static uint16_t
pgo_u16(pgo_reader *r)
{
	if (r->left < 2) {
		r->bad = true;
		r->left = 0;
		return 0;
	}
	uint16_t v = (uint16_t)((r->p[0] << 8) | r->p[1]);
	r->p += 2;
	r->left -= 2;
	return v;
}

static uint32_t
pgo_u32(pgo_reader *r)
{
	if (r->left < 4) {
		r->bad = true;
		r->left = 0;
		return 0;
	}
	uint32_t v = ((uint32_t)r->p[0] << 24) | ((uint32_t)r->p[1] << 16) |
		     ((uint32_t)r->p[2] << 8) | r->p[3];
	r->p += 4;
	r->left -= 4;
	return v;
}

static uint64_t
pgo_u64(pgo_reader *r)
{
	uint64_t hi = pgo_u32(r);
	uint64_t lo = pgo_u32(r);
	return (hi << 32) | lo;
}

/* pgo_string returns the NUL-terminated string at the cursor, or NULL. */
static const char *
pgo_string(pgo_reader *r, sluice_pgo_status *st)
{
	const uint8_t *nul = r->left ? memchr(r->p, '\0', r->left) : NULL;
	if (nul == NULL) {
		r->bad = true;
		*st = SLUICE_PGO_E_STRING;
		return NULL;
	}
	const char *s = (const char *)r->p;
	size_t n = (size_t)(nul - r->p) + 1;
	r->p += n;
	r->left -= n;
	return s;
}

static void
pgo_grow_values(sluice_pgo_decoder *dec, size_t want)
{
	if (dec->nvalues >= want)
		return;
	sluice_pgo_value *v = realloc(dec->values, want * sizeof(*v));
	if (v == NULL)
		abort();
	dec->values = v;
	dec->nvalues = want;
}

/* pgo_tuple decodes TupleData into values[first..first+ncols). */
static sluice_pgo_status
pgo_tuple(sluice_pgo_decoder *dec, pgo_reader *r, size_t first, sluice_pgo_tuple *out)
{
	uint16_t n = pgo_u16(r);
	if (r->bad)
		return SLUICE_PGO_E_TRUNCATED;
	/* Each column needs at least its kind byte. */
	if (n > r->left)
		return SLUICE_PGO_E_TRUNCATED;
	pgo_grow_values(dec, first + n);
	for (uint16_t i = 0; i < n; i++) {
		sluice_pgo_value *v = &dec->values[first + i];
		v->kind = (char)pgo_u8(r);
		v->len = 0;
		v->data = NULL;
		switch (v->kind) {
		case 'n':
		case 'u':
			break;
		case 't':
		case 'b':
			v->len = pgo_u32(r);
			if (r->bad || v->len > r->left)
				return SLUICE_PGO_E_TRUNCATED;
			v->data = r->p;
			r->p += v->len;
			r->left -= v->len;
			break;
		default:
			return r->bad ? SLUICE_PGO_E_TRUNCATED : SLUICE_PGO_E_TUPLE;
		}
	}
	out->ncols = n;
	out->cols = NULL; /* fixed up by the caller once the array stops moving */
	return SLUICE_PGO_OK;
}

sluice_pgo_decoder *
sluice_pgo_decoder_create(void)
{
	sluice_pgo_decoder *d = calloc(1, sizeof(*d));
	if (d == NULL)
		abort();
	return d;
}

void
sluice_pgo_decoder_free(sluice_pgo_decoder *dec)
{
	if (dec == NULL)
		return;
	free(dec->values);
	free(dec->columns);
	free(dec);
}

sluice_pgo_status
sluice_pgo_decode_copydata(const uint8_t *buf, size_t len, sluice_pgo_copydata *out)
{
	pgo_reader r = {.p = buf, .left = len};
	memset(out, 0, sizeof(*out));
	out->type = (char)pgo_u8(&r);
	switch (out->type) {
	case PGO_XLOGDATA:
		out->wal_start = pgo_u64(&r);
		out->wal_end = pgo_u64(&r);
		out->send_time = (int64_t)pgo_u64(&r);
		if (r.bad)
			return SLUICE_PGO_E_TRUNCATED;
		out->data = r.p;
		out->len = r.left;
		return SLUICE_PGO_OK;
	case PGO_KEEPALIVE:
		out->wal_end = pgo_u64(&r);
		out->send_time = (int64_t)pgo_u64(&r);
		out->reply_requested = pgo_u8(&r) != 0;
		if (r.bad)
			return SLUICE_PGO_E_TRUNCATED;
		return r.left ? SLUICE_PGO_E_TRAILING : SLUICE_PGO_OK;
	default:
		return r.bad ? SLUICE_PGO_E_TRUNCATED : SLUICE_PGO_E_UNKNOWN;
	}
}

static void
pgo_put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

void
sluice_pgo_encode_status(uint8_t out[34], uint64_t written, uint64_t flushed, uint64_t applied,
			 int64_t now_pg_us, bool reply_requested)
{
	out[0] = PGO_STATUS;
	pgo_put64(out + 1, written);
	pgo_put64(out + 9, flushed);
	pgo_put64(out + 17, applied);
	pgo_put64(out + 25, (uint64_t)now_pg_us);
	out[33] = reply_requested ? 1 : 0;
}

sluice_pgo_status
sluice_pgo_decode(sluice_pgo_decoder *dec, const uint8_t *buf, size_t len, sluice_pgo_msg *out)
{
	pgo_reader r = {.p = buf, .left = len};
	sluice_pgo_status st = SLUICE_PGO_OK;
	memset(out, 0, sizeof(*out));
	out->type = (char)pgo_u8(&r);
	if (r.bad)
		return SLUICE_PGO_E_TRUNCATED;

	switch (out->type) {
	case PGO_BEGIN:
		out->begin.final_lsn = pgo_u64(&r);
		out->begin.commit_time = (int64_t)pgo_u64(&r);
		out->begin.xid = pgo_u32(&r);
		break;
	case PGO_COMMIT:
		out->commit.flags = pgo_u8(&r);
		out->commit.commit_lsn = pgo_u64(&r);
		out->commit.end_lsn = pgo_u64(&r);
		out->commit.commit_time = (int64_t)pgo_u64(&r);
		if (!r.bad && out->commit.flags != 0)
			return SLUICE_PGO_E_FIELD;
		break;
	case PGO_ORIGIN:
		out->origin.lsn = pgo_u64(&r);
		out->origin.name = pgo_string(&r, &st);
		break;
	case PGO_RELATION: {
		out->relation.relid = pgo_u32(&r);
		out->relation.nspname = pgo_string(&r, &st);
		if (!r.bad)
			out->relation.relname = pgo_string(&r, &st);
		out->relation.replident = pgo_u8(&r);
		uint16_t n = pgo_u16(&r);
		if (r.bad)
			break;
		/* Each column takes at least 10 bytes. */
		if ((size_t)n * 10 > r.left)
			return SLUICE_PGO_E_TRUNCATED;
		if (dec->ncolumns < n) {
			sluice_pgo_column *c = realloc(dec->columns, n * sizeof(*c));
			if (c == NULL)
				abort();
			dec->columns = c;
			dec->ncolumns = n;
		}
		for (uint16_t i = 0; i < n && !r.bad; i++) {
			sluice_pgo_column *c = &dec->columns[i];
			c->flags = pgo_u8(&r);
			c->name = pgo_string(&r, &st);
			if (r.bad)
				break;
			c->type_oid = pgo_u32(&r);
			c->type_modifier = (int32_t)pgo_u32(&r);
			if (!r.bad && c->flags > 1)
				return SLUICE_PGO_E_FIELD;
		}
		out->relation.ncols = n;
		out->relation.cols = dec->columns;
		break;
	}
	case PGO_TYPE:
		out->typedesc.oid = pgo_u32(&r);
		out->typedesc.nspname = pgo_string(&r, &st);
		if (!r.bad)
			out->typedesc.typname = pgo_string(&r, &st);
		break;
	case PGO_INSERT: {
		out->change.relid = pgo_u32(&r);
		uint8_t marker = pgo_u8(&r);
		if (r.bad)
			break;
		if (marker != 'N')
			return SLUICE_PGO_E_FIELD;
		st = pgo_tuple(dec, &r, 0, &out->change.new_tuple);
		if (st != SLUICE_PGO_OK)
			return st;
		out->change.new_tuple.cols = dec->values;
		break;
	}
	case PGO_UPDATE:
	case PGO_DELETE: {
		out->change.relid = pgo_u32(&r);
		uint8_t marker = pgo_u8(&r);
		if (r.bad)
			break;
		size_t nold = 0;
		if (marker == 'K' || marker == 'O') {
			out->change.old_kind = (char)marker;
			st = pgo_tuple(dec, &r, 0, &out->change.old_tuple);
			if (st != SLUICE_PGO_OK)
				return st;
			nold = out->change.old_tuple.ncols;
			if (out->type == PGO_UPDATE) {
				marker = pgo_u8(&r);
				if (r.bad)
					break;
			}
		} else if (out->type == PGO_DELETE)
			return SLUICE_PGO_E_FIELD;
		if (out->type == PGO_UPDATE) {
			if (marker != 'N')
				return SLUICE_PGO_E_FIELD;
			st = pgo_tuple(dec, &r, nold, &out->change.new_tuple);
			if (st != SLUICE_PGO_OK)
				return st;
			out->change.new_tuple.cols = dec->values + nold;
		}
		if (nold > 0 || out->change.old_kind)
			out->change.old_tuple.cols = dec->values;
		break;
	}
	case PGO_TRUNCATE:
		out->truncate.nrels = pgo_u32(&r);
		out->truncate.options = pgo_u8(&r);
		if (r.bad)
			break;
		if (out->truncate.options > 3)
			return SLUICE_PGO_E_FIELD;
		if ((uint64_t)out->truncate.nrels * 4 != r.left)
			return (uint64_t)out->truncate.nrels * 4 > r.left ? SLUICE_PGO_E_TRUNCATED
									  : SLUICE_PGO_E_TRAILING;
		out->truncate.relids = r.p;
		r.p += r.left;
		r.left = 0;
		break;
	case PGO_MESSAGE:
		out->message.flags = pgo_u8(&r);
		out->message.lsn = pgo_u64(&r);
		out->message.prefix = pgo_string(&r, &st);
		out->message.len = pgo_u32(&r);
		if (r.bad)
			break;
		if (out->message.flags > 1)
			return SLUICE_PGO_E_FIELD;
		if (out->message.len != r.left)
			return out->message.len > r.left ? SLUICE_PGO_E_TRUNCATED
							 : SLUICE_PGO_E_TRAILING;
		out->message.content = r.p;
		r.p += r.left;
		r.left = 0;
		break;
	default:
		return SLUICE_PGO_E_UNKNOWN;
	}
	if (st != SLUICE_PGO_OK)
		return st;
	if (r.bad)
		return SLUICE_PGO_E_TRUNCATED;
	if (r.left != 0)
		return SLUICE_PGO_E_TRAILING;
	return SLUICE_PGO_OK;
}

uint32_t
sluice_pgo_truncate_relid(const sluice_pgo_msg *msg, uint32_t i)
{
	const uint8_t *p = msg->truncate.relids + 4 * (size_t)i;
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
