#!/usr/bin/python3
"""Stand-in for the whale binary, implementing the CLI contract compare_whale.py expects,
built from make_checkpoint.py + the reference run in float32.  Used to test the harness:

    compare_whale.py tests/reference/fake_whale.py WORKDIR

FAKE_WHALE_BUG=<name> deliberately breaks it (to check the harness catches errors):
    rope_layout   rotate the rope dims as half-split instead of HF's interleaved pairs
    no_mscale     drop the YaRN mscale^2 factor from the softmax scale
    perturb       add 1e-3 * max|row| to one logit of the last row
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_ref  # noqa: E402
from make_checkpoint import make_checkpoint  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--config", required=True)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--out", required=True)
    i.add_argument("--dtype", default="bf16", choices=["f32", "bf16", "fp8"])
    lg = sub.add_parser("logits")
    lg.add_argument("--model", required=True)
    lg.add_argument("--tokens", required=True)
    lg.add_argument("--out", required=True)
    lg.add_argument("--mtp-out")
    lg.add_argument("--attn", default="default", choices=["default", "naive"])
    a = ap.parse_args()
    if a.cmd == "init":
        make_checkpoint(a.config, a.out, a.seed, a.dtype)
        return 0
    torch.set_num_threads(1)
    bug = os.environ.get("FAKE_WHALE_BUG", "")
    if bug == "rope_layout":
        def apply_rope(x, cos, sin):
            return x * cos + deepseek_ref.rotate_half(x) * sin
        deepseek_ref.apply_rope = apply_rope
    elif bug == "no_mscale":
        deepseek_ref.softmax_scale = lambda cfg: cfg.q_head_dim ** -0.5
    ref = deepseek_ref.DeepseekRef(a.model, torch.float32)
    toks = [int(s) for s in a.tokens.split(",") if s.strip()]
    r = ref.forward(toks, mtp=bool(a.mtp_out))
    logits = r["logits"].numpy().astype("<f4")
    if bug == "perturb":
        logits[-1, 3] += 1e-3 * np.abs(logits[-1]).max()
    logits.tofile(a.out)
    if a.mtp_out:
        if r["mtp_logits"] is None:
            print("model has no MTP layer", file=sys.stderr)
            return 1
        r["mtp_logits"].numpy().astype("<f4").tofile(a.mtp_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
