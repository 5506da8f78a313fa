//! `gantry why` on a corpus of failures. Every case that can be produced here is produced by
//! really running the failing tool in a pipeline (git against missing and unauthorized
//! repositories, cargo and pytest with failing tests, curl to a refused port and to a server that
//! answers 403, a memory limit, a full device, a missing command, the AWS SDK against moto_server,
//! ...) and diagnosed through `gantry why --json`. Cases that cannot be produced here quote the
//! documented error format and name where it comes from; they go straight to the diagnoser.
//! The test prints the accuracy and requires at least 95%.

use crate::support::{Fixture, Run};
use crate::support::{Helper, free_port, moto, moto_with_auth, wait_for_port};
use gantry_engine::why::{Category, Diagnoser, Fact, rules};
use std::process::{Command, Stdio};

/// A tiny HTTP server answering 401 (with Basic auth asked) under /private, 403 under /forbidden,
/// 404 elsewhere: what a git host or an API says to a client without the right credentials.
fn status_server() -> (Helper, u16) {
    let port = free_port();
    let script = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith('/private'):
            self.send_response(401); self.send_header('WWW-Authenticate', 'Basic realm="git"')
        elif self.path.startswith('/forbidden'):
            self.send_response(403)
        else:
            self.send_response(404)
        self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"#;
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let h = Helper(child);
    wait_for_port(port);
    (h, port)
}

/// A TLS server whose certificate expired yesterday, and curl refusing it (Python's
/// `cryptography`, which moto brings, makes the certificate).
const EXPIRED_CERTIFICATE: &str = r#"python3 - <<'EOF'
import datetime, socket, ssl, threading, subprocess, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30)).not_valid_after(now - datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256()))
open("cert.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open("key.pem", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("cert.pem", "key.pem")
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
port = srv.getsockname()[1]
def serve():
    for _ in range(3):
        c, _ = srv.accept()
        try:
            ctx.wrap_socket(c, server_side=True)
        except Exception:
            pass
threading.Thread(target=serve, daemon=True).start()
sys.exit(subprocess.run(["curl", "-sS", "--cacert", "cert.pem", f"https://127.0.0.1:{port}/"]).returncode)
EOF"#;

struct Real {
    name: &'static str,
    expect: &'static str,
    /// Extra keys of the job (YAML, indented 8 spaces) and its `run` script.
    job: String,
}

fn real(name: &'static str, expect: &'static str, run: &str) -> Real {
    Real {
        name,
        expect,
        job: format!("        run: |\n{}", indent(run)),
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("          {l}\n")).collect()
}

/// Runs the case's pipeline and returns the category `gantry why --json` gives.
fn diagnose_real(case: &Real) -> String {
    let yml = format!(
        "//- gantry.yml\npass_env: [CARGO_HOME, RUSTUP_HOME, RUSTUP_TOOLCHAIN]\nstages:\n  - name: test\n    jobs:\n      - name: case\n{}",
        case.job
    );
    let f = Fixture::new(&yml);
    let run = f.run(&["run", "--plain", "--kill-grace", "500ms"]);
    assert_ne!(run.code, 0, "case {} did not fail:\n{run}", case.name);
    let why: Run = f.gantry(&["why", "--json"]).output().unwrap().into();
    assert_eq!(why.code, 0, "case {}: {why}", case.name);
    let v: serde_json::Value = serde_json::from_str(&why.stdout).unwrap();
    v["diagnosis"]["category"].as_str().unwrap().to_string()
}

struct Quoted {
    name: &'static str,
    expect: &'static str,
    source: &'static str,
    lines: &'static [&'static str],
    exit: i64,
}

fn diagnose_quoted(q: &Quoted) -> String {
    let mut d = Diagnoser::new(rules::builtin());
    d.fact(Fact::Exit {
        job: "job".into(),
        step: "step".into(),
        code: q.exit,
    });
    for (i, l) in q.lines.iter().enumerate() {
        d.line("job", "step", i as i64 + 1, l);
    }
    assert!(!q.source.is_empty());
    d.finish().category.as_str().to_string()
}

