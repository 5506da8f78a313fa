//! `gantry serve` end to end: polling and webhooks start exactly one run per commit, the API
//! with its tokens and roles, live logs over SSE, shutdown and kill -9.

use crate::server_support::{Served, bare_repo, push, request, sse};
use crate::support::{alive, read_pid, wait_until};
use std::io::BufRead;
use std::time::Duration;

pub const QUICK: &str = "stages:\n  - name: build\n    jobs:\n      - name: hello\n        run: echo hello from $GANTRY_COMMIT\n";

pub fn config(poll: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"hello.git\"\nbranches = [\"main\", \"release/*\"]\npoll = \"{poll}\"\nwebhook_secret_env = \"HELLO_SECRET\"\n\n[runner]\nconcurrency = 2\nkill_grace = \"1s\"\n\n[webhooks]\nmax_body_bytes = 4096\n"
    )
}

fn webhook(s: &Served, commit: &str) -> crate::server_support::Response {
    let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{commit}\"}}");
    let sig = Served::github_signature(body.as_bytes());
    s.request(
        "POST",
        "/hooks/hello",
        &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", "push")],
        body.as_bytes(),
    )
}

#[test]
fn a_pushed_commit_starts_exactly_one_run_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let first = bare_repo(dir.path(), QUICK);
    let s = Served::start_in(dir, &config("200ms"));
    assert!(
        wait_until(Duration::from_secs(30), || s.runs().len() == 1),
        "no run from polling"
    );
    let id = s.runs()[0]["id"].as_i64().unwrap();
    assert_eq!(s.wait_finished(id), "succeeded");
    // More polls see the same head: still one run.
    std::thread::sleep(Duration::from_millis(800));
    let runs = s.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["commit"], first.as_str());
    assert_eq!(runs[0]["trigger"], "poll");

    let second = push(s.dir.path(), QUICK, "second");
    assert!(wait_until(Duration::from_secs(30), || s.runs().len() == 2));
    std::thread::sleep(Duration::from_millis(800));
    let runs = s.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["commit"], second.as_str());
    let log = s
        .api("GET", &format!("/api/runs/{}/logs", runs[0]["id"]), "")
        .json();
    assert!(log["lines"][0]["text"].as_str().unwrap().contains(&second));
}

#[test]
fn a_webhook_delivered_three_times_starts_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let commit = bare_repo(dir.path(), QUICK);
    let mut s = Served::start_in(dir, &config("0s"));
    // Twice in parallel...
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| webhook(&s, &commit));
        let b = scope.spawn(|| webhook(&s, &commit));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 201],
        "one queued, one duplicate: {} / {}",
        a.body,
        b.body
    );
    let id = s.runs()[0]["id"].as_i64().unwrap();
    // The duplicate is answered with the run the first one queued.
    for r in [&a, &b] {
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["run"], id, "{}", r.body);
        assert_eq!(v["queued"], r.status == 201, "{}", r.body);
    }
    assert_eq!(s.wait_finished(id), "succeeded");
    // ...and once after a restart.
    s.stop();
    s.restart();
    let c = webhook(&s, &commit);
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.json()["queued"], false);
    assert_eq!(s.runs().len(), 1);
}

