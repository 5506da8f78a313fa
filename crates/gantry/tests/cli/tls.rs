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
