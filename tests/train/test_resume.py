#!/usr/bin/env python3
"""Integration test of `whale pretrain` checkpoints (run by CTest with the built binary).

1. Resume: a run killed with SIGKILL after a checkpoint and resumed with --resume logs exactly
   the same losses, step for step, as an uninterrupted run with the same seed.
2. Crash safety: SIGKILL at random moments (including mid-save) always leaves `latest` naming a
   checkpoint that `whale inspect` loads and that `whale generate` runs from.
3. An FP8 run also reports the validation loss of its weights under an FP32 forward.

usage: test_resume.py WHALE_BINARY WORKDIR SOURCE_DIR
"""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

WHALE, WORK, SRC = sys.argv[1], sys.argv[2], sys.argv[3]
ENV = dict(os.environ, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="passive")


def run(*args, check=True):
    p = subprocess.run([WHALE, *args], capture_output=True, text=True, env=ENV)
    if check and p.returncode != 0:
        sys.exit(f"FAIL: whale {' '.join(args)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return p


def losses(run_dir):
    out = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            out[m["step"]] = (m["loss"], m.get("val_loss"))
    return out


def wait_for_checkpoint(run_dir, proc, min_step, timeout=300):
    latest = os.path.join(run_dir, "latest")
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        if os.path.exists(latest):
            name = open(latest).read().strip()
            if int(name.split("-")[1]) >= min_step:
                return True
        time.sleep(0.05)
    sys.exit("FAIL: no checkpoint appeared in time")


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
corpus = os.path.join(SRC, "data", "corpus")
texts = sorted(os.path.join(corpus, f) for f in os.listdir(corpus) if f.endswith(".txt"))
sample = os.path.join(WORK, "sample.txt")
with open(sample, "w") as out:
    for t in texts:
        out.write(open(t, encoding="utf-8", errors="replace").read()[:60000])
tok = os.path.join(WORK, "tokenizer.json")
run("tokenizer", "train", "--vocab-size", "384", "--out", tok, sample)
data = os.path.join(WORK, "data")
run("data", "prepare", "--tokenizer", tok, "--out", data, sample)

common = ["--data", data, "--preset", "tiny", "--steps", "12", "--batch", "4", "--seq-len", "32",
          "--save-every", "4", "--eval-every", "4", "--eval-windows", "4", "--seed", "5"]
a = os.path.join(WORK, "a")
run("pretrain", "--out", a, *common)
ref = losses(a)
assert sorted(ref) == list(range(1, 13)), f"metrics steps: {sorted(ref)}"

# 1. kill after the step-4 checkpoint, then resume
b = os.path.join(WORK, "b")
proc = subprocess.Popen([WHALE, "pretrain", "--out", b, *common], env=ENV,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
reached = wait_for_checkpoint(b, proc, 4)
if proc.poll() is None:
    proc.send_signal(signal.SIGKILL)
proc.wait()
if not reached:
    print("note: the run finished before it could be killed; resuming from its last checkpoint")
run("pretrain", "--out", b, "--resume", b, *common)
got = losses(b)
bad = [s for s in ref if got.get(s) != ref[s]]
if bad:
    sys.exit(f"FAIL: resumed run differs at steps {bad}: " +
             ", ".join(f"{s}: {got.get(s)} vs {ref[s]}" for s in bad[:4]))
print(f"resume: 12 steps identical to the uninterrupted run (final loss {ref[12][0]:.6f})")

# 2. SIGKILL at random moments
rng = random.Random(1)
c = os.path.join(WORK, "c")
kills = 0
for attempt in range(8):
    args = ["pretrain", "--out", c, "--data", data, "--preset", "tiny", "--steps", "100000", "--batch", "4",
            "--seq-len", "32", "--save-every", "1", "--eval-every", "0", "--seed", "5"]
    if os.path.exists(os.path.join(c, "latest")):
        args += ["--resume", c]
    proc = subprocess.Popen([WHALE, *args], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.2, 2.0))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        kills += 1
    proc.wait()
    if os.path.exists(os.path.join(c, "latest")):
        name = open(os.path.join(c, "latest")).read().strip()
        ckpt = os.path.join(c, name)
        run("inspect", "--model", ckpt)
        run("generate", "--model", ckpt, "--prompt-tokens", "1,2,3", "--max-tokens", "4", "--quiet")
if kills < 6:
    sys.exit(f"FAIL: only {kills} of 8 runs were still running when killed")
print(f"crash safety: {kills} SIGKILLs, the latest checkpoint loaded after each")

# 3. a BF16 / FP8 run also reports its weights' validation loss under an FP32 forward; FP32 runs do not
data_v = os.path.join(WORK, "data-val")  # 5 documents: hold 2 out so that there is a validation split
run("data", "prepare", "--tokenizer", tok, "--out", data_v, "--val-fraction", "0.3", sample)
short = ["--data", data_v, "--preset", "tiny", "--steps", "4", "--batch", "4", "--seq-len", "32", "--eval-windows", "4",
         "--seed", "6"]
out_a = run("pretrain", "--out", os.path.join(WORK, "a32"), *short).stdout
assert "with an FP32 forward" not in out_a, out_a
out8 = run("pretrain", "--out", os.path.join(WORK, "a8"), *short, "--precision", "fp8").stdout
own = float(re.search(r"validation loss ([0-9.]+),", out8).group(1))
m = re.search(r"validation loss ([0-9.]+) with an FP32 forward", out8)
assert m, f"no FP32-forward line in:\n{out8}"
f32 = float(m.group(1))
# the two forwards differ only by FP8 rounding of the projections: close, but not the same numbers
assert f32 != own and abs(f32 / own - 1) < 0.02, (own, f32)
print(f"fp8 run: validation loss {own:.4f} (fp8 forward), {f32:.4f} (fp32 forward of the same weights)")
