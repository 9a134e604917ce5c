#!/usr/bin/python3
"""Self-tests of the DeepSeek reference (hand-derived values, not the reference checking itself)."""
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deepseek_ref as dr  # noqa: E402
import safetensors_np as st  # noqa: E402
from make_checkpoint import make_checkpoint  # noqa: E402

torch.set_num_threads(1)


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


class TestFP8(unittest.TestCase):
    def test_decode_hand_values(self):
        d = st.E4M3_DECODE
        cases = {
            0x00: 0.0, 0x01: 2.0 ** -9, 0x02: 2.0 ** -8, 0x07: 7 * 2.0 ** -9,  # subnormals m * 2^-9
            0x08: 2.0 ** -6,  # smallest normal
            0x38: 1.0, 0x39: 1.125, 0x3C: 1.5, 0x40: 2.0, 0x30: 0.5,
            0x77: 240.0, 0x78: 256.0, 0x7E: 448.0,
            0xB8: -1.0, 0xFE: -448.0, 0x81: -(2.0 ** -9),
        }
        for code, val in cases.items():
            self.assertEqual(float(d[code]), val, hex(code))
        self.assertTrue(np.signbit(d[0x80]) and d[0x80] == 0.0)
        nans = [c for c in range(256) if np.isnan(d[c])]
        self.assertEqual(nans, [0x7F, 0xFF])
        pos = d[:0x7F]
        self.assertTrue(np.all(np.diff(pos) > 0))
        self.assertEqual(float(np.nanmax(d)), 448.0)

    def test_encode(self):
        codes = np.array([c for c in range(256) if c not in (0x7F, 0xFF)], dtype=np.uint8)
        self.assertTrue(np.array_equal(st.fp8_e4m3_encode(st.fp8_e4m3_decode(codes)), codes))
        enc = st.fp8_e4m3_encode(np.array([1.0625, 1.1875, 1000.0, -1000.0, 2.0 ** -10, 0.75 * 2.0 ** -9]))
        self.assertEqual([int(c) for c in enc], [0x38, 0x3A, 0x7E, 0xFE, 0x00, 0x01])

    def test_blockwise_dequant_partial_blocks(self):
        q = np.full((200, 130), 0x38, dtype=np.uint8)  # all 1.0
        s = np.array([[2.0, 3.0], [5.0, 7.0]], dtype=np.float32)
        w = st.dequant_blockwise(st.fp8_e4m3_decode(q), s, (128, 128))
        self.assertEqual(w.shape, (200, 130))
        self.assertEqual((w[0, 0], w[127, 127], w[127, 128], w[128, 0], w[199, 129]), (2, 2, 3, 5, 7))
        with self.assertRaises(ValueError):
            st.dequant_blockwise(st.fp8_e4m3_decode(q), s[:1], (128, 128))
        w = st.dequant_blockwise(st.fp8_e4m3_decode(np.full((4, 4), 0x40, np.uint8)),
                                 np.array([[1, 2], [3, 4]], np.float32), (2, 2))
        self.assertEqual(w.tolist(), [[2, 2, 4, 4], [2, 2, 4, 4], [6, 6, 8, 8], [6, 6, 8, 8]])


class TestBF16(unittest.TestCase):
    def test_decode(self):
        u = np.array([0x3F80, 0xC000, 0x7F80, 0x0001, 0x4049, 0x0000, 0x8000], dtype=np.uint16)
        v = st.bf16_decode(u)
        self.assertEqual(v[:3].tolist(), [1.0, -2.0, float("inf")])
        self.assertEqual(float(v[3]), 2.0 ** -133)
        self.assertEqual(float(v[4]), 3.140625)
        self.assertTrue(np.signbit(v[6]))

    def test_encode_round_to_nearest_even(self):
        x = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -8 + 2.0 ** -20, 3.14159], np.float32)
        self.assertEqual([hex(int(c)) for c in st.bf16_encode(x)], ["0x3f80", "0x3f82", "0x3f81", "0x4049"])


