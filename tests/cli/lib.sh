# lib.sh - helpers for the command-line tests (sourced). Each test script calls `finish` at the end,
# which prints "N passed, N failed" and exits non-zero on any failure.
set -u
MFPIPE=${MFPIPE:?set MFPIPE to the mfpipe binary}
SRC=${MFPIPE_SOURCE_DIR:?set MFPIPE_SOURCE_DIR}
T_PASS=0
T_FAIL=0
TMP=$(mktemp -d "${TMPDIR:-/tmp}/mfpipe-cli-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export MFPIPE_NO_FETCH=1   # tests never touch the network
export MFPIPE_PROGRESS_SECONDS=0

ok()   { T_PASS=$((T_PASS + 1)); }
bad()  { T_FAIL=$((T_FAIL + 1)); echo "FAIL: $*" >&2; }
check() { # description, then a command that must succeed
  local d=$1; shift
  if "$@"; then ok; else bad "$d"; fi
}

# expect_ok NAME CMD...: exit 0
expect_ok() {
  local name=$1; shift
  if "$@" >"$TMP/out" 2>"$TMP/err"; then ok; else bad "$name: exit $?: $(tail -3 "$TMP/err")"; fi
}

# expect_fail NAME SUBSTRING CMD...: non-zero exit, exactly one "mfpipe: error:" line on stderr that
# contains SUBSTRING.
expect_fail() {
  local name=$1 sub=$2; shift 2
  if "$@" >"$TMP/out" 2>"$TMP/err"; then bad "$name: expected failure, got exit 0"; return; fi
  local n
  n=$(grep -c '^mfpipe: error:' "$TMP/err" || true)
  if [ "$n" != 1 ]; then bad "$name: expected one error line, got $n: $(cat "$TMP/err")"; return; fi
  if grep -q -F -- "$sub" "$TMP/err"; then ok; else bad "$name: error lacks '$sub': $(cat "$TMP/err")"; fi
}

# contains FILE SUBSTRING
contains() { grep -q -F -- "$2" "$1"; }

be32() { # 32-bit big-endian bytes of $1
  printf "\\x$(printf %02x $((($1 >> 24) & 255)))\\x$(printf %02x $((($1 >> 16) & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x$(printf %02x $(($1 & 255)))"
}

# make_idx_images PATH N H W: u8 images with deterministic content
make_idx_images() {
  { printf '\x00\x00\x08\x03'; be32 "$2"; be32 "$3"; be32 "$4"
    head -c $(($2 * $3 * $4)) /dev/zero | tr '\0' '\200'; } >"$1"
}
# make_idx_labels PATH N: labels 0..9 repeating
make_idx_labels() {
  { printf '\x00\x00\x08\x01'; be32 "$2"
    local i; for ((i = 0; i < $2; i++)); do printf "\\x0$((i % 10))"; done; } >"$1"
}
# make_mnist_dir DIR NTRAIN NTEST: the four MNIST files (synthetic; use verify: false)
make_mnist_dir() {
  mkdir -p "$1"
  make_idx_images "$1/train-images-idx3-ubyte" "$2" 28 28
  make_idx_labels "$1/train-labels-idx1-ubyte" "$2"
  make_idx_images "$1/t10k-images-idx3-ubyte" "$3" 28 28
  make_idx_labels "$1/t10k-labels-idx1-ubyte" "$3"
}

finish() {
  echo "$(basename "$0" .sh): $T_PASS passed, $T_FAIL failed"
  [ "$T_FAIL" -eq 0 ]
}
