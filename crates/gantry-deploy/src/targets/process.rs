//! The `process` target: each release is a service on a fresh local port, started in its
//! release directory with `PORT` set, under a shim of its own ([`crate::shim`]) so that it goes
//! on serving while gantry is down. The router sends users to it once it is healthy.

use super::{ReleaseContext, Running, Target, free_port};
use crate::shim::{self, ShimSpec};
use crate::supervisor::{Crash, ServiceEvent};
use anyhow::bail;
use async_trait::async_trait;
use gantry_model::{TargetKind, TargetSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// A release this target started or adopted.
struct Shimmed {
    log: PathBuf,
    addr: SocketAddr,
    /// Reports its crashes as release events while it is ours.
    watcher: tokio::task::JoinHandle<()>,
}

pub struct ProcessTarget {
    services: Mutex<HashMap<i64, Shimmed>>,
    events: mpsc::UnboundedSender<ServiceEvent>,
    /// What its services run in, if anything.
    sandbox: Option<gantry_runner::sandbox::Sandbox>,
    /// The gantry binary (`gantry shim`).
    exe: PathBuf,
}

impl ProcessTarget {
    pub fn new(
        events: mpsc::UnboundedSender<ServiceEvent>,
        sandbox: Option<gantry_runner::sandbox::Sandbox>,
        exe: &Path,
    ) -> Self {
        Self {
            services: Mutex::new(HashMap::new()),
            events,
            sandbox,
            exe: exe.to_path_buf(),
        }
    }

    fn keep(&self, source: i64, log: &Path, addr: SocketAddr) {
        let watcher = tokio::spawn(watch(log.to_path_buf(), self.events.clone()));
        let old = self.services.lock().expect("services").insert(
            source,
            Shimmed {
                log: log.to_path_buf(),
                addr,
                watcher,
            },
        );
        if let Some(old) = old {
            old.watcher.abort();
        }
    }
}

/// Where the number of crashes already recorded for a release is kept (so a crash while
/// gantry was down is recorded once, when it is adopted).
fn recorded_path(log: &Path) -> PathBuf {
    log.with_extension("crashes")
}

/// Sends a crash event for each crash the shim records (checked every 200 ms).
async fn watch(log: PathBuf, events: mpsc::UnboundedSender<ServiceEvent>) {
    let mut seen: u32 = std::fs::read_to_string(recorded_path(&log))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(s) = shim::read(&log) else { continue };
        if s.crashes > seen {
            let (status, output_tail) = s.last_crash.clone().unwrap_or_default();
            let status = if s.crashes - seen > 1 {
                format!("{} crashes; the last {status}", s.crashes - seen)
            } else {
                status
            };
            let _ = events.send(ServiceEvent::Crashed {
                release_id: s.release_id,
                status,
                output_tail,
                restart_in: Duration::from_millis(s.restart_in_ms),
            });
            seen = s.crashes;
            let _ = std::fs::write(recorded_path(&log), seen.to_string());
        }
    }
}

#[async_trait]
impl Target for ProcessTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Process
    }

    async fn start(&self, r: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>> {
        let Some(TargetSpec::Process { command, env }) = &r.spec.target else {
            bail!("environment {} has no process target", r.environment);
        };
        // A release restarted (rollback to a stopped one) replaces what ran before.
        self.stop(r.source).await;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut vars = r.env();
        vars.extend(env.iter().cloned());
        vars.push(("PORT".into(), port.to_string()));
        let _ = std::fs::remove_file(recorded_path(&r.log));
        shim::spawn(
            &self.exe,
            &ShimSpec {
                release: r.source,
                release_id: r.source_id,
                command: command.clone(),
                dir: r.dir.clone(),
                env: vars,
                log: r.log.clone(),
                addr,
                hidden: self.sandbox.as_ref().map(|s| s.hidden.clone()),
            },
        )
        .await?;
        self.keep(r.source, &r.log, addr);
        Ok(Some(addr))
    }

    async fn roll_back(&self, _to: &ReleaseContext, _from: &ReleaseContext) -> anyhow::Result<()> {
        Ok(()) // The router moves users.
    }

    /// Reads the shim's state file (one small read).
    fn running(&self, source: i64) -> Option<Running> {
        let (log, addr) = {
            let services = self.services.lock().expect("services");
            let s = services.get(&source)?;
            (s.log.clone(), s.addr)
        };
        let s = shim::read(&log)?;
        let now = gantry_engine::ports::now_millis();
        Some(Running {
            addr: Some(addr),
            pid: Some(s.pid),
            uptime: Duration::from_millis((now - s.since_ms).max(0) as u64),
            crashes: s.crashes,
            last_crash: s.last_crash.map(|(status, output_tail)| Crash {
                status,
                output_tail,
            }),
            log,
        })
    }

    async fn adopt(&self, r: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>> {
        let Some(s) = shim::read(&r.log) else {
            return Ok(None);
        };
        self.keep(r.source, &r.log, s.addr);
        Ok(Some(s.addr))
    }

    async fn stop(&self, source: i64) {
        let service = self.services.lock().expect("services").remove(&source);
        if let Some(s) = service {
            s.watcher.abort();
            shim::stop(&s.log).await;
        }
    }

    /// Releases outlive the server: nothing stops here (`gantry stop ENV` stops them).
    async fn stop_all(&self) {
        for (_, s) in self.services.lock().expect("services").drain() {
            s.watcher.abort();
        }
    }
}

/// For the manager: stops every live shim under `root` whose release is not in `keep`
/// (`(project, environment, source)`), and every release process no live shim supervises.
/// Returns what it stopped, for the log.
pub async fn sweep(root: &Path, keep: &[(String, String, i64)]) -> Vec<String> {
    let mut notes = Vec::new();
    for (log, s) in shim::all(root) {
        let env = log.parent().unwrap_or(root);
        let name = env.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let project = env
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if keep
            .iter()
            .any(|(p, e, n)| p == project && e == name && *n == s.release)
        {
            continue;
        }
        shim::stop(&log).await;
        notes.push(format!(
            "{project}/{name}: stopped release {} (pid {}), left running but not live",
            s.release, s.pid
        ));
    }
    let orphans = shim::kill_orphans(root);
    if orphans > 0 {
        notes.push(format!(
            "killed {orphans} release processes no shim supervised (left by a shim killed by force)"
        ));
    }
    notes
}
