//! `gantry demo`: the whole mission on this machine with nothing to set up. In a directory of
//! its own (`gantry-demo` in the temporary directory) it makes a git repository of the example
//! service (`examples/hello`, built into the binary), starts a gantry server watching it (in
//! this process: SQLite, local disk, local processes), and tells the story: the pipeline builds,
//! tests and deploys to staging and then production behind gantry's router; the artifact is
//! shared by a link; synthetic users arrive; version 1.1.0 goes out as a canary to 10% of them,
//! then 50%, and analysis promotes it. Then it waits for the newcomer's hands (`gantry demo
//! push --broken …`, the dashboard through a one-time login link) until Ctrl-C; `--exit` ends
//! after the story.
//!
//! Lifecycle: Ctrl-C (SIGINT) or SIGTERM at any moment stops everything the demo started —
//! the server (running jobs cancelled), every release, the data plane, and as a last sweep any
//! process whose working directory or command line is in the demo's directory — and removes
//! the directory unless `--keep`; each stop is bounded so that all of it takes well under 2 s.
//! A second signal kills what is left at once.
//!
//! Codemap: [`story`] the story; [`follow`] watching a run through the API; [`traffic`] the
//! synthetic users; [`push`] the newcomer's changes; this file the directory, the signals and
//! the stop.

mod follow;
mod push;
mod story;
mod traffic;

use super::CliResult;
use anyhow::{Context, anyhow};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub(super) const PIPELINE: &str = include_str!("../../../../../examples/hello/gantry.yml");
pub(super) const SERVICE: &str = include_str!("../../../../../examples/hello/hello.py");
pub(super) const SERVICE_TESTS: &str = include_str!("../../../../../examples/hello/test_hello.py");

/// The demo's record of itself, for `gantry demo push`.
const STATE_FILE: &str = "demo.json";

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DemoArgs {
    #[command(subcommand)]
    pub command: Option<DemoCommand>,
    /// Keep the demo's directory (repository, data, release logs) when it stops
    #[arg(long)]
    pub keep: bool,
    /// Tell the story, then stop and exit (for scripts and tests) instead of waiting for Ctrl-C
    #[arg(long)]
    pub exit: bool,
    /// The demo's directory (default: gantry-demo in the temporary directory)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Production's router port (default: 8103 when free, else any free port)
    #[arg(long)]
    pub port: Option<u16>,
}

#[derive(clap::Subcommand)]
#[command(defer = true)]
pub enum DemoCommand {
    /// Commit a change to the running demo's repository and follow its run to the end
    Push(push::PushArgs),
}

/// Where a demo lives, and where its routers listen.
#[derive(Debug, Clone)]
pub struct Demo {
    pub dir: PathBuf,
    pub repo: PathBuf,
    pub data: PathBuf,
    pub staging: String,
    pub production: String,
}

/// What the demo started in this process, for the stop.
#[derive(Default)]
pub struct Started {
    server: Option<(oneshot::Sender<()>, JoinHandle<CliResult>)>,
    traffic: Option<JoinHandle<()>>,
}

fn dir_of(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match flag {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join("gantry-demo"),
    };
    std::path::absolute(&dir).with_context(|| format!("the demo's directory {}", dir.display()))
}

fn alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

impl Demo {
    fn layout(dir: PathBuf, staging: String, production: String) -> Self {
        let repo = dir.join("hello");
        Demo {
            data: repo.join(".gantry"),
            repo,
            dir,
            staging,
            production,
        }
    }

    fn read_state(dir: &Path) -> Option<(i32, Demo)> {
        let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let pid = v["pid"].as_i64()? as i32;
        let demo = Demo::layout(
            dir.to_path_buf(),
            v["staging"].as_str()?.to_string(),
            v["production"].as_str()?.to_string(),
        );
        Some((pid, demo))
    }

    /// The demo running in `dir`, for `gantry demo push`.
    pub fn running_in(dir: &Path) -> anyhow::Result<Demo> {
        match Demo::read_state(dir) {
            Some((pid, demo)) if alive(pid) => Ok(demo),
            _ => Err(anyhow!(
                "no demo is running in {}: start one with `gantry demo` (and leave it running)",
                dir.display()
            )),
        }
    }

