/* Stream writer: records into signed frames and segments, durably, with crash recovery. */
#include "writer.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "appender.h"
#include "arena.h"
#include "buf.h"
#include "chain.h"
#include "clock.h"
#include "cursor.h"
#include "frame.h"
#include "log.h"
#include "scan.h"

typedef struct writer_relation {
	uint32_t id;
	sluice_buf packed; /* owned: the Relation record, length-prefixed */
	bool emitted;      /* written into the open segment since it started */
} writer_relation;

struct sluice_writer {
	sluice_store *store;   /* borrowed */
	char *stream;          /* owned */
	const sluice_key *key; /* borrowed */
	sluice_writer_options options;
	sluice_store_lock *lock; /* owned: exclusive right to append */
	/* owned: encodes the frames and writes them to the segments, on its own thread */
	sluice_appender *app;
	bool failed;  /* an append failed: the segment tail is unknown */
	bool retired; /* handed over to another key: nothing more may be signed */

	/* open segment (as handed to the appender); none between a seal and the next transaction */
	bool seg_open;
	uint64_t seg_first;    /* txseq the open segment is named by */
	uint64_t seg_size;     /* its bytes when the appender last finished everything */
	uint64_t seg_bound;    /* at most this many more for the frames handed over since */
	int64_t seg_opened_ms; /* monotonic time the open segment was created or reopened */

	/* transactions */
	uint64_t cur_txseq; /* open transaction, 0 between transactions */
	int64_t cur_time;
	uint64_t cur_snapshot_pos; /* consistent position of an open snapshot transaction */
	uint64_t next_txseq;
	uint64_t last_txseq;   /* last committed into the pending frame or earlier */
	uint64_t last_end_lsn; /* source position (ordered) of the last commit or positioned
				  heartbeat */
	sluice_buf last_token; /* owned: its resume token (MongoDB), empty if none */
	int64_t last_commit_time;
	uint64_t written_txseq; /* last committed in a frame handed to the appender */
	uint64_t written_end_lsn;
	uint64_t asked_txseq;  /* written when a flush or seal was last asked for */
	uint64_t handed_bytes; /* record bytes handed to the appender since then */

	/* pending frame */
	sluice_buf raw; /* owned: length-prefixed records */
	uint32_t raw_records;
	bool frame_started;
	uint64_t frame_txseq_start;
	bool frame_cont;
	int64_t frame_tmin, frame_tmax;
	bool frame_has_time;
	/* pending frame at its last point between transactions (cut_len 0: none) */
	size_t cut_len;
	uint32_t cut_records;
	bool cut_has_time;
	int64_t cut_tmin, cut_tmax;
	uint64_t cut_last_txseq;
	uint64_t cut_last_end_lsn;

	writer_relation *rels; /* owned array */
	size_t nrels;
};

sluice_writer_options
sluice_writer_default_options(void)
{
	sluice_writer_options o = {
		.frame_target = 1024 * 1024,
		.segment_target = 64 * 1024 * 1024,
		.zstd_level = 1,
		.queue_frames = 4,
		.encode_threads = 2,
	};
	return o;
}

/* Result of scanning one existing segment during recovery. */
typedef struct writer_scan_result {
	uint64_t size;
	uint64_t boundary_off;    /* end of the last frame that ends between transactions */
	uint64_t boundary_frames; /* frames up to there */
	uint8_t boundary_hash[SLUICE_FRAME_HASH_SIZE];
	uint64_t boundary_next_frame_seq;
	uint64_t boundary_txseq_end;
	bool boundary_sealed;
	uint8_t boundary_key_id[SLUICE_FRAME_KEY_ID_SIZE]; /* key in force there */
	uint64_t torn_bytes;
	uint64_t partial_txseq;
	bool have_commit; /* a commit was seen before the boundary */
	uint64_t commit_txseq;
	uint64_t commit_end_lsn;
	int64_t commit_time;
	bool have_pos; /* a source position was seen before the boundary */
	uint64_t pos;  /* the last one (commit, snapshot or heartbeat) */
} writer_scan_result;

/* writer_set_token copies a record's resume token (none: empty). */
static void
writer_set_token(sluice_buf *dst, const Sluice__V1__SourcePosition *p)
{
	sluice_buf_reset(dst);
	if (p != NULL && p->has_resume_token)
		sluice_buf_append(dst, p->resume_token.data, p->resume_token.len);
}

/* writer_position_of tells the ordered source position a MongoDB SourcePosition holds. */
static bool
writer_position_of(const Sluice__V1__SourcePosition *p, uint64_t *pos)
{
	if (p == NULL || !p->has_cluster_time)
		return false;
	*pos = p->cluster_time;
	return true;
}

/*
 * writer_scan_segment reads one segment of the stream to find where it can go
 * on; *token gets the resume token of the last position before the boundary.
 */
