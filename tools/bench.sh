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
#   latency: commit on the source to insert on the target under a steady
#            `pgbench -R` load: sluice capture + apply versus a subscription,
#            and sluice through a NATS JetStream store (when nats-server is
#            installed: one server on loopback, file storage, R1)
#   NC:      capture throughput into NATS JetStream versus into a directory
#            (draining identical slot contents of W2's transactions)
#   cost:    bytes on disk per change, compression ratio, CPU seconds of
#            capture and apply (and of the target server) per million changes
#
# Workloads: W1 bulk (1M-row insert, 200k updates, 100k deletes), W2 many small
# transactions (10k transactions of 100 inserts), W3 pgbench TPC-B-like
# (scale 10, 4 clients), W4 wide rows (8 kB TOASTed column: 20k inserts,
# updates that leave it unchanged, updates that replace it, deletes).
# --quick runs them at a tenth of the size and the latency runs for 8 s.
#
# W4L (not in the default list): W4 with the target server's
# default_toast_compression set to lz4 for both appliers (the server's pglz
# compression of the 8 kB values is 70% of either applier's target CPU on W4).
# S3W1, S3W2, S3W3, S3W4 (not in the default list): capture of workload Wn into
# an S3 bucket (a local s3rver, spool, --ack remote, 2 s segments) against
# capture into a directory, draining identical slot contents.
# S3LAT (not in the default list): end-to-end latency through S3 (capture
# --segment-seconds S3_SEGMENT_SECONDS, default 1; apply polling the bucket)
# next to the directory store, under the same pgbench -R load as LAT.
# --capture-only: skip the apply runs (and the apply columns of the cost table).
# --baseline-sluice BIN: also time capture with another sluice binary (an
# older build) on W1-W4, alternated with this one ("base" in the tables).
# MG (not in the default list): MongoDB capture against a plain libmongoc change
# stream reader on the test peer, run by tools/bench_mongo.sh (see there).
# MA (not in the default list): MongoDB apply against a plain libmongoc bulk
# loader on the test peer, run by tools/bench_mongo_apply.sh (see there).
# Usage: tools/bench.sh [--quick] [--runs N] [--workloads W1,W2,W3,W4,W4L,LAT,NC,S3W1..S3W4,S3LAT,MG,MA]
#                       [--latency-rate TPS] [--latency-seconds S] [--json FILE]
#                       [--baseline-sluice BIN] [--capture-only]
# Output: tables on stdout, progress on stderr, and a JSON summary
# (default build/bench/summary.json). Exit status: 0 done, 1 a run failed or a
# tool left the target different from the source, 2 usage error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/deps.sh
. "$ROOT/tools/deps.sh"

quick=0
runs=3
workloads="W1,W2,W3,W4,LAT,NC"
json="$ROOT/build/bench/summary.json"
lat_rate=1000
lat_seconds=""
baseline=""
capture_only=0
s3_seconds=${S3_SEGMENT_SECONDS:-1}
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--runs) runs=$2; shift ;;
	--workloads) workloads=$2; shift ;;
	--latency-rate) lat_rate=$2; shift ;;
	--latency-seconds) lat_seconds=$2; shift ;;
	--json) json=$2; shift ;;
	--baseline-sluice) baseline=$2; shift ;;
	--capture-only) capture_only=1 ;;
	-h | --help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
case "$runs" in '' | *[!0-9]* | 0) echo "bench.sh: --runs needs a positive number" >&2; exit 2 ;; esac
pg_workloads=""
for wl in ${workloads//,/ }; do
	case "$wl" in
	W1 | W2 | W3 | W4 | W4L | LAT | NC | S3W1 | S3W2 | S3W3 | S3W4 | S3LAT) pg_workloads="$pg_workloads${pg_workloads:+,}$wl" ;;
	MG | MA) ;;
	*) echo "bench.sh: unknown workload $wl" >&2; exit 2 ;;
	esac
done
# MG: MongoDB capture against a plain libmongoc reader (tools/bench_mongo.sh);
# MA: MongoDB apply against a plain libmongoc loader (tools/bench_mongo_apply.sh).
mg_args=(--runs "$runs")
[ "$quick" -eq 1 ] && mg_args+=(--quick)
case ",$workloads," in
*,MG,*) "$ROOT/tools/bench_mongo.sh" "${mg_args[@]}" || exit 1 ;;
esac
case ",$workloads," in
*,MA,*) "$ROOT/tools/bench_mongo_apply.sh" "${mg_args[@]}" || exit 1 ;;
esac
[ -n "$pg_workloads" ] || case ",$workloads," in *,MG,* | *,MA,*) exit 0 ;; esac
workloads=$pg_workloads

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
# NATS JetStream (latency row and NC): one nats-server on loopback, if installed.
HAVE_NATS=0
if command -v nats-server >/dev/null 2>&1; then
	. "$ROOT/tests/nats/harness.sh"
	nats_start >/dev/null
	HAVE_NATS=1
else
	echo "bench: nats-server is not installed: no JetStream rows" >&2
