#!/usr/bin/env bash
# Exactly-once capture under kill -9: while a concurrent pgbench workload
# commits many small transactions (inserts, updates incl. key updates, deletes,
# multi-statement transactions, savepoints, rollbacks) and a few large ones
# (thousands of rows, so frames are cut inside a transaction), capture is
# killed with SIGKILL at random moments and restarted with the same command,
# and stopped once with SIGTERM (must exit 0). Afterwards the stream verifies,
# replays to exactly the source tables, holds every inserted id exactly once
# with transactions in commit (LSN) order, and holds exactly one transaction
# per committed workload transaction (each inserts one row into txlog).
# Usage: test_capture_kill9.sh SLUICE      (SEED=N to repeat a kill schedule)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$SEED
echo "kill9: seed $SEED (rerun with SEED=$SEED)"

# Sanitized builds are several times slower: keep the load they have to follow smaller.
DURATION=20
RATE=500
KILLS=8
[ "${SLUICE_TEST_LONG:-}" = 1 ] && KILLS=20 # tools/test.sh --long
BIG_TXNS=9
if [ -n "${SLUICE_SANITIZED:-}" ]; then
	RATE=150
	BIG_TXNS=6
	# the sanitizers check the same paths; the kill count is the gcc pass's job
	[ "${SLUICE_TEST_LONG:-}" = 1 ] || KILLS=4
fi

fail() {
	echo "kill9: FAILED: $*" >&2
	echo "--- last lines of the server log:" >&2
	tail -n 15 "$PG_HARNESS_DIR/src/server.log" >&2 || true
	exit 1
}

pg_start src
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
SRC=$(pg_conninfo src)

pg_psql src postgres <<'SQL'
CREATE SEQUENCE wid;
CREATE TABLE w (id bigint PRIMARY KEY, worker int NOT NULL, n int NOT NULL, pad text);
CREATE INDEX w_worker ON w (worker, id);
-- acct rows belong to worker id % 4, so pgbench clients never wait on each other.
CREATE TABLE acct (id int PRIMARY KEY, worker int NOT NULL, bal bigint NOT NULL, note text, blob text);
ALTER TABLE acct ALTER COLUMN blob SET STORAGE EXTERNAL;  -- updates send it as unchanged TOAST
-- One row per committed workload transaction.
CREATE TABLE txlog (id bigserial PRIMARY KEY, worker int NOT NULL, kind text NOT NULL);
SQL

CAPTURE=("$SLUICE" capture --source "$SRC" --store "$W/store" --stream kill9 --key "$W/k.key"
	--create --no-progress)
RUN=0
CAP_PID=""
CAP_LOG=""

# start_capture runs capture in the background; its log goes to $W/capN.log.
start_capture() {
	RUN=$((RUN + 1))
	CAP_LOG=$W/cap$RUN.log
	"${CAPTURE[@]}" 2>"$CAP_LOG" &
	CAP_PID=$!
}

# wait_streaming waits until the running capture has started streaming.
wait_streaming() {
	local rc=0
	pg_wait_streaming "$CAP_PID" "$CAP_LOG" || rc=$?
	[ "$rc" != 1 ] || fail "capture run $RUN exited before streaming"
	[ "$rc" != 2 ] || fail "capture run $RUN did not start streaming within 30 s"
}

# check_alive fails when the capture exited by itself (it only stops when told to).
check_alive() {
	if ! kill -0 "$CAP_PID" 2>/dev/null; then
		local rc=0
		wait "$CAP_PID" || rc=$?
		tail -n 20 "$CAP_LOG" >&2
		fail "capture run $RUN exited by itself with status $rc"
	fi
}

start_capture
wait_streaming

# Rows for the update/delete workload, in a transaction of its own (with its txlog row).
pg_psql src postgres <<'SQL'
BEGIN;
INSERT INTO acct SELECT g, g % 4, 0, 'new', repeat(md5(g::text), 100) FROM generate_series(0, 399) g;
INSERT INTO w SELECT nextval('wid'), g % 4, 0, 'seed' FROM generate_series(1, 400) g;
INSERT INTO txlog (worker, kind) VALUES (-1, 'setup');
COMMIT;
SQL