static bool
writer_scan_segment(sluice_writer *w, uint64_t first, writer_scan_result *res, sluice_buf *token)
{
	bool ok = false;
	sluice_buf tok = {0}, snapshot_tok = {0}; /* resume tokens seen so far */
	sluice_segment *seg = NULL;
	sluice_scan *scan = NULL;
	sluice_trust *trust = sluice_trust_create();
	sluice_cursor *cursor = sluice_cursor_create();
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(first, name);
	sluice_trust_add(trust, sluice_key_public(w->key));
	sluice_trust_add_all(trust, w->options.trust);
	memset(res, 0, sizeof(*res));

	if (!sluice_store_segment_open(w->store, w->stream, first, false, false, &seg))
		goto cleanup;
	if (!sluice_segment_size(seg, &res->size))
		goto cleanup;
	scan = sluice_scan_create(seg, first, trust);

	sluice_chain chain;
	sluice_chain_init_unanchored(&chain, w->stream);
	/* Commit info seen so far, promoted to the result at each boundary. */
	bool have_commit = false;
	uint64_t commit_txseq = 0, commit_lsn = 0, snapshot_lsn = 0;
	int64_t commit_time = 0;
	bool have_pos = false;
	uint64_t frames = 0;

	for (;;) {
		sluice_scan_frame f;
		sluice_scan_status st = sluice_scan_next(scan, &chain, &f);
		if (st == SLUICE_SCAN_END)
			break;
		if (st == SLUICE_SCAN_TORN) {
			res->torn_bytes = res->size - f.offset;
			break;
		}
		if (st == SLUICE_SCAN_IO)
			goto cleanup;
		if (st == SLUICE_SCAN_UNTRUSTED) {
			char mine[SLUICE_KEY_ID_HEX_SIZE], why[256];
			sluice_keys_id_hex(sluice_key_id(w->key), mine);
			sluice_scan_key_problem(&f, why, sizeof(why));
			sluice_log_error("stream \"%s\" in store \"%s\": segment %s frame %" PRIu64
					 " at offset %" PRIu64 " is %s; this writer's key is %s%s",
					 w->stream, sluice_store_location(w->store), name,
					 f.hdr.frame_seq, f.offset, why, mine,
					 f.key_bound ? ""
						     : " (after a key rotation, pass the earlier "
						       "public key with --trust)");
			goto cleanup;
		}
		if (st == SLUICE_SCAN_BAD) {
			sluice_log_error(
				"could not recover stream \"%s\": segment %s frame at offset "
				"%" PRIu64 ": %s (run sluice verify)",
				w->stream, name, f.offset, sluice_scan_cause(&f));
			goto cleanup;
		}
		sluice_chain_status cs =
			sluice_chain_frame(&chain, &f.hdr, f.hash, f.offset == 0, first);
		if (cs != SLUICE_CHAIN_OK) {
			sluice_log_error(
				"could not recover stream \"%s\": segment %s frame at offset "
				"%" PRIu64 ": %s",
				w->stream, name, f.offset, sluice_chain_strerror(cs));
			goto cleanup;
		}
		if (sluice_cursor_load(cursor, &f) != SLUICE_CURSOR_END) {
			sluice_log_error(
				"could not recover stream \"%s\": segment %s frame at offset "
				"%" PRIu64 ": %s",
				w->stream, name, f.offset, sluice_cursor_cause(cursor));
			goto cleanup;
		}
		const sluice_record *rec;
		sluice_cursor_status rs;
		while ((rs = sluice_cursor_next(cursor, &chain, &rec)) == SLUICE_CURSOR_RECORD) {
			if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT) {
				have_commit = have_pos = true;
				commit_txseq = rec->commit->txseq;
				commit_lsn = rec->commit->has_end_lsn ? rec->commit->end_lsn : 0;
				if (!rec->commit->has_end_lsn)
					(void)writer_position_of(rec->commit->position,
								 &commit_lsn);
				writer_set_token(&tok, rec->commit->position);
				commit_time = rec->commit->commit_time_us;
			} else if (rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN) {
				const Sluice__V1__SnapshotBegin *sb = rec->snapshot_begin;
				snapshot_lsn = sb->has_consistent_lsn ? sb->consistent_lsn : 0;
				if (!sb->has_consistent_lsn)
					(void)writer_position_of(sb->position, &snapshot_lsn);
				writer_set_token(&snapshot_tok, sb->position);
			} else if (rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_END) {
				have_commit = have_pos = true;
				commit_txseq = rec->snapshot_end->txseq;
				if (snapshot_lsn > commit_lsn) {
					commit_lsn = snapshot_lsn;
					sluice_buf_reset(&tok);
					sluice_buf_append(&tok, snapshot_tok.data,
							  snapshot_tok.len);
				}
			} else if (rec->body_case == SLUICE__V1__RECORD__BODY_HEARTBEAT) {
				uint64_t hp;
				if (writer_position_of(rec->heartbeat->position, &hp) &&
				    hp > commit_lsn) {
					have_pos = true;
					commit_lsn = hp;
					writer_set_token(&tok, rec->heartbeat->position);
				}
			}
		}
		if (rs != SLUICE_CURSOR_END) {
			sluice_log_error(
				"could not recover stream \"%s\": segment %s frame at offset "
				"%" PRIu64 ": %s",
				w->stream, name, f.offset, sluice_cursor_cause(cursor));
			goto cleanup;
		}
		frames++;
		if (!(f.hdr.flags & SLUICE_FRAME_OPEN)) {
			res->boundary_off = sluice_scan_offset(scan);
			res->boundary_frames = frames;
			memcpy(res->boundary_hash, f.hash, SLUICE_FRAME_HASH_SIZE);
			res->boundary_next_frame_seq = f.hdr.frame_seq + 1;
			res->boundary_txseq_end = f.hdr.txseq_end;
			res->boundary_sealed = (f.hdr.flags & SLUICE_FRAME_SEAL) != 0;
			memcpy(res->boundary_key_id, chain.key_id, SLUICE_FRAME_KEY_ID_SIZE);
			res->partial_txseq = 0;
			res->have_commit = have_commit;
			res->commit_txseq = commit_txseq;
			res->commit_end_lsn = commit_lsn;
			res->commit_time = commit_time;
			res->have_pos = have_pos;
			res->pos = commit_lsn;
			sluice_buf_reset(token);
			sluice_buf_append(token, tok.data, tok.len);
		} else {
			res->partial_txseq = f.hdr.txseq_end;
		}
	}
	ok = true;

