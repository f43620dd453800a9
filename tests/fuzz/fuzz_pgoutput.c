/* Fuzz target for capture's network decoders: CopyData framing, pgoutput, COPY text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgoutput.h"
#include "pgsnapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_within aborts unless [p, p+len) lies inside the input. */
static void
fuzz_within(const uint8_t *base, size_t size, const uint8_t *p, size_t len)
{
	if (len == 0)
		return;
	if (p < base || p + len > base + size || p + len < p)
		abort();
}

static void
fuzz_tuple(const uint8_t *base, size_t size, const sluice_pgo_tuple *t)
{
	for (uint16_t i = 0; i < t->ncols; i++) {
		const sluice_pgo_value *v = &t->cols[i];
		if (v->kind != 'n' && v->kind != 'u' && v->kind != 't' && v->kind != 'b')
			abort();
		fuzz_within(base, size, v->data, v->len);
	}
}

static void
fuzz_message(sluice_pgo_decoder *dec, const uint8_t *data, size_t size)
{
	sluice_pgo_msg m;
	if (sluice_pgo_decode(dec, data, size, &m) != SLUICE_PGO_OK)
		return;
	switch (m.type) {
	case 'I':
	case 'U':
	case 'D':
		if (m.type != 'D')
			fuzz_tuple(data, size, &m.change.new_tuple);
		if (m.change.old_kind)
			fuzz_tuple(data, size, &m.change.old_tuple);
		break;
	case 'R':
		for (uint16_t i = 0; i < m.relation.ncols; i++)
			fuzz_within(data, size, (const uint8_t *)m.relation.cols[i].name,
				    strlen(m.relation.cols[i].name) + 1);
		break;
	case 'T':
		fuzz_within(data, size, m.truncate.relids, (size_t)m.truncate.nrels * 4);
		for (uint32_t i = 0; i < m.truncate.nrels; i++)
			(void)sluice_pgo_truncate_relid(&m, i);
		break;
	case 'M':
		fuzz_within(data, size, m.message.content, m.message.len);
		break;
	default:
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static sluice_pgo_decoder *dec;
	if (dec == NULL)
		dec = sluice_pgo_decoder_create();
	if (size < 1)
		return 0;
	uint8_t mode = data[0] % 3;
	data++;
	size--;
	if (mode == 0) {
		/* A whole CopyData message from the walsender. */
		sluice_pgo_copydata cd;
		if (sluice_pgo_decode_copydata(data, size, &cd) == SLUICE_PGO_OK &&
		    cd.type == 'w') {
			fuzz_within(data, size, cd.data, cd.len);
			fuzz_message(dec, cd.data, cd.len);
		}
	} else if (mode == 1) {
		fuzz_message(dec, data, size);
	} else {
		/* A COPY text line: decoded bytes never outgrow the line. */
		enum { MAX = 64 };
		size_t starts[MAX];
		uint32_t lens[MAX];
		uint8_t *scratch = malloc(size + 1);
		if (scratch == NULL)
			abort();
		int n = sluice_pgsnapshot_copy_text_decode((const char *)data, size, scratch,
							   starts, lens, MAX);
		for (int i = 0; i < n; i++)
			if (lens[i] != UINT32_MAX && starts[i] + lens[i] > size)
				abort();
		free(scratch);
	}
	return 0;
}
