/* What the service shows of its pipelines: Prometheus metrics, readiness and status as JSON. */
#ifndef SLUICE_SERVICE_METRICS_H
#define SLUICE_SERVICE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "stats.h"

/* One pipeline as the supervisor sees it (plain values, copied under its lock). */
typedef struct sluice_pipeline_view {
	char name[104];
	char stream[160];
	sluice_pipeline_kind kind;
	bool running;         /* a child runs it now */
	bool have_stats;      /* the current child has reported */
	int64_t stats_age_ms; /* since its last report */
	bool done;            /* --once: finished */
	uint64_t restarts;
	int last_exit; /* exit status of the last child, -1: none yet; 128+N: signal N */
	sluice_pipeline_stats now;   /* the current child's last report (gauges) */
	sluice_pipeline_stats total; /* counters over every child run */
	uint64_t max_rows_per_s, max_bytes_per_s;
	int64_t max_lag_ms, max_heartbeat_age_ms;
} sluice_pipeline_view;

/*
 * sluice_metrics_lag computes the lag of a pipeline at now_us: in
 * transactions (head minus done) and in seconds (0 when caught up; the
 * age of the oldest transaction not done otherwise, approximated by
 * now - the commit time of the last done; -1 when unknown).
 */
void sluice_metrics_lag(const sluice_pipeline_view *v, int64_t now_us, uint64_t *txns,
			double *seconds);

/* sluice_metrics_ready decides readiness and writes why into reason. */
bool sluice_metrics_ready(const sluice_pipeline_view *v, int64_t now_us, char *reason, size_t size);

/* sluice_metrics_prometheus renders every pipeline in Prometheus text format 0.0.4. */
void sluice_metrics_prometheus(sluice_buf *out, const sluice_pipeline_view *v, size_t n,
			       int64_t now_us);

/*
 * sluice_metrics_status renders a JSON object {"ready":...,"pipelines":{NAME:
 * {...}}} with each pipeline's state, positions, lag and readiness; only
 * the pipeline only (NULL: all). @return whether everything shown is ready.
 */
bool sluice_metrics_status(sluice_buf *out, const sluice_pipeline_view *v, size_t n, int64_t now_us,
			   const char *only);

#endif
