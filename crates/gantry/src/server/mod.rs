//! `gantry serve`'s moving parts: the [`Server`] (which implements the API's `Control` port:
//! queueing, cancelling and re-running runs), started and stopped as a [`RunningServer`]
//! (`running.rs`: the composition root and the stop sequence), the queue workers
//! (`worker.rs`), the pollers (`poller.rs`), the mirrors (`mirrors.rs`) and the data
//! directory's keys (`keys.rs`). Runs wait in the state store's queue; nothing is kept only in memory except
//! the cancel switches of the runs this process is running.

pub mod approvals;
pub mod deploy;
pub(crate) mod keys;
pub mod lock;
mod mirrors;
mod notify;
mod poller;
mod runners;
mod running;
pub mod schedules;
mod shared;
pub mod statuses;
mod triggers;
mod worker;

use anyhow::Result;
use async_trait::async_trait;
use gantry_api::{Control, ControlError, TriggerOutcome, TriggerRequest, types};
use gantry_config::server::{ProjectConfig, ServerConfig};
use gantry_engine::ports::{QueuedRun, StateStore};
use gantry_git::Repo;
use gantry_model::{RunStatus, SecretValue, TriggerEvent};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};

pub use mirrors::Mirrors;
pub use poller::spawn_pollers;
pub use running::RunningServer;
pub use triggers::Order;

/// Sends failed releases to the `deploy-failed` notification webhooks, as they happen.
pub fn spawn_failure_notifications(server: Arc<Server>, manager: &gantry_deploy::DeployManager) {
    let mut failures = manager.failures();
    tokio::spawn(async move {
        loop {
            match failures.recv().await {
                Ok((project, environment, number)) => {
                    tokio::spawn(notify::after_failed_release(
                        server.clone(),
                        project,
                        environment,
                        number,
                    ));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "failed-release notifications fell behind");
                }
                Err(_) => break,
            }
        }
    });
}
pub use worker::spawn_workers;

pub struct Server {
    pub config: ServerConfig,
    pub data_dir: PathBuf,
    pub store: Arc<dyn StateStore>,
    pub artifacts: Arc<dyn gantry_engine::ports::ArtifactStore>,
    pub metrics: Arc<gantry_api::metrics::Metrics>,
    /// The owner lock name runs claimed by this server carry.
    pub owner: String,
    /// The server's own URL (for links in notifications).
    pub url: String,
    /// Wakes idle workers when a run is queued.
    pub queued: Notify,
    /// Cancel switches of the runs this process is running.
    pub running: Mutex<HashMap<i64, watch::Sender<bool>>>,
    /// Set on shutdown: workers take no new runs.
    pub draining: watch::Sender<bool>,
    /// The watched repositories' mirrors.
    pub mirrors: Arc<Mirrors>,
    /// The last poll error of each project whose polling fails now.
    pub poll_errors: Mutex<HashMap<String, String>>,
    /// Subjects of commits already read (commits do not change), for the dashboard.
    pub subjects: Mutex<HashMap<String, String>>,
    /// Carries out deployments (it reads pipelines through the mirrors, not the server).
    pub deploys: Arc<gantry_deploy::DeployManager>,
    /// What steps run in (`[runner] sandbox`): None runs them unsandboxed.
    pub sandbox: Option<gantry_runner::sandbox::Sandbox>,
    /// Posts runs' states to the projects' forges.
    pub statuses: statuses::Statuses,
    /// Runs waiting at approval stages.
    pub approvals: approvals::Waits,
    /// Runs whose worker handed the queue to a new one (they wait for an approval): the
    /// worker ends with the run.
    pub released: Mutex<std::collections::HashSet<i64>>,
    /// The workers started that way, awaited at shutdown like the first ones.
    pub extra_workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Wakes runners' claims waiting here when a job is queued for runners.
    pub jobs_queued: Notify,
    /// Wakes the run loop waiting here on a queued job (by its id) when a runner says how it
    /// ended.
    pub job_waits: Mutex<HashMap<i64, Arc<Notify>>>,
    /// Packs the commits runners fetch, one at a time.
    pub sources: tokio::sync::Mutex<()>,
}

use gantry_engine::ports::now_millis as now;

