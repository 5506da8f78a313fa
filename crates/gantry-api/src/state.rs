//! What every handler shares, and `Control`: the operations the server carries out for the API
//! (queueing, cancelling, re-running runs). The API only decides who may ask; the server decides
//! how it is done.

use crate::error::ControlError;
use crate::metrics::Metrics;
use crate::types;
use async_trait::async_trait;
use gantry_engine::ports::StateStore;
use gantry_model::SecretValue;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn StateStore>,
    pub control: Arc<dyn Control>,
    pub metrics: Arc<Metrics>,
    /// Webhook bodies larger than this get 413.
    pub max_body_bytes: usize,
    pub artifacts: Arc<dyn gantry_engine::ports::ArtifactStore>,
    /// The key share links are signed with (kept in the data directory); rotating it makes
    /// every link made before invalid.
    pub share_key: Arc<ShareKey>,
    /// The server's own URL, for the links it hands out.
    pub public_url: String,
    /// The last hour of the routers' numbers, for the dashboard's charts.
    pub history: Arc<crate::web::History>,
}

/// The share-link key as it is now: read for every link, replaced whole by a rotation.
pub struct ShareKey(std::sync::RwLock<Arc<[u8]>>);

impl ShareKey {
    pub fn new(key: Vec<u8>) -> Self {
        Self(std::sync::RwLock::new(key.into()))
    }
    pub fn get(&self) -> Arc<[u8]> {
        self.0.read().expect("share key").clone()
    }
    pub fn set(&self, key: Vec<u8>) {
        *self.0.write().expect("share key") = key.into();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerSource {
    /// A push webhook of `branch`: deduplicated by project, branch and commit.
    Webhook,
    /// A webhook of a pushed tag (named here; `branch` is `None`): deduplicated by project,
    /// tag and commit. `rev` may be the tag object of an annotated tag.
    Tag(String),
    /// A pull (merge) request opened or updated: a run of its head commit (`rev`).
    PullRequest(PullRequestEvent),
    /// `gantry trigger` or the API: always a new run.
    Manual,
}

/// What a forge said of a pull request, read from its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    /// Its number (GitHub, Gitea) or project-scoped id (GitLab's `iid`).
    pub number: u64,
    /// The branch it would merge into.
    pub base: String,
    /// Its own branch (in the fork, for one from a fork).
    pub head: String,
    /// Whether its branch lives in another repository than the one it targets.
    pub fork: bool,
}

#[derive(Debug, Clone)]
pub struct TriggerRequest {
    pub project: String,
    pub branch: Option<String>,
    /// A commit (webhooks) or any revision (manual); `None`: the branch's head.
    pub rev: Option<String>,
    pub source: TriggerSource,
    /// Variables the run's steps see (manual runs only), checked by
    /// [`gantry_model::vars::check_given`].
    pub vars: std::collections::BTreeMap<String, String>,
}

pub use crate::types::TriggerOutcome;

impl TriggerOutcome {
    /// 201 when a run was queued, 200 when the request was fine but queued nothing.
    pub fn status(&self) -> axum::http::StatusCode {
        if self.queued {
            axum::http::StatusCode::CREATED
        } else {
            axum::http::StatusCode::OK
        }
    }
}

/// One release's traffic through an environment's router.
#[derive(Debug, Clone)]
pub struct RouterSample {
    pub project: String,
    pub environment: String,
    pub release: i64,
    /// `stable`, `canary` or `fallback`.
    pub role: String,
    pub requests: u64,
    pub errors: u64,
    /// p50/p90/p99 over the last minute, in seconds.
    pub latency: [Option<f64>; 3],
}

#[async_trait]
pub trait Control: Send + Sync {
    async fn trigger(&self, request: TriggerRequest) -> Result<TriggerOutcome, ControlError>;
    /// Cancels a queued or running run.
    async fn cancel(&self, run: i64) -> Result<(), ControlError>;
    /// Queues a new run of the same project, branch and commit; returns its id.
    async fn rerun(&self, run: i64) -> Result<i64, ControlError>;
    /// Approves the approval stage run `run` waits at, as the token named `by` with `role`,
    /// when the role is one the stage names (or higher): 409 when it waits for none, 403 for a
    /// role too low.
    async fn approve(
        &self,
        run: i64,
        by: &str,
        role: gantry_model::Role,
    ) -> Result<types::Approved, ControlError>;
    /// Why run `run` failed (`gantry why --json` prints the same).
    async fn diagnose(&self, run: i64) -> Result<types::RunDiagnosis, ControlError>;
    /// The webhook secret of a project: `Err(not_found)` for an unknown project, `Ok(None)` when
    /// the project takes no webhooks.
    fn webhook_secret(&self, project: &str) -> Result<Option<SecretValue>, ControlError>;

