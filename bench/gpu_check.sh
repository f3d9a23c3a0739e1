#!/usr/bin/env bash
# bench/gpu_check.sh - the one command for a GPU machine (at most ~8 minutes): build with CUDA, run the gpu
# tests, measure mfpipe against PyTorch on the same GPU, project the mnist_50k run; writes one markdown
# report to bench/gpu_results.md and prints it.
#   bench/gpu_check.sh [--steps N] [--budget SECONDS] [--skip-tests] [--no-torch] [--no-build]
#                      [--no-projection] [--cases "quick c64"] [--precisions "fp32 tf32 bf16"] [--sample-n N] [--engine cuda|cpu]
# Steps, in order (each later one is cut short, never the earlier ones, when the budget runs low):
#   1. cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DMFPIPE_CUDA=ON, build (MFPIPE_BUILD overrides
#      the folder); stops here if the CUDA backend module was not built (the configure log says why);
#   2. (cd build-gpu && ctest -L gpu --output-on-failure): test_backend_ops_cuda, cli_test_gpu_parity;
#   3. mfpipe training images/s at batch 128, `mfpipe run bench/bench_train.yaml` with the model overridden,
#      for the quick model (experiments/mnist_quick.yaml: ch 16, mult 1,2,2, 1 block, temb 64, 16 freqs) and
#      the c64 model (bench/run.sh's c64 = experiments/mnist_50k.yaml's model: ch 64, 2 blocks, temb 128,
#      32 freqs), each at precision fp32, tf32 and bf16: N steps (default 300, log_every 25), images/s from
#      metrics.jsonl between step 50 (warm-up: graph capture, cuDNN algorithm search) and the last step;
#      peak = the backend's peak memory from the run's log ("peak backend memory": device allocations,
#      workspaces included);
#   4. the MeanFlow step cost: the same runs with train.objective=meanflow (time_embed.scale 1, flow_ratio
#      0.75, logit-normal(-0.4, 1), adaptive weight p 1 c 1e-3, sum reduction, as bench/meanflow_bench.sh);
#      ratio = fm img/s / meanflow img/s (the CPU target was <= 1.4);
#   5. the mnist_50k projection: experiments/mnist_50k.yaml (fm_avgvel, c64, batch 128) trained N steps per
#      precision (stages data, train: measured step time and start-up), `mfpipe sample` of 1000 images at
#      its 50 Heun steps (measured), `mfpipe eval` of them (measured when the real MNIST test set is in
#      data/mnist, else a stated 10 s estimate), checkpoints (estimated: 49 x checkpoint size at 1 GB/s)
#      and its 9 periodic 64-image grids (estimated from the sample timing);
#   6. PyTorch on the same GPU, same model and batch (bench/torch_gpu_bench.py, tests/ref/unet_ref.py): eager
#      and torch.compile, fp32 / tf32 / bf16 autocast, timed with torch.cuda.synchronize, peak memory from
#      torch.cuda.max_memory_allocated; MeanFlow eager. No torch (or no CUDA in it): mfpipe columns only;
#      torch.compile failing (or starting after the budget): "n/a" with the reason.
# Targets (stated in the report's header): mfpipe >= 3x PyTorch eager and > torch.compile at every
# precision; the mnist_50k run (50k steps + sample + eval) in under 5 minutes.
# Environment: PYTHON (default python3: PyTorch 2.x on the GPU machine), MFPIPE_BUILD (default build-gpu).
# --engine cpu runs steps 3-5 on the CPU (to check this script on a machine without a GPU; the numbers
# then mean nothing for the targets); --skip-tests skips step 2, --no-projection step 5; --no-build uses MFPIPE_BUILD as it is;
# --cases / --precisions narrow steps 3-6; --sample-n N samples N images in step 5 and scales the time
# to 1000 (a quicker check). Budget (--budget, default 480 s): a step that would start too late is
# reported "n/a (budget)"; torch.compile cases get a deadline 15 s before the end.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
T0=$(date +%s)
steps=300; budget=480; skip_tests=0; no_torch=0; engine=cuda; no_projection=0; no_build=0; cases="quick c64"; precs="fp32 tf32 bf16"
sample_n=1000
usage() { echo "usage: bench/gpu_check.sh [--steps N] [--budget SECONDS] [--skip-tests] [--no-torch] [--no-build] [--no-projection] [--cases \"quick c64\"] [--precisions \"fp32 tf32 bf16\"] [--sample-n N] [--engine cuda|cpu]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --steps) steps=$2; shift 2;; --budget) budget=$2; shift 2;; --skip-tests) skip_tests=1; shift;;
    --no-torch) no_torch=1; shift;; --engine) engine=$2; shift 2;; --no-build) no_build=1; shift;; --no-projection) no_projection=1; shift;;
    --cases) cases=$2; shift 2;; --precisions) precs=$2; shift 2;; --sample-n) sample_n=$2; shift 2;;
    -h|--help) awk 'NR > 1 && /^set -uo/ {exit} NR > 1 {print}' "$0"; exit 0;;
    *) usage;;
  esac
