/* Query parameters of store URIs. */
#include "query.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

bool
sluice_store_query_param(const char *query, const char *name, char *out, size_t cap)
{
	size_t nlen = strlen(name);
	const char *p = query;
	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, '&');
		size_t plen = end ? (size_t)(end - p) : strlen(p);
		if (plen > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
			size_t n = 0;
			for (size_t i = nlen + 1; i < plen && n + 1 < cap; i++) {
				char c = p[i];
				if (c == '%' && i + 2 < plen && isxdigit((unsigned char)p[i + 1]) &&
				    isxdigit((unsigned char)p[i + 2]) &&
				    (p[i + 1] != '0' || p[i + 2] != '0')) {
					/* two hex digits only; %00 would cut the value short */
					char hex[3] = {p[i + 1], p[i + 2], 0};
					out[n++] = (char)strtol(hex, NULL, 16);
					i += 2;
					continue;
				}
				out[n++] = c;
			}
			if (cap > 0)
				out[n] = '\0';
			return true;
		}
		p = end ? end + 1 : NULL;
	}
	return false;
}