const QUOTED: &[Quoted] = &[
    Quoted {
        name: "aws-access-denied",
        expect: "permission",
        source: "AWS CLI error format (An error occurred (AccessDenied) when calling ...), AWS docs 'Troubleshooting AccessDenied'",
        lines: &[
            "An error occurred (AccessDenied) when calling the PutObject operation: User: arn:aws:iam::123456789012:user/ci is not authorized to perform: s3:PutObject on resource: arn:aws:s3:::bucket/key",
        ],
        exit: 254,
    },
    Quoted {
        name: "lambda-not-authorized",
        expect: "permission",
        source: "AWS Lambda API error (AccessDeniedException), Lambda developer guide",
        lines: &[
            "An error occurred (AccessDeniedException) when calling the UpdateFunctionCode operation: User: arn:aws:sts::1:assumed-role/deploy/ci is not authorized to perform: lambda:UpdateFunctionCode",
        ],
        exit: 254,
    },
    Quoted {
        name: "docker-push-denied",
        expect: "permission",
        source: "Docker registry push error, docker docs",
        lines: &["denied: requested access to the resource is denied"],
        exit: 1,
    },
    Quoted {
        name: "aws-expired-token",
        expect: "expired",
        source: "AWS STS/SDK error ExpiredToken, AWS docs 'Errors for temporary credentials'",
        lines: &[
            "An error occurred (ExpiredToken) when calling the GetCallerIdentity operation: The security token included in the request is expired",
        ],
        exit: 254,
    },
    Quoted {
        name: "tls-certificate-expired",
        expect: "expired",
        source: "curl error 60 text with an expired server certificate, curl docs",
        lines: &["curl: (60) SSL certificate problem: certificate has expired"],
        exit: 60,
    },
    Quoted {
        name: "s3-presigned-expired",
        expect: "expired",
        source: "S3 REST error for an expired presigned URL, S3 API reference (AccessDenied: Request has expired)",
        lines: &["<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"],
        exit: 22,
    },
    Quoted {
        name: "github-repo-not-found",
        expect: "repository-access",
        source: "git over HTTPS to GitHub without access, GitHub docs 'Error: Repository not found'",
        lines: &[
            "remote: Repository not found.",
            "fatal: repository 'https://github.com/acme/private.git/' not found",
        ],
        exit: 128,
    },
    Quoted {
        name: "gitlab-basic-denied",
        expect: "repository-access",
        source: "git over HTTPS to GitLab with a bad token, GitLab docs",
        lines: &[
            "remote: HTTP Basic: Access denied",
            "fatal: Authentication failed for 'https://gitlab.com/acme/app.git/'",
        ],
        exit: 128,
    },
    Quoted {
        name: "ssh-host-key",
        expect: "repository-access",
        source: "OpenSSH when known_hosts disagrees, ssh(1)",
        lines: &[
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
            "Host key verification failed.",
            "fatal: Could not read from remote repository.",
        ],
        exit: 128,
    },
    Quoted {
        name: "cloudformation-rollback-failed",
        expect: "conflict",
        source: "CloudFormation ValidationError, AWS docs 'Update rollback failed'",
        lines: &[
            "An error occurred (ValidationError) when calling the UpdateStack operation: Stack:arn:aws:cloudformation:eu-west-1:1:stack/app/x is in UPDATE_ROLLBACK_FAILED state and can not be updated.",
        ],
        exit: 254,
    },
    Quoted {
        name: "terraform-state-lock",
        expect: "conflict",
        source: "Terraform state locking error, Terraform docs 'State Locking'",
        lines: &[
            "Error: Error acquiring the state lock",
            "Lock Info:",
            "  ID:        3f6c1e3a",
            "  Who:       ci@runner-2",
        ],
        exit: 1,
    },
    Quoted {
        name: "lambda-resource-conflict",
        expect: "conflict",
        source: "Lambda ResourceConflictException, Lambda API reference",
        lines: &[
            "An error occurred (ResourceConflictException) when calling the UpdateFunctionCode operation: The operation cannot be performed at this time. An update is in progress for resource",
        ],
        exit: 254,
    },
    Quoted {
        name: "docker-port-allocated",
        expect: "conflict",
        source: "Docker Engine error when a host port is taken, docker docs",
        lines: &[
            "docker: Error response from daemon: driver failed programming external connectivity on endpoint web: Bind for 0.0.0.0:8080 failed: port is already allocated.",
        ],
        exit: 125,
    },
    Quoted {
        name: "s3-wrong-region",
        expect: "config",
        source: "S3 AuthorizationHeaderMalformed, S3 API reference",
        lines: &[
            "An error occurred (AuthorizationHeaderMalformed) when calling the ListObjects operation: The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'",
        ],
        exit: 254,
    },
    Quoted {
        name: "go-test-fail",
        expect: "test-failure",
        source: "go test output format, `go help test`",
        lines: &[
            "=== RUN   TestAdd",
            "    calc_test.go:9: Add(1, 2) = 4, want 3",
            "--- FAIL: TestAdd (0.00s)",
            "FAIL",
            "FAIL\texample.com/calc\t0.002s",
        ],
        exit: 1,
    },
    Quoted {
        name: "jest-fail",
        expect: "test-failure",
        source: "Jest default reporter output, jestjs.io",
        lines: &[
            "FAIL src/sum.test.js",
            "  ✕ adds 1 + 2 to equal 3 (4 ms)",
            "Tests:       1 failed, 1 passed, 2 total",
        ],
        exit: 1,
    },
    Quoted {
        name: "java-heap",
        expect: "out-of-memory",
        source: "JVM error text, Java SE troubleshooting guide",
        lines: &["Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space"],
        exit: 1,
    },
    Quoted {
        name: "node-heap",
        expect: "out-of-memory",
        source: "V8 fatal error text, Node.js docs --max-old-space-size",
        lines: &[
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
        ],
        exit: 134,
    },
    Quoted {
        name: "dns",
        expect: "network",
        source: "curl error 6 text, curl docs (not produced: no DNS traffic leaves this machine)",
        lines: &["curl: (6) Could not resolve host: registry.example.com"],
        exit: 6,
    },
    Quoted {
        name: "npm-eacces",
        expect: "permission",
        source: "npm EACCES error, npm docs 'Resolving EACCES permissions errors'",
        lines: &[
            "npm ERR! code EACCES",
            "npm ERR! Error: EACCES: permission denied, mkdir '/usr/lib/node_modules/x'",
        ],
        exit: 243,
    },
];

