#!/usr/bin/python3
"""NumPy reference of the Grok-1 forward pass, written from docs GROK1.md.

The oracle for the C runner's tests on tiny checkpoints (grok1-hdf5 files).
Weights and the embedding are rounded to bf16 exactly as the release does
(in float32 bit arithmetic); everything after that is float64, so this is the
"exact" model the runner approximates. It is clear rather than fast: whole
sequences, no KV cache, and it is not meant for the real 314 B model.

`mistakes` reproduce the known porting errors (all off by default) so the tests
can show that their tolerance catches each one.
"""
import argparse
import math
import sys

import numpy as np

# Known porting mistakes, each a switch of forward().
MISTAKES = {
    "renorm_gates": "top-k gate weights renormalised to sum to 1",
    "no_softcap": "attention logit soft cap left out",
    "block0_scales": "block 0 of the scales used for every row",
    "erf_gelu": "exact (erf) GELU instead of the tanh approximation",
    "interleaved_rope": "RoPE on interleaved pairs instead of rotate-half",
    "no_bf16": "weights and embedding not rounded to bf16",
    "one_plus_scale": "RMSNorm multiplies by (1 + scale)",
    "no_post_norms": "post-attention and post-MoE RMSNorms left out",
}
# Mistakes that show only at long positions (tests/ref/test_long_context.py),
# kept out of MISTAKES, whose every entry must move the short tests' logits.
LONG_MISTAKES = {
    "f32_rope": "RoPE angles p * inv_freq, and their cosine and sine, in float32",
}

INT_ATTRS = ("vocab_size", "emb_size", "num_layers", "num_q_heads", "num_kv_heads", "key_size",
             "ffn_size", "num_experts", "num_selected_experts", "max_seq_len", "pad_id",
             "bos_id", "eos_id")
FLOAT_ATTRS = ("embedding_multiplier", "output_multiplier", "attn_output_multiplier",
               "attn_logit_cap", "rope_base", "rms_eps")
NORMS = ("attn_norm", "attn_out_norm", "moe_norm", "moe_out_norm")
QMATS = ("attn_q", "attn_k", "attn_v", "attn_o", "moe_gate", "moe_up", "moe_down")


# ----------------------------------------------------------------------------
# bf16 and dequantisation

