/* A change event's updateDescription applied to a document as a tree of BSON elements. */
#include "mongoupdate.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Paths deeper than this, or array indexes past this, are refused (MongoDB nests 100 deep). */
#define MU_MAX_PARTS 200
#define MU_MAX_INDEX (1u << 20)
/* MongoDB's largest document. */
#define MU_MAX_SIZE (16u << 20)

/* Input documents nested deeper than this are refused (MongoDB stores 100 levels at most). */
#define MU_MAX_DEPTH 200

/*
 * An element. A value from the input (a scalar, or a document or array not
 * walked into) is kept as a pointer to its bytes in the input and copied
 * whole at the end, so its bytes do not change (libbson's typed appends would
 * rewrite some: regex options sorted, code cut at a NUL); a document or array
 * a path walks into is expanded into its elements.
 */
typedef struct mu_node {
	char *name; /* owned */
	bson_type_t type;
	bool has_val; /* the value is val (else: an expanded container, or a null pad) */
	const uint8_t *val;
	uint32_t val_len;
	bool expanded;
	bool irregular;       /* a kid's name is not its index (else kids[i] is named i) */
	struct mu_node *kids; /* owned */
	size_t nkids, cap;
} mu_node;

typedef struct mu {
	char *err;
	size_t err_size;
	bool failed;
	size_t padded; /* bytes of the null elements mu_pad added */
	uint8_t *el;   /* mu_write's buffer of one element */
	size_t el_cap;
} mu;

static bool mu_fail(mu *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool
mu_fail(mu *m, const char *fmt, ...)
{
	if (!m->failed && m->err_size > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(m->err, m->err_size, fmt, ap);
		va_end(ap);
	}
	m->failed = true;
	return false;
}

static bool
mu_container(bson_type_t t)
{
	return t == BSON_TYPE_DOCUMENT || t == BSON_TYPE_ARRAY;
}

static void
mu_clear(mu_node *n)
{
	for (size_t i = 0; i < n->nkids; i++) {
		mu_clear(&n->kids[i]);
		free(n->kids[i].name);
	}
	free(n->kids);
	n->kids = NULL;
	n->nkids = n->cap = 0;
	n->expanded = false;
	n->irregular = false;
}

/* mu_index_of reads a name that is an index as BSON writes one (no sign, no leading zero). */
static bool
mu_index_of(const char *name, size_t *index)
{
	size_t len = strlen(name), v = 0;
	if (len == 0 || len > 18 || (name[0] == '0' && len > 1))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		v = v * 10 + (size_t)(name[i] - '0');
	}
	*index = v;
	return true;
}

static mu_node *
mu_append(mu_node *parent, const char *name)
{
	size_t index;
	if (!parent->irregular && (!mu_index_of(name, &index) || index != parent->nkids))
		parent->irregular = true;
	if (parent->nkids == parent->cap) {
		parent->cap = parent->cap ? 2 * parent->cap : 8;
		mu_node *p = realloc(parent->kids, parent->cap * sizeof(*p));
		if (p == NULL)
			abort();
		parent->kids = p;
	}
	mu_node *k = &parent->kids[parent->nkids++];
	memset(k, 0, sizeof(*k));
	k->name = strdup(name);
	if (k->name == NULL)
		abort();
	k->type = BSON_TYPE_NULL;
	return k;
}

/*
 * mu_set_value makes n the value v points at: its bytes in the input, the
 * value's first byte (d1) to the next element (next_off).
 */
static void
mu_set_value(mu_node *n, const bson_iter_t *v)
{
	mu_clear(n);
	n->type = bson_iter_type(v);
	n->has_val = true;
	n->val = v->raw + v->d1;
	n->val_len = v->next_off - v->d1;
}

/* mu_expand makes a container's elements nodes (once). */
static bool
mu_expand(mu *m, mu_node *n)
{
	if (n->expanded || !mu_container(n->type))
		return true;
	n->expanded = true;
	if (!n->has_val)
		return true;
	bson_t b;
	bson_iter_t child;
	if (!bson_init_static(&b, n->val, n->val_len) || !bson_iter_init(&child, &b))
		return mu_fail(m, "field \"%s\" is not a valid BSON %s", n->name,
			       n->type == BSON_TYPE_ARRAY ? "array" : "document");
	while (bson_iter_next(&child))
		mu_set_value(mu_append(n, bson_iter_key(&child)), &child);
	if (child.err_off != 0)
		return mu_fail(m, "field \"%s\" holds malformed BSON", n->name);
	n->has_val = false;
	return true;
}