#[test]
fn bad_signatures_get_401_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let commit = bare_repo(dir.path(), QUICK);
    let s = Served::start_in(dir, &config("0s"));
    let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{commit}\"}}");
    let good = Served::github_signature(body.as_bytes());
    let tampered = Served::github_signature(format!("{body} ").as_bytes());
    for headers in [
        vec![],
        vec![("X-Hub-Signature-256", tampered.as_str())],
        vec![("X-Hub-Signature-256", "sha256=nothex")],
        vec![("X-Gitea-Signature", "00ff")],
        vec![("X-Gitlab-Token", "wrong")],
    ] {
        let r = s.request("POST", "/hooks/hello", &headers, body.as_bytes());
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("webhook refused")
        );
    }
    // Too large: 413 before any signature work.
    let big = vec![b'x'; 8192];
    let r = s.request(
        "POST",
        "/hooks/hello",
        &[("X-Hub-Signature-256", &good)],
        &big,
    );
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "too_large", "{}", r.body);
    // Errors before a handler runs have the documented shape too.
    let auth = format!("Bearer {}", s.token());
    let bad_id = s.request("GET", "/api/runs/abc", &[("Authorization", &auth)], b"");
    assert_eq!(bad_id.status, 400, "{}", bad_id.body);
    assert_eq!(
        bad_id.json()["error"]["code"],
        "bad_request",
        "{}",
        bad_id.body
    );
    let bad_json = s.request(
        "POST",
        "/api/tokens",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        b"{not json",
    );
    assert!(
        bad_json.status == 400 || bad_json.status == 422,
        "{}",
        bad_json.body
    );
    assert!(
        bad_json.json()["error"]["message"].is_string(),
        "{}",
        bad_json.body
    );
    // A signed plain payload with an abbreviated commit id: 400, nothing queued.
    let short = format!(
        "{{\"ref\":\"refs/heads/main\",\"after\":\"{}\"}}",
        &commit[..10]
    );
    let short_sig = Served::github_signature(short.as_bytes());
    let r = s.request(
        "POST",
        "/hooks/hello",
        &[("X-Gantry-Signature", short_sig.as_str())],
        short.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a full commit id")
    );
    // Unknown project: 404.
    assert_eq!(
        s.request(
            "POST",
            "/hooks/nope",
            &[("X-Hub-Signature-256", &good)],
            body.as_bytes()
        )
        .status,
        404
    );
    assert!(s.runs().is_empty(), "no run may start");
    let metrics = s.request("GET", "/metrics", &[], b"");
    assert!(
        metrics
            .body
            .contains("gantry_webhook_deliveries_total{result=\"unauthorized\"} 5"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("gantry_queue_depth 0"),
        "{}",
        metrics.body
    );

    // The other senders' forms work.
    let gitlab = s.request(
        "POST",
        "/hooks/hello",
        &[
            ("X-Gitlab-Token", "webhook-secret"),
            ("X-Gitlab-Event", "Push Hook"),
        ],
        body.as_bytes(),
    );
    assert_eq!(gitlab.status, 201, "{}", gitlab.body);
    let gitea_sig = Served::github_signature(body.as_bytes());
    let gitea = s.request(
        "POST",
        "/hooks/hello",
        &[("X-Gitea-Signature", gitea_sig.trim_start_matches("sha256="))],
        body.as_bytes(),
    );
    assert_eq!(
        gitea.status, 200,
        "duplicate of the GitLab delivery: {}",
        gitea.body
    );
    assert_eq!(s.runs().len(), 1);
}

