//! Environments under several servers (one PostgreSQL, one bucket): each environment is driven
//! by one server at a time. A second server leaves the first one's environment alone; when the
//! first dies (`kill -9` of everything it ran: the server, its data plane, its releases — the
//! host gone), the second carries on with the queue, marks the run the first was running
//! interrupted, and takes the environment over: the live release serves again through the same
//! router address, and the next deploy goes through it. A deploy through the server that does
//! not drive the environment is handed it by the driver.

use crate::server_support::{
    Served, bare_repo, curl, data_planes, marked, push, release_processes, shims, status_of,
};
use crate::support::{free_port, signal, wait_until};
use gantry_store::testing::TestDatabase;
use nix::sys::signal::Signal;
use std::time::Duration;

use crate::deploy::HELLO;

/// The deploy tests' pipeline (a 1 s bake), with its deploy stage or (`ship` false) without.
fn pipeline(version: &str, port: u16, ship: bool) -> String {
    pipeline_with(version, port, ship, "")
}

/// The same with more of the environment (a strategy).
fn pipeline_with(version: &str, port: u16, ship: bool, strategy: &str) -> String {
    crate::deploy::pipeline(version, port, &format!("    bake: 1s\n{strategy}"), ship)
}

fn serving(port: u16) -> String {
    crate::deploy::serving_at(&format!("127.0.0.1:{port}"))
}

/// Two servers on one database and one bucket, the first started alone and v1 deployed to
/// production by it; the second started after. Dropped in order: servers, then the bucket and
/// the database.
struct Pair {
    a: Served,
    b: Served,
    port: u16,
    _moto: crate::support::Helper,
    _db: TestDatabase,
}

impl Pair {
    /// With `long_run`, a run of a minute-long job (commit "long") runs on the first server
    /// when the second starts; its id is the second member.
    fn start() -> Pair {
        Self::start_with(false, "").0
    }

    /// `strategy`: more of the environment, in every pipeline the pair's repository starts with.
    fn start_with(long_run: bool, strategy: &str) -> (Pair, Option<i64>) {
        let pipeline =
            |version: &str, port: u16, ship: bool| pipeline_with(version, port, ship, strategy);
        let db = TestDatabase::create();
        let (moto, moto_port) = crate::support::moto()
            .expect("moto_server is needed (pip install 'moto[server]'; .ci/run installs it)");
        let (head, _) = curl(&["-X", "PUT", &format!("http://127.0.0.1:{moto_port}/builds")]);
        assert_eq!(status_of(&head), 200, "{head}");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        bare_repo(dir.path(), &pipeline("v1", port, true));
        std::fs::write(dir.path().join("work/hello.py"), HELLO).unwrap();
        push(dir.path(), &pipeline("v1", port, true), "v1");
        let repo = dir.path().join("hello.git");
        let config = |repo: &str| {
            format!(
                "listen = \"127.0.0.1:0\"\nstate = \"{}\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"{repo}\"\npoll = \"0s\"\n\n[runner]\nsandbox = false\n\n[artifacts]\nurl = \"s3://builds/envs\"\nendpoint = \"http://127.0.0.1:{moto_port}\"\nregion = \"us-east-1\"\naccess_key_id = \"moto\"\nsecret_access_key_env = \"TEST_S3_SECRET\"\n",
                db.url
            )
        };
        let a = Served::start_in(dir, &config("hello.git"));
        let first = a.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
            .as_i64()
            .unwrap();
        assert_eq!(a.wait_finished(first), "succeeded", "{}", a.log());
        assert_eq!(serving(port), "v1");
        let long = long_run.then(|| {
            push(
                a.dir.path(),
                "stages:\n  - name: wait\n    jobs:\n      - name: long\n        run: echo waiting && sleep 60\n",
                "long",
            );
            let id = a.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
                .as_i64()
                .unwrap();
            let waiting = || a.log_text(id).contains("waiting");
            assert!(wait_until(Duration::from_secs(30), waiting), "{}", a.run(id));
            id
        });
        let b = Served::start_in(
            tempfile::tempdir().unwrap(),
            &config(repo.to_str().unwrap()),
        );
        (
            Pair {
                a,
                b,
                port,
                _moto: moto,
                _db: db,
            },
            long,
        )
    }
}

