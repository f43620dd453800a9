/* PostgreSQL capture source: pgoutput over a logical replication connection, into the engine's
 * sink. */
#include "pgsource.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "pgconn.h"
#include "pgoutput.h"
#include "pgsnapshot.h"
#include "records.h"

typedef struct pgsource_type {
	uint32_t oid;
	int32_t typmod;
	char *name; /* owned */
} pgsource_type;

struct sluice_pgsource {
	const sluice_capture_options *o; /* borrowed */
	sluice_capture_sink *sink;       /* borrowed, set by open */
	sluice_writer *w;                /* borrowed from the sink, set by open */
	PGconn *repl;                    /* owned: replication connection */
	PGconn *cat;                     /* owned: catalog connection (type names, checks) */
	sluice_pgo_decoder *dec;         /* owned */
	pgsource_type *types;            /* owned cache of format_type() results */
	size_t ntypes;
	uint32_t *local_rels; /* owned: relation ids in SLUICE_PG_LOCAL_SCHEMA */
	size_t nlocal_rels;
	/* owned: row images of one change, reused from change to change */
	Sluice__V1__ValueKind *kinds;
	ProtobufCBinaryData *values;
	size_t row_cap;
	bool snapshot;          /* open decided: create the slot with a snapshot and copy it */
	char busy_subject[300]; /* `replication slot "name"` */
	char busy_why[256];     /* who holds the slot when a start found it busy */
};

typedef struct sluice_pgsource pgsource;

/* pgsource_type_name returns format_type(oid, typmod) from the cache or the catalog. */
static const char *
pgsource_type_name(pgsource *c, uint32_t oid, int32_t typmod)
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
	pgsource_type *p = realloc(c->types, (c->ntypes + 1) * sizeof(*p));
	if (p == NULL)
		abort();
	c->types = p;
	c->types[c->ntypes].oid = oid;
	c->types[c->ntypes].typmod = typmod;
	c->types[c->ntypes].name = name;
	return c->types[c->ntypes++].name;
}

/* pgsource_forget_type drops cached names of a type the server just described again. */
static void
pgsource_forget_type(pgsource *c, uint32_t oid)
{
	for (size_t i = 0; i < c->ntypes;) {
		if (c->types[i].oid == oid) {
			free(c->types[i].name);
			c->types[i] = c->types[--c->ntypes];
		} else
			i++;
	}
}

/* pgsource_ack sends a standby status update: written and flushed = what is durable. */
static bool
pgsource_ack(void *state, uint64_t received, uint64_t durable, bool reply_requested)
{
	pgsource *c = state;
	uint8_t msg[34];
	sluice_pgo_encode_status(msg, received, durable, durable, sluice_pg_now(), reply_requested);
	if (PQputCopyData(c->repl, (const char *)msg, sizeof(msg)) <= 0 || PQflush(c->repl) != 0) {
		sluice_log_warn("could not send a status update: %s",
				sluice_pg_error_line(c->repl));
		return false;
	}
	return true;
}

