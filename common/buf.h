/* Growable byte buffer: a plain value with a length, used for every byte string. */
#ifndef SLUICE_COMMON_BUF_H
#define SLUICE_COMMON_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct sluice_buf {
	uint8_t *data; /* owned; NULL when empty and never grown */
	size_t len;
	size_t cap;
} sluice_buf;

/* sluice_buf_reserve makes room for extra more bytes; aborts on out of memory. */
void sluice_buf_reserve(sluice_buf *b, size_t extra);
void sluice_buf_append(sluice_buf *b, const void *data, size_t len);
void sluice_buf_append_str(sluice_buf *b, const char *s);
void sluice_buf_append_byte(sluice_buf *b, uint8_t byte);
void sluice_buf_printf(sluice_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* sluice_buf_append_varint appends v as a base-128 varint (protobuf style). */
void sluice_buf_append_varint(sluice_buf *b, uint64_t v);
/* sluice_buf_reset empties the buffer and keeps its memory. */
void sluice_buf_reset(sluice_buf *b);
void sluice_buf_free(sluice_buf *b);

#endif
