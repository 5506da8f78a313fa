//! `gantry route` (hidden): gantry's router alone, in front of two backends given by address,
//! for benchmarks against other proxies. The canary's share changes by writing `share N` (a
//! percent) on standard input; it answers `ok N` once the router serves it.

use super::CliResult;
use gantry_deploy::router::{Backend, CanaryRoute, RouteTable, Router, Users};
use std::net::SocketAddr;

#[derive(clap::Args)]
pub struct RouteArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long)]
    pub stable: SocketAddr,
    #[arg(long)]
    pub canary: Option<SocketAddr>,
    /// Percent of requests to the canary
    #[arg(long, default_value_t = 0)]
    pub share: u32,
    /// Do not measure answers per backend (to see what measuring costs)
    #[arg(long)]
    pub no_stats: bool,
}

fn table(
    stable: &std::sync::Arc<Backend>,
    canary: &Option<std::sync::Arc<Backend>>,
    share: u32,
) -> RouteTable {
    RouteTable {
        stable: Some(stable.clone()),
        canary: canary.as_ref().map(|c| CanaryRoute {
            backend: c.clone(),
            share: share.min(100) * 100,
            users: Users::default(),
        }),
        fallback: None,
    }
}

pub async fn route(args: RouteArgs) -> CliResult {
    let router = Router::start_with(args.listen, !args.no_stats).await?;
    let stable = Backend::new(1, args.stable);
    let canary = args.canary.map(|c| Backend::new(2, c));
    router.set(table(&stable, &canary, args.share));
    println!("listening {}", router.addr);
    // Standard input is read on a thread of its own (blocking reads).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        if let Some(n) = line
            .trim()
            .strip_prefix("share ")
            .and_then(|n| n.parse::<u32>().ok())
        {
            router.set(table(&stable, &canary, n));
            println!("ok {n}");
        }
    }
    // Standard input closed: keep serving until killed.
    std::future::pending::<()>().await;
    Ok(())
}
