//! Kept releases verified once: when a release directory is unpacked (and its digest checked by
//! the unpacking), gantry writes down what it checked — the digest, the stored object's stamp
//! (size, change time and file id, from the artifact store) and a listing of the tree (every
//! entry's path, type, size, modification and change times, and mode). A rollback compares
//! that record with what is there now, which costs a `stat` per file instead of reading and
//! hashing the artifact, whatever its size.
//!
//! What the comparison detects: a release directory that is gone; any file or folder added,
//! removed or renamed; a file whose content, size, mode or type changed (writing a file sets
//! its change time, and no tool can set that time back: `touch -d` sets the modification time
//! and thereby changes the change time too); a changed symlink; a stored object replaced,
//! rewritten or removed (its stamp changes, and the artifact is then hashed in full as
//! before). What it does not: a change made with the system clock set back to the exact
//! nanosecond, or by writing the disk under the filesystem — only hashing (or fs-verity)
//! catches those.

use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What was checked when a release directory was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub digest: String,
    /// The artifact store's stamp of the object then (`None`: the store has none).
    pub object: Option<String>,
    /// One line per entry of the tree, sorted.
    pub tree: String,
}

/// How a kept release compares with its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// Directory and stored object are as verified: nothing to read.
    Intact,
    /// No usable record (made before records existed, or for another digest): verify in full.
    Unrecorded,
    /// No directory and no record (never unpacked here): verify the artifact, unpack it again.
    Missing,
    /// The stored object is not known to be as it was verified (its stamp changed, cannot be
    /// read, or the store has none): confirm it the store's way before using it.
    ObjectChanged,
    /// The directory was changed since it was verified: what changed first.
    Changed(String),
}

/// Where a release's record lives: beside its directory, `<n>.verified`.
pub fn record_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    dir.with_file_name(name)
}

/// Lists a tree: `path\ttype\tsize\tmtime.ctime\tmode[\tlink]` per entry, sorted by path, for
/// files, symlinks and folders (a folder's size and mtime are left out: adding or removing an
/// entry shows as that entry).
pub fn listing(dir: &Path) -> std::io::Result<String> {
    let mut entries: Vec<String> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            let meta = std::fs::symlink_metadata(dir.join(&rel))?;
            let ft = meta.file_type();
            let mut line = rel.display().to_string();
            let mode = meta.mode() & 0o7777;
            if ft.is_dir() {
                let _ = write!(line, "\td\t\t\t{mode:o}");
                stack.push(rel);
            } else if ft.is_symlink() {
                let to = std::fs::read_link(dir.join(&rel))?;
                let _ = write!(line, "\tl\t\t\t\t{}", to.display());
            } else {
                let _ = write!(
                    line,
                    "\tf\t{}\t{}.{}/{}.{}\t{mode:o}",
                    meta.len(),
                    meta.mtime(),
                    meta.mtime_nsec(),
                    meta.ctime(),
                    meta.ctime_nsec()
                );
            }
            entries.push(line);
        }
    }
    entries.sort();
    Ok(entries.join("\n"))
}

