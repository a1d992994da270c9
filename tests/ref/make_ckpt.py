#!/usr/bin/python3
"""Tiny random Grok-1 checkpoints in the grok1-hdf5 layout, written with h5py.

For testing the NumPy reference on its own (tests/ref/test_ref_selfcheck.py);
the C tests use checkpoints from grok1-mkckpt instead. The weights imitate the
magnitudes of src/synth.c (order-one activations, bf16-exact scales that differ
between row blocks) but are NOT the same numbers.
"""
import argparse
import math

import numpy as np

# Grok-1's hyper-parameters (GROK1.md), and the "tiny" preset of src/config.c.
GROK1_CONFIG = dict(
    vocab_size=131072, emb_size=6144, num_layers=64, num_q_heads=48, num_kv_heads=8,
    key_size=128, ffn_size=32768, num_experts=8, num_selected_experts=2, max_seq_len=8192,
    embedding_multiplier=78.38367176906169, output_multiplier=0.5773502691896257,
    attn_output_multiplier=0.08838834764831845, attn_logit_cap=30.0, rope_base=10000.0,
    rms_eps=1e-5, pad_id=0, bos_id=1, eos_id=2)

TINY_CONFIG = dict(GROK1_CONFIG, vocab_size=512, emb_size=64, num_layers=4, num_q_heads=4,
                   num_kv_heads=2, key_size=16, ffn_size=96, max_seq_len=256,
                   attn_output_multiplier=0.25)

INT_PARAMS = ("vocab_size", "emb_size", "num_layers", "num_q_heads", "num_kv_heads", "key_size",
              "ffn_size", "num_experts", "num_selected_experts", "max_seq_len", "pad_id",
              "bos_id", "eos_id")
FLOAT_PARAMS = ("embedding_multiplier", "output_multiplier", "attn_output_multiplier",
                "attn_logit_cap", "rope_base", "rms_eps")


