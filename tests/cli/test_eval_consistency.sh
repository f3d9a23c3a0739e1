# test_eval_consistency.sh - evaluation measures one thing: the eval stage inside a run and
# `mfpipe eval RUN` afterwards give identical numbers (both measure the 8-bit samples file); the real
# set of precision/recall is a random subset of the test set drawn with a recorded seed, not its first
# N images. Needs real MNIST and the committed feature network (skipped, saying so, without them).
source "$(dirname "$0")/lib.sh"
cd "$TMP"
mn=$SRC/data/mnist
# like test_eval.sh (labelled slow), this trains and evaluates on real data: not in the sanitizer pass
if grep -q '^MFPIPE_SANITIZE:BOOL=ON' "${MFPIPE_BUILD_DIR:-/nonexistent}/CMakeCache.txt" 2>/dev/null; then
  echo "test_eval_consistency: skipped: sanitizer build (real-data training and evaluation)"
  finish; exit
fi
if [ ! -f "$mn/t10k-images-idx3-ubyte" ] || [ ! -f "$SRC/models/lenet_mnist_v1.mfw" ]; then
  echo "test_eval_consistency: skipped: needs $mn (scripts/fetch-data.sh) and models/lenet_mnist_v1.mfw"
  finish; exit
fi
cat >exp.yaml <<Y
name: ec
seed: 3
threads: 2
stages: [data, train, ema, sample, eval]
data: {dataset: mnist, root: "$mn", limit_train: 2000}
model: {channels: 4, channel_mult: [1, 2], res_blocks: 1, groups: 2, time_embed: {dim: 8, frequencies: 2}}
train: {steps: 6, batch: 16, log_every: 3, final_grid: 0}
sample: {n: 300, steps: 3, sampler: euler, grid: 0, trajectory: 0}
eval: {n: 300, cache: "$TMP/cache"}
Y
metrics() { tr -d '\n' <"$1" | sed 's/.*"metrics":\(\[.*\]\)}.*/\1/'; }
expect_ok run "$MFPIPE" run -q exp.yaml --out "$TMP/run"
check "in-run eval.json" test -s "$TMP/run/eval.json"
expect_ok posthoc "$MFPIPE" eval "$TMP/run" --out "$TMP/post"
check "post-hoc eval.json" test -s "$TMP/post/eval.json"
a=$(metrics "$TMP/run/eval.json")
b=$(metrics "$TMP/post/eval.json")
check "metrics present" test -n "$a"
check "in-run and post-hoc metrics identical" test "$a" = "$b"
[ "$a" = "$b" ] || { echo "in-run:   $a" >&2; echo "post-hoc: $b" >&2; }
fid=$(echo "$a" | grep -o '"metric":"fid_lenet_v1","value":[0-9.e+-]*' | sed 's/.*://')
echo "FID in-run = post-hoc = $fid (N=300, 6 training steps)"
# a class-conditional model: the labels asked for are written beside the samples, so the
# conditional accuracy is measured the same way from the files
expect_ok run-cond "$MFPIPE" run -q exp.yaml model.class_cond=true --out "$TMP/runc"
check "labels written beside the samples" test -s "$TMP/runc/samples/labels.idx1-ubyte"
expect_ok posthoc-cond "$MFPIPE" eval "$TMP/runc" --out "$TMP/postc"
a2=$(metrics "$TMP/runc/eval.json")
b2=$(metrics "$TMP/postc/eval.json")
check "conditional accuracy measured" grep -q '"conditional_accuracy_lenet_v1"' "$TMP/runc/eval.json"
check "conditional: in-run and post-hoc metrics identical" test "$a2" = "$b2"
[ "$a2" = "$b2" ] || { echo "in-run:   $a2" >&2; echo "post-hoc: $b2" >&2; }
check "the subset seed is recorded" grep -q '"subset_seed":0' "$TMP/run/eval.json"
check "the real-set size is recorded" grep -q '"precision_recall_real_n":300,"precision_recall_real_of":10000' "$TMP/run/eval.json"

# the first 300 test images as samples: against the first 300 (a prefix) precision and recall would
# both be exactly 1; against a random 300 they are not; the same seed gives the same numbers, another
# seed other ones
E=(data.root="\"$mn\"" eval.cache="\"$TMP/cache\"" 'eval.metrics=[precision_recall]' --n 300)
expect_ok pr0 "$MFPIPE" eval --samples "$mn/t10k-images-idx3-ubyte" "${E[@]}" --out "$TMP/pr0"
expect_ok pr0b "$MFPIPE" eval --samples "$mn/t10k-images-idx3-ubyte" "${E[@]}" --out "$TMP/pr0b"
expect_ok pr1 "$MFPIPE" eval --samples "$mn/t10k-images-idx3-ubyte" "${E[@]}" eval.subset_seed=1 --out "$TMP/pr1"
p0=$(metrics "$TMP/pr0/eval.json"); p0b=$(metrics "$TMP/pr0b/eval.json"); p1=$(metrics "$TMP/pr1/eval.json")
echo "seed 0: $p0"
echo "seed 1: $p1"
check "not the prefix (precision and recall not both 1)" test -z "$(echo "$p0" | grep '"precision_lenet_v1_k3","value":1,' | grep '"recall_lenet_v1_k3","value":1,')"
check "same seed, same subset" test "$p0" = "$p0b"
check "another seed, another subset" test "$p0" != "$p1"
check "seed 1 recorded" grep -q '"subset_seed":1' "$TMP/pr1/eval.json"
finish
