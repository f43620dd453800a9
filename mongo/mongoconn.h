/* libmongoc helpers shared by the MongoDB source (capture) and the MongoDB target (apply). */
#ifndef SLUICE_MONGO_MONGOCONN_H
#define SLUICE_MONGO_MONGOCONN_H

#include <mongoc/mongoc.h>
#include <stddef.h>

/*
 * sluice's node-local database on a MongoDB deployment: never captured, never
 * written from a stream. Apply keeps each stream's progress document in its
 * progress collection, written first in every apply transaction, which is how
 * a capture on the same deployment recognises (and leaves out) apply's
 * transactions.
 */
#define SLUICE_MONGO_LOCAL_DB  "sluice"
#define SLUICE_MONGO_PROGRESS  "progress"
#define SLUICE_MONGO_CONFLICTS "conflicts"

/*
 * sluice_mongo_init sets libmongoc up once per process (its warnings go to
 * sluice's log; it is cleaned up at exit). Any thread may call it, any number
 * of times.
 */
void sluice_mongo_init(void);

/*
 * sluice_mongo_uri parses a mongodb:// or mongodb+srv:// URI and fills in
 * what sluice wants unless the URI says otherwise: a server selection timeout
 * of 10 s and a socket timeout of 30 s (fail over and notice a dead server
 * within seconds), and appname. On a bad URI it logs the driver's error code,
 * never the URI or the driver's message (either may quote credentials), and
 * returns NULL.
 */
mongoc_uri_t *sluice_mongo_uri(const char *text, const char *appname);

/* sluice_mongo_hosts writes the URI's hosts (never a user name or password) for messages. */
void sluice_mongo_hosts(const mongoc_uri_t *uri, char *out, size_t size);

/* sluice_mongo_error_text gives a server or driver error's message (no credentials in it). */
const char *sluice_mongo_error_text(const bson_error_t *err);

#endif
