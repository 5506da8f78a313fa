//! Artifacts: name, digest, size, run and pins; a share link made with an expiry (the API's
//! own operation), shown to copy, and revoked.

use super::pages::{Chrome, api_error_page, error_page, respond};
use super::render;
use super::session::Visitor;
use crate::state::AppState;
use crate::types;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use gantry_model::Role;
use serde::Deserialize;

pub struct Row {
    pub name: String,
    pub digest: String,
    pub short: String,
    pub size: String,
    pub project: String,
    pub branch: String,
    pub run: i64,
    pub job: String,
    pub pins: String,
    pub removed: bool,
}

pub struct ShareView {
    pub id: i64,
    pub url: String,
    pub digest: String,
    pub file: String,
    pub expires: String,
    pub revoked: bool,
}

#[derive(Template)]
#[template(path = "ui/artifacts.html")]
struct ArtifactsPage {
    chrome: Chrome,
    rows: Vec<Row>,
    project: String,
    share: Option<ShareView>,
    can_deploy: bool,
    csrf: String,
}

#[derive(Deserialize, Default)]
pub struct ArtifactsQuery {
    project: Option<String>,
    /// A share just made (or revoked), to show.
    share: Option<i64>,
}

pub async fn page_of(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<ArtifactsQuery>,
) -> Response {
    let project = q.project.filter(|p| !p.is_empty());
    let listed = match state
        .store
        .list_artifacts(project.as_deref(), None, 200)
        .await
    {
        Ok(l) => l,
        Err(e) => return api_error_page(e.into()),
    };
    let rows = listed
        .iter()
        .map(types::ArtifactListing::from)
        .map(|l| Row {
            short: render::short_digest(&l.artifact.digest),
            size: render::size(l.artifact.size),
            removed: l.artifact.removed_at.is_some(),
            name: l.artifact.name,
            digest: l.artifact.digest,
            project: l.project,
            branch: l.branch.unwrap_or_default(),
            run: l.artifact.run_id,
            job: l.job,
            pins: l.pins.join(", "),
        })
        .collect();
    let mut share = None;
    if let Some(id) = q.share
        && let Ok(Some(s)) = state.store.share(id).await
    {
        let key = state.share_key.get();
        let path = if s.stable {
            crate::shares::stable_path(&key, &s)
        } else {
            crate::shares::link_path(&key, &s)
        };
        let now = gantry_engine::ports::now_millis();
        share = Some(ShareView {
            id: s.id,
            url: format!("{}{path}", state.public_url),
            digest: s.digest.clone(),
            file: s.file_name.clone(),
            expires: if s.stable {
                "never (stable; ends when revoked)".into()
            } else if s.expires_at <= now {
                "expired".into()
            } else {
                format!("in {}", render::duration(s.expires_at - now))
            },
            revoked: s.revoked_at.is_some(),
        });
    }
    respond(
        StatusCode::OK,
        &ArtifactsPage {
            chrome: Chrome::new("Artifacts", &visitor, 0),
            rows,
            project: project.unwrap_or_default(),
            share,
            can_deploy: visitor.can_deploy(),
            csrf: visitor.csrf.clone(),
        },
    )
}

#[derive(Deserialize)]
pub struct ShareForm {
    #[serde(default)]
    csrf: String,
    digest: String,
    #[serde(default)]
    expires: String,
    /// A checkbox: present when ticked.
    stable: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<ShareForm>,
) -> Response {
    if let Err(r) = visitor.check(&form.csrf, Role::Deployer) {
        return r.into_response();
    }
    let stable = form.stable.is_some();
    let body = types::NewShare {
        project: None,
        name: None,
        run: None,
        digest: Some(form.digest),
        expires: (!stable && !form.expires.is_empty()).then_some(form.expires),
        presign: false,
        stable,
    };
    match crate::shares::create(State(state), Json(body)).await {
        Ok((_, Json(link))) => match link.id {
            Some(id) => Redirect::to(&format!("/ui/artifacts?share={id}")).into_response(),
            None => error_page(StatusCode::INTERNAL_SERVER_ERROR, "the link has no id"),
        },
        Err(e) => api_error_page(e),
    }
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

pub async fn revoke(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Form(form): Form<RevokeForm>,
) -> Response {
    if let Err(r) = visitor.check(&form.csrf, Role::Deployer) {
        return r.into_response();
    }
    match crate::shares::revoke(State(state), Path(id)).await {
        Ok(_) => Redirect::to(&format!("/ui/artifacts?share={id}")).into_response(),
        Err(e) => api_error_page(e),
    }
}
