#!/usr/bin/env bash
# Tombstones (conflicts.md): a late change older than a delete does not bring
# the row back, whether the delete was a local application's or came through
# apply; a newer one does. Three prepared nodes a, b, c, every stream applied
# to both other nodes with --strategy timestamp.
#   (a) k=1: a updates at t1, b deletes locally at t2 > t1: a's update reaches
#       b as an update of a missing row and is skipped (update_deleted, the
#       log names b's delete); b's delete reaches a and deletes.
#   (b) k=2: a updates at t1, c deletes at t2 > t1; c's delete reaches b
#       through apply before a's late update: skipped (update_deleted).
#       k=3: a deletes at t1, c at t2: on b (c's first) the older delete does
#       not move the tombstone back; on a (own delete first) c's newer delete
#       advances it.
#   (c) k=4: an insert older than b's tombstone is skipped (insert_deleted);
#       k=5: an insert newer than it inserts.
#   Every node ends with the same rows and the same tombstone versions.
#   (d) --tombstone-horizon 1 after 2 s removes the old tombstones at apply
#       start and keeps a fresh one; the default horizon keeps them.
# Usage: test_apply_tombstones.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_value_checks
die() { echo "FATAL: $*" >&2; exit 1; }
q() { local n=$1; shift; pg_psql "$n" postgres -c "$*"; }
capture() { # capture NODE [ARGS]
	local n=$1
	shift
	"$SLUICE" capture --source "$(pg_conninfo $n)" --store "$W/store" --stream $n --key "$W/k.key" \
		--node node_$n --exit-when-caught-up --no-progress "$@" 2>>"$W/capture_$n.log" ||
		die "capture $n: $(tail -3 "$W/capture_$n.log")"
}
APPLY_N=0
apply() { # apply STREAM TARGET [ARGS]: the log is $W/apply_STREAM_TARGET[_N].log
	local s=$1 t=$2 log="$W/apply_$1_$2.log"
	shift 2
	[ -e "$log" ] && log="$W/apply_${s}_${t}_$((APPLY_N++)).log"
	LAST_LOG=$log
	"$SLUICE" --log-format text apply --store "$W/store" --stream $s --trust "$W/k.pub" \
		--target "$(pg_conninfo $t)" --strategy timestamp --exit-when-caught-up "$@" 2>"$log"
	local rc=$?
	check "apply $s to $t: exit status" "$rc" 0
	[ "$rc" -eq 0 ] || cat "$log" >&2
}
# version of k's tombstone on node n: µs since the epoch and node, or none
tomb() { q $1 "SELECT coalesce((SELECT (extract(epoch FROM v.at) * 1000000)::bigint || '@' || v.node
  FROM sluice.tombstones t, sluice.version(t.xmin) v WHERE t.rel = 'public.t' AND t.key = '[\"$2\"]'), 'none')"; }
row() { q $1 "SELECT coalesce((SELECT v FROM t WHERE k = $2), 'absent')"; }

"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
for n in a b c; do pg_start $n || die "start $n"; done
q a "CREATE TABLE t (k int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'seed' FROM generate_series(1, 3) g" >/dev/null
q b "CREATE TABLE t (k int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'seed' FROM generate_series(1, 5) g" >/dev/null
q c "CREATE TABLE t (k int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'seed' FROM generate_series(1, 3) g" >/dev/null
for n in a b c; do
	"$SLUICE" prepare --target "$(pg_conninfo $n)" --node node_$n 2>"$W/prepare_$n.log" ||
		die "prepare $n: $(cat "$W/prepare_$n.log")"
	capture $n --create
done

# Writes, in commit-time order t1 < t2 < t3.
q a "UPDATE t SET v = 'a1' WHERE k = 1" >/dev/null # (a)
q a "UPDATE t SET v = 'a2' WHERE k = 2" >/dev/null # (b)
q a "DELETE FROM t WHERE k = 3" >/dev/null         # (b)
q a "INSERT INTO t VALUES (4, 'a4')" >/dev/null    # (c)
sleep 0.2
q b "DELETE FROM t WHERE k = 1" >/dev/null # (a) a local delete
q c "DELETE FROM t WHERE k = 2" >/dev/null # (b)
q c "DELETE FROM t WHERE k = 3" >/dev/null # (b)
q b "DELETE FROM t WHERE k = 4" >/dev/null # (c)
q b "DELETE FROM t WHERE k = 5" >/dev/null # (c)
sleep 0.2
q a "INSERT INTO t VALUES (5, 'a5')" >/dev/null # (c) newer than b's delete of 5
for n in a b c; do capture $n; done
# Commit times of the deletes, from the deleting nodes' own tombstones.
T_b1=$(tomb b 1)
T_c2=$(tomb c 2)
T_a3=$(tomb a 3)
T_c3=$(tomb c 3)
T_b4=$(tomb b 4)
T_b5=$(tomb b 5)
for v in T_b1 T_c2 T_a3 T_c3 T_b4 T_b5; do
	[ "${!v}" != none ] || bad "a local delete left no tombstone ($v)"
