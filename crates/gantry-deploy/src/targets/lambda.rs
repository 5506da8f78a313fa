//! The `lambda` target: a release uploads the artifact's zip to the function
//! (`UpdateFunctionCode`, or `CreateFunction` when configured to create it), waits for the
//! update to finish, publishes a version and points the alias (`live`) at it. The release's
//! version is kept beside its directory and in its history, so a rollback is one call: the alias
//! back to the older version, nothing uploaded. Retiring a release deletes its version unless
//! the alias still points there.
//!
//! AWS errors keep their code and request id (`AccessDeniedException … (request id …)`), which
//! `gantry why` reads.

use super::{ReleaseContext, Running, Target, note};
use crate::supervisor::ServiceEvent;
use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::operation::RequestId;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    AliasRoutingConfiguration, Environment, FunctionCode, LastUpdateStatus, Runtime, State,
};
use gantry_model::{LambdaTarget as Spec, TargetKind, TargetSpec};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// The largest zip Lambda takes in a direct upload (`ZipFile`), in bytes.
pub const MAX_ZIP_BYTES: u64 = 50 * 1024 * 1024;
/// How long an update may take to finish (`LastUpdateStatus: InProgress`).
const UPDATE_WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(250);

/// Clients by (region, endpoint).
type Clients = Vec<((String, Option<String>), Client)>;

pub struct LambdaTarget {
    clients: tokio::sync::Mutex<Clients>,
    events: mpsc::UnboundedSender<ServiceEvent>,
}

impl LambdaTarget {
    pub fn new(events: mpsc::UnboundedSender<ServiceEvent>) -> Self {
        Self {
            clients: tokio::sync::Mutex::new(Vec::new()),
            events,
        }
    }

    async fn client(&self, spec: &Spec) -> Client {
        let key = (spec.region.clone(), spec.endpoint.clone());
        let mut clients = self.clients.lock().await;
        if let Some((_, c)) = clients.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(spec.region.clone()));
        if let Some(e) = &spec.endpoint {
            loader = loader.endpoint_url(e);
        }
        let client = Client::new(&loader.load().await);
        clients.push((key, client.clone()));
        client
    }

    fn note(&self, r: &ReleaseContext, text: &str) {
        note(&r.log, text);
        let _ = self.events.send(ServiceEvent::Note {
            release_id: r.source_id,
            text: text.to_string(),
        });
    }
}

fn spec_of(r: &ReleaseContext) -> anyhow::Result<&Spec> {
    match &r.spec.target {
        Some(TargetSpec::Lambda(s)) => Ok(s),
        _ => bail!("environment {} has no lambda target", r.environment),
    }
}

/// Where a deploy release's published version is kept (beside its directory).
fn version_file(r: &ReleaseContext) -> PathBuf {
    r.dir.with_extension("lambda-version")
}

/// The release's version, published when it was deployed.
fn version_of(r: &ReleaseContext) -> anyhow::Result<String> {
    let path = version_file(r);
    let v = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "release {} of {} has no published Lambda version recorded ({})",
            r.source,
            r.environment,
            path.display()
        )
    })?;
    Ok(v.trim().to_string())
}

