//! Secrets never reach anything gantry prints or keeps: checked by searching every byte it
//! persisted (database, WAL, artifacts unpacked) and printed, after steps that leak the values
//! in every way we know.

use crate::support::{Fixture, Run, files_under, job_status};
use std::io::Read;

const SPLIT: &str = "hunter2-split-value";
const MULTI_1: &str = "multi-line-first-AAAA";
const MULTI_2: &str = "multi-line-second-BBBB";
const QUOTED: &str = "it's a secret value";

fn pipeline() -> String {
    // Each step leaks a secret a different way.
    "//- gantry.yml
stages:
  - name: leak
    jobs:
      - name: leaky
        secrets: [SPLIT_TOKEN, MULTI_KEY, QUOTED_TOKEN]
        allow_failure: true
        steps:
          - name: split across writes
            run: |
              printf '%s' \"${SPLIT_TOKEN%-value}\"; sleep 0.2; printf '%s\\n' '-value'
              printf '%s' \"$SPLIT_TOKEN\" | head -c 7; sleep 0.2; printf '%s\\n' \"$SPLIT_TOKEN\" | tail -c +8
          - name: half on stdout, half on stderr
            run: |
              printf '%s' \"$SPLIT_TOKEN\" | head -c 9; sleep 0.2; printf '%s\\n' \"$SPLIT_TOKEN\" | tail -c +10 >&2
          - name: multi-line value
            run: printf '%s\\n' \"$MULTI_KEY\"; printf 'x%sy\\n' \"$MULTI_KEY\"
          - name: set -x
            run: set -x; echo \"$QUOTED_TOKEN\" > /dev/null; true \"$SPLIT_TOKEN\"
          - name: child of a child
            run: sh -c 'sh -c \"echo deep=\\$SPLIT_TOKEN >&2\"'
          - name: encoded forms
            run: |
              printf '%s' \"$SPLIT_TOKEN\" | base64
              printf 'x%s' \"$SPLIT_TOKEN\" | base64
              printf '%s' \"$SPLIT_TOKEN\" | od -An -tx1 | tr -d ' \\n'; echo
              printf '%s\\n' \"$SPLIT_TOKEN\" | tr a-z A-Z
          - name: failing command
            run: ls \"/nonexistent/$SPLIT_TOKEN\"
      - name: packer
        run: mkdir -p out && echo 'no secrets here' > out/file.txt
        artifacts: [{ name: out, path: out/ }]
"
    .to_string()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn secret_values_appear_nowhere() {
    let f = Fixture::new(&pipeline());
    let secrets_file = f.scratch().join("secrets.env");
    std::fs::write(
        &secrets_file,
        format!("MULTI_KEY=\"{MULTI_1}\\n{MULTI_2}\"\nQUOTED_TOKEN=\"{QUOTED}\"\n"),
    )
    .unwrap();
    let out = f
        .gantry(&[
            "run",
            "--plain",
            "--secrets-file",
            secrets_file.to_str().unwrap(),
        ])
        .env("SPLIT_TOKEN", SPLIT)
        .output()
        .unwrap();
    let out = Run::from(out);
    assert_eq!(out.code, 0, "{out}");
    let d = f.show(1);
    assert_eq!(
        job_status(&d, "leaky"),
        "failed",
        "the last step fails, allowed"
    );

    // The steps really printed something where the secrets were.
    let logs = f.logs(1, "leaky");
    assert!(logs.contains("***"), "{logs}");
    assert!(logs.contains("deep=***"), "{logs}");
    assert!(
        logs.contains("+ echo '***'") || logs.contains("+ echo ***"),
        "{logs}"
    );

    // SPLIT_TOKEN as base64 (at two offsets), hex and upper case, as the `encoded forms` step
    // prints it (the stable part of `x` + the value in base64 starts after its first 2 chars).
    let encoded = [
        "aHVudGVyMi1zcGxpdC12YWx1ZQ",
        "h1bnRlcjItc3BsaXQtdmFsdWU",
        "68756e746572322d73706c69742d76616c7565",
        "HUNTER2-SPLIT-VALUE",
    ];
    assert!(
        logs.lines().filter(|l| l.trim() == "***").count() >= 4,
        "the encoded forms were printed and masked:\n{logs}"
    );
    // "plit-value": what the step that splits it over stdout and stderr prints on stderr.
    let values: Vec<&str> = [SPLIT, MULTI_1, MULTI_2, QUOTED, "hunter2", "plit-value"]
        .into_iter()
        .chain(encoded)
        .collect();
    let json_logs = f.run(&["logs", "1", "--json"]).stdout;
    let show = f.run(&["show", "1"]).stdout;
    for (what, text) in [
        ("run output", format!("{}{}", out.stdout, out.stderr)),
        ("logs", logs.clone()),
        ("logs --json", json_logs),
        ("show", show),
    ] {
        for v in &values {
            assert!(
                !text.contains(v),
                "{what} contains the secret {v:?}:\n{text}"
            );
        }
    }

    // Everything persisted: database files, artifacts (tar.zst unpacked), any other file.
    let mut searched = 0;
    for path in files_under(&f.data()) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Ok(mut dec) = zstd::stream::read::Decoder::new(&bytes[..]) {
            let mut plain = Vec::new();
            if dec.read_to_end(&mut plain).is_ok() {
                bytes.extend_from_slice(&plain);
            }
        }
        for v in &values {
            assert!(
                !contains(&bytes, v),
                "{} contains the secret {v:?}",
                path.display()
            );
        }
        searched += 1;
    }
    assert!(
        searched >= 3,
        "expected the database and an artifact, searched {searched} files"
    );
}