impl Server {
    /// The server's parts, its deploy manager among them. Needs a tokio runtime (the manager
    /// starts its task recording release events).
    pub fn new(
        config: ServerConfig,
        data_dir: PathBuf,
        store: Arc<dyn StateStore>,
        artifacts: Arc<dyn gantry_engine::ports::ArtifactStore>,
        metrics: Arc<gantry_api::metrics::Metrics>,
        owner: String,
        url: String,
    ) -> Self {
        let mirrors = Arc::new(Mirrors::new(
            data_dir.join("repos"),
            config.projects.clone(),
        ));
        let deploys = gantry_deploy::DeployManager::new(
            store.clone(),
            artifacts.clone(),
            Arc::new(deploy::PipelineSource {
                mirrors: mirrors.clone(),
                store: store.clone(),
            }),
            data_dir.join("releases"),
            owner.clone(),
            gantry_deploy::dataplane::DataPlane::new(&data_dir, Some(gantry_exe())),
            gantry_exe(),
        );
        let statuses = statuses::Statuses::start(&config.projects, &url);
        Self {
            statuses,
            approvals: approvals::Waits::default(),
            released: Mutex::new(Default::default()),
            extra_workers: Mutex::new(Vec::new()),
            jobs_queued: Notify::new(),
            job_waits: Mutex::new(HashMap::new()),
            sources: tokio::sync::Mutex::new(()),
            config,
            data_dir,
            store,
            artifacts,
            metrics,
            owner,
            url,
            queued: Notify::new(),
            running: Mutex::new(HashMap::new()),
            draining: watch::channel(false).0,
            mirrors,
            poll_errors: Mutex::new(HashMap::new()),
            subjects: Mutex::new(HashMap::new()),
            deploys,
            sandbox: None,
        }
    }

    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.mirrors.project(name)
    }

    /// The project's mirror, fetched now (cloned first if new).
    pub async fn fetch_mirror(&self, project: &ProjectConfig) -> Result<Repo> {
        self.mirrors.fetch(project).await
    }

    /// The mirror as it is (no fetch); `None` before the first clone.
    pub fn mirror(&self, project: &str) -> Option<Repo> {
        self.mirrors.get(project)
    }

    /// Is `branch` one the project watches?
    pub fn watches(
        &self,
        project: &ProjectConfig,
        branch: &str,
        default_branch: Option<&str>,
    ) -> bool {
        if project.branches.is_empty() {
            return default_branch == Some(branch);
        }
        project
            .branches
            .iter()
            .any(|p| gantry_model::pattern_matches(p, branch))
    }

    /// Queues a run as `order` says; returns the run id, or `None` when the order's key is
    /// taken already (a run for this project, ref and commit exists: the store's constraint).
    pub async fn enqueue(&self, project: &ProjectConfig, order: Order) -> Result<Option<i64>> {
        let Order {
            branch,
            commit,
            trigger,
            event,
            vars,
            key,
        } = order;
        // `project/pulls/N/` of a pull request's run: its older commits' runs share it.
        let pull_request = match (event, key.as_deref().and_then(|k| k.rsplit_once('/'))) {
            (TriggerEvent::PullRequest, Some((prefix, _))) => Some(format!("{prefix}/")),
            _ => None,
        };
        let id = self
            .store
            .enqueue_run(QueuedRun {
                project: project.name.clone(),
                repo: project.repo.clone(),
                commit: commit.clone(),
                branch: branch.clone(),
                trigger: trigger.to_string(),
                event: event.as_str().to_string(),
                vars,
                trigger_key: key,
                created_at: now(),
            })
            .await?;
        if let Some(id) = id {
            self.statuses
                .post(&project.name, id, &commit, statuses::Phase::Queued);
            tracing::info!(project = %project.name, ?branch, commit, run = id, trigger, event = event.as_str(), "run queued");
            // A newer commit of a pull request makes its older commits' queued runs moot.
            if let Some(prefix) = pull_request.as_deref()
                && self.config.supersede
            {
                let why = format!("superseded by run {id}, a newer commit of the pull request");
                let superseded = self
                    .store
                    .supersede_queued_by_key(prefix, id, &why, now())
                    .await?;
                for old in superseded {
                    tracing::info!(run = old, by = id, "queued pull request run superseded");
                }
            }
            // A newer commit on a branch makes its older queued runs moot (a tag's run is never
            // superseded this way).
            if let Some(branch) = branch.as_deref()
                && self.config.supersede
                && event == TriggerEvent::Push
            {
                let superseded = self
                    .store
                    .supersede_queued(&project.name, branch, id, now())
                    .await?;
                for old in superseded {
                    if let Some(d) = self.store.run_detail(old).await? {
                        let phase = statuses::Phase::Finished(RunStatus::Cancelled);
                        self.statuses.post(&project.name, old, &d.run.commit, phase);
                    }
                    tracing::info!(
                        run = old,
                        by = id,
                        "queued run superseded by a newer commit"
                    );
                }
            }
            self.queued.notify_one();
        }
        Ok(id)
    }
}

