#!/usr/bin/env python3
"""Benchmarks of the artifact store and share links (issue 4), side by side in one run.

(a) store: a 1 GiB directory (half random bytes, half text) packed and stored by gantry
    (`gantry artifact store`, the code path of a job's `artifacts:`: deterministic tar, zstd
    level 1, sha256 while writing, the object synced and renamed into the store) against
    `tar -cf - DIR | zstd -1 -T0 | openssl dgst -sha256` on the same files (which writes nothing).
    Both read from the page cache (the files are read once before). Throughput = input bytes /
    wall time; median of --reps. Peak memory: the gantry process's maximum RSS (getrusage).
(b) store again: the same directory into the same store. Reported: whether anything new was
    stored, bytes the store grew by, and the process's disk writes that were not cancelled
    (/proc/PID/io write_bytes - cancelled_write_bytes, read before the process is reaped).
(c) download: a 1 GiB artifact (one file, stored as is by a real `gantry run`) through a gantry
    share link, `curl URL | openssl dgst -sha256`, against curl of the same file from nginx
    (sendfile) the same way. Median of --reps, interleaved.
(d) sha256 speed of the `sha2` crate (which picks the CPU's SHA extensions at run time):
    `gantry artifact verify` against `openssl dgst -sha256` on the same 1 GiB object, from the
    page cache; and the count of SHA-NI instructions in the binary.

(e) the same 1 GiB directory stored into an S3 bucket served by moto_server (when installed),
    twice: time (moto, in Python, is the bottleneck), peak RSS, and whether the second stored
    anything.

Needs: `cargo build --release`, and Debian's nginx-light (or nginx), zstd, openssl, curl;
moto_server (PyPI moto[server]) for (e).
Usage: bench/artifacts.py [--gantry target/release/gantry] [--reps 3] [--work /tmp/gantry-bench-artifacts]
       [--store-only]
"""
import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line, free_port, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30


def make_data(data):
    """512 MiB of random bytes in 128 files, 512 MiB of text in 1024 files (log-like lines,
    each file a different window of a generated text, so zstd finds realistic redundancy)."""
    marker = os.path.join(data, ".complete")
    if os.path.exists(marker):
        return
    shutil.rmtree(data, ignore_errors=True)
    rnd = random.Random(4)
    os.makedirs(os.path.join(data, "bin"))
    for i in range(128):
        with open(os.path.join(data, "bin", f"blob{i:03}.bin"), "wb") as f:
            f.write(os.urandom(4 << 20))
    words = [
        "".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 10)))
        for _ in range(5000)
    ]
    levels = ["INFO", "DEBUG", "WARN", "ERROR"]
    lines = []
    size = 0
    while size < 12 << 20:
        line = (f"2026-11-{rnd.randint(1, 28):02}T{rnd.randint(0, 23):02}:{rnd.randint(0, 59):02}:"
                f"{rnd.randint(0, 59):02}.{rnd.randint(0, 999999):06}Z {rnd.choice(levels)} "
                f"req={rnd.getrandbits(48):012x} " + " ".join(rnd.choice(words) for _ in range(rnd.randint(4, 16))) + "\n")
        lines.append(line)
        size += len(line)
    text = "".join(lines).encode()
    for i in range(1024):
        d = os.path.join(data, "logs", f"{i // 64:02}")
        os.makedirs(d, exist_ok=True)
        start = rnd.randrange(0, len(text) - (512 << 10))
        with open(os.path.join(d, f"app-{i:04}.log"), "wb") as f:
            f.write(text[start:start + (512 << 10)])
    open(marker, "w").close()


