#!/usr/bin/env bash
# Grouped apply must not change the versions last-writer-wins compares (issue
# 15, conflicts.md): on a target prepared by `sluice prepare`, a row's version
# (sluice.version(xmin): commit time and node) is the commit time of the
# source transaction that last wrote it, so apply may not put several source
# transactions into one target transaction there (they would all get one
# commit time: the group's).
# The source (track_commit_timestamp on, node_s) commits ~400 small
# transactions, each at a distinct, visible time (pg_sleep(0.01) between
# them): inserts, updates of rows written earlier (one row 100 times), updates
# of several rows at once, updates leaving an out-of-line TOAST value
# unchanged, deletes. All of them are in the store before apply starts, and
# each target applies them in one run, so a grouping apply would group them.
# Targets (databases of one server, each a copy of the source's rows from
# before the stream, prepared as node_t, with older local changes: a row the
# stream inserts exists, two rows it updates were deleted):
#   ts_def   --strategy timestamp, default grouping options
#   ts_big   --strategy timestamp --group-size 1000 --group-ms 60000
#   ts_one   --strategy timestamp --group-size 1
#   rep_def  replace (prepared target), default grouping options
#   rep_big  replace (prepared target) --group-size 1000 --group-ms 60000
#   rep_one  replace (prepared target) --group-size 1
# Checked on each: apply exits 0; the target equals the source; every row
# the stream wrote has the version (commit time, node_s) of the source
# transaction that last wrote it (the source's pg_xact_commit_timestamp of
# the row's xmin); every key the stream deleted last has a tombstone at the
# deleting transaction's commit time; every conflict log row carries the
# commit time of its own transaction (from the stream), and the conflict log
# and the counters equal those of the --group-size 1 run of the same
# strategy.
# Control (shows the check has teeth): ctl, an unprepared copy where replace
# groups, applied with --group-size 1000 --group-ms 60000: there the rows of
# many source transactions share target transactions and commit times.
# Usage: test_apply_group_version.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks "group version"
export PATH=$PGBIN:$PATH
CMP=(python3 "$HERE/compare_dbs.py")
BIG=(--group-size 1000 --group-ms 60000)

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
SRC=$(pg_conninfo src)
dst() { pg_conninfo dst "$1"; }
q() { # q SERVER DB SQL
	local s=$1 d=$2
	shift 2
	pg_psql "$s" "$d" -c "$*"
}
# us: a timestamptz expression as microseconds since the epoch (exact)
us() { echo "(extract(epoch FROM $1) * 1000000)::bigint"; }

pg_psql src postgres >/dev/null <<'SQL' || die "source schema"
CREATE TABLE v (id int PRIMARY KEY, n int NOT NULL, note text);
-- out-of-line TOAST: updates of rev send body as unchanged
CREATE TABLE big (id int PRIMARY KEY, rev int NOT NULL, body text);
ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL;
-- rows from before the stream (ids 1001..1020)
INSERT INTO v SELECT g, 0, 'before' FROM generate_series(1001, 1020) g;
INSERT INTO big SELECT g, 0, (SELECT string_agg(md5(g || '/' || i), '') FROM generate_series(1, 100) i)
  FROM generate_series(1, 10) g;
SQL
pg_dump -d "$SRC" >"$W/pre.sql" || die "pg_dump"
PREPARED="ts_def ts_big ts_one rep_def rep_big rep_one"
for d in $PREPARED ctl; do
	q dst postgres "CREATE DATABASE $d" >/dev/null || die "create database $d"
	pg_psql dst "$d" -f "$W/pre.sql" >/dev/null || die "restore into $d"
done
for d in $PREPARED; do
	"$SLUICE" prepare --target "$(dst "$d")" --node node_t 2>"$W/prepare_$d.log" || {
		cat "$W/prepare_$d.log" >&2
		die "prepare $d"
	}
	# older local changes: a row the stream inserts exists, rows it updates are gone
	q dst "$d" "INSERT INTO v VALUES (5, -1, 'local'); DELETE FROM v WHERE id IN (1001, 1002)" >/dev/null ||
		die "local changes on $d"
done
CAP=("$SLUICE" capture --source "$SRC" --store "$W/store" --stream vs --key "$W/k.key" --node node_s
	--no-progress --exit-when-caught-up)
"${CAP[@]}" --create 2>"$W/cap0.log" || {
	cat "$W/cap0.log" >&2
	die "capture --create"
}
sleep 0.1
START=$(q src postgres "SELECT $(us 'clock_timestamp()')")