/// The zip in the unpacked artifact: its one file, or its one `.zip`.
fn find_zip(r: &ReleaseContext) -> anyhow::Result<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&r.dir)
        .with_context(|| format!("reading {}", r.dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let zips: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "zip"))
        .collect();
    let zip = match (files.len(), zips.len()) {
        (1, _) => files[0].clone(),
        (_, 1) => zips[0].clone(),
        _ => bail!(
            "environment {}: artifact `{}` is not a Lambda package: it needs one zip file, and holds {} files",
            r.environment,
            r.artifact,
            files.len()
        ),
    };
    let mut magic = [0u8; 4];
    use std::io::Read;
    let is_zip = std::fs::File::open(&zip)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"PK\x03\x04";
    if !is_zip {
        bail!(
            "environment {}: artifact `{}` is not a zip file ({})",
            r.environment,
            r.artifact,
            zip.display()
        );
    }
    let size = std::fs::metadata(&zip)?.len();
    if size > MAX_ZIP_BYTES {
        bail!(
            "environment {}: artifact `{}` is {:.1} MiB; Lambda takes at most 50 MiB in a direct upload (make the package smaller, or ship large dependencies as a layer)",
            r.environment,
            r.artifact,
            size as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(zip)
}

/// An AWS error as gantry reports it: the error code, AWS's message and the request id. An
/// answer the SDK could not read (an XML error from a proxy or an emulator) is read here for
/// its `<Code>`, status and request id.
fn aws<E>(what: &str, spec: &Spec, e: SdkError<E>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let mut request = e.request_id().map(str::to_string);
    if let Some(code) = e.code() {
        return anyhow!(
            "{what}: {code}: {}{}",
            e.message().unwrap_or("no message"),
            request_text(request.as_deref())
        );
    }
    if let SdkError::ServiceError(se) = &e {
        let raw = se.raw();
        let status = raw.status().as_u16();
        if request.is_none() {
            request = raw
                .headers()
                .get("x-amzn-requestid")
                .or_else(|| raw.headers().get("x-amz-request-id"))
                .map(str::to_string);
        }
        let body = raw
            .body()
            .bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let start = body.find(&open)? + open.len();
            let end = body[start..].find(&format!("</{name}>"))? + start;
            Some(body[start..end].to_string())
        };
        if let Some(code) = tag("Code") {
            return anyhow!(
                "{what}: {code} (HTTP {status}): {}{}",
                tag("Message").unwrap_or_default(),
                request_text(request.as_deref())
            );
        }
        return anyhow!(
            "{what}: HTTP {status} from Lambda{}",
            request_text(request.as_deref())
        );
    }
    // The chain of causes, each once (the SDK's own context printer adds its Debug dump).
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !cause.contains(&text) {
            cause = format!("{cause}: {text}");
        }
        source = s.source();
    }
    let field = if spec.endpoint.is_some() {
        "target.lambda.endpoint"
    } else {
        "target.lambda.region"
    };
    anyhow!(
        "{what}: cannot reach Lambda in region {} ({field}): {cause}",
        spec.region
    )
}

fn request_text(id: Option<&str>) -> String {
    id.map(|id| format!(" (request id {id})"))
        .unwrap_or_default()
}

/// The alias for a canary at `percent`: its main version and the additional version weights,
/// as AWS accepts them — one extra version, a weight strictly between 0 and 1, never
/// `$LATEST`. 0 is the stable version alone, 100 the canary alone (no weights at all: an alias
/// with a 0 or 1 weight is refused by AWS, though moto takes it).
pub fn alias_split(
    canary: &str,
    stable: &str,
    percent: u32,
) -> anyhow::Result<(String, Vec<(String, f64)>)> {
    for v in [canary, stable] {
        if v == "$LATEST" || v.parse::<u64>().is_err() {
            bail!("alias weights need published versions, not `{v}`");
        }
    }
    match percent {
        0 => Ok((stable.to_string(), Vec::new())),
        p if p >= 100 => Ok((canary.to_string(), Vec::new())),
        _ if canary == stable => Ok((stable.to_string(), Vec::new())),
        p => Ok((
            stable.to_string(),
            vec![(canary.to_string(), f64::from(p) / 100.0)],
        )),
    }
}

fn not_found<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.code() == Some("ResourceNotFoundException")
}

