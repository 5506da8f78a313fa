//! `gantry runs`, `gantry show RUN`, `gantry logs RUN [JOB]`: read the state of past and current runs.

use super::{CliError, CliResult};
use crate::context::{Context, data_dir_for};
use crate::render::summary;
use anyhow::anyhow;
use gantry_engine::ports::{RunFilter, StateStore};
use gantry_model::RunStatus;
use gantry_model::duration::format_duration;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct RunsArgs {
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub branch: Option<String>,
    /// queued, running, succeeded, failed, cancelled or interrupted
    #[arg(long, value_parser = |s: &str| s.parse::<RunStatus>())]
    pub status: Option<RunStatus>,
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    /// Runs older than this run id (paging)
    #[arg(long)]
    pub before: Option<i64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// Run id (default: the latest run)
    pub run: Option<i64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Run id
    pub run: i64,
    /// Only this job
    pub job: Option<String>,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

async fn open(data_dir: Option<PathBuf>) -> anyhow::Result<Context> {
    let cwd = std::env::current_dir()?;
    Context::open(data_dir_for(data_dir, &cwd)).await
}

pub async fn runs(args: RunsArgs, data_dir: Option<PathBuf>) -> CliResult {
    let ctx = open(data_dir).await?;
    let filter = RunFilter {
        project: args.project,
        branch: args.branch,
        status: args.status,
        before: args.before,
        limit: args.limit,
    };
    let runs = ctx.state.list_runs(&filter).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs).map_err(anyhow::Error::from)?
        );
        return Ok(());
    }
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(());
    }
    println!(
        "{:<6} {:<12} {:<16} {:<10} {:<14} {:<9} STARTED",
        "RUN", "STATUS", "PROJECT", "COMMIT", "BRANCH", "TIME"
    );
    for r in runs {
        let time = match (r.started_at, r.finished_at) {
            (Some(s), Some(e)) => format_duration(Duration::from_millis((e - s).max(0) as u64)),
            _ => "…".into(),
        };
        let started = chrono::DateTime::from_timestamp_millis(r.created_at)
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_default();
        println!(
            "{:<6} {:<12} {:<16} {:<10} {:<14} {:<9} {started}",
            r.id,
            r.status.as_str(),
            r.project,
            &r.commit[..r.commit.len().min(10)],
            r.branch.as_deref().unwrap_or("-"),
            time
        );
    }
    Ok(())
}

pub async fn show(args: ShowArgs, data_dir: Option<PathBuf>) -> CliResult {
    let ctx = open(data_dir).await?;
    let id = match args.run {
        Some(id) => id,
        None => ctx
            .state
            .list_runs(&RunFilter {
                limit: 1,
                ..Default::default()
            })
            .await?
            .first()
            .map(|r| r.id)
            .ok_or_else(|| anyhow!("no runs yet"))?,
    };
    let detail = ctx
        .state
        .run_detail(id)
        .await?
        .ok_or_else(|| anyhow!("no run {id}"))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&detail).map_err(anyhow::Error::from)?
        );
        return Ok(());
    }
    print!("{}", summary(&detail));
    Ok(())
}

pub async fn logs(args: LogsArgs, data_dir: Option<PathBuf>) -> CliResult {
    let ctx = open(data_dir).await?;
    let detail = ctx
        .state
        .run_detail(args.run)
        .await?
        .ok_or_else(|| anyhow!("no run {}", args.run))?;
    if let Some(job) = &args.job
        && !detail.jobs.iter().any(|j| &j.name == job)
    {
        {
            let names: Vec<&str> = detail.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(CliError::from(anyhow!(
                "run {} has no job `{job}`; its jobs: {}",
                args.run,
                names.join(", ")
            )));
        }
    }
    let mut after = 0;
    let several = args.job.is_none();
    loop {
        let page = ctx
            .state
            .logs(args.run, args.job.as_deref(), after, 5000)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for l in &page {
            if args.json {
                println!("{}", serde_json::to_string(l).map_err(anyhow::Error::from)?);
            } else if several {
                println!("{} | {}", l.job, l.text);
            } else {
                println!("{}", l.text);
            }
        }
    }
    Ok(())
}
