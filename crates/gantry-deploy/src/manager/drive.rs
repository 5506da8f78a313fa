//! The driver of the engine's `DeploymentMachine`, in the shape of the run loop
//! (`gantry-runner/src/execute.rs::drive`): events go into `machine.on(event)`, each command is
//! carried out (unpack, start, probe, router, store, canary, rollback) and answered with the
//! event it produced; while the release bakes, the driver feeds the machine ticks and alarms.
//! Every decision — when to give up on health, when to switch, what a failed record undoes,
//! when a bake rolls back — is the machine's.

use super::*;
use gantry_engine::deployment::{
    Command, Crash, DeploymentMachine, Event, Plan, Purpose, RolledBack, Traffic,
};
use std::collections::VecDeque;
use tokio::sync::{OwnedMutexGuard, oneshot};

/// How often the bake looks at the release.
const BAKE_TICK: Duration = Duration::from_millis(200);

/// What the one waiting for a deployment hears first.
#[derive(Debug)]
pub(super) enum Reached {
    /// Switched: users are on the release (its bake may go on).
    Live,
    /// Healthy and serving as a canary next to the live release.
    Canary,
    /// Failed before any user was switched to it (or was switched back), with why.
    Failed(String),
}

/// The guards a deployment holds until its release is live: the store's lock and this
/// process's work on the environment (a canary keeps the lock until it ends).
#[derive(Default)]
pub(super) struct Guards {
    pub lock: Option<LockGuard>,
    pub local: Option<OwnedMutexGuard<()>>,
}

/// One deployment's parts, for the driver.
pub(super) struct Drive {
    pub env: Arc<Env>,
    pub target: Arc<dyn Target>,
    pub rec: ReleaseRecord,
    pub ctx: ReleaseContext,
    pub spec: EnvironmentSpec,
    /// The release live before this deployment.
    pub live: Option<ReleaseRecord>,
    /// A rollback: the live release's context, for targets that move traffic themselves.
    pub from: Option<ReleaseContext>,
    /// What the store records with the switch (a rollback's reason).
    pub reason: Option<String>,
    /// Where the release listens, once known (a kept release running already).
    pub addr: Option<SocketAddr>,
    /// A canary taken over (after a restart, or from a dead driver): where its machine was.
    pub resume: Option<super::canary::Resume>,
}

/// How a deployment ended.
pub(super) struct Ended {
    /// Why the release failed, if it did (before or after it was live).
    pub failure: Option<String>,
    /// A canary's own message when it was promoted.
    pub canary: Option<String>,
}

impl DeployManager {
    /// The machine's plan for a deployment of `d`.
    pub(super) fn plan(d: &Drive, purpose: Purpose, unpack: bool, running: bool) -> Plan {
        let h = &d.spec.health;
        Plan {
            release: d.rec.number,
            purpose,
            routing: d.target.routing(),
            unpack,
            running,
            check: describe_check(&h.check),
            health_timeout_ms: h.timeout.as_millis() as i64,
            health_interval_ms: h.interval.as_millis() as i64,
            bake_ms: d.spec.bake.as_millis() as i64,
        }
    }

