#!/usr/bin/python3
"""CI test: compare whale's gradients (`whale grad`) with PyTorch autograd on the reference.

    compare_grads.py WHALE_BINARY WORKDIR [--configs a,b] [--runs L0_A0,L0.3_A0.01] [--tol 1e-4]
                     [--zero-tol 1e-12] [--tie-margin 1e-5] [--seed 1234]

The CLI contract assumed of WHALE_BINARY (a path ending in .py is run with this python):
    WHALE init --config CFG.json --seed 1234 --out DIR [--dtype fp8] --norm-jitter 0.1 --router-bias-std 0.05
    WHALE grad --model DIR --tokens 5,17,42,... --out grads.safetensors [--mtp-lambda L] [--balance-alpha A]
        writes the F32 gradient of the loss defined in grad_ref.py for every checkpoint tensor
        except *_scale_inv and *.e_score_correction_bias, under the tensor's own name
        (tensors that do not reach the loss get zeros).

Each config is run with (L, A) = (0, 0) and (0.3, 0.01) on a 24-token sequence. v3_tiny, a
YaRN config, also runs a 70-token sequence that goes past original_max_position_embeddings.
Each run checks the following:
  * the set of tensor names is exactly the contract's, each one F32, with the checkpoint's
    shape, and finite;
  * where the reference gradient is non-zero: max|g_whale - g_ref| / max|g_ref| <= --tol;
  * where it is exactly zero: max|g_whale| <= --zero-tol * (largest |g_ref| of the model).
If the reference's routing has a near-tie (a top-k or top-group gap < --tie-margin) in a
router that reaches the loss, value mismatches in that run are reported as `tie` and are
not failures. float32 may flip such a choice, and a flipped choice changes every gradient.

If `whale grad --help` shows no grad subcommand (and `whale --help` does not list one), the
test prints "SKIP: whale has no grad subcommand" and exits 0. Any other failure exits 1.
"""
import argparse
import os
import re
import shutil
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_whale import CONFIGS, check_config, run, tail, whale_cmd  # noqa: E402
from deepseek_ref import Config  # noqa: E402
from grad_ref import GradRef, compute_grads, trainable_names  # noqa: E402
from safetensors_np import Checkpoint  # noqa: E402

# (name, --mtp-lambda, --balance-alpha). The second run only for models with MoE or MTP.
RUNS = [("L0_A0", 0.0, 0.0), ("L0.3_A0.01", 0.3, 0.01)]
LONG_SEQ_CONFIGS = ("v3_tiny",)  # YaRN: 70 positions > original_max_position_embeddings 64


def token_sequences(name, vocab):
    rng = np.random.default_rng(20240607)
    a = [5, 17, 42] + [int(t) for t in rng.integers(0, vocab, 19)] + [0, vocab - 1]
    b = [int(t) for t in rng.integers(0, vocab, 70)]
    b[10], b[11] = vocab - 1, 0
    seqs = [("seq24", a)]
    if name in LONG_SEQ_CONFIGS:
        seqs.append(("seq70", b))
    return seqs


def grad_subcommand(wcmd):
    """'yes', 'no' (whale has no grad subcommand), or an error message."""
    rc_g, out_g, _ = run(wcmd + ["grad", "--help"], timeout=60)
    if rc_g == 0 and re.search(r"usage:\s*\S+\s+grad\b", out_g, re.IGNORECASE):
        return "yes"
    # CLI11 answers `grad --help` for an unknown subcommand with the main help and status 0,
    # so absence is decided from the main help's list of subcommands.
    rc, out, _ = run(wcmd + ["--help"], timeout=60)
    if rc != 0:
        return f"`whale --help` failed (rc={rc}):\n{tail(out)}"
    listing = "\n".join(ln for ln in out.splitlines() if not ln.lower().lstrip().startswith("usage:"))
    if not re.search(r"^\s+grad(\s|$)|[{,]grad[},]", listing, re.MULTILINE):  # CLI11 | argparse
        return "no"
    return f"whale lists a grad subcommand but `whale grad --help` failed (rc={rc_g}):\n{tail(out_g)}"


def compare_tensors(got, ref, tol, zero_tol):
    """got: {name: whale gradient} (a subset of ref's names); ref: every reference gradient.
    Returns (rows, gmax): rows are (name, kind, err, limit) with kind 'value' or 'zero'."""
    gmax = max(float(np.abs(r).max()) for r in ref.values())
    rows = []
    for name in sorted(got):
        r = ref[name]
        g = got[name].astype(np.float64)
        if not np.isfinite(g).all():
            rows.append((name, "value", float("inf"), tol))
            continue
        rmax = float(np.abs(r).max())
        if rmax == 0.0:
            rows.append((name, "zero", float(np.abs(g).max()) / max(gmax, 1e-300), zero_tol))
        else:
            rows.append((name, "value", float(np.abs(g - r).max()) / rmax, tol))
    return rows, gmax


