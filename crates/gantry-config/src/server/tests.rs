//! The server configuration checker on documented and broken files: every error at once, with
//! its position.

use super::*;

#[test]
fn the_documented_example_parses() {
    let cfg = parse_server_config(
        "gantry.toml",
        r#"listen = "127.0.0.1:8080"          # default
data_dir = ".gantry"               # default: GANTRY_HOME, else .gantry beside the config

[[projects]]
name = "hello"
repo = "/srv/git/hello.git"        # local path, file:// or https:// URL
branches = ["main", "release/*"]   # default: the repository's default branch
poll = "60s"                       # default 60s; "0s" = webhooks only
webhook_secret_env = "HELLO_WEBHOOK_SECRET"

[runner]
concurrency = 3
max_job_log_bytes = 1048576
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen.port(), 8080);
    assert_eq!(cfg.public_url, None);
    assert_eq!(cfg.concurrency, 3);
    assert_eq!(cfg.max_job_log_bytes, 1024 * 1024);
    assert_eq!(cfg.projects[0].branches, ["main", "release/*"]);
    assert_eq!(cfg.projects[0].poll, Duration::from_secs(60));
    assert_eq!(
        cfg.projects[0].webhook_secret_env.as_deref(),
        Some("HELLO_WEBHOOK_SECRET")
    );
}

