/* PostgreSQL capture: pgoutput over a logical replication connection into a signed stream. */
#include "pgcapture.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "buf.h"
#include "log.h"
#include "pgconn.h"
#include "pgoutput.h"
#include "pgsnapshot.h"
#include "records.h"

typedef struct capture_type {
	uint32_t oid;
	int32_t typmod;
	char *name; /* owned */
} capture_type;

/* Result of one attempt to (re)start streaming. */
typedef enum capture_start {
	CAPTURE_START_OK,
	CAPTURE_START_RETRY, /* transient: connection lost or refused */
	CAPTURE_START_BUSY,  /* the slot is still held, e.g. by the walsender of a killed capture */
	CAPTURE_START_FATAL, /* configuration problem: stop */
} capture_start;

typedef struct capture {
	const sluice_capture_options *o;
	sluice_store *store;   /* borrowed */
	const sluice_key *key; /* borrowed */
	sluice_writer *w;      /* owned */
	PGconn *repl;          /* owned: replication connection */
	PGconn *cat;           /* owned: catalog connection (type names, checks) */
	sluice_pgo_decoder *dec;
	capture_type *types; /* owned cache of format_type() results */
	size_t ntypes;
	uint32_t *local_rels; /* owned: relation ids in SLUICE_PG_LOCAL_SCHEMA */
	size_t nlocal_rels;
	/* owned: row images of one change, reused from change to change */
	Sluice__V1__ValueKind *kinds;
	ProtobufCBinaryData *values;
	size_t row_cap;
	sluice_capture_stats *stats;

	/* the source transaction being received */
	bool in_txn;
	bool skip; /* filtered out: replication origin, or already in the stream */
	bool skip_is_dup;
	bool begin_written; /* its Begin record is in the writer */
	uint64_t final_lsn;
	uint32_t xid;
	int64_t commit_time; /* µs since the Unix epoch */
	char origin[256];
	uint64_t origin_lsn;
	uint32_t changes;

	/* positions */
	uint64_t resume_lsn; /* transactions with final_lsn below are already in the stream */
	uint64_t received_lsn;
	uint64_t acked_lsn;   /* flush position last reported to the server */
	uint64_t ackable_lsn; /* flush position that may be reported */
	uint64_t skipped_end; /* end of the last skipped transaction, ackable once all before is
				 durable */
	uint64_t target_lsn;  /* --exit-when-caught-up: stop at transactions committed from here */
	bool done;
	bool fatal;         /* the stream cannot be written: do not reconnect */
	char busy_why[256]; /* who holds the slot when a start found it busy */

	int64_t last_status_ms, last_flush_ms, last_heartbeat_ms, last_log_ms;
	uint64_t unflushed_since_ms; /* when the oldest not-yet-durable commit arrived, 0: none */
} capture;

static int64_t
capture_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
sluice_capture_default_options(sluice_capture_options *o)
{
	memset(o, 0, sizeof(*o));
	o->min_flush_gap_ms = 5;
	o->max_flush_delay_ms = 200;
	o->status_interval_ms = 10000;
	o->heartbeat_interval_ms = 10000;
	o->reconnect_max_s = 30;
	o->writer = sluice_writer_default_options();
}

/* capture_type_name returns format_type(oid, typmod) from the cache or the catalog. */
static const char *
capture_type_name(capture *c, uint32_t oid, int32_t typmod)
{
	for (size_t i = 0; i < c->ntypes; i++)
		if (c->types[i].oid == oid && c->types[i].typmod == typmod)
			return c->types[i].name;
	char soid[16], smod[16];
	snprintf(soid, sizeof(soid), "%" PRIu32, oid);
	snprintf(smod, sizeof(smod), "%" PRId32, typmod);
	const char *params[2] = {soid, smod};
	PGresult *res = sluice_pg_query(c->cat, "SELECT format_type($1::oid, $2::int)", 2, params);
	char *name = strdup(res && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "");
	PQclear(res);
	if (name == NULL)
		abort();
	capture_type *p = realloc(c->types, (c->ntypes + 1) * sizeof(*p));
	if (p == NULL)
		abort();
	c->types = p;
	c->types[c->ntypes].oid = oid;
	c->types[c->ntypes].typmod = typmod;
	c->types[c->ntypes].name = name;
	return c->types[c->ntypes++].name;
}

/* capture_forget_type drops cached names of a type the server just described again. */
static void
capture_forget_type(capture *c, uint32_t oid)
{
	for (size_t i = 0; i < c->ntypes;) {
		if (c->types[i].oid == oid) {
			free(c->types[i].name);
			c->types[i] = c->types[--c->ntypes];
		} else
			i++;
	}
}

/* capture_send_status reports written/flushed positions to the server. */
static bool
capture_send_status(capture *c, bool reply_requested)
{
	uint8_t msg[34];
	sluice_pgo_encode_status(msg, c->received_lsn, c->ackable_lsn, c->ackable_lsn,
				 sluice_pg_now(), reply_requested);
	if (PQputCopyData(c->repl, (const char *)msg, sizeof(msg)) <= 0 || PQflush(c->repl) != 0) {
		sluice_log_warn("could not send a status update: %s",
				sluice_pg_error_line(c->repl));
		return false;
	}
	c->acked_lsn = c->ackable_lsn;
	c->stats->acked_lsn = c->acked_lsn;
	c->last_status_ms = capture_now_ms();
	return true;
}

