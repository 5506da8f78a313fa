//! Every path of the deployment machine, one line per case: a plan, the events in order, and the
//! commands each event produced, rendered one event per `|`.

use super::*;

fn plan(purpose: Purpose, routing: Routing) -> Plan {
    Plan {
        release: 2,
        purpose,
        routing,
        unpack: true,
        running: false,
        check: "http /healthz".into(),
        health_timeout_ms: 1_000,
        health_interval_ms: 100,
        bake_ms: 5_000,
    }
}

fn deploy() -> Plan {
    plan(Purpose::Deploy { canary: false }, Routing::Router)
}

fn render(c: &Command) -> String {
    match c {
        Command::Unpack => "unpack".into(),
        Command::StartTarget => "start".into(),
        Command::Probe { at } => format!("probe@{at}"),
        Command::RecordHealth { seen } => format!("health[{seen}]"),
        Command::SetTraffic(t) => format!("traffic:{t:?}").to_lowercase(),
        Command::RecordSwitch { previous_becomes } => {
            format!("record:{}", previous_becomes.as_str())
        }
        Command::RunCanary => "canary".into(),
        Command::StopPrevious => "stop-previous".into(),
        Command::AfterSwitch => "after".into(),
        Command::Live => "live".into(),
        Command::Fail {
            reason,
            with_output,
            restore_previous,
        } => format!(
            "fail[{reason}]{}{}",
            if *with_output { "+output" } else { "" },
            if *restore_previous { "+restore" } else { "" }
        ),
        Command::RollBack { why } => format!("rollback[{why}]"),
        Command::Finish { failure: None } => "ok".into(),
        Command::Finish { failure: Some(f) } => format!("failed[{f}]"),
    }
}

fn health(now: i64, ok: bool, text: &str) -> Event {
    Event::Health {
        now,
        ok,
        text: text.into(),
        crashes: 0,
        last_crash: None,
    }
}

fn crashed(now: i64, crashes: u32) -> Event {
    Event::Health {
        now,
        ok: false,
        text: "GET /healthz: Connection refused".into(),
        crashes,
        last_crash: Some(Crash {
            status: "exit 7".into(),
            output_tail: vec!["boom".into()],
        }),
    }
}

fn tick(now: i64, crashes: Option<u32>) -> Event {
    Event::Tick {
        now,
        crashes,
        last_crash: crashes.map(|_| Crash {
            status: "exit 7".into(),
            output_tail: vec!["boom".into()],
        }),
    }
}

fn start() -> Event {
    Event::Start { now: 0 }
}
fn unpacked(now: i64) -> Event {
    Event::Unpacked { now, error: None }
}
fn started(now: i64) -> Event {
    Event::Started { now, error: None }
}
fn set(now: i64) -> Event {
    Event::TrafficSet { now }
}
fn recorded(now: i64) -> Event {
    Event::Recorded { now, error: None }
}

fn check(plan: Plan, events: Vec<Event>, expect: &str) {
    let mut m = DeploymentMachine::new(plan);
    let got: Vec<String> = events
        .into_iter()
        .map(|e| {
            let cmds: Vec<String> = m.on(e).iter().map(render).collect();
            if cmds.is_empty() {
                "-".to_string()
            } else {
                cmds.join(" ")
            }
        })
        .collect();
    assert_eq!(got.join(" | "), expect);
}

#[test]
fn a_healthy_deploy_switches_records_and_bakes() {
    check(
        deploy(),
        vec![
            start(),
            unpacked(5),
            started(10),
            health(10, false, "GET /healthz: Connection refused"),
            health(110, true, "GET /healthz -> 200"),
            set(111),
            recorded(112),
            tick(2_000, Some(1)),
            tick(5_112, Some(1)),
        ],
        "unpack | start | probe@10 | probe@110 \
         | health[GET /healthz: Connection refused; GET /healthz -> 200] traffic:switch \
         | record:superseded | after live | - | ok",
    );
    // Without a bake it is done when live.
    let mut p = deploy();
    p.bake_ms = 0;
    check(
        p,
        vec![
            start(),
            unpacked(1),
            started(2),
            health(2, true, "ok"),
            set(3),
            recorded(4),
        ],
        "unpack | start | probe@2 | health[ok] traffic:switch | record:superseded | after live ok",
    );
}