done
case $engine in cuda|cpu) ;; *) usage;; esac
[ "$steps" -ge 100 ] 2>/dev/null || { echo "gpu_check: --steps must be >= 100 (the first 50 are warm-up)" >&2; exit 2; }
py=${PYTHON:-python3}
build=${MFPIPE_BUILD:-build-gpu}
mf=$build/bin/mfpipe
work=$(mktemp -d /tmp/mf-gpucheck-XXXXXX)
trap 'rm -rf "$work"' EXIT
elapsed() { echo $(($(date +%s) - T0)); }
left() { echo $((budget - $(elapsed))); }
tl() { local l; l=$(left); [ "$l" -lt 10 ] && l=10; echo "$l"; } # a command's time limit: what is left
# why a command failed: rc 124 is timeout's (the budget), else the first error line of its stderr
why() { if [ "$1" = 124 ]; then echo "budget: stopped after $(elapsed) s"; else grep -m1 error "$2" | cut -c1-120; fi; }
say() { echo "[gpu_check $(elapsed)s] $*" >&2; }
warm=50; log_every=25

# ---- 1. build -----------------------------------------------------------------------------------
if [ $no_build = 1 ]; then
  say "--no-build: using $build as it is"
else
say "configure + build ($build, Release, CUDA on)"
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMFPIPE_CUDA=ON >"$work/cmake.log" 2>&1; then
  tail -20 "$work/cmake.log" >&2; echo "gpu_check: cmake failed" >&2; exit 1
fi
if ! cmake --build "$build" -j"$(nproc)" >"$work/build.log" 2>&1; then
  grep -E 'error|Error' "$work/build.log" | head -20 >&2; echo "gpu_check: build failed (log above)" >&2; exit 1
fi
fi
if [ "$engine" = cuda ] && [ ! -f "$build/lib/mfpipe/backends/mf_backend_cuda.so" ]; then
  grep -i -E 'cuda|cudnn|nvcc' "$work/cmake.log" >&2
  echo "gpu_check: the CUDA backend module was not built (configure lines above: nvcc and cuDNN are needed)" >&2
  exit 1
fi
"$mf" version >"$work/version.txt" 2>&1
be_line=$(grep "^backend $engine " "$work/version.txt" || echo "backend $engine: (no line in mfpipe version)")
if echo "$be_line" | grep -q ': unavailable: '; then
  echo "gpu_check: $be_line" >&2; exit 1
fi
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
gpu=${gpu:-"(nvidia-smi not available)"}

# ---- PyTorch present, with CUDA? (asked once, up front: the report says why its columns are empty) ----
torch_note=""
if [ $no_torch = 1 ]; then
  torch_note="PyTorch not measured (--no-torch)"
elif ! "$py" -c 'import torch' >/dev/null 2>&1; then
  torch_note="PyTorch not measured: it cannot be imported with $py (set PYTHON)"
