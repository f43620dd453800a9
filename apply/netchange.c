/* Net change per key (netchange.h). */
#include "netchange.h"

#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"

static void *
net_alloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);
	if (p == NULL)
		abort();
	return p;
}

static char *
net_strdup(const char *s)
{
	if (s == NULL)
		return NULL;
	char *d = strdup(s);
	if (d == NULL)
		abort();
	return d;
}

void
sluice_net_init(sluice_net *n)
{
	memset(n, 0, sizeof(*n));
}

static void
net_entry_free(sluice_net_entry *e)
{
	for (int i = 0; i < e->ncols; i++)
		free(e->v[i]);
	free(e->v);
	free(e->present);
	free(e->key);
	free(e);
}

void
sluice_net_reset(sluice_net *n)
{
	for (size_t i = 0; i < n->n; i++)
		net_entry_free(n->entries[i]);
	n->n = 0;
	n->bytes = 0;
	if (n->buckets != NULL)
		memset(n->buckets, 0, n->nbuckets * sizeof(*n->buckets));
}

void
sluice_net_free(sluice_net *n)
{
	sluice_net_reset(n);
	free(n->entries);
	free(n->buckets);
	memset(n, 0, sizeof(*n));
}

char *
sluice_net_key_json(int ncols, const bool *key, const char *const *v)
{
	sluice_buf b = {0};
	sluice_buf_append_byte(&b, '[');
	bool first = true;
	for (int i = 0; i < ncols; i++) {
		if (!key[i])
			continue;
		if (!first)
			sluice_buf_append_str(&b, ", ");
		first = false;
		if (v[i] == NULL)
			sluice_buf_append_str(&b, "null");
		else
			sluice_json_append_string(&b, v[i], strlen(v[i]));
	}
	sluice_buf_append_str(&b, "]");
	sluice_buf_append_byte(&b, '\0');
	return (char *)b.data;
}

static char *
net_key(int ncols, const bool *key, const sluice_net_row *row)
{
	return sluice_net_key_json(ncols, key, row->v);
}

/* net_hash is FNV-1a over the relation and the key's text. */
static uint64_t
net_hash(uint32_t rel, const char *key)
{
	uint64_t h = 1469598103934665603ULL;
	for (int i = 0; i < 4; i++) {
		h ^= (rel >> (8 * i)) & 0xff;
		h *= 1099511628211ULL;
	}
	for (const char *c = key; *c; c++) {
		h ^= (uint8_t)*c;
		h *= 1099511628211ULL;
	}
	return h;
}