/// Waits until the function's last update finished; its reason if it failed.
async fn wait_updated(client: &Client, spec: &Spec) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + UPDATE_WAIT;
    loop {
        let c = client
            .get_function_configuration()
            .function_name(&spec.function)
            .send()
            .await
            .map_err(|e| aws("waiting for the update", spec, e))?;
        let pending = matches!(c.state(), Some(State::Pending))
            || matches!(c.last_update_status(), Some(LastUpdateStatus::InProgress));
        if matches!(c.state(), Some(State::Failed))
            || matches!(c.last_update_status(), Some(LastUpdateStatus::Failed))
        {
            bail!(
                "the function {} failed to update: {}",
                spec.function,
                c.last_update_status_reason()
                    .or(c.state_reason())
                    .unwrap_or("no reason given")
            );
        }
        if !pending {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the function {} was still updating after {} s",
                spec.function,
                UPDATE_WAIT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn environment(spec: &Spec, r: &ReleaseContext) -> Environment {
    let mut b = Environment::builder();
    for (k, v) in r
        .env()
        .into_iter()
        .filter(|(k, _)| k.starts_with("GANTRY_") && k != "GANTRY_ARTIFACT")
        .chain(spec.env.iter().cloned())
    {
        b = b.variables(k, v);
    }
    b.build()
}

/// Points the alias at `version` alone (creating it if missing).
async fn point_alias(client: &Client, spec: &Spec, version: &str) -> anyhow::Result<()> {
    let existing = client
        .get_alias()
        .function_name(&spec.function)
        .name(&spec.alias)
        .send()
        .await;
    match existing {
        Ok(_) => {
            client
                .update_alias()
                .function_name(&spec.function)
                .name(&spec.alias)
                .function_version(version)
                .routing_config(AliasRoutingConfiguration::builder().build())
                .send()
                .await
                .map_err(|e| aws(&format!("moving alias {}", spec.alias), spec, e))?;
        }
        Err(e) if not_found(&e) => {
            client
                .create_alias()
                .function_name(&spec.function)
                .name(&spec.alias)
                .function_version(version)
                .send()
                .await
                .map_err(|e| aws(&format!("creating alias {}", spec.alias), spec, e))?;
        }
        Err(e) => return Err(aws(&format!("reading alias {}", spec.alias), spec, e)),
    }
    Ok(())
}

#[async_trait]
impl Target for LambdaTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Lambda
    }

    async fn start(&self, r: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>> {
        let spec = spec_of(r)?;
        let zip = find_zip(r)?;
        let code = std::fs::read(&zip).with_context(|| format!("reading {}", zip.display()))?;
        let client = self.client(spec).await;
        let f = &spec.function;
        let current = client
            .get_function_configuration()
            .function_name(f)
            .send()
            .await;
        let sha = match current {
            Ok(_) => {
                let out = client
                    .update_function_code()
                    .function_name(f)
                    .zip_file(Blob::new(code))
                    .send()
                    .await
                    .map_err(|e| aws(&format!("uploading the code of {f}"), spec, e))?;
                wait_updated(&client, spec).await?;
                if spec.memory_mb.is_some() || spec.timeout_secs.is_some() || !spec.env.is_empty() {
                    client
                        .update_function_configuration()
                        .function_name(f)
                        .set_memory_size(spec.memory_mb.map(|m| m as i32))
                        .set_timeout(spec.timeout_secs.map(|t| t as i32))
                        .environment(environment(spec, r))
                        .send()
                        .await
                        .map_err(|e| aws(&format!("configuring {f}"), spec, e))?;
                    wait_updated(&client, spec).await?;
                }
                out.code_sha256().map(str::to_string)
            }
            Err(e) if not_found(&e) => {
                let Some(create) = &spec.create else {
                    bail!(
                        "environment {}: the function {f} does not exist in {} (field target.lambda.function); give role, runtime and handler to have gantry create it",
                        r.environment,
                        spec.region
                    );
                };
                let out = client
                    .create_function()
                    .function_name(f)
                    .role(&create.role)
                    .runtime(Runtime::from(create.runtime.as_str()))
                    .handler(&create.handler)
                    .code(FunctionCode::builder().zip_file(Blob::new(code)).build())
                    .set_memory_size(spec.memory_mb.map(|m| m as i32))
                    .set_timeout(spec.timeout_secs.map(|t| t as i32))
                    .environment(environment(spec, r))
                    .send()
                    .await
                    .map_err(|e| aws(&format!("creating the function {f}"), spec, e))?;
                self.note(r, &format!("created the function {f} in {}", spec.region));
                wait_updated(&client, spec).await?;
                out.code_sha256().map(str::to_string)
            }
            Err(e) => return Err(aws(&format!("reading the function {f}"), spec, e)),
        };
        let published = client
            .publish_version()
            .function_name(f)
            .set_code_sha256(sha)
            .description(format!("gantry release {} ({})", r.number, r.digest))
            .send()
            .await
            .map_err(|e| aws(&format!("publishing a version of {f}"), spec, e))?;
        let version = published
            .version()
            .ok_or_else(|| anyhow!("publishing a version of {f}: AWS gave no version number"))?
            .to_string();
        std::fs::write(version_file(r), format!("{version}\n"))
            .with_context(|| format!("recording version {version}"))?;
        if r.canary {
            // A canary: the alias stays on the live version until the first step weighs it.
            self.note(
                r,
                &format!(
                    "published version {version} of {f} as a canary; alias {} unchanged until its first step",
                    spec.alias
                ),
            );
            return Ok(None);
        }
        point_alias(&client, spec, &version).await?;
        self.note(
            r,
            &format!(
                "published version {version} of {f}; alias {} → {version}",
                spec.alias
            ),
        );
        Ok(None)
    }

    async fn set_share(
        &self,
        canary: &ReleaseContext,
        stable: &ReleaseContext,
        percent: u32,
    ) -> anyhow::Result<()> {
        let spec = spec_of(canary)?;
        let (new, old) = (version_of(canary)?, version_of(stable)?);
        let (main, weights) = alias_split(&new, &old, percent)?;
        let client = self.client(spec).await;
        let mut routing = AliasRoutingConfiguration::builder();
        for (v, w) in &weights {
            routing = routing.additional_version_weights(v.clone(), *w);
        }
        client
            .update_alias()
            .function_name(&spec.function)
            .name(&spec.alias)
            .function_version(&main)
            .routing_config(routing.build())
            .send()
            .await
            .map_err(|e| aws(&format!("weighing alias {}", spec.alias), spec, e))?;
        self.note(
            canary,
            &match weights.first() {
                Some((v, w)) => format!(
                    "alias {}: version {main}, {:.0}% to version {v}",
                    spec.alias,
                    w * 100.0
                ),
                None => format!("alias {}: version {main} only", spec.alias),
            },
        );
        Ok(())
    }

    async fn roll_back(&self, to: &ReleaseContext, _from: &ReleaseContext) -> anyhow::Result<()> {
        let spec = spec_of(to)?;
        let version = version_of(to)?;
        let client = self.client(spec).await;
        client
            .update_alias()
            .function_name(&spec.function)
            .name(&spec.alias)
            .function_version(&version)
            .routing_config(AliasRoutingConfiguration::builder().build())
            .send()
            .await
            .map_err(|e| aws(&format!("moving alias {} back", spec.alias), spec, e))?;
        self.note(
            to,
            &format!(
                "alias {} → version {version} (nothing uploaded)",
                spec.alias
            ),
        );
        Ok(())
    }

    fn running(&self, _source: i64) -> Option<Running> {
        None // Nothing of gantry's runs: AWS runs the function.
    }

    fn runs_elsewhere(&self) -> bool {
        true
    }

    async fn stop(&self, _source: i64) {}

    async fn retire(&self, r: &ReleaseContext) {
        let Ok(spec) = spec_of(r) else { return };
        let Ok(version) = version_of(r) else { return };
        let client = self.client(spec).await;
        // Never the version the alias serves (a kept release's, or one a canary still weighs).
        if let Ok(alias) = client
            .get_alias()
            .function_name(&spec.function)
            .name(&spec.alias)
            .send()
            .await
        {
            let weighted = alias
                .routing_config()
                .and_then(|c| c.additional_version_weights())
                .is_some_and(|w| w.contains_key(&version));
            if alias.function_version() == Some(version.as_str()) || weighted {
                return;
            }
        }
        match client
            .delete_function()
            .function_name(&spec.function)
            .qualifier(&version)
            .send()
            .await
        {
            Ok(_) => {
                let _ = std::fs::remove_file(version_file(r));
            }
            Err(e) if not_found(&e) => {
                let _ = std::fs::remove_file(version_file(r));
            }
            Err(e) => tracing::warn!(
                error = %format!("{:#}", aws("deleting a retired version", spec, e)),
                "retiring a Lambda version"
            ),
        }
    }

    async fn stop_all(&self) {}
}

#[cfg(test)]
mod tests {
    use super::alias_split;

    #[test]
    fn alias_weights_are_what_aws_accepts() {
        let split = |p| alias_split("3", "2", p).unwrap();
        assert_eq!(split(0), ("2".to_string(), vec![]));
        assert_eq!(split(10), ("2".to_string(), vec![("3".to_string(), 0.1)]));
        assert_eq!(split(99), ("2".to_string(), vec![("3".to_string(), 0.99)]));
        assert_eq!(split(100), ("3".to_string(), vec![]));
        assert_eq!(split(150), ("3".to_string(), vec![]));
        for (_, weights) in (0..=100).map(split) {
            assert!(weights.len() <= 1);
            assert!(weights.iter().all(|(_, w)| *w > 0.0 && *w < 1.0));
        }
        assert!(alias_split("$LATEST", "2", 10).is_err());
        assert!(alias_split("3", "live", 10).is_err());
        assert_eq!(
            alias_split("2", "2", 50).unwrap(),
            ("2".to_string(), vec![])
        );
    }
}
