//! Artifacts: what a job declares is collected from its workspace ([`collect`]), packed and
//! hashed in one pass ([`pack`]), and kept by content in the local store ([`local`]).

pub mod collect;
pub mod local;
pub mod pack;

pub use local::LocalArtifactStore;

/// Media type of a packed directory or set of paths.
pub const TAR_ZSTD: &str = "application/vnd.gantry.tar+zstd";