#[test]
fn the_corpus_is_diagnosed_at_least_95_percent_right() {
    let (_http, port) = status_server();
    let moto = moto();
    let crate_dir = "cat > Cargo.toml <<'EOF'\n[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\nEOF\nmkdir -p src\ncat > src/lib.rs <<'EOF'\npub fn add(a: i32, b: i32) -> i32 { a - b }\n#[test]\nfn adds() { assert_eq!(add(1, 2), 3); }\nEOF\ncargo test --offline --quiet 2>&1";
    let mut cases = vec![
        real(
            "git-missing-repo",
            "repository-access",
            "git clone -q /nonexistent/app.git app",
        ),
        real(
            "git-http-401",
            "repository-access",
            &format!("git clone -q http://127.0.0.1:{port}/private/app.git app"),
        ),
        real(
            "git-http-404",
            "repository-access",
            &format!("git clone -q http://127.0.0.1:{port}/missing/app.git app"),
        ),
        real("cargo-test", "test-failure", crate_dir),
        real(
            "pytest",
            "test-failure",
            "printf 'def test_div():\\n    assert 1 / 1 == 2\\n' > test_x.py\npython3 -m pytest -q test_x.py",
        ),
        real(
            "unittest",
            "test-failure",
            "printf 'import unittest\\nclass T(unittest.TestCase):\\n    def test_x(self):\\n        self.assertEqual(1, 2)\\n' > test_u.py\npython3 -m unittest test_u",
        ),
        real(
            "junit-xml",
            "test-failure",
            "printf '<testsuite><testcase classname=\"calc.T\" name=\"adds\">\\n<failure message=\"1 != 2\"/></testcase></testsuite>\\n' > report.xml\ncat report.xml\nexit 1",
        ),
        real(
            "curl-refused",
            "network",
            &format!("curl -sS http://127.0.0.1:{}/", free_port()),
        ),
        real(
            "python-refused",
            "network",
            &format!(
                "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {}))\"",
                free_port()
            ),
        ),
        real(
            "curl-403",
            "permission",
            &format!("curl -sSf http://127.0.0.1:{port}/forbidden/x"),
        ),
        real(
            "memory-ulimit",
            "out-of-memory",
            "ulimit -v 200000\npython3 -c \"x = bytearray(2 * 1024 ** 3)\"",
        ),
        real("sigkill-137", "out-of-memory", "sh -c 'kill -9 $$'"),
        real(
            "disk-full",
            "disk-full",
            "dd if=/dev/zero of=/dev/full bs=1k count=1",
        ),
        real(
            "missing-command",
            "command-not-found",
            "definitely-not-a-command --version",
        ),
        real(
            "not-executable",
            "permission",
            "printf 'echo hi\\n' > tool.sh\n./tool.sh",
        ),
        real(
            "port-in-use",
            "conflict",
            "python3 -c \"import socket; a = socket.socket(); a.bind(('127.0.0.1', 0)); a.listen(); b = socket.socket(); b.bind(a.getsockname())\"",
        ),
        real("mkdir-exists", "conflict", "mkdir out\nmkdir out"),
        real(
            "git-remote-exists",
            "conflict",
            "git init -q r && cd r && git remote add origin /a && git remote add origin /b",
        ),
        real(
            "unset-variable",
            "config",
            "set -u\necho \"deploying to $DEPLOY_TARGET\"",
        ),
        real(
            "python-keyerror",
            "config",
            "python3 -c \"import os; os.environ['DATABASE_URL']\"",
        ),
        real(
            "unknown",
            "unknown",
            "echo 'the frobnicator is cross'\nexit 3",
        ),
        Real {
            name: "timeout",
            expect: "timeout",
            job: "        timeout: 1s\n        run: sleep 30\n".into(),
        },
        Real {
            name: "missing-secret",
            expect: "config",
            job: "        secrets: [NOT_SET_ANYWHERE_TOKEN]\n        run: echo hi\n".into(),
        },
        Real {
            name: "retries-then-timeout",
            expect: "timeout",
            job: "        timeout: 1s\n        retries: 1\n        run: sleep 30\n".into(),
        },
        real(
            "stale-lock",
            "conflict",
            "touch deploy.lock\nif [ -e deploy.lock ]; then echo 'lock file exists: deploy.lock (left by an interrupted deploy)' >&2; exit 1; fi",
        ),
    ];
    if let Some((_, mport)) = &moto {
        let py = |body: &str| {
            format!(
                "python3 - <<'EOF'\nimport boto3\nkw = dict(endpoint_url='http://127.0.0.1:{mport}', aws_access_key_id='test', aws_secret_access_key='test')\n{body}\nEOF"
            )
        };
        cases.push(real("s3-no-such-key", "expired", &py("s3 = boto3.client('s3', region_name='us-east-1', **kw)\ns3.create_bucket(Bucket='gantry-why')\ns3.get_object(Bucket='gantry-why', Key='builds/app-1.2.tar.zst')")));
        cases.push(real("s3-wrong-region", "config", &py("boto3.client('s3', region_name='eu-west-1', **kw).create_bucket(Bucket='gantry-why-eu')")));
    }
    cases.push(real(
        "tls-certificate-expired",
        "expired",
        EXPIRED_CERTIFICATE,
    ));
    let moto_auth = moto_with_auth();
    if let Some((_, aport)) = &moto_auth {
        cases.push(real(
            "s3-access-denied",
            "permission",
            &format!(
                "python3 - <<'EOF'\nimport boto3\nurl = 'http://127.0.0.1:{aport}'\niam = boto3.client('iam', endpoint_url=url, region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test')\niam.create_user(UserName='ci')\nkey = iam.create_access_key(UserName='ci')['AccessKey']\ns3 = boto3.client('s3', endpoint_url=url, region_name='us-east-1', aws_access_key_id=key['AccessKeyId'], aws_secret_access_key=key['SecretAccessKey'])\ns3.put_object(Bucket='releases', Key='app.tar.zst', Body=b'x')\nEOF"
            ),
        ));
    } else {
        panic!("moto_server is needed (pip install 'moto[server]'; .ci/run installs it)");
    }

    let mut results: Vec<(String, &str, String)> = Vec::new();
    for case in &cases {
        results.push((
            format!("{} (run)", case.name),
            case.expect,
            diagnose_real(case),
        ));
    }
    for q in QUOTED {
        results.push((
            format!("{} (quoted: {})", q.name, q.source),
            q.expect,
            diagnose_quoted(q),
        ));
    }
    let wrong: Vec<String> = results
        .iter()
        .filter(|(_, e, g)| e != g)
        .map(|(n, e, g)| format!("{n}: expected {e}, got {g}"))
        .collect();
    let total = results.len();
    let right = total - wrong.len();
    let produced = cases.len();
    println!(
        "why corpus: {right}/{total} correct ({:.1}%), {produced} produced by running the tool, {} quoted",
        100.0 * right as f64 / total as f64,
        QUOTED.len()
    );
    for w in &wrong {
        println!("  wrong: {w}");
    }
    assert!(total >= 40, "the corpus has {total} cases");
    assert!(
        right * 100 >= total * 95,
        "accuracy below 95%:\n{}",
        wrong.join("\n")
    );
    // Every category the issue names is exercised.
    for c in [
        "permission",
        "repository-access",
        "expired",
        "conflict",
        "config",
        "test-failure",
        "timeout",
        "out-of-memory",
        "network",
        "disk-full",
        "command-not-found",
        "unknown",
    ] {
        assert!(results.iter().any(|(_, e, _)| *e == c), "no case of {c}");
    }
    let _ = Category::ALL;
}

