//! The deployment machine: one release brought up and made live — a deploy, a rollback to a
//! kept release, or the live release started again after gantry restarted — and then watched
//! through its bake. Events in (the artifact unpacked, the target started, a health answer, the
//! router serving the new table, the store's answer, a tick of the bake, an alarm, a cancel),
//! commands out (unpack, start, probe, move traffic, record, fail, roll back, finish). No clock
//! and no I/O: times come in with events; the deploy manager carries the commands out.
//!
//! The order it keeps, whatever the target:
//! - nothing reaches users before a health check passed (or, for a target that moves traffic
//!   itself, before its own start succeeded);
//! - the router is switched first and the store records the switch after; when the store
//!   refuses, the router is switched back, so the two never disagree for long;
//! - a failure before the switch never touches traffic, except that a target moving traffic
//!   itself is told to put the previous release back;
//! - a canary is a phase of its own, decided by [`crate::canary::CanaryMachine`]; a promoted
//!   canary bakes like any switch;
//! - during the bake, [`CRASHES_TO_ROLL_BACK`] crashes or a firing alarm roll back by
//!   themselves; a release that stopped running (the environment moved on) ends the watch.

use crate::release::ReleaseState;
use gantry_model::Routing;

/// Crashes while starting after which waiting for health is given up.
pub const CRASHES_TO_GIVE_UP: u32 = 3;
/// Crashes during the bake that roll a release back.
pub const CRASHES_TO_ROLL_BACK: u32 = 2;
/// Distinct health observations kept for the record (repeats are counted, not kept).
const SEEN_KEPT: usize = 10;

/// What this deployment is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A new release: once healthy, everyone is switched to it (or it becomes a canary) and the
    /// live release becomes the fallback; then it bakes.
    Deploy { canary: bool },
    /// Back to a kept release; the release live now becomes `previous_becomes`.
    Rollback { previous_becomes: ReleaseState },
    /// gantry restarted: the release the store says is live serves again; nothing is recorded.
    Restore,
}

/// A deployment as the machine needs to know it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The release's number, for messages.
    pub release: i64,
    pub purpose: Purpose,
    pub routing: Routing,
    /// Unpack the artifact before starting (a new deploy, or a kept directory to make again).
    pub unpack: bool,
    /// The target already runs this release (a kept fallback): one check, then a restart only
    /// if that check fails.
    pub running: bool,
    /// The health check in words, for messages (`http /healthz`).
    pub check: String,
    pub health_timeout_ms: i64,
    pub health_interval_ms: i64,
    pub bake_ms: i64,
}

/// How a release that stopped by itself last ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Crash {
    pub status: String,
    pub output_tail: Vec<String>,
}

/// How an automatic rollback went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolledBack {
    Done,
    /// The release was no longer live: nothing to do.
    MovedOn,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start {
        now: i64,
    },
    Unpacked {
        now: i64,
        error: Option<String>,
    },
    /// The target's start (or, for a target moving traffic itself in a rollback, its
    /// `roll_back`) returned.
    Started {
        now: i64,
        error: Option<String>,
    },
    /// One health check's answer; `crashes` counts the release's crashes since it started.
    Health {
        now: i64,
        ok: bool,
        text: String,
        crashes: u32,
        last_crash: Option<Crash>,
    },
    /// The router serves the table asked for.
    TrafficSet {
        now: i64,
    },
    /// The store's answer to a record of the switch.
    Recorded {
        now: i64,
        error: Option<String>,
    },
    /// The canary phase ended: promoted to everyone (`Ok`, with its message) or aborted.
    CanaryEnded {
        now: i64,
        outcome: Result<String, String>,
    },
    /// A tick of the bake: crashes since the switch, or `None` when nothing runs any more.
    Tick {
        now: i64,
        crashes: Option<u32>,
        last_crash: Option<Crash>,
    },
    Alarm {
        now: i64,
        name: String,
    },
    /// The automatic rollback asked for by [`Command::RollBack`] ended.
    RolledBack {
        now: i64,
        outcome: RolledBack,
    },
}

