#!/usr/bin/env bash
# Demonstrates sluice end to end on this machine, with no prompts:
# builds it, makes a signing key, writes a stream of signed, compressed
# segments, verifies it, prints some of its records, and shows that a
# tampered byte and an untrusted key are refused.
#
# (PostgreSQL capture and apply join this demo as they land: see README.)
#
# Usage: tools/demo.sh [--keep]   (--keep leaves the demo directory in place)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/deps.sh
. "$ROOT/tools/deps.sh"

keep=0
[ "${1:-}" = "--keep" ] && keep=1
[ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] && { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing missing packages (as root) and building sluice"
sluice_install_deps
cmake -S "$ROOT" -B "$ROOT/build/demo" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSLUICE_TESTS=OFF >/dev/null
cmake --build "$ROOT/build/demo" -j "$(nproc)" >/dev/null
SLUICE="$ROOT/build/demo/tools/sluice"

DEMO=$(mktemp -d "${TMPDIR:-/tmp}/sluice-demo-XXXXXX")
cleanup() {
	if [ "$keep" -eq 0 ]; then
		chmod -R u+w "$DEMO" 2>/dev/null || true
		rm -rf "$DEMO"
	else
		echo "demo files kept in $DEMO"
	fi
}
trap cleanup EXIT

step "a key pair for signing (secret key is mode 0600)"
"$SLUICE" keygen --out "$DEMO/other"
ls -l "$DEMO"/other.*

step "writing 200,000 row changes as signed, zstd-compressed segments (and timing the codec)"
"$SLUICE" bench-codec --rows 200000 --txn-rows 100 --segment-size 4000000 --dir "$DEMO/w"
STORE="$DEMO/w/store"
PUB="$DEMO/w/bench.pub"
echo "segments in $STORE/bench:"
ls -l "$STORE/bench"

step "sluice verify: every signature, payload hash, the chain and txseq density"
"$SLUICE" verify --store "$STORE" --stream bench --trust "$PUB"

step "sluice inspect: the segments"
"$SLUICE" inspect --store "$STORE" --stream bench --trust "$PUB" | grep '^segment'

step "sluice inspect --records: transaction 42, as text and as JSON"
"$SLUICE" inspect --store "$STORE" --stream bench --trust "$PUB" --records --from 42 --limit 1 >"$DEMO/tx42.txt"
head -4 "$DEMO/tx42.txt" | cut -c1-160
"$SLUICE" inspect --store "$STORE" --stream bench --trust "$PUB" --records --json --from 42 --limit 1 >"$DEMO/tx42.json"
sed -n 2p "$DEMO/tx42.json" | cut -c1-200

step "one flipped byte in a copy of the stream is refused, with segment and offset"
cp -a "$STORE" "$DEMO/tampered"
chmod -R u+w "$DEMO/tampered"
seg=$(ls "$DEMO/tampered/bench" | head -1)
printf '\x00' | dd of="$DEMO/tampered/bench/$seg" bs=1 seek=5000 conv=notrunc status=none
"$SLUICE" verify --store "$DEMO/tampered" --stream bench --trust "$PUB" || echo "(exit status $?: refused)"

step "a key that did not sign the stream is not trusted"
"$SLUICE" verify --store "$STORE" --stream bench --trust "$DEMO/other.pub" >"$DEMO/untrusted.txt" || echo "(exit status $?: refused)"
head -2 "$DEMO/untrusted.txt"

step "done"
