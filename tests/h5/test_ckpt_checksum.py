#!/usr/bin/env python3
"""Checkpoint checksums (docs/CHECKPOINT.md "Checksums"): what the writer
records equals zlib.crc32 of each tensor (each expert); a byte changed in the
file is found by the reader (the load stops, naming the tensor and expert;
ranks that do not load it are not stopped) and by grok1-checksum; a file
without checksums loads unchecked and gets them with grok1-checksum --add; a
checkpoint in parts is checked through its links. Logits dumps carry one
per dataset, checked by grok1-checksum and by a resume.

usage: test_ckpt_checksum.py GROK1_MKCKPT G1_CKPT_CHECK GROK1_CHECKSUM GROK1_LINK [GROK1_RUN]
(exit 77: no h5py)
"""
import os
import shutil
import subprocess
import sys
import tempfile
import zlib

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import Checks, need, params_crc  # noqa: E402

h5py, np = need("h5py", "numpy")

MKCKPT, CHECKER, CHECKSUM, LINK = sys.argv[1:5]
RUN = sys.argv[5] if len(sys.argv) > 5 else None
expect = Checks()


def run(args, env=None):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, env=env)
    return p.returncode, p.stdout, p.stderr


def one_request(path):
    """Writes a score request of 4 tokens (id 1) to path; returns path."""
    with open(path, "w") as f:
        f.write('{"id": 1, "prompt_ids": [5, 6, 7, 8]}\n')
    return path


def datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, None) if isinstance(o, h5py.Dataset) else None)
    return sorted(out)


def crcs_of(ds):
    """What the checksums are of: row-major int8 bytes or little-endian float32."""
    a = ds[...]
    a = a.astype("<f4") if a.dtype.kind == "f" else a
    if ds.ndim == 3:
        return [zlib.crc32(np.ascontiguousarray(a[e]).tobytes()) for e in range(a.shape[0])]
    return [zlib.crc32(np.ascontiguousarray(a).tobytes())]


def flip(path, name, coord=None, at=17):
    """Change one byte of dataset `name` in the file itself (chunk `coord`)."""
    with h5py.File(path, "r") as f:
        d = f[name]
        base = d.id.get_chunk_info_by_coord(coord).byte_offset if coord is not None else d.id.get_offset()
    with open(path, "r+b") as b:
        b.seek(base + at)
        x = b.read(1)
        b.seek(base + at)
        b.write(bytes([x[0] ^ 0x20]))


def strip(path, names=None):
    with h5py.File(path, "r+") as f:
        for n in names or datasets(path):
            if "crc32" in f[n].attrs:
                del f[n].attrs["crc32"]


def test_recorded(d, ref):
    with h5py.File(ref, "r") as f:
        names = datasets(ref)
        bad = [n for n in names if list(f[n].attrs.get("crc32", [])) != crcs_of(f[n])]
        kinds = {n: f[n].attrs["crc32"].dtype for n in names if "crc32" in f[n].attrs}
    expect(len(names) == 78 and not bad, f"every one of {len(names)} datasets records zlib.crc32 of its data "
           f"(one per expert for moe): mismatched {bad}")
    expect(all(k == np.uint32 for k in kinds.values()), "checksums are uint32")
    rc, out, err = run([CHECKSUM, ref])
    expect(rc == 0 and "78 datasets (4 layers, embedding)" in out and "78 matched" in out,
           f"grok1-checksum of a good file: rc {rc} {out.strip()} {err.strip()}")


# (label, dataset, chunk coordinate or None for contiguous, text the messages name)
DAMAGE = [
    ("an expert's weights", "layers/01/moe_gate", (5, 0, 0), "layers/01/moe_gate expert 5"),
    ("an expert's scales", "layers/03/moe_down_scale", (0, 0, 0), "layers/03/moe_down_scale expert 0"),
    ("attention scales", "layers/00/attn_o_scale", None, "layers/00/attn_o_scale"),
    ("attention weights", "layers/02/attn_k", None, "layers/02/attn_k"),
    ("a router", "layers/02/router", None, "layers/02/router"),
    ("a norm", "layers/01/moe_out_norm", None, "layers/01/moe_out_norm"),
    ("the embedding", "embedding", (64, 0), "embedding"),
    ("the final norm", "final_norm", None, "final_norm"),
]


def test_damage(d, ref):
    for label, name, coord, shown in DAMAGE:
        bad = os.path.join(d, "bad.h5")
        shutil.copy(ref, bad)
        flip(bad, name, coord)
        rc, out, err = run([CHECKER, bad])
        expect(rc == 1 and f"{shown} does not match its checksum" in err and "the file is damaged" in err
               and "HDF5-DIAG" not in err, f"{label} changed: the load stops naming it: rc {rc} {err.strip()}")
        rc, out, err = run([CHECKSUM, bad])
        expect(rc == 1 and f"{shown} does not match its checksum" in err and "77 matched, 1 DAMAGED" in out,
               f"{label} changed: grok1-checksum finds it: rc {rc} {out.strip()} {err.strip()}")
    # a rank loads only its experts: damage in another's is not its concern
    bad = os.path.join(d, "bad.h5")
    shutil.copy(ref, bad)
    flip(bad, "layers/01/moe_gate", (5, 0, 0))
    rc, out, err = run([CHECKER, bad, 0, 4, 0, 4])
    expect(rc == 0, f"experts 0-3 load from a file damaged in expert 5: rc {rc} {err.strip()}")
    rc, out, err = run([CHECKER, bad, 2, 4, 4, 8])
    expect(rc == 0, f"layers 2-3 load from a file damaged in layer 1: rc {rc} {err.strip()}")
    rc, out, err = run([CHECKER, bad, 1, 2, 4, 8])
    expect(rc == 1 and "layers/01/moe_gate expert 5 does not match" in err,
           f"experts 4-7 of layer 1 stop at expert 5: rc {rc} {err.strip()}")
    rc, out, err = run([CHECKSUM, "--layers", "2-3", bad])
    expect(rc == 0 and "38 datasets (2 layers)" in out, f"--layers 2-3 skips the damage: rc {rc} {out.strip()}")
    if RUN:
        test_run(d, bad)