/// How users should be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Everyone to the new release; the one serving until now becomes the fallback.
    Switch,
    /// Everyone back to the release that served before [`Traffic::Switch`].
    Back,
    /// Everyone to the new release, with no fallback (a restore, or after an automatic
    /// rollback: the bad release must not be the fallback).
    Only,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Unpack,
    /// Start the release (for a target moving traffic itself in a rollback: its `roll_back`).
    StartTarget,
    /// Run one health check at `at` (or at once if that has passed).
    Probe {
        at: i64,
    },
    /// Keep what the health checks saw, as the release's `health` event.
    RecordHealth {
        seen: String,
    },
    SetTraffic(Traffic),
    /// Record the switch in the store: the release is live, the previous one `previous_becomes`.
    RecordSwitch {
        previous_becomes: ReleaseState,
    },
    /// Run the canary phase (the canary machine), then answer with [`Event::CanaryEnded`].
    RunCanary,
    /// Stop the release that served before (it failed, and is not kept as the fallback).
    StopPrevious,
    /// After a switch: retire what `keep` no longer covers, stop what is neither live nor the
    /// fallback, schedule the previous release's stop if configured.
    AfterSwitch,
    /// The release is live: whoever waits for the switch may be answered.
    Live,
    /// The release did not come up. The driver stops it, records `reason` (adding the
    /// release's last output when `with_output`), and for a target moving traffic itself
    /// (`restore_previous`) puts the previous release back.
    Fail {
        reason: String,
        with_output: bool,
        restore_previous: bool,
    },
    /// The bake failed: roll back automatically with `why`.
    RollBack {
        why: String,
    },
    /// Nothing more to do. `failure`: why the release failed (after it was live: in its bake).
    Finish {
        failure: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    Unpacking,
    Starting,
    Probing {
        deadline: i64,
        checked_running: bool,
    },
    Switching,
    Recording,
    Canary,
    Baking {
        until: i64,
    },
    RollingBack {
        why: String,
    },
    Done,
}

pub struct DeploymentMachine {
    plan: Plan,
    phase: Phase,
    /// Distinct health observations, with how often each came in a row.
    seen: Vec<(String, u32)>,
}

