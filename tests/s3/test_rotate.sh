#!/usr/bin/env bash
# sluice rotate-key on an S3 stream: capture k1 into S3 (spool), rotate-key
# --spool (the capture's spool) hands over to k2, capture goes on with --key
# k2 --trust k1.pub; the handover reaches the bucket with the next sealed
# segment; the stream verifies from k1 alone; apply reproduces the source.
# Without --spool, rotate-key names the option it needs.
# Usage: test_rotate.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks s3_rotate
s3_start || die "could not start s3rver"

pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
"$SLUICE" keygen --out "$W/k1" >/dev/null 2>&1 || die "keygen"
"$SLUICE" keygen --out "$W/k2" >/dev/null 2>&1 || die "keygen"
pg_psql src postgres -c "CREATE TABLE t (id int PRIMARY KEY, v text)" || die "table"
pg_psql dst postgres -c "CREATE TABLE t (id int PRIMARY KEY, v text)" || die "table"
STORE=$(s3_store rot)
CAP=("$SLUICE" capture --source "$(pg_conninfo src)" --store "$STORE" --spool "$W/spool" --stream one
	--no-progress --exit-when-caught-up)
"${CAP[@]}" --key "$W/k1.key" --create 2>"$W/cap0.log" || die "capture --create"
pg_psql src postgres -c "INSERT INTO t SELECT g, 'before' FROM generate_series(1, 500) g" || die "insert"
"${CAP[@]}" --key "$W/k1.key" 2>"$W/cap1.log"
check "capture with k1 into S3"

"$SLUICE" rotate-key --store "$STORE" --stream one --key "$W/k1.key" --next "$W/k2.pub" \
	--reason "test" >/dev/null 2>"$W/rot-nospool.log"
[ $? = 3 ] && grep -q -- "--spool" "$W/rot-nospool.log"
check "rotate-key into S3 without --spool fails, naming --spool"
"$SLUICE" rotate-key --store "$STORE" --spool "$W/spool" --stream one --key "$W/k1.key" \
	--next "$W/k2.pub" --reason "test" >"$W/rot.out" 2>"$W/rot.log"
check "rotate-key --spool hands the S3 stream over to k2"
"$SLUICE" rotate-key --store "$STORE" --spool "$W/spool" --stream one --key "$W/k1.key" \
	--next "$W/k2.pub" >/dev/null 2>"$W/rot2.log"
[ $? = 3 ]
check "a second rotation with k1 is refused: k1 is no longer in force"
pg_psql src postgres -c "INSERT INTO t SELECT g, 'after' FROM generate_series(501, 1000) g" || die "insert"
"${CAP[@]}" --key "$W/k1.key" 2>"$W/cap-old.log"
[ $? = 3 ]
check "capture with the old key is refused after the handover"
"${CAP[@]}" --key "$W/k2.key" --trust "$W/k1.pub" 2>"$W/cap2.log"
check "capture goes on with k2 (--trust k1.pub)"
[ -z "$(ls "$W/spool/one" | grep '\.seg$')" ]
check "the spool is empty: the segment holding the handover was uploaded"
"$SLUICE" verify --store "$STORE" --stream one --trust "$W/k1.pub" >"$W/verify.txt" 2>&1
check "the S3 stream verifies from k1 alone: $(tail -2 "$W/verify.txt" | head -1)"
K2ID=$(cat "$W/rot.out")
"$SLUICE" inspect --store "$STORE" --stream one --trust "$W/k1.pub" --records --json >"$W/r.json" 2>/dev/null
grep -q "\"key_handover\".*\"next_key\":\"$K2ID\"" "$W/r.json"
check "the bucket holds the handover to k2 ($K2ID)"
"$SLUICE" apply --store "$STORE" --stream one --trust "$W/k1.pub" --target "$(pg_conninfo dst)" \
	--exit-when-caught-up 2>"$W/apply.log"
check "apply from S3 across the rotation"
python3 "$HERE/../pg/compare_dbs.py" compare "$(pg_conninfo src)" "$(pg_conninfo dst)"
check "source and target equal"
say "rotate"
[ "$FAILS" = 0 ] || die "$FAILS checks failed"
echo "s3_rotate: all checks passed"
