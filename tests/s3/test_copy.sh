#!/usr/bin/env bash
# sluice copy and readers against S3, without a database:
#  1. dir -> S3 -> dir gives byte-identical segments (listings paged two keys at a
#     time); copying again copies nothing (idempotent); verify and inspect read S3.
#  2. tampered, deleted and reordered (swapped) objects are refused by verify and
#     by copy; an object with other bytes at a segment's key is never replaced
#     (copy stops there with exit 1; verify refuses the object).
#  3. errors retrying cannot fix name the bucket and the HTTP status: a missing
#     bucket; a server that is down is retried, then named.
# Usage: test_copy.sh SLUICE
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
pg_step_checks s3_copy
s3_start || die "could not start s3rver"

"$SLUICE" bench-codec --rows 60000 --txn-rows 50 --frame-size 65536 --segment-size 400000 \
	--dir "$W/b" >/dev/null 2>&1 || die "bench-codec"
SRC=$W/b/store
TRUST=(--trust "$W/b/bench.pub")
# The newest segment of bench-codec's stream is not sealed: copy leaves it.
SEALED=$(ls "$SRC/bench" | grep -c '\.seg$')
SEALED=$((SEALED - 1))
U=$(s3_store main max_keys=2)

# ---- 1. round trip ---------------------------------------------------------------
"$SLUICE" copy --from "$SRC" --to "$U" --stream bench "${TRUST[@]}" 2>"$W/copy1.log"
check "copy dir -> S3 exits 0"
grep -q "$SEALED segments copied" "$W/copy1.log"
check "copy dir -> S3 copied the $SEALED sealed segments"
"$SLUICE" copy --from "$SRC" --to "$U" --stream bench "${TRUST[@]}" 2>"$W/copy2.log"
grep -q "0 segments copied, $SEALED already" "$W/copy2.log"
check "copying again copies nothing"
"$SLUICE" verify --store "$U" --stream bench "${TRUST[@]}" >"$W/verify.txt" 2>&1
check "verify reads the S3 stream: whole"
"$SLUICE" inspect --store "$U" --stream bench >"$W/inspect.txt" 2>&1
check "inspect lists the S3 stream"
"$SLUICE" copy --from "$U" --to "$W/back" --stream bench "${TRUST[@]}" 2>"$W/copy3.log"
check "copy S3 -> dir exits 0"
ok_same=0
for f in "$W/back/bench"/*.seg; do
	cmp -s "$f" "$SRC/bench/$(basename "$f")" || ok_same=1
done
[ "$ok_same" = 0 ] && [ "$(ls "$W/back/bench" | grep -c '\.seg$')" = "$SEALED" ]
check "dir -> S3 -> dir: $SEALED byte-identical segments"
say "round trip"

# ---- 2. damage -------------------------------------------------------------------
SEGS=($(ls "$SRC/bench" | grep '\.seg$'))
for case in tamper delete swap; do
	V=$(s3_store "$case")
	"$SLUICE" copy --from "$SRC" --to "$V" --stream bench "${TRUST[@]}" 2>/dev/null || die "copy for $case"
	K1=$(s3_key "$case" bench "${SEGS[1]}")
	K2=$(s3_key "$case" bench "${SEGS[2]}")
	case $case in
	tamper)
		s3_curl GET "$K1" -o "$W/obj" || die "GET $K1"
		python3 -c 'import sys; p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[len(b) // 2] ^= 1; open(p, "wb").write(b)' "$W/obj"
		s3_curl PUT "$K1" --data-binary @"$W/obj" -o /dev/null || die "PUT $K1"
		;;
	delete) s3_curl DELETE "$K1" -o /dev/null || die "DELETE $K1" ;;
	swap)
		s3_curl GET "$K1" -o "$W/o1" && s3_curl GET "$K2" -o "$W/o2" || die "GET"
		s3_curl PUT "$K1" --data-binary @"$W/o2" -o /dev/null && s3_curl PUT "$K2" --data-binary @"$W/o1" -o /dev/null || die "PUT"
		;;
	esac
	"$SLUICE" verify --store "$V" --stream bench "${TRUST[@]}" >"$W/v-$case.txt" 2>&1
	[ $? = 1 ]
	check "verify refuses the $case object (exit 1)"
	"$SLUICE" copy --from "$V" --to "$W/back-$case" --stream bench "${TRUST[@]}" 2>"$W/c-$case.log"
	[ $? = 1 ]
	check "copy refuses the $case object (exit 1)"
done
# A segment key holding other bytes is never replaced.
W2=$(s3_store other)
"$SLUICE" copy --from "$SRC" --to "$W2" --stream bench "${TRUST[@]}" --until-txseq 1 2>/dev/null || die "copy --until-txseq"
s3_curl PUT "$(s3_key other bench "${SEGS[1]}")" --data-binary "not a segment" -o /dev/null || die "PUT"
"$SLUICE" copy --from "$SRC" --to "$W2" --stream bench "${TRUST[@]}" 2>"$W/c-other.log"
[ $? = 1 ] && grep -q "already exists with other contents" "$W/c-other.log"
check "copy stops at an object with other contents at a segment's key (exit 1)"
[ "$(s3_curl GET "$(s3_key other bench "${SEGS[1]}")")" = "not a segment" ]
check "copy never replaces an object at a segment's key"
"$SLUICE" verify --store "$W2" --stream bench "${TRUST[@]}" >/dev/null 2>&1
[ $? = 1 ]
check "verify refuses the foreign object (exit 1)"
say "damage"

# ---- 3. errors -------------------------------------------------------------------
"$SLUICE" verify --store "s3://no-such-bucket-$$/x?endpoint=$S3_ENDPOINT" --stream bench "${TRUST[@]}" >/dev/null 2>"$W/nobucket.log"
[ $? = 3 ] && grep -q "no-such-bucket-$$" "$W/nobucket.log" && grep -q "HTTP 404" "$W/nobucket.log"
check "a missing bucket: exit 3, the message names the bucket and HTTP 404"
if [ "$S3_LOCAL" = 1 ]; then
	s3_stop
	"$SLUICE" verify --store "$(s3_store main retries=2)" --stream bench "${TRUST[@]}" >/dev/null 2>"$W/down.log"
	[ $? = 3 ] && grep -q "retrying" "$W/down.log" && grep -q "failed after 2 attempts" "$W/down.log"
	check "a server that is down: retried, then named (exit 3)"
	# A server that comes back while a reader retries: the read succeeds.
	(sleep 1.5 && s3_restart) &
	RESTART=$!
	"$SLUICE" verify --store "$U" --stream bench "${TRUST[@]}" >/dev/null 2>"$W/back-up.log"
	check "a server that restarts during the retries: verify succeeds"
	wait "$RESTART"
	# the restarted server runs in a subshell: find it again for the cleanup
	S3_PID=$(pgrep -f "s3rver -d $S3_DIR" | head -1)
fi
say "errors"
[ "$FAILS" = 0 ] || die "$FAILS checks failed"
echo "s3_copy: all checks passed"
