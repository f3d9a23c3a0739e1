# test_runner.sh - the mfpipe command line: help, version, plugins, validate, overrides, every bad
# input of the runner (one clear error line, non-zero exit, no finished-looking folder), results layout.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
make_mnist_dir "$TMP/mn" 50 20
cat >exp.yaml <<Y
name: t
seed: 3
stages: [data, preview]
data: {dataset: mnist, root: $TMP/mn, verify: false}
preview: {n: 10, nrow: 5}
Y

# --- help, version, plugins ---------------------------------------------------------------------
expect_ok help "$MFPIPE" --help;           check "help lists run" contains "$TMP/out" "run EXP.yaml"
expect_ok run-help "$MFPIPE" run --help;   check "run help" contains "$TMP/out" "usage: mfpipe run"
expect_ok val-help "$MFPIPE" validate --help; check "validate help" contains "$TMP/out" "--keys"
expect_ok plug-help "$MFPIPE" plugins --help
expect_ok version "$MFPIPE" --version;     check "version" grep -q "^mfpipe [0-9.]* (plugin ABI 2; libyaml" "$TMP/out"
expect_fail no-args-cmd "unknown command" "$MFPIPE" frobnicate
expect_ok plugins "$MFPIPE" plugins
for k in data preview example_stats; do check "plugins lists $k" grep -q "^$k  *2  *.*stage_$k.so" "$TMP/out"; done

# --- validate -------------------------------------------------------------------------------------
expect_ok validate "$MFPIPE" validate exp.yaml
check "validate says ok" contains "$TMP/out" "ok (2 stages: data preview)"
expect_ok validate-print "$MFPIPE" validate exp.yaml --print preview.nrow=7
check "resolved config has override" grep -q "nrow: 7" "$TMP/out"
check "resolved config has defaults" grep -q "pad_to: 0" "$TMP/out"
expect_ok validate-keys "$MFPIPE" validate exp.yaml --keys
check "keys lists data.pad_to" grep -q "data.pad_to" "$TMP/out"
check "validate writes nothing" test ! -e results

# --- bad input: YAML and keys ----------------------------------------------------------------------
printf 'name: t\nstages: [data\ndata: {}\n' >malformed.yaml
expect_fail malformed "malformed.yaml:3" "$MFPIPE" run malformed.yaml
printf 'name: t\nstages: [data]\ndata:\n  datset: mnist\n' >unknown.yaml
expect_fail unknown-key "unknown.yaml:4:3: data.datset: unknown key; did you mean data.dataset?" "$MFPIPE" run unknown.yaml
printf 'name: t\nstages: [data]\nseeed: 1\n' >unknown_top.yaml
expect_fail unknown-top "did you mean seed?" "$MFPIPE" validate unknown_top.yaml
printf 'name: t\nstages: [data]\ndata:\n  limit_train: lots\n' >type.yaml
expect_fail wrong-type "type.yaml:4:3: data.limit_train: expected an integer" "$MFPIPE" run type.yaml
printf 'name: t\nstages: [data]\ndata:\n  pad_to: 100000\n' >range.yaml
expect_fail out-of-range "data.pad_to" "$MFPIPE" run range.yaml
check "range message gives range" grep -q "1024" "$TMP/err"
printf 'name: t\nstages: [data]\nseed: 99999999999999999999999\n' >overflow.yaml
expect_fail overflow "seed" "$MFPIPE" run overflow.yaml
printf 'name: t\nstages: [data, trian]\n' >missing_plugin.yaml
expect_fail missing-plugin "no plugin for stage 'trian'" "$MFPIPE" run missing_plugin.yaml
check "missing plugin names file and line" grep -q "missing_plugin.yaml:2" "$TMP/err"
# a bad key in the last stage fails before anything runs or is written
printf 'name: late\nstages: [data, preview]\ndata: {root: %s/mn, verify: false}\npreview: {nrowz: 3}\n' "$TMP" >late.yaml
expect_fail bad-last-stage "preview.nrowz: unknown key; did you mean preview.nrow?" "$MFPIPE" run late.yaml
check "no folder for a config error" test ! -e results/late

