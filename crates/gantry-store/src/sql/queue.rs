//! The run queue (the `QueueStore` port): one run per trigger key (a unique index), claimed by
//! one atomic `UPDATE … RETURNING` (with `FOR UPDATE SKIP LOCKED` on PostgreSQL).

use super::*;
use gantry_engine::ports::Signals;

/// The channel a queued run is announced on (PostgreSQL `NOTIFY`).
const QUEUE_CHANNEL: &str = "gantry_queue";

#[async_trait]
impl QueueStore for SqlStore {
    async fn register_owner(&self, o: &OwnerLease) -> Result<()> {
        sqlx::query(
            "INSERT INTO owners (name, host, pid, started_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO UPDATE SET host = excluded.host, pid = excluded.pid, \
             started_at = excluded.started_at, expires_at = excluded.expires_at",
        )
        .bind(&o.name)
        .bind(&o.host)
        .bind(o.pid as i64)
        .bind(o.started_at)
        .bind(o.expires_at)
        .execute(&self.pool)
        .await
        .context("registering the owner's lease")?;
        Ok(())
    }

    async fn renew_owner(&self, name: &str, until: Millis) -> Result<bool> {
        let done = sqlx::query("UPDATE owners SET expires_at = $1 WHERE name = $2")
            .bind(until)
            .bind(name)
            .execute(&self.pool)
            .await
            .context("renewing the owner's lease")?;
        Ok(done.rows_affected() == 1)
    }

    async fn owner(&self, name: &str) -> Result<Option<OwnerLease>> {
        let row = sqlx::query("SELECT * FROM owners WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(OwnerLease {
                name: r.try_get("name")?,
                host: r.try_get("host")?,
                pid: r.try_get::<i64, _>("pid")? as u32,
                started_at: r.try_get("started_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn remove_owner(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM owners WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn enqueue_run(&self, run: QueuedRun) -> Result<Option<i64>> {
        let mut tx = self.write_tx().await?;
        let project = upsert_project_in(&mut *tx, &run.project, &run.repo).await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO runs (project_id, commit_sha, branch, pipeline_file, trigger_kind, status, created_at, trigger_key, event, vars) \
             VALUES ($1, $2, $3, '', $4, 'queued', $5, $6, $7, $8) ON CONFLICT (trigger_key) DO NOTHING RETURNING id",
        )
        .bind(project)
        .bind(&run.commit)
        .bind(&run.branch)
        .bind(&run.trigger)
        .bind(run.created_at)
        .bind(&run.trigger_key)
        .bind(&run.event)
        .bind(vars_json(&run.vars))
        .fetch_optional(&mut *tx)
        .await
        .context("queueing the run")?;
        if id.is_some() && self.backend == Backend::Postgres {
            // Delivered to every listening server when the transaction commits.
            sqlx::query(AssertSqlSafe(format!("NOTIFY {QUEUE_CHANNEL}")))
                .execute(&mut *tx)
                .await
                .context("signalling the queued run")?;
        }
        tx.commit().await?;
        Ok(id)
    }

    async fn run_by_trigger_key(&self, key: &str) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM runs WHERE trigger_key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
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

    async fn supersede_queued_by_key(
        &self,
        prefix: &str,
        newer: i64,
        why: &str,
        at: Millis,
    ) -> Result<Vec<i64>> {
        // A prefix compared as text: `_` and `%` in project names are not wildcards.
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE runs SET status = 'cancelled', finished_at = $1, error = $2 \
             WHERE status = 'queued' AND id < $3 AND trigger_key IS NOT NULL \
             AND substr(trigger_key, 1, length($4)) = $4 RETURNING id",
        )
        .bind(at)
        .bind(why)
        .bind(newer)
        .bind(prefix)
        .fetch_all(&self.pool)
        .await
        .context("superseding queued runs")?;
        Ok(ids)
    }

    async fn claim_next_run(&self, owner: &str, at: Millis) -> Result<Option<RunRecord>> {
        // One statement: the guard `status = 'queued'` makes a second claimer update nothing.
        // PostgreSQL: the sub-select locks the row it picks and skips rows others have locked,
        // so claimers racing on several servers each take a different run instead of queueing
        // behind one.
        let pick = match self.backend {
            Backend::Sqlite => "SELECT id FROM runs WHERE status = 'queued' ORDER BY id LIMIT 1",
            Backend::Postgres => {
                "SELECT id FROM runs WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            }
        };
        let id: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "UPDATE runs SET status = 'running', owner = $1, started_at = $2 \
             WHERE id = ({pick}) AND status = 'queued' RETURNING id"
        )))
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
        let mut tx = self.write_tx().await?;
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

    async fn request_cancel(&self, run: i64, at: Millis) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET cancel_requested_at = COALESCE(cancel_requested_at, $1) \
             WHERE id = $2 AND status = 'running'",
        )
        .bind(at)
        .bind(run)
        .execute(&self.pool)
        .await
        .context("asking for a run's cancel")?;
        Ok(done.rows_affected() == 1)
    }

    async fn cancel_requests(&self, owner: &str) -> Result<Vec<i64>> {
        let ids: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM runs WHERE owner = $1 AND status = 'running' \
             AND cancel_requested_at IS NOT NULL ORDER BY id",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .context("reading the cancels asked for")?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    async fn count_runs_by_status(&self) -> Result<Vec<(RunStatus, i64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((parse(r.try_get("status")?)?, r.try_get("n")?)))
            .collect()
    }

    async fn queue_signals(&self) -> Result<Option<Signals>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect(url)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "listening for queued runs on {}: {}",
                    self.name,
                    redact_error(&e, url)
                )
            })?;
        listener
            .listen(QUEUE_CHANNEL)
            .await
            .with_context(|| format!("listening for queued runs on {}", self.name))?;
        let pool = self.pool.clone();
        let stream =
            futures_util::stream::unfold((listener, pool), |(mut listener, pool)| async move {
                if pool.is_closed() {
                    return None;
                }
                match listener.try_recv().await {
                    // A notification, or the connection lost (`None`; the next call makes it
                    // again): either way the queue is worth a look.
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for queued runs");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Some(((), (listener, pool)))
            });
        Ok(Some(Box::pin(stream)))
    }
}
