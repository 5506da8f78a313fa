//! Projects and API token hashes in SQLite (the `ProjectStore` port).

use super::*;

#[async_trait]
impl ProjectStore for SqliteStore {
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
}