# --- plugins refused ------------------------------------------------------------------------------
printf 'name: t\nstages: [test_bad_abi]\n' >abi.yaml
MFPIPE_PLUGIN_PATH=$MFPIPE_TEST_BADPLUGINS expect_fail wrong-abi "plugin ABI version 43, but this mfpipe needs ABI version 2" "$MFPIPE" run abi.yaml
printf 'name: t\nstages: [test_no_entry]\n' >noentry.yaml
MFPIPE_PLUGIN_PATH=$MFPIPE_TEST_BADPLUGINS expect_fail no-entry "symbol 'mfpipe_stage_entry' not found" "$MFPIPE" run noentry.yaml
MFPIPE_PLUGIN_PATH=$MFPIPE_TEST_BADPLUGINS expect_ok plugins-refused "$MFPIPE" plugins
check "plugins shows refused file" grep -q "refused: .*ABI version 43" "$TMP/out"

# --- overrides ------------------------------------------------------------------------------------
expect_fail override-unknown "did you mean" "$MFPIPE" validate exp.yaml preview.nrw=3
expect_fail override-add-existing "already" "$MFPIPE" validate exp.yaml +preview.nrow=3
expect_ok override-delete "$MFPIPE" validate exp.yaml '~preview.nrow' --print
check "deleted key back to default" grep -q "nrow: 8" "$TMP/out"
expect_ok override-add "$MFPIPE" validate exp.yaml +data.pad_to=32 --print
check "added key" grep -q "pad_to: 32" "$TMP/out"
expect_ok override-stages "$MFPIPE" validate exp.yaml 'stages=[data,example_stats]'
check "stages override" contains "$TMP/out" "data example_stats"
expect_fail override-type "expected an integer" "$MFPIPE" validate exp.yaml preview.n=many

# --- a run and its folder -------------------------------------------------------------------------
expect_ok run "$MFPIPE" run exp.yaml preview.nrow=10
run=$(ls -d results/t/2* | head -1)
for f in experiment.yaml config.yaml overrides.txt manifest.json status.json log.txt metrics.jsonl data_preview.png; do
  check "run folder has $f" test -s "$run/$f"
done
check "latest link" test "$(readlink results/t/latest)" = "$(basename "$run")"
check "status finished" grep -q '"state":"finished"' "$run/status.json"
check "overrides recorded" grep -qx "preview.nrow=10" "$run/overrides.txt"
check "experiment as given" cmp -s exp.yaml "$run/experiment.yaml"
for k in git_revision git_dirty compiler libraries engine host seed command_line; do
  check "manifest has $k" grep -q "\"$k\"" "$run/manifest.json"
done
check "manifest seed" grep -q '"seed":3' "$run/manifest.json"
check "manifest is one JSON object" grep -q '^{"mfpipe_version":' "$run/manifest.json"
check "metrics from data" grep -q '"stage":"data".*"n_train":50' "$run/metrics.jsonl"
check "resolved config re-validates" "$MFPIPE" validate "$run/config.yaml"
check "resolved config keeps the override" grep -q "nrow: 10" "$run/config.yaml"
# two runs started in the same second get different folders
"$MFPIPE" run -q exp.yaml & p1=$!
"$MFPIPE" run -q exp.yaml & p2=$!
wait $p1 && wait $p2 && ok || bad "parallel runs"
check "three distinct run folders" test "$(ls -d results/t/2* | wc -l)" = 3

# --- failures at run time leave a folder marked failed ---------------------------------------------
printf 'name: broken\nstages: [data]\ndata: {root: %s/nothing, verify: false}\n' "$TMP" >broken.yaml
expect_fail missing-data "nothing" "$MFPIPE" run broken.yaml
bdir=$(ls -d results/broken/2* | head -1)
check "failed status" grep -q '"state":"failed"' "$bdir/status.json"
check "error in log" grep -q "error" "$bdir/log.txt"
# results folder not writable
mkdir ro && chmod 555 ro
if [ "$(id -u)" = 0 ]; then
  # root ignores permissions: use a path under a regular file instead
  touch notadir
  expect_fail not-writable "results folder not writable" "$MFPIPE" run exp.yaml results_dir=notadir/x
else
  expect_fail not-writable "results folder not writable" "$MFPIPE" run exp.yaml results_dir=ro
fi
finish
