//! `gantry runs`, `gantry show [RUN]`, `gantry logs RUN [JOB] [-f]`: the state of past and
//! current runs, read from the local database or, with `--server`, from a gantry server.

use super::{CliError, CliResult};
use crate::client::Client;
use crate::context::{Context, data_dir_here};
use crate::render::summary;
use anyhow::{Result, anyhow};
use gantry_api::types;
use gantry_engine::ports::{LogRecord, RunDetail, RunFilter, RunRecord};
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
    /// Keep printing lines as they come until the run finishes
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

/// Where run state is read from.
enum Source {
    Local(Context),
    Remote(Client),
}

impl Source {
    async fn open(server: Option<String>, data_dir: Option<PathBuf>) -> Result<Self> {
        let data = data_dir_here(data_dir)?;
        Ok(match server {
            Some(url) => Source::Remote(Client::resolve(Some(&url), &data)?),
            None => Source::Local(Context::open(data).await?),
        })
    }

    async fn list_runs(&self, f: &RunFilter) -> Result<Vec<RunRecord>> {
        match self {
            Source::Local(ctx) => ctx.state.list_runs(f).await,
            Source::Remote(c) => c.runs(f).await,
        }
    }

    async fn run_detail(&self, id: i64) -> Result<Option<RunDetail>> {
        match self {
            Source::Local(ctx) => ctx.state.run_detail(id).await,
            Source::Remote(c) => c.run(id).await,
        }
    }

    async fn logs(&self, run: i64, job: Option<&str>, after: i64) -> Result<Vec<LogRecord>> {
        match self {
            Source::Local(ctx) => ctx.state.logs(run, job, after, 5000).await,
            Source::Remote(c) => c.logs(run, job, after, 5000).await,
        }
    }
}

pub async fn runs(args: RunsArgs, server: Option<String>, data_dir: Option<PathBuf>) -> CliResult {
    let src = Source::open(server, data_dir).await?;
    let filter = RunFilter {
        project: args.project,
        branch: args.branch,
        status: args.status,
        before: args.before,
        limit: args.limit,
    };
    let runs = src.list_runs(&filter).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&runs.iter().map(types::Run::from).collect::<Vec<_>>())
                .map_err(anyhow::Error::from)?
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
            (Some(_), None) => "…".into(),
            _ => "-".into(),
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

pub async fn show(args: ShowArgs, server: Option<String>, data_dir: Option<PathBuf>) -> CliResult {
    let src = Source::open(server, data_dir).await?;
    let id = match args.run {
        Some(id) => id,
        None => src
            .list_runs(&RunFilter {
                limit: 1,
                ..Default::default()
            })
            .await?
            .first()
            .map(|r| r.id)
            .ok_or_else(|| anyhow!("no runs yet"))?,
    };
    let detail = src
        .run_detail(id)
        .await?
        .ok_or_else(|| anyhow!("no run {id}"))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&types::RunDetail::from(&detail))
                .map_err(anyhow::Error::from)?
        );
        return Ok(());
    }
    print!("{}", summary(&detail));
    Ok(())
}

fn print_line(l: &LogRecord, json: bool, several: bool) {
    if json {
        if let Ok(s) = serde_json::to_string(&types::LogLine::from(l)) {
            println!("{s}");
        }
    } else if several {
        println!("{} | {}", l.job, l.text);
    } else {
        println!("{}", l.text);
    }
}

pub async fn logs(args: LogsArgs, server: Option<String>, data_dir: Option<PathBuf>) -> CliResult {
    let src = Source::open(server, data_dir).await?;
    let detail = src
        .run_detail(args.run)
        .await?
        .ok_or_else(|| anyhow!("no run {}", args.run))?;
    if let Some(job) = &args.job
        && !detail.jobs.iter().any(|j| &j.name == job)
        && detail.run.status.is_finished()
    {
        let names: Vec<&str> = detail.jobs.iter().map(|j| j.name.as_str()).collect();
        return Err(CliError::from(anyhow!(
            "run {} has no job `{job}`; its jobs: {}",
            args.run,
            names.join(", ")
        )));
    }
    let several = args.job.is_none();
    if let (true, Source::Remote(c)) = (args.follow, &src) {
        // Live: server-sent events, resumed by the client if the connection drops.
        let end = c
            .follow_logs(args.run, args.job.as_deref(), |l| {
                print_line(&l, args.json, several)
            })
            .await?;
        return match end {
            Some(RunStatus::Succeeded) | None => Ok(()),
            Some(_) => Err(CliError::silent(1)),
        };
    }
    let mut after = 0;
    loop {
        let page = src.logs(args.run, args.job.as_deref(), after).await?;
        for l in &page {
            print_line(l, args.json, several);
        }
        if let Some(last) = page.last() {
            after = last.id;
            continue;
        }
        if !args.follow {
            break;
        }
        // Local follow: poll until the run has finished and every line was printed.
        let status = src.run_detail(args.run).await?.map(|d| d.run.status);
        if status.is_none_or(|s| s.is_finished()) {
            let rest = src.logs(args.run, args.job.as_deref(), after).await?;
            for l in &rest {
                print_line(l, args.json, several);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if after == 0
        && let Source::Local(ctx) = &src
        && let Some(at) = ctx.state.logs_removed_at(args.run).await?
    {
        eprintln!(
            "run {}'s log was removed by log retention ([retention] logs) {} ago",
            args.run,
            gantry_model::duration::format_duration(Duration::from_millis(
                (gantry_engine::ports::now_millis() - at).max(0) as u64
            ))
        );
    }
    Ok(())
}
