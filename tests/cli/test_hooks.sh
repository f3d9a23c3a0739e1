# test_hooks.sh - Lua hooks end to end (docs/hooks.md): each hook changes training as documented
# (loss_weight 0 leaves the weights unchanged and logs grad_norm 0; an lr hook's values appear in
# metrics.jsonl; warmup_cosine.lua trains exactly as the built-in schedule; ema_decay; on_step's log,
# checkpoint and stop; on_eval), errors (a runtime error with file:line and traceback in status.json
# and log.txt, a non-number, an endless loop, a sandbox escape, an unknown function at load), paths
# relative to the experiment file, the scripts copied into the run, and a resume refused when a
# script changed.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
make_mnist_dir "$TMP/mn" 64 16
cat >exp.yaml <<Y
name: hk
seed: 1
threads: 2
stages: [data, train, ema, sample]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 4, channel_mult: [1, 2], res_blocks: 1, groups: 2, time_embed: {dim: 8, frequencies: 2}}
train: {steps: 6, batch: 8, log_every: 2, final_grid: 0, optimizer: {weight_decay: 0},
        schedule: {kind: cosine, warmup: 100, min_lr_ratio: 0.05}}
sample: {n: 10, steps: 2, grid: 0, trajectory: 0, weights: raw}
Y
S=samples/samples.idx3-ubyte
same() { cmp -s "$1" "$2"; }
differ() { ! cmp -s "$1" "$2"; }

# loss_weight 0: no gradient, weights as initialised (= a run whose lr hook returns 0); grad_norm 0
echo 'function loss_weight(t, r, step, label) return 0 end' >zero.lua
echo 'function lr(step, total, base) return 0 end' >lr0.lua
expect_ok zero "$MFPIPE" run -q exp.yaml 'hooks=[zero.lua]' --out z1
expect_ok lr0 "$MFPIPE" run -q exp.yaml 'hooks=[lr0.lua]' --out z2
expect_ok plain "$MFPIPE" run -q exp.yaml --out z3
check "loss_weight 0 leaves the weights unchanged (samples equal the untrained model's)" same z1/$S z2/$S
check "a plain run trains (other samples)" differ z1/$S z3/$S
check "loss_weight 0: grad_norm 0 logged" grep -q '"stage":"train","time":[0-9.]*,"step":6,"loss":0,.*"grad_norm":0,' z1/metrics.jsonl
check "the script is copied into the run" cmp -s zero.lua z1/hooks/0_zero.lua
check "config.yaml records its absolute path" grep -q "hooks: \[\"$TMP/zero.lua\"\]" z1/config.yaml

# lr: the hook's values are what the optimizer used and what metrics.jsonl shows
echo 'function lr(step, total, base) return (step + 1) / 1024 end' >ramp.lua
expect_ok lr "$MFPIPE" run -q exp.yaml 'hooks=[ramp.lua]' --out l1
check "lr hook values in metrics.jsonl (step 2: 2/1024)" grep -q '"step":2,.*"lr":0.001953125,' l1/metrics.jsonl
check "lr hook values in metrics.jsonl (step 6: 6/1024)" grep -q '"step":6,.*"lr":0.005859375,' l1/metrics.jsonl
# the shipped warm-up + cosine script trains exactly as the built-in schedule
expect_ok wc "$MFPIPE" run -q exp.yaml "hooks=[$SRC/scripts/lua/warmup_cosine.lua]" --out w1
check "warmup_cosine.lua: the same samples as the built-in schedule" same w1/$S z3/$S
lrs() { grep '"stage":"train".*"lr"' "$1" | sed 's/.*"lr":\([^,]*\),.*/\1/' | tr '\n' ' '; }
check "warmup_cosine.lua: the same logged learning rates" test "$(lrs w1/metrics.jsonl)" = "$(lrs z3/metrics.jsonl)"

# the asynchronous loop (the GPU's; MFPIPE_ASYNC_STEP=1 runs it here) trains with the same weights bit for
# bit, also when its steps are recorded as graphs (checked backend: no host access inside a recording)
MFPIPE_ASYNC_STEP=0 expect_ok w-sync "$MFPIPE" run -q exp.yaml "hooks=[$SRC/scripts/lua/mid_t_weighting.lua,ramp.lua]" --out ws
MFPIPE_ASYNC_STEP=1 expect_ok w-async "$MFPIPE" run -q exp.yaml "hooks=[$SRC/scripts/lua/mid_t_weighting.lua,ramp.lua]" --out wa
check "weights and lr hooks: async = sync" same ws/$S wa/$S
check "mid_t weighting changes training" differ ws/$S l1/$S
MFPIPE_CHECKED_BACKEND=1 MFPIPE_CHECKED_GRAPHS=1 MFPIPE_ASYNC_STEP=1 expect_ok w-graphs "$MFPIPE" run -q exp.yaml \
  "hooks=[$SRC/scripts/lua/mid_t_weighting.lua,ramp.lua]" train.steps=8 --out wg
check "hooks with graphs: steps recorded" grep -q 'graphs recorded' "$TMP/err"
# the MeanFlow family: loss_weight_batch sees r
expect_ok mf-interval "$MFPIPE" run -q exp.yaml train.objective=meanflow "hooks=[$SRC/scripts/lua/meanflow_interval.lua]" \
  'stages=[data,train]' --out mi
expect_fail mf-interval-fm "needs a u(z, r, t) model" "$MFPIPE" run -q exp.yaml \
  "hooks=[$SRC/scripts/lua/meanflow_interval.lua]" 'stages=[data,train]' --out mi2

