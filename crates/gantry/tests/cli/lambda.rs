//! The `lambda` target against moto_server on 127.0.0.1 (its Lambda and IAM APIs): a job zips
//! a Python handler, gantry creates the function, publishes a version per release and moves
//! the `live` alias; rollback moves the alias back without an upload; retention deletes the
//! versions of retired releases only; an alarm in the bake rolls back by itself; moto's IAM
//! mode gives an AccessDenied that names the AWS error code and request id. What AWS holds is
//! read back with boto3 (moto's own dependency), not through gantry.

use crate::server_support::Served;
use crate::support::{Fixture, Helper, Run, moto, moto_with_auth};
use std::process::Command;

const ROLE: &str = "arn:aws:iam::123456789012:role/gantry-lambda";

/// Runs a boto3 snippet against moto at `port`; `c` is a client of `service`. Prints what
/// the snippet prints.
fn boto(port: u16, service: &str, code: &str, creds: (&str, &str)) -> String {
    let script = format!(
        "import boto3, json\nc = boto3.client('{service}', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='{}', aws_secret_access_key='{}')\n{code}\n",
        creds.0, creds.1
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "boto3: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const TEST_CREDS: (&str, &str) = ("testing", "testing");

fn spec(function: &str, version: &str, port: u16, extra: &str) -> String {
    format!(
        r#"//- gantry.yml
name: {function}
stages:
  - name: build
    jobs:
      - name: zip
        run: |
          python3 - <<'PY'
          import zipfile
          with zipfile.ZipFile("function.zip", "w") as z:
              z.writestr("app.py", "def handler(event, context):\n    return {{'version': '{version}'}}\n")
          PY
        artifacts:
          - name: app
            path: function.zip
environments:
  production:
    target:
      lambda:
        function: {function}
        region: us-east-1
        endpoint: http://127.0.0.1:{port}
        role: {ROLE}
        runtime: python3.12
        handler: app.handler
        memory: 256
        timeout: 30s
        env:
          MODE: production
{extra}"#
    )
}

struct Fn {
    fx: Fixture,
    server: Served,
    port: u16,
    name: String,
    extra: String,
    _moto: Helper,
}

impl Fn {
    fn new(test: &str, extra: &str) -> Self {
        let (moto, port) = moto().expect("moto_server (.ci/run installs moto[server])");
        boto(
            port,
            "iam",
            "c.create_role(RoleName='gantry-lambda', AssumeRolePolicyDocument='{}')",
            TEST_CREDS,
        );
        Self::with(test, extra, moto, port, TEST_CREDS)
    }

    fn with(test: &str, extra: &str, moto: Helper, port: u16, creds: (&str, &str)) -> Self {
        let name = format!("fn-{test}-{}", std::process::id());
        let fx = Fixture::new(&spec(&name, "v0", port, extra));
        let server = Served::start_with_data_env(
            "listen = \"127.0.0.1:0\"\n",
            &fx.data(),
            &[
                ("AWS_ACCESS_KEY_ID", creds.0),
                ("AWS_SECRET_ACCESS_KEY", creds.1),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        );
        Fn {
            fx,
            server,
            port,
            name,
            extra: extra.to_string(),
            _moto: moto,
        }
    }

    fn build(&self, version: &str) -> i64 {
        self.fx.commit(
            &spec(&self.name, version, self.port, &self.extra),
            &format!("version {version}"),
        );
        let out = self.fx.run(&["run"]);
        assert_eq!(out.code, 0, "building {version}: {out}");
        self.fx.show_last()
    }

    fn deploy(&self, run: i64) -> Run {
        self.fx.run(&[
            "deploy",
            "production",
            "--artifact",
            "app",
            "--run",
            &run.to_string(),
        ])
    }

    fn deploy_ok(&self, run: i64) {
        let out = self.deploy(run);
        assert_eq!(
            out.code,
            0,
            "deploy of run {run}: {out}\nserver log:\n{}",
            self.server.log()
        );
    }

    /// The alias: (version, additional weights as JSON).
    fn alias(&self) -> (String, String) {
        let out = boto(
            self.port,
            "lambda",
            &format!(
                "a = c.get_alias(FunctionName='{}', Name='live')\nprint(a['FunctionVersion'])\nprint(json.dumps(a.get('RoutingConfig', {{}}).get('AdditionalVersionWeights', {{}})))",
                self.name
            ),
            TEST_CREDS,
        );
        let (v, w) = out.split_once('\n').unwrap_or((&out, "{}"));
        (v.to_string(), w.to_string())
    }

    fn versions(&self) -> Vec<String> {
        let out = boto(
            self.port,
            "lambda",
            &format!(
                "print(' '.join(v['Version'] for v in c.list_versions_by_function(FunctionName='{}')['Versions']))",
                self.name
            ),
            TEST_CREDS,
        );
        let mut v: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        v.sort();
        v
    }
}

trait LastRun {
    fn show_last(&self) -> i64;
}

impl LastRun for Fixture {
    /// The id of the newest run.
    fn show_last(&self) -> i64 {
        let out = self.run(&["runs", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("runs --json");
        v.as_array()
            .and_then(|runs| runs.iter().filter_map(|r| r["id"].as_i64()).max())
            .expect("a run")
    }
}

/// Create, update, publish, alias; rollback moves the alias back (no upload); keep 2 deletes
/// exactly the retired release's version.
#[test]
fn lambda_releases_publish_versions_and_roll_back_by_moving_the_alias() {
    let f = Fn::new("loop", "    keep: 2\n    bake: 1s\n");
    let v1 = f.build("v1");
    let v2 = f.build("v2");
    f.deploy_ok(v1);
    assert_eq!(f.alias().0, "1");
    let config = boto(
        f.port,
        "lambda",
        &format!(
            "g = c.get_function_configuration(FunctionName='{}')\nprint(g['MemorySize'], g['Timeout'], g['Environment']['Variables']['MODE'], g['Environment']['Variables']['GANTRY_RELEASE'])",
            f.name
        ),
        TEST_CREDS,
    );
    assert_eq!(config, "256 30 production 1");

    f.deploy_ok(v2);
    assert_eq!(f.alias().0, "2");
    let events = f.fx.run(&["releases", "production", "--events"]).stdout;
    assert!(events.contains("published version 2"), "{events}");

    let out = f.fx.run(&["rollback", "production"]);
    assert_eq!(out.code, 0, "{out}\nserver log:\n{}", f.server.log());
    assert_eq!(f.alias(), ("1".to_string(), "{}".to_string()));
    let events = f.fx.run(&["releases", "production", "--events"]).stdout;
    assert!(events.contains("nothing uploaded"), "{events}");
    assert_eq!(
        f.versions(),
        ["$LATEST", "1", "2"],
        "a rollback publishes nothing"
    );

    // Releases: 1 (v1), 2 (v2), 3 (rollback to 1). Then v3 = release 4, version 3: keep 2
    // keeps releases 4 and 3 (version 1); release 2 is retired and version 2 deleted.
    let v3 = f.build("v3");
    f.deploy_ok(v3);
    assert_eq!(f.alias().0, "3");
    assert_eq!(f.versions(), ["$LATEST", "1", "3"]);
}

/// A firing alarm during the bake rolls the alias back by itself.
#[test]
fn an_alarm_in_the_bake_moves_the_alias_back() {
    let f = Fn::new("alarm", "    bake: 30s\n");
    let v1 = f.build("v1");
    let v2 = f.build("v2");
    f.deploy_ok(v1);
    f.deploy_ok(v2);
    assert_eq!(f.alias().0, "2");
    let r = f.server.api(
        "POST",
        &format!("/api/projects/{}/environments/production/alarm", f.name),
        r#"{"status":"firing","name":"lambda-errors"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        crate::support::wait_until(std::time::Duration::from_secs(15), || f.alias().0 == "1"),
        "alias {:?} after {}\n{}\nserver log:\n{}",
        f.alias(),
        r.body,
        f.fx.run(&["releases", "production", "--events"]).stdout,
        f.server.log()
    );
    let events = f.fx.run(&["releases", "production", "--events"]).stdout;
    assert!(events.contains("alarm lambda-errors"), "{events}");
}

/// A zip over Lambda's direct-upload limit, and an account without permission: clear errors
/// naming the environment (and the AWS error code with its request id); nothing switched.
#[test]
fn oversized_zips_and_denied_calls_are_named_and_leave_the_alias() {
    let f = Fn::new("big", "    bake: 1s\n");
    let v1 = f.build("v1");
    f.deploy_ok(v1);
    // A 51 MiB zip (stored, not compressed: random bytes).
    f.fx.commit(
        &spec(&f.name, "v2", f.port, "    bake: 1s\n").replace(
            "z.writestr(\"app.py\"",
            "z.writestr(\"blob\", __import__('os').urandom(51 * 1024 * 1024))\n              z.writestr(\"app.py\"",
        ),
        "too big",
    );
    let out = f.fx.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    let big = f.fx.show_last();
    let out = f.deploy(big);
    assert_ne!(out.code, 0, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("environment production"), "{text}");
    assert!(text.contains("at most 50 MiB"), "{text}");
    assert_eq!(f.alias().0, "1");

    // Lambda out of reach (an endpoint nothing answers; a wrong region fails the same way,
    // but reaching AWS's names is not possible here): the field is named, nothing switched.
    let dead = crate::support::free_port();
    f.fx.commit(&spec(&f.name, "v3", dead, "    bake: 1s\n"), "no endpoint");
    let out = f.fx.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    let out = f.deploy(f.fx.show_last());
    assert_ne!(out.code, 0, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("production: deployment of release 3"),
        "{text}"
    );
    assert!(
        text.contains("cannot reach Lambda in region us-east-1 (target.lambda.endpoint)"),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
    assert_eq!(f.alias().0, "1");

    // moto's IAM mode. Its Lambda API refuses the signature of every client there (boto3's
    // too: SignatureDoesNotMatch, as XML the SDK cannot read) before any policy is looked at,
    // so what is checked is that such an answer still reaches the user with its code, status
    // and request id. AccessDeniedException and the other codes are classified in
    // gantry-engine's why tests.
    let (moto, port) = moto_with_auth().expect("moto_server");
    let keys = boto(
        port,
        "iam",
        "c.create_user(UserName='nobody')\nk = c.create_access_key(UserName='nobody')['AccessKey']\nprint(k['AccessKeyId'], k['SecretAccessKey'])",
        TEST_CREDS,
    );
    let (id, secret) = keys.split_once(' ').unwrap();
    let denied = Fn::with("denied", "    bake: 1s\n", moto, port, (id, secret));
    let run = denied.build("v1");
    let out = denied.deploy(run);
    assert_ne!(out.code, 0, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("SignatureDoesNotMatch (HTTP 403)"), "{text}");
    assert!(text.contains("request id"), "{text}");
    assert!(
        text.contains("environment production") || text.contains("production:"),
        "{text}"
    );
}

/// A canary as alias weights, observed with GetAlias at each step: 10% of calls to the new
/// version, then (promoted) all; the next canary is aborted by an alarm and the alias goes
/// back to the stable version alone, its version deleted.
#[test]
fn a_lambda_canary_weighs_the_alias_step_by_step() {
    let strategy = "    bake: 1s
    strategy:
      canary:
        steps:
          - weight: 10
          - approval: true
";
    let f = Fn::new("canary", strategy);
    let v1 = f.build("v1");
    let v2 = f.build("v2");
    f.deploy_ok(v1);
    assert_eq!(f.alias(), ("1".to_string(), "{}".to_string()));
    let out = f.deploy(v2);
    assert_eq!(out.code, 0, "{out}\nserver log:\n{}", f.server.log());
    assert!(out.stdout.contains("is a canary"), "{out}");
    let waiting = || {
        let s = f.fx.run(&["status", "production", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&s.stdout).unwrap_or_default();
        v["canary"]["state"] == "waiting-approval"
    };
    assert!(
        crate::support::wait_until(std::time::Duration::from_secs(15), waiting),
        "{}",
        f.fx.run(&["releases", "production", "--events"]).stdout
    );
    assert_eq!(f.alias(), ("1".to_string(), r#"{"2": 0.1}"#.to_string()));
    let out = f.fx.run(&["promote", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        crate::support::wait_until(std::time::Duration::from_secs(15), || f.alias().0 == "2"),
        "{:?}",
        f.alias()
    );
    assert_eq!(f.alias(), ("2".to_string(), "{}".to_string()));

    let v3 = f.build("v3");
    let out = f.deploy(v3);
    assert_eq!(out.code, 0, "{out}");
    assert!(crate::support::wait_until(
        std::time::Duration::from_secs(15),
        waiting
    ));
    assert_eq!(f.alias(), ("2".to_string(), r#"{"3": 0.1}"#.to_string()));
    let r = f.server.api(
        "POST",
        &format!("/api/projects/{}/environments/production/alarm", f.name),
        r#"{"status":"firing","name":"lambda-errors"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("aborting the canary"), "{}", r.body);
    assert!(
        crate::support::wait_until(std::time::Duration::from_secs(15), || {
            f.alias() == ("2".to_string(), "{}".to_string())
        }),
        "{:?}",
        f.alias()
    );
    assert!(
        crate::support::wait_until(std::time::Duration::from_secs(10), || {
            f.versions() == ["$LATEST", "1", "2"]
        }),
        "the aborted canary's version is deleted: {:?}",
        f.versions()
    );
}
