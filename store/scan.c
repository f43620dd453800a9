/* Segment scanner: walks the frames of one segment, authenticating each header first. */
#include "scan.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Payload bytes read (and hashed) per step, so memory follows the bytes present. */
#define SCAN_PIECE ((size_t)1 << 20)
/* Filesystems lose unwritten data in whole blocks; 4 KiB covers common ones. */
#define SCAN_BLOCK ((uint64_t)4096)

struct sluice_scan {
	sluice_segment *seg;       /* borrowed */
	const sluice_trust *trust; /* borrowed */
	uint64_t segment_first;
	uint64_t offset;
	sluice_buf payload; /* owned */
	uint8_t piece[64 * 1024];
};

const char *
sluice_scan_cause(const sluice_scan_frame *f)
{
	if (f->chain_status != SLUICE_CHAIN_OK)
		return sluice_chain_strerror(f->chain_status);
	return sluice_frame_strerror(f->frame_status);
}

void
sluice_scan_key_problem(const sluice_scan_frame *f, char *out, size_t size)
{
	char have[SLUICE_KEY_ID_HEX_SIZE], in_force[SLUICE_KEY_ID_HEX_SIZE];
	sluice_keys_id_hex(f->hdr.key_id, have);
	if (!f->key_bound) {
		snprintf(out, size, "signed by key %s, which is not trusted (not a --trust root)",
			 have);
		return;
	}
	sluice_keys_id_hex(f->key_in_force, in_force);
	snprintf(out, size,
		 "signed by key %s, but the key in force at this point of the stream is %s "
		 "(no handover from %s names %s)",
		 have, in_force, in_force, have);
}

sluice_scan *
sluice_scan_create(sluice_segment *seg, uint64_t segment_first, const sluice_trust *trust)
{
	sluice_scan *s = calloc(1, sizeof(*s));
	if (s == NULL)
		abort();
	s->seg = seg;
	s->segment_first = segment_first;
	s->trust = trust;
	return s;
}

void
sluice_scan_free(sluice_scan *scan)
{
	if (scan == NULL)
		return;
	sluice_buf_free(&scan->payload);
	free(scan);
}

void
sluice_scan_seek(sluice_scan *scan, uint64_t offset)
{
	scan->offset = offset;
}

uint64_t
sluice_scan_offset(const sluice_scan *scan)
{
	return scan->offset;
}

/*
 * scan_all_zero tells whether bytes [from, to) of the segment are all zero,
 * reading forward and stopping at the first byte that is not.
 */
static bool
scan_all_zero(sluice_scan *scan, uint64_t from, uint64_t to, bool *zero)
{
	*zero = true;
	while (from < to) {
		size_t want =
			to - from > sizeof(scan->piece) ? sizeof(scan->piece) : (size_t)(to - from);
		size_t got = 0;
		if (!sluice_segment_read(scan->seg, from, scan->piece, want, &got))
			return false;
		for (size_t i = 0; i < got; i++) {
			if (scan->piece[i] != 0) {
				*zero = false;
				return true;
			}
		}
		if (got < want)
			return true; /* the segment shrank meanwhile: nothing more to see */
		from += got;
	}
	return true;
}

/*
 * scan_unauthentic_tail decides about a header at off that does not
 * authenticate (or does not parse): it is torn only if it is what one
 * interrupted append leaves when the blocks it allocated never reached the
 * disk: no more bytes than one frame can have, and every byte zero from the
 * frame start, or from the first block boundary inside the header (the
 * header's first bytes made it, the rest did not). Anything else is damage.
 */
static sluice_scan_status
scan_unauthentic_tail(sluice_scan *scan, uint64_t off, uint64_t size, sluice_scan_status damage)
{
	if (size - off > SLUICE_SCAN_MAX_TORN)
		return damage;
	uint64_t from = (off + SCAN_BLOCK - 1) / SCAN_BLOCK * SCAN_BLOCK;
	if (from >= off + SLUICE_FRAME_HEADER_SIZE)
		from = off;
	bool zero = false;
	if (!scan_all_zero(scan, from, size, &zero))
		return SLUICE_SCAN_IO;
	return zero ? SLUICE_SCAN_TORN : damage;
}