#[test]
fn a_missing_secret_fails_its_job_with_a_clear_error() {
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: deploy\n        secrets: [MISSING_TOKEN_XYZ]\n        run: echo should-not-run\n",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    let d = f.show(1);
    assert_eq!(job_status(&d, "deploy"), "failed");
    let error = d["jobs"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("secret `MISSING_TOKEN_XYZ` is not set"),
        "{error}"
    );
    assert!(!out.stdout.contains("should-not-run"));
}

/// The data directory holds every project's logs and the token hashes: only its owner may
/// enter it, whatever the umask made of the database file.
#[test]
fn the_data_directory_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: j\n        run: 'true'\n",
    );
    assert_eq!(f.run(&["run"]).code, 0);
    let mode = std::fs::metadata(f.data()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    assert!(f.data().join("gantry.db").is_file());
}

/// A sandboxed step (`gantry run --sandbox`; the server's default) tries to read, write and
/// list each of gantry's own files, the secrets file and another run's workspace: every try is
/// refused, nothing is changed, and the step still does its own work (its workspace, `$TMPDIR`,
/// the system, the repository beside the data directory).
#[test]
fn a_sandboxed_step_cannot_reach_gantrys_files_the_secrets_file_or_other_workspaces() {
    let probe = |path: &str, what: &str| {
        format!(
            "          if cat {path} >/dev/null 2>&1; then echo LEAK-read-{what}; else echo denied-read-{what}; fi\n          if echo planted >> {path} 2>/dev/null; then echo LEAK-write-{what}; else echo denied-write-{what}; fi\n"
        )
    };
    let f = Fixture::new("//- placeholder\n");
    let data = f.data();
    let secrets = f.scratch().join("secrets.env");
    std::fs::write(&secrets, "API_KEY=sandbox-secret-value\n").unwrap();
    // Run 1 leaves its workspace behind (--keep-workspaces): another job's files.
    f.commit(
        "//- gantry.yml\nstages:\n  - name: one\n    jobs:\n      - name: first\n        run: echo first-run-private > mine.txt\n",
        "first",
    );
    let out = f.run(&["run", "--keep-workspaces"]);
    assert_eq!(out.code, 0, "{out}");
    let other = data.join("work/1/first-1/mine.txt");
    assert!(other.is_file(), "{}", other.display());
    std::fs::write(data.join("admin.token"), "planted-admin-token\n").unwrap();
    std::fs::write(data.join("share.key"), "planted-share-key\n").unwrap();
    let before: Vec<(std::path::PathBuf, Vec<u8>)> = ["gantry.db", "admin.token", "share.key"]
        .iter()
        .map(|n| (data.join(n), std::fs::read(data.join(n)).unwrap()))
        .chain([
            (other.clone(), std::fs::read(&other).unwrap()),
            (secrets.clone(), std::fs::read(&secrets).unwrap()),
        ])
        .collect();

    let d = data.display();
    let mut script = String::new();
    for (path, what) in [
        (format!("{d}/gantry.db"), "db"),
        (format!("{d}/admin.token"), "token"),
        (format!("{d}/share.key"), "key"),
        (other.display().to_string(), "workspace"),
        (secrets.display().to_string(), "secrets"),
    ] {
        script.push_str(&probe(&path, what));
    }
    script.push_str(&format!(
        "          if ls {d} >/dev/null 2>&1; then echo LEAK-list-data; else echo denied-list-data; fi
          if touch {d}/new-file 2>/dev/null; then echo LEAK-create-data; else echo denied-create-data; fi
          if rm -f {d}/admin.token 2>/dev/null && [ ! -e {d}/admin.token ]; then echo LEAK-remove-token; else echo denied-remove-token; fi
          echo own > own.txt && cat own.txt
          mktemp >/dev/null && echo tmp-ok
          cat /etc/passwd >/dev/null && echo system-ok
          cat {repo}/gantry.yml >/dev/null && echo repo-ok
",
        repo = f.repo().display()
    ));
    f.commit(
        &format!("//- gantry.yml\nstages:\n  - name: two\n    jobs:\n      - name: probe\n        run: |\n{script}"),
        "probe",
    );
    let out = f.run(&[
        "run",
        "--sandbox",
        "--secrets-file",
        secrets.to_str().unwrap(),
    ]);
    if !gantry_runner::sandbox::available() {
        assert_ne!(out.code, 0, "{out}");
        assert!(out.stderr.contains("this kernel has no Landlock"), "{out}");
        return;
    }
    assert_eq!(out.code, 0, "{out}");
    let logs = f.logs(2, "probe");
    assert!(!logs.contains("LEAK"), "{logs}");
    for what in [
        "read-db",
        "write-db",
        "read-token",
        "write-token",
        "read-key",
        "write-key",
        "read-workspace",
        "write-workspace",
        "read-secrets",
        "write-secrets",
        "list-data",
        "create-data",
        "remove-token",
    ] {
        assert!(logs.contains(&format!("denied-{what}")), "{what}: {logs}");
    }
    for ok in ["own", "tmp-ok", "system-ok", "repo-ok"] {
        assert!(logs.contains(ok), "{ok}: {logs}");
    }
    for (path, bytes) in before.iter().skip(1) {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    assert!(!data.join("new-file").exists());
}

/// A sandboxed server that deployed release 1 of a one-page site to `production`, described by
/// `environment` (`{data}` in it stands for the data directory), with the release's log. `None`
/// without Landlock: the server warns and runs unsandboxed (the refusal test above covers it).
fn deployed_in_sandbox(
    environment: &str,
) -> Option<(Fixture, crate::server_support::Served, String)> {
    if !gantry_runner::sandbox::available() {
        return None;
    }
    let f = Fixture::new("//- placeholder\n");
    let data = f.data();
    let environment = environment.replace("{data}", &data.display().to_string());
    f.commit(
        &format!(
            "//- gantry.yml\nstages:\n  - name: build\n    jobs:\n      - name: site\n        run: mkdir -p www && echo served > www/index.html\n        artifacts:\n          - name: app\n            path: www/\nenvironments:\n  production:\n{environment}"
        ),
        "site",
    );
    let server =
        crate::server_support::Served::start_with_data("listen = \"127.0.0.1:0\"\n", &data);
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    let out = f.run(&["deploy", "production", "--artifact", "app", "--run", "1"]);
    assert_eq!(out.code, 0, "{out}\n{}", server.log());
    // The project is named after the repository's directory (`repo`).
    let log = std::fs::read_to_string(data.join("releases/repo/production/1.log")).unwrap();
    assert!(log.contains("denied-token"), "{log}");
    assert!(log.contains("denied-list"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("LEAK")), "{log}");
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    assert!(!log.contains(token.trim()), "{log}");
    Some((f, server, log))
}

/// A release process of a sandboxed server cannot read gantry's files either, while serving
/// from its own release directory.
#[test]
fn a_release_process_cannot_read_the_servers_admin_token() {
    let port = crate::support::free_port();
    let Some(_served) = deployed_in_sandbox(&format!(
        "    target:
      process:
        command: if cat {{data}}/admin.token; then echo LEAK-token; else echo denied-token; fi; if ls {{data}}/releases >/dev/null; then echo LEAK-list; else echo denied-list; fi; exec python3 -m http.server $PORT --bind 127.0.0.1 --directory www
    health:
      tcp: true
      timeout: 10s
      interval: 100ms
    router:
      listen: 127.0.0.1:{port}
"
    )) else {
        return;
    };
    let (status, body, _) = crate::deploy::get(&format!("127.0.0.1:{port}"), "/").unwrap();
    assert_eq!((status, body.trim()), (200, "served"));
}

/// A `command` target's deploy script and a `command` health check of a sandboxed server run
/// in the same sandbox as steps: neither can read gantry's admin token. The check passes only
/// when the read is refused, so the deploy itself says whether the check was sandboxed.
#[test]
fn command_target_scripts_and_health_commands_are_sandboxed_too() {
    let Some((f, _server, _log)) = deployed_in_sandbox(
        "    target:
      command:
        deploy: if cat {data}/admin.token; then echo LEAK-token; else echo denied-token; fi; if ls {data} >/dev/null; then echo LEAK-list; else echo denied-list; fi; cp www/index.html served.html
    health:
      command: if cat {data}/admin.token >/dev/null 2>&1; then echo LEAK-check; exit 1; fi; test -f served.html
      timeout: 10s
      interval: 100ms
",
    ) else {
        return;
    };
    let status = f.run(&["status", "production"]);
    assert!(status.stdout.contains("health:   healthy"), "{status}");
}
