//! The `docker` target: each release is a container of the release's image artifact, created
//! through the Docker Engine API with gantry's labels, its port published on 127.0.0.1, behind
//! the environment's router exactly like a `process` release. The image comes back from the
//! artifact (its archive is loaded) whenever the engine lacks it, so a pruned image or a fresh
//! host never breaks a rollback.
//!
//! Containers outlive gantry: stopping gantry leaves them serving, and a gantry starting again
//! adopts the live one by its labels ([`Target::adopt`]) without restarting it. A watcher per
//! container sees it end by itself (exit code, OOMKilled, its last output), counts the crash for
//! the bake and starts it again with backoff, as the supervisor does for processes.

use super::{ReleaseContext, Running, Target, append, free_port, note};
use crate::supervisor::{Crash, ServiceEvent};
use anyhow::{Context, bail};
use async_trait::async_trait;
use gantry_docker::{
    ContainerSpec, Engine, ImageInfo, LABEL_DIGEST, LABEL_ENVIRONMENT, LABEL_INSTANCE,
    LABEL_PROJECT, LABEL_RELEASE,
};
use gantry_model::{DockerTarget as Spec, TargetKind, TargetSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// The port a container was published on (so an adopted one is found again).
const LABEL_PORT: &str = "gantry.port";
/// How often a watcher looks at its container.
const WATCH_EVERY: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Time a container has to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct DockerTarget {
    /// Tells this gantry's containers from others' on a shared engine (from the data directory).
    instance: String,
    engine: tokio::sync::Mutex<Option<Engine>>,
    containers: Mutex<HashMap<i64, Slot>>,
    events: mpsc::UnboundedSender<ServiceEvent>,
}

struct Slot {
    id: String,
    addr: SocketAddr,
    started: Instant,
    log: PathBuf,
    seen: Arc<Mutex<Seen>>,
    stop: watch::Sender<bool>,
    engine: Engine,
}

#[derive(Default)]
struct Seen {
    pid: Option<u32>,
    crashes: u32,
    last_crash: Option<Crash>,
}

impl DockerTarget {
    pub fn new(root: &Path, events: mpsc::UnboundedSender<ServiceEvent>) -> Self {
        Self {
            instance: instance_of(root),
            engine: tokio::sync::Mutex::new(None),
            containers: Mutex::new(HashMap::new()),
            events,
        }
    }

    /// The engine the environment names, connected once (again if the address changed).
    async fn engine(&self, r: &ReleaseContext, spec: &Spec) -> anyhow::Result<Engine> {
        let wanted = gantry_docker::resolve_host(spec.host.as_deref());
        let mut slot = self.engine.lock().await;
        if let Some(e) = &*slot
            && e.host() == wanted
        {
            return Ok(e.clone());
        }
        let engine = Engine::connect(Some(&wanted)).await.with_context(|| {
            format!(
                "environment {}, field target.docker.host{}",
                r.environment,
                if spec.host.is_none() {
                    " (not set: DOCKER_HOST, else the usual sockets)"
                } else {
                    ""
                }
            )
        })?;
        *slot = Some(engine.clone());
        Ok(engine)
    }

    fn name_of(&self, r: &ReleaseContext) -> String {
        format!(
            "{}-r{}",
            gantry_docker::repository_name(&["gantry", &self.instance, &r.project, &r.environment]),
            r.source
        )
    }

    /// The tag that keeps a release's image in the engine while the release is kept.
    fn tag_of(&self, project: &str, environment: &str) -> String {
        gantry_docker::repository_name(&["gantry", &self.instance, project, environment])
    }

    fn labels(&self, r: &ReleaseContext) -> Vec<(&'static str, String)> {
        vec![
            (LABEL_INSTANCE, self.instance.clone()),
            (LABEL_PROJECT, r.project.clone()),
            (LABEL_ENVIRONMENT, r.environment.clone()),
            (LABEL_RELEASE, r.source.to_string()),
        ]
    }

    /// Our containers of `r`'s release, running or not.
    async fn find(&self, engine: &Engine, r: &ReleaseContext) -> anyhow::Result<Vec<String>> {
        let labels = self.labels(r);
        let wanted: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Ok(engine
            .list(&wanted)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Makes sure the engine has the release's image (loading it from the artifact if not)
    /// and that it is tagged for the release.
    async fn image(&self, engine: &Engine, r: &ReleaseContext) -> anyhow::Result<ImageInfo> {
        let info = ImageInfo::read(&r.dir).with_context(|| {
            format!(
                "environment {}: artifact `{}` cannot run as a container",
                r.environment, r.artifact
            )
        })?;
        if engine.image(&info.id).await?.is_none() {
            note(
                &r.log,
                &format!(
                    "image {} ({}) is not in the engine: loading it from the artifact store",
                    info.name,
                    gantry_docker::short_id(&info.id)
                ),
            );
            engine
                .load(&gantry_docker::archive_in(&r.dir), &info.id)
                .await?;
        }
        engine
            .tag(
                &info.id,
                &self.tag_of(&r.project, &r.environment),
                &format!("release-{}", r.source),
            )
            .await?;
        Ok(info)
    }

    fn watch(&self, r: &ReleaseContext, engine: Engine, id: String, addr: SocketAddr) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let slot = Slot {
            id: id.clone(),
            addr,
            started: Instant::now(),
            log: r.log.clone(),
            seen: seen.clone(),
            stop: stop_tx,
            engine: engine.clone(),
        };
        if let Some(old) = self
            .containers
            .lock()
            .expect("containers")
            .insert(r.source, slot)
        {
            let _ = old.stop.send(true);
        }
        tokio::spawn(watcher(
            engine,
            id,
            r.source_id,
            r.log.clone(),
            seen,
            stop_rx,
            self.events.clone(),
        ));
    }

    fn take(&self, source: i64) -> Option<Slot> {
        let slot = self.containers.lock().expect("containers").remove(&source);
        if let Some(s) = &slot {
            let _ = s.stop.send(true);
        }
        slot
    }
}

#[async_trait]
impl Target for DockerTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Docker
    }

    async fn start(&self, r: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>> {
        let Some(TargetSpec::Docker(spec)) = &r.spec.target else {
            bail!("environment {} has no docker target", r.environment);
        };
        let engine = self.engine(r, spec).await?;
        let info = self.image(&engine, r).await?;
        // A release started again (a rollback to a stopped one) replaces what ran before.
        self.take(r.source);
        for old in self.find(&engine, r).await? {
            engine.remove(&old).await?;
        }
        let host_port = free_port()?;
        let mut env: Vec<(String, String)> = r
            .env()
            .into_iter()
            .filter(|(k, _)| k.starts_with("GANTRY_") && k != "GANTRY_ARTIFACT")
            .collect();
        env.extend(spec.env.iter().cloned());
        env.push(("PORT".into(), spec.port.to_string()));
        let mut labels: Vec<(String, String)> = self
            .labels(r)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        labels.push((LABEL_DIGEST.into(), r.digest.clone()));
        labels.push((LABEL_PORT.into(), host_port.to_string()));
        labels.extend(spec.labels.iter().cloned());
        let container = ContainerSpec {
            name: self.name_of(r),
            image: info.id.clone(),
            port: spec.port,
            host_port,
            env,
            volumes: spec.volumes.clone(),
            memory_bytes: spec.memory_bytes.map(|m| m as i64),
            nano_cpus: spec.nano_cpus.map(|n| n as i64),
            labels,
            command: spec.command.clone(),
        };
        let id = engine.create(&container).await?;
        if let Err(e) = engine.start(&id).await {
            let _ = engine.remove(&id).await;
            return Err(e);
        }
        note(
            &r.log,
            &format!(
                "container {} of image {} ({}) started, port {} on 127.0.0.1:{host_port}",
                gantry_docker::short_id(&id),
                info.name,
                gantry_docker::short_id(&info.id),
                spec.port
            ),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], host_port));
        self.watch(r, engine, id, addr);
        Ok(Some(addr))
    }

    async fn adopt(&self, r: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>> {
        let Some(TargetSpec::Docker(spec)) = &r.spec.target else {
            return Ok(None);
        };
        let engine = self.engine(r, spec).await?;
        let labels = self.labels(r);
        let wanted: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for c in engine.list(&wanted).await? {
            let port = c.labels.get(LABEL_PORT).and_then(|p| p.parse::<u16>().ok());
            let same = c.labels.get(LABEL_DIGEST) == Some(&r.digest);
            if let (true, true, Some(port)) = (c.running, same, port) {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                note(
                    &r.log,
                    &format!(
                        "container {} still runs after gantry restarted: adopted",
                        gantry_docker::short_id(&c.id)
                    ),
                );
                self.watch(r, engine, c.id, addr);
                return Ok(Some(addr));
            }
        }
        Ok(None)
    }

    async fn roll_back(&self, _to: &ReleaseContext, _from: &ReleaseContext) -> anyhow::Result<()> {
        Ok(()) // The router moves users.
    }

    fn running(&self, source: i64) -> Option<Running> {
        let containers = self.containers.lock().expect("containers");
        let s = containers.get(&source)?;
        let seen = s.seen.lock().expect("seen");
        Some(Running {
            addr: Some(s.addr),
            pid: seen.pid,
            uptime: s.started.elapsed(),
            crashes: seen.crashes,
            last_crash: seen.last_crash.clone(),
            log: s.log.clone(),
        })
    }

    async fn stop(&self, source: i64) {
        if let Some(s) = self.take(source)
            && let Err(e) = s.engine.stop(&s.id, STOP_GRACE).await
        {
            tracing::warn!(error = %format!("{e:#}"), "stopping a release's container");
        }
    }

    async fn retire(&self, r: &ReleaseContext) {
        self.take(r.source);
        let Some(TargetSpec::Docker(spec)) = &r.spec.target else {
            return;
        };
        let Ok(engine) = self.engine(r, spec).await else {
            return;
        };
        if let Ok(ids) = self.find(&engine, r).await {
            for id in ids {
                if let Err(e) = engine.remove(&id).await {
                    tracing::warn!(error = %format!("{e:#}"), "removing a retired release's container");
                }
            }
        }
        // Only the release's own tag: an image a kept release also runs keeps that one's tag.
        let tag = format!(
            "{}:release-{}",
            self.tag_of(&r.project, &r.environment),
            r.source
        );
        if let Err(e) = engine.untag(&tag).await {
            tracing::warn!(error = %format!("{e:#}"), "untagging a retired release's image");
        }
    }

    async fn strays(&self, live: &ReleaseContext, kept: &[i64]) -> Vec<String> {
        let Some(TargetSpec::Docker(spec)) = &live.spec.target else {
            return Vec::new();
        };
        let Ok(engine) = self.engine(live, spec).await else {
            return Vec::new();
        };
        let wanted = [
            (LABEL_INSTANCE, self.instance.as_str()),
            (LABEL_PROJECT, live.project.as_str()),
            (LABEL_ENVIRONMENT, live.environment.as_str()),
        ];
        let Ok(found) = engine.list(&wanted).await else {
            return Vec::new();
        };
        found
            .into_iter()
            .filter(|c| {
                let release = c.labels.get(LABEL_RELEASE).and_then(|r| r.parse().ok());
                !release.is_some_and(|r: i64| kept.contains(&r))
            })
            .map(|c| {
                format!(
                    "container {} ({}, labelled release {}) belongs to no release gantry keeps: left as it is (remove it with `docker rm -f {}` if nobody needs it)",
                    gantry_docker::short_id(&c.id),
                    if c.running { "running" } else { "stopped" },
                    c.labels.get(LABEL_RELEASE).map_or("?", String::as_str),
                    gantry_docker::short_id(&c.id)
                )
            })
            .collect()
    }

    async fn stop_all(&self) {
        // Containers outlive gantry: only the watchers stop; the next gantry adopts them.
        let all: Vec<i64> = self
            .containers
            .lock()
            .expect("containers")
            .keys()
            .copied()
            .collect();
        for source in all {
            self.take(source);
        }
    }
}

