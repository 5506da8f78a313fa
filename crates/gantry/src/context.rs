//! Wiring: where the data directory is, and the adapters opened on it. Every subcommand that
//! touches state goes through [`Context::open`], which also recovers runs left unfinished by a
//! process that died.

use anyhow::{Context as _, Result};
use gantry_engine::ports::StateStore;
use gantry_runner::owner;
use gantry_store::artifacts::LocalArtifactStore;
use gantry_store::sqlite::SqliteStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Context {
    pub data_dir: PathBuf,
    pub state: Arc<SqliteStore>,
    /// Runs this start found left unfinished by a dead process (now `interrupted`).
    pub recovered: Vec<i64>,
}

impl Context {
    /// Opens the data directory (creating it), its database, and recovers orphaned runs.
    pub async fn open(data_dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        // Absolute from here on: workspaces and git commands run in other directories.
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", data_dir.display()))?;
        // Keep the data directory out of the user's `git status`.
        let ignore = data_dir.join(".gitignore");
        if !ignore.exists() {
            let _ = std::fs::write(&ignore, "*\n");
        }
        let state = Arc::new(SqliteStore::open(&data_dir.join("gantry.db")).await?);
        let recovered = owner::recover(
            &*state as &dyn StateStore,
            &data_dir.join("locks"),
            &data_dir.join("work"),
        )
        .await?;
        for id in &recovered {
            eprintln!(
                "note: run {id} was left unfinished by a process that stopped; marked interrupted"
            );
        }
        Ok(Self {
            data_dir,
            state,
            recovered,
        })
    }

    /// Opens the data directory of the current directory (see [`data_dir_here`]).
    pub async fn open_here(explicit: Option<PathBuf>) -> Result<Self> {
        Self::open(data_dir_here(explicit)?).await
    }

    pub fn artifacts(&self) -> Result<LocalArtifactStore> {
        LocalArtifactStore::new(self.data_dir.join("artifacts"))
    }

    pub fn work_root(&self) -> PathBuf {
        self.data_dir.join("work")
    }

    pub fn lock_dir(&self) -> PathBuf {
        self.data_dir.join("locks")
    }
}

/// The data directory for a command run in the current directory (see [`data_dir_for`]).
pub fn data_dir_here(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    Ok(data_dir_for(explicit, &cwd))
}

/// The data directory: `--data-dir`/`GANTRY_HOME`, else `.gantry/` at the root of the repository
/// containing `start` (or in `start` itself when it is not in a repository).
pub fn data_dir_for(explicit: Option<PathBuf>, start: &Path) -> PathBuf {
    if let Some(dir) = explicit {
        return dir;
    }
    let root = gantry_git::Repo::open(start)
        .and_then(|r| r.root())
        .unwrap_or_else(|_| start.to_path_buf());
    root.join(".gantry")
}
