#!/usr/bin/env python3
"""Benchmark of gantry's router as a canary splitter (issue 6), all on 127.0.0.1, interleaved in
one run, the same backends for everyone: two nginx server blocks serving a small file
("stable" and "canary", each with its own access log).

  direct          wrk -> the stable backend
  haproxy 90/10   wrk -> HAProxy (two servers weighted 90/10, http-reuse always) -> backends
  nginx 90/10     wrk -> nginx (split_clients on $request_id, upstream keep-alive) -> backends
  gantry 90/10    wrk -> `gantry route` (the router deployments use, share 10%) -> backends
  gantry no-stats the same with per-release measuring off (what measuring costs)
  gantry normal-sched  the same with GANTRY_ROUTER_SCHED=normal: the router's threads under the
                  normal scheduling policy instead of SCHED_BATCH (what the policy buys)
  gantry dataplane 90/10  wrk -> `gantry dataplane` (where deployments' routers live), its table
                  set over its control socket as the server sets it

(a) throughput: wrk -t2 -c50 for --seconds, --rounds rounds (every other one in reverse order),
    median requests/s and its ratio to direct, and the CPU time (user and system, all
    threads) each proxy's own processes spent per request: the machine's two cores are shared
    by wrk, the backends and the proxy, so a proxy's throughput is its share of them, and its
    CPU per request is what it costs regardless of that share;
(b) latency: wrk -t1 -c1 --latency, median of the rounds' p50, and the latency each proxy adds
    over direct;
(c) the canary's share over >= 100,000 requests through gantry at 10%, counted in the backends'
    access logs;
(d) errors under load across 20 share changes (10% <-> 90%) through gantry;
(e) what SCHED_BATCH costs: latency (wrk -t1 -c1, p50 and p99) while two busy loops keep both
    cores busy, through HAProxy, nginx and gantry under either policy.

Needs: `cargo build --release`, Debian's nginx-light (or nginx), haproxy, wrk.
Usage: bench/router.py [--gantry target/release/gantry] [--seconds 5] [--rounds 3]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import cpu_seconds, load_line, free_port, stat_fields, wait_port, wrk_counts  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wrk(port, conns, threads, seconds, latency=False):
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s"]
    if latency:
        cmd.append("--latency")
    cmd.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests, errors = wrk_counts(out)
    return rps, percentile(out, 50), requests, errors, out


def percentile(out, p):
    """The p-th percentile of latency in wrk --latency output, in ms (None without it)."""
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not m:
        return None
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


BACKENDS = """daemon on;
user root;
worker_processes 1;
pid {dir}/backends.pid;
error_log {dir}/backends.error.log warn;
events {{ worker_connections 4096; }}
http {{
  open_file_cache max=10;
  keepalive_requests 1000000;
  log_format tiny "$status";
  server {{ listen 127.0.0.1:{stable}; root {dir}/www; access_log {dir}/stable.log tiny buffer=64k; location / {{ try_files /index.html =404; }} }}
  server {{ listen 127.0.0.1:{canary}; root {dir}/www; access_log {dir}/canary.log tiny buffer=64k; location / {{ try_files /index.html =404; }} }}
}}
"""

SPLIT = """daemon on;
user root;
worker_processes auto;
pid {dir}/split.pid;
error_log {dir}/split.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream stable {{ server 127.0.0.1:{stable}; keepalive 64; }}
  upstream canary {{ server 127.0.0.1:{canary}; keepalive 64; }}
  split_clients "${{request_id}}" $pool {{ 10% canary; * stable; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://$pool; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""

HAPROXY = """global
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:{port}
  default_backend b
backend b
  balance roundrobin
  server stable 127.0.0.1:{stable} weight 90
  server canary 127.0.0.1:{canary} weight 10
"""


def own_cpu(pids):
    """User and system CPU seconds so far of the processes `pids` (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            total += cpu_seconds(pid)[0]
        except FileNotFoundError:
            pass
    return total


def children(pid):
    """The processes whose parent is `pid` (nginx's workers)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(stat_fields(entry)[1]) == pid:
                found.append(int(entry))
        except FileNotFoundError:
            pass
    return found


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target", "release", "gantry"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(load_line(), flush=True)
    for tool in ("nginx", "haproxy", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install nginx-light haproxy wrk")
    d = tempfile.mkdtemp(prefix="gantry-bench-router-")
    procs = []
    nginx_confs = []
    try:
        os.makedirs(os.path.join(d, "www"))
        with open(os.path.join(d, "www", "index.html"), "w") as f:
            f.write("hello from the backend\n" * 4)
        stable, canary = free_port(), free_port()
        ports = {name: free_port() for name in ("haproxy", "nginx", "gantry", "gantry-nostats", "gantry-normal", "dataplane")}
        conf = os.path.join(d, "backends.conf")
        with open(conf, "w") as f:
            f.write(BACKENDS.format(dir=d, stable=stable, canary=canary))
        subprocess.run(["nginx", "-p", d, "-c", conf], check=True)
        nginx_confs.append(conf)
        split = os.path.join(d, "split.conf")
        with open(split, "w") as f:
            f.write(SPLIT.format(dir=d, stable=stable, canary=canary, port=ports["nginx"]))
        subprocess.run(["nginx", "-p", d, "-c", split], check=True)
        nginx_confs.append(split)
        hcfg = os.path.join(d, "haproxy.cfg")
        with open(hcfg, "w") as f:
            f.write(HAPROXY.format(stable=stable, canary=canary, port=ports["haproxy"]))
        procs.append(subprocess.Popen(["haproxy", "-f", hcfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        def route(port, *extra, env=None):
            """A `gantry route` at 90/10, each started the same way (pipes on standard input and
            output), so that they differ in `extra` and `env` alone."""
            p = subprocess.Popen([args.gantry, "route", "--listen", f"127.0.0.1:{port}",
                                  "--stable", f"127.0.0.1:{stable}", "--canary", f"127.0.0.1:{canary}",
                                  "--share", "10", *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, **(env or {})})
            procs.append(p)
            return p

        gantry = route(ports["gantry"])
        nostats = route(ports["gantry-nostats"], "--no-stats")
        normal = route(ports["gantry-normal"], env={"GANTRY_ROUTER_SCHED": "normal"})
        # The data plane, as `gantry serve` drives it: listen, then a 90/10 table.
        dp_data = os.path.join(d, "dp")
        os.makedirs(dp_data)
        dataplane = subprocess.Popen([args.gantry, "dataplane", "--data", dp_data],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(dataplane)
        sock = os.path.join(dp_data, "dataplane.sock")
        for _ in range(500):
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        import json
        import socket as sk
        c = sk.socket(sk.AF_UNIX)
        c.connect(sock)
        f = c.makefile("rw")

        def ask(req):
            f.write(json.dumps(req) + "\n")
            f.flush()
            return json.loads(f.readline())
        ask({"op": "listen", "env": "bench/production", "addr": f"127.0.0.1:{ports['dataplane']}"})
        table = {"stable": {"release": 1, "addr": f"127.0.0.1:{stable}"},
                 "canary": {"backend": {"release": 2, "addr": f"127.0.0.1:{canary}"}, "share": 1000,
                            "header": None, "cookie": None, "allow": []},
                 "fallback": {"release": 1, "addr": f"127.0.0.1:{stable}"}}
        answer = ask({"op": "set", "env": "bench/production", "table": table})
        assert answer.get("answer") == "done", answer
        for p in [stable, canary, *ports.values()]:
            wait_port(p)

        targets = [("direct", stable), ("haproxy 90/10", ports["haproxy"]), ("nginx 90/10", ports["nginx"]),
                   ("gantry 90/10", ports["gantry"]), ("gantry no-stats", ports["gantry-nostats"]),
                   ("gantry normal-sched", ports["gantry-normal"]), ("gantry dataplane 90/10", ports["dataplane"])]
        with open(os.path.join(d, "split.pid")) as f:
            nginx_workers = children(int(f.read().strip()))
        # Whose CPU each target costs: the proxy's own processes (the backends and wrk aside).
        pids = {"direct": [], "haproxy 90/10": [procs[0].pid], "nginx 90/10": nginx_workers,
                "gantry 90/10": [gantry.pid], "gantry no-stats": [nostats.pid], "gantry normal-sched": [normal.pid],
                "gantry dataplane 90/10": [dataplane.pid]}
        rps = {n: [] for n, _ in targets}
        lat = {n: [] for n, _ in targets}
        cpu = {n: [] for n, _ in targets}
        for round_no in range(args.rounds):
            # Every other round in reverse order, so no target always runs right after another.
            order = targets if round_no % 2 == 0 else list(reversed(targets))
            for name, port in order:
                c0 = own_cpu(pids[name])
                r, _, n, e, _ = wrk(port, 50, 2, args.seconds)
                c1 = own_cpu(pids[name])
                if e:
                    print(f"    ({name}: {e} errors in a throughput round)")
                rps[name].append(r)
                cpu[name].append((c1 - c0) / max(n, 1) * 1e6)
            for name, port in order:
                _, p50, _, _, _ = wrk(port, 1, 1, args.seconds, latency=True)
                lat[name].append(p50)
        direct_rps = statistics.median(rps["direct"])
        direct_p50 = statistics.median(lat["direct"])
        print(f"(a, b) {args.rounds} interleaved rounds of {args.seconds}s: wrk -t2 -c50 (throughput), wrk -t1 -c1 (latency)")
        print(f"    {'':<22} {'req/s':>10} {'ratio':>7}   {'p50 ms':>8} {'added ms':>9}   {'CPU us/req':>10}")
        added = {}
        for name, _ in targets:
            r = statistics.median(rps[name])
            p = statistics.median(lat[name])
            added[name] = p - direct_p50
            c = f"{statistics.median(cpu[name]):>10.2f}" if pids[name] else f"{'-':>10}"
            print(f"    {name:<22} {r:>10.0f} {r / direct_rps:>7.2f}   {p:>8.3f} {added[name]:>9.3f}   {c}")
        ha = added["haproxy 90/10"]
        print(f"    gantry's added latency / haproxy's: {added['gantry 90/10'] / ha:.2f}" if ha > 0 else "    haproxy added no measurable latency")
        cost = 1 - statistics.median(rps["gantry 90/10"]) / statistics.median(rps["gantry no-stats"])
        print(f"    measuring per release costs {cost * 100:.1f}% of gantry's throughput")
        batch = statistics.median(rps["gantry 90/10"]) / statistics.median(rps["gantry normal-sched"])
        print(f"    SCHED_BATCH (gantry 90/10) / the normal policy (gantry normal-sched): {batch:.2f}x throughput")
        best = max(("haproxy 90/10", "nginx 90/10"), key=lambda k: statistics.median(rps[k]))
        for name in ("gantry 90/10", "gantry dataplane 90/10"):
            print(f"    {name} / {best.split()[0]} (the better peer): {statistics.median(rps[name]) / statistics.median(rps[best]):.2f}x throughput, "
                  f"{statistics.median(cpu[name]) / statistics.median(cpu[best]):.2f}x its CPU per request")

        # (c) the share, counted at the backends (their buffered logs flushed first).
        subprocess.run(["nginx", "-p", d, "-c", conf, "-s", "reopen"], check=True)
        time.sleep(1)
        s0, c0 = count_lines(os.path.join(d, "stable.log")), count_lines(os.path.join(d, "canary.log"))
        total = 0
        while total < 100_000:
            wrk(ports["gantry"], 50, 2, args.seconds)
            time.sleep(1.5)  # nginx flushes buffered access logs
            subprocess.run(["nginx", "-p", d, "-c", conf, "-s", "reopen"], check=True)
            time.sleep(0.5)
            s1, c1 = count_lines(os.path.join(d, "stable.log")), count_lines(os.path.join(d, "canary.log"))
            total = (s1 - s0) + (c1 - c0)
        share = (c1 - c0) / total * 100
        print(f"(c) canary share through gantry at 10%: {share:.2f}% of {total} requests counted at the backends (off by {abs(share - 10):.2f} points)")

        # (d) errors across 20 share changes under load.
        load = subprocess.Popen(["wrk", "-t2", "-c50", "-d15s", f"http://127.0.0.1:{ports['gantry']}/"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(2)
        gantry.stdout.readline()  # "listening ..."
        for i in range(20):
            gantry.stdin.write(f"share {90 if i % 2 == 0 else 10}\n")
            gantry.stdin.flush()
            answer = gantry.stdout.readline().strip()
            assert answer.startswith("ok"), answer
            time.sleep(0.5)
        out, _ = load.communicate(timeout=60)
        errors = 0
        m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if m:
            errors += sum(int(x) for x in m.groups())
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if m:
            errors += int(m.group(1))
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        print(f"(d) 20 share changes under wrk -t2 -c50 through gantry: {requests} requests, {errors} errors")

        # (e) latency while both cores are kept busy by other work.
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
        procs.extend(hogs)
        busy = [("haproxy 90/10", ports["haproxy"]), ("nginx 90/10", ports["nginx"]),
                ("gantry 90/10", ports["gantry"]), ("gantry normal-sched", ports["gantry-normal"])]
        tails = {n: ([], []) for n, _ in busy}
        for round_no in range(args.rounds):
            for name, port in (busy if round_no % 2 == 0 else list(reversed(busy))):
                out = wrk(port, 1, 1, args.seconds, latency=True)[4]
                tails[name][0].append(percentile(out, 50))
                tails[name][1].append(percentile(out, 99))
        for h in hogs:
            h.kill()
            h.wait()
        print(f"(e) wrk -t1 -c1 while two busy loops keep both cores busy, {args.rounds} interleaved rounds of {args.seconds}s (medians)")
        for name, _ in busy:
            print(f"    {name:<22} p50 {statistics.median(tails[name][0]):>7.3f} ms   p99 {statistics.median(tails[name][1]):>7.3f} ms")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for c in nginx_confs:
            subprocess.run(["nginx", "-p", d, "-c", c, "-s", "stop"], stderr=subprocess.DEVNULL)
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
