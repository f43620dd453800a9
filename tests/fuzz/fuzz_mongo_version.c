/*
 * Fuzz target for apply/mongo/mongoversion.c: a sluice.versions entry read
 * from the target, and the hash of a document the target returned (both
 * untrusted bytes). Input: the bytes, in a buffer of their own exact size.
 *
 * Properties (a failure aborts): parsing and hashing never read outside the
 * input; an entry that parses is built again (sluice_mongo_version_build)
 * into well-formed BSON that parses to the same version; a document that
 * hashes matches an entry made from that hash, and a deleted entry does not
 * match it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bson/bson.h>

#include "mongoversion.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
violated(const char *what)
{
	fprintf(stderr, "fuzz_mongo_version: property violated: %s\n", what);
	abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = malloc(size ? size : 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	sluice_mongo_version v, w;
	if (sluice_mongo_version_parse(buf, size, &v)) {
		bson_t id = BSON_INITIALIZER, out;
		BSON_APPEND_UTF8(&id, "ns", "db.coll");
		BSON_APPEND_INT32(&id, "id", 1);
		sluice_mongo_version_build(&out, &id, &v);
		if (!bson_validate(&out, BSON_VALIDATE_NONE, NULL))
			violated("a built entry is not well-formed BSON");
		if (!sluice_mongo_version_parse(bson_get_data(&out), out.len, &w))
			violated("a built entry does not parse");
		if (w.present != v.present || w.t != v.t || w.tomb != v.tomb ||
		    (v.tomb && (w.dt != v.dt || strcmp(w.dnode, v.dnode) != 0)) ||
		    strcmp(w.node, v.node) != 0 ||
		    (v.present && memcmp(w.h, v.h, sizeof(v.h)) != 0))
			violated("a built entry parses to another version");
		bson_destroy(&out);
		bson_destroy(&id);
	}
	uint8_t h[SLUICE_MONGO_HASH_BYTES];
	if (sluice_mongo_version_hash(buf, size, h)) {
		memset(&v, 0, sizeof(v));
		v.found = true;
		v.present = true;
		memcpy(v.h, h, sizeof(h));
		if (!sluice_mongo_version_matches(&v, buf, size))
			violated("a document does not match its own hash");
		v.present = false;
		if (sluice_mongo_version_matches(&v, buf, size))
			violated("a deleted entry matches a document");
	}
	free(buf);
	return 0;
}
