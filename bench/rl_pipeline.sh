#!/usr/bin/env bash
# Reasoning RL on a small whale model, DeepSeek-R1 style: pretrained base -> SFT on worked
# <think> traces (cold start) -> GRPO with a rule-checked reward -> held-out accuracy before and
# after RL, with samples. Results: docs/results-rl.md.
#
#   bench/rl_pipeline.sh            # uses out/run (scripts/run.sh's model) or pretrains one here
#
# SFT runs in two passes: the main job's (6000 traces x 2 epochs, a few % held-out) and a second one
# over 6000 fresh traces for 140 steps, checkpointed at step 120 (partial accuracy, ~45%: GRPO
# starts there, where most groups hold both right and wrong answers) and 140 (20 more steps spent
# on SFT instead: the control). GRPO: KL-free, accuracy-only reward (the format is learned by SFT),
# lr 5e-5 decaying (cosine) to 5e-6, 32 prompts x 8 completions a step, 60 steps.
#
# Environment (defaults in brackets):
#   WHALE_BIN [build/whale]   WHALE_RL_OUT [out-rl]   WHALE_BASE [out/run, else trained here]
#   WHALE_SFT1 [run here] (a finished first SFT pass, e.g. out/sft of scripts/run.sh)
#   WHALE_TASK [arith:digits=2,ops=+]   WHALE_SFT2_STEPS [140]   WHALE_SFT2_START [120]   WHALE_SFT2_SEED [0] (data order)
#   WHALE_GRPO_STEPS [60]   WHALE_GRPO_LR [5e-5]   WHALE_GRPO_PROMPTS [32]   WHALE_GRPO_SEED [2]
#   WHALE_EVAL [500]
#   WHALE_PRETRAIN_STEPS [800, as scripts/run.sh] (only without a base)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WHALE_BIN:-./build/whale}
OUT=${WHALE_RL_OUT:-out-rl}
TASK=${WHALE_TASK:-arith:digits=2,ops=+}
SFT2_STEPS=${WHALE_SFT2_STEPS:-140}
SFT2_START=${WHALE_SFT2_START:-120}
SFT2_SEED=${WHALE_SFT2_SEED:-0}
GRPO_STEPS=${WHALE_GRPO_STEPS:-60}
GRPO_LR=${WHALE_GRPO_LR:-5e-5}
GRPO_PROMPTS=${WHALE_GRPO_PROMPTS:-32}
GRPO_SEED=${WHALE_GRPO_SEED:-2}
EVAL=${WHALE_EVAL:-500}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }
evaluate() {  # evaluate MODEL NAME: greedy pass@1 on the first $EVAL held-out problems
  $W eval --model "$1" --task "$TASK" --limit "$EVAL" --max-tokens 40 --show 3 --out "$OUT/eval-$2.json"
}

BASE=${WHALE_BASE:-}
if [ -z "$BASE" ] && [ -f out/run/latest ]; then BASE=out/run; fi
if [ -z "$BASE" ]; then
  stamp "pretraining a base model (no out/run from scripts/run.sh)"
  $W tokenizer train --vocab-size 4096 --out "$OUT/tokenizer/tokenizer.json" data/corpus/*.txt
  $W data prepare --tokenizer "$OUT/tokenizer/tokenizer.json" --out "$OUT/data" data/corpus/*.txt
  $W pretrain --preset tiny --data "$OUT/data" --out "$OUT/base" --steps "${WHALE_PRETRAIN_STEPS:-800}" --batch 16 \
    --seq-len 128 --lr 3e-3 --bias-gamma 0.01 --eval-every 100 --eval-windows 64
  BASE=$OUT/base
fi

SFT1=${WHALE_SFT1:-}
if [ -z "$SFT1" ]; then
  stamp "SFT, first pass: 6000 reference traces of $TASK, two epochs, from $BASE"
  $W sft-data --task "$TASK" --count 6000 --out "$OUT/sft1.jsonl"
  head -n 1 "$OUT/sft1.jsonl"
  $W sft --model "$BASE" --data "$OUT/sft1.jsonl" --out "$OUT/sft1" --epochs 2 --lr 2e-3
  SFT1=$OUT/sft1
fi
stamp "SFT, second pass: 6000 fresh traces, $SFT2_STEPS steps, checkpoints at $SFT2_START and $SFT2_STEPS"
$W sft-data --task "$TASK" --count 6000 --seed 11 --out "$OUT/sft2.jsonl"
$W sft --model "$SFT1" --data "$OUT/sft2.jsonl" --out "$OUT/sft2" --steps "$SFT2_STEPS" --lr 2e-3 \
  --save-every "$SFT2_START" --seed "$SFT2_SEED"
START=$OUT/sft2/$(printf 'step-%06d' "$SFT2_START")
CONTROL=$OUT/sft2/$(printf 'step-%06d' "$SFT2_STEPS")
stamp "held-out accuracy of the GRPO start ($START) and of the SFT control ($CONTROL)"
evaluate "$START" sft
evaluate "$CONTROL" sft-control

stamp "GRPO from $START"
$W grpo --model "$START" --task "$TASK" --out "$OUT/grpo" --steps "$GRPO_STEPS" --prompts "$GRPO_PROMPTS" \
  --group-size 8 --max-tokens 32 --lr "$GRPO_LR" --min-lr-ratio 0.1 --warmup 3 --kl-beta 0 --clip-high 0.28 --format-weight 0 \
  --micro-batch 32 --save-every 20 --seed "$GRPO_SEED"
stamp "held-out accuracy after GRPO"
evaluate "$OUT/grpo" grpo
$W plot "$OUT/grpo" >/dev/null 2>&1 || true

acc() { grep -o '"pass@1": *[0-9.eE+-]*' "$1" | head -n 1 | sed 's/.*: *//'; }
stamp "done"
echo "held-out accuracy ($TASK, $EVAL problems, greedy): SFT $(acc "$OUT/eval-sft.json") -> GRPO" \
  "$(acc "$OUT/eval-grpo.json") ($GRPO_STEPS steps); the same start with $((SFT2_STEPS - SFT2_START)) more SFT" \
  "steps instead: $(acc "$OUT/eval-sft-control.json")"
echo "GRPO curves: $OUT/grpo/metrics.jsonl (whale plot $OUT/grpo)"
