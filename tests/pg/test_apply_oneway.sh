#!/usr/bin/env bash
# One-way replication source -> stream -> target with the default (replace)
# strategy. Both servers have the same schema: int/text/numeric/bytea/jsonb/
# timestamptz/float columns, a composite primary key, REPLICA IDENTITY FULL
# tables without a key (one with duplicate rows), a TOASTed column updated
# without touching it, pgbench tables (filled by `pgbench -i` before capture,
# so they arrive through the snapshot).
#  1. catch-up: `capture --create --snapshot`, a mixed workload (inserts,
#     updates incl. key changes, deletes, NULLs, a truncate, multi-statement
#     transactions, savepoints, rollbacks, pgbench), capture and apply with
#     --exit-when-caught-up: every table equal row by row; a second apply
#     applies nothing; origin progress = last txseq of the stream.
#  2. live: capture and apply both following while a pgbench workload runs
#     and 4 MiB transactions fill and seal a segment; after a marker
#     transaction arrives both stop on SIGTERM with status 0; every table
#     equal; origin progress = last txseq.
# Usage: test_apply_oneway.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"

pg_step_checks oneway

# Sanitized builds are several times slower.
PGBENCH_TXNS=400
LIVE_SECONDS=8
LIVE_RATE=150
if [ -n "${SLUICE_SANITIZED:-}" ]; then
	PGBENCH_TXNS=150
	LIVE_RATE=50
fi

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
CMP=(python3 "$HERE/compare_dbs.py")
export PATH=$PGBIN:$PATH

# origin_progress SERVER DB STREAM: txseq recorded by apply (0 when none).
origin_progress() {
	pg_psql "$1" "$2" -c "SELECT coalesce((SELECT pg_replication_origin_progress(roname, true) FROM pg_replication_origin WHERE roname = 'sluice_$3@$2'), '0/0')" |
		python3 -c 'import sys; h, l = sys.stdin.read().strip().split("/"); print((int(h, 16) << 32) | int(l, 16))'
}
# last_txseq STREAM: last txseq of a stream, from sluice verify's summary.
last_txseq() {
	"$SLUICE" verify --store "$W/store" --stream "$1" --trust "$W/k.pub" --json |
		python3 -c 'import json, sys
for l in sys.stdin:
    r = json.loads(l)
    if r.get("type") == "summary":
        assert r["ok"], r
        print(r["last_txseq"])'
}

SCHEMA=$(
	cat <<'SQL'
CREATE TABLE items (id bigint PRIMARY KEY, qty int NOT NULL, price numeric(12,2), name text,
  data bytea, doc jsonb, at timestamptz, ratio double precision, big numeric);
-- composite primary key
CREATE TABLE pairs (a int, b text, v numeric, note text, PRIMARY KEY (a, b));
-- no key, every column identifies a row
CREATE TABLE nokey (k int, v text, n numeric, at timestamptz);
ALTER TABLE nokey REPLICA IDENTITY FULL;
-- no key and duplicate rows: a change of one of two equal rows changes one row
CREATE TABLE dups (k int, v text);
ALTER TABLE dups REPLICA IDENTITY FULL;
-- out-of-line TOAST: updates that leave body alone send it as unchanged
CREATE TABLE docs (id int PRIMARY KEY, rev int NOT NULL, body text, meta jsonb);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE trunc_me (id int PRIMARY KEY, v text);
CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
-- 4 MiB rows of random bytes: enough of them fill a 64 MiB segment
CREATE TABLE blob (id int PRIMARY KEY, b bytea);
SQL
)
FILL=$(
	cat <<'SQL'
INSERT INTO items SELECT g, g % 7, g * 1.25, 'item ' || g, decode(md5(g::text), 'hex'),
  jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g % 3), 'nested', jsonb_build_object('x', g / 7.0)),
  '2024-01-01 00:00+00'::timestamptz + g * interval '1 hour 7 seconds', g / 3.0, 10::numeric ^ 40 + g
  FROM generate_series(1, 2000) g;
INSERT INTO pairs SELECT g / 4, 'b' || (g % 4), g * 0.5, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END
  FROM generate_series(1, 400) g;
INSERT INTO nokey SELECT g, 'v' || g, g * 1.1, '2024-06-01 12:00+02'::timestamptz + g * interval '1 day' FROM generate_series(1, 300) g;
INSERT INTO dups SELECT g % 50, 'same' FROM generate_series(1, 200) g;
INSERT INTO docs SELECT g, 0, (SELECT string_agg(md5((g * 1000 + i)::text), ' ') FROM generate_series(1, 400) i),
  jsonb_build_object('id', g) FROM generate_series(1, 60) g;
