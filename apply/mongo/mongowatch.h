/*
 * The version watcher of a MongoDB target under --strategy timestamp.
 * MongoDB keeps no commit time per document and has no triggers, so apply
 * follows the target's own change stream (the whole deployment) and records
 * in sluice.versions the version of every local write: its commit time
 * (wallTime, as a capture of this deployment stamps it) and this node's
 * name (sluice prepare). Transactions that start with a write to
 * sluice.progress are apply's own (from any stream) and carry their
 * versions already: they are left out, as a capture leaves them out.
 *
 * Before apply decides anything it catches the watcher up: it writes a
 * marker document (sluice.watch {_id: stream, n}) and reads the change
 * stream up to that marker, so every local write committed before the
 * marker is recorded. A local write after the marker is caught by the
 * version's hash (mongoversion.h) or, on a server, by a write conflict.
 * The marker's resume token is where a restarted apply resumes: apply
 * stores it in its progress document, in the transaction it commits.
 */
#ifndef SLUICE_APPLY_MONGO_MONGOWATCH_H
#define SLUICE_APPLY_MONGO_MONGOWATCH_H

#include <stdbool.h>
#include <stdint.h>

#include <mongoc/mongoc.h>

#define SLUICE_MONGO_WATCH "watch"

typedef struct sluice_mongo_watch sluice_mongo_watch;

/*
 * sluice_mongo_watch_new prepares a watcher on the deployment at uri
 * (borrowed; hosts names it in messages) for stream, recording local writes
 * as node's. It resumes after token (a resume token document, copied) or,
 * without one, starts at the cluster time start (seconds << 32 | increment:
 * when sluice prepare set the node up). Nothing is read before the first
 * sluice_mongo_watch_catch_up.
 */
sluice_mongo_watch *sluice_mongo_watch_new(const mongoc_uri_t *uri, const char *hosts,
					   const char *stream, const char *node,
					   const bson_t *token, uint64_t start);

/*
 * sluice_mongo_watch_catch_up records every local write committed before
 * now. False on failure: *err says why (a driver or server error, or
 * history lost), and *reply (initialised here when reply is not NULL; the
 * caller destroys it) holds the server's reply for its error labels.
 */
bool sluice_mongo_watch_catch_up(sluice_mongo_watch *w, bson_error_t *err, bson_t *reply);

/* sluice_mongo_watch_token is the last marker's resume token (NULL before the first). */
const bson_t *sluice_mongo_watch_token(const sluice_mongo_watch *w);

/* sluice_mongo_watch_recorded counts the local writes recorded since the watcher started. */
uint64_t sluice_mongo_watch_recorded(const sluice_mongo_watch *w);

void sluice_mongo_watch_free(sluice_mongo_watch *w);

#endif
