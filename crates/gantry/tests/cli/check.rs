//! `gantry check` and `gantry schema` as a user runs them.

use crate::support::Fixture;

#[test]
fn check_reports_every_error_with_position_and_exits_1() {
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: build\n    jobs:\n      - name: a\n        step: [make]\n        timeout: 10x\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("gantry.yml:5:9: error: stages[build].jobs[a].step: unknown key `step`"),
        "{out}"
    );
    assert!(out.stderr.contains("did you mean `steps`?"), "{out}");
    assert!(
        out.stderr
            .contains("gantry.yml:6:18: error: stages[build].jobs[a].timeout: invalid duration"),
        "{out}"
    );
    assert!(out.stderr.contains("2 errors in"), "{out}");
}

#[test]
fn check_accepts_a_good_file_and_dot_gantry_yml() {
    let f = Fixture::new(
        "//- .gantry.yml\nstages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n",
    );
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("ok (1 stages, 1 jobs)"), "{out}");
}

#[test]
fn run_refuses_an_invalid_pipeline_before_running_anything() {
    let f = Fixture::new("//- gantry.yml\nstages:\n  - name: build\n    jobs: []\n");
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("empty stage"), "{out}");
    let runs = f.run(&["runs"]);
    assert!(runs.stdout.contains("no runs yet"), "{runs}");
}

#[test]
fn schema_is_json_with_the_pipeline_keys() {
    let f = Fixture::new("//- README\nx\n");
    let out = f.run(&["schema"]);
    assert_eq!(out.code, 0, "{out}");
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let job = &schema["properties"]["stages"]["items"]["properties"]["jobs"]["items"]["properties"];
    for key in [
        "run",
        "steps",
        "timeout",
        "retries",
        "allow_failure",
        "secrets",
        "artifacts",
    ] {
        assert!(job[key].is_object(), "schema lacks job key {key}");
    }
}

/// Pipeline files someone hostile (or an editor on another system) pushes: the commands answer
/// with a positioned error at once, and nothing runs.
#[test]
fn hostile_pipeline_files_get_a_positioned_error_and_run_nothing() {
    let f = Fixture::new("//- README\nx\n");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(f.repo())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    // Not UTF-8: a Latin-1 é in a command.
    let mut latin1 =
        b"stages:\n  - name: build\n    jobs:\n      - name: a\n        run: caf".to_vec();
    latin1.extend([0xe9, b'\n']);
    std::fs::write(f.repo().join("gantry.yml"), &latin1).unwrap();
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr
            .contains("gantry.yml:5:17: error: the file is not UTF-8 text"),
        "{out}"
    );
    git(&["add", "gantry.yml"]);
    git(&["commit", "-qm", "latin-1"]);
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("gantry.yml:5:17"), "{out}");
    // A byte-order mark is fine.
    let bom = "\u{feff}stages:\n  - name: build\n    jobs:\n      - name: a\n        run: 'true'\n";
    std::fs::write(f.repo().join("gantry.yml"), bom).unwrap();
    let out = f.run(&["check"]);
    assert_eq!(out.code, 0, "{out}");
    // An alias bomb of a few hundred bytes.
    let mut bomb = String::from("x0: &x0 [a, a, a, a, a, a, a, a, a, a]\n");
    for i in 1..12 {
        let refs = vec![format!("*x{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
    }
    bomb.push_str("stages: [*x11]\n");
    std::fs::write(f.repo().join("gantry.yml"), &bomb).unwrap();
    let out = f.run(&["check"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("expands to more than"), "{out}");
    git(&["add", "gantry.yml"]);
    git(&["commit", "-qm", "bomb"]);
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("expands to more than"), "{out}");
    let runs = f.run(&["runs"]);
    assert!(runs.stdout.contains("no runs yet"), "{runs}");
}
