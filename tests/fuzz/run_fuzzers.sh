#!/usr/bin/env bash
# Runs each libFuzzer target for SECONDS on a scratch copy of its seed corpus (so runs never
# grow the repository), as many side by side as there are cores, and fails if any target finds
# a crash, leak, timeout or sanitizer report.
# Reproducers are kept in BUILD_DIR/fuzz-artifacts/. Needs clang with its libFuzzer and
# sanitizer runtimes (Debian 12: clang plus libclang-rt-14-dev).
#
#   CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DWHALE_FUZZ=ON -DWHALE_TESTS=OFF \
#       -DWHALE_BENCH=OFF -DWHALE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
#   ninja -C build-fuzz fuzz_safetensors fuzz_config
#   tests/fuzz/run_fuzzers.sh build-fuzz 60
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/whale-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"

status=0
jobs_max=$(nproc 2>/dev/null || echo 1)
names=()
# start NAME DICT SEED_FILE...: one target in the background on its own corpus copy, as many at
# once as there are cores (each keeps a core, so SECONDS is that target's CPU time).
start() {
  local name=$1 dict=$2
  shift 2
  local exe="$build/$name"
  if [[ ! -x "$exe" ]]; then
    echo "$name: $exe not built (configure with -DWHALE_FUZZ=ON and clang)" >&2
    status=1
    return
  fi
  while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n || true; done
  local corpus="$work/$name"
  mkdir -p "$corpus"
  cp "$@" "$corpus/"
  echo "== $name: ${seconds}s on $(ls "$corpus" | wc -l) seeds"
  names+=("$name")
  (
    rc=0
    TMPDIR="$work" "$exe" "$corpus" -dict="$dict" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/$name-" -print_final_stats=1 >"$work/$name.log" 2>&1 || rc=$?
    echo $rc >"$work/$name.rc"
  ) &
}

# report NAME: its stats, and its log tail if it failed.
report() {
  local name=$1 rc
  rc=$(cat "$work/$name.rc" 2>/dev/null || echo 1)
  echo "== $name"
  grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)" "$work/$name.log" || true
  grep -E "^#[0-9]+ +DONE" "$work/$name.log" || true
  if [[ $rc -ne 0 ]]; then
    echo "$name: FAILED (exit $rc); log tail:" >&2
    tail -n 60 "$work/$name.log" >&2
    cp "$work/$name.log" "$artifacts/$name.log"
    status=1
  else
    echo "$name: no crashes"
  fi
}

start fuzz_safetensors "$here/safetensors.dict" "$here"/corpus_safetensors/*
start fuzz_gguf "$here/gguf.dict" "$here"/corpus_gguf/*
start fuzz_config "$here/config.dict" "$root"/tests/model/configs/*.json "$root"/configs/*.json \
  "$root"/tests/reference/configs/*.json
start fuzz_request "$here/request.dict" "$here"/corpus_request/*
start fuzz_rewards "$here/rewards.dict" "$here"/corpus_rewards/*
wait
for name in "${names[@]}"; do report "$name"; done
exit $status
