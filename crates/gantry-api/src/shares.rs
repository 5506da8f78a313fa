//! Share links: a URL any outside service can fetch with plain curl, without a gantry token.
//! `/a/{id}.{expires}.{mac}`: `mac` is an HMAC-SHA256, under the server's key, over the share
//! id, its expiry and the artifact's digest, so a link names exactly one artifact version and
//! cannot be altered. Each link is also a row in the state store, so it can be revoked.
//! Expired: 410; tampered, unknown or revoked: 403; all as JSON errors that say nothing about
//! other artifacts. Downloads answer `Range`, `ETag` (the digest), `If-None-Match`,
//! `Content-Length` and a `Content-Disposition` file name, streamed from whichever store holds
//! the object (local disk or S3).
//!
//! A stable link, `/s/{id}.{mac}`, stays valid while the artifact exists and the link is not
//! revoked; each visit is redirected (302) to a freshly signed `/a/` URL that lives
//! [`REDIRECT_LIFETIME`], or to a fresh S3 presigned URL when the link was made with `presign`.
//! With an S3 store, `presign` alone returns an S3 presigned GET URL (which S3 checks, and which
//! cannot be revoked).

use crate::error::ApiError;
use crate::state::AppState;
use crate::types;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_engine::ports::{ArtifactQuery, ShareRecord};

/// The longest an S3 presigned URL may live (AWS's limit for SigV4).
const MAX_PRESIGN: std::time::Duration = std::time::Duration::from_secs(7 * 86400);
use gantry_model::duration::parse_duration;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn mac(key: &[u8], id: i64, expires: i64, digest: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("gantry-share:{id}:{expires}:{digest}").as_bytes());
    m
}

fn stable_mac(key: &[u8], id: i64, digest: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("gantry-stable-share:{id}:{digest}").as_bytes());
    m
}

/// How long the URL a stable link redirects to stays valid.
pub const REDIRECT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Expiry recorded for stable links (they end by revocation or removal of the artifact).
const NEVER: i64 = i64::MAX / 2;

/// The path of a stable link.
pub fn stable_path(key: &[u8], share: &ShareRecord) -> String {
    let sig = hex::encode(
        stable_mac(key, share.id, &share.digest)
            .finalize()
            .into_bytes(),
    );
    format!("/s/{}.{sig}", share.id)
}

/// The path of a share's link, valid until `expires_at`.
fn signed_path(key: &[u8], share: &ShareRecord, expires_at: i64) -> String {
    let sig = hex::encode(
        mac(key, share.id, expires_at, &share.digest)
            .finalize()
            .into_bytes(),
    );
    format!("/a/{}.{expires_at}.{sig}", share.id)
}

/// The path of a share's link.
pub fn link_path(key: &[u8], share: &ShareRecord) -> String {
    signed_path(key, share, share.expires_at)
}

use gantry_engine::ports::now_millis as now;

fn refused() -> ApiError {
    ApiError::forbidden("this link is not valid")
}

/// Checks a link and returns its share: 403 for anything altered, unknown or revoked, 410 when expired.
async fn verify(state: &AppState, token: &str) -> Result<ShareRecord, ApiError> {
    let mut parts = token.split('.');
    let (Some(id), Some(expires), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refused());
    };
    let (Ok(id), Ok(expires), Ok(sig)) =
        (id.parse::<i64>(), expires.parse::<i64>(), hex::decode(sig))
    else {
        return Err(refused());
    };
    let share = state.store.share(id).await?.ok_or_else(refused)?;
    // A stable link's redirects carry their own short expiry; any other link its recorded one.
    if (!share.stable && share.expires_at != expires)
        || mac(&state.share_key.get(), id, expires, &share.digest)
            .verify_slice(&sig)
            .is_err()
    {
        return Err(refused());
    }
    if share.revoked_at.is_some() {
        return Err(ApiError::forbidden("this link was revoked"));
    }
    if now() >= expires {
        return Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this link has expired; ask for a new one",
        ));
    }
    Ok(share)
}

