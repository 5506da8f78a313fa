//! The bodies of the environment routes: what a release, an environment's status, a
//! deployment's outcome look like on the wire, and what a client sends to deploy, roll back,
//! stop and steer a canary. The server converts its records into these; the CLI reads these.

use super::ErrorDetail;
use gantry_engine::ports::{EnvLock, ReleaseRecord};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use gantry_model::records::{ReleaseKind, ReleaseState};

/// One release of an environment.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Release {
    pub id: i64,
    pub project: String,
    pub environment: String,
    /// 1, 2, 3… per environment; the history only grows.
    pub number: i64,
    pub kind: ReleaseKind,
    /// The deploy release whose files serve this one (its own number for a deploy).
    pub source: i64,
    pub artifact: String,
    /// `sha256:` and 64 hex digits.
    pub digest: String,
    pub run_id: Option<i64>,
    pub commit: Option<String>,
    /// Who asked: a token's name, with what the client said.
    pub created_by: String,
    /// Milliseconds since the Unix epoch, as every time here.
    pub created_at: i64,
    pub state: ReleaseState,
    /// Why it is in its state, when that is not obvious (failures, rollbacks).
    pub reason: Option<String>,
    /// When users were first sent to it.
    pub live_at: Option<i64>,
    /// When it stopped being live.
    pub ended_at: Option<i64>,
    /// When its files were removed: it can no longer be rolled back to.
    pub retired_at: Option<i64>,
}

impl From<&ReleaseRecord> for Release {
    fn from(r: &ReleaseRecord) -> Self {
        Self {
            id: r.id,
            project: r.project.clone(),
            environment: r.environment.clone(),
            number: r.number,
            kind: r.kind,
            source: r.source,
            artifact: r.artifact.clone(),
            digest: r.digest.clone(),
            run_id: r.run_id,
            commit: r.commit.clone(),
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            state: r.state,
            reason: r.reason.clone(),
            live_at: r.live_at,
            ended_at: r.ended_at,
            retired_at: r.retired_at,
        }
    }
}

/// A release a server answered with, as a client that keeps records (`gantry run`) holds it.
impl From<Release> for ReleaseRecord {
    fn from(r: Release) -> Self {
        Self {
            id: r.id,
            project: r.project,
            environment: r.environment,
            number: r.number,
            kind: r.kind,
            source: r.source,
            artifact: r.artifact,
            digest: r.digest,
            run_id: r.run_id,
            commit: r.commit,
            created_by: r.created_by,
            created_at: r.created_at,
            state: r.state,
            reason: r.reason,
            live_at: r.live_at,
            ended_at: r.ended_at,
            retired_at: r.retired_at,
        }
    }
}

/// Something that happened to a release: a state change, a health check, a crash.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseEvent {
    pub release: i64,
    pub at: i64,
    /// `state`, `health`, `crash`, `router`, `note`, `stopped`.
    pub kind: String,
    pub message: String,
}

impl From<&gantry_engine::ports::ReleaseEvent> for ReleaseEvent {
    fn from(e: &gantry_engine::ports::ReleaseEvent) -> Self {
        Self {
            release: e.release,
            at: e.at,
            kind: e.kind.clone(),
            message: e.message.clone(),
        }
    }
}

/// A release with what happened to it (`GET …/releases`, newest first).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseHistory {
    pub release: Release,
    pub events: Vec<ReleaseEvent>,
}

/// What the router measured for one release over a span of time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    /// errors / requests, 0 without requests.
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A running canary.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Canary {
    pub release: i64,
    /// `running`, `paused`, `promoting`, …
    pub state: String,
    /// The canary's share of users now, in percent.
    pub percent: u32,
    /// The step it is at (0-based), when it follows steps.
    pub step: Option<usize>,
    pub steps: usize,
    /// The canary since the current step began.
    pub canary: Window,
    /// The stable release over the same time.
    pub stable: Window,
    /// What the canary's analysis says of these numbers now.
    pub analysis: String,
}

