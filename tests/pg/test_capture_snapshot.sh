#!/usr/bin/env bash
# Initial snapshot with concurrent changes: `capture --create --snapshot` starts
# while a workload updates, inserts and deletes rows of a 200k-row table, a
# NULL-heavy table and a table with out-of-line TOASTed text. The stream starts
# with one complete snapshot (txseq 1) holding rows of every table, followed by
# exactly the transactions committed after the snapshot's consistent point:
# no row of the snapshot is inserted again, none is missing, and the stream
# replays to exactly the source. Restarting with --create --snapshot on the
# non-empty stream takes no second snapshot. A capture killed with SIGKILL in
# the middle of the snapshot copy, rerun with --create --snapshot, leaves one
# complete snapshot followed by the changes (the slot is dropped and recreated).
# Usage: test_capture_snapshot.sh SLUICE
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
T0=$SECONDS

fail() {
	echo "snapshot: FAILED: $*" >&2
	echo "--- last lines of the server log:" >&2
	tail -n 15 "$PG_HARNESS_DIR/src/server.log" >&2 || true
	exit 1
}

# log_has FILE TEXT: a JSON log line of FILE has TEXT in its message.
log_has() {
	grep -qF -- "$2" "$1"
}

pg_start src
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
SRC=$(pg_conninfo src)
SS=(python3 "$HERE/stream_state.py")

pg_psql src postgres <<'SQL'
CREATE TABLE big (id bigint PRIMARY KEY, a int NOT NULL, b text);
INSERT INTO big SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 200000) g;
CREATE SEQUENCE bigid START 1000001;
-- mostly NULL
CREATE TABLE sparse (id int PRIMARY KEY, c1 text, c2 int, c3 numeric, c4 timestamptz);
INSERT INTO sparse SELECT g, CASE WHEN g % 10 = 0 THEN 'v' || g END, CASE WHEN g % 7 = 0 THEN g END,
  NULL, CASE WHEN g % 13 = 0 THEN '2024-01-01 00:00+00'::timestamptz + g * interval '1 min' END
  FROM generate_series(1, 5000) g;
-- out-of-line TOAST: updates of v send doc as unchanged, replay takes it from the snapshot
CREATE TABLE docs (id int PRIMARY KEY, v int NOT NULL, doc text);
ALTER TABLE docs ALTER COLUMN doc SET STORAGE EXTERNAL;
INSERT INTO docs SELECT g, 0, (SELECT string_agg(md5((g * 1000 + i)::text), ' ') FROM generate_series(1, 300) i)
  FROM generate_series(1, 200) g;
-- one row per workload transaction: each is either in the snapshot or in the stream
CREATE TABLE ticks (id bigserial PRIMARY KEY, worker int NOT NULL);
-- empty at the snapshot, filled later
CREATE TABLE late (id int PRIMARY KEY, v text);
ANALYZE;
SQL
echo "snapshot: $((SECONDS - T0)) s: tables filled"

# Workload: clients touch disjoint rows (id parity), so they never wait on each other.
cat >"$W/change.sql" <<'SQL'
\set id 2 * random(0, 99998) + :client_id + 1
\set s 2 * random(0, 2499) + :client_id + 1
\set d 2 * random(0, 99) + :client_id + 1
BEGIN;
UPDATE big SET a = a + 1, b = md5(coalesce(b, '')) WHERE id = :id;
INSERT INTO big VALUES (nextval('bigid'), :client_id, 'new');
DELETE FROM big WHERE id = :id + 2;
UPDATE sparse SET c1 = CASE WHEN c1 IS NULL THEN 'set' END, c2 = NULL, c3 = :id WHERE id = :s;
UPDATE docs SET v = v + 1 WHERE id = :d;
INSERT INTO ticks (worker) VALUES (:client_id);
COMMIT;
SQL
cat >"$W/renew.sql" <<'SQL'
\set s 2 * random(0, 2499) + :client_id + 1
\set d 2 * random(0, 99) + :client_id + 1
BEGIN;
DELETE FROM sparse WHERE id = :s;
INSERT INTO sparse VALUES (:s, NULL, NULL, NULL, NULL);
UPDATE docs SET doc = repeat(md5(random()::text), 200), v = 0 WHERE id = :d;
INSERT INTO ticks (worker) VALUES (:client_id);
COMMIT;
SQL
workload() { # workload SECONDS
	PATH=$PGBIN:$PATH pgbench -n -c 2 -j 2 -T "$1" -R 300 -f "$W/change.sql@4" -f "$W/renew.sql@1" \
		"$SRC" >"$W/pgbench.log" 2>&1
}

