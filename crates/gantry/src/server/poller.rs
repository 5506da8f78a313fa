//! Pollers: one task per project with a `poll` interval. Each tick fetches the project's mirror
//! and queues a run for the head of every watched branch; the store's unique trigger key makes a
//! head already queued (by an earlier poll or a webhook) a no-op.

use super::Server;
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
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = draining.changed() => return,
                    }
                    if let Err(e) = poll_once(&server, &project).await {
                        tracing::warn!(project = %project.name, error = %format!("{e:#}"), "poll failed");
                    }
                }
            })
        })
        .collect()
}

async fn poll_once(
    server: &Arc<Server>,
    project: &gantry_config::server::ProjectConfig,
) -> anyhow::Result<()> {
    let repo = server.fetch_mirror(project).await?;
    let (heads, default) =
        tokio::task::spawn_blocking(move || (repo.heads(), repo.default_branch())).await?;
    for (branch, commit) in heads? {
        if server.watches(project, &branch, default.as_deref()) {
            server
                .enqueue(project, &branch, &commit, "poll", true)
                .await?;
        }
    }
    Ok(())
}
