//! What forges start (issue 17): pushed tags (by webhook and by poll, once across a restart)
//! and pull / merge requests (GitHub's, Gitea's and GitLab's documented sample payloads),
//! through the real server and a real repository.

use crate::server_support::{Served, bare_repo, run_git as git};
use crate::support::wait_until;
use std::time::Duration;

const PIPELINE: &str = "stages:
  - name: test
    jobs:
      - name: unit
        run: mkdir -p dist && echo \"saw event=$GANTRY_EVENT tag=$GANTRY_TAG pr=$GANTRY_PR $GANTRY_PR_HEAD into $GANTRY_PR_BASE fork=$GANTRY_PR_FORK token=${DEPLOY_TOKEN:-none}\" | tee dist/report
        artifacts:
          - name: app
            path: dist/
      - name: publish
        secrets: [DEPLOY_TOKEN]
        allow_failure: true
        run: test -n \"$DEPLOY_TOKEN\" && echo token given
  - name: production
    when: { tag: \"v*\" }
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

/// A project watching main and the `v*` tags, with a secrets file in `secrets_dir` (apart from
/// where the deploys write: steps may not reach the secrets file's directory).
fn config(secrets_dir: &std::path::Path, poll: &str) -> String {
    let secrets = secrets_dir.join("secrets.env");
    std::fs::write(&secrets, "DEPLOY_TOKEN=s3cr3t-value\n").unwrap();
    format!(
        "listen = \"127.0.0.1:0\"\nsecrets_file = \"{}\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"hello.git\"\nbranches = [\"main\"]\ntags = [\"v*\"]\npoll = \"{poll}\"\nwebhook_secret_env = \"HELLO_SECRET\"\n",
        secrets.display()
    )
}

fn github(s: &Served, event: &str, body: &str) -> crate::server_support::Response {
    let sig = Served::github_signature(body.as_bytes());
    s.request(
        "POST",
        "/hooks/hello",
        &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", event)],
        body.as_bytes(),
    )
}

#[test]
fn a_watched_tag_deploys_with_gantry_tag_and_an_unwatched_one_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let out_file = scratch.path().join("deploys.txt");
    let main = bare_repo(
        dir.path(),
        &PIPELINE.replace("OUTFILE", &out_file.display().to_string()),
    );
    let work = dir.path().join("work");
    git(&work, &["tag", "-a", "-m", "first release", "v1.0.0"]);
    git(&work, &["tag", "nightly"]);
    git(&work, &["push", "-q", "origin", "v1.0.0", "nightly"]);
    let tag_object = git(&work, &["rev-parse", "v1.0.0"]);
    assert_ne!(tag_object, main, "an annotated tag is an object of its own");
    let s = Served::start_in(dir, &config(secrets.path(), "0s"));

    // GitHub sends the tag object's id for an annotated tag: the run is of its commit.
    let push = |git_ref: &str, after: &str| {
        let body = format!("{{\"ref\":\"{git_ref}\",\"after\":\"{after}\"}}");
        github(&s, "push", &body)
    };
    let r = push("refs/tags/v1.0.0", &tag_object);
    assert_eq!(r.status, 201, "{}", r.body);
    let run = r.json()["run"].as_i64().unwrap();
    assert_eq!(
        s.wait_finished(run),
        "succeeded",
        "{}\n{}",
        s.run(run),
        s.log_text(run)
    );
    let shown = s.run(run);
    assert_eq!(shown["run"]["event"], "tag", "{shown}");
    assert_eq!(shown["run"]["commit"], main.as_str());
    assert_eq!(shown["run"]["vars"]["GANTRY_TAG"], "v1.0.0", "{shown}");
    assert!(shown["run"]["branch"].is_null(), "{shown}");
    assert!(
        s.log_text(run).contains("saw event=tag tag=v1.0.0 pr="),
        "{}",
        s.log_text(run)
    );
    assert_eq!(s.stage(run, "production")["status"], "succeeded");
    let deploys = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(deploys.lines().collect::<Vec<_>>(), ["deploy 1"]);

    // Delivered again: the same run. A tag the project does not watch: nothing.
    let again = push("refs/tags/v1.0.0", &tag_object);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["run"], run);
    let nightly = push("refs/tags/nightly", &main);
    assert_eq!(nightly.status, 200, "{}", nightly.body);
    assert_eq!(nightly.json()["queued"], false);
    assert!(
        nightly.json()["reason"]
            .as_str()
            .unwrap()
            .contains("tag `nightly` not watched"),
        "{}",
        nightly.body
    );
    // A push to main runs its tests; production, for tags only, is skipped with the reason.
    let r = push("refs/heads/main", &main);
    assert_eq!(r.status, 201, "{}", r.body);
    let run = r.json()["run"].as_i64().unwrap();
    assert_eq!(s.wait_finished(run), "succeeded");
    assert_eq!(
        s.stage(run, "production")["note"],
        "when: the run is not of a tag (wants v*)"
    );
    assert_eq!(s.runs().len(), 2, "{:?}", s.runs());
}