class TestSafetensors(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_roundtrip_and_layout(self):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((3, 5)).astype(np.float32)
        tensors = {"a": ("F32", a), "b": ("F16", a), "c": ("BF16", a), "d": ("F8_E4M3", np.array([[0x38, 0x7E]], np.uint8)),
                   "e": ("I64", np.arange(4))}
        p = os.path.join(self.tmp, "x.safetensors")
        st.write_safetensors(p, tensors, metadata={"format": "pt"})
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            hdr = json.loads(f.read(n))
        self.assertEqual(n % 8, 0)
        self.assertEqual(hdr["__metadata__"], {"format": "pt"})
        self.assertEqual(hdr["c"]["dtype"], "BF16")
        self.assertEqual(hdr["c"]["data_offsets"][1] - hdr["c"]["data_offsets"][0], 30)
        f = st.SafetensorsFile(p)
        self.assertTrue(np.array_equal(f.get("a"), a))
        self.assertTrue(np.allclose(f.get("b"), a, rtol=1e-3))
        self.assertTrue(np.allclose(f.get("c"), a, rtol=1e-2))
        self.assertEqual(f.get("d").tolist(), [[1.0, 448.0]])
        self.assertEqual(f.get("e").tolist(), [0, 1, 2, 3])

    def test_sharded_index(self):
        st.write_safetensors(os.path.join(self.tmp, "model-00001-of-00002.safetensors"),
                             {"x.weight": np.ones((2, 2), np.float32)})
        st.write_safetensors(os.path.join(self.tmp, "model-00002-of-00002.safetensors"),
                             {"y.weight": ("BF16", np.full((2,), 2.0, np.float32))})
        with open(os.path.join(self.tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": {"x.weight": "model-00001-of-00002.safetensors",
                                                      "y.weight": "model-00002-of-00002.safetensors"}}, f)
        ck = st.Checkpoint(self.tmp)
        self.assertEqual(sorted(ck.keys()), ["x.weight", "y.weight"])
        self.assertEqual(ck.get("y.weight").tolist(), [2.0, 2.0])


def load_json(path):
    with open(path) as f:
        return json.load(f)


def cfg_from(**kw):
    base = load_json(os.path.join(HERE, "configs", "v3_tiny.json"))
    base.update(kw)
    return dr.Config(base)


