//! `gantry cache ls` and `gantry cache rm`: the job caches of a data directory (the server's, or
//! `gantry run`'s), read and removed through the state store and the artifact store directly.

use super::CliResult;
use crate::context::Context;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
#[command(defer = true)]
pub enum CacheCommand {
    /// List the caches, least recently used first
    Ls {
        /// Only this project's
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove caches: one key of a project, or all of its caches whose keys start with a prefix
    Rm {
        project: String,
        /// The key, or with --prefix the start of the keys
        key: String,
        #[arg(long)]
        prefix: bool,
    },
}

pub async fn cache(cmd: CacheCommand, data_dir: Option<PathBuf>) -> CliResult {
    let ctx = Context::open_here(data_dir).await?;
    match cmd {
        CacheCommand::Ls { project, json } => {
            let caches = ctx.state.caches(project.as_deref()).await?;
            if json {
                let rows: Vec<serde_json::Value> = caches
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "project": c.project, "key": c.key, "digest": c.digest,
                            "size": c.size, "created_at": c.created_at, "last_used_at": c.last_used_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
                return Ok(());
            }
            if caches.is_empty() {
                println!("no caches");
            }
            for c in &caches {
                let used = jiff::Timestamp::from_millisecond(c.last_used_at)
                    .map_or_else(|_| c.last_used_at.to_string(), |t| t.to_string());
                println!(
                    "{}  {}  {}  last used {used}",
                    c.project,
                    c.key,
                    crate::render::human_size(c.size.max(0) as u64),
                );
            }
        }
        CacheCommand::Rm {
            project,
            key,
            prefix,
        } => {
            let store = ctx.artifacts()?;
            let caches = ctx.state.caches(Some(&project)).await?;
            let chosen: Vec<_> = caches
                .into_iter()
                .filter(|c| {
                    if prefix {
                        c.key.starts_with(&key)
                    } else {
                        c.key == key
                    }
                })
                .collect();
            if chosen.is_empty() {
                return Err(anyhow::anyhow!(
                    "project `{project}` has no cache `{key}`{}",
                    if prefix { "…" } else { "" }
                )
                .into());
            }
            for c in chosen {
                ctx.state.remove_cache(c.id).await?;
                if !ctx.state.digest_in_use(&c.digest).await? {
                    store.delete(&c.digest).await?;
                }
                println!("removed cache {} of {}", c.key, c.project);
            }
        }
    }
    Ok(())
}
