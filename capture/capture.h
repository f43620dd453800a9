/* Capture: a source's committed transactions into a signed stream (the source follows the URI). */
#ifndef SLUICE_CAPTURE_CAPTURE_H
#define SLUICE_CAPTURE_CAPTURE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "keys.h"
#include "rate.h"
#include "writer.h"

struct sluice_capture_stats;

/* Options of a run: the engine's, then those of the PostgreSQL source (slot ... messages). */
typedef struct sluice_capture_options {
	const char *source; /* libpq conninfo or URI; mongodb:// and mongodb+srv:// are MongoDB */
	const char *stream; /* stream name in the store */
	const char *node;   /* origin node name written into every Begin */
	const char *slot;   /* logical replication slot */
	const char *publication; /* publication the slot streams */
	bool create;             /* create publication and slot when missing */
	bool allow_no_identity;  /* with create: publish tables without a replica identity */
	bool snapshot;           /* with create: copy every table first */
	bool forward_origins;    /* also capture transactions that carry a replication origin */
	bool messages;           /* capture logical decoding messages */
	bool exit_when_caught_up;
	uint64_t until_position; /* --until-lsn: stop before transactions past it; 0: none */
	int64_t until_time_us; /* --until-time: stop before transactions committed after it; 0: none
				*/
	int min_flush_gap_ms;  /* fsync at most this often while data keeps arriving */
	int max_flush_delay_ms;    /* ... and at least this often */
	int status_interval_ms;    /* standby status updates at least this often */
	int heartbeat_interval_ms; /* heartbeat records when idle; 0: none */
	int reconnect_max_s;       /* cap of the reconnect backoff */
	int busy_timeout_ms;       /* give up on a source held by another process after this */
	bool progress;             /* progress lines on stderr */
	/* MongoDB source */
	const char *const *databases; /* --db: watch these databases (none: all) */
	size_t n_databases;
	const char *const *collections; /* --collection DB.COLL: and these collections */
	size_t n_collections;
	const char
		*full_document; /* --full-document: NULL (default), updateLookup, whenAvailable */
	/* --full-document-before-change: NULL (off), whenAvailable, required */
	const char *full_document_before_change;
	sluice_writer_options writer;
	volatile sig_atomic_t *stop; /* set by a signal handler: flush, acknowledge, exit */
	sluice_rate
		*rate; /* borrowed, NULL: unlimited: row changes (snapshot rows too) per second */
	/* Called about once a second from the engine's loop and at the end (NULL: none). */
	void (*report)(void *arg, const struct sluice_capture_stats *stats);
	void *report_arg;
} sluice_capture_options;

/* sluice_capture_default_options fills in the defaults (stream and source stay NULL). */
void sluice_capture_default_options(sluice_capture_options *o);

/* What a run did, for the exit summary. */
typedef struct sluice_capture_stats {
	uint64_t transactions;
	uint64_t changes;
	uint64_t skipped_origin;
	uint64_t skipped_duplicate;
	uint64_t first_txseq, last_txseq;
	uint64_t acked_lsn; /* last durable position acknowledged to the source */
	char position[64];  /* the position the stream ends at, as the source writes it */
	uint64_t reconnects;
	/* for metrics (the service): kept up to date while running */
	bool streaming;             /* connected to the source and receiving */
	bool lsn_positions;         /* positions are PostgreSQL LSNs (else cluster times) */
	uint64_t received_position; /* the newest source position heard of */
	uint64_t durable_txseq;     /* the stream's last durable transaction */
	int64_t durable_commit_us;  /* its commit time at the source */
	int64_t heartbeat_us;       /* the newest heartbeat written, 0: none */
	uint64_t frames, bytes;     /* written to the store */
} sluice_capture_stats;

/*
 * sluice_capture_run streams committed transactions from the source into the
 * stream until stopped, until the requested position, or until a failure it
 * cannot recover from. The source kind follows from o->source: mongodb:// and
 * mongodb+srv:// are MongoDB, anything else is
 * PostgreSQL. store and key are borrowed.
 * @return true on a clean stop.
 */
bool sluice_capture_run(sluice_store *store, const sluice_key *key, const sluice_capture_options *o,
			sluice_capture_stats *stats);

#endif
