//! Who is running a run, and what to do when they are gone. A process that runs pipelines holds
//! an exclusive `flock` on a lock file of its own for as long as it lives; the kernel drops the
//! lock when the process dies, however it dies (kill -9 included). A run whose owner's lock can
//! be taken is therefore orphaned: recovery marks it `interrupted` and kills any step process
//! that outlived its runner (found by the workspace path in its environment).

use anyhow::{Context, Result};
use gantry_engine::ports::{RunFilter, StateStore};
use gantry_model::RunStatus;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The lock this process holds while it runs pipelines. Dropping it releases the lock.
pub struct OwnerLock {
    name: String,
    _lock: Flock<File>,
}

impl OwnerLock {
    /// Takes a new owner lock in `dir` (named after this process).
    pub fn acquire(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("owner-{}-{nonce}.lock", std::process::id());
        let file = File::create(dir.join(&name))
            .with_context(|| format!("creating the lock file in {}", dir.display()))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| anyhow::anyhow!("locking {name}: {e}"))?;
        Ok(Self { name, _lock: lock })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
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
            true
        }
        Err(_) => false,
    }
}

/// Marks every running run whose owner is gone as `interrupted` and kills its leftover step
/// processes. Returns the ids of the runs it recovered.
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
    for run in running {
        let gone = match &run.owner {
            Some(name) => owner_is_gone(lock_dir, name),
            None => true,
        };
        if !gone {
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
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let wanted = prefix.to_string_lossy().into_owned();
    let marker = format!("{var}=");
    let mut killed = 0;
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
        if hit
            && nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        {
            killed += 1;
        }
    }
    killed
}