cleanup:
	sluice_buf_free(&tok);
	sluice_buf_free(&snapshot_tok);
	sluice_cursor_free(cursor);
	sluice_scan_free(scan);
	sluice_segment_close(seg);
	sluice_trust_free(trust);
	return ok;
}

/*
 * writer_recover finds the end of an existing stream and prepares to continue
 * it; *tail receives where the appender goes on (its segment owned by the caller).
 */
static bool
writer_recover(sluice_writer *w, sluice_writer_recovery *rec, sluice_appender_tail *tail)
{
	bool ok = false;
	uint64_t *firsts = NULL;
	size_t n = 0;
	if (!sluice_store_list(w->store, w->stream, &firsts, &n, NULL))
		goto cleanup;

	/* Defaults: an empty stream starts at its genesis. */
	sluice_frame_genesis(w->stream, tail->prev_hash);
	tail->next_frame_seq = 0;
	w->next_txseq = 1;

	size_t idx = n;
	const size_t listed = n;
	bool drop = false;
	writer_scan_result res;
	memset(&res, 0, sizeof(res));
	while (idx > 0) {
		idx--;
		if (!writer_scan_segment(w, firsts[idx], &res, &w->last_token))
			goto cleanup;
		if (res.boundary_frames > 0)
			break;
		/* Nothing complete in it: an interrupted first transaction. Drop it. */
		if (idx + 1 != listed) {
			char name[SLUICE_SEGMENT_NAME_SIZE];
			sluice_store_segment_name(firsts[idx], name);
			sluice_log_error("could not recover stream \"%s\": segment %s holds no "
					 "complete frame but is not the newest",
					 w->stream, name);
			goto cleanup;
		}
		rec->torn_bytes += res.torn_bytes;
		rec->partial_bytes += res.size - res.torn_bytes;
		rec->partial_txseq = res.partial_txseq;
		drop = true;
		n--;
	}
	if (drop) {
		/* Only the segment the writer would create next may be dropped. */
		uint64_t expect = n == 0 ? 1 : res.boundary_sealed ? res.boundary_txseq_end : 0;
		if (firsts[listed - 1] != expect) {
			char name[SLUICE_SEGMENT_NAME_SIZE];
			sluice_store_segment_name(firsts[listed - 1], name);
			sluice_log_error("could not recover stream \"%s\": segment %s holds no "
					 "complete frame and is not the segment the stream goes on "
					 "in (%s; run sluice verify)",
					 w->stream, name,
					 expect == 0 ? "the segment before it is not sealed"
						     : "its name is not the next txseq");
			goto cleanup;
		}
		rec->removed_segment = true;
		if (!sluice_store_segment_remove(w->store, w->stream, firsts[listed - 1]))
			goto cleanup;
	}
	if (n == 0) {
		ok = true;
		goto cleanup;
	}
	if (idx + 1 != n) {
		/* Should be unreachable: the loop stops at the newest kept segment. */
		sluice_log_error("could not recover stream \"%s\": inconsistent segment list",
				 w->stream);
		goto cleanup;
	}

	if (memcmp(res.boundary_key_id, sluice_key_id(w->key), SLUICE_FRAME_KEY_ID_SIZE) != 0) {
		char in_force[SLUICE_KEY_ID_HEX_SIZE], mine[SLUICE_KEY_ID_HEX_SIZE];
		sluice_keys_id_hex(res.boundary_key_id, in_force);
		sluice_keys_id_hex(sluice_key_id(w->key), mine);
		sluice_log_error("stream \"%s\" in store \"%s\": the key in force at its end is "
				 "%s, not this writer's key %s (only a handover signed by %s, "
				 "sluice rotate-key, passes the stream to another key)",
				 w->stream, sluice_store_location(w->store), in_force, mine,
				 in_force);
		goto cleanup;
	}
	uint64_t first = firsts[idx];
	memcpy(tail->prev_hash, res.boundary_hash, SLUICE_FRAME_HASH_SIZE);
	tail->next_frame_seq = res.boundary_next_frame_seq;
	w->next_txseq = res.boundary_txseq_end;
	w->last_txseq = w->next_txseq - 1;
	w->written_txseq = w->asked_txseq = w->last_txseq;
	tail->synced.txseq = tail->sealed.txseq = w->last_txseq;

	if (res.boundary_off < res.size) {
		rec->torn_bytes += res.torn_bytes;
		rec->partial_bytes += res.size - res.boundary_off - res.torn_bytes;
		rec->partial_txseq = res.partial_txseq;
	}
	if (!res.boundary_sealed) {
		if (!sluice_store_segment_open(w->store, w->stream, first, true, false, &tail->seg))
			goto cleanup;
		if (res.boundary_off < res.size &&
		    !sluice_segment_truncate(tail->seg, res.boundary_off))
			goto cleanup;
		/*
		 * What a killed writer wrote may still be only in the page cache:
		 * make it durable before counting it so (the truncate syncs too).
		 */
		if (res.boundary_off >= res.size && !sluice_segment_write(tail->seg, "", 0, true))
			goto cleanup;
		tail->seg_size = res.boundary_off;
		tail->seg_frames = res.boundary_frames;
		w->seg_open = true;
		w->seg_size = res.boundary_off;
		w->seg_first = first;
		w->seg_opened_ms = sluice_clock_mono_ms();
	} else if (res.boundary_off < res.size) {
		sluice_log_error("could not recover stream \"%s\": bytes follow the seal of the "
				 "newest segment",
				 w->stream);
		goto cleanup;
	}

	/* The last commit may lie in an earlier segment (e.g. a heartbeat-only tail). */
	bool have_pos = res.have_pos;
	uint64_t pos = res.pos;
	sluice_buf scratch = {0};
	while (!res.have_commit && idx > 0) {
		idx--;
		/* A heartbeat's position in a later segment is newer than any found here. */
		if (!writer_scan_segment(w, firsts[idx], &res,
					 have_pos ? &scratch : &w->last_token)) {
			sluice_buf_free(&scratch);
			goto cleanup;
		}
		if (!have_pos && res.have_pos) {
			have_pos = true;
			pos = res.pos;
		}
	}
	sluice_buf_free(&scratch);
	if (have_pos)
		w->last_end_lsn = w->written_end_lsn = tail->synced.position =
			tail->sealed.position = pos;
	/*
	 * What a segment still being written holds is not sealed: with a store
	 * that is durable only at a seal, it is in the writer's spool alone.
	 */
	if (w->seg_open) {
		tail->sealed.txseq = w->seg_first - 1;
		tail->sealed.position = 0;
	}
	if (res.have_commit) {
		w->last_commit_time = res.commit_time;
	}
	ok = true;

cleanup:
	free(firsts);
	return ok;
}

