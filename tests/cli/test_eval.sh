# test_eval.sh - `mfpipe eval` with the committed feature network on real MNIST (skipped, saying so,
# without data/mnist): feature-network accuracy, a samples file, a PNG grid, a run folder, the floor,
# and refusals.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
mn=$SRC/data/mnist
if [ ! -f "$mn/t10k-images-idx3-ubyte" ] || [ ! -f "$SRC/models/lenet_mnist_v1.mfw" ]; then
  echo "test_eval: skipped: needs $mn (scripts/fetch-data.sh) and models/lenet_mnist_v1.mfw"
  finish; exit
fi
E=(data.root="\"$mn\"" eval.cache="\"$TMP/cache\"")

expect_ok check-features "$MFPIPE" eval --check-features "${E[@]}" --out "$TMP/cf"
acc=$(sed -n 's/.*test accuracy \([0-9.]*\).*/\1/p' "$TMP/out")
check "feature network test accuracy >= 0.99 (got $acc)" awk -v a="$acc" 'BEGIN{exit !(a >= 0.99)}'

expect_ok samples-file "$MFPIPE" eval --samples "$mn/t10k-images-idx3-ubyte" "${E[@]}" --out "$TMP/self"
fid=$(grep -o '"metric":"fid_lenet_v1","value":[0-9.e+-]*' "$TMP/self/eval.json" | sed 's/.*://')
check "the test set against itself: FID ~0 (got $fid)" awk -v f="$fid" 'BEGIN{exit !(f < 1e-3)}'
check "records N" grep -q '"metric":"fid_lenet_v1","value":[0-9.e+-]*,"n":10000,"feature_net":"lenet_v1@' "$TMP/self/eval.json"
check "precision and recall of a set against itself are 1" grep -q '"metric":"precision_lenet_v1_k3","value":1,' "$TMP/self/eval.json"
check "precision recorded" grep -q '"metric":"precision_lenet_v1_k3"' "$TMP/self/eval.json"
check "classifier score recorded" grep -q '"metric":"classifier_score_lenet_v1"' "$TMP/self/eval.json"
check "reference statistics cached" test -n "$(ls "$TMP/cache")"
check "nearest training images" test -s "$TMP/self/eval/nearest_train.png"

# a PNG grid in make_grid layout (written by the preview stage from test images)
expect_ok grid "$MFPIPE" run -q "$SRC/experiments/eval.yaml" 'stages=[data,preview]' data.root="\"$mn\"" preview.split=test preview.n=100 preview.nrow=10 --out "$TMP/pv"
expect_ok grid-eval "$MFPIPE" eval --samples "$TMP/pv/data_preview.png" --grid-nrow 10 "${E[@]}" --out "$TMP/ge"
check "grid: 100 images read" grep -q '"n":100' "$TMP/ge/eval.json"

expect_ok floor "$MFPIPE" eval --reference --n 3000 "${E[@]}" --out "$TMP/floor"
check "floor recorded" grep -q '"metric":"fid_lenet_v1"' "$TMP/floor/eval.json"

if [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  expect_ok fashion-features "$MFPIPE" run "$SRC/experiments/eval_fashion.yaml" eval.check_features=true --out "$TMP/ff"
  facc=$(sed -n 's/.*test accuracy \([0-9.]*\).*/\1/p' "$TMP/out")
  check "Fashion-MNIST feature network test accuracy >= 0.90 (got $facc)" awk -v a="$facc" 'BEGIN{exit !(a >= 0.90)}'
else
  echo "note: dataset-fashion-mnist not installed; Fashion feature network not checked"
fi

printf 'not an idx' >"$TMP/bad.idx"
expect_fail bad-samples "bad.idx" "$MFPIPE" eval --samples "$TMP/bad.idx" "${E[@]}" --out "$TMP/bad"
expect_fail bad-metric "unknown metric 'fidd'" "$MFPIPE" eval --samples "$mn/t10k-images-idx3-ubyte" "${E[@]}" 'eval.metrics=[fidd]' --out "$TMP/bad2"
finish
