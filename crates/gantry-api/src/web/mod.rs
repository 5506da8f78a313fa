//! The dashboard: server-rendered pages under `/ui/` (askama templates compiled into the
//! binary, one stylesheet, one small script, no request leaves the server), logged in with an
//! API token that becomes a session. Pages read what the API reads and act through the same
//! `Control` operations the API and the CLI use; they never reach around them.
//!
//! Codemap:
//! - [`session`]: sessions, the `Visitor` extractor, CSRF and role checks.
//! - `overview`, `run`, `artifacts`, `environment`: one page each, with their forms.
//! - `pages`: what every page shares (the chrome, login, logout, error pages, assets).
//! - `links`: one-time login links (`POST /api/login-links`, `/ui/login/link/{code}`).
//! - [`render`]: ANSI colours, figures and SVG charts as HTML.
//! - [`history`]: the last hour of each release's router numbers, for the charts.

mod artifacts;
mod environment;
pub mod history;
pub(crate) mod links;
mod overview;
pub(crate) mod pages;
pub mod render;
mod run;
pub mod session;

use crate::state::AppState;
use axum::Router;
use axum::routing::{get, post};

pub use history::History;

/// The dashboard's routes. Pages need a session (else they go to the login form); forms also
/// need the session's CSRF token and, to change anything, the deployer role.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::root))
        .route("/ui", get(overview::page))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/login/link/{code}", get(links::open))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/assets/{file}", get(pages::asset))
        .route("/ui/runs/{id}", get(run::page))
        .route("/ui/runs/{id}/log/earlier", get(run::earlier))
        .route("/ui/runs/{id}/log/stream", get(run::stream))
        .route("/ui/runs/{id}/log.txt", get(run::download))
        .route("/ui/runs/{id}/cancel", post(run::cancel))
        .route("/ui/runs/{id}/rerun", post(run::rerun))
        .route("/ui/runs/{id}/approve", post(run::approve))
        .route("/ui/artifacts", get(artifacts::page_of))
        .route("/ui/shares", post(artifacts::create))
        .route("/ui/shares/{id}/revoke", post(artifacts::revoke))
        .route(
            "/ui/projects/{project}/environments/{environment}",
            get(environment::page_of),
        )
        .route(
            "/ui/projects/{project}/environments/{environment}/confirm",
            get(environment::confirm),
        )
        .route(
            "/ui/projects/{project}/environments/{environment}/act",
            post(environment::act),
        )
        .route("/ui/{*rest}", get(pages::not_found))
}
