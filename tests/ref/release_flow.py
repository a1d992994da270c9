"""The release's generation flow transcribed to NumPy, in float32.

xAI's release (github.com/xai-org/grok-1, commit be76c95) generates in two
calls of its model (runners.py): `hk_prefill_memory` runs the prompt,
right-padded with 0 to a bucket, over a fresh KV memory as long as the bucket,
keeps the logits of position `length` - 1, sets the memory's step to `length`
and pads the memory with zeros to `sequence_len` (`pad_to_max_len`,
`insert_slice`); `hk_sample_step` then runs one token at a time against that
memory. model.py's `LanguageModel.__call__` builds `input_mask = tokens >
pad_token` over the tokens of the call, `Transformer.__call__` makes it
[B, 1, 1, T] and multiplies it with a T x T causal mask, and
`MultiHeadAttention.__call__` multiplies that with `memory_mask` (key
position < step + T, over the whole memory) before filling -1e30. So the pad
mask is on the keys of the tokens in the call: in the prefill that is every
pad key of the prompt; in a decode step (T = 1) it is the one current token,
broadcast over every key of the memory.

This module does exactly that, one request at a time, to measure what the
release does with pad tokens (tests/ref/test_release_flow.py). As a program
(`release_flow.py CKPT`, a checkpoint from `make_ckpt.py --set vocab_size=100
--seed 7`) it prints the figures docs/ENGINE.md quotes. It is a test
helper, not a model of the release's numerics: the weights are grok1_ref's
(bf16 values) in float32, every activation and the KV memory are float32
(the release: bf16), sampling is greedy (argmax, lowest id first), and the
pieces are grok1_ref's (rms_norm, rope with float32 angles as the release
has them, softmax, moe). `pad_mask` picks what is masked:

- "release": as above (the default);
- "keys": every key whose token is the pad id, in the prefill and at every
  decode step (what docs/ENGINE.md said the release did, before this test);
- "none": nothing but the causal mask (what the engine does).
"""
import bisect

import numpy as np

import grok1_ref as ref

PAD_MASKS = ("release", "keys", "none")
F32 = np.float32


def weights32(model):
    """(embedding, layers) of grok1_ref's dequantisation, as float32 (the
    values are bf16, so exactly)."""
    emb, layers = model.weights()
    return emb.astype(F32), [{n: a.astype(F32) for n, a in lw.items()} for lw in layers]


def init_memory(cfg, length):
    """model.py `init_layer_memories`: zero keys and values of `length`
    positions per layer, step 0. `tokens` records the token at each position
    (for pad_mask "keys" only; the release keeps no such record)."""
    shp = (length, cfg["num_kv_heads"], cfg["key_size"])
    return {"k": [np.zeros(shp, F32) for _ in range(cfg["num_layers"])],
            "v": [np.zeros(shp, F32) for _ in range(cfg["num_layers"])],
            "tokens": np.zeros(length, np.int64), "step": 0}


def get_pad_bucket(pad_sizes, size):
    """runners.py `InferenceRunner.get_pad_bucket`."""
    i = bisect.bisect_left(pad_sizes, size)
    return pad_sizes[min(i, len(pad_sizes) - 1)]


def pad_to_size(x, size):
    """runners.py `pad_to_size`: keep the last `size` tokens, pad with 0."""
    x = np.asarray(x, dtype=np.int64)
    if x.shape[0] > size:
        x = x[-size:]
    return np.pad(x, [0, size - x.shape[0]], mode="constant", constant_values=0)


def _attention(xn, lw, cfg, mem, li, mask, step, probe):
    """MultiHeadAttention.__call__ with a memory: keys and values of the T
    tokens written at `step` (jax.lax.dynamic_update_slice clamps the start so
    that the update fits), RoPE at positions step.., scores over the whole
    memory, -1e30 where `mask` (T, S) is false, softmax in float32."""
    T = xn.shape[0]
    Hq, Hkv, K = cfg["num_q_heads"], cfg["num_kv_heads"], cfg["key_size"]
    pos = np.arange(T) + step
    q = ref.rope((xn @ lw["attn_q"]).reshape(T, Hq, K), pos, cfg["rope_base"], f32=True).astype(F32)
    k = ref.rope((xn @ lw["attn_k"]).reshape(T, Hkv, K), pos, cfg["rope_base"], f32=True).astype(F32)
    v = (xn @ lw["attn_v"]).reshape(T, Hkv, K)
    S = mem["k"][li].shape[0]
    start = min(max(step, 0), S - T)
    mem["k"][li][start:start + T] = k
    mem["v"][li][start:start + T] = v
    g = np.arange(Hq) // (Hq // Hkv)
    s = np.einsum("thd,shd->hts", q, mem["k"][li][:, g, :]) * F32(cfg["attn_output_multiplier"])
    cap = F32(cfg["attn_logit_cap"])
    s = cap * np.tanh(s / cap)
    s = np.where(mask[None], s, F32(-1e30))
    p = ref.softmax(s, axis=-1).astype(F32)                 # (Hq, T, S)
    if probe is not None:
        probe.append(p)
    o = np.einsum("hts,shd->thd", p, mem["v"][li][:, g, :])
    return o.reshape(T, Hq * K) @ lw["attn_o"]


