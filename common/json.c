/* JSON string escaping for log lines and `inspect --json`. */
#include "json.h"

#include <stdint.h>

size_t
sluice_json_utf8_len(const uint8_t *p, size_t avail)
{
	uint8_t c = p[0];
	size_t n;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if ((c & 0xE0) == 0xC0) {
		n = 2;
		cp = c & 0x1F;
	} else if ((c & 0xF0) == 0xE0) {
		n = 3;
		cp = c & 0x0F;
	} else if ((c & 0xF8) == 0xF0) {
		n = 4;
		cp = c & 0x07;
	} else
		return 0;
	if (n > avail)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	/* Reject overlong forms, surrogates and values past U+10FFFF. */
	if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

/* json_append_u00 writes \u00XX for one byte without going through printf. */
static void
json_append_u00(sluice_buf *b, uint8_t c)
{
	static const char hex[] = "0123456789abcdef";
	char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
	sluice_buf_append(b, e, sizeof(e));
}

void
sluice_json_append_string(sluice_buf *b, const char *s, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;
	sluice_buf_reserve(b, len + 2);
	sluice_buf_append_byte(b, '"');
	size_t i = 0;
	while (i < len) {
		uint8_t c = p[i];
		if (c == '"' || c == '\\') {
			sluice_buf_append_byte(b, '\\');
			sluice_buf_append_byte(b, c);
			i++;
		} else if (c == '\n') {
			sluice_buf_append_str(b, "\\n");
			i++;
		} else if (c == '\t') {
			sluice_buf_append_str(b, "\\t");
			i++;
		} else if (c == '\r') {
			sluice_buf_append_str(b, "\\r");
			i++;
		} else if (c < 0x20 || c == 0x7F) {
			json_append_u00(b, c);
			i++;
		} else {
			size_t n = sluice_json_utf8_len(p + i, len - i);
			if (n == 0) {
				json_append_u00(b, c);
				i++;
			} else {
				sluice_buf_append(b, p + i, n);
				i += n;
			}
		}
	}
	sluice_buf_append_byte(b, '"');
}
