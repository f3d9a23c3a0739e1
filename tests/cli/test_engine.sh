# test_engine.sh - choosing the engine from the command line: `engine: cuda` where no usable GPU is
# present is one clear error naming the reason; `engine: auto` says what it opened (log and
# manifest); a precision the backend does not run falls back with a warning; the batch gathered on
# the backend from its copy of the data set (MFPIPE_DEVICE_DATA=1, the GPU's path) trains bit for bit
# like the host gather; the asynchronous step (the GPU's loop: loss accumulated on the backend,
# adamw_step, sync only when logging; MFPIPE_ASYNC_STEP=1 runs it on the CPU) trains bit for bit like
# the synchronous one for every objective, resumes the same, and skips or stops on a non-finite
# gradient; `mfpipe version` lists each backend or why it is unavailable.
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

# modules the registry refuses (only where this build has no real CUDA module, which would be found first)
if grep -q '^backend cuda .*: unavailable: engine cuda: no cuda backend module in this build' "$TMP/out"; then
  MFPIPE_BACKEND_PATH=$MFPIPE_BUILD_DIR/tests/badbackends/abi expect_fail bad-backend-abi \
    "backend module ABI version 99, but this mfpipe needs ABI version 1" "$MFPIPE" run -q exp.yaml engine=cuda
  MFPIPE_BACKEND_PATH=$MFPIPE_BUILD_DIR/tests/badbackends/size expect_fail bad-backend-size \
    "malformed backend module (interface size" "$MFPIPE" run -q exp.yaml engine=cuda
  MFPIPE_BACKEND_PATH=$MFPIPE_BUILD_DIR/tests/badbackends/abi expect_ok bad-backend-auto "$MFPIPE" run -q exp.yaml
  check "auto falls back past a refused module" grep -q 'engine auto: no usable CUDA backend (.*ABI version 99' results/en/*/log.txt
  rm -rf results
fi

# auto: whatever opened is in the log and the manifest
expect_ok auto "$MFPIPE" run -q exp.yaml
run=$(ls -d results/en/2* | head -1)
check "log names the backend" grep -q 'engine auto -> \(cpu\|cuda\), precision fp32' "$run/log.txt"
check "manifest has the backend" grep -q '"backend": {"kind":"\(cpu\|cuda\)","precision":"fp32","version":"' "$run/manifest.json"
rm -rf results

# cpu + bf16 where the CPU backend cannot run bf16 (forced here; tests/cli/test_bf16.sh has the real
# bf16 runs and the CPU-without-bf16 case): runs fp32 and says so
MFPIPE_CPU_NO_BF16=1 expect_ok bf16 "$MFPIPE" run -q exp.yaml engine=cpu precision=bf16
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

# same_means A B: the train lines of two metrics.jsonl files hold the same keys, and every number but
# time and img_per_s agrees to 1e-5 relative (the asynchronous loop sums per row in float)
same_means() {
  paste -d'\n' <(grep '"stage":"train".*"loss"' "$1") <(grep '"stage":"train".*"loss"' "$2") | awk '
    { gsub(/[{}"]/, ""); n = split($0, kv, ","); delete cur
      for (i = 1; i <= n; i++) { split(kv[i], p, ":"); cur[p[1]] = p[2] } }
    NR % 2 == 1 { delete prev; for (k in cur) prev[k] = cur[k]; next }
    { lines++
      for (k in cur) {
        if (k == "time" || k == "img_per_s" || k == "stage") continue
        if (!(k in prev)) { print "missing " k; bad = 1; continue }
        a = prev[k] + 0; b = cur[k] + 0; d = a - b; if (d < 0) d = -d
        m = a < 0 ? -a : a; if (m < 1) m = 1
        if (d > 1e-5 * m) { print k ": " prev[k] " vs " cur[k]; bad = 1 } } }
    END { if (lines != 3) { print "lines: " lines; bad = 1 }; exit bad }'
}
# the asynchronous step = the synchronous step, bit for bit, for every objective
for o in fm fm_avgvel meanflow imeanflow alphaflow; do
  MFPIPE_ASYNC_STEP=0 expect_ok sync-$o "$MFPIPE" run -q exp.yaml engine=cpu train.objective=$o --out "$TMP/s_$o"
  MFPIPE_ASYNC_STEP=1 expect_ok async-$o "$MFPIPE" run -q exp.yaml engine=cpu train.objective=$o --out "$TMP/a_$o"
  check "async $o: same checkpoint bytes" cmp -s "$TMP/s_$o/checkpoints/ckpt_00000012.mfc" "$TMP/a_$o/checkpoints/ckpt_00000012.mfc"
  # the logged means agree to float accumulation (the async sums per row across steps in float)
  check "async $o: same logged means" same_means "$TMP/s_$o/metrics.jsonl" "$TMP/a_$o/metrics.jsonl"
done
check "async is logged" grep -q 'asynchronous steps on the cpu backend' "$TMP/a_fm/log.txt"
# resume on the asynchronous path (Adam's step count comes back from the backend's state)
MFPIPE_ASYNC_STEP=1 expect_ok async-6 "$MFPIPE" run -q exp.yaml engine=cpu train.steps=6 --out "$TMP/ar"
MFPIPE_ASYNC_STEP=1 expect_ok async-resume "$MFPIPE" resume "$TMP/ar" train.steps=12 -q
MFPIPE_ASYNC_STEP=0 expect_ok sync-6 "$MFPIPE" run -q exp.yaml engine=cpu train.steps=6 --out "$TMP/sr"
MFPIPE_ASYNC_STEP=0 expect_ok sync-resume "$MFPIPE" resume "$TMP/sr" train.steps=12 -q
check "async resume = sync resume" cmp -s "$TMP/ar/checkpoints/ckpt_00000012.mfc" "$TMP/sr/checkpoints/ckpt_00000012.mfc"
# a non-finite gradient: skipped on the backend, then a stop naming the step, or a warning with skip
MFPIPE_ASYNC_STEP=1 MFPIPE_DEBUG_NAN_GRAD_STEP=3 expect_fail async-nan "step 3: the gradient norm is not finite" \
  "$MFPIPE" run -q exp.yaml engine=cpu --out "$TMP/an"
MFPIPE_ASYNC_STEP=1 MFPIPE_DEBUG_NAN_GRAD_STEP=3 expect_ok async-nan-skip "$MFPIPE" run -q exp.yaml engine=cpu \
  train.on_nan=skip --out "$TMP/as"
check "skip is reported" grep -q 'steps 3 to 4: 1 steps with a non-finite gradient norm skipped' "$TMP/as/log.txt"
MFPIPE_ASYNC_STEP=0 MFPIPE_DEBUG_NAN_GRAD_STEP=3 expect_ok sync-nan-skip "$MFPIPE" run -q exp.yaml engine=cpu \
  train.on_nan=skip --out "$TMP/ss"
check "async skip = sync skip" cmp -s "$TMP/as/checkpoints/ckpt_00000012.mfc" "$TMP/ss/checkpoints/ckpt_00000012.mfc"

# graphs: with the checked backend's emulation (MFPIPE_CHECKED_GRAPHS=1) every training step after
# the warm-up and every sampling evaluation is recorded, and a host synchronisation inside one
# aborts: the asynchronous step and the network evaluation never wait for the backend
cat >expg.yaml <<Y
name: cg
seed: 3
threads: 2
stages: [data, train, sample]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 8, channel_mult: [1, 2], res_blocks: 1, groups: 4, time_embed: {dim: 16, frequencies: 4}}
train: {steps: 12, batch: 8, log_every: 4, checkpoint_every: 12, sample_every: 6, sample_n: 4, sample_steps: 3, final_grid: 4, final_steps: 3}
sample: {n: 16, steps: 4, batch: 8}
Y
for o in fm meanflow; do
  MFPIPE_CHECKED_BACKEND=1 MFPIPE_CHECKED_GRAPHS=1 MFPIPE_ASYNC_STEP=1 expect_ok graphs-$o "$MFPIPE" run -q expg.yaml \
    engine=cpu train.objective=$o --out "$TMP/g_$o"
  n=$(sed -n 's/.*checked backend: \([0-9]*\) graphs recorded.*/\1/p' "$TMP/err")
  check "graphs-$o: steps and evaluations recorded (${n:-none})" test "${n:-0}" -ge 20
  check "graphs-$o: the log says so" grep -q 'recorded as graphs after two warm-up steps' "$TMP/g_$o/log.txt"
done
MFPIPE_ASYNC_STEP=1 expect_ok graphs-ref "$MFPIPE" run -q expg.yaml engine=cpu train.objective=fm --out "$TMP/g_ref"
check "recorded run = plain run" cmp -s "$TMP/g_fm/checkpoints/ckpt_00000012.mfc" "$TMP/g_ref/checkpoints/ckpt_00000012.mfc"

finish
