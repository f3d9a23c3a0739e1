#!/usr/bin/env bash
# bench/meanflow_bench.sh - what a MeanFlow training step costs beside a flow-matching step, in mfpipe and in
# PyTorch (Debian's python3-torch, bench/torch_bench.py --objective meanflow), same models, batch and thread
# count, all measured in the same run; prints a markdown table and writes it to bench/meanflow_results.md.
#   bench/meanflow_bench.sh [--steps N] [--threads T] [--cases "quick c32"] [--repeat R] [--flow-ratio F]
# Per case (the model specs of bench/run.sh) four measurements:
#   (a) mfpipe fm:       `mfpipe run bench/bench_train.yaml`, train.objective fm, v(z, t), time_embed.scale 1000
#                        (the default, as bench/run.sh and the fm experiments);
#   (b) mfpipe meanflow: the same with train.objective=meanflow, u(z, r, t), time_embed.scale 1 (as
#                        experiments/mnist_meanflow_quick.yaml), flow_ratio F (0.75: round(0.75 x 128) = 96 rows
#                        r = t, 32 rows through the JVP), logit-normal(-0.4, 1) times, adaptive weight p 1,
#                        c 1e-3, reduction sum;
#   (c) PyTorch fm and (d) PyTorch meanflow: bench/torch_bench.py with the same settings (functorch.jvp on
#                        the r < t rows only).
# The meanflow model is not the fm model: u(z, r, t) adds the interval time-embedding MLP (a second
# Linear-SiLU-Linear on the Fourier features of t - r), hence both parameter counts in the table; the
# difference is a few thousand parameters and ~0.02% of the FLOPs.
# Columns: images/s (best of R) and peak resident memory (lowest of R; bench/mf_peak for mfpipe, ru_maxrss
# for PyTorch, whose figure includes ~0.5 GiB of Python and libtorch); "meanflow/fm step" = step-time ratio
# (fm img/s / meanflow img/s; the mfpipe target is <= 1.4); "speed x" = mfpipe img/s / PyTorch img/s.
# --repeat R measures every side R times, alternating mfpipe and PyTorch as bench/run.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=30; threads=$(nproc); cases="quick c32"; repeat=1; ratio=0.75
usage() { echo "usage: bench/meanflow_bench.sh [--steps N] [--threads T] [--cases \"quick c32\"] [--repeat R] [--flow-ratio F]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --steps) steps=$2; shift 2;; --threads) threads=$2; shift 2;; --cases) cases=$2; shift 2;;
    --repeat) repeat=$2; shift 2;; --flow-ratio) ratio=$2; shift 2;;
    *) usage;;
  esac
done
source bench/lib.sh
bench_build
/usr/bin/python3 -c "import torch; from functorch import jvp" 2>/dev/null ||
  { echo "meanflow_bench: needs /usr/bin/python3 with torch and functorch (python3-torch)" >&2; exit 1; }
work=$(mktemp -d /tmp/mfbench-XXXXXX)
trap 'rm -rf "$work"' EXIT

# MNIST-shaped data: the real files when present, else a synthetic set (as bench/run.sh)
source bench/lib.sh
bench_data "$work" || exit 1

# case -> channels res_blocks temb half (bench/run.sh's cases)
spec() { case $1 in quick) echo "16 1 64 16";; c32) echo "32 2 128 32";; c64) echo "64 2 128 32";; *) echo "unknown case $1" >&2; exit 2;; esac; }
best() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 > a + 0) print b; else print a }'; }
least() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

mf_fm=(model.time_embed.scale=1000 train.objective=fm)
mf_mean=(model.time_embed.scale=1 train.objective=meanflow train.meanflow.flow_ratio="$ratio"
         train.meanflow.time_dist=logit_normal train.meanflow.time_mu=-0.4 train.meanflow.time_sigma=1.0
         train.meanflow.weight_p=1.0 train.meanflow.weight_c=1e-3 train.meanflow.reduction=sum)
pt_fm=(--objective fm --time-scale 1000)
pt_mean=(--objective meanflow --time-scale 1 --flow-ratio "$ratio" --time-mu -0.4 --time-sigma 1.0
         --weight-p 1.0 --weight-c 1e-3)

