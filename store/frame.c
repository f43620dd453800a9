/* Frame codec: header layout, zstd payload, BLAKE2b hashes and Ed25519 signature. */
#include "frame.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* Byte offsets of the header fields; docs/format.md has the same table. */
enum {
	FRAME_OFF_MAGIC = 0,
	FRAME_OFF_VERSION = 4,
	FRAME_OFF_FLAGS = 6,
	FRAME_OFF_STREAM_ID = 8,
	FRAME_OFF_FRAME_SEQ = 16,
	FRAME_OFF_TXSEQ_START = 24,
	FRAME_OFF_TXSEQ_END = 32,
	FRAME_OFF_TIME_MIN = 40,
	FRAME_OFF_TIME_MAX = 48,
	FRAME_OFF_PAYLOAD_LEN = 56,
	FRAME_OFF_RAW_LEN = 60,
	FRAME_OFF_RECORD_COUNT = 64,
	FRAME_OFF_CODEC = 68,
	FRAME_OFF_SCHEMA_VERSION = 69,
	FRAME_OFF_RESERVED = 70,
	FRAME_OFF_KEY_ID = 72,
	FRAME_OFF_PAYLOAD_HASH = 80,
	FRAME_OFF_PREV_HASH = 112,
	FRAME_OFF_SIGNATURE = 144,
};

struct sluice_frame_codec {
	ZSTD_CCtx *cctx; /* owned */
	ZSTD_DCtx *dctx; /* owned */
	int level;
};

static void
frame_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void
frame_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void
frame_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t
frame_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
frame_get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t
frame_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

const char *
sluice_frame_strerror(sluice_frame_status status)
{
	switch (status) {
	case SLUICE_FRAME_OK:
		return "ok";
	case SLUICE_FRAME_E_SHORT:
		return "frame is incomplete";
	case SLUICE_FRAME_E_MAGIC:
		return "bad frame magic";
	case SLUICE_FRAME_E_VERSION:
		return "unsupported frame version";
	case SLUICE_FRAME_E_FLAGS:
		return "invalid frame flags";
	case SLUICE_FRAME_E_RESERVED:
		return "reserved header bytes are not zero";
	case SLUICE_FRAME_E_LENGTH:
		return "frame lengths are invalid";
	case SLUICE_FRAME_E_CODEC:
		return "unknown payload codec";
	case SLUICE_FRAME_E_SIGNATURE:
		return "signature does not match";
	case SLUICE_FRAME_E_HASH:
		return "payload does not match its hash";
	case SLUICE_FRAME_E_DECOMPRESS:
		return "payload does not decompress to its stated size";
	case SLUICE_FRAME_E_COMPRESS:
		return "compression failed";
	}
	return "unknown frame status";
}

/* frame_write_signed lays out the signed part of hdr into p[0..144). */
static void
frame_write_signed(const sluice_frame_header *hdr, uint8_t *p)
{
	memset(p, 0, SLUICE_FRAME_SIGNED_SIZE);
	memcpy(p + FRAME_OFF_MAGIC, SLUICE_FRAME_MAGIC, 4);
	frame_put16(p + FRAME_OFF_VERSION, hdr->version);
	frame_put16(p + FRAME_OFF_FLAGS, hdr->flags);
	frame_put64(p + FRAME_OFF_STREAM_ID, hdr->stream_id);
	frame_put64(p + FRAME_OFF_FRAME_SEQ, hdr->frame_seq);
	frame_put64(p + FRAME_OFF_TXSEQ_START, hdr->txseq_start);
	frame_put64(p + FRAME_OFF_TXSEQ_END, hdr->txseq_end);
	frame_put64(p + FRAME_OFF_TIME_MIN, (uint64_t)hdr->time_min);
	frame_put64(p + FRAME_OFF_TIME_MAX, (uint64_t)hdr->time_max);
	frame_put32(p + FRAME_OFF_PAYLOAD_LEN, hdr->payload_len);
	frame_put32(p + FRAME_OFF_RAW_LEN, hdr->raw_len);
	frame_put32(p + FRAME_OFF_RECORD_COUNT, hdr->record_count);
	p[FRAME_OFF_CODEC] = hdr->codec;
	p[FRAME_OFF_SCHEMA_VERSION] = hdr->schema_version;
	memcpy(p + FRAME_OFF_KEY_ID, hdr->key_id, SLUICE_FRAME_KEY_ID_SIZE);
	memcpy(p + FRAME_OFF_PAYLOAD_HASH, hdr->payload_hash, SLUICE_FRAME_HASH_SIZE);
	memcpy(p + FRAME_OFF_PREV_HASH, hdr->prev_hash, SLUICE_FRAME_HASH_SIZE);
}