/*
 * scan_zero_blocks_at_end tells whether the segment, which ends exactly where
 * the authentic frame at off ends, ends in zero bytes that cover at least one
 * whole block boundary inside the payload: blocks of the append that never
 * reached the disk. Reads backwards, never before the payload.
 */
static bool
scan_zero_blocks_at_end(sluice_scan *scan, uint64_t off, uint64_t size, bool *torn)
{
	uint64_t low = off + SLUICE_FRAME_HEADER_SIZE;
	uint64_t end = size;
	*torn = false;
	/* The last block boundary before the end must be inside the payload and zero after. */
	uint64_t boundary = (size - 1) / SCAN_BLOCK * SCAN_BLOCK;
	if (boundary < low)
		return true;
	while (end > boundary) {
		uint64_t from =
			end - boundary > sizeof(scan->piece) ? end - sizeof(scan->piece) : boundary;
		size_t got = 0;
		if (!sluice_segment_read(scan->seg, from, scan->piece, (size_t)(end - from), &got))
			return false;
		if (got < end - from)
			return true;
		for (size_t i = 0; i < got; i++)
			if (scan->piece[i] != 0)
				return true;
		end = from;
	}
	*torn = true;
	return true;
}

/*
 * scan_read_header reads and parses the header at the current offset.
 * @return SLUICE_SCAN_FRAME when out->hdr is parsed (not yet authenticated),
 * END, IO, TORN for a header cut short, or BAD with out->frame_status set.
 */
static sluice_scan_status
scan_read_header(sluice_scan *scan, sluice_scan_frame *out, uint64_t *size)
{
	if (!sluice_segment_size(scan->seg, size))
		return SLUICE_SCAN_IO;
	uint64_t off = scan->offset;
	memset(out, 0, sizeof(*out));
	out->offset = off;
	if (off >= *size)
		return SLUICE_SCAN_END;
	size_t got = 0;
	if (!sluice_segment_read(scan->seg, off, out->header_bytes, SLUICE_FRAME_HEADER_SIZE, &got))
		return SLUICE_SCAN_IO;
	if (got < SLUICE_FRAME_HEADER_SIZE) {
		/* A header cut short can only be the tail of an interrupted append. */
		out->frame_status = SLUICE_FRAME_E_SHORT;
		return SLUICE_SCAN_TORN;
	}
	out->frame_status = sluice_frame_parse_header(out->header_bytes, got, &out->hdr);
	return out->frame_status == SLUICE_FRAME_OK ? SLUICE_SCAN_FRAME : SLUICE_SCAN_BAD;
}

/* scan_torn marks out as torn (the cause stays readable in out->frame_status). */
static sluice_scan_status
scan_torn(sluice_scan_frame *out, sluice_scan_status st)
{
	if (st == SLUICE_SCAN_TORN)
		out->frame_status = SLUICE_FRAME_E_SHORT;
	return st;
}

/*
 * scan_read_payload reads the payload of the authenticated header in pieces,
 * hashing as it goes, so that memory grows only with bytes actually present.
 * @return FRAME with the payload hash checked, IO, or BAD (hash) / TORN.
 */
static sluice_scan_status
scan_read_payload(sluice_scan *scan, sluice_scan_frame *out, uint64_t size)
{
	uint64_t base = out->offset + SLUICE_FRAME_HEADER_SIZE;
	uint32_t len = out->hdr.payload_len;
	crypto_generichash_blake2b_state st;
	crypto_generichash_blake2b_init(&st, NULL, 0, SLUICE_FRAME_HASH_SIZE);
	sluice_buf_reset(&scan->payload);
	size_t done = 0;
	while (done < len) {
		size_t want = len - done > SCAN_PIECE ? SCAN_PIECE : len - done;
		sluice_buf_reserve(&scan->payload, want);
		size_t got = 0;
		if (!sluice_segment_read(scan->seg, base + done, scan->payload.data + done, want,
					 &got))
			return SLUICE_SCAN_IO;
		crypto_generichash_blake2b_update(&st, scan->payload.data + done, got);
		done += got;
		scan->payload.len = done;
		if (got < want) {
			out->frame_status = SLUICE_FRAME_E_SHORT;
			return SLUICE_SCAN_TORN; /* shrank meanwhile: the writer cut it */
		}
	}
	uint8_t hash[SLUICE_FRAME_HASH_SIZE];
	crypto_generichash_blake2b_final(&st, hash, sizeof(hash));
	if (sodium_memcmp(hash, out->hdr.payload_hash, sizeof(hash)) == 0)
		return SLUICE_SCAN_FRAME;
	out->frame_status = SLUICE_FRAME_E_HASH;
	bool torn = false;
	if (base + len == size && !scan_zero_blocks_at_end(scan, out->offset, size, &torn))
		return SLUICE_SCAN_IO;
	return scan_torn(out, torn ? SLUICE_SCAN_TORN : SLUICE_SCAN_BAD);
}

