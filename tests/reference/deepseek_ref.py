"""Independent PyTorch reference forward pass for DeepSeek-V2 / V3 checkpoints.

Written from the published semantics of Hugging Face's modeling_deepseek.py
(DeepSeek-V2 / V3 remote code).  No KV cache: every call recomputes the whole
sequence (batch 1), by default in float64.

Conventions (where HF is silent or inconsistent, the choice for whale is stated):
  * RoPE: HF DeepSeek layout.  The rope part of q / k is stored as interleaved
    pairs (x0, x1), (x2, x3), ...; HF de-interleaves it with
    view(..., d/2, 2).transpose(-1, -2).reshape(...) and then applies
    rotate_half with cos/sin = cat(freqs, freqs).
  * YaRN (rope_scaling type/rope_type == "yarn") is applied whenever configured,
    independent of sequence length, as HF does (cos/sin cache built with YaRN
    inv_freq and scaled by yarn_get_mscale(factor, mscale) /
    yarn_get_mscale(factor, mscale_all_dim)); softmax_scale = q_head_dim^-0.5 *
    yarn_get_mscale(factor, mscale_all_dim)^2 when mscale_all_dim is non-zero.
  * MoE gate: V3 MoEGate.  noaux_tc masks experts of non-selected groups with
    -inf (as DeepSeek's own inference code; HF's remote code uses 0.0, which only
    differs when every biased score of the kept groups is negative).  Group score
    for noaux_tc = sum of the top-2 biased scores of the group.  Weights come
    from the unbiased scores.  If top_k > 1 and norm_topk_prob: w /= sum(w) + 1e-20.
    Then ALWAYS w *= routed_scaling_factor (V3 convention, also used for V2 configs).
  * MoE layer i iff n_routed_experts is not null and i >= first_k_dense_replace
    and i % moe_layer_freq == 0.
  * MTP (num_nextn_predict_layers == 1, layer index L = num_hidden_layers):
    for i = 0..n-2, x_i = eh_proj(cat([enorm(E(t_{i+1})), hnorm(h_i)])) where h_i
    is the main model's last decoder layer output BEFORE model.norm and E is
    model.layers.L.embed_tokens (falls back to model.embed_tokens).  The MTP
    decoder layer runs causally over x_0..x_{n-2} at positions 0..n-2;
    mtp_logits = shared_head.head(shared_head.norm(.)) (head falls back to
    lm_head).  Row i predicts t_{i+2}.
  * FP8 weights: any F8_E4M3 tensor X is dequantised with X_scale_inv and the
    block size quantization_config.weight_block_size (default [128, 128]).
"""
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import Checkpoint  # noqa: E402

# ---------------------------------------------------------------- config

_V3_DEFAULTS = dict(
    vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
    num_hidden_layers=61, num_nextn_predict_layers=1, num_attention_heads=128,
    n_shared_experts=1, n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512,
    q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128,
    topk_method="noaux_tc", n_group=8, topk_group=4, num_experts_per_tok=8, moe_layer_freq=1,
    first_k_dense_replace=3, norm_topk_prob=True, scoring_func="sigmoid", hidden_act="silu",
    max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False,
    rope_theta=10000.0, rope_scaling=None, attention_bias=False,
)
_V2_DEFAULTS = dict(
    vocab_size=102400, hidden_size=4096, intermediate_size=11008, moe_intermediate_size=1407,
    num_hidden_layers=30, num_nextn_predict_layers=0, num_attention_heads=32,
    n_shared_experts=None, n_routed_experts=None, routed_scaling_factor=1.0, kv_lora_rank=512,
    q_lora_rank=1536, qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128,
    topk_method="greedy", n_group=None, topk_group=None, num_experts_per_tok=None,
    moe_layer_freq=1, first_k_dense_replace=0, norm_topk_prob=False, scoring_func="softmax",
    hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
    tie_word_embeddings=False, rope_theta=10000.0, rope_scaling=None, attention_bias=False,
)


