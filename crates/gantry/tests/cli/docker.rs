//! The `docker` target for real, against podman serving the Docker Engine API (`.ci/run` starts
//! it; shared/notes/containers.md): a job builds an image FROM scratch (static busybox serving
//! a page) with `podman build`, gantry saves it into the artifact store, and releases run as
//! containers behind the router. Each test names its project uniquely and removes, by id, every
//! container and image it made.

use crate::deploy::get;
use crate::server_support::Served;
use crate::support::{Fixture, Run, free_port, wait_until};
use std::process::Command;
use std::time::Duration;

/// What the image does when it starts.
#[derive(Clone, Copy)]
enum Image {
    /// Serves `hello from VERSION` on 8080.
    Serves,
    /// Exits at once with code 3, saying why.
    ExitsAtOnce,
    /// Serves for two seconds, then exits with code 4.
    CrashesSoon,
}

fn dockerfile(kind: Image) -> &'static str {
    match kind {
        Image::Serves => {
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n\
             ENTRYPOINT [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
        }
        Image::ExitsAtOnce => {
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n\
             ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"echo config file /etc/app.toml is missing >&2; exit 3\"]\n"
        }
        Image::CrashesSoon => {
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n\
             ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox httpd -p 8080 -h /www && /bin/busybox sleep 2 && echo worker lost >&2 && exit 4\"]\n"
        }
    }
}