#[test]
fn a_poll_runs_each_new_tag_once_even_across_a_restart_and_not_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let out_file = scratch.path().join("deploys.txt");
    bare_repo(
        dir.path(),
        &PIPELINE.replace("OUTFILE", &out_file.display().to_string()),
    );
    let work = dir.path().join("work");
    // Tagged before gantry ever looked: taken as seen, not deployed.
    git(&work, &["tag", "v0.9.0"]);
    git(&work, &["push", "-q", "origin", "v0.9.0"]);
    let mut s = Served::start_in(dir, &config(secrets.path(), "1s"));
    let seen_file = s.data().join("poll/hello.tags");
    assert!(
        wait_until(Duration::from_secs(30), || seen_file.is_file()),
        "the first poll did not record the tags: {}",
        s.log()
    );
    let tag_runs = |s: &Served| -> Vec<serde_json::Value> {
        s.runs()
            .into_iter()
            .filter(|r| r["event"] == "tag")
            .collect()
    };
    git(&work, &["commit", "-q", "--allow-empty", "-m", "release"]);
    git(&work, &["tag", "v1.0.0"]);
    git(&work, &["push", "-q", "origin", "main", "v1.0.0"]);
    assert!(
        wait_until(Duration::from_secs(30), || !tag_runs(&s).is_empty()),
        "no run of the new tag: {}",
        s.log()
    );
    let first = tag_runs(&s)[0]["id"].as_i64().unwrap();
    assert_eq!(s.wait_finished(first), "succeeded");

    // Down while v1.1.0 is pushed; up again: v1.1.0 runs once, v1.0.0 and v0.9.0 do not.
    s.stop();
    git(&work, &["tag", "v1.1.0"]);
    git(&work, &["push", "-q", "origin", "v1.1.0"]);
    s.restart();
    assert!(
        wait_until(Duration::from_secs(30), || tag_runs(&s).len() == 2),
        "v1.1.0 did not run after the restart: {:?}",
        tag_runs(&s)
    );
    let runs = tag_runs(&s);
    for r in &runs {
        s.wait_finished(r["id"].as_i64().unwrap());
    }
    // A few more polls: still two.
    std::thread::sleep(Duration::from_secs(3));
    let mut tags: Vec<String> = tag_runs(&s)
        .iter()
        .map(|r| r["vars"]["GANTRY_TAG"].as_str().unwrap().to_string())
        .collect();
    tags.sort();
    assert_eq!(tags, ["v1.0.0", "v1.1.0"]);
    let deploys = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(deploys.lines().count(), 2, "{deploys}");
}

