//! The ports: small traits the adapters implement, and what crosses them (the records, which are
//! nouns, live in `gantry_model::records` and are re-exported here). The state
//! store has a SQLite implementation today and a PostgreSQL one next; nothing here assumes
//! either. Timestamps are Unix milliseconds (UTC); ids are 64-bit integers the store assigns.

use crate::release::{ReleaseKind, ReleaseState};
use async_trait::async_trait;
use gantry_model::{JobStatus, Role, RunStatus, StageStatus, StepStatus};
use std::path::Path;

mod runners;
pub use runners::*;

pub use gantry_model::records::{
    ArtifactListing, ArtifactRecord, CacheRecord, CanaryProgress, EnvDriver, EnvLock, EnvRequest,
    JobClaim, JobRecord, LeaseRenewal, LogRecord, Millis, NewQueuedJob, OwnerLease,
    PresignedUpload, ProjectRecord, QueuedJob, QueuedJobState, ReleaseEvent, ReleaseRecord,
    RunDetail, RunRecord, SessionRecord, ShareRecord, StageRecord, StepRecord, Stream, TokenRecord,
};

/// Now, in [`Millis`]: the one place adapters read the clock for timestamps they store.
/// (The engine's pure code never calls it: times come in with events.)
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub project: String,
    pub repo: String,
    pub commit: String,
    pub branch: Option<String>,
    pub pipeline_file: String,
    /// What started it: `cli`, `poll`, `webhook`, `manual`.
    pub trigger: String,
    /// What `when:` rules judge (`push`, `tag`, `pull_request`, `manual`).
    pub event: String,
    /// The run's own variables ([`gantry_model::RunRecord::vars`]).
    pub vars: std::collections::BTreeMap<String, String>,
    pub status: RunStatus,
    pub created_at: Millis,
    /// The owner lock of the process running it, for finding runs whose process died.
    pub owner: Option<String>,
    /// Stages in order: name, kind (`jobs` or `deploy`), and job names with `allow_failure`.
    pub stages: Vec<NewStage>,
}

/// A job of a new run's plan.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub name: String,
    pub allow_failure: bool,
    /// The jobs it waits for (`needs: [job]`), for the run's graph.
    pub waits_for: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewStage {
    pub name: String,
    pub kind: &'static str,
    pub jobs: Vec<NewJob>,
}

/// The ids the store gave a new run and its parts, by position.
#[derive(Debug, Clone)]
pub struct RunIds {
    pub run: i64,
    pub stages: Vec<i64>,
    pub jobs: Vec<Vec<i64>>,
}

/// One log line, already masked.
#[derive(Debug, Clone)]
pub struct NewLogLine {
    pub step_id: i64,
    /// 1-based line number within the step.
    pub line: i64,
    pub at: Millis,
    pub stream: Stream,
    pub text: String,
}

/// Which artifact: the newest one matching every field that is set.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArtifactQuery<'a> {
    pub project: Option<&'a str>,
    pub name: Option<&'a str>,
    pub run: Option<i64>,
    pub digest: Option<&'a str>,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub project: Option<String>,
    pub branch: Option<String>,
    pub status: Option<RunStatus>,
    /// Only runs with a smaller id (paging backwards from the newest).
    pub before: Option<i64>,
    pub limit: i64,
}

/// A store refused a write because it would break a uniqueness rule (a token name taken, say);
/// callers tell it from other failures by its type (`err.is::<Conflict>()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict(pub String);

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Conflict {}

/// A run waiting in the queue: its pipeline is read when a worker takes it.
#[derive(Debug, Clone)]
pub struct QueuedRun {
    pub project: String,
    pub repo: String,
    pub commit: String,
    pub branch: Option<String>,
    pub trigger: String,
    /// What `when:` rules judge (`push`, `tag`, `pull_request`, `manual`); a re-run keeps its
    /// original's.
    pub event: String,
    /// The run's own variables; a re-run keeps its original's.
    pub vars: std::collections::BTreeMap<String, String>,
    /// `project/branch/commit` for runs from polls and webhooks: the store refuses a second run
    /// with the same key. `None` for manual triggers and re-runs.
    pub trigger_key: Option<String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone)]
