#!/usr/bin/env bash
# scripts/fuzz.sh [--seconds N] [--no-build] [target...]
# Builds the libFuzzer targets of tests/fuzz (standalone, with clang, in build-fuzz), runs every
# target's regression inputs (tests/fuzz/regress/<target>/: each must run clean), then fuzzes each
# target for N seconds (default 30) from a scratch copy of its seed corpus (tests/fuzz/corpus/<target>/
# stays as committed). Exits 1 on any crash, leak, UB or timeout and prints the input's path
# (new findings are kept in build-fuzz/artifacts/<target>/; copy them to tests/fuzz/regress/<target>/
# once fixed). Exits 77 (ctest's "skipped") when clang or its fuzzer runtime is missing.
# Targets: config idx png ckpt (default: all). Environment: JOBS (build parallelism, default 2),
# MFPIPE_FUZZ_BUILD (build folder, default build-fuzz), FUZZ_ARGS (extra libFuzzer flags).
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
fz=$top/tests/fuzz
build=${MFPIPE_FUZZ_BUILD:-$top/build-fuzz}
seconds=30
do_build=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    --no-build) do_build=0; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(config idx png ckpt)

max_len() {
  case "$1" in
    png) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

if [ $do_build = 1 ]; then
  if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz.sh: clang not found (scripts/install-deps.sh installs clang and libclang-rt-14-dev); skipped"
    exit 77
  fi
  # libFuzzer's runtime comes with libclang-rt-<version>-dev on Debian
  if ! echo 'int LLVMFuzzerTestOneInput(const char *d, long n) { return 0; }' |
       clang -x c -fsanitize=fuzzer,address,undefined -o /dev/null - >/dev/null 2>&1; then
    echo "fuzz.sh: clang cannot link -fsanitize=fuzzer (install libclang-rt-14-dev); skipped"
    exit 77
  fi
  echo "fuzz.sh: building $build"
  mkdir -p "$build"
  cmake -S "$fz" -B "$build" -DCMAKE_C_COMPILER=clang >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log"; echo "fuzz.sh: configure failed"; exit 1; }
  cmake --build "$build" -j"${JOBS:-2}" --target $(printf 'fuzz_%s ' "${targets[@]}") >"$build/build.log" 2>&1 ||
    { tail -50 "$build/build.log"; echo "fuzz.sh: build failed"; exit 1; }
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
common=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -detect_leaks=1)
failed=()
for t in "${targets[@]}"; do
  bin=$build/fuzz_$t
  [ -x "$bin" ] || { echo "fuzz.sh: no target $t ($bin)"; failed+=("$t: missing"); continue; }
  art=$build/artifacts/$t
  mkdir -p "$art"
  # 1. regression inputs (and the seeds): one run each, must be clean
  n=0
  for f in "$fz/regress/$t"/* "$fz/corpus/$t"/*; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    if ! "$bin" "${common[@]}" "$f" >"$art/last-regress.log" 2>&1; then
      tail -40 "$art/last-regress.log"
      echo "fuzz.sh: $t: CRASH on $f (log: $art/last-regress.log)"
      failed+=("$t: $f")
    fi
  done
  echo "fuzz.sh: $t: $n regression/seed input(s) run"
  # 2. fuzzing from a scratch copy of the corpus
  [ "$seconds" -gt 0 ] || continue
  work=$(mktemp -d "${TMPDIR:-/tmp}/mffuzz-corpus-$t.XXXXXX")
  cp "$fz/corpus/$t"/* "$work"/ 2>/dev/null || true
  dict=()
  [ -f "$fz/$t.dict" ] && dict=(-dict="$fz/$t.dict")
  before=$(ls "$art" | grep -c -E '^(crash|leak|timeout|oom|slow-unit)-' || true)
  log=$art/fuzz.log
  echo "fuzz.sh: $t: fuzzing ${seconds}s (max_len $(max_len "$t"), log $log)"
  "$bin" "${common[@]}" -max_len="$(max_len "$t")" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$art/" "${dict[@]}" ${FUZZ_ARGS:-} "$work" >"$log" 2>&1
  rc=$?
  rm -rf "$work"
  grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | tail -1
  echo
  if [ $rc -ne 0 ]; then
    tail -40 "$log"
    new=$(grep -oE "Test unit written to [^ ]+" "$log" | sed 's/Test unit written to //' | tail -1)
    echo "fuzz.sh: $t: CRASH (exit $rc); input: ${new:-see $log}"
    failed+=("$t: ${new:-exit $rc}")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "fuzz.sh: all clean (${targets[*]})"
