# test_engine.sh - choosing the engine from the command line: `engine: cuda` where no usable GPU is
# present is one clear error naming the reason; `engine: auto` says what it opened (log and
# manifest); a precision the backend does not run falls back with a warning; the batch gathered on
# the backend from its copy of the data set (MFPIPE_DEVICE_DATA=1, the GPU's path) trains bit for bit
# like the host gather; `mfpipe version` lists each backend or why it is unavailable.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
make_mnist_dir "$TMP/mn" 128 16
cat >exp.yaml <<Y
name: en
seed: 3
threads: 2
stages: [data, train]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 8, channel_mult: [1, 2], res_blocks: 1, groups: 4, time_embed: {dim: 16, frequencies: 4}}
train: {steps: 12, batch: 8, log_every: 4, checkpoint_every: 12, sample_every: 0, final_grid: 0}
Y

expect_ok version "$MFPIPE" version
check "version lists the cpu backend" grep -q '^backend cpu \[ABI [0-9]*\]: cpu: ' "$TMP/out"
check "version lists the cuda backend" grep -q '^backend cuda \[ABI [0-9]*\]: ' "$TMP/out"
if grep -q '^backend cuda .*: unavailable: ' "$TMP/out"; then
  reason=$(sed -n 's/^backend cuda .*: unavailable: //p' "$TMP/out" | cut -c1-40)
  expect_fail engine-cuda "$reason" "$MFPIPE" run -q exp.yaml engine=cuda
  check "engine cuda error names the engine" grep -q 'error: .*engine cuda: ' "$TMP/err"
  check "failed run says why in status.json" grep -q '"state":"failed".*engine cuda: ' results/en/*/status.json
  rm -rf results
fi

# auto: whatever opened is in the log and the manifest
expect_ok auto "$MFPIPE" run -q exp.yaml
run=$(ls -d results/en/2* | head -1)
check "log names the backend" grep -q 'engine auto -> \(cpu\|cuda\), precision fp32' "$run/log.txt"
check "manifest has the backend" grep -q '"backend": {"kind":"\(cpu\|cuda\)","precision":"fp32","version":"' "$run/manifest.json"
rm -rf results

# cpu + bf16: runs fp32 and says so
expect_ok bf16 "$MFPIPE" run -q exp.yaml engine=cpu precision=bf16
run=$(ls -d results/en/2* | head -1)
check "bf16 falls back with a warning" grep -q 'precision bf16: the cpu backend runs fp32' "$run/log.txt"
check "manifest says fp32" grep -q '"backend": {"kind":"cpu","precision":"fp32"' "$run/manifest.json"
rm -rf results
expect_fail bad-precision "precision" "$MFPIPE" run -q exp.yaml precision=fp16

# the batch gathered on the backend = the batch gathered on the host, bit for bit
MFPIPE_DEVICE_DATA=0 expect_ok host-gather "$MFPIPE" run -q exp.yaml engine=cpu --out "$TMP/host"
MFPIPE_DEVICE_DATA=1 expect_ok dev-gather "$MFPIPE" run -q exp.yaml engine=cpu --out "$TMP/dev"
check "device gather is logged" grep -q 'training images (.* MiB) on the cpu backend' "$TMP/dev/log.txt"
check "same checkpoint bytes" cmp -s "$TMP/host/checkpoints/ckpt_00000012.mfc" "$TMP/dev/checkpoints/ckpt_00000012.mfc"
strip() { sed 's/"img_per_s":[^,}]*//; s/"time":[^,}]*//' "$1" | grep '"stage":"train"' | grep '"loss"'; }
check "same losses" diff <(strip "$TMP/host/metrics.jsonl") <(strip "$TMP/dev/metrics.jsonl")

finish
