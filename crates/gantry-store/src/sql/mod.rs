//! The SQL state store, on SQLite or PostgreSQL through sqlx's `Any` driver: one body of
//! portable SQL (`$n` parameters, `RETURNING`, `ON CONFLICT`) for both, with the few places they
//! differ named by [`Backend`]: how a writing transaction begins, how the queue is claimed, what
//! a full disk looks like, and each one's migrations (`migrations/sqlite`, `migrations/postgres`).
//!
//! SQLite: one file in the data directory, WAL journal (readers never block the writer; a kill
//! -9 at any moment leaves the last committed transaction), foreign keys on. PostgreSQL: a
//! database shared by every server; a transaction that reads before it writes takes one
//! transaction-level advisory lock first, so writers are serialised exactly as SQLite's
//! `BEGIN IMMEDIATE` serialises them, and uniqueness rules stay constraints of the schema.
//!
//! Flags are stored as integers 0/1 and read back through [`flag`]: the `Any` driver reads no
//! SQLite boolean column.

use anyhow::{Context, Result};
use async_trait::async_trait;
use gantry_engine::ports::{
    ArtifactIndex, ArtifactListing, ArtifactQuery, ArtifactRecord, CacheRecord, Conflict,
    JobQueueStore, JobRecord, LogRecord, Millis, NewLogLine, NewRun, NewStage, OwnerLease,
    ProjectRecord, ProjectStore, QueueStore, QueuedRun, RunDetail, RunFilter, RunIds, RunRecord,
    RunStore, SessionRecord, ShareRecord, StageRecord, StateStore, StepRecord, StoredArtifact,
    Stream, TokenRecord,
};
use gantry_model::{JobStatus, Role, RunStatus, StageStatus, StepStatus};
use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AssertSqlSafe, Executor, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

mod artifacts;
mod copy;
mod jobs;
mod projects;
mod queue;
mod releases;
mod runs;

pub use copy::CopyReport;

pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// What the store is, for messages: the SQLite file, or the PostgreSQL URL without its
    /// password.
    name: String,
    /// SQLite: space set aside beside the database ([`RESERVE_BYTES`]), given back the first
    /// time the file system is found full, so the failure itself can still be recorded.
    reserve: Option<std::path::PathBuf>,
    /// PostgreSQL: the URL connected to (password included, never shown), for the
    /// connection that listens for queue signals.
    url: Option<String>,
}

/// Which database engine a [`SqlStore`] speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// The key of the advisory lock PostgreSQL writers take (see the module's documentation):
/// "gantry" in ASCII.
const WRITE_LOCK_KEY: i64 = 0x6761_6e74_7279;

/// How much space the store keeps in reserve for recording that the disk is full.
const RESERVE_BYTES: usize = 1024 * 1024;

const RUN_COLUMNS: &str = "r.id, p.name AS project, p.repo, r.commit_sha, r.branch, r.pipeline_file, \
     r.trigger_kind, r.status, r.created_at, r.started_at, r.finished_at, r.error, r.owner, r.event, r.vars";

