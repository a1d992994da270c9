#!/usr/bin/python3
"""grok1-convert tests on fixtures laid out like the release (make_release.py).

Cases (one per meson test): sizes (several shapes, every tensor exact, --verify),
logits (the converted model through grok1-run against the NumPy reference),
layers (--layers 3-7 of a 20-layer fixture; grok1-run refuses it; with
0-2 and 8-19, each converted from its own files, grok1-link joins them), hostile
(broken and malicious inputs: clear message, non-zero exit, no output file),
usage, peak_memory (a fixture far larger than a memory cap converts under it), nomem (each
allocation site failed in turn, by the cli suite's shim).
Exit 0 pass, 1 fail, 77 skip.

usage: test_convert.py CASE --convert grok1-convert --tmp DIR [--run grok1-run] [--link grok1-link]
                      [--nomem-shim g1-test-nomem.so]
"""
import argparse
import glob
import json
import os
import shutil
import stat
import subprocess
import sys
import zlib

try:
    import numpy as np
    import h5py
except ImportError as e:  # pragma: no cover
    print("SKIP: %s (the converter tests need numpy and h5py)" % e)
    sys.exit(77)

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "ref"))
sys.path.insert(0, os.path.join(HERE, ".."))
import make_release as mr  # noqa: E402
from g1testlib import Checks  # noqa: E402

TINY = dict(vocab_size=512, emb_size=64, num_layers=12, num_q_heads=4, num_kv_heads=2, key_size=16,
            ffn_size=96, num_experts=8, max_seq_len=256, attn_output_multiplier=0.25)
# another shape: 4 experts, wider model, 11 layers
WIDE = dict(vocab_size=256, emb_size=128, num_layers=11, num_q_heads=8, num_kv_heads=2, key_size=16,
            ffn_size=256, num_experts=4, max_seq_len=128, attn_output_multiplier=0.25)
# the memory test: about 300 MB of files, experts of 1 MB each
BIG = dict(vocab_size=1024, emb_size=512, num_layers=12, num_q_heads=8, num_kv_heads=2, key_size=64,
           ffn_size=2048, num_experts=8, max_seq_len=128, attn_output_multiplier=0.125)
MEM_CAP_MB = 64


def fixture(args, name, overrides, seed):
    """(dir, config path, full config): a release-like directory, made once."""
    d = os.path.join(args.tmp, "fx_" + name)
    cfg_path = d + ".json"
    with open(cfg_path, "w") as f:
        json.dump(overrides, f)
    if not os.path.exists(os.path.join(d, "done")):
        shutil.rmtree(d, ignore_errors=True)
        subprocess.run([sys.executable, os.path.join(HERE, "make_release.py"), "--config", cfg_path,
                        "--seed", str(seed), "--out", d], check=True)
        open(os.path.join(d, "done"), "w").close()  # not a tensor file: ignored by the converter
    return d, cfg_path, mr.config(overrides)


