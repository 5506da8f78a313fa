//! The SQLite state store. One file in the data directory, WAL journal (readers never block the
//! writer; a kill -9 at any moment leaves the last committed transaction), foreign keys on, and
//! migrations embedded from `migrations/sqlite`. Queries are portable SQL with `$n` parameters,
//! so the PostgreSQL store can share their text.

use anyhow::{Context, Result};
use async_trait::async_trait;
use gantry_engine::ports::{
    ArtifactIndex, ArtifactListing, ArtifactQuery, ArtifactRecord, CacheRecord, Conflict,
    JobRecord, LogRecord, Millis, NewLogLine, NewRun, NewStage, OwnerLease, ProjectRecord,
    ProjectStore, QueueStore, QueuedRun, RunDetail, RunFilter, RunIds, RunRecord, RunStore,
    SessionRecord, ShareRecord, StageRecord, StateStore, StepRecord, StoredArtifact, Stream,
    TokenRecord,
};
use gantry_model::{JobStatus, Role, RunStatus, StageStatus, StepStatus};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

mod artifacts;
mod projects;
mod queue;
mod releases;
mod runs;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file, for messages.
    path: std::path::PathBuf,
    /// Space set aside beside the database ([`RESERVE_BYTES`]), given back the first time the
    /// file system is found full, so the failure itself can still be recorded.
    reserve: std::path::PathBuf,
}

/// How much space the store keeps in reserve for recording that the disk is full.
const RESERVE_BYTES: usize = 1024 * 1024;

const RUN_COLUMNS: &str = "r.id, p.name AS project, p.repo, r.commit_sha, r.branch, r.pipeline_file, \
     r.trigger_kind, r.status, r.created_at, r.started_at, r.finished_at, r.error, r.owner, r.event, r.vars";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A write that failed because the disk was full can leave its connection in a
            // transaction SQLite already rolled back (sqlx's ROLLBACK then fails and its count
            // stays up): such a connection is closed, never handed out again, or every later
            // write would fail with "non-zero transaction depth" until restart.
            .after_release(|conn, _| {
                Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
            })
            .connect_with(options)
            .await
            .with_context(|| format!("opening the state database {}", path.display()))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .with_context(|| format!("migrating the state database {}", path.display()))?;
        let reserve = path.with_extension("db.reserve");
        if !reserve.exists() {
            // Best effort: a disk already full has nothing to set aside.
            let _ = std::fs::write(&reserve, vec![0u8; RESERVE_BYTES]);
        }
        Ok(Self {
            pool,
            path: path.to_path_buf(),
            reserve,
        })
    }

    /// A write's error, said plainly when the file system is full (SQLITE_FULL): which file
    /// system, and what to do; the reserve is given back so the failure can be recorded.
    fn write_error(&self, e: sqlx::Error, what: &str) -> anyhow::Error {
        let full = match &e {
            sqlx::Error::Database(d) => {
                d.code().as_deref() == Some("13") || d.message().contains("disk is full")
            }
            sqlx::Error::Io(io) => io.raw_os_error() == Some(28),
            _ => false,
        };
        if !full {
            return anyhow::Error::new(e).context(what.to_string());
        }
        let _ = std::fs::remove_file(&self.reserve);
        let dir = self.path.parent().unwrap_or(&self.path);
        anyhow::anyhow!(
            "{what}: no space left on the file system of {} (the data directory): {e}; free space there, then run again",
            dir.display()
        )
    }
}

/// Begins a transaction that takes the write lock at once (`BEGIN IMMEDIATE`), waiting up to the
/// busy timeout for it. A deferred transaction that reads first and writes later fails at once
/// with "database is locked" when another connection wrote in between (SQLite cannot wait there:
/// its snapshot is stale), so every transaction that writes begins this way.
async fn write_tx(pool: &SqlitePool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

#[async_trait]
impl StateStore for SqliteStore {
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

fn run_from(row: &SqliteRow) -> Result<RunRecord> {
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

fn artifact_from(row: &SqliteRow) -> Result<ArtifactRecord> {
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
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
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
            .bind(*allow_failure)
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

async fn upsert_project_in<'e, E: sqlx::SqliteExecutor<'e>>(
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
    use gantry_engine::ports::{NewRelease, ReleaseStore};
    use gantry_engine::release::ReleaseKind;
    use sqlx::Connection;
    use sqlx::sqlite::SqliteConnection;

    /// Another connection (another gantry process, say) holds the write lock for 300 ms while
    /// the store records a release, which reads the next number before it writes. The store
    /// waits for the lock instead of failing with "database is locked" — the failure a deferred
    /// transaction gives at once, seen in CI when a run and a deployment wrote together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_waits_for_another_connections_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gantry.db");
        let store = SqliteStore::open(&path).await.unwrap();
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