    /// Runs a deployment to its end. `reached` hears once when the release is live, a canary,
    /// or failed before; `guards` are dropped then.
    pub(super) async fn drive(
        &self,
        mut d: Drive,
        plan: Plan,
        mut reached: Option<oneshot::Sender<Reached>>,
        mut guards: Guards,
    ) -> Ended {
        let purpose = plan.purpose.clone();
        let mut machine = DeploymentMachine::new(plan);
        let mut events: VecDeque<Event> = VecDeque::from([Event::Start { now: now_millis() }]);
        let mut crashes_at_start = 0;
        let mut bake: Option<(u32, tokio::sync::broadcast::Receiver<String>)> = None;
        // The failure as the user should read it: the machine's reason with the release's
        // own last output where it asked for it.
        let mut failure_text: Option<String> = None;
        let mut canary_message = None;
        loop {
            let event = match events.pop_front() {
                Some(e) => e,
                None => match &mut bake {
                    Some((baseline, alarms)) => {
                        tokio::select! {
                            _ = tokio::time::sleep(BAKE_TICK.min(d.spec.bake)) => {
                                let running = d.target.running(d.rec.source);
                                let crashes = match &running {
                                    Some(r) => Some(r.crashes.saturating_sub(*baseline)),
                                    None if d.target.runs_elsewhere() => Some(0),
                                    None => None,
                                };
                                Event::Tick {
                                    now: now_millis(),
                                    crashes,
                                    last_crash: running.and_then(|r| r.last_crash).map(crash),
                                }
                            }
                            alarm = alarms.recv() => match alarm {
                                Ok(name) => Event::Alarm { now: now_millis(), name },
                                Err(_) => continue,
                            },
                        }
                    }
                    // The machine waits for nothing this driver can give: it is over.
                    None => break,
                },
            };
            for command in machine.on(event) {
                match command {
                    Command::Unpack => {
                        let error = self.unpack(&d.rec, &d.ctx).await.err();
                        events.push_back(Event::Unpacked {
                            now: now_millis(),
                            error,
                        });
                    }
                    Command::StartTarget => {
                        let rolls_back = matches!(purpose, Purpose::Rollback { .. })
                            && d.target.routing() == Routing::Itself;
                        let error = if rolls_back {
                            let from = d.from.as_ref().unwrap_or(&d.ctx);
                            d.target
                                .roll_back(&d.ctx, from)
                                .await
                                .err()
                                .map(|e| format!("{e:#}"))
                        } else {
                            match d.target.start(&d.ctx).await {
                                Ok(addr) => {
                                    d.addr = addr;
                                    None
                                }
                                Err(e) => Some(format!(
                                    "the {} target could not start it: {e:#}",
                                    d.target.kind()
                                )),
                            }
                        };
                        crashes_at_start = d.target.running(d.rec.source).map_or(0, |r| r.crashes);
                        events.push_back(Event::Started {
                            now: now_millis(),
                            error,
                        });
                    }
                    Command::Probe { at } => {
                        let wait = at - now_millis();
                        if wait > 0 {
                            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                        }
                        let vars = d.ctx.env();
                        let obs = health::check_once(&Probe {
                            check: &d.spec.health.check,
                            addr: d.addr,
                            dir: &d.ctx.dir,
                            env: &vars,
                            sandbox: d.ctx.sandbox.as_ref(),
                        })
                        .await;
                        let running = d.target.running(d.rec.source);
                        events.push_back(Event::Health {
                            now: now_millis(),
                            ok: obs.ok,
                            text: obs.text,
                            crashes: running
                                .as_ref()
                                .map_or(0, |r| r.crashes.saturating_sub(crashes_at_start)),
                            last_crash: running.and_then(|r| r.last_crash).map(crash),
                        });
                    }
                    Command::RecordHealth { seen } => {
                        let _ = self
                            .store
                            .add_release_event(d.rec.id, "health", &seen, now_millis())
                            .await;
                    }
                    Command::SetTraffic(traffic) => {
                        if let Err(e) = self.set_traffic(&d, traffic).await {
                            // The data plane did not take it: users stay where they were.
                            tracing::warn!(error = %format!("{e:#}"), "setting the route table");
                        }
                        events.push_back(Event::TrafficSet { now: now_millis() });
                    }
                    Command::RecordSwitch { previous_becomes } => {
                        let error = self
                            .store
                            .switch_live(
                                d.rec.id,
                                previous_becomes,
                                d.reason.as_deref(),
                                now_millis(),
                            )
                            .await
                            .err()
                            .map(|e| format!("{e:#}"));
                        events.push_back(Event::Recorded {
                            now: now_millis(),
                            error,
                        });
                    }
                    Command::RunCanary => {
                        // The canary holds the store's lock until it ends, not the local work.
                        guards.local = None;
                        // Whoever waits hears of the canary once it serves (and is recorded).
                        let mut waiting = reached.take();
                        let started = move || tell(Reached::Canary, &mut waiting);
                        let stable = match &d.live {
                            Some(live) => Some(self.context(live, None, &d.spec).await),
                            None => None,
                        };
                        let split = match (d.target.routing(), d.addr, stable) {
                            (Routing::Router, Some(addr), _) => {
                                Some(super::canary::Split::Router { addr })
                            }
                            (Routing::Itself, _, Some(stable)) => {
                                Some(super::canary::Split::Target {
                                    canary: Box::new(d.ctx.clone()),
                                    stable: Box::new(stable),
                                })
                            }
                            _ => None,
                        };
                        let outcome = match (split, d.spec.canary.clone()) {
                            (Some(split), Some(canary)) => {
                                self.run_canary(
                                    &d.env,
                                    &d.target,
                                    &d.rec,
                                    split,
                                    &d.spec,
                                    (canary, d.resume.clone()),
                                    started,
                                )
                                .await
                            }
                            _ => Err("a canary needs the release's address (or a live release to split with) and a canary strategy"
                                .to_string()),
                        };
                        guards.lock = None;
                        if let Ok(message) = &outcome {
                            canary_message = Some(message.clone());
                        }
                        events.push_back(Event::CanaryEnded {
                            now: now_millis(),
                            outcome,
                        });
                    }
                    Command::StopPrevious => {
                        if let Some(live) = &d.live {
                            self.stop_release(&d.env, &d.target, live.source).await;
                        }
                    }
                    Command::AfterSwitch => self.after_switch(&d.env, &d.target, &d.spec).await,
                    Command::Live => {
                        tell(Reached::Live, &mut reached);
                        // The bake needs neither: an automatic rollback takes them again.
                        drop(std::mem::take(&mut guards));
                        let baseline = d.target.running(d.rec.source).map_or(0, |r| r.crashes);
                        bake = Some((baseline, d.env.alarms.subscribe()));
                    }
                    Command::Fail {
                        reason,
                        with_output,
                        restore_previous,
                    } => {
                        let mut why = reason;
                        if with_output && !why.contains("last output") {
                            let tail = d
                                .target
                                .running(d.rec.source)
                                .and_then(|r| r.last_crash)
                                .map(|c| c.output_tail)
                                .unwrap_or_else(|| supervisor::tail(&d.ctx.log, 8));
                            if !tail.is_empty() {
                                why.push_str(&format!(
                                    "\nits last output:\n  {}",
                                    last_lines(&tail, 8)
                                ));
                            }
                        }
                        self.failed_deployment(&d, &purpose, &why, restore_previous)
                            .await;
                        tell(Reached::Failed(why.clone()), &mut reached);
                        failure_text = Some(why);
                    }
                    Command::RollBack { why } => {
                        // Boxed: a rollback is itself a deployment this driver runs.
                        let rollback = Box::pin(self.automatic_rollback(&d.env, &d.rec, &why));
                        let outcome = match rollback.await {
                            Ok(true) => RolledBack::Done,
                            Ok(false) => RolledBack::MovedOn,
                            Err(e) => RolledBack::Failed(e.to_string()),
                        };
                        events.push_back(Event::RolledBack {
                            now: now_millis(),
                            outcome,
                        });
                    }
                    Command::Finish { failure } => {
                        if let Some(f) = &failure {
                            tell(Reached::Failed(f.clone()), &mut reached);
                        }
                        return Ended {
                            failure: failure.map(|f| failure_text.take().unwrap_or(f)),
                            canary: canary_message,
                        };
                    }
                }
            }
        }
        Ended {
            failure: failure_text,
            canary: canary_message,
        }
    }