/// podman 4.3 races when builds and image removals of images sharing layers run at once
/// ("layer not known" while one test's cleanup removes images as another builds): the tests
/// of this module take turns.
static PODMAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn take_turn() -> std::sync::MutexGuard<'static, ()> {
    PODMAN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Web {
    fx: Fixture,
    server: Served,
    port: u16,
    /// The project's name: unique per test, so containers and images are found by it.
    name: String,
    extra: String,
    host: String,
    runs: i64,
    /// Held until this test's containers and images are removed (dropped last).
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Web {
    fn new(test: &str, extra: &str) -> Self {
        let turn = take_turn();
        let name = format!("dk-{test}-{}", std::process::id());
        let port = free_port();
        let host = "unix:///run/podman/podman.sock".to_string();
        let fx = Fixture::new(&spec(&name, "v0", port, extra, &host, Image::Serves));
        let server = Served::start_with_data("listen = \"127.0.0.1:0\"\n", &fx.data());
        Web {
            fx,
            server,
            port,
            name,
            extra: extra.to_string(),
            host,
            runs: 0,
            _turn: turn,
        }
    }

    /// Commits `version` of an image that does `kind`, builds it; returns the run id.
    fn build(&mut self, version: &str, kind: Image) -> i64 {
        self.fx.commit(
            &spec(
                &self.name,
                version,
                self.port,
                &self.extra,
                &self.host,
                kind,
            ),
            &format!("version {version}"),
        );
        let out = self.fx.run(&["run"]);
        assert_eq!(out.code, 0, "building {version}: {out}");
        self.runs += 1;
        self.runs
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

    fn serving(&self) -> String {
        match get(&format!("127.0.0.1:{}", self.port), "/") {
            Ok((200, body, _)) => body.trim().trim_start_matches("hello from ").to_string(),
            Ok((status, body, _)) => format!("HTTP {status}: {body}"),
            Err(e) => format!("error: {e}"),
        }
    }

    /// This project's containers: (id, release label, running).
    fn containers(&self) -> Vec<(String, String, bool)> {
        let out = podman(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=gantry.project={}", self.name),
            "--format",
            "{{.ID}} {{.Labels}} {{.State}}",
            "--no-trunc",
        ]);
        let mut v: Vec<(String, String, bool)> = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let id = l.split_whitespace().next().unwrap().to_string();
                let release = podman(&[
                    "inspect",
                    "--format",
                    "{{index .Config.Labels \"gantry.release\"}} {{.State.Running}}",
                    &id,
                ]);
                let mut parts = release.split_whitespace();
                let r = parts.next().unwrap_or_default().to_string();
                let running = parts.next() == Some("true");
                (id, r, running)
            })
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v
    }

    fn image_id(&self, version: &str) -> String {
        podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &self.image(version),
        ])
        .trim()
        .to_string()
    }

    fn image(&self, version: &str) -> String {
        format!("{}:{version}", self.name)
    }

    fn release_log(&self, release: i64) -> String {
        let path = self
            .fx
            .data()
            .join("releases")
            .join(&self.name)
            .join("production")
            .join(format!("{release}.log"));
        std::fs::read_to_string(&path).unwrap_or_default()
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.server.stop();
        for (id, _, _) in self.containers() {
            let _ = podman_status(&["rm", "-f", &id]);
        }
        remove_images(&self.name);
    }
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().expect("podman");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn podman_status(args: &[&str]) -> bool {
    Command::new("podman")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn spec(name: &str, version: &str, port: u16, extra: &str, host: &str, kind: Image) -> String {
    format!(
        r#"//- gantry.yml
name: {name}
stages:
  - name: build
    jobs:
      - name: image
        run: |
          mkdir -p ctx/www
          cp /bin/busybox ctx/busybox
          cp Dockerfile ctx/Dockerfile
          echo "hello from {version}" > ctx/www/index.html
          podman build -q -t {name}:{version} ctx
        artifacts:
          - name: app
            image: {name}:{version}
environments:
  production:
    target:
      docker:
        host: {host}
        port: 8080
        memory: 64m
        env:
          APP_MODE: production
    health:
      http: /
      timeout: 10s
      interval: 100ms
    router:
      listen: 127.0.0.1:{port}
{extra}//- Dockerfile
{dockerfile}"#,
        dockerfile = dockerfile(kind)
    )
}

/// Deploy, deploy again, roll back; the image of a kept release deleted from the engine comes
/// back from the artifact store on rollback; `keep` leaves exactly that many containers and
/// the router answers from the right one each time.
#[test]
fn docker_releases_deploy_roll_back_and_come_back_from_the_store() {
    let mut web = Web::new("loop", "    keep: 2\n    bake: 1s\n");
    let v1 = web.build("v1", Image::Serves);
    let v2 = web.build("v2", Image::Serves);
    // The run's image is tagged for the run.
    let tagged = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        tagged.contains(&format!("{}:run-{v1}", web.name)),
        "{tagged}"
    );

    web.deploy_ok(v1);
    assert_eq!(web.serving(), "v1");
    let first = web.containers();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].1, "1");
    let labels = podman(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"gantry.environment\"}} {{.HostConfig.Memory}}",
        &first[0].0,
    ]);
    assert_eq!(labels.trim(), format!("production {}", 64 << 20));

    web.deploy_ok(v2);
    assert_eq!(web.serving(), "v2");

    let out = web.fx.run(&["rollback", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(web.serving(), "v1");

    // Release 2's image vanishes from the engine (pruned, or another host): its container goes
    // with it. Rolling forward to it loads the image back from the artifact store.
    let v2_image = web.image_id("v2");
    assert!(!v2_image.is_empty());
    assert!(podman_status(&["rmi", "-f", &v2_image]));
    assert!(web.image_id("v2").is_empty(), "the image is gone");
    let out = web.fx.run(&["rollback", "production", "--to", "2"]);
    assert_eq!(out.code, 0, "{out}\nserver log:\n{}", web.server.log());
    assert_eq!(web.serving(), "v2");
    assert!(
        web.release_log(2)
            .contains("loading it from the artifact store"),
        "{}",
        web.release_log(2)
    );
    let restored = podman(&["image", "inspect", "--format", "{{.Id}}", &v2_image]);
    assert_eq!(restored.trim(), v2_image, "the same image id came back");

    // Releases so far: 1 (v1), 2 (v2), 3 (rollback to 1), 4 (rollback to 2). A fifth, v3:
    // with keep 2, releases 5 and 4 are kept — containers of deploys 5 and 2 (a rollback runs
    // its deploy's container) — and deploy 1's container is removed.
    let v3 = web.build("v3", Image::Serves);
    web.deploy_ok(v3);
    assert_eq!(web.serving(), "v3");
    let containers = || {
        web.containers()
            .into_iter()
            .map(|c| c.1)
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(10), || containers() == ["2", "5"]),
        "containers left: {:?}",
        containers()
    );
    // The image of a kept release keeps its tag; the retired release's tag is gone.
    let tags = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        !tags.contains(&format!("{}-production:release-1", web.name)),
        "{tags}"
    );
    assert!(
        tags.contains(&format!("{}-production:release-2", web.name)),
        "{tags}"
    );
}

