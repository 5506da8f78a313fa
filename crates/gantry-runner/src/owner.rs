//! Who is running a run, and what to do when they are gone. An owner (a `gantry run` process, a
//! server) has two marks of life: a lease row in the state store that it renews while it lives
//! ([`LEASE`], renewed every third of it), which every host sharing the store can read, and an
//! exclusive `flock` on a lock file of its own, which the kernel drops the moment the process
//! dies (kill -9 included) but which only its own host can see. A run is orphaned when its
//! owner's lease has passed — or, on the owner's own host, as soon as its lock can be taken, so
//! that a crash on this machine is recovered at once rather than a lease later. Recovery marks
//! orphaned runs `interrupted` and, on the owner's host, kills any step process that outlived
//! its runner (found by the workspace path in its environment).

use anyhow::{Context, Result};
use gantry_engine::ports::{OwnerLease, RunFilter, StateStore};
use gantry_model::RunStatus;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// An owner's lease; renewed every third of it while the owner lives.
pub const LEASE: Duration = Duration::from_secs(30);

/// The lock and the lease this process holds while it runs pipelines. Dropping it releases the
/// lock and stops renewing the lease (the row is removed when the runtime still runs).
pub struct OwnerLock {
    name: String,
    _lock: Flock<File>,
    stop_lease: Option<tokio::sync::oneshot::Sender<()>>,
}

impl OwnerLock {
    /// Takes a new owner lock in `dir` (named after this process) and registers its lease in
    /// `store`, renewed from then on.
    pub async fn acquire(dir: &Path, store: Arc<dyn StateStore>) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("owner-{}-{nonce}.lock", std::process::id());
        let file = File::create(dir.join(&name))
            .with_context(|| format!("creating the lock file in {}", dir.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| anyhow::anyhow!("locking {name}: {e}"))?;
        let now = crate::now_millis();
        store
            .register_owner(&OwnerLease {
                name: name.clone(),
                host: this_host(),
                pid: std::process::id(),
                started_at: now,
                expires_at: now + LEASE.as_millis() as i64,
            })
            .await?;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let lease_name = name.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(LEASE / 3) => {
                        let until = crate::now_millis() + LEASE.as_millis() as i64;
                        if let Err(e) = store.renew_owner(&lease_name, until).await {
                            tracing::warn!(error = %format!("{e:#}"), "renewing the owner's lease");
                        }
                    }
                    _ = &mut stop_rx => break,
                }
            }
            let _ = store.remove_owner(&lease_name).await;
        });
        Ok(Self {
            name,
            _lock: lock,
            stop_lease: Some(stop_tx),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        if let Some(tx) = self.stop_lease.take() {
            let _ = tx.send(());
        }
    }
}

/// This machine's name, as leases record it.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Whether the owner `name` is gone, as `store` and this host see it: its lease has passed
/// (any host), or it ran on this host and its lock file here can be taken; an owner with no
/// lease row is judged by its lock file alone (a missing file: gone).
pub async fn owner_gone(store: &dyn StateStore, lock_dir: &Path, name: &str) -> Result<bool> {
    Ok(match store.owner(name).await? {
        Some(lease) if lease.host != this_host() => lease.expires_at < crate::now_millis(),
        Some(lease) => lease.expires_at < crate::now_millis() || released_here(lock_dir, name),
        None => owner_is_gone(lock_dir, name),
    })
}

/// Did an owner of this data directory die (its lock file is here, and its lock can be taken)?
/// A lock file that is not here says nothing: the owner may be a process of another data
/// directory sharing the state store (a second server on the same host), whose lease decides.
pub fn released_here(dir: &Path, name: &str) -> bool {
    !name.contains('/')
        && !name.contains("..")
        && (found_gone(dir, name) || (dir.join(name).exists() && owner_is_gone(dir, name)))
}

/// Owners this process found gone, by their lock file (which it then removed): asked again,
/// the answer stays the same.
static GONE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn found_gone(dir: &Path, name: &str) -> bool {
    GONE.lock().expect("owners gone").contains(&dir.join(name))
}

/// Is the owner of this lock file gone? (Its lock can be taken, or the file is missing.)
pub fn owner_is_gone(dir: &Path, name: &str) -> bool {
    if name.contains('/') || name.contains("..") {
        return true;
    }
    let path = dir.join(name);
    let Ok(file) = File::options().read(true).write(true).open(&path) else {
        return true;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            let _ = std::fs::remove_file(&path);
            drop(lock);
            GONE.lock().expect("owners gone").push(path);
            true
        }
        Err(_) => false,
    }
}

/// Marks every running run whose owner is gone as `interrupted` and, when the owner ran here,
/// kills its leftover step processes. Returns the ids of the runs it recovered.
pub async fn recover(
    state: &dyn StateStore,
    lock_dir: &Path,
    work_root: &Path,
) -> Result<Vec<i64>> {
    let running = state
        .list_runs(&RunFilter {
            status: Some(RunStatus::Running),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let mut recovered = Vec::new();
    let here = this_host();
    for run in running {
        let gone = match &run.owner {
            Some(name) => owner_gone(state, lock_dir, name).await?,
            None => true,
        };
        if !gone {
            continue;
        }
        // Its step processes can only be on the owner's host.
        let elsewhere = match &run.owner {
            Some(name) => state.owner(name).await?.is_some_and(|l| l.host != here),
            None => false,
        };
        if let Some(name) = &run.owner {
            let _ = state.remove_owner(name).await;
        }
        if elsewhere {
            state.mark_interrupted(run.id, crate::now_millis()).await?;
            recovered.push(run.id);
            continue;
        }
        let workspace_prefix = work_root.join(run.id.to_string());
        let killed = kill_leftovers(&workspace_prefix);
        if killed > 0 {
            tracing::warn!(
                run = run.id,
                processes = killed,
                "killed step processes left by a dead runner"
            );
        }
        if let Some(owner) = &run.owner {
            let containers = crate::container::remove_leftovers(run.id, owner).await;
            if containers > 0 {
                tracing::warn!(
                    run = run.id,
                    containers,
                    "removed step containers left by a dead runner"
                );
            }
        }
        state.mark_interrupted(run.id, crate::now_millis()).await?;
        let _ = std::fs::remove_dir_all(&workspace_prefix);
        recovered.push(run.id);
    }
    Ok(recovered)
}

/// Kills (SIGKILL) every process whose `GANTRY_WORKSPACE` lies under `prefix`.
pub fn kill_leftovers(prefix: &Path) -> usize {
    kill_by_env("GANTRY_WORKSPACE", prefix)
}

/// Kills (SIGKILL) every process (but this one) whose environment variable `var` names a path
/// under `prefix`; returns how many. Processes of gantry's are marked this way (step shells by
/// `GANTRY_WORKSPACE`, release services by `GANTRY_RELEASE_DIR`), so leftovers of a gantry that
/// died are found whoever their parent is now.
pub fn kill_by_env(var: &str, prefix: &Path) -> usize {
    pids_by_env(var, prefix)
        .into_iter()
        .filter(|pid| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        })
        .count()
}

/// The processes (other than this one) whose environment variable `var` names a path under
/// `prefix`.
pub fn pids_by_env(var: &str, prefix: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let wanted = prefix.to_string_lossy().into_owned();
    let marker = format!("{var}=");
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let hit = environ.split(|b| *b == 0).any(|entry| {
            entry.strip_prefix(marker.as_bytes()).is_some_and(|v| {
                PathBuf::from(String::from_utf8_lossy(v).into_owned()).starts_with(&wanted)
            })
        });
        if hit {
            out.push(pid);
        }
    }
    out
}