pub struct NewRelease {
    pub project: String,
    pub environment: String,
    pub kind: ReleaseKind,
    /// For a rollback: the deploy release it serves from. `None` for a deploy (itself).
    pub source: Option<i64>,
    pub artifact: String,
    pub digest: String,
    pub run_id: Option<i64>,
    pub commit: Option<String>,
    pub created_by: String,
    pub created_at: Millis,
    pub reason: Option<String>,
}

/// A deployment a pipeline's deploy stage asks for.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub project: String,
    pub environment: String,
    pub artifact: String,
    pub run: Option<i64>,
    pub digest: Option<String>,
    pub force: bool,
    pub requested_by: String,
    /// Overrides the environment's `bake` for this deployment (a deploy stage's `bake`).
    pub bake_ms: Option<u64>,
}

/// How a deployment ended, for the run that asked for it.
#[derive(Debug, Clone)]
pub struct DeployReport {
    pub release: Option<ReleaseRecord>,
    pub succeeded: bool,
    /// What went wrong (or a note), in the user's terms.
    pub message: String,
}

/// Carries out deployments for the runner's deploy stages: in the server, the deploy manager
/// itself; in `gantry run`, an HTTP client of the server.
#[async_trait]
pub trait Deployer: Send + Sync {
    async fn deploy(&self, request: DeployRequest) -> anyhow::Result<DeployReport>;
}

/// A run waiting at an approval stage.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    pub run: i64,
    pub project: String,
    pub branch: Option<String>,
    /// The stage's name, which a newer run's wait must share to supersede this one.
    pub stage: String,
    pub spec: gantry_model::ApprovalSpec,
}

/// How a wait ended, and who or what ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalDecision {
    Approved { by: String, at: Millis },
    TimedOut,
    Superseded { by_run: i64 },
}

/// Gives the runner's approval stages their decision: in the server, approvals by API tokens
/// (`POST /api/runs/{id}/approve`). Lifecycle: `wait` is called once per approval stage of a
/// run and returns when the stage is decided; dropping the future (the run was cancelled)
/// withdraws the request.
#[async_trait]
pub trait Approvals: Send + Sync {
    async fn wait(&self, request: ApprovalRequest) -> anyhow::Result<ApprovalDecision>;
}

