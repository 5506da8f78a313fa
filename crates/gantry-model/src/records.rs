//! The records of what gantry keeps — runs and their parts, log lines, artifacts, releases and
//! their events, locks, owners, projects, tokens and shares — as the store hands them out and
//! takes them in. Plain values, no I/O, and no serde on the records (the wire form is
//! `gantry-api`'s, the stored form the store's); the words they hold — `ReleaseState`,
//! `ReleaseKind`, like the statuses — and `Stream` (in `gantry run --json`'s events) are
//! serialized as they are.
//! Timestamps are Unix milliseconds (UTC); ids are 64-bit integers the store assigns.

use crate::{JobStatus, Role, RunStatus, StageStatus, StepStatus};
use std::fmt;

/// Unix milliseconds (UTC).
pub type Millis = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseState {
    /// Being started and health-checked; not serving users yet.
    Deploying,
    /// Serving a share of the users next to the live release, measured by the router.
    Canary,
    /// Serving users.
    Live,
    /// Did not become healthy, or crashed during its bake: traffic went back by itself.
    Failed,
    /// Was live; a rollback moved traffic away from it.
    RolledBack,
    /// Was live; a newer deployment replaced it.
    Superseded,
    /// Its deployment was cut short (gantry stopped); traffic never reached it.
    Interrupted,
}

impl ReleaseState {
    pub const ALL: [ReleaseState; 7] = [
        ReleaseState::Deploying,
        ReleaseState::Canary,
        ReleaseState::Live,
        ReleaseState::Failed,
        ReleaseState::RolledBack,
        ReleaseState::Superseded,
        ReleaseState::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Deploying => "deploying",
            ReleaseState::Canary => "canary",
            ReleaseState::Live => "live",
            ReleaseState::Failed => "failed",
            ReleaseState::RolledBack => "rolled-back",
            ReleaseState::Superseded => "superseded",
            ReleaseState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseKind {
    Deploy,
    Rollback,
}

impl ReleaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseKind::Deploy => "deploy",
            ReleaseKind::Rollback => "rollback",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "deploy" => Some(ReleaseKind::Deploy),
            "rollback" => Some(ReleaseKind::Rollback),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub id: i64,
    pub project: String,
    pub repo: String,
    pub commit: String,
    pub branch: Option<String>,
    pub pipeline_file: String,
    pub trigger: String,
    /// What `when:` rules judge: `push`, `tag`, `pull_request` or `manual`
    /// ([`crate::TriggerEvent`]).
    pub event: String,
    /// The run's own variables, which its steps see: `GANTRY_TAG` of a tag run, `GANTRY_PR`
    /// and its base and head of a pull request's, and those given with `gantry trigger --var`.
    pub vars: std::collections::BTreeMap<String, String>,
    pub status: RunStatus,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub error: Option<String>,
    pub owner: Option<String>,
}
impl RunRecord {
    /// What the run is of, in words: its branch, `tag v1.2.0`, `pull request #7`, or
    /// `(detached)`.
    pub fn lane(&self) -> String {
        if let Some(b) = self.branch.as_deref().filter(|b| !b.is_empty()) {
            return b.to_string();
        }
        if let Some(t) = self.vars.get(crate::vars::TAG) {
            return format!("tag {t}");
        }
        if let Some(n) = self.vars.get(crate::vars::PR) {
            return format!("pull request #{n}");
        }
        "(detached)".to_string()
    }

    /// The run's event, typed; a re-run or re-queue of this run keeps it.
    pub fn event_kind(&self) -> crate::TriggerEvent {
        self.event
            .parse()
            .unwrap_or_else(|_| crate::TriggerEvent::of_trigger(&self.trigger))
    }
}

#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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
    /// The jobs it waits for (`needs: [job]`).
    pub waits_for: Vec<String>,
}
#[derive(Debug, Clone)]
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
/// Also the `stream` of `gantry run --json`'s log events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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
/// A job cache kept for a project under a key (`cache:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRecord {
    pub id: i64,
    pub project: String,
    pub key: String,
    /// `sha256:<hex>` of its object in the artifact store.
    pub digest: String,
    pub size: i64,
    pub media_type: String,
    pub created_at: Millis,
    pub last_used_at: Millis,
}