class Config:
    def __init__(self, d):
        self.raw = dict(d)
        defaults = _V2_DEFAULTS if d.get("model_type") == "deepseek_v2" else _V3_DEFAULTS
        for k, v in defaults.items():
            setattr(self, k, d.get(k, v))
        if self.topk_method == "gready":  # typo in HF's DeepseekV2Config default
            self.topk_method = "greedy"
        if self.num_nextn_predict_layers is None:
            self.num_nextn_predict_layers = 0
        if self.hidden_act != "silu":
            raise NotImplementedError(f"hidden_act {self.hidden_act}")
        self.q_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        q = d.get("quantization_config") or {}
        self.weight_block_size = tuple(q.get("weight_block_size") or (128, 128))
        rs = self.rope_scaling
        self.rope_type = None
        if rs:
            self.rope_type = rs.get("type", rs.get("rope_type"))
            if self.rope_type not in ("yarn",):
                raise NotImplementedError(f"rope_scaling type {self.rope_type}")

    @staticmethod
    def load(path):
        with open(path) as f:
            return Config(json.load(f))

    def is_moe_layer(self, i):
        return (self.n_routed_experts is not None and i >= self.first_k_dense_replace
                and i % self.moe_layer_freq == 0)


# ---------------------------------------------------------------- YaRN / RoPE


def yarn_find_correction_dim(num_rotations, dim, base=10000, max_position_embeddings=2048):
    return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def yarn_find_correction_range(low_rot, high_rot, dim, base=10000, max_position_embeddings=2048):
    low = math.floor(yarn_find_correction_dim(low_rot, dim, base, max_position_embeddings))
    high = math.ceil(yarn_find_correction_dim(high_rot, dim, base, max_position_embeddings))
    return max(low, 0), min(high, dim - 1)


def yarn_get_mscale(scale=1.0, mscale=1.0):
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def yarn_linear_ramp_mask(lo, hi, n, dtype=torch.float64):
    if lo == hi:
        hi += 0.001
    f = (torch.arange(n, dtype=dtype) - lo) / (hi - lo)
    return torch.clamp(f, 0, 1)


def rope_inv_freq_and_mscale(cfg, dtype=torch.float64):
    """(inv_freq [rope_dim/2], cos/sin multiplier)."""
    dim = cfg.qk_rope_head_dim
    base = float(cfg.rope_theta)
    exps = torch.arange(0, dim, 2, dtype=dtype) / dim
    freq_extra = 1.0 / (base ** exps)
    if cfg.rope_type != "yarn":
        return freq_extra, 1.0
    rs = cfg.rope_scaling
    factor = float(rs["factor"])
    omax = rs.get("original_max_position_embeddings", 4096)
    beta_fast = rs.get("beta_fast", 32)
    beta_slow = rs.get("beta_slow", 1)
    mscale = rs.get("mscale", 1)
    mscale_all_dim = rs.get("mscale_all_dim", 0)
    freq_inter = 1.0 / (factor * base ** exps)
    low, high = yarn_find_correction_range(beta_fast, beta_slow, dim, base, omax)
    inv_freq_mask = 1.0 - yarn_linear_ramp_mask(low, high, dim // 2, dtype)
    inv_freq = freq_inter * (1 - inv_freq_mask) + freq_extra * inv_freq_mask
    m = float(yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim))
    return inv_freq, m


def softmax_scale(cfg):
    s = cfg.q_head_dim ** -0.5
    if cfg.rope_type == "yarn":
        mad = cfg.rope_scaling.get("mscale_all_dim", 0)
        if mad:
            m = yarn_get_mscale(float(cfg.rope_scaling["factor"]), mad)
            s = s * m * m
    return s


