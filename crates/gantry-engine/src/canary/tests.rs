//! Every transition of the canary machine, and analysis on hand-made windows.

use super::*;
use gantry_model::{AnalysisSpec, CanarySpec, CanaryStep};
use std::time::Duration;

const MIN: i64 = 60_000;

fn spec() -> CanarySpec {
    CanarySpec {
        users: None,
        steps: vec![
            CanaryStep::Weight {
                percent: 0,
                pause: Some(Duration::from_secs(120)),
            },
            CanaryStep::Weight {
                percent: 10,
                pause: Some(Duration::from_secs(300)),
            },
            CanaryStep::Approval,
            CanaryStep::Weight {
                percent: 50,
                pause: Some(Duration::from_secs(300)),
            },
        ],
        analysis: AnalysisSpec {
            max_error_rate_ppm: Some(10_000),
            max_p99_ms: Some(400),
            min_requests: 50,
            compare_to_stable: false,
            deadline: Duration::from_secs(600),
        },
    }
}

fn good(requests: u64) -> Window {
    Window {
        requests,
        errors: 0,
        p50_ms: Some(5.0),
        p90_ms: Some(10.0),
        p99_ms: Some(20.0),
    }
}

fn tick(now: i64, canary: Window) -> Event {
    Event::Tick {
        now,
        canary,
        stable: good(1000),
    }
}

fn weights(cmds: &[Command]) -> Vec<u32> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::SetWeight { percent } => Some(*percent),
            _ => None,
        })
        .collect()
}

fn rolled_back(cmds: &[Command]) -> Option<&str> {
    cmds.iter().find_map(|c| match c {
        Command::RollBack { reason } => Some(reason.as_str()),
        _ => None,
    })
}

/// A machine started and serving its first step (0%) since t=0.
fn observing_first_step() -> CanaryMachine {
    let mut m = CanaryMachine::new(spec());
    assert_eq!(weights(&m.on(Event::Start { now: 0 })), vec![0]);
    m.on(Event::Applied { percent: 0, now: 0 });
    assert_eq!(
        m.state(),
        &State::Observing {
            step: 0,
            percent: 0,
            since: 0
        }
    );
    m
}

#[test]
fn a_healthy_canary_walks_every_step_to_100_percent() {
    let mut m = observing_first_step();
    // Before the pause ends, nothing happens.
    assert!(m.on(tick(MIN, good(500))).is_empty());
    // End of the 2m pause: pass, next weight asked; recorded only when applied.
    let cmds = m.on(tick(2 * MIN, good(500)));
    assert_eq!(weights(&cmds), vec![10]);
    assert_eq!(m.serving(), 0, "not served until the router says so");
    let cmds = m.on(Event::Applied {
        percent: 10,
        now: 2 * MIN,
    });
    assert!(matches!(&cmds[0], Command::Record { message } if message.contains("10%")));
    assert_eq!(m.serving(), 10);
    // End of the 5m pause: the approval step waits for a human.
    let cmds = m.on(tick(7 * MIN, good(500)));
    assert!(weights(&cmds).is_empty());
    assert_eq!(
        m.state(),
        &State::WaitingApproval {
            step: 2,
            percent: 10
        }
    );
    assert!(
        m.on(tick(60 * MIN, good(5000))).is_empty(),
        "waits, whatever the time"
    );
    let cmds = m.on(Event::Promote {
        full: false,
        now: 60 * MIN,
    });
    assert_eq!(weights(&cmds), vec![50]);
    m.on(Event::Applied {
        percent: 50,
        now: 60 * MIN,
    });
    // Last step passes: everything to the canary, then finished.
    let cmds = m.on(tick(65 * MIN, good(500)));
    assert_eq!(weights(&cmds), vec![100]);
    assert_eq!(m.state(), &State::Promoting);
    let cmds = m.on(Event::Applied {
        percent: 100,
        now: 65 * MIN,
    });
    assert_eq!(cmds, vec![Command::Finish]);
    assert_eq!(m.state(), &State::Promoted);
    assert_eq!(m.serving(), 100);
}

#[test]
fn a_canary_without_traffic_is_never_promoted_and_fails_at_the_deadline() {
    let mut m = observing_first_step();
    for t in [2 * MIN, 5 * MIN, 11 * MIN] {
        let cmds = m.on(tick(t, good(3)));
        assert!(cmds.is_empty(), "inconclusive at {t}: waits ({cmds:?})");
        assert!(matches!(m.state(), State::Observing { step: 0, .. }));
    }
    // Pause 2m + deadline 10m.
    let cmds = m.on(tick(12 * MIN, good(3)));
    let reason = rolled_back(&cmds).expect("aborted");
    assert!(reason.contains("no verdict by the deadline"), "{reason}");
    assert!(reason.contains("3 canary requests"), "{reason}");
    assert!(matches!(m.state(), State::Aborted { .. }));
}

