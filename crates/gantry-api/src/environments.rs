//! Environment routes: status, releases, deploy, rollback, the canary's promote/abort/pause/
//! resume, and alarms (Alertmanager webhooks or a plain `{status, name}`). The server's deploy manager does
//! the work (through `Control`); these handlers check input and say who asked (the token's name).

use crate::error::ApiError;
use crate::state::AppState;
use crate::types;
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use gantry_engine::canary::CanaryAction;
use gantry_engine::ports::{DeployRequest, TokenRecord};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    project: Option<String>,
    /// Only which project has which environment (`[{project, environment}]`), from the store:
    /// no health check, for the CLI to find an environment's project quickly.
    #[serde(default)]
    brief: bool,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    if q.brief {
        let names: Vec<types::EnvName> = state
            .store
            .environments()
            .await?
            .into_iter()
            .filter(|(p, _)| q.project.as_ref().is_none_or(|want| want == p))
            .map(|(project, environment)| types::EnvName {
                project,
                environment,
            })
            .collect();
        return Ok(Json(names).into_response());
    }
    let all = state
        .control
        .environment_statuses(q.project.as_deref())
        .await?;
    Ok(Json(all).into_response())
}

pub async fn status(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Json<types::EnvStatus>, ApiError> {
    Ok(Json(
        state
            .control
            .environment_status(&project, &environment)
            .await?,
    ))
}

pub async fn releases(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Json<Vec<types::ReleaseHistory>>, ApiError> {
    Ok(Json(state.control.releases(&project, &environment).await?))
}

pub async fn diagnosis(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Json<types::ReleaseDiagnosis>, ApiError> {
    Ok(Json(
        state
            .control
            .release_diagnosis(&project, &environment)
            .await?,
    ))
}

fn who(token: &TokenRecord, by: Option<&str>) -> String {
    match by.map(str::trim).filter(|b| !b.is_empty()) {
        Some(b) => format!("{b} (token {})", token.name),
        None => format!("token {}", token.name),
    }
}

pub async fn deploy(
    State(state): State<AppState>,
    Extension(token): Extension<TokenRecord>,
    Path((project, environment)): Path<(String, String)>,
    Json(body): Json<types::DeployBody>,
) -> Result<(StatusCode, Json<types::DeployOutcome>), ApiError> {
    if body.artifact.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`artifact` names the artifact to deploy",
        ));
    }
    if let Some(d) = &body.digest
        && !(d.starts_with("sha256:")
            && d.len() == 71
            && d[7..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ApiError::bad_request(format!(
            "`digest` must be sha256:<64 hex digits>, got `{d}`"
        )));
    }
    let request = DeployRequest {
        project,
        environment,
        artifact: body.artifact,
        run: body.run,
        digest: body.digest,
        force: body.force,
        requested_by: who(&token, body.by.as_deref()),
        bake_ms: body.bake_ms,
    };
    let mut outcome = state.control.deploy(request, body.wait).await?;
    if outcome.succeeded {
        Ok((StatusCode::OK, Json(outcome)))
    } else {
        outcome.error = Some(types::ErrorDetail {
            code: "deploy_failed".into(),
            message: outcome.message.clone(),
        });
        Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(outcome)))
    }
}

pub async fn rollback(
    State(state): State<AppState>,
    Extension(token): Extension<TokenRecord>,
    Path((project, environment)): Path<(String, String)>,
    body: Option<Json<types::RollbackBody>>,
) -> Result<Json<types::Release>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let by = who(&token, body.by.as_deref());
    Ok(Json(
        state
            .control
            .rollback(&project, &environment, body.to, &by)
            .await?,
    ))
}

/// `POST /api/projects/{project}/environments/{environment}/stop`.
pub async fn stop(
    State(state): State<AppState>,
    Extension(token): Extension<TokenRecord>,
    Path((project, environment)): Path<(String, String)>,
    body: Option<Json<types::StopBody>>,
) -> Result<Json<types::Stopped>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let by = who(&token, body.by.as_deref());
    Ok(Json(
        state
            .control
            .stop_environment(&project, &environment, &by)
            .await?,
    ))
}

