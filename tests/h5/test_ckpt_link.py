#!/usr/bin/env python3
"""A checkpoint in parts: grok1-mkckpt --part writes layer ranges, grok1-link
joins them by HDF5 external links, and the reader (g1-ckpt-check, grok1-run)
loads the result bitwise like the one-file checkpoint: from another folder,
from local copies named by HDF5_EXT_PREFIX, and with the parts a rank does
not load absent. Refusals name the problem and leave nothing at OUT.

usage: test_ckpt_link.py GROK1_MKCKPT GROK1_LINK G1_CKPT_CHECK [GROK1_RUN]
(exit 77: no h5py)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import Checks, need  # noqa: E402

h5py, np = need("h5py", "numpy")

MKCKPT, LINK, CHECKER = (os.path.abspath(p) for p in sys.argv[1:4])  # some runs start in other folders
RUN = os.path.abspath(sys.argv[4]) if len(sys.argv) > 4 else None
MODEL = ["--config", "tiny", "--set", "num_layers=5"]
expect = Checks()


def run(args, env=None, cwd=None):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, **(env or {})), cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def mkckpt(out, *extra, seed=7):
    rc, _, err = run([MKCKPT, *MODEL, "--seed", seed, "--out", out, *extra])
    assert rc == 0, err
    return out


def link(*args, **kw):
    return run([LINK, *args], **kw)


def digest(path, *ranges, env=None):
    rc, out, err = run([CHECKER, path, *ranges], env=env)
    return out.split()[1] + " " + out.split()[3] if rc == 0 else f"refused: {err.strip()}"


def files_in(d):
    return sorted(os.listdir(d))


def same_as_full(label, master, full, env=None):
    ok = True
    for r in ([], ["0", "5", "0", "8"], ["0", "2", "2", "6"], ["2", "5", "0", "4"], ["4", "5", "6", "8"]):
        a, b = digest(full, *r), digest(master, *r, env=env)
        ok &= a == b
        if a != b:
            print(f"     {r}: {b} vs the one file's {a}")
    return expect(ok, f"{label}: every layer and expert range loads as from the one file (digest, bytes read)")


def test_link(d, full):
    parts = os.path.join(d, "ckpt")
    os.mkdir(parts)
    p = [mkckpt(os.path.join(parts, name), "--part", rng) for name, rng in
         (("p0.h5", "0-1"), ("p1.h5", "2-2"), ("p2.h5", "3-4"))]
    master = os.path.join(parts, "grok1.h5")
    rc, so, err = link(master, p[2], p[0], p[1])  # any order
    expect(rc == 0 and "layers 3-4 in p2.h5" in so and "embedding and final norm in p0.h5" in so,
           f"links 3 parts given in any order: rc {rc} {so.strip()} {err.strip()}")
    expect(os.path.getsize(master) < 64 * 1024, f"OUT is small: {os.path.getsize(master)} bytes")
    expect(files_in(parts) == ["grok1.h5", "p0.h5", "p1.h5", "p2.h5"], f"no stray files: {files_in(parts)}")
    same_as_full("linked", master, full)

    # the links, as h5py sees them: relative names, every dataset equal
    with h5py.File(master, "r") as f, h5py.File(full, "r") as g:
        kinds = {k: f["layers"].get(k, getlink=True) for k in f["layers"]}
        expect(all(isinstance(v, h5py.ExternalLink) for v in kinds.values()) and
               kinds["02"].filename == "p1.h5" and kinds["02"].path == "/layers/02",
               f"layers/NN are external links by relative name: {kinds['02'].filename}")
        fp = f.attrs.get("part_norms_fnv1a64")
        expect(set(f.attrs) - set(g.attrs) == {"part_norms_fnv1a64"} and
               all(np.array_equal(f.attrs[k], g.attrs[k]) for k in g.attrs),
               "root attributes: the one file's, and the parts' fingerprints")
        expect(fp is not None and fp.dtype == np.uint64 and fp.shape == (6,), "fingerprints: 5 layers + final norm")
        bad = []
        g.visititems(lambda n, o: bad.append(n) if isinstance(o, h5py.Dataset) and
                     not np.array_equal(o[()], f[n][()]) else None)
        expect(bad == [], f"h5py reads every dataset through the links, equal to the one file: {bad[:3]}")

    if RUN:
        req = os.path.join(d, "req.jsonl")
        with open(req, "w") as f:
            f.write(json.dumps({"id": 1, "prompt_ids": [5, 6, 7, 8, 9, 10]}) + "\n")
            f.write(json.dumps({"id": 2, "prompt_ids": [300, 2, 41]}) + "\n")
        outs = []
        for ck in (full, master):
            out, dump = os.path.join(d, "s.jsonl"), os.path.join(d, "s.h5")
            rc, _, err = run([RUN, "--checkpoint", ck, "--mode", "score", "--input", req, "--output", out,
                              "--dump-logits", dump])
            expect(rc == 0, f"grok1-run scores from {os.path.basename(ck)}: {err.strip()[-300:]}")
            with h5py.File(dump, "r") as f:
                outs.append((open(out).read(), [f["logits"][k][()].tobytes() for k in sorted(f["logits"])]))
        expect(outs[0] == outs[1], "grok1-run: results and logits bitwise equal from the parts and the one file")
    else:
        print("skip grok1-run (not built)")

    # the folder moves as a whole: relative links still resolve
    moved = os.path.join(d, "moved")
    shutil.move(parts, moved)
    master = os.path.join(moved, "grok1.h5")
    same_as_full("folder moved", master, full)

    # node-local copies: the master on the shared disk, the parts in another
    # folder named by HDF5_EXT_PREFIX (a list; the first that has the file wins)
    local = os.path.join(d, "local")
    os.mkdir(local)
    for name in ("p0.h5", "p1.h5", "p2.h5"):
        shutil.move(os.path.join(moved, name), os.path.join(local, name))
    rc, _, err = run([CHECKER, master])
    msg = err.strip()
    expect(rc == 1 and "part file p0.h5" in msg and "HDF5_EXT_PREFIX (not set)" in msg and master in msg and
           "HDF5-DIAG" not in err, f"a part not found: named with where HDF5 looked: {msg}")
    same_as_full("parts found through HDF5_EXT_PREFIX", master, full,
                 env={"HDF5_EXT_PREFIX": os.path.join(d, "nowhere") + ":" + local})

    # a rank loads only what it owns: the other parts may be absent
    os.remove(os.path.join(local, "p2.h5"))
    env = {"HDF5_EXT_PREFIX": local}
    expect(digest(master, "0", "3", "0", "8", env=env) == digest(full, "0", "3", "0", "8"),
           "layers 0-2 load with the part of layers 3-4 absent")
    rc, _, err = run([CHECKER, master, "2", "5", "0", "8"], env=env)
    expect(rc == 1 and "layers/03 is in part file p2.h5" in err and local in err,
           f"loading layers 2-4 names the absent part and HDF5_EXT_PREFIX: {err.strip()}")

    # parts outside OUT's folder: linked by absolute name
    other = os.path.join(d, "other")
    os.mkdir(other)
    m2 = os.path.join(other, "m.h5")
    mkckpt(os.path.join(local, "p2.h5"), "--part", "3-4")
    rc, so, err = link(m2, *[os.path.join(local, n) for n in ("p0.h5", "p1.h5", "p2.h5")])
    expect(rc == 0 and os.path.join(local, "p0.h5") in so, f"parts elsewhere: absolute names: {so.strip()} {err}")
    same_as_full("absolute links", m2, full)
    return local


def refused(label, args, needles, d, out, rc_want=1):
    before = files_in(d)
    rc, so, err = link(*args)
    msg = err.strip()
    ok = rc == rc_want and all(n in msg for n in needles) and "HDF5-DIAG" not in err
    ok &= files_in(d) == before and (out is None or not os.path.exists(out) or out in before)
    expect(ok, f"{label}: rc {rc}, {msg!r} (want {rc_want}, {needles}, nothing written)")


def test_refusals(d, local):
    w = os.path.join(d, "ref")
    os.mkdir(w)
    P = lambda n: os.path.join(local, n)  # noqa: E731
    out = os.path.join(w, "m.h5")
    mk = lambda name, rng, *x, seed=7: mkckpt(os.path.join(w, name), "--part", rng, *x, seed=seed)  # noqa: E731
    a02 = mk("a02.h5", "0-2")
    b24 = mk("b24.h5", "2-4")
    refused("a layer in two parts", [out, a02, b24], ["layer 02", "a02.h5", "b24.h5"], w, out)
    refused("a layer in no part", [out, P("p0.h5"), P("p2.h5")], ["no part holds layer 2 ", "0-4"], w, out)
    refused("layers missing", [out, P("p1.h5")], ["no part holds layers 0-1, 3-4"], w, out)
    other = mk("seed8.h5", "3-4", seed=8)
    refused("another model's part (seed)", [out, P("p0.h5"), P("p1.h5"), other], ["different", "seed8.h5"], w, out)
    wide = mkckpt(os.path.join(w, "wide.h5"), "--part", "3-4", "--set", "ffn_size=40")
    refused("other hyper-parameters", [out, P("p0.h5"), P("p1.h5"), wide], ["ffn_size = 40", "96", "wide.h5"],
            w, out)
    m = os.path.join(d, "moved", "grok1.h5")
    refused("a linked checkpoint as a part", [out, m], ["is a link", "grok1.h5"], w, out)
    refused("a missing part", [out, P("p0.h5"), os.path.join(w, "nope.h5")], ["nope.h5"], w, out)
    junk = os.path.join(w, "junk.h5")
    with open(junk, "w") as f:
        f.write("not hdf5\n")
    refused("not HDF5", [out, junk], ["junk.h5", "not an HDF5 file"], w, out)
    refused("OUT's folder missing", [os.path.join(w, "no", "m.h5"), P("p0.h5")], ["no/m.h5"], w, None)
    refused("no part", [out], ["expected OUT.h5"], w, out, rc_want=2)
    refused("unknown option", ["--bogus", out, P("p0.h5")], ["--bogus"], w, out, rc_want=2)
    rc, so, _ = link("--help")
    expect(rc == 0 and "HDF5_EXT_PREFIX" in so, "--help")

    # OUT exists: refused without --force; --force replaces it but never a part
    with open(out, "w") as f:
        f.write("precious\n")
    parts = [P("p0.h5"), P("p1.h5"), P("p2.h5")]
    refused("OUT exists", [out] + parts, ["exists", "--force"], w, None)
    expect(open(out).read() == "precious\n", "OUT left as it was")
    rc, _, err = link("--force", out, *parts)
    expect(rc == 0 and h5py.is_hdf5(out), f"--force replaces OUT: {err.strip()}")
    size = os.path.getsize(P("p0.h5"))
    refused("OUT is a part", ["--force", P("p0.h5")] + parts, ["also a part"], w, None)
    expect(os.path.getsize(P("p0.h5")) == size, "the part is untouched")

    # grok1-mkckpt --part: usage
    for args, needle in ((["--part", "3-1"], "--part"), (["--part", "x"], "--part"), (["--part", "0-5"], "0-4"),
                         (["--no-embedding"], "--part A-B too")):
        rc, _, err = run([MKCKPT, *MODEL, "--seed", "7", "--out", os.path.join(w, "x.h5"), *args])
        expect(rc == 2 and needle in err and not os.path.exists(os.path.join(w, "x.h5")),
               f"mkckpt {args}: rc {rc} {err.strip()!r}")
    with h5py.File(b24, "r") as f:
        expect(sorted(f["layers"]) == ["02", "03", "04"] and int(f.attrs["num_layers"]) == 5,
               "--part 2-4 holds layers 02-04 and keeps num_layers 5")


def test_no_embedding(d, full):
    """Parts without the embedding (--no-embedding): it comes from the part
    with layer 0, or else from the part that has it; none is refused."""
    w = os.path.join(d, "noemb")
    os.mkdir(w)
    P = lambda n: os.path.join(w, n)  # noqa: E731
    mkckpt(P("a.h5"), "--part", "0-1")
    mkckpt(P("b.h5"), "--part", "2-4", "--no-embedding")
    with h5py.File(P("b.h5"), "r") as f:
        expect("embedding" not in f and "final_norm" in f, "--no-embedding: no embedding, the final norm stays")
    expect(os.path.getsize(P("b.h5")) < os.path.getsize(full) - 512 * 64 * 4, "--no-embedding: the part is smaller")
    if RUN:  # given alone as the model: named as a part
        req = P("req.jsonl")
        with open(req, "w") as f:
            f.write(json.dumps({"id": 1, "prompt_ids": [5, 6]}) + "\n")
        rc, _, err = run([RUN, "--checkpoint", P("b.h5"), "--mode", "score", "--input", req, "--output", P("o.jsonl")])
        expect(rc == 1 and "has no embedding: is it one part" in err and "grok1-link" in err and
               not os.path.exists(P("o.jsonl")), f"grok1-run on a part without the embedding: {err.strip()}")
    rc, so, err = link(P("m.h5"), P("b.h5"), P("a.h5"))
    expect(rc == 0 and "embedding and final norm in a.h5" in so, f"embedding from the part with layer 0: {so} {err}")
    same_as_full("a part without the embedding", P("m.h5"), full)
    mkckpt(P("a2.h5"), "--part", "0-1", "--no-embedding")
    mkckpt(P("b2.h5"), "--part", "2-4")
    rc, so, err = link(P("m2.h5"), P("a2.h5"), P("b2.h5"))
    expect(rc == 0 and "embedding and final norm in b2.h5" in so, f"embedding from the part that has it: {so} {err}")
    same_as_full("the embedding from the part of layers 2-4", P("m2.h5"), full)
    refused("no part has the embedding", [P("m3.h5"), P("a2.h5"), P("b.h5")], ["no part has the embedding"], w,
            P("m3.h5"))
    other = mkckpt(P("seed9.h5"), "--part", "2-4", "--no-embedding", seed=9)
    refused("another model's part without embedding", [P("m3.h5"), P("a.h5"), other], ["final norms", "seed9.h5"],
            w, P("m3.h5"))


def test_wrong_parts(d, full):
    """A file of a part's name that is not that part (another model's, one
    made again, one found in the current directory or through
    HDF5_EXT_PREFIX) is refused at load, naming the file; a part that is a
    symbolic link in OUT's folder is linked by its own name."""
    w = os.path.join(d, "wrong")
    ck, store, cwd, pre = (os.path.join(w, x) for x in ("ck", "store", "cwd", "prefix"))
    for x in (ck, store, cwd, pre):
        os.makedirs(x)
    # parts: p0 a symbolic link into store/, p1 a file
    mkckpt(os.path.join(store, "p0.h5"), "--part", "0-1")
    os.symlink(os.path.join(store, "p0.h5"), os.path.join(ck, "p0.h5"))
    mkckpt(os.path.join(ck, "p1.h5"), "--part", "2-4", "--no-embedding")
    m = os.path.join(ck, "m.h5")
    rc, so, err = link(m, os.path.join(ck, "p0.h5"), os.path.join(ck, "p1.h5"))
    expect(rc == 0 and "layers 0-1 in p0.h5" in so, f"a symbolic link in OUT's folder is linked by its name: {so}")
    same_as_full("a part through a symbolic link", m, full)
    # local copies through HDF5_EXT_PREFIX win over the symbolic link
    shutil.copy(os.path.join(store, "p0.h5"), os.path.join(pre, "p0.h5"))
    os.remove(os.path.join(store, "p0.h5"))  # the link dangles: only the copy remains
    same_as_full("the symbolically linked part's local copy", m, full, env={"HDF5_EXT_PREFIX": pre})

    def refused_load(label, needles, *ranges, env=None, cwd=None):
        rc, _, err = run([CHECKER, m, *ranges], env=env, cwd=cwd)
        ok = rc == 1 and all(n in err for n in needles) and "HDF5-DIAG" not in err
        expect(ok, f"{label}: rc {rc}: {err.strip()}")

    # another model's p0 through HDF5_EXT_PREFIX: its layers and final norm differ
    mkckpt(os.path.join(pre, "p0.h5"), "--part", "0-1", seed=8)
    refused_load("another model's part through HDF5_EXT_PREFIX (a layer)",
                 ["layers/00 was read from " + os.path.join(pre, "p0.h5"), "not the part grok1-link linked"],
                 "0", "2", "0", "8", env={"HDF5_EXT_PREFIX": pre})
    refused_load("another model's part through HDF5_EXT_PREFIX (the final norm)",
                 ["the final norm was read from", "not the part grok1-link linked"], env={"HDF5_EXT_PREFIX": pre})
    # a p1.h5 in the current directory, the real one gone
    os.rename(os.path.join(ck, "p1.h5"), os.path.join(w, "p1.away"))
    mkckpt(os.path.join(cwd, "p1.h5"), "--part", "2-4", "--no-embedding", seed=9)
    refused_load("another model's part in the current directory", ["not the part grok1-link linked", "p1.h5"],
                 "2", "5", "0", "8", cwd=cwd)
    # p1 made again with other layers: the file opens, the layer is not in it
    mkckpt(os.path.join(ck, "p1.h5"), "--part", "3-4", "--no-embedding")
    refused_load("a part made again without the linked layer",
                 ["layers/02 is linked to /layers/02 in part file p1.h5", "not the part grok1-link linked"],
                 "2", "5", "0", "8")
    os.replace(os.path.join(w, "p1.away"), os.path.join(ck, "p1.h5"))
    expect(digest(m, "2", "5", "0", "8") == digest(full, "2", "5", "0", "8"), "the right part back: loads again")


def main():
    with tempfile.TemporaryDirectory() as d:
        full = mkckpt(os.path.join(d, "full.h5"))
        local = test_link(d, full)
        test_refusals(d, local)
        test_no_embedding(d, full)
        test_wrong_parts(d, full)
    return expect.result()


if __name__ == "__main__":
    sys.exit(main())
