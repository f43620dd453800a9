/*
 * Fuzz target for the untrusted-bytes decoders of the segment format: frame
 * header parsing, signature and hash checks, the segment scanner, the chain
 * checks, zstd decompression and the record decoder. fuzz_common.h describes
 * the input layout of each mode.
 *
 * Besides "does not crash" the target checks properties and aborts when one
 * fails:
 *  - a header that parses lays out to exactly the bytes it was parsed from;
 *  - a frame signed with the test key survives encode -> parse -> verify ->
 *    decompress unchanged, and the scanner authenticates every such frame;
 *  - a decoded record packs to the same bytes through the one-pass encoder
 *    and through protobuf-c, and decodes and packs again to the same bytes;
 *  - the scanner only moves forward on a frame and never past the segment.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "arena.h"
#include "backend.h"
#include "buf.h"
#include "chain.h"
#include "frame.h"
#include "fuzz_common.h"
#include "keys.h"
#include "log.h"
#include "records.h"
#include "scan.h"

/* Byte offsets of the header fields, as store/frame.c and docs/format.md lay them out. */
enum {
	OFF_MAGIC = 0,
	OFF_VERSION = 4,
	OFF_FLAGS = 6,
	OFF_STREAM_ID = 8,
	OFF_FRAME_SEQ = 16,
	OFF_TXSEQ_START = 24,
	OFF_TXSEQ_END = 32,
	OFF_TIME_MIN = 40,
	OFF_TIME_MAX = 48,
	OFF_PAYLOAD_LEN = 56,
	OFF_RAW_LEN = 60,
	OFF_RECORD_COUNT = 64,
	OFF_CODEC = 68,
	OFF_SCHEMA_VERSION = 69,
	OFF_RESERVED = 70,
	OFF_KEY_ID = 72,
	OFF_PAYLOAD_HASH = 80,
	OFF_PREV_HASH = 112,
	OFF_SIGNATURE = 144,
};

/* Process-wide state, made once: fuzzing runs one input after another. */
static struct {
	bool ready;
	bool verbose; /* FUZZ_FRAME_VERBOSE set: describe what each input reached */
	bool strict;  /* FUZZ_FRAME_STRICT set: no exemption for a known protobuf-c quirk */
	uint8_t pk[32];
	uint8_t sk[64];
	uint8_t key_id[SLUICE_FRAME_KEY_ID_SIZE];
	uint8_t pk2[32]; /* the successor key (fuzz_key2_seed) */
	uint8_t sk2[64];
	uint8_t key_id2[SLUICE_FRAME_KEY_ID_SIZE];
	uint64_t stream_id;
	uint8_t genesis[SLUICE_FRAME_HASH_SIZE];
	sluice_trust *trust;
	sluice_frame_codec *codec;
	sluice_arena *arena;
	sluice_buf raw;   /* decompressed payload */
	sluice_buf seg;   /* segment being built */
	sluice_buf pack1; /* record repacking */
	sluice_buf pack2;
	sluice_buf pack3;
	sluice_store *store;
	sluice_segment *rseg; /* the segment file, read through the backend */
	int wfd;              /* the same file, written directly */
} g;

#define VERBOSE(...)                                                                               \
	do {                                                                                       \
		if (g.verbose)                                                                     \
			fprintf(stderr, __VA_ARGS__);                                              \
	} while (0)

