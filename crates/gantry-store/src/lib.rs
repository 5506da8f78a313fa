//! Adapters for gantry's state and artifacts: the [`sql::SqlStore`] implementation of the
//! engine's store ports (`RunStore`, `QueueStore`, `ProjectStore`, `ArtifactIndex`,
//! `ReleaseStore`; together `StateStore`) on SQLite or PostgreSQL, and the artifact stores
//! (local disk and S3) of its `ArtifactStore` port. Both state backends pass the same contract
//! suite (`tests/contract/main.rs`).
//!
//! Codemap:
//! - [`sql`]: the state store, one file per port; SQLite (WAL, `migrations/sqlite`) and
//!   PostgreSQL (`migrations/postgres`) share its SQL.
//! - [`artifacts`]: packing (tar.zst, hashed while written), the local and S3 content stores.

pub mod artifacts;
pub mod sql;
#[doc(hidden)]
pub mod testing;

pub use sql::redact_url;

use anyhow::{Result, bail};
use gantry_engine::ports::StateStore;
use std::path::Path;
use std::sync::Arc;

/// Opens the state store a URL names: `sqlite://PATH` (a file, made with its migrations if it
/// is new) or `postgres://…` (a database, migrated to this version's schema). The error for
/// any other URL says which schemes there are.
pub async fn open_state(url: &str) -> Result<Arc<dyn StateStore>> {
    open_state_for(url, Sharing::Server).await
}

/// Who shares a store within this process, which sizes its SQLite pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// A command's requests, one after another (`gantry run`, `gantry runs`, …): one
    /// connection. SQLite has one writer at a time, and a second connection of the same
    /// process only adds its opening (a thread, the file, the schema: about a millisecond)
    /// and, when it loses the write lock to the first, the busy handler's sleep (1 ms, then
    /// 2, 5, …); through one connection, requests wait their turn in order.
    Command,
    /// A server's requests, many at once: readers alongside the writer (four connections).
    Server,
}

impl Sharing {
    fn sqlite_connections(self) -> u32 {
        match self {
            Sharing::Command => 1,
            Sharing::Server => 4,
        }
    }
}

/// [`open_state`] for `sharing`.
pub async fn open_state_for(url: &str, sharing: Sharing) -> Result<Arc<dyn StateStore>> {
    Ok(Arc::new(open_sql(url, sharing).await?))
}

/// [`open_state_for`], keeping the concrete store (for copying state between backends).
pub async fn open_sql(url: &str, sharing: Sharing) -> Result<sql::SqlStore> {
    match url.split_once("://") {
        Some(("sqlite", path)) if !path.is_empty() => {
            sql::SqlStore::open(Path::new(path), sharing.sqlite_connections()).await
        }
        Some(("sqlite", _)) => bail!("`{url}` names no file: write sqlite:///path/to/gantry.db"),
        Some(("postgres" | "postgresql", rest)) if !rest.is_empty() => {
            sql::SqlStore::open_postgres(url).await
        }
        Some((scheme, _)) => bail!(
            "`{}`: there are no state stores of kind `{scheme}` (there are sqlite://PATH and postgres://USER@HOST/DATABASE)",
            redact_url(url)
        ),
        None => bail!(
            "`{}` is not a state store URL: write sqlite://PATH or postgres://USER@HOST/DATABASE",
            redact_url(url)
        ),
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
            ("mysql://db/gantry", "no state stores of kind `mysql`"),
            ("sqlite://", "names no file"),
            ("gantry.db", "not a state store URL"),
        ] {
            let e = super::open_state(url).await.err().expect(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
