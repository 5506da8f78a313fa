//! HTTPS: a server given a certificate and key (signed by a CA made for the test with openssl)
//! serves only TLS; the CLI reaches it by the CA it recorded for the data directory or by
//! `GANTRY_CA_FILE`, and refuses a server its CA does not vouch for, saying why. A key that
//! does not match its certificate stops the server before it touches anything.

use crate::server::{QUICK, config};
use crate::server_support::{Served, bare_repo, curl};
use crate::support::Run;
use std::path::Path;
use std::process::Command;

/// Runs openssl in `dir`, asserting it succeeds.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`name.ca.pem`) and a certificate for 127.0.0.1 it signed (`name.pem`, `name.key`).
fn issue(dir: &Path, name: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_key = format!("{name}.ca.key");
    let ca = format!("{name}.ca.pem");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca, "-days", "2"]);
    args.extend([
        "-subj",
        "/CN=gantry test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    args.extend(["-addext", "keyUsage=critical,keyCertSign"]);
    openssl(dir, &args);
    let (key, csr, cert) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    openssl(dir, &args);
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

#[test]
fn the_server_serves_https_and_the_cli_trusts_it_by_its_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), QUICK);
    issue(dir.path(), "server");
    issue(dir.path(), "stranger");
    let toml = format!(
        "{}\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nca = \"server.ca.pem\"\n",
        config("0s")
    );
    let s = Served::start_in(dir, &toml);
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let home = s.data();
    let gantry = |args: &[&str], env: &[(&str, &str)]| -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
        cmd.args(args)
            .current_dir(s.config_dir())
            .env("GANTRY_HOME", &home)
            .env_remove("GANTRY_SERVER")
            .env_remove("GANTRY_TOKEN")
            .env_remove("GANTRY_CA_FILE")
            .envs(env.iter().copied());
        Run::from(cmd.output().unwrap())
    };

    // The local CLI finds the server and the CA it is trusted by in the data directory.
    let queued = gantry(&["trigger", "hello"], &[]);
    assert_eq!(queued.code, 0, "{queued}");
    assert!(queued.stdout.contains("queued run 1"), "{queued}");

    // Named explicitly, it is trusted by GANTRY_CA_FILE.
    let ca = s.config_dir().join("server.ca.pem");
    let ca = ca.to_str().unwrap();
    let listed = gantry(
        &["runs", "--server", &s.url, "--json"],
        &[("GANTRY_CA_FILE", ca)],
    );
    assert_eq!(listed.code, 0, "{listed}");
    let runs: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(runs[0]["id"], 1, "{listed}");

    // A CA that did not sign the server's certificate, and the system's roots, are refused
    // with the reason.
    let stranger = s.config_dir().join("stranger.ca.pem");
    for env in [vec![("GANTRY_CA_FILE", stranger.to_str().unwrap())], vec![]] {
        let refused = gantry(&["runs", "--server", &s.url], &env);
        assert_eq!(refused.code, 1, "{refused}");
        assert!(
            refused.stderr.contains("cannot reach the gantry server"),
            "{refused}"
        );
        assert!(
            refused.stderr.to_lowercase().contains("certificate"),
            "{refused}"
        );
    }

    // Any client: curl with the CA gets answers; plain HTTP on the port gets none.
    let (head, _) = curl(&["--cacert", ca, &format!("{}/healthz", s.url)]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let plain = s.url.replace("https://", "http://");
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", &format!("{plain}/healthz")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "plain HTTP was answered");
}

#[test]
fn a_key_that_is_not_the_certificates_stops_the_server_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), "server");
    issue(dir.path(), "other");
    for (tls, says) in [
        (
            "cert = \"server.pem\"\nkey = \"other.key\"",
            "do not make a TLS identity",
        ),
        (
            "cert = \"missing.pem\"\nkey = \"server.key\"",
            "missing.pem",
        ),
        (
            "cert = \"server.key\"\nkey = \"server.key\"",
            "holds no certificate",
        ),
        ("cert = \"server.pem\"\nkey = \"server.pem\"", "private key"),
    ] {
        std::fs::write(
            dir.path().join("gantry.toml"),
            format!("listen = \"127.0.0.1:0\"\n[tls]\n{tls}\n"),
        )
        .unwrap();
        let out = Run::from(
            Command::new(env!("CARGO_BIN_EXE_gantry"))
                .args(["serve", "--config", "gantry.toml"])
                .current_dir(dir.path())
                .output()
                .unwrap(),
        );
        assert_eq!(out.code, 1, "{tls}: {out}");
        assert!(out.stderr.contains("gantry.toml: [tls]"), "{tls}: {out}");
        assert!(out.stderr.contains(says), "{tls}: {out}");
        assert!(
            !dir.path().join(".gantry").exists(),
            "{tls}: a data directory was made"
        );
    }
}

