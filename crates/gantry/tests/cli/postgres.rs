//! State in PostgreSQL (`state = "postgres://…"`, the cluster `GANTRY_TEST_POSTGRES` names): a
//! data directory's history moved there by `gantry migrate-state` with its ids, the server's
//! and the CLI's refusals that keep history from being left behind, and two servers on one
//! database sharing one queue (a webhook delivered to both gives one run; every run is run
//! once, by one server, as the steps' own ledger shows), and their one share-link key (a link
//! either server made, either answers; a rotation through one refuses old links on both); a
//! run cancelled through the server that does not run it.

use crate::server_support::{Served, bare_repo, curl, status_of};
use crate::support::{Fixture, wait_until};
use gantry_store::testing::TestDatabase;
use std::collections::BTreeMap;
use std::time::Duration;

fn run_ids(f: &Fixture) -> Vec<i64> {
    let out = f.run(&["runs", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let runs: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    runs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// `gantry serve` on the fixture's data directory with `config`, expected to refuse to start:
/// returns what it said.
fn serve_refused(f: &Fixture, config: &str) -> String {
    let path = f.scratch().join("gantry.toml");
    let config = format!(
        "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n{config}",
        f.data().display()
    );
    std::fs::write(&path, config).unwrap();
    let out = f.run(&["serve", "--config", path.to_str().unwrap()]);
    assert_ne!(out.code, 0, "the server started: {out}");
    out.stderr
}

#[test]
fn a_data_directory_moves_its_history_to_postgresql_and_goes_on_there() {
    let db = TestDatabase::create();
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: build\n    jobs:\n      - name: hello\n        run: mkdir -p out && echo built > out/a.txt && echo hello from run $GANTRY_RUN\n        artifacts:\n          - name: out\n            path: out\n",
    );
    for _ in 0..2 {
        assert_eq!(f.run(&["run"]).code, 0);
    }
    assert_eq!(run_ids(&f), [2, 1]);
    let state = format!("state = \"{}\"\n", db.url);

    // A server told to keep state in PostgreSQL does not leave this history behind.
    let said = serve_refused(&f, &state);
    assert!(said.contains("gantry migrate-state"), "{said}");
    assert!(!f.data().join("state-store.url").exists());

    let moved = f.run(&["migrate-state", "--to", &db.url]);
    assert_eq!(moved.code, 0, "{moved}");
    assert!(moved.stdout.contains("runs 2"), "{moved}");
    assert!(moved.stdout.contains("log_lines 2"), "{moved}");
    // Everything reads from there now: the same runs, logs and artifacts, under the same ids.
    assert_eq!(run_ids(&f), [2, 1]);
    assert!(f.logs(1, "hello").contains("hello from run 1"));
    let artifacts = f.run(&["artifact", "ls"]);
    assert_eq!(artifacts.code, 0, "{artifacts}");
    assert_eq!(artifacts.stdout.matches(" out ").count(), 2, "{artifacts}");
    assert_eq!(f.run(&["run"]).code, 0);
    assert_eq!(run_ids(&f), [3, 2, 1]);
    assert!(f.logs(3, "hello").contains("hello from run 3"));

    // Copying again is refused; the database keeps what it has.
    let again = f.run(&["migrate-state", "--to", &db.url]);
    assert_ne!(again.code, 0, "{again}");
    assert!(again.stderr.contains("keeps its state in"), "{again}");
    // A server that forgot `state` is refused rather than starting over on gantry.db.
    let said = serve_refused(&f, "");
    assert!(said.contains("has no `state`"), "{said}");
    let other = format!("state = \"{}_other\"\n", db.url);
    let said = serve_refused(&f, &other);
    assert!(said.contains("names"), "{said}");
    assert_eq!(run_ids(&f), [3, 2, 1]);

    // The server configured with it starts and serves the moved history.
    let s = Served::start_with_data(&state, &f.data());
    let ids: Vec<i64> = s.runs().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [3, 2, 1]);
    drop(s);

    // Into a database that holds state already, nothing is copied.
    let g = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: b\n    jobs:\n      - name: j\n        run: 'true'\n",
    );
    assert_eq!(g.run(&["run"]).code, 0);
    let refused = g.run(&["migrate-state", "--to", &db.url]);
    assert_ne!(refused.code, 0, "{refused}");
    assert!(refused.stderr.contains("already holds state"), "{refused}");
    assert!(refused.stderr.contains("nothing was copied"), "{refused}");
    assert!(!g.data().join("state-store.url").exists());
    assert_eq!(run_ids(&f), [3, 2, 1]);
}

