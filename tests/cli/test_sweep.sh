# test_sweep.sh - sweeps: `mfpipe run EXP -m` and `mfpipe sweep FILE`: expansion order (first key
# slowest), range/choice/quoting, validation of every point before anything runs, the folder layout,
# stage reuse (one training per model), --jobs 2, a failing point in the middle, Ctrl-C, --resume,
# sweep-file errors with file:line, --dry, method random and lua, and the Slurm path (a stand-in
# sbatch, then `sweep --point`).
source "$(dirname "$0")/lib.sh"
cd "$TMP"
make_mnist_dir "$TMP/mn" 64 16
cat >exp.yaml <<Y
name: sw
seed: 1
stages: [data, train, ema, sample]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 4, channel_mult: [1, 2], res_blocks: 1, groups: 2, time_embed: {dim: 8, frequencies: 2}}
train: {steps: 3, batch: 8, log_every: 1, final_grid: 0}
sample: {n: 4, steps: 2, grid: 4, nrow: 2, trajectory: 0}
Y
line_of() { grep -n -F -- "$2" "$1" | head -1 | cut -d: -f1; } # FILE TEXT: first line number holding TEXT
before() { # FILE A B: A's first line comes before B's
  local a b; a=$(line_of "$1" "$2"); b=$(line_of "$1" "$3")
  [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]
}

# --- expansion: order, range, choice, quoting, fixed overrides (--dry writes nothing) -------------
expect_ok dry "$MFPIPE" run exp.yaml -m model.channels=4,8 'sample.steps=range(1,4)' 'description="a, b"' --dry
check "dry: 6 points, 2 train" contains "$TMP/out" "sweep sw_multirun: 6 points (2 train, 4 reuse)"
check "dry: fixed override kept whole" contains "$TMP/out" 'overrides: description="a, b"'
check "dry: first key slowest" test "$(grep '^point' "$TMP/out" | sed 's/.*\(model.channels=[0-9]* sample.steps=[0-9]*\).*/\1/' | tr '\n' ' ')" = \
  "model.channels=4 sample.steps=1 model.channels=4 sample.steps=2 model.channels=4 sample.steps=3 model.channels=8 sample.steps=1 model.channels=8 sample.steps=2 model.channels=8 sample.steps=3 "
check "dry: reuse plan" contains "$TMP/out" "point 4: reuse point 3   model.channels=8 sample.steps=2 (stages=[data,sample])"
check "dry: nothing written" test ! -e results
expect_ok dry-values "$MFPIPE" run exp.yaml -m 'model.channel_mult=[1,2],[1,1]' 'sample.steps=choice(2,1)' \
  'sample.sampler="heun","euler"' 'train.optimizer.lr=range(0.5,1.5,0.5)' --dry
check "brackets do not split" contains "$TMP/out" "axis model.channel_mult: [1,2] [1,1]"
check "choice" contains "$TMP/out" "axis sample.steps: 2 1"
check "quoted values" contains "$TMP/out" 'axis sample.sampler: "heun" "euler"'
check "float range, stop excluded" contains "$TMP/out" "axis train.optimizer.lr: 0.5 1"
check "16 points, 4 trainings (lr and channel_mult train; steps and sampler reuse)" \
  contains "$TMP/out" "16 points (4 train, 12 reuse)"
expect_fail bad-range "range(3,1): no values" "$MFPIPE" run exp.yaml -m 'sample.steps=range(3,1)' --dry
expect_fail unbalanced "point 0 (no axes): override 'model.channel_mult=[1,2': cannot parse the value" "$MFPIPE" run exp.yaml -m 'model.channel_mult=[1,2' --dry
expect_fail empty-value "sample.steps=1,: empty value" "$MFPIPE" run exp.yaml -m 'sample.steps=1,' --dry
# a bad value in one point: refused before anything runs, naming the point
expect_fail bad-point "point 2 (model.channels=0 sample.steps=1)" "$MFPIPE" run exp.yaml -m model.channels=4,0 sample.steps=1,2 -q
check "bad point: no folder" test ! -e results/sw_multirun
expect_fail run-m-out "unknown option '--out'" "$MFPIPE" run exp.yaml -m model.channels=4,8 --out x

