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
                let mut failing = Failing::default();
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = draining.changed() => return,
                    }
                    if failing.skip() {
                        continue;
                    }
                    match poll_once(&server, &project, &last_seen).await {
                        Ok(heads) => {
                            if failing.failures > 0 {
                                tracing::warn!(project = %project.name, after = failing.failures, "polling works again");
                                server.poll_errors.lock().expect("poll errors").remove(&project.name);
                            }
                            failing = Failing::default();
                            last_seen = heads;
                        }
                        Err(e) => {
                            let error = format!("{e:#}");
                            // Said once, and again only when it changes: a missing repository
                            // must not fill the log every tick.
                            if failing.last.as_deref() != Some(error.as_str()) {
                                tracing::warn!(project = %project.name, error = %error, "poll failed; backing off");
                            }
                            server
                                .poll_errors
                                .lock()
                                .expect("poll errors")
                                .insert(project.name.clone(), error.clone());
                            failing.failed(error);
                        }
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

/// Consecutive failed polls of a project: each one doubles the ticks skipped before the next
/// try (1, 2, 4 … at most 32), so a repository that is gone costs little and logs once.
#[derive(Default)]
struct Failing {
    failures: u32,
    skip_left: u32,
    last: Option<String>,
}

impl Failing {
    /// Whether this tick is skipped.
    fn skip(&mut self) -> bool {
        if self.skip_left > 0 {
            self.skip_left -= 1;
            return true;
        }
        false
    }

    fn failed(&mut self, error: String) {
        self.failures += 1;
        self.skip_left = (1u32 << self.failures.min(6)).saturating_sub(1).min(32);
        self.last = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use super::Failing;

    #[test]
    fn failed_polls_back_off_and_a_success_resets() {
        let mut f = Failing::default();
        let mut tried = Vec::new();
        for tick in 0..40 {
            if !f.skip() {
                tried.push(tick);
                f.failed("no such repository".into());
            }
        }
        // Tries at ticks 0, 2, 6, 14, 30: gaps of 1, 3, 7, 15 skipped ticks (then at most 32).
        assert_eq!(tried, vec![0, 2, 6, 14, 30]);
        f = Failing::default();
        assert!(!f.skip());
    }
}