fi
case ",$workloads," in
*,S3*)
	sluice_install_s3rver
	. "$ROOT/tests/s3/harness.sh"
	s3_start || exit 1
	S3_URL=$(s3_store bench)
	;;
esac
[ -n "$baseline" ] && [ ! -x "$baseline" ] && { echo "bench.sh: $baseline is not executable" >&2; exit 2; }

scale=1
[ "$quick" -eq 1 ] && scale=10
[ -n "$lat_seconds" ] || { lat_seconds=20; [ "$quick" -eq 1 ] && lat_seconds=8; }

now() { date +%s.%N; }
: >"$W/results"   # lines: workload tool run seconds cpu-seconds target-server-cpu-seconds
: >"$W/sizes"     # lines: workload changes messages store-bytes raw-bytes payload-bytes
: >"$W/latency"   # lines: tool run n p50 p99 max tps (milliseconds)
: >"$W/natscap"   # lines: NC dir|jetstream run seconds cpu-seconds

# srv_cpu NAME: CPU seconds used so far by server NAME's processes, including
# backends and workers that have exited (the postmaster reaps them).
srv_cpu() {
	python3 - "$PG_HARNESS_DIR/$1/data/postmaster.pid" <<'PY'
import os, sys
pm = open(sys.argv[1]).readline().strip()
tick = os.sysconf("SC_CLK_TCK")
total = 0
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        f = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if p == pm:
        total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    elif f[1] == pm:
        total += int(f[11]) + int(f[12])
print("%.2f" % (total / tick))
PY
}

# timed OUT CMD...: runs CMD; OUT gets "wall user+sys" seconds of it.
timed() {
	local out=$1 TIMEFORMAT='%R %U %S'
	shift
	{ time "$@"; } 2>"$out.time"
	awk '{ printf "%s %.2f\n", $1, $2 + $3 }' "$out.time" >"$out"
}

# make_slots N: slots at the current position, before the workload: N for each
# capture tool, N for the native subscriber, one for the stream apply reads.
make_slots() {
	local i
	for i in $(seq 1 "$1"); do
		pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('sl_sluice_$i', 'pgoutput')" >/dev/null
		pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('sl_recv_$i', 'pgoutput')" >/dev/null
		pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('sl_native_$i', 'pgoutput')" >/dev/null
		local t
		for t in $extra_tools; do
			pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('sl_${t}_$i', 'pgoutput')" >/dev/null
		done
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
	"$SLUICE" --log-format json apply --store "$W/stream-$wl" --stream bench --trust "$W/k.pub" \
		--target "$(pg_conninfo dst "$1")" --exit-when-caught-up 2>"$W/apply-$1.log"
}

# run_native DB SLOT ENDPOS: prints "wall target-server-cpu" seconds, timed from
# ENABLE until the slot's confirmed position reaches ENDPOS.
run_native() {
	local db=$1 slot=$2 endpos=$3
	pg_psql dst "$db" -c "CREATE SUBSCRIPTION sub_$db CONNECTION '$SRC' PUBLICATION bench WITH (create_slot = false, copy_data = false, slot_name = '$slot', enabled = false)" >/dev/null
	local t0 t1 c0 c1
	c0=$(srv_cpu dst)
	t0=$(now)
	pg_psql dst "$db" -c "ALTER SUBSCRIPTION sub_$db ENABLE" >/dev/null
	while [ "$(pg_psql src postgres -c "SELECT confirmed_flush_lsn >= '$endpos' FROM pg_replication_slots WHERE slot_name = '$slot'")" != t ]; do
		sleep 0.02
	done
	t1=$(now)
	pg_psql dst "$db" -c "ALTER SUBSCRIPTION sub_$db DISABLE" >/dev/null
	pg_psql dst "$db" -c "ALTER SUBSCRIPTION sub_$db SET (slot_name = NONE)" >/dev/null
	pg_psql dst "$db" -c "DROP SUBSCRIPTION sub_$db" >/dev/null
	sleep 0.2 # the worker exits and is reaped: its CPU is then counted
	c1=$(srv_cpu dst)
	echo "$(echo "$t1 - $t0" | bc -l) $(echo "$c1 - $c0" | bc -l)"
}
drop_slots() {
	pg_psql src postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'sl_%'" >/dev/null
}

