/* libpq helpers: connections (normal and replication), queries with logged errors, LSNs. */
#include "pgconn.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"

const char *
sluice_pg_error_line(PGconn *conn)
{
	static char line[1024];
	const char *msg = conn ? PQerrorMessage(conn) : "no connection";
	snprintf(line, sizeof(line), "%s", msg);
	/* libpq messages end in a newline and may hold a DETAIL line: keep them on one line. */
	for (char *p = line; *p; p++)
		if (*p == '\n')
			*p = ' ';
	size_t n = strlen(line);
	while (n > 0 && line[n - 1] == ' ')
		line[--n] = '\0';
	return line;
}

/*
 * pg_notice logs a server's NOTICE or WARNING (a trigger's RAISE, a
 * deprecation) through sluice's logger instead of libpq's default printing
 * onto stderr, naming the server it came from (arg: a string literal).
 */
static void
pg_notice(void *arg, const PGresult *res)
{
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (msg == NULL)
		msg = "";
	if (sev != NULL && strcmp(sev, "WARNING") == 0)
		sluice_log_warn("%s says: WARNING: %s (SQLSTATE %s)", (const char *)arg, msg,
				state ? state : "?");
	else
		sluice_log_info("%s says: %s: %s", (const char *)arg, sev ? sev : "NOTICE", msg);
}

PGconn *
sluice_pg_connect(const char *conninfo, bool replication, const char *what)
{
	const char *keys[] = {"dbname", "replication", "fallback_application_name", NULL};
	const char *vals[] = {conninfo, replication ? "database" : NULL, "sluice", NULL};
	if (!replication) {
		keys[1] = "fallback_application_name";
		vals[1] = "sluice";
		keys[2] = NULL;
	}
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL) {
		sluice_log_error("could not connect to %s: out of memory", what);
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		const char *err = sluice_pg_error_line(conn);
		if (replication && strstr(err, "replication") != NULL &&
		    (strstr(err, "must be superuser") || strstr(err, "permission denied") ||
		     strstr(err, "must have") || strstr(err, "REPLICATION")))
			sluice_log_error(
				"could not open a replication connection to %s: %s (the role "
				"needs the REPLICATION attribute: ALTER ROLE ... REPLICATION)",
				what, err);
		else
			sluice_log_error("could not connect to %s%s: %s", what,
					 replication ? " for replication" : "", err);
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeReceiver(conn, pg_notice, (void *)what);
	return conn;
}

bool
sluice_pg_set_canonical(PGconn *conn)
{
	return sluice_pg_exec(conn, "SET TimeZone = 'UTC'") &&
	       sluice_pg_exec(conn, "SET DateStyle = 'ISO, MDY'") &&
	       sluice_pg_exec(conn, "SET IntervalStyle = 'postgres'") &&
	       sluice_pg_exec(conn, "SET extra_float_digits = 1") &&
	       sluice_pg_exec(conn, "SET bytea_output = 'hex'");
}

bool
sluice_pg_exec(PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);
	bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
	if (!ok)
		sluice_log_error("could not run \"%s\": %s", sql, sluice_pg_error_line(conn));
	PQclear(res);
	return ok;
}

PGresult *
sluice_pg_query(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		sluice_log_error("could not run query \"%.80s\": %s", sql,
				 sluice_pg_error_line(conn));
		PQclear(res);
		return NULL;
	}
	return res;
}

bool
sluice_pg_lsn_parse(const char *text, uint64_t *lsn)
{
	unsigned int hi, lo;
	int n = 0;
	if (sscanf(text, "%X/%X%n", &hi, &lo, &n) != 2 || text[n] != '\0')
		return false;
	*lsn = ((uint64_t)hi << 32) | lo;
	return true;
}

void
sluice_pg_lsn_format(uint64_t lsn, char *out, size_t size)
{
	snprintf(out, size, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xFFFFFFFFu));
}

int64_t
sluice_pg_now(void)
{
	return sluice_clock_unix_us() - SLUICE_PG_EPOCH_OFFSET_US;
}
