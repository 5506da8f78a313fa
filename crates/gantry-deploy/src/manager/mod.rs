//! The deploy manager: carries out deployments and rollbacks of every environment this server
//! runs, and puts environments back after a restart. One deployment at a time per environment:
//! a lock row in the state store with an owner and a lease (renewed while the work lasts), so a
//! second deploy is refused with who holds the lock, and a dead holder's lock is taken over.
//!
//! A deployment: lock → outdated check → release recorded (`deploying`, artifact pinned) →
//! artifact unpacked into the release directory (digest checked) → target starts it next to the
//! live one → health checks until `health.timeout` → router switch → the store records the
//! switch (one transaction) → the previous release keeps running for rollback, older ones are
//! retired per `keep` → bake: repeated crashes roll back by themselves. A failure before the
//! switch never touches traffic; after it, traffic goes back to the previous release.
//!
//! The router is switched before the store records it: after a crash in between, the next start
//! restores the router from the store, so an environment is always on the old or the new release.

use crate::dataplane::{DataPlane, RouterLink};
use crate::health::{self, Probe};
use crate::kept::{self, Kept};
use crate::router::{Backend, RouteTable};
use crate::supervisor::{self, ServiceEvent};
use crate::targets::{self, ReleaseContext, Target};
use async_trait::async_trait;
use gantry_engine::deployment::last_lines;
use gantry_engine::ports::{
    ArtifactQuery, ArtifactStore, DeployReport, DeployRequest, EnvLock, ReleaseEvent,
    ReleaseRecord, StateStore, now_millis,
};
use gantry_engine::release::{self, DeployCandidate, ReleaseKind, ReleaseState};
use gantry_model::{EnvironmentSpec, Routing};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A lock's lease; renewed every third of it while the work lasts.
const LEASE: Duration = Duration::from_secs(30);

/// Where environment descriptions and commit ancestry come from (the pipeline file at the
/// deployed commit, read through git by the binary).
#[async_trait]
pub trait ProjectSource: Send + Sync {
    /// The environment as the pipeline file of run `run` (or the project's current one) says.
    async fn environment(
        &self,
        project: &str,
        run: Option<i64>,
        environment: &str,
    ) -> anyhow::Result<EnvironmentSpec>;
    /// Whether `ancestor` is a strict ancestor of `commit` (None: cannot tell).
    async fn is_ancestor(&self, project: &str, ancestor: &str, commit: &str) -> Option<bool>;
}

/// Why a request was not carried out (the API maps these to status codes).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    NotFound(String),
    /// Refused as things stand: the lock is held, the deploy is outdated, nothing to roll back.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

type Result<T> = std::result::Result<T, DeployError>;

/// An environment this process runs: its router and target, and the backends of the releases
/// running now.
struct Env {
    project: String,
    name: String,
    spec: Mutex<EnvironmentSpec>,
    router: Mutex<Option<Arc<RouterLink>>>,
    target: Mutex<Option<Arc<dyn Target>>>,
    backends: Mutex<HashMap<i64, Arc<Backend>>>,
    /// Serialises work on this environment inside this process (the store lock is for others).
    work: Arc<tokio::sync::Mutex<()>>,
    /// The canary running now, if any (its driver takes promote/abort/pause/resume/alarms).
    canary: Mutex<Option<canary::CanaryHandle>>,
    /// Alarms for a release in its bake after a switch or a full promotion.
    alarms: tokio::sync::broadcast::Sender<String>,
}

impl Env {
    /// The deploy releases with a backend here now, in order.
    fn running_sources(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .backends
            .lock()
            .expect("backends")
            .keys()
            .copied()
            .collect();
        v.sort();
        v
    }

    fn target(&self) -> Option<Arc<dyn Target>> {
        self.target.lock().expect("target").clone()
    }
    fn router(&self) -> Option<Arc<RouterLink>> {
        self.router.lock().expect("router").clone()
    }
}

