//! Jobs on runners (`gantry runner` on any host). Two sides meet here:
//! - the server's run loop hands an attempt to [`RemoteJobs`] (the server queues it for
//!   runners and waits for its end) instead of running it in its own slots;
//! - a runner runs the attempt it claimed with [`run_on_runner`]: the very attempt code of the
//!   server's own slots (workspace, env, secrets, masking, timeouts, artifacts, caches), with
//!   its records going to the server ([`AttemptStore`]) and its workspace coming from it
//!   ([`SourceFetch`]).

use crate::context::RunContext;
use crate::events::Observer;
use crate::job::{AttemptResult, run_attempt};
use crate::logs::spawn_writer;
use anyhow::Result;
use async_trait::async_trait;
use gantry_engine::mask::Masker;
use gantry_engine::ports::{ArtifactStore, AttemptStore};
use gantry_engine::run::JobRef;
use gantry_git::Repo;
use gantry_model::{Job, Pipeline, SecretValue, TriggerEvent};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub use crate::job::AttemptResult as AttemptEnd;

/// Where a job's workspace comes from.
pub enum Source {
    /// A checkout of the commit from a repository on this host.
    Repo(Repo),
    /// Fetched from elsewhere (a runner: the server's archive of the commit).
    Fetch(Arc<dyn SourceFetch>),
}

impl Source {
    pub(crate) async fn place(&self, commit: &str, workspace: &Path) -> Result<()> {
        match self {
            Source::Repo(repo) => {
                let (repo, commit, ws) =
                    (repo.clone(), commit.to_string(), workspace.to_path_buf());
                tokio::task::spawn_blocking(move || repo.export(&commit, &ws))
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("{e}")))
            }
            Source::Fetch(fetch) => fetch.place(commit, workspace).await,
        }
    }
}

/// Puts the files of a commit into a fresh workspace directory.
#[async_trait]
pub trait SourceFetch: Send + Sync {
    async fn place(&self, commit: &str, workspace: &Path) -> Result<()>;
}

/// One attempt of one job to hand to runners: what the server knows of it. Secrets are named,
/// never carried: the server that answers a runner's claim reads their values.
#[derive(Debug, Clone)]
pub struct JobTicket {
    pub run_id: i64,
    pub job_id: i64,
    pub attempt: u32,
    pub job: JobRef,
    pub job_name: String,
    /// What a runner must have (`runs_on:`).
    pub labels: Vec<String>,
    pub project: String,
    pub commit: String,
    pub branch: Option<String>,
    pub event: TriggerEvent,
    pub vars: BTreeMap<String, String>,
    pub pipeline_file: String,
    pub subdir: Option<PathBuf>,
    /// The secrets the job asks for (its `secrets:` and its pushes' passwords).
    pub secrets: Vec<String>,
    /// Why the run gets no secrets at all, when it gets none.
    pub secrets_withheld: Option<String>,
    /// Earlier attempts of this job lost with their runner.
    pub lost_before: u32,
}

/// The server's side of runners: the run loop hands an attempt over and waits for its end.
#[async_trait]
pub trait RemoteJobs: Send + Sync {
    /// Whether `job` runs on a runner rather than in the server's own slots.
    fn takes(&self, job: &Job) -> bool;
    /// Queues the attempt for runners and waits until one has said how it ended, or it was
    /// lost with its runner, or `cancel` turned true (the runner is told to stop).
    async fn run(&self, ticket: JobTicket, cancel: watch::Receiver<bool>) -> AttemptEnd;
}

/// A claimed attempt as a runner runs it.
pub struct RunnerAttempt {
    pub run_id: i64,
    pub job_id: i64,
    pub attempt: u32,
    pub job: JobRef,
    pub project: String,
    pub commit: String,
    pub branch: Option<String>,
    pub event: TriggerEvent,
    pub vars: BTreeMap<String, String>,
    pub subdir: Option<PathBuf>,
    /// The run's pipeline, parsed by the runner from the file at the commit.
    pub pipeline: Pipeline,
    pub pipeline_file: String,
    pub secrets: HashMap<String, SecretValue>,
    pub secrets_withheld: Option<String>,
    pub log_cap: u64,
    pub cache_cap: u64,
    pub kill_grace: Duration,
    /// Where its workspace is made (`<work_dir>/<job>-<attempt>`), removed after.
    pub work_dir: PathBuf,
    /// The runner's name: containers of the steps carry it.
    pub owner: String,
    pub sandbox: Option<crate::sandbox::Sandbox>,
}

/// Runs a claimed attempt to its end, exactly as the server runs its own, its records going
/// to `records` and its artifacts to `artifacts`. `cancel` turned true stops its steps.
pub async fn run_on_runner(
    a: RunnerAttempt,
    records: Arc<dyn AttemptStore>,
    artifacts: Arc<dyn ArtifactStore>,
    source: Arc<dyn SourceFetch>,
    observer: Arc<dyn Observer>,
    cancel: watch::Receiver<bool>,
) -> AttemptEnd {
    let Some(job) = job_at(&a.pipeline, a.job).cloned() else {
        return AttemptResult::failed(format!(
            "the pipeline file at {} has no job at stage {}, position {}",
            a.commit, a.job.stage, a.job.job
        ));
    };
    let (logs, log_task) = spawn_writer(a.run_id, records.clone(), observer.clone());
    let masker = Masker::new(a.secrets.values().map(|v| v.expose()).collect::<Vec<_>>());
    let ctx = Arc::new(RunContext {
        run_id: a.run_id,
        project: a.project,
        source: Source::Fetch(source),
        commit: a.commit,
        branch: a.branch,
        event: a.event,
        vars: a.vars,
        subdir: a.subdir,
        pipeline: a.pipeline,
        pipeline_file: a.pipeline_file,
        work_dir: a.work_dir.clone(),
        jobs: 1,
        kill_grace: a.kill_grace,
        keep_workspaces: false,
        log_cap: a.log_cap,
        sandbox: a.sandbox,
        prefetched: None,
        secrets: a.secrets,
        secrets_withheld: a.secrets_withheld,
        cache_cap: a.cache_cap,
        owner: Some(a.owner),
        masker,
        records,
        artifacts,
        observer,
        logs: logs.clone(),
        cancel,
    });
    let mut end = run_attempt(ctx.clone(), job, a.job_id, a.attempt).await;
    logs.flush().await;
    drop(logs);
    drop(ctx);
    if let Some(e) = log_task.await.ok().flatten() {
        end = AttemptResult::failed(format!("the job's log could not be stored: {e}"));
    }
    let _ = tokio::fs::remove_dir_all(&a.work_dir).await;
    end
}

/// The job `job` names in `pipeline`.
pub fn job_at(pipeline: &Pipeline, job: JobRef) -> Option<&Job> {
    crate::plan::try_job_of(pipeline, job)
}