bool
sluice_writer_open(sluice_store *store, const char *stream, const sluice_key *key,
		   const sluice_writer_options *options, sluice_writer **out,
		   sluice_writer_recovery *recovery)
{
	if (!sluice_store_valid_stream_name(stream)) {
		sluice_log_error("invalid stream name \"%s\": use letters, digits, '.', '_' and "
				 "'-' (not starting with '.')",
				 stream);
		return false;
	}
	sluice_writer *w = calloc(1, sizeof(*w));
	if (w == NULL)
		abort();
	w->store = store;
	w->stream = strdup(stream);
	if (w->stream == NULL)
		abort();
	w->key = key;
	w->options = options ? *options : sluice_writer_default_options();
	if (w->options.frame_target == 0)
		w->options.frame_target = 1;
	if (!sluice_store_lock_stream(store, stream, &w->lock))
		goto fail;
	sluice_writer_recovery rec = {0};
	sluice_appender_tail tail = {0};
	if (!writer_recover(w, &rec, &tail)) {
		sluice_segment_close(tail.seg);
		goto fail;
	}
	sluice_appender_options ao = {
		.zstd_level = w->options.zstd_level,
		.max_chunk = sluice_store_caps_get(store)->max_chunk,
		.depth = w->options.queue_frames,
		.encoders = w->options.encode_threads,
	};
	if (ao.max_chunk < w->options.frame_target)
		ao.max_chunk = w->options.frame_target;
	w->app = sluice_appender_create(store, stream, key, &ao, &tail);
	if (w->app == NULL)
		goto fail;
	if (rec.torn_bytes > 0 || rec.partial_bytes > 0)
		sluice_log_warn("stream \"%s\": cut off %" PRIu64 " bytes of a torn frame and "
				"%" PRIu64 " bytes of unfinished transaction %" PRIu64
				" left by an interrupted writer",
				stream, rec.torn_bytes, rec.partial_bytes, rec.partial_txseq);
	if (recovery != NULL)
		*recovery = rec;
	*out = w;
	return true;

fail:
	w->failed = true;
	sluice_writer_close(w);
	return false;
}

static bool writer_seal(sluice_writer *w);

/* writer_ensure_segment creates the next segment, named by the next txseq, if none is open. */
static bool
writer_ensure_segment(sluice_writer *w)
{
	if (w->seg_open)
		return true;
	if (!sluice_appender_open_segment(w->app, w->next_txseq)) {
		w->failed = true;
		return false;
	}
	w->seg_open = true;
	w->seg_first = w->next_txseq;
	w->seg_size = 0;
	w->seg_bound = 0;
	w->seg_opened_ms = sluice_clock_mono_ms();
	for (size_t i = 0; i < w->nrels; i++)
		w->rels[i].emitted = false;
	return true;
}

