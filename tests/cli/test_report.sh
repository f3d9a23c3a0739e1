# test_report.sh - report.html (docs/report.md) of a tiny synthetic run and sweep: (1) the page's
# structure (sections, images embedded as data: URIs that decode to the run's PNGs, inline SVG charts,
# no network references, text from files escaped, the floor computed once and reused, "floor: not
# computed" with the command where the data set is missing, FID against NFE from sample/eval folders
# and a fid_vs_nfe CSV, failed and interrupted runs, MFPIPE_REPORT=0); (2) a real browser (Debian's
# chromium, headless): a phone-sized screenshot, no console messages, the images decoded at their
# sizes and the charts present in the DOM after the page's self-check ran, no horizontal overflow.
# Without chromium the browser part is skipped with a message (it fails instead when CI or
# MFPIPE_REQUIRE_BROWSER=1 is set).
source "$(dirname "$0")/lib.sh"
cd "$TMP"
make_mnist_dir "$TMP/mn" 64 16
cat >exp.yaml <<Y
name: rp
description: "<script>alert(1)</script> & <img src=x onerror=alert(2)> 'q' \"dq\""
seed: 1
threads: 2
stages: [data, train, ema, sample, eval]
data: {dataset: mnist, root: $TMP/mn, verify: false}
model: {channels: 4, channel_mult: [1, 2], res_blocks: 1, groups: 2, time_embed: {dim: 8, frequencies: 2}}
train: {steps: 6, batch: 8, log_every: 1, sample_every: 2, sample_n: 4, final_grid: 0}
sample: {n: 10, steps: 2, grid: 10, nrow: 5, trajectory: 4, trajectory_n: 2}
eval: {n: 10}
Y
R=$TMP/run
H=$R/report.html
expect_ok run "$MFPIPE" run exp.yaml --out "$R"
check "run wrote report.html" test -s "$H"
check "floor computed at the end of the run" grep -q "computing the floor (10 training images" "$TMP/err"

# ---- (1) structure ----------------------------------------------------------------------------
count() { grep -o -- "$2" "$1" | wc -l | tr -d ' '; }
for s in summary curves samples final eval nfe config manifest; do
  check "section $s" grep -q "<section id=\"$s\">" "$H"
