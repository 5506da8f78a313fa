//! Dashboard sessions: an API token presented once on the login form becomes a session cookie
//! (random, HttpOnly, SameSite=Strict, Secure when the server's URL is https) that lives
//! [`SESSION_TTL`] or until logout. Each session carries its own CSRF token, which every form
//! sends back; the token's role is read from the store on every request, so a session never
//! outranks the token it was made from.
//!
//! Lifecycle: a session is made by [`open`] at login, found by the `Visitor` extractor (an
//! expired one is not), ended by [`close`] at logout. Sessions are kept in the state store
//! under the sha256 of their cookie, so they outlive a restart of the server and are shared by
//! every server on the same store.

use crate::auth::hash_token;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use gantry_engine::ports::{Millis, SessionRecord, now_millis};
use gantry_model::Role;
use rand::RngCore;

pub const COOKIE: &str = "gantry_session";
/// The login form's own CSRF value (double submit: cookie and form field must match).
pub const LOGIN_COOKIE: &str = "gantry_login";
/// How long a session lives after login.
pub const SESSION_TTL: Millis = 8 * 3600 * 1000;

/// A random value for cookies and CSRF tokens (256 bits, hex).
pub fn random_value() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A new session for the token whose hash is `token_hash`; the cookie value to set.
pub async fn open(state: &AppState, token_hash: String) -> anyhow::Result<String> {
    let cookie = random_value();
    let now = now_millis();
    state
        .store
        .create_session(&SessionRecord {
            id_hash: hash_token(&cookie),
            token_hash,
            csrf: random_value(),
            created_at: now,
            expires_at: now + SESSION_TTL,
        })
        .await?;
    Ok(cookie)
}

pub async fn close(state: &AppState, cookie: &str) -> anyhow::Result<()> {
    state.store.remove_session(&hash_token(cookie)).await
}

/// Who is looking at a page: the token's name and role, and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub name: String,
    pub role: Role,
    pub csrf: String,
    cookie: String,
}

impl Visitor {
    pub fn can_deploy(&self) -> bool {
        self.role.allows(Role::Deployer)
    }

    /// Refuses a form whose CSRF token is not this session's, or a visitor whose role is below
    /// `needed`.
    pub fn check(&self, csrf: &str, needed: Role) -> Result<(), Refusal> {
        if !constant_time_eq(csrf.as_bytes(), self.csrf.as_bytes()) {
            return Err(Refusal::Forbidden(
                "the form's CSRF token is missing or not this session's: reload the page and try again",
            ));
        }
        if !self.role.allows(needed) {
            return Err(Refusal::Forbidden(
                "your token's role may not do this (it needs the deployer role)",
            ));
        }
        Ok(())
    }

    pub fn cookie(&self) -> &str {
        &self.cookie
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a dashboard request was refused.
#[derive(Debug)]
pub enum Refusal {
    /// No session: pages go to the login form, live parts get 401.
    Login {
        next: String,
        live: bool,
    },
    Forbidden(&'static str),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Login { live: true, .. } => {
                (StatusCode::UNAUTHORIZED, "log in again").into_response()
            }
            Refusal::Login { next, live: false } => {
                let next = super::render::url_encode(&next);
                Redirect::to(&format!("/ui/login?next={next}")).into_response()
            }
            Refusal::Forbidden(why) => super::pages::error_page(StatusCode::FORBIDDEN, why),
        }
    }
}

/// The value of cookie `name` in the request's headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for the whole site, Secure over https.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age_s: i64) -> String {
    let secure = if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let live = parts.headers.contains_key("x-gantry-live")
            || parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("text/event-stream"));
        let login = || Refusal::Login {
            next: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/ui".into()),
            live,
        };
        let Some(value) = cookie(&parts.headers, COOKIE) else {
            return Err(login());
        };
        let Ok(Some(session)) = state.store.session(&hash_token(&value), now_millis()).await else {
            return Err(login());
        };
        let Ok(Some(token)) = state.store.token_by_hash(&session.token_hash).await else {
            return Err(login());
        };
        Ok(Visitor {
            name: token.name,
            role: token.role,
            csrf: session.csrf,
            cookie: value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; gantry_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn csrf_and_role_are_both_checked() {
        let v = Visitor {
            name: "t".into(),
            role: Role::Viewer,
            csrf: "abc".into(),
            cookie: "c".into(),
        };
        assert!(v.check("abc", Role::Viewer).is_ok());
        assert!(v.check("abd", Role::Viewer).is_err());
        assert!(v.check("", Role::Viewer).is_err());
        assert!(v.check("abc", Role::Deployer).is_err());
    }
}
