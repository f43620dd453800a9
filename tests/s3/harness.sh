# Sourced by the S3 tests: an S3 endpoint for one test, after tests/pg/harness.sh.
#
#   s3_start                 s3rver on a free loopback port with a throwaway data
#                            directory (stopped on exit); or, when SLUICE_TEST_S3_URL
#                            is set (s3://BUCKET/PREFIX?endpoint=URL...), that
#                            endpoint with credentials from the environment.
#                            Exits 77 (skipped) when neither is available.
#   s3_store NAME            a store URL of its own for this test run
#   s3_key NAME STREAM SEG   the object key of segment SEG of STREAM in store NAME
#   s3_curl METHOD KEY ARGS  a signed request (curl --aws-sigv4) on an object
#   s3_stop / s3_restart     stop s3rver / start it again on the same port and data
#   fp_start                 the fault-injecting proxy (faultproxy.py) in front of
#                            a local s3rver (exits 77 with SLUICE_TEST_S3_URL):
#                            FP_ENDPOINT, FP_LOG (one line per fault injected)
#   fp_rules JSON            replace the proxy's fault schedule (see faultproxy.py)
#   fp_store NAME [QUERY]    like s3_store, through the proxy
#
# s3rver has no conditional writes (If-None-Match): the tests against it exercise
# the fencing that does not rely on them (the lease object, the look before writing).

S3_PID=""
S3_LOCAL=0
FP_PID=""

s3_parse_url() { # s3_parse_url URL: sets S3_BUCKET, S3_PREFIX, S3_QUERY
	local rest=${1#s3://}
	local path=${rest%%\?*}
	S3_QUERY=""
	[ "$path" != "$rest" ] && S3_QUERY=${rest#*\?}
	S3_BUCKET=${path%%/*}
	S3_PREFIX=""
	[ "$S3_BUCKET" != "$path" ] && S3_PREFIX=${path#*/}
	S3_PREFIX=${S3_PREFIX%/}
}

s3_start() {
	S3_RUN=run-$$-$RANDOM
	if [ -n "${SLUICE_TEST_S3_URL:-}" ]; then
		s3_parse_url "$SLUICE_TEST_S3_URL"
		S3_ENDPOINT=$(printf '%s' "$S3_QUERY" | tr '&' '\n' | sed -n 's/^endpoint=//p' | python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote(sys.stdin.read().strip()))')
		[ -z "$S3_ENDPOINT" ] && S3_ENDPOINT=${AWS_ENDPOINT_URL:-https://s3.${AWS_REGION:-us-east-1}.amazonaws.com}
		export AWS_REGION=${AWS_REGION:-us-east-1}
		return 0
	fi
	if ! command -v s3rver >/dev/null 2>&1; then
		echo "SKIP: s3rver is not installed (npm install -g s3rver) and SLUICE_TEST_S3_URL is not set"
		exit 77
	fi
	S3_LOCAL=1
	S3_DIR=$PG_HARNESS_DIR/s3rver
	mkdir -p "$S3_DIR"
	S3_PORT=$(pg_free_port)
	S3_BUCKET=sluice-test
	S3_PREFIX=""
	S3_QUERY=""
	S3_ENDPOINT=http://127.0.0.1:$S3_PORT
	export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
	unset AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL
	s3_launch || return 1
	trap 'fp_stop; s3_stop; pg_harness_cleanup' EXIT
}

s3_launch() {
	# s3rver 3.7 signs its continuation tokens with a cipher OpenSSL 3 keeps in its
	# legacy provider: without it every truncated listing fails with HTTP 500.
	NODE_OPTIONS=--openssl-legacy-provider setsid s3rver -d "$S3_DIR" -a 127.0.0.1 -p "$S3_PORT" \
		--configure-bucket "$S3_BUCKET" >>"$PG_HARNESS_DIR/s3rver.log" 2>&1 &
	S3_PID=$!
	local i
	for i in $(seq 1 100); do
		grep -q "listening on" "$PG_HARNESS_DIR/s3rver.log" 2>/dev/null &&
			curl -s -o /dev/null "$S3_ENDPOINT/" && return 0
		sleep 0.1
	done
	echo "harness: s3rver did not start" >&2
	cat "$PG_HARNESS_DIR/s3rver.log" >&2
	return 1
}

s3_stop() {
	if [ -n "$S3_PID" ]; then
		kill "$S3_PID" 2>/dev/null
		wait "$S3_PID" 2>/dev/null
		S3_PID=""
	fi
}

s3_restart() {
	s3_stop
	: >"$PG_HARNESS_DIR/s3rver.log"
	s3_launch
}

s3_prefix() { # the key prefix of store NAME
	local p=$S3_RUN/$1
	[ -n "$S3_PREFIX" ] && p=$S3_PREFIX/$p
	printf '%s' "$p"
}

s3_store() {
	local q="endpoint=$S3_ENDPOINT"
	[ -n "$S3_QUERY" ] && q=$S3_QUERY
	printf 's3://%s/%s?%s' "$S3_BUCKET" "$(s3_prefix "$1")" "$q${2:+&$2}"
}

s3_key() { printf '%s/%s/%s' "$(s3_prefix "$1")" "$2" "$3"; }

s3_curl() {
	local method=$1 key=$2
	shift 2
	curl -sS -f --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
		${AWS_SESSION_TOKEN:+-H "x-amz-security-token: $AWS_SESSION_TOKEN"} \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X "$method" "$S3_ENDPOINT/$S3_BUCKET/$key" "$@"
}

fp_start() {
	if [ "$S3_LOCAL" != 1 ]; then
		echo "SKIP: the fault proxy needs the local s3rver (SLUICE_TEST_S3_URL is set)"
		exit 77
	fi
	FP_RULES=$PG_HARNESS_DIR/faults.json
	FP_LOG=$PG_HARNESS_DIR/faults.log
	echo '{"rules": []}' >"$FP_RULES"
	: >"$FP_LOG"
	python3 "$(dirname "${BASH_SOURCE[0]}")/faultproxy.py" --upstream "127.0.0.1:$S3_PORT" \
		--rules "$FP_RULES" --log "$FP_LOG" >"$PG_HARNESS_DIR/faultproxy.out" 2>&1 &
	FP_PID=$!
	local i
	for i in $(seq 1 100); do
		FP_PORT=$(sed -n 's/^listening on //p' "$PG_HARNESS_DIR/faultproxy.out")
		[ -n "$FP_PORT" ] && break
		sleep 0.1
	done
	[ -n "$FP_PORT" ] || {
		cat "$PG_HARNESS_DIR/faultproxy.out" >&2
		return 1
	}
	FP_ENDPOINT=http://127.0.0.1:$FP_PORT
}

fp_stop() {
	if [ -n "$FP_PID" ]; then
		kill "$FP_PID" 2>/dev/null
		wait "$FP_PID" 2>/dev/null
		FP_PID=""
	fi
}

fp_rules() { # replaced at once: the proxy reads the file on every request
	printf '%s\n' "$1" >"$FP_RULES.tmp" && mv "$FP_RULES.tmp" "$FP_RULES"
}

fp_store() {
	printf 's3://%s/%s?endpoint=%s%s' "$S3_BUCKET" "$(s3_prefix "$1")" "$FP_ENDPOINT" "${2:+&$2}"
}
