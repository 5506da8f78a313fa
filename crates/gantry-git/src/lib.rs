//! The git adapter: resolve a revision to a commit, find the branch, read a file at a commit, and
//! export a commit's tree into a clean directory (no `.git`, the user's working copy untouched).
//!
//! It drives the `git` command rather than a library: git is on every machine that has a
//! repository, it honours the user's config (credentials, LFS filters, `safe.directory`), and its
//! error messages are the ones users search for (see ARCHITECTURE.md). To start runs sooner it
//! reads HEAD, refs and loose objects from the files itself, where they are plainly what git
//! would read (`heads.rs`, `objects.rs`), writes a tree of loose objects where nothing could
//! make git write it otherwise (`export.rs`), and asks git for everything else.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod export;
mod heads;
mod objects;
pub use heads::{RemoteHeads, ls_remote, ls_remote_tags};

/// A local repository (bare or with a working copy).
#[derive(Debug, Clone)]
pub struct Repo {
    path: PathBuf,
}

/// A commit and the branch it was reached through, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub commit: String,
    pub branch: Option<String>,
}

#[allow(clippy::disallowed_methods)] // The git adapter is one of the two places that spawn processes.
fn git(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).stdin(Stdio::null());
    // Never prompt for credentials on a terminal: a run has no one to answer.
    cmd.env("GIT_TERMINAL_PROMPT", "0");
    cmd
}

fn run(mut cmd: Command, what: &str) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: could not start git (is it installed?)"))?;
    Ok(out)
}

fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

