//! The demo's story, told as it happens: the repository and the server, the first run to
//! production, the artifact's share link, synthetic users, a canary of the next version, and
//! what to try next. Each moment is printed as it becomes true, stamped with the time since the
//! demo began.

use super::follow::{Follower, PROJECT};
use super::{Demo, PIPELINE, SERVICE, SERVICE_TESTS, Started, traffic};
use crate::cli::CliResult;
use crate::cli::serve::{ServeArgs, serve_until};
use anyhow::{Context, anyhow};
use gantry_git::Repo;
use gantry_model::RunStatus;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn step(text: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m== {text}\x1b[0m");
    } else {
        println!("\n== {text}");
    }
}

/// The demo's pipeline: the example's, with the routers on the demo's ports.
fn pipeline(demo: &Demo) -> String {
    PIPELINE
        .replace("127.0.0.1:8102", &demo.staging)
        .replace("127.0.0.1:8103", &demo.production)
}

fn write_repository(demo: &Demo) -> anyhow::Result<String> {
    let r = &demo.repo;
    std::fs::create_dir_all(r).with_context(|| format!("creating {}", r.display()))?;
    std::fs::write(r.join("gantry.yml"), pipeline(demo))?;
    std::fs::write(r.join("hello.py"), SERVICE)?;
    std::fs::write(r.join("test_hello.py"), SERVICE_TESTS)?;
    std::fs::write(r.join(".gitignore"), ".gantry/\n__pycache__/\n")?;
    let repo = Repo::init(r)?;
    repo.commit_all("hello 1.0.0")
}

/// The server's configuration: it polls the repository every second, and stops at once.
fn server_config(demo: &Demo) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nshutdown_grace = \"0s\"\n\n[[projects]]\nname = \"{PROJECT}\"\nrepo = \"{}\"\npoll = \"1s\"\n\n[runner]\nkill_grace = \"500ms\"\n",
        demo.data.display(),
        demo.repo.display()
    )
}

/// One line on Docker: the demo uses local processes; a Docker API is only looked for.
async fn docker_line() -> String {
    let host = gantry_docker::resolve_host(None);
    match tokio::time::timeout(Duration::from_secs(1), gantry_docker::Engine::connect(None)).await {
        Ok(Ok(_)) => format!(
            "docker: a Docker API answers at {host}; this demo's service runs as local processes (docs/docker.md deploys images)"
        ),
        _ => format!(
            "docker: no Docker API answers at {host}: skipped, the demo runs local processes"
        ),
    }
}

pub async fn tell(
    demo: &Demo,
    handles: &Mutex<Started>,
    started: Instant,
    exit: bool,
) -> CliResult {
    step("1. a git repository of the example service, and a gantry server watching it");
    let first = write_repository(demo)?;
    let config = demo.dir.join("gantry.toml");
    std::fs::write(&config, server_config(demo))?;
    println!("repository: {}", demo.repo.display());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(
        ServeArgs {
            config,
            listen: None,
        },
        None,
        async move {
            let _ = stop_rx.await;
        },
    ));
    handles.lock().expect("handles").server = Some((stop_tx, server));
    let server_file = demo.data.join(crate::client::SERVER_FILE);
    for _ in 0..300 {
        if server_file.is_file() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = crate::cli::remote::client(None, Some(demo.data.clone()))?;
    let link = client.login_link().await?;
    println!("dashboard:  {}/ui", client.base);
    println!(
        "log in:     {}   (one use, within 10 minutes; `gantry dashboard` prints another)",
        link.url
    );
    println!("{}", docker_line().await);

    step("2. the pipeline of 1.0.0: build, test, staging, then production");
    let mut f = Follower::new(client, started);
    let run = f.run_of(&first).await?;
    println!("run {run}, queued by the server's poll of the repository:");
    if f.follow(run).await? != RunStatus::Succeeded {
        return Err(
            anyhow!("run {run} of 1.0.0 did not succeed: `gantry why {run}` says why").into(),
        );
    }
    let production = demo.production.as_str();
    println!(
        "\ncurl http://{production}/  →  {}",
        traffic::ask_as(production, None).await
    );
    if let Some(at) = f.production_at {
        println!(
            "production served 1.0.0 through its router {:.1} s after the demo began",
            at.as_secs_f64()
        );
    }

    step(
        "3. the build's artifact, shared by a link any HTTP client can fetch (no token, expires in 1 h)",
    );
    share_and_fetch(&f.client).await?;

    step("4. synthetic users: 100 of them, about 50 requests a second through production's router");
    handles.lock().expect("handles").traffic = Some(traffic::start(demo.production.clone()));
    println!(
        "each request names its user (X-User: user-1 … user-100), the header production's canary splits on; alice always gets a canary"
    );

    step(
        "5. version 1.1.0 as a canary: 10% of users for 5 s, then 50%, analysis on errors and p99",
    );
    let (_, commit) = super::push::commit_version(&demo.repo, SERVICE, "the canary")?;
    let run = f.run_of(&commit).await?;
    println!("run {run}:");
    let sticky = sticky_users(production);
    let (status, ()) = tokio::join!(f.follow(run), sticky);
    if status? != RunStatus::Succeeded {
        return Err(
            anyhow!("run {run} of 1.1.0 did not succeed: `gantry why {run}` says why").into(),
        );
    }
    println!(
        "\ncurl http://{production}/  →  {}",
        traffic::ask_as(production, None).await
    );
    if let (Some(p), Some(v)) = (f.production_at, f.verdict_at) {
        println!(
            "production first served {:.1} s after the demo began; the canary's first verdict came at {:.1} s",
            p.as_secs_f64(),
            v.as_secs_f64()
        );
    }

    step("6. your turn");
    let home = demo.data.display();
    println!(
        "in another terminal:\n\
         \x20 gantry demo push --broken tests     # a failing unit test stops the pipeline before any deploy\n\
         \x20 gantry demo push --broken health    # a release that cannot start never gets traffic\n\
         \x20 gantry demo push --broken errors    # a canary answering 500 is aborted by analysis\n\
         \x20 gantry demo push --broken slow      # a slow canary is aborted on p99\n\
         \x20 gantry demo push --fix              # a good version again\n\
         \x20 export GANTRY_HOME={home}\n\
         \x20 gantry status production; gantry releases production; gantry why; gantry rollback production\n\
         \x20 curl -H 'X-User: alice' http://{production}/   # alice always gets a running canary\n\
         or edit {}/hello.py and `git commit -am …`: the server runs every commit.",
        demo.repo.display()
    );
    if exit {
        println!("\n(--exit: stopping now)");
        return Ok(());
    }
    println!(
        "\nthe demo runs until Ctrl-C, which stops everything it started and removes {}",
        demo.dir.display()
    );
    watch_runs(&mut f).await
}

