#!/usr/bin/env bash
# Conflict resolution of `sluice apply` (docs: conflicts.md), case by case, for
# every strategy. A source node s (node_s) writes one remote change per case;
# target databases (node_t, one per strategy) get local writes committed
# before ("older") or after ("newer") the remote changes, so that commit
# timestamps order them. For each case: the final row on the target, the
# counter in apply's final log line, the row in sluice.conflicts (kind,
# resolution, key, stream, txseq, remote and local version) and, for
# timestamp, the tombstone and its version. Also: --dry-run reports the same
# counts and commits nothing; equal commit times are broken by the node name
# (the greater wins) on every node; sluice.remote_wins directly; timestamp
# refuses without track_commit_timestamp and on an unprepared node.
# Usage: test_apply_conflicts.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_value_checks
die() { echo "FATAL: $*" >&2; exit 1; }
q() { local n=$1 d=$2; shift 2; pg_psql "$n" "$d" -c "$*"; }
# stat LOG WORD: "N WORD" from the final line (inserts, updates, deletes)
nstat() { grep 'conflicts:' "$1" | tail -1 | sed -n "s/.* \([0-9]*\) $2,.*/\1/p"; }

"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
pg_start src || die "start src"
pg_start tgt || die "start tgt"
SRC=$(pg_conninfo src)
DBS="d_timestamp d_replace d_append"
TABLE="CREATE TABLE c (k int PRIMARY KEY, v text, big text);
ALTER TABLE c ALTER COLUMN big SET STORAGE EXTERNAL;"

# ---- set-up: rows that exist before the stream starts ---------------------
# Source: rows 6..15 (9 with a TOASTed value). Target: rows the cases need.
pg_psql src postgres <<SQL || die "source set-up"
$TABLE
INSERT INTO c SELECT g, 'base' FROM generate_series(6, 15) g;
UPDATE c SET big = repeat('toasted ', 4000) WHERE k = 9;
SQL
"$SLUICE" prepare --target "$SRC" --node node_s 2>"$W/prep_s.log" || die "prepare src"
for d in $DBS; do
	q tgt postgres "CREATE DATABASE $d" >/dev/null
	pg_psql tgt $d <<SQL || die "target set-up $d"
$TABLE
INSERT INTO c SELECT g, 'base' FROM unnest(ARRAY[4, 5, 6, 7, 10, 11, 12, 13, 15]) g;
SQL
	"$SLUICE" prepare --target "$(pg_conninfo tgt $d)" --node node_t 2>"$W/prep_$d.log" ||
		die "prepare $d"
done
# One stream per strategy (replication origins, sluice_<stream>, are per
# cluster): the same source transactions, under the same node name.
capture_s() { # capture_s STRATEGY [ARGS]
	local st=$1
	shift
	"$SLUICE" capture --source "$SRC" --store "$W/store" --stream s_$st --key "$W/k.key" \
		--node node_s --exit-when-caught-up --no-progress "$@" 2>>"$W/cap_$st.log"
}
for st in timestamp replace append; do
	capture_s $st --create || die "capture --create $st"
done

# ---- the cases, ordered in time ---------------------------------------------
#  k  case                               target older   remote         target newer
#  1  insert, row absent                                INSERT
#  2  insert, row present older          INSERT         INSERT
#  3  insert, row present newer                         INSERT         INSERT
#  4  insert, tombstone newer                           INSERT         DELETE
#  5  insert, tombstone older            DELETE         INSERT
#  6  update, row present older          UPDATE         UPDATE
#  7  update, row present newer                         UPDATE         UPDATE
#  8  update, row absent, full row                      UPDATE
#  9  update, row absent, TOAST unchanged               UPDATE (v only)
# 10  update, tombstone newer                           UPDATE         DELETE
# 11  update, tombstone older            DELETE         UPDATE
# 12  delete, row present older          UPDATE         DELETE
# 13  delete, row present newer                         DELETE         UPDATE
# 14  delete, row absent                                DELETE
# 15  delete, row present (untouched)                   DELETE
# 16-18 three inserts in one transaction; 17 present    INSERT x3
#       on the target (older)         INSERT
for d in $DBS; do
	pg_psql tgt $d <<'SQL' || die "older local writes"
