//! Pollers: one task per project with a `poll` interval. Each tick reads the remote's branches
//! with one `git ls-remote` (no fetch: the worker fetches a commit when it runs it) and queues a
//! run for the head of every watched branch that changed since the last tick. The store's unique
//! trigger key makes a head already queued (by an earlier poll, a webhook, or before a restart)
//! a no-op.

use super::Server;
use gantry_config::server::ProjectConfig;
use std::sync::Arc;
use tokio::task::JoinHandle;

pub fn spawn_pollers(server: Arc<Server>) -> Vec<JoinHandle<()>> {
    server
        .config
        .projects
        .iter()
        .filter(|p| !p.poll.is_zero())
        .map(|p| {
            let (server, project) = (server.clone(), p.clone());
            tokio::spawn(async move {
                let mut draining = server.draining.subscribe();
                let mut tick = tokio::time::interval(project.poll);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last_seen: Vec<(String, String)> = Vec::new();
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = draining.changed() => return,
                    }
                    match poll_once(&server, &project, &last_seen).await {
                        Ok(heads) => last_seen = heads,
                        Err(e) => tracing::warn!(project = %project.name, error = %format!("{e:#}"), "poll failed"),
                    }
                }
            })
        })
        .collect()
}

/// Queues the watched heads that differ from `last_seen`; returns the heads now seen.
async fn poll_once(
    server: &Arc<Server>,
    project: &ProjectConfig,
    last_seen: &[(String, String)],
) -> anyhow::Result<Vec<(String, String)>> {
    let url = project.repo.clone();
    let remote = tokio::task::spawn_blocking(move || gantry_git::ls_remote(&url)).await??;
    for (branch, commit) in &remote.heads {
        let unchanged = last_seen.iter().any(|(b, c)| b == branch && c == commit);
        if !unchanged && server.watches(project, branch, remote.default_branch.as_deref()) {
            server
                .enqueue(project, branch, commit, "poll", true)
                .await?;
        }
    }
    Ok(remote.heads)
}
