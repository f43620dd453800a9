/* The table of functions a store backend implements (private to store/). */
#ifndef SLUICE_STORE_BACKEND_OPS_H
#define SLUICE_STORE_BACKEND_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sluice_store_ops {
	const char *scheme; /* "file" */
	bool (*open)(const char *location, void **state);
	void (*close)(void *state);
	bool (*list)(void *state, const char *stream, uint64_t **firsts, size_t *n, size_t *strays);
	bool (*segment_open)(void *state, const char *stream, const char *name, bool writable,
			     bool create, void **seg);
	bool (*segment_remove)(void *state, const char *stream, const char *name);
	bool (*segment_size)(void *seg, uint64_t *size);
	bool (*segment_read)(void *seg, uint64_t off, void *buf, size_t len, size_t *got);
	bool (*segment_append)(void *seg, const void *data, size_t len);
	bool (*segment_sync)(void *seg);
	bool (*segment_truncate)(void *seg, uint64_t size);
	bool (*segment_seal)(void *seg);
	void (*segment_close)(void *seg);
	bool (*lock)(void *state, const char *stream, void **lock);
	void (*unlock)(void *lock);
	bool (*watch_open)(void *state, const char *stream, void **watch);
	int (*watch_wait)(void *watch, int timeout_ms);
	void (*watch_close)(void *watch);
} sluice_store_ops;

#endif
