/* Process-wide logging: one JSON object per line, or readable text on a terminal. */
#ifndef SLUICE_COMMON_LOG_H
#define SLUICE_COMMON_LOG_H

#include <stdbool.h>

typedef enum sluice_log_level {
	SLUICE_LOG_DEBUG = 0,
	SLUICE_LOG_INFO = 1,
	SLUICE_LOG_WARN = 2,
	SLUICE_LOG_ERROR = 3,
} sluice_log_level;

typedef enum sluice_log_format {
	SLUICE_LOG_AUTO = 0, /* text when stderr is a terminal, JSON otherwise */
	SLUICE_LOG_TEXT = 1,
	SLUICE_LOG_JSON = 2,
} sluice_log_format;

/* sluice_log_setup sets the minimum level and the output format. */
void sluice_log_setup(sluice_log_level min_level, sluice_log_format format);

/* sluice_log_current_* tell the settings (a supervisor passes them to its children). */
sluice_log_level sluice_log_current_level(void);
sluice_log_format sluice_log_current_format(void);

/* sluice_log_set_component names the subcommand in every line ("capture"). */
void sluice_log_set_component(const char *component);

/*
 * sluice_log_set_pipeline names the service pipeline this process runs
 * ("pipeline" in every JSON line, "component[name]" in text); NULL: none.
 * The string is borrowed and must outlive the logging.
 */
void sluice_log_set_pipeline(const char *pipeline);

void sluice_log_write(sluice_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define sluice_log_debug(...) sluice_log_write(SLUICE_LOG_DEBUG, __VA_ARGS__)
#define sluice_log_info(...)  sluice_log_write(SLUICE_LOG_INFO, __VA_ARGS__)
#define sluice_log_warn(...)  sluice_log_write(SLUICE_LOG_WARN, __VA_ARGS__)
#define sluice_log_error(...) sluice_log_write(SLUICE_LOG_ERROR, __VA_ARGS__)

#endif
