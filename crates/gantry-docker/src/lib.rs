//! The Docker Engine API adapter (Docker, or podman serving the same API), over `bollard`.
//! Two uses: a job's image is saved as an archive beside a small description (`image.json`),
//! which the runner stores as an ordinary artifact (content-addressed, S3-capable, shareable);
//! and the `docker` target runs a release as a container, loading its image back from that
//! archive when the engine no longer has it (pruned, or a host that never saw it).
//!
//! Where the engine is: the target's `host`, else `DOCKER_HOST`, else the usual sockets
//! (`/var/run/docker.sock`, `/run/podman/podman.sock`). Every error names the engine's address
//! and what was asked of it.

use anyhow::{Context, Result, anyhow, bail};
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ImportImageOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, PushImageOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, StopContainerOptionsBuilder,
    TagImageOptionsBuilder,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The archive of an image inside an image artifact.
pub const ARCHIVE: &str = "image.tar";
/// The description of an image inside an image artifact.
pub const DESCRIPTION: &str = "image.json";
/// Labels gantry puts on its containers (and finds them by).
pub const LABEL_INSTANCE: &str = "gantry.instance";
pub const LABEL_PROJECT: &str = "gantry.project";
pub const LABEL_ENVIRONMENT: &str = "gantry.environment";
pub const LABEL_RELEASE: &str = "gantry.release";
pub const LABEL_DIGEST: &str = "gantry.digest";
/// On a job step's container: the owner lock of the process that runs it (a container whose
/// owner is gone is removed by the next start).
pub const LABEL_STEP_OWNER: &str = "gantry.step-owner";
pub const LABEL_RUN: &str = "gantry.run";
pub const LABEL_JOB: &str = "gantry.job";

mod steps;
pub use steps::StepContainerSpec;

const SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/podman/podman.sock"];

/// What an image artifact says of its image (`image.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// The name the job gave (`app:dev`).
    pub name: String,
    /// The engine's image id (`sha256:…`): the same after a save and a load.
    pub id: String,
    /// Tags the engine knew it by when it was saved.
    pub tags: Vec<String>,
    /// Registry digests (`repo@sha256:…`), if it was ever pushed or pulled.
    pub repo_digests: Vec<String>,
    /// Size of the image as the engine counts it.
    pub size: i64,
}

impl ImageInfo {
    /// Reads `image.json` of an unpacked image artifact.
    pub fn read(dir: &Path) -> Result<ImageInfo> {
        let path = dir.join(DESCRIPTION);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "this artifact is not an image: {} is missing (declare the artifact with `image:` in the job)",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
    }
}

/// A container as gantry sees it: its state, in the words `gantry why` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub id: String,
    pub running: bool,
    pub pid: Option<u32>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// The engine's own error (a port taken, an image missing).
    pub error: Option<String>,
    pub restarts: i64,
    pub labels: HashMap<String, String>,
}

impl ContainerState {
    /// How it ended, as a crash status: `exited with code 3`, `OOMKilled (exit code 137)`.
    pub fn ended(&self) -> String {
        let code = self.exit_code.unwrap_or(-1);
        let mut s = if self.oom_killed {
            format!("OOMKilled: out of memory (exit code {code})")
        } else {
            format!("exited with code {code}")
        };
        if let Some(e) = self.error.as_deref().filter(|e| !e.is_empty()) {
            s.push_str(&format!(": {e}"));
        }
        s
    }
}

/// A container to create for a release.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// The port the container listens on, published on `127.0.0.1:host_port`.
    pub port: u16,
    pub host_port: u16,
    pub env: Vec<(String, String)>,
    /// `host:container[:ro]` binds and named volumes.
    pub volumes: Vec<String>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub labels: Vec<(String, String)>,
    /// Overrides the image's command.
    pub command: Option<Vec<String>>,
}

/// One Docker Engine API endpoint.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    host: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({})", self.host)
    }
}