done
# ... and of a's writes, from a's rows
ver() { q $1 "SELECT (extract(epoch FROM v.at) * 1000000)::bigint || '@' || v.node FROM t, sluice.version(t.xmin) v WHERE k = $2"; }
T_a1=$(ver a 1)
T_a2=$(ver a 2)
T_a4=$(ver a 4)
T_a5=$(ver a 5)
older() { [ "${1%@*}" -lt "${2%@*}" ] && echo yes || echo no; }
check "set-up: a's update of k=1 is older than b's delete" "$(older "$T_a1" "$T_b1")" yes
check "set-up: a's update of k=2 is older than c's delete" "$(older "$T_a2" "$T_c2")" yes
check "set-up: a's delete of k=3 is older than c's delete" "$(older "$T_a3" "$T_c3")" yes
check "set-up: a's insert of k=4 is older than b's delete" "$(older "$T_a4" "$T_b4")" yes
check "set-up: b's delete of k=5 is older than a's insert" "$(older "$T_b5" "$T_a5")" yes
check "set-up: local tombstones name the local node" "${T_b1#*@} ${T_c2#*@} ${T_a3#*@}" "node_b node_c node_a"

# (b) first: c's deletes reach b through apply.
apply c b
check "(b) c's delete of k=2 applied on b" "$(row b 2)" absent
check "(b) b's tombstone of k=2 carries c's delete version" "$(tomb b 2)" "$T_c2"
check "(b) b's tombstone of k=3 carries c's delete version" "$(tomb b 3)" "$T_c3"

# (a), (b), (c): a's late changes reach b.
apply a b
L=$LAST_LOG
check "(a) k=1 stays deleted on b" "$(row b 1)" absent
check "(a) b logs update_deleted for k=1 against its local delete" \
	"$(q b "SELECT kind || ' ' || resolution || ' ' || local_node || ' ' || remote_node || ' '
	  || ((extract(epoch FROM local_time) * 1000000)::bigint || '@' || local_node = '$T_b1')
	  FROM sluice.conflicts WHERE key = '[\"1\"]'")" "update_deleted skipped node_b node_a true"
check "(b) k=2 stays deleted on b" "$(row b 2)" absent
check "(b) b logs update_deleted for k=2 against c's delete" \
	"$(q b "SELECT kind || ' ' || resolution || ' ' || local_node || ' '
	  || ((extract(epoch FROM local_time) * 1000000)::bigint || '@' || local_node = '$T_c2')
	  FROM sluice.conflicts WHERE key = '[\"2\"]'")" "update_deleted skipped node_c true"
check "(b) a's older delete of k=3 does not move b's tombstone back" "$(tomb b 3)" "$T_c3"
check "(c) k=4: the insert older than the tombstone is skipped" "$(row b 4)" absent
check "(c) k=5: the insert newer than the tombstone inserts" "$(row b 5)" a5
check "(c) b's tombstone of k=5 is still b's delete" "$(tomb b 5)" "$T_b5"
check "a to b: update_deleted" "$(counter "$L" update_deleted)" 2
check "a to b: insert_deleted" "$(counter "$L" insert_deleted)" 1
check "a to b: delete_missing" "$(counter "$L" delete_missing)" 1
check "a to b: no update_missing (a tombstone was in place)" "$(counter "$L" update_missing)" 0
check "(c) b logs insert_deleted for k=4 and nothing for k=5" \
	"$(q b "SELECT string_agg(key->>0 || ':' || kind || ':' || resolution, ',' ORDER BY key) FROM sluice.conflicts
	  WHERE key IN ('[\"4\"]', '[\"5\"]')")" "4:insert_deleted:skipped"

# (a): b's delete reaches a.
apply b a
L=$LAST_LOG
check "(a) b's delete of k=1 deletes on a" "$(row a 1)" absent
check "(a) a's tombstone of k=1 carries b's delete version" "$(tomb a 1)" "$T_b1"
check "(c) b's delete of k=4 (newer than a's insert) deletes on a" "$(row a 4)" absent
check "(c) k=5 on a: a's insert is newer than b's delete" "$(row a 5)" a5
check "(c) a keeps the tombstone of b's losing delete of k=5" "$(tomb a 5)" "$T_b5"
check "b to a: delete_newer_local" "$(counter "$L" delete_newer_local)" 1
check "b to a: no other conflict" "$(grep 'conflicts:' "$L" | tail -1 | sed 's/.*conflicts: //')" \
	"delete_newer_local=1"