/// `GET /a/{token}`: the artifact's bytes.
pub async fn download(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let share = verify(&state, &token).await?;
    let size = state.artifacts.size(&share.digest).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::GONE,
            "removed",
            "the artifact behind this link was removed",
        )
    })?;
    let etag = format!("\"{}\"", share.digest);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, size));
    let (status, start, len) = match range {
        None => (StatusCode::OK, 0, size),
        Some(Some((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        Some(None) => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                "the requested range is not satisfiable",
            )
            .into_response();
            resp.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).map_err(anyhow::Error::from)?,
            );
            return Ok(resp);
        }
    };
    let body = Body::from_stream(state.artifacts.read(&share.digest, start, len).await?);
    let disposition = format!(
        "attachment; filename=\"{}\"",
        share.file_name.replace(['"', '\\', '\r', '\n', '/'], "_")
    );
    let mut resp = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, share.media_type.as_str())
        .header(header::CONTENT_LENGTH, len)
        .header(header::ETAG, etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_DISPOSITION, disposition)
        .header(header::CACHE_CONTROL, "private, no-transform")
        .body(body)
        .map_err(anyhow::Error::from)?;
    if status == StatusCode::PARTIAL_CONTENT {
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
                .map_err(anyhow::Error::from)?,
        );
    }
    Ok(resp)
}

/// One byte range of `Range: bytes=a-b` (also `a-` and `-n`), inclusive; `None` if unsatisfiable.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.saturating_sub(n), size - 1)
        }
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    (a <= b && a < size).then_some((a, b))
}

/// The name a download is saved under: `name-<12 hex of the digest>[.tar.zst]`.
fn download_name(artifact: &gantry_engine::ports::ArtifactRecord) -> String {
    let ext = if artifact.media_type == "application/vnd.gantry.tar+zstd" {
        ".tar.zst"
    } else {
        ""
    };
    let hex = artifact.digest.trim_start_matches("sha256:");
    format!("{}-{}{ext}", artifact.name, &hex[..hex.len().min(12)])
}

fn no_presign(state: &AppState) -> ApiError {
    ApiError::bad_request(format!(
        "presigned URLs need an S3 artifact store, and this server keeps artifacts in {}; share without `presign` for a gantry link",
        state.artifacts.location()
    ))
}

