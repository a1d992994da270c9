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
import sys

# mpirun as root (containers, CI) and with more ranks than cores: for the
# processes a test starts, never set for the user
MPI_VARS = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "OMPI_MCA_rmaps_base_oversubscribe": "1"}


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