/// A runner over HTTPS (trusting the server by its CA) gets the job's secret, masked in what
/// it sends back; its artifact goes up to the server and comes down to the next job on a
/// runner; its cache is restored by the next run.
#[test]
fn a_runner_over_https_gets_its_secrets_and_hands_back_artifacts_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let pipeline = "stages:\n  - name: build\n    jobs:\n      - name: make\n        secrets: [DEPLOY_KEY]\n        cache:\n          - key: deps-v1\n            paths: [.deps]\n        steps:\n          - run: mkdir -p out && echo \"built with a key of ${#DEPLOY_KEY} characters\" > out/app.txt && echo key is $DEPLOY_KEY\n          - run: if [ -f .deps/x ]; then echo deps were kept; else mkdir -p .deps && echo d > .deps/x; fi\n        artifacts:\n          - name: app\n            path: out/\n  - name: test\n    jobs:\n      - name: check\n        needs: [app]\n        run: cat out/app.txt\n";
    bare_repo(dir.path(), pipeline);
    issue(dir.path(), "server");
    let toml = "listen = \"127.0.0.1:0\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"hello.git\"\npoll = \"0s\"\n\n[runner]\nsandbox = false\nlocal_jobs = false\n\n[tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nca = \"server.ca.pem\"\n";
    let secret = "s3cr3t-value-123";
    let s = Served::start_in_env(dir, toml, &[("DEPLOY_KEY", secret)]);
    let ca = s.config_dir().join("server.ca.pem");
    let ca = ca.to_str().unwrap().to_string();
    let admin = s.token();
    let gantry = |args: &[&str]| -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gantry"));
        cmd.args(args)
            .arg("--server")
            .arg(&s.url)
            .current_dir(s.config_dir())
            .env("GANTRY_CA_FILE", &ca)
            .env("GANTRY_TOKEN", &admin)
            .env_remove("GANTRY_HOME");
        Run::from(cmd.output().unwrap())
    };
    let made = gantry(&["token", "create", "--name", "runner", "--role", "runner"]);
    assert_eq!(made.code, 0, "{made}");
    let token = made
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("gnt_"))
        .unwrap()
        .to_string();
    let runner = crate::runners::Runner::start_with(
        &s.url,
        &token,
        "r-tls",
        "",
        scratch.path(),
        &[("GANTRY_CA_FILE", &ca)],
    );
    let status = |id: i64| -> String {
        let out = gantry(&["runs", "--json"]);
        let runs: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        runs.as_array()
            .and_then(|r| r.iter().find(|r| r["id"] == id))
            .map(|r| r["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    for id in 1..=2 {
        let queued = gantry(&["trigger", "hello"]);
        assert_eq!(queued.code, 0, "{queued}");
        let ended = || !matches!(status(id).as_str(), "" | "queued" | "running");
        assert!(
            crate::support::wait_until(std::time::Duration::from_secs(90), ended),
            "{}",
            runner.said()
        );
        let logs = gantry(&["logs", &id.to_string()]);
        assert_eq!(status(id), "succeeded", "{logs}\n{}", runner.said());
        assert!(logs.stdout.contains("key is ***"), "{logs}");
        assert!(!logs.stdout.contains(secret), "{logs}");
        // The next job (on a runner too) got the artifact the first one uploaded.
        assert!(
            logs.stdout.contains("built with a key of 16 characters"),
            "{logs}"
        );
        assert_eq!(logs.stdout.contains("deps were kept"), id == 2, "{logs}");
    }
    assert_eq!(runner.ran().len(), 4, "{:?}", runner.ran());
}
