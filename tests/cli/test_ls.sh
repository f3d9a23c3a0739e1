# test_ls.sh - `mfpipe ls` / `mfpipe runs` and `mfpipe show`: a table (and --json lines) of the run
# folders of a results root, sorted by name then stamp, 'latest' links skipped; a "running" run whose
# lock nobody holds is "stale"; corrupt or missing files give "?" cells, a warning and exit 0.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
make_mnist_dir "$TMP/mn" 128 16
cat >exp.yaml <<Y
name: la
seed: 3
threads: 2
stages: [data, train]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 8, channel_mult: [1, 2], res_blocks: 1, groups: 4, time_embed: {dim: 16, frequencies: 4}}
train: {steps: 12, batch: 8, log_every: 4, checkpoint_every: 12, sample_every: 0, final_grid: 0}
Y

expect_ok run-a "$MFPIPE" run -q exp.yaml --out results/la/20260101-000001
expect_ok run-b "$MFPIPE" run -q exp.yaml name=lb seed=4 train.steps=8 --out results/lb/20260101-000002
ln -s 20260101-000001 results/la/latest
# a hand-made corrupt run: broken status.json, metrics.jsonl cut mid-line, no manifest
mkdir -p results/lc/20260101-000003
printf '{"state":"fini' >results/lc/20260101-000003/status.json
printf '{"stage":"train","time":1.0,"ste' >results/lc/20260101-000003/metrics.jsonl
# a "running" run whose process is gone: stale
mkdir -p results/ld/20260101-000004
printf '{"state":"running","time":"2026-01-01T00:00:04+0000"}\n' >results/ld/20260101-000004/status.json
printf '123\n' >results/ld/20260101-000004/lock

expect_ok help "$MFPIPE" ls --help;   check "ls help" contains "$TMP/out" "usage: mfpipe ls"
expect_ok show-help "$MFPIPE" show --help; check "show help" contains "$TMP/out" "usage: mfpipe show"
expect_ok help-lists "$MFPIPE" --help; check "usage lists ls" contains "$TMP/out" "ls [RESULTS_ROOT]"

expect_ok ls "$MFPIPE" ls results
cp "$TMP/out" ls.out; cp "$TMP/err" ls.err
check "header" grep -q '^NAME  *STAMP  *STATUS  *STEPS  *BEST  *WALL  *FOLDER$' ls.out
check "five lines (header + 4 runs, latest skipped)" test "$(wc -l <ls.out)" = 5
check "sorted by name" test "$(awk 'NR>1{printf "%s ", $1}' ls.out)" = "la lb lc ld "
check "row a" grep -q '^la  *20260101-000001  *finished  *12/12  *loss=[0-9.e-]*  *[0-9.]*s  *results/la/20260101-000001$' ls.out
check "row b" grep -q '^lb  *20260101-000002  *finished  *8/8  *loss=' ls.out
check "corrupt row is ?" grep -q '^lc  *20260101-000003  *?  *?  *?  *?  *results/lc/20260101-000003$' ls.out
check "stale row" grep -q '^ld  *20260101-000004  *stale  ' ls.out
check "columns aligned" test "$(awk '{print index($0, $3)}' ls.out | sort -u | wc -l)" = 1
check "warning names status.json and offset" grep -q 'lc/20260101-000003/status.json: malformed JSON at byte 14' ls.err
check "warning names metrics line" grep -q 'lc/20260101-000003/metrics.jsonl:1: malformed JSON' ls.err
expect_ok runs-alias "$MFPIPE" runs results; check "runs = ls" cmp -s "$TMP/out" ls.out

expect_ok ls-json "$MFPIPE" ls results --json
check "json: one line per run" test "$(wc -l <"$TMP/out")" = 4
check "json: run a" grep -q '^{"name":"la","stamp":"20260101-000001","status":"finished","steps":12,"total_steps":12,"loss":[0-9.e-]*,"fid":null,"best_metric":"loss"' "$TMP/out"
check "json: corrupt run" grep -q '^{"name":"lc","stamp":"20260101-000003","status":null,"steps":null' "$TMP/out"
check "json: stale" grep -q '"name":"ld".*"status":"stale"' "$TMP/out"
if command -v python3 >/dev/null; then
  check "json parses" python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$TMP/out"
fi

# default root, eval.json FID as the best metric
printf '{"n":10,"metrics":[{"metric":"fid_lenet_v1","value":12.5,"n":10},{"metric":"class_histogram","value":[1,2]}]}\n' \
  >results/lb/20260101-000002/eval.json
expect_ok ls-default "$MFPIPE" ls
check "fid is best" grep -q '^lb  .*fid_lenet_v1=12.5 ' "$TMP/out"

expect_ok show "$MFPIPE" show results/la/latest
check "show name" grep -q '^name: *la$' "$TMP/out"
check "show status" grep -q '^status: *finished' "$TMP/out"
check "show backend" grep -q '^backend: *cpu fp32' "$TMP/out"
check "show seed" grep -q '^seed: *3$' "$TMP/out"
check "show steps" grep -q '^steps: *12/12$' "$TMP/out"
check "show loss" grep -q '^loss: *[0-9.e-]* (step 12)$' "$TMP/out"
check "show command" grep -q '^command: .*run -q exp.yaml --out results/la/20260101-000001' "$TMP/out"
expect_ok show-eval "$MFPIPE" show results/lb/20260101-000002
check "show eval metric" grep -q 'fid_lenet_v1 = 12.5' "$TMP/out"
check "show eval top-level number" grep -q 'eval: *n = 10' "$TMP/out"
check "show skips non-numeric" test -z "$(grep class_histogram "$TMP/out")"
mkdir -p results/lb/20260101-000002/samples; printf 'x' >results/lb/20260101-000002/samples/grid.png
expect_ok show-images "$MFPIPE" show results/lb/20260101-000002
check "show images" grep -q 'samples/grid.png' "$TMP/out"
expect_ok show-corrupt "$MFPIPE" show results/lc/20260101-000003
check "show corrupt status ?" grep -q '^status: *?$' "$TMP/out"
check "show corrupt name from folder" grep -q '^name: *lc$' "$TMP/out"
# a failed run: the error is shown
printf '{"state":"failed","time":"2026-01-01T00:00:09+0000","stage":"train","error":"boom: loss is nan"}\n' \
  >results/ld/20260101-000004/status.json
expect_ok show-failed "$MFPIPE" show results/ld/20260101-000004
check "show error" grep -q '^error: *train: boom: loss is nan$' "$TMP/out"

expect_fail show-missing "No such" "$MFPIPE" show results/nope
expect_fail show-not-run "not a run folder" "$MFPIPE" show results
expect_fail ls-missing "No such" "$MFPIPE" ls "$TMP/none"
expect_fail ls-bad-opt "unexpected argument" "$MFPIPE" ls --frob
finish