#[test]
fn changes_since_the_last_good_run_name_the_commit_the_pipeline_diff_and_the_added_secret() {
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: deploy\n    jobs:\n      - name: push\n        run: echo pushing\n",
    );
    let out = f.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    f.commit("//- gantry.yml\nstages:\n  - name: deploy\n    jobs:\n      - name: push\n        secrets: [REGISTRY_TOKEN]\n        run: echo pushing\n", "Push with a registry token");
    let out = f.run(&["run"]);
    assert_eq!(out.code, 1, "{out}");
    let why: Run = f.gantry(&["why"]).output().unwrap().into();
    assert_eq!(why.code, 0, "{why}");
    assert!(
        why.stdout
            .contains("config: A secret the job needs is not configured"),
        "{why}"
    );
    assert!(why.stdout.contains("changed since run 1"), "{why}");
    assert!(why.stdout.contains("Push with a registry token"), "{why}");
    assert!(
        why.stdout
            .contains("+   5         secrets: [REGISTRY_TOKEN]"),
        "{why}"
    );
    assert!(
        why.stdout.contains("secrets added: REGISTRY_TOKEN"),
        "{why}"
    );
    let json: Run = f.gantry(&["why", "2", "--json"]).output().unwrap().into();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["changes"]["secrets_added"][0], "REGISTRY_TOKEN");
    assert_eq!(v["changes"]["good_run"], 1);
    assert_eq!(v["diagnosis"]["evidence"][0]["job"], "push");
    // A run that succeeded has nothing to explain.
    let ok: Run = f.gantry(&["why", "1"]).output().unwrap().into();
    assert_eq!(ok.code, 1);
    assert!(ok.stderr.contains("there is no failure to explain"), "{ok}");
}