def dir_bytes(path):
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            p = os.path.join(base, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def warm(path):
    subprocess.run(f"tar -cf - -C {path} . > /dev/null", shell=True, check=True)


def timed_shell(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, shell=True, check=True, stdout=subprocess.PIPE, text=True).stdout
    return time.perf_counter() - t, out.strip()


def run_measured(cmd, env):
    """Runs cmd; returns (seconds, stdout, max RSS in KiB, net disk write bytes)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    # Wait without reaping, so /proc/PID/io can still be read.
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
    elapsed = time.perf_counter() - t
    io = {}
    with open(f"/proc/{p.pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            io[k] = int(v)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{cmd} failed: {err.decode()}")
    return elapsed, out.decode(), usage.ru_maxrss, io["write_bytes"] - io["cancelled_write_bytes"]


NGINX_CONF = """daemon on;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
  sendfile on;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target", "release", "gantry"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", default="/tmp/gantry-bench-artifacts")
    ap.add_argument("--store-only", action="store_true", help="only (a), (b) and (e)")
    args = ap.parse_args()
    print(load_line(), flush=True)
    gantry = os.path.abspath(args.gantry)
    for tool in ("nginx", "zstd", "openssl", "curl", "tar"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install nginx-light zstd openssl curl")
    work = args.work
    data = os.path.join(work, "data")
    os.makedirs(work, exist_ok=True)
    print("making the data (once; kept in", data, ")", flush=True)
    make_data(data)
    size = dir_bytes(data)
    print(f"input: {size / GIB:.2f} GiB in {sum(len(f) for _, _, f in os.walk(data))} files")

    # (a) store vs tar | zstd | openssl
    base_t, gantry_t, rss = [], [], []
    stored = None
    for rep in range(args.reps):
        warm(data)
        t, digest = timed_shell(f"tar -cf - -C {data} . | zstd -1 -T0 -q | openssl dgst -sha256")
        base_t.append(t)
        # One store, emptied before each rep: the pages it freed are reused (on this VM, fresh
        # guest pages cost far more than the work measured here).
        home = os.path.join(work, "home")
        shutil.rmtree(home, ignore_errors=True)
        env = dict(os.environ, GANTRY_HOME=home)
        warm(data)
        t, out, maxrss, _ = run_measured([gantry, "artifact", "store", "--workspace", data, "."], env)
        gantry_t.append(t)
        rss.append(maxrss)
        stored = json.loads(out)
        print(f"  rep {rep + 1}: pipeline {t_fmt(base_t[-1], size)}, gantry {t_fmt(t, size)}, "
              f"peak RSS {maxrss / 1024:.1f} MiB, object {stored['size'] / GIB:.3f} GiB", flush=True)
    b, g = statistics.median(base_t), statistics.median(gantry_t)
    print(f"(a) store 1 GiB dir: tar|zstd -1 -T0|openssl {size / b / 2**20:.0f} MiB/s, "
          f"gantry {size / g / 2**20:.0f} MiB/s, ratio {b / g:.2f} (goal >= 0.8); "
          f"gantry peak RSS {max(rss) / 1024:.1f} MiB (goal < 64)")

    # (b) the same content again, into the last store
    home = os.path.join(work, "home")
    env = dict(os.environ, GANTRY_HOME=home)
    before = dir_bytes(os.path.join(home, "artifacts"))
    warm(data)
    t, out, maxrss, written = run_measured([gantry, "artifact", "store", "--workspace", data, "."], env)
    again = json.loads(out)
    grew = dir_bytes(os.path.join(home, "artifacts")) - before
    print(f"(b) store again: newly stored {again['newly_stored']}, same digest "
          f"{again['digest'] == stored['digest']}, store grew {grew} bytes, disk writes {written} bytes, "
          f"{t:.2f} s")
    shutil.rmtree(home, ignore_errors=True)

    # (e) the same directory into an S3 bucket (moto_server on 127.0.0.1), twice
    if shutil.which("moto_server"):
        moto_port = free_port()
        moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(moto_port)
            subprocess.run(["curl", "-sS", "-X", "PUT", f"http://127.0.0.1:{moto_port}/builds"],
                           check=True, stdout=subprocess.DEVNULL)
            s3home = os.path.join(work, "home-s3")
            shutil.rmtree(s3home, ignore_errors=True)
            os.makedirs(s3home)
            with open(os.path.join(s3home, "artifact-store.json"), "w") as f:
                f.write('{"url": "s3://builds/bench"}')
            env = dict(os.environ, GANTRY_HOME=s3home, AWS_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}",
                       AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
            results = []
            for _ in range(2):
                warm(data)
                t, out, maxrss, _ = run_measured([gantry, "artifact", "store", "--workspace", data, "."], env)
                results.append((t, json.loads(out)["newly_stored"], maxrss))
            print(f"(e) S3 (moto_server): first store {results[0][0]:.2f} s, peak RSS {results[0][2] / 1024:.1f} MiB "
                  f"(goal < 64); again: newly stored {results[1][1]}, {results[1][0]:.2f} s, peak RSS "
                  f"{results[1][2] / 1024:.1f} MiB")
            shutil.rmtree(s3home, ignore_errors=True)
        finally:
            moto.kill()
            moto.wait()
    if args.store_only:
        return

    # (c) download through a share link vs nginx
    big = os.path.join(work, "big", "big.bin")
    if not os.path.exists(big) or os.path.getsize(big) != GIB:
        os.makedirs(os.path.dirname(big), exist_ok=True)
        subprocess.run(["head", "-c", str(GIB), "/dev/urandom"], stdout=open(big, "wb"), check=True)
    repo = os.path.join(work, "repo")
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(repo)
    with open(os.path.join(repo, "gantry.yml"), "w") as f:
        f.write("stages:\n  - name: build\n    jobs:\n      - name: big\n"
                f"        run: ln {big} big.bin\n        artifacts: [{{ name: big, path: big.bin }}]\n")
    git = ["git", "-c", "user.email=b@b", "-c", "user.name=bench"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(git + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "big"], cwd=repo, check=True)
    home = os.path.join(work, "home-share")
    shutil.rmtree(home, ignore_errors=True)
    env = dict(os.environ, GANTRY_HOME=home)
    subprocess.run([gantry, "run", "--plain", "--quiet", repo], env=env, check=True, cwd=repo,
                   stdout=subprocess.DEVNULL)
    port = free_port()
    conf = os.path.join(work, "gantry.toml")
    with open(conf, "w") as f:
        f.write(f'data_dir = "{home}"\nlisten = "127.0.0.1:{port}"\n')
    server = subprocess.Popen([gantry, "serve", "--config", conf], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    ngx_dir = os.path.join(work, "nginx")
    shutil.rmtree(ngx_dir, ignore_errors=True)
    os.makedirs(ngx_dir)
    ngx_port = free_port()
    with open(os.path.join(ngx_dir, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(dir=ngx_dir, port=ngx_port, root=os.path.dirname(big)))
    subprocess.run(["nginx", "-p", ngx_dir, "-c", os.path.join(ngx_dir, "nginx.conf")], check=True)
    try:
        wait_port(port)
        wait_port(ngx_port)
        share = subprocess.run([gantry, "artifact", "share", "big", "--expires", "1h"], env=env,
                               check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True).stdout.strip()
        expected = subprocess.run(["openssl", "dgst", "-sha256", "-r", big], check=True,
                                  stdout=subprocess.PIPE, text=True).stdout.split()[0]
        g_t, n_t = [], []
        for rep in range(args.reps):
            t, out = timed_shell(f"curl -sS '{share}' | openssl dgst -sha256 -r")
            assert out.split()[0] == expected, out
            g_t.append(t)
            t, out = timed_shell(f"curl -sS 'http://127.0.0.1:{ngx_port}/big.bin' | openssl dgst -sha256 -r")
            assert out.split()[0] == expected, out
            n_t.append(t)
            print(f"  rep {rep + 1}: gantry share {t_fmt(g_t[-1], GIB)}, nginx {t_fmt(n_t[-1], GIB)}", flush=True)
        g, n = statistics.median(g_t), statistics.median(n_t)
        print(f"(c) download 1 GiB | openssl: nginx {GIB / n / 2**20:.0f} MiB/s, gantry share link "
              f"{GIB / g / 2**20:.0f} MiB/s, ratio {n / g:.2f} (goal >= 0.8)")
    finally:
        subprocess.run(["nginx", "-p", ngx_dir, "-c", os.path.join(ngx_dir, "nginx.conf"), "-s", "stop"])
        server.terminate()
        server.wait(timeout=30)

    # (d) sha256: the sha2 crate vs openssl, both reading the same file from the page cache
    objdump = subprocess.run(f"objdump -d --no-show-raw-insn {gantry} | grep -c sha256rnds2",
                             shell=True, stdout=subprocess.PIPE, text=True).stdout.strip()
    timed_shell(f"cat {big} > /dev/null")
    o_t, v_t = [], []
    for _ in range(args.reps):
        o_t.append(timed_shell(f"openssl dgst -sha256 {big}")[0])
        v_t.append(timed_shell(f"GANTRY_HOME={home} {gantry} artifact verify big")[0])
    o, v = statistics.median(o_t), statistics.median(v_t)
    print(f"(d) sha256 of 1 GiB from the page cache: openssl {GIB / o / 2**20:.0f} MiB/s, "
          f"`gantry artifact verify` (sha2 crate) {GIB / v / 2**20:.0f} MiB/s, ratio {o / v:.2f}; "
          f"SHA-NI round instructions (sha256rnds2) in the binary: {objdump}")


def t_fmt(seconds, size):
    return f"{seconds:.2f} s ({size / seconds / 2**20:.0f} MiB/s)"


if __name__ == "__main__":
    main()
