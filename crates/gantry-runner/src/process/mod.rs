//! One step as a process: `sh -e -c SCRIPT` in its own process group, environment cleared and set
//! from the job, stdin from /dev/null, stdout and stderr read as they come and turned into masked
//! lines. Timeouts and cancellation stop the whole group: SIGTERM, a grace period, then SIGKILL.
//! When the shell exits, whatever it left running in its group is killed too, so a background
//! child can neither outlive its step nor hold the log pipe open.
//!
//! A step that is not sandboxed starts without a fork of gantry ([`spawn`]).
//!
//! This module, the release supervisor (gantry-deploy) and the git adapter are the only places
//! that start processes (clippy.toml).

use gantry_engine::mask::{LineSplitter, Masker};
use gantry_engine::ports::Stream;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod spawn;

/// Longest line kept whole; longer output is stored in pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;
/// How long to wait for the output pipes to close after the step's group was killed.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Output a step's lines were handed on as but their consumer (the run's log writer) has not
/// taken yet. While it is over its limit, [`run_step`] stops reading the step's pipes, so a step
/// that prints faster than its log can be stored waits on its own writes (back-pressure), and
/// memory stays bounded however long the log.
#[derive(Debug)]
pub struct Backlog {
    bytes: std::sync::atomic::AtomicU64,
    limit: u64,
    taken: tokio::sync::Notify,
}

impl Backlog {
    pub fn new(limit: u64) -> Self {
        Self {
            bytes: std::sync::atomic::AtomicU64::new(0),
            limit,
            taken: tokio::sync::Notify::new(),
        }
    }

    /// `n` bytes handed on.
    pub fn add(&self, n: u64) {
        self.bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// `n` bytes taken by the consumer.
    pub fn take(&self, n: u64) {
        self.bytes
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        self.taken.notify_waiters();
    }

    pub fn over(&self) -> bool {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed) > self.limit
    }

    /// Resolves once the backlog is at or under its limit.
    pub async fn room(&self) {
        loop {
            let taken = self.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if !self.over() {
                return;
            }
            taken.await;
        }
    }
}

pub struct StepSpec<'a> {
    pub script: &'a str,
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub deadline: Option<Instant>,
    pub kill_grace: Duration,
    /// Applied to the step's shell (and so to all it starts) when set: what it may use.
    pub sandbox: Option<&'a crate::sandbox::Grants>,
    /// Where the step's lines wait to be stored, if anywhere: reading pauses while it is full.
    pub backlog: Option<&'a Backlog>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    Exited(i32),
    /// Killed by a signal it did not handle (not by gantry).
    Signaled(i32),
    TimedOut,
    Cancelled,
    SpawnFailed(String),
}

impl StepEnd {
    /// The exit code as shells report it (128 + signal for a signal).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            StepEnd::Exited(c) => Some(*c),
            StepEnd::Signaled(s) => Some(128 + s),
            _ => None,
        }
    }
}

/// A step's shell, however it was started.
enum Child {
    /// Started without a fork ([`spawn`]): every step that is not sandboxed.
    Spawned(spawn::Spawned),
    /// Forked, for code of its own between fork and exec (the Landlock sandbox, whose crate may
    /// allocate there), or where the kernel cannot give a pidfd at clone (before Linux 5.2).
    Forked(tokio::process::Child),
}

type Output = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

impl Child {
    fn start(spec: &StepSpec<'_>) -> std::io::Result<Self> {
        if spec.sandbox.is_none() {
            match spawn::spawn(&["-e", "-c", spec.script], spec.env, spec.cwd) {
                Ok(s) => return Ok(Child::Spawned(s)),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {}
                Err(e) => return Err(e),
            }
        }
        command(spec)?.spawn().map(Child::Forked)
    }

    fn id(&self) -> u32 {
        match self {
            Child::Spawned(s) => s.id(),
            Child::Forked(c) => c.id().unwrap_or(0),
        }
    }

    fn outputs(&mut self) -> [Option<(Stream, Output)>; 2] {
        fn boxed<R: tokio::io::AsyncRead + Unpin + Send + 'static>(r: R) -> Output {
            Box::new(r)
        }
        match self {
            Child::Spawned(s) => [
                s.stdout.take().map(|r| (Stream::Stdout, boxed(r))),
                s.stderr.take().map(|r| (Stream::Stderr, boxed(r))),
            ],
            Child::Forked(c) => [
                c.stdout.take().map(|r| (Stream::Stdout, boxed(r))),
                c.stderr.take().map(|r| (Stream::Stderr, boxed(r))),
            ],
        }
    }

    /// Cancel-safe.
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Child::Spawned(s) => s.wait().await,
            Child::Forked(c) => c.wait().await,
        }
    }
}

