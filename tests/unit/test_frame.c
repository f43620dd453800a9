/* Frame codec: header layout, rejection of malformed headers, signature and hash checks. */
#include "testutil.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Byte offsets of header fields (store/frame.c, docs/format.md). */
enum {
	OFF_VERSION = 4,
	OFF_FLAGS = 6,
	OFF_FRAME_SEQ = 16,
	OFF_TXSEQ_START = 24,
	OFF_TXSEQ_END = 32,
	OFF_PAYLOAD_LEN = 56,
	OFF_RAW_LEN = 60,
	OFF_RECORD_COUNT = 64,
	OFF_CODEC = 68,
	OFF_SCHEMA = 69,
	OFF_RESERVED = 70,
	OFF_KEY_ID = 72,
	OFF_PAYLOAD_HASH = 80,
	OFF_PREV_HASH = 112,
	OFF_SIGNATURE = 144,
};

typedef struct frame_fixture {
	char *dir;
	tu_keypair a, b;
	sluice_frame_codec *codec;
} frame_fixture;

static int
frame_setup(void **state)
{
	frame_fixture *f = calloc(1, sizeof(*f));
	f->dir = tu_mkdtemp("frame");
	tu_keypair_make(&f->a, f->dir, "a");
	tu_keypair_make(&f->b, f->dir, "b");
	f->codec = sluice_frame_codec_create(3);
	assert_non_null(f->codec);
	*state = f;
	return 0;
}

