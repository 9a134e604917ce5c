"""Training loss and PyTorch-autograd gradients on top of the DeepSeek reference.

This is the reference for whale's hand-written backward pass (`whale grad`). The forward pass
is deepseek_ref.DeepseekRef, unchanged. Here every weight is a float64 leaf tensor with
requires_grad, and autograd differentiates the loss below.

    loss = CE_main + L * CE_mtp + A * sum over main MoE layers of L_bal

  * CE_main = mean over i = 0..n-2 of cross-entropy(logits[i], t[i+1]).
  * CE_mtp = mean over i = 0..n-3 of cross-entropy(mtp_logits[i], t[i+2]). It is used only
    when L > 0, the model has an MTP layer and n >= 3. Its gradient also reaches the main
    model through h_i. Nothing is detached.
  * L_bal is DeepSeek-V3's complementary sequence-wise balance loss (paper eq. 17-20) for one
    sequence over its T = n - 1 input positions (0..n-2; the last token is only a target):
        s'_{i,t} = s_{i,t} / sum_j s_{j,t}
        f_i      = N_r / (K_r T) * #{t : expert i selected for t}   (a constant)
        P_i      = (1/T) sum_t s'_{i,t}
        L_bal    = sum_i f_i P_i
    s is the router's sigmoid or softmax score, without e_score_correction_bias. The MTP
    layer's router is not part of it.
  * Routing is a constant: the top-k, the group choice and the correction bias only choose
    experts. Gradient reaches the router logits through the gathered scores (and their
    normalisation and scaling) and through P_i. This is what autograd does on the HF
    computation, where topk indices carry no gradient.

Gradients are named like the checkpoint's tensors. An FP8 tensor's gradient is taken with
respect to the dequantised weight and carries the weight's name. There are no gradients for
`*_scale_inv` or `*.e_score_correction_bias`. A tensor that does not reach the loss gets zeros.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deepseek_ref import DeepseekRef, Weights  # noqa: E402


def is_trainable(name):
    """Whether the checkpoint tensor `name` has a gradient in the contract of `whale grad`."""
    return not (name.endswith("_scale_inv") or name.endswith(".e_score_correction_bias"))


def trainable_names(ckpt_keys):
    return sorted(k for k in ckpt_keys if is_trainable(k))


class GradWeights(Weights):
    """Weights whose floating-point tensors are leaves that require grad. The correction bias
    is excluded: it only takes part in the (non-differentiable) expert choice."""

    def get(self, name):
        fresh = name not in self.cache
        t = super().get(name)
        if fresh and is_trainable(name) and t.is_floating_point():
            t.requires_grad_(True)
        return t


def router_scores(cfg, logits):
    if cfg.scoring_func == "softmax":
        return torch.softmax(logits, dim=-1)
    if cfg.scoring_func == "sigmoid":
        return torch.sigmoid(logits)
    raise NotImplementedError(f"scoring_func {cfg.scoring_func}")


def balance_loss(scores, topk_idx, n_routed_experts, k):
    """DeepSeek-V3 eq. 17-20 for one sequence. scores [T, N_r] without the bias, topk_idx [T, k]."""
    T = scores.shape[0]
    count = torch.zeros(n_routed_experts, dtype=scores.dtype)
    count.index_add_(0, topk_idx.reshape(-1), torch.ones(topk_idx.numel(), dtype=scores.dtype))
    f = count * (n_routed_experts / (k * T))  # constant: the selection indicator has no gradient
    s_norm = scores / scores.sum(dim=-1, keepdim=True)
    P = s_norm.mean(dim=0)
    return (f * P).sum()


class GradRef(DeepseekRef):
    """DeepseekRef with differentiable weights. It also records every main-layer router's
    scores and choices for the balance loss."""

    def __init__(self, model_dir, dtype=torch.float64, config=None):
        super().__init__(model_dir, dtype, config)
        self.w = GradWeights(self.w.ckpt, self.cfg, dtype)
        self._route_log = None

    def gate(self, prefix, x):
        idx, w, margin = super().gate(prefix, x)
        mtp_prefix = f"model.layers.{self.cfg.num_hidden_layers}."
        if self._route_log is not None and not prefix.startswith(mtp_prefix):
            scores = router_scores(self.cfg, self.w.linear(prefix + ".gate", x))
            # The scores are recomputed here. They must be the ones the gate's weights came from.
            g = scores.detach().gather(1, idx)
            if idx.shape[1] > 1 and self.cfg.norm_topk_prob:
                g = g / (g.sum(dim=-1, keepdim=True) + 1e-20)
            assert torch.allclose(g * self.cfg.routed_scaling_factor, w.detach(), rtol=1e-5, atol=0)
            self._route_log.append((prefix, scores, idx))
        return idx, w, margin.detach()


def cross_entropy(logits, targets):
    return torch.nn.functional.cross_entropy(logits, targets, reduction="mean")


def loss_terms(ref, tokens, mtp_lambda=0.0, balance_alpha=0.0):
    """Forward pass and the loss of the contract. Returns a dict with loss (a graph tensor),
    ce, mtp_ce, balance (floats or None) and margin, the smallest routing gap (near-ties) over
    every router that influenced the loss."""
    c = ref.cfg
    tokens = [int(t) for t in tokens]
    n = len(tokens)
    if n < 2:
        raise ValueError("the loss needs at least 2 tokens")
    use_mtp = mtp_lambda > 0 and bool(c.num_nextn_predict_layers) and n >= 3
    t = torch.tensor(tokens, dtype=torch.long)
    ref._route_log = []
    try:
        r = ref.forward(tokens, mtp=use_mtp)
        log = ref._route_log
    finally:
        ref._route_log = None
    ce = cross_entropy(r["logits"][:-1], t[1:])
    loss = ce
    out = dict(ce=float(ce), mtp_ce=None, balance=None, n_moe_layers=len(log))
    margin = float(r["margin"].detach().min())
    if use_mtp:
        mtp_ce = cross_entropy(r["mtp_logits"][:-1], t[2:])
        loss = loss + mtp_lambda * mtp_ce
        out["mtp_ce"] = float(mtp_ce)
        margin = min(margin, float(r["mtp_margin"].detach().min()))
    if log:
        # Only the n-1 input positions: the last token is a target, never an input of training.
        bal = sum(balance_loss(s[:-1], idx[:-1], c.n_routed_experts, c.num_experts_per_tok) for _, s, idx in log)
        out["balance"] = float(bal)
        if balance_alpha > 0:
            loss = loss + balance_alpha * bal
    out["loss"] = loss
    out["margin"] = margin
    return out


def compute_grads(ref, tokens, mtp_lambda=0.0, balance_alpha=0.0):
    """({checkpoint name: float64 numpy gradient} for every trainable tensor, loss_terms info).
    Tensors that do not reach the loss get zeros of the checkpoint shape."""
    names = trainable_names(ref.w.ckpt.keys())
    for name in names:  # make every tensor a leaf, also those this run does not touch
        ref.w.get(name)
    info = loss_terms(ref, tokens, mtp_lambda, balance_alpha)
    leaves = [ref.w.get(nm) for nm in names]
    grads = torch.autograd.grad(info["loss"], leaves, allow_unused=True)
    out = {}
    for name, leaf, g in zip(names, leaves, grads):
        if g is None:
            out[name] = np.zeros(tuple(leaf.shape), dtype=np.float64)
        else:
            out[name] = g.detach().to(torch.float64).numpy()
    info["loss"] = float(info["loss"])
    return out, info


def main():
    import argparse
    from safetensors_np import write_safetensors
    ap = argparse.ArgumentParser(description="reference gradients (the `whale grad` contract)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="comma separated token ids")
    ap.add_argument("--out", required=True, help="safetensors file of F32 gradients")
    ap.add_argument("--mtp-lambda", type=float, default=0.0)
    ap.add_argument("--balance-alpha", type=float, default=0.0)
    ap.add_argument("--float32", action="store_true")
    a = ap.parse_args()
    ref = GradRef(a.model, torch.float32 if a.float32 else torch.float64)
    toks = [int(s) for s in a.tokens.split(",") if s.strip()]
    grads, info = compute_grads(ref, toks, a.mtp_lambda, a.balance_alpha)
    write_safetensors(a.out, {k: ("F32", v.astype(np.float32)) for k, v in grads.items()})
    print(f"loss {info['loss']:.9g} ce {info['ce']:.9g} mtp_ce {info['mtp_ce']} balance {info['balance']}")


if __name__ == "__main__":
    main()
