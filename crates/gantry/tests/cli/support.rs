//! Fixtures: a git repository described as one string with `//- path` file markers, a data
//! directory, and the binary run against them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// A repository with the files of `spec` committed on `main`. `spec` holds `//- path` lines,
    /// each followed by that file's content. Files named `*.sh` are made executable.
    pub fn new(spec: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Self { dir };
        std::fs::create_dir_all(f.repo()).unwrap();
        f.git(&["init", "-q", "-b", "main"]);
        f.git(&["config", "user.email", "test@example.com"]);
        f.git(&["config", "user.name", "Test"]);
        f.commit(spec, "first");
        f
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch directory outside the repository and the data directory.
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.repo())
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes the files of `spec` and commits them; returns the commit id.
    pub fn commit(&self, spec: &str, message: &str) -> String {
        for (path, content) in parse_spec(spec) {
            let full = self.repo().join(&path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, content).unwrap();
            if path.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// `gantry ARGS` with this fixture's data directory, run in the repository.
    pub fn gantry(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
        cmd.args(args)
            .current_dir(self.repo())
            .env("GANTRY_HOME", self.data())
            .env_remove("GANTRY_SECRETS_FILE")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.gantry(args).output().expect("gantry runs"))
    }

    /// `gantry show --json RUN` parsed.
    pub fn show(&self, run: i64) -> serde_json::Value {
        let out = self.run(&["show", "--json", &run.to_string()]);
        assert_eq!(out.code, 0, "{out}");
        serde_json::from_str(&out.stdout).expect("show --json is JSON")
    }

    pub fn logs(&self, run: i64, job: &str) -> String {
        let out = self.run(&["logs", &run.to_string(), job]);
        assert_eq!(out.code, 0, "{out}");
        out.stdout
    }
}

fn parse_spec(spec: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in spec.lines() {
        if let Some(path) = line.strip_prefix("//- ") {
            files.push((path.trim().to_string(), String::new()));
        } else if let Some((_, content)) = files.last_mut() {
            content.push_str(line);
            content.push('\n');
        }
    }
    files
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Statuses of the jobs of a `show --json` document, by name.
pub fn job_status(detail: &serde_json::Value, job: &str) -> String {
    detail["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == job)
        .unwrap_or_else(|| panic!("no job {job}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Is the process alive? Zombies (exited, not yet reaped by init) count as gone.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next().unwrap_or('?'));
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// Waits (bounded) until `cond` holds; returns whether it did.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}

/// Reads a pid written to a file by a test step (waiting for it, bounded).
pub fn read_pid(path: &Path) -> i32 {
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(path)
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)),
        "no pid in {}",
        path.display()
    );
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .expect("a pid")
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

/// Sends `sig` to a process the test started, by its id.
pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// A helper process of the test (an HTTP server, moto_server), killed by its id when dropped.
pub struct Helper(pub std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        signal(self.0.id() as i32, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16) {
    assert!(
        wait_until(Duration::from_secs(30), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "nothing listens on {port}"
    );
}

pub fn moto() -> Option<(Helper, u16)> {
    moto_with(&[])
}

/// moto_server with its IAM checks on after the first two requests (which create a user and
/// its key), so a user without a policy gets AccessDenied, as on AWS.
pub fn moto_with_auth() -> Option<(Helper, u16)> {
    moto_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "2")])
}

pub fn moto_with(env: &[(&str, &str)]) -> Option<(Helper, u16)> {
    moto_logging(env, None)
}

/// moto_server, its request log (one line per request: method, path and query) in `log`.
pub fn moto_logging(env: &[(&str, &str)], log: Option<&Path>) -> Option<(Helper, u16)> {
    let port = free_port();
    let stderr = match log {
        Some(p) => std::process::Stdio::from(std::fs::File::create(p).ok()?),
        None => std::process::Stdio::null(),
    };
    let child = std::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .ok()?;
    let h = Helper(child);
    wait_for_port(port);
    Some((h, port))
}

/// Debian's `docker-registry` (the CNCF distribution registry) on 127.0.0.1, storing in `dir`,
/// no login. podman reaches it over plain HTTP because `.ci/run` marks 127.0.0.1 insecure in
/// registries.conf, as Docker does for 127.0.0.0/8 by default.
pub fn registry(dir: &Path) -> (Helper, u16) {
    let port = free_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry (Debian's package of that name; .ci/run installs it)");
    let h = Helper(child);
    wait_for_port(port);
    (h, port)
}

/// Clients sending `GET /` through `addr` with a fresh connection each, until finished,
/// counting what succeeded (200) and what did not, and the longest wait between successes.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    /// The longest time a client waited between two successes, in microseconds.
    stall_us: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(addr: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let stall_us = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, failures, stall, addr) = (
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    failures.clone(),
                    stall_us.clone(),
                    addr.clone(),
                );
                std::thread::spawn(move || {
                    let mut last_ok = std::time::Instant::now();
                    // Bounded: at most 200,000 requests per client.
                    for _ in 0..200_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match crate::deploy::get(&addr, "/") {
                            Ok((200, _, _)) => {
                                let gap = last_ok.elapsed().as_micros() as u64;
                                stall.fetch_max(gap, Ordering::Relaxed);
                                last_ok = std::time::Instant::now();
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            other => {
                                failures.lock().unwrap().push(format!("{other:?}"));
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            failures,
            stall_us,
            threads,
        }
    }

    /// Waits (bounded: 10 s) until `n` more requests than now have succeeded.
    pub fn more(&self, n: u64) -> bool {
        let target = self.ok.load(Ordering::Relaxed) + n;
        wait_until(Duration::from_secs(10), || {
            self.ok.load(Ordering::Relaxed) >= target
        })
    }

    /// The longest a client has waited between two successes so far.
    pub fn longest_stall(&self) -> Duration {
        Duration::from_micros(self.stall_us.load(Ordering::Relaxed))
    }

    /// Stops the clients: (succeeded, failed, how the first failures went).
    pub fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            failures.iter().take(10).cloned().collect(),
        )
    }
}

/// The item of `shown[list]` (a run as `gantry show --json` or the API shows it: `stages`,
/// `jobs`) named `name`.
pub fn named(shown: &serde_json::Value, list: &str, name: &str) -> serde_json::Value {
    shown[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {shown}"))
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list} of {shown}"))
        .clone()
}
