//! Canary deployments, driven by the engine's `CanaryMachine`: the new release serves a share of
//! the users next to the live one; every 250 ms the router's measurements of both (since the
//! step began) go to the machine; its commands set the router's share, record steps, promote
//! the canary to everyone, or roll back. `promote`, `abort`, `pause`, `resume` and alarms reach
//! the driver through a channel. The environment's lock is held until the canary ends.

use super::{DeployError, DeployManager, Env, Result};
use crate::dataplane::RouterLink;
use crate::router::{Backend, CanaryRoute, RouteTable, Users};
use crate::targets::{ReleaseContext, Target};
use gantry_engine::canary::{CanaryAction, CanaryMachine, Command, Event, State, Window};
use gantry_engine::ports::{CanaryProgress, ReleaseRecord, now_millis};
use gantry_engine::release::ReleaseState;
use gantry_model::{CanarySpec, EnvironmentSpec, UserKey};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(super) enum Msg {
    Action(CanaryAction, String),
    Alarm(String),
}

/// A canary taken over: where its machine was (kept with the release in the store), and from
/// whom. `from: None` is this server started again, its data plane having served the canary's
/// share all along; `Some(server)` is a driver that died, whose router is gone with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub progress: CanaryProgress,
    pub from: Option<String>,
}

impl DeployManager {
    /// Keeps where the canary is, for whoever takes it over (not fatal: a canary whose
    /// progress was not kept is interrupted if its driver stops, never promoted).
    async fn keep_progress(&self, rec: &ReleaseRecord, p: CanaryProgress) {
        if let Err(e) = self.store.set_canary_progress(rec.id, Some(p)).await {
            tracing::warn!(release = rec.number, error = %format!("{e:#}"), "keeping the canary's progress");
        }
    }
}

/// Measurements of one side, for status and the API.
#[derive(Debug, Clone, Default)]
pub struct WindowView {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl From<Window> for WindowView {
    fn from(w: Window) -> Self {
        Self {
            requests: w.requests,
            errors: w.errors,
            error_rate: w.error_rate(),
            p50_ms: w.p50_ms,
            p90_ms: w.p90_ms,
            p99_ms: w.p99_ms,
        }
    }
}

/// A running canary, as `gantry status` shows it.
#[derive(Debug, Clone)]
pub struct CanaryView {
    pub release: i64,
    pub state: String,
    /// The canary's share the router serves now, in percent.
    pub percent: u32,
    pub step: Option<usize>,
    pub steps: usize,
    /// Since the current step began.
    pub canary: WindowView,
    pub stable: WindowView,
    /// What analysis says of those numbers now.
    pub analysis: String,
}

/// A verdict of the canary's analysis, in words.
fn verdict_text(v: gantry_engine::canary::Verdict) -> String {
    use gantry_engine::canary::Verdict;
    match v {
        Verdict::Pass => "within its limits".into(),
        Verdict::Fail(why) => why,
        Verdict::Inconclusive(why) => format!("not enough to judge yet: {why}"),
    }
}

pub(crate) struct CanaryHandle {
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub view: Arc<Mutex<CanaryView>>,
    /// Resolves when the canary has ended.
    pub(super) done: Option<oneshot::Receiver<()>>,
}

/// Asks a running canary to abort; resolves when it has ended. `None`: no canary runs.
pub(crate) fn abort_running(env: &Env, reason: &str) -> Option<oneshot::Receiver<()>> {
    let mut slot = env.canary.lock().expect("canary");
    let handle = slot.as_mut()?;
    let _ = handle
        .tx
        .send(Msg::Action(CanaryAction::Abort, reason.to_string()));
    handle.done.take()
}

fn users(spec: &CanarySpec) -> Users {
    match &spec.users {
        None => Users::default(),
        Some(u) => Users {
            header: match &u.key {
                UserKey::Header(h) => Some(h.to_ascii_lowercase()),
                UserKey::Cookie(_) => None,
            },
            cookie: match &u.key {
                UserKey::Cookie(c) => Some(c.clone()),
                UserKey::Header(_) => None,
            },
            allow: u.allow.clone(),
        },
    }
}

fn step_of(state: &State) -> Option<usize> {
    match state {
        State::Applying { step, .. }
        | State::Observing { step, .. }
        | State::WaitingApproval { step, .. } => Some(*step),
        State::Paused { resume_to, .. } => step_of(resume_to),
        _ => None,
    }
}

/// How a canary's traffic is split, as the deployment driver hands it over.
pub(super) enum Split {
    /// gantry's router splits users (sticky, named users, the forcing header) and measures
    /// both sides; the canary listens at `addr`.
    Router { addr: SocketAddr },
    /// The target splits calls itself (a weighted alias) between the canary and the live
    /// release; gantry measures nothing, so alarms and approvals judge it.
    Target {
        canary: Box<ReleaseContext>,
        stable: Box<ReleaseContext>,
    },
}

/// The two sides of a running canary and what moves traffic between them.
enum Sides {
    Router {
        router: Arc<RouterLink>,
        stable: Arc<Backend>,
        fallback: Option<Arc<Backend>>,
        canary: Arc<Backend>,
        users: Users,
    },
    Target {
        target: Arc<dyn Target>,
        canary: Box<ReleaseContext>,
        stable: Box<ReleaseContext>,
        /// The share last applied: the same share again costs no call to the target (each is
        /// an API call for an alias). It starts at 0: the canary was brought up without users.
        applied: Mutex<Option<u32>>,
    },
}

impl Sides {
    /// Whether the split serves the canary `percent` of the users now (a target splitting
    /// calls itself keeps its weights where it runs).
    fn serves(&self, percent: u32) -> bool {
        match self {
            Sides::Router { router, canary, .. } => {
                router.table().canary.as_ref().is_some_and(|c| {
                    c.backend.release == canary.release
                        && c.backend.addr == canary.addr
                        && c.share == percent * 100
                })
            }
            Sides::Target { .. } => true,
        }
    }