INSERT INTO c VALUES (2, 'local');
DELETE FROM c WHERE k = 5;
UPDATE c SET v = 'local' WHERE k = 6;
DELETE FROM c WHERE k = 11;
UPDATE c SET v = 'local' WHERE k = 12;
INSERT INTO c VALUES (17, 'local');
SQL
done
sleep 0.2
pg_psql src postgres <<'SQL' || die "remote writes"
INSERT INTO c VALUES (1, 'remote');
INSERT INTO c VALUES (2, 'remote');
INSERT INTO c VALUES (3, 'remote');
INSERT INTO c VALUES (4, 'remote');
INSERT INTO c VALUES (5, 'remote');
UPDATE c SET v = 'remote' WHERE k = 6;
UPDATE c SET v = 'remote' WHERE k = 7;
UPDATE c SET v = 'remote' WHERE k = 8;
UPDATE c SET v = 'remote' WHERE k = 9;
UPDATE c SET v = 'remote' WHERE k = 10;
UPDATE c SET v = 'remote' WHERE k = 11;
DELETE FROM c WHERE k = 12;
DELETE FROM c WHERE k = 13;
DELETE FROM c WHERE k = 14;
DELETE FROM c WHERE k = 15;
INSERT INTO c VALUES (16, 'remote'), (17, 'remote'), (18, 'remote');
SQL
sleep 0.2
for d in $DBS; do
	pg_psql tgt $d <<'SQL' || die "newer local writes"
INSERT INTO c VALUES (3, 'local');
DELETE FROM c WHERE k = 4;
UPDATE c SET v = 'local' WHERE k = 7;
DELETE FROM c WHERE k = 10;
UPDATE c SET v = 'local' WHERE k = 13;
SQL
done
for st in timestamp replace append; do
	capture_s $st || die "capture $st"
	"$SLUICE" inspect --store "$W/store" --stream s_$st --trust "$W/k.pub" --records --json \
		>"$W/records_$st.json" || die "inspect"
	# Key -> (txseq, commit time, node) of its remote change, from the stream.
	python3 - "$W/records_$st.json" >"$W/remote_$st.sql" <<'PY' || die "stream map"
import json, sys
begin = None
rows = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["type"] == "begin":
        begin = r
    elif r["type"] in ("insert", "update", "delete") and r["relation"] == "public.c":
        k = (r.get("new") or r.get("old"))["k"]
        rows.append((int(k), r["txseq"], begin["commit_time_us"], begin["origin"], r["type"][0].upper()))
assert [r[0] for r in rows] == list(range(1, 19)), rows
print("CREATE SCHEMA chk;")
print("CREATE TABLE chk.remote (k int PRIMARY KEY, txseq bigint, at timestamptz, node text, op text);")
for k, txseq, us, node, op in rows:
    print(f"INSERT INTO chk.remote VALUES ({k}, {txseq}, to_timestamp(0) + interval '{us} microseconds', '{node}', '{op}');")
PY
done
python3 - "$W/records_timestamp.json" <<'PY' || bad "update of k=9 should carry big as unchanged TOAST"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["type"] == "update" and r["new"]["k"] == "9":
        assert r["new"]["big"] == {"unchanged_toast": True}, r
PY

# Pre-apply versions of the target rows and tombstones (the "local" versions).
for st in timestamp replace append; do
	d=d_$st
	pg_psql tgt $d -f "$W/remote_$st.sql" || die "chk.remote"
	pg_psql tgt $d <<'SQL' || die "pre-apply snapshot"
CREATE TABLE chk.pre_row AS SELECT c.k, v.at, v.node FROM c, sluice.version(c.xmin) v;
CREATE TABLE chk.pre_tomb AS SELECT (t.key->>0)::int AS k, v.at, v.node
  FROM sluice.tombstones t, sluice.version(t.xmin) v WHERE t.rel = 'public.c';
