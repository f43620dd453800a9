#!/usr/bin/env bash
# PostgreSQL -> capture -> NATS JetStream -> apply -> PostgreSQL, one nats-server:
#  1. a live pgbench workload while capture publishes into JetStream and apply
#     follows it (pushed, no polling): a commit is applied within a second or two.
#  2. a second writer of a stream is fenced: a message published on the stream's
#     subject by anyone else makes capture's next publish fail (expected last
#     subject sequence), and capture stops instead of writing on.
#  3. kill -9 of capture under the workload (3 cycles; 20 under SLUICE_TEST_LONG=1)
#     and nats-server stopped and restarted under capture and apply: the stream
#     verifies whole (no gap, no duplicate txseq) and source and target are equal.
# Usage: test_pg.sh SLUICE NATSTOOL
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
NATSTOOL=$2
pg_step_checks nats_pg
nats_start || die "could not start nats-server"

KILLS=3
[ "${SLUICE_TEST_LONG:-}" = 1 ] && KILLS=20
RATE=100
[ -n "${SLUICE_SANITIZED:-}" ] && RATE=40

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
export PATH=$PGBIN:$PATH
pgbench -i -s 1 -q "$(pg_conninfo src)" >"$W/pgbench-init.log" 2>&1 || die "pgbench -i"
pg_psql src postgres -c "CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())" || die "marker"
pg_dump -s -d "$(pg_conninfo src)" >"$W/schema.sql" || die "pg_dump -s"
pg_psql dst postgres -f "$W/schema.sql" >/dev/null || die "target schema"

STORE=$(nats_store SLUICE)
CAP=("$SLUICE" capture --source "$(pg_conninfo src)" --store "$STORE" --stream one --key "$W/k.key" --no-progress)
APPLY=("$SLUICE" apply --store "$STORE" --stream one --trust "$W/k.pub" --target "$(pg_conninfo dst)")
"${CAP[@]}" --create --allow-no-identity --snapshot --exit-when-caught-up 2>"$W/cap0.log" || {
	cat "$W/cap0.log" >&2
	die "capture --create --snapshot into JetStream"
}
grep -q "created JetStream stream" "$W/cap0.log"
check "capture --create creates the JetStream stream"
say "snapshot captured into JetStream"

# ---- 1. live -------------------------------------------------------------------
"${CAP[@]}" 2>"$W/cap1.log" &
CAP_PID=$!
pg_wait_streaming $CAP_PID "$W/cap1.log" || die "capture did not start"
"${APPLY[@]}" 2>"$W/apply1.log" &
APPLY_PID=$!
pgbench -n -c 2 -j 2 -T 6 -R $RATE "$(pg_conninfo src)" >"$W/pgbench1.log" 2>&1 || die "pgbench"
pg_psql src postgres -c "INSERT INTO marker VALUES (1)" || die "marker 1"
T0=$(date +%s%N)
until [ "$(pg_psql dst postgres -c 'SELECT count(*) FROM marker')" = 1 ]; do
	[ $(($(date +%s%N) - T0)) -gt 30000000000 ] && break
	sleep 0.05
done
LAT=$((($(date +%s%N) - T0) / 1000000))
[ "$LAT" -le 3000 ]
check "apply following JetStream sees a commit within ${LAT} ms"

# ---- 2. fencing ------------------------------------------------------------------
"$SLUICE" capture --source "$(pg_conninfo src)" --store "$STORE" --stream two --key "$W/k.key" \
	--no-progress --create --allow-no-identity 2>"$W/two.log" &
TWO_PID=$!
pg_wait_streaming $TWO_PID "$W/two.log" || die "capture of stream two did not start"
pg_psql src postgres -c "INSERT INTO marker VALUES (100)" || die "marker 100"
for i in $(seq 1 50); do
	natstool last-seq SLUICE sluice.two.frames >/dev/null 2>&1 && break
	sleep 0.1
done
natstool forge SLUICE sluice.two.frames flip >/dev/null || die "forge on stream two"
pg_psql src postgres -c "INSERT INTO marker VALUES (101)" || die "marker 101"
for i in $(seq 1 100); do
	kill -0 $TWO_PID 2>/dev/null || break
	sleep 0.1
done
wait $TWO_PID
RC=$?
[ "$RC" != 0 ] && grep -q "being written by another writer" "$W/two.log"
check "a capture whose stream another writer published to is fenced (status $RC)"
pg_psql src postgres -c "SELECT pg_drop_replication_slot('sluice_two')" >/dev/null

# ---- 3. kill -9 and a restarting server -----------------------------------------
pgbench -n -c 2 -j 2 -T $((KILLS * 2 + 8)) -R $RATE "$(pg_conninfo src)" >"$W/pgbench2.log" 2>&1 &
BENCH_PID=$!
for i in $(seq 1 "$KILLS"); do
	sleep "$(python3 -c 'import random; print(round(random.uniform(0.8, 2.0), 2))')"
	kill -9 $CAP_PID 2>/dev/null
	wait $CAP_PID 2>/dev/null
	"${CAP[@]}" 2>"$W/cap-k$i.log" &
	CAP_PID=$!
done
sleep 1
nats_stop 1
sleep 2
nats_launch 1 || die "nats-server did not start again"
wait $BENCH_PID || die "pgbench during the kills"
pg_psql src postgres -c "INSERT INTO marker VALUES (2)" || die "marker 2"
T0=$SECONDS
until [ "$(pg_psql dst postgres -c 'SELECT count(*) FROM marker WHERE id = 2')" = 1 ]; do
	[ $((SECONDS - T0)) -gt 60 ] && break
	sleep 0.2
done
[ "$(pg_psql dst postgres -c 'SELECT count(*) FROM marker WHERE id = 2')" = 1 ]
check "apply following JetStream went on through the kills and the server restart"
kill -TERM $CAP_PID
wait $CAP_PID
check "capture stops on SIGTERM with status 0 after the kills and the server restart"
"${CAP[@]}" --exit-when-caught-up 2>"$W/cap-final.log"
check "a final capture catches up (status $?)"
sleep 1
kill -TERM $APPLY_PID
wait $APPLY_PID
check "apply following JetStream stops on SIGTERM with status 0"
"${APPLY[@]}" --exit-when-caught-up 2>"$W/apply2.log"
check "apply --exit-when-caught-up from JetStream (status $?)"
"$SLUICE" verify --store "$STORE" --stream one --trust "$W/k.pub" >"$W/verify.out" 2>&1
check "the JetStream stream verifies whole after $KILLS kills: no gap, no duplicate txseq"
head -1 "$W/verify.out"
python3 "$HERE/../pg/compare_dbs.py" compare "$(pg_conninfo src)" "$(pg_conninfo dst)"
check "every table equal between source and target (nothing lost, nothing twice)"
[ "$FAILS" = 0 ] || {
	tail -n 5 "$W/apply1.log" "$W/cap-final.log" >&2
	die "$FAILS checks failed"
}
echo "nats_pg: all checks passed"
