#!/usr/bin/python3
"""CI test: whale's GRPO gradient (`whale grpo-grad`) against PyTorch autograd in float64 on
the independent reference model (tests/reference/deepseek_ref.py).

    test_grpo_ref.py WHALE_BINARY WORKDIR [--tol 1e-4] [--tie-margin 1e-5]

For a tiny random checkpoint and a few prompt+completion sequences it writes the inputs
(advantages, old and reference log-probs per completion token, clip range, beta, loss
normalisation) to JSON, runs whale, and computes here, independently of whale,

    L = sum_i sum_t w_i,t * ( -min(r A_i, clip(r, 1 - eps_low, 1 + eps_high) A_i) + beta * k3 )
    r = exp(logp - old),  k3 = exp(ref - logp) - (ref - logp) - 1

with logp = log_softmax(reference logits)[target] and w the GRPO / DAPO / Dr. GRPO weights
(sequence: 1/(S |o_i|), token: 1/sum|o|, constant: 1/(S max_tokens)). Old and reference log-probs
are the model's own plus offsets chosen away from the clip boundaries, so some tokens clip and
float32 rounding cannot flip a clipping decision. Each run checks, per tensor,
max|g_whale - g_ref| / max|g_ref| <= tol, and that tensors with no reference gradient get zeros.
A run whose routing has a near-tie (gap < tie-margin) is reported as 'tie' and not failed.
"""
import argparse
import json
import os
import re
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, "..", "reference")
sys.path.insert(0, REF)
from compare_whale import JITTER, run, tail, whale_cmd  # noqa: E402
from grad_ref import GradRef, trainable_names  # noqa: E402
from safetensors_np import Checkpoint  # noqa: E402

# (name, loss_norm, eps_low, eps_high, beta, with old log-probs)
RUNS = [
    ("grpo_seq", "sequence", 0.2, 0.2, 0.04, True),
    ("dapo_token_cliphigher", "token", 0.2, 0.28, 0.1, True),
    ("drgrpo_constant_nokl", "constant", 0.2, 0.2, 0.0, True),
    ("mu1_old_is_current", "sequence", 0.2, 0.2, 0.04, False),
]
MAX_TOKENS = 12
OFFSETS = [-0.5, -0.1, 0.05, 0.15, 0.4]  # r = exp(-offset): 1.65, 1.11, 0.95, 0.86, 0.67


