//! One attempt of one job: a fresh workspace exported from the commit, the steps in order (the
//! first failure ends the attempt), then the declared artifacts stored. Every step and line is
//! recorded as it happens.

use crate::context::RunContext;
use crate::events::RunEvent;
use crate::images::{build_with, push_image, store_artifact};
use crate::logs::{Admit, LogBudget, LogLine};
use crate::process::{StepEnd, StepSpec, run_step};
use gantry_engine::ports::Stream;
use gantry_engine::run::AttemptOutcome;
use gantry_model::{Job, StepStatus};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// How one attempt ended: what the run machine is told, and the job's exit code and error.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub outcome: AttemptOutcome,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

impl AttemptResult {
    pub fn failed(error: String) -> Self {
        Self {
            outcome: AttemptOutcome::Failed,
            exit_code: None,
            error: Some(error),
        }
    }
}

pub(crate) async fn run_attempt(
    ctx: Arc<RunContext>,
    job: Job,
    job_id: i64,
    attempt: u32,
) -> AttemptResult {
    let workspace = ctx
        .work_dir
        .join(format!("{}-{attempt}", sanitize(&job.name)));
    let result = attempt_in(&ctx, &job, job_id, attempt, &workspace).await;
    let _ = tokio::fs::remove_dir_all(tmp_of(&workspace)).await;
    if !ctx.keep_workspaces {
        let _ = tokio::fs::remove_dir_all(&workspace).await;
    }
    result
}

