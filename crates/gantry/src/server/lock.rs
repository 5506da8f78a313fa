//! One server per data directory. A server holds an exclusive `flock` on `server.lock` in its
//! data directory for as long as it lives (the kernel drops it the moment the process dies,
//! kill -9 included), with its pid written inside. A second server on the same directory is
//! refused before it touches anything — no recovery, no release stopped, no port bound, no
//! `server.json` written or removed — naming the holder's pid, the address it serves and the
//! directory.

use anyhow::{Context, Result, anyhow};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file in a data directory.
pub const LOCK_FILE: &str = "server.lock";

/// Held while a server runs; dropping it lets the next server in.
pub struct ServerLock {
    _lock: Flock<File>,
    dir: PathBuf,
}

impl ServerLock {
    /// Takes the data directory `dir` (which must exist) for this process, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<ServerLock> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(held(dir)),
            Err((_, e)) => return Err(anyhow!("locking {}: {e}", path.display())),
        };
        // Only the holder writes its pid, so a reader never sees another's half-written one.
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| write!(lock, "{}", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(ServerLock {
            _lock: lock,
            dir: dir.to_path_buf(),
        })
    }

    /// Removes `file` (in the data directory) only if this server wrote it: the `pid` it
    /// records is this process's.
    pub fn remove_own(&self, file: &str) {
        let path = self.dir.join(file);
        let own = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["pid"].as_u64() == Some(u64::from(std::process::id())));
        if own {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The refusal: who holds `dir`, where it serves, and what to do.
fn held(dir: &Path) -> anyhow::Error {
    let recorded = std::fs::read_to_string(dir.join(crate::client::SERVER_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let pid = std::fs::read_to_string(dir.join(LOCK_FILE))
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .or_else(|| {
            recorded
                .as_ref()
                .and_then(|v| v["pid"].as_u64())
                .map(|p| p as u32)
        });
    let url = recorded
        .as_ref()
        .and_then(|v| v["url"].as_str().map(str::to_string));
    let who = match (pid, url) {
        (Some(pid), Some(url)) => format!("gantry server pid {pid}, serving {url}"),
        (Some(pid), None) => format!("gantry server pid {pid}, still starting"),
        (None, _) => "another gantry server".to_string(),
    };
    let stop = pid
        .map(|p| format!("stop it first (kill -TERM {p})"))
        .unwrap_or_else(|| "stop it first".to_string());
    anyhow!(
        "the data directory {} is in use by {who}: one server manages a data directory's releases; {stop}, or give this one another data directory (`data_dir` in gantry.toml, or --data-dir)",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServerLock::acquire(dir.path()).unwrap();
        std::fs::write(
            dir.path().join(crate::client::SERVER_FILE),
            format!(
                r#"{{"url":"http://127.0.0.1:4567","pid":{}}}"#,
                std::process::id()
            ),
        )
        .unwrap();
        // flock is per open file description: a second open in this process conflicts too.
        let Err(e) = ServerLock::acquire(dir.path()) else {
            panic!("a second lock was granted");
        };
        let text = e.to_string();
        let pid = std::process::id();
        assert!(
            text.contains(&format!(
                "in use by gantry server pid {pid}, serving http://127.0.0.1:4567"
            )),
            "{text}"
        );
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        drop(first);
        let again = ServerLock::acquire(dir.path()).unwrap();
        again.remove_own(crate::client::SERVER_FILE);
        assert!(!dir.path().join(crate::client::SERVER_FILE).exists());
    }

    #[test]
    fn a_server_file_another_process_wrote_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let lock = ServerLock::acquire(dir.path()).unwrap();
        let file = dir.path().join(crate::client::SERVER_FILE);
        std::fs::write(&file, r#"{"url":"http://127.0.0.1:1","pid":1}"#).unwrap();
        lock.remove_own(crate::client::SERVER_FILE);
        assert!(file.exists());
    }
}