/// A gantry that restarts finds its containers by their labels and adopts the live one as it
/// runs: the same container id, never restarted, serving throughout.
#[test]
fn a_restarted_gantry_adopts_the_running_container() {
    let mut web = Web::new("adopt", "    bake: 1s\n");
    let v1 = web.build("v1", Image::Serves);
    web.deploy_ok(v1);
    assert_eq!(web.serving(), "v1");
    let before = web.containers();
    assert_eq!(before.len(), 1);
    let started = podman(&["inspect", "--format", "{{.State.StartedAt}}", &before[0].0]);

    web.server.stop();
    // Stopping gantry leaves the container running (only the router was gantry's).
    assert!(web.containers()[0].2, "the container still runs");
    // Someone starts a container with this gantry's labels for a release it never made.
    let instance = podman(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"gantry.instance\"}}",
        &before[0].0,
    ]);
    let stray = podman(&[
        "create",
        "--label",
        &format!("gantry.instance={}", instance.trim()),
        "--label",
        &format!("gantry.project={}", web.name),
        "--label",
        "gantry.environment=production",
        "--label",
        "gantry.release=99",
        &web.image("v1"),
    ])
    .trim()
    .to_string();
    assert!(!stray.is_empty());
    web.server.restart();
    assert!(
        wait_until(Duration::from_secs(20), || web.serving() == "v1"),
        "serving again: {}\nserver log:\n{}",
        web.serving(),
        web.server.log()
    );
    let after: Vec<_> = web
        .containers()
        .into_iter()
        .filter(|c| c.0 != stray)
        .collect();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].0, before[0].0, "the same container");
    // The stray is reported, not removed.
    assert!(
        web.server
            .log()
            .contains("labelled release 99) belongs to no release gantry keeps"),
        "{}",
        web.server.log()
    );
    assert!(
        web.containers().iter().any(|c| c.0 == stray),
        "left as it is"
    );
    let again = podman(&["inspect", "--format", "{{.State.StartedAt}}", &after[0].0]);
    assert_eq!(started, again, "not restarted");
    let events = web.fx.run(&["releases", "production", "--events"]);
    assert!(events.stdout.contains("adopted"), "{}", events.stdout);
}

