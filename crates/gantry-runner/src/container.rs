//! Steps of a job with `image:` run in containers through the Docker Engine API (podman's here):
//! one fresh container per step from the image, the workspace bound at `/workspace`, the
//! job's variables and secrets in its environment, its memory and CPUs limited as the job says.
//! Its output is masked and logged like a host step's. A timeout or a cancel stops it (SIGTERM,
//! then SIGKILL after the grace) and every way out removes it. Containers carry their runner's
//! owner lock as a label, so the next start removes those a killed gantry left behind
//! ([`remove_leftovers`]). An out-of-memory kill is said with the engine's own word for it, `OOMKilled`.

use crate::process::{MAX_LINE, StepEnd};
use futures_util::StreamExt;
use gantry_docker::{Engine, LABEL_JOB, LABEL_RUN, LABEL_STEP_OWNER, StepContainerSpec};
use gantry_engine::mask::{LineSplitter, Masker};
use gantry_engine::ports::Stream;
use gantry_model::JobContainer;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The start of the names of one attempt's containers and network: unique on the engine, as
/// the runner's owner lock is (`gantry-owner-1234-56789-r3-j7-a1`).
pub(crate) fn names_of(owner: Option<&str>, run: i64, job_id: i64, attempt: u32) -> String {
    let owner: String = owner
        .unwrap_or("local")
        .trim_end_matches(".lock")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("gantry-{owner}-r{run}-j{job_id}-a{attempt}")
}

/// Where the workspace is inside a step's container.
pub const WORKSPACE: &str = "/workspace";

/// One step to run in a container.
pub struct ContainerStep<'a> {
    pub container: &'a JobContainer,
    pub name: String,
    pub script: &'a str,
    /// The workspace on the host, and the step's directory inside it.
    pub workspace: &'a Path,
    pub subdir: Option<&'a Path>,
    pub env: &'a [(String, String)],
    pub deadline: Option<Instant>,
    pub kill_grace: Duration,
    pub run: i64,
    pub job: &'a str,
    pub owner: Option<&'a str>,
    /// The job's network, beside its services.
    pub network: Option<&'a str>,
}

/// How the engine's memory limit showed in a step's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKill {
    /// Not killed for memory.
    No,
    /// The engine says so (`OOMKilled`).
    Reported,
    /// SIGKILL (exit code 137) under a memory limit, which the engine did not stop itself and
    /// did not call OOMKilled (podman with cgroupfs never does).
    AtLimit,
}

impl MemoryKill {
    /// What the step's end says of it, if memory killed it.
    pub fn note(self, container: Option<&JobContainer>) -> Option<String> {
        let limit = container
            .and_then(|c| c.memory_bytes)
            .map_or("the engine's".to_string(), |b| {
                format!("{} MiB", b / (1024 * 1024))
            });
        match self {
            MemoryKill::No => None,
            MemoryKill::Reported => Some(format!(
                "was OOMKilled by the container engine: out of memory (its limit is {limit})"
            )),
            MemoryKill::AtLimit => Some(format!(
                "was killed with SIGKILL (exit code 137) at its memory limit of {limit}: out of memory (the engine did not report OOMKilled itself)"
            )),
        }
    }
}

/// A container step's environment: the step's, less what only makes sense on the host (the
/// host's `PATH`, `HOME`, … would hide the image's), with the workspace where the step sees it.
pub(crate) fn step_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| !crate::execute::BASE_ENV.contains(&k.as_str()))
        .cloned()
        .collect();
    crate::job::set_env(&mut out, "GANTRY_WORKSPACE", WORKSPACE);
    out
}

/// Runs the step; the second value says whether memory killed it.
pub async fn run_step(
    engine: &Engine,
    step: &ContainerStep<'_>,
    masker: &Masker,
    mut on_line: impl FnMut(Stream, String),
    cancel: &mut watch::Receiver<bool>,
) -> (StepEnd, MemoryKill) {
    if *cancel.borrow() {
        return (StepEnd::Cancelled, MemoryKill::No);
    }
    let working_dir = match step.subdir {
        Some(sub) => format!("{WORKSPACE}/{}", sub.display()),
        None => WORKSPACE.to_string(),
    };
    let mut labels = vec![
        (LABEL_RUN.to_string(), step.run.to_string()),
        (LABEL_JOB.to_string(), step.job.to_string()),
    ];
    if let Some(owner) = step.owner {
        labels.push((LABEL_STEP_OWNER.to_string(), owner.to_string()));
    }
    let spec = StepContainerSpec {
        name: step.name.clone(),
        image: step.container.image.clone(),
        command: vec![
            "/bin/sh".into(),
            "-e".into(),
            "-c".into(),
            step.script.to_string(),
        ],
        env: step.env.to_vec(),
        working_dir,
        binds: vec![format!("{}:{WORKSPACE}", step.workspace.display())],
        memory_bytes: step.container.memory_bytes.map(|b| b as i64),
        nano_cpus: step.container.nano_cpus.map(|n| n as i64),
        labels,
        network: step.network.map(str::to_string),
        aliases: Vec::new(),
    };
    let id = match engine.create_step(&spec).await {
        Ok(id) => id,
        Err(e) => return (StepEnd::SpawnFailed(format!("{e:#}")), MemoryKill::No),
    };
    let end = drive(engine, &id, step, masker, &mut on_line, cancel).await;
    let reported = matches!(end, StepEnd::Exited(_))
        && engine
            .inspect(&id)
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.oom_killed);
    let oom = match end {
        _ if reported => MemoryKill::Reported,
        StepEnd::Exited(137) if step.container.memory_bytes.is_some() => MemoryKill::AtLimit,
        _ => MemoryKill::No,
    };
    if let Err(e) = engine.remove(&id).await {
        tracing::warn!(container = %gantry_docker::short_id(&id), error = %format!("{e:#}"), "removing a step's container");
    }
    (end, oom)
}

