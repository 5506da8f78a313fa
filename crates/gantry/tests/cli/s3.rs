//! Artifacts in an S3 bucket: a real S3 API (`moto_server` on 127.0.0.1) behind a server with
//! `[artifacts] url = "s3://…"`, reached through a small TCP proxy of the test that counts the
//! bytes sent to S3 and can cut the endpoint off mid-upload.

use crate::server_support::{Served, bare_repo, curl, curl_followed, push, status_of};
use crate::support::{files_under, moto};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A TCP proxy to `127.0.0.1:upstream` that counts the bytes clients send, and, once they pass
/// `cut_after`, drops every connection and refuses new ones (the endpoint is gone), or once they
/// pass `stall_after`, stops forwarding (holds the upload in the middle) until
/// [`Proxy::restore`].
struct Proxy {
    port: u16,
    sent: Arc<AtomicU64>,
    cut_after: Arc<AtomicU64>,
    stall_after: Arc<AtomicU64>,
    stalled: Arc<AtomicBool>,
    dead: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicU64::new(0));
        let cut_after = Arc::new(AtomicU64::new(u64::MAX));
        let stall_after = Arc::new(AtomicU64::new(u64::MAX));
        let stalled = Arc::new(AtomicBool::new(false));
        let dead = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let (s, c, d, st, o) = (
            sent.clone(),
            cut_after.clone(),
            dead.clone(),
            stop.clone(),
            open.clone(),
        );
        let (hold_after, held) = (stall_after.clone(), stalled.clone());
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                o.lock().unwrap().push(client.try_clone().unwrap());
                o.lock().unwrap().push(server.try_clone().unwrap());
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (sent, cut, dead, open) = (s.clone(), c.clone(), d.clone(), o.clone());
                let (hold_after, held) = (hold_after.clone(), held.clone());
                // Client to S3: counted, and cut past the limit.
                std::thread::spawn(move || {
                    pipe(client, server, |n| {
                        let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                        if total > cut.load(Ordering::SeqCst) {
                            dead.store(true, Ordering::SeqCst);
                            for s in open.lock().unwrap().iter() {
                                let _ = s.shutdown(Shutdown::Both);
                            }
                            return false;
                        }
                        // Hold the bytes (at most a minute) while stalling is asked for.
                        for _ in 0..6000 {
                            if total <= hold_after.load(Ordering::SeqCst) {
                                break;
                            }
                            held.store(true, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        true
                    })
                });
                std::thread::spawn(move || pipe(s2, c2, |_| true));
            }
        });
        Proxy {
            port,
            sent,
            cut_after,
            stall_after,
            stalled,
            dead,
            stop,
            open,
            accept: Some(accept),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// The endpoint goes away once `more` further bytes have been sent to it.
    fn cut_after(&self, more: u64) {
        self.cut_after.store(self.sent() + more, Ordering::SeqCst);
    }

    /// Forwarding stops once `more` further bytes have been sent.
    fn stall_after(&self, more: u64) {
        self.stall_after.store(self.sent() + more, Ordering::SeqCst);
    }

    fn stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }

    fn restore(&self) {
        self.stall_after.store(u64::MAX, Ordering::SeqCst);
        self.cut_after.store(u64::MAX, Ordering::SeqCst);
        self.dead.store(false, Ordering::SeqCst);
    }
}

