#!/usr/bin/env bash
# Active-active: two prepared nodes (node_a, node_b), each captured into its
# own stream (origins not forwarded), each stream applied to the other node
# with --strategy timestamp in follow mode, while pgbench workloads on both
# nodes insert, update and delete the same 20 keys. Every workload write
# also logs (node, key, op, value) in the same transaction, so its commit time
# is known. After the workloads stop and both applies have applied the other
# stream's last txseq (origin progress), SIGTERM stops everything (exit 0) and:
#   - both nodes hold identical rows;
#   - no transaction echoed: stream a holds exactly node_a's own transactions;
#   - every key holds what the latest commit (ties: greater node name) wrote,
#     or is absent when that was a delete;
#   - apply carried the origin commit times (a node's copy of the other's log
#     rows has the other's commit times);
#   - conflicts happened, and every logged resolution agrees with the versions.
# Usage: test_apply_bidirectional.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_value_checks
PIDS=()
die() {
	echo "FATAL: $*" >&2
	local p
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	wait
	exit 1
}
q() { local n=$1; shift; pg_psql "$n" postgres -c "$*"; }
KEYS=${KEYS:-20}
SECONDS_LOAD=${SECONDS_LOAD:-8}
RATE=${RATE:-120} # per client

"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
pg_start a || die "start a"
pg_start b || die "start b"
for n in a b; do
	pg_psql $n postgres <<SQL || die "set-up $n"
CREATE TABLE kv (k int PRIMARY KEY, v text NOT NULL, w text NOT NULL);
CREATE TABLE wlog (node text, id bigserial, k int NOT NULL, op text NOT NULL, v text,
  PRIMARY KEY (node, id));
CREATE TABLE fence (node text PRIMARY KEY, at timestamptz);
INSERT INTO kv SELECT g, 'seed', 'seed' FROM generate_series(1, $KEYS) g;
SQL
	"$SLUICE" prepare --target "$(pg_conninfo $n)" --node node_$n 2>"$W/prepare_$n.log" ||
		die "prepare $n"
	"$SLUICE" capture --source "$(pg_conninfo $n)" --store "$W/store" --stream $n \
		--key "$W/k.key" --node node_$n --create --exit-when-caught-up --no-progress \
		2>"$W/capture0_$n.log" || die "capture --create $n"
done

# Followers: capture each node, apply each stream to the other node.
declare -A PID
for n in a b; do
	"$SLUICE" --log-format text capture --source "$(pg_conninfo $n)" --store "$W/store" \
		--stream $n --key "$W/k.key" --node node_$n --no-progress 2>"$W/capture_$n.log" &
	PID[cap_$n]=$!
	PIDS+=($!)
done
other() { [ "$1" == a ] && echo b || echo a; }
for n in a b; do
	t=$(other $n)
	"$SLUICE" --log-format text apply --store "$W/store" --stream $n --trust "$W/k.pub" \
		--target "$(pg_conninfo $t)" --strategy timestamp --follow 2>"$W/apply_$n.log" &
	PID[apply_$n]=$!
	PIDS+=($!)
done

# Workloads: the same small key range on both nodes. A write logs itself in
# the same transaction (nothing is logged when the statement changed nothing).
for n in a b; do
	sed "s/NODE/node_$n/g" >"$W/load_$n.sql" <<SQL
\\set k random(1, $KEYS)
\\set op random(1, 10)
\\if :op <= 5
WITH w AS (UPDATE kv SET v = 'NODE:' || txid_current(), w = 'NODE' WHERE k = :k RETURNING k, v) INSERT INTO wlog (node, k, op, v) SELECT 'NODE', k, 'U', v FROM w;
\\elif :op <= 8
WITH w AS (INSERT INTO kv VALUES (:k, 'NODE:' || txid_current(), 'NODE') ON CONFLICT (k) DO NOTHING RETURNING k, v) INSERT INTO wlog (node, k, op, v) SELECT 'NODE', k, 'I', v FROM w;
\\else
WITH w AS (DELETE FROM kv WHERE k = :k RETURNING k) INSERT INTO wlog (node, k, op) SELECT 'NODE', k, 'D' FROM w;
\\endif
SQL
done
for _ in $(seq 100); do
	grep -q 'applying stream' "$W/apply_a.log" && grep -q 'applying stream' "$W/apply_b.log" && break
	sleep 0.1
done
start=$(date +%s)
LPIDS=()
for n in a b; do
	pgbench -n -M simple -c 2 -j 2 -R "$RATE" -T "$SECONDS_LOAD" -f "$W/load_$n.sql" \
		"$(pg_conninfo $n)" >"$W/pgbench_$n.log" 2>&1 &
	LPIDS+=($!)
