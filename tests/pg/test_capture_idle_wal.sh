#!/usr/bin/env bash
# An idle database next to a busy one on the same server does not retain WAL
# behind its slot: while capture of database "quiet" receives nothing but
# keepalives (the busy database's transactions are decoded and dropped by the
# server), it confirms the server's position (--status-interval 1), so the
# slot's confirmed_flush_lsn follows pg_current_wal_lsn() and its restart_lsn
# moves on at the next running-xacts record, letting the server recycle WAL.
# After that, a write in "quiet" is still captured, and SIGTERM stops cleanly.
# Usage: test_capture_idle_wal.sh SLUICE
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"

MIN_WAL_MB=100  # WAL the busy database must generate
NEAR_MB=16      # how far behind pg_current_wal_lsn() the slot may stay (one WAL segment)
LOAD_S=10       # duration of the load
SETTLE_MAX_S=40 # restart_lsn moves at running-xacts records: the bgwriter logs one every 15 s

pg_start src
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
pg_psql src postgres -c "CREATE DATABASE quiet" -c "CREATE DATABASE busy"
pg_psql src quiet -c "CREATE TABLE t (id integer PRIMARY KEY, v text)"
pg_psql src busy -c "CREATE TABLE filler (id bigint, pad text)"

slot_sql() {
	pg_psql src postgres -F ' ' -c "SELECT pg_current_wal_lsn(), confirmed_flush_lsn, restart_lsn,
		pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint,
		pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = 'sluice_q'"
}

start_lsn=$(pg_psql src postgres -c "SELECT pg_current_wal_lsn()")
"$SLUICE" capture --source "$(pg_conninfo src quiet)" --store "$W/store" --stream q \
	--key "$W/k.key" --create --status-interval 1 --no-progress 2>"$W/capture.log" &
cap=$!
stop_capture() { kill -TERM "$cap" 2>/dev/null || true; }
trap 'stop_capture; pg_harness_cleanup' EXIT

for _ in $(seq 1 100); do
	[ -n "$(slot_sql)" ] && pg_psql src postgres -c "SELECT active FROM pg_replication_slots
		WHERE slot_name = 'sluice_q'" | grep -qx t && break
	kill -0 "$cap" 2>/dev/null || { cat "$W/capture.log" >&2; exit 1; }
	sleep 0.1
done
read -r _ _ restart0 _ _ <<<"$(slot_sql)"
echo "idle_wal: slot created, restart_lsn $restart0"

# Load on "busy": TPC-B-like small transactions plus bulk inserts, for LOAD_S seconds.
t0=$(date +%s)
"$PGBIN/pgbench" -i -s 5 -q "$(pg_conninfo src busy)" >"$W/pgbench-init.log" 2>&1
"$PGBIN/pgbench" -T "$LOAD_S" -c 2 -j 2 "$(pg_conninfo src busy)" >"$W/pgbench.log" 2>&1 &
bench=$!
(
	end=$((t0 + LOAD_S + 1))
	while [ "$(date +%s)" -lt "$end" ]; do
		pg_psql src busy -c "INSERT INTO filler SELECT i, repeat('x', 200) FROM generate_series(1, 50000) i"
	done
) &
bulk=$!
# Meanwhile: the slot's confirmed position must follow during the load too.
max_lag=0
while kill -0 "$bench" 2>/dev/null || kill -0 "$bulk" 2>/dev/null; do
	read -r _ _ _ lag _ <<<"$(slot_sql)"
	[ "$lag" -gt "$max_lag" ] && max_lag=$lag
	sleep 0.5
done
wait "$bench" || { cat "$W/pgbench.log" >&2; exit 1; }
wait "$bulk"
t1=$(date +%s)
end_load_lsn=$(pg_psql src postgres -c "SELECT pg_current_wal_lsn()")
wal_bytes=$(pg_psql src postgres -c "SELECT pg_wal_lsn_diff('$end_load_lsn', '$start_lsn')::bigint")
echo "idle_wal: busy generated $((wal_bytes / 1048576)) MB of WAL in $((t1 - t0)) s" \
	"($(grep -o 'tps = [0-9.]*' "$W/pgbench.log" || echo 'tps ?')); largest confirmed_flush lag" \
	"sampled during the load: $((max_lag / 1048576)) MB ($max_lag bytes)"
