/*
 * Document versions for last-writer-wins on MongoDB (libbson and libsodium
 * only). MongoDB keeps no commit time per document, so sluice keeps one in
 * sluice.versions, an entry per written document:
 *
 *   {_id: {ns: "db.coll", id: <the document's _id>}, ns, db,
 *    t: Int64 µs, node: "name",       the version of the last write
 *    h: BinData(16),                  the document's hash; absent: deleted
 *    dt: Int64 µs, dnode: "name",     the newest delete seen (tombstone)
 *    deleted_at: Date}                while deleted: the TTL index's field
 *
 * apply writes the entry of every document it writes, in the same
 * transaction; the version watcher (mongowatch.h) writes the entries of
 * local writes it reads from the target's change stream. The hash tells
 * whether the document is still what its entry describes: when it is not, a
 * local write is not yet recorded.
 */
#ifndef SLUICE_APPLY_MONGO_MONGOVERSION_H
#define SLUICE_APPLY_MONGO_MONGOVERSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bson/bson.h>

#define SLUICE_MONGO_VERSIONS      "versions"
#define SLUICE_MONGO_NODE          "node"
#define SLUICE_MONGO_HASH_BYTES    16
#define SLUICE_MONGO_NODE_NAME_MAX 256

typedef struct sluice_mongo_version {
	bool found;   /* an entry exists */
	bool present; /* the entry says the document exists: h is its hash */
	int64_t t;    /* the last write's commit time (µs) and node */
	char node[SLUICE_MONGO_NODE_NAME_MAX];
	uint8_t h[SLUICE_MONGO_HASH_BYTES];
	bool tomb; /* a delete was seen: dt, dnode */
	int64_t dt;
	char dnode[SLUICE_MONGO_NODE_NAME_MAX];
} sluice_mongo_version;

/*
 * sluice_mongo_version_id makes the entry's _id {ns: "db.coll", id: <value
 * of id>} into out (initialised here).
 */
void sluice_mongo_version_id(bson_t *out, const char *db, const char *coll, const bson_iter_t *id);

/*
 * sluice_mongo_version_hash hashes a document (BLAKE2b, 16 bytes) with its
 * _id first, wherever it stands (a server puts _id first when it stores a
 * document). false when len is not a well-formed BSON document.
 */
bool sluice_mongo_version_hash(const uint8_t *doc, size_t len, uint8_t h[SLUICE_MONGO_HASH_BYTES]);

/*
 * sluice_mongo_version_parse reads an entry (bytes from the target:
 * bounds-checked, fields of the wrong type ignored). false when the bytes
 * are not a BSON document.
 */
bool sluice_mongo_version_parse(const uint8_t *data, size_t len, sluice_mongo_version *v);

/*
 * sluice_mongo_version_build writes the entry of v under _id id (a document
 * made by sluice_mongo_version_id) into out (initialised here).
 */
void sluice_mongo_version_build(bson_t *out, const bson_t *id, const sluice_mongo_version *v);

/* sluice_mongo_version_tomb keeps the newer of v's tombstone and (t, node) in v. */
void sluice_mongo_version_tomb(sluice_mongo_version *v, int64_t t, const char *node);

/*
 * sluice_mongo_version_matches tells whether the target's document (NULL:
 * none) is what entry v describes: present with v's hash, or absent when v
 * says deleted.
 */
bool sluice_mongo_version_matches(const sluice_mongo_version *v, const uint8_t *doc, size_t len);

#endif