/* capture_flush makes everything written durable and advances what may be acknowledged. */
static bool
capture_flush(capture *c)
{
	if (!sluice_writer_flush(c->w)) {
		c->fatal = true;
		return false;
	}
	uint64_t durable = sluice_writer_durable_end_lsn(c->w);
	if (durable > c->ackable_lsn)
		c->ackable_lsn = durable;
	/* Skipped transactions count once nothing before them is still pending. */
	if (c->skipped_end > c->ackable_lsn && !c->in_txn)
		c->ackable_lsn = c->skipped_end;
	c->last_flush_ms = capture_now_ms();
	c->unflushed_since_ms = 0;
	return true;
}

static bool
capture_has_unflushed(const capture *c)
{
	return sluice_writer_last_txseq(c->w) > sluice_writer_durable_txseq(c->w) ||
	       c->skipped_end > c->ackable_lsn;
}

/* capture_write_begin writes the Begin record of the current transaction, once. */
static bool
capture_write_begin(capture *c)
{
	if (c->begin_written)
		return true;
	Sluice__V1__Begin b = SLUICE__V1__BEGIN__INIT;
	b.commit_time_us = c->commit_time;
	b.has_source_lsn = true;
	b.source_lsn = c->final_lsn;
	b.has_source_xid = true;
	b.source_xid = c->xid;
	b.origin_node = (char *)(c->origin[0] ? c->origin : c->o->node);
	if (c->origin[0]) {
		b.has_origin_lsn = true;
		b.origin_lsn = c->origin_lsn;
	}
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_BEGIN;
	rec.begin = &b;
	if (!sluice_writer_append(c->w, &rec))
		return false;
	c->begin_written = true;
	if (c->stats->first_txseq == 0)
		c->stats->first_txseq = b.txseq;
	return true;
}

/* capture_row converts pgoutput tuple data into a Row (values point into the message). */
static void
capture_row(const sluice_pgo_tuple *t, Sluice__V1__Row *row, Sluice__V1__ValueKind *kinds,
	    ProtobufCBinaryData *values)
{
	sluice__v1__row__init(row);
	for (uint16_t i = 0; i < t->ncols; i++) {
		const sluice_pgo_value *v = &t->cols[i];
		values[i].data = (uint8_t *)v->data;
		values[i].len = v->len;
		switch (v->kind) {
		case 'n':
			kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_NULL;
			break;
		case 'u':
			kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_UNCHANGED_TOAST;
			break;
		case 'b':
			kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_BINARY;
			break;
		default:
			kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_TEXT;
		}
	}
	row->n_kinds = row->n_values = t->ncols;
	row->kinds = kinds;
	row->values = values;
}

static bool
capture_is_local_rel(const capture *c, uint32_t relid)
{
	for (size_t i = 0; i < c->nlocal_rels; i++)
		if (c->local_rels[i] == relid)
			return true;
	return false;
}

/* capture_relation turns a Relation message into a Relation record (kept by the writer). */
static bool
capture_relation(capture *c, const sluice_pgo_msg *m)
{
	if (strcmp(m->relation.nspname, SLUICE_PG_LOCAL_SCHEMA) == 0) {
		if (!capture_is_local_rel(c, m->relation.relid)) {
			uint32_t *p = realloc(c->local_rels, (c->nlocal_rels + 1) * sizeof(*p));
			if (p == NULL)
				abort();
			c->local_rels = p;
			c->local_rels[c->nlocal_rels++] = m->relation.relid;
		}
		return true;
	}
	uint16_t n = m->relation.ncols;
	Sluice__V1__Column *cols = calloc((size_t)n + 1, sizeof(*cols));
	Sluice__V1__Column **colp = calloc((size_t)n + 1, sizeof(*colp));
	if (cols == NULL || colp == NULL)
		abort();
	for (uint16_t i = 0; i < n; i++) {
		const sluice_pgo_column *pc = &m->relation.cols[i];
		sluice__v1__column__init(&cols[i]);
		cols[i].name = (char *)pc->name;
		cols[i].has_type_oid = true;
		cols[i].type_oid = pc->type_oid;
		cols[i].has_type_modifier = true;
		cols[i].type_modifier = pc->type_modifier;
		cols[i].type_name = (char *)capture_type_name(c, pc->type_oid, pc->type_modifier);
		cols[i].has_key = true;
		cols[i].key = (pc->flags & 1) != 0;
		colp[i] = &cols[i];
	}
	Sluice__V1__Relation r = SLUICE__V1__RELATION__INIT;
	r.id = m->relation.relid;
	r.schema = (char *)(m->relation.nspname[0] ? m->relation.nspname : "pg_catalog");
	r.name = (char *)m->relation.relname;
	r.has_replica_identity = true;
	r.replica_identity = m->relation.replident;
	r.n_columns = n;
	r.columns = colp;
	r.has_source = true;
	r.source = SLUICE__V1__SOURCE_KIND__SOURCE_POSTGRES;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_RELATION;
	rec.relation = &r;
	bool ok = sluice_writer_append(c->w, &rec);
	free(colp);
	free(cols);
	return ok;
}