/* pgsource_row converts pgoutput tuple data into a Row (values point into the message). */
static void
pgsource_row(const sluice_pgo_tuple *t, Sluice__V1__Row *row, Sluice__V1__ValueKind *kinds,
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
pgsource_is_local_rel(const pgsource *c, uint32_t relid)
{
	for (size_t i = 0; i < c->nlocal_rels; i++)
		if (c->local_rels[i] == relid)
			return true;
	return false;
}

/* pgsource_relation turns a Relation message into a Relation record (kept by the writer). */
static bool
pgsource_relation(pgsource *c, const sluice_pgo_msg *m)
{
	if (strcmp(m->relation.nspname, SLUICE_PG_LOCAL_SCHEMA) == 0) {
		if (!pgsource_is_local_rel(c, m->relation.relid)) {
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
		cols[i].type_name = (char *)pgsource_type_name(c, pc->type_oid, pc->type_modifier);
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
	bool ok = sluice_capture_sink_relation(c->sink, &rec);
	free(colp);
	free(cols);
	return ok;
}

/* pgsource_change writes an insert, update or delete. */
static bool
pgsource_change(pgsource *c, const sluice_pgo_msg *m)
{
	if (pgsource_is_local_rel(c, m->change.relid))
		return true;
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
		pgsource_row(&m->change.old_tuple, &oldrow, kinds + n, values + n);
	if (m->type != 'D')
		pgsource_row(&m->change.new_tuple, &newrow, kinds, values);
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
	return sluice_capture_sink_change(c->sink, &rec);
}

static bool
pgsource_truncate(pgsource *c, const sluice_pgo_msg *m)
{
	uint32_t *ids = malloc(((size_t)m->truncate.nrels + 1) * sizeof(*ids));
	if (ids == NULL)
		abort();
	size_t n = 0;
	for (uint32_t i = 0; i < m->truncate.nrels; i++) {
		uint32_t id = sluice_pgo_truncate_relid(m, i);
		if (!pgsource_is_local_rel(c, id))
			ids[n++] = id;
	}
	if (n == 0) {
		free(ids);
		return true;
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
	bool ok = sluice_capture_sink_change(c->sink, &rec);
	free(ids);
	return ok;
}

static bool
pgsource_message(pgsource *c, const sluice_pgo_msg *m)
{
	bool transactional = (m->message.flags & 1) != 0;
	if (!c->o->messages)
		return true;
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
	return sluice_capture_sink_message(c->sink, &rec, transactional);
}

/* pgsource_begin starts a source transaction in the sink. */
static bool
pgsource_begin(pgsource *c, const sluice_pgo_msg *m)
{
	Sluice__V1__Begin b = SLUICE__V1__BEGIN__INIT;
	b.commit_time_us = m->begin.commit_time + SLUICE_PG_EPOCH_OFFSET_US;
	b.has_source_lsn = true;
	b.source_lsn = m->begin.final_lsn;
	b.has_source_xid = true;
	b.source_xid = m->begin.xid;
	return sluice_capture_sink_begin(c->sink, &b, m->begin.final_lsn);
}

/* pgsource_handle decodes and applies one XLogData payload. */
static bool
pgsource_handle(pgsource *c, const uint8_t *data, size_t len)
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
		return pgsource_begin(c, &m);
	case 'C':
		return sluice_capture_sink_commit(c->sink, m.commit.end_lsn);
	case 'O':
		sluice_capture_sink_origin(c->sink, m.origin.name, m.origin.lsn,
					   !c->o->forward_origins);
		return true;
	case 'R':
		return pgsource_relation(c, &m);
	case 'Y':
		pgsource_forget_type(c, m.typedesc.oid);
		return true;
	case 'I':
	case 'U':
	case 'D':
		return pgsource_change(c, &m);
	case 'T':
		return pgsource_truncate(c, &m);
	case 'M':
		return pgsource_message(c, &m);
	default:
		return true;
	}
}

/* pgsource_ident returns a double-quoted identifier in a new buffer. */
static char *
pgsource_ident(PGconn *conn, const char *s)
{
	char *q = PQescapeIdentifier(conn, s, strlen(s));
	if (q == NULL)
		abort();
	return q;
}

/*
 * pgsource_check_identities refuses to create a FOR ALL TABLES publication
 * while tables without a replica identity exist: from that moment
 * PostgreSQL refuses every UPDATE and DELETE on them, which breaks the
 * source's application. It names them and the ways out; with
 * --allow-no-identity it only warns.
 */
static bool
pgsource_check_identities(pgsource *c)
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

/* pgsource_prepare verifies wal_level, slot and publication; creates them with --create. */
static sluice_source_status
pgsource_prepare(pgsource *c, bool *take_snapshot)
{
	const sluice_capture_options *o = c->o;
	*take_snapshot = false;
	PGresult *res = sluice_pg_query(c->cat,
					"SELECT current_setting('wal_level'), "
					"current_database(), "
					"current_setting('server_version_num')::int",
					0, NULL);
	if (res == NULL)
		return SLUICE_SOURCE_RETRY;
	if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0) {
		sluice_log_error("wal_level is \"%s\" on the source: logical decoding needs "
				 "wal_level = logical (ALTER SYSTEM SET wal_level = logical; then "
				 "restart PostgreSQL)",
				 PQgetvalue(res, 0, 0));
		PQclear(res);
		return SLUICE_SOURCE_FATAL;
	}
	char dbname[256];
	snprintf(dbname, sizeof(dbname), "%s", PQgetvalue(res, 0, 1));
	long version = strtol(PQgetvalue(res, 0, 2), NULL, 10);
	PQclear(res);
	if (o->snapshot && version < 150000) {
		sluice_log_error("--snapshot needs PostgreSQL 15 or later (the source is %ld)",
				 version);
		return SLUICE_SOURCE_FATAL;
	}

	const char *pp[1] = {o->publication};
	res = sluice_pg_query(c->cat, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, pp);
	if (res == NULL)
		return SLUICE_SOURCE_RETRY;
	bool have_pub = PQntuples(res) == 1;
	PQclear(res);
	if (!have_pub) {
		if (!o->create) {
			sluice_log_error(
				"publication \"%s\" does not exist in database \"%s\": run "
				"with --create, or CREATE PUBLICATION %s FOR ALL TABLES",
				o->publication, dbname, o->publication);
			return SLUICE_SOURCE_FATAL;
		}
		if (!pgsource_check_identities(c))
			return SLUICE_SOURCE_FATAL;
		char *q = pgsource_ident(c->cat, o->publication);
		sluice_buf sql = {0};
		sluice_buf_printf(&sql, "CREATE PUBLICATION %s FOR ALL TABLES", q);
		sluice_buf_append_byte(&sql, '\0');
		PQfreemem(q);
		bool ok = sluice_pg_exec(c->cat, (const char *)sql.data);
		sluice_buf_free(&sql);
		if (!ok)
			return SLUICE_SOURCE_FATAL;
		sluice_log_info("created publication \"%s\" for all tables", o->publication);
	}

	const char *sp[1] = {o->slot};
	res = sluice_pg_query(c->cat,
			      "SELECT plugin, database, active_pid, confirmed_flush_lsn "
			      "FROM pg_replication_slots WHERE slot_name = $1",
			      1, sp);
	if (res == NULL)
		return SLUICE_SOURCE_RETRY;
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
			return SLUICE_SOURCE_FATAL;
		}
		if (strcmp(db, dbname) != 0) {
			sluice_log_error(
				"replication slot \"%s\" belongs to database \"%s\", not \"%s\"",
				o->slot, db, dbname);
			PQclear(res);
			return SLUICE_SOURCE_FATAL;
		}
		if (!PQgetisnull(res, 0, 2)) {
			snprintf(c->busy_why, sizeof(c->busy_why), "process %s",
				 PQgetvalue(res, 0, 2));
			PQclear(res);
			return SLUICE_SOURCE_BUSY;
		}
	}
	PQclear(res);

	if (have_slot && o->snapshot && o->create && stream_empty) {
		/* Nothing was captured through it: take the snapshot with a fresh slot. */
		res = sluice_pg_query(c->cat, "SELECT pg_drop_replication_slot($1)", 1, sp);
		if (res == NULL)
			return SLUICE_SOURCE_FATAL;
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
			return SLUICE_SOURCE_FATAL;
		}
		*take_snapshot = o->snapshot && stream_empty;
		if (o->snapshot && !stream_empty)
			sluice_log_info("the stream already holds transactions: no new snapshot");
		return SLUICE_SOURCE_OK;
	}
	if (o->snapshot && !stream_empty)
		sluice_log_info("the stream already holds transactions: no new snapshot");
	return SLUICE_SOURCE_OK;
}

