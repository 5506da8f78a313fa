//! The run loop. `Runner::execute` records the run, then feeds the engine's run machine the
//! events that happen (job attempts ending, a cancel request) and carries out the commands it
//! answers with: start jobs (at most `jobs` at once), record statuses, finish the run.

pub use crate::context::BASE_ENV;
use crate::context::RunContext;
use crate::events::{Observer, RunEvent};
use crate::job::{AttemptResult, run_attempt};
use crate::logs::spawn_writer;
use crate::plan::{job_of, plan_of};
use anyhow::{Context, Result};
use gantry_engine::mask::Masker;
use gantry_engine::ports::{
    ApprovalDecision, ApprovalRequest, Approvals, ArtifactStore, AttemptStore, DeployRequest,
    Deployer, NewRun, RunIds, StateStore, StoreAttempts,
};
use gantry_engine::run::{
    ApprovalOutcome, AttemptOutcome, Command, DeployOutcome, Event, JobRef, RunMachine,
};
use gantry_engine::waves::{self, WavesMachine};
use gantry_git::{Repo, Revision};
use gantry_model::{JobStatus, Pipeline, RunStatus, SecretValue, StageKind, StageStatus};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

/// Why a deploy stage did not deploy when nothing can carry out deployments (shown on the stage).
const NO_DEPLOYER: &str =
    "not deployed: nothing here carries out deployments; the artifact is stored";

pub struct RunRequest {
    pub project: String,
    pub repo: Repo,
    pub revision: Revision,
    pub pipeline: Pipeline,
    pub pipeline_file: String,
    /// The project's directory inside the repository, for a pipeline file that is not at the
    /// root (a monorepo); steps run there and artifact paths are relative to it.
    pub subdir: Option<PathBuf>,
    pub trigger: String,
    /// What started it, as `when:` rules see it.
    pub event: gantry_model::TriggerEvent,
    /// The run's own variables (`GANTRY_TAG`, `GANTRY_PR`, `gantry trigger --var`): every step
    /// sees them, over the pipeline's and the job's `env`.
    pub vars: std::collections::BTreeMap<String, String>,
}

pub struct RunOptions {
    /// Jobs running at once.
    pub jobs: usize,
    /// Where workspaces are made: `<work_root>/<run id>/<job>-<attempt>`.
    pub work_root: PathBuf,
    pub kill_grace: Duration,
    pub keep_workspaces: bool,
    /// Secret values by name (from gantry's environment or a secrets file).
    pub secrets: HashMap<String, SecretValue>,
    /// Why this run gets no secrets at all (a pull request from a fork), said to a job that
    /// asks for one; `None`: secrets are given.
    pub secrets_withheld: Option<String>,
    /// The most bytes one project's caches keep ([`crate::cache::DEFAULT_CAP_BYTES`]).
    pub cache_cap: u64,
    /// The owner lock of this process, recorded with the run.
    pub owner: Option<String>,
    /// The most bytes of output a job's log keeps ([`crate::DEFAULT_JOB_LOG_CAP`]).
    pub log_cap: u64,
    /// Steps run in this sandbox when set ([`crate::sandbox`]).
    pub sandbox: Option<crate::sandbox::Sandbox>,
    /// A checkout of the run's commit begun before the run (`gantry run`); the first job
    /// to start takes it instead of exporting ([`crate::prefetch`]).
    pub prefetched: Option<Arc<crate::prefetch::Prefetch>>,
}

