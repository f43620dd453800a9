/* Capture engine: txseq, flush cadence, durable acknowledgement, heartbeats, bounds, retry. */
#include "engine.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backoff.h"
#include "buf.h"
#include "clock.h"
#include "log.h"
#include "records.h"

struct sluice_capture_sink {
	const sluice_capture_options *o;
	const sluice_source_ops *ops;
	void *src;             /* borrowed: the source's state */
	sluice_store *store;   /* borrowed */
	const sluice_key *key; /* borrowed */
	sluice_writer *w;      /* owned */
	sluice_capture_stats *stats;

	/* the source transaction being received */
	bool in_txn;
	bool skip; /* filtered out: replication origin, or already in the stream */
	bool skip_is_dup;
	bool begin_written;      /* its Begin record is in the writer */
	Sluice__V1__Begin begin; /* as the source described it; origin_node set on write */
	char origin[256];
	uint64_t origin_lsn;
	uint32_t changes;

	/* positions */
	uint64_t resume; /* transactions ending below are already in the stream */
	uint64_t received;
	sluice_buf received_token; /* owned: the newest resume token (cluster-time sources) */
	uint64_t token_position;   /* the position that token stands for */
	uint64_t acked;            /* durable position last reported to the source */
	uint64_t ackable;          /* durable position that may be reported */
	uint64_t skipped_end;   /* end of the last skipped transaction, ackable once all before is
				   durable */
	uint64_t skipped_txseq; /* the stream's last transaction when it was skipped */
	uint64_t idle_position; /* the newest position reported between transactions: ackable once
				   all before it is durable */
	uint64_t idle_txseq;    /* the stream's last transaction then */
	uint64_t target; /* --exit-when-caught-up: stop at transactions committed from here */
	bool done;
	bool fatal;   /* the stream cannot be written: do not reconnect */
	bool restart; /* the source asked to start again at once */

	int64_t last_status_ms, last_flush_ms, last_heartbeat_ms, last_log_ms, last_report_ms;
	bool flush_asked; /* a flush was handed to the writer and not seen done yet */
	uint64_t base_frames, base_bytes; /* written by writers closed before this one */
	uint64_t unflushed_since_ms; /* when the oldest not-yet-durable commit arrived, 0: none */
};

typedef struct sluice_capture_sink engine;

/* How often to look whether a flush under way is done, when idle. */
#define ENGINE_FLUSH_POLL_MS 2
/* Flushes of at most this many record bytes are waited for (engine_flush_due_now). */
#define ENGINE_WAIT_FLUSH_BYTES (256 * 1024)

/* engine_ack reports the received and durable positions to the source. */
static bool
engine_ack(engine *e, bool reply_requested)
{
	if (!e->ops->ack(e->src, e->received, e->ackable, reply_requested))
		return false;
	e->acked = e->ackable;
	e->stats->acked_lsn = e->acked;
	e->last_status_ms = sluice_clock_mono_ms();
	return true;
}

/*
 * engine_report refreshes the live counters and hands them to the report
 * callback, at most once a second unless forced.
 */
static void
engine_report(engine *e, bool force)
{
	if (e->o->report == NULL)
		return;
	int64_t now = sluice_clock_mono_ms();
	if (!force && now - e->last_report_ms < 1000)
		return;
	e->last_report_ms = now;
	sluice_capture_stats *s = e->stats;
	s->lsn_positions = e->ops->position_kind == SLUICE_SOURCE_POSITION_LSN;
	s->received_position = e->received;
	s->acked_lsn = e->acked;
	if (e->w != NULL) {
		uint64_t frames, bytes;
		sluice_writer_counters(e->w, &frames, &bytes);
		s->frames = e->base_frames + frames;
		s->bytes = e->base_bytes + bytes;
		s->durable_txseq = sluice_writer_durable_txseq(e->w);
		if (s->durable_txseq == sluice_writer_last_txseq(e->w))
			s->durable_commit_us = sluice_writer_last_commit_time(e->w);
	}
	e->o->report(e->o->report_arg, s);
}

/*
 * engine_note_durable advances what may be acknowledged to what the writer
 * has made durable. False once the writer failed: the stream cannot be written.
 */