#[test]
fn users_add_their_own_rules() {
    let f = Fixture::new(
        "//- gantry.yml\nstages:\n  - name: a\n    jobs:\n      - name: deploy\n        run: |\n          echo 'frobnicator: quota of widgets exhausted'\n          exit 3\n",
    );
    assert_eq!(f.run(&["run"]).code, 1);
    let plain: Run = f.gantry(&["why", "--json"]).output().unwrap().into();
    let v: serde_json::Value = serde_json::from_str(&plain.stdout).unwrap();
    assert_eq!(v["diagnosis"]["category"], "unknown");
    let rules = f.scratch().join("rules.toml");
    std::fs::write(&rules, "[[rule]]\nid = \"widget-quota\"\ncategory = \"config\"\npatterns = [\"quota of widgets exhausted\"]\nsentence = \"The widget quota is used up.\"\nfix = \"Ask the platform team for more widgets.\"\n").unwrap();
    let mine: Run = f
        .gantry(&["why", "--rules", rules.to_str().unwrap()])
        .output()
        .unwrap()
        .into();
    assert_eq!(mine.code, 0, "{mine}");
    assert!(
        mine.stdout.contains("config: The widget quota is used up."),
        "{mine}"
    );
    assert!(
        mine.stdout
            .contains("fix: Ask the platform team for more widgets."),
        "{mine}"
    );
    std::fs::write(&rules, "[[rule]]\nid = \"x\"\ncategory = \"sadness\"\npatterns = [\"x\"]\nsentence = \"x.\"\nfix = \"x\"\n").unwrap();
    let bad: Run = f
        .gantry(&["why", "--rules", rules.to_str().unwrap()])
        .output()
        .unwrap()
        .into();
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr
            .contains("unknown category `sadness`; use one of: permission"),
        "{bad}"
    );
}
