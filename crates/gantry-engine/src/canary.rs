//! The canary state machine: events in (the router serves a weight, a measurement tick, promote,
//! abort, pause, resume), commands out (set a weight, record a promotion, finish, roll back). No
//! clock and no I/O: times come in with events, and the deploy manager carries out the commands.
//!
//! A canary walks its steps in order. A weight step asks the router for the weight and waits
//! until the router says it serves it — only then is the promotion recorded — then observes for
//! the step's pause; at the end of the pause analysis decides: pass (next step), fail (abort),
//! or inconclusive (too few requests: wait, and fail at the analysis deadline). A failure with
//! enough requests aborts at once, without waiting for the pause to end. An approval step waits
//! for `promote`. After the last step everything goes to the canary. Abort always wins, also
//! while a promotion is pending; a second abort changes nothing.

use gantry_model::{AnalysisSpec, CanarySpec, CanaryStep};

pub type Millis = i64;

/// What a user can ask of a running canary (`gantry promote`, `abort`, `pause`, `resume`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryAction {
    /// The next step, or (`full`) every user at once.
    Promote {
        full: bool,
    },
    Abort,
    Pause,
    Resume,
}

/// What one side (canary or stable) did over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub requests: u64,
    /// Answers with a 5xx status, and requests the release did not answer.
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Window {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Fail(String),
    /// Not enough to decide (the reason says what is missing).
    Inconclusive(String),
}

