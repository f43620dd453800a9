#!/usr/bin/env bash
# MongoDB apply benchmark (tools/bench.sh --workloads MA runs it; it also runs
# alone). The same changes are written, alternating, into a fresh
# sluice-mongo-peer (tests/mongo/) by
#   sluice:   sluice apply --exit-when-caught-up of a captured stream (verified
#             frames, one multi-document transaction per source transaction
#             with its progress document: exactly once);
#   baseline: mongo_loader, the plainest libmongoc loader of the same change
#             events (unordered bulk writes of 1000 per collection, no
#             transactions, no progress: a crash loses track of what was done).
# Workload, over 20 collections: N inserts, N/2 $set/$inc updates, N/4
# deletes, N/100 multi-document transactions of 10 inserts; N = 20000 (2000
# with --quick). The target peer's CPU seconds are reported too (from /proc).
# After every run the target must equal the source (raw BSON, byte for byte).
#
# Usage: tools/bench_mongo_apply.sh [--quick] [--runs N] [--json FILE]
# Output: a table on stdout, progress on stderr, JSON (default
# build/bench/mongo_apply.json). Exit status: 0 done, 1 a run failed or left
# the target different from the source, 2 usage error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/deps.sh
. "$ROOT/tools/deps.sh"

quick=0
runs=3
json="$ROOT/build/bench/mongo_apply.json"
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--runs) runs=$2; shift ;;
	--json) json=$2; shift ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench_mongo_apply.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
case "$runs" in '' | *[!0-9]* | 0) echo "bench_mongo_apply.sh: --runs needs a positive number" >&2; exit 2 ;; esac

sluice_install_deps
B="$ROOT/build/bench-mongo"
cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$B" -j "$(nproc)" --target sluice sluice-mongo-peer mongo_cs_reader mongo_loader >/dev/null
SLUICE="$B/tools/sluice"
PEER="$B/tests/mongo/sluice-mongo-peer"
READER="$B/tests/mongo/mongo_cs_reader"
LOADER="$B/tests/mongo/mongo_loader"
PY=/usr/bin/python3

W=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-mongo-apply-XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$(dirname "$json")"

# start_peer NAME: a peer on a free port; sets peer_pid and port.
start_peer() {
	"$PEER" --port 0 --history 1000000 >"$W/$1.out" 2>"$W/$1.log" &
	peer_pid=$!
	pids+=("$peer_pid")
	port=""
	for _ in $(seq 1 100); do
		port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$W/$1.out")
		[ -n "$port" ] && return 0
		sleep 0.1
	done
	echo "bench_mongo_apply.sh: the peer did not start" >&2
	cat "$W/$1.log" >&2
	exit 1
}

n=20000
[ "$quick" -eq 1 ] && n=2000
start_peer source
SRC="mongodb://127.0.0.1:$port/?replicaSet=rs0"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
# An empty snapshot at T, then the workload; the stream holds every change after T.
"$SLUICE" capture --source "$SRC" --store "$W/store" --stream b --key "$W/k.key" --snapshot \
	--exit-when-caught-up --no-progress 2>"$W/snap.log" || { cat "$W/snap.log" >&2; exit 1; }
read -r T_S T_I < <($PY -c 'import sys, pymongo
r = pymongo.MongoClient(sys.argv[1]).admin.command("ping")
print(r["operationTime"].time, r["operationTime"].inc)' "$SRC")

echo "bench_mongo_apply: workload of $n inserts, $((n / 2)) updates, $((n / 4)) deletes, $((n / 100)) transactions" >&2
EVENTS=$($PY - "$SRC" "$n" <<'PY'
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1])
n = int(sys.argv[2])
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
"$SLUICE" capture --source "$SRC" --store "$W/store" --stream b --key "$W/k.key" \
	--exit-when-caught-up --no-progress 2>"$W/capture.log" || { cat "$W/capture.log" >&2; exit 1; }
"$READER" "$SRC" "$T_S" "$T_I" "$EVENTS" >"$W/events.bson" 2>"$W/reader.log" ||
	{ cat "$W/reader.log" >&2; exit 1; }
