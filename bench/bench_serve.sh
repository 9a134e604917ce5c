#!/usr/bin/env bash
# Serving benchmark (bench/bench_serve.cpp) on the ~0.6B V3-shaped bench checkpoint (random BF16
# weights, an 8192-id tokenizer trained on data/corpus/emma.txt: the config's 32768-id vocabulary
# cannot hold DeepSeek-V3's own 129280 ids): aggregate output tokens/s at 1, 4 and 16 concurrent
# streams and time to first token. Continuous batching should lift 16 streams to >= 4x one.
# ROUNDS (default 3) sweeps run in turn and the median per level is reported: on a shared
# machine the load drifts between levels. bench_serve_step gives the decode step alone.
#   bench/bench_serve.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DWHALE_BENCH=ON >/dev/null
ninja -C "$BUILD" whale bench_serve
DIR=${WHALE_BENCH_DIR:-$BUILD/bench-models}
MODEL=$DIR/v3-600m-tok
if [[ ! -f "$MODEL/model.safetensors" ]]; then
  "./$BUILD/whale" tokenizer train --vocab-size 8192 --out "$DIR/tok-8k/tokenizer.json" data/corpus/emma.txt
  "./$BUILD/whale" init --config bench/configs/v3-600m.json --seed 1 --dtype bf16 \
    --tokenizer "$DIR/tok-8k/tokenizer.json" --out "$MODEL"
fi
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} "./$BUILD/bench_serve" --model "$MODEL" --concurrency 1,4,16 \
  --requests "${REQUESTS:-1}" --max-tokens "${MAX_TOKENS:-48}" --prompt-words "${PROMPT_WORDS:-4}" \
  --rounds "${ROUNDS:-3}"
