#!/usr/bin/env bash
# sluice run in operation: sluice status against the running process (exit 0,
# positions from /status) and with nothing running (exit 4, read from the
# store, the slot and the target's origin: behind, then caught up); kill -9 of
# one pipeline's child restarts only that one with backoff; SIGHUP restarts
# only the changed pipeline (a max_rate added: visible in /metrics, the rows
# arrive slower than the limit allows and the throttled time grows) and
# refuses a file with errors, keeping the running configuration; apply
# --max-rate 200 takes at least ~8 s for 2,000 rows.
# Usage: test_service_ops.sh SLUICE
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks service_ops
pg_value_checks
RUN=""
svc_cleanup() {
	[ -n "$RUN" ] && kill -9 "$RUN" 2>/dev/null || true
	if [ "$fail" -ne 0 ] && [ -f "$W/run.log" ]; then tail -n 30 "$W/run.log" >&2 || true; fi
	pg_harness_cleanup
}
trap svc_cleanup EXIT

pg_start a
pg_start b
for n in a b; do
	pg_psql $n postgres -c "CREATE TABLE t_a (id bigserial PRIMARY KEY, v text)"
done
"$SLUICE" keygen --out "$W/ka" >/dev/null 2>&1
PORT=$(pg_free_port)
export SVC_A="$(pg_conninfo a)" SVC_B="$(pg_conninfo b)"
CONF=$W/sluice.yaml
conf() { # conf [EXTRA-APPLY-SETTINGS]: the configuration, a-to-b with extra settings
	cat <<YAML
listen: 127.0.0.1:$PORT
readiness: {max_lag: 20s, max_heartbeat_age: 15s}
restart: {min_delay: 1s, max_delay: 2s}
keys:
  a: {secret_file: $W/ka.key, public_file: $W/ka.pub}
stores:
  local: {url: $W/store}
pipelines:
  cap-a:
    capture: {source_env: SVC_A, store: local, stream: a, key: a, create: true,
              heartbeat_interval: 2s}
  a-to-b:
    apply: {target_env: SVC_B, store: local, stream: a, trust: [a], include: [public.t_a]$1}
YAML
}
conf "" >"$CONF"

