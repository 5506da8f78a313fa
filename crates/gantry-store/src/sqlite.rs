//! The SQLite state store. One file in the data directory, WAL journal (readers never block the
//! writer; a kill -9 at any moment leaves the last committed transaction), foreign keys on, and
//! migrations embedded from `migrations/sqlite`. Queries are portable SQL with `$n` parameters,
//! so the PostgreSQL store can share their text.

use anyhow::{Context, Result};
use async_trait::async_trait;
use gantry_engine::ports::{
    ArtifactListing, ArtifactQuery, ArtifactRecord, EnvLock, JobRecord, LogRecord, Millis,
    NewLogLine, NewRelease, NewRun, NewStage, ProjectRecord, QueuedRun, ReleaseEvent,
    ReleaseRecord, RunDetail, RunFilter, RunIds, RunRecord, ShareRecord, StageRecord, StateStore,
    StepRecord, StoredArtifact, Stream, TokenRecord,
};
use gantry_engine::release::ReleaseState;
use gantry_model::{JobStatus, Role, RunStatus, StageStatus, StepStatus};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

mod releases;

pub struct SqliteStore {
    pool: SqlitePool,
}

const RUN_COLUMNS: &str = "r.id, p.name AS project, p.repo, r.commit_sha, r.branch, r.pipeline_file, \
     r.trigger_kind, r.status, r.created_at, r.started_at, r.finished_at, r.error, r.owner";

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
            .connect_with(options)
            .await
            .with_context(|| format!("opening the state database {}", path.display()))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .with_context(|| format!("migrating the state database {}", path.display()))?;
        Ok(Self { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn parse<T: FromStr<Err = String>>(s: String) -> Result<T> {
    T::from_str(&s).map_err(|e| anyhow::anyhow!("corrupt state: {e}"))
}

fn run_from(row: &SqliteRow) -> Result<RunRecord> {
    Ok(RunRecord {
        id: row.try_get("id")?,
        project: row.try_get("project")?,
        repo: row.try_get("repo")?,
        commit: row.try_get("commit_sha")?,
        branch: row.try_get("branch")?,
        pipeline_file: row.try_get("pipeline_file")?,
        trigger: row.try_get("trigger_kind")?,
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
        for (jpos, (name, allow_failure)) in stage.jobs.iter().enumerate() {
            let job_id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (run_id, stage_id, position, name, status, allow_failure) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(run_id)
            .bind(stage_id)
            .bind(jpos as i64)
            .bind(name)
            .bind(JobStatus::Pending.as_str())
            .bind(*allow_failure)
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

#[async_trait]
impl StateStore for SqliteStore {
    async fn create_run(&self, run: NewRun) -> Result<RunIds> {
        let mut tx = self.pool.begin().await?;
        let project = upsert_project_in(&mut *tx, &run.project, &run.repo).await?;
        let started = (run.status == RunStatus::Running).then_some(run.created_at);
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (project_id, commit_sha, branch, pipeline_file, trigger_kind, status, created_at, started_at, owner) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(project)
        .bind(&run.commit)
        .bind(&run.branch)
        .bind(&run.pipeline_file)
        .bind(&run.trigger)
        .bind(run.status.as_str())
        .bind(run.created_at)
        .bind(started)
        .bind(&run.owner)
        .fetch_one(&mut *tx)
        .await
        .context("recording the run")?;
        let ids = insert_plan(&mut tx, run_id, &run.stages).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn set_run_status(
        &self,
        run: i64,
        status: RunStatus,
        at: Millis,
        error: Option<&str>,
    ) -> Result<()> {
        let finished = status.is_finished().then_some(at);
        sqlx::query(
            "UPDATE runs SET status = $1, finished_at = COALESCE($2, finished_at), \
             started_at = COALESCE(started_at, $3), error = COALESCE($4, error) WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(finished)
        .bind(at)
        .bind(error)
        .bind(run)
        .execute(&self.pool)
        .await
        .context("recording the run's status")?;
        Ok(())
    }

    async fn set_stage_status(
        &self,
        stage: i64,
        status: StageStatus,
        at: Millis,
        note: Option<&str>,
    ) -> Result<()> {
        let (started, finished) = match status {
            StageStatus::Running => (Some(at), None),
            StageStatus::Pending => (None, None),
            _ => (None, Some(at)),
        };
        sqlx::query(
            "UPDATE stages SET status = $1, started_at = COALESCE(started_at, $2), \
             finished_at = COALESCE($3, finished_at), note = COALESCE($4, note) WHERE id = $5",
        )
        .bind(status.as_str())
        .bind(started)
        .bind(finished)
        .bind(note)
        .bind(stage)
        .execute(&self.pool)
        .await
        .context("recording the stage's status")?;
        Ok(())
    }

    async fn set_job_status(
        &self,
        job: i64,
        status: JobStatus,
        attempt: u32,
        at: Millis,
        exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<()> {
        let started = (status == JobStatus::Running).then_some(at);
        let finished = status.is_finished().then_some(at);
        sqlx::query(
            "UPDATE jobs SET status = $1, attempt = $2, started_at = COALESCE(started_at, $3), \
             finished_at = $4, exit_code = $5, error = $6 WHERE id = $7",
        )
        .bind(status.as_str())
        .bind(attempt as i64)
        .bind(started)
        .bind(finished)
        .bind(exit_code)
        .bind(error)
        .bind(job)
        .execute(&self.pool)
        .await
        .context("recording the job's status")?;
        Ok(())
    }

    async fn start_step(
        &self,
        job: i64,
        attempt: u32,
        position: usize,
        name: &str,
        at: Millis,
    ) -> Result<i64> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO steps (job_id, attempt, position, name, status, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(job)
        .bind(attempt as i64)
        .bind(position as i64)
        .bind(name)
        .bind(StepStatus::Running.as_str())
        .bind(at)
        .fetch_one(&self.pool)
        .await
        .context("recording the step")?;
        Ok(id)
    }

    async fn finish_step(
        &self,
        step: i64,
        status: StepStatus,
        exit_code: Option<i32>,
        at: Millis,
    ) -> Result<()> {
        sqlx::query("UPDATE steps SET status = $1, exit_code = $2, finished_at = $3 WHERE id = $4")
            .bind(status.as_str())
            .bind(exit_code)
            .bind(at)
            .bind(step)
            .execute(&self.pool)
            .await
            .context("recording the step's end")?;
        Ok(())
    }

    async fn append_logs(&self, lines: &[NewLogLine]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for l in lines {
            sqlx::query("INSERT INTO log_lines (step_id, line, at, stream, text) VALUES ($1, $2, $3, $4, $5)")
                .bind(l.step_id)
                .bind(l.line)
                .bind(l.at)
                .bind(l.stream.as_str())
                .bind(&l.text)
                .execute(&mut *tx)
                .await
                .context("storing log lines")?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_artifact(
        &self,
        run: i64,
        job: i64,
        name: &str,
        stored: &StoredArtifact,
        at: Millis,
    ) -> Result<ArtifactRecord> {
        let row = sqlx::query(
            "INSERT INTO artifacts (run_id, job_id, name, digest, size, media_type, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        )
        .bind(run)
        .bind(job)
        .bind(name)
        .bind(&stored.digest)
        .bind(stored.size as i64)
        .bind(&stored.media_type)
        .bind(at)
        .fetch_one(&self.pool)
        .await
        .with_context(|| format!("recording artifact `{name}`"))?;
        artifact_from(&row)
    }

    async fn mark_interrupted(&self, run: i64, at: Millis) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let unfinished = "('pending', 'running', 'queued')";
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE steps SET status = 'interrupted', finished_at = $1 \
             WHERE status IN {unfinished} AND job_id IN (SELECT id FROM jobs WHERE run_id = $2)"
        )))
        .bind(at)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        for table in ["jobs", "stages"] {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET status = CASE WHEN status = 'running' THEN 'interrupted' ELSE 'skipped' END, \
                 finished_at = CASE WHEN status = 'running' THEN $1 ELSE finished_at END \
                 WHERE run_id = $2 AND status IN {unfinished}"
            )))
            .bind(at)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE runs SET status = 'interrupted', finished_at = $1, \
             error = COALESCE(error, 'the process running it stopped before the run finished') \
             WHERE id = $2 AND status IN {unfinished}"
        )))
        .bind(at)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id \
             WHERE ($1 IS NULL OR p.name = $1) AND ($2 IS NULL OR r.branch = $2) \
             AND ($3 IS NULL OR r.status = $3) AND ($4 IS NULL OR r.id < $4) \
             ORDER BY r.id DESC LIMIT $5"
        )))
        .bind(&filter.project)
        .bind(&filter.branch)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(filter.before)
        .bind(if filter.limit > 0 { filter.limit } else { 50 })
        .fetch_all(&self.pool)
        .await
        .context("listing runs")?;
        rows.iter().map(run_from).collect()
    }

    async fn run_detail(&self, run: i64) -> Result<Option<RunDetail>> {
        let Some(row) = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id WHERE r.id = $1"
        )))
        .bind(run)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let run_rec = run_from(&row)?;
        let stages = sqlx::query("SELECT * FROM stages WHERE run_id = $1 ORDER BY position")
            .bind(run)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| -> Result<StageRecord> {
                Ok(StageRecord {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    position: r.try_get("position")?,
                    name: r.try_get("name")?,
                    kind: r.try_get("kind")?,
                    status: parse(r.try_get("status")?)?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    note: r.try_get("note")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let jobs = sqlx::query(
            "SELECT j.* FROM jobs j JOIN stages s ON s.id = j.stage_id WHERE j.run_id = $1 ORDER BY s.position, j.position",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| -> Result<JobRecord> {
            Ok(JobRecord {
                id: r.try_get("id")?,
                run_id: r.try_get("run_id")?,
                stage_id: r.try_get("stage_id")?,
                position: r.try_get("position")?,
                name: r.try_get("name")?,
                status: parse(r.try_get("status")?)?,
                attempt: r.try_get("attempt")?,
                allow_failure: r.try_get("allow_failure")?,
                exit_code: r.try_get("exit_code")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                error: r.try_get("error")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let steps = sqlx::query(
            "SELECT st.* FROM steps st JOIN jobs j ON j.id = st.job_id WHERE j.run_id = $1 \
             ORDER BY st.job_id, st.attempt, st.position",
        )
        .bind(run)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| -> Result<StepRecord> {
            Ok(StepRecord {
                id: r.try_get("id")?,
                job_id: r.try_get("job_id")?,
                attempt: r.try_get("attempt")?,
                position: r.try_get("position")?,
                name: r.try_get("name")?,
                status: parse::<StepStatus>(r.try_get("status")?)?,
                exit_code: r.try_get("exit_code")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let artifacts = sqlx::query("SELECT * FROM artifacts WHERE run_id = $1 ORDER BY id")
            .bind(run)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(artifact_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(RunDetail {
            run: run_rec,
            stages,
            jobs,
            steps,
            artifacts,
        }))
    }

    async fn logs(
        &self,
        run: i64,
        job: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogRecord>> {
        // The steps whose lines we want (few), then lines in id order from the cursor. Reading
        // by id (the primary key) from a known start keeps every page cheap however long the
        // log is; letting the planner join first would sort the whole log for each page.
        let steps: Vec<i64> = sqlx::query_scalar(
            "SELECT st.id FROM steps st JOIN jobs j ON j.id = st.job_id WHERE j.run_id = $1 AND ($2 IS NULL OR j.name = $2)",
        )
        .bind(run)
        .bind(job)
        .fetch_all(&self.pool)
        .await
        .context("reading logs")?;
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let mut start = after;
        if after == 0 {
            let mut first: Option<i64> = None;
            for step in &steps {
                let min: Option<i64> =
                    sqlx::query_scalar("SELECT MIN(id) FROM log_lines WHERE step_id = $1")
                        .bind(step)
                        .fetch_one(&self.pool)
                        .await?;
                first = match (first, min) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            match first {
                Some(f) => start = f - 1,
                None => return Ok(Vec::new()),
            }
        }
        let list = steps
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT l.id, j.name AS job, st.attempt, st.name AS step, l.line, l.at, l.stream, l.text \
             FROM log_lines l JOIN steps st ON st.id = l.step_id JOIN jobs j ON j.id = st.job_id \
             WHERE +l.step_id IN ({list}) AND l.id > $1 ORDER BY l.id LIMIT $2"
        )))
        .bind(start)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("reading logs")?;
        rows.iter()
            .map(|r| -> Result<LogRecord> {
                Ok(LogRecord {
                    id: r.try_get("id")?,
                    job: r.try_get("job")?,
                    attempt: r.try_get("attempt")?,
                    step: r.try_get("step")?,
                    line: r.try_get("line")?,
                    at: r.try_get("at")?,
                    stream: Stream::parse(&r.try_get::<String, _>("stream")?),
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }

    async fn enqueue_run(&self, run: QueuedRun) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let project = upsert_project_in(&mut *tx, &run.project, &run.repo).await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (project_id, commit_sha, branch, pipeline_file, trigger_kind, status, created_at, trigger_key) \
             VALUES ($1, $2, $3, '', $4, 'queued', $5, $6) ON CONFLICT (trigger_key) DO NOTHING RETURNING id",
        )
        .bind(project)
        .bind(&run.commit)
        .bind(&run.branch)
        .bind(&run.trigger)
        .bind(run.created_at)
        .bind(&run.trigger_key)
        .fetch_optional(&mut *tx)
        .await
        .context("queueing the run")?;
        tx.commit().await?;
        Ok(id)
    }

    async fn supersede_queued(
        &self,
        project: &str,
        branch: &str,
        newer: i64,
        at: Millis,
    ) -> Result<Vec<i64>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE runs SET status = 'cancelled', finished_at = $1, error = $2 \
             WHERE status = 'queued' AND id < $3 AND branch = $4 \
             AND project_id = (SELECT id FROM projects WHERE name = $5) RETURNING id",
        )
        .bind(at)
        .bind(format!(
            "superseded by run {newer}, a newer commit on {branch}"
        ))
        .bind(newer)
        .bind(branch)
        .bind(project)
        .fetch_all(&self.pool)
        .await
        .context("superseding queued runs")?;
        Ok(ids)
    }

    async fn claim_next_run(&self, owner: &str, at: Millis) -> Result<Option<RunRecord>> {
        // One statement: the guard `status = 'queued'` makes a second claimer update nothing.
        // (PostgreSQL will add `FOR UPDATE SKIP LOCKED` to the sub-select.)
        let id: Option<i64> = sqlx::query_scalar(
            "UPDATE runs SET status = 'running', owner = $1, started_at = $2 \
             WHERE id = (SELECT id FROM runs WHERE status = 'queued' ORDER BY id LIMIT 1) AND status = 'queued' \
             RETURNING id",
        )
        .bind(owner)
        .bind(at)
        .fetch_optional(&self.pool)
        .await
        .context("claiming a queued run")?;
        match id {
            None => Ok(None),
            Some(id) => Ok(self.run_detail(id).await?.map(|d| d.run)),
        }
    }

    async fn attach_plan(
        &self,
        run: i64,
        pipeline_file: &str,
        stages: &[NewStage],
    ) -> Result<RunIds> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE runs SET pipeline_file = $1 WHERE id = $2")
            .bind(pipeline_file)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        let ids = insert_plan(&mut tx, run, stages).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn cancel_queued(&self, run: i64, at: Millis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'cancelled', finished_at = $1, error = 'cancelled before it started' \
             WHERE id = $2 AND status = 'queued'",
        )
        .bind(at)
        .bind(run)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((parse(r.try_get("status")?)?, r.try_get("n")?)))
            .collect()
    }

    async fn upsert_project(&self, name: &str, repo: &str) -> Result<ProjectRecord> {
        let id = upsert_project_in(&self.pool, name, repo).await?;
        Ok(ProjectRecord {
            id,
            name: name.to_string(),
            repo: repo.to_string(),
        })
    }

    async fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        let rows = sqlx::query("SELECT id, name, repo FROM projects ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ProjectRecord {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    repo: r.try_get("repo")?,
                })
            })
            .collect()
    }

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        at: Millis,
    ) -> Result<TokenRecord> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .bind(at)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                anyhow::anyhow!("a token named `{name}` already exists")
            }
            _ => anyhow::Error::from(e).context("storing the token"),
        })?;
        Ok(TokenRecord {
            id,
            name: name.to_string(),
            role,
            created_at: at,
        })
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query("SELECT id, name, role, created_at FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(TokenRecord {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                role: parse(r.try_get("role")?)?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    async fn set_run_diagnosis(&self, run: i64, json: &str) -> Result<()> {
        sqlx::query("UPDATE runs SET diagnosis = $1 WHERE id = $2")
            .bind(json)
            .bind(run)
            .execute(&self.pool)
            .await
            .context("storing the diagnosis")?;
        Ok(())
    }

    async fn run_diagnosis(&self, run: i64) -> Result<Option<String>> {
        let d: Option<Option<String>> =
            sqlx::query_scalar("SELECT diagnosis FROM runs WHERE id = $1")
                .bind(run)
                .fetch_optional(&self.pool)
                .await?;
        Ok(d.flatten())
    }

    async fn latest_project_artifact(
        &self,
        project: &str,
        name: &str,
        branch: Option<&str>,
    ) -> Result<Option<ArtifactRecord>> {
        let row = sqlx::query(
            "SELECT a.* FROM artifacts a JOIN runs r ON r.id = a.run_id \
             JOIN projects p ON p.id = r.project_id \
             WHERE p.name = $1 AND a.name = $2 AND ($3 IS NULL OR r.branch = $3) \
             AND r.status = 'succeeded' AND a.removed_at IS NULL ORDER BY a.id DESC LIMIT 1",
        )
        .bind(project)
        .bind(name)
        .bind(branch)
        .fetch_optional(&self.pool)
        .await
        .context("finding the artifact of another project")?;
        row.as_ref().map(artifact_from).transpose()
    }

    async fn find_artifact(&self, q: &ArtifactQuery<'_>) -> Result<Option<ArtifactRecord>> {
        let row = sqlx::query(
            "SELECT a.* FROM artifacts a JOIN runs r ON r.id = a.run_id \
             JOIN projects p ON p.id = r.project_id \
             WHERE ($1 IS NULL OR a.name = $1) AND ($2 IS NULL OR a.run_id = $2) \
             AND ($3 IS NULL OR a.digest = $3) AND ($4 IS NULL OR p.name = $4) \
             ORDER BY a.id DESC LIMIT 1",
        )
        .bind(q.name)
        .bind(q.run)
        .bind(q.digest)
        .bind(q.project)
        .fetch_optional(&self.pool)
        .await
        .context("finding the artifact")?;
        row.as_ref().map(artifact_from).transpose()
    }

    async fn list_artifacts(
        &self,
        project: Option<&str>,
        run: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ArtifactListing>> {
        let rows = sqlx::query(
            "SELECT a.*, p.name AS project_name, r.branch AS run_branch, r.commit_sha AS run_commit, \
             j.name AS job_name FROM artifacts a JOIN runs r ON r.id = a.run_id \
             JOIN projects p ON p.id = r.project_id JOIN jobs j ON j.id = a.job_id \
             WHERE ($1 IS NULL OR a.run_id = $1) AND ($3 IS NULL OR p.name = $3) \
             ORDER BY a.id DESC LIMIT $2",
        )
        .bind(run)
        .bind(limit)
        .bind(project)
        .fetch_all(&self.pool)
        .await
        .context("listing artifacts")?;
        let pins: Vec<(String, String)> =
            sqlx::query_as("SELECT digest, reason FROM pins ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .context("reading pins")?;
        rows.iter()
            .map(|row| {
                let artifact = artifact_from(row)?;
                Ok(ArtifactListing {
                    pins: pins
                        .iter()
                        .filter(|(d, _)| *d == artifact.digest)
                        .map(|(_, r)| r.clone())
                        .collect(),
                    artifact,
                    project: row.try_get("project_name")?,
                    branch: row.try_get("run_branch")?,
                    commit: row.try_get("run_commit")?,
                    job: row.try_get("job_name")?,
                })
            })
            .collect()
    }

    async fn create_share(&self, share: &ShareRecord) -> Result<ShareRecord> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO shares (digest, file_name, media_type, expires_at, created_at, created_by, stable, presign) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&share.digest)
        .bind(&share.file_name)
        .bind(&share.media_type)
        .bind(share.expires_at)
        .bind(share.created_at)
        .bind(&share.created_by)
        .bind(share.stable)
        .bind(share.presign)
        .fetch_one(&self.pool)
        .await
        .context("recording the share link")?;
        Ok(ShareRecord {
            id,
            ..share.clone()
        })
    }

    async fn share(&self, id: i64) -> Result<Option<ShareRecord>> {
        let row = sqlx::query("SELECT * FROM shares WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(ShareRecord {
                id: r.try_get("id")?,
                digest: r.try_get("digest")?,
                file_name: r.try_get("file_name")?,
                media_type: r.try_get("media_type")?,
                expires_at: r.try_get("expires_at")?,
                revoked_at: r.try_get("revoked_at")?,
                created_at: r.try_get("created_at")?,
                created_by: r.try_get("created_by")?,
                stable: r.try_get("stable")?,
                presign: r.try_get("presign")?,
            })
        })
        .transpose()
    }

    async fn revoke_share(&self, id: i64, at: Millis) -> Result<bool> {
        let done =
            sqlx::query("UPDATE shares SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn pin(&self, digest: &str, reason: &str, at: Millis) -> Result<()> {
        sqlx::query("INSERT INTO pins (digest, reason, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest, reason) DO NOTHING")
            .bind(digest)
            .bind(reason)
            .bind(at)
            .execute(&self.pool)
            .await
            .context("pinning")?;
        Ok(())
    }

    async fn unpin(&self, digest: &str, reason: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM pins WHERE digest = $1 AND reason = $2")
            .bind(digest)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn pins(&self, digest: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT reason FROM pins WHERE digest = $1 ORDER BY id")
                .bind(digest)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn retention_candidates(
        &self,
        keep_runs: i64,
        cutoff: Millis,
    ) -> Result<Vec<ArtifactRecord>> {
        let rows = sqlx::query(
            "SELECT a.* FROM artifacts a JOIN runs r ON r.id = a.run_id \
             WHERE a.removed_at IS NULL AND a.created_at < $1 \
             AND a.digest NOT IN (SELECT digest FROM pins) \
             AND (SELECT COUNT(DISTINCT a2.run_id) FROM artifacts a2 JOIN runs r2 ON r2.id = a2.run_id \
                  WHERE r2.project_id = r.project_id AND COALESCE(r2.branch, '') = COALESCE(r.branch, '') \
                  AND a2.run_id > a.run_id) >= $2 \
             ORDER BY a.id",
        )
        .bind(cutoff)
        .bind(keep_runs)
        .fetch_all(&self.pool)
        .await
        .context("planning retention")?;
        rows.iter().map(artifact_from).collect()
    }

    async fn mark_removed(&self, ids: &[i64], at: Millis) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query(
                "UPDATE artifacts SET removed_at = $1 WHERE id = $2 AND removed_at IS NULL",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn digest_in_use(&self, digest: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM artifacts WHERE digest = $1 AND removed_at IS NULL",
        )
        .bind(digest)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }
    async fn create_release(&self, release: NewRelease) -> Result<ReleaseRecord> {
        releases::create(&self.pool, release).await
    }
    async fn set_release_state(
        &self,
        id: i64,
        state: ReleaseState,
        reason: Option<&str>,
        at: Millis,
    ) -> Result<()> {
        releases::set_state(&self.pool, id, state, reason, at).await
    }
    async fn switch_live(
        &self,
        to: i64,
        previous: ReleaseState,
        reason: Option<&str>,
        at: Millis,
    ) -> Result<()> {
        releases::switch_live(&self.pool, to, previous, reason, at).await
    }
    async fn add_release_event(
        &self,
        release: i64,
        kind: &str,
        message: &str,
        at: Millis,
    ) -> Result<()> {
        releases::add_event(&self.pool, release, kind, message, at).await
    }
    async fn mark_retired(&self, id: i64, at: Millis) -> Result<()> {
        releases::mark_retired(&self.pool, id, at).await
    }
    async fn releases(&self, project: &str, environment: &str) -> Result<Vec<ReleaseRecord>> {
        releases::list(&self.pool, project, environment).await
    }
    async fn release_events(&self, release: i64) -> Result<Vec<ReleaseEvent>> {
        releases::events(&self.pool, release).await
    }
    async fn environments(&self) -> Result<Vec<(String, String)>> {
        releases::environments(&self.pool).await
    }
    async fn deploying_releases(&self) -> Result<Vec<ReleaseRecord>> {
        releases::deploying(&self.pool).await
    }
    async fn acquire_env_lock(&self, lock: &EnvLock) -> Result<Result<(), EnvLock>> {
        releases::acquire_lock(&self.pool, lock).await
    }
    async fn renew_env_lock(
        &self,
        project: &str,
        environment: &str,
        owner: &str,
        expires_at: Millis,
    ) -> Result<bool> {
        releases::renew_lock(&self.pool, project, environment, owner, expires_at).await
    }
    async fn release_env_lock(&self, project: &str, environment: &str, owner: &str) -> Result<()> {
        releases::release_lock(&self.pool, project, environment, owner).await
    }
    async fn env_locks(&self) -> Result<Vec<EnvLock>> {
        releases::locks(&self.pool).await
    }
}
