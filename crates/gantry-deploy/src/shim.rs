//! Per-release shims: a `process` release runs under a small `gantry shim` process of its own,
//! in its own session, that supervises it (the [`supervisor`](crate::supervisor) loop:
//! restarts with back-off, crashes with their output) and outlives whoever started it — the
//! server and the data plane can crash, restart or be replaced while the release serves. As
//! containerd's shims do for containers.
//!
//! What a shim does is on disk beside the release log, written whole (temp file + rename):
//! `<n>.shim.json` holds the shim's pid, the service's pid, its address, when it started and
//! its crashes. The server reads it to see the release ([`read`]), adopts it after a restart,
//! and stops it by signalling the shim ([`stop`]): SIGTERM makes the shim stop its service's
//! process group (SIGTERM, then SIGKILL after the grace period) and exit, removing the file.
//!
//! No orphans: the service carries `PR_SET_PDEATHSIG` towards the shim and `GANTRY_RELEASE_DIR`;
//! a shim carries `GANTRY_SHIM` (its release directory), so every process of a release is found
//! after any crash — a live shim is adopted or stopped, and a release process without a live
//! shim is killed ([`kill_orphans`]).

use crate::supervisor::{self, ServiceEvent, ServiceSpec};
use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The variable that marks a shim with its release directory.
pub const SHIM_VAR: &str = "GANTRY_SHIM";

/// What a shim is told to run (on its standard input, so nothing of it is on disk).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    pub release: i64,
    pub release_id: i64,
    pub command: String,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub addr: SocketAddr,
    /// Paths the service must not reach (the server's sandbox), if it runs in one.
    pub hidden: Option<Vec<PathBuf>>,
}

/// What a shim says of its release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimState {
    pub shim: u32,
    /// The service's pid (its process group), 0 between a crash and the restart.
    pub pid: u32,
    pub release: i64,
    pub release_id: i64,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    /// When the shim started (milliseconds since the epoch).
    pub since_ms: i64,
    pub crashes: u32,
    pub last_crash: Option<(String, Vec<String>)>,
    /// The wait before the next start after the last crash, in milliseconds.
    pub restart_in_ms: u64,
}

/// Where the shim of the release logging to `log` keeps its state.
pub fn state_path(log: &Path) -> PathBuf {
    log.with_extension("shim.json")
}

fn write(path: &Path, state: &ShimState) {
    let tmp = path.with_extension("json.tmp");
    let ok = serde_json::to_vec(state)
        .ok()
        .and_then(|b| std::fs::write(&tmp, b).ok())
        .and_then(|()| std::fs::rename(&tmp, path).ok());
    if ok.is_none() {
        tracing::warn!(path = %path.display(), "the shim could not write its state");
    }
}

/// The shim's life: starts the service, records what happens to it, and on SIGTERM stops it
/// and ends. `gantry shim` calls this with the spec read from standard input.
pub async fn main(spec: ShimSpec) -> anyhow::Result<()> {
    let path = state_path(&spec.log);
    let mut state = ShimState {
        shim: std::process::id(),
        pid: 0,
        release: spec.release,
        release_id: spec.release_id,
        dir: spec.dir.clone(),
        addr: spec.addr,
        since_ms: gantry_engine::ports::now_millis(),
        crashes: 0,
        last_crash: None,
        restart_in_ms: 0,
    };
    write(&path, &state);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let service = supervisor::start(
        ServiceSpec {
            release: spec.release,
            release_id: spec.release_id,
            command: spec.command,
            dir: spec.dir,
            env: spec.env,
            log: spec.log,
            sandbox: spec
                .hidden
                .map(|hidden| gantry_runner::sandbox::Sandbox { hidden }),
        },
        tx,
    );
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ServiceEvent::Started { pid, .. }) => {
                    state.pid = pid;
                    write(&path, &state);
                }
                Some(ServiceEvent::Crashed { status, output_tail, restart_in, .. }) => {
                    state.pid = 0;
                    state.crashes += 1;
                    state.last_crash = Some((status, output_tail));
                    state.restart_in_ms = restart_in.as_millis() as u64;
                    write(&path, &state);
                }
                Some(ServiceEvent::Note { .. }) => {}
                None => break,
            },
            _ = term.recv() => break,
        }
    }
    service.stop().await;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Starts a shim for `spec`, detached (its own session), and waits (bounded: 5 s) until it
