#!/usr/bin/env bash
# The full DeepSeek-V2-Lite shape (27 layers, 64 routed + 2 shared experts, top-6, no q LoRA,
# 15.7B parameters) as a random Q8_0 GGUF of ~16.6 GB, and whale's prefill / decode on it,
# memory-mapped. The file is written straight into the GGUF by `whale init --gguf q8_0`, one
# tensor at a time (never a 31 GB BF16 checkpoint), then read once so that it sits in the page
# cache (decode is memory-bound only if it does; fincore shows how much is cached), then
# bench_inference repacks the Q8_0 weights for the VNNI kernels where the CPU has them (16.4 GB
# of anonymous memory; WHALE_REPACK=0 reads them as mapped instead) and measures prefill 64/512,
# batch-1 decode against the read bandwidth it measures in the same run, and peak RSS. The load average before and after is printed: the
# figures are only as good as the machine was quiet.
#   bash bench/v2lite.sh                 build (build/), generate, bench, delete the file
#   WHALE_BUILD=DIR                      use an existing build directory (skips setup and build)
#   WHALE_V2LITE_DIR=DIR                 where the GGUF goes (default out/v2lite, gitignored)
#   WHALE_V2LITE_KEEP=1                  keep the 16.6 GB file afterwards (default: delete it)
#   WHALE_V2LITE_DECODE=N                tokens to decode (default 32)
#   WHALE_V2LITE_ROUNDS=N                decode rounds set against the bandwidth beside them (default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${WHALE_BUILD:-} ]]; then
  bash scripts/setup.sh
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C build whale bench_inference
fi
BUILD=${WHALE_BUILD:-build}
DIR=${WHALE_V2LITE_DIR:-out/v2lite}
FILE=$DIR/deepseek-v2-lite-random-q8_0.gguf
mkdir -p "$DIR"
if [[ ! -f $FILE ]]; then
  echo "== writing $FILE"
  /usr/bin/time -f "wrote in %es, peak RSS %M KiB" \
    "$BUILD/whale" init --config tests/model/configs/deepseek-v2-lite.json --seed 1 --std 0.02 --gguf q8_0 --out "$FILE"
fi
size=$(stat -c %s "$FILE")
avail=$(awk '/MemAvailable/ {printf "%.0f", $2 * 1024}' /proc/meminfo)
echo "== file $size bytes; MemAvailable $avail bytes"
if ((avail < size + (2 << 30))); then
  echo "warning: less free memory than the file + 2 GiB: it cannot stay in the page cache, decode will read from disk"
fi
echo "== warming the page cache (one sequential read)"
/usr/bin/time -f "read in %es" dd if="$FILE" of=/dev/null bs=16M status=none
fincore "$FILE" || true
echo "== load before: $(cat /proc/loadavg)"
# OpenMP waits as `whale` does (a ~100 us spin, then sleep; README); --roofline-rounds: decode rounds, each set
# against a bandwidth probe taken right after it (the machine's bandwidth drifts); --phases:
# where a decode step's time goes.
"$BUILD/bench_inference" --model "$FILE" --prompt 64,512 \
  --decode "${WHALE_V2LITE_DECODE:-32}" --phases --roofline-rounds "${WHALE_V2LITE_ROUNDS:-6}"
echo "== load after: $(cat /proc/loadavg)"
fincore "$FILE" || true
if [[ -z ${WHALE_V2LITE_KEEP:-} ]]; then
  rm -f "$FILE"
  echo "== deleted $FILE"
fi