    // Environments: answers are the wire types of [`crate::types`].

    /// Deploys; `succeeded` says whether users were sent to it; a deployment that ran and
    /// failed (traffic stayed or went back) is an outcome, not an error.
    async fn deploy(
        &self,
        request: gantry_engine::ports::DeployRequest,
        wait_bake: bool,
    ) -> Result<types::DeployOutcome, ControlError>;
    /// Rolls back to the previous healthy release or to `to`; the new release.
    async fn rollback(
        &self,
        project: &str,
        environment: &str,
        to: Option<i64>,
        by: &str,
    ) -> Result<types::Release, ControlError>;
    /// An environment's releases with their events, newest first.
    async fn releases(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<Vec<types::ReleaseHistory>, ControlError>;
    /// Passes `action` to the canary running in the environment.
    async fn canary_action(
        &self,
        project: &str,
        environment: &str,
        action: gantry_engine::canary::CanaryAction,
        by: &str,
    ) -> Result<types::Done, ControlError>;
    /// A firing alarm named `name` about `environment` (of `project`, or any project).
    async fn alarm(
        &self,
        project: Option<&str>,
        environment: &str,
        name: &str,
    ) -> Result<Vec<String>, ControlError>;
    /// Stops an environment on purpose: its router and releases; it stays stopped across
    /// restarts until the next deploy or rollback.
    async fn stop_environment(
        &self,
        project: &str,
        environment: &str,
        by: &str,
    ) -> Result<types::Stopped, ControlError>;
    /// Replaces the share-link key with a new one, kept where the old one was (written whole
    /// or not at all); returns it.
    async fn rotate_share_key(&self) -> Result<Vec<u8>, ControlError>;
    /// Why the latest failed release of the environment failed (`gantry why ENV --json`).
    async fn release_diagnosis(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<types::ReleaseDiagnosis, ControlError>;
    /// Why polling a project's repository fails now (the last error, while it fails), by
    /// project name; empty when every poll works.
    fn poll_errors(&self) -> std::collections::HashMap<String, String> {
        std::collections::HashMap::new()
    }
    /// The subjects of `commits` of a project (whose repository `repo` names), those it can
    /// find: the dashboard shows them beside runs.
    async fn commit_subjects(
        &self,
        _project: &str,
        _repo: &str,
        _commits: &[String],
    ) -> std::collections::HashMap<String, String> {
        std::collections::HashMap::new()
    }
    /// What environments' routers measured, for `/metrics`.
    async fn router_samples(&self) -> Vec<RouterSample> {
        Vec::new()
    }
    // Runners (`gantry runner`).

    /// Claims the oldest queued job whose labels are all among `labels` for runner `runner`,
    /// waiting up to `wait` for one: the job with its pipeline file and the values of its
    /// secrets. `None`: none came.
    async fn claim_job(
        &self,
        _runner: &str,
        _labels: &[String],
        _wait: std::time::Duration,
    ) -> Result<Option<types::ClaimedJob>, ControlError> {
        Err(ControlError::unavailable(
            "this server hands no jobs to runners",
        ))
    }
    /// The files of the job's commit as a packed archive (tar.zst) on disk, and its digest.
    async fn job_source(
        &self,
        _job: &types::JobPayload,
    ) -> Result<(std::path::PathBuf, String), ControlError> {
        Err(ControlError::unavailable(
            "this server hands no jobs to runners",
        ))
    }
    /// How long a runner's claim lasts unrenewed.
    fn runner_lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(30)
    }
    /// Where uploads from runners are received before they are checked.
    fn runner_scratch(&self) -> std::path::PathBuf {
        std::env::temp_dir()
    }
    /// A runner said how job `id` ended (the server driving its run may be waiting).
    fn job_finished(&self, _id: i64) {}

    /// Status of one environment.
    async fn environment_status(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<types::EnvStatus, ControlError>;
    /// Status of every environment with releases, or of one project's.
    async fn environment_statuses(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<types::EnvStatus>, ControlError>;
}
