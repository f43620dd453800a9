/* Initial snapshot: every published table copied inside the slot's exported snapshot. */
#include "pgsnapshot.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "pgconn.h"
#include "records.h"

static int
snapshot_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
sluice_pgsnapshot_copy_text_decode(const char *line, size_t len, uint8_t *scratch, size_t *starts,
				   uint32_t *lens, int max)
{
	if (len > 0 && line[len - 1] == '\n')
		len--;
	int n = 0;
	size_t out = 0;
	size_t i = 0;
	for (;;) {
		if (n >= max)
			return -1;
		/* A field that is exactly \N is NULL. */
		if (i + 2 <= len && line[i] == '\\' && line[i + 1] == 'N' &&
		    (i + 2 == len || line[i + 2] == '\t')) {
			starts[n] = out;
			lens[n] = UINT32_MAX;
			n++;
			i += 2;
		} else {
			starts[n] = out;
			while (i < len && line[i] != '\t') {
				char c = line[i++];
				if (c != '\\') {
					scratch[out++] = (uint8_t)c;
					continue;
				}
				if (i >= len)
					return -1;
				c = line[i++];
				switch (c) {
				case 'b':
					scratch[out++] = '\b';
					break;
				case 'f':
					scratch[out++] = '\f';
					break;
				case 'n':
					scratch[out++] = '\n';
					break;
				case 'r':
					scratch[out++] = '\r';
					break;
				case 't':
					scratch[out++] = '\t';
					break;
				case 'v':
					scratch[out++] = '\v';
					break;
				case 'x': {
					int v = 0, k = 0;
					while (k < 2 && i < len && snapshot_hex(line[i]) >= 0) {
						v = v * 16 + snapshot_hex(line[i++]);
						k++;
					}
					if (k == 0)
						scratch[out++] = 'x';
					else
						scratch[out++] = (uint8_t)v;
					break;
				}
				default:
					if (c >= '0' && c <= '7') {
						int v = c - '0', k = 1;
						while (k < 3 && i < len && line[i] >= '0' &&
						       line[i] <= '7') {
							v = v * 8 + (line[i++] - '0');
							k++;
						}
						scratch[out++] = (uint8_t)v;
					} else
						scratch[out++] =
							(uint8_t)c; /* \\ and any other: literal */
				}
			}
			lens[n] = (uint32_t)(out - starts[n]);
			n++;
		}
		if (i >= len)
			break;
		if (line[i] != '\t')
			return -1;
		i++;
	}
	return n;
}

/* snapshot_progress prints one status line on a terminal, at most twice a second. */
static void
snapshot_progress(bool show, bool final, const sluice_pgsnapshot_stats *st, uint64_t ntables,
		  const char *table)
{
	static struct timespec last;
	if (!show)
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!final &&
	    (now.tv_sec - last.tv_sec) * 1000 + (now.tv_nsec - last.tv_nsec) / 1000000 < 500)
		return;
	last = now;
	fprintf(stderr,
		"\rsnapshot: table %" PRIu64 "/%" PRIu64 " %-40.40s %12" PRIu64 " rows %10.1f MB%s",
		st->tables, ntables, table, st->rows, (double)st->bytes / 1e6, final ? "\n" : "");
	fflush(stderr);
}

/* snapshot_relation builds and appends the Relation record of one table. */
static bool
snapshot_relation(PGconn *conn, sluice_writer *w, const char *relid, const char *nsp,
		  const char *rel, const char *replident, const char *attnames, int *ncols_out,
		  sluice_buf *select_list)
{
	const char *params[2] = {relid, attnames};
	PGresult *res = sluice_pg_query(
		conn,
		"SELECT a.attname, a.atttypid, a.atttypmod, format_type(a.atttypid, a.atttypmod),"
		"       c.relreplident = 'f' OR coalesce(a.attnum = ANY (i.indkey), false)"
		"  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
		"  LEFT JOIN pg_index i ON i.indrelid = c.oid AND"
		"       CASE c.relreplident WHEN 'd' THEN i.indisprimary"
		"                           WHEN 'i' THEN i.indisreplident ELSE false END"
		" WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped"
		"   AND a.attgenerated = '' AND ($2::name[] IS NULL OR a.attname = ANY "
		"($2::name[]))"
		" ORDER BY a.attnum",
		2, params);
	if (res == NULL)
		return false;
	int n = PQntuples(res);
	Sluice__V1__Column *cols = calloc((size_t)n + 1, sizeof(*cols));
	Sluice__V1__Column **colp = calloc((size_t)n + 1, sizeof(*colp));
	if (cols == NULL || colp == NULL)
		abort();
	for (int i = 0; i < n; i++) {
		sluice__v1__column__init(&cols[i]);
		cols[i].name = PQgetvalue(res, i, 0);
		cols[i].has_type_oid = true;
		cols[i].type_oid = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
		cols[i].has_type_modifier = true;
		cols[i].type_modifier = (int32_t)strtol(PQgetvalue(res, i, 2), NULL, 10);
		cols[i].type_name = PQgetvalue(res, i, 3);
		cols[i].has_key = true;
		cols[i].key = PQgetvalue(res, i, 4)[0] == 't';
		colp[i] = &cols[i];
		char *q = PQescapeIdentifier(conn, cols[i].name, strlen(cols[i].name));
		if (q == NULL)
			abort();
		sluice_buf_printf(select_list, "%s%s", i ? ", " : "", q);
		PQfreemem(q);
	}
	Sluice__V1__Relation r = SLUICE__V1__RELATION__INIT;
	r.id = (uint32_t)strtoul(relid, NULL, 10);
	r.schema = (char *)nsp;
	r.name = (char *)rel;
	r.has_replica_identity = true;
	r.replica_identity = (uint32_t)(unsigned char)replident[0];
	r.n_columns = (size_t)n;
	r.columns = colp;
	r.has_source = true;
	r.source = SLUICE__V1__SOURCE_KIND__SOURCE_POSTGRES;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_RELATION;
	rec.relation = &r;
	bool ok = sluice_writer_append(w, &rec);
	free(colp);
	free(cols);
	PQclear(res);
	*ncols_out = n;
	return ok;
}