run_recvlogical() { # slot endpos
	pg_recvlogical -d "$SRC" --slot "$1" --start -o proto_version=1 -o publication_names=bench \
		-E "$2" -f /dev/null
}
run_sluice() { # slot endpos storedir [binary]
	"${4:-$SLUICE}" --log-format json capture --source "$SRC" --store "$3" --stream bench --key "$W/k.key" \
		--slot "$1" --publication bench --until-lsn "$2" --no-heartbeat --no-progress \
		2>"$3.log"
}
run_sluice_s3() { # slot endpos run: into the bucket, the open segment in a spool
	"$SLUICE" --log-format json capture --source "$SRC" --store "$S3_URL" --stream "bench-$wl-$3" \
		--spool "$W/spool-$wl-$3" --key "$W/k.key" --slot "$1" --publication bench --until-lsn "$2" \
		--no-heartbeat --no-progress 2>"$W/s3-$wl-$3.log"
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
	W4 | W4L)
		# 8 kB of hex text per row: stored compressed out of line (TOAST).
		pg_psql src postgres -c "DROP TABLE IF EXISTS w4; CREATE TABLE w4 (id bigint PRIMARY KEY, n integer, note text, doc text)" >/dev/null
		make_slots "$runs"
		local rows=$((20000 / scale)) b
		for b in $(seq 0 9); do # ten transactions of inserts
			pg_psql src postgres -c "INSERT INTO w4 SELECT g, 0, 'row ' || g, (SELECT string_agg(md5((g * 1000 + i)::text), '') FROM generate_series(1, 256) i) FROM generate_series($((b * rows / 10 + 1)), $(((b + 1) * rows / 10))) g" >/dev/null
		done
		pg_psql src postgres -c "UPDATE w4 SET n = n + 1, note = 'touched'" >/dev/null           # doc unchanged
		pg_psql src postgres -c "UPDATE w4 SET doc = md5(doc) || doc WHERE id % 10 = 0" >/dev/null # doc replaced
		pg_psql src postgres -c "DELETE FROM w4 WHERE id % 10 = 1" >/dev/null
		;;
	esac
}

# ---- capture, apply and stream cost per workload ------------------------------

bench_workload() {
	local wl=$1 i tool order secs out s3=0
	case "$wl" in S3*) s3=1 ;; esac
	extra_tools=""
	[ "$s3" = 1 ] && extra_tools="s3"
	[ "$s3" = 0 ] && [ -n "$baseline" ] && extra_tools="base"
	echo "== $wl: preparing the workload" >&2
	pg_psql src postgres -c "DROP PUBLICATION IF EXISTS bench; CREATE PUBLICATION bench FOR ALL TABLES" >/dev/null
	workload "${wl#S3}"
	local end messages changes
	end=$(pg_psql src postgres -c "SELECT pg_current_wal_lsn()")
	# messages: everything pgoutput sends; changes: Insert, Update and Delete messages
	read -r messages changes < <(pg_psql src postgres -F ' ' -c "SELECT count(*), count(*) FILTER (WHERE get_byte(data, 0) IN (73, 85, 68)) FROM pg_logical_slot_peek_binary_changes('sl_recv_1', '$end', NULL, 'proto_version', '1', 'publication_names', 'bench')")
	echo "== $wl: $changes row changes ($messages pgoutput messages); capture" >&2
	for i in $(seq 1 "$runs"); do
		order="recv sluice $extra_tools"
		[ $((i % 2)) -eq 0 ] && order="$extra_tools sluice recv"
		[ "$s3" = 1 ] && order=${order/recv/}
		for tool in $order; do
			case "$tool" in
			recv) timed "$W/t" run_recvlogical "sl_recv_$i" "$end" ;;
			sluice) timed "$W/t" run_sluice "sl_sluice_$i" "$end" "$W/store-$wl-$i" ;;
			base) timed "$W/t" run_sluice "sl_base_$i" "$end" "$W/base-$wl-$i" "$baseline" ;;
			s3) timed "$W/t" run_sluice_s3 "sl_s3_$i" "$end" "$i" ;;
			esac
			read -r secs cpu <"$W/t"
			echo "$wl $tool $i $secs $cpu -" >>"$W/results"
			echo "   $wl run $i $tool: ${secs} s (${cpu} s CPU)" >&2
		done
		"$SLUICE" verify --store "$W/store-$wl-$i" --stream bench --trust "$W/k.pub" >/dev/null
		if [ "$s3" = 1 ]; then
			"$SLUICE" verify --store "$S3_URL" --stream "bench-$wl-$i" --trust "$W/k.pub" >/dev/null
			[ -z "$(ls "$W/spool-$wl-$i/bench-$wl-$i" | grep '\.seg$')" ] ||
				{ echo "bench: capture into S3 left segments in its spool" >&2; exit 1; }
		fi
		[ "$extra_tools" = base ] && rm -rf "$W/base-$wl-$i"
	done
	if [ "$s3" = 1 ]; then # capture only: the apply side is the same stream
		drop_slots
		rm -rf "$W"/store-"$wl"-* "$W"/spool-"$wl"-*
		return
	fi
	# Stream cost: bytes on disk, and record bytes before and after compression.
	local bytes raw payload
	bytes=$(du -sb "$W/store-$wl-1/bench" | cut -f1)
	read -r raw payload < <("$SLUICE" inspect --store "$W/store-$wl-1" --stream bench --trust "$W/k.pub" --json |
		python3 -c 'import json, sys
r = p = 0
for line in sys.stdin:
    f = json.loads(line)
    if f.get("type") == "frame":
        r += f["raw_bytes"]; p += f["payload_bytes"]
print(r, p)')
	echo "$wl $changes $messages $bytes $raw $payload" >>"$W/sizes"
	if [ "$capture_only" = 1 ]; then
		drop_slots
		rm -rf "$W"/store-"$wl"-*
		return
	fi

	# apply: capture the stream once (not timed), then alternate the appliers
	echo "== $wl: apply" >&2
	if [ "$wl" = W4L ]; then # both appliers write TOAST values with lz4, not pglz
		pg_psql dst postgres -c "ALTER SYSTEM SET default_toast_compression = 'lz4'" >/dev/null
		pg_psql dst postgres -c "SELECT pg_reload_conf()" >/dev/null
	fi
	"$SLUICE" capture --source "$SRC" --store "$W/stream-$wl" --stream bench --key "$W/k.key" \
		--slot sl_stream --publication bench --until-lsn "$end" --no-heartbeat --no-progress 2>/dev/null
	for i in $(seq 1 "$runs"); do
		order="native sluice"
		[ $((i % 2)) -eq 0 ] && order="sluice native"
		for tool in $order; do
			fresh_target "t_${tool}_$i"
			if [ "$tool" = native ]; then
				read -r secs srv < <(run_native "t_native_$i" "sl_native_$i" "$end")
				cpu=-
			else
				# Replication origins are per cluster: every run starts without progress.
				pg_psql dst postgres -c "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname LIKE 'sluice_bench@%'" >/dev/null
				c0=$(srv_cpu dst)
				timed "$W/t" run_sluice_apply "t_sluice_$i"
				sleep 0.2
				c1=$(srv_cpu dst)
				read -r secs cpu <"$W/t"
				srv=$(echo "$c1 - $c0" | bc -l)
			fi
			echo "$wl apply_$tool $i $secs $cpu $srv" >>"$W/results"
			echo "   $wl run $i apply $tool: ${secs} s (sluice CPU ${cpu} s, target server CPU ${srv} s)" >&2
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
	if [ "$wl" = W4L ]; then
		pg_psql dst postgres -c "ALTER SYSTEM RESET default_toast_compression" >/dev/null
		pg_psql dst postgres -c "SELECT pg_reload_conf()" >/dev/null
	fi
	drop_slots
	rm -rf "$W"/store-"$wl"-* "$W/stream-$wl"
}