#[test]
fn tokens_and_roles_are_enforced_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), QUICK);
    let s = Served::start_in(dir, &config("0s"));
    let created = s.api(
        "POST",
        "/api/tokens",
        r#"{"name":"reader","role":"viewer"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let viewer = created.json()["token"].as_str().unwrap().to_string();
    let deployer = s
        .api(
            "POST",
            "/api/tokens",
            r#"{"name":"deployer","role":"deployer"}"#,
        )
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let runner = s
        .api(
            "POST",
            "/api/tokens",
            r#"{"name":"runner","role":"runner"}"#,
        )
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let admin = s.token();

    // The OpenAPI document lists exactly the routes of the table.
    let doc = s.request("GET", "/api/openapi.json", &[], b"").json();
    let mut documented: Vec<String> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut table: Vec<String> = gantry_api::ROUTE_TABLE
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    documented.sort();
    table.sort();
    assert_eq!(documented, table);

    for route in gantry_api::ROUTE_TABLE {
        let path = route
            .path
            .replace("{id}", "1")
            .replace("{project}", "hello");
        let probe = |token: Option<&str>| {
            let auth = token.map(|t| format!("Bearer {t}"));
            let mut headers = vec![("Content-Type", "application/json")];
            if let Some(a) = &auth {
                headers.push(("Authorization", a.as_str()));
            }
            request(&s.addr(), route.method, &path, &headers, b"{}").status
        };
        assert_ne!(
            probe(None),
            404,
            "{} {} is not routed",
            route.method,
            route.path
        );
        match route.access {
            gantry_api::routes::Access::Token(role) => {
                assert_eq!(
                    probe(None),
                    401,
                    "{} {} without a token",
                    route.method,
                    route.path
                );
                assert_eq!(
                    probe(Some("gnt_not_a_real_token")),
                    401,
                    "{} {} with a bad token",
                    route.method,
                    route.path
                );
                let weakest_allowed = match role {
                    gantry_model::Role::Viewer => Some(viewer.as_str()),
                    gantry_model::Role::Deployer => Some(deployer.as_str()),
                    gantry_model::Role::Admin => None,
                    gantry_model::Role::Runner => Some(runner.as_str()),
                };
                // A runner token does nothing else; no other token does what it does.
                let (refused, wrong): (&[&str], &str) = match role {
                    gantry_model::Role::Runner => (&[&viewer, &deployer, &admin], "non-runner"),
                    _ => (&[&runner], "runner"),
                };
                for token in refused {
                    assert_eq!(
                        probe(Some(token)),
                        403,
                        "{} {} with a {wrong} token",
                        route.method,
                        route.path
                    );
                }
                if role == gantry_model::Role::Runner {
                } else if role > gantry_model::Role::Viewer {
                    assert_eq!(
                        probe(Some(&viewer)),
                        403,
                        "{} {} with a viewer token",
                        route.method,
                        route.path
                    );
                }
                if role > gantry_model::Role::Deployer && role != gantry_model::Role::Runner {
                    assert_eq!(
                        probe(Some(&deployer)),
                        403,
                        "{} {} with a deployer token",
                        route.method,
                        route.path
                    );
                }
                if let Some(t) = weakest_allowed {
                    let status = probe(Some(t));
                    assert!(
                        status != 401 && status != 403,
                        "{} {} with a {role} token: {status}",
                        route.method,
                        route.path
                    );
                }
            }
            gantry_api::routes::Access::Signature => assert_eq!(probe(None), 401),
            gantry_api::routes::Access::Link => assert_eq!(
                probe(None),
                403,
                "{} {} with a made-up link",
                route.method,
                route.path
            ),
            gantry_api::routes::Access::Public => {
                assert_eq!(probe(None), 200, "{} {}", route.method, route.path)
            }
        }
    }
    // Errors are JSON with a code.
    let r = s.api("GET", "/api/runs/999999", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = s.api("GET", "/api/runs?status=bogus", "");
    assert_eq!(r.status, 400);
}

#[test]
fn live_logs_over_sse_arrive_while_the_job_runs_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("go");
    let pipeline = format!(
        "stages:\n  - name: build\n    jobs:\n      - name: slow\n        run: |\n          echo first line\n          i=0; while [ ! -e {f} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n          echo second line\n",
        f = flag.display()
    );
    bare_repo(dir.path(), &pipeline);
    let s = Served::start_in(dir, &config("0s"));
    let t = s.api("POST", "/api/projects/hello/trigger", "{}");
    assert_eq!(t.status, 201, "{}", t.body);
    let id = t.json()["run"].as_i64().unwrap();

    let mut reader = sse(
        &s.addr(),
        &format!("/api/runs/{id}/logs/stream"),
        &s.token(),
        None,
    );
    let mut line = String::new();
    let mut first_id = None;
    // Read until the first log line; the job is still running (it waits for the flag).
    for _ in 0..200 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(idv) = line.strip_prefix("id: ") {
            first_id = Some(idv.trim().to_string());
        }
        if line.contains("first line") {
            break;
        }
    }
    assert!(line.contains("first line"), "no first line: {line}");
    assert_eq!(
        s.run(id)["run"]["status"],
        "running",
        "the line arrived while the job ran"
    );
    std::fs::write(&flag, "").unwrap();
    let mut rest = String::new();
    for _ in 0..200 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        rest.push_str(&line);
        if rest.contains("event: end") && line.trim().is_empty() {
            break;
        }
    }
    assert!(rest.contains("second line"), "{rest}");
    assert!(
        rest.contains("event: end") && rest.contains("succeeded"),
        "{rest}"
    );

    // Resuming after the first line's id replays only what came after it.
    let mut again = sse(
        &s.addr(),
        &format!("/api/runs/{id}/logs/stream"),
        &s.token(),
        first_id.as_deref(),
    );
    let mut replay = String::new();
    for _ in 0..100 {
        line.clear();
        if again.read_line(&mut line).unwrap() == 0 {
            break;
        }
        replay.push_str(&line);
        if replay.contains("event: end") && line.trim().is_empty() {
            break;
        }
    }
    assert!(
        !replay.contains("\"text\":\"first line\"") && replay.contains("\"text\":\"second line\""),
        "{replay}"
    );
}