elif ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
  torch_note="PyTorch not measured: CUDA not available in torch $("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null) ($py)"
fi
[ -n "$torch_note" ] && say "$torch_note"

# ---- 2. gpu tests -------------------------------------------------------------------------------
tests_res="not run (--skip-tests)"
if [ $skip_tests = 0 ]; then
  say "ctest -L gpu"
  if (cd "$build" && ctest -L gpu --output-on-failure --timeout 300) >"$work/ctest.log" 2>&1; then
    tests_res="passed: $(grep -E 'tests passed' "$work/ctest.log" | tail -1)"
  else
    tests_res="FAILED: $(grep -E 'tests passed|tests failed' "$work/ctest.log" | tail -1) (output below the tables)"
  fi
  skipped=$(grep -c '\*\*\*Skipped' "$work/ctest.log" || true)
  [ "$skipped" != 0 ] && tests_res="$tests_res; $skipped skipped: $(grep -h '^no CUDA backend' "$work/ctest.log" | head -1)"
  say "tests: $tests_res"
fi

# ---- data: the real MNIST files when present, else a synthetic set (as bench/run.sh) -------------------
source bench/lib.sh
bench_data "$work" "$py" || exit 1

# ---- helpers --------------------------------------------------------------------------------------
# model spec: channels res_blocks temb half
spec() { case $1 in quick) echo "16 1 64 16";; c64) echo "64 2 128 32";; esac; }
mf_fm=(model.time_embed.scale=1000 train.objective=fm)
mf_mean=(model.time_embed.scale=1 train.objective=meanflow train.meanflow.flow_ratio=0.75
         train.meanflow.time_dist=logit_normal train.meanflow.time_mu=-0.4 train.meanflow.time_sigma=1.0
         train.meanflow.weight_p=1.0 train.meanflow.weight_c=1e-3 train.meanflow.reduction=sum)
