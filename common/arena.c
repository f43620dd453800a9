/* Bump allocator for per-frame decode scratch: reset as a whole, never freed piecewise. */
#include "arena.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define ARENA_BLOCK_SIZE (256 * 1024)

typedef struct arena_block {
	struct arena_block *next; /* owned */
	size_t size;
	size_t used;
	_Alignas(16) unsigned char data[];
} arena_block;

struct sluice_arena {
	arena_block *head; /* owned list; head is the block being filled */
	size_t limit;      /* 0: none */
	size_t used;       /* bytes handed out since the last reset */
	bool refused;
};

void
sluice_arena_set_limit(sluice_arena *a, size_t limit)
{
	a->limit = limit;
}

void *
sluice_arena_try_alloc(sluice_arena *a, size_t size)
{
	if (a->limit != 0 && (size > a->limit || a->used > a->limit - size)) {
		a->refused = true;
		return NULL;
	}
	return sluice_arena_alloc(a, size);
}

bool
sluice_arena_over_limit(const sluice_arena *a)
{
	return a->refused;
}

sluice_arena *
sluice_arena_create(void)
{
	sluice_arena *a = calloc(1, sizeof(*a));
	if (a == NULL)
		abort();
	return a;
}

void
sluice_arena_free(sluice_arena *a)
{
	if (a == NULL)
		return;
	arena_block *b = a->head;
	while (b != NULL) {
		arena_block *next = b->next;
		free(b);
		b = next;
	}
	free(a);
}

void *
sluice_arena_alloc(sluice_arena *a, size_t size)
{
	size = (size + 15) & ~(size_t)15;
	if (size == 0)
		size = 16;
	arena_block *b = a->head;
	if (b == NULL || b->size - b->used < size) {
		size_t bsize = size > ARENA_BLOCK_SIZE ? size : ARENA_BLOCK_SIZE;
		arena_block *nb = malloc(sizeof(*nb) + bsize);
		if (nb == NULL) {
			fprintf(stderr, "sluice: out of memory (arena block of %zu bytes)\n",
				bsize);
			abort();
		}
		nb->size = bsize;
		nb->used = 0;
		nb->next = b;
		a->head = nb;
		b = nb;
	}
	void *p = b->data + b->used;
	b->used += size;
	a->used += size;
	return p;
}

void
sluice_arena_reset(sluice_arena *a)
{
	a->used = 0;
	a->refused = false;
	if (a->head == NULL)
		return;
	/* Keep the largest-so-far head block; drop the rest. */
	arena_block *keep = a->head;
	arena_block *b = keep->next;
	while (b != NULL) {
		arena_block *next = b->next;
		free(b);
		b = next;
	}
	keep->next = NULL;
	keep->used = 0;
}
