/* Stream reader: authenticated, chain-checked records in txseq order, optionally live. */
#include "reader.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "backoff.h"
#include "chain.h"
#include "clock.h"
#include "cursor.h"
#include "frame.h"
#include "log.h"
#include "scan.h"

typedef struct reader_relation {
	uint32_t id;
	Sluice__V1__Relation *rel; /* owned, unpacked with the default allocator */
} reader_relation;

struct sluice_reader {
	sluice_store *store;       /* borrowed */
	const sluice_trust *trust; /* borrowed */
	char *stream;              /* owned */
	uint64_t from_txseq;
	sluice_store_watch *watch; /* owned, created on first wait */
	int idle_polls;            /* waits without news, for the polling backoff */
	int64_t last_list_ms;      /* when the stream was last listed */

	uint64_t *firsts; /* owned: segment list */
	size_t nsegs;
	uint64_t seg_first;  /* first txseq (name) of the open segment */
	sluice_segment *seg; /* owned */
	sluice_scan *scan;   /* owned */
	sluice_chain chain;
	bool seg_sealed;

	sluice_cursor *cursor; /* owned: records of the current frame */
	bool frame_loaded;

	sluice_reader_position pos;
	uint64_t cur_txseq;

	/*
	 * Where the current segment was last between transactions. A restarted
	 * writer cuts an unfinished transaction back to such a point, so that is
	 * where reading resumes when frames already returned disappear.
	 */
	uint64_t boundary_offset;
	sluice_chain boundary_chain;
	uint64_t last_frame_offset; /* last frame loaded, and its header bytes */
	uint8_t last_header[SLUICE_FRAME_HEADER_SIZE];
	uint64_t consumed_end; /* end of the last frame loaded */
	bool reopen_pending;   /* segment vanished during a rewind: reopen by name */

	reader_relation *rels; /* owned */
	size_t nrels;
	char error[512];
	uint64_t frames_read, bytes_read;
};

