//! Runners (`gantry runner`): processes that claim jobs over the server's API. Two servers on
//! one PostgreSQL and three runners run fifty jobs, each exactly once (the runners' own
//! records and the steps' own ledger say so), a job that needs a label only ever on the runner
//! that has it; a runner killed mid-job loses its job to another after its lease; a runner
//! told to stop finishes its job and takes no other; a runner on a dead runner's work directory
//! stops what that one left running, and a second runner on a work directory in use is refused.

use crate::server_support::{Served, bare_repo};
use crate::support::{alive, signal, wait_until};
use gantry_store::testing::TestDatabase;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `gantry runner` child, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Runner {
    child: Option<Child>,
    name: String,
    record: PathBuf,
    work: PathBuf,
    out: PathBuf,
}

impl Runner {
    fn start(server: &Served, token: &str, name: &str, labels: &str, dir: &Path) -> Runner {
        Self::start_with(&server.url, token, name, labels, dir, &[])
    }

    /// A runner of the server at `url`, with `env` added to its environment.
    pub fn start_with(
        url: &str,
        token: &str,
        name: &str,
        labels: &str,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Runner {
        let (record, work, out) = (
            dir.join(format!("{name}.jsonl")),
            dir.join(format!("{name}-work")),
            dir.join(format!("{name}.out")),
        );
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
        cmd.args([
            "runner",
            "--server",
            url,
            "--name",
            name,
            "--concurrency",
            "2",
        ])
        .env_remove("GANTRY_CA_FILE")
        .envs(env.iter().copied())
        .arg("--work-dir")
        .arg(&work)
        .arg("--record")
        .arg(&record)
        .env("GANTRY_RUNNER_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join(format!("{name}.err"))).unwrap(),
        ));
        if !labels.is_empty() {
            cmd.args(["--labels", labels]);
        }
        Runner {
            child: Some(cmd.spawn().unwrap()),
            name: name.to_string(),
            record,
            work,
            out,
        }
    }