/// The engine's address to use: `configured`, else `DOCKER_HOST`, else the first socket that
/// exists (Docker's, then podman's), else Docker's.
pub fn resolve_host(configured: Option<&str>) -> String {
    if let Some(h) = configured.filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    if let Ok(h) = std::env::var("DOCKER_HOST")
        && !h.is_empty()
    {
        return h;
    }
    let found = SOCKETS.iter().find(|s| Path::new(s).exists());
    format!("unix://{}", found.unwrap_or(&SOCKETS[0]))
}

impl Engine {
    /// Connects to the engine at `host` (see [`resolve_host`]) and checks that it answers.
    pub async fn connect(configured: Option<&str>) -> Result<Engine> {
        let host = resolve_host(configured);
        if let Some(path) = host.strip_prefix("unix://")
            && !Path::new(path).exists()
        {
            bail!(
                "no Docker engine at {host}: the socket {path} does not exist (start Docker, or `podman system service`, or set `host:` / DOCKER_HOST)"
            );
        }
        let docker = Docker::connect_with_host(&host)
            .map_err(|e| anyhow!("cannot use the Docker engine address {host}: {e}"))?
            .with_timeout(Duration::from_secs(600));
        let engine = Engine { docker, host };
        engine
            .docker
            .ping()
            .await
            .map_err(|e| anyhow!("the Docker engine at {} does not answer: {e}", engine.host))?;
        Ok(engine)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn fail(&self, what: &str, e: bollard::errors::Error) -> anyhow::Error {
        anyhow!("{what} (Docker engine at {}): {}", self.host, explain(&e))
    }

    /// The image `name` (a tag or an id), if the engine has it.
    pub async fn image(&self, name: &str) -> Result<Option<ImageInfo>> {
        match self.docker.inspect_image(name).await {
            Ok(i) => Ok(Some(ImageInfo {
                name: name.to_string(),
                id: i.id.unwrap_or_default(),
                tags: i.repo_tags.unwrap_or_default(),
                repo_digests: i.repo_digests.unwrap_or_default(),
                size: i.size.unwrap_or(0),
            })),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.fail(&format!("inspecting image {name}"), e)),
        }
    }

