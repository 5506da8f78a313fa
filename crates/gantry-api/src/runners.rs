//! The runners' routes (`/api/runner/…`, runner tokens only). A claim goes to the server
//! (`Control::claim_job`: the pipeline file and the secrets are its); everything about a
//! claimed job is checked against its lease first — sent in `x-gantry-lease`, matched by its
//! hash, still held — and acts only on that job, its run and its project, whatever the body
//! says.

use crate::auth::hash_token;
use crate::error::ApiError;
use crate::state::AppState;
use crate::types::{
    self, AttemptCall, CallAnswer, ClaimBody, Heartbeat, JobEnd, JobPayload, LEASE_HEADER,
    WireArtifact, WireCache,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use gantry_engine::ports::{
    ArtifactRecord, CacheRecord, LeaseRenewal, NewLogLine, QueuedJob, QueuedJobState,
    StoredArtifact, now_millis,
};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The longest a claim waits for a job.
const MAX_CLAIM_WAIT: Duration = Duration::from_secs(30);

pub async fn claim(
    State(state): State<AppState>,
    Json(body): Json<ClaimBody>,
) -> Result<Response, ApiError> {
    let name = body.runner.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "runner: a runner's name is 1 to 128 printable characters",
        ));
    }
    for (i, label) in body.labels.iter().enumerate() {
        if let Some(problem) = gantry_model::label_problem(label) {
            return Err(ApiError::unprocessable(format!(
                "labels[{i}]: `{label}` is not a label: {problem}"
            )));
        }
    }
    let wait = Duration::from_millis(body.wait_ms.unwrap_or(0)).min(MAX_CLAIM_WAIT);
    match state.control.claim_job(name, &body.labels, wait).await? {
        Some(job) => Ok(Json(job).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// The queued job `id` if the request holds its lease, still in force.
async fn leased(state: &AppState, id: i64, headers: &HeaderMap) -> Result<QueuedJob, ApiError> {
    let Some(lease) = headers.get(LEASE_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::bad_request(format!(
            "calls about a claimed job send its lease in `{LEASE_HEADER}`"
        )));
    };
    let job = state.store.queued_job(id).await?;
    let Some(job) = job.filter(|j| j.lease_hash.as_deref() == Some(hash_token(lease).as_str()))
    else {
        return Err(ApiError::not_found(format!(
            "no job {id} is claimed under this lease"
        )));
    };
    let in_force = job.state == QueuedJobState::Claimed
        && job.lease_until.is_some_and(|until| until >= now_millis());
    if !in_force {
        return Err(gone(id, job.state));
    }
    Ok(job)
}

/// 409: the lease is not in force any more; the runner stops the job.
fn gone(id: i64, state: QueuedJobState) -> ApiError {
    let why = match state {
        QueuedJobState::Lost => "it was called lost (the lease ran out unrenewed)".to_string(),
        QueuedJobState::Claimed => "its lease ran out unrenewed".to_string(),
        other => format!("it is {}", other.as_str()),
    };
    ApiError::conflict(format!(
        "job {id} is not this runner's any more: {why}; stop it"
    ))
}

fn payload_of(job: &QueuedJob) -> Result<JobPayload, ApiError> {
    serde_json::from_str(&job.payload)
        .map_err(|e| ApiError::from(anyhow::anyhow!("corrupt state: queued job {}: {e}", job.id)))
}

pub async fn heartbeat(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Json<Heartbeat>, ApiError> {
    let job = leased(&state, id, &headers).await?;
    let lease = state.control.runner_lease();
    let now = now_millis();
    let hash = job.lease_hash.clone().unwrap_or_default();
    match state
        .store
        .renew_job(id, &hash, now, now + lease.as_millis() as i64)
        .await?
    {
        LeaseRenewal::Held { cancel } => Ok(Json(Heartbeat {
            cancel,
            lease_ms: lease.as_millis() as u64,
        })),
        LeaseRenewal::Gone => Err(gone(id, job.state)),
    }
}

pub async fn finish(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(end): Json<JobEnd>,
) -> Result<Json<types::Done>, ApiError> {
    // Past its lease but not yet called lost, the end still counts: nobody else has the job.
    let Some(lease) = headers.get(LEASE_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::bad_request(format!(
            "calls about a claimed job send its lease in `{LEASE_HEADER}`"
        )));
    };
    if !["succeeded", "failed", "timed_out", "cancelled"].contains(&end.outcome.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "outcome: `{}` is not one of succeeded, failed, timed_out, cancelled",
            end.outcome
        )));
    }
    let recorded = state
        .store
        .finish_job(
            id,
            &hash_token(lease),
            &end.outcome,
            end.exit_code,
            end.error.as_deref(),
            now_millis(),
        )
        .await?;
    if !recorded {
        let now = state.store.queued_job(id).await?;
        return Err(match now {
            Some(j) => gone(id, j.state),
            None => ApiError::not_found(format!("no job {id}")),
        });
    }
    state.control.job_finished(id);
    Ok(Json(types::Done {
        message: format!("job {id} ended {}", end.outcome),
    }))
}