impl DeploymentMachine {
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            phase: Phase::Idle,
            seen: Vec::new(),
        }
    }

    /// The phase's name, for status and logs.
    pub fn phase(&self) -> &'static str {
        match self.phase {
            Phase::Idle => "idle",
            Phase::Unpacking => "unpacking",
            Phase::Starting => "starting",
            Phase::Probing { .. } => "probing",
            Phase::Switching => "switching",
            Phase::Recording => "recording",
            Phase::Canary => "canary",
            Phase::Baking { .. } => "baking",
            Phase::RollingBack { .. } => "rolling back",
            Phase::Done => "done",
        }
    }

    /// What the health checks saw, repeats collapsed (`… (x3)`), oldest first.
    pub fn seen(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|(t, n)| {
                if *n > 1 {
                    format!("{t} (x{n})")
                } else {
                    t.clone()
                }
            })
            .collect()
    }

    fn note(&mut self, text: String) {
        match self.seen.last_mut() {
            Some((last, n)) if *last == text => *n += 1,
            _ => {
                self.seen.push((text, 1));
                if self.seen.len() > SEEN_KEPT {
                    self.seen.remove(0);
                }
            }
        }
    }

    pub fn on(&mut self, event: Event) -> Vec<Command> {
        use Event as E;
        match (std::mem::replace(&mut self.phase, Phase::Done), event) {
            (Phase::Idle, E::Start { now }) => {
                if self.plan.purpose == Purpose::Restore && self.plan.routing == Routing::Itself {
                    // Nothing of gantry's runs for such a target: nothing to start again.
                    self.phase = Phase::Done;
                    vec![Command::Live, Command::Finish { failure: None }]
                } else if self.plan.running && self.plan.routing == Routing::Router {
                    self.phase = Phase::Probing {
                        deadline: now,
                        checked_running: true,
                    };
                    vec![Command::Probe { at: now }]
                } else if self.plan.unpack {
                    self.phase = Phase::Unpacking;
                    vec![Command::Unpack]
                } else {
                    self.phase = Phase::Starting;
                    vec![Command::StartTarget]
                }
            }
            (Phase::Unpacking, E::Unpacked { error: None, .. }) => {
                self.phase = Phase::Starting;
                vec![Command::StartTarget]
            }
            (Phase::Unpacking, E::Unpacked { error: Some(e), .. }) => {
                self.fail(format!("the artifact could not be used: {e}"), false)
            }
            (Phase::Starting, E::Started { error: Some(e), .. }) => self.fail(e, false),
            (Phase::Starting, E::Started { now, error: None }) => {
                if self.plan.routing == Routing::Itself
                    && matches!(self.plan.purpose, Purpose::Rollback { .. })
                {
                    // The target moved users back itself: nothing to check, record it.
                    self.phase = Phase::Recording;
                    return self.record_switch();
                }
                self.phase = Phase::Probing {
                    deadline: now + self.plan.health_timeout_ms,
                    checked_running: false,
                };
                vec![Command::Probe { at: now }]
            }
            (
                Phase::Probing {
                    deadline,
                    checked_running,
                },
                E::Health {
                    now,
                    ok,
                    text,
                    crashes,
                    last_crash,
                },
            ) => {
                if checked_running {
                    // The kept release answered (or not) once: switch, or start it again.
                    if ok {
                        return self.healthy();
                    }
                    self.phase = Phase::Starting;
                    return vec![Command::StartTarget];
                }
                self.note(text);
                if ok {
                    let mut out = vec![self.record_health()];
                    out.extend(self.healthy());
                    return out;
                }
                if crashes >= CRASHES_TO_GIVE_UP {
                    let crash = last_crash.unwrap_or_default();
                    self.note(format!(
                        "the release crashed {crashes} times while starting (last: {}); its last output:\n  {}",
                        crash.status,
                        last_lines(&crash.output_tail, 8)
                    ));
                    return self.unhealthy();
                }
                if now + self.plan.health_interval_ms > deadline {
                    self.note(format!(
                        "no passing check within {}",
                        gantry_model::duration::format_duration(std::time::Duration::from_millis(
                            self.plan.health_timeout_ms.max(0) as u64
                        ))
                    ));
                    return self.unhealthy();
                }
                self.phase = Phase::Probing {
                    deadline,
                    checked_running,
                };
                vec![Command::Probe {
                    at: now + self.plan.health_interval_ms,
                }]
            }
            (Phase::Switching, E::TrafficSet { .. }) => {
                if self.plan.purpose == Purpose::Restore {
                    self.phase = Phase::Done;
                    return vec![Command::Live, Command::Finish { failure: None }];
                }
                self.phase = Phase::Recording;
                self.record_switch()
            }
            (Phase::Recording, E::Recorded { error: Some(e), .. }) => {
                let mut out = Vec::new();
                if self.plan.routing == Routing::Router {
                    out.push(Command::SetTraffic(Traffic::Back));
                }
                out.extend(self.fail(format!("the switch could not be recorded: {e}"), false));
                out
            }
            (Phase::Recording, E::Recorded { now, error: None }) => {
                let mut out = Vec::new();
                if let Purpose::Rollback {
                    previous_becomes: ReleaseState::Failed,
                } = self.plan.purpose
                    && self.plan.routing == Routing::Router
                {
                    // Rolled back from a bad release: it must not be the fallback.
                    out.push(Command::SetTraffic(Traffic::Only));
                    out.push(Command::StopPrevious);
                }
                out.push(Command::AfterSwitch);
                out.push(Command::Live);
                out.extend(self.bake(now));
                out
            }
            (Phase::Canary, E::CanaryEnded { now, outcome }) => match outcome {
                Ok(_) => {
                    let mut out = vec![Command::Live];
                    out.extend(self.bake(now));
                    out
                }
                Err(reason) => {
                    self.phase = Phase::Done;
                    vec![Command::Finish {
                        failure: Some(reason),
                    }]
                }
            },
            (
                Phase::Baking { until },
                E::Tick {
                    now,
                    crashes,
                    last_crash,
                },
            ) => {
                let Some(crashes) = crashes else {
                    // Stopped: the environment moved on, nothing left to watch.
                    self.phase = Phase::Done;
                    return vec![Command::Finish { failure: None }];
                };
                if crashes >= CRASHES_TO_ROLL_BACK {
                    let crash = last_crash.unwrap_or_default();
                    let why = format!(
                        "release {} crashed {crashes} times during its bake (last: {}); its last output:\n  {}",
                        self.plan.release,
                        crash.status,
                        last_lines(&crash.output_tail, 8)
                    );
                    return self.roll_back(why);
                }
                if now >= until {
                    self.phase = Phase::Done;
                    return vec![Command::Finish { failure: None }];
                }
                self.phase = Phase::Baking { until };
                Vec::new()
            }
            (Phase::Baking { .. }, E::Alarm { name, .. }) => self.roll_back(format!(
                "alarm {name} fired during the bake of release {}",
                self.plan.release
            )),
            (Phase::RollingBack { why }, E::RolledBack { outcome, .. }) => {
                self.phase = Phase::Done;
                let failure = match outcome {
                    RolledBack::Done => Some(why),
                    RolledBack::MovedOn => None,
                    RolledBack::Failed(e) => Some(format!("{why}; rolling back failed: {e}")),
                };
                vec![Command::Finish { failure }]
            }
            // Anything else is not for this phase (a late answer, an alarm outside the bake):
            // ignored, and the phase stays.
            (phase, _) => {
                self.phase = phase;
                Vec::new()
            }
        }
    }

    fn record_health(&self) -> Command {
        Command::RecordHealth {
            seen: self.seen().join("; "),
        }
    }

    /// Healthy: move traffic as the purpose says.
    fn healthy(&mut self) -> Vec<Command> {
        match (&self.plan.purpose, self.plan.routing) {
            // Either way of routing: the router splits users, or the target (a weighted alias).
            (Purpose::Deploy { canary: true }, _) => {
                self.phase = Phase::Canary;
                vec![Command::RunCanary]
            }
            (Purpose::Restore, Routing::Router) => {
                self.phase = Phase::Switching;
                vec![Command::SetTraffic(Traffic::Only)]
            }
            (_, Routing::Router) => {
                self.phase = Phase::Switching;
                vec![Command::SetTraffic(Traffic::Switch)]
            }
            (_, Routing::Itself) => {
                self.phase = Phase::Recording;
                self.record_switch()
            }
        }
    }

    fn record_switch(&self) -> Vec<Command> {
        let previous_becomes = match &self.plan.purpose {
            Purpose::Rollback { previous_becomes } => *previous_becomes,
            _ => ReleaseState::Superseded,
        };
        vec![Command::RecordSwitch { previous_becomes }]
    }

    fn unhealthy(&mut self) -> Vec<Command> {
        let record = self.record_health();
        let reason = format!(
            "release {} failed its health check ({}): {}",
            self.plan.release,
            self.plan.check,
            self.seen().join("; ")
        );
        let mut out = vec![record];
        out.extend(self.fail(reason, true));
        out
    }

    fn fail(&mut self, reason: String, with_output: bool) -> Vec<Command> {
        self.phase = Phase::Done;
        vec![
            Command::Fail {
                reason: reason.clone(),
                with_output,
                restore_previous: self.plan.routing == Routing::Itself
                    && matches!(self.plan.purpose, Purpose::Deploy { .. }),
            },
            Command::Finish {
                failure: Some(reason),
            },
        ]
    }

    fn bake(&mut self, now: i64) -> Vec<Command> {
        let bakes = matches!(self.plan.purpose, Purpose::Deploy { .. }) && self.plan.bake_ms > 0;
        if bakes {
            self.phase = Phase::Baking {
                until: now + self.plan.bake_ms,
            };
            Vec::new()
        } else {
            self.phase = Phase::Done;
            vec![Command::Finish { failure: None }]
        }
    }

    fn roll_back(&mut self, why: String) -> Vec<Command> {
        self.phase = Phase::RollingBack { why: why.clone() };
        vec![Command::RollBack { why }]
    }
}

/// The last `n` lines, indented for a message; `(none)` when there are none.
pub fn last_lines(lines: &[String], n: usize) -> String {
    if lines.is_empty() {
        return "(none)".into();
    }
    lines[lines.len().saturating_sub(n)..].join("\n  ")
}

#[cfg(test)]
mod tests;
