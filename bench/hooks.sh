#!/usr/bin/env bash
# bench/hooks.sh - the per-step cost of the Lua hooks beside the quick model's training step (batch 128),
# both measured in the same run; prints a table and writes bench/hooks_results.md.
#   bench/hooks.sh [--steps N] [--threads T]
# The step time comes from `mfpipe run` (experiments/mnist_quick.yaml's model, batch 128, the real
# loop); each hook's cost from mf_hook_bench (the calls one step makes: lr and ema_decay once,
# loss_weight once per row or loss_weight_batch once, on_step once per log_every = 50 steps). A last
# row trains with three hooks on (warmup_cosine, mid_t_weighting, early_stop) beside the same run
# without them: end to end, noisy (these machines are shared), but it includes the weights' upload.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=40; threads=$(nproc)
while [ $# -gt 0 ]; do
  case $1 in
    --steps) steps=$2; shift 2;; --threads) threads=$2; shift 2;;
    *) echo "usage: bench/hooks.sh [--steps N] [--threads T]" >&2; exit 2;;
  esac
done
source bench/lib.sh
bench_build
work=$(mktemp -d /tmp/mfhooks-XXXXXX)
trap 'rm -rf "$work"' EXIT
bench_data "$work" || exit 1

# images per second over the steps after the first 10 (warm-up), from metrics.jsonl (awk: no python needed)
ips_of() {
  awk -v s0=10 '/"stage":"train"/ && /"step":/ {
      match($0, /"step":[0-9]+/); st = substr($0, RSTART + 7, RLENGTH - 7) + 0
      match($0, /"time":[0-9.]+/); tm = substr($0, RSTART + 7, RLENGTH - 7) + 0
      if (st == s0) { a = st; ta = tm } b = st; tb = tm }
    END { if (tb > ta) printf "%.1f", (b - a) * 128 / (tb - ta) }' "$1"
}
train() { # results-folder-name, extra overrides...
  local res=$work/$1; shift
  "$mf" run -q bench/bench_train.yaml "data.root=\"$dataroot\"" data.verify=$verify threads="$threads" \
    model.channels=16 model.res_blocks=1 model.time_embed.dim=64 model.time_embed.frequencies=16 \
    train.steps=$((steps + 10)) train.log_every=10 results_dir="\"$res\"" "$@" >/dev/null
  ips_of "$(ls -d "$res"/bench/*/ | tail -1)metrics.jsonl"
}
base=$(train plain)
step_us=$(awk -v i="$base" 'BEGIN { printf "%.0f", 128 / i * 1e6 }')
L=$PWD/scripts/lua
hooked=$(train hooked "hooks=[\"$L/warmup_cosine.lua\",\"$L/mid_t_weighting.lua\",\"$L/early_stop.lua\"]")
base2=$(train plain2)

out=$work/table.md
{
  echo "Quick model (channels 16, [1,2,2], 1 res block), batch 128, $threads threads: a training step takes $step_us us ($base img/s); $(date -u +%F)"
  echo
  echo "| script | hook | us per step | % of a training step |"
  echo "|---|---|---|---|"
  "$build"/bin/mf_hook_bench --batch 128 --log-every 50 "$L"/*.lua |
    awk -v st="$step_us" '{ printf "| %s | %s | %.2f | %.4f%% |\n", $1, $2, $3, 100 * $3 / st }'
  awk -v a="$base" -v b="$base2" -v h="$hooked" 'BEGIN {
    m = (a + b) / 2; printf "| end to end: warmup_cosine + mid_t_weighting + early_stop | all | %.0f | %+.1f%% img/s (%.1f vs %.1f and %.1f without; noise of a few %%) |\n", (128 / h - 128 / m) * 1e6, 100 * (h / m - 1), h, a, b }'
} >"$out"
cat "$out"
cp "$out" bench/hooks_results.md
