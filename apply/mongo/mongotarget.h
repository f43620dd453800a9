/* The MongoDB apply target (target.h), chosen for a mongodb:// or mongodb+srv:// --target. */
#ifndef SLUICE_APPLY_MONGO_MONGOTARGET_H
#define SLUICE_APPLY_MONGO_MONGOTARGET_H

#include "target.h"

/* sluice_mongo_target_create makes a MongoDB target for ctx's options (connects at open). */
sluice_target *sluice_mongo_target_create(sluice_apply_ctx *ctx);

/*
 * sluice_mongo_target_progress_read reads the last txseq of o->stream
 * applied to o->target from its progress document, writing nothing;
 * *found is false when apply never ran there.
 * @return false after logging when the target could not be read.
 */
bool sluice_mongo_target_progress_read(const sluice_apply_options *o, uint64_t *txseq, bool *found);

#endif