#[test]
fn a_canary_answering_5xx_is_aborted_without_waiting_for_the_pause() {
    let mut m = observing_first_step();
    let bad = Window {
        requests: 200,
        errors: 30,
        ..good(200)
    };
    let cmds = m.on(tick(MIN / 2, bad));
    let reason = rolled_back(&cmds).expect("aborted");
    assert!(
        reason.contains("5xx rate 15.00% (30 of 200 requests)"),
        "{reason}"
    );
    assert_eq!(m.serving(), 0);
}

#[test]
fn a_slow_canary_is_aborted() {
    let mut m = observing_first_step();
    let slow = Window {
        p99_ms: Some(900.0),
        ..good(200)
    };
    let reason = rolled_back(&m.on(tick(2 * MIN, slow))).unwrap().to_string();
    assert!(reason.contains("p99 latency 900 ms"), "{reason}");
    assert!(reason.contains("max_p99_ms 400"), "{reason}");
}

#[test]
fn an_abort_while_a_promotion_is_pending_wins_and_a_second_abort_is_a_no_op() {
    let mut m = observing_first_step();
    let cmds = m.on(Event::Promote {
        full: true,
        now: MIN,
    });
    assert_eq!(weights(&cmds), vec![100]);
    assert_eq!(m.state(), &State::Promoting);
    let cmds = m.on(Event::Abort {
        reason: "aborted by alice".into(),
        now: MIN,
    });
    assert_eq!(rolled_back(&cmds), Some("aborted by alice"));
    // The router's late answer to the promotion changes nothing.
    assert!(
        m.on(Event::Applied {
            percent: 100,
            now: MIN
        })
        .is_empty()
    );
    assert!(matches!(m.state(), State::Aborted { reason } if reason == "aborted by alice"));
    assert!(
        m.on(Event::Abort {
            reason: "again".into(),
            now: MIN
        })
        .is_empty()
    );
    assert!(matches!(m.state(), State::Aborted { reason } if reason == "aborted by alice"));
}

#[test]
fn abort_from_every_active_state_rolls_back() {
    let states: Vec<Box<dyn Fn() -> CanaryMachine>> = vec![
        Box::new(|| {
            let mut m = CanaryMachine::new(spec());
            m.on(Event::Start { now: 0 });
            m // applying
        }),
        Box::new(observing_first_step),
        Box::new(|| {
            let mut m = observing_first_step();
            m.on(Event::Pause { now: 10 });
            m
        }),
        Box::new(|| {
            let mut m = observing_first_step();
            m.on(Event::Promote { full: true, now: 1 });
            m // promoting
        }),
    ];
    for make in states {
        let mut m = make();
        let before = m.state().name();
        let cmds = m.on(Event::Abort {
            reason: "alarm HighErrorRate is firing".into(),
            now: 5,
        });
        assert_eq!(
            rolled_back(&cmds),
            Some("alarm HighErrorRate is firing"),
            "from {before}"
        );
        assert!(m.state().is_finished());
    }
}

#[test]
fn stale_and_mismatched_router_answers_are_ignored() {
    let mut m = CanaryMachine::new(spec());
    m.on(Event::Start { now: 0 });
    assert!(
        m.on(Event::Applied {
            percent: 50,
            now: 0
        })
        .is_empty()
    );
    assert!(matches!(m.state(), State::Applying { percent: 0, .. }));
    // Ticks while applying are ignored too.
    assert!(m.on(tick(10 * MIN, good(1000))).is_empty());
}

#[test]
fn promote_skips_the_rest_of_a_pause_but_not_while_applying() {
    let mut m = CanaryMachine::new(spec());
    m.on(Event::Start { now: 0 });
    assert!(
        m.on(Event::Promote {
            full: false,
            now: 0
        })
        .is_empty(),
        "nothing to promote before the weight is served"
    );
    m.on(Event::Applied { percent: 0, now: 0 });
    let cmds = m.on(Event::Promote {
        full: false,
        now: 10,
    });
    assert_eq!(weights(&cmds), vec![10]);
}

#[test]
fn pause_freezes_the_step_and_resume_keeps_what_was_left() {
    let mut m = observing_first_step();
    m.on(Event::Pause { now: MIN }); // 1m of the 2m pause left
    assert!(matches!(m.state(), State::Paused { left, .. } if *left == MIN));
    assert!(
        m.on(tick(30 * MIN, good(500))).is_empty(),
        "no analysis while paused"
    );
    assert!(
        m.on(Event::Promote {
            full: false,
            now: 30 * MIN
        })
        .is_empty()
    );
    m.on(Event::Resume { now: 40 * MIN });
    assert!(m.on(tick(40 * MIN + MIN / 2, good(500))).is_empty());
    assert_eq!(weights(&m.on(tick(41 * MIN, good(500)))), vec![10]);
    // Pausing twice, or resuming when not paused, changes nothing.
    let mut m = observing_first_step();
    m.on(Event::Pause { now: 0 });
    assert!(m.on(Event::Pause { now: 1 }).is_empty());
    let mut n = observing_first_step();
    assert!(n.on(Event::Resume { now: 1 }).is_empty());
}

