#!/usr/bin/env bash
# MTP speculative decoding on a whale-trained checkpoint with an MTP head (default: out/run, which
# scripts/run.sh writes): `whale generate` greedy, plain and --speculative alternately, for three
# prompts x ROUNDS, printing each pair's decode tok/s, the drafts accepted, whether the two texts
# are byte-identical (they must be), and the median speedup.
#   bash bench/mtp_speedup.sh [MODEL]      WHALE_BUILD=DIR (default build)  N=tokens (200)  ROUNDS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-out/run}
W=${WHALE_BUILD:-build}/whale
N=${N:-200}
ROUNDS=${ROUNDS:-3}
[[ -x $W ]] || { echo "no $W: build first (cmake -S . -B build -G Ninja && ninja -C build whale)"; exit 1; }
[[ -e $MODEL ]] || { echo "no model at $MODEL: run scripts/run.sh first, or pass a checkpoint with an MTP head"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "model: $MODEL; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
ratios=()
for prompt in "It is a truth universally acknowledged" "The old man and the sea" "Once upon a time"; do
  for ((r = 1; r <= ROUNDS; r++)); do
    for mode in plain spec; do
      flag=()
      [[ $mode == spec ]] && flag=(--speculative)
      "$W" generate --model "$MODEL" --prompt "$prompt" --max-tokens "$N" --ignore-eos --temperature 0 "${flag[@]}" \
        >"$tmp/$mode.txt" 2>"$tmp/$mode.err"
    done
    plain=$(grep -o 'decode: [0-9]* tokens, [0-9.]* tok/s' "$tmp/plain.err" | awk '{print $4}')
    spec=$(grep -o 'decode: [0-9]* tokens, [0-9.]* tok/s' "$tmp/spec.err" | awk '{print $4}')
    acc=$(grep -o '[0-9]* of [0-9]* MTP drafts accepted ([0-9.]*%)' "$tmp/spec.err")
    same=$(cmp -s "$tmp/plain.txt" "$tmp/spec.txt" && echo identical || echo DIFFERENT)
    ratio=$(awk -v a="$spec" -v b="$plain" 'BEGIN {printf "%.2f", a / b}')
    ratios+=("$ratio")
    echo "\"$prompt\" round $r: plain $plain tok/s, speculative $spec tok/s (${ratio}x); $acc; text $same"
    [[ $same == identical ]] || { echo "speculative greedy output differs from plain: a bug"; exit 1; }
  done
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR] = $1} END {printf "median speedup %.2fx (range %.2f-%.2fx over %d pairs)\n", a[int((NR + 1) / 2)], a[1], a[NR], NR}'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
