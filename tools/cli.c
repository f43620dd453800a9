/* Shared command-line helpers: exit codes, number and time parsing, formatting. */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static volatile sig_atomic_t cli_stop_flag = 0;

static void
cli_on_signal(int sig)
{
	(void)sig;
	cli_stop_flag = 1;
}

volatile sig_atomic_t *
cli_stop_on_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = cli_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return &cli_stop_flag;
}

bool
cli_parse_u64(const char *name, const char *text, uint64_t *out)
{
	char *end = NULL;
	errno = 0;
	if (text[0] == '-' || text[0] == '\0') {
		sluice_log_error("invalid value \"%s\" for %s: expected a non-negative integer",
				 text, name);
		return false;
	}
	unsigned long long v = strtoull(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0') {
		sluice_log_error("invalid value \"%s\" for %s: expected a non-negative integer",
				 text, name);
		return false;
	}
	*out = (uint64_t)v;
	return true;
}

bool
cli_parse_size(const char *name, const char *text, uint64_t *out)
{
	char digits[32];
	size_t n = strlen(text);
	int shift = 0;
	if (n > 0 && strchr("kKmMgG", text[n - 1]) != NULL) {
		char u = text[n - 1];
		shift = u == 'k' || u == 'K' ? 10 : u == 'm' || u == 'M' ? 20 : 30;
		n--;
	}
	if (n == 0 || n >= sizeof(digits)) {
		sluice_log_error("invalid value \"%s\" for %s: expected bytes, e.g. 16M", text,
				 name);
		return false;
	}
	memcpy(digits, text, n);
	digits[n] = '\0';
	uint64_t v;
	if (!cli_parse_u64(name, digits, &v))
		return false;
	if (v > (UINT64_MAX >> shift)) {
		sluice_log_error("invalid value \"%s\" for %s: too large", text, name);
		return false;
	}
	*out = v << shift;
	return true;
}

bool
cli_parse_rate(const char *name, const char *text, uint64_t *rows, uint64_t *bytes)
{
	char rows_text[32];
	const char *comma = strchr(text, ',');
	size_t rl = comma ? (size_t)(comma - text) : strlen(text);
	*rows = *bytes = 0;
	bool ok = rl < sizeof(rows_text) && text[0] != '-' && (comma == NULL || comma[1] != '-');
	if (ok) {
		memcpy(rows_text, text, rl);
		rows_text[rl] = '\0';
		char *end = NULL;
		errno = 0;
		*rows = strtoull(rows_text, &end, 10);
		ok = errno == 0 && end != rows_text && *end == '\0';
	}
	if (ok && comma != NULL) {
		char *end = NULL;
		errno = 0;
		*bytes = strtoull(comma + 1, &end, 10);
		ok = errno == 0 && end != comma + 1 && *end == '\0';
	}
	if (!ok || (*rows == 0 && *bytes == 0)) {
		sluice_log_error("invalid %s \"%s\": expected ROWS[,BYTES] (row changes and bytes "
				 "per second, e.g. 5000 or 5000,20000000 or 0,20000000; 0: no "
				 "limit on that one, not both)",
				 name, text);
		return false;
	}
	return true;
}

sluice_trust *
cli_load_trust(char **paths, size_t n)
{
	sluice_trust *t = sluice_trust_create();
	for (size_t i = 0; i < n; i++) {
		if (!sluice_trust_add_file(t, paths[i])) {
			sluice_trust_free(t);
			return NULL;
		}
	}
	return t;
}

bool
cli_parse_duration(const char *name, const char *text, int64_t *us)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(text, &end, 10);
	int64_t unit = 1000000;
	if (end != NULL && *end != '\0' && end[1] == '\0') {
		switch (*end) {
		case 's':
			break;
		case 'm':
			unit *= 60;
			break;
		case 'h':
			unit *= 3600;
			break;
		case 'd':
			unit *= 86400;
			break;
		default:
			unit = 0;
		}
		end++;
	}
	if (errno != 0 || end == text || *end != '\0' || unit == 0 || v <= 0 ||
	    v > INT64_MAX / unit) {
		sluice_log_error("invalid %s \"%s\": give a positive number of seconds, or "
				 "a number with s, m, h or d",
				 name, text);
		return false;
	}
	*us = (int64_t)v * unit;
	return true;
}

