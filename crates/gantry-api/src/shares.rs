//! Share links: a URL any outside service can fetch with plain curl, without a gantry token.
//! `/a/{id}.{expires}.{mac}`: `mac` is an HMAC-SHA256, under the server's key, over the share
//! id, its expiry and the artifact's digest, so a link names exactly one artifact version and
//! cannot be altered. Each link is also a row in the state store, so it can be revoked.
//! Expired: 410; tampered, unknown or revoked: 403; all as JSON errors that say nothing about
//! other artifacts. Downloads answer `Range`, `ETag` (the digest), `If-None-Match`,
//! `Content-Length` and a `Content-Disposition` file name.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_engine::ports::ShareRecord;
use gantry_model::duration::parse_duration;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

fn mac(key: &[u8], id: i64, expires: i64, digest: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(format!("gantry-share:{id}:{expires}:{digest}").as_bytes());
    m
}

/// The path of a share's link.
pub fn link_path(key: &[u8], share: &ShareRecord) -> String {
    let sig = hex::encode(
        mac(key, share.id, share.expires_at, &share.digest)
            .finalize()
            .into_bytes(),
    );
    format!("/a/{}.{}.{sig}", share.id, share.expires_at)
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
    if share.expires_at != expires
        || mac(&state.share_key, id, expires, &share.digest)
            .verify_slice(&sig)
            .is_err()
    {
        return Err(refused());
    }
    if share.revoked_at.is_some() {
        return Err(ApiError::forbidden("this link was revoked"));
    }
    if now() >= share.expires_at {
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
    let path = state.artifacts.local_path(&share.digest).ok_or_else(|| {
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
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(anyhow::Error::from)?;
    let size = file.metadata().await.map_err(anyhow::Error::from)?.len();
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
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(anyhow::Error::from)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file.take(len),
        256 * 1024,
    ));
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

#[derive(Deserialize)]
pub struct NewShare {
    name: Option<String>,
    run: Option<i64>,
    digest: Option<String>,
    expires: Option<String>,
}

/// `POST /api/artifacts/shares`: a new link to one artifact version.
pub async fn create(
    State(state): State<AppState>,
    Json(body): Json<NewShare>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.name.is_none() && body.digest.is_none() {
        return Err(ApiError::bad_request(
            "name the artifact (`name`, optionally `run`) or give its `digest`",
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
        .find_artifact(body.name.as_deref(), body.run, body.digest.as_deref())
        .await?
        .ok_or_else(|| ApiError::not_found("no such artifact"))?;
    let ext = if artifact.media_type == "application/vnd.gantry.tar+zstd" {
        ".tar.zst"
    } else {
        ""
    };
    let created = now();
    let share = state
        .store
        .create_share(&ShareRecord {
            id: 0,
            digest: artifact.digest.clone(),
            file_name: format!(
                "{}-{}{ext}",
                artifact.name,
                &artifact.digest["sha256:".len()..][..12]
            ),
            media_type: artifact.media_type.clone(),
            expires_at: created + expires_in.as_millis() as i64,
            revoked_at: None,
            created_at: created,
            created_by: "api".into(),
        })
        .await?;
    let path = link_path(&state.share_key, &share);
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": share.id, "url": format!("{}{path}", state.public_url), "path": path, "digest": share.digest, "expires_at": share.expires_at }),
        ),
    ))
}

/// `POST /api/shares/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    if !state.store.revoke_share(id, now()).await? {
        return Err(ApiError::not_found(format!("no share {id}")));
    }
    Ok(Json(json!({ "id": id, "revoked": true })))
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