def check_names(got_ck, ckpt, names):
    bad = []
    want = set(names)
    have = set(got_ck.keys())
    if have - want:
        bad.append(f"unexpected tensors {sorted(have - want)[:6]}")
    if want - have:
        bad.append(f"missing tensors {sorted(want - have)[:6]}")
    for k in sorted(want & have):
        if got_ck.dtype(k) != "F32":
            bad.append(f"{k} is {got_ck.dtype(k)}, expected F32")
        elif got_ck.shape(k) != tuple(ckpt.shape(k)):
            bad.append(f"{k} has shape {got_ck.shape(k)}, expected {tuple(ckpt.shape(k))}")
    return bad


def whale_grads(wcmd, mdir, tag, toks, lam, alpha, names, ckpt):
    """Runs `whale grad`. Returns (error or None, contract problems, {name: gradient}, seconds)."""
    gpath = os.path.join(mdir, tag.replace("/", "_") + "_grads.safetensors")
    if os.path.exists(gpath):
        os.remove(gpath)
    cmd = wcmd + ["grad", "--model", mdir, "--tokens", ",".join(map(str, toks)), "--out", gpath,
                  "--mtp-lambda", repr(lam), "--balance-alpha", repr(alpha)]
    rc, out, dt = run(cmd)
    if rc != 0 or not os.path.exists(gpath):
        why = f"rc={rc}" if rc != 0 else f"no file {gpath}"
        return f"whale grad failed ({why}):\n{tail(out)}", [], {}, dt
    try:
        got_ck = Checkpoint(gpath)
        bad = check_names(got_ck, ckpt, names)
        got = {k: got_ck.get(k) for k in names if k in got_ck and got_ck.dtype(k) == "F32"
               and got_ck.shape(k) == tuple(ckpt.shape(k))}
    except Exception as e:  # noqa: BLE001
        bad, got = [f"cannot read {gpath}: {type(e).__name__}: {e}"], {}
    return None, bad, got, dt


def summarise(cmp_rows, tol):
    """(tensors over their limit, worst value row, zero-gradient leak, number of zero tensors)."""
    over = [r for r in cmp_rows if not (r[2] <= r[3])]
    values = [r for r in cmp_rows if r[1] == "value"]
    zeros = [r for r in cmp_rows if r[1] == "zero"]
    worst = max(values, key=lambda r: r[2]) if values else ("-", "value", float("nan"), tol)
    leak = max((r[2] for r in zeros), default=0.0)
    return over, worst, leak, len(zeros)


