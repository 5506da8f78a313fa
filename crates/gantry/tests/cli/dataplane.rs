//! The data plane: what users are served must not depend on mistakes made with the control
//! plane. A second `gantry serve` on a data directory a live server holds is refused at once,
//! naming the holder, and touches nothing of the first: its releases, router, history and
//! `server.json` — checked under load, counting failed requests at the client.

use crate::deploy::{Env, Service};
use crate::server_support::{data_planes, release_processes, shims};
use crate::support::Load;
use crate::support::wait_until;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_second_server_on_a_held_data_directory_is_refused_and_touches_nothing() {
    let mut env = Env::new();
    let v1 = env.build("v1", Service::Healthy);
    env.deploy_ok(v1);
    let server_file = env.server.data().join("server.json");
    let recorded = std::fs::read_to_string(&server_file).unwrap();
    let before = release_processes(&env.server.data());
    assert!(!before.is_empty(), "the release runs");
    let history = env.releases();

    let load = Load::start(env.router(), 2);
    assert!(load.more(50), "the release answers");
    // The same configuration directory (so the same data directory), another API port: as
    // when `gantry serve` is typed again in a second terminal.
    let second = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "serve",
            "--config",
            "gantry.toml",
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(env.server.config_dir())
        .env_remove("GANTRY_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = second.id() as i32;
    let mut second = Some(second);
    let exited = wait_until(Duration::from_secs(20), || {
        second
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_some())
    });
    if !exited {
        crate::support::signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let out = second.take().unwrap().wait_with_output().unwrap();
    assert!(exited, "the second server kept running");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let first_pid = env.server.pid();
    assert!(
        stderr.contains(&format!(
            "is in use by gantry server pid {first_pid}, serving {}",
            env.server.url
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&env.server.data().display().to_string()),
        "{stderr}"
    );
    assert!(load.more(50), "the release still answers");
    let stall = load.longest_stall();
    let (ok, failed, failures) = load.finish();
    println!(
        "a second server refused: {ok} requests succeeded, {failed} failed, longest wait between successes {stall:?}"
    );
    assert_eq!(failed, 0, "failed requests: {failures:?}");

    // Nothing of the first server was touched.
    assert_eq!(std::fs::read_to_string(&server_file).unwrap(), recorded);
    assert_eq!(release_processes(&env.server.data()), before);
    assert_eq!(env.releases(), history, "no crash was recorded");
    assert_eq!(env.serving(), "v1");
    // And the first server still works: it takes a deploy.
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v2);
    assert_eq!(env.serving(), "v2");
}

/// The data plane's pid, as it records it.
fn data_plane_pid(data: &std::path::Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("dataplane.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["pid"].as_i64().map(|p| p as i32)
}

/// The scheduling policy (`/proc/PID/task/TID/stat`'s 41st field) of each router thread of
/// process `pid`.
fn router_thread_policies(pid: i32) -> Vec<i64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut policies = Vec::new();
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("gantry-router") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The fields after the command's closing parenthesis start at the 3rd.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(policy) = after.split_whitespace().nth(41 - 3) {
            policies.push(policy.parse().unwrap_or(-1));
        }
    }
    policies
}

/// Load through one event: how many failed, and the longest a client waited.
fn through(router: &str, what: &str, event: impl FnOnce()) {
    let load = Load::start(router.to_string(), 2);
    assert!(load.more(50), "{what}: the release answers before");
    event();
    assert!(load.more(200), "{what}: the release answers after");
    let stall = load.longest_stall();
    let (ok, failed, failures) = load.finish();
    println!(
        "{what}: {ok} requests succeeded, {failed} failed, longest wait between successes {stall:?}"
    );
    assert_eq!(failed, 0, "{what}: failed requests: {failures:?}");
}

