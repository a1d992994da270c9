#!/usr/bin/python3
"""Mutation testing by hand-made mutants (not run by CI; docs/HACKING.md).

usage: BLD=BUILD_DIR [REPO=CHECKOUT] [NOMEM=0|only] [TARGETS='T ...'] scripts/mutants.py SPEC RESULTS.tsv [ID...]

Each line of SPEC is  ID | FILE | LINE | OLD | NEW | TEST TEST ...  (fields
split on ' | '; OLD must occur on LINE of FILE, else the line is reported
BADSPEC; NEW may be empty). Each mutant is applied to REPO's FILE, built
(ninja -j2 in BLD, a build of REPO), its tests run one at a time in order
(meson test --no-rebuild) up to the first that fails, and FILE restored
with git checkout, so REPO must have no other change to FILE. A line per
mutant goes to stdout and RESULTS.tsv: KILLED by TEST, SURVIVED, or
STILLBORN (the build failed: a mutant -Werror refuses). NOMEM=0 leaves out
the cli_nomem_* tests named, NOMEM=only runs only those. TARGETS names the
ninja targets each mutant rebuilds (default: all), e.g. the emulated cuda
tests alone. A TEST written NAME@VAR=VALUE[,VAR=VALUE] runs meson's test
NAME with those variables in its environment (G1_TEST_ONLY=attention runs
one group of test_cuda_ops: a quick kill first, the whole test after)."""
import subprocess, sys, time, os
REPO, B = os.environ.get('REPO', os.getcwd()), os.environ['BLD']
spec, out = sys.argv[1], sys.argv[2]
only = set(sys.argv[3:])
targets = os.environ.get('TARGETS', '')
def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, cwd=REPO, capture_output=True, text=True, **kw)
for raw in open(spec):
    if not raw.strip() or raw.startswith('#'):
        continue
    f = [x.strip() for x in raw.rstrip('\n').split(' | ')]
    mid, path, line, old, new, tests = f[0], f[1], int(f[2]), f[3], f[4], f[5].split()
    if os.environ.get('NOMEM') == '0':
        tests = [t for t in tests if not t.startswith('cli_nomem')]
    elif os.environ.get('NOMEM') == 'only':
        tests = [t for t in tests if t.startswith('cli_nomem')]
    if only and mid not in only:
        continue
    t0 = time.time()
    p = os.path.join(REPO, path)
    src = open(p).read().split('\n')
    if old not in src[line - 1]:
        res = 'BADSPEC: %r not on line: %r' % (old, src[line - 1])
    else:
        src[line - 1] = src[line - 1].replace(old, new, 1)
        open(p, 'w').write('\n'.join(src))
        b = sh('nice -n 10 ninja -C %s -j2 %s' % (B, targets))
        if b.returncode:
            err = [l for l in (b.stdout + b.stderr).split('\n') if 'error:' in l]
            res = 'STILLBORN (build fails%s)' % (': ' + err[0].strip()[-150:] if err else '')
        else:
            res = 'SURVIVED'
            for t in tests:
                name, _, env = t.partition('@')
                env = ' '.join(env.split(',')) if env else ''
                r = sh('%s nice -n 10 meson test -C %s --no-rebuild %s' % ('env ' + env if env else '', B, name))
                if r.returncode:
                    res = 'KILLED by ' + t
                    break
        sh('git checkout -- ' + path)
    dt = time.time() - t0
    rec = '%s\t%s:%d\t%s -> %s\t%s\t%.0fs' % (mid, path, line, old, new or '(deleted)', res, dt)
    print(rec, flush=True)
    with open(out, 'a') as o:
        o.write(rec + '\n')
sh('nice -n 10 ninja -C %s -j2 %s' % (B, targets))
