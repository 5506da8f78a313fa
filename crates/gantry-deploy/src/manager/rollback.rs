//! Rolling back: to the previous healthy release or a chosen kept one, verified before any
//! traffic moves (kept releases are compared with what was verified when they were unpacked).

use super::drive::{Drive, Guards};
use super::*;
use gantry_engine::deployment::Purpose;

impl DeployManager {
    /// `gantry rollback`: back to the previous healthy release, or to `to`.
    pub async fn rollback(
        self: &Arc<Self>,
        project: &str,
        environment: &str,
        to: Option<i64>,
        by: &str,
    ) -> Result<ReleaseRecord> {
        let history = self.store.releases(project, environment).await?;
        if history.is_empty() {
            return Err(DeployError::NotFound(format!(
                "{project}/{environment} has no releases"
            )));
        }
        let env = match self.known_env(project, environment) {
            Some(e) => e,
            None => {
                let live = release::live(&history).ok_or_else(|| {
                    DeployError::Conflict(format!("{project}/{environment} has no live release"))
                })?;
                let spec = self
                    .environment_at(project, live.run_id, environment)
                    .await
                    .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
                self.env(project, environment, &spec)
            }
        };
        // During a canary, rolling back is aborting it: stable never stopped serving.
        if let Some(done) = canary::abort_running(&env, &format!("rolled back by {by}")) {
            let _ = done.await;
            let history = self.store.releases(project, environment).await?;
            return release::live(&history).cloned().ok_or_else(|| {
                DeployError::Conflict(format!("{project}/{environment} has no live release"))
            });
        }
        let purpose = format!("rollback by {by}");
        let _lock = self.lock(project, environment, &purpose).await?;
        let _local = env.work.lock().await;
        self.roll_back_locked(&env, to, by, None, ReleaseState::RolledBack)
            .await
    }

    pub(super) async fn roll_back_locked(
        &self,
        env: &Arc<Env>,
        to: Option<i64>,
        by: &str,
        reason: Option<&str>,
        from_becomes: ReleaseState,
    ) -> Result<ReleaseRecord> {
        let history = self.store.releases(&env.project, &env.name).await?;
        let live = release::live(&history).cloned().ok_or_else(|| {
            DeployError::Conflict(format!("{}/{} has no live release", env.project, env.name))
        })?;
        let target_rec = release::rollback_target(&history, to)
            .map_err(|r| DeployError::Conflict(r.to_string()))?
            .clone();
        // The kept release first: a rollback must not start what it cannot verify. It was
        // verified when unpacked; what is there now is compared with that record (a stat per
        // file), and the stored artifact is read only when it is not known to be unchanged.
        self.check_kept(env, &target_rec).await?;
        let spec = match &target_rec.run_id {
            Some(run) => self
                .environment_at(&env.project, Some(*run), &env.name)
                .await
                .unwrap_or_else(|_| env.spec.lock().expect("spec").clone()),
            None => env.spec.lock().expect("spec").clone(),
        };
        let target = self.prepare(env, &spec).await?;
        let rec = self
            .store
            .create_release(gantry_engine::ports::NewRelease {
                project: env.project.clone(),
                environment: env.name.clone(),
                kind: ReleaseKind::Rollback,
                source: Some(target_rec.number),
                artifact: target_rec.artifact.clone(),
                digest: target_rec.digest.clone(),
                run_id: target_rec.run_id,
                commit: target_rec.commit.clone(),
                created_by: by.to_string(),
                created_at: now_millis(),
                reason: reason.map(str::to_string),
            })
            .await?;
        let ctx = self.context(&rec, Some(live.number), &spec).await;
        let from = self.context(&live, None, &spec).await;
        // Running already (the fallback): one check and a router switch. Otherwise it is
        // started again (and unpacked again, should its directory be gone).
        let running = target.running(rec.source).and_then(|r| r.addr);
        let unpack = !ctx.dir.is_dir();
        let reason = match from_becomes {
            ReleaseState::Failed => reason.map(str::to_string),
            _ => Some(format!("rolled back by {by}")),
        };
        let d = Drive {
            env: env.clone(),
            target: target.clone(),
            rec: rec.clone(),
            ctx,
            spec,
            live: Some(live.clone()),
            from: Some(from),
            reason,
            addr: running,
            resume: None,
        };
        let plan = Self::plan(
            &d,
            Purpose::Rollback {
                previous_becomes: from_becomes,
            },
            unpack,
            running.is_some(),
        );
        match self.drive(d, plan, None, Guards::default()).await.failure {
            Some(why) => Err(DeployError::Conflict(format!(
                "rolling back to release {} failed; release {} is still live: {why}",
                target_rec.number, live.number
            ))),
            None => Ok(self.reload(&rec).await.unwrap_or(rec)),
        }
    }

    /// Refuses (touching nothing) a rollback to a kept release that is not as it was verified:
    /// its directory changed or was removed, or its stored artifact is corrupt or missing.
    pub(super) async fn check_kept(&self, env: &Env, to: &ReleaseRecord) -> Result<()> {
        let dir = self.release_dir(&env.project, &env.name, to.source);
        let stamp = self.artifacts.stamp(&to.digest).await.map_err(|_| ());
        let state = {
            let (dir, digest) = (dir.clone(), to.digest.clone());
            tokio::task::spawn_blocking(move || kept::compare(&dir, &digest, stamp))
                .await
                .map_err(|e| DeployError::Internal(e.into()))?
        };
        match state {
            Kept::Intact => Ok(()),
            Kept::Changed(what) => Err(DeployError::Conflict(format!(
                "refusing to roll back to release {}: its release directory {} changed after it was verified ({what}). Traffic was not touched; to use that version again, deploy its run again",
                to.number,
                dir.display()
            ))),
            Kept::Unrecorded | Kept::Missing | Kept::ObjectChanged => {
                if let Err(e) = self.artifacts.confirm(&to.digest).await {
                    return Err(DeployError::Conflict(format!(
                        "refusing to roll back to release {}: its artifact {} cannot be used: {e:#}. Traffic was not touched",
                        to.number, to.digest
                    )));
                }
                // The tree matched and the object checks out: remember the object's new stamp
                // (stores without stamps are asked every time; `confirm` is cheap there).
                if state == Kept::ObjectChanged
                    && let Ok(Some(stamp)) = self.artifacts.stamp(&to.digest).await
                {
                    let _ = kept::write(&dir, &to.digest, Some(&stamp));
                }
                Ok(())
            }
        }
    }
}
