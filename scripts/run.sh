#!/usr/bin/env bash
# The main job, on the corpus embedded in data/corpus (public domain, ~2.6 MB):
#   1. train a byte-level BPE tokenizer with DeepSeek's special tokens,
#   2. tokenise the corpus into shards with a validation split,
#   3. pretrain a small DeepSeek-V3-architecture model (MLA, DeepSeekMoE with a shared expert,
#      sigmoid routing with auxiliary-loss-free bias balancing, one MTP layer),
#   4. plot the curves, and sample text from the checkpoint.
# About 12 minutes on 2 cores. WHALE_OUT sets the output folder (default: out),
# WHALE_STEPS the number of training steps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build whale
OUT=${WHALE_OUT:-out}
STEPS=${WHALE_STEPS:-600}
W=./build/whale
mkdir -p "$OUT"
$W tokenizer train --vocab-size 4096 --out "$OUT/tokenizer/tokenizer.json" data/corpus/*.txt
$W data prepare --tokenizer "$OUT/tokenizer/tokenizer.json" --out "$OUT/data" data/corpus/*.txt
$W pretrain --preset tiny --data "$OUT/data" --out "$OUT/run" --steps "$STEPS" --batch 16 --seq-len 128 \
  --lr 3e-3 --bias-gamma 0.01 --eval-every 100 --eval-windows 64 --save-every 200
if $W plot --help >/dev/null 2>&1; then $W plot "$OUT/run"; fi
echo
echo "== samples from $OUT/run (temperature 0.8, top-p 0.95)"
for prompt in "ELIZABETH:" "It is a truth universally acknowledged" "LOVE, n."; do
  echo "--- $prompt"
  $W generate --model "$OUT/run" --prompt "$prompt" --max-tokens 80 --temperature 0.8 --top-p 0.95 --seed 1
  echo
done