    /// What it recorded: (run, job, outcome) per job it ran.
    pub fn ran(&self) -> Vec<(i64, String, String)> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["runner"], self.name.as_str());
                (
                    v["run"].as_i64().unwrap(),
                    v["job"].as_str().unwrap().to_string(),
                    v["outcome"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn said(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// SIGTERM and the exit status, waited for (bounded).
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        signal(c.id() as i32, Signal::SIGTERM);
        let ended = wait_until(Duration::from_secs(60), || c.try_wait().unwrap().is_some());
        if !ended {
            signal(c.id() as i32, Signal::SIGKILL);
        }
        c.wait().unwrap().code()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id() as i32, Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.terminate();
    }
}

pub fn runner_token(s: &Served, name: &str) -> String {
    let made = s.api(
        "POST",
        "/api/tokens",
        &format!(r#"{{"name":"{name}","role":"runner"}}"#),
    );
    assert_eq!(made.status, 201, "{}", made.body);
    made.json()["token"].as_str().unwrap().to_string()
}

fn config(state: &str, repo: &str, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n{state}\n[[projects]]\nname = \"hello\"\nrepo = \"{repo}\"\npoll = \"0s\"\n\n[runner]\nconcurrency = 4\nsandbox = false\nlocal_jobs = false\n{extra}"
    )
}

#[test]
fn two_servers_and_three_runners_run_fifty_jobs_each_exactly_once() {
    let db = TestDatabase::create();
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let ledger = scratch.path().join("ledger.txt");
    // Five jobs a run, one of them needing `big`; each step writes its run, job and workspace
    // (under the runner's work directory) to the ledger, and says hello to the log.
    let mut pipeline = String::from("stages:\n  - name: build\n    jobs:\n");
    for j in 1..=5 {
        let runs_on = if j == 5 {
            "        runs_on: [big]\n"
        } else {
            ""
        };
        pipeline.push_str(&format!(
            "      - name: j{j}\n        run: echo \"$GANTRY_RUN $GANTRY_JOB $GANTRY_WORKSPACE\" >> {} && echo hello from $GANTRY_JOB\n{runs_on}",
            ledger.display()
        ));
    }
    bare_repo(dir.path(), &pipeline);
    let repo = dir.path().join("hello.git");
    let state = format!("state = \"{}\"\n", db.url);
    let a = Served::start_in(dir, &config(&state, "hello.git", ""));
    let b = Served::start_in(
        tempfile::tempdir().unwrap(),
        &config(&state, repo.to_str().unwrap(), ""),
    );
    let token = runner_token(&a, "runners");
    let mut runners = [
        Runner::start(&a, &token, "r-big", "big,linux", scratch.path()),
        Runner::start(&a, &token, "r-two", "linux", scratch.path()),
        Runner::start(&b, &token, "r-three", "", scratch.path()),
    ];
    for _ in 0..10 {
        let r = a.api("POST", "/api/projects/hello/trigger", "{}");
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let ended = |r: &serde_json::Value| !matches!(r["status"].as_str(), Some("queued" | "running"));
    let finished = || {
        let runs = b.runs();
        runs.len() == 10 && runs.iter().all(ended)
    };
    assert!(
        wait_until(Duration::from_secs(180), finished),
        "{:?}\n{}",
        b.runs(),
        runners.iter().map(Runner::said).collect::<String>()
    );
    for run in b.runs() {
        let id = run["id"].as_i64().unwrap();
        assert_eq!(run["status"], "succeeded", "{}", b.run(id));
    }
    // Both servers drove runs.
    let owners: BTreeSet<String> = a
        .runs()
        .iter()
        .map(|r| r["owner"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(owners.len(), 2, "{owners:?}");

    // The runners' own records: fifty jobs, each once, the `big` ones on r-big alone. A runner
    // writes its record once the server has been told, so stop them first: what they record
    // is then all there.
    for r in &mut runners {
        assert_eq!(r.terminate(), Some(0), "{}", r.said());
    }
    let mut by_runner: BTreeMap<(i64, String), Vec<String>> = BTreeMap::new();
    for r in &runners {
        for (run, job, outcome) in r.ran() {
            assert_eq!(outcome, "succeeded", "{} ran {run}/{job}", r.name);
            if job == "j5" {
                assert_eq!(r.name, "r-big", "{run}/{job} needs `big`");
            }
            by_runner
                .entry((run, job))
                .or_default()
                .push(r.name.clone());
        }
    }
    assert_eq!(by_runner.len(), 50, "{by_runner:?}");
    assert!(by_runner.values().all(|r| r.len() == 1), "{by_runner:?}");
    let busy: BTreeSet<&String> = by_runner.values().flatten().collect();
    assert_eq!(busy.len(), 3, "every runner ran jobs: {by_runner:?}");

    // The steps' own ledger agrees: each job's step ran once, in the work directory of the
    // runner that recorded it.
    let text = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(text.lines().count(), 50, "{text}");
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let (run, job, workspace) = (
            parts.next().unwrap().parse::<i64>().unwrap(),
            parts.next().unwrap().to_string(),
            parts.next().unwrap(),
        );
        let who = &by_runner[&(run, job.clone())][0];
        let runner = runners.iter().find(|r| &r.name == who).unwrap();
        assert!(
            workspace.starts_with(runner.work.to_str().unwrap()),
            "{run}/{job} ran in {workspace}, recorded by {who}"
        );
    }
    // Their logs came back to the servers: any server shows them.
    let logs = b.api("GET", "/api/runs/1/logs", "");
    assert_eq!(logs.status, 200, "{}", logs.body);
    assert!(logs.body.contains("hello from j3"), "{}", logs.body);
}

/// A server (leases of 2 s, a lost job started once more) whose one job's first attempt runs
/// `hang` (which writes a pid to `{pid}`, then hangs) and whose next attempt ends at once; the
/// runner `name` running that first attempt; and the pid it wrote.
struct Hung {
    s: Served,
    token: String,
    scratch: tempfile::TempDir,
    first: Runner,
    pid: i32,
}

fn hung_on_a_runner(name: &str, hang: &str) -> Hung {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let pid_file = scratch.path().join("hung.pid");
    let hang = hang.replace("{pid}", pid_file.to_str().unwrap());
    let pipeline = format!(
        "stages:\n  - name: build\n    jobs:\n      - name: slow\n        run: if [ \"$GANTRY_ATTEMPT\" = 1 ]; then {hang}; fi; echo attempt $GANTRY_ATTEMPT done\n"
    );
    bare_repo(dir.path(), &pipeline);
    let s = Served::start_in(
        dir,
        &config("", "hello.git", "lease = \"2s\"\nretry_lost = 1\n"),
    );
    let token = runner_token(&s, "runners");
    let first = Runner::start(&s, &token, name, "", scratch.path());
    let r = s.api("POST", "/api/projects/hello/trigger", "{}");
    assert_eq!(r.status, 201, "{}", r.body);
    let pid = || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
    };
    assert!(
        wait_until(Duration::from_secs(60), || pid().is_some()),
        "{}",
        first.said()
    );
    Hung {
        pid: pid().unwrap(),
        s,
        token,
        scratch,
        first,
    }
}

/// Whether the server's newest run has ended.
fn run_ended(s: &Served) -> bool {
    s.runs()
        .first()
        .is_some_and(|r| r["status"] != "running" && r["status"] != "queued")
}

/// A runner started again on the work directory of one killed mid-job stops what that one's
/// step left running (the shell died with it; the process it started in the background did
/// not), then runs the job's next attempt. A second runner on a work directory in use is
/// refused, and touches nothing.
#[test]
fn a_runner_on_a_dead_runners_work_directory_stops_what_it_left() {
    let Hung {
        s,
        token,
        scratch,
        mut first,
        pid: left,
    } = hung_on_a_runner("r-again", "sleep 120 & echo $! > {pid}; wait");

    // A second runner on the same work directory, while the first runs: refused.
    let intruder = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args([
            "runner",
            "--server",
            &s.url,
            "--name",
            "r-intruder",
            "--work-dir",
        ])
        .arg(scratch.path().join("r-again-work"))
        .env("GANTRY_RUNNER_TOKEN", &token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(intruder.status.code(), Some(1));
    let said = String::from_utf8_lossy(&intruder.stderr);
    assert!(
        said.contains("another runner uses the work directory"),
        "{said}"
    );
    assert!(alive(left), "the intruder touched nothing");

    first.kill9();
    std::thread::sleep(Duration::from_millis(300));
    let outlived = alive(left);
    let mut again = Runner::start(&s, &token, "r-again", "", scratch.path());
    let stopped = wait_until(Duration::from_secs(10), || !alive(left));
    if !stopped {
        signal(left, Signal::SIGKILL); // this test's to stop, whatever happens
    }
    assert!(outlived, "the background process outlived its runner");
    assert!(stopped, "{}", again.said());
    assert!(again.said().contains("left running"), "{}", again.said());
    let done = || run_ended(&s);
    assert!(
        wait_until(Duration::from_secs(60), done),
        "{}",
        again.said()
    );
    assert_eq!(s.run(1)["run"]["status"], "succeeded", "{}", s.run(1));
    assert_eq!(again.terminate(), Some(0), "{}", again.said());
}

#[test]
fn a_runner_killed_mid_job_loses_it_to_another_once_its_lease_passes() {
    let Hung {
        s,
        token,
        scratch,
        mut first,
        pid: step,
    } = hung_on_a_runner("r-first", "echo started; echo $$ > {pid}; sleep 60");
    first.kill9();
    // Its step's process group goes with it (the shell dies with the runner; its sleep is
    // this test's to stop).
    signal(-step, Signal::SIGKILL);
    assert!(wait_until(Duration::from_secs(10), || !alive(step)));

    let second = Runner::start(&s, &token, "r-second", "", scratch.path());
    let done = || run_ended(&s);
    assert!(
        wait_until(Duration::from_secs(60), done),
        "{}",
        second.said()
    );
    let run = s.run(1);
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    let job = &run["jobs"][0];
    assert_eq!(job["attempt"], 2, "{run}");
    // The lost attempt's step ended with it; the next one ran on the other runner.
    let steps: Vec<(i64, &str)> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["attempt"].as_i64().unwrap(),
                s["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps, [(1, "interrupted"), (2, "succeeded")], "{run}");
    assert_eq!(first.ran(), []);
    assert_eq!(
        second.ran(),
        [(1, "slow".to_string(), "succeeded".to_string())]
    );
    let logs = s.api("GET", "/api/runs/1/logs", "");
    assert!(logs.body.contains("started"), "{}", logs.body);
    assert!(logs.body.contains("attempt 2 done"), "{}", logs.body);
}

#[test]
fn a_job_waits_for_a_runner_with_its_labels_and_a_stopped_runner_finishes_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("slow.started");
    let pipeline = format!(
        "stages:\n  - name: build\n    jobs:\n      - name: gpu\n        runs_on: [gpu]\n        run: echo on the gpu runner\n      - name: slow\n        run: touch {} && sleep 3 && echo slow done\n",
        marker.display()
    );
    bare_repo(dir.path(), &pipeline);
    let s = Served::start_in(dir, &config("", "hello.git", ""));
    let token = runner_token(&s, "runners");
    let mut plain = Runner::start(&s, &token, "r-plain", "linux", scratch.path());
    let r = s.api("POST", "/api/projects/hello/trigger", "{}");
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        wait_until(Duration::from_secs(60), || marker.exists()),
        "{}",
        plain.said()
    );
    // Told to stop mid-job: it finishes the job, takes no other, and exits cleanly.
    assert_eq!(plain.terminate(), Some(0), "{}", plain.said());
    assert!(plain.said().contains("stopping"), "{}", plain.said());
    assert_eq!(
        plain.ran(),
        [(1, "slow".to_string(), "succeeded".to_string())],
        "a runner without `gpu` never gets the gpu job"
    );
    let run = s.run(1);
    assert_eq!(run["run"]["status"], "running", "{run}");

    let gpu = Runner::start(&s, &token, "r-gpu", "gpu", scratch.path());
    let done = || s.runs().first().is_some_and(|r| r["status"] == "succeeded");
    assert!(
        wait_until(Duration::from_secs(60), done),
        "{}\n{}",
        gpu.said(),
        s.run(1)
    );
    assert_eq!(gpu.ran(), [(1, "gpu".to_string(), "succeeded".to_string())]);
    let logs = s.api("GET", "/api/runs/1/logs", "");
    assert!(
        logs.body.contains("on the gpu runner") && logs.body.contains("slow done"),
        "{}",
        logs.body
    );
}
