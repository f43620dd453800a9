/* What the service shows of its pipelines: Prometheus metrics, readiness and status as JSON. */
#include "metrics.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "json.h"

static const char *const metrics_state_names[] = {"starting", "standby", "running", "reconnecting",
						  "stopped"};

static const char *
metrics_state(const sluice_pipeline_view *v)
{
	if (v->done)
		return "done";
	if (!v->running)
		return "restarting";
	if (!v->have_stats)
		return "starting";
	return v->now.state < 5 ? metrics_state_names[v->now.state] : "unknown";
}

void
sluice_metrics_lag(const sluice_pipeline_view *v, int64_t now_us, uint64_t *txns, double *seconds)
{
	const sluice_pipeline_stats *s = &v->now;
	*txns = s->head_txseq > s->done_txseq ? s->head_txseq - s->done_txseq : 0;
	if (v->kind == SLUICE_PIPELINE_CAPTURE) {
		/* Received but not yet durable: the age of the last durable commit. */
		bool behind = s->lsn_positions && s->source_position > s->acked_position &&
			      s->state == SLUICE_PIPELINE_RUNNING && s->done_commit_us != 0 &&
			      s->source_position - s->acked_position > 1024 * 1024;
		*seconds = behind ? (double)(now_us - s->done_commit_us) / 1e6 : 0;
	} else if (*txns == 0 && v->have_stats) {
		*seconds = 0;
	} else if (s->done_commit_us != 0) {
		*seconds = (double)(now_us - s->done_commit_us) / 1e6;
	} else {
		*seconds = -1;
	}
	if (*seconds < 0 && *seconds != -1)
		*seconds = 0;
}

bool
sluice_metrics_ready(const sluice_pipeline_view *v, int64_t now_us, char *reason, size_t size)
{
	const sluice_pipeline_stats *s = &v->now;
	if (v->done) {
		snprintf(reason, size, "finished (--once)");
		return true;
	}
	if (!v->running) {
		snprintf(reason, size, "not running (last exit status %d); restarting",
			 v->last_exit);
		return false;
	}
	if (!v->have_stats) {
		snprintf(reason, size, "starting");
		return false;
	}
	if (v->stats_age_ms > 10000) {
		snprintf(reason, size, "no report from the pipeline for %" PRId64 " s",
			 v->stats_age_ms / 1000);
		return false;
	}
	if (s->state == SLUICE_PIPELINE_STANDBY) {
		snprintf(reason, size, "standby: another process writes the stream");
		return true;
	}
	if (s->state != SLUICE_PIPELINE_RUNNING) {
		snprintf(reason, size, "%s", metrics_state(v));
		return false;
	}
	uint64_t txns;
	double lag;
	sluice_metrics_lag(v, now_us, &txns, &lag);
	if (lag < 0) {
		snprintf(reason, size, "catching up: %" PRIu64 " transactions behind", txns);
		return false;
	}
	if (lag * 1000 > (double)v->max_lag_ms) {
		snprintf(reason, size, "lag %.1f s (%" PRIu64 " transactions) exceeds %.1f s", lag,
			 txns, (double)v->max_lag_ms / 1000);
		return false;
	}
	if (v->kind == SLUICE_PIPELINE_APPLY) {
		/* The stream is fresh when a signed heartbeat or commit is recent. */
		int64_t newest =
			s->heartbeat_us > s->done_commit_us ? s->heartbeat_us : s->done_commit_us;
		if (newest == 0) {
			snprintf(reason, size, "no signed heartbeat or commit read yet");
			return false;
		}
		double age = (double)(now_us - newest) / 1e6;
		if (age * 1000 > (double)v->max_heartbeat_age_ms) {
			snprintf(reason, size,
				 "the newest signed heartbeat or commit is %.0f s old (more than "
				 "%.0f s): the stream is frozen or cut, or the target is down",
				 age, (double)v->max_heartbeat_age_ms / 1000);
			return false;
		}
	}
	snprintf(reason, size, "ok");
	return true;
}