/* capture_change writes an insert, update or delete. */
static bool
capture_change(capture *c, const sluice_pgo_msg *m)
{
	if (c->skip || capture_is_local_rel(c, m->change.relid))
		return true;
	if (!capture_write_begin(c))
		return false;
	size_t n = m->change.new_tuple.ncols > m->change.old_tuple.ncols
			   ? m->change.new_tuple.ncols
			   : m->change.old_tuple.ncols;
	if (2 * n + 1 > c->row_cap) {
		c->row_cap = 2 * n + 1;
		free(c->kinds);
		free(c->values);
		c->kinds = malloc(c->row_cap * sizeof(*c->kinds));
		c->values = malloc(c->row_cap * sizeof(*c->values));
		if (c->kinds == NULL || c->values == NULL)
			abort();
	}
	Sluice__V1__ValueKind *kinds = c->kinds;
	ProtobufCBinaryData *values = c->values;
	Sluice__V1__Row oldrow, newrow;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	Sluice__V1__Insert ins = SLUICE__V1__INSERT__INIT;
	Sluice__V1__Update upd = SLUICE__V1__UPDATE__INIT;
	Sluice__V1__Delete del = SLUICE__V1__DELETE__INIT;
	Sluice__V1__OldKind ok_kind = m->change.old_kind == 'K'   ? SLUICE__V1__OLD_KIND__OLD_KEY
				      : m->change.old_kind == 'O' ? SLUICE__V1__OLD_KIND__OLD_FULL
								  : SLUICE__V1__OLD_KIND__OLD_NONE;
	if (m->change.old_kind)
		capture_row(&m->change.old_tuple, &oldrow, kinds + n, values + n);
	if (m->type != 'D')
		capture_row(&m->change.new_tuple, &newrow, kinds, values);
	switch (m->type) {
	case 'I':
		ins.relation_id = m->change.relid;
		ins.new_row = &newrow;
		rec.body_case = SLUICE__V1__RECORD__BODY_INSERT;
		rec.insert = &ins;
		break;
	case 'U':
		upd.relation_id = m->change.relid;
		if (m->change.old_kind) {
			upd.has_old_kind = true;
			upd.old_kind = ok_kind;
			upd.old_row = &oldrow;
		}
		upd.new_row = &newrow;
		rec.body_case = SLUICE__V1__RECORD__BODY_UPDATE;
		rec.update = &upd;
		break;
	default:
		del.relation_id = m->change.relid;
		del.has_old_kind = true;
		del.old_kind = ok_kind;
		del.old_row = &oldrow;
		rec.body_case = SLUICE__V1__RECORD__BODY_DELETE;
		rec.delete_ = &del;
	}
	bool ok = sluice_writer_append(c->w, &rec);
	c->changes++;
	c->stats->changes++;
	return ok;
}

static bool
capture_truncate(capture *c, const sluice_pgo_msg *m)
{
	if (c->skip)
		return true;
	uint32_t *ids = malloc(((size_t)m->truncate.nrels + 1) * sizeof(*ids));
	if (ids == NULL)
		abort();
	size_t n = 0;
	for (uint32_t i = 0; i < m->truncate.nrels; i++) {
		uint32_t id = sluice_pgo_truncate_relid(m, i);
		if (!capture_is_local_rel(c, id))
			ids[n++] = id;
	}
	if (n == 0) {
		free(ids);
		return true;
	}
	if (!capture_write_begin(c)) {
		free(ids);
		return false;
	}
	Sluice__V1__Truncate t = SLUICE__V1__TRUNCATE__INIT;
	t.n_relation_ids = n;
	t.relation_ids = ids;
	t.has_cascade = true;
	t.cascade = (m->truncate.options & 1) != 0;
	t.has_restart_identity = true;
	t.restart_identity = (m->truncate.options & 2) != 0;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_TRUNCATE;
	rec.truncate = &t;
	bool ok = sluice_writer_append(c->w, &rec);
	free(ids);
	c->changes++;
	c->stats->changes++;
	return ok;
}

static bool
capture_message(capture *c, const sluice_pgo_msg *m)
{
	bool transactional = (m->message.flags & 1) != 0;
	if (!c->o->messages || (transactional && c->skip))
		return true;
	if (transactional && !capture_write_begin(c))
		return false;
	if (!transactional && c->in_txn)
		return true; /* cannot be placed inside a transaction record range */
	Sluice__V1__LogicalMessage lm = SLUICE__V1__LOGICAL_MESSAGE__INIT;
	lm.has_transactional = true;
	lm.transactional = transactional;
	lm.prefix = (char *)m->message.prefix;
	lm.has_content = true;
	lm.content.data = (uint8_t *)m->message.content;
	lm.content.len = m->message.len;
	lm.has_lsn = true;
	lm.lsn = m->message.lsn;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_MESSAGE;
	rec.message = &lm;
	return sluice_writer_append(c->w, &rec);
}

/* capture_begin starts a source transaction; false with c->done when past the stop point. */
static bool
capture_begin(capture *c, const sluice_pgo_msg *m)
{
	if (c->in_txn) {
		sluice_log_error("protocol error: Begin of %" PRIu32 " inside transaction %" PRIu32,
				 m->begin.xid, c->xid);
		return false;
	}
	uint64_t lsn = m->begin.final_lsn;
	if ((c->o->until_lsn && lsn > c->o->until_lsn) || (c->target_lsn && lsn >= c->target_lsn)) {
		c->done = true;
		return true;
	}
	c->in_txn = true;
	c->final_lsn = lsn;
	c->xid = m->begin.xid;
	c->commit_time = m->begin.commit_time + SLUICE_PGO_EPOCH_OFFSET_US;
	c->origin[0] = '\0';
	c->origin_lsn = 0;
	c->changes = 0;
	c->begin_written = false;
	c->skip_is_dup = lsn < c->resume_lsn;
	c->skip = c->skip_is_dup;
	return true;
}

