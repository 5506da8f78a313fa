//! The nouns of gantry, shared by every crate: what a pipeline is once it has been checked, and the
//! statuses a run and its parts move through, and the records the store keeps. No I/O, no parsing, no serde schema of any file:
//! those live at the edges (`gantry-config` for the pipeline file, `gantry-api` for HTTP).
//!
//! Codemap:
//! - [`pipeline`]: `Pipeline`, `Stage`, `Job`, `Step`, `ArtifactSpec`, `DeploySpec`, `EnvironmentSpec`.
//! - [`environment`]: `EnvironmentSpec`: target, health check, router, releases kept.
//! - [`status`]: `RunStatus`, `JobStatus`, `StepStatus`, and what ends a job.
//! - [`secret`]: `SecretValue`, a string that never prints itself.
//! - [`auth`]: `Role` of API tokens.
//! - [`records`]: what the store keeps: runs and their parts, log lines, artifacts, releases
//!   (`ReleaseState`, `ReleaseKind`) and their events, locks, owners, projects, tokens, shares.
//! - [`duration`]: parsing and printing of `10m`, `1h30m`, `500ms`.

pub mod auth;
pub mod cache;
pub mod duration;
pub mod environment;
pub mod expr;
pub mod pipeline;
pub mod records;
pub mod secret;
pub mod status;
pub mod vars;

pub use auth::Role;
pub use environment::{
    AnalysisSpec, CanarySpec, CanaryStep, DockerTarget, HealthCheck, HealthSpec, LambdaCreate,
    LambdaTarget, RouterSpec, Routing, TargetKind, TargetSpec, UserKey, UserSpec,
};
pub use pipeline::{
    ApprovalSpec, ArtifactSpec, DeploySpec, EnvironmentSpec, ImageBuild, ImagePush, Job,
    JobContainer, MatrixCell, Pipeline, ProjectArtifact, Rules, ServiceSpec, Stage, StageKind,
    Step, image_repository, label_problem, pattern_matches,
};
pub use secret::SecretValue;
pub use status::{JobStatus, RunStatus, StageStatus, StepStatus, TriggerEvent};

/// Environment variable names gantry sets for every step; the pipeline file may not set them.
pub const RESERVED_ENV_PREFIX: &str = "GANTRY_";