/// The stores of gantry's state, one port per thing stored; every method of each is atomic (a
/// crash between two calls leaves the state of the first) and keeps uniqueness in the schema,
/// not in the caller. A backend implements all five; [`StateStore`] is their union, so code
/// that needs everything holds one `Arc<dyn StateStore>`, and code that needs one part can be
/// handed just that part (`Arc<dyn ReleaseStore>`: trait upcasting). The contract every backend
/// must meet is the suite in `gantry-store/tests/contract/`.
///
/// Runs with their stages, jobs, steps, logs and diagnoses.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates the run with its stages and jobs (all `pending`) in one transaction.
    async fn create_run(&self, run: NewRun) -> anyhow::Result<RunIds>;
    async fn set_run_status(
        &self,
        run: i64,
        status: RunStatus,
        at: Millis,
        error: Option<&str>,
    ) -> anyhow::Result<()>;
    async fn set_stage_status(
        &self,
        stage: i64,
        status: StageStatus,
        at: Millis,
        note: Option<&str>,
    ) -> anyhow::Result<()>;
    /// Records a job's new status; `attempt` is the attempt it now is at.
    async fn set_job_status(
        &self,
        job: i64,
        status: JobStatus,
        attempt: u32,
        at: Millis,
        exit_code: Option<i32>,
        error: Option<&str>,
    ) -> anyhow::Result<()>;
    async fn start_step(
        &self,
        job: i64,
        attempt: u32,
        position: usize,
        name: &str,
        at: Millis,
    ) -> anyhow::Result<i64>;
    async fn finish_step(
        &self,
        step: i64,
        status: StepStatus,
        exit_code: Option<i32>,
        at: Millis,
    ) -> anyhow::Result<()>;
    /// Appends lines in one transaction.
    async fn append_logs(&self, lines: &[NewLogLine]) -> anyhow::Result<()>;
    /// Marks a run that nobody is running any more, and its unfinished parts, `interrupted`.
    async fn mark_interrupted(&self, run: i64, at: Millis) -> anyhow::Result<()>;
    async fn list_runs(&self, filter: &RunFilter) -> anyhow::Result<Vec<RunRecord>>;
    async fn run_detail(&self, run: i64) -> anyhow::Result<Option<RunDetail>>;
    /// Log lines of a run (optionally one job), with id greater than `after`, oldest first.
    async fn logs(
        &self,
        run: i64,
        job: Option<&str>,
        after: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<LogRecord>>;

    /// Log lines of a run (optionally one job) with id less than `before` (`None`: from the
    /// newest), newest first: the tail of a log, and pages back from it, without reading the
    /// rest however long it is.
    async fn logs_before(
        &self,
        run: i64,
        job: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> anyhow::Result<Vec<LogRecord>>;
    /// The id of line `line` (1-based) of step `step` of job `job` in the job's latest attempt
    /// that has the step: where a diagnosis's evidence points into the log.
    async fn log_line_id(
        &self,
        run: i64,
        job: &str,
        step: &str,
        line: i64,
    ) -> anyhow::Result<Option<i64>>;

    /// Removes the log lines of every run that finished before `before` (the runs, their
    /// steps and diagnoses stay) and records when; returns (runs, lines) removed. Runs still
    /// going are never touched.
    async fn remove_logs_before(&self, before: Millis, at: Millis) -> anyhow::Result<(u64, u64)>;
    /// When retention removed the run's log lines, if it did.
    async fn logs_removed_at(&self, run: i64) -> anyhow::Result<Option<Millis>>;

    /// Keeps the diagnosis of a failed run (JSON, as `gantry why --json` prints it).
    async fn set_run_diagnosis(&self, run: i64, json: &str) -> anyhow::Result<()>;
    async fn run_diagnosis(&self, run: i64) -> anyhow::Result<Option<String>>;
}

/// The queue of runs waiting for a worker: enqueued once per trigger key, claimed exactly once
/// by an owner whose lease says whether it still lives.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Registers an owner with its lease (a second call for the same name replaces it).
    async fn register_owner(&self, owner: &OwnerLease) -> anyhow::Result<()>;
    /// Extends `name`'s lease to `until`; false when its row is gone.
    async fn renew_owner(&self, name: &str, until: Millis) -> anyhow::Result<bool>;
    /// The owner's row (its lease), if it registered and has not left.
    async fn owner(&self, name: &str) -> anyhow::Result<Option<OwnerLease>>;
    /// An owner that stops on purpose removes its row.
    async fn remove_owner(&self, name: &str) -> anyhow::Result<()>;
    /// Queues a run; `None` when a run with the same trigger key exists (nothing is queued).
    async fn enqueue_run(&self, run: QueuedRun) -> anyhow::Result<Option<i64>>;
    /// The run a trigger key made, if any (what a redelivered webhook is answered with).
    async fn run_by_trigger_key(&self, key: &str) -> anyhow::Result<Option<i64>>;
    /// Cancels queued runs of the same project and branch older than `newer`; returns their ids.
    async fn supersede_queued(
        &self,
        project: &str,
        branch: &str,
        newer: i64,
        at: Millis,
    ) -> anyhow::Result<Vec<i64>>;
    /// Cancels queued runs older than `newer` whose trigger key starts with `prefix` (the older
    /// commits of one pull request: `project/pulls/N/`), saying `why`; returns their ids.
    async fn supersede_queued_by_key(
        &self,
        prefix: &str,
        newer: i64,
        why: &str,
        at: Millis,
    ) -> anyhow::Result<Vec<i64>>;
    /// Takes the oldest queued run, atomically (two workers never take the same run), marking it
    /// running and owned by `owner`.
    async fn claim_next_run(&self, owner: &str, at: Millis) -> anyhow::Result<Option<RunRecord>>;
    /// Records the pipeline of a claimed run: its file, stages and jobs.
    async fn attach_plan(
        &self,
        run: i64,
        pipeline_file: &str,
        stages: &[NewStage],
    ) -> anyhow::Result<RunIds>;
    /// Cancels a run if it is still queued; returns whether it was.
    async fn cancel_queued(&self, run: i64, at: Millis) -> anyhow::Result<bool>;
    /// Asks the owner of a running run to cancel it (a cancel that came through another
    /// process); returns whether the run is running.
    async fn request_cancel(&self, run: i64, at: Millis) -> anyhow::Result<bool>;
    /// The running runs of `owner` whose cancel was asked for.
    async fn cancel_requests(&self, owner: &str) -> anyhow::Result<Vec<i64>>;
    async fn count_runs_by_status(&self) -> anyhow::Result<Vec<(RunStatus, i64)>>;
    /// Wake-ups for idle queue workers from every process sharing the store: the stream yields
    /// whenever a run may have been queued (by this process or another), and once after its
    /// connection was lost and made again (a signal may have been missed meanwhile). It ends
    /// when the store is closed. `None`: this store has no such signal; workers poll.
    async fn queue_signals(&self) -> anyhow::Result<Option<Signals>>;
}

