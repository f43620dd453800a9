#!/usr/bin/env bash
# Grouped apply (issue 15): consecutive source transactions applied in one
# target transaction must leave exactly what one-at-a-time apply leaves.
# Every target here is unprepared and uses the replace strategy (where apply
# groups); each target database starts as a pg_dump of its source taken
# before the stream was created.
#  a. a workload built to defeat grouping, in phases of consecutive small
#     source transactions (one statement each): keys deleted and re-inserted;
#     rows swapping unique values through an intermediate (and NULL), a
#     three-way rotation, primary keys swapped; a row changed 1,000 times;
#     updates leaving an out-of-line TOAST value unchanged (also on a row
#     inserted, or moved to a new key, in the same group; rows moved onto a
#     key deleted just before, or swapping keys); insert, update, delete of
#     one key; key-changing updates followed by updates of the new key (and
#     inserts on the old one); a partitioned table with rows moving
#     partition; GENERATED ALWAYS AS IDENTITY and stored generated columns; a
#     REPLICA IDENTITY FULL table without a key holding duplicate rows (one
#     copy updated, one deleted); values multi-row statements must carry
#     intact (multi-dimensional and empty arrays, composites, enums, domains,
#     quoted names, a text and timestamptz key, a FULL table of arrays and
#     jsonb). The stream is applied phase by phase
#     (--until-txseq at each phase's end) into g_phase with large groups and
#     into one_phase with --group-size 1: after every phase both targets
#     hold the same rows and the two runs print the same counters; and in one
#     run into g_all (large groups) and one_all (--group-size 1): both equal
#     the source, with the same counters. Grouping really happened: rows of
#     50 source transactions share target transactions (xmin) on g_phase,
#     not on one_phase.
#  b. conflicts: c_group and c_one, where before apply some rows the stream
#     updates or deletes are gone and some rows it inserts exist (other
#     values); the stream applied in one run, large groups into c_group,
#     --group-size 1 into c_one: both end identical, with the same counters
#     (conflicts included), and c_group's log says it applied a group again
#     "one at a time". Before that, --dry-run runs of both report the same
#     counters, and commit nothing.
#  c. kill -9 in the middle of large groups: pgbench -i -s 2 copied to the
#     target, then 2 x 3,000 pgbench transactions captured. Apply sends a
#     group's statements and commit without waiting for the target, and is
#     done with this stream in ~0.2 s: it is slowed on both sides (--max-rate
#     8000 rows/s; on the target a trigger, ENABLE ALWAYS, sleeps 1 ms on one
#     pgbench_history insert in 8) so that groups are in flight for a while.
#     Round 1 applies the stream with --group-size 2000 unkilled: its time,
#     and its groups (by xmin: at most 2,000 source transactions each, fewer
#     than 10). Then apply --group-size 2000 (groups ended by size, sometimes
#     by --group-ms 200) is killed with SIGKILL at a random moment of the time
#     the rest of the stream takes, 5 times (3 under sanitizers, 20 with SLUICE_TEST_LONG=1), and
#     restarted each time: at once, or after checking the quiet target
#     (pgbench_history rows = origin progress, the four balance sums equal:
#     whole source transactions only; progress never goes back). When a run
#     reaches the end of the stream, and at the end: origin progress = last
#     txseq, the target equals the source, pgbench_history holds no row twice;
#     kills left go on in a fresh copy of the target. Kills came in the middle
#     of groups: the target rolled back an open group (its server logged an
#     unexpected EOF with an open transaction) or committed groups sent before
#     the kill, for at least a quarter of them. No run fell back to one at a
#     time; none logged an error.
# Usage: test_apply_group.sh SLUICE
#   SEED=N repeats part c's kill schedule; PARTS=ac runs only parts a and c
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks "apply group"
export PATH=$PGBIN:$PATH
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$SEED
echo "apply group: seed $SEED (rerun with SEED=$SEED)"

KILLS=5
[ -n "${SLUICE_SANITIZED:-}" ] && KILLS=3 # the kill count is the gcc pass's job
[ "${SLUICE_TEST_LONG:-}" = 1 ] && KILLS=20
BENCH_TXNS=${BENCH_TXNS:-3000} # per pgbench client (2 clients): 3 groups of 2,000
BENCH_RATE=8000                # apply --max-rate (rows/s) in part c: ~4 rows a transaction
# Large groups: a phase (or the whole stream) is one group unless apply has to
# apply one again one transaction at a time.
BIG=(--group-size 10000 --group-bytes 1G --group-ms 60000)
ONE=(--group-size 1)
CMP=(python3 "$HERE/compare_dbs.py")
PARTS=${PARTS:-abc} # PARTS=c: only part c (b needs a's stream: PARTS=b runs its set-up)
want_part() { [[ $PARTS == *$1* ]]; }

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
SRC=$(pg_conninfo src)
dst() { pg_conninfo dst "$1"; }
q() { # q SERVER DB SQL
	local s=$1 d=$2
	shift 2
	pg_psql "$s" "$d" -c "$*"
}

