//! Every route of the server, in one table: method, path, who may call it, and what it does. The
//! router and the OpenAPI document are both built from this table, so they cannot disagree, and
//! a test walks it to check every mutating route refuses a missing or too weak token.

use crate::auth;
use crate::handlers;
use crate::hooks;
use crate::state::AppState;
use crate::types::{self, SchemaFn, schema};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{MethodRouter, get, post, put};
use gantry_engine::canary::CanaryAction;
use gantry_model::Role;
use serde_json::{Value, json};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// Authenticated by the webhook's signature, not a token.
    Signature,
    Token(Role),
    /// Authenticated by the signed link itself (share links).
    Link,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    Yes,
    No,
}

#[derive(Debug, Clone, Copy)]
pub struct RouteInfo {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// The JSON body it takes, if any, and whether it may be left out.
    pub request: Option<(SchemaFn, Required)>,
    /// The JSON body of its success answer, when it is one of [`crate::types`].
    pub response: Option<SchemaFn>,
}

impl RouteInfo {
    const fn takes(mut self, body: SchemaFn) -> Self {
        self.request = Some((body, Required::Yes));
        self
    }
    /// A body every field of which is optional: none at all is fine.
    const fn may_take(mut self, body: SchemaFn) -> Self {
        self.request = Some((body, Required::No));
        self
    }
    const fn answers(mut self, body: SchemaFn) -> Self {
        self.response = Some(body);
        self
    }
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
) -> RouteInfo {
    RouteInfo {
        method,
        path,
        access,
        summary,
        request: None,
        response: None,
    }
}

use Access::{Link, Public, Signature, Token};

