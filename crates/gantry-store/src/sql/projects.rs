//! Projects, API token hashes and dashboard sessions (the `ProjectStore` port).

use super::*;

#[async_trait]
impl ProjectStore for SqlStore {
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
                anyhow::Error::new(Conflict(format!("a token named `{name}` already exists")))
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

    async fn create_session(&self, session: &SessionRecord) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(session.created_at)
            .execute(&mut *tx)
            .await
            .context("forgetting expired sessions")?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, token_hash, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.id_hash)
        .bind(&session.token_hash)
        .bind(&session.csrf)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .context("storing the session")?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, id_hash: &str, now: Millis) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT id_hash, token_hash, csrf, created_at, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .context("reading a session")?;
        row.map(|r| {
            Ok(SessionRecord {
                id_hash: r.try_get("id_hash")?,
                token_hash: r.try_get("token_hash")?,
                csrf: r.try_get("csrf")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn take_session(&self, id_hash: &str, now: Millis) -> Result<Option<SessionRecord>> {
        // One statement: of two takers, the second finds no row to delete.
        let row = sqlx::query(
            "DELETE FROM sessions WHERE id_hash = $1 RETURNING id_hash, token_hash, csrf, created_at, expires_at",
        )
        .bind(id_hash)
        .fetch_optional(&self.pool)
        .await
        .context("taking a session")?;
        let Some(r) = row else { return Ok(None) };
        let s = SessionRecord {
            id_hash: r.try_get("id_hash")?,
            token_hash: r.try_get("token_hash")?,
            csrf: r.try_get("csrf")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
        };
        Ok((s.expires_at > now).then_some(s))
    }

    async fn remove_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .context("ending a session")?;
        Ok(())
    }
}