/// has recorded itself.
pub async fn spawn(exe: &Path, spec: &ShimSpec) -> anyhow::Result<ShimState> {
    let _ = std::fs::remove_file(state_path(&spec.log));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let mut cmd = detached(exe, &log)?;
    cmd.arg("shim")
        .env_clear()
        .env(SHIM_VAR, &spec.dir)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .current_dir(&spec.dir)
        .stdin(std::process::Stdio::piped());
    let pid = spawn_detached(cmd, Some(&serde_json::to_vec(spec)?))
        .with_context(|| format!("starting the shim ({})", exe.display()))?;
    for _ in 0..250 {
        if let Some(s) = read(&spec.log).filter(|s| s.shim == pid) {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the shim of release {} did not start", spec.release)
}

/// A command of the gantry binary `exe` that will run detached: in a session of its own (no
/// terminal, no parent to die with), its output appended to `log`.
#[allow(clippy::disallowed_methods)] // Shims and the data plane are started here only.
pub(crate) fn detached(exe: &Path, log: &std::fs::File) -> std::io::Result<std::process::Command> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(exe);
    cmd.stdout(log.try_clone()?).stderr(log.try_clone()?);
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    Ok(cmd)
}

/// Spawns a [`detached`] command, writes `input` to its standard input (then closes it), and
/// reaps it on a thread when it ends — it does not end with us. Returns its pid.
pub(crate) fn spawn_detached(
    mut cmd: std::process::Command,
    input: Option<&[u8]>,
) -> std::io::Result<u32> {
    use std::io::Write;
    let mut child = cmd.spawn()?;
    let pid = child.id();
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        stdin.write_all(input)?;
    }
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

/// The state of the release's shim, if one lives.
pub fn read(log: &Path) -> Option<ShimState> {
    let s: ShimState = serde_json::from_slice(&std::fs::read(state_path(log)).ok()?).ok()?;
    is_shim(s.shim, &s.dir).then_some(s)
}

/// Whether `pid` is a live shim of the release directory `dir` (not a zombie, not a pid
/// reused by something else).
fn is_shim(pid: u32, dir: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let zombie = std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    if zombie {
        return false;
    }
    let marker = format!("{SHIM_VAR}={}", dir.display());
    std::fs::read(proc.join("environ"))
        .map(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
        .unwrap_or(false)
}

/// Stops the release's shim and its service (bounded: the service's grace and 3 s more),
/// killing what is left; afterwards nothing of the release runs.
pub async fn stop(log: &Path) {
    let Some(s) = read(log) else {
        let _ = std::fs::remove_file(state_path(log));
        return;
    };
    let shim = nix::unistd::Pid::from_raw(s.shim as i32);
    let _ = nix::sys::signal::kill(shim, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..400 {
        if !is_shim(s.shim, &s.dir) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if is_shim(s.shim, &s.dir) {
        let _ = nix::sys::signal::kill(shim, nix::sys::signal::Signal::SIGKILL);
    }
    if s.pid > 0 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(s.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(state_path(log));
}

/// Every live shim under `root` (`<project>/<env>/<n>.shim.json`), with its log.
pub fn all(root: &Path) -> Vec<(PathBuf, ShimState)> {
    let mut out = Vec::new();
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for project in dirs(root) {
        for env in dirs(&project) {
            for f in dirs(&env) {
                let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Some(n) = name.strip_suffix(".shim.json") {
                    let log = env.join(format!("{n}.log"));
                    if let Some(s) = read(&log) {
                        out.push((log, s));
                    }
                }
            }
        }
    }
    out
}

/// Kills (SIGKILL) every release process under `root` that no live shim supervises: what a
/// shim killed by force left behind (the children of a compound command). Returns how many.
pub fn kill_orphans(root: &Path) -> usize {
    let groups: Vec<u32> = all(root)
        .iter()
        .map(|(_, s)| s.pid)
        .filter(|p| *p > 0)
        .collect();
    let mut killed = 0;
    for pid in gantry_runner::owner::pids_by_env(supervisor::RELEASE_DIR_VAR, root) {
        let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
            .map(|g| g.as_raw() as u32)
            .unwrap_or(0);
        if groups.contains(&group) {
            continue;
        }
        if nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
        {
            killed += 1;
        }
    }
    killed
}