INSERT INTO trunc_me SELECT g, 'before truncate ' || g FROM generate_series(1, 100) g;
SQL
)

# ---- 1. catch-up ---------------------------------------------------------------
pg_psql src postgres -c "$SCHEMA" -c "$FILL" || die "source schema"
pgbench -i -s 1 -q "$(pg_conninfo src)" >"$W/pgbench-init.log" 2>&1 || {
	cat "$W/pgbench-init.log" >&2
	die "pgbench -i"
}
# The target gets the schema only (pgbench tables included), before the publication exists.
pg_dump -s -d "$(pg_conninfo src)" >"$W/schema.sql" || die "pg_dump -s"
pg_psql dst postgres -f "$W/schema.sql" >/dev/null || die "target schema"
say "schemas ready"

CAP=("$SLUICE" capture --source "$(pg_conninfo src)" --store "$W/store" --stream one --key "$W/k.key" --no-progress)
"${CAP[@]}" --create --allow-no-identity --snapshot --exit-when-caught-up 2>"$W/cap0.log" || {
	cat "$W/cap0.log" >&2
	die "capture --create --snapshot"
}

pg_psql src postgres >"$W/workload.log" 2>&1 <<'SQL' || die "workload: $(cat "$W/workload.log")"
-- single-statement transactions
INSERT INTO items SELECT g, g % 5, g * 0.01, 'new ' || g, decode(md5((-g)::text), 'hex'),
  jsonb_build_object('new', true, 'arr', jsonb_build_array(1, 'two', NULL, 3.5)),
  now(), -g / 7.0, -g FROM generate_series(2001, 2600) g;
UPDATE items SET qty = qty + 1, doc = doc || '{"updated": true}' WHERE id % 10 = 0;
UPDATE items SET id = id + 100000 WHERE id % 97 = 0;
DELETE FROM items WHERE id % 13 = 0;
UPDATE items SET name = NULL, data = NULL, doc = NULL, price = NULL, at = NULL WHERE id % 31 = 1;
UPDATE items SET data = '\x00ff0a0d5c'::bytea, name = E'tab\there\nnew line ''quoted'' \\ back "dq"',
  doc = '{"s": "a\"b\\c", "u": "grüße 日本 🎉", "e": {}}', ratio = 'NaN', price = -0.01 WHERE id = 5;
UPDATE items SET ratio = 'Infinity', big = 'NaN', at = 'infinity' WHERE id = 6;
-- multi-statement transactions
BEGIN;
INSERT INTO pairs SELECT 1000 + g, 'x', g, 'tx' FROM generate_series(1, 50) g;
UPDATE pairs SET b = b || '-moved' WHERE a % 5 = 0 AND a < 100;
UPDATE pairs SET a = a + 500 WHERE a % 7 = 0 AND a < 100 AND b NOT LIKE '%moved';
DELETE FROM pairs WHERE a % 11 = 0;
UPDATE items SET qty = -1 WHERE id BETWEEN 100 AND 120;
INSERT INTO items VALUES (900001, 1, 1, 'inserted and deleted', NULL, NULL, NULL, NULL, NULL);
DELETE FROM items WHERE id = 900001;
INSERT INTO items VALUES (900002, 1, 1, 'inserted then moved', NULL, NULL, NULL, NULL, NULL);
UPDATE items SET id = 900003 WHERE id = 900002;
UPDATE items SET id = 900004, qty = 2 WHERE id = 900003;
COMMIT;
BEGIN;
UPDATE docs SET rev = rev + 1 WHERE id % 2 = 0;
UPDATE docs SET rev = rev + 1, meta = '{"x": 1}' WHERE id % 3 = 0;
UPDATE docs SET body = body || ' appended' WHERE id = 7;
UPDATE docs SET id = id + 1000 WHERE id IN (11, 12);
DELETE FROM docs WHERE id = 9;
INSERT INTO docs VALUES (5000, 0, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 500) i), NULL);
COMMIT;
UPDATE docs SET rev = rev + 10 WHERE id = 5000;
UPDATE nokey SET v = v || '!' WHERE k % 4 = 0;
DELETE FROM nokey WHERE k % 9 = 0;
INSERT INTO nokey VALUES (NULL, NULL, NULL, NULL), (5000, 'with nulls', NULL, now());
UPDATE nokey SET n = 1.5 WHERE k IS NULL;
UPDATE nokey SET at = NULL WHERE k = 5000;
-- one row of each pair of equal rows
DELETE FROM dups WHERE ctid IN (SELECT min(ctid) FROM dups WHERE k % 3 = 0 GROUP BY k);
UPDATE dups SET v = 'changed' WHERE ctid IN (SELECT min(ctid) FROM dups WHERE k % 3 = 1 GROUP BY k);
INSERT INTO dups SELECT 7, 'same' FROM generate_series(1, 3);
-- truncate, then new rows
TRUNCATE trunc_me;
INSERT INTO trunc_me SELECT g, 'after truncate ' || g FROM generate_series(50, 80) g;
-- a savepoint rolled back, and a transaction rolled back: neither reaches the target
BEGIN;
INSERT INTO pairs VALUES (7777, 'kept', 1, NULL);
SAVEPOINT s;
INSERT INTO pairs VALUES (7777, 'rolled back', 1, NULL);
ROLLBACK TO SAVEPOINT s;
COMMIT;
BEGIN;
DELETE FROM items;
ROLLBACK;
SQL
pgbench -n -c 2 -j 2 -t $((PGBENCH_TXNS / 2)) "$(pg_conninfo src)" >"$W/pgbench.log" 2>&1 || {
	cat "$W/pgbench.log" >&2
	die "pgbench"
}
pg_psql src postgres -c "UPDATE pgbench_accounts SET filler = 'touched' WHERE aid % 1000 = 0" \
	-c "DELETE FROM pgbench_tellers WHERE tid = 10" || die "workload after pgbench"
