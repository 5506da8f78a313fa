#!/usr/bin/env python3
"""Benchmarks of `gantry serve` (issue 3), all on 127.0.0.1.

(a) webhook to first step: for each of N pushes, a commit is pushed to the watched bare
    repository, then a signed GitHub-style webhook is sent; the latency is from sending the
    webhook to the first step's own timestamp (`date +%s%N`). Includes the mirror fetch, the
    queue, reading the pipeline file and the checkout. p50 and p99.
(b) `GET /api/runs` (default page of 50) with 10,000 runs in the database, over one keep-alive
    connection, 300 requests: p50 and p95; also filtered by status and by branch.
(c) idle resident memory (VmRSS) of the server: fresh, and after (a) and (b).
(d) CPU used by a server polling 200 repositories every 10 s (no branch matches, so nothing is
    queued: the cost of watching alone), measured over 60 s after the first round of clones,
    counting the git processes it runs (cutime/cstime).

Usage: bench/server.py [--pushes 100] [--gantry target/release/gantry] [--skip-poll]
"""
import argparse
import hashlib
import hmac
import http.client
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cpu_seconds, load_line  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = b"bench-secret"


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_server(gantry, base, config):
    with open(os.path.join(base, "gantry.toml"), "w") as f:
        f.write(config)
    server_file = os.path.join(base, ".gantry", "server.json")
    if os.path.exists(server_file):
        os.remove(server_file)
    env = dict(os.environ, BENCH_SECRET=SECRET.decode())
    env.pop("GANTRY_HOME", None)
    proc = subprocess.Popen([gantry, "serve", "--config", "gantry.toml"], cwd=base, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "serve.log"), "a"))
    for _ in range(600):
        if os.path.exists(server_file):
            break
        time.sleep(0.05)
    url = json.load(open(server_file))["url"]
    token = open(os.path.join(base, ".gantry", "admin.token")).read().strip()
    return proc, url.replace("http://", ""), token


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def bench_webhooks(gantry, pushes):
    base = tempfile.mkdtemp(prefix="gantry-bench-")
    # Outside `base`, which holds the server's data directory: sandboxed steps cannot create
    # files beside it.
    stamps = os.path.join(tempfile.mkdtemp(prefix="gantry-bench-stamps-"), "stamps")
    bare = os.path.join(base, "hello.git")
    work = os.path.join(base, "work")
    git("init", "-q", "--bare", "-b", "main", bare, cwd=base)
    git("clone", "-q", bare, work, cwd=base)
    git("checkout", "-q", "-b", "main", cwd=work)
    with open(os.path.join(work, "gantry.yml"), "w") as f:
        f.write("stages:\n  - name: build\n    jobs:\n      - name: stamp\n"
                f"        run: echo \"$GANTRY_COMMIT $(date +%s%N)\" >> {stamps}\n")
    git("add", "-A", cwd=work)
    git("-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "0", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    config = ('listen = "127.0.0.1:0"\n[[projects]]\nname = "hello"\nrepo = "hello.git"\n'
              'branches = ["main"]\npoll = "0s"\nwebhook_secret_env = "BENCH_SECRET"\n[runner]\nconcurrency = 2\n')
    proc, addr, token = start_server(gantry, base, config)
    time.sleep(1.0)
    fresh_rss = rss_kb(proc.pid)
    conn = http.client.HTTPConnection(addr)
    latencies = []
    for i in range(pushes):
        git("-c", "user.email=b@b", "-c", "user.name=b", "commit", "-q", "--allow-empty", "-m", str(i + 1), cwd=work)
        git("push", "-q", "origin", "main", cwd=work)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
        body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
        sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        t0 = time.time_ns()
        conn.request("POST", "/hooks/hello", body, {"X-Hub-Signature-256": sig, "X-GitHub-Event": "push"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            stop(proc)
            sys.exit(f"webhook {i}: {resp.status}")
        stamp = None
        for _ in range(20000):
            if os.path.exists(stamps):
                for line in open(stamps):
                    c, ns = line.split()
                    if c == commit:
                        stamp = int(ns)
            if stamp:
                break
            time.sleep(0.001)
        if stamp is None:
            stop(proc)
            sys.exit(f"push {i}: the step never ran")
        latencies.append((stamp - t0) / 1e6)

    # (b): 10,000 runs in the database, then the API's first page.
    db = sqlite3.connect(os.path.join(base, ".gantry", "gantry.db"), timeout=30)
    project = db.execute("SELECT id FROM projects WHERE name = 'hello'").fetchone()[0]
    now = int(time.time() * 1000)
    rows = [(project, f"{i:040x}", "main" if i % 3 else "dev", "gantry.yml", "bench",
             ["succeeded", "failed", "cancelled"][i % 3], now - i * 1000, now - i * 1000, now - i * 1000 + 500)
            for i in range(10_000 - pushes)]
    db.executemany("INSERT INTO runs (project_id, commit_sha, branch, pipeline_file, trigger_kind, status, created_at, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    total = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    db.close()
    auth = {"Authorization": f"Bearer {token}"}
    api = {}
    for name, path in [("all", "/api/runs"), ("status=failed", "/api/runs?status=failed"), ("branch=dev", "/api/runs?branch=dev")]:
        times = []
        for _ in range(300):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=auth)
            r = conn.getresponse()
            data = r.read()
            times.append((time.perf_counter() - t0) * 1000)
            assert r.status == 200 and len(json.loads(data)["runs"]) == 50
        api[name] = times
    time.sleep(2)
    busy_rss = rss_kb(proc.pid)
    stop(proc)
    return latencies, api, total, fresh_rss, busy_rss


def bench_polling(gantry, repos, seconds):
    base = tempfile.mkdtemp(prefix="gantry-bench-poll-")
    src = os.path.join(base, "src")
    os.makedirs(src)
    git("init", "-q", "-b", "main", cwd=src)
    git("-c", "user.email=b@b", "-c", "user.name=b", "commit", "-q", "--allow-empty", "-m", "x", cwd=src)
    lines = ['listen = "127.0.0.1:0"\n']
    for i in range(repos):
        git("clone", "-q", "--bare", src, os.path.join(base, f"r{i}.git"), cwd=base)
        lines.append(f'[[projects]]\nname = "p{i}"\nrepo = "r{i}.git"\nbranches = ["no-such-branch"]\npoll = "10s"\n')
    proc, _, _ = start_server(gantry, base, "".join(lines))
    # Polling reads branches with `git ls-remote` and makes no mirror (a worker fetches only the
    # commits it runs), so there is nothing on disk to wait for: let the first round (every
    # poller ticks at once at start) and one more pass before measuring the steady state.
    time.sleep(12)
    s0, c0 = cpu_seconds(proc.pid)
    t0 = time.time()
    # Sampled every 0.2 s while measuring: the most `git ls-remote` processes at once, and the
    # machine's highest 1-minute load average.
    most, load_max = 0, 0.0
    while time.time() - t0 < seconds:
        most = max(most, ls_remotes())
        with open("/proc/loadavg") as f:
            load_max = max(load_max, float(f.read().split()[0]))
        time.sleep(0.2)
    s1, c1 = cpu_seconds(proc.pid)
    elapsed = time.time() - t0
    rss = rss_kb(proc.pid)
    stop(proc)
    return (s1 - s0), (c1 - c0), elapsed, rss, most, load_max


def ls_remotes():
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"ls-remote" in f.read():
                    n += 1
        except OSError:
            pass
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pushes", type=int, default=100)
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target/release/gantry"))
    ap.add_argument("--repos", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--skip-poll", action="store_true")
    args = ap.parse_args()
    print(load_line(), flush=True)
    if not os.path.exists(args.gantry):
        sys.exit(f"{args.gantry} not found: run `cargo build --release` first")
    lat, api, total, fresh, busy = bench_webhooks(args.gantry, args.pushes)
    print(f"(a) webhook -> first step, {len(lat)} pushes: p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms  (goal: p50 < 100 ms)")
    for name, times in api.items():
        print(f"(b) GET /api/runs [{name}] with {total} runs, 300 requests: p50 {statistics.median(times):.2f} ms, p95 {pct(times, 95):.2f} ms  (goal: p95 < 20 ms)")
    print(f"(c) idle RSS: {fresh / 1024:.1f} MiB fresh, {busy / 1024:.1f} MiB after (a) and (b)  (goal: < 40 MB)")
    if not args.skip_poll:
        own, children, elapsed, rss, most, load_max = bench_polling(args.gantry, args.repos, args.seconds)
        print(f"(d) polling {args.repos} repositories every 10 s, over {elapsed:.0f} s: server {own:.2f} CPU-s, git children {children:.2f} CPU-s; "
              f"total {100 * (own + children) / elapsed:.1f}% of one core; RSS {rss / 1024:.1f} MiB; "
              f"at most {most} ls-remote at once; highest 1-min load {load_max:.2f}")


if __name__ == "__main__":
    main()
