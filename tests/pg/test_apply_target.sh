#!/usr/bin/env bash
# What apply does with the target's own behaviour and with sluice's own schema:
#  1. a transaction whose changes are all filtered out (--exclude) still
#     records its progress: the next run applies nothing and the origin
#     progress is the stream's last txseq;
#  2. the target's NOTICE and WARNING messages (a trigger's RAISE) go through
#     sluice's logger as JSON lines, never raw onto stderr;
#  3. an error the target raises (a CHECK constraint the stream violates)
#     stops apply (exit 3) with the txseq, the operation, the table and the
#     SQLSTATE, even though the server's message names none of them;
#  4. node-local tables travel nowhere: with `sluice prepare` on both nodes,
#     `capture --create --snapshot` of A applied to B leaves B's node name,
#     tombstones and conflict log as they were;
#  5. a transaction that keeps failing transiently (a lock held on the target
#     past its lock_timeout) is retried, reported loudly after --retry-report,
#     and applied once the lock is gone.
# Usage: test_apply_target.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks target

pg_start a || die "could not start a"
pg_start b || die "could not start b"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
A=$(pg_conninfo a)
B=$(pg_conninfo b)

for n in a b; do
	pg_psql $n postgres <<'SQL' || die "schema on $n"
CREATE TABLE kept (k int PRIMARY KEY, v int NOT NULL);
CREATE TABLE noisy (k int PRIMARY KEY, v int NOT NULL);
CREATE TABLE skipped (k int PRIMARY KEY, v text);
INSERT INTO kept SELECT g, g FROM generate_series(1, 5) g;
SQL
done
# B's copy of noisy talks, and B refuses negative values of kept.v.
pg_psql b postgres <<'SQL' || die "triggers on b"
CREATE FUNCTION talk() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE 'noisy row % arrived', NEW.k;
	RAISE WARNING 'noisy row % is suspicious', NEW.k;
	RETURN NEW;
END $$;
CREATE TRIGGER talk BEFORE INSERT ON noisy FOR EACH ROW EXECUTE FUNCTION talk();
ALTER TABLE noisy ENABLE ALWAYS TRIGGER talk;
ALTER TABLE kept ADD CONSTRAINT kept_v_positive CHECK (v > 0);
SQL
for n in a b; do
	"$SLUICE" prepare --target "$(pg_conninfo $n)" --node node_$n 2>"$W/prepare_$n.log" ||
		die "prepare $n"
done
# B's node-local state before A's snapshot arrives.
pg_psql b postgres <<'SQL' || die "local state on b"
DELETE FROM kept WHERE k = 5;
INSERT INTO sluice.conflicts (stream, txseq, relation, key, kind, remote_time, remote_node,
  resolution) VALUES ('x', 1, 'public.kept', '[1]', 'insert_exists', now(), 'node_x', 'kept_local');
SQL
# A's own node-local state, which must not travel.
pg_psql a postgres <<'SQL' || die "local state on a"
DELETE FROM kept WHERE k = 4;
INSERT INTO sluice.conflicts (stream, txseq, relation, key, kind, remote_time, remote_node,
  resolution) VALUES ('y', 9, 'public.kept', '[2]', 'update_missing', now(), 'node_y', 'skipped');
SQL
local_state() { # local_state NODE: node name, tombstones, conflict log rows not written by apply of a
	pg_psql "$1" postgres -c "SELECT (SELECT value FROM sluice.config WHERE name = 'node'),
	  (SELECT string_agg(rel || key::text, ',' ORDER BY rel, key) FROM sluice.tombstones),
	  (SELECT string_agg(stream || txseq || kind || remote_node, ',' ORDER BY id) FROM sluice.conflicts
	    WHERE stream <> 'a')"
}
B_BEFORE=$(local_state b)
grep -q '^node_b|public.kept\["5"\]|x1insert_existsnode_x$' <<<"$B_BEFORE"
check "b's local state before the snapshot: $B_BEFORE"

"$SLUICE" capture --source "$A" --store "$W/store" --stream a --key "$W/k.key" --node node_a \
	--create --snapshot --exit-when-caught-up --no-progress 2>"$W/cap0.log"
check "capture --create --snapshot of a"
"$SLUICE" inspect --store "$W/store" --stream a --trust "$W/k.pub" --records --json >"$W/snap.json"
! grep -q '"schema":"sluice"' "$W/snap.json"
check "the snapshot holds no table of sluice's schema"

apply() { # apply LOG [ARGS...]
	local log=$1
	shift
	"$SLUICE" apply --store "$W/store" --stream a --trust "$W/k.pub" --target "$B" \
		--exit-when-caught-up "$@" 2>"$W/$log.log"
}
# 4. the snapshot into b (kept is not excluded yet, so 5 comes back)
apply snap --exclude 'public.skipped'
check "apply of the snapshot exits 0"
B_AFTER=$(local_state b)
[ "$B_AFTER" = "$B_BEFORE" ]
check "b keeps its node name, tombstones and conflict log (got $B_AFTER)"

