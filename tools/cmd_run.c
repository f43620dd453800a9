/* sluice run: many pipelines from one configuration file, supervised, with metrics and health. */
#include "cmd_run.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "cli.h"
#include "config.h"
#include "log.h"
#include "run_pipeline.h"
#include "supervisor.h"

static void
run_help(FILE *f)
{
	fprintf(f,
		"Usage: sluice run --config FILE [--listen ADDR:PORT] [--once]\n"
		"       sluice run --config FILE --check\n"
		"\n"
		"Run every pipeline of a YAML configuration (captures and applies, each with the\n"
		"options of sluice capture and sluice apply), each in its own child process.\n"
		"A failing pipeline is restarted with capped, jittered backoff; the others go on.\n"
		"Two processes with the same capture pipeline: one writes the stream, the other\n"
		"waits as a standby and takes over when the first stops or dies.\n"
		"\n"
		"Options:\n"
		"  -c, --config FILE      the configuration (docs/operations.md)\n"
		"      --check            check the configuration and exit: every problem is\n"
		"                         reported as FILE:LINE:COLUMN: message\n"
		"      --listen ADDR:PORT serve /metrics (Prometheus), /healthz, /readyz and\n"
		"                         /readyz/PIPELINE (JSON); overrides listen in the file\n"
		"      --once             every pipeline catches up (captures to the source's\n"
		"                         current position, applies to the end of the stream),\n"
		"                         then the process exits\n"
		"  -h, --help             show this help\n"
		"\n"
		"Signals: SIGTERM/SIGINT stop every pipeline at a transaction boundary with its\n"
		"progress durable; SIGHUP reloads the file and restarts only the pipelines whose\n"
		"settings (or secrets) changed; a file with errors is refused and the running\n"
		"configuration kept.\n"
		"\"sluice status --config FILE\" shows each pipeline's position, lag and health,\n"
		"from this process's /status or, when it does not run, from the stores.\n"
		"Exit status: 0 every pipeline stopped cleanly (--once: caught up), 2 usage error\n"
		"or a configuration with errors, 3 a pipeline could not run.\n");
}

/* run_read_file reads a whole file into b; false after logging. */
static bool
run_read_file(const char *path, sluice_buf *b)
{
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		sluice_log_error("could not open configuration \"%s\": %m", path);
		return false;
	}
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		sluice_buf_append(b, chunk, n);
	bool ok = !ferror(f);
	fclose(f);
	if (!ok)
		sluice_log_error("could not read configuration \"%s\"", path);
	return ok;
}

/* run_read_fd reads the configuration text the supervisor handed over (a memory file). */
static bool
run_read_fd(int fd, sluice_buf *b)
{
	char chunk[8192];
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(fd, chunk, sizeof(chunk), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			sluice_log_error("could not read the configuration from fd %d: %m", fd);
			return false;
		}
		if (n == 0)
			break;
		sluice_buf_append(b, chunk, (size_t)n);
		off += n;
	}
	close(fd);
	return true;
}

/* run_check prints every problem of the file (stdout), or a summary when there is none. */
static int
run_check(const char *path)
{
	sluice_buf text = {0}, errors = {0};
	if (!run_read_file(path, &text))
		return SLUICE_EXIT_USAGE;
	size_t n = 0;
	sluice_config *c = sluice_config_parse(path, text.data ? (const char *)text.data : "",
					       text.len, &errors, &n);
	int rc = SLUICE_EXIT_OK;
	if (c == NULL) {
		fwrite(errors.data, 1, errors.len, stdout);
		printf("%s: %zu problem%s\n", path, n, n == 1 ? "" : "s");
		rc = SLUICE_EXIT_USAGE;
	} else {
		size_t captures = 0;
		for (size_t i = 0; i < c->npipelines; i++)
			captures += c->pipelines[i].kind == SLUICE_PIPELINE_CAPTURE;
		printf("%s: OK: %zu pipelines (%zu captures, %zu applies), %zu stores, %zu keys\n",
		       path, c->npipelines, captures, c->npipelines - captures, c->nstores,
		       c->nkeys);
	}
	sluice_config_free(c);
	sluice_buf_free(&text);
	sluice_buf_free(&errors);
	return rc;
}

int
cmd_run(int argc, char **argv)
{
	enum { OPT_CHECK = 1000, OPT_LISTEN, OPT_ONCE, OPT_CHILD };
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"check", no_argument, NULL, OPT_CHECK},
		{"listen", required_argument, NULL, OPT_LISTEN},
		{"once", no_argument, NULL, OPT_ONCE},
		{"child", required_argument, NULL, OPT_CHILD}, /* internal: the supervisor's */
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *config = NULL, *listen = NULL, *child = NULL;
	bool check = false, once = false;
	int c;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case OPT_CHECK:
			check = true;
			break;
		case OPT_LISTEN:
			listen = optarg;
			break;
		case OPT_ONCE:
			once = true;
			break;
		case OPT_CHILD:
			child = optarg;
			break;
		case 'h':
			run_help(stdout);
			return SLUICE_EXIT_OK;
		default:
			return cli_usage_error("run", "invalid option");
		}
	}
	if (optind < argc)
		return cli_usage_error("run", "unexpected argument \"%s\"", argv[optind]);
	if (config == NULL)
		return cli_usage_error("run", "--config is required");
	if (check)
		return run_check(config);
	if (child != NULL) {
		/* fd 3: the configuration text; fd 4: the stats pipe (docs/architecture.md) */
		sluice_buf text = {0};
		if (!run_read_fd(3, &text))
			return SLUICE_EXIT_FAILURE;
		int rc = run_pipeline_child(config, text.data ? (const char *)text.data : "",
					    text.len, child, 4, once);
		sluice_buf_free(&text);
		return rc;
	}
	/* Children log to the same stderr, as this process would. */
	sluice_log_format format = sluice_log_current_format();
	if (format == SLUICE_LOG_AUTO)
		format = isatty(STDERR_FILENO) ? SLUICE_LOG_TEXT : SLUICE_LOG_JSON;
	sluice_supervisor_options o = {
		.config_path = config,
		.listen = listen,
		.once = once,
		.log_format = format == SLUICE_LOG_TEXT ? "text" : "json",
		.verbose = sluice_log_current_level() == SLUICE_LOG_DEBUG,
	};
	return sluice_supervisor_run(&o);
}