/// Traffic to one release through the environment's router.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Traffic {
    pub release: i64,
    /// `stable`, `canary` or `fallback`.
    pub role: String,
    pub last_minute: Window,
    pub total_requests: u64,
    pub total_errors: u64,
}

/// Who holds an environment's deployment lock, and until when.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Lock {
    pub owner: String,
    /// What the holder does (`deploy of app (run 12) by cli`).
    pub purpose: String,
    pub acquired_at: i64,
    /// Past this the lock may be taken over.
    pub expires_at: i64,
}

impl From<&EnvLock> for Lock {
    fn from(l: &EnvLock) -> Self {
        Self {
            owner: l.owner.clone(),
            purpose: l.purpose.clone(),
            acquired_at: l.acquired_at,
            expires_at: l.expires_at,
        }
    }
}

/// An environment as it is now (`GET …/environments/{environment}`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvStatus {
    pub project: String,
    pub environment: String,
    /// The target's kind (`process`, `command`, `docker`, `lambda`), when configured here.
    pub target: Option<String>,
    /// The router's address, for targets behind gantry's router.
    pub router: Option<String>,
    pub live: Option<Release>,
    /// What a rollback with no release named would serve.
    pub previous: Option<Release>,
    /// `healthy`, `unhealthy`, `stopped` or `unknown` (not running here).
    pub health: String,
    pub health_detail: Option<String>,
    pub uptime_ms: Option<u64>,
    pub restarts: Option<u32>,
    pub pid: Option<u32>,
    /// The live release's log file.
    pub log: Option<String>,
    /// Deploy releases with something running now.
    pub running: Vec<i64>,
    pub lock: Option<Lock>,
    pub canary: Option<Canary>,
    pub traffic: Vec<Traffic>,
    /// The server that drives it (runs its deployments and canaries, serves it), when another
    /// server sharing this one's state does: health, traffic and the canary's numbers are then
    /// that server's to measure, and actions asked here are passed to it.
    #[serde(default)]
    pub driver: Option<String>,
}

/// Which project has which environment (`GET /api/environments?brief=true`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EnvName {
    pub project: String,
    pub environment: String,
}

/// `POST …/deploy`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// The artifact's name in the run.
    pub artifact: String,
    /// The run whose artifact it is; the newest run that made it when left out.
    pub run: Option<i64>,
    /// The artifact's digest, checked against the run's (`sha256:` and 64 hex digits).
    pub digest: Option<String>,
    /// Deploy even when this artifact is live already.
    #[serde(default)]
    pub force: bool,
    /// Answer only after the bake passed (a pipeline's deploy stage waits).
    #[serde(default)]
    pub wait: bool,
    /// Who asked, as the client sees it (`run 12 (cli)`); recorded beside the token's name.
    pub by: Option<String>,
    /// Overrides the environment's bake for this deployment, in milliseconds.
    pub bake_ms: Option<u64>,
}

/// How a deployment ended: 200 when users were sent to it, 422 (with `error`) when it ran and
/// failed and traffic stayed or went back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeployOutcome {
    pub release: Option<Release>,
    pub succeeded: bool,
    /// What happened, in the user's terms.
    pub message: String,
    /// Set on a 422: `deploy_failed` and the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `POST …/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The release number to serve again; the previous healthy one when left out.
    pub to: Option<i64>,
    pub by: Option<String>,
}

/// `POST …/stop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    pub by: Option<String>,
}

/// The answer of `POST …/stop`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Stopped {
    pub stopped: bool,
    pub message: String,
}

/// `POST …/promote`, `…/abort`, `…/pause`, `…/resume`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryBody {
    /// `promote` only: send everyone at once instead of the next step.
    #[serde(default)]
    pub full: bool,
    pub by: Option<String>,
}

/// A plain answer: what was done.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Done {
    pub message: String,
}

/// The answer of an alarm webhook: what each environment did about it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AlarmOutcome {
    /// The firing alarms' names, joined; absent when nothing fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    pub acted: Vec<String>,
    /// `nothing firing` for a resolved alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
