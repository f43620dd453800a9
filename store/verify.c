/* Whole-stream verification: every frame, the chain across segments, txseq density, seals. */
#include "verify.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "buf.h"
#include "chain.h"
#include "cursor.h"
#include "frame.h"
#include "reader.h"
#include "records.h"
#include "scan.h"

typedef struct verify_ctx {
	sluice_verify_finding_fn finding;
	void *ctx;
	sluice_verify_report *report;
	const char *segment;
} verify_ctx;

static void verify_say(verify_ctx *v, bool is_error, int64_t off, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void
verify_say(verify_ctx *v, bool is_error, int64_t off, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (is_error)
		v->report->problems++;
	else
		v->report->warnings++;
	v->finding(v->ctx, is_error, v->segment, off, msg);
}

/* verify_chain_detail adds expected and found values to a chain finding. */
static void
verify_chain_problem(verify_ctx *v, const sluice_chain *before, const sluice_frame_header *h,
		     int64_t off, sluice_chain_status cs, uint64_t segment_first)
{
	switch (cs) {
	case SLUICE_CHAIN_E_TXSEQ_GAP:
		verify_say(v, true, off,
			   "frame %" PRIu64 ": txseq gap: expected txseq %" PRIu64
			   ", frame starts at %" PRIu64 " (missing or reordered segment)",
			   h->frame_seq, before->txseq_end, h->txseq_start);
		break;
	case SLUICE_CHAIN_E_FRAME_SEQ:
		verify_say(v, true, off,
			   "frame %" PRIu64 ": frame number does not follow the previous frame "
			   "(expected %" PRIu64 ")",
			   h->frame_seq, before->next_frame_seq);
		break;
	case SLUICE_CHAIN_E_NAME:
		verify_say(v, true, off,
			   "frame %" PRIu64 ": segment name says txseq %" PRIu64
			   " but its first frame starts at txseq %" PRIu64,
			   h->frame_seq, segment_first, h->txseq_start);
		break;
	default:
		verify_say(v, true, off, "frame %" PRIu64 ": %s", h->frame_seq,
			   sluice_chain_strerror(cs));
	}
}

/* verify_note_times keeps the newest commit and heartbeat times a record shows. */
static void
verify_note_times(const sluice_record *rec, int64_t *commit_us, int64_t *heartbeat_us)
{
	if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT &&
	    rec->commit->commit_time_us > *commit_us)
		*commit_us = rec->commit->commit_time_us;
	else if (rec->body_case == SLUICE__V1__RECORD__BODY_HEARTBEAT &&
		 rec->heartbeat->time_us > *heartbeat_us)
		*heartbeat_us = rec->heartbeat->time_us;
}

/* verify_note_record counts the transactions a record completes. */
static void
verify_note_record(sluice_verify_report *report, const sluice_record *rec)
{
	verify_note_times(rec, &report->newest_commit_us, &report->newest_heartbeat_us);
	uint64_t done = 0;
	if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT)
		done = rec->commit->txseq;
	else if (rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_END)
		done = rec->snapshot_end->txseq;
	if (done != 0) {
		report->transactions++;
		if (report->first_txseq == 0)
			report->first_txseq = done;
		report->last_txseq = done;
	}
}

