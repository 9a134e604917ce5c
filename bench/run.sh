#!/usr/bin/env bash
# Inference benchmark on random BF16 checkpoints: a ~0.65B model with DeepSeek-V3's shape
# features, and DeepSeek-V2-Lite's exact layer shapes cut to 4 layers (the full 15.7B model
# needs 31 GB in BF16, more than this 24 GB machine). Results go to docs/results.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build whale bench_inference
DIR=${WHALE_BENCH_DIR:-build/bench-models}
mkdir -p "$DIR"
for cfg in v3-600m v2lite-4layer; do
  if [[ ! -f "$DIR/$cfg/model.safetensors" ]]; then
    ./build/whale init --config "bench/configs/$cfg.json" --seed 1 --dtype bf16 --out "$DIR/$cfg"
  fi
  echo "== $cfg"
  OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} ./build/bench_inference --model "$DIR/$cfg" --prompt 128 --decode 32
done
