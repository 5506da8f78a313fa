//! A commit's tree written into a clean directory straight from the repository's loose objects,
//! as right after a commit: no git process before a run's first step. It writes what `git
//! checkout` would write only where nothing could make git write something else, and leaves
//! the rest to git (which then answers as before):
//!
//! - every object on the way must be a loose object this reader understands (`objects.rs`:
//!   no pack, alternates, replace refs or grafts);
//! - only regular files (`100644`, `100755`) and directories: a symlink or a submodule is git's;
//! - nothing that changes a file on its way out: no `.gitattributes` in the tree, no attributes
//!   file of the repository, the user or the system (a filter such as LFS's applies only
//!   where attributes name it), and no git config that names `autocrlf`, `eol`, `symlinks`,
//!   sparse checkout, attributes files or includes (the repository's, the user's, the
//!   system's), nor config or attributes passed in the environment;
//! - names git would refuse (`.git`, `.`, `..`, empty) and trees over 10,000 entries or 64 MiB
//!   are git's too.
//!
//! Everything is read before the first file is written, so when the answer is git's, the
//! directory is as it was. Files get mode 0666 or 0777 less the umask, as git gives them.

use crate::objects::{self, commit_tree, object, understood};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const MAX_ENTRIES: usize = 10_000;
const MAX_BYTES: usize = 64 << 20;

/// Config words that change what a checkout writes (matched in lower case, anywhere).
const CHECKOUT_CONFIG: &[&str] = &[
    "autocrlf",
    "eol",
    "symlinks",
    "sparse",
    "attributesfile",
    "include",
];

/// A file to write: where, executable or not, its content.
struct File {
    path: PathBuf,
    exec: bool,
    body: Vec<u8>,
}

/// Writes the tree of `commit` into `dest` (an existing directory) from loose objects:
/// `Some(Ok)` written, `Some(Err)` a write failed, `None` git's to do (nothing written).
pub(crate) fn export(git_dir: &Path, commit: &str, dest: &Path) -> Option<std::io::Result<()>> {
    export_as(&User::from_env(), git_dir, commit, dest)
}

/// Where the user's git config and attributes are.
struct User {
    home: Option<PathBuf>,
    xdg: Option<PathBuf>,
}

impl User {
    fn from_env() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let xdg = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".config")));
        User { home, xdg }
    }
}

fn export_as(
    user: &User,
    git_dir: &Path,
    commit: &str,
    dest: &Path,
) -> Option<std::io::Result<()>> {
    // Into an empty directory only: git's checkout overwrites what is there.
    if std::fs::read_dir(dest).ok()?.next().is_some()
        || !understood(git_dir)
        || !plain_checkout(user, git_dir)
    {
        return None;
    }
    let tree = commit_tree(git_dir, commit)?;
    let (dirs, files) = read_tree(git_dir, &tree)?;
    Some(write(dest, &dirs, &files))
}

/// Every directory and file under `tree`, read whole; `None` at anything that is git's.
fn read_tree(git_dir: &Path, tree: &str) -> Option<(Vec<PathBuf>, Vec<File>)> {
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    let mut pending = vec![(PathBuf::new(), tree.to_string())];
    let (mut count, mut bytes) = (0usize, 0usize);
    let mut seen = std::collections::HashSet::new();
    while let Some((at, id)) = pending.pop() {
        let body = object(git_dir, &id, "tree")?;
        for entry in objects::entries(&body)? {
            let (mode, name, id) = (entry.mode, entry.name, entry.id());
            count += 1;
            if count > MAX_ENTRIES || !plain_name(name) {
                return None;
            }
            let path = at.join(std::str::from_utf8(name).ok()?);
            // A name twice in one tree (a damaged or hostile one): git's to refuse.
            if !seen.insert(path.clone()) {
                return None;
            }
            match mode {
                b"40000" => {
                    dirs.push(path.clone());
                    pending.push((path, id));
                }
                b"100644" | b"100755" => {
                    let body = object(git_dir, &id, "blob")?;
                    bytes += body.len();
                    if bytes > MAX_BYTES {
                        return None;
                    }
                    files.push(File {
                        path,
                        exec: mode == b"100755",
                        body,
                    });
                }
                _ => return None, // a symlink or a submodule
            }
        }
    }
    Some((dirs, files))
}

/// A name git writes as it is: not empty, no `/`, `\` or `:`, not `.` or `..`, and not one
/// git treats specially or refuses (`core.protectNTFS`, on by default): `.git`, `.gitmodules`
/// or `.gitattributes` in any case and with trailing dots or spaces, or a short name `git~N`.
fn plain_name(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    let mut trimmed = lower.as_slice();
    while let Some(rest) = trimmed.strip_suffix(b".").or(trimmed.strip_suffix(b" ")) {
        trimmed = rest;
    }
    !name.is_empty()
        && !name.iter().any(|b| matches!(b, b'/' | b'\\' | b':'))
        && !matches!(lower.as_slice(), b"." | b"..")
        && !matches!(trimmed, b".git" | b".gitattributes" | b".gitmodules")
        && !lower.starts_with(b"git~")
}

