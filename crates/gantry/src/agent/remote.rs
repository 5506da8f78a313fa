//! A runner's view of the server, as the attempt code's ports: its records
//! ([`HttpAttempts`], an `AttemptStore`), its workspace ([`HttpSource`]) and its artifacts
//! ([`HttpArtifacts`]: packed and unpacked in a store of the job's own directory, objects
//! going up to the server and coming down from it). Everything goes under the job's lease.

use crate::client::{Client, Lease};
use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use gantry_api::types::{AttemptCall, WireArtifact, WireCache, WireLogLine};
use gantry_engine::ports::{
    ArtifactRecord, ArtifactStore, AttemptStore, ByteStream, CacheRecord, Millis, NewLogLine,
    StoredArtifact, Stream,
};
use gantry_model::StepStatus;
use gantry_store::artifacts::LocalArtifactStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Log lines sent in one call stay under this many bytes of text.
const LOG_BATCH_BYTES: usize = 256 * 1024;

pub struct HttpAttempts {
    pub client: Arc<Client>,
    pub lease: Lease,
    /// The job's project (caches are the project's).
    pub project: String,
}

fn record_of(a: WireArtifact) -> ArtifactRecord {
    ArtifactRecord {
        id: a.id,
        run_id: a.run_id,
        job_id: a.job_id,
        name: a.name,
        digest: a.digest,
        size: a.size,
        media_type: a.media_type,
        created_at: a.created_at,
        removed_at: a.removed_at,
    }
}

impl HttpAttempts {
    fn cache_of(&self, c: WireCache) -> CacheRecord {
        CacheRecord {
            id: c.id,
            project: self.project.clone(),
            key: c.key,
            digest: c.digest,
            size: c.size,
            media_type: c.media_type,
            created_at: c.created_at,
            last_used_at: c.last_used_at,
        }
    }

    async fn call(&self, call: AttemptCall) -> Result<gantry_api::types::CallAnswer> {
        self.client.attempt_call(&self.lease, &call).await
    }
}

#[async_trait]
impl AttemptStore for HttpAttempts {
    async fn start_step(
        &self,
        _job: i64,
        _attempt: u32,
        position: usize,
        name: &str,
        at: Millis,
    ) -> Result<i64> {
        let answer = self
            .call(AttemptCall::StartStep {
                position,
                name: name.to_string(),
                at,
            })
            .await?;
        answer
            .step
            .context("the server recorded the step without saying its id")
    }

    async fn finish_step(
        &self,
        step: i64,
        status: StepStatus,
        exit_code: Option<i32>,
        at: Millis,
    ) -> Result<()> {
        self.call(AttemptCall::FinishStep {
            step,
            status: status.as_str().to_string(),
            exit_code,
            at,
        })
        .await
        .map(|_| ())
    }

