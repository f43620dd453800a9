#!/usr/bin/env bash
# Capture refuses bad set-ups with errors that name the thing and the cause:
# wal_level, REPLICATION privilege, missing slot/publication, slot in use,
# tables without a replica identity on --create (and --allow-no-identity),
# unknown key file, a store written with another key; SIGTERM exits 0.
# Usage: test_capture_errors.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
fail=0
expect() { # expect NAME EXIT PATTERN LOGFILE -- the command ran before
	local name=$1 want=$2 got=$3 pattern=$4 log=$5
	if [ "$got" != "$want" ] || ! grep -q -- "$pattern" "$log"; then
		echo "FAIL: $name: exit $got (want $want), log:" >&2
		cat "$log" >&2
		fail=$((fail + 1))
	else
		echo "ok: $name"
	fi
}
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
"$SLUICE" keygen --out "$W/other" >/dev/null 2>&1

pg_start replica "wal_level = replica"
"$SLUICE" capture --source "$(pg_conninfo replica)" --store "$W/s0" --stream e --key "$W/k.key" \
	--create --no-progress 2>"$W/e1.log"
expect "wal_level replica" 3 $? 'wal_level = logical' "$W/e1.log"
pg_stop replica

pg_start src
SRC=$(pg_conninfo src)
run() { "$SLUICE" --log-format text capture --source "$SRC" --store "$W/store" --stream e --key "$W/k.key" --no-progress "$@"; }

run --exit-when-caught-up 2>"$W/e2.log"
expect "missing publication" 3 $? 'publication "sluice_e" does not exist.*--create' "$W/e2.log"
pg_psql src postgres -c "CREATE PUBLICATION sluice_e FOR ALL TABLES" >/dev/null
run --exit-when-caught-up 2>"$W/e3.log"
expect "missing slot" 3 $? 'replication slot "sluice_e" does not exist.*--create' "$W/e3.log"

"$SLUICE" capture --source "$SRC" --store "$W/store" --stream e --key "$W/missing.key" 2>"$W/e4.log"
expect "unknown key file" 3 $? 'missing.key' "$W/e4.log"

pg_psql src postgres -c "CREATE ROLE norepl LOGIN" >/dev/null
"$SLUICE" capture --source "host=127.0.0.1 port=$(pg_port src) user=norepl dbname=postgres" \
	--store "$W/s5" --stream e --key "$W/k.key" --create --no-progress 2>"$W/e5.log"
expect "no REPLICATION privilege" 3 $? 'REPLICATION' "$W/e5.log"

# A working capture, then a second one on the same slot: in use.
pg_psql src postgres -c "CREATE TABLE t (id int PRIMARY KEY)" >/dev/null
"$SLUICE" --log-format text capture --source "$SRC" --store "$W/store" --stream e \
	--key "$W/k.key" --no-progress --create 2>"$W/run.log" &
pid=$!
for _ in $(seq 50); do grep -q "streaming from" "$W/run.log" 2>/dev/null && break; sleep 0.2; done
"$SLUICE" --log-format text capture --source "$SRC" --store "$W/store2" --stream e --key "$W/k.key" \
	--slot sluice_e --publication sluice_e --no-progress --busy-timeout 2 2>"$W/e6.log"
expect "slot in use" 3 $? 'in use by another process for 2 s' "$W/e6.log"
# the same stream, from another process: the store refuses a second writer
run 2>"$W/e7.log"
expect "stream locked by a writer" 3 $? 'being written by another process' "$W/e7.log"
pg_psql src postgres -c "INSERT INTO t VALUES (1)" >/dev/null
sleep 1
kill -TERM "$pid"
wait "$pid"
expect "SIGTERM exits 0" 0 $? 'capture stopped' "$W/run.log"

# The stream was written with key k: another key may not continue it.
"$SLUICE" capture --source "$SRC" --store "$W/store" --stream e --key "$W/other.key" \
	--exit-when-caught-up --no-progress 2>"$W/e8.log"
expect "store written with another key" 3 $? 'is signed by key' "$W/e8.log"

"$SLUICE" inspect --store "$W/store" --stream e --trust "$W/k.pub" --records --json >"$W/r.json"
grep -q '"type":"insert"' "$W/r.json" || { echo "FAIL: insert before SIGTERM not captured" >&2; fail=$((fail + 1)); }
# --create on a database with tables that have no replica identity: a FOR ALL
# TABLES publication would make PostgreSQL refuse every UPDATE and DELETE on
# them, so capture refuses, names them and the ways out, and creates nothing.
pg_psql src postgres -c "CREATE DATABASE app" >/dev/null
APP=$(pg_conninfo src app)
psql -X -q -v ON_ERROR_STOP=1 "$APP" >/dev/null <<'SQL'
CREATE TABLE nokey (a int, b text);
CREATE TABLE nothing (a int PRIMARY KEY);
ALTER TABLE nothing REPLICA IDENTITY NOTHING;
CREATE TABLE keyed (a int PRIMARY KEY);
CREATE TABLE fullid (a int);
ALTER TABLE fullid REPLICA IDENTITY FULL;
INSERT INTO nokey VALUES (1, 'x');
SQL
noid() { "$SLUICE" --log-format text capture --source "$APP" --store "$W/s9" --stream noid \
	--key "$W/k.key" --create --exit-when-caught-up --no-progress "$@"; }
noid 2>"$W/e9.log"
expect "--create refuses tables without replica identity" 3 $? \
	'refusing to create publication "sluice_noid".*2 tables have no replica identity.*public.nokey, public.nothing.*REPLICA IDENTITY FULL.*--allow-no-identity' \
	"$W/e9.log"
if grep -q 'keyed\|fullid' "$W/e9.log"; then
	echo "FAIL: the refusal names tables that have an identity" >&2
	fail=$((fail + 1))
fi
if [ "$(psql -X -At "$APP" -c "SELECT count(*) FROM pg_publication")" != 0 ] ||
	! psql -X -q "$APP" -c "UPDATE nokey SET b = 'y'" >/dev/null 2>&1; then
	echo "FAIL: after the refusal a publication exists or UPDATE of nokey fails" >&2
	fail=$((fail + 1))
else
	echo "ok: nothing created; the application can still update nokey"
fi
noid --allow-no-identity 2>"$W/e10.log"
expect "--allow-no-identity creates it anyway, with a warning" 0 $? \
	'for all tables although 2 tables have no replica identity' "$W/e10.log"
if psql -X -q "$APP" -c "UPDATE nokey SET b = 'z'" >/dev/null 2>&1; then
	echo "FAIL: UPDATE of nokey still works under a FOR ALL TABLES publication?" >&2
	fail=$((fail + 1))
else
	echo "ok: as warned, PostgreSQL now refuses UPDATE of nokey"
fi

[ "$fail" -eq 0 ] && echo "test_capture_errors: passed"
exit "$fail"
