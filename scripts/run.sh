#!/usr/bin/env bash
# The main job: builds whale, initialises a small random DeepSeek-V3-shaped checkpoint
# (MLA, DeepSeekMoE with sigmoid routing and groups, YaRN, one MTP layer), generates from it
# and prints the speed. Pretraining replaces the random checkpoint once it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DWHALE_TESTS=OFF >/dev/null
ninja -C build whale
OUT=${WHALE_OUT:-out}
mkdir -p "$OUT"
./build/whale init --config configs/small-v3.json --seed 1 --out "$OUT/small-v3"
./build/whale inspect --model "$OUT/small-v3"
echo "generating 64 tokens (greedy), then a batch of 4 sampled sequences:"
./build/whale generate --model "$OUT/small-v3" --prompt-tokens 0,1000,2000,3000,4000 --max-tokens 64 --ignore-eos
./build/whale generate --model "$OUT/small-v3" --prompt-tokens 0,1000,2000,3000,4000 --max-tokens 64 --ignore-eos \
  --temperature 0.8 --top-p 0.95 --seed 7 --batch 4
