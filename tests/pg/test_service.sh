#!/usr/bin/env bash
# sluice run: one configuration with two captures and two applies replicating
# both ways between two servers under load; /metrics scraped (values move,
# names and types valid: promtool check metrics when installed, else a parser
# here); /readyz not ready while a target is stopped and ready again after it
# returns; SIGTERM exits 0 with progress saved; --once exits 0 caught up;
# --check reports errors with line numbers.
# Usage: test_service.sh SLUICE
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks service
pg_value_checks
RUN=""
LA=""
LB=""
svc_cleanup() {
	local p
	for p in $RUN $LA $LB; do kill -9 "$p" 2>/dev/null || true; done
	if [ -n "$RUN" ] && [ -n "${FAILED_LOGS:-1}" ] && [ -f "$W/run.log" ]; then
		tail -n 20 "$W/run.log" >&2 || true
	fi
	pg_harness_cleanup
}
trap svc_cleanup EXIT

pg_start a
pg_start b
for n in a b; do
	pg_psql $n postgres -c "CREATE TABLE t_a (id bigserial PRIMARY KEY, v text);
		CREATE TABLE t_b (id bigserial PRIMARY KEY, v text);"
done
"$SLUICE" keygen --out "$W/ka" >/dev/null 2>&1
"$SLUICE" keygen --out "$W/kb" >/dev/null 2>&1
PORT=$(pg_free_port)
export SVC_A="$(pg_conninfo a)" SVC_B="$(pg_conninfo b)"
CONF=$W/sluice.yaml
cat >"$CONF" <<YAML
listen: 127.0.0.1:$PORT
readiness:
  max_lag: 20s
  max_heartbeat_age: 15s
restart: {min_delay: 500ms, max_delay: 2s}
keys:
  a: {secret_file: $W/ka.key, public_file: $W/ka.pub}
  b: {secret_file: $W/kb.key, public_file: $W/kb.pub}
stores:
  local: {url: $W/store}
pipelines:
  cap-a:
    capture: {source_env: SVC_A, store: local, stream: a, key: a, create: true,
              heartbeat_interval: 2s}
  cap-b:
    capture: {source_env: SVC_B, store: local, stream: b, key: b, create: true,
              heartbeat_interval: 2s}
  a-to-b:
    apply: {target_env: SVC_B, store: local, stream: a, trust: [a], include: [public.t_a]}
  b-to-a:
    apply: {target_env: SVC_A, store: local, stream: b, trust: [b], include: [public.t_b]}
YAML

# --check: a good file, then every kind of problem with its line
"$SLUICE" run --config "$CONF" --check >"$W/check.out" || die "--check refused a good file"
cat >"$W/bad.yaml" <<'YAML'
pipelines:
  x:
    apply:
      store: nowhere
      stream: s
      trust: [k]
      strategy: newest
      colour: red
YAML
set +e
"$SLUICE" run --config "$W/bad.yaml" --check >"$W/bad.out"
rc=$?
set -e
check "--check exits 2 on errors" "$rc" 2
grep -q "bad.yaml:7:17: \"strategy\" must be one of" "$W/bad.out" || die "no line:column for a bad value: $(cat "$W/bad.out")"
grep -q "bad.yaml:8:7: unknown key \"colour\"" "$W/bad.out" || die "no unknown-key error"
grep -q "needs \"target\"" "$W/bad.out" || die "no missing-field error"

# the service, under load on both sides
"$SLUICE" --log-format json run --config "$CONF" 2>"$W/run.log" &
RUN=$!
load() { # load NAME TABLE SECONDS
	local end=$((SECONDS + $3))
	while [ $SECONDS -lt $end ]; do
		pg_psql "$1" postgres -c "INSERT INTO $2 (v) SELECT md5(g::text) FROM generate_series(1, 20) g" || true
		sleep 0.05
	done
}
metric() { # metric NAME PIPELINE: the sample's value
	curl -sf "http://127.0.0.1:$PORT/metrics" |
		awk -v n="$1" -v p="pipeline=\"$2\"" '$1 ~ "^"n"[{]" && index($1, p) && !done { print $2; done = 1 }'
}
wait_ready() { # wait_ready SECONDS: 0 when /readyz said 200 within that time
	local i
	for i in $(seq 1 $(($1 * 5))); do
		curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && return 0
		sleep 0.2
	done
	return 1
}
for i in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/healthz" | grep -q '"status":"ok"' || die "no /healthz"
wait_ready 30 || die "not ready after 30 s: $(curl -s http://127.0.0.1:$PORT/readyz)"
say "ready; loading both sides"
load a t_a 8 &
LA=$!
load b t_b 8 &
LB=$!
sleep 3
T1=$(metric sluice_transactions_total a-to-b)
curl -sf "http://127.0.0.1:$PORT/metrics" >"$W/metrics1.txt"
wait $LA $LB
sleep 3
T2=$(metric sluice_transactions_total a-to-b)
curl -sf "http://127.0.0.1:$PORT/metrics" >"$W/metrics2.txt"
[ -n "$T1" ] && [ -n "$T2" ] && [ "$T2" -gt "$T1" ] || die "applied transactions did not grow ($T1 -> $T2)"
say "a-to-b transactions $T1 -> $T2"
grep -q '^# TYPE sluice_transactions_total counter' "$W/metrics2.txt" || die "no TYPE line"
grep -q '^sluice_apply_conflicts_total{pipeline="b-to-a",kind="apply",stream="b",conflict="insert_exists"} 0' "$W/metrics2.txt" || die "no conflict counters"
if command -v promtool >/dev/null 2>&1; then
	promtool check metrics <"$W/metrics2.txt" >"$W/promtool.out" 2>&1 || die "promtool: $(cat "$W/promtool.out")"
	say "promtool check metrics: OK"
