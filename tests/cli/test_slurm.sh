# test_slurm.sh - `mfpipe sweep --launcher slurm` on a real one-node Slurm cluster on this machine
# (scripts/slurm-local.sh): a tiny sweep of two training points and two points reusing them runs as
# two job arrays and a summary job; summary.csv lists every point finished, the reuse array started
# only after the training array had ended, and the cluster this test started is stopped again.
# Skipped (exit 77, with the reason) only where no cluster can run: not root and none running, or
# the packages cannot be installed. Where a cluster is already answering (sinfo works with the
# caller's SLURM_CONF), it is used and left running.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
LOCAL=$SRC/scripts/slurm-local.sh
STARTED=0
T0=$(date +%s)

stop_cluster() {
  if [ "$STARTED" = 1 ]; then MFPIPE_SLURM_DIR=$TMP/slurm bash "$LOCAL" stop >/dev/null 2>&1; STARTED=0; fi
}
trap 'stop_cluster; rm -rf "$TMP"' EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

make_mnist_dir "$TMP/mn" 64 16
cat >exp.yaml <<Y
name: sl
seed: 1
threads: 1
stages: [data, train, sample, eval]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 8, channel_mult: [1, 2], res_blocks: 1, groups: 4, time_embed: {dim: 16, frequencies: 4}}
train: {steps: 4, batch: 8, log_every: 2, checkpoint_every: 4, sample_every: 0, final_grid: 0}
sample: {sampler: euler, steps: 1, n: 16, grid: 4, nrow: 2, trajectory: 0}
eval: {n: 16, cache: $TMP/cache}
Y

# without sbatch on PATH: a clear error (runs everywhere, before any cluster)
mkdir -p "$TMP/nobin"
cat >nosb.yaml <<Y
experiment: exp.yaml
name: nosb
results_dir: $TMP/results
axes:
  sample.steps: [1, 2]
Y
expect_fail no-sbatch "sbatch not found: install slurm-client or use --launcher local" \
  env PATH="$TMP/nobin" "$MFPIPE" sweep nosb.yaml --launcher slurm -q

# a fake sbatch (records its arguments, prints "id;cluster" as --parsable does): the submissions,
# their dependencies, jobs.json, and the scripts run by hand in a folder whose path has a space, a
# quote and a '%' (runs everywhere, before any cluster)
mkdir -p "$TMP/fakebin"
cat >"$TMP/fakebin/sbatch" <<'F'
#!/bin/bash
if [ -n "${FAKE_SBATCH_FAIL:-}" ]; then echo "sbatch: error: invalid partition specified: nope" >&2; exit 1; fi
printf '%s|' "$@" >>"$FAKE_SBATCH_LOG"; echo >>"$FAKE_SBATCH_LOG"
echo "$((100 + $(wc -l <"$FAKE_SBATCH_LOG")));fake"
F
chmod +x "$TMP/fakebin/sbatch"
odd="$TMP/odd dir's 100%"
cat >fake.yaml <<Y
experiment: exp.yaml
name: fk
results_dir: "$odd"
overrides: [threads=1]
axes:
  train.steps: [4, 6]
  sample.steps: [1, 2]
Y
export FAKE_SBATCH_LOG=$TMP/sbatch.calls
expect_ok fake-submit env PATH="$TMP/fakebin:$PATH" "$MFPIPE" sweep fake.yaml --launcher slurm --jobs 3 \
  --slurm-args "--partition=p1  --time=5" -q
FK=$(tail -1 "$TMP/out")
check "fake: three sbatch calls" test "$(wc -l <"$FAKE_SBATCH_LOG")" = 3
check "fake: training array" test "$(sed -n 1p "$FAKE_SBATCH_LOG")" = "--parsable|--partition=p1|--time=5|$FK/slurm/train.sbatch|"
check "fake: reuse array after it" test "$(sed -n 2p "$FAKE_SBATCH_LOG")" = \
  "--parsable|--partition=p1|--time=5|--dependency=afterany:101|--kill-on-invalid-dep=yes|$FK/slurm/reuse.sbatch|"
check "fake: summary after both" test "$(sed -n 3p "$FAKE_SBATCH_LOG")" = \
  "--parsable|--partition=p1|--time=5|--dependency=afterany:101:102|--kill-on-invalid-dep=yes|$FK/slurm/summary.sbatch|"
