//! The artifact index, share links, pins and job caches (the `ArtifactIndex` port).

use super::*;

#[async_trait]
impl ArtifactIndex for SqlStore {
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
        .bind(i64::from(share.stable))
        .bind(i64::from(share.presign))
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
                stable: flag(&r, "stable")?,
                presign: flag(&r, "presign")?,
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

    async fn share_key_or(&self, candidate: &[u8], at: Millis) -> Result<Vec<u8>> {
        sqlx::query(
            "INSERT INTO share_keys (name, key_hex, updated_at) VALUES ('share', $1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(hex::encode(candidate))
        .bind(at)
        .execute(&self.pool)
        .await
        .context("storing the share-link key")?;
        self.stored_share_key()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the share-link key vanished as it was stored"))
    }

    async fn stored_share_key(&self) -> Result<Option<Vec<u8>>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT key_hex FROM share_keys WHERE name = 'share'")
                .fetch_optional(&self.pool)
                .await
                .context("reading the share-link key")?;
        row.map(|(h,)| hex::decode(h.trim()).context("the stored share-link key is not hex"))
            .transpose()
    }

    async fn set_share_key(&self, key: &[u8], at: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO share_keys (name, key_hex, updated_at) VALUES ('share', $1, $2) ON CONFLICT (name) DO UPDATE SET key_hex = excluded.key_hex, updated_at = excluded.updated_at",
        )
        .bind(hex::encode(key))
        .bind(at)
        .execute(&self.pool)
        .await
        .context("replacing the share-link key")?;
        Ok(())
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
        let mut tx = self.write_tx().await?;
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
            "SELECT (SELECT COUNT(*) FROM artifacts WHERE digest = $1 AND removed_at IS NULL) \
             + (SELECT COUNT(*) FROM caches WHERE digest = $1)",
        )
        .bind(digest)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    async fn find_cache(
        &self,
        project: &str,
        key: &str,
        prefixes: &[String],
    ) -> Result<Option<CacheRecord>> {
        let exact = sqlx::query("SELECT * FROM caches WHERE project = $1 AND key = $2")
            .bind(project)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = exact {
            return Ok(Some(cache_from(&row)?));
        }
        for prefix in prefixes {
            // A prefix match without LIKE's wildcards: `_` and `%` in keys are literal.
            let row = sqlx::query(
                "SELECT * FROM caches WHERE project = $1 AND substr(key, 1, length($2)) = $2 \
                 ORDER BY created_at DESC, id DESC LIMIT 1",
            )
            .bind(project)
            .bind(prefix)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                return Ok(Some(cache_from(&row)?));
            }
        }
        Ok(None)
    }

    async fn save_cache(&self, c: &CacheRecord) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO caches (project, key, digest, size, media_type, created_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (project, key) DO NOTHING",
        )
        .bind(&c.project)
        .bind(&c.key)
        .bind(&c.digest)
        .bind(c.size)
        .bind(&c.media_type)
        .bind(c.created_at)
        .bind(c.last_used_at)
        .execute(&self.pool)
        .await
        .context("recording a cache")?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_cache(&self, id: i64, at: Millis) -> Result<()> {
        sqlx::query("UPDATE caches SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn caches(&self, project: Option<&str>) -> Result<Vec<CacheRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM caches WHERE ($1 IS NULL OR project = $1) ORDER BY last_used_at, id",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(cache_from).collect()
    }

    async fn remove_cache(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM caches WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn cache_from(row: &AnyRow) -> Result<CacheRecord> {
    Ok(CacheRecord {
        id: row.try_get("id")?,
        project: row.try_get("project")?,
        key: row.try_get("key")?,
        digest: row.try_get("digest")?,
        size: row.try_get("size")?,
        media_type: row.try_get("media_type")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}
