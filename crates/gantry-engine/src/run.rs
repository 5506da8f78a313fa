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
    Cancel,
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
    allow_failure: bool,
    status: JobStatus,
}

#[derive(Debug, Clone)]
enum StageState {
    Jobs(Vec<JobState>),
    Deploy { done: bool },
}

/// The state of one run. Build it with [`RunMachine::new`], then feed [`Event::Start`].
#[derive(Debug, Clone)]
pub struct RunMachine {
    stages: Vec<StageState>,
    /// Why each stage does not apply to this run (`when:`), if it does not.
    not_applicable: Vec<Option<String>>,
    entered: Vec<bool>,
    current: usize,
    cancelling: bool,
    failed: bool,
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
        let stages = pipeline
            .stages
            .iter()
            .map(|s| match &s.kind {
                StageKind::Jobs(jobs) => StageState::Jobs(
                    jobs.iter()
                        .map(|j| JobState {
                            retries: j.retries,
                            allow_failure: j.allow_failure,
                            status: JobStatus::Pending,
                        })
                        .collect(),
                ),
                StageKind::Deploy(_) => StageState::Deploy { done: false },
            })
            .collect();
        let entered = vec![false; pipeline.stages.len()];
        Self {
            stages,
            not_applicable,
            entered,
            current: 0,
            cancelling: false,
            failed: false,
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
                    let any_running = self.running_jobs() > 0;
                    if any_running {
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
                out.push(Command::FinishStage { stage, status });
                self.advance(&mut out);
            }
        }
        out
    }

    fn deploy_in_progress(&self) -> bool {
        matches!(
            self.stages.get(self.current),
            Some(StageState::Deploy { done: false })
        ) && self.entered.get(self.current) == Some(&true)
    }

    fn running_jobs(&self) -> usize {
        match self.stages.get(self.current) {
            Some(StageState::Jobs(jobs)) => jobs
                .iter()
                .filter(|j| j.status == JobStatus::Running)
                .count(),
            _ => 0,
        }
    }

    fn enter_stage(&mut self, index: usize, out: &mut Vec<Command>) {
        self.current = index;
        if self.cancelling || self.failed {
            self.finish(out);
            return;
        }
        if index >= self.stages.len() {
            self.finish(out);
            return;
        }
        self.entered[index] = true;
        if let Some(reason) = self.not_applicable[index].clone() {
            out.push(Command::StageNotApplicable {
                stage: index,
                reason,
            });
            self.advance(out);
            return;
        }
        let stage = &mut self.stages[index];
        out.push(Command::StartStage { stage: index });
        match stage {
            StageState::Jobs(jobs) => {
                for (j, job) in jobs.iter_mut().enumerate() {
                    job.status = JobStatus::Running;
                    out.push(Command::StartJob {
                        job: JobRef {
                            stage: index,
                            job: j,
                        },
                        attempt: 1,
                    });
                }
            }
            StageState::Deploy { .. } => out.push(Command::StartDeploy { stage: index }),
        }
    }

    fn attempt_finished(
        &mut self,
        job: JobRef,
        attempt: u32,
        outcome: AttemptOutcome,
        out: &mut Vec<Command>,
    ) {
        if job.stage != self.current {
            return;
        }
        let cancelling = self.cancelling;
        let Some(StageState::Jobs(jobs)) = self.stages.get_mut(job.stage) else {
            return;
        };
        let Some(state) = jobs.get_mut(job.job) else {
            return;
        };
        if state.status != JobStatus::Running {
            return;
        }
        let status = match outcome {
            AttemptOutcome::Succeeded => JobStatus::Succeeded,
            AttemptOutcome::Cancelled => JobStatus::Cancelled,
            AttemptOutcome::Failed | AttemptOutcome::TimedOut
                if !cancelling && attempt <= state.retries =>
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
        out.push(Command::FinishJob { job, status });
        if jobs.iter().any(|j| j.status == JobStatus::Running) {
            return;
        }
        let stage_failed = jobs
            .iter()
            .any(|j| j.status.is_failure() && !j.allow_failure);
        let stage_cancelled = jobs.iter().any(|j| j.status == JobStatus::Cancelled);
        let stage_status = if stage_failed {
            StageStatus::Failed
        } else if stage_cancelled || self.cancelling {
            StageStatus::Cancelled
        } else {
            StageStatus::Succeeded
        };
        if stage_failed {
            self.failed = true;
        }
        if stage_cancelled {
            self.cancelling = true;
        }
        out.push(Command::FinishStage {
            stage: job.stage,
            status: stage_status,
        });
        self.advance(out);
    }

    fn advance(&mut self, out: &mut Vec<Command>) {
        self.enter_stage(self.current + 1, out);
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
        for stage in (0..self.stages.len()).filter(|i| !self.entered[*i]) {
            out.push(Command::SkipStage {
                stage,
                status: skipped,
            });
        }
        self.finished = Some(status);
        out.push(Command::FinishRun { status });
    }
}

#[cfg(test)]
mod tests;