pub struct DeployManager {
    store: Arc<dyn StateStore>,
    artifacts: Arc<dyn ArtifactStore>,
    source: Arc<dyn ProjectSource>,
    /// `<data>/releases`: one directory per project and environment.
    root: PathBuf,
    owner: String,
    envs: Mutex<HashMap<(String, String), Arc<Env>>>,
    events: mpsc::UnboundedSender<ServiceEvent>,
    /// Environments as the pipeline file at a run's commit describes them: a commit never
    /// changes, so each is read (through git) once, not on every rollback.
    specs: Mutex<HashMap<(String, i64, String), EnvironmentSpec>>,
    /// A release failed (deploy, bake, canary): (project, environment, release number).
    failures: tokio::sync::broadcast::Sender<(String, String, i64)>,
    /// What release processes run in (the server's steps sandbox), if anything.
    sandbox: Mutex<Option<gantry_runner::sandbox::Sandbox>>,
    /// Where the routers are: the data plane of the data directory.
    plane: Arc<DataPlane>,
    /// The gantry binary: releases run under `gantry shim`.
    exe: PathBuf,
    /// The environments this server drives, as the drivers' loop last saw the store say
    /// (`drivers.rs`): a deploy or rollback of one of them asks the store nothing more.
    driving: Mutex<std::collections::HashSet<(String, String)>>,
}

impl DeployManager {
    pub fn new(
        store: Arc<dyn StateStore>,
        artifacts: Arc<dyn ArtifactStore>,
        source: Arc<dyn ProjectSource>,
        root: PathBuf,
        owner: String,
        plane: Arc<DataPlane>,
        exe: PathBuf,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let manager = Arc::new(Self {
            store,
            artifacts,
            source,
            root,
            owner,
            envs: Mutex::new(HashMap::new()),
            specs: Mutex::new(HashMap::new()),
            events: tx,
            failures: tokio::sync::broadcast::channel(64).0,
            sandbox: Mutex::new(None),
            plane,
            exe,
            driving: Mutex::new(Default::default()),
        });
        tokio::spawn(record_service_events(manager.store.clone(), rx));
        manager
    }

    /// Release processes started from now on run in `sandbox` (set before any environment is
    /// prepared: targets built earlier keep what they had).
    pub fn set_sandbox(&self, sandbox: Option<gantry_runner::sandbox::Sandbox>) {
        *self.sandbox.lock().expect("sandbox") = sandbox;
    }

    /// Releases failing from now on (for notifications): (project, environment, number).
    pub fn failures(&self) -> tokio::sync::broadcast::Receiver<(String, String, i64)> {
        self.failures.subscribe()
    }

    fn failed(&self, r: &ReleaseRecord) {
        let _ = self
            .failures
            .send((r.project.clone(), r.environment.clone(), r.number));
    }

    fn env(&self, project: &str, name: &str, spec: &EnvironmentSpec) -> Arc<Env> {
        let mut envs = self.envs.lock().expect("envs");
        envs.entry((project.to_string(), name.to_string()))
            .or_insert_with(|| {
                Arc::new(Env {
                    project: project.to_string(),
                    name: name.to_string(),
                    spec: Mutex::new(spec.clone()),
                    router: Mutex::new(None),
                    target: Mutex::new(None),
                    backends: Mutex::new(HashMap::new()),
                    work: Arc::new(tokio::sync::Mutex::new(())),
                    canary: Mutex::new(None),
                    alarms: tokio::sync::broadcast::channel(16).0,
                })
            })
            .clone()
    }

    /// The environment as the pipeline file of run `run` (or, with `None`, the project's
    /// newest run) describes it; a run's answer is kept, since its commit cannot change.
    async fn environment_at(
        &self,
        project: &str,
        run: Option<i64>,
        environment: &str,
    ) -> anyhow::Result<EnvironmentSpec> {
        let Some(run) = run else {
            return self.source.environment(project, None, environment).await;
        };
        let key = (project.to_string(), run, environment.to_string());
        if let Some(spec) = self.specs.lock().expect("specs").get(&key) {
            return Ok(spec.clone());
        }
        let spec = self
            .source
            .environment(project, Some(run), environment)
            .await?;
        let mut specs = self.specs.lock().expect("specs");
        if specs.len() >= 512 {
            specs.clear(); // Bounded: a cache, read again when needed.
        }
        specs.insert(key, spec.clone());
        Ok(spec)
    }

