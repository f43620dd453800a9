/* The service configuration: YAML (libyaml) checked against a schema, every problem at once. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

/* What a schema field holds, and how its YAML node is read. */
typedef enum cfg_type {
	CFG_STRING,   /* char *, a scalar */
	CFG_BOOL,     /* bool: true/false */
	CFG_UINT,     /* uint64_t: a non-negative integer up to max */
	CFG_DURATION, /* int64_t ms: "500ms", "10s", "2m", "1h", "7d" or seconds */
	CFG_LIST,     /* sluice_config_list: a sequence of scalars */
	CFG_SECRET,   /* sluice_config_secret: NAME, NAME_file or NAME_env */
	CFG_ENUM,     /* char *, one of choices */
	CFG_MAP,      /* a nested mapping whose fields (sub) live in the same struct */
} cfg_type;

/* Secrets that may be written inline when they carry no password. */
#define CFG_INLINE_NO_PASSWORD 1
/* Secrets that are never written inline. */
#define CFG_NEVER_INLINE 2

typedef struct cfg_field {
	const char *name;
	cfg_type type;
	size_t off;
	bool required;
	uint64_t max;                /* CFG_UINT */
	const char *const *choices;  /* CFG_ENUM, NULL-terminated */
	const struct cfg_field *sub; /* CFG_MAP, terminated by a NULL name */
	int secret;                  /* CFG_SECRET: CFG_INLINE_NO_PASSWORD or CFG_NEVER_INLINE */
	bool fingerprint_skip;       /* settings that do not change what a pipeline runs */
} cfg_field;

typedef struct cfg_parse {
	const char *name;
	yaml_document_t *doc;
	sluice_buf *errors;
	size_t nerrors;
	crypto_generichash_state *hash; /* while fingerprinting */
} cfg_parse;

