//! One-time login links: `POST /api/login-links` (any valid token) makes a link that opens a
//! dashboard session for the token that asked, once, within [`LINK_TTL`]. `gantry dashboard`
//! and `gantry demo` print one, so nobody pastes a token into a form.
//!
//! Lifecycle: a link is a session record kept under the sha256 of `link:` and its code, made by
//! [`create`]; [`open`] takes it from the store (of two visits racing for one link, one gets
//! it) and makes a real session of it, with a cookie the link never showed. The code itself is
//! never stored.

use super::pages::{Chrome, error_page, respond};
use super::session::{self, COOKIE, SESSION_TTL, random_value};
use crate::auth::{CallerHash, hash_token};
use crate::error::ApiError;
use crate::state::AppState;
use crate::types;
use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_engine::ports::{Millis, SessionRecord, now_millis};

/// How long a login link may wait for its one use.
pub const LINK_TTL: Millis = 10 * 60 * 1000;

fn stored_as(code: &str) -> String {
    hash_token(&format!("link:{code}"))
}

/// `POST /api/login-links`.
pub async fn create(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<CallerHash>,
) -> Result<(StatusCode, Json<types::LoginLink>), ApiError> {
    let code = random_value();
    let now = now_millis();
    state
        .store
        .create_session(&SessionRecord {
            id_hash: stored_as(&code),
            token_hash: caller.0,
            csrf: String::new(),
            created_at: now,
            expires_at: now + LINK_TTL,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(types::LoginLink {
            url: format!("{}/ui/login/link/{code}", state.public_url),
            expires_at: now + LINK_TTL,
        }),
    ))
}

#[derive(Template)]
#[template(path = "ui/linked.html")]
struct Linked {
    chrome: Chrome,
    name: String,
}

/// `GET /ui/login/link/{code}`: the session, or a page saying the link is spent.
pub async fn open(State(state): State<AppState>, Path(code): Path<String>) -> Response {
    let spent = || {
        error_page(
            StatusCode::GONE,
            "this login link was used already or has expired (links work once, within 10 minutes): `gantry dashboard` prints a new one",
        )
    };
    let unavailable = |e: anyhow::Error| {
        tracing::error!("login link: {e:#}");
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store does not answer",
        )
    };
    if code.len() != 64 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return spent();
    }
    let link = match state
        .store
        .take_session(&stored_as(&code), now_millis())
        .await
    {
        Ok(Some(link)) => link,
        Ok(None) => return spent(),
        Err(e) => return unavailable(e),
    };
    // The token may have been revoked since the link was made.
    let token = match state.store.token_by_hash(&link.token_hash).await {
        Ok(Some(t)) => t,
        Ok(None) => return spent(),
        Err(e) => return unavailable(e),
    };
    let cookie = match session::open(&state, link.token_hash).await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    // A page, not a redirect: the session's SameSite=Strict cookie is then sent by a
    // navigation that starts on this site, wherever the link was clicked.
    let mut r = respond(
        StatusCode::OK,
        &Linked {
            chrome: Chrome::anonymous("Logged in"),
            name: token.name,
        },
    );
    let set = session::set_cookie(&state, COOKIE, &cookie, SESSION_TTL / 1000);
    if let Ok(v) = HeaderValue::from_str(&set) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r.into_response()
}
