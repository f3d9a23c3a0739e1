#!/usr/bin/env bash
# bench/run.sh - training and sampling throughput of mfpipe beside PyTorch (Debian's python3-torch), same model,
# batch and thread count, measured in the same run; prints a table (images/s, achieved GFLOP/s and its
# fraction of the measured SGEMM peak, peak resident memory) and writes it to bench/results.md.
#   bench/run.sh [--steps N] [--threads T] [--cases "quick c32 c64"] [--repeat R] [--precision both|fp32|bf16]
# --precision both (the default) measures, per case, four sides in the same run: mfpipe fp32, mfpipe bf16
# (`precision: bf16`, docs/cpu-backend.md, "bf16": bf16 convolutions, float32 everything else), PyTorch fp32
# and PyTorch bf16 (bench/torch_bench.py --dtype bf16: the module cast to bf16, pure bf16 training), and
# prints one table with each side's img/s and peak memory, the ratios mfpipe bf16 / mfpipe fp32 speed and
# mfpipe bf16 / PyTorch bf16 speed and memory, and the four sampling rates; the precision the mfpipe bf16
# run actually ran in (its manifest's "backend" "precision": fp32 on a CPU without AVX512-BF16 or AMX) is
# in the "ran as" column. Writes bench/results.md.
# --precision fp32 measures mfpipe fp32 beside PyTorch fp32 (bench/results.md); --precision bf16 mfpipe bf16
# beside PyTorch bf16 (bench/results_bf16.md).
# The table's header says the CPU model (lscpu) and whether it has the amx_bf16 / avx512_bf16 flags.
# --repeat R measures each side R times, alternating the sides (mfpipe fp32, mfpipe bf16, PyTorch fp32,
# PyTorch bf16, then again), and keeps each side's best speed and lowest peak memory (this machine is
# shared: single runs move by 10-15%).
# mfpipe is measured through `mfpipe run` (the real training loop: data order, noise, forward,
# backward, AdamW, EMA) on MNIST-shaped data; PyTorch through bench/torch_bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
usage='usage: bench/run.sh [--steps N] [--threads T] [--cases "quick c32 c64"] [--repeat R] [--precision both|fp32|bf16]'
steps=30; threads=$(nproc); cases="quick c32 c64"; repeat=1; precision=both
while [ $# -gt 0 ]; do
  case $1 in
    --steps) steps=$2; shift 2;; --threads) threads=$2; shift 2;; --cases) cases=$2; shift 2;;
    --repeat) repeat=$2; shift 2;; --precision) precision=$2; shift 2;;
    *) echo "$usage" >&2; exit 2;;
  esac
done
case $precision in
  both) precs="fp32 bf16";; fp32|bf16) precs=$precision;;
  *) echo "bench/run.sh: --precision both, fp32 or bf16, not '$precision'" >&2; exit 2;;
esac
source bench/lib.sh
bench_build
work=$(mktemp -d /tmp/mfbench-XXXXXX)
trap 'rm -rf "$work"' EXIT

# MNIST-shaped data: the real files when present, else a synthetic set
bench_data "$work" || exit 1

peak=$("$build"/bin/mf_gemm_peak 2048 5)
have_torch=0; torch_ver=-
if torch_ver=$(/usr/bin/python3 -c "import torch; print(torch.__version__)" 2>/dev/null); then have_torch=1; else torch_ver=-; fi

# the CPU and its bf16 instructions
cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
has_flag() { case $cpu_flags in *" $1 "*) echo yes;; *) echo no;; esac; }

# case -> channels res_blocks temb half
spec() { case $1 in quick) echo "16 1 64 16";; c32) echo "32 2 128 32";; c64) echo "64 2 128 32";; *) echo "unknown case $1" >&2; exit 2;; esac; }

best() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 > a + 0) print b; else print a }'; }
least() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }
ratio() { if [ "$1" = - ] || [ "$2" = - ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; fi; }
gflops() { if [ "$2" = - ]; then echo -; else awk -v g="$1" -v i="$2" 'BEGIN{printf "%.1f", 3*g*i}'; fi; }
pct() { if [ "$1" = - ]; then echo -; else awk -v x="$1" -v p="$peak" 'BEGIN{printf "%.0f%%", 100*x/p}'; fi; }

# one mfpipe measurement of case $c in precision $2: sets params gfl r_ips r_sps r_peak r_ran
measure_mfpipe() {
  local prec=$2 log=$work/$c.$2.log res=$work/results_${c}_$2_$1
  "$build"/bin/mf_peak "$mf" run -q bench/bench_train.yaml "data.root=\"$dataroot\"" data.verify=$verify \
     threads="$threads" model.channels="$ch" model.res_blocks="$rb" model.time_embed.dim="$temb" \
     model.time_embed.frequencies="$half" train.steps=$((steps + 10)) precision="$prec" results_dir="\"$res\"" \
     2>"$log" >/dev/null
  r_peak=$(grep -o 'peak_mib=[0-9.]*' "$log" | cut -d= -f2)
  local run_dir
  run_dir=$(ls -d "$res"/bench/*/ | tail -1)
  # throughput over the steps after the first 10 (warm-up): (steps) * 128 / time between log lines;
  # the precision that ran: the manifest's "backend" "precision" (bf16 asked on a CPU without it: fp32)
  read -r params gfl r_ips r_ran <<<"$(/usr/bin/python3 - "${run_dir}metrics.jsonl" "${run_dir}manifest.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
model = [r for r in rows if r.get("event") == "model"][0]
st = [r for r in rows if r.get("stage") == "train" and "step" in r]
a = [r for r in st if r["step"] == 10][0]; b = st[-1]
ips = (b["step"] - a["step"]) * 128 / (b["time"] - a["time"])
try:
    ran = json.load(open(sys.argv[2]))["backend"]["precision"] or "?"
except Exception:
    ran = "?"
print(model["params"], model["gflops_per_image"], round(ips, 1), ran)
PY
)"
  # sampling: images per second per network evaluation at batch 256 (Euler, 4 steps = 4 evaluations),
  # in the run's resolved config (so in its precision)
  "$mf" sample "$run_dir" -q --n 512 --batch 256 --sampler euler --steps 4 --out "$work/sample_${c}_$2_$1" 2>/dev/null >/dev/null
  r_sps=$(/usr/bin/python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if "nfe_total" in l][0]; print(round(r["n"]*r["nfe_total"]/len(r["nfe_per_batch"])/r["n"]*r["n"]/r["seconds"],1))' "$work/sample_${c}_$2_$1/metrics.jsonl")
}

# one PyTorch measurement of case $c in dtype $1: sets a_ips a_gfl a_peak a_sps
measure_torch() {
  local tj
  tj=$(/usr/bin/python3 bench/torch_bench.py --ch "$ch" --res-blocks "$rb" --temb "$temb" --half "$half" \
       --steps "$steps" --threads "$threads" --batch 128 --dtype "$1" 2>"$work/torch_${c}_$1.log" | tail -1) || return 1
  [ -n "$tj" ] || return 1
  read -r a_ips a_gfl a_peak a_sps <<<"$(echo "$tj" | /usr/bin/python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(round(r["train_img_s"],1), r["gflops_per_image"], round(r["peak_mib"]), round(r["sample_img_s"],1))')"
  [ -n "$a_ips" ]
}

out=$work/table.md
{
  echo "SGEMM peak (OpenBLAS, 2048^3, $threads threads): $peak GFLOP/s; batch 128; $steps timed steps; best of $repeat run(s) each; $(date -u +%F)"
  echo "CPU: ${cpu_model:-unknown}; amx_bf16: $(has_flag amx_bf16), avx512_bf16: $(has_flag avx512_bf16); PyTorch $torch_ver"
  case $precision in
    both|bf16) echo "mfpipe bf16: \`precision: bf16\` (bf16 convolutions, float32 weights, activations and the rest; \"ran as\": its manifest's backend precision); PyTorch bf16: the module cast to bf16 (bf16 weights, gradients and AdamW)";;
  esac
  echo
  case $precision in
    both)
      echo "| case | params | GFLOP/img | mfpipe fp32 img/s | GFLOP/s | % peak | peak MiB | mfpipe bf16 img/s | ran as | peak MiB | PyTorch fp32 img/s | GFLOP/s | % peak | peak MiB | PyTorch bf16 img/s | peak MiB | speed x mfpipe bf16/fp32 | speed x mfpipe/PyTorch bf16 | memory x mfpipe/PyTorch bf16 | sampling img*NFE/s mfpipe fp32 | mfpipe bf16 | PyTorch fp32 | PyTorch bf16 |"
      echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";;
    fp32)
      echo "| case | params | GFLOP/img | mfpipe img/s | GFLOP/s | % peak | peak MiB | PyTorch img/s | GFLOP/s | % peak | peak MiB | speed x | memory x | sampling img*NFE/s mfpipe | PyTorch |"
      echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";;
    bf16)
      echo "| case | params | GFLOP/img | mfpipe bf16 img/s | ran as | GFLOP/s | % SGEMM peak | peak MiB | PyTorch bf16 img/s | GFLOP/s | % SGEMM peak | peak MiB | speed x | memory x | sampling img*NFE/s mfpipe | PyTorch |"
      echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";;
  esac
} >"$out"

declare -A IPS SPS PEAK RAN
for c in $cases; do
  read -r ch rb temb half <<<"$(spec "$c")"
  IPS=(); SPS=(); PEAK=(); RAN=()
  for p in fp32 bf16; do for s in m t; do IPS[$s$p]=; SPS[$s$p]=; PEAK[$s$p]=; done; RAN[m$p]=; done
  tgfl=-
  for rep in $(seq 1 "$repeat"); do
    for p in $precs; do
      measure_mfpipe "$rep" "$p"
      IPS[m$p]=$(best "${IPS[m$p]}" "$r_ips"); SPS[m$p]=$(best "${SPS[m$p]}" "$r_sps"); PEAK[m$p]=$(least "${PEAK[m$p]}" "$r_peak")
      # the precision that ran, per repeat (they agree unless something changed between runs)
      if [ -z "${RAN[m$p]}" ] || [ "${RAN[m$p]}" = "$r_ran" ]; then RAN[m$p]=$r_ran; else RAN[m$p]="${RAN[m$p]}/$r_ran"; fi
    done
    if [ $have_torch = 1 ]; then
      for p in $precs; do
        if measure_torch "$p"; then
          IPS[t$p]=$(best "${IPS[t$p]}" "$a_ips"); SPS[t$p]=$(best "${SPS[t$p]}" "$a_sps"); PEAK[t$p]=$(least "${PEAK[t$p]}" "$a_peak")
          tgfl=$a_gfl
        else
          echo "bench/run.sh: PyTorch $p failed for case $c (see below); its columns stay '-'" >&2
          tail -5 "$work/torch_${c}_$p.log" >&2 || true
        fi
      done
    fi
  done
  [ "$tgfl" = - ] && tgfl=$gfl  # the same analytic count (torch_bench.py checks its hooks against it)
  # what was not measured (no PyTorch, a side this --precision skips, a failed run): '-'
  for k in "${!IPS[@]}"; do IPS[$k]=${IPS[$k]:--}; SPS[$k]=${SPS[$k]:--}; PEAK[$k]=${PEAK[$k]:--}; done
  for k in "${!RAN[@]}"; do RAN[$k]=${RAN[$k]:--}; done
  name="$c (ch $ch, rb $rb)"; g=$(printf %.3f "$gfl")
  case $precision in
    both)
      mgf=$(gflops "$gfl" "${IPS[mfp32]}"); tgf=$(gflops "$tgfl" "${IPS[tfp32]}")
      echo "| $name | $params | $g | ${IPS[mfp32]} | $mgf | $(pct "$mgf") | ${PEAK[mfp32]} | ${IPS[mbf16]} | ${RAN[mbf16]} | ${PEAK[mbf16]} | ${IPS[tfp32]} | $tgf | $(pct "$tgf") | ${PEAK[tfp32]} | ${IPS[tbf16]} | ${PEAK[tbf16]} | $(ratio "${IPS[mbf16]}" "${IPS[mfp32]}") | $(ratio "${IPS[mbf16]}" "${IPS[tbf16]}") | $(ratio "${PEAK[mbf16]}" "${PEAK[tbf16]}") | ${SPS[mfp32]} | ${SPS[mbf16]} | ${SPS[tfp32]} | ${SPS[tbf16]} |" >>"$out";;
    fp32)
      mgf=$(gflops "$gfl" "${IPS[mfp32]}"); tgf=$(gflops "$tgfl" "${IPS[tfp32]}")
      echo "| $name | $params | $g | ${IPS[mfp32]} | $mgf | $(pct "$mgf") | ${PEAK[mfp32]} | ${IPS[tfp32]} | $tgf | $(pct "$tgf") | ${PEAK[tfp32]} | $(ratio "${IPS[mfp32]}" "${IPS[tfp32]}") | $(ratio "${PEAK[mfp32]}" "${PEAK[tfp32]}") | ${SPS[mfp32]} | ${SPS[tfp32]} |" >>"$out";;
    bf16)
      mgf=$(gflops "$gfl" "${IPS[mbf16]}"); tgf=$(gflops "$tgfl" "${IPS[tbf16]}")
      echo "| $name | $params | $g | ${IPS[mbf16]} | ${RAN[mbf16]} | $mgf | $(pct "$mgf") | ${PEAK[mbf16]} | ${IPS[tbf16]} | $tgf | $(pct "$tgf") | ${PEAK[tbf16]} | $(ratio "${IPS[mbf16]}" "${IPS[tbf16]}") | $(ratio "${PEAK[mbf16]}" "${PEAK[tbf16]}") | ${SPS[mbf16]} | ${SPS[tbf16]} |" >>"$out";;
  esac
done
cat "$out"
if [ "$precision" = bf16 ]; then cp "$out" bench/results_bf16.md; else cp "$out" bench/results.md; fi
