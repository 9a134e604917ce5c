#!/usr/bin/python3
"""Self-tests of the gradient reference (grad_ref.py) and of the compare_grads.py harness.

Autograd is checked against float64 central finite differences. The checks cover single
entries (a router weight, the rope rows of YaRN-rotated projections at positions beyond
original_max_position_embeddings, the MTP projection, a tied embedding, an FP8-dequantised
weight), a directional derivative along a random direction through every tensor at once, and
the balance loss alone. The balance loss is also checked against hand-computed values.
"""
import contextlib
import io
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_grads  # noqa: E402
import grad_ref as gr  # noqa: E402
from make_checkpoint import make_checkpoint  # noqa: E402

torch.set_num_threads(1)

TOKENS24 = [5, 17, 42, 3, 99, 250, 7, 0, 283, 12, 64, 1, 200, 33, 180, 91, 15, 260, 4, 150, 77, 299, 8, 121]
EPS = 1e-6


class TestBalanceLoss(unittest.TestCase):
    # T = 3 tokens, N_r = 4 experts, K_r = 2.
    S = [[0.8, 0.6, 0.4, 0.2],   # sum 2 -> s' = .4 .3 .2 .1
         [0.5, 0.5, 0.5, 0.5],   # sum 2 -> s' = .25 each
         [0.1, 0.1, 0.3, 0.5]]   # sum 1 -> s' = s
    IDX = [[0, 1], [0, 3], [3, 2]]

    def test_hand_value(self):
        # counts 2, 1, 1, 2 -> f = 4 / (2 * 3) * count = 4/3, 2/3, 2/3, 4/3
        # P = mean s' = .75/3, .65/3, .75/3, .85/3
        # L = (4/3 * .75 + 2/3 * .65 + 2/3 * .75 + 4/3 * .85) / 3 = 46/45
        s = torch.tensor(self.S, dtype=torch.float64)
        idx = torch.tensor(self.IDX)
        self.assertAlmostEqual(float(gr.balance_loss(s, idx, 4, 2)), 46 / 45, places=14)
        # softmax scores already sum to 1: s' = s
        s = torch.softmax(torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0]], dtype=torch.float64), -1)
        want = sum(4 / (2 * 2) * c * float(s[:, i].mean()) for i, c in enumerate([1, 2, 1, 0]))
        self.assertAlmostEqual(float(gr.balance_loss(s, torch.tensor([[1, 0], [2, 1]]), 4, 2)), want, places=14)

    def test_gradient_hand(self):
        # f is a constant, so dL/ds_{j,t} = (f_j - sum_i f_i s'_{i,t}) / (T * sum_i s_{i,t})
        s = torch.tensor(self.S, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(gr.balance_loss(s, torch.tensor(self.IDX), 4, 2), [s])
        f = np.array([4, 2, 2, 4]) / 3
        S = np.array(self.S)
        want = (f[None, :] - (S / S.sum(1, keepdims=True) * f).sum(1, keepdims=True)) / (3 * S.sum(1, keepdims=True))
        self.assertTrue(np.allclose(g.numpy(), want, rtol=1e-13, atol=1e-15))


class ModelCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp()
        cls.dirs = {}
        for name, dt in [("v3_tiny", "f32"), ("v2_group_tiny", "f32"), ("v3_fp8_tiny", "fp8")]:
            d = os.path.join(cls.tmp, name)
            make_checkpoint(os.path.join(HERE, "configs", name + ".json"), d, 11, dt, 0.1, 0.05)
            cls.dirs[name] = d

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def ref(self, name):
        return gr.GradRef(self.dirs[name], torch.float64)

    def loss(self, ref, toks, lam, alpha, key="loss"):
        with torch.no_grad():
            info = gr.loss_terms(ref, toks, lam, alpha)
        return float(info[key]), info["margin"]

    def fd_entries(self, ref, toks, lam, alpha, name, flat, grad, key="loss"):
        """Central differences of info[key] in entries `flat` of tensor `name` vs grad."""
        leaf = ref.w.get(name)
        _, m0 = self.loss(ref, toks, lam, alpha, key)
        self.assertGreater(m0, 1e-5, "pick a seed without near-ties")
        gmax = float(np.abs(grad).max())
        self.assertGreater(gmax, 0.0, name)
        for i in flat:
            vals = []
            for sgn in (1, -1):
                with torch.no_grad():
                    leaf.view(-1)[i] += sgn * EPS
                v, m = self.loss(ref, toks, lam, alpha, key)
                with torch.no_grad():
                    leaf.view(-1)[i] -= sgn * EPS
                self.assertLess(abs(m - m0), 0.5 * m0, "routing moved")
                vals.append(v)
            fd = (vals[0] - vals[1]) / (2 * EPS)
            ad = float(grad.reshape(-1)[i])
            self.assertLess(abs(fd - ad), 1e-6 * gmax + 1e-6 * abs(ad), f"{name}[{i}]: fd {fd} autograd {ad}")

    @staticmethod
    def pick(grad, extra=()):
        """The 3 largest |entries| and a few fixed ones."""
        g = np.abs(grad.reshape(-1))
        return list(np.argsort(-g)[:3]) + [i % g.size for i in extra]


class TestFiniteDifferences(ModelCase):
    def test_router_weight(self):
        for cfg_name in ("v3_tiny", "v2_group_tiny"):
            ref = self.ref(cfg_name)
            grads, _ = gr.compute_grads(ref, TOKENS24, 0.3, 0.01)
            for name in ("model.layers.1.mlp.gate.weight", "model.layers.2.mlp.gate.weight"):
                if name in grads:
                    self.fd_entries(ref, TOKENS24, 0.3, 0.01, name, self.pick(grads[name], (5, 300)), grads[name])

    def test_yarn_rotated_projections(self):
        # 70 positions > original_max_position_embeddings 64; rope rows of q_b_proj and kv_a_proj_with_mqa
        ref = self.ref("v3_tiny")
        c = ref.cfg
        toks = (TOKENS24 * 3)[:70]
        grads, _ = gr.compute_grads(ref, toks, 0.0, 0.0)
        dn, dq, H = c.qk_nope_head_dim, c.q_head_dim, c.hidden_size
        qb = "model.layers.1.self_attn.q_b_proj.weight"
        rope_rows = [h * dq + dn + j for h in range(c.num_attention_heads) for j in range(c.qk_rope_head_dim)]
        g = grads[qb][rope_rows]
        flat = [rope_rows[k // c.q_lora_rank] * c.q_lora_rank + k % c.q_lora_rank for k in self.pick(g)]
        self.fd_entries(ref, toks, 0.0, 0.0, qb, flat, grads[qb])
        kva = "model.layers.2.self_attn.kv_a_proj_with_mqa.weight"
        g = grads[kva][c.kv_lora_rank:]
        flat = [c.kv_lora_rank * H + k for k in self.pick(g, (17, 1000))]
        self.fd_entries(ref, toks, 0.0, 0.0, kva, flat, grads[kva])

    def test_mtp_tied_fp8(self):
        ref = self.ref("v3_tiny")
        grads, _ = gr.compute_grads(ref, TOKENS24, 0.3, 0.0)
        for name in ("model.layers.3.eh_proj.weight", "model.layers.3.embed_tokens.weight",
                     "model.layers.0.self_attn.kv_b_proj.weight"):
            self.fd_entries(ref, TOKENS24, 0.3, 0.0, name, self.pick(grads[name]), grads[name])
        ref = self.ref("v2_group_tiny")  # tied: embed_tokens is both the input table and the LM head
        grads, _ = gr.compute_grads(ref, TOKENS24, 0.0, 0.0)
        e = "model.embed_tokens.weight"
        H = ref.cfg.hidden_size
        rows = [TOKENS24[3] * H + 2, TOKENS24[0] * H + 5, 400 * H + 1]  # input and target; target; head only
        self.fd_entries(ref, TOKENS24, 0.0, 0.0, e, rows + self.pick(grads[e]), grads[e])
        ref = self.ref("v3_fp8_tiny")
        grads, _ = gr.compute_grads(ref, TOKENS24, 0.3, 0.01)
        name = "model.layers.1.mlp.experts.3.down_proj.weight"  # stored as F8_E4M3 + scale
        self.assertEqual(ref.w.ckpt.dtype(name), "F8_E4M3")
        self.fd_entries(ref, TOKENS24, 0.3, 0.01, name, self.pick(grads[name]), grads[name])

    def test_balance_loss_alone(self):
        # gradient of L_bal = g(A = 1) - g(A = 0); finite differences of info["balance"]
        for cfg_name in ("v3_tiny", "v2_group_tiny"):
            ref = self.ref(cfg_name)
            g1, info = gr.compute_grads(ref, TOKENS24, 0.0, 1.0)
            g0, _ = gr.compute_grads(ref, TOKENS24, 0.0, 0.0)
            self.assertGreater(info["balance"], 0.0)
            name = "model.layers.2.mlp.gate.weight"
            gb = g1[name] - g0[name]
            self.fd_entries(ref, TOKENS24, 0.0, 0.0, name, self.pick(gb, (3, 77)), gb, key="balance")
            # and through the hidden states into an earlier layer
            name = "model.layers.0.self_attn.o_proj.weight"
            gb = g1[name] - g0[name]
            self.fd_entries(ref, TOKENS24, 0.0, 0.0, name, self.pick(gb), gb, key="balance")

    def test_directional_derivative_all_tensors(self):
        for cfg_name in ("v3_tiny", "v3_fp8_tiny", "v2_group_tiny"):
            ref = self.ref(cfg_name)
            lam, alpha = 0.3, 0.01
            grads, info = gr.compute_grads(ref, TOKENS24, lam, alpha)
            self.assertGreater(info["margin"], 1e-4)
            rng = np.random.default_rng(5)
            dirs = {}
            for k, g in grads.items():
                w = ref.w.get(k).detach().numpy()
                dirs[k] = rng.standard_normal(g.shape) * float(np.std(w) + 1e-3)
            ad = sum(float((grads[k] * dirs[k]).sum()) for k in grads)
            h = 1e-6
            vals = []
            for sgn in (1, -1):
                with torch.no_grad():
                    for k, v in dirs.items():
                        ref.w.get(k).add_(torch.from_numpy(sgn * h * v))
                vals.append(self.loss(ref, TOKENS24, lam, alpha))
                with torch.no_grad():
                    for k, v in dirs.items():
                        ref.w.get(k).sub_(torch.from_numpy(sgn * h * v))
            for _, m in vals:
                self.assertLess(abs(m - info["margin"]), 0.5 * info["margin"], "routing moved")
            fd = (vals[0][0] - vals[1][0]) / (2 * h)
            self.assertLess(abs(fd - ad), 1e-6 * abs(ad), f"{cfg_name}: fd {fd} autograd {ad}")


class TestContract(ModelCase):
    def test_names_and_zero_tensors(self):
        ref = self.ref("v3_fp8_tiny")
        keys = ref.w.ckpt.keys()
        g0, _ = gr.compute_grads(ref, TOKENS24, 0.0, 0.0)
        want = {k for k in keys if not (k.endswith("_scale_inv") or k.endswith("e_score_correction_bias"))}
        self.assertEqual(set(g0), want)
        self.assertTrue(any(k.endswith("_scale_inv") for k in keys))
        for k, g in g0.items():
            self.assertEqual(g.shape, tuple(ref.w.ckpt.shape(k)), k)
        L = ref.cfg.num_hidden_layers
        mtp = [k for k in g0 if k.startswith(f"model.layers.{L}.")]
        self.assertTrue(mtp and all(not g0[k].any() for k in mtp))  # L = 0: the MTP layer is unused
        g1, _ = gr.compute_grads(ref, TOKENS24, 0.3, 0.0)
        for k in (f"model.layers.{L}.embed_tokens.weight", f"model.layers.{L}.shared_head.head.weight",
                  f"model.layers.{L}.eh_proj.weight"):
            self.assertTrue(g1[k].any(), k)
        # the MTP loss reaches the main model through h_i
        self.assertFalse(np.allclose(g1["model.layers.0.self_attn.o_proj.weight"],
                                     g0["model.layers.0.self_attn.o_proj.weight"], rtol=1e-6, atol=0))
        # the MTP layer's own embedding is a separate parameter: only its rows t_1..t_{n-2} get gradient
        e = g1[f"model.layers.{L}.embed_tokens.weight"]
        self.assertEqual(sorted(np.nonzero(np.abs(e).sum(1))[0].tolist()), sorted(set(TOKENS24[1:-1])))

    def test_balance_only_reaches_upstream_of_routers(self):
        ref = self.ref("v3_tiny")
        g0, _ = gr.compute_grads(ref, TOKENS24, 0.3, 0.0)
        g1, _ = gr.compute_grads(ref, TOKENS24, 0.3, 1.0)
        for k in ("lm_head.weight", "model.norm.weight", "model.layers.2.mlp.experts.3.up_proj.weight",
                  "model.layers.3.mlp.gate.weight"):  # the last layer's experts, the head, the MTP router
            self.assertTrue(np.array_equal(g0[k], g1[k]), k)
        for k in ("model.layers.1.mlp.gate.weight", "model.layers.2.mlp.gate.weight"):
            self.assertFalse(np.allclose(g0[k], g1[k], rtol=1e-3, atol=0), k)

    def test_float32_close_to_float64(self):
        g64, _ = gr.compute_grads(self.ref("v3_tiny"), TOKENS24, 0.3, 0.01)
        g32, _ = gr.compute_grads(gr.GradRef(self.dirs["v3_tiny"], torch.float32), TOKENS24, 0.3, 0.01)
        worst = max(float(np.abs(g32[k] - g).max() / np.abs(g).max()) for k, g in g64.items() if g.any())
        self.assertLess(worst, 2e-5)


STUB = """#!/bin/sh
# CLI11-like whale: {mode}
if [ "$1" = "--help" ]; then printf 'Usage: ./whale [OPTIONS] SUBCOMMAND\\n\\nSubcommands:\\n  init  Write\\n  logits  Write\\n{extra}'; exit 0; fi
if [ "$1" = "grad" ] && [ "$2" = "--help" ]; then {grad_help}; fi
exit 106
"""


class TestHarness(unittest.TestCase):
    def stub(self, mode, extra, grad_help):
        p = os.path.join(self.tmp, mode)
        with open(p, "w") as f:
            f.write(STUB.format(mode=mode, extra=extra, grad_help=grad_help))
        os.chmod(p, 0o755)
        return compare_grads.grad_subcommand([p])

    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_grad_subcommand_detection(self):
        # CLI11 with an unknown subcommand: `whale grad --help` prints the main help, status 0
        self.assertEqual(self.stub("missing", "", "exec \"$0\" --help"), "no")
        self.assertEqual(self.stub("missing2", "", "echo 'The following argument was not expected: grad'; exit 109"),
                         "no")
        self.assertEqual(self.stub("present", "  grad  Gradients\\n",
                                   "echo 'Usage: ./whale grad [OPTIONS]'; exit 0"), "yes")
        r = self.stub("broken", "  grad  Gradients\\n", "echo 'segfault'; exit 139")
        self.assertNotIn(r, ("yes", "no"))
        self.assertNotIn(compare_grads.grad_subcommand([os.path.join(self.tmp, "does-not-exist")]), ("yes", "no"))

    def run_cmp(self, bug, configs, *extra):
        """compare_grads.main in this process (saves a torch import) against the fake whale."""
        work = os.path.join(self.tmp, "work")
        old = os.environ.get("FAKE_WHALE_BUG")
        os.environ["FAKE_WHALE_BUG"] = bug
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                rc = compare_grads.main([os.path.join(HERE, "fake_whale.py"), work, "--configs", configs, *extra])
        finally:
            if old is None:
                del os.environ["FAKE_WHALE_BUG"]
            else:
                os.environ["FAKE_WHALE_BUG"] = old
        return rc, buf.getvalue()

    def test_harness_passes_and_skips(self):
        rc, out = self.run_cmp("", "v2lite_tiny,v3_fp8_tiny")
        self.assertEqual(rc, 0, out)
        self.assertIn("reference_grads: all 4 runs within", out)
        rc, out = self.run_cmp("no_grad", "v2lite_tiny")
        self.assertEqual(rc, 0, out)
        self.assertIn("SKIP: whale has no grad subcommand", out)

    def test_harness_fails_on_seeded_bugs(self):
        # More seeded bugs (bal_biased, bal_T, topk_norm_const, rope_layout, no_mscale, f64,
        # extra_name) are listed in fake_whale.py; README.md says which runs catch them.
        for bug, cfg, runs in [("grad_crash", "v2lite_tiny", "L0_A0"), ("grad_perturb", "v2lite_tiny", "L0_A0"),
                               ("missing_name", "v2lite_tiny", "L0_A0"), ("zero_leak", "v3_fp8_tiny", "L0_A0"),
                               ("bal_unnormalised", "v3_fp8_tiny", "L0.3_A0.01"),
                               ("mtp_detach", "v3_fp8_tiny", "L0.3_A0.01"), ("untie", "v2_group_tiny", "L0_A0")]:
            rc, out = self.run_cmp(bug, cfg, "--runs", runs)
            self.assertEqual(rc, 1, f"{bug}: {out}")
            self.assertIn("reference_grads: 1 failure(s)", out, bug)

    def test_near_tie_excuses_values_only(self):
        rc, out = self.run_cmp("grad_perturb", "v2lite_tiny", "--runs", "L0_A0", "--tie-margin", "1")
        self.assertEqual(rc, 0, out)
        self.assertIn("near-tie", out)
        self.assertIn(" tie\n", out)
        rc, out = self.run_cmp("missing_name", "v2lite_tiny", "--runs", "L0_A0", "--tie-margin", "1")
        self.assertEqual(rc, 1, out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