# 1. Snapshot while the workload runs.
workload 6 &
PGBENCH_PID=$!
sleep 1.5
rc=0
"$SLUICE" capture --source "$SRC" --store "$W/store" --stream snap --key "$W/k.key" --create \
	--snapshot --exit-when-caught-up --no-progress 2>"$W/cap1.log" || rc=$?
[ "$rc" -eq 0 ] || {
	cat "$W/cap1.log" >&2
	fail "capture --create --snapshot exited with status $rc"
}
log_has "$W/cap1.log" "snapshot done" || fail "capture took no snapshot"
jq -r '.msg' "$W/cap1.log" | grep -F "snapshot done" | sed 's/^/snapshot: capture: /'
kill -0 "$PGBENCH_PID" 2>/dev/null || fail "the workload ended before the snapshot was done: no concurrent changes"
wait "$PGBENCH_PID" || {
	cat "$W/pgbench.log" >&2
	fail "pgbench failed"
}
grep -E '^number of (transactions actually processed|failed)' "$W/pgbench.log" | sed 's/^/snapshot: pgbench: /'
pg_psql src postgres -c "INSERT INTO late SELECT g, 'late ' || g FROM generate_series(1, 50) g" \
	-c "INSERT INTO ticks (worker) VALUES (-1)"
rc=0
"$SLUICE" capture --source "$SRC" --store "$W/store" --stream snap --key "$W/k.key" \
	--exit-when-caught-up --no-progress 2>"$W/cap2.log" || rc=$?
[ "$rc" -eq 0 ] || {
	cat "$W/cap2.log" >&2
	fail "capture --exit-when-caught-up exited with status $rc"
}
echo "snapshot: $((SECONDS - T0)) s: captured the snapshot and the changes after it"

TABLES=public.big,public.sparse,public.docs,public.ticks,public.late

# check_stream LABEL STREAM CONNINFO TABLES ROWTABLES TABLE:COLUMN...
#   verify; one complete snapshot, at txseq 1, with rows of every table of
#   ROWTABLES and SnapshotEnd counts that match; changes after it in LSN order;
#   TABLES replay to exactly the source; every value of each TABLE:COLUMN once
#   in the snapshot and the inserts together, no transaction before the
#   snapshot's consistent point.
check_stream() {
	local label=$1 stream=$2 conn=$3 tables=$4 rowtables=$5
	shift 5
	local args=(--sluice "$SLUICE" --store "$W/store" --stream "$stream" --trust "$W/k.pub")
	local tc once=()
	for tc in "$@"; do once+=(--once "$tc"); done
	"$SLUICE" verify --store "$W/store" --stream "$stream" --trust "$W/k.pub" || fail "$label: sluice verify"
	"${SS[@]}" check "${args[@]}" --conninfo "$conn" --tables "$tables" --include-snapshot "${once[@]}" \
		--summary-out "$W/$stream.summary.json" ||
		fail "$label: the stream does not replay to the source exactly once"
	local npub
	npub=$(psql -X -At -q "$conn" -c "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'sluice_$stream'")
	python3 - "$W/$stream.summary.json" "$rowtables" "$npub" "$label" <<'PY' || fail "$label: snapshot checks"
import json, sys
s = json.load(open(sys.argv[1]))
rowtables, npub, label = sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4]
snaps = s["snapshots"]
c = s["counts"]
print("%s: %d snapshot(s); records: %s" % (label, len(snaps), ", ".join("%s %d" % kv for kv in sorted(c.items()))))
assert len(snaps) == 1 and c.get("snapshot_begin") == 1 and c.get("snapshot_end") == 1, \
    "expected exactly one snapshot, got %s" % snaps
