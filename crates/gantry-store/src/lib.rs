//! Adapters for gantry's state and artifacts: the [`sqlite::SqliteStore`] implementation of the
//! engine's store ports (`RunStore`, `QueueStore`, `ProjectStore`, `ArtifactIndex`,
//! `ReleaseStore`; together `StateStore`), and the artifact stores (local disk and S3) of its
//! `ArtifactStore` port. A PostgreSQL backend slots in next to SQLite: a module implementing
//! the five ports, its migrations, a scheme in [`open_state`], and one line in the contract
//! suite (`tests/contract/main.rs`).
//!
//! Codemap:
//! - [`sqlite`]: the SQLite state store (WAL, migrations in `migrations/sqlite`), one file per
//!   port.
//! - [`artifacts`]: packing (tar.zst, hashed while written), the local and S3 content stores.

pub mod artifacts;
pub mod sqlite;

use anyhow::{Result, bail};
use gantry_engine::ports::StateStore;
use std::path::Path;
use std::sync::Arc;

/// Opens the state store a URL names: `sqlite://PATH` (a file, made with its migrations if it
/// is new). The error for any other URL says which schemes there are.
pub async fn open_state(url: &str) -> Result<Arc<dyn StateStore>> {
    match url.split_once("://") {
        Some(("sqlite", path)) if !path.is_empty() => {
            Ok(Arc::new(sqlite::SqliteStore::open(Path::new(path)).await?))
        }
        Some(("sqlite", _)) => bail!("`{url}` names no file: write sqlite:///path/to/gantry.db"),
        Some((scheme, _)) => bail!(
            "`{url}`: state stores of kind `{scheme}` are not available in this version of gantry (there is sqlite://PATH)"
        ),
        None => bail!("`{url}` is not a state store URL: write sqlite://PATH"),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_state_url_names_its_kind_and_a_wrong_one_says_which_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("g.db").display());
        assert!(super::open_state(&url).await.is_ok());
        for (url, says) in [
            ("postgres://db/gantry", "kind `postgres` are not available"),
            ("sqlite://", "names no file"),
            ("gantry.db", "not a state store URL"),
        ] {
            let e = super::open_state(url).await.err().expect(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