    /// Unpacks the release's artifact into its directory (the digest is checked while
    /// unpacking) and records what was verified, for rollbacks.
    async fn unpack(
        &self,
        rec: &ReleaseRecord,
        ctx: &ReleaseContext,
    ) -> std::result::Result<(), String> {
        let _ = std::fs::remove_dir_all(&ctx.dir);
        std::fs::create_dir_all(&ctx.dir)
            .map_err(|e| format!("creating {}: {e}", ctx.dir.display()))?;
        let media = self
            .store
            .find_artifact(&ArtifactQuery {
                digest: Some(&rec.digest),
                ..ArtifactQuery::default()
            })
            .await
            .ok()
            .flatten()
            .map(|a| a.media_type)
            .unwrap_or_default();
        // The object's stamp before unpacking: if it changes while we read, the record is
        // stale and the next rollback hashes the object again (never the other way).
        let stamp = self.artifacts.stamp(&rec.digest).await.ok().flatten();
        self.artifacts
            .unpack(&rec.digest, &media, &ctx.dir, &rec.artifact)
            .await
            .map_err(|e| format!("{e:#}"))?;
        if let Err(e) = kept::write(&ctx.dir, &rec.digest, stamp.as_deref()) {
            // Not fatal: without a record a rollback verifies the artifact in full.
            tracing::warn!(dir = %ctx.dir.display(), error = %e, "recording the verified release");
        }
        Ok(())
    }

