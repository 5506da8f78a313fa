//! Deployments: from an artifact to a release serving users, and back. The manager
//! ([`manager::DeployManager`]) carries out deploys and rollbacks with the engine's release
//! decisions; targets ([`targets`]) run releases; supervised services ([`supervisor`]) keep
//! `process` releases alive; health checks ([`health`]) decide whether a release may serve; the
//! router ([`router`]) sends users to the live release (or splits them with a canary) and
//! switches atomically; [`stats`] keeps what it measured per release; [`kept`] records what was
//! verified of a kept release, so a rollback compares instead of hashing.

pub mod dataplane;
pub mod health;
pub mod kept;
pub mod manager;
pub mod router;
pub mod shim;
pub mod stats;
pub mod supervisor;
pub mod targets;

pub use manager::{
    CanaryAction, CanaryView, DeployError, DeployManager, EnvStatus, ProjectSource, ReleaseHistory,
    ReleaseTraffic, WindowView,
};