/*
 * writer_emit hands raw[0..len) to the appender as one frame with the given
 * header fields; what follows it stays in raw, moved to its start.
 */
static bool
writer_emit(sluice_writer *w, size_t len, uint32_t records, uint16_t flags, uint64_t txseq_start,
	    uint64_t txseq_end, bool has_time, int64_t tmin, int64_t tmax)
{
	if (!writer_ensure_segment(w))
		return false;
	sluice_frame_header hdr;
	memset(&hdr, 0, sizeof(hdr));
	hdr.flags = flags;
	hdr.txseq_start = txseq_start;
	hdr.txseq_end = txseq_end;
	if (has_time) {
		hdr.time_min = tmin;
		hdr.time_max = tmax;
	}
	hdr.record_count = records;
	if (!sluice_appender_frame(w->app, &hdr, &w->raw, len)) {
		w->failed = true;
		return false;
	}
	w->seg_bound += sluice_frame_encoded_bound(len);
	w->handed_bytes += len;
	return true;
}

/*
 * writer_ask hands the appender a push (or a seal of the open segment) of
 * everything written so far, without waiting for it.
 */
static bool
writer_ask(sluice_writer *w, bool seal)
{
	sluice_appender_mark mark = {.txseq = w->written_txseq, .position = w->written_end_lsn};
	if (!(seal ? sluice_appender_seal(w->app, mark) : sluice_appender_push(w->app, mark))) {
		w->failed = true;
		return false;
	}
	w->asked_txseq = w->written_txseq;
	w->handed_bytes = 0;
	if (seal)
		w->seg_open = false;
	return true;
}

/* writer_wait waits until the appender has done everything; the segment's size is then exact. */
static bool
writer_wait(sluice_writer *w)
{
	if (!sluice_appender_wait(w->app)) {
		w->failed = true;
		return false;
	}
	w->seg_size = sluice_appender_segment_size(w->app);
	w->seg_bound = 0;
	return true;
}

/* writer_durable: the mark of what the store keeps durably (all it took, or sealed segments). */
static sluice_appender_mark
writer_durable(const sluice_writer *w)
{
	sluice_appender_mark synced, sealed;
	sluice_appender_marks(w->app, &synced, &sealed);
	return sluice_store_caps_get(w->store)->durable_write ? synced : sealed;
}

/*
 * writer_segment_full tells whether the open segment, with the pending
 * records, has reached its target size. The frames still in the appender's
 * queue count at their largest; only when that could reach the target does
 * it wait for their real size, so segments end where they would if each
 * frame were written at once.
 */
static bool
writer_segment_full(sluice_writer *w, bool *full)
{
	*full = false;
	if (!w->seg_open || w->last_txseq < w->seg_first ||
	    w->seg_size + w->seg_bound + w->raw.len < w->options.segment_target)
		return true;
	if (w->seg_bound > 0 && !writer_wait(w))
		return false;
	*full = w->seg_size + w->raw.len >= w->options.segment_target;
	return true;
}

/* writer_reset_pending empties the pending frame. */
static void
writer_reset_pending(sluice_writer *w)
{
	sluice_buf_reset(&w->raw);
	w->raw_records = 0;
	w->frame_started = false;
	w->frame_has_time = false;
	w->cut_len = 0;
}

/*
 * writer_write_frame writes the pending records. While a transaction is open
 * and the pending records also hold the end of an earlier transaction, the
 * frame is split at that boundary first, so that every commit ends a frame
 * that ends between transactions: recovery keeps exactly those frames, and a
 * commit reported durable must survive it. With all unset (a cut by size),
 * what remains after the split stays pending unless it is itself too large.
 */
static bool
writer_write_frame(sluice_writer *w, uint16_t extra_flags, bool all)
{
	if (!w->frame_started) {
		w->frame_txseq_start = w->cur_txseq ? w->cur_txseq : w->next_txseq;
		w->frame_cont = w->cur_txseq != 0;
	}
	if (w->cur_txseq != 0 && w->cut_len > 0 && w->cut_len < w->raw.len) {
		uint16_t flags = w->frame_cont ? SLUICE_FRAME_CONT : 0;
		if (!writer_emit(w, w->cut_len, w->cut_records, flags, w->frame_txseq_start,
				 w->cut_last_txseq + 1, w->cut_has_time, w->cut_tmin, w->cut_tmax))
			return false;
		w->written_txseq = w->cut_last_txseq;
		w->written_end_lsn = w->cut_last_end_lsn;
		/* The rest, now at the start of raw, starts with the open transaction's Begin. */
		w->raw_records -= w->cut_records;
		w->frame_txseq_start = w->cur_txseq;
		w->frame_cont = false;
		w->frame_has_time = true;
		w->frame_tmin = w->frame_tmax = w->cur_time;
		w->cut_len = 0;
		if (!all && w->raw.len < w->options.frame_target)
			return true;
	}
	if (w->raw_records == 0 && extra_flags == 0) {
		writer_reset_pending(w);
		return true;
	}
	uint16_t flags = extra_flags;
	if (w->frame_cont)
		flags |= SLUICE_FRAME_CONT;
	if (w->cur_txseq != 0)
		flags |= SLUICE_FRAME_OPEN;
	if (!writer_emit(w, w->raw.len, w->raw_records, flags, w->frame_txseq_start,
			 w->cur_txseq ? w->cur_txseq : w->next_txseq, w->frame_has_time,
			 w->frame_tmin, w->frame_tmax))
		return false;
	w->written_txseq = w->last_txseq;
	w->written_end_lsn = w->last_end_lsn;
	writer_reset_pending(w);
	return true;
}

