//! Deployments: from an artifact to a release serving users, and back. The manager
//! ([`manager::DeployManager`]) carries out deploys and rollbacks with the engine's release
//! decisions; targets ([`target`]) run releases; supervised services ([`supervisor`]) keep
//! `process` releases alive; health checks ([`health`]) decide whether a release may serve; the
//! router ([`router`]) sends users to the live release and switches atomically.

pub mod health;
pub mod manager;
pub mod router;
pub mod supervisor;
pub mod target;

pub use manager::{DeployError, DeployManager, EnvStatus, ProjectSource, ReleaseHistory};
