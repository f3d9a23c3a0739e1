#!/usr/bin/env bash
# The README's second command: build with warnings as errors and run the whole test suite, then build
# with AddressSanitizer + UndefinedBehaviorSanitizer and run it again.
#   scripts/test.sh            both configurations
#   scripts/test.sh --fast     the normal configuration only
#   MFPIPE_TEST_LABEL_EXCLUDE=slow scripts/test.sh   skip tests labelled slow (ctest -LE)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
exclude=()
if [ -n "${MFPIPE_TEST_LABEL_EXCLUDE:-}" ]; then exclude=(-LE "$MFPIPE_TEST_LABEL_EXCLUDE"); fi

run_suite() { # build-dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -DMFPIPE_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure -j"$jobs" "${exclude[@]}")
}

echo "== test suite (RelWithDebInfo, -Werror)"
run_suite build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo
if [ "${1:-}" != "--fast" ]; then
  echo "== test suite under ASan + UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DMFPIPE_SANITIZE=ON
fi
