#!/usr/bin/env python3
"""Runners (issue 19): 1,000 trivial jobs drained by 1, 2 and 4 `gantry runner`s, beside the
same 1,000 jobs run by the SQLite single-server default, in one run, all on 127.0.0.1.

The jobs: --runs runs (default 100) of a pipeline with --jobs jobs each (default 10), every
job one step `true`.

(a) baseline: `gantry serve` with the default configuration (state in SQLite, the server runs
    jobs itself, [runner] concurrency 2). The runs are triggered; the clock runs from the
    first trigger to the last run's end (`finished_at`).
(b) runners: `gantry serve` with state in PostgreSQL (the cluster GANTRY_TEST_POSTGRES names,
    a fresh database each time; SQLite with --sqlite), `[runner] local_jobs = false`, every run
    dispatched at once. Once all the jobs are queued (gantry_runner_jobs{state="queued"} in
    /metrics), N runners (`--concurrency 1` each) start; the clock runs from their start to
    the last run's end. Claim latency: each runner records how long the claim that got each
    job took (POST /api/runner/claim to its answer; the queue is never empty, so no wait).

jobs/s = jobs / seconds. Ratios are to the baseline. One run; shared machine: see the load.

Usage: bench/runners.py [--gantry target/release/gantry] [--runs 100] [--jobs 10]
                        [--runners 1,2,4] [--sqlite]
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def repo(base, jobs):
    bare = os.path.join(base, "hello.git")
    work = os.path.join(base, "work")
    git("init", "-q", "--bare", "-b", "main", bare, cwd=base)
    git("clone", "-q", bare, work, cwd=base)
    git("checkout", "-q", "-b", "main", cwd=work)
    text = "stages:\n  - name: build\n    jobs:\n"
    for j in range(jobs):
        text += f"      - name: j{j}\n        run: \"true\"\n"
    with open(os.path.join(work, "gantry.yml"), "w") as f:
        f.write(text)
    git("add", "-A", cwd=work)
    git("-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "0", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)


def start_server(gantry, base, config):
    with open(os.path.join(base, "gantry.toml"), "w") as f:
        f.write(config)
    server_file = os.path.join(base, ".gantry", "server.json")
    env = dict(os.environ)
    env.pop("GANTRY_HOME", None)
    proc = subprocess.Popen([gantry, "serve", "--config", "gantry.toml"], cwd=base, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "serve.log"), "a"))
    for _ in range(1200):
        if os.path.exists(server_file):
            break
        if proc.poll() is not None:
            sys.exit(f"the server exited: see {base}/serve.log")
        time.sleep(0.05)
    url = json.load(open(server_file))["url"]
    token = open(os.path.join(base, ".gantry", "admin.token")).read().strip()
    return proc, url, token


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Api:
    def __init__(self, url, token):
        self.addr = url.replace("http://", "")
        self.token = token

    def call(self, method, path, body=None):
        conn = http.client.HTTPConnection(self.addr, timeout=60)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data

    def json(self, method, path, body=None):
        status, data = self.call(method, path, body)
        if status >= 300:
            sys.exit(f"{method} {path}: {status} {data[:300]}")
        return json.loads(data) if data else None

    def runs(self):
        return self.json("GET", "/api/runs?limit=500")["runs"]

    def metric(self, name):
        conn = http.client.HTTPConnection(self.addr, timeout=60)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0


def wait_runs(api, count, limit):
    end = time.time() + limit
    while time.time() < end:
        runs = api.runs()
        if len(runs) == count and all(r["status"] not in ("queued", "running") for r in runs):
            bad = [r for r in runs if r["status"] != "succeeded"]
            if bad:
                sys.exit(f"runs did not succeed: {bad[:3]}")
            return max(r["finished_at"] for r in runs)
        time.sleep(0.2)
    sys.exit("the runs did not end in time")


def trigger(api, runs):
    for _ in range(runs):
        api.json("POST", "/api/projects/hello/trigger", {})


def baseline(gantry, runs, jobs):
    base = tempfile.mkdtemp(prefix="gantry-bench-runners-")
    repo(base, jobs)
    config = 'listen = "127.0.0.1:0"\n[[projects]]\nname = "hello"\nrepo = "hello.git"\npoll = "0s"\n'
    proc, url, token = start_server(gantry, base, config)
    api = Api(url, token)
    try:
        t0 = time.time() * 1000
        trigger(api, runs)
        t1 = wait_runs(api, runs, 1800)
    finally:
        stop(proc)
        shutil.rmtree(base, ignore_errors=True)
    return (t1 - t0) / 1000


def psql(admin, sql):
    exe = shutil.which("psql") or "/usr/lib/postgresql/15/bin/psql"
    subprocess.run([exe, admin, "-qc", sql], check=True, stdout=subprocess.DEVNULL)


def with_runners(gantry, runs, jobs, n, state_url):
    base = tempfile.mkdtemp(prefix="gantry-bench-runners-")
    repo(base, jobs)
    state = f'state = "{state_url}"\n' if state_url else ""
    config = (f'listen = "127.0.0.1:0"\n{state}[[projects]]\nname = "hello"\nrepo = "hello.git"\npoll = "0s"\n'
              f'[runner]\nconcurrency = {runs}\nlocal_jobs = false\n')
    proc, url, token = start_server(gantry, base, config)
    api = Api(url, token)
    runners = []
    try:
        rtoken = api.json("POST", "/api/tokens", {"name": "bench", "role": "runner"})["token"]
        trigger(api, runs)
        end = time.time() + 600
        while api.metric('gantry_runner_jobs{state="queued"}') < runs * jobs:
            if time.time() > end:
                sys.exit("the jobs were not all queued in time")
            time.sleep(0.2)
        records = []
        t0 = time.time() * 1000
        for i in range(n):
            record = os.path.join(base, f"runner-{i}.jsonl")
            records.append(record)
            env = dict(os.environ, GANTRY_RUNNER_TOKEN=rtoken)
            runners.append(subprocess.Popen(
                [gantry, "runner", "--server", url, "--name", f"bench-{i}", "--concurrency", "1",
                 "--work-dir", os.path.join(base, f"runner-{i}"), "--record", record],
                env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, f"runner-{i}.err"), "w")))
        t1 = wait_runs(api, runs, 1800)
        claims = []
        per_runner = []
        for record in records:
            lines = [json.loads(line) for line in open(record)]
            per_runner.append(len(lines))
            claims.extend(line["claim_ms"] for line in lines)
    finally:
        for r in runners:
            stop(r)
        stop(proc)
        shutil.rmtree(base, ignore_errors=True)
    if sum(per_runner) != runs * jobs:
        sys.exit(f"the runners recorded {sum(per_runner)} jobs, not {runs * jobs}")
    return (t1 - t0) / 1000, sorted(claims), per_runner


def pct(values, p):
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target/release/gantry"))
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--runners", default="1,2,4")
    ap.add_argument("--sqlite", action="store_true", help="runners' server on SQLite, not PostgreSQL")
    args = ap.parse_args()
    admin = None if args.sqlite else os.environ.get("GANTRY_TEST_POSTGRES")
    if not args.sqlite and not admin:
        sys.exit("set GANTRY_TEST_POSTGRES (export GANTRY_TEST_POSTGRES=$(.ci/postgres)), or pass --sqlite")
    total = args.runs * args.jobs
    print(load_line())
    print(f"{total} jobs: {args.runs} runs of {args.jobs} trivial jobs")
    secs = baseline(args.gantry, args.runs, args.jobs)
    base_rate = total / secs
    print(f"{'setup':<44} {'seconds':>8} {'jobs/s':>8} {'ratio':>6} {'claim p50':>10} {'claim p99':>10}")
    print(f"{'SQLite single server (default), no runners':<44} {secs:>8.2f} {base_rate:>8.1f} {1.0:>6.2f} {'-':>10} {'-':>10}")
    for n in [int(x) for x in args.runners.split(",")]:
        url = None
        db = None
        if admin:
            db = f"gantry_bench_{os.getpid()}_{n}"
            psql(admin, f"CREATE DATABASE {db}")
            url = admin.rsplit("/", 1)[0] + "/" + db
        try:
            secs, claims, per = with_runners(args.gantry, args.runs, args.jobs, n, url)
        finally:
            if db:
                psql(admin, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        rate = total / secs
        where = "SQLite" if args.sqlite else "PostgreSQL"
        label = f"{n} runner{'s' if n > 1 else ''}, server on {where}"
        print(f"{label:<44} {secs:>8.2f} {rate:>8.1f} {rate / base_rate:>6.2f} "
              f"{pct(claims, 50):>8.1f}ms {pct(claims, 99):>8.1f}ms   jobs per runner {per}")


if __name__ == "__main__":
    main()
