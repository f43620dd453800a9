#!/usr/bin/env bash
# sluice end to end on this machine, with no prompts: builds sluice, starts two
# throwaway PostgreSQL servers, runs a live pgbench workload on the first,
# streams it through signed, compressed segments (capture) into the second
# (apply), then shows that both hold the same rows, that the stream verifies,
# and where the segments are; finally that a tampered byte and an untrusted key
# are refused. Then the same for MongoDB: documents and a live workload on a
# source deployment, captured from its change stream and applied into a
# target, compared as raw BSON. Without --mongo-source/--mongo-target it uses
# two throwaway instances of sluice's MongoDB test peer (tests/mongo/; no
# MongoDB server is installed here).
#
# Usage: tools/demo.sh [--keep] [--seconds N] [--mongo-source URI --mongo-target URI]
#   --keep       leave the servers' files and the store in place (servers stop)
#   --seconds N  length of each live workload (default 15)
#   --mongo-source URI, --mongo-target URI  real replica sets to use instead of
#                the test peer (the demo writes to database sluice_demo on both)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/deps.sh
. "$ROOT/tools/deps.sh"

seconds=15
mongo_src=""
mongo_dst=""
while [ $# -gt 0 ]; do
	case "$1" in
	--keep) export PG_KEEP=1 ;;
	--seconds) seconds=$2; shift ;;
	--mongo-source) mongo_src=$2; shift ;;
	--mongo-target) mongo_dst=$2; shift ;;
	-h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "demo.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing missing packages (as root) and building sluice"
sluice_install_deps
[ -n "$mongo_src" ] && [ -z "$mongo_dst" ] && { echo "demo.sh: --mongo-source needs --mongo-target" >&2; exit 2; }
[ -z "$mongo_src" ] && [ -n "$mongo_dst" ] && { echo "demo.sh: --mongo-target needs --mongo-source" >&2; exit 2; }
cmake -S "$ROOT" -B "$ROOT/build/demo" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$ROOT/build/demo" -j "$(nproc)" --target sluice sluice-mongo-peer >/dev/null
SLUICE="$ROOT/build/demo/tools/sluice"
PEER="$ROOT/build/demo/tests/mongo/sluice-mongo-peer"

# shellcheck source=tests/pg/harness.sh
. "$ROOT/tests/pg/harness.sh"
pg_harness_init
W="$PG_HARNESS_DIR/demo"
mkdir -p "$W"
STORE="$W/store"
pids=()
stop_all() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
}
trap 'stop_all; pg_harness_cleanup' EXIT

step "two throwaway PostgreSQL 15 servers: source and target"
pg_start source
pg_start target
SRC=$(pg_conninfo source)
DST=$(pg_conninfo target)
echo "source: $SRC"
echo "target: $DST"

step "a pgbench database on the source (scale 2); the same empty tables on the target"
pgbench -i -q -s 2 "$SRC" 2>&1 | tail -1
# pgbench_history has no primary key: give it a replica identity, or capture
# --create refuses (a published table without one rejects UPDATE and DELETE)
psql -q -X "$SRC" -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
pg_dump -s -t 'pgbench_*' "$SRC" | psql -q -X "$DST" >/dev/null

step "a signing key (the secret key is mode 0600)"
"$SLUICE" keygen --out "$W/source"
ls -l "$W"/source.*

step "capture: snapshot of the source, then its live changes, into signed segments"
"$SLUICE" --log-format text capture --source "$SRC" --store "$STORE" --stream source \
	--key "$W/source.key" --create --snapshot --no-progress 2>"$W/capture.log" &
pids+=($!)
step "apply: verify every frame, replay into the target (replace strategy)"
"$SLUICE" --log-format text apply --store "$STORE" --stream source --trust "$W/source.pub" \
	--target "$DST" 2>"$W/apply.log" &
pids+=($!)

step "a live workload on the source: pgbench, 4 clients, ${seconds} s"
pgbench -n -c 4 -j 2 -T "$seconds" -P 5 "$SRC" 2>&1 | grep -E "progress|tps =" || true

