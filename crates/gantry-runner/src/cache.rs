//! Job caches (`cache:`): before the job's steps each cache is looked up by its key (made from
//! the workspace's files), else by its `restore_keys` prefixes, and unpacked into the job's
//! directory with its digest checked; after the steps succeed, each cache whose key had no
//! cache is packed and saved in the artifact store, content-addressed. A corrupt or missing
//! object is never restored: its cache is forgotten and saved anew. Two jobs saving one key at
//! once keep one (the store's unique key). The project's caches stay under a size cap, the least
//! recently used removed first; an object an artifact also uses is never deleted. Nothing here
//! fails the job: every problem is a line of the cache step's log.

use crate::context::RunContext;
use gantry_engine::ports::{CacheRecord, Stream};
use gantry_model::Job;
use gantry_model::cache::CacheSpec;
use sha2::{Digest, Sha256};
use std::path::Path;

/// A step's log lines, as gantry's own steps write them.
pub(crate) type Emit = Box<dyn FnMut(Stream, String) + Send>;

/// What restoring found for each cache of a job: its key, and whether a cache had exactly it.
pub(crate) struct Restored {
    pub keys: Vec<(String, bool)>,
}

/// The default size cap of one project's caches.
pub const DEFAULT_CAP_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// The key of `spec` for the files of `dir`: each `hash(...)` is the first 20 hex digits of
/// a sha256 over the files' names and contents (a missing file hashes as missing).
pub(crate) fn key_of(spec: &CacheSpec, dir: &Path, emit: &mut Emit) -> String {
    let key = spec.key.make(|files| {
        let mut h = Sha256::new();
        for f in files {
            h.update(f.as_bytes());
            h.update([0]);
            match std::fs::read(dir.join(f)) {
                Ok(bytes) => {
                    h.update((bytes.len() as u64).to_le_bytes());
                    h.update(&bytes);
                }
                Err(_) => {
                    emit(
                        Stream::System,
                        format!(
                            "gantry: cache key: `{f}` is not in the workspace; hashed as missing"
                        ),
                    );
                    h.update(b"\xffmissing");
                }
            }
        }
        hex::encode(h.finalize())[..20].to_string()
    });
    key.chars()
        .take(gantry_model::cache::MAX_KEY_BYTES)
        .collect()
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Deletes the object of a cache that was forgotten, unless something else uses it.
async fn drop_object(ctx: &RunContext, digest: &str) {
    match ctx.records.digest_in_use(digest).await {
        Ok(false) => {
            let _ = ctx.artifacts.delete(digest).await;
        }
        Ok(true) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "checking a cache object's users"),
    }
}

/// Restores the job's caches into `dir`.
pub(crate) async fn restore(ctx: &RunContext, job: &Job, dir: &Path, mut emit: Emit) -> Restored {
    let mut keys = Vec::new();
    for spec in &job.caches {
        let key = key_of(spec, dir, &mut emit);
        let found = ctx
            .records
            .find_cache(&ctx.project, &key, &spec.restore_keys)
            .await;
        let cache = match found {
            Ok(Some(c)) => c,
            Ok(None) => {
                emit(
                    Stream::System,
                    format!("gantry: no cache for `{key}`: the job starts cold and saves it"),
                );
                keys.push((key, false));
                continue;
            }
            Err(e) => {
                emit(
                    Stream::System,
                    format!("gantry: looking up cache `{key}` failed: {e:#}"),
                );
                keys.push((key, false));
                continue;
            }
        };
        let file_name = spec.paths.first().map(String::as_str).unwrap_or("cache");
        match ctx
            .artifacts
            .unpack(&cache.digest, &cache.media_type, dir, file_name)
            .await
        {
            Ok(()) => {
                let _ = ctx.records.touch_cache(cache.id, crate::now_millis()).await;
                let exact = cache.key == key;
                let how = if exact {
                    format!("gantry: restored cache `{key}` ({})", mib(cache.size))
                } else {
                    format!(
                        "gantry: restored cache `{}` for `{key}` by its prefix ({}); `{key}` is saved after the job",
                        cache.key,
                        mib(cache.size)
                    )
                };
                emit(Stream::System, how);
                keys.push((key, exact));
            }
            Err(e) => {
                emit(
                    Stream::System,
                    format!(
                        "gantry: cache `{}` is not restored: {e:#}; it is forgotten, and this job saves `{key}` anew",
                        cache.key
                    ),
                );
                let _ = ctx.records.remove_cache(cache.id).await;
                drop_object(ctx, &cache.digest).await;
                keys.push((key, false));
            }
        }
    }
    Restored { keys }
}

/// Saves the caches whose key had no cache, then keeps the project's caches under `cap`.
pub(crate) async fn save(
    ctx: &RunContext,
    job: &Job,
    dir: &Path,
    restored: &Restored,
    cap: u64,
    mut emit: Emit,
) {
    let mut saved_now: Vec<String> = Vec::new();
    for (spec, (key, exact)) in job.caches.iter().zip(&restored.keys) {
        if *exact {
            emit(
                Stream::System,
                format!("gantry: cache `{key}` is kept as it was"),
            );
            continue;
        }
        let stored = match ctx.artifacts.store(dir, &spec.paths).await {
            Ok(s) => s,
            Err(e) => {
                emit(
                    Stream::System,
                    format!("gantry: cache `{key}` is not saved: {e:#}"),
                );
                continue;
            }
        };
        let now = crate::now_millis();
        let record = CacheRecord {
            id: 0,
            project: ctx.project.clone(),
            key: key.clone(),
            digest: stored.digest.clone(),
            size: stored.size as i64,
            media_type: stored.media_type.clone(),
            created_at: now,
            last_used_at: now,
        };
        match ctx.records.save_cache(&record).await {
            Ok(true) => {
                emit(
                    Stream::System,
                    format!("gantry: saved cache `{key}` ({})", mib(record.size)),
                );
                saved_now.push(key.clone());
            }
            Ok(false) => {
                emit(
                    Stream::System,
                    format!(
                        "gantry: cache `{key}` was saved by another job meanwhile; that one is kept"
                    ),
                );
                if stored.newly_stored {
                    drop_object(ctx, &stored.digest).await;
                }
            }
            Err(e) => emit(
                Stream::System,
                format!("gantry: cache `{key}` is not saved: {e:#}"),
            ),
        }
    }
    evict(ctx, cap, &saved_now, &mut emit).await;
}

/// Removes the project's least recently used caches until they fit under `cap` (the ones just
/// saved go last).
async fn evict(ctx: &RunContext, cap: u64, fresh: &[String], emit: &mut Emit) {
    let Ok(mut caches) = ctx.records.caches(&ctx.project).await else {
        return;
    };
    caches.sort_by_key(|c| (fresh.contains(&c.key), c.last_used_at, c.id));
    let mut total: u64 = caches.iter().map(|c| c.size.max(0) as u64).sum();
    for c in caches {
        if total <= cap {
            break;
        }
        total -= c.size.max(0) as u64;
        if ctx.records.remove_cache(c.id).await.is_ok() {
            drop_object(ctx, &c.digest).await;
            emit(
                Stream::System,
                format!(
                    "gantry: removed cache `{}` (least recently used) to keep the project's caches under {}",
                    c.key,
                    mib(cap as i64)
                ),
            );
        }
    }
}
