#!/usr/bin/env python3
"""scripts/slurm under a real single-node Slurm (suite 'slurm').

Starts its own munged, slurmctld and slurmd on localhost (own key, socket,
ports, state and spool in a temporary folder; 8 CPUs declared whatever the
machine has), then:
  - generate.sbatch and score.sbatch with `sbatch --wait -n 4` on the tiny
    model: the outputs equal a one-process grok1-run byte for byte;
  - a job array of 3 tasks (generate.sbatch --array=0-2): one shard each,
    joined by the last to finish into the one-process run's bytes; a score
    array with --dump-logits joined into the one-process run's dump; SIGTERM
    to one task of a 2-task array requeues that task alone; a task stopped
    by a bad request line, the line fixed and the task requeued alone,
    merges with the other task's shard into the run of the fixed input;
  - bad GROK1_* variables are refused with a message, before anything runs;
  - GROK1_CHECK_INPUT=1: refused requests end the job before srun, each
    named; a good input is checked, then run;
  - SIGTERM to the batch shell (what `#SBATCH --signal=B:TERM@...` sends) with
    a stand-in grok1-run that exits 3: the job requeues itself and its second
    run passes --resume; a job ended with scancel is not requeued;
  - the same with the real grok1-run once it has --resume: the requeued job
    completes the output to exactly the uninterrupted content;
  - a checkpoint in parts (grok1-link) read from a folder named by
    HDF5_EXT_PREFIX, exported before sbatch: the one-process run's bytes.
The daemons it started are stopped by their PIDs at the end, also on failure,
and so is any job process left behind (found by the SLURM_CONF in its
environment).

usage: test_slurm.py --run grok1-run --mkckpt grok1-mkckpt [--link grok1-link] --scripts DIR [--keep]
exit 0 pass, 1 fail, 77 skip (not root, Slurm or munge not installed, no pmix
plugin, or the daemons do not start: their logs are printed)."""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from g1testlib import Checks  # noqa: E402

ARGS = None
TMP = None   # the cluster's folder; jobs run and write there
ENV = None   # environment of the daemons and the jobs
CKPT = None  # the tiny checkpoint


class Skip(Exception):
    pass


check = Checks(quiet=True)


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError as e:
        return f"    ({e})\n"
    return "".join("    " + line for line in lines[-n:])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the cluster --------------------------------------------------------------
