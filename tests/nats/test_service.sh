#!/usr/bin/env bash
# sluice run with a NATS JetStream store (one nats-server, PostgreSQL source):
#  1. a capture pipeline writes into JetStream (the store has no lock: a
#     standby asks whether the stream received a message in the last 30 s);
#  2. a second sluice run with the same capture waits as a standby while the
#     first writes (heartbeats every second);
#  3. kill -9 of the active one under load: the standby takes over once the
#     stream has been quiet for 30 s, and the stream holds every committed
#     row once (verify passes; a replay equals the source).
# Usage: test_service.sh SLUICE NATSTOOL
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
NATSTOOL=$2
pg_step_checks nats_service
nats_start || die "could not start nats-server"
R1=""
R2=""
LOAD=""
svc_cleanup() {
	local p
	for p in $R1 $R2 $LOAD; do kill -9 "$p" 2>/dev/null || true; done
	nats_harness_cleanup
	pg_harness_cleanup
}
trap svc_cleanup EXIT

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
for n in src dst; do
	pg_psql $n postgres -c "CREATE TABLE t (id bigserial PRIMARY KEY, v text)" || die "table"
done
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
export SVC_SRC="$(pg_conninfo src)"
STORE=$(nats_store SLUICE)
P1=$(pg_free_port)
P2=$(pg_free_port)
conf() { # conf PORT
	cat <<YAML
listen: 127.0.0.1:$1
restart: {min_delay: 200ms, max_delay: 1s}
keys:
  k: {secret_file: $W/k.key, public_file: $W/k.pub}
stores:
  js: {url: "$STORE?create=1"}
pipelines:
  cap:
    capture: {source_env: SVC_SRC, store: js, stream: s, key: k, create: true,
              heartbeat_interval: 1s}
YAML
}
conf "$P1" >"$W/one.yaml"
conf "$P2" >"$W/two.yaml"
standby() { # standby PORT: the value of sluice_pipeline_standby
	curl -sf "http://127.0.0.1:$1/metrics" | awk '$1 ~ /^sluice_pipeline_standby[{]/ { v = $2 } END { print v }'
}

# ---- 1. capture under sluice run ----------------------------------------------------
"$SLUICE" --log-format json run --config "$W/one.yaml" 2>"$W/one.log" &
R1=$!
for i in $(seq 1 150); do grep -q 'streaming from slot' "$W/one.log" && break; sleep 0.1; done
grep -q 'streaming from slot' "$W/one.log"
check "sluice run captures into JetStream"
pg_psql src postgres -c "INSERT INTO t (v) VALUES ('first')" >/dev/null
for i in $(seq 1 50); do natstool last-seq SLUICE sluice.s.frames >/dev/null 2>&1 && break; sleep 0.1; done
natstool last-seq SLUICE sluice.s.frames >/dev/null 2>&1
check "the capture publishes"

# ---- 2. a standby ---------------------------------------------------------------------
"$SLUICE" --log-format json run --config "$W/two.yaml" 2>"$W/two.log" &
R2=$!
for i in $(seq 1 100); do [ "$(standby "$P2")" = 1 ] && break; sleep 0.1; done
[ "$(standby "$P2")" = 1 ] && [ "$(standby "$P1")" = 0 ]
check "the second process is a standby, the first is not"
sleep 3
! grep -q 'streaming from slot' "$W/two.log" && [ "$(standby "$P2")" = 1 ]
check "the standby stays one while the first writes (heartbeats)"

# ---- 3. kill -9 and takeover ------------------------------------------------------------
# load inserts until $W/stop exists: stopped that way, it finishes its insert
# before the rows are counted (a kill would leave the running psql to commit
# after the count).
load() {
	while [ ! -e "$W/stop" ]; do
		pg_psql src postgres -c "INSERT INTO t (v) SELECT md5(random()::text) FROM generate_series(1, 10) g" >/dev/null 2>&1 || true
		sleep 0.05
	done
}
load &
LOAD=$!
sleep 2
kill -9 "$R1"
wait "$R1" 2>/dev/null
R1=""
# the supervisor's children (capture) go with it: their pipe to it closes
KILLED=$SECONDS
for i in $(seq 1 600); do grep -q 'streaming from slot' "$W/two.log" && break; sleep 0.1; done
grep -q 'streaming from slot' "$W/two.log"
check "the standby took over after $((SECONDS - KILLED)) s"
sleep 2
touch "$W/stop"
wait "$LOAD" 2>/dev/null
LOAD=""
N=$(pg_psql src postgres -c "SELECT count(*) FROM t")
for i in $(seq 1 100); do
	got=$("$SLUICE" inspect --store "$STORE" --stream s --trust "$W/k.pub" --records --json 2>/dev/null | grep -c '"type":"insert"')
	[ "$got" = "$N" ] && break
	sleep 0.2
done
kill -TERM "$R2"
wait "$R2"
check "the new active process stops on SIGTERM with status 0 (status $?)"
R2=""
"$SLUICE" verify --store "$STORE" --stream s --trust "$W/k.pub" >"$W/verify.out" 2>&1
check "the stream verifies whole"
INS=$("$SLUICE" inspect --store "$STORE" --stream s --trust "$W/k.pub" --records --json | grep -c '"type":"insert"')
[ "$INS" = "$N" ]
check "every inserted row once in the stream ($INS of $N)"
"$SLUICE" --log-format json apply --store "$STORE" --stream s --trust "$W/k.pub" --target "$(pg_conninfo dst)" \
	--exit-when-caught-up 2>"$W/apply.log"
[ "$(pg_psql dst postgres -c "SELECT md5(string_agg(id||':'||v, ',' ORDER BY id)) FROM t")" = \
	"$(pg_psql src postgres -c "SELECT md5(string_agg(id||':'||v, ',' ORDER BY id)) FROM t")" ]
check "the replay equals the source"
[ "$FAILS" = 0 ] || {
	tail -n 5 "$W/one.log" "$W/two.log" >&2
	die "$FAILS checks failed"
}
echo "nats_service: all checks passed"
