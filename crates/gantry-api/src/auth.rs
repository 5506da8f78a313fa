//! API tokens: random, shown once, stored as their sha256. A request presents one as
//! `Authorization: Bearer <token>`; each route names the least role it needs.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use gantry_model::Role;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of every token gantry makes (recognisable in leaked-secret scans).
pub const TOKEN_PREFIX: &str = "gnt_";

/// A new random token (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// What is stored for a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The stored hash of the token a request presented (set by [`require`]).
#[derive(Debug, Clone)]
pub struct CallerHash(pub String);

/// Checks the request's token against the role the route needs: 401 without a valid token,
/// 403 with a token whose role is too low.
pub async fn require(
    State((state, needed)): State<(AppState, Role)>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // The scheme's name is case-insensitive (RFC 7235): `bearer`, `BEARER` and `Bearer` alike.
    let Some(token) = header
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return Err(ApiError::unauthorized(
            "this route needs a token: send `Authorization: Bearer <token>`",
        ));
    };
    let hash = hash_token(token);
    let Some(record) = state.store.token_by_hash(&hash).await? else {
        return Err(ApiError::unauthorized("the token is not valid"));
    };
    if !record.role.allows(needed) {
        return Err(ApiError::forbidden(format!(
            "this route needs the {needed} role; token `{}` has {}",
            record.name, record.role
        )));
    }
    // Handlers that record who asked read the token's record; a login link, its hash.
    request.extensions_mut().insert(record);
    request.extensions_mut().insert(CallerHash(hash));
    Ok(next.run(request).await)
}
