/*
 * The supervisor of sluice run: one child process per pipeline, restarts
 * with capped jittered backoff, signals forwarded, reload on SIGHUP, and the
 * metrics and health endpoint (libmicrohttpd).
 */
#ifndef SLUICE_SERVICE_SUPERVISOR_H
#define SLUICE_SERVICE_SUPERVISOR_H

#include <stdbool.h>

typedef struct sluice_supervisor_options {
	const char *config_path; /* the YAML file, read again on SIGHUP */
	const char *listen;      /* ADDR:PORT overriding the file's listen, or NULL */
	bool once;               /* every pipeline until caught up, then exit */
	const char *log_format;  /* passed to the children: "text" or "json" */
	bool verbose;
} sluice_supervisor_options;

/*
 * sluice_supervisor_run runs the configuration's pipelines until SIGTERM or
 * SIGINT (or, with once, until every pipeline finished).
 * @return the process exit status: 0 when every pipeline stopped cleanly
 * (with once: finished), 2 for a configuration with errors, 3 otherwise.
 */
int sluice_supervisor_run(const sluice_supervisor_options *o);

#endif
