"""Helpers shared by the Python test scripts (not a test by itself): the
environment of the MPI runs they start, where mpirun is, and the checks they
count. Needs nothing beyond Python's own library.

A script in tests/DIR finds it by path (it runs from the build folder under
meson, and directly as `/usr/bin/python3 tests/DIR/test_x.py ...`):

    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from g1testlib import Checks, mpi_env  # noqa: E402
"""
import argparse
import importlib
import os
import shutil
import struct
import sys
import zlib

# mpirun as root (containers, CI) and with more ranks than cores: for the
# processes a test starts, never set for the user
MPI_VARS = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMPI_MCA_rmaps_base_oversubscribe": "1"}


# the hyper-parameters a checkpoint's params_crc32 covers, in its order
# (docs/CHECKPOINT.md)
CKPT_PARAMS = ("vocab_size emb_size num_layers num_q_heads num_kv_heads key_size ffn_size num_experts "
               "num_selected_experts max_seq_len embedding_multiplier output_multiplier attn_output_multiplier "
               "attn_logit_cap rope_base rms_eps pad_id bos_id eos_id").split()


def params_crc(attrs):
    """docs/CHECKPOINT.md's params_crc32 of a checkpoint's root attributes
    (h5py's attrs, or a dict): each name, NUL, 8 little-endian bytes (float64
    for a floating-point value, else int64), in CKPT_PARAMS's order."""
    b = b""
    for n in CKPT_PARAMS:
        v = attrs[n]
        dt = getattr(v, "dtype", None)
        is_float = dt.kind == "f" if dt is not None else isinstance(v, float)
        b += n.encode() + b"\0" + (struct.pack("<d", float(v)) if is_float else struct.pack("<q", int(v)))
    return zlib.crc32(b)


def script_cases(names):
    """A test script's cases, its functions case_NAME (names: its globals()),
    as {NAME: function}, and an ArgumentParser whose first argument is the
    case to run."""
    cases = {n[5:]: fn for n, fn in names.items() if n.startswith("case_")}
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=sorted(cases))
    return cases, ap


def need(*names, why=""):
    """The modules named, imported (a list); without one, prints "SKIP: the
    error" and `why`, and exits 77, which meson counts as skipped."""
    try:
        return [importlib.import_module(n) for n in names]
    except ImportError as e:
        print("SKIP: %s%s" % (e, why))
        sys.exit(77)


def mpi_env(threads=1, **extra):
    """os.environ with MPI_VARS, OMP_NUM_THREADS=threads (None: as it is) and
    `extra` on top."""
    env = dict(os.environ, **MPI_VARS)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(extra)
    return env


def mpirun():
    """mpirun or mpiexec on PATH; None without either."""
    return shutil.which("mpirun") or shutil.which("mpiexec")


class Checks:
    """check(cond, what): prints "ok   what" or "FAIL what" (quiet: only the
    failures), keeps each failed `what` in .failed, returns cond."""

    def __init__(self, quiet=False):
        self.failed = []
        self.quiet = quiet

    def __call__(self, cond, what):
        if not cond or not self.quiet:
            print("%-4s %s" % ("ok" if cond else "FAIL", what), flush=True)
        if not cond:
            self.failed.append(what)
        return cond

    def note(self, what):
        print("note %s" % what, flush=True)

    def result(self):
        """Prints PASS or FAIL with how many checks failed and which; returns
        the exit status (0 or 1)."""
        print("\n%s: %d failure(s)" % ("FAIL" if self.failed else "PASS", len(self.failed)))
        for f in self.failed:
            print("  - %s" % f)
        return 1 if self.failed else 0