pub const ROUTE_TABLE: &[RouteInfo] = &[
    route(
        "GET",
        "/healthz",
        Public,
        "Liveness: answers ok while the server runs",
    ),
    route("GET", "/metrics", Public, "Prometheus metrics"),
    route(
        "GET",
        "/api/openapi.json",
        Public,
        "This API's OpenAPI document",
    ),
    route(
        "POST",
        "/hooks/{project}",
        Signature,
        "Push webhook (GitHub, GitLab, Gitea/Forgejo, or plain {ref, after})",
    ),
    route("GET", "/api/projects", Token(Role::Viewer), "List projects").answers(schema::<types::ProjectList>),
    route(
        "POST",
        "/api/projects/{project}/trigger",
        Token(Role::Deployer),
        "Queue a run of a branch or revision",
    )
    .may_take(schema::<types::TriggerBody>)
    .answers(schema::<types::TriggerOutcome>),
    route(
        "GET",
        "/api/runs",
        Token(Role::Viewer),
        "List runs, newest first (filters: project, branch, status; paged by before)",
    )
    .answers(schema::<types::RunPage>),
    route(
        "GET",
        "/api/runs/{id}",
        Token(Role::Viewer),
        "A run with its stages, jobs, steps and artifacts",
    )
    .answers(schema::<types::RunDetail>),
    route(
        "GET",
        "/api/runs/{id}/logs",
        Token(Role::Viewer),
        "Log lines of a run (optionally one job), after a cursor",
    )
    .answers(schema::<types::LogPage>),
    route(
        "GET",
        "/api/runs/{id}/logs/stream",
        Token(Role::Viewer),
        "Live log lines as server-sent events; resumable with Last-Event-ID",
    ),
    route(
        "GET",
        "/api/runs/{id}/artifacts",
        Token(Role::Viewer),
        "Artifacts of a run",
    )
    .answers(schema::<types::ArtifactPage<types::Artifact>>),
    route(
        "GET",
        "/api/runs/{id}/diagnosis",
        Token(Role::Viewer),
        "Why a failed run failed: category, evidence, fix, what changed since the last good run",
    )
    .answers(schema::<types::RunDiagnosis>),
    route(
        "POST",
        "/api/runs/{id}/cancel",
        Token(Role::Deployer),
        "Cancel a queued or running run",
    )
    .answers(schema::<types::Cancelling>),
    route(
        "POST",
        "/api/runs/{id}/rerun",
        Token(Role::Deployer),
        "Queue a new run of the same commit",
    )
    .answers(schema::<types::Rerun>),
    route(
        "POST",
        "/api/runs/{id}/approve",
        // The least role; the stage names the roles that may approve it, checked then.
        Token(Role::Viewer),
        "Approve the approval stage a run waits at (the stage's `roles` say which tokens may)",
    )
    .answers(schema::<types::Approved>),
    route(
        "POST",
        "/api/tokens",
        Token(Role::Admin),
        "Create an API token (shown once)",
    )
    .takes(schema::<types::NewToken>)
    .answers(schema::<types::CreatedToken>),
    route(
        "POST",
        "/api/login-links",
        Token(Role::Viewer),
        "A one-time link that opens a dashboard session for the calling token (one use, within 10 minutes)",
    )
    .answers(schema::<types::LoginLink>),
    route(
        "POST",
        "/api/share-key/rotate",
        Token(Role::Admin),
        "Replace the key share links are signed with: every link made before is refused from now on",
    )
    .answers(schema::<types::KeyRotated>),
    route(
        "GET",
        "/a/{token}",
        Link,
        "Download a shared artifact (Range, ETag; 410 when expired, 403 when altered or revoked)",
    ),
    route(
        "GET",
        "/s/{token}",
        Link,
        "A stable share link: redirects to a freshly signed download URL (403 when altered or revoked, 410 when the artifact is gone)",
    ),
    route(
        "GET",
        "/api/artifacts",
        Token(Role::Viewer),
        "List artifacts, newest first, with project, branch, commit, job and pins (optionally of one project or run)",
    )
    .answers(schema::<types::ArtifactPage<types::ArtifactListing>>),
    route(
        "POST",
        "/api/artifacts/shares",
        Token(Role::Deployer),
        "Create a share link to one artifact version (name and run, or digest; expires; stable; presign for an S3 presigned URL)",
    )
    .takes(schema::<types::NewShare>)
    .answers(schema::<types::ShareLink>),
    route(
        "POST",
        "/api/shares/{id}/revoke",
        Token(Role::Deployer),
        "Revoke a share link",
    )
    .answers(schema::<types::Revoked>),
    route(
        "GET",
        "/api/environments",
        Token(Role::Viewer),
        "Status of every environment (optionally of one project): live and previous release, health, uptime",
    )
    .answers(schema::<Vec<types::EnvStatus>>),
    route(
        "GET",
        "/api/projects/{project}/environments/{environment}",
        Token(Role::Viewer),
        "Status of one environment: live and previous release, health, uptime, lock",
    )
    .answers(schema::<types::EnvStatus>),
    route(
        "GET",
        "/api/projects/{project}/environments/{environment}/releases",
        Token(Role::Viewer),
        "Releases of an environment with their history, newest first",
    )
    .answers(schema::<Vec<types::ReleaseHistory>>),
    route(
        "GET",
        "/api/projects/{project}/environments/{environment}/diagnosis",
        Token(Role::Viewer),
        "Why the environment's latest failed release failed: category, evidence (health checks, crash output, canary numbers), fix, what changed",
    )
    .answers(schema::<types::ReleaseDiagnosis>),
    route(
        "POST",
        "/api/projects/{project}/environments/{environment}/deploy",
        Token(Role::Deployer),
        "Deploy an artifact (name with run or digest; force; wait for the bake); 422 when the deployment failed",
    )
    .takes(schema::<types::DeployBody>)
    .answers(schema::<types::DeployOutcome>),
    route(
        "POST",
        "/api/projects/{project}/environments/{environment}/promote",
        Token(Role::Deployer),
        "Promote the running canary to its next step, or to everyone with {\"full\": true}",
    )
    .may_take(schema::<types::CanaryBody>)
    .answers(schema::<types::Done>),
    route(
        "POST",
        "/api/projects/{project}/environments/{environment}/abort",
        Token(Role::Deployer),
        "Abort the running canary: everyone back to stable, the canary's release failed",
    )
    .may_take(schema::<types::CanaryBody>)
    .answers(schema::<types::Done>),
    route(
        "POST",
        "/api/projects/{project}/environments/{environment}/pause",
        Token(Role::Deployer),
        "Pause the running canary (its share holds; analysis waits)",
    )
    .may_take(schema::<types::CanaryBody>)
    .answers(schema::<types::Done>),
    route(
        "POST",
        "/api/projects/{project}/environments/{environment}/resume",
        Token(Role::Deployer),
        "Resume a paused canary",
    )
    .may_take(schema::<types::CanaryBody>)
    .answers(schema::<types::Done>),
    route(
        "POST",
        "/api/projects/{project}/environments/{environment}/alarm",
        Token(Role::Deployer),
        "An alarm (Prometheus Alertmanager webhook, or {\"status\": \"firing\", \"name\"}): a firing one aborts the environment's canary or rolls back its release in its bake",
    )
    .answers(schema::<types::AlarmOutcome>),
    route(
        "POST",
        "/api/environments/{environment}/alarm",
        Token(Role::Deployer),
        "The same alarm without the project: refused (409) when several projects have an environment of that name",
    )
    .answers(schema::<types::AlarmOutcome>),
    route(
        "POST",
        "/api/projects/{project}/environments/{environment}/rollback",
        Token(Role::Deployer),
        "Roll back to the previous healthy release, or to release `to`",
    )
    .may_take(schema::<types::RollbackBody>)
    .answers(schema::<types::Release>),
    route(
        "POST",
        "/api/projects/{project}/environments/{environment}/stop",
        Token(Role::Deployer),
        "Stop the environment on purpose: its router and releases; it stays stopped across restarts until the next deploy or rollback",
    )
    .may_take(schema::<types::StopBody>)
    .answers(schema::<types::Stopped>),
    route(
        "POST",
        "/api/runner/claim",
        Token(Role::Runner),
        "A runner claims a job its labels fit (waiting up to wait_ms): 200 with the job, its lease and its secrets, 204 when none came",
    )
    .takes(schema::<types::ClaimBody>)
    .answers(schema::<types::ClaimedJob>),
    route(
        "POST",
        "/api/runner/jobs/{id}/heartbeat",
        Token(Role::Runner),
        "Renews a claimed job's lease (x-gantry-lease); says whether to stop it; 409 once the lease is not the runner's any more",
    )
    .answers(schema::<types::Heartbeat>),
    route(
        "POST",
        "/api/runner/jobs/{id}/calls",
        Token(Role::Runner),
        "One record or lookup of a claimed job's attempt: steps, log lines, artifacts, caches",
    )
    .takes(schema::<types::AttemptCall>)
    .answers(schema::<types::CallAnswer>),
    route(
        "GET",
        "/api/runner/jobs/{id}/source",
        Token(Role::Runner),
        "The files of a claimed job's commit, packed (tar.zst; its digest in x-gantry-digest)",
    ),
    route(
        "GET",
        "/api/runner/jobs/{id}/objects/{digest}",
        Token(Role::Runner),
        "An object of the artifact store, for a claimed job (artifacts it needs, caches)",
    ),
    route(
        "PUT",
        "/api/runner/jobs/{id}/objects/{digest}",
        Token(Role::Runner),
        "Uploads an object a claimed job packed; kept only if it matches its digest",
    ),
    route(
        "POST",
        "/api/runner/jobs/{id}/objects/{digest}/download",
        Token(Role::Runner),
        "Where to fetch an object a claimed job needs: straight from S3 (a presigned GET) or from this server",
    )
    .answers(schema::<types::DownloadOffer>),
    route(
        "POST",
        "/api/runner/jobs/{id}/objects/{digest}/upload",
        Token(Role::Runner),
        "How to upload an object a claimed job packed: not at all (the store has it), straight to S3 (a presigned PUT bound to its SHA-256), or through this server",
    )
    .answers(schema::<types::UploadOffer>),
    route(
        "POST",
        "/api/runner/jobs/{id}/finish",
        Token(Role::Runner),
        "How a claimed job's attempt ended",
    )
    .takes(schema::<types::JobEnd>)
    .answers(schema::<types::Done>),
];

