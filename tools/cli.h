/* Shared command-line helpers: exit codes, number and time parsing, formatting. */
#ifndef SLUICE_TOOLS_CLI_H
#define SLUICE_TOOLS_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "keys.h"

/* Exit codes of every sluice command (README "Exit codes"). */
#define SLUICE_EXIT_OK      0 /* success; verify: the stream is whole */
#define SLUICE_EXIT_PROBLEM 1 /* verify/inspect found damage, an untrusted key or a gap */
#define SLUICE_EXIT_USAGE   2 /* bad command line */
#define SLUICE_EXIT_FAILURE 3 /* could not do the work: I/O, missing files, bad keys */

/* cli_parse_u64 parses a decimal number for option name; logs and returns false if bad. */
bool cli_parse_u64(const char *name, const char *text, uint64_t *out);

/*
 * cli_parse_rate reads --max-rate ROWS[,BYTES]: row changes per second and,
 * optionally, bytes per second (0: no limit on that one; not both 0). Logs
 * and returns false if bad.
 */
bool cli_parse_rate(const char *name, const char *text, uint64_t *rows, uint64_t *bytes);

/*
 * cli_parse_size reads a number of bytes with an optional suffix k, M or G
 * (powers of 1024); logs and returns false if bad.
 */
bool cli_parse_size(const char *name, const char *text, uint64_t *out);

/* cli_load_trust builds a trust set from .pub files; NULL after logging on failure. */
sluice_trust *cli_load_trust(char **paths, size_t n);

/*
 * cli_parse_time reads an ISO 8601 time ("2026-11-21T05:30:00Z",
 * "2026-11-21 05:30:00.25+01:00"; no zone means UTC) as µs since the epoch.
 */
bool cli_parse_time(const char *name, const char *text, int64_t *us);

/*
 * cli_parse_duration reads a duration: a number with an optional unit s, m,
 * h or d (seconds without one), e.g. "90s", "15m", "2h"; as µs.
 */
bool cli_parse_duration(const char *name, const char *text, int64_t *us);

/* cli_now_us returns the wall-clock time in µs since the epoch. */
int64_t cli_now_us(void);

/*
 * cli_append_freshness appends the newest commit time, the newest signed
 * heartbeat time and its age at now_us (0 times: none seen): a text phrase,
 * or JSON members starting with a comma. Verify and inspect both print it.
 */
void cli_append_freshness(sluice_buf *b, bool json, int64_t commit_us, int64_t heartbeat_us,
			  int64_t now_us);

/* cli_format_time writes µs since the epoch as 2026-01-02T03:04:05.123456Z. */
void cli_format_time(int64_t us, char *out, size_t size);
/* cli_format_lsn writes a PostgreSQL LSN as X/X. */
void cli_format_lsn(uint64_t lsn, char *out, size_t size);
/* cli_format_bytes writes a size with a binary unit ("1.5 MiB"). */
void cli_format_bytes(uint64_t n, char *out, size_t size);

/* cli_usage_error logs a usage problem with a hint to --help; returns SLUICE_EXIT_USAGE. */
int cli_usage_error(const char *command, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * cli_stop_on_signals makes SIGINT and SIGTERM set the returned flag (a
 * long-running command then stops cleanly) and ignores SIGPIPE.
 */
volatile sig_atomic_t *cli_stop_on_signals(void);

#endif
