# test_train.sh - training end to end from the command line: metrics and samples, a NaN stop, and
# exact resume: a run killed with SIGKILL (and one stopped with SIGTERM) and resumed ends with the
# same checkpoint bytes as an uninterrupted run; a corrupt newest checkpoint is moved aside; resume
# safety: changed training settings refused (or recorded with --allow-changes), resumes.jsonl,
# schedule extension without a jump, the run-folder lock, non-finite gradient norms.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
make_mnist_dir "$TMP/mn" 256 32
# deterministic but varied pixels: overwrite the constant images with a pattern
cat >exp.yaml <<Y
name: tr
seed: 5
threads: 2
stages: [data, train, ema]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 8, channel_mult: [1, 2], res_blocks: 1, groups: 4, time_embed: {dim: 16, frequencies: 4}}
train:
  steps: 60
  batch: 16
  objective: fm_avgvel
  avgvel: {k: 2}
  log_every: 10
  checkpoint_every: 10
  keep_checkpoints: 3
  sample_every: 30
  sample_n: 4
  sample_steps: 2
  final_grid: 10
  final_steps: 2
  schedule: {warmup: 5}
Y
expect_ok train "$MFPIPE" run -q exp.yaml
ref=$(ls -d results/tr/2* | head -1)
check "final checkpoint" test -s "$ref/checkpoints/ckpt_00000060.mfc"
check "keeps 3 checkpoints" test "$(ls "$ref/checkpoints" | wc -l)" = 3
check "loss logged" grep -q '"stage":"train".*"step":60,"loss":' "$ref/metrics.jsonl"
check "avgvel logged" grep -q '"avgvel_loss":' "$ref/metrics.jsonl"
check "periodic grid" test -s "$ref/samples/step_00000030.png"
check "final grid" test -s "$ref/samples/final_grid.png"
check "ema metrics" grep -q '"stage":"ema"' "$ref/metrics.jsonl"
check "param count logged" grep -q '"event":"model","params":' "$ref/metrics.jsonl"
refsum=$(sha256sum <"$ref/checkpoints/ckpt_00000060.mfc")

# same seed, same threads: bit-identical
expect_ok train-again "$MFPIPE" run -q exp.yaml
again=$(ls -d results/tr/2* | sed -n 2p)
check "deterministic rerun" test "$(sha256sum <"$again/checkpoints/ckpt_00000060.mfc")" = "$refsum"

# SIGKILL after the first checkpoint, then resume
"$MFPIPE" run -q exp.yaml train.steps=60 2>/dev/null &
pid=$!
killed=""
for _ in $(seq 1 600); do
  d=$(ls -d results/tr/2* 2>/dev/null | sed -n 3p)
  if [ -n "$d" ] && ls "$d"/checkpoints/ckpt_000000[1-5]0.mfc >/dev/null 2>&1; then kill -9 $pid; killed=1; break; fi
  sleep 0.02
done
wait $pid 2>/dev/null
run3=$(ls -d results/tr/2* | sed -n 3p)
if [ -n "$killed" ] && [ ! -e "$run3/checkpoints/ckpt_00000060.mfc" ]; then
  check "killed run marked running" grep -q '"state":"running"' "$run3/status.json"
  expect_ok resume "$MFPIPE" resume "$run3" -q
  check "resumed run finished" grep -q '"state":"finished"' "$run3/status.json"
  check "resume after SIGKILL is bit-identical" test "$(sha256sum <"$run3/checkpoints/ckpt_00000060.mfc")" = "$refsum"
else
  echo "note: the run finished before it could be killed; resume checked below only" >&2
fi

# a corrupt newest checkpoint is skipped: truncate step 50, remove 60, resume from 40
run4=$(ls -d results/tr/2* | sed -n 2p)
rm "$run4/checkpoints/ckpt_00000060.mfc"
head -c 1000 "$run4/checkpoints/ckpt_00000050.mfc" >"$run4/checkpoints/x" && mv "$run4/checkpoints/x" "$run4/checkpoints/ckpt_00000050.mfc"
"$MFPIPE" resume "$run4" >"$TMP/out" 2>"$TMP/err" && ok || bad "resume with corrupt checkpoint: $(tail -3 "$TMP/err")"
check "corrupt checkpoint reported" grep -q "corrupt checkpoint moved to .*corrupt/ckpt_00000050.mfc: .*checksum mismatch" "$TMP/err"
check "corrupt checkpoint kept aside" test -s "$run4/checkpoints/corrupt/ckpt_00000050.mfc"
check "resumed from step 40" grep -q "step 40" "$TMP/err"
check "resume after corruption is bit-identical" test "$(sha256sum <"$run4/checkpoints/ckpt_00000060.mfc")" = "$refsum"
check "resume recorded" grep -q '"from_step":40,"checkpoint":".*ckpt_00000040.mfc","command":' "$run4/resumes.jsonl"

