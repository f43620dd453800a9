#!/usr/bin/env bash
# Faults between sluice and S3 (tests/s3/faultproxy.py in front of s3rver):
#  1. a connection reset in the middle of a segment's PUT, with no retry left:
#     the partial upload is never taken for a segment (S3 stores nothing; s3rver
#     keeps the half it received, which verify refuses and copy does not take);
#     with retries the same schedule uploads every segment whole, completing
#     the partial object, byte for byte.
#  2. PostgreSQL -> capture -> proxy -> S3 -> proxy -> apply under a live pgbench
#     workload, with resets mid-request and mid-response, 500 InternalError, 503
#     SlowDown, truncated bodies and delays on every kind of request (and a
#     partial segment object apply reads before it is completed): the retries
#     show in both logs; the stream verifies whole (no gap, no duplicate txseq),
#     read through the proxy too; source and target are equal table by table.
#  3. errors retrying cannot fix: a key id s3rver does not know (403
#     InvalidAccessKeyId) and a segment PUT answered 403 AccessDenied (s3rver
#     accepts any secret, so the proxy refuses): capture stops (exit 3) with a
#     message naming the bucket, the key and HTTP 403, and no log holds the secret.
# Usage: test_faults.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks s3_faults
s3_start || die "could not start s3rver"
fp_start || die "could not start the fault proxy"

RATE=100
[ -n "${SLUICE_SANITIZED:-}" ] && RATE=40

# ---- 1. a partial upload is never visible ---------------------------------------
"$SLUICE" bench-codec --rows 20000 --txn-rows 50 --frame-size 65536 --segment-size 200000 \
	--dir "$W/b" >/dev/null 2>&1 || die "bench-codec"