static void cfg_error(cfg_parse *p, const yaml_node_t *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
cfg_error(cfg_parse *p, const yaml_node_t *at, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	unsigned long line = at ? (unsigned long)at->start_mark.line + 1 : 1;
	unsigned long col = at ? (unsigned long)at->start_mark.column + 1 : 1;
	sluice_buf_printf(p->errors, "%s:%lu:%lu: %s\n", p->name, line, col, msg);
	p->nerrors++;
}

static char *
cfg_strdup(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (d == NULL)
		abort();
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static const char *
cfg_node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

/* cfg_scalar gives a scalar node's text, or NULL after reporting what it is instead. */
static const char *
cfg_scalar(cfg_parse *p, const yaml_node_t *n, const char *key, const char *want)
{
	if (n->type != YAML_SCALAR_NODE) {
		cfg_error(p, n, "\"%s\" must be %s, not %s", key, want, cfg_node_kind(n));
		return NULL;
	}
	return (const char *)n->data.scalar.value;
}

static bool
cfg_plain(const yaml_node_t *n)
{
	return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* cfg_parse_duration reads "500ms", "10s", "2m", "1h", "7d" or a number of seconds. */
static bool
cfg_parse_duration(const char *s, int64_t *ms)
{
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || v < 0)
		return false;
	int64_t unit = 1000;
	if (strcmp(end, "ms") == 0)
		unit = 1;
	else if (strcmp(end, "s") == 0 || *end == '\0')
		unit = 1000;
	else if (strcmp(end, "m") == 0)
		unit = 60000;
	else if (strcmp(end, "h") == 0)
		unit = 3600000;
	else if (strcmp(end, "d") == 0)
		unit = 86400000;
	else
		return false;
	if (v > INT64_MAX / unit)
		return false;
	*ms = (int64_t)v * unit;
	return true;
}

/* cfg_has_password tells whether a connection string carries a password. */
static bool
cfg_has_password(const char *conn)
{
	for (const char *q = conn; *q; q++)
		if (strncasecmp(q, "password", 8) == 0)
			return true;
	/* URIs: scheme://user:password@host */
	const char *scheme = strstr(conn, "://");
	if (scheme != NULL) {
		const char *auth = scheme + 3;
		const char *at = strchr(auth, '@');
		const char *slash = strchr(auth, '/');
		if (at != NULL && (slash == NULL || at < slash)) {
			const char *colon = memchr(auth, ':', (size_t)(at - auth));
			if (colon != NULL)
				return true;
		}
	}
	return false;
}

static const yaml_node_t *
cfg_node(cfg_parse *p, int id)
{
	return yaml_document_get_node(p->doc, id);
}

static void cfg_read_map(cfg_parse *p, const yaml_node_t *map, const cfg_field *fields, void *base,
			 const char *what);

/* cfg_secret_check makes sure a secret's file or variable exists (its value is never kept). */
static void
cfg_secret_check(cfg_parse *p, const yaml_node_t *at, const char *key,
		 const sluice_config_secret *s)
{
	char *value = NULL;
	char why[512];
	if (!sluice_config_secret_read(s, &value, why, sizeof(why))) {
		cfg_error(p, at, "\"%s\": %s", key, why);
		return;
	}
	sodium_memzero(value, strlen(value));
	free(value);
}

/* cfg_read_field reads one value into its field; problems are reported, not fatal. */
static void
cfg_read_field(cfg_parse *p, const cfg_field *f, const char *key, const char *variant,
	       const yaml_node_t *val, const yaml_node_t *key_node, void *base)
{
	char *dst = (char *)base + f->off;
	switch (f->type) {
	case CFG_STRING: {
		const char *s = cfg_scalar(p, val, key, "a string");
		if (s == NULL)
			return;
		char **out = (char **)(void *)dst;
		free(*out);
		*out = cfg_strdup(s, val->data.scalar.length);
		return;
	}
	case CFG_ENUM: {
		const char *s = cfg_scalar(p, val, key, "a string");
		if (s == NULL)
			return;
		for (const char *const *c = f->choices; *c; c++) {
			if (strcmp(*c, s) == 0) {
				char **out = (char **)(void *)dst;
				free(*out);
				*out = cfg_strdup(s, val->data.scalar.length);
				return;
			}
		}
		char allowed[256] = "";
		size_t n = 0;
		for (const char *const *c = f->choices; *c && n < sizeof(allowed); c++)
			n += (size_t)snprintf(allowed + n, sizeof(allowed) - n, "%s%s",
					      n ? ", " : "", *c);
		cfg_error(p, val, "\"%s\" must be one of %s, not \"%s\"", key, allowed, s);
		return;
	}
	case CFG_BOOL: {
		const char *s = cfg_scalar(p, val, key, "true or false");
		if (s == NULL)
			return;
		bool *out = (bool *)(void *)dst;
		if (cfg_plain(val) && strcmp(s, "true") == 0)
			*out = true;
		else if (cfg_plain(val) && strcmp(s, "false") == 0)
			*out = false;
		else
			cfg_error(p, val, "\"%s\" must be true or false, not \"%s\"", key, s);
		return;
	}
	case CFG_UINT: {
		const char *s = cfg_scalar(p, val, key, "a number");
		if (s == NULL)
			return;
		char *end = NULL;
		errno = 0;
		unsigned long long v = strtoull(s, &end, 10);
		if (!cfg_plain(val) || !isdigit((unsigned char)s[0]) || errno != 0 ||
		    *end != '\0' || (f->max && v > f->max)) {
			if (f->max)
				cfg_error(p, val,
					  "\"%s\" must be a whole number from 0 to %" PRIu64
					  ", not \"%s\"",
					  key, f->max, s);
			else
				cfg_error(p, val, "\"%s\" must be a whole number, not \"%s\"", key,
					  s);
			return;
		}
		*(uint64_t *)(void *)dst = (uint64_t)v;
		return;
	}
	case CFG_DURATION: {
		const char *s = cfg_scalar(p, val, key, "a duration");
		if (s == NULL)
			return;
		int64_t ms;
		if (!cfg_parse_duration(s, &ms)) {
			cfg_error(p, val,
				  "\"%s\" must be a duration such as 500ms, 10s, 2m, 1h or 7d, "
				  "not \"%s\"",
				  key, s);
			return;
		}
		*(int64_t *)(void *)dst = ms;
		return;
	}
	case CFG_LIST: {
		sluice_config_list *l = (sluice_config_list *)(void *)dst;
		const yaml_node_t *seq = val;
		if (val->type == YAML_SCALAR_NODE) {
			/* One item may be written without the list. */
			l->v = realloc(l->v, (l->n + 1) * sizeof(char *));
			if (l->v == NULL)
				abort();
			l->v[l->n++] = cfg_strdup((const char *)val->data.scalar.value,
						  val->data.scalar.length);
			return;
		}
		if (seq->type != YAML_SEQUENCE_NODE) {
			cfg_error(p, val, "\"%s\" must be a list of strings, not %s", key,
				  cfg_node_kind(val));
			return;
		}
		for (yaml_node_item_t *it = seq->data.sequence.items.start;
		     it < seq->data.sequence.items.top; it++) {
			const yaml_node_t *item = cfg_node(p, *it);
			if (item == NULL)
				continue;
			const char *s = cfg_scalar(p, item, key, "a list of strings");
			if (s == NULL)
				continue;
			l->v = realloc(l->v, (l->n + 1) * sizeof(char *));
			if (l->v == NULL)
				abort();
			l->v[l->n++] = cfg_strdup(s, item->data.scalar.length);
		}
		return;
	}
	case CFG_SECRET: {
		sluice_config_secret *sec = (sluice_config_secret *)(void *)dst;
		const char *s = cfg_scalar(p, val, key, "a string");
		if (s == NULL)
			return;
		if (sec->value || sec->file || sec->env) {
			cfg_error(p, key_node, "\"%s\": give only one of %s, %s_file and %s_env",
				  key, f->name, f->name, f->name);
			return;
		}
		char *copy = cfg_strdup(s, val->data.scalar.length);
		sec->given = true;
		sec->line = (int)val->start_mark.line + 1;
		if (strcmp(variant, "_file") == 0) {
			sec->file = copy;
		} else if (strcmp(variant, "_env") == 0) {
			sec->env = copy;
		} else if (f->secret == CFG_NEVER_INLINE) {
			sodium_memzero(copy, strlen(copy));
			free(copy);
			cfg_error(p, val,
				  "\"%s\" is a secret: give it in a file (%s_file) or an "
				  "environment variable (%s_env), not inline",
				  key, f->name, f->name);
			return;
		} else if (cfg_has_password(copy)) {
			sodium_memzero(copy, strlen(copy));
			free(copy);
			cfg_error(p, val,
				  "\"%s\" holds a password: give it in a file (%s_file) or an "
				  "environment variable (%s_env), or use a password file "
				  "(PGPASSFILE), not inline",
				  key, f->name, f->name);
			return;
		} else {
			sec->value = copy;
		}
		cfg_secret_check(p, val, key, sec);
		return;
	}
	case CFG_MAP:
		if (val->type != YAML_MAPPING_NODE) {
			cfg_error(p, val, "\"%s\" must be a mapping, not %s", key,
				  cfg_node_kind(val));
			return;
		}
		cfg_read_map(p, val, f->sub, base, key);
		return;
	}
}

/* cfg_find_field finds the field a key names (NAME, or NAME_file/NAME_env for secrets). */
static const cfg_field *
cfg_find_field(const cfg_field *fields, const char *key, const char **variant)
{
	*variant = "";
	for (const cfg_field *f = fields; f->name; f++) {
		if (strcmp(f->name, key) == 0)
			return f;
		if (f->type != CFG_SECRET)
			continue;
		size_t n = strlen(f->name);
		if (strncmp(f->name, key, n) == 0 &&
		    (strcmp(key + n, "_file") == 0 || strcmp(key + n, "_env") == 0)) {
			*variant = key + n;
			return f;
		}
	}
	return NULL;
}

/* cfg_field_present tells whether a required field was given. */
static bool
cfg_field_present(const cfg_field *f, const void *base)
{
	const char *src = (const char *)base + f->off;
	switch (f->type) {
	case CFG_STRING:
	case CFG_ENUM:
		return *(char *const *)(const void *)src != NULL;
	case CFG_LIST:
		return ((const sluice_config_list *)(const void *)src)->n > 0;
	case CFG_SECRET: {
		const sluice_config_secret *s = (const void *)src;
		return s->given;
	}
	default:
		return true;
	}
}

static void
cfg_read_map(cfg_parse *p, const yaml_node_t *map, const cfg_field *fields, void *base,
	     const char *what)
{
	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		const yaml_node_t *k = cfg_node(p, pair->key);
		const yaml_node_t *v = cfg_node(p, pair->value);
		if (k == NULL || v == NULL)
			continue;
		if (k->type != YAML_SCALAR_NODE) {
			cfg_error(p, k, "keys of %s must be names, not %s", what, cfg_node_kind(k));
			continue;
		}
		const char *key = (const char *)k->data.scalar.value;
		for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pair; q++) {
			const yaml_node_t *k2 = cfg_node(p, q->key);
			if (k2 && k2->type == YAML_SCALAR_NODE &&
			    strcmp((const char *)k2->data.scalar.value, key) == 0) {
				cfg_error(p, k, "\"%s\" is given twice in %s (first at line %lu)",
					  key, what, (unsigned long)k2->start_mark.line + 1);
				break;
			}
		}
		const char *variant;
		const cfg_field *f = cfg_find_field(fields, key, &variant);
		if (f == NULL) {
			char known[768] = "";
			size_t n = 0;
			for (const cfg_field *g = fields; g->name && n < sizeof(known); g++)
				n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s",
						      n ? ", " : "", g->name);
			cfg_error(p, k, "unknown key \"%s\" in %s (known: %s)", key, what, known);
			continue;
		}
		cfg_read_field(p, f, key, variant, v, k, base);
	}
	for (const cfg_field *f = fields; f->name; f++)
		if (f->required && !cfg_field_present(f, base))
			cfg_error(p, map, "%s needs \"%s\"%s", what, f->name,
				  f->type == CFG_SECRET ? " (or its _file or _env form)" : "");
}