/// Users are served through every way the control plane goes down: `kill -9` of the server
/// (while it is down and after it is started again), a graceful stop and start (as for an
/// upgrade of gantry), and the data plane itself replaced by a new process that takes its
/// listening sockets. The releases are adopted, never started again, and the server deploys
/// through the new data plane.
#[test]
fn users_are_served_while_the_server_crashes_restarts_and_the_data_plane_is_replaced() {
    let mut env = Env::new();
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v1);
    env.deploy_ok(v2);
    let data = env.server.data();
    let releases = release_processes(&data);
    assert_eq!(releases.len(), 2, "live v2 and the previous v1 run");
    let plane = data_plane_pid(&data).expect("a data plane runs");
    let router = env.router();

    through(&router, "kill -9 of the server, down", || {
        env.server.kill9();
        std::thread::sleep(Duration::from_millis(500));
    });
    assert_eq!(env.serving(), "v2");
    through(&router, "the server started again after kill -9", || {
        env.server.restart()
    });
    through(&router, "SIGTERM and a restart of the server", || {
        env.server.stop();
        env.server.restart();
    });
    assert_eq!(release_processes(&data), releases, "adopted, not restarted");
    assert_eq!(data_plane_pid(&data), Some(plane));
    let status = env.status();
    assert_eq!(status["running"], serde_json::json!([1, 2]), "{status}");

    let mut successor = None;
    through(&router, "the data plane replaced (socket handover)", || {
        let child = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["dataplane", "--replace", "--data"])
            .arg(&data)
            .env("GANTRY_DATAPLANE", &data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        successor = Some(child);
        assert!(
            wait_until(Duration::from_secs(30), || data_plane_pid(&data)
                == Some(pid)
                && !crate::support::alive(plane)),
            "the new data plane took over"
        );
    });
    let mut successor = successor.unwrap();
    assert_eq!(release_processes(&data), releases);
    // The server reaches the new data plane: a deploy switches through it.
    let v3 = env.build("v3", Service::Healthy);
    env.deploy_ok(v3);
    assert_eq!(env.serving(), "v3");
    crate::support::signal(successor.id() as i32, nix::sys::signal::Signal::SIGKILL);
    let _ = successor.wait();
}

/// After `kill -9` of the server, of the data plane and of a release's shim, nothing of any
/// release runs unknown: the next start brings the data plane back on its last table, adopts
/// the live release, and stops what the killed shim left (a compound command's children).
#[test]
fn after_kill_9_of_everything_no_release_process_survives_unknown() {
    let mut env = Env::new();
    env.command = Some("cd dist && ./hello --port $PORT".into());
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v1);
    env.deploy_ok(v2);
    let data = env.server.data();
    // Each release: its shim, the shell of the compound command and the service under it.
    assert_eq!(shims(&data).len(), 2);
    assert!(
        release_processes(&data).len() >= 4,
        "{:?}",
        release_processes(&data)
    );
    let shim_of = |n: u32| -> i32 {
        let path = data.join(format!("releases/hello/production/{n}.shim.json"));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["shim"].as_i64().unwrap() as i32
    };
    let live_shim = shim_of(2);
    let previous_shim = shim_of(1);

    env.server.kill9();
    let plane = data_plane_pid(&data).unwrap();
    crate::support::signal(plane, nix::sys::signal::Signal::SIGKILL);
    crate::support::signal(previous_shim, nix::sys::signal::Signal::SIGKILL);
    assert!(wait_until(Duration::from_secs(10), || {
        !crate::support::alive(plane)
    }));
    // The previous release's service outlives its shim (a compound command's child).
    let orphans: Vec<i32> = release_processes(&data);
    assert!(orphans.len() >= 3, "{orphans:?}");

    env.server.restart();
    assert_eq!(env.serving(), "v2");
    let planes = data_planes(&data);
    assert_eq!(planes.len(), 1, "one data plane serves again: {planes:?}");
    assert_eq!(data_plane_pid(&data), Some(planes[0]));
    assert!(
        wait_until(Duration::from_secs(10), || shims(&data) == vec![live_shim]),
        "shims: {:?}",
        shims(&data)
    );
    // Every release process left is the live release's, under its shim, in its group.
    let group = |pid: i32| nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).ok();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data.join("releases/hello/production/2.shim.json")).unwrap(),
    )
    .unwrap();
    let live_group = nix::unistd::Pid::from_raw(state["pid"].as_i64().unwrap() as i32);
    assert!(
        wait_until(Duration::from_secs(10), || release_processes(&data)
            .iter()
            .all(|p| group(*p) == Some(live_group))),
        "left: {:?}",
        release_processes(&data)
    );
    assert!(!release_processes(&data).is_empty());
    let log = env.server.log();
    assert!(
        log.contains("killed") || log.contains("stopped release 1"),
        "{log}"
    );
}

