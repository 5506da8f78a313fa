//! Approval gates (issue 17) through the real server: a run holds at an approval stage, without
//! holding a worker, until a deployer approves it (a viewer is refused); a timeout fails the
//! stage; a newer run of the branch at the same gate supersedes the waiting one.

use crate::server_support::{Served, bare_repo, push};
use crate::support::wait_until;
use std::time::Duration;

fn pipeline(timeout: &str) -> String {
    format!(
        "stages:
  - name: build
    jobs:
      - name: compile
        run: echo built
  - name: approve-prod
    approval: {{ roles: [deployer], timeout: {timeout} }}
  - name: ship
    jobs:
      - name: release
        run: echo shipped after approval
"
    )
}

fn config() -> String {
    // One worker: a run waiting for approval must not keep the other project's run waiting.
    "listen = \"127.0.0.1:0\"\n\n[runner]\nconcurrency = 1\n\n[[projects]]\nname = \"hello\"\nrepo = \"hello.git\"\nbranches = [\"main\"]\npoll = \"0s\"\n\n[[projects]]\nname = \"other\"\nrepo = \"other.git\"\nbranches = [\"main\"]\npoll = \"0s\"\n".to_string()
}

fn token(s: &Served, name: &str, role: &str) -> String {
    let r = s.api(
        "POST",
        "/api/tokens",
        &format!("{{\"name\":\"{name}\",\"role\":\"{role}\"}}"),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["token"].as_str().unwrap().to_string()
}

fn trigger(s: &Served, project: &str) -> i64 {
    let r = s.api("POST", &format!("/api/projects/{project}/trigger"), "{}");
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["run"].as_i64().unwrap()
}

fn waiting(s: &Served, run: i64) -> bool {
    let shown = s.run(run);
    let Some(gate) = shown["stages"]
        .as_array()
        .and_then(|st| st.iter().find(|st| st["name"] == "approve-prod"))
    else {
        return false; // Not planned yet.
    };
    gate["status"] == "running"
        && gate["note"]
            .as_str()
            .is_some_and(|n| n.starts_with("waiting for approval"))
}

fn approve(s: &Served, run: i64, token: &str) -> crate::server_support::Response {
    let auth = format!("Bearer {token}");
    s.request(
        "POST",
        &format!("/api/runs/{run}/approve"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    )
}

#[test]
fn an_approval_gate_holds_the_run_until_a_deployer_approves_and_refuses_a_viewer() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), &pipeline("1m"));
    // The second project, without a gate.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    bare_repo(
        &other,
        "stages:\n  - name: t\n    jobs:\n      - name: quick\n        run: echo quick\n",
    );
    std::fs::rename(other.join("hello.git"), dir.path().join("other.git")).unwrap();
    let s = Served::start_in(dir, &config());
    let viewer = token(&s, "watcher", "viewer");
    let deployer = token(&s, "release-manager", "deployer");

    let run = trigger(&s, "hello");
    assert!(
        wait_until(Duration::from_secs(30), || waiting(&s, run)),
        "{}",
        s.run(run)
    );
    let note = s.stage(run, "approve-prod")["note"].clone();
    assert!(note.as_str().unwrap().contains("deployer"), "{note}");
    assert_eq!(s.stage(run, "ship")["status"], "pending");
    // The only worker is free for another project's run while this one waits.
    let quick = trigger(&s, "other");
    assert_eq!(s.wait_finished(quick), "succeeded");
    assert!(waiting(&s, run));

    // A viewer may not approve; the run still waits.
    let r = approve(&s, run, &viewer);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body
            .contains("needs a deployer token; token `watcher` is viewer"),
        "{}",
        r.body
    );
    assert!(waiting(&s, run));

    // A deployer approves, with the CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--server", &s.url, "approve", &run.to_string()])
        .env("GANTRY_TOKEN", &deployer)
        .env_remove("GANTRY_HOME")
        .output()
        .unwrap();
    let out = crate::support::Run::from(out);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains(&format!(
            "approved stage approve-prod of run {run} as release-manager"
        )),
        "{out}"
    );
    assert_eq!(s.wait_finished(run), "succeeded", "{}", s.run(run));
    let gate = s.stage(run, "approve-prod");
    assert_eq!(gate["status"], "succeeded");
    assert!(
        gate["note"]
            .as_str()
            .unwrap()
            .starts_with("approved by release-manager at 20"),
        "{gate}"
    );
    assert_eq!(s.stage(run, "ship")["status"], "succeeded");
    let log = s.api("GET", &format!("/api/runs/{run}/logs"), "").body;
    assert!(log.contains("shipped after approval"), "{log}");
    // Approving again: nothing waits.
    let again = approve(&s, run, &deployer);
    assert_eq!(again.status, 409, "{}", again.body);
}

#[test]
fn an_approval_times_out_and_a_newer_run_supersedes_a_waiting_one() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), &pipeline("2s"));
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    bare_repo(
        &other,
        "stages:\n  - name: t\n    jobs:\n      - name: quick\n        run: echo quick\n",
    );
    std::fs::rename(other.join("hello.git"), dir.path().join("other.git")).unwrap();
    let s = Served::start_in(dir, &config());

    let timed_out = trigger(&s, "hello");
    assert_eq!(s.wait_finished(timed_out), "failed", "{}", s.run(timed_out));
    let gate = s.stage(timed_out, "approve-prod");
    assert_eq!(gate["status"], "failed");
    assert_eq!(gate["note"], "not approved within 2s");
    assert_eq!(s.stage(timed_out, "ship")["status"], "skipped");

    // A longer gate; two runs of main: the second supersedes the first at the gate.
    push(s.dir.path(), &pipeline("1m"), "longer gate");
    let first = trigger(&s, "hello");
    assert!(wait_until(Duration::from_secs(30), || waiting(&s, first)));
    let second = trigger(&s, "hello");
    assert_eq!(s.wait_finished(first), "cancelled", "{}", s.run(first));
    assert_eq!(
        s.stage(first, "approve-prod")["note"],
        format!("superseded by run {second}, which waits at this stage now")
    );
    assert!(wait_until(Duration::from_secs(30), || waiting(&s, second)));
    // Approved from the run's page, by an admin (who may approve what a deployer may).
    crate::browser::runtime().block_on(async {
        let b = crate::browser::Browser::start().await;
        b.login(&s.url, &s.token()).await;
        b.goto(&format!("{}/ui/runs/{second}", s.url)).await;
        assert!(b.exists("#approve").await, "no approve button");
        let said = b.text(".waiting").await;
        assert!(
            said.contains("approve-prod") && said.contains("waiting for approval"),
            "{said}"
        );
        b.click("#approve").await;
        assert!(
            b.wait_js(
                Duration::from_secs(30),
                "return document.getElementById('run-status').textContent.trim() === 'succeeded'"
            )
            .await,
            "the page did not show the run succeeding"
        );
        assert!(!b.exists("#approve").await);
        b.close().await;
    });
    assert_eq!(s.wait_finished(second), "succeeded");
    let gate = s.stage(second, "approve-prod");
    assert!(
        gate["note"].as_str().unwrap().starts_with("approved by "),
        "{gate}"
    );
}