fn handler(info: &RouteInfo) -> MethodRouter<AppState> {
    match (info.method, info.path) {
        ("GET", "/healthz") => get(handlers::healthz),
        ("POST", "/api/runner/claim") => post(crate::runners::claim),
        ("POST", "/api/runner/jobs/{id}/heartbeat") => post(crate::runners::heartbeat),
        ("POST", "/api/runner/jobs/{id}/calls") => post(crate::runners::call),
        ("GET", "/api/runner/jobs/{id}/source") => get(crate::runners::source),
        ("GET", "/api/runner/jobs/{id}/objects/{digest}") => get(crate::runners::get_object),
        ("PUT", "/api/runner/jobs/{id}/objects/{digest}") => put(crate::runners::put_object),
        ("POST", "/api/runner/jobs/{id}/objects/{digest}/download") => {
            post(crate::runners::download_offer)
        }
        ("POST", "/api/runner/jobs/{id}/objects/{digest}/upload") => {
            post(crate::runners::upload_offer)
        }
        ("POST", "/api/runner/jobs/{id}/finish") => post(crate::runners::finish),
        ("GET", "/metrics") => get(handlers::metrics),
        ("GET", "/api/openapi.json") => get(handlers::openapi),
        ("POST", "/hooks/{project}") => post(hooks::receive),
        ("GET", "/api/projects") => get(handlers::projects),
        ("POST", "/api/projects/{project}/trigger") => post(handlers::trigger),
        ("GET", "/api/runs") => get(handlers::runs),
        ("GET", "/api/runs/{id}") => get(handlers::run),
        ("GET", "/api/runs/{id}/logs") => get(handlers::logs),
        ("GET", "/api/runs/{id}/logs/stream") => get(handlers::logs_stream),
        ("GET", "/api/runs/{id}/artifacts") => get(handlers::artifacts),
        ("GET", "/api/runs/{id}/diagnosis") => get(handlers::diagnosis),
        ("POST", "/api/runs/{id}/cancel") => post(handlers::cancel),
        ("POST", "/api/runs/{id}/rerun") => post(handlers::rerun),
        ("POST", "/api/runs/{id}/approve") => post(handlers::approve),
        ("POST", "/api/tokens") => post(handlers::create_token),
        ("POST", "/api/login-links") => post(crate::web::links::create),
        ("GET", "/a/{token}") => get(crate::shares::download),
        ("GET", "/s/{token}") => get(crate::shares::stable),
        ("GET", "/api/artifacts") => get(handlers::list_artifacts),
        ("POST", "/api/artifacts/shares") => post(crate::shares::create),
        ("POST", "/api/shares/{id}/revoke") => post(crate::shares::revoke),
        ("POST", "/api/share-key/rotate") => post(crate::shares::rotate_key),
        ("GET", "/api/environments") => get(crate::environments::list),
        ("GET", "/api/projects/{project}/environments/{environment}") => {
            get(crate::environments::status)
        }
        ("GET", "/api/projects/{project}/environments/{environment}/releases") => {
            get(crate::environments::releases)
        }
        ("GET", "/api/projects/{project}/environments/{environment}/diagnosis") => {
            get(crate::environments::diagnosis)
        }
        ("POST", "/api/projects/{project}/environments/{environment}/deploy") => {
            post(crate::environments::deploy)
        }
        ("POST", "/api/projects/{project}/environments/{environment}/promote") => {
            crate::environments::canary(CanaryAction::Promote { full: false })
        }
        ("POST", "/api/projects/{project}/environments/{environment}/abort") => {
            crate::environments::canary(CanaryAction::Abort)
        }
        ("POST", "/api/projects/{project}/environments/{environment}/pause") => {
            crate::environments::canary(CanaryAction::Pause)
        }
        ("POST", "/api/projects/{project}/environments/{environment}/resume") => {
            crate::environments::canary(CanaryAction::Resume)
        }
        ("POST", "/api/environments/{environment}/alarm") => post(crate::environments::alarm),
        ("POST", "/api/projects/{project}/environments/{environment}/alarm") => {
            post(crate::environments::project_alarm)
        }
        ("POST", "/api/projects/{project}/environments/{environment}/rollback") => {
            post(crate::environments::rollback)
        }
        ("POST", "/api/projects/{project}/environments/{environment}/stop") => {
            post(crate::environments::stop)
        }
        (m, p) => panic!("route {m} {p} is in the table but has no handler"),
    }
}

