#!/usr/bin/env bash
# Training throughput: whale's bench_train against the same DeepSeek-V3 training step in eager
# PyTorch (bench/torch_train.py, Debian's python3-torch), same batch, same threads, same machine,
# back to back in this one invocation. Then whale's simulated BF16 / FP8 compute modes on the
# 10M config. Results are written up in docs/results-train.md.
#   bench/run_train.sh                 # THREADS=2 BATCH=8 SEQ=128 STEPS=5 by default
#   WHALE_BUILD_DIR=build-tb SKIP_BUILD=1 STEPS=2 nice bench/run_train.sh
# On a shared machine run it with nice: the ratio is measured in this one run, whale and PyTorch
# alternating per config, so both sides see the same load.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
SEQ=${SEQ:-128}
STEPS=${STEPS:-5}
CONFIGS=${CONFIGS:-"train-10m train-50m"}
BUILD=${WHALE_BUILD_DIR:-build}
PY=${PYTHON:-/usr/bin/python3}

if [[ ${SKIP_BUILD:-0} != 1 ]]; then  # SKIP_BUILD=1: use the bench_train already in $BUILD
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DWHALE_BENCH=ON >/dev/null
  ninja -C "$BUILD" bench_train >/dev/null
fi
LOG=$(mktemp -d)
trap 'rm -rf "$LOG"' EXIT

# Both sides get the same OpenMP environment: 2 threads, passive waiting (idle threads sleep
# instead of spinning, which matters on a shared machine). torch_train.py also gives OpenBLAS
# (Debian's torch calls the system BLAS) the same thread count.
export OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=$THREADS

echo "machine: $(nproc --all) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "load before: $(uptime | sed 's/.*load average: //')"
for p in bf16 fp8; do
  "./$BUILD/bench_train" --config bench/configs/train-10m.json --batch "$BATCH" --seq-len "$SEQ" --steps "$STEPS" \
    --precision "$p" | tee "$LOG/prec.$p"
done
for cfg in $CONFIGS; do
  "./$BUILD/bench_train" --config "bench/configs/$cfg.json" --batch "$BATCH" --seq-len "$SEQ" --steps "$STEPS" \
    | tee "$LOG/$cfg.whale"
  "$PY" bench/torch_train.py --config "bench/configs/$cfg.json" --batch "$BATCH" --seq-len "$SEQ" --steps "$STEPS" \
    --threads "$THREADS" | tee "$LOG/$cfg.torch"
done
echo "load after: $(uptime | sed 's/.*load average: //')"

"$PY" - "$LOG" "$CONFIGS" "$BATCH" "$SEQ" "$THREADS" <<'PY'
import re, sys
log, configs, B, T, K = sys.argv[1], sys.argv[2].split(), *sys.argv[3:]
def whale(path):
    s = open(path).read()
    m = re.search(r"training: ([0-9.]+) tokens/s, ([0-9.]+) GFLOP/s = ([0-9.]+)% of the measured sgemm peak ([0-9.]+)", s)
    rss = re.search(r"peak RSS ([0-9.]+) MiB", s).group(1)
    c = re.search(r"per CPU second: ([0-9.]+) tokens, ([0-9.]+) GFLOP = ([0-9.]+)% of sgemm's ([0-9.]+)", s)
    return float(m.group(1)), float(m.group(3)), float(m.group(4)), rss, float(c.group(1)), float(c.group(3))
def memory(path):
    m = re.search(r"weights ([0-9.]+) MB, gradients ([0-9.]+) MB, AdamW state ([0-9.]+) MB, saved activations ([0-9.]+) MB",
                  open(path).read())
    return m.groups()
print(f"\nbatch {B} x {T}, {K} threads, fp32")
# torch MFU: whale's FLOP count per token and the sgemm peak whale measured just before.
print("| config | whale tok/s | whale MFU | torch tok/s | torch MFU | whale / torch | whale RSS | torch RSS | sgemm peak |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
cpu_rows = []
for cfg in configs:
    wt, mfu, peak, wrss, wc, cmfu = whale(f"{log}/{cfg}.whale")
    s = open(f"{log}/{cfg}.torch").read()
    tt = float(re.search(r"torch tokens/s: ([0-9.]+)", s).group(1))
    tc = float(re.search(r"torch tokens per CPU second: ([0-9.]+)", s).group(1))
    trss = re.search(r"peak RSS ([0-9.]+) MiB", s).group(1)
    print(f"| {cfg} | {wt:.0f} | {mfu:.1f}% | {tt:.1f} | {mfu * tt / wt:.1f}% | **{wt / tt:.2f}x** | {wrss} MiB | {trss} MiB "
          f"| {peak:.1f} GFLOP/s |")
    cpu_rows.append(f"| {cfg} | {wc:.1f} | {cmfu:.1f}% | {tc:.2f} | {cmfu * tc / wc:.1f}% | {wc / tc:.2f}x |")
# Per CPU second (user + system time of all the process's threads): robust to other load.
print("\nper CPU second (both processes' own CPU time; MFU against sgemm's GFLOP per CPU second)")
print("| config | whale tokens | whale MFU | torch tokens | torch MFU | whale / torch |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
print("\n".join(cpu_rows))
print("\nwhale precision modes (train-10m, simulated on the CPU)")
print("| mode | tok/s | MFU | peak RSS | weights | gradients | AdamW state | saved activations |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
rows = [("fp32", f"{log}/train-10m.whale")] if "train-10m" in configs else []
rows += [(p, f"{log}/prec.{p}") for p in ("bf16", "fp8")]
for p, path in rows:
    wt, mfu, _, rss, _, _ = whale(path)
    w, g, o, a = memory(path)
    print(f"| {p} | {wt:.0f} | {mfu:.1f}% | {rss} MiB | {w} MB | {g} MB | {o} MB | {a} MB |")
PY
