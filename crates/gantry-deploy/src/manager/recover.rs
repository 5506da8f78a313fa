//! Starting and stopping: putting environments back after gantry restarted, and stopping every
//! router and service at shutdown.

use super::drive::{Drive, Guards};
use super::*;
use gantry_engine::deployment::Purpose;

/// The release event that marks an environment stopped on purpose.
const STOPPED_EVENT: &str = "stopped";

impl DeployManager {
    /// At server start: services left by a dead gantry are killed, locks of dead owners
    /// released, deployments cut short marked `interrupted`, and every environment's live
    /// release started again behind its router. Returns what it did, for the log.
    pub async fn recover(
        self: &Arc<Self>,
        owner_gone: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        let mut notes = Vec::new();
        let killed = supervisor::kill_leftovers(&self.root);
        if killed > 0 {
            notes.push(format!(
                "stopped {killed} release processes left by a previous gantry"
            ));
        }
        for lock in self.store.env_locks().await? {
            if lock.owner != self.owner && owner_gone(&lock.owner) {
                self.store
                    .release_env_lock(&lock.project, &lock.environment, &lock.owner)
                    .await?;
                notes.push(format!(
                    "released the lock of {}/{} left by a stopped gantry ({})",
                    lock.project, lock.environment, lock.purpose
                ));
            }
        }
        for r in self.store.deploying_releases().await? {
            let history = self.store.releases(&r.project, &r.environment).await?;
            let live = release::live(&history).map(|l| l.number);
            let reason = match live {
                Some(l) => {
                    format!("gantry stopped during this deployment; release {l} stayed live")
                }
                None => "gantry stopped during this deployment".to_string(),
            };
            self.store
                .set_release_state(r.id, ReleaseState::Interrupted, Some(&reason), now_millis())
                .await?;
            if r.kind == ReleaseKind::Deploy {
                let dir = self.release_dir(&r.project, &r.environment, r.number);
                let _ = std::fs::remove_dir_all(&dir);
                kept::remove(&dir);
                let _ = self.store.unpin(&r.digest, &pin_reason(&r)).await;
                self.store.mark_retired(r.id, now_millis()).await?;
            }
            notes.push(format!(
                "release {} of {}/{} was interrupted: {reason}",
                r.number, r.project, r.environment
            ));
        }
        for (project, environment) in self.store.environments().await? {
            let history = self.store.releases(&project, &environment).await?;
            let Some(live) = release::live(&history).cloned() else {
                continue;
            };
            if self.stopped(&live).await {
                notes.push(format!(
                    "{project}/{environment}: stopped on purpose (gantry stop); not started"
                ));
                continue;
            }
            match self.restore(&live).await {
                Ok(()) => notes.push(format!(
                    "{project}/{environment}: release {} serves again",
                    live.number
                )),
                Err(e) => notes.push(format!(
                    "{project}/{environment}: release {} could not be started again: {e}",
                    live.number
                )),
            }
            notes.extend(
                self.strays(&live, &history)
                    .await
                    .into_iter()
                    .map(|s| format!("{project}/{environment}: {s}")),
            );
        }
        Ok(notes)
    }

    pub(super) async fn restore(&self, live: &ReleaseRecord) -> Result<()> {
        let spec = self
            .environment_at(&live.project, live.run_id, &live.environment)
            .await
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        let env = self.env(&live.project, &live.environment, &spec);
        let _local = env.work.lock().await;
        let target = self.prepare(&env, &spec).await?;
        let kind = target.kind();
        if !kind.supervised() && !kind.outlives_gantry() {
            return Ok(()); // Nothing of ours runs for it.
        }
        let ctx = self.context(live, None, &spec).await;
        // What still runs (a container) is taken over as it is: one check, then the router.
        let adopted = if kind.outlives_gantry() {
            target
                .adopt(&ctx)
                .await
                .map_err(|e| DeployError::Internal(e.context("adopting the live release")))?
        } else {
            None
        };
        let unpack = adopted.is_none() && !ctx.dir.is_dir();
        let d = Drive {
            env: env.clone(),
            target,
            rec: live.clone(),
            ctx,
            spec,
            live: None,
            from: None,
            reason: None,
            addr: adopted,
        };
        let plan = Self::plan(&d, Purpose::Restore, unpack, adopted.is_some());
        if let Some(why) = self.drive(d, plan, None, Guards::default()).await.failure {
            return Err(DeployError::Conflict(why));
        }
        let _ = self
            .store
            .add_release_event(
                live.id,
                "note",
                if adopted.is_some() {
                    "still running after gantry restarted: adopted"
                } else {
                    "started again after gantry restarted"
                },
                now_millis(),
            )
            .await;
        Ok(())
    }

    /// What the environment's target holds that no kept release accounts for.
    async fn strays(&self, live: &ReleaseRecord, history: &[ReleaseRecord]) -> Vec<String> {
        let env = self.env(
            &live.project,
            &live.environment,
            &EnvironmentSpec::named(&live.environment),
        );
        let (Some(target), spec) = (env.target(), env.spec.lock().expect("spec").clone()) else {
            return Vec::new();
        };
        let kept: Vec<i64> = history
            .iter()
            .filter(|r| r.retired_at.is_none())
            .map(|r| r.source)
            .collect();
        let ctx = self.context(live, None, &spec).await;
        target.strays(&ctx, &kept).await
    }

    /// Whether the live release's environment was stopped on purpose since it went live.
    async fn stopped(&self, live: &ReleaseRecord) -> bool {
        self.store
            .release_events(live.id)
            .await
            .ok()
            .and_then(|events| events.last().map(|e| e.kind == STOPPED_EVENT))
            .unwrap_or(false)
    }

    /// Stops an environment on purpose (`gantry stop ENV`): its router stops listening and
    /// every release of it stops (containers too); the live release stays the live one in the
    /// history, with an event saying who stopped it, and a restart of gantry leaves it stopped.
    /// The next deploy or rollback starts it again. Returns what it did.
    pub async fn stop_environment(
        &self,
        project: &str,
        environment: &str,
        by: &str,
    ) -> Result<String> {
        let history = self.store.releases(project, environment).await?;
        let Some(live) = release::live(&history).cloned() else {
            return Err(DeployError::NotFound(format!(
                "{project}/{environment} has no live release to stop"
            )));
        };
        let _lock = self
            .lock(project, environment, &format!("stop by {by}"))
            .await?;
        let env = self
            .envs
            .lock()
            .expect("envs")
            .remove(&(project.to_string(), environment.to_string()));
        let mut stopped = 0;
        if let Some(env) = env {
            let _local = env.work.lock().await;
            if let Some(r) = env.router.lock().expect("router").take() {
                r.stop();
            }
            let target = env.target.lock().expect("target").take();
            if let Some(t) = target {
                for source in env.running_sources() {
                    t.stop(source).await;
                    stopped += 1;
                }
            }
            env.backends.lock().expect("backends").clear();
        }
        let text = format!(
            "{project}/{environment} stopped by {by}: its router and {stopped} release process(es) stopped; nothing serves it until the next deploy or rollback"
        );
        self.store
            .add_release_event(live.id, STOPPED_EVENT, &text, now_millis())
            .await?;
        Ok(text)
    }

    /// Stops every router and service (server shutdown).
    pub async fn shutdown(&self) {
        let envs: Vec<Arc<Env>> = self.envs.lock().expect("envs").values().cloned().collect();
        for env in envs {
            if let Some(r) = env.router() {
                r.stop();
            }
            if let Some(t) = env.target() {
                t.stop_all().await;
            }
        }
    }
}