impl SqlStore {
    /// Opens (creating if needed) the SQLite database at `path` and applies pending migrations;
    /// a pool of `connections` (at least one; [`crate::Sharing`] says how many).
    pub async fn open(path: &Path, connections: u32) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let text = path
            .to_str()
            .with_context(|| format!("the state database path {} is not UTF-8", path.display()))?;
        // Percent-encoded: `?`, `#` and `%` are part of the file's name, not of the URL.
        let mut url = String::from("sqlite://");
        for c in text.chars() {
            match c {
                '%' | '?' | '#' => url.push_str(&format!("%{:02X}", c as u32)),
                c => url.push(c),
            }
        }
        url.push_str("?mode=rwc");
        // A connection to a file on this machine does not go stale while it sits in the pool:
        // no ping before each use (one round trip to the connection's thread per query).
        let pool = pool_options(connections.max(1))
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .with_context(|| format!("opening the state database {}", path.display()))?;
        let migrator = sqlx::migrate!("./migrations/sqlite");
        if !migrated(&pool, &migrator).await {
            migrator
                .run(&pool)
                .await
                .with_context(|| format!("migrating the state database {}", path.display()))?;
        }
        let reserve = path.with_extension("db.reserve");
        if !reserve.exists() {
            // Best effort: a disk already full has nothing to set aside.
            let _ = std::fs::write(&reserve, vec![0u8; RESERVE_BYTES]);
        }
        Ok(Self {
            pool,
            backend: Backend::Sqlite,
            name: path.display().to_string(),
            reserve: Some(reserve),
            url: None,
        })
    }

    /// Connects to the PostgreSQL database `url` names (`postgres://user@host:port/db`; the
    /// password from the URL, `PGPASSWORD` or `~/.pgpass`, as libpq finds it) and applies
    /// pending migrations. Messages name the URL without its password.
    pub async fn open_postgres(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let name = redact_url(url);
        let pool = pool_options(8)
            .acquire_timeout(Duration::from_secs(15))
            .connect(url)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "connecting to the state database {name}: {}",
                    redact_error(&e, url)
                )
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .with_context(|| format!("migrating the state database {name}"))?;
        Ok(Self {
            pool,
            backend: Backend::Postgres,
            name,
            reserve: None,
            url: Some(url.to_string()),
        })
    }

    /// Whether this store's connections to PostgreSQL are encrypted (TLS), as the server sees
    /// them; false for SQLite.
    pub async fn connection_is_tls(&self) -> Result<bool> {
        if self.backend != Backend::Postgres {
            return Ok(false);
        }
        let ssl: i64 = sqlx::query_scalar(
            "SELECT CAST(CASE WHEN ssl THEN 1 ELSE 0 END AS BIGINT) FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ssl == 1)
    }

    /// Begins a transaction that writes. SQLite: `BEGIN IMMEDIATE`, which takes the write lock
    /// at once, waiting up to the busy timeout for it (a deferred transaction that reads first
    /// and writes later fails at once with "database is locked" when another connection wrote
    /// in between: SQLite cannot wait there, its snapshot is stale). PostgreSQL: `BEGIN`, then
    /// the store's advisory lock for the transaction, the same one writer at a time across
    /// every server.
    async fn write_tx(&self) -> sqlx::Result<sqlx::Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK_KEY)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// A write's error, said plainly when the disk is full (SQLITE_FULL, PostgreSQL's
    /// disk_full): which file system, and what to do; SQLite's reserve is given back so the
    /// failure can be recorded.
    fn write_error(&self, e: sqlx::Error, what: &str) -> anyhow::Error {
        let full = match &e {
            // SQLITE_FULL; PostgreSQL's disk_full.
            sqlx::Error::Database(d) => {
                matches!(d.code().as_deref(), Some("13") | Some("53100"))
                    || d.message().contains("disk is full")
            }
            sqlx::Error::Io(io) => io.raw_os_error() == Some(28),
            _ => false,
        };
        if !full {
            return anyhow::Error::new(e).context(what.to_string());
        }
        let Some(reserve) = &self.reserve else {
            return anyhow::anyhow!(
                "{what}: the state database {} has no space left on its server's disk: {e}",
                self.name
            );
        };
        let _ = std::fs::remove_file(reserve);
        let path = Path::new(&self.name);
        let dir = path.parent().unwrap_or(path);
        anyhow::anyhow!(
            "{what}: no space left on the file system of {} (the data directory): {e}; free space there, then run again",
            dir.display()
        )
    }
}

/// Whether every migration of `migrator` is applied, whole and unchanged, and nothing else: one
/// query, where the migrator asks three (its table, a failed migration, the applied ones)
/// before it finds nothing to do; every command opens the store. Anything else — no table
/// yet, a migration pending, failed or changed — is the migrator's to do or to refuse.
async fn migrated(pool: &AnyPool, migrator: &sqlx::migrate::Migrator) -> bool {
    let Ok(rows) = sqlx::query(
        "SELECT version, checksum, CAST(success AS INTEGER) FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    else {
        return false;
    };
    let applied = rows.iter().map(|r| {
        (
            r.try_get::<i64, _>(0).ok(),
            r.try_get::<Vec<u8>, _>(1).ok(),
            r.try_get::<i64, _>(2).ok(),
        )
    });
    let wanted = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| (Some(m.version), Some(m.checksum.to_vec()), Some(1)));
    applied.eq(wanted)
}

