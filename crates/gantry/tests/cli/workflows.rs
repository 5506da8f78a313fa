//! Pipelines as teams write them (issue 17): `when:` rules on stages, judged against the run's
//! branch and what started it, through the real server, webhooks and a real repository.

use crate::server_support::{Served, bare_repo, run_git as git};

const PIPELINE: &str = "stages:
  - name: test
    jobs:
      - name: unit
        run: mkdir -p dist && echo \"tests pass on $GANTRY_BRANCH ($GANTRY_EVENT)\" | tee dist/report
        artifacts:
          - name: app
            path: dist/
  - name: production
    when: { branch: [main, \"release/*\"], event: push }
    deploy:
      environment: production
      artifact: app
environments:
  production:
    target:
      command:
        deploy: echo \"deploy $GANTRY_RELEASE\" >> \"$OUT\"
        env:
          OUT: OUTFILE
    health:
      command: test -f dist/report
";

fn config() -> String {
    "listen = \"127.0.0.1:0\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"hello.git\"\nbranches = [\"main\", \"feature/*\"]\npoll = \"0s\"\nwebhook_secret_env = \"HELLO_SECRET\"\n".to_string()
}

fn push_hook(s: &Served, branch: &str, commit: &str) -> i64 {
    let body = format!("{{\"ref\":\"refs/heads/{branch}\",\"after\":\"{commit}\"}}");
    let sig = Served::github_signature(body.as_bytes());
    let r = s.request(
        "POST",
        "/hooks/hello",
        &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", "push")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["run"].as_i64().unwrap()
}

#[test]
fn a_feature_branch_push_runs_tests_and_skips_production_which_main_deploys() {
    let dir = tempfile::tempdir().unwrap();
    // Outside the server's directory, which holds its data directory (releases may not write
    // there).
    let scratch = tempfile::tempdir().unwrap();
    let out_file = scratch.path().join("deploys.txt");
    let pipeline = PIPELINE.replace("OUTFILE", &out_file.display().to_string());
    let main = bare_repo(dir.path(), &pipeline);
    let work = dir.path().join("work");
    git(&work, &["checkout", "-q", "-b", "feature/login"]);
    git(
        &work,
        &["commit", "-q", "--allow-empty", "-m", "login form"],
    );
    git(&work, &["push", "-q", "origin", "feature/login"]);
    let feature = git(&work, &["rev-parse", "HEAD"]);
    let s = Served::start_in(dir, &config());

    let run = push_hook(&s, "feature/login", &feature);
    assert_eq!(s.wait_finished(run), "succeeded", "{}", s.log());
    assert_eq!(s.stage(run, "test")["status"], "succeeded");
    let skipped = s.stage(run, "production");
    assert_eq!(skipped["status"], "skipped", "{skipped}");
    assert_eq!(
        skipped["note"], "when: branch `feature/login` is not one of main, release/*",
        "{skipped}"
    );
    assert!(
        s.log_text(run)
            .contains("tests pass on feature/login (push)"),
        "{}",
        s.log_text(run)
    );
    assert!(!out_file.exists(), "a feature branch deployed");

    // The same pipeline on main deploys.
    let run = push_hook(&s, "main", &main);
    assert_eq!(
        s.wait_finished(run),
        "succeeded",
        "{}\n{}",
        s.run(run),
        s.log_text(run)
    );
    assert_eq!(s.stage(run, "production")["status"], "succeeded");
    let deploys = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(deploys.lines().collect::<Vec<_>>(), ["deploy 1"]);

    // Asked for by hand, main runs its tests, but the event rule keeps production as it is.
    let r = s.api(
        "POST",
        "/api/projects/hello/trigger",
        "{\"branch\":\"main\"}",
    );
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    let run = r.json()["run"].as_i64().unwrap();
    assert_eq!(s.wait_finished(run), "succeeded", "{}", s.log());
    let skipped = s.stage(run, "production");
    assert_eq!(skipped["status"], "skipped");
    assert_eq!(skipped["note"], "when: event `manual` is not one of push");
    assert!(s.log_text(run).contains("tests pass on main (manual)"));
    let deploys = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(deploys.lines().count(), 1, "{deploys}");
}

#[test]
fn deliveries_other_than_pushes_are_answered_2xx_ignored_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let commit = bare_repo(dir.path(), crate::server::QUICK);
    let s = Served::start_in(dir, &config());
    // Shaped like a push (a `ref` and an `after`) but sent as another event: still not a push.
    let workflow_run = format!(
        "{{\"action\":\"completed\",\"ref\":\"refs/heads/main\",\"after\":\"{commit}\",\"workflow_run\":{{\"head_branch\":\"main\",\"head_sha\":\"{commit}\"}}}}"
    );
    // Reviews and comments carry a pull request's head too, and are not pull request events.
    let review = format!(
        "{{\"action\":\"submitted\",\"number\":2,\"pull_request\":{{\"number\":2,\"head\":{{\"ref\":\"feature/login\",\"sha\":\"{commit}\"}},\"base\":{{\"ref\":\"main\"}}}}}}"
    );
    let note = format!(
        "{{\"object_kind\":\"note\",\"event_type\":\"note\",\"merge_request\":{{\"iid\":1,\"source_branch\":\"feature/login\",\"target_branch\":\"main\",\"last_commit\":{{\"id\":\"{commit}\"}}}}}}"
    );
    let github = |event: &str, body: &str| {
        let sig = Served::github_signature(body.as_bytes());
        s.request(
            "POST",
            "/hooks/hello",
            &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", event)],
            body.as_bytes(),
        )
    };
    let answers = [
        ("workflow_run", github("workflow_run", &workflow_run)),
        (
            "pull_request_review",
            github("pull_request_review", &review),
        ),
        ("issues", github("issues", "{\"action\":\"opened\"}")),
        (
            "Note Hook",
            s.request(
                "POST",
                "/hooks/hello",
                &[
                    ("X-Gitlab-Token", "webhook-secret"),
                    ("X-Gitlab-Event", "Note Hook"),
                ],
                note.as_bytes(),
            ),
        ),
    ];
    for (event, r) in &answers {
        assert_eq!(r.status, 200, "{event}: {}", r.body);
        let v = r.json();
        assert_eq!(v["ignored"], true, "{event}: {}", r.body);
        assert_eq!(v["queued"], false, "{event}: {}", r.body);
        assert_eq!(v["event"], *event);
    }
    // Still signed: a bad signature on another event is refused, as on a push.
    let r = s.request(
        "POST",
        "/hooks/hello",
        &[
            ("X-Hub-Signature-256", "sha256=00"),
            ("X-GitHub-Event", "pull_request"),
        ],
        review.as_bytes(),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(s.runs().is_empty(), "{:?}", s.runs());
    // And the push itself still starts its run.
    assert_eq!(s.wait_finished(push_hook(&s, "main", &commit)), "succeeded");
}

/// A job graph and a matrix through `gantry run`: `package` waits for `compile` only, so it
/// starts (and gets `compile`'s artifact) while `slow` — in the stage before its own — still
/// runs; a 2×2 matrix less one exclusion runs three jobs, each seeing its values; `report`
/// waits for all three.
#[test]
fn a_needs_graph_job_starts_before_its_stage_mates_end_and_a_matrix_runs_each_combination() {
    let f = crate::support::Fixture::new(
        "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: compile
        run: mkdir -p dist && echo built > dist/app.txt
        artifacts: [{ name: app, path: dist/ }]
      - name: slow
        run: sleep 3 && echo slow done
  - name: ship
    jobs:
      - name: package
        needs: [compile]
        run: cat dist/app.txt && echo packaged
      - name: test
        matrix:
          python: [\"3.11\", \"3.12\"]
          os: [debian, alpine]
          exclude:
            - { python: \"3.12\", os: alpine }
        run: echo \"testing python=$python os=$os as $GANTRY_JOB\"
      - name: report
        needs: [test]
        run: echo all tested
",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    let shown = f.show(1);
    let job = |name: &str| crate::support::named(&shown, "jobs", name);
    let (package, slow) = (job("package"), job("slow"));
    assert_eq!(package["status"], "succeeded");
    // Started before its stage-mate of the stage before, `slow`, ended.
    assert!(
        package["started_at"].as_i64().unwrap() < slow["finished_at"].as_i64().unwrap(),
        "package {package}\nslow {slow}"
    );
    assert!(
        package["finished_at"].as_i64().unwrap() < slow["finished_at"].as_i64().unwrap(),
        "package {package}\nslow {slow}"
    );
    let tests: Vec<String> = shown["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["name"].as_str().unwrap().starts_with("test ("))
        .map(|j| {
            assert_eq!(j["status"], "succeeded", "{j}");
            j["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        tests,
        [
            "test (3.11, debian)",
            "test (3.11, alpine)",
            "test (3.12, debian)"
        ]
    );
    let logs = f.run(&["logs", "1"]).stdout;
    assert!(
        logs.contains("built"),
        "package got compile's artifact: {logs}"
    );
    assert!(
        logs.contains("testing python=3.11 os=alpine as test (3.11, alpine)"),
        "{logs}"
    );
    assert!(!logs.contains("python=3.12 os=alpine"), "{logs}");
    // The graph is kept with the run (the run page shows it as "waits for …").
    assert_eq!(package["waits_for"], serde_json::json!(["compile"]));
    let report = job("report");
    assert_eq!(report["waits_for"], serde_json::json!(tests));
    for t in &tests {
        assert!(
            report["started_at"].as_i64().unwrap() >= job(t)["finished_at"].as_i64().unwrap(),
            "report started before {t} ended"
        );
    }
}

/// Rules on jobs: `if:` over the run's variables and `when:`, judged per job; a job that does
/// not apply is skipped with the reason, and so is the job that waits for it.
#[test]
fn jobs_whose_rules_do_not_hold_are_skipped_with_the_reason() {
    let f = crate::support::Fixture::new(
        "//- gantry.yml
stages:
  - name: test
    jobs:
      - name: unit
        run: echo unit on $GANTRY_BRANCH
      - name: main-only
        if: \"$GANTRY_BRANCH == 'main' && $GANTRY_EVENT == 'manual'\"
        run: echo main only
      - name: pushes-only
        when: { event: push }
        run: echo should not run
      - name: after-pushes
        needs: [pushes-only]
        run: echo should not run either
",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    let shown = f.show(1);
    let job = |name: &str| crate::support::named(&shown, "jobs", name);
    assert_eq!(job("unit")["status"], "succeeded");
    assert_eq!(job("main-only")["status"], "succeeded");
    let skipped = job("pushes-only");
    assert_eq!(skipped["status"], "skipped", "{skipped}");
    assert_eq!(skipped["error"], "when: event `manual` is not one of push");
    assert_eq!(job("after-pushes")["status"], "skipped");
    let logs = f.run(&["logs", "1"]).stdout;
    assert!(logs.contains("main only"), "{logs}");
    assert!(!logs.contains("should not run"), "{logs}");
}
