//! A run's process dies (kill -9) or is interrupted (Ctrl-C) mid-run: the state stays
//! consistent, the next command reports it, and no step process lives on.

use crate::support::{Fixture, alive, job_status, read_pid, signal, wait_until};
use nix::sys::signal::Signal;
use std::process::Stdio;
use std::time::Duration;

fn long_pipeline(f: &Fixture) {
    let s = f.scratch();
    let yml = format!(
        "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: long
        steps:
          - echo started
          - sh -c 'sleep 300 & echo $! > {s}/grandchild; wait'
  - name: after
    jobs:
      - name: never
        run: echo never
",
        s = s.display()
    );
    f.commit(&yml, "long");
}

#[test]
fn kill_9_mid_run_leaves_an_interrupted_run_and_no_processes() {
    let f = Fixture::new("//- placeholder\n");
    long_pipeline(&f);
    let mut child = f
        .gantry(&["run", "--plain"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let grandchild = read_pid(&f.scratch().join("grandchild"));
    // While it runs, other commands see it running (its owner lock is held).
    assert!(wait_until(Duration::from_secs(10), || f
        .run(&["logs", "1", "long"])
        .stdout
        .contains("started")));
    assert_eq!(f.show(1)["run"]["status"], "running");

    signal(child.id() as i32, Signal::SIGKILL);
    child.wait().unwrap();

    let runs = f.run(&["runs"]);
    assert_eq!(runs.code, 0, "{runs}");
    assert!(runs.stderr.contains("run 1 was left unfinished"), "{runs}");
    let d = f.show(1);
    assert_eq!(d["run"]["status"], "interrupted");
    assert_eq!(job_status(&d, "long"), "interrupted");
    assert_eq!(job_status(&d, "never"), "skipped");
    let steps: Vec<&str> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["succeeded", "interrupted"]);
    assert!(
        f.logs(1, "long").contains("started"),
        "logs written before the kill are kept"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !alive(grandchild)),
        "step process {grandchild} outlived its runner"
    );

    // The database is fine for the next run.
    f.commit("//- gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: quick\n        run: echo ok\n", "quick");
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(f.show(2)["run"]["status"], "succeeded");
}

#[test]
fn kill_9_at_any_moment_never_leaves_a_run_running() {
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: x\n        run: for i in 1 2 3 4 5 6 7 8; do echo line $i; done; sleep 0.3\n      - name: y\n        run: echo y\n",
    );
    for (i, delay_ms) in [0u64, 5, 15, 30, 60, 120, 250].iter().enumerate() {
        let mut child = f
            .gantry(&["run", "--plain"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay_ms));
        signal(child.id() as i32, Signal::SIGKILL);
        child.wait().unwrap();
        let runs = f.run(&["runs", "--json"]);
        assert_eq!(runs.code, 0, "attempt {i}: {runs}");
        let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
        for r in runs.as_array().unwrap() {
            let status = r["status"].as_str().unwrap();
            assert!(
                status != "running" && status != "queued",
                "attempt {i}: run {} is {status}",
                r["id"]
            );
        }
    }
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
}

#[test]
fn ctrl_c_cancels_cleanly() {
    let f = Fixture::new("//- placeholder\n");
    long_pipeline(&f);
    let mut child = f
        .gantry(&["run", "--plain", "--kill-grace", "2s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let grandchild = read_pid(&f.scratch().join("grandchild"));
    signal(child.id() as i32, Signal::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let d = f.show(1);
    assert_eq!(d["run"]["status"], "cancelled");
    assert_eq!(job_status(&d, "long"), "cancelled");
    assert_eq!(job_status(&d, "never"), "cancelled");
    assert!(!alive(grandchild), "the step's children were killed");
}

/// A run claimed by an owner of another host, or of another data directory on this host (a
/// runner or a server sharing the database), is not this data directory's to judge by lock
/// files: it stays running while that owner's lease is renewed, and is recovered as
/// `interrupted` once the lease has passed.
#[test]
fn a_run_owned_elsewhere_is_interrupted_only_once_its_lease_has_passed() {
    use gantry_engine::ports::{OwnerLease, QueuedRun, now_millis};
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: s\n    jobs:\n      - name: j\n        run: 'true'\n",
    );
    assert_eq!(f.run(&["run"]).code, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("sqlite://{}", f.data().join("gantry.db").display());
    let store = rt.block_on(gantry_store::open_state(&url)).unwrap();
    for host in [
        "another-host".to_string(),
        gantry_runner::owner::this_host(),
    ] {
        let lease = |expires_at| OwnerLease {
            name: "owner-77-1.lock".into(),
            host: host.clone(),
            pid: 77,
            started_at: now_millis(),
            expires_at,
        };
        let id = rt.block_on(async {
            store
                .enqueue_run(QueuedRun {
                    project: "elsewhere".into(),
                    repo: "/srv/elsewhere".into(),
                    commit: "0".repeat(40),
                    branch: Some("main".into()),
                    trigger: "poll".into(),
                    event: "push".into(),
                    vars: Default::default(),
                    trigger_key: None,
                    created_at: now_millis(),
                })
                .await
                .unwrap()
                .unwrap();
            let run = store
                .claim_next_run("owner-77-1.lock", now_millis())
                .await
                .unwrap()
                .unwrap();
            store
                .register_owner(&lease(now_millis() + 60_000))
                .await
                .unwrap();
            run.id
        });
        let status = |f: &Fixture| {
            let runs = f.run(&["runs", "--json"]);
            assert_eq!(runs.code, 0, "{runs}");
            let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
            runs.as_array()
                .unwrap()
                .iter()
                .find(|r| r["id"] == id)
                .map(|r| r["status"].as_str().unwrap().to_string())
                .unwrap()
        };
        // No lock file of that owner exists here; its live lease is what counts.
        assert_eq!(status(&f), "running", "{host}");
        rt.block_on(store.register_owner(&lease(now_millis() - 1)))
            .unwrap();
        assert_eq!(status(&f), "interrupted", "{host}");
    }
    rt.block_on(store.close());
}