async fn attempt_in(
    ctx: &Arc<RunContext>,
    job: &Job,
    job_id: i64,
    attempt: u32,
    workspace: &Path,
) -> AttemptResult {
    let mut cancel = ctx.cancel.clone();
    let job_name: Arc<str> = Arc::from(job.name.as_str());
    let started = Instant::now();
    let deadline = job.timeout.map(|t| started + t);

    // Secrets first: a missing one fails the job before anything runs. A push's login is
    // checked here too, though only the push sees it.
    let logins = job.artifacts.iter().filter_map(|a| a.push.as_ref());
    let mut asked = logins
        .clone()
        .filter_map(|p| p.password_secret.as_ref())
        .chain(&job.secrets);
    if let (Some(why), Some(name)) = (&ctx.secrets_withheld, asked.next()) {
        return AttemptResult::failed(format!("secret `{name}` is withheld: {why}"));
    }
    if let Some(name) = logins
        .filter_map(|p| p.password_secret.as_ref())
        .find(|name| !ctx.secrets.contains_key(*name))
    {
        return AttemptResult::failed(format!(
            "the registry password secret `{name}` is not set: export {name} in gantry's environment or add it to the secrets file (--secrets-file)"
        ));
    }
    let mut secret_env = Vec::new();
    for name in &job.secrets {
        match ctx.secrets.get(name) {
            Some(v) => secret_env.push((name.clone(), v.expose().to_string())),
            None => {
                return AttemptResult::failed(format!(
                    "secret `{name}` is not set: export {name} in gantry's environment or add it to the secrets file (--secrets-file)"
                ));
            }
        }
    }

    let prefetched = match &ctx.prefetched {
        Some(p) => p.place(&ctx.commit, workspace).await,
        None => None,
    };
    let exported = match prefetched {
        Some(placed) => placed,
        None => ctx.source.place(&ctx.commit, workspace).await,
    };
    if let Err(e) = exported {
        return AttemptResult::failed(format!("preparing the workspace: {e:#}"));
    }

    // Steps run in the project's directory: the checkout's root, or the subdirectory holding
    // the pipeline file.
    let project_dir = match &ctx.subdir {
        Some(sub) => workspace.join(sub),
        None => workspace.to_path_buf(),
    };
    if let Err(e) = unpack_needs(ctx, job, &project_dir).await {
        return AttemptResult::failed(e);
    }
    // With caches, gantry's own step `restore caches` comes first and `save caches` last.
    let first = usize::from(!job.caches.is_empty());
    let budget = Arc::new(Mutex::new(LogBudget::new(ctx.log_cap)));
    let mut restored = None;
    if first == 1 {
        let step = "restore caches";
        let dir = project_dir.clone();
        let done = system_step(ctx, job, job_id, attempt, 0, step, &budget, |emit| async {
            restored = Some(crate::cache::restore(ctx, job, &dir, emit).await);
            Ok(())
        })
        .await;
        if let Err(failed) = done {
            return failed;
        }
    }
    let mut base_env = ctx.env_for(job, &project_dir, attempt);
    base_env.extend(secret_env);
    // A sandboxed step's own places: its workspace, and a temporary directory beside it (the
    // directories above the data directory are closed to it, /tmp among them in tests).
    let sandbox = match &ctx.sandbox {
        Some(sandbox) => {
            let tmp = tmp_of(workspace);
            if let Err(e) = std::fs::create_dir_all(&tmp) {
                return AttemptResult::failed(format!(
                    "preparing the step's temporary directory {}: {e}",
                    tmp.display()
                ));
            }
            set_env(&mut base_env, "TMPDIR", &tmp.display().to_string());
            Some(sandbox.grants(&[workspace, &tmp]))
        }
        None => None,
    };

    // A job with `image:` reaches its engine once, before its first step. An image an earlier
    // job of this run built (its artifact's name) is that run's build.
    let container = job.container.as_ref().map(|c| {
        let built = ctx
            .pipeline
            .jobs()
            .flat_map(|(_, j)| &j.artifacts)
            .any(|a| a.build.is_some() && a.name == c.image);
        let mut c = c.clone();
        if built {
            c.image = format!(
                "{}:run-{}",
                gantry_docker::repository_name(&["gantry-build", &ctx.project, &c.image]),
                ctx.run_id
            );
        }
        c
    });
    let engine = match &container {
        Some(c) => match gantry_docker::Engine::connect(None).await {
            Ok(e) => Some(e),
            Err(e) => {
                return AttemptResult::failed(format!(
                    "the steps run in image {}, and the container engine is out of reach: {e:#}",
                    c.image
                ));
            }
        },
        None => None,
    };
    // Services beside the job, on its network, until this attempt ends.
    let names = crate::container::names_of(ctx.owner.as_deref(), ctx.run_id, job_id, attempt);
    let services = match (&engine, job.services.is_empty()) {
        (Some(engine), false) => {
            let prefix = names.clone();
            match crate::services::Services::start(
                engine,
                &job.services,
                ctx.run_id,
                &job.name,
                ctx.owner.as_deref(),
                &prefix,
            )
            .await
            {
                Ok(s) => Some(s),
                Err(e) => return AttemptResult::failed(e),
            }
        }
        _ => None,
    };
    // Every way out of the steps comes back here, so the services are always removed.
    let result = async {
        // A step that succeeded with more to come is recorded as ended once the next one has
        // started: that write is off the gap between the two (the next start's is not: its
        // id names the step's log lines).
        let mut ended_before: Option<StepEnded> = None;
        for (position, step) in job.steps.iter().enumerate() {
            let index = position + first;
            let step_name: Arc<str> = Arc::from(step.name.as_str());
            let step_id = match ctx
                .records
                .start_step(job_id, attempt, index, &step.name, crate::now_millis())
                .await
            {
                Ok(id) => id,
                Err(e) => {
                    if let Some(ended) = ended_before.take() {
                        ended.write(ctx).await;
                    }
                    return AttemptResult::failed(format!("recording step `{}`: {e:#}", step.name));
                }
            };
            ctx.observer.event(&RunEvent::StepStarted {
                run: ctx.run_id,
                job: job.name.clone(),
                attempt,
                step: step.name.clone(),
                index,
            });
            let mut env = base_env.clone();
            for (k, v) in &step.env {
                set_env(&mut env, k, v);
            }
            let step_deadline = match (deadline, step.timeout) {
                (Some(d), Some(t)) => Some(d.min(Instant::now() + t)),
                (Some(d), None) => Some(d),
                (None, Some(t)) => Some(Instant::now() + t),
                (None, None) => None,
            };
            let spec = StepSpec {
                script: &step.run,
                cwd: &project_dir,
                env: &env,
                deadline: step_deadline,
                kill_grace: ctx.kill_grace,
                sandbox: sandbox.as_ref(),
                backlog: Some(ctx.logs.backlog()),
            };
            let mut log = StepLog::new(ctx, step_id, job_name.clone(), step_name, &budget);
            let dropped_before = budget.lock().expect("log budget").dropped();
            let step_started = Instant::now();
            let mut oom = crate::container::MemoryKill::No;
            let record_before = async {
                if let Some(ended) = ended_before.take() {
                    ended.write(ctx).await;
                }
            };
            let run = async {
                match (&container, &engine) {
                    (Some(container), Some(engine)) => {
                        let in_container = crate::container::ContainerStep {
                            container,
                            name: format!("{names}-s{index}"),
                            script: &step.run,
                            workspace,
                            subdir: ctx.subdir.as_deref(),
                            env: &crate::container::step_env(&env),
                            deadline: step_deadline,
                            kill_grace: ctx.kill_grace,
                            run: ctx.run_id,
                            job: &job.name,
                            owner: ctx.owner.as_deref(),
                            network: services.as_ref().map(|s| s.network.as_str()),
                        };
                        let (end, killed) = crate::container::run_step(
                            engine,
                            &in_container,
                            &ctx.masker,
                            |stream, text| log.line(stream, text),
                            &mut cancel,
                        )
                        .await;
                        oom = killed;
                        end
                    }
                    _ => {
                        run_step(
                            &spec,
                            &ctx.masker,
                            |stream, text| log.line(stream, text),
                            &mut cancel,
                        )
                        .await
                    }
                }
            };
            // The step starts on `run`'s first poll; the last step's end is written meanwhile.
            let (end, ()) = tokio::join!(run, record_before);
            let summary = budget
                .lock()
                .expect("log budget")
                .summary(&step.name, dropped_before);
            if let Some(summary) = summary {
                log.system(summary);
            }
            let memory = oom.note(job.container.as_ref());
            let (status, note) = match &end {
                _ if memory.is_some() => (StepStatus::Failed, memory),
                StepEnd::Exited(0) => (StepStatus::Succeeded, None),
                StepEnd::Exited(code) => {
                    (StepStatus::Failed, Some(format!("exited with code {code}")))
                }
                StepEnd::Signaled(sig) => (
                    StepStatus::Failed,
                    Some(format!("killed by signal {sig}{}", signal_hint(*sig))),
                ),
                StepEnd::TimedOut => {
                    let limit = if step_deadline == deadline {
                        job.timeout
                    } else {
                        step.timeout
                    };
                    let limit = limit
                        .map(gantry_model::duration::format_duration)
                        .unwrap_or_default();
                    (
                        StepStatus::TimedOut,
                        Some(format!(
                            "timed out after {limit}; its process group was stopped"
                        )),
                    )
                }
                StepEnd::Cancelled => (
                    StepStatus::Cancelled,
                    Some("cancelled; its process group was stopped".to_string()),
                ),
                StepEnd::SpawnFailed(e) => (StepStatus::Failed, Some(e.clone())),
            };
            if let Some(note) = &note {
                log.system(format!("gantry: step `{}` {note}", step.name));
            }
            let exit_code = end.exit_code();
            let ended = StepEnded {
                step_id,
                attempt,
                status,
                exit_code,
                started: step_started,
                at: crate::now_millis(),
            };
            if status == StepStatus::Succeeded && position + 1 < job.steps.len() {
                ended.tell(ctx, job, &step.name);
                ended_before = Some(ended);
                continue;
            }
            ended.record(ctx, job, &step.name).await;
            if status != StepStatus::Succeeded {
                let outcome = match status {
                    StepStatus::TimedOut => AttemptOutcome::TimedOut,
                    StepStatus::Cancelled => AttemptOutcome::Cancelled,
                    _ => AttemptOutcome::Failed,
                };
                return AttemptResult {
                    outcome,
                    exit_code,
                    error: note.map(|n| format!("step `{}` {n}", step.name)),
                };
            }
        }

        // Each artifact may add two steps of gantry's own, numbered after the job's: its build, its push.
        for (i, artifact) in job.artifacts.iter().enumerate() {
            let built = match &artifact.build {
                Some(build) => {
                    let index = first + job.steps.len() + 2 * i;
                    let step = format!("build image {}", artifact.name);
                    let tag = format!(
                        "{}:run-{}",
                        gantry_docker::repository_name(&[
                            "gantry-build",
                            &ctx.project,
                            &artifact.name
                        ]),
                        ctx.run_id
                    );
                    let built =
                        system_step(ctx, job, job_id, attempt, index, &step, &budget, |emit| {
                            build_with(&project_dir, build, &tag, emit)
                        })
                        .await;
                    match built {
                        Ok(()) => Some(tag),
                        Err(failed) => return failed,
                    }
                }
                None => None,
            };
            let stored = store_artifact(ctx, &project_dir, artifact, built.as_deref()).await;
            let stored = match (stored, &artifact.push) {
                (Ok((stored, Some(image))), Some(push)) => {
                    let index = first + job.steps.len() + 2 * i + 1;
                    let step = format!("push image {}", artifact.name);
                    let pushed =
                        system_step(ctx, job, job_id, attempt, index, &step, &budget, |emit| {
                            push_image(ctx, &image, push, emit)
                        })
                        .await;
                    match pushed {
                        Ok(()) => Ok(stored),
                        Err(failed) => return failed,
                    }
                }
                (stored, _) => stored.map(|(stored, _)| stored),
            };
            match stored {
                Ok(stored) => {
                    if let Err(e) = ctx
                        .records
                        .record_artifact(
                            ctx.run_id,
                            job_id,
                            &artifact.name,
                            &stored,
                            crate::now_millis(),
                        )
                        .await
                    {
                        return AttemptResult::failed(format!(
                            "recording artifact `{}`: {e:#}",
                            artifact.name
                        ));
                    }
                    ctx.observer.event(&RunEvent::ArtifactStored {
                        run: ctx.run_id,
                        job: job.name.clone(),
                        name: artifact.name.clone(),
                        digest: stored.digest.clone(),
                        size: stored.size,
                        newly_stored: stored.newly_stored,
                    });
                }
                Err(e) => {
                    return AttemptResult::failed(format!("artifact `{}`: {e:#}", artifact.name));
                }
            }
        }
        if let Some(restored) = &restored {
            let index = first + job.steps.len() + 2 * job.artifacts.len();
            let dir = project_dir.clone();
            let saved = system_step(
                ctx,
                job,
                job_id,
                attempt,
                index,
                "save caches",
                &budget,
                |emit| async {
                    crate::cache::save(ctx, job, &dir, restored, ctx.cache_cap, emit).await;
                    Ok(())
                },
            )
            .await;
            if let Err(failed) = saved {
                return failed;
            }
        }
        AttemptResult {
            outcome: AttemptOutcome::Succeeded,
            exit_code: Some(0),
            error: None,
        }
    }
    .await;
    if let Some(services) = services {
        services.stop().await;
    }
    result
}