# every checkpoint corrupt: start over, and keep the new (valid) checkpoints
for f in "$run4"/checkpoints/ckpt_*.mfc; do head -c 500 "$f" >"$f.x" && mv "$f.x" "$f"; done
expect_ok resume-all-corrupt "$MFPIPE" resume "$run4" -q
check "all-corrupt: restarted from 0" grep -q '"from_step":0,"checkpoint":null' "$run4/resumes.jsonl"
check "all-corrupt: 3 valid checkpoints kept" test "$(ls "$run4"/checkpoints/ckpt_*.mfc | wc -l)" = 3
check "all-corrupt: bit-identical" test "$(sha256sum <"$run4/checkpoints/ckpt_00000060.mfc")" = "$refsum"
expect_ok resume-after-restart "$MFPIPE" resume "$run4" -q
check "all-corrupt: next resume finds the new checkpoint" grep -q '"from_step":60' "$run4/resumes.jsonl"

# changed training settings: refused, naming each key with both values, nothing written
before=$(wc -l <"$run4/resumes.jsonl")
expect_fail resume-batch "train.batch: 16 -> 8" "$MFPIPE" resume "$run4" train.batch=8 seed=6
check "both changes named" grep -q "seed: 5 -> 6" "$TMP/err"
check "refused resume writes nothing" test "$(wc -l <"$run4/resumes.jsonl")" = "$before"
check "refused resume keeps status" grep -q '"state":"finished"' "$run4/status.json"
expect_fail resume-lr "train.optimizer.lr: 0.00020000000000000001 -> 0.02" "$MFPIPE" resume "$run4" train.optimizer.lr=0.02
expect_fail resume-timedist "train.time_dist: uniform -> logit_normal" "$MFPIPE" resume "$run4" train.time_dist=logit_normal
expect_fail resume-ema "ema.decay" "$MFPIPE" resume "$run4" ema.decay=0.9
expect_fail resume-model "model.channels: 8 -> 16" "$MFPIPE" resume "$run4" model.channels=16
# logging cadence may change; --allow-changes continues and records the change; config.yaml follows
expect_ok resume-log "$MFPIPE" resume "$run4" -q train.log_every=5
expect_ok resume-allow "$MFPIPE" resume "$run4" -q train.batch=8 --allow-changes
check "allowed change recorded" grep -q '"changed_settings":{"train.batch":\["16","8"\]},"allow_changes":true' "$run4/resumes.jsonl"
check "config.yaml stays true" grep -q "batch: 8" "$run4/config.yaml"
expect_fail allow-needs-resume "applies to resuming only" "$MFPIPE" run exp.yaml --allow-changes
# config.yaml edited by hand: the checkpoint's own record still refuses, and the refusal is recorded
sed -i 's/batch: 8/batch: 4/' "$run4/config.yaml"
expect_fail resume-edited "train.batch: 8 -> 4" "$MFPIPE" resume "$run4"
check "checkpoint named as the source" grep -q "ckpt_00000060.mfc: resuming would change" "$TMP/err"
check "failed resume recorded with its error" grep -q '"from_step":null,.*"error":".*train.batch: 8 -> 4' "$run4/resumes.jsonl"
sed -i 's/batch: 4/batch: 8/' "$run4/config.yaml"
# an allowed change of the learning rate restarts the schedule from the new values
expect_ok resume-lr-allowed "$MFPIPE" resume "$run4" train.steps=70 train.optimizer.lr=0.001 --allow-changes
check "schedule restart announced" grep -q "the schedule restarts from the new values" "$TMP/err"
check "lr change recorded" grep -q '"changed_settings":{"train.optimizer.lr":\["0.00020000000000000001","0.001"\]}' "$run4/resumes.jsonl"

