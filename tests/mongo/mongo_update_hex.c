/*
 * sluice_mongo_apply_update over a pipe, for tests/mongo/test_update_oracle.py:
 * each line of stdin is "DOC UD" (raw BSON in hex), each line of stdout
 * "OK RESULT" (hex) or "ERR message".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mongoupdate.h"

/* unhex decodes the n hex digits at s into out; false if one is not a hex digit. */
static bool
unhex(const char *s, size_t n, uint8_t *out)
{
	for (size_t i = 0; i + 1 < n; i += 2) {
		unsigned v = 0;
		for (size_t k = 0; k < 2; k++) {
			char c = s[i + k];
			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v |= (unsigned)(c - 'A' + 10);
			else
				return false;
		}
		out[i / 2] = (uint8_t)v;
	}
	return n % 2 == 0;
}

int
main(void)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, stdin)) > 0) {
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		char *sp = strchr(line, ' ');
		if (sp == NULL) {
			printf("ERR a line without a space\n");
			continue;
		}
		size_t dn = (size_t)(sp - line), un = strlen(sp + 1);
		/* Buffers of the exact size, so that a sanitizer sees a read past them. */
		uint8_t *doc = malloc(dn / 2 + 1), *ud = malloc(un / 2 + 1);
		if (doc == NULL || ud == NULL)
			return 1;
		if (!unhex(line, dn, doc) || !unhex(sp + 1, un, ud)) {
			printf("ERR not hex\n");
		} else {
			bson_t out;
			bson_init(&out);
			char err[512];
			if (sluice_mongo_apply_update(doc, dn / 2, ud, un / 2, &out, err,
						      sizeof(err))) {
				const uint8_t *p = bson_get_data(&out);
				fputs("OK ", stdout);
				for (uint32_t i = 0; i < out.len; i++)
					printf("%02x", p[i]);
				putchar('\n');
			} else {
				printf("ERR %s\n", err);
			}
			bson_destroy(&out);
		}
		free(doc);
		free(ud);
		fflush(stdout);
	}
	free(line);
	return 0;
}
