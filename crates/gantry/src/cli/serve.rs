//! `gantry serve`: the long-running server — watches repositories (poll and webhooks), queues
//! runs and executes them with bounded concurrency, serves the REST API with live logs.
//! SIGTERM or Ctrl-C: take no new work, let running runs finish for `shutdown_grace`, then cancel
//! and record them, and exit.

use super::{CliError, CliResult};
use crate::client::{ADMIN_TOKEN_FILE, SERVER_FILE};
use crate::context::Context;
use crate::server::{Server, spawn_pollers, spawn_workers};
use anyhow::{Context as _, anyhow};
use gantry_api::auth::{generate_token, hash_token};
use gantry_api::{AppState, metrics::Metrics};
use gantry_config::server::parse_server_config;
use gantry_engine::ports::StateStore;
use gantry_model::Role;
use gantry_runner::owner::OwnerLock;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The server configuration file
    #[arg(long, default_value = "gantry.toml")]
    pub config: PathBuf,
    /// Listen here instead of the configured address (port 0: any free port)
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

pub async fn serve(args: ServeArgs, data_dir_flag: Option<PathBuf>) -> CliResult {
    serve_until(args, data_dir_flag, super::stop_signal()).await
}

/// The server, until `stop` completes (a signal for `gantry serve`; the end of `gantry demo`).
pub async fn serve_until(
    args: ServeArgs,
    data_dir_flag: Option<PathBuf>,
    stop: impl std::future::Future<Output = ()>,
) -> CliResult {
    let source = std::fs::read_to_string(&args.config).map_err(|e| {
        anyhow!(
            "cannot read the server configuration {}: {e} (write one, see README: `gantry serve`)",
            args.config.display()
        )
    })?;
    let shown = args.config.display().to_string();
    let mut config = match parse_server_config(&shown, &source) {
        Ok(c) => c,
        Err(diags) => {
            eprint!("{diags}");
            eprintln!("the server did not start");
            return Err(CliError::silent(1));
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let config_dir = args
        .config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let data_dir = match (&config.data_dir, data_dir_flag) {
        (Some(d), _) => config_dir.join(d),
        (None, Some(d)) => d,
        (None, None) => config_dir.join(".gantry"),
    };
    // Relative project paths are relative to the configuration file.
    for p in &mut config.projects {
        if !p.repo.contains("://") && Path::new(&p.repo).is_relative() {
            p.repo = std::path::absolute(config_dir.join(&p.repo))
                .map_err(anyhow::Error::from)?
                .display()
                .to_string();
        }
    }
    if let Some(s) = &config.secrets_file {
        config.secrets_file = Some(config_dir.join(s));
    }
    if let Some(r) = &config.why_rules {
        config.why_rules = Some(config_dir.join(r));
        // A broken rules file is a configuration error: say so now, not at the first diagnosis.
        crate::why::load_rules(config.why_rules.as_deref())?;
    }

    let ctx = Context::open(data_dir).await?;
    let data_dir = ctx.data_dir.clone();
    ensure_admin_token(&*ctx.state, &data_dir).await?;
    let owner = OwnerLock::acquire(&ctx.lock_dir())?;
    for p in &config.projects {
        ctx.state.upsert_project(&p.name, &p.repo).await?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr().map_err(anyhow::Error::from)?;
    let url = format!("http://{addr}");

    let metrics = Arc::new(Metrics::new());
    let server = Arc::new(Server::new(
        config.clone(),
        data_dir.clone(),
        ctx.state.clone(),
        ctx.use_artifacts(config.artifacts.as_ref())?,
        metrics.clone(),
        owner.name().to_string(),
        url.clone(),
    ));
    let deploys = gantry_deploy::DeployManager::new(
        ctx.state.clone(),
        server.artifacts.clone(),
        Arc::new(crate::server::deploy::PipelineSource {
            server: Arc::downgrade(&server),
        }),
        data_dir.join("releases"),
        owner.name().to_string(),
    );
    let _ = server.deploys.set(deploys.clone());
    crate::server::spawn_failure_notifications(server.clone(), &deploys);
    let lock_dir = ctx.lock_dir();
    for note in deploys
        .recover(|name| gantry_runner::owner::owner_is_gone(&lock_dir, name))
        .await?
    {
        eprintln!("gantry: {note}");
    }
    let state = AppState {
        store: ctx.state.clone(),
        control: server.clone(),
        metrics,
        max_body_bytes: config.max_body_bytes,
        artifacts: server.artifacts.clone(),
        share_key: share_key(&data_dir)?.into(),
        public_url: url.clone(),
    };

    let server_file = data_dir.join(SERVER_FILE);
    std::fs::write(
        &server_file,
        serde_json::json!({ "url": url, "pid": std::process::id() }).to_string(),
    )
    .with_context(|| format!("writing {}", server_file.display()))?;
    println!(
        "gantry serving {url} ({} projects, data in {})",
        config.projects.len(),
        data_dir.display()
    );
    let _ = std::io::stdout().flush();

    if config.requeue_interrupted {
        requeue(&server, &ctx.recovered).await?;
    }
    let retention = spawn_retention(server.clone());
    let workers = spawn_workers(server.clone());
    let pollers = spawn_pollers(server.clone());

    let (stop_http_tx, stop_http_rx) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(gantry_api::serve(listener, state, async move {
        let _ = stop_http_rx.await;
    }));

    stop.await;
    eprintln!(
        "gantry: shutting down: taking no new runs; running runs have {} to finish",
        gantry_model::duration::format_duration(config.shutdown_grace)
    );
    let _ = server.draining.send(true);
    for p in pollers {
        p.abort();
    }
    if let Some(r) = retention {
        r.abort();
    }
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    while !server.running.lock().expect("running map").is_empty()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<i64> = server
        .running
        .lock()
        .expect("running map")
        .keys()
        .copied()
        .collect();
    if !left.is_empty() {
        eprintln!("gantry: cancelling runs still running: {left:?}");
        for tx in server.running.lock().expect("running map").values() {
            let _ = tx.send(true);
        }
    }
    for w in workers {
        let _ = w.await;
    }
    let _ = stop_http_tx.send(());
    let _ = http.await;
    deploys.shutdown().await;
    let _ = std::fs::remove_file(&server_file);
    ctx.state.close().await;
    drop(owner);
    eprintln!("gantry: stopped");
    Ok(())
}

/// Queues a new run for each run the start found interrupted (`[queue] requeue_interrupted`).
async fn requeue(server: &Server, recovered: &[i64]) -> anyhow::Result<()> {
    for id in recovered {
        let Some(d) = server.store.run_detail(*id).await? else {
            continue;
        };
        let Some(project) = server.project(&d.run.project).cloned() else {
            continue;
        };
        let branch = d.run.branch.clone().unwrap_or_default();
        if let Some(new) = server
            .enqueue(&project, &branch, &d.run.commit, "requeue", false)
            .await?
        {
            eprintln!("gantry: run {id} was interrupted; queued again as run {new}");
        }
    }
    Ok(())
}

/// Applies retention every `[retention] interval` (the first sweep one interval after start).
fn spawn_retention(server: Arc<Server>) -> Option<tokio::task::JoinHandle<()>> {
    let every = server.config.retention_interval;
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            let (keep, young) = (server.config.keep_runs, server.config.keep_younger_than);
            match crate::gc::collect(&*server.store, &*server.artifacts, keep, young, false).await {
                Ok(r) if !r.removed.is_empty() => tracing::info!(
                    removed = r.removed.len(),
                    objects = r.objects_deleted,
                    bytes = r.bytes_freed,
                    "retention applied"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "retention failed"),
            }
        }
    }))
}

/// The key share links are signed with: 32 random bytes, made on first start, kept (mode 0600)
/// in the data directory so links survive restarts.
fn share_key(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("share.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return hex::decode(text.trim())
            .ok()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                anyhow!(
                    "{} is not a hex key; delete it to make a new one (old links stop working)",
                    path.display()
                )
            });
    }
    let key = generate_token();
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    let hex_part = key.trim_start_matches(gantry_api::auth::TOKEN_PREFIX);
    writeln!(f, "{hex_part}")?;
    Ok(hex::decode(hex_part)?)
}

/// On first start, creates an admin token and keeps it in the data directory (mode 0600), so
/// the CLI on this machine works without copying a token around.
async fn ensure_admin_token(store: &dyn StateStore, data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        return Ok(());
    }
    let token = generate_token();
    let name = format!("admin-{}", gantry_engine::ports::now_millis());
    store
        .create_token(
            &name,
            Role::Admin,
            &hash_token(&token),
            gantry_engine::ports::now_millis(),
        )
        .await?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{token}")?;
    eprintln!(
        "gantry: created an admin token in {} (the CLI on this machine uses it)",
        path.display()
    );
    Ok(())
}