/// Copies until EOF, an error, or `go` says stop (each read's size is handed to it).
fn pipe(mut from: TcpStream, mut to: TcpStream, mut go: impl FnMut(usize) -> bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !go(n) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// moto_server on 127.0.0.1 with an empty bucket `builds`.
fn moto_with_bucket() -> (crate::support::Helper, u16) {
    let (helper, port) =
        moto().expect("moto_server is needed (pip install 'moto[server]'; .ci/run installs it)");
    let (head, _) = curl(&["-X", "PUT", &format!("http://127.0.0.1:{port}/builds")]);
    assert_eq!(status_of(&head), 200, "{head}");
    (helper, port)
}

/// A server watching `hello.git`, keeping artifacts under `s3://builds/{prefix}` reached on
/// `port` (moto, or the proxy in front of it); `extra` adds lines to `[artifacts]`.
fn server_config(prefix: &str, port: u16, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\n[[projects]]\nname = \"hello\"\nrepo = \"hello.git\"\npoll = \"0s\"\n\n[artifacts]\nurl = \"s3://builds/{prefix}\"\nendpoint = \"http://127.0.0.1:{port}\"\nregion = \"us-east-1\"\naccess_key_id = \"moto\"\nsecret_access_key_env = \"TEST_S3_SECRET\"\n{extra}"
    )
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Keys under `prefix` in moto's bucket `builds` (ListObjectsV2, unsigned: moto allows it).
fn keys(moto_port: u16, prefix: &str) -> Vec<String> {
    let (head, body) = curl(&[&format!(
        "http://127.0.0.1:{moto_port}/builds?list-type=2&prefix={prefix}"
    )]);
    assert_eq!(status_of(&head), 200, "{head}");
    let text = String::from_utf8_lossy(&body).into_owned();
    text.split("<Key>")
        .skip(1)
        .map(|k| k.split("</Key>").next().unwrap().to_string())
        .collect()
}

/// Builds `dist/` with 12 MiB of seeded random bytes (so: a multipart upload) and a readme;
/// a later stage needs it and prints the readme.
fn pipeline(seed: u32) -> String {
    format!(
        "stages:
  - name: build
    jobs:
      - name: make
        run: |
          mkdir -p dist && echo hello-{seed} > dist/readme
          python3 -c 'import random,sys; random.seed({seed}); sys.stdout.buffer.write(random.randbytes(12 << 20))' > dist/blob
        artifacts: [{{ name: site, path: dist/ }}]
  - name: check
    jobs:
      - name: use
        needs: [site]
        run: cat dist/readme && test $(wc -c < dist/blob) -eq 12582912
"
    )
}

#[test]
fn artifacts_in_s3_are_stored_once_shared_presigned_and_never_half_written() {
    let (_moto, moto_port) = moto_with_bucket();
    let proxy = Proxy::start(moto_port);

    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), &pipeline(1));
    let config = server_config(
        "ci",
        proxy.port,
        "timeout = \"5s\"
retries = 1
",
    );
    let s = Served::start_in(dir, &config);
    let trigger = || -> (i64, String) {
        let id = s.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
            .as_i64()
            .unwrap();
        (id, s.wait_finished(id))
    };
    let site_of = |run: i64| -> serde_json::Value {
        s.api("GET", &format!("/api/runs/{run}/artifacts"), "")
            .json()["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "site")
            .unwrap()
            .clone()
    };

    // Stored in the bucket (not on local disk), fetched back for the later stage.
    let (first, status) = trigger();
    let explain = |run: i64| {
        format!(
            "{}\n{}",
            s.api("GET", &format!("/api/runs/{run}"), "").body,
            s.api("GET", &format!("/api/runs/{run}/logs"), "").body
        )
    };
    assert_eq!(status, "succeeded", "{}", explain(first));
    let site = site_of(first);
    let digest = site["digest"].as_str().unwrap().to_string();
    let hexd = digest.trim_start_matches("sha256:");
    let key = format!("ci/objects/sha256/{}/{hexd}", &hexd[..2]);
    assert_eq!(keys(moto_port, "ci/"), vec![key.clone()]);
    let (head, body) = curl(&[&format!("http://127.0.0.1:{moto_port}/builds/{key}")]);
    assert_eq!(status_of(&head), 200);
    assert_eq!(sha256(&body), digest, "the object in S3 matches its digest");
    assert_eq!(body.len() as i64, site["size"].as_i64().unwrap());
    assert!(body.len() > 12 << 20, "big enough for a multipart upload");
    assert!(
        files_under(&s.data().join("artifacts/objects")).is_empty(),
        "nothing kept on local disk"
    );
    let logs = s.api("GET", &format!("/api/runs/{first}/logs?job=use"), "");
    assert!(logs.body.contains("hello-1"), "{}", logs.body);

    // The same content again: its digest is found in the bucket, no byte of it is sent.
    let before = proxy.sent();
    push(s.dir.path(), &pipeline(1), "same content");
    let (second, status) = trigger();
    assert_eq!(status, "succeeded", "{}", explain(second));
    assert_eq!(site_of(second)["digest"], digest.as_str());
    let resent = proxy.sent() - before;
    assert!(
        resent < 64 * 1024,
        "{resent} bytes went to S3 for content it already had"
    );

    // Share link served by gantry (Range included), a presigned S3 URL, `artifact get`.
    let cli = |args: &[&str]| -> crate::support::Run {
        std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(args)
            .env("GANTRY_HOME", s.data())
            .env("TEST_S3_SECRET", "moto-secret")
            .env_remove("GANTRY_SERVER")
            .env_remove("GANTRY_TOKEN")
            .output()
            .unwrap()
            .into()
    };
    let shared = cli(&["artifact", "share", "site", "--expires", "10m"]);
    assert_eq!(shared.code, 0, "{shared}");
    let (head, got) = curl(&[shared.stdout.trim()]);
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(sha256(&got), digest);
    let (head, part) = curl(&["-r", "1000-1999", shared.stdout.trim()]);
    assert_eq!(status_of(&head), 206, "{head}");
    assert_eq!(part, got[1000..2000]);

    let presigned = cli(&["artifact", "share", "site", "--presign", "--expires", "10m"]);
    assert_eq!(presigned.code, 0, "{presigned}");
    let url = presigned.stdout.trim();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{}/builds/{key}?", proxy.port))
            && url.contains("X-Amz-Signature=")
            && url.contains("X-Amz-Expires=600"),
        "{url}"
    );
    let (head, got) = curl(&[url]);
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(
        sha256(&got),
        digest,
        "the presigned URL fetches the artifact"
    );
    // The download's name is a signed query parameter, which AWS S3 answers with as
    // Content-Disposition (moto ignores it, so only the URL is checked here).
    assert!(
        url.contains(&format!(
            "response-content-disposition=attachment%3B%20filename%3D%22site-{}.tar.zst%22",
            &hexd[..12]
        )),
        "{url}"
    );

    // A stable link that redirects to a fresh presigned URL at each visit.
    let stable = cli(&["artifact", "share", "site", "--stable", "--presign"]);
    assert_eq!(stable.code, 0, "{stable}");
    let (head, _) = curl(&[stable.stdout.trim()]);
    assert_eq!(status_of(&head), 302, "{head}");
    assert!(
        head.contains(&format!(
            "ocation: http://127.0.0.1:{}/builds/{key}?",
            proxy.port
        )),
        "{head}"
    );
    let got = curl_followed(stable.stdout.trim());
    assert_eq!(sha256(&got), digest);

    let copy = s.dir.path().join("site.tar.zst");
    let out = cli(&["artifact", "get", "site", "-o", copy.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(sha256(&std::fs::read(&copy).unwrap()), digest);

    // S3 goes away 3 MB into a new upload: the job fails saying so, nothing is visible in
    // the bucket, nothing is left in the staging directory.
    push(s.dir.path(), &pipeline(2), "new content");
    proxy.cut_after(3 << 20);
    let (failed, status) = trigger();
    assert_eq!(status, "failed");
    let detail = s.api("GET", &format!("/api/runs/{failed}"), "").body;
    let logs = s
        .api("GET", &format!("/api/runs/{failed}/logs?job=make"), "")
        .body;
    assert!(
        (detail + &logs).contains("nothing was stored"),
        "the job says the upload failed: {logs}"
    );
    proxy.restore();
    assert_eq!(
        keys(moto_port, "ci/"),
        vec![key.clone()],
        "no partial object"
    );
    assert!(files_under(&s.data().join("artifacts/tmp")).is_empty());

    // With S3 back, the same commit stores; gc then deletes the old object from the bucket.
    let (third, status) = trigger();
    assert_eq!(status, "succeeded", "{}", explain(third));
    let new_digest = site_of(third)["digest"].as_str().unwrap().to_string();
    assert_eq!(keys(moto_port, "ci/").len(), 2);
    let gc = cli(&["gc", "--keep-runs", "1", "--keep-younger-than", "1ms"]);
    assert_eq!(gc.code, 0, "{gc}");
    let left = keys(moto_port, "ci/");
    assert_eq!(left.len(), 1, "{left:?}\n{gc}");
    assert!(left[0].ends_with(new_digest.trim_start_matches("sha256:")));
}

/// Endpoint, region and credentials from the usual `AWS_*` variables alone; a missing bucket is
/// a clear error that stores nothing.
#[test]
fn the_s3_store_reads_aws_variables_and_names_a_missing_bucket() {
    let (_moto, moto_port) = moto_with_bucket();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("dist")).unwrap();
    std::fs::write(ws.join("dist/app.txt"), "v1").unwrap();
    std::fs::write(ws.join("report.json"), "{}").unwrap();
    let store = |url: &str, paths: &[&str]| -> crate::support::Run {
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("artifact-store.json"),
            format!("{{\"url\": \"{url}\"}}"),
        )
        .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["--data-dir", data.to_str().unwrap(), "artifact", "store"])
            .args(["--workspace", ws.to_str().unwrap()])
            .args(paths)
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{moto_port}"))
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "moto")
            .env("AWS_SECRET_ACCESS_KEY", "moto-secret")
            .output()
            .unwrap()
            .into()
    };
    let out = store("s3://builds/env", &["dist/"]);
    assert_eq!(out.code, 0, "{out}");
    let dir_digest = serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let out = store("s3://builds/env", &["report.json"]);
    assert_eq!(out.code, 0, "{out}");
    let stored: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        stored["media_type"], "application/json",
        "a single file as is"
    );
    let file_digest = stored["digest"].as_str().unwrap().to_string();
    let mut found = keys(moto_port, "env/");
    found.sort();
    let mut expected: Vec<String> = [&dir_digest, &file_digest]
        .iter()
        .map(|d| {
            let h = d.trim_start_matches("sha256:");
            format!("env/objects/sha256/{}/{h}", &h[..2])
        })
        .collect();
    expected.sort();
    assert_eq!(found, expected);

    let out = store("s3://no-such-bucket/x", &["dist/"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("s3://no-such-bucket/x")
            && out.stderr.contains("nothing was stored")
            && out
                .stderr
                .contains("(S3 answered NoSuchBucket: The specified bucket does not exist)"),
        "{out}"
    );
    assert!(files_under(&data.join("artifacts/tmp")).is_empty());
}