sluice_scan_status
sluice_scan_next(sluice_scan *scan, const sluice_chain *chain, sluice_scan_frame *out)
{
	uint64_t size;
	uint64_t off = scan->offset;
	sluice_scan_status hs = scan_read_header(scan, out, &size);
	if (hs == SLUICE_SCAN_BAD)
		return scan_torn(out, scan_unauthentic_tail(scan, off, size, SLUICE_SCAN_BAD));
	if (hs != SLUICE_SCAN_FRAME)
		return hs;

	/* The header first: key, signature, link. Nothing is allocated before. */
	const uint8_t *pk = chain == NULL ? sluice_trust_find(scan->trust, out->hdr.key_id)
					  : sluice_chain_key(chain, scan->trust, out->hdr.key_id);
	if (pk == NULL && chain != NULL && chain->key_known) {
		out->key_bound = true;
		memcpy(out->key_in_force, chain->key_id, SLUICE_FRAME_KEY_ID_SIZE);
	}
	if (pk == NULL)
		return scan_torn(out,
				 scan_unauthentic_tail(scan, off, size, SLUICE_SCAN_UNTRUSTED));
	sluice_frame_status fs = sluice_frame_verify_signature(out->header_bytes, pk);
	if (fs != SLUICE_FRAME_OK) {
		out->frame_status = fs;
		return scan_torn(out, scan_unauthentic_tail(scan, off, size, SLUICE_SCAN_BAD));
	}
	sluice_frame_hash(out->header_bytes, out->hash);
	sluice_chain_status link =
		chain == NULL ? SLUICE_CHAIN_OK
			      : sluice_chain_check(chain, &out->hdr, off == 0, scan->segment_first);
	bool links = link == SLUICE_CHAIN_OK;

	uint64_t end = off + SLUICE_FRAME_HEADER_SIZE + out->hdr.payload_len;
	if (end > size) {
		/* An authentic header that is the next link, cut short: an interrupted append. */
		out->frame_status = SLUICE_FRAME_E_SHORT;
		out->chain_status = link;
		return links ? SLUICE_SCAN_TORN : SLUICE_SCAN_BAD;
	}
	sluice_scan_status ps = scan_read_payload(scan, out, size);
	if (ps == SLUICE_SCAN_TORN && !links) {
		out->frame_status = SLUICE_FRAME_E_HASH;
		out->chain_status = link;
		ps = SLUICE_SCAN_BAD;
	}
	if (ps != SLUICE_SCAN_FRAME)
		return ps;
	out->payload = scan->payload.data;
	scan->offset = end;
	return SLUICE_SCAN_FRAME;
}

sluice_scan_status
sluice_scan_next_header(sluice_scan *scan, sluice_scan_frame *out)
{
	uint64_t size;
	sluice_scan_status hs = scan_read_header(scan, out, &size);
	if (hs != SLUICE_SCAN_FRAME)
		return hs;
	uint64_t end = scan->offset + SLUICE_FRAME_HEADER_SIZE + out->hdr.payload_len;
	if (end > size) {
		out->frame_status = SLUICE_FRAME_E_SHORT;
		return SLUICE_SCAN_TORN;
	}
	sluice_frame_hash(out->header_bytes, out->hash);
	scan->offset = end;
	return SLUICE_SCAN_FRAME;
}