def rope_cos_sin(cfg, positions, dtype=torch.float64):
    """cos, sin of shape [n, rope_dim] (= cat(freqs, freqs)), already multiplied by the YaRN mscale."""
    inv_freq, m = rope_inv_freq_and_mscale(cfg, torch.float64)
    t = positions.to(torch.float64)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return (emb.cos() * m).to(dtype), (emb.sin() * m).to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    """x: [..., n, d] with interleaved-pair layout; cos/sin: [n, d].  HF DeepSeek convention."""
    d = x.shape[-1]
    x = x.reshape(*x.shape[:-1], d // 2, 2).transpose(-1, -2).reshape(*x.shape[:-1], d)
    return x * cos + rotate_half(x) * sin


# ---------------------------------------------------------------- model


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


class Weights:
    def __init__(self, ckpt, cfg, dtype):
        self.ckpt = ckpt
        self.cfg = cfg
        self.dtype = dtype
        self.used = set()
        self.cache = {}

    def __contains__(self, name):
        return name in self.ckpt

    def get(self, name):
        if name not in self.cache:
            if name not in self.ckpt:
                raise KeyError(f"checkpoint is missing tensor {name}")
            arr = self.ckpt.get_dequant(name, self.cfg.weight_block_size)
            self.used.add(name)
            if self.ckpt.dtype(name) == "F8_E4M3":
                self.used.add(name + "_scale_inv")
            self.cache[name] = torch.from_numpy(np.asarray(arr, dtype=np.float64)).to(self.dtype)
        return self.cache[name]

    def linear(self, prefix, x, shape=None):
        w = self.get(prefix + ".weight")
        if shape is not None and tuple(w.shape) != tuple(shape):
            raise ValueError(f"{prefix}.weight has shape {tuple(w.shape)}, expected {tuple(shape)}")
        y = x @ w.T
        if prefix + ".bias" in self.ckpt:
            y = y + self.get(prefix + ".bias")
        return y


class DeepseekRef:
    def __init__(self, model_dir, dtype=torch.float64, config=None):
        self.dir = model_dir
        self.cfg = config if config is not None else Config.load(os.path.join(model_dir, "config.json"))
        self.dtype = dtype
        self.w = Weights(Checkpoint(model_dir), self.cfg, dtype)

    # -------------------------------------------------- building blocks
    def norm(self, name, x):
        w = self.w.get(name)
        if tuple(w.shape) != (x.shape[-1],):
            raise ValueError(f"{name} has shape {tuple(w.shape)}, expected ({x.shape[-1]},)")
        return rms_norm(x, w, self.cfg.rms_norm_eps)

    def swiglu(self, prefix, x, inter):
        H = self.cfg.hidden_size
        g = self.w.linear(prefix + ".gate_proj", x, (inter, H))
        u = self.w.linear(prefix + ".up_proj", x, (inter, H))
        return self.w.linear(prefix + ".down_proj", torch.nn.functional.silu(g) * u, (H, inter))

    def attention(self, prefix, x, positions, return_heads=False):
        """MLA.  x: [n, H].  Returns [n, H] (or per-head outputs [h, n, v_head_dim] before o_proj)."""
        c = self.cfg
        n, H = x.shape
        nh, dn, dr, dv = c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        dq = dn + dr
        if c.q_lora_rank is None:
            q = self.w.linear(prefix + ".q_proj", x, (nh * dq, H))
        else:
            qa = self.w.linear(prefix + ".q_a_proj", x, (c.q_lora_rank, H))
            q = self.w.linear(prefix + ".q_b_proj", self.norm(prefix + ".q_a_layernorm.weight", qa),
                              (nh * dq, c.q_lora_rank))
        q = q.view(n, nh, dq).transpose(0, 1)  # [h, n, dq]
        q_nope, q_pe = q[..., :dn], q[..., dn:]
        ckv = self.w.linear(prefix + ".kv_a_proj_with_mqa", x, (c.kv_lora_rank + dr, H))
        compressed, k_pe = ckv[:, :c.kv_lora_rank], ckv[:, c.kv_lora_rank:]
        kv = self.w.linear(prefix + ".kv_b_proj", self.norm(prefix + ".kv_a_layernorm.weight", compressed),
                           (nh * (dn + dv), c.kv_lora_rank))
        kv = kv.view(n, nh, dn + dv).transpose(0, 1)  # [h, n, dn+dv]
        k_nope, v = kv[..., :dn], kv[..., dn:]
        cos, sin = rope_cos_sin(c, positions, self.dtype)
        q_pe = apply_rope(q_pe, cos, sin)
        k_pe = apply_rope(k_pe.unsqueeze(0), cos, sin)  # [1, n, dr], shared by all heads
        qs = torch.cat([q_nope, q_pe], dim=-1)
        ks = torch.cat([k_nope, k_pe.expand(nh, n, dr)], dim=-1)
        scores = (qs @ ks.transpose(-1, -2)) * softmax_scale(c)  # [h, n, n]
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        p = torch.softmax(scores, dim=-1)
        o = p @ v  # [h, n, dv]
        if return_heads:
            return o
        o = o.transpose(0, 1).reshape(n, nh * dv)
        return self.w.linear(prefix + ".o_proj", o, (H, nh * dv))

    def gate(self, prefix, x):
        """MoE router.  Returns (topk_idx [n, k], topk_weight [n, k], margin [n]).
        margin = smallest gap at a selection boundary (group choice or expert choice) per token,
        useful to tell genuine mismatches from near-ties."""
        c = self.cfg
        E, k = c.n_routed_experts, c.num_experts_per_tok
        n = x.shape[0]
        logits = self.w.linear(prefix + ".gate", x, (E, c.hidden_size))
        if c.scoring_func == "softmax":
            scores = torch.softmax(logits, dim=-1)
        elif c.scoring_func == "sigmoid":
            scores = torch.sigmoid(logits)
        else:
            raise NotImplementedError(f"scoring_func {c.scoring_func}")
        inf = torch.full((n,), float("inf"), dtype=scores.dtype)
        group_margin = inf
        if c.topk_method == "greedy":
            choice = scores
        elif c.topk_method in ("group_limited_greedy", "noaux_tc"):
            G, TG = c.n_group, c.topk_group
            if E % G:
                raise ValueError("n_routed_experts must be divisible by n_group")
            if c.topk_method == "noaux_tc":
                bias = self.w.get(prefix + ".gate.e_score_correction_bias")
                choice_all = scores + bias.unsqueeze(0)
                per = choice_all.view(n, G, E // G)
                group_scores = per.topk(min(2, E // G), dim=-1)[0].sum(dim=-1)
                fill = float("-inf")
            else:
                choice_all = scores
                group_scores = scores.view(n, G, E // G).max(dim=-1).values
                fill = 0.0
            gsorted = group_scores.sort(dim=-1, descending=True).values
            if TG < G:
                group_margin = gsorted[:, TG - 1] - gsorted[:, TG]
            group_idx = torch.topk(group_scores, k=TG, dim=-1)[1]
            gmask = torch.zeros(n, G, dtype=torch.bool)
            gmask.scatter_(1, group_idx, True)
            smask = gmask.unsqueeze(-1).expand(n, G, E // G).reshape(n, E)
            choice = choice_all.masked_fill(~smask, fill)
        else:
            raise NotImplementedError(f"topk_method {c.topk_method}")
        topk_idx = torch.topk(choice, k=k, dim=-1)[1]
        csorted = choice.sort(dim=-1, descending=True).values
        if k < E:
            expert_margin = csorted[:, k - 1] - csorted[:, k]
            expert_margin = torch.where(torch.isnan(expert_margin), inf, expert_margin)
        else:
            expert_margin = inf
        w = scores.gather(1, topk_idx)
        if k > 1 and c.norm_topk_prob:
            w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
        w = w * c.routed_scaling_factor
        return topk_idx, w, torch.minimum(group_margin, expert_margin)

    def moe(self, prefix, x):
        c = self.cfg
        n = x.shape[0]
        idx, wts, margin = self.gate(prefix, x)
        y = torch.zeros_like(x)
        for e in range(c.n_routed_experts):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            out = self.swiglu(f"{prefix}.experts.{e}", x[rows], c.moe_intermediate_size)
            y.index_add_(0, rows, out * wts[rows, slot].unsqueeze(-1))
        if c.n_shared_experts:
            y = y + self.swiglu(prefix + ".shared_experts", x, c.moe_intermediate_size * c.n_shared_experts)
        self._margins.append(margin)
        return y

    def decoder_layer(self, i, x, positions):
        p = f"model.layers.{i}"
        h = x + self.attention(p + ".self_attn", self.norm(p + ".input_layernorm.weight", x), positions)
        hn = self.norm(p + ".post_attention_layernorm.weight", h)
        if self.cfg.is_moe_layer(i):
            m = self.moe(p + ".mlp", hn)
        else:
            m = self.swiglu(p + ".mlp", hn, self.cfg.intermediate_size)
        return h + m

    def embed(self, name, tokens):
        E = self.w.get(name)
        if tuple(E.shape) != (self.cfg.vocab_size, self.cfg.hidden_size):
            raise ValueError(f"{name} has shape {tuple(E.shape)}")
        return E[tokens]

    def lm_head_weight(self):
        if self.cfg.tie_word_embeddings and "lm_head.weight" not in self.w:
            return self.w.get("model.embed_tokens.weight")
        return self.w.get("lm_head.weight")

    # -------------------------------------------------- full forward
    def forward(self, tokens, mtp=True):
        """tokens: list of ints.  Returns dict with
        logits [n, V], hidden (last decoder layer output before model.norm) [n, H],
        mtp_logits [n-1, V] or None, margin [n] (min routing margin over main layers),
        mtp_margin [n-1] or None."""
        c = self.cfg
        t = torch.tensor(list(tokens), dtype=torch.long)
        if t.numel() == 0:
            raise ValueError("empty token list")
        if int(t.min()) < 0 or int(t.max()) >= c.vocab_size:
            raise ValueError("token id out of range")
        n = t.numel()
        pos = torch.arange(n)
        self._margins = []
        x = self.embed("model.embed_tokens.weight", t)
        for i in range(c.num_hidden_layers):
            x = self.decoder_layer(i, x, pos)
        hidden = x
        logits = self.norm("model.norm.weight", x) @ self.lm_head_weight().T
        inf = torch.full((n,), float("inf"), dtype=self.dtype)
        margin = torch.stack(self._margins).min(0).values if self._margins else inf
        out = dict(logits=logits, hidden=hidden, mtp_logits=None, margin=margin, mtp_margin=None)
        if mtp and c.num_nextn_predict_layers:
            if c.num_nextn_predict_layers != 1:
                raise NotImplementedError("only num_nextn_predict_layers == 1 is supported")
            if n >= 2:
                out["mtp_logits"], out["mtp_margin"] = self.mtp_forward(t, hidden)
        return out

    def mtp_forward(self, t, hidden):
        c = self.cfg
        L = c.num_hidden_layers
        p = f"model.layers.{L}"
        m = t.numel() - 1
        ename = p + ".embed_tokens.weight"
        if ename not in self.w:
            ename = "model.embed_tokens.weight"
        e = self.norm(p + ".enorm.weight", self.embed(ename, t[1:]))
        h = self.norm(p + ".hnorm.weight", hidden[:m])
        x = self.w.linear(p + ".eh_proj", torch.cat([e, h], dim=-1), (c.hidden_size, 2 * c.hidden_size))
        self._margins = []
        x = self.decoder_layer(L, x, torch.arange(m))
        head = p + ".shared_head.head.weight"
        hw = self.w.get(head) if head in self.w else self.lm_head_weight()
        logits = self.norm(p + ".shared_head.norm.weight", x) @ hw.T
        margin = torch.stack(self._margins).min(0).values if self._margins else \
            torch.full((m,), float("inf"), dtype=self.dtype)
        return logits, margin

    def unused_tensors(self):
        return sorted(set(self.w.ckpt.keys()) - self.w.used)


def main():
    import argparse
    ap = argparse.ArgumentParser(description="DeepSeek reference logits")
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="comma separated token ids")
    ap.add_argument("--out", required=True, help="little-endian float32 logits [n, vocab]")
    ap.add_argument("--mtp-out")
    ap.add_argument("--float32", action="store_true")
    a = ap.parse_args()
    ref = DeepseekRef(a.model, torch.float32 if a.float32 else torch.float64)
    toks = [int(s) for s in a.tokens.split(",") if s.strip()]
    r = ref.forward(toks, mtp=bool(a.mtp_out))
    r["logits"].to(torch.float32).numpy().astype("<f4").tofile(a.out)
    if a.mtp_out and r["mtp_logits"] is not None:
        r["mtp_logits"].to(torch.float32).numpy().astype("<f4").tofile(a.mtp_out)


if __name__ == "__main__":
    main()
