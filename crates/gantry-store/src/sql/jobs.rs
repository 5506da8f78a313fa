//! The job queue of runners (the `JobQueueStore` port): a claim picks the oldest fitting row
//! and takes it with a guarded `UPDATE` in one writing transaction (rows others hold are
//! skipped on PostgreSQL, `FOR UPDATE SKIP LOCKED`), so one job has one runner at a time.

use super::*;
use gantry_engine::ports::{JobClaim, LeaseRenewal, NewQueuedJob, QueuedJob, QueuedJobState};

/// Rows looked at per round while looking for one whose labels the runner has.
const CLAIM_PAGE: i64 = 200;

fn labels_text(labels: &[String]) -> String {
    labels.join(",")
}

fn labels_of(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn queued_from(row: &AnyRow) -> Result<QueuedJob> {
    Ok(QueuedJob {
        id: row.try_get("id")?,
        run_id: row.try_get("run_id")?,
        job_id: row.try_get("job_id")?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        labels: labels_of(&row.try_get::<String, _>("labels")?),
        payload: row.try_get("payload")?,
        state: parse(row.try_get("state")?)?,
        runner: row.try_get("runner")?,
        lease_hash: row.try_get("lease_hash")?,
        lease_until: row.try_get("lease_until")?,
        cancel_requested: flag(row, "cancel_requested")?,
        queued_at: row.try_get("queued_at")?,
        claimed_at: row.try_get("claimed_at")?,
        finished_at: row.try_get("finished_at")?,
        outcome: row.try_get("outcome")?,
        exit_code: row
            .try_get::<Option<i64>, _>("exit_code")?
            .map(|c| c as i32),
        error: row.try_get("error")?,
    })
}

#[async_trait]
impl JobQueueStore for SqlStore {
    async fn enqueue_job(&self, job: NewQueuedJob) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO queued_jobs (run_id, job_id, attempt, labels, payload, state, queued_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', $6) RETURNING id",
        )
        .bind(job.run_id)
        .bind(job.job_id)
        .bind(i64::from(job.attempt))
        .bind(labels_text(&job.labels))
        .bind(&job.payload)
        .bind(job.queued_at)
        .fetch_one(&mut *tx)
        .await
        .with_context(|| {
            format!(
                "queueing attempt {} of job {} for a runner",
                job.attempt, job.job_id
            )
        })?;
        if self.backend == Backend::Postgres {
            sqlx::query(AssertSqlSafe(format!("NOTIFY {JOB_CHANNEL}")))
                .execute(&mut *tx)
                .await
                .context("signalling the queued job")?;
        }
        tx.commit().await?;
        Ok(id)
    }

    async fn claim_job(&self, claim: &JobClaim) -> Result<Option<QueuedJob>> {
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE OF q SKIP LOCKED",
        };
        let mut tx = self.write_tx().await?;
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT q.id, q.labels FROM queued_jobs q JOIN runs r ON r.id = q.run_id \
                 WHERE q.state = 'queued' AND r.status = 'running' AND q.id > $1 \
                 ORDER BY q.id LIMIT $2{lock}"
            )))
            .bind(after)
            .bind(CLAIM_PAGE)
            .fetch_all(&mut *tx)
            .await
            .context("looking for a queued job")?;
            let Some(last) = rows.last() else {
                return Ok(None);
            };
            after = last.try_get("id")?;
            let fitting = rows.iter().find_map(|r| {
                let labels = labels_of(&r.try_get::<String, _>("labels").ok()?);
                labels
                    .iter()
                    .all(|l| claim.labels.contains(l))
                    .then(|| r.try_get::<i64, _>("id").ok())
                    .flatten()
            });
            let Some(id) = fitting else { continue };
            let row = sqlx::query(
                "UPDATE queued_jobs SET state = 'claimed', runner = $1, lease_hash = $2, \
                 lease_until = $3, claimed_at = $4 WHERE id = $5 AND state = 'queued' RETURNING *",
            )
            .bind(&claim.runner)
            .bind(&claim.lease_hash)
            .bind(claim.until)
            .bind(claim.at)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .context("claiming a queued job")?;
            let claimed = row.as_ref().map(queued_from).transpose()?;
            tx.commit().await?;
            return Ok(claimed);
        }
    }

    async fn queued_job(&self, id: i64) -> Result<Option<QueuedJob>> {
        let row = sqlx::query("SELECT * FROM queued_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .context("reading a queued job")?;
        row.as_ref().map(queued_from).transpose()
    }

    async fn renew_job(
        &self,
        id: i64,
        lease_hash: &str,
        at: Millis,
        until: Millis,
    ) -> Result<LeaseRenewal> {
        let row = sqlx::query(
            "UPDATE queued_jobs SET lease_until = $1 \
             WHERE id = $2 AND lease_hash = $3 AND state = 'claimed' AND lease_until >= $4 \
             RETURNING cancel_requested, (SELECT status FROM runs WHERE runs.id = queued_jobs.run_id) AS run_status",
        )
        .bind(until)
        .bind(id)
        .bind(lease_hash)
        .bind(at)
        .fetch_optional(&self.pool)
        .await
        .context("renewing a job's lease")?;
        let Some(row) = row else {
            return Ok(LeaseRenewal::Gone);
        };
        let status: String = row.try_get("run_status")?;
        Ok(LeaseRenewal::Held {
            cancel: flag(&row, "cancel_requested")? || status != "running",
        })
    }

    async fn finish_job(
        &self,
        id: i64,
        lease_hash: &str,
        outcome: &str,
        exit_code: Option<i32>,
        error: Option<&str>,
        at: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE queued_jobs SET state = 'finished', outcome = $1, exit_code = $2, error = $3, \
             finished_at = $4 WHERE id = $5 AND lease_hash = $6 AND state = 'claimed'",
        )
        .bind(outcome)
        .bind(exit_code.map(i64::from))
        .bind(error)
        .bind(at)
        .bind(id)
        .bind(lease_hash)
        .execute(&self.pool)
        .await
        .context("recording how a runner's job ended")?;
        Ok(done.rows_affected() == 1)
    }

    async fn lose_job(&self, id: i64, at: Millis, error: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let lost = sqlx::query(
            "UPDATE queued_jobs SET state = 'lost', error = $1, finished_at = $2 \
             WHERE id = $3 AND state = 'claimed' AND lease_until < $2 RETURNING job_id, attempt",
        )
        .bind(error)
        .bind(at)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .context("calling a runner's job lost")?;
        let Some(row) = lost else {
            return Ok(false);
        };
        // The steps the runner was in the middle of end with it.
        sqlx::query(
            "UPDATE steps SET status = 'interrupted', finished_at = $1 \
             WHERE job_id = $2 AND attempt = $3 AND status = 'running'",
        )
        .bind(at)
        .bind(row.try_get::<i64, _>("job_id")?)
        .bind(row.try_get::<i64, _>("attempt")?)
        .execute(&mut *tx)
        .await
        .context("ending the lost attempt's steps")?;
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel_job(&self, id: i64, at: Millis) -> Result<Option<QueuedJobState>> {
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE queued_jobs SET cancel_requested = 1, \
             state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, \
             finished_at = CASE WHEN state = 'queued' THEN $1 ELSE finished_at END \
             WHERE id = $2 RETURNING state",
        )
        .bind(at)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .context("cancelling a queued job")?;
        state.map(parse).transpose()
    }

    async fn count_jobs_by_state(&self) -> Result<Vec<(QueuedJobState, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM queued_jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((parse(r.try_get("state")?)?, r.try_get("n")?)))
            .collect()
    }
}

/// The channel a job queued for runners is announced on (PostgreSQL `NOTIFY`).
pub(crate) const JOB_CHANNEL: &str = "gantry_jobs";
