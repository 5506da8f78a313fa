//! A repository's branches and where its HEAD points: what a poll needs to notice new commits.
//! A repository on this machine (a path or `file://` URL) is read from its files — `HEAD`,
//! loose refs under `refs/heads/`, `packed-refs` — without starting a process, so watching a
//! thousand local repositories costs microseconds a poll; anything else (a remote URL, or a
//! local repository whose refs this reader does not know: reftable, a linked worktree, a
//! symbolic branch) is asked with one `git ls-remote`, as before. Both give the same answer
//! (`reads_the_files_as_ls_remote_does` compares them).

use super::{git, run, stderr_text};
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

/// The branches of a repository, sorted by name, and its default branch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteHeads {
    pub default_branch: Option<String>,
    pub heads: Vec<(String, String)>,
}

/// The branches of the repository at `url`; no clone, no fetch.
pub fn ls_remote(url: &str) -> Result<RemoteHeads> {
    match local_heads(url) {
        Some(heads) => Ok(heads),
        None => git_ls_remote(url),
    }
}

/// The tags of the repository at `url` and the commit each points at (an annotated tag
/// peeled to its commit), sorted by name; no clone, no fetch. Asked with one `git ls-remote`:
/// only projects that watch tags pay for it.
pub fn ls_remote_tags(url: &str) -> Result<Vec<(String, String)>> {
    let mut cmd = git(Path::new("/"));
    cmd.args(["ls-remote", "--tags", "--", url]);
    let out = run(cmd, "listing the remote's tags")?;
    if !out.status.success() {
        bail!("reading the tags of {url} failed: {}", stderr_text(&out));
    }
    let mut tags = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((id, name)) = line.split_once('\t') else {
            continue;
        };
        let Some(tag) = name.strip_prefix("refs/tags/") else {
            continue;
        };
        match tag.strip_suffix("^{}") {
            // The peeled line follows its tag's: the commit wins over the tag object.
            Some(tag) => {
                tags.insert(tag.to_string(), id.to_string());
            }
            None => {
                tags.entry(tag.to_string())
                    .or_insert_with(|| id.to_string());
            }
        }
    }
    Ok(tags.into_iter().collect())
}

/// The branches as `git ls-remote` lists them.
fn git_ls_remote(url: &str) -> Result<RemoteHeads> {
    let mut cmd = git(Path::new("/"));
    cmd.args(["ls-remote", "--symref", "--", url, "HEAD", "refs/heads/*"]);
    let out = run(cmd, "listing the remote's branches")?;
    if !out.status.success() {
        bail!(
            "reading the branches of {url} failed: {}",
            stderr_text(&out)
        );
    }
    let mut remote = RemoteHeads::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.strip_prefix("ref: ") {
            if let Some((target, "HEAD")) = rest.split_once('\t') {
                remote.default_branch = target.strip_prefix("refs/heads/").map(str::to_string);
            }
        } else if let Some((commit, name)) = line.split_once('\t')
            && let Some(branch) = name.strip_prefix("refs/heads/")
        {
            remote.heads.push((branch.to_string(), commit.to_string()));
        }
    }
    settle_default(&mut remote);
    Ok(remote)
}

/// HEAD of a bare repository may name a branch that was never pushed (then ls-remote does not
/// list HEAD at all): the only branch, else `main`, is the default then.
fn settle_default(remote: &mut RemoteHeads) {
    if remote
        .default_branch
        .as_ref()
        .is_none_or(|d| !remote.heads.iter().any(|(b, _)| b == d))
    {
        remote.default_branch = match remote.heads.as_slice() {
            [(only, _)] => Some(only.clone()),
            _ => remote
                .heads
                .iter()
                .find(|(b, _)| b == "main")
                .map(|(b, _)| b.clone()),
        };
    }
}

/// The git directory of a repository on this machine that this reader understands, if `url`
/// names one.
fn local_git_dir(url: &str) -> Option<PathBuf> {
    let path = match url.strip_prefix("file://") {
        Some(p) => PathBuf::from(p),
        // A URL of another scheme, or scp-like `host:path`: not on this machine.
        None if url.contains("://") || url.split('/').next().is_some_and(|s| s.contains(':')) => {
            return None;
        }
        None => PathBuf::from(url),
    };
    let dir = if path.join(".git").is_dir() {
        path.join(".git")
    } else if path.join("HEAD").is_file() && path.join("objects").is_dir() {
        path
    } else {
        return None;
    };
    // Linked worktrees keep their refs elsewhere; reftable keeps them in another format.
    if dir.join("commondir").exists() || dir.join("reftable").exists() {
        return None;
    }
    let config = std::fs::read_to_string(dir.join("config")).ok()?;
    if config.to_ascii_lowercase().contains("refstorage") {
        return None;
    }
    Some(dir)
}

