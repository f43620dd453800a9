/* Which relations a command takes: include and exclude globs over "namespace.name". */
#ifndef SLUICE_COMMON_FILTER_H
#define SLUICE_COMMON_FILTER_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Globs (fnmatch) over "schema.table" (PostgreSQL) or "db.collection"
 * (MongoDB); an empty include list means every relation.
 */
typedef struct sluice_table_filter {
	const char **include; /* borrowed */
	size_t ninclude;
	const char **exclude; /* borrowed */
	size_t nexclude;
} sluice_table_filter;

/* sluice_filter_match tells whether space.name passes the filter. */
bool sluice_filter_match(const sluice_table_filter *f, const char *space, const char *name);

#endif