static bool
engine_note_durable(engine *e)
{
	if (sluice_writer_failed(e->w)) {
		e->fatal = true;
		return false;
	}
	/* The gap before the next flush counts from the end of this one, as when flushes waited. */
	if (e->flush_asked && !sluice_writer_flushing(e->w)) {
		e->flush_asked = false;
		e->last_flush_ms = sluice_clock_mono_ms();
	}
	uint64_t durable = sluice_writer_durable_position(e->w);
	if (durable > e->ackable)
		e->ackable = durable;
	/*
	 * Positions reached between transactions (a skipped transaction's end,
	 * an idle source's own) count once every transaction the stream took
	 * before them is durable.
	 */
	uint64_t durable_txseq = sluice_writer_durable_txseq(e->w);
	if (e->skipped_end > e->ackable && durable_txseq >= e->skipped_txseq)
		e->ackable = e->skipped_end;
	if (e->idle_position > e->ackable && durable_txseq >= e->idle_txseq)
		e->ackable = e->idle_position;
	return true;
}

/*
 * engine_flush asks the writer to make everything written durable, and with
 * wait returns once it is; without, the writer's threads do it while the
 * source goes on (engine_note_durable sees it done).
 */
static bool
engine_flush(engine *e, bool wait)
{
	if (!(wait ? sluice_writer_flush(e->w) : sluice_writer_flush_async(e->w))) {
		e->fatal = true;
		return false;
	}
	e->flush_asked = true;
	e->unflushed_since_ms = 0;
	return engine_note_durable(e);
}

/*
 * engine_flush_due_now asks for the flush that is due. A small one (after
 * small transactions) is waited for: it takes about as long as handing it
 * to the writer's threads and noticing it done, and what the source sends
 * meanwhile is then read in one go instead of in many small wake-ups. A
 * large one (after a large transaction: the fsync of many megabytes) is left
 * to the writer's threads while receiving goes on.
 */
static bool
engine_flush_due_now(engine *e)
{
	return engine_flush(e, sluice_writer_unflushed_bytes(e->w) <= ENGINE_WAIT_FLUSH_BYTES);
}

/*
 * engine_may_flush: one flush at a time. Under way, it carries what came
 * before it; what comes meanwhile waits for the next (as when flushes
 * waited, but without stopping the receive loop).
 */
static bool
engine_may_flush(const engine *e)
{
	return !sluice_writer_flushing(e->w);
}

/* engine_has_unflushed: something received is not durable yet (not acknowledgeable). */
static bool
engine_has_unflushed(const engine *e)
{
	return sluice_writer_last_txseq(e->w) > sluice_writer_durable_txseq(e->w) ||
	       e->skipped_end > e->ackable;
}

/*
 * engine_has_unsynced: a flush has work to do now (skipped transactions
 * need none: engine_note_durable counts them). With a store that is durable
 * only at a seal, what the spool holds waits for the seal by age.
 */
static bool
engine_has_unsynced(const engine *e)
{
	return sluice_writer_flush_due(e->w);
}

/* engine_mark_unflushed starts the max_flush_delay_ms clock at the oldest unflushed commit. */
static void
engine_mark_unflushed(engine *e)
{
	if (e->unflushed_since_ms == 0)
		e->unflushed_since_ms = (uint64_t)sluice_clock_mono_ms();
}

/* engine_write_begin writes the Begin record of the current transaction, once. */
static bool
engine_write_begin(engine *e)
{
	if (e->begin_written)
		return true;
	Sluice__V1__Begin b = e->begin;
	b.origin_node = (char *)(e->origin[0] ? e->origin : e->o->node);
	if (e->origin[0]) {
		b.has_origin_lsn = true;
		b.origin_lsn = e->origin_lsn;
	}
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_BEGIN;
	rec.begin = &b;
	if (!sluice_writer_append(e->w, &rec))
		return false;
	e->begin_written = true;
	if (e->stats->first_txseq == 0)
		e->stats->first_txseq = b.txseq;
	return true;
}

bool
sluice_capture_sink_begin(sluice_capture_sink *e, const Sluice__V1__Begin *b, uint64_t position)
{
	if (e->in_txn) {
		sluice_log_error("protocol error: Begin of %" PRIu64 " inside transaction %" PRIu64,
				 b->source_xid, e->begin.source_xid);
		return false;
	}
	if ((e->o->until_position && position > e->o->until_position) ||
	    (e->o->until_time_us && b->commit_time_us > e->o->until_time_us) ||
	    (e->target && position >= e->target)) {
		e->done = true;
		return true;
	}
	e->in_txn = true;
	e->begin = *b;
	e->origin[0] = '\0';
	e->origin_lsn = 0;
	e->changes = 0;
	e->begin_written = false;
	e->skip_is_dup = position < e->resume;
	e->skip = e->skip_is_dup;
	return true;
}