sn = snaps[0]
print("%s: snapshot txseq %s at %s, complete %s, rows %s, SnapshotEnd rows %s relations %s (published tables %d)"
      % (label, sn["txseq"], sn["consistent_lsn"], sn["complete"], sn["rows"], sn["end_rows"], sn["end_relations"], npub))
assert sn["txseq"] == 1 and s["first_txseq"] == 1, "the snapshot is not the first transaction"
assert sn["begins_before"] == 0, "transactions before the snapshot"
assert sn["complete"], "the snapshot has no SnapshotEnd"
assert sn["end_rows"] == sum(sn["rows"].values()), "SnapshotEnd row count != snapshot rows"
assert sn["end_relations"] == npub, "SnapshotEnd relation count != published tables"
for t in rowtables:
    assert sn["rows"].get(t, 0) > 0, "no snapshot rows of %s" % t
assert c.get("begin", 0) > 0, "no transactions after the snapshot"
assert c.get("begin", 0) == c.get("commit", 0), "Begin and Commit counts differ"
assert s["last_txseq"] == 1 + c["begin"], "txseq not dense"
assert s["begins_in_lsn_order"], "transactions not in LSN order"
PY
}

check_stream snapshot snap "$SRC" "$TABLES" public.big,public.sparse,public.docs,public.ticks \
	public.ticks:id public.big:id
TICKS_SNAP=$(jq -r '.snapshots[0].rows["public.ticks"]' "$W/snap.summary.json")
TICKS_ALL=$(pg_psql src postgres -c "SELECT count(*) FROM ticks")
echo "snapshot: ticks: $TICKS_SNAP in the snapshot, $((TICKS_ALL - TICKS_SNAP)) after it, $TICKS_ALL in the source"
[ "$TICKS_SNAP" -lt "$TICKS_ALL" ] || fail "no workload transaction committed after the snapshot"

# 2. --create --snapshot again on the non-empty stream: no second snapshot.
pg_psql src postgres -c "UPDATE big SET a = -1 WHERE id % 1000 = 7" -c "DELETE FROM late WHERE id > 40" \
	-c "UPDATE docs SET v = -1 WHERE id < 10" -c "INSERT INTO ticks (worker) VALUES (-2)"
rc=0
"$SLUICE" capture --source "$SRC" --store "$W/store" --stream snap --key "$W/k.key" --create \
	--snapshot --exit-when-caught-up --no-progress 2>"$W/cap3.log" || rc=$?
[ "$rc" -eq 0 ] || {
	cat "$W/cap3.log" >&2
	fail "capture --create --snapshot on the existing stream exited with status $rc"
}
log_has "$W/cap3.log" "the stream already holds transactions: no new snapshot" ||
	fail "restart with --create --snapshot did not log that it takes no new snapshot"
! log_has "$W/cap3.log" "copying the published tables" || fail "restart with --create --snapshot copied tables again"
echo "snapshot: restart with --create --snapshot: 'the stream already holds transactions: no new snapshot'"
check_stream "snapshot restart" snap "$SRC" "$TABLES" public.big,public.sparse,public.docs,public.ticks \
	public.ticks:id
echo "snapshot: $((SECONDS - T0)) s: snapshot with concurrent changes checked"

