//! `gantry demo`: the whole loop on this machine in about half a minute, with nothing to set
//! up. It makes a git repository of the example service (`examples/hello`, built into the
//! binary) in a temporary directory, starts a server there (in this process), and then does
//! what a team does: run the pipeline (build, test, deploy to `staging` behind gantry's
//! router), ship a second version, roll back in milliseconds, push a broken version that the
//! health check stops before it serves anyone, and show the releases. Everything is removed at
//! the end unless `--keep`.

use super::deploy::{ReleasesArgs, RollbackArgs, StatusArgs};
use super::run::RunArgs;
use super::serve::{ServeArgs, serve_until};
use super::{CliError, CliResult};
use anyhow::{Context, anyhow};
use gantry_git::Repo;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PIPELINE: &str = include_str!("../../../../examples/hello/gantry.yml");
const SERVICE: &str = include_str!("../../../../examples/hello/hello.py");
const SERVICE_TESTS: &str = include_str!("../../../../examples/hello/test_hello.py");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the demo's directory (repository, data, release logs) instead of removing it
    #[arg(long)]
    pub keep: bool,
    /// The router's port (default: any free port)
    #[arg(long)]
    pub port: Option<u16>,
}

fn step(text: &str) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!("\n\x1b[1m== {text}\x1b[0m");
    } else {
        println!("\n== {text}");
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// What the router answers on `/`.
async fn ask(router: &str) -> String {
    let client = reqwest::Client::new();
    match client.get(format!("http://{router}/")).send().await {
        Ok(r) => {
            let release = r
                .headers()
                .get("x-gantry-release")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            format!("HTTP {status} from release {release}: {}", body.trim())
        }
        Err(e) => format!("no answer: {e}"),
    }
}

fn run_args(repo: &Path) -> RunArgs {
    RunArgs {
        repo: Some(repo.to_path_buf()),
        rev: "HEAD".into(),
        jobs: None,
        json: false,
        plain: true,
        quiet: true,
        secrets_file: None,
        keep_workspaces: false,
        kill_grace: Duration::from_secs(5),
        max_job_log_bytes: gantry_runner::DEFAULT_JOB_LOG_CAP,
        sandbox: false,
    }
}

pub async fn demo(args: DemoArgs) -> CliResult {
    let dir = std::env::temp_dir().join(format!("gantry-demo-{}", std::process::id()));
    let result = demo_in(&dir, &args).await;
    if args.keep {
        println!("\nthe demo's files are in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn demo_in(dir: &Path, args: &DemoArgs) -> CliResult {
    let started = Instant::now();
    let port = match args.port {
        Some(p) => p,
        None => free_port()?,
    };
    let router = format!("127.0.0.1:{port}");
    let repo_dir = dir.join("hello");
    let data: PathBuf = repo_dir.join(".gantry");

    step("1. a git repository of the example service, and a gantry server for it");
    std::fs::create_dir_all(&repo_dir)
        .with_context(|| format!("creating {}", repo_dir.display()))?;
    let pipeline = PIPELINE.replace("127.0.0.1:8102", &router);
    std::fs::write(repo_dir.join("gantry.yml"), &pipeline)?;
    std::fs::write(repo_dir.join("hello.py"), SERVICE)?;
    std::fs::write(repo_dir.join("test_hello.py"), SERVICE_TESTS)?;
    std::fs::write(repo_dir.join(".gitignore"), ".gantry/\n__pycache__/\n")?;
    let repo = Repo::init(&repo_dir)?;
    repo.commit_all("hello 1.0.0")?;
    std::fs::write(
        dir.join("gantry.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )?;
    println!(
        "repository {}; staging's router will listen on http://{router}",
        repo_dir.display()
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(
        ServeArgs {
            config: dir.join("gantry.toml"),
            listen: None,
        },
        None,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let server_file = data.join(crate::client::SERVER_FILE);
    let mut waited = 0;
    while !server_file.is_file() {
        if server.is_finished() || waited > 300 {
            stop_serving(&data).await;
            return Err(anyhow!("the demo's server did not start").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let outcome = the_story(&repo_dir, &data, &router).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    // Releases and routers outlive a server; the demo's go with it.
    stop_serving(&data).await;
    outcome?;
    println!(
        "\ndemo finished in {:.0?}: build → test → deploy → second version → rollback → a broken version stopped by its health check.",
        started.elapsed()
    );
    println!("next: `gantry serve` in your own repository (README: \"Deploy and roll back\")");
    Ok(())
}

/// Stops what serves the demo's environments: every release's shim and the data plane.
async fn stop_serving(data: &std::path::Path) {
    gantry_deploy::targets::sweep(&data.join("releases"), &[]).await;
    let _ = gantry_deploy::dataplane::stop(data).await;
}

/// `gantry artifact share app`, then a plain GET of the link, its sha256 compared with the
/// artifact's digest.
async fn share_and_fetch(data: Option<PathBuf>) -> CliResult {
    use sha2::{Digest, Sha256};
    let client = super::remote::client(None, data)?;
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

async fn the_story(repo_dir: &Path, data: &Path, router: &str) -> CliResult {
    let repo = Repo::open(repo_dir)?;
    let data = Some(data.to_path_buf());

    step("2. gantry run: build, test, and deploy 1.0.0 to staging (blue/green behind the router)");
    super::run::run(run_args(repo_dir), None, data.clone()).await?;
    println!("\ncurl http://{router}/  →  {}", ask(router).await);

    step(
        "3. the build's artifact, shared by a link any HTTP client can fetch (no token, expires in 1h)",
    );
    share_and_fetch(data.clone()).await?;

    step("4. version 2.0.0: a new commit, the same pipeline; v1 keeps running next to it");
    let pipeline = std::fs::read_to_string(repo_dir.join("gantry.yml"))?;
    std::fs::write(
        repo_dir.join("gantry.yml"),
        pipeline.replace("APP_VERSION: \"1.0.0\"", "APP_VERSION: \"2.0.0\""),
    )?;
    repo.commit_all("hello 2.0.0")?;
    super::run::run(run_args(repo_dir), None, data.clone()).await?;
    println!("\ncurl http://{router}/  →  {}", ask(router).await);

    step("5. gantry rollback staging: only a router switch, v1 is still running");
    super::deploy::rollback(
        RollbackArgs {
            environment: "staging".into(),
            to: None,
            project: Some("hello".into()),
            json: false,
        },
        None,
        data.clone(),
    )
    .await?;
    println!("curl http://{router}/  →  {}", ask(router).await);

    step(
        "6. version 3.0.0 reads a staging config file that is not there: tests pass, staging cannot start it",
    );
    let service = std::fs::read_to_string(repo_dir.join("hello.py"))?;
    let marker = "    args = parser.parse_args(argv)\n";
    if !service.contains(marker) {
        return Err(anyhow!(
            "examples/hello/hello.py changed; the demo's broken version needs updating"
        )
        .into());
    }
    std::fs::write(
        repo_dir.join("hello.py"),
        service.replacen(
            marker,
            &format!(
                "{marker}    if os.environ.get(\"APP_ENV\") == \"staging\":  # new in 3.0.0\n        with open(os.path.join(HERE, \"config\", \"staging.json\"), encoding=\"utf-8\") as f:\n            f.read()\n"
            ),
            1,
        ),
    )?;
    let pipeline = std::fs::read_to_string(repo_dir.join("gantry.yml"))?;
    std::fs::write(
        repo_dir.join("gantry.yml"),
        pipeline
            .replace("APP_VERSION: \"1.0.0\"", "APP_VERSION: \"3.0.0\"")
            .replace("APP_VERSION: \"2.0.0\"", "APP_VERSION: \"3.0.0\"")
            .replace("timeout: 30s", "timeout: 5s"),
    )?;
    repo.commit_all("hello 3.0.0: read config/$APP_ENV.json")?;
    match super::run::run(run_args(repo_dir), None, data.clone()).await {
        Err(CliError { code: 1, .. }) => println!("\n(the run failed, as it should)"),
        Ok(()) => {
            return Err(
                anyhow!("the broken version was deployed; the demo expected a refusal").into(),
            );
        }
        Err(e) => return Err(e),
    }
    println!("curl http://{router}/  →  {}", ask(router).await);

    step("7. gantry releases staging, gantry status staging");
    super::deploy::releases(
        ReleasesArgs {
            environment: "staging".into(),
            project: Some("hello".into()),
            events: false,
            json: false,
        },
        None,
        data.clone(),
    )
    .await?;
    println!();
    super::deploy::status(
        StatusArgs {
            environment: Some("staging".into()),
            project: Some("hello".into()),
            json: false,
        },
        None,
        data,
    )
    .await?;
    Ok(())
}