void
sluice_capture_sink_origin(sluice_capture_sink *e, const char *name, uint64_t origin_lsn, bool skip)
{
	snprintf(e->origin, sizeof(e->origin), "%s", name);
	e->origin_lsn = origin_lsn;
	if (skip && !e->begin_written)
		e->skip = true;
}

bool
sluice_capture_sink_relation(sluice_capture_sink *e, sluice_record *rec)
{
	return sluice_writer_append(e->w, rec);
}

bool
sluice_capture_sink_change(sluice_capture_sink *e, sluice_record *rec)
{
	if (e->skip)
		return true;
	if (!engine_write_begin(e))
		return false;
	if (e->o->rate != NULL)
		sluice_rate_take(e->o->rate, 1,
				 e->o->rate->bytes_per_s ? sluice__v1__record__get_packed_size(rec)
							 : 0,
				 e->o->stop);
	bool ok = sluice_writer_append(e->w, rec);
	e->changes++;
	e->stats->changes++;
	return ok;
}

bool
sluice_capture_sink_message(sluice_capture_sink *e, sluice_record *rec, bool transactional)
{
	if (transactional && e->skip)
		return true;
	if (transactional && !engine_write_begin(e))
		return false;
	if (!transactional && e->in_txn)
		return true; /* cannot be placed inside a transaction record range */
	return sluice_writer_append(e->w, rec);
}

bool
sluice_capture_sink_commit(sluice_capture_sink *e, uint64_t end_position)
{
	return sluice_capture_sink_commit_token(e, end_position, NULL, 0);
}

bool
sluice_capture_sink_commit_token(sluice_capture_sink *e, uint64_t end_position,
				 const uint8_t *token, size_t token_len)
{
	if (!e->in_txn) {
		sluice_log_error("protocol error: Commit without a transaction");
		return false;
	}
	e->in_txn = false;
	/* The newest token, for heartbeats: this transaction is received whole. */
	if (token_len > 0 && end_position >= e->token_position) {
		sluice_buf_reset(&e->received_token);
		sluice_buf_append(&e->received_token, token, token_len);
		e->token_position = end_position;
	}
	if (e->skip) {
		if (e->skip_is_dup)
			e->stats->skipped_duplicate++;
		else
			e->stats->skipped_origin++;
		e->skipped_end = end_position;
		e->skipped_txseq = sluice_writer_last_txseq(e->w);
		engine_mark_unflushed(e);
		return true;
	}
	/*
	 * A transaction left without changes (it only touched sluice's own tables)
	 * takes no txseq: it is acknowledged like a skipped one.
	 */
	if (!e->begin_written) {
		e->skipped_end = end_position;
		e->skipped_txseq = sluice_writer_last_txseq(e->w);
		engine_mark_unflushed(e);
		return true;
	}
	Sluice__V1__Commit cm = SLUICE__V1__COMMIT__INIT;
	Sluice__V1__SourcePosition pos = SLUICE__V1__SOURCE_POSITION__INIT;
	cm.commit_time_us = e->begin.commit_time_us;
	if (e->ops->position_kind == SLUICE_SOURCE_POSITION_LSN) {
		cm.has_end_lsn = true;
		cm.end_lsn = end_position;
	} else {
		pos.has_cluster_time = true;
		pos.cluster_time = end_position;
		pos.has_resume_token = token_len > 0;
		pos.resume_token.data = (uint8_t *)token;
		pos.resume_token.len = token_len;
		cm.position = &pos;
	}
	cm.has_change_count = true;
	cm.change_count = e->changes;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_COMMIT;
	rec.commit = &cm;
	if (!sluice_writer_append(e->w, &rec))
		return false;
	e->stats->transactions++;
	e->stats->last_txseq = cm.txseq;
	engine_mark_unflushed(e);
	engine_report(e, false);
	return true;
}

void
sluice_capture_sink_progress(sluice_capture_sink *e, uint64_t position)
{
	if (position > e->received)
		e->received = position;
}

bool
sluice_capture_sink_keepalive(sluice_capture_sink *e, uint64_t position, bool reply_requested)
{
	sluice_capture_sink_progress(e, position);
	/*
	 * Between transactions, everything before position was received: the
	 * source's position may be confirmed once what the stream took is durable.
	 */
	if (!e->in_txn && position > e->idle_position) {
		e->idle_position = position;
		e->idle_txseq = sluice_writer_last_txseq(e->w);
	}
	if (!engine_note_durable(e))
		return false;
	return reply_requested ? engine_ack(e, false) : true;
}