# 3. SIGKILL in the middle of the snapshot copy, then --create --snapshot again.
pg_psql src postgres -c "CREATE DATABASE killdb"
KSRC=$(pg_conninfo src killdb)
pg_psql src killdb <<'SQL'
-- wide rows: the copy takes more than a second
CREATE TABLE huge (id bigint PRIMARY KEY, a int NOT NULL, b text);
INSERT INTO huge SELECT g, g % 1000, repeat(md5(g::text), 12) FROM generate_series(1, 400000) g;
CREATE TABLE side (id serial PRIMARY KEY, v text);
INSERT INTO side (v) SELECT 'before ' || g FROM generate_series(1, 10) g;
SQL
echo "snapshot: $((SECONDS - T0)) s: killdb filled (400k rows of 400 bytes)"
KCAP=("$SLUICE" capture --source "$KSRC" --store "$W/store" --stream snapkill --key "$W/k.key"
	--create --snapshot --no-progress)
"${KCAP[@]}" 2>"$W/kill1.log" &
KPID=$!
# Kill once the copy has written a few frames of the snapshot into the stream.
seg_bytes() {
	local f n=0
	for f in "$W"/store/snapkill/*.seg; do
		[ -f "$f" ] && n=$((n + $(stat -c %s "$f")))
	done
	echo "$n"
}
killed_at=""
for _ in $(seq 1 3000); do
	if ! kill -0 "$KPID" 2>/dev/null; then
		cat "$W/kill1.log" >&2
		fail "capture exited before it could be killed in the snapshot"
	fi
	if [ "$(seg_bytes)" -ge 200000 ]; then
		{
			kill -KILL "$KPID"
			wait "$KPID"
		} 2>/dev/null || true
		killed_at=$(seg_bytes)
		break
	fi
	sleep 0.01
done
[ -n "$killed_at" ] || fail "the snapshot copy never wrote to the stream"
log_has "$W/kill1.log" "copying the published tables" || fail "capture was not copying when killed"
! log_has "$W/kill1.log" "snapshot done" || fail "the snapshot finished before the kill: make table huge bigger"
echo "snapshot: capture killed with SIGKILL during the snapshot copy ($killed_at bytes of it in the stream)"
pg_psql src killdb -c "UPDATE huge SET a = -a WHERE id % 100000 = 1" -c "INSERT INTO side (v) VALUES ('between')"

"${KCAP[@]}" --exit-when-caught-up 2>"$W/kill2.log" &
KPID=$!
# Changes during the new snapshot: either in it or after it.
sleep 0.3
pg_psql src killdb -c "INSERT INTO side (v) SELECT 'during ' || g FROM generate_series(1, 5) g" \
	-c "DELETE FROM huge WHERE id % 100000 = 3" -c "UPDATE huge SET b = NULL WHERE id % 100000 = 5"
rc=0
wait "$KPID" || rc=$?
[ "$rc" -eq 0 ] || {
	cat "$W/kill2.log" >&2
	fail "capture --create --snapshot after the kill exited with status $rc"
}
jq -r '.msg' "$W/kill2.log" | grep -E "interrupted writer|dropped replication slot|snapshot done" | sed 's/^/snapshot: rerun: /'
log_has "$W/kill2.log" "of unfinished transaction 1 left by an interrupted writer" ||
	fail "the rerun did not cut off the unfinished snapshot"
log_has "$W/kill2.log" "dropped replication slot" || fail "the rerun did not drop the slot of the empty stream"
log_has "$W/kill2.log" "snapshot done" || fail "the rerun took no snapshot"
pg_psql src killdb -c "INSERT INTO side (v) VALUES ('after')" -c "UPDATE huge SET a = 7 WHERE id % 100000 = 2"
rc=0
"$SLUICE" capture --source "$KSRC" --store "$W/store" --stream snapkill --key "$W/k.key" \
	--exit-when-caught-up --no-progress 2>"$W/kill3.log" || rc=$?
[ "$rc" -eq 0 ] || {
	cat "$W/kill3.log" >&2
	fail "capture --exit-when-caught-up after the snapshot exited with status $rc"
}
check_stream "snapshot kill" snapkill "$KSRC" public.huge,public.side public.huge,public.side \
	public.huge:id public.side:id
echo "test_capture_snapshot: passed ($((SECONDS - T0)) s)"
