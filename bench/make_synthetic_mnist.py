#!/usr/bin/env python3
"""bench/make_synthetic_mnist.py DIR: four MNIST-format IDX files of random digits (4096 training images,
16 test images), for the benchmarks when the real MNIST is not in data/mnist (speed does not depend on
the pixels). Used by bench/run.sh, bench/meanflow_bench.sh and bench/gpu_check.sh."""
import os, random, struct, sys

d = sys.argv[1]
r = random.Random(0)


def w(name, dims, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, len(dims)) + b"".join(struct.pack(">I", x) for x in dims) + data)


n = 4096
w("train-images-idx3-ubyte", (n, 28, 28), bytes(r.randrange(256) for _ in range(n * 784)))
w("train-labels-idx1-ubyte", (n,), bytes(i % 10 for i in range(n)))
w("t10k-images-idx3-ubyte", (16, 28, 28), bytes(16 * 784))
w("t10k-labels-idx1-ubyte", (16,), bytes(16))