/* writer_note_record updates the pending frame's bookkeeping after one record. */
static void
writer_note_record(sluice_writer *w)
{
	w->raw_records++;
	if (w->cur_txseq != 0) {
		if (!w->frame_has_time) {
			w->frame_tmin = w->frame_tmax = w->cur_time;
			w->frame_has_time = true;
		} else {
			if (w->cur_time < w->frame_tmin)
				w->frame_tmin = w->cur_time;
			if (w->cur_time > w->frame_tmax)
				w->frame_tmax = w->cur_time;
		}
	}
}

/* writer_start_record opens the pending frame before a record is added to it. */
static void
writer_start_record(sluice_writer *w, bool is_begin)
{
	if (w->frame_started)
		return;
	w->frame_started = true;
	/* A Begin opens the frame between transactions, not inside one. */
	w->frame_txseq_start = w->cur_txseq ? w->cur_txseq : w->next_txseq;
	w->frame_cont = w->cur_txseq != 0 && !is_begin;
}

/* writer_mark_boundary remembers the pending frame's state between transactions. */
static void
writer_mark_boundary(sluice_writer *w)
{
	w->cut_len = w->raw.len;
	w->cut_records = w->raw_records;
	w->cut_has_time = w->frame_has_time;
	w->cut_tmin = w->frame_tmin;
	w->cut_tmax = w->frame_tmax;
	w->cut_last_txseq = w->last_txseq;
	w->cut_last_end_lsn = w->last_end_lsn;
}

/* writer_add_raw appends one packed record (a relation) to the pending frame. */
static void
writer_add_raw(sluice_writer *w, const uint8_t *data, size_t len)
{
	writer_start_record(w, false);
	sluice_buf_append(&w->raw, data, len);
	writer_note_record(w);
}

static writer_relation *
writer_find_relation(sluice_writer *w, uint32_t id)
{
	for (size_t i = 0; i < w->nrels; i++)
		if (w->rels[i].id == id)
			return &w->rels[i];
	return NULL;
}

/* writer_need_relation writes relation id into the segment if it is not there yet. */
static void
writer_need_relation(sluice_writer *w, uint32_t id)
{
	writer_relation *r = writer_find_relation(w, id);
	if (r == NULL || r->emitted)
		return;
	writer_add_raw(w, r->packed.data, r->packed.len);
	r->emitted = true;
}

/*
 * writer_maybe_cut writes the pending frame once it reaches the target size,
 * or half the records readers accept in a frame (the relations written before
 * a change are added without a check, so the margin keeps every frame legal).
 */
static bool
writer_maybe_cut(sluice_writer *w)
{
	if (w->raw.len < w->options.frame_target && w->raw_records < SLUICE_FRAME_MAX_RECORDS / 2)
		return true;
	return writer_write_frame(w, 0, false);
}

