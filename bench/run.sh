#!/usr/bin/env bash
# bench/run.sh - training and sampling throughput of mfpipe beside PyTorch (Debian's python3-torch), same model,
# batch and thread count, measured in the same run; prints a table (images/s, achieved GFLOP/s and its
# fraction of the measured SGEMM peak, peak resident memory) and writes it to bench/results.md.
#   bench/run.sh [--steps N] [--threads T] [--cases "quick c32 c64"] [--repeat R] [--precision fp32|bf16]
# --precision bf16 measures mfpipe with `precision: bf16` (docs/cpu-backend.md, "bf16"; PyTorch stays fp32)
# and writes bench/results_bf16.md instead of bench/results.md.
# --repeat R measures each side R times, alternating mfpipe and PyTorch, and keeps each side's best speed
# and lowest peak memory (this machine is shared: single runs move by 10-15%).
# mfpipe is measured through `mfpipe run` (the real training loop: data order, noise, forward,
# backward, AdamW, EMA) on MNIST-shaped data; PyTorch through bench/torch_bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=30; threads=$(nproc); cases="quick c32 c64"; repeat=1; precision=fp32
while [ $# -gt 0 ]; do
  case $1 in
    --steps) steps=$2; shift 2;; --threads) threads=$2; shift 2;; --cases) cases=$2; shift 2;;
    --repeat) repeat=$2; shift 2;; --precision) precision=$2; shift 2;;
    *) echo "usage: bench/run.sh [--steps N] [--threads T] [--cases \"quick c32 c64\"] [--repeat R] [--precision fp32|bf16]" >&2; exit 2;;
  esac
done
case $precision in fp32|bf16) ;; *) echo "bench/run.sh: --precision fp32 or bf16, not '$precision'" >&2; exit 2;; esac
source bench/lib.sh
bench_build
work=$(mktemp -d /tmp/mfbench-XXXXXX)
trap 'rm -rf "$work"' EXIT

# MNIST-shaped data: the real files when present, else a synthetic set
bench_data "$work" || exit 1

peak=$("$build"/bin/mf_gemm_peak 2048 5)
have_torch=0
/usr/bin/python3 -c "import torch" 2>/dev/null && have_torch=1

# case -> channels res_blocks temb half
spec() { case $1 in quick) echo "16 1 64 16";; c32) echo "32 2 128 32";; c64) echo "64 2 128 32";; *) echo "unknown case $1" >&2; exit 2;; esac; }

out=$work/table.md
{
  echo "SGEMM peak (OpenBLAS, 2048^3, $threads threads): $peak GFLOP/s; batch 128; $steps timed steps; best of $repeat run(s) each; $(date -u +%F)"
  [ "$precision" = fp32 ] || echo "mfpipe precision: $precision (see its manifest); PyTorch: fp32"
  echo
  echo "| case | params | GFLOP/img | mfpipe img/s | GFLOP/s | % peak | peak MiB | PyTorch img/s | GFLOP/s | % peak | peak MiB | speed x | memory x | sampling img*NFE/s mfpipe | PyTorch |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} >"$out"
best() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 > a + 0) print b; else print a }'; }
least() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }

# one mfpipe measurement of case $c: sets params gfl r_ips r_sps r_peak
measure_mfpipe() {
  local log=$work/$c.log res=$work/results_${c}_$1
  "$build"/bin/mf_peak "$mf" run -q bench/bench_train.yaml "data.root=\"$dataroot\"" data.verify=$verify \
     threads="$threads" model.channels="$ch" model.res_blocks="$rb" model.time_embed.dim="$temb" \
     model.time_embed.frequencies="$half" train.steps=$((steps + 10)) precision="$precision" results_dir="\"$res\"" \
     2>"$log" >/dev/null
  r_peak=$(grep -o 'peak_mib=[0-9.]*' "$log" | cut -d= -f2)
  local run_dir
  run_dir=$(ls -d "$res"/bench/*/ | tail -1)
  # throughput over the steps after the first 10 (warm-up): (steps) * 128 / time between log lines
  read -r params gfl r_ips <<<"$(/usr/bin/python3 - "${run_dir}metrics.jsonl" "$steps" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
model = [r for r in rows if r.get("event") == "model"][0]
st = [r for r in rows if r.get("stage") == "train" and "step" in r]
a = [r for r in st if r["step"] == 10][0]; b = st[-1]
ips = (b["step"] - a["step"]) * 128 / (b["time"] - a["time"])
print(model["params"], model["gflops_per_image"], round(ips, 1))
PY
)"
  # sampling: images per second per network evaluation at batch 256 (Euler, 4 steps = 4 evaluations)
  "$mf" sample "$run_dir" -q --n 512 --batch 256 --sampler euler --steps 4 --out "$work/sample_${c}_$1" 2>/dev/null >/dev/null
  r_sps=$(/usr/bin/python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if "nfe_total" in l][0]; print(round(r["n"]*r["nfe_total"]/len(r["nfe_per_batch"])/r["n"]*r["n"]/r["seconds"],1))' "$work/sample_${c}_$1/metrics.jsonl")
}

for c in $cases; do
  read -r ch rb temb half <<<"$(spec "$c")"
  ips=; sps=; mpeak=; tips=; tgf=; tpeak=; tsps=
  for rep in $(seq 1 "$repeat"); do
    measure_mfpipe "$rep"
    ips=$(best "$ips" "$r_ips"); sps=$(best "$sps" "$r_sps"); mpeak=$(least "$mpeak" "$r_peak")
    if [ $have_torch = 1 ]; then
      tj=$(/usr/bin/python3 bench/torch_bench.py --ch "$ch" --res-blocks "$rb" --temb "$temb" --half "$half" \
           --steps "$steps" --threads "$threads" --batch 128 2>/dev/null | tail -1)
      read -r a_ips a_gf a_peak a_sps <<<"$(echo "$tj" | /usr/bin/python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(round(r["train_img_s"],1), round(r["train_gflops"],1), round(r["peak_mib"]), round(r["sample_img_s"],1))')"
      if [ -z "$tips" ] || [ "$(best "$tips" "$a_ips")" = "$a_ips" ]; then tgf=$a_gf; fi
      tips=$(best "$tips" "$a_ips"); tsps=$(best "$tsps" "$a_sps"); tpeak=$(least "$tpeak" "$a_peak")
    fi
  done
  mgf=$(awk -v g="$gfl" -v i="$ips" 'BEGIN{printf "%.1f", 3*g*i}')
  mpct=$(awk -v x="$mgf" -v p="$peak" 'BEGIN{printf "%.0f", 100*x/p}')
  if [ $have_torch = 1 ]; then
    tpct=$(awk -v x="$tgf" -v p="$peak" 'BEGIN{printf "%.0f", 100*x/p}')
    sx=$(awk -v a="$ips" -v b="$tips" 'BEGIN{printf "%.2f", a/b}')
    mx=$(awk -v a="$mpeak" -v b="$tpeak" 'BEGIN{printf "%.2f", a/b}')
  else
    tips=-; tgf=-; tpct=-; tpeak=-; sx=-; mx=-; tsps=-
  fi
  echo "| $c (ch $ch, rb $rb) | $params | $(printf %.3f "$gfl") | $ips | $mgf | $mpct% | $mpeak | $tips | $tgf | $tpct% | $tpeak | $sx | $mx | $sps | $tsps |" >>"$out"
done
cat "$out"
if [ "$precision" = fp32 ]; then cp "$out" bench/results.md; else cp "$out" "bench/results_$precision.md"; fi
