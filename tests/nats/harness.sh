# Sourced by the NATS tests: nats-server processes on loopback for one test,
# after tests/pg/harness.sh (its work directory, free ports and checks).
#
#   nats_start                  one JetStream server (NATS_URL_1; stopped on exit).
#                               Exits 77 (skipped) when nats-server is missing.
#   nats_cluster_start          three JetStream servers in one cluster (NATS_URLS:
#                               all three client URLs, comma-separated)
#   nats_launch I               start server I (1..3) again on its port and data
#   nats_stop I / nats_kill I   stop it (SIGTERM) / kill -9 it
#   nats_store JSSTREAM [Q]     nats://URLS/JSSTREAM[?Q] for the servers started
#   natstool ARGS               the raw client (tests/nats/natstool.c) on server 1
#
# NATS_EXTRA (an array) adds arguments to every nats-server (e.g. -c FILE for
# max_payload or authorization), NATS_USERINFO ("TOKEN@") is put in natstool's URL.
#
# nats-server runs as the test's user (root is fine); its data lives in the
# test's work directory and goes with it.

NATS_PIDS=(x "" "" "")
NATS_PORTS=(x "" "" "")
NATS_CPORTS=(x "" "" "")
NATS_N=0
NATS_URLS=""
NATS_EXTRA=()
NATS_USERINFO=""

nats_harness_cleanup() {
	local i
	for i in 1 2 3; do
		nats_stop "$i"
	done
}

nats_require() {
	if ! command -v nats-server >/dev/null 2>&1; then
		echo "SKIP: nats-server is not installed (apt-get install nats-server)"
		exit 77
	fi
	trap 'nats_harness_cleanup; pg_harness_cleanup' EXIT
}

nats_launch() {
	local i=$1 dir=$PG_HARNESS_DIR/nats-$1 args=()
	mkdir -p "$dir"
	if [ "$NATS_N" -gt 1 ]; then
		local routes="" j
		for j in $(seq 1 "$NATS_N"); do
			[ "$j" = "$i" ] && continue
			routes="$routes${routes:+,}nats://127.0.0.1:${NATS_CPORTS[$j]}"
		done
		args=(--cluster_name sluice-test --cluster "nats://127.0.0.1:${NATS_CPORTS[$i]}" --routes "$routes")
	fi
	: >"$dir/log"
	setsid nats-server -js -sd "$dir/js" -a 127.0.0.1 -p "${NATS_PORTS[$i]}" -n "n$i" \
		"${args[@]}" "${NATS_EXTRA[@]}" -l "$dir/log" >/dev/null 2>&1 &
	NATS_PIDS[$i]=$!
	local k
	for k in $(seq 1 100); do
		grep -q "Server is ready" "$dir/log" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "harness: nats-server $i did not start" >&2
	cat "$dir/log" >&2
	return 1
}

nats_stop() {
	local pid=${NATS_PIDS[$1]:-}
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		NATS_PIDS[$1]=""
	fi
	return 0 # also for a server not running (an EXIT trap under set -e must not fail)
}

nats_kill() {
	local pid=${NATS_PIDS[$1]:-}
	if [ -n "$pid" ]; then
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		NATS_PIDS[$1]=""
	fi
	return 0 # also for a server not running (an EXIT trap under set -e must not fail)
}

nats_start() {
	nats_require
	NATS_N=1
	NATS_PORTS[1]=$(pg_free_port)
	NATS_URLS=127.0.0.1:${NATS_PORTS[1]}
	nats_launch 1
}

nats_cluster_start() {
	nats_require
	NATS_N=3
	local i
	for i in 1 2 3; do
		NATS_PORTS[$i]=$(pg_free_port)
		NATS_CPORTS[$i]=$(pg_free_port)
	done
	NATS_URLS=127.0.0.1:${NATS_PORTS[1]},127.0.0.1:${NATS_PORTS[2]},127.0.0.1:${NATS_PORTS[3]}
	for i in 1 2 3; do
		nats_launch "$i" || return 1
	done
	# JetStream needs a meta leader before streams can be made.
	for i in $(seq 1 100); do
		grep -qh "JetStream cluster new metadata leader\|Self is new JetStream cluster metadata leader" \
			"$PG_HARNESS_DIR"/nats-*/log 2>/dev/null && return 0
		sleep 0.2
	done
	echo "harness: the JetStream cluster elected no leader" >&2
	return 1
}

nats_store() { printf 'nats://%s/%s%s' "$NATS_URLS" "$1" "${2:+?$2}"; }

natstool() {
	local i url=""
	for i in 1 2 3; do
		if [ -n "${NATS_PIDS[$i]:-}" ]; then
			url=nats://${NATS_USERINFO}127.0.0.1:${NATS_PORTS[$i]}
			break
		fi
	done
	"$NATSTOOL" "$url" "$@"
}
