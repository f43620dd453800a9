#!/usr/bin/env bash
# Key rotation with a real source (docs/format.md §8.4): capture with key A,
# sluice rotate-key A -> B while capture is stopped, then capture goes on with
# B (given A's public key for recovery) across restarts. The old key may no
# longer write; verify passes trusting A alone (B is reached through the
# handover) and fails trusting B alone; apply from txseq 1 trusting A replays
# the source exactly, and apply resumes after the rotation trusting the root
# and the current key (as README advises).
# Usage: test_capture_rotate.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/harness.sh"
pg_test_init "$1"
fail=0
expect() { # expect NAME EXIT GOT PATTERN LOGFILE -- the command ran before
	local name=$1 want=$2 got=$3 pattern=$4 log=$5
	if [ "$got" != "$want" ] || ! grep -qE -- "$pattern" "$log"; then
		echo "FAIL: $name: exit $got (want $want), log:" >&2
		tail -n 20 "$log" >&2
		fail=$((fail + 1))
	else
		echo "ok: $name"
	fi
}

"$SLUICE" keygen --out "$W/a" >/dev/null 2>&1
"$SLUICE" keygen --out "$W/b" >/dev/null 2>&1
AID=$(cut -d' ' -f2 "$W/a.pub")
BID=$(cut -d' ' -f2 "$W/b.pub")
pg_start src
pg_start dst
SRC=$(pg_conninfo src)
pg_psql src postgres -c "CREATE TABLE t (id int PRIMARY KEY, v text, n int)" >/dev/null
pg_psql dst postgres -c "CREATE TABLE t (id int PRIMARY KEY, v text, n int)" >/dev/null
load() { # load FROM TO: one transaction per ten rows, then updates and a delete
	for s in $(seq "$1" 10 "$2"); do
		echo "INSERT INTO t SELECT g, 'row ' || g, 0 FROM generate_series($s, $((s + 9))) g;"
	done | pg_psql src postgres >/dev/null
	pg_psql src postgres -c "UPDATE t SET n = n + 1 WHERE id % 3 = 0" >/dev/null
	pg_psql src postgres -c "DELETE FROM t WHERE id = $(($2 - 4))" >/dev/null
}
cap() { "$SLUICE" --log-format text capture --source "$SRC" --store "$W/store" --stream rot \
	--no-progress --exit-when-caught-up "$@"; }

cap --key "$W/a.key" --create 2>"$W/c0.log"
expect "slot and publication created" 0 $? "capture stopped" "$W/c0.log"
load 1 50
cap --key "$W/a.key" 2>"$W/c1.log"
expect "capture with A" 0 $? "capture stopped" "$W/c1.log"

"$SLUICE" --log-format text rotate-key --store "$W/store" --stream rot --key "$W/a.key" \
	--next "$W/b.pub" --reason "test" >"$W/rot.out" 2>"$W/rot.log"
expect "rotate-key A -> B" 0 $? "handed over to $BID" "$W/rot.log"

load 51 100
cap --key "$W/a.key" 2>"$W/c2.log"
expect "the old key no longer writes" 3 $? "key in force at its end is $BID" "$W/c2.log"
cap --key "$W/b.key" 2>"$W/c3.log"
expect "B without A's public key: refused with a hint" 3 $? "signed by key $AID.*--trust" "$W/c3.log"
cap --key "$W/b.key" --trust "$W/a.pub" 2>"$W/c4.log"
expect "capture with B after the rotation" 0 $? "capture stopped" "$W/c4.log"
load 101 150
cap --key "$W/b.key" --trust "$W/a.pub" 2>"$W/c5.log"
expect "capture with B restarts" 0 $? "capture stopped" "$W/c5.log"

"$SLUICE" verify --store "$W/store" --stream rot --trust "$W/a.pub" --strict >"$W/v1.txt" 2>&1
expect "verify trusting the root A alone" 0 $? ": OK" "$W/v1.txt"
"$SLUICE" verify --store "$W/store" --stream rot --trust "$W/b.pub" >"$W/v2.txt" 2>&1
expect "verify trusting B alone" 1 $? "signed by key $AID, which is not trusted" "$W/v2.txt"
"$SLUICE" inspect --store "$W/store" --stream rot --trust "$W/a.pub" --records --json >"$W/r.json"
expect "the handover is in the stream" 0 $? "\"key_handover\".*\"next_key\":\"$BID\"" "$W/r.json"

# Apply from the start trusting A only, then compare.
"$SLUICE" --log-format text apply --store "$W/store" --stream rot --trust "$W/a.pub" \
	--target "$(pg_conninfo dst)" --exit-when-caught-up 2>"$W/a1.log"
expect "apply from txseq 1 trusting A" 0 $? "." "$W/a1.log"
if python3 "$HERE/compare_dbs.py" compare "$SRC" "$(pg_conninfo dst)" --tables public.t; then
	echo "ok: target equals source"
else
	echo "FAIL: target differs from source" >&2
	fail=$((fail + 1))
fi

# More changes; apply resumes where it stopped, trusting the root and the current key.
load 151 200
cap --key "$W/b.key" --trust "$W/a.pub" 2>"$W/c6.log"
expect "capture with B again" 0 $? "capture stopped" "$W/c6.log"
"$SLUICE" --log-format text apply --store "$W/store" --stream rot --trust "$W/a.pub" \
	--trust "$W/b.pub" --target "$(pg_conninfo dst)" --exit-when-caught-up 2>"$W/a2.log"
expect "apply resumes trusting A and B" 0 $? "." "$W/a2.log"
if python3 "$HERE/compare_dbs.py" compare "$SRC" "$(pg_conninfo dst)" --tables public.t; then
	echo "ok: target equals source after resuming"
else
	echo "FAIL: target differs from source after resuming" >&2
	fail=$((fail + 1))
fi

[ "$fail" -eq 0 ] && echo "test_capture_rotate: passed"
exit "$fail"
