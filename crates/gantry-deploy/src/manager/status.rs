//! What an environment looks like now (`gantry status`) and its history (`gantry releases`).

use super::*;

/// An environment's state for `gantry status`.
#[derive(Debug, Clone)]
pub struct EnvStatus {
    pub project: String,
    pub environment: String,
    pub target: Option<String>,
    pub router: Option<String>,
    pub live: Option<ReleaseRecord>,
    pub previous: Option<ReleaseRecord>,
    /// `healthy`, `unhealthy`, or `unknown` (not running here).
    pub health: String,
    pub health_detail: Option<String>,
    pub uptime_ms: Option<u64>,
    pub restarts: Option<u32>,
    pub pid: Option<u32>,
    pub log: Option<String>,
    /// Deploy releases with something running now.
    pub running: Vec<i64>,
    pub lock: Option<EnvLock>,
    /// The canary running now.
    pub canary: Option<CanaryView>,
    /// What the router measured per release it sends traffic to: the last minute, and totals.
    pub traffic: Vec<ReleaseTraffic>,
    /// The server that drives it, when another one does.
    pub driver: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ReleaseTraffic {
    pub release: i64,
    /// `stable`, `canary` or `fallback`.
    pub role: String,
    pub last_minute: WindowView,
    pub total_requests: u64,
    pub total_errors: u64,
}

/// A release with what happened to it, for `gantry releases`.
#[derive(Debug, Clone)]
pub struct ReleaseHistory {
    pub release: ReleaseRecord,
    pub events: Vec<ReleaseEvent>,
}

impl Env {
    /// What the router measured for each release it sends traffic to (each release once).
    pub(super) async fn traffic(&self) -> Vec<ReleaseTraffic> {
        let Some(router) = self.router() else {
            return Vec::new();
        };
        let t = router.table();
        let now = now_millis();
        let measured = router.measure(now - 60_000).await.unwrap_or_default();
        let sides = [
            ("stable", t.stable.clone()),
            ("canary", t.canary.as_ref().map(|c| c.backend.clone())),
            ("fallback", t.fallback.clone()),
        ];
        let mut out: Vec<ReleaseTraffic> = Vec::new();
        for (role, backend) in sides {
            let Some(b) = backend else { continue };
            if out.iter().any(|x| x.release == b.release) {
                continue;
            }
            let m = measured
                .iter()
                .find(|m| m.release == b.release && m.addr == b.addr);
            out.push(ReleaseTraffic {
                release: b.release,
                role: role.to_string(),
                last_minute: m.map(|m| m.window).unwrap_or_default().into(),
                total_requests: m.map_or(0, |m| m.total_requests),
                total_errors: m.map_or(0, |m| m.total_errors),
            });
        }
        out
    }
}

impl DeployManager {
    /// Releases of an environment with their events, newest first.
    pub async fn history(&self, project: &str, environment: &str) -> Result<Vec<ReleaseHistory>> {
        let releases = self.store.releases(project, environment).await?;
        let mut out = Vec::new();
        for r in releases {
            let events = self.store.release_events(r.id).await?;
            out.push(ReleaseHistory { release: r, events });
        }
        Ok(out)
    }

    /// Every environment with releases, or those of one project.
    pub async fn statuses(&self, project: Option<&str>) -> Result<Vec<EnvStatus>> {
        let mut out = Vec::new();
        for (p, e) in self.store.environments().await? {
            if project.is_some_and(|want| want != p) {
                continue;
            }
            out.push(self.status(&p, &e).await?);
        }
        Ok(out)
    }

    /// A canary another server drives, as far as the store knows it: its step and share (the
    /// numbers are that server's router's).
    async fn canary_elsewhere(
        &self,
        history: &[ReleaseRecord],
        driver: &str,
    ) -> Option<CanaryView> {
        let rec = history.iter().find(|r| r.state == ReleaseState::Canary)?;
        let p = self.store.canary_progress(rec.id).await.ok().flatten();
        let steps = self
            .environment_at(&rec.project, rec.run_id, &rec.environment)
            .await
            .ok()
            .and_then(|s| s.canary)
            .map_or(0, |c| c.steps.len());
        Some(CanaryView {
            release: rec.number,
            state: "elsewhere".into(),
            percent: p.map_or(0, |p| p.percent),
            step: Some(p.map_or(0, |p| p.step)),
            steps,
            canary: WindowView::default(),
            stable: WindowView::default(),
            analysis: format!("measured by {driver}, which drives it"),
        })
    }

    pub async fn status(&self, project: &str, environment: &str) -> Result<EnvStatus> {
        let history = self.store.releases(project, environment).await?;
        if history.is_empty() {
            return Err(DeployError::NotFound(format!(
                "{project}/{environment} has no releases yet"
            )));
        }
        let live = release::live(&history).cloned();
        let previous = live.as_ref().and_then(|l| {
            release::rollback_target(&history, None)
                .ok()
                .filter(|p| p.source != l.source)
                .cloned()
        });
        let env = self.known_env(project, environment);
        let target = env.as_ref().and_then(|e| e.target());
        let running_live = match (&target, &live) {
            (Some(t), Some(l)) => t.running(l.source),
            _ => None,
        };
        let (health, detail) = match (&env, &target, &live) {
            (Some(env), Some(t), Some(l)) => {
                let spec = env.spec.lock().expect("spec").clone();
                let ctx = self.context(l, None, &spec).await;
                let vars = ctx.env();
                let addr = t.running(l.source).and_then(|r| r.addr);
                if t.routing() == Routing::Router && addr.is_none() {
                    ("unhealthy".to_string(), Some("not running".to_string()))
                } else {
                    let obs = health::check_once(&Probe {
                        check: &spec.health.check,
                        addr,
                        dir: &ctx.dir,
                        env: &vars,
                        sandbox: ctx.sandbox.as_ref(),
                    })
                    .await;
                    (
                        if obs.ok { "healthy" } else { "unhealthy" }.to_string(),
                        Some(obs.text),
                    )
                }
            }
            _ => ("unknown".to_string(), None),
        };
        let running = env
            .as_ref()
            .map(|e| e.running_sources())
            .unwrap_or_default();
        let lock = self
            .store
            .env_locks()
            .await?
            .into_iter()
            .find(|l| l.project == project && l.environment == environment);
        let traffic = match &env {
            Some(e) => e.traffic().await,
            None => Vec::new(),
        };
        let driver = self.driven_by_other(project, environment).await?;
        let mut canary = env.as_ref().and_then(|e| self.canary_view(e));
        if let Some(driver) = &driver
            && canary.is_none()
        {
            canary = self.canary_elsewhere(&history, driver).await;
        }
        Ok(EnvStatus {
            driver,
            project: project.to_string(),
            environment: environment.to_string(),
            canary,
            traffic,
            target: target.as_ref().map(|t| t.kind().name().to_string()),
            router: env
                .as_ref()
                .and_then(|e| e.router())
                .map(|r| r.addr.to_string()),
            live,
            previous,
            health,
            health_detail: detail,
            uptime_ms: running_live.as_ref().map(|r| r.uptime.as_millis() as u64),
            restarts: running_live.as_ref().map(|r| r.crashes),
            pid: running_live.as_ref().and_then(|r| r.pid),
            log: running_live.as_ref().map(|r| r.log.display().to_string()),
            running,
            lock,
        })
    }
}