SQL
done
# Sanity of the set-up: the ordering the cases rely on.
got=$(pg_psql tgt d_timestamp -c "SELECT string_agg(k::text, ',' ORDER BY k) FROM chk.pre_row p
  WHERE p.at < (SELECT min(at) FROM chk.remote) AND p.node = 'node_t'")
check "set-up: target rows older than every remote change" "$got" "2,6,12,15,17"
got=$(pg_psql tgt d_timestamp -c "SELECT string_agg(k::text, ',' ORDER BY k) FROM chk.pre_row p
  WHERE p.at > (SELECT max(at) FROM chk.remote)")
check "set-up: target rows newer than every remote change" "$got" "3,7,13"
got=$(pg_psql tgt d_timestamp -c "SELECT string_agg(k || (CASE WHEN at > (SELECT max(at) FROM chk.remote)
  THEN '>' WHEN at < (SELECT min(at) FROM chk.remote) THEN '<' ELSE '?' END), ',' ORDER BY k) FROM chk.pre_tomb")
check "set-up: tombstones (< older, > newer than the remote changes)" "$got" "4>,5<,10>,11<"

# ---- expected outcomes -------------------------------------------------------
# k  final  conflict-kind  resolution(* any)  tombstone(timestamp: - none,
# remote = at the remote change's version, local = the local delete's version)
# shellcheck disable=SC2034 # read through ${!exp_var}
EXPECT_timestamp="
1 remote - - -
2 remote insert_exists remote -
3 local insert_exists kept_local -
4 absent insert_deleted skipped local
5 remote - - local
6 remote - - -
7 local update_newer_local kept_local -
8 remote update_missing inserted -
9 absent update_missing skipped -
10 absent update_deleted skipped local
11 remote update_missing inserted local
12 absent - - remote
13 local delete_newer_local kept_local remote
14 absent delete_missing tombstone remote
15 absent - - remote
16 remote - - -
17 remote insert_exists remote -
18 remote - - -"
# replace: remote always wins; an update of a missing row inserts the full row.
# shellcheck disable=SC2034
EXPECT_replace="
1 remote - - .
2 remote insert_exists remote .
3 remote insert_exists remote .
4 remote - - .
5 remote - - .
6 remote - - .
7 remote - - .
8 remote update_missing inserted .
9 absent update_missing skipped .
10 remote update_missing inserted .
11 remote update_missing inserted .
12 absent - - .
13 absent - - .
14 absent delete_missing * .
15 absent - - .
16 remote - - .
17 remote insert_exists remote .
18 remote - - ."
# append: never overwrite or delete; only add what is missing (a row whose
# update lacks a TOASTed value cannot be added). Updates and deletes of rows
# that are missing are still conflicts (update_missing, delete_missing).
# shellcheck disable=SC2034
EXPECT_append="
1 remote - - .
2 local insert_exists kept_local .
3 local insert_exists kept_local .
4 remote - - .
5 remote - - .
6 local - - .
7 local - - .
8 remote update_missing inserted .
9 absent update_missing * .
10 remote update_missing inserted .
11 remote update_missing inserted .
12 local - - .
13 local - - .
14 absent delete_missing * .
15 base - - .
16 remote - - .
17 local insert_exists kept_local .
18 remote - - ."
KINDS="insert_exists insert_deleted update_newer_local update_missing update_deleted delete_newer_local delete_missing"

# snapshot DB: everything apply could change, with row versions (xmin)
snapshot() {
	pg_psql tgt "$1" -c "SELECT (SELECT string_agg(k || ':' || coalesce(v, '') || ':' || xmin, ',' ORDER BY k) FROM c),
	  (SELECT string_agg(key::text || xmin, ',' ORDER BY key) FROM sluice.tombstones),
	  (SELECT count(*) FROM sluice.conflicts),
	  (SELECT coalesce(max(remote_lsn::text), 'none') FROM pg_replication_origin_status
	    WHERE external_id = 'sluice_s_$2@$1')"
}

run_apply() { # run_apply DB STRATEGY LOG [ARGS]
	local d=$1 st=$2 log=$3
	shift 3
	"$SLUICE" --log-format text apply --store "$W/store" --stream s_$st --trust "$W/k.pub" \
		--target "$(pg_conninfo tgt "$d")" --strategy "$st" --exit-when-caught-up "$@" 2>"$log" \
		>"$log.out"
}

for st in timestamp replace append; do
	d=d_$st
	exp_var=EXPECT_$st
	expect=${!exp_var}
	# --dry-run first: the counts, and nothing committed
	before=$(snapshot $d $st)
	run_apply $d $st "$W/dry_$st.log" --dry-run
	check "$st dry run exit status" "$?" 0
	grep -q 'dry run (nothing committed)' "$W/dry_$st.log" ||
		bad "$st dry run: final line does not say nothing was committed: $(tail -1 "$W/dry_$st.log")"
	check "$st dry run commits nothing (rows, tombstones, conflict log, origin)" "$(snapshot $d $st)" "$before"

	run_apply $d $st "$W/apply_$st.log"
	rc=$?
	check "$st apply exit status" "$rc" 0
	[ "$rc" -eq 0 ] || cat "$W/apply_$st.log" >&2
	for w in inserts updates deletes; do
		check "$st dry run reports the same number of $w" "$(nstat "$W/dry_$st.log" $w)" \
			"$(nstat "$W/apply_$st.log" $w)"
	done
	for kind in $KINDS; do
		want=$(awk -v k="$kind" '$3 == k' <<<"$expect" | wc -l)
		check "$st counter $kind" "$(counter "$W/apply_$st.log" "$kind")" "$want"
		check "$st dry-run counter $kind" "$(counter "$W/dry_$st.log" "$kind")" "$want"
	done
	check "$st conflict log rows" "$(pg_psql tgt $d -c "SELECT count(*) FROM sluice.conflicts")" \
		"$(awk '$3 != "-"' <<<"$expect" | grep -c .)"
	while read -r k final kind res tomb; do
		[ -n "$k" ] || continue
		got=$(pg_psql tgt $d -c "SELECT coalesce((SELECT v FROM c WHERE k = $k), 'absent')")
		check "$st k=$k final row" "$got" "$final"
		if [ "$kind" == "-" ]; then
			check "$st k=$k no conflict logged" \
				"$(pg_psql tgt $d -c "SELECT count(*) FROM sluice.conflicts WHERE key = '[\"$k\"]'")" 0
		else
			# one log row with the remote change's version, stream and txseq
			got=$(pg_psql tgt $d -c "SELECT count(*) FROM sluice.conflicts f JOIN chk.remote r ON r.k = $k
			  WHERE f.key = '[\"$k\"]'::jsonb AND f.kind = '$kind'
			    AND ('$res' = '*' OR f.resolution = '$res') AND f.relation = 'public.c'
			    AND f.stream = 's_$st' AND f.txseq = r.txseq AND f.remote_time = r.at
			    AND f.remote_node = 'node_s'")
			check "$st k=$k conflict log: $kind/$res at the remote version" "$got" 1
			[ "$got" == 1 ] || pg_psql tgt $d -c "SELECT * FROM sluice.conflicts WHERE key = '[\"$k\"]'" >&2
		fi
		[ "$st" == timestamp ] || continue
		# timestamp: the local version in the log is the row's (or tombstone's) before apply
		case $kind in
		insert_exists | update_newer_local | delete_newer_local) pre=chk.pre_row ;;
		insert_deleted | update_deleted) pre=chk.pre_tomb ;;
		*) pre="" ;;
		esac
		if [ -n "$pre" ]; then
			got=$(pg_psql tgt $d -c "SELECT count(*) FROM sluice.conflicts f JOIN $pre p ON p.k = $k
			  WHERE f.key = '[\"$k\"]'::jsonb AND f.local_time = p.at AND f.local_node = p.node
			    AND p.node = 'node_t'")
			check "$st k=$k conflict log: local version" "$got" 1
		fi
		case $tomb in
		-) want="none" ;;
		remote) want=$(pg_psql tgt $d -c "SELECT at || '|' || node FROM chk.remote WHERE k = $k") ;;
		local) want=$(pg_psql tgt $d -c "SELECT at || '|' || node FROM chk.pre_tomb WHERE k = $k") ;;
		esac
		got=$(pg_psql tgt $d -c "SELECT coalesce((SELECT v.at || '|' || v.node FROM sluice.tombstones t,
		  sluice.version(t.xmin) v WHERE t.rel = 'public.c' AND t.key = '[\"$k\"]'), 'none')")
		check "$st k=$k tombstone ($tomb)" "$got" "$want"
	done <<<"$expect"
	# exactly once: a second run applies nothing
	run_apply $d $st "$W/again_$st.log"
	check "$st second run exit status" "$?" 0
	grep -q ' 0 transactions' "$W/again_$st.log" || bad "$st: second run applied again: $(tail -1 "$W/again_$st.log")"