def forward(W, cfg, tokens, mem, length=None, pad_mask="release", probe=None):
    """model.py `LanguageModel.__call__(tokens, memory, length=...)` for one
    batch row: the logits (T, V), or (1, V) of row length - 1 when `length`
    is given (the index clamped into the call's rows: JAX's indexing clamps
    an index past the end when it reads; read in its documentation, not run);
    `mem` is updated in place and its step advanced by T. `probe` (a list)
    gets each layer's attention weights (Hq, T, S)."""
    if pad_mask not in PAD_MASKS:
        raise ValueError("pad_mask %r is not one of %s" % (pad_mask, PAD_MASKS))
    emb, layers, final_norm = W
    tokens = np.asarray(tokens, dtype=np.int64)
    T, S, step = tokens.shape[0], mem["k"][0].shape[0], mem["step"]
    pad = cfg["pad_id"]
    input_mask = tokens > pad
    causal = np.tril(np.ones((T, T), dtype=bool))
    if pad_mask == "release":
        tok_mask = input_mask[None, :] & causal              # Transformer.__call__: [B, 1, T, T]
    else:
        tok_mask = causal
    start = min(max(step, 0), S - T)
    mem["tokens"][start:start + T] = tokens
    memory_mask = np.arange(S) < step + T                    # MultiHeadAttention.__call__
    mask = memory_mask[None, :] & tok_mask                   # (1 or T, S): T = S or T = 1, as in the release
    if pad_mask == "keys":
        mask = mask & (mem["tokens"] > pad)[None, :]
    mask = np.broadcast_to(mask, (T, S))
    x = emb[tokens] * F32(cfg["embedding_multiplier"])
    eps = cfg["rms_eps"]
    diag = {"max_raw_score": 0.0, "min_router_margin": np.inf, "router_margins": []}
    for li, lw in enumerate(layers):
        a = _attention(ref.rms_norm(x, lw["attn_norm"], eps), lw, cfg, mem, li, mask, step, probe)
        x = (x + ref.rms_norm(a, lw["attn_out_norm"], eps)).astype(F32)
        f = ref.moe(ref.rms_norm(x, lw["moe_norm"], eps), lw, cfg, frozenset(), diag)
        x = (x + ref.rms_norm(f, lw["moe_out_norm"], eps)).astype(F32)
    mem["step"] = step + T
    h = ref.rms_norm(x, final_norm, eps).astype(F32)
    if length is not None:
        h = h[min(max(length - 1, 0), T - 1)][None, :]
    return (h @ emb.T) * F32(cfg["output_multiplier"])