step "waiting for the target to catch up"
end=$(pg_psql source postgres -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 120); do
	last=$("$SLUICE" inspect --store "$STORE" --stream source --trust "$W/source.pub" --json |
		python3 -c 'import json,sys; s=[json.loads(l) for l in sys.stdin if "\"segment\"" in l]; print(s[-1]["txseq_last"] if s else 0)')
	applied=$(pg_psql target postgres -c "SELECT coalesce(pg_replication_origin_progress('sluice_source@postgres', true), '0/0')")
	confirmed=$(pg_psql source postgres -c "SELECT confirmed_flush_lsn >= '$end' FROM pg_replication_slots WHERE slot_name = 'sluice_source'")
	if [ "$confirmed" = t ] && [ "$applied" = "$(printf '%X/%X' $((last >> 32)) $((last & 0xFFFFFFFF)))" ]; then
		break
	fi
	sleep 0.5
done
echo "stream holds txseq 1..$last; target applied up to txseq $((16#${applied#*/}))"
stop_all

step "both servers hold the same rows (md5 of every table, ordered)"
printf '%-20s %-34s %-34s\n' table source target
same=1
for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
	q="SELECT count(*) || ' rows ' || md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM $t x"
	a=$(pg_psql source postgres -c "$q")
	b=$(pg_psql target postgres -c "$q")
	printf '%-20s %-34s %-34s %s\n' "$t" "${a:0:40}" "${b:0:40}" "$([ "$a" = "$b" ] && echo same || echo DIFFERENT)"
	[ "$a" = "$b" ] || same=0
done

step "sluice verify: every signature, payload hash, the chain and txseq density"
"$SLUICE" verify --store "$STORE" --stream source --trust "$W/source.pub"

step "where the segments are"
ls -l "$STORE/source"
"$SLUICE" inspect --store "$STORE" --stream source --trust "$W/source.pub" | grep '^segment'

step "one transaction of the stream, as JSON"
"$SLUICE" inspect --store "$STORE" --stream source --trust "$W/source.pub" --records --json --from 3 --limit 1 >"$W/tx.json"
head -4 "$W/tx.json" | cut -c1-180

step "one flipped byte in a copy of the stream is refused, with segment and offset"
cp -a "$STORE" "$W/tampered"
chmod -R u+w "$W/tampered"
seg=$(ls "$W/tampered/source" | grep seg | head -1)
printf '\x00' | dd of="$W/tampered/source/$seg" bs=1 seek=3000 conv=notrunc status=none
"$SLUICE" verify --store "$W/tampered" --stream source --trust "$W/source.pub" || echo "(exit status $?: refused)"

step "a key that did not sign the stream is not trusted"
"$SLUICE" keygen --out "$W/other" >/dev/null 2>&1
"$SLUICE" verify --store "$STORE" --stream source --trust "$W/other.pub" >"$W/untrusted.txt" || echo "(exit status $?: refused)"
head -1 "$W/untrusted.txt"

# ---------------------------------------------------------------- MongoDB
# start_peer NAME: a throwaway test peer on a free port; prints its URI.
start_peer() {
	"$PEER" --port 0 >"$W/$1.out" 2>"$W/$1.log" &
	pids+=($!)
	local port=""
	for _ in $(seq 1 100); do
		port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$W/$1.out")
		[ -n "$port" ] && break
		sleep 0.1
	done
	[ -n "$port" ] || { echo "demo.sh: the MongoDB test peer did not start" >&2; exit 1; }
	MONGO_URI="mongodb://127.0.0.1:$port/?replicaSet=rs0"
}
if [ -z "$mongo_src" ]; then
	step "MongoDB: two throwaway instances of sluice's MongoDB test peer: source and target"
	start_peer mongo-source
	mongo_src=$MONGO_URI
	start_peer mongo-target
	mongo_dst=$MONGO_URI
else
	step "MongoDB: the replica sets given"
fi
echo "source: $mongo_src"
echo "target: $mongo_dst"
PY=/usr/bin/python3

step "documents of many BSON types in two collections of the source"
$PY - "$mongo_src" <<'PY'
import datetime, decimal, sys, uuid
import bson, pymongo
c = pymongo.MongoClient(sys.argv[1])
c.drop_database("sluice_demo")
db = c.sluice_demo
db.customers.insert_many([{"_id": i, "name": "customer %d" % i, "since": datetime.datetime(2020, 1, 1 + i % 28),
                           "tags": ["a", "b"][: i % 3], "address": {"city": "Oslo", "zip": "%04d" % i}}
                          for i in range(200)])
