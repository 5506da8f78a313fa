//! The local content-addressed store: `objects/sha256/<2 hex>/<64 hex>` under the data
//! directory. An object is packed into `tmp/` first and renamed into place only once complete and
//! synced, so a crash never leaves a partial object under a digest; identical content is kept once.

use super::object::{object_key, verify_file, write_out};
use super::pack::pack_staged;
use anyhow::{Context, Result};
use async_trait::async_trait;
use gantry_engine::ports::{ArtifactStore, ByteStream, StoredArtifact};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

#[derive(Clone)]
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
        Ok(self.root.join("objects").join(object_key(digest)?))
    }

    /// Copies `file` into `tmp/`, checks the copy against `digest`, and renames it into place.
    fn import_blocking(&self, digest: &str, file: &Path) -> Result<bool> {
        let dest = self.object_path(digest)?;
        if dest.exists() {
            return Ok(false);
        }
        let mut staged = tempfile::NamedTempFile::new_in(self.root.join("tmp"))
            .context("making a staging file in the artifact store")?;
        let mut from =
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        std::io::copy(&mut from, staged.as_file_mut()).context("copying the object")?;
        staged.as_file().sync_all().context("syncing the object")?;
        verify_file(staged.path(), digest)?;
        let dir = dest.parent().expect("object paths have a parent");
        std::fs::create_dir_all(dir)?;
        staged
            .persist(&dest)
            .map_err(|e| e.error)
            .context("moving the object into the store")?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    }

    fn store_blocking(&self, workspace: &Path, paths: &[String]) -> Result<StoredArtifact> {
        self.store_in_place(workspace, paths)
            .map_err(|e| super::name_full_disk(e, &self.root, "the artifact store"))
    }

    fn store_in_place(&self, workspace: &Path, paths: &[String]) -> Result<StoredArtifact> {
        let staged = pack_staged(workspace, paths, &self.root.join("tmp"))?;
        let dest = self.object_path(&staged.digest)?;
        let newly_stored = !dest.exists();
        if newly_stored {
            staged
                .file
                .as_file()
                .sync_all()
                .context("syncing the artifact")?;
            let dir = dest.parent().expect("object paths have a parent");
            std::fs::create_dir_all(dir)?;
            staged
                .file
                .persist(&dest)
                .map_err(|e| e.error)
                .context("moving the artifact into the store")?;
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(StoredArtifact {
            digest: staged.digest,
            size: staged.size,
            media_type: staged.media_type,
            newly_stored,
        })
    }
}

#[async_trait]
impl ArtifactStore for LocalArtifactStore {
    async fn store(&self, workspace: &Path, paths: &[String]) -> Result<StoredArtifact> {
        let this = self.clone();
        let workspace = workspace.to_path_buf();
        let paths = paths.to_vec();
        tokio::task::spawn_blocking(move || this.store_blocking(&workspace, &paths))
            .await
            .context("the packing task failed")?
    }

    async fn import(&self, digest: &str, file: &Path) -> Result<bool> {
        let (this, file, digest) = (self.clone(), file.to_path_buf(), digest.to_string());
        tokio::task::spawn_blocking(move || {
            this.import_blocking(&digest, &file)
                .map_err(|e| super::name_full_disk(e, &this.root, "the artifact store"))
        })
        .await
        .context("the importing task failed")?
    }

    async fn exists(&self, digest: &str) -> Result<bool> {
        Ok(self.object_path(digest)?.is_file())
    }

    async fn verify(&self, digest: &str) -> Result<()> {
        let object = self.object_path(digest)?;
        let digest = digest.to_string();
        tokio::task::spawn_blocking(move || verify_file(&object, &digest))
            .await
            .context("the verifying task failed")?
    }

    async fn stamp(&self, digest: &str) -> Result<Option<String>> {
        use std::os::unix::fs::MetadataExt;
        let path = self.object_path(digest)?;
        let m = std::fs::metadata(&path)
            .with_context(|| format!("artifact {digest} is missing from {}", path.display()))?;
        Ok(Some(format!(
            "{}:{}.{}:{}:{}",
            m.len(),
            m.ctime(),
            m.ctime_nsec(),
            m.dev(),
            m.ino()
        )))
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

    async fn size(&self, digest: &str) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.object_path(digest)?).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            _ => Ok(None),
        }
    }

    async fn read(&self, digest: &str, start: u64, len: u64) -> Result<ByteStream> {
        let path = self.object_path(digest)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("the stored object for {digest} is missing"))?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file.take(len),
            256 * 1024,
        )))
    }

    async fn presign(
        &self,
        _digest: &str,
        _expires_in: std::time::Duration,
        _file_name: &str,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    fn location(&self) -> String {
        self.root.join("objects").display().to_string()
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
            verify_file(&object, &digest)?;
            write_out(&object, &media_type, &dest, &file_name)
        })
        .await
        .context("the unpacking task failed")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::TAR_ZSTD;
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

    #[test]
    fn staging_files_left_by_a_killed_process_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        std::fs::write(&old, "half").unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        std::fs::write(dir.path().join("busy"), "being written").unwrap();
        // A file of a process that is gone goes at once; one of a live process stays.
        let gone = dir.path().join(format!("pack-{}-x", u32::MAX - 1));
        std::fs::write(&gone, "half").unwrap();
        let ours = crate::artifacts::pack::staging_file(dir.path(), "pack").unwrap();
        let removed =
            crate::artifacts::pack::clean_staging(dir.path(), std::time::Duration::from_secs(3600));
        assert_eq!(removed, 2);
        assert!(!old.exists() && !gone.exists());
        assert!(dir.path().join("busy").exists() && ours.path().exists());
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
