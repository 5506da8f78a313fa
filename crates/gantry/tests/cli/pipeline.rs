//! Running pipelines: stage order, parallel jobs, failures, allow_failure, retries, timeouts and
//! the environment steps see.

use crate::support::{Fixture, alive, job_status, read_pid};

#[test]
fn jobs_of_a_stage_overlap_and_jobs_flag_bounds_them() {
    let f = Fixture::new("//- placeholder\n");
    let s = f.scratch();
    let yml = format!(
        "//- gantry.yml\nstages:\n  - name: build\n    jobs:\n      - name: a\n        run: date +%s%N > {s}/a.start; sleep 0.6; date +%s%N > {s}/a.end\n      - name: b\n        run: date +%s%N > {s}/b.start; sleep 0.6; date +%s%N > {s}/b.end\n",
        s = s.display()
    );
    f.commit(&yml, "parallel");
    let read = |n: &str| -> u128 {
        std::fs::read_to_string(s.join(n))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };

    let out = f.run(&["run", "--jobs", "2"]);
    assert_eq!(out.code, 0, "{out}");
    // Each job started before the other ended: they ran at the same time.
    assert!(
        read("a.start") < read("b.end") && read("b.start") < read("a.end"),
        "jobs did not overlap"
    );

    let out = f.run(&["run", "--jobs", "1"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        read("a.end") <= read("b.start") || read("b.end") <= read("a.start"),
        "--jobs 1 still overlapped"
    );
}

#[test]
fn a_failing_test_job_stops_later_stages() {
    let f = Fixture::new(
        "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: compile
        run: mkdir -p dist && echo app > dist/app
        artifacts: [{ name: app, path: dist/ }]
  - name: test
    jobs:
      - name: unit
        run: echo test-failed && exit 4
      - name: lint
        run: echo lint ok
  - name: package
    jobs:
      - name: pack
        run: echo should-not-run
  - name: staging
    deploy: { environment: staging, artifact: app }
",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "why: unknown: Step `echo test-failed && exit 4` of job `unit` exited with code 4"
        ),
        "{out}"
    );
    assert!(out.stderr.contains("gantry why 1"), "{out}");
    let d = f.show(1);
    assert_eq!(d["run"]["status"], "failed");
    assert_eq!(job_status(&d, "compile"), "succeeded");
    assert_eq!(job_status(&d, "unit"), "failed");
    assert_eq!(
        job_status(&d, "lint"),
        "succeeded",
        "jobs of the failing stage still finish"
    );
    assert_eq!(job_status(&d, "pack"), "skipped");
    let unit = d["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "unit")
        .unwrap();
    assert_eq!(unit["exit_code"], 4);
    let stages: Vec<&str> = d["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["succeeded", "failed", "skipped", "skipped"]);
    assert!(!f.logs(1, "unit").is_empty());
    assert!(
        f.run(&["logs", "1", "pack"]).stdout.is_empty(),
        "a skipped job has no logs"
    );
}

#[test]
fn allow_failure_lets_the_run_succeed() {
    let f = Fixture::new(
        "//- gantry.yml
stages:
  - name: test
    jobs:
      - name: lint
        run: exit 1
        allow_failure: true
  - name: after
    jobs:
      - name: next
        run: echo ran
",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    let d = f.show(1);
    assert_eq!(d["run"]["status"], "succeeded");
    assert_eq!(job_status(&d, "lint"), "failed");
    assert_eq!(job_status(&d, "next"), "succeeded");
    assert!(out.stdout.contains("failed (allowed)"), "{out}");
}

#[test]
fn retries_rerun_a_failed_job_in_a_fresh_workspace() {
    let f = Fixture::new("//- placeholder\n");
    let s = f.scratch();
    let yml = format!(
        "//- gantry.yml
stages:
  - name: test
    jobs:
      - name: flaky
        retries: 2
        steps:
          - test ! -e leftover
          - touch leftover
          - echo try >> {s}/tries; [ $(wc -l < {s}/tries) -ge 2 ]
",
        s = s.display()
    );
    f.commit(&yml, "flaky");
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    let d = f.show(1);
    let job = &d["jobs"][0];
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["attempt"], 2);
    assert_eq!(
        std::fs::read_to_string(s.join("tries"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    // Both attempts' steps are recorded.
    let attempts: Vec<i64> = d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 1, 1, 2, 2, 2]);
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let f = Fixture::new("//- placeholder\n");
    let s = f.scratch();
    let yml = format!(
        "//- gantry.yml
stages:
  - name: test
    jobs:
      - name: slow
        timeout: 1s
        run: sh -c 'sleep 300 & echo $! > {s}/grandchild; wait'
",
        s = s.display()
    );
    f.commit(&yml, "slow");
    let out = f.run(&["run", "--kill-grace", "1s"]);
    assert_eq!(out.code, 1, "{out}");
    let d = f.show(1);
    assert_eq!(job_status(&d, "slow"), "timed_out");
    assert!(
        d["jobs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s"),
        "{d}"
    );
    let grandchild = read_pid(&s.join("grandchild"));
    assert!(
        !alive(grandchild),
        "the grandchild {grandchild} outlived the timeout"
    );
}

#[test]
fn a_step_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let f = Fixture::new("//- placeholder\n");
    let s = f.scratch();
    let yml = format!(
        "//- gantry.yml
stages:
  - name: test
    jobs:
      - name: stubborn
        timeout: 1s
        run: trap '' TERM; echo $$ > {s}/pid; while true; do sleep 0.1; done
",
        s = s.display()
    );
    f.commit(&yml, "stubborn");
    let out = f.run(&["run", "--kill-grace", "500ms"]);
    assert_eq!(out.code, 1, "{out}");
    assert_eq!(job_status(&f.show(1), "stubborn"), "timed_out");
    assert!(!alive(read_pid(&s.join("pid"))));
}

#[test]
fn steps_see_the_job_environment_and_not_gantrys_secrets() {
    let f = Fixture::new(
        "//- gantry.yml
env:
  GREETING: hello
  LEVEL: 1
stages:
  - name: build
    jobs:
      - name: env
        env: { LEVEL: 2 }
        steps:
          - name: show
            run: echo \"greeting=$GREETING level=$LEVEL job=$GANTRY_JOB run=$GANTRY_RUN branch=$GANTRY_BRANCH commit=$GANTRY_COMMIT ci=$CI undeclared=${UNDECLARED_SECRET:-unset}\"
          - name: workspace
            run: test \"$PWD\" = \"$GANTRY_WORKSPACE\" && test -f gantry.yml && test ! -e .git && echo clean
",
    );
    let commit = f.git(&["rev-parse", "HEAD"]);
    let out = f
        .gantry(&["run"])
        .env("UNDECLARED_SECRET", "do-not-pass")
        .output()
        .unwrap();
    let out = crate::support::Run::from(out);
    assert_eq!(out.code, 0, "{out}");
    let logs = f.logs(1, "env");
    assert!(logs.contains(&format!("greeting=hello level=2 job=env run=1 branch=main commit={commit} ci=true undeclared=unset")), "{logs}");
    assert!(logs.contains("clean"), "{logs}");
}

#[test]
fn runs_a_given_revision_not_the_working_copy() {
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: v\n        run: cat version.txt\n//- version.txt\nv1\n",
    );
    let first = f.git(&["rev-parse", "HEAD"]);
    f.commit("//- version.txt\nv2\n", "v2");
    std::fs::write(f.repo().join("version.txt"), "dirty\n").unwrap();
    let out = f.run(&["run", "--rev", &first]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(f.logs(1, "v").trim(), "v1");
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(f.logs(2, "v").trim(), "v2");
    let out = f.run(&["run", "--rev", "no-such-branch"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("unknown revision `no-such-branch`"),
        "{out}"
    );
}

#[test]
fn json_events_and_runs_listing() {
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: hello\n        run: echo hi\n",
    );
    let out = f.run(&["run", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "log" && e["text"] == "hi")
    );
    let runs = f.run(&["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["branch"], "main");
}

#[test]
fn a_failing_line_fails_a_multi_line_step() {
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: multi\n        run: |\n          echo before\n          false\n          echo after\n",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    let logs = f.logs(1, "multi");
    assert!(logs.contains("before") && !logs.contains("after"), "{logs}");
}

#[test]
fn a_pipeline_in_a_subdirectory_runs_there() {
    let f = Fixture::new(
        "//- services/api/gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: here\n        run: cat marker.txt && mkdir -p out && pwd > out/pwd\n        artifacts: [{ name: out, path: out/ }]\n//- services/api/marker.txt\nin api\n//- gantry.yml\nstages:\n  - name: root\n    jobs:\n      - name: root\n        run: echo root\n",
    );
    let out = f.gantry(&["run", "services/api"]).output().unwrap();
    let out = crate::support::Run::from(out);
    assert_eq!(out.code, 0, "{out}");
    let d = f.show(1);
    assert_eq!(d["run"]["project"], "api");
    assert_eq!(d["run"]["pipeline_file"], "services/api/gantry.yml");
    assert_eq!(f.logs(1, "here").trim(), "in api");
}

/// `gantry runs | head` and friends: a reader that goes away stops gantry quietly (SIGPIPE, as
/// for other Unix tools), never with a panic.
#[test]
fn listing_into_a_closed_pipe_stops_quietly() {
    use std::process::Stdio;
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: j\n        run: 'true'\n",
    );
    for _ in 0..3 {
        assert_eq!(f.run(&["run"]).code, 0);
    }
    for args in [&["runs"][..], &["show", "1"], &["logs", "1", "j"]] {
        let mut child = f
            .gantry(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // The reader is gone before gantry writes.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}

/// A job's log keeps up to its cap (`--max-job-log-bytes`), across its steps: then a marker,
/// and at the end of each step the lines and bytes left out; the job itself runs to its end.
#[test]
fn a_job_log_stops_at_its_cap_and_says_how_much_it_left_out() {
    let f = Fixture::new(
        "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: chatty
        steps:
          - name: loud
            run: yes \"$(head -c 1023 /dev/zero | tr '\\0' x)\" | head -n 3000
          - name: after
            run: echo after > done.txt && cat done.txt
",
    );
    let out = f.run(&["run", "--max-job-log-bytes", "1048576"]);
    assert_eq!(out.code, 0, "{out}");
    let logs = f.logs(1, "chatty");
    // 1 MiB of 1 KiB lines (1023 characters and a newline): exactly 1024 kept.
    let kept = logs
        .lines()
        .filter(|l| l.ends_with(&"x".repeat(1023)))
        .count();
    assert_eq!(kept, 1024, "kept lines");
    assert!(
        logs.contains(
            "gantry: this job's log reached its cap of 1 MiB; later output is counted, not kept"
        ),
        "{logs}"
    );
    assert!(
        logs.contains("gantry: step `loud`: 1976 lines (2023424 bytes) of output not kept: the job's log cap is 1 MiB"),
        "{}",
        &logs[logs.len().saturating_sub(2000)..]
    );
    assert!(
        logs.contains("gantry: step `after`: 1 lines (6 bytes) of output not kept"),
        "the budget is the job's, not the step's: {}",
        &logs[logs.len().saturating_sub(2000)..]
    );
    assert_eq!(job_status(&f.show(1), "chatty"), "succeeded");
}

/// A log kept whole (its cap raised above it) is stored in bounded memory: a step that prints
/// faster than its lines can be stored waits on its own writes, instead of gantry holding the
/// lines. 320 MiB of log, measured with `/usr/bin/time -v`: the peak stays far below the log's
/// size (it grew with it before: ~1 GB for a 1 GB log).
#[test]
fn a_huge_log_kept_whole_is_stored_in_bounded_memory() {
    let f = Fixture::new(
        "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: chatty
        run: yes \"$(head -c 1023 /dev/zero | tr '\\0' x)\" | head -n 327680
",
    );
    let out = std::process::Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_gantry"))
        .args(["run", "--plain", "--max-job-log-bytes", "1073741824"])
        .current_dir(f.repo())
        .env("GANTRY_HOME", f.data())
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let kib: u64 = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no maximum RSS in {err}"));
    assert!(kib < 96 * 1024, "peak RSS {kib} KiB for 320 MiB of log");
    assert_eq!(job_status(&f.show(1), "chatty"), "succeeded");
    let lines = f.logs(1, "chatty").lines().count();
    assert_eq!(lines, 327680, "every line kept");
}
