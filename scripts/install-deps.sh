#!/usr/bin/env bash
# Installs the Debian 12 packages mfpipe needs to build, test and fetch data (only the missing ones).
# Run as root (or with sudo available). Safe to run again.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libyaml-dev libpng-dev zlib1g-dev liblua5.4-dev
      libopenblas-dev libdnnl-dev npm dataset-fashion-mnist clang libclang-rt-14-dev
      chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come with a Node.js installed outside Debian's packages: then the command is enough.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