#[async_trait]
impl Control for Server {
    async fn trigger(&self, request: TriggerRequest) -> Result<TriggerOutcome, ControlError> {
        self.take_trigger(request).await
    }
    async fn claim_job(
        &self,
        runner: &str,
        labels: &[String],
        wait: std::time::Duration,
    ) -> Result<Option<types::ClaimedJob>, ControlError> {
        self.claim_for(runner, labels, wait).await
    }
    async fn job_source(&self, job: &types::JobPayload) -> Result<(PathBuf, String), ControlError> {
        self.source_for(job).await
    }
    fn runner_lease(&self) -> std::time::Duration {
        self.config.runner_lease
    }
    fn runner_scratch(&self) -> PathBuf {
        self.data_dir.join("tmp").join("runner-uploads")
    }
    fn job_finished(&self, id: i64) {
        if let Some(woken) = self.job_waits.lock().expect("job waits").get(&id) {
            woken.notify_one();
        }
    }

    async fn cancel(&self, run: i64) -> Result<(), ControlError> {
        let detail = self
            .store
            .run_detail(run)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no run {run}")))?;
        match detail.run.status {
            RunStatus::Queued => {
                if self.store.cancel_queued(run, now()).await? {
                    let phase = statuses::Phase::Finished(RunStatus::Cancelled);
                    self.statuses
                        .post(&detail.run.project, run, &detail.run.commit, phase);
                    return Ok(());
                }
                // Claimed meanwhile: fall through to the running case.
            }
            RunStatus::Running => {}
            other => {
                return Err(ControlError::conflict(format!(
                    "run {run} is {other}: only queued or running runs can be cancelled"
                )));
            }
        }
        let switch = self.running.lock().expect("running map").get(&run).cloned();
        match switch {
            Some(tx) => {
                let _ = tx.send(true);
                Ok(())
            }
            // Run by another server: it looks for cancels asked for its runs
            // (`shared::CANCELS_EVERY`).
            None if self.config.state.is_some()
                && self.store.request_cancel(run, now()).await? =>
            {
                Ok(())
            }
            None => match self.store.run_detail(run).await?.map(|d| d.run.status) {
                Some(s) if s.is_finished() => Ok(()),
                _ => Err(ControlError::conflict(format!(
                    "run {run} is being run by another process; cancel it there"
                ))),
            },
        }
    }

    async fn rerun(&self, run: i64) -> Result<i64, ControlError> {
        let detail = self
            .store
            .run_detail(run)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no run {run}")))?;
        let r = detail.run;
        let project = self
            .project(&r.project)
            .ok_or_else(|| {
                ControlError::conflict(format!("project `{}` is not served here", r.project))
            })?
            .clone();
        let id = self.enqueue(&project, Order::again(&r, "rerun")).await?;
        id.ok_or_else(|| ControlError::from(anyhow::anyhow!("the re-run was not queued")))
    }

    async fn approve(
        &self,
        run: i64,
        by: &str,
        role: gantry_model::Role,
    ) -> Result<types::Approved, ControlError> {
        if self.store.run_detail(run).await?.is_none() {
            return Err(ControlError::not_found(format!("no run {run}")));
        }
        self.approvals.approve(run, by, role)
    }