int64_t
cli_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
cli_append_freshness(sluice_buf *b, bool json, int64_t commit_us, int64_t heartbeat_us,
		     int64_t now_us)
{
	char commit[64] = "none", heartbeat[64] = "none";
	if (commit_us != 0)
		cli_format_time(commit_us, commit, sizeof(commit));
	if (heartbeat_us != 0)
		cli_format_time(heartbeat_us, heartbeat, sizeof(heartbeat));
	double age = heartbeat_us != 0 ? (double)(now_us - heartbeat_us) / 1e6 : -1;
	if (json) {
		sluice_buf_printf(
			b, ",\"newest_commit_us\":%" PRId64 ",\"newest_heartbeat_us\":%" PRId64,
			commit_us, heartbeat_us);
		if (heartbeat_us != 0)
			sluice_buf_printf(b, ",\"heartbeat_age_s\":%.3f", age);
		else
			sluice_buf_append_str(b, ",\"heartbeat_age_s\":null");
		return;
	}
	sluice_buf_printf(b, "newest commit %s, newest heartbeat %s", commit, heartbeat);
	if (heartbeat_us != 0)
		sluice_buf_printf(b, " (%.0f s ago)", age);
}

void
cli_format_time(int64_t us, char *out, size_t size)
{
	time_t sec = (time_t)(us / 1000000);
	int64_t frac = us % 1000000;
	if (frac < 0) {
		frac += 1000000;
		sec -= 1;
	}
	struct tm tm;
	if (gmtime_r(&sec, &tm) == NULL) {
		snprintf(out, size, "%" PRId64 "us", us);
		return;
	}
	snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06" PRId64 "Z", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

void
cli_format_lsn(uint64_t lsn, char *out, size_t size)
{
	snprintf(out, size, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xFFFFFFFFu));
}

void
cli_format_bytes(uint64_t n, char *out, size_t size)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	int u = 0;
	while (v >= 1024.0 && u < 4) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(out, size, "%" PRIu64 " B", n);
	else
		snprintf(out, size, "%.1f %s", v, units[u]);
}

int
cli_usage_error(const char *command, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sluice_log_error("%s (see \"sluice %s --help\")", msg, command);
	return SLUICE_EXIT_USAGE;
}

bool
cli_parse_time(const char *name, const char *text, int64_t *us)
{
	int y, mo, d, h = 0, mi = 0, n = 0;
	double sec = 0;
	const char *p = text;
	if (sscanf(p, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3)
		goto bad;
	p += n;
	if (*p == 'T' || *p == ' ') {
		p++;
		n = 0;
		if (sscanf(p, "%2d:%2d%n", &h, &mi, &n) != 2)
			goto bad;
		p += n;
		if (*p == ':') {
			char *end = NULL;
			sec = strtod(p + 1, &end);
			if (end == p + 1)
				goto bad;
			p = end;
		}
	}
	int64_t offset_s = 0;
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-') {
		int oh = 0, om = 0;
		int sign = *p == '-' ? -1 : 1;
		p++;
		n = 0;
		if (sscanf(p, "%2d%n", &oh, &n) != 1)
			goto bad;
		p += n;
		if (*p == ':')
			p++;
		n = 0;
		if (sscanf(p, "%2d%n", &om, &n) == 1)
			p += n;
		offset_s = sign * (oh * 3600 + om * 60);
	}
	if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec >= 61)
		goto bad;
	struct tm tm = {0};
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	time_t t = timegm(&tm);
	*us = ((int64_t)t - offset_s) * 1000000 + (int64_t)(sec * 1e6 + 0.5);
	return true;
bad:
	sluice_log_error("invalid time \"%s\" for %s: expected ISO 8601 such as "
			 "2026-11-21T05:30:00Z",
			 text, name);
	return false;
}
