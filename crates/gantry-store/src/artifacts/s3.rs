//! The S3-compatible store (AWS S3, MinIO, moto…): objects under
//! `<prefix>/objects/sha256/<2 hex>/<64 hex>` of a bucket, through `object_store`.
//!
//! An artifact is packed into a local staging file first (digest computed while packing), so
//! the object key is known before a byte is sent; if the key already exists nothing is uploaded.
//! Small objects go up in one PUT, larger ones as a multipart upload with a few parts in flight:
//! S3 shows an object only once the PUT or CompleteMultipartUpload succeeds, so an upload that
//! fails part-way (the endpoint gone, an error answer) leaves nothing visible, and the multipart
//! upload is aborted when the endpoint still answers.

use super::object::{check_digest, object_key, write_out};
use super::pack::pack_staged;
use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use base64::Engine as _;
use futures_util::StreamExt;
use gantry_engine::ports::{ArtifactStore, ByteStream, PresignedUpload, StoredArtifact};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::signer::{HeaderName, HeaderValue, SignedUrlOptions, Signer};
use object_store::{
    ClientConfigKey, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Objects up to this size are sent in one PUT; larger ones in parts of this size.
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once during a multipart upload (memory: about this many parts).
const PARTS_IN_FLIGHT: usize = 3;
/// The longest an S3 presigned URL may live (AWS's limit for SigV4).
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 86400);

/// Where an S3 store is and how to reach it. Anything left `None` comes from the usual `AWS_*`
/// variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`…), then from the instance's role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Key prefix without slashes at either end (may be empty).
    pub prefix: String,
    /// `http://127.0.0.1:9000` for a local S3; plain HTTP is allowed only when asked for here.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// Held as a secret: `{:?}` of a location prints `***`, never the key.
    pub secret_access_key: Option<gantry_model::SecretValue>,
    /// Longest wait for one request (default 30 s).
    pub timeout: Option<Duration>,
    /// Attempts after a failed request (default 3).
    pub retries: Option<usize>,
}

impl S3Location {
    /// Reads `s3://bucket/prefix`.
    pub fn parse_url(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("s3://") else {
            bail!("`{url}` is not an s3:// URL (write s3://bucket/prefix)")
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("`{url}` names no bucket (write s3://bucket/prefix)");
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == ".." || p == ".") {
            bail!("`{url}`: the prefix may not contain `.` or `..` segments");
        }
        Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            ..Self::default()
        })
    }

    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

pub struct S3ArtifactStore {
    s3: Arc<AmazonS3>,
    location: S3Location,
    /// Local directory where artifacts are packed before upload and downloaded before unpacking.
    staging: PathBuf,
}

impl S3ArtifactStore {
    /// Builds the client (nothing is sent yet); `staging` is a local directory for packing.
    pub fn new(location: S3Location, staging: impl Into<PathBuf>) -> Result<Self> {
        let staging = staging.into();
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("creating the staging directory {}", staging.display()))?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&location.bucket);
        if let Some(region) = &location.region {
            builder = builder.with_region(region);
        }
        if let Some(id) = &location.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &location.secret_access_key {
            builder = builder.with_secret_access_key(secret.expose());
        }
        let retries = location.retries.unwrap_or(3);
        let timeout = location.timeout.unwrap_or(Duration::from_secs(30));
        // Set keys one by one: replacing the client options would drop those read from AWS_*.
        builder = builder
            .with_retry(RetryConfig {
                max_retries: retries,
                retry_timeout: Duration::from_secs(60),
                ..RetryConfig::default()
            })
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}ms", timeout.as_millis()),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            );
        if let Some(endpoint) = &location.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        // Plain HTTP only for an http:// endpoint (a local MinIO or moto), from config or env.
        let endpoint = location.endpoint.clone().or_else(|| {
            ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
                .iter()
                .find_map(|v| std::env::var(v).ok())
        });
        if endpoint.is_some_and(|e| e.starts_with("http://")) {
            builder = builder.with_allow_http(true);
        }
        let s3 = builder
            .build()
            .with_context(|| format!("configuring the S3 artifact store {}", location.url()))?;
        Ok(Self {
            s3: Arc::new(s3),
            location,
            staging,
        })
    }

    /// The object key of `digest` in the bucket.
    pub fn key(&self, digest: &str) -> Result<ObjectPath> {
        let key = object_key(digest)?;
        Ok(if self.location.prefix.is_empty() {
            ObjectPath::from(format!("objects/{key}"))
        } else {
            ObjectPath::from(format!("{}/objects/{key}", self.location.prefix))
        })
    }

    fn context(&self, what: &str, digest: &str) -> String {
        format!("{what} {digest} in {}", self.location.url())
    }

    async fn upload(&self, key: &ObjectPath, file: &Path, size: u64) -> Result<()> {
        let mut f = tokio::fs::File::open(file).await?;
        if size <= PART_SIZE as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).await?;
            self.s3
                .put(key, PutPayload::from(buf))
                .await
                .map_err(brief)?;
            return Ok(());
        }
        let mut upload = self.s3.put_multipart(key).await.map_err(brief)?;
        let mut parts = tokio::task::JoinSet::new();
        let sent: Result<()> = async {
            loop {
                let mut part = vec![0u8; PART_SIZE];
                let mut filled = 0;
                while filled < PART_SIZE {
                    let n = f.read(&mut part[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                part.truncate(filled);
                while parts.len() >= PARTS_IN_FLIGHT {
                    parts.join_next().await.expect("parts are in flight")??;
                }
                parts.spawn(upload.put_part(PutPayload::from(part)));
                if filled < PART_SIZE {
                    break;
                }
            }
            while let Some(done) = parts.join_next().await {
                done??;
            }
            upload.complete().await?;
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            parts.shutdown().await;
            // Best effort: the upload stays invisible either way; aborting frees its parts.
            let _ = tokio::time::timeout(Duration::from_secs(5), upload.abort()).await;
            return Err(match e.downcast::<object_store::Error>() {
                Ok(e) => brief(e),
                Err(e) => e,
            });
        }
        Ok(())
    }

    /// Downloads the object into a staging file, hashing on the way; a mismatch is an error and
    /// the file is removed.
    async fn download_checked(&self, digest: &str) -> Result<tempfile::TempPath> {
        let key = self.key(digest)?;
        let tmp = super::pack::staging_file(&self.staging, "get")?;
        let (file, path) = tmp.into_parts();
        let mut out = tokio::fs::File::from_std(file);
        let mut stream = self
            .s3
            .get(&key)
            .await
            .map_err(|e| not_found_is_missing(e, digest))?
            .into_stream();
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(brief)
                .with_context(|| self.context("downloading", digest))?;
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
        }
        tokio::io::AsyncWriteExt::flush(&mut out).await?;
        check_digest(hasher, digest)?;
        Ok(path)
    }
}

