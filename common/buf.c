/* Growable byte buffer: a plain value with a length, used for every byte string. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
sluice_buf_reserve(sluice_buf *b, size_t extra)
{
	if (b->cap - b->len >= extra && b->data != NULL)
		return;
	size_t want = b->len + extra;
	if (want < b->len)
		abort();
	size_t cap = b->cap ? b->cap : 256;
	while (cap < want) {
		if (cap > SIZE_MAX / 2)
			abort();
		cap *= 2;
	}
	uint8_t *p = realloc(b->data, cap);
	if (p == NULL) {
		fprintf(stderr, "sluice: out of memory (wanted %zu bytes)\n", cap);
		abort();
	}
	b->data = p;
	b->cap = cap;
}

void
sluice_buf_append(sluice_buf *b, const void *data, size_t len)
{
	sluice_buf_reserve(b, len);
	if (len > 0)
		memcpy(b->data + b->len, data, len);
	b->len += len;
}

void
sluice_buf_append_str(sluice_buf *b, const char *s)
{
	sluice_buf_append(b, s, strlen(s));
}

void
sluice_buf_append_byte(sluice_buf *b, uint8_t byte)
{
	sluice_buf_reserve(b, 1);
	b->data[b->len++] = byte;
}

void
sluice_buf_printf(sluice_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	sluice_buf_reserve(b, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
sluice_buf_append_varint(sluice_buf *b, uint64_t v)
{
	sluice_buf_reserve(b, 10);
	while (v >= 0x80) {
		b->data[b->len++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	b->data[b->len++] = (uint8_t)v;
}

void
sluice_buf_reset(sluice_buf *b)
{
	b->len = 0;
}

void
sluice_buf_free(sluice_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}
