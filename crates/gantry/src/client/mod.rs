//! The CLI's HTTP client for a gantry server: which server (`--server`/`GANTRY_SERVER`, or the
//! local one recorded in the data directory), which token (`GANTRY_TOKEN`, or the local admin
//! token file), and JSON calls with the server's error messages passed through. The
//! operations themselves, typed with the API's wire types, are in `api.rs`: commands call
//! those, never a path.

mod api;
mod runner;
pub use runner::Lease;

use anyhow::{Context as _, Result, anyhow, bail};
use gantry_api::types;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

pub struct Client {
    pub base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// The file where a running server records its URL, in its data directory.
pub const SERVER_FILE: &str = "server.json";
/// The admin token a server creates on first start (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The certificates of a CA file (PEM, one or more), for trusting a server by them alone.
pub fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("reading the CA file {}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "the CA file {} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// A request that got no answer, with every cause (a refused connection, a certificate the CA
/// does not sign) said.
fn unreachable_server(base: &str, e: reqwest::Error) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("cannot reach the gantry server at {base}"))
}

/// The CA file the local server recorded in `server.json`, if it serves HTTPS with one.
fn recorded_ca(data_dir: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(data_dir.join(SERVER_FILE)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["ca"].as_str().map(std::path::PathBuf::from)
}

impl Client {
    /// `explicit` (flag or env) if given, else the server recorded in `data_dir`.
    pub fn resolve(explicit: Option<&str>, data_dir: &Path) -> Result<Self> {
        let base = match explicit {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let path = data_dir.join(SERVER_FILE);
                let text = std::fs::read_to_string(&path).map_err(|_| {
                    anyhow!("no gantry server: start one with `gantry serve`, or point to one with --server URL (or GANTRY_SERVER)")
                })?;
                let v: Value = serde_json::from_str(&text)
                    .with_context(|| format!("reading {}", path.display()))?;
                v["url"]
                    .as_str()
                    .ok_or_else(|| anyhow!("{} has no url", path.display()))?
                    .to_string()
            }
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("`{base}` is not a server URL: write http://HOST:PORT or https://HOST:PORT");
        }
        // The CA to trust the server by: GANTRY_CA_FILE, else the one the local server names.
        let ca = match std::env::var_os("GANTRY_CA_FILE").filter(|v| !v.is_empty()) {
            Some(path) => Some(std::path::PathBuf::from(path)),
            None if explicit.is_none() => recorded_ca(data_dir),
            None => None,
        };
        let token = std::env::var("GANTRY_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| {
                std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))
                    .ok()
                    .map(|t| t.trim().to_string())
            });
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &ca {
            builder = builder.tls_certs_only(read_ca(ca)?);
        }
        let http = builder.build().context("creating the HTTP client")?;
        Ok(Self { base, token, http })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// Sends `req`; a success's body read as `T`, a refusal as [`Refused`].
    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let (status, bytes) = self.exchange(req).await?;
        if !status.is_success() {
            return Err(refused(status, &bytes).into());
        }
        self.read(status, &bytes)
    }

    /// Sends `req` and hands back the status with the body, refusals included.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>)> {
        let resp = req
            .send()
            .await
            .map_err(|e| unreachable_server(&self.base, e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| anyhow!("reading the answer of {}: {e}", self.base))?;
        Ok((status, bytes.to_vec()))
    }

    fn read<T: DeserializeOwned>(&self, status: reqwest::StatusCode, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).with_context(|| {
            format!(
                "the server at {} answered {status} with a body this gantry does not understand (another version?)",
                self.base
            )
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// Follows a server-sent event stream, calling `on_event(event, data)` for each event.
    /// Reconnects (bounded) with `Last-Event-ID` when the connection drops; stops at `end`.
    async fn follow(&self, path: &str, mut on_event: impl FnMut(&str, &str) -> bool) -> Result<()> {
        use futures_util::StreamExt;
        let mut last_id: Option<String> = None;
        for _attempt in 0..20 {
            let mut req = self.request(reqwest::Method::GET, path);
            if let Some(id) = &last_id {
                req = req.header("Last-Event-ID", id);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| unreachable_server(&self.base, e))?;
            if !resp.status().is_success() {
                let status = resp.status();
                let bytes = resp.bytes().await.unwrap_or_default();
                return Err(refused(status, &bytes).into());
            }
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            let (mut event, mut data, mut id) = (String::new(), String::new(), None::<String>);
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else { break };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(nl) = buf.find('\n') {
                    let line = buf[..nl].trim_end_matches('\r').to_string();
                    buf.drain(..=nl);
                    if line.is_empty() {
                        if !data.is_empty() || !event.is_empty() {
                            if let Some(i) = id.take() {
                                last_id = Some(i);
                            }
                            let name = if event.is_empty() {
                                "message"
                            } else {
                                event.as_str()
                            };
                            if !on_event(name, &data) || name == "end" {
                                return Ok(());
                            }
                        }
                        event.clear();
                        data.clear();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        bail!("lost the connection to the server too many times")
    }
}

/// The server answered, and said no: its status and its message. Callers that treat some
/// answers as values (a 404 as "none") match on the status, never on the text.
#[derive(Debug, thiserror::Error)]
#[error("the server answered {status}: {message}")]
pub struct Refused {
    pub status: reqwest::StatusCode,
    pub message: String,
}

impl Refused {
    /// Whether `e` is the server saying "no such thing".
    pub fn is_not_found(e: &anyhow::Error) -> bool {
        e.downcast_ref::<Refused>()
            .is_some_and(|r| r.status == reqwest::StatusCode::NOT_FOUND)
    }
}

fn refused(status: reqwest::StatusCode, body: &[u8]) -> Refused {
    let message = serde_json::from_slice::<types::ErrorBody>(body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| "no details".to_string());
    Refused { status, message }
}
