//! Jobs in container images (issue 18) against podman's Docker Engine API: a job's steps see
//! only the image's files and the workspace; a step that ignores SIGTERM is killed at its
//! timeout and its container is gone; a memory-limited step that allocates too much is killed
//! at its limit and `gantry why` says out-of-memory; kill -9 of gantry mid-step, then the next
//! start removes the step's container.

use crate::support::{Fixture, Run, wait_until};
use std::process::Command;
use std::time::Duration;

/// An image FROM scratch holding a static busybox and its applets, built once per test.
fn busybox_image(tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
    let out = Command::new("podman")
        .args(["build", "-q", "-t", tag])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ids podman lists for `args` (`ps -a -q --filter …`), one per line.
fn podman_ids(args: &[String]) -> Vec<String> {
    let out = Command::new("podman").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The containers (any state) of gantry's steps and services of run `run`'s job `job`.
fn step_containers(run: i64, job: &str) -> Vec<String> {
    podman_ids(&[
        "ps".into(),
        "-a".into(),
        "-q".into(),
        format!("--filter=label=gantry.run={run}"),
        format!("--filter=label=gantry.job={job}"),
    ])
}

fn remove_image(tag: &str) {
    let _ = Command::new("podman").args(["rmi", "-f", tag]).output();
}

#[test]
fn a_job_in_an_image_sees_only_the_image_and_the_workspace_and_a_timeout_removes_its_container() {
    let _turn = crate::docker::take_turn();
    let tag = "localhost/gantry-test-steps:1";
    busybox_image(tag);
    let f = Fixture::new(&format!(
        "//- gantry.yml
stages:
  - name: test
    jobs:
      - name: inside
        image: {tag}
        env: {{ GREETING: hello }}
        steps:
          - test ! -e /usr/bin/git && test ! -e /etc/os-release && echo \"no host files\"
          - echo \"$GREETING from $(pwd) with $(cat hello.txt)\" && echo made > made.txt
          - test -z \"$HOME\" || echo \"home=$HOME\"
      - name: stubborn
        image: {tag}
        timeout: 3s
        run: trap '' TERM; echo waiting; sleep 60
//- hello.txt
the workspace
"
    ));
    let out = f.run(&["run", "--kill-grace", "1s", "--keep-workspaces"]);
    assert_eq!(out.code, 1, "{out}");
    let logs = f.run(&["logs", "1"]).stdout;
    assert!(logs.contains("no host files"), "{logs}");
    assert!(
        logs.contains("hello from /workspace with the workspace"),
        "{logs}"
    );
    assert!(
        !logs.contains("home=/root"),
        "the host's HOME reached the container: {logs}"
    );
    let shown = f.show(1);
    let job = |name: &str| crate::support::named(&shown, "jobs", name);
    assert_eq!(job("inside")["status"], "succeeded", "{shown}");
    assert_eq!(job("stubborn")["status"], "timed_out", "{shown}");
    assert!(logs.contains("waiting"), "{logs}");
    // Written in the container, there in the workspace on the host.
    let made = f.data().join("work/1/inside-1/made.txt");
    assert_eq!(
        std::fs::read_to_string(&made).unwrap_or_default().trim(),
        "made",
        "{}",
        made.display()
    );
    assert!(step_containers(1, "inside").is_empty());
    assert!(
        step_containers(1, "stubborn").is_empty(),
        "the timed-out step's container is left"
    );
    remove_image(tag);
}

#[test]
fn a_memory_limited_step_that_allocates_too_much_is_out_of_memory() {
    let _turn = crate::docker::take_turn();
    let tag = "localhost/gantry-test-oom:1";
    busybox_image(tag);
    let f = Fixture::new(&format!(
        "//- gantry.yml
stages:
  - name: test
    jobs:
      - name: greedy
        image: {tag}
        resources: {{ memory: 16m, cpus: 1 }}
        run: v=$(yes | head -c 268435456); echo ${{#v}}
"
    ));
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    let shown = f.show(1);
    let error = shown["jobs"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The engine's word when it gives one (Docker); podman with cgroupfs reports only the
    // SIGKILL under the limit.
    assert!(
        error.contains("out of memory") && error.contains("16 MiB"),
        "{shown}"
    );
    let why = f.run(&["why", "1", "--json"]);
    assert!(why.stdout.contains("\"out-of-memory\""), "{why}");
    remove_image(tag);
}

#[test]
fn after_kill_9_of_gantry_mid_step_the_next_start_removes_the_steps_container() {
    let _turn = crate::docker::take_turn();
    let tag = "localhost/gantry-test-kill:1";
    busybox_image(tag);
    let f = Fixture::new(&format!(
        "//- gantry.yml
stages:
  - name: test
    jobs:
      - name: long
        image: {tag}
        run: echo started; sleep 120
"
    ));
    let mut child = f.gantry(&["run"]).spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || !step_containers(1, "long")
            .is_empty()),
        "no step container appeared"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert_eq!(
        step_containers(1, "long").len(),
        1,
        "the container outlives a killed gantry"
    );
    // The next start finds the run interrupted, and its container goes with it.
    let runs: Run = f.run(&["runs"]);
    assert_eq!(runs.code, 0, "{runs}");
    assert!(
        step_containers(1, "long").is_empty(),
        "the next start left the container"
    );
    assert_eq!(f.show(1)["run"]["status"], "interrupted");
    remove_image(tag);
}

#[test]
fn a_job_runs_in_the_image_an_earlier_job_of_the_run_built() {
    let _turn = crate::docker::take_turn();
    let f = Fixture::new(
        "//- gantry.yml
name: jc-built
stages:
  - name: build
    jobs:
      - name: make-image
        run: cp /bin/busybox ctx/busybox
        image: { name: steps-image, context: ctx, file: ctx/Dockerfile }
  - name: test
    jobs:
      - name: inside
        image: steps-image
        run: echo \"inside $(cat /marker)\"
//- ctx/Dockerfile
FROM scratch
COPY busybox /bin/busybox
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]
COPY marker /marker
//- ctx/marker
the image of make-image
",
    );
    let out = f.run(&["run"]);
    let logs = f.run(&["logs", "1"]).stdout;
    assert_eq!(out.code, 0, "{out}\n{logs}");
    assert!(logs.contains("inside the image of make-image"), "{logs}");
    for tag in ["run-1", &f.git(&["rev-parse", "--short=12", "HEAD"])] {
        remove_image(&format!("gantry-build-jc-built-steps-image:{tag}"));
    }
}

/// The networks (of services) of run `run`.
fn networks(run: i64) -> Vec<String> {
    podman_ids(&[
        "network".into(),
        "ls".into(),
        "-q".into(),
        format!("--filter=label=gantry.run={run}"),
    ])
}

#[test]
fn a_service_container_answers_the_job_by_name_and_is_gone_after_it() {
    let _turn = crate::docker::take_turn();
    let steps = "localhost/gantry-test-svc-steps:1";
    busybox_image(steps);
    // A web server image (which never listens on 5432).
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN [\"/bin/sh\", \"-c\", \"mkdir -p /www && echo served by the service > /www/index.html\"]\n\
         ENTRYPOINT [\"/bin/httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    let web = "localhost/gantry-test-svc-web:1";
    let out = Command::new("podman")
        .args(["build", "-q", "-t", web])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = Fixture::new(&format!(
        "//- gantry.yml
stages:
  - name: test
    jobs:
      - name: uses-web
        image: {steps}
        services:
          - name: web
            image: {web}
            health: {{ tcp: 8080 }}
        run: wget -q -O - http://web:8080/index.html
      - name: broken
        image: {steps}
        services:
          - name: db
            image: {web}
            health: {{ tcp: 5432 }}
            timeout: 5s
        run: echo never
"
    ));
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    let logs = f.run(&["logs", "1"]).stdout;
    assert!(logs.contains("served by the service"), "{logs}");
    let shown = f.show(1);
    let job = |name: &str| crate::support::named(&shown, "jobs", name);
    assert_eq!(job("uses-web")["status"], "succeeded", "{shown}");
    let broken = job("broken");
    assert_eq!(broken["status"], "failed", "{broken}");
    assert!(
        broken["error"]
            .as_str()
            .unwrap_or_default()
            .contains("service `db` was not healthy within 5s"),
        "{broken}"
    );
    assert!(!logs.contains("never"), "{logs}");
    // Removed with the job: containers and networks.
    assert!(
        wait_until(Duration::from_secs(30), || step_containers(1, "uses-web")
            .is_empty()
            && step_containers(1, "broken").is_empty()
            && networks(1).is_empty()),
        "left: {:?} {:?} {:?}",
        step_containers(1, "uses-web"),
        step_containers(1, "broken"),
        networks(1)
    );
    remove_image(steps);
    remove_image(web);
}