    /// Saves the image `name` into `dir` as an image artifact's contents: the archive
    /// ([`ARCHIVE`]) and its description ([`DESCRIPTION`]). Written to temporary names and
    /// renamed, so a failed save leaves nothing that looks whole.
    pub async fn save(&self, name: &str, dir: &Path) -> Result<ImageInfo> {
        let Some(info) = self.image(name).await? else {
            bail!(
                "the image {name} does not exist in the Docker engine at {} (did the job's steps build it with that name?)",
                self.host
            );
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let partial = dir.join(format!("{ARCHIVE}.partial"));
        let mut file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut stream = self.docker.export_image(&info.id);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.fail(&format!("saving image {name}"), e))?;
            file.write_all(&chunk)
                .await
                .with_context(|| format!("writing {}", partial.display()))?;
        }
        file.sync_all().await?;
        drop(file);
        std::fs::rename(&partial, dir.join(ARCHIVE))?;
        let description = serde_json::to_string_pretty(&info)?;
        std::fs::write(dir.join(DESCRIPTION), description + "\n")?;
        Ok(info)
    }

    /// Builds `dockerfile` (a path inside the context) from the build context `context` (a tar
    /// archive) as `tag`, handing each line the engine prints to `line`. A failed build is an
    /// error with the engine's message; the output already went to `line`.
    pub async fn build(
        &self,
        context: Vec<u8>,
        dockerfile: &str,
        tag: &str,
        mut line: impl FnMut(String) + Send,
    ) -> Result<ImageInfo> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(dockerfile)
            .t(tag)
            .rm(true)
            .forcerm(true)
            .build();
        let mut stream = self.docker.build_image(
            options,
            None,
            Some(bollard::body_full(bytes::Bytes::from(context))),
        );
        let mut failure = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    for text in [info.stream, info.status].into_iter().flatten() {
                        for l in text.lines().filter(|l| !l.trim().is_empty()) {
                            line(l.to_string());
                        }
                    }
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(detail);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    failure = Some(error);
                    break;
                }
                Err(e) => return Err(self.fail(&format!("building {tag}"), e)),
            }
        }
        if let Some(error) = failure {
            line(format!("error: {error}"));
            bail!("the image {tag} failed to build from {dockerfile}: {error}");
        }
        self.image(tag).await?.ok_or_else(|| {
            anyhow!(
                "the engine at {} reported no error building {tag}, but has no such image",
                self.host
            )
        })
    }

    /// Pushes `repo:tag` (already tagged in the engine) to its registry, logging in as `login`
    /// (user, password) when given; each line the engine prints goes to `line`. Returns the
    /// digest the registry gave the manifest, when the engine says it.
    pub async fn push(
        &self,
        repo: &str,
        tag: &str,
        login: Option<(&str, &str)>,
        mut line: impl FnMut(String) + Send,
    ) -> Result<Option<String>> {
        let credentials = login.map(|(user, password)| bollard::auth::DockerCredentials {
            username: Some(user.to_string()),
            password: Some(password.to_string()),
            serveraddress: Some(repo.split('/').next().unwrap_or(repo).to_string()),
            ..Default::default()
        });
        let mut stream = self.docker.push_image(
            repo,
            Some(PushImageOptionsBuilder::default().tag(tag).build()),
            credentials,
        );
        let mut digest = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(status) = info.status {
                        // "TAG: digest: sha256:… size: N"
                        if let Some(rest) = status.split("digest: ").nth(1) {
                            digest = rest.split_whitespace().next().map(str::to_string);
                        }
                        line(status);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    line(format!("error: {error}"));
                    bail!(
                        "pushing {repo}:{tag} (Docker engine at {}): {error}",
                        self.host
                    );
                }
                Err(e) => return Err(self.fail(&format!("pushing {repo}:{tag}"), e)),
            }
        }
        Ok(digest)
    }

    /// Loads an image archive into the engine; afterwards the engine has `expect_id`.
    pub async fn load(&self, archive: &Path, expect_id: &str) -> Result<()> {
        let file = tokio::fs::File::open(archive)
            .await
            .with_context(|| format!("opening {}", archive.display()))?;
        let body = tokio_util_stream(file);
        let mut stream = self.docker.import_image_stream(
            ImportImageOptionsBuilder::default().quiet(true).build(),
            body,
            None,
        );
        while let Some(item) = stream.next().await {
            item.map_err(|e| self.fail(&format!("loading {}", archive.display()), e))?;
        }
        if self.image(expect_id).await?.is_none() {
            bail!(
                "loading {} into the Docker engine at {} did not give image {expect_id}",
                archive.display(),
                self.host
            );
        }
        Ok(())
    }

    /// Tags image `id` as `repo:tag`.
    pub async fn tag(&self, id: &str, repo: &str, tag: &str) -> Result<()> {
        self.docker
            .tag_image(
                id,
                Some(
                    TagImageOptionsBuilder::default()
                        .repo(repo)
                        .tag(tag)
                        .build(),
                ),
            )
            .await
            .map_err(|e| self.fail(&format!("tagging {id} as {repo}:{tag}"), e))
    }

    /// Removes a tag (or an image nothing else names); missing is fine.
    pub async fn untag(&self, name: &str) -> Result<()> {
        match self
            .docker
            .remove_image(
                name,
                Some(RemoveImageOptionsBuilder::default().noprune(false).build()),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) || conflict(&e) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing the tag {name}"), e)),
        }
    }

    /// Removes the image `name` even if tagged several times (tests, and `gantry why` demos).
    pub async fn remove_image(&self, name: &str) -> Result<()> {
        match self
            .docker
            .remove_image(
                name,
                Some(RemoveImageOptionsBuilder::default().force(true).build()),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing image {name}"), e)),
        }
    }

    /// Creates (not starts) a container; returns its id.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String> {
        let port = format!("{}/tcp", spec.port);
        let bindings = HashMap::from([(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(spec.host_port.to_string()),
            }]),
        )]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.iter().cloned().collect()),
            exposed_ports: Some(vec![port]),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
                memory: spec.memory_bytes,
                nano_cpus: spec.nano_cpus,
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&spec.name)
                        .build(),
                ),
                body,
            )
            .await
            .map_err(|e| self.fail(&format!("creating container {}", spec.name), e))?;
        Ok(created.id)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| self.fail(&format!("starting container {}", short_id(id)), e))
    }

    /// The container's state; `None` if it is gone.
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerState>> {
        let c = match self.docker.inspect_container(id, None).await {
            Ok(c) => c,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(self.fail(&format!("inspecting container {}", short_id(id)), e)),
        };
        let state = c.state.unwrap_or_default();
        let running = state.running.unwrap_or(false)
            || matches!(state.status, Some(ContainerStateStatusEnum::RUNNING));
        Ok(Some(ContainerState {
            id: c.id.unwrap_or_else(|| id.to_string()),
            running,
            pid: state.pid.filter(|p| *p > 0).map(|p| p as u32),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.is_empty()),
            restarts: c.restart_count.unwrap_or(0),
            labels: c.config.and_then(|c| c.labels).unwrap_or_default(),
        }))
    }

    /// Stops a container (SIGTERM, then SIGKILL after `grace`); gone or stopped is fine.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let options = StopContainerOptionsBuilder::default()
            .t(grace.as_secs().max(1) as i32)
            .build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) || not_modified(&e) => Ok(()),
            Err(e) => Err(self.fail(&format!("stopping container {}", short_id(id)), e)),
        }
    }

    /// Removes a container (running or not); gone is fine.
    pub async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(self.fail(&format!("removing container {}", short_id(id)), e)),
        }
    }

    /// Containers (running or not) carrying every one of `labels`.
    pub async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ContainerState>> {
        let filters = HashMap::from([(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.fail("listing containers", e))?;
        let mut out = Vec::new();
        for c in found {
            let Some(id) = c.id else { continue };
            if let Some(state) = self.inspect(&id).await? {
                out.push(state);
            }
        }
        Ok(out)
    }

    /// The container's last `n` lines of output (stdout and stderr).
    pub async fn logs(&self, id: &str, n: usize) -> Vec<String> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&n.to_string())
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }
}

