//! The run state machine. It knows the shape of the pipeline (stages, jobs, retries,
//! `allow_failure`) and decides what happens next from what just happened. The runner feeds it
//! events and carries out the commands it returns, in order.

use gantry_model::{JobStatus, Pipeline, RunStatus, StageKind, StageStatus};

pub mod rules;
pub use rules::Trigger;

/// A job by position: stage index and job index within the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobRef {
    pub stage: usize,
    pub job: usize,
}

/// How one attempt of a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// The runner that had it stopped answering and its lease ran out (a remote runner killed
    /// or cut off). `retry`: start the job again (on any runner) without using up one of the
    /// job's own `retries`; otherwise the job fails.
    Lost {
        retry: bool,
    },
}

/// How a deploy stage ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployOutcome {
    Succeeded,
    Failed,
    /// Not carried out, with the reason (shown to the user).
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    AttemptFinished {
        job: JobRef,
        attempt: u32,
        outcome: AttemptOutcome,
    },
    DeployFinished {
        stage: usize,
        outcome: DeployOutcome,
    },
    ApprovalDecided {
        stage: usize,
        outcome: ApprovalOutcome,
    },
    Cancel,
}

/// How an approval stage's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalOutcome {
    Approved,
    /// Nobody approved within the timeout: the stage fails.
    TimedOut,
    /// A newer run of the branch waits at the same stage: this run is cancelled.
    Superseded,
    /// Nothing here gives approvals (a local `gantry run`): the stage and the rest are skipped.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    StartStage {
        stage: usize,
    },
    /// Start attempt `attempt` (1-based) of a job in a fresh workspace.
    StartJob {
        job: JobRef,
        attempt: u32,
    },
    StartDeploy {
        stage: usize,
    },
    /// Hold the run until the approval stage is decided (`Event::ApprovalDecided`).
    AwaitApproval {
        stage: usize,
    },
    /// Stop every running job (TERM, grace, KILL); each then reports `Cancelled`.
    CancelRunningJobs,
    FinishJob {
        job: JobRef,
        status: JobStatus,
    },
    FinishStage {
        stage: usize,
        status: StageStatus,
    },
    /// A stage that will not run because an earlier one failed or the run was cancelled.
    SkipStage {
        stage: usize,
        status: StageStatus,
    },
    /// A job whose `when:` or `if:` does not hold for this run, with the reason: skipped.
    JobNotApplicable {
        job: JobRef,
        reason: String,
    },
    /// A stage whose `when:` does not hold for this run, with the reason; the run goes on.
    StageNotApplicable {
        stage: usize,
        reason: String,
    },
    FinishRun {
        status: RunStatus,
    },
}

#[derive(Debug, Clone)]
struct JobState {
    retries: u32,
    /// Attempts lost with their runner and started again: they do not count as retries.
    lost: u32,
    allow_failure: bool,
    status: JobStatus,
    /// The jobs it waits for (`needs: [job]`); empty: it starts with its stage.
    after: Vec<JobRef>,
    /// Why its `when:` / `if:` does not hold for this run, if it does not.
    not_applicable: Option<String>,
}

impl JobState {
    /// Has it ended in a way that lets the jobs waiting for it start?
    fn lets_through(&self) -> bool {
        self.status == JobStatus::Succeeded || (self.status.is_failure() && self.allow_failure)
    }
}

#[derive(Debug, Clone)]
enum StageState {
    Jobs(Vec<JobState>),
    Deploy { done: bool },
    Approval,
}

/// The state of one run. Build it with [`RunMachine::new`], then feed [`Event::Start`].
///
/// Stages run in order: the cursor (`current`) enters a stage when the one before it has
/// ended. A job that waits for other jobs (`needs: [job]`) is the exception: it starts as soon
/// as they have let it through, even before the cursor reaches its stage, and is skipped when
/// one of them failed. Once the run has failed or is being cancelled no job starts (a retry of
/// a running job's attempt still does), and the run ends when nothing runs any more.
#[derive(Debug, Clone)]
pub struct RunMachine {
    stages: Vec<StageState>,
    /// Why each stage does not apply to this run (`when:`), if it does not.
    not_applicable: Vec<Option<String>>,
    /// The cursor has reached the stage.
    entered: Vec<bool>,
    /// `StartStage` was said (the cursor reached it, or a job of it started early).
    started: Vec<bool>,
    /// `FinishStage`, `SkipStage` or `StageNotApplicable` was said.
    ended: Vec<bool>,
    current: usize,
    cancelling: bool,
    failed: bool,
    /// The stages after the current one are not run (an approval nothing here can give).
    halted: bool,
    finished: Option<RunStatus>,
}

