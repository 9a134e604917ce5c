#!/usr/bin/env bash
# Encode MB/s of whale and of the npm reference (tests/js, after `npm ci`) on the same files.
# usage: bench/tokenizer_js.sh [BUILD_DIR] [ENGLISH_FILE] [MIXED_FILE]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
english="${2:-/work/shared/data/corpus/austen/emma.txt}"
mixed="${3:-$root/tests/tokenizer/data/corpus.jsonl}"
"$build/bench_tokenizer" --english "$english" --mixed "$mixed" --train-dir ""
node "$root/tests/js/bench_ref.js" deepseek "$english" "$mixed"
