#!/usr/bin/env bash
# FP32 vs simulated BF16 vs simulated FP8 (DeepSeek-V3's tile/block scaling) training on the
# embedded corpus: same data, seed and steps; prints each run's final validation loss, the
# relative gap to FP32, speed and memory. Usage: bench/precision.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build whale >/dev/null
OUT=${WHALE_BENCH_DIR:-build/precision}
mkdir -p "$OUT"
W=./build/whale
[[ -f "$OUT/tok/tokenizer.json" ]] || $W tokenizer train --vocab-size 2048 --out "$OUT/tok/tokenizer.json" data/corpus/*.txt
[[ -f "$OUT/data/meta.json" ]] || $W data prepare --tokenizer "$OUT/tok/tokenizer.json" --out "$OUT/data" data/corpus/*.txt
for p in fp32 bf16 fp8; do
  rm -rf "$OUT/run-$p"
  OMP_WAIT_POLICY=passive $W pretrain --preset tiny --data "$OUT/data" --out "$OUT/run-$p" --steps "$STEPS" \
    --batch 8 --seq-len 128 --eval-every 0 --eval-windows 100000 --seed 3 --precision "$p" 2>/dev/null | tee "$OUT/$p.txt"
done
python3 - "$OUT" <<'PY'
import re, sys
out = sys.argv[1]
val = {}
for p in ("fp32", "bf16", "fp8"):
    text = open(f"{out}/{p}.txt").read()
    val[p] = float(re.search(r"validation loss ([0-9.]+)", text).group(1))
    tps = float(re.search(r"([0-9.]+) tokens/s", text).group(1))
    print(f"{p:5s} final validation loss {val[p]:.4f}  ({100 * (val[p] / val['fp32'] - 1):+.2f}% vs fp32)  {tps:.0f} tokens/s")
gap = abs(val["fp8"] / val["fp32"] - 1)
print(f"fp8 within 0.5% of fp32: {'yes' if gap <= 0.005 else 'NO'} ({100 * gap:.2f}%)")
PY
