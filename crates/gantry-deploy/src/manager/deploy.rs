//! Deploying: a release recorded, unpacked, started beside the live one, health-checked, switched
//! to, kept or retired, and watched through its bake (crashes and alarms roll it back).

use super::drive::{Drive, Ended, Guards, Reached};
use super::*;
use gantry_engine::deployment::Purpose;

impl DeployManager {
    /// Before a canary behind the router: the live release served here when it is not — the environment was
    /// just handed over by another server (its router and releases stopped there), or its
    /// restore failed at start — so the canary has a stable side to run against. An
    /// environment stopped on purpose stays stopped (the deploy then switches everyone).
    async fn serve_live_first(&self, env: &Env, live: &ReleaseRecord, history: &[ReleaseRecord]) {
        let served = env.router().is_some_and(|r| r.table().stable.is_some());
        if served || self.stopped(live).await {
            return;
        }
        match self.restore(live, history, false).await {
            Ok(()) => tracing::info!(
                project = live.project,
                environment = live.environment,
                "release {} serves here again, as the canary's stable side",
                live.number
            ),
            Err(e) => tracing::warn!(
                project = live.project,
                environment = live.environment,
                error = %e,
                "the live release could not be served here before the canary"
            ),
        }
    }

    /// Deploys an artifact. Returns when traffic has switched (and, with `wait_bake`, when the
    /// bake has passed), or when the deployment failed and traffic stayed or went back.
    pub async fn deploy(
        self: &Arc<Self>,
        req: DeployRequest,
        wait_bake: bool,
    ) -> Result<DeployReport> {
        let artifact = self
            .store
            .find_artifact(&ArtifactQuery {
                project: Some(&req.project),
                name: Some(&req.artifact),
                run: req.run,
                digest: req.digest.as_deref(),
            })
            .await?
            .ok_or_else(|| {
                DeployError::NotFound(match (req.run, &req.digest) {
                    (Some(run), Some(d)) => format!(
                        "this server has no artifact `{}` of run {run} with digest {d}: is it using another data directory than the run? (start `gantry serve` in the repository that ran it)",
                        req.artifact
                    ),
                    (Some(run), None) => format!("run {run} has no artifact named `{}`", req.artifact),
                    (_, Some(d)) => format!("there is no artifact `{}` with digest {d}", req.artifact),
                    _ => format!("there is no artifact named `{}`", req.artifact),
                })
            })?;
        if artifact.removed_at.is_some() {
            return Err(DeployError::NotFound(format!(
                "artifact `{}` of run {} was removed by retention; run the pipeline again to rebuild it",
                artifact.name, artifact.run_id
            )));
        }
        let run = self.store.run_detail(artifact.run_id).await?.map(|d| d.run);
        if let Some(r) = &run
            && r.project != req.project
        {
            return Err(DeployError::Invalid(format!(
                "artifact `{}` of run {} belongs to project {}, not {}",
                artifact.name, artifact.run_id, r.project, req.project
            )));
        }
        let mut spec = self
            .environment_at(&req.project, Some(artifact.run_id), &req.environment)
            .await
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        if let Some(ms) = req.bake_ms {
            spec.bake = Duration::from_millis(ms);
        }
        let env = self.env(&req.project, &req.environment, &spec);
        let purpose = format!(
            "deploy of {} (run {}) by {}",
            artifact.name, artifact.run_id, req.requested_by
        );
        // The store's lock first: a second deploy is refused at once, not queued behind this
        // process's own work on the environment.
        let lock = self.lock(&req.project, &req.environment, &purpose).await?;
        let history = self.store.releases(&req.project, &req.environment).await?;
        let live = release::live(&history).cloned();
        if spec.canary.is_some()
            && spec.router.is_some()
            && let Some(live) = &live
        {
            self.serve_live_first(&env, live, &history).await;
        }
        let local = env.work.clone().lock_owned().await;
        let target = self.prepare(&env, &spec).await?;
        if !req.force {
            let commit = run.as_ref().map(|r| r.commit.clone());
            let ancestor = match (&commit, live.as_ref().and_then(|l| l.commit.clone())) {
                (Some(c), Some(l)) if *c != l => self.source.is_ancestor(&req.project, c, &l).await,
                _ => None,
            };
            let candidate = DeployCandidate {
                run: Some(artifact.run_id),
                commit: commit.as_deref(),
                is_ancestor_of_live: ancestor,
            };
            if let Some(why) = release::outdated(live.as_ref(), &candidate) {
                return Err(DeployError::Conflict(format!(
                    "refusing an outdated deploy: {why}. To go back, use `gantry rollback {}`; to deploy it anyway, add --force",
                    req.environment
                )));
            }
        }

        let rec = self
            .store
            .create_release(gantry_engine::ports::NewRelease {
                project: req.project.clone(),
                environment: req.environment.clone(),
                kind: ReleaseKind::Deploy,
                source: None,
                artifact: artifact.name.clone(),
                digest: artifact.digest.clone(),
                run_id: Some(artifact.run_id),
                commit: run.as_ref().map(|r| r.commit.clone()),
                created_by: req.requested_by.clone(),
                created_at: now_millis(),
                reason: None,
            })
            .await?;
        self.store
            .pin(&rec.digest, &pin_reason(&rec), now_millis())
            .await?;
        let mut ctx = self
            .context(&rec, live.as_ref().map(|l| l.number), &spec)
            .await;
        // A canary needs something to compare with: the router's stable release, or (for a
        // target that splits traffic itself) the live release.
        let canary = spec.canary.is_some()
            && live.is_some()
            && match target.routing() {
                Routing::Router => env.router().is_some_and(|r| r.table().stable.is_some()),
                Routing::Itself => true,
            };
        ctx.canary = canary;
        let d = Drive {
            env: env.clone(),
            target,
            rec: rec.clone(),
            ctx,
            spec: spec.clone(),
            live,
            from: None,
            reason: None,
            addr: None,
            resume: None,
        };
        let plan = Self::plan(&d, Purpose::Deploy { canary }, true, false);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let guards = Guards {
            lock: Some(lock),
            local: Some(local),
        };
        let task = tokio::spawn(async move { this.drive(d, plan, Some(tx), guards).await });
        let reached = rx
            .await
            .unwrap_or_else(|_| Reached::Failed("the deployment's driver stopped".to_string()));
        let message = match reached {
            Reached::Failed(why) => {
                return Ok(DeployReport {
                    release: self.reload(&rec).await,
                    succeeded: false,
                    message: why,
                });
            }
            Reached::Canary if !wait_bake => {
                return Ok(DeployReport {
                    release: self.reload(&rec).await,
                    succeeded: true,
                    message: format!(
                        "release {} of {} is a canary: it gets the first step's share of users; follow it with `gantry status {}`, end it with `gantry promote` or `gantry abort`",
                        rec.number, rec.environment, rec.environment
                    ),
                });
            }
            Reached::Canary => String::new(),
            Reached::Live => format!("release {} of {} is live", rec.number, rec.environment),
        };
        if !wait_bake {
            return Ok(DeployReport {
                release: self.reload(&rec).await,
                succeeded: true,
                message,
            });
        }
        let (succeeded, message) = match task.await {
            Ok(Ended {
                failure: Some(why), ..
            }) => (false, why),
            Ok(Ended {
                failure: None,
                canary,
            }) => (
                true,
                format!(
                    "{} and baked for {}",
                    canary.unwrap_or(message),
                    gantry_model::duration::format_duration(spec.bake)
                ),
            ),
            Err(e) => (false, format!("the deployment's driver stopped: {e}")),
        };
        Ok(DeployReport {
            release: self.reload(&rec).await,
            succeeded,
            message,
        })
    }

