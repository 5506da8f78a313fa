//! `gantry demo`, as a newcomer meets it: the README's tour, command by command in its order
//! (the demo in one terminal, the pushes and the CLI in another, a browser on the login
//! link); Ctrl-C at five moments of the story, after which nothing the demo started is left;
//! and `--exit`, the story for scripts.
//!
//! Each demo runs with its own `TMPDIR`, so its default directory (`$TMPDIR/gantry-demo`) is
//! the test's, and every process it starts inherits that path in its environment: the process
//! table is searched for it afterwards.

use crate::server_support::request;
use crate::support::Run;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn gantry(tmp: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.env("TMPDIR", tmp)
        .current_dir(tmp)
        .env_remove("GANTRY_HOME")
        .env_remove("GANTRY_SERVER")
        .env_remove("GANTRY_TOKEN")
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null());
    cmd
}

/// A `gantry demo` running, its output gathered as it comes.
struct Demo {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Demo {
    fn start(tmp: &Path, args: &[&str]) -> Demo {
        let mut child = gantry(tmp)
            .arg("demo")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut o = out.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Demo { child, out }
    }

    fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits (bounded) until the output has `marker`.
    fn wait_for(&mut self, marker: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.output().contains(marker) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the demo ended ({status}) before `{marker}`:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("no `{marker}` within {limit:?}:\n{}", self.output());
    }

