//! The server's operations as typed calls: each takes and returns the API's wire types
//! (`gantry_api::types`), so a command never builds a path or reads a body by key.

use super::{Client, refused};
use crate::why::Report;
use anyhow::Result;
use gantry_api::types::{
    self, CanaryBody, Cancelling, CreatedToken, DeployBody, DeployOutcome, Done, EnvName,
    EnvStatus, KeyRotated, NewShare, NewToken, Release, ReleaseHistory, Revoked, RollbackBody,
    ShareLink, StopBody, Stopped, TriggerBody, TriggerOutcome,
};
use gantry_engine::canary::CanaryAction;
use gantry_engine::ports::{LogRecord, RunDetail, RunFilter, RunRecord};
use gantry_model::RunStatus;

/// Percent-encodes a path segment or query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn env_path(project: &str, environment: &str) -> String {
    format!(
        "/api/projects/{}/environments/{}",
        urlencode(project),
        urlencode(environment)
    )
}

impl Client {
    /// Which project has which environment (no health checks: quick).
    pub async fn environment_names(&self) -> Result<Vec<EnvName>> {
        self.get("/api/environments?brief=true").await
    }

    pub async fn environment(&self, project: &str, environment: &str) -> Result<EnvStatus> {
        self.get(&env_path(project, environment)).await
    }

    /// Every environment with releases, or one project's.
    pub async fn environments(&self, project: Option<&str>) -> Result<Vec<EnvStatus>> {
        match project {
            Some(p) => {
                self.get(&format!("/api/environments?project={}", urlencode(p)))
                    .await
            }
            None => self.get("/api/environments").await,
        }
    }

    pub async fn releases(&self, project: &str, environment: &str) -> Result<Vec<ReleaseHistory>> {
        self.get(&format!("{}/releases", env_path(project, environment)))
            .await
    }

    /// Deploys. A deployment that ran and failed is an outcome (`succeeded: false`, the
    /// server's 422), not an error; a refusal (no such artifact, a lock held) is.
    pub async fn deploy(
        &self,
        project: &str,
        environment: &str,
        body: &DeployBody,
    ) -> Result<DeployOutcome> {
        let req = self
            .request(
                reqwest::Method::POST,
                &format!("{}/deploy", env_path(project, environment)),
            )
            .json(body);
        let (status, bytes) = self.exchange(req).await?;
        match status.as_u16() {
            200 => self.read(status, &bytes),
            422 => match self.read::<DeployOutcome>(status, &bytes) {
                Ok(outcome) if outcome.release.is_some() => Ok(outcome),
                _ => Err(refused(status, &bytes).into()),
            },
            _ => Err(refused(status, &bytes).into()),
        }
    }

    pub async fn rollback(
        &self,
        project: &str,
        environment: &str,
        body: &RollbackBody,
    ) -> Result<Release> {
        self.post(
            &format!("{}/rollback", env_path(project, environment)),
            body,
        )
        .await
    }

    pub async fn stop(&self, project: &str, environment: &str, body: &StopBody) -> Result<Stopped> {
        self.post(&format!("{}/stop", env_path(project, environment)), body)
            .await
    }

    /// Passes `action` to the environment's running canary (`full` of a promote goes in the
    /// body).
    pub async fn canary(
        &self,
        project: &str,
        environment: &str,
        action: CanaryAction,
        by: Option<String>,
    ) -> Result<Done> {
        let (verb, full) = match action {
            CanaryAction::Promote { full } => ("promote", full),
            CanaryAction::Abort => ("abort", false),
            CanaryAction::Pause => ("pause", false),
            CanaryAction::Resume => ("resume", false),
        };
        self.post(
            &format!("{}/{verb}", env_path(project, environment)),
            &CanaryBody { full, by },
        )
        .await
    }

    // Runs.

    /// Queues a run of `project` (a branch, a revision, or the default branch's head).
    pub async fn trigger(&self, project: &str, body: &TriggerBody) -> Result<TriggerOutcome> {
        self.post(
            &format!("/api/projects/{}/trigger", urlencode(project)),
            body,
        )
        .await
    }

