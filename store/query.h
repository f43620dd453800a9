/* Query parameters of store URIs (?a=1&b=x), shared by the backends (private to store/). */
#ifndef SLUICE_STORE_QUERY_H
#define SLUICE_STORE_QUERY_H

#include <stdbool.h>
#include <stddef.h>

/*
 * sluice_store_query_param finds name=VALUE in query (a&b&c, without the
 * '?') and writes VALUE percent-decoded into out (cut to cap - 1 bytes,
 * NUL-terminated). False when the parameter is absent.
 */
bool sluice_store_query_param(const char *query, const char *name, char *out, size_t cap);

#endif