pub async fn source(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = leased(&state, id, &headers).await?;
    let payload = payload_of(&job)?;
    let (file, digest) = state.control.job_source(&payload).await?;
    let f = tokio::fs::File::open(&file)
        .await
        .map_err(|e| ApiError::from(anyhow::anyhow!("opening {}: {e}", file.display())))?;
    let stream = futures_util::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes_of(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(types::DIGEST_HEADER),
                digest,
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

pub async fn get_object(
    State(state): State<AppState>,
    Path((id, digest)): Path<(i64, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    leased(&state, id, &headers).await?;
    let Some(size) = state.artifacts.size(&digest).await? else {
        return Err(ApiError::not_found(format!(
            "no object {digest} in {}",
            state.artifacts.location()
        )));
    };
    let stream = state.artifacts.read(&digest, 0, size).await?;
    Ok((
        [(header::CONTENT_LENGTH, size.to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Takes an object a runner packed: streamed to a file, then checked against its digest and
/// added to the store (nothing is kept when they differ).
pub async fn put_object(
    State(state): State<AppState>,
    Path((id, digest)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    leased(&state, id, &headers).await?;
    if !is_digest(&digest) {
        return Err(ApiError::unprocessable(format!(
            "`{digest}` is not a digest: write sha256:<64 lowercase hex digits>"
        )));
    }
    if state.artifacts.exists(&digest).await? {
        return Ok(StatusCode::OK.into_response());
    }
    let dir = state.control.runner_scratch();
    let part = Part(dir.join(format!(
        "{}-{}.part",
        id,
        crate::auth::generate_token().trim_start_matches(crate::auth::TOKEN_PREFIX)
    )));
    let io = |e: std::io::Error| ApiError::from(anyhow::anyhow!("receiving {digest}: {e}"));
    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
    let mut file = tokio::fs::File::create(&part.0).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("the upload broke off: {e}")))?;
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    drop(file);
    match state.artifacts.import(&digest, &part.0).await {
        Ok(true) => Ok(StatusCode::CREATED.into_response()),
        Ok(false) => Ok(StatusCode::OK.into_response()),
        Err(e) => Err(ApiError::unprocessable(format!("{e:#}"))),
    }
}

/// How long a runner's direct upload or download URL lasts.
const DIRECT_UPLOAD_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Says where a runner fetches an object: straight from the store when it makes a URL for
/// that (S3), else from this server.
pub async fn download_offer(
    State(state): State<AppState>,
    Path((id, digest)): Path<(i64, String)>,
    headers: HeaderMap,
) -> Result<Json<types::DownloadOffer>, ApiError> {
    leased(&state, id, &headers).await?;
    if !is_digest(&digest) || !state.artifacts.exists(&digest).await? {
        return Err(ApiError::not_found(format!(
            "no object {digest} in {}",
            state.artifacts.location()
        )));
    }
    let name = digest.trim_start_matches("sha256:");
    let url = state
        .artifacts
        .presign(&digest, DIRECT_UPLOAD_FOR, name)
        .await?;
    Ok(Json(types::DownloadOffer { url }))
}

/// Says how a runner gets an object into the store: nothing to do when the store has it, else
/// a PUT straight to the store when the store makes one (S3), else through this server.
pub async fn upload_offer(
    State(state): State<AppState>,
    Path((id, digest)): Path<(i64, String)>,
    headers: HeaderMap,
) -> Result<Json<types::UploadOffer>, ApiError> {
    leased(&state, id, &headers).await?;
    if !is_digest(&digest) {
        return Err(ApiError::unprocessable(format!(
            "`{digest}` is not a digest: write sha256:<64 lowercase hex digits>"
        )));
    }
    if state.artifacts.exists(&digest).await? {
        return Ok(Json(types::UploadOffer {
            present: true,
            put: None,
        }));
    }
    let put = state
        .artifacts
        .presign_upload(&digest, DIRECT_UPLOAD_FOR)
        .await?
        .map(|p| types::DirectUpload {
            url: p.url,
            headers: p.headers.into_iter().collect(),
            expires_ms: DIRECT_UPLOAD_FOR.as_millis() as u64,
        });
    Ok(Json(types::UploadOffer {
        present: false,
        put,
    }))
}

fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A file removed when dropped (an upload that failed half-way leaves nothing).
struct Part(std::path::PathBuf);

impl Drop for Part {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn call(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(call): Json<AttemptCall>,
) -> Result<Json<CallAnswer>, ApiError> {
    let job = leased(&state, id, &headers).await?;
    let store = &state.store;
    let project = || async {
        let detail = store.run_detail(job.run_id).await?;
        detail
            .map(|d| d.run.project)
            .ok_or_else(|| ApiError::not_found(format!("no run {}", job.run_id)))
    };
    // The steps of this attempt: the only ones its calls may touch.
    let own_steps = || async {
        let detail = store.run_detail(job.run_id).await?;
        Ok::<_, ApiError>(
            detail
                .map(|d| {
                    d.steps
                        .into_iter()
                        .filter(|s| s.job_id == job.job_id && s.attempt == i64::from(job.attempt))
                        .map(|s| s.id)
                        .collect::<Vec<i64>>()
                })
                .unwrap_or_default(),
        )
    };
    let mut answer = CallAnswer::default();
    match call {
        AttemptCall::StartStep { position, name, at } => {
            answer.step = Some(
                store
                    .start_step(job.job_id, job.attempt, position, &name, at)
                    .await?,
            );
        }
        AttemptCall::FinishStep {
            step,
            status,
            exit_code,
            at,
        } => {
            let status = status
                .parse()
                .map_err(|e: String| ApiError::unprocessable(format!("status: {e}")))?;
            if !own_steps().await?.contains(&step) {
                return Err(ApiError::forbidden(format!(
                    "step {step} is not a step of this job's attempt"
                )));
            }
            store.finish_step(step, status, exit_code, at).await?;
        }
        AttemptCall::AppendLogs { lines } => {
            let steps = own_steps().await?;
            let mut batch = Vec::with_capacity(lines.len());
            for (i, l) in lines.into_iter().enumerate() {
                if !steps.contains(&l.step_id) {
                    return Err(ApiError::forbidden(format!(
                        "lines[{i}]: step {} is not a step of this job's attempt",
                        l.step_id
                    )));
                }
                let stream = match l.stream.as_str() {
                    "stdout" => gantry_engine::ports::Stream::Stdout,
                    "stderr" => gantry_engine::ports::Stream::Stderr,
                    "system" => gantry_engine::ports::Stream::System,
                    other => {
                        return Err(ApiError::unprocessable(format!(
                            "lines[{i}].stream: `{other}` is not stdout, stderr or system"
                        )));
                    }
                };
                batch.push(NewLogLine {
                    step_id: l.step_id,
                    line: l.line,
                    at: l.at,
                    stream,
                    text: l.text,
                });
            }
            store.append_logs(&batch).await?;
        }
        AttemptCall::RecordArtifact {
            name,
            digest,
            size,
            media_type,
            newly_stored,
            at,
        } => {
            if !state.artifacts.exists(&digest).await? {
                return Err(ApiError::conflict(format!(
                    "artifact `{name}`: upload its object {digest} first"
                )));
            }
            let stored = StoredArtifact {
                digest,
                size,
                media_type,
                newly_stored,
            };
            let record = store
                .record_artifact(job.run_id, job.job_id, &name, &stored, at)
                .await?;
            answer.artifact = Some(wire_artifact(&record));
        }
        AttemptCall::LatestProjectArtifact {
            project,
            name,
            branch,
        } => {
            answer.artifact = store
                .latest_project_artifact(&project, &name, branch.as_deref())
                .await?
                .as_ref()
                .map(wire_artifact);
        }
        AttemptCall::RunArtifacts => {
            let detail = store.run_detail(job.run_id).await?;
            answer.artifacts = detail
                .map(|d| d.artifacts.iter().map(wire_artifact).collect())
                .unwrap_or_default();
        }
        AttemptCall::FindCache { key, prefixes } => {
            answer.cache = store
                .find_cache(&project().await?, &key, &prefixes)
                .await?
                .as_ref()
                .map(wire_cache);
        }
        AttemptCall::SaveCache { cache } => {
            if !state.artifacts.exists(&cache.digest).await? {
                return Err(ApiError::conflict(format!(
                    "cache `{}`: upload its object {} first",
                    cache.key, cache.digest
                )));
            }
            let record = CacheRecord {
                id: 0,
                project: project().await?,
                key: cache.key,
                digest: cache.digest,
                size: cache.size,
                media_type: cache.media_type,
                created_at: cache.created_at,
                last_used_at: cache.last_used_at,
            };
            answer.yes = Some(store.save_cache(&record).await?);
        }
        AttemptCall::TouchCache { id: cache, at } => {
            own_cache(&state, &project().await?, cache).await?;
            store.touch_cache(cache, at).await?;
        }
        AttemptCall::Caches => {
            answer.caches = store
                .caches(Some(&project().await?))
                .await?
                .iter()
                .map(wire_cache)
                .collect();
        }
        AttemptCall::RemoveCache { id: cache } => {
            let project = project().await?;
            let removed = own_cache(&state, &project, cache).await?;
            store.remove_cache(cache).await?;
            // Its object goes too when nothing else uses it (the runner cannot delete it).
            if !store.digest_in_use(&removed.digest).await? {
                let _ = state.artifacts.delete(&removed.digest).await;
            }
        }
        AttemptCall::DigestInUse { digest } => {
            answer.yes = Some(store.digest_in_use(&digest).await?);
        }
    }
    Ok(Json(answer))
}

/// The cache `id` if it is one of `project`'s.
async fn own_cache(state: &AppState, project: &str, id: i64) -> Result<CacheRecord, ApiError> {
    state
        .store
        .caches(Some(project))
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| {
            ApiError::forbidden(format!("cache {id} is not one of project `{project}`'s"))
        })
}

fn wire_artifact(a: &ArtifactRecord) -> WireArtifact {
    WireArtifact {
        id: a.id,
        run_id: a.run_id,
        job_id: a.job_id,
        name: a.name.clone(),
        digest: a.digest.clone(),
        size: a.size,
        media_type: a.media_type.clone(),
        created_at: a.created_at,
        removed_at: a.removed_at,
    }
}

fn wire_cache(c: &CacheRecord) -> WireCache {
    WireCache {
        id: c.id,
        key: c.key.clone(),
        digest: c.digest.clone(),
        size: c.size,
        media_type: c.media_type.clone(),
        created_at: c.created_at,
        last_used_at: c.last_used_at,
    }
}