/* ---- the schema ---------------------------------------------------------------- */

static const char *const cfg_ack_choices[] = {"remote", "local", NULL};
static const char *const cfg_strategy_choices[] = {"replace", "append", "timestamp", NULL};
static const char *const cfg_full_document_choices[] = {"default", "updateLookup", "whenAvailable",
							NULL};
static const char *const cfg_before_choices[] = {"off", "whenAvailable", "required", NULL};

#define P(field) offsetof(sluice_config_pipeline, field)

static const cfg_field cfg_readiness_fields[] = {
	{.name = "max_lag", .type = CFG_DURATION, .off = P(ready_max_lag_ms)},
	{.name = "max_heartbeat_age", .type = CFG_DURATION, .off = P(ready_max_heartbeat_age_ms)},
	{.name = NULL},
};

static const cfg_field cfg_rate_fields[] = {
	{.name = "rows_per_second", .type = CFG_UINT, .off = P(max_rows_per_s)},
	{.name = "bytes_per_second", .type = CFG_UINT, .off = P(max_bytes_per_s)},
	{.name = NULL},
};

static const cfg_field cfg_capture_fields[] = {
	{.name = "source",
	 .type = CFG_SECRET,
	 .off = P(conn),
	 .required = true,
	 .secret = CFG_INLINE_NO_PASSWORD},
	{.name = "store", .type = CFG_STRING, .off = P(store), .required = true},
	{.name = "stream", .type = CFG_STRING, .off = P(stream), .required = true},
	{.name = "key", .type = CFG_STRING, .off = P(key), .required = true},
	{.name = "trust", .type = CFG_LIST, .off = P(trust)},
	{.name = "node", .type = CFG_STRING, .off = P(node)},
	{.name = "slot", .type = CFG_STRING, .off = P(slot)},
	{.name = "publication", .type = CFG_STRING, .off = P(publication)},
	{.name = "create", .type = CFG_BOOL, .off = P(create)},
	{.name = "allow_no_identity", .type = CFG_BOOL, .off = P(allow_no_identity)},
	{.name = "snapshot", .type = CFG_BOOL, .off = P(snapshot)},
	{.name = "forward_origins", .type = CFG_BOOL, .off = P(forward_origins)},
	{.name = "messages", .type = CFG_BOOL, .off = P(messages)},
	{.name = "heartbeat", .type = CFG_BOOL, .off = P(heartbeat)},
	{.name = "heartbeat_interval", .type = CFG_DURATION, .off = P(heartbeat_interval_ms)},
	{.name = "status_interval", .type = CFG_DURATION, .off = P(status_interval_ms)},
	{.name = "zstd_level", .type = CFG_UINT, .off = P(zstd_level), .max = 19},
	{.name = "databases", .type = CFG_LIST, .off = P(databases)},
	{.name = "collections", .type = CFG_LIST, .off = P(collections)},
	{.name = "full_document",
	 .type = CFG_ENUM,
	 .off = P(full_document),
	 .choices = cfg_full_document_choices},
	{.name = "full_document_before_change",
	 .type = CFG_ENUM,
	 .off = P(full_document_before_change),
	 .choices = cfg_before_choices},
	{.name = "max_rate", .type = CFG_MAP, .sub = cfg_rate_fields},
	{.name = "readiness", .type = CFG_MAP, .sub = cfg_readiness_fields},
	{.name = NULL},
};