/// The pool both engines share the settings of: `max` connections, and a connection that a
/// failed write left inside a transaction closed rather than reused. (A write that failed
/// because the disk was full can leave its connection in a transaction SQLite already rolled
/// back: sqlx's ROLLBACK then fails and its count stays up, and every later write on it would
/// fail with "non-zero transaction depth" until restart.)
fn pool_options(max: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .after_release(|conn, _| {
            Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
        })
}

/// The password of a `scheme://user:password@host/…` URL, if it has one.
fn password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `url` with its password (if any) replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match password(url) {
        Some(p) => url.replacen(&format!(":{p}@"), ":***@", 1),
        None => url.to_string(),
    }
}

/// A connection error's text with any password of `url` in it replaced.
fn redact_error(e: &sqlx::Error, url: &str) -> String {
    let text = e.to_string();
    match password(url) {
        Some(p) => text.replace(p, "***"),
        None => text,
    }
}

/// A flag column (0 or 1) as a bool.
fn flag(row: &AnyRow, column: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

#[async_trait]
impl StateStore for SqlStore {
    async fn close(&self) {
        self.pool.close().await;
    }
}

fn parse<T: FromStr<Err = String>>(s: String) -> Result<T> {
    T::from_str(&s).map_err(|e| anyhow::anyhow!("corrupt state: {e}"))
}

/// A run's variables as the `vars` column keeps them.
fn vars_json(vars: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(vars).expect("a map of strings serialises")
}

fn run_from(row: &AnyRow) -> Result<RunRecord> {
    let trigger: String = row.try_get("trigger_kind")?;
    let mut event: String = row.try_get("event")?;
    if event.is_empty() {
        event = gantry_model::TriggerEvent::of_trigger(&trigger)
            .as_str()
            .to_string();
    }
    let vars: String = row.try_get("vars")?;
    let vars = serde_json::from_str(&vars)
        .map_err(|e| anyhow::anyhow!("corrupt state: the variables of a run: {e}"))?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        project: row.try_get("project")?,
        repo: row.try_get("repo")?,
        commit: row.try_get("commit_sha")?,
        branch: row.try_get("branch")?,
        pipeline_file: row.try_get("pipeline_file")?,
        trigger,
        event,
        vars,
        status: parse(row.try_get("status")?)?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        error: row.try_get("error")?,
        owner: row.try_get("owner")?,
    })
}

fn artifact_from(row: &AnyRow) -> Result<ArtifactRecord> {
    Ok(ArtifactRecord {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        job_id: row.try_get("job_id")?,
        name: row.try_get("name")?,
        digest: row.try_get("digest")?,
        size: row.try_get("size")?,
        media_type: row.try_get("media_type")?,
        created_at: row.try_get("created_at")?,
        removed_at: row.try_get("removed_at")?,
    })
}

/// Inserts the stages and jobs of a run (all pending) inside `tx`.
async fn insert_plan(
    tx: &mut sqlx::Transaction<'_, Any>,
    run_id: i64,
    stages: &[NewStage],
) -> Result<RunIds> {
    let mut ids = RunIds {
        run: run_id,
        stages: Vec::new(),
        jobs: Vec::new(),
    };
    for (position, stage) in stages.iter().enumerate() {
        let stage_id: i64 = sqlx::query_scalar(
            "INSERT INTO stages (run_id, position, name, kind, status) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(run_id)
        .bind(position as i64)
        .bind(&stage.name)
        .bind(stage.kind)
        .bind(StageStatus::Pending.as_str())
        .fetch_one(&mut **tx)
        .await?;
        let mut job_ids = Vec::new();
        for (jpos, job) in stage.jobs.iter().enumerate() {
            let (name, allow_failure) = (&job.name, &job.allow_failure);
            let job_id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (run_id, stage_id, position, name, status, allow_failure, waits_for) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            )
            .bind(run_id)
            .bind(stage_id)
            .bind(jpos as i64)
            .bind(name)
            .bind(JobStatus::Pending.as_str())
            .bind(i64::from(*allow_failure))
            .bind(serde_json::to_string(&job.waits_for).expect("a list of names serialises"))
            .fetch_one(&mut **tx)
            .await?;
            job_ids.push(job_id);
        }
        ids.stages.push(stage_id);
        ids.jobs.push(job_ids);
    }
    Ok(ids)
}