def test_run(d, bad):
    req = one_request(os.path.join(d, "req.jsonl"))
    out = os.path.join(d, "out.jsonl")
    rc, _, err = run([RUN, "--checkpoint", bad, "--mode", "score", "--input", req, "--output", out])
    left = [n for n in os.listdir(d) if n.startswith("out.jsonl")]
    expect(rc == 1 and "layers/01/moe_gate expert 5 does not match its checksum" in err and "--skip-checksums" in err
           and not left, f"grok1-run refuses the damaged file, leaving nothing: rc {rc} {left} {err.strip()}")
    rc, _, err = run([RUN, "--checkpoint", bad, "--skip-checksums", "--verbose", "--mode", "score",
                      "--input", req, "--output", out])
    expect(rc == 0 and "checksums skipped, " in err, f"--skip-checksums loads it: rc {rc} {err[-300:]}")
    os.remove(out)
    rc, _, err = run([RUN, "--synthetic", "tiny", "--skip-checksums", "--mode", "score", "--input", req,
                      "--output", out])
    expect(rc == 2 and "--skip-checksums is for --checkpoint or --dump-logits" in err,
           f"--skip-checksums with --synthetic: rc {rc}")


def test_old_file(d, ref):
    old = os.path.join(d, "old.h5")
    shutil.copy(ref, old)
    strip(old)
    rc, out, err = run([CHECKER, old])
    expect(rc == 0, f"a file without checksums loads: rc {rc} {err.strip()}")
    rc, out, err = run([CHECKSUM, old])
    expect(rc == 3 and "0 matched, 78 without a checksum" in out,
           f"grok1-checksum of a file without checksums: exit 3: rc {rc} {out.strip()}")
    if RUN:
        req = one_request(os.path.join(d, "req.jsonl"))
        o = os.path.join(d, "o.jsonl")
        rc, _, err = run([RUN, "--checkpoint", old, "--verbose", "--mode", "score", "--input", req, "--output", o])
        expect(rc == 0 and "not checked (no checksums in the file), " in err, f"grok1-run says so: rc {rc}")
        os.remove(o)
        part = os.path.join(d, "half.h5")
        shutil.copy(ref, part)
        strip(part, ["layers/00/attn_q"])
        rc, _, err = run([RUN, "--checkpoint", part, "--verbose", "--mode", "score", "--input", req, "--output", o])
        expect(rc == 0 and "checksums matched (some tensors have none), " in err, f"a file half with: rc {rc}")
        os.remove(o)
        rc, _, err = run([RUN, "--checkpoint", ref, "--verbose", "--mode", "score", "--input", req, "--output", o])
        expect(rc == 0 and "checksums all matched, " in err, f"a file with checksums: rc {rc}")
    rc, out, err = run([CHECKSUM, "--add", old])
    expect(rc == 0 and "0 matched, 78 added" in out, f"--add: rc {rc} {out.strip()} {err.strip()}")
    with h5py.File(old, "r") as a, h5py.File(ref, "r") as b:
        same = all(list(a[n].attrs["crc32"]) == list(b[n].attrs["crc32"]) for n in datasets(ref))
    expect(same, "--add records what the writer recorded")
    rc, out, err = run([CHECKSUM, old])
    expect(rc == 0 and "78 matched" in out, f"after --add the file checks: rc {rc} {out.strip()}")
    # --add on a damaged file that has checksums: the damage is reported, nothing added
    flip(old, "layers/02/attn_k")
    rc, out, err = run([CHECKSUM, "--add", old])
    expect(rc == 1 and "77 matched, 0 added, 1 DAMAGED" in out and "layers/02/attn_k does not match" in err,
           f"--add checks the checksums there: rc {rc} {out.strip()}")


