#!/usr/bin/env bash
# Two captures of one stream started at the same moment, each with its own spool
# and slot, while pgbench writes. The proxy (tests/s3/faultproxy.py) holds both
# first reads of the lease for a moment, so that both find the stream free and
# both write a lease: the race the read-back after a second must settle, on a
# server without conditional writes (s3rver). Exactly one capture writes; the
# other exits 3 with the fencing error and uploads nothing; the stream verifies
# whole and apply reproduces the source. Repeated (3 rounds; SLUICE_TEST_LONG=1: 10).
# Usage: test_lease.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks s3_lease
s3_start || die "could not start s3rver"
fp_start || die "could not start the fault proxy"
ROUNDS=3
[ "${SLUICE_TEST_LONG:-}" = 1 ] && ROUNDS=10

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
export PATH=$PGBIN:$PATH
pgbench -i -s 1 -q "$(pg_conninfo src)" >"$W/pgbench-init.log" 2>&1 || die "pgbench -i"
pg_dump -d "$(pg_conninfo src)" >"$W/dump.sql" || die "pg_dump"
pg_psql dst postgres -f "$W/dump.sql" >/dev/null || die "target"
STORE=$(fp_store main)
CAP=("$SLUICE" capture --source "$(pg_conninfo src)" --store "$STORE" --stream one --key "$W/k.key"
	--no-progress --segment-seconds 1)
A_ARGS=(--spool "$W/spool-a" --slot race_a)
B_ARGS=(--spool "$W/spool-b" --slot race_b)
"${CAP[@]}" "${A_ARGS[@]}" --create --allow-no-identity --exit-when-caught-up 2>"$W/cap0.log" || die "capture --create"
pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('race_b', 'pgoutput')" >/dev/null || die "slot"
pgbench -n -c 2 -j 2 -T $((ROUNDS * 8 + 4)) -R 50 "$(pg_conninfo src)" >"$W/pgbench.log" 2>&1 &
BENCH=$!
fenced="being written by another capture|changed while it was taken|lost its lease"
for r in $(seq 1 "$ROUNDS"); do
	: >"$FP_LOG"
	fp_rules '{"rules": [{"action": "delay", "method": "GET", "path": "/\\.writer\\.lease$", "ms": 400, "count": 2, "round": '$r'}]}'
	"${CAP[@]}" "${A_ARGS[@]}" 2>"$W/a$r.log" &
	A=$!
	"${CAP[@]}" "${B_ARGS[@]}" 2>"$W/b$r.log" &
	B=$!
	sleep 6
	[ "$(grep -c "FAULT delay GET .*writer.lease" "$FP_LOG")" = 2 ]
	check "round $r: both captures read the lease at the same moment"
	alive=""
	kill -0 $A 2>/dev/null && alive="$alive a"
	kill -0 $B 2>/dev/null && alive="$alive b"
	[ "$(wc -w <<<"$alive")" = 1 ]
	check "round $r: exactly one capture runs ($alive )"
	for x in a b; do
		pid=$A
		[ $x = b ] && pid=$B
		if [ "$alive" = " $x" ]; then
			kill -TERM $pid
			wait $pid
			check "round $r: the winner ($x) stops on SIGTERM with status 0"
			grep -q "streaming from slot" "$W/$x$r.log"
			check "round $r: the winner streamed"
		else
			wait $pid
			rc=$?
			[ $rc = 3 ] && grep -Eq "$fenced" "$W/$x$r.log"
			check "round $r: the loser ($x) exits 3 with the fencing error (got $rc)"
			[ $rc = 3 ] || sed 's/^/  loser: /' "$W/$x$r.log" | tail -60 >&2
			! grep -q "streaming from slot" "$W/$x$r.log"
			check "round $r: the loser never streamed"
			[ -z "$(ls "$W/spool-$x/one" 2>/dev/null | grep '\.seg$')" ] || ! grep -q "uploading segment" "$W/$x$r.log"
			check "round $r: the loser uploaded nothing"
		fi
	done
done
wait $BENCH || die "pgbench"
fp_rules '{"rules": []}'
# Both slots drain into the stream in turn: whatever one already wrote, the
# other's capture finds in the stream (by source position) and skips.
"${CAP[@]}" "${A_ARGS[@]}" --exit-when-caught-up 2>"$W/cap-a.log"
check "capture a catches up"
"${CAP[@]}" "${B_ARGS[@]}" --exit-when-caught-up 2>"$W/cap-b.log"
check "capture b catches up"
"$SLUICE" verify --store "$STORE" --stream one --trust "$W/k.pub" >"$W/verify.txt" 2>&1
check "the stream verifies whole: $(tail -2 "$W/verify.txt" | head -1)"
"$SLUICE" apply --store "$STORE" --stream one --trust "$W/k.pub" --target "$(pg_conninfo dst)" \
	--exit-when-caught-up 2>"$W/apply.log"
check "apply exits 0"
python3 "$HERE/../pg/compare_dbs.py" compare "$(pg_conninfo src)" "$(pg_conninfo dst)"
check "source and target equal (nothing lost, nothing twice)"
say "lease race"
[ "$FAILS" = 0 ] || die "$FAILS checks failed"
echo "s3_lease: all checks passed"
