/* sluice run --child: one pipeline of the configuration, run as sluice capture or apply would. */
#ifndef SLUICE_TOOLS_RUN_PIPELINE_H
#define SLUICE_TOOLS_RUN_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * run_pipeline_child parses the configuration text (file names it in
 * messages) and runs pipeline name until stopped (SIGTERM/SIGINT), or with
 * once until caught up, writing a stats record to stats_fd (-1: none) about
 * once a second. A capture waits while another process writes its stream.
 * @return the exit status of sluice capture or sluice apply.
 */
int run_pipeline_child(const char *file, const char *text, size_t len, const char *name,
		       int stats_fd, bool once);

#endif