impl RunMachine {
    /// The machine of a run of `pipeline` started by `trigger` (the stages' `when:` rules are
    /// judged against it).
    pub fn new(pipeline: &Pipeline, trigger: &Trigger) -> Self {
        let not_applicable = pipeline
            .stages
            .iter()
            .map(|s| rules::stage_applies(s, trigger).err())
            .collect();
        let position: std::collections::HashMap<&str, JobRef> = pipeline
            .stages
            .iter()
            .enumerate()
            .flat_map(|(stage, s)| match &s.kind {
                StageKind::Jobs(jobs) => jobs
                    .iter()
                    .enumerate()
                    .map(|(job, j)| (j.name.as_str(), JobRef { stage, job }))
                    .collect::<Vec<_>>(),
                StageKind::Deploy(_) | StageKind::Approval(_) => Vec::new(),
            })
            .collect();
        let stages = pipeline
            .stages
            .iter()
            .map(|s| match &s.kind {
                StageKind::Jobs(jobs) => StageState::Jobs(
                    jobs.iter()
                        .map(|j| JobState {
                            retries: j.retries,
                            lost: 0,
                            allow_failure: j.allow_failure,
                            status: JobStatus::Pending,
                            // The checker made sure every name is a job's.
                            after: j
                                .after
                                .iter()
                                .filter_map(|name| position.get(name.as_str()).copied())
                                .collect(),
                            not_applicable: j
                                .when
                                .as_ref()
                                .and_then(|r| rules::applies(r, trigger).err()),
                        })
                        .collect(),
                ),
                StageKind::Deploy(_) => StageState::Deploy { done: false },
                StageKind::Approval(_) => StageState::Approval,
            })
            .collect();
        let n = pipeline.stages.len();
        Self {
            stages,
            not_applicable,
            entered: vec![false; n],
            started: vec![false; n],
            ended: vec![false; n],
            current: 0,
            cancelling: false,
            failed: false,
            halted: false,
            finished: None,
        }
    }

    pub fn finished(&self) -> Option<RunStatus> {
        self.finished
    }

    pub fn on(&mut self, event: Event) -> Vec<Command> {
        if self.finished.is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        match event {
            Event::Start => self.enter_stage(0, &mut out),
            Event::Cancel => {
                if !self.cancelling {
                    self.cancelling = true;
                    if self.running_jobs() > 0 {
                        out.push(Command::CancelRunningJobs);
                    } else if !self.deploy_in_progress() {
                        self.finish(&mut out);
                    }
                }
            }
            Event::AttemptFinished {
                job,
                attempt,
                outcome,
            } => self.attempt_finished(job, attempt, outcome, &mut out),
            Event::DeployFinished { stage, outcome } => {
                if stage != self.current {
                    return out;
                }
                if let Some(StageState::Deploy { done }) = self.stages.get_mut(stage) {
                    *done = true;
                }
                let status = match outcome {
                    DeployOutcome::Succeeded => StageStatus::Succeeded,
                    DeployOutcome::Skipped(_) => StageStatus::Skipped,
                    DeployOutcome::Failed => {
                        self.failed = true;
                        StageStatus::Failed
                    }
                };
                self.ended[stage] = true;
                out.push(Command::FinishStage { stage, status });
                self.advance(&mut out);
            }
            Event::ApprovalDecided { stage, outcome } => {
                let waiting = stage == self.current
                    && matches!(self.stages.get(stage), Some(StageState::Approval))
                    && self.entered[stage]
                    && !self.ended[stage];
                if !waiting {
                    return out;
                }
                let status = match outcome {
                    ApprovalOutcome::Approved => StageStatus::Succeeded,
                    ApprovalOutcome::TimedOut => {
                        self.failed = true;
                        StageStatus::Failed
                    }
                    ApprovalOutcome::Superseded => {
                        self.cancelling = true;
                        StageStatus::Cancelled
                    }
                    ApprovalOutcome::Unavailable => {
                        self.halted = true;
                        StageStatus::Skipped
                    }
                };
                self.ended[stage] = true;
                out.push(Command::FinishStage { stage, status });
                self.advance(&mut out);
            }
        }
        out
    }

    /// Is there an approval stage before `stage` that has not been decided? Nothing after it
    /// may start early.
    fn gate_before(&self, stage: usize) -> bool {
        (0..stage).any(|i| matches!(self.stages[i], StageState::Approval) && !self.ended[i])
    }

    fn deploy_in_progress(&self) -> bool {
        matches!(
            self.stages.get(self.current),
            Some(StageState::Deploy { done: false })
        ) && self.entered.get(self.current) == Some(&true)
    }

    fn jobs(&self, stage: usize) -> &[JobState] {
        match &self.stages[stage] {
            StageState::Jobs(jobs) => jobs,
            StageState::Deploy { .. } | StageState::Approval => &[],
        }
    }

