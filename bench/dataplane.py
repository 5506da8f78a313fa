#!/usr/bin/env python3
"""Serving while the control plane goes down (issue 14), all on 127.0.0.1, in one run.

For each event, `wrk -t2 -c20` (keep-alive) and one polling client (one keep-alive connection,
requests back to back) run against the router for 4 s, the event happening 1 s in:

  gantry   kill -9 of `gantry serve` (2 s down), its start again after the kill, SIGTERM and
           a start again (an upgrade of gantry), the data plane replaced by a new process
           (`gantry dataplane --replace`: the listening sockets are handed over), a second
           `gantry serve` on the same data directory (refused); and, for contrast, kill -9 of
           the data plane itself (the server starts a new one on the last tables: an outage).
  nginx    `nginx -s reload` in front of the same service.
  haproxy  a reload (`haproxy -sf OLDPID`, the documented soft reload) in front of it.

Failed requests: wrk's socket errors (connect, read, write, timeout) and non-2xx answers, and
the polling client's errors. Longest stall: the longest the polling client waited between two
successful answers.

Needs: `cargo build --release`, Debian's nginx-light (or nginx), haproxy, wrk.
Usage: bench/dataplane.py [--gantry target/release/gantry]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line, free_port, wait_port, wrk_counts  # noqa: E402
from deploy import HELLO, Gantry, Nginx, Poller, run, wrk  # noqa: E402

HAPROXY = """global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend web
  bind 127.0.0.1:{port}
  default_backend app
backend app
  http-reuse always
  server a 127.0.0.1:{backend}
