# test_plot.sh - `mfpipe plot`: a CSV table to an SVG chart (series, log axes, quoting, comments,
# missing values), well-formed XML (xmllint where installed), and refusals naming the file, line
# and column.
source "$(dirname "$0")/lib.sh"
cd "$TMP"
cat >t.csv <<'CSV'
# FID against evaluations per sample
run,label,sampler,steps,nfe,fid
r1,fm,euler,4,4,120.5
r1,fm,euler,16,16,60
r1,fm,euler,8,8,80
r1,"fm <&> ""heun""",heun,4,7,90
r1,"fm <&> ""heun""",heun,8,15,
r1,"fm <&> ""heun""",heun,16,31,55

r1, dopri5 ,dopri5,-,40.5,50
CSV
expect_ok plot "$MFPIPE" plot t.csv -o img/fid.svg --x nfe --y fid --series label --logx --title 'FID vs NFE <N=64>'
check "SVG written (output folder created)" test -s img/fid.svg
check "XML declaration and one svg element" test "$(head -c 38 img/fid.svg)" = '<?xml version="1.0" encoding="UTF-8"?>'
check "no temporary file left" test "$(ls img)" = fid.svg
check "title escaped" contains img/fid.svg '<title>FID vs NFE &lt;N=64&gt;</title>'
check "axis labels default to the column names" contains img/fid.svg '>nfe</text>'
check "a series per label, quoted name escaped" contains img/fid.svg 'data-series="fm &lt;&amp;&gt; &quot;heun&quot;"'
check "spaces around a field dropped" contains img/fid.svg 'data-series="dopri5"'
check "three series" test "$(grep -c '<g class="series"' img/fid.svg)" = 3
check "points as tooltips" contains img/fid.svg '<title>fm: x=16, y=60</title>'
check "fractional x" contains img/fid.svg '<title>dopri5: x=40.5, y=50</title>'
check "missing fid not drawn" test "$(grep -c '<title>fm &lt;&amp;&gt; &quot;heun&quot;: x=' img/fid.svg)" = 2
# fm: one line of 3 points (sorted by x); heun: broken by the missing value, so no line of 2+ points
check "lines: fm joined, heun broken" test "$(grep -c '<polyline' img/fid.svg)" = 1
check "fm joined in order of x" grep -q 'points="[0-9.]*,[0-9.]* [0-9.]*,[0-9.]* [0-9.]*,[0-9.]*"' img/fid.svg
check "log x axis: 1-2-5 labels" contains img/fid.svg '>20</text>'
if command -v xmllint >/dev/null; then
  check "xmllint: well-formed" xmllint --noout img/fid.svg
else
  echo "note: xmllint not installed; XML checked structurally by test_svg only"
fi

# one series, file order, log-log, options in --opt=value form, width and labels
expect_ok plot-plain "$MFPIPE" plot t.csv --out=plain.svg --x=steps --y=nfe --logy --no-sort --xlabel 'steps per sample' --width 900 --height 300
check "size" contains plain.svg 'width="900" height="300"'
check "x label" contains plain.svg '>steps per sample</text>'
check "no legend without series" bash -c '! grep -q "class=\"legend\"" plain.svg'
check "unnamed points" contains plain.svg '<title>x=16, y=16</title>'
check "help" bash -c '"$0" plot --help | grep -q "usage: mfpipe plot"' "$MFPIPE"
check "help via mfpipe help" bash -c '"$0" help plot | grep -q "usage: mfpipe plot"' "$MFPIPE"
check "listed in the usage" bash -c '"$0" --help | grep -q "  plot TABLE.csv"' "$MFPIPE"