def test_params(d, ref):
    """The hyper-parameters' checksum (root attribute params_crc32): a changed
    rope_base or cap loaded and computed something else without a word."""
    with h5py.File(ref, "r") as f:
        expect(int(f.attrs["params_crc32"]) == params_crc(f.attrs), "params_crc32 is the documented CRC-32")
    rc, out, err = run([CHECKSUM, ref])
    expect(rc == 0 and "hyper-parameters matched" in out, f"grok1-checksum: hyper-parameters matched: {out.strip()}")
    bad = os.path.join(d, "rope.h5")
    shutil.copy(ref, bad)
    with h5py.File(bad, "r+") as f:
        f.attrs.modify("rope_base", 9488.0)  # one bit of the float64 10000.0 flipped
    rc, out, err = run([CHECKSUM, bad])
    expect(rc == 1 and "hyper-parameters DAMAGED" in out and "do not match their checksum" in err,
           f"grok1-checksum: a changed rope_base is DAMAGED: rc {rc} {out.strip()} {err.strip()}")
    rc, out, err = run([CHECKER, bad])
    expect(rc == 1 and "hyper-parameters do not match their checksum" in err, f"the loader refuses it: rc {rc} {err}")
    if RUN:
        req, o = one_request(os.path.join(d, "req.jsonl")), os.path.join(d, "p.jsonl")
        rc, _, err = run([RUN, "--checkpoint", bad, "--mode", "score", "--input", req, "--output", o])
        expect(rc == 1 and "hyper-parameters do not match" in err and not os.path.exists(o),
               f"grok1-run refuses it: rc {rc} {err.strip()}")
        rc, _, err = run([RUN, "--checkpoint", bad, "--skip-checksums", "--mode", "score", "--input", req,
                          "--output", o])
        expect(rc == 0, f"--skip-checksums loads it: rc {rc} {err.strip()}")
    # a checksum attribute of another type: refused the same way, and
    # --skip-checksums still loads (it was refused at open, flag or not)
    odd = os.path.join(d, "oddparams.h5")
    shutil.copy(ref, odd)
    with h5py.File(odd, "r+") as f:
        del f.attrs["params_crc32"]
        f.attrs["params_crc32"] = np.float64(1.0)
    rc, out, err = run([CHECKSUM, odd])
    expect(rc == 1 and "hyper-parameters DAMAGED" in out, f"grok1-checksum: a float params_crc32: rc {rc} {out}")
    if RUN:
        rc, _, err = run([RUN, "--checkpoint", odd, "--mode", "score", "--input", req, "--output", o])
        expect(rc == 1 and "params_crc32 (the hyper-parameters' checksum) is not one unsigned integer" in err,
               f"grok1-run refuses a float params_crc32: rc {rc} {err.strip()}")
        rc, _, err = run([RUN, "--checkpoint", odd, "--skip-checksums", "--mode", "score", "--input", req,
                          "--output", o + "2"])
        expect(rc == 0, f"--skip-checksums loads it: rc {rc} {err.strip()}")
    old = os.path.join(d, "noparams.h5")
    shutil.copy(ref, old)
    with h5py.File(old, "r+") as f:
        del f.attrs["params_crc32"]
    rc, out, err = run([CHECKSUM, old])
    expect(rc == 3 and "hyper-parameters without a checksum" in out, f"a file without one: exit 3: {out.strip()}")
    rc, out, err = run([CHECKSUM, "--add", old])
    expect(rc == 0 and "hyper-parameters added" in out, f"--add puts it in: rc {rc} {out.strip()}")
    with h5py.File(old, "r") as a, h5py.File(ref, "r") as b:
        expect(int(a.attrs["params_crc32"]) == int(b.attrs["params_crc32"]), "--add records what the writer does")


def test_bad_attribute(d, ref):
    with h5py.File(ref, "r") as f:
        right = np.array(f["layers/00/moe_up"].attrs["crc32"], dtype=np.uint64)
    # int32 reads 2^31 and more as 0: a false mismatch, so it is refused as
    # not checksums (the reference's has such values, or the case is void)
    expect(right.max() >= 2**31, "the reference's crc32 of layers/00/moe_up has no value of 2^31 or more")
    for label, value in [("3 values on an expert tensor", np.array([1, 2, 3], dtype=np.uint32)),
                         ("a string", "deadbeef"), ("int32 (the right values, cast)", right.astype(np.int32))]:
        p = os.path.join(d, "attr.h5")
        shutil.copy(ref, p)
        with h5py.File(p, "r+") as f:
            del f["layers/00/moe_up"].attrs["crc32"]
            f["layers/00/moe_up"].attrs["crc32"] = value
        rc, out, err = run([CHECKER, p])
        expect(rc == 1 and "layers/00/moe_up has a crc32 attribute that is not 8 unsigned integers" in err,
               f"crc32 attribute of {label}: the reader refuses: rc {rc} {err.strip()}")
        rc, out, err = run([CHECKSUM, p])
        expect(rc == 1 and "layers/00/moe_up has a crc32 attribute" in err,
               f"crc32 attribute of {label}: grok1-checksum too: rc {rc}")
        if RUN:
            req = one_request(os.path.join(d, "req.jsonl"))
            o = os.path.join(d, "o.jsonl")
            rc, _, err = run([RUN, "--checkpoint", p, "--mode", "score", "--input", req, "--output", o])
            expect(rc == 1 and "has a crc32 attribute" in err, f"crc32 attribute of {label}: grok1-run refuses")
            rc, _, err = run([RUN, "--checkpoint", p, "--skip-checksums", "--mode", "score", "--input", req,
                              "--output", o])
            expect(rc == 0, f"crc32 attribute of {label}: --skip-checksums loads it: rc {rc} {err.strip()}")
            os.remove(o)
    # the right values as int64 (h5py's type for Python ints) or uint64 are checksums
    for dt in (np.int64, np.uint64):
        p = os.path.join(d, "attr64.h5")
        shutil.copy(ref, p)
        with h5py.File(p, "r+") as f:
            del f["layers/00/moe_up"].attrs["crc32"]
            f["layers/00/moe_up"].attrs["crc32"] = right.astype(dt)
        rc, out, err = run([CHECKSUM, p])
        expect(rc == 0 and "DAMAGED" not in out, f"crc32 attribute as {dt.__name__}: rc {rc} {out.strip()}")