/// The server's router, built from [`ROUTE_TABLE`].
pub fn router(state: AppState) -> Router {
    let mut app: Router<AppState> = Router::new();
    for info in ROUTE_TABLE {
        let mut method_router = handler(info);
        match info.access {
            Token(role) => {
                method_router = method_router
                    .route_layer(from_fn_with_state((state.clone(), role), auth::require))
            }
            Signature => {
                method_router = method_router.layer(DefaultBodyLimit::max(state.max_body_bytes))
            }
            Public | Link => {}
        }
        app = app.route(info.path, method_router);
    }
    app = app.merge(crate::web::routes());
    let fallback_state = state.clone();
    app.fallback(|| async { crate::ApiError::not_found("no such route; see /api/openapi.json") })
        .with_state(fallback_state)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(axum::middleware::map_response(errors_as_json))
}

/// Errors raised before a handler runs (a body over the limit, a path id that is not a number,
/// a body that is not the JSON asked for) come from axum as plain text; they are answered in
/// the one documented shape, `{"error": {"code", "message"}}`, like every other error.
async fn errors_as_json(response: axum::response::Response) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // The dashboard's pages answer errors as pages.
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_json || is_page {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut answer = crate::ApiError::new(status, code, message).into_response();
    // Other headers stay (`Allow` of a 405, say); the body's own are the new body's.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// The OpenAPI 3.1 document of [`ROUTE_TABLE`], with the JSON Schema of every typed body in
/// `components/schemas` (made from [`crate::types`] themselves).
pub fn openapi_document() -> Value {
    let mut generator = types::generator();
    let error = types::schema::<types::ErrorBody>(&mut generator);
    let mut paths = serde_json::Map::new();
    for info in ROUTE_TABLE {
        let params: Vec<Value> = info
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": if name == "id" { "integer" } else { "string" } } }))
            .collect();
        let security = match info.access {
            Token(_) => json!([{ "bearer": [] }]),
            _ => json!([]),
        };
        let role = match info.access {
            Token(r) => format!(" Needs the `{r}` role."),
            Signature => " Authenticated by the webhook signature.".to_string(),
            Link => " Authenticated by the link's own signature; no token.".to_string(),
            Public => String::new(),
        };
        let mut ok = json!({ "description": "OK" });
        if let Some(body) = info.response {
            ok["content"] = json!({ "application/json": { "schema": body(&mut generator) } });
        }
        let mut responses = serde_json::Map::new();
        responses.insert("200".into(), ok);
        if let Token(_) = info.access {
            for status in ["400", "401", "403", "404", "409"] {
                responses.insert(
                    status.into(),
                    json!({ "$ref": "#/components/responses/Error" }),
                );
            }
        }
        let mut op = json!({
            "summary": info.summary,
            "description": format!("{}.{role}", info.summary),
            "parameters": params,
            "security": security,
            "responses": responses,
        });
        if let Some((body, required)) = info.request {
            op["requestBody"] = json!({
                "required": required == Required::Yes,
                "content": { "application/json": { "schema": body(&mut generator) } },
            });
        }
        let entry = paths
            .entry(info.path.to_string())
            .or_insert_with(|| json!({}));
        entry[info.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "gantry", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": { "Error": {
                "description": "A refusal: what is wrong, in `error.message`",
                "content": { "application/json": { "schema": error } }
            } },
            "schemas": generator.take_definitions(true),
        }
    })
}

#[cfg(test)]
mod tests;
