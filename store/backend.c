/* Store backends: where segment files live. Capture and apply see only this API. */
#include "backend.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_file.h"
#include "backend_nats.h"
#include "backend_ops.h"
#include "backend_s3.h"
#include "log.h"

struct sluice_store {
	const sluice_store_ops *ops; /* borrowed, static */
	void *state;                 /* owned by ops */
	char *location;              /* owned */
	sluice_store_caps caps;
	uint64_t list_calls;
};

/* The backends, by URI scheme; a spec without "://" is a directory path. */
static const sluice_store_ops *const backend_table[] = {
	&sluice_backend_file_ops,
	&sluice_backend_s3_ops,
	&sluice_backend_nats_ops,
};

struct sluice_segment {
	const sluice_store_ops *ops;
	void *handle; /* owned by ops */
	char name[SLUICE_SEGMENT_NAME_SIZE];
};

struct sluice_store_lock {
	const sluice_store_ops *ops;
	void *handle; /* owned by ops */
};

struct sluice_store_watch {
	const sluice_store_ops *ops;
	void *handle; /* owned by ops */
};

bool
sluice_store_open(const char *spec, sluice_store **out)
{
	return sluice_store_open_with(spec, NULL, out);
}

bool
sluice_store_open_with(const char *spec, const sluice_store_options *options, sluice_store **out)
{
	static const sluice_store_options defaults = {0};
	const sluice_store_ops *ops = &sluice_backend_file_ops;
	const char *location = spec;
	const char *sep = strstr(spec, "://");
	if (sep != NULL) {
		size_t len = (size_t)(sep - spec);
		ops = NULL;
		for (size_t i = 0; i < sizeof(backend_table) / sizeof(backend_table[0]); i++)
			if (strlen(backend_table[i]->scheme) == len &&
			    strncmp(spec, backend_table[i]->scheme, len) == 0)
				ops = backend_table[i];
		if (ops == NULL) {
			sluice_log_error(
				"unsupported store \"%.*s://…\": use a directory (PATH or "
				"file://PATH), s3://BUCKET/PREFIX or nats://HOST:PORT/JSSTREAM",
				(int)(len > 32 ? 32 : len), spec);
			return false;
		}
		location = sep + 3;
	}
	if (location[0] == '\0') {
		sluice_log_error("store location is empty");
		return false;
	}
	sluice_store *s = calloc(1, sizeof(*s));
	if (s == NULL)
		abort();
	s->ops = ops;
	if (!ops->open(location, options ? options : &defaults, &s->state, &s->caps)) {
		free(s);
		return false;
	}
	/*
	 * Messages name the store without its query (which may carry an endpoint
	 * or a credentials file) and without user:password@ or token@ of a host.
	 */
	size_t shown = ops == &sluice_backend_file_ops ? strlen(location) : strcspn(location, "?");
	size_t cap = strlen(ops->scheme) + shown + 8;
	s->location = malloc(cap);
	if (s->location == NULL)
		abort();
	if (ops == &sluice_backend_file_ops) {
		snprintf(s->location, cap, "%s", location);
	} else {
		int n = snprintf(s->location, cap, "%s://", ops->scheme);
		size_t hosts = strcspn(location, "/?");
		for (size_t i = 0; i < shown; i++) {
			if (i < hosts && location[i] == '@') {
				/* drop the userinfo of this host (back to the last ',' or the
				 * start) */
				while (n > 0 && s->location[n - 1] != ',' &&
				       s->location[n - 1] != '/')
					n--;
				continue;
			}
			s->location[n++] = location[i];
		}
		s->location[n] = '\0';
	}
	*out = s;
	return true;
}

void
sluice_store_close(sluice_store *store)
{
	if (store == NULL)
		return;
	store->ops->close(store->state);
	free(store->location);
	free(store);
}

const char *
sluice_store_location(const sluice_store *store)
{
	return store->location;
}

const sluice_store_caps *
sluice_store_caps_get(const sluice_store *store)
{
	return &store->caps;
}