def test_layers(d, ref):
    """The layer groups against num_layers: one missing (deleted with h5py;
    grok1-run refuses the file) made grok1-checksum exit 0, and one more
    than num_layers was loaded past silently by the reader and grok1-checksum."""
    for gone in ("03", "01"):
        p = os.path.join(d, "gone.h5")
        shutil.copy(ref, p)
        with h5py.File(p, "r+") as f:
            del f["layers/" + gone]
        rc, out, err = run([CHECKSUM, p])
        held = "layers 0-2" if gone == "03" else "layers 0, 2-3"
        expect(rc == 1 and f"layer {int(gone)} missing (the model has 4 layers, num_layers; the file holds {held}): "
               "INCOMPLETE" in err and "59 matched, 1 layer missing (INCOMPLETE)" in out and
               ("--layers 0-2" in err) == (gone == "03"), f"layers/{gone} deleted: rc {rc} {out.strip()} {err.strip()}")
        rc, out, err = run([CHECKER, p])
        expect(rc == 1 and f"checkpoint has no layers/{gone}" in err, f"layers/{gone} deleted: the reader refuses")
        rc, out, err = run([CHECKSUM, "--layers", "0-0", p])
        expect(rc == 0 and "21 datasets (1 layer, embedding)" in out, f"--layers 0-0 of it: rc {rc} {out.strip()}")
    p = os.path.join(d, "extra.h5")
    shutil.copy(ref, p)
    with h5py.File(p, "r+") as f:
        f.copy("layers/03", "layers/04")
    msg = "has layers/04, but its num_layers is 4 (layers/00 to layers/03): a layer the model does not have"
    rc, out, err = run([CHECKER, p])
    expect(rc == 1 and msg in err, f"a layer past num_layers: the reader refuses it: rc {rc} {err.strip()}")
    rc, out, err = run([CHECKER, p, 0, 1, 0, 8])
    expect(rc == 1 and msg in err, f"... at a load of other layers too: rc {rc} {err.strip()}")
    rc, out, err = run([CHECKSUM, p])
    expect(rc == 1 and "layers/04 is not a layer of the model (num_layers 4: layers/00 to layers/03" in err and
           "78 matched, 1 in layers/ not a layer of the model" in out,
           f"a layer past num_layers: grok1-checksum: rc {rc} {out.strip()} {err.strip()}")
    if RUN:
        req, o = one_request(os.path.join(d, "req.jsonl")), os.path.join(d, "x.jsonl")
        rc, _, err = run([RUN, "--checkpoint", p, "--mode", "score", "--input", req, "--output", o])
        expect(rc == 1 and msg in err and not os.path.exists(o), f"grok1-run refuses it: rc {rc} {err.strip()}")
    with h5py.File(p, "r+") as f:
        f.move("layers/04", "layers/4")
    rc, out, err = run([CHECKER, p])
    expect(rc == 1 and "has layers/4, which is not a layer's name (00, 01, ...)" in err,
           f"a group of another name in layers: rc {rc} {err.strip()}")
    rc, out, err = run([CHECKSUM, p])
    expect(rc == 1 and "layers/4 is not a layer's name" in err, f"... and grok1-checksum: rc {rc} {err.strip()}")


def test_forged_shape(d, ref):
    """A dataset whose shape declares far more than the file holds (a row of
    2^55 bytes, never written): grok1-checksum allocated the row whole (ASan
    aborted; a release build said 'unknown HDF5 error'); compressed, it
    would read 2^55 bytes of fill values. A compressed dataset written whole
    is read."""
    cases = [("layers/00/attn_q", (1, 2 ** 55), {}, "0 bytes of its data"),
             ("layers/01/moe_up", (8, 1, 2 ** 52), {}, "0 bytes of its data"),
             ("layers/02/attn_v", (1, 2 ** 55), {"chunks": (1, 2 ** 20), "compression": "gzip"},
              "1 of its 34359738368 chunks")]
    for name, shape, kw, held in cases:
        p = os.path.join(d, "forged.h5")
        shutil.copy(ref, p)
        with h5py.File(p, "r+") as f:
            del f[name]
            x = f.create_dataset(name, shape=shape, dtype="int8", **kw)
            if kw:
                x[0, :10] = 5
                a = f["layers/02/attn_k"][()]
                del f["layers/02/attn_k"]
                f.create_dataset("layers/02/attn_k", data=a, chunks=(8, 8), compression="gzip")
                f["layers/02/attn_k"].attrs["crc32"] = np.array([zlib.crc32(a.tobytes())], np.uint32)
        rc, out, err = run([CHECKSUM, p])
        expect(rc == 1 and f"{name} cannot be read: its shape ({','.join(map(str, shape))}) of 1-byte elements is "
               f"{np.prod(shape, dtype=object)} bytes, but the file holds {held}" in err
               and "77 matched, 1 unreadable" in out,
               f"a forged shape {shape} {kw}: rc {rc} {out.strip()} {err.strip()}")


