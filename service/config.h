/*
 * The service configuration (sluice run --config FILE): keys, stores and
 * named pipelines from a YAML file (libyaml), checked against a schema with
 * every problem reported at once as FILE:LINE:COLUMN: message.
 */
#ifndef SLUICE_SERVICE_CONFIG_H
#define SLUICE_SERVICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/*
 * A secret: inline (only where nothing secret can be in it, see
 * config.c), or the name of a file or of an environment variable that
 * holds it. Exactly one is set when present.
 */
typedef struct sluice_config_secret {
	char *value; /* owned: inline value, or NULL */
	char *file;  /* owned: path of a file holding it, or NULL */
	char *env;   /* owned: environment variable holding it, or NULL */
	int line;    /* where it was given (1-based), for messages */
	bool given;  /* a form was given (even one refused) */
} sluice_config_secret;

typedef struct sluice_config_list {
	char **v; /* owned */
	size_t n;
} sluice_config_list;

typedef struct sluice_config_key {
	char *name;        /* owned */
	char *secret_file; /* owned: PREFIX.key (capture signs with it), or NULL */
	char *public_file; /* owned: PREFIX.pub (apply trusts it), or NULL */
} sluice_config_key;

typedef struct sluice_config_store {
	char *name;               /* owned */
	char *url;                /* owned: a directory, file://PATH or s3://BUCKET/PREFIX?... */
	char *spool;              /* owned: S3 spool directory for captures, or NULL */
	char *ack;                /* owned: "remote", "local" or NULL */
	uint64_t segment_seconds; /* UINT64_MAX: the store's default */
	sluice_config_secret access_key_id, secret_access_key, session_token;
} sluice_config_store;

typedef enum sluice_pipeline_kind {
	SLUICE_PIPELINE_CAPTURE = 0,
	SLUICE_PIPELINE_APPLY = 1,
} sluice_pipeline_kind;

typedef struct sluice_config_pipeline {
	char *name; /* owned */
	sluice_pipeline_kind kind;
	int line;                  /* where it is defined */
	char *store;               /* owned: name of an entry of stores */
	char *stream;              /* owned */
	sluice_config_secret conn; /* capture: source; apply: target */
	sluice_config_list trust;  /* key names */
	/* capture */
	char *key; /* owned: name of an entry of keys with a secret_file */
	char *node, *slot, *publication;
	bool create, allow_no_identity, snapshot, forward_origins, messages, heartbeat;
	int64_t heartbeat_interval_ms, status_interval_ms;
	uint64_t zstd_level; /* UINT64_MAX: default */
	sluice_config_list databases, collections;
	char *full_document, *full_document_before_change;
	/* apply */
	char *strategy, *origin, *until_time;
	sluice_config_list include, exclude, timestamp_columns;
	uint64_t until_txseq;
	bool conflict_log;
	int64_t tombstone_horizon_ms, retry_report_ms;
	uint64_t max_txn_writes;          /* UINT64_MAX: default */
	uint64_t group_size, group_bytes; /* UINT64_MAX: default */
	int64_t group_ms;                 /* 0: default */
	/* both */
	uint64_t max_rows_per_s, max_bytes_per_s;             /* 0: unlimited */
	int64_t ready_max_lag_ms, ready_max_heartbeat_age_ms; /* 0: the global setting */
	char fingerprint[33]; /* hex BLAKE2b-128 of every setting it runs with */
} sluice_config_pipeline;

typedef struct sluice_config {
	char *file;               /* owned: the name errors are reported with */
	char *listen;             /* owned: ADDR:PORT of the metrics and health endpoint, or NULL */
	int64_t ready_max_lag_ms; /* readiness: lag in seconds at most this */
	int64_t ready_max_heartbeat_age_ms;     /* ... and a signed heartbeat at most this old */
	int64_t restart_min_ms, restart_max_ms; /* backoff of a failed pipeline */
	sluice_config_key *keys;
	size_t nkeys;
	sluice_config_store *stores;
	size_t nstores;
	sluice_config_pipeline *pipelines;
	size_t npipelines;
} sluice_config;

/*
 * sluice_config_parse reads a configuration from text (name is the file
 * name used in messages) and checks it: the schema (unknown keys, wrong
 * types, missing fields), references between pipelines, stores and keys,
 * and that every secret's file or environment variable exists (secrets are
 * read only to fingerprint them; they are never kept). Every problem is
 * appended to errors as one "NAME:LINE:COLUMN: message" line.
 * @return the configuration, or NULL when there was any problem (*nerrors > 0).
 */
sluice_config *sluice_config_parse(const char *name, const char *text, size_t len,
				   sluice_buf *errors, size_t *nerrors);

/* sluice_config_free releases a configuration; NULL is a no-op. */
void sluice_config_free(sluice_config *c);

const sluice_config_pipeline *sluice_config_pipeline_find(const sluice_config *c, const char *name);
const sluice_config_store *sluice_config_store_find(const sluice_config *c, const char *name);
const sluice_config_key *sluice_config_key_find(const sluice_config *c, const char *name);

/*
 * sluice_config_secret_read resolves a secret into *out (owned by the
 * caller, to be wiped and freed; a file's trailing newline is dropped).
 * On failure, writes the reason, without the secret, into why.
 * @return true when the secret was read.
 */
bool sluice_config_secret_read(const sluice_config_secret *s, char **out, char *why,
			       size_t why_size);

#endif
