//! What every page shares: the chrome around it (title, who is logged in, the logout form,
//! how often it refreshes itself), the headers every page is sent with, error pages, the login
//! and logout forms, and the two static files.

use super::session::{self, LOGIN_COOKIE, Visitor};
use crate::auth::hash_token;
use crate::state::AppState;
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

/// Version of the static files, in their URLs (a new binary is a new URL, so caches can keep
/// them long).
pub const ASSETS: &str = env!("CARGO_PKG_VERSION");

/// The frame of a page.
pub struct Chrome {
    pub title: String,
    pub visitor: Option<Visitor>,
    /// Milliseconds between the page's refreshes of its live parts; 0: none.
    pub poll: u32,
    pub assets: &'static str,
}

impl Chrome {
    pub fn new(title: impl Into<String>, visitor: &Visitor, poll: u32) -> Self {
        Chrome {
            title: title.into(),
            visitor: Some(visitor.clone()),
            poll,
            assets: ASSETS,
        }
    }
    pub(crate) fn anonymous(title: &str) -> Self {
        Chrome {
            title: title.into(),
            visitor: None,
            poll: 0,
            assets: ASSETS,
        }
    }
}

/// A rendered page with the headers every page gets: no caching, a strict content security
/// policy (only this server's script and stylesheet, no framing, forms only to here).
pub fn respond(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut r = (status, Html(html)).into_response();
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            r
        }
        Err(e) => {
            tracing::error!("rendering a page: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be made",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    chrome: Chrome,
    status: u16,
    message: String,
}

/// A page that says what went wrong.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    respond(
        status,
        &ErrorPage {
            chrome: Chrome::anonymous(status.canonical_reason().unwrap_or("error")),
            status: status.as_u16(),
            message: message.to_string(),
        },
    )
}

/// An API error as a page (a `Control` refusal keeps its status and message).
pub fn api_error_page(e: crate::ApiError) -> Response {
    error_page(e.status, &e.message)
}

/// Any other page of the dashboard (a session is needed to learn that it does not exist).
pub async fn not_found(_visitor: Visitor) -> Response {
    error_page(StatusCode::NOT_FOUND, "there is no such page")
}

pub async fn root() -> Redirect {
    Redirect::to("/ui")
}

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage {
    chrome: Chrome,
    csrf: String,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a path of this dashboard may follow a login (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.starts_with("/ui//") && !n.contains('\\') => {
            n.to_string()
        }
        _ => "/ui".to_string(),
    }
}

fn login_page(state: &AppState, next: String, error: Option<String>) -> Response {
    let csrf = session::random_value();
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    let mut r = respond(
        status,
        &LoginPage {
            chrome: Chrome::anonymous("Log in"),
            csrf: csrf.clone(),
            next,
            error,
        },
    );
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(state, LOGIN_COOKIE, &csrf, 3600)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub async fn login_form(State(state): State<AppState>, Query(q): Query<NextQuery>) -> Response {
    login_page(&state, safe_next(q.next.as_deref()), None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || expected != form.csrf {
        return login_page(
            &state,
            next,
            Some("the login form expired or was not sent from this page: try again".into()),
        );
    }
    let hash = hash_token(form.token.trim());
    match state.store.token_by_hash(&hash).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return login_page(&state, next, Some("that token is not valid".into()));
        }
        Err(e) => {
            tracing::error!("login: {e:#}");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "the state store does not answer",
            );
        }
    }
    let cookie = match session::open(&state, hash).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("login: {e:#}");
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "the state store does not answer",
            );
        }
    };
    let mut r = Redirect::to(&next).into_response();
    let h = r.headers_mut();
    let max_age = session::SESSION_TTL / 1000;
    for v in [
        session::set_cookie(&state, session::COOKIE, &cookie, max_age),
        session::set_cookie(&state, LOGIN_COOKIE, "", 0),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = visitor.check(&form.csrf, gantry_model::Role::Viewer) {
        return r.into_response();
    }
    if let Err(e) = session::close(&state, visitor.cookie()).await {
        tracing::error!("logout: {e:#}");
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "the state store does not answer",
        );
    }
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&state, session::COOKIE, "", 0)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

const CSS: &str = include_str!("../../assets/app.css");
const JS: &str = include_str!("../../assets/app.js");

pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return error_page(StatusCode::NOT_FOUND, "no such file"),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_dashboard_paths_follow_a_login() {
        assert_eq!(safe_next(Some("/ui/runs/3")), "/ui/runs/3");
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/ui//evil",
            "/api/tokens",
            "/ui\\x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui");
    }
}
