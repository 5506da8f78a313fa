//! Packing: collected entries become one byte stream (the file itself, or a deterministic
//! tar.zst), hashed with sha256 while it is written, so the digest costs no second pass.
//! Deterministic means the same content gives the same digest: entries sorted, times, owners
//! and modes normalised.

use super::collect::{Collected, Entry, EntryKind, collect};
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The inner writer, the digest as `sha256:<hex>`, and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A packed artifact in a temporary file of the staging directory, not yet in any store.
pub struct Staged {
    pub file: tempfile::NamedTempFile,
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

/// Collects `paths` of `workspace` and packs them into a temporary file under `staging`, with
/// the digest computed on the way: one pass, memory flat whatever the size. Not synced: a caller
/// keeping the file syncs it; content already stored is dropped before it reaches the disk.
pub fn pack_staged(workspace: &Path, paths: &[String], staging: &Path) -> Result<Staged> {
    let collected = collect(workspace, paths)?;
    let media_type = match &collected {
        Collected::SingleFile(e) => media_type_of(&e.rel).to_string(),
        Collected::Tree(_) => super::TAR_ZSTD.to_string(),
    };
    let file = staging_file(staging, "pack")?;
    let (_, digest, size) = pack_to(&collected, file.reopen()?)?;
    Ok(Staged {
        file,
        digest,
        size,
        media_type,
    })
}

/// Packs the whole of `dir` as a tree (tar.zst, whatever it holds: one file too) into a
/// temporary file under `staging`: a commit's files for a runner.
pub fn pack_dir_staged(dir: &Path, staging: &Path) -> Result<Staged> {
    let collected = match collect(dir, &[".".to_string()])? {
        Collected::SingleFile(entry) => Collected::Tree(vec![entry]),
        tree => tree,
    };
    let file = staging_file(staging, "pack")?;
    let (_, digest, size) = pack_to(&collected, file.reopen()?)?;
    Ok(Staged {
        file,
        digest,
        size,
        media_type: super::TAR_ZSTD.to_string(),
    })
}

/// A new file in the staging directory, named `{what}-{pid}-…` so that a later start can tell
/// whether the process that made it is still there.
pub fn staging_file(staging: &Path, what: &str) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{what}-{}-", std::process::id()))
        .tempfile_in(staging)
        .with_context(|| format!("creating a temporary file in {}", staging.display()))
}

/// Removes staging files left by a process killed while packing or downloading: those whose
/// process is gone, and any nobody has written to for `idle` (a process id can be reused).
/// Returns how many.
pub fn clean_staging(staging: &Path, idle: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(staging) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner_gone = name
            .split('-')
            .nth(1)
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
        let stale = owner_gone
            || entry
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= idle);
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Writes the collected entries to `out`; returns the digest and size of what was written.
pub fn pack_to(collected: &Collected, out: File) -> Result<(File, String, u64)> {
    let mut w = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, out));
    match collected {
        Collected::SingleFile(entry) => {
            let mut f = File::open(&entry.abs)
                .with_context(|| format!("reading {}", entry.abs.display()))?;
            io::copy(&mut f, &mut w)?;
        }
        Collected::Tree(entries) => {
            let mut enc = zstd::stream::write::Encoder::new(&mut w, 1)?;
            // Compression on worker threads while this one reads files, hashes and writes.
            // zstd's output is the same for any number of workers (>= 1), so digests do not
            // depend on the machine.
            enc.multithread(compression_workers())?;
            {
                let mut tar = tar::Builder::new(&mut enc);
                tar.mode(tar::HeaderMode::Deterministic);
                tar.follow_symlinks(false);
                for e in entries {
                    append(&mut tar, e)?;
                }
                tar.finish()?;
            }
            enc.finish()?;
        }
    }
    w.flush()?;
    let (buf, digest, size) = w.finish();
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    Ok((file, digest, size))
}

fn compression_workers() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8) as u32)
}

fn append<W: Write>(tar: &mut tar::Builder<W>, e: &Entry) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    match &e.kind {
        EntryKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &e.rel, io::empty())?;
        }
        EntryKind::File { executable } => {
            let f = File::open(&e.abs).with_context(|| format!("reading {}", e.abs.display()))?;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if *executable { 0o755 } else { 0o644 });
            header.set_size(f.metadata()?.len());
            tar.append_data(&mut header, &e.rel, f)?;
        }
        EntryKind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &e.rel, target)?;
        }
    }
    Ok(())
}

/// A media type for a single stored file, from its name.
pub fn media_type_of(path: &Path) -> &'static str {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let table: &[(&str, &str)] = &[
        (".tar.gz", "application/gzip"),
        (".tgz", "application/gzip"),
        (".gz", "application/gzip"),
        (".tar.zst", "application/zstd"),
        (".zst", "application/zstd"),
        (".tar", "application/x-tar"),
        (".zip", "application/zip"),
        (".json", "application/json"),
        (".html", "text/html"),
        (".txt", "text/plain"),
        (".md", "text/markdown"),
        (".js", "text/javascript"),
        (".wasm", "application/wasm"),
        (".whl", "application/zip"),
        (".jar", "application/java-archive"),
        (".deb", "application/vnd.debian.binary-package"),
    ];
    table
        .iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map_or("application/octet-stream", |(_, t)| t)
}
