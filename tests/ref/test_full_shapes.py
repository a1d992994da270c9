#!/usr/bin/python3
"""grok1-run at Grok-1's real shapes against the NumPy reference.

The other reference tests use tiny models. This one makes a checkpoint with
every Grok-1 dimension (D 6144, 48 query and 8 kv heads of 128, F 32768, 8
experts, V 131072, the released scale blocks: Wo and W2 in 8 row blocks)
but one layer (8.1 GB on disk), so that offsets past 2^31 bytes, the real
block sizes and the kernels' tiling at real widths are exercised. It
scores one prompt, with ids at both ends of the vocabulary, on one process,
(with MPI) as 2 expert-parallel ranks and (with the CUDA emulation) with
`--backend cuda` on the CPU emulation of CUDA, so the kernels' grids and
indices at real sizes run too, and compares the dumped logits with the
reference within the reference tests' tolerance. A request of 20 tokens
before it, in steps of at most 18 tokens (`--max-batch-tokens 18`: its
first 18, then its last 2 with the 4 above), takes the emulated run's
int8 tensor-core matmuls, its MoE grouped on the device and its prompt
attention on the tensor cores at these shapes, then a chunk attending to
its cache on the GEMV path; its logits are checked against the CPU
backend's within the CUDA tests' 1e-2. The 4-token prompt's step is all
GEMV rows: float32 activations, within 1e-5 of the CPU backend. The
reference
reads the checkpoint lazily: it dequantises only the experts the tokens
pick, and streams the embedding. The same tolerance must catch the
block-0 scale mistake at these shapes. The checkpoint is deleted at the end.

Needs about 13 GB of free disk in --tmp and 10 GB of free memory; skips
(exit 77) with a message otherwise, or without numpy and h5py.

usage: test_full_shapes.py --mkckpt grok1-mkckpt --run grok1-run --tmp DIR [--mpi] [--run-emu grok1-run-emu]
"""
import argparse
import os
import shutil
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from g1test import (MPI_VARS, Checks, TestFailure, compare, describe, read_dump, read_results,  # noqa: E402
                    run, teeth, write_requests, LOGPROB_TOL)
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import grok1_ref as ref  # noqa: E402

SEED = 3
TOKENS = [1, 131071, 500, 65536]   # BOS, the last id, two others
# 20 tokens: the emulated CUDA run's tensor-core paths (17 to 128 rows)
LONG = [1, 131071] + [(7919 * i + 13) % 131072 for i in range(17)] + [2]  # 0, the pad id, is refused
NEED_DISK = 13 << 30
NEED_MEM = 10 << 30


class LazyExperts:
    """lw["moe_*"][e]: expert e of one matrix kind, dequantised when asked."""

    def __init__(self, g, name, block0, round_bf16):
        self.w, self.s = g[name], g[name + "_scale"]
        self.block0, self.round_bf16 = block0, round_bf16
        self.shape = self.w.shape

    def __getitem__(self, e):
        return ref.dequantise(self.w[e], self.s[e].astype(np.float32), self.block0, self.round_bf16)


class LazyEmbedding:
    """The embedding as ref.forward uses it: emb[tokens] (rows read as
    asked) and h @ emb.T (the un-embedding, streamed in row chunks)."""

    CHUNK = 8192
    __array_ufunc__ = None  # h @ emb.T: numpy defers to __rmatmul__

    def __init__(self, ds, round_bf16):
        self.ds, self.round_bf16 = ds, round_bf16
        self.shape = ds.shape

    def _f64(self, a):
        a = a.astype(np.float32)
        return (ref.bf16_round(a) if self.round_bf16 else a).astype(np.float64)

    def __getitem__(self, tokens):
        return np.stack([self._f64(self.ds[int(t)]) for t in tokens])

    @property
    def T(self):
        return self

    def __rmatmul__(self, h):
        V = self.shape[0]
        out = np.empty((h.shape[0], V))
        for v in range(0, V, self.CHUNK):
            out[:, v:v + self.CHUNK] = h @ self._f64(self.ds[v:v + self.CHUNK]).T
        return out


