/* MongoDB capture source: libmongoc change streams into the engine. */
#ifndef SLUICE_CAPTURE_MONGO_MONGOSOURCE_H
#define SLUICE_CAPTURE_MONGO_MONGOSOURCE_H

#include "capture.h"
#include "source.h"

typedef struct sluice_mongosource sluice_mongosource;

/*
 * The MongoDB source: a change stream on the deployment, a database or a
 * collection (several --db/--collection: the deployment, filtered here),
 * every event kept as raw BSON, the events of one multi-document transaction
 * as one transaction, resume after the stream's last durable token
 * (startAfter, so that an invalidate can be passed), the snapshot copy at a
 * cluster time T followed by startAtOperationTime T, and heartbeats from the
 * postBatchResumeToken. Positions are cluster times (docs/format.md §7.6).
 */
extern const sluice_source_ops sluice_mongosource_ops;

/* sluice_mongosource_create makes the source's state for the options o (borrowed, outlives it). */
sluice_mongosource *sluice_mongosource_create(const sluice_capture_options *o);
/* sluice_mongosource_free disconnects and releases; NULL is a no-op. */
void sluice_mongosource_free(sluice_mongosource *s);

#endif
