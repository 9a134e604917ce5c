#!/usr/bin/python3
"""Stand-in for the whale binary. It implements the CLI contract that compare_whale.py and
compare_grads.py expect, using make_checkpoint.py and the reference run in float32
(fake_whale_impl.py, imported after the arguments are parsed, so `--help` is fast). It is
used to test the harnesses:

    compare_whale.py tests/reference/fake_whale.py WORKDIR
    compare_grads.py tests/reference/fake_whale.py WORKDIR

FAKE_WHALE_BUG=<name> deliberately breaks it (to check that the harnesses catch errors).
Forward bugs (they also reach `grad`):
    rope_layout       rotate the rope dims as half-split instead of HF's interleaved pairs
    no_mscale         drop the YaRN mscale^2 factor from the softmax scale
    perturb           add 1e-3 * max|row| to one logit of the last row
Bugs of `grad` only:
    no_grad           there is no grad subcommand (compare_grads.py must SKIP)
    grad_crash        grad exits with status 1
    grad_perturb      add 1e-3 * max|g| to one element of kv_b_proj's gradient in layer 0
    bal_biased        balance loss from scores + e_score_correction_bias
    bal_unnormalised  balance loss without s' = s / sum_j s (matters for sigmoid scoring)
    bal_T             balance loss with T = n - 1
    topk_norm_const   no gradient through the top-k weight normalisation denominator
    mtp_detach        the MTP loss does not reach the main model through h_i
    untie             tied embeddings: the LM head's use is not added to embed_tokens' gradient
    missing_name      leave out model.norm.weight
    extra_name        also write a gradient for the first e_score_correction_bias / _scale_inv
                      (or for lm_head.weight_scale_inv when there is neither)
    zero_leak         write 1e-9 * max|g| into the first tensor whose gradient is zero, if any
    f64               write the gradients as F64
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    bug = os.environ.get("FAKE_WHALE_BUG", "")
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--config", required=True)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--out", required=True)
    i.add_argument("--dtype", default="bf16", choices=["f32", "bf16", "fp8"])
    i.add_argument("--norm-jitter", type=float, default=0.2)
    i.add_argument("--router-bias-std", type=float, default=0.05)
    lg = sub.add_parser("logits")
    lg.add_argument("--model", required=True)
    lg.add_argument("--tokens", required=True)
    lg.add_argument("--out", required=True)
    lg.add_argument("--mtp-out")
    lg.add_argument("--attn", default="default", choices=["default", "naive", "absorb"])  # all the same here
    lg.add_argument("--chunk", type=int, default=0)  # ignored: the reference has no cache
    if bug != "no_grad":
        g = sub.add_parser("grad")
        g.add_argument("--model", required=True)
        g.add_argument("--tokens", required=True)
        g.add_argument("--out", required=True)
        g.add_argument("--mtp-lambda", type=float, default=0.0)
        g.add_argument("--balance-alpha", type=float, default=0.0)
    a = ap.parse_args()
    from fake_whale_impl import run
    return run(a, bug)


if __name__ == "__main__":
    sys.exit(main())
