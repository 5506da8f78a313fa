//! Targets: where releases run. A target brings a release up next to the live one and, for
//! targets that serve through gantry's router, says where it listens; the deploy manager does
//! the rest (health checks, router switch, records). `process` and `command` live here; Docker
//! (a container on a fresh port, routed like a process) and Lambda (publish a version, move an
//! alias) implement the same trait.

mod command;
mod process;

pub use command::CommandTarget;
pub use process::ProcessTarget;

use async_trait::async_trait;
use gantry_model::EnvironmentSpec;
use std::net::SocketAddr;
use std::path::PathBuf;

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
}

impl ReleaseContext {
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
    pub pid: u32,
    pub uptime: std::time::Duration,
    pub crashes: u32,
    /// How it last ended by itself, and its output then.
    pub last_crash: Option<crate::supervisor::Crash>,
    pub log: PathBuf,
}

#[async_trait]
pub trait Target: Send + Sync {
    fn kind(&self) -> &'static str;
    /// Brings the release up. `Some(addr)`: it serves there, and the router sends users to it
    /// once healthy. `None`: the target switched traffic itself (command targets).
    async fn start(&self, release: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>>;
    /// For targets without a router: move users from `from` back to `to`.
    async fn roll_back(&self, to: &ReleaseContext, from: &ReleaseContext) -> anyhow::Result<()>;
    /// What runs for the deploy release `source`, if anything.
    fn running(&self, source: i64) -> Option<Running>;
    /// Stops what runs for `source` (its directory stays).
    async fn stop(&self, source: i64);
    /// Stops everything (gantry is shutting down).
    async fn stop_all(&self);
}