/// A stream of wake-ups (see [`QueueStore::queue_signals`]).
pub type Signals = std::pin::Pin<Box<dyn futures_core::Stream<Item = ()> + Send>>;

/// Projects, API tokens (hashes only) and the dashboard's sessions (hashes of their cookies).
#[async_trait]
pub trait ProjectStore: Send + Sync {
    async fn upsert_project(&self, name: &str, repo: &str) -> anyhow::Result<ProjectRecord>;
    async fn list_projects(&self) -> anyhow::Result<Vec<ProjectRecord>>;
    /// Stores a token's hash under a unique name.
    async fn create_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        at: Millis,
    ) -> anyhow::Result<TokenRecord>;
    async fn token_by_hash(&self, hash: &str) -> anyhow::Result<Option<TokenRecord>>;
    /// Stores a new session (and forgets every expired one).
    async fn create_session(&self, session: &SessionRecord) -> anyhow::Result<()>;
    /// The session whose cookie hashes to `id_hash`, unless it has expired by `now`.
    async fn session(&self, id_hash: &str, now: Millis) -> anyhow::Result<Option<SessionRecord>>;
    /// Ends a session (logout); ending one that is gone is fine.
    async fn remove_session(&self, id_hash: &str) -> anyhow::Result<()>;
    /// Removes the session whose cookie hashes to `id_hash` and returns it, unless it has
    /// expired by `now`: of callers racing for one, only one gets it (one-time login links).
    async fn take_session(
        &self,
        id_hash: &str,
        now: Millis,
    ) -> anyhow::Result<Option<SessionRecord>>;
}

