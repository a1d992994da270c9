"""Shared helpers of the reference tests: running the C programs, reading
their outputs, comparing logits with the reference's tolerance, and the
"teeth" table (how far each known porting mistake lands from the reference).
Not a test by itself. A test imports it before numpy, h5py and grok1_ref:
without numpy or h5py the import ends the test as skipped (exit 77).
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import MPI_VARS, Checks, need  # noqa: E402,F401  (the reference tests take them from here)

np, h5py = need("numpy", "h5py", why=" (the reference tests need numpy and h5py)")
import grok1_ref as ref  # noqa: E402

RTOL = 1e-3          # |c - r| <= atol + RTOL * |r|
ATOL_REL = 1e-3      # atol = ATOL_REL * max|r|
LOGPROB_TOL = 1e-3   # absolute, per log-probability


class TestFailure(Exception):
    """A check that cannot go on (a program failed, an output is missing)."""


def parse_args(doc):
    """The command line of a reference test (doc: its docstring): --mkckpt,
    --run and --tmp, a folder made if missing."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--mkckpt", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--tmp", required=True, help="directory for checkpoints and outputs")
    args = ap.parse_args()
    os.makedirs(args.tmp, exist_ok=True)
    return args


def run(cmd, what, timeout=120):
    """Run a program; on failure print the command, exit status and stderr and
    raise TestFailure."""
    cmd = [str(c) for c in cmd]
    print("run  %s" % " ".join(cmd), flush=True)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise TestFailure("%s: program not found: %s" % (what, cmd[0]))
    except subprocess.TimeoutExpired as e:
        sys.stderr.write((e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes)
                         else (e.stderr or ""))
        raise TestFailure("%s: timed out after %d s: %s" % (what, timeout, " ".join(cmd)))
    if p.returncode != 0:
        print("---- command: %s" % " ".join(cmd))
        print("---- exit status %d; stderr:\n%s" % (p.returncode, p.stderr.rstrip()))
        if p.stdout.strip():
            print("---- stdout (tail):\n%s" % p.stdout[-2000:].rstrip())
        raise TestFailure("%s failed (exit %d)" % (what, p.returncode))
    return p


def write_requests(path, requests):
    with open(path, "w") as f:
        for r in requests:
            f.write(json.dumps(r) + "\n")


def read_results(path, requests):
    """Result lines of grok1-run, matched to the requests by id (results may
    come in completion order). Returns a list aligned with `requests`."""
    if not os.path.exists(path):
        raise TestFailure("output file %s was not written" % path)
    by_id = {}
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise TestFailure("%s:%d: not JSON (%s): %r" % (path, ln, e, line[:200]))
            key = json.dumps(obj.get("id"))
            if key in by_id:
                raise TestFailure("%s: id %s appears twice" % (path, key))
            by_id[key] = obj
    out = []
    for r in requests:
        key = json.dumps(r["id"])
        if key not in by_id:
            raise TestFailure("%s: no result for request id %s (ids seen: %s)"
                              % (path, key, ", ".join(sorted(by_id)) or "none"))
        out.append(by_id[key])
    if len(by_id) != len(requests):
        raise TestFailure("%s: %d results for %d requests" % (path, len(by_id), len(requests)))
    return out


def read_dump(path, n_requests):
    """Dumped logits: /logits/<k> float32 (n, V) for request line k."""
    if not os.path.exists(path):
        raise TestFailure("logits dump %s was not written" % path)
    with h5py.File(path, "r") as f:
        if "logits" not in f:
            raise TestFailure("%s has no /logits group (has: %s)" % (path, list(f.keys())))
        out = []
        for k in range(n_requests):
            if str(k) not in f["logits"]:
                raise TestFailure("%s: missing /logits/%d (has: %s)"
                                  % (path, k, sorted(f["logits"].keys())))
            out.append(f["logits"][str(k)][()])
    return out


def tolerance_fail(c, r, rtol=RTOL, atol_rel=ATOL_REL):
    """Boolean mask of elements outside |c - r| <= atol + rtol |r|."""
    atol = atol_rel * float(np.max(np.abs(r)))
    return np.abs(c - r) > atol + rtol * np.abs(r)


