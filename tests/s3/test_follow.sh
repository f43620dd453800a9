#!/usr/bin/env bash
# sluice copy --follow from a live directory stream into S3: capture writes the
# directory (sealing a segment every second) under pgbench while copy follows it
# into the bucket; capture stops, copy catches up and stops on SIGTERM (status 0).
# The bucket then holds exactly the segments the directory sealed, byte for
# byte, and verifies whole; objects appeared while capture was still writing.
# Usage: test_follow.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks s3_follow
s3_start || die "could not start s3rver"

pg_start src || die "could not start the source"
"$SLUICE" keygen --out "$W/k" >/dev/null 2>&1 || die "keygen"
export PATH=$PGBIN:$PATH
pgbench -i -s 1 -q "$(pg_conninfo src)" >"$W/pgbench-init.log" 2>&1 || die "pgbench -i"
DIR=$W/store
U=$(s3_store follow)
CAP=("$SLUICE" capture --source "$(pg_conninfo src)" --store "$DIR" --stream one --key "$W/k.key"
	--no-progress --segment-seconds 1)
"${CAP[@]}" --create --allow-no-identity --exit-when-caught-up 2>"$W/cap0.log" || die "capture --create"
"${CAP[@]}" 2>"$W/cap1.log" &
CAP_PID=$!
pg_wait_streaming $CAP_PID "$W/cap1.log" || die "capture did not start"
"$SLUICE" copy --from "$DIR" --to "$U" --stream one --trust "$W/k.pub" --follow 2>"$W/copy.log" &
COPY_PID=$!
pgbench -n -c 2 -j 2 -T 8 -R 100 "$(pg_conninfo src)" >"$W/pgbench.log" 2>&1 || die "pgbench"
LIVE=$(s3_curl GET "?list-type=2&prefix=$(s3_prefix follow)/one/" | grep -o '<Key>[^<]*\.seg</Key>' | wc -l)
[ "$LIVE" -ge 3 ]
check "objects appear while capture writes ($LIVE)"
kill -TERM $CAP_PID
wait $CAP_PID
check "capture stops on SIGTERM with status 0"
sealed() { # the names of the directory's sealed segments (mode 0444)
	find "$DIR/one" -name '*.seg' ! -perm -u+w -printf '%f\n' | sort
}
listed() {
	s3_curl GET "?list-type=2&prefix=$(s3_prefix follow)/one/" | grep -o '[0-9a-f]\{16\}\.seg' | sort
}
N=$(sealed | wc -l)
T=$SECONDS
until [ "$(listed | wc -l)" -ge "$N" ] || [ $((SECONDS - T)) -gt 30 ]; do sleep 0.5; done
kill -TERM $COPY_PID
wait $COPY_PID
check "copy --follow stops on SIGTERM with status 0"
[ "$(listed)" = "$(sealed)" ]
check "the bucket holds exactly the $N sealed segments (none of the open one)"
"$SLUICE" copy --from "$U" --to "$W/back" --stream one --trust "$W/k.pub" 2>"$W/back.log" || die "copy back"
same=0
for f in $(sealed); do
	cmp -s "$DIR/one/$f" "$W/back/one/$f" || same=1
done
[ "$same" = 0 ]
check "every object equals its directory segment byte for byte"
"$SLUICE" verify --store "$U" --stream one --trust "$W/k.pub" >"$W/verify.txt" 2>&1
check "the copy verifies whole: $(tail -2 "$W/verify.txt" | head -1)"
grep -q "copied segment" "$W/copy.log" && grep -q "segments copied" "$W/copy.log"
check "copy logged each segment and a summary"
say "follow"
[ "$FAILS" = 0 ] || die "$FAILS checks failed"
echo "s3_follow: all checks passed"
