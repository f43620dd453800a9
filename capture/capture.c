/* Capture: picks the source from the URI and runs the engine with it. */
#include "capture.h"

#include <string.h>

#include "engine.h"
#include "log.h"
#include "mongosource.h"
#include "pgsource.h"

void
sluice_capture_default_options(sluice_capture_options *o)
{
	memset(o, 0, sizeof(*o));
	o->min_flush_gap_ms = 5;
	o->max_flush_delay_ms = 200;
	o->status_interval_ms = 10000;
	o->heartbeat_interval_ms = 10000;
	o->reconnect_max_s = 30;
	o->busy_timeout_ms = 30000;
	o->writer = sluice_writer_default_options();
}

/* capture_is_mongodb tells whether a source URI names a MongoDB deployment. */
static bool
capture_is_mongodb(const char *source)
{
	return strncmp(source, "mongodb://", 10) == 0 || strncmp(source, "mongodb+srv://", 14) == 0;
}

bool
sluice_capture_run(sluice_store *store, const sluice_key *key, const sluice_capture_options *o,
		   sluice_capture_stats *stats)
{
	memset(stats, 0, sizeof(*stats));
	if (capture_is_mongodb(o->source)) {
		sluice_mongosource *m = sluice_mongosource_create(o);
		bool ok =
			sluice_capture_engine_run(store, key, o, &sluice_mongosource_ops, m, stats);
		sluice_mongosource_free(m);
		return ok;
	}
	sluice_pgsource *src = sluice_pgsource_create(o);
	bool ok = sluice_capture_engine_run(store, key, o, &sluice_pgsource_ops, src, stats);
	sluice_pgsource_free(src);
	return ok;
}