#[test]
fn nothing_happens_after_the_end() {
    let mut m = observing_first_step();
    m.on(Event::Promote { full: true, now: 0 });
    m.on(Event::Applied {
        percent: 100,
        now: 0,
    });
    assert_eq!(m.state(), &State::Promoted);
    for e in [
        Event::Start { now: 1 },
        tick(1, good(1)),
        Event::Promote { full: true, now: 1 },
        Event::Abort {
            reason: "late".into(),
            now: 1,
        },
        Event::Pause { now: 1 },
        Event::Resume { now: 1 },
    ] {
        assert!(m.on(e).is_empty());
    }
    assert_eq!(m.state(), &State::Promoted);
}

#[test]
fn a_canary_with_no_steps_goes_straight_to_everyone() {
    let mut m = CanaryMachine::new(CanarySpec {
        steps: vec![],
        ..spec()
    });
    assert_eq!(weights(&m.on(Event::Start { now: 0 })), vec![100]);
}

#[test]
fn analysis_compared_to_stable_forgives_an_incident_stable_has_too() {
    let mut a = spec().analysis;
    a.compare_to_stable = true;
    let stable = Window {
        requests: 1000,
        errors: 100,
        p99_ms: Some(800.0),
        ..good(1000)
    };
    let canary = Window {
        requests: 200,
        errors: 21,
        p99_ms: Some(700.0),
        ..good(200)
    };
    assert_eq!(analyze(&a, &canary, &stable), Verdict::Pass);
    a.compare_to_stable = false;
    assert!(matches!(analyze(&a, &canary, &stable), Verdict::Fail(_)));
    // A stable side without enough requests is no baseline.
    a.compare_to_stable = true;
    let quiet = Window {
        requests: 3,
        ..stable
    };
    assert!(matches!(analyze(&a, &canary, &quiet), Verdict::Fail(_)));
    // Worse than stable by more than the limit fails.
    let worse = Window {
        requests: 200,
        errors: 60,
        ..canary
    };
    let Verdict::Fail(reason) = analyze(&a, &worse, &stable) else {
        panic!()
    };
    assert!(
        reason.contains("stable's 10.00% plus max_error_rate 1.00%"),
        "{reason}"
    );
}

#[test]
fn analysis_without_limits_passes_with_enough_requests() {
    let a = AnalysisSpec::default();
    assert_eq!(analyze(&a, &good(50), &good(0)), Verdict::Pass);
    assert!(matches!(
        analyze(&a, &good(49), &good(0)),
        Verdict::Inconclusive(_)
    ));
}

#[test]
fn a_resumed_canary_goes_on_observing_its_step_and_decides_only_on_analysis() {
    // Taken over at step 2 (10%), served since 2m: no weight asked again.
    let (mut m, cmds) = CanaryMachine::resume(spec(), 1, 10, 2 * MIN);
    assert!(cmds.is_empty());
    assert_eq!(
        m.state(),
        &State::Observing {
            step: 1,
            percent: 10,
            since: 2 * MIN
        }
    );
    assert_eq!(m.serving(), 10);
    assert_eq!(m.window_start(), Some(2 * MIN));
    // Before the step's pause ends, good numbers change nothing.
    assert!(m.on(tick(6 * MIN, good(500))).is_empty());
    // Too few requests at the end of the pause: no promotion, it waits for numbers.
    assert!(weights(&m.on(tick(7 * MIN, good(10)))).is_empty());
    assert!(matches!(m.state(), State::Observing { step: 1, .. }));
    // Enough, and good: on to the approval step.
    m.on(tick(7 * MIN + 1, good(500)));
    assert!(matches!(m.state(), State::WaitingApproval { step: 2, .. }));

    // Bad numbers after a resume abort it, as they would have before.
    let (mut m, _) = CanaryMachine::resume(spec(), 1, 10, 2 * MIN);
    let bad = Window {
        requests: 500,
        errors: 100,
        ..good(500)
    };
    assert!(rolled_back(&m.on(tick(3 * MIN, bad))).is_some());

    // A resume whose share does not match the step's weight asks for the step's weight.
    let (m, cmds) = CanaryMachine::resume(spec(), 1, 50, 2 * MIN);
    assert_eq!(weights(&cmds), vec![10]);
    assert_eq!(
        m.state(),
        &State::Applying {
            step: 1,
            percent: 10
        }
    );
}
