/* Bump allocator for per-frame decode scratch: reset as a whole, never freed piecewise. */
#ifndef SLUICE_COMMON_ARENA_H
#define SLUICE_COMMON_ARENA_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sluice_arena sluice_arena;

sluice_arena *sluice_arena_create(void);
/* sluice_arena_free releases everything; NULL is a no-op. */
void sluice_arena_free(sluice_arena *a);
/* sluice_arena_alloc returns 16-byte aligned memory valid until the next reset. */
void *sluice_arena_alloc(sluice_arena *a, size_t size);
/*
 * sluice_arena_set_limit caps the bytes handed out between resets (0: no
 * cap); sluice_arena_try_alloc returns NULL instead of going past it.
 */
void sluice_arena_set_limit(sluice_arena *a, size_t limit);
void *sluice_arena_try_alloc(sluice_arena *a, size_t size);
/* sluice_arena_over_limit tells whether a try_alloc was refused since the last reset. */
bool sluice_arena_over_limit(const sluice_arena *a);
/* sluice_arena_reset makes all memory reusable and keeps one block. */
void sluice_arena_reset(sluice_arena *a);

#endif
