#!/usr/bin/env bash
# Exactly-once apply under kill -9. Every source transaction after the
# snapshot increments the one row of c (UPDATE c SET n = n + 1), so on the
# target c.n = origin progress - 1 whenever no apply is running: a transaction
# applied twice, skipped, or committed without its progress (or progress
# without its data) breaks that. The transactions also insert into hist, a
# table without a key where a second insert of the same row would show as a
# duplicate, and change w and acct (inserts, updates, key changes, deletes,
# unchanged TOAST).
#  1. catch-up: a captured stream of a snapshot (txseq 1, 100k rows), a few
#     thousand small transactions and ten larger ones (10k rows each); apply
#     is killed with SIGKILL at random moments while it applies the snapshot
#     (the delay grows while a kill comes before any progress), then soon
#     after each restarted run moved the origin (at least $CATCHUP_KILLS kills in
#     all), and restarted with
#     the same command (sometimes at once, while the killed session may still
#     hold the origin), until it has caught up;
#  2. live: capture following a pgbench workload, apply following it and
#     killed with SIGKILL at random moments (at least $KILLS times), restarted
#     each time; then a marker transaction, SIGTERM (status 0) for both.
# After each kill and at the end: c.n = progress - 1 on the target; at the
# end every table equals the source, c.n equals the source's, and
# pg_replication_origin_progress('sluice_k9@postgres', true) = last txseq of the stream.
# Usage: test_apply_kill9.sh SLUICE      (SEED=N to repeat a kill schedule)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$SEED
echo "apply kill9: seed $SEED (rerun with SEED=$SEED)"
T0=$SECONDS
export PATH=$PGBIN:$PATH

KILLS=8         # in the live phase; 20 with tools/test.sh --long
CATCHUP_KILLS=8 # during catch-up: bounded by how long the stream takes to apply
[ "${SLUICE_TEST_LONG:-}" = 1 ] && KILLS=20
TXNS_PER_CLIENT=1500 # catch-up stream: 4 clients
LIVE_SECONDS=15
LIVE_RATE=300
if [ -n "${SLUICE_SANITIZED:-}" ]; then
	TXNS_PER_CLIENT=600
	LIVE_RATE=100
fi

fail() {
	echo "apply kill9: FAILED: $*" >&2
	exit 1
}
say() { echo "apply kill9: $((SECONDS - T0)) s: $*"; }

pg_start src || fail "could not start the source"
pg_start dst || fail "could not start the target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || fail "keygen"
SRC=$(pg_conninfo src)
DST=$(pg_conninfo dst)

