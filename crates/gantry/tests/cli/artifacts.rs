//! Artifacts from `gantry run`: stored by digest, identical content kept once, escaping paths
//! refused with a clear error.

use crate::support::{Fixture, job_status};
use sha2::{Digest, Sha256};

fn object(f: &Fixture, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    f.data()
        .join("artifacts/objects/sha256")
        .join(&hex[..2])
        .join(hex)
}

#[test]
fn artifacts_are_stored_by_digest_and_once() {
    let f = Fixture::new(
        "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: dir
        run: mkdir -p dist/sub && echo a > dist/a.txt && echo b > dist/sub/b.txt && touch -d 2001-01-01 dist/a.txt
        artifacts: [{ name: site, path: dist/ }]
      - name: file
        run: |
          echo '{\"ok\": true}' > report.json
        artifacts: [{ name: report, path: report.json }]
      - name: glob
        run: touch x.log y.log z.txt
        artifacts: [{ name: logs, path: '*.log' }]
",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    let d1 = f.show(1);
    let arts = d1["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), 3);
    for a in arts {
        let digest = a["digest"].as_str().unwrap();
        let bytes = std::fs::read(object(&f, digest)).unwrap();
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            digest,
            "object content matches its digest"
        );
        assert_eq!(a["size"].as_u64().unwrap(), bytes.len() as u64);
    }
    let report = arts.iter().find(|a| a["name"] == "report").unwrap();
    assert_eq!(report["media_type"], "application/json");
    let site = arts.iter().find(|a| a["name"] == "site").unwrap();
    let bytes = std::fs::read(object(&f, site["digest"].as_str().unwrap())).unwrap();
    let mut tar = tar::Archive::new(zstd::stream::read::Decoder::new(&bytes[..]).unwrap());
    let names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["dist", "dist/a.txt", "dist/sub", "dist/sub/b.txt"]);

    // A second run makes the same content (timestamps differ): same digests, nothing new stored.
    let before = crate::support::files_under(&f.data().join("artifacts/objects")).len();
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("already stored"), "{out}");
    let d2 = f.show(2);
    let digests = |d: &serde_json::Value| {
        let mut v: Vec<String> = d["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["digest"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(digests(&d1), digests(&d2));
    assert_eq!(
        crate::support::files_under(&f.data().join("artifacts/objects")).len(),
        before
    );
}

#[test]
fn an_artifact_path_escaping_the_workspace_is_refused() {
    let f = Fixture::new(
        "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: sneaky
        run: mkdir -p dist && ln -s /etc dist/etc && echo x > dist/ok
        artifacts: [{ name: app, path: dist }]
      - name: link
        run: ln -s /etc/hostname hostname
        artifacts: [{ name: host, path: hostname }]
",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    let d = f.show(1);
    assert_eq!(job_status(&d, "sneaky"), "failed");
    assert_eq!(job_status(&d, "link"), "failed");
    let errors: Vec<&str> = d["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["error"].as_str().unwrap())
        .collect();
    assert!(
        errors[0].contains("artifact `app`")
            && errors[0].contains("is a symlink to `/etc`, outside the workspace"),
        "{errors:?}"
    );
    assert!(errors[1].contains("outside the workspace"), "{errors:?}");
    assert!(d["artifacts"].as_array().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(f.data().join("artifacts/tmp"))
            .unwrap()
            .count(),
        0,
        "no half-written artifact left"
    );
}

#[test]
fn later_stages_use_artifacts_without_rebuilding() {
    let f = Fixture::new(
        "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: compile
        run: mkdir -p dist/bin && printf '#!/bin/sh\\necho built once\\n' > dist/bin/app && chmod +x dist/bin/app && echo '{}' > report.json
        artifacts:
          - { name: app, path: dist/ }
          - { name: report, path: report.json }
      - name: optional
        run: mkdir -p extra && touch extra/x && exit 1
        allow_failure: true
        artifacts: [{ name: extra, path: extra/ }]
  - name: test
    jobs:
      - name: use
        needs: [app, report]
        run: ./dist/bin/app && test -f report.json
      - name: missing
        needs: [extra]
        run: echo should-not-run
",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    let d = f.show(1);
    assert_eq!(job_status(&d, "use"), "succeeded");
    assert_eq!(f.logs(1, "use").trim(), "built once");
    assert_eq!(job_status(&d, "missing"), "failed");
    let err = d["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "missing")
        .unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("artifact `extra` was not produced by this run"),
        "{err}"
    );
}

#[test]
fn aggressive_gc_keeps_pinned_and_recent_artifacts_and_shared_content() {
    let f = Fixture::new(
        "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: make
        run: mkdir -p dist && echo \"build $GANTRY_RUN\" > dist/n && echo same > report.txt
        artifacts:
          - { name: app, path: dist/ }
          - { name: report, path: report.txt }
",
    );
    for _ in 0..3 {
        let out = f.run(&["run"]);
        assert_eq!(out.code, 0, "{out}");
    }
    let pinned = f.run(&[
        "artifact",
        "pin",
        "app",
        "--run",
        "1",
        "--reason",
        "release production#1",
    ]);
    assert_eq!(pinned.code, 0, "{pinned}");
    let objects = || crate::support::files_under(&f.data().join("artifacts/objects")).len();
    assert_eq!(objects(), 4, "three app versions and one shared report");

    let dry = f.run(&[
        "gc",
        "--dry-run",
        "--keep-runs",
        "1",
        "--keep-younger-than",
        "1ms",
    ]);
    assert_eq!(dry.code, 0, "{dry}");
    assert!(
        dry.stdout.contains("3 artifacts") && dry.stdout.contains("dry run"),
        "{dry}"
    );
    assert_eq!(objects(), 4, "a dry run removes nothing");

    let gc = f.run(&["gc", "--keep-runs", "1", "--keep-younger-than", "1ms"]);
    assert_eq!(gc.code, 0, "{gc}");
    assert!(
        gc.stdout.contains("3 artifacts removed, 1 objects deleted"),
        "{gc}"
    );
    assert_eq!(objects(), 3);

    let out = f.scratch().join("out");
    let get = |run: &str, name: &str| {
        f.run(&[
            "artifact",
            "get",
            name,
            "--run",
            run,
            "-o",
            out.to_str().unwrap(),
        ])
    };
    assert_eq!(get("1", "app").code, 0, "pinned: kept");
    assert_eq!(get("3", "app").code, 0, "newest run: kept");
    assert_eq!(
        get("3", "report").code,
        0,
        "same content as the removed reports: kept"
    );
    let gone = get("2", "app");
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("was removed by retention"), "{gone}");
    // Unpinned and collected again, run 1's app goes too.
    assert_eq!(
        f.run(&[
            "artifact",
            "unpin",
            "app",
            "--run",
            "1",
            "--reason",
            "release production#1"
        ])
        .code,
        0
    );
    let again = f.run(&["gc", "--keep-runs", "1", "--keep-younger-than", "1ms"]);
    assert!(
        again
            .stdout
            .contains("1 artifacts removed, 1 objects deleted"),
        "{again}"
    );
}

#[test]
fn jobs_use_the_newest_succeeded_artifact_of_another_project() {
    let libs = Fixture::new(
        "//- gantry.yml
name: libs
stages:
  - name: build
    jobs:
      - name: core
        run: mkdir -p core && echo core-v1 > core/lib.txt && printf 'echo tool-v1\\n' > tool.sh
        artifacts:
          - { name: core, path: core/ }
          - { name: tool, path: tool.sh }
",
    );
    assert_eq!(libs.run(&["run"]).code, 0);
    // A later run whose tests fail: its artifacts are not picked up by other projects.
    libs.commit(
        "//- gantry.yml
name: libs
stages:
  - name: build
    jobs:
      - name: core
        run: mkdir -p core && echo core-v2 > core/lib.txt && printf 'echo tool-v2\\n' > tool.sh
        artifacts:
          - { name: core, path: core/ }
          - { name: tool, path: tool.sh }
  - name: test
    jobs:
      - name: unit
        run: exit 1
",
        "v2, broken",
    );
    assert_eq!(libs.run(&["run"]).code, 1);

    let app = Fixture::new(
        "//- gantry.yml
name: app
stages:
  - name: build
    jobs:
      - name: link
        needs:
          - { project: libs, artifact: core }
          - { project: libs, artifact: tool, branch: main, path: bin/tool.sh }
        run: cat core/lib.txt && sh bin/tool.sh
",
    );
    let shared_data = |f: &Fixture, args: &[&str]| -> crate::support::Run {
        f.gantry(args)
            .env("GANTRY_HOME", libs.data())
            .output()
            .unwrap()
            .into()
    };
    let out = shared_data(&app, &["run"]);
    assert_eq!(out.code, 0, "{out}");
    let logs = shared_data(&app, &["logs", "3", "link"]);
    assert!(
        logs.stdout.contains("core-v1") && logs.stdout.contains("tool-v1"),
        "{logs}"
    );

    // Listings say where each artifact came from and what keeps it.
    assert_eq!(
        shared_data(&app, &["artifact", "pin", "core", "--run", "1"]).code,
        0
    );
    let ls = shared_data(&app, &["artifact", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    let core1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "core" && a["run_id"] == 1)
        .unwrap();
    assert_eq!(core1["project"], "libs");
    assert_eq!(core1["branch"], "main");
    assert_eq!(core1["job"], "core");
    assert_eq!(core1["commit"].as_str().unwrap().len(), 40);
    assert_eq!(core1["pins"], serde_json::json!(["by hand"]));
    // Names are per project: `--project` picks one.
    let ls = shared_data(&app, &["artifact", "ls", "--json", "--project", "app"]);
    assert_eq!(ls.stdout.trim(), "[]", "app made no artifacts: {ls}");
    let out = shared_data(&app, &["artifact", "verify", "core", "--project", "app"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no such artifact"), "{out}");
    assert_eq!(
        shared_data(&app, &["artifact", "verify", "core", "--project", "libs"]).code,
        0
    );

    // Unknown artifact, or another branch: the job fails naming what is missing.
    app.commit(
        "//- gantry.yml
name: app
stages:
  - name: build
    jobs:
      - name: link
        needs: [{ project: libs, artifact: core, branch: release }]
        run: cat core/lib.txt
",
        "wrong branch",
    );
    let out = shared_data(&app, &["run"]);
    assert_eq!(out.code, 1, "{out}");
    let show = shared_data(&app, &["show", "--json", "4"]);
    assert!(
        show.stdout.contains(
            "project `libs` has no artifact `core` from a succeeded run on branch `release`"
        ),
        "{show}"
    );
}