/* metrics_labels writes {pipeline="..",kind="..",stream=".."[,extra]}. */
static void
metrics_labels(sluice_buf *out, const sluice_pipeline_view *v, const char *extra)
{
	/* Names are [A-Za-z0-9_.-] (config.c); streams may hold more: escape. */
	sluice_buf_printf(out, "{pipeline=\"%s\",kind=\"%s\",stream=\"", v->name,
			  v->kind == SLUICE_PIPELINE_CAPTURE ? "capture" : "apply");
	for (const char *p = v->stream; *p; p++) {
		if (*p == '\\' || *p == '"')
			sluice_buf_append_byte(out, '\\');
		if (*p == '\n')
			sluice_buf_append_str(out, "\\n");
		else
			sluice_buf_append_byte(out, (uint8_t)*p);
	}
	sluice_buf_printf(out, "\"%s%s}", extra ? "," : "", extra ? extra : "");
}

typedef enum metrics_kind { M_COUNTER, M_GAUGE } metrics_kind;

static void
metrics_head(sluice_buf *out, const char *name, metrics_kind kind, const char *help)
{
	sluice_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
			  kind == M_COUNTER ? "counter" : "gauge");
}

static void
metrics_value(sluice_buf *out, const char *name, const sluice_pipeline_view *v, const char *extra,
	      double value)
{
	sluice_buf_append_str(out, name);
	metrics_labels(out, v, extra);
	if (isnan(value))
		sluice_buf_append_str(out, " NaN\n");
	else if (value == floor(value) && fabs(value) < 1e15)
		sluice_buf_printf(out, " %.0f\n", value);
	else
		sluice_buf_printf(out, " %.6f\n", value);
}

/* A metric with one sample per pipeline. */
#define METRIC(NAME, KIND, HELP, WHO, EXPR)                                                        \
	do {                                                                                       \
		metrics_head(out, NAME, KIND, HELP);                                               \
		for (size_t i = 0; i < n; i++) {                                                   \
			const sluice_pipeline_view *p = &v[i];                                     \
			if (WHO)                                                                   \
				metrics_value(out, NAME, p, NULL, (double)(EXPR));                 \
		}                                                                                  \
	} while (0)

