//! Retention as an operation (`gantry gc`, and the server's periodic sweep): artifact rows that
//! are neither pinned, nor young, nor among the newest runs of their project and branch are
//! marked removed, and their objects deleted unless another live row still uses the same content.

use anyhow::Result;
use gantry_engine::ports::{ArtifactRecord, ArtifactStore, StateStore};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<ArtifactRecord>,
    pub objects_deleted: usize,
    pub bytes_freed: u64,
}

pub async fn collect(
    store: &dyn StateStore,
    objects: &dyn ArtifactStore,
    keep_runs: i64,
    keep_younger_than: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let now = gantry_engine::ports::now_millis();
    let cutoff = now - keep_younger_than.as_millis() as i64;
    let removed = store.retention_candidates(keep_runs, cutoff).await?;
    let mut report = GcReport {
        removed,
        ..Default::default()
    };
    if dry_run || report.removed.is_empty() {
        report.bytes_freed = report.removed.iter().map(|a| a.size as u64).sum();
        return Ok(report);
    }
    let ids: Vec<i64> = report.removed.iter().map(|a| a.id).collect();
    store.mark_removed(&ids, now).await?;
    let mut digests: Vec<&str> = report.removed.iter().map(|a| a.digest.as_str()).collect();
    digests.sort();
    digests.dedup();
    let mut freed = 0;
    let mut deleted = 0;
    for d in digests {
        // Rows marked first, objects second: a crash between them leaves an orphan object,
        // never a live row without its object. The next sweep finds nothing to mark for it,
        // which is the price of never deleting something still in use.
        if !store.digest_in_use(d).await? && store.pins(d).await?.is_empty() {
            freed += objects.delete(d).await?;
            deleted += 1;
        }
    }
    report.objects_deleted = deleted;
    report.bytes_freed = freed;
    Ok(report)
}
