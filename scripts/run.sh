#!/usr/bin/env bash
# The main job, on the corpus embedded in data/corpus (public domain, ~2.6 MB):
#   1. train a byte-level BPE tokenizer with DeepSeek's special tokens,
#   2. tokenise the corpus into shards with a validation split,
#   3. pretrain a small DeepSeek-V3-architecture model (MLA, DeepSeekMoE with a shared expert,
#      sigmoid routing with auxiliary-loss-free bias balancing, one MTP layer),
#   4. plot the curves, and sample text from the checkpoint,
#   5. reasoning RL at a small budget: SFT on worked <think> traces of 2-digit addition, then
#      GRPO; held-out accuracy before and after RL (bench/rl_pipeline.sh is the longer version).
# About 16 minutes on 2 cores, build included. WHALE_OUT sets the output folder (default: out),
# WHALE_STEPS the number of training steps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build whale
OUT=${WHALE_OUT:-out}
STEPS=${WHALE_STEPS:-800}
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

# Reasoning RL (DeepSeek-R1 recipe in miniature): cold-start SFT, then GRPO with a rule reward.
# Needs `whale sft-data`, `sft` and `eval` (skipped with a note when this build lacks them).
if $W --help 2>&1 | grep -qE '^ +sft-data ' && $W --help 2>&1 | grep -qE '^ +eval '; then
  TASK="arith:digits=2,ops=+"
  echo "== reasoning RL on $TASK: SFT on reference traces, then GRPO"
  # SFT in two passes; GRPO starts from the second one's step 120 (~45% right, so groups hold
  # both right and wrong answers); its step 140 is 20 more steps spent on SFT instead.
  $W sft-data --task "$TASK" --count 6000 --out "$OUT/sft.jsonl"
  $W sft --model "$OUT/run" --data "$OUT/sft.jsonl" --out "$OUT/sft" --epochs 2 --lr 2e-3
  $W sft-data --task "$TASK" --count 6000 --seed 11 --out "$OUT/sft2.jsonl"
  $W sft --model "$OUT/sft" --data "$OUT/sft2.jsonl" --out "$OUT/sft2" --steps 140 --lr 2e-3 --save-every 120
  $W eval --model "$OUT/sft2/step-000120" --task "$TASK" --limit 500 --max-tokens 40 --show 2 --out "$OUT/eval-sft.json"
  $W eval --model "$OUT/sft2/step-000140" --task "$TASK" --limit 500 --max-tokens 40 --out "$OUT/eval-sft-control.json"
  $W grpo --model "$OUT/sft2/step-000120" --task "$TASK" --out "$OUT/grpo" --steps "${WHALE_GRPO_STEPS:-60}" \
    --prompts 32 --group-size 8 --max-tokens 32 --lr 5e-5 --min-lr-ratio 0.1 --warmup 3 --kl-beta 0 --clip-high 0.28 \
    --format-weight 0 --micro-batch 32 --save-every 20 --seed 2
  $W eval --model "$OUT/grpo" --task "$TASK" --limit 500 --max-tokens 40 --show 2 --out "$OUT/eval-grpo.json"
  $W plot "$OUT/grpo" >/dev/null 2>&1 || true
  acc() { grep -o '"pass@1": *[0-9.eE+-]*' "$1" | head -n 1 | sed 's/.*: *//'; }
  echo "== held-out accuracy ($TASK, 500 problems, greedy): before RL $(acc "$OUT/eval-sft.json"), after GRPO" \
    "$(acc "$OUT/eval-grpo.json") (the same start with 20 more SFT steps instead: $(acc "$OUT/eval-sft-control.json"))"
  echo "Chat with the RL model: ./build/whale chat --model $OUT/grpo"
else
  echo "== skipping reasoning RL: this whale has no sft-data/eval subcommands"
fi
