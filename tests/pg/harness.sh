# Sourced by the PostgreSQL tests: throwaway PostgreSQL 15 servers on loopback.
#
#   pg_harness_init                 work directory, cleanup on exit
#   pg_test_init SLUICE             a test's start: pg_harness_init, SLUICE (the
#                                   binary under test), W (the test's work directory)
#   pg_start NAME [SETTING ...]     start server NAME (extra postgresql.conf lines)
#   pg_conninfo NAME [DB]           "host=127.0.0.1 port=N user=postgres dbname=DB"
#   pg_psql NAME [DB] ARGS...       psql -X -At -v ON_ERROR_STOP=1 against it
#   pg_stop NAME                    stop it
#   pg_wait_streaming PID LOG       wait (30 s) until capture PID logs that it streams;
#                                   1: it exited first, 2: it did not in time (log shown)
#   pg_step_checks NAME             die MSG, check NAME (status of the last command,
#                                   failures counted in FAILS), say MSG (progress)
#   pg_value_checks                 ok, bad MSG, check DESC GOT WANT (counted in pass
#                                   and fail), counter LOG NAME (apply's conflict counter)
#
# PostgreSQL refuses to run as root: as root, servers run as user postgres.

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_HARNESS_DIR=""
PG_HARNESS_SERVERS=()

pg_harness_cleanup() {
	local name
	for name in "${PG_HARNESS_SERVERS[@]}"; do
		pg_stop "$name" >/dev/null 2>&1 || true
	done
	if [ -n "$PG_HARNESS_DIR" ] && [ -z "${PG_KEEP:-}" ]; then
		chmod -R u+w "$PG_HARNESS_DIR" 2>/dev/null || true
		rm -rf "$PG_HARNESS_DIR"
	fi
}

pg_harness_as_server_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

pg_harness_init() {
	if [ ! -x "$PGBIN/initdb" ]; then
		echo "harness: PostgreSQL 15 server binaries not found in $PGBIN (apt-get install postgresql-15)" >&2
		exit 1
	fi
	PG_HARNESS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sluice-pg-XXXXXX")
	chmod 755 "$PG_HARNESS_DIR"
	if [ "$(id -u)" -eq 0 ]; then
		id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
	fi
	trap pg_harness_cleanup EXIT
}

pg_test_init() {
	SLUICE=$1
	pg_harness_init
	W=$PG_HARNESS_DIR/work
	mkdir -p "$W"
}

pg_wait_streaming() {
	local i
	for i in $(seq 1 300); do
		grep -q '"msg":"streaming from slot' "$2" 2>/dev/null && return 0
		kill -0 "$1" 2>/dev/null || {
			cat "$2" >&2
			return 1
		}
		sleep 0.1
	done
	cat "$2" >&2
	return 2
}

# pg_free_port prints a TCP port on 127.0.0.1 that nothing listens on.
pg_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# pg_template prints the directory of a freshly initialised cluster that
# servers are copied from (initdb once per user and server version, not once
# per server: the suite starts about sixty). Made under a temporary name and
# renamed, so tests running side by side never see a half-made one.
pg_template() {
	local t tmp
	t="${TMPDIR:-/tmp}/sluice-pgtemplate-$(id -u)-$("$PGBIN/postgres" --version | awk '{print $3}')"
	if [ ! -f "$t/ready" ]; then
		tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-pgtemplate-new-XXXXXX")
		chmod 755 "$tmp"
		[ "$(id -u)" -eq 0 ] && chown postgres "$tmp"
		pg_harness_as_server_user "$PGBIN/initdb" -D "$tmp/data" -U postgres -A trust -E UTF8 \
			--locale=C.UTF-8 --no-sync >"$1/initdb.log" 2>&1 || {
			cat "$1/initdb.log" >&2
			rm -rf "$tmp"
			return 1
		}
		touch "$tmp/ready"
		mv -T "$tmp" "$t" 2>/dev/null || rm -rf "$tmp" # another test made it first
	fi
	echo "$t"
}

pg_start() {
	local name=$1
	shift
	local dir="$PG_HARNESS_DIR/$name"
	local port
	port=$(pg_free_port)
	mkdir -p "$dir"
	[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
	local template
	template=$(pg_template "$dir") || return 1
	pg_harness_as_server_user cp -a "$template/data" "$dir/data" || return 1
	{
		echo "listen_addresses = '127.0.0.1'"
		echo "port = $port"
		echo "unix_socket_directories = '$dir'"
		echo "wal_level = logical"
		echo "max_wal_senders = 20"
		echo "max_replication_slots = 20"
		echo "max_worker_processes = 16"
		echo "track_commit_timestamp = on"
		echo "fsync = off"
		echo "full_page_writes = off"
		echo "shared_buffers = 128MB"
		echo "max_wal_size = 2GB"
		echo "logging_collector = off"
		local setting
		for setting in "$@"; do echo "$setting"; done
	} | pg_harness_as_server_user tee -a "$dir/data/postgresql.conf" >/dev/null
	pg_harness_as_server_user "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
		>/dev/null || {
		cat "$dir/server.log" >&2
		return 1
	}
	echo "$port" >"$dir/port"
	PG_HARNESS_SERVERS+=("$name")
}

pg_port() { cat "$PG_HARNESS_DIR/$1/port"; }

pg_conninfo() {
	echo "host=127.0.0.1 port=$(pg_port "$1") user=postgres dbname=${2:-postgres}"
}

pg_psql() {
	local name=$1 db=${2:-postgres}
	shift 2
	psql -X -At -q -v ON_ERROR_STOP=1 "$(pg_conninfo "$name" "$db")" "$@"
}

pg_stop() {
	local dir="$PG_HARNESS_DIR/$1"
	[ -d "$dir/data" ] || return 0
	pg_harness_as_server_user "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
}

# pg_step_checks NAME defines die, check and say, their messages prefixed with NAME.
pg_step_checks() {
	PG_TEST_NAME=$1
	T0=$SECONDS
	FAILS=0
	die() {
		echo "$PG_TEST_NAME: FAILED: $*" >&2
		exit 1
	}
	# check NAME: records the outcome of the command that just ran (status in $?).
	check() {
		local rc=$? name=$1
		if [ "$rc" -eq 0 ]; then
			echo "ok: $name"
		else
			echo "FAIL: $name" >&2
			FAILS=$((FAILS + 1))
		fi
	}
	say() { echo "$PG_TEST_NAME: $((SECONDS - T0)) s: $*"; }
}

# pg_value_checks defines ok, bad, check DESC GOT WANT and counter LOG NAME.
pg_value_checks() {
	fail=0
	pass=0
	ok() { pass=$((pass + 1)); }
	bad() {
		echo "FAIL: $*" >&2
		fail=$((fail + 1))
	}
	check() { if [ "$2" == "$3" ]; then ok; else bad "$1: got '$2', want '$3'"; fi; }
	# counter LOG NAME: the value of NAME=N in apply's final "conflicts:" line (0 if absent)
	counter() {
		local line v
		line=$(grep 'conflicts:' "$1" | tail -1)
		[ -n "$line" ] || {
			echo "missing"
			return
		}
		v=$(sed -n "s/.*conflicts:.*[ :]$2=\([0-9]*\).*/\1/p" <<<"$line")
		echo "${v:-0}"
	}
}
