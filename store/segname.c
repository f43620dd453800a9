/* Segment names. */
#include "segname.h"

#include <string.h>

bool
sluice_segname_parse(const char *name, uint64_t *first)
{
	if (strlen(name) != 20 || strcmp(name + 16, ".seg") != 0)
		return false;
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		char c = name[i];
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else
			return false;
		v = (v << 4) | (uint64_t)d;
	}
	*first = v;
	return true;
}

int
sluice_segname_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}
