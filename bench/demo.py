#!/usr/bin/env python3
"""`gantry demo`: time to production serving 1.0.0 through its router and to the canary's first
verdict (as the demo prints them, measured from its start), and Ctrl-C to exit at moments of
the story.

Each demo runs in a directory of its own with production's router on a free port. Part 1 runs
`gantry demo --exit` N times. Part 2 starts the demo, waits for a line that marks a moment,
sends SIGINT and times the exit; afterwards no process of the demo may be left (its directory
is searched for in every process's command line, environment and working directory).

Usage: bench/demo.py [--gantry BIN] [--runs N]
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, load_line  # noqa: E402

MOMENTS = [
    ("starting", "repository: "),
    ("mid-build", "✓ build/package"),
    ("mid-deploy", "staging · release 1: deploying"),
    ("mid-canary", "step 1 of 2: the router sends 10%"),
    ("idle", "the demo runs until Ctrl-C"),
]


def env_for(tmp):
    env = dict(os.environ, TMPDIR=tmp)
    for k in ("GANTRY_HOME", "GANTRY_SERVER", "GANTRY_TOKEN", "DOCKER_HOST"):
        env.pop(k, None)
    return env


def left_in(tmp):
    found = []
    needle = tmp.encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            stat = open(f"/proc/{pid}/stat").read()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            blobs = [open(f"/proc/{pid}/cmdline", "rb").read(), open(f"/proc/{pid}/environ", "rb").read()]
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if any(needle in b for b in blobs) or cwd.startswith(tmp):
            found.append(pid)
    return found


def story(gantry, runs):
    prod, verdict, total = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = os.path.realpath(tmp)
            t0 = time.monotonic()
            out = subprocess.run([gantry, "demo", "--exit", "--port", str(free_port())], cwd=tmp,
                                 env=env_for(tmp), stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, timeout=300)
            total.append(time.monotonic() - t0)
            if out.returncode != 0:
                sys.exit(f"gantry demo --exit failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
            m = re.search(r"production first served ([\d.]+) s after the demo began; "
                          r"the canary's first verdict came at ([\d.]+) s", out.stdout)
            prod.append(float(m.group(1)))
            verdict.append(float(m.group(2)))
    return prod, verdict, total


def ctrl_c(gantry, marker):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = os.path.realpath(tmp)
        p = subprocess.Popen([gantry, "demo", "--port", str(free_port())], cwd=tmp, env=env_for(tmp),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        seen = threading.Event()
        lines = []

        def read():
            for line in p.stdout:
                lines.append(line)
                if marker in line:
                    seen.set()
        threading.Thread(target=read, daemon=True).start()
        if not seen.wait(180):
            p.kill()
            sys.exit(f"no `{marker}`:\n{''.join(lines)}")
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        code = p.wait(timeout=30)
        took = time.monotonic() - t0
        for _ in range(100):
            left = left_in(tmp)
            if not left:
                break
            time.sleep(0.02)
        return code, took, left


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default="target/release/gantry")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    gantry = os.path.abspath(a.gantry)
    print(load_line(), flush=True)
    prod, verdict, total = story(gantry, a.runs)
    fmt = lambda xs: f"median {statistics.median(xs):5.1f} s  min {min(xs):5.1f}  max {max(xs):5.1f}"
    print(f"gantry demo --exit, {a.runs} runs")
    print(f"  start -> production serving 1.0.0 through its router: {fmt(prod)}  (goal < 20 s)")
    print(f"  start -> the canary's first verdict:                  {fmt(verdict)}")
    print(f"  start -> exit (story, then everything stopped):       {fmt(total)}")
    print("Ctrl-C -> exit (goal: within 2 s, nothing left)")
    for name, marker in MOMENTS:
        code, took, left = ctrl_c(gantry, marker)
        print(f"  {name:<11} exit {code}  {took * 1000:6.0f} ms  left running: {len(left)}")
    print(load_line(), flush=True)


if __name__ == "__main__":
    main()