static sluice_reader_status reader_fail(sluice_reader *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static sluice_reader_status
reader_fail(sluice_reader *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	sluice_log_error("%s", r->error);
	return SLUICE_READER_ERROR;
}

static bool
reader_list(sluice_reader *r)
{
	free(r->firsts);
	r->firsts = NULL;
	r->last_list_ms = sluice_clock_mono_ms();
	return sluice_store_list(r->store, r->stream, &r->firsts, &r->nsegs, NULL);
}

/* Stores with costly listings are listed at the live end at most this often. */
#define READER_RELIST_MS 30000

/*
 * reader_find_next makes sure the listing names the segment after the open
 * one if the store has it. Where listing is cheap (a directory) it lists;
 * elsewhere it asks for the one name the stream goes on in, and lists only
 * now and then, so that a gap is still noticed.
 */
static bool
reader_find_next(sluice_reader *r)
{
	if (sluice_store_caps_get(r->store)->cheap_list ||
	    sluice_clock_mono_ms() - r->last_list_ms >= READER_RELIST_MS)
		return reader_list(r);
	bool exists = false;
	uint64_t want = r->chain.txseq_end;
	if (!sluice_store_segment_probe(r->store, r->stream, want, &exists))
		return false;
	if (!exists)
		return true;
	uint64_t *p = realloc(r->firsts, (r->nsegs + 1) * sizeof(*p));
	if (p == NULL)
		abort();
	r->firsts = p;
	r->firsts[r->nsegs++] = want; /* after every listed name: the open one is the last */
	return true;
}

/* reader_next_listed finds the first listed segment after the open one (nsegs: none). */
static size_t
reader_next_listed(const sluice_reader *r)
{
	size_t lo = 0, hi = r->nsegs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (r->firsts[mid] <= r->seg_first)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* reader_open_segment opens segment seg_first for scanning from its start. */
static bool
reader_open_segment(sluice_reader *r)
{
	sluice_scan_free(r->scan);
	r->scan = NULL;
	sluice_segment_close(r->seg);
	r->seg = NULL;
	if (!sluice_store_segment_open(r->store, r->stream, r->seg_first, false, false, &r->seg))
		return false;
	r->scan = sluice_scan_create(r->seg, r->seg_first, r->trust);
	r->seg_sealed = false;
	sluice_chain_segment_start(&r->chain);
	r->boundary_offset = 0;
	r->boundary_chain = r->chain;
	r->consumed_end = 0;
	return true;
}

/*
 * reader_rewritten tells whether frames already loaded from the current
 * segment are gone or different: the segment vanished, shrank below what was
 * read, or the last loaded header changed. Only meaningful inside an
 * unfinished transaction, the only thing a restarted writer cuts.
 */
static bool
reader_rewritten(sluice_reader *r)
{
	sluice_segment *fresh = NULL;
	bool changed = true;
	if (!sluice_store_segment_open(r->store, r->stream, r->seg_first, false, false, &fresh))
		return true;
	uint64_t size = 0;
	uint8_t hdr[SLUICE_FRAME_HEADER_SIZE];
	size_t got = 0;
	if (sluice_segment_size(fresh, &size) && size >= r->consumed_end &&
	    sluice_segment_read(fresh, r->last_frame_offset, hdr, sizeof(hdr), &got) &&
	    got == sizeof(hdr) && memcmp(hdr, r->last_header, sizeof(hdr)) == 0)
		changed = false;
	sluice_segment_close(fresh);
	return changed;
}

/*
 * reader_reopen reads segment seg_first again from where the scan stopped.
 * Where segments appear whole (S3), an unsealed object is a partial upload
 * that a server kept (S3 itself stores nothing for an incomplete request);
 * its writer replaces it with the whole segment, which begins with the same
 * bytes, so reading on in the new object is reading on in the segment.
 */
static bool
reader_reopen(sluice_reader *r)
{
	uint64_t off = sluice_scan_offset(r->scan), before = 0, after = 0;
	sluice_segment *fresh = NULL;
	if (!sluice_store_segment_open(r->store, r->stream, r->seg_first, false, false, &fresh))
		return false;
	if (sluice_segment_size(r->seg, &before) && sluice_segment_size(fresh, &after) &&
	    after > before)
		sluice_log_warn("segment %s of stream \"%s\" grew from %" PRIu64 " to %" PRIu64
				" bytes after it was read unsealed (a partial upload the "
				"server kept, completed since); reading on",
				sluice_segment_name(fresh), r->stream, before, after);
	sluice_scan_free(r->scan);
	sluice_segment_close(r->seg);
	r->seg = fresh;
	r->scan = sluice_scan_create(fresh, r->seg_first, r->trust);
	sluice_scan_seek(r->scan, off);
	return true;
}

/* reader_rewind goes back to the last point between transactions of the segment. */
static sluice_reader_status
reader_rewind(sluice_reader *r)
{
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(r->seg_first, name);
	uint64_t cut = r->chain.txseq_end;
	sluice_log_warn("segment %s was rewritten after offset %" PRIu64 " (the writer restarted "
			"and cut unfinished transaction %" PRIu64 "); reading on from there",
			name, r->boundary_offset, cut);
	sluice_chain boundary = r->boundary_chain;
	uint64_t offset = r->boundary_offset;
	/* Reopen by name: the file may have been replaced, or removed for now. */
	bool present = false;
	if (reader_list(r))
		for (size_t i = 0; i < r->nsegs; i++)
			if (r->firsts[i] == r->seg_first)
				present = true;
	if (!present || !reader_open_segment(r)) {
		sluice_scan_free(r->scan);
		r->scan = NULL;
		sluice_segment_close(r->seg);
		r->seg = NULL;
		r->reopen_pending = true;
	} else
		sluice_scan_seek(r->scan, offset);
	r->chain = boundary;
	r->boundary_chain = boundary;
	r->boundary_offset = offset;
	r->consumed_end = offset;
	r->frame_loaded = false;
	r->pos.txseq = cut;
	return SLUICE_READER_REWIND;
}

bool
sluice_reader_open(sluice_store *store, const char *stream, const sluice_trust *trust,
		   uint64_t from_txseq, sluice_reader **out)
{
	sluice_reader *r = calloc(1, sizeof(*r));
	if (r == NULL)
		abort();
	r->store = store;
	r->trust = trust;
	r->stream = strdup(stream);
	if (r->stream == NULL)
		abort();
	r->from_txseq = from_txseq ? from_txseq : 1;
	r->cursor = sluice_cursor_create();
	/* A store that replays the stream (NATS) can start at the segment asked for. */
	sluice_store_read_from(store, stream, r->from_txseq);
	if (!reader_list(r)) {
		sluice_reader_close(r);
		return false;
	}
	/* Start at the last segment whose first txseq is at or before from_txseq. */
	r->seg_first = r->nsegs > 0 ? r->firsts[0] : 0;
	for (size_t i = 0; i < r->nsegs; i++)
		if (r->firsts[i] <= r->from_txseq)
			r->seg_first = r->firsts[i];
	if (r->nsegs > 0 && r->seg_first == 1)
		sluice_chain_init(&r->chain, stream);
	else
		sluice_chain_init_unanchored(&r->chain, stream);
	/* Watch before the first read so that no append between read and wait is missed. */
	if (!sluice_store_watch_open(store, stream, &r->watch))
		r->watch = NULL;
	if (r->nsegs > 0 && !reader_open_segment(r)) {
		sluice_reader_close(r);
		return false;
	}
	*out = r;
	return true;
}

void
sluice_reader_close(sluice_reader *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->nrels; i++)
		sluice__v1__relation__free_unpacked(r->rels[i].rel, NULL);
	free(r->rels);
	sluice_store_watch_close(r->watch);
	sluice_scan_free(r->scan);
	sluice_segment_close(r->seg);
	free(r->firsts);
	sluice_cursor_free(r->cursor);
	free(r->stream);
	free(r);
}

/* reader_keep_relation stores a copy of a relation description that outlives the frame. */
static void
reader_keep_relation(sluice_reader *r, const Sluice__V1__Relation *rel)
{
	size_t size = protobuf_c_message_get_packed_size(&rel->base);
	uint8_t *buf = malloc(size ? size : 1);
	if (buf == NULL)
		abort();
	protobuf_c_message_pack(&rel->base, buf);
	Sluice__V1__Relation *copy = sluice__v1__relation__unpack(NULL, size, buf);
	free(buf);
	if (copy == NULL)
		abort();
	for (size_t i = 0; i < r->nrels; i++) {
		if (r->rels[i].id == rel->id) {
			sluice__v1__relation__free_unpacked(r->rels[i].rel, NULL);
			r->rels[i].rel = copy;
			return;
		}
	}
	reader_relation *p = realloc(r->rels, (r->nrels + 1) * sizeof(*p));
	if (p == NULL)
		abort();
	r->rels = p;
	r->rels[r->nrels].id = rel->id;
	r->rels[r->nrels].rel = copy;
	r->nrels++;
}

const Sluice__V1__Relation *
sluice_reader_relation(const sluice_reader *r, uint32_t id)
{
	for (size_t i = 0; i < r->nrels; i++)
		if (r->rels[i].id == id)
			return r->rels[i].rel;
	return NULL;
}

/* reader_load_frame reads the next frame; SLUICE_READER_WAIT at the live end. */
static sluice_reader_status
reader_load_frame(sluice_reader *r)
{
	char name[SLUICE_SEGMENT_NAME_SIZE];
	for (;;) {
		if (r->reopen_pending) {
			/* Wait quietly until the writer has created the segment again. */
			bool present = false;
			if (!reader_list(r))
				return reader_fail(r, "could not list segments of stream \"%s\"",
						   r->stream);
			for (size_t i = 0; i < r->nsegs; i++)
				if (r->firsts[i] == r->seg_first)
					present = true;
			sluice_chain keep = r->chain;
			uint64_t offset = r->boundary_offset;
			if (!present || !reader_open_segment(r))
				return SLUICE_READER_WAIT;
			sluice_scan_seek(r->scan, offset);
			r->chain = keep;
			r->boundary_chain = keep;
			r->boundary_offset = offset;
			r->consumed_end = offset;
			r->reopen_pending = false;
		}
		if (r->seg == NULL) {
			if (!reader_list(r))
				return reader_fail(r, "could not list segments of stream \"%s\"",
						   r->stream);
			if (r->nsegs == 0)
				return SLUICE_READER_WAIT;
			r->seg_first = r->firsts[0];
			for (size_t i = 0; i < r->nsegs; i++)
				if (r->firsts[i] <= r->from_txseq)
					r->seg_first = r->firsts[i];
			if (r->seg_first == 1)
				sluice_chain_init(&r->chain, r->stream);
			if (!reader_open_segment(r))
				return reader_fail(r, "could not open a segment of stream \"%s\"",
						   r->stream);
		}
		sluice_store_segment_name(r->seg_first, name);
		if (r->nsegs > 0 && r->firsts[0] == 0)
			return reader_fail(r,
					   "stream \"%s\" holds 0000000000000000.seg, which is not "
					   "a segment name: txseqs start at 1",
					   r->stream);
		if (r->nsegs > 0 && r->firsts[0] > r->from_txseq && r->chain.next_frame_seq == 0 &&
		    !r->frame_loaded && sluice_scan_offset(r->scan) == 0 &&
		    r->seg_first == r->firsts[0])
			return reader_fail(r,
					   "txseq gap: transaction %" PRIu64
					   " was asked for but the "
					   "stream's first segment is %s (earlier segments are "
					   "missing)",
					   r->from_txseq, name);
		sluice_scan_frame f;
		sluice_scan_status st = sluice_scan_next(r->scan, &r->chain, &f);
		if (st != SLUICE_SCAN_FRAME && st != SLUICE_SCAN_END && r->chain.open &&
		    !r->seg_sealed && reader_rewritten(r))
			return reader_rewind(r);
		if (st == SLUICE_SCAN_FRAME) {
			sluice_chain before = r->chain;
			sluice_chain_status cs = sluice_chain_frame(&r->chain, &f.hdr, f.hash,
								    f.offset == 0, r->seg_first);
			if (cs != SLUICE_CHAIN_OK && before.open && reader_rewritten(r)) {
				r->chain = before;
				return reader_rewind(r);
			}
			if (cs != SLUICE_CHAIN_OK)
				return reader_fail(r,
						   "could not read frame %" PRIu64 " of segment %s "
						   "at offset %" PRIu64 ": %s",
						   f.hdr.frame_seq, name, f.offset,
						   sluice_chain_strerror(cs));
			if (f.hdr.flags & SLUICE_FRAME_SEAL)
				r->seg_sealed = true;
			if (sluice_cursor_load(r->cursor, &f) != SLUICE_CURSOR_END)
				return reader_fail(r,
						   "could not read frame %" PRIu64 " of segment %s "
						   "at offset %" PRIu64 ": %s",
						   f.hdr.frame_seq, name, f.offset,
						   sluice_cursor_cause(r->cursor));
			r->frame_loaded = true;
			r->idle_polls = 0;
			r->last_frame_offset = f.offset;
			memcpy(r->last_header, f.header_bytes, SLUICE_FRAME_HEADER_SIZE);
			r->consumed_end = sluice_scan_offset(r->scan);
			r->frames_read++;
			r->bytes_read += r->consumed_end - f.offset;
			r->pos.segment_first = r->seg_first;
			r->pos.frame_offset = f.offset;
			r->pos.frame_seq = f.hdr.frame_seq;
			return SLUICE_READER_RECORD;
		}
		if (st == SLUICE_SCAN_IO)
			return reader_fail(r, "could not read segment %s of stream \"%s\"", name,
					   r->stream);
		if (st == SLUICE_SCAN_UNTRUSTED) {
			char why[256];
			sluice_scan_key_problem(&f, why, sizeof(why));
			return reader_fail(r,
					   "could not verify frame %" PRIu64 " of segment %s at "
					   "offset %" PRIu64 ": %s",
					   f.hdr.frame_seq, name, f.offset, why);
		}
		if (st == SLUICE_SCAN_BAD)
			return reader_fail(
				r, "could not verify frame at offset %" PRIu64 " of segment %s: %s",
				f.offset, name, sluice_scan_cause(&f));

		/* END or TORN: the segment has nothing more complete right now. */
		if (r->seg_sealed) {
			if (st == SLUICE_SCAN_TORN)
				return reader_fail(r,
						   "segment %s: bytes follow the seal at offset "
						   "%" PRIu64,
						   name, f.offset);
			/*
			 * The listing taken earlier usually names the next segment already;
			 * the directory is listed again only at the live end, so reading
			 * many segments does not list the directory once per segment.
			 */
			size_t next = reader_next_listed(r);
			if (next >= r->nsegs) {
				if (!reader_find_next(r))
					return reader_fail(
						r, "could not list segments of stream \"%s\"",
						r->stream);
				next = reader_next_listed(r);
			}
			if (next >= r->nsegs)
				return SLUICE_READER_WAIT;
			if (r->firsts[next] != r->chain.txseq_end) {
				char nname[SLUICE_SEGMENT_NAME_SIZE];
				sluice_store_segment_name(r->firsts[next], nname);
				return reader_fail(
					r,
					"txseq gap: segment %s ends before txseq %" PRIu64
					" but the next segment is %s",
					name, r->chain.txseq_end, nname);
			}
			r->seg_first = r->firsts[next];
			if (!reader_open_segment(r))
				return reader_fail(r, "could not open a segment of stream \"%s\"",
						   r->stream);
			continue;
		}
		/* Unsealed: the live end, unless a later segment exists. */
		uint64_t cur = r->seg_first;
		if (!reader_list(r))
			return reader_fail(r, "could not list segments of stream \"%s\"",
					   r->stream);
		bool later = r->nsegs > 0 && r->firsts[r->nsegs - 1] > cur;
		if (r->chain.open && reader_rewritten(r))
			return reader_rewind(r);
		bool whole = !sluice_store_caps_get(r->store)->append_visible;
		if (!later) {
			if (whole && !reader_reopen(r))
				return reader_fail(r, "could not read segment %s of stream \"%s\"",
						   name, r->stream);
			return SLUICE_READER_WAIT;
		}
		/* A seal may have landed between our read and the listing: look once more. */
		if (whole && !reader_reopen(r))
			return reader_fail(r, "could not read segment %s of stream \"%s\"", name,
					   r->stream);
		st = sluice_scan_next(r->scan, &r->chain, &f);
		if (st == SLUICE_SCAN_FRAME) {
			sluice_scan_seek(r->scan, f.offset);
			continue;
		}
		return reader_fail(r,
				   "segment %s is not sealed (%s at offset %" PRIu64
				   ") but a later segment exists",
				   name, st == SLUICE_SCAN_TORN ? "torn frame" : "ends", f.offset);
	}
}

sluice_reader_status
sluice_reader_next(sluice_reader *r, const sluice_record **out)
{
	for (;;) {
		if (!r->frame_loaded) {
			sluice_reader_status st = reader_load_frame(r);
			if (st != SLUICE_READER_RECORD)
				return st;
		}
		const sluice_record *rec = NULL;
		sluice_cursor_status cs = sluice_cursor_next(r->cursor, &r->chain, &rec);
		char name[SLUICE_SEGMENT_NAME_SIZE];
		sluice_store_segment_name(r->pos.segment_first, name);
		if (cs == SLUICE_CURSOR_END) {
			r->frame_loaded = false;
			if (!r->chain.open) {
				r->boundary_offset = r->consumed_end;
				r->boundary_chain = r->chain;
			}
			continue;
		}
		if (cs != SLUICE_CURSOR_RECORD)
			return reader_fail(
				r, "frame %" PRIu64 " of segment %s at offset %" PRIu64 ": %s",
				r->pos.frame_seq, name, r->pos.frame_offset,
				sluice_cursor_cause(r->cursor));
		if (rec->body_case == SLUICE__V1__RECORD__BODY_RELATION)
			reader_keep_relation(r, rec->relation);
		uint64_t txseq = r->chain.cur_txseq;
		if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT)
			txseq = rec->commit->txseq;
		else if (rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_END)
			txseq = rec->snapshot_end->txseq;
		r->pos.txseq = txseq;
		/* Skip transactions before the start point; relations were kept above. */
		if (txseq != 0 && txseq < r->from_txseq)
			continue;
		if (txseq == 0 && r->chain.next_txseq < r->from_txseq &&
		    rec->body_case != SLUICE__V1__RECORD__BODY_RELATION)
			continue;
		*out = rec;
		return SLUICE_READER_RECORD;
	}
}

bool
sluice_reader_wait(sluice_reader *r, int timeout_ms)
{
	if (r->watch == NULL) {
		/*
		 * No change notification: poll, backing off from 20 ms to 1 s while
		 * nothing new comes (each poll of an object store is a request).
		 */
		if (r->idle_polls < 16)
			r->idle_polls++;
		int ms = sluice_backoff_ms(r->idle_polls, 20, 1000);
		if (ms > timeout_ms)
			ms = timeout_ms;
		struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		return true;
	}
	return sluice_store_watch_wait(r->watch, timeout_ms) >= 0;
}

const sluice_reader_position *
sluice_reader_position_get(const sluice_reader *r)
{
	return &r->pos;
}

const char *
sluice_reader_error(const sluice_reader *r)
{
	return r->error;
}

void
sluice_reader_counters_get(const sluice_reader *r, sluice_reader_counters *out)
{
	out->frames = r->frames_read;
	out->bytes = r->bytes_read;
	out->head_txseq = r->chain.txseq_end > 0 ? r->chain.txseq_end - 1 : 0;
}
