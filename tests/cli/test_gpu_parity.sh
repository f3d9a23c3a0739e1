# test_gpu_parity.sh - the CUDA backend against the CPU backend end to end, at fp32, from the same seed
# (same initial weights, data order, noise and times; noise comes from each backend's randn, which
# follows mf_rng_normal's stream):
#   (a) 100 flow-matching training steps, engine=cpu and engine=cuda: the logged loss (log_every 10)
#       agrees within LOSS_RTOL at every logged step;
#   (b) 20 MeanFlow steps (train.objective: meanflow, the JVP path) likewise;
#   (c) `mfpipe sample` of the CPU run's checkpoint with engine=cpu and engine=cuda: the 8-bit samples
#       (samples/samples.idx3-ubyte: the sample stage writes no float file) agree to one quantisation
#       level everywhere and differ in at most SAMPLE_MAX_DIFF_PCT % of the pixels.
# Label gpu; exits 77 (ctest: skipped) with the reason where the CUDA backend cannot be opened.
# MFPIPE_PARITY_ENGINE=cpu runs the second side on the CPU with 1 thread instead (to check this script
# on a machine without a GPU: the comparisons run, with small thread-count differences).
source "$(dirname "$0")/lib.sh"
cd "$TMP" || exit 1
B=${MFPIPE_PARITY_ENGINE:-cuda}
if [ "$B" = cuda ]; then bover=(engine=cuda); else bover=(engine="$B" threads=1); fi

# Tolerances.
# LOSS_RTOL: both sides compute in float32 with different summation orders (cuDNN/cuBLAS against oneDNN/
# im2col+BLAS), a relative difference of ~1e-6 per step in the gradients. AdamW divides by sqrt(v), so
# parameters whose gradients are near zero take steps of ~lr whatever the sign noise, and the training
# trajectories drift apart; over 100 steps at lr 1e-3 this reaches ~1e-3 relative in the loss, and the
# logged loss is itself a noisy batch mean. 2e-2 keeps a margin without hiding a wrong kernel (a broken
# kernel moves the loss by tens of percent within a few steps).
LOSS_RTOL=2e-2
# Sampling: one network is evaluated 2 x 4 times (Heun, 4 steps) on the same noise; the float outputs
# differ by ~1e-5..1e-4, which is below one 8-bit level (2/255 on [-1, 1]) but flips a level where a
# value sits on a rounding boundary: about 127.5 x |difference| of the pixels, so well under 1%.
SAMPLE_MAX_LEVELS=1
SAMPLE_MAX_DIFF_PCT=1

# ---- is there a CUDA backend? ----------------------------------------------------------------------
"$MFPIPE" version >"$TMP/version" 2>&1 || true
cuda_line=$(grep '^backend cuda ' "$TMP/version" || true)
make_data() { # varied, deterministic 28x28 images (rings of random centre and radius) and labels
  mkdir -p "$TMP/mn"
  local f n
  for f in train:256 t10k:32; do
    n=${f#*:}
    { printf '\x00\x00\x08\x03'; be32 "$n"; be32 28; be32 28
      LC_ALL=C awk -v n="$n" -v seed="${#f}" 'BEGIN {
        s = 12345 + seed
        for (i = 0; i < n; i++) {
          s = (s * 1103515245 + 12345) % 2147483648; cx = 8 + (s % 12)
          s = (s * 1103515245 + 12345) % 2147483648; cy = 8 + (s % 12)
          s = (s * 1103515245 + 12345) % 2147483648; r = 3 + (s % 6)
          for (y = 0; y < 28; y++) for (x = 0; x < 28; x++) {
            d = sqrt((x - cx) ^ 2 + (y - cy) ^ 2) - r
            v = int(1 + 254 * exp(-d * d / 2))
            printf "%c", v
          }
        }
      }'
    } >"$TMP/mn/${f%%:*}-images-idx3-ubyte"
    make_idx_labels "$TMP/mn/${f%%:*}-labels-idx1-ubyte" "$n"
  done
}
make_data
cat >fm.yaml <<Y
name: par
seed: 11
threads: 2
precision: fp32
stages: [data, train, ema]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 16, channel_mult: [1, 2], res_blocks: 1, groups: 4, time_embed: {dim: 32, frequencies: 8}}
train:
  objective: fm
  steps: 100
  batch: 32
  optimizer: {lr: 1.0e-3, grad_clip: 1.0}
  schedule: {warmup: 10}
  log_every: 10
  checkpoint_every: 100
  sample_every: 0
  final_grid: 0
Y
if [ "$B" != cuda ]; then
  cuda_line="(MFPIPE_PARITY_ENGINE=$B: second side ${bover[*]})"
elif [ -z "$cuda_line" ]; then
  # an mfpipe without backend lines in `version`: probe with a one-step run
  if ! "$MFPIPE" run -q fm.yaml engine=cuda train.steps=1 --out "$TMP/probe" >"$TMP/out" 2>"$TMP/err"; then
    if grep -qi cuda "$TMP/err"; then
      echo "no CUDA backend: $(grep -m1 'error' "$TMP/err" | sed 's/^mfpipe: error: //')"
      exit 77
    fi
  fi
elif echo "$cuda_line" | grep -q ': unavailable: '; then
  echo "no CUDA backend: ${cuda_line#*: unavailable: }"
  exit 77
fi
echo "testing: $cuda_line"