#[test]
fn kill_9_of_the_server_mid_run_then_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Outside the server's directory, which holds its data directory: sandboxed steps cannot
    // create files beside it.
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("grandchild");
    let pipeline = format!(
        "stages:\n  - name: build\n    jobs:\n      - name: long\n        run: echo started; sh -c 'sleep 300 & echo $! > {p}; wait'\n",
        p = pidfile.display()
    );
    let commit = bare_repo(dir.path(), &pipeline);
    let mut s = Served::start_in(dir, &config("0s"));
    assert_eq!(webhook(&s, &commit).status, 201);
    let grandchild = read_pid(&pidfile);
    assert!(wait_until(Duration::from_secs(10), || {
        s.api("GET", "/api/runs/1/logs", "").json()["lines"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    }));
    s.kill9();
    s.restart();
    let d = s.run(1);
    assert_eq!(d["run"]["status"], "interrupted");
    assert_eq!(d["jobs"][0]["status"], "interrupted");
    assert!(
        wait_until(Duration::from_secs(5), || !alive(grandchild)),
        "step process outlived the server"
    );
    let logs = s.api("GET", "/api/runs/1/logs", "").json();
    assert_eq!(
        logs["lines"][0]["text"], "started",
        "logs before the kill are kept"
    );
    // The same delivery again does not duplicate the run.
    assert_eq!(webhook(&s, &commit).status, 200);
    assert_eq!(s.runs().len(), 1);
}

#[test]
fn sigterm_cancels_runs_still_running_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "stages:\n  - name: build\n    jobs:\n      - name: long\n        run: echo started; sleep 300\n";
    bare_repo(dir.path(), pipeline);
    let cfg = config("0s").replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n",
    );
    let mut s = Served::start_in(dir, &cfg);
    let id = s.trigger_and_wait_for_output();
    s.stop();
    s.restart();
    let d = s.run(id);
    assert_eq!(d["run"]["status"], "cancelled", "{d}");
    assert_eq!(d["jobs"][0]["status"], "cancelled");
}

#[test]
fn cancel_rerun_and_the_cli_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), QUICK);
    let s = Served::start_in(dir, &config("0s"));
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .current_dir(s.dir.path())
            .env("GANTRY_HOME", s.data())
            .env_remove("GANTRY_SERVER")
            .env_remove("GANTRY_TOKEN")
            .output()
            .unwrap();
        crate::support::Run::from(out)
    };
    let t = cli(&["trigger", "hello"]);
    assert_eq!(t.code, 0, "{t}");
    assert!(t.stdout.contains("queued run 1 of hello"), "{t}");
    assert_eq!(s.wait_finished(1), "succeeded");
    let runs = cli(&["--server", &s.url, "runs"]);
    assert!(
        runs.stdout.contains("succeeded") && runs.stdout.contains("hello"),
        "{runs}"
    );
    let logs = cli(&["--server", &s.url, "logs", "-f", "1"]);
    assert_eq!(logs.code, 0, "{logs}");
    assert!(logs.stdout.contains("hello | hello from"), "{logs}");
    let rerun = s.api("POST", "/api/runs/1/rerun", "");
    assert_eq!(rerun.status, 201, "{}", rerun.body);
    assert_eq!(s.wait_finished(2), "succeeded");
    let c = s.api("POST", "/api/runs/1/cancel", "");
    assert_eq!(
        c.status, 409,
        "a finished run cannot be cancelled: {}",
        c.body
    );
    let token = cli(&["token", "create", "--name", "ci", "--role", "viewer"]);
    assert_eq!(token.code, 0, "{token}");
    assert!(token.stdout.trim().starts_with("gnt_"));
}

