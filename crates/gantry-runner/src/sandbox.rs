//! The boundary between a step and gantry itself. A sandboxed step (Linux Landlock, applied to
//! its shell and inherited by everything it starts) may do anything with the file system except
//! reach what [`Sandbox::hidden`] names — gantry's data directory (the database with every
//! project's logs, the admin token, the share key, the artifact store, other runs' workspaces)
//! and the secrets file — while its own workspace and private temporary directory (both inside
//! the data directory) stay fully its own.
//!
//! Landlock only grants, so "everything but" is built as a walk: beside each directory on the
//! way from `/` down to a hidden path, every other entry is granted whole; the directories on
//! the way themselves get no right (a step cannot list, create or remove anything directly in
//! them: temporary files go to `$TMPDIR`, which gantry points at the step's private directory).
//! A symbolic link on the way that leads into a hidden path is not granted. Landlock also
//! forbids mounts and sets no-new-privileges: tools that mount (a local `podman build`) or
//! need setuid do not work in a sandboxed step, which is why the server's `[runner] sandbox`
//! can be turned off by its operator (never by a pipeline file).
//!
//! Network access is not restricted.

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus,
};
use std::path::{Path, PathBuf};

/// What sandboxed steps must not reach.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Absolute paths hidden from steps, with everything beneath them.
    pub hidden: Vec<PathBuf>,
}

/// A ruleset ready to be applied in a step's process before it runs the step.
pub struct Prepared(Option<RulesetCreated>);

impl Prepared {
    /// Applies the ruleset to the calling process (the forked step, before exec). Only raw
    /// system calls: safe between fork and exec.
    pub fn apply(&mut self) -> std::io::Result<()> {
        let Some(ruleset) = self.0.take() else {
            return Ok(());
        };
        match ruleset.restrict_self() {
            Ok(status) if status.ruleset == RulesetStatus::NotEnforced => Err(
                std::io::Error::other("Landlock is not available: the sandbox was not applied"),
            ),
            Ok(_) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }
}

const ABI_TARGET: ABI = ABI::V5;

/// Whether this kernel enforces Landlock (the sandbox cannot be applied otherwise).
pub fn available() -> bool {
    // ABI version query: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION).
    let version = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    version >= 1
}

impl Sandbox {
    /// What a step whose own places are `own` (its workspace and temporary directory) is
    /// granted: everything but the hidden paths, and `own` whole. Walked once per job attempt;
    /// each step builds its ruleset from it ([`Grants::prepare`]).
    pub fn grants(&self, own: &[&Path]) -> Grants {
        let hidden: Vec<PathBuf> = self
            .hidden
            .iter()
            .map(|h| h.canonicalize().unwrap_or_else(|_| h.clone()))
            .collect();
        let mut granted: Vec<PathBuf> = Vec::new();
        grant_all_but(Path::new("/"), &hidden, &mut granted);
        granted.extend(own.iter().map(|p| p.to_path_buf()));
        Grants(granted)
    }
}

/// The paths a sandboxed step may use, each with everything beneath it.
#[derive(Debug, Clone)]
pub struct Grants(Vec<PathBuf>);

impl Grants {
    /// The ruleset, ready to be applied in a step's process before it runs the step.
    pub fn prepare(&self) -> std::io::Result<Prepared> {
        let all = AccessFs::from_all(ABI_TARGET);
        let ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(all)
            .and_then(|r| r.create())
            .map_err(|e| std::io::Error::other(format!("creating the step's sandbox: {e}")))?;
        let mut ruleset = ruleset.set_compatibility(CompatLevel::BestEffort);
        for path in &self.0 {
            // Gone since the walk (or unreadable): nothing to grant.
            let Ok(fd) = PathFd::new(path) else {
                continue;
            };
            let access = if path.is_dir() {
                all
            } else {
                all & AccessFs::from_file(ABI_TARGET)
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| {
                    std::io::Error::other(format!("sandbox rule for {}: {e}", path.display()))
                })?;
        }
        Ok(Prepared(Some(ruleset)))
    }
}

/// Adds to `out` every entry of `dir` that neither is nor leads to a hidden path, walking into
/// those that lead to one.
fn grant_all_but(dir: &Path, hidden: &[PathBuf], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if hidden.iter().any(|h| h == &path) {
            continue;
        }
        if hidden.iter().any(|h| h.starts_with(&path)) {
            grant_all_but(&path, hidden, out);
            continue;
        }
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if is_link
            && let Ok(target) = path.canonicalize()
            && hidden
                .iter()
                .any(|h| target.starts_with(h) || h.starts_with(&target))
        {
            continue;
        }
        out.push(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_grants_the_siblings_on_the_way_and_nothing_hidden() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().canonicalize().unwrap();
        for d in ["a/data/work", "a/repo", "b"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("a/file"), "x").unwrap();
        std::os::unix::fs::symlink(r.join("a/data"), r.join("a/into-data")).unwrap();
        std::os::unix::fs::symlink(r.join("b"), r.join("a/to-b")).unwrap();
        let mut out = Vec::new();
        grant_all_but(&r, &[r.join("a/data")], &mut out);
        out.sort();
        assert_eq!(
            out,
            vec![
                r.join("a/file"),
                r.join("a/repo"),
                r.join("a/to-b"),
                r.join("b")
            ]
        );
    }
}
