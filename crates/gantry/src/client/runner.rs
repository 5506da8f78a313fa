//! What a runner says to the server, as typed calls (`/api/runner/…`). Every call about a
//! claimed job carries its lease.

use super::{Client, refused};
use anyhow::{Context, Result, anyhow, bail};
use futures_util::StreamExt;
use gantry_api::types::{
    AttemptCall, CallAnswer, ClaimBody, ClaimedJob, DIGEST_HEADER, DirectUpload, Done,
    DownloadOffer, Heartbeat, JobEnd, LEASE_HEADER, UploadOffer,
};
use std::path::Path;
use tokio::io::AsyncWriteExt;

/// A claimed job's lease, as calls about it present it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: i64,
    pub token: String,
}

impl Client {
    /// A client of `base` with `token`, trusting the server by `ca` when given.
    pub fn with_token(base: &str, token: &str, ca: Option<&Path>) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("`{base}` is not a server URL: write http://HOST:PORT or https://HOST:PORT");
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(120));
        if let Some(ca) = ca {
            builder = builder.tls_certs_only(super::read_ca(ca)?);
        }
        let http = builder.build().context("creating the HTTP client")?;
        Ok(Self {
            base,
            token: Some(token.to_string()),
            http,
        })
    }

    /// A job this runner's labels fit, waiting on the server up to `body.wait_ms`.
    pub async fn claim(&self, body: &ClaimBody) -> Result<Option<ClaimedJob>> {
        let req = self
            .request(reqwest::Method::POST, "/api/runner/claim")
            .json(body);
        let (status, bytes) = self.exchange(req).await?;
        match status {
            reqwest::StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => self.read(s, &bytes).map(Some),
            s => Err(refused(s, &bytes).into()),
        }
    }

    fn leased(
        &self,
        method: reqwest::Method,
        lease: &Lease,
        rest: &str,
    ) -> reqwest::RequestBuilder {
        self.request(method, &format!("/api/runner/jobs/{}{rest}", lease.id))
            .header(LEASE_HEADER, &lease.token)
    }

    /// Renews the lease; a 409 (the job is not this runner's any more) is a [`super::Refused`].
    pub async fn heartbeat(&self, lease: &Lease) -> Result<Heartbeat> {
        self.send(self.leased(reqwest::Method::POST, lease, "/heartbeat"))
            .await
    }

    pub async fn attempt_call(&self, lease: &Lease, call: &AttemptCall) -> Result<CallAnswer> {
        self.send(
            self.leased(reqwest::Method::POST, lease, "/calls")
                .json(call),
        )
        .await
    }

    pub async fn finish(&self, lease: &Lease, end: &JobEnd) -> Result<Done> {
        self.send(
            self.leased(reqwest::Method::POST, lease, "/finish")
                .json(end),
        )
        .await
    }

    /// Downloads the commit's packed files into `dest`; their digest as the server said it.
    pub async fn job_source(&self, lease: &Lease, dest: &Path) -> Result<String> {
        let resp = self
            .download(self.leased(reqwest::Method::GET, lease, "/source"), dest)
            .await?;
        resp.ok_or_else(|| anyhow!("the server sent the commit's files without their digest"))
    }

    /// Downloads object `digest` into `dest`.
    pub async fn get_object(&self, lease: &Lease, digest: &str, dest: &Path) -> Result<()> {
        let path = format!("/objects/{digest}");
        self.download(self.leased(reqwest::Method::GET, lease, &path), dest)
            .await
            .map(|_| ())
    }

    /// Uploads the object in `file` under `digest`: true when the server did not have it.
    pub async fn put_object(&self, lease: &Lease, digest: &str, file: &Path) -> Result<bool> {
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata().await?.len();
        let stream = tokio_util_stream(f);
        let req = self
            .leased(reqwest::Method::PUT, lease, &format!("/objects/{digest}"))
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        let (status, bytes) = self.exchange(req).await?;
        if !status.is_success() {
            return Err(refused(status, &bytes).into());
        }
        Ok(status == reqwest::StatusCode::CREATED)
    }

    /// How to get object `digest` into the server's store (see [`UploadOffer`]).
    pub async fn upload_offer(&self, lease: &Lease, digest: &str) -> Result<UploadOffer> {
        let req = self.leased(
            reqwest::Method::POST,
            lease,
            &format!("/objects/{digest}/upload"),
        );
        self.send(req).await
    }

    /// Where to fetch object `digest` (see [`DownloadOffer`]).
    pub async fn download_offer(&self, lease: &Lease, digest: &str) -> Result<DownloadOffer> {
        let req = self.leased(
            reqwest::Method::POST,
            lease,
            &format!("/objects/{digest}/download"),
        );
        self.send(req).await
    }

    /// GETs `url` (straight from the artifact store) into `dest`.
    pub async fn get_direct(&self, url: &str, dest: &Path) -> Result<()> {
        self.download(direct_client()?.get(url), dest)
            .await
            .map(|_| ())
    }

    /// PUTs `file` straight to the artifact store by `put`, with its signed headers. The store
    /// is reached with the system's roots (it is not the gantry server).
    pub async fn put_direct(&self, put: &DirectUpload, file: &Path) -> Result<()> {
        let f = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {}", file.display()))?;
        let len = f.metadata().await?.len();
        let mut req = direct_client()?
            .put(&put.url)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(tokio_util_stream(f)));
        for (name, value) in &put.headers {
            req = req.header(name, value);
        }
        let host = reqwest::Url::parse(&put.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("uploading to the artifact store at {host}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            bail!(
                "the artifact store at {host} refused the upload ({status}): {}",
                body.chars().take(300).collect::<String>()
            );
        }
        Ok(())
    }

    /// Streams a GET's body into `dest`; the digest header if the answer had one.
    async fn download(&self, req: reqwest::RequestBuilder, dest: &Path) -> Result<Option<String>> {
        let resp = req
            .send()
            .await
            .map_err(|e| super::unreachable_server(&self.base, e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(refused(status, &bytes).into());
        }
        let digest = resp
            .headers()
            .get(DIGEST_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut file = tokio::fs::File::create(dest)
            .await
            .with_context(|| format!("creating {}", dest.display()))?;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| anyhow!("the download from {} broke off: {e}", self.base))?;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", dest.display()))?;
        }
        file.flush().await?;
        Ok(digest)
    }
}

/// A file read in chunks, as a request body.
fn tokio_util_stream(
    f: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static {
    futures_util::stream::unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

/// The HTTP client of direct uploads: the system's roots, made once.
fn direct_client() -> Result<&'static reqwest::Client> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c);
    }
    let made = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .context("creating the HTTP client of direct uploads")?;
    Ok(CLIENT.get_or_init(|| made))
}
