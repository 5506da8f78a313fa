#!/usr/bin/env python3
"""AWS API calls a Lambda deployment makes (issue 13), counted at the endpoint: gantry's
`lambda` target talks to moto_server through a counting proxy on 127.0.0.1 that names each
Lambda REST call (method + path) as its operation. Counted per act:

  first deploy   the function does not exist: created, published, alias created
  deploy         a new version, blue/green
  rollback       the alias back to the previous version
  canary start   a canary deploy: the version published, the alias weighed for the first step
  canary step    a step of the canary (here: the promotion to everyone after an approval)

Also the wall time of each act (from the command's start to its exit), to set beside the counts.

Needs: `cargo build --release`, moto[server] (pip).
Usage: bench/lambda.py [--gantry target/release/gantry]
"""
import argparse
import collections
import http.client
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, load_line, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = f"bench-fn-{os.getpid()}"

OPERATIONS = [
    ("GET", r"/functions/[^/]+/configuration$", "GetFunctionConfiguration"),
    ("PUT", r"/functions/[^/]+/configuration$", "UpdateFunctionConfiguration"),
    ("PUT", r"/functions/[^/]+/code$", "UpdateFunctionCode"),
    ("POST", r"/functions/?$", "CreateFunction"),
    ("POST", r"/functions/[^/]+/versions$", "PublishVersion"),
    ("GET", r"/functions/[^/]+/versions$", "ListVersionsByFunction"),
    ("GET", r"/functions/[^/]+/aliases/[^/]+$", "GetAlias"),
    ("PUT", r"/functions/[^/]+/aliases/[^/]+$", "UpdateAlias"),
    ("POST", r"/functions/[^/]+/aliases$", "CreateAlias"),
    ("DELETE", r"/functions/[^/]+$", "DeleteFunction"),
]


def operation(method, path):
    path = path.split("?")[0]
    for m, pattern, name in OPERATIONS:
        if m == method and re.search(pattern, path):
            return name
    return f"{method} {path}"


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []

    def take(self):
        with self.lock:
            calls, self.calls = self.calls, []
        return calls


def proxy(upstream_port, counter):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def forward(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            with counter.lock:
                counter.calls.append(operation(self.command, self.path))
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    port = free_port()
    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


PIPELINE = """name: {name}
stages:
  - name: build
    jobs:
      - name: zip
        run: |
          python3 -c "import zipfile; z = zipfile.ZipFile('function.zip', 'w'); z.writestr('app.py', 'def handler(e, c):\\n    return \\"{version}\\"\\n')"
        artifacts:
          - name: app
            path: function.zip
environments:
  production:
    target:
      lambda:
        function: {name}
        region: us-east-1
        endpoint: http://127.0.0.1:{port}
        role: arn:aws:iam::123456789012:role/bench
        runtime: python3.12
        handler: app.handler
    bake: 1s
{strategy}"""

CANARY = """    strategy:
      canary:
        steps:
          - weight: 10
          - approval: true
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target", "release", "gantry"))
    args = ap.parse_args()
    print(load_line(), flush=True)
    base = tempfile.mkdtemp(prefix="gantry-bench-lambda-")
    moto_port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_EC2_METADATA_DISABLED="true")
    for k in ("GANTRY_HOME", "GANTRY_SERVER", "GANTRY_TOKEN"):
        env.pop(k, None)
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = None
    try:
        wait_port(moto_port)
        import boto3
        boto3.client("iam", endpoint_url=f"http://127.0.0.1:{moto_port}", region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench").create_role(
            RoleName="bench", AssumeRolePolicyDocument="{}")
        counter = Counter()
        px, px_port = proxy(moto_port, counter)
        repo = os.path.join(base, "fn")
        os.makedirs(repo)
        for c in (["git", "init", "-q", "-b", "main"], ["git", "config", "user.email", "b@x"],
                  ["git", "config", "user.name", "b"]):
            subprocess.run(c, cwd=repo, check=True)
        with open(os.path.join(base, "gantry.toml"), "w") as f:
            f.write(f'listen = "127.0.0.1:0"\ndata_dir = "{repo}/.gantry"\n')
        server = subprocess.Popen([args.gantry, "serve", "--config", os.path.join(base, "gantry.toml")],
                                  env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(base, "serve.log"), "w"))
        for _ in range(600):
            if os.path.exists(os.path.join(repo, ".gantry", "server.json")):
                break
            time.sleep(0.05)

        def g(*a):
            p = subprocess.run([args.gantry, *a], cwd=repo, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"gantry {a}: {p.stdout}\n{p.stderr}")
            return p

        runs = 0

        def build(version, strategy=""):
            nonlocal runs
            with open(os.path.join(repo, "gantry.yml"), "w") as f:
                f.write(PIPELINE.format(name=NAME, version=version, port=px_port, strategy=strategy))
            subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
            subprocess.run(["git", "commit", "-q", "-m", version], cwd=repo, check=True)
            g("run", "--quiet", "--plain")
            runs += 1
            return runs

        v1, v2 = build("v1"), build("v2")
        v3 = build("v3", CANARY)
        counter.take()
        rows = []

        def act(name, *cmd, wait=None):
            start = time.perf_counter()
            g(*cmd)
            if wait:
                for _ in range(200):
                    if wait():
                        break
                    time.sleep(0.05)
            elapsed = (time.perf_counter() - start) * 1000
            time.sleep(1.5)  # let the bake's own calls (none expected) land in this act
            calls = counter.take()
            rows.append((name, calls, elapsed))

        def canary_waiting():
            s = json.loads(g("status", "production", "--json").stdout)
            return (s.get("canary") or {}).get("state") == "waiting-approval"

        def promoted():
            s = json.loads(g("status", "production", "--json").stdout)
            return not s.get("canary") and (s.get("live") or {}).get("number") == 4

        act("first deploy", "deploy", "production", "--artifact", "app", "--run", str(v1))
        act("deploy", "deploy", "production", "--artifact", "app", "--run", str(v2))
        act("rollback", "rollback", "production")
        act("canary start", "deploy", "production", "--artifact", "app", "--run", str(v3),
            wait=canary_waiting)
        act("canary step", "promote", "production", wait=promoted)
        print(f"{'act':14} {'calls':>5} {'ms':>7}  operations")
        for name, calls, ms in rows:
            ops = ", ".join(f"{op} x{n}" if n > 1 else op
                            for op, n in collections.Counter(calls).items())
            print(f"{name:14} {len(calls):5} {ms:7.0f}  {ops}")
        px.shutdown()
    finally:
        if server:
            server.terminate()
            server.wait(timeout=30)
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
