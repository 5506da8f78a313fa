//! Commands that act through a server: `gantry trigger`, `gantry cancel`, `gantry token create`.

use super::CliResult;
use crate::client::Client;
use crate::context::data_dir_here;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct TriggerArgs {
    /// The project (as named in gantry.toml)
    pub project: String,
    /// Branch (default: the repository's default branch)
    #[arg(long)]
    pub branch: Option<String>,
    /// Revision (default: the branch's head)
    #[arg(long)]
    pub rev: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct CancelArgs {
    pub run: i64,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token; it is printed once
    Create {
        #[arg(long)]
        name: String,
        /// viewer, deployer or admin
        #[arg(long)]
        role: String,
    },
}

pub fn client(server: Option<&str>, data_dir: Option<PathBuf>) -> anyhow::Result<Client> {
    Client::resolve(server, &data_dir_here(data_dir)?)
}

pub async fn trigger(
    args: TriggerArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    let out = c
        .post(
            &format!("/api/projects/{}/trigger", args.project),
            json!({ "branch": args.branch, "rev": args.rev }),
        )
        .await?;
    if args.json {
        println!("{out}");
    } else {
        println!(
            "queued run {} of {} at {} on {}",
            out["run"],
            args.project,
            out["commit"]
                .as_str()
                .map(crate::pipeline_at::short)
                .unwrap_or("?"),
            out["branch"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

pub async fn cancel(
    args: CancelArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    c.post(&format!("/api/runs/{}/cancel", args.run), json!({}))
        .await?;
    println!("cancelling run {}", args.run);
    Ok(())
}

pub async fn token(
    cmd: TokenCommand,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let TokenCommand::Create { name, role } = cmd;
    let c = client(server.as_deref(), data_dir)?;
    let out = c
        .post("/api/tokens", json!({ "name": name, "role": role }))
        .await?;
    eprintln!(
        "token `{}` with role {} (shown once; keep it safe):",
        out["name"].as_str().unwrap_or(""),
        out["role"].as_str().unwrap_or("")
    );
    println!("{}", out["token"].as_str().unwrap_or(""));
    Ok(())
}