/* snapshot_table copies the rows of one table. */
static bool
snapshot_table(PGconn *conn, sluice_writer *w, uint32_t relid, const char *nsp, const char *rel,
	       bool partitioned, const char *select_list, const char *rowfilter, int ncols,
	       bool progress, uint64_t ntables, sluice_rate *rate,
	       const volatile sig_atomic_t *stop, sluice_pgsnapshot_stats *st)
{
	bool ok = false;
	sluice_buf sql = {0};
	char *qn = PQescapeIdentifier(conn, nsp, strlen(nsp));
	char *qr = PQescapeIdentifier(conn, rel, strlen(rel));
	uint8_t *scratch = NULL;
	size_t scratch_cap = 0;
	size_t *starts = calloc((size_t)ncols + 1, sizeof(*starts));
	uint32_t *lens = calloc((size_t)ncols + 1, sizeof(*lens));
	Sluice__V1__ValueKind *kinds = calloc((size_t)ncols + 1, sizeof(*kinds));
	ProtobufCBinaryData *values = calloc((size_t)ncols + 1, sizeof(*values));
	char label[600];
	snprintf(label, sizeof(label), "%s.%s", nsp, rel);
	if (qn == NULL || qr == NULL || starts == NULL || lens == NULL || kinds == NULL ||
	    values == NULL)
		abort();
	/*
	 * ONLY: an inheritance parent's rows without its children's, which are
	 * published (and copied) as tables of their own. A partitioned table is
	 * listed only when the publication publishes via the root, and then its
	 * rows are those of its partitions.
	 */
	sluice_buf_printf(&sql, "COPY (SELECT %s FROM %s%s.%s%s%s) TO STDOUT", select_list,
			  partitioned ? "" : "ONLY ", qn, qr, rowfilter ? " WHERE " : "",
			  rowfilter ? rowfilter : "");
	sluice_buf_append_byte(&sql, '\0');
	PGresult *res = PQexec(conn, (const char *)sql.data);
	if (PQresultStatus(res) != PGRES_COPY_OUT) {
		sluice_log_error("could not copy table %s: %s", label, sluice_pg_error_line(conn));
		PQclear(res);
		goto cleanup;
	}
	PQclear(res);
	for (;;) {
		char *line = NULL;
		int len = PQgetCopyData(conn, &line, 0);
		if (len == -1)
			break;
		if (len < 0) {
			sluice_log_error("could not copy table %s: %s", label,
					 sluice_pg_error_line(conn));
			goto cleanup;
		}
		if ((size_t)len > scratch_cap) {
			scratch_cap = (size_t)len * 2;
			free(scratch);
			scratch = malloc(scratch_cap);
			if (scratch == NULL)
				abort();
		}
		/* A table without columns copies empty lines. */
		int n = ncols == 0 ? 0
				   : sluice_pgsnapshot_copy_text_decode(line, (size_t)len, scratch,
									starts, lens, ncols);
		if (n != ncols) {
			sluice_log_error(
				"could not copy table %s: a COPY row has %d fields, expected "
				"%d",
				label, n, ncols);
			PQfreemem(line);
			goto cleanup;
		}
		for (int i = 0; i < ncols; i++) {
			if (lens[i] == UINT32_MAX) {
				kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_NULL;
				values[i].data = NULL;
				values[i].len = 0;
			} else {
				kinds[i] = SLUICE__V1__VALUE_KIND__VALUE_TEXT;
				values[i].data = scratch + starts[i];
				values[i].len = lens[i];
			}
		}
		Sluice__V1__Row row = SLUICE__V1__ROW__INIT;
		row.n_kinds = row.n_values = (size_t)ncols;
		row.kinds = kinds;
		row.values = values;
		Sluice__V1__SnapshotRow sr = SLUICE__V1__SNAPSHOT_ROW__INIT;
		sr.relation_id = relid;
		sr.row = &row;
		sluice_record rec = SLUICE__V1__RECORD__INIT;
		rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_ROW;
		rec.snapshot_row = &sr;
		sluice_rate_take(rate, 1, (uint64_t)len, stop);
		bool appended = sluice_writer_append(w, &rec);
		st->rows++;
		st->bytes += (uint64_t)len;
		PQfreemem(line);
		if (!appended)
			goto cleanup;
		snapshot_progress(progress, false, st, ntables, label);
	}
	res = PQgetResult(conn);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		sluice_log_error("could not copy table %s: %s", label, sluice_pg_error_line(conn));
		PQclear(res);
		goto cleanup;
	}
	PQclear(res);
	ok = true;