# ---- end-to-end latency --------------------------------------------------------

# lat_setup: database latdb on the source (pgbench scale 1 and table lat, one
# row per transaction), two target copies whose lat rows record their arrival
# time (a trigger that also fires for replicated rows), a slot for each tool.
lat_setup() {
	pg_psql src postgres -c "DROP DATABASE IF EXISTS latdb" >/dev/null
	pg_psql src postgres -c "CREATE DATABASE latdb" >/dev/null
	LSRC=$(pg_conninfo src latdb)
	pgbench -i -q -s 1 "$LSRC" >/dev/null 2>&1
	pg_psql src latdb -c "CREATE TABLE lat (id bigserial PRIMARY KEY, client int NOT NULL)" >/dev/null
	pg_psql src latdb -c "CREATE PUBLICATION latpub FOR ALL TABLES" >/dev/null
	local tool
	for tool in $lat_tools; do
		pg_psql src latdb -c "SELECT pg_create_logical_replication_slot('sl_lat_$tool', 'pgoutput')" >/dev/null
	done
	for tool in $lat_tools; do
		pg_psql dst postgres -c "DROP DATABASE IF EXISTS lat_$tool" >/dev/null
		pg_psql dst postgres -c "CREATE DATABASE lat_$tool" >/dev/null
		pg_dump "$LSRC" | psql -q -X "$(pg_conninfo dst "lat_$tool")" >/dev/null
		pg_psql dst "lat_$tool" >/dev/null <<'SQL'
DROP PUBLICATION IF EXISTS latpub;
ALTER TABLE lat ADD COLUMN arrived timestamptz;
CREATE FUNCTION lat_arrived() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN NEW.arrived := clock_timestamp(); RETURN NEW; END$$;
CREATE TRIGGER lat_arrived BEFORE INSERT ON lat FOR EACH ROW EXECUTE FUNCTION lat_arrived();
ALTER TABLE lat ENABLE ALWAYS TRIGGER lat_arrived;
SQL
	done
	[ "${lat_tools/native/}" = "$lat_tools" ] || pg_psql dst lat_native -c "CREATE SUBSCRIPTION lat_sub CONNECTION '$LSRC' PUBLICATION latpub WITH (create_slot = false, copy_data = false, slot_name = 'sl_lat_native', enabled = false)" >/dev/null
	cat >"$W/lat.sql" <<'SQL'
\set aid random(1, 100000)
\set bid 1
\set tid random(1, 10)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
INSERT INTO lat (client) VALUES (:client_id);
COMMIT;
SQL
}

# lat_wait TOOL: waits (up to 10 minutes) until TOOL's target holds every lat row of the source.
lat_wait() {
	local want have i
	want=$(pg_psql src latdb -c "SELECT count(*) FROM lat")
	for i in $(seq 1 6000); do
		have=$(pg_psql dst "lat_$1" -c "SELECT count(*) FROM lat")
		[ "$have" = "$want" ] && return 0
		if [ "$1" != native ] && ! kill -0 "$LAT_APPLY" 2>/dev/null; then
			tail -n 5 "$W/lat-apply.log" >&2
			echo "bench: sluice apply stopped during the latency run" >&2
			exit 1
		fi
		sleep 0.1
	done
	echo "bench: $1 did not catch up with the source within 10 minutes ($have of $want rows)" >&2
	exit 1
}

