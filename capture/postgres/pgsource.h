/* PostgreSQL capture source: pgoutput over a logical replication connection. */
#ifndef SLUICE_CAPTURE_POSTGRES_PGSOURCE_H
#define SLUICE_CAPTURE_POSTGRES_PGSOURCE_H

#include "capture.h"
#include "source.h"

typedef struct sluice_pgsource sluice_pgsource;

/*
 * The PostgreSQL source: slot and publication set-up (with --create, and its
 * refusal of tables without a replica identity), the snapshot, START_REPLICATION,
 * pgoutput decoding into records (without sluice's own schema, and without
 * transactions that carry a replication origin unless forwarded), and standby
 * status updates with the durable LSN.
 */
extern const sluice_source_ops sluice_pgsource_ops;

/* sluice_pgsource_create makes the source's state for the options o (borrowed, outlives it). */
sluice_pgsource *sluice_pgsource_create(const sluice_capture_options *o);
/* sluice_pgsource_free disconnects and releases; NULL is a no-op. */
void sluice_pgsource_free(sluice_pgsource *s);

#endif