bool
sluice_writer_append(sluice_writer *w, sluice_record *rec)
{
	if (w->failed) {
		sluice_log_error("stream \"%s\": writer stopped after an earlier failure",
				 w->stream);
		return false;
	}
	if (w->retired) {
		sluice_log_error("stream \"%s\": this writer's key was handed over; reopen the "
				 "stream with the successor's key",
				 w->stream);
		return false;
	}
	if (rec->body_case == SLUICE__V1__RECORD__BODY_KEY_HANDOVER) {
		sluice_log_error("stream \"%s\": a key handover is written only by "
				 "sluice_writer_handover",
				 w->stream);
		return false;
	}
	uint32_t relid;
	switch (rec->body_case) {
	case SLUICE__V1__RECORD__BODY_RELATION: {
		/* Kept, and written lazily before the first change in each segment. */
		writer_relation *r = writer_find_relation(w, rec->relation->id);
		if (r == NULL) {
			writer_relation *p = realloc(w->rels, (w->nrels + 1) * sizeof(*p));
			if (p == NULL)
				abort();
			w->rels = p;
			r = &w->rels[w->nrels++];
			memset(r, 0, sizeof(*r));
			r->id = rec->relation->id;
		}
		sluice_buf_reset(&r->packed);
		sluice_records_pack(rec, &r->packed);
		r->emitted = false;
		return true;
	}
	case SLUICE__V1__RECORD__BODY_BEGIN:
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN:
		if (w->cur_txseq != 0) {
			sluice_log_error("stream \"%s\": %s while transaction %" PRIu64 " is open",
					 w->stream, sluice_records_type_name(rec), w->cur_txseq);
			return false;
		}
		if (!writer_ensure_segment(w))
			return false;
		w->cur_txseq = w->next_txseq;
		if (rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN) {
			rec->begin->txseq = w->cur_txseq;
			w->cur_time = rec->begin->commit_time_us;
		} else {
			rec->snapshot_begin->txseq = w->cur_txseq;
			w->cur_time = rec->snapshot_begin->time_us;
			w->cur_snapshot_pos = rec->snapshot_begin->has_consistent_lsn
						      ? rec->snapshot_begin->consistent_lsn
						      : 0;
			if (!rec->snapshot_begin->has_consistent_lsn)
				(void)writer_position_of(rec->snapshot_begin->position,
							 &w->cur_snapshot_pos);
		}
		w->next_txseq++;
		break;
	case SLUICE__V1__RECORD__BODY_COMMIT:
	case SLUICE__V1__RECORD__BODY_SNAPSHOT_END:
		if (w->cur_txseq == 0) {
			sluice_log_error("stream \"%s\": %s without an open transaction", w->stream,
					 sluice_records_type_name(rec));
			return false;
		}
		if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT) {
			rec->commit->txseq = w->cur_txseq;
			/* The commit time is the begin's: both come from the source's commit. */
			rec->commit->commit_time_us = w->cur_time;
		} else
			rec->snapshot_end->txseq = w->cur_txseq;
		break;
	case SLUICE__V1__RECORD__BODY_TRUNCATE:
		if (w->cur_txseq == 0)
			goto no_txn;
		for (size_t i = 0; i < rec->truncate->n_relation_ids; i++)
			writer_need_relation(w, rec->truncate->relation_ids[i]);
		break;
	case SLUICE__V1__RECORD__BODY_HEARTBEAT:
		if (w->cur_txseq != 0) {
			sluice_log_error("stream \"%s\": heartbeat inside transaction %" PRIu64,
					 w->stream, w->cur_txseq);
			return false;
		}
		if (!writer_ensure_segment(w))
			return false;
		break;
	default:
		if (sluice_records_relation_id(rec, &relid)) {
			if (w->cur_txseq == 0)
				goto no_txn;
			writer_need_relation(w, relid);
		} else if (!writer_ensure_segment(w))
			return false;
		break;
	}

	/* Pack straight into the pending frame. */
	bool is_begin = rec->body_case == SLUICE__V1__RECORD__BODY_BEGIN ||
			rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN;
	writer_start_record(w, is_begin);
	sluice_records_pack(rec, &w->raw);
	writer_note_record(w);

	if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT ||
	    rec->body_case == SLUICE__V1__RECORD__BODY_SNAPSHOT_END) {
		w->last_txseq = w->cur_txseq;
		if (rec->body_case == SLUICE__V1__RECORD__BODY_COMMIT) {
			w->last_end_lsn = rec->commit->has_end_lsn ? rec->commit->end_lsn : 0;
			if (!rec->commit->has_end_lsn)
				(void)writer_position_of(rec->commit->position, &w->last_end_lsn);
			writer_set_token(&w->last_token, rec->commit->position);
			w->last_commit_time = rec->commit->commit_time_us;
		} else if (w->cur_snapshot_pos > w->last_end_lsn) {
			/* Changes after a snapshot start at its consistent point (a time, no
			 * token). */
			w->last_end_lsn = w->cur_snapshot_pos;
			sluice_buf_reset(&w->last_token);
		}
		w->cur_txseq = 0;
	} else if (rec->body_case == SLUICE__V1__RECORD__BODY_HEARTBEAT) {
		uint64_t hp;
		/* A heartbeat at a commit's own position never replaces its token. */
		if (writer_position_of(rec->heartbeat->position, &hp) && hp > w->last_end_lsn) {
			w->last_end_lsn = hp;
			writer_set_token(&w->last_token, rec->heartbeat->position);
		}
	}
	if (w->cur_txseq == 0) {
		writer_mark_boundary(w);
		bool full;
		if (!writer_segment_full(w, &full))
			return false;
		if (full)
			return writer_seal(w);
	}
	return writer_maybe_cut(w);

no_txn:
	sluice_log_error("stream \"%s\": %s outside a transaction", w->stream,
			 sluice_records_type_name(rec));
	return false;
}

/* writer_seal_due tells whether the open segment has reached its maximum age. */
static bool
writer_seal_due(const sluice_writer *w)
{
	return w->options.segment_max_age_ms > 0 && w->seg_open && w->cur_txseq == 0 &&
	       w->last_txseq >= w->seg_first &&
	       sluice_clock_mono_ms() - w->seg_opened_ms >= w->options.segment_max_age_ms;
}

bool
sluice_writer_flush_async(sluice_writer *w)
{
	if (w->failed)
		return false;
	if (writer_seal_due(w))
		return writer_seal(w);
	if (w->raw_records > 0 && !writer_write_frame(w, 0, true))
		return false;
	return writer_ask(w, false);
}

bool
sluice_writer_flush(sluice_writer *w)
{
	return sluice_writer_flush_async(w) && writer_wait(w);
}

bool
sluice_writer_flush_due(const sluice_writer *w)
{
	return w->last_txseq > w->asked_txseq || sluice_writer_seal_due_ms(w) == 0;
}

uint64_t
sluice_writer_unflushed_bytes(const sluice_writer *w)
{
	return w->handed_bytes + w->raw.len;
}

bool
sluice_writer_flushing(const sluice_writer *w)
{
	return sluice_appender_pending(w->app);
}

