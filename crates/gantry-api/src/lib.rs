//! The HTTP face of gantry, and the only crate that knows HTTP and JSON: the REST API under
//! `/api/`, push webhooks under `/hooks/`, live logs as server-sent events, token auth with
//! roles, `/healthz`, Prometheus `/metrics`, the OpenAPI document of it all, and the dashboard
//! under `/ui/`.
//!
//! Codemap:
//! - [`routes`]: the route table — every route with its method, role and summary; the router
//!   and the OpenAPI document are both built from it.
//! - `handlers`: the API's handlers (projects, runs, logs, SSE, cancel, re-run, trigger, tokens).
//! - `hooks`: webhook signatures (GitHub, GitLab, Gitea/Forgejo) and push payloads.
//! - `environments`: environment status, releases, deploy and rollback (the server does the work).
//! - `runners`: what `gantry runner`s call: claims, lease renewals, an attempt's records,
//!   the commit's files, objects up and down, how the job ended (every call checked against
//!   the job's lease).
//! - `shares`: signed, expiring, revocable share links to artifacts (`/a/{token}`).
//! - [`auth`]: tokens (hashing, generation) and the role check.
//! - [`error`]: `ApiError`, the one place errors become HTTP responses, and `ControlError`,
//!   what the server's operations answer with.
//! - [`metrics`]: the Prometheus registry.
//! - [`state`]: what handlers share, and the `Control` port the server implements.
//! - [`web`]: the dashboard: pages, sessions, CSRF, charts.
//! - [`tls`]: HTTPS: the certificate and key from PEM files, a listener that hands over
//!   connections once their handshake is done.

pub mod auth;
mod environments;
pub mod error;
mod handlers;
mod hooks;
pub mod metrics;
pub mod routes;
mod runners;
mod shares;
pub mod state;
pub mod tls;
pub mod types;
pub mod web;

pub use error::{ApiError, ControlError};
pub use routes::{ROUTE_TABLE, RouteInfo, router};
pub use state::{
    AppState, Control, PullRequestEvent, RouterSample, ShareKey, TriggerOutcome, TriggerRequest,
    TriggerSource,
};

/// Serves the API on `listener` until `shutdown` completes; in-flight requests finish first.
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    // The charts' sampler lives as long as the server answers.
    let sampler = state.history.spawn(state.control.clone());
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    sampler.abort();
    served
}