printf 'x,y\n1,2\n3,abc\n' >bad.csv
expect_fail bad-number "bad.csv:3:3: column 'y': 'abc' is not a number" "$MFPIPE" plot bad.csv -o b.svg --x x --y y
check "nothing written on error" test ! -e b.svg
printf 'x,y\n1,2\n3\n' >short.csv
expect_fail short-row "short.csv:3:2: 1 field, but the header (line 1) has 2" "$MFPIPE" plot short.csv -o b.svg --x x --y y
printf 'x,y\n1,"2\n' >quote.csv
expect_fail open-quote "quote.csv:2:3: the quoted field has no closing quote" "$MFPIPE" plot quote.csv -o b.svg --x x --y y
expect_fail no-column "t.csv: no column 'fdi' (the header has: run, label, sampler, steps, nfe, fid)" "$MFPIPE" plot t.csv -o b.svg --x nfe --y fdi
expect_fail no-series-column "no column 'lbl'" "$MFPIPE" plot t.csv -o b.svg --x nfe --y fid --series lbl
expect_fail missing-file "nope.csv" "$MFPIPE" plot nope.csv -o b.svg --x x --y y
expect_fail no-out "no output file given" "$MFPIPE" plot t.csv --x nfe --y fid
expect_fail no-y "no y column given" "$MFPIPE" plot t.csv -o b.svg --x nfe
expect_fail unknown-option "unknown option '--logz'" "$MFPIPE" plot t.csv -o b.svg --x nfe --y fid --logz
expect_fail bad-width "--width wants pixels" "$MFPIPE" plot t.csv -o b.svg --x nfe --y fid --width 12
expect_fail unwritable "b.svg" "$MFPIPE" plot t.csv -o /proc/no/b.svg --x nfe --y fid
check "usage error exit status 2" bash -c '"$0" plot t.csv --x nfe --y fid 2>/dev/null; test $? = 2' "$MFPIPE"
check "input error exit status 1" bash -c '"$0" plot bad.csv -o b.svg --x x --y y 2>/dev/null; test $? = 1' "$MFPIPE"
# values <= 0 on a log axis: a warning, the rest drawn
printf 'x,y\n0,1\n1,2\n10,3\n' >zero.csv
expect_ok log-zero "$MFPIPE" plot zero.csv -o z.svg --x x --y y --logx
check "warned about the row left out" grep -q 'value <= 0 on a log axis not drawn' "$TMP/err"
check "two points drawn" test "$(grep -c '<title>x=' z.svg)" = 2
# scripts/fid_vs_nfe.sh end to end on a tiny run (synthetic data; eval's cache kept in $TMP)
make_mnist_dir "$TMP/mn" 64 16
cat >exp.yaml <<Y
name: fvn
seed: 1
threads: 2
stages: [data, train, ema]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 4, channel_mult: [1, 2], res_blocks: 1, groups: 2, time_embed: {dim: 8, frequencies: 2}}
train: {steps: 4, batch: 8, log_every: 2, final_grid: 0}
Y
expect_ok tiny-run "$MFPIPE" run -q exp.yaml --out "$TMP/run"
FVN=(bash "$SRC/scripts/fid_vs_nfe.sh" --work "$TMP/work" --n 8 --eval-arg eval.cache="\"$TMP/cache\"" --sample-arg sample.grid=0)
expect_ok fid-vs-nfe "${FVN[@]}" --out "$TMP/fig/fvn" "$TMP/run:tiny:euler:1,2" "$TMP/run:a,b:dopri5:1e-1"
csvf=$TMP/fig/fvn.csv
check "CSV and SVG written" test -s "$csvf" -a -s "$TMP/fig/fvn.svg"
check "CSV header" grep -q '^run,label,series,sampler,steps,tol,nfe,nfe_min,nfe_max,fid,n,feature_net,model_step,sample_seconds,fid_lenet_v1,' "$csvf"
check "one row per point" test "$(wc -l <"$csvf")" = 4
check "euler: steps and NFE" grep -q "^$TMP/run,tiny,tiny,euler,2,,2,2,2,[0-9.]*,8,lenet_v1@" "$csvf"
check "dopri5: the tolerance, a measured NFE, quoted label" grep -q "^$TMP/run,\"a,b\",\"a,b\",dopri5,,1e-1,[0-9.]*,[0-9]*,[0-9]*,[0-9.]*,8," "$csvf"
check "other metrics as columns" grep -q ',classifier_score_lenet_v1,mean_max_confidence_lenet_v1,' "$csvf"
check "chart: two series, log x" test "$(grep -c '<g class="series"' "$TMP/fig/fvn.svg")" = 2
check "chart: FID label names the network and N" contains "$TMP/fig/fvn.svg" 'FID (lenet_v1, N=8)'
expect_ok fid-vs-nfe-again "${FVN[@]}" --out "$TMP/fig/fvn2" "$TMP/run:tiny:euler:1,2,3"
check "finished points reused" test "$(grep -c ': reusing ' "$TMP/out")" = 2
check "new point computed" grep -q 'euler steps=3: sampling 8' "$TMP/out"
check "same numbers for reused points" test "$(sed -n 2,3p "$csvf" | cut -d, -f1-10)" = "$(grep -v '^run' "$TMP/fig/fvn2.csv" | sed -n 1,2p | cut -d, -f1-10)"
check "script usage error" bash -c '"$@" 2>/dev/null; test $? = 2' _ "${FVN[@]}" --out "$TMP/x" "$TMP/run:tiny:euler:1e-3"
check "dopri5 takes tolerances" bash -c '"$@" 2>&1 | grep -q "dopri5 takes tolerances"' _ "${FVN[@]}" --out "$TMP/x" "$TMP/run:d:dopri5:fast"
check "not a run folder" bash -c '"$@" 2>&1 | grep -q "is not a run folder"' _ "${FVN[@]}" --out "$TMP/x" "$TMP/mn:d:euler:2"
mkdir -p "$TMP/run2" && cp "$TMP/run/config.yaml" "$TMP/run2/"
check "a label for one run only" bash -c '"$@" 2>&1 | grep -q "label .tiny. names two runs"' _ "${FVN[@]}" --out "$TMP/x" "$TMP/run:tiny:euler:2" "$TMP/run2:tiny:euler:2"
finish