static bool
capture_commit(capture *c, const sluice_pgo_msg *m)
{
	if (!c->in_txn) {
		sluice_log_error("protocol error: Commit without a transaction");
		return false;
	}
	c->in_txn = false;
	if (c->skip) {
		if (c->skip_is_dup)
			c->stats->skipped_duplicate++;
		else
			c->stats->skipped_origin++;
		c->skipped_end = m->commit.end_lsn;
		if (c->unflushed_since_ms == 0)
			c->unflushed_since_ms = (uint64_t)capture_now_ms();
		return true;
	}
	/*
	 * A transaction left without changes (it only touched sluice's own tables)
	 * takes no txseq: it is acknowledged like a skipped one.
	 */
	if (!c->begin_written) {
		c->skipped_end = m->commit.end_lsn;
		if (c->unflushed_since_ms == 0)
			c->unflushed_since_ms = (uint64_t)capture_now_ms();
		return true;
	}
	Sluice__V1__Commit cm = SLUICE__V1__COMMIT__INIT;
	cm.commit_time_us = c->commit_time;
	cm.has_end_lsn = true;
	cm.end_lsn = m->commit.end_lsn;
	cm.has_change_count = true;
	cm.change_count = c->changes;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_COMMIT;
	rec.commit = &cm;
	if (!sluice_writer_append(c->w, &rec))
		return false;
	c->stats->transactions++;
	c->stats->last_txseq = cm.txseq;
	if (c->unflushed_since_ms == 0)
		c->unflushed_since_ms = (uint64_t)capture_now_ms();
	return true;
}

/* capture_handle decodes and applies one XLogData payload. */
static bool
capture_handle(capture *c, const uint8_t *data, size_t len)
{
	sluice_pgo_msg m;
	sluice_pgo_status st = sluice_pgo_decode(c->dec, data, len, &m);
	if (st != SLUICE_PGO_OK) {
		sluice_log_error("could not decode a pgoutput message of type '%c' (%zu bytes): %s",
				 len ? (char)data[0] : '?', len, sluice_pgo_strerror(st));
		return false;
	}
	switch (m.type) {
	case 'B':
		return capture_begin(c, &m);
	case 'C':
		return capture_commit(c, &m);
	case 'O':
		snprintf(c->origin, sizeof(c->origin), "%s", m.origin.name);
		c->origin_lsn = m.origin.lsn;
		if (!c->o->forward_origins && !c->begin_written)
			c->skip = true;
		return true;
	case 'R':
		return capture_relation(c, &m);
	case 'Y':
		capture_forget_type(c, m.typedesc.oid);
		return true;
	case 'I':
	case 'U':
	case 'D':
		return capture_change(c, &m);
	case 'T':
		return capture_truncate(c, &m);
	case 'M':
		return capture_message(c, &m);
	default:
		return true;
	}
}

/* capture_quote_ident returns a double-quoted identifier in a new buffer. */
static char *
capture_ident(PGconn *conn, const char *s)
{
	char *q = PQescapeIdentifier(conn, s, strlen(s));
	if (q == NULL)
		abort();
	return q;
}

/*
 * capture_check_identities refuses to create a FOR ALL TABLES publication
 * while tables without a replica identity exist: from that moment
 * PostgreSQL refuses every UPDATE and DELETE on them, which breaks the
 * source's application. It names them and the ways out; with
 * --allow-no-identity it only warns.
 */
static bool
capture_check_identities(capture *c)
{
	PGresult *res = sluice_pg_query(
		c->cat,
		"SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c"
		"  JOIN pg_namespace n ON n.oid = c.relnamespace"
		" WHERE c.relkind = 'r' AND c.relpersistence = 'p'"
		"   AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
		"   AND n.nspname NOT LIKE 'pg\\_%'"
		"   AND (c.relreplident = 'n'"
		"     OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i"
		"           WHERE i.indrelid = c.oid AND i.indisprimary))"
		"     OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i"
		"           WHERE i.indrelid = c.oid AND i.indisreplident)))"
		" ORDER BY 1",
		0, NULL);
	if (res == NULL)
		return false;
	int n = PQntuples(res);
	if (n == 0) {
		PQclear(res);
		return true;
	}
	sluice_buf list = {0};
	for (int i = 0; i < n && i < 20; i++)
		sluice_buf_printf(&list, "%s%s", i ? ", " : "", PQgetvalue(res, i, 0));
	if (n > 20)
		sluice_buf_printf(&list, " and %d more", n - 20);
	sluice_buf_append_byte(&list, '\0');
	if (c->o->allow_no_identity)
		sluice_log_warn("creating publication \"%s\" for all tables although %d tables "
				"have no replica identity (--allow-no-identity): UPDATE and DELETE "
				"on them now fail on the source: %s",
				c->o->publication, n, (const char *)list.data);
	else
		sluice_log_error(
			"refusing to create publication \"%s\" for all tables: %d tables have no "
			"replica identity (no primary key, no REPLICA IDENTITY), and PostgreSQL "
			"refuses every UPDATE and DELETE on a published table without one, which "
			"would break the application: %s. Give each an identity (ALTER TABLE ... "
			"REPLICA IDENTITY FULL, or a primary key), or create the publication "
			"yourself for the tables that have one (CREATE PUBLICATION %s FOR TABLE "
			"...) and run without --create for it, or pass --allow-no-identity",
			c->o->publication, n, (const char *)list.data, c->o->publication);
	sluice_buf_free(&list);
	PQclear(res);
	return c->o->allow_no_identity;
}