static const cfg_field cfg_apply_fields[] = {
	{.name = "target",
	 .type = CFG_SECRET,
	 .off = P(conn),
	 .required = true,
	 .secret = CFG_INLINE_NO_PASSWORD},
	{.name = "store", .type = CFG_STRING, .off = P(store), .required = true},
	{.name = "stream", .type = CFG_STRING, .off = P(stream), .required = true},
	{.name = "trust", .type = CFG_LIST, .off = P(trust), .required = true},
	{.name = "strategy", .type = CFG_ENUM, .off = P(strategy), .choices = cfg_strategy_choices},
	{.name = "include", .type = CFG_LIST, .off = P(include)},
	{.name = "exclude", .type = CFG_LIST, .off = P(exclude)},
	{.name = "timestamp_columns", .type = CFG_LIST, .off = P(timestamp_columns)},
	{.name = "until_txseq", .type = CFG_UINT, .off = P(until_txseq)},
	{.name = "until_time", .type = CFG_STRING, .off = P(until_time)},
	{.name = "origin", .type = CFG_STRING, .off = P(origin)},
	{.name = "conflict_log", .type = CFG_BOOL, .off = P(conflict_log)},
	{.name = "tombstone_horizon", .type = CFG_DURATION, .off = P(tombstone_horizon_ms)},
	{.name = "retry_report", .type = CFG_DURATION, .off = P(retry_report_ms)},
	{.name = "max_txn_writes", .type = CFG_UINT, .off = P(max_txn_writes), .max = UINT32_MAX},
	{.name = "group_size", .type = CFG_UINT, .off = P(group_size), .max = UINT32_MAX},
	{.name = "group_bytes", .type = CFG_UINT, .off = P(group_bytes)},
	{.name = "group_time", .type = CFG_DURATION, .off = P(group_ms)},
	{.name = "max_rate", .type = CFG_MAP, .sub = cfg_rate_fields},
	{.name = "readiness", .type = CFG_MAP, .sub = cfg_readiness_fields},
	{.name = NULL},
};

#undef P
#define S(field) offsetof(sluice_config_store, field)

static const cfg_field cfg_store_fields[] = {
	{.name = "url", .type = CFG_STRING, .off = S(url), .required = true},
	{.name = "spool", .type = CFG_STRING, .off = S(spool)},
	{.name = "ack", .type = CFG_ENUM, .off = S(ack), .choices = cfg_ack_choices},
	{.name = "segment_seconds", .type = CFG_UINT, .off = S(segment_seconds), .max = 86400},
	{.name = "access_key_id", .type = CFG_SECRET, .off = S(access_key_id), .secret = 0},
	{.name = "secret_access_key",
	 .type = CFG_SECRET,
	 .off = S(secret_access_key),
	 .secret = CFG_NEVER_INLINE},
	{.name = "session_token",
	 .type = CFG_SECRET,
	 .off = S(session_token),
	 .secret = CFG_NEVER_INLINE},
	{.name = NULL},
};

#undef S
#define K(field) offsetof(sluice_config_key, field)

static const cfg_field cfg_key_fields[] = {
	{.name = "secret_file", .type = CFG_STRING, .off = K(secret_file)},
	{.name = "public_file", .type = CFG_STRING, .off = K(public_file)},
	{.name = NULL},
};

#undef K
#define C(field) offsetof(sluice_config, field)

static const cfg_field cfg_global_readiness_fields[] = {
	{.name = "max_lag", .type = CFG_DURATION, .off = C(ready_max_lag_ms)},
	{.name = "max_heartbeat_age", .type = CFG_DURATION, .off = C(ready_max_heartbeat_age_ms)},
	{.name = NULL},
};

static const cfg_field cfg_restart_fields[] = {
	{.name = "min_delay", .type = CFG_DURATION, .off = C(restart_min_ms)},
	{.name = "max_delay", .type = CFG_DURATION, .off = C(restart_max_ms)},
	{.name = NULL},
};