/// Looks at a container until told to stop: when it ended by itself, records the crash (how,
/// and its last output, also into the release log) and starts it again with backoff.
async fn watcher(
    engine: Engine,
    id: String,
    release_id: i64,
    log: PathBuf,
    seen: Arc<Mutex<Seen>>,
    mut stop: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<ServiceEvent>,
) {
    let mut backoff = FIRST_BACKOFF;
    let mut up_since = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let state = match engine.inspect(&id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                let mut seen = seen.lock().expect("seen");
                seen.crashes += 1;
                seen.pid = None;
                seen.last_crash = Some(Crash {
                    status: "the container was removed outside gantry".into(),
                    output_tail: Vec::new(),
                });
                return;
            }
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "inspecting a release's container");
                continue;
            }
        };
        if state.running {
            seen.lock().expect("seen").pid = state.pid;
            if up_since.elapsed() > MAX_BACKOFF {
                backoff = FIRST_BACKOFF;
            }
            continue;
        }
        if *stop.borrow() {
            return;
        }
        let status = state.ended();
        let tail = engine.logs(&id, 20).await;
        note(
            &log,
            &format!("container {} {status}", gantry_docker::short_id(&id)),
        );
        append(&log, &tail);
        {
            let mut seen = seen.lock().expect("seen");
            seen.crashes += 1;
            seen.pid = None;
            seen.last_crash = Some(Crash {
                status: status.clone(),
                output_tail: tail.clone(),
            });
        }
        let _ = events.send(ServiceEvent::Crashed {
            release_id,
            status,
            output_tail: tail,
            restart_in: backoff,
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        up_since = Instant::now();
        if let Err(e) = engine.start(&id).await {
            tracing::warn!(error = %format!("{e:#}"), "starting a crashed container again");
        }
    }
}

/// A short, stable name for a data directory (FNV-1a of its path), so that gantrys sharing an
/// engine never take each other's containers.
fn instance_of(root: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in root.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h >> 32)
}

#[cfg(test)]
mod tests {
    use super::instance_of;
    use std::path::Path;

    #[test]
    fn instances_are_stable_and_tell_data_directories_apart() {
        assert_eq!(
            instance_of(Path::new("/srv/a")),
            instance_of(Path::new("/srv/a"))
        );
        assert_ne!(
            instance_of(Path::new("/srv/a")),
            instance_of(Path::new("/srv/b"))
        );
        assert_eq!(instance_of(Path::new("/srv/a")).len(), 8);
    }
}
