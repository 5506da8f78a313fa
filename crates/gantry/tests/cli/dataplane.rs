//! The data plane: what users are served must not depend on mistakes made with the control
//! plane. A second `gantry serve` on a data directory a live server holds is refused at once,
//! naming the holder, and touches nothing of the first: its releases, router, history and
//! `server.json` — checked under load, counting failed requests at the client.

use crate::deploy::{Env, Service};
use crate::server_support::release_processes;
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