"""


def measure(port, event):
    """Runs wrk and a poller for 4 s around `event` (at 1 s): (requests, failed, stall ms)."""
    load = wrk(port, 4)
    poller = Poller(port)
    time.sleep(1.0)
    event()
    out, _ = load.communicate(timeout=120)
    poller.close()
    requests, errors = wrk_counts(out)
    with poller.lock:
        answers = list(poller.answers)
    errors += sum(1 for _, b in answers if b.startswith("error"))
    ok = [a for a in answers if not a[1].startswith("error")]
    gaps = [b[0] - a[0] for a, b in zip(ok, ok[1:])]
    return requests + len(answers), errors, max(gaps) * 1000 if gaps else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(os.path.dirname(HELLO), "..", "..", "target", "release", "gantry"))
    args = ap.parse_args()
    print(load_line(), flush=True)
    for tool in ("nginx", "haproxy", "wrk"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install nginx-light haproxy wrk")
    base = tempfile.mkdtemp(prefix="gantry-bench-dataplane-")
    procs = []
    g = None
    try:
        g = Gantry(args.gantry, base)
        data = os.path.join(g.repo, ".gantry")
        serve = [g.gantry, "serve", "--config", os.path.join(base, "gantry.toml")]

        def start_server():
            g.server = subprocess.Popen(serve, env=g.env, stdout=subprocess.DEVNULL,
                                        stderr=open(os.path.join(base, "serve.log"), "a"))
            server_file = os.path.join(data, "server.json")
            for _ in range(600):
                if os.path.exists(server_file):
                    with open(server_file) as f:
                        try:
                            if json.load(f)["pid"] == g.server.pid:
                                return
                        except (ValueError, KeyError):
                            pass
                time.sleep(0.02)
            raise RuntimeError("the server did not start")

        def kill9_down():
            g.server.kill()
            g.server.wait()
            os.remove(os.path.join(data, "server.json"))
            time.sleep(2)

        def restart_after_kill():
            start_server()

        def sigterm_restart():
            g.server.terminate()
            g.server.wait(timeout=60)
            start_server()

        successor = []

        def replace_data_plane():
            with open(os.path.join(data, "dataplane.json")) as f:
                old = json.load(f)["pid"]
            p = subprocess.Popen([g.gantry, "dataplane", "--replace", "--data", data],
                                 env=dict(g.env, GANTRY_DATAPLANE=data), start_new_session=True,
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(base, "dp2.log"), "w"))
            successor.append(p)
            for _ in range(1500):
                try:
                    with open(os.path.join(data, "dataplane.json")) as f:
                        if json.load(f)["pid"] == p.pid and not os.path.exists(f"/proc/{old}/stat"):
                            return
                except (OSError, ValueError):
                    pass
                time.sleep(0.02)
            raise RuntimeError("the new data plane did not take over")

        def kill9_data_plane():
            with open(os.path.join(data, "dataplane.json")) as f:
                old = json.load(f)["pid"]
            os.kill(old, signal.SIGKILL)
            for _ in range(1500):
                try:
                    with open(os.path.join(data, "dataplane.json")) as f:
                        if json.load(f)["pid"] != old:
                            break
                except (OSError, ValueError):
                    pass
                time.sleep(0.02)
            wait_port(g.port)

        def second_server():
            other = os.path.join(base, "second.toml")
            with open(other, "w") as f:
                f.write(f'listen = "127.0.0.1:0"\ndata_dir = "{data}"\n')
            p = subprocess.run([g.gantry, "serve", "--config", other], env=g.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60)
            if p.returncode == 0 or "in use by gantry server" not in p.stderr:
                raise RuntimeError(f"the second server was not refused: {p.stderr}")

        # Plain backend for nginx and HAProxy: the same service.
        d = os.path.join(base, "backend")
        os.makedirs(d)
        shutil.copy(HELLO, os.path.join(d, "hello"))
        with open(os.path.join(d, "VERSION"), "w") as f:
            f.write("v1\n")
        backend = free_port()
        procs.append(subprocess.Popen([sys.executable, os.path.join(d, "hello"), "--port", str(backend)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(backend)
        ngx = Nginx(base, {"v1": backend, "v2": backend}, d)
        hdir = os.path.join(base, "haproxy")
        os.makedirs(hdir)
        hport = free_port()
        hcfg = os.path.join(hdir, "haproxy.cfg")
        hpid = os.path.join(hdir, "haproxy.pid")
        with open(hcfg, "w") as f:
            f.write(HAPROXY.format(port=hport, backend=backend))
        run(["haproxy", "-D", "-f", hcfg, "-p", hpid])
        wait_port(hport)

        def nginx_reload():
            run(["nginx", "-p", ngx.dir, "-c", ngx.conf, "-s", "reload"])

        def haproxy_reload():
            with open(hpid) as f:
                old = f.read().split()
            run(["haproxy", "-D", "-f", hcfg, "-p", hpid, "-sf", *old])

        events = [
            ("gantry: kill -9 of the server (2 s down)", g.port, kill9_down),
            ("gantry: the server started after kill -9", g.port, restart_after_kill),
            ("gantry: SIGTERM + start of the server", g.port, sigterm_restart),
            ("gantry: data plane replaced (handover)", g.port, replace_data_plane),
            ("gantry: a second serve, refused", g.port, second_server),
            ("gantry: kill -9 of the data plane (an outage)", g.port, kill9_data_plane),
            ("nginx -s reload", ngx.port, nginx_reload),
            ("haproxy -sf reload", hport, haproxy_reload),
        ]
        print("wrk -t2 -c20 (keep-alive) + one polling client for 4 s, the event at 1 s")
        print(f"    {'event':<44} {'requests':>9} {'failed':>7} {'longest stall':>14}")
        for name, port, event in events:
            time.sleep(0.5)
            requests, failed, stall = measure(port, event)
            print(f"    {name:<44} {requests:>9} {failed:>7} {stall:>11.1f} ms", flush=True)
        for p in successor:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
        ngx.stop()
        with open(hpid) as f:
            for pid in f.read().split():
                os.kill(int(pid), signal.SIGTERM)
    finally:
        if g is not None:
            try:
                g.g("stop", "production")
            except Exception as e:  # noqa: BLE001
                print(f"stopping production: {e}")
            g.stop()
            run([g.gantry, "dataplane", "--stop", "--data", os.path.join(g.repo, ".gantry")], check=False)
        for p in procs:
            p.terminate()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    threading.excepthook = lambda a: None
    main()
