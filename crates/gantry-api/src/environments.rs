//! Environment routes: status, releases, deploy and rollback. The server's deploy manager does
//! the work (through `Control`); these handlers check input and say who asked (the token's name).

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use gantry_engine::ports::{DeployRequest, TokenRecord};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
pub struct ListQuery {
    project: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        state
            .control
            .environment_status(q.project.as_deref(), None)
            .await?,
    ))
}

pub async fn status(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        state
            .control
            .environment_status(Some(&project), Some(&environment))
            .await?,
    ))
}

pub async fn releases(
    State(state): State<AppState>,
    Path((project, environment)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.control.releases(&project, &environment).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    artifact: String,
    run: Option<i64>,
    digest: Option<String>,
    #[serde(default)]
    force: bool,
    /// Answer only after the bake period passed (a pipeline's deploy stage does).
    #[serde(default)]
    wait: bool,
    /// Who asked, as the client sees it (`run 12 (cli)`); recorded next to the token's name.
    by: Option<String>,
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
    Json(body): Json<DeployBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    };
    let (ok, report) = state.control.deploy(request, body.wait).await?;
    if ok {
        Ok((StatusCode::OK, Json(report)))
    } else {
        let mut report = report;
        let message = report["message"]
            .as_str()
            .unwrap_or("the deployment failed")
            .to_string();
        report["error"] = json!({ "code": "deploy_failed", "message": message });
        Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(report)))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    to: Option<i64>,
    by: Option<String>,
}

pub async fn rollback(
    State(state): State<AppState>,
    Extension(token): Extension<TokenRecord>,
    Path((project, environment)): Path<(String, String)>,
    body: Option<Json<RollbackBody>>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let by = who(&token, body.by.as_deref());
    Ok(Json(
        state
            .control
            .rollback(&project, &environment, body.to, &by)
            .await?,
    ))
}
