//! What runners (`gantry runner`) and the server say to each other: a claim and the job it
//! hands out, lease renewals, the calls an attempt makes to record what it does, and how it
//! ended.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The header a runner sends its lease in, on every call about its job.
pub const LEASE_HEADER: &str = "x-gantry-lease";
/// The header the source archive's digest comes in.
pub const DIGEST_HEADER: &str = "x-gantry-digest";

/// `POST /api/runner/claim`: a runner asks for a job.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClaimBody {
    /// The runner's name (unique among runners: it shows on the jobs it ran).
    pub runner: String,
    /// Its labels: it gets jobs whose `runs_on:` labels are all among them.
    #[serde(default)]
    pub labels: Vec<String>,
    /// How long the server may hold the request open waiting for a job (at most 30 s).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// What the server stores beside a job it queued for runners: everything of the job but its
/// secrets' values.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobPayload {
    pub stage: usize,
    pub job: usize,
    pub job_name: String,
    pub project: String,
    pub commit: String,
    pub branch: Option<String>,
    pub event: String,
    pub vars: BTreeMap<String, String>,
    pub pipeline_file: String,
    pub subdir: Option<String>,
    /// The names of the secrets it gets.
    pub secrets: Vec<String>,
    pub secrets_withheld: Option<String>,
}

/// A job handed to a runner.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ClaimedJob {
    /// The queued job's id: the `{id}` of the calls about it.
    pub id: i64,
    /// The lease: sent back in `x-gantry-lease` on every call about this job.
    pub lease: String,
    /// How long the lease lasts unrenewed.
    pub lease_ms: u64,
    pub run_id: i64,
    pub job_id: i64,
    pub attempt: u32,
    pub payload: JobPayload,
    /// The pipeline file at the commit, as the server read it.
    pub pipeline: String,
    /// The values of the secrets it gets (only ever sent to the runner that runs it).
    pub secrets: BTreeMap<String, String>,
    pub log_cap: u64,
    pub cache_cap: u64,
    pub kill_grace_ms: u64,
}

/// The answer to a lease renewal.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Heartbeat {
    /// Stop the job: its run was cancelled or ended.
    pub cancel: bool,
    pub lease_ms: u64,
}

/// `POST /api/runner/jobs/{id}/finish`: how the attempt ended.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct JobEnd {
    /// `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// `POST /api/runner/jobs/{id}/objects/{digest}/upload`: how the runner gets an object it
/// packed into the artifact store.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct UploadOffer {
    /// The store has it already: nothing to upload.
    pub present: bool,
    /// Upload it straight to the store with this PUT (an S3 presigned URL); `None`: PUT it to
    /// `/api/runner/jobs/{id}/objects/{digest}` on this server.
    pub put: Option<DirectUpload>,
}

/// `POST /api/runner/jobs/{id}/objects/{digest}/download`: where a runner fetches an object.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DownloadOffer {
    /// A GET straight to the artifact store (an S3 presigned URL); `None`: GET it from
    /// `/api/runner/jobs/{id}/objects/{digest}` on this server.
    pub url: Option<String>,
}

/// A PUT straight to the artifact store: the URL and the headers to send as they are (signed;
/// `x-amz-checksum-sha256` binds the body to its digest).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DirectUpload {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub expires_ms: u64,
}

/// A log line of the job's steps (already masked by the runner).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WireLogLine {
    pub step_id: i64,
    pub line: i64,
    pub at: i64,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    pub text: String,
}

/// An artifact as the attempt records and reads it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WireArtifact {
    pub id: i64,
    pub run_id: i64,
    pub job_id: i64,
    pub name: String,
    pub digest: String,
    pub size: i64,
    pub media_type: String,
    pub created_at: i64,
    pub removed_at: Option<i64>,
}

/// A job cache as the attempt records and reads it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WireCache {
    pub id: i64,
    pub key: String,
    pub digest: String,
    pub size: i64,
    pub media_type: String,
    pub created_at: i64,
    pub last_used_at: i64,
}

/// `POST /api/runner/jobs/{id}/calls`: one thing the attempt records or reads. The job,
/// attempt, run and project are the lease's, never the body's.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum AttemptCall {
    StartStep {
        position: usize,
        name: String,
        at: i64,
    },
    FinishStep {
        step: i64,
        /// A step status (`succeeded`, `failed`, `timed_out`, `cancelled`).
        status: String,
        exit_code: Option<i32>,
        at: i64,
    },
    AppendLogs {
        lines: Vec<WireLogLine>,
    },
    /// The object must be uploaded first (`PUT …/objects/{digest}`).
    RecordArtifact {
        name: String,
        digest: String,
        size: u64,
        media_type: String,
        newly_stored: bool,
        at: i64,
    },
    LatestProjectArtifact {
        project: String,
        name: String,
        branch: Option<String>,
    },
    RunArtifacts,
    FindCache {
        key: String,
        prefixes: Vec<String>,
    },
    /// The object must be uploaded first.
    SaveCache {
        cache: WireCache,
    },
    TouchCache {
        id: i64,
        at: i64,
    },
    Caches,
    RemoveCache {
        id: i64,
    },
    DigestInUse {
        digest: String,
    },
}

/// What a call answers; the field its call fills.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CallAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<WireArtifact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<WireArtifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<WireCache>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caches: Vec<WireCache>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yes: Option<bool>,
}