/// `kill -9` of everything the server ran, at once, as if its host went: the server, its data
/// plane, its shims and releases, and its steps.
fn host_goes(a: &mut Served) {
    let data = a.data();
    let mut doomed = vec![a.pid() as i32];
    doomed.extend(data_planes(&data));
    doomed.extend(shims(&data));
    doomed.extend(release_processes(&data));
    doomed.extend(marked(&data, &["GANTRY_WORKSPACE"]));
    a.kill9();
    for pid in &doomed {
        signal(*pid, Signal::SIGKILL);
    }
    assert!(
        wait_until(Duration::from_secs(10), || release_processes(&data)
            .is_empty()
            && data_planes(&data).is_empty()),
        "{:?}",
        release_processes(&data)
    );
}

#[test]
fn a_server_killed_with_its_host_leaves_its_environment_and_queue_to_the_other() {
    let (pair, long) = Pair::start_with(true, "");
    let long = long.unwrap();
    let Pair {
        mut a,
        b,
        port,
        _moto,
        _db,
    } = pair;
    assert_eq!(data_planes(&a.data()).len(), 1);

    // A second server leaves the environment to the first: nothing of it starts there.
    let data_b = b.data();
    std::thread::sleep(Duration::from_secs(6)); // past its first look for environments
    assert!(
        release_processes(&data_b).is_empty(),
        "{:?}",
        release_processes(&data_b)
    );
    assert!(
        b.log().contains("hello/production: driven by"),
        "{}",
        b.log()
    );
    assert_eq!(serving(port), "v1");

    // The first server's host goes: the server, its data plane and its releases, at once.
    host_goes(&mut a);
    assert!(serving(port).starts_with("error"), "{}", serving(port));

    // The queue goes on through the second server at once (a commit that only builds).
    let repo_dir = a.dir.path().to_path_buf();
    push(&repo_dir, &pipeline("v1", port, false), "build only");
    let built = b.api("POST", "/api/projects/hello/trigger", "{}");
    assert_eq!(built.status, 201, "{}", built.body);
    let second = built.json()["run"].as_i64().unwrap();
    assert_eq!(b.wait_finished(second), "succeeded", "{}", b.log());

    // Once the first server's lease has passed, the second marks the run it was running
    // interrupted, and takes the environment over: the live release serves again through the
    // same address, from the second server's host.
    assert!(
        wait_until(Duration::from_secs(90), || b.run(long)["run"]["status"]
            == "interrupted"),
        "{}",
        b.run(long)
    );
    assert!(
        wait_until(Duration::from_secs(90), || serving(port) == "v1"),
        "{}\n{}",
        serving(port),
        b.log()
    );
    assert!(!release_processes(&data_b).is_empty());
    assert_eq!(data_planes(&data_b).len(), 1);
    assert!(
        b.log().contains("hello/production: taken over from"),
        "{}",
        b.log()
    );

    // And it drives it: v2 deployed through the same router.
    push(&repo_dir, &pipeline("v2", port, true), "v2");
    let third = b.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
        .as_i64()
        .unwrap();
    assert_eq!(b.wait_finished(third), "succeeded", "{}", b.log());
    assert_eq!(serving(port), "v2");
}

