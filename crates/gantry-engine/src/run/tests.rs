//! Run machine tests: a pipeline shape, a script of events, and the commands expected, written
//! compactly (`start a0`, `finish-job a0 failed`, ...).

use super::*;
use gantry_model::{DeploySpec, Job, Stage, Step};

/// A job: name, retries, allow_failure.
type JobShape<'a> = (&'a str, u32, bool);
/// Stages: a list of jobs, or `None` for a deploy stage.
type Shape<'a> = &'a [Option<&'a [JobShape<'a>]>];

/// Builds a pipeline from a shape: each stage is a list of jobs `(name, retries, allow_failure)`,
/// or `None` for a deploy stage.
fn pipeline(shape: Shape) -> Pipeline {
    let stages = shape
        .iter()
        .enumerate()
        .map(|(i, s)| Stage {
            name: format!("s{i}"),
            when: None,
            kind: match s {
                Some(jobs) => StageKind::Jobs(
                    jobs.iter()
                        .map(|(name, retries, allow_failure)| Job {
                            name: name.to_string(),
                            steps: vec![Step {
                                name: "x".into(),
                                run: "true".into(),
                                env: vec![],
                                timeout: None,
                            }],
                            env: vec![],
                            pass_env: vec![],
                            secrets: vec![],
                            timeout: None,
                            retries: *retries,
                            allow_failure: *allow_failure,
                            artifacts: vec![],
                            needs: vec![],
                            needs_from: vec![],
                            after: vec![],
                            matrix: None,
                            when: None,
                            caches: vec![],
                            container: None,
                            services: vec![],
                            runs_on: vec![],
                        })
                        .collect(),
                ),
                None => StageKind::Deploy(DeploySpec {
                    environments: vec!["staging".into()],
                    artifact: "app".into(),
                    bake: None,
                }),
            },
        })
        .collect();
    Pipeline {
        name: None,
        env: vec![],
        pass_env: vec![],
        stages,
        environments: vec![],
    }
}