/* The top level; keys, stores and pipelines are read by hand (named entries). */
static const cfg_field cfg_top_fields[] = {
	{.name = "listen", .type = CFG_STRING, .off = C(listen)},
	{.name = "readiness", .type = CFG_MAP, .sub = cfg_global_readiness_fields},
	{.name = "restart", .type = CFG_MAP, .sub = cfg_restart_fields},
	{.name = NULL},
};

#undef C

/* ---- named entries -------------------------------------------------------------- */

/* cfg_valid_name: names of keys, stores and pipelines (they become metric labels). */
static bool
cfg_valid_name(const char *s)
{
	if (*s == '\0' || strlen(s) > 100)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
			return false;
	return true;
}

/*
 * cfg_entries walks a mapping of named entries, calling each(p, name, key
 * node, value node) for each one with a valid name.
 */
static void
cfg_entries(cfg_parse *p, const yaml_node_t *map, const char *what, sluice_config *c,
	    void (*each)(cfg_parse *, sluice_config *, const char *, const yaml_node_t *,
			 const yaml_node_t *))
{
	if (map->type != YAML_MAPPING_NODE) {
		cfg_error(p, map, "\"%s\" must be a mapping of names to entries, not %s", what,
			  cfg_node_kind(map));
		return;
	}
	for (yaml_node_pair_t *pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		const yaml_node_t *k = cfg_node(p, pair->key);
		const yaml_node_t *v = cfg_node(p, pair->value);
		if (k == NULL || v == NULL)
			continue;
		const char *name = cfg_scalar(p, k, what, "a name");
		if (name == NULL)
			continue;
		if (!cfg_valid_name(name)) {
			cfg_error(p, k,
				  "invalid name \"%s\" in %s: use letters, digits, '_', '-' and "
				  "'.'",
				  name, what);
			continue;
		}
		bool dup = false;
		for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pair; q++) {
			const yaml_node_t *k2 = cfg_node(p, q->key);
			if (k2 && k2->type == YAML_SCALAR_NODE &&
			    strcmp((const char *)k2->data.scalar.value, name) == 0) {
				cfg_error(p, k, "\"%s\" is defined twice in %s (first at line %lu)",
					  name, what, (unsigned long)k2->start_mark.line + 1);
				dup = true;
			}
		}
		if (!dup)
			each(p, c, name, k, v);
	}
}

static void
cfg_each_key(cfg_parse *p, sluice_config *c, const char *name, const yaml_node_t *k,
	     const yaml_node_t *v)
{
	(void)k;
	char what[160];
	snprintf(what, sizeof(what), "key \"%s\"", name);
	if (v->type != YAML_MAPPING_NODE) {
		cfg_error(p, v, "%s must be a mapping (secret_file, public_file), not %s", what,
			  cfg_node_kind(v));
		return;
	}
	c->keys = realloc(c->keys, (c->nkeys + 1) * sizeof(*c->keys));
	if (c->keys == NULL)
		abort();
	sluice_config_key *key = &c->keys[c->nkeys++];
	memset(key, 0, sizeof(*key));
	key->name = cfg_strdup(name, strlen(name));
	cfg_read_map(p, v, cfg_key_fields, key, what);
	if (key->secret_file == NULL && key->public_file == NULL)
		cfg_error(p, v, "%s needs \"secret_file\" or \"public_file\"", what);
	if (key->secret_file && access(key->secret_file, R_OK) != 0)
		cfg_error(p, v, "%s: could not read secret_file \"%s\": %s", what, key->secret_file,
			  strerror(errno));
	if (key->public_file && access(key->public_file, R_OK) != 0)
		cfg_error(p, v, "%s: could not read public_file \"%s\": %s", what, key->public_file,
			  strerror(errno));
}

static void
cfg_each_store(cfg_parse *p, sluice_config *c, const char *name, const yaml_node_t *k,
	       const yaml_node_t *v)
{
	(void)k;
	char what[160];
	snprintf(what, sizeof(what), "store \"%s\"", name);
	if (v->type != YAML_MAPPING_NODE) {
		cfg_error(p, v, "%s must be a mapping (url, ...), not %s", what, cfg_node_kind(v));
		return;
	}
	c->stores = realloc(c->stores, (c->nstores + 1) * sizeof(*c->stores));
	if (c->stores == NULL)
		abort();
	sluice_config_store *s = &c->stores[c->nstores++];
	memset(s, 0, sizeof(*s));
	s->name = cfg_strdup(name, strlen(name));
	s->segment_seconds = UINT64_MAX;
	cfg_read_map(p, v, cfg_store_fields, s, what);
}

static void
cfg_pipeline_defaults(sluice_config_pipeline *pl)
{
	memset(pl, 0, sizeof(*pl));
	pl->heartbeat = true;
	pl->conflict_log = true;
	pl->zstd_level = UINT64_MAX;
	pl->max_txn_writes = UINT64_MAX;
	pl->group_size = UINT64_MAX;
	pl->group_bytes = UINT64_MAX;
}

