"""The implementation behind fake_whale.py: make_checkpoint.py for `init`, the reference in
float32 for `logits` and `grad`, and the seeded bugs listed in fake_whale.py. It lives apart
from the CLI so that `fake_whale.py --help` answers without importing torch."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_ref  # noqa: E402
import grad_ref  # noqa: E402
from make_checkpoint import make_checkpoint  # noqa: E402
from safetensors_np import write_safetensors  # noqa: E402


class BuggyGradRef(grad_ref.GradRef):
    """GradRef with a seeded mistake of the kind a hand-written backward pass makes."""

    def __init__(self, model_dir, dtype, bug):
        super().__init__(model_dir, dtype)
        self.bug = bug

    def gate(self, prefix, x):
        idx, w, margin = super().gate(prefix, x)
        c = self.cfg
        if self.bug == "topk_norm_const" and idx.shape[1] > 1 and c.norm_topk_prob:
            s = grad_ref.router_scores(c, self.w.linear(prefix + ".gate", x)).gather(1, idx)
            w = s / (s.sum(dim=-1, keepdim=True).detach() + 1e-20) * c.routed_scaling_factor
        if self.bug == "bal_biased" and self._route_log and self._route_log[-1][0] == prefix:
            bias = prefix + ".gate.e_score_correction_bias"
            if bias in self.w:
                p, s, i = self._route_log[-1]
                self._route_log[-1] = (p, s + self.w.get(bias), i)
        return idx, w, margin

    def mtp_forward(self, t, hidden):
        return super().mtp_forward(t, hidden.detach() if self.bug == "mtp_detach" else hidden)

    def lm_head_weight(self):
        w = super().lm_head_weight()
        untie = self.bug == "untie" and self.cfg.tie_word_embeddings
        return w.detach().clone() if untie else w


def patch_forward(bug):
    if bug == "rope_layout":
        def apply_rope(x, cos, sin):
            return x * cos + deepseek_ref.rotate_half(x) * sin
        deepseek_ref.apply_rope = apply_rope
    elif bug == "no_mscale":
        deepseek_ref.softmax_scale = lambda cfg: cfg.q_head_dim ** -0.5


def patch_balance(bug):
    orig = grad_ref.balance_loss

    def balance_loss(scores, topk_idx, n_routed_experts, k):
        if bug == "bal_unnormalised":
            T = scores.shape[0]
            count = torch.zeros(n_routed_experts, dtype=scores.dtype)
            count.index_add_(0, topk_idx.reshape(-1), torch.ones(topk_idx.numel(), dtype=scores.dtype))
            return (count * (n_routed_experts / (k * T)) * scores.mean(dim=0)).sum()
        if bug == "bal_T":
            T = scores.shape[0]
            return orig(scores, topk_idx, n_routed_experts, k) * T / (T - 1)
        return orig(scores, topk_idx, n_routed_experts, k)
    grad_ref.balance_loss = balance_loss


def cmd_grad(a, bug):
    if bug == "grad_crash":
        print("grad: deliberate failure", file=sys.stderr)
        return 1
    ref = BuggyGradRef(a.model, torch.float32, bug)
    toks = [int(s) for s in a.tokens.split(",") if s.strip()]
    grads, info = grad_ref.compute_grads(ref, toks, a.mtp_lambda, a.balance_alpha)
    gmax = max(float(np.abs(g).max()) for g in grads.values())
    if bug == "grad_perturb":
        g = grads["model.layers.0.self_attn.kv_b_proj.weight"]
        g.flat[7] += 1e-3 * np.abs(g).max()
    elif bug == "missing_name":
        del grads["model.norm.weight"]
    elif bug == "extra_name":
        extra = sorted(k for k in ref.w.ckpt.keys() if not grad_ref.is_trainable(k))
        grads[extra[0] if extra else "lm_head.weight_scale_inv"] = np.zeros((1, 1))
    elif bug == "zero_leak":
        zero = sorted(k for k, g in grads.items() if not g.any())
        if zero:
            grads[zero[0]].flat[0] = 1e-9 * gmax
    dt = "F64" if bug == "f64" else "F32"
    write_safetensors(a.out, {k: (dt, v) for k, v in grads.items()})
    print(f"loss {info['loss']:.7g}")
    return 0


def run(a, bug):
    torch.set_num_threads(1)
    patch_forward(bug)
    patch_balance(bug)
    if a.cmd == "init":
        make_checkpoint(a.config, a.out, a.seed, a.dtype, a.norm_jitter, a.router_bias_std)
        return 0
    if a.cmd == "grad":
        return cmd_grad(a, bug)
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