/// Releases unpack their artifact from the bucket; a rollback checks the object is still there
/// (without reading it back) and refuses when it is gone.
#[test]
fn deploys_and_rollbacks_use_artifacts_from_s3() {
    let (_moto, moto_port) = moto_with_bucket();
    let pipeline = |version: &str| {
        format!(
            "stages:
  - name: build
    jobs:
      - name: make
        run: mkdir -p dist && echo {version} > dist/VERSION
        artifacts: [{{ name: app, path: dist/ }}]
environments:
  production:
    target:
      command:
        deploy: cat dist/VERSION
        rollback: cat dist/VERSION
    health:
      command: test -f dist/VERSION
"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), &pipeline("v1"));
    let config = server_config("deploys", moto_port, "");
    let s = Served::start_in(dir, &config);
    let mut digests = Vec::new();
    for (i, version) in ["v1", "v2"].iter().enumerate() {
        if i > 0 {
            push(s.dir.path(), &pipeline(version), version);
        }
        let id = s.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
            .as_i64()
            .unwrap();
        assert_eq!(s.wait_finished(id), "succeeded");
        let arts = s
            .api("GET", &format!("/api/runs/{id}/artifacts"), "")
            .json();
        digests.push(arts["artifacts"][0]["digest"].as_str().unwrap().to_string());
        let deployed = s.api(
            "POST",
            "/api/projects/hello/environments/production/deploy",
            &format!("{{\"artifact\": \"app\", \"run\": {id}}}"),
        );
        assert!(deployed.status < 300, "{}\n{}", deployed.body, s.log());
    }
    let rollback = |body: &str| {
        s.api(
            "POST",
            "/api/projects/hello/environments/production/rollback",
            body,
        )
    };
    let back = rollback("{}");
    assert!(back.status < 300, "{}", back.body);
    let release_dir = s.data().join("releases/hello/production");
    let versions: Vec<String> = [1, 2]
        .iter()
        .map(|n| std::fs::read_to_string(release_dir.join(format!("{n}/dist/VERSION"))).unwrap())
        .collect();
    assert_eq!(versions, ["v1\n", "v2\n"], "unpacked from the bucket");

    // v2's object disappears from the bucket: rolling back to it is refused, traffic untouched.
    let hexd = digests[1].trim_start_matches("sha256:");
    // A signed DeleteObject (moto refuses unsigned deletes), by boto3, which moto brings.
    let deleted = std::process::Command::new("python3")
        .args([
            "-c",
            "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='moto', aws_secret_access_key='x').delete_object(Bucket='builds', Key=sys.argv[2])",
            &format!("http://127.0.0.1:{moto_port}"),
            &format!("deploys/objects/sha256/{}/{hexd}", &hexd[..2]),
        ])
        .output()
        .unwrap();
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(
        keys(moto_port, "deploys/")
            .iter()
            .all(|k| !k.ends_with(hexd))
    );
    let refused = rollback("{\"to\": 2}");
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(
        refused.body.contains("is missing from s3://builds/deploys")
            && refused.body.contains("Traffic was not touched"),
        "{}",
        refused.body
    );
}

/// kill -9 of the server in the middle of an upload: nothing in the bucket, the run
/// `interrupted`, the staging file removed at the next start, and the next run stores.
#[test]
fn a_server_killed_mid_upload_leaves_nothing_behind() {
    let (_moto, moto_port) = moto_with_bucket();
    let proxy = Proxy::start(moto_port);
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), &pipeline(3));
    let config = server_config("ci", proxy.port, "");
    let mut s = Served::start_in(dir, &config);
    proxy.stall_after(3 << 20);
    let id = s.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
        .as_i64()
        .unwrap();
    assert!(
        crate::support::wait_until(std::time::Duration::from_secs(60), || proxy.stalled()),
        "the upload never started: {}",
        s.log()
    );
    let staging = s.data().join("artifacts/tmp");
    assert!(!files_under(&staging).is_empty(), "packed, being uploaded");
    s.kill9();
    proxy.restore();
    assert!(
        keys(moto_port, "ci/").is_empty(),
        "nothing visible in the bucket"
    );

    s.restart();
    assert!(
        files_under(&staging).is_empty(),
        "the dead server's staging file is removed at start"
    );
    let run = s.api("GET", &format!("/api/runs/{id}"), "").json();
    assert_eq!(run["run"]["status"], "interrupted", "{run}");
    assert!(keys(moto_port, "ci/").is_empty());
    let again = s.api("POST", &format!("/api/runs/{id}/rerun"), "{}");
    assert!(again.status < 300, "{}", again.body);
    let next = again.json()["run"].as_i64().unwrap();
    assert_eq!(s.wait_finished(next), "succeeded", "{}", s.log());
    assert_eq!(keys(moto_port, "ci/").len(), 1);
}

