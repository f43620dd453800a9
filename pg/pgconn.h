/* libpq helpers: connections (normal and replication), queries with logged errors, LSNs. */
#ifndef SLUICE_PG_PGCONN_H
#define SLUICE_PG_PGCONN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * sluice's own node-local schema on a prepared database (node name,
 * tombstones, conflict log): never captured, never copied by a snapshot,
 * never written by apply from a stream.
 */
#define SLUICE_PG_LOCAL_SCHEMA "sluice"

/*
 * sluice_pg_connect opens a connection described by conninfo (URI or
 * key=value; PG* environment variables apply as in psql). With replication,
 * it is a logical replication connection (replication=database). The
 * server's NOTICE and WARNING messages go to sluice's log, naming what
 * (which must outlive the connection: a string literal).
 * @return the connection, or NULL after logging why.
 */
PGconn *sluice_pg_connect(const char *conninfo, bool replication, const char *what);

/*
 * sluice_pg_set_canonical fixes the settings that change how values print
 * (TimeZone UTC, DateStyle ISO, IntervalStyle postgres, extra_float_digits 1,
 * bytea_output hex), so a value has one text form in the stream, in apply's
 * statements and in tombstone keys, whatever the servers' defaults are.
 */
bool sluice_pg_set_canonical(PGconn *conn);

/* The same settings as SET clauses of a function definition. */
#define SLUICE_PG_CANONICAL_FUNCTION_SETTINGS                                                      \
	"SET TimeZone = 'UTC' SET DateStyle = 'ISO, MDY' SET IntervalStyle = 'postgres' "          \
	"SET extra_float_digits = 1 SET bytea_output = 'hex'"

/* sluice_pg_exec runs a command that returns no rows; logs and returns false on error. */
bool sluice_pg_exec(PGconn *conn, const char *sql);

/*
 * sluice_pg_query runs sql with text parameters and returns its result, or
 * NULL after logging. The caller PQclear()s the result.
 */
PGresult *sluice_pg_query(PGconn *conn, const char *sql, int nparams, const char *const *params);

/* sluice_pg_lsn_parse reads "X/X"; false if malformed. */
bool sluice_pg_lsn_parse(const char *text, uint64_t *lsn);
/* sluice_pg_lsn_format writes "X/X" into out (at least 24 bytes). */
void sluice_pg_lsn_format(uint64_t lsn, char *out, size_t size);

/* Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC). */
#define SLUICE_PG_EPOCH_OFFSET_US INT64_C(946684800000000)

/* sluice_pg_now returns the current time in PostgreSQL-epoch microseconds. */
int64_t sluice_pg_now(void);

/* sluice_pg_error_line returns the first line of the connection's last error (static buffer). */
const char *sluice_pg_error_line(PGconn *conn);

#endif
