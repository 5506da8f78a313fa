//! Targets: where releases run. A target brings a release up next to the live one and says how
//! users reach it ([`Routing`]): through gantry's router (it returns the address it listens on,
//! and the manager health-checks it and switches the router) or by moving traffic itself (the
//! user's scripts; a weighted alias). The manager does the rest (records, keep, bake, rollback).
//! [`build`] is the one place a target is made from its kind; `process`, `docker` and `command`
//! live here.

mod command;
mod docker;
#[cfg(feature = "lambda")]
mod lambda;
mod process;

pub use command::CommandTarget;
pub use docker::DockerTarget;
#[cfg(feature = "lambda")]
pub use lambda::LambdaTarget;
pub use process::{ProcessTarget, sweep};

use crate::supervisor::ServiceEvent;
use async_trait::async_trait;
use gantry_model::{EnvironmentSpec, Routing, TargetKind};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A release as a target sees it.
#[derive(Debug, Clone)]
pub struct ReleaseContext {
    pub project: String,
    pub environment: String,
    /// The release being made live.
    pub number: i64,
    /// The deploy release whose directory it runs from.
    pub source: i64,
    /// That release's id in the state store (service events are recorded on it).
    pub source_id: i64,
    pub artifact: String,
    pub digest: String,
    /// The unpacked artifact.
    pub dir: PathBuf,
    /// Where its output goes (`gantry` keeps it as the release log).
    pub log: PathBuf,
    /// The release live before this one, if any.
    pub previous: Option<i64>,
    pub spec: EnvironmentSpec,
    /// Deployed as a canary: a target that moves traffic itself brings it up next to the live
    /// release without moving users; the canary's steps then call
    /// [`set_share`](Target::set_share).
    pub canary: bool,
    /// What the user's commands for this release (a `command` target's scripts, `command`
    /// health checks) run in: the server's step sandbox, if it has one.
    pub sandbox: Option<gantry_runner::sandbox::Sandbox>,
}

impl ReleaseContext {
    /// The sandbox's grants for a command of this release: all but gantry's own files, and the
    /// release's directory whole.
    pub fn grants(&self) -> Option<gantry_runner::sandbox::Grants> {
        self.sandbox
            .as_ref()
            .map(|s| s.grants(&[self.dir.as_path()]))
    }

    /// Variables every target gives the user's commands.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = gantry_runner::execute::BASE_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        env.extend([
            ("GANTRY_PROJECT".into(), self.project.clone()),
            ("GANTRY_ENVIRONMENT".into(), self.environment.clone()),
            ("GANTRY_RELEASE".into(), self.number.to_string()),
            ("GANTRY_ARTIFACT".into(), self.dir.display().to_string()),
            ("GANTRY_DIGEST".into(), self.digest.clone()),
            (
                "GANTRY_PREVIOUS_RELEASE".into(),
                self.previous.map(|p| p.to_string()).unwrap_or_default(),
            ),
        ]);
        env
    }
}

/// What is running for a release right now.
#[derive(Debug, Clone)]
pub struct Running {
    pub addr: Option<SocketAddr>,
    /// The process serving it, where the target has one.
    pub pid: Option<u32>,
    pub uptime: std::time::Duration,
    pub crashes: u32,
    /// How it last ended by itself, and its output then.
    pub last_crash: Option<crate::supervisor::Crash>,
    pub log: PathBuf,
}

/// Makes the target for a kind: the one place that knows which type carries out which kind.
/// `events` receives what releases do by themselves (crashes), for the release history; `root`
/// is the deployments' data directory (containers carry a name for it); `exe` the gantry
/// binary (services run under `gantry shim`).
pub fn build(
    kind: TargetKind,
    events: &mpsc::UnboundedSender<ServiceEvent>,
    root: &std::path::Path,
    sandbox: Option<&gantry_runner::sandbox::Sandbox>,
    exe: &std::path::Path,
) -> Arc<dyn Target> {
    match kind {
        TargetKind::Process => Arc::new(ProcessTarget::new(events.clone(), sandbox.cloned(), exe)),
        TargetKind::Docker => Arc::new(DockerTarget::new(root, events.clone())),
        TargetKind::Command => Arc::new(CommandTarget),
        #[cfg(feature = "lambda")]
        TargetKind::Lambda => Arc::new(LambdaTarget::new(events.clone())),
        #[cfg(not(feature = "lambda"))]
        TargetKind::Lambda => Arc::new(Unavailable(kind)),
    }
}

/// A kind this build of gantry leaves out (a cargo feature turned off): every start says so.
#[cfg(not(feature = "lambda"))]
struct Unavailable(TargetKind);

