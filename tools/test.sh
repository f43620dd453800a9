#!/usr/bin/env bash
# Builds sluice with warnings as errors and runs every test (CTest); then builds
# again with clang under AddressSanitizer + UndefinedBehaviorSanitizer, with the
# libFuzzer targets, and runs every test again. The first run applies with
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
	-h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "test.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

sluice_install_deps
sluice_install_s3rver

jobs=$(nproc 2>/dev/null || echo 2)
run_suite() {
	local dir=$1
	shift
	echo "== configure $dir ($*)"
	cmake -S "$ROOT" -B "$dir" -DSLUICE_WERROR=ON "$@" >/dev/null
	echo "== build $dir"
	cmake --build "$dir" -j "$jobs"
	echo "== test $dir"
	(cd "$dir" && ctest --output-on-failure --timeout 600 -j "$jobs" "${ctest_args[@]}")
}

run_suite "$ROOT/build/test" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=gcc

if [ "$quick" -eq 0 ]; then
	export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
	export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
	export SLUICE_APPLY_GROUP_SIZE=1
	run_suite "$ROOT/build/test-asan" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
		-DSLUICE_SANITIZE=ON -DSLUICE_FUZZ=ON
fi
echo "== all test suites passed"
