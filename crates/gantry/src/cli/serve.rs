//! `gantry serve`: the long-running server — watches repositories (poll and webhooks), queues
//! runs and executes them with bounded concurrency, serves the REST API with live logs.
//! SIGTERM or Ctrl-C: take no new work, let running runs finish for `shutdown_grace`, then cancel
//! and record them, and exit.

use super::{CliError, CliResult};
use crate::context::Context;
use crate::server::Server;
use crate::server::lock::ServerLock;
use anyhow::{Context as _, anyhow};
use gantry_config::server::parse_server_config;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    // The data plane this server starts inherits the variable: refused here, before anything is
    // made, rather than by each router the data plane would start.
    gantry_deploy::router::sched::Policy::from_env().map_err(|e| anyhow!(e))?;
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
    if let Some(t) = &mut config.tls {
        t.cert = config_dir.join(&t.cert);
        t.key = config_dir.join(&t.key);
        t.ca = t.ca.as_ref().map(|c| config_dir.join(c));
        // Unreadable or mismatched files are said now, before anything is touched.
        gantry_api::tls::server_config(&t.cert, &t.key)
            .with_context(|| format!("{shown}: [tls]"))?;
        if let Some(ca) = &t.ca {
            let ca = std::path::absolute(ca).map_err(anyhow::Error::from)?;
            crate::client::read_ca(&ca).with_context(|| format!("{shown}: [tls] ca"))?;
            t.ca = Some(ca);
        }
    }
    if let Some(r) = &config.why_rules {
        config.why_rules = Some(config_dir.join(r));
        // A broken rules file is a configuration error: say so now, not at the first diagnosis.
        crate::why::load_rules(config.why_rules.as_deref())?;
    }

    // Webhook secrets are read from gantry's environment: a variable that is not set would
    // make every delivery fail later; refuse now, saying where it is named.
    for p in &config.projects {
        if let Some(var) = &p.webhook_secret_env
            && std::env::var(var).map_or(true, |v| v.is_empty())
        {
            return Err(anyhow!(
                "{}: project `{}`: webhook_secret_env names `{var}`, which is not set in gantry's environment: set it, or remove webhook_secret_env to take no webhooks",
                p.webhook_secret_env_at.as_deref().unwrap_or(&shown),
                p.name
            )
            .into());
        }
    }
    // So are the tokens of commit statuses.
    for p in &config.projects {
        if let Some(s) = &p.status
            && std::env::var(&s.token_env).map_or(true, |v| v.is_empty())
        {
            return Err(anyhow!(
                "{}: project `{}`: status.token_env names `{}`, which is not set in gantry's environment: set it, or remove the project's status table to post no commit statuses",
                s.token_env_at,
                p.name,
                s.token_env
            )
            .into());
        }
    }
    // One server per data directory: a directory a live server holds is refused before
    // anything else, with nothing of the first server touched.
    let mut lock = match data_dir.is_dir() {
        true => Some(ServerLock::acquire(&data_dir)?),
        false => None,
    };
    // The address next: a port in use must not leave a new data directory, database and
    // admin token behind.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            let from = match args.listen {
                Some(_) => "--listen".to_string(),
                None => format!("{shown}: listen"),
            };
            format!("{from} = \"{}\": cannot listen there", config.listen)
        })?;
    let lock = match lock.take() {
        Some(lock) => lock,
        None => {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
            ServerLock::acquire(&data_dir)?
        }
    };
    let ctx = Context::open_configured(data_dir, config.state.as_deref()).await?;
    let grace = config.shutdown_grace;
    let projects = config.projects.len();
    let running = Server::start(config, ctx, listener, lock).await?;
    println!(
        "gantry serving {} ({projects} projects, data in {})",
        running.url,
        running.server.data_dir.display()
    );
    let _ = std::io::stdout().flush();
    stop.await;
    running.shutdown(grace).await;
    Ok(())
}