static mu_node *
mu_find(mu_node *n, const char *name)
{
	if (n->type == BSON_TYPE_ARRAY && !n->irregular) {
		/* kids[i] is named i: an index is found at once, and any other name is in no kid */
		size_t index;
		if (!mu_index_of(name, &index) || index >= n->nkids)
			return NULL;
		return &n->kids[index];
	}
	for (size_t i = 0; i < n->nkids; i++)
		if (strcmp(n->kids[i].name, name) == 0)
			return &n->kids[i];
	return NULL;
}

static bool
mu_digits(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* mu_pad fills an array with nulls up to index. */
static bool
mu_pad(mu *m, mu_node *arr, const char *index)
{
	if (strlen(index) > 7 || strtoul(index, NULL, 10) > MU_MAX_INDEX)
		return mu_fail(m, "array index %s is too large", index);
	size_t want = strtoul(index, NULL, 10);
	while (arr->nkids < want) {
		char name[24];
		int len = snprintf(name, sizeof(name), "%zu", arr->nkids);
		/*
		 * Each pad is an element of the result (the server's change event
		 * does not remove what it sets): stop before memory goes on pads
		 * of a result that would pass 16 MiB anyway.
		 */
		m->padded += 2 + (size_t)len;
		if (m->padded > MU_MAX_SIZE)
			return mu_fail(m, "the update pads arrays with more than 16 MiB of nulls");
		mu_append(arr, name);
	}
	return true;
}

/* mu_set sets the path parts[0..nparts) below node (a container) to value v. */
static bool
mu_set(mu *m, mu_node *node, char **parts, size_t nparts, const bson_iter_t *v)
{
	bool is_array = node->type == BSON_TYPE_ARRAY;
	const char *name = parts[0];
	if (is_array && !mu_digits(name))
		return mu_fail(m, "path part \"%s\" names an element of an array", name);
	mu_node *el = mu_find(node, name);
	if (nparts == 1) {
		if (el == NULL) {
			if (is_array && !mu_pad(m, node, name))
				return false;
			el = mu_append(node, name);
		}
		mu_set_value(el, v);
		return true;
	}
	if (el == NULL) {
		if (is_array && !mu_pad(m, node, name))
			return false;
		el = mu_append(node, name);
		el->type = BSON_TYPE_DOCUMENT;
		el->expanded = true;
	} else if (!mu_container(el->type) ||
		   (el->type == BSON_TYPE_ARRAY && !mu_digits(parts[1]))) {
		/*
		 * Only when a change is replayed over a later state (a copy newer
		 * than its snapshot time): a later change in the stream sets it right.
		 */
		mu_clear(el);
		el->type = BSON_TYPE_DOCUMENT;
		el->has_val = false;
		el->expanded = true;
	}
	if (!mu_expand(m, el))
		return false;
	return mu_set(m, el, parts + 1, nparts - 1, v);
}

/* mu_walk returns the element at a path, or NULL. */
static mu_node *
mu_walk(mu *m, mu_node *root, char **parts, size_t nparts)
{
	mu_node *cur = root, *el = NULL;
	for (size_t i = 0; i < nparts; i++) {
		if (cur == NULL || !mu_expand(m, cur))
			return NULL;
		el = mu_find(cur, parts[i]);
		if (el == NULL)
			return NULL;
		cur = mu_container(el->type) ? el : NULL;
	}
	return el;
}

static void
mu_unset(mu *m, mu_node *root, char **parts, size_t nparts)
{
	mu_node *node = root;
	if (nparts > 1) {
		mu_node *parent = mu_walk(m, root, parts, nparts - 1);
		if (parent == NULL || !mu_container(parent->type) || !mu_expand(m, parent))
			return;
		if (parent->type == BSON_TYPE_ARRAY) { /* $unset of an array element leaves null */
			mu_node *el = mu_find(parent, parts[nparts - 1]);
			if (el != NULL) {
				mu_clear(el);
				el->type = BSON_TYPE_NULL;
				el->has_val = false;
			}
			return;
		}
		node = parent;
	}
	for (size_t i = 0; i < node->nkids; i++)
		if (strcmp(node->kids[i].name, parts[nparts - 1]) == 0) {
			mu_clear(&node->kids[i]);
			free(node->kids[i].name);
			memmove(&node->kids[i], &node->kids[i + 1],
				(node->nkids - i - 1) * sizeof(node->kids[0]));
			node->nkids--;
			return;
		}
}

/* mu_write_raw appends an element of n's name, type and value bytes, as they are. */
static bool
mu_write_raw(mu *m, bson_t *out, const mu_node *n)
{
	size_t name_len = strlen(n->name);
	size_t len = 4 + 1 + name_len + 1 + (size_t)n->val_len + 1;
	if (len > INT32_MAX)
		return mu_fail(m, "document too large");
	if (len > m->el_cap) {
		uint8_t *p = realloc(m->el, len);
		if (p == NULL)
			abort();
		m->el = p;
		m->el_cap = len;
	}
	uint8_t *e = m->el;
	uint32_t le = (uint32_t)len;
	e[0] = (uint8_t)le;
	e[1] = (uint8_t)(le >> 8);
	e[2] = (uint8_t)(le >> 16);
	e[3] = (uint8_t)(le >> 24);
	e[4] = (uint8_t)n->type;
	memcpy(e + 5, n->name, name_len + 1);
	if (n->val_len > 0)
		memcpy(e + 5 + name_len + 1, n->val, n->val_len);
	e[len - 1] = 0;
	bson_t one;
	if (!bson_init_static(&one, e, len) || !bson_concat(out, &one))
		return mu_fail(m, "could not write field \"%s\"", n->name);
	return true;
}

static bool
mu_write(mu *m, bson_t *out, const mu_node *n)
{
	if (n->has_val)
		return mu_write_raw(m, out, n);
	if (!mu_container(n->type))
		return bson_append_null(out, n->name, -1) ||
		       mu_fail(m, "could not write field \"%s\"", n->name);
	bson_t child;
	bool ok = n->type == BSON_TYPE_ARRAY ? bson_append_array_begin(out, n->name, -1, &child)
					     : bson_append_document_begin(out, n->name, -1, &child);
	if (!ok)
		return mu_fail(m, "could not write field \"%s\"", n->name);
	for (size_t i = 0; ok && i < n->nkids; i++)
		ok = mu_write(m, &child, &n->kids[i]);
	bool ended = n->type == BSON_TYPE_ARRAY ? bson_append_array_end(out, &child)
						: bson_append_document_end(out, &child);
	return ok && (ended || mu_fail(m, "document too large"));
}

/*
 * mu_check walks raw BSON whole: every element well formed, and every nested
 * document, array and code-with-scope scope too, MU_MAX_DEPTH levels at most
 * (deeper input would overflow this recursive walk). A value no path
 * walks into is copied as its bytes, so this is where its bytes are checked.
 */
static bool
mu_check(mu *m, const uint8_t *data, size_t len, int depth, const char *what)
{
	if (depth > MU_MAX_DEPTH)
		return mu_fail(m, "%s is nested more than %d levels deep", what, MU_MAX_DEPTH);
	bson_t b;
	bson_iter_t it;
	if (!bson_init_static(&b, data, len) || !bson_iter_init(&it, &b))
		return mu_fail(m, "%s holds malformed BSON", what);
	while (bson_iter_next(&it)) {
		const uint8_t *sub = NULL;
		uint32_t sub_len = 0, code_len;
		if (BSON_ITER_HOLDS_DOCUMENT(&it) || BSON_ITER_HOLDS_ARRAY(&it)) {
			sub = it.raw + it.d1;
			sub_len = it.next_off - it.d1;
		} else if (BSON_ITER_HOLDS_CODEWSCOPE(&it)) {
			(void)bson_iter_codewscope(&it, &code_len, &sub_len, &sub);
		}
		if (sub != NULL && !mu_check(m, sub, sub_len, depth + 1, what))
			return false;
	}
	return it.err_off == 0 || mu_fail(m, "%s holds malformed BSON", what);
}

/* A path split into its parts. */
typedef struct mu_path {
	char *buf; /* owned */
	char *parts[MU_MAX_PARTS];
	size_t n;
} mu_path;

/*
 * mu_path_of finds a path's parts: its disambiguatedPaths entry (strings and
 * integers) when dis has one, else the path split at dots.
 */
static bool
mu_path_of(mu *m, const char *path, const bson_iter_t *dis, mu_path *p)
{
	memset(p, 0, sizeof(*p));
	bson_iter_t di, arr;
	if (dis != NULL && bson_iter_recurse(dis, &di) && bson_iter_find(&di, path) &&
	    BSON_ITER_HOLDS_ARRAY(&di) && bson_iter_recurse(&di, &arr)) {
		size_t len = 0;
		char *buf = NULL;
		while (bson_iter_next(&arr)) {
			char num[24];
			const char *part;
			uint32_t plen = 0;
			if (BSON_ITER_HOLDS_UTF8(&arr)) {
				part = bson_iter_utf8(&arr, &plen);
				/* It may become a field name: UTF-8 without NUL, as names are. */
				if (!bson_utf8_validate(part, plen, false)) {
					free(buf);
					return mu_fail(
						m, "a part of path \"%s\" is not UTF-8 without NUL",
						path);
				}
			} else if (BSON_ITER_HOLDS_INT32(&arr) || BSON_ITER_HOLDS_INT64(&arr)) {
				snprintf(num, sizeof(num), "%" PRId64, bson_iter_as_int64(&arr));
				part = num;
				plen = (uint32_t)strlen(num);
			} else {
				free(buf);
				return mu_fail(m,
					       "disambiguatedPaths of \"%s\" holds a part that is "
					       "neither a string nor an integer",
					       path);
			}
			if (p->n == MU_MAX_PARTS) {
				free(buf);
				return mu_fail(m, "path \"%s\" is too deep", path);
			}
			char *nb = realloc(buf, len + plen + 1);
			if (nb == NULL)
				abort();
			buf = nb;
			memcpy(buf + len, part, plen);
			buf[len + plen] = '\0';
			p->parts[p->n++] = (char *)(uintptr_t)len; /* an offset until buf settles */
			len += plen + 1;
		}
		if (p->n == 0) {
			free(buf);
			return mu_fail(m, "disambiguatedPaths of \"%s\" is empty", path);
		}
		p->buf = buf;
		for (size_t i = 0; i < p->n; i++)
			p->parts[i] = buf + (uintptr_t)p->parts[i];
		return true;
	}
	p->buf = strdup(path);
	if (p->buf == NULL)
		abort();
	char *c = p->buf;
	p->parts[p->n++] = c;
	for (; *c; c++)
		if (*c == '.') {
			if (p->n == MU_MAX_PARTS)
				return mu_fail(m, "path \"%s\" is too deep", path);
			*c = '\0';
			p->parts[p->n++] = c + 1;
		}
	return true;
}

bool
sluice_mongo_apply_update(const uint8_t *doc, size_t doc_len, const uint8_t *ud, size_t ud_len,
			  bson_t *out, char *err, size_t err_size)
{
	mu m = {.err = err, .err_size = err_size};
	if (err_size > 0)
		err[0] = '\0';
	bson_t bdoc, bud;
	if (!bson_init_static(&bdoc, doc, doc_len))
		return mu_fail(&m, "the document is not BSON");
	if (!bson_init_static(&bud, ud, ud_len))
		return mu_fail(&m, "the update description is not BSON");
	if (!mu_check(&m, doc, doc_len, 0, "the document") ||
	    !mu_check(&m, ud, ud_len, 0, "the update description"))
		return false;
	mu_node root;
	memset(&root, 0, sizeof(root));
	root.name = (char *)"";
	root.type = BSON_TYPE_DOCUMENT;
	root.expanded = true;
	bson_iter_t it;
	if (!bson_iter_init(&it, &bdoc))
		return mu_fail(&m, "the document is not BSON");
	while (bson_iter_next(&it))
		mu_set_value(mu_append(&root, bson_iter_key(&it)), &it);
	if (it.err_off != 0)
		mu_fail(&m, "the document holds malformed BSON");

	bson_iter_t dis, fields;
	bool has_dis = bson_iter_init_find(&dis, &bud, "disambiguatedPaths") &&
		       BSON_ITER_HOLDS_DOCUMENT(&dis);
	const bson_iter_t *disp = has_dis ? &dis : NULL;
	mu_path path;

	/* 1. truncatedArrays */
	if (!m.failed && bson_iter_init_find(&fields, &bud, "truncatedArrays")) {
		bson_iter_t arr, ta;
		if (!BSON_ITER_HOLDS_ARRAY(&fields) || !bson_iter_recurse(&fields, &arr))
			mu_fail(&m, "truncatedArrays is not an array");
		while (!m.failed && bson_iter_next(&arr)) {
			const char *name = NULL;
			int64_t size = -1;
			if (!BSON_ITER_HOLDS_DOCUMENT(&arr) || !bson_iter_recurse(&arr, &ta)) {
				mu_fail(&m,
					"truncatedArrays holds something other than a document");
				break;
			}
			while (bson_iter_next(&ta)) {
				if (strcmp(bson_iter_key(&ta), "field") == 0 &&
				    BSON_ITER_HOLDS_UTF8(&ta))
					name = bson_iter_utf8(&ta, NULL);
				else if (strcmp(bson_iter_key(&ta), "newSize") == 0 &&
					 (BSON_ITER_HOLDS_INT32(&ta) || BSON_ITER_HOLDS_INT64(&ta)))
					size = bson_iter_as_int64(&ta);
			}
			if (name == NULL || size < 0) {
				mu_fail(&m,
					"truncatedArrays holds an entry without field and newSize");
				break;
			}
			if (!mu_path_of(&m, name, disp, &path)) {
				free(path.buf);
				break;
			}
			mu_node *el = mu_walk(&m, &root, path.parts, path.n);
			if (el != NULL && el->type == BSON_TYPE_ARRAY && mu_expand(&m, el))
				while (el->nkids > (uint64_t)size) {
					mu_node *last = &el->kids[--el->nkids];
					mu_clear(last);
					free(last->name);
				}
			free(path.buf);
		}
	}
	/* 2. updatedFields */
	if (!m.failed && bson_iter_init_find(&fields, &bud, "updatedFields")) {
		bson_iter_t uf;
		if (!BSON_ITER_HOLDS_DOCUMENT(&fields) || !bson_iter_recurse(&fields, &uf))
			mu_fail(&m, "updatedFields is not a document");
		while (!m.failed && bson_iter_next(&uf)) {
			if (!mu_path_of(&m, bson_iter_key(&uf), disp, &path)) {
				free(path.buf);
				break;
			}
			mu_set(&m, &root, path.parts, path.n, &uf);
			free(path.buf);
		}
		if (!m.failed && uf.err_off != 0)
			mu_fail(&m, "updatedFields holds malformed BSON");
	}
	/* 3. removedFields */
	if (!m.failed && bson_iter_init_find(&fields, &bud, "removedFields")) {
		bson_iter_t rf;
		if (!BSON_ITER_HOLDS_ARRAY(&fields) || !bson_iter_recurse(&fields, &rf))
			mu_fail(&m, "removedFields is not an array");
		while (!m.failed && bson_iter_next(&rf)) {
			if (!BSON_ITER_HOLDS_UTF8(&rf)) {
				mu_fail(&m, "removedFields holds something other than a string");
				break;
			}
			if (!mu_path_of(&m, bson_iter_utf8(&rf, NULL), disp, &path)) {
				free(path.buf);
				break;
			}
			mu_unset(&m, &root, path.parts, path.n);
			free(path.buf);
		}
	}
	uint32_t start = out->len;
	for (size_t i = 0; !m.failed && i < root.nkids; i++)
		mu_write(&m, out, &root.kids[i]);
	if (!m.failed && (size_t)(out->len - start) + 5 > MU_MAX_SIZE)
		mu_fail(&m, "the result is %zu bytes, more than MongoDB's 16 MiB",
			(size_t)(out->len - start) + 5);
	root.name = NULL;
	mu_clear(&root);
	free(m.el);
	return !m.failed;
}
