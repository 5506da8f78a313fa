//! Schedules: one task per `[[projects.schedules]]` entry that, at each tick of its cron
//! expression (read on its time zone's wall clock), queues a run of its branch's head with event
//! `schedule`. The run's key holds the schedule and the tick, so each tick starts exactly one
//! run however many servers share the database and however often one restarts: a server that
//! starts within a minute of a tick fires that tick too (a restart across it loses nothing),
//! and the store refuses its second run. Ticks missed while no server ran for longer are not
//! made up; a server that falls behind (a suspended machine) goes on from the latest tick.

use super::{Order, Server};
use gantry_config::server::{ProjectConfig, ScheduleConfig};
use gantry_model::{TriggerEvent, vars};
use jiff::{Timestamp, Zoned};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How late a tick may still fire (at a start, or after falling behind).
const LATE: Duration = Duration::from_secs(60);

pub fn spawn_schedules(server: Arc<Server>) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for project in &server.config.projects {
        for schedule in &project.schedules {
            let (server, project, schedule) = (server.clone(), project.clone(), schedule.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = tick(&server, &project, &schedule).await {
                    tracing::error!(project = %project.name, cron = %schedule.cron, error = %e, "the schedule stopped");
                }
            }));
        }
    }
    tasks
}

/// The ticks of `schedule` from `now` on: the latest one not later than `now` when it is at
/// most [`LATE`] ago, then each next one.
pub fn first_tick(cron: &croner::Cron, now: &Zoned) -> Result<Zoned, String> {
    let late = jiff::SignedDuration::try_from(LATE).map_err(|e| e.to_string())?;
    if let Ok(prev) = cron.find_previous_occurrence(now, true)
        && now.timestamp().duration_since(prev.timestamp()) <= late
    {
        return Ok(prev);
    }
    cron.find_next_occurrence(now, false)
        .map_err(|e| e.to_string())
}

async fn tick(
    server: &Arc<Server>,
    project: &ProjectConfig,
    schedule: &ScheduleConfig,
) -> Result<(), String> {
    let cron = gantry_config::server::parse_cron(&schedule.cron)?;
    let tz = gantry_config::server::time_zone(&schedule.timezone)?;
    let mut draining = server.draining.subscribe();
    let mut next = first_tick(&cron, &Timestamp::now().to_zoned(tz.clone()))?;
    loop {
        let wait = next
            .timestamp()
            .duration_since(Timestamp::now())
            .try_into()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = draining.changed() => return Ok(()),
        }
        if let Err(e) = fire(server, project, schedule, &next).await {
            tracing::warn!(project = %project.name, cron = %schedule.cron, tick = %next, error = %format!("{e:#}"), "a scheduled run was not queued");
        }
        let now = Timestamp::now().to_zoned(tz.clone());
        next = cron
            .find_next_occurrence(&next, false)
            .map_err(|e| e.to_string())?;
        // Fallen behind by more than LATE: go on from the latest tick.
        if now.timestamp().duration_since(next.timestamp())
            > jiff::SignedDuration::try_from(LATE).unwrap_or_default()
        {
            next = first_tick(&cron, &now)?;
        }
    }
}

/// Queues the run of `tick`: the branch's head now, once per schedule and tick.
async fn fire(
    server: &Arc<Server>,
    project: &ProjectConfig,
    schedule: &ScheduleConfig,
    tick: &Zoned,
) -> anyhow::Result<()> {
    let url = project.repo.clone();
    let remote = tokio::task::spawn_blocking(move || gantry_git::ls_remote(&url)).await??;
    let branch = schedule
        .branch
        .clone()
        .or_else(|| project.branches.iter().find(|b| !b.contains('*')).cloned())
        .or(remote.default_branch.clone())
        .ok_or_else(|| {
            anyhow::anyhow!("the repository has no default branch: give the schedule a `branch`")
        })?;
    let commit = remote
        .heads
        .iter()
        .find(|(b, _)| *b == branch)
        .map(|(_, c)| c.clone())
        .ok_or_else(|| anyhow::anyhow!("branch `{branch}` is not in {}", project.repo))?;
    let at = tick.timestamp();
    let mut run_vars = schedule.vars.clone();
    run_vars.insert(vars::SCHEDULE.to_string(), schedule.cron.clone());
    run_vars.insert(vars::SCHEDULED_AT.to_string(), at.to_string());
    let key = format!(
        "{}/schedule/{}@{}/{branch}/{}",
        project.name,
        schedule.cron,
        schedule.timezone,
        at.as_second()
    );
    let id = server
        .enqueue(
            project,
            Order {
                branch: Some(branch.clone()),
                commit,
                trigger: "schedule",
                event: TriggerEvent::Schedule,
                vars: run_vars,
                key: Some(key),
            },
        )
        .await?;
    match id {
        Some(run) => {
            tracing::info!(project = %project.name, branch, run, tick = %at, "scheduled run queued")
        }
        None => {
            tracing::debug!(project = %project.name, branch, tick = %at, "this tick's run is queued already")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Zoned {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_tick_is_the_latest_when_recent_else_the_next() {
        let daily = gantry_config::server::parse_cron("0 3 * * *").unwrap();
        let cases = [
            // Just after 03:00 in Berlin: that tick still fires.
            (
                "2026-12-03T03:00:30+01:00[Europe/Berlin]",
                "2026-12-03T03:00:00+01:00[Europe/Berlin]",
            ),
            // Long after: the next day's.
            (
                "2026-12-03T09:00:00+01:00[Europe/Berlin]",
                "2026-12-04T03:00:00+01:00[Europe/Berlin]",
            ),
            // On the tick itself.
            (
                "2026-12-03T03:00:00+01:00[Europe/Berlin]",
                "2026-12-03T03:00:00+01:00[Europe/Berlin]",
            ),
        ];
        for (now, want) in cases {
            assert_eq!(first_tick(&daily, &at(now)).unwrap(), at(want), "{now}");
        }
        // Read on the zone's wall clock: 03:00 in New York is 08:00 UTC in December.
        let ny = first_tick(
            &daily,
            &at("2026-12-03T12:00:00+00:00[UTC]")
                .with_time_zone(gantry_config::server::time_zone("America/New_York").unwrap()),
        )
        .unwrap();
        assert_eq!(ny.timestamp().to_string(), "2026-12-04T08:00:00Z");
        // Seconds: every 2 s; 5 s late is too late only for LATE = 60 s schedules of minutes.
        let fast = gantry_config::server::parse_cron("*/2 * * * * *").unwrap();
        assert_eq!(
            first_tick(&fast, &at("2026-12-03T10:00:05+00:00[UTC]")).unwrap(),
            at("2026-12-03T10:00:04+00:00[UTC]")
        );
    }
}
