#!/usr/bin/env python3
"""The dashboard's server time and page weights (issue 16).

A data directory gets 10,000 runs of one project over 12 branches (each with a stage, a job, a
step and 5 log lines) and one more run whose job printed a 1 GiB log (lines of 100 bytes),
written straight into gantry.db with sqlite3 after `gantry serve` made the schema. Then the
server runs on it and, logged in like a browser (the login form, then the session cookie),
each page is fetched 50 times one after another: time to the first byte and to the last, p50
and p95, and the page's weight in bytes. Goals from the issue: overview and run page under
20 ms p95 with 10,000 runs; the run page of the 1 GiB log first byte under 50 ms and under
100 KB.

Usage: bench/dashboard.py [--gantry target/release/gantry] [--log-bytes 1G] [--runs 10000]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINE = "name: hello\nstages:\n  - name: build\n    jobs:\n      - name: b\n        run: echo hi\n"


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def start(gantry, work):
    log = open(os.path.join(work, "serve.log"), "a")
    proc = subprocess.Popen([gantry, "serve", "--config", "gantry.toml"], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=log)
    server = os.path.join(work, ".gantry", "server.json")
    end = time.time() + 60
    while time.time() < end and not os.path.exists(server):
        time.sleep(0.05)
    url = json.load(open(server))["url"]
    return proc, url


def stop(proc, work):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    try:
        os.remove(os.path.join(work, ".gantry", "server.json"))
    except FileNotFoundError:
        pass


def fill(db, runs, log_bytes):
    """10,000 runs with their parts, and one run with a huge log; returns that run's id."""
    c = sqlite3.connect(db)
    c.execute("PRAGMA synchronous=OFF")
    project = c.execute("SELECT id FROM projects WHERE name='hello'").fetchone()[0]
    now = int(time.time() * 1000)
    statuses = ["succeeded", "succeeded", "succeeded", "failed"]
    for i in range(runs):
        at = now - (runs - i) * 60_000
        status = statuses[i % 4]
        branch = "main" if i % 3 else f"feature-{i % 11}"
        cur = c.execute(
            "INSERT INTO runs (project_id, commit_sha, branch, pipeline_file, trigger_kind, status,"
            " created_at, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (project, f"{i:040x}", branch, "gantry.yml", "push", status, at, at, at + 4_000))
        run = cur.lastrowid
        stage = c.execute("INSERT INTO stages (run_id, position, name, kind, status, started_at,"
                          " finished_at) VALUES (?,0,'build','jobs',?,?,?)",
                          (run, status, at, at + 4_000)).lastrowid
        job = c.execute("INSERT INTO jobs (run_id, stage_id, position, name, status, attempt,"
                        " allow_failure, exit_code, started_at, finished_at)"
                        " VALUES (?,?,0,'b',?,1,0,0,?,?)",
                        (run, stage, status, at, at + 4_000)).lastrowid
        step = c.execute("INSERT INTO steps (job_id, attempt, position, name, status, exit_code,"
                         " started_at, finished_at) VALUES (?,1,0,'echo hi',?,0,?,?)",
                         (job, status, at, at + 4_000)).lastrowid
        c.executemany("INSERT INTO log_lines (step_id, line, at, stream, text) VALUES (?,?,?,?,?)",
                      [(step, n, at, "stdout", f"line {n} of run {run}") for n in range(1, 6)])
    c.commit()
    at = now
    run = c.execute(
        "INSERT INTO runs (project_id, commit_sha, branch, pipeline_file, trigger_kind, status,"
        " created_at, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (project, "f" * 40, "main", "gantry.yml", "push", "succeeded", at, at, at + 60_000)).lastrowid
    stage = c.execute("INSERT INTO stages (run_id, position, name, kind, status, started_at,"
                      " finished_at) VALUES (?,0,'build','jobs','succeeded',?,?)",
                      (run, at, at + 60_000)).lastrowid
    job = c.execute("INSERT INTO jobs (run_id, stage_id, position, name, status, attempt,"
                    " allow_failure, exit_code, started_at, finished_at)"
                    " VALUES (?,?,0,'huge','succeeded',1,0,0,?,?)",
                    (run, stage, at, at + 60_000)).lastrowid
    step = c.execute("INSERT INTO steps (job_id, attempt, position, name, status, exit_code,"
                     " started_at, finished_at) VALUES (?,1,0,'print a lot','succeeded',0,?,?)",
                     (job, at, at + 60_000)).lastrowid
    pad = "x" * 80
    lines = log_bytes // 100
    batch = 200_000
    for start_line in range(1, lines + 1, batch):
        c.executemany("INSERT INTO log_lines (step_id, line, at, stream, text) VALUES (?,?,?,?,?)",
                      [(step, n, at, "stdout", f"{n:012d} {pad}"[:99])
                       for n in range(start_line, min(start_line + batch, lines + 1))])
    c.commit()
    c.close()
    return run, lines


def login(host, port, token):
    h = http.client.HTTPConnection(host, port)
    h.request("GET", "/ui/login")
    r = h.getresponse()
    body = r.read().decode()
    login_cookie = re.search(r"gantry_login=([0-9a-f]+)", r.getheader("Set-Cookie")).group(1)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', body).group(1)
    form = f"token={token}&csrf={csrf}&next=/ui"
    h.request("POST", "/ui/login", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"gantry_login={login_cookie}"})
    r = h.getresponse()
    r.read()
    cookies = r.headers.get_all("Set-Cookie")
    session = next(re.search(r"gantry_session=([0-9a-f]+)", c).group(1)
                   for c in cookies if c.startswith("gantry_session="))
    h.close()
    return session


def measure(host, port, session, path, n=50):
    h = http.client.HTTPConnection(host, port)
    first, whole, size = [], [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        h.request("GET", path, headers={"Cookie": f"gantry_session={session}"})
        r = h.getresponse()
        t1 = time.perf_counter()
        body = r.read()
        t2 = time.perf_counter()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {body[:200]}")
        first.append((t1 - t0) * 1000)
        whole.append((t2 - t0) * 1000)
        size = len(body)
    h.close()

    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(len(v) * p))]
    return pct(first, 0.5), pct(first, 0.95), pct(whole, 0.5), pct(whole, 0.95), size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target/release/gantry"))
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--log-bytes", default="1G")
    args = ap.parse_args()
    log_bytes = size_bytes(args.log_bytes)
    with tempfile.TemporaryDirectory() as work:
        repo = os.path.join(work, "hello.git")
        git("init", "-q", "--bare", "-b", "main", repo, cwd=work)
        clone = os.path.join(work, "w")
        git("clone", "-q", repo, clone, cwd=work)
        open(os.path.join(clone, "gantry.yml"), "w").write(PIPELINE)
        git("add", "-A", cwd=clone)
        git("-c", "user.email=b@x", "-c", "user.name=b", "commit", "-q", "-m", "first", cwd=clone)
        git("push", "-q", "origin", "HEAD:main", cwd=clone)
        open(os.path.join(work, "gantry.toml"), "w").write(
            'listen = "127.0.0.1:0"\n\n[[projects]]\nname = "hello"\nrepo = "hello.git"\n'
            'branches = ["main"]\npoll = "0s"\n')
        proc, _ = start(args.gantry, work)
        stop(proc, work)
        t0 = time.time()
        big, lines = fill(os.path.join(work, ".gantry", "gantry.db"), args.runs, log_bytes)
        print(f"filled {args.runs} runs and a {lines:,}-line log in {time.time() - t0:.0f} s")
        db = sum(os.path.getsize(os.path.join(work, ".gantry", f))
                 for f in os.listdir(os.path.join(work, ".gantry")) if f.startswith("gantry.db"))
        print(f"gantry.db: {db / (1 << 30):.2f} GiB")
        proc, url = start(args.gantry, work)
        try:
            token = open(os.path.join(work, ".gantry", "admin.token")).read().strip()
            host, port = url.removeprefix("http://").split(":")
            session = login(host, int(port), token)
            print(load_line())
            print("| page | first byte p50 | first byte p95 | whole p50 | whole p95 | weight |")
            print("|---|---:|---:|---:|---:|---:|")
            pages = [
                ("login form", "/ui/login"),
                ("overview (10,000 runs)", "/ui"),
                ("run page (a run among 10,000)", f"/ui/runs/{big // 2}"),
                (f"run page of the {args.log_bytes} log (its tail)", f"/ui/runs/{big}"),
                (f"{args.log_bytes} log, 500 earlier lines", f"/ui/runs/{big}/log/earlier?job=huge&before=1000000"),
                ("artifacts", "/ui/artifacts"),
            ]
            for name, path in pages:
                f50, f95, w50, w95, size = measure(host, int(port), session, path)
                print(f"| {name} | {f50:.2f} ms | {f95:.2f} ms | {w50:.2f} ms | {w95:.2f} ms | {size:,} B |")
            for name in ("app.css", "app.js"):
                size = len(open(os.path.join(ROOT, "crates/gantry-api/assets", name), "rb").read())
                print(f"| /ui/assets/{name} (cached a day) | | | | | {size:,} B |")
        finally:
            stop(proc, work)
    # The environment pages, on an environment with two releases of examples/hello.
    from deploy import Gantry
    base = tempfile.mkdtemp(prefix="gantry-bench-dashboard-")
    g = Gantry(args.gantry, base)
    try:
        data = os.path.join(g.repo, ".gantry")
        url = json.load(open(os.path.join(data, "server.json")))["url"]
        host, port = url.removeprefix("http://").split(":")
        session = login(host, int(port), open(os.path.join(data, "admin.token")).read().strip())
        env = "/ui/projects/hello/environments/production"
        for name, path in [("environment (2 releases)", env),
                           ("rollback confirmation", env + "/confirm?action=rollback")]:
            f50, f95, w50, w95, size = measure(host, int(port), session, path)
            print(f"| {name} | {f50:.2f} ms | {f95:.2f} ms | {w50:.2f} ms | {w95:.2f} ms | {size:,} B |")
    finally:
        g.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