    async fn append_logs(&self, lines: &[NewLogLine]) -> Result<()> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for l in lines {
            if bytes + l.text.len() > LOG_BATCH_BYTES && !batch.is_empty() {
                self.call(AttemptCall::AppendLogs {
                    lines: std::mem::take(&mut batch),
                })
                .await?;
                bytes = 0;
            }
            bytes += l.text.len();
            batch.push(WireLogLine {
                step_id: l.step_id,
                line: l.line,
                at: l.at,
                stream: match l.stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                    Stream::System => "system",
                }
                .to_string(),
                text: l.text.clone(),
            });
        }
        if !batch.is_empty() {
            self.call(AttemptCall::AppendLogs { lines: batch }).await?;
        }
        Ok(())
    }

    async fn record_artifact(
        &self,
        _run: i64,
        _job: i64,
        name: &str,
        stored: &StoredArtifact,
        at: Millis,
    ) -> Result<()> {
        self.call(AttemptCall::RecordArtifact {
            name: name.to_string(),
            digest: stored.digest.clone(),
            size: stored.size,
            media_type: stored.media_type.clone(),
            newly_stored: stored.newly_stored,
            at,
        })
        .await
        .map(|_| ())
    }

    async fn latest_project_artifact(
        &self,
        project: &str,
        name: &str,
        branch: Option<&str>,
    ) -> Result<Option<ArtifactRecord>> {
        let answer = self
            .call(AttemptCall::LatestProjectArtifact {
                project: project.to_string(),
                name: name.to_string(),
                branch: branch.map(str::to_string),
            })
            .await?;
        Ok(answer.artifact.map(record_of))
    }

    async fn run_artifacts(&self, _run: i64) -> Result<Vec<ArtifactRecord>> {
        let answer = self.call(AttemptCall::RunArtifacts).await?;
        Ok(answer.artifacts.into_iter().map(record_of).collect())
    }

    async fn find_cache(
        &self,
        _project: &str,
        key: &str,
        prefixes: &[String],
    ) -> Result<Option<CacheRecord>> {
        let answer = self
            .call(AttemptCall::FindCache {
                key: key.to_string(),
                prefixes: prefixes.to_vec(),
            })
            .await?;
        Ok(answer.cache.map(|c| self.cache_of(c)))
    }

    async fn save_cache(&self, cache: &CacheRecord) -> Result<bool> {
        let answer = self
            .call(AttemptCall::SaveCache {
                cache: WireCache {
                    id: 0,
                    key: cache.key.clone(),
                    digest: cache.digest.clone(),
                    size: cache.size,
                    media_type: cache.media_type.clone(),
                    created_at: cache.created_at,
                    last_used_at: cache.last_used_at,
                },
            })
            .await?;
        Ok(answer.yes.unwrap_or(false))
    }

    async fn touch_cache(&self, id: i64, at: Millis) -> Result<()> {
        self.call(AttemptCall::TouchCache { id, at })
            .await
            .map(|_| ())
    }

    async fn caches(&self, _project: &str) -> Result<Vec<CacheRecord>> {
        let answer = self.call(AttemptCall::Caches).await?;
        Ok(answer
            .caches
            .into_iter()
            .map(|c| self.cache_of(c))
            .collect())
    }

    async fn remove_cache(&self, id: i64) -> Result<()> {
        self.call(AttemptCall::RemoveCache { id }).await.map(|_| ())
    }

    async fn digest_in_use(&self, digest: &str) -> Result<bool> {
        let answer = self
            .call(AttemptCall::DigestInUse {
                digest: digest.to_string(),
            })
            .await?;
        Ok(answer.yes.unwrap_or(true))
    }
}

/// The commit's files from the server: downloaded once per commit into the runner's
/// `sources/` (checked against their digest), unpacked into each workspace.
pub struct HttpSource {
    pub client: Arc<Client>,
    pub lease: Lease,
    pub sources: PathBuf,
}

#[async_trait]
impl gantry_runner::remote::SourceFetch for HttpSource {
    async fn place(&self, commit: &str, workspace: &Path) -> Result<()> {
        tokio::fs::create_dir_all(&self.sources).await?;
        let file = self.sources.join(format!("{commit}.tar.zst"));
        if !file.is_file() {
            // Its own download file: two slots may fetch the same commit at once.
            let part = tempfile::NamedTempFile::new_in(&self.sources)
                .context("making a download file")?
                .into_temp_path();
            let fetched = async {
                let digest = self.client.job_source(&self.lease, &part).await?;
                let (p, d) = (part.to_path_buf(), digest.clone());
                tokio::task::spawn_blocking(move || {
                    gantry_store::artifacts::object::verify_file(&p, &d)
                })
                .await??;
                part.persist(&file)?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = fetched {
                return Err(e.context(format!("fetching the files of commit {commit}")));
            }
        }
        std::fs::create_dir_all(workspace)
            .with_context(|| format!("creating workspace {}", workspace.display()))?;
        let (file, ws) = (file.clone(), workspace.to_path_buf());
        tokio::task::spawn_blocking(move || {
            gantry_store::artifacts::object::write_out(
                &file,
                gantry_store::artifacts::TAR_ZSTD,
                &ws,
                "",
            )
        })
        .await?
        .with_context(|| format!("unpacking commit {commit}"))
    }
}

/// Artifacts and caches of a job on a runner: packed into (and unpacked from) a store in the
/// job's own directory, removed with it; what is packed goes up to the server, what is needed
/// comes down from it first.
pub struct HttpArtifacts {
    pub client: Arc<Client>,
    pub lease: Lease,
    pub local: LocalArtifactStore,
    /// Where objects are downloaded to before they are checked.
    pub downloads: PathBuf,
}

impl HttpArtifacts {
    /// Gets object `digest` (at `object`) into the server's store: straight to the store when
    /// the server offers that, through the server when it does not (or the store cannot be
    /// reached from here). True when the store did not have it.
    async fn upload(&self, digest: &str, object: &Path) -> Result<bool> {
        let offer = self.client.upload_offer(&self.lease, digest).await?;
        if offer.present {
            return Ok(false);
        }
        if let Some(put) = &offer.put {
            match self.client.put_direct(put, object).await {
                Ok(()) => {
                    let now = self.client.upload_offer(&self.lease, digest).await?;
                    if !now.present {
                        bail!("the artifact store does not hold {digest} after its upload");
                    }
                    return Ok(true);
                }
                Err(e) => tracing::warn!(
                    error = %format!("{e:#}"),
                    "uploading {digest} straight to the artifact store; through the server instead"
                ),
            }
        }
        self.client.put_object(&self.lease, digest, object).await
    }

