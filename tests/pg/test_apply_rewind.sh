#!/usr/bin/env bash
# A capture killed in the middle of a large transaction, while apply follows
# the stream live: apply has already sent part of that transaction to the
# target when the restarted capture cuts the unfinished transaction off the
# segment and writes it again (same txseq). The reader reports the rewrite
# (REWIND); apply must roll its part back, take the transaction again from the
# start and go on, not stop on a "txseq gap".
# Checked: the rewrite happened while apply was inside the transaction (the
# reader's warning and apply's rollback are in its log), apply never refused
# the stream, and after the second capture the target equals the source with
# origin progress at the last transaction; apply's counters count every row
# once (not the part that was rolled back).
# Usage: test_apply_rewind.sh SLUICE
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
fail() {
	echo "rewind: FAILED: $*" >&2
	[ -f "$W/apply.log" ] && tail -n 20 "$W/apply.log" >&2
	exit 1
}
ROWS=${REWIND_ROWS:-600000}
# Sanitized capture is slower: half the rows leave the kill as far from the
# transaction's end, and apply half the rows to take again.
[ "${SLUICE_SANITIZED:-0}" = 1 ] && ROWS=${REWIND_ROWS:-300000}

# The server spills the transaction and sends it at commit, as fast as capture reads.
pg_start src "logical_decoding_work_mem = 64kB"
pg_start tgt
SRC=$(pg_conninfo src)
TGT=$(pg_conninfo tgt)
TABLES="CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL);
	CREATE TABLE small (id integer PRIMARY KEY, note text);"
pg_psql src postgres -c "$TABLES"
pg_psql tgt postgres -c "$TABLES"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1
CAP=(capture --source "$SRC" --store "$W/store" --stream rw --key "$W/k.key"
	--exit-when-caught-up --no-progress)
"$SLUICE" "${CAP[@]}" --create 2>"$W/cap0.log"
pg_psql src postgres -c "INSERT INTO small VALUES (1, 'before')"
"$SLUICE" "${CAP[@]}" 2>"$W/cap1.log"

# apply follows the stream from here on
"$SLUICE" --log-format text apply --store "$W/store" --stream rw --trust "$W/k.pub" \
	--target "$TGT" --follow 2>"$W/apply.log" &
APPLY=$!
for _ in $(seq 1 100); do
	[ "$(pg_psql tgt postgres -c "SELECT count(*) FROM small")" = 1 ] && break
	sleep 0.1
done
[ "$(pg_psql tgt postgres -c "SELECT count(*) FROM small")" = 1 ] || fail "apply did not start"

pg_psql src postgres -c "INSERT INTO big SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, $ROWS) i"
pg_psql src postgres -c "INSERT INTO small VALUES (2, 'after')"

# Kill capture once several frames of the large transaction are in the store
# (apply, slower than capture, is then inside it).
seg_bytes() { du -sb "$W/store" | cut -f1; }
base=$(seg_bytes)
"$SLUICE" "${CAP[@]}" 2>"$W/cap2.log" &
CAPPID=$!
killed=0
for _ in $(seq 1 3000); do
	if [ $(($(seg_bytes) - base)) -gt 3000000 ]; then
		kill -9 "$CAPPID"
		killed=1
		break
	fi
	kill -0 "$CAPPID" 2>/dev/null || break
	sleep 0.01
done
wait "$CAPPID" 2>/dev/null || true
[ "$killed" = 1 ] || fail "capture finished before it could be killed (raise REWIND_ROWS)"
echo "rewind: capture killed after $(($(seg_bytes) - base)) bytes of the transaction"
sleep 1
# The restarted capture cuts the unfinished transaction and writes it again.
"$SLUICE" "${CAP[@]}" 2>"$W/cap3.log" || { cat "$W/cap3.log" >&2; fail "second capture"; }
grep -q 'cut unfinished transaction' "$W/cap3.log" "$W/apply.log" ||
	fail "no unfinished transaction was cut: the scenario did not happen"

LAST=$("$SLUICE" verify --store "$W/store" --stream rw --trust "$W/k.pub" --json |
	python3 -c 'import json, sys
for l in sys.stdin:
    r = json.loads(l)
    if r.get("type") == "summary":
        assert r["ok"], r
        print(r["last_txseq"])')
want=$(printf '0/%X' "$LAST")
for _ in $(seq 1 600); do
	kill -0 "$APPLY" 2>/dev/null || break
	got=$(pg_psql tgt postgres -c "SELECT coalesce((SELECT pg_replication_origin_progress('sluice_rw@postgres', true)), '0/0')")
	[ "$got" = "$want" ] && break
	sleep 0.2
done
kill -0 "$APPLY" 2>/dev/null || { wait "$APPLY" || true; fail "apply exited while following"; }
kill -TERM "$APPLY"
wait "$APPLY" || fail "apply did not exit cleanly on SIGTERM"
grep -q 'was rewritten after offset' "$W/apply.log" ||
	fail "apply's reader did not see the rewrite (it was not inside the transaction)"
if grep -q 'txseq gap\|refusing stream' "$W/apply.log"; then
	fail "apply refused the stream after the rewrite"
fi
[ "$got" = "$want" ] || fail "origin progress $got, want $want (txseq $LAST)"
# The counters leave out what was rolled back: every row is counted once.
last=$(grep 'conflicts:' "$W/apply.log" | tail -1)
[[ "$last" == *"apply: $LAST transactions (txseq 1..$LAST), $((ROWS + 2)) inserts, 0 updates"* ]] ||
	fail "counters: $last (want $LAST transactions, $((ROWS + 2)) inserts)"
python3 "$HERE/compare_dbs.py" compare "$SRC" "$TGT" --tables public.big,public.small ||
	fail "target differs from the source"
echo "test_apply_rewind: passed ($ROWS rows in the cut transaction, txseq $LAST)"
