#!/usr/bin/env bash
# Builds sluice with warnings as errors and runs every test (CTest); then builds
# again with clang under AddressSanitizer + UndefinedBehaviorSanitizer, with the
# libFuzzer targets, runs every test again, then the timed fuzzing runs (label
# fuzz). Ends with the wall time of each phase. The first run applies with
# grouping (the default --group-size), the second one transaction at a time
# (SLUICE_APPLY_GROUP_SIZE=1), so every apply test runs both ways.
#
# Usage: tools/test.sh [--quick] [--long] [-R REGEX]
#   --quick     only the first (gcc) build and run
#   --long      longer end-to-end runs (SLUICE_TEST_LONG=1: 20 kill -9 cycles instead of
#               5 in mongo_capture_kill9 and of 8 in pg_test_capture_kill9 and
#               pg_test_apply_kill9)
#   -R REGEX    only tests whose name matches (passed to ctest)
# Exit status: 0 all tests passed, non-zero otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/deps.sh
. "$ROOT/tools/deps.sh"

quick=0
ctest_args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick=1 ;;
	--long) export SLUICE_TEST_LONG=1 ;;
	-R) ctest_args+=(-R "$2"); shift ;;
	-h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "test.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

sluice_install_deps
sluice_install_s3rver

# Wall time per phase, printed on exit (after a failure too: the phases so far).
phase_names=()
phase_secs=()
phase_t0=0
phase_end() {
	if [ "${#phase_names[@]}" -gt "${#phase_secs[@]}" ]; then
		phase_secs+=($((SECONDS - phase_t0)))
	fi
}
phase() {
	phase_end
	phase_names+=("$1")
	phase_t0=$SECONDS
}
phase_summary() {
	phase_end
	local i
	echo "== wall time per phase"
	for i in "${!phase_names[@]}"; do
		printf '   %-12s %5d s\n' "${phase_names[$i]}" "${phase_secs[$i]}"
	done
	printf '   %-12s %5d s\n' total "$SECONDS"
}
trap phase_summary EXIT

jobs=$(nproc 2>/dev/null || echo 2)
# build_suite DIR NAME CMAKE_ARGS...: configure and build DIR (phase "build NAME").
build_suite() {
	local dir=$1 name=$2
	shift 2
	phase "build $name"
	echo "== configure $dir ($*)"
	cmake -S "$ROOT" -B "$dir" -DSLUICE_WERROR=ON "$@" >/dev/null
	echo "== build $dir"
	cmake --build "$dir" -j "$jobs"
}
# test_suite DIR PHASE CTEST_ARGS...: run the tests of DIR that CTEST_ARGS select.
test_suite() {
	local dir=$1 name=$2
	shift 2
	phase "$name"
	echo "== $name: $dir"
	(cd "$dir" && ctest --output-on-failure --timeout 600 -j "$jobs" "$@" "${ctest_args[@]}")
}

build_suite "$ROOT/build/test" gcc -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc
test_suite "$ROOT/build/test" "tests gcc"

if [ "$quick" -eq 0 ]; then
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	export SLUICE_APPLY_GROUP_SIZE=1
	# -O1, as sanitizer builds usually are (OSS-Fuzz): asserts stay on (Debug),
	# and sluice and the MongoDB test peer run 2-3 times faster than at -O0.
	build_suite "$ROOT/build/test-asan" asan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-g -O1" \
		-DCMAKE_C_COMPILER=clang -DSLUICE_SANITIZE=ON -DSLUICE_FUZZ=ON
	test_suite "$ROOT/build/test-asan" "tests asan" -LE '^fuzz$'
	# The fuzzers run for a fixed time each: on their own, they take no CPU
	# from the end-to-end tests' servers.
	test_suite "$ROOT/build/test-asan" fuzzers -L '^fuzz$'
fi
echo "== all test suites passed"
