#!/usr/bin/python3
"""Self-checks of the NumPy reference (grok1_ref.py); needs no C program.

Checks the reference against a second, deliberately plain implementation
(token by token with a KV cache, loops over heads and experts, its own bf16
rounding), plus properties: RoPE, causality, routing ties, and that every
mistake switch really changes the logits. Exit 0 pass, 1 fail, 77 skip.
"""
import math
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import g1test  # noqa: E402  (first: exits 77 without numpy or h5py, which make_ckpt and load need)
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import grok1_ref as ref  # noqa: E402
import make_ckpt  # noqa: E402

check = g1test.Checks()


# ----------------------------------------------------------------------------
# the second implementation: one token at a time, plain loops

def bf16_frexp(x):
    """bf16 rounding by another route: 8 significant bits via frexp and
    round-half-even (np.rint) in float64. Valid for normal numbers."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    m, e = np.frexp(x)
    return np.ldexp(np.rint(m * 256.0), e - 8).astype(np.float32)


def dequant_loop(w, scale):
    """Row by row: row r uses scale block r // (rows // B)."""
    rows, B = w.shape[-2], scale.shape[-2]
    out = np.empty(w.shape, dtype=np.float64)
    for r in range(rows):
        b = r // (rows // B)
        prod = w[..., r, :].astype(np.float32) * scale[..., b, :].astype(np.float32)
        out[..., r, :] = bf16_frexp(prod)
    return out


def loop_forward(model, tokens):
    """Logits (n, V), computed token by token with a KV cache."""
    c = model.cfg
    D, Hq, Hkv, K = c["emb_size"], c["num_q_heads"], c["num_kv_heads"], c["key_size"]
    E, kk = c["num_experts"], c["num_selected_experts"]
    eps, half = c["rms_eps"], K // 2
    emb = bf16_frexp(model.embedding).astype(np.float64)
    L = []
    for raw in model.layers:
        lw = {n: raw[n].astype(np.float64) for n in ref.NORMS + ("router",)}
        for n in ref.QMATS:
            lw[n] = dequant_loop(raw[n], raw[n + "_scale"])
        L.append(lw)

    def norm(v, s):
        return s * v / math.sqrt(float(np.dot(v, v)) / len(v) + eps)

    def rope1(v, p):  # one head vector at position p, element by element
        out = np.empty(K)
        for j in range(K):
            theta = p * c["rope_base"] ** (-2.0 * (j % half) / K)
            r = -v[j + half] if j < half else v[j - half]
            out[j] = v[j] * math.cos(theta) + r * math.sin(theta)
        return out

    def gelu(u):
        return np.array([0.5 * t * (1 + math.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t ** 3)))
                         for t in u])

    kcache = [[] for _ in L]
    vcache = [[] for _ in L]
    logits = []
    for p, tok in enumerate(tokens):
        x = emb[tok] * c["embedding_multiplier"]
        for l, lw in enumerate(L):
            h = norm(x, lw["attn_norm"])
            q, k, v = h @ lw["attn_q"], h @ lw["attn_k"], h @ lw["attn_v"]
            kcache[l].append([rope1(k[g * K:(g + 1) * K], p) for g in range(Hkv)])
            vcache[l].append([v[g * K:(g + 1) * K] for g in range(Hkv)])
            heads = []
            for hh in range(Hq):
                g = hh // (Hq // Hkv)
                qh = rope1(q[hh * K:(hh + 1) * K], p)
                s = []
                for j in range(p + 1):
                    raw_s = float(np.dot(qh, kcache[l][j][g])) * c["attn_output_multiplier"]
                    s.append(c["attn_logit_cap"] * math.tanh(raw_s / c["attn_logit_cap"]))
                m = max(s)
                w = [math.exp(t - m) for t in s]
                z = sum(w)
                o = sum((w[j] / z) * vcache[l][j][g] for j in range(p + 1))
                heads.append(o)
            a = np.concatenate(heads) @ lw["attn_o"]
            x = x + norm(a, lw["attn_out_norm"])
            h = norm(x, lw["moe_norm"])
            r = h @ lw["router"]
            m = max(r)
            pr = [math.exp(t - m) for t in r]
            z = sum(pr)
            pr = [t / z for t in pr]
            chosen = sorted(range(E), key=lambda e: (-pr[e], e))[:kk]
            f = np.zeros(D)
            for e in chosen:
                y = (gelu(h @ lw["moe_gate"][e]) * (h @ lw["moe_up"][e])) @ lw["moe_down"][e]
                f += pr[e] * y  # full-softmax probability, not renormalised
            x = x + norm(f, lw["moe_out_norm"])
        hf = norm(x, model.final_norm.astype(np.float64))
        logits.append((emb @ hf) * c["output_multiplier"])
    return np.array(logits)


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ----------------------------------------------------------------------------