done
# Every remote delete in timestamp left the tombstone the source has too.
got=$(pg_psql src postgres -c "SELECT string_agg((t.key->>0) || '@' || v.at, ',' ORDER BY t.key) FROM
  sluice.tombstones t, sluice.version(t.xmin) v")
want=$(pg_psql tgt d_timestamp -c "SELECT string_agg((t.key->>0) || '@' || v.at, ',' ORDER BY t.key) FROM
  sluice.tombstones t, sluice.version(t.xmin) v WHERE v.node = 'node_s'")
check "timestamp: tombstones of remote deletes carry the source's delete versions" "$want" "$got"

# ---- equal commit times: the greater node name wins, on every node ---------
# One source transaction captured into two streams under two node names has
# the same commit time in both. tie1 applies node_y's stream first, tie2
# node_x's first: both must end with node_y's version. (A stream per target:
# replication origins are per cluster.)
q src postgres "CREATE DATABASE tie" >/dev/null
q src tie "CREATE TABLE c (k int PRIMARY KEY, v text, big text)" >/dev/null
TIE_STREAMS="tie1_x tie1_y tie2_x tie2_y"
cap_tie() { # cap_tie STREAM [ARGS]
	local s=$1
	shift
	"$SLUICE" capture --source "$(pg_conninfo src tie)" --store "$W/store" --stream $s \
		--key "$W/k.key" --node node_${s#*_} --exit-when-caught-up --no-progress "$@" \
		2>>"$W/cap_$s.log" || die "capture $s"
}
for s in $TIE_STREAMS; do cap_tie $s --create; done
q src tie "INSERT INTO c VALUES (1, 'tie')" >/dev/null
for s in $TIE_STREAMS; do cap_tie $s; done
for t in tie1 tie2; do
	q tgt postgres "CREATE DATABASE $t" >/dev/null
	q tgt $t "CREATE TABLE c (k int PRIMARY KEY, v text, big text)" >/dev/null
	"$SLUICE" prepare --target "$(pg_conninfo tgt $t)" --node node_t 2>/dev/null || die "prepare $t"
done
tie_apply() { # tie_apply DB STREAM
	"$SLUICE" --log-format text apply --store "$W/store" --stream "$2" --trust "$W/k.pub" \
		--target "$(pg_conninfo tgt "$1")" --strategy timestamp --exit-when-caught-up 2>"$W/$2.log" ||
		bad "tie: apply $2 to $1 failed: $(cat "$W/$2.log")"
}
tie_apply tie1 tie1_y
tie_apply tie1 tie1_x
tie_apply tie2 tie2_x
tie_apply tie2 tie2_y
check "tie: node_x after node_y counts insert_exists" "$(counter "$W/tie1_x.log" insert_exists)" 1
check "tie: node_y after node_x counts insert_exists" "$(counter "$W/tie2_y.log" insert_exists)" 1
# sluice.remote_wins directly, against the version of that row and of a local row
rw() { pg_psql tgt tie1 -c "SELECT sluice.remote_wins(xmin, (sluice.version(xmin)).at + interval '$2 microseconds', '$3') FROM c WHERE k = $1"; }
check "remote_wins: equal time, greater name" "$(rw 1 0 node_z)" t
check "remote_wins: equal time, equal name" "$(rw 1 0 node_y)" f
check "remote_wins: equal time, smaller name" "$(rw 1 0 node_x)" f
check "remote_wins: 1 us later, smallest name" "$(rw 1 1 a)" t
check "remote_wins: 1 us earlier, greatest name" "$(rw 1 -1 zzz)" f
q tgt tie1 "INSERT INTO c VALUES (2, 'local')" >/dev/null
check "remote_wins: local row, version is the local commit time and node" \
	"$(pg_psql tgt tie1 -c "SELECT v.at = pg_xact_commit_timestamp(c.xmin), v.node FROM c, sluice.version(c.xmin) v WHERE k = 2")" \
	"t|node_t"
check "remote_wins: local row, equal time, greater name" "$(rw 2 0 node_u)" t
check "remote_wins: local row, equal time, smaller name" "$(rw 2 0 node_s)" f
check "remote_wins: frozen xid has no version (remote wins)" \
	"$(pg_psql tgt tie1 -c "SELECT sluice.remote_wins('2'::xid, '2000-01-01', 'a')")" t

# ---- a concurrent local writer cannot slip between read and write ----------
# Local transactions hold the row locks of k=1 and k=2 while apply runs; k=1's
# commits after the remote change (newer: kept, and the log names the version
# that won), k=2's rolls back (the remote update applies).
q src postgres "CREATE DATABASE lk" >/dev/null
q tgt postgres "CREATE DATABASE lk" >/dev/null
for n in src tgt; do
	q $n lk "CREATE TABLE c (k int PRIMARY KEY, v text, big text);
	  INSERT INTO c VALUES (1, 'base'), (2, 'base')" >/dev/null
done
"$SLUICE" prepare --target "$(pg_conninfo tgt lk)" --node node_t 2>/dev/null || die "prepare lk"
cap_lk() { "$SLUICE" capture --source "$(pg_conninfo src lk)" --store "$W/store" --stream lk \
	--key "$W/k.key" --node node_s --exit-when-caught-up --no-progress "$@" 2>>"$W/cap_lk.log" ||
	die "capture lk"; }
cap_lk --create
q src lk "UPDATE c SET v = 'remote' WHERE k = 1" >/dev/null
q src lk "UPDATE c SET v = 'remote' WHERE k = 2" >/dev/null
cap_lk
q tgt lk "BEGIN; UPDATE c SET v = 'local' WHERE k = 1; SELECT pg_sleep(2); COMMIT" >/dev/null &
l1=$!
q tgt lk "BEGIN; UPDATE c SET v = 'local' WHERE k = 2; SELECT pg_sleep(2.5); ROLLBACK" >/dev/null &
l2=$!
for _ in $(seq 50); do
	[ "$(q tgt lk "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'BEGIN; UPDATE c%' AND state = 'active'")" == 2 ] && break
	sleep 0.1
done
"$SLUICE" --log-format text apply --store "$W/store" --stream lk --trust "$W/k.pub" \
	--target "$(pg_conninfo tgt lk)" --strategy timestamp --exit-when-caught-up 2>"$W/lk.log"
check "locked rows: apply exit status" "$?" 0
wait $l1 $l2
check "locked rows: k=1 keeps the local write that committed while apply waited" \
	"$(q tgt lk "SELECT v FROM c WHERE k = 1")" local
check "locked rows: k=2 takes the remote update once the local writer rolled back" \
	"$(q tgt lk "SELECT v FROM c WHERE k = 2")" remote
check "locked rows: counters" "$(counter "$W/lk.log" update_newer_local)" 1
check "locked rows: the conflict log names the local version that won (not the one before the lock wait)" \
	"$(q tgt lk "SELECT f.kind || ' ' || f.resolution || ' ' || (f.local_time = v.at) || ' ' || f.local_node
	  || ' ' || (f.local_time > f.remote_time) FROM sluice.conflicts f, c, sluice.version(c.xmin) v
	  WHERE c.k = 1 AND f.key = '[\"1\"]'")" "update_newer_local kept_local true node_t true"

# ---- timestamp refuses to start when it cannot decide ----------------------
pg_start off "track_commit_timestamp = off" || die "start off"
q off postgres "CREATE TABLE c (k int PRIMARY KEY, v text, big text)" >/dev/null
"$SLUICE" prepare --target "$(pg_conninfo off)" --node node_o 2>/dev/null || die "prepare off"
"$SLUICE" --log-format text apply --store "$W/store" --stream s_timestamp --trust "$W/k.pub" \
	--target "$(pg_conninfo off)" --strategy timestamp --exit-when-caught-up 2>"$W/off.log"
rc=$?
check "track_commit_timestamp off: exit status" "$rc" 3
grep -q 'track_commit_timestamp = on' "$W/off.log" && grep -qi 'restart' "$W/off.log" ||
	bad "track_commit_timestamp off: the error does not say how to fix it: $(cat "$W/off.log")"
check "track_commit_timestamp off: nothing applied" "$(q off postgres "SELECT count(*) FROM c")" 0

q src postgres "CREATE DATABASE unprep" >/dev/null
q src unprep "CREATE TABLE c (k int PRIMARY KEY, v text, big text)" >/dev/null
"$SLUICE" --log-format text apply --store "$W/store" --stream s_timestamp --trust "$W/k.pub" \
	--target "$(pg_conninfo src unprep)" --strategy timestamp --exit-when-caught-up 2>"$W/unprep.log"
check "unprepared node: exit status" "$?" 3
grep -q 'sluice prepare' "$W/unprep.log" ||
	bad "unprepared node: the error does not name sluice prepare: $(cat "$W/unprep.log")"
check "unprepared node: nothing applied" "$(q src unprep "SELECT count(*) FROM c")" 0

echo "test_apply_conflicts: $pass checks passed, $fail failed"
[ "$fail" -eq 0 ] && echo "test_apply_conflicts: passed"
[ "$fail" -eq 0 ]