/* capture_check_source verifies wal_level, slot and publication; creates them with --create. */
static capture_start
capture_prepare(capture *c, bool *take_snapshot)
{
	const sluice_capture_options *o = c->o;
	*take_snapshot = false;
	PGresult *res = sluice_pg_query(c->cat,
					"SELECT current_setting('wal_level'), "
					"current_database(), "
					"current_setting('server_version_num')::int",
					0, NULL);
	if (res == NULL)
		return CAPTURE_START_RETRY;
	if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0) {
		sluice_log_error("wal_level is \"%s\" on the source: logical decoding needs "
				 "wal_level = logical (ALTER SYSTEM SET wal_level = logical; then "
				 "restart PostgreSQL)",
				 PQgetvalue(res, 0, 0));
		PQclear(res);
		return CAPTURE_START_FATAL;
	}
	char dbname[256];
	snprintf(dbname, sizeof(dbname), "%s", PQgetvalue(res, 0, 1));
	long version = strtol(PQgetvalue(res, 0, 2), NULL, 10);
	PQclear(res);
	if (o->snapshot && version < 150000) {
		sluice_log_error("--snapshot needs PostgreSQL 15 or later (the source is %ld)",
				 version);
		return CAPTURE_START_FATAL;
	}

	const char *pp[1] = {o->publication};
	res = sluice_pg_query(c->cat, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, pp);
	if (res == NULL)
		return CAPTURE_START_RETRY;
	bool have_pub = PQntuples(res) == 1;
	PQclear(res);
	if (!have_pub) {
		if (!o->create) {
			sluice_log_error(
				"publication \"%s\" does not exist in database \"%s\": run "
				"with --create, or CREATE PUBLICATION %s FOR ALL TABLES",
				o->publication, dbname, o->publication);
			return CAPTURE_START_FATAL;
		}
		if (!capture_check_identities(c))
			return CAPTURE_START_FATAL;
		char *q = capture_ident(c->cat, o->publication);
		sluice_buf sql = {0};
		sluice_buf_printf(&sql, "CREATE PUBLICATION %s FOR ALL TABLES", q);
		sluice_buf_append_byte(&sql, '\0');
		PQfreemem(q);
		bool ok = sluice_pg_exec(c->cat, (const char *)sql.data);
		sluice_buf_free(&sql);
		if (!ok)
			return CAPTURE_START_FATAL;
		sluice_log_info("created publication \"%s\" for all tables", o->publication);
	}

	const char *sp[1] = {o->slot};
	res = sluice_pg_query(c->cat,
			      "SELECT plugin, database, active_pid, confirmed_flush_lsn "
			      "FROM pg_replication_slots WHERE slot_name = $1",
			      1, sp);
	if (res == NULL)
		return CAPTURE_START_RETRY;
	bool have_slot = PQntuples(res) == 1;
	bool stream_empty = sluice_writer_last_txseq(c->w) == 0;
	if (have_slot) {
		const char *plugin = PQgetvalue(res, 0, 0);
		const char *db = PQgetvalue(res, 0, 1);
		if (PQgetisnull(res, 0, 0) || strcmp(plugin, "pgoutput") != 0) {
			sluice_log_error("replication slot \"%s\" is not a logical slot of plugin "
					 "pgoutput",
					 o->slot);
			PQclear(res);
			return CAPTURE_START_FATAL;
		}
		if (strcmp(db, dbname) != 0) {
			sluice_log_error(
				"replication slot \"%s\" belongs to database \"%s\", not \"%s\"",
				o->slot, db, dbname);
			PQclear(res);
			return CAPTURE_START_FATAL;
		}
		if (!PQgetisnull(res, 0, 2)) {
			snprintf(c->busy_why, sizeof(c->busy_why), "process %s",
				 PQgetvalue(res, 0, 2));
			PQclear(res);
			return CAPTURE_START_BUSY;
		}
	}
	PQclear(res);

	if (have_slot && o->snapshot && o->create && stream_empty) {
		/* Nothing was captured through it: take the snapshot with a fresh slot. */
		res = sluice_pg_query(c->cat, "SELECT pg_drop_replication_slot($1)", 1, sp);
		if (res == NULL)
			return CAPTURE_START_FATAL;
		PQclear(res);
		sluice_log_info("dropped replication slot \"%s\": the stream is empty, so the "
				"snapshot starts over with a new slot",
				o->slot);
		have_slot = false;
	}
	if (!have_slot) {
		if (!o->create) {
			sluice_log_error(
				"replication slot \"%s\" does not exist in database \"%s\": "
				"run with --create, or SELECT "
				"pg_create_logical_replication_slot('%s', 'pgoutput')",
				o->slot, dbname, o->slot);
			return CAPTURE_START_FATAL;
		}
		*take_snapshot = o->snapshot && stream_empty;
		if (o->snapshot && !stream_empty)
			sluice_log_info("the stream already holds transactions: no new snapshot");
		return CAPTURE_START_OK;
	}
	if (o->snapshot && !stream_empty)
		sluice_log_info("the stream already holds transactions: no new snapshot");
	return CAPTURE_START_OK;
}

/* capture_create_slot creates the slot on the replication connection, exporting a snapshot if
 * asked. */
