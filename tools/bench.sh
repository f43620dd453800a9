#!/usr/bin/env bash
# Benchmarks sluice against PostgreSQL's own tools, side by side in one run on
# this machine, alternating runs and reporting medians and ratios.
#
#   capture: draining identical slot contents with `sluice capture` (compressed,
#            signed, fsynced store) versus `pg_recvlogical` (pgoutput, /dev/null)
#   apply:   catching up identical changes with `sluice apply` (from the store)
#            versus PostgreSQL's subscriber (CREATE SUBSCRIPTION on a pre-filled
#            slot, create_slot=false, copy_data=false), each into a fresh copy of
#            the same pre-workload target database
#
# Workloads: W1 bulk (1M-row insert, 200k updates, 100k deletes), W2 many small
# transactions (10k transactions of 100 inserts), W3 pgbench TPC-B-like
# (scale 10, 4 clients). --quick runs them at a tenth of the size.
#
# Usage: tools/bench.sh [--quick] [--runs N] [--workloads W1,W2,W3] [--json FILE]
# Output: a table on stdout and a JSON summary (default build/bench/summary.json).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/deps.sh
. "$ROOT/tools/deps.sh"

quick=0
runs=3
workloads="W1,W2,W3"
json="$ROOT/build/bench/summary.json"
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--runs) runs=$2; shift ;;
	--workloads) workloads=$2; shift ;;
	--json) json=$2; shift ;;
	-h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

sluice_install_deps
cmake -S "$ROOT" -B "$ROOT/build/bench" -DCMAKE_BUILD_TYPE=Release -DSLUICE_TESTS=OFF >/dev/null
cmake --build "$ROOT/build/bench" -j "$(nproc)" >/dev/null
SLUICE="$ROOT/build/bench/tools/sluice"

. "$ROOT/tests/pg/harness.sh"
pg_harness_init
W="$PG_HARNESS_DIR/bench"
mkdir -p "$W" "$(dirname "$json")"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
pg_start src "max_wal_size = 8GB" "checkpoint_timeout = 30min" "shared_buffers = 512MB"
pg_start dst "max_wal_size = 8GB" "checkpoint_timeout = 30min" "shared_buffers = 512MB" \
	"max_logical_replication_workers = 8"
SRC=$(pg_conninfo src)

scale=1
[ "$quick" -eq 1 ] && scale=10

now() { date +%s.%N; }
# cpu_of PID-file: user+sys seconds of a finished command run with /usr/bin/time is not
# available everywhere; we time wall clock and read CPU from /proc at exit instead.

results=()   # lines: workload tool run seconds

# make_slots N: slots at the current position, before the workload: N for each
# capture tool, N for the native subscriber, one for the stream apply reads.
make_slots() {
	local i
	for i in $(seq 1 "$1"); do
		pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('sl_sluice_$i', 'pgoutput')" >/dev/null
		pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('sl_recv_$i', 'pgoutput')" >/dev/null
		pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('sl_native_$i', 'pgoutput')" >/dev/null
	done
	pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('sl_stream', 'pgoutput')" >/dev/null
	# The targets start from the source as it is now.
	pg_psql dst postgres -c "DROP DATABASE IF EXISTS tmpl" >/dev/null
	pg_psql dst postgres -c "CREATE DATABASE tmpl" >/dev/null
	pg_dump "$SRC" | psql -q -X "$(pg_conninfo dst tmpl)" >/dev/null
}

# fresh_target NAME: a new target database copied from tmpl.
fresh_target() {
	pg_psql dst postgres -c "DROP DATABASE IF EXISTS $1" >/dev/null
	pg_psql dst postgres -c "CREATE DATABASE $1 TEMPLATE tmpl" >/dev/null
}

run_sluice_apply() { # dbname
	# Replication origins are per cluster: every run starts without progress.
	pg_psql dst postgres -c "SELECT pg_replication_origin_drop('sluice_bench') FROM pg_replication_origin WHERE roname = 'sluice_bench'" >/dev/null
	"$SLUICE" --log-format json apply --store "$W/stream-$wl" --stream bench --trust "$W/k.pub" \
		--target "$(pg_conninfo dst "$1")" --exit-when-caught-up 2>"$W/apply-$1.log"
}

