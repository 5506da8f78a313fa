//! A supervised service: one release of a `process` target, started with `sh -c COMMAND` in the
//! release directory, in its own process group, output appended to the release log. When it
//! exits without being asked to, it is restarted with a growing delay (100 ms doubling up to
//! 10 s, back to 100 ms after a minute of uptime), and every crash is reported with its exit
//! status and the last lines of output. Stopping sends SIGTERM to the group, then SIGKILL after
//! a grace period.
//!
//! The loop runs in the release's shim ([`crate::shim`]), not in the server. Services carry
//! `PR_SET_PDEATHSIG=SIGKILL` towards the shim and `GANTRY_RELEASE_DIR`, so if the shim dies they
//! die with it and what they started is found by its environment at the next start.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

/// The variable that marks a service's processes (and their children) as belonging to a
/// release directory.
pub const RELEASE_DIR_VAR: &str = "GANTRY_RELEASE_DIR";
const STOP_GRACE: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const STABLE_AFTER: Duration = Duration::from_secs(60);

pub struct ServiceSpec {
    /// The deploy release it runs (number in its environment).
    pub release: i64,
    /// That release's id in the state store, which events carry.
    pub release_id: i64,
    pub command: String,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// Applied to the service (and all it starts) when set; its release directory is its own.
    pub sandbox: Option<gantry_runner::sandbox::Sandbox>,
}

/// Something that happened to a supervised service.
#[derive(Debug, Clone)]
pub enum ServiceEvent {
    Started {
        release_id: i64,
        pid: u32,
    },
    /// It exited without being asked to; it will be restarted after `restart_in`.
    Crashed {
        release_id: i64,
        status: String,
        output_tail: Vec<String>,
        restart_in: Duration,
    },
    /// What a target did for the release that its history should show (a published version).
    Note {
        release_id: i64,
        text: String,
    },
}

/// How the service last ended without being asked to.
#[derive(Debug, Clone)]
pub struct Crash {
    pub status: String,
    /// Its last lines of output before it ended.
    pub output_tail: Vec<String>,
}

/// A running service; dropping it does not stop it (call [`Service::stop`]).
pub struct Service {
    pub release: i64,
    pub started: Instant,
    pub log: PathBuf,
    pid: Arc<AtomicU32>,
    crashes: Arc<AtomicU32>,
    last_crash: Arc<std::sync::Mutex<Option<Crash>>>,
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Acquire)
    }
    /// Crashes since the service was started.
    pub fn crashes(&self) -> u32 {
        self.crashes.load(Ordering::Acquire)
    }
    pub fn last_crash(&self) -> Option<Crash> {
        self.last_crash.lock().expect("last crash").clone()
    }
    /// Stops the service and waits (bounded) until its process group is gone.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(STOP_GRACE + Duration::from_secs(2), async {
            while !*done.borrow() {
                if done.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
}

/// The line written to the release log before each start; [`tail`] reads what follows the last.
const START_MARK: &str = "--- gantry: starting";

