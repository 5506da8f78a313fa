//! The local content-addressed store: `objects/sha256/<2 hex>/<64 hex>` under the data
//! directory. An object is written to `tmp/` first and renamed into place only once complete and
//! synced, so a crash never leaves a partial object under a digest; identical content is kept once.

use super::TAR_ZSTD;
use super::collect::{Collected, collect};
use super::pack::{media_type_of, pack_to};
use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use gantry_engine::ports::{ArtifactStore, StoredArtifact};
use std::path::{Path, PathBuf};

pub struct LocalArtifactStore {
    root: PathBuf,
}

impl LocalArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))
            .and_then(|()| std::fs::create_dir_all(root.join("objects/sha256")))
            .with_context(|| format!("creating the artifact store in {}", root.display()))?;
        Ok(Self { root })
    }

    /// Where the object of `digest` (`sha256:<hex>`) lives; refuses anything that is not a digest.
    pub fn object_path(&self, digest: &str) -> Result<PathBuf> {
        let Some(hex) = digest.strip_prefix("sha256:") else {
            bail!("`{digest}` is not a sha256 digest")
        };
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            bail!("`{digest}` is not a sha256 digest");
        }
        Ok(self.root.join("objects/sha256").join(&hex[..2]).join(hex))
    }

    fn store_blocking(&self, workspace: &Path, paths: &[String]) -> Result<StoredArtifact> {
        let collected = collect(workspace, paths)?;
        let media_type = match &collected {
            Collected::SingleFile(e) => media_type_of(&e.rel).to_string(),
            Collected::Tree(_) => TAR_ZSTD.to_string(),
        };
        let tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            .context("creating a temporary file for the artifact")?;
        let (file, digest, size) = pack_to(&collected, tmp.reopen()?)?;
        file.sync_all().context("syncing the artifact")?;
        let dest = self.object_path(&digest)?;
        if dest.exists() {
            return Ok(StoredArtifact {
                digest,
                size,
                media_type,
                newly_stored: false,
            });
        }
        let dir = dest.parent().expect("object paths have a parent");
        std::fs::create_dir_all(dir)?;
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .context("moving the artifact into the store")?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(StoredArtifact {
            digest,
            size,
            media_type,
            newly_stored: true,
        })
    }
}

#[async_trait]
impl ArtifactStore for LocalArtifactStore {
    async fn store(&self, workspace: &Path, paths: &[String]) -> Result<StoredArtifact> {
        let this = LocalArtifactStore {
            root: self.root.clone(),
        };
        let workspace = workspace.to_path_buf();
        let paths = paths.to_vec();
        tokio::task::spawn_blocking(move || this.store_blocking(&workspace, &paths))
            .await
            .context("the packing task failed")?
    }

    async fn exists(&self, digest: &str) -> Result<bool> {
        Ok(self.object_path(digest)?.is_file())
    }

    async fn verify(&self, digest: &str) -> Result<()> {
        let object = self.object_path(digest)?;
        let digest = digest.to_string();
        tokio::task::spawn_blocking(move || verify_blocking(&object, &digest))
            .await
            .context("the verifying task failed")?
    }

    async fn delete(&self, digest: &str) -> Result<u64> {
        let path = self.object_path(digest)?;
        match std::fs::metadata(&path) {
            Ok(m) => {
                std::fs::remove_file(&path)
                    .with_context(|| format!("deleting {}", path.display()))?;
                Ok(m.len())
            }
            Err(_) => Ok(0),
        }
    }

    fn local_path(&self, digest: &str) -> Option<PathBuf> {
        self.object_path(digest).ok().filter(|p| p.is_file())
    }

    async fn unpack(
        &self,
        digest: &str,
        media_type: &str,
        dest: &Path,
        file_name: &str,
    ) -> Result<()> {
        let object = self.object_path(digest)?;
        let (digest, media_type, dest, file_name) = (
            digest.to_string(),
            media_type.to_string(),
            dest.to_path_buf(),
            file_name.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            unpack_blocking(&object, &digest, &media_type, &dest, &file_name)
        })
        .await
        .context("the unpacking task failed")?
    }
}

