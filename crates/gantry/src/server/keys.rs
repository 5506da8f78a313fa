//! The data directory's keys: the admin token the CLI on this machine uses, and the key share
//! links are signed with. Both are made on first start and kept with mode 0600 — the share key
//! in the database instead when servers share one (state in PostgreSQL).

use crate::client::ADMIN_TOKEN_FILE;
use anyhow::{Context as _, anyhow};
use gantry_api::auth::{generate_token, hash_token};
use gantry_engine::ports::StateStore;
use gantry_model::Role;
use std::io::Write;
use std::path::Path;

/// The shortest share-link key accepted: anything shorter could be guessed.
const MIN_SHARE_KEY: usize = 16;

/// The key share links are signed with: 32 random bytes, made on first start, kept (mode 0600)
/// in the data directory so links survive restarts.
pub fn share_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("share.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = hex::decode(text.trim()).map_err(|_| {
            anyhow!(
                "{} is not a hex key; delete it to make a new one (old links stop working)",
                path.display()
            )
        })?;
        if key.len() < MIN_SHARE_KEY {
            anyhow::bail!(
                "{} holds a key of {} bytes: share links need at least {MIN_SHARE_KEY} (gantry makes 32); delete it to make a new one (old links stop working)",
                path.display(),
                key.len()
            );
        }
        return Ok(key);
    }
    let key = new_key()?;
    write_private(&path, &hex::encode(&key))?;
    Ok(key)
}

/// The share-link key of servers that share a database (state in PostgreSQL): the one stored
/// there, else this data directory's `share.key` (so links made before the move keep
/// working), else a new one, stored for every server. Nothing is written to the data
/// directory: the database holds the key.
pub async fn shared_share_key(store: &dyn StateStore, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let candidate = if data_dir.join("share.key").exists() {
        share_key(data_dir)?
    } else {
        new_key()?
    };
    store
        .share_key_or(&candidate, gantry_engine::ports::now_millis())
        .await
}

/// 32 random bytes.
pub fn new_key() -> anyhow::Result<Vec<u8>> {
    let key = generate_token();
    Ok(hex::decode(
        key.trim_start_matches(gantry_api::auth::TOKEN_PREFIX),
    )?)
}

/// A new share-link key in place of the old one: written to a temporary file (mode 0600) and
/// renamed over `share.key`, so a crash leaves the old key or the new one, never half of one.
pub fn rotate_share_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("share.key");
    let tmp = data_dir.join("share.key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let key = new_key()?;
    write_private(&tmp, &hex::encode(&key))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(key)
}

/// On first start, creates an admin token and keeps it in the data directory (mode 0600), so
/// the CLI on this machine works without copying a token around.
pub async fn ensure_admin_token(store: &dyn StateStore, data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        return Ok(());
    }
    let token = generate_token();
    let name = format!("admin-{}", gantry_engine::ports::now_millis());
    store
        .create_token(
            &name,
            Role::Admin,
            &hash_token(&token),
            gantry_engine::ports::now_millis(),
        )
        .await?;
    write_private(&path, &token)?;
    eprintln!(
        "gantry: created an admin token in {} (the CLI on this machine uses it)",
        path.display()
    );
    Ok(())
}

/// Writes a new file readable by its owner only (mode 0600); never replaces one.
pub(crate) fn write_private(path: &Path, line: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{line}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_or_garbled_share_key_is_refused_and_a_made_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let made = share_key(dir.path()).unwrap();
        assert_eq!(made.len(), 32);
        assert_eq!(share_key(dir.path()).unwrap(), made, "kept across starts");
        let rotated = rotate_share_key(dir.path()).unwrap();
        assert_ne!(rotated, made);
        assert_eq!(share_key(dir.path()).unwrap(), rotated);
        std::fs::write(dir.path().join("share.key"), "ab\n").unwrap();
        let e = share_key(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("holds a key of 1 bytes: share links need at least 16"),
            "{e}"
        );
        std::fs::write(dir.path().join("share.key"), "not hex\n").unwrap();
        let e = share_key(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is not a hex key"), "{e}");
    }
}
