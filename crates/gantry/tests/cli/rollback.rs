//! Rollbacks to kept releases: to the previous healthy one or any kept one, starting a stopped
//! one again, skipping failed ones, and refusing — traffic untouched — a kept release whose
//! artifact or directory is not as it was verified.

use crate::deploy::{Env, Service};
use crate::server_support::release_processes;
use crate::support::wait_until;
use std::time::Duration;

#[test]
fn rollback_skips_failed_releases_which_do_not_count_toward_keep() {
    let mut env = Env::with("    keep: 2\n");
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    let bad = env.build("v3", Service::Unhealthy);
    env.deploy_ok(v1);
    env.deploy_ok(v2);
    for _ in 0..5 {
        assert_eq!(env.deploy(bad, &[]).code, 1);
    }
    assert_eq!(env.serving(), "v2");
    let out = env.gantry(&["rollback", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(env.serving(), "v1");
    let live = env.status()["live"].clone();
    assert_eq!(live["source"], 1);
    assert_eq!(env.releases().len(), 8);
}

#[test]
fn rollback_refuses_a_release_whose_artifact_is_corrupt_or_gone_before_touching_traffic() {
    let mut env = Env::with("    keep: 3\n");
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v1);
    env.deploy_ok(v2);
    let digest = env.releases().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = digest.trim_start_matches("sha256:");
    let object = env
        .fx
        .data()
        .join("artifacts/objects/sha256")
        .join(&hex[..2])
        .join(hex);
    assert!(object.is_file(), "{}", object.display());
    let good = std::fs::read(&object).unwrap();
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    std::fs::write(&object, &bad).unwrap();
    let out = env.gantry(&["rollback", "production"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("corrupt"), "{out}");
    assert!(out.stderr.contains("Traffic was not touched"), "{out}");
    assert_eq!(env.serving(), "v2");
    std::fs::remove_file(&object).unwrap();
    let out = env.gantry(&["rollback", "production"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("missing"), "{out}");
    assert_eq!(env.serving(), "v2");
    assert_eq!(
        env.releases().len(),
        2,
        "a refused rollback adds no release"
    );
    // Put it back: the rollback works.
    std::fs::write(&object, &good).unwrap();
    assert_eq!(env.gantry(&["rollback", "production"]).code, 0);
    assert_eq!(env.serving(), "v1");
}

#[test]
fn rollback_refuses_a_kept_release_whose_directory_changed_or_went_after_it_was_verified() {
    let mut env = Env::with("    keep: 3\n");
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    let v3 = env.build("v3", Service::Healthy);
    env.deploy_ok(v1);
    env.deploy_ok(v2);
    let releases = env.fx.data().join("releases/hello/production");
    assert!(
        releases.join("1.verified").is_file(),
        "no record of what was verified"
    );
    // Same size, and the modification time put back: only the change time tells.
    let version = releases.join("1/dist/VERSION");
    let mtime = std::fs::metadata(&version).unwrap().modified().unwrap();
    std::fs::write(&version, "v9\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&version)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let out = env.gantry(&["rollback", "production"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("changed after it was verified"),
        "{out}"
    );
    assert!(out.stderr.contains("dist/VERSION was modified"), "{out}");
    assert!(out.stderr.contains("Traffic was not touched"), "{out}");
    assert_eq!(env.serving(), "v2");
    assert_eq!(
        env.releases().len(),
        2,
        "a refused rollback adds no release"
    );
    // A kept directory removed after its verification is refused the same way.
    env.deploy_ok(v3);
    std::fs::remove_dir_all(releases.join("2")).unwrap();
    let out = env.gantry(&["rollback", "production", "--to", "2"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("the directory was removed"), "{out}");
    assert!(out.stderr.contains("Traffic was not touched"), "{out}");
    assert_eq!(env.serving(), "v3");
    assert_eq!(env.releases().len(), 3);
}

#[test]
fn rollback_to_an_older_kept_release_starts_it_again_and_a_stopped_server_leaves_it_serving() {
    let mut env = Env::with("    keep: 3\n");
    let runs: Vec<i64> = (1..=3)
        .map(|i| env.build(&format!("v{i}"), Service::Healthy))
        .collect();
    for r in &runs {
        env.deploy_ok(*r);
    }
    // Live v3 and the previous v2 run; v1 is kept on disk only.
    assert_eq!(env.status()["running"], serde_json::json!([2, 3]));
    let out = env.gantry(&["rollback", "production", "--to", "1"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(env.serving(), "v1");
    let status = env.status();
    assert_eq!(status["live"]["source"], 1);
    assert_eq!(status["health"], "healthy");
    let running = release_processes(&env.fx.data());
    assert!(!running.is_empty());
    // A graceful stop of the server leaves the services serving (the data plane routes).
    env.server.stop();
    assert_eq!(env.serving(), "v1");
    assert_eq!(release_processes(&env.fx.data()), running);
    // `gantry stop` is what stops them, and a restarted server adopted them first.
    env.server.restart();
    assert_eq!(release_processes(&env.fx.data()), running);
    assert_eq!(env.gantry(&["stop", "production"]).code, 0);
    assert!(
        wait_until(Duration::from_secs(10), || release_processes(
            &env.fx.data()
        )
        .is_empty()),
        "release services outlived gantry stop: {:?}",
        release_processes(&env.fx.data())
    );
}

#[test]
fn the_previous_release_stops_after_keep_previous_running_and_rollback_starts_it_again() {
    let mut env = Env::with("    keep: 3\n    keep_previous_running: 1s\n");
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v1);
    env.deploy_ok(v2);
    assert!(
        wait_until(Duration::from_secs(15), || env.status()["running"]
            == serde_json::json!([2])),
        "release 1 kept running: {}",
        env.status()
    );
    assert_eq!(env.serving(), "v2");
    let out = env.gantry(&["rollback", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(env.serving(), "v1");
}