# lat_wait_capture N: wait (30 s at most) until the capture just started logs
# that it streams (its N+1th such line): apply must not open a JetStream or S3
# stream before the capture's --create made it.
lat_wait_capture() {
	local i n
	for i in $(seq 1 300); do
		n=$(grep -c '"msg":"streaming from slot' "$W/lat-capture.log" 2>/dev/null || true)
		[ "${n:-0}" -gt "$1" ] && return 0
		kill -0 "$LAT_CAPTURE" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

lat_start() {
	local n0
	n0=$(grep -c '"msg":"streaming from slot' "$W/lat-capture.log" 2>/dev/null || true)
	n0=${n0:-0}
	if [ "$1" = sluice_s3 ]; then
		"$SLUICE" --log-format json capture --source "$LSRC" --store "$S3_URL" --spool "$W/lat-spool" \
			--stream lat --segment-seconds "$s3_seconds" --key "$W/k.key" --slot sl_lat_sluice_s3 \
			--publication latpub --create --allow-no-identity --no-progress 2>>"$W/lat-capture.log" &
		LAT_CAPTURE=$!
		lat_wait_capture "$n0" || { echo "bench: sluice capture did not start (see $W/lat-capture.log)" >&2; exit 1; }
		"$SLUICE" --log-format json apply --store "$S3_URL" --stream lat --trust "$W/k.pub" \
			--target "$(pg_conninfo dst lat_sluice_s3)" 2>>"$W/lat-apply.log" &
		LAT_APPLY=$!
	elif [ "$1" = sluice ]; then
		"$SLUICE" --log-format json capture --source "$LSRC" --store "$W/lat-store" --stream lat \
			--key "$W/k.key" --slot sl_lat_sluice --publication latpub --create --allow-no-identity --no-progress 2>>"$W/lat-capture.log" &
		LAT_CAPTURE=$!
		lat_wait_capture "$n0" || { echo "bench: sluice capture did not start (see $W/lat-capture.log)" >&2; exit 1; }
		"$SLUICE" --log-format json apply --store "$W/lat-store" --stream lat --trust "$W/k.pub" \
			--target "$(pg_conninfo dst lat_sluice)" 2>>"$W/lat-apply.log" &
		LAT_APPLY=$!
	elif [ "$1" = jetstream ]; then
		"$SLUICE" --log-format json capture --source "$LSRC" --store "$(nats_store LAT)" --stream lat \
			--key "$W/k.key" --slot sl_lat_jetstream --publication latpub --create --allow-no-identity --no-progress 2>>"$W/lat-capture.log" &
		LAT_CAPTURE=$!
		lat_wait_capture "$n0" || { echo "bench: sluice capture did not start (see $W/lat-capture.log)" >&2; exit 1; }
		"$SLUICE" --log-format json apply --store "$(nats_store LAT)" --stream lat --trust "$W/k.pub" \
			--target "$(pg_conninfo dst lat_jetstream)" 2>>"$W/lat-apply.log" &
		LAT_APPLY=$!
	else
		pg_psql dst lat_native -c "ALTER SUBSCRIPTION lat_sub ENABLE" >/dev/null
	fi
}

lat_stop() {
	if [ "$1" != native ]; then
		kill -TERM "$LAT_CAPTURE" "$LAT_APPLY"
		wait "$LAT_CAPTURE" || { echo "bench: sluice capture failed (see $W/lat-capture.log)" >&2; exit 1; }
		wait "$LAT_APPLY" || { echo "bench: sluice apply failed (see $W/lat-apply.log)" >&2; exit 1; }
	else
		pg_psql dst lat_native -c "ALTER SUBSCRIPTION lat_sub DISABLE" >/dev/null
	fi
}

# lat_run TOOL RUN: catch up first (the other tool's load), then send one
# probe transaction through (the pipeline is up and streaming), then measure.
lat_run() {
	local tool=$1 run=$2 lo hi tps
	lat_start "$tool"
	lat_wait "$tool"
	pg_psql src latdb -c "INSERT INTO lat (client) VALUES (-1)" >/dev/null
	lat_wait "$tool"
	lo=$(pg_psql src latdb -c "SELECT coalesce(max(id), 0) FROM lat")
	pgbench -n -c 4 -j 2 -R "$lat_rate" -T "$lat_seconds" -f "$W/lat.sql" "$LSRC" >"$W/lat-pgbench.log" 2>&1 ||
		{ cat "$W/lat-pgbench.log" >&2; exit 1; }
	tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$W/lat-pgbench.log")
	hi=$(pg_psql src latdb -c "SELECT max(id) FROM lat")
	lat_wait "$tool"
	lat_stop "$tool"
	pg_psql src latdb -F ' ' -c "SELECT id, extract(epoch FROM pg_xact_commit_timestamp(xmin)) FROM lat WHERE id > $lo AND id <= $hi" >"$W/lat-src-$tool-$run"
	pg_psql dst "lat_$tool" -F ' ' -c "SELECT id, extract(epoch FROM arrived) FROM lat WHERE id > $lo AND id <= $hi" >"$W/lat-dst-$tool-$run"
	python3 - "$W/lat-src-$tool-$run" "$W/lat-dst-$tool-$run" "$tool" "$run" "$tps" >>"$W/latency" <<'PY'
import sys
src = dict(l.split() for l in open(sys.argv[1]))
dst = dict(l.split() for l in open(sys.argv[2]))
assert src.keys() == dst.keys(), "rows missing on the target"
ms = sorted((float(dst[k]) - float(src[k])) * 1000 for k in src)
pct = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]
print("%s %s %d %.2f %.2f %.2f %s" % (sys.argv[3], sys.argv[4], len(ms), pct(0.5), pct(0.99), ms[-1], sys.argv[5]))
PY
	echo "   latency run $run $tool: $(tail -n 1 "$W/latency" | cut -d' ' -f3-) (rows p50 p99 max ms, tps)" >&2
}

