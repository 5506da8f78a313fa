//! `gantry why [RUN|PROJECT]`: why the latest failed run (or this one) failed, with evidence,
//! a fix, and what changed since the last good run.

use super::CliResult;
use crate::client::Client;
use crate::context::{Context, data_dir_here};
use crate::why::{
    Report, diagnose_release, diagnose_run, latest_failed, latest_failed_release, render,
    render_release,
};
use anyhow::anyhow;
use gantry_engine::ports::{ReleaseRecord, RunFilter, StateStore};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct WhyArgs {
    /// A run id, an environment (its latest failed release), or a project name (its latest
    /// failed run); default: the latest failed run or release
    pub target: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Diagnose this log file (any CI system's output) instead of a run
    #[arg(long, value_name = "FILE", conflicts_with = "target")]
    pub log: Option<PathBuf>,
    /// A TOML file of your own rules, added to the built-in ones (see README)
    #[arg(long, env = "GANTRY_WHY_RULES", value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

pub async fn why(args: WhyArgs, server: Option<String>, data_dir: Option<PathBuf>) -> CliResult {
    if let Some(log) = &args.log {
        return why_log(log, &args).await;
    }
    let data = data_dir_here(data_dir)?;
    let run_id = args.target.as_deref().and_then(|t| t.parse::<i64>().ok());
    let project = args.target.filter(|_| run_id.is_none());
    let report: Report = match server {
        Some(url) => {
            let c = Client::resolve(Some(&url), &data)?;
            let id = match run_id {
                Some(id) => id,
                None => {
                    let filter = RunFilter {
                        project: project.clone(),
                        status: Some(gantry_model::RunStatus::Failed),
                        limit: 1,
                        ..RunFilter::default()
                    };
                    c.runs(&filter)
                        .await?
                        .first()
                        .map(|r| r.id)
                        .ok_or_else(|| anyhow!("no failed run to explain"))?
                }
            };
            c.diagnosis(id).await?
        }
        None => {
            let ctx = Context::open(data).await?;
            let rules = crate::why::load_rules(args.rules.as_deref())?;
            if let Some(release) =
                failed_release_to_explain(&*ctx.state, run_id, project.as_deref()).await?
            {
                let repo = match release.run_id {
                    Some(id) => gantry_engine::ports::RunStore::run_detail(&*ctx.state, id)
                        .await?
                        .and_then(|d| {
                            gantry_git::Repo::open(std::path::Path::new(&d.run.repo)).ok()
                        }),
                    None => None,
                };
                let report = diagnose_release(&*ctx.state, repo.as_ref(), release, rules).await?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
                    );
                } else {
                    print!("{}", render_release(&report));
                }
                return Ok(());
            }
            let id = match run_id {
                Some(id) => id,
                None => latest_failed(&*ctx.state, project)
                    .await?
                    .ok_or_else(|| anyhow!("no failed run to explain"))?,
            };
            let detail = gantry_engine::ports::RunStore::run_detail(&*ctx.state, id)
                .await?
                .ok_or_else(|| anyhow!("no run {id}"))?;
            let repo = gantry_git::Repo::open(std::path::Path::new(&detail.run.repo)).ok();
            diagnose_run(&*ctx.state, repo.as_ref(), id, rules).await?
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
        );
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The failed release `gantry why` should explain, if it should explain one: the target names an
/// environment, or no target was given and the newest failure is a release rather than a run.
async fn failed_release_to_explain(
    store: &dyn StateStore,
    run_id: Option<i64>,
    target: Option<&str>,
) -> anyhow::Result<Option<ReleaseRecord>> {
    if run_id.is_some() {
        return Ok(None);
    }
    let envs = store.environments().await?;
    match target {
        Some(name) => {
            // An environment name (of any project; an exact `project/env` also works).
            for (p, e) in &envs {
                if e == name || format!("{p}/{e}") == name {
                    return match latest_failed_release(store, p, e).await? {
                        Some(r) => Ok(Some(r)),
                        None => Err(anyhow!("{p}/{e} has no failed release to explain")),
                    };
                }
            }
            Ok(None)
        }
        None => {
            let mut newest: Option<ReleaseRecord> = None;
            for (p, e) in &envs {
                if let Some(r) = latest_failed_release(store, p, e).await?
                    && newest.as_ref().is_none_or(|n| r.created_at > n.created_at)
                {
                    newest = Some(r);
                }
            }
            let Some(release) = newest else {
                return Ok(None);
            };
            // A failed run that ended after the release was made is the newer failure.
            let run_is_newer = match latest_failed(store, None).await? {
                Some(id) => store.run_detail(id).await?.is_some_and(|d| {
                    d.run.finished_at.unwrap_or(d.run.created_at) > release.created_at
                }),
                None => false,
            };
            Ok((!run_is_newer).then_some(release))
        }
    }
}

/// `gantry why --log FILE`: the diagnosis of a log file, read line by line in constant memory.
async fn why_log(path: &std::path::Path, args: &WhyArgs) -> CliResult {
    use std::io::BufRead;
    let rules = crate::why::load_rules(args.rules.as_deref())?;
    let file = std::fs::File::open(path).map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut d = gantry_engine::why::Diagnoser::new(rules);
    let name = path.display().to_string();
    let mut buf = Vec::new();
    let mut line_no = 0i64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(anyhow::Error::from)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let text = String::from_utf8_lossy(&buf);
        d.line(&name, "log", line_no, text.trim_end_matches(['\n', '\r']));
    }
    let diagnosis = d.finish();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&diagnosis).map_err(anyhow::Error::from)?
        );
    } else {
        println!("{}: {}", diagnosis.category, diagnosis.sentence);
        for e in &diagnosis.evidence {
            println!("  {}:{}  {}", name, e.line, e.text);
        }
        if !diagnosis.failing_tests.is_empty() {
            println!("failing tests: {}", diagnosis.failing_tests.join(", "));
        }
        println!("fix: {}", diagnosis.fix);
    }
    Ok(())
}
