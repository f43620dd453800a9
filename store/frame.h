/* Frame codec: header layout, zstd payload, BLAKE2b hashes and Ed25519 signature. */
#ifndef SLUICE_STORE_FRAME_H
#define SLUICE_STORE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SLUICE_FRAME_MAGIC          "SLUF"
#define SLUICE_FRAME_VERSION        1
#define SLUICE_FRAME_SCHEMA_VERSION 1 /* proto/sluice.proto package sluice.v1 */
#define SLUICE_FRAME_CODEC_ZSTD     1
#define SLUICE_FRAME_SIGNED_SIZE    144 /* header bytes covered by the signature */
#define SLUICE_FRAME_HEADER_SIZE    208 /* signed part + 64-byte signature */
#define SLUICE_FRAME_HASH_SIZE      32
#define SLUICE_FRAME_KEY_ID_SIZE    8
#define SLUICE_FRAME_MAX_RAW        ((uint32_t)1 << 30) /* decompressed payload limit */
#define SLUICE_FRAME_MAX_PAYLOAD    ((uint32_t)1 << 30) /* compressed payload limit */
#define SLUICE_FRAME_MAX_RECORDS    ((uint32_t)1 << 20) /* records in one frame */
/* Memory the decoded records of one frame may take (docs/format.md §11). */
#define SLUICE_FRAME_MAX_DECODED ((size_t)3 << 29)

/* Frame flags. Readers reject any other bit. */
#define SLUICE_FRAME_FIRST       0x0001 /* first frame of its segment */
#define SLUICE_FRAME_CONT        0x0002 /* starts inside transaction txseq_start */
#define SLUICE_FRAME_OPEN        0x0004 /* ends inside transaction txseq_end */
#define SLUICE_FRAME_SEAL        0x0008 /* last frame of its segment; carries no records */
#define SLUICE_FRAME_KNOWN_FLAGS 0x000F

/* The decoded header of a frame: a plain value. */
typedef struct sluice_frame_header {
	uint16_t version;
	uint16_t flags;
	uint64_t stream_id;   /* first 8 bytes of BLAKE2b-256 of the stream name */
	uint64_t frame_seq;   /* 0 for the first frame of the stream, +1 per frame */
	uint64_t txseq_start; /* txseq open or next to begin at the frame start */
	uint64_t txseq_end;   /* txseq open or next to begin at the frame end */
	int64_t time_min;     /* commit times (µs since the epoch) of the frame's */
	int64_t time_max;     /* transactions; 0 when it holds none */
	uint32_t payload_len; /* compressed bytes after the header */
	uint32_t raw_len;     /* decompressed bytes */
	uint32_t record_count;
	uint8_t codec;
	uint8_t schema_version;
	uint8_t key_id[SLUICE_FRAME_KEY_ID_SIZE];
	uint8_t payload_hash[SLUICE_FRAME_HASH_SIZE]; /* BLAKE2b-256 of the compressed payload */
	uint8_t prev_hash[SLUICE_FRAME_HASH_SIZE];    /* hash of the previous frame's header */
	uint8_t signature[64];                        /* Ed25519 over the first 144 bytes */
} sluice_frame_header;

typedef enum sluice_frame_status {
	SLUICE_FRAME_OK = 0,
	SLUICE_FRAME_E_SHORT = -1,       /* fewer bytes than the frame needs */
	SLUICE_FRAME_E_MAGIC = -2,       /* not a sluice frame */
	SLUICE_FRAME_E_VERSION = -3,     /* unsupported frame or schema version */
	SLUICE_FRAME_E_FLAGS = -4,       /* unknown or contradictory flags */
	SLUICE_FRAME_E_RESERVED = -5,    /* reserved header bytes not zero */
	SLUICE_FRAME_E_LENGTH = -6,      /* lengths above limits or inconsistent */
	SLUICE_FRAME_E_CODEC = -7,       /* unknown payload codec */
	SLUICE_FRAME_E_SIGNATURE = -8,   /* Ed25519 signature does not verify */
	SLUICE_FRAME_E_HASH = -9,        /* payload does not match its hash */
	SLUICE_FRAME_E_DECOMPRESS = -10, /* zstd failed or size differs from raw_len */
	SLUICE_FRAME_E_COMPRESS = -11,   /* zstd failed while writing */
} sluice_frame_status;

