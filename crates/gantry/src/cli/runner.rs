//! `gantry runner`: claim jobs from a server and run them here (see `crate::agent`).

use super::CliResult;
use crate::agent::{RunnerConfig, serve};
use crate::client::Client;
use anyhow::{Context as _, anyhow};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct RunnerArgs {
    /// A token with the runner role (`gantry token create --name NAME --role runner`)
    #[arg(long, env = "GANTRY_RUNNER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Labels this runner has, comma-separated: it takes jobs whose `runs_on:` are all among
    /// them (and jobs that name none)
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// Jobs run at once
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Its name on the jobs it runs (unique among runners). Default: HOST-PID
    #[arg(long)]
    pub name: Option<String>,
    /// Where workspaces and the commits' files go. Default: gantry-runner in the temporary
    /// directory
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The CA certificate(s) to trust an https:// server by (PEM); also GANTRY_CA_FILE
    #[arg(long, env = "GANTRY_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Appends a JSON line per job it ran to FILE: the runner's own record
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

pub async fn runner(args: RunnerArgs, server: Option<String>) -> CliResult {
    let server = server
        .ok_or_else(|| anyhow!("a runner needs its server: --server URL (or GANTRY_SERVER)"))?;
    for label in &args.labels {
        if let Some(problem) = gantry_model::label_problem(label) {
            return Err(anyhow!("--labels: `{label}` is not a label: {problem}").into());
        }
    }
    let mut labels = args.labels.clone();
    labels.sort();
    labels.dedup();
    let client = Client::with_token(&server, args.token.trim(), args.ca_file.as_deref())?;
    let name = args.name.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            gantry_runner::owner::this_host(),
            std::process::id()
        )
    });
    let work_dir = match args.work_dir {
        Some(d) => {
            std::path::absolute(&d).with_context(|| format!("--work-dir {}", d.display()))?
        }
        None => std::env::temp_dir().join("gantry-runner").join(&name),
    };
    serve(
        RunnerConfig {
            client: Arc::new(client),
            name,
            labels,
            concurrency: args.concurrency as usize,
            work_dir,
            record: args.record,
        },
        super::stop_signal(),
    )
    .await?;
    Ok(())
}
