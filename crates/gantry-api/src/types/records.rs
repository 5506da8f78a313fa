//! Runs and their parts on the wire: what `GET /api/runs`, `/api/runs/{id}`, its logs and the
//! artifact list send. Converted from the store's records by the server, and back into them by
//! the CLI, whose renderers read the same records locally and remotely.

use gantry_engine::ports as store;
use gantry_model::{JobStatus, RunStatus, StageStatus, StepStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Field-for-field conversions between a store record and its wire twin, both ways.
macro_rules! twins {
    ($wire:ident <=> $record:path { $($field:ident),+ $(,)? }) => {
        impl From<&$record> for $wire {
            fn from(r: &$record) -> Self {
                Self { $($field: r.$field.clone().into()),+ }
            }
        }
        impl From<$wire> for $record {
            fn from(w: $wire) -> Self {
                Self { $($field: w.$field.into()),+ }
            }
        }
    };
}

/// One run of a project's pipeline. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Run {
    pub id: i64,
    pub project: String,
    /// The repository it ran from (a path or URL).
    pub repo: String,
    pub commit: String,
    pub branch: Option<String>,
    pub pipeline_file: String,
    /// `manual`, `webhook`, `poll`, `rerun`, `cli`.
    pub trigger: String,
    /// What `when:` rules judged: `push`, `tag`, `pull_request` or `manual`.
    #[serde(default)]
    pub event: String,
    /// The run's own variables, which its steps see (`GANTRY_TAG`, `GANTRY_PR`, …, and those
    /// given with `gantry trigger --var`). Not secret: never put a secret in one.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
    pub status: RunStatus,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    /// Who runs it (a server's or runner's owner name) while it runs.
    pub owner: Option<String>,
}
twins!(Run <=> store::RunRecord { id, project, repo, commit, branch, pipeline_file, trigger, event, vars, status, created_at, started_at, finished_at, error, owner });

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Stage {
    pub id: i64,
    pub run_id: i64,
    pub position: i64,
    pub name: String,
    /// `jobs` or `deploy`.
    pub kind: String,
    pub status: StageStatus,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub note: Option<String>,
}
twins!(Stage <=> store::StageRecord { id, run_id, position, name, kind, status, started_at, finished_at, note });

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Job {
    pub id: i64,
    pub run_id: i64,
    pub stage_id: i64,
    pub position: i64,
    pub name: String,
    pub status: JobStatus,
    /// The attempt it is at (retries count up from 1).
    pub attempt: i64,
    pub allow_failure: bool,
    pub exit_code: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    /// The jobs it waits for (`needs: [job]`): the run's graph.
    #[serde(default)]
    pub waits_for: Vec<String>,
}
twins!(Job <=> store::JobRecord { id, run_id, stage_id, position, name, status, attempt, allow_failure, exit_code, started_at, finished_at, error, waits_for });

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    pub id: i64,
    pub job_id: i64,
    pub attempt: i64,
    pub position: i64,
    pub name: String,
    pub status: StepStatus,
    pub exit_code: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}
twins!(Step <=> store::StepRecord { id, job_id, attempt, position, name, status, exit_code, started_at, finished_at });

/// An artifact a run made.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Artifact {
    pub id: i64,
    pub run_id: i64,
    pub job_id: i64,
    pub name: String,
    /// `sha256:` and 64 hex digits: the content's address in the artifact store.
    pub digest: String,
    pub size: i64,
    pub media_type: String,
    pub created_at: i64,
    /// When retention removed its content.
    pub removed_at: Option<i64>,
}
twins!(Artifact <=> store::ArtifactRecord { id, run_id, job_id, name, digest, size, media_type, created_at, removed_at });

/// A run with all its parts (`GET /api/runs/{id}`); a failed run carries its diagnosis.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunDetail {
    pub run: Run,
    pub stages: Vec<Stage>,
    pub jobs: Vec<Job>,
    pub steps: Vec<Step>,
    pub artifacts: Vec<Artifact>,
    /// Why it failed, as `GET /api/runs/{id}/diagnosis` answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<super::RunDiagnosis>,
}

impl From<&store::RunDetail> for RunDetail {
    fn from(d: &store::RunDetail) -> Self {
        Self {
            run: (&d.run).into(),
            stages: d.stages.iter().map(Into::into).collect(),
            jobs: d.jobs.iter().map(Into::into).collect(),
            steps: d.steps.iter().map(Into::into).collect(),
            artifacts: d.artifacts.iter().map(Into::into).collect(),
            diagnosis: None,
        }
    }
}

impl From<RunDetail> for store::RunDetail {
    fn from(d: RunDetail) -> Self {
        Self {
            run: d.run.into(),
            stages: d.stages.into_iter().map(Into::into).collect(),
            jobs: d.jobs.into_iter().map(Into::into).collect(),
            steps: d.steps.into_iter().map(Into::into).collect(),
            artifacts: d.artifacts.into_iter().map(Into::into).collect(),
        }
    }
}

/// `GET /api/runs`: newest first; `next_before` is the cursor of the next page, if any.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunPage {
    pub runs: Vec<Run>,
    pub next_before: Option<i64>,
}

/// Which stream a log line came from; `system` lines are gantry's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    System,
}

impl From<store::Stream> for LogStream {
    fn from(s: store::Stream) -> Self {
        match s {
            store::Stream::Stdout => Self::Stdout,
            store::Stream::Stderr => Self::Stderr,
            store::Stream::System => Self::System,
        }
    }
}

impl From<LogStream> for store::Stream {
    fn from(s: LogStream) -> Self {
        match s {
            LogStream::Stdout => Self::Stdout,
            LogStream::Stderr => Self::Stderr,
            LogStream::System => Self::System,
        }
    }
}

/// One log line; its `id` is the cursor (`after`, `Last-Event-ID`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    pub id: i64,
    pub job: String,
    pub attempt: i64,
    pub step: String,
    /// Its number within the step.
    pub line: i64,
    pub at: i64,
    pub stream: LogStream,
    /// Secrets are masked before a line is stored.
    pub text: String,
}
twins!(LogLine <=> store::LogRecord { id, job, attempt, step, line, at, stream, text });

/// `GET /api/runs/{id}/logs`: `next_after` is the cursor to ask from next.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    pub next_after: Option<i64>,
}

/// The last event of a live log: the run's final status.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LogEnd {
    pub status: RunStatus,
}

/// An artifact with where it came from (`GET /api/artifacts`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactListing {
    #[serde(flatten)]
    pub artifact: Artifact,
    pub project: String,
    pub branch: Option<String>,
    pub commit: String,
    pub job: String,
    /// Why it is kept past retention, one reason per pin.
    pub pins: Vec<String>,
}

impl From<&store::ArtifactListing> for ArtifactListing {
    fn from(a: &store::ArtifactListing) -> Self {
        Self {
            artifact: (&a.artifact).into(),
            project: a.project.clone(),
            branch: a.branch.clone(),
            commit: a.commit.clone(),
            job: a.job.clone(),
            pins: a.pins.clone(),
        }
    }
}

/// `GET /api/artifacts` and `GET /api/runs/{id}/artifacts`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactPage<T> {
    pub artifacts: Vec<T>,
}
