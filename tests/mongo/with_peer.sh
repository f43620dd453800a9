#!/bin/bash
# Runs CMD... with a MongoDB URI appended: SLUICE_TEST_MONGO_URI when set, else a fresh peer's.
#   with_peer.sh PEER CMD [ARG ...]
set -euo pipefail
peer=$1
shift
if [ -n "${SLUICE_TEST_MONGO_URI:-}" ]; then
	exec "$@" "$SLUICE_TEST_MONGO_URI"
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-mongo-XXXXXX")
pid=""
cleanup() {
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
"$peer" --port 0 >"$dir/out" 2>"$dir/log" &
pid=$!
port=""
for _ in $(seq 1 100); do
	port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/out")
	[ -n "$port" ] && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.1
done
if [ -z "$port" ]; then
	echo "with_peer: the peer did not start" >&2
	cat "$dir/log" >&2
	exit 1
fi
rc=0
"$@" "mongodb://127.0.0.1:$port/?replicaSet=rs0" || rc=$?
if [ "$rc" -ne 0 ]; then
	echo "with_peer: peer log:" >&2
	cat "$dir/log" >&2
fi
exit "$rc"
