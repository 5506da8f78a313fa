//! The ports: small traits the adapters implement, and the records that cross them. The state
//! store has a SQLite implementation today and a PostgreSQL one next; nothing here assumes
//! either. Timestamps are Unix milliseconds (UTC); ids are 64-bit integers the store assigns.

use async_trait::async_trait;
use gantry_model::{JobStatus, Role, RunStatus, StageStatus, StepStatus};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub type Millis = i64;

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
    pub status: RunStatus,
    pub created_at: Millis,
    /// The owner lock of the process running it, for finding runs whose process died.
    pub owner: Option<String>,
    /// Stages in order: name, kind (`jobs` or `deploy`), and job names with `allow_failure`.
    pub stages: Vec<NewStage>,
}

#[derive(Debug, Clone)]
pub struct NewStage {
    pub name: String,
    pub kind: &'static str,
    pub jobs: Vec<(String, bool)>,
}

/// The ids the store gave a new run and its parts, by position.
#[derive(Debug, Clone)]
pub struct RunIds {
    pub run: i64,
    pub stages: Vec<i64>,
    pub jobs: Vec<Vec<i64>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: i64,
    pub project: String,
    pub repo: String,
    pub commit: String,
    pub branch: Option<String>,
    pub pipeline_file: String,
    pub trigger: String,
    pub status: RunStatus,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub error: Option<String>,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub id: i64,
    pub run_id: i64,
    pub position: i64,
    pub name: String,
    pub kind: String,
    pub status: StageStatus,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: i64,
    pub run_id: i64,
    pub stage_id: i64,
    pub position: i64,
    pub name: String,
    pub status: JobStatus,
    pub attempt: i64,
    pub allow_failure: bool,
    pub exit_code: Option<i64>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub id: i64,
    pub job_id: i64,
    pub attempt: i64,
    pub position: i64,
    pub name: String,
    pub status: StepStatus,
    pub exit_code: Option<i64>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines gantry itself writes into a step's log (retries, timeouts, kills).
    System,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }

    pub fn parse(s: &str) -> Stream {
        match s {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            _ => Stream::System,
        }
    }
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogRecord {
    /// Increases with every line stored: a cursor for following logs.
    pub id: i64,
    pub job: String,
    pub attempt: i64,
    pub step: String,
    pub line: i64,
    pub at: Millis,
    pub stream: Stream,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub id: i64,
    pub run_id: i64,
    pub job_id: i64,
    pub name: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: i64,
    pub media_type: String,
    pub created_at: Millis,
    /// When retention deleted its object (the row stays as history).
    pub removed_at: Option<Millis>,
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

/// A run waiting in the queue: its pipeline is read when a worker takes it.
#[derive(Debug, Clone)]
pub struct QueuedRun {
    pub project: String,
    pub repo: String,
    pub commit: String,
    pub branch: Option<String>,
    pub trigger: String,
    /// `project/branch/commit` for runs from polls and webhooks: the store refuses a second run
    /// with the same key. `None` for manual triggers and re-runs.
    pub trigger_key: Option<String>,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub id: i64,
    pub name: String,
    pub repo: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: Millis,
}

/// A share link of one artifact version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareRecord {
    pub id: i64,
    pub digest: String,
    /// The name the download is saved under.
    pub file_name: String,
    pub media_type: String,
    pub expires_at: Millis,
    pub revoked_at: Option<Millis>,
    pub created_at: Millis,
    pub created_by: String,
}

/// A run with all its parts, for `gantry show`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDetail {
    pub run: RunRecord,
    pub stages: Vec<StageRecord>,
    pub jobs: Vec<JobRecord>,
    pub steps: Vec<StepRecord>,
    pub artifacts: Vec<ArtifactRecord>,
}

/// Durable state of runs. Implementations must make every method atomic (a crash between two
/// calls leaves the state of the first), and keep uniqueness in the schema, not in the caller.
#[async_trait]
pub trait StateStore: Send + Sync {
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
    async fn record_artifact(
        &self,
        run: i64,
        job: i64,
        name: &str,
        stored: &StoredArtifact,
        at: Millis,
    ) -> anyhow::Result<ArtifactRecord>;
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

    // The queue.

    /// Queues a run; `None` when a run with the same trigger key exists (nothing is queued).
    async fn enqueue_run(&self, run: QueuedRun) -> anyhow::Result<Option<i64>>;
    /// Cancels queued runs of the same project and branch older than `newer`; returns their ids.
    async fn supersede_queued(
        &self,
        project: &str,
        branch: &str,
        newer: i64,
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
    async fn count_runs_by_status(&self) -> anyhow::Result<Vec<(RunStatus, i64)>>;

    // Projects and tokens.

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

    // Diagnoses.

    /// Keeps the diagnosis of a failed run (JSON, as `gantry why --json` prints it).
    async fn set_run_diagnosis(&self, run: i64, json: &str) -> anyhow::Result<()>;
    async fn run_diagnosis(&self, run: i64) -> anyhow::Result<Option<String>>;

    // Artifacts and their share links.

    /// The newest artifact named `name` (of run `run` when given), or the one with `digest`.
    async fn find_artifact(
        &self,
        name: Option<&str>,
        run: Option<i64>,
        digest: Option<&str>,
    ) -> anyhow::Result<Option<ArtifactRecord>>;
    async fn list_artifacts(
        &self,
        run: Option<i64>,
        limit: i64,
    ) -> anyhow::Result<Vec<ArtifactRecord>>;
    async fn create_share(&self, share: &ShareRecord) -> anyhow::Result<ShareRecord>;
    async fn share(&self, id: i64) -> anyhow::Result<Option<ShareRecord>>;
    /// Revokes a share; returns whether it existed.
    async fn revoke_share(&self, id: i64, at: Millis) -> anyhow::Result<bool>;
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
    /// Whether any artifact row not removed still refers to `digest`.
    async fn digest_in_use(&self, digest: &str) -> anyhow::Result<bool>;
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

/// Content-addressed artifact storage. `store` packs the given workspace paths (a directory or
/// several paths become a tar.zst; one file is kept as is), hashes while packing, and makes the
/// object visible under its digest only once it is complete: a failure leaves nothing behind.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Refuses (with an error naming the path) any path that leaves `workspace`, through `..` or
    /// a symlink; and a pattern that matches nothing.
    async fn store(&self, workspace: &Path, paths: &[String]) -> anyhow::Result<StoredArtifact>;
    async fn exists(&self, digest: &str) -> anyhow::Result<bool>;
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
    /// Where the object is on this machine, if this store keeps it on local disk.
    fn local_path(&self, digest: &str) -> Option<std::path::PathBuf>;
    /// Deletes the object of `digest`; returns the bytes freed (0 if it was not there).
    async fn delete(&self, digest: &str) -> anyhow::Result<u64>;
}