#[test]
fn two_servers_on_one_database_share_the_queue_and_run_each_run_once() {
    let db = TestDatabase::create();
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.txt");
    // Each run's step records itself and the workspace it ran in (a server's data directory).
    let pipeline = format!(
        "stages:\n  - name: build\n    jobs:\n      - name: hello\n        run: echo \"$GANTRY_RUN $GANTRY_WORKSPACE\" >> {} && sleep 1\n",
        ledger.display()
    );
    let commit = bare_repo(dir.path(), &pipeline);
    let repo = dir.path().join("hello.git");
    let config = |repo: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\nstate = \"{}\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"{repo}\"\npoll = \"0s\"\nwebhook_secret_env = \"HELLO_SECRET\"\n\n[runner]\nconcurrency = 1\nsandbox = false\n",
            db.url
        )
    };
    let a = Served::start_in(dir, &config("hello.git"));
    let b = Served::start_in(
        tempfile::tempdir().unwrap(),
        &config(repo.to_str().unwrap()),
    );

    // The same webhook delivered to both servers at once: one run.
    let body = format!("{{\"ref\":\"refs/heads/main\",\"after\":\"{commit}\"}}");
    let sig = Served::github_signature(body.as_bytes());
    let deliver = |s: &Served| {
        s.request(
            "POST",
            "/hooks/hello",
            &[("X-Hub-Signature-256", &sig), ("X-GitHub-Event", "push")],
            body.as_bytes(),
        )
    };
    let (ra, rb) = std::thread::scope(|scope| {
        let ra = scope.spawn(|| deliver(&a));
        let rb = scope.spawn(|| deliver(&b));
        (ra.join().unwrap(), rb.join().unwrap())
    });
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{} / {}", ra.body, rb.body);
    assert_eq!(ra.json()["run"], rb.json()["run"]);

    // Eight more queued through one server; both servers' workers take them.
    for _ in 0..8 {
        let r = a.api("POST", "/api/projects/hello/trigger", "{}");
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
    }
    let finished = || {
        let runs = b.runs();
        runs.len() == 9 && runs.iter().all(|r| r["status"] == "succeeded")
    };
    assert!(
        wait_until(Duration::from_secs(90), finished),
        "{:?}",
        b.runs()
    );
    let owners: std::collections::BTreeSet<String> = a
        .runs()
        .iter()
        .map(|r| r["owner"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(owners.len(), 2, "both servers ran runs: {owners:?}");

    // The steps' own records: each run ran once, in the data directory of the server the
    // state says owns it.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut ran: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let (id, workspace) = line.split_once(' ').unwrap();
        ran.entry(id.parse().unwrap())
            .or_default()
            .push(workspace.to_string());
    }
    assert_eq!(ran.len(), 9, "{text}");
    let (data_a, data_b) = (
        a.data().canonicalize().unwrap(),
        b.data().canonicalize().unwrap(),
    );
    let mut by_a = 0;
    for (id, workspaces) in &ran {
        assert_eq!(
            workspaces.len(),
            1,
            "run {id} ran {} times: {text}",
            workspaces.len()
        );
        if workspaces[0].starts_with(data_a.to_str().unwrap()) {
            by_a += 1;
        } else {
            assert!(
                workspaces[0].starts_with(data_b.to_str().unwrap()),
                "{text}"
            );
        }
    }
    assert!(by_a > 0 && by_a < 9, "{text}");
}