bench_latency() { # LAT: sluice and the subscriber; S3LAT: sluice through a directory and through S3
	lat_tools="native sluice"
	[ "$1" = LAT ] && [ "$HAVE_NATS" = 1 ] && lat_tools="native sluice jetstream"
	[ "$1" = S3LAT ] && lat_tools="sluice sluice_s3"
	echo "== $1: pgbench -R $lat_rate for $lat_seconds s per run ($lat_tools)" >&2
	lat_setup
	local i tool order
	for i in $(seq 1 "$runs"); do
		order=$lat_tools
		[ $((i % 2)) -eq 0 ] && order=$(echo "$lat_tools" | awk '{ print $2, $1, $3 }')
		case "$lat_tools" in
		*jetstream*) # JetStream first, between or last, by run
			order=$(echo "$order" | sed 's/ *jetstream//')
			case $((i % 3)) in
			1) order="$order jetstream" ;;
			2) order="jetstream $order" ;;
			0) order="${order% *} jetstream ${order##* }" ;;
			esac
			;;
		esac
		for tool in $order; do
			lat_run "$tool" "$i"
		done
	done
	[ "${lat_tools/native/}" = "$lat_tools" ] ||
		pg_psql dst lat_native -c "ALTER SUBSCRIPTION lat_sub SET (slot_name = NONE)" -c "DROP SUBSCRIPTION lat_sub" >/dev/null
	pg_psql src latdb -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'sl_lat_%'" >/dev/null
}

# ---- capture throughput into JetStream versus a directory ------------------------

# bench_nats_capture: W2's transactions (100 inserts each) left in 2 x runs slots,
# drained alternately by capture into a directory and into JetStream (a new
# sluice stream of one JetStream stream per run: every run publishes from empty).
run_nc() { # store run slot endpos log
	local rc=0
	"$SLUICE" --log-format json capture --source "$SRC" --store "$1" --create --stream "nc$2" \
		--key "$W/k.key" --slot "$3" --publication bench --until-lsn "$4" --no-heartbeat \
		--no-progress 2>"$5" || rc=$?
	echo "$rc" >"$5.rc"
}
bench_nats_capture() {
	[ "$HAVE_NATS" = 1 ] || { echo "bench: NC needs nats-server; skipped" >&2; return 0; }
	local i tool order end
	echo "== NC: preparing the workload" >&2
	pg_psql src postgres -c "DROP PUBLICATION IF EXISTS bench; CREATE PUBLICATION bench FOR ALL TABLES" >/dev/null
	pg_psql src postgres -c "DROP TABLE IF EXISTS nc; CREATE TABLE nc (id bigserial PRIMARY KEY, v text)" >/dev/null
	for i in $(seq 1 "$runs"); do
		for tool in dir jetstream; do
			pg_psql src postgres -c "SELECT pg_create_logical_replication_slot('sl_nc_${tool}_$i', 'pgoutput')" >/dev/null
		done
	done
	echo "INSERT INTO nc (v) SELECT md5(random()::text) FROM generate_series(1, 100);" >"$W/nc.sql"
	pgbench -n -c 1 -t $((10000 / scale)) -f "$W/nc.sql" "$SRC" >"$W/pgbench-nc.log" 2>&1 || { cat "$W/pgbench-nc.log" >&2; exit 1; }
	end=$(pg_psql src postgres -c "SELECT pg_current_wal_lsn()")
	echo "== NC: $((10000 / scale)) transactions, $((1000000 / scale)) inserts; capture" >&2
	for i in $(seq 1 "$runs"); do
		order="dir jetstream"
		[ $((i % 2)) -eq 0 ] && order="jetstream dir"
		for tool in $order; do
			local store="$W/store-nc-$i"
			# subjects nc.>: the latency runs' stream LAT has sluice.>
			[ "$tool" = jetstream ] && store=$(nats_store NC subjects=nc)
			timed "$W/t" run_nc "$store" "$i" "sl_nc_${tool}_$i" "$end" "$W/nc-$tool-$i.log"
			[ "$(cat "$W/nc-$tool-$i.log.rc")" = 0 ] || {
				tail -n 5 "$W/nc-$tool-$i.log" >&2
				echo "bench: capture into $tool failed" >&2
				exit 1
			}
			read -r secs cpu <"$W/t"
			echo "NC $tool $i $secs $cpu" >>"$W/natscap"
			echo "   NC run $i $tool: ${secs} s (${cpu} s CPU)" >&2
			"$SLUICE" verify --store "$store" --stream "nc$i" --trust "$W/k.pub" >/dev/null
		done
	done
	pg_psql src postgres -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'sl_nc_%'" >/dev/null
	rm -rf "$W"/store-nc-*
}