def bf16_round(a):
    """Round float32 values to bf16 (nearest, ties to even); result is float32."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).copy()
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    u &= np.uint32(0xFFFF0000)
    return u.view(np.float32)


def qmat_shapes(cfg):
    """(rows, cols) of every quantised matrix; experts add a leading E."""
    D, K, F = cfg["emb_size"], cfg["key_size"], cfg["ffn_size"]
    Hq, Hkv = cfg["num_q_heads"], cfg["num_kv_heads"]
    return {"attn_q": (D, Hq * K), "attn_k": (D, Hkv * K), "attn_v": (D, Hkv * K),
            "attn_o": (Hq * K, D), "moe_gate": (D, F), "moe_up": (D, F), "moe_down": (F, D)}


def default_blocks(cfg):
    """Scale row blocks as in the release: 8 for attn_o and moe_down (fewer if
    8 does not divide the rows), 1 for the others."""
    out = {}
    for name, (rows, _) in qmat_shapes(cfg).items():
        b = 8 if name in ("attn_o", "moe_down") else 1
        while rows % b:
            b -= 1
        out[name] = b
    return out


def _qmat(rng, rows, cols, blocks, gain=1.0):
    """int8 values in [-127, 127] and bf16-exact scales of shape (blocks, cols)
    such that the dequantised matrix has entries of std ~ 1/sqrt(rows)."""
    w = rng.integers(-127, 128, size=(rows, cols)).astype(np.int8)
    base = gain / (127.0 / math.sqrt(3.0) * math.sqrt(rows))
    f = 0.5 * 4.0 ** rng.random((blocks, cols))  # [0.5, 2): blocks really differ
    return w, bf16_round((base * f).astype(np.float32))


def write_ckpt(path, cfg=None, seed=0, qk_gain=1.0, blocks=None):
    """Write a random checkpoint of config `cfg` (default tiny) to `path`.
    `qk_gain` multiplies the q and k scales (> 1 makes attention "hot");
    `blocks` overrides the scale row blocks per matrix name."""
    import h5py
    cfg = dict(TINY_CONFIG if cfg is None else cfg)
    nb = default_blocks(cfg)
    nb.update(blocks or {})
    rng = np.random.default_rng(seed)
    V, D, L = cfg["vocab_size"], cfg["emb_size"], cfg["num_layers"]
    E = cfg["num_experts"]
    shapes = qmat_shapes(cfg)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "grok1-hdf5"
        f.attrs["format_version"] = np.int32(1)
        for k in INT_PARAMS:
            f.attrs[k] = np.int32(cfg[k])
        for k in FLOAT_PARAMS:
            f.attrs[k] = np.float64(cfg[k])
        emb = rng.standard_normal((V, D)) / cfg["embedding_multiplier"]
        f["embedding"] = emb.astype(np.float32)
        f["final_norm"] = (0.8 + 0.4 * rng.random(D)).astype(np.float32)
        for l in range(L):
            g = f.create_group("layers/%02d" % l)
            for n in ("attn_norm", "attn_out_norm", "moe_norm", "moe_out_norm"):
                g[n] = (0.7 + 0.6 * rng.random(D)).astype(np.float32)
            for n in ("attn_q", "attn_k", "attn_v", "attn_o"):
                gain = qk_gain if n in ("attn_q", "attn_k") else 1.0
                w, s = _qmat(rng, *shapes[n], nb[n], gain)
                g[n], g[n + "_scale"] = w, s
            g["router"] = (1.5 / math.sqrt(D) * rng.standard_normal((D, E))).astype(np.float32)
            for n in ("moe_gate", "moe_up", "moe_down"):
                ws, ss = zip(*(_qmat(rng, *shapes[n], nb[n]) for _ in range(E)))
                g[n], g[n + "_scale"] = np.stack(ws), np.stack(ss)
    return cfg


def scale_dataset(path, name, factor, rows=None):
    """Multiply a float32 dataset of an existing checkpoint in place (keeps the
    file's layout, so a checkpoint from grok1-mkckpt stays readable by the C
    reader). `rows` limits it to some leading indices. Returns False if the
    dataset is not float32 (nothing changed)."""
    import h5py
    with h5py.File(path, "r+") as f:
        d = f[name]
        if d.dtype != np.float32:
            return False
        sel = slice(None) if rows is None else rows
        d[sel] = (d[sel] * np.float32(factor)).astype(np.float32)
        refresh_crc(d)
    return True


def refresh_crc(d):
    """Make a changed dataset's checksums (docs/CHECKPOINT.md, "Checksums")
    those of its new contents, as a writer would, so the reader takes the
    change for the file's own: zlib's CRC-32 of the whole dataset, or of
    each expert for a 3-dimensional one."""
    import zlib
    if "crc32" not in d.attrs:
        return
    a = d[()]
    a = a.astype("<f4") if a.dtype.kind == "f" else a
    parts = a if d.ndim == 3 else [a]
    d.attrs["crc32"] = np.array([zlib.crc32(np.ascontiguousarray(x).tobytes()) for x in parts], dtype=np.uint32)


def quiet_moe(path, factor=2.0 ** -7):
    """Shrink every moe_down scale by `factor` (a power of two keeps them
    bf16-exact): expert outputs then have an RMS near sqrt(rms_eps), where
    the eps of the post-MoE RMSNorm matters. Only there can renormalised gates
    be seen, since the post-MoE norm cancels any per-token factor on f."""
    import h5py
    with h5py.File(path, "r") as f:
        n = len(f["layers"])
    return all(scale_dataset(path, "layers/%02d/moe_down_scale" % l, factor) for l in range(n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--qk-gain", type=float, default=1.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a hyper-parameter of the tiny config")
    a = ap.parse_args()
    cfg = dict(TINY_CONFIG)
    for kv in a.set:
        k, v = kv.split("=", 1)
        if k not in cfg:
            ap.error("unknown hyper-parameter '%s'" % k)
        cfg[k] = int(v) if k in INT_PARAMS else float(v)
    write_ckpt(a.out, cfg, a.seed, a.qk_gain)


if __name__ == "__main__":
    main()