def compare(c, r, rtol=RTOL, atol_rel=ATOL_REL):
    """Error figures of candidate logits c against reference r (same shape)."""
    c = np.asarray(c, dtype=np.float64)
    err = np.abs(c - r)
    bad = tolerance_fail(c, r, rtol, atol_rel)
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    return {"max_abs": float(err.max()), "max_rel": float(err.max() / np.max(np.abs(r))),
            "nfail": int(bad.sum()), "size": int(bad.size), "worst": tuple(int(i) for i in worst),
            "worst_c": float(c[worst]), "worst_r": float(r[worst]),
            "first_bad": [tuple(int(i) for i in ix) for ix in np.argwhere(bad)[:5]],
            "atol": atol_rel * float(np.max(np.abs(r))), "rtol": rtol}


def describe(cmp, c=None, r=None):
    s = ("max abs err %.3e, max rel err %.3e (atol %.2e, rtol %.0e), worst [%d, %d]: c=%.7g r=%.7g, "
         "%d/%d outside" % (cmp["max_abs"], cmp["max_rel"], cmp["atol"], cmp.get("rtol", RTOL), cmp["worst"][0],
                            cmp["worst"][1], cmp["worst_c"], cmp["worst_r"], cmp["nfail"], cmp["size"]))
    if cmp["nfail"] and c is not None:
        s += "; first mismatches: " + ", ".join(
            "[%d,%d] c=%.6g r=%.6g" % (i, j, c[i, j], r[i, j]) for i, j in cmp["first_bad"])
    return s


def teeth(model, token_lists, mistakes=None, ref_logits=None):
    """For each mistake, its error against the correct reference over all the
    sequences: {mistake: (max_rel, nfail, size)}."""
    if ref_logits is None:
        ref_logits = [ref.forward(model, t) for t in token_lists]
    out = {}
    for mk in (mistakes or ref.MISTAKES):
        mr, nf, sz = 0.0, 0, 0
        for t, r in zip(token_lists, ref_logits):
            cm = compare(ref.forward(model, t, mistakes=[mk]), r)
            mr, nf, sz = max(mr, cm["max_rel"]), nf + cm["nfail"], sz + cm["size"]
        out[mk] = (mr, nf, sz)
    return out


# Which checkpoint shows each mistake: the soft cap needs attention scores
# beyond the cap ("hot"); renormalised gates are cancelled by the post-MoE
# RMSNorm except through its eps, so they need small expert outputs
# ("quiet"); erf GELU differs from the tanh form by up to 3e-4 of the GELU's
# input only for large inputs, which the hot checkpoint has (on the
# ordinary one it stays inside the tolerance).
TEETH_CKPT = {"no_softcap": "hot", "renorm_gates": "quiet", "erf_gelu": "hot"}
# Mistakes the tolerance must catch; the others are reported only (missing
# bf16 rounding is a small effect that may hide in the tolerance).
TEETH_REQUIRED = ("renorm_gates", "no_softcap", "block0_scales", "interleaved_rope",
                  "one_plus_scale", "no_post_norms", "erf_gelu")


def teeth_report(check, tables):
    """Print the teeth table for {ckpt name: teeth() result} and assert the
    required mistakes exceed the tolerance on their checkpoint."""
    names = list(tables)
    print("\nTolerance teeth: error of each mistake against the correct reference")
    print("(max rel err = max|m - r| / max|r|; n = elements outside atol + rtol|r|)")
    print("  %-17s" % "mistake" + "".join("  %-24s" % n for n in names) + "  verdict")
    for mk in ref.MISTAKES:
        where = TEETH_CKPT.get(mk, "ordinary")
        row = "  %-17s" % mk
        for n in names:
            mr, nf, sz = tables[n][mk]
            row += "  %-24s" % ("%.2e (%d/%d)%s" % (mr, nf, sz, "*" if n == where else ""))
        caught = tables[where][mk][1] > 0 if where in tables else False
        if mk in TEETH_REQUIRED:
            row += "  " + ("caught" if caught else "NOT CAUGHT")
        else:
            row += "  " + ("caught (report only)" if caught else "within tolerance (report only)")
        print(row)
    print("  (* = the checkpoint where the mistake is judged)")
    for mk in TEETH_REQUIRED:
        where = TEETH_CKPT.get(mk, "ordinary")
        if where in tables:
            check(tables[where][mk][1] > 0,
                  "tolerance catches mistake %s on the %s checkpoint (%s)"
                  % (mk, where, ref.MISTAKES[mk]))