check "fake: jobs.json ids" grep -q '"role":"train","id":101,.*"tasks":2,"points":\[0,2\]' "$FK/slurm/jobs.json"
check "fake: jobs.json reuse" grep -q '"role":"reuse","id":102,.*"dependency":"afterany:101","tasks":2,"points":\[1,3\]' "$FK/slurm/jobs.json"
check "fake: points files" test "$(cat "$FK/slurm/train_points.txt" | tr '\n' ' ')" = "0 2 "
check "fake: array of 2, 3 at a time" grep -q '^#SBATCH --array=0-1%3$' "$FK/slurm/train.sbatch"
check "fake: cpus per task" grep -q '^#SBATCH --cpus-per-task=1$' "$FK/slurm/train.sbatch"
check "fake: log path quoted for sbatch, % doubled" grep -qF "#SBATCH --output=\"${odd//%/%%}/" "$FK/slurm/train.sbatch"
# task 1 of the training array is point 2, task 0 of the reuse array point 1 (reuses point 0: run it first)
for t in "train 0" "train 1" "reuse 0"; do
  set -- $t
  (cd / && SLURM_ARRAY_TASK_ID=$2 bash "$FK/slurm/$1.sbatch") >"$TMP/task.out" 2>&1
  check "fake: $1.sbatch task $2 ran: $(tail -2 "$TMP/task.out")" test $? = 0
done
check "fake: point 2 (task 1) finished" grep -q '"state":"finished"' "$FK/2/status.json"
check "fake: point 1 (reuse task 0) finished" grep -q '"state":"finished"' "$FK/1/status.json"
check "fake: point 3 not run" test ! -e "$FK/3/status.json"
(cd / && bash "$FK/slurm/summary.sbatch") >"$TMP/task.out" 2>&1
check "fake: summary.sbatch wrote summary.csv" grep -q '^3,6,2,missing,2,' "$FK/summary.csv"
FAKE_SBATCH_FAIL=1 expect_fail fake-sbatch-error "invalid partition specified: nope" \
  env PATH="$TMP/fakebin:$PATH" "$MFPIPE" sweep fake.yaml --launcher slurm -q

if [ -n "${SLURM_CONF:-}" ] && sinfo -h >/dev/null 2>&1; then
  echo "test_slurm: using the running cluster of SLURM_CONF=$SLURM_CONF"
else
  port=
  for p in 16817 16827 16837 16847 16857; do
    if port_free $p && port_free $((p + 1)); then port=$p; break; fi
  done
  [ -n "$port" ] || { echo "test_slurm: no free port pair for slurmctld/slurmd"; exit 1; }
  export MFPIPE_SLURM_DIR=$TMP/slurm MFPIPE_SLURM_PORT=$port
  mkdir -p "$MFPIPE_SLURM_DIR"
  bash "$LOCAL" start 2>"$TMP/start.err"
  rc=$?
  if [ $rc = 77 ]; then
    echo "test_slurm: skipped: $(tail -1 "$TMP/start.err")"
    exit 77
  fi
  STARTED=1
  if [ $rc != 0 ]; then
    cat "$TMP/start.err" >&2
    tail -20 "$MFPIPE_SLURM_DIR"/slurmctld.log "$MFPIPE_SLURM_DIR"/slurmd.log >&2 2>/dev/null
    bad "slurm-local.sh start: exit $rc"
    finish; exit
  fi
  export SLURM_CONF=$MFPIPE_SLURM_DIR/slurm.conf
  ok
fi
T1=$(date +%s)
echo "test_slurm: cluster up in $((T1 - T0)) s"

# "StartTime=... EndTime=..." of every task of a job as epoch seconds: "start end" lines
job_times() {
  scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n 's/^\(StartTime\|EndTime\)=//p' |
    while read -r t; do date -d "$t" +%s; done | paste - -
}

# two training points (train.steps) x two sampler settings (sample.steps, reused): 2 + 2 points
cat >sweep.yaml <<Y
experiment: exp.yaml
name: sl
results_dir: $TMP/results
axes:
  train.steps: [4, 6]
  sample.steps: [1, 2]
