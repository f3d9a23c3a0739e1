#!/usr/bin/env bash
# The README's first command: install what is missing, build (Release), fetch MNIST on first use and
# run the main CPU job, experiments/mnist_quick.yaml. Extra arguments go to `mfpipe run` as overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo "quickstart: built build/bin/mfpipe"
exec build/bin/mfpipe run experiments/mnist_quick.yaml "$@"
