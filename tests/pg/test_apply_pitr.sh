#!/usr/bin/env bash
# Point-in-time replay. A source with a snapshot, workload phase 1, then the
# source state is recorded (every table dumped) together with the time T and
# WAL position L between the phases (1 s of quiet on each side of T), then
# phase 2 (updates and deletes of phase-1 rows, inserts, a truncate). The whole
# stream is captured, then replayed into empty databases (schema only, no
# origin) with
#   --until-time T (UTC, and the same instant written with a +05:30 offset),
#   --until-txseq N (N = last txseq of phase 1, from inspect --records --json),
#   --until-lsn L, and --until-lsn of txseq N's own source LSN (inclusive):
# each exits 0, records N as origin progress and equals the phase-1 state; a
# second bounded run applies nothing; a bound before the first transaction
# applies nothing. Continuing a bounded target without a bound reaches the
# final source state and the last txseq. Last, a second empty database of the
# same server (replication origins are per server) must get the whole stream
# or be refused with an error naming the origin, never silently skipped.
# Usage: test_apply_pitr.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
export PATH=$PGBIN:$PATH

pg_step_checks pitr

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
SRC=$(pg_conninfo src)
CMP=(python3 "$HERE/compare_dbs.py")

pg_psql src postgres <<'SQL' || die "source schema"
CREATE TABLE acc (id int PRIMARY KEY, bal numeric(14,2) NOT NULL, note text, at timestamptz);
CREATE TABLE ev (id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb, raw bytea);
CREATE TABLE nk (k int, v text);
ALTER TABLE nk REPLICA IDENTITY FULL;
CREATE TABLE gone (id int PRIMARY KEY, v text);
INSERT INTO acc SELECT g, g * 10, 'initial', '2024-01-01 00:00+00' FROM generate_series(1, 300) g;
INSERT INTO ev (kind, payload, raw) SELECT 'init', jsonb_build_object('g', g), decode(md5(g::text), 'hex') FROM generate_series(1, 100) g;
INSERT INTO nk SELECT g, 'nk' || g FROM generate_series(1, 50) g;
INSERT INTO gone SELECT g, 'g' || g FROM generate_series(1, 40) g;
SQL
pg_dump -s -d "$SRC" >"$W/schema.sql" || die "pg_dump -s"
# Replication origins belong to the whole server, not to one database: each
# replay starts from a fresh database and without the origin.
fresh_target() { # fresh_target DB
	pg_psql dst postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1" \
		-c "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = 'sluice_pitr@$1'" \
		>/dev/null || die "fresh database $1"
	pg_psql dst "$1" -f "$W/schema.sql" >/dev/null || die "schema of $1"
}

CAP=("$SLUICE" capture --source "$SRC" --store "$W/store" --stream pitr --key "$W/k.key" --no-progress)
"${CAP[@]}" --create --snapshot --exit-when-caught-up 2>"$W/cap0.log" || {
	cat "$W/cap0.log" >&2
	die "capture --create --snapshot"
}

# Phase 1: 40 transactions.
for i in $(seq 1 10); do
	pg_psql src postgres \
		-c "UPDATE acc SET bal = bal + $i, note = 'phase1 $i', at = now() WHERE id % 10 = $((i % 10))" \
		-c "INSERT INTO ev (kind, payload) VALUES ('p1', '{\"i\": $i}')" \
		-c "BEGIN" -c "DELETE FROM acc WHERE id = $((200 + i))" -c "INSERT INTO acc VALUES ($((1000 + i)), $i, 'new in phase1', now())" \
		-c "UPDATE nk SET v = v || '+' WHERE k = $i" -c "COMMIT" \
		-c "UPDATE acc SET id = id + 5000 WHERE id = $((100 + i))" || die "phase 1"
done
sleep 1
TS=$(pg_psql src postgres -c "WITH n AS (SELECT clock_timestamp() AS t) SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), to_char(t AT TIME ZONE INTERVAL '+05:30', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+05:30\"'), pg_current_wal_lsn() FROM n") ||
	die "time"
IFS='|' read -r T TZ_T L <<<"$TS"
"${CMP[@]}" dump "$SRC" "$W/phase1" --quiet || die "dump of phase 1"
say "phase 1 recorded: T = $T ($TZ_T), L = $L"
sleep 1

