//! Tests of the pipeline file: the issue's example parses as written; each malformed file gives
//! the errors shown in its snapshot (`src/snapshots/`).

use super::*;
use gantry_model::StageKind;
use std::time::Duration;

const EXAMPLE: &str = r#"env:                          # optional, for every step
  GREETING: hello
stages:                       # run in order; a failed stage stops the run
  - name: build
    jobs:                     # jobs of one stage run in parallel
      - name: compile
        run: make build       # one step; or `steps:` with several
        artifacts:
          - name: app
            path: dist/       # file, directory or glob, relative to the workspace
  - name: test
    jobs:
      - name: unit
        steps:
          - name: unit tests
            run: make test
        timeout: 10m
        retries: 1
        env: { LEVEL: 2 }
        secrets: [API_TOKEN]  # values from the environment of gantry (or a secrets file); masked
      - name: lint
        run: ./lint.sh
        allow_failure: true
  - name: staging
    deploy:                   # parsed and checked now; executed by the deploy work
      environment: staging
      artifact: app
environments: {}              # described by the deploy work; accept and check the block
"#;

#[test]
fn the_documented_example_parses() {
    let checked = parse_pipeline("gantry.yml", EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let p = checked.pipeline;
    assert_eq!(p.env, vec![("GREETING".to_string(), "hello".to_string())]);
    assert_eq!(p.stages.len(), 3);
    let StageKind::Jobs(test_jobs) = &p.stages[1].kind else {
        panic!("test stage has jobs")
    };
    let unit = &test_jobs[0];
    assert_eq!(unit.timeout, Some(Duration::from_secs(600)));
    assert_eq!(unit.retries, 1);
    assert_eq!(unit.env, vec![("LEVEL".to_string(), "2".to_string())]);
    assert_eq!(unit.secrets, vec!["API_TOKEN".to_string()]);
    assert_eq!(unit.steps[0].name, "unit tests");
    assert!(test_jobs[1].allow_failure);
    let StageKind::Deploy(deploy) = &p.stages[2].kind else {
        panic!("deploy stage")
    };
    assert_eq!(deploy.environments, vec!["staging".to_string()]);
    assert_eq!(deploy.artifact, "app");
    // The environment is not described yet: a warning, not an error.
    assert_eq!(checked.warnings.items.len(), 1);
    assert!(checked.warnings.items[0].message.contains("staging"));
}

fn errors(source: &str) -> String {
    match parse_pipeline("gantry.yml", source) {
        Ok(_) => panic!("expected errors for:\n{source}"),
        Err(diags) => diags.to_string(),
    }
}

macro_rules! malformed {
    ($($name:ident: $source:expr;)+) => {
        $(
            #[test]
            fn $name() {
                insta::assert_snapshot!(stringify!($name), errors($source));
            }
        )+
    };
}

malformed! {
    yaml_syntax_error: "stages:\n  - name: build\n    jobs: [\n      - name: x\n";
    empty_file: "# nothing here\n";
    not_a_mapping: "- build\n- test\n";
    misspelled_top_key: "stage:\n  - name: build\n    jobs:\n      - name: a\n        run: true\n";
    missing_stages: "env:\n  A: b\n";
    empty_stages: "stages: []\n";
    step_instead_of_steps: "stages:\n  - name: test\n    jobs:\n      - name: unit\n        step:\n          - run: make test\n";
    stage_without_name: "stages:\n  - jobs:\n      - name: a\n        run: 'true'\n";
    duplicate_stage_names: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: 'true'\n  - name: build\n    jobs:\n      - name: b\n        run: 'true'\n";
    duplicate_job_names: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: 'true'\n  - name: test\n    jobs:\n      - name: a\n        run: 'true'\n";
    empty_stage: "stages:\n  - name: build\n    jobs: []\n";
    stage_with_jobs_and_deploy: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: 'true'\n    deploy:\n      environment: staging\n      artifact: app\n";
    job_with_run_and_steps: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n        steps: [make test]\n      - name: b\n        env: {}\n";
    bad_durations: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n        timeout: 10x\n      - name: b\n        run: make\n        timeout: 30\n";
    bad_retries_and_allow_failure: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n        retries: -1\n        allow_failure: yes\n      - name: b\n        run: make\n        retries: 99\n";
    deploy_unknown_artifact: "stages:\n  - name: build\n    jobs:\n      - name: compile\n        run: make\n        artifacts:\n          - name: app\n            path: dist/\n  - name: staging\n    deploy:\n      environment: staging\n      artifact: ap\nenvironments:\n  staging: {}\n";
    deploy_artifact_of_later_stage: "stages:\n  - name: staging\n    deploy:\n      environment: staging\n      artifact: app\n  - name: build\n    jobs:\n      - name: compile\n        run: make\n        artifacts:\n          - name: app\n            path: dist/\nenvironments:\n  staging: {}\n";
    escaping_artifact_paths: "stages:\n  - name: build\n    jobs:\n      - name: compile\n        run: make\n        artifacts:\n          - name: up\n            path: ../secrets\n          - name: abs\n            path: /etc/passwd\n";
    bad_env: "env:\n  GANTRY_RUN: x\n  1BAD: y\n  NESTED: { a: b }\nstages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n        secrets: API_TOKEN\n        env: [A, B]\n";
    duplicate_keys: "stages:\n  - name: build\n    name: again\n    jobs:\n      - name: a\n        run: make\n        run: make again\n";
    duplicate_artifact_names: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n        artifacts: [{ name: app, path: a }]\n      - name: b\n        run: make\n        artifacts: [{ name: app, path: b }]\n";
    bad_environments: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\nenvironments:\n  production:\n    keep: 0\n    targett: {}\n    target:\n      process: {}\n      docker: {}\n";
    process_target_without_router: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\nenvironments:\n  production:\n    target:\n      process:\n        command: ./app --port $PORT\n";
    bad_environment_parts: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\nenvironments:\n  production:\n    target:\n      process:\n        comand: ./app\n    health:\n      http: healthz\n      timeout: 30\n    router:\n      listen: localhost:80\n    bake: soon\n  staging:\n    target:\n      command:\n        deploy: ./deploy.sh\n    health:\n      http: /healthz\n      tcp: true\n  lambda:\n    target:\n      lambda: {}\n";
    command_target_with_http_check: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\nenvironments:\n  production:\n    target:\n      command:\n        deploy: ./deploy.sh\n    health:\n      http: /healthz\n";
    needs_of_other_projects_checked: "stages:\n  - name: build\n    jobs:\n      - name: link\n        run: make\n        needs:\n          - { project: libs }\n          - { project: libs, artifact: core, path: ../x, brnch: main }\n";
    needs_unknown_or_same_stage_artifacts: "stages:\n  - name: build\n    jobs:\n      - name: compile\n        run: make\n        artifacts: [{ name: app, path: dist/ }]\n      - name: pack\n        run: make pack\n        needs: [app]\n  - name: test\n    jobs:\n      - name: unit\n        run: make test\n        needs: [ap]\n";
    when_with_unknown_keys_and_events: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n  - name: deploy\n    when:\n      branches: main\n      event: [push, tags, merge_request]\n    jobs:\n      - name: d\n        run: ./deploy\n";
    when_with_bad_branches: "stages:\n  - name: build\n    when: { branch: [] }\n    jobs:\n      - name: a\n        run: make\n  - name: test\n    when: { branch: [main, 'feature x', refs/heads/dev, main, ''] }\n    jobs:\n      - name: b\n        run: make test\n";
    when_empty_or_not_a_mapping: "stages:\n  - name: build\n    when: {}\n    jobs:\n      - name: a\n        run: make\n  - name: test\n    when: main\n    jobs:\n      - name: b\n        run: make test\n  - name: lint\n    when: { event: [{ push: true }], branch: { main: 1 } }\n    jobs:\n      - name: c\n        run: make lint\n";
    when_branch_and_tag_together: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n  - name: release\n    when: { branch: main, tag: \"v*\" }\n    jobs:\n      - name: r\n        run: ./release\n";
    when_tag_with_events_that_leave_tags_out: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n  - name: release\n    when:\n      tag: [\"v*\"]\n      event: [push, manual]\n    jobs:\n      - name: r\n        run: ./release\n";
    when_with_bad_tags: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n  - name: release\n    when: { tag: [refs/tags/v1, 'v 2', '', \"v*\", \"v*\"], event: [tag, pr] }\n    jobs:\n      - name: r\n        run: ./release\n";
    needs_naming_a_job_and_an_artifact: "stages:\n  - name: build\n    jobs:\n      - name: app\n        run: make\n        artifacts: [{ name: app, path: dist/ }]\n  - name: test\n    jobs:\n      - name: unit\n        run: make test\n        needs: [app]\n      - name: lint\n        run: make lint\n        needs: [{ job: app, artifact: app }, { job: ap }, { artifact: app, branch: main }]\n";
    needs_in_a_cycle: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make a\n        needs: [c]\n      - name: b\n        run: make b\n        needs: [a]\n      - name: c\n        run: make c\n        needs: [b]\n      - name: self\n        run: make self\n        needs: [self]\n";
    matrix_malformed: "stages:\n  - name: test\n    jobs:\n      - name: a\n        run: make\n        matrix: [3.11, 3.12]\n      - name: b\n        run: make\n        matrix: { python: [], 9os: [x], GANTRY_X: [y] }\n      - name: c\n        run: make\n        matrix: { python: [\"3.11\", \"3.11\", [x]] }\n      - name: d\n        run: make\n        matrix: {}\n";
    matrix_exclude_and_include_checked: "stages:\n  - name: test\n    jobs:\n      - name: t\n        run: make\n        matrix:\n          python: [\"3.11\", \"3.12\"]\n          os: [debian, alpine]\n          exclude:\n            - { python: \"3.10\", os: debian }\n            - { pyton: \"3.11\" }\n          include:\n            - { python: \"3.13\" }\n            - { python: \"3.11\", os: debian }\n";
    matrix_too_big_or_all_excluded: "stages:\n  - name: test\n    jobs:\n      - name: big\n        run: make\n        matrix: { a: [1, 2, 3, 4, 5, 6, 7, 8], b: [1, 2, 3, 4, 5, 6, 7, 8], c: [1, 2, 3, 4, 5] }\n      - name: none\n        run: make\n        matrix:\n          a: [x]\n          exclude: [{ a: x }]\n";
    approval_malformed: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n  - name: gate\n    approval: { roles: [deploer, admin, admin], timeout: 0s, supersede: maybe, by: me }\n  - name: both\n    approval: {}\n    jobs:\n      - name: b\n        run: make\n  - name: nobody\n    approval: { roles: [], timeout: 90d }\n";
    if_malformed: "stages:\n  - name: build\n    if: \"$GANTRY_BRANCH = 'main'\"\n    jobs:\n      - name: a\n        run: make\n        if: $GANTRY_BRANH == 'main' && $GANTRY_EVENT == 'push'\n      - name: d\n        run: make\n        if: $GANTRY_EVENT == push\n      - name: b\n        run: make\n        if: \"($DEPLOY == 'yes'\"\n      - name: c\n        run: make\n        if: [1]\n        when: { event: nightly }\n";
    cache_malformed: "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n        cache:\n          - key: \"cargo-{{ hash(Cargo.lock) }}\"\n            paths: [target/, ../outside]\n          - key: \"x-{{ env('HOME') }}\"\n            paths: []\n            restore_keys: [\"\"]\n          - paths: [a/]\n            restor_keys: [a-]\n      - name: b\n        run: make\n        cache: { key: k, paths: [t/] }\n";
    job_image_malformed: "stages:\n  - name: test\n    jobs:\n      - name: a\n        image: \"alpine 3\"\n        resources: { memory: lots, cpus: -1, disk: 1g }\n        run: make\n      - name: b\n        resources: { memory: 1g }\n        run: make\n      - name: c\n        services: [{ name: db, image: postgres }]\n        run: make\n      - name: d\n        image: alpine\n        services:\n          - { name: \"my db\", image: postgres, health: { tcp: 99999 } }\n          - { image: redis, helth: {} }\n        run: make\n";
    many_errors_at_once: "stages:\n  - name: build\n    jobs:\n      - name: compile\n        runn: make\n        timeout: forever\n  - name: test\n    jobs:\n      - name: unit\n        steps:\n          - nme: unit tests\n            run: make test\n        retries: many\n";
}

/// The environment of the deploy issue, as written there.
#[test]
fn the_documented_environment_parses() {
    let src = "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\nenvironments:\n  production:\n    target:\n      process:\n        command: ./hello --port $PORT     # run from the unpacked artifact\n    health:\n      http: /healthz                      # or tcp: true, or command: ./check.sh\n      timeout: 30s\n    keep: 3                               # releases kept ready for rollback (default 3)\n    router:\n      listen: 127.0.0.1:8102              # gantry's HTTP router in front of the releases\n  scripts:\n    target:\n      command:\n        deploy: ./deploy.sh\n        rollback: ./rollback.sh\n        env: { REGION: eu-west-1 }\n    health:\n      command: ./check.sh\n      interval: 1s\n    bake: 2m\n    keep_previous_running: 10m\n";
    let p = parse_pipeline("gantry.yml", src)
        .unwrap_or_else(|e| panic!("{e}"))
        .pipeline;
    let prod = &p.environments[0];
    assert_eq!(prod.keep, 3);
    assert_eq!(
        prod.target,
        Some(gantry_model::TargetSpec::Process {
            command: "./hello --port $PORT".into(),
            env: vec![]
        })
    );
    assert_eq!(
        prod.health.check,
        gantry_model::HealthCheck::Http {
            path: "/healthz".into()
        }
    );
    assert_eq!(prod.health.timeout, Duration::from_secs(30));
    assert_eq!(prod.router.as_ref().unwrap().listen, "127.0.0.1:8102");
    assert_eq!(prod.keep_previous_running, None);
    let scripts = &p.environments[1];
    assert_eq!(
        scripts.target,
        Some(gantry_model::TargetSpec::Command {
            deploy: "./deploy.sh".into(),
            rollback: Some("./rollback.sh".into()),
            env: vec![("REGION".into(), "eu-west-1".into())]
        })
    );
    assert_eq!(
        scripts.health.check,
        gantry_model::HealthCheck::Command {
            command: "./check.sh".into()
        }
    );
    assert_eq!(scripts.health.interval, Duration::from_secs(1));
    assert_eq!(scripts.bake, Duration::from_secs(120));
    assert_eq!(
        scripts.keep_previous_running,
        Some(Duration::from_secs(600))
    );
    // A process target without a health check is checked by TCP.
    let src = "stages:\n  - name: b\n    jobs:\n      - name: a\n        run: make\nenvironments:\n  p:\n    target: { process: { command: ./app } }\n    router: { listen: 127.0.0.1:0 }\n";
    let p = parse_pipeline("gantry.yml", src)
        .unwrap_or_else(|e| panic!("{e}"))
        .pipeline;
    assert_eq!(
        p.environments[0].health.check,
        gantry_model::HealthCheck::Tcp
    );
}

#[test]
fn a_matrix_expands_and_needs_name_jobs_or_artifacts() {
    let p = parse_pipeline(
        "gantry.yml",
        "stages:\n  - name: build\n    jobs:\n      - name: compile\n        run: make\n        artifacts: [{ name: app, path: dist/ }]\n      - name: docs\n        run: make docs\n  - name: test\n    jobs:\n      - name: test\n        run: make test\n        matrix:\n          python: [\"3.11\", \"3.12\"]\n          os: [debian, alpine/3]\n          exclude:\n            - { python: \"3.12\", os: alpine/3 }\n        artifacts: [{ name: \"report-${python}-${os}\", path: report.xml }]\n        needs: [compile]\n      - name: publish\n        run: ./publish\n        needs: [test, { artifact: app }]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .pipeline;
    let StageKind::Jobs(jobs) = &p.stages[1].kind else {
        panic!("jobs")
    };
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "test (3.11, debian)",
            "test (3.11, alpine-3)",
            "test (3.12, debian)",
            "publish"
        ]
    );
    let cell = jobs[1].matrix.as_ref().unwrap();
    assert_eq!(cell.of, "test");
    assert_eq!(
        cell.values,
        [
            ("python".to_string(), "3.11".to_string()),
            ("os".to_string(), "alpine/3".to_string())
        ]
    );
    assert_eq!(jobs[1].artifacts[0].name, "report-3.11-alpine-3");
    // `compile` is a job: waited for, its artifact `app` given.
    assert_eq!(jobs[0].after, ["compile"]);
    assert_eq!(jobs[0].needs, ["app"]);
    // `test` stands for its three combinations.
    assert_eq!(
        jobs[3].after,
        [
            "test (3.11, debian)",
            "test (3.11, alpine-3)",
            "test (3.12, debian)"
        ]
    );
    assert_eq!(
        jobs[3].needs,
        [
            "app",
            "report-3.11-debian",
            "report-3.11-alpine-3",
            "report-3.12-debian"
        ]
    );
    // A pipeline of yesterday means what it meant: `needs: [app]` is the artifact.
    let old = parse_pipeline(
        "gantry.yml",
        "stages:\n  - name: build\n    jobs:\n      - name: compile\n        run: make\n        artifacts: [{ name: app, path: dist/ }]\n  - name: test\n    jobs:\n      - name: unit\n        run: make test\n        needs: [app]\n",
    )
    .unwrap()
    .pipeline;
    let StageKind::Jobs(jobs) = &old.stages[1].kind else {
        panic!("jobs")
    };
    assert_eq!(
        (jobs[0].needs.as_slice(), jobs[0].after.len()),
        (&["app".to_string()][..], 0)
    );
}

#[test]
fn the_pipelines_image_is_every_jobs_that_names_none() {
    let p = parse_pipeline(
        "gantry.yml",
        "image: rust:1.82\nstages:\n  - name: build\n    jobs:\n      - name: a\n        run: cargo build\n        resources: { memory: 1g }\n        services: [{ name: db, image: postgres:16 }]\n      - name: b\n        image: alpine:3\n        run: make\n",
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .pipeline;
    let jobs: Vec<_> = p.jobs().map(|(_, j)| j.clone()).collect();
    let a = jobs[0].container.as_ref().unwrap();
    assert_eq!(
        (a.image.as_str(), a.memory_bytes),
        ("rust:1.82", Some(1 << 30))
    );
    assert_eq!(jobs[0].services[0].name, "db");
    assert_eq!(jobs[1].container.as_ref().unwrap().image, "alpine:3");
    // Without one, a job stays on the host.
    let host = parse_pipeline(
        "gantry.yml",
        "stages:\n  - name: b\n    jobs:\n      - name: a\n        run: make\n",
    )
    .unwrap()
    .pipeline;
    assert!(host.jobs().all(|(_, j)| j.container.is_none()));
}

#[test]
fn when_rules_lower_into_the_stage() {
    let p = parse_pipeline(
        "gantry.yml",
        "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n  - name: deploy\n    when: { branch: [main, \"release/*\"], event: push }\n    jobs:\n      - name: d\n        run: ./deploy\n  - name: any\n    when:\n      event: [manual, push]\n    jobs:\n      - name: e\n        run: 'true'\n",
    )
    .unwrap()
    .pipeline;
    assert_eq!(p.stages[0].when, None);
    let when = p.stages[1].when.as_ref().unwrap();
    assert_eq!(when.branches, ["main", "release/*"]);
    assert_eq!(when.events, [gantry_model::TriggerEvent::Push]);
    let when = p.stages[2].when.as_ref().unwrap();
    assert!(when.branches.is_empty());
    assert_eq!(
        when.events,
        [
            gantry_model::TriggerEvent::Manual,
            gantry_model::TriggerEvent::Push
        ]
    );
}

#[test]
fn every_key_table_is_in_the_schema() {
    // `object()` asserts each table key has a property; building the schema runs those checks.
    let schema = schema::pipeline_schema();
    assert!(schema["properties"]["stages"].is_object());
}

#[test]
fn steps_can_be_plain_strings_and_anchors_merge() {
    let src = "defaults: &d\n  timeout: 5m\n";
    assert!(
        parse_pipeline("gantry.yml", src).is_err(),
        "unknown top key is refused"
    );
    let src = "stages:\n  - name: b\n    jobs:\n      - &base\n        name: a\n        run: make\n        timeout: 5m\n      - <<: *base\n        name: c\n";
    let p = parse_pipeline("gantry.yml", src)
        .unwrap_or_else(|e| panic!("{e}"))
        .pipeline;
    let jobs: Vec<_> = p.jobs().map(|(_, j)| (j.name.clone(), j.timeout)).collect();
    assert_eq!(
        jobs,
        vec![
            ("a".into(), Some(Duration::from_secs(300))),
            ("c".into(), Some(Duration::from_secs(300)))
        ]
    );
    let src =
        "stages:\n  - name: b\n    jobs:\n      - name: a\n        steps: [make, make test]\n";
    let p = parse_pipeline("gantry.yml", src)
        .unwrap_or_else(|e| panic!("{e}"))
        .pipeline;
    let (_, job) = p.jobs().next().unwrap();
    assert_eq!(
        job.steps.iter().map(|s| s.run.as_str()).collect::<Vec<_>>(),
        ["make", "make test"]
    );
}

const DOCKER: &str = "stages:
  - name: build
    jobs:
      - name: image
        run: podman build -t web:dev .
        artifacts:
          - name: app
            image: web:dev
environments:
  production:
    target:
      docker:
        port: 8080
        host: unix:///run/podman/podman.sock
        memory: 64m
        cpus: 0.5
        env: { MODE: prod }
        volumes: [/srv/up:/up:ro]
        command: [/bin/app, --fast]
        labels: { team: web }
    router:
      listen: 127.0.0.1:8102
";

/// A docker target and an image artifact as the docs write them: every key lands where the
/// deploy target reads it, and the default check is the port's.
#[test]
fn a_docker_target_and_an_image_artifact_parse() {
    let p = parse_pipeline("gantry.yml", DOCKER)
        .unwrap_or_else(|e| panic!("{e}"))
        .pipeline;
    let StageKind::Jobs(jobs) = &p.stages[0].kind else {
        panic!("jobs")
    };
    assert_eq!(jobs[0].artifacts[0].image.as_deref(), Some("web:dev"));
    assert!(jobs[0].artifacts[0].paths.is_empty());
    let env = p
        .environments
        .iter()
        .find(|e| e.name == "production")
        .unwrap();
    let Some(gantry_model::TargetSpec::Docker(d)) = &env.target else {
        panic!("a docker target: {:?}", env.target)
    };
    assert_eq!(d.port, 8080);
    assert_eq!(d.host.as_deref(), Some("unix:///run/podman/podman.sock"));
    assert_eq!(d.memory_bytes, Some(64 << 20));
    assert_eq!(d.nano_cpus, Some(500_000_000));
    assert_eq!(d.env, vec![("MODE".to_string(), "prod".to_string())]);
    assert_eq!(d.volumes, vec!["/srv/up:/up:ro".to_string()]);
    assert_eq!(
        d.command,
        Some(vec!["/bin/app".to_string(), "--fast".to_string()])
    );
    assert_eq!(d.labels, vec![("team".to_string(), "web".to_string())]);
    assert_eq!(env.health.check, gantry_model::HealthCheck::Tcp);
}

/// Each wrong docker key or image artifact is one error at its line and column, naming the
/// field.
#[test]
fn wrong_docker_keys_are_named_where_they_are() {
    for (from, to, expected) in [
        (
            "port: 8080",
            "port: 0",
            "13:15: error: environments[production].target.docker.port: port 0",
        ),
        (
            "port: 8080",
            "port: 70000",
            "13:15: error: environments[production].target.docker.port: 70000 is too large",
        ),
        (
            "        port: 8080\n",
            "",
            "13:9: error: environments[production].target.docker: a docker target is missing the required key `port`",
        ),
        (
            "host: unix:///run/podman/podman.sock",
            "host: /run/podman.sock",
            "14:15: error: environments[production].target.docker.host: `/run/podman.sock` is not a Docker Engine address",
        ),
        (
            "memory: 64m",
            "memory: lots",
            "15:17: error: environments[production].target.docker.memory: `lots` is not an amount of memory",
        ),
        (
            "memory: 64m",
            "memory: 1m",
            "`1m` is not an amount of memory",
        ),
        (
            "cpus: 0.5",
            "cpus: 0",
            "16:15: error: environments[production].target.docker.cpus: `0` is not a number of CPUs",
        ),
        (
            "[/srv/up:/up:ro]",
            "[/srv/up]",
            "environments[production].target.docker.volumes: `/srv/up` is not a volume",
        ),
        (
            "{ team: web }",
            "{ gantry.release: 9 }",
            "label `gantry.release` is reserved",
        ),
        (
            "image: web:dev",
            "image: web dev",
            "8:20: error: stages[build].jobs[image].artifacts[0].image: image `web dev` may hold only",
        ),
        (
            "image: web:dev",
            "image: web:dev\n            path: dist/",
            "8:20: error: stages[build].jobs[image].artifacts[0].image: an artifact is either files (`path`) or an image (`image`), not both",
        ),
    ] {
        let source = DOCKER.replacen(from, to, 1);
        assert_ne!(source, DOCKER, "{from}");
        let text = errors(&source);
        assert!(
            text.contains(expected),
            "{to}: expected {expected:?} in:\n{text}"
        );
    }
}

/// A job's `image:` becomes an artifact gantry builds; a job may do nothing else. Paths that
/// leave the job's directory are refused where they are written.
#[test]
fn a_job_image_build_is_an_artifact_and_its_paths_stay_inside() {
    let source = "stages:
  - name: build
    jobs:
      - name: image
        image: { name: app, context: web, file: web/Dockerfile }
";
    let p = parse_pipeline("gantry.yml", source)
        .unwrap_or_else(|e| panic!("{e}"))
        .pipeline;
    let StageKind::Jobs(jobs) = &p.stages[0].kind else {
        panic!("jobs")
    };
    assert!(jobs[0].steps.is_empty());
    let a = &jobs[0].artifacts[0];
    assert_eq!(a.name, "app");
    assert_eq!(
        a.build,
        Some(gantry_model::ImageBuild {
            context: "web".into(),
            file: "web/Dockerfile".into()
        })
    );
    let defaults = source.replace(
        "{ name: app, context: web, file: web/Dockerfile }",
        "{ name: app }",
    );
    let p = parse_pipeline("gantry.yml", &defaults).unwrap().pipeline;
    let StageKind::Jobs(jobs) = &p.stages[0].kind else {
        panic!("jobs")
    };
    assert_eq!(
        jobs[0].artifacts[0].build,
        Some(gantry_model::ImageBuild {
            context: ".".into(),
            file: "Dockerfile".into()
        })
    );
    let text = errors(&source.replace("context: web", "context: ../up"));
    assert!(
        text.contains(
            "5:38: error: stages[build].jobs[image].image.context: `../up` leaves the workspace"
        ),
        "{text}"
    );
    let text = errors(&source.replace(
        "{ name: app, context: web, file: web/Dockerfile }",
        "{ context: web }",
    ));
    assert!(
        text.contains("an image build is missing the required key `name`"),
        "{text}"
    );
}

/// `push:` names a repository, alone or with a login whose password is a secret; a push of
/// files, a tag in the repository or half a login is one error where it is written.
#[test]
fn an_image_push_names_a_repository_and_a_login_by_secret() {
    let source = "stages:
  - name: build
    jobs:
      - name: image
        image: { name: app, push: PUSH }
        artifacts:
          - name: site
            path: dist/
";
    let pushed = |push: &str| {
        let p = parse_pipeline("gantry.yml", &source.replace("PUSH", push))
            .unwrap_or_else(|e| panic!("{e}"))
            .pipeline;
        let StageKind::Jobs(jobs) = &p.stages[0].kind else {
            panic!("jobs")
        };
        jobs[0].artifacts[1].push.clone()
    };
    assert_eq!(
        pushed("127.0.0.1:5000/team/app"),
        Some(gantry_model::ImagePush {
            repository: "127.0.0.1:5000/team/app".into(),
            username: None,
            password_secret: None,
        })
    );
    let login =
        "{ to: registry.example.com/app, username: ci, password_secret: REGISTRY_PASSWORD }";
    assert_eq!(
        pushed(login),
        Some(gantry_model::ImagePush {
            repository: "registry.example.com/app".into(),
            username: Some("ci".into()),
            password_secret: Some("REGISTRY_PASSWORD".into()),
        })
    );
    let p = parse_pipeline("gantry.yml", &source.replace("PUSH", login)).unwrap();
    assert_eq!(
        p.pipeline.secret_names(),
        vec!["REGISTRY_PASSWORD".to_string()]
    );
    for (push, expected) in [
        (
            "127.0.0.1:5000/app:v1",
            "5:35: error: stages[build].jobs[image].image.push: repository `127.0.0.1:5000/app:v1` names a tag or digest",
        ),
        (
            "{ to: r.example.com/app, username: ci }",
            "stages[build].jobs[image].image.push: a registry login needs both `username` and `password_secret`",
        ),
        (
            "{ to: r.example.com/app, password: hunter2 }",
            "stages[build].jobs[image].image.push.password",
        ),
        (
            "{ username: ci, password_secret: P }",
            "a push is missing the required key `to`",
        ),
    ] {
        let text = errors(&source.replace("PUSH", push));
        assert!(
            text.contains(expected),
            "{push}: expected {expected:?} in:\n{text}"
        );
    }
    let text = errors(&source.replace(
        "path: dist/",
        "path: dist/\n            push: r.example.com/site",
    ));
    assert!(
        text.contains("stages[build].jobs[image].artifacts[0].push: only an image artifact can be pushed to a registry"),
        "{text}"
    );
}

#[test]
fn runs_on_names_labels_a_runner_must_have() {
    let p = parse_pipeline(
        "gantry.yml",
        "stages:\n  - name: build\n    jobs:\n      - name: big\n        run: make\n        runs_on: [linux, big]\n      - name: one\n        run: make\n        runs_on: gpu\n      - name: any\n        run: make\n",
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .pipeline;
    let StageKind::Jobs(jobs) = &p.stages[0].kind else {
        panic!("jobs")
    };
    let labels: Vec<&[String]> = jobs.iter().map(|j| j.runs_on.as_slice()).collect();
    assert_eq!(
        labels,
        [
            &["big".to_string(), "linux".into()][..],
            &["gpu".to_string()][..],
            &[][..]
        ]
    );
    let e = errors(
        "stages:\n  - name: build\n    jobs:\n      - name: a\n        run: make\n        runs_on: [Linux, big, big, \"\"]\n",
    );
    assert!(e.contains("gantry.yml:6:19"), "{e}");
    assert!(
        e.contains("`Linux` is not a label: a label starts with a lowercase letter or a digit"),
        "{e}"
    );
    assert!(
        e.contains("runs_on[2]") && e.contains("`big` is listed twice"),
        "{e}"
    );
    assert!(e.contains("a label is 1 to 64 characters long"), "{e}");
}
