//! The bodies of the run, token and share routes that commands send and read: triggering,
//! cancelling and re-running runs, creating tokens, making and revoking share links.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `POST /api/projects/{project}/trigger`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct TriggerBody {
    /// The branch (default: the project's first branch, else the repository's default).
    pub branch: Option<String>,
    /// Any revision (default: the branch's head).
    pub rev: Option<String>,
    /// Variables every step of the run sees (`gantry trigger --var K=V`): names of letters,
    /// digits and `_`, not gantry's own (`GANTRY_*`, `CI`). Not secret: the run shows them.
    #[serde(default)]
    pub vars: std::collections::BTreeMap<String, String>,
}

/// What a trigger or a push webhook did: 201 when it queued a run, 200 when it queued nothing.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TriggerOutcome {
    /// The run: queued now, or the one this commit already has (a redelivered webhook); absent
    /// when there is none (the branch is not watched).
    pub run: Option<i64>,
    /// Whether this request queued it.
    pub queued: bool,
    pub commit: String,
    pub branch: String,
    /// Why nothing was queued.
    pub reason: Option<String>,
}

/// The answer of `POST /api/runs/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Cancelling {
    pub run: i64,
    pub cancelling: bool,
}

/// The answer of `POST /api/runs/{id}/rerun`: the new run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Rerun {
    pub run: i64,
}

/// The answer of `POST /api/runs/{id}/approve`: who approved which stage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Approved {
    pub run: i64,
    pub stage: String,
    /// The approving token's name.
    pub by: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

/// `POST /api/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NewToken {
    pub name: String,
    /// `viewer`, `deployer` or `admin`.
    pub role: String,
}

/// A new token, shown this once (the server keeps only its hash).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreatedToken {
    pub name: String,
    pub role: String,
    pub token: String,
}

/// `POST /api/artifacts/shares`: one artifact version, by name (and run) or by digest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct NewShare {
    /// Of this project only (artifact names are per project).
    pub project: Option<String>,
    pub name: Option<String>,
    pub run: Option<i64>,
    pub digest: Option<String>,
    /// How long the link works (`30m`, `1h`, `7d`; default 1h, at most a year).
    pub expires: Option<String>,
    /// An S3 presigned URL (or, with `stable`, a stable link redirecting to fresh ones).
    #[serde(default)]
    pub presign: bool,
    /// A link valid until revoked or the artifact is removed (`expires` does not apply).
    #[serde(default)]
    pub stable: bool,
}

/// A share link made.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ShareLink {
    /// The share's id, to revoke it; absent for an S3 presigned URL (it cannot be revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub url: String,
    /// The link's path on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub digest: String,
    #[serde(default)]
    pub stable: bool,
    #[serde(default)]
    pub presigned: bool,
    /// When it stops working; absent for a stable link.
    pub expires_at: Option<i64>,
}

/// The answer of `POST /api/login-links`: a link that opens a dashboard session for the token
/// that asked, once, until `expires_at` (milliseconds since the epoch).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoginLink {
    pub url: String,
    pub expires_at: i64,
}

/// The answer of `POST /api/shares/{id}/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Revoked {
    pub id: i64,
    pub revoked: bool,
}

/// The answer of `POST /api/share-key/rotate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct KeyRotated {
    pub rotated: bool,
    pub note: String,
}

/// A project the server knows (`GET /api/projects`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Project {
    pub id: i64,
    pub name: String,
    pub repo: String,
    /// Why polling its repository fails now (a repository that is gone, a remote out of reach).
    pub poll_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ProjectList {
    pub projects: Vec<Project>,
}
