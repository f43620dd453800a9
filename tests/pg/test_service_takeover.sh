#!/usr/bin/env bash
# Standby takeover: two sluice run processes with the same capture pipeline;
# exactly one captures, the other waits. kill -9 of the active one under
# load: the standby takes over, and the stream holds every committed
# transaction exactly once (verify passes; insert records = source rows;
# a replay equals the source).
# Usage: test_service_takeover.sh SLUICE
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks takeover
pg_value_checks
R1=""
R2=""
LOAD=""
svc_cleanup() {
	local p
	for p in $R1 $R2 $LOAD; do kill -9 "$p" 2>/dev/null || true; done
	pg_harness_cleanup
}
trap svc_cleanup EXIT

pg_start src
pg_start dst
for n in src dst; do
	pg_psql $n postgres -c "CREATE TABLE t (id bigserial PRIMARY KEY, v text)"
done
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
export SVC_SRC="$(pg_conninfo src)"
P1=$(pg_free_port)
P2=$(pg_free_port)
conf() { # conf PORT
	cat <<YAML
listen: 127.0.0.1:$1
restart: {min_delay: 200ms, max_delay: 1s}
keys:
  k: {secret_file: $W/k.key, public_file: $W/k.pub}
stores:
  local: {url: $W/store}
pipelines:
  cap:
    capture: {source_env: SVC_SRC, store: local, stream: s, key: k, create: true}
YAML
}
conf "$P1" >"$W/one.yaml"
conf "$P2" >"$W/two.yaml"
standby() { # standby PORT: the value of sluice_pipeline_standby
	curl -sf "http://127.0.0.1:$1/metrics" | awk '$1 ~ /^sluice_pipeline_standby[{]/ { v = $2 } END { print v }'
}
"$SLUICE" --log-format json run --config "$W/one.yaml" 2>"$W/one.log" &
R1=$!
for i in $(seq 1 100); do grep -q 'streaming from slot' "$W/one.log" && break; sleep 0.1; done
grep -q 'streaming from slot' "$W/one.log" || die "the first process does not capture"
"$SLUICE" --log-format json run --config "$W/two.yaml" 2>"$W/two.log" &
R2=$!
for i in $(seq 1 100); do [ "$(standby "$P2")" = 1 ] && break; sleep 0.1; done
check "the second process is a standby" "$(standby "$P2")" 1
check "the first is not" "$(standby "$P1")" 0

# load inserts until $W/stop exists: stopped that way, it finishes its insert
# before the rows are counted (a kill would leave the running psql to commit
# after the count).
load() {
	while [ ! -e "$W/stop" ]; do
		pg_psql src postgres -c "INSERT INTO t (v) SELECT md5(random()::text) FROM generate_series(1, 10) g" >/dev/null 2>&1 || true
		sleep 0.02
	done
}
load &
LOAD=$!
sleep 3
kill -9 "$R1"
wait "$R1" 2>/dev/null || true
R1=""
KILLED=$SECONDS
for i in $(seq 1 300); do grep -q 'streaming from slot' "$W/two.log" && break; sleep 0.1; done
grep -q 'streaming from slot' "$W/two.log" || die "the standby did not take over: $(tail -5 "$W/two.log")"
say "the standby took over after $((SECONDS - KILLED)) s"
sleep 3
touch "$W/stop"
wait "$LOAD" 2>/dev/null || true
LOAD=""
N=$(pg_psql src postgres -c "SELECT count(*) FROM t")
# let the new active capture drain, then stop it cleanly
for i in $(seq 1 100); do
	got=$("$SLUICE" inspect --store "$W/store" --stream s --trust "$W/k.pub" --records --json 2>/dev/null | grep -c '"type":"insert"' || true)
	[ "$got" = "$N" ] && break
	sleep 0.2
done
kill -TERM "$R2"
set +e
wait "$R2"
rc=$?
set -e
R2=""
check "the standby's SIGTERM exits 0" "$rc" 0
"$SLUICE" verify --store "$W/store" --stream s --trust "$W/k.pub" >"$W/verify.out" 2>&1 || die "the stream does not verify: $(cat "$W/verify.out")"
INS=$("$SLUICE" inspect --store "$W/store" --stream s --trust "$W/k.pub" --records --json | grep -c '"type":"insert"')
check "every inserted row once in the stream" "$INS" "$N"
"$SLUICE" --log-format json apply --store "$W/store" --stream s --trust "$W/k.pub" --target "$(pg_conninfo dst)" --exit-when-caught-up 2>"$W/apply.log" || die "replay failed"
check "the replay equals the source" \
	"$(pg_psql dst postgres -c "SELECT md5(string_agg(id||':'||v, ',' ORDER BY id)) FROM t")" \
	"$(pg_psql src postgres -c "SELECT md5(string_agg(id||':'||v, ',' ORDER BY id)) FROM t")"
[ "$fail" -eq 0 ] || die "$fail checks failed"
say "PASS ($N rows)"