# Phase 2: changes the phase-1 rows again.
pg_psql src postgres <<'SQL' || die "phase 2"
UPDATE acc SET bal = 0, note = 'phase2' WHERE id % 3 = 0;
DELETE FROM acc WHERE id % 7 = 0;
INSERT INTO acc SELECT g, g, 'phase2', now() FROM generate_series(2001, 2050) g;
UPDATE acc SET id = id + 100000 WHERE id IN (1001, 1002);
INSERT INTO ev (kind, payload) SELECT 'p2', jsonb_build_object('g', g) FROM generate_series(1, 20) g;
DELETE FROM ev WHERE kind = 'p1' AND id % 2 = 0;
TRUNCATE gone;
INSERT INTO gone VALUES (1, 'after truncate');
DELETE FROM nk WHERE k < 5;
BEGIN;
UPDATE nk SET v = 'p2' WHERE k = 6;
INSERT INTO nk VALUES (999, NULL);
COMMIT;
SQL
"${CAP[@]}" --exit-when-caught-up 2>"$W/cap1.log" || {
	cat "$W/cap1.log" >&2
	die "capture --exit-when-caught-up"
}
"$SLUICE" inspect --store "$W/store" --stream pitr --trust "$W/k.pub" --records --json >"$W/records.json" ||
	die "inspect --records --json"
