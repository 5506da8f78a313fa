#!/usr/bin/env python3
"""Benchmarks of deploy and rollback (issue 5), all on 127.0.0.1, side by side in one run:

  gantry     `gantry rollback` switching its router between two running releases of the example
             service (examples/hello/hello.py, one Python process per release).
  nginx      an nginx reload switching its `upstream` between the same two kinds of backend
             (the config is rewritten, then `nginx -s reload`).
  capistrano `cap production deploy:rollback` (Debian's capistrano, SSHKit's local backend so no
             SSH is involved) moving the `current` symlink that nginx serves `public/` from.

(a) switch latency: from starting the command to a polling client (one keep-alive connection,
    requests back to back) seeing only the other release: the first answer from it, after which
    the next 100 answers all come from it. 20 switches each; median and max.
(b) failed requests under load: `wrk -t2 -c20` (keep-alive) runs against each while it switches 20
    times; wrk's socket errors (connect, read, write, timeout) and non-2xx answers are failures.
    For gantry the 20 switches are 10 real deploys (a new release process, health-checked) each
    followed by a rollback.

Needs: `cargo build --release`, and Debian's nginx-light (or nginx), wrk, capistrano.
Usage: bench/deploy.py [--gantry target/release/gantry] [--switches 20]
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line, free_port, wait_port, wrk_counts  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELLO = os.path.join(ROOT, "examples", "hello", "hello.py")


def run(cmd, cwd=None, env=None, check=True):
    p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


class Poller:
    """Requests `/` back to back over one keep-alive connection and notes who answered when."""

    def __init__(self, port):
        self.port = port
        self.answers = []  # (time, body)
        self.lock = threading.Lock()
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        conn = None
        while not self.stop:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read().decode().strip()
                if r.getheader("connection", "").lower() == "close" or r.version == 10:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                body = f"error: {e}"
                conn = None
            with self.lock:
                self.answers.append((time.perf_counter(), body))
                if len(self.answers) > 200000:
                    del self.answers[:100000]

    def seen_only(self, start, want, after=100, limit=30):
        """Seconds from `start` to the first answer containing `want` after which the next
        `after` answers all contain it."""
        end = time.time() + limit
        while time.time() < end:
            with self.lock:
                answers = [a for a in self.answers if a[0] >= start]
            for i, (t, body) in enumerate(answers):
                if want in body:
                    rest = answers[i + 1:i + 1 + after]
                    if len(rest) == after and all(want in b for _, b in rest):
                        return t - start
                    if len(rest) < after:
                        break
            time.sleep(0.01)
        raise RuntimeError(f"never saw only {want!r}")

    def close(self):
        self.stop = True
        self.thread.join(timeout=10)


def wrk(port, seconds):
    return subprocess.Popen(["wrk", "-t2", "-c20", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(proc):
    out, _ = proc.communicate(timeout=600)
    requests, errors = wrk_counts(out)
    return requests, errors, out


# ---------------------------------------------------------------- gantry

PIPELINE = """name: hello
env:
  APP_VERSION: "{version}"
stages:
  - name: build
    jobs:
      - name: package
        run: |
          mkdir -p dist && cp hello.py dist/hello && chmod +x dist/hello && echo "$APP_VERSION" > dist/VERSION
        artifacts:
          - name: app
            path: dist/
environments:
  production:
    target:
      process:
        command: ./dist/hello --port $PORT
    health:
      http: /healthz
      interval: 50ms
    bake: 1s
    keep: 3
    router:
      listen: 127.0.0.1:{port}