    /// Makes the demo's directory: refused while another demo runs there, or when it holds
    /// something that is not a demo's.
    fn prepare(dir: PathBuf, production_port: Option<u16>) -> anyhow::Result<Demo> {
        if dir.exists() {
            match Demo::read_state(&dir) {
                Some((pid, _)) if alive(pid) && pid != std::process::id() as i32 => {
                    return Err(anyhow!(
                        "a demo is already running in {} (pid {pid}): `gantry demo push --broken errors` talks to it, Ctrl-C stops it; or start another with --dir",
                        dir.display()
                    ));
                }
                Some(_) => std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing the stopped demo's {}", dir.display()))?,
                None if std::fs::read_dir(&dir)?.next().is_none() => {}
                None => {
                    return Err(anyhow!(
                        "{} exists and is not a demo's directory: remove it, or pass --dir",
                        dir.display()
                    ));
                }
            }
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Real paths: the last sweep finds processes by them.
        let dir = dir.canonicalize()?;
        let production = match production_port {
            Some(p) => format!("127.0.0.1:{p}"),
            None => format!("127.0.0.1:{}", port_or_any(8103)?),
        };
        let demo = Demo::layout(dir, format!("127.0.0.1:{}", port_or_any(8102)?), production);
        let state = serde_json::json!({
            "pid": std::process::id(),
            "repository": demo.repo,
            "staging": demo.staging,
            "production": demo.production,
        });
        std::fs::write(demo.dir.join(STATE_FILE), state.to_string())?;
        Ok(demo)
    }
}

/// `preferred` (the example's port) when it is free, else any free port.
fn port_or_any(preferred: u16) -> anyhow::Result<u16> {
    if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return Ok(preferred);
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn demo(args: DemoArgs) -> CliResult {
    if let Some(DemoCommand::Push(p)) = args.command {
        return push::push(p).await;
    }
    let started = Instant::now();
    let stopped = signals(dir_of(args.dir.as_deref())?, args.keep)?;
    let demo = Demo::prepare(dir_of(args.dir.as_deref())?, args.port)?;
    let handles = Mutex::new(Started::default());
    let mut stop = stopped.clone();
    let outcome = tokio::select! {
        r = story::tell(&demo, &handles, started, args.exit) => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    };
    let stopping = Instant::now();
    let left = stop_all(&demo, handles).await;
    if args.keep {
        println!("\nthe demo's files are in {}", demo.dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&demo.dir);
    }
    let code = match outcome {
        None => {
            println!(
                "\nstopped in {} ms: the server, its runs, every release and router{}; {}",
                stopping.elapsed().as_millis(),
                match left {
                    0 => String::new(),
                    1 => " (the last sweep stopped 1 process left over)".to_string(),
                    n => format!(" (the last sweep stopped {n} processes left over)"),
                },
                if args.keep {
                    "files kept"
                } else {
                    "directory removed"
                }
            );
            130
        }
        Some(Ok(())) => 0,
        Some(Err(e)) => {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            if let Some(e) = &e.error {
                eprintln!("gantry demo: {e:#}");
            }
            e.code.into()
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // Not through the runtime's drop: it would wait for the server's blocking tasks.
    std::process::exit(code)
}

/// SIGINT and SIGTERM: the first asks the demo to stop (the returned flag turns true), the
/// second kills what is left and exits at once.
fn signals(dir: PathBuf, keep: bool) -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("\ngantry demo: stopping everything it started (again to stop at once)");
        let _ = tx.send(true);
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let dir = dir.canonicalize().unwrap_or(dir);
        sweep(&dir, nix::sys::signal::Signal::SIGKILL);
        if !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        eprintln!("gantry demo: stopped at once");
        std::process::exit(130);
    });
    Ok(rx)
}

/// Stops what the demo started, each part bounded; how many processes the last sweep found.
async fn stop_all(demo: &Demo, handles: Mutex<Started>) -> usize {
    let Started { server, traffic } = handles.into_inner().unwrap_or_default();
    if let Some(t) = traffic {
        t.abort();
    }
    // The server: no new runs, running ones cancelled (its shutdown grace is 0 s).
    if let Some((tx, handle)) = server {
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_millis(800), handle).await;
    }
    // Releases and routers outlive a server; the demo's go with it. A server that has not
    // finished within its bound still has tasks (a canary's measuring) that would start the
    // data plane again when it no longer answers: they may not.
    gantry_deploy::dataplane::never_restart(&demo.data);
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        gantry_deploy::targets::sweep(&demo.data.join("releases"), &[]).await;
        let _ = gantry_deploy::dataplane::stop(&demo.data).await;
    })
    .await;
    let mut found = 0;
    // Rounds: a process may start another while it is being stopped.
    for round in 0..4 {
        let signal = if round == 0 {
            nix::sys::signal::Signal::SIGTERM
        } else {
            nix::sys::signal::Signal::SIGKILL
        };
        let n = sweep(&demo.dir, signal);
        if n == 0 {
            break;
        }
        found += n;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found
}

/// Sends `signal` to every process the demo started that is still there; how many there were.
/// Those are the descendants of this process (jobs and their children), and the gantry
/// processes that outlive a server — the data plane, release shims — found as processes of this
/// binary whose working directory or command line is in `dir`, with their descendants (the
/// releases). Nobody else's process is touched, even one whose command line names the
/// directory (`tail -f` of a log, an editor, the shell that started the demo).
fn sweep(dir: &Path, signal: nix::sys::signal::Signal) -> usize {
    let me = std::process::id();
    let exe = std::fs::read_link("/proc/self/exe").ok();
    let needle = dir.as_os_str().as_encoded_bytes().to_vec();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    // (pid, parent, a root: this process or one of this binary's that is the demo's)
    let mut all: Vec<(u32, u32, bool)> = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some(parent) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| parent_of(&s))
        else {
            continue;
        };
        let ours = pid == me
            || (exe.is_some() && std::fs::read_link(e.path().join("exe")).ok() == exe && {
                let cwd_in =
                    std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(dir));
                cwd_in
                    || std::fs::read(e.path().join("cmdline"))
                        .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_slice()))
            });
        all.push((pid, parent, ours));
    }
    let mut marked: std::collections::HashSet<u32> =
        all.iter().filter(|p| p.2).map(|p| p.0).collect();
    // Descendants, to a fixed point (bounded by the number of processes).
    for _ in 0..all.len() {
        let before = marked.len();
        for (pid, parent, _) in &all {
            if marked.contains(parent) {
                marked.insert(*pid);
            }
        }
        if marked.len() == before {
            break;
        }
    }
    marked.remove(&me);
    for pid in &marked {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), signal);
    }
    marked.len()
}

/// The parent's pid in a `/proc/PID/stat` line (after the command's name, which may hold
/// spaces and parentheses); none for a zombie, which holds nothing and goes with its parent.
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
}