fn pct(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

/// Judges the canary's window (against stable's, with `compare_to_stable`).
pub fn analyze(spec: &AnalysisSpec, canary: &Window, stable: &Window) -> Verdict {
    // `min_requests: 0` is the user's explicit "no minimum".
    if canary.requests < spec.min_requests {
        return Verdict::Inconclusive(format!(
            "{} canary requests, fewer than min_requests {}",
            canary.requests, spec.min_requests
        ));
    }
    // Compare only with a stable side that has enough requests to mean something.
    let baseline =
        (spec.compare_to_stable && stable.requests >= spec.min_requests.max(1)).then_some(stable);
    if let Some(max_ppm) = spec.max_error_rate_ppm {
        let max = f64::from(max_ppm) / 1_000_000.0;
        let allowed = max + baseline.map_or(0.0, |s| s.error_rate());
        let rate = canary.error_rate();
        if rate > allowed {
            let against = match baseline {
                Some(s) => format!(
                    "stable's {} plus max_error_rate {}",
                    pct(s.error_rate()),
                    pct(max)
                ),
                None => format!("max_error_rate {}", pct(max)),
            };
            return Verdict::Fail(format!(
                "canary analysis failed: 5xx rate {} ({} of {} requests) is over {against}",
                pct(rate),
                canary.errors,
                canary.requests
            ));
        }
    }
    if let (Some(max), Some(p99)) = (spec.max_p99_ms, canary.p99_ms) {
        let allowed = baseline
            .and_then(|s| s.p99_ms)
            .map_or(max as f64, |s| (max as f64).max(s));
        if p99 > allowed {
            let against = match baseline.and_then(|s| s.p99_ms) {
                Some(s) if s > max as f64 => format!("stable's p99 {s:.0} ms"),
                _ => format!("max_p99_ms {max}"),
            };
            return Verdict::Fail(format!(
                "canary analysis failed: p99 latency {p99:.0} ms ({} requests) is over {against}",
                canary.requests
            ));
        }
    }
    Verdict::Pass
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Asked the router for step `step`'s weight; waiting until it serves it.
    Applying {
        step: usize,
        percent: u32,
    },
    /// Serving `percent` since `since`.
    Observing {
        step: usize,
        percent: u32,
        since: Millis,
    },
    WaitingApproval {
        step: usize,
        percent: u32,
    },
    /// Paused by the user; `left` of the pause remains when resumed.
    Paused {
        resume_to: Box<State>,
        left: Millis,
    },
    /// Asked the router for 100%; waiting until it serves it.
    Promoting,
    Promoted,
    Aborted {
        reason: String,
    },
}

impl State {
    pub fn is_finished(&self) -> bool {
        matches!(self, State::Promoted | State::Aborted { .. })
    }

    /// A short word for `gantry status`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Applying { .. } => "applying",
            State::Observing { .. } => "observing",
            State::WaitingApproval { .. } => "waiting-approval",
            State::Paused { .. } => "paused",
            State::Promoting => "promoting",
            State::Promoted => "promoted",
            State::Aborted { .. } => "aborted",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start {
        now: Millis,
    },
    /// The router serves `percent` to the canary from now on.
    Applied {
        percent: u32,
        now: Millis,
    },
    /// Measurements since the current step's weight was applied.
    Tick {
        now: Millis,
        canary: Window,
        stable: Window,
    },
    Promote {
        full: bool,
        now: Millis,
    },
    Abort {
        reason: String,
        now: Millis,
    },
    Pause {
        now: Millis,
    },
    Resume {
        now: Millis,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Ask the router to send `percent` of users to the canary (and answer with `Applied`).
    SetWeight { percent: u32 },
    /// Record what happened (a step served, a verdict, a wait).
    Record { message: String },
    /// Everything goes to the canary: it becomes the live release.
    Finish,
    /// Everything back to stable, the canary stopped, its release failed for `reason`.
    RollBack { reason: String },
}

pub struct CanaryMachine {
    spec: CanarySpec,
    state: State,
    /// The weight the router serves now (what users see), in percent.
    serving: u32,
    /// When the router began serving it.
    serving_since: Option<Millis>,
}

impl CanaryMachine {
    pub fn new(spec: CanarySpec) -> Self {
        Self {
            spec,
            state: State::Applying {
                step: 0,
                percent: 0,
            },
            serving: 0,
            serving_since: None,
        }
    }

    /// A canary taken over after gantry restarted: the router has served step `step`'s
    /// `percent` since `since` all along (its table outlived gantry), so the machine goes on
    /// observing that step — the same window, judged on the router's numbers since `since` —
    /// without asking for a weight again. A step whose weight is not what the router serves
    /// (or that is not a weight step) is entered afresh: the commands returned do that.
    pub fn resume(
        spec: CanarySpec,
        step: usize,
        percent: u32,
        since: Millis,
    ) -> (Self, Vec<Command>) {
        let same = matches!(spec.steps.get(step),
            Some(CanaryStep::Weight { percent: p, .. }) if (*p).min(100) == percent);
        let mut m = Self {
            spec,
            state: State::Observing {
                step,
                percent,
                since,
            },
            serving: percent,
            serving_since: Some(since),
        };
        let mut out = Vec::new();
        if !same {
            m.enter(step, since, &mut out);
        }
        (m, out)
    }

    /// When the router began serving the current share (for showing the step's numbers).
    pub fn serving_since(&self) -> Option<Millis> {
        self.serving_since
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The canary's share the router serves now, in percent.
    pub fn serving(&self) -> u32 {
        self.serving
    }

    /// When the current step's window began (the step's weight was applied).
    pub fn window_start(&self) -> Option<Millis> {
        match &self.state {
            State::Observing { since, .. } => Some(*since),
            _ => None,
        }
    }

    pub fn on(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        if self.state.is_finished() {
            return out; // A second abort, a late Applied, a tick after the end: nothing.
        }
        match event {
            Event::Start { now } => self.enter(0, now, &mut out),
            Event::Applied { percent, now } => match self.state.clone() {
                State::Applying { step, percent: p } if p == percent => {
                    self.serving = percent;
                    self.serving_since = Some(now);
                    self.state = State::Observing {
                        step,
                        percent,
                        since: now,
                    };
                    out.push(Command::Record {
                        message: format!(
                            "step {} of {}: the router sends {percent}% of users to the canary",
                            step + 1,
                            self.spec.steps.len()
                        ),
                    });
                }
                State::Promoting if percent == 100 => {
                    self.serving = 100;
                    self.state = State::Promoted;
                    out.push(Command::Finish);
                }
                _ => {} // Stale: a weight no longer asked for.
            },
            Event::Tick {
                now,
                canary,
                stable,
            } => {
                if let State::Observing {
                    step,
                    percent,
                    since,
                } = self.state
                {
                    self.observe(step, percent, since, now, &canary, &stable, &mut out);
                }
            }
            Event::Promote { full, now } => match self.state.clone() {
                _ if full => self.promote_fully(&mut out),
                State::WaitingApproval { step, .. } | State::Observing { step, .. } => {
                    out.push(Command::Record {
                        message: format!("step {} promoted by hand", step + 1),
                    });
                    self.enter(step + 1, now, &mut out);
                }
                _ => {} // Applying, paused, promoting: nothing to promote yet.
            },
            Event::Abort { reason, .. } => {
                self.state = State::Aborted {
                    reason: reason.clone(),
                };
                self.serving = 0;
                out.push(Command::RollBack { reason });
            }
            Event::Pause { now } => {
                let left = match &self.state {
                    State::Observing { step, since, .. } => {
                        (since + self.pause_of(*step) - now).max(0)
                    }
                    State::Applying { .. } | State::WaitingApproval { .. } => 0,
                    _ => return out,
                };
                self.state = State::Paused {
                    resume_to: Box::new(self.state.clone()),
                    left,
                };
                out.push(Command::Record {
                    message: "paused: the canary keeps its share, analysis waits".into(),
                });
            }
            Event::Resume { now } => {
                if let State::Paused { resume_to, left } = self.state.clone() {
                    self.state = match *resume_to {
                        State::Observing { step, percent, .. } => State::Observing {
                            step,
                            percent,
                            // The pause ends `left` from now.
                            since: now + left - self.pause_of(step),
                        },
                        other => other,
                    };
                    out.push(Command::Record {
                        message: "resumed".into(),
                    });
                }
            }
        }
        out
    }

    fn pause_of(&self, step: usize) -> Millis {
        match self.spec.steps.get(step) {
            Some(CanaryStep::Weight { pause: Some(p), .. }) => p.as_millis() as Millis,
            _ => 0,
        }
    }

    fn enter(&mut self, step: usize, now: Millis, out: &mut Vec<Command>) {
        let _ = now;
        match self.spec.steps.get(step) {
            None => self.promote_fully(out),
            Some(CanaryStep::Approval) => {
                self.state = State::WaitingApproval {
                    step,
                    percent: self.serving,
                };
                out.push(Command::Record {
                    message: format!(
                        "step {} of {}: waiting for approval (gantry promote)",
                        step + 1,
                        self.spec.steps.len()
                    ),
                });
            }
            Some(CanaryStep::Weight { percent, .. }) => {
                let percent = (*percent).min(100);
                self.state = State::Applying { step, percent };
                out.push(Command::SetWeight { percent });
            }
        }
    }

    fn promote_fully(&mut self, out: &mut Vec<Command>) {
        self.state = State::Promoting;
        out.push(Command::SetWeight { percent: 100 });
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        step: usize,
        percent: u32,
        since: Millis,
        now: Millis,
        canary: &Window,
        stable: &Window,
        out: &mut Vec<Command>,
    ) {
        let pause_end = since + self.pause_of(step);
        let verdict = analyze(&self.spec.analysis, canary, stable);
        let abort = |this: &mut Self, reason: String, out: &mut Vec<Command>| {
            this.state = State::Aborted {
                reason: reason.clone(),
            };
            this.serving = 0;
            out.push(Command::RollBack { reason });
        };
        match verdict {
            // Clear failure with enough requests: no need to wait for the pause.
            Verdict::Fail(reason) => abort(self, format!("{reason} at {percent}%"), out),
            _ if now < pause_end => {}
            Verdict::Pass => {
                out.push(Command::Record {
                    message: format!(
                        "step {} passed analysis: {} requests, 5xx {}, p99 {}",
                        step + 1,
                        canary.requests,
                        pct(canary.error_rate()),
                        canary.p99_ms.map_or("-".into(), |p| format!("{p:.0} ms"))
                    ),
                });
                self.enter(step + 1, now, out);
            }
            Verdict::Inconclusive(why) => {
                let deadline = pause_end + self.spec.analysis.deadline.as_millis() as Millis;
                if now >= deadline {
                    abort(
                        self,
                        format!(
                            "canary analysis failed: no verdict by the deadline ({why}) at {percent}%"
                        ),
                        out,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