bool
sluice_capture_sink_keepalive_token(sluice_capture_sink *e, uint64_t position, const uint8_t *token,
				    size_t token_len)
{
	if (position >= e->token_position && token_len > 0) {
		sluice_buf_reset(&e->received_token);
		sluice_buf_append(&e->received_token, token, token_len);
		e->token_position = position;
	}
	return sluice_capture_sink_keepalive(e, position, false);
}

const uint8_t *
sluice_capture_sink_resume_token(sluice_capture_sink *e, size_t *len)
{
	return sluice_writer_last_token(e->w, len);
}

bool
sluice_capture_sink_stopping(const sluice_capture_sink *e)
{
	return e->done;
}

sluice_writer *
sluice_capture_sink_writer(sluice_capture_sink *e)
{
	return e->w;
}

/* engine_start opens and starts the source, with the caught-up target on the first open. */
static sluice_source_status
engine_start(engine *e)
{
	sluice_source_status st = e->ops->open(e->src, e);
	if (st != SLUICE_SOURCE_OK)
		return st;
	if (e->o->exit_when_caught_up && e->target == 0) {
		if (!e->ops->current_position(e->src, &e->target))
			return SLUICE_SOURCE_RETRY;
		char pos[32];
		e->ops->format_position(e->target, pos, sizeof(pos));
		sluice_log_info("will stop once everything committed before %s is durable", pos);
	}
	uint64_t before = sluice_writer_last_txseq(e->w);
	st = e->ops->start(e->src, e, &e->resume);
	/* A snapshot copy is transactions of its own. */
	uint64_t after = sluice_writer_last_txseq(e->w);
	if (after != before) {
		if (e->stats->first_txseq == 0)
			e->stats->first_txseq = after;
		e->stats->last_txseq = after;
	}
	return st;
}

/* engine_stop_reached tells whether the requested end position has been passed. */
static bool
engine_stop_reached(const engine *e)
{
	if (e->in_txn)
		return false;
	/* A source reports a commit at its end position: reaching the bound means past it. */
	if (e->o->until_position && e->received >= e->o->until_position)
		return true;
	if (e->o->until_time_us && e->ops->position_time_us != NULL && e->received != 0 &&
	    e->ops->position_time_us(e->received) > e->o->until_time_us)
		return true;
	if (e->target && e->received >= e->target)
		return true;
	/* The stream may already end at the target (restart after a kill). */
	uint64_t durable = sluice_writer_durable_position(e->w);
	if (e->target && durable >= e->target && !engine_has_unflushed(e))
		return true;
	return false;
}

/* engine_heartbeat writes a heartbeat record with the received position and makes it durable. */
static bool
engine_heartbeat(engine *e)
{
	Sluice__V1__Heartbeat hb = SLUICE__V1__HEARTBEAT__INIT;
	Sluice__V1__SourcePosition pos = SLUICE__V1__SOURCE_POSITION__INIT;
	hb.time_us = sluice_clock_unix_us();
	if (e->ops->position_kind == SLUICE_SOURCE_POSITION_LSN) {
		hb.has_source_lsn = true;
		hb.source_lsn = e->received;
	} else if (e->token_position != 0) {
		/* Where the source was, with the token of that very position: a restart
		 * after idling resumes there. */
		pos.has_cluster_time = true;
		pos.cluster_time = e->token_position;
		pos.has_resume_token = e->received_token.len > 0;
		pos.resume_token.data = e->received_token.data;
		pos.resume_token.len = e->received_token.len;
		hb.position = &pos;
	}
	hb.has_last_txseq = true;
	hb.last_txseq = sluice_writer_last_txseq(e->w);
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_HEARTBEAT;
	rec.heartbeat = &hb;
	if (!sluice_writer_append(e->w, &rec) || !engine_flush(e, true))
		return false;
	e->stats->heartbeat_us = hb.time_us;
	return true;
}