bool
sluice_store_valid_stream_name(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > 128 || name[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

void
sluice_store_segment_name(uint64_t first_txseq, char out[SLUICE_SEGMENT_NAME_SIZE])
{
	snprintf(out, SLUICE_SEGMENT_NAME_SIZE, "%016" PRIx64 ".seg", first_txseq);
}

bool
sluice_store_list(sluice_store *store, const char *stream, uint64_t **firsts, size_t *n,
		  size_t *strays)
{
	size_t ignored = 0;
	store->list_calls++;
	return store->ops->list(store->state, stream, firsts, n, strays ? strays : &ignored);
}

void
sluice_store_read_from(sluice_store *store, const char *stream, uint64_t from_txseq)
{
	if (store->ops->read_from != NULL && from_txseq > 1)
		store->ops->read_from(store->state, stream, from_txseq);
}

uint64_t
sluice_store_list_calls(const sluice_store *store)
{
	return store->list_calls;
}

bool
sluice_store_segment_open(sluice_store *store, const char *stream, uint64_t first_txseq,
			  bool writable, bool create, sluice_segment **out)
{
	sluice_segment *seg = calloc(1, sizeof(*seg));
	if (seg == NULL)
		abort();
	seg->ops = store->ops;
	sluice_store_segment_name(first_txseq, seg->name);
	bool ok = create ? store->ops->segment_create(store->state, stream, seg->name, &seg->handle)
			 : store->ops->segment_open(store->state, stream, seg->name, writable,
						    &seg->handle);
	if (!ok) {
		free(seg);
		return false;
	}
	*out = seg;
	return true;
}

bool
sluice_store_segment_probe(sluice_store *store, const char *stream, uint64_t first_txseq,
			   bool *exists)
{
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(first_txseq, name);
	return store->ops->segment_probe(store->state, stream, name, exists);
}

bool
sluice_store_segment_put(sluice_store *store, const char *stream, uint64_t first_txseq,
			 const void *data, size_t len)
{
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(first_txseq, name);
	return store->ops->segment_put(store->state, stream, name, data, len);
}

bool
sluice_store_segment_remove(sluice_store *store, const char *stream, uint64_t first_txseq)
{
	char name[SLUICE_SEGMENT_NAME_SIZE];
	sluice_store_segment_name(first_txseq, name);
	return store->ops->segment_remove(store->state, stream, name);
}

const char *
sluice_segment_name(const sluice_segment *seg)
{
	return seg->name;
}

bool
sluice_segment_size(sluice_segment *seg, uint64_t *size)
{
	return seg->ops->segment_size(seg->handle, size);
}

bool
sluice_segment_read(sluice_segment *seg, uint64_t off, void *buf, size_t len, size_t *got)
{
	return seg->ops->segment_read(seg->handle, off, buf, len, got);
}

bool
sluice_segment_write(sluice_segment *seg, const void *chunk, size_t len, bool durable)
{
	return seg->ops->segment_write(seg->handle, chunk, len, durable);
}

bool
sluice_segment_truncate(sluice_segment *seg, uint64_t size)
{
	return seg->ops->segment_truncate(seg->handle, size);
}

bool
sluice_segment_seal(sluice_segment *seg)
{
	return seg->ops->segment_seal(seg->handle);
}

void
sluice_segment_close(sluice_segment *seg)
{
	if (seg == NULL)
		return;
	seg->ops->segment_close(seg->handle);
	free(seg);
}

bool
sluice_store_lock_stream(sluice_store *store, const char *stream, sluice_store_lock **out)
{
	sluice_store_lock *l = calloc(1, sizeof(*l));
	if (l == NULL)
		abort();
	l->ops = store->ops;
	if (!store->ops->lock(store->state, stream, &l->handle)) {
		free(l);
		return false;
	}
	*out = l;
	return true;
}

bool
sluice_store_lock_held(sluice_store *store, const char *stream, bool *held)
{
	return store->ops->lock_held(store->state, stream, held);
}

void
sluice_store_unlock(sluice_store_lock *lock)
{
	if (lock == NULL)
		return;
	lock->ops->unlock(lock->handle);
	free(lock);
}

bool
sluice_store_watch_open(sluice_store *store, const char *stream, sluice_store_watch **out)
{
	sluice_store_watch *w = calloc(1, sizeof(*w));
	if (w == NULL)
		abort();
	w->ops = store->ops;
	if (store->ops->watch_open == NULL) {
		free(w);
		return false;
	}
	if (!store->ops->watch_open(store->state, stream, &w->handle)) {
		free(w);
		return false;
	}
	*out = w;
	return true;
}

int
sluice_store_watch_wait(sluice_store_watch *watch, int timeout_ms)
{
	return watch->ops->watch_wait(watch->handle, timeout_ms);
}

void
sluice_store_watch_close(sluice_store_watch *watch)
{
	if (watch == NULL)
		return;
	watch->ops->watch_close(watch->handle);
	free(watch);
}