/// The index of artifacts (the bytes are in the [`ArtifactStore`]), their share links and pins.
#[async_trait]
pub trait ArtifactIndex: Send + Sync {
    async fn record_artifact(
        &self,
        run: i64,
        job: i64,
        name: &str,
        stored: &StoredArtifact,
        at: Millis,
    ) -> anyhow::Result<ArtifactRecord>;
    /// The newest artifact named `name` of `project` (of `branch` when given) from a run that
    /// succeeded, and that retention has not removed.
    async fn latest_project_artifact(
        &self,
        project: &str,
        name: &str,
        branch: Option<&str>,
    ) -> anyhow::Result<Option<ArtifactRecord>>;
    /// The newest artifact that matches every field `query` sets.
    async fn find_artifact(
        &self,
        query: &ArtifactQuery<'_>,
    ) -> anyhow::Result<Option<ArtifactRecord>>;
    async fn list_artifacts(
        &self,
        project: Option<&str>,
        run: Option<i64>,
        limit: i64,
    ) -> anyhow::Result<Vec<ArtifactListing>>;
    async fn create_share(&self, share: &ShareRecord) -> anyhow::Result<ShareRecord>;
    async fn share(&self, id: i64) -> anyhow::Result<Option<ShareRecord>>;
    /// Revokes a share; returns whether it existed.
    async fn revoke_share(&self, id: i64, at: Millis) -> anyhow::Result<bool>;
    /// The share-link key kept here for every server on this store: the stored one, else
    /// `candidate`, stored now (the first server to ask gives it; the others get it).
    async fn share_key_or(&self, candidate: &[u8], at: Millis) -> anyhow::Result<Vec<u8>>;
    /// The stored share-link key; `None` before any was stored.
    async fn stored_share_key(&self) -> anyhow::Result<Option<Vec<u8>>>;
    /// Replaces the stored share-link key: links signed with the old one stop working.
    async fn set_share_key(&self, key: &[u8], at: Millis) -> anyhow::Result<()>;
    /// Pins an artifact version for `reason` (idempotent).
    async fn pin(&self, digest: &str, reason: &str, at: Millis) -> anyhow::Result<()>;
    /// Removes a pin; returns whether it existed.
    async fn unpin(&self, digest: &str, reason: &str) -> anyhow::Result<bool>;
    /// The reasons an artifact version is pinned.
    async fn pins(&self, digest: &str) -> anyhow::Result<Vec<String>>;
    /// Artifacts retention would remove: not pinned, created before `cutoff`, and not among the
    /// artifacts of the newest `keep_runs` runs (that made artifacts) of their project and branch.
    async fn retention_candidates(
        &self,
        keep_runs: i64,
        cutoff: Millis,
    ) -> anyhow::Result<Vec<ArtifactRecord>>;
    /// Marks artifact rows removed (their history stays).
    async fn mark_removed(&self, ids: &[i64], at: Millis) -> anyhow::Result<()>;
    /// Whether any artifact row not removed, or any cache, still refers to `digest`.
    async fn digest_in_use(&self, digest: &str) -> anyhow::Result<bool>;

    /// The cache of `project` under `key`, else the newest whose key starts with the first of
    /// `prefixes` that any key starts with.
    async fn find_cache(
        &self,
        project: &str,
        key: &str,
        prefixes: &[String],
    ) -> anyhow::Result<Option<CacheRecord>>;
    /// Records a cache; `false` (nothing changed) when the project has one under the key.
    async fn save_cache(&self, cache: &CacheRecord) -> anyhow::Result<bool>;
    async fn touch_cache(&self, id: i64, at: Millis) -> anyhow::Result<()>;
    /// The caches of `project` (all projects' when `None`), least recently used first.
    async fn caches(&self, project: Option<&str>) -> anyhow::Result<Vec<CacheRecord>>;
    /// Forgets a cache (its object is the caller's to delete when nothing else uses it).
    async fn remove_cache(&self, id: i64) -> anyhow::Result<()>;
}

