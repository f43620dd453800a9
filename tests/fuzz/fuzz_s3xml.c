/* Fuzz target for the S3 response reader (store/s3xml.c): untrusted XML from a bucket's server. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_walk reads every element name as the S3 backend does, checking the contract. */
static void
fuzz_walk(const char *xml, size_t size, const char *name, size_t cap)
{
	char out[1100];
	size_t pos = 0, n = 0, last = 0;
	for (int i = 0; i < 100000; i++) {
		sluice_s3xml_status st = sluice_s3xml_next(xml, size, &pos, name, out, cap, &n);
		if (st != SLUICE_S3XML_OK)
			return;
		if (n >= cap || out[n] != '\0' || pos > size || pos <= last)
			abort();
		last = pos;
	}
	abort(); /* every element moves the position forward: the loop must end */
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Not NUL-terminated on purpose: the reader must stay within size. */
	char *xml = malloc(size ? size : 1);
	if (xml == NULL)
		abort();
	memcpy(xml, data, size);
	fuzz_walk(xml, size, "Key", 1024);
	fuzz_walk(xml, size, "NextContinuationToken", 1024);
	fuzz_walk(xml, size, "IsTruncated", 16);
	fuzz_walk(xml, size, "Code", 64);
	fuzz_walk(xml, size, "UploadId", 4);
	free(xml);
	return 0;
}
