#!/usr/bin/env bash
# sluice end to end on this machine, with no prompts: builds sluice, starts two
# throwaway PostgreSQL servers, runs a live pgbench workload on the first,
# streams it through signed, compressed segments (capture) into the second
# (apply), then shows that both hold the same rows, that the stream verifies,
# and where the segments are; finally that a tampered byte and an untrusted key
# are refused.
#
# Usage: tools/demo.sh [--keep] [--seconds N]
#   --keep       leave the servers' files and the store in place (servers stop)
#   --seconds N  length of the live workload (default 15)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/deps.sh
. "$ROOT/tools/deps.sh"

seconds=15
while [ $# -gt 0 ]; do
	case "$1" in
	--keep) export PG_KEEP=1 ;;
	--seconds) seconds=$2; shift ;;
	-h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "demo.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing missing packages (as root) and building sluice"
sluice_install_deps
cmake -S "$ROOT" -B "$ROOT/build/demo" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_TESTS=OFF >/dev/null
cmake --build "$ROOT/build/demo" -j "$(nproc)" >/dev/null
SLUICE="$ROOT/build/demo/tools/sluice"

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

if [ "$same" -eq 1 ]; then
	step "done: the target equals the source"
else
	step "FAILED: the target differs from the source (logs: $W)"
	exit 1
fi
