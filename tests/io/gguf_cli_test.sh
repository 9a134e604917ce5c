#!/usr/bin/env bash
# End to end through the CLI: a whale checkpoint and the GGUF exported from it give
# byte-identical logits in F32 (MTP head included); whale quantize of the F32 GGUF equals a
# direct Q8_0 export, and its logits stay within 6% relative RMS: the Q8_0 weights (2.8% on
# this model dequantised) run kept-quantised through qmatmul, whose 8-bit activations add
# their own rounding (measured 3.7% in all; see tests/io/test_gguf_model.cpp); repacked or mapped
# Q8_0 weights give the same bytes. Usage: gguf_cli_test.sh WHALE SOURCE_DIR WORK_DIR
set -euo pipefail
whale=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
tokens=1,5,17,300,42,7,511,99,3,250
"$whale" init --config "$src/configs/tiny-v3.json" --seed 1 --out ckpt --norm-jitter 0.1 --router-bias-std 0.05
"$whale" export-gguf --model ckpt --out f32.gguf
"$whale" logits --model ckpt --tokens $tokens --out ckpt.f32 --mtp-out ckpt.mtp.f32
"$whale" logits --model f32.gguf --tokens $tokens --out gguf.f32 --mtp-out gguf.mtp.f32
cmp ckpt.f32 gguf.f32
cmp ckpt.mtp.f32 gguf.mtp.f32
"$whale" quantize f32.gguf q8.gguf --type q8_0
"$whale" export-gguf --model ckpt --out q8_direct.gguf --type q8_0
"$whale" logits --model q8.gguf --tokens $tokens --out q8.f32
"$whale" logits --model q8_direct.gguf --tokens $tokens --out q8_direct.f32
cmp q8.f32 q8_direct.f32
# Q8_0 repacked for the VNNI kernels (--repack, on by default where the CPU has them) or read
# as mapped: the same bytes, MTP head included; a bad value is refused by name.
"$whale" logits --model q8.gguf --tokens $tokens --out q8.on.f32 --mtp-out q8.on.mtp.f32 --repack on
"$whale" logits --model q8.gguf --tokens $tokens --out q8.off.f32 --mtp-out q8.off.mtp.f32 --repack off
cmp q8.on.f32 q8.off.f32
cmp q8.on.mtp.f32 q8.off.mtp.f32
cmp q8.on.f32 q8.f32
# Token by token (decode steps) and two at a time (the shape of an MTP verify pass): the same
# bytes, as speculative decoding's exactness needs (the F32 router included).
"$whale" logits --model q8.gguf --tokens $tokens --out q8.c1.f32 --chunk 1
"$whale" logits --model q8.gguf --tokens $tokens --out q8.c2.f32 --chunk 2
cmp q8.c1.f32 q8.c2.f32
if "$whale" logits --model q8.gguf --tokens 1 --out x.f32 --repack sometimes 2> err.txt; then exit 1; fi
grep -q -- "--repack" err.txt
/usr/bin/python3 - <<'PY'
import numpy as np
a = np.fromfile("ckpt.f32", dtype=np.float32)
b = np.fromfile("q8.f32", dtype=np.float32)
err = float(np.sqrt(((a - b) ** 2).sum() / (a ** 2).sum()))
print(f"q8_0 logits relative RMS error {err:.4f}")
assert 0 < err < 0.06, err
PY
# A damaged file is one clear error, not a crash.
head -c 100 f32.gguf > cut.gguf
if "$whale" logits --model cut.gguf --tokens 1 --out x.f32 2> err.txt; then exit 1; fi
grep -q "cut.gguf" err.txt
echo "gguf_cli_test: ok"
