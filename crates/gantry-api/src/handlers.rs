//! The API's handlers. Each reads what it needs from the state store or asks `Control` to act;
//! errors become JSON through `ApiError`.

use crate::auth::{generate_token, hash_token};
use crate::error::ApiError;
use crate::state::{AppState, TriggerRequest, TriggerSource};
use crate::types;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use gantry_engine::ports::RunFilter;
use gantry_model::{Role, RunStatus};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::Duration;

/// The run with its parts, or 404 naming it.
async fn run_or_404(
    state: &AppState,
    id: i64,
) -> Result<gantry_engine::ports::RunDetail, ApiError> {
    state
        .store
        .run_detail(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))
}

#[derive(Deserialize)]
pub struct ArtifactsQuery {
    project: Option<String>,
    run: Option<i64>,
    limit: Option<i64>,
}

pub async fn list_artifacts(
    State(state): State<AppState>,
    Query(q): Query<ArtifactsQuery>,
) -> Result<Json<types::ArtifactPage<types::ArtifactListing>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let listed = state
        .store
        .list_artifacts(q.project.as_deref(), q.run, limit)
        .await?;
    Ok(Json(types::ArtifactPage {
        artifacts: listed.iter().map(Into::into).collect(),
    }))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut text = state.metrics.render(&*state.store).await?;
    let samples = state.control.router_samples().await;
    if !samples.is_empty() {
        let router = crate::metrics::render_router(&samples);
        match text.rfind("# EOF") {
            Some(i) => text.insert_str(i, &router),
            None => text.push_str(&router),
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub async fn openapi() -> Json<Value> {
    Json(crate::routes::openapi_document())
}

/// The projects, each with `poll_error` when polling its repository fails now (a repository
/// that is gone, a remote out of reach), so a broken project shows where people look.
pub async fn projects(State(state): State<AppState>) -> Result<Json<types::ProjectList>, ApiError> {
    let errors = state.control.poll_errors();
    let projects = state
        .store
        .list_projects()
        .await?
        .into_iter()
        .map(|p| types::Project {
            poll_error: errors.get(&p.name).cloned(),
            id: p.id,
            name: p.name,
            repo: p.repo,
        })
        .collect();
    Ok(Json(types::ProjectList { projects }))
}

#[derive(Deserialize)]
pub struct RunsQuery {
    project: Option<String>,
    branch: Option<String>,
    status: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

pub async fn runs(
    State(state): State<AppState>,
    Query(q): Query<RunsQuery>,
) -> Result<Json<types::RunPage>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be from 1 to 500"));
    }
    let filter = RunFilter {
        project: q.project,
        branch: q.branch,
        status,
        before: q.before,
        limit,
    };
    let runs = state.store.list_runs(&filter).await?;
    let next = (runs.len() as i64 == limit)
        .then(|| runs.last().map(|r| r.id))
        .flatten();
    Ok(Json(types::RunPage {
        runs: runs.iter().map(Into::into).collect(),
        next_before: next,
    }))
}

pub async fn run(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<types::RunDetail>, ApiError> {
    let detail = run_or_404(&state, id).await?;
    let mut wire = types::RunDetail::from(&detail);
    // A failed run carries its diagnosis, made when it failed (see /api/runs/{id}/diagnosis).
    if let Some(d) = state.store.run_diagnosis(id).await? {
        wire.diagnosis = serde_json::from_str(&d).ok();
    }
    Ok(Json(wire))
}

pub async fn artifacts(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<types::ArtifactPage<types::Artifact>>, ApiError> {
    let detail = run_or_404(&state, id).await?;
    Ok(Json(types::ArtifactPage {
        artifacts: detail.artifacts.iter().map(Into::into).collect(),
    }))
}

#[derive(Deserialize)]
pub struct LogsQuery {
    job: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<types::LogPage>, ApiError> {
    run_or_404(&state, id).await?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let lines = state
        .store
        .logs(id, q.job.as_deref(), q.after.unwrap_or(0), limit)
        .await?;
    let next = lines.last().map(|l| l.id).or(q.after);
    Ok(Json(types::LogPage {
        lines: lines.iter().map(Into::into).collect(),
        next_after: next,
    }))
}

/// Live logs as server-sent events: one `log` event per line (its id is the cursor, so a client
/// that reconnects with `Last-Event-ID` resumes exactly after it), then one `end` event with the
/// run's status when the run has finished and every line was sent.
pub async fn logs_stream(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<LogsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    run_or_404(&state, id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let cursor = resume.or(q.after).unwrap_or(0);
    let job = q.job;
    struct Follow {
        state: AppState,
        run: i64,
        job: Option<String>,
        cursor: i64,
        pending: std::collections::VecDeque<Event>,
        done: bool,
    }
    let start = Follow {
        state,
        run: id,
        job,
        cursor,
        pending: Default::default(),
        done: false,
    };
    let stream =
        futures_util::stream::unfold(start, |mut f| async move {
            loop {
                if let Some(ev) = f.pending.pop_front() {
                    return Some((Ok(ev), f));
                }
                if f.done {
                    return None;
                }
                // Read the status first: lines written before it said "finished" are all stored.
                let status = match f.state.store.run_detail(f.run).await {
                    Ok(Some(d)) => d.run.status,
                    _ => return None,
                };
                let lines = f
                    .state
                    .store
                    .logs(f.run, f.job.as_deref(), f.cursor, 500)
                    .await
                    .unwrap_or_default();
                for l in &lines {
                    let data = serde_json::to_string(&types::LogLine::from(l)).unwrap_or_default();
                    f.pending.push_back(
                        Event::default()
                            .id(l.id.to_string())
                            .event("log")
                            .data(data),
                    );
                }
                if let Some(last) = lines.last() {
                    f.cursor = last.id;
                    continue;
                }
                if status.is_finished() {
                    f.done = true;
                    f.pending.push_back(Event::default().event("end").data(
                        serde_json::to_string(&types::LogEnd { status }).unwrap_or_default(),
                    ));
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

pub async fn diagnosis(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<types::RunDiagnosis>, ApiError> {
    Ok(Json(state.control.diagnose(id).await?))
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<types::Cancelling>), ApiError> {
    state.control.cancel(id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(types::Cancelling {
            run: id,
            cancelling: true,
        }),
    ))
}

pub async fn rerun(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<(StatusCode, Json<types::Rerun>), ApiError> {
    let run = state.control.rerun(id).await?;
    Ok((StatusCode::CREATED, Json(types::Rerun { run })))
}

pub async fn approve(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    axum::Extension(token): axum::Extension<gantry_engine::ports::TokenRecord>,
) -> Result<Json<types::Approved>, ApiError> {
    Ok(Json(
        state.control.approve(id, &token.name, token.role).await?,
    ))
}

pub async fn trigger(
    State(state): State<AppState>,
    Path(project): Path<String>,
    body: Option<Json<types::TriggerBody>>,
) -> Result<(StatusCode, Json<types::TriggerOutcome>), ApiError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let outcome = state
        .control
        .trigger(TriggerRequest {
            project,
            branch: body.branch,
            rev: body.rev,
            source: TriggerSource::Manual,
            vars: body.vars,
        })
        .await?;
    Ok((outcome.status(), Json(outcome)))
}

pub async fn create_token(
    State(state): State<AppState>,
    Json(body): Json<types::NewToken>,
) -> Result<(StatusCode, Json<types::CreatedToken>), ApiError> {
    let role: Role = body.role.parse().map_err(ApiError::bad_request)?;
    if body.name.trim().is_empty() {
        return Err(ApiError::bad_request("a token needs a name"));
    }
    let token = generate_token();
    let now = gantry_engine::ports::now_millis();
    let record = state
        .store
        .create_token(body.name.trim(), role, &hash_token(&token), now)
        .await
        .map_err(|e| {
            if e.is::<gantry_engine::ports::Conflict>() {
                ApiError::conflict(e.to_string())
            } else {
                ApiError::from(e)
            }
        })?;
    Ok((
        StatusCode::CREATED,
        Json(types::CreatedToken {
            name: record.name,
            role: record.role.to_string(),
            token,
        }),
    ))
}