"${CAP[@]}" --exit-when-caught-up 2>"$W/cap1.log" || {
	cat "$W/cap1.log" >&2
	die "capture --exit-when-caught-up"
}
LAST=$(last_txseq one)
say "stream captured: txseq 1..$LAST"

APPLY=("$SLUICE" apply --store "$W/store" --stream one --trust "$W/k.pub" --target "$(pg_conninfo dst)")
"${APPLY[@]}" --exit-when-caught-up 2>"$W/apply1.log"
check "apply --exit-when-caught-up exits 0 (status $?)"
grep -q "apply: $LAST transactions (txseq 1..$LAST)" "$W/apply1.log"
check "apply reports $LAST transactions (txseq 1..$LAST)"
grep -q "conflicts: none" "$W/apply1.log"
check "apply into the empty target has no conflicts"
say "applied"
# dups separately, to tell its failure apart
TABLES=$(pg_psql src postgres -c "SELECT string_agg(schemaname || '.' || relname, ',' ORDER BY relname) FROM pg_stat_user_tables WHERE relname <> 'dups'")
"${CMP[@]}" compare "$(pg_conninfo src)" "$(pg_conninfo dst)" --tables "$TABLES"
check "every table (but dups) equal between source and target"
"${CMP[@]}" compare "$(pg_conninfo src)" "$(pg_conninfo dst)" --tables public.dups
check "dups (no key, REPLICA IDENTITY FULL, equal rows): deleting or updating one of two equal rows changes one row on the target too"
[ "$(origin_progress dst postgres one)" = "$LAST" ]
check "origin progress of sluice_one = last txseq $LAST"

"${APPLY[@]}" --exit-when-caught-up 2>"$W/apply2.log"
check "second apply exits 0"
grep -q '"applying stream \\"one\\" from txseq '$((LAST + 1)) "$W/apply2.log" &&
	grep -q "apply: 0 transactions" "$W/apply2.log"
check "second apply resumes after txseq $LAST and applies nothing"
[ "$(origin_progress dst postgres one)" = "$LAST" ]
check "origin progress unchanged after the second apply"
"${CMP[@]}" compare "$(pg_conninfo src)" "$(pg_conninfo dst)" --tables "$TABLES" --quiet
check "tables (but dups) still equal after the second apply"
if [ "$FAILS" -ne 0 ]; then
	echo "--- apply log" >&2
	cat "$W/apply1.log" >&2
fi
say "catch-up part done"

# ---- 2. live: capture and apply following the workload ---------------------------
for s in src dst; do pg_psql "$s" postgres -c "CREATE DATABASE live" || die "create database live"; done
pg_psql src live -c "CREATE EXTENSION pgcrypto" -c "$SCHEMA" -c "$FILL" || die "live schema"
pgbench -i -s 1 -q "$(pg_conninfo src live)" >"$W/pgbench-init-live.log" 2>&1 || die "pgbench -i live"
pg_dump -s -d "$(pg_conninfo src live)" >"$W/schema-live.sql" || die "pg_dump -s live"
pg_psql dst live -f "$W/schema-live.sql" >/dev/null || die "live target schema"

"$SLUICE" capture --source "$(pg_conninfo src live)" --store "$W/store" --stream live --key "$W/k.key" \
	--no-progress --create --allow-no-identity --snapshot 2>"$W/cap-live.log" &