#[test]
fn a_release_that_never_passes_fails_before_any_traffic_moves() {
    check(
        deploy(),
        vec![
            start(),
            unpacked(0),
            started(0),
            health(0, false, "GET /healthz -> 500"),
            health(500, false, "GET /healthz -> 500"),
            health(950, false, "GET /healthz -> 500"),
        ],
        "unpack | start | probe@0 | probe@100 | probe@600 \
         | health[GET /healthz -> 500 (x3); no passing check within 1s] \
         fail[release 2 failed its health check (http /healthz): GET /healthz -> 500 (x3); no passing check within 1s]+output \
         failed[release 2 failed its health check (http /healthz): GET /healthz -> 500 (x3); no passing check within 1s]",
    );
}

#[test]
fn a_release_crashing_while_it_starts_is_given_up_with_its_output() {
    check(
        deploy(),
        vec![
            start(),
            unpacked(0),
            started(0),
            crashed(0, 1),
            crashed(100, 3),
        ],
        "unpack | start | probe@0 | probe@100 \
         | health[GET /healthz: Connection refused (x2); the release crashed 3 times while starting (last: exit 7); its last output:\n  boom] \
         fail[release 2 failed its health check (http /healthz): GET /healthz: Connection refused (x2); the release crashed 3 times while starting (last: exit 7); its last output:\n  boom]+output \
         failed[release 2 failed its health check (http /healthz): GET /healthz: Connection refused (x2); the release crashed 3 times while starting (last: exit 7); its last output:\n  boom]",
    );
}

#[test]
fn a_failed_unpack_or_start_fails_without_a_probe() {
    check(
        deploy(),
        vec![
            start(),
            Event::Unpacked {
                now: 0,
                error: Some("sha256 mismatch (corrupt)".into()),
            },
        ],
        "unpack | fail[the artifact could not be used: sha256 mismatch (corrupt)] \
         failed[the artifact could not be used: sha256 mismatch (corrupt)]",
    );
    check(
        plan(Purpose::Deploy { canary: false }, Routing::Itself),
        vec![
            start(),
            unpacked(0),
            Event::Started {
                now: 0,
                error: Some("the deploy script exited with code 3".into()),
            },
        ],
        "unpack | start | fail[the deploy script exited with code 3]+restore \
         failed[the deploy script exited with code 3]",
    );
}

#[test]
fn a_store_that_refuses_the_switch_puts_the_router_back() {
    check(
        deploy(),
        vec![
            start(),
            unpacked(0),
            started(0),
            health(0, true, "ok"),
            set(1),
            Event::Recorded {
                now: 2,
                error: Some("database is locked".into()),
            },
        ],
        "unpack | start | probe@0 | health[ok] traffic:switch | record:superseded \
         | traffic:back fail[the switch could not be recorded: database is locked] \
         failed[the switch could not be recorded: database is locked]",
    );
}

#[test]
fn crashes_or_an_alarm_in_the_bake_roll_back_and_a_release_moved_on_ends_the_watch() {
    let live = || {
        vec![
            start(),
            unpacked(0),
            started(0),
            health(0, true, "ok"),
            set(1),
            recorded(1),
        ]
    };
    let head =
        "unpack | start | probe@0 | health[ok] traffic:switch | record:superseded | after live";
    let mut crash = live();
    crash.extend([
        tick(200, Some(1)),
        tick(400, Some(2)),
        Event::RolledBack {
            now: 500,
            outcome: RolledBack::Done,
        },
    ]);
    let why = "release 2 crashed 2 times during its bake (last: exit 7); its last output:\n  boom";
    check(
        deploy(),
        crash,
        &format!("{head} | - | rollback[{why}] | failed[{why}]"),
    );
    let mut alarm = live();
    alarm.extend([
        Event::Alarm {
            now: 300,
            name: "HighErrorRate".into(),
        },
        Event::RolledBack {
            now: 400,
            outcome: RolledBack::Failed("no kept release".into()),
        },
    ]);
    let why = "alarm HighErrorRate fired during the bake of release 2";
    check(
        deploy(),
        alarm,
        &format!("{head} | rollback[{why}] | failed[{why}; rolling back failed: no kept release]"),
    );
    let mut moved = live();
    moved.extend([
        Event::Alarm {
            now: 300,
            name: "HighErrorRate".into(),
        },
        Event::RolledBack {
            now: 400,
            outcome: RolledBack::MovedOn,
        },
    ]);
    check(deploy(), moved, &format!("{head} | rollback[{why}] | ok"));
    let mut gone = live();
    gone.push(tick(200, None));
    check(deploy(), gone, &format!("{head} | ok"));
}

