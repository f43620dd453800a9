/* Segment names (STREAM/<16 hex digits of the first txseq>.seg), shared by the backends (private to
 * store/). */
#ifndef SLUICE_STORE_SEGNAME_H
#define SLUICE_STORE_SEGNAME_H

#include <stdbool.h>
#include <stdint.h>

/* sluice_segname_parse accepts exactly 16 lowercase hex digits followed by ".seg". */
bool sluice_segname_parse(const char *name, uint64_t *first);

/* sluice_segname_cmp orders uint64_t values (qsort) */
int sluice_segname_cmp(const void *a, const void *b);

#endif