class LazyModel(ref.Model):
    """A grok1-hdf5 checkpoint read as the reference needs it, not whole."""

    def __init__(self, path):
        self.f = h5py.File(path, "r")
        a = {k: ref._attr(v) for k, v in self.f.attrs.items()}
        cfg = {k: int(a[k]) for k in ref.INT_ATTRS}
        cfg.update({k: float(a[k]) for k in ref.FLOAT_ATTRS})
        super().__init__(cfg, None, self.f["final_norm"][()].astype(np.float32), None)

    def weights(self, block0=False, round_bf16=True):
        layers = []
        for l in range(self.cfg["num_layers"]):
            g = self.f["layers/%02d" % l]
            lw = {n: g[n][()].astype(np.float64) for n in ref.NORMS + ("router",)}
            for n in ("attn_q", "attn_k", "attn_v", "attn_o"):
                lw[n] = ref.dequantise(g[n][()], g[n + "_scale"][()].astype(np.float32), block0, round_bf16)
            for n in ("moe_gate", "moe_up", "moe_down"):
                lw[n] = LazyExperts(g, n, block0, round_bf16)
            layers.append(lw)
        return LazyEmbedding(self.f["embedding"], round_bf16), layers


def mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) << 10
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mkckpt", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--mpi", action="store_true", help="also 2 ranks through mpirun (a build with MPI)")
    ap.add_argument("--run-emu", default=None, help="grok1-run on the CPU emulation of CUDA: also --backend cuda")
    args = ap.parse_args()
    mpirun = (shutil.which("mpirun") or shutil.which("mpiexec")) if args.mpi else None
    if args.mpi and not mpirun:
        print("note: no mpirun on PATH: the 2-rank run is left out")
    # the harness's settings, not the users': root in containers, 2 ranks on few cores
    os.environ.update(MPI_VARS)
    tmp = os.path.join(os.path.abspath(args.tmp), "full-shapes")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    free = shutil.disk_usage(tmp).free
    if free < NEED_DISK:
        print("SKIP: %.1f GB free in %s; this test writes an 8.1 GB checkpoint and needs %.0f GB"
              % (free / 2**30, tmp, NEED_DISK / 2**30))
        return 77
    mem = mem_available()
    if mem is not None and mem < NEED_MEM:
        print("SKIP: %.1f GB of memory available; this test needs %.0f GB" % (mem / 2**30, NEED_MEM / 2**30))
        return 77
    check = Checks()
    ckpt = os.path.join(tmp, "grok-1-one-layer.h5")
    try:
        run([args.mkckpt, "--config", "grok-1", "--layers", 1, "--seed", SEED, "--out", ckpt],
            "grok1-mkckpt (grok-1 shapes, one layer)", timeout=600)
        reqs = [{"id": "long", "prompt_ids": LONG}, {"id": "full", "prompt_ids": TOKENS}]
        inp = os.path.join(tmp, "req.jsonl")
        write_requests(inp, reqs)
        outs, dumps = {}, {}
        layouts = [("1 rank", [], [])]
        if mpirun:
            layouts.append(("2 ranks (--ep 2)", [mpirun, "-n", 2], ["--ep", 2]))
        for name, launch, extra in layouts:
            tag = "ep2" if extra else "one"
            out, dump = os.path.join(tmp, tag + ".jsonl"), os.path.join(tmp, tag + ".h5")
            run(launch + [args.run, "--mode", "score", "--checkpoint", ckpt, "--input", inp, "--output", out,
                          "--dump-logits", dump, "--verbose"] + extra, "grok1-run " + name, timeout=600)
            outs[name] = read_results(out, reqs)
            dumps[name] = read_dump(dump, 2)
        if args.run_emu:  # the CUDA kernels at these shapes: steps of 18 and 6 tokens
            out, dump = os.path.join(tmp, "cuda.jsonl"), os.path.join(tmp, "cuda.h5")
            log = os.path.join(tmp, "launches.txt")  # the emulation's log: each kernel launched, once
            os.environ["G1EMU_LAUNCH_LOG"] = log
            try:
                p = run([args.run_emu, "--backend", "cuda", "--mode", "score", "--checkpoint", ckpt, "--input", inp,
                         "--output", out, "--dump-logits", dump, "--verbose", "--max-batch-tokens", 18],
                        "grok1-run-emu --backend cuda", timeout=1200)
            finally:
                del os.environ["G1EMU_LAUNCH_LOG"]
            # lines "name threads", a template's name as "(gemv_k<4, 2>) 256"
            kernels = set(l.lstrip("(").split("<")[0].split()[0] for l in open(log)) if os.path.exists(log) else set()
            want = {"mma_q8_k", "mma_grouped_k", "attn_mma_k", "gemv_k", "gemv_grouped_k", "attn_split_k"}
            check(want <= kernels, "cuda (emulated): the tensor-core and the GEMV kernels ran (%s; missing: %s)"
                  % (" ".join(sorted(kernels & want)), " ".join(sorted(want - kernels)) or "none"))
            paths = [l for l in (p.stderr or "").splitlines() if "cuda paths" in l]
            print("note", paths[0] if paths else "no cuda paths line")
            line = paths[0] if paths else ""
            check("17-128 on the int8 tensor cores (64-column blocks)," in line
                  and "grouped on the device up to 128 tokens" in line and "attention on the tensor cores" in line,
                  "cuda (emulated): Grok-1's matmuls of 17-128 rows, its MoE and prompt attention on the tensor cores")
            outs["cuda (emulated)"] = read_results(out, reqs)
            dumps["cuda (emulated)"] = read_dump(dump, 2)

        model = LazyModel(ckpt)
        c = model.cfg
        shapes = (c["emb_size"], c["num_q_heads"], c["num_kv_heads"], c["key_size"], c["ffn_size"],
                  c["num_experts"], c["vocab_size"])
        check(shapes == (6144, 48, 8, 128, 32768, 8, 131072),
              "the checkpoint has Grok-1's shapes (D, Hq, Hkv, K, F, E, V) = %s" % (shapes,))
        g = model.f["layers/00"]
        check(g["attn_o_scale"].shape[0] == 8 and g["moe_down_scale"].shape[1] == 8,
              "Wo and W2 in 8 row blocks of scales, as released")
        r, diag = ref.forward(model, TOKENS, diagnostics=True)
        print("note reference: max raw attention score %.3g, smallest router margin %.3g"
              % (diag["max_raw_score"], diag["min_router_margin"]))
        one_long, one = dumps["1 rank"]
        check(one.shape == r.shape, "dump shape %s = reference %s" % (one.shape, r.shape))
        cm = compare(one, r)
        check(cm["nfail"] == 0, "1 rank: logits within the tolerance of the reference: " + describe(cm, one, r))
        lp_ref = ref.log_softmax(r, axis=-1)
        want = [float(lp_ref[i, TOKENS[i + 1]]) for i in range(len(TOKENS) - 1)]
        got = outs["1 rank"][1]["logprobs"]
        worst = max(abs(a - b) for a, b in zip(got, want))
        check(worst <= LOGPROB_TOL, "1 rank: log-probs within %g of the reference (worst %.2e)" % (LOGPROB_TOL, worst))
        if "cuda (emulated)" in dumps:
            cu_long, cu = dumps["cuda (emulated)"]
            cm = compare(cu, r)
            check(cm["nfail"] == 0, "cuda (emulated): logits within the tolerance of the reference: "
                  + describe(cm, cu, r))
            rel = float(np.max(np.abs(cu.astype(np.float64) - one)) / np.max(np.abs(one)))
            check(rel <= 1e-5, "cuda (emulated), a step of GEMV rows, against the CPU backend: max rel err %.2e "
                  "(at most 1e-5: float32 activations)" % rel)
            rows = np.max(np.abs(cu_long.astype(np.float64) - one_long), axis=1) / np.max(np.abs(one_long), axis=1)
            check(cu_long.shape == one_long.shape and rows.max() <= 1e-2,
                  "cuda (emulated), 18 tokens on the tensor cores and 2 more, against the CPU backend: row rel err "
                  "median %.2e, max %.2e (at most 1e-2)" % (np.median(rows), rows.max()))
        if "2 ranks (--ep 2)" in dumps:
            check(all(np.array_equal(a, b) for a, b in zip(dumps["2 ranks (--ep 2)"], dumps["1 rank"]))
                  and outs["2 ranks (--ep 2)"] == outs["1 rank"],
                  "2 expert-parallel ranks: results and logits bitwise equal to 1 rank")
        # the tolerance separates the mistake whose effect depends on the real block sizes
        t = teeth(model, [TOKENS], mistakes=["block0_scales"], ref_logits=[r])
        mr, nf, sz = t["block0_scales"]
        check(nf > 0, "the tolerance catches block-0 scales at Grok-1 shapes (max rel err %.2e, %d/%d outside)"
              % (mr, nf, sz))
        model.f.close()
    except TestFailure as e:
        check(False, str(e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return check.result()


if __name__ == "__main__":
    sys.exit(main())