    fn job(&self, r: JobRef) -> &JobState {
        &self.jobs(r.stage)[r.job]
    }

    fn job_mut(&mut self, r: JobRef) -> Option<&mut JobState> {
        match self.stages.get_mut(r.stage) {
            Some(StageState::Jobs(jobs)) => jobs.get_mut(r.job),
            _ => None,
        }
    }

    /// Jobs running in any stage (jobs that wait for jobs may run ahead of the cursor).
    fn running_jobs(&self) -> usize {
        (0..self.stages.len())
            .flat_map(|s| self.jobs(s))
            .filter(|j| j.status == JobStatus::Running)
            .count()
    }

    fn enter_stage(&mut self, index: usize, out: &mut Vec<Command>) {
        self.current = index;
        if self.cancelling || self.failed || self.halted || index >= self.stages.len() {
            self.finish_when_idle(out);
            return;
        }
        self.entered[index] = true;
        if let Some(reason) = self.not_applicable[index].clone() {
            self.ended[index] = true;
            out.push(Command::StageNotApplicable {
                stage: index,
                reason,
            });
            self.advance(out);
            return;
        }
        if !self.started[index] {
            self.started[index] = true;
            out.push(Command::StartStage { stage: index });
        }
        match self.stages[index] {
            StageState::Jobs(_) => {
                self.start_ready(out);
                self.end_current_if_done(out);
            }
            StageState::Deploy { .. } => out.push(Command::StartDeploy { stage: index }),
            StageState::Approval => out.push(Command::AwaitApproval { stage: index }),
        }
    }

    /// Starts every pending job that may start now: its stage is entered (or it waits for
    /// jobs, which have all let it through), and its stage applies to the run. First skips the
    /// jobs that wait for a job that will never let them through.
    fn start_ready(&mut self, out: &mut Vec<Command>) {
        self.skip_blocked(out);
        if self.cancelling || self.failed {
            return;
        }
        let mut skipped_one = false;
        for stage in 0..self.stages.len() {
            if self.not_applicable[stage].is_some() || self.ended[stage] {
                continue;
            }
            for job in 0..self.jobs(stage).len() {
                let r = JobRef { stage, job };
                let state = self.job(r);
                let ready = state.status == JobStatus::Pending
                    && (self.entered[stage]
                        || (!state.after.is_empty() && !self.gate_before(stage)))
                    && state.after.iter().all(|a| self.job(*a).lets_through());
                if !ready {
                    continue;
                }
                let not_applicable = state.not_applicable.clone();
                if !self.started[stage] {
                    self.started[stage] = true;
                    out.push(Command::StartStage { stage });
                }
                if let Some(reason) = not_applicable {
                    if let Some(j) = self.job_mut(r) {
                        j.status = JobStatus::Skipped;
                    }
                    out.push(Command::JobNotApplicable { job: r, reason });
                    skipped_one = true;
                    continue;
                }
                if let Some(j) = self.job_mut(r) {
                    j.status = JobStatus::Running;
                }
                out.push(Command::StartJob { job: r, attempt: 1 });
            }
        }
        // What waited for a job that does not apply is skipped in turn.
        if skipped_one {
            self.start_ready(out);
        }
    }