done
for p in "${LPIDS[@]}"; do wait "$p" || bad "pgbench failed: $(cat "$W"/pgbench_*.log)"; done
for n in a b; do
	grep -E 'number of (transactions actually processed|failed)' "$W/pgbench_$n.log" | sed "s/^/pgbench $n: /"
done

# Converge: a fence written last on each node reaches the other node, and each
# apply's origin progress is the other stream's last txseq.
for n in a b; do q $n "INSERT INTO fence VALUES ('node_$n', clock_timestamp())" >/dev/null; done
deadline=$((SECONDS + 90))
until [ "$(q b "SELECT count(*) FROM fence")" == 2 ] && [ "$(q a "SELECT count(*) FROM fence")" == 2 ]; do
	[ $SECONDS -lt $deadline ] || { tail -3 "$W"/apply_*.log "$W"/capture_*.log >&2; die "no convergence in 90 s"; }
	for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || { tail -5 "$W"/apply_*.log "$W"/capture_*.log >&2; die "a follower exited early"; }; done
	sleep 0.5
done
last_txseq() { # the last txseq written to stream $1
	"$SLUICE" inspect --store "$W/store" --stream "$1" --json 2>/dev/null |
		python3 -c 'import json,sys; print(max([json.loads(l).get("txseq_last", 0) for l in sys.stdin] + [0]))'
}
for n in a b; do
	t=$(other $n)
	want=$(last_txseq $n)
	until got=$(q $t "SELECT coalesce((SELECT (remote_lsn - '0/0'::pg_lsn)::bigint
	  FROM pg_replication_origin_status WHERE external_id = 'sluice_$n@postgres'), -1)") && [ "$got" == "$want" ]; do
		[ $SECONDS -lt $deadline ] || break
		sleep 0.5
		want=$(last_txseq $n)
	done
	check "apply of stream $n on node_$t: origin progress is the stream's last txseq" "$got" "$want"
done
echo "converged $(($(date +%s) - start)) s after the workloads started"

# Stop everything with SIGTERM: exit 0.
for n in a b; do kill -TERM "${PID[apply_$n]}"; done
for n in a b; do wait "${PID[apply_$n]}"; check "apply $n exits 0 on SIGTERM" "$?" 0; done
for n in a b; do kill -TERM "${PID[cap_$n]}"; done
for n in a b; do wait "${PID[cap_$n]}"; check "capture $n exits 0 on SIGTERM" "$?" 0; done
PIDS=()
for n in a b; do grep 'conflicts:' "$W/apply_$n.log" | tail -1 | sed "s/^/stream $n: /"; done

# Identical rows on both nodes.
dump() { q $1 "SELECT k, v, w FROM kv ORDER BY k" >"$W/kv_$1.txt"; q $1 "SELECT node, id, k, op, coalesce(v, '') FROM wlog ORDER BY 1, 2" >"$W/wlog_$1.txt"; }
dump a
dump b
if cmp -s "$W/kv_a.txt" "$W/kv_b.txt"; then ok; else
	bad "kv differs between the nodes: $(diff "$W/kv_a.txt" "$W/kv_b.txt" | head -20)"
fi
if cmp -s "$W/wlog_a.txt" "$W/wlog_b.txt"; then ok; else
	bad "wlog differs between the nodes: $(diff "$W/wlog_a.txt" "$W/wlog_b.txt" | head -10)"
fi

