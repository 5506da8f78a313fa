//! Canaries taken over. After a restart of this server, the data plane went on serving the
//! canary's share and measuring both sides while no server ran, so the server goes on with the
//! same step, judging it on the router's numbers since the step began. From a driver that died
//! with its host, the canary's release is started here next to the live one, this server's
//! router serves the step's share again (users land on the same side: the split hashes the
//! user), and the step is observed anew. Either way it never promotes on numbers its router did
//! not see, and never starts the canary over from its first step.

use super::canary::Resume;
use super::drive::{Drive, Guards};
use super::*;
use gantry_engine::deployment::Purpose;
use gantry_engine::ports::CanaryProgress;

impl DeployManager {
    /// The progress of the canary `r` when it can go on after a restart: kept with the
    /// release, and the data plane still serving that share to it.
    pub(super) async fn resumable(&self, r: &ReleaseRecord) -> Option<CanaryProgress> {
        let p = self.left_canary(r).await?;
        let key = format!("{}/{}", r.project, r.environment);
        let (_, table) = self.plane.table(&key).await.ok()?;
        let c = table.canary?;
        (c.backend.release == r.number && c.share == p.percent * 100).then_some(p)
    }

    /// The progress of the canary `r` a dead driver left, when it can go on here.
    pub(super) async fn left_canary(&self, r: &ReleaseRecord) -> Option<CanaryProgress> {
        if r.state != ReleaseState::Canary {
            return None;
        }
        self.store.canary_progress(r.id).await.ok().flatten()
    }

    /// Takes the canary `rec` over: the environment's lock, its release adopted where it runs
    /// (after a restart: one health check) or started here (from a dead driver: unpacked,
    /// started, checked), then the canary phase from where it was — and its bake — in the
    /// background, as the deployment would have gone on.
    pub(super) async fn resume_canary(
        self: &Arc<Self>,
        rec: &ReleaseRecord,
        resume: Resume,
    ) -> Result<()> {
        let spec = self
            .environment_at(&rec.project, rec.run_id, &rec.environment)
            .await
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        let env = self.env(&rec.project, &rec.environment, &spec);
        let purpose = match &resume.from {
            None => format!(
                "canary of release {} (taken over after a restart)",
                rec.number
            ),
            Some(from) => format!("canary of release {} (taken over from {from})", rec.number),
        };
        let lock = self.lock(&rec.project, &rec.environment, &purpose).await?;
        let local = env.work.clone().lock_owned().await;
        let target = self.prepare(&env, &spec).await?;
        let history = self.store.releases(&rec.project, &rec.environment).await?;
        let live = release::live(&history).cloned();
        let mut ctx = self
            .context(rec, live.as_ref().map(|l| l.number), &spec)
            .await;
        ctx.canary = true;
        let addr = match resume.from {
            None => Some(
                target
                    .adopt(&ctx)
                    .await
                    .map_err(|e| DeployError::Internal(e.context("adopting the canary")))?
                    .ok_or_else(|| {
                        DeployError::Conflict("the canary's release no longer runs".into())
                    })?,
            ),
            // What ran on the dead driver's host is gone with it: started here.
            Some(_) => None,
        };
        let unpack = addr.is_none() && !ctx.dir.is_dir();
        let d = Drive {
            env,
            target,
            rec: rec.clone(),
            ctx,
            spec,
            live,
            from: None,
            reason: None,
            addr,
            resume: Some(resume),
        };
        let plan = Self::plan(&d, Purpose::Deploy { canary: true }, unpack, addr.is_some());
        let guards = Guards {
            lock: Some(lock),
            local: Some(local),
        };
        let this = self.clone();
        tokio::spawn(async move { this.drive(d, plan, None, guards).await });
        Ok(())
    }

    /// Takes over the canaries `left`, after a restart of this server (`from: None`) or from
    /// the dead driver `from`: each goes on from its step, or, when it cannot, its share goes
    /// back to stable and it is marked interrupted. Returns the notes for the log, and the
    /// canaries that go on (project, environment, source).
    pub(super) async fn go_on_with(
        self: &Arc<Self>,
        left: Vec<(ReleaseRecord, CanaryProgress)>,
        from: Option<&str>,
    ) -> Result<(Vec<String>, Vec<(String, String, i64)>)> {
        let (mut notes, mut going_on) = (Vec::new(), Vec::new());
        for (r, progress) in left {
            let step = progress.step + 1;
            let resume = Resume {
                progress,
                from: from.map(str::to_string),
            };
            let canary = format!(
                "{}/{}: the canary of release {}",
                r.project, r.environment, r.number
            );
            match self.resume_canary(&r, resume).await {
                Ok(()) => {
                    let here = if from.is_some() { ", here" } else { "" };
                    notes.push(format!("{canary} goes on from step {step}{here}"));
                    going_on.push((r.project.clone(), r.environment.clone(), r.source));
                }
                Err(e) => {
                    notes.push(format!("{canary} could not be taken over: {e}"));
                    self.drop_canary(&r).await;
                    notes.push(self.interrupt(&r).await?);
                }
            }
        }
        Ok((notes, going_on))
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
        let _ = self.store.set_canary_progress(r.id, None).await;
    }
}