/* engine_idle does the work due when no data is waiting: flush, acknowledge, heartbeat. */
static bool
engine_idle(engine *e)
{
	int64_t now = sluice_clock_mono_ms();
	if (!engine_note_durable(e))
		return false;
	if (engine_has_unsynced(e) && engine_may_flush(e) &&
	    now - e->last_flush_ms >= e->o->min_flush_gap_ms) {
		if (!engine_flush_due_now(e))
			return false;
	}
	if (e->o->heartbeat_interval_ms > 0 && !e->in_txn &&
	    now - e->last_heartbeat_ms >= e->o->heartbeat_interval_ms) {
		if (!engine_heartbeat(e))
			return false;
		e->last_heartbeat_ms = now;
	}
	/*
	 * Periodic updates ask for a reply: the keepalive that answers carries the
	 * source's position, which an idle capture then confirms, so history the
	 * stream does not need (WAL of other databases or of unpublished tables)
	 * is not retained for it.
	 */
	if (e->ackable > e->acked)
		if (!engine_ack(e, false))
			return false;
	if (now - e->last_status_ms >= e->o->status_interval_ms)
		if (!engine_ack(e, true))
			return false;
	if (now - e->last_log_ms >= 10000) {
		char pos[32];
		e->ops->format_position(e->acked, pos, sizeof(pos));
		sluice_log_info("%" PRIu64 " transactions, %" PRIu64
				" changes captured; last txseq "
				"%" PRIu64 ", acknowledged %s",
				e->stats->transactions, e->stats->changes,
				sluice_writer_durable_txseq(e->w), pos);
		e->last_log_ms = now;
	}
	engine_report(e, false);
	return true;
}

/* engine_wait_ms is how long to wait for data: until the next flush/status/heartbeat is due. */
static int
engine_wait_ms(const engine *e)
{
	int64_t now = sluice_clock_mono_ms();
	int64_t wait = e->o->status_interval_ms - (now - e->last_status_ms);
	if (!engine_may_flush(e)) {
		/* A flush under way: look again soon, to acknowledge it once done. */
		if (wait > ENGINE_FLUSH_POLL_MS)
			wait = ENGINE_FLUSH_POLL_MS;
	} else {
		if (engine_has_unsynced(e)) {
			int64_t f = e->o->min_flush_gap_ms - (now - e->last_flush_ms);
			if (f < wait)
				wait = f;
		}
		int64_t seal = sluice_writer_seal_due_ms(e->w);
		if (seal >= 0 && seal < wait)
			wait = seal;
	}
	if (e->o->heartbeat_interval_ms > 0) {
		int64_t h = e->o->heartbeat_interval_ms - (now - e->last_heartbeat_ms);
		if (h < wait)
			wait = h;
	}
	if (wait > 1000)
		wait = 1000; /* notice signals and stop conditions promptly */
	if (wait < 0)
		wait = 0;
	return (int)wait;
}

/*
 * engine_stream runs the receive loop until stopped (true) or until the
 * source fails (false; the caller reconnects).
 */
static bool
engine_stream(engine *e)
{
	for (;;) {
		if (*e->o->stop) {
			sluice_log_info("stopping on signal");
			return true;
		}
		if (e->done || engine_stop_reached(e)) {
			e->done = true;
			return true;
		}
		sluice_source_receive r = e->ops->receive(e->src, e);
		if (r == SLUICE_SOURCE_LOST)
			return false; /* decoding errors reconnect too: the source sends it again */
		if (r == SLUICE_SOURCE_RESTART) {
			e->restart = true;
			return false;
		}
		if (r == SLUICE_SOURCE_IDLE) {
			if (!engine_idle(e))
				return false;
			if (engine_stop_reached(e))
				continue;
			if (!e->ops->wait(e->src, engine_wait_ms(e)))
				return false;
			continue;
		}
		/* Under continuous load, still bound how long a commit waits for fsync. */
		if (e->unflushed_since_ms != 0 &&
		    sluice_clock_mono_ms() - (int64_t)e->unflushed_since_ms >=
			    e->o->max_flush_delay_ms &&
		    engine_may_flush(e)) {
			if (!engine_flush_due_now(e))
				return false;
		}
		/* and acknowledge what became durable meanwhile */
		if (!engine_note_durable(e))
			return false;
		if (e->ackable > e->acked && !engine_ack(e, false))
			return false;
	}
}

/* engine_reopen_writer forgets a partly received transaction (the source sends it again). */
static bool
engine_reopen_writer(engine *e)
{
	bool had_txn = e->in_txn;
	e->in_txn = false;
	e->idle_position = 0; /* the source says again where it is */
	e->skip = false;
	e->begin_written = false;
	uint64_t frames, bytes;
	sluice_writer_counters(e->w, &frames, &bytes);
	e->base_frames += frames;
	e->base_bytes += bytes;
	if (!sluice_writer_close(e->w))
		sluice_log_warn("could not flush the stream before reconnecting");
	e->w = NULL;
	if (!sluice_writer_open(e->store, e->o->stream, e->key, &e->o->writer, &e->w, NULL))
		return false;
	e->resume = sluice_writer_last_position(e->w);
	if (had_txn)
		sluice_log_info("the unfinished transaction will be received again");
	return true;
}

