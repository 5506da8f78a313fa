//! Commit statuses back to the forge (issue 17), against a recording server on 127.0.0.1 in
//! the forge's place: pending then success or failure, per commit, with a link to the run;
//! retried when the forge fails, never failing the run.

use crate::recorder::Recorder;
use crate::server_support::{Served, bare_repo, push};
use crate::support::wait_until;
use std::time::Duration;

const TOKEN: &str = "tok-7b1e3c-never-logged";

fn config(api: &str, forge: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"hello.git\"\nbranches = [\"main\"]\npoll = \"0s\"\nwebhook_secret_env = \"HELLO_SECRET\"\nstatus = {{ forge = \"{forge}\", api_url = \"{api}\", repo = \"acme/hello\", token_env = \"STATUS_TOKEN\" }}\n"
    )
}

fn push_hook(s: &Served, commit: &str) -> i64 {
    let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{commit}\"}}");
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

/// The states the forge took for `commit` (answered 2xx), in order.
fn states(forge: &Recorder, commit: &str) -> Vec<String> {
    forge
        .seen()
        .iter()
        .filter(|r| r.path.ends_with(commit) && r.answered < 300)
        .map(|r| r.body["state"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn a_run_posts_pending_then_success_or_failure_per_commit_with_a_link_retrying_a_failing_forge() {
    // The forge fails the first post: it is tried again.
    let forge = Recorder::start(&[502]);
    let dir = tempfile::tempdir().unwrap();
    let good = bare_repo(
        dir.path(),
        "stages:\n  - name: test\n    jobs:\n      - name: unit\n        run: echo fine\n",
    );
    let s = Served::start_in_env(
        dir,
        &config(&forge.url(), "github"),
        &[("STATUS_TOKEN", TOKEN)],
    );
    let run = push_hook(&s, &good);
    assert_eq!(s.wait_finished(run), "succeeded");
    assert!(
        wait_until(Duration::from_secs(30), || states(&forge, &good).len() == 3),
        "{:?}\n{}",
        forge.seen(),
        s.log()
    );
    assert_eq!(states(&forge, &good), ["pending", "pending", "success"]);
    let seen = forge.seen();
    assert_eq!(seen[0].answered, 502, "{seen:?}");
    assert_eq!(
        seen[1].body, seen[0].body,
        "the failed post was tried again"
    );
    let ok: Vec<_> = seen.iter().filter(|r| r.answered < 300).collect();
    for r in &ok {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, format!("/repos/acme/hello/statuses/{good}"));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.body["context"], "gantry");
        assert_eq!(r.body["target_url"], format!("{}/ui/runs/{run}", s.url));
    }
    assert_eq!(ok[0].body["description"], "gantry: queued");
    assert_eq!(ok[1].body["description"], "gantry: running");
    assert_eq!(ok[2].body["description"], "gantry: succeeded");

    // A failing commit: pending, then failure, for that commit.
    let bad = push(
        s.dir.path(),
        "stages:\n  - name: test\n    jobs:\n      - name: unit\n        run: exit 3\n",
        "break it",
    );
    let run = push_hook(&s, &bad);
    assert_eq!(s.wait_finished(run), "failed");
    assert!(
        wait_until(Duration::from_secs(30), || states(&forge, &bad).len() == 3),
        "{:?}",
        forge.seen()
    );
    assert_eq!(states(&forge, &bad), ["pending", "pending", "failure"]);
    assert_eq!(
        states(&forge, &good).len(),
        3,
        "the first commit's statuses stand"
    );
    assert!(!s.log().contains(TOKEN), "the token reached the log");
}

#[test]
fn a_forge_that_is_down_never_fails_the_run_and_is_logged() {
    // Every post refused with 503: four tries each, then a warning.
    let forge = Recorder::start(&[503; 40]);
    let dir = tempfile::tempdir().unwrap();
    let commit = bare_repo(
        dir.path(),
        "stages:\n  - name: test\n    jobs:\n      - name: unit\n        run: echo fine\n",
    );
    let s = Served::start_in_env(
        dir,
        &config(&forge.url(), "gitlab"),
        &[("STATUS_TOKEN", TOKEN)],
    );
    let run = push_hook(&s, &commit);
    assert_eq!(s.wait_finished(run), "succeeded", "{}", s.log());
    assert!(
        wait_until(Duration::from_secs(40), || s
            .log()
            .contains("commit status not posted after 4 tries")),
        "{}",
        s.log()
    );
    let seen = forge.seen();
    assert!(seen.len() >= 4, "{seen:?}");
    // GitLab's form: the project's path escaped, its token header.
    assert_eq!(
        seen[0].path,
        format!("/projects/acme%2Fhello/statuses/{commit}")
    );
    assert_eq!(seen[0].header("private-token"), Some(TOKEN));
    assert_eq!(seen[0].body["state"], "pending");
    assert!(!s.log().contains(TOKEN));
}

#[test]
fn a_status_token_that_is_not_set_stops_the_server_from_starting_saying_where() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), crate::server::QUICK);
    std::fs::write(
        dir.path().join("gantry.toml"),
        config("http://127.0.0.1:9", "gitea"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["serve", "--config", "gantry.toml"])
        .current_dir(dir.path())
        .env("HELLO_SECRET", "webhook-secret")
        .env_remove("STATUS_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("gantry.toml:9:")
            && err.contains("status.token_env names `STATUS_TOKEN`, which is not set"),
        "{err}"
    );
}