# 1. transactions that only touch an excluded table
for i in 1 2 3; do
	pg_psql a postgres -c "INSERT INTO skipped VALUES ($i, 'x$i')" || die "insert into skipped"
done
"$SLUICE" capture --source "$A" --store "$W/store" --stream a --key "$W/k.key" --node node_a \
	--exit-when-caught-up --no-progress 2>"$W/cap1.log" || die "capture 1"
LAST=$("$SLUICE" verify --store "$W/store" --stream a --trust "$W/k.pub" --json |
	python3 -c 'import json, sys
for l in sys.stdin:
    r = json.loads(l)
    if r.get("type") == "summary":
        print(r["last_txseq"])')
apply filtered --exclude 'public.skipped'
check "apply with every change excluded exits 0"
progress=$(pg_psql b postgres -c "SELECT pg_replication_origin_progress('sluice_a@postgres', true)")
[ "$progress" = "0/$(printf '%X' "$LAST")" ]
check "the origin progress is the last txseq $LAST although nothing was written (got $progress)"
apply filtered2 --exclude 'public.skipped'
grep -q 'apply: 0 transactions' "$W/filtered2.log"
check "the next run applies nothing"
[ "$(pg_psql b postgres -c 'SELECT count(*) FROM skipped')" = 0 ]
check "nothing of the excluded table was written"

# 2. NOTICE and WARNING of a target trigger
pg_psql a postgres -c "INSERT INTO noisy VALUES (7, 7)" || die "insert into noisy"
"$SLUICE" capture --source "$A" --store "$W/store" --stream a --key "$W/k.key" --node node_a \
	--exit-when-caught-up --no-progress 2>"$W/cap2.log" || die "capture 2"
apply noisy --exclude 'public.skipped'
check "apply into the noisy table exits 0"
grep -q '"level":"warn".*the target says: WARNING: noisy row 7 is suspicious' "$W/noisy.log" &&
	grep -q '"level":"info".*the target says: NOTICE: noisy row 7 arrived' "$W/noisy.log"
check "the trigger's WARNING and NOTICE are JSON lines of sluice's log"
! grep -v '^{' "$W/noisy.log" | grep -q .
check "nothing else reached stderr (every line is JSON)"

# 3. an error of the target: b refuses kept.v <= 0
pg_psql a postgres -c "UPDATE kept SET v = -1 WHERE k = 2" || die "update kept"
"$SLUICE" capture --source "$A" --store "$W/store" --stream a --key "$W/k.key" --node node_a \
	--exit-when-caught-up --no-progress 2>"$W/cap3.log" || die "capture 3"
apply refused --exclude 'public.skipped'
rc=$?
[ "$rc" -eq 3 ]
check "a change the target refuses stops apply with status 3 (got $rc)"
grep -q "could not apply txseq $((LAST + 2)) (update of public.kept) on the target: .*kept_v_positive.*(SQLSTATE 23514)" "$W/refused.log"
check "the error names the txseq, the operation, the table and the SQLSTATE"
grep -q 'retries: none' "$W/refused.log"
check "a permanent error is not retried"

# 5. a transaction that keeps failing transiently: b's database sets a lock
# timeout and a session of b holds the row lock for 3 s; apply retries
# (55P03), reports it loudly after --retry-report 1 s, and goes through once
# the lock is gone.
pg_psql b postgres -c "ALTER TABLE kept DROP CONSTRAINT kept_v_positive" \
	-c "ALTER DATABASE postgres SET lock_timeout = '100ms'" || die "lock timeout on b"
pg_psql b postgres -c "BEGIN" -c "SELECT * FROM kept WHERE k = 2 FOR UPDATE" \
	-c "SELECT pg_sleep(3)" -c "COMMIT" >/dev/null &
LOCKER=$!
sleep 0.5
apply locked --exclude 'public.skipped' --retry-report 1
check "apply exits 0 once the lock is released"
wait "$LOCKER"
grep -q "txseq $((LAST + 2)) (update of public.kept) failed on the target with SQLSTATE 55P03 (lock_timeout), transient" "$W/locked.log"
check "each retry names the txseq, the change and the SQLSTATE"
grep -q '"level":"error".*has failed transiently for [0-9]* s .*still retrying' "$W/locked.log"
check "a transaction failing for longer than --retry-report is reported as an error"
grep -q 'retries: lock_timeout=[1-9]' "$W/locked.log"
check "the exit summary counts the retries by cause"
[ "$(pg_psql b postgres -c 'SELECT v FROM kept WHERE k = 2')" = -1 ]
check "the change was applied once the lock was gone"

if [ "$FAILS" -ne 0 ]; then
	tail -n 5 "$W"/*.log >&2
	echo "test_apply_target: $FAILS checks FAILED" >&2
	exit 1
fi
echo "test_apply_target: passed ($((SECONDS - T0)) s)"