def test_parts(d):
    pd = os.path.join(d, "parts")
    os.mkdir(pd)
    p0, p2, joined = (os.path.join(pd, n) for n in ("p0.h5", "p2.h5", "all.h5"))
    for args in (["--part", "0-1", "--out", p0], ["--part", "2-3", "--no-embedding", "--out", p2]):
        rc, _, err = run([MKCKPT, "--config", "tiny", "--seed", "3", *args])
        expect(rc == 0, f"mkckpt {args}: {err.strip()}")
    rc, out, err = run([LINK, joined, p0, p2])
    expect(rc == 0 and out.strip().endswith("; checksums in every part"), f"link says the parts have checksums: "
           f"{out.strip()} {err.strip()}")
    rc, out, err = run([CHECKSUM, joined])
    expect(rc == 0 and "78 matched" in out, f"a checkpoint in parts checks through its links: {out.strip()}")
    # a part alone is not the whole model (as the reader says): checked with --layers, its layers
    rc, out, err = run([CHECKSUM, p2])
    expect(rc == 1 and "39 datasets (2 layers)" in out and "39 matched, 2 layers missing (INCOMPLETE)" in out and
           "layers 0-1 missing (the model has 4 layers, num_layers; the file holds layers 2-3): INCOMPLETE" in err
           and "check it with --layers 2-3" in err, f"a part alone: its layers and final norm, the others missing: "
           f"rc {rc} {out.strip()} {err.strip()}")
    rc, out, err = run([CHECKSUM, "--layers", "2-3", p2])
    expect(rc == 0 and "38 datasets (2 layers)" in out, f"a part with --layers, its layers: {out.strip()}")
    rc, out, err = run([CHECKSUM, "--layers", "0-1", p2])
    expect(rc == 2 and f"--layers 0-1: {p2} holds layers 2-3 (a part of a checkpoint" in err,
           f"--layers the part does not hold: rc {rc} {err.strip()}")
    # --add on a part alone: refused before anything is written (it wrote the
    # checksums, then exited 1 for INCOMPLETE), naming --layers and its range;
    # with them it adds
    bare = os.path.join(pd, "bare.h5")
    shutil.copy(p2, bare)
    strip(bare)
    before = open(bare, "rb").read()
    rc, out, err = run([CHECKSUM, "--add", bare])
    expect(rc == 2 and f"--add: {bare} holds layers 2-3 of the model's 4" in err and "--add --layers 2-3" in err
           and "nothing was written" in err and err.count("\n") == 1 and not out
           and open(bare, "rb").read() == before,
           f"--add on a part without --layers: refused, the file unchanged: rc {rc} {out.strip()} {err.strip()}")
    rc, out, err = run([CHECKSUM, "--add", "--layers", "2-3", bare])
    expect(rc == 0 and "38 added" in out, f"--add --layers on a part: rc {rc} {out.strip()} {err.strip()}")
    rc, out, err = run([CHECKSUM, "--layers", "2-3", bare])
    expect(rc == 0 and "38 matched" in out, f"... and they match: rc {rc} {out.strip()} {err.strip()}")
    os.remove(bare)
    # a part file missing: one line for it, naming what was not checked
    os.rename(p2, p2 + ".away")
    rc, out, err = run([CHECKSUM, joined])
    os.rename(p2 + ".away", p2)
    expect(rc == 1 and err.count("\n") == 1 and "part file p2.h5 cannot be opened" in err and
           "so 2 layers (2 to 3) in it were not checked" in err and "HDF5_EXT_PREFIX" in err and
           "40 matched, 2 unreadable" in out, f"a missing part is told once: rc {rc} {out.strip()} {err.strip()}")
    # ... the same run from the parts' own folder (HDF5's innermost message
    # differs there: the part was taken for another file of that name); and
    # grok1-run says the part cannot be opened too
    os.rename(p2, p2 + ".away")
    p = subprocess.run([os.path.abspath(CHECKSUM), "all.h5"], capture_output=True, text=True, cwd=pd)
    req = one_request(os.path.join(d, "parts_req.jsonl"))
    r = subprocess.run([os.path.abspath(RUN or ""), "--checkpoint", "all.h5", "--mode", "score", "--input", req,
                        "--output", os.path.join(d, "parts_out.jsonl")], capture_output=True, text=True,
                       cwd=pd) if RUN else None
    os.rename(p2 + ".away", p2)
    expect(p.returncode == 1 and "part file p2.h5 cannot be opened" in p.stderr and "not the part" not in p.stderr,
           f"a missing part, from the parts' folder: rc {p.returncode} {p.stderr.strip()}")
    expect(r is None or (r.returncode == 1 and "which cannot be opened" in r.stderr),
           f"grok1-run, a missing part from the parts' folder: {r.stderr.strip() if r else ''}")
    os.rename(p0, p0 + ".away")
    rc, out, err = run([CHECKSUM, joined])
    os.rename(p0 + ".away", p0)
    expect(rc == 1 and "so 2 layers (0 to 1), the embedding and the final norm in it were not checked" in err and
           "(2 layers):" in out, f"... with the embedding and final norm: rc {rc} {out.strip()} {err.strip()}")
    flip(p2, "layers/03/attn_v")
    rc, out, err = run([CHECKSUM, joined])
    expect(rc == 1 and f"layers/03/attn_v in part file {p2} does not match its checksum" in err,
           f"damage in a part, found through the links, names the part: rc {rc} {err.strip()}")
    rc, out, err = run([CHECKER, joined])
    expect(rc == 1 and "layers/03/attn_v in part file" in err and "does not match its checksum" in err,
           f"the reader names the part too: rc {rc} {err.strip()}")
    rc, out, err = run([CHECKER, joined, 0, 2, 0, 8])
    expect(rc == 0, f"a rank of the other part's layers loads: rc {rc} {err.strip()}")
    # checksums added through the links land in the parts
    strip(p0)
    rc, out, err = run([LINK, "--force", joined, p0, p2])
    expect(rc == 0 and "; no checksums in p0.h5 (written before checksums" in out,
           f"link names a part without checksums: {out.strip()}")
    rc, out, err = run([CHECKSUM, "--add", "--layers", "0-1", joined])
    expect(rc == 0 and "40 datasets (2 layers, embedding): " in out and "40 added" in out,
           f"--add through the links: rc {rc} {out.strip()} {err.strip()}")
    rc, out, err = run([CHECKSUM, "--layers", "0-1", p0])
    expect(rc == 0 and "40 matched" in out, f"the part has them: rc {rc} {out.strip()}")
    # a part made again with other weights (its own checksums match): not
    # the part linked, as grok1-run says; the other part's layers pass
    rc, _, err = run([MKCKPT, "--config", "tiny", "--seed", "4", "--part", "2-3", "--no-embedding", "--out", p2])
    rc, out, err = run([CHECKSUM, joined])
    expect(rc == 1 and "78 matched, 2 norms from a part not the one linked" in out and
           f"layers/02 was read from {p2}, which is not the part grok1-link linked (its attn_norm differs)" in err
           and "final norm" not in err, f"a replaced part is found: rc {rc} {out.strip()} {err.strip()[:300]}")
    rc, out, err = run([CHECKSUM, "--layers", "0-1", joined])
    expect(rc == 0, f"... and the layers of the part linked pass: rc {rc} {out.strip()} {err.strip()[:300]}")
    rc, _, err = run([CHECKER, joined])
    expect(rc == 1 and "not the part grok1-link linked" in err, f"the reader refuses it too: rc {rc} {err.strip()}")