    /// A release that did not come up: stop it, record why, restore the previous one for
    /// targets that switch traffic themselves, drop its directory and pin.
    pub(super) async fn fail(
        &self,
        env: &Env,
        target: &Arc<dyn Target>,
        rec: &ReleaseRecord,
        why: &str,
        live: Option<&ReleaseRecord>,
    ) -> Result<()> {
        target.stop(rec.source).await;
        let mut reason = why.to_string();
        if target.routing() == Routing::Itself
            && let Some(l) = live
        {
            // The deploy script may have switched traffic already: put the live one back.
            let spec = env.spec.lock().expect("spec").clone();
            let to = self.context(l, None, &spec).await;
            let from = self.context(rec, Some(l.number), &spec).await;
            match target.roll_back(&to, &from).await {
                Ok(()) => reason.push_str(&format!("; rolled back to release {}", l.number)),
                Err(e) => reason.push_str(&format!(
                    "; rolling back to release {} failed too: {e:#}",
                    l.number
                )),
            }
        }
        self.store
            .set_release_state(rec.id, ReleaseState::Failed, Some(&reason), now_millis())
            .await?;
        if rec.kind == ReleaseKind::Deploy {
            self.retire(env, rec).await;
        }
        self.failed(rec);
        Ok(())
    }

    /// After a switch: stop releases that are neither live nor the fallback, retire what
    /// `keep` no longer covers, and schedule the previous release's stop if configured.
    pub(super) async fn after_switch(
        &self,
        env: &Arc<Env>,
        target: &Arc<dyn Target>,
        spec: &EnvironmentSpec,
    ) {
        let Ok(history) = self.store.releases(&env.project, &env.name).await else {
            return;
        };
        let live_source = release::live(&history).map(|l| l.source);
        let fallback_source = env
            .router()
            .and_then(|r| r.table().fallback.clone())
            .and_then(|b| {
                history
                    .iter()
                    .find(|r| r.number == b.release)
                    .map(|r| r.source)
            });
        for number in release::to_retire(&history, spec.keep) {
            if let Some(r) = history.iter().find(|r| r.number == number) {
                self.retire(env, r).await;
            }
        }
        for source in env.running_sources() {
            if Some(source) != live_source && Some(source) != fallback_source {
                self.stop_release(env, target, source).await;
            }
        }
        if let (Some(after), Some(previous)) = (spec.keep_previous_running, fallback_source) {
            let (env, target) = (env.clone(), target.clone());
            let store = self.store.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _guard = env.work.lock().await;
                let Ok(history) = store.releases(&env.project, &env.name).await else {
                    return;
                };
                let source_of = |number: i64| {
                    history
                        .iter()
                        .find(|r| r.number == number)
                        .map(|r| r.source)
                };
                let Some(router) = env.router() else { return };
                let table = router.table();
                let still_fallback = table
                    .fallback
                    .as_ref()
                    .is_some_and(|b| source_of(b.release) == Some(previous));
                let live_is_other = release::live(&history).is_some_and(|l| l.source != previous);
                if still_fallback && live_is_other {
                    if let Some(p) = table.primary().cloned()
                        && let Err(e) = router.set(RouteTable::single(p, None)).await
                    {
                        tracing::warn!(error = %format!("{e:#}"), "dropping the fallback");
                        return;
                    }
                    drain(&env, previous).await;
                    target.stop(previous).await;
                    env.backends.lock().expect("backends").remove(&previous);
                }
            });
        }
    }

    pub(super) async fn stop_release(&self, env: &Env, target: &Arc<dyn Target>, source: i64) {
        drain(env, source).await;
        target.stop(source).await;
        env.backends.lock().expect("backends").remove(&source);
    }

    /// Removes a deploy release's directory and log, unpins its artifact, records it.
    pub(super) async fn retire(&self, env: &Env, r: &ReleaseRecord) {
        if let Some(t) = env.target() {
            self.stop_release(env, &t, r.number).await;
            let spec = env.spec.lock().expect("spec").clone();
            t.retire(&self.context(r, None, &spec).await).await;
        }
        let dir = self.release_dir(&r.project, &r.environment, r.number);
        let _ = std::fs::remove_dir_all(&dir);
        kept::remove(&dir);
        let _ = std::fs::remove_file(self.release_log(&r.project, &r.environment, r.number));
        let _ = self.store.unpin(&r.digest, &pin_reason(r)).await;
        let _ = self.store.mark_retired(r.id, now_millis()).await;
    }

    /// Rolls back from `bad` (if it is still live) with `why`; false if the environment moved
    /// on already.
    pub(super) async fn automatic_rollback(
        &self,
        env: &Arc<Env>,
        bad: &ReleaseRecord,
        why: &str,
    ) -> Result<bool> {
        // Another deployment may hold the lock for a moment: wait for it (bounded), then see
        // whether the environment moved on meanwhile.
        let purpose = format!("automatic rollback of release {}", bad.number);
        let mut attempts = 0;
        let _lock = loop {
            match self.lock(&env.project, &env.name, &purpose).await {
                Ok(l) => break l,
                Err(DeployError::Conflict(_)) if attempts < 300 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let _local = env.work.lock().await;
        let history = self.store.releases(&env.project, &env.name).await?;
        if release::live(&history).map(|l| l.id) != Some(bad.id) {
            return Ok(false);
        }
        self.roll_back_locked(
            env,
            None,
            "gantry (automatic)",
            Some(why),
            ReleaseState::Failed,
        )
        .await?;
        self.failed(bad);
        Ok(true)
    }
}