#[allow(clippy::disallowed_methods)] // The one place supervised services are spawned.
fn command(spec: &ServiceSpec) -> std::io::Result<Command> {
    use std::io::Write;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    writeln!(log, "{START_MARK} `{}` ---", spec.command)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(exec_form(&spec.command))
        .current_dir(&spec.dir)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(RELEASE_DIR_VAR, &spec.dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(false);
    // Built here, applied in the child between fork and exec.
    let mut sandbox = spec
        .sandbox
        .as_ref()
        .map(|s| s.grants(&[spec.dir.as_path()]).prepare())
        .transpose()?;
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if let Some(s) = sandbox.as_mut() {
                s.apply()?;
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// A simple command (`./app --port $PORT`) is run with `exec`, so the service itself is the
/// child the shim supervises — and, through `PR_SET_PDEATHSIG`, dies with its shim. A compound
/// one (pipes, `&&`, `;`, redirections, `cd`) runs as written; its processes are found and
/// stopped by their environment and process group at the next start if the shim dies.
fn exec_form(command: &str) -> String {
    let trimmed = command.trim();
    let compound = trimmed
        .chars()
        .any(|c| matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')' | '`' | '\n'));
    let first = trimmed.split_whitespace().next().unwrap_or("");
    let builtin = matches!(
        first,
        "cd" | "exec" | "export" | "set" | "if" | "for" | "while" | "case" | "." | "source"
    ) || first.contains('=');
    if compound || builtin || trimmed.is_empty() {
        command.to_string()
    } else {
        format!("exec {trimmed}")
    }
}

/// Starts `spec` and keeps it running until stopped. Events go to `events`.
pub fn start(spec: ServiceSpec, events: mpsc::UnboundedSender<ServiceEvent>) -> Service {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let pid = Arc::new(AtomicU32::new(0));
    let crashes = Arc::new(AtomicU32::new(0));
    let last_crash = Arc::new(std::sync::Mutex::new(None));
    let service = Service {
        release: spec.release,
        started: Instant::now(),
        log: spec.log.clone(),
        pid: pid.clone(),
        crashes: crashes.clone(),
        last_crash: last_crash.clone(),
        stop: stop_tx,
        done: done_rx,
    };
    tokio::spawn(async move {
        supervise(spec, events, stop_rx, pid, crashes, last_crash).await;
        let _ = done_tx.send(true);
    });
    service
}

async fn supervise(
    spec: ServiceSpec,
    events: mpsc::UnboundedSender<ServiceEvent>,
    mut stop: watch::Receiver<bool>,
    pid_slot: Arc<AtomicU32>,
    crashes: Arc<AtomicU32>,
    last_crash: Arc<std::sync::Mutex<Option<Crash>>>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        let spawned = command(&spec).and_then(|mut c| c.spawn());
        let started = Instant::now();
        let status = match spawned {
            Err(e) => format!("could not start: {e}"),
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                pid_slot.store(pid, Ordering::Release);
                let _ = events.send(ServiceEvent::Started {
                    release_id: spec.release_id,
                    pid,
                });
                tokio::select! {
                    status = child.wait() => {
                        // Whatever it left in its group goes with it.
                        signal_group(pid, Signal::SIGKILL);
                        describe(status)
                    }
                    _ = stop.changed() => {
                        signal_group(pid, Signal::SIGTERM);
                        if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                            signal_group(pid, Signal::SIGKILL);
                            let _ = child.wait().await;
                        }
                        signal_group(pid, Signal::SIGKILL);
                        pid_slot.store(0, Ordering::Release);
                        return;
                    }
                }
            }
        };
        pid_slot.store(0, Ordering::Release);
        if started.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        let output_tail = tail(&spec.log, 20);
        *last_crash.lock().expect("last crash") = Some(Crash {
            status: status.clone(),
            output_tail: output_tail.clone(),
        });
        crashes.fetch_add(1, Ordering::AcqRel);
        let _ = events.send(ServiceEvent::Crashed {
            release_id: spec.release_id,
            status,
            output_tail,
            restart_in: backoff,
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn signal_group(pgid: u32, sig: Signal) {
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid as i32), sig);
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(9)) => "killed by signal 9 (SIGKILL; out of memory?)".into(),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "ended".into(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// The last `n` lines of a log file since the service's last start (reads at most the last
/// 64 KiB).
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let from = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(from)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if let Some(last_start) = lines.iter().rposition(|l| l.starts_with(START_MARK)) {
        lines.drain(..=last_start);
    }
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(|l| l.to_string()).collect()
}

/// Kills (SIGKILL) every process whose [`RELEASE_DIR_VAR`] lies under `root`: services left by a
/// gantry that died. Returns how many.
pub fn kill_leftovers(root: &Path) -> usize {
    gantry_runner::owner::kill_by_env(RELEASE_DIR_VAR, root)
}

#[cfg(test)]
mod tests {
    use super::exec_form;

    #[test]
    fn simple_commands_are_exec_ed_compound_ones_run_as_written() {
        assert_eq!(exec_form("./app --port $PORT"), "exec ./app --port $PORT");
        assert_eq!(
            exec_form("  python3 -m http.server \"$PORT\" "),
            "exec python3 -m http.server \"$PORT\""
        );
        for compound in [
            "cd web && ./run",
            "./a | tee log",
            "./a; ./b",
            "PORT=1 ./a",
            "exec ./a",
            "./a > log",
        ] {
            assert_eq!(exec_form(compound), compound);
        }
    }
}
