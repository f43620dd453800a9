/* Fuzz target for capture's decoder of MongoDB change events and resume tokens (untrusted BSON). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mongoevent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_within aborts unless [p, p+len) lies inside the input. */
static void
fuzz_within(const uint8_t *base, size_t size, const void *ptr, size_t len)
{
	const uint8_t *p = ptr;
	if (p == NULL) {
		if (len != 0)
			abort();
		return;
	}
	if (p < base || len > size || p > base + size - len)
		abort();
}

/* fuzz_doc: a borrowed document lies inside the input and says its own length. */
static void
fuzz_doc(const uint8_t *base, size_t size, const uint8_t *p, uint32_t len)
{
	fuzz_within(base, size, p, len);
	if (p != NULL) {
		if (len < 5)
			abort();
		uint32_t stated = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				  (uint32_t)p[3] << 24;
		if (stated != len)
			abort();
	}
}

/* fuzz_str: a borrowed string lies inside the input, NUL included. */
static void
fuzz_str(const uint8_t *base, size_t size, const char *s)
{
	if (s == NULL)
		return;
	fuzz_within(base, size, s, 1);
	size_t n = strnlen(s, size);
	fuzz_within(base, size, s, n + 1);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sluice_mongo_event ev;
	const char *why = NULL;
	if (sluice_mongo_event_decode(data, size, &ev, &why)) {
		fuzz_doc(data, size, ev.token, ev.token_len);
		if (ev.token == NULL || ev.op == NULL)
			abort();
		fuzz_str(data, size, ev.op);
		fuzz_str(data, size, ev.db);
		fuzz_str(data, size, ev.coll);
		fuzz_str(data, size, ev.to_db);
		fuzz_str(data, size, ev.to_coll);
		fuzz_doc(data, size, ev.lsid, ev.lsid_len);
		fuzz_doc(data, size, ev.full, ev.full_len);
		fuzz_doc(data, size, ev.key, ev.key_len);
		fuzz_doc(data, size, ev.update, ev.update_len);
		fuzz_doc(data, size, ev.before, ev.before_len);
		if (ev.in_txn && ev.lsid == NULL)
			abort();
		if (sluice_mongo_event_is_row(ev.op)) {
			if (ev.db == NULL || ev.coll == NULL)
				abort();
			if (strcmp(ev.op, "insert") != 0 && ev.key == NULL)
				abort();
		}
		uint64_t ct;
		(void)sluice_mongo_token_time(ev.token, ev.token_len, &ct);
	} else if (why == NULL) {
		abort();
	}
	uint64_t ct;
	(void)sluice_mongo_token_time(data, size, &ct);
	return 0;
}