# extending a run does not make the learning rate jump: resume at step 40 with 80 steps
run6=$TMP/ext
expect_ok ext-run "$MFPIPE" run -q exp.yaml --out "$run6"
rm "$run6"/checkpoints/ckpt_00000050.mfc "$run6"/checkpoints/ckpt_00000060.mfc
lr40=$(grep '"step":40,' "$run6/metrics.jsonl" | sed 's/.*"lr":\([^,]*\),.*/\1/')
expect_ok ext-resume "$MFPIPE" resume "$run6" train.steps=80
check "extension logged" grep -q "train.steps 60 -> 80: the learning rate goes on from" "$TMP/err"
lr50=$(grep '"step":50,' "$run6/metrics.jsonl" | tail -1 | sed 's/.*"lr":\([^,]*\),.*/\1/')
lr80=$(grep '"step":80,' "$run6/metrics.jsonl" | tail -1 | sed 's/.*"lr":\([^,]*\),.*/\1/')
check "lr keeps decaying across the extension ($lr40 -> $lr50)" awk -v a="$lr40" -v b="$lr50" 'BEGIN{exit !(b < a && b > 0)}'
check "lr reaches its minimum at the new last step ($lr80)" awk -v a="$lr80" 'BEGIN{exit !(a == 0)}'
check "extended to 80" test -s "$run6/checkpoints/ckpt_00000080.mfc"
# a metrics.jsonl that cannot be written fails the run instead of losing metrics silently
mv "$run6/metrics.jsonl" "$run6/metrics.keep" && ln -s /dev/full "$run6/metrics.jsonl"
expect_fail metrics-full "metrics.jsonl: write failed" "$MFPIPE" resume "$run6" -q train.steps=90
check "metrics failure marks the run failed" grep -q '"state":"failed"' "$run6/status.json"

# one process per run folder: a resume while a run holds the folder is refused; after kill -9 the
# lock is gone with the process
"$MFPIPE" run -q exp.yaml --out "$TMP/locked" train.steps=100000 2>/dev/null &
pid=$!
for _ in $(seq 1 500); do grep -q '"step":10' "$TMP/locked/metrics.jsonl" 2>/dev/null && break; sleep 0.02; done
expect_fail locked "in use by another mfpipe (pid $pid" "$MFPIPE" resume "$TMP/locked"
kill -9 $pid
wait $pid 2>/dev/null
expect_ok unlocked-after-kill "$MFPIPE" resume "$TMP/locked" -q train.steps=20

# SIGTERM saves a checkpoint and exits 130; resume finishes identically
"$MFPIPE" run -q exp.yaml train.checkpoint_every=0 2>/dev/null &
pid=$!
for _ in $(seq 1 300); do
  d=$(ls -d results/tr/2* 2>/dev/null | sed -n 4p)
  [ -n "$d" ] && grep -q '"step":10' "$d/metrics.jsonl" 2>/dev/null && break
  sleep 0.02
done
kill -TERM $pid
wait $pid; rc=$?
run5=$(ls -d results/tr/2* | sed -n 4p)
if [ "$rc" = 130 ]; then
  ok
  check "interrupted status" grep -q '"state":"interrupted"' "$run5/status.json"
  check "checkpoint on SIGTERM" test -n "$(ls "$run5/checkpoints/")"
  expect_ok resume-term "$MFPIPE" resume "$run5" -q train.checkpoint_every=0
  check "resume after SIGTERM is bit-identical" test "$(sha256sum <"$run5/checkpoints/ckpt_00000060.mfc")" = "$refsum"
elif [ "$rc" = 0 ]; then
  echo "note: the run finished before SIGTERM arrived" >&2
else
  bad "SIGTERM exit code $rc"
fi

# a non-finite loss stops the run with the step named
MFPIPE_DEBUG_NAN_STEP=7 expect_fail nan "step 7: the loss is nan (not finite)" "$MFPIPE" run -q exp.yaml
MFPIPE_DEBUG_NAN_STEP=7 expect_ok nan-skip "$MFPIPE" run -q exp.yaml train.on_nan=skip
check "skip warns" grep -q "step 7: non-finite loss" "$TMP/err"
MFPIPE_DEBUG_NAN_GRAD_STEP=7 expect_fail nan-grad "step 7: the gradient norm is inf (not finite)" "$MFPIPE" run -q exp.yaml
MFPIPE_DEBUG_NAN_GRAD_STEP=7 expect_ok nan-grad-skip "$MFPIPE" run -q exp.yaml train.on_nan=skip --out "$TMP/skip"
check "skip warns (gradient)" grep -q "step 7: non-finite gradient norm" "$TMP/err"
check "a skipped step does not count for Adam" grep -aq "adam_t=59" "$TMP/skip/checkpoints/ckpt_00000060.mfc"
check "nan run failed status" grep -q '"state":"failed"' "$(ls -d results/tr/2* | tail -3 | head -1)/status.json"
# config errors of the train stage
expect_fail bad-mult "channel_mult" "$MFPIPE" run exp.yaml 'model.channel_mult=[1,2,2,2,2]'
expect_fail bad-objective "expected one of fm|fm_avgvel" "$MFPIPE" validate exp.yaml train.objective=fmm
finish
