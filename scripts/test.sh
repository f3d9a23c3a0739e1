#!/usr/bin/env bash
# The README's second command: build with warnings as errors and run the whole test suite (fetching
# MNIST first if it is missing), then build with AddressSanitizer + UndefinedBehaviorSanitizer and run
# it again without the tests labelled slow.
#   scripts/test.sh            both configurations
#   scripts/test.sh --fast     the normal configuration only
#   MFPIPE_TEST_LABEL_EXCLUDE=slow scripts/test.sh   skip tests labelled slow (ctest -LE)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
exclude=()
if [ -n "${MFPIPE_TEST_LABEL_EXCLUDE:-}" ]; then exclude=(-LE "$MFPIPE_TEST_LABEL_EXCLUDE"); fi

run_suite() { # build-dir, cmake args..., -- ctest args...
  local dir=$1; shift
  local cm=() ct=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do cm+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  ct=("$@")
  cmake -S . -B "$dir" -DMFPIPE_WERROR=ON "${cm[@]}" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure -j"$jobs" "${exclude[@]}" "${ct[@]}")
}

echo "== test suite (RelWithDebInfo, -Werror)"
cmake -S . -B build-test -DMFPIPE_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-test -j"$jobs"
# real MNIST for the tests that need it (fetched once by the data stage; they skip, saying so, without it)
if [ ! -f data/mnist/t10k-images-idx3-ubyte ] && [ ! -f data/mnist/t10k-images-idx3-ubyte.gz ]; then
  fetch=$(mktemp -d /tmp/mfpipe-fetch-XXXXXX)
  build-test/bin/mfpipe run -q experiments/eval.yaml 'stages=[data]' --out "$fetch/run" ||
    echo "test.sh: MNIST could not be fetched; tests that need it will skip"
  rm -rf "$fetch"
fi
(cd build-test && ctest --output-on-failure -j"$jobs" "${exclude[@]}")
if [ "${1:-}" != "--fast" ]; then
  echo "== test suite under ASan + UBSan (without the tests labelled slow, which ran above)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DMFPIPE_SANITIZE=ON -- -LE slow
fi
