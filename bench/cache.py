#!/usr/bin/env python3
"""Job caches on a real Rust project: plain `cargo build && cargo test` in a fresh clone, then the
same pipeline through `gantry run` twice in fresh clones of the repository with one data
directory — cold (no cache), then warm (the `target/` cache restored by its Cargo.lock key).

The project is made here from crates of the registry (serde, serde_json, toml, clap, regex and
their dependencies), its Cargo.lock generated and its crates fetched first, so that none of the
three timings downloads anything. All use the same CARGO_HOME.

Usage: bench/cache.py [--gantry target/release/gantry]
Goals (issue 18): cold gantry within 3% of plain cargo; warm under 30% of cold.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import load_line  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CARGO_TOML = """[package]
name = "cachebench"
version = "0.1.0"
edition = "2021"

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
toml = "0.8"
clap = { version = "4", features = ["derive"] }
regex = "1"
"""

LIB_RS = """use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Config {
    pub name: String,
    pub retries: u32,
}

pub fn parse(text: &str) -> Config {
    toml::from_str(text).expect("valid")
}

pub fn words(text: &str) -> usize {
    regex::Regex::new(r"\\w+").unwrap().find_iter(text).count()
}

#[derive(clap::Parser)]
pub struct Args {
    #[arg(long)]
    pub name: String,
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let c = super::parse("name = 'a'\\nretries = 3\\n");
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<super::Config>(&j).unwrap(), c);
        assert_eq!(super::words("one two three"), 3);
    }
}
"""

PIPELINE = """name: cachebench
stages:
  - name: build
    jobs:
      - name: build-and-test
        cache:
          - key: "target-{{ hash('Cargo.lock') }}"
            paths: [target/]
            restore_keys: ["target-"]
        run: cargo build --locked && cargo test --locked
"""


def sh(cmd, cwd, env=None):
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(cmd, cwd, env):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gantry", default=os.path.join(ROOT, "target/release/gantry"))
    args = ap.parse_args()
    gantry = os.path.abspath(args.gantry)
    base = tempfile.mkdtemp(prefix="gantry-cache-bench-")
    env = dict(os.environ)
    env.pop("CARGO_TARGET_DIR", None)
    env["CARGO_TERM_COLOR"] = "never"
    origin = os.path.join(base, "origin")
    os.makedirs(os.path.join(origin, "src"))
    with open(os.path.join(origin, "Cargo.toml"), "w") as f:
        f.write(CARGO_TOML)
    with open(os.path.join(origin, "src/lib.rs"), "w") as f:
        f.write(LIB_RS)
    with open(os.path.join(origin, "gantry.yml"), "w") as f:
        f.write(PIPELINE)
    with open(os.path.join(origin, ".gitignore"), "w") as f:
        f.write("target/\n.gantry/\n")
    sh(["cargo", "generate-lockfile"], origin, env)
    sh(["cargo", "fetch", "--locked"], origin, env)
    sh(["git", "init", "-q", "-b", "main"], origin)
    sh(["git", "add", "-A"], origin)
    sh(["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-q", "-m", "bench"], origin)
    data = os.path.join(base, "data")

    def clone(name):
        path = os.path.join(base, name)
        sh(["git", "clone", "-q", origin, path], base)
        return path

    print(load_line())
    plain = timed(["sh", "-c", "cargo build --locked && cargo test --locked"], clone("plain"), env)
    cold = timed([gantry, "--data-dir", data, "run"], clone("cold"), env)
    warm = timed([gantry, "--data-dir", data, "run"], clone("warm"), env)
    out = subprocess.run([gantry, "--data-dir", data, "cache", "ls"], capture_output=True, text=True).stdout.strip()
    print(f"cache: {out}")
    print(f"{'what':<34}{'seconds':>9}{'ratio':>10}")
    print(f"{'plain cargo build && cargo test':<34}{plain:>9.1f}{1.0:>10.2f}")
    print(f"{'gantry run, cold (saves target/)':<34}{cold:>9.1f}{cold / plain:>10.2f}   (goal <= 1.03)")
    print(f"{'gantry run, warm (restores it)':<34}{warm:>9.1f}{warm / cold:>10.2f}   (of cold; goal < 0.30)")
    print(load_line())
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
