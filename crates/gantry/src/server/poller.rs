//! Pollers: one task per project with a `poll` interval. Each tick reads the repository's
//! branches — from its files when it is on this machine, else with one `git ls-remote`
//! (`gantry_git::ls_remote`; no fetch: the worker fetches a commit when it runs it) — and queues a
//! run for the head of every watched branch that changed since the last tick. The store's unique
//! trigger key makes a head already queued (by an earlier poll, a webhook, or before a restart)
//! a no-op.
//!
//! A project that watches tags (`tags = ["v*"]`) lists them too, and queues a run for each
//! watched tag that is new or moved. Which tags it has seen is kept in the data directory
//! (`poll/<project>.tags`), so that a restart neither misses a tag pushed meanwhile nor runs
//! old ones again; the first poll ever takes the tags already there as seen (adding `tags` to
//! a project must not deploy every release it ever tagged).
//!
//! Many repositories must not poll in step: each project ticks at a phase of its own within its
//! interval (from a hash of its name, so it is the same after a restart), its first poll comes
//! within [`FIRST_POLL_WITHIN`] of the start, and at most [`AT_ONCE`] polls run at a time.

use super::Order;
use super::Server;
use gantry_config::server::ProjectConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Polls (at most this many `git ls-remote` processes) running at once, however many projects
/// there are.
pub const AT_ONCE: usize = 8;
/// Every project polls once within this of the server's start.
pub const FIRST_POLL_WITHIN: Duration = Duration::from_secs(2);

/// Where in each interval `name` polls: FNV-1a of the name, spread over the interval.
fn phase(name: &str, every: Duration, within: Duration) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let span = every.min(within).as_millis().max(1) as u64;
    Duration::from_millis((h ^ (h >> 32)) % span)
}

pub fn spawn_pollers(server: Arc<Server>) -> Vec<JoinHandle<()>> {
    let slots = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let start = tokio::time::Instant::now();
    server
        .config
        .projects
        .iter()
        .filter(|p| !p.poll.is_zero())
        .map(|p| {
            let (server, project, slots) = (server.clone(), p.clone(), slots.clone());
            tokio::spawn(async move {
                let mut draining = server.draining.subscribe();
                let first = start + phase(&project.name, project.poll, FIRST_POLL_WITHIN);
                let steady = phase(&project.name, project.poll, project.poll);
                let mut first = Some(first);
                let mut tick = tokio::time::interval_at(start + steady + project.poll, project.poll);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut last_seen: Vec<(String, String)> = Vec::new();
                // The tags seen, once read from the data directory (then kept here).
                let mut tags_seen: Option<Vec<(String, String)>> = None;
                let mut failing = Failing::default();
                loop {
                    match first.take() {
                        Some(at) => tokio::select! {
                            _ = tokio::time::sleep_until(at) => {}
                            _ = draining.changed() => return,
                        },
                        None => tokio::select! {
                            _ = tick.tick() => {}
                            _ = draining.changed() => return,
                        },
                    }
                    if failing.skip() {
                        continue;
                    }
                    let Ok(_slot) = slots.acquire().await else {
                        return;
                    };
                    match poll_once(&server, &project, &last_seen, &mut tags_seen).await {
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
    tags_seen: &mut Option<Vec<(String, String)>>,
) -> anyhow::Result<Vec<(String, String)>> {
    let url = project.repo.clone();
    let remote = tokio::task::spawn_blocking(move || gantry_git::ls_remote(&url)).await??;
    for (branch, commit) in &remote.heads {
        let unchanged = last_seen.iter().any(|(b, c)| b == branch && c == commit);
        if !unchanged && server.watches(project, branch, remote.default_branch.as_deref()) {
            server
                .enqueue(project, Order::push(&project.name, branch, commit, "poll"))
                .await?;
        }
    }
    if !project.tags.is_empty() {
        poll_tags(server, project, tags_seen).await?;
    }
    Ok(remote.heads)
}

/// Queues the watched tags that are new or moved since the ones recorded as seen.
/// Queues the watched tags that are new or moved since the ones seen: `cache`, else (at the
/// first poll of this process) the data directory's record; writes the record when it changed.
async fn poll_tags(
    server: &Arc<Server>,
    project: &ProjectConfig,
    cache: &mut Option<Vec<(String, String)>>,
) -> anyhow::Result<()> {
    let url = project.repo.clone();
    let tags = tokio::task::spawn_blocking(move || gantry_git::ls_remote_tags(&url)).await??;
    let seen_file = server
        .data_dir
        .join("poll")
        .join(format!("{}.tags", project.name));
    let seen: Option<Vec<(String, String)>> = match cache.take() {
        Some(kept) => Some(kept),
        None => read_seen(&seen_file)?,
    };
    match &seen {
        None => {
            tracing::info!(project = %project.name, tags = tags.len(), "first look at the tags: those there now are taken as seen");
        }
        Some(seen) => {
            for (tag, commit) in &tags {
                let known = seen.iter().any(|(t, c)| t == tag && c == commit);
                if !known
                    && project
                        .tags
                        .iter()
                        .any(|p| gantry_model::pattern_matches(p, tag))
                {
                    server
                        .enqueue(project, Order::tag(&project.name, tag, commit, "poll"))
                        .await?;
                }
            }
        }
    }
    if seen.as_ref() != Some(&tags) {
        let text: String = tags.iter().map(|(t, c)| format!("{c} {t}\n")).collect();
        // Whole or not at all: a crash mid-write must not lose what was seen.
        let partial = seen_file.with_extension("tags.partial");
        std::fs::create_dir_all(server.data_dir.join("poll"))
            .and_then(|()| std::fs::write(&partial, text))
            .and_then(|()| std::fs::rename(&partial, &seen_file))
            .map_err(|e| {
                anyhow::Error::from(e).context(format!("writing {}", seen_file.display()))
            })?;
    }
    *cache = Some(tags);
    Ok(())
}

/// The tags recorded as seen; `None` when gantry never looked at the project's tags.
fn read_seen(file: &std::path::Path) -> anyhow::Result<Option<Vec<(String, String)>>> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(Some(
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(c, t)| (t.to_string(), c.to_string()))
                .collect(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::from(e).context(format!("reading {}", file.display()))),
    }
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
    use super::{Failing, phase};
    use std::time::Duration;

    #[test]
    fn projects_poll_at_phases_of_their_own_within_the_interval() {
        let every = Duration::from_secs(10);
        let names: Vec<String> = (0..1000).map(|i| format!("project-{i}")).collect();
        let phases: Vec<Duration> = names.iter().map(|n| phase(n, every, every)).collect();
        assert!(phases.iter().all(|p| *p < every));
        // Spread: each of the ten seconds holds between 5% and 15% of the projects.
        for second in 0..10u64 {
            let n = phases.iter().filter(|p| p.as_secs() == second).count();
            assert!((50..=150).contains(&n), "second {second}: {n} projects");
        }
        // Stable across restarts, and the first poll comes soon.
        assert_eq!(phase("web", every, every), phase("web", every, every));
        assert!(phase("web", every, Duration::from_secs(2)) < Duration::from_secs(2));
        assert!(
            phase("web", Duration::from_millis(500), Duration::from_secs(2))
                < Duration::from_millis(500)
        );
    }

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
