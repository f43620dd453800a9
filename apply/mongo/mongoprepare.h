/*
 * sluice prepare for a MongoDB target: the node's name and the point its
 * version watcher starts from (sluice.node), and the indexes of
 * sluice.versions (tombstones expire after a horizon).
 */
#ifndef SLUICE_APPLY_MONGO_MONGOPREPARE_H
#define SLUICE_APPLY_MONGO_MONGOPREPARE_H

#include <stdbool.h>
#include <stdint.h>

#include <mongoc/mongoc.h>

/*
 * sluice_mongo_prepare_install sets the deployment at uri up as node
 * (idempotent; a deployment set up under another name is refused) with
 * tombstones kept horizon_s seconds. Logs what it did or why it failed.
 */
bool sluice_mongo_prepare_install(const char *uri, const char *node, int64_t horizon_s);

/* sluice_mongo_prepare_undo drops sluice.node, sluice.versions and sluice.watch (all). */
bool sluice_mongo_prepare_undo(const char *uri, bool all);

/*
 * sluice_mongo_node_read reads sluice.node: the node's name and the cluster
 * time (seconds << 32 | increment) its version watcher starts at. 1 found,
 * 0 not prepared, -1 on error (*err).
 */
int sluice_mongo_node_read(mongoc_client_t *client, char *name, size_t cap, uint64_t *start,
			   bson_error_t *err);

#endif
