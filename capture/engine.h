/* Capture engine: what every source needs between its messages and a durable, signed stream. */
#ifndef SLUICE_CAPTURE_ENGINE_H
#define SLUICE_CAPTURE_ENGINE_H

#include <stdbool.h>

#include "backend.h"
#include "capture.h"
#include "keys.h"
#include "source.h"

/*
 * sluice_capture_engine_run opens the stream and runs the source (ops and
 * its state, borrowed) into it: txseq through the writer, fsync at most every
 * min_flush_gap_ms while data arrives and at most max_flush_delay_ms after
 * the oldest unflushed commit, acknowledgement of durable positions only,
 * heartbeats while idle, the --until and --exit-when-caught-up bounds,
 * reconnects with capped jittered backoff, and the stop flag. It reopens
 * the writer on each reconnect, so that a partly received transaction is cut
 * off and received again. store and key are borrowed; stats is filled in.
 * @return true on a clean stop.
 */
bool sluice_capture_engine_run(sluice_store *store, const sluice_key *key,
			       const sluice_capture_options *o, const sluice_source_ops *ops,
			       void *state, sluice_capture_stats *stats);

#endif