#[allow(clippy::disallowed_methods)] // The one place steps are spawned.
fn command(spec: &StepSpec<'_>) -> std::io::Result<Command> {
    let mut cmd = Command::new("/bin/sh");
    // `-e`: a failing line of a multi-line step fails the step, as in every CI system.
    cmd.arg("-e")
        .arg("-c")
        .arg(spec.script)
        .current_dir(spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Built here, applied in the child between fork and exec (raw system calls only there).
    let mut sandbox = spec.sandbox.map(|g| g.prepare()).transpose()?;
    // If gantry dies (even by kill -9), the step's shell gets SIGKILL instead of living on;
    // what it started is found and killed by the recovery at the next start.
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

fn signal_group(pgid: u32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pgid as i32), sig);
}

/// Runs a step to its end. `on_line` receives each masked line as it is complete.
pub async fn run_step(
    spec: &StepSpec<'_>,
    masker: &Masker,
    mut on_line: impl FnMut(Stream, String),
    cancel: &mut watch::Receiver<bool>,
) -> StepEnd {
    if *cancel.borrow() {
        return StepEnd::Cancelled;
    }
    let mut child = match Child::start(spec) {
        Ok(c) => c,
        Err(e) => return StepEnd::SpawnFailed(format!("could not start /bin/sh: {e}")),
    };
    let pgid = child.id();
    let (tx, mut rx) = mpsc::channel::<(Stream, Vec<u8>)>(64);
    for (stream, mut out) in child.outputs().into_iter().flatten() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 || tx.send((stream, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let mut out_lines = LineSplitter::new(MAX_LINE);
    let mut err_lines = LineSplitter::new(MAX_LINE);
    let mut feed = |stream: Stream, bytes: &[u8], on_line: &mut dyn FnMut(Stream, String)| {
        let splitter = if stream == Stream::Stdout {
            &mut out_lines
        } else {
            &mut err_lines
        };
        for line in splitter.push(bytes, masker) {
            on_line(stream, line);
        }
    };

    // Why we are stopping the group, once we are, and when SIGKILL follows SIGTERM.
    let mut stopping: Option<(StepEnd, Instant)> = None;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut pipes_open = true;
    let status = loop {
        let deadline = match &stopping {
            Some((_, kill_at)) => *kill_at,
            None => spec.deadline.unwrap_or(far),
        };
        let full = spec.backlog.is_some_and(Backlog::over);
        tokio::select! {
            chunk = rx.recv(), if pipes_open && !full => match chunk {
                Some((stream, bytes)) => feed(stream, &bytes, &mut on_line),
                None => pipes_open = false,
            },
            () = async { if let Some(b) = spec.backlog { b.room().await } }, if full => {}
            status = child.wait() => break status,
            _ = tokio::time::sleep_until(deadline) => match &stopping {
                None => {
                    signal_group(pgid, Signal::SIGTERM);
                    stopping = Some((StepEnd::TimedOut, Instant::now() + spec.kill_grace));
                }
                Some(_) => {
                    signal_group(pgid, Signal::SIGKILL);
                    // Wait for the exit without another deadline.
                    let why = stopping.take().map(|(w, _)| w).unwrap_or(StepEnd::TimedOut);
                    let status = child.wait().await;
                    stopping = Some((why, far));
                    break status;
                }
            },
            changed = cancel.changed(), if stopping.is_none() => {
                if changed.is_err() || *cancel.borrow() {
                    signal_group(pgid, Signal::SIGTERM);
                    stopping = Some((StepEnd::Cancelled, Instant::now() + spec.kill_grace));
                }
            }
        }
    };
    // Whatever the shell left behind in its group goes too.
    signal_group(pgid, Signal::SIGKILL);
    let drain_until = Instant::now() + DRAIN_LIMIT;
    while pipes_open {
        match tokio::time::timeout_at(drain_until, rx.recv()).await {
            Ok(Some((stream, bytes))) => feed(stream, &bytes, &mut on_line),
            Ok(None) | Err(_) => pipes_open = false,
        }
    }
    if let Some(l) = out_lines.finish(masker) {
        on_line(Stream::Stdout, l);
    }
    if let Some(l) = err_lines.finish(masker) {
        on_line(Stream::Stderr, l);
    }
    if let Some((why, _)) = stopping {
        return why;
    }
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => StepEnd::Exited(code),
            (None, Some(sig)) => StepEnd::Signaled(sig),
            (None, None) => StepEnd::Exited(-1),
        },
        Err(e) => StepEnd::SpawnFailed(format!("waiting for the step failed: {e}")),
    }
}
