/* Fuzz target for the JetStream message model (store/natslog.c): untrusted headers and bodies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "natslog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * fuzz_field takes the next '\n'-terminated field of the input as a header
 * value: "-" stands for an absent header. Returns NULL when absent.
 */
static const char *
fuzz_field(char **p, char *end, bool *more)
{
	if (*p >= end) {
		*more = false;
		return NULL;
	}
	char *start = *p;
	char *nl = memchr(start, '\n', (size_t)(end - start));
	if (nl == NULL)
		nl = end;
	*nl = '\0';
	*p = nl + 1;
	return strcmp(start, "-") == 0 ? NULL : start;
}

static bool
fuzz_fetch(void *ctx, uint64_t seq, uint64_t segment, uint64_t offset, sluice_buf *out)
{
	(void)ctx;
	(void)segment;
	(void)offset;
	if (seq % 7 == 0)
		return false;
	for (uint64_t i = 0; i < 64; i++)
		sluice_buf_append_byte(out, (uint8_t)(seq + i));
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy with one spare byte, so that the last field can be terminated. */
	char *text = malloc(size + 1);
	if (text == NULL)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	char *p = text, *end = text + size;
	sluice_natslog *log = sluice_natslog_create(fuzz_fetch, NULL);
	bool more = true;
	for (uint64_t seq = 1; more && seq < 10000; seq++) {
		const char *seg = fuzz_field(&p, end, &more);
		const char *off = fuzz_field(&p, end, &more);
		const char *cut = fuzz_field(&p, end, &more);
		const char *rm = fuzz_field(&p, end, &more);
		const char *body = fuzz_field(&p, end, &more);
		sluice_natslog_msg m;
		if (sluice_natslog_parse(seg, off, cut, rm, &m) != SLUICE_NATSLOG_OK) {
			if (seq % 3 == 0)
				sluice_natslog_break(log, seq, SLUICE_NATSLOG_E_HEADER);
			continue;
		}
		if (m.segment % 5 == 0)
			sluice_natslog_pin(log, m.segment);
		if (seq == 3 && (size & 1)) /* a reader starting mid-stream */
			sluice_natslog_set_floor(log, m.segment);
		sluice_natslog_apply(log, seq, &m, body ? body : "", body ? strlen(body) : 0);
	}
	/* Every segment reads back whole, within its size. */
	uint64_t *firsts = NULL;
	size_t n = 0;
	sluice_natslog_list(log, &firsts, &n);
	uint8_t buf[4096];
	for (size_t i = 0; i < n; i++) {
		uint64_t segsize = 0, off = 0;
		if (sluice_natslog_size(log, firsts[i], &segsize) != SLUICE_NATSLOG_OK)
			abort();
		while (off < segsize) {
			size_t got = 0;
			if (sluice_natslog_read(log, firsts[i], off, buf, sizeof(buf), &got) !=
			    SLUICE_NATSLOG_OK)
				break;
			if (got == 0 || got > sizeof(buf))
				abort();
			off += got;
		}
		if (off > segsize)
			abort();
		sluice_natslog_unpin(log, firsts[i]);
	}
	free(firsts);
	sluice_natslog_free(log);
	free(text);
	return 0;
}
