//! Artifacts: what a job declares is collected from its workspace ([`collect`]), packed and
//! hashed in one pass ([`pack`]), and kept by content on local disk ([`local`]) or in an
//! S3-compatible bucket ([`s3`]), both laid out by [`object`].

pub mod collect;
pub mod local;
pub mod object;
pub mod pack;
pub mod s3;

pub use local::LocalArtifactStore;
pub use s3::{S3ArtifactStore, S3Location};

/// Media type of a packed directory or set of paths.
pub const TAR_ZSTD: &str = "application/vnd.gantry.tar+zstd";
