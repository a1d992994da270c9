#!/usr/bin/env python3
"""Checkpoint files from the outside: a file rewritten by h5py with default
settings loads to the same weights as grok1-mkckpt's; broken files are refused
with a message naming the problem; grok1-mkckpt's command line.

usage: test_ckpt_files.py GROK1_MKCKPT G1_CKPT_CHECK   (exit 77: no h5py)
"""
import json
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import Checks, need  # noqa: E402

h5py, np = need("h5py", "numpy")

MKCKPT, CHECKER = sys.argv[1], sys.argv[2]
expect = Checks(quiet=True)


def run(args):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def mkckpt(*args):
    return run([MKCKPT, *args])


def digest_of(path, *ranges):
    rc, out, err = run([CHECKER, path, *ranges])
    expect(rc == 0 and out.startswith("digest "), f"checker refused {path} {ranges}: rc {rc} {err.strip()}")
    return out.split()[1] if rc == 0 else f"(refused: {err.strip()})"


def expect_refused(label, path, *needles):
    rc, out, err = run([CHECKER, path])
    msg = err.strip()
    ok = rc == 1 and all(n in msg for n in needles) and "HDF5-DIAG" not in err
    expect(ok, f"{label}: rc {rc}, message {msg!r} should contain {needles}")
    if ok:
        print(f"ok   {label}: {msg}")


