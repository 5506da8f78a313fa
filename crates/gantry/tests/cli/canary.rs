//! Canaries through the real router: the example service's releases, users named by a header,
//! real traffic on 127.0.0.1, the server's analysis deciding. Every loop is bounded; every
//! traffic thread stops before the test ends.

use crate::deploy::{Env, Service, states};
use crate::support::wait_until;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// `GET /` with headers; (status, x-gantry-release).
pub fn get_with(addr: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let release = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-gantry-release:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((status, release))
}

/// Clients sending requests as `users` (and some as `alice`) until stopped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    pub fn start(addr: String, users: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|t| {
                let (stop, sent, addr) = (stop.clone(), sent.clone(), addr.clone());
                std::thread::spawn(move || {
                    for i in 0..200_000usize {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let user = if i % 10 == 0 {
                            "alice".to_string()
                        } else {
                            format!("user-{}", (i * 2 + t) % users)
                        };
                        let _ = get_with(&addr, &[("X-User", &user)]);
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            sent,
            threads,
        }
    }

    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

const STEPS: &str = "    strategy:
      canary:
        users: { header: X-User, allow: [alice] }
        steps:
          - weight: 0
            pause: 1s
          - weight: 10
            pause: 1s
          - weight: 50
            pause: 1s
        analysis:
          max_error_rate: 0.05
          max_p99_ms: 300
          min_requests: 10
          deadline: 3s
";

pub const APPROVAL: &str = "    strategy:
      canary:
        users: { header: X-User, allow: [alice] }
        steps:
          - approval: true
          - weight: 10
          - approval: true
        analysis:
          min_requests: 0
";

/// v1 live (blue/green: the first release has nothing to compare with), v2 built.
pub fn with_v1_live(extra: &str, v2: Service) -> (Env, i64) {
    let mut env = Env::with(extra);
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", v2);
    env.deploy_ok(v1);
    assert_eq!(env.serving(), "v1");
    (env, v2)
}

fn events(env: &Env) -> String {
    env.gantry(&["releases", "production", "--events"]).stdout
}

#[test]
fn a_healthy_canary_walks_every_step_to_everyone() {
    let (env, v2) = with_v1_live(STEPS, Service::Healthy);
    let traffic = Traffic::start(env.router(), 500);
    let out = env.deploy(v2, &["--wait"]);
    let sent = traffic.stop();
    assert_eq!(out.code, 0, "{out}\n{}", events(&env));
    assert!(out.stdout.contains("passed its 3 canary steps"), "{out}");
    assert_eq!(env.serving(), "v2");
    assert_eq!(
        states(&env.releases()),
        vec![(1, "superseded".into()), (2, "live".into())]
    );
    let log = events(&env);
    for step in [
        "step 1 of 3",
        "step 2 of 3: the router sends 10%",
        "step 3 of 3: the router sends 50%",
        "passed analysis",
    ] {
        assert!(log.contains(step), "missing `{step}`:\n{log}");
    }
    assert!(sent > 30, "{sent}");
}

#[test]
fn a_canary_answering_5xx_is_aborted_and_stable_is_untouched() {
    let (env, v2) = with_v1_live(STEPS, Service::Errors);
    let stable_pid = env.status()["pid"].clone();
    let traffic = Traffic::start(env.router(), 500);
    let out = env.deploy(v2, &["--wait"]);
    traffic.stop();
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("5xx rate"), "{out}");
    assert_eq!(env.serving(), "v1");
    let status = env.status();
    assert_eq!(status["live"]["number"], 1);
    assert_eq!(
        status["pid"], stable_pid,
        "the stable release was not restarted"
    );
    assert!(status["canary"].is_null());
    let releases = env.releases();
    assert_eq!(
        states(&releases),
        vec![(1, "live".into()), (2, "failed".into())]
    );
    assert!(releases[0]["reason"].as_str().unwrap().contains("5xx rate"));
    // Everyone, alice included, is back on stable.
    assert_eq!(
        get_with(&env.router(), &[("X-User", "alice")]).unwrap().1,
        "1"
    );
    // `gantry why production`, and the API, say it was the canary's numbers.
    let out = env.gantry(&["why", "production"]);
    assert!(out.stdout.contains("canary-analysis:"), "{out}");
    assert!(out.stdout.contains("5xx rate"), "{out}");
    let r = env.server.api(
        "GET",
        "/api/projects/hello/environments/production/diagnosis",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["diagnosis"]["category"], "canary-analysis");
}