class Release:
    """runners.py's flow for one request: `InferenceRunner.run` with a batch
    of one, greedy. `pad_sizes` are the buckets (run.py: (1024,)) and
    `sequence_len` the memory's length (run.py: 8192)."""

    def __init__(self, model, pad_sizes, sequence_len, pad_mask="release"):
        emb, layers = weights32(model)
        self.W = (emb, layers, model.final_norm.astype(F32))
        self.cfg, self.pad_sizes, self.S, self.pad_mask = model.cfg, tuple(pad_sizes), sequence_len, pad_mask

    def generate(self, prompt, max_len, force=None, probe_step=None):
        """Tokens the flow gives for `prompt` (max_len of them, the first from
        the prefill, no stop at EOS, as the release has none) and the logits
        (V,) each was taken from. `force` {step: token} feeds that token at
        that step instead of the argmax, as a sampler's draw would. Returns
        (tokens, logits, probe): probe is the attention weights of each layer
        at step `probe_step`, the decode step whose input is token
        probe_step - 1 (None without it)."""
        force = force or {}
        prompt_len = len(prompt)
        bucket = get_pad_bucket(self.pad_sizes, prompt_len)
        padded = pad_to_size(prompt, bucket)
        if bucket > self.S:
            raise ValueError("bucket %d is longer than sequence_len %d" % (bucket, self.S))
        # hk_prefill_memory: a memory as long as the bucket, step 0
        mem = init_memory(self.cfg, bucket)
        logits = forward(self.W, self.cfg, padded, mem, length=prompt_len, pad_mask=self.pad_mask)[0]
        mem["step"] = prompt_len             # "Manually override it" (runners.py)
        # pad_to_max_len + insert_slice: zeros up to sequence_len, step = length
        for name in ("k", "v"):
            mem[name] = [np.concatenate([a, np.zeros((self.S - bucket,) + a.shape[1:], F32)])
                         for a in mem[name]]
        mem["tokens"] = np.concatenate([mem["tokens"], np.zeros(self.S - bucket, np.int64)])
        out, steps, probe = [], [], None
        for i in range(max_len):
            if i > 0:                          # hk_sample_step: the last token, T = 1
                p = [] if i == probe_step else None
                logits = forward(self.W, self.cfg, [out[-1]], mem, pad_mask=self.pad_mask, probe=p)[0]
                probe = p if p is not None else probe
            steps.append(logits)
            out.append(int(force.get(i, np.argmax(logits))))
        return out, steps, probe


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def survey(model, pad_sizes, sequence_len, n, length, seed):
    """How far the release's pad handling lands from attending to the pads
    (the engine) and from masking them everywhere, over n random prompts:
    pads at positions 3 and 7 of a prompt (`length` tokens, eight generated),
    and a pad drawn at step 2 and fed back (prompts of 8 tokens). Prints the
    figures docs/ENGINE.md quotes."""
    F = {m: Release(model, pad_sizes, sequence_len, m) for m in PAD_MASKS}
    rng, L, pad, V = np.random.default_rng(seed), 8, model.cfg["pad_id"], model.cfg["vocab_size"]
    first, r0, k0, dn, dk, amn, amk = 0, [], [], [], [], 0, 0
    for _ in range(n):
        p = rng.integers(pad + 1, V, size=length).tolist()
        p[3] = p[7] = pad
        t, rs, _ = F["release"].generate(p, L)
        fc = dict(enumerate(t))       # the others fed the release's tokens: the same positions
        ks, ns = F["keys"].generate(p, L, force=fc)[1], F["none"].generate(p, L, force=fc)[1]
        first += int(np.argmax(rs[0]) != np.argmax(ns[0]))
        r0.append(_rel(rs[0], ns[0]))
        k0.append(_rel(rs[0], ks[0]))
        dn.append(_rel(rs[1:], ns[1:]))
        dk.append(_rel(rs[1:], ks[1:]))
        amn += sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(rs[1:], ns[1:]))
        amk += sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(rs[1:], ks[1:]))
    print("pads at 3 and 7 of %d prompts of %d tokens (max|diff| / max|logit|, max and median):" % (n, length))
    print("  first logits: from masking the pads everywhere %.2g; from attending to them %.2g, %.2g; "
          "first greedy token changed in %d of %d" % (max(k0), max(r0), np.median(r0), first, n))
    print("  decode steps 1..%d: from masking everywhere %.2g, %.2g (argmax changed %d of %d); from attending "
          "everywhere %.2g, %.2g (%d of %d)" % (L - 1, max(dk), np.median(dk), amk, n * (L - 1),
                                                max(dn), np.median(dn), amn, n * (L - 1)))
    at, after, ch, cha = [], [], 0, 0
    for _ in range(n):
        p = rng.integers(pad + 1, V, size=8).tolist()
        t, rs, _ = F["release"].generate(p, L, force={2: pad})
        ns = F["none"].generate(p, L, force=dict(enumerate(t)))[1]
        at.append(_rel(rs[3], ns[3]))
        after.append(_rel(rs[4:], ns[4:]))
        ch += int(np.argmax(rs[3]) != np.argmax(ns[3]))
        cha += sum(int(np.argmax(a) != np.argmax(b)) for a, b in zip(rs[4:], ns[4:]))
    print("a pad drawn at step 2 of %d prompts of 8 tokens, against attending to it (the engine):" % n)
    print("  its step %.2g, %.2g (argmax changed in %d of %d); the steps after %.2g, %.2g (%d of %d)"
          % (max(at), np.median(at), ch, n, max(after), np.median(after), cha, n * (L - 4)))


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="The release's flow with pads: figures for docs/ENGINE.md.")
    ap.add_argument("checkpoint", help="grok1-hdf5 file (tiny models), e.g. from make_ckpt.py")
    ap.add_argument("--bucket", type=int, default=16, help="the one pad bucket (run.py: 1024)")
    ap.add_argument("--sequence-len", type=int, default=48, help="the memory's length (run.py: 8192)")
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--length", type=int, default=12, help="tokens of a prompt holding pads")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    survey(ref.load(a.checkpoint), (a.bucket,), a.sequence_len, a.prompts, a.length, a.seed)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