SEGS=($(ls "$W/b/store/bench" | grep '\.seg$'))
SEG1=${SEGS[0]}
SEALED=$((${#SEGS[@]} - 1))
fp_rules '{"rules": [{"action": "reset_request", "method": "PUT", "path": "\\.seg$", "fraction": 0.5}]}'
"$SLUICE" copy --from "$W/b/store" --to "$(fp_store partial retries=1)" --stream bench \
	--trust "$W/b/bench.pub" 2>"$W/partial.log"
[ $? != 0 ] && grep -q "PUT s3://$S3_BUCKET/$(s3_key partial bench "$SEG1")" "$W/partial.log"
check "a PUT reset halfway with no retry left fails the copy (the key named)"
grep -q "reset_request PUT .*$SEG1" "$FP_LOG"
check "the proxy forwarded half of the PUT's body, then reset the connections"
# S3 stores nothing for an incomplete request (IncompleteBody); s3rver 3.7 keeps
# the half it received as an object. Either way no reader takes it for a segment.
sleep 1 # the server may still be storing what it received
"$SLUICE" inspect --store "$(s3_store partial)" --stream bench >"$W/partial-inspect.txt" 2>&1
if grep -q "^$SEG1" "$W/partial-inspect.txt"; then
	echo "note: the server kept the partial upload as an object (s3rver does; S3 does not)" |
		tee "$PG_HARNESS_DIR/faults.note"
	"$SLUICE" verify --store "$(s3_store partial)" --stream bench --trust "$W/b/bench.pub" \
		>"$W/partial-verify.txt" 2>&1
	[ $? = 1 ] && grep -q "$SEG1" "$W/partial-verify.txt"
	check "verify refuses the partial object (exit 1, the segment named)"
	"$SLUICE" copy --from "$(s3_store partial)" --to "$W/partial-back" --stream bench \
		--trust "$W/b/bench.pub" 2>"$W/partial-back.log"
	[ -z "$(ls "$W/partial-back/bench" 2>/dev/null | grep '\.seg$')" ]
	check "copy out of the bucket takes nothing from the partial object"
else
	! s3_curl HEAD "$(s3_key partial bench "$SEG1")" -o /dev/null 2>/dev/null
	check "the partial upload is neither listed nor an object (HEAD: 404)"
fi
fp_rules '{"seed": 1, "rules": [{"action": "reset_request", "method": "PUT", "path": "\\.seg$", "prob": 0.5, "fraction": 0.3}]}'
"$SLUICE" copy --from "$W/b/store" --to "$(fp_store partial)" --stream bench \
	--trust "$W/b/bench.pub" 2>"$W/partial2.log"
check "with retries, the same faults still copy every segment"
[ "$(grep -c "^FAULT reset_request" "$FP_LOG")" -gt 1 ]
check "retried PUTs were reset too"
"$SLUICE" verify --store "$(s3_store partial)" --stream bench --trust "$W/b/bench.pub" >/dev/null 2>&1
check "the copied stream verifies whole"
"$SLUICE" copy --from "$(s3_store partial)" --to "$W/partial-back2" --stream bench \
	--trust "$W/b/bench.pub" 2>/dev/null
same=0
for f in "${SEGS[@]:0:$SEALED}"; do
	cmp -s "$W/b/store/bench/$f" "$W/partial-back2/bench/$f" || same=1
done
[ "$same" = 0 ]
check "every object is its segment byte for byte ($SEALED segments)"
say "partial uploads"

# ---- 2. a live workload through the faults --------------------------------------
pg_start src || die "could not start the source"
pg_start dst || die "could not start the target"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
export PATH=$PGBIN:$PATH
pgbench -i -s 1 -q "$(pg_conninfo src)" >"$W/pgbench-init.log" 2>&1 || die "pgbench -i"
pg_psql src postgres -c "CREATE TABLE marker (id int PRIMARY KEY)" || die "marker"
pg_dump -s -d "$(pg_conninfo src)" >"$W/schema.sql" || die "pg_dump -s"
pg_psql dst postgres -f "$W/schema.sql" >/dev/null || die "target schema"

STORE=$(fp_store main)
CAP=("$SLUICE" capture --source "$(pg_conninfo src)" --store "$STORE" --spool "$W/spool"
	--stream one --key "$W/k.key" --no-progress --segment-seconds 1)
APPLY=("$SLUICE" apply --store "$STORE" --stream one --trust "$W/k.pub" --target "$(pg_conninfo dst)")
"${CAP[@]}" --create --allow-no-identity --snapshot --exit-when-caught-up 2>"$W/cap0.log" || {
	cat "$W/cap0.log" >&2
	die "capture --create into S3"
}
# Every kind of fault surely (the first rules, by count), then every kind of
# request now and then: PUT (segments, lease), GET (objects, ranges, listings),
# HEAD, DELETE. The second segment's PUT is reset halfway and its retry held
# for 3 s: on s3rver, which keeps the half it received as an object, apply
# reads that partial segment meanwhile and must read on when it is completed.
fp_rules '{"seed": 7, "rules": [
 {"action": "truncate", "method": "GET", "path": "\\.seg$", "after": 2, "count": 2, "fraction": 0.5},
 {"action": "reset_request", "method": "PUT", "path": "\\.seg$", "after": 1, "count": 1, "fraction": 0.5},
 {"action": "delay", "method": "PUT", "path": "\\.seg$", "after": 1, "count": 1, "ms": 3000},
 {"action": "reset_response", "method": "PUT", "path": "\\.seg$", "after": 4, "count": 2, "fraction": 0.5},
 {"action": "status", "method": "HEAD", "code": 503, "s3code": "SlowDown", "after": 3, "count": 2},
 {"action": "truncate", "method": "GET", "prob": 0.12, "fraction": 0.5},
 {"action": "reset_request", "method": "PUT", "prob": 0.08, "fraction": 0.5},
 {"action": "reset_response", "prob": 0.05, "fraction": 0.3},
 {"action": "status", "code": 503, "s3code": "SlowDown", "prob": 0.05},
 {"action": "status", "code": 500, "s3code": "InternalError", "prob": 0.04},
 {"action": "delay", "ms": 300, "prob": 0.04}]}'
"${CAP[@]}" 2>"$W/cap1.log" &
CAP_PID=$!
pg_wait_streaming $CAP_PID "$W/cap1.log" || die "capture did not start"
"${APPLY[@]}" 2>"$W/apply1.log" &
APPLY_PID=$!
pgbench -n -c 2 -j 2 -T 15 -R $RATE "$(pg_conninfo src)" >"$W/pgbench1.log" 2>&1 || die "pgbench"
pg_psql src postgres -c "INSERT INTO marker VALUES (1)" || die "marker 1"
M0=$SECONDS
until [ "$(pg_psql dst postgres -c 'SELECT count(*) FROM marker')" = 1 ]; do
	[ $((SECONDS - M0)) -gt 60 ] && break
	kill -0 $CAP_PID 2>/dev/null && kill -0 $APPLY_PID 2>/dev/null || break
	sleep 0.3
done
kill -TERM $CAP_PID
wait $CAP_PID
check "capture through the faults stops on SIGTERM with status 0"
kill -TERM $APPLY_PID
wait $APPLY_PID
check "apply through the faults stops on SIGTERM with status 0"
for a in reset_request reset_response status truncate delay; do
	n=$(grep -c "^FAULT $a " "$FP_LOG")
	[ "$n" -gt 0 ]
	check "the proxy injected $a faults ($n)"
done
CR=$(grep -c "retrying" "$W/cap1.log")
AR=$(grep -c "retrying" "$W/apply1.log")
[ "$CR" -gt 0 ] && [ "$AR" -gt 0 ]
check "the retries show in the logs (capture $CR, apply $AR)"
grep -q "SlowDown; retrying" "$W"/cap1.log "$W"/apply1.log
check "503 SlowDown is named and retried"
if grep -q "FAULT reset_request PUT .*\.seg" "$FP_LOG" && grep -q "note: the server kept the partial upload" "$W/../faults.note" 2>/dev/null; then
	grep -q "grew from .* after it was read unsealed" "$W/apply1.log"
	check "apply read a partial segment s3rver kept, and read on once it was completed"
fi
# Catch up whatever the stop left, still through the faults.
"${CAP[@]}" --exit-when-caught-up 2>"$W/cap2.log"
check "a final capture through the faults catches up"
"${APPLY[@]}" --exit-when-caught-up 2>"$W/apply2.log"
check "apply --exit-when-caught-up through the faults"
"$SLUICE" verify --store "$STORE" --stream one --trust "$W/k.pub" >"$W/verify-fp.txt" 2>"$W/verify-fp.log"
check "the stream verifies whole, read through the faults"
fp_rules '{"rules": []}'
"$SLUICE" verify --store "$(s3_store main)" --stream one --trust "$W/k.pub" >"$W/verify.txt" 2>&1
check "the stream verifies whole, read directly: no gap, no duplicate txseq"
python3 "$HERE/../pg/compare_dbs.py" compare "$(pg_conninfo src)" "$(pg_conninfo dst)"
check "every table equal between source and target (nothing lost, nothing twice)"
[ "$(pg_psql dst postgres -c 'SELECT count(*) FROM pgbench_history')" -gt 0 ]
check "the workload reached the target"
say "live workload through faults: $(tail -1 "$W/verify.txt")"

# ---- 3. errors retrying cannot fix ----------------------------------------------
SECRET=$AWS_SECRET_ACCESS_KEY
AWS_ACCESS_KEY_ID=NOSUCHKEY AWS_SECRET_ACCESS_KEY=not-the-secret-7f3a "$SLUICE" verify \
	--store "$(s3_store main)" --stream one --trust "$W/k.pub" >/dev/null 2>"$W/badkey.log"
[ $? = 3 ] && grep -q "s3://$S3_BUCKET/" "$W/badkey.log" && grep -q "HTTP 403" "$W/badkey.log"
check "an unknown key id: exit 3, the bucket and HTTP 403 named"
! grep -q "not-the-secret-7f3a" "$W/badkey.log"
check "the secret is not logged"
# A wrong secret: s3rver does not check SigV4 signatures, so the proxy refuses.
fp_rules '{"rules": [{"action": "status", "method": "PUT", "path": "\\.seg$", "code": 403, "s3code": "AccessDenied"}]}'
export AWS_SECRET_ACCESS_KEY=wrong-secret-4d2c9b
pgbench -n -c 1 -t 20 "$(pg_conninfo src)" >/dev/null 2>&1 || die "pgbench"
"${CAP[@]}" --exit-when-caught-up 2>"$W/denied.log"
RC=$?
export AWS_SECRET_ACCESS_KEY=$SECRET
[ $RC = 3 ] && grep -q "PUT s3://$S3_BUCKET/$(s3_prefix main)/one/[0-9a-f]\{16\}\.seg failed: HTTP 403 AccessDenied" "$W/denied.log"
check "a segment PUT refused (403 AccessDenied): capture stops (exit $RC) naming bucket, key and HTTP 403"
! grep -q "retrying" "$W/denied.log"
check "403 is not retried"
! grep -q "wrong-secret-4d2c9b" "$W/denied.log" "$FP_LOG"
check "the secret is not logged"
! grep -rq "$SECRET" "$W"/*.log
check "no log holds the real secret either"
fp_rules '{"rules": []}'
"${CAP[@]}" --exit-when-caught-up 2>"$W/cap3.log"
check "with access back, capture uploads what was refused"
"$SLUICE" verify --store "$(s3_store main)" --stream one --trust "$W/k.pub" >/dev/null 2>&1
check "the stream still verifies whole"
say "errors"
[ "$FAILS" = 0 ] || {
	tail -n 5 "$W/cap1.log" "$W/apply1.log" >&2
	die "$FAILS checks failed"
}
echo "s3_faults: all checks passed"
