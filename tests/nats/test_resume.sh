#!/usr/bin/env bash
# A reader of a long JetStream stream starts near its progress, not at the
# stream's first message (one nats-server, PostgreSQL source and target):
#  1. capture 1,500 transactions (400/s) into JetStream in small segments (4 KiB);
#     apply from nothing replays the whole stream;
#  2. 40 more transactions; apply restarted from its progress starts its
#     ordered consumer at the first message of the segment holding the next
#     txseq (found by binary search over direct gets) and replays only the
#     messages from there: its log names the stream sequence and the count;
#  3. the target equals the source, the stream verifies whole, and inspect
#     --from on JetStream prints what it prints on a directory copy.
# Usage: test_resume.sh SLUICE NATSTOOL
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
NATSTOOL=$2
pg_step_checks nats_resume
nats_start || die "could not start nats-server"

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
export PATH=$PGBIN:$PATH
for db in src dst; do
	pg_psql $db postgres -c "CREATE TABLE t (id bigserial PRIMARY KEY, v text NOT NULL)" || die "table on $db"
done
echo "INSERT INTO t (v) VALUES (md5(random()::text));" >"$W/insert.sql"

STORE=$(nats_store SLUICE)
CAP=("$SLUICE" capture --source "$(pg_conninfo src)" --store "$STORE" --stream one --key "$W/k.key"
	--no-progress --segment-size 4096)
APPLY=("$SLUICE" apply --store "$STORE" --stream one --trust "$W/k.pub" --target "$(pg_conninfo dst)"
	--exit-when-caught-up)
"${CAP[@]}" --create --exit-when-caught-up 2>"$W/cap0.log" || {
	cat "$W/cap0.log" >&2
	die "capture --create"
}

# ---- 1. a long stream, applied from the start -------------------------------------
# Capture follows a paced workload, so that most transactions are a frame (a
# message) of their own.
"${CAP[@]}" 2>"$W/cap1.log" &
CAP_PID=$!
pg_wait_streaming $CAP_PID "$W/cap1.log" || die "capture did not start"
pgbench -n -c 1 -t 1500 -R 400 -f "$W/insert.sql" "$(pg_conninfo src)" >"$W/pgbench1.log" 2>&1 || die "pgbench 1"
kill -TERM $CAP_PID
wait $CAP_PID || die "capture 1 stopped with status $?"
L1=$(natstool last-seq SLUICE sluice.one.frames) || die "last-seq"
"${APPLY[@]}" 2>"$W/apply1.log"
check "apply from nothing (status $?)"
! grep -q "reading from stream sequence" "$W/apply1.log"
check "apply from nothing replays the stream from its first message"
say "stream of $L1 messages applied from the start"

# ---- 2. a restart reads from near its progress ------------------------------------
pgbench -n -c 1 -t 40 -f "$W/insert.sql" "$(pg_conninfo src)" >"$W/pgbench2.log" 2>&1 || die "pgbench 2"
"${CAP[@]}" --exit-when-caught-up 2>"$W/cap2.log" || die "capture 2"
L2=$(natstool last-seq SLUICE sluice.one.frames) || die "last-seq"
"${APPLY[@]}" 2>"$W/apply2.log"
check "apply restarted from its progress (status $?)"
START=$(sed -n 's/.*reading from stream sequence \([0-9]*\) .*/\1/p' "$W/apply2.log" | head -1)
REPLAYED=$(sed -n 's/.* \([0-9]*\) messages replayed from stream sequence.*/\1/p' "$W/apply2.log" | head -1)
echo "messages: $L1 before, $L2 after; restart started at $START and replayed ${REPLAYED:-?}"
# The segment holding the next txseq begins within a few segments' worth of
# messages of the stream's end before the 40 new transactions.
[ -n "$START" ] && [ "$START" -le "$((L1 + 1))" ] && [ "$START" -gt "$((L1 - 100))" ] && [ "$L1" -gt 500 ]
check "the restarted apply starts at stream sequence $START, near its progress ($L1)"
[ -n "$REPLAYED" ] && [ "$REPLAYED" -le "$((L2 - START + 1))" ] && [ "$REPLAYED" -lt "$((L2 / 4))" ]
check "it replays $REPLAYED of $L2 messages"
! grep -q '"level":"error"' "$W/apply2.log"
check "no error in the restarted apply's log"

# ---- 3. exact --------------------------------------------------------------------
python3 "$HERE/../pg/compare_dbs.py" compare "$(pg_conninfo src)" "$(pg_conninfo dst)"
check "the target equals the source"
"$SLUICE" verify --store "$STORE" --stream one --trust "$W/k.pub" >"$W/verify.out" 2>&1
check "the JetStream stream verifies whole"
mkdir -p "$W/dir"
"$SLUICE" copy --from "$STORE" --to "$W/dir" --stream one --trust "$W/k.pub" 2>"$W/copy.log" ||
	die "copy to a directory"
# The copy holds the sealed segments: inspect from 20 transactions before their end.
NEXT=$(sed -n 's/.*next txseq \([0-9]*\).*/\1/p' "$W/copy.log" | tail -1)
MID=$((${NEXT:-21} - 20))
"$SLUICE" inspect --store "$STORE" --stream one --trust "$W/k.pub" --from "$MID" --records >"$W/insp-nats.out" 2>"$W/insp-nats.log"
check "inspect --from $MID on JetStream (status $?)"
"$SLUICE" inspect --store "$W/dir" --stream one --trust "$W/k.pub" --from "$MID" --records >"$W/insp-dir.out" 2>&1
# What the directory prints before its summary line, JetStream prints first.
head -n -1 "$W/insp-dir.out" >"$W/insp-dir.body"
[ "$(grep -c ' commit ' "$W/insp-dir.body")" = 20 ] &&
	head -c "$(stat -c %s "$W/insp-dir.body")" "$W/insp-nats.out" | cmp -s - "$W/insp-dir.body" &&
	grep -q "reading from stream sequence" "$W/insp-nats.log"
check "inspect --from on JetStream starts mid-stream and prints what it prints on the directory"
[ "$FAILS" = 0 ] || {
	tail -n 5 "$W/apply2.log" "$W/insp-nats.log" >&2
	die "$FAILS checks failed"
}
echo "nats_resume: all checks passed"