/* pgsource_create_slot creates the slot on the replication connection, exporting a snapshot if
 * asked. */
static bool
pgsource_create_slot(pgsource *c, bool snapshot, char *snapshot_name, size_t name_size,
		     uint64_t *consistent)
{
	char *q = pgsource_ident(c->repl, c->o->slot);
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

/* pgsource_start_streaming sends START_REPLICATION. */
static sluice_source_status
pgsource_start_streaming(pgsource *c, uint64_t resume)
{
	char *qs = pgsource_ident(c->repl, c->o->slot);
	char *qp = pgsource_ident(c->repl, c->o->publication);
	char *lp = PQescapeLiteral(c->repl, qp, strlen(qp));
	if (lp == NULL)
		abort();
	char lsn[32];
	sluice_pg_lsn_format(resume, lsn, sizeof(lsn));
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
		return busy ? SLUICE_SOURCE_BUSY : SLUICE_SOURCE_FATAL;
	}
	PQclear(res);
	sluice_log_info("streaming from slot \"%s\" publication \"%s\" at %s into stream \"%s\" "
			"(next txseq %" PRIu64 ")",
			c->o->slot, c->o->publication, lsn, c->o->stream,
			sluice_writer_last_txseq(c->w) + 1);
	return SLUICE_SOURCE_OK;
}

