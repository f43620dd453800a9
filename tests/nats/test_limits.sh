#!/usr/bin/env bash
# The NATS JetStream store against a server with a small message limit and
# token authorization (one nats-server, no database):
#  1. without the token the store is refused (authorization), naming the
#     servers but no secret;
#  2. with NATS_TOKEN, frames of 16 KiB through a server whose max_payload is
#     4 KiB go in pieces (more messages than frames) and come back byte for
#     byte; the stream verifies;
#  3. with the token in the URI (nats://TOKEN@HOST/JSSTREAM) too;
#  4. the token appears in no log or output of sluice, even with --verbose.
# Usage: test_limits.sh SLUICE NATSTOOL
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../pg/harness.sh"
. "$HERE/harness.sh"
pg_test_init "$1"
NATSTOOL=$2
pg_step_checks nats_limits

TOKEN=tok$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$W/conf"
cat >"$W/conf/nats.conf" <<EOF
max_payload: 4096
authorization { token: "$TOKEN" }
EOF
NATS_EXTRA=(-c "$W/conf/nats.conf")
NATS_USERINFO="$TOKEN@"
nats_start || die "could not start nats-server"

"$SLUICE" bench-codec --rows 30000 --frame-size 16384 --segment-size 300000 --dir "$W/b" >/dev/null 2>&1 ||
	die "bench-codec"
PUB=$W/b/bench.pub
STORE=$(nats_store SL)

# ---- 1. no token -------------------------------------------------------------------
env -u NATS_TOKEN "$SLUICE" --verbose verify --store "$STORE" --stream bench --trust "$PUB" >"$W/notoken.out" 2>&1
RC=$?
[ "$RC" != 0 ] && grep -qi "authoriz" "$W/notoken.out"
check "without the token the store is refused (status $RC): $(grep -oi 'could not connect[^"]*' "$W/notoken.out" | head -1)"

# ---- 2. NATS_TOKEN, frames in pieces -------------------------------------------------
export NATS_TOKEN=$TOKEN
"$SLUICE" --verbose copy --from "$W/b/store" --to "$STORE?create=1" --stream bench --trust "$PUB" \
	>"$W/copy1.out" 2>&1
check "copy directory -> JetStream with NATS_TOKEN (status $?)"
"$SLUICE" inspect --store "$W/b/store" --stream bench >"$W/frames.txt" 2>&1
FRAMES=$(grep -c '^  frame ' "$W/frames.txt")
# frames whose stored size (header and compressed payload) is over a 3 KiB piece
BIG=$(awk '/^  frame / { for (i = 1; i < NF; i++) if ($i == "->" && $(i + 1) + 0 > 3072) n++ } END { print n + 0 }' "$W/frames.txt")
MSGS=$(natstool msgs SL)
echo "frames: $FRAMES ($BIG over 3 KiB), messages in JetStream: $MSGS"
[ "$FRAMES" -gt 0 ] && [ "$BIG" -gt 0 ] && [ "$MSGS" -gt "$FRAMES" ]
check "frames larger than max_payload are published in pieces ($MSGS messages for $FRAMES frames)"
"$SLUICE" --verbose verify --store "$STORE" --stream bench --trust "$PUB" >"$W/verify1.out" 2>&1
check "verify passes on the stream of pieces"
mkdir -p "$W/back"
"$SLUICE" --verbose copy --from "$STORE" --to "$W/back" --stream bench --trust "$PUB" >"$W/copy2.out" 2>&1
check "copy JetStream -> directory (status $?)"
n=0
for f in "$W"/back/bench/*.seg; do
	cmp -s "$f" "$W/b/store/bench/$(basename "$f")" || n=$((n + 1))
done
[ "$n" = 0 ] && [ "$(ls "$W"/back/bench/*.seg | wc -l)" -ge 2 ]
check "the segments come back byte for byte ($(ls "$W"/back/bench/*.seg | wc -l) segments)"
SEG3=$(ls "$W/b/store/bench" | sed -n 3p)
FROM=$((16#${SEG3%.seg} + 5))
"$SLUICE" --verbose inspect --store "$STORE" --stream bench --trust "$PUB" --records --from "$FROM" \
	>"$W/inspect.out" 2>&1 && grep -q "reading from stream sequence" "$W/inspect.out"
check "inspect --records --from $FROM reads the pieces from the third segment on (status $?)"

# ---- 3. the token in the URI ---------------------------------------------------------
unset NATS_TOKEN
"$SLUICE" --verbose verify --store "nats://$TOKEN@127.0.0.1:${NATS_PORTS[1]}/SL" --stream bench \
	--trust "$PUB" >"$W/verify2.out" 2>&1
check "verify with the token in the store URI (status $?)"
"$SLUICE" --verbose verify --store "nats://wrong$TOKEN@127.0.0.1:${NATS_PORTS[1]}/SL" --stream bench \
	--trust "$PUB" >"$W/verify3.out" 2>&1
[ $? != 0 ]
check "a wrong token in the URI is refused"

# ---- 4. never logged -----------------------------------------------------------------
! grep -rl "$TOKEN" "$W"/*.out
check "the token appears in no output of sluice ($(cat "$W"/*.out | wc -l) lines)"
grep -q "127.0.0.1:${NATS_PORTS[1]}/SL" "$W/verify3.out"
check "messages name the server and the JetStream stream"

[ "$FAILS" = 0 ] || die "$FAILS checks failed"
echo "nats_limits: all checks passed"