SLURM_CONF = """\
ClusterName=grok1test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays a requeued job's next start (default 120 s).
AuthInfo=socket={d}/run/munge.sock,cred_expire=5
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
# The pmix plugin's per-step folders (spmix_appdir_<uid>_<job>.<step>) go
# here: job ids restart at 1 in every test, and a leftover in /tmp would
# make a step fail.
TmpFS={d}/tmp
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# Below 4 s, sbatch --wait polls every 2 s instead of after 2, 8, 32, 32... s.
MinJobAge=4
SlurmdParameters=config_overrides
NodeName=localhost CPUs=8 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class Cluster:
    """munged + slurmctld + slurmd, children of this process."""

    def __init__(self, d):
        self.d = d
        self.procs = []  # (name, Popen), in start order
        self.logs = []

    def _start(self, name, cmd):
        out = os.path.join(self.d, "log", name + ".out")
        self.logs.append(out)
        f = open(out, "w")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=ENV,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        f.close()
        self.procs.append((name, p))
        print(f"started {name} (pid {p.pid})")
        return p

    def _dead(self):
        return [f"{n} exited with status {p.returncode}" for n, p in self.procs
                if p.poll() is not None]

    def fail(self, why):
        msg = [f"SKIP: Slurm did not start on localhost: {why}"]
        for path in self.logs + [os.path.join(self.d, "log", n)
                                 for n in ("slurmctld.log", "slurmd.log", "munged.log")]:
            if os.path.exists(path):
                msg.append(f"  --- {path} (last lines)\n{tail(path).rstrip()}")
        raise Skip("\n".join(msg))

    def start(self):
        d = self.d
        for sub, mode in (("munge", 0o700), ("run", 0o755), ("state", 0o755),
                          ("spool", 0o755), ("log", 0o755), ("tmp", 0o755)):
            os.makedirs(os.path.join(d, sub), mode=mode)
        key = os.path.join(d, "munge", "munge.key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(1024))
        os.close(fd)
        sock = os.path.join(d, "run", "munge.sock")
        self._start("munged", ["munged", "-F", "--key-file=" + key, "--socket=" + sock,
                               "--pid-file=" + os.path.join(d, "run", "munged.pid"),
                               "--log-file=" + os.path.join(d, "log", "munged.log"),
                               "--seed-file=" + os.path.join(d, "munge", "seed")])
        self._wait(lambda: os.path.exists(sock), 10, "munged made no socket")
        with open(ENV["SLURM_CONF"], "w") as f:
            f.write(SLURM_CONF.format(d=d, ctld_port=free_port(), d_port=free_port()))
        p = sh(["srun", "--mpi=list"])
        if "pmix" not in p.stdout + p.stderr:
            raise Skip("SKIP: Slurm has no pmix plugin (srun --mpi=list): install slurm-wlm-basic-plugins\n"
                       + p.stdout + p.stderr)
        self._start("slurmctld", ["slurmctld", "-D", "-i"])
        self._start("slurmd", ["slurmd", "-D", "-N", "localhost"])
        self._wait(lambda: sh(["sinfo", "-h", "-n", "localhost", "-o", "%T"]).stdout.strip() == "idle",
                   30, "node localhost never became idle")

    def _wait(self, ready, seconds, why):
        end = time.time() + seconds
        while time.time() < end:
            dead = self._dead()
            if dead:
                self.fail("; ".join(dead))
            if ready():
                return
            time.sleep(0.2)
        self.fail(why + f" within {seconds} s")

    def stop(self):
        if any(n == "slurmctld" and p.poll() is None for n, p in self.procs):
            # Jobs left over from a failure: their slurmstepd and ranks would
            # outlive slurmd.
            try:
                sh(["scancel", "--partition=debug"])
                end = time.time() + 15
                while time.time() < end and sh(["squeue", "-h"]).stdout.strip():
                    time.sleep(0.3)
            except subprocess.TimeoutExpired:
                pass
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            print(f"stopped {name} (pid {p.pid})")
        # slurmstepd and the job processes are not our children but carry our
        # SLURM_CONF in their environment (from slurmd, sbatch): a job the
        # scancel above did not end would outlive slurmd.
        mark = ("SLURM_CONF=" + ENV["SLURM_CONF"]).encode() + b"\0"
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if mark in f.read():
                        os.kill(int(pid), signal.SIGKILL)
                        print(f"killed leftover pid {pid}")
            except OSError:
                pass


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, env=kw.pop("env", ENV),
                          timeout=kw.pop("timeout", 30), **kw)


# --- jobs ---------------------------------------------------------------------
def sbatch(script, name, extra_env, ntasks=4, background=False, array=None):
    """sbatch --wait; returns (exit status, log text) or the Popen. With
    array (e.g. "0-2"): a job array, one log per task, returned joined."""
    log = os.path.join(TMP, name + ("-%a" if array else "") + ".log")
    env = dict(ENV, **extra_env)
    cmd = ["sbatch", "--wait", f"--ntasks={ntasks}", "--export=ALL", "--time=5",
           f"--job-name={name}", f"--output={log}"] + ([f"--array={array}"] if array else []) + \
        [os.path.join(ARGS.scripts, script)]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, cwd=TMP), log
    p = sh(cmd, env=env, cwd=TMP, timeout=120)
    if array:
        logs = sorted(f for f in os.listdir(TMP) if f.startswith(name + "-") and f.endswith(".log"))
        return p.returncode, "".join(open(os.path.join(TMP, f)).read() for f in logs)
    return p.returncode, (open(log).read() if os.path.exists(log) else "")


def run1(mode, inp, out, extra):
    """The one-process reference."""
    p = sh([ARGS.run, "--checkpoint", CKPT, "--mode", mode, "--input", inp, "--output", out]
           + extra, timeout=120)
    if p.returncode != 0:
        raise SystemExit(f"FAIL: reference grok1-run exited {p.returncode}:\n{p.stderr}")
    return open(out, "rb").read()


def requests(name, n, seed, gen):
    rng = random.Random(seed)
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        for i in range(n):
            r = {"id": f"r{i}" if i % 2 else i,
                 "prompt_ids": [rng.randrange(3, 512) for _ in range(rng.randrange(1, 12))]}
            if gen and i % 3 == 0:
                r["max_new_tokens"] = rng.randrange(0, 10)
            f.write(json.dumps(r) + "\n")
    return path


def dump_differs(a, b):
    """None when the HDF5 logits dumps a and b are the same: root attributes
    (values and HDF5 types), dataset names, shapes, types, bits and
    attributes."""
    import h5py
    import numpy as np
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        if sorted(fa.attrs) != sorted(fb.attrs) or sorted(fa) != sorted(fb):
            return f"attributes {sorted(fa.attrs)}, groups {sorted(fa)} vs {sorted(fb.attrs)}, {sorted(fb)}"
        for k in fa.attrs:
            if not (fa.attrs[k] == fb.attrs[k] and fa.attrs.get_id(k).get_type().equal(fb.attrs.get_id(k).get_type())):
                return f"attribute {k}: {fa.attrs[k]!r} vs {fb.attrs[k]!r}"
        if sorted(fa["logits"]) != sorted(fb["logits"]):
            return f"datasets {sorted(fa['logits'])} vs {sorted(fb['logits'])}"
        for k in fb["logits"]:
            x, y = fa["logits"][k], fb["logits"][k]
            if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x[()].view(np.uint32), y[()].view(np.uint32)):
                return f"logits/{k} differs ({x.shape} {x.dtype} vs {y.shape} {y.dtype})"
            # its checksum, tokens and id
            if sorted(x.attrs) != sorted(y.attrs) or any(not np.array_equal(x.attrs[t], y.attrs[t]) for t in x.attrs):
                return f"logits/{k}: attributes {dict(x.attrs)} vs {dict(y.attrs)}"
    return None


def job_env(mode_out, inp, args, binary=None):
    return {"GROK1_CHECKPOINT": CKPT, "GROK1_INPUT": inp, "GROK1_OUTPUT": mode_out,
            "GROK1_ARGS": args, "GROK1_BIN": binary or os.path.dirname(os.path.abspath(ARGS.run))}


def same_output(mode, script, ntasks, layout, n, extra):
    inp = requests(f"{mode}.jsonl", n, 11 if mode == "generate" else 12, mode == "generate")
    want = run1(mode, inp, os.path.join(TMP, f"{mode}-ref.jsonl"), extra)
    out = os.path.join(TMP, f"{mode}-out.jsonl")
    t = time.time()
    rc, log = sbatch(script, mode, job_env(out, inp, " ".join([layout] + extra)), ntasks)
    print(f"{script} -n {ntasks}, GROK1_ARGS='{layout} {' '.join(extra)}': exit {rc} in {time.time() - t:.1f} s")
    ok = check(rc == 0, f"{script} exited {rc}")
    ok &= check(os.path.exists(out) and open(out, "rb").read() == want,
                f"{script}: {out} differs from the one-process run")
    ok &= check(not os.path.exists(out + ".partial"), f"{script}: {out}.partial left behind")
    ok &= check("grok1-job: done" in log, f"{script}: no 'done' line in the job log")
    if not ok:
        print(log[-4000:])


def case_generate():
    same_output("generate", "generate.sbatch", 4, "--stages 2 --ep 2", 7, ["--max-new-tokens", "12"])


def case_score():
    same_output("score", "score.sbatch", 4, "--stages 4", 6, ["--batch-size", "2"])


def case_array():
    """A job array of 3 tasks of 2 ranks (--stages 2): task K runs shard K/3
    into OUTPUT.shard-K-of-3, and the last one to finish joins the three with
    grok1-merge: OUTPUT equals a one-process run byte for byte, sampled
    tokens included. A score array with --dump-logits D: task K dumps to
    D.shard-K-of-N, and the merge joins them into D, the one-process run's
    dump (attributes, datasets, bits), with its meta file. --trace T (as
    --trace=T in the generate array, --trace T in the score array): each task
    writes its own T.shard-K-of-N, and no task writes T. An array with gaps
    in its task ids is refused."""
    inp = requests("array.jsonl", 10, 13, True)
    extra = ["--max-new-tokens", "6", "--temperature", "0.8", "--seed", "3"]
    want = run1("generate", inp, os.path.join(TMP, "array-ref.jsonl"), extra)
    out = os.path.join(TMP, "array-out.jsonl")
    trace = os.path.join(TMP, "array-trace.json")
    t = time.time()
    rc, log = sbatch("generate.sbatch", "array",
                     job_env(out, inp, " ".join(["--stages 2"] + extra + [f"--trace={trace}"])), ntasks=2, array="0-2")
    print(f"generate.sbatch --array=0-2 -n 2: exit {rc} in {time.time() - t:.1f} s")
    ok = check(rc == 0, f"array job exited {rc}")
    ok &= check(os.path.exists(out) and open(out, "rb").read() == want, f"{out} differs from the one-process run")
    for k in range(3):
        ok &= check(os.path.exists(f"{out}.shard-{k}-of-3"), f"shard output {k} missing")
        ok &= check(f"shard {k}/3" in log, f"no log names shard {k}/3")
    ok &= check(log.count("every shard is finished") == 1, "not exactly one task joined the shards")
    ok &= traces_apart(trace, 3)
    ok &= check(not os.path.exists(out + ".merging"), "the merge lock was left behind")
    # the script signals, inspects and requeues a task as ARRAY_TASK: one job, not the array
    import re
    m = re.search(r"\(array (\d+) task (\d+)", log)
    if check(m is not None, "the log names the array and task"):
        p = sh(["scontrol", "show", "job", f"{m.group(1)}_{m.group(2)}"])
        ok &= check(p.returncode == 0 and p.stdout.count("JobState=") == 1,
                    f"scontrol show job {m.group(1)}_{m.group(2)}: {p.stdout.count('JobState=')} job(s)")
    # score with a logits dump: each task writes a dump of its own, and the
    # merge joins them into the dump of a one-process run with that name
    sinp = requests("array-score.jsonl", 7, 14, False)
    sout, dump = os.path.join(TMP, "array-score-out.jsonl"), os.path.join(TMP, "array-dump.h5")
    sref = os.path.join(TMP, "array-score-ref.jsonl")
    swant = run1("score", sinp, sref, ["--dump-logits", dump])
    os.rename(dump, dump + ".ref")
    strace = os.path.join(TMP, "array-score-trace.json")
    rc, slog = sbatch("score.sbatch", "sarray", job_env(sout, sinp, f"--dump-logits {dump} --trace {strace}"), ntasks=1,
                      array="0-1")
    ok &= check(rc == 0 and os.path.exists(sout) and open(sout, "rb").read() == swant,
                f"score array with a dump: exit {rc}, output {'equal' if os.path.exists(sout) and open(sout, 'rb').read() == swant else 'differs'}")
    ok &= check(all(os.path.exists(f"{dump}.shard-{k}-of-2") for k in range(2)),
                "each task of the score array wrote its own dump")
    diff = dump_differs(dump, dump + ".ref") if os.path.exists(dump) else f"{dump} was not written"
    ok &= check(diff is None, f"the score array's merged dump is not the one-process run's: {diff}")
    ok &= traces_apart(strace, 2)
    ok &= check(os.path.exists(sout + ".meta.json") and
                json.load(open(sout + ".meta.json")) == json.load(open(sref + ".meta.json")),
                "the score array's merged meta file differs from the one-process run's")
    rc, log2 = sbatch("generate.sbatch", "gaps", job_env(os.path.join(TMP, "gaps.jsonl"), inp, ""), ntasks=1,
                      array="0,2")
    ok &= check(rc == 2 and "one range without gaps" in log2, f"an array with gaps: exit {rc}")
    if not ok:
        print(log[-4000:] + slog[-3000:] + log2[-2000:])


def traces_apart(trace, n):
    """Each of the n tasks of an array run with --trace T wrote a trace of
    its own, T.shard-K-of-n (Chrome trace-event JSON), and none wrote T."""
    ok = check(not os.path.exists(trace), f"{trace} was written: the tasks' traces would overwrite one another")
    for k in range(n):
        path = f"{trace}.shard-{k}-of-{n}"
        try:
            with open(path) as f:
                events = json.load(f)["traceEvents"]
        except (OSError, ValueError, KeyError) as e:
            events = None
            print(f"{path}: {e!r}")
        ok &= check(bool(events), f"task {k} of {n} wrote no trace of its own ({path}) with --trace {trace}")
    return ok


MERGE_STUB = r"""#!/bin/sh
# Stand-in for grok1-merge that takes its time: says which task runs it,
# then waits; on SIGTERM it stops, as grok1-merge does (removing what it made).
echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" > "$GROK1_MERGE_STARTED"
trap 'echo stopped > "$GROK1_MERGE_STARTED.stopped"; exit 1' TERM
while :; do sleep 0.1; done
"""


def case_array_merge_stopped():
    """The time limit's warning while the last task joins the shards: the
    merge is stopped, its lock removed, and the log says how to finish
    (submit the array again, or merge by hand); nothing is requeued."""
    inp = requests("mstop.jsonl", 4, 15, False)
    out = os.path.join(TMP, "mstop-out.jsonl")
    stub, started = os.path.join(TMP, "merge-stub.sh"), os.path.join(TMP, "mstop.merging-task")
    with open(stub, "w") as f:
        f.write(MERGE_STUB)
    os.chmod(stub, 0o755)
    env = dict(job_env(out, inp, ""), GROK1_MERGE=stub, GROK1_MERGE_STARTED=started)
    popen, log = sbatch("score.sbatch", "mstop", env, ntasks=1, array="0-1", background=True)
    logs = [log.replace("%a", str(k)) for k in range(2)]
    end = time.time() + 60
    while time.time() < end and not os.path.exists(started) and popen.poll() is None:
        time.sleep(0.05)
    task = open(started).read().strip() if os.path.exists(started) else None
    if not check(task, "no task started the merge"):
        return
    print(f"task {task} is merging: scancel --batch --signal=USR1 {task}")
    sh(["scancel", "--batch", "--signal=USR1", task])
    texts = array_end(popen, logs, "the signal")
    if texts is None:
        return
    text = "".join(texts)
    print("\n".join(l for l in text.splitlines() if "join" in l or "merg" in l)[-1500:])
    ok = check(popen.returncode not in (0, None), f"sbatch --wait exited {popen.returncode}")
    ok &= check(os.path.exists(started + ".stopped"), "the merge was not passed the signal")
    ok &= check("interrupted while joining the shards" in text and "submit the array again" in text,
                "the log does not say the merge was stopped and how to finish")
    ok &= check(not os.path.exists(out + ".merging") and not os.path.exists(out), "the lock or an output was left")
    ok &= check("requeueing" not in text, "a stopped merge was requeued")
    if not ok:
        print(text[-4000:])


def case_refusals():
    inp = requests("refusals.jsonl", 1, 1, True)
    good = job_env(os.path.join(TMP, "refused.jsonl"), inp, "")
    empty = os.path.join(TMP, "empty-bin")
    os.makedirs(empty, exist_ok=True)
    for i, (what, change, want) in enumerate((
            ("GROK1_INPUT unset", {"GROK1_INPUT": ""}, "GROK1_INPUT is not set"),
            ("GROK1_CHECKPOINT missing", {"GROK1_CHECKPOINT": "/nonexistent.h5"}, "GROK1_CHECKPOINT=/nonexistent.h5"),
            ("GROK1_BIN without grok1-run", {"GROK1_BIN": empty}, "no executable grok1-run"),
            ("--output in GROK1_ARGS", {"GROK1_ARGS": "--output x"}, "must not contain --output"))):
        rc, log = sbatch("generate.sbatch", f"refused{i}",
                         dict(good, **change), ntasks=1)
        print(f"{what}: exit {rc}: {log.strip()}")
        check(rc == 2 and want in log, f"{what}: want exit 2 and '{want}', got {rc}: {log.strip()}")
    check(not os.path.exists(good["GROK1_OUTPUT"] + ".partial"), "a refused job ran grok1-run")


def case_usage_once():
    """A usage error every rank finds is said once, also when srun leaves the
    other ranks running after rank 0's exit (--kill-on-bad-exit=0, as a
    plain srun does by default); a rank whose own command line differs
    still says why."""
    inp = requests("usage.jsonl", 1, 1, True)
    out = os.path.join(TMP, "usage.jsonl.out")
    env = dict(job_env(out, inp, "--stages 2 --frobnicate"), GROK1_SRUN_ARGS="--kill-on-bad-exit=0")
    rc, log = sbatch("generate.sbatch", "usage-once", env, ntasks=3)
    said = [l for l in log.splitlines() if "unknown option --frobnicate" in l]
    print(f"usage error on 3 ranks, srun --kill-on-bad-exit=0: exit {rc}: {said}")
    ok = check(rc == 2 and len(said) == 1, f"want exit 2 and the error said once, got {rc}: {said}")
    ok &= check(not any(os.path.exists(out + x) for x in ("", ".partial")), "a refused job wrote its output")
    if not ok:
        print(log[-3000:])


def case_check_input():
    """GROK1_CHECK_INPUT=1: a job whose input has refused requests ends
    before srun, each refused line named in its log and nothing written; a
    good input is checked, then run to the one-process output."""
    inp = requests("check.jsonl", 6, 5, True)
    lines = open(inp).read().splitlines(keepends=True)
    want = run1("generate", inp, os.path.join(TMP, "check-ref.jsonl"), ["--max-new-tokens", "6"])
    out = os.path.join(TMP, "check-out.jsonl")
    env = dict(job_env(out, inp, "--stages 2 --max-new-tokens 6"), GROK1_CHECK_INPUT="1")
    rc, log = sbatch("generate.sbatch", "check-good", env, ntasks=2)
    ok = check(rc == 0 and "0 refused" in log and "grok1-job: srun" in log and "grok1-job: done" in log,
               f"GROK1_CHECK_INPUT=1, good input: exit {rc}")
    ok &= check(os.path.exists(out) and open(out, "rb").read() == want, "checked job: output differs from one process")
    if not ok:
        print(log[-3000:])
    bad = os.path.join(TMP, "check-bad.jsonl")
    with open(bad, "w") as f:
        f.writelines(lines[:2] + ['{"id": "x", "prompt_ids": [1, 99999]}\n'] + lines[3:5] + ["not json\n"])
    out = os.path.join(TMP, "check-bad-out.jsonl")
    rc, log = sbatch("generate.sbatch", "check-bad", dict(env, GROK1_INPUT=bad, GROK1_OUTPUT=out), ntasks=2)
    print(f"GROK1_CHECK_INPUT=1, 2 bad lines: exit {rc}: "
          f"{[l for l in log.splitlines() if 'refused' in l or 'check failed' in l]}")
    ok = check(rc == 1 and "refused: input line 3" in log and "refused: input line 6" in log
               and "input check failed" in log and "grok1-job: srun" not in log,
               f"GROK1_CHECK_INPUT=1, bad input: exit {rc}, want 1 with lines 3 and 6 named and no srun")
    ok &= check(not any(os.path.exists(out + x) for x in ("", ".partial", ".meta.json")),
                "a job refused by the input check wrote its output")
    if not ok:
        print(log[-3000:])


STUB = r"""#!/bin/sh
# Stand-in for grok1-run: rank 0 writes one line, then on SIGTERM exits 3 like
# grok1-run; run with --resume it completes the output.
out=; resume=0; prev=
for a in "$@"; do
  [ "$prev" = --output ] && out=$a
  [ "$a" = --resume ] && resume=1
  prev=$a