Y
# submit_and_wait NAME SWEEP_FILE: submit, then wait until summary.csv is there or the summary job
# has ended without it; sets SW (the sweep folder) and ids ("role id" lines of slurm/jobs.json)
submit_and_wait() {
  expect_ok "$1: submit" "$MFPIPE" sweep "$2" --launcher slurm --jobs 2 -q
  SW=$(tail -1 "$TMP/out")
  check "$1: sweep folder made ($SW)" test -n "$SW" -a -s "$SW/sweep.yaml"
  check "$1: jobs.json written" test -s "$SW/slurm/jobs.json"
  ids=$(sed -n 's/.*"role":"\([a-z]*\)","id":\([0-9]*\).*/\1 \2/p' "$SW/slurm/jobs.json" 2>/dev/null)
  local summary i
  summary=$(awk '$1 == "summary" {print $2}' <<<"$ids")
  for ((i = 0; i < 600; i++)); do
    [ -e "$SW/summary.csv" ] && break
    [ -n "$summary" ] && [ $i -gt 10 ] && ! squeue -h -j "$summary" 2>/dev/null | grep -q . && break
    sleep 0.5
  done
  if [ -e "$SW/summary.csv" ]; then ok; else
    bad "$1: no summary.csv: $(squeue 2>&1 | tail -5)"
    tail -5 "$SW"/slurm/logs/* >&2 2>/dev/null
  fi
}
submit_and_wait ok sweep.yaml
cat "$SW/summary.csv" 2>/dev/null
check "summary columns" grep -q '^point,train.steps,sample.steps,status,train_run,fid_lenet_v1,.*,wall_s$' "$SW/summary.csv"
check "every point has its FID" test "$(cut -d, -f6 "$SW/summary.csv" 2>/dev/null | grep -c '^[0-9][0-9.e+-]*$')" = 4
check "summary.md names the best point" grep -q '^Best by fid_lenet_v1 (lower is better): point [0-3] ' "$SW/summary.md"
check "points 1 and 3 reuse 0 and 2" test "$(cut -d, -f1,5 "$SW/summary.csv" 2>/dev/null | tail -n +2 | tr '\n' ' ')" = "0,0 1,0 2,2 3,2 "
check "summary.md and a plot per key" test -s "$SW/summary.md" -a -s "$SW/plot_train.steps.svg" -a -s "$SW/plot_sample.steps.svg"
check "four point rows" test "$(tail -n +2 "$SW/summary.csv" 2>/dev/null | wc -l)" = 4
check "every point finished" test "$(grep -c ',finished,' "$SW/summary.csv" 2>/dev/null)" = 4
check "a task log per point" test "$(ls "$SW"/slurm/logs/*_*.out 2>/dev/null | grep -vc summary)" = 4
T2=$(date +%s)
echo "test_slurm: sweep ran in $((T2 - T1)) s"

train=$(awk '$1 == "train" {print $2}' <<<"$ids")
reuse=$(awk '$1 == "reuse" {print $2}' <<<"$ids")
check "a training array and a reuse array were submitted ($ids)" test -n "$train" -a -n "$reuse"
if [ -n "$train" ] && [ -n "$reuse" ]; then
  train_end=$(job_times "$train" | awk 'BEGIN {m = 0} {if ($2 > m) m = $2} END {print m}')
  reuse_start=$(job_times "$reuse" | awk 'BEGIN {m = 9e18} {if ($1 < m) m = $1} END {print m}')
  check "reuse array started ($reuse_start) after the training array ended ($train_end)" \
    test "$train_end" -gt 0 -a "$reuse_start" -ge "$train_end" -a "$reuse_start" -lt 9000000000000000000
fi


# a training point that fails at run time (a truncated data file; validation does not read data):
# the reuse array still runs (afterany), its point 3 ends at once, the summary job still runs
mkdir -p "$TMP/bad"
cp "$TMP"/mn/* "$TMP/bad/"
head -c 5000 "$TMP/mn/train-images-idx3-ubyte" >"$TMP/bad/train-images-idx3-ubyte"
cat >fail.yaml <<Y
experiment: exp.yaml
name: fl
results_dir: $TMP/results
axes:
  data.root: [$TMP/mn, $TMP/bad]
  sample.steps: [1, 2]
Y
submit_and_wait fail fail.yaml
cat "$SW/summary.csv" 2>/dev/null
check "fail: the good points finished" test "$(cut -d, -f1,4 "$SW/summary.csv" 2>/dev/null | sed -n 2,3p | tr '\n' ' ')" = "0,finished 1,finished "
check "fail: point 2 failed" grep -q '^2,[^,]*,1,failed,2,' "$SW/summary.csv"
check "fail: point 3 skipped" grep -q '^3,[^,]*,2,skipped,2,' "$SW/summary.csv"
check "fail: summary.md says why" grep -q '^- point 3 (.*): skipped: its training point 2 failed' "$SW/summary.md"
check "fail: summary.md lists the failure" grep -q '^- point 2 (data.root=.*truncated' "$SW/summary.md"
T3=$(date +%s)
echo "test_slurm: failing sweep ran in $((T3 - T2)) s"

if [ "$STARTED" = 1 ]; then
  pids="$(cat "$MFPIPE_SLURM_DIR/slurmctld.pid" "$MFPIPE_SLURM_DIR/slurmd.pid" 2>/dev/null)"
  stop_cluster
  check "slurmctld and slurmd stopped ($(echo $pids))" test -n "$pids" -a -z "$(for p in $pids; do kill -0 "$p" 2>/dev/null && echo "$p"; done)"
fi
finish