apply c a
check "(b) c's delete of k=2 deletes on a" "$(row a 2)" absent
check "(b) c's newer delete advances a's tombstone of k=3" "$(tomb a 3)" "$T_c3"
check "c to a: delete_missing for k=3" "$(counter "$LAST_LOG" delete_missing)" 1
apply a c
apply b c
check "c: a's late update of k=2 does not resurrect it" "$(row c 2)" absent
check "a to c: update_deleted for k=2" "$(counter "$W/apply_a_c.log" update_deleted)" 1
# c had never seen k=4/5: a's inserts arrive, then b's deletes (4 older, 5 newer)
check "c: k=4 deleted by b's delete" "$(row c 4)" absent
check "c: k=5 kept (a's insert is newer than b's delete)" "$(row c 5)" a5

# Convergence: rows and tombstone versions are the same on every node.
want_rows="5|a5"
for n in a b c; do
	check "node_$n rows" "$(q $n "SELECT string_agg(k || '|' || v, ',' ORDER BY k) FROM t")" "$want_rows"
	for k in 1 2 3 4 5; do
		case $k in 1) w=$T_b1 ;; 2) w=$T_c2 ;; 3) w=$T_c3 ;; 4) w=$T_b4 ;; 5) w=$T_b5 ;; esac
		check "node_$n tombstone of k=$k" "$(tomb $n $k)" "$w"
	done
done
# Nothing was applied twice: every apply again finds nothing.
for s in a b c; do
	for t in a b c; do
		[ $s != $t ] || continue
		apply $s $t
		grep -q ' 0 transactions' "$LAST_LOG" || bad "apply $s to $t again: $(grep 'conflicts:' "$LAST_LOG")"
	done
done

# (e) The key of a tombstone does not depend on session settings: a table
# keyed by timestamptz, the source database in UTC, the target's sessions in
# another time zone. b's local delete must still stop a's late update.
for n in a b; do
	q $n "CREATE DATABASE tz" >/dev/null
	pg_psql $n tz -c "CREATE TABLE e (k timestamptz PRIMARY KEY, v text);
	  INSERT INTO e VALUES ('2024-01-02 00:00:00+00', 'seed')" >/dev/null
done
q a "ALTER DATABASE tz SET timezone = 'UTC'" >/dev/null
q b "ALTER DATABASE tz SET timezone = 'America/New_York'" >/dev/null
"$SLUICE" prepare --target "$(pg_conninfo b tz)" --node node_b 2>/dev/null || die "prepare b tz"
cap_tz() { "$SLUICE" capture --source "$(pg_conninfo a tz)" --store "$W/store" --stream tz_a \
	--key "$W/k.key" --node node_a --exit-when-caught-up --no-progress "$@" 2>>"$W/capture_tz.log" ||
	die "capture tz_a"; }
cap_tz --create
pg_psql a tz -c "UPDATE e SET v = 'late'" >/dev/null
sleep 0.1
pg_psql b tz -c "DELETE FROM e" >/dev/null
cap_tz
"$SLUICE" --log-format text apply --store "$W/store" --stream tz_a --trust "$W/k.pub" \
	--target "$(pg_conninfo b tz)" --strategy timestamp --exit-when-caught-up 2>"$W/apply_tz.log"
check "(e) apply to another time zone: exit status" "$?" 0
check "(e) a late update of a timestamptz key stays deleted in another time zone" \
	"$(pg_psql b tz -c "SELECT count(*) FROM e")" 0
check "(e) counted as update_deleted" "$(counter "$W/apply_tz.log" update_deleted)" 1

# (d) The horizon. The default (7 days) keeps them.
apply a b
check "(d) default horizon keeps b's tombstones" "$(q b "SELECT count(*) FROM sluice.tombstones")" 5
sleep 2
q b "INSERT INTO t VALUES (9, 'fresh'); DELETE FROM t WHERE k = 9" >/dev/null
apply a b --tombstone-horizon 1
grep -q 'removed 5 tombstones older than the horizon' "$LAST_LOG" ||
	bad "(d) apply did not report removing 5 tombstones: $(cat "$LAST_LOG")"
check "(d) --tombstone-horizon 1 removed the old tombstones, kept the fresh one" \
	"$(q b "SELECT string_agg(key->>0, ',') FROM sluice.tombstones")" 9

echo "test_apply_tombstones: $pass checks passed, $fail failed"
[ "$fail" -eq 0 ] && echo "test_apply_tombstones: passed"
[ "$fail" -eq 0 ]
