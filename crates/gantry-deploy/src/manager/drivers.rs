//! Which server drives an environment: restores it at start, supervises its releases, runs its
//! deployments, canaries, bakes and alarms. One server at a time, under a lease in the store
//! (`env_drivers`) that it renews. Servers sharing a store leave each other's environments
//! alone. When a driver dies, its lease passes and another server takes the environment over
//! (deployments it cut short are marked interrupted, the live release is started again here).
//! A server about to deploy to (or roll back) an environment another server drives asks for it:
//! the driver lets go (its router and release processes stop) and the asker takes it.

use super::*;
use gantry_engine::ports::EnvDriver;
use std::collections::HashSet;

/// How long a driver's claim lasts unrenewed: another server takes the environment over after.
pub(super) const DRIVER_LEASE: Duration = LEASE;
/// How often the drivers' loop looks at the store (handovers asked for, leases passed).
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// Every this many looks, it renews its leases and looks for environments to take over.
const RENEW_EVERY_LOOKS: u32 = 5;

impl DeployManager {
    pub(super) fn drives(&self, project: &str, env: &str) -> bool {
        self.driving
            .lock()
            .expect("driving")
            .contains(&(project.to_string(), env.to_string()))
    }

    fn set_driving(&self, project: &str, env: &str, on: bool) {
        let key = (project.to_string(), env.to_string());
        let mut driving = self.driving.lock().expect("driving");
        if on {
            driving.insert(key);
        } else {
            driving.remove(&key);
        }
    }

    /// Claims the environment for this server (see `ReleaseStore::claim_driver`) for a lease.
    async fn claim(&self, project: &str, env: &str) -> Result<std::result::Result<(), EnvDriver>> {
        Ok(self
            .store
            .claim_driver(project, env, &self.owner, self.driver_until(), now_millis())
            .await?)
    }

    fn driver_until(&self) -> i64 {
        now_millis() + DRIVER_LEASE.as_millis() as i64
    }