static int
frame_teardown(void **state)
{
	frame_fixture *f = *state;
	sluice_frame_codec_free(f->codec);
	tu_keypair_free(&f->a);
	tu_keypair_free(&f->b);
	tu_rmrf(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

/* A header with every caller-set field holding a distinct value. */
static sluice_frame_header
sample_header(const frame_fixture *f, uint16_t flags)
{
	sluice_frame_header h;
	memset(&h, 0, sizeof(h));
	h.flags = flags;
	h.stream_id = sluice_frame_stream_id("orders");
	h.frame_seq = 0x0102030405060708ull;
	h.txseq_start = 41;
	h.txseq_end = 44;
	h.time_min = -5; /* before the epoch: signed fields must survive */
	h.time_max = 1700000000123456ll;
	h.record_count = 7;
	memcpy(h.key_id, sluice_key_id(f->a.key), SLUICE_FRAME_KEY_ID_SIZE);
	for (int i = 0; i < SLUICE_FRAME_HASH_SIZE; i++)
		h.prev_hash[i] = (uint8_t)(0xA0 + i);
	return h;
}

/* encode_sample encodes a frame with raw payload into out; returns the header used. */
static sluice_frame_header
encode_sample(frame_fixture *f, const uint8_t *raw, size_t raw_len, uint16_t flags,
	      uint32_t record_count, sluice_buf *out)
{
	sluice_frame_header h = sample_header(f, flags);
	h.record_count = record_count;
	uint8_t hash[SLUICE_FRAME_HASH_SIZE];
	sluice_buf_reset(out);
	assert_int_equal(sluice_frame_encode(f->codec, &h, raw, raw_len,
					     sluice_key_secret(f->a.key), out, hash),
			 SLUICE_FRAME_OK);
	assert_int_equal(out->len, SLUICE_FRAME_HEADER_SIZE + h.payload_len);
	uint8_t again[SLUICE_FRAME_HASH_SIZE];
	sluice_frame_hash(out->data, again);
	assert_memory_equal(hash, again, SLUICE_FRAME_HASH_SIZE);
	return h;
}

static void
test_frame_round_trip(void **state)
{
	frame_fixture *f = *state;
	/* Compressible text with embedded zero bytes, then incompressible bytes. */
	size_t raw_len = 20000;
	uint8_t *raw = malloc(raw_len);
	for (size_t i = 0; i < 10000; i++)
		raw[i] = (i % 17 == 0) ? 0 : (uint8_t)("hello frame codec "[i % 18]);
	uint64_t seed = 7;
	tu_rand_bytes(&seed, raw + 10000, raw_len - 10000);

	sluice_buf out = {0};
	sluice_frame_header h =
		encode_sample(f, raw, raw_len, SLUICE_FRAME_FIRST | SLUICE_FRAME_OPEN, 7, &out);
	assert_memory_equal(out.data, SLUICE_FRAME_MAGIC, 4);

	sluice_frame_header p;
	memset(&p, 0xEE, sizeof(p));
	assert_int_equal(sluice_frame_parse_header(out.data, out.len, &p), SLUICE_FRAME_OK);
	assert_int_equal(p.version, SLUICE_FRAME_VERSION);
	assert_int_equal(p.flags, SLUICE_FRAME_FIRST | SLUICE_FRAME_OPEN);
	assert_true(p.stream_id == h.stream_id);
	assert_true(p.frame_seq == 0x0102030405060708ull);
	assert_int_equal(p.txseq_start, 41);
	assert_int_equal(p.txseq_end, 44);
	assert_true(p.time_min == -5);
	assert_true(p.time_max == 1700000000123456ll);
	assert_int_equal(p.payload_len, h.payload_len);
	assert_int_equal(p.raw_len, raw_len);
	assert_int_equal(p.record_count, 7);
	assert_int_equal(p.codec, SLUICE_FRAME_CODEC_ZSTD);
	assert_int_equal(p.schema_version, SLUICE_FRAME_SCHEMA_VERSION);
	assert_memory_equal(p.key_id, sluice_key_id(f->a.key), SLUICE_FRAME_KEY_ID_SIZE);
	assert_memory_equal(p.payload_hash, h.payload_hash, SLUICE_FRAME_HASH_SIZE);
	assert_memory_equal(p.prev_hash, h.prev_hash, SLUICE_FRAME_HASH_SIZE);
	assert_memory_equal(p.signature, h.signature, 64);
	assert_memory_equal(p.signature, out.data + OFF_SIGNATURE, 64);

	const uint8_t *payload = out.data + SLUICE_FRAME_HEADER_SIZE;
	assert_int_equal(sluice_frame_verify(out.data, &p, sluice_key_public(f->a.key), payload),
			 SLUICE_FRAME_OK);
	assert_int_equal(sluice_frame_verify_signature(out.data, sluice_key_public(f->a.key)),
			 SLUICE_FRAME_OK);
	sluice_buf dec = {0};
	sluice_buf_append(&dec, "junk", 4); /* replaced, not appended to */
	assert_int_equal(sluice_frame_decompress(f->codec, &p, payload, &dec), SLUICE_FRAME_OK);
	assert_int_equal(dec.len, raw_len);
	assert_memory_equal(dec.data, raw, raw_len);

	/* A second codec (as a reader would have) decodes it too. */
	sluice_frame_codec *other = sluice_frame_codec_create(1);
	assert_int_equal(sluice_frame_decompress(other, &p, payload, &dec), SLUICE_FRAME_OK);
	assert_memory_equal(dec.data, raw, raw_len);
	sluice_frame_codec_free(other);

	/* Short input is E_SHORT at every length below the header size. */
	for (size_t len = 0; len < SLUICE_FRAME_HEADER_SIZE; len += 13)
		assert_int_equal(sluice_frame_parse_header(out.data, len, &p),
				 SLUICE_FRAME_E_SHORT);
	assert_int_equal(sluice_frame_parse_header(out.data, SLUICE_FRAME_HEADER_SIZE - 1, &p),
			 SLUICE_FRAME_E_SHORT);

	sluice_buf_free(&dec);
	sluice_buf_free(&out);
	free(raw);
}

static void
test_frame_empty_payload(void **state)
{
	frame_fixture *f = *state;
	sluice_buf out = {0};
	sluice_frame_header h = encode_sample(f, NULL, 0, SLUICE_FRAME_SEAL, 0, &out);
	assert_true(h.payload_len > 0);
	sluice_frame_header p;
	assert_int_equal(sluice_frame_parse_header(out.data, out.len, &p), SLUICE_FRAME_OK);
	assert_int_equal(p.raw_len, 0);
	assert_int_equal(p.flags, SLUICE_FRAME_SEAL);
	const uint8_t *payload = out.data + SLUICE_FRAME_HEADER_SIZE;
	assert_int_equal(sluice_frame_verify(out.data, &p, sluice_key_public(f->a.key), payload),
			 SLUICE_FRAME_OK);
	sluice_buf dec = {0};
	assert_int_equal(sluice_frame_decompress(f->codec, &p, payload, &dec), SLUICE_FRAME_OK);
	assert_int_equal(dec.len, 0);
	sluice_buf_free(&dec);
	sluice_buf_free(&out);
}

/* parse_mutated parses a copy of the frame header with one byte set. */
static sluice_frame_status
parse_mutated(const sluice_buf *frame, size_t off, uint8_t value)
{
	uint8_t copy[SLUICE_FRAME_HEADER_SIZE];
	memcpy(copy, frame->data, sizeof(copy));
	copy[off] = value;
	sluice_frame_header p;
	return sluice_frame_parse_header(copy, sizeof(copy), &p);
}

static void
test_frame_rejects_bad_headers(void **state)
{
	frame_fixture *f = *state;
	const uint8_t raw[] = "some records";
	sluice_buf out = {0};
	encode_sample(f, raw, sizeof(raw), SLUICE_FRAME_CONT, 1, &out);
	const uint8_t *d = out.data;

	/* Magic. */
	assert_int_equal(parse_mutated(&out, 0, 'X'), SLUICE_FRAME_E_MAGIC);
	assert_int_equal(parse_mutated(&out, 3, (uint8_t)(d[3] ^ 0x01)), SLUICE_FRAME_E_MAGIC);
	/* Frame version and schema version. */
	assert_int_equal(parse_mutated(&out, OFF_VERSION, 2), SLUICE_FRAME_E_VERSION);
	assert_int_equal(parse_mutated(&out, OFF_VERSION, 0), SLUICE_FRAME_E_VERSION);
	assert_int_equal(parse_mutated(&out, OFF_VERSION + 1, 1), SLUICE_FRAME_E_VERSION);
	assert_int_equal(parse_mutated(&out, OFF_SCHEMA, 2), SLUICE_FRAME_E_VERSION);
	/* Every unknown flag bit, one at a time. */
	for (int bit = 4; bit < 16; bit++) {
		uint16_t flags = (uint16_t)(SLUICE_FRAME_CONT | (1u << bit));
		uint8_t copy[SLUICE_FRAME_HEADER_SIZE];
		memcpy(copy, d, sizeof(copy));
		copy[OFF_FLAGS] = (uint8_t)flags;
		copy[OFF_FLAGS + 1] = (uint8_t)(flags >> 8);
		sluice_frame_header p;
		assert_int_equal(sluice_frame_parse_header(copy, sizeof(copy), &p),
				 SLUICE_FRAME_E_FLAGS);
	}
	/* Contradictory flags: a seal that ends inside a transaction or holds records. */
	assert_int_equal(parse_mutated(&out, OFF_FLAGS, SLUICE_FRAME_SEAL | SLUICE_FRAME_OPEN),
			 SLUICE_FRAME_E_FLAGS);
	assert_int_equal(parse_mutated(&out, OFF_FLAGS, SLUICE_FRAME_SEAL), SLUICE_FRAME_E_FLAGS);
	/* Reserved bytes. */
	assert_int_equal(parse_mutated(&out, OFF_RESERVED, 1), SLUICE_FRAME_E_RESERVED);
	assert_int_equal(parse_mutated(&out, OFF_RESERVED + 1, 0x80), SLUICE_FRAME_E_RESERVED);
	/* Codec. */
	assert_int_equal(parse_mutated(&out, OFF_CODEC, 0), SLUICE_FRAME_E_CODEC);
	assert_int_equal(parse_mutated(&out, OFF_CODEC, 2), SLUICE_FRAME_E_CODEC);
	/* Lengths: zero payload, payload above the limit, txseq_end < txseq_start. */
	{
		uint8_t copy[SLUICE_FRAME_HEADER_SIZE];
		sluice_frame_header p;
		memcpy(copy, d, sizeof(copy));
		memset(copy + OFF_PAYLOAD_LEN, 0, 4);
		assert_int_equal(sluice_frame_parse_header(copy, sizeof(copy), &p),
				 SLUICE_FRAME_E_LENGTH);
		memcpy(copy, d, sizeof(copy));
		copy[OFF_PAYLOAD_LEN + 3] = 0x40; /* 1 GiB + small */
		copy[OFF_PAYLOAD_LEN] = 1;
		assert_int_equal(sluice_frame_parse_header(copy, sizeof(copy), &p),
				 SLUICE_FRAME_E_LENGTH);
		memcpy(copy, d, sizeof(copy));
		copy[OFF_RAW_LEN + 3] = 0x41;
		assert_int_equal(sluice_frame_parse_header(copy, sizeof(copy), &p),
				 SLUICE_FRAME_E_LENGTH);
		memcpy(copy, d, sizeof(copy));
		memset(copy + OFF_TXSEQ_END, 0, 8);
		copy[OFF_TXSEQ_END] = 40; /* start is 41 */
		assert_int_equal(sluice_frame_parse_header(copy, sizeof(copy), &p),
				 SLUICE_FRAME_E_LENGTH);
		memcpy(copy, d, sizeof(copy));
		memset(copy + OFF_TXSEQ_START, 0, 8); /* txseq 0 does not exist */
		assert_int_equal(sluice_frame_parse_header(copy, sizeof(copy), &p),
				 SLUICE_FRAME_E_LENGTH);
		memcpy(copy, d, sizeof(copy));
		memset(copy + OFF_RECORD_COUNT, 0xFF, 4); /* more records than raw bytes */
		assert_int_equal(sluice_frame_parse_header(copy, sizeof(copy), &p),
				 SLUICE_FRAME_E_LENGTH);
	}
	/* The untouched header still parses. */
	sluice_frame_header p;
	assert_int_equal(sluice_frame_parse_header(d, out.len, &p), SLUICE_FRAME_OK);
	sluice_buf_free(&out);
}

static void
test_frame_signature_and_hash(void **state)
{
	frame_fixture *f = *state;
	uint8_t raw[3000];
	uint64_t seed = 99;
	tu_rand_bytes(&seed, raw, sizeof(raw));
	sluice_buf out = {0};
	encode_sample(f, raw, sizeof(raw), 0, 3, &out);
	sluice_frame_header p;
	assert_int_equal(sluice_frame_parse_header(out.data, out.len, &p), SLUICE_FRAME_OK);
	uint8_t *payload = out.data + SLUICE_FRAME_HEADER_SIZE;
	const uint8_t *pka = sluice_key_public(f->a.key);
	const uint8_t *pkb = sluice_key_public(f->b.key);

	/* Wrong public key. */
	assert_int_equal(sluice_frame_verify(out.data, &p, pkb, payload), SLUICE_FRAME_E_SIGNATURE);
	assert_int_equal(sluice_frame_verify_signature(out.data, pkb), SLUICE_FRAME_E_SIGNATURE);
	assert_int_equal(sluice_frame_verify(out.data, &p, pka, payload), SLUICE_FRAME_OK);

	/* A flipped payload byte anywhere: hash mismatch (signature still fine). */
	size_t offs[] = {0, 1, p.payload_len / 2, p.payload_len - 1};
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		payload[offs[i]] ^= 0x01;
		assert_int_equal(sluice_frame_verify(out.data, &p, pka, payload),
				 SLUICE_FRAME_E_HASH);
		payload[offs[i]] ^= 0x01;
		assert_int_equal(sluice_frame_verify(out.data, &p, pka, payload), SLUICE_FRAME_OK);
	}

	/* A flipped bit in any signed header byte or in the signature: signature fails. */
	size_t hoffs[] = {OFF_FLAGS,          OFF_FRAME_SEQ,        OFF_TXSEQ_START,
			  OFF_TXSEQ_END,      OFF_PAYLOAD_LEN,      OFF_RECORD_COUNT,
			  OFF_KEY_ID,         OFF_PAYLOAD_HASH + 5, OFF_PREV_HASH,
			  OFF_PREV_HASH + 31, OFF_SIGNATURE,        OFF_SIGNATURE + 63};
	for (size_t i = 0; i < sizeof(hoffs) / sizeof(hoffs[0]); i++) {
		out.data[hoffs[i]] ^= 0x01;
		assert_int_equal(sluice_frame_verify_signature(out.data, pka),
				 SLUICE_FRAME_E_SIGNATURE);
		assert_int_equal(sluice_frame_verify(out.data, &p, pka, payload),
				 SLUICE_FRAME_E_SIGNATURE);
		out.data[hoffs[i]] ^= 0x01;
	}
	assert_int_equal(sluice_frame_verify(out.data, &p, pka, payload), SLUICE_FRAME_OK);

	/* Decompression refuses a raw_len other than the real size. */
	sluice_buf dec = {0};
	sluice_frame_header q = p;
	q.raw_len = p.raw_len - 1;
	assert_int_equal(sluice_frame_decompress(f->codec, &q, payload, &dec),
			 SLUICE_FRAME_E_DECOMPRESS);
	q.raw_len = p.raw_len + 1;
	assert_int_equal(sluice_frame_decompress(f->codec, &q, payload, &dec),
			 SLUICE_FRAME_E_DECOMPRESS);
	assert_int_equal(sluice_frame_decompress(f->codec, &p, payload, &dec), SLUICE_FRAME_OK);
	assert_memory_equal(dec.data, raw, sizeof(raw));
	sluice_buf_free(&dec);
	sluice_buf_free(&out);
}

static void
test_frame_ids_and_chain_hash(void **state)
{
	(void)state;
	assert_true(sluice_frame_stream_id("a") == sluice_frame_stream_id("a"));
	assert_true(sluice_frame_stream_id("a") != sluice_frame_stream_id("b"));
	uint8_t g1[32], g2[32], g3[32];
	sluice_frame_genesis("orders", g1);
	sluice_frame_genesis("orders", g2);
	sluice_frame_genesis("orders2", g3);
	assert_memory_equal(g1, g2, 32);
	assert_memory_not_equal(g1, g3, 32);

	/* The chain hash covers the whole header, signature included. */
	uint8_t hdr[SLUICE_FRAME_HEADER_SIZE], h1[32], h2[32];
	memset(hdr, 0x11, sizeof(hdr));
	sluice_frame_hash(hdr, h1);
	hdr[SLUICE_FRAME_HEADER_SIZE - 1] ^= 1;
	sluice_frame_hash(hdr, h2);
	assert_memory_not_equal(h1, h2, 32);
}

static void
test_keys_files(void **state)
{
	frame_fixture *f = *state;
	/* Ids differ between keys and match the public key. */
	assert_string_not_equal(f->a.id_hex, f->b.id_hex);
	uint8_t id[SLUICE_FRAME_KEY_ID_SIZE];
	sluice_keys_id(sluice_key_public(f->a.key), id);
	assert_memory_equal(id, sluice_key_id(f->a.key), sizeof(id));

	/* No overwrite without force. */
	char prefix[TU_PATH_MAX], hex[SLUICE_KEY_ID_HEX_SIZE];
	tu_path(prefix, "%s/a", f->dir);
	assert_false(sluice_keys_generate(prefix, false, hex));
	sluice_key *k = NULL;
	assert_true(sluice_key_load(f->a.keypath, &k));
	assert_memory_equal(sluice_key_public(k), sluice_key_public(f->a.key), 32);
	sluice_key_free(k);

	/* A secret key readable by others is refused. */
	assert_int_equal(tu_file_mode(f->a.keypath), 0600);
	assert_int_equal(chmod(f->a.keypath, 0640), 0);
	k = NULL;
	assert_false(sluice_key_load(f->a.keypath, &k));
	assert_int_equal(chmod(f->a.keypath, 0600), 0);

	/* A public key file is not a secret key file and vice versa. */
	assert_false(sluice_key_load(f->a.pubpath, &k));
	sluice_trust *t = sluice_trust_create();
	assert_false(sluice_trust_add_file(t, f->a.keypath));
	assert_int_equal(sluice_trust_count(t), 0);
	assert_true(sluice_trust_add_file(t, f->a.pubpath));
	assert_int_equal(sluice_trust_count(t), 1);
	const uint8_t *pk = sluice_trust_find(t, sluice_key_id(f->a.key));
	assert_non_null(pk);
	assert_memory_equal(pk, sluice_key_public(f->a.key), 32);
	assert_null(sluice_trust_find(t, sluice_key_id(f->b.key)));
	sluice_trust_free(t);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	tu_setup_process();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_round_trip),
		cmocka_unit_test(test_frame_empty_payload),
		cmocka_unit_test(test_frame_rejects_bad_headers),
		cmocka_unit_test(test_frame_signature_and_hash),
		cmocka_unit_test(test_frame_ids_and_chain_hash),
		cmocka_unit_test(test_keys_files),
	};
	return cmocka_run_group_tests(tests, frame_setup, frame_teardown);
}