async fn upsert_project_in<'e, E: sqlx::Executor<'e, Database = Any>>(
    e: E,
    name: &str,
    repo: &str,
) -> Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO projects (name, repo) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET repo = excluded.repo RETURNING id",
    )
    .bind(name)
    .bind(repo)
    .fetch_one(e)
    .await
    .context("recording the project")?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_urls_password_never_reaches_a_message() {
        for (url, shown) in [
            (
                "postgres://gantry:s3cr%40t@db:5432/gantry",
                "postgres://gantry:***@db:5432/gantry",
            ),
            ("postgres://gantry@db/gantry", "postgres://gantry@db/gantry"),
            ("postgres://db/gantry", "postgres://db/gantry"),
            ("postgres://u:p@ss@db/g", "postgres://u:***@db/g"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let e = sqlx::Error::Configuration("bad password s3cr%40t for gantry".into());
        let text = redact_error(&e, "postgres://gantry:s3cr%40t@db/gantry");
        assert!(!text.contains("s3cr"), "{text}");
    }
    use gantry_engine::ports::{NewRelease, ReleaseStore};
    use gantry_engine::release::ReleaseKind;
    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

    /// Another connection (another gantry process, say) holds the write lock for 300 ms while
    /// the store records a release, which reads the next number before it writes. The store
    /// waits for the lock instead of failing with "database is locked" — the failure a deferred
    /// transaction gives at once, seen in CI when a run and a deployment wrote together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_waits_for_another_connections_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        let store = SqlStore::open(&path, 4).await.unwrap();
        let mut other = SqliteConnection::connect_with(
            &SqliteConnectOptions::new()
                .filename(&path)
                .busy_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        sqlx::query("INSERT INTO projects (name, repo) VALUES ('q', '/srv/q')")
            .execute(&mut other)
            .await
            .unwrap();
        let holder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sqlx::query("COMMIT").execute(&mut other).await.unwrap();
            other.close().await.unwrap();
        });
        let release = store
            .create_release(NewRelease {
                project: "p".into(),
                environment: "prod".into(),
                kind: ReleaseKind::Deploy,
                source: None,
                artifact: "app".into(),
                digest: format!("sha256:{:064}", 1),
                run_id: None,
                commit: None,
                created_by: "test".into(),
                created_at: 1,
                reason: None,
            })
            .await
            .expect("the write waits for the other connection's lock");
        assert_eq!(release.number, 1);
        holder.await.unwrap();
        assert_eq!(store.list_projects().await.unwrap().len(), 1);
        store.close().await;
    }
}

#[cfg(test)]
mod migrated_tests {
    use super::*;

    /// A store opened again asks one query when every migration is applied; a changed one is
    /// not taken for applied, and the migrator refuses it as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_up_to_date_store_is_seen_in_one_query_and_a_changed_migration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        let store = SqlStore::open(&path, 4).await.unwrap();
        let migrator = sqlx::migrate!("./migrations/sqlite");
        assert!(migrated(&store.pool, &migrator).await);
        store.close().await;
        // Opened again: nothing to do, and it works.
        let store = SqlStore::open(&path, 4).await.unwrap();
        assert!(migrated(&store.pool, &migrator).await);
        sqlx::query("UPDATE _sqlx_migrations SET checksum = X'00' WHERE version = 1")
            .execute(&store.pool)
            .await
            .unwrap();
        assert!(!migrated(&store.pool, &migrator).await);
        store.close().await;
        let refused = SqlStore::open(&path, 4)
            .await
            .err()
            .expect("a changed migration");
        assert!(format!("{refused:#}").contains("migrat"), "{refused:#}");
        // A store with no migrations table yet is the migrator's.
        let fresh = dir.path().join("fresh.db");
        let pool = pool_options(1)
            .connect(&format!("sqlite://{}?mode=rwc", fresh.display()))
            .await
            .unwrap();
        assert!(!migrated(&pool, &migrator).await);
        pool.close().await;
    }
}