db.orders.insert_many([{"_id": bson.ObjectId(), "customer": i % 200, "total": bson.Decimal128("%d.95" % i),
                        "ref": uuid.uuid4().bytes, "at": bson.Timestamp(1700000000 + i, 1), "qty": bson.Int64(i)}
                       for i in range(500)])
print("source: 200 customers, 500 orders")
PY

step "a MongoDB signing key; capture: snapshot at a cluster time, then the change stream"
"$SLUICE" keygen --out "$W/mongo" >/dev/null 2>&1
"$SLUICE" --log-format text capture --source "$mongo_src" --store "$STORE" --stream docs \
	--key "$W/mongo.key" --db sluice_demo --snapshot --no-progress 2>"$W/mongo-capture.log" &
mpids=($!)
step "apply: verify every frame, replay into the target (one transaction per source transaction)"
"$SLUICE" --log-format text apply --store "$STORE" --stream docs --trust "$W/mongo.pub" \
	--target "$mongo_dst" 2>"$W/mongo-apply.log" &
mpids+=($!)

step "a live workload on the source: updates, deletes, inserts, multi-document transactions, ${seconds} s"
$PY - "$mongo_src" "$seconds" <<'PY'
import random, sys, time
import pymongo
c = pymongo.MongoClient(sys.argv[1])
db = c.sluice_demo
end = time.time() + float(sys.argv[2])
rng = random.Random(7)
n = k = 0
while time.time() < end:
    i = rng.randrange(200)
    r = rng.random()
    if r < 0.5:
        db.customers.update_one({"_id": i}, {"$set": {"name": "renamed %d" % n}, "$inc": {"visits": 1}})
    elif r < 0.6:
        db.customers.delete_one({"_id": i})
    elif r < 0.8:
        db.customers.replace_one({"_id": i}, {"_id": i, "name": "replaced %d" % n}, upsert=True)
    else:
        with c.start_session() as s:
            with s.start_transaction():
                db.orders.insert_one({"customer": i, "n": n}, session=s)
                db.customers.update_one({"_id": i}, {"$set": {"last_order": n}}, session=s)
        k += 1
    n += 1
    time.sleep(0.005)
print("%d changes, %d of them in multi-document transactions" % (n, k))
PY

step "waiting for the target to catch up"
mongo_caught_up() {
	$PY - "$mongo_src" "$mongo_dst" <<'PY'
import sys
import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
o = CodecOptions(document_class=RawBSONDocument)
def state(uri):
    db = pymongo.MongoClient(uri).get_database("sluice_demo", codec_options=o)
    return {n: sorted(d.raw for d in db[n].find()) for n in ("customers", "orders")}
sys.exit(0 if state(sys.argv[1]) == state(sys.argv[2]) else 1)
PY
}
msame=0
for _ in $(seq 1 120); do
	if mongo_caught_up; then
		msame=1
		break
	fi
	sleep 0.5
done
for p in "${mpids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${mpids[@]}"; do wait "$p" 2>/dev/null || true; done
$PY - "$mongo_src" "$mongo_dst" <<'PY'
import sys
import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
import hashlib
o = CodecOptions(document_class=RawBSONDocument)
print("%-12s %-44s %-44s" % ("collection", "source", "target"))
for n in ("customers", "orders"):
    row = []
    for uri in sys.argv[1:3]:
        docs = sorted(d.raw for d in pymongo.MongoClient(uri).get_database("sluice_demo", codec_options=o)[n].find())
        row.append("%d docs, sha256 %s" % (len(docs), hashlib.sha256(b"".join(docs)).hexdigest()[:16]))
    print("%-12s %-44s %-44s %s" % (n, row[0], row[1], "same" if row[0] == row[1] else "DIFFERENT"))
print("progress on the target:", pymongo.MongoClient(sys.argv[2]).sluice.progress.find_one({"_id": "docs"}))
PY
"$SLUICE" verify --store "$STORE" --stream docs --trust "$W/mongo.pub" | head -3

if [ "$same" -eq 1 ] && [ "$msame" -eq 1 ]; then
	step "done: each target equals its source"
else
	step "FAILED: a target differs from its source (logs: $W)"
	exit 1
fi