# ema_decay 0: the EMA is the raw weights; ema_decay 1: the initial ones
echo 'function ema_decay(step) return 0 end' >ema0.lua
expect_ok ema0 "$MFPIPE" run -q exp.yaml 'hooks=[ema0.lua]' sample.weights=ema --out e1
check "ema_decay 0: EMA samples equal the raw weights' samples" same e1/$S z3/$S
echo 'function ema_decay(step) return 1 end' >ema1.lua
expect_ok ema1 "$MFPIPE" run -q exp.yaml 'hooks=[ema1.lua]' sample.weights=ema --out e2
check "ema_decay 1: EMA samples equal the untrained model's" same e2/$S z2/$S

# on_step: extra metrics, a checkpoint, a stop; on_eval: a metric of the evaluation
cat >watch.lua <<'L'
function on_step(m)
  local out = {log = {loss_x2 = m.loss * 2, seen_step = m.step}}
  if m.step == 2 then out.checkpoint = true end
  if m.step == 4 then out.stop = "loss is fine" end
  return out
end
function on_eval(m) return {log = {fid_plus_one = m.fid_lenet_v1 + 1}} end
L
expect_ok watch "$MFPIPE" run -q exp.yaml 'hooks=[watch.lua]' train.steps=10 'stages=[data,train,ema,sample,eval]' \
  eval.n=10 'eval.metrics=[fid]' --out o1
check "on_step log values join the metrics line" grep -q '"step":2,.*"loss_x2":[0-9.e-]*,"seen_step":2' o1/metrics.jsonl
check "on_step stop: recorded" grep -q '"step":4,.*"hook_stop":"loss is fine"' o1/metrics.jsonl
check "on_step stop: no step after 4" test -z "$(grep '"stage":"train".*"step":\(6\|8\|10\),' o1/metrics.jsonl)"
check "on_step stop: the log says why" grep -q "stopped at step 4 of 10 by the on_step hook: loss is fine" o1/log.txt
check "on_step checkpoint=true: a checkpoint at step 2" test -n "$(ls o1/checkpoints | grep 00000002)"
check "the run finished (the stages after train ran)" grep -q '"state": *"finished"' o1/status.json
check "on_eval: its metric in eval.json" grep -q '"metric":"fid_plus_one","value":[0-9.e+]*' o1/eval.json

# errors: a runtime error names the script's file:line, with a traceback, in status.json and log.txt
printf 'local function f(x)\n  return x.y\nend\nfunction lr(step) if step == 3 then local v = f(nil); return v end return 0.001 end\n' >bad.lua
expect_fail runtime "bad.lua:2:" "$MFPIPE" run -q exp.yaml 'hooks=[bad.lua]' --out b1
check "runtime error: status failed with file:line and traceback" grep -q '"state": *"failed".*bad.lua:2:.*stack traceback' b1/status.json
check "runtime error: at step 3" grep -q 'hook lr .*at step 3' b1/status.json
check "runtime error: traceback in log.txt" grep -q "in function 'lr'" b1/log.txt
echo 'function loss_weight(t) return "heavy" end' >nonnum.lua
expect_fail nonnumber "hook loss_weight" "$MFPIPE" run -q exp.yaml 'hooks=[nonnum.lua]' --out b2
check "non-number: names the step and says what came back" grep -q 'at step 0 (row 1) returned string, not a number' b2/status.json
echo 'function lr(step) if step == 1 then while true do end end return 0.001 end' >loop.lua
start=$(date +%s)
expect_fail loop "instruction limit" "$MFPIPE" run -q exp.yaml 'hooks=[loop.lua]' --out b3
check "endless loop stopped quickly" test $(($(date +%s) - start)) -lt 10
echo 'function on_step(m) os.execute("touch '"$TMP"'/escaped") end' >esc.lua
expect_fail escape "'os' is not available" "$MFPIPE" run -q exp.yaml 'hooks=[esc.lua]' --out b4
check "sandbox: nothing escaped" test ! -e "$TMP/escaped"
# load-time errors: no folder is made
printf 'function lr_(step) return 1 end\nfunction learning_rate() end\n' >typo.lua
expect_fail typo "typo.lua:1: global function 'lr_' is not a hook; did you mean 'lr'?" "$MFPIPE" validate exp.yaml 'hooks=[typo.lua]'
expect_fail typo-run "is not a hook" "$MFPIPE" run -q exp.yaml 'hooks=[typo.lua]' --out b5
check "load-time error: no run folder" test ! -e b5/status.json
expect_fail missing "hooks: no such script 'nope.lua'" "$MFPIPE" validate exp.yaml 'hooks=[nope.lua]'

# paths in the experiment file are relative to it
mkdir -p sub
sed 's/^stages:/hooks: [lr0.lua]\nstages:/' exp.yaml >sub/exp.yaml
cp lr0.lua sub/lr0.lua
expect_ok relative "$MFPIPE" run -q sub/exp.yaml --out r1
check "relative to the experiment file" same r1/$S z2/$S
sed 's/^stages:/hooks: [nothere.lua]\nstages:/' exp.yaml >sub/exp2.yaml
expect_fail missing-file "sub/exp2.yaml:4:" "$MFPIPE" validate sub/exp2.yaml

# a changed script is a changed training setting: resume refuses it
echo 'function lr(step) return 0.001 end' >c.lua
expect_ok c1 "$MFPIPE" run -q exp.yaml 'hooks=[c.lua]' train.steps=4 --out c1
echo 'function lr(step) return 0.002 end' >c.lua
expect_fail changed "hooks.0" "$MFPIPE" resume c1 train.steps=6
expect_ok changed-allowed "$MFPIPE" resume c1 train.steps=6 --allow-changes
finish
