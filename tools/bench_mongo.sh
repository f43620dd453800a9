#!/usr/bin/env bash
# MongoDB capture benchmark (tools/bench.sh --workloads MG runs it; it also
# runs alone). On one sluice-mongo-peer (tests/mongo/), the same change events
# are drained, alternating, by
#   sluice:   sluice capture --exit-when-caught-up into a fresh store (raw BSON
#             records, zstd, Ed25519-signed, fsynced), started from the cluster
#             time T the workload began at (an empty --snapshot taken at T);
#   baseline: mongo_cs_reader, a plain libmongoc change stream reader from
#             startAtOperationTime T writing every event's BSON to /dev/null.
# Workload, over 20 collections: N inserts (insert_many batches of 1000: one
# event each), N/2 $set/$inc updates and N/4 deletes, and N/100
# multi-document transactions of 10 inserts; N = 100000 (10000 with --quick).
# The peer's own cost: its CPU seconds while serving each run (from /proc).
#
# Usage: tools/bench_mongo.sh [--quick] [--runs N] [--json FILE]
# Output: a table on stdout, progress on stderr, JSON (default
# build/bench/mongo.json). Exit status: 0 done, 1 a run failed or read a
# different number of events, 2 usage error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/deps.sh
. "$ROOT/tools/deps.sh"

quick=0
runs=3
json="$ROOT/build/bench/mongo.json"
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--runs) runs=$2; shift ;;
	--json) json=$2; shift ;;
	-h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench_mongo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
case "$runs" in '' | *[!0-9]* | 0) echo "bench_mongo.sh: --runs needs a positive number" >&2; exit 2 ;; esac

sluice_install_deps
B="$ROOT/build/bench-mongo"
cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$B" -j "$(nproc)" --target sluice sluice-mongo-peer mongo_cs_reader >/dev/null
SLUICE="$B/tools/sluice"
PEER="$B/tests/mongo/sluice-mongo-peer"
READER="$B/tests/mongo/mongo_cs_reader"
PY=/usr/bin/python3

