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

use crate::health::{self, Probe};
use crate::kept::{self, Kept};
use crate::router::{Backend, RouteTable, Router};
use crate::supervisor::{self, ServiceEvent};
use crate::targets::{self, ReleaseContext, Target};
use async_trait::async_trait;
use gantry_engine::ports::{
    ArtifactQuery, ArtifactStore, DeployReport, DeployRequest, EnvLock, ReleaseEvent,
    ReleaseRecord, StateStore, now_millis,
};
use gantry_engine::release::{self, DeployCandidate, ReleaseKind, ReleaseState};
use gantry_model::{EnvironmentSpec, Routing};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A lock's lease; renewed every third of it while the work lasts.
const LEASE: Duration = Duration::from_secs(30);
/// Crashes during the bake that roll a release back.
const CRASHES_TO_ROLL_BACK: u32 = 2;

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
#[derive(Debug)]
pub enum DeployError {
    NotFound(String),
    /// Refused as things stand: the lock is held, the deploy is outdated, nothing to roll back.
    Conflict(String),
    Invalid(String),
    Internal(anyhow::Error),
}

impl std::fmt::Display for DeployError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeployError::NotFound(m) | DeployError::Conflict(m) | DeployError::Invalid(m) => {
                f.write_str(m)
            }
            DeployError::Internal(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for DeployError {
    fn from(e: anyhow::Error) -> Self {
        DeployError::Internal(e)
    }
}

type Result<T> = std::result::Result<T, DeployError>;

/// An environment this process runs: its router and target, and the backends of the releases
/// running now.
struct Env {
    project: String,
    name: String,
    spec: Mutex<EnvironmentSpec>,
    router: Mutex<Option<Arc<Router>>>,
    target: Mutex<Option<Arc<dyn Target>>>,
    backends: Mutex<HashMap<i64, Arc<Backend>>>,
    /// Serialises work on this environment inside this process (the store lock is for others).
    work: tokio::sync::Mutex<()>,
    /// The latest health observation of the live release.
    last_health: Mutex<Option<(bool, String)>>,
    /// The canary running now, if any (its driver takes promote/abort/pause/resume/alarms).
    canary: Mutex<Option<canary::CanaryHandle>>,
    /// Alarms for a release in its bake after a switch or a full promotion.
    alarms: tokio::sync::broadcast::Sender<String>,
}

impl Env {
    fn target(&self) -> Option<Arc<dyn Target>> {
        self.target.lock().expect("target").clone()
    }
    fn router(&self) -> Option<Arc<Router>> {
        self.router.lock().expect("router").clone()
    }

    /// What the router measured for each release it sends traffic to (each release once).
    fn traffic(&self) -> Vec<ReleaseTraffic> {
        let Some(router) = self.router() else {
            return Vec::new();
        };
        let t = router.table();
        let now = now_millis();
        let sides = [
            ("stable", t.stable.clone()),
            ("canary", t.canary.as_ref().map(|c| c.backend.clone())),
            ("fallback", t.fallback.clone()),
        ];
        let mut out: Vec<ReleaseTraffic> = Vec::new();
        for (role, backend) in sides {
            let Some(b) = backend else { continue };
            if out.iter().any(|x| x.release == b.release) {
                continue;
            }
            let (total_requests, total_errors) = b.stats.totals();
            out.push(ReleaseTraffic {
                release: b.release,
                role: role.to_string(),
                last_minute: b.stats.window(now - 60_000, now).into(),
                total_requests,
                total_errors,
            });
        }
        out
    }
}

/// An environment's state for `gantry status`.
#[derive(Debug, Clone, Serialize)]
pub struct EnvStatus {
    pub project: String,
    pub environment: String,
    pub target: Option<String>,
    pub router: Option<String>,
    pub live: Option<ReleaseRecord>,
    pub previous: Option<ReleaseRecord>,
    /// `healthy`, `unhealthy`, or `unknown` (not running here).
    pub health: String,
    pub health_detail: Option<String>,
    pub uptime_ms: Option<u64>,
    pub restarts: Option<u32>,
    pub pid: Option<u32>,
    pub log: Option<String>,
    /// Deploy releases with something running now.
    pub running: Vec<i64>,
    pub lock: Option<EnvLock>,
    /// The canary running now.
    pub canary: Option<CanaryView>,
    /// What the router measured per release it sends traffic to: the last minute, and totals.
    pub traffic: Vec<ReleaseTraffic>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseTraffic {
    pub release: i64,
    /// `stable`, `canary` or `fallback`.
    pub role: String,
    pub last_minute: WindowView,
    pub total_requests: u64,
    pub total_errors: u64,
}

/// A release with what happened to it, for `gantry releases`.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseHistory {
    pub release: ReleaseRecord,
    pub events: Vec<ReleaseEvent>,
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
    /// A release failed (deploy, bake, canary): (project, environment, release number).
    failures: tokio::sync::broadcast::Sender<(String, String, i64)>,
}

impl DeployManager {
    pub fn new(
        store: Arc<dyn StateStore>,
        artifacts: Arc<dyn ArtifactStore>,
        source: Arc<dyn ProjectSource>,
        root: PathBuf,
        owner: String,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let manager = Arc::new(Self {
            store,
            artifacts,
            source,
            root,
            owner,
            envs: Mutex::new(HashMap::new()),
            events: tx,
            failures: tokio::sync::broadcast::channel(64).0,
        });
        tokio::spawn(record_service_events(manager.store.clone(), rx));
        manager
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
                    work: tokio::sync::Mutex::new(()),
                    last_health: Mutex::new(None),
                    canary: Mutex::new(None),
                    alarms: tokio::sync::broadcast::channel(16).0,
                })
            })
            .clone()
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
                    let t = targets::build(target_spec.kind(), &self.events);
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
                let router = Router::start(wanted).await.map_err(DeployError::Internal)?;
                if let Some(old) = current {
                    router.set((*old.table()).clone());
                    old.stop();
                }
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
        Ok(LockGuard(Some(stop_tx)))
    }

    /// Deploys an artifact. Returns when traffic has switched (and, with `wait_bake`, when the
    /// bake has passed), or when the deployment failed and traffic stayed or went back.
    pub async fn deploy(
        self: &Arc<Self>,
        req: DeployRequest,
        wait_bake: bool,
    ) -> Result<DeployReport> {
        let artifact = self
            .store
            .find_artifact(&ArtifactQuery {
                project: Some(&req.project),
                name: Some(&req.artifact),
                run: req.run,
                digest: req.digest.as_deref(),
            })
            .await?
            .ok_or_else(|| {
                DeployError::NotFound(match (req.run, &req.digest) {
                    (Some(run), Some(d)) => format!(
                        "this server has no artifact `{}` of run {run} with digest {d}: is it using another data directory than the run? (start `gantry serve` in the repository that ran it)",
                        req.artifact
                    ),
                    (Some(run), None) => format!("run {run} has no artifact named `{}`", req.artifact),
                    (_, Some(d)) => format!("there is no artifact `{}` with digest {d}", req.artifact),
                    _ => format!("there is no artifact named `{}`", req.artifact),
                })
            })?;
        if artifact.removed_at.is_some() {
            return Err(DeployError::NotFound(format!(
                "artifact `{}` of run {} was removed by retention; run the pipeline again to rebuild it",
                artifact.name, artifact.run_id
            )));
        }
        let run = self.store.run_detail(artifact.run_id).await?.map(|d| d.run);
        if let Some(r) = &run
            && r.project != req.project
        {
            return Err(DeployError::Invalid(format!(
                "artifact `{}` of run {} belongs to project {}, not {}",
                artifact.name, artifact.run_id, r.project, req.project
            )));
        }
        let mut spec = self
            .source
            .environment(&req.project, Some(artifact.run_id), &req.environment)
            .await
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        if let Some(ms) = req.bake_ms {
            spec.bake = Duration::from_millis(ms);
        }
        let env = self.env(&req.project, &req.environment, &spec);
        let purpose = format!(
            "deploy of {} (run {}) by {}",
            artifact.name, artifact.run_id, req.requested_by
        );
        // The store's lock first: a second deploy is refused at once, not queued behind this
        // process's own work on the environment.
        let lock = self.lock(&req.project, &req.environment, &purpose).await?;
        let local = env.work.lock().await;
        let target = self.prepare(&env, &spec).await?;

        let history = self.store.releases(&req.project, &req.environment).await?;
        let live = release::live(&history).cloned();
        if !req.force {
            let commit = run.as_ref().map(|r| r.commit.clone());
            let ancestor = match (&commit, live.as_ref().and_then(|l| l.commit.clone())) {
                (Some(c), Some(l)) if *c != l => self.source.is_ancestor(&req.project, c, &l).await,
                _ => None,
            };
            let candidate = DeployCandidate {
                run: Some(artifact.run_id),
                commit: commit.as_deref(),
                is_ancestor_of_live: ancestor,
            };
            if let Some(why) = release::outdated(live.as_ref(), &candidate) {
                return Err(DeployError::Conflict(format!(
                    "refusing an outdated deploy: {why}. To go back, use `gantry rollback {}`; to deploy it anyway, add --force",
                    req.environment
                )));
            }
        }

        let rec = self
            .store
            .create_release(gantry_engine::ports::NewRelease {
                project: req.project.clone(),
                environment: req.environment.clone(),
                kind: ReleaseKind::Deploy,
                source: None,
                artifact: artifact.name.clone(),
                digest: artifact.digest.clone(),
                run_id: Some(artifact.run_id),
                commit: run.as_ref().map(|r| r.commit.clone()),
                created_by: req.requested_by.clone(),
                created_at: now_millis(),
                reason: None,
            })
            .await?;
        self.store
            .pin(&rec.digest, &pin_reason(&rec), now_millis())
            .await?;
        let ctx = self
            .context(&rec, live.as_ref().map(|l| l.number), &spec)
            .await;
        let outcome = self.bring_up(&env, &target, &rec, &ctx, true).await;
        let report = match outcome {
            Err(why) => {
                self.fail(&env, &target, &rec, &why, live.as_ref()).await?;
                DeployReport {
                    release: self.reload(&rec).await,
                    succeeded: false,
                    message: why,
                }
            }
            Ok(Some(addr))
                if spec.canary.is_some()
                    && live.is_some()
                    && env.router().is_some_and(|r| r.table().stable.is_some()) =>
            {
                drop(local);
                let canary_spec = spec.canary.clone().unwrap_or_else(|| unreachable!());
                let run = self.clone().spawn_canary(
                    env.clone(),
                    target.clone(),
                    rec.clone(),
                    addr,
                    spec.clone(),
                    canary_spec,
                    lock,
                );
                if !wait_bake {
                    return Ok(DeployReport {
                        release: self.reload(&rec).await,
                        succeeded: true,
                        message: format!(
                            "release {} of {} is a canary: it gets the first step's share of users; follow it with `gantry status {}`, end it with `gantry promote` or `gantry abort`",
                            rec.number, rec.environment, rec.environment
                        ),
                    });
                }
                let (succeeded, message) = match run.await {
                    Ok(Ok(message)) => (true, message),
                    Ok(Err(reason)) => (false, reason),
                    Err(e) => (false, format!("the canary's driver stopped: {e}")),
                };
                DeployReport {
                    release: self.reload(&rec).await,
                    succeeded,
                    message,
                }
            }
            Ok(addr) => {
                self.switch(&env, &rec, addr, ReleaseState::Superseded, None)
                    .await?;
                self.after_switch(&env, &target, &spec).await;
                let bake = self
                    .clone()
                    .spawn_bake(env.clone(), rec.clone(), spec.clone());
                let mut message = format!("release {} of {} is live", rec.number, rec.environment);
                // The bake needs neither: an automatic rollback takes them again.
                drop(local);
                drop(lock);
                if wait_bake {
                    match bake.await {
                        Ok(Some(why)) => {
                            return Ok(DeployReport {
                                release: self.reload(&rec).await,
                                succeeded: false,
                                message: why,
                            });
                        }
                        Ok(None) => message.push_str(&format!(
                            " and baked for {}",
                            gantry_model::duration::format_duration(spec.bake)
                        )),
                        Err(_) => {}
                    }
                }
                DeployReport {
                    release: self.reload(&rec).await,
                    succeeded: true,
                    message,
                }
            }
        };
        Ok(report)
    }

    async fn reload(&self, rec: &ReleaseRecord) -> Option<ReleaseRecord> {
        self.store
            .releases(&rec.project, &rec.environment)
            .await
            .ok()?
            .into_iter()
            .find(|r| r.id == rec.id)
    }

    /// Unpacks (if needed), starts and health-checks a release. `Ok(addr)`: healthy, and where
    /// the router should send users (None for targets without a router).
    async fn bring_up(
        &self,
        env: &Env,
        target: &Arc<dyn Target>,
        rec: &ReleaseRecord,
        ctx: &ReleaseContext,
        fresh: bool,
    ) -> std::result::Result<Option<SocketAddr>, String> {
        if fresh || !ctx.dir.is_dir() {
            let _ = std::fs::remove_dir_all(&ctx.dir);
            std::fs::create_dir_all(&ctx.dir)
                .map_err(|e| format!("creating {}: {e}", ctx.dir.display()))?;
            let media = self
                .store
                .find_artifact(&ArtifactQuery {
                    digest: Some(&rec.digest),
                    ..ArtifactQuery::default()
                })
                .await
                .ok()
                .flatten()
                .map(|a| a.media_type)
                .unwrap_or_default();
            // The object's stamp before unpacking: if it changes while we read, the record
            // is stale and the next rollback hashes the object again (never the other way).
            let stamp = self.artifacts.stamp(&rec.digest).await.ok().flatten();
            self.artifacts
                .unpack(&rec.digest, &media, &ctx.dir, &rec.artifact)
                .await
                .map_err(|e| format!("the artifact could not be used: {e:#}"))?;
            if let Err(e) = kept::write(&ctx.dir, &rec.digest, stamp.as_deref()) {
                // Not fatal: without a record a rollback verifies the artifact in full.
                tracing::warn!(dir = %ctx.dir.display(), error = %e, "recording the verified release");
            }
        }
        let addr = target
            .start(ctx)
            .await
            .map_err(|e| format!("the {} target could not start it: {e:#}", target.kind()))?;
        let spec = &ctx.spec;
        let env_vars = ctx.env();
        let probe = Probe {
            check: &spec.health.check,
            addr,
            dir: &ctx.dir,
            env: &env_vars,
        };
        let crashes_at_start = target.running(rec.source).map_or(0, |r| r.crashes);
        let t = target.clone();
        let source = rec.source;
        let outcome = health::wait_healthy(&probe, spec.health.timeout, spec.health.interval, || {
            let running = t.running(source)?;
            (running.crashes >= crashes_at_start + 3).then(|| {
                let (status, tail) = running
                    .last_crash
                    .map(|c| (c.status, c.output_tail))
                    .unwrap_or_default();
                format!(
                    "the release crashed {} times while starting (last: {status}); its last output:\n  {}",
                    running.crashes - crashes_at_start,
                    last_lines(&tail, 8)
                )
            })
        })
        .await;
        let _ = self
            .store
            .add_release_event(rec.id, "health", &outcome.seen.join("; "), now_millis())
            .await;
        *env.last_health.lock().expect("health") = Some((
            outcome.healthy,
            outcome.seen.last().cloned().unwrap_or_default(),
        ));
        if outcome.healthy {
            Ok(addr)
        } else {
            let mut why = format!(
                "release {} failed its health check ({}): {}",
                rec.number,
                describe_check(&spec.health.check),
                outcome.seen.join("; ")
            );
            let tail = target
                .running(rec.source)
                .and_then(|r| r.last_crash)
                .map(|c| c.output_tail)
                .unwrap_or_else(|| supervisor::tail(&ctx.log, 8));
            if !tail.is_empty() && !why.contains("last output") {
                why.push_str(&format!("\nits last output:\n  {}", last_lines(&tail, 8)));
            }
            Err(why)
        }
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

    /// A release that did not come up: stop it, record why, restore the previous one for
    /// targets that switch traffic themselves, drop its directory and pin.
    async fn fail(
        &self,
        env: &Env,
        target: &Arc<dyn Target>,
        rec: &ReleaseRecord,
        why: &str,
        live: Option<&ReleaseRecord>,
    ) -> Result<()> {
        target.stop(rec.source).await;
        let mut reason = why.to_string();
        if target.routing() == Routing::Itself
            && let Some(l) = live
        {
            // The deploy script may have switched traffic already: put the live one back.
            let spec = env.spec.lock().expect("spec").clone();
            let to = self.context(l, None, &spec).await;
            let from = self.context(rec, Some(l.number), &spec).await;
            match target.roll_back(&to, &from).await {
                Ok(()) => reason.push_str(&format!("; rolled back to release {}", l.number)),
                Err(e) => reason.push_str(&format!(
                    "; rolling back to release {} failed too: {e:#}",
                    l.number
                )),
            }
        }
        self.store
            .set_release_state(rec.id, ReleaseState::Failed, Some(&reason), now_millis())
            .await?;
        if rec.kind == ReleaseKind::Deploy {
            self.retire(env, rec).await;
        }
        self.failed(rec);
        Ok(())
    }

    /// Points the router at `rec` (keeping the live release as the fallback), then records it.
    async fn switch(
        &self,
        env: &Env,
        rec: &ReleaseRecord,
        addr: Option<SocketAddr>,
        previous_becomes: ReleaseState,
        reason: Option<&str>,
    ) -> Result<()> {
        if let (Some(router), Some(addr)) = (env.router(), addr) {
            let backend = Backend::new(rec.number, addr);
            let fallback = router.table().primary().cloned();
            env.backends
                .lock()
                .expect("backends")
                .insert(rec.source, backend.clone());
            router.set(RouteTable::single(backend, fallback));
        }
        if let Err(e) = self
            .store
            .switch_live(rec.id, previous_becomes, reason, now_millis())
            .await
        {
            // Not recorded: put the router back so it agrees with the store.
            if let Some(router) = env.router()
                && let Some(old) = router.table().fallback.clone()
            {
                router.set(RouteTable::single(old, None));
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// After a switch: stop releases that are neither live nor the fallback, retire what
    /// `keep` no longer covers, and schedule the previous release's stop if configured.
    async fn after_switch(&self, env: &Arc<Env>, target: &Arc<dyn Target>, spec: &EnvironmentSpec) {
        let Ok(history) = self.store.releases(&env.project, &env.name).await else {
            return;
        };
        let live_source = release::live(&history).map(|l| l.source);
        let fallback_source = env
            .router()
            .and_then(|r| r.table().fallback.clone())
            .and_then(|b| {
                history
                    .iter()
                    .find(|r| r.number == b.release)
                    .map(|r| r.source)
            });
        for number in release::to_retire(&history, spec.keep) {
            if let Some(r) = history.iter().find(|r| r.number == number) {
                self.retire(env, r).await;
            }
        }
        let running: Vec<i64> = env
            .backends
            .lock()
            .expect("backends")
            .keys()
            .copied()
            .collect();
        for source in running {
            if Some(source) != live_source && Some(source) != fallback_source {
                self.stop_release(env, target, source).await;
            }
        }
        if let (Some(after), Some(previous)) = (spec.keep_previous_running, fallback_source) {
            let (env, target) = (env.clone(), target.clone());
            let store = self.store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _guard = env.work.lock().await;
                let Ok(history) = store.releases(&env.project, &env.name).await else {
                    return;
                };
                let source_of = |number: i64| {
                    history
                        .iter()
                        .find(|r| r.number == number)
                        .map(|r| r.source)
                };
                let Some(router) = env.router() else { return };
                let table = router.table();
                let still_fallback = table
                    .fallback
                    .as_ref()
                    .is_some_and(|b| source_of(b.release) == Some(previous));
                let live_is_other = release::live(&history).is_some_and(|l| l.source != previous);
                if still_fallback && live_is_other {
                    if let Some(p) = table.primary().cloned() {
                        router.set(RouteTable::single(p, None));
                    }
                    drain(&env, previous).await;
                    target.stop(previous).await;
                    env.backends.lock().expect("backends").remove(&previous);
                }
            });
        }
    }

    async fn stop_release(&self, env: &Env, target: &Arc<dyn Target>, source: i64) {
        drain(env, source).await;
        target.stop(source).await;
        env.backends.lock().expect("backends").remove(&source);
    }

    /// Removes a deploy release's directory and log, unpins its artifact, records it.
    async fn retire(&self, env: &Env, r: &ReleaseRecord) {
        if let Some(t) = env.target() {
            self.stop_release(env, &t, r.number).await;
        }
        let dir = self.release_dir(&r.project, &r.environment, r.number);
        let _ = std::fs::remove_dir_all(&dir);
        kept::remove(&dir);
        let _ = std::fs::remove_file(self.release_log(&r.project, &r.environment, r.number));
        let _ = self.store.unpin(&r.digest, &pin_reason(r)).await;
        let _ = self.store.mark_retired(r.id, now_millis()).await;
    }

    /// Watches a release for `bake` after its switch: repeated crashes roll it back. Resolves
    /// to the failure, if it failed.
    fn spawn_bake(
        self: Arc<Self>,
        env: Arc<Env>,
        rec: ReleaseRecord,
        spec: EnvironmentSpec,
    ) -> tokio::task::JoinHandle<Option<String>> {
        let mut alarms = env.alarms.subscribe();
        tokio::spawn(async move {
            let target = env.target()?;
            let start = target.running(rec.source).map_or(0, |r| r.crashes);
            let until = tokio::time::Instant::now() + spec.bake;
            while tokio::time::Instant::now() < until {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200).min(spec.bake)) => {}
                    alarm = alarms.recv() => {
                        if let Ok(name) = alarm {
                            let why = format!(
                                "alarm {name} fired during the bake of release {}",
                                rec.number
                            );
                            return match self.automatic_rollback(&env, &rec, &why).await {
                                Ok(true) => Some(why),
                                Ok(false) => None,
                                Err(e) => Some(format!("{why}; rolling back failed: {e}")),
                            };
                        }
                    }
                }
                // Stopped (the environment moved on): nothing left to watch.
                let now = target.running(rec.source)?;
                let crashes = now.crashes.saturating_sub(start);
                if crashes >= CRASHES_TO_ROLL_BACK {
                    let (status, tail) = now
                        .last_crash
                        .map(|c| (c.status, c.output_tail))
                        .unwrap_or_default();
                    let why = format!(
                        "release {} crashed {crashes} times during its bake (last: {status}); its last output:\n  {}",
                        rec.number,
                        last_lines(&tail, 8)
                    );
                    return match self.automatic_rollback(&env, &rec, &why).await {
                        Ok(true) => Some(why),
                        Ok(false) => None,
                        Err(e) => Some(format!("{why}; rolling back failed: {e}")),
                    };
                }
            }
            None
        })
    }

    /// Rolls back from `bad` (if it is still live) with `why`; false if the environment moved
    /// on already.
    async fn automatic_rollback(
        &self,
        env: &Arc<Env>,
        bad: &ReleaseRecord,
        why: &str,
    ) -> Result<bool> {
        // Another deployment may hold the lock for a moment: wait for it (bounded), then see
        // whether the environment moved on meanwhile.
        let purpose = format!("automatic rollback of release {}", bad.number);
        let mut attempts = 0;
        let _lock = loop {
            match self.lock(&env.project, &env.name, &purpose).await {
                Ok(l) => break l,
                Err(DeployError::Conflict(_)) if attempts < 300 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let _local = env.work.lock().await;
        let history = self.store.releases(&env.project, &env.name).await?;
        if release::live(&history).map(|l| l.id) != Some(bad.id) {
            return Ok(false);
        }
        self.roll_back_locked(
            env,
            None,
            "gantry (automatic)",
            Some(why),
            ReleaseState::Failed,
        )
        .await?;
        self.failed(bad);
        Ok(true)
    }

    /// `gantry rollback`: back to the previous healthy release, or to `to`.
    pub async fn rollback(
        self: &Arc<Self>,
        project: &str,
        environment: &str,
        to: Option<i64>,
        by: &str,
    ) -> Result<ReleaseRecord> {
        let history = self.store.releases(project, environment).await?;
        if history.is_empty() {
            return Err(DeployError::NotFound(format!(
                "{project}/{environment} has no releases"
            )));
        }
        let env = match self.known_env(project, environment) {
            Some(e) => e,
            None => {
                let live = release::live(&history).ok_or_else(|| {
                    DeployError::Conflict(format!("{project}/{environment} has no live release"))
                })?;
                let spec = self
                    .source
                    .environment(project, live.run_id, environment)
                    .await
                    .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
                self.env(project, environment, &spec)
            }
        };
        // During a canary, rolling back is aborting it: stable never stopped serving.
        if let Some(done) = canary::abort_running(&env, &format!("rolled back by {by}")) {
            let _ = done.await;
            let history = self.store.releases(project, environment).await?;
            return release::live(&history).cloned().ok_or_else(|| {
                DeployError::Conflict(format!("{project}/{environment} has no live release"))
            });
        }
        let purpose = format!("rollback by {by}");
        let _lock = self.lock(project, environment, &purpose).await?;
        let _local = env.work.lock().await;
        self.roll_back_locked(&env, to, by, None, ReleaseState::RolledBack)
            .await
    }

    async fn roll_back_locked(
        &self,
        env: &Arc<Env>,
        to: Option<i64>,
        by: &str,
        reason: Option<&str>,
        from_becomes: ReleaseState,
    ) -> Result<ReleaseRecord> {
        let history = self.store.releases(&env.project, &env.name).await?;
        let live = release::live(&history).cloned().ok_or_else(|| {
            DeployError::Conflict(format!("{}/{} has no live release", env.project, env.name))
        })?;
        let target_rec = release::rollback_target(&history, to)
            .map_err(|r| DeployError::Conflict(r.to_string()))?
            .clone();
        // The kept release first: a rollback must not start what it cannot verify. It was
        // verified when unpacked; what is there now is compared with that record (a stat per
        // file), and the stored artifact is read only when it is not known to be unchanged.
        self.check_kept(env, &target_rec).await?;
        let spec = match &target_rec.run_id {
            Some(run) => self
                .source
                .environment(&env.project, Some(*run), &env.name)
                .await
                .unwrap_or_else(|_| env.spec.lock().expect("spec").clone()),
            None => env.spec.lock().expect("spec").clone(),
        };
        let target = self.prepare(env, &spec).await?;
        let rec = self
            .store
            .create_release(gantry_engine::ports::NewRelease {
                project: env.project.clone(),
                environment: env.name.clone(),
                kind: ReleaseKind::Rollback,
                source: Some(target_rec.number),
                artifact: target_rec.artifact.clone(),
                digest: target_rec.digest.clone(),
                run_id: target_rec.run_id,
                commit: target_rec.commit.clone(),
                created_by: by.to_string(),
                created_at: now_millis(),
                reason: reason.map(str::to_string),
            })
            .await?;
        let ctx = self.context(&rec, Some(live.number), &spec).await;
        let from_ctx = self.context(&live, None, &spec).await;
        // Running already (the fallback): only a router switch. Otherwise start it again.
        let running = target.running(rec.source).and_then(|r| r.addr);
        let addr = match (running, target.routing() == Routing::Router) {
            (Some(addr), true) => {
                let probe_env = ctx.env();
                let obs = health::check_once(&Probe {
                    check: &spec.health.check,
                    addr: Some(addr),
                    dir: &ctx.dir,
                    env: &probe_env,
                })
                .await;
                if obs.ok {
                    Ok(Some(addr))
                } else {
                    self.bring_up(env, &target, &rec, &ctx, false).await
                }
            }
            (_, true) => self.bring_up(env, &target, &rec, &ctx, false).await,
            (_, false) => target
                .roll_back(&ctx, &from_ctx)
                .await
                .map(|()| None)
                .map_err(|e| format!("{e:#}")),
        };
        match addr {
            Err(why) => {
                self.store
                    .set_release_state(rec.id, ReleaseState::Failed, Some(&why), now_millis())
                    .await?;
                Err(DeployError::Conflict(format!(
                    "rolling back to release {} failed; release {} is still live: {why}",
                    target_rec.number, live.number
                )))
            }
            Ok(addr) => {
                if from_becomes == ReleaseState::Failed {
                    // The bad release must not be the fallback.
                    self.switch(env, &rec, addr, ReleaseState::Failed, reason)
                        .await?;
                    if let Some(router) = env.router()
                        && let Some(p) = router.table().primary().cloned()
                    {
                        router.set(RouteTable::single(p, None));
                    }
                    self.stop_release(env, &target, live.source).await;
                } else {
                    self.switch(
                        env,
                        &rec,
                        addr,
                        from_becomes,
                        Some(&format!("rolled back by {by}")),
                    )
                    .await?;
                }
                self.after_switch(env, &target, &spec).await;
                Ok(self.reload(&rec).await.unwrap_or(rec))
            }
        }
    }

    /// Refuses (touching nothing) a rollback to a kept release that is not as it was verified:
    /// its directory changed or was removed, or its stored artifact is corrupt or missing.
    async fn check_kept(&self, env: &Env, to: &ReleaseRecord) -> Result<()> {
        let dir = self.release_dir(&env.project, &env.name, to.source);
        let stamp = self.artifacts.stamp(&to.digest).await.map_err(|_| ());
        let state = {
            let (dir, digest) = (dir.clone(), to.digest.clone());
            tokio::task::spawn_blocking(move || kept::compare(&dir, &digest, stamp))
                .await
                .map_err(|e| DeployError::Internal(e.into()))?
        };
        match state {
            Kept::Intact => Ok(()),
            Kept::Changed(what) => Err(DeployError::Conflict(format!(
                "refusing to roll back to release {}: its release directory {} changed after it was verified ({what}). Traffic was not touched; to use that version again, deploy its run again",
                to.number,
                dir.display()
            ))),
            Kept::Unrecorded | Kept::Missing | Kept::ObjectChanged => {
                if let Err(e) = self.artifacts.confirm(&to.digest).await {
                    return Err(DeployError::Conflict(format!(
                        "refusing to roll back to release {}: its artifact {} cannot be used: {e:#}. Traffic was not touched",
                        to.number, to.digest
                    )));
                }
                // The tree matched and the object checks out: remember the object's new stamp
                // (stores without stamps are asked every time; `confirm` is cheap there).
                if state == Kept::ObjectChanged
                    && let Ok(Some(stamp)) = self.artifacts.stamp(&to.digest).await
                {
                    let _ = kept::write(&dir, &to.digest, Some(&stamp));
                }
                Ok(())
            }
        }
    }

    /// Releases of an environment with their events, newest first.
    pub async fn history(&self, project: &str, environment: &str) -> Result<Vec<ReleaseHistory>> {
        let releases = self.store.releases(project, environment).await?;
        let mut out = Vec::new();
        for r in releases {
            let events = self.store.release_events(r.id).await?;
            out.push(ReleaseHistory { release: r, events });
        }
        Ok(out)
    }

    /// Every environment with releases, or those of one project.
    pub async fn statuses(&self, project: Option<&str>) -> Result<Vec<EnvStatus>> {
        let mut out = Vec::new();
        for (p, e) in self.store.environments().await? {
            if project.is_some_and(|want| want != p) {
                continue;
            }
            out.push(self.status(&p, &e).await?);
        }
        Ok(out)
    }

    pub async fn status(&self, project: &str, environment: &str) -> Result<EnvStatus> {
        let history = self.store.releases(project, environment).await?;
        if history.is_empty() {
            return Err(DeployError::NotFound(format!(
                "{project}/{environment} has no releases yet"
            )));
        }
        let live = release::live(&history).cloned();
        let previous = live.as_ref().and_then(|l| {
            release::rollback_target(&history, None)
                .ok()
                .filter(|p| p.source != l.source)
                .cloned()
        });
        let env = self.known_env(project, environment);
        let target = env.as_ref().and_then(|e| e.target());
        let running_live = match (&target, &live) {
            (Some(t), Some(l)) => t.running(l.source),
            _ => None,
        };
        let (health, detail) = match (&env, &target, &live) {
            (Some(env), Some(t), Some(l)) => {
                let spec = env.spec.lock().expect("spec").clone();
                let ctx = self.context(l, None, &spec).await;
                let vars = ctx.env();
                let addr = t.running(l.source).and_then(|r| r.addr);
                if t.routing() == Routing::Router && addr.is_none() {
                    ("unhealthy".to_string(), Some("not running".to_string()))
                } else {
                    let obs = health::check_once(&Probe {
                        check: &spec.health.check,
                        addr,
                        dir: &ctx.dir,
                        env: &vars,
                    })
                    .await;
                    (
                        if obs.ok { "healthy" } else { "unhealthy" }.to_string(),
                        Some(obs.text),
                    )
                }
            }
            _ => ("unknown".to_string(), None),
        };
        let running: Vec<i64> = env
            .as_ref()
            .map(|e| {
                let mut v: Vec<i64> = e
                    .backends
                    .lock()
                    .expect("backends")
                    .keys()
                    .copied()
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default();
        let lock = self
            .store
            .env_locks()
            .await?
            .into_iter()
            .find(|l| l.project == project && l.environment == environment);
        let traffic = env.as_ref().map(|e| e.traffic()).unwrap_or_default();
        let canary = env.as_ref().and_then(|e| self.canary_view(e));
        Ok(EnvStatus {
            project: project.to_string(),
            environment: environment.to_string(),
            canary,
            traffic,
            target: target.as_ref().map(|t| t.kind().name().to_string()),
            router: env
                .as_ref()
                .and_then(|e| e.router())
                .map(|r| r.addr.to_string()),
            live,
            previous,
            health,
            health_detail: detail,
            uptime_ms: running_live.as_ref().map(|r| r.uptime.as_millis() as u64),
            restarts: running_live.as_ref().map(|r| r.crashes),
            pid: running_live.as_ref().and_then(|r| r.pid),
            log: running_live.as_ref().map(|r| r.log.display().to_string()),
            running,
            lock,
        })
    }

    /// At server start: services left by a dead gantry are killed, locks of dead owners
    /// released, deployments cut short marked `interrupted`, and every environment's live
    /// release started again behind its router. Returns what it did, for the log.
    pub async fn recover(
        self: &Arc<Self>,
        owner_gone: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        let mut notes = Vec::new();
        let killed = supervisor::kill_leftovers(&self.root);
        if killed > 0 {
            notes.push(format!(
                "stopped {killed} release processes left by a previous gantry"
            ));
        }
        for lock in self.store.env_locks().await? {
            if lock.owner != self.owner && owner_gone(&lock.owner) {
                self.store
                    .release_env_lock(&lock.project, &lock.environment, &lock.owner)
                    .await?;
                notes.push(format!(
                    "released the lock of {}/{} left by a stopped gantry ({})",
                    lock.project, lock.environment, lock.purpose
                ));
            }
        }
        for r in self.store.deploying_releases().await? {
            let history = self.store.releases(&r.project, &r.environment).await?;
            let live = release::live(&history).map(|l| l.number);
            let reason = match live {
                Some(l) => {
                    format!("gantry stopped during this deployment; release {l} stayed live")
                }
                None => "gantry stopped during this deployment".to_string(),
            };
            self.store
                .set_release_state(r.id, ReleaseState::Interrupted, Some(&reason), now_millis())
                .await?;
            if r.kind == ReleaseKind::Deploy {
                let dir = self.release_dir(&r.project, &r.environment, r.number);
                let _ = std::fs::remove_dir_all(&dir);
                kept::remove(&dir);
                let _ = self.store.unpin(&r.digest, &pin_reason(&r)).await;
                self.store.mark_retired(r.id, now_millis()).await?;
            }
            notes.push(format!(
                "release {} of {}/{} was interrupted: {reason}",
                r.number, r.project, r.environment
            ));
        }
        for (project, environment) in self.store.environments().await? {
            let history = self.store.releases(&project, &environment).await?;
            let Some(live) = release::live(&history).cloned() else {
                continue;
            };
            match self.restore(&live).await {
                Ok(()) => notes.push(format!(
                    "{project}/{environment}: release {} serves again",
                    live.number
                )),
                Err(e) => notes.push(format!(
                    "{project}/{environment}: release {} could not be started again: {e}",
                    live.number
                )),
            }
        }
        Ok(notes)
    }

    async fn restore(&self, live: &ReleaseRecord) -> Result<()> {
        let spec = self
            .source
            .environment(&live.project, live.run_id, &live.environment)
            .await
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        let env = self.env(&live.project, &live.environment, &spec);
        let _local = env.work.lock().await;
        let target = self.prepare(&env, &spec).await?;
        if !target.kind().supervised() {
            return Ok(()); // Nothing of ours runs for it.
        }
        let ctx = self.context(live, None, &spec).await;
        let addr = self
            .bring_up(&env, &target, live, &ctx, false)
            .await
            .map_err(DeployError::Conflict)?;
        if let (Some(router), Some(addr)) = (env.router(), addr) {
            let backend = Backend::new(live.number, addr);
            env.backends
                .lock()
                .expect("backends")
                .insert(live.source, backend.clone());
            router.set(RouteTable::single(backend, None));
        }
        let _ = self
            .store
            .add_release_event(
                live.id,
                "note",
                "started again after gantry restarted",
                now_millis(),
            )
            .await;
        Ok(())
    }

    /// Stops every router and service (server shutdown).
    pub async fn shutdown(&self) {
        let envs: Vec<Arc<Env>> = self.envs.lock().expect("envs").values().cloned().collect();
        for env in envs {
            if let Some(r) = env.router() {
                r.stop();
            }
            if let Some(t) = env.target() {
                t.stop_all().await;
            }
        }
    }
}

mod canary;

pub use canary::{CanaryAction, CanaryView, WindowView};

/// Waits (at most 10 s) until requests in flight to a release's backend have ended.
async fn drain(env: &Env, source: i64) {
    let backend = env.backends.lock().expect("backends").get(&source).cloned();
    if let Some(b) = backend {
        for _ in 0..200 {
            if b.inflight() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

fn last_lines(lines: &[String], n: usize) -> String {
    let skip = lines.len().saturating_sub(n);
    if lines.is_empty() {
        return "(none)".into();
    }
    lines[skip..].join("\n  ")
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

/// Records crashes of supervised services as events of their release.
async fn record_service_events(
    store: Arc<dyn StateStore>,
    mut rx: mpsc::UnboundedReceiver<ServiceEvent>,
) {
    while let Some(ev) = rx.recv().await {
        if let ServiceEvent::Crashed {
            release_id: release,
            status,
            output_tail,
            restart_in,
        } = ev
        {
            let id = release;
            let msg = format!(
                "crashed: {status}; restarting in {} ms; last output: {}",
                restart_in.as_millis(),
                output_tail.join(" | ")
            );
            let _ = store
                .add_release_event(id, "crash", &msg, now_millis())
                .await;
        }
    }
}