bool
sluice_verify_stream(sluice_store *store, const char *stream, const sluice_trust *trust,
		     sluice_verify_finding_fn finding, void *ctx, sluice_verify_report *report)
{
	bool ok = false;
	uint64_t *firsts = NULL;
	size_t n = 0, strays = 0;
	sluice_cursor *cursor = sluice_cursor_create();
	memset(report, 0, sizeof(*report));
	verify_ctx v = {.finding = finding, .ctx = ctx, .report = report, .segment = NULL};
	if (!sluice_store_list(store, stream, &firsts, &n, &strays))
		goto cleanup;
	if (strays > 0)
		verify_say(&v, false, -1,
			   "%zu file(s) in the stream directory are not segments and were ignored",
			   strays);
	if (n == 0) {
		verify_say(&v, true, -1, "stream \"%s\" has no segments in store \"%s\"", stream,
			   sluice_store_location(store));
		ok = true;
		goto cleanup;
	}

	if (firsts[0] == 0) {
		v.segment = "0000000000000000.seg";
		verify_say(&v, true, -1, "%s", "not a segment name: txseqs start at 1");
		v.segment = NULL;
	}
	sluice_chain chain;
	sluice_chain_init(&chain, stream);
	bool have_time = false;
	/* Where segments appear whole (S3), even the newest one ends with its seal. */
	bool whole = !sluice_store_caps_get(store)->append_visible;
	char name[SLUICE_SEGMENT_NAME_SIZE];

	for (size_t i = 0; i < n; i++) {
		bool last = i + 1 == n;
		sluice_store_segment_name(firsts[i], name);
		v.segment = name;
		sluice_segment *seg = NULL;
		if (!sluice_store_segment_open(store, stream, firsts[i], false, false, &seg)) {
			verify_say(&v, true, -1, "could not open segment");
			chain.anchored = false;
			continue;
		}
		uint64_t size = 0;
		if (sluice_segment_size(seg, &size))
			report->bytes += size;
		report->segments++;
		bool after_seal = chain.sealed;
		sluice_chain_segment_start(&chain);
		sluice_scan *scan = sluice_scan_create(seg, firsts[i], trust);
		uint64_t frames = 0;
		bool stopped = false;

		for (;;) {
			sluice_scan_frame f;
			sluice_scan_status st = sluice_scan_next(scan, &chain, &f);
			int64_t off = (int64_t)f.offset;
			if (st == SLUICE_SCAN_END)
				break;
			if (st == SLUICE_SCAN_TORN) {
				if (last && chain.sealed) {
					verify_say(&v, true, off,
						   "incomplete frame of %" PRIu64
						   " bytes after the segment's seal",
						   size - f.offset);
				} else if (last && whole) {
					verify_say(&v, true, off,
						   "incomplete frame of %" PRIu64
						   " bytes: an object of this store is a whole "
						   "sealed segment (a partial upload the server "
						   "kept?)",
						   size - f.offset);
				} else if (last) {
					report->torn = true;
					verify_say(
						&v, false, off,
						"torn tail: incomplete frame of %" PRIu64
						" bytes at the end of the newest segment (a writer "
						"was interrupted; it is cut off when the writer "
						"restarts)",
						size - f.offset);
				} else
					verify_say(&v, true, off,
						   "incomplete frame of %" PRIu64
						   " bytes in a segment that is not the newest",
						   size - f.offset);
				stopped = true;
				break;
			}
			if (st == SLUICE_SCAN_IO) {
				verify_say(&v, true, off, "could not read segment");
				stopped = true;
				break;
			}
			if (st == SLUICE_SCAN_UNTRUSTED) {
				char why[256];
				sluice_scan_key_problem(&f, why, sizeof(why));
				verify_say(&v, true, off, "frame %" PRIu64 ": %s", f.hdr.frame_seq,
					   why);
				stopped = true;
				break;
			}
			if (st == SLUICE_SCAN_BAD) {
				if (f.frame_status == SLUICE_FRAME_E_SIGNATURE) {
					char id[SLUICE_KEY_ID_HEX_SIZE];
					sluice_keys_id_hex(f.hdr.key_id, id);
					verify_say(&v, true, off,
						   "frame %" PRIu64
						   ": signature does not match key %s",
						   f.hdr.frame_seq, id);
				} else if (f.frame_status == SLUICE_FRAME_E_HASH)
					verify_say(&v, true, off, "frame %" PRIu64 ": %s",
						   f.hdr.frame_seq,
						   sluice_frame_strerror(f.frame_status));
				else if (f.chain_status != SLUICE_CHAIN_OK)
					verify_say(&v, true, off,
						   "frame %" PRIu64 ": incomplete, and its header "
						   "does not link: %s",
						   f.hdr.frame_seq, sluice_scan_cause(&f));
				else
					verify_say(&v, true, off, "frame header: %s",
						   sluice_scan_cause(&f));
				stopped = true;
				break;
			}

			frames++;
			report->frames++;
			sluice_chain before = chain;
			sluice_chain_status cs = sluice_chain_frame(&chain, &f.hdr, f.hash,
								    f.offset == 0, firsts[i]);
			if (cs != SLUICE_CHAIN_OK) {
				/* Not part of this stream's chain: its payload is not decoded. */
				verify_chain_problem(&v, &before, &f.hdr, off, cs, firsts[i]);
				continue;
			}
			if (f.hdr.time_max != 0 || f.hdr.time_min != 0) {
				if (!have_time || f.hdr.time_min < report->time_min)
					report->time_min = f.hdr.time_min;
				if (!have_time || f.hdr.time_max > report->time_max)
					report->time_max = f.hdr.time_max;
				have_time = true;
			}

			if (sluice_cursor_load(cursor, &f) != SLUICE_CURSOR_END) {
				verify_say(&v, true, off, "frame %" PRIu64 ": %s", f.hdr.frame_seq,
					   sluice_cursor_cause(cursor));
				continue;
			}
			const sluice_record *rec;
			sluice_cursor_status rs;
			while ((rs = sluice_cursor_next(cursor, &chain, &rec)) ==
			       SLUICE_CURSOR_RECORD) {
				report->records++;
				verify_note_record(report, rec);
			}
			if (rs != SLUICE_CURSOR_END)
				verify_say(&v, true, off, "frame %" PRIu64 ": %s", f.hdr.frame_seq,
					   sluice_cursor_cause(cursor));
		}
		sluice_scan_free(scan);
		sluice_segment_close(seg);

		if (stopped) {
			/* The rest of this segment cannot be trusted; pick the chain up again. */
			chain.anchored = false;
			continue;
		}
		if (frames == 0 && last && chain.anchored && after_seal &&
		    firsts[i] != chain.txseq_end)
			verify_say(&v, true, -1,
				   "segment holds no frames and its name is not the txseq the "
				   "stream goes on at (%" PRIu64 ")",
				   chain.txseq_end);
		else if (frames == 0)
			verify_say(&v, !last, -1, "segment holds no frames");
		else if (!last && !chain.sealed)
			verify_say(&v, true, -1,
				   "segment is not sealed but a later segment exists");
		else if (whole && !chain.sealed)
			verify_say(&v, true, -1,
				   "segment is not sealed: an object of this store is a whole "
				   "sealed segment (a partial upload the server kept?)");
		else if (last && chain.open)
			verify_say(&v, false, -1,
				   "transaction %" PRIu64 " is unfinished at the end of the stream",
				   chain.txseq_end);
	}
	ok = true;

cleanup:
	sluice_cursor_free(cursor);
	free(firsts);
	return ok;
}