/// Where one step's lines go: numbered, into the run's log writer, the job's [`LogBudget`]
/// deciding which of the step's own lines are kept; gantry's notes are always kept.
struct StepLog {
    logs: crate::logs::LogSender,
    step_id: i64,
    job: Arc<str>,
    step: Arc<str>,
    line_no: i64,
    budget: Arc<Mutex<LogBudget>>,
}

impl StepLog {
    fn new(
        ctx: &RunContext,
        step_id: i64,
        job: Arc<str>,
        step: Arc<str>,
        budget: &Arc<Mutex<LogBudget>>,
    ) -> Self {
        Self {
            logs: ctx.logs.clone(),
            step_id,
            job,
            step,
            line_no: 0,
            budget: budget.clone(),
        }
    }

    /// A line of the step's output (already masked).
    fn line(&mut self, stream: Stream, text: String) {
        let admit = self.budget.lock().expect("log budget").admit(text.len());
        match admit {
            Admit::Keep => self.send(stream, text),
            Admit::Reached => {
                let marker = self.budget.lock().expect("log budget").reached_text();
                self.send(Stream::System, marker);
            }
            Admit::Drop => {}
        }
    }

    /// A line of gantry's own.
    fn system(&mut self, text: String) {
        self.send(Stream::System, text);
    }