static void
pgsource_disconnect(pgsource *c)
{
	PQfinish(c->repl);
	c->repl = NULL;
	PQfinish(c->cat);
	c->cat = NULL;
}

/* pgsource_open opens the catalog connection and checks (or creates) publication and slot. */
static sluice_source_status
pgsource_open(void *state, sluice_capture_sink *sink)
{
	pgsource *c = state;
	c->sink = sink;
	c->w = sluice_capture_sink_writer(sink);
	c->cat = sluice_pg_connect(c->o->source, false, "the source");
	if (c->cat == NULL)
		return SLUICE_SOURCE_RETRY;
	/* The snapshot copies through this connection: same text forms as pgoutput. */
	if (!sluice_pg_set_canonical(c->cat))
		return SLUICE_SOURCE_RETRY;
	return pgsource_prepare(c, &c->snapshot);
}

/* pgsource_current_position reads the server's current WAL position. */
static bool
pgsource_current_position(void *state, uint64_t *position)
{
	pgsource *c = state;
	PGresult *res = sluice_pg_query(c->cat, "SELECT pg_current_wal_lsn()", 0, NULL);
	bool ok = res != NULL && sluice_pg_lsn_parse(PQgetvalue(res, 0, 0), position);
	PQclear(res);
	return ok;
}

/* pgsource_start opens the replication connection, creates the slot (and copies the snapshot)
 * when missing, and starts streaming. */
static sluice_source_status
pgsource_start(void *state, sluice_capture_sink *sink, uint64_t *resume)
{
	pgsource *c = state;
	(void)sink;
	c->repl = sluice_pg_connect(c->o->source, true, "the source");
	if (c->repl == NULL)
		return SLUICE_SOURCE_RETRY;
	/* pgoutput prints values with the walsender's settings: make them canonical. */
	if (!sluice_pg_set_canonical(c->repl))
		return SLUICE_SOURCE_RETRY;

	PGresult *res =
		sluice_pg_query(c->cat, "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
				1, (const char *const[]){c->o->slot});
	bool have_slot = res != NULL && PQntuples(res) == 1;
	PQclear(res);
	if (!have_slot) {
		char name[256];
		uint64_t consistent = 0;
		if (!pgsource_create_slot(c, c->snapshot, name, sizeof(name), &consistent))
			return SLUICE_SOURCE_FATAL;
		if (c->snapshot) {
			sluice_pgsnapshot_stats ss;
			sluice_log_info("copying the published tables inside snapshot %s", name);
			if (!sluice_pgsnapshot_copy(c->cat, c->w, c->o->publication, name,
						    consistent, c->o->node, c->o->progress,
						    c->o->rate, c->o->stop, &ss))
				return SLUICE_SOURCE_FATAL;
			sluice_log_info("snapshot done: %" PRIu64 " tables, %" PRIu64
					" rows, %.1f MB (txseq %" PRIu64 ")",
					ss.tables, ss.rows, (double)ss.bytes / 1e6,
					sluice_writer_last_txseq(c->w));
		}
		if (consistent > *resume)
			*resume = consistent;
	}
	return pgsource_start_streaming(c, *resume);
}

