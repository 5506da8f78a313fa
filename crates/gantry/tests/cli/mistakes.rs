//! Operator mistakes get one clear line and leave nothing half-made: a bad configuration, a
//! port in use, an unset webhook secret variable, an authorization scheme in another case, a
//! repository that does not exist.

use crate::server::{QUICK, config};
use crate::server_support::{Served, bare_repo, request};
use crate::support::Run;

/// `gantry serve` with `toml` as its configuration in a fresh directory, expected to refuse:
/// the directory (to check what was left in it) and what the command said.
fn serve_refused(toml: &str, unset: &[&str]) -> (tempfile::TempDir, Run) {
    serve_refused_with(toml, unset, &[])
}

/// [`serve_refused`] with the variables `set` in its environment.
fn serve_refused_with(
    toml: &str,
    unset: &[&str],
    set: &[(&str, &str)],
) -> (tempfile::TempDir, Run) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gantry.toml"), toml).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"));
    cmd.args(["serve", "--config", "gantry.toml"])
        .current_dir(dir.path());
    for var in unset {
        cmd.env_remove(var);
    }
    for (var, value) in set {
        cmd.env(var, value);
    }
    let out = Run::from(cmd.output().unwrap());
    assert_eq!(out.code, 1, "{out}");
    (dir, out)
}

#[test]
fn a_bad_config_reports_every_error_and_does_not_start() {
    let (dir, out) = serve_refused(
        "listen = \"nope\"\n[[projects]]\nname = \"x\"\nrepo = \"r\"\npol = \"1s\"\n",
        &[],
    );
    assert!(
        out.stderr.contains("gantry.toml:1:10: error: listen"),
        "{out}"
    );
    assert!(out.stderr.contains("did you mean `poll`?"), "{out}");
    assert!(out.stderr.contains("the server did not start"), "{out}");
    assert!(!dir.path().join(".gantry/server.json").exists());
}

/// RFC 7235: the scheme's name is case-insensitive; other schemes are not tokens.
#[test]
fn the_authorization_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), QUICK);
    let s = Served::start_in(dir, &config("0s"));
    let viewer = s
        .api(
            "POST",
            "/api/tokens",
            r#"{"name":"reader","role":"viewer"}"#,
        )
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {viewer}");
        let r = request(
            &s.addr(),
            "GET",
            "/api/projects",
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    let basic = format!("Basic {viewer}");
    let r = request(
        &s.addr(),
        "GET",
        "/api/projects",
        &[("Authorization", &basic)],
        b"",
    );
    assert_eq!(r.status, 401, "{}", r.body);
}

/// A port in use is said with the file and the field, and nothing is created before: no data
/// directory, no database, no admin token.
#[test]
fn a_port_in_use_names_the_field_and_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (dir, out) = serve_refused(&format!("listen = \"{addr}\"\ndata_dir = \"state\"\n"), &[]);
    assert!(
        out.stderr.contains(&format!(
            "gantry.toml: listen = \"{addr}\": cannot listen there"
        )),
        "{out}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "the data directory was made"
    );
    drop(taken);
}

/// `webhook_secret_env` naming a variable that is not set: the server refuses to start, saying
/// which variable, which project and where it is written — rather than starting and answering
/// every delivery 401 later.
#[test]
fn an_unset_webhook_secret_variable_refuses_the_start() {
    let (dir, out) = serve_refused(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"state\"\n[[projects]]\nname = \"hello\"\nrepo = \"hello.git\"\nwebhook_secret_env = \"GANTRY_TEST_UNSET_SECRET\"\n",
        &["GANTRY_TEST_UNSET_SECRET"],
    );
    assert!(
        out.stderr.contains(
            "gantry.toml:6:22: project `hello`: webhook_secret_env names `GANTRY_TEST_UNSET_SECRET`, which is not set"
        ),
        "{out}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "the data directory was made"
    );
}

/// A router scheduling policy the data plane could not apply refuses the start, before the
/// data directory is made (the data plane the server starts would inherit it).
#[test]
fn an_unknown_router_scheduling_policy_refuses_the_start() {
    let (dir, out) = serve_refused_with(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"state\"\n",
        &[],
        &[("GANTRY_ROUTER_SCHED", "fifo")],
    );
    assert!(
        out.stderr.contains(
            "GANTRY_ROUTER_SCHED=\"fifo\" is not a scheduling policy of the router: use `batch` (the default) or `normal`"
        ),
        "{out}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "the data directory was made"
    );
}

/// A project whose repository does not exist: the server runs on (other projects are fine), and
/// the project shows its polling error in the API until the repository is there.
#[test]
fn a_repository_that_does_not_exist_shows_in_the_api() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), QUICK);
    let toml = format!(
        "{}\n[[projects]]\nname = \"gone\"\nrepo = \"no-such-repo.git\"\npoll = \"1s\"\n",
        config("0s")
    );
    let s = Served::start_in(dir, &toml);
    let shown = crate::support::wait_until(std::time::Duration::from_secs(20), || {
        let v = s.api("GET", "/api/projects", "").json();
        v["projects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "gone" && p["poll_error"].is_string())
    });
    let v = s.api("GET", "/api/projects", "").json();
    assert!(shown, "{v}");
    let projects = v["projects"].as_array().unwrap();
    let gone = projects.iter().find(|p| p["name"] == "gone").unwrap();
    assert!(
        gone["poll_error"]
            .as_str()
            .unwrap()
            .contains("no-such-repo.git"),
        "{gone}"
    );
    let hello = projects.iter().find(|p| p["name"] == "hello").unwrap();
    assert!(hello["poll_error"].is_null(), "{hello}");
}

