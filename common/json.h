/* JSON string escaping for log lines and `inspect --json`. */
#ifndef SLUICE_COMMON_JSON_H
#define SLUICE_COMMON_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/*
 * sluice_json_append_string appends s as a quoted JSON string. Valid UTF-8
 * passes through; control characters are escaped; each byte of invalid UTF-8
 * becomes \u00XX so no input byte is lost silently.
 */
void sluice_json_append_string(sluice_buf *b, const char *s, size_t len);

/*
 * sluice_json_utf8_len returns the length of the valid UTF-8 sequence at p
 * (avail ≥ 1 bytes), or 0: overlong forms, surrogates and values past
 * U+10FFFF are not valid.
 */
size_t sluice_json_utf8_len(const uint8_t *p, size_t avail);

#endif