/// A documented sample payload, with the commit, numbers and branches of this test.
fn sample(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../gantry-api/src/hooks/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_pull_request_runs_its_head_without_secrets_from_a_fork_and_never_deploys() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let out_file = scratch.path().join("deploys.txt");
    bare_repo(
        dir.path(),
        &PIPELINE
            .replace("OUTFILE", &out_file.display().to_string())
            // Deploys on every event but pull requests, which a deploy stage must name.
            .replace("    when: { tag: \"v*\" }\n", ""),
    );
    let work = dir.path().join("work");
    // The forge publishes a pull request's head in the base repository, a fork's too.
    git(&work, &["checkout", "-q", "-b", "feature/login"]);
    git(
        &work,
        &["commit", "-q", "--allow-empty", "-m", "login form"],
    );
    let head = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/pull/7/head"]);
    let s = Served::start_in(dir, &config(secrets.path(), "0s"));

    // Gitea's sample is of a fork's pull request.
    let mut gitea = sample("gitea-pull_request-opened.json");
    gitea["number"] = 7.into();
    gitea["pull_request"]["number"] = 7.into();
    gitea["pull_request"]["base"]["ref"] = "main".into();
    gitea["pull_request"]["head"]["ref"] = "feature/login".into();
    gitea["pull_request"]["head"]["sha"] = head.as_str().into();
    let body = gitea.to_string();
    let sig = Served::github_signature(body.as_bytes());
    let r = s.request(
        "POST",
        "/hooks/hello",
        &[
            ("X-Gitea-Signature", sig.trim_start_matches("sha256=")),
            ("X-Gitea-Event", "pull_request"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let run = r.json()["run"].as_i64().unwrap();
    let fork_run = run;
    assert_eq!(s.wait_finished(run), "succeeded", "{}", s.log_text(run));
    let shown = s.run(run);
    assert_eq!(shown["run"]["event"], "pull_request");
    assert_eq!(shown["run"]["commit"], head.as_str());
    let log = s.log_text(run);
    assert!(
        log.contains(
            "saw event=pull_request tag= pr=7 feature/login into main fork=true token=none"
        ),
        "{log}"
    );
    assert!(!log.contains("s3cr3t-value"), "{log}");
    let publish = s.job(run, "publish");
    assert_eq!(publish["status"], "failed", "{publish}");
    assert!(
        publish["error"].as_str().unwrap_or_default().contains(
            "secret `DEPLOY_TOKEN` is withheld: this run is of a pull request from a fork"
        ),
        "{publish}"
    );
    let production = s.stage(run, "production");
    assert_eq!(production["status"], "skipped", "{production}");
    assert_eq!(
        production["note"],
        "a deploy stage does not run for a pull request unless its when: names event pull_request"
    );
    assert!(!out_file.exists(), "a pull request deployed");

    // GitHub's sample, the same repository's branch: secrets given, still no deploy.
    git(
        &work,
        &["commit", "-q", "--allow-empty", "-m", "review fixes"],
    );
    let head2 = git(&work, &["rev-parse", "HEAD"]);
    git(
        &work,
        &["push", "-q", "-f", "origin", "HEAD:refs/pull/7/head"],
    );
    let mut gh = sample("github-pull_request-opened.json");
    gh["action"] = "synchronize".into();
    gh["number"] = 7.into();
    gh["pull_request"]["base"]["ref"] = "main".into();
    gh["pull_request"]["head"]["ref"] = "feature/login".into();
    gh["pull_request"]["head"]["sha"] = head2.as_str().into();
    let r = github(&s, "pull_request", &gh.to_string());
    assert_eq!(r.status, 201, "{}", r.body);
    let run = r.json()["run"].as_i64().unwrap();
    assert_eq!(s.wait_finished(run), "succeeded", "{}", s.log_text(run));
    assert_eq!(s.job(run, "publish")["status"], "succeeded");
    assert!(s.log_text(run).contains("fork=false"));
    assert_eq!(s.stage(run, "production")["status"], "skipped");
    assert!(!out_file.exists(), "a pull request deployed");

    // GitLab's sample; then a closed one, and one into a branch nobody watches.
    let mut gl = sample("gitlab-merge_request-open.json");
    gl["object_attributes"]["iid"] = 7.into();
    gl["object_attributes"]["target_branch"] = "main".into();
    gl["object_attributes"]["last_commit"]["id"] = head.as_str().into();
    let gitlab = |body: &serde_json::Value| {
        s.request(
            "POST",
            "/hooks/hello",
            &[
                ("X-Gitlab-Token", "webhook-secret"),
                ("X-Gitlab-Event", "Merge Request Hook"),
            ],
            body.to_string().as_bytes(),
        )
    };
    let r = gitlab(&gl);
    // The Gitea delivery ran this commit of this pull request already.
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["run"], fork_run);
    gl["object_attributes"]["action"] = "close".into();
    let r = gitlab(&gl);
    assert_eq!(
        (r.status, r.json()["ignored"].clone()),
        (200, true.into()),
        "{}",
        r.body
    );
    gh["pull_request"]["base"]["ref"] = "gh-pages".into();
    let r = github(&s, "pull_request", &gh.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.json()["reason"].as_str().unwrap().contains("not watched"),
        "{}",
        r.body
    );
    assert_eq!(s.runs().len(), 2, "{:?}", s.runs());
}

#[test]
fn gantry_trigger_var_gives_the_run_variables_a_rerun_keeps_and_refuses_gantrys_own() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    bare_repo(
        dir.path(),
        "stages:\n  - name: test\n    jobs:\n      - name: unit\n        env: { VERSION: from-the-file }\n        run: echo \"version=$VERSION note=$NOTE event=$GANTRY_EVENT\"\n",
    );
    let s = Served::start_in(dir, &config(secrets.path(), "0s"));
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .current_dir(s.config_dir())
            .env("GANTRY_HOME", s.data())
            .env_remove("GANTRY_SERVER")
            .env_remove("GANTRY_TOKEN")
            .output()
            .unwrap();
        crate::support::Run::from(out)
    };
    let t = cli(&[
        "trigger",
        "hello",
        "--var",
        "VERSION=1.2.3",
        "--var",
        "NOTE=a = b",
        "--json",
    ]);
    assert_eq!(t.code, 0, "{t}");
    let run = serde_json::from_str::<serde_json::Value>(&t.stdout).unwrap()["run"]
        .as_i64()
        .unwrap();
    assert_eq!(s.wait_finished(run), "succeeded");
    // Over the pipeline's own `env`, as a person asking for this run means.
    assert!(
        s.log_text(run)
            .contains("version=1.2.3 note=a = b event=manual"),
        "{}",
        s.log_text(run)
    );
    assert_eq!(s.run(run)["run"]["vars"]["VERSION"], "1.2.3");
    let rerun = s.api("POST", &format!("/api/runs/{run}/rerun"), "");
    assert_eq!(rerun.status, 201, "{}", rerun.body);
    let again = rerun.json()["run"].as_i64().unwrap();
    assert_eq!(s.wait_finished(again), "succeeded");
    assert!(s.log_text(again).contains("version=1.2.3 note=a = b"));

    // Nobody may pretend a run is of a tag or of a fork's pull request, by CLI or API.
    for (args, said) in [
        (
            &["--var", "GANTRY_PR_FORK=false"][..],
            "is gantry's own variable",
        ),
        (&["--var", "NOVALUE"][..], "is not NAME=value"),
        (&["--var", "9X=1"][..], "is not a variable name"),
    ] {
        let r = cli(&[&["trigger", "hello"][..], args].concat());
        assert_eq!(r.code, 2, "{r}");
        assert!(r.stderr.contains(said), "{said}: {r}");
    }
    let r = s.api(
        "POST",
        "/api/projects/hello/trigger",
        "{\"vars\":{\"GANTRY_TAG\":\"v9\"}}",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("`GANTRY_TAG` is gantry's own variable"),
        "{}",
        r.body
    );
    assert_eq!(s.runs().len(), 2);
}