sluice_frame_status
sluice_frame_parse_header(const uint8_t *data, size_t len, sluice_frame_header *out)
{
	if (len < SLUICE_FRAME_HEADER_SIZE)
		return SLUICE_FRAME_E_SHORT;
	if (memcmp(data + FRAME_OFF_MAGIC, SLUICE_FRAME_MAGIC, 4) != 0)
		return SLUICE_FRAME_E_MAGIC;

	sluice_frame_header h;
	memset(&h, 0, sizeof(h));
	h.version = frame_get16(data + FRAME_OFF_VERSION);
	h.flags = frame_get16(data + FRAME_OFF_FLAGS);
	h.stream_id = frame_get64(data + FRAME_OFF_STREAM_ID);
	h.frame_seq = frame_get64(data + FRAME_OFF_FRAME_SEQ);
	h.txseq_start = frame_get64(data + FRAME_OFF_TXSEQ_START);
	h.txseq_end = frame_get64(data + FRAME_OFF_TXSEQ_END);
	h.time_min = (int64_t)frame_get64(data + FRAME_OFF_TIME_MIN);
	h.time_max = (int64_t)frame_get64(data + FRAME_OFF_TIME_MAX);
	h.payload_len = frame_get32(data + FRAME_OFF_PAYLOAD_LEN);
	h.raw_len = frame_get32(data + FRAME_OFF_RAW_LEN);
	h.record_count = frame_get32(data + FRAME_OFF_RECORD_COUNT);
	h.codec = data[FRAME_OFF_CODEC];
	h.schema_version = data[FRAME_OFF_SCHEMA_VERSION];
	memcpy(h.key_id, data + FRAME_OFF_KEY_ID, SLUICE_FRAME_KEY_ID_SIZE);
	memcpy(h.payload_hash, data + FRAME_OFF_PAYLOAD_HASH, SLUICE_FRAME_HASH_SIZE);
	memcpy(h.prev_hash, data + FRAME_OFF_PREV_HASH, SLUICE_FRAME_HASH_SIZE);
	memcpy(h.signature, data + FRAME_OFF_SIGNATURE, 64);

	if (h.version != SLUICE_FRAME_VERSION || h.schema_version != SLUICE_FRAME_SCHEMA_VERSION)
		return SLUICE_FRAME_E_VERSION;
	if ((h.flags & ~SLUICE_FRAME_KNOWN_FLAGS) != 0)
		return SLUICE_FRAME_E_FLAGS;
	/* A seal carries no records and cannot end inside a transaction. */
	if ((h.flags & SLUICE_FRAME_SEAL) && ((h.flags & SLUICE_FRAME_OPEN) || h.record_count != 0))
		return SLUICE_FRAME_E_FLAGS;
	if (data[FRAME_OFF_RESERVED] != 0 || data[FRAME_OFF_RESERVED + 1] != 0)
		return SLUICE_FRAME_E_RESERVED;
	if (h.codec != SLUICE_FRAME_CODEC_ZSTD)
		return SLUICE_FRAME_E_CODEC;
	if (h.payload_len > SLUICE_FRAME_MAX_PAYLOAD || h.raw_len > SLUICE_FRAME_MAX_RAW ||
	    h.payload_len == 0 || h.txseq_end < h.txseq_start || h.txseq_start == 0 ||
	    (uint64_t)h.record_count > (uint64_t)h.raw_len ||
	    h.record_count > SLUICE_FRAME_MAX_RECORDS || h.time_min > h.time_max)
		return SLUICE_FRAME_E_LENGTH;
	*out = h;
	return SLUICE_FRAME_OK;
}