# --- a real sweep: layout, reuse, --jobs 2 --------------------------------------------------------
expect_ok multirun "$MFPIPE" run exp.yaml -m model.channels=4,8 sample.steps=1,2,3 --jobs 2 -q
S=$(readlink -f results/sw_multirun/latest)
check "latest link to a stamp folder" test -d "$S" -a -n "$(basename "$S" | grep -E '^[0-9]{8}-[0-9]{6}')"
for f in sweep.yaml sweep.log; do check "sweep folder has $f" test -s "$S/$f"; done
n_fin=0; for i in 0 1 2 3 4 5; do grep -q '"state":"finished"' "$S/$i/status.json" 2>/dev/null && n_fin=$((n_fin + 1)); done
check "6 point folders finished" test "$n_fin" = 6
check "no point 6" test ! -e "$S/6"
check "every point sampled" test "$(ls "$S"/*/samples/samples.idx3-ubyte | wc -l)" = 6
check "two trainings (points 0 and 3 have checkpoints)" test "$(ls -d "$S"/*/checkpoints | xargs -n1 dirname | xargs -n1 basename | tr '\n' ' ')" = "0 3 "
check "log: point 2 reuses point 0" contains "$S/sweep.log" "point 2 reuses the training of point 0"
check "log: point 5 reuses point 3" contains "$S/sweep.log" "point 5 reuses the training of point 3"
check "log: reuse run" contains "$S/sweep.log" "point 4 [model.channels=8 sample.steps=2]: reusing the model of point 3 (stages=[data,sample])"
check "reuse point ran without training" grep -q 'stages: \[data, sample\]' "$S/4/config.yaml"
check "reuse point's model from point 3" grep -q "from: \"\?$S/3\"\?" "$S/4/config.yaml"
check "reuse point keeps its axis value" grep -q "channels: 8" "$S/4/config.yaml"
check "sweep.yaml: axes" grep -q '^  "model.channels": \["4", "8"\]' "$S/sweep.yaml"
check "sweep.yaml: point 4 trains at 3" test "$(grep -A5 -e '- point: 4$' "$S/sweep.yaml" | grep train_point)" = "    train_point: 3"
check "sweep.yaml: point 4's axes" grep -q 'axes: {"model.channels": "8", "sample.steps": "2"}' "$S/sweep.yaml"
T=$(( $(getconf _NPROCESSORS_ONLN) / 2 )); [ "$T" -lt 1 ] && T=1 # as sysconf(_SC_NPROCESSORS_ONLN)
check "threads split between 2 jobs" grep -q "^threads: $T$" "$S/sweep.yaml"
check "point ran with threads=$T" grep -q "^threads=$T$" "$S/0/overrides.txt"
check "--jobs 2: point 3 started before point 0 ended" before "$S/sweep.log" "point 3 [model.channels=8 sample.steps=1]: training" "point 0 [model.channels=4 sample.steps=1]: finished"
check "summary written after the points" test -s "$S/summary.csv" -a -s "$S/summary.md"
check "log names the summary" contains "$S/sweep.log" "summary: $S/summary.md"
check "summary has every point" test "$(grep -c '^| [0-5] |' "$S/summary.md")" = 6
check "training points before reuse points" before "$S/sweep.log" "point 3 [model.channels=8 sample.steps=1]: training" "point 1 [model.channels=4 sample.steps=2]: reusing"

# --- a point that fails in the middle: the rest go on, exit 1, the failure printed at once -------
"$MFPIPE" run exp.yaml -m data.max_images=1000,10,1000 sample.steps=1,2 seed=2 -q >"$TMP/out" 2>"$TMP/err"
check "failing sweep exits 1" test $? = 1
F=$(readlink -f results/sw_multirun/latest)
check "failure on the terminal with the error, overrides and log" grep -q "^mfpipe: error: point 2 \[data.max_images=10 sample.steps=1\]: FAILED after .*more than the limit of 10" "$TMP/err"
check "failure names the overrides" contains "$TMP/err" "overrides: seed=2 data.max_images=10 sample.steps=1"
check "failure names the log" contains "$TMP/err" "log: $F/2/log.txt"
check "its reuse point skipped, naming it" grep -q "point 3 .*skipped: its training point 2 failed" "$TMP/err"
check "skipped point's status" grep -q '"state":"skipped".*training point 2 failed' "$F/3/status.json"
check "failure logged before the last point ended" before "$F/sweep.log" "point 2 [data.max_images=10 sample.steps=1]: FAILED" "point 5 [data.max_images=1000 sample.steps=2]: finished"
for i in 0 1 4 5; do check "point $i finished despite the failure" grep -q '"state":"finished"' "$F/$i/status.json"; done
check "points 4, 5 reuse point 0 (same training)" contains "$F/sweep.log" "point 5 reuses the training of point 0"
check "end line counts" contains "$TMP/err" "4 finished, 1 failed, 1 skipped"