class TestRope(unittest.TestCase):
    def test_yarn_inv_freq_hand(self):
        # dim 4, base 1e4, factor 4, original 64: low = max(floor(-0.249), 0) = 0, high = ceil(0.504) = 1
        c = cfg_from(qk_rope_head_dim=4, rope_scaling=dict(type="yarn", factor=4, original_max_position_embeddings=64,
                                                          beta_fast=32, beta_slow=1, mscale=1, mscale_all_dim=1))
        inv, m = dr.rope_inv_freq_and_mscale(c)
        self.assertEqual(dr.yarn_find_correction_range(32, 1, 4, 10000.0, 64), (0, 1))
        self.assertAlmostEqual(float(inv[0]), 1.0, places=15)         # extrapolated (high frequency)
        self.assertAlmostEqual(float(inv[1]), 0.01 / 4, places=15)    # interpolated (low frequency)
        self.assertEqual(m, 1.0)
        # dim 16, factor 40, original 64: low 0, high 3 -> pair 1 blends 2/3 extra + 1/3 inter
        c = cfg_from()
        self.assertEqual(dr.yarn_find_correction_range(32, 1, 16, 10000.0, 64), (0, 3))
        inv, _ = dr.rope_inv_freq_and_mscale(c)
        f1 = 10000.0 ** (-2 / 16)
        self.assertAlmostEqual(float(inv[1]), f1 * (2 / 3) + f1 / 40 * (1 / 3), places=14)
        self.assertAlmostEqual(float(inv[7]), 10000.0 ** (-14 / 16) / 40, places=16)
        # no rope_scaling: plain inverse frequencies
        inv, m = dr.rope_inv_freq_and_mscale(cfg_from(rope_scaling=None))
        self.assertAlmostEqual(float(inv[4]), 10000.0 ** -0.5, places=15)

    def test_mscale(self):
        c = cfg_from()
        ms = 1 + 0.1 * math.log(40)
        self.assertAlmostEqual(dr.softmax_scale(c), 48 ** -0.5 * ms * ms, places=14)
        self.assertEqual(dr.rope_inv_freq_and_mscale(c)[1], 1.0)
        c = cfg_from(rope_scaling=dict(type="yarn", factor=10, original_max_position_embeddings=64,
                                       mscale=1.0, mscale_all_dim=0.8))
        self.assertAlmostEqual(dr.rope_inv_freq_and_mscale(c)[1], (1 + 0.1 * math.log(10)) / (1 + 0.08 * math.log(10)),
                               places=14)
        self.assertAlmostEqual(dr.softmax_scale(c), 48 ** -0.5 * (1 + 0.08 * math.log(10)) ** 2, places=14)
        c = cfg_from(rope_scaling=dict(type="yarn", factor=10, original_max_position_embeddings=64, mscale=1.0))
        self.assertAlmostEqual(dr.softmax_scale(c), 48 ** -0.5, places=14)  # mscale_all_dim absent -> 0
        self.assertAlmostEqual(dr.softmax_scale(cfg_from(rope_scaling=None)), 48 ** -0.5, places=14)

    def test_interleaved_layout(self):
        c = cfg_from(rope_scaling=None, qk_rope_head_dim=4)
        p = 3
        cos, sin = dr.rope_cos_sin(c, torch.tensor([p]))
        # stored layout is interleaved pairs: (x0, x1) rotate with inv_freq[0] = 1
        x = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
        y = dr.apply_rope(x, cos, sin)[0]
        # output is in HF's de-interleaved order [x0', x2', x1', x3']
        self.assertTrue(torch.allclose(y, torch.tensor([math.cos(p), 0.0, math.sin(p), 0.0], dtype=torch.float64)))
        x = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)  # x3 pairs with x2, inv_freq[1] = 0.01
        y = dr.apply_rope(x, cos, sin)[0]
        self.assertTrue(torch.allclose(y, torch.tensor([0.0, -math.sin(0.01 * p), 0.0, math.cos(0.01 * p)],
                                                       dtype=torch.float64)))

    def test_relative_position(self):
        c = cfg_from()
        g = torch.Generator().manual_seed(0)
        q = torch.randn(1, 16, generator=g, dtype=torch.float64)
        k = torch.randn(1, 16, generator=g, dtype=torch.float64)

        def dot(pq, pk):
            cq, sq = dr.rope_cos_sin(c, torch.tensor([pq]))
            ck, sk = dr.rope_cos_sin(c, torch.tensor([pk]))
            return float((dr.apply_rope(q, cq, sq) * dr.apply_rope(k, ck, sk)).sum())
        self.assertAlmostEqual(dot(5, 2), dot(103, 100), places=10)


class DictWeights:
    def __init__(self, d):
        self.d = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in d.items()}

    def __contains__(self, k):
        return k in self.d

    def get(self, k):
        return self.d[k]

    def linear(self, prefix, x, shape=None):
        w = self.d[prefix + ".weight"]
        assert shape is None or tuple(w.shape) == tuple(shape)
        return x @ w.T


def stub_model(cfg, weights):
    m = dr.DeepseekRef.__new__(dr.DeepseekRef)
    m.cfg, m.dtype, m.w, m._margins = cfg, torch.float64, DictWeights(weights), []
    return m


