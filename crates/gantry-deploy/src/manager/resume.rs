//! Canaries taken over after a restart: the data plane went on serving the canary's share and
//! measuring both sides while no server ran, so a server started again goes on with the same
//! step, judging it on the router's numbers since the step began — it never promotes on
//! numbers the router did not see, and never asks users to change sides.

use super::drive::{Drive, Guards};
use super::*;
use gantry_engine::deployment::Purpose;

impl DeployManager {
    /// The progress of the canary `r` when it can go on: kept on disk for this release, and
    /// the data plane still serving that share to it.
    pub(super) async fn resumable(&self, r: &ReleaseRecord) -> Option<canary::Progress> {
        if r.state != ReleaseState::Canary {
            return None;
        }
        let p = self.progress(&r.project, &r.environment)?;
        if p.release != r.number {
            return None;
        }
        let key = format!("{}/{}", r.project, r.environment);
        let (_, table) = self.plane.table(&key).await.ok()?;
        let c = table.canary?;
        (c.backend.release == r.number && c.share == p.percent * 100).then_some(p)
    }

    /// Takes the canary `rec` over: the environment's lock, its release adopted where it runs
    /// (one health check), then the canary phase from `p` — and its bake — in the background,
    /// as the deployment would have gone on.
    pub(super) async fn resume_canary(
        self: &Arc<Self>,
        rec: &ReleaseRecord,
        p: canary::Progress,
    ) -> Result<()> {
        let spec = self
            .environment_at(&rec.project, rec.run_id, &rec.environment)
            .await
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        let env = self.env(&rec.project, &rec.environment, &spec);
        let lock = self
            .lock(
                &rec.project,
                &rec.environment,
                &format!(
                    "canary of release {} (taken over after a restart)",
                    rec.number
                ),
            )
            .await?;
        let local = env.work.clone().lock_owned().await;
        let target = self.prepare(&env, &spec).await?;
        let history = self.store.releases(&rec.project, &rec.environment).await?;
        let live = release::live(&history).cloned();
        let mut ctx = self
            .context(rec, live.as_ref().map(|l| l.number), &spec)
            .await;
        ctx.canary = true;
        let addr = target
            .adopt(&ctx)
            .await
            .map_err(|e| DeployError::Internal(e.context("adopting the canary")))?
            .ok_or_else(|| DeployError::Conflict("the canary's release no longer runs".into()))?;
        let d = Drive {
            env,
            target,
            rec: rec.clone(),
            ctx,
            spec,
            live,
            from: None,
            reason: None,
            addr: Some(addr),
            resume: Some(p),
        };
        let plan = Self::plan(&d, Purpose::Deploy { canary: true }, false, true);
        let guards = Guards {
            lock: Some(lock),
            local: Some(local),
        };
        let this = self.clone();
        tokio::spawn(async move { this.drive(d, plan, None, guards).await });
        Ok(())
    }

    /// A canary that cannot go on: its share goes back to stable.
    pub(super) async fn drop_canary(&self, r: &ReleaseRecord) {
        let env = self
            .envs
            .lock()
            .expect("envs")
            .get(&(r.project.clone(), r.environment.clone()))
            .cloned();
        if let Some(router) = env.and_then(|e| e.router()) {
            let table = router.table();
            if table.canary.is_some()
                && let Some(stable) = table.stable.clone()
            {
                let _ = router.set(RouteTable::single(stable, None)).await;
            }
        }
        let _ = std::fs::remove_file(self.progress_path(&r.project, &r.environment));
    }
}