    /// `percent` of the users (or calls) to the canary.
    async fn set(&self, percent: u32) -> anyhow::Result<()> {
        match self {
            Sides::Router {
                router,
                stable,
                canary,
                users,
                ..
            } => {
                router
                    .set(RouteTable {
                        stable: Some(stable.clone()),
                        canary: Some(CanaryRoute {
                            backend: canary.clone(),
                            share: percent * 100,
                            users: users.clone(),
                        }),
                        fallback: Some(stable.clone()),
                    })
                    .await
            }
            Sides::Target {
                target,
                canary,
                stable,
                applied,
            } => {
                if *applied.lock().expect("applied") == Some(percent) {
                    return Ok(());
                }
                target.set_share(canary, stable, percent).await?;
                *applied.lock().expect("applied") = Some(percent);
                Ok(())
            }
        }
    }

    /// Everyone on the canary (stable stays the router's fallback).
    async fn promote(&self) -> anyhow::Result<()> {
        match self {
            Sides::Router {
                router,
                stable,
                canary,
                ..
            } => {
                router
                    .set(RouteTable::single(canary.clone(), Some(stable.clone())))
                    .await
            }
            Sides::Target { .. } => self.set(100).await,
        }
    }

    /// Everyone back on stable.
    async fn abort(&self) -> anyhow::Result<()> {
        match self {
            Sides::Router {
                router,
                stable,
                fallback,
                ..
            } => {
                router
                    .set(RouteTable {
                        stable: Some(stable.clone()),
                        canary: None,
                        fallback: fallback.clone(),
                    })
                    .await
            }
            Sides::Target { .. } => self.set(0).await,
        }
    }