def dump_crcs(path):
    with h5py.File(path, "r") as f:
        return {k: (list(f["logits"][k].attrs.get("crc32", [])), zlib.crc32(f["logits"][k][...].astype("<f4").tobytes()))
                for k in f["logits"]}


def test_dump(d, ref):
    """Logits dumps (grok1-run --dump-logits): a checksum per dataset,
    checked by grok1-checksum and by a resume, which starts over when a kept
    result's logits are damaged (unless --skip-checksums)."""
    if not RUN:
        print("skip: dumps (no grok1-run)")
        return
    req = os.path.join(d, "dreq.jsonl")
    rnd = __import__("random").Random(3)
    with open(req, "w") as f:
        for i in range(7):
            f.write('{"id": %d, "prompt_ids": [%s]}\n' % (i, ", ".join(str(rnd.randrange(1, 500))
                                                                    for _ in range(rnd.randint(1, 20)))))
    out, dump = os.path.join(d, "dout.jsonl"), os.path.join(d, "dump.h5")

    def score(*extra):
        return run([RUN, "--checkpoint", ref, "--mode", "score", "--input", req, "--output", out,
                    "--dump-logits", dump, "--max-batch-tokens", "8", "--batch-size", "2", *extra])
    rc, _, err = score()
    expect(rc == 0, f"a score run with a dump: rc {rc} {err[-200:]}")
    crcs = dump_crcs(dump)
    expect(len(crcs) == 7 and all(rec == [want] for rec, want in crcs.values()),
           f"each dataset's crc32 attribute is zlib.crc32 of its float32 values: {crcs}")
    ref_out, ref_dump = open(out).read(), os.path.join(d, "dump.ref.h5")
    shutil.copy(dump, ref_dump)
    rc, so, err = run([CHECKSUM, dump])
    expect(rc == 0 and "7 datasets (logits dump)" in so and "7 matched" in so,
           f"grok1-checksum on a dump: rc {rc} {so.strip()} {err.strip()}")
    rc, _, err = run([CHECKSUM, "--layers", "0-1", dump])
    expect(rc == 2 and "is a logits dump" in err, f"--layers with a dump: rc {rc} {err.strip()}")
    # one value changed in the file: found, named
    with h5py.File(dump, "r") as f:
        off = f["logits/4"].id.get_offset()
    with open(dump, "r+b") as b:
        b.seek(off + 9)
        x = b.read(1)
        b.seek(off + 9)
        b.write(bytes([x[0] ^ 0x10]))
    rc, so, err = run([CHECKSUM, dump])
    expect(rc == 1 and "logits/4 does not match its checksum" in err and "6 matched, 1 DAMAGED" in so,
           f"grok1-checksum finds a changed byte in a dump: rc {rc} {so.strip()} {err.strip()}")
    # without checksums: unchecked (exit 3); --add puts them back
    shutil.copy(ref_dump, dump)
    with h5py.File(dump, "r+") as f:
        for k in ("1", "5"):
            del f["logits"][k].attrs["crc32"]
    rc, so, _ = run([CHECKSUM, dump])
    expect(rc == 3 and "2 without a checksum" in so, f"a dump without some checksums: rc {rc} {so.strip()}")
    rc, so, _ = run([CHECKSUM, "--add", dump])
    expect(rc == 0 and "2 added" in so and dump_crcs(dump) == crcs, f"--add on a dump: rc {rc} {so.strip()}")
    # a tokens attribute that is not one token id a row, an id that is not a string
    for attr, value, words in (("tokens", np.zeros(3, np.int32), ["logits/2", "tokens attribute", "token ids"]),
                               ("tokens", np.full(1, 512, np.int32), ["logits/2", "tokens attribute"]),
                               ("id", np.int64(2), ["logits/2", "id attribute", "not a string"])):
        shutil.copy(ref_dump, dump)
        with h5py.File(dump, "r+") as f:
            x = f["logits/2"]
            if attr == "tokens" and value.size == 1:
                value = np.full(x.shape[0], 512, np.int32)  # of the right length, past the vocabulary
            del x.attrs[attr]
            x.attrs[attr] = value
        rc, so, err = run([CHECKSUM, dump])
        expect(rc == 1 and all(w in err for w in words), f"a dump with a bad {attr} attribute: rc {rc} {err.strip()}")

    # a resume: 4 results kept, the dump as an interrupted run leaves it
    def interrupted(damage, keep_aside=False):
        for p in (out, out + ".partial", dump, dump + ".partial") + (() if keep_aside else (dump + ".partial.damaged",)):
            if os.path.exists(p):
                os.remove(p)
        with open(out + ".partial", "w") as f:
            f.write("".join(ref_out.splitlines(keepends=True)[:4]))
        shutil.copy(ref_dump, dump + ".partial")
        if damage == "unwritten":  # its shape and attributes, no values in the file
            with h5py.File(dump + ".partial", "r+") as f:
                x = f["logits/2"]
                attrs, shape = dict(x.attrs), x.shape
                del f["logits/2"]
                y = f.create_dataset("logits/2", shape=shape, dtype=np.float32)
                for k, v in attrs.items():
                    y.attrs[k] = v
        elif damage:
            with h5py.File(dump + ".partial", "r+") as f:
                f["logits/2"][1, 7] += 0.5
    interrupted(True)
    rc, _, err = score("--resume")
    expect(rc == 0 and "logits/2 does not match its checksum" in err and "dump.h5.partial.damaged" in err and
           "computed again" in err, f"a resume over a damaged kept result starts over: rc {rc} {err.strip()[-400:]}")
    expect(open(out).read() == ref_out and dump_crcs(dump) == crcs,
           "... and ends with the uninterrupted run's output and dump")
    # damaged again: the dump set aside first stays, this one gets .2
    first_aside = open(dump + ".partial.damaged", "rb").read()
    interrupted(True, keep_aside=True)
    rc, _, err = score("--resume")
    expect(rc == 0 and "dump.h5.partial.damaged.2" in err and
           open(dump + ".partial.damaged", "rb").read() == first_aside and os.path.exists(dump + ".partial.damaged.2"),
           f"a second dump set aside does not replace the first: rc {rc} {err.strip()[-300:]}")
    os.remove(dump + ".partial.damaged.2")
    # a kept result's dataset that declares more than the file holds (its
    # row count is checked first, so a forged one is refused before this):
    # said so, not read as fill values
    interrupted("unwritten")
    rc, _, err = score("--resume")
    expect(rc == 0 and "logits/2 cannot be read" in err and "the file holds 0 bytes" in err and
           "dump.h5.partial.damaged" in err and open(out).read() == ref_out and dump_crcs(dump) == crcs,
           f"a resume over a kept result never written starts over, saying why: rc {rc} {err.strip()[-400:]}")
    interrupted(False)
    rc, _, err = score("--resume")
    expect(rc == 0 and "warning" not in err and open(out).read() == ref_out and dump_crcs(dump) == crcs,
           f"a resume over an intact dump continues it: rc {rc} {err.strip()[-300:]}")
    interrupted(True)
    rc, _, err = score("--resume", "--skip-checksums")
    with h5py.File(dump, "r") as f:
        kept = float(f["logits/2"][1, 7])
    with h5py.File(ref_dump, "r") as f:
        was = float(f["logits/2"][1, 7])
    expect(rc == 0 and "warning" not in err and kept == np.float32(was + 0.5),
           f"--skip-checksums keeps the kept results' logits unread: rc {rc} {err.strip()[-300:]}")
    # the dump replaced by another run's of other prompts (one more token
    # each; the same settings): the kept results' logits are not there. As
    # a finished dump it is another output's (out.other's): refused, left as
    # it is (until 2026-12-04 it was set aside, and this output's logits took
    # its name under out.other's meta file)
    rc, _, err = score()
    other = os.path.join(d, "dother.jsonl")
    with open(req) as f, open(other, "w") as g:
        for line in f:
            g.write(line.replace('"prompt_ids": [', '"prompt_ids": [9, '))
    rc2, _, _ = run([RUN, "--checkpoint", ref, "--mode", "score", "--input", other, "--output", out + ".other",
                     "--dump-logits", dump])
    other_dump = open(dump, "rb").read()
    before = {p: open(p, "rb").read() for p in (out, out + ".meta.json", dump)}
    rc, _, err = score("--resume")
    after = {p: open(p, "rb").read() if os.path.exists(p) else None for p in before}
    expect(rc2 == 0 and rc == 1 and "is a finished logits dump that is not the one of the results kept" in err and
           "7 of the results kept have no logits there (the first: no logits/0 of" in err and before == after and
           not os.path.exists(dump + ".partial.damaged"),
           f"a resume over another output's finished dump of other prompts is refused: rc {rc} {err.strip()[-300:]}")
    # as DUMP.partial (what an interrupted run leaves) the resume starts
    # over, keeping that dump aside
    os.rename(dump, dump + ".partial")
    rc, _, err = score("--resume")
    expect(rc == 0 and "7 of the results kept have no logits there (the first: no logits/0 of" in err
           and open(dump + ".partial.damaged", "rb").read() == other_dump and open(out).read() == ref_out and
           dump_crcs(dump) == crcs, f"a resume over a dump of other prompts starts over: rc {rc} {err.strip()[-300:]}")
    # ... and one of the same input under other settings: its record says so
    rc2, _, _ = run([RUN, "--checkpoint", ref, "--mode", "score", "--input", req, "--output", out + ".other",
                     "--dump-logits", dump, "--seed", "77"])
    with h5py.File(dump, "r") as f:
        rec = f.attrs.get("run")
    before = {p: open(p, "rb").read() for p in (out, out + ".meta.json", dump)}
    rc, _, err = score("--resume")
    after = {p: open(p, "rb").read() if os.path.exists(p) else None for p in before}
    expect(rc2 == 0 and rc == 1 and "was written by another run" in err and "settings.seed is 77" in err and
           before == after and '"seed":77' in str(rec), f"... refused by the dump's record of its run: rc {rc} "
           f"{err.strip()[-300:]}")
    # a shard's dump with a dataset of another shard's request among its
    # kept ones (logits/1, of the wrong shape): the look before the rename
    # checks only the kept results' datasets, so the prune opens this one
    # (it counts the ones the look vouched for unopened), names it, and the
    # run starts over
    sout, sdump = os.path.join(d, "sout.jsonl"), os.path.join(d, "sdump.h5")

    def shard(*extra):
        return run([RUN, "--checkpoint", ref, "--mode", "score", "--input", req, "--output", sout,
                    "--dump-logits", sdump, "--max-batch-tokens", "8", "--batch-size", "2", "--shard", "0/2", *extra])
    rc, _, err = shard()
    s_out, s_crcs = open(sout).read(), dump_crcs(sdump)
    expect(rc == 0 and sorted(s_crcs) == ["0", "2", "4", "6"], f"shard 0/2 with a dump: rc {rc} {sorted(s_crcs)}")
    with open(sout + ".partial", "w") as f:
        f.write("".join(s_out.splitlines(keepends=True)[:3]))  # requests 0, 2, 4 kept
    os.remove(sout)
    os.rename(sdump, sdump + ".partial")
    with h5py.File(sdump + ".partial", "r+") as f:
        f.create_dataset("logits/1", data=np.zeros((2, 3), np.float32))
    rc, _, err = shard("--resume")
    expect(rc == 0 and "logits/1 of a kept result does not open as (n, 512) float32" in err and
           "sdump.h5.partial.damaged" in err and "computed again" in err and open(sout).read() == s_out and
           dump_crcs(sdump) == s_crcs,
           f"a shard's dump with another request's dataset among the kept ones starts over, naming it: rc {rc} "
           f"{err.strip()[-400:]}")