    fn send(&mut self, stream: Stream, text: String) {
        self.line_no += 1;
        self.logs.line(LogLine {
            step_id: self.step_id,
            job: self.job.clone(),
            step: self.step.clone(),
            line: self.line_no,
            at: crate::now_millis(),
            stream,
            text,
        });
    }
}

/// How a step ended, recorded in the store and told to the observer.
struct StepEnded {
    step_id: i64,
    attempt: u32,
    status: StepStatus,
    exit_code: Option<i32>,
    started: Instant,
    /// When it ended.
    at: i64,
}

impl StepEnded {
    async fn record(&self, ctx: &RunContext, job: &Job, step: &str) {
        self.write(ctx).await;
        self.tell(ctx, job, step);
    }

    /// In the store.
    async fn write(&self, ctx: &RunContext) {
        if let Err(e) = ctx
            .records
            .finish_step(self.step_id, self.status, self.exit_code, self.at)
            .await
        {
            tracing::error!(error = %format!("{e:#}"), "could not record the step's end");
        }
    }

    /// To the observer.
    fn tell(&self, ctx: &RunContext, job: &Job, step: &str) {
        ctx.observer.event(&RunEvent::StepFinished {
            run: ctx.run_id,
            job: job.name.clone(),
            attempt: self.attempt,
            step: step.to_string(),
            status: self.status,
            exit_code: self.exit_code,
            millis: self.started.elapsed().as_millis() as u64,
        });
    }
}

/// Where a step gantry runs itself writes its output: masked, numbered lines of the job's log.
use crate::cache::Emit;

