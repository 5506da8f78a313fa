//! What happens after a server run ends: its commit status is posted, a failed run is diagnosed (the same report `gantry why`
//! prints) and the diagnosis kept with the run; then each configured notification webhook whose
//! `on` list holds the run's status gets `POST url` with a JSON body (signed with
//! `X-Gantry-Signature: sha256=<hmac>` when a secret is configured), tried up to three times.
//! A failed release (a deployment, a bake, a canary) goes to the webhooks whose `on` holds
//! `deploy-failed`, with the release's diagnosis.

use super::Server;
use gantry_model::RunStatus;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const ATTEMPTS: u32 = 3;

pub async fn after_run(server: Arc<Server>, run: i64) {
    if let Err(e) = after_run_inner(&server, run).await {
        tracing::warn!(run, error = %format!("{e:#}"), "after-run work failed");
    }
}

async fn after_run_inner(server: &Server, run: i64) -> anyhow::Result<()> {
    let Some(detail) = server.store.run_detail(run).await? else {
        return Ok(());
    };
    let status = detail.run.status;
    // Before the diagnosis, which may take a while: the forge learns how the run ended first.
    if status.is_finished() {
        let phase = super::statuses::Phase::Finished(status);
        server
            .statuses
            .post(&detail.run.project, run, &detail.run.commit, phase);
    }
    let mut diagnosis = serde_json::Value::Null;
    if matches!(status, RunStatus::Failed | RunStatus::Interrupted) {
        let rules = crate::why::load_rules(server.config.why_rules.as_deref())?;
        let repo = server.mirror(&detail.run.project);
        let report = crate::why::diagnose_run(&*server.store, repo.as_ref(), run, rules).await?;
        let value = serde_json::to_value(&report)?;
        server
            .store
            .set_run_diagnosis(run, &value.to_string())
            .await?;
        tracing::info!(run, category = %report.diagnosis.category, "run diagnosed: {}", report.diagnosis.sentence);
        diagnosis = value;
    }
    let targets: Vec<_> = server
        .config
        .notify
        .iter()
        .filter(|n| n.on.iter().any(|s| s == status.as_str()))
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let body = json!({
        "event": format!("run.{status}"),
        "run": gantry_api::types::Run::from(&detail.run),
        "url": format!("{}/api/runs/{run}", server.url),
        "diagnosis": diagnosis.get("diagnosis").cloned().unwrap_or(serde_json::Value::Null),
        "changes": diagnosis.get("changes").cloned().unwrap_or(serde_json::Value::Null),
    })
    .to_string();
    deliver(&targets, &format!("run.{status}"), &body).await
}

/// Tells the `deploy-failed` webhooks about a failed release, with its diagnosis.
pub async fn after_failed_release(
    server: Arc<Server>,
    project: String,
    environment: String,
    number: i64,
) {
    let targets: Vec<_> = server
        .config
        .notify
        .iter()
        .filter(|n| n.on.iter().any(|s| s == "deploy-failed"))
        .collect();
    if targets.is_empty() {
        return;
    }
    let result = async {
        let release = server
            .store
            .releases(&project, &environment)
            .await?
            .into_iter()
            .find(|r| r.number == number)
            .ok_or_else(|| anyhow::anyhow!("release {number} of {project}/{environment} vanished"))?;
        let rules = crate::why::load_rules(server.config.why_rules.as_deref())?;
        let repo = server.mirror(&project);
        let report = crate::why::diagnose_release(&*server.store, repo.as_ref(), release, rules).await?;
        let body = json!({
            "event": "deploy.failed",
            "release": report.release,
            "url": format!("{}/api/projects/{project}/environments/{environment}/releases", server.url),
            "diagnosis": report.diagnosis,
            "changes": report.changes,
        })
        .to_string();
        deliver(&targets, "deploy.failed", &body).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(project, environment, release = number, error = %format!("{e:#}"), "failed-release notification failed");
    }
}

async fn deliver(
    targets: &[&gantry_config::server::NotifyConfig],
    event: &str,
    body: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    for n in targets {
        let mut req = client
            .post(&n.url)
            .header("Content-Type", "application/json")
            .header("X-Gantry-Event", event);
        if let Some(secret) = n.secret_env.as_ref().and_then(|v| std::env::var(v).ok()) {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())?;
            mac.update(body.as_bytes());
            req = req.header(
                "X-Gantry-Signature",
                format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
            );
        }
        let req = req.body(body.to_string());
        let mut delivered = false;
        for attempt in 1..=ATTEMPTS {
            let Some(r) = req.try_clone() else { break };
            match r.send().await {
                Ok(resp) if resp.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(resp) => {
                    tracing::warn!(url = %n.url, status = %resp.status(), attempt, "notification refused")
                }
                Err(e) => tracing::warn!(url = %n.url, error = %e, attempt, "notification failed"),
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
        if !delivered {
            tracing::error!(url = %n.url, event, "notification not delivered after {ATTEMPTS} attempts");
        }
    }
    Ok(())
}