void
sluice_metrics_prometheus(sluice_buf *out, const sluice_pipeline_view *v, size_t n, int64_t now_us)
{
	const bool all = true;
	METRIC("sluice_pipeline_up", M_GAUGE, "1 while a child process runs the pipeline", all,
	       p->running);
	metrics_head(out, "sluice_pipeline_ready", M_GAUGE,
		     "1 when the pipeline is ready (see /readyz for the reason)");
	for (size_t i = 0; i < n; i++) {
		char reason[256];
		metrics_value(out, "sluice_pipeline_ready", &v[i], NULL,
			      sluice_metrics_ready(&v[i], now_us, reason, sizeof(reason)));
	}
	METRIC("sluice_pipeline_standby", M_GAUGE,
	       "1 while the pipeline waits for another process to stop writing its stream", all,
	       p->running && p->have_stats && p->now.state == SLUICE_PIPELINE_STANDBY);
	METRIC("sluice_pipeline_restarts_total", M_COUNTER,
	       "Times the pipeline's child process was started again after it ended", all,
	       p->restarts);
	METRIC("sluice_transactions_total", M_COUNTER,
	       "Transactions captured into the stream, or applied to the target", all,
	       p->total.transactions);
	METRIC("sluice_row_changes_total", M_COUNTER,
	       "Row changes captured, or applied (inserts, updates, deletes)", all,
	       p->total.changes);
	metrics_head(out, "sluice_apply_row_changes_total", M_COUNTER,
		     "Row changes applied, by operation");
	for (size_t i = 0; i < n; i++) {
		const sluice_pipeline_view *p = &v[i];
		if (p->kind != SLUICE_PIPELINE_APPLY)
			continue;
		metrics_value(out, "sluice_apply_row_changes_total", p, "op=\"insert\"",
			      (double)p->total.inserts);
		metrics_value(out, "sluice_apply_row_changes_total", p, "op=\"update\"",
			      (double)p->total.updates);
		metrics_value(out, "sluice_apply_row_changes_total", p, "op=\"delete\"",
			      (double)p->total.deletes);
		metrics_value(out, "sluice_apply_row_changes_total", p, "op=\"truncate\"",
			      (double)p->total.truncates);
		metrics_value(out, "sluice_apply_row_changes_total", p, "op=\"skipped\"",
			      (double)p->total.skipped);
	}
	METRIC("sluice_stream_bytes_total", M_COUNTER,
	       "Bytes of frames written to the store (capture) or read and authenticated (apply)",
	       all, p->total.bytes);
	METRIC("sluice_stream_frames_total", M_COUNTER,
	       "Frames written to the store (capture) or read and authenticated (apply)", all,
	       p->total.frames);
	metrics_head(out, "sluice_apply_conflicts_total", M_COUNTER,
		     "Conflicts met by apply, by kind (docs/conflicts.md)");
	for (size_t i = 0; i < n; i++) {
		if (v[i].kind != SLUICE_PIPELINE_APPLY)
			continue;
		for (int k = 0; k < SLUICE_CONFLICT_COUNT; k++) {
			char extra[96];
			snprintf(extra, sizeof(extra), "conflict=\"%s\"",
				 sluice_conflict_name((sluice_conflict)k));
			metrics_value(out, "sluice_apply_conflicts_total", &v[i], extra,
				      (double)v[i].total.conflicts[k]);
		}
	}
	metrics_head(out, "sluice_apply_retries_total", M_COUNTER,
		     "Transactions rolled back and applied again after a transient failure, by "
		     "cause");
	for (size_t i = 0; i < n; i++) {
		if (v[i].kind != SLUICE_PIPELINE_APPLY)
			continue;
		for (int k = 0; k < SLUICE_RETRY_COUNT; k++) {
			char extra[96];
			snprintf(extra, sizeof(extra), "cause=\"%s\"",
				 sluice_retry_cause_name((sluice_retry_cause)k));
			metrics_value(out, "sluice_apply_retries_total", &v[i], extra,
				      (double)v[i].total.retries[k]);
		}
	}
	METRIC("sluice_capture_reconnects_total", M_COUNTER,
	       "Times capture connected to its source again", p->kind == SLUICE_PIPELINE_CAPTURE,
	       p->total.reconnects);
	METRIC("sluice_throttled_seconds_total", M_COUNTER,
	       "Time the pipeline waited for its rate limit (max_rate)", all,
	       (double)p->total.throttled_ms / 1000);
	METRIC("sluice_rate_limit_rows_per_second", M_GAUGE,
	       "Configured limit of row changes per second (0: none)", all, p->max_rows_per_s);
	METRIC("sluice_rate_limit_bytes_per_second", M_GAUGE,
	       "Configured limit of bytes per second (0: none)", all, p->max_bytes_per_s);
	METRIC("sluice_capture_source_position", M_GAUGE,
	       "Newest source position heard of (PostgreSQL: LSN as a number; MongoDB: "
	       "cluster time)",
	       p->kind == SLUICE_PIPELINE_CAPTURE && p->have_stats, p->now.source_position);
	METRIC("sluice_capture_acknowledged_position", M_GAUGE,
	       "Source position acknowledged as durable in the stream",
	       p->kind == SLUICE_PIPELINE_CAPTURE && p->have_stats, p->now.acked_position);
	METRIC("sluice_capture_slot_retained_wal_bytes", M_GAUGE,
	       "WAL the replication slot holds back (pg_current_wal_lsn() - restart_lsn)",
	       p->kind == SLUICE_PIPELINE_CAPTURE && p->have_stats && p->now.wal_retained >= 0,
	       p->now.wal_retained);
	METRIC("sluice_stream_head_txseq", M_GAUGE,
	       "Last complete transaction of the stream known to the pipeline", p->have_stats,
	       p->now.head_txseq);
	METRIC("sluice_done_txseq", M_GAUGE,
	       "Last transaction made durable in the stream (capture) or applied (apply)",
	       p->have_stats, p->now.done_txseq);
	metrics_head(out, "sluice_replication_lag_seconds", M_GAUGE,
		     "Source commit time of the oldest transaction not yet applied to now; 0 when "
		     "caught up, NaN when unknown");
	for (size_t i = 0; i < n; i++) {
		if (!v[i].have_stats)
			continue;
		uint64_t txns;
		double secs;
		sluice_metrics_lag(&v[i], now_us, &txns, &secs);
		metrics_value(out, "sluice_replication_lag_seconds", &v[i], NULL,
			      secs < 0 ? NAN : secs);
	}
	metrics_head(out, "sluice_replication_lag_transactions", M_GAUGE,
		     "Transactions in the stream not yet applied (head - applied txseq)");
	for (size_t i = 0; i < n; i++) {
		if (!v[i].have_stats)
			continue;
		uint64_t txns;
		double secs;
		sluice_metrics_lag(&v[i], now_us, &txns, &secs);
		metrics_value(out, "sluice_replication_lag_transactions", &v[i], NULL,
			      (double)txns);
	}
	METRIC("sluice_stream_heartbeat_age_seconds", M_GAUGE,
	       "Age of the newest signed heartbeat written (capture) or read (apply)",
	       p->have_stats && p->now.heartbeat_us != 0,
	       (double)(now_us - p->now.heartbeat_us) / 1e6);
}

