//! Starting and stopping: taking environments back after gantry restarted (their routers in
//! the data plane and their releases under shims served all along: what runs is adopted, what
//! does not is started again, what no kept release accounts for is stopped), and stopping an
//! environment on purpose.

use super::drive::{Drive, Guards};
use super::*;
use anyhow::Context as _;
use gantry_engine::deployment::Purpose;

/// The release event that marks an environment stopped on purpose.
const STOPPED_EVENT: &str = "stopped";

impl DeployManager {
    /// At server start: the environments no other live server drives claimed (`drivers.rs`),
    /// locks of dead owners released, their deployments cut short marked `interrupted`, their
    /// live releases adopted where they still run (started again where not) behind their
    /// routers, and every release process that is not live stopped.
    /// Returns what it did, for the log.
    pub async fn recover(
        self: &Arc<Self>,
        owner_gone: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Vec<String>> {
        let mut notes = Vec::new();
        // Whoever asks first starts the data plane: it serves the last tables at once.
        let (pid, routed) = self
            .plane
            .hello()
            .await
            .context("reaching the data plane")?;
        notes.push(format!(
            "data plane pid {pid} routes {} environment(s)",
            routed.len()
        ));
        // Environments another live server drives are left to it.
        let (mine, left) = self.claim_at_start(&owner_gone).await?;
        notes.extend(left);
        let is_mine = |p: &str, e: &str| mine.contains(&(p.to_string(), e.to_string()));
        // This data plane's routers of environments another server drives now (it took them
        // over while this server was down) would serve what is no longer live: stopped. Their
        // release processes here are stopped by the sweep below.
        for key in &routed {
            if let Some((p, e)) = key.split_once('/')
                && !is_mine(p, e)
                && self.store.releases(p, e).await.is_ok_and(|h| !h.is_empty())
            {
                self.plane.close_router(key).await?;
                notes.push(format!(
                    "{key}: driven by another server now; its router here stopped"
                ));
            }
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
        // A canary the data plane still serves goes on; every other deployment cut short is
        // marked interrupted.
        let mut resuming = Vec::new();
        for r in self.store.deploying_releases().await? {
            if !is_mine(&r.project, &r.environment) {
                continue;
            }
            if let Some(p) = self.resumable(&r).await {
                resuming.push((r, p));
                continue;
            }
            notes.push(self.interrupt(&r).await?);
        }
        for (project, environment) in self.store.environments().await? {
            if !is_mine(&project, &environment) {
                continue;
            }
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
            let canary_goes_on = resuming
                .iter()
                .any(|(r, _)| r.project == project && r.environment == environment);
            match self.restore(&live, &history, canary_goes_on).await {
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
        let (went_on, going_on) = self.go_on_with(resuming, None).await?;
        notes.extend(went_on);
        // What runs now and is not this server's: stopped, so nothing runs unknown.
        let mut keep: Vec<(String, String, i64)> = self
            .envs
            .lock()
            .expect("envs")
            .values()
            .flat_map(|e| {
                e.running_sources()
                    .into_iter()
                    .map(|s| (e.project.clone(), e.name.clone(), s))
            })
            .collect();
        keep.extend(going_on);
        notes.extend(targets::sweep(&self.root, &keep).await);
        self.watch_data_plane();
        self.spawn_drivers();
        Ok(notes)
    }

    /// While this server runs, a data plane that died (killed, out of memory) is started
    /// again within a second: it comes back on its last tables, the releases never stopped.
    fn watch_data_plane(&self) {
        let plane = self.plane.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match plane.hello().await {
                    Ok((pid, _)) => {
                        if last.is_some_and(|l| l != pid) {
                            tracing::warn!(pid, "the data plane was started again");
                        }
                        last = Some(pid);
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "the data plane does not answer")
                    }
                }
            }
        });
    }

    /// A deployment cut short by a stop of gantry: recorded `interrupted`, and a new deploy's
    /// directory and pin removed. Returns the note for the log.
    pub(super) async fn interrupt(&self, r: &ReleaseRecord) -> Result<String> {
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
            let _ = self.store.unpin(&r.digest, &pin_reason(r)).await;
            self.store.mark_retired(r.id, now_millis()).await?;
        }
        Ok(format!(
            "release {} of {}/{} was interrupted: {reason}",
            r.number, r.project, r.environment
        ))
    }

    pub(super) async fn restore(
        &self,
        live: &ReleaseRecord,
        history: &[ReleaseRecord],
        canary_goes_on: bool,
    ) -> Result<()> {
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
            spec: spec.clone(),
            live: None,
            from: None,
            reason: None,
            addr: adopted,
            resume: None,
        };
        let plan = Self::plan(&d, Purpose::Restore, unpack, adopted.is_some());
        let target = d.target.clone();
        if let Some(why) = self.drive(d, plan, None, Guards::default()).await.failure {
            return Err(DeployError::Conflict(why));
        }
        if adopted.is_some() {
            self.settle_table(&env, &target, history, &spec, canary_goes_on)
                .await;
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

    /// The rest of the data plane's table after the live release was adopted: the fallback
    /// (the previous release, kept running for an instant rollback) is taken over too when it
    /// still runs, otherwise dropped; a canary the dead server was running is dropped (its
    /// deployment was marked interrupted and its release stopped), so its users are back on
    /// stable.
    async fn settle_table(
        &self,
        env: &Arc<Env>,
        target: &Arc<dyn Target>,
        history: &[ReleaseRecord],
        spec: &EnvironmentSpec,
        canary_goes_on: bool,
    ) {
        let Some(router) = env.router() else { return };
        let table = router.table();
        let Some(stable) = table.stable.clone() else {
            return;
        };
        let Some(fallback) = table
            .fallback
            .clone()
            .filter(|f| f.release != stable.release || f.addr != stable.addr)
        else {
            if table.canary.is_some() && !canary_goes_on {
                let _ = router.set(RouteTable::single(stable, None)).await;
            }
            return;
        };
        let kept = history
            .iter()
            .find(|r| r.number == fallback.release && r.retired_at.is_none());
        let mut adopted = false;
        if let Some(rec) = kept {
            let ctx = self.context(rec, None, spec).await;
            if let Ok(Some(addr)) = target.adopt(&ctx).await
                && addr == fallback.addr
            {
                env.backends
                    .lock()
                    .expect("backends")
                    .insert(rec.source, fallback.clone());
                adopted = true;
            }
        }
        if !adopted || (table.canary.is_some() && !canary_goes_on) {
            let fallback = adopted.then_some(fallback);
            let _ = router.set(RouteTable::single(stable, fallback)).await;
        }
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
    pub(super) async fn stopped(&self, live: &ReleaseRecord) -> bool {
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
            let router = env.router.lock().expect("router").take();
            if let Some(r) = router {
                r.close().await?;
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

    /// At server shutdown: the routers (in the data plane) and the releases (under their
    /// shims, or containers) go on serving; only this server's watchers stop.
    pub async fn shutdown(&self) {
        let envs: Vec<Arc<Env>> = self.envs.lock().expect("envs").values().cloned().collect();
        for env in envs {
            if let Some(t) = env.target() {
                t.stop_all().await;
            }
        }
    }
}
