#!/usr/bin/env bash
# A three-server JetStream cluster with a replicated (R3) stream, and a mirror:
#  1. capture --create makes the stream with replicas=3; capture and apply run
#     under a pgbench workload while one server is killed (kill -9), then
#     another is stopped and the first restarted, then the second restarted:
#     nothing is lost, apply ends equal to the source.
#  2. a mirror stream (JetStream's own mirroring, as a second region would use)
#     is consumed by a second apply into another database: equal to the source,
#     and sluice verify passes on the mirror.
# Usage: test_cluster.sh SLUICE NATSTOOL
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
NATSTOOL=$2
pg_step_checks nats_cluster
nats_cluster_start || die "could not start the nats-server cluster"

RATE=100
[ -n "${SLUICE_SANITIZED:-}" ] && RATE=40

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
pg_start dst2 || die "could not start the second target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
export PATH=$PGBIN:$PATH
pgbench -i -s 1 -q "$(pg_conninfo src)" >"$W/pgbench-init.log" 2>&1 || die "pgbench -i"
pg_psql src postgres -c "CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())" || die "marker"
pg_dump -s -d "$(pg_conninfo src)" >"$W/schema.sql" || die "pg_dump -s"
pg_psql dst postgres -f "$W/schema.sql" >/dev/null || die "target schema"
pg_psql dst2 postgres -f "$W/schema.sql" >/dev/null || die "second target schema"

STORE=$(nats_store SLUICE)
CAP=("$SLUICE" capture --source "$(pg_conninfo src)" --store "$STORE" --stream one --key "$W/k.key" --no-progress)
APPLY=("$SLUICE" apply --store "$STORE" --stream one --trust "$W/k.pub" --target "$(pg_conninfo dst)")
for i in $(seq 1 30); do
	"$SLUICE" capture --source "$(pg_conninfo src)" --store "$(nats_store SLUICE replicas=3)" --stream one \
		--key "$W/k.key" --no-progress --create --allow-no-identity --snapshot --exit-when-caught-up \
		2>"$W/cap0.log" && break
	grep -q "created JetStream stream" "$W/cap0.log" && die "capture --create failed after creating the stream"
	sleep 1
done
grep -q 'created JetStream stream.*3 replicas' "$W/cap0.log"
check "capture --create makes an R3 stream"
natstool add-mirror MIRROR SLUICE 1 || die "add-mirror"
say "snapshot captured into the R3 stream; mirror made"

"${CAP[@]}" 2>"$W/cap1.log" &
CAP_PID=$!
pg_wait_streaming $CAP_PID "$W/cap1.log" || die "capture did not start"
"${APPLY[@]}" 2>"$W/apply1.log" &
APPLY_PID=$!
"$SLUICE" apply --store "$(nats_store MIRROR)" --stream one --trust "$W/k.pub" \
	--target "$(pg_conninfo dst2)" 2>"$W/mirror-apply1.log" &
MAPPLY_PID=$!
pgbench -n -c 2 -j 2 -T 24 -R $RATE "$(pg_conninfo src)" >"$W/pgbench1.log" 2>&1 &
BENCH_PID=$!
sleep 4
nats_kill 2
say "server 2 killed"
sleep 4
nats_stop 3
nats_launch 2 || die "server 2 did not start again"
say "server 3 stopped, server 2 restarted"
sleep 5
nats_launch 3 || die "server 3 did not start again"
say "server 3 restarted"
wait $BENCH_PID || die "pgbench"
kill -0 $CAP_PID
check "capture survived the server losses"
kill -0 $APPLY_PID
check "apply survived the server losses"
pg_psql src postgres -c "INSERT INTO marker VALUES (1)" || die "marker 1"
T0=$SECONDS
until [ "$(pg_psql dst postgres -c 'SELECT count(*) FROM marker')" = 1 ] &&
	[ "$(pg_psql dst2 postgres -c 'SELECT count(*) FROM marker')" = 1 ]; do
	[ $((SECONDS - T0)) -gt 60 ] && break
	sleep 0.2
done
kill -TERM $CAP_PID
wait $CAP_PID
check "capture stops on SIGTERM with status 0"
for pid in $APPLY_PID $MAPPLY_PID; do
	kill -TERM $pid
	wait $pid
	check "apply (pid $pid) stops on SIGTERM with status 0"
done
"${APPLY[@]}" --exit-when-caught-up 2>"$W/apply2.log"
check "apply --exit-when-caught-up from the R3 stream (status $?)"
"$SLUICE" verify --store "$STORE" --stream one --trust "$W/k.pub" >"$W/verify.out" 2>&1
check "the R3 stream verifies whole"
head -1 "$W/verify.out"
python3 "$HERE/../pg/compare_dbs.py" compare "$(pg_conninfo src)" "$(pg_conninfo dst)" >"$W/cmp1.out"
check "every table equal between source and target after the server losses"

# ---- 2. the mirror ----------------------------------------------------------------
for i in $(seq 1 50); do
	[ "$(natstool msgs MIRROR)" = "$(natstool msgs SLUICE)" ] && break
	sleep 0.2
done
"$SLUICE" apply --store "$(nats_store MIRROR)" --stream one --trust "$W/k.pub" \
	--target "$(pg_conninfo dst2)" --exit-when-caught-up 2>"$W/mirror-apply2.log"
check "apply --exit-when-caught-up from the mirror (status $?)"
"$SLUICE" verify --store "$(nats_store MIRROR)" --stream one --trust "$W/k.pub" >"$W/verify-mirror.out" 2>&1
check "sluice verify passes on the mirror"
[ "$(head -1 "$W/verify.out")" = "$(head -1 "$W/verify-mirror.out")" ]
check "the mirror verifies identically to its origin"
python3 "$HERE/../pg/compare_dbs.py" compare "$(pg_conninfo src)" "$(pg_conninfo dst2)" >"$W/cmp2.out"
check "every table equal between source and the mirror's target"
[ "$FAILS" = 0 ] || {
	tail -n 5 "$W/apply1.log" "$W/cap1.log" "$W/mirror-apply1.log" >&2
	die "$FAILS checks failed"
}
echo "nats_cluster: all checks passed"