def convert(args, *argv, timeout=300, fresh=True):
    """grok1-convert ARGV; fresh: remove the output (the last argument)
    first, as grok1-convert refuses an existing one without --force."""
    if fresh and argv and str(argv[-1]).endswith(".h5") and os.path.isfile(str(argv[-1])):
        os.remove(str(argv[-1]))
    cmd = [args.convert] + [str(a) for a in argv]
    print("run  %s" % " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p


def compare_h5(check, h5, c, seed, layers):
    """Every tensor of the fixture equals the HDF5 dataset exactly."""
    bad = []
    with h5py.File(h5, "r") as f:
        for k in mr.GROK1:
            v = f.attrs[k]
            if float(v) != float(c[k]):
                bad.append("attribute %s = %r, expected %r" % (k, v, c[k]))
        names = set()
        f.visititems(lambda n, o: names.add(n) if isinstance(o, h5py.Dataset) else None)
        want = {"embedding", "final_norm"}
        for idx, path, v in mr.tensors(c, seed):
            if path.startswith("layers/") and int(path.split("/")[1]) not in layers:
                continue
            want.add(path)
            if isinstance(v, tuple):
                want.add(path + "_scale")
                w, s = f[path][()], f[path + "_scale"][()]
                s_ref = (v[1].astype(np.uint32) << 16).view(np.float32)
                if w.dtype != np.int8 or w.shape != v[0].shape or not np.array_equal(w, v[0]):
                    bad.append("%s differs from file %05d" % (path, idx))
                if s.dtype != np.float32 or s.shape != s_ref.shape or \
                        not np.array_equal(s.view(np.uint32), s_ref.view(np.uint32)):
                    bad.append("%s_scale differs from file %05d's bf16 scales" % (path, idx))
            else:
                got = f[path][()]
                if got.dtype != np.float32 or got.shape != v.shape or \
                        not np.array_equal(got.view(np.uint32), v.view(np.uint32)):
                    bad.append("%s differs from file %05d" % (path, idx))
        extra = names - want
        # each dataset's checksums: zlib's CRC-32 of it (of each expert)
        for n in sorted(names):
            d = f[n]
            a = d[()]
            a = a.astype("<f4") if a.dtype.kind == "f" else a
            crcs = [zlib.crc32(np.ascontiguousarray(x).tobytes()) for x in (a if d.ndim == 3 else [a])]
            if list(d.attrs.get("crc32", [])) != crcs:
                bad.append("%s: crc32 %s, its data gives %s" % (n, list(d.attrs.get("crc32", [])), crcs))
    check(not bad, "every tensor equals the fixture exactly, with its checksums%s"
          % ("" if not bad else ": " + "; ".join(bad[:5])))
    check(not extra, "no datasets beyond the converted ones%s" % ("" if not extra else ": %s" % sorted(extra)[:5]))


def h5_content(path):
    """Every dataset's bytes and every attribute of an HDF5 file (its bytes
    differ between runs by the objects' times), or None when it is not one."""
    try:
        with h5py.File(path, "r") as f:
            out = {"/": sorted((k, repr(v)) for k, v in f.attrs.items())}
            f.visititems(lambda n, o: out.__setitem__(n, (o[()].tobytes(), sorted(
                (k, repr(v)) for k, v in o.attrs.items()))) if isinstance(o, h5py.Dataset) else None)
            return out
    except (OSError, KeyError):
        return None


# ---------------------------------------------------------------------------- cases

def case_sizes(args, check):
    for name, ov, seed in (("tiny", TINY, 1), ("wide", WIDE, 2)):
        d, cfg_path, c = fixture(args, name, ov, seed)
        out = os.path.join(args.tmp, "sizes_%s.h5" % name)
        p = convert(args, "--config", cfg_path, "--verify", d, out)
        sys.stdout.write(p.stdout + p.stderr)
        if not check(p.returncode == 0 and os.path.exists(out), "%s: converted with --verify" % name):
            continue
        check("verified" in p.stdout and "peak memory" in p.stdout, "%s: summary line says verified" % name)
        compare_h5(check, out, c, seed, range(c["num_layers"]))
        check(not glob.glob(out + ".*"), "%s: no temporary files left" % name)


def case_logits(args, check):
    import grok1_ref as ref
    from g1test import compare, describe, read_dump, write_requests
    if not args.run:
        print("SKIP: no grok1-run")
        sys.exit(77)
    d, cfg_path, c = fixture(args, "tiny", TINY, 1)
    out = os.path.join(args.tmp, "logits.h5")
    p = convert(args, "--config", cfg_path, d, out)
    if not check(p.returncode == 0, "converted (%s)" % p.stderr.strip()[-300:]):
        return
    rng = np.random.default_rng(3)
    reqs = [{"id": i, "prompt_ids": [int(t) for t in rng.integers(1, c["vocab_size"], n)]}
            for i, n in enumerate((17, 24))]
    rq, res, dump = (os.path.join(args.tmp, "logits_" + s) for s in ("req.jsonl", "out.jsonl", "dump.h5"))
    write_requests(rq, reqs)
    for f in (res, dump):
        if os.path.exists(f):
            os.remove(f)
    cmd = [args.run, "--checkpoint", out, "--mode", "score", "--input", rq, "--output", res, "--dump-logits", dump]
    print("run  %s" % " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if not check(r.returncode == 0, "grok1-run scores the converted model (%s)" % r.stderr.strip()[-300:]):
        return
    model = ref.load(out)
    worst = 0.0
    for rqst, got in zip(reqs, read_dump(dump, len(reqs))):
        want = ref.forward(model, rqst["prompt_ids"])
        cm = compare(got, want)
        worst = max(worst, cm["max_abs"])
        check(got.shape == want.shape and cm["nfail"] == 0,
              "request %d: logits match the NumPy reference: %s" % (rqst["id"], describe(cm, got, want)))
    print("max abs logit error against the reference: %.3e" % worst)


def case_layers(args, check):
    d, cfg_path, c = fixture(args, "deep20", dict(TINY, num_layers=20), 4)
    out = os.path.join(args.tmp, "layers_3_7.h5")
    p = convert(args, "--config", cfg_path, "--layers", "3-7", "--verify", d, out)
    sys.stdout.write(p.stdout + p.stderr)
    if not check(p.returncode == 0, "--layers 3-7 converts"):
        return
    with h5py.File(out, "r") as f:
        got = sorted(f["layers"].keys())
        check(got == ["03", "04", "05", "06", "07"], "file holds exactly layers 03..07 (has %s)" % got)
        check(int(f.attrs["num_layers"]) == 20, "num_layers is still the model's 20")
    compare_h5(check, out, c, 4, range(3, 8))
    if args.run:
        rq = os.path.join(args.tmp, "layers_req.jsonl")
        with open(rq, "w") as f:
            f.write('{"id": 0, "prompt_ids": [5, 6, 7]}\n')
        res = os.path.join(args.tmp, "layers_out.jsonl")
        r = subprocess.run([args.run, "--checkpoint", out, "--mode", "score", "--input", rq, "--output", res],
                           capture_output=True, text=True, timeout=120)
        print("grok1-run said: %s" % r.stderr.strip()[-400:])
        check(r.returncode != 0 and "--layers" in r.stderr and "grok1-link" in r.stderr,
              "grok1-run refuses it as a full model, naming --layers and grok1-link")
    if not args.link:
        return
    # the other layers in two more parts, each converted from only its files;
    # grok1-link joins the three: every tensor through the links, and grok1-run
    parts = [out]
    # (8-19 without the embedding: not even file 0 is there)
    for rng, extra in (("0-2", []), ("8-19", ["--no-embedding", "--verify"])):
        part = os.path.join(args.tmp, "layers_%s.h5" % rng.replace("-", "_"))
        only = os.path.join(args.tmp, "fx_deep20_" + rng)
        a, b = (int(x) for x in rng.split("-"))
        shutil.rmtree(only, ignore_errors=True)
        os.makedirs(only)
        lex = sorted(range(20), key=str)  # the release numbers its files by layers in this order
        for i in ([] if extra else [0]) + [1] + [2 + 12 * lex.index(l) + j for l in range(a, b + 1) for j in range(12)]:
            os.symlink(os.path.join(d, "tensor%05d_000" % i), os.path.join(only, "tensor%05d_000" % i))
        p = convert(args, "--config", cfg_path, "--layers", rng, *extra, only, part)
        check(p.returncode == 0, "--layers %s %s converts from its own files only (%s)"
              % (rng, " ".join(extra), p.stderr.strip()[-200:]))
        parts.append(part)
    with h5py.File(parts[-1], "r") as f:
        check("embedding" not in f and "final_norm" in f, "--no-embedding: no embedding, the final norm stays")
    linked = os.path.join(args.tmp, "layers_linked.h5")
    if os.path.exists(linked):
        os.remove(linked)
    cmd = [args.link, linked] + parts
    print("run  %s" % " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    print(p.stdout.strip(), p.stderr.strip())
    if not check(p.returncode == 0, "grok1-link joins the three parts"):
        return
    compare_h5(check, linked, c, 4, range(20))
    if args.run:
        r = subprocess.run([args.run, "--checkpoint", linked, "--mode", "score", "--input", rq, "--output", res],
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, "grok1-run scores the joined parts (%s)" % r.stderr.strip()[-300:])


def _short_str(s):
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


class _BadPayload:
    """An array whose declared shape disagrees with its payload size."""

    def __init__(self, shape, nbytes):
        self.shape, self.nbytes = shape, nbytes

    def __reduce__(self):
        from numpy.core.multiarray import _reconstruct
        return (_reconstruct, (np.ndarray, (0,), b"b"),
                (1, self.shape, np.dtype("f4"), False, b"\0" * self.nbytes))


def hostile_cases(c, marker):
    """(name, mutate(dir, cfg_path) -> None, expected words in the message)."""
    D = c["emb_size"]
    n_files = 2 + 12 * c["num_layers"]
    norm = "tensor%05d_000" % (2 + 7)     # layer 0, rms_norm
    expert = "tensor%05d_000" % (2 + 12)  # layer 1, moe/linear
    os_system = (b"\x80\x04cos\nsystem\n(" + _short_str("touch " + marker) + b"tR.")
    eval_ = (b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00" + _short_str("builtins") + _short_str("eval") +
             b"\x93" + _short_str("__import__('os').system('touch %s')" % marker) + b"\x85R.")
    np_load = b"\x80\x04" + _short_str("numpy") + _short_str("load") + b"\x93" + _short_str("x") + b"\x85R."
    call_ndarray = b"\x80\x04" + _short_str("numpy") + _short_str("ndarray") + b"\x93)R."

    def put(name, data):
        def f(d, _):
            with open(os.path.join(d, name), "wb") as fh:
                fh.write(data)
        return f

    def truncate(name, keep):
        def f(d, _):
            p = os.path.join(d, name)
            os.truncate(p, keep(os.path.getsize(p)))
        return f

    import pickle
    return [
        ("truncated_payload", truncate(expert, lambda n: n // 2), ["truncated", expert]),
        ("truncated_tail", truncate(norm, lambda n: n - 1), ["truncated", norm]),
        ("wrong_payload_size", put(norm, pickle.dumps(_BadPayload((D,), 4 * D - 4), protocol=4)),
         ["payload of", "bytes", norm]),
        ("wrong_shape", put(norm, pickle.dumps(np.ones(D + 1, dtype=np.float32), protocol=4)),
         ["shape", "expected", norm]),
        ("wrong_dtype", put(norm, pickle.dumps(np.ones(D, dtype=np.float64), protocol=4)), ["dtype", norm]),
        ("missing_file", lambda d, _: os.remove(os.path.join(d, expert)), ["missing", expert]),
        ("extra_file", put("tensor%05d_000" % n_files, b"\x80\x04N."), ["extra file"]),
        ("odd_name", put("tensor00003_001", b""), ["unexpected file name"]),
        ("wrong_config_shapes", lambda d, cp: json.dump(dict(TINY, emb_size=32, num_q_heads=2, num_kv_heads=1),
                                                        open(cp, "w")), ["wrong --config"]),
        ("wrong_config_layers", lambda d, cp: json.dump(dict(TINY, num_layers=11), open(cp, "w")),
         ["extra file", "wrong --config"]),
        ("os_system", put(norm, os_system), ["os.system", "never uses"]),
        ("builtins_eval", put(norm, eval_), ["builtins.eval"]),
        ("numpy_load", put(norm, np_load), ["numpy.load"]),
        ("reduce_ndarray", put(norm, call_ndarray), ["REDUCE"]),
        ("garbage", put(norm, bytes(np.random.default_rng(9).integers(0, 256, 4096, dtype=np.uint8))),
         [norm]),
        ("garbage_after_proto", put(norm, b"\x80\x04" + bytes(range(256)) * 4), [norm]),
        ("trailing_bytes", lambda d, _: open(os.path.join(d, norm), "ab").write(b"\0" * 8),
         ["after the end of the pickle"]),
        ("swapped_files", lambda d, _: (os.rename(os.path.join(d, norm), os.path.join(d, "x")),
                                        os.rename(os.path.join(d, expert), os.path.join(d, norm)),
                                        os.rename(os.path.join(d, "x"), os.path.join(d, expert))),
         ["QuantizedWeight8bit"]),
        ("not_a_directory", lambda d, _: shutil.rmtree(d), ["cannot open the checkpoint directory"]),
    ]


def case_hostile(args, check):
    src, _, c = fixture(args, "tiny", TINY, 1)
    marker = os.path.join(args.tmp, "PWNED")
    for name, mutate, words in hostile_cases(c, marker):
        d = os.path.join(args.tmp, "hostile_" + name)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(src, d)
        cp = d + ".json"
        json.dump(TINY, open(cp, "w"))
        mutate(d, cp)
        outdir = os.path.join(args.tmp, "hostile_out_" + name)
        shutil.rmtree(outdir, ignore_errors=True)
        os.makedirs(outdir)
        out = os.path.join(outdir, "model.h5")
        p = convert(args, "--config", cp, "--verify", d, out)
        msg = p.stderr.strip()
        print("     said: %s" % msg.replace("\n", " | ")[:400])
        check(p.returncode == 1, "%s: exit status 1 (got %d)" % (name, p.returncode))
        check(all(w in msg for w in words), "%s: message names %s" % (name, words))
        check(os.listdir(outdir) == [], "%s: nothing left in the output directory (%s)" % (name, os.listdir(outdir)))
        shutil.rmtree(d, ignore_errors=True)
    check(not os.path.exists(marker), "no pickle code ran (marker file absent)")


def case_usage(args, check):
    d, cfg_path, _ = fixture(args, "tiny", TINY, 1)
    out = os.path.join(args.tmp, "usage.h5")
    for argv, word in ((["--layers", "7-3", d, out], "--layers"), (["--layers", "x", d, out], "--layers"),
                       (["--config", cfg_path, "--layers", "5-12", d, out], "layers 0-11"),
                       (["--bogus", "1", d, out], "unknown option"), ([d], "expected CKPT_DIR"),
                       (["--no-embedding", d, out], "--layers A-B too"),
                       (["--config", "nope", d, out], "not a preset"),
                       (["--config", os.path.join(args.tmp, "missing.json"), d, out], "config")):
        p = convert(args, *argv)
        check(p.returncode == 2 and word in p.stderr, "%s: exit 2, message has %r (%s)"
              % (" ".join(argv[:-2] or argv), word, p.stderr.strip()[:200]))
    for argv, word in ((["--config", cfg_path, "--config", "tiny", d, out], "--config is given twice"),
                       (["--layers", "0-1", "--layers", "2-3", d, out], "--layers is given twice")):
        p = convert(args, *argv)
        check(p.returncode == 2 and word in p.stderr, "%s: exit 2 (%s)" % (word, p.stderr.strip()[:200]))
    p = convert(args, "--help")
    check(p.returncode == 0 and "CKPT_DIR" in p.stdout, "--help")
    check(not os.path.exists(out), "no output from usage errors")
    # an existing OUT.h5 is refused before any work unless --force, which
    # replaces it with the complete new file
    with open(out, "wb") as f:
        f.write(b"an earlier checkpoint")
    p = convert(args, "--config", cfg_path, d, out, fresh=False)
    check(p.returncode == 1 and "exists: give --force" in p.stderr and
          open(out, "rb").read() == b"an earlier checkpoint",
          "an existing OUT.h5 without --force: refused, left as it was (%s)" % p.stderr.strip()[:200])
    p = convert(args, "--config", cfg_path, "--force", d, out, fresh=False)
    check(p.returncode == 0 and open(out, "rb").read(8) == b"\x89HDF\r\n\x1a\n",
          "--force replaces an existing OUT.h5 (%s)" % p.stderr.strip()[:200])
    os.remove(out)
    # a directory at OUT.h5: refused before any work, --force or not
    os.mkdir(out)
    for extra in ([], ["--force"]):
        p = convert(args, "--config", cfg_path, *extra, d, out, fresh=False)
        check(p.returncode == 2 and "is a directory" in p.stderr and not glob.glob(out + ".*"),
              "a directory at OUT.h5 %s: refused at once (%s)" % (" ".join(extra), p.stderr.strip()[:200]))
    os.rmdir(out)


def case_outputs(args, check):
    """OUT.h5 that is not a plain file name: a FIFO, a directory, a
    character device (a /dev/null node, as root) or a link to one is refused
    before any work, exit 2, and left as it was (the checkpoint was renamed
    over the device or FIFO, exit 0); a symbolic link to a file, or a
    dangling one, is written through, with and without --verify (the link
    was replaced by a regular file); OUT naming an input (the --config file,
    a release file of CKPT_DIR) is refused, the input kept (it was replaced
    by the checkpoint)."""
    d, cfg_path, _ = fixture(args, "tiny", TINY, 1)
    base = os.path.join(args.tmp, "outputs")
    shutil.rmtree(base, ignore_errors=True)
    os.mkdir(base)

    def kinds(sub):
        return sorted((f, stat.S_IFMT(os.lstat(os.path.join(sub, f)).st_mode)) for f in os.listdir(sub))
    makers = [("FIFO", os.mkfifo), ("directory", os.mkdir)]
    if os.geteuid() == 0:
        makers.append(("character device", lambda p: os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))))
    else:
        print("skip the character device (mknod needs root)")
    for what, make in makers:
        sub = os.path.join(base, what.split()[-1])
        os.mkdir(sub)
        make(os.path.join(sub, "out.h5"))
        os.symlink("out.h5", os.path.join(sub, "link.h5"))
        before = kinds(sub)
        for name in ("out.h5", "link.h5"):
            for extra in ([], ["--verify"]):
                p = convert(args, "--config", cfg_path, "--force", *extra, d, os.path.join(sub, name), fresh=False)
                check(p.returncode == 2 and "is a " + what in p.stderr and kinds(sub) == before,
                      "OUT %s, %s %s: refused at once, left as it was (%s)" % (name, what, " ".join(extra),
                                                                             p.stderr.strip()[:200]))
    for extra in ([], ["--verify"]):
        for dangling in (False, True):
            sub = os.path.join(base, "link%s%s" % ("-dangling" if dangling else "", "".join(extra)))
            os.mkdir(sub)
            target, link = os.path.join(sub, "target.h5"), os.path.join(sub, "link.h5")
            if not dangling:
                with open(target, "w") as f:
                    f.write("old")
            os.symlink("target.h5", link)
            p = convert(args, "--config", cfg_path, "--force", *extra, d, link, fresh=False)
            check(p.returncode == 0 and os.path.islink(link) and os.readlink(link) == "target.h5" and
                  open(target, "rb").read(8) == b"\x89HDF\r\n\x1a\n" and sorted(os.listdir(sub)) ==
                  ["link.h5", "target.h5"], "a %slink to a file %s: written through, the link kept (%s, %s)"
                  % ("dangling " if dangling else "", " ".join(extra), os.listdir(sub), p.stderr.strip()[-200:]))
    # the --config file, and a release file, as OUT.h5
    cfg_copy = os.path.join(base, "cfg.json")
    shutil.copy(cfg_path, cfg_copy)
    text = open(cfg_copy).read()
    p = convert(args, "--config", cfg_copy, "--force", d, cfg_copy, fresh=False)
    check(p.returncode == 2 and "one of the inputs" in p.stderr and open(cfg_copy).read() == text,
          "OUT.h5 = the --config file: refused, kept (%s)" % p.stderr.strip()[:200])
    rel = os.path.join(base, "release")
    shutil.copytree(d, rel)
    first = os.path.join(rel, "tensor00000_000")
    data = open(first, "rb").read()
    p = convert(args, "--config", cfg_path, "--force", rel, first, fresh=False)
    check(p.returncode == 2 and "one of the inputs" in p.stderr and open(first, "rb").read() == data,
          "OUT.h5 = a release file of CKPT_DIR: refused, kept (%s)" % p.stderr.strip()[:200])


def case_peak_memory(args, check):
    if os.environ.get("G1_SANITIZED"):
        # AddressSanitizer's shadow memory and quarantine are in the RSS
        print("SKIP: peak memory means nothing under a sanitizer (G1_SANITIZED is set)")
        sys.exit(77)
    d, cfg_path, c = fixture(args, "big", BIG, 5)
    total = sum(os.path.getsize(f) for f in glob.glob(os.path.join(d, "tensor*")))
    out = os.path.join(args.tmp, "big.h5")
    cmd = [args.convert, "--config", cfg_path, "--verify", d, out]
    print("run  %s" % " ".join(cmd), flush=True)
    with open(os.path.join(args.tmp, "big.log"), "w+") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        sys.stdout.write(log.read())
    peak_mb = ru.ru_maxrss / 1024.0
    print("fixture %.0f MB, cap %d MB, peak RSS %.1f MB (wait4)" % (total / 1e6, MEM_CAP_MB, peak_mb))
    check(p.returncode == 0, "big fixture converts with --verify")
    check(total / 1e6 > 4 * MEM_CAP_MB, "fixture (%.0f MB) is more than 4x the cap" % (total / 1e6))
    check(peak_mb < MEM_CAP_MB, "peak RSS %.1f MB < cap %d MB" % (peak_mb, MEM_CAP_MB))
    if os.path.exists(out):
        os.remove(out)


def case_nomem(args, check):
    """Memory exhausted (the LD_PRELOAD shim of the cli suite, nomem_shim.c):
    each place in grok1-convert that allocates fails in turn, the first
    time it is reached, in a conversion with --verify, one without, a part
    (--layers 3-5 --no-embedding) and --force --verify through a symbolic
    link to an older file. Each run must exit 1 with grok1-convert's message
    saying out of memory and leave nothing at OUT (the old file through the
    link as it was, no temporary file), or exit 0 with the clean run's file.
    Skipped without the shim and in sanitizer builds (their runtime owns
    malloc)."""
    if not args.nomem_shim:
        print("SKIP: the allocation shim was not built")
        sys.exit(77)
    if os.environ.get("G1_SANITIZED"):
        print("SKIP: a sanitizer build (G1_SANITIZED): its runtime owns malloc")
        sys.exit(77)
    d, cfg_path, _ = fixture(args, "tiny", TINY, 1)
    work = os.path.join(args.tmp, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.mkdir(work)
    ref = os.path.join(args.tmp, "ref.h5")
    p = convert(args, "--config", cfg_path, d, ref)
    if not check(p.returncode == 0, "the clean conversion (%s)" % p.stderr.strip()[-300:]):
        return
    ref_bytes = h5_content(ref)
    old = b"an earlier checkpoint"

    def env(**kw):
        return dict(os.environ, LD_PRELOAD=args.nomem_shim, G1_TEST_NOMEM_SITES="1", **kw)

    def reset(link):
        for n in os.listdir(work):
            os.remove(os.path.join(work, n))
        if link:
            with open(os.path.join(work, "target.h5"), "wb") as f:
                f.write(old)
            os.symlink("target.h5", os.path.join(work, "out.h5"))

    runs = 0
    for what, extra, link, layers in (("--verify", ["--verify"], False, None), ("plain", [], False, None),
                                      ("a part", ["--layers", "3-5", "--no-embedding"], False, (3, 4, 5)),
                                      ("--force --verify through a link", ["--force", "--verify"], True, None)):
        cmd = [args.convert, "--config", cfg_path] + extra + [d, os.path.join(work, "out.h5")]
        final = os.path.join(work, "target.h5" if link else "out.h5")
        cnt = os.path.join(args.tmp, "count")
        if os.path.exists(cnt):
            os.remove(cnt)
        reset(link)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env(G1_TEST_NOMEM_COUNT=cnt))
        if not check(p.returncode == 0 and os.path.exists(cnt), "%s: the run under the shim, nothing failed (%s)"
                     % (what, p.stderr.strip()[-300:])):
            continue
        with open(cnt) as f:
            n = int(f.read().split()[-1])
        # the part's content differs from the full file's: its clean run under the shim is the reference
        want = h5_content(final) if layers else ref_bytes
        bad = []
        for k in range(1, n + 1):
            reset(link)
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env(G1_TEST_NOMEM=str(k)))
            runs += 1
            err = p.stderr.strip()
            left = sorted(x for x in os.listdir(work) if x not in ("target.h5", "out.h5") or
                          (x == "out.h5" and not link))
            if p.returncode == 0:
                if h5_content(final) != want:
                    bad.append("site %d: exit 0, but the file differs from the clean run's" % k)
            elif p.returncode != 1 or "grok1-convert: " not in err or "out of memory" not in err:
                bad.append("site %d: exit %d, want 1 and grok1-convert's message of memory: %s"
                           % (k, p.returncode, err[-300:]))
            elif left:
                bad.append("site %d: exit 1, and it left %s" % (k, left))
            elif link and (not os.path.islink(os.path.join(work, "out.h5")) or open(final, "rb").read() != old):
                bad.append("site %d: exit 1, and the file the link names was changed" % k)
        for b in bad:
            print("FAIL %s: %s" % (what, b))
        check(not bad, "%s: %d allocation sites, each failed once: a message of memory and no output, or the "
              "clean run's file" % (what, n))
    print("%d runs with an allocation failed" % runs)


CASES = {"sizes": case_sizes, "logits": case_logits, "layers": case_layers, "hostile": case_hostile,
         "usage": case_usage, "outputs": case_outputs, "peak_memory": case_peak_memory,
         "nomem": case_nomem}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(CASES))
    ap.add_argument("--convert", required=True)
    ap.add_argument("--run")
    ap.add_argument("--link")
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--nomem-shim", type=os.path.abspath)
    args = ap.parse_args()
    args.tmp = os.path.join(os.path.abspath(args.tmp), "convert_" + args.case)
    os.makedirs(args.tmp, exist_ok=True)
    check = Checks()
    CASES[args.case](args, check)
    return check.result()


if __name__ == "__main__":
    sys.exit(main())