bool
sluice_verify_freshness(sluice_store *store, const char *stream, const sluice_trust *trust,
			int64_t *commit_us, int64_t *heartbeat_us)
{
	sluice_stream_head head;
	bool ok = sluice_verify_head(store, stream, trust, &head);
	*commit_us = head.commit_us;
	*heartbeat_us = head.heartbeat_us;
	return ok;
}

bool
sluice_verify_head(sluice_store *store, const char *stream, const sluice_trust *trust,
		   sluice_stream_head *out)
{
	uint64_t *firsts = NULL;
	size_t n = 0;
	bool ok = false;
	memset(out, 0, sizeof(*out));
	if (!sluice_store_list(store, stream, &firsts, &n, NULL))
		return false;
	out->segments = n;
	/* A new segment is named after the transaction it starts with. */
	if (n > 0 && firsts[n - 1] > 1)
		out->txseq = firsts[n - 1] - 1;
	ok = true;
	for (size_t back = 0; back < 2 && back < n && out->heartbeat_us == 0; back++) {
		sluice_reader *r = NULL;
		if (!sluice_reader_open(store, stream, trust, firsts[n - 1 - back], &r)) {
			ok = false;
			break;
		}
		const sluice_record *rec;
		sluice_reader_status st;
		while ((st = sluice_reader_next(r, &rec)) == SLUICE_READER_RECORD ||
		       st == SLUICE_READER_REWIND)
			if (st == SLUICE_READER_RECORD)
				verify_note_times(rec, &out->commit_us, &out->heartbeat_us);
		sluice_reader_counters counters;
		sluice_reader_counters_get(r, &counters);
		if (counters.head_txseq > out->txseq)
			out->txseq = counters.head_txseq;
		sluice_reader_close(r);
		if (st == SLUICE_READER_ERROR) {
			ok = false;
			break;
		}
	}
	free(firsts);
	return ok;
}