# pgbench scripts: every script that commits inserts exactly one txlog row.
cat >"$W/ins.sql" <<'SQL'
BEGIN;
INSERT INTO w (id, worker, n, pad) VALUES (nextval('wid'), :client_id, 0, md5(random()::text));
INSERT INTO txlog (worker, kind) VALUES (:client_id, 'ins');
COMMIT;
SQL
cat >"$W/multi.sql" <<'SQL'
\set a random(0, 99)
BEGIN;
INSERT INTO w SELECT nextval('wid'), :client_id, g, md5(random()::text) FROM generate_series(1, 3) g;
UPDATE acct SET bal = bal + 1 WHERE id = :a * 4 + :client_id;
DELETE FROM w WHERE id = (SELECT min(id) FROM w WHERE worker = :client_id);
INSERT INTO txlog (worker, kind) VALUES (:client_id, 'multi');
COMMIT;
SQL
cat >"$W/upd.sql" <<'SQL'
\set a random(0, 99)
BEGIN;
UPDATE w SET n = n + 1, pad = md5(coalesce(pad, '')) WHERE id = (SELECT max(id) FROM w WHERE worker = :client_id);
UPDATE acct SET bal = bal - 1, note = 'u' || :client_id WHERE id = :a * 4 + :client_id;
INSERT INTO txlog (worker, kind) VALUES (:client_id, 'upd');
COMMIT;
SQL
cat >"$W/keyupd.sql" <<'SQL'
BEGIN;
UPDATE w SET id = nextval('wid') WHERE id = (SELECT max(id) FROM w WHERE worker = :client_id);
INSERT INTO txlog (worker, kind) VALUES (:client_id, 'keyupd');
COMMIT;
SQL
cat >"$W/delre.sql" <<'SQL'
\set a random(0, 99)
BEGIN;
DELETE FROM acct WHERE id = :a * 4 + :client_id;
INSERT INTO acct VALUES (:a * 4 + :client_id, :client_id, 0, 'reborn', repeat(md5(random()::text), 100));
DELETE FROM w WHERE id = (SELECT max(id) FROM w WHERE worker = :client_id);
INSERT INTO txlog (worker, kind) VALUES (:client_id, 'delre');
COMMIT;
SQL
cat >"$W/savept.sql" <<'SQL'
BEGIN;
INSERT INTO w VALUES (nextval('wid'), :client_id, 1, 'kept');
SAVEPOINT s;
INSERT INTO w VALUES (nextval('wid'), :client_id, 2, 'rolled back');
ROLLBACK TO SAVEPOINT s;
INSERT INTO txlog (worker, kind) VALUES (:client_id, 'savept');
COMMIT;
SQL
cat >"$W/abort.sql" <<'SQL'
BEGIN;
INSERT INTO w VALUES (nextval('wid'), :client_id, 3, 'aborted');
INSERT INTO txlog (worker, kind) VALUES (:client_id, 'aborted');
ROLLBACK;
SQL

# A fixed number of transactions (about DURATION s at RATE), not -T: when -T
# ends, a transaction can commit on the server without pgbench counting it.
# One thread (-j 1): pgbench adds up its per-script counts without a lock
# ("XXX could use a mutex here, but we choose not to"), so with several
# threads an increment can be lost and the count comes out one short.
PATH=$PGBIN:$PATH pgbench -n -c 4 -j 1 -t $((DURATION * RATE / 4)) -R "$RATE" \
	-f "$W/ins.sql@10" -f "$W/multi.sql@5" -f "$W/upd.sql@5" -f "$W/keyupd.sql@1" \
	-f "$W/delre.sql@3" -f "$W/savept.sql@2" -f "$W/abort.sql@1" \
	"$SRC" >"$W/pgbench.log" 2>&1 &
PGBENCH_PID=$!

# Large transactions (2 to 3 MB of rows each, more than a frame) between the small ones.
# The pad is hex digits of many hashes: it does not compress well, so frames of a
# large transaction show up as a jump in the segment size (see kill_in_large_txn).
PAD="md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) || md5((g + 3)::text) || md5((g + 4)::text) || md5((g + 5)::text) || md5((g + 6)::text) || md5((g + 7)::text)"
(
	for i in $(seq 1 "$BIG_TXNS"); do
		sleep 1.5
		case $((i % 3)) in
		1) sql="INSERT INTO w SELECT nextval('wid'), 9, g, $PAD FROM generate_series(1, 7000) g" ;;
		2) sql="UPDATE w SET n = n + 1, pad = md5(pad) || pad WHERE worker = 9 AND id % 2 = 0" ;;
		0) sql="DELETE FROM w WHERE worker = 9 AND id % 3 = 0" ;;
		esac
		pg_psql src postgres -c "BEGIN" -c "$sql" \
			-c "INSERT INTO txlog (worker, kind) VALUES (9, 'big')" -c "COMMIT"
	done
) >"$W/big.log" 2>&1 &
BIG_PID=$!