/// Releases of environments (the history only grows), their events, and deployment locks with
/// leases.
#[async_trait]
pub trait ReleaseStore: Send + Sync {
    /// Creates the next release of its environment (state `deploying`) with a first event.
    async fn create_release(&self, release: NewRelease) -> anyhow::Result<ReleaseRecord>;
    /// Moves a release to `state` (recording `reason` and an event).
    async fn set_release_state(
        &self,
        id: i64,
        state: ReleaseState,
        reason: Option<&str>,
        at: Millis,
    ) -> anyhow::Result<()>;
    /// In one transaction: the live release of `to`'s environment (if any) becomes `previous`
    /// and `to` becomes live. Never leaves an environment with two live releases or none.
    async fn switch_live(
        &self,
        to: i64,
        previous: ReleaseState,
        reason: Option<&str>,
        at: Millis,
    ) -> anyhow::Result<()>;
    async fn add_release_event(
        &self,
        release: i64,
        kind: &str,
        message: &str,
        at: Millis,
    ) -> anyhow::Result<()>;
    async fn mark_retired(&self, id: i64, at: Millis) -> anyhow::Result<()>;
    /// An environment's releases, newest first.
    async fn releases(
        &self,
        project: &str,
        environment: &str,
    ) -> anyhow::Result<Vec<ReleaseRecord>>;
    /// Events of a release, oldest first.
    async fn release_events(&self, release: i64) -> anyhow::Result<Vec<ReleaseEvent>>;
    /// Every environment that has releases: (project, environment).
    async fn environments(&self) -> anyhow::Result<Vec<(String, String)>>;
    /// Releases in state `deploying` or `canary` anywhere (left by a process that stopped).
    async fn deploying_releases(&self) -> anyhow::Result<Vec<ReleaseRecord>>;
    /// Takes the environment's lock, or returns who holds it. An expired lease is taken over.
    async fn acquire_env_lock(&self, lock: &EnvLock) -> anyhow::Result<Result<(), EnvLock>>;
    /// Extends the lease of a lock `owner` holds; false if it does not hold it any more.
    async fn renew_env_lock(
        &self,
        project: &str,
        environment: &str,
        owner: &str,
        expires_at: Millis,
    ) -> anyhow::Result<bool>;
    async fn release_env_lock(
        &self,
        project: &str,
        environment: &str,
        owner: &str,
    ) -> anyhow::Result<()>;
    async fn env_locks(&self) -> anyhow::Result<Vec<EnvLock>>;
    /// Makes `owner` the environment's driver until `until` when no one drives it, its driver's
    /// lease has passed at `at`, or `owner` drives it already; else returns the driver.
    async fn claim_driver(
        &self,
        project: &str,
        environment: &str,
        owner: &str,
        until: Millis,
        at: Millis,
    ) -> anyhow::Result<Result<(), EnvDriver>>;
    /// Extends the lease of every environment `owner` drives.
    async fn renew_drivers(&self, owner: &str, until: Millis) -> anyhow::Result<()>;
    /// Asks the environment's driver to hand it over to `to`.
    async fn request_handover(
        &self,
        project: &str,
        environment: &str,
        to: &str,
    ) -> anyhow::Result<()>;
    /// `owner` lets go of the environment (nothing happens if it does not drive it).
    async fn release_driver(
        &self,
        project: &str,
        environment: &str,
        owner: &str,
    ) -> anyhow::Result<()>;
    async fn env_drivers(&self) -> anyhow::Result<Vec<EnvDriver>>;
    /// Keeps where the canary release `release` is (`None` clears it).
    async fn set_canary_progress(
        &self,
        release: i64,
        progress: Option<CanaryProgress>,
    ) -> anyhow::Result<()>;
    /// Where the canary release `release` was last kept, if anywhere.
    async fn canary_progress(&self, release: i64) -> anyhow::Result<Option<CanaryProgress>>;
    /// Asks the environment's driver, whichever server it is, to carry out `asked`; the id of
    /// the request, for its answer.
    async fn ask_driver(
        &self,
        project: &str,
        environment: &str,
        asked: &str,
        by: &str,
        at: Millis,
    ) -> anyhow::Result<i64>;
    /// The requests not taken yet of the environments `owner` drives, oldest first, each taken
    /// (by this call only: a second call does not return them again). Answers older than ten
    /// minutes that nobody read are removed.
    async fn take_env_requests(&self, owner: &str, at: Millis) -> anyhow::Result<Vec<EnvRequest>>;
    /// The driver's answer to request `id`.
    async fn answer_env_request(
        &self,
        id: i64,
        ok: bool,
        answer: &str,
        at: Millis,
    ) -> anyhow::Result<()>;
    /// Request `id` as it is now (`None` once forgotten).
    async fn env_request(&self, id: i64) -> anyhow::Result<Option<EnvRequest>>;
    /// Removes request `id` (its asker read the answer).
    async fn forget_env_request(&self, id: i64) -> anyhow::Result<()>;
}

/// Everything gantry keeps: the union of the six stores, implemented by every backend, with
/// the backend's lifecycle: opened from a URL (`gantry_store::open_state`), used from any
/// number of tasks, then [`close`](StateStore::close)d once at the end.
#[async_trait]
pub trait StateStore:
    RunStore + QueueStore + ProjectStore + ArtifactIndex + ReleaseStore + JobQueueStore
{
    /// Waits for writes in flight and closes the backend's connections; calls after it fail.
    async fn close(&self);
}