fn not_found_is_missing(e: object_store::Error, digest: &str) -> anyhow::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            anyhow!("the stored object for {digest} is missing")
        }
        other => brief(other),
    }
}

/// An object_store error in one line: what was attempted (its first clause), then S3's own
/// error code and message when it answered, else the root cause (the full chain repeats every
/// layer's text, several times over).
fn brief(e: object_store::Error) -> anyhow::Error {
    let top = e.to_string();
    let what = top.split(" - ").next().unwrap_or(&top).trim();
    let between = |open: &str, close: &str| {
        let start = top.find(open)? + open.len();
        let len = top[start..].find(close)?;
        Some(top[start..start + len].to_string())
    };
    if let Some(code) = between("<Code>", "</Code>") {
        let message = between("<Message>", "</Message>").unwrap_or_default();
        return anyhow!("{what} (S3 answered {code}: {message})");
    }
    let mut root: &dyn std::error::Error = &e;
    while let Some(next) = root.source() {
        root = next;
    }
    let cause = root.to_string();
    if what.contains(&cause) {
        anyhow!("{what}")
    } else {
        anyhow!("{what}: {cause}")
    }
}

#[async_trait]
impl ArtifactStore for S3ArtifactStore {
    async fn store(&self, workspace: &Path, paths: &[String]) -> Result<StoredArtifact> {
        let staging = self.staging.clone();
        let workspace = workspace.to_path_buf();
        let paths = paths.to_vec();
        let staged = tokio::task::spawn_blocking(move || {
            pack_staged(&workspace, &paths, &staging).map_err(|e| {
                super::name_full_disk(e, &staging, "the S3 artifact store's staging directory")
            })
        })
        .await
        .context("the packing task failed")??;
        let key = self.key(&staged.digest)?;
        let newly_stored = !self.exists(&staged.digest).await?;
        if newly_stored {
            self.upload(&key, staged.file.path(), staged.size)
                .await
                .with_context(|| {
                    format!(
                        "uploading {} ({} bytes) to {}: nothing was stored",
                        staged.digest,
                        staged.size,
                        self.location.url()
                    )
                })?;
        }
        Ok(StoredArtifact {
            digest: staged.digest,
            size: staged.size,
            media_type: staged.media_type,
            newly_stored,
        })
    }

    async fn import(&self, digest: &str, file: &Path) -> Result<bool> {
        let (f, d) = (file.to_path_buf(), digest.to_string());
        tokio::task::spawn_blocking(move || super::object::verify_file(&f, &d))
            .await
            .context("the verifying task failed")??;
        if self.exists(digest).await? {
            return Ok(false);
        }
        let size = std::fs::metadata(file)
            .with_context(|| format!("reading {}", file.display()))?
            .len();
        self.upload(&self.key(digest)?, file, size)
            .await
            .with_context(|| {
                format!(
                    "uploading {digest} ({size} bytes) to {}: nothing was stored",
                    self.location.url()
                )
            })?;
        Ok(true)
    }