# one mfpipe measurement of case $c, objective $1 (fm|meanflow), repeat $2: sets r_params r_ips r_peak
measure_mfpipe() {
  local log=$work/$c.$1.$2.log res=$work/results_${c}_$1_$2 over
  if [ "$1" = fm ]; then over=("${mf_fm[@]}"); else over=("${mf_mean[@]}"); fi
  "$build"/bin/mf_peak "$mf" run -q bench/bench_train.yaml "data.root=\"$dataroot\"" data.verify=$verify \
     threads="$threads" model.channels="$ch" model.res_blocks="$rb" model.time_embed.dim="$temb" \
     model.time_embed.frequencies="$half" "${over[@]}" train.steps=$((steps + 10)) results_dir="\"$res\"" \
     2>"$log" >/dev/null || { echo "meanflow_bench: mfpipe $1 failed on case $c:" >&2; tail -5 "$log" >&2; exit 1; }
  r_peak=$(grep -o 'peak_mib=[0-9.]*' "$log" | cut -d= -f2)
  local run_dir
  run_dir=$(ls -d "$res"/bench/*/ | grep -v latest | tail -1)
  # throughput over the steps after the first 10 (warm-up), from metrics.jsonl as bench/run.sh
  read -r r_params r_ips <<<"$(/usr/bin/python3 - "${run_dir}metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
model = [r for r in rows if r.get("event") == "model"][0]
st = [r for r in rows if r.get("stage") == "train" and "step" in r]
a = [r for r in st if r["step"] == 10][0]; b = st[-1]
print(model["params"], round((b["step"] - a["step"]) * 128 / (b["time"] - a["time"]), 1))
PY
)"
}

# one PyTorch measurement, objective $1: sets r_params r_ips r_peak
measure_torch() {
  local over j
  if [ "$1" = fm ]; then over=("${pt_fm[@]}"); else over=("${pt_mean[@]}"); fi
  j=$(/usr/bin/python3 bench/torch_bench.py --ch "$ch" --res-blocks "$rb" --temb "$temb" --half "$half" \
      "${over[@]}" --steps "$steps" --threads "$threads" --batch 128 --sample-steps 1 2>"$work/torch.err" | tail -1) ||
    { echo "meanflow_bench: torch_bench $1 failed on case $c:" >&2; tail -5 "$work/torch.err" >&2; exit 1; }
  read -r r_params r_ips r_peak <<<"$(echo "$j" | /usr/bin/python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["params"], round(r["train_img_s"],1), round(r["peak_mib"]))')"
}

out=$work/table.md
{
  echo "MeanFlow vs flow-matching training step; batch 128, $threads threads, $steps timed steps (after warm-up), best of $repeat run(s) each; $(date -u +%F)."
  echo "fm: v(z, t), time_embed.scale 1000, uniform t. meanflow: u(z, r, t) (+ interval time-embedding MLP), time_embed.scale 1,"
  echo "flow_ratio $ratio (JVP on $((128 - $(awk -v r="$ratio" 'BEGIN{printf "%d", r * 128 + 0.5}'))) of 128 rows), logit-normal(-0.4, 1), adaptive weight p 1 c 1e-3, sum reduction."
  echo "Step-time ratio = fm img/s / meanflow img/s (mfpipe target <= 1.4); speed x = mfpipe / PyTorch."
  echo
  echo "| case | params fm | params meanflow | mfpipe fm img/s | MiB | mfpipe meanflow img/s | MiB | PyTorch fm img/s | MiB | PyTorch meanflow img/s | MiB | mfpipe meanflow/fm step | PyTorch meanflow/fm step | speed x fm | speed x meanflow |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$out"

for c in $cases; do
  read -r ch rb temb half <<<"$(spec "$c")"
  declare -A ips=() peak=() params=()
  for rep in $(seq 1 "$repeat"); do
    # alternate: mfpipe fm, PyTorch fm, mfpipe meanflow, PyTorch meanflow
    for o in fm meanflow; do
      for side in mfpipe torch; do
        "measure_$side" "$o" "$rep"
        k=$side.$o
        ips[$k]=$(best "${ips[$k]:-}" "$r_ips"); peak[$k]=$(least "${peak[$k]:-}" "$r_peak"); params[$k]=$r_params
      done
    done
  done
  [ "${params[mfpipe.fm]}" = "${params[torch.fm]}" ] && [ "${params[mfpipe.meanflow]}" = "${params[torch.meanflow]}" ] ||
    echo "meanflow_bench: warning: parameter counts differ between mfpipe and PyTorch on case $c" >&2
  mratio=$(div "${ips[mfpipe.fm]}" "${ips[mfpipe.meanflow]}")
  tratio=$(div "${ips[torch.fm]}" "${ips[torch.meanflow]}")
  mark=$(awk -v x="$mratio" 'BEGIN { print (x <= 1.4) ? "" : " (> 1.4)" }')
  echo "| $c (ch $ch, rb $rb) | ${params[mfpipe.fm]} | ${params[mfpipe.meanflow]} | ${ips[mfpipe.fm]} | ${peak[mfpipe.fm]} | ${ips[mfpipe.meanflow]} | ${peak[mfpipe.meanflow]} | ${ips[torch.fm]} | ${peak[torch.fm]} | ${ips[torch.meanflow]} | ${peak[torch.meanflow]} | $mratio$mark | $tratio | $(div "${ips[mfpipe.fm]}" "${ips[torch.fm]}") | $(div "${ips[mfpipe.meanflow]}" "${ips[torch.meanflow]}") |" >>"$out"
  unset ips peak params
done
cat "$out"
cp "$out" bench/meanflow_results.md
