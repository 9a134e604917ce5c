#!/usr/bin/env bash
# Installs the Debian packages whale needs to build, test and benchmark.
# Idempotent: packages already present are skipped; apt runs only when one is missing.
set -euo pipefail
BUILD_PKGS=(build-essential cmake ninja-build pkg-config clang libomp-dev
  libopenblas-openmp-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libpcre2-dev
  libutf8proc-dev libgtest-dev libgmock-dev libbenchmark-dev libdnnl-dev)
TEST_PKGS=(python3-torch python3-numpy nodejs npm libclang-rt-14-dev chromium)
want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" == "--test" ]]; then want+=("${TEST_PKGS[@]}"); fi
missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    # node/npm may come from outside Debian's packages; accept them if on PATH
    if [[ "$p" == nodejs && -x "$(command -v node)" ]] || [[ "$p" == npm && -x "$(command -v npm)" ]]; then continue; fi
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
