#!/usr/bin/env bash
# Regenerates the committed seed corpora tests/fuzz/corpus/<target>/ with make_seeds.c (built in
# build-fuzz with clang, like the targets). Run from anywhere; the seeds are a few KB in all.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${MFPIPE_FUZZ_BUILD:-$top/build-fuzz}
cmake -S "$here" -B "$build" -DCMAKE_C_COMPILER=clang >/dev/null
cmake --build "$build" --target fuzz_make_seeds -j"${JOBS:-1}" >/dev/null
for t in config idx png ckpt; do mkdir -p "$here/corpus/$t"; rm -f "$here/corpus/$t"/*; done
ASAN_OPTIONS=detect_leaks=1 "$build/fuzz_make_seeds" "$here/corpus"
du -sh "$here/corpus"