def test_usage(d, ref):
    for args, rc_want, needle in [([], 2, "expected one checkpoint file"),
                                  (["--layers", "x", ref], 2, "--layers x: expected A-B"),
                                  (["--layers", "3-1", ref], 2, "--layers 3-1: expected A-B"),
                                  (["--layers"], 2, "--layers needs A-B"),
                                  (["--layers", "0-9", ref], 2, "has 4 layers (0-3)"),
                                  (["--bogus", ref], 2, "unknown option '--bogus'"),
                                  (["--layers", "0-1", "--layers", "2-3", ref], 2,
                                   "--layers is given twice (0-1, then 2-3)"),
                                  ([ref, ref], 2, "expected one checkpoint file"),
                                  ([os.path.join(d, "none.h5")], 1, "none.h5"),
                                  ([os.path.join(d, "req.jsonl")], 1, "req.jsonl")]:
        if args and args[-1].endswith("req.jsonl"):
            with open(args[-1], "w") as f:
                f.write("{}\n")
        rc, out, err = run([CHECKSUM, *args])
        expect(rc == rc_want and needle in err and "HDF5-DIAG" not in err,
               f"grok1-checksum {args[:2]}: rc {rc} (want {rc_want}) {err.strip()!r}")
    rc, out, err = run([CHECKSUM, "--help"])
    expect(rc == 0 and out.startswith("usage: grok1-checksum"), "--help")


def main():
    with tempfile.TemporaryDirectory(prefix="g1-ckpt-sum-") as d:
        ref = os.path.join(d, "ref.h5")
        rc, _, err = run([MKCKPT, "--config", "tiny", "--seed", "7", "--out", ref])
        if rc != 0:
            print("mkckpt failed:", err)
            return 1
        test_recorded(d, ref)
        test_damage(d, ref)
        test_old_file(d, ref)
        test_params(d, ref)
        test_bad_attribute(d, ref)
        test_layers(d, ref)
        test_forged_shape(d, ref)
        test_parts(d)
        test_dump(d, ref)
        test_usage(d, ref)
    return expect.result()


if __name__ == "__main__":
    sys.exit(main())