#[test]
fn an_alarm_outside_the_bake_changes_nothing() {
    check(
        deploy(),
        vec![
            start(),
            Event::Alarm {
                now: 0,
                name: "HighErrorRate".into(),
            },
            unpacked(1),
        ],
        "unpack | - | start",
    );
}

#[test]
fn a_canary_is_a_phase_and_a_promoted_one_bakes() {
    let canary = || plan(Purpose::Deploy { canary: true }, Routing::Router);
    let head = || vec![start(), unpacked(0), started(0), health(0, true, "ok")];
    let mut promoted = head();
    promoted.extend([
        Event::CanaryEnded {
            now: 60_000,
            outcome: Ok("passed its 2 canary steps".into()),
        },
        tick(65_000, Some(0)),
    ]);
    check(
        canary(),
        promoted,
        "unpack | start | probe@0 | health[ok] canary | live | ok",
    );
    // An alarm during the canary is the canary machine's to act on: it aborts.
    let mut aborted = head();
    aborted.extend([
        Event::Alarm {
            now: 1_000,
            name: "HighErrorRate".into(),
        },
        Event::CanaryEnded {
            now: 1_100,
            outcome: Err("canary aborted: alarm HighErrorRate is firing".into()),
        },
    ]);
    check(
        canary(),
        aborted,
        "unpack | start | probe@0 | health[ok] canary | - | failed[canary aborted: alarm HighErrorRate is firing]",
    );
}

/// A target that moves traffic itself (a weighted alias) runs its canary the same way: the
/// canary phase after the health check, then the bake once promoted.
#[test]
fn a_canary_of_a_target_that_routes_itself_is_the_same_phase() {
    let p = plan(Purpose::Deploy { canary: true }, Routing::Itself);
    check(
        p,
        vec![
            start(),
            unpacked(0),
            started(0),
            health(0, true, "ok"),
            Event::CanaryEnded {
                now: 60_000,
                outcome: Ok("passed".into()),
            },
            tick(65_000, Some(0)),
        ],
        "unpack | start | probe@0 | health[ok] canary | live | ok",
    );
}

#[test]
fn a_rollback_to_a_running_kept_release_is_one_check_and_a_switch() {
    let mut p = plan(
        Purpose::Rollback {
            previous_becomes: ReleaseState::RolledBack,
        },
        Routing::Router,
    );
    p.running = true;
    p.unpack = false;
    check(
        p.clone(),
        vec![
            start(),
            health(0, true, "GET /healthz -> 200"),
            set(1),
            recorded(2),
        ],
        "probe@0 | traffic:switch | record:rolled-back | after live ok",
    );
    // Its check fails: it is started again and waited for like any release.
    check(
        p,
        vec![
            start(),
            health(0, false, "GET /healthz: Connection refused"),
            started(5),
            health(5, true, "GET /healthz -> 200"),
            set(6),
            recorded(7),
        ],
        "probe@0 | start | probe@5 | health[GET /healthz -> 200] traffic:switch | record:rolled-back | after live ok",
    );
}

