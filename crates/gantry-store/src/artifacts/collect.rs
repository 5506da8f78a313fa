//! Turns an artifact's declared paths (files, directories, globs) into the list of entries to
//! pack, refusing anything that would leave the workspace: `..`, absolute paths, and symlinks
//! whose target lies outside it.

use anyhow::{Context, Result, bail};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        executable: bool,
    },
    Dir,
    /// A symlink whose target stays inside the workspace (kept as a link).
    Symlink(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the workspace, with `/` separators.
    pub rel: PathBuf,
    pub abs: PathBuf,
    pub kind: EntryKind,
}

/// What to pack: either one plain file (stored as is) or a tree of entries (tar.zst).
#[derive(Debug)]
pub enum Collected {
    SingleFile(Entry),
    Tree(Vec<Entry>),
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Collects `paths` (relative to `workspace`) into entries, sorted, deduplicated.
pub fn collect(workspace: &Path, paths: &[String]) -> Result<Collected> {
    let root = workspace
        .canonicalize()
        .with_context(|| format!("workspace {} is not readable", workspace.display()))?;
    let mut entries: Vec<Entry> = Vec::new();
    for spec in paths {
        lexically_inside(spec)?;
        let trimmed = spec.trim_end_matches('/');
        let matches: Vec<PathBuf> = if is_glob(trimmed) {
            let pattern = root.join(trimmed);
            let found: Vec<PathBuf> = glob::glob(&pattern.to_string_lossy())
                .with_context(|| format!("artifact path `{spec}` is not a valid pattern"))?
                .filter_map(Result::ok)
                .collect();
            if found.is_empty() {
                bail!("artifact path `{spec}` matches nothing in the workspace");
            }
            found
        } else {
            let p = root.join(trimmed);
            if p.symlink_metadata().is_err() {
                bail!("artifact path `{spec}` does not exist in the workspace");
            }
            vec![p]
        };
        for m in matches {
            walk(&root, &m, spec, &mut entries)?;
        }
    }
    entries.sort_by(|a, b| a.rel.cmp(&b.rel));
    entries.dedup_by(|a, b| a.rel == b.rel);
    if paths.len() == 1
        && !is_glob(&paths[0])
        && entries.len() == 1
        && matches!(entries[0].kind, EntryKind::File { .. })
    {
        return Ok(Collected::SingleFile(entries.remove(0)));
    }
    Ok(Collected::Tree(entries))
}

fn lexically_inside(spec: &str) -> Result<()> {
    let p = Path::new(spec);
    if p.is_absolute()
        || p.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        })
    {
        bail!("artifact path `{spec}` leaves the workspace");
    }
    Ok(())
}

fn walk(root: &Path, path: &Path, spec: &str, out: &mut Vec<Entry>) -> Result<()> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| anyhow::anyhow!("artifact path `{spec}` leaves the workspace"))?
        .to_path_buf();
    let meta = path
        .symlink_metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path)?;
        let resolved = path.parent().unwrap_or(root).join(&target);
        let inside = match resolved.canonicalize() {
            Ok(real) => real.starts_with(root),
            // A dangling link: judge its text.
            Err(_) => normalize(&resolved).starts_with(root),
        };
        if !inside {
            bail!(
                "artifact path `{spec}`: `{}` is a symlink to `{}`, outside the workspace",
                rel.display(),
                target.display()
            );
        }
        out.push(Entry {
            rel,
            abs: path.to_path_buf(),
            kind: EntryKind::Symlink(target),
        });
    } else if ft.is_dir() {
        if !rel.as_os_str().is_empty() {
            out.push(Entry {
                rel,
                abs: path.to_path_buf(),
                kind: EntryKind::Dir,
            });
        }
        let mut children: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        children.sort();
        for child in children {
            walk(root, &child, spec, out)?;
        }
    } else if ft.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let executable = meta.permissions().mode() & 0o111 != 0;
        out.push(Entry {
            rel,
            abs: path.to_path_buf(),
            kind: EntryKind::File { executable },
        });
    }
    // Sockets, fifos and devices are not artifacts; they are skipped.
    Ok(())
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}
