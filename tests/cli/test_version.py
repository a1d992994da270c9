#!/usr/bin/env python3
"""--version of every tool (meson test cli_version).

usage: test_version.py VERSION NAME=PATH...

VERSION is meson.build's project version: each tool must print
"NAME VERSION" as its first line on stdout, with nothing on stderr, and exit
0; its --help must mention --version. Both exit 1, with a message, when stdout
is a full disk (/dev/full). grok1-run adds one line of the
features it was built with. Tools that read options with values by hand
(grok1-mkckpt, grok1-convert) must call an unknown last option unknown, not
one that "needs a value".
"""
import os
import subprocess
import sys


def main():
    version, tools = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
    bad = []
    for name, path in sorted(tools.items()):
        p = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        lines = p.stdout.splitlines()
        want = f"{name} {version}"
        print(f"{name} --version: exit {p.returncode}, {p.stdout.strip()!r}")
        if p.returncode != 0 or not lines or lines[0] != want or p.stderr:
            bad.append(f"{name} --version: exit {p.returncode}, stdout {p.stdout!r}, stderr {p.stderr!r} "
                       f"(want exit 0 and {want!r})")
        if name == "grok1-run" and (len(lines) != 2 or not all(f in lines[1] for f in ("mpi", "hdf5", "cuda"))):
            bad.append(f"grok1-run --version: want a second line naming mpi, hdf5 and cuda, got {lines[1:]!r}")
        elif name != "grok1-run" and len(lines) != 1:
            bad.append(f"{name} --version: want one line, got {lines!r}")
        h = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30)
        if h.returncode != 0 or "--version" not in h.stdout:
            bad.append(f"{name} --help: exit {h.returncode}, does not mention --version")
        # stdout a full disk: what --help and --version print is lost, which
        # the exit status must say (a script that saves the usage or checks
        # the version would take an empty file as printed)
        if os.path.exists("/dev/full"):
            for flag in ("--help", "--version"):
                with open("/dev/full", "w") as full:
                    f = subprocess.run([path, flag], stdout=full, stderr=subprocess.PIPE, text=True, timeout=30)
                if f.returncode != 1 or "cannot write to stdout" not in f.stderr:
                    bad.append(f"{name} {flag} >/dev/full: exit {f.returncode}, stderr {f.stderr.strip()!r} "
                               "(want exit 1 and \"cannot write to stdout\")")
        if name in ("grok1-mkckpt", "grok1-convert"):
            u = subprocess.run([path, "--bogus"], capture_output=True, text=True, timeout=30)
            if u.returncode != 2 or "unknown option '--bogus'" not in u.stderr or "needs a value" in u.stderr:
                bad.append(f"{name} --bogus: exit {u.returncode}, stderr {u.stderr.strip()!r} "
                           "(want exit 2 and \"unknown option '--bogus'\")")
    for b in bad:
        print("FAIL:", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