seg_bytes() {
	local f n=0
	for f in "$W"/store/kill9/*.seg; do
		[ -f "$f" ] && n=$((n + $(stat -c %s "$f")))
	done
	echo "$n"
}

# kill_in_large_txn waits (up to 2 s) until the segment grows by more than
# 150 kB between two looks 10 ms apart, which only the frames of a large
# transaction do, and kills capture right then: most likely after an open
# frame and before its commit is durable.
kill_in_large_txn() {
	local last now i
	last=$(seg_bytes)
	for i in $(seq 1 200); do
		sleep 0.01
		now=$(seg_bytes)
		if [ $((now - last)) -gt 150000 ]; then
			kill -KILL "$CAP_PID"
			return 0
		fi
		last=$now
	done
	kill -KILL "$CAP_PID"
	return 1
}

# Kill capture at random moments while the workload runs (at least $KILLS times),
# every third time while it writes a large transaction; stop it once with SIGTERM.
T0=$SECONDS
SIGTERM_AT=$((RANDOM % 3 + 3))
k=0
while [ "$k" -lt "$KILLS" ] || [ $((SECONDS - T0)) -lt $((DURATION - 2)) ]; do
	k=$((k + 1))
	sleep "$(printf '0.%03d' $((RANDOM % 1000)))"
	sleep "$(printf '0.%03d' $((200 + RANDOM % 300)))"
	check_alive
	if [ "$k" -eq "$SIGTERM_AT" ]; then
		wait_streaming # SIGTERM before the handlers are installed would not be a clean stop
		kill -TERM "$CAP_PID"
		rc=0
		wait "$CAP_PID" || rc=$?
		[ "$rc" -eq 0 ] || {
			tail -n 20 "$CAP_LOG" >&2
			fail "capture run $RUN exited with status $rc on SIGTERM (expected 0)"
		}
		grep -q '"msg":"capture stopped' "$CAP_LOG" || fail "capture run $RUN: no 'capture stopped' after SIGTERM"
		echo "kill9: $((SECONDS - T0)) s: capture run $RUN stopped by SIGTERM with status 0"
	elif [ $((k % 3)) -eq 0 ]; then
		how="at a random moment (no large transaction came)"
		kill_in_large_txn && how="while it wrote a large transaction"
		{ wait "$CAP_PID"; } 2>/dev/null || true
		echo "kill9: $((SECONDS - T0)) s: capture run $RUN killed with SIGKILL $how"
	else
		{
			kill -KILL "$CAP_PID"
			wait "$CAP_PID"
		} 2>/dev/null || true
		echo "kill9: $((SECONDS - T0)) s: capture run $RUN killed with SIGKILL"
	fi
	start_capture
done

wait "$BIG_PID" || {
	cat "$W/big.log" >&2
	fail "the large transactions failed"
}
wait "$PGBENCH_PID" || {
	cat "$W/pgbench.log" >&2
	fail "pgbench failed"
}
# The last background capture dies too; the final run recovers after it.
sleep "$(printf '0.%03d' $((200 + RANDOM % 800)))"
check_alive
{
	kill -KILL "$CAP_PID"
	wait "$CAP_PID"
} 2>/dev/null || true
echo "kill9: $((SECONDS - T0)) s: workload done, capture run $RUN killed with SIGKILL"
# libmongoc's counters (a shared memory object per process) must not outlive a killed capture:
# left behind, they made a later process with the same pid print a raw warning on stderr.
[ ! -e "/dev/shm/mongoc-$CAP_PID" ] || fail "killed capture $CAP_PID left /dev/shm/mongoc-$CAP_PID behind"
grep -E '^(number of transactions actually processed|number of failed transactions|tps)' "$W/pgbench.log" || true

RUN=$((RUN + 1))
rc=0
T1=$SECONDS
"${CAPTURE[@]}" --exit-when-caught-up 2>"$W/cap$RUN.log" || rc=$?
[ "$rc" -eq 0 ] || {
	tail -n 20 "$W/cap$RUN.log" >&2
	fail "final capture (--exit-when-caught-up) exited with status $rc"
}
echo "kill9: $((SECONDS - T0)) s: final capture run $RUN caught up in $((SECONDS - T1)) s"

# What the restarts had to recover (informational: depends on the kill moments).
python3 - "$W" "$RUN" <<'PY'
import json, re, sys
w, runs = sys.argv[1], int(sys.argv[2])
cut = dup = 0
for i in range(1, runs + 1):
    try:
        lines = open("%s/cap%d.log" % (w, i)).readlines()
    except FileNotFoundError:  # killed before it opened its log
        continue
    for line in lines:
        try:
            msg = json.loads(line).get("msg", "")
        except ValueError:
            continue
        if "left by an interrupted writer" in msg:
            cut += 1
        m = re.search(r"(\d+) already in the stream", msg)
        if m:
            dup += int(m.group(1))
print("kill9: %d capture runs; %d recoveries cut an unfinished transaction or torn frame; "
      "%d transactions skipped as already in the stream (runs that stopped cleanly)" % (runs, cut, dup))
PY

# Checks.
"$SLUICE" verify --store "$W/store" --stream kill9 --trust "$W/k.pub" || fail "sluice verify"
SS=(python3 "$HERE/stream_state.py")
SSARGS=(--sluice "$SLUICE" --store "$W/store" --stream kill9 --trust "$W/k.pub")
"${SS[@]}" compare "${SSARGS[@]}" --conninfo "$SRC" --tables public.w,public.acct,public.txlog ||
	fail "the stream does not replay to the source tables"
"${SS[@]}" check-once "${SSARGS[@]}" --table public.w --column id ||
	fail "w.id: not every inserted id exactly once in LSN order"
"${SS[@]}" check-once "${SSARGS[@]}" --table public.txlog --column id ||
	fail "txlog.id: not every inserted id exactly once in LSN order"

"${SS[@]}" summary "${SSARGS[@]}" >"$W/summary.json"
"$SLUICE" inspect --store "$W/store" --stream kill9 --trust "$W/k.pub" --json >"$W/frames.json"
TXLOG=$(pg_psql src postgres -c "SELECT count(*) FROM txlog")
KINDS=$(pg_psql src postgres -c "SELECT string_agg(kind || '=' || n, ' ' ORDER BY kind) FROM (SELECT kind, count(*) n FROM txlog GROUP BY kind) k")
python3 - "$W/summary.json" "$W/frames.json" "$TXLOG" "$KINDS" "$W/pgbench.log" "$BIG_TXNS" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1]))
txlog = int(sys.argv[3])
# pgbench's own count of committed transactions (every script but abort.sql commits).
committed, script = 0, None
for line in open(sys.argv[5]):
    m = re.match(r"SQL script \d+: (\S+)", line)
    if m:
        script = m.group(1)
    m = re.match(r" - (\d+) transactions", line)
    if m and script and not script.endswith("abort.sql"):
        committed += int(m.group(1))
    m = re.match(r"number of failed transactions: (\d+)", line)
    if m:
        assert int(m.group(1)) == 0, "pgbench: failed transactions"
committed += int(sys.argv[6]) + 1  # the large ones and the setup
print("kill9: pgbench committed %d transactions (with the large ones and the setup), txlog has %d rows"
      % (committed, txlog))
assert committed == txlog, "pgbench's count differs from txlog"
c = s["counts"]
begins, commits = c.get("begin", 0), c.get("commit", 0)
print("kill9: %d committed workload transactions (%s), %d Begin and %d Commit records, txseq %s..%s"
      % (txlog, sys.argv[4], begins, commits, s["first_txseq"], s["last_txseq"]))
assert "aborted" not in sys.argv[4], "an aborted transaction is in txlog"
assert begins == txlog, "Begin records %d != committed transactions %d" % (begins, txlog)
assert commits == txlog, "Commit records %d != committed transactions %d" % (commits, txlog)
assert s["first_txseq"] == 1 and s["last_txseq"] == txlog, s
assert not s["snapshots"], "unexpected snapshot"
assert s["begins_in_lsn_order"], "Begin records not in LSN order"
frames = [json.loads(l) for l in open(sys.argv[2])]
frames = [f for f in frames if f.get("type") == "frame"]
opened = [f for f in frames if "open" in f["flags"].split(",")]
# Large transactions span several frames (cut while open, or continued).
spanning = [f for f in frames if "open" in f["flags"].split(",") or "cont" in f["flags"].split(",")]
print("kill9: %d frames, %d written while a transaction was open, %d open or continuing"
      % (len(frames), len(opened), len(spanning)))
assert spanning, "no frame was cut inside a transaction: the large transactions did not span frames"
PY
echo "kill9: rows in the source: w $(pg_psql src postgres -c 'SELECT count(*) FROM w'), acct $(pg_psql src postgres -c 'SELECT count(*) FROM acct'), txlog $TXLOG"
echo "test_capture_kill9: passed ($((SECONDS - T0)) s after the workload started)"
