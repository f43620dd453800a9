/* Node set-up for active-active apply: sluice's schema, version functions, delete tracking. */
#ifndef SLUICE_APPLY_POSTGRES_PGPREPARE_H
#define SLUICE_APPLY_POSTGRES_PGPREPARE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "filter.h"

/*
 * sluice_prepare_install creates (idempotently) the sluice schema on the
 * target (config, tombstones, conflict log, origin names, version functions),
 * records node as this node's name, and installs delete tracking on every
 * user table that passes the filter. Logs what it does.
 */
bool sluice_prepare_install(PGconn *conn, const char *node, const sluice_table_filter *f);

/* sluice_prepare_undo removes delete tracking from matching tables and, with all, the schema. */
bool sluice_prepare_undo(PGconn *conn, const sluice_table_filter *f, bool all);

/* sluice_prepare_installed tells whether the sluice schema exists (-1 on error). */
int sluice_prepare_installed(PGconn *conn);

/* sluice_prepare_node reads this node's name into out; false when not set. */
bool sluice_prepare_node(PGconn *conn, char *out, size_t size);

#endif
