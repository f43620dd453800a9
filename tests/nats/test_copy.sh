#!/usr/bin/env bash
# The NATS JetStream store without a database (one nats-server on loopback):
#  1. a missing JetStream stream is refused with the command that creates it;
#  2. sluice copy dir -> JetStream -> dir: verify passes on JetStream and the
#     sealed segments come back byte for byte; a repeated copy is a no-op;
#  3. a message altered (a frame with a byte changed), replayed (an earlier
#     frame again), removed (deleted from the stream) or foreign (no sluice
#     headers) is refused by verify and by inspect.
# Usage: test_copy.sh SLUICE NATSTOOL
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
NATSTOOL=$2
pg_step_checks nats_copy
nats_start || die "could not start nats-server"

"$SLUICE" bench-codec --rows 60000 --frame-size 16384 --segment-size 400000 --dir "$W/b" >/dev/null 2>&1 ||
	die "bench-codec"
PUB=$W/b/bench.pub

# ---- 1. a missing stream ---------------------------------------------------------
"$SLUICE" verify --store "$(nats_store MISSING)" --stream bench --trust "$PUB" 2>"$W/missing.log"
[ $? = 3 ] && grep -q 'does not exist.*--create' "$W/missing.log"
check "a missing JetStream stream is refused, naming the command that creates it"

# ---- 2. copy both ways -----------------------------------------------------------
STORE=$(nats_store SL "create=1")
"$SLUICE" copy --from "$W/b/store" --to "$STORE" --stream bench --trust "$PUB" 2>"$W/copy1.log"
check "copy directory -> JetStream (status $?)"
"$SLUICE" verify --store "$(nats_store SL)" --stream bench --trust "$PUB" >"$W/verify1.out" 2>&1
check "verify passes on the JetStream stream"
"$SLUICE" copy --from "$W/b/store" --to "$STORE" --stream bench --trust "$PUB" 2>"$W/copy2.log" &&
	grep -q "0 segments copied" "$W/copy2.log"
check "a repeated copy copies nothing"
mkdir -p "$W/back"
"$SLUICE" copy --from "$(nats_store SL)" --to "$W/back" --stream bench --trust "$PUB" 2>"$W/copy3.log"
check "copy JetStream -> directory (status $?)"
n=0
for f in "$W"/back/bench/*.seg; do
	cmp -s "$f" "$W/b/store/bench/$(basename "$f")" || {
		echo "differs: $f" >&2
		false
	} || n=$((n + 1))
done
[ "$n" = 0 ] && [ "$(ls "$W"/back/bench/*.seg | wc -l)" -ge 3 ]
check "the sealed segments come back from JetStream byte for byte ($(ls "$W"/back/bench/*.seg | wc -l) segments)"
"$SLUICE" verify --store "$W/back" --stream bench --trust "$PUB" >/dev/null 2>&1
check "the copied-back directory verifies"
say "copies done"

# ---- 3. tampering ---------------------------------------------------------------
# Each case on a deletable stream of its own (sluice creates streams with DenyDelete).
tamper_case() { # tamper_case NAME ACTION...: copy, tamper, expect refusal
	local name=$1 subj
	shift
	subj=t$name
	natstool add-stream "T$name" "$subj.>" 1 || die "add-stream T$name"
	"$SLUICE" copy --from "$W/b/store" --to "$(nats_store "T$name" "subjects=$subj")" --stream bench \
		--trust "$PUB" 2>"$W/tcopy-$name.log" || die "copy into T$name"
	"$@"
	"$SLUICE" verify --store "$(nats_store "T$name" "subjects=$subj")" --stream bench --trust "$PUB" \
		>"$W/tverify-$name.out" 2>&1
	local rc=$?
	[ "$rc" != 0 ]
	check "verify refuses the stream with a $name message (status $rc)"
	"$SLUICE" inspect --store "$(nats_store "T$name" "subjects=$subj")" --stream bench --trust "$PUB" \
		--records >/dev/null 2>"$W/tinspect-$name.log"
	[ $? != 0 ]
	check "inspect --records refuses the stream with a $name message"
}
tamper_case altered natstool forge Taltered taltered.bench.frames flip
tamper_case replayed natstool forge Treplayed treplayed.bench.frames replay 3
tamper_case removed natstool delete Tremoved 5
tamper_case foreign natstool forge Tforeign tforeign.bench.frames garbage
grep -h "stream sequence\|could not verify\|does not\|chain\|signature" "$W"/tverify-*.out | head -8

[ "$FAILS" = 0 ] || die "$FAILS checks failed"
echo "nats_copy: all checks passed"