# Each write with its commit time, read on the node that committed it; and the
# same log rows as the other node holds them (apply sets the origin's time).
for n in a b; do
	for on in a b; do
		q $on "SELECT node, id, k, op, coalesce(v, ''),
		  (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint
		  FROM wlog WHERE node = 'node_$n' ORDER BY id" >"$W/writes_${n}_on_$on.txt"
	done
done
for n in a b; do
	t=$(other $n)
	if cmp -s "$W/writes_${n}_on_$n.txt" "$W/writes_${n}_on_$t.txt"; then ok; else
		bad "node_$t's copy of node_$n's writes does not carry node_$n's commit times:" \
			"$(diff "$W/writes_${n}_on_$n.txt" "$W/writes_${n}_on_$t.txt" | head -6)"
	fi
done
for n in a b; do
	"$SLUICE" inspect --store "$W/store" --stream $n --trust "$W/k.pub" --records --json \
		>"$W/records_$n.json" || bad "inspect $n"
done

python3 - "$W" "$KEYS" <<'PY' || fail=$((fail + 1))
import json, sys
w, nkeys = sys.argv[1], int(sys.argv[2])
bad = []
writes = []
for n in "ab":
    for line in open(f"{w}/writes_{n}_on_{n}.txt"):
        node, id_, k, op, v, ts = line.rstrip("\n").split("|")
        writes.append((int(ts), node, int(id_), int(k), op, v))
# expected: the write with the greatest (commit time, node name) per key
expect = {k: ("seed", "seed") for k in range(1, nkeys + 1)}
latest = {}
for ts, node, id_, k, op, v in writes:
    if k not in latest or (ts, node) > latest[k][:2]:
        latest[k] = (ts, node, op, v)
for k, (ts, node, op, v) in latest.items():
    expect[k] = None if op == "D" else (v, node)
for n in "ab":
    got = {}
    for line in open(f"{w}/kv_{n}.txt"):
        k, v, wr = line.rstrip("\n").split("|")
        got[int(k)] = (v, wr)
    for k in range(1, nkeys + 1):
        if got.get(k) != expect[k]:
            hist = sorted(x for x in writes if x[3] == k)[-4:]
            bad.append(f"node_{n} key {k}: holds {got.get(k)}, the latest commit wrote {expect[k]}; last writes {hist}")
ties = len({(x[0], x[3]) for x in writes}) != len(writes)
print(f"writes: {len(writes)} ({sum(1 for x in writes if x[1] == 'node_a')} on node_a), "
      f"final rows: {sum(1 for v in expect.values() if v)} of {nkeys} keys, equal commit times: {ties}")
# no echo: stream n holds exactly node_n's own transactions
for n in "ab":
    own = sum(1 for x in writes if x[1] == f"node_{n}")
    begins = 0
    for line in open(f"{w}/records_{n}.json"):
        r = json.loads(line)
        t = r["type"]
        if t == "begin":
            begins += 1
            if r["origin"] != f"node_{n}":
                bad.append(f"stream {n}: transaction {r['txseq']} from origin {r['origin']}")
        elif t in ("insert", "update") and r["relation"] == "public.kv":
            if r["new"]["w"] != f"node_{n}":
                bad.append(f"stream {n}: txseq {r['txseq']} echoes a write of {r['new']['w']}")
        elif t == "insert" and r["relation"] == "public.wlog":
            if r["new"]["node"] != f"node_{n}":
                bad.append(f"stream {n}: txseq {r['txseq']} echoes a log row of {r['new']['node']}")
    if begins != own + 1:  # + the fence
        bad.append(f"stream {n}: {begins} transactions, node_{n} committed {own} writes + 1 fence")
for b in bad[:30]:
    print("FAIL:", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY

# Conflicts happened, and every logged decision agrees with the versions.
total=0
for n in a b; do
	c=$(q $n "SELECT count(*) FROM sluice.conflicts")
	total=$((total + c))
	q $n "SELECT kind, resolution, count(*) FROM sluice.conflicts GROUP BY 1, 2 ORDER BY 1, 2" | sed "s/^/node_$n conflicts: /"
	q $n "SELECT kind, resolution, key, local_time, local_node, remote_time, remote_node, txseq
	  FROM sluice.conflicts WHERE local_time IS NOT NULL AND CASE resolution
	    WHEN 'remote' THEN (remote_time, remote_node) <= (local_time, local_node)
	    WHEN 'kept_local' THEN (remote_time, remote_node) >= (local_time, local_node)
	    WHEN 'skipped' THEN (remote_time, remote_node) >= (local_time, local_node)
	    ELSE false END" >"$W/wrong_$n.txt"
	check "node_$n: conflict decisions agree with (time, node) order" "$(wc -l <"$W/wrong_$n.txt")" 0
	sed "s/^/node_$n wrong decision: /" "$W/wrong_$n.txt" | head -5 >&2
done
[ "$total" -gt 0 ] || bad "the workloads produced no conflict: the test did not test anything"
printed=0
for n in a b; do
	s=$(grep 'conflicts:' "$W/apply_$n.log" | tail -1 | grep -o '[a-z_]*=[0-9]*' | cut -d= -f2 | paste -sd+ | bc 2>/dev/null)
	printed=$((printed + ${s:-0}))
done
check "conflict counters printed at exit = rows in the conflict logs" "$printed" "$total"
grep -h 'level=error\|error' "$W"/apply_*.log | head -5 >&2

echo "test_apply_bidirectional: $pass checks passed, $fail failed"
[ "$fail" -eq 0 ] && echo "test_apply_bidirectional: passed"
[ "$fail" -eq 0 ]
