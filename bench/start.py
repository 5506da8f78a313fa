#!/usr/bin/env python3
"""Invocation to first step, by what ran just before: the same command, other programs, nothing.

On the 2-core development VM a program starts much slower when its own code and data are not
what the machine ran last (bench/README.md, "what ran before decides the start"). This script
measures that for each runner of bench/pipeline.py under three conditions, each before every
measured run:

  warm    the same command, run once unmeasured right before
  others  one second of other short programs (`sh -c date` again and again)
  idle    one second asleep

Runners: `gantry run` of a 20-step pipeline (each step appends a nanosecond timestamp to a
file), GNU make and a shell loop running the same steps, and `gantry --version` (the time a
gantry process takes to start and exit, with no work: the floor under any gantry command).
With --baseline BIN, another gantry binary (an older build) runs as one more runner, with a data
directory of its own. The order of the runners turns each repetition. Prints medians in milliseconds, and gantry's
first step against the shell loop's under the same condition.

Usage: bench/start.py [--reps 9] [--gantry target/release/gantry] [--baseline BIN]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line  # noqa: E402
import pipeline  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 20
CONDITIONS = ("warm", "others", "idle")
RUNNERS = ("gantry", "make", "shell", "version")
BASELINE = None


def command(kind, gantry, repo, out):
    if kind == "version":
        return [gantry, "--version"]
    if kind == "baseline":
        return pipeline.command("gantry", BASELINE, repo, STEPS, out)
    return pipeline.command(kind, gantry, repo, STEPS, out)


def once(kind, gantry, repo, out, env):
    """Milliseconds from invocation to the first step (`version`: to the process's exit)."""
    if os.path.exists(out):
        os.remove(out)
    if kind == "baseline":
        env = dict(env, GANTRY_HOME=env["GANTRY_HOME"] + "-baseline")
    cmd = command(kind, gantry, repo, out)
    t0 = time.time_ns()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    t_exit = time.time_ns()
    if proc.returncode != 0:
        sys.exit(f"{kind} failed: {proc.stderr.decode()}")
    if kind == "version":
        return (t_exit - t0) / 1e6
    stamps = pipeline.read_stamps(out)
    assert len(stamps) == STEPS, (kind, len(stamps))
    return (stamps[0] - t0) / 1e6


def before(condition, kind, gantry, repo, out, env):
    if condition == "warm":
        once(kind, gantry, repo, out, env)
    elif condition == "others":
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            subprocess.run(["sh", "-c", "date >/dev/null"], check=True)
    else:
        time.sleep(1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target/release/gantry"))
    ap.add_argument("--baseline", help="another gantry binary, measured in the same turns")
    args = ap.parse_args()
    global BASELINE
    BASELINE = args.baseline
    runners = RUNNERS[:1] + (("baseline",) if args.baseline else ()) + RUNNERS[1:]
    print(load_line(), flush=True)
    if not os.path.exists(args.gantry):
        sys.exit(f"{args.gantry} not found: run `cargo build --release` first")
    with tempfile.TemporaryDirectory() as base:
        out = os.path.join(base, "stamps")
        repo = pipeline.make_repo(base, STEPS, out)
        env = dict(os.environ, GANTRY_HOME=os.path.join(base, "data"))
        for kind in runners[: 2 if args.baseline else 1]:
            once(kind, args.gantry, repo, out, env)  # the data directory, made once
        samples = {(c, k): [] for c in CONDITIONS for k in runners}
        for rep in range(args.reps):
            turn = rep % len(runners)
            for condition in CONDITIONS:
                for kind in runners[turn:] + runners[:turn]:
                    before(condition, kind, args.gantry, repo, out, env)
                    samples[(condition, kind)].append(once(kind, args.gantry, repo, out, env))
    print(f"medians of {args.reps} runs, milliseconds from invocation to the first step "
          f"(version: to its exit)")
    print(f"{'before':<8}" + "".join(f"{k:>9}" for k in runners) + "   gantry-shell  gantry/shell")
    for condition in CONDITIONS:
        p50 = {k: statistics.median(samples[(condition, k)]) for k in runners}
        print(f"{condition:<8}" + "".join(f"{p50[k]:9.2f}" for k in runners)
              + f"   {p50['gantry'] - p50['shell']:12.2f}  {p50['gantry'] / p50['shell']:12.2f}")


if __name__ == "__main__":
    main()