W=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-mongo-XXXXXX")
peer_pid=""
cleanup() {
	[ -n "$peer_pid" ] && kill "$peer_pid" 2>/dev/null && wait "$peer_pid" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$(dirname "$json")"

n=100000
[ "$quick" -eq 1 ] && n=10000
"$PEER" --port 0 --history $((n * 3)) >"$W/peer.out" 2>"$W/peer.log" &
peer_pid=$!
port=""
for _ in $(seq 1 100); do
	port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$W/peer.out")
	[ -n "$port" ] && break
	sleep 0.1
done
[ -n "$port" ] || { echo "bench_mongo.sh: the peer did not start" >&2; cat "$W/peer.log" >&2; exit 1; }
URI="mongodb://127.0.0.1:$port/?replicaSet=rs0"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1

# T: the cluster time before the workload; a template store holding only an
# empty snapshot at T, copied for every sluice run.
"$SLUICE" capture --source "$URI" --store "$W/tmpl" --stream b --key "$W/k.key" --snapshot \
	--exit-when-caught-up --no-progress 2>"$W/tmpl.log" || { cat "$W/tmpl.log" >&2; exit 1; }
# No write happened since the template's snapshot: the cluster time is still T.
read -r T_S T_I < <($PY -c 'import sys, pymongo
r = pymongo.MongoClient(sys.argv[1]).admin.command("ping")
print(r["operationTime"].time, r["operationTime"].inc)' "$URI")
[ -n "${T_S:-}" ] || { echo "bench_mongo.sh: the peer reported no cluster time" >&2; exit 1; }

echo "bench_mongo: workload of $n inserts, $((n / 2)) updates, $((n / 4)) deletes, $((n / 100)) transactions" >&2
EVENTS=$($PY - "$URI" "$n" <<'PY'
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1])
n = int(sys.argv[2])
# 20 collections: the peer finds documents by scanning, so it is kept to small collections.
colls = [c.bench["items%02d" % k] for k in range(20)]
for k in range(0, n, 1000):
    colls[(k // 1000) % 20].insert_many(
        [{"_id": i, "n": i, "s": "x" * 64, "v": 1.5} for i in range(k, min(n, k + 1000))], ordered=True)
for i in range(0, n, 2):
    colls[(i // 1000) % 20].update_one({"_id": i}, {"$set": {"s": "y" * 32}, "$inc": {"n": 1}})
for i in range(0, n, 4):
    colls[((i + 1) // 1000) % 20].delete_one({"_id": i + 1})
tx = 0
for k in range(n // 100):
    with c.start_session() as s:
        with s.start_transaction():
            c.bench["tx%02d" % (k % 20)].insert_many([{"_id": k * 10 + j} for j in range(10)], session=s)
    tx += 10
print(n + (n + 1) // 2 + (n + 3) // 4 + tx)
PY
)
echo "bench_mongo: $EVENTS change events in the oplog" >&2

peer_cpu() {
	awk '{ print $14 + $15 }' "/proc/$peer_pid/stat"
}
tick=$(getconf CLK_TCK)
: >"$W/results" # lines: tool run wall cpu peer-cpu
for r in $(seq 1 "$runs"); do
	for tool in reader sluice; do
		p0=$(peer_cpu)
		s=$(date +%s.%N)
		if [ "$tool" = reader ]; then
			/usr/bin/time -f '%U %S' -o "$W/cpu" "$READER" "$URI" "$T_S" "$T_I" "$EVENTS" >/dev/null 2>"$W/reader.log" ||
				{ cat "$W/reader.log" >&2; exit 1; }
		else
			rm -rf "$W/store"
			cp -r "$W/tmpl" "$W/store"
			/usr/bin/time -f '%U %S' -o "$W/cpu" "$SLUICE" capture --source "$URI" --store "$W/store" \
				--stream b --key "$W/k.key" --exit-when-caught-up --no-progress 2>"$W/capture.log" ||
				{ cat "$W/capture.log" >&2; exit 1; }
		fi
		e=$(date +%s.%N)
		p1=$(peer_cpu)
		cpu=$(awk '{ print $1 + $2 }' "$W/cpu")
		echo "$tool $r $(echo "$e - $s" | bc) $cpu $(echo "($p1 - $p0) / $tick" | bc -l)" >>"$W/results"
		echo "bench_mongo: run $r $tool $(tail -n 1 "$W/results" | cut -d' ' -f3)s" >&2
	done
	# sluice must have captured every event once
	changes=$("$SLUICE" inspect --store "$W/store" --stream b --trust "$W/k.pub" --records --json |
		grep -c '"type":"\(insert\|update\|delete\)"' || true)
	[ "$changes" = "$EVENTS" ] || { echo "bench_mongo: sluice captured $changes changes, want $EVENTS " >&2; exit 1; }
done
store_bytes=$(du -sb "$W/store" | cut -f1)
$PY - "$W/results" "$EVENTS" "$store_bytes" "$json" "$quick" <<'PY'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
events, store, out, quick = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
med = statistics.median
def col(tool, k):
    return [float(r[k]) for r in rows if r[0] == tool]
rd, sl = col("reader", 2), col("sluice", 2)
ratio = med(sl) / med(rd)
s = {"quick": quick, "events": events, "runs": len(sl), "reader_s": rd, "sluice_s": sl,
     "median_reader_s": med(rd), "median_sluice_s": med(sl), "ratio": ratio,
     "reader_cpu_s": col("reader", 3), "sluice_cpu_s": col("sluice", 3),
     "peer_cpu_s_reader": col("reader", 4), "peer_cpu_s_sluice": col("sluice", 4),
     "store_bytes": store, "bytes_per_event": store / events}
print("MongoDB capture: draining %d change events from the test peer (median of %d runs; ratio < 1: sluice faster)"
      % (events, len(sl)))
print("%-28s %10s %10s %12s" % ("", "wall s", "CPU s", "peer CPU s"))
print("%-28s %10.2f %10.2f %12.2f" % ("libmongoc reader > /dev/null", med(rd), med(col("reader", 3)),
                                     med(col("reader", 4))))
print("%-28s %10.2f %10.2f %12.2f" % ("sluice capture (signed store)", med(sl), med(col("sluice", 3)),
                                     med(col("sluice", 4))))
print("ratio sluice / reader: %.2fx; store %d bytes (%.1f B/event)" % (ratio, store, store / events))
json.dump(s, open(out, "w"), indent=1)
print("summary written to %s" % out)
PY