    async fn exists(&self, digest: &str) -> Result<bool> {
        Ok(self.size(digest).await?.is_some())
    }

    async fn size(&self, digest: &str) -> Result<Option<u64>> {
        match self.s3.head(&self.key(digest)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(brief(e)).with_context(|| self.context("looking up", digest)),
        }
    }

    async fn verify(&self, digest: &str) -> Result<()> {
        self.download_checked(digest).await.map(drop)
    }

    async fn confirm(&self, digest: &str) -> Result<()> {
        match self.size(digest).await? {
            Some(_) => Ok(()),
            None => bail!(
                "the stored object for {digest} is missing from {}",
                self.location.url()
            ),
        }
    }

    async fn read(&self, digest: &str, start: u64, len: u64) -> Result<ByteStream> {
        let key = self.key(digest)?;
        if len == 0 {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        let got = self
            .s3
            .get_opts(
                &key,
                GetOptions {
                    range: Some(GetRange::Bounded(start..start + len)),
                    ..GetOptions::default()
                },
            )
            .await
            .map_err(|e| not_found_is_missing(e, digest))?;
        Ok(Box::pin(
            got.into_stream().map(|r| r.map_err(std::io::Error::other)),
        ))
    }

    async fn presign(
        &self,
        digest: &str,
        expires_in: Duration,
        file_name: &str,
    ) -> Result<Option<String>> {
        if expires_in > MAX_PRESIGN {
            bail!("an S3 presigned URL lives at most 7 days");
        }
        let key = self.key(digest)?;
        let url = self
            .s3
            .signed_url_opts(
                object_store::signer::Method::GET,
                &key,
                expires_in,
                // Signed too, so S3 answers with the name (and no one can change it).
                &SignedUrlOptions::new().with_query([(
                    "response-content-disposition",
                    format!(
                        "attachment; filename=\"{}\"",
                        file_name.replace(['"', '\\', '\r', '\n', '/'], "_")
                    ),
                )]),
            )
            .await
            .map_err(brief)
            .with_context(|| self.context("presigning", digest))?;
        Ok(Some(url.to_string()))
    }

    async fn presign_upload(
        &self,
        digest: &str,
        expires_in: Duration,
    ) -> Result<Option<PresignedUpload>> {
        if expires_in > MAX_PRESIGN {
            bail!("an S3 presigned URL lives at most 7 days");
        }
        let key = self.key(digest)?;
        // The object's digest is the SHA-256 of its bytes: S3 checks the body against it.
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64)
            .ok_or_else(|| anyhow!("`{digest}` is not a sha256 digest"))?;
        let raw = hex::decode(hex).with_context(|| format!("`{digest}` is not a sha256 digest"))?;
        let checksum = base64::engine::general_purpose::STANDARD.encode(raw);
        let header = ("x-amz-checksum-sha256".to_string(), checksum);
        let url = self
            .s3
            .signed_url_opts(
                object_store::signer::Method::PUT,
                &key,
                expires_in,
                &SignedUrlOptions::new().with_signed_header(
                    HeaderName::from_static("x-amz-checksum-sha256"),
                    HeaderValue::from_str(&header.1)?,
                ),
            )
            .await
            .map_err(brief)
            .with_context(|| self.context("presigning an upload of", digest))?;
        Ok(Some(PresignedUpload {
            url: url.to_string(),
            headers: vec![header],
        }))
    }

    fn location(&self) -> String {
        self.location.url()
    }

    async fn delete(&self, digest: &str) -> Result<u64> {
        let Some(size) = self.size(digest).await? else {
            return Ok(0);
        };
        self.s3
            .delete(&self.key(digest)?)
            .await
            .map_err(brief)
            .with_context(|| self.context("deleting", digest))?;
        Ok(size)
    }

    async fn unpack(
        &self,
        digest: &str,
        media_type: &str,
        dest: &Path,
        file_name: &str,
    ) -> Result<()> {
        let object = self.download_checked(digest).await?;
        let (media_type, dest, file_name) = (
            media_type.to_string(),
            dest.to_path_buf(),
            file_name.to_string(),
        );
        tokio::task::spawn_blocking(move || write_out(&object, &media_type, &dest, &file_name))
            .await
            .context("the unpacking task failed")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_never_prints_its_secret_key() {
        let l = S3Location {
            bucket: "builds".into(),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some(gantry_model::SecretValue::new("wJalrXUtnFEMI/K7MDENG")),
            ..S3Location::default()
        };
        let shown = format!("{l:?} {l:#?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn urls() {
        let l = S3Location::parse_url("s3://builds/team/app/").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("builds", "team/app")
        );
        assert_eq!(l.url(), "s3://builds/team/app");
        assert_eq!(S3Location::parse_url("s3://b").unwrap().prefix, "");
        for bad in ["s3://", "http://b/x", "s3:///x", "s3://b/../x"] {
            assert!(S3Location::parse_url(bad).is_err(), "{bad}");
        }
    }
}