#[test]
fn a_slow_canary_is_aborted_on_its_p99() {
    let (env, v2) = with_v1_live(STEPS, Service::Slow);
    let traffic = Traffic::start(env.router(), 500);
    let out = env.deploy(v2, &["--wait"]);
    traffic.stop();
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("p99 latency"), "{out}");
    assert!(out.stderr.contains("max_p99_ms 300"), "{out}");
    assert_eq!(env.serving(), "v1");
}

#[test]
fn a_canary_without_traffic_is_never_promoted() {
    let (env, v2) = with_v1_live(STEPS, Service::Healthy);
    let out = env.deploy(v2, &["--wait"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("no verdict by the deadline"), "{out}");
    assert!(out.stderr.contains("fewer than min_requests 10"), "{out}");
    assert_eq!(env.serving(), "v1");
    assert_eq!(
        states(&env.releases()),
        vec![(1, "live".into()), (2, "failed".into())]
    );
}

#[test]
fn named_users_the_forcing_header_stickiness_and_the_share_through_the_router() {
    let (env, v2) = with_v1_live(APPROVAL, Service::Healthy);
    let out = env.deploy(v2, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("is a canary"), "{out}");
    // Its first line says so too: a canary is not "live" (issue: hardening).
    let first = out.stdout.lines().next().unwrap_or("");
    assert!(
        first.contains("is a canary") && !first.contains("is live"),
        "{out}"
    );
    let router = env.router();
    // The first approval, at 0%: only alice and forced requests reach the canary.
    assert!(wait_until(Duration::from_secs(10), || {
        env.status()["canary"]["state"] == "waiting-approval"
    }));
    assert_eq!(get_with(&router, &[("X-User", "alice")]).unwrap().1, "2");
    assert_eq!(get_with(&router, &[("X-User", "bob")]).unwrap().1, "1");
    assert_eq!(
        get_with(
            &router,
            &[("X-User", "bob"), ("X-Gantry-Release", "canary")]
        )
        .unwrap()
        .1,
        "2"
    );
    assert_eq!(
        get_with(
            &router,
            &[("X-User", "alice"), ("X-Gantry-Release", "stable")]
        )
        .unwrap()
        .1,
        "1"
    );
    // Promote to the 10% step, which waits for the second approval.
    let out = env.gantry(&["promote", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(wait_until(Duration::from_secs(10), || {
        env.status()["canary"]["percent"] == 10
            && env.status()["canary"]["state"] == "waiting-approval"
    }));
    // 10,000 distinct users: 10% within 1.5 points.
    let canary = (0..10_000)
        .filter(|i| {
            get_with(&router, &[("X-User", &format!("visitor-{i}"))])
                .unwrap()
                .1
                == "2"
        })
        .count();
    assert!(
        (850..=1_150).contains(&canary),
        "{canary} of 10,000 on the canary"
    );
    // Each user stays on one side across 100 requests.
    for u in 0..20 {
        let user = format!("sticky-{u}");
        let first = get_with(&router, &[("X-User", &user)]).unwrap().1;
        for _ in 0..100 {
            assert_eq!(
                get_with(&router, &[("X-User", &user)]).unwrap().1,
                first,
                "{user} moved"
            );
        }
    }
    let status = env.status();
    assert!(
        status["canary"]["canary"]["requests"].as_u64().unwrap() > 500,
        "{status}"
    );
    // /metrics has the router's counters per release.
    let metrics = env.server.request("GET", "/metrics", &[], b"");
    assert!(
        metrics.body.contains("gantry_router_requests_total{project=\"hello\",environment=\"production\",release=\"2\",role=\"canary\"}"),
        "{}",
        metrics.body
    );
    // Everyone to the canary.
    let out = env.gantry(&["promote", "production", "--full"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(wait_until(Duration::from_secs(10), || env.status()["live"]
        ["number"]
        == 2));
    assert_eq!(get_with(&router, &[("X-User", "bob")]).unwrap().1, "2");
}

#[test]
fn abort_wins_and_a_second_abort_is_a_no_op() {
    let (env, v2) = with_v1_live(APPROVAL, Service::Healthy);
    assert_eq!(env.deploy(v2, &[]).code, 0);
    assert!(wait_until(Duration::from_secs(10), || {
        env.status()["canary"]["state"] == "waiting-approval"
    }));
    let out = env.gantry(&["abort", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("aborted"), "{out}");
    let out = env.gantry(&["abort", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("nothing to abort"), "{out}");
    assert_eq!(
        get_with(&env.router(), &[("X-User", "alice")]).unwrap().1,
        "1"
    );
    let releases = env.releases();
    assert_eq!(
        states(&releases),
        vec![(1, "live".into()), (2, "failed".into())]
    );
    assert!(
        releases[0]["reason"]
            .as_str()
            .unwrap()
            .contains("canary aborted")
    );
    // Nothing left to promote.
    assert_eq!(env.gantry(&["promote", "production"]).code, 1);
}

#[test]
fn a_firing_alarm_aborts_a_canary_and_rolls_back_a_release_in_its_bake() {
    let (mut env, v2) = with_v1_live(APPROVAL, Service::Healthy);
    assert_eq!(env.deploy(v2, &[]).code, 0);
    assert!(wait_until(Duration::from_secs(10), || {
        env.status()["canary"]["state"] == "waiting-approval"
    }));
    let alertmanager = r#"{"version":"4","status":"firing","receiver":"gantry","alerts":[{"status":"firing","labels":{"alertname":"HighErrorRate","severity":"page"}}]}"#;
    let r = env
        .server
        .api("POST", "/api/environments/production/alarm", alertmanager);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("aborting the canary"), "{}", r.body);
    assert!(wait_until(Duration::from_secs(10), || {
        env.status()["canary"].is_null()
    }));
    let releases = env.releases();
    assert!(
        releases[0]["reason"]
            .as_str()
            .unwrap()
            .contains("alarm HighErrorRate"),
        "{:?}",
        releases[0]
    );
    assert_eq!(env.serving(), "v1");
    // Without a token the alarm is refused.
    let r = env.server.request(
        "POST",
        "/api/environments/production/alarm",
        &[],
        br#"{"status":"firing","name":"x"}"#,
    );
    assert_eq!(r.status, 401);

    // Blue/green with a long bake: a plain alarm during the bake rolls back.
    env.extra = "    bake: 30s\n".into();
    let v3 = env.build("v3", Service::Healthy);
    let out = env.deploy(v3, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(env.serving(), "v3");
    let r = env.server.api(
        "POST",
        "/api/environments/production/alarm?project=hello",
        r#"{"status":"firing","name":"checkout-5xx"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("rolling back the release in its bake"),
        "{}",
        r.body
    );
    assert!(wait_until(Duration::from_secs(10), || env.serving() == "v1"));
    let releases = env.releases();
    let failed = releases.iter().find(|r| r["number"] == 3).unwrap();
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("alarm checkout-5xx fired during the bake"),
        "{failed}"
    );
    // A resolved alarm does nothing.
    let r = env.server.api(
        "POST",
        "/api/environments/production/alarm",
        r#"{"status":"resolved","name":"checkout-5xx"}"#,
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("nothing firing"), "{}", r.body);
    // The project in the path: only that project's environment hears it.
    let r = env.server.api(
        "POST",
        "/api/projects/hello/environments/production/alarm",
        r#"{"status":"firing","name":"late"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("hello/production"), "{}", r.body);
    let r = env.server.api(
        "POST",
        "/api/projects/other/environments/production/alarm",
        r#"{"status":"firing","name":"late"}"#,
    );
    assert_eq!(r.status, 404, "{}", r.body);
}

/// A pipeline deploying in waves to eu, us and ap (routers on `ports`); `us_health` is us's
/// health path.
fn waves_pipeline(version: &str, ports: [u16; 3], us_health: &str) -> String {
    let env = |name: &str, port: u16, health: &str| {
        format!(
            "  {name}:\n    target:\n      process:\n        command: ./dist/hello --port $PORT\n    health:\n      http: {health}\n      timeout: 3s\n      interval: 100ms\n    router:\n      listen: 127.0.0.1:{port}\n"
        )
    };
    format!(
        "name: hello\nenv:\n  APP_VERSION: \"{version}\"\nstages:\n  - name: build\n    jobs:\n      - name: package\n        run: mkdir -p dist && cp hello.py dist/hello && chmod +x dist/hello && echo \"$APP_VERSION\" > dist/VERSION\n        artifacts:\n          - name: app\n            path: dist/\n  - name: ship\n    deploy:\n      environments: [eu, us, ap]\n      artifact: app\n      bake: 1s\nenvironments:\n{}{}{}",
        env("eu", ports[0], "/healthz"),
        env("us", ports[1], us_health),
        env("ap", ports[2], "/healthz"),
    )
}

#[test]
fn waves_go_in_order_and_stop_at_the_failing_wave() {
    let ports = [
        crate::deploy::free_port(),
        crate::deploy::free_port(),
        crate::deploy::free_port(),
    ];
    let hello = include_str!("../../../../examples/hello/hello.py");
    let fx = crate::support::Fixture::new(&format!(
        "//- gantry.yml\n{}//- hello.py\n{hello}",
        waves_pipeline("v1", ports, "/healthz")
    ));
    let server =
        crate::server_support::Served::start_with_data("listen = \"127.0.0.1:0\"\n", &fx.data());
    let out = fx.run(&["run"]);
    assert_eq!(out.code, 0, "{out}\n{}", server.log());
    let version = |port: u16| {
        crate::deploy::get(&format!("127.0.0.1:{port}"), "/")
            .map(|(_, body, _)| body.trim().to_string())
            .unwrap_or_else(|e| format!("error: {e}"))
    };
    for p in ports {
        assert_eq!(version(p), "hello from v1");
    }
    // v2 breaks us's health check: eu gets v2, us stays on v1, ap is not touched.
    fx.commit(
        &format!(
            "//- gantry.yml\n{}",
            waves_pipeline("v2", ports, "/missing")
        ),
        "v2, with a wrong health path for us",
    );
    let out = fx.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(version(ports[0]), "hello from v2");
    assert_eq!(version(ports[1]), "hello from v1");
    assert_eq!(version(ports[2]), "hello from v1");
    let shown = fx.show(2);
    let ship = shown["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ship")
        .unwrap()
        .clone();
    let note = ship["note"].as_str().unwrap();
    assert!(
        note.contains("eu: release 2 of eu is live and baked for 1s"),
        "{note}"
    );
    assert!(note.contains("us: deployment failed"), "{note}");
    assert!(!note.contains("ap:"), "{note}");
    let ap = fx.run(&["releases", "ap", "--json"]);
    let ap: serde_json::Value = serde_json::from_str(&ap.stdout).unwrap();
    assert_eq!(
        ap.as_array().unwrap().len(),
        1,
        "ap has only its v1 release"
    );
    drop(server);
}

/// Two projects with an environment named alike, both in their bake: an alarm without the
/// project is refused (409) naming both and touches neither; the project in the path rolls
/// back that project alone.
#[test]
fn an_alarm_naming_no_project_is_refused_when_two_projects_share_the_environment_name() {
    let bake = "    bake: 60s\n";
    let mut env = Env::with(bake);
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v1);
    // The second project: another repository, the same server and data directory.
    let port = crate::support::free_port();
    let other_spec = |version: &str| {
        crate::deploy::spec(version, port, bake, Service::Healthy, false)
            .replace("name: hello", "name: other")
    };
    let other = crate::support::Fixture::new(&other_spec("w1"));
    let in_shared = |args: &[&str]| {
        crate::support::Run::from(
            other
                .gantry(args)
                .env("GANTRY_HOME", env.fx.data())
                .output()
                .unwrap(),
        )
    };
    let out = in_shared(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    other.commit(&other_spec("w2"), "w2");
    let out = in_shared(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    let deploy =
        |run: &str| in_shared(&["deploy", "production", "--artifact", "app", "--run", run]);
    let out = deploy("3");
    assert_eq!(out.code, 0, "{out}");
    // Both projects now switch to a new release and bake it for a minute.
    env.deploy_ok(v2);
    let out = deploy("4");
    assert_eq!(out.code, 0, "{out}");
    let other_serving = || match crate::deploy::get(&format!("127.0.0.1:{port}"), "/") {
        Ok((200, body, _)) => body.trim().trim_start_matches("hello from ").to_string(),
        other => format!("{other:?}"),
    };
    assert_eq!(env.serving(), "v2");
    assert_eq!(
        other_serving(),
        "w2",
        "{out}\n{}",
        in_shared(&["status", "production"])
    );

    let r = env.server.api(
        "POST",
        "/api/environments/production/alarm",
        r#"{"status":"firing","name":"checkout-5xx"}"#,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body
            .contains("environment `production` runs for projects hello, other"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("/api/projects/PROJECT/environments/production/alarm"),
        "{}",
        r.body
    );
    assert_eq!(env.serving(), "v2", "hello untouched");
    assert_eq!(other_serving(), "w2", "other untouched");

    let r = env.server.api(
        "POST",
        "/api/projects/other/environments/production/alarm",
        r#"{"status":"firing","name":"checkout-5xx"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        wait_until(Duration::from_secs(10), || other_serving() == "w1"),
        "other rolled back: {}",
        other_serving()
    );
    assert_eq!(env.serving(), "v2", "hello still on its new release");
}