/// How long the output of a step's container may go on after the container ended.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

async fn drive(
    engine: &Engine,
    id: &str,
    step: &ContainerStep<'_>,
    masker: &Masker,
    on_line: &mut impl FnMut(Stream, String),
    cancel: &mut watch::Receiver<bool>,
) -> StepEnd {
    if let Err(e) = engine.start(id).await {
        return StepEnd::SpawnFailed(format!("{e:#}"));
    }
    let mut output = Box::pin(engine.follow(id));
    let mut out_lines = LineSplitter::new(MAX_LINE);
    let mut err_lines = LineSplitter::new(MAX_LINE);
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut stopped: Option<StepEnd> = None;
    // The output ends when the container does; but an engine may keep the stream open after
    // the container ended (podman's log follow did, under load: the step waited for ever).
    // So its state is looked at every second too, and a stream still open OUTPUT_GRACE after
    // the container ended is given up.
    let mut look = tokio::time::interval(Duration::from_secs(1));
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ended_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = look.tick() => match ended_at {
                Some(at) if at.elapsed() >= OUTPUT_GRACE => {
                    tracing::warn!(container = %gantry_docker::short_id(id), "the step's container ended but its output stream stayed open; given up");
                    break;
                }
                Some(_) => {}
                None => {
                    if let Ok(Some(s)) = engine.inspect(id).await && !s.running {
                        ended_at = Some(Instant::now());
                    }
                }
            },
            chunk = output.next() => match chunk {
                Some(Ok((is_err, bytes))) => {
                    let (stream, splitter) = if is_err {
                        (Stream::Stderr, &mut err_lines)
                    } else {
                        (Stream::Stdout, &mut out_lines)
                    };
                    for line in splitter.push(&bytes, masker) {
                        on_line(stream, line);
                    }
                }
                // The output ends when the container does.
                Some(Err(_)) | None => break,
            },
            _ = tokio::time::sleep_until(step.deadline.unwrap_or(far)), if stopped.is_none() => {
                stopped = Some(StepEnd::TimedOut);
                let _ = engine.stop(id, step.kill_grace).await;
            }
            changed = cancel.changed(), if stopped.is_none() => {
                if changed.is_err() || *cancel.borrow() {
                    stopped = Some(StepEnd::Cancelled);
                    let _ = engine.stop(id, step.kill_grace).await;
                }
            }
        }
    }
    if let Some(l) = out_lines.finish(masker) {
        on_line(Stream::Stdout, l);
    }
    if let Some(l) = err_lines.finish(masker) {
        on_line(Stream::Stderr, l);
    }
    if let Some(why) = stopped {
        return why;
    }
    // The output may end a moment before the engine records the exit.
    for _ in 0..100 {
        match engine.inspect(id).await {
            Ok(Some(s)) if !s.running => {
                return StepEnd::Exited(s.exit_code.unwrap_or(-1) as i32);
            }
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(None) => return StepEnd::SpawnFailed("the step's container vanished".into()),
            Err(e) => return StepEnd::SpawnFailed(format!("{e:#}")),
        }
    }
    StepEnd::SpawnFailed("the step's container did not stop after its output ended".into())
}

/// Removes the step containers a dead runner left of run `run` (owned by `owner`); returns how
/// many. Without a reachable engine there is nothing to remove.
pub async fn remove_leftovers(run: i64, owner: &str) -> usize {
    let Ok(engine) = Engine::connect(None).await else {
        return 0;
    };
    let run = run.to_string();
    let Ok(found) = engine
        .list(&[(LABEL_RUN, run.as_str()), (LABEL_STEP_OWNER, owner)])
        .await
    else {
        return 0;
    };
    let mut removed = 0;
    for c in found {
        if engine.remove(&c.id).await.is_ok() {
            removed += 1;
        }
    }
    // The networks of its jobs' services, once their containers are gone.
    let _ = engine
        .remove_networks(&[(LABEL_RUN, run.as_str()), (LABEL_STEP_OWNER, owner)])
        .await;
    removed
}
