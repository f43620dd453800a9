/* Document versions for last-writer-wins on MongoDB: sluice.versions entries. */
#include "mongoversion.h"

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "conflict.h"

void
sluice_mongo_version_id(bson_t *out, const char *db, const char *coll, const bson_iter_t *id)
{
	bson_init(out);
	size_t dl = strlen(db), cl = strlen(coll);
	char *ns = bson_malloc(dl + cl + 2);
	memcpy(ns, db, dl);
	ns[dl] = '.';
	memcpy(ns + dl + 1, coll, cl + 1);
	BSON_APPEND_UTF8(out, "ns", ns);
	bson_free(ns);
	bson_append_value(out, "id", 2, bson_iter_value((bson_iter_t *)id));
}

/* element_span gives the bytes of the element it stands on (type, key, value). */
static void
element_span(const bson_iter_t *it, const uint8_t **p, size_t *n)
{
	*p = it->raw + it->off;
	*n = it->next_off - it->off;
}

bool
sluice_mongo_version_hash(const uint8_t *doc, size_t len, uint8_t h[SLUICE_MONGO_HASH_BYTES])
{
	bson_t b;
	bson_iter_t it;
	if (doc == NULL || !bson_init_static(&b, doc, len) || !bson_iter_init(&it, &b))
		return false;
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, SLUICE_MONGO_HASH_BYTES);
	const uint8_t *p;
	size_t n;
	bson_iter_t id;
	if (bson_iter_init_find(&id, &b, "_id")) {
		element_span(&id, &p, &n);
		crypto_generichash_update(&st, p, n);
	}
	while (bson_iter_next(&it)) {
		if (strcmp(bson_iter_key(&it), "_id") == 0)
			continue;
		element_span(&it, &p, &n);
		crypto_generichash_update(&st, p, n);
	}
	if (it.err_off != 0)
		return false; /* a malformed element */
	crypto_generichash_final(&st, h, SLUICE_MONGO_HASH_BYTES);
	return true;
}

static void
copy_str(bson_iter_t *it, char *out, size_t cap)
{
	uint32_t l;
	const char *s = bson_iter_utf8(it, &l);
	if (l >= cap)
		l = (uint32_t)cap - 1;
	memcpy(out, s, l);
	out[l] = '\0';
}

bool
sluice_mongo_version_parse(const uint8_t *data, size_t len, sluice_mongo_version *v)
{
	memset(v, 0, sizeof(*v));
	bson_t b;
	bson_iter_t it;
	if (!bson_init_static(&b, data, len) || !bson_iter_init(&it, &b))
		return false;
	v->found = true;
	while (bson_iter_next(&it)) {
		const char *k = bson_iter_key(&it);
		bson_type_t ty = bson_iter_type(&it);
		bool num = ty == BSON_TYPE_INT64 || ty == BSON_TYPE_INT32;
		if (strcmp(k, "t") == 0 && num)
			v->t = bson_iter_as_int64(&it);
		else if (strcmp(k, "node") == 0 && ty == BSON_TYPE_UTF8)
			copy_str(&it, v->node, sizeof(v->node));
		else if (strcmp(k, "dt") == 0 && num) {
			v->dt = bson_iter_as_int64(&it);
			v->tomb = true;
		} else if (strcmp(k, "dnode") == 0 && ty == BSON_TYPE_UTF8)
			copy_str(&it, v->dnode, sizeof(v->dnode));
		else if (strcmp(k, "h") == 0 && ty == BSON_TYPE_BINARY) {
			bson_subtype_t sub;
			uint32_t bl;
			const uint8_t *bd;
			bson_iter_binary(&it, &sub, &bl, &bd);
			if (bl == SLUICE_MONGO_HASH_BYTES) {
				memcpy(v->h, bd, bl);
				v->present = true;
			}
		}
	}
	return it.err_off == 0;
}

void
sluice_mongo_version_build(bson_t *out, const bson_t *id, const sluice_mongo_version *v)
{
	bson_init(out);
	BSON_APPEND_DOCUMENT(out, "_id", id);
	/* ns and db again at the top: a dropped collection's entries go by them */
	bson_iter_t it;
	if (bson_iter_init_find(&it, id, "ns") && BSON_ITER_HOLDS_UTF8(&it)) {
		uint32_t l;
		const char *ns = bson_iter_utf8(&it, &l);
		const char *dot = memchr(ns, '.', l);
		BSON_APPEND_UTF8(out, "ns", ns);
		bson_append_utf8(out, "db", 2, ns, dot ? (int)(dot - ns) : (int)l);
	}
	BSON_APPEND_INT64(out, "t", v->t);
	BSON_APPEND_UTF8(out, "node", v->node);
	if (v->present)
		BSON_APPEND_BINARY(out, "h", BSON_SUBTYPE_BINARY, v->h, SLUICE_MONGO_HASH_BYTES);
	if (v->tomb) {
		BSON_APPEND_INT64(out, "dt", v->dt);
		BSON_APPEND_UTF8(out, "dnode", v->dnode);
	}
	if (!v->present) {
		/* the TTL index removes tombstones past the horizon (sluice prepare) */
		BSON_APPEND_DATE_TIME(out, "deleted_at", (v->tomb ? v->dt : v->t) / 1000);
	}
}

void
sluice_mongo_version_tomb(sluice_mongo_version *v, int64_t t, const char *node)
{
	sluice_version have = {.known = v->tomb, .time_us = v->dt, .node = v->dnode};
	sluice_version seen = {.known = true, .time_us = t, .node = node};
	if (v->tomb && !sluice_version_newer(&seen, &have))
		return; /* the version order of conflicts.md: keep the newer delete */
	v->tomb = true;
	v->dt = t;
	snprintf(v->dnode, sizeof(v->dnode), "%s", node);
}

bool
sluice_mongo_version_matches(const sluice_mongo_version *v, const uint8_t *doc, size_t len)
{
	if (doc == NULL)
		return v->found && !v->present;
	uint8_t h[SLUICE_MONGO_HASH_BYTES];
	return v->found && v->present && sluice_mongo_version_hash(doc, len, h) &&
	       sodium_memcmp(h, v->h, sizeof(h)) == 0;
}