impl RunOptions {
    /// A job slot per core, workspaces removed after their job.
    pub fn new(
        work_root: PathBuf,
        kill_grace: Duration,
        secrets: HashMap<String, SecretValue>,
        owner: String,
    ) -> Self {
        Self {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            work_root,
            kill_grace,
            keep_workspaces: false,
            secrets,
            secrets_withheld: None,
            cache_cap: crate::cache::DEFAULT_CAP_BYTES,
            owner: Some(owner),
            log_cap: crate::logs::DEFAULT_JOB_LOG_CAP,
            sandbox: None,
            prefetched: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: i64,
    pub status: RunStatus,
}

pub struct Runner {
    pub state: Arc<dyn StateStore>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub observer: Arc<dyn Observer>,
    /// Carries out deploy stages (the server's deploy manager, or a client of the server).
    pub deployer: Option<Arc<dyn Deployer>>,
    /// Decides approval stages (the server); `None`: an approval stage ends the run there.
    pub approvals: Option<Arc<dyn Approvals>>,
    /// Hands jobs to runners (the server, when runners may take its jobs); `None`: every job
    /// runs here.
    pub remote: Option<Arc<dyn crate::remote::RemoteJobs>>,
}

use crate::now_millis as now;

enum Msg {
    Attempt {
        job: JobRef,
        attempt: u32,
        result: AttemptResult,
    },
}

impl Runner {
    /// Records and runs the pipeline to its end. `cancel` set to true cancels the run cleanly.
    /// Errors are failures of gantry itself (the database is gone); a failing job is a run
    /// that ends `failed`.
    pub async fn execute(
        &self,
        req: RunRequest,
        opts: RunOptions,
        cancel: watch::Receiver<bool>,
    ) -> Result<RunOutcome> {
        let ids: RunIds = self
            .state
            .create_run(NewRun {
                project: req.project.clone(),
                repo: req.repo.path().display().to_string(),
                commit: req.revision.commit.clone(),
                branch: req.revision.branch.clone(),
                pipeline_file: req.pipeline_file.clone(),
                trigger: req.trigger.clone(),
                event: req.event.as_str().to_string(),
                vars: req.vars.clone(),
                status: RunStatus::Running,
                created_at: now(),
                owner: opts.owner.clone(),
                stages: plan_of(&req.pipeline),
            })
            .await
            .context("recording the new run")?;
        self.run_recorded(ids, req, opts, cancel).await
    }

    /// Runs a run the queue handed out (already `running` and owned by this process): records
    /// its pipeline's stages and jobs, then runs it like [`Runner::execute`].
    pub async fn execute_claimed(
        &self,
        run_id: i64,
        req: RunRequest,
        opts: RunOptions,
        cancel: watch::Receiver<bool>,
    ) -> Result<RunOutcome> {
        let ids = self
            .state
            .attach_plan(run_id, &req.pipeline_file, &plan_of(&req.pipeline))
            .await
            .context("recording the run's stages")?;
        self.run_recorded(ids, req, opts, cancel).await
    }

    async fn run_recorded(
        &self,
        ids: RunIds,
        req: RunRequest,
        opts: RunOptions,
        cancel: watch::Receiver<bool>,
    ) -> Result<RunOutcome> {
        let started = Instant::now();
        let run_id = ids.run;
        self.observer.event(&RunEvent::RunStarted {
            run: run_id,
            project: req.project.clone(),
            commit: req.revision.commit.clone(),
            branch: req.revision.branch.clone(),
        });

        let records: Arc<dyn AttemptStore> = Arc::new(StoreAttempts(self.state.clone()));
        let (logs, log_task) = spawn_writer(run_id, records.clone(), self.observer.clone());
        let secret_values: Vec<&str> = opts.secrets.values().map(|v| v.expose()).collect();
        let masker = Masker::new(secret_values);
        let ctx = Arc::new(RunContext {
            run_id,
            project: req.project,
            source: crate::remote::Source::Repo(req.repo),
            commit: req.revision.commit,
            branch: req.revision.branch,
            event: req.event,
            vars: req.vars,
            subdir: req.subdir,
            pipeline: req.pipeline,
            pipeline_file: req.pipeline_file,
            work_dir: opts.work_root.join(run_id.to_string()),
            jobs: opts.jobs.max(1),
            kill_grace: opts.kill_grace,
            keep_workspaces: opts.keep_workspaces,
            log_cap: opts.log_cap,
            sandbox: opts.sandbox,
            prefetched: opts.prefetched,
            secrets: opts.secrets,
            secrets_withheld: opts.secrets_withheld,
            cache_cap: opts.cache_cap,
            owner: opts.owner.clone(),
            masker,
            records: records.clone(),
            artifacts: self.artifacts.clone(),
            observer: self.observer.clone(),
            logs: logs.clone(),
            cancel: cancel.clone(),
        });
        let status = self.drive(&ctx, &ids, cancel).await;
        logs.flush().await;
        drop(logs);
        drop(ctx);
        let log_failure = log_task.await.ok().flatten();
        let mut status = status?;
        // A run whose log could not be kept has not succeeded: what it printed is lost.
        let error = log_failure.map(|e| {
            status = RunStatus::Failed;
            format!("the run's log could not be stored: {e}")
        });
        if let Some(e) = &error {
            eprintln!("gantry: run {run_id}: {e}");
        }
        self.state
            .set_run_status(run_id, status, now(), error.as_deref())
            .await?;
        if !opts.keep_workspaces {
            let _ = tokio::fs::remove_dir_all(opts.work_root.join(run_id.to_string())).await;
        }
        self.observer.event(&RunEvent::RunFinished {
            run: run_id,
            status,
            millis: started.elapsed().as_millis() as u64,
        });
        Ok(RunOutcome { run_id, status })
    }

    async fn drive(
        &self,
        ctx: &Arc<RunContext>,
        ids: &RunIds,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<RunStatus> {
        let mut machine = RunMachine::new(
            &ctx.pipeline,
            &gantry_engine::run::Trigger {
                // A pull request's branch, to rules, is the one it would merge into (as
                // GitHub's `pull_request: branches:` filter reads it).
                branch: ctx
                    .branch
                    .clone()
                    .or_else(|| ctx.vars.get(gantry_model::vars::PR_BASE).cloned()),
                tag: ctx.vars.get(gantry_model::vars::TAG).cloned(),
                event: ctx.event,
                vars: ctx.rule_vars(),
            },
        );
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let mut lp = RunLoop {
            runner: self,
            ctx,
            ids,
            tx,
            slots: Arc::new(Semaphore::new(ctx.jobs)),
            job_started: HashMap::new(),
            last_attempt: HashMap::new(),
            lost: HashMap::new(),
            stage_notes: HashMap::new(),
        };
        let mut pending: VecDeque<Event> = VecDeque::from([Event::Start]);
        // A cancel that came before the run started is seen now; later ones through `changed`.
        let mut cancel_seen = *cancel.borrow();
        if cancel_seen {
            pending.push_back(Event::Cancel);
        }
        loop {
            while let Some(event) = pending.pop_front() {
                for cmd in machine.on(event) {
                    if let Some(follow) = lp.carry_out(cmd).await? {
                        pending.push_back(follow);
                    }
                }
            }
            if let Some(status) = machine.finished() {
                return Ok(status);
            }
            tokio::select! {
                Some(Msg::Attempt { job, attempt, result }) = rx.recv() => {
                    let outcome = result.outcome;
                    if matches!(outcome, AttemptOutcome::Lost { .. }) {
                        *lp.lost.entry(job).or_default() += 1;
                    }
                    lp.last_attempt.insert(job, (attempt, result));
                    pending.push_back(Event::AttemptFinished { job, attempt, outcome });
                }
                changed = cancel.changed(), if !cancel_seen => {
                    if changed.is_err() || *cancel.borrow() {
                        cancel_seen = true;
                        pending.push_back(Event::Cancel);
                    }
                }
            }
        }
    }
}

/// The state of one run's loop, beside the engine's: what is needed to carry out commands.
struct RunLoop<'a> {
    runner: &'a Runner,
    ctx: &'a Arc<RunContext>,
    ids: &'a RunIds,
    tx: mpsc::UnboundedSender<Msg>,
    /// Bounds the jobs running at once (`--jobs`).
    slots: Arc<Semaphore>,
    job_started: HashMap<JobRef, Instant>,
    /// The latest attempt of each job and how it ended.
    last_attempt: HashMap<JobRef, (u32, AttemptResult)>,
    /// Attempts of each job lost with their runner.
    lost: HashMap<JobRef, u32>,
    /// What each deploy stage's deployments said, or how an approval was decided: the stage's
    /// note.
    stage_notes: HashMap<usize, String>,
}

impl RunLoop<'_> {
    /// Deploys the run's own artifact to each environment of a deploy stage, in order; the
    /// first failure stops the waves after it.
    async fn deploy(&mut self, stage: usize) -> DeployOutcome {
        let ctx = self.ctx;
        let StageKind::Deploy(spec) = &ctx.pipeline.stages[stage].kind else {
            return DeployOutcome::Failed;
        };
        let Some(deployer) = self.runner.deployer.clone() else {
            return DeployOutcome::Skipped(NO_DEPLOYER.to_string());
        };
        let digest = match self
            .runner
            .state
            .find_artifact(&gantry_engine::ports::ArtifactQuery {
                name: Some(&spec.artifact),
                run: Some(ctx.run_id),
                ..Default::default()
            })
            .await
        {
            Ok(Some(a)) => a.digest,
            Ok(None) => {
                self.stage_notes.insert(
                    stage,
                    format!("run {} made no artifact `{}`", ctx.run_id, spec.artifact),
                );
                return DeployOutcome::Failed;
            }
            Err(e) => {
                self.stage_notes.insert(stage, format!("{e:#}"));
                return DeployOutcome::Failed;
            }
        };
        // The waves' order and the stop at the first failure are the engine's.
        let mut waves = WavesMachine::new(spec.environments.clone());
        let mut pending = waves.on(waves::Event::Start);
        while let Some(command) = pending.pop() {
            match command {
                waves::Command::Deploy { environment } => {
                    let result = deployer
                        .deploy(DeployRequest {
                            project: ctx.project.clone(),
                            environment,
                            artifact: spec.artifact.clone(),
                            run: Some(ctx.run_id),
                            digest: Some(digest.clone()),
                            force: false,
                            requested_by: format!("run {}", ctx.run_id),
                            bake_ms: spec.bake.map(|b| b.as_millis() as u64),
                        })
                        .await;
                    let ended = match result {
                        Ok(report) if report.succeeded => Ok(report.message),
                        Ok(report) => Err(format!("deployment failed: {}", report.message)),
                        Err(e) => Err(format!("not deployed: {e:#}")),
                    };
                    pending.extend(waves.on(waves::Event::WaveEnded(ended)));
                }
                waves::Command::Finish { outcome, notes } => {
                    self.stage_notes.insert(stage, notes.join("\n"));
                    return outcome;
                }
            }
        }
        DeployOutcome::Failed
    }

    /// Holds the run at approval stage `stage` until it is decided (or the run is cancelled),
    /// the wait said in the stage's note while it lasts and how it ended after.
    async fn await_approval(&mut self, stage: usize) -> Result<Option<Event>> {
        let ctx = self.ctx;
        let StageKind::Approval(spec) = &ctx.pipeline.stages[stage].kind else {
            return Ok(None);
        };
        let Some(approvals) = self.runner.approvals.clone() else {
            self.stage_notes.insert(
                stage,
                "not approved: approvals are given by the server (gantry serve); the stages after it did not run".into(),
            );
            return Ok(Some(Event::ApprovalDecided {
                stage,
                outcome: ApprovalOutcome::Unavailable,
            }));
        };
        let roles: Vec<&str> = spec.roles.iter().map(|r| r.as_str()).collect();
        let waiting = format!(
            "waiting for approval by a {} token, for {} (gantry approve {})",
            roles.join(" or "),
            gantry_model::duration::format_duration(spec.timeout),
            ctx.run_id
        );
        self.runner
            .state
            .set_stage_status(
                self.ids.stages[stage],
                StageStatus::Running,
                now(),
                Some(&waiting),
            )
            .await?;
        let request = ApprovalRequest {
            run: ctx.run_id,
            project: ctx.project.clone(),
            branch: ctx.branch.clone(),
            stage: ctx.pipeline.stages[stage].name.clone(),
            spec: spec.clone(),
        };
        let mut cancel = ctx.cancel.clone();
        let cancelled = async move {
            while !*cancel.borrow() {
                if cancel.changed().await.is_err() {
                    // The sender is gone: nothing will cancel any more; wait on.
                    std::future::pending::<()>().await;
                }
            }
        };
        let decision = tokio::select! {
            d = approvals.wait(request) => d?,
            () = cancelled => {
                self.stage_notes.insert(stage, "the run was cancelled while it waited for approval".into());
                return Ok(Some(Event::Cancel));
            }
        };
        let (note, outcome) = match decision {
            ApprovalDecision::Approved { by, at } => (
                format!(
                    "approved by {by} at {}",
                    jiff::Timestamp::from_millisecond(at)
                        .map_or_else(|_| at.to_string(), |t| t.to_string())
                ),
                ApprovalOutcome::Approved,
            ),
            ApprovalDecision::TimedOut => (
                format!(
                    "not approved within {}",
                    gantry_model::duration::format_duration(spec.timeout)
                ),
                ApprovalOutcome::TimedOut,
            ),
            ApprovalDecision::Superseded { by_run } => (
                format!("superseded by run {by_run}, which waits at this stage now"),
                ApprovalOutcome::Superseded,
            ),
        };
        self.stage_notes.insert(stage, note);
        Ok(Some(Event::ApprovalDecided { stage, outcome }))
    }

    /// Records how a stage ended and why (its note), marks its jobs `jobs_as` when they never
    /// ran, and tells the observer.
    async fn end_stage(
        &mut self,
        stage: usize,
        status: StageStatus,
        note: Option<String>,
        jobs_as: Option<JobStatus>,
    ) -> Result<()> {
        let (ctx, ids, state) = (self.ctx, self.ids, &self.runner.state);
        state
            .set_stage_status(ids.stages[stage], status, now(), note.as_deref())
            .await?;
        if let Some(job_status) = jobs_as {
            for job_id in &ids.jobs[stage] {
                state
                    .set_job_status(*job_id, job_status, 0, now(), None, None)
                    .await?;
            }
        }
        self.runner.observer.event(&RunEvent::StageFinished {
            run: ctx.run_id,
            stage: ctx.pipeline.stages[stage].name.clone(),
            status,
            note,
        });
        Ok(())
    }

    /// Carries out one command; may answer with a follow-up event (a deploy's outcome).
    async fn carry_out(&mut self, cmd: Command) -> Result<Option<Event>> {
        let (ctx, ids, state, observer) = (
            self.ctx,
            self.ids,
            &self.runner.state,
            &self.runner.observer,
        );
        match cmd {
            Command::StartStage { stage } => {
                state
                    .set_stage_status(ids.stages[stage], StageStatus::Running, now(), None)
                    .await?;
                observer.event(&RunEvent::StageStarted {
                    run: ctx.run_id,
                    stage: ctx.pipeline.stages[stage].name.clone(),
                });
            }
            Command::StartJob { job, attempt } => {
                let spec = job_of(&ctx.pipeline, job).clone();
                let job_id = ids.jobs[job.stage][job.job];
                let stage = ctx.pipeline.stages[job.stage].name.clone();
                self.job_started.entry(job).or_insert_with(Instant::now);
                if attempt > 1 {
                    observer.event(&RunEvent::JobRetrying {
                        run: ctx.run_id,
                        job: spec.name.clone(),
                        next_attempt: attempt,
                    });
                }
                let remote = self.runner.remote.clone().filter(|r| r.takes(&spec));
                let ticket = remote.as_ref().map(|_| {
                    let pushes = spec.artifacts.iter().filter_map(|a| a.push.as_ref());
                    crate::remote::JobTicket {
                        run_id: ctx.run_id,
                        job_id,
                        attempt,
                        job,
                        job_name: spec.name.clone(),
                        labels: spec.runs_on.clone(),
                        project: ctx.project.clone(),
                        commit: ctx.commit.clone(),
                        branch: ctx.branch.clone(),
                        event: ctx.event,
                        vars: ctx.vars.clone(),
                        pipeline_file: ctx.pipeline_file.clone(),
                        subdir: ctx.subdir.clone(),
                        secrets: spec
                            .secrets
                            .iter()
                            .chain(pushes.filter_map(|p| p.password_secret.as_ref()))
                            .cloned()
                            .collect(),
                        secrets_withheld: ctx.secrets_withheld.clone(),
                        lost_before: self.lost.get(&job).copied().unwrap_or(0),
                    }
                });
                let (ctx2, tx, slots, state, observer) = (
                    ctx.clone(),
                    self.tx.clone(),
                    self.slots.clone(),
                    state.clone(),
                    observer.clone(),
                );
                tokio::spawn(async move {
                    let started = |state: Arc<dyn StateStore>, observer: Arc<dyn Observer>| {
                        let (run, name) = (ctx2.run_id, spec.name.clone());
                        async move {
                            let _ = state
                                .set_job_status(
                                    job_id,
                                    JobStatus::Running,
                                    attempt,
                                    now(),
                                    None,
                                    None,
                                )
                                .await;
                            observer.event(&RunEvent::JobStarted {
                                run,
                                stage,
                                job: name,
                                attempt,
                            });
                        }
                    };
                    let result = match (remote, ticket) {
                        // A runner's job takes none of this server's slots.
                        (Some(remote), Some(ticket)) => {
                            started(state, observer).await;
                            remote.run(ticket, ctx2.cancel.clone()).await
                        }
                        _ => match slots.acquire_owned().await {
                            Ok(_permit) => {
                                started(state, observer).await;
                                run_attempt(ctx2, spec, job_id, attempt).await
                            }
                            Err(_) => AttemptResult {
                                outcome: AttemptOutcome::Cancelled,
                                exit_code: None,
                                error: None,
                            },
                        },
                    };
                    let _ = tx.send(Msg::Attempt {
                        job,
                        attempt,
                        result,
                    });
                });
            }
            Command::StartDeploy { stage } => {
                // StartStage came first: the stage is recorded as running.
                let outcome = self.deploy(stage).await;
                return Ok(Some(Event::DeployFinished { stage, outcome }));
            }
            Command::AwaitApproval { stage } => return self.await_approval(stage).await,
            Command::CancelRunningJobs => {
                // Every running step watches the cancel flag and stops its process group itself.
            }
            Command::FinishJob { job, status } => {
                let spec = job_of(&ctx.pipeline, job);
                let job_id = ids.jobs[job.stage][job.job];
                let (attempts, exit, error) = match self.last_attempt.get(&job) {
                    Some((attempt, r)) => (*attempt, r.exit_code, r.error.clone()),
                    None => (0, None, None),
                };
                state
                    .set_job_status(job_id, status, attempts, now(), exit, error.as_deref())
                    .await?;
                let millis = self
                    .job_started
                    .get(&job)
                    .map_or(0, |t| t.elapsed().as_millis() as u64);
                observer.event(&RunEvent::JobFinished {
                    run: ctx.run_id,
                    stage: ctx.pipeline.stages[job.stage].name.clone(),
                    job: spec.name.clone(),
                    status,
                    attempts,
                    allow_failure: spec.allow_failure,
                    error,
                    millis,
                });
            }
            Command::FinishStage { stage, status } => {
                let stage_note = self.stage_notes.remove(&stage);
                let note = match ctx.pipeline.stages[stage].kind {
                    StageKind::Deploy(_) | StageKind::Approval(_) => stage_note,
                    StageKind::Jobs(_) => None,
                };
                self.end_stage(stage, status, note, None).await?;
            }
            Command::SkipStage { stage, status } => {
                self.stage_notes.remove(&stage);
                let (note, jobs_as) = if status == StageStatus::Cancelled {
                    ("the run was cancelled", JobStatus::Cancelled)
                } else {
                    ("an earlier stage failed", JobStatus::Skipped)
                };
                self.end_stage(stage, status, Some(note.into()), Some(jobs_as))
                    .await?;
            }
            Command::JobNotApplicable { job, reason } => {
                let spec = job_of(&ctx.pipeline, job);
                state
                    .set_job_status(
                        ids.jobs[job.stage][job.job],
                        JobStatus::Skipped,
                        0,
                        now(),
                        None,
                        Some(&reason),
                    )
                    .await?;
                observer.event(&RunEvent::JobFinished {
                    run: ctx.run_id,
                    stage: ctx.pipeline.stages[job.stage].name.clone(),
                    job: spec.name.clone(),
                    status: JobStatus::Skipped,
                    attempts: 0,
                    allow_failure: spec.allow_failure,
                    error: Some(reason),
                    millis: 0,
                });
            }
            Command::StageNotApplicable { stage, reason } => {
                self.end_stage(
                    stage,
                    StageStatus::Skipped,
                    Some(reason),
                    Some(JobStatus::Skipped),
                )
                .await?;
            }
            Command::FinishRun { .. } => {}
        }
        Ok(None)
    }
}