metric() { # metric NAME PIPELINE: the sample's value
	curl -sf "http://127.0.0.1:$PORT/metrics" |
		awk -v n="$1" -v p="pipeline=\"$2\"" '$1 ~ "^"n"[{]" && index($1, p) && !done { print $2; done = 1 }'
}
wait_ready() { # wait_ready SECONDS
	local i
	for i in $(seq 1 $(($1 * 5))); do
		curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && return 0
		sleep 0.2
	done
	return 1
}
child() { # child NAME: pid of the child running pipeline NAME (empty: none)
	pgrep -P "$RUN" -f -- "--child $1 " || true
}
wait_child() { # wait_child NAME OLDPID SECONDS: a child other than OLDPID runs NAME
	local i p
	for i in $(seq 1 $(($3 * 5))); do
		p=$(child "$1")
		[ -n "$p" ] && [ "$p" != "$2" ] && { echo "$p"; return 0; }
		sleep 0.2
	done
	return 1
}
count() { pg_psql "$1" postgres -c "SELECT count(*) FROM t_a"; }
wait_rows() { # wait_rows SECONDS: b has as many rows as a
	local i want
	want=$(count a)
	for i in $(seq 1 $(($1 * 5))); do
		[ "$(count b)" = "$want" ] && return 0
		sleep 0.2
	done
	echo "b has $(count b) rows, a $want" >&2
	return 1
}
json() { # json FILE EXPRESSION: a value of the JSON in FILE (python: d is the object)
	python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

"$SLUICE" --log-format json run --config "$CONF" 2>"$W/run.log" &
RUN=$!
wait_ready 30 || die "not ready after 30 s: $(curl -s http://127.0.0.1:$PORT/readyz)"
pg_psql a postgres -c "INSERT INTO t_a (v) SELECT md5(g::text) FROM generate_series(1, 50) g"
wait_rows 30 || die "rows did not reach b"
wait_ready 30 || die "not ready after catching up"
# the children report about once a second: wait until a-to-b's report shows the rows applied
for i in $(seq 1 50); do
	[ "$(metric sluice_done_txseq a-to-b)" -ge 1 ] 2>/dev/null && break
	sleep 0.2
done

# sluice status against the running process
set +e
"$SLUICE" status --config "$CONF" >"$W/status1.txt" 2>"$W/status1.err"
rc=$?
"$SLUICE" status --config "$CONF" --json >"$W/status1.json" 2>>"$W/status1.err"
rcj=$?
set -e
check "status (running) exits 0" "$rc" 0
check "status --json (running) exits 0" "$rcj" 0
grep -q "^from sluice run at 127.0.0.1:$PORT" "$W/status1.txt" || bad "status does not say it asked sluice run: $(cat "$W/status1.txt")"
grep -Eq '^a-to-b +apply +a +running +[0-9]+ +[0-9]+ +0 txn, .* ready: ok$' "$W/status1.txt" || bad "no a-to-b row: $(cat "$W/status1.txt")"
grep -Eq '^cap-a +capture +a +running ' "$W/status1.txt" || bad "no cap-a row: $(cat "$W/status1.txt")"
check "status --json source" "$(json "$W/status1.json" 'd["source"]')" "sluice run"
check "status --json a-to-b healthy" "$(json "$W/status1.json" 'd["pipelines"]["a-to-b"]["healthy"]')" True
APPLIED=$(json "$W/status1.json" 'd["pipelines"]["a-to-b"]["position_txseq"]')
[ "$APPLIED" -ge 1 ] || bad "a-to-b position $APPLIED: $(cat "$W/status1.txt")"
say "status (running): a-to-b at txseq $APPLIED"

# kill -9 of one child: only it restarts, with backoff; the capture goes on
CAP=$(child cap-a)
APP=$(child a-to-b)
[ -n "$CAP" ] && [ -n "$APP" ] || die "no children (cap-a '$CAP', a-to-b '$APP')"
kill -9 "$APP"
pg_psql a postgres -c "INSERT INTO t_a (v) SELECT md5(g::text) FROM generate_series(1, 50) g"
APP2=$(wait_child a-to-b "$APP" 20) || die "a-to-b was not restarted"
grep -q '"pipeline \\"a-to-b\\" exited with status 137; restarting in [0-9]* ms (attempt 1)"' "$W/run.log" ||
	bad "no backoff message for the killed child"
check "cap-a kept its child" "$(child cap-a)" "$CAP"
check "restarts of a-to-b" "$(metric sluice_pipeline_restarts_total a-to-b)" 1
check "restarts of cap-a" "$(metric sluice_pipeline_restarts_total cap-a)" 0
wait_rows 30 || bad "rows did not reach b after the restart"
say "kill -9 of a-to-b ($APP): restarted as $APP2, cap-a ($CAP) untouched"

# SIGHUP with a changed a-to-b (a rate limit): only a-to-b restarts
conf ", max_rate: {rows_per_second: 200}" >"$CONF"
kill -HUP "$RUN"
APP3=$(wait_child a-to-b "$APP2" 20) || die "a-to-b was not restarted by the reload"
grep -q 'pipeline \\"a-to-b\\" changed: restarting it' "$W/run.log" || bad "no reload message"
check "cap-a kept its child across the reload" "$(child cap-a)" "$CAP"
for i in $(seq 1 25); do [ "$(metric sluice_rate_limit_rows_per_second a-to-b)" = 200 ] && break; sleep 0.2; done
check "the limit is in /metrics" "$(metric sluice_rate_limit_rows_per_second a-to-b)" 200
check "cap-a has no limit" "$(metric sluice_rate_limit_rows_per_second cap-a)" 0
wait_ready 30 || bad "not ready after the reload"
BEFORE=$(count b)
START=$SECONDS
# one transaction of 2,000 rows at 200 rows/s (a burst of one second): it commits after ~9 s
pg_psql a postgres -c "INSERT INTO t_a (v) SELECT md5(g::text) FROM generate_series(1, 2000) g"
sleep 3
MID=$(($(count b) - BEFORE))
[ "$MID" -lt 2000 ] || bad "all 2000 rows applied within 3 s at 200 rows/s"
wait_rows 60 || bad "the throttled rows did not all arrive"
TOOK=$((SECONDS - START))
[ "$TOOK" -ge 7 ] || bad "2000 rows at 200 rows/s took only $TOOK s"
THR=$(metric sluice_throttled_seconds_total a-to-b)
python3 -c "import sys; sys.exit(0 if float('$THR') >= 4 else 1)" || bad "throttled seconds $THR"
say "max_rate 200 rows/s: $MID rows after 3 s, all 2000 after $TOOK s, throttled $THR s"

# SIGHUP with a broken file: refused, the running configuration kept
cp "$CONF" "$W/good.yaml"
printf 'pipelines:\n  a-to-b:\n    apply: {store: nowhere, colour: red}\n' >"$CONF"
kill -HUP "$RUN"
for i in $(seq 1 50); do grep -q 'the new configuration has errors: keeping the one running' "$W/run.log" && break; sleep 0.2; done
grep -q 'the new configuration has errors: keeping the one running' "$W/run.log" || bad "a broken file was not refused"
sleep 1
check "cap-a kept its child after the refused reload" "$(child cap-a)" "$CAP"
check "a-to-b kept its child after the refused reload" "$(child a-to-b)" "$APP3"
pg_psql a postgres -c "INSERT INTO t_a (v) SELECT md5(g::text) FROM generate_series(1, 20) g"
wait_rows 30 || bad "replication stopped after a refused reload"
cp "$W/good.yaml" "$CONF"

kill -TERM "$RUN"
set +e
wait "$RUN"
rc=$?
set -e
RUN=""
check "SIGTERM exits 0" "$rc" 0

# nothing running: more transactions captured, not applied; status reads the stores
for i in $(seq 1 20); do
	pg_psql a postgres -c "INSERT INTO t_a (v) SELECT md5(g::text) FROM generate_series(1, 100) g"
done
"$SLUICE" capture --source "$SVC_A" --store "$W/store" --stream a --key "$W/ka.key" \
	--exit-when-caught-up --no-progress 2>"$W/capture.log" || die "capture failed: $(tail -n 5 "$W/capture.log")"
pg_psql a postgres -c "INSERT INTO t_a (v) VALUES ('not captured yet')"
set +e
"$SLUICE" status --config "$CONF" >"$W/status2.txt" 2>"$W/status2.err"
rc=$?
"$SLUICE" status --config "$CONF" --json >"$W/status2.json" 2>>"$W/status2.err"
rcj=$?
set -e
check "status (nothing running) exits 4" "$rc" 4
check "status --json (nothing running) exits 4" "$rcj" 4
grep -q "^sluice run does not answer at 127.0.0.1:$PORT: read from the stores and databases" "$W/status2.txt" ||
	bad "status does not say where it read: $(cat "$W/status2.txt")"
check "offline source" "$(json "$W/status2.json" 'd["source"]')" "stores"
HEAD=$(json "$W/status2.json" 'd["pipelines"]["cap-a"]["head_txseq"]')
check "offline apply head = capture head" "$(json "$W/status2.json" 'd["pipelines"]["a-to-b"]["head_txseq"]')" "$HEAD"
LAG=$(json "$W/status2.json" 'd["pipelines"]["a-to-b"]["lag_transactions"]')
[ "$LAG" -ge 20 ] || bad "offline lag $LAG transactions, want at least 20"
grep -Eq "^a-to-b +apply +a +not running +[0-9]+ +$HEAD +$LAG txn +behind by $LAG transactions$" "$W/status2.txt" ||
	bad "no offline a-to-b row: $(cat "$W/status2.txt")"
grep -Eq "^cap-a +capture +a +not running +$HEAD \(slot [0-9A-F]+/[0-9A-F]+\) +$HEAD .*of WAL after the slot's position$" "$W/status2.txt" ||
	bad "no offline cap-a row with its slot: $(cat "$W/status2.txt")"
WAL=$(json "$W/status2.json" 'd["pipelines"]["cap-a"]["slot_wal_behind_bytes"]')
[ "$WAL" -gt 0 ] || bad "slot WAL behind $WAL"
say "status (nothing running): head $HEAD, a-to-b $LAG transactions behind, slot $WAL bytes behind"

# apply --max-rate 200: 2,000 rows take at least ~8 s (a burst of one second)
START=$SECONDS
"$SLUICE" apply --store "$W/store" --stream a --trust "$W/ka.pub" --target "$SVC_B" \
	--include public.t_a --exit-when-caught-up --max-rate 200 2>"$W/apply.log" ||
	die "apply failed: $(tail -n 5 "$W/apply.log")"
TOOK=$((SECONDS - START))
[ "$TOOK" -ge 7 ] || bad "apply --max-rate 200 of 2000 rows took only $TOOK s"
WAITED=$(sed -n 's/.*--max-rate: waited \([0-9.]*\) s in all.*/\1/p' "$W/apply.log")
python3 -c "import sys; sys.exit(0 if float('${WAITED:-0}') >= 5 else 1)" || bad "apply says it waited '$WAITED' s"
check "b has every captured row" "$(count b)" "$(($(count a) - 1))"
say "apply --max-rate 200: 2000 rows in $TOOK s, waited $WAITED s"

set +e
"$SLUICE" status --config "$CONF" --offline --json >"$W/status3.json" 2>"$W/status3.err"
rc=$?
set -e
check "status --offline exits 4" "$rc" 4
check "caught up offline" "$(json "$W/status3.json" 'd["pipelines"]["a-to-b"]["lag_transactions"]')" 0
check "offline health" "$(json "$W/status3.json" 'd["pipelines"]["a-to-b"]["health"]')" "caught up"
check "offline position = head" "$(json "$W/status3.json" 'd["pipelines"]["a-to-b"]["position_txseq"]')" "$HEAD"

# capture --max-rate: a snapshot of every row of t_a at 1,000 rows/s takes at least ~(N-1000)/1000 s
N=$(count a)
START=$SECONDS
"$SLUICE" capture --source "$SVC_A" --store "$W/store" --stream snap --key "$W/ka.key" --create \
	--slot snap --publication snap --snapshot --exit-when-caught-up --no-progress --max-rate 1000 \
	2>"$W/snap.log" || die "capture --snapshot failed: $(tail -n 5 "$W/snap.log")"
TOOK=$((SECONDS - START))
[ "$TOOK" -ge $((N / 1000 - 2)) ] || bad "a snapshot of $N rows at 1000 rows/s took only $TOOK s"
WAITED=$(sed -n 's/.*--max-rate: waited \([0-9.]*\) s in all.*/\1/p' "$W/snap.log")
python3 -c "import sys; sys.exit(0 if float('${WAITED:-0}') >= $N / 1000 - 2 else 1)" || bad "capture says it waited '$WAITED' s"
say "capture --snapshot --max-rate 1000: $N rows in $TOOK s, waited $WAITED s"

# a target that cannot be read: exit 3, the row says so
pg_stop b
set +e
"$SLUICE" status --config "$CONF" --offline >"$W/status4.txt" 2>"$W/status4.err"
rc=$?
set -e
check "status with a target down exits 3" "$rc" 3
grep -q "the target could not be read" "$W/status4.txt" || bad "no reason for the target: $(cat "$W/status4.txt")"
! grep -q "password" "$W/status4.err" || bad "a secret in the log"

[ "$fail" -eq 0 ] || die "$fail checks failed"
say "PASS ($pass checks)"