/// A step gantry runs itself after the job's steps (`build image NAME`, `push image NAME`):
/// recorded, reported and logged exactly like the job's own steps; its error fails the attempt.
#[allow(clippy::too_many_arguments)]
async fn system_step<F, Fut>(
    ctx: &RunContext,
    job: &Job,
    job_id: i64,
    attempt: u32,
    index: usize,
    step: &str,
    budget: &Arc<Mutex<LogBudget>>,
    work: F,
) -> Result<(), AttemptResult>
where
    F: FnOnce(Emit) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let step_id = ctx
        .records
        .start_step(job_id, attempt, index, step, crate::now_millis())
        .await
        .map_err(|e| AttemptResult::failed(format!("recording step `{step}`: {e:#}")))?;
    ctx.observer.event(&RunEvent::StepStarted {
        run: ctx.run_id,
        job: job.name.clone(),
        attempt,
        step: step.to_string(),
        index,
    });
    let started = Instant::now();
    let job_name: Arc<str> = Arc::from(job.name.as_str());
    let mut log = StepLog::new(ctx, step_id, job_name, Arc::from(step), budget);
    let masker = ctx.masker.clone();
    let emit: Emit = Box::new(move |stream: Stream, text: String| {
        let text = masker.mask(&text).into_owned();
        match stream {
            Stream::System => log.system(text),
            _ => log.line(stream, text),
        }
    });
    let result = work(emit).await;
    let (status, exit_code) = match &result {
        Ok(()) => (StepStatus::Succeeded, Some(0)),
        Err(_) => (StepStatus::Failed, Some(1)),
    };
    let ended = StepEnded {
        step_id,
        attempt,
        status,
        exit_code,
        started,
        at: crate::now_millis(),
    };
    ended.record(ctx, job, step).await;
    result.map_err(|e| {
        AttemptResult::failed(format!(
            "step `{step}`: {:#}",
            ctx.masker.mask(&format!("{e:#}"))
        ))
    })
}

/// A workspace's private temporary directory, beside it.
fn tmp_of(workspace: &Path) -> std::path::PathBuf {
    let mut name = workspace.as_os_str().to_owned();
    name.push(".tmp");
    name.into()
}

fn signal_hint(sig: i32) -> &'static str {
    match sig {
        9 => " (SIGKILL: often the out-of-memory killer)",
        11 => " (SIGSEGV: the program crashed)",
        6 => " (SIGABRT: the program aborted)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

pub(crate) fn set_env(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => env.push((key.to_string(), value.to_string())),
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Unpacks the artifacts `job` needs (made by earlier stages of this run) into its directory,
/// each checked against its digest first.
async fn unpack_needs(ctx: &Arc<RunContext>, job: &Job, dir: &Path) -> Result<(), String> {
    for need in &job.needs_from {
        let branch = need
            .branch
            .as_deref()
            .map(|b| format!(" on branch `{b}`"))
            .unwrap_or_default();
        let found = ctx
            .records
            .latest_project_artifact(&need.project, &need.artifact, need.branch.as_deref())
            .await
            .map_err(|e| {
                format!(
                    "looking up artifact `{}` of project `{}`: {e:#}",
                    need.artifact, need.project
                )
            })?;
        let Some(record) = found else {
            return Err(format!(
                "project `{}` has no artifact `{}` from a succeeded run{branch} (removed by retention, or never built)",
                need.project, need.artifact
            ));
        };
        let file_name = need.path.clone().unwrap_or_else(|| need.artifact.clone());
        ctx.artifacts
            .unpack(&record.digest, &record.media_type, dir, &file_name)
            .await
            .map_err(|e| {
                format!(
                    "artifact `{}` of project `{}` (run {}, {}): {e:#}",
                    need.artifact, need.project, record.run_id, record.digest
                )
            })?;
    }
    if job.needs.is_empty() {
        return Ok(());
    }
    let artifacts = match ctx.records.run_artifacts(ctx.run_id).await {
        Ok(a) => a,
        Err(e) => return Err(format!("reading the run's artifacts: {e:#}")),
    };
    for name in &job.needs {
        let Some(record) = artifacts.iter().find(|a| &a.name == name) else {
            return Err(format!(
                "artifact `{name}` was not produced by this run (the job that declares it did not succeed)"
            ));
        };
        // A single-file artifact goes back to the path its job declared.
        let file_name = ctx
            .pipeline
            .jobs()
            .flat_map(|(_, j)| j.artifacts.iter())
            .find(|a| &a.name == name)
            .and_then(|a| a.paths.first())
            .cloned()
            .unwrap_or_else(|| name.clone());
        ctx.artifacts
            .unpack(&record.digest, &record.media_type, dir, &file_name)
            .await
            .map_err(|e| format!("artifact `{name}` ({}): {e:#}", record.digest))?;
    }
    Ok(())
}
