/* The conflict decision: a pure function of the strategy, the change and the target's row. */
#include "conflict.h"

#include <string.h>

static const char *const conflict_names[SLUICE_CONFLICT_COUNT] = {
	"insert_exists",  "insert_deleted",     "update_newer_local", "update_missing",
	"update_deleted", "delete_newer_local", "delete_missing",
};

const char *
sluice_conflict_name(sluice_conflict c)
{
	return c >= 0 && c < SLUICE_CONFLICT_COUNT ? conflict_names[c] : "unknown";
}

const char *
sluice_strategy_name(sluice_strategy s)
{
	switch (s) {
	case SLUICE_STRATEGY_REPLACE:
		return "replace";
	case SLUICE_STRATEGY_APPEND:
		return "append";
	case SLUICE_STRATEGY_TIMESTAMP:
		return "timestamp";
	}
	return "unknown";
}

bool
sluice_version_newer(const sluice_version *a, const sluice_version *b)
{
	if (!a->known || !b->known)
		return a->known && !b->known;
	if (a->time_us != b->time_us)
		return a->time_us > b->time_us;
	return strcmp(a->node ? a->node : "", b->node ? b->node : "") > 0;
}

static sluice_decision
decided(sluice_write w, sluice_conflict c, const char *resolution)
{
	return (sluice_decision){.write = w, .conflict = c, .resolution = resolution};
}

/* A change of a row that is not there: inserted when the change has the whole row. */
static sluice_decision
update_missing(const sluice_row_state *st)
{
	return st->complete
		       ? decided(SLUICE_WRITE_INSERT, SLUICE_CONFLICT_UPDATE_MISSING, "inserted")
		       : decided(SLUICE_WRITE_NONE, SLUICE_CONFLICT_UPDATE_MISSING, "skipped");
}

static sluice_decision
decide_replace(char op, const sluice_row_state *st)
{
	switch (op) {
	case 'I':
		return st->present ? decided(SLUICE_WRITE_UPDATE, SLUICE_CONFLICT_INSERT_EXISTS,
					     "remote")
				   : decided(SLUICE_WRITE_INSERT, SLUICE_CONFLICT_NONE, NULL);
	case 'U':
		return st->present ? decided(SLUICE_WRITE_UPDATE, SLUICE_CONFLICT_NONE, NULL)
				   : update_missing(st);
	default:
		return st->present ? decided(SLUICE_WRITE_DELETE, SLUICE_CONFLICT_NONE, NULL)
				   : decided(SLUICE_WRITE_NONE, SLUICE_CONFLICT_DELETE_MISSING,
					     "skipped");
	}
}

static sluice_decision
decide_append(char op, const sluice_row_state *st)
{
	switch (op) {
	case 'I':
		return st->present ? decided(SLUICE_WRITE_NONE, SLUICE_CONFLICT_INSERT_EXISTS,
					     "kept_local")
				   : decided(SLUICE_WRITE_INSERT, SLUICE_CONFLICT_NONE, NULL);
	case 'U':
		/* never overwritten: the row is kept as it is */
		return st->present ? decided(SLUICE_WRITE_NONE, SLUICE_CONFLICT_NONE, NULL)
				   : update_missing(st);
	default:
		/* never deleted */
		return st->present ? decided(SLUICE_WRITE_NONE, SLUICE_CONFLICT_NONE, NULL)
				   : decided(SLUICE_WRITE_NONE, SLUICE_CONFLICT_DELETE_MISSING,
					     "skipped");
	}
}

static sluice_decision
decide_timestamp(char op, const sluice_row_state *st)
{
	switch (op) {
	case 'I':
		if (!st->present)
			return st->tombstone_newer
				       ? decided(SLUICE_WRITE_NONE, SLUICE_CONFLICT_INSERT_DELETED,
						 "skipped")
				       : decided(SLUICE_WRITE_INSERT, SLUICE_CONFLICT_NONE, NULL);
		return st->remote_newer ? decided(SLUICE_WRITE_UPDATE,
						  SLUICE_CONFLICT_INSERT_EXISTS, "remote")
					: decided(SLUICE_WRITE_NONE, SLUICE_CONFLICT_INSERT_EXISTS,
						  "kept_local");
	case 'U':
		if (st->present)
			return st->remote_newer
				       ? decided(SLUICE_WRITE_UPDATE, SLUICE_CONFLICT_NONE, NULL)
				       : decided(SLUICE_WRITE_NONE,
						 SLUICE_CONFLICT_UPDATE_NEWER_LOCAL, "kept_local");
		if (st->tombstone_newer)
			return decided(SLUICE_WRITE_NONE, SLUICE_CONFLICT_UPDATE_DELETED,
				       "skipped");
		return update_missing(st);
	default:
		/* a losing delete still keeps its tombstone: three nodes converge */
		if (st->present)
			return st->remote_newer
				       ? decided(SLUICE_WRITE_DELETE, SLUICE_CONFLICT_NONE, NULL)
				       : decided(SLUICE_WRITE_TOMBSTONE,
						 SLUICE_CONFLICT_DELETE_NEWER_LOCAL, "kept_local");
		return decided(SLUICE_WRITE_TOMBSTONE, SLUICE_CONFLICT_DELETE_MISSING, "tombstone");
	}
}

sluice_decision
sluice_conflict_decide(sluice_strategy s, char op, const sluice_row_state *st)
{
	switch (s) {
	case SLUICE_STRATEGY_APPEND:
		return decide_append(op, st);
	case SLUICE_STRATEGY_TIMESTAMP:
		return decide_timestamp(op, st);
	default:
		return decide_replace(op, st);
	}
}