#[test]
fn a_rollback_to_a_stopped_kept_release_starts_it_and_a_missing_directory_is_unpacked() {
    let rollback = |unpack| {
        let mut p = plan(
            Purpose::Rollback {
                previous_becomes: ReleaseState::RolledBack,
            },
            Routing::Router,
        );
        p.unpack = unpack;
        p
    };
    check(
        rollback(false),
        vec![
            start(),
            started(0),
            health(0, true, "ok"),
            set(1),
            recorded(2),
        ],
        "start | probe@0 | health[ok] traffic:switch | record:rolled-back | after live ok",
    );
    check(
        rollback(true),
        vec![
            start(),
            Event::Unpacked {
                now: 0,
                error: Some("artifact sha256:aa is missing".into()),
            },
        ],
        "unpack | fail[the artifact could not be used: artifact sha256:aa is missing] \
         failed[the artifact could not be used: artifact sha256:aa is missing]",
    );
}

#[test]
fn an_automatic_rollback_leaves_no_fallback_and_does_not_bake() {
    let mut p = plan(
        Purpose::Rollback {
            previous_becomes: ReleaseState::Failed,
        },
        Routing::Router,
    );
    p.running = true;
    p.unpack = false;
    check(
        p,
        vec![start(), health(0, true, "ok"), set(1), recorded(2)],
        "probe@0 | traffic:switch | record:failed | traffic:only stop-previous after live ok",
    );
}

#[test]
fn targets_that_move_traffic_themselves_are_never_routed() {
    // A deploy: its own start made it live; its health check still decides.
    check(
        plan(Purpose::Deploy { canary: false }, Routing::Itself),
        vec![
            start(),
            unpacked(0),
            started(0),
            health(0, true, "`./check.sh` passed"),
            recorded(1),
        ],
        "unpack | start | probe@0 | health[`./check.sh` passed] record:superseded | after live",
    );
    check(
        plan(Purpose::Deploy { canary: false }, Routing::Itself),
        vec![
            start(),
            unpacked(0),
            started(0),
            health(0, false, "`./check.sh` failed (exit 1)"),
        ],
        "unpack | start | probe@0 | probe@100",
    );
    // A rollback: the target's roll_back moved users; nothing to check.
    let mut p = plan(
        Purpose::Rollback {
            previous_becomes: ReleaseState::RolledBack,
        },
        Routing::Itself,
    );
    p.unpack = false;
    check(
        p,
        vec![start(), started(0), recorded(1)],
        "start | record:rolled-back | after live ok",
    );
}

#[test]
fn a_restore_after_a_restart_serves_again_without_a_record() {
    let mut p = plan(Purpose::Restore, Routing::Router);
    p.unpack = false;
    check(
        p.clone(),
        vec![start(), started(0), health(0, true, "ok"), set(1)],
        "start | probe@0 | health[ok] traffic:only | live ok",
    );
    p.health_timeout_ms = 50;
    check(
        p,
        vec![start(), started(0), health(0, false, "GET /healthz -> 500")],
        "start | probe@0 | health[GET /healthz -> 500; no passing check within 50ms] \
         fail[release 2 failed its health check (http /healthz): GET /healthz -> 500; no passing check within 50ms]+output \
         failed[release 2 failed its health check (http /healthz): GET /healthz -> 500; no passing check within 50ms]",
    );
    // Nothing of gantry's runs for a target that moves traffic itself.
    check(
        plan(Purpose::Restore, Routing::Itself),
        vec![start()],
        "live ok",
    );
}

#[test]
fn repeated_observations_are_counted_and_only_the_last_ten_kept() {
    let mut p = deploy();
    p.health_timeout_ms = 100_000;
    let mut m = DeploymentMachine::new(p);
    m.on(start());
    m.on(unpacked(0));
    m.on(started(0));
    for i in 0..12 {
        m.on(health(i * 100, false, &format!("answer {i}")));
        m.on(health(i * 100 + 50, false, &format!("answer {i}")));
    }
    let seen = m.seen();
    assert_eq!(seen.len(), 10);
    assert_eq!(seen[0], "answer 2 (x2)");
    assert_eq!(seen[9], "answer 11 (x2)");
    assert_eq!(m.phase(), "probing");
}