/// A file as a stream of chunks (the body of an image load), read as it is sent.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn not_found(e: &bollard::errors::Error) -> bool {
    status_of(e) == Some(404)
}

fn conflict(e: &bollard::errors::Error) -> bool {
    status_of(e) == Some(409)
}

fn not_modified(e: &bollard::errors::Error) -> bool {
    status_of(e) == Some(304)
}

/// The engine's message without bollard's wrapping.
fn explain(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// The 12 hex digits the engines show of an id (`sha256:` dropped).
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// A name the engine accepts for a repository (lowercase letters, digits, `.`, `_`, `-`).
pub fn repository_name(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| {
            p.chars()
                .map(|c| {
                    let c = c.to_ascii_lowercase();
                    if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Where a release's image archive lives in its unpacked artifact.
pub fn archive_in(dir: &Path) -> PathBuf {
    dir.join(ARCHIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_what_engines_accept() {
        assert_eq!(
            repository_name(&["gantry", "My App", "prod/eu"]),
            "gantry-my-app-prod-eu"
        );
    }

    #[test]
    fn a_configured_host_wins() {
        assert_eq!(
            resolve_host(Some("tcp://127.0.0.1:2375")),
            "tcp://127.0.0.1:2375"
        );
    }

    #[test]
    fn how_a_container_ended_reads_as_why_expects() {
        let mut s = ContainerState {
            id: "abc".into(),
            running: false,
            pid: None,
            exit_code: Some(137),
            oom_killed: true,
            error: None,
            restarts: 0,
            labels: HashMap::new(),
        };
        assert_eq!(s.ended(), "OOMKilled: out of memory (exit code 137)");
        s.oom_killed = false;
        s.exit_code = Some(3);
        assert_eq!(s.ended(), "exited with code 3");
    }
}