# images/s between the log line at step $warm and the last one: ips RUN_DIR BATCH
ips() {
  awk -v warm="$warm" -v batch="$2" '
    /"stage":"train"/ && /"step":/ && /"loss":/ {
      s = $0; sub(/.*"step":/, "", s); sub(/[,}].*/, "", s)
      t = $0; sub(/.*"time":/, "", t); sub(/[,}].*/, "", t)
      s += 0; t += 0
      if (s >= warm && !have) { a = s; ta = t; have = 1 }
      b = s; tb = t }
    END { if (!have || b <= a || tb <= ta) print "n/a"; else printf "%.1f\n", (b - a) * batch / (tb - ta) }' "$1/metrics.jsonl"
}
peak_of() { grep -o 'peak backend memory [0-9.]*' "$1/log.txt" 2>/dev/null | tail -1 | awk '{printf "%.0f", $4}'; }
# one mfpipe training measurement: mfrun TAG PRECISION CASE OVERRIDES... ; sets r_ips r_peak r_dir
mfrun() {
  local tag=$1 prec=$2 c=$3; shift 3
  local ch rb temb half
  read -r ch rb temb half <<<"$(spec "$c")"
  r_dir=$work/run_$tag
  r_ips=n/a; r_peak=n/a
  if [ "$(left)" -lt 30 ]; then say "$tag: skipped (budget)"; r_ips="n/a (budget)"; return; fi
  if timeout -k 10 "$(tl)" "$mf" run -q bench/bench_train.yaml "data.root=\"$dataroot\"" data.verify=$verify engine="$engine" \
       precision="$prec" threads="$(nproc)" model.channels="$ch" model.res_blocks="$rb" model.time_embed.dim="$temb" \
       model.time_embed.frequencies="$half" train.steps="$steps" train.log_every=$log_every train.sample_every=0 \
       "$@" --out "$r_dir" >"$work/$tag.out" 2>"$work/$tag.err"; then
    r_ips=$(ips "$r_dir" 128); r_peak=$(peak_of "$r_dir"); r_peak=${r_peak:-n/a}
  else
    r_ips="n/a (mfpipe failed: $(why $? "$work/$tag.err"))"
  fi
  say "$tag: $r_ips img/s, peak $r_peak MiB"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
mark() { # value threshold op: "x.xx" with a mark when the target is missed
  awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { if (v == "n/a") { print v; exit }
    okk = (op == "ge") ? (v + 0 >= t) : (v + 0 > t); printf "%s%s", v, okk ? "" : " (miss)" }'
}

declare -A IPS PEAK
# ---- 3. mfpipe fm, 4. mfpipe meanflow -----------------------------------------------------------------
for c in $cases; do
  for p in $precs; do
    mfrun "fm_${c}_$p" "$p" "$c" "${mf_fm[@]}"; IPS[fm.$c.$p]=$r_ips; PEAK[fm.$c.$p]=$r_peak
  done
done
for c in $cases; do
  for p in $precs; do
    mfrun "mf_${c}_$p" "$p" "$c" "${mf_mean[@]}"; IPS[mf.$c.$p]=$r_ips; PEAK[mf.$c.$p]=$r_peak
  done
done

# ---- 5. mnist_50k projection ---------------------------------------------------------------------------
declare -A PROJ
exp50=experiments/mnist_50k.yaml
steps50=$(awk '/^train:/ {t = 1} t && /^  steps:/ {print $2; exit}' "$exp50")
batch50=$(awk '/^train:/ {t = 1} t && /^  batch:/ {print $2; exit}' "$exp50")
obj50=$(awk '/^train:/ {t = 1} t && /^  objective:/ {print $2; exit}' "$exp50")
sample_s=""; eval_s=""; eval_how=""
for p in $precs; do
  tag=p50_$p
  if [ $no_projection = 1 ]; then PROJ[$p]="not run (--no-projection)"; continue; fi
  if [ "$(left)" -lt 45 ]; then PROJ[$p]="n/a (budget)"; continue; fi
  s0=$(date +%s.%N)
  if timeout -k 10 "$(tl)" "$mf" run -q "$exp50" 'stages=[data,train]' "data.root=\"$dataroot\"" data.verify=$verify engine="$engine" \
       precision="$p" threads="$(nproc)" train.steps="$steps" train.log_every=$log_every train.checkpoint_every=0 \
       train.sample_every=0 --out "$work/$tag" >"$work/$tag.out" 2>"$work/$tag.err"; then
    s1=$(date +%s.%N)
    ips50=$(ips "$work/$tag" "$batch50")
    ck=$(find "$work/$tag/checkpoints" -name "*.mfc" 2>/dev/null | head -1)
    ckb=$(stat -c %s "$ck" 2>/dev/null || echo 0)
    if [ -z "$sample_s" ] && [ "$(left)" -gt 40 ]; then
      # the experiment's final sample stage: 1000 images, Heun, 50 steps (measured once, at this precision)
      a=$(date +%s.%N)
      if timeout -k 10 "$(tl)" "$mf" sample "$work/$tag" -q --n "$sample_n" --sampler heun --steps 50 engine="$engine" precision="$p" \
           --out "$work/sample50" >"$work/sample50.out" 2>"$work/sample50.err"; then
        sample_s=$(awk -v a="$a" -v b="$(date +%s.%N)" -v n="$sample_n" 'BEGIN{printf "%.1f", (b - a) * 1000 / n}')
        if [ $real_mnist = 1 ]; then
          a=$(date +%s.%N)
          if timeout -k 10 "$(tl)" "$mf" eval "$work/sample50" -q >"$work/eval.out" 2>"$work/eval.err"; then
            eval_s=$(awk -v a="$a" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}'); eval_how="measured"
          fi
        fi
      else
        sample_s=""
      fi
      [ -z "$eval_s" ] && { eval_s=10; eval_how="estimated (no real MNIST test set here, or eval failed)"; }
      sample_prec=$p
    fi
    PROJ[$p]=$(awk -v s0="$s0" -v s1="$s1" -v n="$steps" -v ips="$ips50" -v b="$batch50" -v N="$steps50" \
      -v ck="$ckb" -v smp="${sample_s:-0}" -v ev="${eval_s:-10}" 'BEGIN {
        if (ips == "n/a") { print "n/a"; exit }
        step = b / ips; startup = (s1 - s0) - n * step; if (startup < 0) startup = 0
        train = N * step; ckpt = 49 * (ck / 1e9 + 0.02); grids = 9 * 64 / 1000 * smp
        tot = startup + train + ckpt + grids + smp + ev
        printf "%.0f s (%.1f min): start-up %.1f + %d x %.2f ms = %.0f s training + checkpoints %.1f + grids %.1f + sample %.1f + eval %.1f",
               tot, tot / 60, startup, N, 1000 * step, train, ckpt, grids, smp, ev }')
  else
    PROJ[$p]="n/a (mfpipe failed: $(why $? "$work/$tag.err"))"
  fi
  say "mnist_50k $p: ${PROJ[$p]}"
done

# ---- 6. PyTorch -----------------------------------------------------------------------------------------
declare -A TIPS TPEAK
if [ -n "$torch_note" ]; then
  :
else
  deadline=$((T0 + budget - 15))
  for c in $cases; do
    read -r ch rb temb half <<<"$(spec "$c")"
    for o in fm meanflow; do
      modes=(--mode eager --mode compile); [ $o = meanflow ] && modes=(--mode eager)
      [ "$(left)" -lt 20 ] && { torch_note="${torch_note:+$torch_note; }some PyTorch cases not run (budget)"; break 2; }
      say "torch $c $o"
      timeout -k 10 "$(tl)" "$py" bench/torch_gpu_bench.py --ch "$ch" --res-blocks "$rb" --temb "$temb" --half "$half" --objective $o \
        --batch 128 --warmup 10 --steps 50 "${modes[@]}" --deadline "$deadline" \
        >"$work/torch_${c}_$o.jsonl" 2>"$work/torch_${c}_$o.err"
      rc=$?
      if [ $rc = 3 ] || [ $rc = 4 ]; then torch_note="PyTorch not measured: $(tail -1 "$work/torch_${c}_$o.err")"; break 2; fi
      [ $rc != 0 ] && torch_note="${torch_note:+$torch_note; }torch_gpu_bench $c $o exit $rc: $(tail -1 "$work/torch_${c}_$o.err" | cut -c1-120)"
      while IFS=$'\t' read -r prec mode val pk; do
        TIPS[$o.$c.$prec.$mode]=$val; TPEAK[$o.$c.$prec.$mode]=$pk
      done < <("$py" - "$work/torch_${c}_$o.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("ok"):
        print("%s\t%s\t%.1f\t%.0f" % (r["precision"], r["mode"], r["train_img_s"], r["peak_mib"]))
    else:
        print("%s\t%s\tn/a (%s)\tn/a" % (r["precision"], r["mode"], r.get("error", "?").replace("\t", " ")[:100]))
PY
)
    done
  done
fi
torch_ver=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)