def samples(vocab, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i, (p, c) in enumerate([(4, 6), (3, 9), (6, 4), (5, 7)]):
        out.append(dict(prompt=[int(t) for t in rng.integers(0, vocab, p)],
                        completion=[int(t) for t in rng.integers(0, vocab, c)],
                        advantage=[1.2, -0.7, 0.5, -1.1][i]))
    return out


def weights(lengths, norm):
    S = len(lengths)
    if norm == "sequence":
        return [1.0 / (S * n) for n in lengths]
    if norm == "token":
        return [1.0 / sum(lengths)] * S
    return [1.0 / (S * MAX_TOKENS)] * S


def completion_logprobs(ref, s):
    toks = s["prompt"] + s["completion"]
    r = ref.forward(toks, mtp=False)
    lsm = torch.log_softmax(r["logits"], dim=-1)
    p = len(s["prompt"])
    idx = torch.tensor(s["completion"], dtype=torch.long)
    return lsm[p - 1:p - 1 + len(s["completion"])].gather(1, idx[:, None])[:, 0], float(r["margin"].min())


def reference_grads(ref, ss, norm, el, eh, beta, names):
    for nm in names:
        ref.w.get(nm)
    ws = weights([len(s["completion"]) for s in ss], norm)
    loss = 0.0
    margin = float("inf")
    for s, w in zip(ss, ws):
        logp, m = completion_logprobs(ref, s)
        margin = min(margin, m)
        old = torch.tensor(s["old_logp"], dtype=torch.float64) if "old_logp" in s else logp.detach()
        r = torch.exp(logp - old)
        A = s["advantage"]
        pol = -torch.min(r * A, torch.clamp(r, 1 - el, 1 + eh) * A)
        term = pol
        if beta > 0:
            d = torch.tensor(s["ref_logp"], dtype=torch.float64) - logp
            term = term + beta * (torch.exp(d) - d - 1)
        loss = loss + w * term.sum()
    leaves = [ref.w.get(nm) for nm in names]
    gs = torch.autograd.grad(loss, leaves, allow_unused=True)
    out = {}
    for nm, leaf, g in zip(names, leaves, gs):
        out[nm] = np.zeros(tuple(leaf.shape)) if g is None else g.detach().numpy()
    return out, float(loss), margin


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("whale")
    ap.add_argument("workdir")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--zero-tol", type=float, default=1e-12)
    ap.add_argument("--tie-margin", type=float, default=1e-5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    wcmd = whale_cmd(os.path.abspath(a.whale) if os.path.exists(a.whale) else a.whale)
    os.makedirs(a.workdir, exist_ok=True)
    mdir = os.path.join(a.workdir, "v3_tiny")
    cfg = os.path.join(REF, "configs", "v3_tiny.json")
    rc, out, _ = run(wcmd + ["init", "--config", cfg, "--seed", "1234", "--out", mdir] + JITTER)
    if rc != 0:
        print("FAIL: whale init failed:\n" + tail(out))
        return 1
    ref = GradRef(mdir, torch.float64)
    names = trainable_names(ref.w.ckpt.keys())
    vocab = ref.cfg.vocab_size
    failures = 0
    for k, (tag, norm, el, eh, beta, with_old) in enumerate(RUNS):
        ss = samples(vocab, 100 + k)
        rng = np.random.default_rng(200 + k)
        with torch.no_grad():
            for s in ss:
                lp = completion_logprobs(ref, s)[0].numpy()
                if with_old:
                    s["old_logp"] = [float(v + OFFSETS[rng.integers(0, len(OFFSETS))]) for v in lp]
                s["ref_logp"] = [float(v + rng.normal(0, 0.3)) for v in lp]
        inp = dict(samples=ss, loss_norm=norm, max_tokens=MAX_TOKENS, clip_low=el, clip_high=eh, kl_beta=beta)
        ipath = os.path.join(a.workdir, tag + ".json")
        gpath = os.path.join(a.workdir, tag + ".safetensors")
        with open(ipath, "w") as f:
            json.dump(inp, f)
        ref_g, loss, margin = reference_grads(ref, ss, norm, el, eh, beta, names)
        rc, out, dt = run(wcmd + ["grpo-grad", "--model", mdir, "--input", ipath, "--out", gpath])
        if rc != 0:
            print(f"FAIL {tag}: whale grpo-grad rc={rc}\n{tail(out)}")
            failures += 1
            continue
        got = Checkpoint(gpath)
        gmax = max(float(np.abs(v).max()) for v in ref_g.values())
        worst, worst_name, bad = 0.0, "-", []
        for nm in names:
            if nm not in got.keys():
                bad.append(f"missing {nm}")
                continue
            g = got.get(nm).astype(np.float64)
            r = ref_g[nm]
            rmax = float(np.abs(r).max())
            if rmax == 0.0:
                if float(np.abs(g).max()) > a.zero_tol * gmax:
                    bad.append(f"{nm}: expected zeros, got max {float(np.abs(g).max()):.3g}")
                continue
            e = float(np.abs(g - r).max()) / rmax
            if not np.isfinite(e) or e > a.tol:
                bad.append(f"{nm}: rel err {e:.3g}")
            if e > worst:
                worst, worst_name = e, nm
        m = re.search(r"loss (\S+),", out)
        wl = float(m.group(1)) if m else float("nan")
        if not abs(wl - loss) <= 1e-5 * max(1.0, abs(loss)):
            bad.append(f"loss: whale {wl!r}, reference {loss!r}")
        status = "ok"
        if bad:
            status = "tie" if margin < a.tie_margin else "FAIL"
        print(f"{tag:24s} loss ref {loss:+.6f} whale {wl:+.6f}  worst {worst_name} {worst:.2e}  "
              f"margin {margin:.1e}  {status}")
        if status == "FAIL":
            failures += 1
            for b in bad[:8]:
                print("   " + b)
    print(f"{len(RUNS) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
