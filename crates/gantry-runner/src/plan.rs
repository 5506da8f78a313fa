//! A pipeline's stages and jobs as the state store records a run's plan, and a job by its
//! place in it.

use gantry_engine::ports::{NewJob, NewStage};
use gantry_engine::run::JobRef;
use gantry_model::{Job, Pipeline, StageKind};

/// The stages and jobs of a pipeline, as the state store records them.
pub(crate) fn plan_of(pipeline: &Pipeline) -> Vec<NewStage> {
    pipeline
        .stages
        .iter()
        .map(|s| match &s.kind {
            StageKind::Jobs(jobs) => NewStage {
                name: s.name.clone(),
                kind: "jobs",
                jobs: jobs
                    .iter()
                    .map(|j| NewJob {
                        name: j.name.clone(),
                        allow_failure: j.allow_failure,
                        waits_for: j.after.clone(),
                    })
                    .collect(),
            },
            StageKind::Deploy(_) => NewStage {
                name: s.name.clone(),
                kind: "deploy",
                jobs: Vec::new(),
            },
            StageKind::Approval(_) => NewStage {
                name: s.name.clone(),
                kind: "approval",
                jobs: Vec::new(),
            },
        })
        .collect()
}

pub(crate) fn job_of(pipeline: &Pipeline, job: JobRef) -> &Job {
    match &pipeline.stages[job.stage].kind {
        StageKind::Jobs(jobs) => &jobs[job.job],
        StageKind::Deploy(_) | StageKind::Approval(_) => {
            unreachable!("the run machine only starts jobs of job stages")
        }
    }
}

/// The job at `job`, if the pipeline has one there (a runner checks what it was sent).
pub(crate) fn try_job_of(pipeline: &Pipeline, job: JobRef) -> Option<&Job> {
    match &pipeline.stages.get(job.stage)?.kind {
        StageKind::Jobs(jobs) => jobs.get(job.job),
        StageKind::Deploy(_) | StageKind::Approval(_) => None,
    }
}