bool
sluice_capture_engine_run(sluice_store *store, const sluice_key *key,
			  const sluice_capture_options *o, const sluice_source_ops *ops,
			  void *state, sluice_capture_stats *stats)
{
	engine e;
	memset(&e, 0, sizeof(e));
	memset(stats, 0, sizeof(*stats));
	e.o = o;
	e.ops = ops;
	e.src = state;
	e.store = store;
	e.key = key;
	e.stats = stats;
	bool ok = false;
	if (!sluice_writer_open(store, o->stream, key, &o->writer, &e.w, NULL))
		goto cleanup;
	e.resume = sluice_writer_last_position(e.w);
	e.ackable = e.resume;

	int attempt = 0;
	int busy_ms = 0;
	bool streamed = false;
	for (;;) {
		if (*o->stop) {
			ok = true;
			break;
		}
		sluice_source_status st = engine_start(&e);
		if (st != SLUICE_SOURCE_OK && *o->stop) {
			/* Stopped during start (a snapshot copy): a clean stop; an unfinished
			 * snapshot is cut off when the stream is opened next. */
			ok = true;
			break;
		}
		if (st == SLUICE_SOURCE_FATAL)
			break;
		if (st == SLUICE_SOURCE_RETRY && !streamed) {
			/* Before the first start, a connection problem is a configuration problem.
			 */
			break;
		}
		if (st == SLUICE_SOURCE_BUSY && busy_ms >= o->busy_timeout_ms) {
			sluice_log_error("%s has been in use by another process for "
					 "%d s: is another capture running for it?",
					 ops->busy_subject(state), busy_ms / 1000);
			break;
		}
		if (st == SLUICE_SOURCE_OK) {
			streamed = true;
			attempt = 0;
			busy_ms = 0;
			int64_t now = sluice_clock_mono_ms();
			e.last_status_ms = e.last_flush_ms = e.last_log_ms = now;
			e.last_heartbeat_ms = now;
			/* Ask for a keepalive at once: it tells where the source is. A broken
			 * connection shows up in the receive loop, which reconnects. */
			(void)engine_ack(&e, true);
			stats->streaming = true;
			engine_report(&e, true);
			bool stopped = engine_stream(&e);
			stats->streaming = false;
			if (stopped) {
				/* Clean stop: everything complete is made durable and acknowledged;
				 * where readers see only sealed segments, the open one is sealed.
				 */
				bool sealed = sluice_store_caps_get(store)->append_visible ||
					      sluice_writer_in_transaction(e.w) ||
					      sluice_writer_seal(e.w);
				if (sealed && engine_flush(&e, true)) {
					engine_ack(&e, false);
					ok = true;
				}
				break;
			}
			if (e.fatal)
				break;
		}
		ops->close(state);
		if (!engine_reopen_writer(&e))
			break;
		if (e.restart) {
			e.restart = false;
			continue;
		}
		attempt++;
		int delay_ms;
		if (st == SLUICE_SOURCE_BUSY) {
			/* A source held by a capture that just stopped is usually free within
			 * milliseconds: look again soon, and say so every 5 s, not at every look.
			 */
			delay_ms = 200;
			if (busy_ms % 5000 == 0)
				sluice_log_warn("%s is in use (%s); looking again every 0.2 s",
						ops->busy_subject(state), ops->busy_reason(state));
			busy_ms += delay_ms;
		} else {
			stats->reconnects++;
			delay_ms = sluice_backoff_ms(attempt, 1000, o->reconnect_max_s * 1000);
			sluice_log_warn("reconnecting to the source in %d ms (attempt %d)",
					delay_ms, attempt);
		}
		engine_report(&e, true);
		sluice_sleep_ms(delay_ms, o->stop);
	}

cleanup:
	ops->close(state);
	if (e.w != NULL) {
		uint64_t end = ops->position_kind == SLUICE_SOURCE_POSITION_LSN
				       ? e.acked
				       : sluice_writer_last_position(e.w);
		ops->format_position(end, stats->position, sizeof(stats->position));
		engine_report(&e, true);
	}
	if (e.w != NULL && !sluice_writer_close(e.w))
		ok = false;
	sluice_buf_free(&e.received_token);
	return ok;
}