const CANARY: &str = "    strategy:
      canary:
        users: { header: X-User, allow: [alice] }
        steps:
          - weight: 10
            pause: 6s
          - weight: 50
            pause: 1s
        analysis:
          max_error_rate: 0.05
          max_p99_ms: 300
          min_requests: 10
          deadline: 10s
";

/// The side (release number) each of `users` is on now.
fn sides(router: &str, users: &[String]) -> Vec<String> {
    users
        .iter()
        .map(|u| {
            crate::canary::get_with(router, &[("X-User", u)])
                .map(|(_, release)| release)
                .unwrap_or_else(|e| format!("error: {e}"))
        })
        .collect()
}

/// `kill -9` of the server while a canary serves 10% of users: while it is down every user
/// keeps their side (the data plane serves the canary's table); started again, the server takes
/// the canary over at the same step, and the router's numbers — which it measured all along —
/// decide: the canary is promoted by analysis, not by the restart.
#[test]
fn a_canary_goes_on_from_its_step_after_kill_9_of_the_server() {
    let mut env = Env::with(CANARY);
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v1);
    let router = env.router();
    let traffic = crate::canary::Traffic::start(router.clone(), 500);
    let out = env.deploy(v2, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        wait_until(
            Duration::from_secs(20),
            || env.status()["canary"]["percent"] == 10
        ),
        "{}",
        env.status()
    );
    let users: Vec<String> = (0..200).map(|i| format!("person-{i}")).collect();
    let before = sides(&router, &users);
    let on_canary = before.iter().filter(|s| *s == "2").count();
    assert!(
        (5..=45).contains(&on_canary),
        "{on_canary} of 200 on the canary"
    );
    assert!(before.iter().all(|s| s == "1" || s == "2"), "{before:?}");

    env.server.kill9();
    assert_eq!(
        sides(&router, &users),
        before,
        "sides moved while the server was down"
    );
    env.server.restart();
    assert!(
        env.server
            .log()
            .contains("the canary of release 2 goes on from step 1"),
        "{}",
        env.server.log()
    );
    let status = env.status();
    assert_eq!(status["canary"]["percent"], 10, "{status}");
    assert_eq!(status["canary"]["step"], 0, "{status}");
    assert_eq!(sides(&router, &users), before, "sides moved at the restart");

    // The analysis promotes it: step 2, then everyone.
    assert!(
        wait_until(Duration::from_secs(40), || env.releases()[0]["state"]
            == "live"),
        "{}",
        env.gantry(&["releases", "production", "--events"])
    );
    traffic.stop();
    assert_eq!(env.serving(), "v2");
    let log = env.gantry(&["releases", "production", "--events"]).stdout;
    println!("{log}");
    assert_eq!(
        log.matches("step 1 of 2: the router sends 10%").count(),
        1,
        "step 1 was not started again:\n{log}"
    );
    for seen in [
        "taken over after gantry restarted: step 1 of 2 at 10%",
        "step 1 passed analysis",
        "step 2 of 2: the router sends 50%",
        "step 2 passed analysis",
    ] {
        assert!(log.contains(seen), "missing `{seen}`:\n{log}");
    }
}

/// `kill -9` of the data plane while the server runs: the server starts a new one within a
/// second or so, which serves the last tables again; the releases were never stopped. (And the
/// data plane's router threads run under `SCHED_BATCH`.)
#[test]
fn a_killed_data_plane_is_started_again_on_its_last_table() {
    let mut env = Env::new();
    let v1 = env.build("v1", Service::Healthy);
    env.deploy_ok(v1);
    let data = env.server.data();
    let releases = release_processes(&data);
    let plane = data_plane_pid(&data).unwrap();
    // Its router's threads run under SCHED_BATCH (3): they do not preempt the release on
    // every wake-up (bench/README.md).
    let mut policies = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            policies = router_thread_policies(plane);
            !policies.is_empty() && policies.iter().all(|p| *p == 3)
        }),
        "the router threads' policies: {policies:?}"
    );
    crate::support::signal(plane, nix::sys::signal::Signal::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(15), || data_plane_pid(&data)
            .is_some_and(|p| p != plane && crate::support::alive(p))
            && env.serving() == "v1"),
        "serving: {}",
        env.serving()
    );
    assert_eq!(
        release_processes(&data),
        releases,
        "the release was not restarted"
    );
    assert_eq!(data_planes(&data).len(), 1);
}
