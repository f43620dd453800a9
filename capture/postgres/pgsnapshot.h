/* Initial snapshot: every published table copied inside the slot's exported snapshot. */
#ifndef SLUICE_CAPTURE_POSTGRES_PGSNAPSHOT_H
#define SLUICE_CAPTURE_POSTGRES_PGSNAPSHOT_H

#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "rate.h"
#include "writer.h"

/* What the snapshot copied. */
typedef struct sluice_pgsnapshot_stats {
	uint64_t tables;
	uint64_t rows;
	uint64_t bytes;
} sluice_pgsnapshot_stats;

/*
 * sluice_pgsnapshot_copy copies every table of publication, as seen by the
 * exported snapshot snapshot_name, into w as one snapshot transaction
 * (SnapshotBegin, Relation and SnapshotRow records, SnapshotEnd) and flushes
 * it. conn is a normal connection (borrowed) that is idle. With progress,
 * rows, megabytes and tables are shown on stderr. rate (NULL: none) limits
 * the rows and bytes copied per second; stop interrupts its waits.
 */
bool sluice_pgsnapshot_copy(PGconn *conn, sluice_writer *w, const char *publication,
			    const char *snapshot_name, uint64_t consistent_lsn, const char *node,
			    bool progress, sluice_rate *rate, const volatile sig_atomic_t *stop,
			    sluice_pgsnapshot_stats *stats);

/*
 * sluice_pgsnapshot_copy_text_decode splits one COPY text-format line into
 * values: fields separated by tabs, "\N" for NULL, backslash escapes. Decoded
 * bytes go to scratch (reset by the caller); starts[i]/lens[i] index into it,
 * lens[i] is UINT32_MAX for NULL. Returns the number of fields, or -1 when
 * the line is malformed or has more than max fields.
 */
int sluice_pgsnapshot_copy_text_decode(const char *line, size_t len, uint8_t *scratch,
				       size_t *starts, uint32_t *lens, int max);

#endif