    async fn diagnose(&self, run: i64) -> Result<types::RunDiagnosis, ControlError> {
        let detail = self
            .store
            .run_detail(run)
            .await?
            .ok_or_else(|| ControlError::not_found(format!("no run {run}")))?;
        let repo = self.mirror(&detail.run.project);
        let rules = crate::why::load_rules(self.config.why_rules.as_deref())?;
        match crate::why::diagnose_run(&*self.store, repo.as_ref(), run, rules).await {
            Ok(report) => Ok(report),
            Err(e) if e.is::<crate::why::NothingToExplain>() => {
                Err(ControlError::conflict(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn deploy(
        &self,
        request: gantry_engine::ports::DeployRequest,
        wait_bake: bool,
    ) -> Result<types::DeployOutcome, ControlError> {
        let report = self
            .deploys
            .deploy(request, wait_bake)
            .await
            .map_err(deploy::api_error)?;
        Ok(deploy::outcome(&report))
    }

    async fn rollback(
        &self,
        project: &str,
        environment: &str,
        to: Option<i64>,
        by: &str,
    ) -> Result<types::Release, ControlError> {
        let release = self
            .deploys
            .rollback(project, environment, to, by)
            .await
            .map_err(deploy::api_error)?;
        Ok((&release).into())
    }

    async fn releases(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<Vec<types::ReleaseHistory>, ControlError> {
        let history = self
            .deploys
            .history(project, environment)
            .await
            .map_err(deploy::api_error)?;
        if history.is_empty() {
            return Err(ControlError::not_found(format!(
                "{project}/{environment} has no releases"
            )));
        }
        Ok(history.iter().map(deploy::history).collect())
    }

    async fn canary_action(
        &self,
        project: &str,
        environment: &str,
        action: gantry_deploy::CanaryAction,
        by: &str,
    ) -> Result<types::Done, ControlError> {
        let message = self
            .deploys
            .canary_action(project, environment, action, by)
            .await
            .map_err(deploy::api_error)?;
        Ok(types::Done { message })
    }

    async fn alarm(
        &self,
        project: Option<&str>,
        environment: &str,
        name: &str,
    ) -> Result<Vec<String>, ControlError> {
        self.deploys
            .alarm(project, environment, name)
            .await
            .map_err(deploy::api_error)
    }

    async fn stop_environment(
        &self,
        project: &str,
        environment: &str,
        by: &str,
    ) -> Result<types::Stopped, ControlError> {
        let message = self
            .deploys
            .stop_environment(project, environment, by)
            .await
            .map_err(deploy::api_error)?;
        Ok(types::Stopped {
            stopped: true,
            message,
        })
    }

    async fn rotate_share_key(&self) -> Result<Vec<u8>, ControlError> {
        if self.config.state.is_none() {
            return keys::rotate_share_key(&self.data_dir).map_err(ControlError::from);
        }
        // Every server on the database signs with the stored key; the others see the new one
        // within `shared::SHARE_KEY_EVERY`.
        let key = keys::new_key()?;
        self.store
            .set_share_key(&key, gantry_engine::ports::now_millis())
            .await?;
        Ok(key)
    }

    async fn release_diagnosis(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<types::ReleaseDiagnosis, ControlError> {
        let release = crate::why::latest_failed_release(&*self.store, project, environment)
            .await?
            .ok_or_else(|| {
                ControlError::conflict(format!(
                    "{project}/{environment} has no failed release to explain"
                ))
            })?;
        let repo = match release.run_id {
            Some(id) => match self.store.run_detail(id).await? {
                Some(d) => self
                    .mirror(&d.run.project)
                    .or_else(|| Repo::open(std::path::Path::new(&d.run.repo)).ok()),
                None => None,
            },
            None => None,
        };
        let rules = crate::why::load_rules(self.config.why_rules.as_deref())?;
        Ok(crate::why::diagnose_release(&*self.store, repo.as_ref(), release, rules).await?)
    }

    fn poll_errors(&self) -> HashMap<String, String> {
        self.poll_errors.lock().expect("poll errors").clone()
    }

    async fn commit_subjects(
        &self,
        project: &str,
        repo: &str,
        commits: &[String],
    ) -> HashMap<String, String> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        {
            let known = self.subjects.lock().expect("subjects");
            for c in commits {
                match known.get(c) {
                    Some(s) => {
                        found.insert(c.clone(), s.clone());
                    }
                    None => missing.push(c.clone()),
                }
            }
        }
        if missing.is_empty() {
            return found;
        }
        let Some(git) = self
            .mirror(project)
            .or_else(|| Repo::open(std::path::Path::new(repo)).ok())
        else {
            return found;
        };
        let read = tokio::task::spawn_blocking(move || {
            missing
                .into_iter()
                .filter_map(|c| git.subject(&c).ok().flatten().map(|s| (c, s)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut known = self.subjects.lock().expect("subjects");
        if known.len() > 10_000 {
            known.clear();
        }
        for (c, s) in read {
            known.insert(c.clone(), s.clone());
            found.insert(c, s);
        }
        found
    }

    async fn router_samples(&self) -> Vec<gantry_api::RouterSample> {
        self.deploys
            .router_traffic()
            .await
            .into_iter()
            .map(|(project, environment, t)| gantry_api::RouterSample {
                project,
                environment,
                release: t.release,
                role: t.role,
                requests: t.total_requests,
                errors: t.total_errors,
                latency: [
                    t.last_minute.p50_ms.map(|v| v / 1000.0),
                    t.last_minute.p90_ms.map(|v| v / 1000.0),
                    t.last_minute.p99_ms.map(|v| v / 1000.0),
                ],
            })
            .collect()
    }

    async fn environment_status(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<types::EnvStatus, ControlError> {
        let s = self
            .deploys
            .status(project, environment)
            .await
            .map_err(deploy::api_error)?;
        Ok(deploy::status(&s))
    }

    async fn environment_statuses(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<types::EnvStatus>, ControlError> {
        let all = self
            .deploys
            .statuses(project)
            .await
            .map_err(deploy::api_error)?;
        Ok(all.iter().map(deploy::status).collect())
    }

    fn webhook_secret(&self, project: &str) -> Result<Option<SecretValue>, ControlError> {
        let p = self
            .project(project)
            .ok_or_else(|| ControlError::not_found(format!("no project `{project}`")))?;
        Ok(p.webhook_secret_env
            .as_ref()
            .and_then(|name| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
            .map(SecretValue::new))
    }
}

/// The gantry binary this server runs: the data plane and the releases' shims are started
/// from it. (`/proc/self/exe` stays valid when the file is replaced by an upgrade.)
fn gantry_exe() -> PathBuf {
    let own = PathBuf::from("/proc/self/exe");
    if own.exists() {
        return own;
    }
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gantry"))
}