/// A data directory gantry cannot write (made immutable, which holds even for root) is named
/// with what the system said and what to do, not as SQLite's "unable to open database file".
/// Under the target directory: `chattr` needs a file system that keeps attributes (tmpfs
/// does not).
#[test]
fn an_unwritable_data_directory_is_named_with_what_to_do() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let chattr = |flag: &str| {
        std::process::Command::new("chattr")
            .args([flag, data.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(chattr("+i"), "chattr +i {}", data.display());
    let out = Run::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["--data-dir", data.to_str().unwrap(), "runs"])
            .output()
            .unwrap(),
    );
    assert!(chattr("-i"), "chattr -i {}", data.display());
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(&format!(
            "the data directory {} is not writable by this user",
            data.display()
        )),
        "{out}"
    );
    assert!(out.stderr.contains("--data-dir"), "{out}");
    assert!(!out.stderr.contains("unable to open database"), "{out}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0, "nothing made");
}

/// A tmpfs of `size` mounted on a directory (a fresh one, or one given), unmounted when
/// dropped (the tests run as root, as `.ci/run` does).
struct SmallDisk {
    at: std::path::PathBuf,
    _fresh: Option<tempfile::TempDir>,
}

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = Self::on(dir.path(), size);
        disk._fresh = Some(dir);
        disk
    }

    /// Mounted on `at`, an existing directory.
    fn on(at: &std::path::Path, size: &str) -> Self {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        SmallDisk {
            at: at.to_path_buf(),
            _fresh: None,
        }
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remounting the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.at).status();
    }
}

/// Only the artifact store is full (the database has room): the job fails naming the store
/// and its path, nothing half-made is left in the store or recorded, `gantry why` files it on
/// gantry's side rather than blaming the step, and with space again the artifact is stored.
#[test]
fn a_full_artifact_store_is_named_and_blamed_on_gantry() {
    let f = crate::support::Fixture::new(
        "//- gantry.yml\nstages:\n  - name: build\n    jobs:\n      - name: pack\n        run: head -c 3000000 /dev/urandom > blob.bin\n        artifacts:\n          - name: blob\n            path: blob.bin\n",
    );
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let store = data.join("artifacts");
    std::fs::create_dir_all(&store).unwrap();
    let disk = SmallDisk::on(&store, "1m");
    let run = |args: &[&str]| Run::from(f.gantry(args).env("GANTRY_HOME", &data).output().unwrap());
    let out = run(&["run", "--plain"]);
    assert_eq!(out.code, 1, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&format!(
            "no space left on the file system of {} (the artifact store)",
            store.display()
        )),
        "{text}"
    );
    let why = run(&["why", "1"]);
    assert!(why.stdout.contains("disk-full"), "{why}");
    assert!(why.stdout.contains("artifact store filled up"), "{why}");
    assert!(!why.stdout.contains("while the step wrote"), "{why}");
    let staged: Vec<_> = std::fs::read_dir(store.join("tmp")).unwrap().collect();
    assert!(staged.is_empty(), "half-written staging files: {staged:?}");
    let listed = run(&["artifact", "ls"]);
    assert!(!listed.stdout.contains("blob"), "{listed}");

    drop(disk);
    let out = run(&["run", "--plain"]);
    assert_eq!(out.code, 0, "{out}");
    let listed = run(&["artifact", "ls"]);
    assert!(listed.stdout.contains("blob"), "{listed}");
}

/// The data directory's file system fills up while a job logs: the run fails saying where
/// space ran out (not "succeeded" with its log lost, not a wedged database), `gantry why` puts
/// it on gantry's side, and once there is space again the next run works.
#[test]
fn a_full_data_directory_fails_the_run_clearly_and_the_next_run_works() {
    let disk = SmallDisk::new("3m");
    let data = disk.at.join("data");
    let f = crate::support::Fixture::new(
        "//- gantry.yml\nstages:\n  - name: build\n    jobs:\n      - name: chatty\n        run: yes \"$(head -c 1023 /dev/zero | tr '\\0' x)\" | head -n 6000\n",
    );
    let run = |args: &[&str]| Run::from(f.gantry(args).env("GANTRY_HOME", &data).output().unwrap());
    let out = run(&["run", "--plain"]);
    assert_eq!(out.code, 1, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&format!(
            "the run's log could not be stored: storing log lines: no space left on the file system of {} (the data directory)",
            data.display()
        )),
        "{}",
        &text[text.len().saturating_sub(3000)..]
    );
    let why = run(&["why", "1"]);
    assert!(why.stdout.contains("disk-full"), "{why}");
    assert!(why.stdout.contains("gantry's data directory"), "{why}");

    disk.resize("64m");
    let out = run(&["run", "--plain"]);
    assert_eq!(
        out.code,
        0,
        "{}",
        &out.stderr[out.stderr.len().saturating_sub(2000)..]
    );
    let listed = run(&["runs"]);
    assert!(listed.stdout.contains("failed"), "{listed}");
    assert!(listed.stdout.contains("succeeded"), "{listed}");
}
