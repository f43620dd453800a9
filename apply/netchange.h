/*
 * Net change per key: the row changes of consecutive source transactions
 * folded into what they leave behind, one entry per (relation, key). Grouped
 * apply (engine.c, pgtarget.c) writes the entries as multi-row statements.
 *
 * An entry remembers what the first change of its chain expects of the
 * target before the group (an insert expects no row, an update or delete a
 * row) and what the last one leaves (a row with an image, or none): the
 * target checks the expectation with every statement's row count, and a
 * group whose rows are not where the source had them is applied again one
 * transaction at a time. Entries only hold text values; relations are the
 * caller's indexes with their column count and key flags.
 *
 *   first change  last change leaves   statement
 *   insert        a row                INSERT (complete image)
 *   insert        no row               check that no row exists
 *   update/delete a row                UPDATE of the known columns
 *   update/delete no row               DELETE
 */
#ifndef SLUICE_APPLY_NETCHANGE_H
#define SLUICE_APPLY_NETCHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum sluice_net_kind {
	SLUICE_NET_DELETE = 0, /* a row existed, none is left */
	SLUICE_NET_ABSENT,     /* no row existed, none is left: check that none does */
	SLUICE_NET_UPDATE,     /* a row existed and is left with the image's known columns */
	SLUICE_NET_INSERT,     /* no row existed, one is left with the (complete) image */
} sluice_net_kind;

typedef struct sluice_net_entry {
	uint32_t rel;
	uint32_t seq;  /* order of first appearance */
	char *key;     /* owned: the key values as a JSON array of strings */
	uint64_t hash; /* of rel and key */
	bool existed;  /* the first change expects a row before the group */
	bool exists;   /* a row is left after the last change */
	int ncols;
	char **v;      /* owned: values, NULL for SQL NULL (or not known) */
	bool *present; /* which values are known (an unchanged TOAST value is not) */
	struct sluice_net_entry *next; /* in its hash bucket */
} sluice_net_entry;

typedef struct sluice_net {
	sluice_net_entry **entries; /* owned, in order of first appearance */
	size_t n, cap;
	sluice_net_entry **buckets; /* owned */
	size_t nbuckets;
	size_t bytes; /* of values and keys held */
} sluice_net;

/* A change as the caller has it: values per column (NULL: SQL NULL), which are known. */
typedef struct sluice_net_row {
	const char *const *v;
	const bool *present;
	bool complete; /* every column known */
} sluice_net_row;

void sluice_net_init(sluice_net *n);
/* sluice_net_reset forgets every entry (and keeps the memory of the tables). */
void sluice_net_reset(sluice_net *n);
void sluice_net_free(sluice_net *n);

/*
 * sluice_net_add folds a change ('I', 'U', 'D') of relation rel (ncols
 * columns, key[] marking the key) into the net state: newr for an insert or
 * update, oldr for a delete, and for an update that changes the key (NULL
 * otherwise). Returns false, changing nothing, for a change that cannot be
 * folded: the caller writes out the entries and applies it on its own (an
 * insert of a row the chain has, an update or delete of a row it deleted, a
 * key-changing update with an unknown value).
 */
bool sluice_net_add(sluice_net *n, uint32_t rel, int ncols, const bool *key, char op,
		    const sluice_net_row *newr, const sluice_net_row *oldr);

/*
 * sluice_net_key_json renders the values v[i] of the key columns (key[i]) as
 * a JSON array of strings, null for SQL NULL (malloc'd): an entry's key, and
 * the key a conflict log row names.
 */
char *sluice_net_key_json(int ncols, const bool *key, const char *const *v);

/* sluice_net_kind_of tells which statement an entry needs. */
sluice_net_kind sluice_net_kind_of(const sluice_net_entry *e);

/*
 * sluice_net_sorted returns the entries ordered by relation, then kind
 * (deletes, checks, updates, inserts), then known columns, then first
 * appearance: the order the statements are written in. Owned by n, valid
 * until the next add or reset.
 */
sluice_net_entry **sluice_net_sorted(sluice_net *n);

#endif