    /// Brings object `digest` into the job's store (checked against its digest).
    async fn fetch(&self, digest: &str) -> Result<()> {
        if self.local.exists(digest).await? {
            return Ok(());
        }
        let part = tempfile::NamedTempFile::new_in(&self.downloads)
            .context("making a download file")?
            .into_temp_path();
        // Straight from the store when the server offers that; from the server when it does
        // not, or the store cannot be reached from here. Checked against the digest either way.
        let offer = self.client.download_offer(&self.lease, digest).await?;
        let direct = match &offer.url {
            Some(url) => match self.client.get_direct(url, &part).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "fetching {digest} straight from the artifact store; from the server instead"
                    );
                    false
                }
            },
            None => false,
        };
        if !direct {
            self.client.get_object(&self.lease, digest, &part).await?;
        }
        self.local.import(digest, &part).await?;
        Ok(())
    }
}

#[async_trait]
impl ArtifactStore for HttpArtifacts {
    async fn store(&self, workspace: &Path, paths: &[String]) -> Result<StoredArtifact> {
        let mut stored = self.local.store(workspace, paths).await?;
        let object = self.local.object_path(&stored.digest)?;
        stored.newly_stored = self
            .upload(&stored.digest, &object)
            .await
            .with_context(|| format!("uploading {}", stored.digest))?;
        Ok(stored)
    }

    async fn import(&self, digest: &str, file: &Path) -> Result<bool> {
        self.local.import(digest, file).await?;
        let object = self.local.object_path(digest)?;
        self.upload(digest, &object).await
    }

    async fn exists(&self, digest: &str) -> Result<bool> {
        self.local.exists(digest).await
    }

    async fn verify(&self, digest: &str) -> Result<()> {
        self.fetch(digest).await?;
        self.local.verify(digest).await
    }

    async fn unpack(
        &self,
        digest: &str,
        media_type: &str,
        dest: &Path,
        file_name: &str,
    ) -> Result<()> {
        self.fetch(digest).await?;
        self.local.unpack(digest, media_type, dest, file_name).await
    }

    async fn size(&self, digest: &str) -> Result<Option<u64>> {
        self.local.size(digest).await
    }

    async fn read(&self, digest: &str, start: u64, len: u64) -> Result<ByteStream> {
        self.fetch(digest).await?;
        self.local.read(digest, start, len).await
    }

    async fn presign(
        &self,
        _digest: &str,
        _expires_in: std::time::Duration,
        _file_name: &str,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    fn location(&self) -> String {
        format!("the server at {}", self.client.base)
    }

    /// Only the job's own copy: the server's store keeps its objects (it removes a cache's
    /// object itself when the runner forgets the cache).
    async fn delete(&self, digest: &str) -> Result<u64> {
        self.local.delete(digest).await
    }
}