/// Two servers on one database and one bucket sign share links with one key: a link made by
/// one is answered by the other; a rotation
/// through the second refuses every earlier link on both, and its new links work on both.
#[test]
fn two_servers_share_one_share_link_key() {
    let db = TestDatabase::create();
    let (_moto, moto_port) = crate::support::moto()
        .expect("moto_server is needed (pip install 'moto[server]'; .ci/run installs it)");
    let (head, _) = curl(&["-X", "PUT", &format!("http://127.0.0.1:{moto_port}/builds")]);
    assert_eq!(status_of(&head), 200, "{head}");
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "stages:\n  - name: build\n    jobs:\n      - name: make\n        run: echo hello > report.txt\n        artifacts:\n          - { name: report, path: report.txt }\n";
    bare_repo(dir.path(), pipeline);
    let repo = dir.path().join("hello.git");
    let config = |repo: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\nstate = \"{}\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"{repo}\"\npoll = \"0s\"\n\n[runner]\nsandbox = false\n\n[artifacts]\nurl = \"s3://builds/shared\"\nendpoint = \"http://127.0.0.1:{moto_port}\"\nregion = \"us-east-1\"\naccess_key_id = \"moto\"\nsecret_access_key_env = \"TEST_S3_SECRET\"\n",
            db.url
        )
    };
    let a = Served::start_in(dir, &config("hello.git"));
    let b = Served::start_in(
        tempfile::tempdir().unwrap(),
        &config(repo.to_str().unwrap()),
    );
    assert!(
        !b.data().join("share.key").exists(),
        "the database holds the key"
    );
    let run = a.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
        .as_i64()
        .unwrap();
    assert_eq!(a.wait_finished(run), "succeeded");
    let link = |s: &Served, stable: bool| -> String {
        let r = s.api(
            "POST",
            "/api/artifacts/shares",
            &format!(r#"{{"project":"hello","name":"report","run":{run},"stable":{stable}}}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["path"].as_str().unwrap().to_string()
    };
    let fetch = |s: &Served, path: &str| status_of(&curl(&[&format!("{}{path}", s.url)]).0);

    let from_a = link(&a, false);
    let stable_a = link(&a, true);
    assert_eq!(fetch(&a, &from_a), 200);
    assert_eq!(
        fetch(&b, &from_a),
        200,
        "a link of one server works on the other"
    );
    assert_eq!(fetch(&b, &stable_a) / 100, 3, "stable links redirect");
    let from_b = link(&b, false);
    assert_eq!(fetch(&a, &from_b), 200);

    let rotated = b.api("POST", "/api/share-key/rotate", "{}");
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(
        fetch(&b, &from_a),
        403,
        "refused at once where it was rotated"
    );
    let refused_on_a = || fetch(&a, &from_a) == 403 && fetch(&a, &stable_a) == 403;
    assert!(
        wait_until(Duration::from_secs(20), refused_on_a),
        "the other server refuses earlier links too"
    );
    let new_b = link(&b, false);
    assert_eq!(fetch(&a, &new_b), 200, "new links work on the other server");
    assert_eq!(fetch(&b, &link(&a, false)), 200);
}

/// A cancel through the server that does not run the run reaches the one that does: the run
/// ends cancelled (its minute-long step stopped), where before it was refused.
#[test]
fn a_run_is_cancelled_through_the_server_that_does_not_run_it() {
    let db = TestDatabase::create();
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "stages:\n  - name: build\n    jobs:\n      - name: wait\n        run: echo started && sleep 60\n";
    bare_repo(dir.path(), pipeline);
    let repo = dir.path().join("hello.git");
    let config = |repo: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\nstate = \"{}\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"{repo}\"\npoll = \"0s\"\n\n[runner]\nsandbox = false\nkill_grace = \"2s\"\n",
            db.url
        )
    };
    let a = Served::start_in(dir, &config("hello.git"));
    let run = a.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
        .as_i64()
        .unwrap();
    let started = || {
        a.api("GET", &format!("/api/runs/{run}/logs"), "")
            .body
            .contains("started")
    };
    assert!(
        wait_until(Duration::from_secs(30), started),
        "{}",
        a.run(run)
    );
    // The second server starts once the first runs it.
    let b = Served::start_in(
        tempfile::tempdir().unwrap(),
        &config(repo.to_str().unwrap()),
    );
    let r = b.api("POST", &format!("/api/runs/{run}/cancel"), "{}");
    assert_eq!(r.status, 202, "{}", r.body);
    let cancelled = || b.run(run)["run"]["status"] == "cancelled";
    assert!(
        wait_until(Duration::from_secs(30), cancelled),
        "{}",
        b.run(run)
    );
}
