/* sluice run --child: one pipeline of the configuration, run as sluice capture or apply would. */
#ifndef SLUICE_TOOLS_RUN_PIPELINE_H
#define SLUICE_TOOLS_RUN_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "keys.h"

/*
 * run_pipeline_child parses the configuration text (file names it in
 * messages) and runs pipeline name until stopped (SIGTERM/SIGINT), or with
 * once until caught up, writing a stats record to stats_fd (-1: none) about
 * once a second. A capture waits while another process writes its stream.
 * @return the exit status of sluice capture or sluice apply.
 */
int run_pipeline_child(const char *file, const char *text, size_t len, const char *name,
		       int stats_fd, bool once);

/* run_pipeline_default_name makes sluice_<stream> usable as a slot name (as capture does). */
void run_pipeline_default_name(const char *stream, char *out, size_t size);

/*
 * run_pipeline_store_open opens the store of pipeline pl (writing: with its
 * spool and ack settings) and tells its segment_seconds (-1: the store's
 * default). S3 credentials named in the configuration go into this
 * process's environment, where the backend reads them.
 * @return false after logging.
 */
bool run_pipeline_store_open(const sluice_config *cfg, const sluice_config_pipeline *pl,
			     bool writing, sluice_store **store, int64_t *segment_seconds);

/* run_pipeline_trust loads the public keys pl trusts; NULL after logging. */
sluice_trust *run_pipeline_trust(const sluice_config *cfg, const sluice_config_pipeline *pl);

#endif