    /// Both sides' measurements since `since`: the router's (taken in the data plane), or
    /// none.
    async fn windows(&self, since: i64) -> (Window, Window) {
        match self {
            Sides::Router {
                router,
                stable,
                canary,
                ..
            } => {
                let all = router.measure(since).await.unwrap_or_default();
                let side = |b: &Backend| {
                    all.iter()
                        .find(|m| m.release == b.release && m.addr == b.addr)
                        .map(|m| m.window)
                        .unwrap_or_default()
                };
                (side(canary), side(stable))
            }
            Sides::Target { .. } => (Window::default(), Window::default()),
        }
    }
}

impl DeployManager {
    /// Runs the canary of `rec` (healthy at `addr`) next to the live release: the deployment
    /// machine's canary phase. `Ok(message)` when the canary was promoted to everyone (the
    /// deployment then bakes it), `Err(reason)` when it was aborted and stable serves everyone
    /// again. While it runs, `gantry promote/abort/pause/resume` and alarms reach it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_canary(
        &self,
        env: &Arc<Env>,
        target: &Arc<dyn Target>,
        rec: &ReleaseRecord,
        split: Split,
        spec: &EnvironmentSpec,
        (canary, resume): (CanarySpec, Option<Resume>),
        started: impl FnOnce() + Send,
    ) -> std::result::Result<String, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let view = Arc::new(Mutex::new(CanaryView {
            release: rec.number,
            state: "starting".into(),
            percent: 0,
            step: Some(0),
            steps: canary.steps.len(),
            canary: WindowView::default(),
            stable: WindowView::default(),
            analysis: "not started".into(),
        }));
        *env.canary.lock().expect("canary") = Some(CanaryHandle {
            tx,
            view: view.clone(),
            done: Some(done_rx),
        });
        let outcome = self
            .drive_canary(
                env,
                target,
                rec,
                split,
                spec,
                (canary, resume),
                rx,
                view,
                started,
            )
            .await;
        *env.canary.lock().expect("canary") = None;
        let _ = self.store.set_canary_progress(rec.id, None).await;
        let _ = done_tx.send(());
        match outcome {
            Ok(o) => o,
            Err(e) => Err(format!("the canary stopped: {e}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn drive_canary(
        &self,
        env: &Arc<Env>,
        target: &Arc<dyn Target>,
        rec: &ReleaseRecord,
        split: Split,
        spec: &EnvironmentSpec,
        (canary, resume): (CanarySpec, Option<Resume>),
        mut rx: mpsc::UnboundedReceiver<Msg>,
        view: Arc<Mutex<CanaryView>>,
        started: impl FnOnce() + Send,
    ) -> Result<std::result::Result<String, String>> {
        let sides = match split {
            Split::Router { addr } => {
                let router = env.router().ok_or_else(|| {
                    DeployError::Invalid("a canary needs the environment's router".into())
                })?;
                let table = router.table();
                let stable = table.stable.clone().ok_or_else(|| {
                    DeployError::Conflict("no stable release to run a canary against".into())
                })?;
                let fallback = table.fallback.clone();
                let canary_backend = Backend::new(rec.number, addr);
                env.backends
                    .lock()
                    .expect("backends")
                    .insert(rec.source, canary_backend.clone());
                Sides::Router {
                    router,
                    stable,
                    fallback,
                    canary: canary_backend,
                    users: users(&canary),
                }
            }
            Split::Target { canary, stable } => Sides::Target {
                target: target.clone(),
                canary,
                stable,
                applied: Mutex::new(Some(0)),
            },
        };
        let steps = canary.steps.len();
        let analysis = canary.analysis.clone();
        let (mut machine, first) = match resume {
            // Taken over: after a restart of this server its router served the step all along,
            // and the step goes on as it was measured; a router gone with its server serves the
            // share again here, and the step is observed anew from now.
            Some(Resume { progress: p, from }) => {
                let here = from.is_none() && sides.serves(p.percent);
                let since = if here {
                    p.since
                } else {
                    if let Err(e) = sides.set(p.percent).await {
                        return Ok(Err(format!("the canary could not be taken over: {e:#}")));
                    }
                    now_millis()
                };
                let text = match &from {
                    None if here => format!(
                        "taken over after gantry restarted: step {} of {steps} at {}%, observed since the router began serving it",
                        p.step + 1,
                        p.percent
                    ),
                    _ => format!(
                        "taken over from {}: step {} of {steps} at {}% through this server's router, observed anew from now (the numbers of the router that served it went with it)",
                        from.as_deref()
                            .unwrap_or("a router that no longer serves it"),
                        p.step + 1,
                        p.percent
                    ),
                };
                let _ = self
                    .store
                    .add_release_event(rec.id, "canary", &text, now_millis())
                    .await;
                CanaryMachine::resume(canary, p.step, p.percent, since)
            }
            None => {
                self.store
                    .set_release_state(rec.id, ReleaseState::Canary, None, now_millis())
                    .await?;
                // From the start, named users and the forcing header reach the canary (0% of
                // the rest).
                if let Err(e) = sides.set(0).await {
                    return Ok(Err(format!("the canary could not start: {e:#}")));
                }
                let mut m = CanaryMachine::new(canary);
                let first = m.on(Event::Start { now: now_millis() });
                (m, first)
            }
        };
        started();
        let mut queue: VecDeque<Command> = first.into();
        let mut kept: Option<CanaryProgress> = None;
        loop {
            while let Some(cmd) = queue.pop_front() {
                match cmd {
                    Command::SetWeight { percent } => match sides.set(percent.min(100)).await {
                        // The split serves the new share from its next request on.
                        Ok(()) => queue.extend(machine.on(Event::Applied {
                            percent,
                            now: now_millis(),
                        })),
                        Err(e) => queue.extend(machine.on(Event::Abort {
                            reason: format!("setting the canary's share to {percent}%: {e:#}"),
                            now: now_millis(),
                        })),
                    },
                    Command::Record { message } => {
                        let _ = self
                            .store
                            .add_release_event(rec.id, "canary", &message, now_millis())
                            .await;
                    }
                    Command::Finish => {
                        // Everyone on the canary: it becomes the live release, stable is the
                        // fallback for rollback.
                        if let Err(e) = sides.promote().await {
                            queue.extend(machine.on(Event::Abort {
                                reason: format!("moving everyone to the canary: {e:#}"),
                                now: now_millis(),
                            }));
                            continue;
                        }
                        self.store
                            .switch_live(rec.id, ReleaseState::Superseded, None, now_millis())
                            .await?;
                        self.after_switch(env, target, spec).await;
                        return Ok(Ok(format!(
                            "release {} of {} passed its {steps} canary steps and is live",
                            rec.number, rec.environment
                        )));
                    }
                    Command::RollBack { reason } => {
                        if let Err(e) = sides.abort().await {
                            tracing::warn!(error = %format!("{e:#}"), "putting everyone back on stable");
                        }
                        super::drain(env, rec.source).await;
                        target.stop(rec.source).await;
                        env.backends.lock().expect("backends").remove(&rec.source);
                        self.store
                            .set_release_state(
                                rec.id,
                                ReleaseState::Failed,
                                Some(&reason),
                                now_millis(),
                            )
                            .await?;
                        self.retire(env, rec).await;
                        self.failed(rec);
                        return Ok(Err(format!(
                            "release {} was aborted as a canary; stable kept serving: {reason}",
                            rec.number
                        )));
                    }
                }
            }
            if let State::Observing {
                step,
                percent,
                since,
            } = *machine.state()
            {
                let p = CanaryProgress {
                    step,
                    percent,
                    since,
                };
                if kept != Some(p) {
                    self.keep_progress(rec, p).await;
                    kept = Some(p);
                }
            }
            {
                let mut v = view.lock().expect("view");
                v.state = machine.state().name().to_string();
                v.percent = machine.serving();
                v.step = step_of(machine.state());
            }
            tokio::select! {
                msg = rx.recv() => {
                    let now = now_millis();
                    let event = match msg {
                        Some(Msg::Action(CanaryAction::Promote { full }, by)) => {
                            let _ = self.store.add_release_event(rec.id, "canary", &format!("promote{} asked by {by}", if full { " --full" } else { "" }), now).await;
                            Event::Promote { full, now }
                        }
                        Some(Msg::Action(CanaryAction::Abort, by)) => Event::Abort { reason: format!("canary aborted: {by}"), now },
                        Some(Msg::Action(CanaryAction::Pause, by)) => {
                            let _ = self.store.add_release_event(rec.id, "canary", &format!("pause asked by {by}"), now).await;
                            Event::Pause { now }
                        }
                        Some(Msg::Action(CanaryAction::Resume, by)) => {
                            let _ = self.store.add_release_event(rec.id, "canary", &format!("resume asked by {by}"), now).await;
                            Event::Resume { now }
                        }
                        Some(Msg::Alarm(name)) => Event::Abort { reason: format!("canary aborted: alarm {name} is firing"), now },
                        None => continue,
                    };
                    queue.extend(machine.on(event));
                }
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    // One read of the data plane's numbers a tick, for the machine (which
                    // judges them only while observing, when both windows start at the step)
                    // and for the view.
                    let now = now_millis();
                    let since = machine
                        .window_start()
                        .or(machine.serving_since())
                        .unwrap_or(now);
                    let (canary, stable) = sides.windows(since).await;
                    {
                        let mut v = view.lock().expect("view");
                        v.canary = canary.into();
                        v.stable = stable.into();
                        v.analysis = verdict_text(gantry_engine::canary::analyze(
                            &analysis, &canary, &stable,
                        ));
                    }
                    queue.extend(machine.on(Event::Tick { now, canary, stable }));
                }
            }
        }
    }

    /// What every environment's router measured per release: (project, environment, traffic).
    pub async fn router_traffic(&self) -> Vec<(String, String, super::ReleaseTraffic)> {
        let envs: Vec<Arc<Env>> = self.envs.lock().expect("envs").values().cloned().collect();
        let mut out = Vec::new();
        for env in envs {
            for t in env.traffic().await {
                out.push((env.project.clone(), env.name.clone(), t));
            }
        }
        out
    }

    pub(super) fn canary_view(&self, env: &Env) -> Option<CanaryView> {
        env.canary
            .lock()
            .expect("canary")
            .as_ref()
            .map(|h| h.view.lock().expect("view").clone())
    }
}