/// Bad images and a wrong engine address: each a clear error naming the environment and what
/// went wrong, and the live release keeps serving. A release that crashes in its bake is
/// rolled back by itself.
#[test]
fn bad_images_and_engines_leave_the_live_release_serving() {
    let mut web = Web::new("bad", "    bake: 10s\n");
    let good = web.build("v1", Image::Serves);
    web.deploy_ok(good);
    assert_eq!(web.serving(), "v1");

    let exits = web.build("v2", Image::ExitsAtOnce);
    let out = web.deploy(exits);
    assert_ne!(out.code, 0, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("exited with code 3"), "{text}");
    assert!(text.contains("/etc/app.toml is missing"), "{text}");
    assert_eq!(web.serving(), "v1");

    let crashes = web.build("v3", Image::CrashesSoon);
    let out = web.deploy(crashes);
    assert_eq!(out.code, 0, "healthy at first: {out}");
    // The router falls back to release 1 the moment the container dies; the bake sees the
    // crashes (the watcher looks every 500 ms) and rolls back: release 4, release 1 again.
    let rolled_back = || {
        let r = web.fx.run(&["releases", "production", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
        v.as_array().is_some_and(|all| {
            all.iter()
                .any(|h| h["release"]["number"] == 4 && h["release"]["state"] == "live")
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), rolled_back),
        "rolled back by itself: {}\nserver log:\n{}",
        web.fx.run(&["releases", "production", "--events"]).stdout,
        web.server.log()
    );
    assert_eq!(web.serving(), "v1");
    let why = web.fx.run(&["releases", "production", "--events"]);
    assert!(why.stdout.contains("exited with code 4"), "{}", why.stdout);
    assert!(why.stdout.contains("worker lost"), "{}", why.stdout);
    // `gantry why production` reads the engine's evidence: the exit code from inspect and the
    // container's last output.
    let why = web.fx.run(&["why", "production"]);
    let text = format!("{}{}", why.stdout, why.stderr);
    assert!(text.contains("exited with code 4"), "{text}");
    assert!(text.contains("worker lost"), "{text}");

    // The engine's address is wrong: the deployment names the environment and the field.
    web.host = "unix:///nonexistent/podman.sock".into();
    let wrong = web.build("v4", Image::Serves);
    let out = web.deploy(wrong);
    assert_ne!(out.code, 0, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("environment production"), "{text}");
    assert!(text.contains("target.docker.host"), "{text}");
    assert!(
        text.contains("no Docker engine at unix:///nonexistent/podman.sock"),
        "{text}"
    );
    assert_eq!(web.serving(), "v1");
}

/// A canary of a docker release through the router: named users first, then a sticky share of
/// everyone, then all users once promoted — the same router path as for processes.
#[test]
fn a_docker_canary_shares_users_stickily_through_the_router() {
    let strategy = "    bake: 1s
    strategy:
      canary:
        users: { header: X-User, allow: [alice] }
        steps:
          - weight: 20
          - approval: true
        analysis:
          min_requests: 0
";
    let mut web = Web::new("canary", strategy);
    let v1 = web.build("v1", Image::Serves);
    let v2 = web.build("v2", Image::Serves);
    web.deploy_ok(v1);
    assert_eq!(web.serving(), "v1");
    let out = web.deploy(v2);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("is a canary"), "{out}");
    let status = || {
        let s = web.fx.run(&["status", "production", "--json"]);
        serde_json::from_str::<serde_json::Value>(&s.stdout).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(15), || {
            let s = status();
            s["canary"]["state"] == "waiting-approval" && s["canary"]["percent"] == 20
        }),
        "{}",
        status()
    );
    let router = format!("127.0.0.1:{}", web.port);
    let release_of = |user: &str| {
        crate::canary::get_with(&router, &[("X-User", user)])
            .unwrap()
            .1
    };
    assert_eq!(release_of("alice"), "2");
    let on_canary = (0..1_000)
        .filter(|i| release_of(&format!("visitor-{i}")) == "2")
        .count();
    assert!(
        (140..=260).contains(&on_canary),
        "{on_canary} of 1,000 on the canary"
    );
    for u in 0..10 {
        let user = format!("sticky-{u}");
        let first = release_of(&user);
        assert!((0..30).all(|_| release_of(&user) == first), "{user} moved");
    }
    let out = web.fx.run(&["promote", "production"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        wait_until(Duration::from_secs(15), || {
            status()["live"]["number"] == 2 && status()["canary"].is_null()
        }),
        "{}",
        status()
    );
    assert!((0..20).all(|i| release_of(&format!("visitor-{i}")) == "2"));
}

/// A job's `image:` is built through the Engine API after its steps (its output in the job's
/// log as a step of its own), saved into the artifact store and deployed; a Dockerfile that
/// fails to build fails the job with the engine's message, and nothing is stored.
#[test]
fn an_image_built_through_the_engine_api_deploys_and_a_broken_dockerfile_fails_the_job() {
    let name = format!("dk-api-{}", std::process::id());
    let port = free_port();
    let environment = format!(
        "environments:
  production:
    target:
      docker:
        host: unix:///run/podman/podman.sock
        port: 8080
    health:
      http: /
      timeout: 10s
      interval: 100ms
    bake: 1s
    router:
      listen: 127.0.0.1:{port}
"
    );
    let pipeline = |file: &str| built_by_api(&name, "api", "", &environment, file);
    let turn = take_turn();
    let fx = Fixture::new(&pipeline(dockerfile(Image::Serves)));
    let mut web = Web {
        server: Served::start_with_data("listen = \"127.0.0.1:0\"\n", &fx.data()),
        fx,
        port,
        name: name.clone(),
        extra: String::new(),
        host: "unix:///run/podman/podman.sock".into(),
        runs: 0,
        _turn: turn,
    };
    let out = web.fx.run(&["run"]);
    assert_eq!(out.code, 0, "{out}");
    web.runs = 1;
    let logs = web.fx.logs(1, "image");
    assert!(logs.contains("building gantry-build-"), "{logs}");
    assert!(
        logs.contains("COPY www /www"),
        "the engine's output is in the log: {logs}"
    );
    web.deploy_ok(1);
    assert_eq!(web.serving(), "api");

    web.fx.commit(
        &pipeline("FROM scratch\nCOPY no-such-file /x\n"),
        "a broken Dockerfile",
    );
    let out = web.fx.run(&["run"]);
    assert_ne!(out.code, 0, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("step `build image app`"), "{text}");
    assert!(text.contains("failed to build"), "{text}");
    assert!(text.contains("no-such-file"), "{text}");
    let artifacts = web.fx.run(&["artifact", "ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&artifacts.stdout).unwrap_or_default();
    assert_eq!(
        listed.as_array().map(|a| a.len()),
        Some(1),
        "only the first run's image is stored: {}",
        artifacts.stdout
    );
    // The failed build left no image behind under the run's tag.
    let tags = podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!tags.contains(":run-2"), "{tags}");
}

/// `push:` sends the built image to a registry (Debian's docker-registry on 127.0.0.1) under
/// `run-N` and the commit, as a step of its own; a registry that is down fails the job with
/// the registry's address and records no artifact; a login whose secret is not set fails
/// before anything is pushed.
#[test]
fn an_image_pushed_to_a_registry_carries_the_run_and_commit_and_a_dead_registry_fails_the_job() {
    let _turn = take_turn();
    let name = format!("dk-push-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let (registry, reg) = crate::support::registry(dir.path());
    let repository = format!("127.0.0.1:{reg}/team/{name}");
    let pipeline = |version: &str, push: &str| {
        built_by_api(
            &name,
            version,
            &format!("          push: {push}\n"),
            "",
            dockerfile(Image::Serves),
        )
    };
    let fx = Fixture::new(&pipeline("v1", &repository));
    let cleanup = Cleanup(name.clone());
    let out = fx.run(&["run"]);
    assert_eq!(out.code, 0, "{out}\n{}", fx.logs(1, "image"));
    let commit = fx.git(&["rev-parse", "HEAD"]);
    let short = &commit.trim()[..12];
    let logs = fx.logs(1, "image");
    assert!(
        logs.contains(&format!("gantry: pushed {repository}:run-1 as sha256:")),
        "{logs}"
    );
    assert!(logs.contains(&format!("{repository}:{short}")), "{logs}");
    let (status, body, _) = get(
        &format!("127.0.0.1:{reg}"),
        &format!("/v2/team/{name}/tags/list"),
    )
    .expect("the registry answers");
    assert_eq!(status, 200, "{body}");
    let tags: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut tags: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    tags.sort();
    let mut want = vec!["run-1", short];
    want.sort();
    assert_eq!(tags, want, "{body}");

    // A login whose password secret is not set fails the job before its steps, and says which.
    fx.commit(
        &pipeline(
            "v2",
            &format!("{{ to: {repository}, username: ci, password_secret: REGISTRY_PASSWORD }}"),
        ),
        "push with a login",
    );
    let out = fx.run(&["run"]);
    assert_ne!(out.code, 0, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("the registry password secret `REGISTRY_PASSWORD` is not set"),
        "{text}"
    );
    assert!(
        !text.contains("build image app"),
        "nothing was built: {text}"
    );

    // The registry goes away: the push fails with its address, nothing is recorded.
    drop(registry);
    fx.commit(&pipeline("v3", &repository), "push to a dead registry");
    let out = fx.run(&["run"]);
    assert_ne!(out.code, 0, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("step `push image app`"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{reg}")), "{text}");
    let artifacts = fx.run(&["artifact", "ls", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&artifacts.stdout).unwrap_or_default();
    assert_eq!(
        listed.as_array().map(|a| a.len()),
        Some(1),
        "only the pushed run's image is recorded: {}",
        artifacts.stdout
    );
    drop(cleanup);
}

/// A project whose job builds `app` through the Engine API from a context serving `hello from
/// VERSION`, with `image_keys` added to its `image:` and `rest` (environments) after the stages.
fn built_by_api(name: &str, version: &str, image_keys: &str, rest: &str, file: &str) -> String {
    format!(
        r#"//- gantry.yml
name: {name}
stages:
  - name: build
    jobs:
      - name: image
        run: |
          mkdir -p ctx/www
          cp /bin/busybox ctx/busybox
          echo "hello from {version}" > ctx/www/index.html
          cp Dockerfile ctx/Dockerfile
        image:
          name: app
          context: ctx
          file: ctx/Dockerfile
{image_keys}{rest}//- Dockerfile
{file}"#
    )
}

/// Removes, by id, the images of a test's project when dropped.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_images(&self.0);
    }
}

/// Removes, by id, every image with a name that holds `project`: the test's own tags, the
/// run tags gantry adds, the releases' tags (gantry-<instance>-<project>-production) and the
/// pushed ones.
fn remove_images(project: &str) {
    let listed = podman(&["images", "--format", "{{.ID}} {{.Repository}}"]);
    for l in listed.lines() {
        if let Some((id, repo)) = l.split_once(' ')
            && repo.contains(project)
        {
            let _ = podman_status(&["rmi", "-f", id]);
        }
    }
}