cleanup:
	/* Drain anything left so the connection is usable for the error path. */
	while ((res = PQgetResult(conn)) != NULL)
		PQclear(res);
	free(values);
	free(kinds);
	free(lens);
	free(starts);
	free(scratch);
	PQfreemem(qr);
	PQfreemem(qn);
	sluice_buf_free(&sql);
	return ok;
}

bool
sluice_pgsnapshot_copy(PGconn *conn, sluice_writer *w, const char *publication,
		       const char *snapshot_name, uint64_t consistent_lsn, const char *node,
		       bool progress, sluice_rate *rate, const volatile sig_atomic_t *stop,
		       sluice_pgsnapshot_stats *stats)
{
	bool ok = false;
	PGresult *tables = NULL;
	sluice_buf sql = {0};
	memset(stats, 0, sizeof(*stats));
	if (!sluice_pg_exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
		return false;
	char *lit = PQescapeLiteral(conn, snapshot_name, strlen(snapshot_name));
	if (lit == NULL)
		abort();
	sluice_buf_printf(&sql, "SET TRANSACTION SNAPSHOT %s", lit);
	sluice_buf_append_byte(&sql, '\0');
	PQfreemem(lit);
	if (!sluice_pg_exec(conn, (const char *)sql.data))
		goto cleanup;

	const char *params[1] = {publication};
	tables = sluice_pg_query(
		conn,
		"SELECT c.oid, n.nspname, c.relname, c.relreplident, pt.attnames::text,"
		"       pt.rowfilter, c.relkind"
		"  FROM pg_publication_tables pt"
		"  JOIN pg_namespace n ON n.nspname = pt.schemaname"
		"  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename"
		" WHERE pt.pubname = $1 AND n.nspname <> '" SLUICE_PG_LOCAL_SCHEMA "'"
		" ORDER BY n.nspname, c.relname",
		1, params);
	if (tables == NULL)
		goto cleanup;
	uint64_t ntables = (uint64_t)PQntuples(tables);

	Sluice__V1__SnapshotBegin sb = SLUICE__V1__SNAPSHOT_BEGIN__INIT;
	sb.time_us = sluice_clock_unix_us();
	sb.has_consistent_lsn = true;
	sb.consistent_lsn = consistent_lsn;
	sb.snapshot_name = (char *)snapshot_name;
	sb.origin_node = (char *)node;
	sluice_record rec = SLUICE__V1__RECORD__INIT;
	rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_BEGIN;
	rec.snapshot_begin = &sb;
	if (!sluice_writer_append(w, &rec))
		goto cleanup;

	for (int t = 0; t < PQntuples(tables); t++) {
		const char *relid = PQgetvalue(tables, t, 0);
		const char *nsp = PQgetvalue(tables, t, 1);
		const char *rel = PQgetvalue(tables, t, 2);
		const char *attnames = PQgetisnull(tables, t, 4) ? NULL : PQgetvalue(tables, t, 4);
		const char *rowfilter = PQgetisnull(tables, t, 5) ? NULL : PQgetvalue(tables, t, 5);
		sluice_buf select_list = {0};
		int ncols = 0;
		bool table_ok =
			snapshot_relation(conn, w, relid, nsp, rel, PQgetvalue(tables, t, 3),
					  attnames, &ncols, &select_list);
		if (table_ok) {
			sluice_buf_append_byte(&select_list, '\0');
			table_ok = snapshot_table(conn, w, (uint32_t)strtoul(relid, NULL, 10), nsp,
						  rel, PQgetvalue(tables, t, 6)[0] == 'p',
						  (const char *)select_list.data, rowfilter, ncols,
						  progress, ntables, rate, stop, stats);
		}
		sluice_buf_free(&select_list);
		if (!table_ok)
			goto cleanup;
		stats->tables++;
		snapshot_progress(progress, false, stats, ntables, rel);
	}

	Sluice__V1__SnapshotEnd se = SLUICE__V1__SNAPSHOT_END__INIT;
	se.has_row_count = true;
	se.row_count = stats->rows;
	se.has_relation_count = true;
	se.relation_count = (uint32_t)stats->tables;
	rec.body_case = SLUICE__V1__RECORD__BODY_SNAPSHOT_END;
	rec.snapshot_end = &se;
	if (!sluice_writer_append(w, &rec) || !sluice_writer_flush(w))
		goto cleanup;
	snapshot_progress(progress, true, stats, ntables, "done");
	ok = true;

cleanup:
	PQclear(tables);
	sluice_buf_free(&sql);
	/* Read-only: ending it either way loses nothing. */
	sluice_pg_exec(conn, ok ? "COMMIT" : "ROLLBACK");
	return ok;
}