    /// Points the router as the machine asked.
    async fn set_traffic(&self, d: &Drive, traffic: Traffic) -> anyhow::Result<()> {
        let (Some(router), Some(addr)) = (d.env.router(), d.addr) else {
            return Ok(());
        };
        let table = router.table();
        let backend = || {
            let backend = Backend::new(d.rec.number, addr);
            d.env
                .backends
                .lock()
                .expect("backends")
                .insert(d.rec.source, backend.clone());
            backend
        };
        match traffic {
            Traffic::Switch => {
                let fallback = table.primary().cloned();
                router.set(RouteTable::single(backend(), fallback)).await
            }
            Traffic::Back => match table.fallback.clone() {
                Some(old) => router.set(RouteTable::single(old, None)).await,
                None => Ok(()),
            },
            // Already serving it (adopted after a restart): the table stays as it is.
            Traffic::Only => match table.primary() {
                Some(p) if p.release == d.rec.number && p.addr == addr => {
                    d.env
                        .backends
                        .lock()
                        .expect("backends")
                        .insert(d.rec.source, p.clone());
                    Ok(())
                }
                _ => router.set(RouteTable::single(backend(), None)).await,
            },
        }
    }

    /// A release that did not come up, recorded as its purpose asks: a deploy is stopped,
    /// failed, retired and notified (a target moving traffic itself puts the previous release
    /// back first); a rollback is recorded failed; a restore leaves the record as it is.
    async fn failed_deployment(
        &self,
        d: &Drive,
        purpose: &Purpose,
        why: &str,
        restore_previous: bool,
    ) {
        match purpose {
            Purpose::Deploy { .. } => {
                let live = if restore_previous {
                    d.live.as_ref()
                } else {
                    None
                };
                if let Err(e) = self.fail(&d.env, &d.target, &d.rec, why, live).await {
                    tracing::warn!(error = %e, "recording a failed deployment");
                }
            }
            Purpose::Rollback { .. } => {
                let _ = self
                    .store
                    .set_release_state(d.rec.id, ReleaseState::Failed, Some(why), now_millis())
                    .await;
            }
            Purpose::Restore => {}
        }
    }
}

/// Tells whoever waits for the deployment, once.
fn tell(what: Reached, reached: &mut Option<oneshot::Sender<Reached>>) {
    if let Some(tx) = reached.take() {
        let _ = tx.send(what);
    }
}

fn crash(c: supervisor::Crash) -> Crash {
    Crash {
        status: c.status,
        output_tail: c.output_tail,
    }
}