def main():
    tmp = tempfile.mkdtemp(prefix="g1ref_")
    rng = np.random.default_rng(123)

    # bf16 rounding: bit trick against frexp route, including exact halfway cases
    x = (rng.standard_normal(20000) * 10.0 ** rng.uniform(-6, 6, 20000)).astype(np.float32)
    u = x.view(np.uint32).copy()
    u[:5000] = (u[:5000] & np.uint32(0xFFFF0000)) | np.uint32(0x8000)  # ties
    x = u.view(np.float32)
    check(np.array_equal(ref.bf16_round(x), bf16_frexp(x)),
          "bf16_round equals frexp/rint rounding on 20000 values (5000 exact ties)")
    check(ref.bf16_round(np.float32(1 + 2 ** -8)) == 1.0
          and ref.bf16_round(np.float32(1 + 3 * 2 ** -8)) == np.float32(1 + 2 ** -6),
          "bf16 ties go to even (1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6)")

    # dequantisation blocks
    w = rng.integers(-127, 128, size=(3, 12, 5)).astype(np.int8)
    s = make_ckpt.bf16_round(rng.uniform(0.01, 0.02, size=(3, 4, 5)).astype(np.float32))
    d = ref.dequantise(w, s)
    check(np.array_equal(d, dequant_loop(w, s)), "dequantise (4 row blocks) equals the row loop")
    check(d[1, 7, 2] == float(ref.bf16_round(np.float32(w[1, 7, 2]) * s[1, 2, 2])),
          "dequantise: element [1, 7, 2] uses scale[1, 7 // 3, 2]")

    # RoPE
    K, base = 16, 10000.0
    v = rng.standard_normal((1, 3, K))
    for inter in (False, True):
        name = "interleaved" if inter else "rotate-half"
        check(np.allclose(ref.rope(v, [0], base, inter), v, rtol=0, atol=0),
              "RoPE (%s): position 0 is the identity" % name)
        q, k = rng.standard_normal((1, 1, K)), rng.standard_normal((1, 1, K))
        dots = [float(np.sum(ref.rope(q, [p + 7], base, inter) * ref.rope(k, [p], base, inter)))
                for p in (0, 5, 100, 200)]
        check(max(dots) - min(dots) < 1e-9 * max(1.0, abs(dots[0])),
              "RoPE (%s): q.k depends only on the position difference (spread %.2g)"
              % (name, max(dots) - min(dots)))
        check(np.allclose(np.linalg.norm(ref.rope(v, [37], base, inter)), np.linalg.norm(v)),
              "RoPE (%s): preserves the norm" % name)
    # rotate-half pairs j with j + K/2: at inv_freq[0] = 1, position p rotates (x0, x8) by p
    e0 = np.zeros((1, 1, K)); e0[0, 0, 0] = 1.0
    r = ref.rope(e0, [1], base)[0, 0]
    check(abs(r[0] - math.cos(1)) < 1e-15 and abs(r[K // 2] - math.sin(1)) < 1e-15,
          "RoPE rotate-half: e_0 at position 1 -> cos(1) e_0 + sin(1) e_{K/2}")

    # routing ties
    p = np.array([[0.2, 0.3, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25]])
    check(ref.top_k(p, 3).tolist() == [[1, 2, 0], [0, 1, 2]], "top-k ties: lower expert index first")

    # model checks on tiny random checkpoints
    cold = os.path.join(tmp, "cold.h5")
    hot = os.path.join(tmp, "hot.h5")
    odd = os.path.join(tmp, "odd.h5")
    make_ckpt.write_ckpt(cold, seed=1)
    make_ckpt.write_ckpt(hot, seed=2, qk_gain=8.0)
    # uneven head grouping, other block counts, top-3 of 6 experts
    cfg_odd = dict(make_ckpt.TINY_CONFIG, num_layers=2, num_q_heads=6, num_kv_heads=2,
                   key_size=8, emb_size=48, ffn_size=40, num_experts=6, num_selected_experts=3,
                   attn_output_multiplier=1 / math.sqrt(8), vocab_size=300)
    make_ckpt.write_ckpt(odd, cfg_odd, seed=3,
                         blocks={"attn_q": 2, "attn_k": 3, "attn_o": 6, "moe_up": 4, "moe_down": 5})
    toks = rng.integers(0, 512, size=24).tolist()
    for path, name, tk in ((cold, "tiny", toks), (hot, "tiny hot", toks),
                           (odd, "odd config", [t % 300 for t in toks[:13]])):
        m = ref.load(path)
        a, diag = ref.forward(m, tk, diagnostics=True)
        b = loop_forward(m, tk)
        e = rel_err(a, b)
        check(e < 1e-12, "%s: vectorised reference equals the loop/KV-cache version "
              "(max rel err %.2e, max raw score %.1f)" % (name, e, diag["max_raw_score"]))

    m = ref.load(cold)
    mh = ref.load(hot)
    base_l = ref.forward(m, toks)
    _, dh = ref.forward(mh, toks, diagnostics=True)
    check(dh["max_raw_score"] > 30.0,
          "hot checkpoint: max raw score %.1f exceeds the cap 30" % dh["max_raw_score"])

    # causality: changing the last token leaves earlier positions alone
    t2 = list(toks); t2[-1] = (t2[-1] + 1) % 512
    l2 = ref.forward(m, t2)
    check(np.array_equal(l2[:-1], base_l[:-1]) and not np.array_equal(l2[-1], base_l[-1]),
          "causal: a change of the last token changes only the last row")
    # prefix consistency: the logits of a prefix equal the first rows
    check(np.allclose(ref.forward(m, toks[:9]), base_l[:9], rtol=1e-12, atol=1e-15),
          "prefix: logits of the first 9 tokens equal the first 9 rows")

    # every mistake switch changes the logits, and the test tolerance catches
    # the required ones on the checkpoint where each is visible
    quiet = os.path.join(tmp, "quiet.h5")
    shutil.copy(cold, quiet)
    check(make_ckpt.quiet_moe(quiet), "quiet-MoE checkpoint made (moe_down scales * 2^-7)")
    mq = ref.load(quiet)
    seqs = [toks, rng.integers(0, 512, size=20).tolist()]
    tables = {"ordinary": g1test.teeth(m, seqs), "hot": g1test.teeth(mh, seqs),
              "quiet": g1test.teeth(mq, seqs)}
    for mk in ref.MISTAKES:
        where = g1test.TEETH_CKPT.get(mk, "ordinary")
        check(tables[where][mk][0] > 1e-7, "mistake %s changes the logits (%s checkpoint, "
              "max rel err %.2e)" % (mk, where, tables[where][mk][0]))
    check(tables["ordinary"]["renorm_gates"][0] < 1e-3,
          "renormalised gates are (nearly) cancelled by the post-MoE norm on the ordinary "
          "checkpoint (max rel err %.2e)" % tables["ordinary"]["renorm_gates"][0])
    g1test.teeth_report(check, tables)
    try:
        ref.forward(m, toks, mistakes=["no_such_mistake"])
        check(False, "unknown mistake names are refused")
    except ValueError:
        check(True, "unknown mistake names are refused")

    # embedding stored as raw bf16 bits loads to the same model
    bf = os.path.join(tmp, "bf16emb.h5")
    shutil.copy(cold, bf)
    with h5py.File(bf, "r+") as f:
        e32 = ref.bf16_round(f["embedding"][()])
        del f["embedding"]
        f["embedding"] = (e32.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
    check(np.array_equal(ref.forward(ref.load(bf), toks), base_l),
          "embedding stored as bf16 bits (uint16) gives the same logits")

    # greedy helper and command line
    comp, why, gaps = ref.greedy_generate(m, toks[:5], 4)
    seq = toks[:5] + comp
    lg = ref.forward(m, seq)
    check(all(int(np.argmax(lg[4 + i])) == comp[i] for i in range(len(comp))),
          "greedy_generate picks the argmax at each step (%s, min gap %.3g)" % (why, min(gaps)))
    out = os.path.join(tmp, "cli.npy")
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "grok1_ref.py"),
           cold, "--tokens", ",".join(map(str, toks)), "--out", out]
    pr = subprocess.run(cmd, capture_output=True, text=True)
    check(pr.returncode == 0 and np.array_equal(np.load(out), base_l),
          "command line writes the same logits" + ("" if pr.returncode == 0 else ": " + pr.stderr))

    shutil.rmtree(tmp, ignore_errors=True)
    return check.result()


if __name__ == "__main__":
    sys.exit(main())
