#!/usr/bin/env python3
"""Rollback latency by artifact size (issue 21): from starting `gantry rollback` to a polling
client seeing only the other release, with the release's artifact carrying a blob of random
bytes of each size (so compression cannot shrink it), two releases kept running behind the
router. Several gantry binaries (say, before and after a change) are measured in the same run,
their rounds interleaved size by size.

Uses bench/deploy.py's service, pipeline, poller and timing. Needs `cargo build --release`.
Usage: bench/rollback.py [--gantry target/release/gantry ...] [--sizes 1,1024] [--switches 10]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy  # noqa: E402
from benchlib import load_line  # noqa: E402

BASE_PIPELINE = deploy.PIPELINE
MARK = 'echo "$APP_VERSION" > dist/VERSION'
assert MARK in BASE_PIPELINE, "bench/deploy.py's pipeline changed; update this script"


def measure(gantry, mib, switches):
    # The blob is written by the build step, so each release's artifact has it.
    deploy.PIPELINE = BASE_PIPELINE.replace(
        MARK, MARK + f" && head -c {mib}M /dev/urandom > dist/blob")
    base = tempfile.mkdtemp(prefix="gantry-bench-rollback-")
    g = None
    try:
        g = deploy.Gantry(gantry, base)
        poller = deploy.Poller(g.port)
        lat = deploy.timed_switches("gantry", poller, g.switch, g.repo, switches)
        poller.close()
        return lat
    finally:
        if g is not None:
            g.stop()
        shutil.rmtree(base, ignore_errors=True)
        deploy.PIPELINE = BASE_PIPELINE


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", action="append",
                    help="a gantry binary (repeat to compare); default target/release/gantry")
    ap.add_argument("--sizes", default="1,1024", help="artifact blob sizes in MiB, comma-separated")
    ap.add_argument("--switches", type=int, default=10)
    args = ap.parse_args()
    binaries = args.gantry or [os.path.join(deploy.ROOT, "target", "release", "gantry")]
    sizes = [int(s) for s in args.sizes.split(",")]
    print(load_line())
    print(f"rollback switch latency, {args.switches} switches per size and binary "
          "(command start -> a polling client sees only the other release), ms")
    print(f"{'MiB':>6}  {'binary':<40} {'median':>8} {'min':>8} {'max':>8}")
    results = {}
    for mib in sizes:
        for b in binaries:
            lat = measure(b, mib, args.switches)
            results[(mib, b)] = statistics.median(lat)
            print(f"{mib:>6}  {b:<40} {statistics.median(lat):8.1f} {min(lat):8.1f} {max(lat):8.1f}",
                  flush=True)
    if len(sizes) > 1:
        for b in binaries:
            print(f"{b}: {sizes[-1]} MiB / {sizes[0]} MiB = "
                  f"{results[(sizes[-1], b)] / results[(sizes[0], b)]:.2f}x")
    if len(binaries) > 1:
        for mib in sizes:
            print(f"{mib} MiB: {binaries[0]} / {binaries[-1]} = "
                  f"{results[(mib, binaries[0])] / results[(mib, binaries[-1])]:.1f}x")
    print(load_line())


if __name__ == "__main__":
    main()
