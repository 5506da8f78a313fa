#!/usr/bin/env python3
"""A job printing a huge log (issue 15): peak memory, wall time and bytes kept per log byte.

For each size (default 100 MB and 1 GB), the same job — lines of 1 KiB, `yes LINE | head -n N`
— runs three ways:
  floor  `sh -c 'JOB > file'`, measured with /usr/bin/time -v (max RSS, wall);
  run    `gantry run --plain` in a temp repository, with /usr/bin/time -v;
  serve  `gantry serve` watching that repository; the run is triggered over the API and the
         server's peak RSS (VmHWM) and the time from trigger to the run's end are measured.
Bytes kept: the data directory's database (gantry.db with its WAL) after the run, per byte the
job printed. Each gantry run is done twice: with the default per-job log cap (32 MiB), and with
the cap raised above the log's size (everything kept), to show storage per byte of full logs.

Usage: bench/logs.py [--gantry target/release/gantry] [--sizes 100M,1G] [--line-bytes 1024]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINE = 1024  # bytes per line, newline included


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def job(lines):
    return f"yes \"$(head -c {LINE - 1} /dev/zero | tr '\\0' x)\" | head -n {lines}"


def timed(cmd, **kw):
    """(wall seconds, max RSS in MiB) of cmd under /usr/bin/time -v."""
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, **kw)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd} exited {out.returncode}: {out.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", out.stderr).group(1)
    parts = [float(p) for p in wall.split(":")]
    seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return seconds, rss / 1024


def db_bytes(data):
    return sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data)
               if f.startswith("gantry.db") and f != "gantry.db.reserve")


def repo_with(base, lines):
    repo = os.path.join(base, "repo")
    os.makedirs(repo)
    with open(os.path.join(repo, "gantry.yml"), "w") as f:
        f.write(f"name: logs\nstages:\n  - name: build\n    jobs:\n      - name: chatty\n"
                f"        run: {json.dumps(job(lines))}\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "logs"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


def bench_run(gantry, repo, data, cap):
    args = [gantry, "--data-dir", data, "run", "--plain"]
    if cap:
        args += ["--max-job-log-bytes", str(cap)]
    return timed(args, cwd=repo)


def bench_serve(gantry, base, repo, cap):
    conf = os.path.join(base, "gantry.toml")
    with open(conf, "w") as f:
        f.write(f'listen = "127.0.0.1:0"\n[runner]\nmax_job_log_bytes = {cap}\n'
                f'[[projects]]\nname = "logs"\nrepo = "{repo}"\nbranches = ["no-polling"]\n')
    data = os.path.join(base, ".gantry")
    proc = subprocess.Popen([gantry, "serve", "--config", conf], cwd=base,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "serve.log"), "a"))
    try:
        server_file = os.path.join(data, "server.json")
        for _ in range(600):
            if os.path.exists(server_file):
                break
            time.sleep(0.05)
        url = json.load(open(server_file))["url"].replace("http://", "")
        token = open(os.path.join(data, "admin.token")).read().strip()
        host, port = url.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        started = time.monotonic()
        conn.request("POST", "/api/projects/logs/trigger", body=json.dumps({"branch": "main"}), headers=headers)
        answer = json.loads(conn.getresponse().read())
        run = answer["run"]
        status = None
        for _ in range(36000):  # at most an hour, at 0.1 s
            conn.request("GET", f"/api/runs/{run}", headers=headers)
            status = json.loads(conn.getresponse().read())["run"]["status"]
            if status in ("succeeded", "failed", "cancelled", "interrupted"):
                break
            time.sleep(0.1)
        wall = time.monotonic() - started
        hwm = 0
        for line in open(f"/proc/{proc.pid}/status"):
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
        return wall, hwm, status, db_bytes(data)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    global LINE
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target/release/gantry"))
    ap.add_argument("--sizes", default="100M,1G")
    ap.add_argument("--line-bytes", type=int, default=LINE, help="bytes per line, newline included (at least 2)")
    args = ap.parse_args()
    LINE = max(2, args.line_bytes)
    gantry = os.path.abspath(args.gantry)
    print(load_line())
    print(f"lines of {LINE} bytes")
    print(f"{'size':>6} {'how':<22} {'wall s':>8} {'max RSS MiB':>12} {'kept bytes/log byte':>20}")
    for text in args.sizes.split(","):
        total = size_bytes(text)
        lines = total // LINE
        printed = lines * LINE
        base = tempfile.mkdtemp(prefix="gantry-bench-logs-")
        try:
            repo = repo_with(base, lines)
            out = os.path.join(base, "floor.log")
            wall, rss = timed(["sh", "-c", f"{job(lines)} > {out}"])
            print(f"{text:>6} {'floor: sh > file':<22} {wall:8.2f} {rss:12.1f} {os.path.getsize(out) / printed:20.3f}")
            os.remove(out)
            for cap, name in ((None, "gantry run (32 MiB cap)"), (printed * 2, "gantry run (no cap)")):
                data = os.path.join(base, f"data-{cap}")
                wall, rss = bench_run(gantry, repo, data, cap)
                print(f"{text:>6} {name:<22} {wall:8.2f} {rss:12.1f} {db_bytes(data) / printed:20.3f}")
                shutil.rmtree(data)
            for cap, name in ((32 << 20, "gantry serve (32 MiB)"), (printed * 2, "gantry serve (no cap)")):
                serve_base = os.path.join(base, f"serve-{cap}")
                os.makedirs(serve_base)
                wall, hwm, status, kept = bench_serve(gantry, serve_base, repo, cap)
                print(f"{text:>6} {name:<22} {wall:8.2f} {hwm:12.1f} {kept / printed:20.3f}  ({status})")
                shutil.rmtree(serve_base)
        finally:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
