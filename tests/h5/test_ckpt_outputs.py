#!/usr/bin/env python3
"""The HDF5 outputs of grok1-mkckpt (--out), grok1-link (OUT.h5) and
grok1-checksum --add (the file itself) against names that are not plain
files: an HDF5 file cannot be a stream, so a character device (a copy of
/dev/null made with mknod, as root), a FIFO or a directory, or a link to
one, is refused with exit 2 before any work and left as it was (it was
renamed over: the device or FIFO replaced by a regular file, exit 0; a
FIFO given to grok1-checksum --add hung). A symbolic link to a file, or a
dangling one, is written through: the file it names gets the checkpoint,
the link stays (it was replaced by a regular file). An output naming an
input (mkckpt's --config file) is refused.

usage: test_ckpt_outputs.py GROK1_MKCKPT GROK1_LINK GROK1_CHECKSUM
"""
import json
import os
import stat
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import Checks  # noqa: E402

MKCKPT, LINK, CHECKSUM = sys.argv[1:4]
expect = Checks()


def run(args):
    try:
        p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "timeout", "", ""
    return p.returncode, p.stdout, p.stderr


def is_hdf5(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def specials(d):
    """(case, make(path)) for the names an HDF5 output must refuse; the
    device ones only as root (mknod), with a message otherwise."""
    out = [("fifo", os.mkfifo), ("directory", os.mkdir)]

    def link_to_fifo(p):
        os.mkfifo(p + ".fifo")
        os.symlink(os.path.basename(p) + ".fifo", p)
    out.append(("link to a fifo", link_to_fifo))
    if os.geteuid() == 0:
        def chr_dev(p):
            os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))

        def link_to_chr(p):
            chr_dev(p + ".dev")
            os.symlink(os.path.basename(p) + ".dev", p)
        out += [("character device", chr_dev), ("link to a character device", link_to_chr)]
    else:
        print("skip: the character device cases need root (mknod)")
    return out


def kind(p):
    m = os.lstat(p).st_mode
    return ("link" if stat.S_ISLNK(m) else "fifo" if stat.S_ISFIFO(m) else "dir" if stat.S_ISDIR(m)
            else "chr" if stat.S_ISCHR(m) else "reg")


def check_special(tool, d, argv_of, n):
    """Each special name: exit 2 at once, a message saying what it is, left
    as it was, no temporary beside it."""
    for case, make in specials(d):
        sub = os.path.join(d, "%s_%d_%s" % (tool, n, case.replace(" ", "_")))
        os.mkdir(sub)
        p = os.path.join(sub, "out.h5")
        make(p)
        before = sorted((f, kind(os.path.join(sub, f))) for f in os.listdir(sub))
        rc, out, err = run(argv_of(p))
        after = sorted((f, kind(os.path.join(sub, f))) for f in os.listdir(sub))
        expect(rc == 2 and ("is a " in err or "symbolic link" in err) and before == after,
               f"{tool}: {case} as the output: exit 2, left as it was (rc {rc}, {err.strip()[:160]!r}, "
               f"{before} -> {after})")


def check_links(tool, d, argv_of, good):
    """A link to a file and a dangling link: the file it names is written, the link kept."""
    for case in ("link to a file", "dangling link"):
        sub = os.path.join(d, "%s_%s" % (tool, case.replace(" ", "_")))
        os.mkdir(sub)
        p, target = os.path.join(sub, "out.h5"), os.path.join(sub, "target.h5")
        if case == "link to a file":
            with open(target, "w") as f:
                f.write("old")
        os.symlink("target.h5", p)
        rc, out, err = run(argv_of(p))
        expect(rc == 0 and os.path.islink(p) and os.readlink(p) == "target.h5" and is_hdf5(target) and good(p)
               and sorted(os.listdir(sub)) == ["out.h5", "target.h5"],
               f"{tool}: a {case} as the output: written through, the link kept (rc {rc}, {err.strip()[:160]!r}, "
               f"{sorted(os.listdir(sub))})")