class TestGate(unittest.TestCase):
    LOGITS = [2.0, -1.0, 0.5, 0.0, 1.0, 1.5, -2.0, 0.3]

    def gate(self, **kw):
        cfg = cfg_from(hidden_size=2, n_routed_experts=8, **kw)
        w = {"g.gate.weight": [[v, 0.0] for v in self.LOGITS],
             "g.gate.e_score_correction_bias": [0, 0, 0, 0, 0, 0, 0.9, 0]}
        idx, wt, _ = stub_model(cfg, w).gate("g", torch.tensor([[1.0, 7.0]], dtype=torch.float64))
        order = wt[0].argsort(descending=True)
        return idx[0][order].tolist(), wt[0][order].tolist()

    def test_noaux_tc(self):
        # sigmoid scores; bias lifts expert 6 (1.0192).  Groups of 2, score = sum of top-2 biased:
        # g0 = 1.1497, g1 = 1.1225, g2 = 1.5487, g3 = 1.5936 -> keep g3, g2; candidates 4..7 biased
        # 0.7311, 0.8176, 1.0192, 0.5744 -> experts 6, 5.  Weights from UNBIASED scores, normalised, x2.5.
        idx, wt = self.gate(topk_method="noaux_tc", scoring_func="sigmoid", n_group=4, topk_group=2,
                            num_experts_per_tok=2, norm_topk_prob=True, routed_scaling_factor=2.5)
        s5, s6 = sigmoid(1.5), sigmoid(-2.0)
        self.assertEqual(sorted(idx), [5, 6])
        self.assertEqual(idx, [5, 6])
        self.assertAlmostEqual(wt[0], 2.5 * s5 / (s5 + s6), places=12)
        self.assertAlmostEqual(wt[1], 2.5 * s6 / (s5 + s6), places=12)

    def test_noaux_tc_unnormalised(self):
        idx, wt = self.gate(topk_method="noaux_tc", scoring_func="sigmoid", n_group=4, topk_group=2,
                            num_experts_per_tok=2, norm_topk_prob=False, routed_scaling_factor=2.5)
        self.assertEqual(idx, [5, 6])
        self.assertAlmostEqual(wt[0], 2.5 * sigmoid(1.5), places=12)
        self.assertAlmostEqual(wt[1], 2.5 * sigmoid(-2.0), places=12)

    def test_greedy_softmax(self):
        idx, wt = self.gate(topk_method="greedy", scoring_func="softmax", num_experts_per_tok=3,
                            norm_topk_prob=False, routed_scaling_factor=1.0)
        z = sum(math.exp(v) for v in self.LOGITS)
        self.assertEqual(idx, [0, 5, 4])
        for i, e in enumerate(idx):
            self.assertAlmostEqual(wt[i], math.exp(self.LOGITS[e]) / z, places=12)

    def test_group_limited_greedy(self):
        # softmax, group score = max: g0 = e0 (2.0), g1 = e2 (0.5), g2 = e5 (1.5), g3 = e7 (0.3)
        # keep g0, g2 -> top-3 of {0,1,4,5} = 0, 5, 4 ; routed_scaling_factor 4 applied (no norm)
        idx, wt = self.gate(topk_method="group_limited_greedy", scoring_func="softmax", n_group=4, topk_group=2,
                            num_experts_per_tok=3, norm_topk_prob=False, routed_scaling_factor=4.0)
        z = sum(math.exp(v) for v in self.LOGITS)
        self.assertEqual(idx, [0, 5, 4])
        self.assertAlmostEqual(wt[2], 4.0 * math.exp(1.0) / z, places=12)
        # topk_group 1 -> only g0 -> experts 0, 1
        idx, wt = self.gate(topk_method="group_limited_greedy", scoring_func="softmax", n_group=4, topk_group=1,
                            num_experts_per_tok=2, norm_topk_prob=True, routed_scaling_factor=1.0)
        self.assertEqual(idx, [0, 1])
        self.assertAlmostEqual(wt[0], math.exp(2.0) / (math.exp(2.0) + math.exp(-1.0)), places=12)

    def test_moe_combination(self):
        H, I, E = 3, 2, 8
        cfg = cfg_from(hidden_size=H, n_routed_experts=E, moe_intermediate_size=I, n_shared_experts=2,
                       topk_method="greedy", scoring_func="softmax", num_experts_per_tok=2,
                       norm_topk_prob=True, routed_scaling_factor=2.0)
        rng = np.random.default_rng(1)
        w = {"m.gate.weight": rng.standard_normal((E, H))}
        for p, inter in [(f"m.experts.{e}", I) for e in range(E)] + [("m.shared_experts", 2 * I)]:
            w[p + ".gate_proj.weight"] = rng.standard_normal((inter, H))
            w[p + ".up_proj.weight"] = rng.standard_normal((inter, H))
            w[p + ".down_proj.weight"] = rng.standard_normal((H, inter))
        x = rng.standard_normal((2, H))
        got = stub_model(cfg, w).moe("m", torch.tensor(x)).numpy()

        def mlp(p, v):
            g = w[p + ".gate_proj.weight"] @ v
            return w[p + ".down_proj.weight"] @ (g / (1 + np.exp(-g)) * (w[p + ".up_proj.weight"] @ v))
        for t in range(2):
            lg = w["m.gate.weight"] @ x[t]
            s = np.exp(lg) / np.exp(lg).sum()
            top = np.argsort(-s)[:2]
            ws = s[top] / s[top].sum() * 2.0
            want = sum(ws[j] * mlp(f"m.experts.{top[j]}", x[t]) for j in range(2)) + mlp("m.shared_experts", x[t])
            self.assertTrue(np.allclose(got[t], want, rtol=1e-12, atol=1e-12))

    def test_moe_layer_rule(self):
        c = dr.Config(load_json(os.path.join(HERE, "configs", "v2_group_tiny.json")))
        self.assertEqual([c.is_moe_layer(i) for i in range(3)], [True, False, True])
        c = cfg_from()
        self.assertEqual([c.is_moe_layer(i) for i in range(4)], [False, True, True, True])
        c = cfg_from(n_routed_experts=None)
        self.assertFalse(any(c.is_moe_layer(i) for i in range(4)))


class TestModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        for name, dt in [("v3_tiny", "bf16"), ("v2lite_tiny", "f32"), ("v3_fp8_tiny", "fp8")]:
            make_checkpoint(os.path.join(HERE, "configs", name + ".json"), os.path.join(cls.tmp, name), 7, dt)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def test_attention_position0_is_value(self):
        for name in ("v3_tiny", "v2lite_tiny"):
            ref = dr.DeepseekRef(os.path.join(self.tmp, name))
            c = ref.cfg
            x = torch.randn(5, c.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
            p = "model.layers.1.self_attn"
            heads = ref.attention(p, x, torch.arange(5), return_heads=True)  # [h, n, dv]
            ckv = x[0] @ ref.w.get(p + ".kv_a_proj_with_mqa.weight").T
            ckv = ckv[:c.kv_lora_rank]
            ckv = ref.w.get(p + ".kv_a_layernorm.weight") * ckv / torch.sqrt((ckv ** 2).mean() + c.rms_norm_eps)
            kv = (ref.w.get(p + ".kv_b_proj.weight") @ ckv).view(c.num_attention_heads, -1)
            v0 = kv[:, c.qk_nope_head_dim:]
            self.assertTrue(torch.allclose(heads[:, 0, :], v0, rtol=1e-12, atol=1e-12), name)
            # causality: changing the last token's input leaves earlier rows unchanged
            x2 = x.clone()
            x2[4] += 1.0
            h2 = ref.attention(p, x2, torch.arange(5), return_heads=True)
            self.assertTrue(torch.allclose(h2[:, :4], heads[:, :4], rtol=1e-12, atol=1e-12))
            self.assertFalse(torch.allclose(h2[:, 4], heads[:, 4]))

    def test_fp8_weights_dequantised(self):
        d = os.path.join(self.tmp, "v3_fp8_tiny")
        ck = st.Checkpoint(d)
        name = "model.layers.0.mlp.gate_proj.weight"  # [320, 192]: 3 x 2 blocks, partial at the edges
        self.assertEqual(ck.dtype(name), "F8_E4M3")
        self.assertEqual(ck.shape(name + "_scale_inv"), (3, 2))
        w = dr.DeepseekRef(d).w.get(name).numpy()
        q = st.fp8_e4m3_decode(ck.raw(name))
        s = ck.get(name + "_scale_inv")
        self.assertEqual(w[300, 150], float(q[300, 150]) * float(s[2, 1]))
        self.assertEqual(w[5, 130], float(q[5, 130]) * float(s[0, 1]))

    def test_float32_agrees_and_causal(self):
        d = os.path.join(self.tmp, "v3_tiny")
        toks = [5, 17, 42, 3, 99, 250, 7, 0, 383, 12]
        r64 = dr.DeepseekRef(d).forward(toks)
        r32 = dr.DeepseekRef(d, torch.float32).forward(toks)
        self.assertEqual(tuple(r64["logits"].shape), (10, 384))
        self.assertEqual(tuple(r64["mtp_logits"].shape), (9, 384))
        for k in ("logits", "mtp_logits"):
            err = (r64[k] - r32[k].double()).abs().amax(1) / r64[k].abs().amax(1)
            self.assertLess(float(err.max()), 1e-5)
        # main row i depends on t_0..t_i; MTP row i on t_0..t_{i+1}
        r2 = dr.DeepseekRef(d).forward(toks[:-1] + [1])
        self.assertTrue(torch.allclose(r2["logits"][:9], r64["logits"][:9], rtol=1e-12, atol=1e-12))
        self.assertFalse(torch.allclose(r2["logits"][9], r64["logits"][9]))
        self.assertTrue(torch.allclose(r2["mtp_logits"][:8], r64["mtp_logits"][:8], rtol=1e-12, atol=1e-12))
        self.assertFalse(torch.allclose(r2["mtp_logits"][8], r64["mtp_logits"][8]))

    def test_mtp_wiring(self):
        d = os.path.join(self.tmp, "v3_tiny")
        ref = dr.DeepseekRef(d)
        toks = [5, 17, 42, 3]
        r = ref.forward(toks)
        c = ref.cfg
        L = c.num_hidden_layers
        p = f"model.layers.{L}"
        n = lambda name, v: dr.rms_norm(v, ref.w.get(name), c.rms_norm_eps)  # noqa: E731
        e = n(p + ".enorm.weight", ref.w.get(p + ".embed_tokens.weight")[toks[1:]])
        h = n(p + ".hnorm.weight", r["hidden"][:3])
        x = torch.cat([e, h], -1) @ ref.w.get(p + ".eh_proj.weight").T
        y = ref.decoder_layer(L, x, torch.arange(3))
        want = n(p + ".shared_head.norm.weight", y) @ ref.w.get(p + ".shared_head.head.weight").T
        self.assertTrue(torch.allclose(r["mtp_logits"], want, rtol=1e-12, atol=1e-12))
        # and the main logits use model.norm + lm_head on the same hidden states
        want = n("model.norm.weight", r["hidden"]) @ ref.w.get("lm_head.weight").T
        self.assertTrue(torch.allclose(r["logits"], want, rtol=1e-12, atol=1e-12))


class TestHarness(unittest.TestCase):
    """compare_whale.py against the fake whale: passes when correct, fails on a seeded bug."""

    def run_cmp(self, bug):
        tmp = tempfile.mkdtemp()
        try:
            env = dict(os.environ, FAKE_WHALE_BUG=bug)
            p = subprocess.run([sys.executable, os.path.join(HERE, "compare_whale.py"),
                                os.path.join(HERE, "fake_whale.py"), tmp, "--configs", "v3_tiny",
                                "--attn-modes", "default"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=600)
            return p.returncode, p.stdout.decode()
        finally:
            shutil.rmtree(tmp)

    def test_harness(self):
        rc, out = self.run_cmp("")
        self.assertEqual(rc, 0, out)
        rc, out = self.run_cmp("rope_layout")
        self.assertNotEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