    fn known_env(&self, project: &str, name: &str) -> Option<Arc<Env>> {
        self.envs
            .lock()
            .expect("envs")
            .get(&(project.to_string(), name.to_string()))
            .cloned()
    }

    /// Makes the environment's router and target fit `spec` (created on first use; a changed
    /// router address moves the router).
    async fn prepare(&self, env: &Env, spec: &EnvironmentSpec) -> Result<Arc<dyn Target>> {
        *env.spec.lock().expect("spec") = spec.clone();
        let Some(target_spec) = &spec.target else {
            return Err(DeployError::Invalid(format!(
                "environment `{}` has no `target` in the pipeline file: add one (process or command) to deploy to it",
                spec.name
            )));
        };
        let target = {
            let mut slot = env.target.lock().expect("target");
            match &*slot {
                Some(t) if t.kind() == target_spec.kind() => t.clone(),
                _ => {
                    let sandbox = self.sandbox.lock().expect("sandbox").clone();
                    let t = targets::build(
                        target_spec.kind(),
                        &self.events,
                        &self.root,
                        sandbox.as_ref(),
                        &self.exe,
                    );
                    *slot = Some(t.clone());
                    t
                }
            }
        };
        if let Some(r) = &spec.router {
            let wanted: SocketAddr = r.listen.parse().map_err(|_| {
                DeployError::Invalid(format!("router.listen `{}` is not an address", r.listen))
            })?;
            let current = env.router();
            let moves = match &current {
                Some(router) => wanted.port() != 0 && router.addr != wanted,
                None => true,
            };
            if moves {
                // The data plane moves it (the table goes along) or finds it listening.
                let key = format!("{}/{}", env.project, env.name);
                let router = self
                    .plane
                    .router(&key, wanted)
                    .await
                    .map_err(|e| DeployError::Internal(e.context("reaching the data plane")))?;
                *env.router.lock().expect("router") = Some(router);
            }
        }
        Ok(target)
    }

    fn release_dir(&self, project: &str, env: &str, number: i64) -> PathBuf {
        self.root.join(project).join(env).join(number.to_string())
    }

    fn release_log(&self, project: &str, env: &str, number: i64) -> PathBuf {
        self.root
            .join(project)
            .join(env)
            .join(format!("{number}.log"))
    }

    async fn context(
        &self,
        r: &ReleaseRecord,
        previous: Option<i64>,
        spec: &EnvironmentSpec,
    ) -> ReleaseContext {
        ReleaseContext {
            source_id: self.source_id(r).await,
            project: r.project.clone(),
            environment: r.environment.clone(),
            number: r.number,
            source: r.source,
            artifact: r.artifact.clone(),
            digest: r.digest.clone(),
            dir: self.release_dir(&r.project, &r.environment, r.source),
            log: self.release_log(&r.project, &r.environment, r.source),
            previous,
            spec: spec.clone(),
            canary: false,
            sandbox: self.sandbox.lock().expect("sandbox").clone(),
        }
    }

