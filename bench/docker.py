#!/usr/bin/env python3
"""Docker rollback (issue 13), side by side in one run, through podman's Docker Engine API:

  gantry       `gantry rollback production --to N` with a `docker` target: two releases'
               containers running behind gantry's router (the previous one stays running until
               the next deployment), so a rollback is a router switch.
  stop/run     the usual redeploy without gantry: `podman stop` the running container, `podman
               rm` it, `podman run -d -p 127.0.0.1:PORT:8080` the other image on the same port.

Measured the same way as bench/deploy.py: from starting the command to a polling client (one
keep-alive connection, requests back to back) seeing only the other version — its first answer,
after which the next 100 all come from it. Rounds alternate v1/v2; the two tools' rounds are
interleaved. The image is static busybox serving a page, built FROM scratch.

Needs: `cargo build --release`, podman serving the API (`podman system service --time=0
unix:///run/podman/podman.sock`), /bin/busybox (busybox-static).
Usage: bench/docker.py [--gantry target/release/gantry] [--switches 10]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy  # noqa: E402
from benchlib import free_port, load_line, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = f"bench-docker-{os.getpid()}"
HOST = "unix:///run/podman/podman.sock"

DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY www /www
ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""

PIPELINE = """name: {name}
stages:
  - name: build
    jobs:
      - name: image
        run: |
          mkdir -p ctx/www
          cp /bin/busybox ctx/busybox
          cp Dockerfile ctx/Dockerfile
          echo "hello from {version}" > ctx/www/index.html
          podman build -q -t {name}:{version} ctx
        artifacts:
          - name: app
            image: {name}:{version}
environments:
  production:
    target:
      docker:
        host: {host}
        port: 8080
    health:
      http: /
      interval: 50ms
    bake: 1s
    router:
      listen: 127.0.0.1:{port}
"""


def run(cmd, cwd=None, env=None):
    return deploy.run(cmd, cwd=cwd, env=env)


class GantryDocker:
    def __init__(self, gantry, base):
        self.gantry = os.path.abspath(gantry)
        self.repo = os.path.join(base, "web")
        self.port = free_port()
        os.makedirs(self.repo)
        with open(os.path.join(self.repo, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        run(["git", "init", "-q", "-b", "main"], cwd=self.repo)
        run(["git", "config", "user.email", "b@example.com"], cwd=self.repo)
        run(["git", "config", "user.name", "bench"], cwd=self.repo)
        self.env = dict(os.environ)
        for k in ("GANTRY_HOME", "GANTRY_SERVER", "GANTRY_TOKEN"):
            self.env.pop(k, None)
        self.env["DOCKER_HOST"] = HOST
        with open(os.path.join(base, "gantry.toml"), "w") as f:
            f.write(f'listen = "127.0.0.1:0"\ndata_dir = "{self.repo}/.gantry"\n')
        self.server = subprocess.Popen(
            [self.gantry, "serve", "--config", os.path.join(base, "gantry.toml")],
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
                f.write(PIPELINE.format(name=NAME, version=v, port=self.port, host=HOST))
            run(["git", "add", "-A"], cwd=self.repo)
            run(["git", "commit", "-q", "-m", v], cwd=self.repo)
            self.g("run", "--quiet", "--plain")
            self.runs[v] = len(self.runs) + 1
        self.g("deploy", "production", "--artifact", "app", "--run", str(self.runs["v1"]))
        self.g("deploy", "production", "--artifact", "app", "--run", str(self.runs["v2"]))
        wait_port(self.port)

    def g(self, *args):
        return run([self.gantry, *args], cwd=self.repo, env=self.env)

    def switch(self, to):
        return [self.gantry, "rollback", "production", "--to", "1" if to == "v1" else "2"]

    def stop(self):
        self.server.terminate()
        try:
            self.server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.server.kill()


class StopRun:
    """One container on a fixed port, replaced by `podman stop/rm/run` of the other image."""

    def __init__(self):
        self.port = free_port()
        self.name = f"{NAME}-stoprun"
        run(["podman", "run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:8080",
             f"{NAME}:v2"])
        wait_port(self.port)

    def switch(self, to):
        script = (f"podman stop -t 1 {self.name} >/dev/null && podman rm {self.name} >/dev/null && "
                  f"podman run -d --name {self.name} -p 127.0.0.1:{self.port}:8080 {NAME}:{to} >/dev/null")
        return ["sh", "-c", script]

    def stop(self):
        subprocess.run(["podman", "rm", "-f", self.name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def cleanup():
    ids = subprocess.run(["podman", "ps", "-aq", "--filter", f"label=gantry.project={NAME}"],
                         stdout=subprocess.PIPE, text=True).stdout.split()
    for i in ids:
        subprocess.run(["podman", "rm", "-f", i], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    images = subprocess.run(["podman", "images", "--format", "{{.ID}} {{.Repository}}"],
                            stdout=subprocess.PIPE, text=True).stdout
    for line in images.splitlines():
        image_id, _, repo = line.partition(" ")
        if NAME in repo:
            subprocess.run(["podman", "rmi", "-f", image_id], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target", "release", "gantry"))
    ap.add_argument("--switches", type=int, default=10)
    args = ap.parse_args()
    print(load_line(), flush=True)
    base = tempfile.mkdtemp(prefix="gantry-bench-docker-")
    g = s = None
    try:
        g = GantryDocker(args.gantry, base)
        s = StopRun()
        gp, sp = deploy.Poller(g.port), deploy.Poller(s.port)
        lat = {"gantry": [], "stop/run": []}
        # Interleaved: one round of each, alternating, so load drifts hit both alike.
        for i in range(args.switches):
            lat["gantry"] += deploy.timed_switches("gantry", gp, g.switch, g.repo, 1) if i % 2 == 0 \
                else timed_to(gp, g.switch, g.repo, "v2")
            lat["stop/run"] += deploy.timed_switches("stop/run", sp, s.switch, base, 1) if i % 2 == 0 \
                else timed_to(sp, s.switch, base, "v2")
        gp.close()
        sp.close()
        print(f"{'tool':10} {'median ms':>10} {'max ms':>8} {'rounds':>7}")
        for name, v in lat.items():
            print(f"{name:10} {statistics.median(v):10.1f} {max(v):8.1f} {len(v):7}")
        ratio = statistics.median(lat["stop/run"]) / statistics.median(lat["gantry"])
        print(f"stop/run median / gantry median: {ratio:.0f}x")
        print(json.dumps({k: [round(x, 1) for x in v] for k, v in lat.items()}))
    finally:
        if s:
            s.stop()
        if g:
            g.stop()
        cleanup()
        shutil.rmtree(base, ignore_errors=True)


def timed_to(poller, make_cmd, cwd, to):
    cmd = make_cmd(to)
    start = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd}: {p.stdout}\n{p.stderr}")
    return [poller.seen_only(start, f"hello from {to}") * 1000]


if __name__ == "__main__":
    main()
