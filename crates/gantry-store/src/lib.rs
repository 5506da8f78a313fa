//! Adapters for gantry's state and artifacts: the [`sqlite::SqliteStore`] implementation of the
//! engine's `StateStore` port, and the [`artifacts::LocalArtifactStore`] implementation of its
//! `ArtifactStore` port. PostgreSQL and S3 implementations slot in next to these.
//!
//! Codemap:
//! - [`sqlite`]: the SQLite state store (WAL, migrations in `migrations/sqlite`).
//! - [`artifacts`]: packing (tar.zst, hashed while written) and the local content store.

pub mod artifacts;
pub mod sqlite;
