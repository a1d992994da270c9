#!/usr/bin/python3
"""Fixture writer: a small Grok-1 model laid out exactly like xAI's release
(ckpt-0/tensorNNNNN_000, pickle protocol 4), for grok1-convert's tests.

Each file is `pickle.dump(value, f, protocol=4)` of a numpy float32 array or
of a `QuantizedWeight8bit` dataclass defined in __main__ (as the release's
checkpoint.py registers it) with `weight` (int8) and `scales` (bf16). NumPy
has no bfloat16: the scales are held as 2-byte void values ('V2') and their
dtype is pickled as `numpy.dtype(ml_dtypes.bfloat16, False, True)` with the
state ml_dtypes gives (3, '<', None, None, None, 2, 2, 64), which is exactly
what the release's JAX/ml_dtypes arrays pickle to; ml_dtypes is not needed.

File order: 00000 embedding, 00001 final norm, then 12 files per layer with
layers in lexicographic order of their index (GROK1.md). Values are a pure
function of (config, seed, file index): `tensors()` regenerates them for the
tests without reading the pickles.

usage: make_release.py --config CFG.json --seed S --out DIR
"""
import argparse
import dataclasses
import json
import os
import pickle
import sys

import numpy as np

# The grok-1 values; a JSON config overrides some (as grok1-convert --config does).
GROK1 = dict(vocab_size=131072, emb_size=6144, num_layers=64, num_q_heads=48, num_kv_heads=8,
             key_size=128, ffn_size=32768, num_experts=8, num_selected_experts=2, max_seq_len=8192,
             embedding_multiplier=78.38367176906169, output_multiplier=0.5773502691896257,
             attn_output_multiplier=0.08838834764831845, attn_logit_cap=30.0, rope_base=10000.0,
             rms_eps=1e-5, pad_id=0, bos_id=1, eos_id=2)

# Item j of a layer: (release name, HDF5 name, kind)
ITEMS = [("linear", "moe_gate", "qmat"), ("linear_1", "moe_down", "qmat"), ("linear_v", "moe_up", "qmat"),
         ("key", "attn_k", "qmat"), ("linear(o)", "attn_o", "qmat"), ("query", "attn_q", "qmat"),
         ("value", "attn_v", "qmat"), ("rms_norm", "attn_norm", "vec"), ("rms_norm_1", "attn_out_norm", "vec"),
         ("rms_norm_2", "moe_norm", "vec"), ("rms_norm_3", "moe_out_norm", "vec"), ("router", "router", "router")]
RELEASE_BLOCKS = {"attn_o": 8, "moe_down": 8}


@dataclasses.dataclass
class QuantizedWeight8bit:
    weight: np.ndarray
    scales: np.ndarray


def config(overrides):
    c = dict(GROK1)
    c.update(overrides)
    return c


def layer_order(L):
    """Layers in the release's file order: lexicographic order of str(index)."""
    return sorted(range(L), key=str)


def shapes(c, name):
    """(rows, cols, experts or None) of a quantised matrix."""
    D, F, E = c["emb_size"], c["ffn_size"], c["num_experts"]
    QK, KV = c["num_q_heads"] * c["key_size"], c["num_kv_heads"] * c["key_size"]
    return {"attn_q": (D, QK, None), "attn_k": (D, KV, None), "attn_v": (D, KV, None), "attn_o": (QK, D, None),
            "moe_gate": (D, F, E), "moe_up": (D, F, E), "moe_down": (F, D, E)}[name]


def blocks(rows, name):
    b = RELEASE_BLOCKS.get(name, 1)
    while rows % b:
        b //= 2
    return b


def bf16_bits(x):
    """float32 -> bf16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def tensors(c, seed):
    """Yield (file index, hdf5 name, value) in file order; value is a float32
    array, or (int8 weight, uint16 bf16 scale bits) for a quantised matrix."""
    V, D, E = c["vocab_size"], c["emb_size"], c["num_experts"]
    rng = lambda i: np.random.default_rng([seed, i])  # noqa: E731
    yield 0, "embedding", rng(0).standard_normal((V, D), dtype=np.float32)
    yield 1, "final_norm", (1 + 0.1 * rng(1).standard_normal(D)).astype(np.float32)
    for k, layer in enumerate(layer_order(c["num_layers"])):
        for j, (_, name, kind) in enumerate(ITEMS):
            idx = 2 + 12 * k + j
            r = rng(idx)
            path = "layers/%02d/%s" % (layer, name)
            if kind == "vec":
                yield idx, path, (1 + 0.1 * r.standard_normal(D)).astype(np.float32)
            elif kind == "router":
                yield idx, path, r.standard_normal((D, E), dtype=np.float32)
            else:
                rows, cols, ne = shapes(c, name)
                B = blocks(rows, name)
                lead = (ne,) if ne else ()
                # the whole int8 range, its ends in every matrix
                w = r.integers(-128, 128, size=lead + (rows, cols), dtype=np.int8)
                w.reshape(-1)[:2] = (-128, 127)
                s = r.uniform(0.5, 1.5, size=lead + (B, cols)) / (127 * np.sqrt(rows))
                # bf16 scales a converter could get wrong: subnormals (the
                # smallest and the largest), zero, the smallest normal
                sb = bf16_bits(s)
                sb.reshape(-1)[:4] = (0x0001, 0x007F, 0x0000, 0x0080)
                yield idx, path, (w, sb)


class _Pickler(pickle.Pickler):
    """Pickles the 'V2' dtype as ml_dtypes.bfloat16, like the release."""

    def reducer_override(self, obj):
        if isinstance(obj, np.dtype) and obj == np.dtype("V2"):
            return (np.dtype, (bfloat16, False, True), (3, "<", None, None, None, 2, 2, 64))
        return NotImplemented


class bfloat16:  # noqa: N801  stands for ml_dtypes.bfloat16 (only its name is pickled)
    pass


def _register_bfloat16():
    import types
    mod = sys.modules.get("ml_dtypes")
    if mod is None or not hasattr(mod, "bfloat16"):
        mod = types.ModuleType("ml_dtypes")
        sys.modules["ml_dtypes"] = mod
        mod.bfloat16 = bfloat16
    bfloat16.__module__, bfloat16.__qualname__ = "ml_dtypes", "bfloat16"
    mod.bfloat16 = bfloat16


def dump(value, path):
    with open(path, "wb") as f:
        _Pickler(f, protocol=4).dump(value)


def write(c, seed, out):
    os.makedirs(out, exist_ok=True)
    n = 0
    for idx, _, v in tensors(c, seed):
        if isinstance(v, tuple):
            v = QuantizedWeight8bit(weight=v[0], scales=v[1].view("V2"))
        dump(v, os.path.join(out, "tensor%05d_000" % idx))
        n += 1
    return n


def main():
    if __name__ != "__main__" or QuantizedWeight8bit.__module__ != "__main__":
        raise SystemExit("make_release.py must run as a script (QuantizedWeight8bit lives in __main__)")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="JSON object of hyper-parameters over grok-1's")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True, help="directory to write tensorNNNNN_000 files into")
    a = ap.parse_args()
    with open(a.config) as f:
        c = config(json.load(f))
    _register_bfloat16()
    n = write(c, a.seed, a.out)
    print("make_release: wrote %d files to %s" % (n, a.out))


if __name__ == "__main__":
    main()