if [ "$wal_bytes" -lt $((MIN_WAL_MB * 1048576)) ]; then
	echo "idle_wal: the load generated only $wal_bytes bytes of WAL, want >= $MIN_WAL_MB MB" >&2
	exit 1
fi
kill -0 "$cap" 2>/dev/null || { cat "$W/capture.log" >&2; echo "idle_wal: capture died" >&2; exit 1; }
# The slot followed during the load too, not only once the load was over.
if [ "$max_lag" -ge $((wal_bytes / 2)) ]; then
	echo "idle_wal: FAIL: during the load confirmed_flush_lsn fell $max_lag bytes behind" \
		"pg_current_wal_lsn() (of $wal_bytes bytes generated)" >&2
	exit 1
fi

# Wait for the slot: confirmed_flush_lsn near the current position, and
# restart_lsn moved past nearly all of the load.
ok=0
for i in $(seq 1 $((SETTLE_MAX_S * 2))); do
	read -r cur confirmed restart clag rlag <<<"$(slot_sql)"
	if [ "$clag" -lt $((NEAR_MB * 1048576)) ] && [ "$rlag" -lt $((NEAR_MB * 1048576)) ] &&
		[ "$restart" != "$restart0" ]; then
		ok=1
		break
	fi
	sleep 0.5
done
echo "idle_wal: after $((i / 2)) s: current $cur, confirmed_flush_lsn $confirmed ($clag bytes behind)," \
	"restart_lsn $restart ($rlag bytes behind; was $restart0)"
if [ "$ok" != 1 ]; then
	echo "idle_wal: FAIL: the slot of the idle database still retains WAL $SETTLE_MAX_S s after the" \
		"load: confirmed_flush_lsn $clag bytes and restart_lsn $rlag bytes behind" \
		"pg_current_wal_lsn() (want < $NEAR_MB MB each)" >&2
	cat "$W/capture.log" >&2
	exit 1
fi

# A write in the quiet database is still captured.
pg_psql src quiet -c "INSERT INTO t VALUES (1, 'still here')"
want=$(pg_psql src postgres -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 100); do
	[ "$(pg_psql src postgres -c "SELECT confirmed_flush_lsn >= '$want'
		FROM pg_replication_slots WHERE slot_name = 'sluice_q'")" = t ] && break
	sleep 0.1
done
kill -TERM "$cap"
rc=0
wait "$cap" || rc=$?
trap pg_harness_cleanup EXIT
if [ "$rc" -ne 0 ]; then
	cat "$W/capture.log" >&2
	echo "idle_wal: capture exited with status $rc after SIGTERM, want 0" >&2
	exit 1
fi

"$SLUICE" verify --store "$W/store" --stream q --trust "$W/k.pub"
python3 "$HERE/stream_state.py" compare --sluice "$SLUICE" --store "$W/store" --stream q \
	--trust "$W/k.pub" --conninfo "$(pg_conninfo src quiet)" --tables public.t
"$SLUICE" inspect --store "$W/store" --stream q --trust "$W/k.pub" --records --json >"$W/records.json"
python3 - "$W/records.json" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
begins = [r for r in recs if r["type"] == "begin"]
changes = [r for r in recs if r["type"] in ("insert", "update", "delete", "truncate")]
assert len(begins) == 1 and begins[0]["txseq"] == 1, "transactions: %s" % begins
assert len(changes) == 1 and changes[0]["relation"] == "public.t", changes
assert changes[0]["new"] == {"id": "1", "v": "still here"}, changes[0]
print("idle_wal: the stream holds exactly the one transaction of database quiet")
PY
echo "test_capture_idle_wal: passed"
