#!/usr/bin/python3
"""PyTorch baseline for bench_train: the same DeepSeek-V3 training step in float32 eager PyTorch
(or, with --precision bf16, under CPU autocast to bfloat16).

    /usr/bin/python3 bench/torch_train.py --config bench/configs/train-10m.json \
        --batch 8 --seq-len 128 --steps 5 --threads 2

The model is a batched nn.Module with trainable parameters and random init, following Hugging
Face's modeling_deepseek.py (the semantics documented in tests/reference/README.md; the config,
RoPE/YaRN tables, RoPE application and softmax scale are imported from
tests/reference/deepseek_ref.py so the two cannot drift):

  * MLA with the q LoRA (q_a_proj -> q_a_layernorm -> q_b_proj), compressed kv with a shared
    rope key, kv_b_proj, causal softmax attention, o_proj; YaRN RoPE when configured.
  * Dense SwiGLU for the first first_k_dense_replace layers, then MoE: sigmoid scores,
    noaux_tc group-limited top-k on the biased scores, weights from the unbiased scores,
    normalised and scaled by routed_scaling_factor; shared experts. Routed experts run on the
    tokens grouped per expert (one sort, one index_select, a split, per-expert matmuls, one
    index_add), as HF's inference path does.
  * MTP module (DeepSeek-V3 eq. 21-25) with weight mtp_lambda = 0.3, embedding and head shared
    with the main model; final norm, LM head, cross-entropy; the complementary sequence-wise
    balance loss with alpha = 1e-4, averaged over the sequences.

It mirrors what build/bench_train times: random tokens [B, T+1], one warm-up step, then
`steps` timed steps of forward + backward + clip_grad_norm(1.0) + AdamW (betas 0.9/0.95,
eps 1e-8, weight decay 0.1 except on 1-D tensors). Prints `torch tokens/s: X`.
"""
import argparse
import os
import resource
import sys
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mtp-lambda", type=float, default=0.3)
    ap.add_argument("--balance-alpha", type=float, default=1e-4)
    ap.add_argument("--foreach", choices=("auto", "on", "off"), default="auto",
                    help="AdamW multi-tensor path (auto: on, it is the faster one here)")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one step")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: forward under torch.autocast('cpu', dtype=torch.bfloat16) (matmuls in BF16 on "
                         "oneDNN, FP32 master weights and optimizer), the counterpart of whale's bf16 mode")
    return ap.parse_args()


args = parse_args()
# Debian's torch calls the system BLAS (OpenBLAS, pthread build); it reads its thread count when
# it is loaded, and torch.set_num_threads does not reach it. Set it before importing torch.
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from deepseek_ref import Config, apply_rope, rope_cos_sin, softmax_scale  # noqa: E402

STD = 0.02


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def linear(i, o):
    lin = nn.Linear(i, o, bias=False)
    nn.init.normal_(lin.weight, std=STD)
    return lin