for wl in ${workloads//,/ }; do
	if [ "$wl" = LAT ] || [ "$wl" = S3LAT ]; then
		bench_latency "$wl"
	elif [ "$wl" = NC ]; then
		bench_nats_capture
	else
		bench_workload "$wl"
	fi
done

python3 - "$json" "$W/results" "$W/sizes" "$W/latency" "$quick" "$lat_rate" "$lat_seconds" "$s3_seconds" "$W/natscap" "$scale" <<'PY'
import json, os, platform, statistics, subprocess, sys
out, quick = sys.argv[1], sys.argv[5] == "1"
rows = [l.split() for l in open(sys.argv[2])]
sizes = {l.split()[0]: [int(x) for x in l.split()[1:]] for l in open(sys.argv[3])}
lats = [l.split() for l in open(sys.argv[4])]
med = statistics.median

def cpuinfo():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()

def pgversion():
    try:
        return subprocess.run(["pg_config", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""

summary = {"quick": quick, "runs": None,
           "machine": {"cpus": os.cpu_count(), "cpu": cpuinfo(), "platform": platform.platform(),
                       "postgresql": pgversion()},
           "capture": {}, "apply": {}, "cost": {}, "latency": {}}

def series(wl, tool, field):
    return [float(r[field]) for r in rows if r[0] == wl and r[1] == tool]

wls = sorted({r[0] for r in rows if r[1] == "recv"})
s3wls = sorted({r[0] for r in rows if r[1] == "s3"})
basewls = sorted({r[0] for r in rows if r[1] == "base"})
awls = [wl for wl in wls if series(wl, "apply_native", 3)]
if wls:
    print("Capture: draining the same slot contents (median of %d runs; ratio < 1: sluice faster)"
          % len(series(wls[0], "sluice", 3)))
    print("%-4s %10s %12s %12s %8s" % ("", "changes", "recvlogical", "sluice", "ratio"))
for wl in wls:
    rv, sl = series(wl, "recv", 3), series(wl, "sluice", 3)
    ratio = med(sl) / med(rv)
    summary["runs"] = len(sl)
    summary["capture"][wl] = {"pg_recvlogical_s": rv, "sluice_s": sl, "median_pg_recvlogical_s": med(rv),
                              "median_sluice_s": med(sl), "ratio": ratio,
                              "pg_recvlogical_cpu_s": series(wl, "recv", 4),
                              "sluice_cpu_s": series(wl, "sluice", 4)}
    print("%-4s %10d %11.2fs %11.2fs %7.2fx" % (wl, sizes[wl][0], med(rv), med(sl), ratio))
if basewls:
    print()
    print("Capture into a directory: this build against --baseline-sluice (median; ratio > 1: this build slower)")
    print("%-4s %12s %12s %8s" % ("", "baseline", "this build", "ratio"))
for wl in basewls:
    bs, sl = series(wl, "base", 3), series(wl, "sluice", 3)
    summary.setdefault("capture_baseline", {})[wl] = {"baseline_s": bs, "sluice_s": sl, "ratio": med(sl) / med(bs)}
    print("%-4s %11.2fs %11.2fs %7.2fx" % (wl, med(bs), med(sl), med(sl) / med(bs)))
if s3wls:
    print()
    print("Capture into S3 (local s3rver, --ack remote) against a directory (median; ratio > 1: S3 slower)")
    print("%-6s %12s %12s %8s %14s" % ("", "directory", "S3", "ratio", "CPU dir / S3"))
for wl in s3wls:
    d, t = series(wl, "sluice", 3), series(wl, "s3", 3)
    summary.setdefault("capture_s3", {})[wl] = {"directory_s": d, "s3_s": t, "ratio": med(t) / med(d),
                                                "directory_cpu_s": series(wl, "sluice", 4), "s3_cpu_s": series(wl, "s3", 4)}
    print("%-6s %11.2fs %11.2fs %7.2fx %6.2f / %5.2f" % (wl, med(d), med(t), med(t) / med(d),
          med(series(wl, "sluice", 4)), med(series(wl, "s3", 4))))
if awls:
    print()
    print("Apply: catching up the same changes (median; ratio < 1: sluice faster)")
    print("%-4s %12s %12s %8s   %s" % ("", "subscriber", "sluice", "ratio", "target server CPU s: subscriber / sluice"))
for wl in awls:
    nv, sl = series(wl, "apply_native", 3), series(wl, "apply_sluice", 3)
    ratio = med(sl) / med(nv)
    summary["apply"][wl] = {"subscriber_s": nv, "sluice_s": sl, "median_subscriber_s": med(nv),
                            "median_sluice_s": med(sl), "ratio": ratio,
                            "target_server_cpu_subscriber_s": series(wl, "apply_native", 5),
                            "target_server_cpu_sluice_s": series(wl, "apply_sluice", 5),
                            "sluice_apply_cpu_s": series(wl, "apply_sluice", 4)}
    print("%-4s %11.2fs %11.2fs %7.2fx   %.2f / %.2f" % (wl, med(nv), med(sl), ratio,
          med(series(wl, "apply_native", 5)), med(series(wl, "apply_sluice", 5))))
if wls:
    print()
    print("Stream cost (CPU: median seconds per million row changes)")
    print("%-4s %10s %12s %9s %7s %9s %9s %9s %11s %11s" % ("", "changes", "store bytes", "B/change", "zstd",
          "capture", "recvlog.", "apply", "srv sluice", "srv native"))
for wl in wls:
    changes, messages, store, raw, payload = sizes[wl]
    per_m = lambda s: med(s) * 1e6 / changes if changes and s else 0.0
    c = {"changes": changes, "pgoutput_messages": messages, "store_bytes": store,
         "bytes_per_change": store / changes if changes else 0.0, "record_bytes": raw,
         "compressed_bytes": payload, "compression_ratio": raw / payload if payload else 0.0,
         "capture_cpu_s_per_m": per_m(series(wl, "sluice", 4)),
         "pg_recvlogical_cpu_s_per_m": per_m(series(wl, "recv", 4)),
         "apply_cpu_s_per_m": per_m(series(wl, "apply_sluice", 4)),
         "target_server_cpu_s_per_m_sluice": per_m(series(wl, "apply_sluice", 5)),
         "target_server_cpu_s_per_m_subscriber": per_m(series(wl, "apply_native", 5))}
    summary["cost"][wl] = c
    print("%-4s %10d %12d %9.1f %6.1fx %9.2f %9.2f %9.2f %11.2f %11.2f" % (
        wl, changes, store, c["bytes_per_change"], c["compression_ratio"], c["capture_cpu_s_per_m"],
        c["pg_recvlogical_cpu_s_per_m"], c["apply_cpu_s_per_m"], c["target_server_cpu_s_per_m_sluice"],
        c["target_server_cpu_s_per_m_subscriber"]))
if lats:
    print()
    print("End-to-end latency, source commit to row on the target, pgbench -R %s for %s s per run"
          % (sys.argv[6], sys.argv[7]))
    print("%-24s %5s %9s %9s %9s %9s %9s" % ("", "runs", "rows", "p50 ms", "p99 ms", "max ms", "tps"))
for tool, name in (("sluice", "sluice capture + apply"), ("jetstream", "sluice via JetStream"),
                   ("native", "logical replication"),
                   ("sluice_s3", "sluice through S3 (%s s)" % sys.argv[8])):
    t = [l for l in lats if l[0] == tool]
    if not t:
        continue
    d = {"runs": [{"rows": int(l[2]), "p50_ms": float(l[3]), "p99_ms": float(l[4]), "max_ms": float(l[5]),
                   "tps": float(l[6])} for l in t]}
    for k in ("p50_ms", "p99_ms", "max_ms", "tps"):
        d["median_" + k] = med(r[k] for r in d["runs"])
    summary["latency"][tool] = d
    print("%-24s %5d %9d %9.1f %9.1f %9.1f %9.0f" % (name, len(t), sum(r["rows"] for r in d["runs"]),
          d["median_p50_ms"], d["median_p99_ms"], d["median_max_ms"], d["median_tps"]))
nc = [l.split() for l in open(sys.argv[9])]
if nc:
    inserts = 1000000 // int(sys.argv[10])
    print()
    print("Capture into NATS JetStream vs a directory: %d transactions of 100 inserts"
          " (median of %d runs)" % (inserts // 100, len([l for l in nc if l[1] == "dir"])))
    print("%-24s %9s %9s %12s" % ("", "wall s", "CPU s", "inserts/s"))
    summary["nats_capture"] = {}
    for tool, name in (("dir", "capture -> directory"), ("jetstream", "capture -> JetStream")):
        w = [float(l[3]) for l in nc if l[1] == tool]
        c = [float(l[4]) for l in nc if l[1] == tool]
        summary["nats_capture"][tool] = {"wall_s": w, "cpu_s": c, "median_wall_s": med(w),
                                         "median_cpu_s": med(c), "inserts": inserts}
        print("%-24s %9.2f %9.2f %12.0f" % (name, med(w), med(c), inserts / med(w)))
json.dump(summary, open(out, "w"), indent=1)
print("\nsummary written to %s" % out)
PY
