#!/usr/bin/env python3
"""Step overhead of `gantry run` beside GNU make and a plain shell loop.

The same pipeline of N one-line steps (each appends a nanosecond timestamp to a file) runs
through three runners, interleaved (gantry, make, shell; make, shell, gantry; ...: the order
turns each repetition), so that machine noise hits all three alike. Every runner starts each step as its own `sh -c`.

Measured per run, reported as medians over the repetitions:
  first  time from invocation to the first step's timestamp
  gap    median gap between consecutive steps' timestamps
  done   time from invocation to the run recorded as finished (gantry: `finished_at` in its
         database; make and shell: process exit)
  rec    gantry only: from the last step's timestamp to the run's `finished_at` (kept in whole
         milliseconds, so this reads up to 1 ms low)
  exit   from the last step's timestamp to the runner's exit, which comes after the record

With --baseline BIN, a second gantry binary (an older build, say) runs as a fourth runner in
the same interleaving, with a data directory of its own: a before/after from one run.

Usage: bench/pipeline.py [--reps 7] [--steps 20,200] [--gantry target/release/gantry] [--baseline BIN]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = None


def sh(cmd, cwd=None, env=None):
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


def make_repo(base, steps, out):
    repo = os.path.join(base, f"repo{steps}")
    os.makedirs(repo)
    lines = ["stages:", "  - name: bench", "    jobs:", "      - name: steps", "        steps:"]
    lines += [f"          - date +%s%N >> {out}" for _ in range(steps)]
    with open(os.path.join(repo, "gantry.yml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(repo, "Makefile"), "w") as f:
        f.write("all:\n" + "".join(f"\tdate +%s%N >> {out}\n" for _ in range(steps)))
    sh(["git", "init", "-q", "-b", "main"], cwd=repo)
    sh(["git", "-c", "user.email=b@b", "-c", "user.name=bench", "add", "-A"], cwd=repo)
    sh(["git", "-c", "user.email=b@b", "-c", "user.name=bench", "commit", "-qm", "bench"], cwd=repo)
    return repo


def read_stamps(out):
    with open(out) as f:
        return [int(l) for l in f.read().split()]


def command(kind, gantry, repo, steps, out):
    """The command line of a runner (gantry, make or shell) running `repo`'s `steps` steps."""
    if kind == "gantry":
        return [gantry, "run", "--plain", "--quiet", repo]
    if kind == "make":
        return ["make", "-s", "-C", repo, "-f", "Makefile"]
    return ["sh", "-c", f"i=0; while [ $i -lt {steps} ]; do sh -c 'date +%s%N >> {out}'; i=$((i+1)); done"]


def measure(kind, repo, steps, out, gantry, data):
    if os.path.exists(out):
        os.remove(out)
    if kind == "baseline":
        gantry, data = BASELINE, data + "-baseline"
    env = dict(os.environ, GANTRY_HOME=data)
    cmd = command("gantry" if kind == "baseline" else kind, gantry, repo, steps, out)
    t0 = time.time_ns()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_exit = time.time_ns()
    if proc.returncode != 0:
        sys.exit(f"{kind} failed: {proc.stderr.decode()}")
    stamps = read_stamps(out)
    assert len(stamps) == steps, (kind, len(stamps))
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    if kind in ("gantry", "baseline"):
        show = subprocess.run([gantry, "show", "--json"], env=env, capture_output=True, check=True, cwd=repo)
        finished_ms = json.loads(show.stdout)["run"]["finished_at"]
        done = finished_ms * 1_000_000 - t0
        rec = finished_ms * 1_000_000 - stamps[-1]
    else:
        done = t_exit - t0
        rec = 0
    return {"first": stamps[0] - t0, "gap": statistics.median(gaps), "done": done, "rec": rec,
            "exit": t_exit - stamps[-1]}


def ms(ns):
    return f"{ns / 1e6:8.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", default="20,200")
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target/release/gantry"))
    ap.add_argument("--baseline", help="another gantry binary, measured in the same interleaving")
    args = ap.parse_args()
    global BASELINE
    BASELINE = args.baseline
    print(load_line(), flush=True)
    if not os.path.exists(args.gantry):
        sys.exit(f"{args.gantry} not found: run `cargo build --release` first")
    kinds = ["gantry"] + (["baseline"] if args.baseline else []) + ["make", "shell"]
    with tempfile.TemporaryDirectory() as base:
        out = os.path.join(base, "stamps")
        data = os.path.join(base, "data")
        results = {}
        for steps in [int(s) for s in args.steps.split(",")]:
            repo = make_repo(base, steps, out)
            for k in kinds[: 2 if args.baseline else 1]:
                measure(k, repo, steps, out, args.gantry, data)  # warm caches once
            samples = {k: [] for k in kinds}
            for rep in range(args.reps):
                # The order turns each repetition: a gantry started right after another one
                # starts faster than one started after the shell loop (bench/README.md, "a run
                # started after a pause"), so no runner always follows the same one.
                turn = rep % len(kinds)
                for k in kinds[turn:] + kinds[:turn]:
                    samples[k].append(measure(k, repo, steps, out, args.gantry, data))
            results[steps] = {k: {m: statistics.median(s[m] for s in samples[k]) for m in ("first", "gap", "done", "rec", "exit")} for k in kinds}

    print(f"medians of {args.reps} interleaved runs, milliseconds")
    print(f"{'steps':>5} {'runner':<8} {'first':>8} {'gap':>8} {'done':>8} {'rec':>8} {'exit':>8}   gap-shell   first/shell  done/shell")
    for steps, by_kind in results.items():
        shell = by_kind["shell"]
        for k in kinds:
            r = by_kind[k]
            print(f"{steps:>5} {k:<8} {ms(r['first'])} {ms(r['gap'])} {ms(r['done'])} {ms(r['rec']) if k in ('gantry', 'baseline') else '       -'} {ms(r['exit'])}   {ms(r['gap'] - shell['gap'])}    {r['first'] / shell['first']:8.2f}  {r['done'] / shell['done']:8.2f}")
    if len(results) >= 2:
        small, large = sorted(results)[0], sorted(results)[-1]
        g_small, g_large = results[small]["gantry"]["gap"], results[large]["gantry"]["gap"]
        print(f"gantry gap growth from {small} to {large} steps: {g_large / g_small:.2f}x ({ms(g_small).strip()} -> {ms(g_large).strip()} ms)")


if __name__ == "__main__":
    main()