/// A runner's artifact goes straight to S3 by a presigned PUT (bound to its SHA-256), never
/// through the server, and the next job's runner fetches it straight from there too.
#[test]
fn a_runner_moves_its_artifacts_straight_to_and_from_s3() {
    let logs = tempfile::tempdir().unwrap();
    let moto_log = logs.path().join("moto.log");
    let (_moto, moto_port) = crate::support::moto_logging(&[], Some(&moto_log))
        .expect("moto_server is needed (pip install 'moto[server]'; .ci/run installs it)");
    let (head, _) = curl(&["-X", "PUT", &format!("http://127.0.0.1:{moto_port}/builds")]);
    assert_eq!(status_of(&head), 200, "{head}");

    let dir = tempfile::tempdir().unwrap();
    let pipeline = "stages:
  - name: build
    jobs:
      - name: pack
        runs_on: [far]
        run: mkdir dist && head -c 3000000 /dev/urandom > dist/blob && (cd dist && sha256sum blob > sum)
        artifacts:
          - name: app
            path: dist/
  - name: use
    jobs:
      - name: check
        needs: [app]
        runs_on: [far]
        run: cd dist && sha256sum -c sum
";
    bare_repo(dir.path(), pipeline);
    let config = server_config("far", moto_port, "\n[runner]\nsandbox = false\n");
    let s = Served::start_in(dir, &config);
    let token = crate::runners::runner_token(&s, "far");
    let scratch = tempfile::tempdir().unwrap();
    let mut runner =
        crate::runners::Runner::start_with(&s.url, &token, "r-far", "far", scratch.path(), &[]);
    let run = s.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
        .as_i64()
        .unwrap();
    let status = s.wait_finished(run);
    assert_eq!(
        status,
        "succeeded",
        "{}\n{}",
        s.api("GET", &format!("/api/runs/{run}/logs"), "").body,
        runner.said()
    );
    assert_eq!(runner.ran().len(), 2, "{}", runner.said());
    assert_eq!(runner.terminate(), Some(0), "{}", runner.said());

    let app = s
        .api("GET", &format!("/api/runs/{run}/artifacts"), "")
        .json()["artifacts"][0]
        .clone();
    assert_eq!(app["name"], "app");
    let digest = app["digest"].as_str().unwrap();
    let hexd = digest.trim_start_matches("sha256:");
    let key = format!("far/objects/sha256/{}/{hexd}", &hexd[..2]);
    assert_eq!(keys(moto_port, "far/"), vec![key.clone()]);
    // Its one PUT is the presigned one (signed in its query), and it was the runner's: the
    // server's own requests sign in a header, so their lines carry no signature.
    let log = std::fs::read_to_string(&moto_log).unwrap();
    let puts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("\"PUT /builds/{key}")))
        .collect();
    assert_eq!(puts.len(), 1, "{log}");
    assert!(puts[0].contains("X-Amz-Signature="), "{}", puts[0]);
    assert!(
        puts[0].contains("x-amz-checksum-sha256"),
        "the checksum header is signed: {}",
        puts[0]
    );
    // The next job, on the runner too, fetched it straight from the bucket as well.
    let gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("\"GET /builds/{key}?")))
        .collect();
    assert_eq!(gets.len(), 1, "{log}");
    assert!(gets[0].contains("X-Amz-Signature="), "{}", gets[0]);
}