const char *sluice_frame_strerror(sluice_frame_status status);

/*
 * sluice_frame_parse_header decodes and structurally checks the fixed header
 * at data[0..len). It does not authenticate: call sluice_frame_verify next.
 * @return SLUICE_FRAME_OK, SLUICE_FRAME_E_SHORT if len < header size, or an error.
 */
sluice_frame_status sluice_frame_parse_header(const uint8_t *data, size_t len,
					      sluice_frame_header *out);

/*
 * sluice_frame_verify checks the signature of the header bytes with the
 * public key pk, then the payload hash. Call it before decompressing.
 */
sluice_frame_status sluice_frame_verify(const uint8_t header_bytes[SLUICE_FRAME_HEADER_SIZE],
					const sluice_frame_header *hdr, const uint8_t pk[32],
					const uint8_t *payload);

/* sluice_frame_verify_signature checks only the header's Ed25519 signature. */
sluice_frame_status
sluice_frame_verify_signature(const uint8_t header_bytes[SLUICE_FRAME_HEADER_SIZE],
			      const uint8_t pk[32]);

/* sluice_frame_hash computes the chain hash of a frame: BLAKE2b-256 of its header. */
void sluice_frame_hash(const uint8_t header_bytes[SLUICE_FRAME_HEADER_SIZE],
		       uint8_t out[SLUICE_FRAME_HASH_SIZE]);

/* sluice_frame_stream_id derives the 64-bit stream id from a stream name. */
uint64_t sluice_frame_stream_id(const char *stream);

/* sluice_frame_genesis gives the prev_hash of a stream's first frame. */
void sluice_frame_genesis(const char *stream, uint8_t out[SLUICE_FRAME_HASH_SIZE]);

typedef struct sluice_frame_codec sluice_frame_codec;

/* sluice_frame_codec_create makes zstd contexts for one thread; level is zstd's. */
sluice_frame_codec *sluice_frame_codec_create(int level);
/* sluice_frame_codec_free releases it; NULL is a no-op. */
void sluice_frame_codec_free(sluice_frame_codec *codec);

/*
 * sluice_frame_encode compresses raw[0..raw_len), fills payload_len, raw_len,
 * codec, payload_hash and signature of *hdr (the caller sets the rest), and
 * appends header and payload to out. sk is the 64-byte Ed25519 secret key.
 * hash_out receives the new frame's chain hash.
 */
sluice_frame_status sluice_frame_encode(sluice_frame_codec *codec, sluice_frame_header *hdr,
					const uint8_t *raw, size_t raw_len, const uint8_t sk[64],
					sluice_buf *out, uint8_t hash_out[SLUICE_FRAME_HASH_SIZE]);

/*
 * sluice_frame_encode in two steps, so that frames can be compressed in
 * parallel and then chained and signed in order. sluice_frame_compress
 * appends to out room for the header (zeros) and the compressed payload of
 * raw[0..raw_len), and fills payload_len, raw_len, codec and payload_hash of
 * *hdr. sluice_frame_sign lays out the complete *hdr (the caller set the
 * rest) into header, signs it with sk and gives the frame's chain hash.
 */
sluice_frame_status sluice_frame_compress(sluice_frame_codec *codec, sluice_frame_header *hdr,
					  const uint8_t *raw, size_t raw_len, sluice_buf *out);
void sluice_frame_sign(sluice_frame_header *hdr, const uint8_t sk[64],
		       uint8_t header[SLUICE_FRAME_HEADER_SIZE],
		       uint8_t hash_out[SLUICE_FRAME_HASH_SIZE]);

/* sluice_frame_encoded_bound: the most bytes sluice_frame_encode appends for raw_len bytes. */
size_t sluice_frame_encoded_bound(size_t raw_len);

/*
 * sluice_frame_decompress decompresses an authenticated payload into out
 * (replacing its contents). Refuses sizes other than hdr->raw_len.
 */
sluice_frame_status sluice_frame_decompress(sluice_frame_codec *codec,
					    const sluice_frame_header *hdr, const uint8_t *payload,
					    sluice_buf *out);

#endif