/// Writes the record of a directory just unpacked from `digest` (atomically: a temp file
/// renamed over the old record).
pub fn write(dir: &Path, digest: &str, object: Option<&str>) -> std::io::Result<()> {
    let tree = listing(dir)?;
    let text = format!(
        "gantry-verified 1\ndigest {digest}\nobject {}\n{tree}\n",
        object.unwrap_or("-")
    );
    let path = record_path(dir);
    let tmp = path.with_extension("verified.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// Reads a record; `None` when there is none or it cannot be read.
pub fn read(dir: &Path) -> Option<Record> {
    let text = std::fs::read_to_string(record_path(dir)).ok()?;
    let mut lines = text.splitn(4, '\n');
    if lines.next()? != "gantry-verified 1" {
        return None;
    }
    let digest = lines.next()?.strip_prefix("digest ")?.to_string();
    let object = match lines.next()?.strip_prefix("object ")? {
        "-" => None,
        s => Some(s.to_string()),
    };
    let tree = lines
        .next()
        .unwrap_or("")
        .trim_end_matches('\n')
        .to_string();
    Some(Record {
        digest,
        object,
        tree,
    })
}

/// Removes a release's record (the release is retired).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(record_path(dir));
}

/// Compares the kept release in `dir`, made from `digest`, with its record; `object` is the
/// artifact store's stamp of the object now (`Err`: it could not be read, say because it is
/// gone).
pub fn compare(dir: &Path, digest: &str, object: Result<Option<String>, ()>) -> Kept {
    let record = read(dir).filter(|r| r.digest == digest);
    if !dir.is_dir() {
        return match record {
            Some(_) => Kept::Changed("the directory was removed".into()),
            None => Kept::Missing,
        };
    }
    let Some(record) = record else {
        return Kept::Unrecorded;
    };
    match listing(dir) {
        Ok(now) if now == record.tree => {}
        Ok(now) => return Kept::Changed(first_difference(&record.tree, &now)),
        Err(e) => return Kept::Changed(format!("it cannot be read: {e}")),
    }
    match object {
        Ok(Some(now)) if record.object.as_deref() == Some(now.as_str()) => Kept::Intact,
        _ => Kept::ObjectChanged,
    }
}

/// The first entry that differs between two listings, in words.
fn first_difference(was: &str, now: &str) -> String {
    let path = |l: &str| l.split('\t').next().unwrap_or("").to_string();
    let mut a = was.lines().peekable();
    let mut b = now.lines().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => return "its entries changed".into(),
            (Some(x), None) => return format!("{} was removed", path(x)),
            (None, Some(y)) => return format!("{} was added", path(y)),
            (Some(x), Some(y)) if x == y => {
                a.next();
                b.next();
            }
            (Some(x), Some(y)) => {
                let (px, py) = (path(x), path(y));
                return match px.cmp(&py) {
                    std::cmp::Ordering::Equal => format!("{px} was modified"),
                    std::cmp::Ordering::Less => format!("{px} was removed"),
                    std::cmp::Ordering::Greater => format!("{py} was added"),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("3");
        std::fs::create_dir_all(dir.join("dist/lib")).unwrap();
        std::fs::write(dir.join("dist/app"), "v1").unwrap();
        std::fs::write(dir.join("dist/lib/a.py"), "print(1)").unwrap();
        std::os::unix::fs::symlink("app", dir.join("dist/current")).unwrap();
        (t, dir)
    }

    fn check(change: impl FnOnce(&Path), object_now: Result<Option<String>, ()>, expect: Kept) {
        let (_t, dir) = tree();
        write(&dir, "sha256:aa", Some("10:1:2")).unwrap();
        change(&dir);
        assert_eq!(compare(&dir, "sha256:aa", object_now), expect);
    }

    fn same() -> Result<Option<String>, ()> {
        Ok(Some("10:1:2".into()))
    }

    #[test]
    fn a_kept_release_compares_with_what_was_verified() {
        check(|_| {}, same(), Kept::Intact);
        check(|_| {}, Ok(Some("10:9:2".into())), Kept::ObjectChanged);
        check(|_| {}, Err(()), Kept::ObjectChanged);
        check(
            |d| std::fs::remove_dir_all(d).unwrap(),
            same(),
            Kept::Changed("the directory was removed".into()),
        );
        check(
            |d| {
                std::fs::remove_dir_all(d).unwrap();
                remove(d);
            },
            same(),
            Kept::Missing,
        );
        check(remove, same(), Kept::Unrecorded);
        check(
            |d| std::fs::write(d.join("dist/app"), "v1 but longer").unwrap(),
            same(),
            Kept::Changed("dist/app was modified".into()),
        );
        check(
            |d| std::fs::remove_file(d.join("dist/lib/a.py")).unwrap(),
            same(),
            Kept::Changed("dist/lib/a.py was removed".into()),
        );
        check(
            |d| std::fs::write(d.join("dist/b"), "").unwrap(),
            same(),
            Kept::Changed("dist/b was added".into()),
        );
        check(
            |d| {
                use std::os::unix::fs::PermissionsExt;
                let p = std::fs::Permissions::from_mode(0o777);
                std::fs::set_permissions(d.join("dist/app"), p).unwrap()
            },
            same(),
            Kept::Changed("dist/app was modified".into()),
        );
        check(
            |d| {
                std::fs::remove_file(d.join("dist/current")).unwrap();
                std::os::unix::fs::symlink("lib", d.join("dist/current")).unwrap();
            },
            same(),
            Kept::Changed("dist/current was modified".into()),
        );
    }

    #[test]
    fn a_record_of_another_digest_is_no_record() {
        let (_t, dir) = tree();
        write(&dir, "sha256:aa", Some("1:2:3")).unwrap();
        assert_eq!(
            compare(&dir, "sha256:bb", Ok(Some("1:2:3".into()))),
            Kept::Unrecorded
        );
        assert_eq!(
            compare(&dir, "sha256:aa", Ok(Some("1:2:3".into()))),
            Kept::Intact
        );
        // A store without stamps (a bucket) is always asked.
        write(&dir, "sha256:aa", None).unwrap();
        assert_eq!(compare(&dir, "sha256:aa", Ok(None)), Kept::ObjectChanged);
    }
}