done
if [ "${SLURM_PROCID:-0}" != 0 ]; then
  [ $resume = 1 ] && exit 0
  trap 'exit 0' TERM
  while :; do sleep 0.1; done
fi
echo "$*" >> "$out.args"
if [ "${GROK1_STUB_SILENT:-0}" = 1 ]; then
  # stopped before its first result: grok1-run leaves no file behind
  trap 'rm -f "$out.partial"; exit 3' TERM
  echo "$SLURM_JOB_ID" > "$out.started"
  while :; do sleep 0.1; done
fi
if [ $resume = 0 ]; then
  echo '{"id":1}' > "$out.partial"
  trap 'exit 3' TERM
  echo "$SLURM_JOB_ID" > "$out.started"
  while :; do sleep 0.1; done
fi
echo '{"id":2}' >> "$out.partial" && mv "$out.partial" "$out"
"""


def interrupt(out, log, popen):
    """Sends the batch shell SIGTERM once the job has written a result line."""
    end = time.time() + 60
    job = None
    while time.time() < end and popen.poll() is None:
        if job is None and os.path.exists(log):
            for line in open(log):
                if line.startswith("grok1-job: job "):
                    job = line.split()[2]
        part = out + ".partial"
        if job and os.path.exists(part) and open(part).read().count("\n") >= 1:
            break
        time.sleep(0.05)
    if not check(job is not None and popen.poll() is None,
                 "the job ended (or never wrote a line) before it could be interrupted"):
        return None
    print(f"job {job}: scancel --batch --signal=TERM (as #SBATCH --signal=B:TERM@120 would)")
    sh(["scancel", "--batch", "--signal=TERM", job])
    return job if ended(popen, 120, f"job {job}", "the SIGTERM") else None


def stub_bin():
    bindir = os.path.join(TMP, "stub-bin")
    os.makedirs(bindir, exist_ok=True)
    stub = os.path.join(bindir, "grok1-run")
    with open(stub, "w") as f:
        f.write(STUB)
    os.chmod(stub, 0o755)
    return bindir


def stub_started(out, popen):
    """The job id the stand-in grok1-run wrote once it started; None (a
    failed check) when it did not within 30 s."""
    end = time.time() + 30
    while time.time() < end and not os.path.exists(out + ".started") and popen.poll() is None:
        time.sleep(0.05)
    job = open(out + ".started").read().strip() if os.path.exists(out + ".started") else None
    return job if check(job, "the job never started") else None


def case_requeue_stub():
    bindir = stub_bin()
    inp = requests("stub.jsonl", 2, 3, True)
    out = os.path.join(TMP, "stub-out.jsonl")
    t = time.time()
    popen, log = sbatch("generate.sbatch", "stub", job_env(out, inp, "--stages 2 --ep 2", bindir),
                        background=True)
    job = interrupt(out, log, popen)
    text = open(log).read() if os.path.exists(log) else ""
    print(f"stand-in run: sbatch exit {popen.returncode} after {time.time() - t:.1f} s")
    ok = check(job is not None and popen.returncode == 0, f"sbatch --wait exited {popen.returncode}")
    ok &= check(os.path.exists(out) and open(out).read() == '{"id":1}\n{"id":2}\n',
                "the requeued job did not complete the output")
    runs = open(out + ".args").read().splitlines() if os.path.exists(out + ".args") else []
    ok &= check(len(runs) == 2 and "--resume" not in runs[0].split() and "--resume" in runs[1].split(),
                f"want a first run without --resume and a second with it, got {runs}")
    for want in ("passing it to grok1-run", "interrupted", f"requeueing job {job}", f"job {job} run 2 started"):
        ok &= check(want in text, f"no '{want}' in the job log")
    if not ok:
        print(text[-4000:])


def case_cancel_stub():
    """scancel ends the job: an interrupted run is not requeued."""
    inp = requests("cancel.jsonl", 2, 3, True)
    out = os.path.join(TMP, "cancel-out.jsonl")
    popen, log = sbatch("generate.sbatch", "cancel", job_env(out, inp, "", stub_bin()),
                        ntasks=2, background=True)
    job = stub_started(out, popen)
    if not job:
        return
    print(f"job {job}: scancel")
    sh(["scancel", job])
    try:
        popen.wait(60)
    except subprocess.TimeoutExpired:
        popen.kill()
    text = open(log).read() if os.path.exists(log) else ""
    state = sh(["scontrol", "show", "job", job]).stdout
    print(f"sbatch exit {popen.returncode}; " + " ".join(w for w in state.split() if w.startswith(("JobState=", "Restarts="))))
    ok = check(popen.returncode not in (0, None), f"sbatch --wait exited {popen.returncode} for a cancelled job")
    if state:  # empty once slurmctld has forgotten the job (MinJobAge)
        ok &= check("JobState=CANCELLED" in state and "Restarts=0" in state,
                    "the cancelled job is not CANCELLED, or was requeued")
    ok &= check("run 2" not in text, "the cancelled job ran again")
    if not ok:
        print(text[-4000:])


def case_no_progress_stub():
    """A run stopped before it wrote a result (the load and the first
    request took longer than the job had) is not requeued: the next would
    end the same way, for ever. The warning comes as SIGUSR1 here (a site's
    --signal=B:USR1@...), which the script passes on like SIGTERM."""
    inp = requests("silent.jsonl", 2, 3, True)
    out = os.path.join(TMP, "silent-out.jsonl")
    env = dict(job_env(out, inp, "", stub_bin()), GROK1_STUB_SILENT="1")
    popen, log = sbatch("generate.sbatch", "silent", env, ntasks=2, background=True)
    job = stub_started(out, popen)
    if not job:
        return
    print(f"job {job}: scancel --batch --signal=USR1 before any result")
    sh(["scancel", "--batch", "--signal=USR1", job])
    if not ended(popen, 60, f"job {job}", "SIGUSR1"):
        return
    text = open(log).read() if os.path.exists(log) else ""
    print("\n".join(l for l in text.splitlines() if l.startswith("grok1-job:"))[-1500:])
    ok = check(popen.returncode == 3, f"sbatch --wait exited {popen.returncode}, expected 3")
    for want in ("passing it to grok1-run", "interrupted", "added no result to the 0", "not requeued"):
        ok &= check(want in text, f"no '{want}' in the job log")
    ok &= check("requeueing" not in text and "run 2" not in text, "a run that wrote nothing was requeued")
    if not ok:
        print(text[-4000:])


def case_resume_real():
    if "--resume" not in sh([ARGS.run, "--help"]).stdout:
        print("SKIP (this part): grok1-run --help has no --resume yet; the SIGTERM -> requeue -> "
              "--resume cycle was checked with a stand-in grok1-run only")
        return
    # Long enough to interrupt after the first result (about 6 s on 4 ranks):
    # one slot per micro-batch, so results come one by one.
    extra = ["--max-new-tokens", "150", "--batch-size", "1"]
    inp = requests("resume.jsonl", 150, 21, False)
    want = run1("generate", inp, os.path.join(TMP, "resume-ref.jsonl"), extra)
    out = os.path.join(TMP, "resume-out.jsonl")
    t = time.time()
    popen, log = sbatch("generate.sbatch", "resume",
                        job_env(out, inp, " ".join(["--stages 2 --ep 2"] + extra)), background=True)
    job = interrupt(out, log, popen)
    text = open(log).read() if os.path.exists(log) else ""
    print(f"real run: sbatch exit {popen.returncode} after {time.time() - t:.1f} s")
    ok = check(job is not None and popen.returncode == 0, f"sbatch --wait exited {popen.returncode}")
    ok &= check(f"requeueing job {job}" in text and f"job {job} run 2 started" in text,
                "grok1-run did not exit 3 on SIGTERM, or the job was not requeued")
    ok &= check(os.path.exists(out) and open(out, "rb").read() == want,
                "the resumed output differs from the uninterrupted run")
    if not ok:
        print(text[-4000:])


def ended(popen, secs, what, after):
    """Wait for a background `sbatch --wait`: False (a failed check, the
    sbatch killed) when it does not end within secs."""
    try:
        popen.wait(secs)
        return True
    except subprocess.TimeoutExpired:
        popen.kill()
        return check(False, f"{what} did not finish within {secs} s of {after}")


def array_end(popen, logs, after):
    """Wait for a background `sbatch --wait --array`; its tasks' logs, or
    None (a failed check) when it does not end within 150 s."""
    if not ended(popen, 150, "the array", after):
        return None
    return [open(l).read() if os.path.exists(l) else "" for l in logs]


def case_array_requeue():
    """SIGTERM to one task of a job array (the task whose job id is the
    array's own, which as a bare id names every task): only that task is
    interrupted and requeued, it resumes its shard, the other task runs on
    untouched, and the merged output equals a one-process run."""
    extra = ["--max-new-tokens", "150", "--batch-size", "1"]
    inp = requests("arq.jsonl", 100, 22, False)
    want = run1("generate", inp, os.path.join(TMP, "arq-ref.jsonl"), extra)
    out = os.path.join(TMP, "arq-out.jsonl")
    popen, _ = sbatch("generate.sbatch", "arq", job_env(out, inp, " ".join(["--stages 2"] + extra)), ntasks=2,
                      background=True, array="0-1")
    logs = [os.path.join(TMP, f"arq-{k}.log") for k in range(2)]
    part = out + ".shard-1-of-2.partial"
    end, array = time.time() + 60, None
    while time.time() < end and popen.poll() is None:
        if array is None and os.path.exists(logs[1]):
            for line in open(logs[1]):
                if "(array " in line:
                    array = line.split("(array ")[1].split()[0]
        if array and os.path.exists(part) and open(part).read().count("\n") >= 1:
            break
        time.sleep(0.05)
    if not check(array is not None and popen.poll() is None, "task 1 ended (or never wrote a line) before the SIGTERM"):
        return
    print(f"array {array} task 1: scancel --batch --signal=TERM {array}_1")
    sh(["scancel", "--batch", "--signal=TERM", f"{array}_1"])
    texts = array_end(popen, logs, "the SIGTERM")
    if texts is None:
        return
    t0, t1 = texts
    ok = check(popen.returncode == 0, f"sbatch --wait exited {popen.returncode}")
    ok &= check(f"requeueing job {array}_1" in t1 and "run 2 started" in t1, "task 1 was not requeued and run again")
    ok &= check("interrupted" not in t0 and "run 2" not in t0, "task 0 was interrupted too")
    ok &= check(os.path.exists(out) and open(out, "rb").read() == want,
                "the merged output differs from the uninterrupted one-process run")
    if not ok:
        print(t0[-2500:] + t1[-3500:])


def case_array_repair():
    """A task of a job array that stops on a bad request line (exit 1) is
    repaired alone: the line fixed, `scontrol requeue ARRAY_1` runs that
    task again, it resumes its shard and merges with the other task's,
    which stays valid (a shard records only its own requests), into the
    one-process run of the fixed input."""
    extra = ["--max-new-tokens", "150", "--batch-size", "1"]
    inp = requests("arr.jsonl", 80, 23, False)
    lines = open(inp).read().splitlines(keepends=True)
    want = run1("generate", inp, os.path.join(TMP, "arr-ref.jsonl"), extra)
    with open(inp, "w") as f:  # request 5 (shard 1/2's) broken
        f.writelines(lines[:5] + ['{"id": "r5", "prompt_ids": [7, oops]}\n'] + lines[6:])
    out = os.path.join(TMP, "arr-out.jsonl")
    popen, _ = sbatch("generate.sbatch", "arr", job_env(out, inp, " ".join(extra)), ntasks=1, background=True,
                      array="0-1")
    logs = [os.path.join(TMP, f"arr-{k}.log") for k in range(2)]
    end, array, failed = time.time() + 60, None, False
    while time.time() < end and popen.poll() is None and not failed:
        t1 = open(logs[1]).read() if os.path.exists(logs[1]) else ""
        if array is None and "(array " in t1:
            array = t1.split("(array ")[1].split()[0]
        failed = "grok1-run failed with exit status 1" in t1
        time.sleep(0.05)
    t0 = open(logs[0]).read() if os.path.exists(logs[0]) else ""
    if not check(array and failed and "input line 6" in t1 and "scontrol requeue" in t1 and popen.poll() is None
                 and "done" not in t0, "task 1 did not fail on the bad line, with the repair named, while task 0 ran"):
        print(t1[-3000:])
        popen.kill()
        return
    with open(inp, "w") as f:
        f.writelines(lines)
    p = sh(["scontrol", "requeue", f"{array}_1"])
    print(f"array {array}: task 1 failed on the bad line; fixed, scontrol requeue {array}_1: exit {p.returncode}")
    if not check(p.returncode == 0, f"scontrol requeue: {p.stderr}"):
        popen.kill()
        return
    texts = array_end(popen, logs, "the requeue")
    if texts is None:
        return
    t0, t1 = texts
    ok = check("run 2 started" in t1 and "--resume" in t1.split("run 2 started")[1], "task 1 did not resume its shard")
    ok &= check("every shard is finished" in t0 + t1, "no task merged the shards")
    ok &= check(os.path.exists(out) and open(out, "rb").read() == want,
                "the merged output differs from the one-process run of the fixed input")
    if not ok:
        print(t0[-2500:] + t1[-3500:])


def case_parts():
    """GROK1_CHECKPOINT joined from parts by grok1-link, the parts in a
    "node-local" folder named by HDF5_EXT_PREFIX in the submitting shell
    (none beside the checkpoint): the ranks inherit it, and the output
    equals the one-process run on the one-file checkpoint."""
    if not ARGS.link:
        print("skipped: no grok1-link")
        return
    shared, local = os.path.join(TMP, "shared"), os.path.join(TMP, "local")
    os.makedirs(shared)
    os.makedirs(local)
    for name, extra in (("p0.h5", ["--part", "0-1"]), ("p1.h5", ["--part", "2-3", "--no-embedding"])):
        sh([ARGS.mkckpt, "--config", "tiny", "--seed", "1", "--out", os.path.join(shared, name)] + extra, check=True)
    master = os.path.join(shared, "tiny.h5")
    sh([ARGS.link, master, os.path.join(shared, "p0.h5"), os.path.join(shared, "p1.h5")], check=True)
    for name in ("p0.h5", "p1.h5"):
        shutil.move(os.path.join(shared, name), os.path.join(local, name))
    inp = requests("parts.jsonl", 5, 13, True)
    want = run1("generate", inp, os.path.join(TMP, "parts-ref.jsonl"), ["--max-new-tokens", "6"])
    out = os.path.join(TMP, "parts-out.jsonl")
    env = dict(job_env(out, inp, "--stages 2 --ep 2 --max-new-tokens 6"), GROK1_CHECKPOINT=master,
               HDF5_EXT_PREFIX=local)
    rc, log = sbatch("generate.sbatch", "parts", env, 4)
    print(f"generate.sbatch -n 4 on the parts: exit {rc}")
    ok = check(rc == 0, f"generate.sbatch on a checkpoint in parts exited {rc}")
    ok &= check(os.path.exists(out) and open(out, "rb").read() == want,
                "generate.sbatch on a checkpoint in parts: output differs from the one-process run")
    if not ok:
        print(log[-4000:])


CASES = [case_generate, case_score, case_array, case_array_requeue, case_array_repair, case_array_merge_stopped,
         case_refusals, case_usage_once, case_requeue_stub,
         case_check_input, case_cancel_stub, case_no_progress_stub, case_resume_real, case_parts]


def main():
    global ARGS, TMP, ENV, CKPT
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--mkckpt", required=True)
    ap.add_argument("--link", default="", help="grok1-link (case parts)")
    ap.add_argument("--scripts", required=True, help="the scripts/slurm folder")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--case", action="append", help="run only this case (repeatable)")
    ARGS = ap.parse_args()
    ARGS.run = os.path.abspath(ARGS.run)
    ARGS.scripts = os.path.abspath(ARGS.scripts)

    if os.geteuid() != 0:
        print("SKIP: needs root: this test runs its own slurmd, which must be root to start jobs")
        return 77
    missing = [t for t in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "scancel",
                           "sinfo", "squeue") if not shutil.which(t)]
    if missing:
        print(f"SKIP: not installed: {' '.join(missing)} (apt-get install munge slurmctld slurmd slurm-client)")
        return 77
    # A test run from inside a Slurm job must not talk to that job's cluster.
    ENV = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "GROK1_"))}
    # The node claims 8 CPUs, so Open MPI does not know the 4 ranks share fewer
    # cores: without yield_when_idle their busy polling starves each other.
    ENV.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               OMPI_MCA_mpi_yield_when_idle="1")

    # Short: munge's socket path must fit a sockaddr_un.
    TMP = tempfile.mkdtemp(prefix="grok1-slurm-")
    os.chmod(TMP, 0o755)  # munged wants every folder above its socket searchable
    ENV["SLURM_CONF"] = os.path.join(TMP, "slurm.conf")
    cluster = Cluster(TMP)

    def on_term(signum, frame):
        raise SystemExit(f"FAIL: signal {signum} (test timeout?)")
    signal.signal(signal.SIGTERM, on_term)
    t0 = time.time()
    try:
        try:
            cluster.start()
        except Skip as e:
            print(e)
            return 77
        print(f"Slurm up on localhost in {time.time() - t0:.1f} s ({TMP})")
        CKPT = os.path.join(TMP, "tiny.h5")
        sh([ARGS.mkckpt, "--config", "tiny", "--seed", "1", "--out", CKPT], check=True)
        for case in CASES:
            if ARGS.case and case.__name__[5:] not in ARGS.case:
                continue
            print(f"--- {case.__name__[5:]}")
            case()
    finally:
        cluster.stop()
        if check.failed or ARGS.keep:
            print(f"files kept in {TMP}")
        else:
            shutil.rmtree(TMP, ignore_errors=True)
    print(f"{time.time() - t0:.1f} s; " + ("PASS" if not check.failed else f"FAIL: {len(check.failed)} check(s)"))
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