fn render(cmds: &[Command]) -> String {
    cmds.iter()
        .map(|c| match c {
            Command::StartStage { stage } => format!("stage s{stage}"),
            Command::StartJob { job, attempt } => {
                format!("start {}{}#{attempt}", job.stage, job.job)
            }
            Command::StartDeploy { stage } => format!("deploy s{stage}"),
            Command::AwaitApproval { stage } => format!("await s{stage}"),
            Command::CancelRunningJobs => "cancel-jobs".into(),
            Command::FinishJob { job, status } => format!("job {}{} {status}", job.stage, job.job),
            Command::FinishStage { stage, status } => format!("end s{stage} {status}"),
            Command::SkipStage { stage, status } => format!("skip s{stage} {status}"),
            Command::StageNotApplicable { stage, reason } => format!("n/a s{stage} ({reason})"),
            Command::JobNotApplicable { job, reason } => {
                format!("n/a {}{} ({reason})", job.stage, job.job)
            }
            Command::FinishRun { status } => format!("run {status}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A push to main: no rule of the tests' pipelines says otherwise.
fn any_trigger() -> Trigger {
    Trigger {
        branch: Some("main".into()),
        tag: None,
        event: gantry_model::TriggerEvent::Push,
        vars: Default::default(),
    }
}

fn attempt(stage: usize, job: usize, attempt: u32, outcome: AttemptOutcome) -> Event {
    Event::AttemptFinished {
        job: JobRef { stage, job },
        attempt,
        outcome,
    }
}

/// Feeds the events in order and checks the commands each one produced.
fn check(shape: Shape, script: &[(Event, &str)]) {
    let mut m = RunMachine::new(&pipeline(shape), &any_trigger());
    for (i, (event, expect)) in script.iter().enumerate() {
        let got = render(&m.on(event.clone()));
        assert_eq!(got, *expect, "after event {i}: {event:?}");
    }
}

use AttemptOutcome::*;

#[test]
fn stages_run_in_order_and_jobs_in_parallel() {
    check(
        &[
            Some(&[("a", 0, false), ("b", 0, false)]),
            Some(&[("c", 0, false)]),
        ],
        &[
            (Event::Start, "stage s0, start 00#1, start 01#1"),
            (attempt(0, 1, 1, Succeeded), "job 01 succeeded"),
            (
                attempt(0, 0, 1, Succeeded),
                "job 00 succeeded, end s0 succeeded, stage s1, start 10#1",
            ),
            (
                attempt(1, 0, 1, Succeeded),
                "job 10 succeeded, end s1 succeeded, run succeeded",
            ),
            (Event::Cancel, ""),
        ],
    );
}

#[test]
fn a_failed_stage_skips_the_rest() {
    check(
        &[
            Some(&[("a", 0, false), ("b", 0, false)]),
            Some(&[("c", 0, false)]),
            None,
        ],
        &[
            (Event::Start, "stage s0, start 00#1, start 01#1"),
            (attempt(0, 0, 1, Failed), "job 00 failed"),
            (
                attempt(0, 1, 1, Succeeded),
                "job 01 succeeded, end s0 failed, skip s1 skipped, skip s2 skipped, run failed",
            ),
        ],
    );
}

#[test]
fn allow_failure_does_not_fail_the_stage() {
    check(
        &[Some(&[("a", 0, true)]), Some(&[("c", 0, false)])],
        &[
            (Event::Start, "stage s0, start 00#1"),
            (
                attempt(0, 0, 1, Failed),
                "job 00 failed, end s0 succeeded, stage s1, start 10#1",
            ),
            (
                attempt(1, 0, 1, Failed),
                "job 10 failed, end s1 failed, run failed",
            ),
        ],
    );
}

#[test]
fn retries_then_gives_up() {
    check(
        &[Some(&[("a", 2, false)])],
        &[
            (Event::Start, "stage s0, start 00#1"),
            (attempt(0, 0, 1, Failed), "start 00#2"),
            (attempt(0, 0, 2, TimedOut), "start 00#3"),
            (
                attempt(0, 0, 3, TimedOut),
                "job 00 timed_out, end s0 failed, run failed",
            ),
        ],
    );
    check(
        &[Some(&[("a", 1, false)])],
        &[
            (Event::Start, "stage s0, start 00#1"),
            (attempt(0, 0, 1, Failed), "start 00#2"),
            (
                attempt(0, 0, 2, Succeeded),
                "job 00 succeeded, end s0 succeeded, run succeeded",
            ),
        ],
    );
}

#[test]
fn a_lost_attempt_starts_again_without_using_a_retry_or_fails_as_told() {
    let lost = AttemptOutcome::Lost { retry: true };
    let no_retry = AttemptOutcome::Lost { retry: false };
    check(
        &[Some(&[("a", 1, false)])],
        &[
            (Event::Start, "stage s0, start 00#1"),
            (attempt(0, 0, 1, lost), "start 00#2"),
            (attempt(0, 0, 2, lost), "start 00#3"),
            // Its one retry is still there after two lost attempts.
            (attempt(0, 0, 3, Failed), "start 00#4"),
            (
                attempt(0, 0, 4, Failed),
                "job 00 failed, end s0 failed, run failed",
            ),
        ],
    );
    check(
        &[Some(&[("a", 3, false)])],
        &[
            (Event::Start, "stage s0, start 00#1"),
            (
                attempt(0, 0, 1, no_retry),
                "job 00 failed, end s0 failed, run failed",
            ),
        ],
    );
    // Lost while the run is being cancelled: cancelled, never started again.
    check(
        &[Some(&[("a", 0, false)])],
        &[
            (Event::Start, "stage s0, start 00#1"),
            (Event::Cancel, "cancel-jobs"),
            (
                attempt(0, 0, 1, lost),
                "job 00 cancelled, end s0 cancelled, run cancelled",
            ),
        ],
    );
}

#[test]
fn cancel_stops_running_jobs_and_skips_the_rest() {
    check(
        &[
            Some(&[("a", 3, false), ("b", 0, false)]),
            Some(&[("c", 0, false)]),
        ],
        &[
            (Event::Start, "stage s0, start 00#1, start 01#1"),
            (Event::Cancel, "cancel-jobs"),
            (Event::Cancel, ""),
            // A failure after cancel is not retried.
            (attempt(0, 0, 1, Failed), "job 00 failed"),
            (
                attempt(0, 1, 1, Cancelled),
                "job 01 cancelled, end s0 failed, skip s1 skipped, run failed",
            ),
        ],
    );
    check(
        &[Some(&[("a", 0, false)]), Some(&[("c", 0, false)])],
        &[
            (Event::Start, "stage s0, start 00#1"),
            (Event::Cancel, "cancel-jobs"),
            (
                attempt(0, 0, 1, Cancelled),
                "job 00 cancelled, end s0 cancelled, skip s1 cancelled, run cancelled",
            ),
            (attempt(0, 0, 1, Succeeded), ""),
        ],
    );
}

#[test]
fn cancel_before_start_and_stale_events() {
    check(
        &[Some(&[("a", 0, false)])],
        &[
            (Event::Cancel, "skip s0 cancelled, run cancelled"),
            (Event::Start, ""),
        ],
    );
    check(
        &[Some(&[("a", 0, false)]), Some(&[("b", 0, false)])],
        &[
            (Event::Start, "stage s0, start 00#1"),
            (attempt(1, 0, 1, Succeeded), ""),
            (
                attempt(0, 0, 1, Succeeded),
                "job 00 succeeded, end s0 succeeded, stage s1, start 10#1",
            ),
            (attempt(0, 0, 1, Succeeded), ""),
        ],
    );
}

#[test]
fn deploy_stages() {
    check(
        &[Some(&[("a", 0, false)]), None, Some(&[("b", 0, false)])],
        &[
            (Event::Start, "stage s0, start 00#1"),
            (
                attempt(0, 0, 1, Succeeded),
                "job 00 succeeded, end s0 succeeded, stage s1, deploy s1",
            ),
            (Event::Cancel, ""),
            (
                Event::DeployFinished {
                    stage: 1,
                    outcome: DeployOutcome::Succeeded,
                },
                "end s1 succeeded, skip s2 cancelled, run cancelled",
            ),
        ],
    );
    check(
        &[None, Some(&[("b", 0, false)])],
        &[
            (Event::Start, "stage s0, deploy s0"),
            (
                Event::DeployFinished {
                    stage: 0,
                    outcome: DeployOutcome::Failed,
                },
                "end s0 failed, skip s1 skipped, run failed",
            ),
        ],
    );
    check(
        &[None],
        &[
            (Event::Start, "stage s0, deploy s0"),
            (
                Event::DeployFinished {
                    stage: 0,
                    outcome: DeployOutcome::Skipped("no server".into()),
                },
                "end s0 skipped, run succeeded",
            ),
        ],
    );
}

/// `when:`: a stage that does not apply is passed over with its reason and the run goes on; a
/// failure before it still skips it as before.
#[test]
fn stages_whose_rules_do_not_hold_are_passed_over() {
    use gantry_model::{Rules, TriggerEvent};
    let mut p = pipeline(&[
        Some(&[("build", 0, false)]),
        None,
        Some(&[("after", 0, false)]),
    ]);
    p.stages[1].when = Some(Rules {
        branches: vec!["main".into()],
        tags: Vec::new(),
        events: vec![TriggerEvent::Push],
        condition: None,
    });
    let cases = [
        (
            Trigger {
                branch: Some("feature/x".into()),
                tag: None,
                event: TriggerEvent::Push,
                vars: Default::default(),
            },
            "job 00 succeeded, end s0 succeeded, n/a s1 (when: branch `feature/x` is not one of main), stage s2, start 20#1",
        ),
        (
            Trigger {
                branch: Some("main".into()),
                tag: None,
                event: TriggerEvent::Manual,
                vars: Default::default(),
            },
            "job 00 succeeded, end s0 succeeded, n/a s1 (when: event `manual` is not one of push), stage s2, start 20#1",
        ),
        (
            Trigger {
                branch: Some("main".into()),
                tag: None,
                event: TriggerEvent::Push,
                vars: Default::default(),
            },
            "job 00 succeeded, end s0 succeeded, stage s1, deploy s1",
        ),
        (
            Trigger {
                branch: None,
                tag: None,
                event: TriggerEvent::PullRequest,
                vars: Default::default(),
            },
            "job 00 succeeded, end s0 succeeded, n/a s1 (a deploy stage does not run for a pull request unless its when: names event pull_request), stage s2, start 20#1",
        ),
    ];
    for (trigger, want) in cases {
        let mut m = RunMachine::new(&p, &trigger);
        assert_eq!(render(&m.on(Event::Start)), "stage s0, start 00#1");
        assert_eq!(
            render(&m.on(attempt(0, 0, 1, Succeeded))),
            want,
            "{trigger:?}"
        );
    }
    let mut m = RunMachine::new(
        &p,
        &Trigger {
            branch: Some("feature/x".into()),
            tag: None,
            event: TriggerEvent::Push,
            vars: Default::default(),
        },
    );
    m.on(Event::Start);
    m.on(attempt(0, 0, 1, Succeeded));
    assert_eq!(
        render(&m.on(attempt(2, 0, 1, Succeeded))),
        "job 20 succeeded, end s2 succeeded, run succeeded"
    );
    // A failure first: the stage is skipped for that, as any other.
    let mut m = RunMachine::new(&p, &any_trigger());
    m.on(Event::Start);
    assert_eq!(
        render(&m.on(attempt(0, 0, 1, Failed))),
        "job 00 failed, end s0 failed, skip s1 skipped, skip s2 skipped, run failed"
    );
}

/// `pipeline(shape)` with `after` set: (stage, job) waits for the named jobs.
fn with_after(shape: Shape, after: &[((usize, usize), &[&str])]) -> Pipeline {
    let mut p = pipeline(shape);
    for ((stage, job), names) in after {
        if let StageKind::Jobs(jobs) = &mut p.stages[*stage].kind {
            jobs[*job].after = names.iter().map(|n| n.to_string()).collect();
        }
    }
    p
}

fn script(p: &Pipeline, steps: &[(Event, &str)]) {
    let mut m = RunMachine::new(p, &any_trigger());
    for (i, (event, want)) in steps.iter().enumerate() {
        assert_eq!(render(&m.on(event.clone())), *want, "step {i}: {event:?}");
    }
}

#[test]
fn a_job_that_waits_for_a_job_starts_when_it_is_done_not_when_its_stage_is() {
    let p = with_after(
        &[
            Some(&[("a", 0, false), ("b", 0, false)]),
            Some(&[("c", 0, false), ("d", 0, false)]),
        ],
        &[((1, 0), &["a"])],
    );
    script(
        &p,
        &[
            (Event::Start, "stage s0, start 00#1, start 01#1"),
            // c starts as soon as a is done, while b still runs; its stage starts with it.
            (
                attempt(0, 0, 1, Succeeded),
                "job 00 succeeded, stage s1, start 10#1",
            ),
            (
                attempt(0, 1, 1, Succeeded),
                "job 01 succeeded, end s0 succeeded, start 11#1",
            ),
            (attempt(1, 0, 1, Succeeded), "job 10 succeeded"),
            (
                attempt(1, 1, 1, Succeeded),
                "job 11 succeeded, end s1 succeeded, run succeeded",
            ),
        ],
    );
}

#[test]
fn waiting_inside_a_stage_and_through_allow_failure() {
    let p = with_after(
        &[Some(&[("a", 0, true), ("b", 0, false), ("c", 0, false)])],
        &[((0, 1), &["a"]), ((0, 2), &["b"])],
    );
    script(
        &p,
        &[
            (Event::Start, "stage s0, start 00#1"),
            // a may fail: b goes on.
            (attempt(0, 0, 1, Failed), "job 00 failed, start 01#1"),
            (attempt(0, 1, 1, Succeeded), "job 01 succeeded, start 02#1"),
            (
                attempt(0, 2, 1, Succeeded),
                "job 02 succeeded, end s0 succeeded, run succeeded",
            ),
        ],
    );
}

#[test]
fn a_failed_job_skips_what_waits_for_it_and_the_run_ends_when_nothing_runs() {
    let p = with_after(
        &[
            Some(&[("a", 0, false), ("b", 0, false), ("c", 0, false)]),
            Some(&[("d", 0, false)]),
            Some(&[("e", 0, false)]),
        ],
        &[((0, 1), &["a"]), ((1, 0), &["c"]), ((2, 0), &["b"])],
    );
    script(
        &p,
        &[
            (Event::Start, "stage s0, start 00#1, start 02#1"),
            // d runs ahead of the cursor.
            (
                attempt(0, 2, 1, Succeeded),
                "job 02 succeeded, stage s1, start 10#1",
            ),
            // a fails: b (waiting for a) is skipped, and so is e (waiting for b); d still runs.
            (
                attempt(0, 0, 1, Failed),
                "job 00 failed, job 01 skipped, job 20 skipped, end s0 failed",
            ),
            (
                attempt(1, 0, 1, Succeeded),
                "job 10 succeeded, end s1 succeeded, skip s2 skipped, run failed",
            ),
        ],
    );
}

#[test]
fn a_job_waiting_on_a_stage_that_does_not_apply_is_skipped() {
    use gantry_model::{Rules, TriggerEvent};
    let mut p = with_after(
        &[Some(&[("a", 0, false)]), Some(&[("b", 0, false)])],
        &[((1, 0), &["a"])],
    );
    p.stages[0].when = Some(Rules {
        events: vec![TriggerEvent::Manual],
        ..Rules::default()
    });
    script(
        &p,
        &[(
            Event::Start,
            "n/a s0 (when: event `push` is not one of manual), stage s1, job 10 skipped, end s1 skipped, run succeeded",
        )],
    );
}

#[test]
fn cancel_reaches_jobs_running_ahead() {
    let p = with_after(
        &[
            Some(&[("a", 0, false), ("b", 0, false)]),
            Some(&[("c", 0, false)]),
        ],
        &[((1, 0), &["a"])],
    );
    script(
        &p,
        &[
            (Event::Start, "stage s0, start 00#1, start 01#1"),
            (
                attempt(0, 0, 1, Succeeded),
                "job 00 succeeded, stage s1, start 10#1",
            ),
            (Event::Cancel, "cancel-jobs"),
            (
                attempt(0, 1, 1, Cancelled),
                "job 01 cancelled, end s0 cancelled",
            ),
            (
                attempt(1, 0, 1, Cancelled),
                "job 10 cancelled, end s1 cancelled, run cancelled",
            ),
        ],
    );
}

/// `pipeline(shape)` with stage `gate` turned into an approval stage.
fn with_gate(shape: Shape, gate: usize) -> Pipeline {
    let mut p = pipeline(shape);
    p.stages[gate].kind = StageKind::Approval(gantry_model::ApprovalSpec {
        roles: vec![gantry_model::Role::Deployer],
        timeout: std::time::Duration::from_secs(60),
        supersede: true,
    });
    p
}

fn decided(stage: usize, outcome: ApprovalOutcome) -> Event {
    Event::ApprovalDecided { stage, outcome }
}

#[test]
fn an_approval_stage_holds_the_run_until_it_is_decided() {
    let shape: Shape = &[
        Some(&[("build", 0, false)]),
        None,
        Some(&[("ship", 0, false)]),
    ];
    let start = [
        (Event::Start, "stage s0, start 00#1"),
        (
            attempt(0, 0, 1, Succeeded),
            "job 00 succeeded, end s0 succeeded, stage s1, await s1",
        ),
    ];
    let cases: [(Event, &str); 5] = [
        (
            decided(1, ApprovalOutcome::Approved),
            "end s1 succeeded, stage s2, start 20#1",
        ),
        (
            decided(1, ApprovalOutcome::TimedOut),
            "end s1 failed, skip s2 skipped, run failed",
        ),
        (
            decided(1, ApprovalOutcome::Superseded),
            "end s1 cancelled, skip s2 cancelled, run cancelled",
        ),
        (
            decided(1, ApprovalOutcome::Unavailable),
            "end s1 skipped, skip s2 skipped, run succeeded",
        ),
        (
            Event::Cancel,
            "end s1 cancelled, skip s2 cancelled, run cancelled",
        ),
    ];
    for (event, want) in cases {
        let mut m = RunMachine::new(&with_gate(shape, 1), &any_trigger());
        for (e, w) in &start {
            assert_eq!(render(&m.on(e.clone())), *w);
        }
        assert_eq!(render(&m.on(event.clone())), want, "{event:?}");
        // A decision that comes late, or twice, changes nothing.
        assert_eq!(render(&m.on(decided(1, ApprovalOutcome::Approved))), "");
    }
}

#[test]
fn no_job_runs_ahead_of_an_undecided_approval() {
    let mut p = with_gate(
        &[
            Some(&[("build", 0, false), ("slow", 0, false)]),
            None,
            Some(&[("ship", 0, false)]),
        ],
        1,
    );
    if let StageKind::Jobs(jobs) = &mut p.stages[2].kind {
        jobs[0].after = vec!["build".into()];
    }
    script(
        &p,
        &[
            (Event::Start, "stage s0, start 00#1, start 01#1"),
            // `ship` waits for `build` only, but the approval stands between them.
            (attempt(0, 0, 1, Succeeded), "job 00 succeeded"),
            (
                attempt(0, 1, 1, Succeeded),
                "job 01 succeeded, end s0 succeeded, stage s1, await s1",
            ),
            (
                decided(1, ApprovalOutcome::Approved),
                "end s1 succeeded, stage s2, start 20#1",
            ),
        ],
    );
}

#[test]
fn a_job_whose_rules_do_not_hold_is_skipped_and_so_is_what_waits_for_it() {
    use gantry_model::{Rules, TriggerEvent};
    let mut p = with_after(
        &[Some(&[
            ("unit", 0, false),
            ("nightly", 0, false),
            ("report", 0, false),
        ])],
        &[((0, 2), &["nightly"])],
    );
    if let StageKind::Jobs(jobs) = &mut p.stages[0].kind {
        jobs[1].when = Some(Rules {
            events: vec![TriggerEvent::Schedule],
            ..Rules::default()
        });
    }
    script(
        &p,
        &[
            (
                Event::Start,
                "stage s0, start 00#1, n/a 01 (when: event `push` is not one of schedule), job 02 skipped",
            ),
            (
                attempt(0, 0, 1, Succeeded),
                "job 00 succeeded, end s0 succeeded, run succeeded",
            ),
        ],
    );
}