/// What the artifact store made of a job's declared paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// False when identical content was already stored (nothing new was kept).
    pub newly_stored: bool,
}

/// Bytes read from a store, in chunks.
pub type ByteStream = std::pin::Pin<
    Box<dyn futures_core::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static>,
>;

/// Content-addressed artifact storage. `store` packs the given workspace paths (a directory or
/// several paths become a tar.zst; one file is kept as is), hashes while packing, and makes the
/// object visible under its digest only once it is complete: a failure leaves nothing behind.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Refuses (with an error naming the path) any path that leaves `workspace`, through `..` or
    /// a symlink; and a pattern that matches nothing.
    async fn store(&self, workspace: &Path, paths: &[String]) -> anyhow::Result<StoredArtifact>;
    /// Adds an object packed elsewhere (by a runner), from the complete file `file`: checked
    /// against `digest` first (a mismatch is an error and nothing is stored), visible under it
    /// only once whole. False when the store had it already.
    async fn import(&self, digest: &str, file: &Path) -> anyhow::Result<bool>;
    async fn exists(&self, digest: &str) -> anyhow::Result<bool>;
    /// Reads the whole stored object and checks it against `digest`: an error says whether it
    /// is missing or corrupt.
    async fn verify(&self, digest: &str) -> anyhow::Result<()>;
    /// The check before a rollback, which must stay fast: the local store hashes the object (a
    /// local read); a remote store asks whether it is there (reading gigabytes back from a
    /// bucket would make rollback slow; the bucket keeps its own checksums, and unpacking
    /// verifies the digest anyway).
    async fn confirm(&self, digest: &str) -> anyhow::Result<()> {
        self.verify(digest).await
    }
    /// A cheap identity of the stored object as it is now, read without its content (the local
    /// store: size, change time and file id). A kept release records it when it is
    /// verified; a rollback hashes the object again only when the stamp differs. `None`: this
    /// store has no such thing, and `confirm` is asked every time (a HEAD for a bucket).
    async fn stamp(&self, _digest: &str) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    /// Checks the stored object against `digest` first (a corrupt or missing object is an error
    /// and nothing is written), then writes its content under `dest`: a tar.zst is unpacked
    /// there, a single file is written to `dest/file_name`.
    async fn unpack(
        &self,
        digest: &str,
        media_type: &str,
        dest: &Path,
        file_name: &str,
    ) -> anyhow::Result<()>;
    /// The stored object's size, `None` when there is no object under `digest`.
    async fn size(&self, digest: &str) -> anyhow::Result<Option<u64>>;
    /// Streams `len` bytes of the stored object from `start` (nothing is checked: callers that
    /// need the digest checked hash what they read, see `unpack` and `verify`).
    async fn read(&self, digest: &str, start: u64, len: u64) -> anyhow::Result<ByteStream>;
    /// A URL of the backing store itself that fetches the object with a plain GET until
    /// `expires_in` has passed (an S3 presigned URL), answering with `file_name` as the
    /// download's name; `None` when the store cannot make one.
    async fn presign(
        &self,
        digest: &str,
        expires_in: std::time::Duration,
        file_name: &str,
    ) -> anyhow::Result<Option<String>>;
    /// A PUT that uploads the object of `digest` straight to the backing store until
    /// `expires_in` has passed (an S3 presigned URL that binds the body's SHA-256); `None` when
    /// objects reach the store only through this process.
    async fn presign_upload(
        &self,
        _digest: &str,
        _expires_in: std::time::Duration,
    ) -> anyhow::Result<Option<PresignedUpload>> {
        Ok(None)
    }
    /// Where the objects are, for messages: a directory or `s3://bucket/prefix`.
    fn location(&self) -> String;
    /// Deletes the object of `digest`; returns the bytes freed (0 if it was not there).
    async fn delete(&self, digest: &str) -> anyhow::Result<u64>;
}