SCHEMA=$(
	cat <<'SQL'
CREATE TABLE c (id int PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE w (id bigint PRIMARY KEY, worker int NOT NULL, v int NOT NULL, pad text);
CREATE TABLE acct (id int PRIMARY KEY, worker int NOT NULL, bal bigint NOT NULL, blob text);
ALTER TABLE acct ALTER COLUMN blob SET STORAGE EXTERNAL;
-- no key: a transaction applied twice leaves a duplicate row here
CREATE TABLE hist (worker int NOT NULL, c_n bigint, at timestamptz NOT NULL, note text);
CREATE TABLE marker (id int PRIMARY KEY);
SQL
)
pg_psql src postgres -c "$SCHEMA" -c "CREATE SEQUENCE wid" || fail "source schema"
pg_psql dst postgres -c "$SCHEMA" || fail "target schema"

# The counter row (n = 0), the rows the workload changes and a large table:
# all in the snapshot, txseq 1, one large transaction.
pg_psql src postgres <<'SQL' || fail "seed"
CREATE TABLE bulk (id int PRIMARY KEY, v int NOT NULL, pad text);
INSERT INTO bulk SELECT g, 0, md5(g::text) FROM generate_series(1, 100000) g;
INSERT INTO c VALUES (1, 0);
INSERT INTO acct SELECT g, g % 4, 0, repeat(md5(g::text), 100) FROM generate_series(0, 399) g;
INSERT INTO w SELECT nextval('wid'), g % 4, 0, 'seed' FROM generate_series(1, 400) g;
SQL
pg_psql dst postgres -c "CREATE TABLE bulk (id int PRIMARY KEY, v int NOT NULL, pad text)" || fail "target schema"
CAPTURE=("$SLUICE" capture --source "$SRC" --store "$W/store" --stream k9 --key "$W/k.key" --no-progress)
# hist has no key and is only inserted into: --allow-no-identity publishes it anyway
"${CAPTURE[@]}" --create --allow-no-identity --snapshot --exit-when-caught-up 2>"$W/cap0.log" || {
	cat "$W/cap0.log" >&2
	fail "capture --create --snapshot"
}

# Every committed workload transaction increments c.n once; rows of w and acct
# belong to client_id (0..3), so clients only wait on each other for c.
cat >"$W/a.sql" <<'SQL'
\set a random(0, 99)
BEGIN;
INSERT INTO w VALUES (nextval('wid'), :client_id, 0, md5(random()::text));
UPDATE w SET v = v + 1, pad = md5(coalesce(pad, '')) WHERE id = (SELECT max(id) FROM w WHERE worker = :client_id);
UPDATE acct SET bal = bal + 1 WHERE id = :a * 4 + :client_id;
UPDATE c SET n = n + 1 WHERE id = 1 RETURNING n AS cn \gset
INSERT INTO hist VALUES (:client_id, :cn, clock_timestamp(), 'a');
COMMIT;
SQL
cat >"$W/b.sql" <<'SQL'
\set a random(0, 99)
BEGIN;
DELETE FROM w WHERE id = (SELECT min(id) FROM w WHERE worker = :client_id);
UPDATE w SET id = nextval('wid') WHERE id = (SELECT max(id) FROM w WHERE worker = :client_id);
DELETE FROM acct WHERE id = :a * 4 + :client_id;
INSERT INTO acct VALUES (:a * 4 + :client_id, :client_id, 0, repeat(md5(random()::text), 100));
UPDATE c SET n = n + 1 WHERE id = 1 RETURNING n AS cn \gset
INSERT INTO hist VALUES (:client_id, :cn, clock_timestamp(), 'b');
COMMIT;
SQL
cat >"$W/rollback.sql" <<'SQL'
BEGIN;
UPDATE c SET n = n + 1 WHERE id = 1;
INSERT INTO hist VALUES (:client_id, -1, clock_timestamp(), 'rolled back');
ROLLBACK;
SQL

# Small transactions, ten larger ones (10k row updates each), small ones.
for part in 1 2; do
	pgbench -n -c 4 -j 2 -t $((TXNS_PER_CLIENT / 2)) -f "$W/a.sql@3" -f "$W/b.sql@1" -f "$W/rollback.sql@1" \
		"$SRC" >"$W/pgbench1.log" 2>&1 || {
		cat "$W/pgbench1.log" >&2
		fail "pgbench (catch-up stream)"
	}
	[ "$part" = 2 ] && break
	for k in 0 1 2 3 4 5 6 7 8 9; do
		pg_psql src postgres -c "BEGIN" -c "UPDATE bulk SET v = v + 1, pad = md5(pad) WHERE id % 10 = $k" \
			-c "UPDATE c SET n = n + 1 WHERE id = 1" -c "INSERT INTO hist VALUES (9, NULL, clock_timestamp(), 'large')" \
			-c "COMMIT" || fail "large transaction"
	done
done
"${CAPTURE[@]}" --exit-when-caught-up 2>"$W/cap1.log" || {
	cat "$W/cap1.log" >&2
	fail "capture --exit-when-caught-up"
}

# last_txseq: last txseq of the stream (sluice verify's summary).
last_txseq() {
	"$SLUICE" verify --store "$W/store" --stream k9 --trust "$W/k.pub" --json |
		python3 -c 'import json, sys
for l in sys.stdin:
    r = json.loads(l)
    if r.get("type") == "summary":
        assert r["ok"], r
        print(r["last_txseq"])'
}
LAST=$(last_txseq) || fail "verify"
SRC_N=$(pg_psql src postgres -c "SELECT n FROM c")
[ "$SRC_N" = $((LAST - 1)) ] || fail "source c.n = $SRC_N, but the stream has txseq 1..$LAST"
say "catch-up stream: txseq 1..$LAST"

APPLY=("$SLUICE" apply --store "$W/store" --stream k9 --trust "$W/k.pub" --target "$DST")
RUN=0
APPLY_PID=""
APPLY_LOG=""
start_apply() { # start_apply [ARGS...]
	RUN=$((RUN + 1))
	APPLY_LOG=$W/apply$RUN.log
	"${APPLY[@]}" "$@" 2>"$APPLY_LOG" &
	APPLY_PID=$!
}
# quiesce: wait until no session but ours is connected to the target (a killed
# apply's backend notices the closed connection and ends, rolling back).
quiesce() {
	local i
	for i in $(seq 1 300); do
		[ "$(pg_psql dst postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()")" = 0 ] && return 0
		sleep 0.02
	done
	fail "a session of a killed apply is still connected to the target after 6 s"
}
PREV=0
# check_state WHEN: c.n = progress - 1 on the quiet target, and progress never goes back.
check_state() {
	local row prog n
	row=$(pg_psql dst postgres -c "SELECT coalesce((SELECT pg_replication_origin_progress(roname, true) FROM pg_replication_origin WHERE roname = 'sluice_k9@postgres'), '0/0'), (SELECT n FROM c)")
	prog=$(python3 -c 'import sys; h, l = sys.argv[1].split("/"); print((int(h, 16) << 32) | int(l, 16))' "${row%%|*}")
	n=${row#*|}
	if [ "$prog" -ge 1 ]; then
		[ "$n" = $((prog - 1)) ] || fail "$1: target c.n = $n but origin progress is $prog (want c.n = progress - 1)"
	else
		[ -z "$n" ] || fail "$1: origin progress 0 but c has a row (n = $n)"
	fi
	[ "$prog" -ge "$PREV" ] || fail "$1: origin progress went back from $PREV to $prog"
	PREV=$prog
	PROGRESS=$prog
}
# alive PID: the process runs (kill -0 also succeeds for a zombie not yet waited for).
alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}
# check_exit: an apply that ended by itself must have exited 0.
check_exit() {
	local rc=0
	wait "$APPLY_PID" || rc=$?
	[ "$rc" -eq 0 ] || {
		tail -n 20 "$APPLY_LOG" >&2
		fail "apply run $RUN exited with status $rc"
	}
}

# ---- 1. catch-up ------------------------------------------------------------------
# Two kinds of kill. While the snapshot (txseq 1, one large transaction) is
# being applied: at random moments, the delay doubling while kills come before
# any progress (after $CATCHUP_KILLS/2 short ones). After it, until $CATCHUP_KILLS*2 kills in
# all or the end: 0-20 ms after the restarted apply was seen to move the
# origin's live progress, so that every run applies something and the number
# of kills depends little on how fast apply is on this machine (pipelined
# small transactions apply by the thousand between two polls; the ten larger
# ones do not).
kills=0
immediate=0
PROGRESS=0
MAXD=180 # ms
LASTP=-1
# kill_apply WHEN: SIGKILL the running apply, then restart it at once (the
# killed session may still hold the origin) or after checking the quiet target.
kill_apply() {
	kill -KILL "$APPLY_PID"
	wait "$APPLY_PID" 2>/dev/null
	kills=$((kills + 1))
	if [ $((RANDOM % 3)) -eq 0 ]; then
		immediate=$((immediate + 1))
		say "catch-up: apply run $RUN killed with SIGKILL $1, restarted at once"
	else
		quiesce
		check_state "after SIGKILL of catch-up run $RUN"
		say "catch-up: apply run $RUN killed with SIGKILL $1 at progress $PROGRESS of $LAST"
	fi
	start_apply --exit-when-caught-up
}
# catchup_ended: the running apply ended by itself: it must have caught up.
catchup_ended() {
	check_exit
	quiesce
	check_state "catch-up run $RUN ended"
	[ "$PROGRESS" = "$LAST" ] || fail "catch-up run $RUN exited 0 at progress $PROGRESS, before txseq $LAST"
}
# live_progress: the origin's progress as the running apply advances it.
live_progress() {
	local lsn
	lsn=$(pg_psql dst postgres -c "SELECT coalesce((SELECT pg_replication_origin_progress(roname, false) FROM pg_replication_origin WHERE roname = 'sluice_k9@postgres'), '0/0')")
	echo $(((16#${lsn%%/*} << 32) | 16#${lsn#*/}))
}
ENDED=0
start_apply --exit-when-caught-up
while [ "$PROGRESS" -lt 1 ]; do
	d=$((20 + (RANDOM * 32768 + RANDOM) % MAXD))
	until=$(($(date +%s%3N) + d))
	while [ "$(date +%s%3N)" -lt "$until" ] && alive "$APPLY_PID" && [ "$(live_progress)" -lt 1 ]; do
		sleep 0.01
	done
	if ! alive "$APPLY_PID"; then
		catchup_ended
		ENDED=1
		break
	fi
	[ "$(live_progress)" -ge 1 ] && break # the snapshot is applied: on to the progress points
	kill_apply "after $d ms"
	if [ "$PROGRESS" = "$LASTP" ] && [ "$kills" -gt $((CATCHUP_KILLS / 2)) ]; then
		[ "$MAXD" -lt 3000 ] && MAXD=$((MAXD * 2))
	else
		MAXD=180
	fi
	LASTP=$PROGRESS
	# a restart at once leaves the progress unknown: ask the target
	[ "$PROGRESS" -ge 1 ] || PROGRESS=$(live_progress)
done
snapshot_kills=$kills
if [ "$ENDED" = 0 ]; then
	# each kill comes 0-20 ms after the running apply was seen to move the
	# origin past where its run started
	while [ "$kills" -lt $((2 * CATCHUP_KILLS)) ]; do
		from=$(live_progress)
		while alive "$APPLY_PID" && [ "$(live_progress)" -le "$from" ]; do
			sleep 0.01
		done
		alive "$APPLY_PID" || break
		d=$((RANDOM % 21))
		sleep "0.$(printf '%03d' "$d")"
		alive "$APPLY_PID" || break
		kill_apply "$d ms after it moved the origin past $from"
	done
	while alive "$APPLY_PID"; do
		sleep 0.05
	done
	catchup_ended
fi
say "catch-up done after $kills kills ($snapshot_kills during the snapshot, $immediate restarted at once), $RUN apply runs"
[ "$kills" -ge "$CATCHUP_KILLS" ] || fail "only $kills kills happened during catch-up (want at least $CATCHUP_KILLS)"
# the ten larger transactions each take longer than a kill's delay
[ $((kills - snapshot_kills)) -ge 2 ] || fail "only $((kills - snapshot_kills)) kills happened after the snapshot (want at least 2)"
python3 "$HERE/compare_dbs.py" compare "$SRC" "$DST" || fail "catch-up: the target differs from the source"
[ "$(pg_psql dst postgres -c 'SELECT n FROM c')" = "$SRC_N" ] || fail "catch-up: target c.n differs from the source's $SRC_N"

# ---- 2. live ----------------------------------------------------------------------
"${CAPTURE[@]}" 2>"$W/cap-live.log" &
CAP_PID=$!
rc=0
pg_wait_streaming "$CAP_PID" "$W/cap-live.log" || rc=$?
[ "$rc" != 1 ] || fail "live capture exited before streaming"
pgbench -n -c 4 -j 2 -T "$LIVE_SECONDS" -R "$LIVE_RATE" -f "$W/a.sql@3" -f "$W/b.sql@1" -f "$W/rollback.sql@1" \
	"$SRC" >"$W/pgbench2.log" 2>&1 &
BENCH_PID=$!
LIVE0=$SECONDS
start_apply
kills=0
while [ "$kills" -lt "$KILLS" ] || [ $((SECONDS - LIVE0)) -lt "$LIVE_SECONDS" ]; do
	sleep "$((RANDOM % 2)).$(printf '%03d' $((RANDOM % 1000)))"
	alive "$APPLY_PID" || {
		check_exit
		tail -n 20 "$APPLY_LOG" >&2
		fail "following apply run $RUN exited by itself"
	}
	alive "$CAP_PID" || {
		tail -n 20 "$W/cap-live.log" >&2
		fail "live capture exited by itself"
	}
	kill -KILL "$APPLY_PID"
	wait "$APPLY_PID" 2>/dev/null
	kills=$((kills + 1))
	if [ $((RANDOM % 3)) -eq 0 ]; then
		say "live: apply run $RUN killed with SIGKILL, restarted at once"
	else
		quiesce
		check_state "after SIGKILL of live run $RUN"
		say "live: apply run $RUN killed with SIGKILL at progress $PROGRESS"
	fi
	start_apply
done
wait "$BENCH_PID" || {
	cat "$W/pgbench2.log" >&2
	fail "pgbench (live)"
}
grep -E '^number of transactions actually processed' "$W/pgbench2.log"
pg_psql src postgres -c "BEGIN" -c "INSERT INTO marker VALUES (1)" -c "UPDATE c SET n = n + 1" -c "COMMIT" || fail "marker"
arrived=0
for _ in $(seq 1 900); do
	[ "$(pg_psql dst postgres -c 'SELECT count(*) FROM marker')" = 1 ] && arrived=1 && break
	kill -0 "$APPLY_PID" 2>/dev/null || break
	sleep 0.1
done
[ "$arrived" = 1 ] || {
	tail -n 20 "$APPLY_LOG" >&2
	fail "the marker transaction did not reach the target within 90 s"
}
kill -TERM "$APPLY_PID"
rc=0
wait "$APPLY_PID" || rc=$?
[ "$rc" -eq 0 ] || fail "apply run $RUN exited with status $rc on SIGTERM (expected 0)"
kill -TERM "$CAP_PID"
rc=0
wait "$CAP_PID" || rc=$?
[ "$rc" -eq 0 ] || fail "live capture exited with status $rc on SIGTERM (expected 0)"
say "live done after $kills kills, $RUN apply runs in all"

LAST=$(last_txseq) || fail "verify"
SRC_N=$(pg_psql src postgres -c "SELECT n FROM c")
[ "$SRC_N" = $((LAST - 1)) ] || fail "source c.n = $SRC_N, but the stream has txseq 1..$LAST"
quiesce
check_state "at the end"
[ "$PROGRESS" = "$LAST" ] || fail "origin progress $PROGRESS, want the last txseq $LAST"
[ "$(pg_psql dst postgres -c 'SELECT n FROM c')" = "$SRC_N" ] || fail "target c.n differs from the source's $SRC_N"
python3 "$HERE/compare_dbs.py" compare "$SRC" "$DST" || fail "the target differs from the source"
DUP=$(pg_psql dst postgres -c "SELECT count(*) FROM (SELECT c_n FROM hist WHERE c_n IS NOT NULL GROUP BY c_n HAVING count(*) > 1) d")
[ "$DUP" = 0 ] || fail "$DUP hist rows appear more than once on the target"
# No apply run failed: every error line would be in a log.
if grep -h '"level":"error"' "$W"/apply*.log >&2; then
	fail "apply logged errors (above)"
fi
echo "apply kill9: target c.n = $SRC_N = source, origin progress = last txseq $LAST"
echo "test_apply_kill9: passed ($((SECONDS - T0)) s)"