/// An artifact with where it came from and what keeps it: for listings.
#[derive(Debug, Clone)]
pub struct ArtifactListing {
    pub artifact: ArtifactRecord,
    pub project: String,
    pub branch: Option<String>,
    pub commit: String,
    pub job: String,
    /// Why its content is kept whatever retention says (releases, pins by hand).
    pub pins: Vec<String>,
}
/// An owner of runs (a `gantry run` process or a server) and its lease: renewed while it lives,
/// so that any host can tell a dead owner's runs from a live one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLease {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub started_at: Millis,
    /// Past this, the owner is taken for dead.
    pub expires_at: Millis,
}
#[derive(Debug, Clone)]
pub struct ProjectRecord {
    pub id: i64,
    pub name: String,
    pub repo: String,
}
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: Millis,
}
/// A dashboard session, made from an API token at the login form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The sha256 of the session's cookie (the cookie itself is never stored).
    pub id_hash: String,
    /// The hash of the token it was made from: the token's role is read anew every time.
    pub token_hash: String,
    /// What every form of the session sends back.
    pub csrf: String,
    pub created_at: Millis,
    pub expires_at: Millis,
}
/// A share link of one artifact version.
#[derive(Debug, Clone)]
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
    /// A stable link: valid until revoked or the artifact is gone; each visit is redirected to
    /// a freshly signed short-lived URL.
    pub stable: bool,
    /// A stable link that redirects to an S3 presigned URL rather than gantry's own.
    pub presign: bool,
}
/// One release of an environment (see `release.rs` for the vocabulary).
#[derive(Debug, Clone)]
pub struct ReleaseRecord {
    pub id: i64,
    pub project: String,
    pub environment: String,
    /// 1, 2, 3… per environment; the history only grows.
    pub number: i64,
    pub kind: ReleaseKind,
    /// The deploy release whose directory serves this one (its own number for a deploy).
    pub source: i64,
    pub artifact: String,
    pub digest: String,
    pub run_id: Option<i64>,
    pub commit: Option<String>,
    /// Who asked: a token name, `cli`, or `run N`.
    pub created_by: String,
    pub created_at: Millis,
    pub state: ReleaseState,
    /// Why it is in its state, when that is not obvious (failures, rollbacks).
    pub reason: Option<String>,
    /// When traffic switched to it (first time).
    pub live_at: Option<Millis>,
    /// When it stopped being live.
    pub ended_at: Option<Millis>,
    /// When its directory was removed (it can no longer be rolled back to).
    pub retired_at: Option<Millis>,
}
/// Something that happened to a release: a state change, a health-check result, a crash.
#[derive(Debug, Clone)]
pub struct ReleaseEvent {
    pub release: i64,
    pub at: Millis,
    /// `state`, `health`, `crash`, `router`, `note`.
    pub kind: String,
    pub message: String,
}
/// Who holds an environment's deployment lock.
#[derive(Debug, Clone)]
pub struct EnvLock {
    pub project: String,
    pub environment: String,
    pub owner: String,
    /// What the holder is doing, for the refusal message (`deploy of app (run 12) by cli`).
    pub purpose: String,
    pub acquired_at: Millis,
    /// The lease: past this, the lock may be taken over.
    pub expires_at: Millis,
}
/// A run with all its parts, for `gantry show`.
#[derive(Debug, Clone)]
pub struct RunDetail {
    pub run: RunRecord,
    pub stages: Vec<StageRecord>,
    pub jobs: Vec<JobRecord>,
    pub steps: Vec<StepRecord>,
    pub artifacts: Vec<ArtifactRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_says_what_it_is_of() {
        let run = |branch: Option<&str>, vars: &[(&str, &str)]| RunRecord {
            id: 1,
            project: "p".into(),
            repo: "/r".into(),
            commit: "c".into(),
            branch: branch.map(str::to_string),
            pipeline_file: String::new(),
            trigger: "webhook".into(),
            event: "push".into(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            status: crate::RunStatus::Queued,
            created_at: 0,
            started_at: None,
            finished_at: None,
            error: None,
            owner: None,
        };
        assert_eq!(run(Some("main"), &[]).lane(), "main");
        assert_eq!(run(None, &[("GANTRY_TAG", "v1.2.0")]).lane(), "tag v1.2.0");
        assert_eq!(run(None, &[("GANTRY_PR", "7")]).lane(), "pull request #7");
        assert_eq!(run(Some(""), &[]).lane(), "(detached)");
    }
}

/// Where a job attempt handed to runners is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuedJobState {
    /// Waiting for a runner with its labels.
    Queued,
    /// A runner has it, under a lease it renews.
    Claimed,
    /// Its runner said how it ended.
    Finished,
    /// Its runner's lease ran out before it said.
    Lost,
    /// Cancelled before any runner took it.
    Cancelled,
}

