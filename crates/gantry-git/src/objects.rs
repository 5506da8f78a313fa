//! A file of a commit read straight from the repository's loose objects, as right after a
//! commit: no git process before a run's first step. The commit, each tree on the path and the
//! blob must be loose objects of a SHA-1 repository this reader understands; anything else —
//! a packed object, alternates, replace refs or grafts (which change what git reads), a
//! symlink or a submodule on the path, a damaged object — is left to `git cat-file`, which
//! answers as before.

use std::io::Read;
use std::path::Path;

/// The largest object this reader inflates; a bigger one is git's to read.
const MAX_OBJECT: u64 = 16 << 20;

/// What the loose objects say of `path` at `commit`: `Some(Some(bytes))` the file's content,
/// `Some(None)` no such file (every tree on the way was read), `None` ask git.
pub(crate) fn read_file(git_dir: &Path, commit: &str, path: &str) -> Option<Option<Vec<u8>>> {
    if !understood(git_dir) {
        return None;
    }
    let mut id = commit_tree(git_dir, commit)?;
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    for (i, part) in parts.iter().enumerate() {
        let tree = object(git_dir, &id, "tree")?;
        let Some((mode, next)) = entry(&tree, part.as_bytes())? else {
            return Some(None);
        };
        let last = i + 1 == parts.len();
        match (last, mode) {
            (false, b"40000") => id = next,
            (false, _) => return Some(None), // a file where a directory was named
            (true, b"100644" | b"100755") => return Some(Some(object(git_dir, &next, "blob")?)),
            (true, b"40000") => return Some(None), // `cat-file blob` of a tree fails too
            _ => return None,                      // a symlink or a submodule: git decides
        }
    }
    None
}

/// The tree of loose commit `commit`, when both ids are whole SHA-1s; `None` otherwise.
pub(crate) fn commit_tree(git_dir: &Path, commit: &str) -> Option<String> {
    if !is_sha1(commit) {
        return None;
    }
    let body = object(git_dir, commit, "commit")?;
    let tree = std::str::from_utf8(&body)
        .ok()?
        .lines()
        .next()?
        .strip_prefix("tree ")?;
    is_sha1(tree).then(|| tree.to_string())
}

/// Whether nothing in the repository changes what git would read for an object id.
pub(crate) fn understood(git_dir: &Path) -> bool {
    let changed_by_env = [
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_REPLACE_REF_BASE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_GRAFT_FILE",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    if changed_by_env
        || git_dir.join("objects/info/alternates").exists()
        || git_dir.join("info/grafts").exists()
    {
        return false;
    }
    let replaced = std::fs::read_dir(git_dir.join("refs/replace"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
        || std::fs::read_to_string(git_dir.join("packed-refs"))
            .map(|p| p.contains(" refs/replace/"))
            .unwrap_or(false);
    !replaced
}

pub(crate) fn is_sha1(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The body of loose object `id`, when it is of `kind` and whole; `None` otherwise.
pub(crate) fn object(git_dir: &Path, id: &str, kind: &str) -> Option<Vec<u8>> {
    let file = std::fs::File::open(git_dir.join("objects").join(&id[..2]).join(&id[2..])).ok()?;
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(file)
        .take(MAX_OBJECT + 64)
        .read_to_end(&mut raw)
        .ok()?;
    let nul = raw.iter().position(|b| *b == 0)?;
    let header = std::str::from_utf8(&raw[..nul]).ok()?;
    let (found, size) = header.split_once(' ')?;
    let size: usize = size.parse().ok()?;
    if found != kind {
        return None;
    }
    let body = raw.split_off(nul + 1);
    (body.len() == size).then_some(body)
}

/// One entry of a tree: its mode, its name and the object id it names (20 bytes).
pub(crate) struct Entry<'t> {
    pub mode: &'t [u8],
    pub name: &'t [u8],
    raw: &'t [u8],
}

impl Entry<'_> {
    /// The object id, in hex.
    pub fn id(&self) -> String {
        self.raw.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The entries of a tree's body, in order; `None` when it is not whole.
pub(crate) fn entries(tree: &[u8]) -> Option<Vec<Entry<'_>>> {
    let mut out = Vec::new();
    let mut rest = tree;
    while !rest.is_empty() {
        let space = rest.iter().position(|b| *b == b' ')?;
        let nul = space + rest[space..].iter().position(|b| *b == 0)?;
        let raw = rest.get(nul + 1..nul + 21)?;
        out.push(Entry {
            mode: &rest[..space],
            name: &rest[space + 1..nul],
            raw,
        });
        rest = &rest[nul + 21..];
    }
    Some(out)
}

/// The mode and object id of entry `name` of a tree's body; `Some(None)` when it has none.
fn entry<'t>(tree: &'t [u8], name: &[u8]) -> Option<Option<(&'t [u8], String)>> {
    Some(
        entries(tree)?
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| (e.mode, e.id())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{git, test_sh};

    /// What git's `cat-file blob COMMIT:PATH` says, as `Option`.
    fn git_says(dir: &Path, commit: &str, path: &str) -> Option<Vec<u8>> {
        let out = git(dir)
            .args(["cat-file", "blob", &format!("{commit}:{path}")])
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }

    fn head(dir: &Path) -> String {
        let out = git(dir).args(["rev-parse", "HEAD"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn loose_objects_read_as_git_reads_them_and_the_rest_is_left_to_git() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        test_sh(
            dir,
            "git init -q -b main && git config user.email a@a && git config user.name a && \
             mkdir -p sub/deeper && printf 'stages: []\\n' > gantry.yml && \
             printf 'x' > sub/deeper/f.yml && printf '#!/bin/sh\\n' > run.sh && chmod +x run.sh && \
             ln -s gantry.yml link.yml && git add -A && git commit -qm one",
        );
        let git_dir = dir.join(".git");
        let commit = head(dir);
        for path in [
            "gantry.yml",
            "sub/deeper/f.yml",
            "run.sh",
            "missing.yml",
            "sub/none",
            "sub",
        ] {
            assert_eq!(
                read_file(&git_dir, &commit, path),
                Some(git_says(dir, &commit, path)),
                "{path}"
            );
        }
        // A file where a directory is named: no such file, for both.
        assert_eq!(read_file(&git_dir, &commit, "gantry.yml/x"), Some(None));
        assert_eq!(git_says(dir, &commit, "gantry.yml/x"), None);
        // A symlink, odd paths, a short or unknown id: git's to answer.
        assert_eq!(read_file(&git_dir, &commit, "link.yml"), None);
        assert_eq!(read_file(&git_dir, &commit, "sub/../gantry.yml"), None);
        assert_eq!(read_file(&git_dir, &commit[..12], "gantry.yml"), None);
        assert_eq!(read_file(&git_dir, &"0".repeat(40), "gantry.yml"), None);

        // Packed: left to git.
        test_sh(dir, "git gc -q --prune=now");
        assert_eq!(read_file(&git_dir, &commit, "gantry.yml"), None);
        // A new commit is loose again, though a tree under it may be packed.
        test_sh(
            dir,
            "printf 'stages: [1]\\n' > gantry.yml && git commit -qam two",
        );
        let two = head(dir);
        assert_eq!(
            read_file(&git_dir, &two, "gantry.yml"),
            Some(git_says(dir, &two, "gantry.yml"))
        );
        assert_eq!(read_file(&git_dir, &two, "sub/deeper/f.yml"), None);

        // A replace ref changes what git reads: left to git.
        test_sh(dir, &format!("git replace {two} {commit}"));
        assert_eq!(read_file(&git_dir, &two, "gantry.yml"), None);
    }
}
