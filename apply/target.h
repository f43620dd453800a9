/*
 * The target interface: what the apply engine (engine.c) asks of a target
 * database, and what it offers back. A target turns the verified records of
 * one transaction at a time into writes and commits them together with the
 * stream's progress (exactly once); the engine does everything else: txseq
 * order, bounds, filters, dry run, counters, the decision after a failure
 * (reconnect, retry, stop), and the loop that reads the stream.
 *
 * A target may queue work (PostgreSQL pipelines many transactions under one
 * sync): results then arrive later, at flush() or when its queue is full.
 * Counts of rows and conflicts go into ctx->stats as results arrive;
 * sluice_apply_committed() is called when a transaction's commit is
 * confirmed, and everything counted after the last such call is taken back
 * when the engine rolls back.
 *
 * Every operation returns a status; on anything but OK the target has filled
 * t->failure (or logged the cause and left its message empty).
 */
#ifndef SLUICE_APPLY_TARGET_H
#define SLUICE_APPLY_TARGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "apply.h"
#include "records.h"

/* sluice's own node-local namespace (a schema, a database): never written from a stream */
#define SLUICE_APPLY_LOCAL_SPACE "sluice"

typedef enum sluice_target_status {
	SLUICE_TARGET_OK = 0,
	SLUICE_TARGET_FAILED, /* permanent (a refused change, a schema mismatch): stop */
	SLUICE_TARGET_LOST,   /* the connection is gone: reconnect, go on from the progress */
	SLUICE_TARGET_RETRY,  /* transient: roll back, wait, apply again from the progress */
	SLUICE_TARGET_EXISTS, /* a row an optimistic insert took for new exists: roll back and
				 apply again from the progress, with conflict handling through
				 failure.txseq */
	SLUICE_TARGET_BUSY,   /* open: another session holds the stream's progress for now */
} sluice_target_status;

/* What failed, for the engine's messages and decisions. */
typedef struct sluice_target_failure {
	uint64_t txseq;     /* the transaction it belongs to; 0: the one being applied */
	char op;            /* 'I', 'U', 'D' of the change it belongs to, 0 for none */
	uint32_t rel;       /* that change's relation (engine index) */
	int cause;          /* sluice_retry_cause of a RETRY, -1 otherwise */
	char code[32];      /* the target's error code, "" when none */
	char message[1024]; /* the target's words on one line, "" when already logged */
} sluice_target_failure;

/* A relation of the stream as the engine knows it; targets keep their own state by index. */
typedef struct sluice_apply_rel {
	uint32_t id;           /* relation id in the stream */
	uint32_t generation;   /* new each time the stream (re)defines it */
	char *space, *name;    /* owned: schema and table, or database and collection */
	char *label;           /* owned: space.name, for messages */
	const char *ts_column; /* --timestamp-column naming it (borrowed), or NULL */
	bool included;         /* passes the filters and is not node-local */
	bool local;            /* in SLUICE_APPLY_LOCAL_SPACE */
	bool warned;           /* the skip of a local relation was logged */
	bool checked;          /* the target accepted it since it (re)connected */
} sluice_apply_rel;

/* The transaction being applied. */
typedef struct sluice_apply_txn {
	uint64_t txseq;
	bool grouped;        /* begin: the target transaction may take more source transactions
				(join) and writes their net change per key */
	int64_t commit_us;   /* origin commit time, µs since the Unix epoch */
	const char *node;    /* origin node name */
	uint32_t node_index; /* the same name, interned: sluice_apply_node() */
} sluice_apply_txn;

/* The engine's side of one apply run. */
typedef struct sluice_apply_ctx sluice_apply_ctx;