def diagnose(wcmd, mdir, tag, ref, toks, lam, alpha, names, a):
    """After a failure with both extra terms on, check each term alone to say which one is off."""
    notes = []
    for lab, l2, a2 in [(f"L={lam} alone", lam, 0.0), (f"A={alpha} alone", 0.0, alpha)]:
        if l2 == 0.0 and a2 == 0.0:
            continue
        ref_g, _ = compute_grads(ref, toks, l2, a2)
        err, bad, got, _ = whale_grads(wcmd, mdir, tag + "_diag", toks, l2, a2, names, ref.w.ckpt)
        if err or bad:
            notes.append(f"{lab}: {err or bad[0]}")
            continue
        over, worst, _, _ = summarise(compare_tensors(got, ref_g, a.tol, a.zero_tol)[0], a.tol)
        notes.append(f"{lab}: {'FAIL' if over else 'ok'}, worst {worst[0]} {worst[2]:.3g}")
    return notes


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("whale")
    ap.add_argument("workdir")
    ap.add_argument("--configs", help="comma separated subset of " + ",".join(c for c, _ in CONFIGS))
    ap.add_argument("--runs", help="comma separated subset of " + ",".join(r for r, _, _ in RUNS))
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--zero-tol", type=float, default=1e-12)
    ap.add_argument("--tie-margin", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args(argv)

    torch.set_num_threads(1)
    t_start = time.time()
    wcmd = whale_cmd(os.path.abspath(a.whale) if os.path.exists(a.whale) else a.whale)
    has = grad_subcommand(wcmd)
    if has == "no":
        print("SKIP: whale has no grad subcommand")
        return 0
    if has != "yes":
        print("FAIL: " + has)
        return 1
    configs = CONFIGS
    if a.configs:
        keep = a.configs.split(",")
        configs = [c for c in CONFIGS if c[0] in keep]
        if len(configs) != len(keep):
            print(f"unknown config in {keep}")
            return 2
    os.makedirs(a.workdir, exist_ok=True)

    rows = []  # (config, seq, run, ntensors, worst tensor, worst err, zero leak, margin, status)
    failures = []
    t_whale = t_ref = 0.0
    nan = float("nan")

    def fail(msg):
        failures.append(msg)
        print("FAIL: " + msg, flush=True)

    for name, init_extra in configs:
        cfg_path = os.path.join(HERE, "configs", name + ".json")
        mdir = os.path.join(a.workdir, name)
        shutil.rmtree(mdir, ignore_errors=True)
        rc, out, _ = run(wcmd + ["init", "--config", cfg_path, "--seed", str(a.seed), "--out", mdir] + init_extra)
        if rc != 0:
            fail(f"{name}: whale init failed (rc={rc}):\n{tail(out)}")
            rows.append((name, "-", "init", 0, "-", nan, nan, nan, "FAIL"))
            continue
        try:
            bad = check_config(cfg_path, mdir)
            if bad:
                fail(f"{name}: config.json written by whale differs: " + "; ".join(bad))
            cfg = Config.load(os.path.join(mdir, "config.json"))
            ref = GradRef(mdir, torch.float64)
            names = trainable_names(ref.w.ckpt.keys())
        except Exception as e:  # noqa: BLE001
            fail(f"{name}: reference cannot read whale's checkpoint: {type(e).__name__}: {e}")
            rows.append((name, "-", "load", 0, "-", nan, nan, nan, "FAIL"))
            continue
        runs = RUNS if (cfg.n_routed_experts or cfg.num_nextn_predict_layers) else RUNS[:1]
        if a.runs:
            runs = [r for r in runs if r[0] in a.runs.split(",")]
        for seq_name, toks in token_sequences(name, cfg.vocab_size):
            for run_name, lam, alpha in runs:
                tag = f"{name}/{seq_name}/{run_name}"
                t0 = time.time()
                try:
                    ref_g, info = compute_grads(ref, toks, lam, alpha)
                except Exception as e:  # noqa: BLE001
                    fail(f"{tag}: reference failed: {type(e).__name__}: {e}")
                    rows.append((name, seq_name, run_name, 0, "-", nan, nan, nan, "FAIL"))
                    continue
                t_ref += time.time() - t0
                margin = info["margin"]
                err, bad, got, dt = whale_grads(wcmd, mdir, f"{seq_name}/{run_name}", toks, lam, alpha, names,
                                                ref.w.ckpt)
                t_whale += dt
                if err:
                    fail(f"{tag}: {err}")
                    rows.append((name, seq_name, run_name, 0, "-", nan, nan, margin, "FAIL"))
                    continue
                status = "ok"
                if bad:
                    status = "FAIL"
                    fail(f"{tag}: gradient file does not follow the contract: " + "; ".join(bad[:8]))
                cmp_rows, _ = compare_tensors(got, ref_g, a.tol, a.zero_tol)
                over, worst, leak, nzero = summarise(cmp_rows, a.tol)
                if over:
                    desc = ", ".join(f"{r[0]} ({'zero-gradient tensor, ' if r[1] == 'zero' else ''}err {r[2]:.3g})"
                                     for r in sorted(over, key=lambda r: -r[2] / r[3])[:6])
                    if margin < a.tie_margin:
                        if status == "ok":
                            status = "tie"
                        print(f"NOTE: {tag}: {len(over)} tensors exceed tolerance but the reference's routing "
                              f"has a near-tie (gap {margin:.3g} < {a.tie_margin}); not counted: {desc}", flush=True)
                    else:
                        status = "FAIL"
                        fail(f"{tag}: {len(over)}/{len(cmp_rows)} tensors exceed tolerance: {desc}")
                        if lam > 0 and alpha > 0:
                            for note in diagnose(wcmd, mdir, tag, ref, toks, lam, alpha, names, a):
                                print(f"  diagnosis: {note}", flush=True)
                rows.append((name, seq_name, run_name, len(cmp_rows), worst[0], worst[2], leak, margin, status))
                print(f"{tag}: loss {info['loss']:.6f} (ce {info['ce']:.6f}, mtp_ce {info['mtp_ce']}, balance "
                      f"{info['balance']}), {nzero} zero-gradient tensors, worst {worst[0]} {worst[2]:.3g}, "
                      f"whale {dt:.1f}s", flush=True)

    print()
    hdr = (f"{'config':<14} {'seq':<6} {'run':<11} {'tensors':>7} {'worst tensor':<52} {'worst rel err':>13} "
           f"{'zero leak':>10} {'route gap':>10}  status")
    print(hdr)
    print("-" * len(hdr))
    for (c, s, r, n, wt, we, lk, mg, st) in rows:
        print(f"{c:<14} {s:<6} {r:<11} {n:>7} {wt:<52} {we:>13.3e} {lk:>10.2e} {mg:>10.2e}  {st}")
    print()
    print(f"time: {time.time() - t_start:.1f}s (whale {t_whale:.1f}s, reference {t_ref:.1f}s)")
    if failures:
        print(f"reference_grads: {len(failures)} failure(s)")
        return 1
    print(f"reference_grads: all {len(rows)} runs within {a.tol} (zero-gradient tensors within {a.zero_tol})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
