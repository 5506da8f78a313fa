//! A checkout begun before its run is recorded. `gantry run` starts exporting the commit the
//! moment it has resolved it, while it reads the pipeline file and opens the database; the run's
//! first job then moves the finished tree into its workspace (one rename on the same file
//! system) instead of exporting again. A run whose first job is not first to ask, or that ends
//! before any job ran, leaves it unused: [`Prefetch::discard`] removes it.
//!
//! Lifecycle: [`Prefetch::start`] (a `git` process on a blocking thread, into
//! `<work root>/.prefetch-<pid>-<n>`), then at most one [`Prefetch::place`] that hands the tree
//! to a workspace, then [`Prefetch::discard`] at the end of the run, always. A process killed in
//! between leaves the directory behind; [`clean_stale`] removes those at the next start.

use anyhow::{Context as _, Result, anyhow};
use gantry_git::Repo;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The prefix of a prefetched tree's directory name in the work root.
const PREFIX: &str = ".prefetch-";

pub struct Prefetch {
    commit: String,
    dir: PathBuf,
    /// The export under way; `None` once a job took it (or it was discarded).
    export: Mutex<Option<JoinHandle<Result<()>>>>,
}

impl Prefetch {
    /// Starts exporting `commit` of `repo` into a fresh directory of `work_root` (created if
    /// needed). Must be called inside a tokio runtime.
    pub fn start(repo: &Repo, commit: &str, work_root: &Path) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = work_root.join(format!("{PREFIX}{}-{n}", std::process::id()));
        let (repo, at, into) = (repo.clone(), commit.to_string(), dir.clone());
        let export = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(into.parent().unwrap_or(&into))?;
            repo.export(&at, &into)
        });
        Self {
            commit: commit.to_string(),
            dir,
            export: Mutex::new(Some(export)),
        }
    }

    /// Moves the prefetched tree of `commit` into `workspace` (which must not exist or be an
    /// empty directory). `None`: nothing to hand over — another commit, already taken, or it
    /// could not be moved — and the caller exports as usual. `Some(Err)`: the export itself
    /// failed, with git's words, as an export in the workspace would have.
    pub async fn place(&self, commit: &str, workspace: &Path) -> Option<Result<()>> {
        if commit != self.commit {
            return None;
        }
        let export = self.export.lock().expect("prefetch").take()?;
        let exported = export
            .await
            .map_err(|e| anyhow!("the checkout's thread failed: {e}"))
            .and_then(|r| r);
        if let Err(e) = exported {
            let _ = tokio::fs::remove_dir_all(&self.dir).await;
            return Some(Err(e));
        }
        let moved = async {
            if let Some(parent) = workspace.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(&self.dir, workspace).await
        }
        .await;
        match moved {
            Ok(()) => Some(Ok(())),
            Err(_) => {
                let _ = tokio::fs::remove_dir_all(&self.dir).await;
                None
            }
        }
    }

    /// Waits for an export nobody took and removes its tree. Idempotent.
    pub async fn discard(&self) {
        let export = self.export.lock().expect("prefetch").take();
        if let Some(export) = export {
            let _ = export.await;
            let _ = tokio::fs::remove_dir_all(&self.dir).await;
        }
    }

    /// Where the tree is being written (for tests and messages).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Removes prefetched trees a killed process left in `work_root` more than `age` ago (a live
/// one is handed over or discarded within its run; the age keeps a concurrent run's safe).
pub fn clean_stale(work_root: &Path, age: Duration) -> Result<usize> {
    let entries = match std::fs::read_dir(work_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", work_root.display())),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|e| e >= age);
        if old && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository of two commits (`a.txt` "one", then "two") and a work root, in `_tmp`
    /// (bound by name in each test: left to `..`, it would be removed at once).
    struct Fixture {
        _tmp: tempfile::TempDir,
        repo: Repo,
        first: String,
        head: String,
        work: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        let repo = Repo::init(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), "one\n").unwrap();
        let first = repo.commit_all("first").unwrap();
        std::fs::write(dir.join("a.txt"), "two\n").unwrap();
        let head = repo.commit_all("second").unwrap();
        let work = tmp.path().join("work");
        Fixture {
            _tmp: tmp,
            repo,
            first,
            head,
            work,
        }
    }

    #[tokio::test]
    async fn the_first_job_gets_the_tree_and_a_second_asks_git_itself() {
        let Fixture {
            _tmp,
            repo,
            head,
            work,
            ..
        } = fixture();
        let prefetch = Prefetch::start(&repo, &head, &work);
        let ws = work.join("1/build-1");
        prefetch.place(&head, &ws).await.unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(ws.join("a.txt")).unwrap(), "two\n");
        assert!(!ws.join(".git").exists());
        assert!(!prefetch.dir().exists(), "moved, not copied");
        // Taken once: the next job exports as usual.
        assert!(
            prefetch
                .place(&head, &work.join("1/test-1"))
                .await
                .is_none()
        );
        prefetch.discard().await;
        assert!(
            ws.exists(),
            "discarding after the hand-over leaves the workspace"
        );
    }

    #[tokio::test]
    async fn another_commit_is_not_handed_over_and_discard_removes_the_tree() {
        let Fixture {
            _tmp,
            repo,
            first,
            head,
            work,
            ..
        } = fixture();
        let prefetch = Prefetch::start(&repo, &head, &work);
        assert!(prefetch.place(&first, &work.join("1/a-1")).await.is_none());
        prefetch.discard().await;
        assert!(!prefetch.dir().exists());
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
        prefetch.discard().await;
    }

    #[tokio::test]
    async fn a_failed_export_is_the_jobs_error_and_leaves_nothing() {
        let Fixture {
            _tmp, repo, work, ..
        } = fixture();
        let missing = "0".repeat(40);
        let prefetch = Prefetch::start(&repo, &missing, &work);
        let err = prefetch
            .place(&missing, &work.join("1/a-1"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(format!("{err:#}").contains("checking out"), "{err:#}");
        assert!(!prefetch.dir().exists());
        assert!(!work.join("1/a-1").exists());
    }

    #[tokio::test]
    async fn a_workspace_that_is_taken_falls_back_to_an_export_of_its_own() {
        let Fixture {
            _tmp,
            repo,
            head,
            work,
            ..
        } = fixture();
        let ws = work.join("1/a-1");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::write(ws.join("left.txt"), "x").unwrap();
        let prefetch = Prefetch::start(&repo, &head, &work);
        assert!(prefetch.place(&head, &ws).await.is_none());
        assert!(!prefetch.dir().exists());
        assert!(
            ws.join("left.txt").exists(),
            "the workspace is not replaced"
        );
    }

    #[test]
    fn stale_trees_are_removed_and_fresh_ones_and_workspaces_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path();
        for d in [".prefetch-1-0", "7", ".prefetch-2-0"] {
            std::fs::create_dir_all(work.join(d).join("src")).unwrap();
        }
        assert_eq!(clean_stale(work, Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(clean_stale(work, Duration::ZERO).unwrap(), 2);
        assert!(work.join("7/src").exists());
        assert_eq!(clean_stale(&work.join("none"), Duration::ZERO).unwrap(), 0);
    }
}