const sluice_apply_options *sluice_apply_ctx_options(const sluice_apply_ctx *ctx);
sluice_apply_stats *sluice_apply_ctx_stats(sluice_apply_ctx *ctx);
/* sluice_apply_rel_at: relation ri; valid until the engine learns another relation. */
const sluice_apply_rel *sluice_apply_rel_at(const sluice_apply_ctx *ctx, uint32_t ri);
/* sluice_apply_node: an interned origin node name; valid for the whole run. */
const char *sluice_apply_node(const sluice_apply_ctx *ctx, uint32_t node_index);
/* sluice_apply_committed: the commit of txseq (and of every transaction before it) is confirmed. */
void sluice_apply_committed(sluice_apply_ctx *ctx, uint64_t txseq);
/* sluice_apply_group_committed: the commit of a group, transactions first..last, is confirmed. */
void sluice_apply_group_committed(sluice_apply_ctx *ctx, uint64_t first, uint64_t last);
/*
 * sluice_apply_part_committed: a part of the open transaction is committed
 * (a target that applies a large transaction in parts): what was counted so
 * far is kept by later rollbacks; the transaction counts at its commit.
 */
void sluice_apply_part_committed(sluice_apply_ctx *ctx);

typedef struct sluice_target sluice_target;

typedef struct sluice_target_ops {
	const char *kind;      /* "PostgreSQL", for messages */
	const char *code_name; /* what failure.code is called in messages: "SQLSTATE" */
	/* open connects and sets up, and reads the progress: the last txseq applied (0: none) */
	sluice_target_status (*open)(sluice_target *t, uint64_t *resume);
	/* progress reads the last txseq applied again (after a rollback, between transactions) */
	sluice_target_status (*progress)(sluice_target *t, uint64_t *resume);
	/* progress_name names what holds the progress, for messages (a replication origin) */
	const char *(*progress_name)(const sluice_target *t);
	/* relation takes the stream's (new) description of relation ri */
	void (*relation)(sluice_target *t, uint32_t ri, const Sluice__V1__Relation *desc);
	/* check compares relation ri with the target before its first change is written */
	sluice_target_status (*check)(sluice_target *t, uint32_t ri,
				      const Sluice__V1__Relation *desc);
	sluice_target_status (*begin)(sluice_target *t, const sluice_apply_txn *txn);
	/*
	 * join: the next source transaction goes into the open grouped target
	 * transaction (NULL: the target does not group). Its commit() commits
	 * the group, with the progress of the last transaction joined. When a
	 * grouped transaction fails other than transiently (a row not where the
	 * source had it, ...), the engine applies its transactions again one at
	 * a time (not grouped).
	 */
	sluice_target_status (*join)(sluice_target *t, const sluice_apply_txn *txn);
	/* change writes an insert, update or delete (a snapshot row is an insert) of relation ri */
	sluice_target_status (*change)(sluice_target *t, uint32_t ri, char op,
				       const sluice_record *rec);
	/* truncate empties relations ris (each included and checked) */
	sluice_target_status (*truncate)(sluice_target *t, const uint32_t *ris, size_t n,
					 bool restart_identity, bool cascade);
	/*
	 * namespace_change applies a MongoDB drop, rename or dropDatabase (NULL:
	 * the target's streams have none; the record is skipped)
	 */
	sluice_target_status (*namespace_change)(sluice_target *t,
						 const Sluice__V1__NamespaceChange *nc);
	/* commit ends the transaction with its progress (a dry run commits nothing) */
	sluice_target_status (*commit)(sluice_target *t);
	/* flush waits for everything queued, between transactions */
	sluice_target_status (*flush)(sluice_target *t);
	/*
	 * rollback abandons the open transaction (and, after a failure, whatever
	 * was queued after it) and what it counted since the last commit.
	 */
	sluice_target_status (*rollback)(sluice_target *t, bool after_failure);
	/* close drops the connection and everything tied to it; open may follow */
	void (*close)(sluice_target *t);
	void (*free)(sluice_target *t);
} sluice_target_ops;

/* Every target's struct starts with this. */
struct sluice_target {
	const sluice_target_ops *ops;
	sluice_target_failure failure;
	bool groups; /* set by open: transactions begun grouped are written as net changes */
};

/*
 * sluice_apply_run_target is sluice_apply_run with the target made by make
 * (which returns NULL after logging why it cannot): the engine's unit tests
 * drive it with a scripted target. The engine frees the target.
 */
bool sluice_apply_run_target(sluice_store *store, const sluice_trust *trust,
			     const sluice_apply_options *o, sluice_apply_stats *stats,
			     sluice_target *(*make)(sluice_apply_ctx *ctx, void *arg), void *arg);

#endif
