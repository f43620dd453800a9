/* The sluice command: dispatches to subcommands. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cmd_apply.h"
#include "cmd_bench.h"
#include "cmd_capture.h"
#include "cmd_copy.h"
#include "cmd_inspect.h"
#include "cmd_keygen.h"
#include "cmd_rotate.h"
#include "cmd_run.h"
#include "cmd_status.h"
#include "cmd_verify.h"
#include "log.h"

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "0.1.0"
#endif

typedef struct sluice_command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} sluice_command;

static const sluice_command sluice_commands[] = {
	{"apply", cmd_apply, "replay a verified stream into PostgreSQL"},
	{"capture", cmd_capture, "stream a PostgreSQL database into a signed stream"},
	{"prepare", cmd_prepare, "set up a node for active-active apply"},
	{"keygen", cmd_keygen, "create an Ed25519 key pair for signing a stream"},
	{"rotate-key", cmd_rotate_key, "hand a stream over to a successor signing key"},
	{"verify", cmd_verify, "check every frame, the chain and txseq density of a stream"},
	{"inspect", cmd_inspect, "list segments and frames, or print records"},
	{"run", cmd_run, "run the pipelines of a configuration file, with metrics and health"},
	{"status", cmd_status, "show each pipeline's position, head, lag and health"},
	{"copy", cmd_copy, "copy the sealed segments of a stream between stores, verified"},
	{"bench-codec", cmd_bench_codec, "measure encode and decode throughput of the codec"},
};

static void
sluice_help(FILE *f)
{
	fprintf(f, "Usage: sluice [--log-format auto|text|json] [--verbose] COMMAND [OPTIONS]\n"
		   "\n"
		   "sluice streams database changes as signed, compressed, verifiable segments.\n"
		   "\n"
		   "Commands:\n");
	for (size_t i = 0; i < sizeof(sluice_commands) / sizeof(sluice_commands[0]); i++)
		fprintf(f, "  %-12s %s\n", sluice_commands[i].name, sluice_commands[i].summary);
	fprintf(f, "\n"
		   "Run \"sluice COMMAND --help\" for the options of a command.\n"
		   "\n"
		   "Global options:\n"
		   "  --log-format F   auto (text on a terminal, else JSON lines), text or json\n"
		   "  --verbose        debug logging\n"
		   "  --version        print the version\n"
		   "\n"
		   "Exit status: 0 success, 1 problems found (damaged, untrusted or incomplete\n"
		   "stream), 2 usage error, 3 failure (I/O, missing files, bad keys).\n");
}

int
main(int argc, char **argv)
{
	if (sodium_init() < 0) {
		fprintf(stderr, "sluice: could not initialise libsodium\n");
		return SLUICE_EXIT_FAILURE;
	}
	sluice_log_level level = SLUICE_LOG_INFO;
	sluice_log_format format = SLUICE_LOG_AUTO;
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			sluice_help(stdout);
			return SLUICE_EXIT_OK;
		} else if (strcmp(a, "--version") == 0) {
			printf("sluice %s\n", SLUICE_VERSION);
			return SLUICE_EXIT_OK;
		} else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
			level = SLUICE_LOG_DEBUG;
		} else if (strncmp(a, "--log-format", 12) == 0) {
			const char *v = a[12] == '=' ? a + 13 : (i + 1 < argc ? argv[++i] : "");
			if (strcmp(v, "text") == 0)
				format = SLUICE_LOG_TEXT;
			else if (strcmp(v, "json") == 0)
				format = SLUICE_LOG_JSON;
			else if (strcmp(v, "auto") == 0)
				format = SLUICE_LOG_AUTO;
			else {
				fprintf(stderr,
					"sluice: invalid --log-format \"%s\": use auto, text "
					"or json\n",
					v);
				return SLUICE_EXIT_USAGE;
			}
		} else {
			fprintf(stderr, "sluice: unknown option \"%s\" (see \"sluice --help\")\n",
				a);
			return SLUICE_EXIT_USAGE;
		}
	}
	sluice_log_setup(level, format);
	if (i >= argc) {
		sluice_help(stderr);
		return SLUICE_EXIT_USAGE;
	}
	const char *name = argv[i];
	if (strcmp(name, "help") == 0) {
		sluice_help(stdout);
		return SLUICE_EXIT_OK;
	}
	for (size_t c = 0; c < sizeof(sluice_commands) / sizeof(sluice_commands[0]); c++) {
		if (strcmp(name, sluice_commands[c].name) == 0) {
			sluice_log_set_component(name);
			/* getopt_long sees the subcommand as argv[0]. */
			return sluice_commands[c].run(argc - i, argv + i);
		}
	}
	fprintf(stderr, "sluice: unknown command \"%s\" (see \"sluice --help\")\n", name);
	return SLUICE_EXIT_USAGE;
}