# last_txseq STREAM: the stream's last txseq (sluice verify's summary).
last_txseq() {
	"$SLUICE" verify --store "$W/store" --stream "$1" --trust "$W/k.pub" --json |
		python3 -c 'import json, sys
for l in sys.stdin:
    r = json.loads(l)
    if r.get("type") == "summary":
        assert r["ok"], r
        print(r["last_txseq"])'
}
# counters LOG: apply's exit summary without the retries (which may differ):
# "apply: N transactions (txseq A..B), I inserts, ... S skipped; conflicts: ..."
# (a dry run says "dry run (nothing committed): N transactions ...")
counters() {
	local line
	line=$(grep -o '\(apply\|dry run (nothing committed)\): [0-9]* transactions.*' "$1" | tail -1)
	[ -n "$line" ] || {
		echo "no summary in $(basename "$1")"
		return
	}
	sed -e 's/; retries: [^;]*;/;/' -e 's/["}].*$//' <<<"$line"
}
# origin_progress DB STREAM [false]: the origin's progress as a txseq (0 when none).
origin_progress() {
	local lsn
	lsn=$(q dst "$1" "SELECT coalesce((SELECT pg_replication_origin_progress(roname, ${3:-true})
	  FROM pg_replication_origin WHERE roname = 'sluice_$2@$1'), '0/0')") || {
		echo -1
		return
	}
	echo $(((16#${lsn%%/*} << 32) | 16#${lsn#*/}))
}
# apply DB STREAM LOG ARGS...: apply the stream into database DB of dst (its
# stdout, where a dry run lists conflicts, to LOG.out).
apply() {
	local d=$1 s=$2 log=$3
	shift 3
	"$SLUICE" --log-format text apply --store "$W/store" --stream "$s" --trust "$W/k.pub" \
		--target "$(dst "$d")" --exit-when-caught-up "$@" 2>"$log" >"$log.out"
}
# same_counters DESC LOG_A LOG_B
same_counters() {
	local a b
	a=$(counters "$2")
	b=$(counters "$3")
	[[ $a != no* ]] && [ "$a" = "$b" ]
	check "$1: same counters (grouped: '$a'; one at a time: '$b')"
}

# ==== a. a workload that defeats grouping =======================================
SCHEMA=$(
	cat <<'SQL'
CREATE TABLE kv (id int PRIMARY KEY, u int UNIQUE, v text, n int NOT NULL DEFAULT 0);
-- out-of-line TOAST, never compressed: updates that leave body alone send it as unchanged
CREATE TABLE docs (id int PRIMARY KEY, rev int NOT NULL, body text, note text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE parted (id int, region int, v text, n int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES IN (1);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES IN (2);
CREATE TABLE parted_3 PARTITION OF parted FOR VALUES IN (3);
CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
CREATE TABLE gen (id int PRIMARY KEY, a int, b int GENERATED ALWAYS AS (a * 2 + 1) STORED);
-- no key, duplicate rows
CREATE TABLE dups (k int, v text);
ALTER TABLE dups REPLICA IDENTITY FULL;
-- one row at the end of each phase of the workload
CREATE TABLE phase (id int PRIMARY KEY, name text NOT NULL);
-- values that multi-row statements must carry intact: arrays (unnest of an
-- array of arrays flattens it), composites, enums, domains, odd names
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN pos AS int CHECK (VALUE > 0);
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Typed Rows" ("Id" int PRIMARY KEY, "int array" int[], ta text[], j jsonb,
  m mood, p pair, d pos, b bytea, at timestamptz, num numeric, iv interval, "quote""d" text);
CREATE TABLE tkey (k text, at timestamptz, v int, PRIMARY KEY (k, at));
CREATE TABLE fullarr (arr int[], j jsonb, n int);
ALTER TABLE fullarr REPLICA IDENTITY FULL;
SQL
)
# big SEED: 3,200 bytes of md5 hex (TOASTed, hardly compressible)
big() { echo "(SELECT string_agg(md5('$1' || i), '') FROM generate_series(1, 100) i)"; }
FILL=$(
	cat <<SQL
INSERT INTO kv SELECT g, g, 'kv ' || g, 0 FROM generate_series(1, 200) g;
INSERT INTO docs SELECT g, 0, (SELECT string_agg(md5(g || '/' || i), '') FROM generate_series(1, 100) i), 'n'
  FROM generate_series(1, 20) g;
INSERT INTO parted SELECT g, 1 + g % 3, 'p' || g, 0 FROM generate_series(1, 60) g;
INSERT INTO ident (v) SELECT 'i' || g FROM generate_series(1, 20) g;
INSERT INTO gen (id, a) SELECT g, g FROM generate_series(1, 20) g;
-- three equal rows per k
INSERT INTO dups SELECT g % 10, 'same' FROM generate_series(1, 30) g;
INSERT INTO dups VALUES (NULL, NULL), (NULL, NULL);
INSERT INTO "Odd Schema"."Typed Rows" SELECT g, ARRAY[[g, 2], [3, NULL]], ARRAY['a,b', 'q"uote', NULL, '{x}'],
  jsonb_build_object('g', g, 'a', jsonb_build_array(1, 'x')), 'ok', ROW(g, 'p,"' || g)::pair, g,
  decode('00ff' || lpad(to_hex(g), 4, '0'), 'hex'), '2024-01-01 00:00+00'::timestamptz + g * interval '1 day',
  g / 7.0, g * interval '1 hour', E'it''s \\ "' || g FROM generate_series(1, 10) g;
INSERT INTO tkey SELECT 'k ' || g || E' \t''', '2024-01-01 00:00+00'::timestamptz + g * interval '1 second', g
  FROM generate_series(1, 10) g;
INSERT INTO fullarr SELECT ARRAY[[g % 3, 1], [2, 3]], jsonb_build_object('g', g % 3), 0 FROM generate_series(1, 12) g;
SQL
)
# Every statement is its own source transaction (psql autocommit).
WORKLOAD=$(
	cat <<SQL
-- 1. keys deleted and re-inserted
DELETE FROM kv WHERE id = 1;
INSERT INTO kv VALUES (1, 1, 'reinserted', 1);
DELETE FROM kv WHERE id = 2;
INSERT INTO kv VALUES (2, 5002, 'reinserted with another u', 2);
DELETE FROM kv WHERE id = 5;
INSERT INTO kv VALUES (5, 5, 'again 1', 0);
DELETE FROM kv WHERE id = 5;
INSERT INTO kv VALUES (5, 5, 'again 2', 0);
DELETE FROM kv WHERE id = 6;
INSERT INTO kv VALUES (6, 6, 'kv 6', 0);
INSERT INTO phase VALUES (1, 'delete and re-insert');
-- 2. unique values handed over (from a deleted row too), swapped through an
-- intermediate value, through NULL, rotated; keys swapped
DELETE FROM kv WHERE id = 3;
UPDATE kv SET u = 3 WHERE id = 4;
INSERT INTO kv VALUES (3, 4, 'took the u that row 4 gave up', 3);
DELETE FROM kv WHERE id = 7;
UPDATE kv SET u = 7 WHERE id = 8;
UPDATE kv SET u = -10 WHERE id = 10;
UPDATE kv SET u = 10 WHERE id = 11;
UPDATE kv SET u = 11 WHERE id = 10;
UPDATE kv SET u = NULL WHERE id = 12;
UPDATE kv SET u = 12 WHERE id = 13;
UPDATE kv SET u = 13 WHERE id = 12;
UPDATE kv SET u = -14 WHERE id = 14;
UPDATE kv SET u = 14 WHERE id = 15;
UPDATE kv SET u = 15 WHERE id = 16;
UPDATE kv SET u = 16 WHERE id = 14;
UPDATE kv SET id = -17 WHERE id = 17;
UPDATE kv SET id = 17 WHERE id = 18;
UPDATE kv SET id = 18 WHERE id = -17;
INSERT INTO phase VALUES (2, 'unique swaps');
-- 3. one row changed 1,000 times; 50 inserts in between (rows 1001..1050)
SELECT CASE WHEN g % 21 = 0 THEN format('INSERT INTO kv VALUES (%s, %s, %L, %s)', 1000 + g / 21, 1000 + g / 21, 'ins ' || g, g)
  WHEN g % 100 = 1 THEN format('UPDATE kv SET n = n + 1, u = %s, v = %L WHERE id = 20', 20000 + g, 'v' || g)
  ELSE format('UPDATE kv SET n = n + 1, v = %L WHERE id = 20', 'v' || g) END
  FROM generate_series(1, 1050) g \gexec
INSERT INTO phase VALUES (3, 'a row changed 1000 times');
-- 4. TOAST values left unchanged
UPDATE docs SET rev = rev + 1 WHERE id = 1;
UPDATE docs SET rev = rev + 1 WHERE id = 1;
UPDATE docs SET note = 'changed' WHERE id = 1;
INSERT INTO docs VALUES (100, 0, $(big new100), 'new');
UPDATE docs SET rev = 1 WHERE id = 100;
UPDATE docs SET rev = 2, note = 'x' WHERE id = 100;
UPDATE docs SET body = $(big two) WHERE id = 2;
UPDATE docs SET rev = rev + 1 WHERE id = 2;
UPDATE docs SET rev = 5 WHERE id = 3;
DELETE FROM docs WHERE id = 3;
DELETE FROM docs WHERE id = 4;
INSERT INTO docs VALUES (4, 0, $(big four), 're-inserted');
UPDATE docs SET rev = 9 WHERE id = 4;
UPDATE docs SET id = 105 WHERE id = 5;
UPDATE docs SET rev = 7 WHERE id = 105;
UPDATE docs SET id = 106 WHERE id = 6;
UPDATE docs SET id = 107, rev = 1 WHERE id = 106;
DELETE FROM docs WHERE id = 9;
UPDATE docs SET id = 9 WHERE id = 10;
UPDATE docs SET id = -12 WHERE id = 12;
UPDATE docs SET id = 12 WHERE id = 13;
UPDATE docs SET id = 13 WHERE id = -12;
UPDATE docs SET rev = rev WHERE id = 14;
INSERT INTO docs VALUES (110, 0, $(big new110), NULL);
UPDATE docs SET rev = 1 WHERE id = 110;
UPDATE docs SET body = body || 'x' WHERE id = 110;
UPDATE docs SET rev = 2 WHERE id = 110;
UPDATE docs SET note = 'before null' WHERE id = 7;
UPDATE docs SET body = NULL WHERE id = 7;
UPDATE docs SET rev = 3 WHERE id = 7;
INSERT INTO docs VALUES (111, 0, $(big new111), NULL);
UPDATE docs SET id = 112 WHERE id = 111;
UPDATE docs SET note = 'moved' WHERE id = 112;
SELECT format('UPDATE docs SET rev = %s WHERE id = 8', g) FROM generate_series(1, 20) g \gexec
INSERT INTO phase VALUES (4, 'unchanged TOAST');
-- 5. insert, update, delete of one key; key-changing updates
INSERT INTO kv VALUES (500, 500, 'short-lived', 0);
UPDATE kv SET v = 'updated', n = 1 WHERE id = 500;
DELETE FROM kv WHERE id = 500;
INSERT INTO kv VALUES (501, 501, 'x', 0);
UPDATE kv SET n = 5 WHERE id = 501;
UPDATE kv SET n = 7 WHERE id = 30;
DELETE FROM kv WHERE id = 30;
UPDATE kv SET id = 600 WHERE id = 31;
UPDATE kv SET v = 'after key change' WHERE id = 600;
UPDATE kv SET id = 601 WHERE id = 32;
UPDATE kv SET id = 602 WHERE id = 601;
UPDATE kv SET n = 3 WHERE id = 602;
DELETE FROM kv WHERE id = 33;
UPDATE kv SET id = 33 WHERE id = 34;
UPDATE kv SET id = 603 WHERE id = 35;
UPDATE kv SET id = 35, v = 'back' WHERE id = 603;
UPDATE kv SET id = 604 WHERE id = 36;
INSERT INTO kv VALUES (36, 10036, 'a new row on the old key', 0);
INSERT INTO kv VALUES (605, 605, 'inserted', 0);
UPDATE kv SET id = 606 WHERE id = 605;
UPDATE kv SET n = 1 WHERE id = 606;
UPDATE kv SET id = 607, u = 37 WHERE id = 37;
UPDATE kv SET u = 607 WHERE id = 607;
INSERT INTO phase VALUES (5, 'insert-update-delete, key changes');
-- 6. rows moving partition
UPDATE parted SET region = 2 WHERE id = 3;
UPDATE parted SET v = 'moved', n = 1 WHERE id = 3;
UPDATE parted SET region = 1 WHERE id = 3;
UPDATE parted SET n = 2 WHERE id = 3;
INSERT INTO parted VALUES (100, 1, 'new', 0);
UPDATE parted SET region = 3 WHERE id = 100;
UPDATE parted SET n = 1 WHERE id = 100;
DELETE FROM parted WHERE id = 6;
INSERT INTO parted VALUES (6, 2, 're-inserted in another partition', 0);
UPDATE parted SET region = 3, v = 'moved and changed' WHERE id = 9;
UPDATE parted SET id = 109 WHERE id = 9;
UPDATE parted SET region = 2 WHERE id = 12;
DELETE FROM parted WHERE id = 12;
INSERT INTO phase VALUES (6, 'partitions');
-- 7. identity and generated columns
INSERT INTO ident (v) VALUES ('new 1');
INSERT INTO ident (v) VALUES ('new 2');
UPDATE ident SET v = 'updated' WHERE id = 21;
DELETE FROM ident WHERE id = 2;
INSERT INTO ident OVERRIDING SYSTEM VALUE VALUES (2, 'reinserted');
UPDATE ident SET v = 'again' WHERE id = 2;
INSERT INTO gen (id, a) VALUES (100, 1);
UPDATE gen SET a = 2 WHERE id = 100;
UPDATE gen SET a = 3 WHERE id = 100;
UPDATE gen SET a = a + 10 WHERE id = 1;
DELETE FROM gen WHERE id = 2;
INSERT INTO gen (id, a) VALUES (2, 50);
UPDATE gen SET id = 200 WHERE id = 3;
UPDATE gen SET a = 0 WHERE id = 200;
INSERT INTO phase VALUES (7, 'identity and generated columns');
-- 8. no key, equal rows
UPDATE dups SET v = 'changed' WHERE ctid = (SELECT min(ctid) FROM dups WHERE k = 1);
DELETE FROM dups WHERE ctid = (SELECT min(ctid) FROM dups WHERE k = 1 AND v = 'same');
UPDATE dups SET v = 'c1' WHERE ctid = (SELECT min(ctid) FROM dups WHERE k = 2);
UPDATE dups SET v = 'c2' WHERE k = 2 AND v = 'c1';
DELETE FROM dups WHERE ctid = (SELECT max(ctid) FROM dups WHERE k = 2 AND v = 'same');
INSERT INTO dups VALUES (3, 'same');
DELETE FROM dups WHERE ctid = (SELECT min(ctid) FROM dups WHERE k = 3);
UPDATE dups SET k = 5 WHERE ctid = (SELECT min(ctid) FROM dups WHERE k = 4);
DELETE FROM dups WHERE ctid = (SELECT max(ctid) FROM dups WHERE k = 5);
DELETE FROM dups WHERE k = 6;
INSERT INTO dups VALUES (6, 'same');
UPDATE dups SET v = 'x' WHERE ctid = (SELECT min(ctid) FROM dups WHERE k = 7);
UPDATE dups SET v = 'same' WHERE k = 7 AND v = 'x';
UPDATE dups SET v = 'not null' WHERE ctid = (SELECT min(ctid) FROM dups WHERE k IS NULL);
DELETE FROM dups WHERE ctid = (SELECT min(ctid) FROM dups WHERE k IS NULL AND v IS NULL);
INSERT INTO phase VALUES (8, 'duplicate rows without a key');
-- 9. arrays, composites, enums, domains, odd names, in multi-row statements
UPDATE "Odd Schema"."Typed Rows" SET "int array" = ARRAY[[7, 8], [9, 10]], ta = '{}' WHERE "Id" = 1;
UPDATE "Odd Schema"."Typed Rows" SET "int array" = ARRAY[[1, NULL]], j = '[]' WHERE "Id" = 2;
UPDATE "Odd Schema"."Typed Rows" SET "int array" = '{}', m = 'happy', p = ROW(NULL, NULL) WHERE "Id" = 3;
UPDATE "Odd Schema"."Typed Rows" SET "int array" = '[0:1]={5,6}', d = 99, "quote""d" = NULL WHERE "Id" = 4;
UPDATE "Odd Schema"."Typed Rows" SET "int array" = NULL, b = '\x', iv = '-1 day 2 hours' WHERE "Id" = 5;
UPDATE "Odd Schema"."Typed Rows" SET ta = ARRAY['}', ',', '"', NULL], num = 'NaN' WHERE "Id" = 6;
DELETE FROM "Odd Schema"."Typed Rows" WHERE "Id" = 7;
INSERT INTO "Odd Schema"."Typed Rows" ("Id", "int array", p, m) VALUES (7, ARRAY[[[1]], [[2]]], ROW(1, ''), 'sad');
UPDATE "Odd Schema"."Typed Rows" SET "Id" = 70, "int array" = ARRAY[[70]] WHERE "Id" = 8;
INSERT INTO "Odd Schema"."Typed Rows" ("Id", "int array") VALUES (11, ARRAY[[1, 2, 3], [4, 5, 6]]);
INSERT INTO "Odd Schema"."Typed Rows" ("Id", "int array") VALUES (12, ARRAY[[1], [2]]);
DELETE FROM "Odd Schema"."Typed Rows" WHERE "Id" = 9;
UPDATE tkey SET v = -v WHERE k LIKE 'k 1 %';
UPDATE tkey SET v = 100 WHERE k LIKE 'k 2 %';
UPDATE tkey SET at = at + interval '1 microsecond' WHERE k LIKE 'k 3 %';
DELETE FROM tkey WHERE k LIKE 'k 4 %';
INSERT INTO tkey VALUES (E'k 4 \t''', '2024-01-01 00:00:04+00', 44);
UPDATE fullarr SET n = 1 WHERE ctid = (SELECT min(ctid) FROM fullarr WHERE j = '{"g": 1}');
UPDATE fullarr SET arr = ARRAY[[9, 9], [9, 9]] WHERE ctid = (SELECT min(ctid) FROM fullarr WHERE j = '{"g": 2}');
DELETE FROM fullarr WHERE ctid = (SELECT max(ctid) FROM fullarr WHERE j = '{"g": 0}');
DELETE FROM fullarr WHERE ctid = (SELECT max(ctid) FROM fullarr WHERE j = '{"g": 1}' AND n = 0);
INSERT INTO phase VALUES (9, 'arrays, composites, odd names');
SQL
)
PHASES=9

if want_part a || want_part b; then
pg_psql src postgres -c "$SCHEMA" -c "$FILL" >/dev/null || die "source schema"
pg_dump -d "$SRC" >"$W/pre.sql" || die "pg_dump"
q dst postgres "CREATE DATABASE pre" >/dev/null || die "create database pre"
pg_psql dst pre -f "$W/pre.sql" >/dev/null 2>"$W/restore.log" || {
	cat "$W/restore.log" >&2
	die "restore into pre"
}
for d in g_phase one_phase g_all one_all c_group c_one; do
	q dst postgres "CREATE DATABASE $d TEMPLATE pre" >/dev/null || die "create database $d"
done
CAP=("$SLUICE" capture --source "$SRC" --store "$W/store" --stream g --key "$W/k.key" --no-progress --exit-when-caught-up)
"${CAP[@]}" --create 2>"$W/cap0.log" || {
	cat "$W/cap0.log" >&2
	die "capture --create"
}
pg_psql src postgres <<<"$WORKLOAD" >"$W/workload.log" 2>&1 || die "workload: $(tail -5 "$W/workload.log")"
"${CAP[@]}" 2>"$W/cap1.log" || {
	cat "$W/cap1.log" >&2
	die "capture"
}
LAST=$(last_txseq g) || die "verify"
# the txseq that ends each phase: its insert into phase
"$SLUICE" inspect --store "$W/store" --stream g --trust "$W/k.pub" --records --json >"$W/records.json" ||
	die "inspect"
mapfile -t ENDS < <(python3 -c 'import json, sys
ends = {}
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["type"] == "insert" and r["relation"] == "public.phase":
        ends[int(r["new"]["id"])] = r["txseq"]
for p in sorted(ends):
    print(ends[p])' "$W/records.json")
[ "${#ENDS[@]}" = "$PHASES" ] || die "found ${#ENDS[@]} phase ends in the stream, want $PHASES"
[ "${ENDS[$((PHASES - 1))]}" = "$LAST" ] || die "the last phase ends at txseq ${ENDS[$((PHASES - 1))]}, the stream at $LAST"
say "stream captured: txseq 1..$LAST, phases end at ${ENDS[*]}"
fi # the stream of parts a and b

if want_part a; then
# Phase by phase: grouped into g_phase, one at a time into one_phase.
for p in $(seq 1 "$PHASES"); do
	end=${ENDS[$((p - 1))]}
	name=$(q src postgres "SELECT name FROM phase WHERE id = $p")
	apply g_phase g "$W/g_phase.$p.log" "${BIG[@]}" --until-txseq "$end"
	check "phase $p ($name): grouped apply exits 0 (status $?)"
	apply one_phase g "$W/one_phase.$p.log" "${ONE[@]}" --until-txseq "$end"
	check "phase $p ($name): --group-size 1 apply exits 0 (status $?)"
	[ "$(origin_progress g_phase g)" = "$end" ]
	check "phase $p ($name): grouped apply stopped at txseq $end"
	"${CMP[@]}" compare "$(dst one_phase)" "$(dst g_phase)" --quiet
	check "phase $p ($name): grouped and one-at-a-time targets hold the same rows"
	same_counters "phase $p ($name)" "$W/g_phase.$p.log" "$W/one_phase.$p.log"
	if grep -q 'one at a time' "$W/g_phase.$p.log"; then
		say "phase $p ($name): grouped apply applied a group again one at a time"
	else
		say "phase $p ($name): applied grouped"
	fi
done
"${CMP[@]}" compare "$SRC" "$(dst g_phase)" --quiet
check "g_phase (grouped, phase by phase) equals the source"
"${CMP[@]}" compare "$SRC" "$(dst one_phase)" --quiet
check "one_phase (--group-size 1, phase by phase) equals the source"
# Phase 3 inserted rows 1001..1050 in 50 transactions, between updates of one
# row: with large groups (and nothing that fails) they share target transactions.
x=$(q dst g_phase "SELECT count(DISTINCT xmin::text) FROM kv WHERE id BETWEEN 1001 AND 1050")
[ -n "$x" ] && [ "$x" -lt 50 ]
check "grouping happened: the rows of 50 source transactions of phase 3 are in $x target transactions on g_phase (want < 50)"
x=$(q dst one_phase "SELECT count(DISTINCT xmin::text) FROM kv WHERE id BETWEEN 1001 AND 1050")
[ "$x" = 50 ]
check "--group-size 1: the rows of 50 source transactions are in $x target transactions (want 50)"
! grep -q 'one at a time' "$W/g_phase.3.log"
check "phase 3 (one row changed 1,000 times, inserts) applied grouped, without falling back to one at a time"

# The whole stream in one run.
apply g_all g "$W/g_all.log" "${BIG[@]}"
check "one grouped run over the whole stream exits 0 (status $?)"
apply one_all g "$W/one_all.log" "${ONE[@]}"
check "one --group-size 1 run over the whole stream exits 0 (status $?)"
"${CMP[@]}" compare "$SRC" "$(dst g_all)"
check "g_all (grouped, one run) equals the source"
"${CMP[@]}" compare "$SRC" "$(dst one_all)" --quiet
check "one_all (--group-size 1, one run) equals the source"
same_counters "whole stream in one run" "$W/g_all.log" "$W/one_all.log"
grep -q "apply: $LAST transactions (txseq 1..$LAST)" "$W/g_all.log"
check "the grouped run reports $LAST transactions (txseq 1..$LAST)"
[ "$(origin_progress g_all g)" = "$LAST" ]
check "grouped run: origin progress = last txseq $LAST"
say "part a done"
fi # part a

# ==== b. conflicts ===============================================================
if want_part b; then
# The same local changes on both targets, before apply: rows the stream
# updates or deletes are gone, rows it inserts exist with other values.
LOCAL=$(
	cat <<'SQL'
DELETE FROM kv WHERE id IN (4, 10, 20, 30, 31, 36);
DELETE FROM docs WHERE id IN (1, 2, 5);
DELETE FROM parted WHERE id IN (3, 9);
DELETE FROM gen WHERE id IN (1, 3);
DELETE FROM ident WHERE id = 5;
DELETE FROM dups WHERE k = 2;
INSERT INTO kv VALUES (1001, 1001, 'local', -1), (1025, NULL, 'local', -1), (501, 501, 'local', -1),
  (605, NULL, 'local', -1);
INSERT INTO docs VALUES (100, -1, 'local', 'local'), (110, -1, NULL, NULL);
INSERT INTO parted VALUES (100, 1, 'local', -1);
INSERT INTO ident OVERRIDING SYSTEM VALUE VALUES (21, 'local');
INSERT INTO gen (id, a) VALUES (100, -1);
SQL
)
for d in c_group c_one; do
	pg_psql dst $d -c "$LOCAL" >/dev/null || die "local changes on $d"
done
# --dry-run first: the same report, and nothing committed
apply c_group g "$W/c_group_dry.log" "${BIG[@]}" --dry-run
check "conflicts: grouped --dry-run exits 0 (status $?)"
apply c_one g "$W/c_one_dry.log" "${ONE[@]}" --dry-run
check "conflicts: --group-size 1 --dry-run exits 0 (status $?)"
same_counters "conflicts, --dry-run" "$W/c_group_dry.log" "$W/c_one_dry.log"
[ "$(origin_progress c_group g)" = 0 ] && [ "$(q dst c_group "SELECT count(*) FROM kv WHERE v = 'local'")" = 4 ]
check "conflicts: the grouped --dry-run committed nothing"
apply c_group g "$W/c_group.log" "${BIG[@]}"
check "conflicts: grouped apply exits 0 (status $?)"
apply c_one g "$W/c_one.log" "${ONE[@]}"
check "conflicts: --group-size 1 apply exits 0 (status $?)"
"${CMP[@]}" compare "$(dst c_one)" "$(dst c_group)"
check "conflicts: grouped and one-at-a-time targets hold the same rows"
same_counters "conflicts" "$W/c_group.log" "$W/c_one.log"
x=$(grep -o 'conflicts: [^"]*' "$W/c_one.log" | tail -1)
[ -n "$x" ] && [ "$x" != "conflicts: none" ]
check "conflicts: the stream met conflicts ($x)"
grep -q 'one at a time' "$W/c_group.log"
check "conflicts: the grouped run says it applied a group again one at a time"
[ "$(origin_progress c_group g)" = "$LAST" ]
check "conflicts: grouped run: origin progress = last txseq $LAST"
say "part b done"
fi # part b

# ==== c. kill -9 in the middle of large groups ===================================
if want_part c; then
q src postgres "CREATE DATABASE bench" >/dev/null || die "create database bench"
BSRC=$(pg_conninfo src bench)
pgbench -i -s 2 -q "$BSRC" >"$W/pgbench-init.log" 2>&1 || {
	cat "$W/pgbench-init.log" >&2
	die "pgbench -i"
}
# the target's starting point, copied (CREATE DATABASE ... TEMPLATE) for each round
q dst postgres "CREATE DATABASE bench_pre" >/dev/null || die "create target database bench_pre"
pg_dump -d "$BSRC" | pg_psql dst bench_pre >/dev/null || die "copy bench to the target"
# Grouped apply takes ~0.2 s for 6,000 pgbench transactions here, and it
# sends groups, commit included, without waiting for the target. So that a
# kill at a random moment mostly comes in the middle of a group, apply is
# slowed on both sides: it waits before it sends a change (--max-rate 8000: a
# group of 2,000 pgbench transactions is ~8,000 changes, sent in ~1 s after
# the first second's worth; a kill leaves the group it is sending open, and
# the target rolls it back), and the target takes ~0.6 s for a group: a
# trigger (fired in apply's session too) sleeps 1 ms on one inserted
# pgbench_history row in 8 (a group sent just before the kill commits after
# it).
pg_psql dst bench_pre >/dev/null <<'SQL' || die "slow trigger"
CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.aid % 8 = 0 THEN PERFORM pg_sleep(0.001); END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER slow AFTER INSERT ON pgbench_history FOR EACH ROW EXECUTE FUNCTION slow();
ALTER TABLE pgbench_history ENABLE ALWAYS TRIGGER slow;
SQL
say "bench: pgbench -i -s 2 on the source, copied to the target"
BCAP=("$SLUICE" capture --source "$BSRC" --store "$W/store" --stream bench --key "$W/k.key" --no-progress --exit-when-caught-up)
# pgbench_history has no key and is only inserted into
"${BCAP[@]}" --create --allow-no-identity 2>"$W/bcap0.log" || {
	cat "$W/bcap0.log" >&2
	die "capture --create bench"
}
pgbench -n -c 2 -j 2 -t "$BENCH_TXNS" "$BSRC" >"$W/pgbench.log" 2>&1 || {
	cat "$W/pgbench.log" >&2
	die "pgbench"
}
say "bench: $BENCH_TXNS pgbench transactions per client"
"${BCAP[@]}" 2>"$W/bcap1.log" || {
	cat "$W/bcap1.log" >&2
	die "capture bench"
}
BLAST=$(last_txseq bench) || die "verify bench"
x=$(q src bench "SELECT count(*) FROM pgbench_history")
[ "$BLAST" = "$x" ] || die "the bench stream has $BLAST transactions, the source $x pgbench_history rows"
DUPS_SRC=$(q src bench "SELECT count(*) FROM (SELECT 1 FROM pgbench_history GROUP BY tid, bid, aid, delta, mtime HAVING count(*) > 1) d")
say "bench stream: txseq 1..$BLAST"

GROUP=2000
RUN=0
ROUND=0
BDB=""
APPLY_PID=""
APPLY_LOG=""
# new_round: a fresh copy of the target's starting point (its own origin).
new_round() {
	[ "$ROUND" -lt $((2 * KILLS + 3)) ] ||
		die "bench: $ROUND rounds: the kills do not come before apply reaches the end of the stream"
	if [ -n "$BDB" ]; then
		# origins count against max_replication_slots: drop the last round's
		q dst postgres "DROP DATABASE $BDB" >/dev/null &&
			q dst postgres "SELECT pg_replication_origin_drop('sluice_bench@$BDB')" >/dev/null ||
			die "drop $BDB and its origin"
	fi
	ROUND=$((ROUND + 1))
	BDB=bench_r$ROUND
	q dst postgres "CREATE DATABASE $BDB TEMPLATE bench_pre" >/dev/null || die "create database $BDB"
	PREV=0
	PROGRESS=0
}
# start_bench_apply [GROUP_MS]
start_bench_apply() {
	local ms=${1:-}
	RUN=$((RUN + 1))
	APPLY_LOG=$W/bench$RUN.log
	# mostly groups ended by size only; sometimes by time too
	if [ -z "$ms" ]; then
		case $((RANDOM % 3)) in
		0) ms=200 ;;
		*) ms=60000 ;;
		esac
	fi
	# sluice itself in the background (not a function: its subshell is what kill would hit)
	"$SLUICE" --log-format text apply --store "$W/store" --stream bench --trust "$W/k.pub" \
		--target "$(dst "$BDB")" --exit-when-caught-up --group-size "$GROUP" --group-ms "$ms" \
		--max-rate "$BENCH_RATE" 2>"$APPLY_LOG" &
	APPLY_PID=$!
}
alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}
# others [COND]: sessions on the round's target database but ours.
others() { q dst "$BDB" "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid() ${1:-}"; }
quiesce() {
	local i
	for i in $(seq 1 300); do
		[ "$(others)" = 0 ] && return 0
		sleep 0.02
	done
	die "a session of a killed apply is still connected to $BDB after 6 s"
}
PREV=0
# check_bench WHEN: the quiet target holds whole source transactions 1..progress.
check_bench() {
	local p row n s1 s2 s3 s4
	p=$(origin_progress "$BDB" bench)
	row=$(q dst "$BDB" "SELECT (SELECT count(*) FROM pgbench_history), (SELECT coalesce(sum(delta), 0) FROM pgbench_history),
	  (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers),
	  (SELECT sum(bbalance) FROM pgbench_branches)")
	IFS='|' read -r n s1 s2 s3 s4 <<<"$row"
	[ "$n" = "$p" ] && [ "$s1" = "$s2" ] && [ "$s1" = "$s3" ] && [ "$s1" = "$s4" ]
	check "$1: progress $p, pgbench_history rows $n, sums delta $s1 = abalance $s2 = tbalance $s3 = bbalance $s4"
	[ "$p" -ge "$PREV" ]
	check "$1: progress did not go back ($PREV -> $p)"
	PREV=$p
	PROGRESS=$p
}
# finish_round: the running apply ends by itself: it must have applied the
# whole stream, once.
finish_round() {
	local rc=${1:-0} x
	[ -n "${1:-}" ] || wait "$APPLY_PID" || rc=$?
	[ "$rc" = 0 ]
	check "$BDB: apply run $RUN, the last of the round, exits 0 (status $rc)"
	quiesce
	check_bench "$BDB: at the end"
	[ "$PROGRESS" = "$BLAST" ]
	check "$BDB: origin progress $PROGRESS = last txseq $BLAST"
	"${CMP[@]}" compare "$BSRC" "$(dst "$BDB")"
	check "$BDB: the target equals the source"
	x=$(q dst "$BDB" "SELECT count(*) FROM (SELECT 1 FROM pgbench_history GROUP BY tid, bid, aid, delta, mtime HAVING count(*) > 1) d")
	[ "$x" = "$DUPS_SRC" ]
	check "$BDB: pgbench_history holds no row twice ($x repeated rows, the source $DUPS_SRC)"
}
now_ms() { date +%s%3N; }
# A killed session in an open transaction makes the server log this (once per
# kill in the middle of a group).
EOF_MSG='unexpected EOF on client connection with an open transaction'
eof_count() { grep -c "$EOF_MSG" "$PG_HARNESS_DIR/dst/server.log"; }
EOF0=$(eof_count)
# Round 1, not killed: how long applying the whole stream takes here.
new_round
t=$(now_ms)
start_bench_apply 60000
rc=0
wait "$APPLY_PID" || rc=$?
FULL_MS=$(($(now_ms) - t))
finish_round "$rc"
# pgbench_history rows per target transaction (xmin), in commit order
x=$(q dst "$BDB" "SELECT string_agg(n::text, ',' ORDER BY first) FROM (SELECT count(*) AS n, min(mtime) AS first
  FROM pgbench_history GROUP BY xmin::text) g")
say "bench: round 1 applied the $BLAST transactions in target transactions of $x"
[ "$(tr ',' '\n' <<<"$x" | awk -v g="$GROUP" '$1 > g' | wc -l)" = 0 ] && [ "$(tr ',' '\n' <<<"$x" | wc -l)" -lt 10 ]
check "bench: round 1 grouped the stream in fewer than 10 target transactions of at most $GROUP source transactions each ($x)"
say "bench: the whole stream applied in $FULL_MS ms (round 1, not killed)"
kills=0
immediate=0
committed_after=0
new_round
start_bench_apply
RUN_T0=$(now_ms)
RUN_FROM=0
while [ "$kills" -lt "$KILLS" ]; do
	if [ "$RUN_FROM" -ge "$BLAST" ]; then
		# the last run applied the whole stream before it was killed: the
		# restarted one has nothing to do; check the round, go on in a new copy
		finish_round
		say "bench: round $ROUND done after $kills kills in all; next round"
		new_round
		start_bench_apply
		RUN_T0=$(now_ms)
		RUN_FROM=0
		continue
	fi
	# a random moment of what is left of the stream to apply
	left=$((FULL_MS * (BLAST - RUN_FROM) / BLAST))
	[ "$left" -gt 20 ] || left=20
	until_ms=$((RUN_T0 + (RANDOM * 32768 + RANDOM) % left))
	while [ "$(now_ms)" -lt "$until_ms" ] && alive "$APPLY_PID"; do
		sleep 0.005
	done
	before=$(origin_progress "$BDB" bench false)
	kill -KILL "$APPLY_PID" 2>/dev/null
	rc=0
	wait "$APPLY_PID" 2>/dev/null || rc=$?
	if [ "$rc" != 137 ]; then
		# it applied the rest of the stream first: check the round, go on in a new copy
		APPLY_PID=0
		finish_round "$rc"
		say "bench: round $ROUND done after $kills kills in all; next round"
		new_round
		start_bench_apply
		RUN_T0=$(now_ms)
		RUN_FROM=0
		continue
	fi
	kills=$((kills + 1))
	if [ $((RANDOM % 3)) = 0 ]; then
		immediate=$((immediate + 1))
		say "bench: apply run $RUN killed $((until_ms - RUN_T0)) ms after it started, restarted at once"
		RUN_FROM=$(origin_progress "$BDB" bench false)
	else
		quiesce
		check_bench "$BDB: after kill $kills"
		x=""
		if [ "$PROGRESS" -gt "$before" ]; then
			committed_after=$((committed_after + 1))
			x=" (groups sent before the kill committed after it: $before before)"
		fi
		say "bench: apply run $RUN killed $((until_ms - RUN_T0)) ms after it started, at progress $PROGRESS of $BLAST$x"
		RUN_FROM=$PROGRESS
	fi
	start_bench_apply
	RUN_T0=$(now_ms)
done
finish_round
quiesce
in_txn=$(($(eof_count) - EOF0))
[ $((in_txn + committed_after)) -ge $(((KILLS + 3) / 4)) ]
check "bench: of $kills kills, $in_txn left an open group that the target rolled back (the server logged '$EOF_MSG'), after $committed_after groups apply had sent before the kill committed (want at least $(((KILLS + 3) / 4)) of both)"
! grep -l 'one at a time' "$W"/bench*.log >&2
check "bench: no run applied a group again one at a time (the target always held what the source held)"
grep -h ': error: ' "$W"/bench*.log | head -5 >&2
! grep -q ': error: ' "$W"/bench*.log
check "bench: apply logged no errors"
say "part c done: $kills kills ($immediate restarted at once), $RUN runs, $ROUND rounds"
fi # part c

if [ "$FAILS" -ne 0 ]; then
	echo "test_apply_group: $FAILS checks FAILED (logs: PG_KEEP=1 keeps $W)" >&2
	exit 1
fi
echo "test_apply_group: passed ($((SECONDS - T0)) s)"