    /// Skips (transitively) the pending jobs that wait for a job that ended without letting
    /// them through, or that sits in a stage that does not apply.
    fn skip_blocked(&mut self, out: &mut Vec<Command>) {
        loop {
            let mut skipped = None;
            'find: for stage in 0..self.stages.len() {
                for job in 0..self.jobs(stage).len() {
                    let state = self.job(JobRef { stage, job });
                    let blocked = state.status == JobStatus::Pending
                        && state.after.iter().any(|a| {
                            let dep = self.job(*a);
                            let ended = dep.status.is_finished() && !dep.lets_through();
                            ended || self.not_applicable[a.stage].is_some()
                        });
                    if blocked {
                        skipped = Some(JobRef { stage, job });
                        break 'find;
                    }
                }
            }
            let Some(r) = skipped else { return };
            if let Some(j) = self.job_mut(r) {
                j.status = JobStatus::Skipped;
            }
            out.push(Command::FinishJob {
                job: r,
                status: JobStatus::Skipped,
            });
        }
    }

    fn attempt_finished(
        &mut self,
        job: JobRef,
        attempt: u32,
        outcome: AttemptOutcome,
        out: &mut Vec<Command>,
    ) {
        let cancelling = self.cancelling;
        let Some(state) = self.job_mut(job) else {
            return;
        };
        if state.status != JobStatus::Running {
            return;
        }
        let status = match outcome {
            AttemptOutcome::Succeeded => JobStatus::Succeeded,
            AttemptOutcome::Cancelled => JobStatus::Cancelled,
            AttemptOutcome::Lost { retry: true } if !cancelling => {
                state.lost += 1;
                out.push(Command::StartJob {
                    job,
                    attempt: attempt + 1,
                });
                return;
            }
            AttemptOutcome::Lost { .. } if cancelling => JobStatus::Cancelled,
            AttemptOutcome::Lost { .. } => JobStatus::Failed,
            AttemptOutcome::Failed | AttemptOutcome::TimedOut
                if !cancelling && attempt - state.lost <= state.retries =>
            {
                out.push(Command::StartJob {
                    job,
                    attempt: attempt + 1,
                });
                return;
            }
            AttemptOutcome::Failed => JobStatus::Failed,
            AttemptOutcome::TimedOut => JobStatus::TimedOut,
        };
        state.status = status;
        let fails_run = status.is_failure() && !state.allow_failure;
        out.push(Command::FinishJob { job, status });
        if fails_run {
            self.failed = true;
        }
        if status == JobStatus::Cancelled {
            self.cancelling = true;
        }
        self.start_ready(out);
        self.end_current_if_done(out);
        if self.finished.is_none() && (self.failed || self.cancelling) {
            self.finish_when_idle(out);
        }
    }

    /// Ends the cursor's stage when all its jobs have ended, and moves on.
    fn end_current_if_done(&mut self, out: &mut Vec<Command>) {
        let index = self.current;
        if index >= self.stages.len() || !self.entered[index] || self.ended[index] {
            return;
        }
        let StageState::Jobs(jobs) = &self.stages[index] else {
            return;
        };
        if jobs.iter().any(|j| !j.status.is_finished()) {
            return;
        }
        let status = Self::stage_status(jobs, self.cancelling);
        self.ended[index] = true;
        out.push(Command::FinishStage {
            stage: index,
            status,
        });
        self.advance(out);
    }

    fn stage_status(jobs: &[JobState], cancelling: bool) -> StageStatus {
        if jobs
            .iter()
            .any(|j| j.status.is_failure() && !j.allow_failure)
        {
            StageStatus::Failed
        } else if jobs.iter().any(|j| j.status == JobStatus::Cancelled) || cancelling {
            StageStatus::Cancelled
        } else if !jobs.is_empty() && jobs.iter().all(|j| j.status == JobStatus::Skipped) {
            StageStatus::Skipped
        } else {
            StageStatus::Succeeded
        }
    }

    fn advance(&mut self, out: &mut Vec<Command>) {
        self.enter_stage(self.current + 1, out);
    }

    /// Ends the run once no job runs any more (jobs ahead of the cursor may still run).
    fn finish_when_idle(&mut self, out: &mut Vec<Command>) {
        if self.finished.is_none() && self.running_jobs() == 0 && !self.deploy_in_progress() {
            self.finish(out);
        }
    }

    fn finish(&mut self, out: &mut Vec<Command>) {
        let status = if self.failed {
            RunStatus::Failed
        } else if self.cancelling {
            RunStatus::Cancelled
        } else {
            RunStatus::Succeeded
        };
        let skipped = if self.cancelling && !self.failed {
            StageStatus::Cancelled
        } else {
            StageStatus::Skipped
        };
        for stage in 0..self.stages.len() {
            if self.ended[stage] {
                continue;
            }
            if self.started[stage] && !matches!(self.stages[stage], StageState::Jobs(_)) {
                // An approval that was waiting when the run was cancelled.
                let status = if self.cancelling {
                    StageStatus::Cancelled
                } else {
                    StageStatus::Skipped
                };
                out.push(Command::FinishStage { stage, status });
            } else if self.started[stage] {
                // Some of its jobs ran ahead: the rest never will.
                let pending: Vec<usize> = (0..self.jobs(stage).len())
                    .filter(|j| self.jobs(stage)[*j].status == JobStatus::Pending)
                    .collect();
                for job in pending {
                    let r = JobRef { stage, job };
                    if let Some(j) = self.job_mut(r) {
                        j.status = JobStatus::Skipped;
                    }
                    out.push(Command::FinishJob {
                        job: r,
                        status: JobStatus::Skipped,
                    });
                }
                let jobs = self.jobs(stage);
                let some_skipped = jobs.iter().any(|j| j.status == JobStatus::Skipped);
                let status = match Self::stage_status(jobs, self.cancelling) {
                    StageStatus::Succeeded if some_skipped => StageStatus::Skipped,
                    other => other,
                };
                out.push(Command::FinishStage { stage, status });
            } else {
                out.push(Command::SkipStage {
                    stage,
                    status: skipped,
                });
            }
            self.ended[stage] = true;
        }
        self.finished = Some(status);
        out.push(Command::FinishRun { status });
    }
}

#[cfg(test)]
mod tests;