# --- --resume: finished points skipped, an interrupted training resumed, the others rerun ---------
sed -i 's/"finished"/"interrupted"/' "$S/3/status.json"   # a training point with checkpoints
sed -i 's/"finished"/"failed"/' "$S/4/status.json"        # a reuse point: rerun
rm -rf "$S/5"                                           # never started
t0=$(cat "$S/0/status.json")
expect_ok resume "$MFPIPE" sweep --resume "$S" -q
check "resume: point 0 untouched" test "$(cat "$S/0/status.json")" = "$t0"
n_fin=0; for i in 0 1 2 3 4 5; do grep -q '"state":"finished"' "$S/$i/status.json" 2>/dev/null && n_fin=$((n_fin + 1)); done
check "resume: all 6 finished" test "$n_fin" = 6
check "resume: point 3 resumed from its checkpoint" test -s "$S/3/resumes.jsonl"
check "resume: point 4's failed attempt retired" grep -q '"state":"failed"' "$S/retired/4-1/status.json"
check "resume: point 5 ran" test -s "$S/5/samples/samples.idx3-ubyte"
check "resume: 3 had finished before" contains "$S/sweep.log" "3 points had finished before"
rm "$S/summary.md"
expect_ok summarize "$MFPIPE" sweep --summarize "$S"
check "--summarize writes the summary again" test -s "$S/summary.md"
check "resume: no new training of point 0" test "$(grep -c 'point 0 \[.*\]: training' "$S/sweep.log")" = 1

# --- Ctrl-C: passed to the points, which stop at a safe point; exit 130 ---------------------------
"$MFPIPE" run exp.yaml -m train.steps=2,1000000 -q >"$TMP/out" 2>"$TMP/err" &
pid=$!
for _ in $(seq 1 300); do # wait until point 1 trains
  I=$(readlink -f results/sw_multirun/latest)
  [ -n "$I" ] && grep -q '"stage":"train"' "$I/1/metrics.jsonl" 2>/dev/null && break
  sleep 0.1
done
kill -INT $pid
wait $pid
check "interrupted sweep exits 130" test $? = 130
check "point 1 interrupted at a safe point" grep -q '"state":"interrupted"' "$I/1/status.json"
check "point 1 has a checkpoint" test -n "$(ls "$I/1/checkpoints" 2>/dev/null)"
check "point 0 finished" grep -q '"state":"finished"' "$I/0/status.json"
check "says how to continue" contains "$TMP/err" "mfpipe sweep --resume $I"
check "summary written on Ctrl-C too" test -s "$I/summary.md"
check "no point left running" test -z "$(ps -eo args | grep -F -- "--out $I/" | grep -v grep || true)"

# --- sweep files: grid, random, lua, errors with file:line ---------------------------------------
cat >sweep.yaml <<'Y'
experiment: exp.yaml
name: grid
overrides: [train.steps=2]
axes:
  model.channels: [4, 8]
  sample.steps: "1,2"
Y
expect_ok file-dry "$MFPIPE" sweep sweep.yaml --dry
check "file: 4 points, 2 trainings" contains "$TMP/out" "sweep grid: 4 points (2 train, 2 reuse)"
check "file: order" test "$(grep -c '^point [0-3]: ' "$TMP/out")" = 4
check "file: point 1" contains "$TMP/out" "point 1: reuse point 0   model.channels=4 sample.steps=2"
cat >random.yaml <<'Y'
experiment: exp.yaml
method: random
seed: 3
max_runs: 4
axes:
  model.channels: "choice(4,8,12)"
  sample.steps: "range(1,4)"
