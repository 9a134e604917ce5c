"""Write random DeepSeek-V2/V3 checkpoints (config.json + model.safetensors) with numpy.

    make_checkpoint.py --config CFG.json --out DIR [--seed N] [--dtype f32|bf16|fp8]

With --dtype fp8 every projection matrix of attention / MLP / experts / shared
experts / eh_proj is stored as F8_E4M3 with a blockwise `weight_scale_inv`
(block size from quantization_config.weight_block_size, default 128x128);
everything else (embeddings, norms, router, lm_head) is stored as BF16.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deepseek_ref import Config  # noqa: E402
from safetensors_np import quant_blockwise, write_safetensors  # noqa: E402


def expected_tensors(cfg):
    """name -> (shape, kind) with kind in linear | norm | embed | head | router | bias."""
    c = cfg
    H = c.hidden_size
    nh, dn, dr, dv = c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
    t = {}

    def mlp(p, inter):
        t[p + ".gate_proj.weight"] = ((inter, H), "linear")
        t[p + ".up_proj.weight"] = ((inter, H), "linear")
        t[p + ".down_proj.weight"] = ((H, inter), "linear")

    def layer(i):
        p = f"model.layers.{i}"
        t[p + ".input_layernorm.weight"] = ((H,), "norm")
        t[p + ".post_attention_layernorm.weight"] = ((H,), "norm")
        a = p + ".self_attn"
        if c.q_lora_rank is None:
            t[a + ".q_proj.weight"] = ((nh * (dn + dr), H), "linear")
        else:
            t[a + ".q_a_proj.weight"] = ((c.q_lora_rank, H), "linear")
            t[a + ".q_a_layernorm.weight"] = ((c.q_lora_rank,), "norm")
            t[a + ".q_b_proj.weight"] = ((nh * (dn + dr), c.q_lora_rank), "linear")
        t[a + ".kv_a_proj_with_mqa.weight"] = ((c.kv_lora_rank + dr, H), "linear")
        t[a + ".kv_a_layernorm.weight"] = ((c.kv_lora_rank,), "norm")
        t[a + ".kv_b_proj.weight"] = ((nh * (dn + dv), c.kv_lora_rank), "linear")
        t[a + ".o_proj.weight"] = ((H, nh * dv), "linear")
        m = p + ".mlp"
        if c.is_moe_layer(i):
            t[m + ".gate.weight"] = ((c.n_routed_experts, H), "router")
            if c.topk_method == "noaux_tc":
                t[m + ".gate.e_score_correction_bias"] = ((c.n_routed_experts,), "bias")
            for e in range(c.n_routed_experts):
                mlp(f"{m}.experts.{e}", c.moe_intermediate_size)
            if c.n_shared_experts:
                mlp(m + ".shared_experts", c.moe_intermediate_size * c.n_shared_experts)
        else:
            mlp(m, c.intermediate_size)

    t["model.embed_tokens.weight"] = ((c.vocab_size, H), "embed")
    for i in range(c.num_hidden_layers):
        layer(i)
    t["model.norm.weight"] = ((H,), "norm")
    if not c.tie_word_embeddings:
        t["lm_head.weight"] = ((c.vocab_size, H), "head")
    for k in range(c.num_nextn_predict_layers or 0):
        L = c.num_hidden_layers + k
        p = f"model.layers.{L}"
        layer(L)
        t[p + ".enorm.weight"] = ((H,), "norm")
        t[p + ".hnorm.weight"] = ((H,), "norm")
        t[p + ".eh_proj.weight"] = ((H, 2 * H), "linear")
        t[p + ".embed_tokens.weight"] = ((c.vocab_size, H), "embed")
        t[p + ".shared_head.norm.weight"] = ((H,), "norm")
        t[p + ".shared_head.head.weight"] = ((c.vocab_size, H), "head")
    return t


def random_tensors(cfg, seed, dtype="f32", norm_jitter=0.2, router_bias_std=0.05):
    rng = np.random.default_rng(seed)
    out = {}
    store = {"f32": "F32", "bf16": "BF16", "fp8": "BF16"}[dtype]
    for name, (shape, kind) in sorted(expected_tensors(cfg).items()):
        if kind == "norm":
            w = 1.0 + norm_jitter * rng.standard_normal(shape)
        elif kind == "embed":
            w = rng.standard_normal(shape)
        elif kind == "bias":
            w = router_bias_std * rng.standard_normal(shape)
        elif kind == "router":
            w = rng.standard_normal(shape) / np.sqrt(shape[1])
        else:  # linear, head
            w = rng.standard_normal(shape) / np.sqrt(shape[1])
        w = w.astype(np.float32)
        if dtype == "fp8" and kind == "linear":
            q, s = quant_blockwise(w, cfg.weight_block_size)
            out[name] = ("F8_E4M3", q)
            out[name + "_scale_inv"] = ("F32", s)
        elif kind == "bias":
            out[name] = ("F32", w)
        else:
            out[name] = (store, w)
    return out


def make_checkpoint(config_path, out_dir, seed=1234, dtype="f32", norm_jitter=0.2, router_bias_std=0.05):
    with open(config_path) as f:
        d = json.load(f)
    cfg = Config(d)
    os.makedirs(out_dir, exist_ok=True)
    if dtype == "fp8" and not d.get("quantization_config"):
        d["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                    "weight_block_size": [128, 128]}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(d, f, indent=2)
    tensors = random_tensors(cfg, seed, dtype, norm_jitter, router_bias_std)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, metadata={"format": "pt"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16", "fp8"])
    a = ap.parse_args()
    make_checkpoint(a.config, a.out, a.seed, a.dtype)


if __name__ == "__main__":
    main()