# N: last txseq committed at or before T; LN: its source LSN; LAST: last txseq.
BOUNDS=$(python3 - "$W/records.json" "$T" <<'PY'
import datetime, json, sys
t = datetime.datetime.strptime(sys.argv[2], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
t_us = int(t.timestamp()) * 1000000 + t.microsecond
txns = []  # (txseq, time_us, lsn)
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["type"] == "begin":
        txns.append((r["txseq"], r["commit_time_us"], r["lsn"]))
    elif r["type"] == "snapshot_begin":
        txns.append((r["txseq"], r["time_us"], r["consistent_lsn"]))
before = [x for x in txns if x[1] <= t_us]
after = [x for x in txns if x[1] > t_us]
assert before and after, (len(before), len(after))
n = max(x[0] for x in before)
assert all(x[0] < min(y[0] for y in after) for x in before), "commit times not in txseq order"
assert min(y[1] for y in after) - t_us > 500000, "phase 2 began less than 0.5 s after T"
assert t_us - max(x[1] for x in before) > 500000, "phase 1 ended less than 0.5 s before T"
print(n, [x[2] for x in txns if x[0] == n][0], max(x[0] for x in txns))
PY
) || die "could not find the bounds in the stream"
read -r N LN LAST <<<"$BOUNDS"
say "stream: txseq 1..$LAST; phase 1 ends at txseq $N (source LSN $LN)"
[ "$N" -eq 41 ]
check "phase 1 is the snapshot and 40 transactions (txseq 1..$N)"

origin_progress() {
	pg_psql dst "$1" -c "SELECT coalesce((SELECT pg_replication_origin_progress(roname, true) FROM pg_replication_origin WHERE roname = 'sluice_pitr@$1'), '0/0')" |
		python3 -c 'import sys; h, l = sys.stdin.read().strip().split("/"); print((int(h, 16) << 32) | int(l, 16))'
}
apply_to() { # apply_to DB LOG [ARGS...]
	local db=$1 log=$2
	shift 2
	"$SLUICE" apply --store "$W/store" --stream pitr --trust "$W/k.pub" --target "$(pg_conninfo dst "$db")" \
		"$@" 2>"$W/$log.log"
}
bounded() { # bounded DB BOUND-ARGS...: a bounded replay into a fresh DB equals phase 1
	local db=$1
	shift
	fresh_target "$db"
	apply_to "$db" "$db" "$@"
	check "$db: apply $* exits 0 (status $?)"
	grep -q "apply: $N transactions (txseq 1..$N)" "$W/$db.log"
	check "$db: applied txseq 1..$N"
	[ "$(origin_progress "$db")" = "$N" ]
	check "$db: origin progress = $N"
	"${CMP[@]}" compare "$W/phase1" "$(pg_conninfo dst "$db")" --quiet
	check "$db: every table equals the recorded phase-1 state"
}
fresh_target t_none
apply_to t_none t_none --until-time 2001-01-01T00:00:00Z
check "t_none: a bound before the first transaction exits 0"
grep -q "apply: 0 transactions" "$W/t_none.log" && [ "$(origin_progress t_none)" = 0 ] &&
	[ "$(pg_psql dst t_none -c 'SELECT (SELECT count(*) FROM acc) + (SELECT count(*) FROM ev) + (SELECT count(*) FROM nk) + (SELECT count(*) FROM gone)')" = 0 ]
check "t_none: nothing applied, no progress"

bounded t_tz --until-time "$TZ_T"
bounded t_txseq --until-txseq "$N"
bounded t_lsnx --until-lsn "$LN"
bounded t_lsn --until-lsn "$L"
bounded t_time --until-time "$T"

apply_to t_time again --until-time "$T"
check "t_time: the same bounded apply again exits 0"
grep -q "apply: 0 transactions" "$W/again.log" && [ "$(origin_progress t_time)" = "$N" ]
check "t_time: the same bounded apply again applies nothing"
"${CMP[@]}" compare "$W/phase1" "$(pg_conninfo dst t_time)" --quiet
check "t_time: still the phase-1 state"
say "bounded replays checked"

apply_to t_time t_time-rest --exit-when-caught-up
check "t_time: continuing without a bound exits 0"
grep -q "applying stream \\\\\"pitr\\\\\" from txseq $((N + 1))" "$W/t_time-rest.log" &&
	grep -q "apply: $((LAST - N)) transactions (txseq $((N + 1))..$LAST)" "$W/t_time-rest.log"
check "t_time: the continuation applies txseq $((N + 1))..$LAST"
[ "$(origin_progress t_time)" = "$LAST" ]
check "t_time: origin progress = last txseq $LAST"
"${CMP[@]}" compare "$SRC" "$(pg_conninfo dst t_time)"
check "t_time: every table equals the final source state"

# A second, empty database of the same server fed from the same stream, the
# usual way to recover a point in time next to a live copy. Replication
# origins belong to the whole server; the default origin names the database
# (sluice_pitr@t_second), so t_time's progress (txseq $LAST) is not taken
# over: the whole stream is replayed, without --origin.
pg_psql dst postgres -c "CREATE DATABASE t_second" || die "create database t_second"
pg_psql dst t_second -f "$W/schema.sql" >/dev/null || die "schema of t_second"
apply_to t_second t_second --exit-when-caught-up
check "t_second: apply into a second database of the same server exits 0 (status $?)"
grep -q "apply: $LAST transactions (txseq 1..$LAST)" "$W/t_second.log" &&
	[ "$(origin_progress t_second)" = "$LAST" ] && [ "$(origin_progress t_time)" = "$LAST" ]
check "t_second: the whole stream replayed under its own origin (sluice_pitr@t_second)"
"${CMP[@]}" compare "$SRC" "$(pg_conninfo dst t_second)" --quiet
check "t_second: every table equals the final source state"

# Upgrade: a database whose progress lives in an origin named before the
# default included the database (sluice_pitr, owned by it) keeps using it.
pg_psql dst postgres -c "CREATE DATABASE t_legacy" || die "create database t_legacy"
pg_psql dst t_legacy -f "$W/schema.sql" >/dev/null || die "schema of t_legacy"
apply_to t_legacy t_legacy-old --origin sluice_pitr --until-txseq "$N"
check "t_legacy: the bounded apply with --origin sluice_pitr exits 0"
apply_to t_legacy t_legacy --exit-when-caught-up
check "t_legacy: apply without --origin exits 0"
grep -q 'using replication origin \\"sluice_pitr\\"' "$W/t_legacy.log" &&
	grep -q "apply: $((LAST - N)) transactions (txseq $((N + 1))..$LAST)" "$W/t_legacy.log"
check "t_legacy: the existing origin sluice_pitr is used and apply continues at txseq $((N + 1))"
"${CMP[@]}" compare "$SRC" "$(pg_conninfo dst t_legacy)" --quiet
check "t_legacy: every table equals the final source state"

if [ "$FAILS" -ne 0 ]; then
	for f in "$W"/t_*.log; do
		echo "--- $f" >&2
		cat "$f" >&2
	done
	echo "test_apply_pitr: $FAILS checks FAILED" >&2
	exit 1
fi
echo "test_apply_pitr: passed ($((SECONDS - T0)) s)"
