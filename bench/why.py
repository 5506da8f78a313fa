#!/usr/bin/env python3
"""Diagnosis speed and memory of `gantry why` (issue 7).

1. `gantry why --log FILE` on generated build logs of 10 MB and 100 MB (ordinary build noise,
   a failing test in the middle, a stack of errors at the end): wall time (median of 5) and peak
   RSS (of the process, from wait4's rusage). Side by side on the same files: `grep -c -i -F -f
   PATTERNS`, with the same patterns gantry's rules hold — one pass of a very fast substring
   scanner over the same bytes, as a floor.
2. End to end: a run whose job printed 100 MB (stored line by line in SQLite by `gantry run`),
   diagnosed with `gantry why --json` (reads the lines back from the database): time and peak RSS.

Usage: bench/why.py [--gantry target/release/gantry] [--skip-run]
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATTERNS = ["connection refused", "permission denied", "no space left on device", "accessdenied", "test result: failed",
            "out of memory", "command not found", "address already in use", "expiredtoken", "could not resolve host",
            "authentication failed", "does not appear to be a git repository", "already exists", "parameter not set",
            "memoryerror", "--- fail:", "assertionerror", "panicked at", "certificate has expired", "nosuchkey"]


def make_log(path, megabytes):
    noise = [
        "   Compiling serde v1.0.229 (registry+https://index.crates.io)\n",
        "[INFO] Downloading from central: https://repo.example/maven2/org/example/lib/1.2.3/lib-1.2.3.pom\n",
        "npm WARN deprecated glob@7.2.3: Glob versions prior to v9 are no longer supported\n",
        "test tests::parses_the_config_file_with_defaults ... ok\n",
        "2026-11-26T12:00:00.123Z INFO  worker{id=3}: processed batch size=512 elapsed=12ms\n",
    ]
    target = megabytes * 1024 * 1024
    written = 0
    with open(path, "w") as f:
        i = 0
        while written < target:
            line = noise[i % len(noise)]
            if i == 700_000:
                line = "test tests::rounds_half_up ... FAILED\n"
            f.write(line)
            written += len(line)
            i += 1
        f.write("test result: FAILED. 812 passed; 1 failed; 0 ignored\n")


def timed(cmd, cwd=None, env=None):
    """Wall seconds and peak RSS (KiB) of one run of cmd. The RSS comes from GNU time (a small
    parent: a Python parent's own RSS would carry over the exec into ru_maxrss)."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"{cmd} failed: {proc.stderr}")
    return elapsed, int(proc.stderr.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target/release/gantry"))
    ap.add_argument("--skip-run", action="store_true")
    args = ap.parse_args()
    print(load_line(), flush=True)
    base = tempfile.mkdtemp(prefix="gantry-why-bench-")
    pat = os.path.join(base, "patterns")
    with open(pat, "w") as f:
        f.write("\n".join(PATTERNS) + "\n")
    print("median of 5 runs each; peak RSS of the process")
    for mb in (10, 100):
        log = os.path.join(base, f"build-{mb}.log")
        make_log(log, mb)
        size = os.path.getsize(log) / 1024 / 1024
        rows = {}
        for name, cmd in [("gantry why --log", [args.gantry, "why", "--log", log]), ("grep -c -i -F -f", ["grep", "-c", "-i", "-F", "-f", pat, log])]:
            runs = [timed(cmd) for _ in range(5)]
            rows[name] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
        g, r = rows["gantry why --log"], rows["grep -c -i -F -f"]
        print(f"{size:6.1f} MiB log: gantry why {g[0] * 1000:7.1f} ms, {g[1] / 1024:5.1f} MiB peak | grep {r[0] * 1000:7.1f} ms, {r[1] / 1024:5.1f} MiB | time ratio gantry/grep {g[0] / r[0]:.2f}")
    out = subprocess.run([args.gantry, "why", "--log", os.path.join(base, "build-100.log")], capture_output=True, text=True).stdout
    print("diagnosis of the 100 MB log:", out.splitlines()[0] if out else "(none)")
    if args.skip_run:
        return
    repo = os.path.join(base, "repo")
    os.makedirs(repo)
    log = os.path.join(base, "build-100.log")
    with open(os.path.join(repo, "gantry.yml"), "w") as f:
        f.write(f"stages:\n  - name: build\n    jobs:\n      - name: big\n        run: cat {log}; exit 1\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.email=b@b", "-c", "user.name=b", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "x"], cwd=repo, check=True)
    env = dict(os.environ, GANTRY_HOME=os.path.join(base, "data"))
    t0 = time.perf_counter()
    subprocess.run([args.gantry, "run", "--quiet", "--plain", repo], env=env, stdout=subprocess.DEVNULL)
    stored = time.perf_counter() - t0
    runs = [timed([args.gantry, "why", "--json"], cwd=repo, env=env) for _ in range(3)]
    print(f"end to end: `gantry run` stored the 100 MB log in {stored:.1f} s; `gantry why --json` on that run: "
          f"{statistics.median(r[0] for r in runs) * 1000:.0f} ms (median of 3), {max(r[1] for r in runs) / 1024:.1f} MiB peak")


if __name__ == "__main__":
    main()
