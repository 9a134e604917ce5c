#!/usr/bin/env bash
# Inference benchmark on random BF16 checkpoints: a ~0.65B model with DeepSeek-V3's shape
# features, and DeepSeek-V2-Lite's exact layer shapes cut to 4 layers (the full 15.7B model
# needs 31 GB in BF16, more than this 24 GB machine; bench/v2lite.sh runs it as a 16.7 GB Q8_0
# GGUF written directly). Results go to docs/results.md and docs/results-inference.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build whale bench_inference bench_qmatmul
DIR=${WHALE_BENCH_DIR:-build/bench-models}
mkdir -p "$DIR"
for cfg in v3-600m v2lite-4layer; do
  if [[ ! -f "$DIR/$cfg/model.safetensors" ]]; then
    ./build/whale init --config "bench/configs/$cfg.json" --seed 1 --dtype bf16 --out "$DIR/$cfg"
  fi
  echo "== $cfg"
  ./build/bench_inference --model "$DIR/$cfg" --prompt 64,512 --decode 32 \
    --speculative
done
# Quantised kernels (Q8_0, Q4_0, Q4_K, Q6_K on every code path the CPU has) against the read
# bandwidth measured in the same run.
echo "== quantised matvec/matmul"
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} ./build/bench_qmatmul
# MTP speculative decoding on a trained checkpoint with an MTP head (scripts/run.sh's main job
# writes one to out/run): acceptance rate and speed against plain greedy decoding.
if [[ -d ${WHALE_TRAINED:-out/run} ]]; then
  echo "== speculative decoding on ${WHALE_TRAINED:-out/run}"
  ./build/bench_inference --model "${WHALE_TRAINED:-out/run}" \
    --prompt 64 --decode 128 --speculative
fi