Y
expect_ok random1 "$MFPIPE" sweep random.yaml --dry
grep '^point' "$TMP/out" >r1
expect_ok random2 "$MFPIPE" sweep random.yaml --dry
check "random: 4 points" test "$(wc -l <r1)" = 4
check "random: deterministic" diff -q r1 <(grep '^point' "$TMP/out")
check "random: no repetition" test "$(sed 's/.*\(model.*\)/\1/; s/ (stages.*//' r1 | sort -u | wc -l)" = 4
cat >gen.lua <<'L'
local sets = {}
for _, c in ipairs({4, 8}) do
  for _, st in ipairs({1, 3}) do
    if not (c == 8 and st == 3) then sets[#sets + 1] = {["model.channels"] = c, ["sample.steps"] = st} end
  end
end
return sets
L
mkdir -p sub && cp exp.yaml sub/ && printf 'experiment: exp.yaml\nmethod: lua\nscript: ../gen.lua\n' >sub/lua.yaml
expect_ok lua "$MFPIPE" sweep sub/lua.yaml --dry
check "lua: 3 points from the script" contains "$TMP/out" "sweep lua: 3 points (2 train, 1 reuse)"
check "lua: paths relative to the sweep file" contains "$TMP/out" "experiment $TMP/sub/exp.yaml"
printf 'experiment: exp.yaml\naxes:\n  sample.steps: [1, 2]\njbos: 2\n' >bad.yaml
expect_fail bad-key "bad.yaml:4:1: jbos: unknown key; did you mean jobs?" "$MFPIPE" sweep bad.yaml
printf 'experiment: exp.yaml\naxes:\n  sample.steps: [1, 2]\n  sample.stpes: [1]\n' >bad2.yaml
expect_fail bad-axis-key "point 0 (sample.steps=1 sample.stpes=1)" "$MFPIPE" sweep bad2.yaml --dry
printf 'experiment: exp.yaml\naxes:\n  sample.steps: []\n' >bad3.yaml
expect_fail empty-axis "bad3.yaml:3:3: axes: sample.steps: expected a non-empty list" "$MFPIPE" sweep bad3.yaml --dry
expect_fail no-file "sweep: --resume needs a sweep folder" "$MFPIPE" sweep --resume
expect_fail not-a-sweep "sweep.yaml" "$MFPIPE" sweep --resume "$TMP/mn"
expect_ok help "$MFPIPE" sweep --help
check "help: sweep usage" contains "$TMP/out" "usage: mfpipe sweep SWEEP.yaml"
expect_ok main-help "$MFPIPE" --help
check "main help lists sweep and -m" grep -q "sweep SWEEP.yaml" "$TMP/out"

# --- Slurm: a stand-in sbatch records the submissions; then the array tasks by hand -------------
mkdir -p bin
cat >bin/sbatch <<'B'
#!/bin/sh
echo "$@" >>"$SBATCH_LOG"
echo $((1000 + $(wc -l <"$SBATCH_LOG")))
B
chmod +x bin/sbatch
export SBATCH_LOG="$TMP/sbatch.log"
PATH="$TMP/bin:$PATH" expect_ok slurm "$MFPIPE" sweep sweep.yaml --launcher slurm --jobs 2 -q
G=$(readlink -f results/grid/latest)
check "slurm: scripts written" test -s "$G/slurm/train.sbatch" -a -s "$G/slurm/reuse.sbatch"
check "slurm: training points 0 2" test "$(tr '\n' ' ' <"$G/slurm/train_points.txt")" = "0 2 "
check "slurm: reuse points 1 3" test "$(tr '\n' ' ' <"$G/slurm/reuse_points.txt")" = "1 3 "
check "slurm: submitted" test "$(wc -l <"$SBATCH_LOG")" -ge 2
check "slurm: nothing ran" test ! -e "$G/0/status.json"
expect_fail point-early "point 1 reuses the model of point 0, which has not run" "$MFPIPE" sweep --point 1 "$G"
expect_ok point0 "$MFPIPE" sweep --point 0 "$G" -q
check "point 0 trained" grep -q '"state":"finished"' "$G/0/status.json"
expect_ok point1 "$MFPIPE" sweep --point 1 "$G" -q
check "point 1 reused" grep -q 'stages: \[data, sample\]' "$G/1/config.yaml"
expect_ok point0-again "$MFPIPE" sweep --point 0 "$G"
check "a finished point is not rerun" contains "$TMP/out" "point 0: finished already"
expect_fail point-range "the sweep has points 0 to 3" "$MFPIPE" sweep --point 9 "$G"
finish