    /// Takes the environment's lock (refusing with who holds it) and keeps its lease alive
    /// until the returned guard is dropped.
    async fn lock(&self, project: &str, env: &str, purpose: &str) -> Result<LockGuard> {
        let now = now_millis();
        let lock = EnvLock {
            project: project.to_string(),
            environment: env.to_string(),
            owner: self.owner.clone(),
            purpose: purpose.to_string(),
            acquired_at: now,
            expires_at: now + LEASE.as_millis() as i64,
        };
        let mut attempt = 0;
        loop {
            let holder = match self.store.acquire_env_lock(&lock).await? {
                Ok(()) => break,
                Err(holder) => holder,
            };
            // Held by this process: maybe an operation that has just ended and whose guard
            // is still releasing the row. Give it half a second before refusing.
            if holder.owner == self.owner && attempt < 10 {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let since = (now - holder.acquired_at).max(0) / 1000;
            return Err(DeployError::Conflict(format!(
                "{project}/{env} is locked by another deployment: {} (held by {} for {since}s; the lock's lease ends in {}s if its holder stopped)",
                holder.purpose,
                holder.owner,
                ((holder.expires_at - now).max(0) + 999) / 1000
            )));
        }
        let guard = self.lock_guard(project, env);
        // The lock first: a deployment the driver runs now refuses this at once, and the
        // driver then hands the environment over between deployments.
        self.become_driver(project, env).await?;
        Ok(guard)
    }

    /// Keeps the lease of the lock just taken alive until the guard is dropped.
    fn lock_guard(&self, project: &str, env: &str) -> LockGuard {
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (store, p, e, o) = (
            self.store.clone(),
            project.to_string(),
            env.to_string(),
            self.owner.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(LEASE / 3) => {
                        let until = now_millis() + LEASE.as_millis() as i64;
                        let _ = store.renew_env_lock(&p, &e, &o, until).await;
                    }
                    _ = &mut stop_rx => break,
                }
            }
            let _ = store.release_env_lock(&p, &e, &o).await;
        });
        LockGuard(Some(stop_tx))
    }

    async fn reload(&self, rec: &ReleaseRecord) -> Option<ReleaseRecord> {
        self.store
            .releases(&rec.project, &rec.environment)
            .await
            .ok()?
            .into_iter()
            .find(|r| r.id == rec.id)
    }

    async fn source_id(&self, rec: &ReleaseRecord) -> i64 {
        if rec.kind == ReleaseKind::Deploy {
            return rec.id;
        }
        self.store
            .releases(&rec.project, &rec.environment)
            .await
            .ok()
            .and_then(|all| {
                all.into_iter()
                    .find(|r| r.number == rec.source)
                    .map(|r| r.id)
            })
            .unwrap_or(rec.id)
    }
}

mod actions;
mod canary;
mod deploy;
mod drive;
mod drivers;
mod recover;
mod resume;
mod rollback;
mod status;

pub use status::{EnvStatus, ReleaseHistory, ReleaseTraffic};

pub use canary::{CanaryView, WindowView};
pub use gantry_engine::canary::CanaryAction;

/// Waits (at most 10 s) until requests in flight to a release's backend have ended.
async fn drain(env: &Env, source: i64) {
    let backend = env.backends.lock().expect("backends").get(&source).cloned();
    let (Some(b), Some(router)) = (backend, env.router()) else {
        return;
    };
    for _ in 0..200 {
        let busy = router
            .measure(now_millis())
            .await
            .map(|all| {
                all.iter()
                    .any(|m| m.release == b.release && m.addr == b.addr && m.inflight > 0)
            })
            .unwrap_or(false);
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) struct LockGuard(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

fn pin_reason(r: &ReleaseRecord) -> String {
    format!("release {}/{} #{}", r.project, r.environment, r.number)
}

fn describe_check(check: &gantry_model::HealthCheck) -> String {
    match check {
        gantry_model::HealthCheck::None => "none".into(),
        gantry_model::HealthCheck::Http { path } => format!("http {path}"),
        gantry_model::HealthCheck::Tcp => "tcp".into(),
        gantry_model::HealthCheck::Command { command } => format!("command `{command}`"),
    }
}

/// Records what releases did by themselves (crashes) and what targets noted, as events of their release.
async fn record_service_events(
    store: Arc<dyn StateStore>,
    mut rx: mpsc::UnboundedReceiver<ServiceEvent>,
) {
    while let Some(ev) = rx.recv().await {
        match ev {
            ServiceEvent::Crashed {
                release_id,
                status,
                output_tail,
                restart_in,
            } => {
                let msg = format!(
                    "crashed: {status}; restarting in {} ms; last output: {}",
                    restart_in.as_millis(),
                    output_tail.join(" | ")
                );
                let _ = store
                    .add_release_event(release_id, "crash", &msg, now_millis())
                    .await;
            }
            ServiceEvent::Note { release_id, text } => {
                let _ = store
                    .add_release_event(release_id, "note", &text, now_millis())
                    .await;
            }
            ServiceEvent::Started { .. } => {}
        }
    }
}