    /// Makes this server the environment's driver: at once when no one drives it, its driver's
    /// lease has passed, or it is this server; else asks the driver to hand it over and waits
    /// for it to let go (at most a lease and a little more, after which it refuses).
    pub(super) async fn become_driver(&self, project: &str, env: &str) -> Result<()> {
        if self.drives(project, env) {
            return Ok(()); // A rollback stays a lookup and a switch.
        }
        let deadline = tokio::time::Instant::now() + DRIVER_LEASE + Duration::from_secs(5);
        let mut asked = false;
        loop {
            let holder = match self.claim(project, env).await? {
                Ok(()) => {
                    self.set_driving(project, env, true);
                    return Ok(());
                }
                Err(holder) => holder,
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(DeployError::Conflict(format!(
                    "{project}/{env} is driven by {}, which did not hand it over (asked {}s ago)",
                    holder.owner,
                    (DRIVER_LEASE + Duration::from_secs(5)).as_secs()
                )));
            }
            if !asked {
                tracing::info!(
                    project,
                    environment = env,
                    driver = holder.owner,
                    "asking the environment's driver to hand it over"
                );
                self.store
                    .request_handover(project, env, &self.owner)
                    .await?;
                asked = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// At start: the environments this server drives from now on — those no live server
    /// drives (a driver that was a stopped process of this data directory counts as gone) —
    /// and a note for each one another server drives.
    pub(super) async fn claim_at_start(
        &self,
        owner_gone: &impl Fn(&str) -> bool,
    ) -> anyhow::Result<(HashSet<(String, String)>, Vec<String>)> {
        let mut mine = HashSet::new();
        let mut notes = Vec::new();
        for (project, env) in self.store.environments().await? {
            let mut claimed = self.claim(&project, &env).await?;
            if let Err(holder) = &claimed
                && (owner_gone(&holder.owner) || self.driver_gone(&holder.owner).await)
            {
                self.store
                    .release_driver(&project, &env, &holder.owner)
                    .await?;
                claimed = self.claim(&project, &env).await?;
            }
            match claimed {
                Ok(()) => {
                    self.set_driving(&project, &env, true);
                    mine.insert((project, env));
                }
                Err(holder) => notes.push(format!(
                    "{project}/{env}: driven by {} (its lease ends in {}s); left to it",
                    holder.owner,
                    ((holder.expires_at - now_millis()).max(0) + 999) / 1000
                )),
            }
        }
        Ok((mine, notes))
    }

    /// Whether the driver `name` is known to be gone although its lease has not passed: it
    /// stopped (its owner row removed), or it ran on this host and its process is no more.
    async fn driver_gone(&self, name: &str) -> bool {
        match self.store.owner(name).await {
            Ok(None) => true,
            Ok(Some(o)) => {
                o.expires_at < now_millis()
                    || (o.host == gantry_runner::owner::this_host()
                        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(o.pid as i32), None)
                            .is_err_and(|e| e == nix::errno::Errno::ESRCH))
            }
            Err(_) => false,
        }
    }

    /// While this server runs: its leases renewed, environments it is asked for handed over,
    /// and environments whose driver's lease passed taken over.
    pub(super) fn spawn_drivers(self: &Arc<Self>) {
        let manager = self.clone();
        tokio::spawn(async move {
            let mut looks = 0u32;
            loop {
                tokio::time::sleep(LOOK_EVERY).await;
                looks = looks.wrapping_add(1);
                if let Err(e) = manager.look(looks.is_multiple_of(RENEW_EVERY_LOOKS)).await {
                    tracing::warn!(error = %format!("{e:#}"), "looking after the environments' drivers");
                }
            }
        });
    }

    async fn look(self: &Arc<Self>, renew: bool) -> anyhow::Result<()> {
        if renew {
            self.store
                .renew_drivers(&self.owner, self.driver_until())
                .await?;
        }
        let drivers = self.store.env_drivers().await?;
        // What the store says this server drives (a lease it could not renew in time may
        // have been taken over meanwhile).
        *self.driving.lock().expect("driving") = drivers
            .iter()
            .filter(|d| {
                d.owner == self.owner && d.handover_to.as_deref().is_none_or(|to| to == self.owner)
            })
            .map(|d| (d.project.clone(), d.environment.clone()))
            .collect();
        for d in drivers.iter().filter(|d| d.owner == self.owner) {
            if let Some(to) = d.handover_to.as_deref().filter(|to| *to != self.owner) {
                let note = self.let_go(&d.project, &d.environment, to).await;
                tracing::info!(project = d.project, environment = d.environment, "{note}");
            }
        }
        // What was asked of them through other servers (canary actions, alarms).
        self.answer_requests().await?;
        if !renew {
            return Ok(());
        }
        let now = now_millis();
        for (project, env) in self.store.environments().await? {
            let driver = drivers
                .iter()
                .find(|d| d.project == project && d.environment == env);
            let from = match driver {
                Some(d) if d.owner == self.owner || d.expires_at >= now => continue,
                Some(d) => d.owner.clone(),
                None => "no server".to_string(),
            };
            if self.claim(&project, &env).await?.is_err() {
                continue;
            }
            self.set_driving(&project, &env, true);
            for note in self.take_over(&project, &env, &from).await {
                eprintln!("gantry: {note}");
            }
        }
        Ok(())
    }

    /// Hands the environment over to `to`, unless work on it runs here: its router and release
    /// processes here stop (the history is untouched), then its row goes.
    async fn let_go(&self, project: &str, environment: &str, to: &str) -> String {
        let key = (project.to_string(), environment.to_string());
        let env = self.envs.lock().expect("envs").get(&key).cloned();
        let mut stopped = 0;
        if let Some(env) = env {
            let Ok(_local) = env.work.clone().try_lock_owned() else {
                return format!("{project}/{environment}: asked for by {to}, but busy here");
            };
            self.envs.lock().expect("envs").remove(&key);
            let router = env.router.lock().expect("router").take();
            if let Some(r) = router {
                let _ = r.close().await;
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
        self.set_driving(project, environment, false);
        if let Err(e) = self
            .store
            .release_driver(project, environment, &self.owner)
            .await
        {
            return format!("{project}/{environment}: letting go for {to}: {e:#}");
        }
        format!(
            "{project}/{environment}: handed over to {to} (its router and {stopped} release process(es) here stopped)"
        )
    }

    /// Takes over an environment whose driver (`from`) stopped renewing: a canary it was
    /// running goes on here from its step; anything else it had cut short is marked
    /// interrupted; the live release is started again here. When that fails, the environment
    /// is let go, to be tried again. Returns what it did, for the log.
    async fn take_over(self: &Arc<Self>, project: &str, env: &str, from: &str) -> Vec<String> {
        let mut notes = vec![format!("{project}/{env}: taken over from {from}")];
        let result: Result<()> = async {
            // The dead driver's lock of the environment (a canary holds it) goes with it.
            self.store.release_env_lock(project, env, from).await?;
            let mut canaries = Vec::new();
            for r in self.store.deploying_releases().await? {
                if r.project != project || r.environment != env {
                    continue;
                }
                match self.left_canary(&r).await {
                    Some(p) => canaries.push((r, p)),
                    None => notes.push(self.interrupt(&r).await?),
                }
            }
            let history = self.store.releases(project, env).await?;
            let live = release::live(&history).cloned();
            let stopped = match &live {
                Some(live) => self.stopped(live).await,
                None => false,
            };
            let Some(live) = live.filter(|_| !stopped) else {
                if stopped {
                    notes.push(format!(
                        "{project}/{env}: stopped on purpose (gantry stop); not started"
                    ));
                }
                for (r, _) in canaries {
                    notes.push(self.interrupt(&r).await?);
                }
                return Ok(());
            };
            self.restore(&live, &history, !canaries.is_empty()).await?;
            notes.push(format!(
                "{project}/{env}: release {} serves again, from here",
                live.number
            ));
            notes.extend(self.go_on_with(canaries, Some(from)).await?.0);
            Ok(())
        }
        .await;
        if let Err(e) = result {
            notes.push(format!(
                "{project}/{env}: could not be taken over: {e}; let go, to be tried again"
            ));
            self.set_driving(project, env, false);
            let _ = self.store.release_driver(project, env, &self.owner).await;
        }
        notes
    }
}