/* pgsource_receive handles one CopyData message from the server, if one is buffered. */
static sluice_source_receive
pgsource_receive(void *state, sluice_capture_sink *sink)
{
	pgsource *c = state;
	char *buf = NULL;
	int n = PQgetCopyData(c->repl, &buf, 1);
	if (n == 0)
		return SLUICE_SOURCE_IDLE;
	if (n == -1) {
		PGresult *res = PQgetResult(c->repl);
		sluice_log_warn("the source ended the replication stream: %s",
				res ? PQresultErrorMessage(res) : "no result");
		PQclear(res);
		return SLUICE_SOURCE_LOST;
	}
	if (n < 0) {
		sluice_log_warn("lost the replication connection: %s",
				sluice_pg_error_line(c->repl));
		return SLUICE_SOURCE_LOST;
	}
	sluice_pgo_copydata cd;
	sluice_pgo_status st = sluice_pgo_decode_copydata((const uint8_t *)buf, (size_t)n, &cd);
	bool ok = true;
	if (st != SLUICE_PGO_OK) {
		sluice_log_error("could not decode a replication message of type '%c': %s",
				 n > 0 ? buf[0] : '?', sluice_pgo_strerror(st));
		ok = false;
	} else if (cd.type == 'k') {
		ok = sluice_capture_sink_keepalive(sink, cd.wal_end, cd.reply_requested);
	} else {
		sluice_capture_sink_progress(sink, cd.wal_end);
		ok = pgsource_handle(c, cd.data, cd.len);
	}
	PQfreemem(buf);
	return ok ? SLUICE_SOURCE_RECEIVED : SLUICE_SOURCE_LOST;
}

/* pgsource_wait waits for the replication socket and reads what arrived. */
static bool
pgsource_wait(void *state, int ms)
{
	pgsource *c = state;
	struct pollfd pfd = {.fd = PQsocket(c->repl), .events = POLLIN};
	if (poll(&pfd, 1, ms) < 0 && errno != EINTR) {
		sluice_log_error("could not wait for the source: %m");
		return false;
	}
	if (PQconsumeInput(c->repl) == 0) {
		sluice_log_warn("lost the replication connection: %s",
				sluice_pg_error_line(c->repl));
		return false;
	}
	return true;
}

static const char *
pgsource_busy_subject(void *state)
{
	return ((pgsource *)state)->busy_subject;
}

static const char *
pgsource_busy_reason(void *state)
{
	return ((pgsource *)state)->busy_why;
}

static void
pgsource_close(void *state)
{
	pgsource_disconnect(state);
}

sluice_pgsource *
sluice_pgsource_create(const sluice_capture_options *o)
{
	pgsource *c = calloc(1, sizeof(*c));
	if (c == NULL)
		abort();
	c->o = o;
	c->dec = sluice_pgo_decoder_create();
	snprintf(c->busy_subject, sizeof(c->busy_subject), "replication slot \"%s\"", o->slot);
	return c;
}

void
sluice_pgsource_free(sluice_pgsource *c)
{
	if (c == NULL)
		return;
	pgsource_disconnect(c);
	for (size_t i = 0; i < c->ntypes; i++)
		free(c->types[i].name);
	free(c->types);
	free(c->local_rels);
	free(c->kinds);
	free(c->values);
	sluice_pgo_decoder_free(c->dec);
	free(c);
}

static void
pgsource_free(void *state)
{
	sluice_pgsource_free(state);
}

const sluice_source_ops sluice_pgsource_ops = {
	.name = "PostgreSQL",
	.position_kind = SLUICE_SOURCE_POSITION_LSN,
	.format_position = sluice_pg_lsn_format,
	.open = pgsource_open,
	.current_position = pgsource_current_position,
	.start = pgsource_start,
	.receive = pgsource_receive,
	.wait = pgsource_wait,
	.ack = pgsource_ack,
	.busy_subject = pgsource_busy_subject,
	.busy_reason = pgsource_busy_reason,
	.close = pgsource_close,
	.free = pgsource_free,
};