/// While the canary runs: the side each of a few users lands on, asked three times each.
async fn sticky_users(router: &str) {
    // Once the canary serves a share of users: a bounded wait for release 2 to answer someone.
    for _ in 0..200 {
        if traffic::ask_as(router, Some("alice"))
            .await
            .contains("from release 2")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lines = Vec::new();
    for user in ["alice", "user-1", "user-2", "user-3", "user-4", "user-5"] {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let answer = traffic::ask_as(router, Some(user)).await;
            let release = answer
                .split("from release ")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .unwrap_or("-")
                .to_string();
            seen.push(release);
        }
        lines.push(format!("{user} → release {}", seen.join(", ")));
    }
    println!(
        "  sticky users (each asked three times): {}",
        lines.join("; ")
    );
}

/// After the story: each new run (a push, an edit) told in one line as it ends.
async fn watch_runs(f: &mut Follower) -> CliResult {
    let filter = gantry_engine::ports::RunFilter {
        project: Some(PROJECT.into()),
        limit: 20,
        ..Default::default()
    };
    let mut told: std::collections::HashSet<i64> = f
        .client
        .runs(&filter)
        .await?
        .into_iter()
        .filter(|r| r.status.is_finished())
        .map(|r| r.id)
        .collect();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(runs) = f.client.runs(&filter).await else {
            continue;
        };
        for r in runs.into_iter().rev() {
            if r.status.is_finished() && told.insert(r.id) {
                let what = match r.status {
                    RunStatus::Succeeded => "succeeded".to_string(),
                    s => format!("{s}: `gantry why {}` says why", r.id),
                };
                println!(
                    "{} run {} of {}: {what}",
                    f.stamp(),
                    r.id,
                    crate::pipeline_at::short(&r.commit)
                );
            }
        }
    }
}

/// `gantry artifact share app`, then a plain GET of the link, its sha256 compared with the
/// artifact's digest.
async fn share_and_fetch(client: &crate::client::Client) -> CliResult {
    use sha2::{Digest, Sha256};
    let share = client
        .share(&gantry_api::types::NewShare {
            name: Some("app".into()),
            expires: Some("1h".into()),
            ..Default::default()
        })
        .await?;
    let (url, digest) = (share.url, share.digest);
    println!("gantry artifact share app  →  {url}");
    let answer = reqwest::get(&url)
        .await
        .with_context(|| format!("fetching {url}"))?;
    let status = answer.status();
    let body = answer
        .bytes()
        .await
        .context("reading the shared artifact")?;
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    if !status.is_success() || actual != digest {
        return Err(
            anyhow!("the share link answered {status} with {actual}, expected {digest}").into(),
        );
    }
    println!(
        "curl -O {url}  →  {status}, {}, sha256 matches the artifact's digest {}",
        crate::render::human_size(body.len() as u64),
        &digest[..19]
    );
    Ok(())
}