static void
cfg_each_pipeline(cfg_parse *p, sluice_config *c, const char *name, const yaml_node_t *k,
		  const yaml_node_t *v)
{
	char what[200];
	if (v->type != YAML_MAPPING_NODE ||
	    v->data.mapping.pairs.top - v->data.mapping.pairs.start != 1) {
		cfg_error(p, v->type == YAML_MAPPING_NODE ? v : k,
			  "pipeline \"%s\" must be a mapping with one key, capture or apply", name);
		return;
	}
	const yaml_node_pair_t *pair = v->data.mapping.pairs.start;
	const yaml_node_t *kind = cfg_node(p, pair->key);
	const yaml_node_t *body = cfg_node(p, pair->value);
	if (kind == NULL || body == NULL)
		return;
	const char *ks = cfg_scalar(p, kind, "pipeline", "capture or apply");
	if (ks == NULL)
		return;
	sluice_pipeline_kind pk;
	if (strcmp(ks, "capture") == 0)
		pk = SLUICE_PIPELINE_CAPTURE;
	else if (strcmp(ks, "apply") == 0)
		pk = SLUICE_PIPELINE_APPLY;
	else {
		cfg_error(p, kind, "pipeline \"%s\": unknown kind \"%s\" (capture or apply)", name,
			  ks);
		return;
	}
	snprintf(what, sizeof(what), "%s pipeline \"%s\"", ks, name);
	if (body->type != YAML_MAPPING_NODE) {
		cfg_error(p, body, "%s must be a mapping, not %s", what, cfg_node_kind(body));
		return;
	}
	c->pipelines = realloc(c->pipelines, (c->npipelines + 1) * sizeof(*c->pipelines));
	if (c->pipelines == NULL)
		abort();
	sluice_config_pipeline *pl = &c->pipelines[c->npipelines++];
	cfg_pipeline_defaults(pl);
	pl->name = cfg_strdup(name, strlen(name));
	pl->kind = pk;
	pl->line = (int)k->start_mark.line + 1;
	cfg_read_map(p, body, pk == SLUICE_PIPELINE_CAPTURE ? cfg_capture_fields : cfg_apply_fields,
		     pl, what);
	/* References: checked here, where the pipeline's node gives the line. */
	if (pl->store && sluice_config_store_find(c, pl->store) == NULL)
		cfg_error(p, body, "%s: no store named \"%s\" in stores", what, pl->store);
	if (pl->key) {
		const sluice_config_key *key = sluice_config_key_find(c, pl->key);
		if (key == NULL)
			cfg_error(p, body, "%s: no key named \"%s\" in keys", what, pl->key);
		else if (key->secret_file == NULL)
			cfg_error(p, body, "%s: key \"%s\" has no secret_file to sign with", what,
				  pl->key);
	}
	for (size_t i = 0; i < pl->trust.n; i++) {
		const sluice_config_key *key = sluice_config_key_find(c, pl->trust.v[i]);
		if (key == NULL)
			cfg_error(p, body, "%s: no key named \"%s\" in keys (trust)", what,
				  pl->trust.v[i]);
		else if (key->public_file == NULL)
			cfg_error(p, body, "%s: key \"%s\" has no public_file to trust", what,
				  pl->trust.v[i]);
	}
	if (pl->stream &&
	    (pl->stream[0] == '\0' || strchr(pl->stream, '/') != NULL || pl->stream[0] == '.'))
		cfg_error(p, body, "%s: invalid stream name \"%s\"", what, pl->stream);
	for (size_t i = 0; i < pl->timestamp_columns.n; i++)
		if (strchr(pl->timestamp_columns.v[i], '=') == NULL)
			cfg_error(p, body, "%s: timestamp_columns wants TABLE=COLUMN, not \"%s\"",
				  what, pl->timestamp_columns.v[i]);
}

/* ---- fingerprints ----------------------------------------------------------------- */

static void
cfg_hash_str(crypto_generichash_state *h, const char *tag, const char *s)
{
	crypto_generichash_update(h, (const unsigned char *)tag, strlen(tag) + 1);
	if (s != NULL)
		crypto_generichash_update(h, (const unsigned char *)s, strlen(s) + 1);
	else
		crypto_generichash_update(h, (const unsigned char *)"\xff", 1);
}

/* cfg_hash_secret hashes where a secret comes from and its value (read, hashed, wiped). */
static void
cfg_hash_secret(crypto_generichash_state *h, const char *tag, const sluice_config_secret *s)
{
	cfg_hash_str(h, tag, s->value);
	cfg_hash_str(h, "file", s->file);
	cfg_hash_str(h, "env", s->env);
	char *value = NULL;
	char why[256];
	if ((s->file || s->env) && sluice_config_secret_read(s, &value, why, sizeof(why))) {
		cfg_hash_str(h, "value", value);
		sodium_memzero(value, strlen(value));
		free(value);
	}
}

static void
cfg_hash_fields(crypto_generichash_state *h, const cfg_field *fields, const void *base)
{
	for (const cfg_field *f = fields; f->name; f++) {
		const char *src = (const char *)base + f->off;
		char num[32];
		switch (f->type) {
		case CFG_STRING:
		case CFG_ENUM:
			cfg_hash_str(h, f->name, *(char *const *)(const void *)src);
			break;
		case CFG_BOOL:
			cfg_hash_str(h, f->name, *(const bool *)(const void *)src ? "1" : "0");
			break;
		case CFG_UINT:
			snprintf(num, sizeof(num), "%" PRIu64,
				 *(const uint64_t *)(const void *)src);
			cfg_hash_str(h, f->name, num);
			break;
		case CFG_DURATION:
			snprintf(num, sizeof(num), "%" PRId64, *(const int64_t *)(const void *)src);
			cfg_hash_str(h, f->name, num);
			break;
		case CFG_LIST: {
			const sluice_config_list *l = (const void *)src;
			cfg_hash_str(h, f->name, NULL);
			for (size_t i = 0; i < l->n; i++)
				cfg_hash_str(h, "item", l->v[i]);
			break;
		}
		case CFG_SECRET:
			cfg_hash_secret(h, f->name, (const void *)src);
			break;
		case CFG_MAP:
			cfg_hash_fields(h, f->sub, base);
			break;
		}
	}
}

