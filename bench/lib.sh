# bench/lib.sh - what the benchmark scripts share (sourced, from the repository root).

# bench_data WORK [PYTHON]: MNIST-shaped training data for a benchmark: the real files in data/mnist when
# present, else a synthetic set written under WORK (bench/make_synthetic_mnist.py; the speed does not
# depend on the pixels). Sets dataroot, verify (the data stage's checksum check) and real_mnist (1/0).
bench_data() {
  local work=$1 py=${2:-/usr/bin/python3}
  if [ -f data/mnist/train-images-idx3-ubyte ] || [ -f data/mnist/train-images-idx3-ubyte.gz ]; then
    dataroot=$PWD/data/mnist; verify=true; real_mnist=1
  else
    dataroot=$work/mn; verify=false; real_mnist=0; mkdir -p "$dataroot"
    "$py" bench/make_synthetic_mnist.py "$dataroot" || /usr/bin/python3 bench/make_synthetic_mnist.py "$dataroot" ||
      { echo "bench: no python to write the synthetic data set" >&2; return 1; }
  fi
}

# bench_build: configure and build the Release tree ($MFPIPE_BUILD, default build); sets build and mf.
bench_build() {
  build=${MFPIPE_BUILD:-build}
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j"$(nproc)" >/dev/null
  mf=$build/bin/mfpipe
}