done
check "doctype, charset, viewport" grep -q '<meta name="viewport" content="width=device-width, initial-scale=1">' "$H"
check "5 PNGs embedded (2 grids over training, final grid, trajectory, nearest training images)" test "$(count "$H" 'src="data:image/png;base64,')" = 5
check "2 inline SVG charts (loss, learning rate)" test "$(count "$H" '<svg ')" = 2
check "strip captions name the steps" grep -q '<figcaption>step 2</figcaption>.*<figcaption>step 4</figcaption>\|<figcaption>step 4</figcaption>' "$H"
check "no network references" test "$(grep -c -i 'http://\|https://\|//fonts\|@import' "$H")" = 0
check "only src=data: images" test "$(grep -o ' src="[^d][^"]*"' "$H" | wc -l)" = 0
check "one script element (the self-check)" test "$(count "$H" '<script')" = 1
check "description escaped" grep -q '<p class="description">&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(2)&gt; &apos;q&apos; &quot;dq&quot;</p>' "$H"
check "no raw injected tag anywhere" test "$(grep -c '<img src=x\|<script>alert' "$H")" = 0
first_png() { # the first embedded PNG, decoded
  grep -o 'src="data:image/png;base64,[^"]*"' "$1" | head -1 | sed 's/^src="data:image\/png;base64,//; s/"$//' | base64 -d
}
first_png "$H" >first.png
check "the first image decodes to samples/step_00000002.png" cmp -s first.png "$R/samples/step_00000002.png"
check "image sizes as attributes" grep -q '<img alt="final grid" width="152" height="62"' "$H"
check "loss chart titled" grep -q '<title>training loss</title>' "$H"
check "config.yaml shown" grep -q 'objective: fm' "$H"
check "manifest shown" grep -q '<th>command_line</th>' "$H"
check "status finished" grep -q 'id="status">finished<' "$H"
check "eval table" grep -q '<tr><td>fid_lenet_v1</td><td class="num">[0-9.e+-]*</td><td class="num">10</td><td class="num">[0-9.e+-]*</td></tr>' "$H"
floor=$(ls "$TMP"/data/cache/floor_mnist_n10_lenet_v1_*.json 2>/dev/null | head -1)
check "floor cached under data/cache" test -s "$floor"
check "floor: N=10 training images" grep -q '"reference_train_n":10' "$floor"
check "floor named on the page" grep -q 'class="floor">floor: data/cache/floor_mnist_n10_lenet_v1_' "$H"
check "no temporary files left" test -z "$(ls -A "$R" | grep -v -x -E 'checkpoints|config.yaml|eval|eval.json|experiment.yaml|lock|log.txt|manifest.json|metrics.jsonl|outputs|overrides.txt|report.html|samples|status.json|tb|resumes.jsonl')"
check "no floor work folders left" test -z "$(ls -A "$TMP/data/cache" | grep -v -E '^(fid_ref_|floor_.*\.json$)')"

# the floor is reused: no second computation, the cache file untouched
t0=$(stat -c %Y.%y "$floor")
expect_ok report-again "$MFPIPE" report "$R"
check "report prints the page's path" grep -q -x "$R/report.html" "$TMP/out"
check "floor reused, not recomputed" test "$(grep -c 'computing the floor' "$TMP/err")" = 0
check "floor file untouched" test "$(stat -c %Y.%y "$floor")" = "$t0"
check "floor still on the page" grep -q 'class="floor">floor: data/cache/' "$H"
# fast without the floor
s0=$(date +%s.%N)
expect_ok no-floor "$MFPIPE" report "$R" --no-floor -q
s1=$(date +%s.%N)
el=$(awk -v a="$s0" -v b="$s1" 'BEGIN { printf "%.3f", b - a }')
echo "test_report: report of the run in $el s"
check "report in under 2 s (took $el s)" awk -v t="$el" 'BEGIN { exit !(t < 2) }'

# the data set not there: "floor: not computed" with the command
cp -r "$R" "$TMP/nodata"
sed -i "s#root: .*/mn\$#root: \"$TMP/nowhere\"#" "$TMP/nodata/config.yaml"
expect_ok report-nodata "$MFPIPE" report "$TMP/nodata"
check "nodata: floor not computed" grep -q 'class="note floor">floor: not computed &mdash; the data set is not available' "$TMP/nodata/report.html"
check "nodata: the command to compute it" grep -q "to compute it (with the data set in place): <code>mfpipe report $TMP/nodata</code>, which runs <code>mfpipe run $TMP/nodata/config.yaml stages=\[data,eval\] eval.reference=true eval.n=10</code>" "$TMP/nodata/report.html"
cp -r "$R" "$TMP/nocache"
sed -i "s#cache: .*#cache: \"$TMP/othercache\"#" "$TMP/nocache/config.yaml"
expect_ok report-cached-only "$MFPIPE" report "$TMP/nocache" --no-floor
check "--no-floor: cached floors only" grep -q 'floor: not computed &mdash; not computed (cached floors only)' "$TMP/nocache/report.html"
check "--no-floor: nothing computed" test ! -e "$TMP/othercache"

# FID against NFE: RUN/sample/<stamp>/ folders with their evals, and a fid_vs_nfe CSV
check "no FID/NFE chart yet" grep -q 'id="nfe">.*\|not computed: give the run samples' "$H"
for k in 1 4; do
  expect_ok "sample-$k" "$MFPIPE" sample "$R" --steps $k --n 10 -q --out "$R/sample/s$k"
  expect_ok "eval-$k" "$MFPIPE" eval "$R/sample/s$k" -q
done
expect_ok report-nfe "$MFPIPE" report "$R" -q
check "FID/NFE chart from sample/eval folders (3 SVGs)" test "$(count "$H" '<svg ')" = 3
check "FID/NFE series named by sampler and N" grep -q '>heun (N=10)<' "$H"
printf 'series,nfe,fid\nmf <b>1</b>,1,50\nmf <b>1</b>,2,40\n' >"$R/fid_vs_nfe.csv"
expect_ok report-csv "$MFPIPE" report "$R" -q
check "CSV series in the chart, escaped" grep -q '>mf &lt;b&gt;1&lt;/b&gt;<' "$H"
rm "$R/fid_vs_nfe.csv"
expect_ok report-final "$MFPIPE" report "$R" -q

# a failed run: the report is written, the run's error kept
sed 's/^eval: .*/eval: {n: 10, samples: nowhere.idx}/; s/^name: rp/name: rpfail/' exp.yaml >fail.yaml
expect_fail failed-run "nowhere.idx" "$MFPIPE" run -q fail.yaml --out "$TMP/failed"
check "failed run: report written" test -s "$TMP/failed/report.html"
check "failed run: status failed" grep -q 'id="status">failed<' "$TMP/failed/report.html"
check "failed run: the error on the page" grep -q '<th>error</th><td class="wrap">.*nowhere.idx' "$TMP/failed/report.html"
# an interrupted run
sed 's/steps: 6, batch: 8, log_every: 1/steps: 100000, batch: 8, log_every: 1/; s/^name: rp/name: rpint/' exp.yaml >int.yaml
"$MFPIPE" run -q int.yaml --out "$TMP/int" >/dev/null 2>"$TMP/int.err" &
pid=$!
for i in $(seq 1 200); do grep -q '"stage":"train","time":[0-9.]*,"step":3' "$TMP/int/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
kill -INT $pid
wait $pid
check "interrupted run exits 130" test $? = 130
check "interrupted run: report written" test -s "$TMP/int/report.html"
check "interrupted run: status interrupted" grep -q 'id="status">interrupted<' "$TMP/int/report.html"
# MFPIPE_REPORT=0: none
MFPIPE_REPORT=0 expect_ok no-report "$MFPIPE" run -q exp.yaml --out "$TMP/norep"
check "MFPIPE_REPORT=0: no report.html" test ! -e "$TMP/norep/report.html"
# command line
expect_fail not-a-run "not a run folder" "$MFPIPE" report "$TMP/mn"
expect_fail missing "report: $TMP/absent" "$MFPIPE" report "$TMP/absent"
"$MFPIPE" report --bogus >/dev/null 2>&1
check "bad option: exit 2" test $? = 2
expect_ok help "$MFPIPE" help report
check "help text" grep -q 'usage: mfpipe report RESULTS_DIR' "$TMP/out"

# a sweep: summary table, plot, each point's grid linked to its report
expect_ok sweep "$MFPIPE" run exp.yaml -m train.steps=2,4 -q
S=$(ls -d "$TMP"/results/rp_multirun/2* | head -1)
SH=$S/report.html
check "sweep: report.html" test -s "$SH"
for s in sweep summary plots points; do
  check "sweep: section $s" grep -q "<section id=\"$s\">" "$SH"
done
check "sweep: summary table with both points" test "$(grep -c '<tr><td class="num">[01]</td><td class="num">[24]</td><td>finished</td>' "$SH")" = 2
check "sweep: 2 point grids embedded" test "$(count "$SH" 'src="data:image/png;base64,')" = 2
check "sweep: the plot embedded" test "$(count "$SH" 'src="data:image/svg+xml;base64,')" = 1
check "sweep: points link their reports" grep -q 'href="0/report.html">report</a>.*\|href="0/report.html"' "$SH"
check "sweep: point reports exist" test -s "$S/0/report.html" -a -s "$S/1/report.html"
check "sweep: no network references" test "$(grep -c -i 'http://\|https://' "$SH")" = 0

# ---- (2) a real browser -----------------------------------------------------------------------
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  if [ -n "${CI:-}" ] || [ "${MFPIPE_REQUIRE_BROWSER:-0}" = 1 ]; then
    bad "chromium not installed (scripts/install-deps.sh installs it); the browser checks must run on CI"
  else
    echo "test_report: browser checks skipped: chromium not installed (apt-get install chromium)" >&2
  fi
else
  export HOME=$TMP XDG_CONFIG_HOME=$TMP/xdg XDG_CACHE_HOME=$TMP/xdg
  chrome() { timeout 90 "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
    --disable-extensions --user-data-dir="$TMP/chrome" "$@"; }
  png_size() { od -An -tu1 -j16 -N8 "$1" | awk '{printf "%d %d", $1*16777216+$2*65536+$3*256+$4, $5*16777216+$6*65536+$7*256+$8}'; }
  attr() { grep -o "<body[^>]*>" "$1" | grep -o " $2=\"[^\"]*\"" | sed 's/.*="\(.*\)"/\1/'; }
  for page in "$H" "$SH"; do
    tag=$([ "$page" = "$H" ] && echo run || echo sweep)
    chrome --hide-scrollbars --screenshot="$TMP/shot_$tag.png" --window-size=412,915 "file://$page" >/dev/null 2>"$TMP/shot_$tag.err"
    check "$tag: screenshot written" test -s "$TMP/shot_$tag.png"
    check "$tag: screenshot is a PNG" test "$(od -An -tx1 -N8 "$TMP/shot_$tag.png" | tr -d ' \n')" = 89504e470d0a1a0a
    check "$tag: screenshot is 412x915" test "$(png_size "$TMP/shot_$tag.png")" = "412 915"
    check "$tag: screenshot not blank (> 5 kB)" test "$(stat -c %s "$TMP/shot_$tag.png")" -gt 5000
    chrome --enable-logging=stderr --v=1 --window-size=412,915 --dump-dom "file://$page" >"$TMP/dom_$tag.html" 2>"$TMP/dom_$tag.err"
    check "$tag: DOM dumped" grep -q '</html>' "$TMP/dom_$tag.html"
    if grep -q ':CONSOLE' "$TMP/dom_$tag.err"; then bad "$tag: console messages: $(grep ':CONSOLE' "$TMP/dom_$tag.err" | head -3)"; else ok; fi
    check "$tag: self-check ran" test "$(attr "$TMP/dom_$tag.html" data-checked)" = 1
    check "$tag: no broken images" test "$(attr "$TMP/dom_$tag.html" data-broken)" = 0
    sw=$(attr "$TMP/dom_$tag.html" data-scroll-width) vw=$(attr "$TMP/dom_$tag.html" data-view-width)
    check "$tag: no horizontal overflow (page $sw px, window $vw px)" test "${sw:-9999}" -le "${vw:-0}"
    # every image decoded at the size its attributes give (the plot, an SVG, has none: > 0 then)
    grep -o '<img [^>]*>' "$TMP/dom_$tag.html" | sed 's/ src="[^"]*"//' >"$TMP/imgs_$tag"
    bad_sizes=$(awk '{ w = h = nw = nh = ""; for (i = 1; i <= NF; i++) { split($i, kv, "=\""); v = kv[2]; sub(/".*/, "", v)
        if (kv[1] == "width") w = v; if (kv[1] == "height") h = v; if (kv[1] == "data-nw") nw = v; if (kv[1] == "data-nh") nh = v }
        if (nw == "" || nw + 0 <= 0 || nh + 0 <= 0 || (w != "" && (w != nw || h != nh))) print }' "$TMP/imgs_$tag")
    check "$tag: images decoded at their sizes: ${bad_sizes:-ok}" test -z "$bad_sizes"
  done
  check "run: 5 images in the DOM" test "$(attr "$TMP/dom_run.html" data-images)" = 5
  check "run: 3 charts in the DOM" test "$(attr "$TMP/dom_run.html" data-svgs)" = 3
  check "run: strip images 62x62" test "$(grep -c 'alt="step [24]" width="62" height="62"[^>]*data-nw="62" data-nh="62"' "$TMP/imgs_run")" = 2
  check "sweep: 3 images in the DOM (2 grids, 1 plot)" test "$(attr "$TMP/dom_sweep.html" data-images)" = 3
  check "run: the escaped description is text in the DOM" grep -q '<p class="description">&lt;script&gt;alert(1)&lt;/script&gt;' "$TMP/dom_run.html"
fi
finish
