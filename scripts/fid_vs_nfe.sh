#!/usr/bin/env bash
# fid_vs_nfe.sh - FID (and every other metric of eval.json) against the network evaluations per
# sample, for runs x samplers x step counts (or dopri5 tolerances): one `mfpipe sample` and one
# `mfpipe eval` per point, one CSV row per point, and an SVG chart of FID against NFE (log x) made
# with `mfpipe plot`. docs/plots.md has the columns and an example.
set -euo pipefail

usage() {
  cat <<'U'
usage: scripts/fid_vs_nfe.sh --out PREFIX [options] RUN_DIR:LABEL:SAMPLER:V1,V2,... [more specs]

Each spec samples the run RUN_DIR (its newest checkpoint, EMA weights) with SAMPLER at each value V
and measures the samples with `mfpipe eval`. V is the number of steps for the fixed-step samplers
(euler, heun, rk4, meanflow, sampler plugins) and rtol = atol for dopri5, whose x is the measured
mean NFE per sample:
  scripts/fid_vs_nfe.sh --out docs/img/fid_vs_nfe --n 1000 \
      results/mnist_quick/latest:fm:heun:2,4,8,16 results/mnist_quick/latest:fm:dopri5:1e-2,1e-3,1e-4
Writes PREFIX.csv (one row per point: run, label, series, sampler, steps, tol, nfe, ..., fid, and
every metric of eval.json) and PREFIX.svg (FID against NFE, log x, one line per spec: the label, or
"label (sampler)" where specs share a label).

options:
  --out PREFIX      the output files PREFIX.csv and PREFIX.svg (required; the folder is created)
  --n N             samples per point and eval's N (default 1000; FIDs compare only at equal N)
  --work DIR        where each point's sample and eval folders go (default results/fid_vs_nfe):
                    DIR/LABEL/SAMPLER_V/{sample,eval}/; a point already there with the same run,
                    N and options is reused (--force recomputes)
  --seed S          noise seed of every point (default: the run's seed; the same for all points)
  --batch B         sampling batch
  --y COLUMN        the chart's y column (default fid)
  --title TEXT      the chart's title
  --sample-arg KV   one more `mfpipe sample` argument (repeatable): --sample-arg sample.max_nfe=4000
  --eval-arg KV     one more `mfpipe eval` argument (repeatable): --eval-arg eval.cache=/tmp/cache
  --force           recompute every point
  --mfpipe PATH     the binary (default: $MFPIPE, else build/bin/mfpipe of this tree, else PATH's)
Relative paths in the runs' configs (data.root, ...) resolve from the current folder, as in mfpipe.
U
}

die() { echo "fid_vs_nfe: error: $*" >&2; exit 1; }
usage_error() { echo "fid_vs_nfe: error: $*" >&2; echo "(see scripts/fid_vs_nfe.sh --help)" >&2; exit 2; }

here=$(cd "$(dirname "$0")/.." && pwd)
out="" n=1000 work=results/fid_vs_nfe seed="" batch="" ycol=fid title="" force=0 bin=${MFPIPE:-}
sample_args=() eval_args=() specs=()
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --out|--n|--work|--seed|--batch|--y|--title|--sample-arg|--eval-arg|--mfpipe)
      [ $# -ge 2 ] || usage_error "$1 needs a value"
      case $1 in
        --out) out=$2 ;; --n) n=$2 ;; --work) work=$2 ;; --seed) seed=$2 ;; --batch) batch=$2 ;;
        --y) ycol=$2 ;; --title) title=$2 ;; --mfpipe) bin=$2 ;;
        --sample-arg) sample_args+=("$2") ;; --eval-arg) eval_args+=("$2") ;;
      esac
      shift 2 ;;
    --force) force=1; shift ;;
    --) shift; specs+=("$@"); break ;;
    -*) usage_error "unknown option '$1'" ;;
    *) specs+=("$1"); shift ;;
  esac
