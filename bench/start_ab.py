#!/usr/bin/env python3
"""Invocation to first step, and the gap between steps, of several gantry binaries, interleaved.

Each binary runs the same five-step pipeline (each step appends a nanosecond timestamp to a
file) N times, in turn (A, B, C; A, B, C; ...), each with a data directory of its own, so that
machine noise hits them alike. Prints per binary: the median and minimum time from invocation
to the first step's timestamp, and the median gap between consecutive steps.

Usage: N=25 bench/start_ab.py BIN [BIN ...]
"""
import sys, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line  # noqa: E402
print(load_line(), flush=True)
import subprocess, time, statistics, tempfile
bins = sys.argv[1:]
base = tempfile.mkdtemp()
repo = os.path.join(base, "repo"); os.makedirs(repo)
out = os.path.join(base, "out")
open(os.path.join(repo, "gantry.yml"), "w").write("stages:\n  - name: b\n    jobs:\n      - name: s\n        steps:\n" + "".join(f"          - date +%s%N >> {out}\n" for _ in range(5)))
for c in (["git","init","-q","-b","main"],["git","add","-A"],["git","-c","user.email=a@a","-c","user.name=a","commit","-qm","x"]):
    subprocess.run(c, cwd=repo, check=True)
res = {b: ([], []) for b in bins}
for i in range(int(os.environ.get("N", "25"))):
    for b in bins:
        if os.path.exists(out): os.remove(out)
        env = dict(os.environ, GANTRY_HOME=os.path.join(base, "data-" + str(bins.index(b))))
        t0 = time.time_ns()
        subprocess.run([b, "run", "--plain", "--quiet", repo], env=env, stdout=subprocess.DEVNULL, check=True)
        st = [int(x) for x in open(out).read().split()]
        res[b][0].append((st[0] - t0) / 1e6)
        res[b][1].append(statistics.median([(y - x) / 1e6 for x, y in zip(st, st[1:])]))
for b in bins:
    f, g = res[b]
    print(f"{b:40} first p50 {statistics.median(f):6.2f} min {min(f):6.2f}  gap p50 {statistics.median(g):5.2f}")