static bool
capture_create_slot(capture *c, bool snapshot, char *snapshot_name, size_t name_size,
		    uint64_t *consistent)
{
	char *q = capture_ident(c->repl, c->o->slot);
	sluice_buf sql = {0};
	sluice_buf_printf(&sql, "CREATE_REPLICATION_SLOT %s LOGICAL pgoutput (SNAPSHOT '%s')", q,
			  snapshot ? "export" : "nothing");
	sluice_buf_append_byte(&sql, '\0');
	PQfreemem(q);
	PGresult *res = PQexec(c->repl, (const char *)sql.data);
	sluice_buf_free(&sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		sluice_log_error("could not create replication slot \"%s\": %s", c->o->slot,
				 sluice_pg_error_line(c->repl));
		PQclear(res);
		return false;
	}
	if (!sluice_pg_lsn_parse(PQgetvalue(res, 0, 1), consistent))
		*consistent = 0;
	snprintf(snapshot_name, name_size, "%s",
		 PQgetisnull(res, 0, 2) ? "" : PQgetvalue(res, 0, 2));
	PQclear(res);
	char lsn[32];
	sluice_pg_lsn_format(*consistent, lsn, sizeof(lsn));
	sluice_log_info("created replication slot \"%s\" (consistent at %s)", c->o->slot, lsn);
	return true;
}

/* capture_start_streaming sends START_REPLICATION. */
static capture_start
capture_start_streaming(capture *c)
{
	char *qs = capture_ident(c->repl, c->o->slot);
	char *qp = capture_ident(c->repl, c->o->publication);
	char *lp = PQescapeLiteral(c->repl, qp, strlen(qp));
	if (lp == NULL)
		abort();
	char lsn[32];
	sluice_pg_lsn_format(c->resume_lsn, lsn, sizeof(lsn));
	sluice_buf sql = {0};
	sluice_buf_printf(&sql,
			  "START_REPLICATION SLOT %s LOGICAL %s (proto_version '1', "
			  "publication_names %s%s)",
			  qs, lsn, lp, c->o->messages ? ", messages 'true'" : "");
	sluice_buf_append_byte(&sql, '\0');
	PQfreemem(lp);
	PQfreemem(qp);
	PQfreemem(qs);
	PGresult *res = PQexec(c->repl, (const char *)sql.data);
	sluice_buf_free(&sql);
	if (PQresultStatus(res) != PGRES_COPY_BOTH) {
		const char *err = sluice_pg_error_line(c->repl);
		bool busy = strstr(err, "is active for PID") != NULL;
		if (busy)
			snprintf(c->busy_why, sizeof(c->busy_why), "%s", err);
		else
			sluice_log_error("could not start streaming from slot \"%s\": %s",
					 c->o->slot, err);
		PQclear(res);
		return busy ? CAPTURE_START_BUSY : CAPTURE_START_FATAL;
	}
	PQclear(res);
	sluice_log_info("streaming from slot \"%s\" publication \"%s\" at %s into stream \"%s\" "
			"(next txseq %" PRIu64 ")",
			c->o->slot, c->o->publication, lsn, c->o->stream,
			sluice_writer_last_txseq(c->w) + 1);
	return CAPTURE_START_OK;
}

static void
capture_disconnect(capture *c)
{
	PQfinish(c->repl);
	c->repl = NULL;
	PQfinish(c->cat);
	c->cat = NULL;
}

/* capture_connect opens both connections, prepares the source and starts streaming. */
static capture_start
capture_connect(capture *c)
{
	c->cat = sluice_pg_connect(c->o->source, false, "the source");
	if (c->cat == NULL)
		return CAPTURE_START_RETRY;
	/* The snapshot copies through this connection: same text forms as pgoutput. */
	if (!sluice_pg_set_canonical(c->cat))
		return CAPTURE_START_RETRY;
	bool snapshot = false;
	capture_start st = capture_prepare(c, &snapshot);
	if (st != CAPTURE_START_OK)
		return st;
	if (c->o->exit_when_caught_up && c->target_lsn == 0) {
		PGresult *res = sluice_pg_query(c->cat, "SELECT pg_current_wal_lsn()", 0, NULL);
		if (res == NULL || !sluice_pg_lsn_parse(PQgetvalue(res, 0, 0), &c->target_lsn)) {
			PQclear(res);
			return CAPTURE_START_RETRY;
		}
		PQclear(res);
		char lsn[32];
		sluice_pg_lsn_format(c->target_lsn, lsn, sizeof(lsn));
		sluice_log_info("will stop once everything committed before %s is durable", lsn);
	}
	c->repl = sluice_pg_connect(c->o->source, true, "the source");
	if (c->repl == NULL)
		return CAPTURE_START_RETRY;
	/* pgoutput prints values with the walsender's settings: make them canonical. */
	if (!sluice_pg_set_canonical(c->repl))
		return CAPTURE_START_RETRY;

	PGresult *res =
		sluice_pg_query(c->cat, "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
				1, (const char *const[]){c->o->slot});
	bool have_slot = res != NULL && PQntuples(res) == 1;
	PQclear(res);
	if (!have_slot) {
		char name[256];
		uint64_t consistent = 0;
		if (!capture_create_slot(c, snapshot, name, sizeof(name), &consistent))
			return CAPTURE_START_FATAL;
		if (snapshot) {
			sluice_pgsnapshot_stats ss;
			sluice_log_info("copying the published tables inside snapshot %s", name);
			if (!sluice_pgsnapshot_copy(c->cat, c->w, c->o->publication, name,
						    consistent, c->o->node, c->o->progress, &ss))
				return CAPTURE_START_FATAL;
			sluice_log_info("snapshot done: %" PRIu64 " tables, %" PRIu64
					" rows, %.1f MB (txseq %" PRIu64 ")",
					ss.tables, ss.rows, (double)ss.bytes / 1e6,
					sluice_writer_last_txseq(c->w));
			if (c->stats->first_txseq == 0)
				c->stats->first_txseq = sluice_writer_last_txseq(c->w);
			c->stats->last_txseq = sluice_writer_last_txseq(c->w);
		}
		if (consistent > c->resume_lsn)
			c->resume_lsn = consistent;
	}
	return capture_start_streaming(c);
}

