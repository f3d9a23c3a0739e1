# test_interop.sh - weights out and in (docs/interop.md): mfpipe export (EMA by default, --raw, --step),
# mfpipe import (a run folder that sample uses, with the same samples as the source run), train.init_from
# (training starts from the file's weights; every mismatch refused naming the tensor), the files the
# PyTorch mirror loaded (tests/ref/export_*.safetensors) imported as they are, and the TensorBoard folder.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
make_mnist_dir "$TMP/mn" 64 16
cat >exp.yaml <<Y
name: io
seed: 2
threads: 2
stages: [data, train, ema, sample]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 4, channel_mult: [1, 2], res_blocks: 1, groups: 2, time_embed: {dim: 8, frequencies: 2}}
train: {steps: 6, batch: 8, log_every: 2, checkpoint_every: 2, keep_checkpoints: 5, final_grid: 0}
sample: {n: 10, steps: 2, grid: 0, trajectory: 0}
Y
S=samples/samples.idx3-ubyte
same() { cmp -s "$1" "$2"; }
differ() { ! cmp -s "$1" "$2"; }
expect_ok train "$MFPIPE" run -q exp.yaml --out a
check "a TensorBoard events file" test -s "$(ls a/tb/events.out.tfevents.* | head -1)"

expect_ok export-ema "$MFPIPE" export a --out ema.safetensors
expect_ok export-raw "$MFPIPE" export a --raw --out raw.safetensors
expect_ok export-step "$MFPIPE" export a --raw --step 4 --out s4.safetensors
check "the header starts with the metadata: format pt, the network" \
  grep -q '^{"__metadata__":{"format":"pt","mfpipe.unet_cfg":' <(tail -c +9 ema.safetensors | head -c 200)
check "EMA by default" grep -aq '"mfpipe.weights":"ema"' ema.safetensors
check "--raw" grep -aq '"mfpipe.weights":"raw"' raw.safetensors
check "--step 4" grep -aq '"mfpipe.step":"4"' s4.safetensors
check "EMA and raw weights differ" differ ema.safetensors raw.safetensors
expect_fail export-nostep "step 3" "$MFPIPE" export a --step 3 --out x.safetensors
expect_fail export-norun "no valid checkpoint" "$MFPIPE" export "$TMP/nothing" --out x.safetensors
expect_fail export-usage "usage: mfpipe export" "$MFPIPE" export a
sed 's/stages: \[data, train, ema, sample\]/stages: [data, train, sample]/' exp.yaml >noema.yaml
expect_ok train-noema "$MFPIPE" run -q noema.yaml --out b
expect_fail export-noema "no EMA weights" "$MFPIPE" export b --ema --out x.safetensors

# import: a run folder whose samples are the source run's
expect_ok import "$MFPIPE" import raw.safetensors --out imp
check "import: status finished" grep -q '"state": *"finished"' imp/status.json
expect_ok sample-imported "$MFPIPE" sample imp --n 6 --steps 2 --seed 5 --out si
expect_ok sample-source "$MFPIPE" sample a --n 6 --steps 2 --seed 5 --weights raw --out sa
check "imported weights sample as the source's raw weights" same si/$S sa/$S
expect_fail import-twice "already" "$MFPIPE" import raw.safetensors --out imp
# the files the PyTorch mirror loaded with strict=True import as they are
for f in fm_tiny mf_cond_tiny; do
  expect_ok "import-$f" "$MFPIPE" import "$SRC/tests/ref/export_$f.safetensors" --out "imp_$f"
  expect_ok "sample-$f" "$MFPIPE" sample "imp_$f" --n 4 --steps 1 --out "s_$f"
done

# init_from: training starts from the file (with lr 0 the weights stay the file's)
echo 'function lr(step) return 0 end' >lr0.lua
expect_ok init "$MFPIPE" run -q exp.yaml train.init_from="$TMP/raw.safetensors" 'hooks=[lr0.lua]' sample.weights=raw --out c
check "init_from: the log names the file" grep -q "initial weights from $TMP/raw.safetensors" c/log.txt
check "init_from: recorded in metrics.jsonl with its hash" grep -q '"event":"init_from","file":"'"$TMP"'/raw.safetensors","sha256":"[0-9a-f]\{64\}"' c/metrics.jsonl
expect_ok sample-a-raw "$MFPIPE" sample a --n 10 --steps 2 --weights raw --out sar
expect_ok sample-c "$MFPIPE" sample c --n 10 --steps 2 --weights raw --out sc
check "init_from + lr 0: the weights are the file's" same sar/$S sc/$S
expect_fail init-shape "tensor 'conv_in.weight': shape [4, 1, 3, 3] in the file, the model needs [8, 1, 3, 3]" \
  "$MFPIPE" run -q exp.yaml train.init_from="$TMP/raw.safetensors" model.channels=8 --out d
expect_fail init-missing "cannot open" "$MFPIPE" run -q exp.yaml train.init_from="$TMP/none.safetensors" --out e
# relative to the experiment file; recorded absolute in config.yaml
mkdir -p sub && cp raw.safetensors sub/w.safetensors
sed 's/^train: {/train: {init_from: w.safetensors, /' exp.yaml >sub/exp.yaml
expect_ok init-relative "$MFPIPE" run -q sub/exp.yaml --out f
check "init_from recorded absolute" grep -q "init_from: \"$TMP/sub/w.safetensors\"" f/config.yaml
finish