/// A deploy through the server that does not drive the environment: the driver hands it over
/// (its router and releases stop), the deploying server starts the new release behind its own
/// router on the same address, and drives it from then on.
#[test]
fn a_deploy_through_the_other_server_is_handed_the_environment() {
    let pair = Pair::start();
    let (a, b, port) = (&pair.a, &pair.b, pair.port);
    let (data_a, data_b) = (a.data(), b.data());
    assert!(!release_processes(&data_a).is_empty());
    // v2, built (by either server) but not deployed.
    push(a.dir.path(), &pipeline("v2", port, false), "v2");
    let run = a.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
        .as_i64()
        .unwrap();
    assert_eq!(a.wait_finished(run), "succeeded", "{}", a.log());
    assert_eq!(serving(port), "v1");

    let deployed = b.api(
        "POST",
        "/api/projects/hello/environments/production/deploy",
        &format!(r#"{{"artifact":"app","run":{run},"wait":true}}"#),
    );
    assert!(
        deployed.status / 100 == 2,
        "{}\n{}\n{}",
        deployed.body,
        a.log(),
        b.log()
    );
    assert_eq!(serving(port), "v2");
    assert!(
        a.log().contains("hello/production: handed over to"),
        "{}",
        a.log()
    );
    assert!(
        wait_until(Duration::from_secs(10), || release_processes(&data_a)
            .is_empty()),
        "the first server stopped its releases: {:?}",
        release_processes(&data_a)
    );
    assert!(!release_processes(&data_b).is_empty());
    // It stays with the second server: the first does not take it back.
    std::thread::sleep(Duration::from_secs(6));
    assert!(release_processes(&data_a).is_empty());
    assert_eq!(serving(port), "v2");
}

const CANARY: &str = "    strategy:
      canary:
        users: { header: X-User, allow: [alice] }
        steps:
          - weight: 10
            pause: 15s
          - weight: 50
            pause: 1s
        analysis:
          max_error_rate: 0.05
          max_p99_ms: 300
          min_requests: 10
          deadline: 30s
";

/// The side (release number) each of `users` is on now, through the router at `port`.
fn sides(port: u16, users: &[String]) -> Vec<String> {
    let router = format!("127.0.0.1:{port}");
    users
        .iter()
        .map(|u| {
            crate::canary::get_with(&router, &[("X-User", u)])
                .map(|(_, release)| release)
                .unwrap_or_else(|e| format!("error: {e}"))
        })
        .collect()
}

fn status(s: &Served) -> serde_json::Value {
    s.api("GET", "/api/projects/hello/environments/production", "")
        .json()
}

/// Whether `s` drives the environment's canary now, at `percent` (and, with `state`, in it).
fn drives_canary(s: &Served, percent: u64, state: Option<&str>) -> bool {
    let st = status(s);
    st["driver"].is_null()
        && st["canary"]["percent"] == percent
        && state.is_none_or(|want| st["canary"]["state"] == want)
}

/// How v2's canary starts.
#[derive(Clone, Copy, PartialEq)]
enum Start {
    /// By its run's deploy stage, on whichever server claimed the run.
    Stage,
    /// Built only, then deployed through the second server, which the first (driving the
    /// environment since v1) hands the environment over to.
    ThroughSecond,
}

/// v2 pushed and started as a canary; then the server driving it and the other (after the
/// bucket and the database, which are dropped last).
fn canary_started(
    pair: Pair,
    strategy: &str,
    start: Start,
    state: Option<&str>,
) -> (Keep, Served, Served, u16, i64) {
    let Pair {
        a,
        b,
        port,
        _moto,
        _db,
    } = pair;
    let ship = start == Start::Stage;
    push(
        a.dir.path(),
        &pipeline_with("v2", port, ship, strategy),
        "v2",
    );
    let run = a.api("POST", "/api/projects/hello/trigger", "{}");
    assert_eq!(run.status, 201, "{}", run.body);
    let run = run.json()["run"].as_i64().unwrap();
    if start == Start::ThroughSecond {
        assert_eq!(a.wait_finished(run), "succeeded", "{}", a.log());
        let deployed = b.api(
            "POST",
            "/api/projects/hello/environments/production/deploy",
            &format!(r#"{{"artifact":"app","run":{run}}}"#),
        );
        assert_eq!(deployed.status / 100, 2, "{}\n{}", deployed.body, b.log());
    }
    let started = |s: &Served| drives_canary(s, 0, None) || drives_canary(s, 10, None);
    assert!(
        wait_until(Duration::from_secs(60), || started(&a) || started(&b)),
        "{}\n{}\n{}\n{}",
        status(&a),
        status(&b),
        a.log(),
        b.log()
    );
    let (driver, other) = if started(&a) { (a, b) } else { (b, a) };
    let settled = |p| drives_canary(&driver, p, state);
    assert!(
        wait_until(Duration::from_secs(30), || settled(0) || settled(10)),
        "{}",
        status(&driver)
    );
    (Keep { _moto, _db }, driver, other, port, run)
}

/// The bucket and the database, kept until the test ends.
struct Keep {
    _moto: crate::support::Helper,
    _db: TestDatabase,
}

/// The host of the server driving a canary of v2 at its first step (10% of the users) goes:
/// once its lease passes, the other server starts v1 and v2 on its own host, serves the step's
/// share through its router on the same address — every user on the side they were on —
/// observes the step anew (its numbers went with the first router) and goes on from it: the
/// analysis promotes v2, the first step is not started over.
#[test]
fn a_canary_goes_on_from_its_step_on_the_server_that_takes_its_environment_over() {
    let (_keep, mut driver, other, port, run) = canary_started(
        Pair::start_with(false, CANARY).0,
        CANARY,
        Start::Stage,
        None,
    );
    assert!(
        wait_until(Duration::from_secs(30), || drives_canary(&driver, 10, None)),
        "{}",
        status(&driver)
    );
    let users: Vec<String> = (0..200).map(|i| format!("person-{i}")).collect();
    let before = sides(port, &users);
    let on_canary = before.iter().filter(|s| *s == "2").count();
    assert!(
        (5..=45).contains(&on_canary),
        "{on_canary} of 200 on the canary"
    );
    assert!(before.iter().all(|s| s == "1" || s == "2"), "{before:?}");

    host_goes(&mut driver);
    assert!(serving(port).starts_with("error"), "{}", serving(port));

    // Taken over: both releases start on the other server's host, its router serves the
    // step's share on the same address, and every user is on the side they were on.
    assert!(
        wait_until(Duration::from_secs(90), || other.log().contains(
            "hello/production: the canary of release 2 goes on from step 1, here"
        )),
        "{}",
        other.log()
    );
    assert!(
        wait_until(Duration::from_secs(20), || drives_canary(&other, 10, None)),
        "{}\n{}",
        status(&other),
        other.log()
    );
    assert_eq!(status(&other)["canary"]["step"], 0, "{}", status(&other));
    assert_eq!(
        sides(port, &users),
        before,
        "users changed sides at the takeover"
    );

    // The analysis of the new driver's router promotes it: step 1 again in full, step 2, then
    // everyone.
    let traffic = crate::canary::Traffic::start(format!("127.0.0.1:{port}"), 500);
    let releases = || {
        other
            .api(
                "GET",
                "/api/projects/hello/environments/production/releases",
                "",
            )
            .json()
    };
    assert!(
        wait_until(
            Duration::from_secs(60),
            || releases()[0]["release"]["state"] == "live"
        ),
        "{}\n{}",
        releases(),
        other.log()
    );
    traffic.stop();
    assert_eq!(serving(port), "v2");
    let events = releases()[0]["events"].to_string();
    assert_eq!(
        events.matches("step 1 of 2: the router sends 10%").count(),
        1,
        "step 1 was started over:\n{events}"
    );
    for seen in [
        "taken over from",
        "observed anew from now",
        "step 1 passed analysis",
        "step 2 of 2: the router sends 50%",
        "step 2 passed analysis",
    ] {
        assert!(events.contains(seen), "missing `{seen}`:\n{events}");
    }
    assert!(
        wait_until(Duration::from_secs(30), || other.run(run)["run"]["status"]
            != "running"),
        "{}",
        other.run(run)
    );
}

/// A canary deployed through the server that does not drive the environment: the driver hands
/// it over, and the canary runs there against v1, served there first. Then through the server
/// that no longer drives it: its status names the driver and the canary; a promote and an alarm asked there are carried out by the driver, whose answers
/// (and refusals) come back as that server's.
#[test]
fn a_canary_handed_over_is_promoted_and_aborted_through_the_server_that_does_not_drive_it() {
    let approval = crate::canary::APPROVAL;
    let (_keep, driver, other, port, _) = canary_started(
        Pair::start_with(false, approval).0,
        approval,
        Start::ThroughSecond,
        Some("waiting-approval"),
    );
    // The second server was handed the environment, and served v1 before the canary began.
    assert!(
        driver.log().contains("as the canary's stable side"),
        "{}",
        driver.log()
    );
    assert!(drives_canary(&driver, 0, Some("waiting-approval")));
    let seen = status(&other);
    assert!(seen["driver"].is_string(), "{seen}");
    assert_eq!(seen["canary"]["release"], 2, "{seen}");
    assert_eq!(seen["canary"]["steps"], 3, "{seen}");

    let path = "/api/projects/hello/environments/production";
    let promoted = other.api("POST", &format!("{path}/promote"), "{}");
    assert_eq!(promoted.status, 200, "{}\n{}", promoted.body, other.log());
    assert!(
        promoted.body.contains("which drives it"),
        "{}",
        promoted.body
    );
    assert!(
        wait_until(Duration::from_secs(20), || drives_canary(
            &driver,
            10,
            Some("waiting-approval")
        )),
        "{}",
        status(&driver)
    );

    let alertmanager = r#"{"version":"4","status":"firing","receiver":"gantry","alerts":[{"status":"firing","labels":{"alertname":"HighErrorRate","severity":"page"}}]}"#;
    let alarm = other.api("POST", "/api/environments/production/alarm", alertmanager);
    assert_eq!(alarm.status, 200, "{}", alarm.body);
    assert!(alarm.body.contains("aborting the canary"), "{}", alarm.body);
    assert!(
        wait_until(Duration::from_secs(20), || status(&driver)["canary"]
            .is_null()),
        "{}",
        status(&driver)
    );
    assert_eq!(serving(port), "v1");
    let releases = other.api("GET", &format!("{path}/releases"), "").json();
    assert_eq!(releases[0]["release"]["state"], "failed", "{releases}");
    assert!(
        releases[0]["release"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("alarm HighErrorRate")),
        "{releases}"
    );
    // Nothing to promote now: the driver's refusal, passed on.
    let refused = other.api("POST", &format!("{path}/promote"), "{}");
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.contains("has no canary running"),
        "{}",
        refused.body
    );
}