echo "bench_mongo_apply: $EVENTS change events, captured and dumped" >&2

# same_as_source URI: the target's bench database equals the source's, raw BSON.
same_as_source() {
	$PY - "$SRC" "$1" <<'PY'
import sys, pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
o = CodecOptions(document_class=RawBSONDocument)
def state(uri):
    db = pymongo.MongoClient(uri).get_database("bench", codec_options=o)
    return {n: sorted(d.raw for d in db[n].find()) for n in db.list_collection_names()}
a, b = state(sys.argv[1]), state(sys.argv[2])
a = {k: v for k, v in a.items() if v}
b = {k: v for k, v in b.items() if v}
sys.exit(0 if a == b else 1)
PY
}

peer_cpu() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}
tick=$(getconf CLK_TCK)
: >"$W/results" # lines: tool run wall cpu peer-cpu
for r in $(seq 1 "$runs"); do
	for tool in loader sluice; do
		start_peer "target-$tool-$r"
		DST="mongodb://127.0.0.1:$port/?replicaSet=rs0"
		p0=$(peer_cpu "$peer_pid")
		s=$(date +%s.%N)
		if [ "$tool" = loader ]; then
			/usr/bin/time -f '%U %S' -o "$W/cpu" "$LOADER" "$DST" "$W/events.bson" >/dev/null 2>"$W/loader.log" ||
				{ cat "$W/loader.log" >&2; exit 1; }
		else
			/usr/bin/time -f '%U %S' -o "$W/cpu" "$SLUICE" apply --store "$W/store" --stream b \
				--trust "$W/k.pub" --target "$DST" --exit-when-caught-up 2>"$W/apply.log" ||
				{ cat "$W/apply.log" >&2; exit 1; }
		fi
		e=$(date +%s.%N)
		p1=$(peer_cpu "$peer_pid")
		cpu=$(awk '{ print $1 + $2 }' "$W/cpu")
		echo "$tool $r $(echo "$e - $s" | bc) $cpu $(echo "($p1 - $p0) / $tick" | bc -l)" >>"$W/results"
		echo "bench_mongo_apply: run $r $tool $(tail -n 1 "$W/results" | cut -d' ' -f3)s" >&2
		same_as_source "$DST" || { echo "bench_mongo_apply: after $tool, the target differs from the source" >&2; exit 1; }
		kill "$peer_pid"
		wait "$peer_pid" 2>/dev/null || true
	done
done
$PY - "$W/results" "$EVENTS" "$json" "$quick" <<'PY'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
events, out, quick = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
med = statistics.median
def col(tool, k):
    return [float(r[k]) for r in rows if r[0] == tool]
ld, sl = col("loader", 2), col("sluice", 2)
ratio = med(sl) / med(ld)
s = {"quick": quick, "events": events, "runs": len(sl), "loader_s": ld, "sluice_s": sl,
     "median_loader_s": med(ld), "median_sluice_s": med(sl), "ratio": ratio,
     "loader_cpu_s": col("loader", 3), "sluice_cpu_s": col("sluice", 3),
     "peer_cpu_s_loader": col("loader", 4), "peer_cpu_s_sluice": col("sluice", 4)}
print("MongoDB apply: writing %d change events into a fresh test peer (median of %d runs; ratio < 1: sluice faster)"
      % (events, len(sl)))
print("%-34s %10s %10s %12s" % ("", "wall s", "CPU s", "peer CPU s"))
print("%-34s %10.2f %10.2f %12.2f" % ("libmongoc unordered bulk loader", med(ld), med(col("loader", 3)),
                                     med(col("loader", 4))))
print("%-34s %10.2f %10.2f %12.2f" % ("sluice apply (exactly once)", med(sl), med(col("sluice", 3)),
                                     med(col("sluice", 4))))
print("ratio sluice / loader: %.2fx" % ratio)
json.dump(s, open(out, "w"), indent=1)
print("summary written to %s" % out)
PY