CAP_PID=$!
rc=0
pg_wait_streaming "$CAP_PID" "$W/cap-live.log" || rc=$?
[ "$rc" != 1 ] || die "live capture exited before streaming"
"$SLUICE" apply --store "$W/store" --stream live --trust "$W/k.pub" --target "$(pg_conninfo dst live)" \
	2>"$W/apply-live.log" &
APPLY_PID=$!
say "live capture and apply started"

# Clients touch disjoint rows (parity of client_id), so they never wait on each other.
cat >"$W/items.sql" <<'SQL'
\set i 2 * random(1, 999) + :client_id
\set n random(1, 9999999)
\set m 2 * random(1, 40)
\set d 2 * random(41, 80)
\set doc 2 * random(1, 29) + :client_id
\set k 2 * random(1, 149) + :client_id
BEGIN;
INSERT INTO items VALUES (10000000 * (:client_id + 1) + :n, 1, random(), 'live', '\xdeadbeef', '{"live": 1}', now(), random(), NULL)
  ON CONFLICT DO NOTHING;
UPDATE items SET qty = qty + 1, doc = jsonb_set(coalesce(doc, '{}'), '{n}', to_jsonb(qty)) WHERE id = :i;
UPDATE items SET id = id + 100000000 WHERE id = :i + :m;
DELETE FROM items WHERE id = :i + :d;
UPDATE docs SET rev = rev + 1 WHERE id = :doc;
UPDATE nokey SET n = n + 1 WHERE k = :k;
COMMIT;
SQL
pgbench -n -c 2 -j 2 -T "$LIVE_SECONDS" -R "$LIVE_RATE" -f "$W/items.sql@1" -b tpcb-like@2 \
	"$(pg_conninfo src live)" >"$W/pgbench-live.log" 2>&1 &
BENCH_PID=$!
# 17 transactions of 4 MiB of random bytes: the segment fills up and is sealed while apply follows.
(
	for i in $(seq 1 17); do
		pg_psql src live -c "INSERT INTO blob SELECT $i, string_agg(gen_random_bytes(1024), '') FROM generate_series(1, 4096)" || exit 1
		sleep 0.2
	done
) >"$W/blobs.log" 2>&1 &
BLOBS_PID=$!
sleep 2
pg_psql src live -c "BEGIN" -c "TRUNCATE trunc_me" \
	-c "INSERT INTO trunc_me SELECT g, 'live truncate ' || g FROM generate_series(1, 10) g" -c "COMMIT" ||
	die "live truncate"
wait "$BENCH_PID" || {
	cat "$W/pgbench-live.log" >&2
	die "live pgbench"
}
wait "$BLOBS_PID" || {
	cat "$W/blobs.log" >&2
	die "live blob transactions"
}
grep -E '^number of transactions actually processed' "$W/pgbench-live.log"
pg_psql src live -c "INSERT INTO marker (id) VALUES (1)" || die "marker"
arrived=0
for _ in $(seq 1 600); do
	[ "$(pg_psql dst live -c 'SELECT count(*) FROM marker')" = 1 ] && arrived=1 && break
	kill -0 "$APPLY_PID" 2>/dev/null || break
	sleep 0.1
done
[ "$arrived" = 1 ]
check "the marker transaction reached the target while following"
say "caught up"
kill -TERM "$APPLY_PID"
wait "$APPLY_PID"
check "live apply stops on SIGTERM with status 0 (status $?)"
grep -q '"msg":"stopping on signal' "$W/apply-live.log"
check "live apply logged that it stopped on the signal"
kill -TERM "$CAP_PID"
wait "$CAP_PID"
check "live capture stops on SIGTERM with status 0 (status $?)"
LIVE_LAST=$(last_txseq live)
SEGS=$(find "$W/store/live" -name '*.seg' | wc -l)
[ "$SEGS" -ge 2 ]
check "live: the stream has $SEGS segments (a segment was sealed while apply followed)"
"${CMP[@]}" compare "$(pg_conninfo src live)" "$(pg_conninfo dst live)"
check "live: every table equal between source and target"
[ "$(origin_progress dst live live)" = "$LIVE_LAST" ]
check "live: origin progress of sluice_live = last txseq $LIVE_LAST"
if grep -q '"level":"error"' "$W/apply-live.log"; then
	grep '"level":"error"' "$W/apply-live.log" >&2
	false
fi
check "live apply logged no errors"

say "done"
if [ "$FAILS" -ne 0 ]; then
	echo "test_apply_oneway: $FAILS checks FAILED" >&2
	exit 1
fi
echo "test_apply_oneway: passed ($((SECONDS - T0)) s)"