impl Repo {
    /// Makes a new repository at `path` (branch `main`) with a local identity, for `gantry demo`.
    pub fn init(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["config", "user.email", "demo@gantry.invalid"],
            &["config", "user.name", "gantry demo"],
        ] {
            let mut cmd = git(path);
            cmd.args(args);
            let out = run(cmd, "making a repository")?;
            if !out.status.success() {
                bail!("git {}: {}", args.join(" "), stderr_text(&out));
            }
        }
        Self::open(path)
    }

    /// Commits every change in the working tree; returns the new commit.
    pub fn commit_all(&self, message: &str) -> Result<String> {
        for args in [
            &["add", "-A"][..],
            &["commit", "-q", "--allow-empty", "-m", message],
        ] {
            let mut cmd = git(&self.path);
            cmd.args(args);
            let out = run(cmd, "committing")?;
            if !out.status.success() {
                bail!("git {}: {}", args.join(" "), stderr_text(&out));
            }
        }
        Ok(self.resolve("HEAD")?.commit)
    }

    /// Opens the repository at `path`, or fails saying it is not one.
    /// The root of the work tree holding `start`, found without starting git: the nearest
    /// ancestor with a `.git` directory or file (a linked worktree or submodule). `None` when
    /// git's own variables say where the repository is (`GIT_DIR`, `GIT_WORK_TREE`,
    /// `GIT_CEILING_DIRECTORIES`), or nothing is found: then ask git.
    pub fn work_tree_root(start: &Path) -> Option<PathBuf> {
        if ["GIT_DIR", "GIT_WORK_TREE", "GIT_CEILING_DIRECTORIES"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
        {
            return None;
        }
        let start = start.canonicalize().ok()?;
        start
            .ancestors()
            .find(|dir| dir.join(".git").exists())
            .map(Path::to_path_buf)
    }

    pub fn open(path: &Path) -> Result<Self> {
        // A working copy's top or a bare repository, as its files show: no process.
        if heads::local_dir(path).is_some() {
            return Ok(Self {
                path: path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
            });
        }
        let mut cmd = git(path);
        cmd.args(["rev-parse", "--absolute-git-dir"]);
        let out = run(cmd, "opening the repository")?;
        if !out.status.success() {
            bail!(
                "{} is not a git repository: {}",
                path.display(),
                stderr_text(&out)
            );
        }
        // Absolute, so the path recorded with a run still works from another directory.
        Ok(Self {
            path: path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The top of the working copy, or the repository directory itself when bare.
    pub fn root(&self) -> Result<PathBuf> {
        if self.path.join(".git").is_dir() && heads::local_dir(&self.path).is_some() {
            return Ok(self.path.clone());
        }
        let mut cmd = git(&self.path);
        cmd.args(["rev-parse", "--show-toplevel"]);
        let out = run(cmd, "finding the repository root")?;
        if out.status.success() {
            return Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
        }
        Ok(self
            .path
            .canonicalize()
            .unwrap_or_else(|_| self.path.clone()))
    }

    /// Resolves `rev` (a branch, tag, `HEAD`, or a commit id) to a commit.
    pub fn resolve(&self, rev: &str) -> Result<Revision> {
        if rev.starts_with('-') {
            bail!("`{rev}` is not a revision");
        }
        // HEAD, the usual case, from the repository's files (what git would answer).
        if rev == "HEAD"
            && let Some((commit, branch)) = heads::head(&self.path)
        {
            return Ok(Revision { commit, branch });
        }
        let mut cmd = git(&self.path);
        cmd.args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}"));
        let out = run(cmd, "resolving the revision")?;
        if !out.status.success() {
            if rev == "HEAD" {
                bail!("the repository {} has no commits yet", self.path.display());
            }
            bail!("unknown revision `{rev}` in {}", self.path.display());
        }
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(Revision {
            commit,
            branch: self.branch_of(rev)?,
        })
    }

    fn branch_of(&self, rev: &str) -> Result<Option<String>> {
        let mut cmd = git(&self.path);
        if rev == "HEAD" {
            cmd.args(["symbolic-ref", "--quiet", "--short", "HEAD"]);
        } else {
            cmd.args(["rev-parse", "--verify", "--quiet", "--symbolic-full-name"])
                .arg(rev);
        }
        let out = run(cmd, "finding the branch")?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || name.is_empty() {
            return Ok(None);
        }
        Ok(match name.strip_prefix("refs/heads/") {
            Some(b) => Some(b.to_string()),
            None if rev == "HEAD" => Some(name),
            None => None,
        })
    }

    /// The content of `path` at `commit`, or `None` when the commit has no such file.
    pub fn read_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        // Loose objects, as right after a commit, from the files: no process.
        if let Some(dir) = heads::local_dir(&self.path)
            && let Some(found) = objects::read_file(&dir, commit, path)
        {
            return Ok(found);
        }
        let mut cmd = git(&self.path);
        cmd.args(["cat-file", "blob"])
            .arg(format!("{commit}:{path}"));
        let out = run(cmd, "reading a file from the repository")?;
        Ok(out.status.success().then_some(out.stdout))
    }

    /// The subject (first line of the message) of `commit`; `None` when it is not here.
    pub fn subject(&self, commit: &str) -> Result<Option<String>> {
        if commit.starts_with('-') {
            bail!("not a commit");
        }
        let mut cmd = git(&self.path);
        cmd.args(["show", "-s", "--format=%s", commit, "--"]);
        let out = run(cmd, "reading a commit's subject")?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    /// `<short id> <subject>` of the commits reachable from `to` but not from `from`, newest
    /// first (at most `limit`). Empty when either commit is unknown.
    pub fn log_between(&self, from: &str, to: &str, limit: usize) -> Result<Vec<String>> {
        if from.starts_with('-') || to.starts_with('-') {
            bail!("not a commit");
        }
        let mut cmd = git(&self.path);
        cmd.args([
            "log",
            "--format=%h %s",
            &format!("--max-count={limit}"),
            &format!("{from}..{to}"),
            "--",
        ]);
        let out = run(cmd, "listing commits")?;
        if !out.status.success() {
            return Ok(Vec::new());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Writes the tree of `commit` into `dest` (created if needed): files with their exec bits,
    /// symlinks as symlinks, no `.git`. Uses a throw-away index so the repository is not touched.
    pub fn export(&self, commit: &str, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest)
            .with_context(|| format!("creating workspace {}", dest.display()))?;
        // Loose objects, as right after a commit, from the files: no process.
        if let Some(dir) = heads::local_dir(&self.path)
            && let Some(written) = export::export(&dir, commit, dest)
        {
            return written
                .with_context(|| format!("checking out {commit} into {}", dest.display()));
        }
        let index = tempfile_path(dest);
        let mut cmd = git(&self.path);
        cmd.env("GIT_INDEX_FILE", &index)
            .arg("--work-tree")
            .arg(dest)
            .args([
                "-c",
                "core.hooksPath=/dev/null",
                "checkout",
                "--force",
                "--quiet",
            ])
            .arg(commit)
            .args(["--", "."]);
        let out = run(cmd, "checking out the commit")?;
        let _ = std::fs::remove_file(&index);
        if !out.status.success() {
            bail!(
                "checking out {commit} into {} failed: {}",
                dest.display(),
                stderr_text(&out)
            );
        }
        Ok(())
    }
}

fn tempfile_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.gantry-index-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_sh as sh;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_work_tree_root_is_found_without_git_as_git_finds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let repo_dir = tmp.path().join("repo");
        std::fs::create_dir_all(repo_dir.join("a/b")).unwrap();
        sh(&repo_dir, "git init -q -b main");
        let from_git = Repo::open(&repo_dir.join("a/b")).unwrap().root().unwrap();
        assert_eq!(
            Repo::work_tree_root(&repo_dir.join("a/b")).as_deref(),
            Some(from_git.as_path())
        );
        // A linked worktree has a `.git` file.
        sh(
            &repo_dir,
            "git -c user.email=t@t -c user.name=t commit -q --allow-empty -m x && git worktree add -q ../wt",
        );
        let wt = tmp.path().join("wt");
        assert!(wt.join(".git").is_file());
        assert_eq!(
            Repo::work_tree_root(&wt).as_deref(),
            Some(wt.canonicalize().unwrap().as_path())
        );
        // Outside any repository: nothing (then git is asked, and says so).
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(Repo::work_tree_root(outside.path()), None);
    }

    #[test]
    fn resolves_reads_and_exports() {
        let tmp = tempfile::tempdir().unwrap();
        let repo_dir = tmp.path().join("repo");
        std::fs::create_dir(&repo_dir).unwrap();
        sh(
            &repo_dir,
            "git init -q -b main && git config user.email t@t && git config user.name t \
            && echo one > a.txt && printf '#!/bin/sh\\necho hi\\n' > run.sh && chmod +x run.sh \
            && ln -s a.txt link && git add -A && git commit -qm first && echo two > a.txt && git commit -qam second \
            && echo dirty > a.txt",
        );
        let repo = Repo::open(&repo_dir).unwrap();
        let head = repo.resolve("HEAD").unwrap();
        assert_eq!(head.branch.as_deref(), Some("main"));
        assert_eq!(head.commit.len(), 40);
        let first = repo.resolve("HEAD~1").unwrap();
        assert_eq!(first.branch, None);
        assert_eq!(
            repo.resolve("main").unwrap().branch.as_deref(),
            Some("main")
        );
        assert_eq!(
            repo.read_file(&first.commit, "a.txt").unwrap().unwrap(),
            b"one\n"
        );
        assert_eq!(repo.read_file(&first.commit, "missing").unwrap(), None);
        assert!(
            repo.resolve("nope")
                .unwrap_err()
                .to_string()
                .contains("unknown revision `nope`")
        );

        let ws = tmp.path().join("ws");
        repo.export(&head.commit, &ws).unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.join("a.txt")).unwrap(),
            "two\n",
            "the commit, not the working copy"
        );
        assert!(!ws.join(".git").exists());
        assert!(
            std::fs::metadata(ws.join("run.sh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o111
                != 0
        );
        assert!(
            std::fs::symlink_metadata(ws.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // The user's working copy and index are untouched.
        assert_eq!(
            std::fs::read_to_string(repo_dir.join("a.txt")).unwrap(),
            "dirty\n"
        );
        assert!(Repo::open(tmp.path()).is_err());
    }
}

/// Mirrors: the server keeps a bare copy of each watched repository, fetched on every poll and
/// before running a commit it does not have yet (a webhook can arrive before the next poll).
impl Repo {
    /// Opens the mirror of `url` at `path`, cloning it first if there is none.
    pub fn mirror(url: &str, path: &Path) -> Result<Self> {
        if path.join("HEAD").is_file() {
            return Repo::open(path);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let tmp = path.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        let mut cmd = git(Path::new("."));
        cmd.args(["clone", "--mirror", "--quiet", "--"])
            .arg(url)
            .arg(&tmp);
        let out = run(cmd, "cloning the repository")?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            bail!("cloning {url} failed: {}", stderr_text(&out));
        }
        std::fs::rename(&tmp, path)
            .with_context(|| format!("moving the mirror into {}", path.display()))?;
        Repo::open(path)
    }

    /// Fetches every branch of the mirror's origin, pruning deleted ones.
    pub fn fetch(&self) -> Result<()> {
        let mut cmd = git(&self.path);
        cmd.args(["fetch", "--prune", "--quiet", "origin"]);
        let out = run(cmd, "fetching")?;
        if !out.status.success() {
            bail!(
                "fetching into {} failed: {}",
                self.path.display(),
                stderr_text(&out)
            );
        }
        Ok(())
    }

    /// Every branch with its head commit.
    pub fn heads(&self) -> Result<Vec<(String, String)>> {
        let mut cmd = git(&self.path);
        cmd.args([
            "for-each-ref",
            "--format=%(refname:short) %(objectname)",
            "refs/heads",
        ]);
        let out = run(cmd, "listing branches")?;
        if !out.status.success() {
            bail!(
                "listing branches of {} failed: {}",
                self.path.display(),
                stderr_text(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .map(|(b, c)| (b.to_string(), c.to_string()))
            })
            .collect())
    }

    /// The branch HEAD points to (the repository's default branch), if that branch exists.
    /// (A bare repository made with `git init --bare` points at `master` even when only `main`
    /// was ever pushed; then the only branch, or `main`, is the default.)
    pub fn default_branch(&self) -> Option<String> {
        let mut cmd = git(&self.path);
        cmd.args(["symbolic-ref", "--quiet", "--short", "HEAD"]);
        let out = run(cmd, "finding the default branch").ok()?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let heads = self.heads().ok()?;
        if out.status.success() && heads.iter().any(|(b, _)| *b == name) {
            return Some(name);
        }
        match heads.as_slice() {
            [(only, _)] => Some(only.clone()),
            _ => heads
                .iter()
                .find(|(b, _)| b == "main")
                .map(|(b, _)| b.clone()),
        }
    }

    /// Does the repository hold this commit?
    /// Whether `ancestor` is an ancestor of `commit` (or the same commit).
    pub fn is_ancestor(&self, ancestor: &str, commit: &str) -> Result<bool> {
        if ancestor.starts_with('-') || commit.starts_with('-') {
            bail!("not a commit: {ancestor} or {commit}");
        }
        let mut cmd = git(&self.path);
        cmd.args(["merge-base", "--is-ancestor", ancestor, commit]);
        let out = run(cmd, "comparing commits")?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!(
                "git merge-base failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    pub fn has_commit(&self, commit: &str) -> bool {
        if commit.starts_with('-') {
            return false;
        }
        let mut cmd = git(&self.path);
        cmd.args(["cat-file", "-e"])
            .arg(format!("{commit}^{{commit}}"));
        run(cmd, "looking up a commit")
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod mirror_tests {
    use super::*;
    use crate::test_sh as sh;

    #[test]
    fn mirrors_fetch_new_commits_and_branches() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        sh(
            &src,
            "git init -q -b main && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m one",
        );
        let mirror = Repo::mirror(src.to_str().unwrap(), &tmp.path().join("m.git")).unwrap();
        assert_eq!(mirror.heads().unwrap().len(), 1);
        assert_eq!(mirror.default_branch().as_deref(), Some("main"));
        sh(
            &src,
            "git -c user.email=a@b -c user.name=a commit -q --allow-empty -m two && git branch release/1",
        );
        mirror.fetch().unwrap();
        let heads = mirror.heads().unwrap();
        assert_eq!(
            heads.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(),
            ["main", "release/1"]
        );
        assert!(mirror.has_commit(&heads[0].1));
        assert!(!mirror.has_commit("0000000000000000000000000000000000000000"));
        let err = Repo::mirror("/nonexistent/repo", &tmp.path().join("x.git"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cloning /nonexistent/repo failed"), "{err}");
    }
}

/// Runs a shell script in `dir` for tests (making repositories), asserting it succeeds.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
fn test_sh(dir: &Path, script: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}