def bf16_round(a):
    """Round float32 values to the nearest bf16 (ties to even), as float32:
    u += 0x7FFF + ((u >> 16) & 1); u &= 0xFFFF0000 on the bit pattern."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).copy()
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    u &= np.uint32(0xFFFF0000)
    return u.view(np.float32)


def dequantise(w, scale, block0=False, round_bf16=True):
    """bf16(float32(int8) * float32(scale)) as float64.

    w: int8 (..., rows, cols); scale: float32 (..., B, cols). The rows split
    into B equal contiguous blocks; row r uses scale[..., r // (rows // B), :].
    block0 reproduces the mistake of using block 0 for every row."""
    rows, B = w.shape[-2], scale.shape[-2]
    if rows % B:
        raise ValueError("scale blocks %d do not divide rows %d" % (B, rows))
    s = scale.astype(np.float32)
    if block0:
        s = s[..., :1, :]
    s = np.repeat(s, rows // s.shape[-2], axis=-2)
    prod = w.astype(np.float32) * s  # float32 product, like the release
    return (bf16_round(prod) if round_bf16 else prod).astype(np.float64)


# ----------------------------------------------------------------------------
# loading

class Model:
    """A checkpoint in memory: `cfg` (hyper-parameters), the raw stored arrays
    (int8 + scales, float32 norms and router), and dequantised float64
    weights made on demand (cached per dequantisation variant)."""

    def __init__(self, cfg, embedding, final_norm, layers):
        self.cfg = cfg
        self.embedding = embedding    # float32 (V, D)
        self.final_norm = final_norm  # float32 (D)
        self.layers = layers          # list of dicts of stored arrays
        self._cache = {}

    def weights(self, block0=False, round_bf16=True):
        """(embedding float64 (V, D), list of per-layer float64 weight dicts)."""
        key = (block0, round_bf16)
        if key not in self._cache:
            emb = bf16_round(self.embedding) if round_bf16 else self.embedding
            layers = []
            for raw in self.layers:
                lw = {n: raw[n].astype(np.float64) for n in NORMS + ("router",)}
                for n in QMATS:
                    lw[n] = dequantise(raw[n], raw[n + "_scale"], block0, round_bf16)
                layers.append(lw)
            self._cache[key] = (emb.astype(np.float64), layers)
        return self._cache[key]


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape in ((), (1,)):
        return v.reshape(()).item()
    return v.item() if isinstance(v, np.generic) else v


def load(path):
    """Read a grok1-hdf5 checkpoint entirely (tiny models only)."""
    import h5py
    with h5py.File(path, "r") as f:
        a = {k: _attr(v) for k, v in f.attrs.items()}
        if a.get("format") != "grok1-hdf5":
            raise ValueError("%s: format attribute is %r, expected 'grok1-hdf5'"
                             % (path, a.get("format")))
        if int(a.get("format_version", -1)) != 1:
            raise ValueError("%s: format_version %r, expected 1" % (path, a.get("format_version")))
        cfg = {k: int(a[k]) for k in INT_ATTRS}
        cfg.update({k: float(a[k]) for k in FLOAT_ATTRS})
        emb = f["embedding"][()]
        if emb.dtype == np.uint16:  # stored as raw bf16 bits
            emb = (emb.astype(np.uint32) << np.uint32(16)).view(np.float32)
        emb = emb.astype(np.float32)
        layers = []
        for l in range(cfg["num_layers"]):
            g = f["layers/%02d" % l]
            raw = {n: g[n][()].astype(np.float32) for n in NORMS + ("router",)}
            for n in QMATS:
                raw[n] = g[n][()]
                raw[n + "_scale"] = g[n + "_scale"][()].astype(np.float32)
            layers.append(raw)
        model = Model(cfg, emb, f["final_norm"][()].astype(np.float32), layers)
    _check_shapes(model, path)
    return model


def _check_shapes(m, path):
    c = m.cfg
    V, D, K, F, E = c["vocab_size"], c["emb_size"], c["key_size"], c["ffn_size"], c["num_experts"]
    Hq, Hkv = c["num_q_heads"], c["num_kv_heads"]
    want = {"attn_q": (D, Hq * K), "attn_k": (D, Hkv * K), "attn_v": (D, Hkv * K),
            "attn_o": (Hq * K, D), "moe_gate": (E, D, F), "moe_up": (E, D, F),
            "moe_down": (E, F, D), "router": (D, E)}
    def need(cond, msg):
        if not cond:
            raise ValueError("%s: %s" % (path, msg))
    need(m.embedding.shape == (V, D), "embedding shape %s, expected %s" % (m.embedding.shape, (V, D)))
    need(Hq % Hkv == 0 and K % 2 == 0, "num_q_heads must be a multiple of num_kv_heads, key_size even")
    for l, raw in enumerate(m.layers):
        for n, shp in want.items():
            need(raw[n].shape == shp, "layers/%02d/%s has shape %s, expected %s"
                 % (l, n, raw[n].shape, shp))
        for n in QMATS:
            s = raw[n + "_scale"]
            need(s.shape[:-2] == raw[n].shape[:-2] and s.shape[-1] == raw[n].shape[-1]
                 and raw[n].shape[-2] % s.shape[-2] == 0,
                 "layers/%02d/%s_scale has shape %s, which does not fit %s"
                 % (l, n, s.shape, raw[n].shape))


# ----------------------------------------------------------------------------
# the pieces of the forward pass

def rms_norm(v, scale, eps, one_plus=False):
    """scale * v / sqrt(mean(v^2) + eps) over the last axis (no 1 + scale)."""
    s = 1.0 + scale if one_plus else scale
    return s * v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps)


def rope(x, positions, base, interleaved=False, f32=False):
    """Rotary embedding of x (n, H, K) at positions (n,), rotate-half layout:
    out[j] = x[j] cos(theta[j]) + r[j] sin(theta[j]), r = concat(-x[K/2:], x[:K/2]),
    theta[j] = p * inv_freq[j mod K/2], inv_freq[i] = base^(-2i/K).
    interleaved reproduces the mistake of rotating pairs (2i, 2i+1) instead;
    f32 the mistake of computing inv_freq, the angles and their cosine and
    sine in float32 (as a port in float32, or JAX's default, does)."""
    K = x.shape[-1]
    half = K // 2
    if f32:
        e = np.arange(half, dtype=np.float32) * np.float32(2.0) / np.float32(K)
        inv_freq = np.float32(1.0) / np.float32(base) ** e
        ang = np.asarray(positions, dtype=np.float32)[:, None] * inv_freq[None, :]
        cos = np.cos(ang).astype(np.float64)[:, None, :]
        sin = np.sin(ang).astype(np.float64)[:, None, :]
    else:
        inv_freq = 1.0 / base ** (np.arange(half, dtype=np.float64) * 2.0 / K)
        ang = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # (n, K/2)
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]             # (n, 1, K/2)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = b * cos + a * sin
        return out
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    z = x - np.max(x, axis=axis, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_erf(x):
    from math import erf
    return 0.5 * x * (1.0 + np.vectorize(erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def top_k(p, k):
    """Indices (n, k) of the k largest entries of each row, in decreasing order;
    ties go to the lower index first (stable sort on -p)."""
    return np.argsort(-p, axis=-1, kind="stable")[:, :k]


def attention(x, lw, cfg, mk, diag, kv_bf16=False, rows=None):
    """Causal GQA attention with RoPE and the soft cap; x (n, D) -> (n, D),
    or (len(rows), D) for the query rows `rows` only (increasing positions).
    kv_bf16: keys (after RoPE) and values rounded to bf16, as a bf16 KV cache
    stores them."""
    n = x.shape[0]
    Hq, Hkv, K = cfg["num_q_heads"], cfg["num_kv_heads"], cfg["key_size"]
    pos = np.arange(n)
    qpos = pos if rows is None else np.asarray(rows, dtype=np.int64)
    inter, f32 = "interleaved_rope" in mk, "f32_rope" in mk
    q = rope((x[qpos] @ lw["attn_q"]).reshape(len(qpos), Hq, K), qpos, cfg["rope_base"], inter, f32)
    k = rope((x @ lw["attn_k"]).reshape(n, Hkv, K), pos, cfg["rope_base"], inter, f32)
    v = (x @ lw["attn_v"]).reshape(n, Hkv, K)
    if kv_bf16:
        k, v = (bf16_round(a.astype(np.float32)).astype(np.float64) for a in (k, v))
    g = np.arange(Hq) // (Hq // Hkv)                      # kv head of each q head
    nq = len(qpos)
    o = np.empty((nq, Hq, K))
    # queries in blocks of 1024 rows (each row on its own: the same function),
    # so a long sequence needs Hq x 1024 x n scores at a time, not Hq x n x n
    for i0 in range(0, nq, 1024):
        i1 = min(nq, i0 + 1024)
        nk = int(qpos[i1 - 1]) + 1                        # keys the block's last query sees
        s = np.einsum("ihd,jhd->hij", q[i0:i1], k[:nk, g, :]) * cfg["attn_output_multiplier"]  # (Hq, b, nk)
        causal = np.arange(nk)[None, :] <= qpos[i0:i1, None]
        diag["max_raw_score"] = max(diag["max_raw_score"], float(np.max(np.abs(s[:, causal]))))
        if "no_softcap" not in mk:
            cap = cfg["attn_logit_cap"]
            s = cap * np.tanh(s / cap)
        s = np.where(causal[None], s, -np.inf)
        p = softmax(s, axis=-1)
        o[i0:i1] = np.einsum("hij,jhd->ihd", p, v[:nk, g, :])  # (b, Hq, K)
    return o.reshape(nq, Hq * K) @ lw["attn_o"]


def moe(x, lw, cfg, mk, diag):
    """Softmax router over all experts, top-k, gates = full-softmax
    probabilities (not renormalised), experts (gelu(x W1) * (x Wv)) W2."""
    kk = cfg["num_selected_experts"]
    p = softmax(x @ lw["router"], axis=-1)                 # (n, E)
    sel = top_k(p, kk)                                     # (n, k)
    gates = np.take_along_axis(p, sel, axis=-1)            # (n, k)
    if kk < p.shape[1]:
        ps = np.sort(p, axis=-1)[:, ::-1]
        diag["min_router_margin"] = min(diag["min_router_margin"],
                                        float(np.min(ps[:, kk - 1] - ps[:, kk])))
        diag["router_margins"].append(ps[:, kk - 1] - ps[:, kk])
    if "renorm_gates" in mk:
        gates = gates / gates.sum(axis=-1, keepdims=True)
    act = gelu_erf if "erf_gelu" in mk else gelu_tanh
    out = np.zeros_like(x)
    for e in range(p.shape[1]):
        rows, slot = np.nonzero(sel == e)
        if rows.size == 0:
            continue
        xe = x[rows]
        y = (act(xe @ lw["moe_gate"][e]) * (xe @ lw["moe_up"][e])) @ lw["moe_down"][e]
        out[rows] += gates[rows, slot][:, None] * y
    return out


def _parse_mistakes(mistakes):
    mk = frozenset(mistakes or ())
    known = dict(MISTAKES, **LONG_MISTAKES)
    bad = mk - set(known)
    if bad:
        raise ValueError("unknown mistake(s) %s (known: %s)" % (sorted(bad), ", ".join(known)))
    return mk


def forward(model, tokens, mistakes=(), diagnostics=False, kv_bf16=False, rows=None):
    """Logits float64 (n, V) for the token ids `tokens` at positions 0..n-1,
    or (len(rows), V) for the positions `rows` only (increasing): the last
    layer then attends from those rows alone, so a long sequence through one
    layer costs len(rows) x n, not n x n.

    mistakes: names from MISTAKES to reproduce. With diagnostics=True returns
    (logits, diag) where diag has max_raw_score (largest |q.k * multiplier|
    over visible pairs, before the cap) and min_router_margin (smallest gap
    between the k-th and (k+1)-th router probability: a small value means the
    expert choice is fragile to rounding) and router_margins (that gap for
    every row, one array per layer: a row's own choices are fragile where it
    is small, and so is every later row's output, which attends to it).
    kv_bf16: keys and values rounded to bf16 as a bf16 KV cache (--kv-cache
    bf16) holds them."""
    mk = _parse_mistakes(mistakes)
    cfg = model.cfg
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ValueError("tokens must be a non-empty 1-D sequence")
    if tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]:
        raise ValueError("token id out of range [0, %d)" % cfg["vocab_size"])
    emb, layers = model.weights(block0="block0_scales" in mk, round_bf16="no_bf16" not in mk)
    eps, one_plus = cfg["rms_eps"], "one_plus_scale" in mk
    post = "no_post_norms" not in mk
    diag = {"max_raw_score": 0.0, "min_router_margin": math.inf, "router_margins": []}

    x = emb[tokens] * cfg["embedding_multiplier"]          # (n, D)
    for li, lw in enumerate(layers):
        last = rows if li == len(layers) - 1 else None
        a = attention(rms_norm(x, lw["attn_norm"], eps, one_plus), lw, cfg, mk, diag, kv_bf16, last)
        if last is not None:
            x = x[np.asarray(last, dtype=np.int64)]
        x = x + (rms_norm(a, lw["attn_out_norm"], eps, one_plus) if post else a)
        f = moe(rms_norm(x, lw["moe_norm"], eps, one_plus), lw, cfg, mk, diag)
        x = x + (rms_norm(f, lw["moe_out_norm"], eps, one_plus) if post else f)
    h = rms_norm(x, model.final_norm.astype(np.float64), eps, one_plus)
    logits = (h @ emb.T) * cfg["output_multiplier"]        # tied un-embedding
    return (logits, diag) if diagnostics else logits


def greedy_generate(model, prompt, max_new_tokens, stop_at_eos=True):
    """Greedy decoding (argmax, lowest index on ties) by re-running the whole
    sequence each step. Returns (completion ids, finish_reason, gaps) where
    gaps[i] is the top-1 minus top-2 logit at step i (near ties are fragile)."""
    seq, out, gaps = list(prompt), [], []
    eos = model.cfg["eos_id"]
    for _ in range(max_new_tokens):
        last = forward(model, seq)[-1]
        t = int(np.argmax(last))
        top2 = np.sort(last)[-2:]
        gaps.append(float(top2[1] - top2[0]))
        if stop_at_eos and t == eos:
            return out, "eos", gaps
        out.append(t)
        seq.append(t)
    return out, "length", gaps


def main(argv=None):
    ap = argparse.ArgumentParser(description="Grok-1 NumPy reference: logits of a token sequence.")
    ap.add_argument("checkpoint", help="grok1-hdf5 file (tiny models)")
    ap.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,2,3")
    ap.add_argument("--out", help="write the logits (float64 [n, V]) to this .npy file")
    ap.add_argument("--mistake", action="append", default=[], choices=sorted(dict(MISTAKES, **LONG_MISTAKES)),
                    help="reproduce a known porting mistake (repeatable)")
    a = ap.parse_args(argv)
    try:
        tokens = [int(t) for t in a.tokens.split(",") if t.strip()]
    except ValueError:
        ap.error("--tokens: expected comma-separated integers, got %r" % a.tokens)
    model = load(a.checkpoint)
    logits, diag = forward(model, tokens, a.mistake, diagnostics=True)
    if a.out:
        np.save(a.out, logits)
    lp = log_softmax(logits)
    print("logits %s, max |logit| %.6g" % (logits.shape, np.max(np.abs(logits))))
    print("max raw attention score %.6g (cap %g), min router margin %.3g"
          % (diag["max_raw_score"], model.cfg["attn_logit_cap"], diag["min_router_margin"]))
    if len(tokens) > 1:
        s = float(sum(lp[i, tokens[i + 1]] for i in range(len(tokens) - 1)))
        print("sum logprob of tokens 1..n-1: %.6f" % s)
    print("greedy next token: %d" % int(np.argmax(logits[-1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
