/* Process-wide logging: one JSON object per line, or readable text on a terminal. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"

static sluice_log_level log_min_level = SLUICE_LOG_INFO;
static sluice_log_format log_format = SLUICE_LOG_AUTO;
static const char *log_component = "sluice";
static const char *log_pipeline = NULL;

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

void
sluice_log_setup(sluice_log_level min_level, sluice_log_format format)
{
	log_min_level = min_level;
	log_format = format;
}

sluice_log_level
sluice_log_current_level(void)
{
	return log_min_level;
}

sluice_log_format
sluice_log_current_format(void)
{
	return log_format;
}

void
sluice_log_set_component(const char *component)
{
	log_component = component;
}

void
sluice_log_set_pipeline(const char *pipeline)
{
	log_pipeline = pipeline;
}

void
sluice_log_write(sluice_log_level level, const char *fmt, ...)
{
	if (level < log_min_level)
		return;

	/* Keep errno intact so callers can log and then inspect it. */
	int saved_errno = errno;
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[96];
	snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

	sluice_log_format format = log_format;
	if (format == SLUICE_LOG_AUTO)
		format = isatty(STDERR_FILENO) ? SLUICE_LOG_TEXT : SLUICE_LOG_JSON;

	if (format == SLUICE_LOG_TEXT) {
		fprintf(stderr, "%s%s%s%s: %s%s\n", log_component, log_pipeline ? "[" : "",
			log_pipeline ? log_pipeline : "", log_pipeline ? "]" : "",
			level == SLUICE_LOG_ERROR   ? "error: "
			: level == SLUICE_LOG_WARN  ? "warning: "
			: level == SLUICE_LOG_DEBUG ? "debug: "
						    : "",
			msg);
	} else {
		sluice_buf line = {0};
		sluice_buf_append_str(&line, "{\"ts\":\"");
		sluice_buf_append_str(&line, when);
		sluice_buf_append_str(&line, "\",\"level\":\"");
		sluice_buf_append_str(&line, log_level_names[level]);
		sluice_buf_append_str(&line, "\",\"component\":");
		sluice_json_append_string(&line, log_component, strlen(log_component));
		if (log_pipeline != NULL) {
			sluice_buf_append_str(&line, ",\"pipeline\":");
			sluice_json_append_string(&line, log_pipeline, strlen(log_pipeline));
		}
		sluice_buf_append_str(&line, ",\"msg\":");
		sluice_json_append_string(&line, msg, strlen(msg));
		sluice_buf_append_str(&line, "}\n");
		if (line.data != NULL)
			fwrite(line.data, 1, line.len, stderr);
		sluice_buf_free(&line);
	}
	fflush(stderr);
	errno = saved_errno;
}