# ---- the report -------------------------------------------------------------------------------------------
out=$work/gpu_results.md
num() { case $1 in n/a*|"") echo "n/a";; *) echo "$1";; esac; }
{
  echo "# GPU check: mfpipe against PyTorch ($(date -u +%F), bench/gpu_check.sh)"
  echo
  echo "GPU: $gpu. mfpipe: $be_line. PyTorch: $torch_ver ($py)."
  echo "Engine measured: $engine. Training at batch 128, $steps steps per mfpipe run (img/s between step $warm and the last);"
  echo "PyTorch: 10 warm-up + 50 timed steps. Data: $([ $real_mnist = 1 ] && echo 'MNIST (data/mnist)' || echo 'synthetic MNIST-shaped set')."
  echo "gpu tests (ctest -L gpu): $tests_res."
  [ -n "$torch_note" ] && echo "Note: $torch_note."
  echo
  echo "Targets: mfpipe >= 3x PyTorch eager, > torch.compile (x compile > 1) at every precision; mnist_50k < 5 min."
  echo "\"(miss)\" marks a missed target. Peak: mfpipe = backend device allocations (workspaces included);"
  echo "PyTorch = torch.cuda.max_memory_allocated (eager / compile)."
  echo
  echo "| config | precision | mfpipe img/s | torch eager img/s | torch compile img/s | x eager | x compile | mfpipe peak MiB | torch peak MiB (eager / compile) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for c in $cases; do
    for p in $precs; do
      m=${IPS[fm.$c.$p]}; e=${TIPS[fm.$c.$p.eager]:-n/a}; k=${TIPS[fm.$c.$p.compile]:-n/a}
      xe=$(mark "$(ratio "$(num "$m")" "$(num "$e")")" 3 ge); xk=$(mark "$(ratio "$(num "$m")" "$(num "$k")")" 1 gt)
      echo "| $c fm | $p | $m | $e | $k | $xe | $xk | ${PEAK[fm.$c.$p]} | ${TPEAK[fm.$c.$p.eager]:-n/a} / ${TPEAK[fm.$c.$p.compile]:-n/a} |"
    done
  done
  echo
  echo "MeanFlow step cost (JVP on 32 of 128 rows): ratio = fm img/s / meanflow img/s (the CPU target was <= 1.4)."
  echo
  echo "| config | precision | mfpipe fm img/s | mfpipe meanflow img/s | mfpipe ratio | mfpipe meanflow peak MiB | torch eager fm img/s | torch eager meanflow img/s | torch ratio | x eager (meanflow) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for c in $cases; do
    for p in $precs; do
      mfm=${IPS[fm.$c.$p]}; mmf=${IPS[mf.$c.$p]}; tfm=${TIPS[fm.$c.$p.eager]:-n/a}; tmf=${TIPS[meanflow.$c.$p.eager]:-n/a}
      echo "| $c | $p | $mfm | $mmf | $(ratio "$(num "$mfm")" "$(num "$mmf")") | ${PEAK[mf.$c.$p]} | $tfm | $tmf | $(ratio "$(num "$tfm")" "$(num "$tmf")") | $(mark "$(ratio "$(num "$mmf")" "$(num "$tmf")")" 3 ge) |"
    done
  done
  echo
  echo "Projected wall time of experiments/mnist_50k.yaml ($steps50 steps of $obj50 at batch $batch50, c64, then sample 1000 at"
  if [ -n "$sample_s" ]; then
    smp_txt="the sample stage ($sample_s s for 1000 images at $sample_prec$([ "$sample_n" != 1000 ] && echo ", scaled from $sample_n"))"
    ev_txt="eval $eval_s s ($eval_how)"
  else
    smp_txt="the sample stage (not measured: budget, or it failed; counted as 0)"; ev_txt="eval (not measured; 10 s assumed)"
  fi
  echo "Heun 50 and eval). Measured: step time and start-up of a $steps-step run per precision, $smp_txt;"
  echo "$ev_txt. Estimated: 49 checkpoints at 1 GB/s + 20 ms each, the 9 periodic 64-image grids scaled from the"
  echo "sample timing. Target < 5 min (300 s)."
  echo
  echo "| precision | projected mnist_50k |"
  echo "|---|---|"
  for p in $precs; do
    v=${PROJ[$p]:-n/a}
    miss=$(echo "$v" | awk '{ if ($1 + 0 > 0 && $1 + 0 >= 300) print " (miss)" }')
    echo "| $p | $v$miss |"
  done
  if [ $skip_tests = 0 ] && ! echo "$tests_res" | grep -q '^passed'; then
    echo; echo "ctest -L gpu output (tail):"; echo; echo '```'; tail -60 "$work/ctest.log"; echo '```'
  fi
} >"$out"
cp "$out" bench/gpu_results.md
cat "$out"
say "done in $(elapsed) s; written to bench/gpu_results.md"
