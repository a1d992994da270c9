#!/usr/bin/env python3
"""grok1-tokenize's command line on the committed demo tokenizer: --help,
usage errors, bad lines (message naming the line, an error line in place,
exit 1), a bad model file, --pieces. Exit 0 pass, 1 fail."""
import json, os, subprocess, sys, tempfile

tool, src = sys.argv[1], sys.argv[2]
model = os.path.join(src, "checkpoints", "demo-tokenizer", "demo.model")
bad = 0


def check(cond, what):
    global bad
    if not cond:
        bad += 1
        print("FAIL:", what)


def run(args, inp=""):
    return subprocess.run([tool] + args, input=inp.encode(), capture_output=True)


r = run(["--help"])
check(r.returncode == 0 and b"encode" in r.stdout, "--help")
check(run([]).returncode == 2, "no arguments: exit 2")
check(run(["--tokenizer", model, "frobnicate"]).returncode == 2, "unknown mode: exit 2")
r = run(["--tokenizer", "/nonexistent.model", "encode"], "{}\n")
check(r.returncode == 1 and b"nonexistent" in r.stderr, "missing model file")
with tempfile.NamedTemporaryFile() as f:
    f.write(b"\x0a\x05hello")
    f.flush()
    r = run(["--tokenizer", f.name, "encode"], "{}\n")
    check(r.returncode == 1 and r.stderr, f"garbage model: {r.stderr}")
# a file far larger than any tokenizer (a checkpoint given by mistake), an
# endless one and a directory: refused, not read whole into memory
with tempfile.TemporaryDirectory() as d:
    big = os.path.join(d, "big.model")
    with open(big, "wb") as f:
        f.truncate(65 << 20)
    for path, words in ((big, b"larger than 64 MiB"), ("/dev/zero", b"larger than 64 MiB"), (d, b"Is a directory")):
        r = run(["--tokenizer", path, "encode"], "{}\n")
        check(r.returncode == 1 and words in r.stderr, f"tokenizer {path}: exit {r.returncode}, {r.stderr[-200:]}")

r = run(["--tokenizer", model, "encode", "--pieces"], '{"text": "hello 123", "id": "a"}\n{"text": "x"}\n')
out = [json.loads(l) for l in r.stdout.decode().splitlines()]
check(r.returncode == 0 and len(out) == 2 and out[0]["id"] == "a" and len(out[0]["ids"]) == len(out[0]["pieces"]),
      f"encode --pieces: {out}")
ids = out[0]["ids"]
r = run(["--tokenizer", model, "decode"], json.dumps({"ids": ids}) + "\n")
check(r.returncode == 0 and json.loads(r.stdout)["text"] == "hello 123", f"decode round trip: {r.stdout}")

lines = ['{"text": "ok"}', "not json", '{"text": 5}', '{"ids": [1]}', "", '{"text": "fine"}']
r = run(["--tokenizer", model, "encode"], "\n".join(lines) + "\n")
outl = r.stdout.decode().splitlines()
err = r.stderr.decode()
check(r.returncode == 1, "bad lines: exit status 1")
check(len(outl) == len(lines), f"one output line per input line: {len(outl)}")
for n in (2, 3, 4, 5):
    check(f"line {n}:" in err, f"message naming line {n}: {err}")
check("line 1:" not in err and "line 6:" not in err, "good lines not reported")
check("error" in json.loads(outl[1]) and "ids" in json.loads(outl[5]), "error line in place, later lines still done")
check(json.loads(outl[1])["error"].startswith("line 2: ") and json.loads(outl[1])["error"] != "line 2: bad request",
      f"the error line does not say why: {outl[1]}")
r = run(["--tokenizer", model, "decode"], '{"ids": [1, 512]}\n{"ids": [1, "x"]}\n{"ids": [-1]}\n')
err = r.stderr.decode()
check(r.returncode == 1 and "line 1:" in err and "512" in err and "line 2:" in err and "line 3:" in err, f"bad ids: {err}")
r = run(["--tokenizer", model, "encode"], '\ufeff{"text": "bom"}\n{"text": "ok"}\n')
err = r.stderr.decode()
check(r.returncode == 1 and "line 1:" in err and "byte-order mark" in err and "line 2" not in err,
      f"a byte-order mark: {err}")
print("OK" if not bad else f"{bad} failures")
sys.exit(1 if bad else 0)