run_native() { # dbname slot endpos
	local db=$1 slot=$2 endpos=$3
	pg_psql dst "$db" -c "CREATE SUBSCRIPTION sub_$db CONNECTION '$SRC' PUBLICATION bench WITH (create_slot = false, copy_data = false, slot_name = '$slot', enabled = false)" >/dev/null
	local t0 t1
	t0=$(now)
	pg_psql dst "$db" -c "ALTER SUBSCRIPTION sub_$db ENABLE" >/dev/null
	while [ "$(pg_psql src postgres -c "SELECT confirmed_flush_lsn >= '$endpos' FROM pg_replication_slots WHERE slot_name = '$slot'")" != t ]; do
		sleep 0.02
	done
	t1=$(now)
	pg_psql dst "$db" -c "ALTER SUBSCRIPTION sub_$db DISABLE" >/dev/null
	pg_psql dst "$db" -c "ALTER SUBSCRIPTION sub_$db SET (slot_name = NONE)" >/dev/null
	pg_psql dst "$db" -c "DROP SUBSCRIPTION sub_$db" >/dev/null
	echo "$t1 - $t0" | bc -l
}
drop_slots() {
	pg_psql src postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'sl_%'" >/dev/null
}

run_recvlogical() { # slot endpos
	pg_recvlogical -d "$SRC" --slot "$1" --start -o proto_version=1 -o publication_names=bench \
		-E "$2" -f /dev/null
}
run_sluice() { # slot endpos storedir
	"$SLUICE" --log-format json capture --source "$SRC" --store "$3" --stream bench --key "$W/k.key" \
		--slot "$1" --publication bench --until-lsn "$2" --no-heartbeat --no-progress \
		2>"$3.log"
}

workload() {
	case "$1" in
	W1)
		pg_psql src postgres -c "DROP TABLE IF EXISTS w1; CREATE TABLE w1 (id bigint PRIMARY KEY, n integer, v text)" >/dev/null
		make_slots "$runs"
		pg_psql src postgres -c "INSERT INTO w1 SELECT g, g % 1000, md5(g::text) || md5((g+1)::text) FROM generate_series(1, $((1000000 / scale))) g" >/dev/null
		pg_psql src postgres -c "UPDATE w1 SET n = n + 1 WHERE id <= $((200000 / scale))" >/dev/null
		pg_psql src postgres -c "DELETE FROM w1 WHERE id > $((900000 / scale))" >/dev/null
		;;
	W2)
		pg_psql src postgres -c "DROP TABLE IF EXISTS w2; CREATE TABLE w2 (id bigserial PRIMARY KEY, v text)" >/dev/null
		make_slots "$runs"
		echo "INSERT INTO w2 (v) SELECT md5(random()::text) FROM generate_series(1, 100);" >"$W/w2.sql"
		pgbench -n -c 1 -t $((10000 / scale)) -f "$W/w2.sql" "$SRC" >"$W/pgbench-w2.log" 2>&1 || { cat "$W/pgbench-w2.log" >&2; exit 1; }
		;;
	W3)
		pgbench -i -q -s 10 "$SRC" >/dev/null 2>&1
		make_slots "$runs"
		pgbench -n -c 4 -j 2 -t $((20000 / scale)) "$SRC" >/dev/null 2>&1
		;;
	esac
}

