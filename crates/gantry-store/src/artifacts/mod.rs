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

/// `e` said plainly when a file system filled up (ENOSPC, or a quota): which place of the
/// artifact store (`place`: `the artifact store`, its staging directory) and what to do, so
/// that neither the user nor `gantry why` blames the step. Anything else passes unchanged.
pub fn name_full_disk(e: anyhow::Error, root: &std::path::Path, place: &str) -> anyhow::Error {
    let full = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        })
    });
    if !full {
        return e;
    }
    anyhow::anyhow!(
        "no space left on the file system of {} ({place}): {e:#}; free space there (`gantry gc` removes what retention no longer keeps), then run again",
        root.display()
    )
}

/// Media type of a packed directory or set of paths.
pub const TAR_ZSTD: &str = "application/vnd.gantry.tar+zstd";