/// Whether no config or attributes file could change what a checkout writes.
fn plain_checkout(user: &User, git_dir: &Path) -> bool {
    let from_env = std::env::vars_os().any(|(k, _)| {
        let k = k.to_string_lossy();
        k.starts_with("GIT_CONFIG") || k == "GIT_ATTR_SOURCE" || k == "GIT_ATTR_NOSYSTEM"
    });
    if from_env {
        return false;
    }
    let mut attributes = vec![
        git_dir.join("info/attributes"),
        PathBuf::from("/etc/gitattributes"),
    ];
    let mut configs = vec![git_dir.join("config"), PathBuf::from("/etc/gitconfig")];
    if let Some(x) = &user.xdg {
        attributes.push(x.join("git/attributes"));
        configs.push(x.join("git/config"));
    }
    if let Some(h) = &user.home {
        configs.push(h.join(".gitconfig"));
    }
    if attributes.iter().any(|a| a.exists()) {
        return false;
    }
    configs.iter().all(|c| match std::fs::read(c) {
        Ok(text) => {
            let text = text.to_ascii_lowercase();
            !CHECKOUT_CONFIG
                .iter()
                .any(|w| text.windows(w.len()).any(|x| x == w.as_bytes()))
        }
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    })
}

fn write(dest: &Path, dirs: &[PathBuf], files: &[File]) -> std::io::Result<()> {
    for d in dirs {
        std::fs::create_dir_all(dest.join(d))?;
    }
    for f in files {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if f.exec { 0o777 } else { 0o666 })
            .open(dest.join(&f.path))?;
        out.write_all(&f.body)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::is_sha1;
    use crate::{Repo, test_sh};
    use std::os::unix::fs::PermissionsExt;

    /// Every path under `dir` with its mode bits and content (a symlink's target).
    fn listing(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let meta = std::fs::symlink_metadata(e.path()).unwrap();
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                let mode = meta.permissions().mode() & 0o7777;
                if meta.is_dir() {
                    out.push((rel, mode, Vec::new()));
                    pending.push(e.path());
                } else if meta.file_type().is_symlink() {
                    let to = std::fs::read_link(e.path()).unwrap();
                    out.push((rel, 0, to.display().to_string().into_bytes()));
                } else {
                    out.push((rel, mode, std::fs::read(e.path()).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    fn head(dir: &Path) -> String {
        let out = crate::git(dir)
            .args(["rev-parse", "HEAD"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    type Listing = Vec<(String, u32, Vec<u8>)>;

    /// What git's checkout writes, beside what this module writes (`None`: git's), for a user
    /// whose home is `tmp/home`.
    fn both(dir: &Path, tmp: &Path, n: &str) -> (Listing, Option<Listing>) {
        let commit = head(dir);
        let by_git = tmp.join(format!("git-{n}"));
        Repo::open(dir).unwrap().export(&commit, &by_git).unwrap();
        let mine = tmp.join(format!("mine-{n}"));
        std::fs::create_dir_all(&mine).unwrap();
        let user = User {
            home: Some(tmp.join("home")),
            xdg: None,
        };
        let wrote = export_as(&user, &dir.join(".git"), &commit, &mine);
        match wrote {
            Some(r) => {
                r.unwrap();
                (listing(&by_git), Some(listing(&mine)))
            }
            None => {
                assert!(listing(&mine).is_empty(), "{n}: written though git's to do");
                (listing(&by_git), None)
            }
        }
    }

    #[test]
    fn loose_trees_are_written_as_git_writes_them_and_the_rest_is_left_to_git() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        std::fs::create_dir_all(&dir).unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        test_sh(
            &dir,
            "git init -q -b main && git config user.email a@a && git config user.name a && \
             mkdir -p sub/deeper 'with space' && printf 'stages: []\\n' > gantry.yml && \
             printf 'x' > sub/deeper/f.yml && printf '#!/bin/sh\\n' > run.sh && chmod +x run.sh && \
             printf '\\000\\001binary\\r\\n' > 'with space/b.bin' && : > empty && \
             git add -A && git commit -qm one",
        );
        let (git, mine) = both(&dir, tmp.path(), "plain");
        assert_eq!(mine.as_ref(), Some(&git), "the same tree, modes and bytes");
        assert!(git.iter().any(|(p, m, _)| p == "run.sh" && m & 0o100 != 0));

        // A symlink: git's.
        test_sh(
            &dir,
            "ln -s gantry.yml link.yml && git add -A && git commit -qm link",
        );
        assert_eq!(both(&dir, tmp.path(), "link").1, None);
        test_sh(&dir, "git rm -q link.yml && git commit -qm unlink");
        assert!(both(&dir, tmp.path(), "unlinked").1.is_some());

        // Attributes in the tree or the repository, or config that converts: git's.
        test_sh(
            &dir,
            "printf '* text eol=crlf\\n' > .gitattributes && git add -A && git commit -qm attrs",
        );
        assert_eq!(both(&dir, tmp.path(), "attrs").1, None);
        test_sh(&dir, "git rm -q .gitattributes && git commit -qm noattrs");
        test_sh(
            &dir,
            "mkdir -p .git/info && printf '*.yml eol=crlf\\n' > .git/info/attributes",
        );
        assert_eq!(both(&dir, tmp.path(), "info-attrs").1, None);
        test_sh(
            &dir,
            "rm .git/info/attributes && git config core.autocrlf true",
        );
        assert_eq!(both(&dir, tmp.path(), "autocrlf").1, None);
        test_sh(&dir, "git config --unset core.autocrlf");
        let (git, mine) = both(&dir, tmp.path(), "again");
        assert_eq!(mine, Some(git));

        // The user's config that converts, or the user's attributes: git's. A filter alone
        // (as `git lfs install` writes) changes nothing without attributes.
        std::fs::write(
            home.join(".gitconfig"),
            "[filter \"lfs\"]\n\tclean = git-lfs clean -- %f\n",
        )
        .unwrap();
        assert!(both(&dir, tmp.path(), "lfs-installed").1.is_some());
        std::fs::write(home.join(".gitconfig"), "[core]\n\tautoCRLF = input\n").unwrap();
        assert_eq!(both(&dir, tmp.path(), "user-autocrlf").1, None);
        std::fs::remove_file(home.join(".gitconfig")).unwrap();
        std::fs::create_dir_all(home.join(".config/git")).unwrap();
        std::fs::write(home.join(".config/git/attributes"), "* text\n").unwrap();
        let user = User {
            home: Some(home.clone()),
            xdg: Some(home.join(".config")),
        };
        assert!(!plain_checkout(&user, &dir.join(".git")));

        // Into a directory that holds something: git's (its checkout overwrites).
        let full = tmp.path().join("full");
        std::fs::create_dir_all(&full).unwrap();
        std::fs::write(full.join("gantry.yml"), "mine").unwrap();
        let user = User {
            home: Some(home.clone()),
            xdg: None,
        };
        assert!(export_as(&user, &dir.join(".git"), &head(&dir), &full).is_none());
        assert_eq!(
            std::fs::read_to_string(full.join("gantry.yml")).unwrap(),
            "mine"
        );

        // Packed: git's.
        test_sh(&dir, "git gc -q --prune=now");
        assert_eq!(both(&dir, tmp.path(), "packed").1, None);
    }

    /// A tree that names one file twice (as only a hostile or damaged repository has): git's.
    #[test]
    fn a_tree_naming_a_file_twice_is_left_to_git() {
        use std::process::Stdio;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        test_sh(
            dir,
            "git init -q -b main && printf x | git hash-object -w --stdin > blob",
        );
        let blob = std::fs::read_to_string(dir.join("blob")).unwrap();
        let raw: Vec<u8> = (0..20)
            .map(|i| u8::from_str_radix(&blob.trim()[i * 2..i * 2 + 2], 16).unwrap())
            .collect();
        let mut tree = Vec::new();
        for _ in 0..2 {
            tree.extend_from_slice(b"100644 a\0");
            tree.extend_from_slice(&raw);
        }
        let mut child = crate::git(dir)
            .args(["hash-object", "-t", "tree", "-w", "--literally", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&tree).unwrap();
        let out = child.wait_with_output().unwrap();
        let tree = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let out = crate::git(dir)
            .args([
                "-c",
                "user.name=a",
                "-c",
                "user.email=a@a",
                "commit-tree",
                &tree,
                "-m",
                "twice",
            ])
            .output()
            .unwrap();
        let commit = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(is_sha1(&tree) && is_sha1(&commit), "{tree} {commit}");
        let git_dir = dir.join(".git");
        assert!(object(&git_dir, &commit, "commit").is_some());
        let (_, files) = {
            // One level: the tree's two entries are both there to be read.
            let body = object(&git_dir, &tree, "tree").unwrap();
            ((), body.windows(2).filter(|w| w == b" a").count())
        };
        assert_eq!(files, 2);
        let dest = dir.join("out");
        std::fs::create_dir_all(&dest).unwrap();
        let user = User {
            home: Some(dir.join("home")),
            xdg: None,
        };
        assert!(export_as(&user, &dir.join(".git"), &commit, &dest).is_none());
        assert!(std::fs::read_dir(&dest).unwrap().next().is_none());
    }

    #[test]
    fn names_git_would_not_write_as_they_are_are_left_to_it() {
        for (name, plain) in [
            (&b"gantry.yml"[..], true),
            (b".github", true),
            (b"", false),
            (b".", false),
            (b"..", false),
            (b".git", false),
            (b".GIT", false),
            (b".gitattributes", false),
            (b".gitmodules", false),
            (b".git.", false),
            (b".git ", false),
            (b".Gitattributes..", false),
            (b"GIT~1", false),
            (b"a\\b", false),
            (b"c:", false),
            (b".gitignore", true),
            (b"a.", true),
            (b"a/b", false),
        ] {
            assert_eq!(plain_name(name), plain, "{}", String::from_utf8_lossy(name));
        }
    }
}