/* fuzz_fail reports a broken property and aborts so that the fuzzer saves the input. */
static void __attribute__((noreturn, format(printf, 1, 2))) fuzz_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("fuzz_frame: property violated: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

static void
put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t
get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* layout_header writes the 208 header bytes of h (signature included) independently of frame.c. */
static void
layout_header(const sluice_frame_header *h, uint8_t out[SLUICE_FRAME_HEADER_SIZE])
{
	memset(out, 0, SLUICE_FRAME_HEADER_SIZE);
	memcpy(out + OFF_MAGIC, SLUICE_FRAME_MAGIC, 4);
	put_le(out + OFF_VERSION, h->version, 2);
	put_le(out + OFF_FLAGS, h->flags, 2);
	put_le(out + OFF_STREAM_ID, h->stream_id, 8);
	put_le(out + OFF_FRAME_SEQ, h->frame_seq, 8);
	put_le(out + OFF_TXSEQ_START, h->txseq_start, 8);
	put_le(out + OFF_TXSEQ_END, h->txseq_end, 8);
	put_le(out + OFF_TIME_MIN, (uint64_t)h->time_min, 8);
	put_le(out + OFF_TIME_MAX, (uint64_t)h->time_max, 8);
	put_le(out + OFF_PAYLOAD_LEN, h->payload_len, 4);
	put_le(out + OFF_RAW_LEN, h->raw_len, 4);
	put_le(out + OFF_RECORD_COUNT, h->record_count, 4);
	out[OFF_CODEC] = h->codec;
	out[OFF_SCHEMA_VERSION] = h->schema_version;
	memcpy(out + OFF_KEY_ID, h->key_id, SLUICE_FRAME_KEY_ID_SIZE);
	memcpy(out + OFF_PAYLOAD_HASH, h->payload_hash, SLUICE_FRAME_HASH_SIZE);
	memcpy(out + OFF_PREV_HASH, h->prev_hash, SLUICE_FRAME_HASH_SIZE);
	memcpy(out + OFF_SIGNATURE, h->signature, 64);
}

/* sign_header signs h with the test key (filling h->signature) and lays it out. */
static void
sign_header(sluice_frame_header *h, uint8_t out[SLUICE_FRAME_HEADER_SIZE])
{
	layout_header(h, out);
	crypto_sign_ed25519_detached(h->signature, NULL, out, SLUICE_FRAME_SIGNED_SIZE, g.sk);
	memcpy(out + OFF_SIGNATURE, h->signature, 64);
}

/* check_layout: a header that parsed must lay out to the very bytes it came from. */
static void
check_layout(const uint8_t *bytes, const sluice_frame_header *h, const char *what)
{
	uint8_t again[SLUICE_FRAME_HEADER_SIZE];
	layout_header(h, again);
	if (memcmp(again, bytes, SLUICE_FRAME_HEADER_SIZE) != 0)
		fuzz_fail("%s: parsed header does not lay out to its own bytes", what);
}

/* self_test checks once that layout_header agrees with sluice_frame_encode. */
static void
self_test(void)
{
	sluice_frame_header h;
	memset(&h, 0, sizeof(h));
	h.flags = SLUICE_FRAME_FIRST;
	h.stream_id = g.stream_id;
	h.txseq_start = 1;
	h.txseq_end = 1;
	memcpy(h.key_id, g.key_id, sizeof(h.key_id));
	memcpy(h.prev_hash, g.genesis, sizeof(h.prev_hash));
	sluice_buf out = {0};
	uint8_t hash[SLUICE_FRAME_HASH_SIZE];
	if (sluice_frame_encode(g.codec, &h, (const uint8_t *)"", 0, g.sk, &out, hash) !=
	    SLUICE_FRAME_OK)
		fuzz_fail("self test: encoding an empty frame failed");
	uint8_t mine[SLUICE_FRAME_HEADER_SIZE];
	sluice_frame_header copy = h;
	sign_header(&copy, mine);
	if (out.len < SLUICE_FRAME_HEADER_SIZE || memcmp(mine, out.data, sizeof(mine)) != 0)
		fuzz_fail("self test: the target's header layout differs from frame.c's");
	sluice_buf_free(&out);
}

/* setup_segment_file makes one segment file reached through the file backend, then unlinks it. */
static void
setup_segment_file(void)
{
	const char *base = "/dev/shm";
	if (access(base, W_OK | X_OK) != 0) {
		base = getenv("TMPDIR");
		if (base == NULL || base[0] == '\0')
			base = "/tmp";
	}
	char dir[PATH_MAX];
	if (snprintf(dir, sizeof(dir), "%s/sluice-fuzz-XXXXXX", base) >= (int)sizeof(dir) ||
	    mkdtemp(dir) == NULL)
		fuzz_fail("mkdtemp in %s: %s", base, strerror(errno));
	if (!sluice_store_open(dir, &g.store))
		fuzz_fail("could not open the store %s", dir);
	sluice_segment *w = NULL;
	if (!sluice_store_segment_open(g.store, FUZZ_STREAM, 1, true, true, &w))
		fuzz_fail("could not create the segment");
	sluice_segment_close(w);
	if (!sluice_store_segment_open(g.store, FUZZ_STREAM, 1, false, false, &g.rseg))
		fuzz_fail("could not open the segment");
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(1, name);
	char sdir[PATH_MAX + 16], path[PATH_MAX + 64];
	snprintf(sdir, sizeof(sdir), "%s/%s", dir, FUZZ_STREAM);
	snprintf(path, sizeof(path), "%s/%s", sdir, name);
	g.wfd = open(path, O_RDWR | O_CLOEXEC);
	if (g.wfd < 0)
		fuzz_fail("open %s: %s", path, strerror(errno));
	/* Both descriptors keep the file; nothing is left behind when the process ends. */
	if (unlink(path) != 0 || rmdir(sdir) != 0 || rmdir(dir) != 0)
		fuzz_fail("could not remove the temporary store %s: %s", dir, strerror(errno));
}

static void
setup(void)
{
	if (sodium_init() < 0)
		abort();
	g.verbose = getenv("FUZZ_FRAME_VERBOSE") != NULL;
	g.strict = getenv("FUZZ_FRAME_STRICT") != NULL;
	/* Only the file backend logs (on I/O errors); keep the rest quiet. */
	sluice_log_setup(SLUICE_LOG_ERROR, SLUICE_LOG_TEXT);
	crypto_sign_ed25519_seed_keypair(g.pk, g.sk, fuzz_key_seed);
	sluice_keys_id(g.pk, g.key_id);
	crypto_sign_ed25519_seed_keypair(g.pk2, g.sk2, fuzz_key2_seed);
	sluice_keys_id(g.pk2, g.key_id2);
	g.trust = sluice_trust_create();
	sluice_trust_add(g.trust, g.pk);
	g.stream_id = sluice_frame_stream_id(FUZZ_STREAM);
	sluice_frame_genesis(FUZZ_STREAM, g.genesis);
	g.codec = sluice_frame_codec_create(1);
	if (g.codec == NULL)
		abort();
	g.arena = sluice_arena_create();
	setup_segment_file();
	self_test();
	g.ready = true;
}

/* write_segment replaces the content of the segment file. */
static void
write_segment(const uint8_t *data, size_t len)
{
	if (ftruncate(g.wfd, 0) != 0)
		fuzz_fail("ftruncate: %s", strerror(errno));
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(g.wfd, data + done, len - done, (off_t)done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fuzz_fail("pwrite: %s", strerror(errno));
		done += (size_t)n;
	}
}

/*
 * msg_has_unknown tells whether m or a message inside it kept fields unknown
 * to schema v1 (protobuf-c keeps them and packs them again).
 */
static bool
msg_has_unknown(const ProtobufCMessage *m)
{
	if (m == NULL)
		return false;
	if (m->n_unknown_fields > 0)
		return true;
	const ProtobufCMessageDescriptor *d = m->descriptor;
	const char *base = (const char *)m;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(const void *)(base + f->quantifier_offset) != f->id)
			continue;
		size_t n = 1;
		const void *elems = base + f->offset;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			n = *(const size_t *)(const void *)(base + f->quantifier_offset);
			elems = *(const void *const *)elems;
		}
		for (size_t j = 0; j < n; j++)
			if (msg_has_unknown(((const ProtobufCMessage *const *)elems)[j]))
				return true;
	}
	return false;
}

