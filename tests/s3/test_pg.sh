#!/usr/bin/env bash
# PostgreSQL -> capture -> S3 -> apply -> PostgreSQL, with s3rver (no conditional
# writes) or SLUICE_TEST_S3_URL:
#  1. a live pgbench workload while capture writes into S3 (spool, seal by age)
#     and apply follows the S3 stream; apply sees commits within seconds.
#  2. a second capture of the stream with another spool is fenced (the lease),
#     while the first runs and after it was killed (until the lease ends).
#  3. kill -9 of capture during uploads (3 cycles; 20 under SLUICE_TEST_LONG=1),
#     and s3rver stopped and restarted under capture and apply: after a final
#     catch-up the stream verifies whole (no gap, no duplicate) and source and
#     target are equal table by table.
# Usage: test_pg.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks s3_pg
s3_start || die "could not start s3rver"

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

STORE=$(s3_store main)
CAP=("$SLUICE" capture --source "$(pg_conninfo src)" --store "$STORE" --spool "$W/spool"
	--stream one --key "$W/k.key" --no-progress --segment-seconds 1)
APPLY=("$SLUICE" apply --store "$STORE" --stream one --trust "$W/k.pub" --target "$(pg_conninfo dst)")
"${CAP[@]}" --create --allow-no-identity --snapshot --exit-when-caught-up 2>"$W/cap0.log" || {
	cat "$W/cap0.log" >&2
	die "capture --create --snapshot into S3"
}
[ -z "$(ls "$W/spool/one" | grep '\.seg$')" ]
check "a clean stop uploads the open segment: the spool holds no segment"
say "snapshot captured into S3"

# ---- 1. live -------------------------------------------------------------------
"${CAP[@]}" 2>"$W/cap1.log" &
CAP_PID=$!
pg_wait_streaming $CAP_PID "$W/cap1.log" || die "capture did not start"
"${APPLY[@]}" 2>"$W/apply1.log" &
APPLY_PID=$!
pgbench -n -c 2 -j 2 -T 6 -R $RATE "$(pg_conninfo src)" >"$W/pgbench1.log" 2>&1 || die "pgbench"
pg_psql src postgres -c "INSERT INTO marker VALUES (1)" || die "marker 1"
T0=$SECONDS
until [ "$(pg_psql dst postgres -c 'SELECT count(*) FROM marker')" = 1 ]; do
	[ $((SECONDS - T0)) -gt 30 ] && break
	sleep 0.2
done
LAT=$((SECONDS - T0))
[ "$LAT" -le 15 ]
check "apply following S3 sees a commit within seconds ($LAT s)"

# ---- 2. fencing ------------------------------------------------------------------
"$SLUICE" capture --source "$(pg_conninfo src)" --store "$STORE" --spool "$W/spool2" \
	--stream one --key "$W/k.key" --no-progress --slot other 2>"$W/fenced.log"
[ $? = 3 ] && grep -q "being written by another capture" "$W/fenced.log"
check "a second capture with another spool is fenced by the lease"

# ---- 3. kill -9 and a restarting server -----------------------------------------
pgbench -n -c 2 -j 2 -T $((KILLS * 3 + 6)) -R $RATE "$(pg_conninfo src)" >"$W/pgbench2.log" 2>&1 &
BENCH_PID=$!
for i in $(seq 1 "$KILLS"); do
	sleep "$(python3 -c 'import random; print(round(random.uniform(1.2, 2.8), 2))')"
	kill -9 $CAP_PID 2>/dev/null
	wait $CAP_PID 2>/dev/null
	"${CAP[@]}" 2>"$W/cap-k$i.log" &
	CAP_PID=$!
done
if [ "$S3_LOCAL" = 1 ]; then
	sleep 1
	s3_stop
	sleep 3
	s3_launch || die "s3rver did not start again"
fi
wait $BENCH_PID || die "pgbench during the kills"
pg_psql src postgres -c "INSERT INTO marker VALUES (2)" || die "marker 2"
kill -TERM $CAP_PID
wait $CAP_PID
check "capture stops on SIGTERM with status 0 after the kills and the server restart"
"${CAP[@]}" --exit-when-caught-up 2>"$W/cap-final.log"
check "a final capture catches up (status $?)"
T0=$SECONDS
until [ "$(pg_psql dst postgres -c 'SELECT count(*) FROM marker')" = 2 ]; do
	[ $((SECONDS - T0)) -gt 60 ] && break
	sleep 0.5
done
kill -TERM $APPLY_PID
wait $APPLY_PID
check "apply following S3 stops on SIGTERM with status 0"
"${APPLY[@]}" --exit-when-caught-up 2>"$W/apply2.log"
check "apply --exit-when-caught-up from S3 (status $?)"
"$SLUICE" verify --store "$STORE" --stream one --trust "$W/k.pub" --json >"$W/verify.json" 2>"$W/verify.log"
check "the S3 stream verifies whole after $KILLS kills: no gap, no duplicate txseq"
python3 "$HERE/../pg/compare_dbs.py" compare "$(pg_conninfo src)" "$(pg_conninfo dst)"
check "every table equal between source and target (nothing lost, nothing twice)"
grep -h "acknowledged" "$W"/cap*.log | tail -1 >&2
[ "$FAILS" = 0 ] || {
	tail -5 "$W/apply1.log" "$W/cap-final.log" >&2
	die "$FAILS checks failed"
}
echo "s3_pg: all checks passed"