sluice_frame_status
sluice_frame_verify_signature(const uint8_t header_bytes[SLUICE_FRAME_HEADER_SIZE],
			      const uint8_t pk[32])
{
	if (crypto_sign_ed25519_verify_detached(header_bytes + FRAME_OFF_SIGNATURE, header_bytes,
						SLUICE_FRAME_SIGNED_SIZE, pk) != 0)
		return SLUICE_FRAME_E_SIGNATURE;
	return SLUICE_FRAME_OK;
}

sluice_frame_status
sluice_frame_verify(const uint8_t header_bytes[SLUICE_FRAME_HEADER_SIZE],
		    const sluice_frame_header *hdr, const uint8_t pk[32], const uint8_t *payload)
{
	if (sluice_frame_verify_signature(header_bytes, pk) != SLUICE_FRAME_OK)
		return SLUICE_FRAME_E_SIGNATURE;
	uint8_t hash[SLUICE_FRAME_HASH_SIZE];
	crypto_generichash_blake2b(hash, sizeof(hash), payload, hdr->payload_len, NULL, 0);
	if (sodium_memcmp(hash, hdr->payload_hash, sizeof(hash)) != 0)
		return SLUICE_FRAME_E_HASH;
	return SLUICE_FRAME_OK;
}

void
sluice_frame_hash(const uint8_t header_bytes[SLUICE_FRAME_HEADER_SIZE],
		  uint8_t out[SLUICE_FRAME_HASH_SIZE])
{
	crypto_generichash_blake2b(out, SLUICE_FRAME_HASH_SIZE, header_bytes,
				   SLUICE_FRAME_HEADER_SIZE, NULL, 0);
}

uint64_t
sluice_frame_stream_id(const char *stream)
{
	uint8_t hash[32];
	crypto_generichash_blake2b(hash, sizeof(hash), (const uint8_t *)stream, strlen(stream),
				   NULL, 0);
	return frame_get64(hash);
}

void
sluice_frame_genesis(const char *stream, uint8_t out[SLUICE_FRAME_HASH_SIZE])
{
	static const char domain[] = "sluice genesis v1";
	crypto_generichash_blake2b_state st;
	crypto_generichash_blake2b_init(&st, NULL, 0, SLUICE_FRAME_HASH_SIZE);
	crypto_generichash_blake2b_update(&st, (const uint8_t *)domain, sizeof(domain));
	crypto_generichash_blake2b_update(&st, (const uint8_t *)stream, strlen(stream));
	crypto_generichash_blake2b_final(&st, out, SLUICE_FRAME_HASH_SIZE);
}

sluice_frame_codec *
sluice_frame_codec_create(int level)
{
	sluice_frame_codec *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->cctx = ZSTD_createCCtx();
	c->dctx = ZSTD_createDCtx();
	if (c->cctx == NULL || c->dctx == NULL) {
		sluice_frame_codec_free(c);
		return NULL;
	}
	c->level = level;
	return c;
}

void
sluice_frame_codec_free(sluice_frame_codec *codec)
{
	if (codec == NULL)
		return;
	ZSTD_freeCCtx(codec->cctx);
	ZSTD_freeDCtx(codec->dctx);
	free(codec);
}

size_t
sluice_frame_encoded_bound(size_t raw_len)
{
	return SLUICE_FRAME_HEADER_SIZE + ZSTD_compressBound(raw_len);
}