/* cfg_fingerprint hashes what a pipeline runs with: its settings, store and keys. */
static void
cfg_fingerprint(const sluice_config *c, sluice_config_pipeline *pl)
{
	crypto_generichash_state h;
	unsigned char out[16];
	crypto_generichash_init(&h, NULL, 0, sizeof(out));
	cfg_hash_str(&h, "kind", pl->kind == SLUICE_PIPELINE_CAPTURE ? "capture" : "apply");
	cfg_hash_fields(&h,
			pl->kind == SLUICE_PIPELINE_CAPTURE ? cfg_capture_fields : cfg_apply_fields,
			pl);
	const sluice_config_store *s = pl->store ? sluice_config_store_find(c, pl->store) : NULL;
	if (s != NULL) {
		char num[32];
		cfg_hash_str(&h, "store.url", s->url);
		cfg_hash_str(&h, "store.spool", s->spool);
		cfg_hash_str(&h, "store.ack", s->ack);
		snprintf(num, sizeof(num), "%" PRIu64, s->segment_seconds);
		cfg_hash_str(&h, "store.segment_seconds", num);
		cfg_hash_secret(&h, "store.access_key_id", &s->access_key_id);
		cfg_hash_secret(&h, "store.secret_access_key", &s->secret_access_key);
		cfg_hash_secret(&h, "store.session_token", &s->session_token);
	}
	const sluice_config_key *k = pl->key ? sluice_config_key_find(c, pl->key) : NULL;
	if (k != NULL)
		cfg_hash_str(&h, "key.secret_file", k->secret_file);
	for (size_t i = 0; i < pl->trust.n; i++) {
		k = sluice_config_key_find(c, pl->trust.v[i]);
		cfg_hash_str(&h, "trust.public_file", k ? k->public_file : NULL);
	}
	crypto_generichash_final(&h, out, sizeof(out));
	sodium_bin2hex(pl->fingerprint, sizeof(pl->fingerprint), out, sizeof(out));
}

/* ---- the file ----------------------------------------------------------------------- */

sluice_config *
sluice_config_parse(const char *name, const char *text, size_t len, sluice_buf *errors,
		    size_t *nerrors)
{
	cfg_parse p = {.name = name, .errors = errors};
	yaml_parser_t parser;
	yaml_document_t doc;
	bool have_doc = false;
	sluice_config *c = calloc(1, sizeof(*c));
	if (c == NULL)
		abort();
	c->file = cfg_strdup(name, strlen(name));
	c->ready_max_lag_ms = 30000;
	c->ready_max_heartbeat_age_ms = 60000;
	c->restart_min_ms = 1000;
	c->restart_max_ms = 60000;
	*nerrors = 0;
	if (!yaml_parser_initialize(&parser))
		abort();
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		sluice_buf_printf(errors, "%s:%lu:%lu: %s%s%s\n", name,
				  (unsigned long)parser.problem_mark.line + 1,
				  (unsigned long)parser.problem_mark.column + 1,
				  parser.problem ? parser.problem : "invalid YAML",
				  parser.context ? " " : "", parser.context ? parser.context : "");
		p.nerrors++;
		goto done;
	}
	have_doc = true;
	p.doc = &doc;
	const yaml_node_t *root = yaml_document_get_root_node(&doc);
	if (root == NULL) {
		sluice_buf_printf(errors, "%s:1:1: the configuration is empty\n", name);
		p.nerrors++;
		goto done;
	}
	if (root->type != YAML_MAPPING_NODE) {
		cfg_error(&p, root,
			  "the configuration must be a mapping (keys, stores, pipelines)");
		goto done;
	}
	/* Keys and stores first: pipelines refer to them wherever they are in the file. */
	const yaml_node_t *pipelines = NULL;
	for (int pass = 0; pass < 2; pass++) {
		for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
		     pair < root->data.mapping.pairs.top; pair++) {
			const yaml_node_t *k = cfg_node(&p, pair->key);
			const yaml_node_t *v = cfg_node(&p, pair->value);
			if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE) {
				if (pass == 0 && k != NULL)
					cfg_error(&p, k, "top-level keys must be names");
				continue;
			}
			const char *key = (const char *)k->data.scalar.value;
			bool entries = strcmp(key, "keys") == 0 || strcmp(key, "stores") == 0 ||
				       strcmp(key, "pipelines") == 0;
			if (pass == 0 && strcmp(key, "keys") == 0)
				cfg_entries(&p, v, "keys", c, cfg_each_key);
			else if (pass == 0 && strcmp(key, "stores") == 0)
				cfg_entries(&p, v, "stores", c, cfg_each_store);
			else if (pass == 1 && strcmp(key, "pipelines") == 0) {
				pipelines = v;
				cfg_entries(&p, v, "pipelines", c, cfg_each_pipeline);
			} else if (pass == 0 && !entries) {
				/* the plain top-level fields, one pair at a time */
				const char *variant;
				const cfg_field *f = cfg_find_field(cfg_top_fields, key, &variant);
				if (f == NULL)
					cfg_error(&p, k,
						  "unknown key \"%s\" at the top level (known: "
						  "listen, readiness, restart, keys, stores, "
						  "pipelines)",
						  key);
				else
					cfg_read_field(&p, f, key, variant, v, k, c);
			}
		}
	}
	if (pipelines == NULL)
		cfg_error(&p, root, "the configuration needs \"pipelines\"");
	else if (c->npipelines == 0 && p.nerrors == 0)
		cfg_error(&p, pipelines, "\"pipelines\" is empty");
	if (c->restart_min_ms <= 0 || c->restart_max_ms < c->restart_min_ms)
		cfg_error(&p, root, "restart: min_delay must be positive and at most max_delay");
	for (size_t i = 0; i < c->npipelines; i++)
		cfg_fingerprint(c, &c->pipelines[i]);