bool
sluice_metrics_status(sluice_buf *out, const sluice_pipeline_view *v, size_t n, int64_t now_us,
		      const char *only)
{
	bool all_ready = true;
	sluice_buf body = {0};
	bool first = true;
	for (size_t i = 0; i < n; i++) {
		const sluice_pipeline_view *p = &v[i];
		if (only != NULL && strcmp(only, p->name) != 0)
			continue;
		char reason[256];
		bool ready = sluice_metrics_ready(p, now_us, reason, sizeof(reason));
		all_ready = all_ready && ready;
		uint64_t txns;
		double secs;
		sluice_metrics_lag(p, now_us, &txns, &secs);
		sluice_buf_append_str(&body, first ? "" : ",");
		first = false;
		sluice_json_append_string(&body, p->name, strlen(p->name));
		sluice_buf_printf(&body, ":{\"kind\":\"%s\",\"stream\":",
				  p->kind == SLUICE_PIPELINE_CAPTURE ? "capture" : "apply");
		sluice_json_append_string(&body, p->stream, strlen(p->stream));
		sluice_buf_printf(&body,
				  ",\"state\":\"%s\",\"ready\":%s,\"reason\":", metrics_state(p),
				  ready ? "true" : "false");
		sluice_json_append_string(&body, reason, strlen(reason));
		sluice_buf_printf(&body,
				  ",\"head_txseq\":%" PRIu64 ",\"done_txseq\":%" PRIu64
				  ",\"lag_transactions\":%" PRIu64 ",\"lag_seconds\":",
				  p->now.head_txseq, p->now.done_txseq, txns);
		if (secs < 0)
			sluice_buf_append_str(&body, "null");
		else
			sluice_buf_printf(&body, "%.3f", secs);
		char hb[32] = "null";
		if (p->now.heartbeat_us != 0)
			snprintf(hb, sizeof(hb), "%.3f",
				 (double)(now_us - p->now.heartbeat_us) / 1e6);
		sluice_buf_printf(&body,
				  ",\"heartbeat_age_seconds\":%s,\"transactions\":%" PRIu64
				  ",\"restarts\":%" PRIu64 ",\"last_exit\":%d}",
				  hb, p->total.transactions, p->restarts, p->last_exit);
	}
	sluice_buf_printf(out, "{\"ready\":%s,\"pipelines\":{", all_ready ? "true" : "false");
	if (body.data)
		sluice_buf_append(out, body.data, body.len);
	sluice_buf_append_str(out, "}}\n");
	sluice_buf_free(&body);
	return all_ready;
}