else
	python3 - "$W/metrics2.txt" <<'PY' || die "metrics do not parse"
import re, sys
types = {}
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (NaN|[-+]?[0-9.eE+-]+)$')
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line.startswith("# TYPE "):
        _, _, name, t = line.split(" ")
        types[name] = t
        continue
    if line.startswith("#") or not line:
        continue
    m = sample.match(line)
    assert m, line
    name = m.group(1)
    assert name in types, name
    assert not (types[name] == "counter") or name.endswith("_total"), name
PY
fi
# the rows arrived both ways
wait_rows() { # wait_rows SERVER TABLE WANT
	local i got=""
	for i in $(seq 1 150); do
		got=$(pg_psql "$1" postgres -c "SELECT count(*) FROM $2")
		[ "$got" = "$3" ] && return 0
		sleep 0.2
	done
	echo "$1.$2 has $got rows, want $3" >&2
	return 1
}
NA=$(pg_psql a postgres -c "SELECT count(*) FROM t_a")
NB=$(pg_psql b postgres -c "SELECT count(*) FROM t_b")
wait_rows b t_a "$NA" || die "t_a did not reach b"
wait_rows a t_b "$NB" || die "t_b did not reach a"
for t in t_a t_b; do
	check "$t equal on both" "$(pg_psql a postgres -c "SELECT md5(string_agg(id||':'||v, ',' ORDER BY id)) FROM $t")" \
		"$(pg_psql b postgres -c "SELECT md5(string_agg(id||':'||v, ',' ORDER BY id)) FROM $t")"
done
wait_ready 30 || die "not ready after catching up: $(curl -s http://127.0.0.1:$PORT/readyz)"

# a stopped target makes its apply not ready; ready again once it is back
pg_harness_as_server_user "$PGBIN/pg_ctl" -D "$PG_HARNESS_DIR/b/data" -m fast -w stop >/dev/null
load a t_a 3
notready=0
for i in $(seq 1 150); do
	code=$(curl -s -o "$W/readyz.json" -w '%{http_code}' "http://127.0.0.1:$PORT/readyz/a-to-b")
	[ "$code" = 503 ] && { notready=1; break; }
	sleep 0.2
done
check "a-to-b not ready while b is stopped" "$notready" 1
say "not ready: $(cat "$W/readyz.json")"
pg_harness_as_server_user "$PGBIN/pg_ctl" -D "$PG_HARNESS_DIR/b/data" -l "$PG_HARNESS_DIR/b/server.log" -w start >/dev/null
wait_ready 60 || die "not ready after b returned: $(curl -s http://127.0.0.1:$PORT/readyz)"
NA=$(pg_psql a postgres -c "SELECT count(*) FROM t_a")
wait_rows b t_a "$NA" || die "t_a did not reach b after its restart"
grep -q '"pipeline":"a-to-b"' "$W/run.log" || die "log lines do not name the pipeline"

# SIGTERM: exit 0, progress saved (the origins hold the last applied txseq)
kill -TERM $RUN
set +e
wait $RUN
rc=$?
set -e
check "SIGTERM exits 0" "$rc" 0
PROG=$(pg_psql b postgres -c "SELECT remote_lsn FROM pg_replication_origin_status")
[ -n "$PROG" ] || die "no origin progress on b"

# --once: more changes while stopped, then one catch-up run that exits 0
load a t_a 2
load b t_b 2
set +e
timeout 120 "$SLUICE" --log-format json run --config "$CONF" --once 2>"$W/once.log"
rc=$?
set -e
check "--once exits 0" "$rc" 0
[ "$rc" = 0 ] || tail -n 20 "$W/once.log" >&2
for t in t_a t_b; do
	check "$t equal after --once" "$(pg_psql a postgres -c "SELECT count(*) FROM $t")" \
		"$(pg_psql b postgres -c "SELECT count(*) FROM $t")"
done
"$SLUICE" verify --store "$W/store" --stream a --trust "$W/ka.pub" >/dev/null || die "stream a does not verify"
"$SLUICE" verify --store "$W/store" --stream b --trust "$W/kb.pub" >/dev/null || die "stream b does not verify"
[ "$fail" -eq 0 ] || die "$fail checks failed"
say "PASS"