# The workload: one statement per source transaction, 10 ms apart.
python3 - >"$W/workload.sql" <<'PY'
stmts = []
for i in range(1, 201):
    stmts.append("INSERT INTO v VALUES (%d, 0, 'ins %d')" % (i, i))
    if i % 3 == 0:
        stmts.append("UPDATE v SET n = n + 1, note = 'upd %d' WHERE id = %d" % (i, i // 2))
    if i % 4 == 0:
        stmts.append("UPDATE v SET n = n + 1 WHERE id = 7")  # one row rewritten 50 times...
    if i % 10 == 0:  # several rows in one transaction
        stmts.append("UPDATE v SET n = n + 10 WHERE id BETWEEN %d AND %d" % (i - 8, i - 4))
    if i % 7 == 0:  # TOAST left unchanged
        stmts.append("UPDATE big SET rev = rev + 1 WHERE id = %d" % (i % 10 + 1))
    if i % 25 == 0:
        stmts.append("DELETE FROM v WHERE id = %d" % (i - 20))
    if i % 50 == 0:  # updates of rows from before the stream (two were deleted on the targets)
        stmts.append("UPDATE v SET n = n + 1 WHERE id IN (1001, 1002, %d)" % (1000 + i // 50 + 2))
for _ in range(50):
    stmts.append("UPDATE v SET n = n + 1 WHERE id = 7")  # ...and 100 times in all
stmts.append("DELETE FROM v WHERE id = 150")
stmts.append("DELETE FROM big WHERE id = 3")
for s in stmts:
    print(s + ";")
    print("SELECT pg_sleep(0.01);")
PY
pg_psql src postgres -f "$W/workload.sql" >/dev/null || die "workload"
"${CAP[@]}" 2>"$W/cap1.log" || {
	cat "$W/cap1.log" >&2
	die "capture"
}
"$SLUICE" inspect --store "$W/store" --stream vs --trust "$W/k.pub" --records --json >"$W/records.json" ||
	die "inspect"
# From the stream: per transaction its commit time; per key deleted last, the
# deleting transaction's commit time (rel|key|µs).
python3 - "$W/records.json" "$W" <<'PY' || die "reading the stream"
import json, sys
begin = {}
last = {}
ntx = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["type"] == "begin":
        begin[r["txseq"]] = r["commit_time_us"]
        ntx += 1
        assert r["origin"] == "node_s", r
    elif r["type"] in ("insert", "update", "delete"):
        rel = r["relation"]
        row = r.get("new") or r.get("old")
        key = row["id"]
        if r["type"] == "update" and r.get("old"):
            last[(rel, r["old"]["id"])] = ("gone", r["txseq"])
        last[(rel, key)] = ("delete" if r["type"] == "delete" else "write", r["txseq"])
with open(sys.argv[2] + "/txtime", "w") as f:
    for t, c in sorted(begin.items()):
        f.write("%d|%d\n" % (t, c))
with open(sys.argv[2] + "/deleted", "w") as f:
    for (rel, key), (what, t) in sorted(last.items()):
        if what == "delete":
            f.write("%s|%s|%d\n" % (rel, key, begin[t]))
print("stream: %d transactions" % ntx)
PY
NTX=$(wc -l <"$W/txtime")
# Source versions of the rows the stream wrote: table|id|µs.
q src postgres "SELECT 'public.v|' || id || '|' || $(us 'pg_xact_commit_timestamp(xmin)') FROM v
  WHERE pg_xact_commit_timestamp(xmin) > to_timestamp($START / 1e6)
  UNION ALL SELECT 'public.big|' || id || '|' || $(us 'pg_xact_commit_timestamp(xmin)') FROM big
  WHERE pg_xact_commit_timestamp(xmin) > to_timestamp($START / 1e6) ORDER BY 1" >"$W/src_versions" ||
	die "source versions"
nrows=$(wc -l <"$W/src_versions")
ndistinct=$(cut -d'|' -f3 "$W/src_versions" | sort -u | wc -l)
[ "$ndistinct" -ge 100 ]
check "set-up: $nrows rows written by $NTX source transactions carry $ndistinct distinct commit times (want >= 100)"
ndel=$(wc -l <"$W/deleted")
[ "$ndel" -ge 8 ]
check "set-up: the stream deletes $ndel keys last (want >= 8)"
say "stream of $NTX transactions captured"

# apply_to DB LOG ARGS...
apply_to() {
	local d=$1 log=$2
	shift 2
	"$SLUICE" --log-format text apply --store "$W/store" --stream vs --trust "$W/k.pub" \
		--target "$(dst "$d")" --exit-when-caught-up "$@" 2>"$log"
}
# counters LOG: apply's exit summary without the retries.
counters() {
	grep -o 'apply: [0-9]* transactions.*' "$1" | tail -1 | sed -e 's/; retries: [^;]*;/;/'
}
# conflict_log DB: the conflict log, without what differs between targets
# (ids, times of logging, the local versions of each target's own writes).
conflict_log() {
	q dst "$1" "SELECT stream, txseq, relation, key, kind, resolution, $(us remote_time), remote_node
	  FROM sluice.conflicts ORDER BY txseq, relation, key::text, kind"
}

for d in ts_def ts_big ts_one rep_def rep_big rep_one; do
	case $d in
	ts_*) args=(--strategy timestamp) ;;
	rep_*) args=(--strategy replace) ;;
	esac
	case $d in
	*_big) args+=("${BIG[@]}") ;;
	*_one) args+=(--group-size 1) ;;
	esac
	apply_to "$d" "$W/apply_$d.log" "${args[@]}"
	rc=$?
	[ "$rc" = 0 ]
	check "$d (${args[*]}): apply exits 0 (status $rc)"
	[ "$rc" = 0 ] || tail -n 5 "$W/apply_$d.log" >&2
	"${CMP[@]}" compare "$SRC" "$(dst "$d")" --quiet
	check "$d: the target equals the source"
	# every row the stream wrote: its version is its own source transaction's
	q dst "$d" "SELECT 'public.v|' || id || '|' || coalesce($(us '(sluice.version(xmin)).at')::text, 'none')
	  || '|' || coalesce((sluice.version(xmin)).node, 'none') FROM v
	  UNION ALL SELECT 'public.big|' || id || '|' || coalesce($(us '(sluice.version(xmin)).at')::text, 'none')
	  || '|' || coalesce((sluice.version(xmin)).node, 'none') FROM big ORDER BY 1" >"$W/versions_$d"
	python3 - "$W/src_versions" "$W/versions_$d" <<'PY' >"$W/versions_$d.diff"