def main():
    with tempfile.TemporaryDirectory(prefix="g1-ckpt-out-") as d:
        p0, p1 = os.path.join(d, "p0.h5"), os.path.join(d, "p1.h5")
        for args in ([p0, "--part", "0-1"], [p1, "--part", "2-3", "--no-embedding"]):
            rc, _, err = run([MKCKPT, "--config", "tiny", "--seed", "3", "--out", *args])
            if rc != 0:
                print("mkckpt failed:", err)
                return 1
        checks_ok = lambda p: run([CHECKSUM, p])[0] == 0  # noqa: E731
        mk = lambda p: [MKCKPT, "--config", "tiny", "--seed", "3", "--out", p]  # noqa: E731
        check_special("grok1-mkckpt", d, mk, 0)
        check_links("grok1-mkckpt", d, mk, checks_ok)
        for n, extra in enumerate(([], ["--force"])):
            check_special("grok1-link", d, lambda p: [LINK, *extra, p, p0, p1], n)
        check_links("grok1-link", d, lambda p: [LINK, "--force", p, p0, p1], checks_ok)
        check_special("grok1-checksum--add", d, lambda p: [CHECKSUM, "--add", p], 0)
        # without --add a FIFO is refused too, not opened (the open hung)
        fifo = os.path.join(d, "plain.fifo")
        os.mkfifo(fifo)
        rc, _, err = run([CHECKSUM, fifo])
        expect(rc == 1 and "is a FIFO" in err, f"grok1-checksum on a FIFO: exit 1 at once (rc {rc}, {err.strip()!r})")
        # --add through a link to a file: written in place, the link kept
        ck = os.path.join(d, "ck.h5")
        run([MKCKPT, "--config", "tiny", "--seed", "3", "--out", ck])
        os.symlink("ck.h5", os.path.join(d, "ck-link.h5"))
        rc, _, err = run([CHECKSUM, "--add", os.path.join(d, "ck-link.h5")])
        expect(rc == 0 and os.path.islink(os.path.join(d, "ck-link.h5")),
               f"grok1-checksum --add through a link: exit 0, the link kept (rc {rc}, {err.strip()[:160]!r})")
        # an output naming an input: mkckpt's --config file is refused, left as it was
        cfg = os.path.join(d, "cfg.json")
        with open(cfg, "w") as f:
            json.dump({"vocab_size": 512, "emb_size": 64, "num_layers": 2, "num_q_heads": 4, "num_kv_heads": 2,
                       "key_size": 16, "ffn_size": 96, "num_experts": 8, "max_seq_len": 256}, f)
        text = open(cfg).read()
        os.symlink("cfg.json", os.path.join(d, "cfg-link.json"))
        for out in (cfg, os.path.join(d, "cfg-link.json")):
            rc, _, err = run([MKCKPT, "--config", cfg, "--seed", "1", "--out", out])
            expect(rc == 2 and "--config file" in err and open(cfg).read() == text,
                   f"grok1-mkckpt --out {os.path.basename(out)} = its --config: refused, kept (rc {rc}, "
                   f"{err.strip()[:160]!r})")
        # the temporary file OUT.tmp.<pid>: a symbolic link found at that name
        # (planted by the child before it execs the tool, which keeps its pid)
        # is replaced, not written through: the file it names is left as it was
        for tool, argv_of in (("grok1-mkckpt", mk), ("grok1-link", lambda p: [LINK, p, p0, p1])):
            out, victim = os.path.join(d, "planted.h5"), os.path.join(d, "victim.txt")
            for f in (out, victim):
                if os.path.exists(f):
                    os.remove(f)
            with open(victim, "w") as f:
                f.write("not yours\n")
            pid = os.fork()
            if pid == 0:
                try:
                    os.symlink(victim, f"{out}.tmp.{os.getpid()}")
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, 1)
                    os.dup2(devnull, 2)
                    args = [str(a) for a in argv_of(out)]
                    os.execv(args[0], args)
                finally:
                    os._exit(127)
            _, status = os.waitpid(pid, 0)
            rc = os.waitstatus_to_exitcode(status)
            left = sorted(n for n in os.listdir(d) if n.startswith("planted.h5.tmp"))
            with open(victim, "rb") as f:
                kept = f.read()
            expect(rc == 0 and kept == b"not yours\n" and os.path.exists(out) and is_hdf5(out) and not left,
                   f"{tool}: a link planted at OUT.tmp.<pid> is not written through (rc {rc}, victim "
                   f"{kept[:20]!r}, left {left})")
    return expect.result()


if __name__ == "__main__":
    sys.exit(main())