    /// Sends `signal`, then waits (bounded) for the exit: its code and how long it took.
    fn stop(&mut self, signal: nix::sys::signal::Signal) -> (i32, Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let asked = Instant::now();
        nix::sys::signal::kill(pid, signal).unwrap();
        for _ in 0..1500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), asked.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        panic!("the demo did not stop within 15 s:\n{}", self.output());
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every live process (but this test's) whose environment, working directory or command line
/// holds `tmp`.
fn left_in(tmp: &Path) -> Vec<String> {
    let needle = tmp.as_os_str().as_encoded_bytes().to_vec();
    let has = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle.as_slice());
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        if matches!(state, Some("Z") | Some("X") | None) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
        if has(&cmdline) || has(&environ) || cwd.starts_with(tmp) {
            found.push(format!(
                "{name}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// Nothing the demo started is left (a process being killed is given a moment to go).
fn nothing_left(tmp: &Path, when: &str, out: &str) {
    let mut left = left_in(tmp);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        left = left_in(tmp);
    }
    assert!(left.is_empty(), "{when}: left running: {left:?}\n{out}");
    assert!(
        !tmp.join("gantry-demo").exists(),
        "{when}: the demo's directory is still there\n{out}"
    );
}

/// `http://127.0.0.1:PORT` of production's router, as the demo prints it.
fn production(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| {
            l.trim_start()
                .starts_with("curl -H 'X-User: alice' http://")
        })
        .unwrap_or_else(|| panic!("no production address in:\n{out}"));
    line.split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

fn push(tmp: &Path, args: &[&str]) -> Run {
    Run::from(
        gantry(tmp)
            .args(["demo", "push"])
            .args(args)
            .output()
            .unwrap(),
    )
}

fn contains_all(out: &Run, what: &str, expected: &[&str]) {
    for e in expected {
        assert!(out.stdout.contains(e), "{what}: missing `{e}`:\n{out}");
    }
}

/// The README's tour (section "The demo, step by step"), in its order.
#[test]
fn the_readme_tour_runs_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path().canonicalize().unwrap();
    let mut demo = Demo::start(&tmp, &[]);
    demo.wait_for("the demo runs until Ctrl-C", Duration::from_secs(120));
    let out = demo.output();
    for expected in [
        "✓ test/unit: succeeded",
        "staging: release 1 is live",
        "production: release 1 is live, serving through its router",
        "from release 1: hello from 1.0.0+",
        "sha256 matches the artifact's digest",
        "step 1 of 2: the router sends 10% of users to the canary",
        "sticky users (each asked three times): alice → release 2, 2, 2",
        "step 1 passed analysis",
        "step 2 passed analysis",
        "from release 2: hello from 1.1.0+",
        "the canary's first verdict came at",
    ] {
        assert!(out.contains(expected), "missing `{expected}`:\n{out}");
    }
    // The sticky users: each saw one release all three times.
    let sticky = out.lines().find(|l| l.contains("sticky users")).unwrap();
    for part in sticky.split(": ").nth(1).unwrap().split("; ") {
        let seen: Vec<&str> = part.split("release ").nth(1).unwrap().split(", ").collect();
        assert!(seen.iter().all(|s| *s == seen[0]), "{sticky}");
    }
    let router = production(&out);

    // The dashboard, through the one-time link the demo printed.
    let link = out
        .lines()
        .find_map(|l| l.strip_prefix("log in:     "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let (addr, path) = link
        .strip_prefix("http://")
        .unwrap()
        .split_once('/')
        .unwrap();
    let opened = request(addr, "GET", &format!("/{path}"), &[], b"");
    assert_eq!(opened.status, 200, "{}", opened.body);
    let cookie = opened
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = request(
        addr,
        "GET",
        "/ui/projects/hello/environments/production",
        &[("Cookie", &cookie)],
        b"",
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("release 2") || page.body.contains("#2"),
        "{}",
        page.body
    );

    // alice always gets the canary; with none running, the live release.
    let alice = request(&router, "GET", "/", &[("X-User", "alice")], b"");
    assert_eq!(alice.status, 200);
    assert!(alice.body.contains("hello from 1.1.0+"), "{}", alice.body);

    let tests = push(&tmp, &["--broken", "tests"]);
    assert_eq!(tests.code, 0, "{tests}");
    contains_all(
        &tests,
        "tests",
        &[
            "✗ test/unit: failed",
            "test-failure",
            "helo from",
            "stopped, as it should be",
            "from release 2: hello from 1.1.0+",
        ],
    );
    assert!(!tests.stdout.contains("staging: deploying"), "{tests}");

    let health = push(&tmp, &["--broken", "health"]);
    assert_eq!(health.code, 0, "{health}");
    contains_all(
        &health,
        "health",
        &[
            "staging: deploying",
            "FileNotFoundError",
            "stopped, as it should be",
            "from release 2: hello from 1.1.0+",
        ],
    );
    assert!(!health.stdout.contains("production: deploying"), "{health}");

    let errors = push(&tmp, &["--broken", "errors"]);
    assert_eq!(errors.code, 0, "{errors}");
    contains_all(
        &errors,
        "errors",
        &[
            "step 1 of 2: the router sends 10%",
            "canary-analysis",
            "5xx rate",
            "over max_error_rate",
            "from release 2: hello from 1.1.0+",
        ],
    );

    let slow = push(&tmp, &["--broken", "slow"]);
    assert_eq!(slow.code, 0, "{slow}");
    contains_all(
        &slow,
        "slow",
        &[
            "canary-analysis",
            "p99 latency",
            "over max_p99_ms",
            "from release 2: hello from 1.1.0+",
        ],
    );

    let fix = push(&tmp, &["--fix"]);
    assert_eq!(fix.code, 0, "{fix}");
    contains_all(
        &fix,
        "fix",
        &[
            "step 2 passed analysis",
            "is live in production",
            "hello from 1.6.0+",
        ],
    );
    let served = request(&router, "GET", "/", &[], b"");
    assert!(served.body.contains("hello from 1.6.0+"), "{}", served.body);

    // The CLI against the demo's server, as the demo says.
    let home = tmp.join("gantry-demo/hello/.gantry");
    let cli = |args: &[&str]| {
        Run::from(
            gantry(&tmp)
                .env("GANTRY_HOME", &home)
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let status = cli(&["status", "production"]);
    assert_eq!(status.code, 0, "{status}");
    assert!(status.stdout.contains("healthy"), "{status}");
    let rollback = cli(&["rollback", "production"]);
    assert_eq!(rollback.code, 0, "{rollback}");
    assert!(
        rollback.stdout.contains("rolled back to release 2"),
        "{rollback}"
    );
    let served = request(&router, "GET", "/", &[], b"");
    assert!(served.body.contains("hello from 1.1.0+"), "{}", served.body);

    let (code, took) = demo.stop(nix::sys::signal::Signal::SIGINT);
    let out = demo.output();
    eprintln!("the tour's Ctrl-C: exit {code} after {took:?}");
    assert_eq!(code, 130, "{out}");
    assert!(out.contains("directory removed"), "{out}");
    nothing_left(&tmp, "after the tour", &out);
}

/// Ctrl-C at five moments: starting, mid-build, mid-deploy, mid-canary, idle; and a second
/// Ctrl-C that stops at once. Each time the demo exits (code 130), its directory is gone, and
/// no process it started is left.
#[test]
fn ctrl_c_at_any_moment_stops_everything_the_demo_started() {
    use nix::sys::signal::Signal::SIGINT;
    let moments = [
        ("starting", "repository: "),
        ("mid-build", "✓ build/package"),
        ("mid-deploy", "staging · release 1: deploying"),
        ("mid-canary", "step 1 of 2: the router sends 10%"),
        ("idle", "the demo runs until Ctrl-C"),
    ];
    let mut took = Vec::new();
    for (when, marker) in moments {
        let tmp = tempfile::tempdir().unwrap();
        let tmp: PathBuf = tmp.path().canonicalize().unwrap();
        let port = crate::support::free_port().to_string();
        let mut demo = Demo::start(&tmp, &["--port", &port]);
        demo.wait_for(marker, Duration::from_secs(120));
        let (code, elapsed) = demo.stop(SIGINT);
        let out = demo.output();
        assert_eq!(code, 130, "{when}:\n{out}");
        assert!(out.contains("stopped in "), "{when}:\n{out}");
        nothing_left(&tmp, when, &out);
        took.push(format!("{when} {} ms", elapsed.as_millis()));
    }
    // Twice: the second stops at once.
    let tmp = tempfile::tempdir().unwrap();
    let tmp: PathBuf = tmp.path().canonicalize().unwrap();
    let port = crate::support::free_port().to_string();
    let mut demo = Demo::start(&tmp, &["--port", &port]);
    demo.wait_for("staging: deploying", Duration::from_secs(120));
    let pid = nix::unistd::Pid::from_raw(demo.child.id() as i32);
    nix::sys::signal::kill(pid, SIGINT).unwrap();
    demo.wait_for("again to stop at once", Duration::from_secs(5));
    let (code, elapsed) = demo.stop(SIGINT);
    let out = demo.output();
    assert_eq!(code, 130, "twice:\n{out}");
    nothing_left(&tmp, "twice", &out);
    took.push(format!("twice {} ms", elapsed.as_millis()));
    eprintln!("signal to exit: {}", took.join(", "));
}

/// `--exit`: the story, then everything stopped and removed, exit 0.
#[test]
fn the_demo_with_exit_tells_the_story_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp: PathBuf = tmp.path().canonicalize().unwrap();
    let port = crate::support::free_port().to_string();
    let out = Run::from(
        gantry(&tmp)
            .args(["demo", "--exit", "--port", &port])
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 0, "{out}");
    for expected in [
        "dashboard:  http://127.0.0.1:",
        "/ui/login/link/",
        "docker: ",
        "production served 1.0.0 through its router",
        "step 2 passed analysis",
        "(--exit: stopping now)",
    ] {
        assert!(
            out.stdout.contains(expected),
            "missing `{expected}`:\n{out}"
        );
    }
    nothing_left(&tmp, "--exit", &format!("{out}"));
}
