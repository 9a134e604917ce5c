#!/usr/bin/env bash
# Reasoning RL on a small whale model, DeepSeek-R1 style: pretrained base -> SFT on worked
# <think> traces (cold start) -> GRPO with a rule-checked reward -> held-out accuracy before and
# after RL, with samples. Results: docs/results-rl.md.
#
#   bench/rl_pipeline.sh            # uses out/run (scripts/run.sh's model) or pretrains one here
#
# Environment (defaults in brackets):
#   WHALE_BIN [build/whale]   WHALE_RL_OUT [out-rl]   WHALE_BASE [out/run, else trained here]
#   WHALE_TASK [arith:digits=2,ops=+]   WHALE_SFT_COUNT [400]   WHALE_SFT_EPOCHS [8]
#   WHALE_SFT2_COUNT [2000] (a second SFT pass over fresh traces, one epoch; 0: none)
#   WHALE_SFT3_COUNT [6000] (a third pass, two epochs; 0: none)   WHALE_GRPO_LR [1e-5]
#   WHALE_GRPO_STEPS [40]   WHALE_EVAL [500]   WHALE_PRETRAIN_STEPS [400] (only without a base)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${WHALE_BIN:-./build/whale}
OUT=${WHALE_RL_OUT:-out-rl}
TASK=${WHALE_TASK:-arith:digits=2,ops=+}
SFT_COUNT=${WHALE_SFT_COUNT:-400}
SFT_EPOCHS=${WHALE_SFT_EPOCHS:-8}
SFT2_COUNT=${WHALE_SFT2_COUNT:-2000}
SFT3_COUNT=${WHALE_SFT3_COUNT:-6000}
GRPO_STEPS=${WHALE_GRPO_STEPS:-40}
GRPO_LR=${WHALE_GRPO_LR:-1e-5}
EVAL=${WHALE_EVAL:-500}
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }

BASE=${WHALE_BASE:-}
if [ -z "$BASE" ] && [ -f out/run/latest ]; then BASE=out/run; fi
if [ -z "$BASE" ]; then
  stamp "pretraining a base model (no out/run from scripts/run.sh)"
  $W tokenizer train --vocab-size 4096 --out "$OUT/tokenizer/tokenizer.json" data/corpus/*.txt
  $W data prepare --tokenizer "$OUT/tokenizer/tokenizer.json" --out "$OUT/data" data/corpus/*.txt
  $W pretrain --preset tiny --data "$OUT/data" --out "$OUT/base" --steps "${WHALE_PRETRAIN_STEPS:-400}" --batch 16 \
    --seq-len 128 --lr 3e-3 --bias-gamma 0.01 --eval-every 100 --eval-windows 32
  BASE=$OUT/base
fi

stamp "SFT data: $SFT_COUNT reference traces of $TASK"
$W sft-data --task "$TASK" --count "$SFT_COUNT" --out "$OUT/sft.jsonl"
head -n 1 "$OUT/sft.jsonl"
stamp "SFT from $BASE"
$W sft --model "$BASE" --data "$OUT/sft.jsonl" --out "$OUT/sft1" --epochs "$SFT_EPOCHS" --lr 2e-3
SFT=$OUT/sft1
if [ "$SFT2_COUNT" -gt 0 ]; then
  stamp "SFT, second pass: $SFT2_COUNT fresh traces, one epoch"
  $W sft-data --task "$TASK" --count "$SFT2_COUNT" --seed 7 --out "$OUT/sft2.jsonl"
  $W sft --model "$OUT/sft1" --data "$OUT/sft2.jsonl" --out "$OUT/sft2" --epochs 1 --lr 2e-3
  SFT=$OUT/sft2
fi
if [ "$SFT3_COUNT" -gt 0 ]; then
  stamp "SFT, third pass: $SFT3_COUNT fresh traces, two epochs"
  $W sft-data --task "$TASK" --count "$SFT3_COUNT" --seed 11 --out "$OUT/sft3.jsonl"
  $W sft --model "$SFT" --data "$OUT/sft3.jsonl" --out "$OUT/sft3" --epochs 2 --lr 2e-3
  SFT=$OUT/sft3
fi
stamp "held-out accuracy after SFT ($EVAL problems, greedy)"
$W eval --model "$SFT" --task "$TASK" --limit "$EVAL" --max-tokens 48 --show 4 --out "$OUT/eval-sft.json"

stamp "GRPO from the SFT checkpoint"
$W grpo --model "$SFT" --task "$TASK" --out "$OUT/grpo" --steps "$GRPO_STEPS" --prompts 8 --group-size 8 \
  --max-tokens 40 --lr "$GRPO_LR" --kl-beta 0.02 --clip-high 0.28 --micro-batch 32 --save-every 10
stamp "held-out accuracy after GRPO ($EVAL problems, greedy)"
$W eval --model "$OUT/grpo" --task "$TASK" --limit "$EVAL" --max-tokens 48 --show 4 --out "$OUT/eval-grpo.json"
$W plot "$OUT/grpo" >/dev/null 2>&1 || true

acc() { grep -o '"pass@1": *[0-9.eE+-]*' "$1" | head -n 1 | sed 's/.*: *//'; }
stamp "done"
echo "held-out accuracy ($TASK, $EVAL problems): SFT $(acc "$OUT/eval-sft.json")  ->  GRPO $(acc "$OUT/eval-grpo.json")"
echo "GRPO curves: $OUT/grpo/metrics.jsonl (whale plot $OUT/grpo)"