import sys
want = {}
for l in open(sys.argv[1]):
    rel, key, at = l.strip().split("|")
    want[(rel, key)] = (at, "node_s")
got = {}
for l in open(sys.argv[2]):
    rel, key, at, node = l.strip().split("|")
    got[(rel, key)] = (at, node)
bad = [(k, w, got.get(k)) for k, w in sorted(want.items()) if got.get(k) != w]
for k, w, g in bad[:10]:
    print("%s id %s: version %s, want %s (its source transaction's commit time)" % (k[0], k[1], g, w))
print("%d of %d rows with a wrong version" % (len(bad), len(want)))
sys.exit(1 if bad else 0)
PY
	check "$d: every row the stream wrote has its own source transaction's commit time and node_s as version ($(tail -n 1 "$W/versions_$d.diff"))"
	head -n 10 "$W/versions_$d.diff" | grep -v 'rows with a wrong version' >&2
	# every key the stream deleted last: the tombstone has the deleting transaction's time
	q dst "$d" "SELECT t.rel || '|' || (t.key->>0) || '|' || $(us v.at) FROM sluice.tombstones t,
	  sluice.version(t.xmin) v WHERE v.node = 'node_s' ORDER BY 1" >"$W/tombs_$d"
	x=$(sort "$W/deleted" | comm -23 - <(sort "$W/tombs_$d") | wc -l)
	[ "$x" = 0 ]
	check "$d: every key the stream deleted has a tombstone at the deleting transaction's commit time ($x missing or at another time)"
	# every conflict logged carries its own transaction's commit time
	x=$(q dst "$d" "SELECT txseq || '|' || $(us remote_time) FROM sluice.conflicts WHERE remote_node = 'node_s'
	  ORDER BY 1" | sort -u | comm -23 - <(sort "$W/txtime") | wc -l)
	n=$(q dst "$d" "SELECT count(*) FROM sluice.conflicts")
	[ "$x" = 0 ] && [ "$n" -ge 3 ]
	check "$d: $n conflicts logged (want >= 3), those of $x transactions with a time other than their transaction's"
done
for st in ts rep; do
	for g in def big; do
		a=$(counters "$W/apply_${st}_$g.log")
		b=$(counters "$W/apply_${st}_one.log")
		[ -n "$a" ] && [ "$a" = "$b" ]
		check "${st}_$g: the same counters as ${st}_one ('$a'; '$b')"
		[ "$(conflict_log "${st}_$g")" = "$(conflict_log "${st}_one")" ]
		check "${st}_$g: the same conflict log as ${st}_one"
	done
done

# Control: where replace groups, the rows of many source transactions share
# one target transaction and its commit time.
apply_to ctl "$W/apply_ctl.log" "${BIG[@]}"
check "ctl (replace, unprepared, large groups): apply exits 0 (status $?)"
"${CMP[@]}" compare "$SRC" "$(dst ctl)" --quiet
check "ctl: the target equals the source"
x=$(q dst ctl "SELECT count(DISTINCT xmin::text) FROM v WHERE id <= 200")
y=$(q src postgres "SELECT count(DISTINCT xmin::text) FROM v WHERE id <= 200")
[ "$x" -lt "$y" ]
check "control: unprepared, grouped, the rows with ids <= 200 are in $x target transactions, on the source in $y (want fewer: a group's time would show)"

say "done"
if [ "$FAILS" -ne 0 ]; then
	echo "test_apply_group_version: $FAILS checks FAILED" >&2
	exit 1
fi
echo "test_apply_group_version: passed ($((SECONDS - T0)) s)"