/// The route of one canary action (`promote`, `abort`, `pause`, `resume`): they differ only in
/// what they ask of the canary; `promote` with `{"full": true}` sends everyone at once.
pub fn canary(action: CanaryAction) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              Extension(token): Extension<TokenRecord>,
              Path((project, environment)): Path<(String, String)>,
              body: Option<Json<types::CanaryBody>>| async move {
            let body = body.map(|Json(b)| b).unwrap_or_default();
            let action = match action {
                CanaryAction::Promote { .. } => CanaryAction::Promote { full: body.full },
                other => other,
            };
            let by = who(&token, body.by.as_deref());
            let answer = state
                .control
                .canary_action(&project, &environment, action, &by)
                .await?;
            Ok::<_, ApiError>(Json(answer))
        },
    )
}

#[derive(Deserialize, Default)]
pub struct AlarmQuery {
    project: Option<String>,
}

/// The firing alarms' names in an Alertmanager webhook (`alerts[].labels.alertname` of alerts
/// whose status is firing) or a plain `{"status": "firing", "name": ...}`. Resolved: none.
fn firing_alarms(body: &Value) -> Result<Vec<String>, ApiError> {
    if let Some(alerts) = body.get("alerts").and_then(Value::as_array) {
        let mut names: Vec<String> = alerts
            .iter()
            .filter(|a| a["status"].as_str().unwrap_or("firing") == "firing")
            .map(|a| {
                a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or("unnamed alert")
                    .to_string()
            })
            .collect();
        names.dedup();
        return Ok(names);
    }
    match (body["status"].as_str(), body["name"].as_str()) {
        (Some("firing"), Some(name)) => Ok(vec![name.to_string()]),
        (Some("firing"), None) => Ok(vec!["unnamed alarm".to_string()]),
        (Some("resolved"), _) => Ok(Vec::new()),
        _ => Err(ApiError::bad_request(
            "send an Alertmanager webhook payload, or {\"status\": \"firing\", \"name\": \"...\"}",
        )),
    }
}

/// `POST /api/environments/{environment}/alarm` (`?project=` narrows it): acts only when one
/// project has an environment of that name.
pub async fn alarm(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    Query(q): Query<AlarmQuery>,
    Json(body): Json<Value>,
) -> Result<Json<types::AlarmOutcome>, ApiError> {
    fire(&state, q.project.as_deref(), &environment, &body).await
}

/// `POST /api/projects/{project}/environments/{environment}/alarm`.
pub async fn project_alarm(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Result<Json<types::AlarmOutcome>, ApiError> {
    fire(&state, Some(&project), &environment, &body).await
}

async fn fire(
    state: &AppState,
    project: Option<&str>,
    environment: &str,
    body: &Value,
) -> Result<Json<types::AlarmOutcome>, ApiError> {
    let firing = firing_alarms(body)?;
    if firing.is_empty() {
        return Ok(Json(types::AlarmOutcome {
            alarm: None,
            acted: Vec::new(),
            note: Some("nothing firing".into()),
        }));
    }
    let name = firing.join(", ");
    let acted = state.control.alarm(project, environment, &name).await?;
    Ok(Json(types::AlarmOutcome {
        alarm: Some(name),
        acted,
        note: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn alertmanager_and_plain_payloads_name_the_firing_alarms() {
        let am = json!({
            "version": "4", "status": "firing", "receiver": "gantry",
            "alerts": [
                { "status": "firing", "labels": { "alertname": "HighErrorRate", "severity": "page" } },
                { "status": "resolved", "labels": { "alertname": "DiskAlmostFull" } }
            ]
        });
        assert_eq!(firing_alarms(&am).unwrap(), vec!["HighErrorRate"]);
        let plain = json!({ "status": "firing", "name": "checkout-5xx" });
        assert_eq!(firing_alarms(&plain).unwrap(), vec!["checkout-5xx"]);
        assert!(
            firing_alarms(&json!({ "status": "resolved", "name": "x" }))
                .unwrap()
                .is_empty()
        );
        assert!(firing_alarms(&json!({ "hello": 1 })).is_err());
    }
}