bool
sluice_writer_failed(const sluice_writer *w)
{
	return w->failed || sluice_appender_failed(w->app);
}

int64_t
sluice_writer_seal_due_ms(const sluice_writer *w)
{
	if (w->options.segment_max_age_ms <= 0 || !w->seg_open || w->last_txseq < w->seg_first)
		return -1;
	int64_t left = w->options.segment_max_age_ms - (sluice_clock_mono_ms() - w->seg_opened_ms);
	return left > 0 ? left : 0;
}

/* writer_seal writes the pending records and a seal frame and hands the seal over. */
static bool
writer_seal(sluice_writer *w)
{
	if (w->failed)
		return false;
	if (w->cur_txseq != 0) {
		sluice_log_error("stream \"%s\": cannot seal a segment inside transaction %" PRIu64,
				 w->stream, w->cur_txseq);
		return false;
	}
	if (!w->seg_open)
		return true;
	/* A segment is named by its first transaction: never seal one without any. */
	if (w->last_txseq < w->seg_first)
		return sluice_writer_flush_async(w);
	if (w->raw_records > 0 && !writer_write_frame(w, 0, true))
		return false;
	/* The seal frame has no records: it says that nothing follows. */
	if (!writer_write_frame(w, SLUICE_FRAME_SEAL, true))
		return false;
	return writer_ask(w, true);
}

bool
sluice_writer_seal(sluice_writer *w)
{
	return writer_seal(w) && writer_wait(w);
}

bool
sluice_writer_handover(sluice_writer *w, const uint8_t next_pk[32], const char *reason)
{
	if (w->failed || w->retired) {
		sluice_log_error("stream \"%s\": cannot hand over: the writer %s", w->stream,
				 w->failed ? "stopped after an earlier failure"
					   : "already handed its key over");
		return false;
	}
	if (w->cur_txseq != 0) {
		sluice_log_error("stream \"%s\": cannot hand over the key inside transaction "
				 "%" PRIu64,
				 w->stream, w->cur_txseq);
		return false;
	}
	uint8_t next_id[SLUICE_FRAME_KEY_ID_SIZE];
	sluice_keys_id(next_pk, next_id);
	if (memcmp(next_id, sluice_key_id(w->key), SLUICE_FRAME_KEY_ID_SIZE) == 0) {
		sluice_log_error("stream \"%s\": cannot hand over the key to itself", w->stream);
		return false;
	}
	if (w->raw_records > 0 && !writer_write_frame(w, 0, true))
		return false;
	writer_reset_pending(w);

	Sluice__V1__KeyHandover ho = SLUICE__V1__KEY_HANDOVER__INIT;
	ho.next_public_key.data = (uint8_t *)next_pk;
	ho.next_public_key.len = 32;
	ho.reason = (char *)reason;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_KEY_HANDOVER;
	rec.key_handover = &ho;
	sluice_records_pack(&rec, &w->raw);
	/* Its own frame, so that the next frame is the successor's first. */
	bool ok = writer_emit(w, w->raw.len, 1, 0, w->next_txseq, w->next_txseq, false, 0, 0);
	writer_reset_pending(w);
	if (!ok)
		return false;
	w->written_txseq = w->last_txseq;
	w->written_end_lsn = w->last_end_lsn;
	w->retired = true;
	return sluice_writer_flush(w);
}

bool
sluice_writer_close(sluice_writer *w)
{
	if (w == NULL)
		return true;
	bool ok = true;
	if (!w->failed)
		ok = sluice_writer_flush(w);
	sluice_appender_free(w->app);
	for (size_t i = 0; i < w->nrels; i++)
		sluice_buf_free(&w->rels[i].packed);
	free(w->rels);
	sluice_buf_free(&w->raw);
	sluice_buf_free(&w->last_token);
	sluice_store_unlock(w->lock);
	free(w->stream);
	free(w);
	return ok;
}

uint64_t
sluice_writer_last_txseq(const sluice_writer *w)
{
	return w->last_txseq;
}

uint64_t
sluice_writer_durable_txseq(const sluice_writer *w)
{
	return writer_durable(w).txseq;
}

uint64_t
sluice_writer_synced_txseq(const sluice_writer *w)
{
	sluice_appender_mark synced, sealed;
	sluice_appender_marks(w->app, &synced, &sealed);
	return synced.txseq;
}

uint64_t
sluice_writer_durable_position(const sluice_writer *w)
{
	return writer_durable(w).position;
}

uint64_t
sluice_writer_last_position(const sluice_writer *w)
{
	return w->last_end_lsn;
}

const uint8_t *
sluice_writer_last_token(const sluice_writer *w, size_t *len)
{
	*len = w->last_token.len;
	return w->last_token.len ? w->last_token.data : NULL;
}

int64_t
sluice_writer_last_commit_time(const sluice_writer *w)
{
	return w->last_commit_time;
}

bool
sluice_writer_in_transaction(const sluice_writer *w)
{
	return w->cur_txseq != 0;
}

void
sluice_writer_counters(const sluice_writer *w, uint64_t *frames, uint64_t *bytes)
{
	*frames = *bytes = 0;
	if (w->app != NULL)
		sluice_appender_counters(w->app, frames, bytes);
}