/* capture_stop_reached tells whether the requested end position has been passed. */
static bool
capture_stop_reached(const capture *c)
{
	if (c->in_txn)
		return false;
	/* The server reports a commit at its end position: reaching the bound means past it. */
	if (c->o->until_lsn && c->received_lsn >= c->o->until_lsn)
		return true;
	if (c->target_lsn && c->received_lsn >= c->target_lsn)
		return true;
	/* The stream may already end at the target (restart after a kill). */
	uint64_t durable = sluice_writer_durable_end_lsn(c->w);
	if (c->target_lsn && durable >= c->target_lsn && !capture_has_unflushed(c))
		return true;
	return false;
}

/* capture_idle does the work due when no data is waiting: flush, acknowledge, heartbeat. */
static bool
capture_idle(capture *c)
{
	int64_t now = capture_now_ms();
	if (capture_has_unflushed(c) && now - c->last_flush_ms >= c->o->min_flush_gap_ms) {
		if (!capture_flush(c))
			return false;
	}
	if (c->o->heartbeat_interval_ms > 0 && !c->in_txn &&
	    now - c->last_heartbeat_ms >= c->o->heartbeat_interval_ms) {
		Sluice__V1__Heartbeat hb = SLUICE__V1__HEARTBEAT__INIT;
		hb.time_us = (sluice_pg_now() + SLUICE_PGO_EPOCH_OFFSET_US);
		hb.has_source_lsn = true;
		hb.source_lsn = c->received_lsn;
		hb.has_last_txseq = true;
		hb.last_txseq = sluice_writer_last_txseq(c->w);
		sluice_record rec = SLUICE__V1__RECORD__INIT;
		rec.body_case = SLUICE__V1__RECORD__BODY_HEARTBEAT;
		rec.heartbeat = &hb;
		if (!sluice_writer_append(c->w, &rec) || !capture_flush(c))
			return false;
		c->last_heartbeat_ms = now;
	}
	/*
	 * Periodic updates ask for a reply: the keepalive that answers carries the
	 * server's position, which an idle capture then confirms, so WAL of other
	 * databases or of unpublished tables is not retained behind the slot.
	 */
	if (c->ackable_lsn > c->acked_lsn)
		if (!capture_send_status(c, false))
			return false;
	if (now - c->last_status_ms >= c->o->status_interval_ms)
		if (!capture_send_status(c, true))
			return false;
	if (now - c->last_log_ms >= 10000) {
		char lsn[32];
		sluice_pg_lsn_format(c->acked_lsn, lsn, sizeof(lsn));
		sluice_log_info("%" PRIu64 " transactions, %" PRIu64
				" changes captured; last txseq "
				"%" PRIu64 ", acknowledged %s",
				c->stats->transactions, c->stats->changes,
				sluice_writer_durable_txseq(c->w), lsn);
		c->last_log_ms = now;
	}
	return true;
}

/*
 * capture_stream runs the receive loop until stopped (true) or until the
 * connection fails (false; the caller reconnects).
 */
static bool
capture_stream(capture *c)
{
	for (;;) {
		if (*c->o->stop) {
			sluice_log_info("stopping on signal");
			return true;
		}
		if (c->done || capture_stop_reached(c)) {
			c->done = true;
			return true;
		}
		char *buf = NULL;
		int n = PQgetCopyData(c->repl, &buf, 1);
		if (n == 0) {
			if (!capture_idle(c))
				return false;
			if (capture_stop_reached(c))
				continue;
			/* Sleep until data arrives or the next flush/status/heartbeat is due. */
			int64_t now = capture_now_ms();
			int64_t wait = c->o->status_interval_ms - (now - c->last_status_ms);
			if (capture_has_unflushed(c)) {
				int64_t f = c->o->min_flush_gap_ms - (now - c->last_flush_ms);
				if (f < wait)
					wait = f;
			}
			if (c->o->heartbeat_interval_ms > 0) {
				int64_t h =
					c->o->heartbeat_interval_ms - (now - c->last_heartbeat_ms);
				if (h < wait)
					wait = h;
			}
			if (wait > 1000)
				wait = 1000; /* notice signals and stop conditions promptly */
			if (wait < 0)
				wait = 0;
			struct pollfd pfd = {.fd = PQsocket(c->repl), .events = POLLIN};
			if (poll(&pfd, 1, (int)wait) < 0 && errno != EINTR) {
				sluice_log_error("could not wait for the source: %m");
				return false;
			}
			if (PQconsumeInput(c->repl) == 0) {
				sluice_log_warn("lost the replication connection: %s",
						sluice_pg_error_line(c->repl));
				return false;
			}
			continue;
		}
		if (n == -1) {
			PGresult *res = PQgetResult(c->repl);
			sluice_log_warn("the source ended the replication stream: %s",
					res ? PQresultErrorMessage(res) : "no result");
			PQclear(res);
			return false;
		}
		if (n < 0) {
			sluice_log_warn("lost the replication connection: %s",
					sluice_pg_error_line(c->repl));
			return false;
		}
		sluice_pgo_copydata cd;
		sluice_pgo_status st =
			sluice_pgo_decode_copydata((const uint8_t *)buf, (size_t)n, &cd);
		bool ok = true;
		if (st != SLUICE_PGO_OK) {
			sluice_log_error("could not decode a replication message of type '%c': %s",
					 n > 0 ? buf[0] : '?', sluice_pgo_strerror(st));
			ok = false;
		} else if (cd.type == 'k') {
			if (cd.wal_end > c->received_lsn)
				c->received_lsn = cd.wal_end;
			/* Idle: nothing in flight, so the server's position may be confirmed. */
			if (!c->in_txn && !capture_has_unflushed(c) && cd.wal_end > c->ackable_lsn)
				c->ackable_lsn = cd.wal_end;
			if (cd.reply_requested)
				ok = capture_send_status(c, false);
		} else {
			if (cd.wal_end > c->received_lsn)
				c->received_lsn = cd.wal_end;
			ok = capture_handle(c, cd.data, cd.len);
		}
		PQfreemem(buf);
		if (!ok)
			return false; /* decoding errors reconnect: the server sends it again */
		/* Under continuous load, still bound how long a commit waits for fsync. */
		if (c->unflushed_since_ms != 0 &&
		    capture_now_ms() - (int64_t)c->unflushed_since_ms >= c->o->max_flush_delay_ms) {
			if (!capture_flush(c) || !capture_send_status(c, false))
				return false;
		}
	}
}

