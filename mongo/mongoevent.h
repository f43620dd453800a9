/* MongoDB change events: the fields capture and apply need, read from untrusted BSON (libbson
 * only). */
#ifndef SLUICE_MONGO_MONGOEVENT_H
#define SLUICE_MONGO_MONGOEVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * One change event, decoded. Pointers borrow from the event's bytes; a
 * document-valued field is NULL (length 0) when absent or not a document, a
 * string field NULL when absent or not a string.
 */
typedef struct sluice_mongo_event {
	const uint8_t *token; /* _id: the resume token (a document) */
	uint32_t token_len;
	const char *op;        /* operationType */
	uint64_t cluster_time; /* clusterTime: seconds << 32 | increment */
	int64_t wall_us; /* wallTime in µs since the epoch; the cluster time's seconds if absent */
	const char *db, *coll;       /* ns */
	const char *to_db, *to_coll; /* rename: to */
	bool in_txn;                 /* lsid and txnNumber: part of a multi-document transaction */
	const uint8_t *lsid;
	uint32_t lsid_len;
	int64_t txn_number;
	const uint8_t *full; /* fullDocument */
	uint32_t full_len;
	const uint8_t *key; /* documentKey */
	uint32_t key_len;
	const uint8_t *update; /* updateDescription */
	uint32_t update_len;
	const uint8_t *before; /* fullDocumentBeforeChange (the pre-image); NULL when null */
	uint32_t before_len;
} sluice_mongo_event;

/*
 * sluice_mongo_event_decode reads an event from len bytes of BSON (untrusted:
 * every length is checked). False, with *why naming the problem, when the
 * bytes are not a BSON document or lack _id, operationType or clusterTime,
 * or when a row change (insert, update, replace, delete) lacks what it needs:
 * its namespace, documentKey (update, replace, delete), fullDocument
 * (insert, replace), updateDescription (update).
 */
bool sluice_mongo_event_decode(const uint8_t *data, size_t len, sluice_mongo_event *ev,
			       const char **why);

/* sluice_mongo_event_is_row tells whether op is insert, update, replace or delete. */
bool sluice_mongo_event_is_row(const char *op);

/*
 * sluice_mongo_token_time reads the cluster time a resume token (a BSON
 * document, untrusted) starts with: its `_data` is hex KeyString whose first
 * value is a Timestamp (`82`, then 8 bytes: seconds, increment). Tokens are
 * opaque to drivers; sluice reads only this prefix, to place a
 * postBatchResumeToken that carries no event. False when it is not so.
 */
bool sluice_mongo_token_time(const uint8_t *data, size_t len, uint64_t *cluster_time);

#endif