"""


class Gantry:
    def __init__(self, gantry, base):
        self.gantry = os.path.abspath(gantry)
        self.repo = os.path.join(base, "hello")
        self.port = free_port()
        os.makedirs(self.repo)
        shutil.copy(HELLO, os.path.join(self.repo, "hello.py"))
        run(["git", "init", "-q", "-b", "main"], cwd=self.repo)
        run(["git", "config", "user.email", "b@example.com"], cwd=self.repo)
        run(["git", "config", "user.name", "bench"], cwd=self.repo)
        self.env = dict(os.environ)
        for k in ("GANTRY_HOME", "GANTRY_SERVER", "GANTRY_TOKEN"):
            self.env.pop(k, None)
        with open(os.path.join(base, "gantry.toml"), "w") as f:
            f.write(f'listen = "127.0.0.1:0"\ndata_dir = "{self.repo}/.gantry"\n')
        self.server = subprocess.Popen([self.gantry, "serve", "--config", os.path.join(base, "gantry.toml")],
                                       env=self.env, stdout=subprocess.DEVNULL,
                                       stderr=open(os.path.join(base, "serve.log"), "w"))
        server_file = os.path.join(self.repo, ".gantry", "server.json")
        for _ in range(600):
            if os.path.exists(server_file):
                break
            time.sleep(0.05)
        self.runs = {}
        for v in ("v1", "v2"):
            with open(os.path.join(self.repo, "gantry.yml"), "w") as f:
                f.write(PIPELINE.format(version=v, port=self.port))
            run(["git", "add", "-A"], cwd=self.repo)
            run(["git", "commit", "-q", "-m", v], cwd=self.repo)
            self.g("run", "--quiet", "--plain")
            self.runs[v] = len(self.runs) + 1
        self.g("deploy", "production", "--artifact", "app", "--run", str(self.runs["v1"]))
        self.g("deploy", "production", "--artifact", "app", "--run", str(self.runs["v2"]))
        wait_port(self.port)

    def g(self, *args):
        return run([self.gantry, *args], cwd=self.repo, env=self.env)

    def live_source(self):
        status = json.loads(self.g("status", "production", "--json").stdout)
        return status["live"]["source"]

    def switch(self, to):
        """Rolls back to v1 or forward to v2 (release 1 and 2 are their directories)."""
        if to == "v1":
            return [self.gantry, "rollback", "production", "--to", "1"]
        return [self.gantry, "rollback", "production", "--to", "2"]

    def stop(self):
        # Releases and the data plane outlive the server (issue 14): stop them on purpose.
        self.g("stop", "production")
        self.server.terminate()
        try:
            self.server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.server.kill()
        run([self.gantry, "dataplane", "--data", os.path.join(self.repo, ".gantry"), "--stop"],
            env=self.env, check=False)


# ---------------------------------------------------------------- nginx

NGINX_CONF = """daemon on;
user root;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  open_file_cache off;
  upstream app {{ server 127.0.0.1:{backend}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
  server {{
    listen 127.0.0.1:{static_port};
    root {static_root};
    location / {{ try_files /index.html =404; }}
  }}
}}
"""


class Nginx:
    def __init__(self, base, backends, static_root):
        self.dir = os.path.join(base, "nginx")
        os.makedirs(self.dir)
        self.port = free_port()
        self.static_port = free_port()
        self.backends = backends
        self.static_root = static_root
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.write("v2")
        run(["nginx", "-p", self.dir, "-c", self.conf])
        wait_port(self.port)
        wait_port(self.static_port)

    def write(self, version):
        with open(self.conf, "w") as f:
            f.write(NGINX_CONF.format(dir=self.dir, backend=self.backends[version], port=self.port,
                                      static_port=self.static_port, static_root=self.static_root))

    def switch(self, to):
        self.write(to)
        return ["nginx", "-p", self.dir, "-c", self.conf, "-s", "reload"]

    def stop(self):
        subprocess.run(["nginx", "-p", self.dir, "-c", self.conf, "-s", "stop"])


# ---------------------------------------------------------------- capistrano

CAPFILE = """require "capistrano/setup"
require "capistrano/deploy"
require "capistrano/scm/git"
install_plugin Capistrano::SCM::Git
"""
DEPLOY_RB = """set :application, "hello"
set :repo_url, "{repo}"
set :deploy_to, "{deploy_to}"
set :keep_releases, 5
set :log_level, :error
set :sshkit_backend, SSHKit::Backend::Local
"""


class Capistrano:
    """Releases under deploy_to/releases, `current` -> the newest; nginx serves
    deploy_to/current/public. `deploy:rollback` goes back one release and archives the one it
    left, so `prepare(n)` lays out n+1 releases (alternating v1/v2, the newest v2) beforehand:
    nothing but Capistrano touches the directory while it is measured."""

    def __init__(self, base):
        self.base = os.path.join(base, "cap")
        self.deploy_to = os.path.join(self.base, "deploy")
        self.app = os.path.join(self.base, "app")
        os.makedirs(os.path.join(self.app, "config", "deploy"))
        run(["git", "init", "-q", "--bare", os.path.join(self.base, "repo.git")])
        with open(os.path.join(self.app, "Capfile"), "w") as f:
            f.write(CAPFILE)
        with open(os.path.join(self.app, "config", "deploy.rb"), "w") as f:
            f.write(DEPLOY_RB.format(repo=os.path.join(self.base, "repo.git"), deploy_to=self.deploy_to))
        with open(os.path.join(self.app, "config", "deploy", "production.rb"), "w") as f:
            f.write('server "localhost", roles: %w{app web}\n')
        self.prepare(1)

    def prepare(self, switches):
        releases = os.path.join(self.deploy_to, "releases")
        shutil.rmtree(releases, ignore_errors=True)
        count = switches + 1
        newest = None
        for i in range(count):
            stamp = f"2026010100{i:04d}"
            version = "v2" if (count - 1 - i) % 2 == 0 else "v1"
            public = os.path.join(releases, stamp, "public")
            os.makedirs(public)
            with open(os.path.join(public, "index.html"), "w") as f:
                f.write(f"hello from {version}\n")
            t = time.time() - 1000 + i
            os.utime(os.path.join(releases, stamp), (t, t))
            newest = os.path.join(releases, stamp)
        link = os.path.join(self.deploy_to, "current")
        tmp = link + ".tmp"
        if os.path.lexists(tmp):
            os.remove(tmp)
        os.symlink(newest, tmp)
        os.replace(tmp, link)

    def static_root(self):
        return os.path.join(self.deploy_to, "current", "public")

    def switch(self, to):
        return ["cap", "production", "deploy:rollback"]

    def cwd(self):
        return self.app


def timed_switches(name, poller, make_cmd, cwd, n):
    latencies = []
    current = "v2"
    for _ in range(n):
        to = "v1" if current == "v2" else "v2"
        cmd = make_cmd(to)
        start = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{name}: {cmd}: {p.stdout}\n{p.stderr}")
        latencies.append(poller.seen_only(start, f"hello from {to}") * 1000)
        current = to
    return latencies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target", "release", "gantry"))
    ap.add_argument("--switches", type=int, default=20)
    args = ap.parse_args()
    print(load_line(), flush=True)
    for tool in ("nginx", "wrk", "cap"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install nginx-light wrk capistrano")
    base = tempfile.mkdtemp(prefix="gantry-bench-deploy-")
    procs = []
    try:
        g = Gantry(args.gantry, base)
        # Plain backends for nginx: the same service, one process per version.
        backends = {}
        for v in ("v1", "v2"):
            d = os.path.join(base, f"backend-{v}")
            os.makedirs(d)
            shutil.copy(HELLO, os.path.join(d, "hello"))
            with open(os.path.join(d, "VERSION"), "w") as f:
                f.write(v + "\n")
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, os.path.join(d, "hello"), "--port", str(port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            backends[v] = port
            wait_port(port)
        cap = Capistrano(base)
        ngx = Nginx(base, backends, cap.static_root())

        systems = [
            ("gantry", g.port, g.switch, g.repo),
            ("nginx reload", ngx.port, ngx.switch, base),
            ("capistrano", ngx.static_port, cap.switch, cap.cwd()),
        ]
        print(f"(a) switch latency, {4 * max(2, args.switches // 4 // 2 * 2)} switches each in 4 interleaved rounds (every other round in reverse order): start of the command -> a polling client sees only the other release")
        results = {name: [] for name, _, _, _ in systems}
        cap.prepare(args.switches)
        # Even, so that each round ends where it began (on v2) and the next one switches for real.
        per_round = max(2, args.switches // 4 // 2 * 2)
        for rnd in range(4):
            order = systems if rnd % 2 == 0 else list(reversed(systems))
            for name, port, make_cmd, cwd in order:
                poller = Poller(port)
                time.sleep(0.3)
                results[name] += timed_switches(name, poller, make_cmd, cwd, per_round)
                poller.close()
        for name, lat in results.items():
            print(f"    {name:<13} median {statistics.median(lat):7.1f} ms   min {min(lat):7.1f}   max {max(lat):7.1f}")
        base_med = statistics.median(results["gantry"])
        for name in results:
            if name != "gantry":
                print(f"    {name} / gantry: {statistics.median(results[name]) / base_med:.1f}x")

        print(f"(b) failed requests under wrk -t2 -c20 (keep-alive) during {args.switches} switches")
        cap.prepare(args.switches)
        ngx.write("v2")
        run(["nginx", "-p", ngx.dir, "-c", ngx.conf, "-s", "reload"])
        time.sleep(1)
        for name, port, make_cmd, cwd in systems:
            load = wrk(port, 60)
            time.sleep(1.0)
            started = time.time()
            if name == "gantry":
                # Real deploys (a new release process, health-checked) and rollbacks.
                for i in range(args.switches // 2):
                    g.g("deploy", "production", "--artifact", "app", "--run", str(g.runs["v1"]), "--force")
                    g.g("rollback", "production")
            else:
                current = "v2"
                for _ in range(args.switches):
                    to = "v1" if current == "v2" else "v2"
                    run(make_cmd(to), cwd=cwd)
                    current = to
                    time.sleep(0.2)
            took = time.time() - started
            load.send_signal(2)  # wrk prints its summary on SIGINT
            requests, errors, out = wrk_result(load)
            print(f"    {name:<13} {requests:>8} requests, {errors} failed, switches took {took:.1f} s")
            if errors:
                print("      " + "\n      ".join(out.strip().splitlines()[-6:]))
        ngx.stop()
        g.stop()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
