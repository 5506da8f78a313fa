//! Commands that act through a server: `gantry trigger`, `gantry cancel`, `gantry token create`.

use super::CliResult;
use crate::client::Client;
use crate::context::data_dir_here;
use gantry_api::types::{NewToken, TriggerBody};
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
    /// A variable every step of the run sees, as NAME=value (repeatable). Not for secrets:
    /// the run shows its variables.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = given_var)]
    pub vars: Vec<(String, String)>,
    #[arg(long)]
    pub json: bool,
}

/// `--var NAME=value`, checked as the server will check it.
fn given_var(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=value"))?;
    gantry_model::vars::check_given(name, value)?;
    Ok((name.to_string(), value.to_string()))
}

#[derive(clap::Args)]
pub struct CancelArgs {
    pub run: i64,
}

#[derive(clap::Args)]
pub struct ApproveArgs {
    /// The run waiting at an approval stage
    pub run: i64,
}

#[derive(clap::Subcommand)]
#[command(defer = true)]
pub enum TokenCommand {
    /// Create an API token; it is printed once
    Create {
        #[arg(long)]
        name: String,
        /// viewer, deployer, admin, or runner (for `gantry runner`)
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
    let body = TriggerBody {
        branch: args.branch,
        rev: args.rev,
        vars: args.vars.into_iter().collect(),
    };
    let out = c.trigger(&args.project, &body).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&out).map_err(anyhow::Error::from)?
        );
    } else {
        println!(
            "queued run {} of {} at {} on {}",
            out.run.map_or("?".to_string(), |r| r.to_string()),
            args.project,
            crate::pipeline_at::short(&out.commit),
            out.branch
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
    c.cancel(args.run).await?;
    println!("cancelling run {}", args.run);
    Ok(())
}

pub async fn approve(
    args: ApproveArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    let a = c.approve(args.run).await?;
    println!("approved stage {} of run {} as {}", a.stage, a.run, a.by);
    Ok(())
}

/// `gantry dashboard`: a one-time login link for this client's token.
pub async fn dashboard(server: Option<String>, data_dir: Option<PathBuf>) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    let link = c.login_link().await?;
    println!("{}", link.url);
    eprintln!("(opens a dashboard session as your token; works once, within 10 minutes)");
    Ok(())
}

pub async fn token(
    cmd: TokenCommand,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let TokenCommand::Create { name, role } = cmd;
    let c = client(server.as_deref(), data_dir)?;
    let out = c.create_token(&NewToken { name, role }).await?;
    eprintln!(
        "token `{}` with role {} (shown once; keep it safe):",
        out.name, out.role
    );
    println!("{}", out.token);
    Ok(())
}
