/* Segment scanner: walks the frames of one segment, authenticating each. */
#include "scan.h"

#include <stdlib.h>
#include <string.h>

struct sluice_scan {
	sluice_segment *seg;       /* borrowed */
	const sluice_trust *trust; /* borrowed */
	uint64_t offset;
	sluice_buf payload; /* owned */
};

sluice_scan *
sluice_scan_create(sluice_segment *seg, const sluice_trust *trust)
{
	sluice_scan *s = calloc(1, sizeof(*s));
	if (s == NULL)
		abort();
	s->seg = seg;
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

/* Filesystems lose unwritten data in whole blocks; 4 KiB covers common ones. */
#define SCAN_BLOCK 4096

/*
 * scan_zero_tail_start finds where the run of zero bytes that ends the
 * segment begins (size when the last byte is not zero).
 */
static bool
scan_zero_tail_start(sluice_scan *scan, uint64_t size, uint64_t *start)
{
	uint8_t buf[SCAN_BLOCK];
	uint64_t end = size;
	while (end > 0) {
		uint64_t from = end > sizeof(buf) ? end - sizeof(buf) : 0;
		size_t got = 0;
		if (!sluice_segment_read(scan->seg, from, buf, (size_t)(end - from), &got))
			return false;
		for (size_t i = got; i > 0; i--) {
			if (buf[i - 1] != 0) {
				*start = from + i;
				return true;
			}
		}
		end = from;
	}
	*start = 0;
	return true;
}

/*
 * scan_damage_kind decides whether a frame at off that fails its checks is a
 * torn tail: the segment ends in zero bytes starting inside this frame, at
 * the frame start or at a block boundary (space allocated by a crashed append
 * whose data never reached the disk). Anything else is damage.
 */
static sluice_scan_status
scan_damage_kind(sluice_scan *scan, uint64_t off, uint64_t size)
{
	uint64_t z;
	if (!scan_zero_tail_start(scan, size, &z))
		return SLUICE_SCAN_IO;
	/*
	 * A zstd frame can end in a few zero bytes (an empty one ends "01 00 00"),
	 * so a run from a block boundary must be long enough not to be data.
	 */
	if (z < size && z <= off)
		return SLUICE_SCAN_TORN; /* everything from the frame start on is zero */
	uint64_t block = (z + SCAN_BLOCK - 1) / SCAN_BLOCK * SCAN_BLOCK;
	if (z < size && block < size && size - block >= 32)
		return SLUICE_SCAN_TORN; /* whole blocks at the end never reached the disk */
	return SLUICE_SCAN_BAD;
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

sluice_scan_status
sluice_scan_next(sluice_scan *scan, sluice_scan_frame *out)
{
	uint64_t size;
	uint64_t off = scan->offset;
	size_t got = 0;
	sluice_frame_status fs;
	sluice_scan_status hs = scan_read_header(scan, out, &size);
	if (hs == SLUICE_SCAN_BAD) {
		sluice_scan_status k = scan_damage_kind(scan, off, size);
		if (k == SLUICE_SCAN_TORN)
			out->frame_status = SLUICE_FRAME_E_SHORT;
		return k;
	}
	if (hs != SLUICE_SCAN_FRAME)
		return hs;

	const uint8_t *pk = sluice_trust_find(scan->trust, out->hdr.key_id);
	if (pk == NULL)
		return SLUICE_SCAN_UNTRUSTED;

	uint64_t end = off + SLUICE_FRAME_HEADER_SIZE + out->hdr.payload_len;
	if (end > size) {
		/* Torn only if the header itself is authentic; else the length was damaged. */
		fs = sluice_frame_verify_signature(out->header_bytes, pk);
		if (fs != SLUICE_FRAME_OK) {
			out->frame_status = fs;
			sluice_scan_status k = scan_damage_kind(scan, off, size);
			if (k == SLUICE_SCAN_TORN)
				out->frame_status = SLUICE_FRAME_E_SHORT;
			return k;
		}
		out->frame_status = SLUICE_FRAME_E_SHORT;
		return SLUICE_SCAN_TORN;
	}

	sluice_buf_reset(&scan->payload);
	sluice_buf_reserve(&scan->payload, out->hdr.payload_len);
	if (!sluice_segment_read(scan->seg, off + SLUICE_FRAME_HEADER_SIZE, scan->payload.data,
				 out->hdr.payload_len, &got))
		return SLUICE_SCAN_IO;
	if (got < out->hdr.payload_len) {
		out->frame_status = SLUICE_FRAME_E_SHORT;
		return SLUICE_SCAN_TORN;
	}
	scan->payload.len = got;
	fs = sluice_frame_verify(out->header_bytes, &out->hdr, pk, scan->payload.data);
	if (fs != SLUICE_FRAME_OK) {
		out->frame_status = fs;
		sluice_scan_status k = scan_damage_kind(scan, off, size);
		if (k == SLUICE_SCAN_TORN)
			out->frame_status = SLUICE_FRAME_E_SHORT;
		return k;
	}
	sluice_frame_hash(out->header_bytes, out->hash);
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