#[cfg(not(feature = "lambda"))]
#[async_trait]
impl Target for Unavailable {
    fn kind(&self) -> TargetKind {
        self.0
    }
    async fn start(&self, r: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>> {
        anyhow::bail!(
            "environment {}: this gantry was built without `{}` targets (cargo feature `{}`)",
            r.environment,
            self.0,
            self.0
        )
    }
    async fn roll_back(&self, to: &ReleaseContext, _from: &ReleaseContext) -> anyhow::Result<()> {
        self.start(to).await.map(|_| ())
    }
    fn running(&self, _source: i64) -> Option<Running> {
        None
    }
    async fn stop(&self, _source: i64) {}
    async fn stop_all(&self) {}
}

/// Where releases run, as the deploy manager drives it. One value per environment, shared by
/// every release of it; releases are named by `source`, the deploy release whose directory
/// they run from (a rollback runs an older deploy's directory again).
///
/// The lifecycle and what each step may assume:
/// 1. [`start`](Target::start) brings a release up. The release directory is unpacked and its
///    digest checked. Calling it for a release that runs already replaces what ran (a restart):
///    it is idempotent per release, never two of the same. With [`Routing::Router`] it returns
///    the address the release listens on, which need not answer yet — no user is sent there
///    before the manager's health checks pass. With [`Routing::Itself`] it makes the release
///    live by itself and returns `None`.
/// 2. [`running`](Target::running) is a cheap look (memory, or one small local file; no
///    await): the manager
///    calls it in its health and bake loops. `None` once the release is stopped.
/// 3. [`roll_back`](Target::roll_back) is called only for [`Routing::Itself`]: move users from
///    `from` back to `to` (also after a failed `start` of `from`, which may have switched some
///    traffic already). For [`Routing::Router`] the router moves users and it is never called.
/// 4. [`stop`](Target::stop) is safe to call for a release that never started, whose start
///    failed, or that is stopped already. The directory stays: a kept release may start again.
/// 5. [`retire`](Target::retire) when a release leaves the kept ones: after `stop`, whatever
///    the target kept for it (a container, an image tag) goes. Never what a kept release needs.
/// 6. [`stop_all`](Target::stop_all) at shutdown: afterwards nothing of this target runs —
///    except for kinds that [outlive gantry](TargetKind::outlives_gantry) (containers,
///    services under their shims), which go on serving and are adopted by the next gantry.
///
/// After gantry restarts, the manager first offers the live release to
/// [`adopt`](Target::adopt) (kinds that outlive gantry: it takes over what still runs, without
/// restarting it); otherwise it starts the live release again for kinds that are
/// [`supervised`](TargetKind::supervised) or outlive gantry. It may assume nothing of a
/// previous gantry's processes still runs (leftovers are killed before) and that the release
/// directory is as it was unpacked.
#[async_trait]
pub trait Target: Send + Sync {
    fn kind(&self) -> TargetKind;
    /// How users reach this target's releases.
    fn routing(&self) -> Routing {
        self.kind().routing()
    }
    /// Brings the release up (see the trait's lifecycle).
    async fn start(&self, release: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>>;
    /// For targets that move traffic themselves: users from `from` back to `to`.
    async fn roll_back(&self, to: &ReleaseContext, from: &ReleaseContext) -> anyhow::Result<()>;
    /// For targets that move traffic themselves and can split it (a weighted alias): send
    /// `percent` of the calls to `canary`, the rest to `stable`. 100 makes the canary the only
    /// one; 0 puts everything back on stable. Targets that cannot split refuse.
    async fn set_share(
        &self,
        _canary: &ReleaseContext,
        _stable: &ReleaseContext,
        _percent: u32,
    ) -> anyhow::Result<()> {
        anyhow::bail!("a {} target cannot split traffic for a canary", self.kind())
    }
    /// What runs for the deploy release `source`, if anything.
    fn running(&self, source: i64) -> Option<Running>;
    /// Whether a live release runs without anything of gantry's to watch (a function AWS
    /// runs): its bake then lasts its whole time, listening for alarms, instead of ending when
    /// [`running`](Target::running) says nothing runs.
    fn runs_elsewhere(&self) -> bool {
        false
    }
    /// After a restart of gantry: takes over what still runs for the release (found by what
    /// the target marked it with), returning where it listens; `None` if nothing runs.
    async fn adopt(&self, _release: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>> {
        Ok(None)
    }
    /// Stops what runs for `source` (its directory stays).
    async fn stop(&self, source: i64);
    /// The release is no longer kept: remove what the target kept for it.
    async fn retire(&self, _release: &ReleaseContext) {}
    /// After a restart: what of this environment runs or lies in the target that belongs to
    /// none of the `kept` deploy releases (by source number), described for the operator.
    /// Reported, never removed: it may be someone's on purpose.
    async fn strays(&self, _live: &ReleaseContext, _kept: &[i64]) -> Vec<String> {
        Vec::new()
    }
    /// Stops everything (gantry is shutting down).
    async fn stop_all(&self);
}

/// A port on 127.0.0.1 nothing listens on now, for a release to bind.
fn free_port() -> anyhow::Result<u16> {
    use anyhow::Context;
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// A line of gantry's own in a release's log.
fn note(log: &std::path::Path, text: &str) {
    append(log, &[format!("--- gantry: {text}")]);
}

/// Lines appended to a release's log; a log that cannot be written loses them, nothing else.
fn append(log: &std::path::Path, lines: &[String]) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        for l in lines {
            let _ = writeln!(f, "{l}");
        }
    }
}