    /// Approves the approval stage `run` waits at.
    pub async fn approve(&self, run: i64) -> Result<gantry_api::types::Approved> {
        self.post(&format!("/api/runs/{run}/approve"), &serde_json::json!({}))
            .await
    }

    pub async fn cancel(&self, run: i64) -> Result<Cancelling> {
        self.post(&format!("/api/runs/{run}/cancel"), &serde_json::json!({}))
            .await
    }

    /// Runs as `filter` says, newest first.
    pub async fn runs(&self, f: &RunFilter) -> Result<Vec<RunRecord>> {
        let mut q = vec![format!("limit={}", f.limit)];
        for (k, v) in [("project", &f.project), ("branch", &f.branch)] {
            if let Some(v) = v {
                q.push(format!("{k}={}", urlencode(v)));
            }
        }
        if let Some(s) = f.status {
            q.push(format!("status={s}"));
        }
        if let Some(b) = f.before {
            q.push(format!("before={b}"));
        }
        let page: types::RunPage = self.get(&format!("/api/runs?{}", q.join("&"))).await?;
        Ok(page.runs.into_iter().map(Into::into).collect())
    }

    /// A run with its parts; `None` when the server has no such run.
    pub async fn run(&self, id: i64) -> Result<Option<RunDetail>> {
        match self
            .get::<types::RunDetail>(&format!("/api/runs/{id}"))
            .await
        {
            Ok(detail) => Ok(Some(detail.into())),
            Err(e) if super::Refused::is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Up to `limit` log lines of a run (or one job) after the cursor `after`.
    pub async fn logs(
        &self,
        run: i64,
        job: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogRecord>> {
        let job = job
            .map(|j| format!("&job={}", urlencode(j)))
            .unwrap_or_default();
        let page: types::LogPage = self
            .get(&format!(
                "/api/runs/{run}/logs?after={after}&limit={limit}{job}"
            ))
            .await?;
        Ok(page.lines.into_iter().map(Into::into).collect())
    }

    /// Follows a run's live log, handing each line to `on_line`, until the run has finished
    /// and every line was sent; the run's final status (`None`: the stream ended without one).
    pub async fn follow_logs(
        &self,
        run: i64,
        job: Option<&str>,
        mut on_line: impl FnMut(LogRecord),
    ) -> Result<Option<RunStatus>> {
        let job = job
            .map(|j| format!("?job={}", urlencode(j)))
            .unwrap_or_default();
        let mut end = None;
        self.follow(
            &format!("/api/runs/{run}/logs/stream{job}"),
            |event, data| {
                match event {
                    "log" => {
                        if let Ok(l) = serde_json::from_str::<types::LogLine>(data) {
                            on_line(l.into());
                        }
                    }
                    "end" => {
                        end = serde_json::from_str::<types::LogEnd>(data)
                            .ok()
                            .map(|e| e.status);
                    }
                    _ => {}
                }
                true
            },
        )
        .await?;
        Ok(end)
    }

    /// Why run `id` failed.
    pub async fn diagnosis(&self, id: i64) -> Result<Report> {
        self.get(&format!("/api/runs/{id}/diagnosis")).await
    }

    // Tokens and share links.

    pub async fn create_token(&self, body: &NewToken) -> Result<CreatedToken> {
        self.post("/api/tokens", body).await
    }

    pub async fn share(&self, body: &NewShare) -> Result<ShareLink> {
        self.post("/api/artifacts/shares", body).await
    }

    pub async fn revoke_share(&self, id: i64) -> Result<Revoked> {
        self.post(&format!("/api/shares/{id}/revoke"), &serde_json::json!({}))
            .await
    }

    /// A one-time link that opens a dashboard session for this client's token.
    pub async fn login_link(&self) -> Result<gantry_api::types::LoginLink> {
        self.post("/api/login-links", &serde_json::json!({})).await
    }

    pub async fn rotate_share_key(&self) -> Result<KeyRotated> {
        self.post("/api/share-key/rotate", &serde_json::json!({}))
            .await
    }
}
