/* The MongoDB apply target (target.h), chosen for a mongodb:// or mongodb+srv:// --target. */
#ifndef SLUICE_APPLY_MONGO_MONGOTARGET_H
#define SLUICE_APPLY_MONGO_MONGOTARGET_H

#include "target.h"

/* sluice_mongo_target_create makes a MongoDB target for ctx's options (connects at open). */
sluice_target *sluice_mongo_target_create(sluice_apply_ctx *ctx);

#endif