/// `POST /api/artifacts/shares`: a new link to one artifact version.
pub async fn create(
    State(state): State<AppState>,
    Json(body): Json<types::NewShare>,
) -> Result<(StatusCode, Json<types::ShareLink>), ApiError> {
    if body.name.is_none() && body.digest.is_none() {
        return Err(ApiError::bad_request(
            "name the artifact (`name`, optionally `run`) or give its `digest`",
        ));
    }
    if body.stable && body.expires.is_some() {
        return Err(ApiError::bad_request(
            "a stable link does not expire (revoke it to end it); leave out `expires`",
        ));
    }
    let expires_in =
        parse_duration(body.expires.as_deref().unwrap_or("1h")).map_err(ApiError::bad_request)?;
    if expires_in.is_zero() || expires_in > std::time::Duration::from_secs(366 * 86400) {
        return Err(ApiError::bad_request(
            "`expires` must be more than zero and at most a year",
        ));
    }
    let artifact = state
        .store
        .find_artifact(&ArtifactQuery {
            project: body.project.as_deref(),
            name: body.name.as_deref(),
            run: body.run,
            digest: body.digest.as_deref(),
        })
        .await?
        .ok_or_else(|| ApiError::not_found("no such artifact"))?;
    if artifact.removed_at.is_some() || state.artifacts.size(&artifact.digest).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "removed",
            format!(
                "{} {} is no longer stored (removed by retention?)",
                artifact.name, artifact.digest
            ),
        ));
    }
    let created = now();
    let file_name = download_name(&artifact);
    if body.presign && !body.stable {
        if expires_in > MAX_PRESIGN {
            return Err(ApiError::bad_request(
                "an S3 presigned URL lives at most 7 days (`expires`); use `stable` for a link that lasts",
            ));
        }
        let url = state
            .artifacts
            .presign(&artifact.digest, expires_in, &file_name)
            .await?
            .ok_or_else(|| no_presign(&state))?;
        return Ok((
            StatusCode::CREATED,
            Json(types::ShareLink {
                id: None,
                url,
                path: None,
                digest: artifact.digest,
                stable: false,
                presigned: true,
                expires_at: Some(created + expires_in.as_millis() as i64),
            }),
        ));
    }
    if body.presign
        && state
            .artifacts
            .presign(&artifact.digest, REDIRECT_LIFETIME, &file_name)
            .await?
            .is_none()
    {
        return Err(no_presign(&state));
    }
    let share = state
        .store
        .create_share(&ShareRecord {
            id: 0,
            digest: artifact.digest.clone(),
            file_name,
            media_type: artifact.media_type.clone(),
            expires_at: if body.stable {
                NEVER
            } else {
                created + expires_in.as_millis() as i64
            },
            revoked_at: None,
            created_at: created,
            created_by: "api".into(),
            stable: body.stable,
            presign: body.presign,
        })
        .await?;
    let path = if share.stable {
        stable_path(&state.share_key.get(), &share)
    } else {
        link_path(&state.share_key.get(), &share)
    };
    Ok((
        StatusCode::CREATED,
        Json(types::ShareLink {
            id: Some(share.id),
            url: format!("{}{path}", state.public_url),
            path: Some(path),
            digest: share.digest,
            stable: share.stable,
            presigned: false,
            expires_at: (!share.stable).then_some(share.expires_at),
        }),
    ))
}

/// `GET /s/{token}`: a stable link; redirects to a freshly signed URL for the same artifact.
pub async fn stable(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let (Some((id, sig)), true) = (token.split_once('.'), token.len() < 200) else {
        return Err(refused());
    };
    let (Ok(id), Ok(sig)) = (id.parse::<i64>(), hex::decode(sig)) else {
        return Err(refused());
    };
    let share = state.store.share(id).await?.ok_or_else(refused)?;
    if !share.stable
        || stable_mac(&state.share_key.get(), id, &share.digest)
            .verify_slice(&sig)
            .is_err()
    {
        return Err(refused());
    }
    if share.revoked_at.is_some() {
        return Err(ApiError::forbidden("this link was revoked"));
    }
    if state.artifacts.size(&share.digest).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "removed",
            "the artifact behind this link was removed",
        ));
    }
    let target = if share.presign {
        state
            .artifacts
            .presign(&share.digest, REDIRECT_LIFETIME, &share.file_name)
            .await?
            .ok_or_else(|| no_presign(&state))?
    } else {
        let expires = now() + REDIRECT_LIFETIME.as_millis() as i64;
        format!(
            "{}{}",
            state.public_url,
            signed_path(&state.share_key.get(), &share, expires)
        )
    };
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, target)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::empty())
        .map_err(|e| anyhow::Error::from(e).into())
}

/// `POST /api/share-key/rotate`: a new signing key; every link made before stops working.
pub async fn rotate_key(
    State(state): State<AppState>,
) -> Result<Json<types::KeyRotated>, ApiError> {
    let key = state.control.rotate_share_key().await?;
    state.share_key.set(key);
    Ok(Json(types::KeyRotated {
        rotated: true,
        note: "every share link made before now is refused (403); make new ones with gantry artifact share".into(),
    }))
}

/// `POST /api/shares/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<types::Revoked>, ApiError> {
    if !state.store.revoke_share(id, now()).await? {
        return Err(ApiError::not_found(format!("no share {id}")));
    }
    Ok(Json(types::Revoked { id, revoked: true }))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
