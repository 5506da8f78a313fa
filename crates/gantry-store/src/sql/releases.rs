//! Releases, their events and the per-environment deployment lock, for [`super::SqlStore`].
//! The store's `ReleaseStore` methods (at the end) call these; each is one statement or one
//! transaction.

use super::SqlStore;
use anyhow::{Context, Result, anyhow};
use async_trait::async_trait;
use gantry_engine::ports::{
    CanaryProgress, EnvDriver, EnvLock, EnvRequest, Millis, NewRelease, ReleaseEvent,
    ReleaseRecord, ReleaseStore,
};
use gantry_engine::release::{ReleaseKind, ReleaseState};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

fn release_from(row: &AnyRow) -> Result<ReleaseRecord> {
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    Ok(ReleaseRecord {
        id: row.try_get("id")?,
        project: row.try_get("project")?,
        environment: row.try_get("environment")?,
        number: row.try_get("number")?,
        kind: ReleaseKind::parse(&kind)
            .ok_or_else(|| anyhow!("corrupt state: release kind {kind}"))?,
        source: row.try_get("source_number")?,
        artifact: row.try_get("artifact")?,
        digest: row.try_get("digest")?,
        run_id: row.try_get("run_id")?,
        commit: row.try_get("commit_sha")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        state: ReleaseState::parse(&state)
            .ok_or_else(|| anyhow!("corrupt state: release state {state}"))?,
        reason: row.try_get("reason")?,
        live_at: row.try_get("live_at")?,
        ended_at: row.try_get("ended_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

fn lock_from(row: &AnyRow) -> Result<EnvLock> {
    Ok(EnvLock {
        project: row.try_get("project")?,
        environment: row.try_get("environment")?,
        owner: row.try_get("owner")?,
        purpose: row.try_get("purpose")?,
        acquired_at: row.try_get("acquired_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

async fn event(
    tx: &mut Transaction<'_, Any>,
    release: i64,
    kind: &str,
    message: &str,
    at: Millis,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO release_events (release_id, at, kind, message) VALUES ($1, $2, $3, $4)",
    )
    .bind(release)
    .bind(at)
    .bind(kind)
    .bind(message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn state_message(state: ReleaseState, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{state}: {r}"),
        None => state.to_string(),
    }
}

pub async fn create(s: &SqlStore, r: NewRelease) -> Result<ReleaseRecord> {
    let mut tx = s.write_tx().await?;
    let number: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM releases WHERE project = $1 AND environment = $2",
    )
    .bind(&r.project)
    .bind(&r.environment)
    .fetch_one(&mut *tx)
    .await?;
    let row = sqlx::query(
        "INSERT INTO releases (project, environment, number, kind, source_number, artifact, digest, \
         run_id, commit_sha, created_by, created_at, state, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'deploying', $12) RETURNING *",
    )
    .bind(&r.project)
    .bind(&r.environment)
    .bind(number)
    .bind(r.kind.as_str())
    .bind(r.source.unwrap_or(number))
    .bind(&r.artifact)
    .bind(&r.digest)
    .bind(r.run_id)
    .bind(&r.commit)
    .bind(&r.created_by)
    .bind(r.created_at)
    .bind(&r.reason)
    .fetch_one(&mut *tx)
    .await
    .context("recording the release")?;
    let release = release_from(&row)?;
    let what = match r.kind {
        ReleaseKind::Deploy => format!(
            "deploying {} ({}) for {}",
            r.artifact,
            short(&r.digest),
            r.created_by
        ),
        ReleaseKind::Rollback => format!(
            "rolling back to release {} ({}) for {}",
            release.source,
            short(&r.digest),
            r.created_by
        ),
    };
    event(&mut tx, release.id, "state", &what, r.created_at).await?;
    tx.commit().await?;
    Ok(release)
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

pub async fn set_state(
    s: &SqlStore,
    id: i64,
    state: ReleaseState,
    reason: Option<&str>,
    at: Millis,
) -> Result<()> {
    let mut tx = s.write_tx().await?;
    let ends = matches!(
        state,
        ReleaseState::Failed | ReleaseState::RolledBack | ReleaseState::Superseded
    );
    sqlx::query(
        "UPDATE releases SET state = $1, reason = COALESCE($2, reason), \
         ended_at = CASE WHEN $3 AND live_at IS NOT NULL AND ended_at IS NULL THEN $4 ELSE ended_at END \
         WHERE id = $5",
    )
    .bind(state.as_str())
    .bind(reason)
    .bind(ends)
    .bind(at)
    .bind(id)
    .execute(&mut *tx)
    .await
    .context("changing the release state")?;
    event(&mut tx, id, "state", &state_message(state, reason), at).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn switch_live(
    s: &SqlStore,
    to: i64,
    previous: ReleaseState,
    reason: Option<&str>,
    at: Millis,
) -> Result<()> {
    let mut tx = s.write_tx().await?;
    let target = sqlx::query("SELECT * FROM releases WHERE id = $1")
        .bind(to)
        .fetch_one(&mut *tx)
        .await
        .context("finding the release to switch to")?;
    let target = release_from(&target)?;
    let old: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM releases WHERE project = $1 AND environment = $2 AND state = 'live' AND id <> $3",
    )
    .bind(&target.project)
    .bind(&target.environment)
    .bind(to)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(old) = old {
        sqlx::query("UPDATE releases SET state = $1, ended_at = $2, reason = COALESCE($3, reason) WHERE id = $4")
            .bind(previous.as_str())
            .bind(at)
            .bind(reason)
            .bind(old)
            .execute(&mut *tx)
            .await?;
        let msg = format!("{previous}: traffic switched to release {}", target.number);
        let msg = match reason {
            Some(r) => format!("{msg} ({r})"),
            None => msg,
        };
        event(&mut tx, old, "state", &msg, at).await?;
    }
    sqlx::query(
        "UPDATE releases SET state = 'live', live_at = COALESCE(live_at, $1), ended_at = NULL WHERE id = $2",
    )
    .bind(at)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    event(&mut tx, to, "state", "live: users are sent to it", at).await?;
    tx.commit().await.context("switching the live release")?;
    Ok(())
}

pub async fn add_event(
    s: &SqlStore,
    release: i64,
    kind: &str,
    message: &str,
    at: Millis,
) -> Result<()> {
    let mut tx = s.write_tx().await?;
    event(&mut tx, release, kind, message, at).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn mark_retired(s: &SqlStore, id: i64, at: Millis) -> Result<()> {
    let mut tx = s.write_tx().await?;
    sqlx::query("UPDATE releases SET retired_at = $1 WHERE id = $2 AND retired_at IS NULL")
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    event(
        &mut tx,
        id,
        "note",
        "retired: its directory was removed and its artifact unpinned",
        at,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list(s: &SqlStore, project: &str, environment: &str) -> Result<Vec<ReleaseRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM releases WHERE project = $1 AND environment = $2 ORDER BY number DESC",
    )
    .bind(project)
    .bind(environment)
    .fetch_all(&s.pool)
    .await
    .context("listing releases")?;
    rows.iter().map(release_from).collect()
}

pub async fn events(s: &SqlStore, release: i64) -> Result<Vec<ReleaseEvent>> {
    let rows = sqlx::query("SELECT * FROM release_events WHERE release_id = $1 ORDER BY id")
        .bind(release)
        .fetch_all(&s.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ReleaseEvent {
                release: r.try_get("release_id")?,
                at: r.try_get("at")?,
                kind: r.try_get("kind")?,
                message: r.try_get("message")?,
            })
        })
        .collect()
}

pub async fn environments(s: &SqlStore) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query(
        "SELECT DISTINCT project, environment FROM releases ORDER BY project, environment",
    )
    .fetch_all(&s.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("project")?, r.try_get("environment")?)))
        .collect()
}

pub async fn deploying(s: &SqlStore) -> Result<Vec<ReleaseRecord>> {
    let rows =
        sqlx::query("SELECT * FROM releases WHERE state IN ('deploying', 'canary') ORDER BY id")
            .fetch_all(&s.pool)
            .await?;
    rows.iter().map(release_from).collect()
}

pub async fn acquire_lock(s: &SqlStore, lock: &EnvLock) -> Result<Result<(), EnvLock>> {
    // Insert, or take over an expired lease; the row that comes back says who holds it now.
    let row = sqlx::query(
        "INSERT INTO environment_locks (project, environment, owner, purpose, acquired_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (project, environment) DO UPDATE SET owner = excluded.owner, \
           purpose = excluded.purpose, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at \
         WHERE environment_locks.expires_at < excluded.acquired_at \
         RETURNING owner",
    )
    .bind(&lock.project)
    .bind(&lock.environment)
    .bind(&lock.owner)
    .bind(&lock.purpose)
    .bind(lock.acquired_at)
    .bind(lock.expires_at)
    .fetch_optional(&s.pool)
    .await
    .context("taking the deployment lock")?;
    if row.is_some() {
        return Ok(Ok(()));
    }
    let holder =
        sqlx::query("SELECT * FROM environment_locks WHERE project = $1 AND environment = $2")
            .bind(&lock.project)
            .bind(&lock.environment)
            .fetch_optional(&s.pool)
            .await?;
    match holder {
        Some(h) => Ok(Err(lock_from(&h)?)),
        // Released in between: try once more.
        None => Box::pin(acquire_lock(s, lock)).await,
    }
}

pub async fn renew_lock(
    s: &SqlStore,
    project: &str,
    environment: &str,
    owner: &str,
    expires_at: Millis,
) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE environment_locks SET expires_at = $1 WHERE project = $2 AND environment = $3 AND owner = $4",
    )
    .bind(expires_at)
    .bind(project)
    .bind(environment)
    .bind(owner)
    .execute(&s.pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn release_lock(
    s: &SqlStore,
    project: &str,
    environment: &str,
    owner: &str,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM environment_locks WHERE project = $1 AND environment = $2 AND owner = $3",
    )
    .bind(project)
    .bind(environment)
    .bind(owner)
    .execute(&s.pool)
    .await?;
    Ok(())
}

pub async fn locks(s: &SqlStore) -> Result<Vec<EnvLock>> {
    let rows = sqlx::query("SELECT * FROM environment_locks ORDER BY project, environment")
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(lock_from).collect()
}

fn env_request(row: &AnyRow) -> Result<EnvRequest> {
    let ok: Option<i64> = row.try_get("answer_ok")?;
    let answer: Option<String> = row.try_get("answer")?;
    Ok(EnvRequest {
        id: row.try_get("id")?,
        project: row.try_get("project")?,
        environment: row.try_get("environment")?,
        asked: row.try_get("asked")?,
        by: row.try_get("asked_by")?,
        asked_at: row.try_get("asked_at")?,
        answer: ok.zip(answer).map(|(ok, a)| (ok != 0, a)),
    })
}

#[async_trait]
impl ReleaseStore for SqlStore {
    async fn create_release(&self, release: NewRelease) -> Result<ReleaseRecord> {
        create(self, release).await
    }

    async fn set_release_state(
        &self,
        id: i64,
        state: ReleaseState,
        reason: Option<&str>,
        at: Millis,
    ) -> Result<()> {
        set_state(self, id, state, reason, at).await
    }

    async fn switch_live(
        &self,
        to: i64,
        previous: ReleaseState,
        reason: Option<&str>,
        at: Millis,
    ) -> Result<()> {
        switch_live(self, to, previous, reason, at).await
    }

    async fn add_release_event(
        &self,
        release: i64,
        kind: &str,
        message: &str,
        at: Millis,
    ) -> Result<()> {
        add_event(self, release, kind, message, at).await
    }

    async fn mark_retired(&self, id: i64, at: Millis) -> Result<()> {
        mark_retired(self, id, at).await
    }

    async fn releases(&self, project: &str, environment: &str) -> Result<Vec<ReleaseRecord>> {
        list(self, project, environment).await
    }

    async fn release_events(&self, release: i64) -> Result<Vec<ReleaseEvent>> {
        events(self, release).await
    }

    async fn claim_driver(
        &self,
        project: &str,
        environment: &str,
        owner: &str,
        until: Millis,
        at: Millis,
    ) -> Result<Result<(), EnvDriver>> {
        // One statement: taken when free, passed or already ours; the database decides races.
        let done = sqlx::query(
            "INSERT INTO env_drivers (project, environment, owner, expires_at, handover_to) \
             VALUES ($1, $2, $3, $4, NULL) \
             ON CONFLICT (project, environment) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at, \
             handover_to = CASE WHEN env_drivers.owner = excluded.owner THEN env_drivers.handover_to ELSE NULL END \
             WHERE env_drivers.owner = excluded.owner OR env_drivers.expires_at < $5",
        )
        .bind(project)
        .bind(environment)
        .bind(owner)
        .bind(until)
        .bind(at)
        .execute(&self.pool)
        .await
        .context("claiming an environment's driver")?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        let drivers = self.env_drivers().await?;
        match drivers
            .into_iter()
            .find(|d| d.project == project && d.environment == environment)
        {
            Some(d) => Ok(Err(d)),
            // Let go of between the two statements: free now.
            None => {
                self.claim_driver(project, environment, owner, until, at)
                    .await
            }
        }
    }

    async fn renew_drivers(&self, owner: &str, until: Millis) -> Result<()> {
        sqlx::query("UPDATE env_drivers SET expires_at = $1 WHERE owner = $2")
            .bind(until)
            .bind(owner)
            .execute(&self.pool)
            .await
            .context("renewing the environments' drivers")?;
        Ok(())
    }

    async fn request_handover(&self, project: &str, environment: &str, to: &str) -> Result<()> {
        sqlx::query(
            "UPDATE env_drivers SET handover_to = $1 WHERE project = $2 AND environment = $3",
        )
        .bind(to)
        .bind(project)
        .bind(environment)
        .execute(&self.pool)
        .await
        .context("asking for an environment's handover")?;
        Ok(())
    }

    async fn release_driver(&self, project: &str, environment: &str, owner: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM env_drivers WHERE project = $1 AND environment = $2 AND owner = $3",
        )
        .bind(project)
        .bind(environment)
        .bind(owner)
        .execute(&self.pool)
        .await
        .context("letting go of an environment")?;
        Ok(())
    }

    async fn env_drivers(&self) -> Result<Vec<EnvDriver>> {
        let rows: Vec<(String, String, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT project, environment, owner, expires_at, handover_to FROM env_drivers \
             ORDER BY project, environment",
        )
        .fetch_all(&self.pool)
        .await
        .context("reading the environments' drivers")?;
        Ok(rows
            .into_iter()
            .map(
                |(project, environment, owner, expires_at, handover_to)| EnvDriver {
                    project,
                    environment,
                    owner,
                    expires_at,
                    handover_to,
                },
            )
            .collect())
    }

    async fn set_canary_progress(
        &self,
        release: i64,
        progress: Option<CanaryProgress>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE releases SET canary_step = $1, canary_percent = $2, canary_since = $3 \
             WHERE id = $4",
        )
        .bind(progress.map(|p| p.step as i64))
        .bind(progress.map(|p| i64::from(p.percent)))
        .bind(progress.map(|p| p.since))
        .bind(release)
        .execute(&self.pool)
        .await
        .map_err(|e| self.write_error(e, "keeping the canary's progress"))?;
        Ok(())
    }

    async fn canary_progress(&self, release: i64) -> Result<Option<CanaryProgress>> {
        let row: Option<(Option<i64>, Option<i64>, Option<i64>)> = sqlx::query_as(
            "SELECT canary_step, canary_percent, canary_since FROM releases WHERE id = $1",
        )
        .bind(release)
        .fetch_optional(&self.pool)
        .await
        .context("reading the canary's progress")?;
        Ok(match row {
            Some((Some(step), Some(percent), Some(since))) => Some(CanaryProgress {
                step: usize::try_from(step).context("a canary step below 0")?,
                percent: u32::try_from(percent).context("a canary share out of range")?,
                since,
            }),
            _ => None,
        })
    }

    async fn environments(&self) -> Result<Vec<(String, String)>> {
        environments(self).await
    }

    async fn ask_driver(
        &self,
        project: &str,
        environment: &str,
        asked: &str,
        by: &str,
        at: Millis,
    ) -> Result<i64> {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO env_requests (project, environment, asked, asked_by, asked_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(project)
        .bind(environment)
        .bind(asked)
        .bind(by)
        .bind(at)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.write_error(e, "asking the environment's driver"))?;
        Ok(id)
    }

    async fn take_env_requests(&self, owner: &str, at: Millis) -> Result<Vec<EnvRequest>> {
        // Read first: a driver asks every second, and nearly always nothing waits (no write,
        // so a single SQLite server takes no write lock for it).
        let waiting: Option<(i64,)> = sqlx::query_as(
            "SELECT id FROM env_requests WHERE answered_at < $1 OR (taken_at IS NULL AND EXISTS \
             (SELECT 1 FROM env_drivers d WHERE d.project = env_requests.project \
              AND d.environment = env_requests.environment AND d.owner = $2)) LIMIT 1",
        )
        .bind(at - 600_000)
        .bind(owner)
        .fetch_optional(&self.pool)
        .await
        .context("looking for what was asked of this driver")?;
        if waiting.is_none() {
            return Ok(Vec::new());
        }
        sqlx::query("DELETE FROM env_requests WHERE answered_at < $1")
            .bind(at - 600_000)
            .execute(&self.pool)
            .await
            .map_err(|e| self.write_error(e, "removing old answers of drivers"))?;
        let rows = sqlx::query(
            "UPDATE env_requests SET taken_at = $1 WHERE taken_at IS NULL AND EXISTS \
             (SELECT 1 FROM env_drivers d WHERE d.project = env_requests.project \
              AND d.environment = env_requests.environment AND d.owner = $2) RETURNING *",
        )
        .bind(at)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.write_error(e, "taking what was asked of this driver"))?;
        let mut out = rows.iter().map(env_request).collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    async fn answer_env_request(&self, id: i64, ok: bool, answer: &str, at: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE env_requests SET answered_at = $1, answer_ok = $2, answer = $3 WHERE id = $4",
        )
        .bind(at)
        .bind(i64::from(ok))
        .bind(answer)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| self.write_error(e, "answering a request"))?;
        Ok(())
    }

    async fn env_request(&self, id: i64) -> Result<Option<EnvRequest>> {
        let row = sqlx::query("SELECT * FROM env_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .context("reading a request to a driver")?;
        row.as_ref().map(env_request).transpose()
    }

    async fn forget_env_request(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM env_requests WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.write_error(e, "removing a request to a driver"))?;
        Ok(())
    }

    async fn deploying_releases(&self) -> Result<Vec<ReleaseRecord>> {
        deploying(self).await
    }

    async fn acquire_env_lock(&self, lock: &EnvLock) -> Result<Result<(), EnvLock>> {
        acquire_lock(self, lock).await
    }

    async fn renew_env_lock(
        &self,
        project: &str,
        environment: &str,
        owner: &str,
        expires_at: Millis,
    ) -> Result<bool> {
        renew_lock(self, project, environment, owner, expires_at).await
    }

    async fn release_env_lock(&self, project: &str, environment: &str, owner: &str) -> Result<()> {
        release_lock(self, project, environment, owner).await
    }

    async fn env_locks(&self) -> Result<Vec<EnvLock>> {
        locks(self).await
    }
}
