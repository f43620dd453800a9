/* Node set-up for active-active apply: sluice's schema, version functions, delete tracking. */
#include "pgprepare.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "pgconn.h"

/*
 * The schema. Versions are (commit time, node) of a tuple's xmin: the commit
 * timestamp PostgreSQL records, which apply sets to the origin's commit time
 * with pg_replication_origin_xact_setup, and the node of the replication
 * origin (or this node for local commits). A frozen xmin has no timestamp
 * and is older than anything remote.
 */
static const char *const prepare_schema_sql[] = {
	"CREATE SCHEMA IF NOT EXISTS sluice",
	"CREATE TABLE IF NOT EXISTS sluice.config (name text PRIMARY KEY, value text NOT NULL)",
	"CREATE TABLE IF NOT EXISTS sluice.origin_node (roname text PRIMARY KEY, node text NOT "
	"NULL)",
	"CREATE TABLE IF NOT EXISTS sluice.tombstones (rel text NOT NULL, key jsonb NOT NULL, "
	"deleted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (rel, key))",
	"CREATE TABLE IF NOT EXISTS sluice.conflicts (id bigserial PRIMARY KEY, logged_at "
	"timestamptz NOT NULL DEFAULT now(), stream text NOT NULL, txseq bigint NOT NULL, "
	"relation text NOT NULL, key jsonb, kind text NOT NULL, local_time timestamptz, "
	"local_node text, remote_time timestamptz NOT NULL, remote_node text NOT NULL, "
	"resolution text NOT NULL)",
	/* (time, node) of the transaction that wrote xmin; time NULL when unknown. */
	"CREATE OR REPLACE FUNCTION sluice.version(x xid, OUT at timestamptz, OUT node text) "
	"LANGUAGE plpgsql STABLE AS $$ "
	"DECLARE o oid; "
	"BEGIN "
	"  SELECT c.timestamp, c.roident INTO at, o FROM pg_xact_commit_timestamp_origin(x) c; "
	"  IF at IS NULL THEN RETURN; END IF; "
	"  IF o IS NULL OR o = 0 THEN "
	"    SELECT value INTO node FROM sluice.config WHERE name = 'node'; "
	"  ELSE "
	"    SELECT n.node INTO node FROM pg_replication_origin r "
	"      JOIN sluice.origin_node n ON n.roname = r.roname WHERE r.roident = o; "
	"  END IF; "
	"END $$",
	/* Last writer wins: later time, then the greater node name. */
	"CREATE OR REPLACE FUNCTION sluice.remote_wins(x xid, rts timestamptz, rnode text) "
	"RETURNS boolean LANGUAGE plpgsql STABLE AS $$ "
	"DECLARE v record; "
	"BEGIN "
	"  SELECT * INTO v FROM sluice.version(x); "
	"  IF v.at IS NULL THEN RETURN true; END IF; "
	"  IF rts <> v.at THEN RETURN rts > v.at; END IF; "
	"  RETURN rnode > coalesce(v.node, ''); "
	"END $$",
	/*
	 * Delete tracking: every delete leaves (table, key, version). Inside apply
	 * the version is the remote one (apply sets sluice.remote_time/node); a
	 * delete older than the tombstone in place does not move it back.
	 */
	"CREATE OR REPLACE FUNCTION sluice.record_delete() RETURNS trigger LANGUAGE "
	"plpgsql " SLUICE_PG_CANONICAL_FUNCTION_SETTINGS " AS $$ "
	"DECLARE k jsonb; rts timestamptz; rnode text; "
	"BEGIN "
	"  EXECUTE 'SELECT jsonb_build_array(' || (SELECT string_agg(format("
	"    'format(''%%s'', ($1).%I)', a), ', ' ORDER BY n) FROM unnest(TG_ARGV) "
	"    WITH ORDINALITY AS u(a, n)) || ')' INTO k USING OLD; "
	"  rts := coalesce(nullif(current_setting('sluice.remote_time', true), '')::timestamptz, "
	"         now()); "
	"  rnode := coalesce(nullif(current_setting('sluice.remote_node', true), ''), "
	"         (SELECT value FROM sluice.config WHERE name = 'node'), ''); "
	"  INSERT INTO sluice.tombstones AS t (rel, key) "
	"    VALUES (quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME), k) "
	"    ON CONFLICT (rel, key) DO UPDATE SET deleted_at = now() "
	"    WHERE sluice.remote_wins(t.xmin, rts, rnode); "
	"  RETURN NULL; "
	"END $$",
};