/// Hashes the stored object and compares it with `digest`: missing or corrupt is an error.
fn verify_blocking(object: &Path, digest: &str) -> Result<()> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(object)
        .with_context(|| format!("the stored object for {digest} is missing"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        bail!(
            "the stored object does not match its digest (expected {digest}, found {actual}): it is corrupt"
        );
    }
    Ok(())
}

fn unpack_blocking(
    object: &Path,
    digest: &str,
    media_type: &str,
    dest: &Path,
    file_name: &str,
) -> Result<()> {
    verify_blocking(object, digest)?;
    let f = std::fs::File::open(object)?;
    if media_type == super::TAR_ZSTD {
        let mut archive = tar::Archive::new(zstd::stream::read::Decoder::new(f)?);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        archive
            .unpack(dest)
            .with_context(|| format!("unpacking into {}", dest.display()))?;
    } else {
        let target = dest.join(file_name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::io::copy(
            &mut std::io::BufReader::new(f),
            &mut std::fs::File::create(&target)?,
        )
        .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn workspace() -> tempfile::TempDir {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("dist/sub")).unwrap();
        std::fs::write(ws.path().join("dist/a.txt"), "a").unwrap();
        std::fs::write(ws.path().join("dist/sub/b.txt"), "b").unwrap();
        std::fs::write(ws.path().join("report.json"), "{}").unwrap();
        ws
    }

    #[tokio::test]
    async fn identical_content_is_stored_once() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::new(store_dir.path()).unwrap();
        let ws1 = workspace();
        let ws2 = workspace();
        let a = store.store(ws1.path(), &["dist/".into()]).await.unwrap();
        let b = store.store(ws2.path(), &["dist/".into()]).await.unwrap();
        assert!(a.newly_stored);
        assert!(!b.newly_stored);
        assert_eq!(a.digest, b.digest, "packing is deterministic");
        assert_eq!(a.media_type, TAR_ZSTD);
        let single = store
            .store(ws1.path(), &["report.json".into()])
            .await
            .unwrap();
        assert_eq!(single.media_type, "application/json");
        assert_eq!(single.size, 2);
        assert!(store.exists(&single.digest).await.unwrap());
        assert_eq!(
            std::fs::read_dir(store_dir.path().join("tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn unpack_checks_the_digest_first() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::new(store_dir.path()).unwrap();
        let ws = workspace();
        let dir = store.store(ws.path(), &["dist/".into()]).await.unwrap();
        let file = store
            .store(ws.path(), &["report.json".into()])
            .await
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        store
            .unpack(&dir.digest, &dir.media_type, out.path(), "dist/")
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("dist/sub/b.txt")).unwrap(),
            "b"
        );
        store
            .unpack(
                &file.digest,
                &file.media_type,
                out.path(),
                "reports/report.json",
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(out.path().join("reports/report.json")).unwrap(),
            "{}"
        );
        // Corrupt the stored object: unpacking refuses and writes nothing.
        std::fs::write(store.object_path(&file.digest).unwrap(), "{\"x\":1}").unwrap();
        let again = tempfile::tempdir().unwrap();
        let err = store
            .unpack(&file.digest, &file.media_type, again.path(), "report.json")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match its digest"), "{err}");
        assert!(!again.path().join("report.json").exists());
    }

    #[tokio::test]
    async fn escaping_paths_are_refused() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = LocalArtifactStore::new(store_dir.path()).unwrap();
        let ws = workspace();
        symlink("/etc", ws.path().join("dist/etc")).unwrap();
        let err = store
            .store(ws.path(), &["dist".into()])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the workspace"), "{err}");
        let err = store
            .store(ws.path(), &["../x".into()])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves the workspace"), "{err}");
        let err = store
            .store(ws.path(), &["nothing*".into()])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("matches nothing"), "{err}");
        assert!(store.object_path("sha256:../../etc").is_err());
    }
}