for wl in ${workloads//,/ }; do
	echo "== $wl: preparing" >&2
	pg_psql src postgres -c "DROP PUBLICATION IF EXISTS bench; CREATE PUBLICATION bench FOR ALL TABLES" >/dev/null
	workload "$wl"
	end=$(pg_psql src postgres -c "SELECT pg_current_wal_lsn()")
	changes=$(pg_psql src postgres -c "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('sl_recv_1', '$end', NULL, 'proto_version', '1', 'publication_names', 'bench')")
	for i in $(seq 1 "$runs"); do
		order="recv sluice"
		[ $((i % 2)) -eq 0 ] && order="sluice recv"
		for tool in $order; do
			t0=$(now)
			if [ "$tool" = recv ]; then
				run_recvlogical "sl_recv_$i" "$end"
			else
				run_sluice "sl_sluice_$i" "$end" "$W/store-$wl-$i"
			fi
			t1=$(now)
			secs=$(echo "$t1 - $t0" | bc -l)
			results+=("$wl $tool $i $secs")
			echo "   $wl run $i $tool: ${secs}s" >&2
		done
		bytes=$(du -sb "$W/store-$wl-$i" | cut -f1)
		"$SLUICE" verify --store "$W/store-$wl-$i" --stream bench --trust "$W/k.pub" >/dev/null
	done
	echo "$wl changes=$changes bytes=$bytes" >>"$W/sizes"

	# apply: capture the stream once (not timed), then alternate the appliers
	"$SLUICE" capture --source "$SRC" --store "$W/stream-$wl" --stream bench --key "$W/k.key" \
		--slot sl_stream --publication bench --until-lsn "$end" --no-heartbeat --no-progress 2>/dev/null
	for i in $(seq 1 "$runs"); do
		order="native sluice"
		[ $((i % 2)) -eq 0 ] && order="sluice native"
		for tool in $order; do
			fresh_target "t_${tool}_$i"
			if [ "$tool" = native ]; then
				secs=$(run_native "t_native_$i" "sl_native_$i" "$end")
			else
				t0=$(now)
				run_sluice_apply "t_sluice_$i"
				t1=$(now)
				secs=$(echo "$t1 - $t0" | bc -l)
			fi
			results+=("$wl apply_$tool $i $secs")
			echo "   $wl run $i apply $tool: ${secs}s" >&2
		done
		# both appliers must produce the source's rows
		for tbl in $(pg_psql src postgres -c "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"); do
			q="SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM $tbl x"
			s0=$(pg_psql src postgres -c "$q")
			for tool in native sluice; do
				s1=$(pg_psql dst "t_${tool}_$i" -c "$q")
				[ "$s0" = "$s1" ] || { echo "bench: $tool left $tbl different from the source" >&2; exit 1; }
			done
		done
		pg_psql dst postgres -c "DROP DATABASE t_native_$i" >/dev/null
		pg_psql dst postgres -c "DROP DATABASE t_sluice_$i" >/dev/null
	done
	drop_slots
done

python3 - "$json" "$W/sizes" "$quick" "${results[@]}" <<'PY'
import json, statistics, sys, platform, os
out, sizes_file, quick = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rows = [r.split() for r in sys.argv[4:]]
sizes = {}
for line in open(sizes_file):
    wl, c, b = line.split()
    sizes[wl] = {"messages": int(c.split("=")[1]), "store_bytes": int(b.split("=")[1])}
summary = {"quick": quick, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "capture": {}, "apply": {}}
print("%-4s %12s %12s %8s %14s %12s   (capture: drain time)" % ("wl", "recvlogical", "sluice", "ratio", "pgoutput msgs", "store bytes"))
for wl in sorted({r[0] for r in rows if r[1] in ("recv", "sluice")}):
    rv = [float(r[3]) for r in rows if r[0] == wl and r[1] == "recv"]
    sl = [float(r[3]) for r in rows if r[0] == wl and r[1] == "sluice"]
    m_rv, m_sl = statistics.median(rv), statistics.median(sl)
    ratio = m_sl / m_rv
    summary["capture"][wl] = {"pg_recvlogical_s": rv, "sluice_s": sl, "median_pg_recvlogical_s": m_rv,
                              "median_sluice_s": m_sl, "ratio": ratio, **sizes.get(wl, {})}
    print("%-4s %11.2fs %11.2fs %7.2fx %14d %12d" % (wl, m_rv, m_sl, ratio, sizes[wl]["messages"], sizes[wl]["store_bytes"]))
print()
print("%-4s %12s %12s %8s   (apply: catch-up time; ratio < 1 means sluice is faster)" % ("wl", "subscriber", "sluice", "ratio"))
for wl in sorted({r[0] for r in rows if r[1].startswith("apply_")}):
    nv = [float(r[3]) for r in rows if r[0] == wl and r[1] == "apply_native"]
    sl = [float(r[3]) for r in rows if r[0] == wl and r[1] == "apply_sluice"]
    m_nv, m_sl = statistics.median(nv), statistics.median(sl)
    summary["apply"][wl] = {"subscriber_s": nv, "sluice_s": sl, "median_subscriber_s": m_nv,
                            "median_sluice_s": m_sl, "ratio": m_sl / m_nv}
    print("%-4s %11.2fs %11.2fs %7.2fx" % (wl, m_nv, m_sl, m_sl / m_nv))
json.dump(summary, open(out, "w"), indent=1)
print("summary written to %s" % out)
PY