# losses of a run: "step value" of metric KEY per logged train line: losses RUN KEY
losses() { sed -n 's/.*"stage":"train".*"step":\([0-9]*\),.*"'"$2"'":\([^,}]*\).*/\1 \2/p' "$1/metrics.jsonl"; }
# compare_losses NAME CPU_RUN CUDA_RUN RTOL EXPECTED_LINES [KEY (default loss)]
compare_losses() {
  local name=$1 a=$2 b=$3 tol=$4 want=$5 key=${6:-loss} res
  losses "$a" "$key" >"$TMP/la"; losses "$b" "$key" >"$TMP/lb"
  if [ "$(wc -l <"$TMP/la")" != "$want" ] || [ "$(wc -l <"$TMP/lb")" != "$want" ]; then
    bad "$name: expected $want logged losses, got $(wc -l <"$TMP/la") (cpu) and $(wc -l <"$TMP/lb") (cuda)"
    return
  fi
  res=$(paste -d' ' "$TMP/la" "$TMP/lb" | awk -v tol="$tol" -v side="$B" '
    { if ($1 != $3) { print "step mismatch " $1 " " $3; bad = 1; exit }
      d = $2 - $4; if (d < 0) d = -d; m = $2 < 0 ? -$2 : $2; r = m > 0 ? d / m : d
      printf "  step %5d  cpu %.6f  %s %.6f  rel %.2e\n", $1, $2, side, $4, r > "/dev/stderr"
      if (!(r <= tol)) { bad = 1; worst_step = $1 }
      if (r > max) max = r }
    END { if (bad) print "FAIL max rel " max " (tol " tol ") first bad step " worst_step; else print "ok max rel " max }')
  echo "$name, $key: $res (tolerance $tol)"
  case $res in ok*) ok ;; *) bad "$name: $res" ;; esac
}

# ---- (a) flow matching, 100 steps ----------------------------------------------------------------
expect_ok fm-cpu "$MFPIPE" run -q fm.yaml engine=cpu --out "$TMP/fm_cpu"
expect_ok fm-cuda "$MFPIPE" run -q fm.yaml "${bover[@]}" --out "$TMP/fm_cuda"
check "fm: the second run used the $B backend" grep -q "\"backend\": {\"kind\":\"$B\",\"precision\":\"fp32\"" "$TMP/fm_cuda/manifest.json"
compare_losses "fm 100 steps" "$TMP/fm_cpu" "$TMP/fm_cuda" "$LOSS_RTOL" 10

# ---- (b) MeanFlow (JVP), 20 steps ----------------------------------------------------------------
mf=(train.objective=meanflow train.steps=20 train.log_every=5 train.checkpoint_every=20 model.time_embed.scale=1
    train.meanflow.flow_ratio=0.5)
expect_ok mf-cpu "$MFPIPE" run -q fm.yaml engine=cpu "${mf[@]}" --out "$TMP/mf_cpu"
expect_ok mf-cuda "$MFPIPE" run -q fm.yaml "${bover[@]}" "${mf[@]}" --out "$TMP/mf_cuda"
# the adaptively weighted loss sum(e / (e + c)) / B is ~1 whatever the model: compare the unweighted
# loss and the loss of the r < t rows (the JVP target) as well
for key in loss loss_unweighted loss_r_lt_t; do
  compare_losses "meanflow 20 steps" "$TMP/mf_cpu" "$TMP/mf_cuda" "$LOSS_RTOL" 4 "$key"
done

# ---- (c) sampling the CPU run's checkpoint on both engines --------------------------------------
smp=(--sampler heun --steps 4 --n 64 --batch 32)
expect_ok sample-cpu "$MFPIPE" sample "$TMP/fm_cpu" -q "${smp[@]}" engine=cpu --out "$TMP/s_cpu"
expect_ok sample-cuda "$MFPIPE" sample "$TMP/fm_cpu" -q "${smp[@]}" "${bover[@]}" --out "$TMP/s_cuda"
a=$TMP/s_cpu/samples/samples.idx3-ubyte b=$TMP/s_cuda/samples/samples.idx3-ubyte
if [ -s "$a" ] && [ -s "$b" ] && [ "$(stat -c %s "$a")" = "$(stat -c %s "$b")" ]; then
  total=$(($(stat -c %s "$a") - 16))
  # cmp -l: offset and the two differing bytes in octal, one line per difference
  res=$(cmp -l "$a" "$b" | awk -v total="$total" -v maxl="$SAMPLE_MAX_LEVELS" -v pct="$SAMPLE_MAX_DIFF_PCT" '
    function oct(s,  v, i) { v = 0; for (i = 1; i <= length(s); i++) v = v * 8 + substr(s, i, 1); return v }
    { if ($1 <= 16) { hdr = 1; next }
      d = oct($2) - oct($3); if (d < 0) d = -d; if (d > max) max = d; n++; sum += d }
    END { p = 100 * n / total
          msg = sprintf("%d of %d pixels differ (%.2f%%), max %d levels, mean %.4f levels", n, total, p, max, sum / total)
          if (hdr || max > maxl || p > pct) print "FAIL " msg (hdr ? " (headers differ)" : ""); else print "ok " msg }')
  echo "sample heun 4 steps: $res (tolerance: <= $SAMPLE_MAX_LEVELS level, <= $SAMPLE_MAX_DIFF_PCT% of pixels)"
  case $res in ok*) ok ;; *) bad "samples: $res" ;; esac
else
  bad "samples: missing or of different sizes: $a $b"
fi
finish