/// The git directory of a repository in `path` (a working copy's top, or a bare repository)
/// whose files this reader understands.
pub(crate) fn local_dir(path: &Path) -> Option<PathBuf> {
    local_git_dir(path.to_str()?)
}

/// Where `HEAD` of the repository in `path` points, read from its files: the commit, and the
/// branch when HEAD names one (`None` when detached). `None` when anything is not as this
/// reader expects (an unborn branch, a symbolic branch, a linked worktree, reftable): ask git.
pub(crate) fn head(path: &Path) -> Option<(String, Option<String>)> {
    let dir = local_dir(path)?;
    let head = std::fs::read_to_string(dir.join("HEAD")).ok()?;
    let head = head.trim();
    if is_object_id(head) {
        return Some((head.to_string(), None));
    }
    let branch = head.strip_prefix("ref: refs/heads/")?;
    if branch.ends_with(".lock") || branch.contains("..") {
        return None;
    }
    let commit = match std::fs::read_to_string(dir.join("refs/heads").join(branch)) {
        Ok(text) => {
            let id = text.trim();
            is_object_id(id).then(|| id.to_string())?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let packed = std::fs::read_to_string(dir.join("packed-refs")).ok()?;
            let want = format!("refs/heads/{branch}");
            packed.lines().find_map(|line| {
                let (id, name) = line.split_once(' ')?;
                (name == want && is_object_id(id)).then(|| id.to_string())
            })?
        }
        Err(_) => return None,
    };
    Some((commit, Some(branch.to_string())))
}

fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads the branches from the repository's files; `None` when anything is not as expected,
/// so that the caller asks git instead.
fn local_heads(url: &str) -> Option<RemoteHeads> {
    let dir = local_git_dir(url)?;
    let mut heads = std::collections::BTreeMap::new();
    // Loose refs win over packed ones; read the packed file first, then let loose refs replace.
    match std::fs::read_to_string(dir.join("packed-refs")) {
        Ok(text) => {
            for line in text.lines() {
                if line.starts_with('#') || line.starts_with('^') || line.is_empty() {
                    continue;
                }
                let (id, name) = line.split_once(' ')?;
                if !is_object_id(id) {
                    return None;
                }
                if let Some(branch) = name.strip_prefix("refs/heads/") {
                    heads.insert(branch.to_string(), id.to_string());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return None,
    }
    let mut stack = vec![dir.join("refs/heads")];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        for entry in entries {
            let path = entry.ok()?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.strip_prefix(dir.join("refs/heads")).ok()?.to_str()?;
            if name.ends_with(".lock") {
                continue; // A ref being written: its old value is still the file without .lock.
            }
            let text = std::fs::read_to_string(&path).ok()?;
            let id = text.trim();
            if !is_object_id(id) {
                return None; // A symbolic branch, or something this reader does not know.
            }
            heads.insert(name.to_string(), id.to_string());
        }
    }
    let head = std::fs::read_to_string(dir.join("HEAD")).ok()?;
    let mut remote = RemoteHeads {
        default_branch: head
            .trim()
            .strip_prefix("ref: refs/heads/")
            .map(str::to_string),
        heads: heads.into_iter().collect(),
    };
    settle_default(&mut remote);
    Some(remote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_branches_and_default_without_cloning() {
        let tmp = tempfile::tempdir().unwrap();
        let bare = tmp.path().join("r.git");
        crate::test_sh(
            tmp.path(),
            &format!(
                "git init -q --bare {b} && git init -q -b main w && cd w && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m x && git push -q {b} main main:release/2",
                b = bare.display()
            ),
        );
        let r = ls_remote(bare.to_str().unwrap()).unwrap();
        assert_eq!(
            r.default_branch.as_deref(),
            Some("main"),
            "HEAD names master, which was never pushed"
        );
        assert_eq!(
            r.heads.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(),
            ["main", "release/2"]
        );
        assert!(ls_remote("/nonexistent/x.git").is_err());
    }

    /// Lightweight and annotated tags, each with the commit it names (not the tag object).
    #[test]
    #[allow(clippy::disallowed_methods)] // git itself, to compare with.
    fn lists_tags_with_their_commits() {
        let tmp = tempfile::tempdir().unwrap();
        crate::test_sh(
            tmp.path(),
            "set -e
             g='git -c user.email=a@b -c user.name=a'
             git init -q -b main w && cd w
             $g commit -q --allow-empty -m one && git tag light
             $g commit -q --allow-empty -m two && $g tag -a -m annotated v1.0.0",
        );
        let w = tmp.path().join("w");
        let commit = |rev: &str| {
            let o = std::process::Command::new("git")
                .arg("-C")
                .arg(&w)
                .args(["rev-parse", &format!("{rev}^{{commit}}")])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let tags = ls_remote_tags(w.to_str().unwrap()).unwrap();
        assert_eq!(
            tags,
            vec![
                ("light".to_string(), commit("HEAD~1")),
                ("v1.0.0".to_string(), commit("HEAD")),
            ]
        );
        assert!(ls_remote_tags("/nonexistent/x.git").is_err());
    }

    /// Loose and packed refs (one branch in both, the loose one newer), nested names, a
    /// working copy and a bare repository, `file://` and plain paths, a detached HEAD: the
    /// files say what git says. Reftable and symbolic branches go to git.
    #[test]
    fn reads_the_files_as_ls_remote_does() {
        let tmp = tempfile::tempdir().unwrap();
        crate::test_sh(
            tmp.path(),
            "set -e
             g='git -c user.email=a@b -c user.name=a'
             git init -q -b trunk w && cd w
             $g commit -q --allow-empty -m one
             git branch feature/deep/x && git branch old
             git pack-refs --all
             $g commit -q --allow-empty -m two
             git branch -f old HEAD
             cd .. && git clone -q --bare w b.git
             git -C b.git update-ref refs/heads/only-loose $(git -C w rev-parse HEAD~1)
             git clone -q w d && git -C d checkout -q --detach HEAD~1",
        );
        for repo in ["w", "b.git", "d"] {
            let path = tmp.path().join(repo);
            for url in [
                path.display().to_string(),
                format!("file://{}", path.display()),
            ] {
                let fast = local_heads(&url).unwrap_or_else(|| panic!("{url} was not read"));
                assert_eq!(fast, git_ls_remote(&url).unwrap(), "{url}");
                assert!(!fast.heads.is_empty(), "{url}");
            }
        }
        let w = local_heads(tmp.path().join("w").to_str().unwrap()).unwrap();
        assert_eq!(w.default_branch.as_deref(), Some("trunk"));
        assert!(w.heads.iter().any(|(b, _)| b == "feature/deep/x"));

        // What the reader does not know is left to git.
        crate::test_sh(
            tmp.path(),
            "set -e
             git init -q --ref-format=reftable -b main rt
             git -C rt -c user.email=a@b -c user.name=a commit -q --allow-empty -m x
             git -C w symbolic-ref refs/heads/alias refs/heads/trunk",
        );
        assert!(local_heads(tmp.path().join("rt").to_str().unwrap()).is_none());
        assert!(local_heads(tmp.path().join("w").to_str().unwrap()).is_none());
        let rt = ls_remote(tmp.path().join("rt").to_str().unwrap()).unwrap();
        assert_eq!(rt.default_branch.as_deref(), Some("main"));
        assert!(local_heads("https://example.invalid/x.git").is_none());
        assert!(local_heads("git@example.invalid:x.git").is_none());
    }

    /// HEAD read from the files is what git resolves: a branch in a loose ref, the same branch
    /// once packed, a detached HEAD; an unborn branch goes to git (which says there is no
    /// commit yet).
    #[test]
    #[allow(clippy::disallowed_methods)] // git itself, to compare with: gantry-git's to start.
    fn head_is_read_from_the_files_as_git_resolves_it() {
        let tmp = tempfile::tempdir().unwrap();
        let w = tmp.path().join("w");
        crate::test_sh(
            tmp.path(),
            "git init -q -b trunk w && cd w && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m x",
        );
        let git_says = |dir: &Path| -> (String, Option<String>) {
            let out = |args: &[&str]| {
                let o = std::process::Command::new("git")
                    .arg("-C")
                    .arg(dir)
                    .args(args)
                    .output()
                    .unwrap();
                o.status
                    .success()
                    .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
            };
            (
                out(&["rev-parse", "HEAD^{commit}"]).unwrap(),
                out(&["symbolic-ref", "--quiet", "--short", "HEAD"]),
            )
        };
        let loose = head(&w).expect("a loose branch is read");
        assert_eq!(loose, git_says(&w));
        assert_eq!(loose.1.as_deref(), Some("trunk"));
        crate::test_sh(&w, "git pack-refs --all");
        assert!(!w.join(".git/refs/heads/trunk").exists());
        assert_eq!(head(&w).expect("a packed branch is read"), git_says(&w));
        crate::test_sh(&w, "git checkout -q --detach");
        let detached = head(&w).expect("a detached HEAD is read");
        assert_eq!(detached, git_says(&w));
        assert_eq!(detached.1, None);
        crate::test_sh(tmp.path(), "git init -q -b empty u");
        assert_eq!(head(&tmp.path().join("u")), None, "unborn: git decides");
        let repo = crate::Repo::open(&tmp.path().join("u")).unwrap();
        let err = repo.resolve("HEAD").unwrap_err().to_string();
        assert!(err.contains("no commits yet"), "{err}");
    }
}
