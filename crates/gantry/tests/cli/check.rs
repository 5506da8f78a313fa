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