sluice_frame_status
sluice_frame_compress(sluice_frame_codec *codec, sluice_frame_header *hdr, const uint8_t *raw,
		      size_t raw_len, sluice_buf *out)
{
	if (raw_len > SLUICE_FRAME_MAX_RAW)
		return SLUICE_FRAME_E_LENGTH;
	/* Compressed straight after the header's place in out: no copy of the payload. */
	size_t bound = ZSTD_compressBound(raw_len);
	sluice_buf_reserve(out, SLUICE_FRAME_HEADER_SIZE + bound);
	uint8_t *header = out->data + out->len;
	uint8_t *payload = header + SLUICE_FRAME_HEADER_SIZE;
	size_t clen = ZSTD_compressCCtx(codec->cctx, payload, bound, raw, raw_len, codec->level);
	if (ZSTD_isError(clen))
		return SLUICE_FRAME_E_COMPRESS;
	if (clen > SLUICE_FRAME_MAX_PAYLOAD)
		return SLUICE_FRAME_E_LENGTH;

	hdr->version = SLUICE_FRAME_VERSION;
	hdr->schema_version = SLUICE_FRAME_SCHEMA_VERSION;
	hdr->codec = SLUICE_FRAME_CODEC_ZSTD;
	hdr->payload_len = (uint32_t)clen;
	hdr->raw_len = (uint32_t)raw_len;
	crypto_generichash_blake2b(hdr->payload_hash, SLUICE_FRAME_HASH_SIZE, payload, clen, NULL,
				   0);
	memset(header, 0, SLUICE_FRAME_HEADER_SIZE);
	out->len += SLUICE_FRAME_HEADER_SIZE + clen;
	return SLUICE_FRAME_OK;
}

void
sluice_frame_sign(sluice_frame_header *hdr, const uint8_t sk[64],
		  uint8_t header[SLUICE_FRAME_HEADER_SIZE],
		  uint8_t hash_out[SLUICE_FRAME_HASH_SIZE])
{
	frame_write_signed(hdr, header);
	crypto_sign_ed25519_detached(hdr->signature, NULL, header, SLUICE_FRAME_SIGNED_SIZE, sk);
	memcpy(header + FRAME_OFF_SIGNATURE, hdr->signature, 64);
	sluice_frame_hash(header, hash_out);
}

sluice_frame_status
sluice_frame_encode(sluice_frame_codec *codec, sluice_frame_header *hdr, const uint8_t *raw,
		    size_t raw_len, const uint8_t sk[64], sluice_buf *out,
		    uint8_t hash_out[SLUICE_FRAME_HASH_SIZE])
{
	size_t at = out->len;
	sluice_frame_status st = sluice_frame_compress(codec, hdr, raw, raw_len, out);
	if (st != SLUICE_FRAME_OK)
		return st;
	sluice_frame_sign(hdr, sk, out->data + at, hash_out);
	return SLUICE_FRAME_OK;
}

sluice_frame_status
sluice_frame_decompress(sluice_frame_codec *codec, const sluice_frame_header *hdr,
			const uint8_t *payload, sluice_buf *out)
{
	/* The content size in the zstd frame must agree with the signed raw_len. */
	unsigned long long content = ZSTD_getFrameContentSize(payload, hdr->payload_len);
	if (content != (unsigned long long)hdr->raw_len)
		return SLUICE_FRAME_E_DECOMPRESS;
	/* Exactly one zstd frame: no trailing or skippable frames after it. */
	size_t framed = ZSTD_findFrameCompressedSize(payload, hdr->payload_len);
	if (ZSTD_isError(framed) || framed != hdr->payload_len)
		return SLUICE_FRAME_E_DECOMPRESS;
	sluice_buf_reset(out);
	sluice_buf_reserve(out, hdr->raw_len ? hdr->raw_len : 1);
	size_t n = ZSTD_decompressDCtx(codec->dctx, out->data, hdr->raw_len, payload,
				       hdr->payload_len);
	if (ZSTD_isError(n) || n != hdr->raw_len)
		return SLUICE_FRAME_E_DECOMPRESS;
	out->len = n;
	return SLUICE_FRAME_OK;
}