#[test]
fn commit_statuses_per_project() {
    let cfg = parse_server_config(
        "gantry.toml",
        "[[projects]]\nname = \"a\"\nrepo = \"/x\"\nstatus = { forge = \"github\", repo = \"acme/web\", token_env = \"GH_TOKEN\" }\n\n[[projects]]\nname = \"b\"\nrepo = \"/y\"\n[projects.status]\nforge = \"forgejo\"\napi_url = \"https://code.example.com/api/v1/\"\nrepo = \"acme/api\"\ntoken_env = \"FORGEJO_TOKEN\"\ncontext = \"ci/gantry\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let a = cfg.projects[0].status.as_ref().unwrap();
    assert_eq!(a.forge, Forge::GitHub);
    assert_eq!(a.api_url, "https://api.github.com");
    assert_eq!(
        (a.repo.as_str(), a.context.as_str()),
        ("acme/web", "gantry")
    );
    assert_eq!(a.token_env_at, "gantry.toml:4:61");
    let b = cfg.projects[1].status.as_ref().unwrap();
    assert_eq!(b.forge, Forge::Gitea);
    assert_eq!(b.api_url, "https://code.example.com/api/v1");
    assert_eq!(b.context, "ci/gantry");
    let err = parse_server_config(
        "gantry.toml",
        "[[projects]]\nname = \"a\"\nrepo = \"/x\"\nstatus = { forge = \"bitbucket\", repo = \"a b\", token_env = \"ghp_123-abc\", contxt = \"x\" }\n[[projects]]\nname = \"b\"\nrepo = \"/y\"\nstatus = { forge = \"gitea\", repo = \"o/n\", token_env = \"T\" }\n[[projects]]\nname = \"c\"\nrepo = \"/z\"\nstatus = { repo = \"o/n\" }\n",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "gantry.toml:4:20: error: projects[0].status.forge: `bitbucket` is not a forge gantry posts statuses to",
        "projects[0].status.repo: `a b` is not a repository",
        "projects[0].status.token_env: `ghp_123-abc` is not an environment variable name",
        "projects[0].status.contxt: unknown key `contxt`",
        "did you mean `context`?",
        "gantry.toml:8:10: error: projects[1].status: a project's `status` needs api_url",
        "projects[2].status: a project's `status` needs forge, token_env",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn schedules_are_checked_where_they_are_written() {
    let cfg = parse_server_config(
        "gantry.toml",
        "[[projects]]\nname = \"a\"\nrepo = \"/x\"\nschedules = [\n  { cron = \"0 3 * * *\", timezone = \"Europe/Berlin\" },\n  { cron = \"*/30 * * * * *\", timezone = \"UTC\", branch = \"release\", vars = { NIGHTLY = \"1\" } },\n]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s = &cfg.projects[0].schedules;
    assert_eq!(s.len(), 2);
    assert_eq!(
        (
            s[0].cron.as_str(),
            s[0].timezone.as_str(),
            s[0].branch.as_deref()
        ),
        ("0 3 * * *", "Europe/Berlin", None)
    );
    assert_eq!(s[1].branch.as_deref(), Some("release"));
    assert_eq!(s[1].vars["NIGHTLY"], "1");
    let err = parse_server_config(
        "gantry.toml",
        "[[projects]]\nname = \"a\"\nrepo = \"/x\"\nschedules = [\n  { cron = \"0 3 * *\", timezone = \"UTC\" },\n  { cron = \"0 25 * * *\", timezone = \"Mars/Olympus\" },\n  { cron = \"0 3 * * *\" },\n  { cron = \"0 3 * * *\", timezone = \"UTC\", branch = \"release/*\", vars = { GANTRY_TAG = \"v1\" }, when = 1 },\n]\n",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "gantry.toml:5:12: error: projects[0].schedules[0].cron: `0 3 * *` has 4 fields",
        "projects[0].schedules[1].cron: `0 25 * * *` is not a cron expression",
        "gantry.toml:6:37: error: projects[0].schedules[1].timezone: `Mars/Olympus` is not a time zone gantry knows",
        "projects[0].schedules[2]: a schedule needs timezone",
        "the time zone is never guessed",
        "projects[0].schedules[3].branch: `release/*` is not a branch name",
        "projects[0].schedules[3].vars.GANTRY_TAG: `GANTRY_TAG` is gantry's own variable",
        "projects[0].schedules[3].when: unknown key `when`",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn tags_are_patterns_like_branches() {
    let cfg = parse_server_config(
        "gantry.toml",
        "[[projects]]\nname = \"a\"\nrepo = \"/x\"\ntags = [\"v*\", \"release-*\"]\n",
    )
    .unwrap();
    assert_eq!(cfg.projects[0].tags, ["v*", "release-*"]);
    assert!(cfg.projects[0].branches.is_empty());
    let err = parse_server_config(
        "gantry.toml",
        "[[projects]]\nname = \"a\"\nrepo = \"/x\"\ntags = \"v*\"\nbranches = [\"refs/heads/main\", \"\"]\n[[projects]]\nname = \"b\"\nrepo = \"/y\"\ntags = [\"refs/tags/v1\", 2]\n",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "gantry.toml:4:8: error: projects[0].tags: expected a list of tag names, found a string",
        "for example tags = [\"v*\"]",
        "gantry.toml:5:13: error: projects[0].branches[0]: `refs/heads/main` is not a branch name or pattern",
        "projects[0].branches[1]: `` is not a branch name or pattern",
        "gantry.toml:9:9: error: projects[1].tags[0]: `refs/tags/v1` is not a tag name or pattern",
        "projects[1].tags[1]: expected a string, found an integer",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn every_error_at_once() {
    let err = parse_server_config(
        "gantry.toml",
        "listen = \"nowhere\"\nlistn = 1\n[[projects]]\nname = \"a b\"\nrepo = \"/x\"\npoll = \"10\"\n[[projects]]\nrepo = 3\n[runner]\nconcurency = 2\n",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "gantry.toml:1:10: error: listen: `nowhere` is not an address",
        "gantry.toml:2:1: error: listn: unknown key `listn`",
        "did you mean `listen`?",
        "gantry.toml:4:8: error: projects[0].name: `a b` is not a valid project name",
        "gantry.toml:6:8: error: projects[0].poll: invalid duration",
        "projects[1].repo: expected a string, found an integer",
        "projects[1]: a project needs a `name`",
        "runner.concurency: unknown key `concurency` in [runner]",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn listen_takes_host_names_and_says_when_a_port_is_out_of_range() {
    let cfg = parse_server_config("gantry.toml", "listen = \"localhost:9090\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen, "127.0.0.1:9090".parse().unwrap());
    let err = parse_server_config(
        "gantry.toml",
        "listen = \"localhost:99999\"\n[runner]\nkill_grace = \"10 s\"\n",
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "gantry.toml:1:10: error: listen: `localhost:99999`: port 99999 is out of range",
        "gantry.toml:3:14: error: runner.kill_grace: invalid duration: `10 s` has spaces in it: write `10s`",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn retention_and_notifications() {
    let cfg = parse_server_config(
        "gantry.toml",
        "[retention]\nkeep_runs = 3\nkeep_younger_than = \"2d\"\ninterval = \"10m\"\nlogs = \"30d\"\ncache_bytes = 1073741824\n[[notify]]\nurl = \"http://127.0.0.1:9/x\"\non = [\"failed\", \"succeeded\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.keep_runs, 3);
    assert_eq!(cfg.keep_younger_than, Duration::from_secs(2 * 86400));
    assert_eq!(cfg.retention_interval, Duration::from_secs(600));
    assert_eq!(cfg.keep_logs, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(cfg.cache_bytes, 1 << 30);
    assert_eq!(cfg.notify[0].on, ["failed", "succeeded"]);
    let err = parse_server_config(
        "gantry.toml",
        "[retention]\nkeep_run = 3\n[[notify]]\non = [\"exploded\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("did you mean `keep_runs`?"), "{err}");
    assert!(err.contains("`exploded` is not a run status"), "{err}");
}

#[test]
fn artifact_stores() {
    let cfg = parse_server_config(
        "gantry.toml",
        "[artifacts]\nurl = \"s3://builds/gantry\"\nendpoint = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\nsecret_access_key_env = \"S3_SECRET\"\ntimeout = \"5s\"\nretries = 1\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let a = cfg.artifacts.unwrap();
    assert_eq!(a.url, "s3://builds/gantry");
    assert_eq!(a.timeout_ms, Some(5000));
    assert_eq!(a.retries, Some(1));
    let err = parse_server_config(
        "gantry.toml",
        "[artifacts]\nurl = \"/srv/artifacts\"\nendpoint = \"127.0.0.1:9000\"\nsecret_access_key = \"x\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("gantry.toml:2:7"), "{err}");
    assert!(err.contains("is not an S3 location"), "{err}");
    assert!(err.contains("gantry.toml:3:12"), "{err}");
    assert!(err.contains("is not an http:// or https:// URL"), "{err}");
    assert!(
        err.contains("did you mean `secret_access_key_env`?"),
        "{err}"
    );
    let err = parse_server_config("gantry.toml", "[artifacts]\nregion = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("[artifacts] needs a `url`"), "{err}");
}

#[test]
fn the_state_store_is_a_postgresql_url() {
    for url in [
        "postgres://gantry@db.internal:5432/gantry",
        "postgresql://gantry@127.0.0.1/gantry?sslmode=require",
    ] {
        let cfg = parse_server_config("gantry.toml", &format!("state = \"{url}\"\n"))
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(cfg.state.as_deref(), Some(url));
    }
    assert_eq!(parse_server_config("gantry.toml", "").unwrap().state, None);
    for (text, says) in [
        (
            "state = \"mysql://u:hunter2@db/g\"\n",
            "no state stores of kind `mysql`",
        ),
        ("state = \"postgres://\"\n", "not a PostgreSQL URL"),
        ("state = \"/var/lib/gantry.db\"\n", "not a PostgreSQL URL"),
        ("state = 5\n", "state"),
    ] {
        let err = parse_server_config("gantry.toml", text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gantry.toml:1:9"), "{text}: {err}");
        assert!(err.contains(says), "{text}: {err}");
    }
}

#[test]
fn tls_needs_a_certificate_and_a_key() {
    let cfg = parse_server_config(
        "gantry.toml",
        "[tls]\ncert = \"tls/server.pem\"\nkey = \"tls/server.key\"\nca = \"tls/ca.pem\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tls = cfg.tls.unwrap();
    assert_eq!(tls.cert, std::path::Path::new("tls/server.pem"));
    assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("tls/ca.pem")));
    for (text, says) in [
        ("[tls]\ncert = \"a.pem\"\n", "[tls] needs a `key`"),
        ("[tls]\nkey = \"a.key\"\n", "[tls] needs a `cert`"),
        (
            "[tls]\ncert = \"a\"\nkey = \"b\"\ncerts = \"c\"\n",
            "did you mean `cert`?",
        ),
        ("[tls]\ncert = 1\nkey = \"b\"\n", "tls.cert"),
    ] {
        let err = parse_server_config("gantry.toml", text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{text}: {err}");
    }
}

#[test]
fn syntax_errors_have_a_position() {
    let err = parse_server_config("gantry.toml", "listen = \n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("gantry.toml:1:"), "{err}");
    assert!(err.contains("invalid TOML"), "{err}");
}

#[test]
fn a_public_url_is_a_url() {
    let cfg = parse_server_config("gantry.toml", "public_url = \"https://ci.example.com/\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.public_url.as_deref(), Some("https://ci.example.com"));
    let err = parse_server_config("gantry.toml", "public_url = \"ci.example.com\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gantry.toml:1:14: error: public_url: `ci.example.com` is not a URL"),
        "{err}"
    );
}

/// The `gantry.toml` the README shows is a valid one, with what it says in it.
#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../../../../README.md");
    let start = readme
        .find("```toml\n")
        .expect("the README shows a gantry.toml")
        + 8;
    let end = start + readme[start..].find("```").expect("the block ends");
    let cfg =
        parse_server_config("README.md", &readme[start..end]).unwrap_or_else(|e| panic!("{e}"));
    let p = &cfg.projects[0];
    assert_eq!(p.tags, ["v*"]);
    assert_eq!(p.status.as_ref().map(|s| s.forge), Some(Forge::GitHub));
    assert_eq!(p.schedules.len(), 2);
    assert_eq!(cfg.cache_bytes, 5 * 1024 * 1024 * 1024);
}

#[test]
fn the_runner_table_says_how_jobs_reach_runners() {
    let cfg = parse_server_config("gantry.toml", "").unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.local_jobs);
    assert_eq!(cfg.runner_lease, std::time::Duration::from_secs(30));
    assert_eq!(cfg.retry_lost, 1);
    let cfg = parse_server_config(
        "gantry.toml",
        "[runner]\nlocal_jobs = false\nlease = \"5s\"\nretry_lost = 0\nconcurrency = 8\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.local_jobs);
    assert_eq!(cfg.runner_lease, std::time::Duration::from_secs(5));
    assert_eq!((cfg.retry_lost, cfg.concurrency), (0, 8));
    for (text, says) in [
        ("[runner]\nlease = \"100ms\"\n", "gantry.toml:2:9"),
        (
            "[runner]\nlease = \"2h\"\n",
            "a runner's lease lasts from 1s to 1h",
        ),
        ("[runner]\nretry_lost = 11\n", "runner.retry_lost"),
        ("[runner]\nlocal_job = true\n", "did you mean `local_jobs`?"),
    ] {
        let err = parse_server_config("gantry.toml", text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{text}: {err}");
    }
}
