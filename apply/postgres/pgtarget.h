/* The PostgreSQL apply target (target.h), chosen for any --target that is not a mongodb:// URI. */
#ifndef SLUICE_APPLY_POSTGRES_PGTARGET_H
#define SLUICE_APPLY_POSTGRES_PGTARGET_H

#include "target.h"

/* sluice_pg_target_create makes a PostgreSQL target for ctx's options (connects at open). */
sluice_target *sluice_pg_target_create(sluice_apply_ctx *ctx);

/*
 * sluice_pg_target_progress_read reads the last txseq of o->stream applied
 * to o->target from its replication origin (named as apply names it),
 * writing nothing; *found is false when apply never ran there.
 * @return false after logging when the target could not be read.
 */
bool sluice_pg_target_progress_read(const sluice_apply_options *o, uint64_t *txseq, bool *found);

#endif