def rewrite(src, dst, edit=None, fixed_str=False, int_type=np.int64):
    """Copy src with h5py's defaults: contiguous datasets, vlen str attrs."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for k, v in a.attrs.items():
            if isinstance(v, (str, bytes)):
                s = v if isinstance(v, str) else v.decode()
                b.attrs[k] = np.bytes_(s.encode()) if fixed_str else s
            elif k == "params_crc32":  # a checksum: uint32 whatever the other integers are
                b.attrs[k] = np.uint32(v)
            elif np.issubdtype(np.asarray(v).dtype, np.integer):
                b.attrs[k] = int_type(v)
            else:
                b.attrs[k] = np.float64(v)

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                b.create_dataset(name, data=obj[()])
        a.visititems(copy)
        if edit:
            edit(b)


def replace(name, arr):
    def edit(b):
        del b[name]
        b.create_dataset(name, data=arr)
    return edit


def files_in(d):
    return sorted(os.listdir(d))


def test_h5py_files(d, ref):
    want = digest_of(ref)
    for label, kw in [("h5py defaults (vlen str, int64)", {}),
                      ("fixed-length str, int32", {"fixed_str": True, "int_type": np.int32})]:
        p = os.path.join(d, "h5py.h5")
        rewrite(ref, p, **kw)
        with h5py.File(p, "r") as f:
            expect(f["layers/00/moe_up"].chunks is None, "h5py copy is chunked")
        expect(digest_of(p) == want, f"{label}: digest differs from grok1-mkckpt's")
        expect(digest_of(p, 1, 3, 2, 5) == digest_of(ref, 1, 3, 2, 5), f"{label}: partial load differs")
    # float64 norms and an integral float attribute are converted, same values
    p = os.path.join(d, "f64.h5")

    def f64(b):
        v = b["layers/01/attn_norm"][()].astype(np.float64)
        del b["layers/01/attn_norm"]
        b["layers/01/attn_norm"] = v
        b.attrs["ffn_size"] = 96.0
    rewrite(ref, p, f64)
    expect(digest_of(p) == want, "float64 norm / float ffn_size: digest differs")


def test_broken(d, ref):
    def variant(name, edit):
        p = os.path.join(d, name + ".h5")
        rewrite(ref, p, edit)
        return p

    missing = os.path.join(d, "no-such-file.h5")
    expect_refused("missing file", missing, missing, "No such file")
    half = os.path.join(d, "half.h5")
    with open(ref, "rb") as f:
        data = f.read()
    with open(half, "wb") as f:
        f.write(data[: len(data) // 2])
    expect_refused("truncated file", half, half, "truncated")
    junk = os.path.join(d, "junk.h5")
    with open(junk, "wb") as f:
        f.write(np.random.default_rng(1).bytes(5000))
    expect_refused("not HDF5", junk, junk, "not an HDF5 file")
    empty = os.path.join(d, "empty.h5")
    open(empty, "wb").close()
    expect_refused("empty file", empty, empty, "not an HDF5 file")
    expect_refused("directory", d, d, "directory")

    def attr(k, v):
        def edit(b):
            b.attrs[k] = v
        return edit

    def attrs(**kv):
        def edit(b):
            for k, v in kv.items():
                b.attrs[k] = v
        return edit

    def delete(name):
        def edit(b):
            del b[name]
        return edit

    def del_attr(b):
        del b.attrs["ffn_size"]

    cases = [
        ("wrong format", attr("format", "grok1-pickle"), ["format 'grok1-pickle'", "'grok1-hdf5'"]),
        ("format_version 2", attr("format_version", 2), ["format_version 2", "format_version 1"]),
        ("missing attribute", del_attr, ["no attribute 'ffn_size'"]),
        ("fractional int attribute", attr("ffn_size", 96.5), ["ffn_size", "not an integer"]),
        ("string int attribute", attr("num_layers", "4"), ["num_layers", "not a number"]),
        ("inconsistent config", attr("num_kv_heads", 3), ["num_kv_heads"]),
        ("NaN multiplier", attr("attn_output_multiplier", float("nan")),
         ["attn_output_multiplier must be a finite number"]),
        ("infinite cap", attr("attn_logit_cap", float("inf")), ["attn_logit_cap must be a finite number"]),
        ("heads wrapping to emb_size 0", attrs(num_q_heads=65536, key_size=65536, emb_size=0, num_kv_heads=2),
         ["emb_size (0) must equal num_q_heads * key_size (65536 * 65536)"]),
        ("moe_down shape", replace("layers/01/moe_down", np.zeros((8, 48, 64), np.int8)),
         ["layers/01/moe_down has shape (8,48,64), expected (8,96,64)"]),
        ("attn_q rank", replace("layers/00/attn_q", np.zeros((1, 64, 64), np.int8)),
         ["layers/00/attn_q has shape (1,64,64), expected (64,64)"]),
        ("embedding shape", replace("embedding", np.zeros((511, 64), np.float32)),
         ["embedding has shape (511,64), expected (512,64)"]),
        ("attn_q float32", replace("layers/00/attn_q", np.zeros((64, 64), np.float32)),
         ["layers/00/attn_q has type float32, expected int8"]),
        ("attn_q int16", replace("layers/00/attn_q", np.zeros((64, 64), np.int16)),
         ["layers/00/attn_q has type int16, expected int8"]),
        ("moe_up uint8", replace("layers/03/moe_up", np.zeros((8, 64, 96), np.uint8)),
         ["layers/03/moe_up has type uint8, expected int8"]),
        ("scale int32", replace("layers/02/attn_k_scale", np.zeros((1, 32), np.int32)),
         ["layers/02/attn_k_scale has type int32, expected float32"]),
        ("missing layer", delete("layers/02"),
         ["checkpoint has no layers/02: is it one part of a checkpoint (grok1-convert --layers)?", "grok1-link"]),
        ("missing dataset", delete("layers/03/router"), ["layers/03/router"]),
        ("blocks not dividing", replace("layers/00/attn_o_scale", np.ones((3, 64), np.float32)),
         ["layers/00/attn_o_scale has 3 row blocks", "64 rows of attn_o"]),
        ("blocks differ by layer", replace("layers/02/moe_down_scale", np.ones((8, 4, 64), np.float32)),
         ["layers/02/moe_down_scale has shape (8,4,64), expected (8,8,64)", "layers/00"]),
    ]
    for label, edit, needles in cases:
        expect_refused(label, variant(label.replace(" ", "_"), edit), *needles)


def test_external(d, ref):
    """A dataset whose data is in an external raw file (HDF5 external
    storage, made by hand: our writers never make one): loads while the file
    is there; without it, the message names the dataset and the file (it was
    'unknown HDF5 error')."""
    raw = os.path.join(d, "attn_q.raw")

    def external(b):
        a = b["layers/00/attn_q"][()]
        del b["layers/00/attn_q"]
        b.create_dataset("layers/00/attn_q", shape=a.shape, dtype=a.dtype, external=[(raw, 0, a.nbytes)])
        with open(raw, "wb") as f:
            f.write(a.tobytes())
    p = os.path.join(d, "external.h5")
    rewrite(ref, p, external)
    expect(digest_of(p) == digest_of(ref), "external storage: the same weights")
    os.remove(raw)
    expect_refused("external raw data file missing", p, "reading layers/00/attn_q failed",
                   f"its data is in the external file {raw} (HDF5 external storage), which cannot be opened: "
                   "No such file or directory")


def test_mkckpt_cli(d, ref):
    work = os.path.join(d, "cli")
    os.mkdir(work)
    out = os.path.join(work, "x.h5")
    rc, so, _ = mkckpt("--help")
    expect(rc == 0 and "usage" in so, f"--help: rc {rc}")
    usage = [
        ([], "missing --config"),
        (["--config", "tiny", "--seed", "7", "--out", out, "--bogus"], "--bogus"),
        (["--config", "nonesuch", "--seed", "7", "--out", out], "nonesuch"),
        (["--config", "tiny", "--set", "bogus_key=1", "--seed", "7", "--out", out], "bogus_key"),
        (["--config", "tiny", "--set", "ffn_size=abc", "--seed", "7", "--out", out], "ffn_size"),
        (["--config", "tiny", "--set", "emb_size=60", "--seed", "7", "--out", out], "emb_size"),
        (["--config", "tiny", "--set", "attn_output_multiplier=nan", "--seed", "7", "--out", out],
         "attn_output_multiplier must be a finite number"),
        # 65536 x 65536 wraps to 0 in 32 bits: was accepted, then a division by emb_size 0 (SIGFPE)
        (["--config", "tiny", "--set", "num_q_heads=65536", "--set", "key_size=65536", "--set", "emb_size=0",
          "--set", "num_kv_heads=2", "--seed", "7", "--out", out], "emb_size (0) must equal num_q_heads * key_size"),
        (["--config", "tiny", "--set", "ffn_size=400000000", "--seed", "7", "--out", out],
         "emb_size * ffn_size must be below 2^31"),
        (["--config", "tiny", "--seed", "7"], "missing --out"),
        (["--config", "tiny", "--out", out], "missing --seed"),
        (["--config", "tiny", "--seed", "x", "--out", out], "--seed"),
        (["--config", "tiny", "--layers", "0", "--seed", "7", "--out", out], "--layers"),
        (["--config", "tiny", "--layers", "5", "--seed", "7", "--out", out], "--layers"),
        (["--config", "tiny", "--qk-gain", "-1", "--seed", "7", "--out", out], "--qk-gain"),
        (["--config", "tiny", "--seed", "7", "--out"], "needs a value"),
    ]
    for args, needle in usage:
        rc, _, err = mkckpt(*args)
        expect(rc == 2 and needle in err, f"mkckpt {args}: rc {rc}, stderr {err.strip()!r} (want 2, {needle!r})")
    expect(files_in(work) == [], f"usage errors left files: {files_in(work)}")
    rc, _, err = mkckpt("--config", "tiny", "--seed", "7", "--out", "/nonexistent-dir/x.h5")
    expect(rc == 1 and "/nonexistent-dir/x.h5" in err, f"unwritable --out: rc {rc} {err.strip()!r}")

    # same seed, same file; another seed, other weights; --opt=value form
    rc, so, err = mkckpt("--config=tiny", "--seed=7", f"--out={out}")
    expect(rc == 0 and "wrote" in so, f"mkckpt: rc {rc} {err.strip()}")
    expect(digest_of(out) == digest_of(ref), "same seed, different digest")
    mkckpt("--config", "tiny", "--seed", "8", "--out", out)
    expect(digest_of(out) != digest_of(ref), "another seed, same digest")

    # --layers 2: the first two layers of the model, num_layers = 2
    rc, _, err = mkckpt("--config", "tiny", "--layers", "2", "--seed", "7", "--out", out)
    expect(rc == 0, f"--layers 2: {err.strip()}")
    with h5py.File(out, "r") as f, h5py.File(ref, "r") as g:
        expect(int(f.attrs["num_layers"]) == 2, "--layers 2: num_layers attribute")
        expect(sorted(f["layers"].keys()) == ["00", "01"], f"--layers 2: groups {sorted(f['layers'].keys())}")
        for k in ["attn_q", "moe_down", "moe_down_scale", "router"]:
            expect(np.array_equal(f["layers/01/" + k][()], g["layers/01/" + k][()]), f"--layers 2: {k} differs")
        expect(f["layers/00/moe_up"].chunks == (1, 64, 96), f"expert chunks {f['layers/00/moe_up'].chunks}")
    digest_of(out)  # loads

    # --qk-gain multiplies the q and k scales only
    mkckpt("--config", "tiny", "--qk-gain", "4", "--seed", "7", "--out", out)
    with h5py.File(out, "r") as f, h5py.File(ref, "r") as g:
        for k, gain in [("attn_q_scale", 4), ("attn_k_scale", 4), ("attn_v_scale", 1), ("attn_o_scale", 1)]:
            expect(np.array_equal(f["layers/03/" + k][()], gain * g["layers/03/" + k][()]), f"--qk-gain: {k}")
        expect(np.array_equal(f["layers/03/attn_q"][()], g["layers/03/attn_q"][()]), "--qk-gain changed attn_q")

    # --set and a JSON config by the attribute names
    mkckpt("--config", "tiny", "--set", "num_experts=4", "--set", "ffn_size=40", "--seed", "7", "--out", out)
    with h5py.File(out, "r") as f:
        expect(f["layers/00/moe_gate"].shape == (4, 64, 40), f"--set: moe_gate {f['layers/00/moe_gate'].shape}")
        expect(f["layers/00/moe_down_scale"].shape == (4, 8, 64), "--set: moe_down_scale")
    with h5py.File(ref, "r") as g:
        cfg = {k: v.item() for k, v in g.attrs.items() if k not in ("format", "format_version", "params_crc32")}
    js = os.path.join(d, "tiny.json")
    with open(js, "w") as f:
        json.dump(cfg, f)
    rc, _, err = mkckpt("--config", js, "--seed", "7", "--out", out)
    expect(rc == 0 and digest_of(out) == digest_of(ref), f"JSON config: rc {rc} {err.strip()}")
    for bad, needle in [({**cfg, "ffn_sise": 96}, "ffn_sise"), ({**cfg, "ffn_size": "96"}, "ffn_size"),
                        ([1, 2], "object")]:
        with open(js, "w") as f:
            json.dump(bad, f)
        if os.path.exists(out):
            os.remove(out)
        rc, _, err = mkckpt("--config", js, "--seed", "7", "--out", out)
        expect(rc == 2 and needle in err and not os.path.exists(out), f"JSON {bad}: rc {rc} {err.strip()!r}")


def main():
    with tempfile.TemporaryDirectory() as d:
        ref = os.path.join(d, "ref.h5")
        rc, so, err = mkckpt("--config", "tiny", "--seed", "7", "--out", ref)
        if rc != 0:
            print(f"FAIL grok1-mkckpt: rc {rc} {err}")
            return 1
        print(so.strip())
        test_h5py_files(d, ref)
        test_broken(d, ref)
        test_external(d, ref)
        test_mkckpt_cli(d, ref)
    return expect.result()


if __name__ == "__main__":
    sys.exit(main())