#[test]
fn a_newer_commit_supersedes_a_queued_older_run_and_cancel_reaches_a_claimed_run() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("go");
    let pipeline = format!(
        "stages:\n  - name: build\n    jobs:\n      - name: wait\n        run: i=0; while [ ! -e {f} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n",
        f = flag.display()
    );
    let first = bare_repo(dir.path(), &pipeline);
    let cfg = config("0s").replace("concurrency = 2", "concurrency = 1");
    let s = Served::start_in(dir, &cfg);
    assert_eq!(webhook(&s, &first).status, 201);
    assert!(wait_until(
        Duration::from_secs(10),
        || s.run(1)["run"]["status"] == "running"
    ));
    let second = push(s.dir.path(), &pipeline, "second");
    let third = push(s.dir.path(), &pipeline, "third");
    assert_eq!(webhook(&s, &second).status, 201);
    assert_eq!(webhook(&s, &third).status, 201);
    let two = s.run(2);
    assert_eq!(two["run"]["status"], "cancelled");
    assert!(
        two["run"]["error"]
            .as_str()
            .unwrap()
            .contains("superseded by run 3"),
        "{two}"
    );
    std::fs::write(&flag, "").unwrap();
    assert_eq!(s.wait_finished(1), "succeeded");
    assert_eq!(s.wait_finished(3), "succeeded");
    // The CLI cancels a queued run too.
    let fourth = push(
        s.dir.path(),
        "stages:\n  - name: a\n    jobs:\n      - name: x\n        run: sleep 300\n",
        "fourth",
    );
    assert_eq!(webhook(&s, &fourth).status, 201);
    assert!(wait_until(
        Duration::from_secs(10),
        || s.run(4)["run"]["status"] == "running"
    ));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["cancel", "4"])
        .env("GANTRY_HOME", s.data())
        .env_remove("GANTRY_SERVER")
        .env_remove("GANTRY_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.wait_finished(4), "cancelled");
}

#[test]
fn the_poller_does_not_rerun_a_commit_a_webhook_queued_and_interrupted_runs_can_be_requeued() {
    let dir = tempfile::tempdir().unwrap();
    // Outside the server's directory, which holds its data directory (see above).
    let scratch = tempfile::tempdir().unwrap();
    let pidfile = scratch.path().join("pid");
    let pipeline = format!(
        "stages:\n  - name: a\n    jobs:\n      - name: x\n        run: echo $$ > {p}; sleep 300\n",
        p = pidfile.display()
    );
    let commit = bare_repo(dir.path(), &pipeline);
    let cfg = config("0s").replace(
        "[webhooks]",
        "[queue]\nrequeue_interrupted = true\n\n[webhooks]",
    );
    let mut s = Served::start_in(dir, &cfg);
    assert_eq!(webhook(&s, &commit).status, 201);
    let step = read_pid(&pidfile);
    s.kill9();
    std::fs::remove_file(&pidfile).unwrap();
    // Restart with polling on: the commit the webhook queued is not queued again by the poller,
    // but the interrupted run is re-queued once, as configured.
    std::fs::write(
        s.dir.path().join("gantry.toml"),
        cfg.replace("poll = \"0s\"", "poll = \"200ms\""),
    )
    .unwrap();
    s.restart();
    assert!(wait_until(Duration::from_secs(5), || !alive(step)));
    assert!(wait_until(Duration::from_secs(20), || s.runs().len() == 2));
    std::thread::sleep(Duration::from_millis(800));
    let runs = s.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1]["status"], "interrupted");
    assert_eq!(runs[0]["trigger"], "requeue");
    assert_eq!(runs[0]["commit"], commit.as_str());
}

