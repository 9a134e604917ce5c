#!/usr/bin/env bash
# Training throughput: whale's bench_train against the same DeepSeek-V3 training step in eager
# PyTorch (bench/torch_train.py, Debian's python3-torch), same batch, same threads, same machine,
# back to back in this one invocation, in FP32 and in BF16 (whale: oneDNN BF16 GEMMs; PyTorch:
# torch.autocast to bfloat16). Results are written up in docs/results-train.md.
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
# Debian's OpenBLAS 0.3.21 runs its Prescott (SSE3) kernels on CPUs it does not know (family 6
# model 207 here); whale's binaries restart themselves with OPENBLAS_CORETYPE=SkylakeX on AVX-512
# (src/kernels/cpu_features.h). PyTorch calls the same system OpenBLAS, so it gets the same
# setting here: both sides on the same SGEMM. OPENBLAS_CORETYPE= (empty) in the caller's
# environment keeps OpenBLAS's own choice for both.
if [[ -z ${OPENBLAS_CORETYPE+x} ]] && grep -q avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX; fi

echo "machine: $(nproc --all) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-(unset)} for both sides"
echo "load before: $(uptime | sed 's/.*load average: //')"
# Per config: whale fp32, PyTorch fp32, whale bf16, PyTorch bf16 (autocast), alternating so both
# sides of each ratio see about the same load.
for cfg in $CONFIGS; do
  for p in fp32 bf16; do
    "./$BUILD/bench_train" --config "bench/configs/$cfg.json" --batch "$BATCH" --seq-len "$SEQ" --steps "$STEPS" \
      --precision "$p" | tee "$LOG/$cfg.$p.whale"
    "$PY" bench/torch_train.py --config "bench/configs/$cfg.json" --batch "$BATCH" --seq-len "$SEQ" --steps "$STEPS" \
      --threads "$THREADS" --precision "$p" | tee "$LOG/$cfg.$p.torch"
  done
done
echo "load after: $(uptime | sed 's/.*load average: //')"

"$PY" - "$LOG" "$CONFIGS" "$BATCH" "$SEQ" "$THREADS" <<'PY'
import re, sys
log, configs, B, T, K = sys.argv[1], sys.argv[2].split(), *sys.argv[3:]
def whale(path):
    s = open(path).read()
    m = re.search(r"training: ([0-9.]+) tokens/s, ([0-9.]+) GFLOP/s = ([0-9.]+)% of the measured (.+?) peak ([0-9.]+)", s)
    c = re.search(r"per CPU second: ([0-9.]+) tokens, ([0-9.]+) GFLOP = ([0-9.]+)% of .+?'s ([0-9.]+)", s)
    rss = re.search(r"peak RSS ([0-9.]+) MiB", s).group(1)
    return dict(tps=float(m.group(1)), mfu=float(m.group(3)), peak=float(m.group(5)), tpc=float(c.group(1)),
                cmfu=float(c.group(3)), cpeak=float(c.group(4)), rss=rss, flop_tok=float(c.group(2)) / float(c.group(1)))
def torch(path):
    s = open(path).read()
    return dict(tps=float(re.search(r"torch tokens/s: ([0-9.]+)", s).group(1)),
                tpc=float(re.search(r"torch tokens per CPU second: ([0-9.]+)", s).group(1)),
                rss=re.search(r"peak RSS ([0-9.]+) MiB", s).group(1))
print(f"\nbatch {B} x {T}, {K} threads. MFU: model FLOPs over the measured peak of the mode's GEMM "
      "(OpenBLAS SGEMM for fp32, oneDNN BF16 GEMM for bf16), PyTorch with whale's FLOP count and peaks.")
print("\nper CPU second (each process's own user + system time; robust to other load)")
print("| config | mode | whale tokens | whale MFU | PyTorch tokens | PyTorch MFU | whale / PyTorch | peak GFLOP per CPU s |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
ratios = []
for cfg in configs:
    w = {p: whale(f"{log}/{cfg}.{p}.whale") for p in ("fp32", "bf16")}
    t = {p: torch(f"{log}/{cfg}.{p}.torch") for p in ("fp32", "bf16")}
    for p in ("fp32", "bf16"):
        tm = 100 * w[p]["flop_tok"] * t[p]["tpc"] / w[p]["cpeak"]
        print(f"| {cfg} | {p} | {w[p]['tpc']:.1f} | {w[p]['cmfu']:.1f}% | {t[p]['tpc']:.1f} | {tm:.1f}% "
              f"| **{w[p]['tpc'] / t[p]['tpc']:.2f}x** | {w[p]['cpeak']:.1f} |")
    ratios.append(f"| {cfg} | {w['bf16']['tpc'] / t['fp32']['tpc']:.2f}x | {w['bf16']['tpc'] / t['bf16']['tpc']:.2f}x "
                  f"| {w['bf16']['tpc'] / w['fp32']['tpc']:.2f}x | {t['bf16']['tpc'] / t['fp32']['tpc']:.2f}x |")
print("\nwall clock (a fluctuating share of a shared machine)")
print("| config | mode | whale tok/s | whale MFU | PyTorch tok/s | whale / PyTorch | whale RSS | PyTorch RSS | peak GFLOP/s |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for cfg in configs:
    for p in ("fp32", "bf16"):
        w, t = whale(f"{log}/{cfg}.{p}.whale"), torch(f"{log}/{cfg}.{p}.torch")
        print(f"| {cfg} | {p} | {w['tps']:.0f} | {w['mfu']:.1f}% | {t['tps']:.1f} | {w['tps'] / t['tps']:.2f}x "
              f"| {w['rss']} MiB | {t['rss']} MiB | {w['peak']:.1f} |")
print("\nratios per CPU second")
print("| config | whale bf16 / PyTorch fp32 | whale bf16 / PyTorch bf16 | whale bf16 / whale fp32 | PyTorch bf16 / PyTorch fp32 |")
print("| --- | ---: | ---: | ---: | ---: |")
print("\n".join(ratios))
PY
