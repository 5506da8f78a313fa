//! Deployments with the example service (`examples/hello/hello.py`) behind gantry's router: a
//! real `gantry serve` sharing the data directory of `gantry run`, real service processes, real
//! HTTP through the router on 127.0.0.1. Broken versions are made the way they are in life: a
//! commit that changes the service's code.

use crate::server_support::{Served, release_processes};
use crate::support::{Fixture, Load, Run, alive, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const HELLO: &str = include_str!("../../../../examples/hello/hello.py");

/// How the committed service behaves.
#[derive(Clone, Copy)]
pub enum Service {
    Healthy,
    /// `/healthz` answers 500.
    Unhealthy,
    /// Healthy, then exits (code 7) half a second after each start.
    CrashesSoon,
    /// Healthy, but `/` answers 500.
    Errors,
    /// Healthy, but `/` takes 600 ms.
    Slow,
}

fn service_source(kind: Service) -> String {
    let root = r#"            self.answer(200, f"hello from {version()}\n")"#;
    assert!(
        HELLO.contains(root),
        "hello.py's `/` handler moved; update this test"
    );
    match kind {
        Service::Errors => HELLO.replace(root, r#"            self.answer(500, "oops\n")"#),
        Service::Slow => HELLO.replace(
            root,
            &format!("            __import__(\"time\").sleep(0.6)\n{root}"),
        ),
        Service::Healthy => HELLO.to_string(),
        Service::Unhealthy => {
            let broken = HELLO.replace(
                r#"self.answer(200, "ok\n")"#,
                r#"self.answer(500, "broken\n")"#,
            );
            assert_ne!(broken, HELLO, "the health handler moved; update this test");
            broken
        }
        Service::CrashesSoon => {
            let marker = "    server = Server(";
            assert!(HELLO.contains(marker), "hello.py changed; update this test");
            HELLO.replace(
                marker,
                &format!("    import threading\n    threading.Timer(0.5, lambda: os._exit(7)).start()\n{marker}"),
            )
        }
    }
}

pub use crate::support::free_port;

/// The pipeline: package `dist/` as the artifact `app`; environment `production` runs it
/// behind a router on `port`. `extra` adds lines to the environment (indented 4).
pub fn pipeline(version: &str, port: u16, extra: &str, deploy_stage: bool) -> String {
    let stage = if deploy_stage {
        "  - name: ship\n    deploy:\n      environment: production\n      artifact: app\n"
    } else {
        ""
    };
    format!(
        r#"name: hello
env:
  APP_VERSION: "{version}"
stages:
  - name: build
    jobs:
      - name: package
        run: |
          mkdir -p dist
          cp hello.py dist/hello
          chmod +x dist/hello
          echo "$APP_VERSION" > dist/VERSION
        artifacts:
          - name: app
            path: dist/
{stage}environments:
  production:
    target:
      process:
        command: ./dist/hello --port $PORT
    health:
      http: /healthz
      timeout: 8s
      interval: 100ms
{bake}    router:
      listen: 127.0.0.1:{port}
{extra}"#,
        bake = if extra.contains("bake:") {
            ""
        } else {
            "    bake: 2s\n"
        },
    )
}

pub fn spec(version: &str, port: u16, extra: &str, kind: Service, deploy_stage: bool) -> String {
    format!(
        "//- gantry.yml\n{}//- hello.py\n{}",
        pipeline(version, port, extra, deploy_stage),
        service_source(kind)
    )
}

/// A repository of the service, a server sharing its data directory, and the router's port.
pub struct Env {
    pub fx: Fixture,
    pub server: Served,
    pub port: u16,
    /// Lines added to the environment in every commit.
    pub extra: String,
    /// Runs made so far (run ids count from 1).
    runs: i64,
    /// The release's command, when not `./dist/hello --port $PORT`.
    pub command: Option<String>,
}

impl Env {
    pub fn new() -> Self {
        Self::with("")
    }

    pub fn with(extra: &str) -> Self {
        let port = free_port();
        let fx = Fixture::new(&spec("v0", port, extra, Service::Healthy, false));
        let server = Served::start_with_data("listen = \"127.0.0.1:0\"\n", &fx.data());
        Env {
            fx,
            server,
            port,
            extra: extra.to_string(),
            runs: 0,
            command: None,
        }
    }

    pub fn router(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Commits version `version` of kind `kind` and builds it; returns the run id.
    pub fn build(&mut self, version: &str, kind: Service) -> i64 {
        let mut file = spec(version, self.port, &self.extra, kind, false);
        if let Some(c) = &self.command {
            file = file.replace(
                "command: ./dist/hello --port $PORT",
                &format!("command: {c}"),
            );
        }
        self.fx.commit(&file, &format!("version {version}"));
        let out = self.fx.run(&["run"]);
        assert_eq!(out.code, 0, "building {version}: {out}");
        self.runs += 1;
        self.runs
    }

    pub fn gantry(&self, args: &[&str]) -> Run {
        self.fx.run(args)
    }

    pub fn deploy(&self, run: i64, extra: &[&str]) -> Run {
        let run = run.to_string();
        let mut args = vec!["deploy", "production", "--artifact", "app", "--run", &run];
        args.extend_from_slice(extra);
        self.gantry(&args)
    }

    pub fn deploy_ok(&self, run: i64) {
        let out = self.deploy(run, &[]);
        assert_eq!(
            out.code,
            0,
            "deploy of run {run}: {out}\nserver log:\n{}",
            self.server.log()
        );
    }

    pub fn releases(&self) -> Vec<serde_json::Value> {
        let out = self.gantry(&["releases", "production", "--json"]);
        assert_eq!(out.code, 0, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|h| h["release"].clone())
            .collect()
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.gantry(&["status", "production", "--json"]);
        assert_eq!(out.code, 0, "{out}");
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// What the router answers on `/` (the version), or why not.
    pub fn serving(&self) -> String {
        serving_at(&self.router())
    }
}

/// What `addr` answers on `/` (the version), or why not.
pub fn serving_at(addr: &str) -> String {
    match get(addr, "/") {
        Ok((200, body, _)) => body.trim().trim_start_matches("hello from ").to_string(),
        Ok((status, body, _)) => format!("HTTP {status}: {body}"),
        Err(e) => format!("error: {e}"),
    }
}

/// `GET path` through `addr` with a fresh connection: (status, body, x-gantry-release).
pub fn get(addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {head:?}")))?;
    let release = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-gantry-release:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((status, body.to_string(), release))
}

pub fn states(releases: &[serde_json::Value]) -> Vec<(i64, String)> {
    let mut v: Vec<(i64, String)> = releases
        .iter()
        .map(|r| {
            (
                r["number"].as_i64().unwrap(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn deploy_rollback_and_forward_keep_a_growing_history() {
    let mut env = Env::with("    keep: 3\n");
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v1);
    assert_eq!(env.serving(), "v1");
    env.deploy_ok(v2);
    assert_eq!(env.serving(), "v2");

    let out = env.gantry(&["rollback", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("rolled back to release 1"), "{out}");
    assert_eq!(env.serving(), "v1");
    // Forward again: v2 can still be chosen.
    let out = env.gantry(&["rollback", "production", "--to", "2"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(env.serving(), "v2");

    let releases = env.releases();
    assert_eq!(
        states(&releases),
        vec![
            (1, "superseded".into()),
            (2, "rolled-back".into()),
            (3, "rolled-back".into()),
            (4, "live".into())
        ]
    );
    assert_eq!(releases[0]["kind"], "rollback");
    assert_eq!(releases[0]["source"], 2);
    assert_eq!(releases[1]["source"], 1);
    // Who and which run are recorded.
    assert_eq!(releases[3]["run_id"], v1);
    assert!(releases[3]["created_by"].as_str().unwrap().contains("cli"));
    let table = env.gantry(&["releases", "production"]);
    assert!(table.stdout.contains("rolled-back"), "{table}");

    let status = env.status();
    assert_eq!(status["live"]["number"], 4);
    assert_eq!(status["health"], "healthy", "{status}");
    assert_eq!(status["previous"]["number"], 1, "{status}");
    assert!(status["uptime_ms"].as_u64().is_some());
}

#[test]
fn an_unhealthy_release_is_refused_and_the_live_one_keeps_serving() {
    let mut env = Env::new();
    let v1 = env.build("v1", Service::Healthy);
    let bad = env.build("v2", Service::Unhealthy);
    env.deploy_ok(v1);
    let out = env.deploy(bad, &[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("failed its health check"), "{out}");
    assert!(out.stderr.contains("GET /healthz -> 500"), "{out}");
    assert_eq!(env.serving(), "v1");
    let releases = env.releases();
    assert_eq!(
        states(&releases),
        vec![(1, "live".into()), (2, "failed".into())]
    );
    assert!(releases[0]["reason"].as_str().unwrap().contains("500"));
    // Its directory is gone and its pin released: it cannot be rolled back to.
    assert!(!releases[0]["retired_at"].is_null());
    let out = env.gantry(&["rollback", "production", "--to", "2"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("never served healthily"), "{out}");

    // `gantry why production` (and plain `gantry why`, the newest failure) explains it.
    for args in [&["why", "production"][..], &["why"]] {
        let out = env.gantry(args);
        assert_eq!(out.code, 0, "{out}");
        assert!(
            out.stdout.contains("release 2 of hello/production failed"),
            "{out}"
        );
        assert!(out.stdout.contains("health-check:"), "{out}");
        assert!(out.stdout.contains("GET /healthz -> 500"), "{out}");
        assert!(out.stdout.contains("changed since release 1"), "{out}");
        assert!(
            out.stdout.contains("version v2"),
            "the commit between: {out}"
        );
    }
    let out = env.gantry(&["why", "production", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["diagnosis"]["category"], "health-check");
    assert_eq!(v["compared_to"]["number"], 1);
}

#[test]
fn a_release_that_keeps_crashing_after_the_switch_is_rolled_back_by_itself() {
    let mut env = Env::with("    keep: 3\n");
    let v1 = env.build("v1", Service::Healthy);
    let crashing = env.build("v2", Service::CrashesSoon);
    env.deploy_ok(v1);
    // It passes its health check, takes traffic, then crashes during the bake.
    let out = env.deploy(crashing, &["--wait"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("crashed"), "{out}");
    assert_eq!(env.serving(), "v1");
    let releases = env.releases();
    assert_eq!(
        states(&releases),
        vec![
            (1, "superseded".into()),
            (2, "failed".into()),
            (3, "live".into())
        ]
    );
    let failed = releases.iter().find(|r| r["number"] == 2).unwrap();
    assert!(
        failed["reason"].as_str().unwrap().contains("crashed"),
        "{failed}"
    );
    assert_eq!(releases[0]["kind"], "rollback");
    assert!(
        releases[0]["created_by"]
            .as_str()
            .unwrap()
            .contains("automatic")
    );
    // The crashes were recorded with the exit status.
    let out = env.gantry(&["releases", "production", "--events"]);
    assert!(out.stdout.contains("exited with code 7"), "{out}");
}

#[test]
fn a_second_deploy_is_refused_while_one_holds_the_lock() {
    let mut env = Env::new();
    let v1 = env.build("v1", Service::Healthy);
    let slow = env.build("v2", Service::Unhealthy);
    env.deploy_ok(v1);
    let first = env
        .fx
        .gantry(&[
            "deploy",
            "production",
            "--artifact",
            "app",
            "--run",
            &slow.to_string(),
        ])
        .spawn()
        .unwrap();
    let first_pid = first.id() as i32;
    assert!(
        wait_until(Duration::from_secs(20), || env.status()["lock"].is_object()),
        "the first deploy never took the lock"
    );
    let out = env.deploy(v1, &["--force"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("locked by another deployment"), "{out}");
    assert!(
        out.stderr.contains(&format!("deploy of app (run {slow})")),
        "{out}"
    );
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!alive(first_pid));
    // Released: the next deploy goes ahead.
    assert!(env.status()["lock"].is_null());
    assert_eq!(env.serving(), "v1");
}

#[test]
fn an_outdated_deploy_is_refused_without_force() {
    let mut env = Env::new();
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v2);
    let out = env.deploy(v1, &[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("outdated"), "{out}");
    assert!(
        out.stderr.contains("ancestors") || out.stderr.contains("older"),
        "{out}"
    );
    assert!(out.stderr.contains("--force"), "{out}");
    assert_eq!(env.serving(), "v2");
    let out = env.deploy(v1, &["--force"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(env.serving(), "v1");
}

#[test]
fn kill_9_during_a_deployment_then_restart_leaves_a_consistent_environment() {
    let mut env = Env::new();
    let v1 = env.build("v1", Service::Healthy);
    let slow = env.build("v2", Service::Unhealthy);
    env.deploy_ok(v1);
    let mut deploying = env
        .fx
        .gantry(&[
            "deploy",
            "production",
            "--artifact",
            "app",
            "--run",
            &slow.to_string(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the new release's process runs beside the live one's, so that there is
    // something of the interrupted deployment to stop.
    assert!(wait_until(Duration::from_secs(20), || {
        env.releases().iter().any(|r| r["state"] == "deploying")
            && release_processes(&env.fx.data()).len() >= 2
    }));
    let services_before = release_processes(&env.fx.data());
    assert!(services_before.len() >= 2, "{services_before:?}");
    env.server.kill9();
    let _ = deploying.wait();
    env.server.restart();
    // The live release was adopted as it ran (nothing new started); what the interrupted
    // deployment started was stopped.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = release_processes(&env.fx.data());
            !now.is_empty()
                && now.iter().all(|p| services_before.contains(p))
                && services_before.iter().any(|p| !alive(*p))
        }),
        "before {services_before:?}, now {:?}",
        release_processes(&env.fx.data())
    );
    assert_eq!(env.serving(), "v1");
    let releases = env.releases();
    assert_eq!(
        states(&releases),
        vec![(1, "live".into()), (2, "interrupted".into())]
    );
    assert!(
        releases[0]["reason"]
            .as_str()
            .unwrap()
            .contains("gantry stopped")
    );
    let status = env.status();
    assert!(status["lock"].is_null(), "the lock was released: {status}");
    assert_eq!(status["health"], "healthy");
    // The environment takes deployments again.
    let v3 = env.build("v3", Service::Healthy);
    env.deploy_ok(v3);
    assert_eq!(env.serving(), "v3");
}

#[test]
fn no_request_fails_through_deploys_automatic_and_manual_rollbacks() {
    // Automatic rollbacks of both kinds: a release that never becomes healthy (no traffic ever
    // reaches it) and one that crashes after traffic switched to it (requests it drops are
    // sent again to the previous release, which still runs).
    let mut env = Env::with("    keep: 3\n");
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    let bad = env.build("v3", Service::Unhealthy);
    let v4 = env.build("v4", Service::Healthy);
    let crashing = env.build("v5", Service::CrashesSoon);
    env.deploy_ok(v1);

    let load = Load::start(env.router(), 2);
    assert!(load.more(50));
    env.deploy_ok(v2); // deploy
    assert_eq!(env.serving(), "v2");
    assert_eq!(env.deploy(bad, &[]).code, 1); // automatic rollback: the bad one never serves
    assert_eq!(env.serving(), "v2");
    assert_eq!(env.gantry(&["rollback", "production"]).code, 0); // manual rollback
    assert_eq!(env.serving(), "v1");
    env.deploy_ok(v4);
    // Serves, then crashes twice during its bake: rolled back by itself, after the switch.
    let out = env.deploy(crashing, &["--wait"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(env.serving(), "v4");
    // Back to v1, which no longer runs (only live and previous do): started again, checked,
    // then switched to.
    let out = env.gantry(&["rollback", "production", "--to", "1"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(env.serving(), "v1");
    assert!(load.more(50));
    let (ok, failed, failures) = load.finish();
    println!("load through the router: {ok} requests succeeded, {failed} failed");
    assert_eq!(failed, 0, "failed requests: {failures:?}");
    assert!(ok > 100);
}

#[test]
fn a_pipeline_deploy_stage_deploys_its_own_artifact_through_the_server() {
    let port = free_port();
    let fx = Fixture::new(&spec("v1", port, "", Service::Healthy, true));
    // No server yet: the run fails at the deploy stage, saying how to start one.
    let out = fx.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    let shown = fx.show(1);
    let ship = shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ship")
        .unwrap()
        .clone();
    assert_eq!(ship["status"], "failed", "{shown}");
    assert!(
        ship["note"].as_str().unwrap().contains("gantry serve"),
        "{ship}"
    );

    let server = Served::start_with_data("listen = \"127.0.0.1:0\"\n", &fx.data());
    let out = fx.run(&["run"]);
    assert_eq!(out.code, 0, "{out}\n{}", server.log());
    let addr = format!("127.0.0.1:{port}");
    let (status, body, release) = get(&addr, "/").unwrap();
    assert_eq!(
        (status, body.trim(), release.as_str()),
        (200, "hello from v1", "1")
    );

    // A commit that breaks the health check fails its run; v1 keeps serving.
    fx.commit(
        &spec("v2", port, "", Service::Unhealthy, true),
        "break healthz",
    );
    let out = fx.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    let shown = fx.show(3);
    let ship = shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ship")
        .unwrap()
        .clone();
    assert_eq!(ship["status"], "failed");
    assert!(
        ship["note"].as_str().unwrap().contains("health check"),
        "{ship}"
    );
    assert_eq!(get(&addr, "/").unwrap().1.trim(), "hello from v1");
    drop(server);
}

#[test]
fn retention_never_removes_the_artifact_of_a_kept_release() {
    let mut env = Env::with("    keep: 2\n");
    let runs: Vec<i64> = (1..=4)
        .map(|i| env.build(&format!("v{i}"), Service::Healthy))
        .collect();
    for r in &runs {
        env.deploy_ok(*r);
    }
    // Aggressive: keep no run's artifacts and nothing by age.
    let out = env.gantry(&["gc", "--keep-runs", "0", "--keep-younger-than", "1ms"]);
    assert_eq!(out.code, 0, "{out}");
    let releases = env.releases();
    let kept: Vec<&serde_json::Value> = releases
        .iter()
        .filter(|r| r["retired_at"].is_null())
        .collect();
    assert_eq!(kept.len(), 2, "{releases:?}");
    for r in kept {
        let digest = r["digest"].as_str().unwrap();
        let hex = digest.trim_start_matches("sha256:");
        let object = env
            .fx
            .data()
            .join("artifacts/objects/sha256")
            .join(&hex[..2])
            .join(hex);
        assert!(
            object.is_file(),
            "the artifact of kept release {} was removed",
            r["number"]
        );
    }
    // And the kept previous release can be rolled back to.
    assert_eq!(env.gantry(&["rollback", "production"]).code, 0);
    assert_eq!(env.serving(), "v3");
}

#[test]
fn a_command_target_runs_the_users_scripts_with_the_release_variables() {
    let port = free_port();
    let pipeline = pipeline("v1", port, "", false).replace(
        "    target:\n      process:\n        command: ./dist/hello --port $PORT\n    health:\n      http: /healthz\n",
        "    target:\n      command:\n        deploy: echo \"deploy $GANTRY_RELEASE $GANTRY_DIGEST prev=$GANTRY_PREVIOUS_RELEASE\" >> \"$OUT\"; cat \"$GANTRY_ARTIFACT/dist/VERSION\" >> \"$OUT\"\n        rollback: echo \"rollback to $GANTRY_RELEASE\" >> \"$OUT\"\n        env:\n          OUT: OUTFILE\n    health:\n      command: test -f dist/hello\n",
    )
    .replace("    router:\n      listen: 127.0.0.1:", "    # no router: ");
    let fx = Fixture::new(&format!("//- gantry.yml\n{pipeline}//- hello.py\n{HELLO}"));
    let out_file = fx.scratch().join("deploys.txt");
    let pipeline2 = pipeline.replace("OUTFILE", &out_file.display().to_string());
    fx.commit(&format!("//- gantry.yml\n{pipeline2}"), "out file");
    let server = Served::start_with_data("listen = \"127.0.0.1:0\"\n", &fx.data());
    assert_eq!(fx.run(&["run"]).code, 0);
    fx.commit(
        &format!("//- gantry.yml\n{}", pipeline2.replace("\"v1\"", "\"v2\"")),
        "v2",
    );
    assert_eq!(fx.run(&["run"]).code, 0);
    for run in ["1", "2"] {
        let out = fx.run(&["deploy", "production", "--artifact", "app", "--run", run]);
        assert_eq!(out.code, 0, "{out}\n{}", server.log());
    }
    let out = fx.run(&["rollback", "production"]);
    assert_eq!(out.code, 0, "{out}");
    let text = std::fs::read_to_string(&out_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("deploy 1 sha256:") && lines[0].ends_with("prev="),
        "{text}"
    );
    assert_eq!(lines[1], "v1");
    assert!(
        lines[2].starts_with("deploy 2 sha256:") && lines[2].ends_with("prev=1"),
        "{text}"
    );
    assert_eq!(lines[3], "v2");
    assert_eq!(lines[4], "rollback to 3", "{text}");
    drop(server);
}

#[test]
fn a_failed_deployment_is_sent_to_the_deploy_failed_webhooks_with_its_diagnosis() {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream);
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
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        tx.send(String::from_utf8(body).unwrap()).unwrap();
    });
    let port_router = free_port();
    let fx = Fixture::new(&spec("v1", port_router, "", Service::Healthy, false));
    let server = Served::start_with_data(
        &format!(
            "listen = \"127.0.0.1:0\"\n[[notify]]\nurl = \"http://127.0.0.1:{port}/hook\"\non = [\"deploy-failed\"]\n"
        ),
        &fx.data(),
    );
    assert_eq!(fx.run(&["run"]).code, 0);
    fx.commit(
        &spec("v2", port_router, "", Service::Unhealthy, false),
        "v2",
    );
    assert_eq!(fx.run(&["run"]).code, 0);
    assert_eq!(
        fx.run(&["deploy", "production", "--artifact", "app", "--run", "1"])
            .code,
        0
    );
    assert_eq!(
        fx.run(&["deploy", "production", "--artifact", "app", "--run", "2"])
            .code,
        1
    );
    let body = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a notification");
    receiver.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "deploy.failed");
    assert_eq!(v["release"]["number"], 2);
    assert_eq!(v["diagnosis"]["category"], "health-check");
    drop(server);
}

/// `gantry stop production` stops the environment on purpose: the router stops listening and
/// no release process is left; a restart of the server leaves it stopped; the next deploy
/// starts it again.
#[test]
fn an_environment_stopped_on_purpose_stays_stopped_until_the_next_deploy() {
    let mut env = Env::new();
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v1);
    assert_eq!(env.serving(), "v1");
    let out = env.gantry(&["stop", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("hello/production stopped by"), "{out}");
    assert!(env.serving().starts_with("error:"), "{}", env.serving());
    assert!(
        wait_until(Duration::from_secs(10), || release_processes(
            &env.fx.data()
        )
        .is_empty()),
        "release processes left: {:?}",
        release_processes(&env.fx.data())
    );
    let events = env.gantry(&["releases", "production", "--events"]);
    assert!(events.stdout.contains("stopped"), "{events}");

    env.server.stop();
    env.server.restart();
    assert!(
        env.server
            .log()
            .contains("hello/production: stopped on purpose (gantry stop); not started"),
        "{}",
        env.server.log()
    );
    assert!(env.serving().starts_with("error:"), "{}", env.serving());
    assert!(release_processes(&env.fx.data()).is_empty());

    env.deploy_ok(v2);
    assert_eq!(env.serving(), "v2");
    // Stopped again, a rollback starts the previous release and serves it.
    assert_eq!(env.gantry(&["stop", "production"]).code, 0);
    let out = env.gantry(&["rollback", "production"]);
    assert_eq!(out.code, 0, "{out}\n{}", env.server.log());
    assert_eq!(env.serving(), "v1");
}