#[test]
fn sigterm_lets_a_running_step_finish_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "stages:\n  - name: build\n    jobs:\n      - name: short\n        run: echo started; sleep 1; echo done\n";
    bare_repo(dir.path(), pipeline);
    let cfg = config("0s").replace(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nshutdown_grace = \"20s\"\n",
    );
    let mut s = Served::start_in(dir, &cfg);
    let id = s.trigger_and_wait_for_output();
    s.stop();
    s.restart();
    let d = s.run(id);
    assert_eq!(d["run"]["status"], "succeeded", "{d}");
    let logs = s.api("GET", &format!("/api/runs/{id}/logs"), "").json();
    assert_eq!(logs["lines"][1]["text"], "done");
    let metrics = s.request("GET", "/metrics", &[], b"").body;
    assert!(
        metrics.contains("gantry_runs{status=\"succeeded\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_failed_run_is_diagnosed_and_notified() {
    use std::io::{BufRead, BufReader, Read, Write};
    // A notification receiver on 127.0.0.1: takes one request, answers 200, hands over the request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
    let receiver = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            head.push_str(&line);
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        tx.send((head, String::from_utf8(body).unwrap())).unwrap();
    });

    let dir = tempfile::tempdir().unwrap();
    let pipeline = "stages:\n  - name: test\n    jobs:\n      - name: unit\n        run: |\n          echo 'test tests::adds ... FAILED'\n          echo 'test result: FAILED. 0 passed; 1 failed'\n          exit 101\n";
    let commit = bare_repo(dir.path(), pipeline);
    let cfg = format!(
        "{}\n[[notify]]\nurl = \"http://127.0.0.1:{port}/hook\"\non = [\"failed\"]\nsecret_env = \"HELLO_SECRET\"\n",
        config("0s")
    );
    let s = Served::start_in(dir, &cfg);
    assert_eq!(webhook(&s, &commit).status, 201);
    assert_eq!(s.wait_finished(1), "failed");
    let (head, body) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a notification");
    receiver.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "run.failed");
    assert_eq!(v["run"]["id"], 1);
    assert_eq!(v["diagnosis"]["category"], "test-failure");
    assert_eq!(v["diagnosis"]["failing_tests"][0], "tests::adds");
    assert!(v["url"].as_str().unwrap().ends_with("/api/runs/1"));
    let sig = Served::github_signature(body.as_bytes());
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("x-gantry-signature: {sig}")),
        "{head}"
    );
    // The same diagnosis is attached to the run in the API.
    assert!(wait_until(
        Duration::from_secs(10),
        || s.run(1)["diagnosis"]["diagnosis"]["category"] == "test-failure"
    ));
    let d = s.api("GET", "/api/runs/1/diagnosis", "").json();
    assert_eq!(d["diagnosis"]["category"], "test-failure");
}

/// `[retention] logs`: a finished run's log lines go after that age (the run stays, with its
/// steps), and `gantry logs` says why there is nothing to show.
#[test]
fn log_retention_removes_old_runs_logs_and_says_so() {
    let f = crate::support::Fixture::new(
        "//- gantry.yml\nstages:\n  - name: build\n    jobs:\n      - name: say\n        run: echo a line to forget\n",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(f.logs(1, "say").contains("a line to forget"));
    let _server = Served::start_with_data(
        "listen = \"127.0.0.1:0\"\n[retention]\ninterval = \"200ms\"\nlogs = \"1ms\"\n",
        &f.data(),
    );
    let gone = || {
        let out = f.run(&["logs", "1"]);
        out.code == 0 && !out.stdout.contains("a line to forget")
    };
    assert!(
        wait_until(Duration::from_secs(20), gone),
        "the log is still there"
    );
    let out = f.run(&["logs", "1"]);
    assert!(
        out.stderr
            .contains("run 1's log was removed by log retention ([retention] logs)"),
        "{out}"
    );
    // The run and its job are still there.
    assert_eq!(crate::support::job_status(&f.show(1), "say"), "succeeded");
}