static sluice_net_entry *
net_find(const sluice_net *n, uint32_t rel, const char *key, uint64_t h)
{
	if (n->nbuckets == 0)
		return NULL;
	for (sluice_net_entry *e = n->buckets[h % n->nbuckets]; e != NULL; e = e->next)
		if (e->hash == h && e->rel == rel && strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

/* net_grow keeps the table at most half full. */
static void
net_grow(sluice_net *n)
{
	if (n->n + 1 <= n->nbuckets / 2)
		return;
	size_t nb = n->nbuckets ? n->nbuckets * 2 : 1024;
	free(n->buckets);
	n->buckets = net_alloc(nb, sizeof(*n->buckets));
	n->nbuckets = nb;
	for (size_t i = 0; i < n->n; i++) {
		sluice_net_entry *e = n->entries[i];
		e->next = n->buckets[e->hash % nb];
		n->buckets[e->hash % nb] = e;
	}
}

/* net_new adds an entry for rel and key (taking key) with what its first change expects. */
static sluice_net_entry *
net_new(sluice_net *n, uint32_t rel, int ncols, char *key, uint64_t h, bool existed)
{
	net_grow(n);
	if (n->n == n->cap) {
		n->cap = n->cap ? 2 * n->cap : 256;
		sluice_net_entry **p = realloc(n->entries, n->cap * sizeof(*p));
		if (p == NULL)
			abort();
		n->entries = p;
	}
	sluice_net_entry *e = net_alloc(1, sizeof(*e));
	e->rel = rel;
	e->seq = (uint32_t)n->n;
	e->key = key;
	e->hash = h;
	e->existed = existed;
	e->exists = existed;
	e->ncols = ncols;
	e->v = net_alloc((size_t)ncols, sizeof(char *));
	e->present = net_alloc((size_t)ncols, sizeof(bool));
	e->next = n->buckets[h % n->nbuckets];
	n->buckets[h % n->nbuckets] = e;
	n->entries[n->n++] = e;
	n->bytes += strlen(key) + 64 + (size_t)ncols * (sizeof(char *) + 1);
	return e;
}

/* net_set makes the entry's image row's known values (all of them when whole). */
static void
net_set(sluice_net *n, sluice_net_entry *e, const sluice_net_row *row, bool whole)
{
	for (int i = 0; i < e->ncols; i++) {
		if (!whole && !row->present[i])
			continue;
		if (e->v[i] != NULL)
			n->bytes -= strlen(e->v[i]);
		free(e->v[i]);
		e->v[i] = row->present[i] ? net_strdup(row->v[i]) : NULL;
		e->present[i] = row->present[i];
		if (e->v[i] != NULL)
			n->bytes += strlen(e->v[i]);
	}
}

/* net_clear forgets the entry's image: no row is left. */
static void
net_clear(sluice_net *n, sluice_net_entry *e)
{
	for (int i = 0; i < e->ncols; i++) {
		if (e->v[i] != NULL)
			n->bytes -= strlen(e->v[i]);
		free(e->v[i]);
		e->v[i] = NULL;
		e->present[i] = false;
	}
	e->exists = false;
}

/* net_set_key keeps the key values of row in an entry that has no row left. */
static void
net_set_key(sluice_net *n, sluice_net_entry *e, const bool *key, const sluice_net_row *row)
{
	for (int i = 0; i < e->ncols; i++)
		if (key[i]) {
			e->v[i] = net_strdup(row->v[i]);
			e->present[i] = true;
			if (e->v[i] != NULL)
				n->bytes += strlen(e->v[i]);
		}
}

static bool
net_same_key(int ncols, const bool *key, const sluice_net_row *a, const sluice_net_row *b)
{
	for (int i = 0; i < ncols; i++) {
		if (!key[i] || !b->present[i])
			continue;
		if ((a->v[i] == NULL) != (b->v[i] == NULL) ||
		    (a->v[i] != NULL && strcmp(a->v[i], b->v[i]) != 0))
			return false;
	}
	return true;
}

bool
sluice_net_add(sluice_net *n, uint32_t rel, int ncols, const bool *key, char op,
	       const sluice_net_row *newr, const sluice_net_row *oldr)
{
	const sluice_net_row *keyrow = op == 'D' ? oldr : newr;
	if (keyrow == NULL)
		return false;
	for (int i = 0; i < ncols; i++)
		if (key[i] && !keyrow->present[i])
			return false;
	bool moves = op == 'U' && oldr != NULL && !net_same_key(ncols, key, oldr, newr);
	if (moves) {
		/* A delete of the old key and an insert of the new one: the new row must be known.
		 */
		if (!newr->complete)
			return false;
		for (int i = 0; i < ncols; i++)
			if (key[i] && !oldr->present[i])
				return false;
	}
	char *k = net_key(ncols, key, keyrow);
	uint64_t h = net_hash(rel, k);
	sluice_net_entry *e = net_find(n, rel, k, h);
	char *ok_key = NULL;
	uint64_t oh = 0;
	sluice_net_entry *oe = NULL;
	if (moves) {
		ok_key = net_key(ncols, key, oldr);
		oh = net_hash(rel, ok_key);
		oe = net_find(n, rel, ok_key, oh);
	}
	/* What the chains hold must agree with the change; otherwise change nothing. */
	bool fits;
	switch (op) {
	case 'I':
		fits = newr->complete && (e == NULL || !e->exists);
		break;
	case 'U':
		fits = moves ? (oe == NULL || oe->exists) && (e == NULL || !e->exists)
			     : e == NULL || e->exists;
		break;
	default:
		fits = e == NULL || e->exists;
	}
	if (!fits) {
		free(k);
		free(ok_key);
		return false;
	}
	if (moves) {
		if (oe == NULL)
			oe = net_new(n, rel, ncols, ok_key, oh, true);
		else
			free(ok_key);
		net_clear(n, oe);
		net_set_key(n, oe, key, oldr);
	}
	if (e == NULL) {
		e = net_new(n, rel, ncols, k, h, op == 'U' ? !moves : op == 'D');
		k = NULL;
	}
	free(k);
	if (op == 'D') {
		net_clear(n, e);
		net_set_key(n, e, key, oldr);
	} else {
		/* an insert (or a row moved here) replaces the image; an update merges into it */
		net_set(n, e, newr, op == 'I' || moves || !e->exists);
		e->exists = true;
	}
	return true;
}

sluice_net_kind
sluice_net_kind_of(const sluice_net_entry *e)
{
	if (e->existed)
		return e->exists ? SLUICE_NET_UPDATE : SLUICE_NET_DELETE;
	return e->exists ? SLUICE_NET_INSERT : SLUICE_NET_ABSENT;
}

static int
net_cmp(const void *pa, const void *pb)
{
	const sluice_net_entry *a = *(const sluice_net_entry *const *)pa;
	const sluice_net_entry *b = *(const sluice_net_entry *const *)pb;
	if (a->rel != b->rel)
		return a->rel < b->rel ? -1 : 1;
	sluice_net_kind ka = sluice_net_kind_of(a), kb = sluice_net_kind_of(b);
	if (ka != kb)
		return ka < kb ? -1 : 1;
	if (ka == SLUICE_NET_UPDATE) {
		int c = memcmp(a->present, b->present, (size_t)a->ncols * sizeof(bool));
		if (c != 0)
			return c;
	}
	return a->seq < b->seq ? -1 : a->seq > b->seq;
}

sluice_net_entry **
sluice_net_sorted(sluice_net *n)
{
	if (n->n > 1)
		qsort(n->entries, n->n, sizeof(*n->entries), net_cmp);
	return n->entries;
}
