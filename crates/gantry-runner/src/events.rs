//! What a run reports while it happens. The terminal renderer, `--json` output and (later) the
//! server's live log stream are all [`Observer`]s of the same events.

use gantry_engine::ports::Stream;
use gantry_model::{JobStatus, RunStatus, StageStatus, StepStatus};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    RunStarted {
        run: i64,
        project: String,
        commit: String,
        branch: Option<String>,
    },
    StageStarted {
        run: i64,
        stage: String,
    },
    JobStarted {
        run: i64,
        stage: String,
        job: String,
        attempt: u32,
    },
    StepStarted {
        run: i64,
        job: String,
        attempt: u32,
        step: String,
        index: usize,
    },
    Log {
        run: i64,
        job: String,
        step: String,
        line: i64,
        stream: Stream,
        text: String,
    },
    StepFinished {
        run: i64,
        job: String,
        attempt: u32,
        step: String,
        status: StepStatus,
        exit_code: Option<i32>,
        millis: u64,
    },
    JobRetrying {
        run: i64,
        job: String,
        next_attempt: u32,
    },
    JobFinished {
        run: i64,
        stage: String,
        job: String,
        status: JobStatus,
        attempts: u32,
        allow_failure: bool,
        error: Option<String>,
        millis: u64,
    },
    ArtifactStored {
        run: i64,
        job: String,
        name: String,
        digest: String,
        size: u64,
        newly_stored: bool,
    },
    StageFinished {
        run: i64,
        stage: String,
        status: StageStatus,
        note: Option<String>,
    },
    RunFinished {
        run: i64,
        status: RunStatus,
        millis: u64,
    },
}

/// Receives a run's events, in order, from the run's task. Must not block for long.
pub trait Observer: Send + Sync {
    fn event(&self, event: &RunEvent);
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _: &RunEvent) {}
}
