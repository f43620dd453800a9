/* The PostgreSQL apply target (target.h), chosen for any --target that is not a mongodb:// URI. */
#ifndef SLUICE_APPLY_POSTGRES_PGTARGET_H
#define SLUICE_APPLY_POSTGRES_PGTARGET_H

#include "target.h"

/* sluice_pg_target_create makes a PostgreSQL target for ctx's options (connects at open). */
sluice_target *sluice_pg_target_create(sluice_apply_ctx *ctx);

#endif