int
sluice_prepare_installed(PGconn *conn)
{
	PGresult *res = sluice_pg_query(
		conn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'sluice'", 0, NULL);
	if (res == NULL)
		return -1;
	long n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return n > 0;
}

bool
sluice_prepare_node(PGconn *conn, char *out, size_t size)
{
	if (sluice_prepare_installed(conn) != 1)
		return false;
	PGresult *res = sluice_pg_query(conn, "SELECT value FROM sluice.config WHERE name = 'node'",
					0, NULL);
	bool ok = res != NULL && PQntuples(res) == 1;
	if (ok)
		snprintf(out, size, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return ok;
}

/* Tables with their key columns: primary key, else replica identity index. */
static const char prepare_tables_sql[] =
	"SELECT n.nspname, c.relname, "
	"       (SELECT array_to_string(array_agg(quote_literal(a.attname) ORDER BY k.ord), ',') "
	"          FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord), "
	"               pg_attribute a "
	"         WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident) "
	"           AND a.attrelid = c.oid AND a.attnum = k.attnum "
	"         GROUP BY i.indexrelid, i.indisprimary ORDER BY i.indisprimary DESC LIMIT 1), "
	"       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid "
	"                AND t.tgname = 'sluice_record_delete') "
	"  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	" WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', "
	"       'information_schema', 'sluice') AND n.nspname NOT LIKE 'pg_toast%' "
	"       AND n.nspname NOT LIKE 'pg_temp%' "
	" ORDER BY 1, 2";

bool
sluice_prepare_install(PGconn *conn, const char *node, const sluice_table_filter *f)
{
	bool ok = false;
	PGresult *res = NULL;
	sluice_buf sql = {0};
	if (!sluice_pg_exec(conn, "BEGIN"))
		return false;
	for (size_t i = 0; i < sizeof(prepare_schema_sql) / sizeof(prepare_schema_sql[0]); i++)
		if (!sluice_pg_exec(conn, prepare_schema_sql[i]))
			goto cleanup;
	const char *params[1] = {node};
	res = sluice_pg_query(conn,
			      "INSERT INTO sluice.config VALUES ('node', $1) ON CONFLICT (name) "
			      "DO UPDATE SET value = EXCLUDED.value",
			      1, params);
	if (res == NULL)
		goto cleanup;
	PQclear(res);
	res = sluice_pg_query(conn, prepare_tables_sql, 0, NULL);
	if (res == NULL)
		goto cleanup;
	int tracked = 0, skipped = 0;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *nsp = PQgetvalue(res, i, 0), *rel = PQgetvalue(res, i, 1);
		if (!sluice_filter_match(f, nsp, rel))
			continue;
		if (PQgetisnull(res, i, 2)) {
			sluice_log_warn("table %s.%s has no primary key or replica identity index: "
					"deletes on it cannot be tracked",
					nsp, rel);
			skipped++;
			continue;
		}
		if (PQgetvalue(res, i, 3)[0] == 't') {
			tracked++;
			continue;
		}
		/*
		 * The trigger of a partitioned table is cloned onto its partitions,
		 * which come later in the list: look again.
		 */
		const char *tp[2] = {nsp, rel};
		PGresult *t = sluice_pg_query(conn,
					      "SELECT EXISTS (SELECT 1 FROM pg_trigger t WHERE "
					      "t.tgrelid = (quote_ident($1) "
					      "|| '.' || quote_ident($2))::regclass AND t.tgname = "
					      "'sluice_record_delete')",
					      2, tp);
		if (t == NULL)
			goto cleanup;
		bool cloned = PQgetvalue(t, 0, 0)[0] == 't';
		PQclear(t);
		if (cloned) {
			tracked++;
			continue;
		}
		char *qn = PQescapeIdentifier(conn, nsp, strlen(nsp));
		char *qr = PQescapeIdentifier(conn, rel, strlen(rel));
		sluice_buf_reset(&sql);
		sluice_buf_printf(
			&sql,
			"CREATE TRIGGER sluice_record_delete AFTER DELETE ON %s.%s FOR EACH "
			"ROW EXECUTE FUNCTION sluice.record_delete(%s)",
			qn, qr, PQgetvalue(res, i, 2));
		sluice_buf_append_byte(&sql, '\0');
		bool t_ok = sluice_pg_exec(conn, (const char *)sql.data);
		sluice_buf_reset(&sql);
		/* ALWAYS: it fires in apply's session_replication_role = replica too. */
		sluice_buf_printf(&sql,
				  "ALTER TABLE %s.%s ENABLE ALWAYS TRIGGER sluice_record_delete",
				  qn, qr);
		sluice_buf_append_byte(&sql, '\0');
		t_ok = t_ok && sluice_pg_exec(conn, (const char *)sql.data);
		PQfreemem(qr);
		PQfreemem(qn);
		if (!t_ok)
			goto cleanup;
		sluice_log_info("delete tracking installed on %s.%s", nsp, rel);
		tracked++;
	}
	if (!sluice_pg_exec(conn, "COMMIT"))
		goto cleanup;
	sluice_log_info("node \"%s\" prepared: %d tables with delete tracking, %d without", node,
			tracked, skipped);
	ok = true;

cleanup:
	PQclear(res);
	sluice_buf_free(&sql);
	if (!ok)
		sluice_pg_exec(conn, "ROLLBACK");
	return ok;
}

bool
sluice_prepare_undo(PGconn *conn, const sluice_table_filter *f, bool all)
{
	bool ok = false;
	PGresult *res = NULL;
	sluice_buf sql = {0};
	if (!sluice_pg_exec(conn, "BEGIN"))
		return false;
	res = sluice_pg_query(conn, prepare_tables_sql, 0, NULL);
	if (res == NULL)
		goto cleanup;
	for (int i = 0; i < PQntuples(res); i++) {
		const char *nsp = PQgetvalue(res, i, 0), *rel = PQgetvalue(res, i, 1);
		if (PQgetvalue(res, i, 3)[0] != 't' || !sluice_filter_match(f, nsp, rel))
			continue;
		char *qn = PQescapeIdentifier(conn, nsp, strlen(nsp));
		char *qr = PQescapeIdentifier(conn, rel, strlen(rel));
		sluice_buf_reset(&sql);
		sluice_buf_printf(&sql, "DROP TRIGGER sluice_record_delete ON %s.%s", qn, qr);
		sluice_buf_append_byte(&sql, '\0');
		PQfreemem(qr);
		PQfreemem(qn);
		if (!sluice_pg_exec(conn, (const char *)sql.data))
			goto cleanup;
		sluice_log_info("delete tracking removed from %s.%s", nsp, rel);
	}
	if (all && !sluice_pg_exec(conn, "DROP SCHEMA IF EXISTS sluice CASCADE"))
		goto cleanup;
	if (!sluice_pg_exec(conn, "COMMIT"))
		goto cleanup;
	ok = true;

cleanup:
	PQclear(res);
	sluice_buf_free(&sql);
	if (!ok)
		sluice_pg_exec(conn, "ROLLBACK");
	return ok;
}