done
[ -n "$out" ] || usage_error "no --out PREFIX given"
[ ${#specs[@]} -gt 0 ] || usage_error "no RUN_DIR:LABEL:SAMPLER:VALUES spec given"
[[ $n =~ ^[1-9][0-9]*$ ]] || usage_error "--n wants a positive integer, not '$n'"
[ -z "$seed" ] || [[ $seed =~ ^[0-9]+$ ]] || usage_error "--seed wants a non-negative integer, not '$seed'"
[ -z "$batch" ] || [[ $batch =~ ^[1-9][0-9]*$ ]] || usage_error "--batch wants a positive integer, not '$batch'"
if [ -z "$bin" ]; then
  if [ -x "$here/build/bin/mfpipe" ]; then bin=$here/build/bin/mfpipe
  else bin=$(command -v mfpipe) || usage_error "no mfpipe binary: build it, or give --mfpipe PATH"; fi
fi
[ -x "$bin" ] || usage_error "--mfpipe $bin: not an executable"

# ---- the specs: RUN:LABEL:SAMPLER:V1,V2,... (split from the right: a run path may hold ':') ----
spec_run=() spec_label=() spec_sampler=() spec_values=()
declare -A label_count=() label_run=()
for spec in "${specs[@]}"; do
  [[ $spec == *:*:*:* ]] || usage_error "spec '$spec': expected RUN_DIR:LABEL:SAMPLER:V1,V2,..."
  values=${spec##*:}; rest=${spec%:*}
  sampler=${rest##*:}; rest=${rest%:*}
  label=${rest##*:}; run=${rest%:*}
  [ -n "$run" ] && [ -n "$label" ] && [ -n "$values" ] || usage_error "spec '$spec': empty run, label or values"
  [[ $sampler =~ ^[A-Za-z0-9_-]+$ ]] || usage_error "spec '$spec': bad sampler name '$sampler'"
  [ -f "$run/config.yaml" ] || usage_error "spec '$spec': $run is not a run folder (no config.yaml)"
  IFS=, read -r -a vals <<<"$values"
  for v in "${vals[@]}"; do
    if [ "$sampler" = dopri5 ]; then
      [[ $v =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]] || usage_error "spec '$spec': dopri5 takes tolerances (1e-3), not '$v'"
    else
      [[ $v =~ ^[1-9][0-9]*$ ]] || usage_error "spec '$spec': $sampler takes step counts (positive integers), not '$v'"
    fi
  done
  rrun=$(cd "$run" && pwd -P)
  if [ -n "${label_run[$label]:-}" ] && [ "${label_run[$label]}" != "$rrun" ]; then
    usage_error "label '$label' names two runs (${label_run[$label]} and $rrun): give each run its own label"
  fi
  label_run[$label]=$rrun
  label_count[$label]=$(( ${label_count[$label]:-0} + 1 ))
  spec_run+=("$run") spec_label+=("$label") spec_sampler+=("$sampler") spec_values+=("$values")
done

safe() { printf '%s' "$1" | tr -c 'A-Za-z0-9_-' '_'; } # a folder name: no '/', no '..'
csv() { # one CSV field: quoted when it holds a comma, a quote or outer spaces
  local s=$1
  if [[ $s == *[,\"]* || $s == " "* || $s == *" " ]]; then s=${s//\"/\"\"}; printf '"%s"' "$s"; else printf '%s' "$s"; fi
}
num_field() { # KEY FILE: the last number of "KEY":NUMBER in FILE's sample records
  { grep '"stage":"sample".*"nfe_mean"' "$2" || true; } | tail -1 | sed -n "s/.*\"$1\":\(-\{0,1\}[0-9][-0-9.eE+]*\).*/\1/p"
}

npoints=0
for i in "${!specs[@]}"; do IFS=, read -r -a vals <<<"${spec_values[$i]}"; npoints=$((npoints + ${#vals[@]})); done
mkdir -p "$work"
rows=() metric_names=() first_net=""
declare -A seen_metric=()
k=0
for i in "${!specs[@]}"; do
  run=${spec_run[$i]} label=${spec_label[$i]} sampler=${spec_sampler[$i]}
  series=$label
  [ "${label_count[$label]}" -eq 1 ] || series="$label ($sampler)"
  IFS=, read -r -a vals <<<"${spec_values[$i]}"
  for v in "${vals[@]}"; do
    k=$((k + 1))
    pt=$work/$(safe "$label")/${sampler}_$v
    args=(--sampler "$sampler" --n "$n")
    steps="" tol=""
    if [ "$sampler" = dopri5 ]; then args+=(sample.rtol="$v" sample.atol="$v"); tol=$v
    else args+=(--steps "$v"); steps=$v; fi
    [ -z "$seed" ] || args+=(--seed "$seed")
    [ -z "$batch" ] || args+=(--batch "$batch")
    args+=("${sample_args[@]}")
    key="run=${label_run[$label]} sample=${args[*]} eval=--n $n ${eval_args[*]}"
    what="[$k/$npoints] $series: $sampler ${steps:+steps=$steps}${tol:+rtol=atol=$tol}"
    if [ $force = 0 ] && [ -f "$pt/eval/eval.json" ] && [ "$(cat "$pt/key" 2>/dev/null)" = "$key" ]; then
      echo "fid_vs_nfe: $what: reusing $pt"
    else
      echo "fid_vs_nfe: $what: sampling $n ..."
      rm -rf -- "$pt"
      mkdir -p "$pt"
      t0=$(date +%s)
      "$bin" sample "$run" "${args[@]}" --out "$pt/sample" -q || die "$what: mfpipe sample failed (log: $pt/sample/log.txt)"
      "$bin" eval "$pt/sample" --n "$n" --out "$pt/eval" -q "${eval_args[@]}" || die "$what: mfpipe eval failed (log: $pt/eval/log.txt)"
      printf '%s\n' "$key" >"$pt/key" # last: marks the point complete
      echo "fid_vs_nfe: $what: done in $(( $(date +%s) - t0 )) s"
    fi
    m=$pt/sample/metrics.jsonl e=$pt/eval/eval.json
    nfe=$(num_field nfe_mean "$m") nfe_min=$(num_field nfe_min "$m") nfe_max=$(num_field nfe_max "$m")
    model_step=$(num_field model_step "$m") secs=$(num_field seconds "$m")
    [ -n "$nfe" ] || die "$what: no nfe_mean in the sample record of $m"
    net=$({ grep -o '"feature_net":"[^"]*"' "$e" || true; } | head -1 | sed 's/.*:"\(.*\)"/\1/')
    [ -n "$first_net" ] || first_net=$net
    # the metrics with a number (or null) as value; class_histogram's list is left out
    declare -A val=()
    fid=""
    while IFS=$'\t' read -r name value; do
      [ "$value" = null ] && value=""
      val[$name]=$value
      if [ -z "${seen_metric[$name]:-}" ]; then seen_metric[$name]=1; metric_names+=("$name"); fi
      if [ -z "$fid" ] && [[ $name == fid_* ]]; then fid=$value; fi
    done < <(grep -oE '"metric":"[^"]+","value":(-?[0-9][-0-9.eE+]*|null)' "$e" | sed 's/"metric":"\([^"]*\)","value":/\1\t/')
    row="$(csv "$run"),$(csv "$label"),$(csv "$series"),$sampler,$steps,$tol,$nfe,$nfe_min,$nfe_max,$fid,$n,$(csv "$net"),$model_step,$secs"
    # metric columns are added in order of first appearance: keep name=value pairs, lay out below
    pairs=""
    for name in "${!val[@]}"; do pairs+="$name=${val[$name]};"; done
    rows+=("$row|$pairs")
    unset val
    echo "fid_vs_nfe: $what: nfe=$nfe fid=${fid:-?}"
  done
done

# ---- the table and the chart ------------------------------------------------------------------
mkdir -p "$(dirname -- "$out")"
tmp="$out.csv.tmp.$$"
{
  printf 'run,label,series,sampler,steps,tol,nfe,nfe_min,nfe_max,fid,n,feature_net,model_step,sample_seconds'
  for name in "${metric_names[@]}"; do printf ',%s' "$name"; done
  printf '\n'
  for r in "${rows[@]}"; do
    printf '%s' "${r%%|*}"
    pairs=";${r#*|}"
    for name in "${metric_names[@]}"; do
      v=""
      if [[ $pairs == *";$name="* ]]; then v=${pairs#*;"$name"=}; v=${v%%;*}; fi
      printf ',%s' "$v"
    done
    printf '\n'
  done
} >"$tmp"
mv -f -- "$tmp" "$out.csv"
echo "fid_vs_nfe: $npoints point(s) -> $out.csv"

net_name=${first_net%%@*}
ylabel=$ycol
[ "$ycol" != fid ] || ylabel="FID (${net_name:-feature net}, N=$n)"
[ -n "$title" ] || title="$ylabel vs network evaluations per sample"
"$bin" plot "$out.csv" -o "$out.svg" --x nfe --y "$ycol" --series series --logx \
  --title "$title" --xlabel "network evaluations per sample (NFE)" --ylabel "$ylabel"
echo "fid_vs_nfe: chart -> $out.svg"