/* capture_reset_txn forgets a partly received transaction (the server sends it again). */
static bool
capture_reopen_writer(capture *c)
{
	bool had_txn = c->in_txn;
	c->in_txn = false;
	c->skip = false;
	c->begin_written = false;
	if (!sluice_writer_close(c->w))
		sluice_log_warn("could not flush the stream before reconnecting");
	c->w = NULL;
	if (!sluice_writer_open(c->store, c->o->stream, c->key, &c->o->writer, &c->w, NULL))
		return false;
	c->resume_lsn = sluice_writer_last_end_lsn(c->w);
	if (had_txn)
		sluice_log_info("the unfinished transaction will be received again");
	return true;
}

bool
sluice_capture_run(sluice_store *store, const sluice_key *key, const sluice_capture_options *o,
		   sluice_capture_stats *stats)
{
	capture c;
	memset(&c, 0, sizeof(c));
	memset(stats, 0, sizeof(*stats));
	c.o = o;
	c.store = store;
	c.key = key;
	c.stats = stats;
	bool ok = false;
	c.dec = sluice_pgo_decoder_create();
	if (!sluice_writer_open(store, o->stream, key, &o->writer, &c.w, NULL))
		goto cleanup;
	c.resume_lsn = sluice_writer_last_end_lsn(c.w);
	c.ackable_lsn = c.resume_lsn;
	stats->first_txseq = 0;

	int attempt = 0;
	int busy_ms = 0;
	bool streamed = false;
	for (;;) {
		if (*o->stop) {
			ok = true;
			break;
		}
		capture_start st = capture_connect(&c);
		if (st == CAPTURE_START_FATAL)
			break;
		if (st == CAPTURE_START_RETRY && !streamed) {
			/* Before the first start, a connection problem is a configuration problem.
			 */
			break;
		}
		if (st == CAPTURE_START_BUSY && busy_ms >= 30000) {
			sluice_log_error(
				"replication slot \"%s\" has been in use by another process for "
				"%d s: is another capture running for it?",
				o->slot, busy_ms / 1000);
			break;
		}
		if (st == CAPTURE_START_OK) {
			streamed = true;
			attempt = 0;
			busy_ms = 0;
			int64_t now = capture_now_ms();
			c.last_status_ms = c.last_flush_ms = c.last_log_ms = now;
			c.last_heartbeat_ms = now;
			/* Ask for a keepalive at once: it tells where the server is. A broken
			 * connection shows up in the receive loop, which reconnects. */
			(void)capture_send_status(&c, true);
			if (capture_stream(&c)) {
				/* Clean stop: everything complete is made durable and acknowledged.
				 */
				if (capture_flush(&c)) {
					capture_send_status(&c, false);
					ok = true;
				}
				break;
			}
			if (c.fatal)
				break;
		}
		capture_disconnect(&c);
		if (!capture_reopen_writer(&c))
			break;
		attempt++;
		int delay_ms;
		if (st == CAPTURE_START_BUSY) {
			/* A slot held by a capture that just stopped is usually free within
			 * milliseconds: look again soon, and say so every 5 s, not at every look.
			 */
			delay_ms = 200;
			if (busy_ms % 5000 == 0)
				sluice_log_warn(
					"replication slot \"%s\" is in use (%s); looking again "
					"every 0.2 s",
					o->slot, c.busy_why);
			busy_ms += delay_ms;
		} else {
			stats->reconnects++;
			delay_ms = sluice_backoff_ms(attempt, 1000, o->reconnect_max_s * 1000);
			sluice_log_warn("reconnecting to the source in %d ms (attempt %d)",
					delay_ms, attempt);
		}
		sluice_sleep_ms(delay_ms, o->stop);
	}

cleanup:
	capture_disconnect(&c);
	if (c.w != NULL && !sluice_writer_close(c.w))
		ok = false;
	for (size_t i = 0; i < c.ntypes; i++)
		free(c.types[i].name);
	free(c.types);
	free(c.local_rels);
	free(c.kinds);
	free(c.values);
	sluice_pgo_decoder_free(c.dec);
	return ok;
}
