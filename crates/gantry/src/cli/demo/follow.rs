//! Following a run of the demo through the server's API, as a newcomer would watch it: each
//! job as it ends, each deploy stage as it starts, and every event of the environments'
//! releases (health checks, the canary's steps and verdicts, switches), each line stamped with
//! the time since the demo began. It notes the two moments the demo reports: production first
//! serving through its router, and the canary's first verdict.

use crate::client::Client;
use anyhow::{Context, anyhow};
use gantry_model::RunStatus;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub const PROJECT: &str = "hello";
pub const ENVIRONMENTS: [&str; 2] = ["staging", "production"];

pub struct Follower {
    pub client: Client,
    /// When the demo began: every line says how long after.
    started: Instant,
    jobs: HashSet<i64>,
    stages: HashSet<i64>,
    events: HashSet<(i64, i64, String)>,
    live: HashMap<&'static str, i64>,
    /// When production first served a release through its router.
    pub production_at: Option<Duration>,
    /// When a canary's analysis first passed or failed a step.
    pub verdict_at: Option<Duration>,
}

pub fn stamp(started: Instant) -> String {
    format!("[{:>5.1}s]", started.elapsed().as_secs_f64())
}

impl Follower {
    pub fn new(client: Client, started: Instant) -> Self {
        Self {
            client,
            started,
            jobs: HashSet::new(),
            stages: HashSet::new(),
            events: HashSet::new(),
            live: HashMap::new(),
            production_at: None,
            verdict_at: None,
        }
    }

    fn say(&self, line: &str) {
        println!("  {} {line}", self.stamp());
    }

    pub fn stamp(&self) -> String {
        stamp(self.started)
    }

    /// Takes what happened before now as seen, so that only what follows is told.
    pub async fn skip_past(&mut self) -> anyhow::Result<()> {
        for env in ENVIRONMENTS {
            for r in self.client.releases(PROJECT, env).await.unwrap_or_default() {
                for e in r.events {
                    self.events.insert((r.release.id, e.at, e.message));
                }
            }
            if let Ok(s) = self.client.environment(PROJECT, env).await
                && let Some(l) = s.live
            {
                self.live.insert(env, l.number);
            }
        }
        Ok(())
    }

    /// The run of `commit`, once the server has queued it (it polls the repository every
    /// second).
    pub async fn run_of(&self, commit: &str) -> anyhow::Result<i64> {
        let filter = gantry_engine::ports::RunFilter {
            project: Some(PROJECT.into()),
            limit: 20,
            ..Default::default()
        };
        for _ in 0..300 {
            let runs = self.client.runs(&filter).await?;
            if let Some(r) = runs.iter().find(|r| r.commit == commit) {
                return Ok(r.id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(anyhow!(
            "the server queued no run of {} within 30 s",
            &commit[..10.min(commit.len())]
        ))
    }

    /// Tells run `id` as it goes, until it has finished; its status.
    pub async fn follow(&mut self, id: i64) -> anyhow::Result<RunStatus> {
        // Bounded: the slowest story (a canary's steps and bake) takes well under a minute.
        for _ in 0..1800 {
            let d = self
                .client
                .run(id)
                .await?
                .with_context(|| format!("run {id} is gone"))?;
            let stage_name: HashMap<i64, &str> =
                d.stages.iter().map(|s| (s.id, s.name.as_str())).collect();
            for s in &d.stages {
                if s.kind == "deploy" && s.started_at.is_some() && self.stages.insert(s.id) {
                    self.say(&format!("{}: deploying", s.name));
                }
            }
            for j in &d.jobs {
                if j.status.is_finished() && self.jobs.insert(j.id) {
                    let took = match (j.started_at, j.finished_at) {
                        (Some(a), Some(b)) => format!(" ({:.1}s)", (b - a) as f64 / 1000.0),
                        _ => String::new(),
                    };
                    let mark = if j.status.is_failure() && !j.allow_failure {
                        "✗"
                    } else {
                        "✓"
                    };
                    let stage = stage_name.get(&j.stage_id).copied().unwrap_or("?");
                    self.say(&format!("{mark} {stage}/{}: {}{took}", j.name, j.status));
                }
            }
            self.environments().await;
            if d.run.status.is_finished() {
                let line = match &d.run.error {
                    Some(e) => format!("run {id} {}: {e}", d.run.status),
                    None => format!("run {id} {}", d.run.status),
                };
                self.say(&line);
                return Ok(d.run.status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(anyhow!("run {id} did not finish within 3 minutes"))
    }

    /// Tells the environments' new release events and live releases.
    pub async fn environments(&mut self) {
        for env in ENVIRONMENTS {
            let Ok(history) = self.client.releases(PROJECT, env).await else {
                continue;
            };
            let mut new: Vec<(i64, i64, String)> = Vec::new();
            for r in &history {
                for e in &r.events {
                    let key = (r.release.id, e.at, e.message.clone());
                    if !self.events.contains(&key) && is_told(&e.kind) {
                        new.push((e.at, r.release.number, e.message.clone()));
                    }
                    self.events.insert(key);
                }
            }
            new.sort();
            for (_, number, message) in new {
                if self.verdict_at.is_none()
                    && env == "production"
                    && (message.contains("passed analysis") || message.contains("abort"))
                {
                    self.verdict_at = Some(self.started.elapsed());
                }
                self.say(&format!("{env} · release {number}: {message}"));
            }
            if let Ok(s) = self.client.environment(PROJECT, env).await
                && let Some(l) = s.live
                && self.live.get(env) != Some(&l.number)
            {
                self.live.insert(env, l.number);
                if env == "production" && self.production_at.is_none() {
                    self.production_at = Some(self.started.elapsed());
                }
                let router = s.router.unwrap_or_default();
                self.say(&format!(
                    "{env}: release {} is live, serving through its router at http://{router}/",
                    l.number
                ));
            }
        }
    }
}

/// The release events worth a line: not the router's bookkeeping of every sample.
fn is_told(kind: &str) -> bool {
    matches!(kind, "state" | "health" | "crash" | "canary" | "note")
}