impl QueuedJobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Claimed => "claimed",
            Self::Finished => "finished",
            Self::Lost => "lost",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for QueuedJobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => Self::Queued,
            "claimed" => Self::Claimed,
            "finished" => Self::Finished,
            "lost" => Self::Lost,
            "cancelled" => Self::Cancelled,
            other => return Err(format!("unknown queued job state `{other}`")),
        })
    }
}

/// A job attempt to hand to a runner.
#[derive(Debug, Clone)]
pub struct NewQueuedJob {
    pub run_id: i64,
    pub job_id: i64,
    pub attempt: u32,
    /// What a runner must have, sorted.
    pub labels: Vec<String>,
    /// What the runner is told of the job beside its source (the server's JSON; never a
    /// secret's value: those are read from the answering server's secrets at claim time).
    pub payload: String,
    pub queued_at: Millis,
}

/// A job attempt handed to runners, as the store has it.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub id: i64,
    pub run_id: i64,
    pub job_id: i64,
    pub attempt: u32,
    pub labels: Vec<String>,
    pub payload: String,
    pub state: QueuedJobState,
    pub runner: Option<String>,
    /// The sha256 of the claim's lease (the runner holds the lease itself).
    pub lease_hash: Option<String>,
    pub lease_until: Option<Millis>,
    pub cancel_requested: bool,
    pub queued_at: Millis,
    pub claimed_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// How it ended, as the runner said (`succeeded`, `failed`, `timed_out`, `cancelled`).
    pub outcome: Option<String>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// A runner asking for work.
#[derive(Debug, Clone)]
pub struct JobClaim {
    pub runner: String,
    /// The runner's labels: it gets a job whose labels are all among them.
    pub labels: Vec<String>,
    pub lease_hash: String,
    pub at: Millis,
    pub until: Millis,
}

/// What renewing a claim's lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRenewal {
    /// Renewed; `cancel`: stop the job (the run was cancelled or is no longer running).
    Held { cancel: bool },
    /// The lease is not this runner's any more (ran out, or never was): stop at once.
    Gone,
}

/// A PUT a runner makes itself, straight to the backing store: the URL and the headers it must
/// send as they are (they are part of the signature; one is the body's SHA-256, which the store
/// checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUpload {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

/// The server that drives an environment, under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvDriver {
    pub project: String,
    pub environment: String,
    pub owner: String,
    /// Past this, another server may take the environment over.
    pub expires_at: Millis,
    /// The server that asked for it (to deploy or roll back), if one did.
    pub handover_to: Option<String>,
}

/// Where a running canary is, kept with its release (whenever its machine starts observing a
/// step) so that a server taking the deployment over — the same one started again, or another
/// after the driver died — goes on from that step, never from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryProgress {
    /// The step observed (from 0).
    pub step: usize,
    /// The share of users the router serves the canary.
    pub percent: u32,
    /// Since when the router has served that share.
    pub since: Millis,
}

/// Something asked of an environment's driver through another server (a canary's promote,
/// abort, pause or resume; an alarm), carried out by the driver, which writes its answer for
/// the asker to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRequest {
    pub id: i64,
    pub project: String,
    pub environment: String,
    /// What is asked, in the words of `gantry-deploy` (`promote`, `alarm NAME`, …).
    pub asked: String,
    pub by: String,
    pub asked_at: Millis,
    /// The driver's answer once it carried the request out: whether it did, and what it says.
    pub answer: Option<(bool, String)>,
}
