//! A real `gantry serve` on 127.0.0.1 (port 0) for tests, a bare repository it watches, and a
//! small HTTP/1.1 client (plain `TcpStream`, so tests see exactly what any client would).

use crate::support::{alive, signal, wait_until};
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Served {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub url: String,
    /// The data directory when it is not `.gantry` next to the configuration.
    pub data_dir: Option<PathBuf>,
    /// Variables the server process gets besides the test's own (AWS credentials, say).
    pub env: Vec<(String, String)>,
}

/// A bare repository `hello.git` in `dir` with a working clone `work` that pushes to it.
pub fn bare_repo(dir: &Path, pipeline: &str) -> String {
    let bare = dir.join("hello.git");
    run_git(
        dir,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    let work = dir.join("work");
    run_git(
        dir,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    run_git(&work, &["config", "user.email", "t@example.com"]);
    run_git(&work, &["config", "user.name", "T"]);
    run_git(&work, &["checkout", "-q", "-b", "main"]);
    push(dir, pipeline, "first")
}

/// Commits `gantry.yml` with `pipeline` (or an empty commit when unchanged) and pushes; returns the commit.
pub fn push(dir: &Path, pipeline: &str, message: &str) -> String {
    let work = dir.join("work");
    std::fs::write(work.join("gantry.yml"), pipeline).unwrap();
    run_git(&work, &["add", "-A"]);
    run_git(&work, &["commit", "-q", "--allow-empty", "-m", message]);
    run_git(&work, &["push", "-q", "origin", "HEAD:main"]);
    run_git(&work, &["rev-parse", "HEAD"])
}

/// Runs git in `dir`, asserting it succeeds; returns what it printed, trimmed.
pub fn run_git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Served {
    /// A server with `config` (its `gantry.toml`) in a fresh directory prepared by `prepare`.
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Self {
        Self::start_in_env(dir, config, &[])
    }

    /// The same, with `env` added to the server's environment.
    pub fn start_in_env(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Self {
        std::fs::write(dir.path().join("gantry.toml"), config).unwrap();
        let mut s = Served {
            dir,
            child: None,
            url: String::new(),
            data_dir: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.restart();
        s
    }

    /// A server whose data directory is `data` (shared with `gantry run` of a fixture).
    pub fn start_with_data(config: &str, data: &Path) -> Self {
        Self::start_with_data_env(config, data, &[])
    }

    /// The same, with `env` added to the server's environment.
    pub fn start_with_data_env(config: &str, data: &Path, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // First: keys after a [[table]] header would belong to that table.
        let config = format!("data_dir = \"{}\"\n{config}", data.display());
        std::fs::write(dir.path().join("gantry.toml"), config).unwrap();
        let mut s = Served {
            dir,
            child: None,
            url: String::new(),
            data_dir: Some(data.to_path_buf()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.restart();
        s
    }

    /// Where its `gantry.toml` is (and where it runs).
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    pub fn data(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| self.dir.path().join(".gantry"))
    }

    /// The server's log so far (all starts).
    pub fn log(&self) -> String {
        let mut out = String::new();
        let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("serve-")
            })
            .collect();
        logs.sort();
        for l in logs {
            out.push_str(&std::fs::read_to_string(l).unwrap_or_default());
        }
        out
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data().join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Starts (again) the server process and waits for it to record its URL.
    pub fn restart(&mut self) {
        let server_file = self.data().join("server.json");
        let _ = std::fs::remove_file(&server_file);
        let log = std::fs::File::create(self.dir.path().join(format!(
                "serve-{}.log",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            )))
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["serve", "--config", "gantry.toml"])
            .current_dir(self.dir.path())
            .env("HELLO_SECRET", "webhook-secret")
            .env("TEST_S3_SECRET", "moto-secret")
            .env("GANTRY_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("GANTRY_HOME")
            .env_remove("GANTRY_SERVER")
            .env_remove("GANTRY_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(30), || server_file.is_file()),
            "the server did not start"
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&server_file).unwrap()).unwrap();
        self.url = v["url"].as_str().unwrap().to_string();
    }

    /// SIGTERM, then wait (bounded) for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, Signal::SIGTERM);
            let pid = c.id() as i32;
            assert!(
                wait_until(Duration::from_secs(60), || c.try_wait().unwrap().is_some()),
                "server {pid} did not stop"
            );
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        request(&self.addr(), method, path, headers, body)
    }

    pub fn api(&self, method: &str, path: &str, body: &str) -> Response {
        let token = self.token();
        let auth = format!("Bearer {token}");
        self.request(
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    /// `GET /api/runs` as JSON.
    pub fn runs(&self) -> Vec<serde_json::Value> {
        let r = self.api("GET", "/api/runs?limit=500", "");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["runs"].as_array().unwrap().clone()
    }

    pub fn run(&self, id: i64) -> serde_json::Value {
        let r = self.api("GET", &format!("/api/runs/{id}"), "");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Stage `name` of run `run`, as the API shows it.
    pub fn stage(&self, run: i64, name: &str) -> serde_json::Value {
        crate::support::named(&self.run(run), "stages", name)
    }

    /// Job `name` of run `run`, as the API shows it.
    pub fn job(&self, run: i64, name: &str) -> serde_json::Value {
        crate::support::named(&self.run(run), "jobs", name)
    }

    /// The text of run `run`'s stored log lines, one per line.
    pub fn log_text(&self, run: i64) -> String {
        let log = self.api("GET", &format!("/api/runs/{run}/logs"), "").json();
        log["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["text"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Queues a run of `hello` by hand and waits (bounded) until its first log line is stored.
    pub fn trigger_and_wait_for_output(&self) -> i64 {
        let id = self.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
            .as_i64()
            .expect("a run id");
        let has_output = || {
            self.api("GET", &format!("/api/runs/{id}/logs"), "").json()["lines"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        };
        assert!(
            crate::support::wait_until(Duration::from_secs(20), has_output),
            "run {id} printed nothing"
        );
        id
    }

    /// Waits (bounded) until run `id` has finished; returns its status.
    pub fn wait_finished(&self, id: i64) -> String {
        let mut status = String::new();
        wait_until(Duration::from_secs(60), || {
            let r = self.api("GET", &format!("/api/runs/{id}"), "");
            if r.status != 200 {
                return false;
            }
            status = r.json()["run"]["status"].as_str().unwrap_or("").to_string();
            !matches!(status.as_str(), "queued" | "running")
        });
        status
    }

    /// Signs `body` for the webhook as GitHub does.
    pub fn github_signature(body: &[u8]) -> String {
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"webhook-secret").unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

impl Drop for Served {
    /// Kills the server, then what outlives it: the data plane and the releases' shims and
    /// services (found by the data directory in their environment, each killed by its pid).
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            if alive(pid) {
                signal(pid, Signal::SIGKILL);
            }
            let _ = c.wait();
        }
        // Shims first, so none starts its service again.
        for pid in marked(&self.data(), &["GANTRY_SHIM", "GANTRY_DATAPLANE"]) {
            signal(pid, Signal::SIGKILL);
        }
        for pid in release_processes(&self.data()) {
            signal(pid, Signal::SIGKILL);
        }
    }
}

/// Processes whose `GANTRY_RELEASE_DIR` lies in the data directory `data`.
pub fn release_processes(data: &Path) -> Vec<i32> {
    marked(data, &["GANTRY_RELEASE_DIR"])
}

/// The releases' shims of the data directory `data`.
pub fn shims(data: &Path) -> Vec<i32> {
    marked(data, &["GANTRY_SHIM"])
}

/// The data plane of the data directory `data`.
pub fn data_planes(data: &Path) -> Vec<i32> {
    marked(data, &["GANTRY_DATAPLANE"])
}

/// Processes (not zombies) with one of `vars` naming a path in the data directory `data`.
pub fn marked(data: &Path, vars: &[&str]) -> Vec<i32> {
    let root = data.display().to_string();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if zombie {
            continue;
        }
        let Ok(environ) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| {
            vars.iter().any(|var| {
                v.strip_prefix(var.as_bytes())
                    .and_then(|r| r.strip_prefix(b"="))
                    .is_some_and(|d| String::from_utf8_lossy(d).starts_with(&root))
            })
        }) {
            out.push(pid);
        }
    }
    out
}

pub struct Response {
    pub status: u16,
    pub body: String,
    /// The status line and headers, as sent.
    pub head: String,
}

impl Response {
    /// The value of header `name` (the first, if sent more than once).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        body,
        head: head.to_string(),
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Opens an SSE stream and returns a line reader over it.
pub fn sse(
    addr: &str,
    path: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
    );
    if let Some(id) = last_event_id {
        head.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    r
}

/// `curl -sS -L`: the body after following redirects.
pub fn curl_followed(url: &str) -> Vec<u8> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-L", "--max-redirs", "3", url])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl -L {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `curl -sS -D -`: the response head and the body.
pub fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--path-as-is", "-D", "-"])
        .args(args)
        .output()
        .expect("curl runs");
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(raw.len(), |i| i + 4);
    (
        String::from_utf8_lossy(&raw[..split]).into_owned(),
        raw[split..].to_vec(),
    )
}

pub fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