done:
	if (have_doc)
		yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	*nerrors = p.nerrors;
	if (p.nerrors > 0) {
		sluice_config_free(c);
		return NULL;
	}
	return c;
}

static void
cfg_free_list(sluice_config_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

static void
cfg_free_secret(sluice_config_secret *s)
{
	if (s->value)
		sodium_memzero(s->value, strlen(s->value));
	free(s->value);
	free(s->file);
	free(s->env);
}

void
sluice_config_free(sluice_config *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->nkeys; i++) {
		free(c->keys[i].name);
		free(c->keys[i].secret_file);
		free(c->keys[i].public_file);
	}
	free(c->keys);
	for (size_t i = 0; i < c->nstores; i++) {
		sluice_config_store *s = &c->stores[i];
		free(s->name);
		free(s->url);
		free(s->spool);
		free(s->ack);
		cfg_free_secret(&s->access_key_id);
		cfg_free_secret(&s->secret_access_key);
		cfg_free_secret(&s->session_token);
	}
	free(c->stores);
	for (size_t i = 0; i < c->npipelines; i++) {
		sluice_config_pipeline *pl = &c->pipelines[i];
		free(pl->name);
		free(pl->store);
		free(pl->stream);
		cfg_free_secret(&pl->conn);
		cfg_free_list(&pl->trust);
		free(pl->key);
		free(pl->node);
		free(pl->slot);
		free(pl->publication);
		cfg_free_list(&pl->databases);
		cfg_free_list(&pl->collections);
		free(pl->full_document);
		free(pl->full_document_before_change);
		free(pl->strategy);
		free(pl->origin);
		free(pl->until_time);
		cfg_free_list(&pl->include);
		cfg_free_list(&pl->exclude);
		cfg_free_list(&pl->timestamp_columns);
	}
	free(c->pipelines);
	free(c->listen);
	free(c->file);
	free(c);
}

const sluice_config_pipeline *
sluice_config_pipeline_find(const sluice_config *c, const char *name)
{
	for (size_t i = 0; i < c->npipelines; i++)
		if (strcmp(c->pipelines[i].name, name) == 0)
			return &c->pipelines[i];
	return NULL;
}

const sluice_config_store *
sluice_config_store_find(const sluice_config *c, const char *name)
{
	for (size_t i = 0; i < c->nstores; i++)
		if (strcmp(c->stores[i].name, name) == 0)
			return &c->stores[i];
	return NULL;
}

const sluice_config_key *
sluice_config_key_find(const sluice_config *c, const char *name)
{
	for (size_t i = 0; i < c->nkeys; i++)
		if (strcmp(c->keys[i].name, name) == 0)
			return &c->keys[i];
	return NULL;
}

bool
sluice_config_secret_read(const sluice_config_secret *s, char **out, char *why, size_t why_size)
{
	*out = NULL;
	if (s->value != NULL) {
		*out = cfg_strdup(s->value, strlen(s->value));
		return true;
	}
	if (s->env != NULL) {
		const char *v = getenv(s->env);
		if (v == NULL) {
			snprintf(why, why_size, "environment variable %s is not set", s->env);
			return false;
		}
		*out = cfg_strdup(v, strlen(v));
		return true;
	}
	if (s->file == NULL) {
		snprintf(why, why_size, "not given");
		return false;
	}
	FILE *f = fopen(s->file, "re");
	if (f == NULL) {
		snprintf(why, why_size, "could not open file \"%s\": %s", s->file, strerror(errno));
		return false;
	}
	sluice_buf b = {0};
	char chunk[4096];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < 1024 * 1024)
		sluice_buf_append(&b, chunk, n);
	bool err = ferror(f);
	fclose(f);
	sodium_memzero(chunk, sizeof(chunk));
	if (err) {
		snprintf(why, why_size, "could not read file \"%s\"", s->file);
		if (b.data)
			sodium_memzero(b.data, b.len);
		sluice_buf_free(&b);
		return false;
	}
	while (b.len > 0 && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
		b.len--;
	*out = cfg_strdup(b.len ? (const char *)b.data : "", b.len);
	if (b.data)
		sodium_memzero(b.data, b.len);
	sluice_buf_free(&b);
	return true;
}