/* dump_hex shows b under FUZZ_FRAME_VERBOSE, for triage of a failed property. */
static void
dump_hex(const char *label, const uint8_t *p, size_t len)
{
	if (!g.verbose)
		return;
	fprintf(stderr, "  %s (%zu bytes):", label, len);
	for (size_t i = 0; i < len; i++)
		fprintf(stderr, "%s%02x", i % 32 == 0 ? "\n    " : " ", p[i]);
	fputc('\n', stderr);
}

static bool
buf_equal(const sluice_buf *a, const sluice_buf *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/*
 * check_pack compares the one-pass encoder (sluice_records_pack) with
 * protobuf-c (sluice_records_pack_generic) on a decoded record:
 *  - same bytes (the one-pass encoder hands anything unusual to protobuf-c);
 *  - they decode, and pack again to the same bytes;
 *  - protobuf-c packs what they decode to exactly as it packs the record.
 * One exemption, for protobuf-c itself: it keeps some unknown fields it cannot
 * read back (an overlong tag of field number 0 is kept, then packed as a tag
 * it refuses). FUZZ_FRAME_STRICT removes the exemption.
 */
static void
check_pack(const sluice_record *rec)
{
	sluice_buf_reset(&g.pack1);
	sluice_buf_reset(&g.pack2);
	sluice_records_pack(rec, &g.pack1);
	sluice_records_pack_generic(rec, &g.pack2);
	if (!buf_equal(&g.pack1, &g.pack2)) {
		dump_hex("one-pass", g.pack1.data, g.pack1.len);
		dump_hex("protobuf-c", g.pack2.data, g.pack2.len);
		fuzz_fail("records: one-pass and protobuf-c encodings of a %s record differ "
			  "(%zu and %zu bytes)",
			  sluice_records_type_name(rec), g.pack1.len, g.pack2.len);
	}

	size_t pos = 0;
	sluice_record *again = NULL;
	sluice_records_status rs =
		sluice_records_unpack(g.pack1.data, g.pack1.len, &pos, g.arena, &again);
	if (rs != SLUICE_RECORDS_OK && !g.strict && msg_has_unknown(&rec->base))
		return;
	if (rs != SLUICE_RECORDS_OK || pos != g.pack1.len) {
		dump_hex("packed", g.pack1.data, g.pack1.len);
		fuzz_fail("records: a packed %s record does not decode again (%s)",
			  sluice_records_type_name(rec), sluice_records_strerror(rs));
	}
	if (again->body_case != rec->body_case)
		fuzz_fail("records: a repacked record changed its type");
	sluice_buf_reset(&g.pack3);
	sluice_records_pack(again, &g.pack3);
	if (!buf_equal(&g.pack1, &g.pack3))
		fuzz_fail("records: packing a decoded %s record is not stable",
			  sluice_records_type_name(rec));
	sluice_buf_reset(&g.pack3);
	sluice_records_pack_generic(again, &g.pack3);
	if (!buf_equal(&g.pack2, &g.pack3)) {
		dump_hex("protobuf-c", g.pack2.data, g.pack2.len);
		dump_hex("protobuf-c again", g.pack3.data, g.pack3.len);
		fuzz_fail("records: a packed %s record decodes to something else",
			  sluice_records_type_name(rec));
	}
}

typedef struct records_info {
	uint32_t count; /* records decoded before the end or the first error */
	bool complete;  /* every byte decoded into records */
	bool chain_ok;  /* every record passed sluice_chain_record */
	bool have_time;
	int64_t tmin, tmax;
} records_info;

static void
info_time(records_info *info, int64_t t)
{
	if (!info->have_time || t < info->tmin)
		info->tmin = t;
	if (!info->have_time || t > info->tmax)
		info->tmax = t;
	info->have_time = true;
}

/*
 * decode_records decodes all records of raw[0..len) (as a reader does), checks
 * each with chain when not NULL, and describes them in *info.
 */
static void
decode_records(const uint8_t *raw, size_t len, sluice_chain *chain, records_info *info)
{
	memset(info, 0, sizeof(*info));
	info->chain_ok = true;
	sluice_arena_reset(g.arena);
	size_t pos = 0;
	for (;;) {
		size_t before = pos;
		sluice_record *rec = NULL;
		sluice_records_status rs = sluice_records_unpack(raw, len, &pos, g.arena, &rec);
		(void)sluice_records_strerror(rs);
		if (rs == SLUICE_RECORDS_END) {
			if (before < len || pos != before)
				fuzz_fail("records: END before the end of the payload");
			info->complete = true;
			return;
		}
		if (rs != SLUICE_RECORDS_OK) {
			if (pos != before)
				fuzz_fail("records: a failed decode moved the offset");
			return;
		}
		if (pos <= before || pos > len || rec == NULL)
			fuzz_fail("records: offset %zu -> %zu of %zu", before, pos, len);
		info->count++;

		(void)sluice_records_type_name(rec);
		uint32_t relid;
		(void)sluice_records_relation_id(rec, &relid);
		switch (rec->body_case) {
		case SLUICE__V1__RECORD__BODY_BEGIN:
			info_time(info, rec->begin->commit_time_us);
			if (strlen(rec->begin->origin_node) > len)
				fuzz_fail("records: origin_node longer than the payload");
			break;
		case SLUICE__V1__RECORD__BODY_COMMIT:
			info_time(info, rec->commit->commit_time_us);
			break;
		case SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN:
			info_time(info, rec->snapshot_begin->time_us);
			break;
		default:
			break;
		}
		check_pack(rec);
		if (chain != NULL) {
			sluice_chain_status cs = sluice_chain_record(chain, rec);
			(void)sluice_chain_strerror(cs);
			if (cs != SLUICE_CHAIN_OK)
				info->chain_ok = false;
		}
	}
}

/*
 * scan_segment writes data as the segment file and reads it back as a reader
 * does. expect_frames, unless SIZE_MAX, is how many authentic frames it starts
 * with, and expect_status what the scan must stop with after them.
 */
static void
scan_segment(const uint8_t *data, size_t len, bool anchored, size_t expect_frames,
	     sluice_scan_status expect_status)
{
	write_segment(data, len);
	/* Unanchored, the segment is named by what its first header claims. */
	uint64_t segment_first = 1;
	if (!anchored && len >= SLUICE_FRAME_HEADER_SIZE)
		segment_first = get_le64(data + OFF_TXSEQ_START);
	sluice_scan *scan = sluice_scan_create(g.rseg, segment_first, g.trust);
	sluice_chain chain;
	if (anchored)
		sluice_chain_init(&chain, FUZZ_STREAM);
	else
		sluice_chain_init_unanchored(&chain, FUZZ_STREAM);
	sluice_chain_segment_start(&chain);

	size_t frames = 0;
	sluice_scan_status st;
	sluice_scan_frame f;
	for (;;) {
		uint64_t before = sluice_scan_offset(scan);
		st = sluice_scan_next(scan, &chain, &f);
		if (st != SLUICE_SCAN_FRAME) {
			if (sluice_scan_offset(scan) != before || f.offset != before)
				fuzz_fail("scan: offset moved without a frame");
			const char *why = sluice_frame_strerror(f.frame_status);
			VERBOSE("  scan at %llu: status %d (%s)\n", (unsigned long long)before,
				(int)st, why);
			break;
		}
		uint64_t after = sluice_scan_offset(scan);
		if (f.offset != before ||
		    after != before + SLUICE_FRAME_HEADER_SIZE + f.hdr.payload_len || after > len ||
		    f.payload == NULL)
			fuzz_fail("scan: frame at %llu ends at %llu of %zu",
				  (unsigned long long)before, (unsigned long long)after, len);
		if (memcmp(f.header_bytes, data + f.offset, SLUICE_FRAME_HEADER_SIZE) != 0 ||
		    memcmp(f.payload, data + f.offset + SLUICE_FRAME_HEADER_SIZE,
			   f.hdr.payload_len) != 0)
			fuzz_fail("scan: frame bytes differ from the segment");
		check_layout(f.header_bytes, &f.hdr, "scan");
		frames++;

		sluice_chain_status cs =
			sluice_chain_frame(&chain, &f.hdr, f.hash, f.offset == 0, segment_first);
		const char *why = sluice_chain_strerror(cs);
		VERBOSE("  frame %llu at %llu flags %#x txseq %llu-%llu records %u: chain %s\n",
			(unsigned long long)f.hdr.frame_seq, (unsigned long long)f.offset,
			f.hdr.flags, (unsigned long long)f.hdr.txseq_start,
			(unsigned long long)f.hdr.txseq_end, f.hdr.record_count, why);
		sluice_frame_status fs =
			sluice_frame_decompress(g.codec, &f.hdr, f.payload, &g.raw);
		if (fs != SLUICE_FRAME_OK) {
			VERBOSE("    decompress: %s\n", sluice_frame_strerror(fs));
			continue;
		}
		if (g.raw.len != f.hdr.raw_len)
			fuzz_fail("decompress: %zu bytes, header says %u", g.raw.len,
				  f.hdr.raw_len);
		records_info info;
		decode_records(g.raw.data, g.raw.len, &chain, &info);
		VERBOSE("    %u records%s, record chain %s\n", info.count,
			info.complete ? "" : " (then a bad one)", info.chain_ok ? "ok" : "failed");
		if (info.complete) {
			cs = sluice_chain_frame_end(&chain);
			why = sluice_chain_strerror(cs);
			VERBOSE("    frame end: %s\n", why);
		}
	}
	if (expect_frames != SIZE_MAX && (frames != expect_frames || st != expect_status))
		fuzz_fail("scan: %zu of %zu signed frames authenticated, then status %d (%s), "
			  "expected %d",
			  frames, expect_frames, (int)st, sluice_frame_strerror(f.frame_status),
			  (int)expect_status);

	/* The listing pass over the same bytes. */
	sluice_scan_seek(scan, 0);
	size_t listed = 0;
	while (sluice_scan_next_header(scan, &f) == SLUICE_SCAN_FRAME) {
		if (sluice_scan_offset(scan) > len || ++listed > len / SLUICE_FRAME_HEADER_SIZE)
			fuzz_fail("scan_next_header: runs past the segment");
	}
	if (listed < frames)
		fuzz_fail("scan_next_header: lists %zu frames, scan authenticated %zu", listed,
			  frames);
	sluice_scan_free(scan);
}

/* FUZZ_MODE_SEGMENT: raw segment bytes, as found in a store. */
static void
mode_segment(const uint8_t *d, size_t n, unsigned opts)
{
	sluice_frame_header h;
	sluice_frame_status fs = sluice_frame_parse_header(d, n, &h);
	(void)sluice_frame_strerror(fs);
	if (fs == SLUICE_FRAME_OK) {
		check_layout(d, &h, "parse");
		(void)sluice_frame_verify_signature(d, g.pk);
		if (n - SLUICE_FRAME_HEADER_SIZE >= h.payload_len)
			(void)sluice_frame_verify(d, &h, g.pk, d + SLUICE_FRAME_HEADER_SIZE);
	}
	scan_segment(d, n, (opts & FUZZ_OPT_ANCHORED) != 0, SIZE_MAX, SLUICE_SCAN_END);
}

/* check_roundtrip: the frame just encoded at frame[0..len) decodes to hdr and raw. */
static void
check_roundtrip(const uint8_t *frame, size_t len, const sluice_frame_header *hdr,
		const uint8_t hash[SLUICE_FRAME_HASH_SIZE], const uint8_t *raw, size_t raw_len,
		const uint8_t pk[32])
{
	sluice_frame_header h;
	sluice_frame_status fs = sluice_frame_parse_header(frame, len, &h);
	if (fs != SLUICE_FRAME_OK)
		fuzz_fail("roundtrip: parse: %s", sluice_frame_strerror(fs));
	uint8_t want[SLUICE_FRAME_HEADER_SIZE];
	layout_header(hdr, want);
	if (memcmp(want, frame, SLUICE_FRAME_HEADER_SIZE) != 0)
		fuzz_fail("roundtrip: encoded header differs from the header given");
	check_layout(frame, &h, "roundtrip");
	if (len != SLUICE_FRAME_HEADER_SIZE + (size_t)h.payload_len || h.raw_len != raw_len)
		fuzz_fail("roundtrip: lengths");
	const uint8_t *payload = frame + SLUICE_FRAME_HEADER_SIZE;
	fs = sluice_frame_verify(frame, &h, pk, payload);
	if (fs != SLUICE_FRAME_OK)
		fuzz_fail("roundtrip: verify: %s", sluice_frame_strerror(fs));
	uint8_t again[SLUICE_FRAME_HASH_SIZE];
	sluice_frame_hash(frame, again);
	if (memcmp(again, hash, sizeof(again)) != 0)
		fuzz_fail("roundtrip: chain hash differs");
	fs = sluice_frame_decompress(g.codec, &h, payload, &g.raw);
	if (fs != SLUICE_FRAME_OK)
		fuzz_fail("roundtrip: decompress: %s", sluice_frame_strerror(fs));
	if (g.raw.len != raw_len || (raw_len > 0 && memcmp(g.raw.data, raw, raw_len) != 0))
		fuzz_fail("roundtrip: decompressed payload differs from the input");
}

/* sanitize_flags makes flags and record count acceptable to sluice_frame_parse_header. */
static void
sanitize_header(sluice_frame_header *h)
{
	h->flags &= SLUICE_FRAME_KNOWN_FLAGS;
	if (h->flags & SLUICE_FRAME_SEAL) {
		h->flags &= (uint16_t)~SLUICE_FRAME_OPEN;
		h->record_count = 0;
	}
	if (h->record_count > h->raw_len)
		h->record_count = h->raw_len;
}

/*
 * replay_chain runs the nframes complete frames at data (segment 1, from the
 * genesis) through the chain as scan_segment does (link, records, frame end),
 * so that *chain holds the key in force after them.
 */
static void
replay_chain(const uint8_t *data, size_t nframes, sluice_chain *chain)
{
	sluice_chain_init(chain, FUZZ_STREAM);
	sluice_chain_segment_start(chain);
	size_t pos = 0;
	sluice_frame_header h;
	uint8_t hash[SLUICE_FRAME_HASH_SIZE];
	for (size_t i = 0; i < nframes; i++) {
		if (sluice_frame_parse_header(data + pos, SLUICE_FRAME_HEADER_SIZE, &h) !=
		    SLUICE_FRAME_OK)
			fuzz_fail("frames: own header does not parse");
		sluice_frame_hash(data + pos, hash);
		(void)sluice_chain_frame(chain, &h, hash, pos == 0, 1);
		if (sluice_frame_decompress(g.codec, &h, data + pos + SLUICE_FRAME_HEADER_SIZE,
					    &g.raw) != SLUICE_FRAME_OK)
			fuzz_fail("frames: own payload does not decompress");
		records_info info;
		decode_records(g.raw.data, g.raw.len, chain, &info);
		if (info.complete)
			(void)sluice_chain_frame_end(chain);
		pos += SLUICE_FRAME_HEADER_SIZE + h.payload_len;
	}
}

/*
 * header_links tells whether the header at data[at] links to the chain of the
 * nframes complete frames before it (segment 1, from the genesis).
 */
static bool
header_links(const uint8_t *data, size_t nframes, size_t at)
{
	sluice_chain chain;
	replay_chain(data, nframes, &chain);
	sluice_frame_header h;
	if (sluice_frame_parse_header(data + at, SLUICE_FRAME_HEADER_SIZE, &h) != SLUICE_FRAME_OK)
		fuzz_fail("frames: own header does not parse");
	return sluice_chain_check(&chain, &h, at == 0, 1) == SLUICE_CHAIN_OK;
}

/* FUZZ_MODE_FRAMES: raw payloads, signed and chained into a segment. */
static void
mode_frames(const uint8_t *d, size_t n, unsigned opts)
{
	size_t ends[FUZZ_MAX_FRAMES];
	sluice_buf_reset(&g.seg);
	uint8_t prev[SLUICE_FRAME_HASH_SIZE];
	memcpy(prev, g.genesis, sizeof(prev));
	uint64_t txseq = 1, frame_seq = 0;
	size_t nframes = 0, pos = 0;
	while (n - pos >= 4 && nframes < FUZZ_MAX_FRAMES) {
		uint8_t ctl = d[pos];
		uint8_t dtx = d[pos + 1];
		size_t len = (size_t)d[pos + 2] | ((size_t)d[pos + 3] << 8);
		pos += 4;
		if (len > n - pos)
			len = n - pos;
		const uint8_t *raw = d + pos;
		pos += len;

		/* The key in force after the frames so far signs this one. */
		const uint8_t *sk = g.sk, *pk = g.pk, *key_id = g.key_id;
		if (nframes > 0) {
			sluice_chain shadow;
			replay_chain(g.seg.data, nframes, &shadow);
			if (memcmp(shadow.key_id, g.key_id2, sizeof(g.key_id2)) == 0) {
				sk = g.sk2;
				pk = g.pk2;
				key_id = g.key_id2;
			} else if (memcmp(shadow.key_id, g.key_id, sizeof(g.key_id)) != 0) {
				VERBOSE("  handed over to a key without a secret here: %zu "
					"frames\n",
					nframes);
				break;
			}
		}
		records_info info;
		decode_records(raw, len, NULL, &info);

		sluice_frame_header h;
		memset(&h, 0, sizeof(h));
		h.flags = ctl & SLUICE_FRAME_KNOWN_FLAGS;
		h.stream_id = g.stream_id;
		if (ctl & FUZZ_FRAME_CTL_SKIP_SEQ)
			frame_seq++;
		h.frame_seq = frame_seq++;
		if (ctl & FUZZ_FRAME_CTL_GAP)
			txseq++;
		h.txseq_start = txseq;
		h.txseq_end = txseq + dtx;
		if (info.have_time) {
			h.time_min = info.tmin;
			h.time_max = info.tmax;
		}
		h.raw_len = (uint32_t)len;
		h.record_count = info.count + ((ctl & FUZZ_FRAME_CTL_BAD_COUNT) ? 1 : 0);
		sanitize_header(&h);
		memcpy(h.key_id, key_id, sizeof(h.key_id));
		memcpy(h.prev_hash, prev, sizeof(prev));
		if (ctl & FUZZ_FRAME_CTL_BAD_PREV)
			h.prev_hash[0] ^= 1;

		size_t start = g.seg.len;
		uint8_t hash[SLUICE_FRAME_HASH_SIZE];
		sluice_frame_status fs =
			sluice_frame_encode(g.codec, &h, raw, len, sk, &g.seg, hash);
		if (fs != SLUICE_FRAME_OK)
			fuzz_fail("encode: %s", sluice_frame_strerror(fs));
		check_roundtrip(g.seg.data + start, g.seg.len - start, &h, hash, raw, len, pk);

		memcpy(prev, hash, sizeof(prev));
		txseq = h.txseq_end;
		ends[nframes++] = g.seg.len;
	}

	/*
	 * Cut where the last two input bytes say: what a crash leaves of an append.
	 * The complete frames must still authenticate, and the rest must be torn
	 * (never damage, which would stop the writer from recovering) when its
	 * header is cut short or is the next link of the chain; a cut frame whose
	 * authentic header does not link cannot be what an append left: damage.
	 */
	size_t len = g.seg.len;
	size_t want_frames = nframes;
	sluice_scan_status want = SLUICE_SCAN_END;
	if ((opts & FUZZ_OPT_TRUNCATE) && n >= 2) {
		size_t cut = ((size_t)d[n - 2] | ((size_t)d[n - 1] << 8)) % (len + 1);
		want_frames = 0;
		while (want_frames < nframes && ends[want_frames] <= cut)
			want_frames++;
		size_t boundary = want_frames > 0 ? ends[want_frames - 1] : 0;
		want = cut == boundary ? SLUICE_SCAN_END : SLUICE_SCAN_TORN;
		if (cut - boundary >= SLUICE_FRAME_HEADER_SIZE &&
		    !header_links(g.seg.data, want_frames, boundary))
			want = SLUICE_SCAN_BAD;
		len = cut;
	}
	scan_segment(g.seg.data, len, true, want_frames, want);
}

/* FUZZ_MODE_ZSTD: a compressed payload straight into sluice_frame_decompress. */
static void
mode_zstd(const uint8_t *d, size_t n, unsigned opts)
{
	if (n < 3)
		return;
	uint32_t raw_len = ((uint32_t)d[0] | ((uint32_t)d[1] << 8) | ((uint32_t)d[2] << 16)) &
			   (FUZZ_ZSTD_MAX_RAW - 1);
	const uint8_t *payload = d + 3;
	size_t plen = n - 3;
	if (opts & FUZZ_OPT_CONTENT_SIZE) {
		unsigned long long cs = ZSTD_getFrameContentSize(payload, plen);
		if (cs <= FUZZ_ZSTD_MAX_RAW)
			raw_len = (uint32_t)cs;
	}
	sluice_frame_header h;
	memset(&h, 0, sizeof(h));
	h.version = SLUICE_FRAME_VERSION;
	h.schema_version = SLUICE_FRAME_SCHEMA_VERSION;
	h.codec = SLUICE_FRAME_CODEC_ZSTD;
	h.txseq_start = h.txseq_end = 1;
	h.payload_len = (uint32_t)plen;
	h.raw_len = raw_len;
	sluice_frame_status fs = sluice_frame_decompress(g.codec, &h, payload, &g.raw);
	const char *why = sluice_frame_strerror(fs);
	VERBOSE("  decompress %zu -> %u: %s\n", plen, raw_len, why);
	if (fs != SLUICE_FRAME_OK)
		return;
	if (g.raw.len != raw_len)
		fuzz_fail("decompress: %zu bytes, header says %u", g.raw.len, raw_len);
	/* A fresh context must agree with the codec's reused one. */
	uint8_t *ref = malloc(raw_len ? raw_len : 1);
	if (ref == NULL)
		abort();
	size_t rn = ZSTD_decompress(ref, raw_len, payload, plen);
	if (ZSTD_isError(rn) || rn != raw_len || memcmp(ref, g.raw.data, raw_len) != 0)
		fuzz_fail("decompress: output differs from a fresh ZSTD_decompress");
	free(ref);
	if (opts & FUZZ_OPT_RECORDS) {
		records_info info;
		decode_records(g.raw.data, g.raw.len, NULL, &info);
	}
}

/* FUZZ_MODE_SIGNED: a compressed payload under a header signed with the test key. */
static void
mode_signed(const uint8_t *d, size_t n, unsigned opts)
{
	if (n < 7)
		return;
	uint8_t ctl = d[0], count = d[1], dtx = d[2];
	uint32_t raw24 = ((uint32_t)d[3] | ((uint32_t)d[4] << 8) | ((uint32_t)d[5] << 16)) &
			 (FUZZ_SIGNED_MAX_RAW - 1);
	const uint8_t *payload = d + 6;
	size_t plen = n - 6;

	sluice_frame_header h;
	memset(&h, 0, sizeof(h));
	h.version = SLUICE_FRAME_VERSION;
	h.schema_version = SLUICE_FRAME_SCHEMA_VERSION;
	h.codec = SLUICE_FRAME_CODEC_ZSTD;
	h.flags = ctl & SLUICE_FRAME_KNOWN_FLAGS;
	h.stream_id = g.stream_id ^ ((ctl & FUZZ_SIGNED_CTL_STREAM) ? 1 : 0);
	h.frame_seq = (ctl & FUZZ_SIGNED_CTL_SEQ) ? 1 : 0;
	h.txseq_start = 1;
	h.txseq_end = 1 + (uint64_t)dtx;
	h.payload_len = (uint32_t)plen;
	h.raw_len = raw24;
	if (!(ctl & FUZZ_SIGNED_CTL_RAW_LEN)) {
		unsigned long long cs = ZSTD_getFrameContentSize(payload, plen);
		if (cs <= FUZZ_SIGNED_MAX_RAW)
			h.raw_len = (uint32_t)cs;
	}
	h.record_count = count;
	sanitize_header(&h);
	memcpy(h.key_id, g.key_id, sizeof(h.key_id));
	memcpy(h.prev_hash, g.genesis, sizeof(h.prev_hash));
	crypto_generichash_blake2b(h.payload_hash, sizeof(h.payload_hash), payload, plen, NULL, 0);

	uint8_t header[SLUICE_FRAME_HEADER_SIZE];
	sign_header(&h, header);
	sluice_buf_reset(&g.seg);
	sluice_buf_append(&g.seg, header, sizeof(header));
	sluice_buf_append(&g.seg, payload, plen);

	sluice_frame_header parsed;
	sluice_frame_status fs = sluice_frame_parse_header(g.seg.data, g.seg.len, &parsed);
	if (fs != SLUICE_FRAME_OK)
		fuzz_fail("signed: own header does not parse: %s", sluice_frame_strerror(fs));
	fs = sluice_frame_verify(g.seg.data, &parsed, g.pk, g.seg.data + SLUICE_FRAME_HEADER_SIZE);
	if (fs != SLUICE_FRAME_OK)
		fuzz_fail("signed: own frame does not verify: %s", sluice_frame_strerror(fs));
	if (!(opts & FUZZ_OPT_CUT) || plen < 2) {
		scan_segment(g.seg.data, g.seg.len, true, 1, SLUICE_SCAN_END);
		return;
	}
	/*
	 * The header-first path: the payload cut short by a byte or more. Only
	 * the authentic header is read; torn if it is the stream's next link
	 * (here its first frame), damage otherwise. Nothing of the payload counts.
	 */
	sluice_chain chain;
	sluice_chain_init(&chain, FUZZ_STREAM);
	sluice_chain_segment_start(&chain);
	bool links = sluice_chain_check(&chain, &parsed, true, 1) == SLUICE_CHAIN_OK;
	size_t cut = 1 + (size_t)d[n - 1] % (plen - 1);
	scan_segment(g.seg.data, g.seg.len - cut, true, 0,
		     links ? SLUICE_SCAN_TORN : SLUICE_SCAN_BAD);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!g.ready)
		setup();
	if (size < 1)
		return 0;
	unsigned mode = data[0] % FUZZ_NMODES;
	unsigned opts = data[0] / FUZZ_NMODES;
	const uint8_t *d = data + 1;
	size_t n = size - 1;
	VERBOSE("input of %zu bytes: mode %u, options %#x\n", size, mode, opts);
	switch (mode) {
	case FUZZ_MODE_SEGMENT:
		mode_segment(d, n, opts);
		break;
	case FUZZ_MODE_FRAMES:
		mode_frames(d, n, opts);
		break;
	case FUZZ_MODE_ZSTD:
		mode_zstd(d, n, opts);
		break;
	case FUZZ_MODE_SIGNED:
		mode_signed(d, n, opts);
		break;
	}
	return 0;
}
