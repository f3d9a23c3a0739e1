# test_meanflow.sh - the average-velocity objectives from the command line: meanflow trains and logs
# its split losses, resumes bit for bit from an earlier checkpoint, samples in one step; imeanflow,
# alphaflow and the finite-difference derivative run; a NaN stops the run naming the step; a
# class-conditional model with distilled guidance trains and samples the requested labels; bad
# guidance settings fail before training.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
make_mnist_dir "$TMP/mn" 128 16
cat >mf.yaml <<Y
name: mf
seed: 3
threads: 2
stages: [data, train, ema]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 8, channel_mult: [1, 2], res_blocks: 1, groups: 4, time_embed: {dim: 16, frequencies: 4, scale: 1}}
train:
  objective: meanflow
  meanflow: {flow_ratio: 0.75}
  steps: 40
  batch: 16
  log_every: 10
  checkpoint_every: 10
  keep_checkpoints: 4
  final_grid: 4
  final_steps: 1
  schedule: {warmup: 5}
Y
expect_ok meanflow "$MFPIPE" run -q mf.yaml
run=$(ls -d results/mf/2* | head -1)
check "meanflow: checkpoint" test -s "$run/checkpoints/ckpt_00000040.mfc"
check "meanflow: split losses logged" grep -q '"loss_unweighted":.*"loss_r_eq_t":.*"loss_r_lt_t":' "$run/metrics.jsonl"
check "meanflow: 1-step final grid" grep -q 'meanflow 1 steps' "$run/log.txt"
check "meanflow: u(z, r, t) model" grep -q 'ti2 meanflow' "$run/log.txt"
ref=$(sha256sum <"$run/checkpoints/ckpt_00000040.mfc")
# resume from step 20 (the later checkpoints removed) ends with the same bytes
cp -r "$run" resumed
rm resumed/checkpoints/ckpt_00000030.mfc resumed/checkpoints/ckpt_00000040.mfc
expect_ok meanflow-resume "$MFPIPE" resume resumed -q
check "meanflow: resume is bit-identical" test "$(sha256sum <resumed/checkpoints/ckpt_00000040.mfc)" = "$ref"
# one-step samples from the run
expect_ok meanflow-sample "$MFPIPE" sample "$run" --sampler meanflow --steps 1 --n 8 --out "$TMP/s1"
check "meanflow: samples written" test "$(stat -c %s "$TMP/s1/samples/samples.idx3-ubyte")" = $((16 + 8 * 784))

for o in "imeanflow" "alphaflow" "meanflow train.meanflow.derivative=finite_difference"; do
  set -- $o
  expect_ok "$o" "$MFPIPE" run -q mf.yaml train.objective="$1" train.steps=6 train.checkpoint_every=0 ${2:+"$2"}
done
check "alphaflow logs alpha" grep -q '"alpha":' "$(ls -d results/mf/2* | sed -n 3p)/metrics.jsonl"

MFPIPE_DEBUG_NAN_STEP=4 expect_fail meanflow-nan "step 4: the loss is nan" "$MFPIPE" run -q mf.yaml train.steps=8

# conditional, guidance distilled: sample every class, labels written
cat >cond.yaml <<Y
name: cond
seed: 1
threads: 2
stages: [data, train, ema, sample]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 8, channel_mult: [1, 2], res_blocks: 1, groups: 4, class_cond: true,
        time_embed: {dim: 16, frequencies: 4, scale: 1}}
train: {objective: meanflow, steps: 6, batch: 16, checkpoint_every: 0, final_grid: 0, class_dropout: 0.2,
        guidance: {w: 2.0, k: 0.25}}
sample: {sampler: meanflow, steps: 1, n: 20, labels: all, grid: 0, trajectory: 0}
Y
expect_ok cond "$MFPIPE" run -q cond.yaml
crun=$(ls -d results/cond/2* | head -1)
check "cond: labels file of 20" test "$(stat -c %s "$crun/samples/labels.idx1-ubyte")" = 28
check "cond: null class in the model" grep -q ' null' "$crun/log.txt"
expect_fail guidance-no-dropout "guidance needs the null class" "$MFPIPE" run -q cond.yaml train.class_dropout=0
finish