class MLP(nn.Module):  # SwiGLU: down(silu(gate(x)) * up(x))
    def __init__(self, h, inter):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = linear(h, inter), linear(h, inter), linear(inter, h)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MLA(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        H, nh = c.hidden_size, c.num_attention_heads
        self.nh, self.dn, self.dr, self.dv = nh, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        self.dq = self.dn + self.dr
        if c.q_lora_rank is None:
            self.q_proj = linear(H, nh * self.dq)
        else:
            self.q_a_proj = linear(H, c.q_lora_rank)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank, c.rms_norm_eps)
            self.q_b_proj = linear(c.q_lora_rank, nh * self.dq)
        self.kv_a_proj_with_mqa = linear(H, c.kv_lora_rank + self.dr)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, c.rms_norm_eps)
        self.kv_b_proj = linear(c.kv_lora_rank, nh * (self.dn + self.dv))
        self.o_proj = linear(nh * self.dv, H)
        self.scale = softmax_scale(c)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        nh, dn, dr, dv = self.nh, self.dn, self.dr, self.dv
        if self.c.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, T, nh, self.dq).transpose(1, 2)  # [B, h, T, dq]
        q_nope, q_pe = q.split([dn, dr], dim=-1)
        compressed, k_pe = self.kv_a_proj_with_mqa(x).split([self.c.kv_lora_rank, dr], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(compressed)).view(B, T, nh, dn + dv).transpose(1, 2)
        k_nope, v = kv.split([dn, dv], dim=-1)
        q_pe = apply_rope(q_pe, cos, sin)
        k_pe = apply_rope(k_pe.unsqueeze(1), cos, sin)  # [B, 1, T, dr], shared by the heads
        qs = torch.cat([q_nope, q_pe], dim=-1).reshape(B * nh, T, self.dq)
        ks = torch.cat([k_nope, k_pe.expand(B, nh, T, dr)], dim=-1).reshape(B * nh, T, self.dq)
        # scale * q k^T + causal mask (0 / -inf) in one baddbmm
        scores = torch.baddbmm(mask, qs, ks.transpose(1, 2), beta=1.0, alpha=self.scale)
        p = torch.softmax(scores, dim=-1)
        o = torch.bmm(p, v.reshape(B * nh, T, dv))  # [B*h, T, dv]
        o = o.view(B, nh, T, dv).transpose(1, 2).reshape(B, T, nh * dv)
        return self.o_proj(o)


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        E, H = c.n_routed_experts, c.hidden_size
        self.gate = nn.Parameter(torch.empty(E, H).normal_(std=STD))
        self.register_buffer("e_score_correction_bias", torch.zeros(E))
        self.experts = nn.ModuleList(MLP(H, c.moe_intermediate_size) for _ in range(E))
        self.shared_experts = (MLP(H, c.moe_intermediate_size * c.n_shared_experts)
                               if c.n_shared_experts else None)

    def route(self, x):
        """x [N, H] -> (unbiased scores [N, E], expert ids [N, K], weights [N, K])."""
        c = self.c
        E, K = c.n_routed_experts, c.num_experts_per_tok
        N = x.shape[0]
        scores = torch.sigmoid(F.linear(x, self.gate)) if c.scoring_func == "sigmoid" \
            else torch.softmax(F.linear(x, self.gate), dim=-1)
        with torch.no_grad():  # the choice carries no gradient
            if c.topk_method == "noaux_tc":
                choice = scores + self.e_score_correction_bias
                G, TG = c.n_group, c.topk_group
                per = choice.view(N, G, E // G)
                gs = per.topk(min(2, E // G), dim=-1).values.sum(-1)
                if TG < G:
                    gidx = gs.topk(TG, dim=-1).indices
                    keep = torch.zeros(N, G, dtype=torch.bool).scatter_(1, gidx, True)
                    choice = per.masked_fill(~keep.unsqueeze(-1), float("-inf")).view(N, E)
            elif c.topk_method == "greedy":
                choice = scores
            else:
                raise NotImplementedError(f"topk_method {c.topk_method}")
            idx = choice.topk(K, dim=-1).indices
        w = scores.gather(1, idx)
        if K > 1 and c.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        return scores, idx, w * c.routed_scaling_factor

    def forward(self, x):
        B, T, H = x.shape
        K = self.c.num_experts_per_tok
        xf = x.reshape(B * T, H)
        scores, idx, w = self.route(xf)
        # group the N*K assignments by expert
        flat = idx.reshape(-1)
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=self.c.n_routed_experts).tolist()
        rows = order // K
        xs = xf.index_select(0, rows).split(counts)
        outs = [self.experts[e](xs[e]) for e in range(len(counts)) if counts[e] > 0]
        out = torch.cat(outs) * w.reshape(-1).index_select(0, order).unsqueeze(1)
        y = out.new_zeros(B * T, H).index_add(0, rows, out)  # out is BF16 under autocast
        if self.shared_experts is not None:
            y = y + self.shared_experts(xf)
        self.last_route = (scores.view(B, T, -1), idx.view(B, T, K))
        return y.view(B, T, H)


class DecoderLayer(nn.Module):
    def __init__(self, c, moe):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = MLA(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MoE(c) if moe else MLP(c.hidden_size, c.intermediate_size)

    def forward(self, x, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class MTP(nn.Module):  # embed_tokens and shared_head.head are the main model's
    def __init__(self, c):
        super().__init__()
        H = c.hidden_size
        self.enorm, self.hnorm = RMSNorm(H, c.rms_norm_eps), RMSNorm(H, c.rms_norm_eps)
        self.eh_proj = linear(2 * H, H)
        self.layer = DecoderLayer(c, c.is_moe_layer(c.num_hidden_layers))
        self.shared_head_norm = RMSNorm(H, c.rms_norm_eps)


class DeepseekV3(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        nn.init.normal_(self.embed_tokens.weight, std=STD)
        self.layers = nn.ModuleList(DecoderLayer(c, c.is_moe_layer(i)) for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = linear(c.hidden_size, c.vocab_size)
        self.mtp = MTP(c) if c.num_nextn_predict_layers else None
        self._tables = {}

    def tables(self, T):
        if T not in self._tables:
            cos, sin = rope_cos_sin(self.c, torch.arange(T), torch.float32)
            mask = torch.full((T, T), float("-inf")).triu(1)
            self._tables[T] = (cos, sin, mask)
        return self._tables[T]

    def forward(self, tokens, mtp_lambda, balance_alpha):
        """tokens [B, T+1] -> loss (main CE + mtp_lambda * MTP CE + balance_alpha * balance)."""
        c = self.c
        B, T = tokens.shape[0], tokens.shape[1] - 1
        inp, tgt = tokens[:, :T], tokens[:, 1:]
        cos, sin, mask = self.tables(T)
        x = self.embed_tokens(inp)
        bal = []
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
            if isinstance(layer.mlp, MoE) and balance_alpha > 0:
                bal.append(balance_loss(c, *layer.mlp.last_route))
        logits = self.lm_head(self.norm(x))
        loss = F.cross_entropy(logits.view(B * T, -1), tgt.reshape(-1))
        if bal:
            loss = loss + balance_alpha * torch.stack(bal).sum()
        if self.mtp is not None and mtp_lambda > 0 and T >= 2:
            m, Tm = self.mtp, T - 1
            cos, sin, mask = self.tables(Tm)
            e = m.enorm(self.embed_tokens(tokens[:, 1:T]))
            h = m.hnorm(x[:, :Tm])  # the main model's last layer output, before model.norm
            xm = m.layer(m.eh_proj(torch.cat([e, h], dim=-1)), cos, sin, mask)
            mlogits = self.lm_head(m.shared_head_norm(xm))
            loss = loss + mtp_lambda * F.cross_entropy(mlogits.view(B * Tm, -1), tokens[:, 2:].reshape(-1))
        return loss


def balance_loss(c, scores, idx):
    """DeepSeek-V3 eq. 17-20 per sequence, averaged over the batch. scores [B, T, E], idx [B, T, K]."""
    B, T, E = scores.shape
    K = idx.shape[-1]
    f = torch.zeros(B, E).scatter_add_(1, idx.reshape(B, T * K), torch.ones(B, T * K)) * (E / (K * T))
    P = (scores / scores.sum(-1, keepdim=True)).mean(1)
    return (f * P).sum(-1).mean()


def main():
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    c = Config.load(args.config)
    if c.num_nextn_predict_layers and c.num_nextn_predict_layers != 1:
        raise SystemExit("only num_nextn_predict_layers <= 1 is supported")
    model = DeepseekV3(c)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    foreach = args.foreach != "off"
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8, foreach=foreach)
    nparams = sum(p.numel() for p in params)
    B, T = args.batch, args.seq_len
    g = torch.Generator().manual_seed(2)

    def step():
        tokens = torch.randint(0, c.vocab_size, (B, T + 1), generator=g)
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = model(tokens, args.mtp_lambda, args.balance_alpha)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return time.perf_counter() - t0, time.process_time() - c0, float(loss)

    step()  # warm-up
    if args.profile:
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
    seconds, cpu, losses = 0.0, 0.0, []
    for _ in range(args.steps):
        dt, dc, loss = step()
        seconds += dt
        cpu += dc
        losses.append(loss)
    tps = B * T * args.steps / seconds
    print(f"config {args.config}: {nparams / 1e6:.1f}M params, batch {B} x {T}, {args.precision}, "
          f"{torch.get_num_threads()} threads (torch {torch.__version__}), loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    print(f"torch tokens/s: {tps:.1f}")
    print(f"torch tokens per CPU second: {B * T * args.steps / cpu:.2f}")
    print(f"memory: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
