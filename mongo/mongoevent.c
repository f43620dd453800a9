/* MongoDB change events: the fields capture needs, read from untrusted BSON. */
#include "mongoevent.h"

#include <bson/bson.h>
#include <string.h>

/*
 * event_doc finds a document-valued field; false when it is there but not a
 * well-formed document (libbson's iterator accepts a 4-byte one, and does not
 * look inside: the stream keeps these bytes, so they must be a document).
 */
static bool
event_doc(const bson_t *ev, const char *name, const uint8_t **data, uint32_t *len)
{
	bson_iter_t it;
	*data = NULL;
	*len = 0;
	if (!bson_iter_init_find(&it, ev, name) || !BSON_ITER_HOLDS_DOCUMENT(&it))
		return true;
	bson_iter_document(&it, len, data);
	bson_t doc;
	if (*len < 5 || (*data)[*len - 1] != 0 || !bson_init_static(&doc, *data, *len) ||
	    !bson_validate(&doc, BSON_VALIDATE_NONE, NULL)) {
		*data = NULL;
		*len = 0;
		return false;
	}
	return true;
}

/* event_str finds a string field at a dotted path. */
static const char *
event_str(const bson_t *ev, const char *path)
{
	bson_iter_t it, found;
	if (!bson_iter_init(&it, ev) || !bson_iter_find_descendant(&it, path, &found) ||
	    !BSON_ITER_HOLDS_UTF8(&found))
		return NULL;
	uint32_t len;
	const char *s = bson_iter_utf8(&found, &len);
	/* A name with a NUL inside would be cut short where it is used as a C string. */
	if (strlen(s) != len)
		return NULL;
	return s;
}

bool
sluice_mongo_event_is_row(const char *op)
{
	return strcmp(op, "insert") == 0 || strcmp(op, "update") == 0 ||
	       strcmp(op, "replace") == 0 || strcmp(op, "delete") == 0;
}

bool
sluice_mongo_event_decode(const uint8_t *data, size_t len, sluice_mongo_event *ev, const char **why)
{
	bson_t b;
	bson_iter_t it;
	memset(ev, 0, sizeof(*ev));
	if (!bson_init_static(&b, data, len)) {
		*why = "not a BSON document";
		return false;
	}
	if (!bson_validate(&b, BSON_VALIDATE_NONE, NULL)) {
		*why = "not a well-formed BSON document";
		return false;
	}
	if (!event_doc(&b, "_id", &ev->token, &ev->token_len) || ev->token == NULL) {
		*why = "no resume token (_id)";
		return false;
	}
	ev->op = event_str(&b, "operationType");
	if (ev->op == NULL) {
		*why = "no operationType";
		return false;
	}
	if (!bson_iter_init_find(&it, &b, "clusterTime") || !BSON_ITER_HOLDS_TIMESTAMP(&it)) {
		*why = "no clusterTime";
		return false;
	}
	uint32_t t, i;
	bson_iter_timestamp(&it, &t, &i);
	ev->cluster_time = ((uint64_t)t << 32) | i;
	ev->wall_us = (int64_t)t * 1000000;
	if (bson_iter_init_find(&it, &b, "wallTime") && BSON_ITER_HOLDS_DATE_TIME(&it)) {
		int64_t ms = bson_iter_date_time(&it);
		/* Dates beyond ±292,000 years do not fit µs: keep the cluster time's. */
		if (ms > INT64_MIN / 1000 && ms < INT64_MAX / 1000)
			ev->wall_us = ms * 1000;
	}
	ev->db = event_str(&b, "ns.db");
	ev->coll = event_str(&b, "ns.coll");
	ev->to_db = event_str(&b, "to.db");
	ev->to_coll = event_str(&b, "to.coll");
	if (!event_doc(&b, "lsid", &ev->lsid, &ev->lsid_len) ||
	    !event_doc(&b, "fullDocument", &ev->full, &ev->full_len) ||
	    !event_doc(&b, "documentKey", &ev->key, &ev->key_len) ||
	    !event_doc(&b, "updateDescription", &ev->update, &ev->update_len) ||
	    !event_doc(&b, "fullDocumentBeforeChange", &ev->before, &ev->before_len)) {
		*why = "a malformed embedded document";
		return false;
	}
	if (ev->lsid != NULL && bson_iter_init_find(&it, &b, "txnNumber") &&
	    (BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_INT32(&it))) {
		ev->in_txn = true;
		ev->txn_number = bson_iter_as_int64(&it);
	}
	if (!sluice_mongo_event_is_row(ev->op))
		return true;
	if (ev->db == NULL || ev->coll == NULL) {
		*why = "a row change without its namespace (ns.db, ns.coll)";
		return false;
	}
	bool insert = strcmp(ev->op, "insert") == 0, update = strcmp(ev->op, "update") == 0,
	     replace = strcmp(ev->op, "replace") == 0;
	if ((insert || replace) && ev->full == NULL) {
		*why = "an insert or replace without its fullDocument";
		return false;
	}
	if (!insert && ev->key == NULL) {
		*why = "an update, replace or delete without its documentKey";
		return false;
	}
	if (update && ev->update == NULL) {
		*why = "an update without its updateDescription";
		return false;
	}
	return true;
}

bool
sluice_mongo_token_time(const uint8_t *data, size_t len, uint64_t *cluster_time)
{
	bson_t b;
	bson_iter_t it;
	uint32_t hl;
	if (!bson_init_static(&b, data, len) || !bson_iter_init_find(&it, &b, "_data") ||
	    !BSON_ITER_HOLDS_UTF8(&it))
		return false;
	const char *hex = bson_iter_utf8(&it, &hl);
	if (hl < 18 || hex[0] != '8' || hex[1] != '2')
		return false;
	uint64_t v = 0;
	for (int k = 2; k < 18; k++) {
		char c = hex[k];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return false;
		v = (v << 4) | d;
	}
	*cluster_time = v;
	return true;
}
