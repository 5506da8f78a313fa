//! `gantry why [RUN|PROJECT]`: why the latest failed run (or this one) failed, with evidence,
//! a fix, and what changed since the last good run.

use super::CliResult;
use crate::client::Client;
use crate::context::{Context, data_dir_here};
use crate::why::{Report, diagnose_run, latest_failed, render};
use anyhow::anyhow;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct WhyArgs {
    /// A run id, or a project name (its latest failed run); default: the latest failed run
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
                    let q = project
                        .as_ref()
                        .map(|p| format!("&project={p}"))
                        .unwrap_or_default();
                    let v = c
                        .get(&format!("/api/runs?status=failed&limit=1{q}"))
                        .await?;
                    v["runs"][0]["id"]
                        .as_i64()
                        .ok_or_else(|| anyhow!("no failed run to explain"))?
                }
            };
            serde_json::from_value(c.get(&format!("/api/runs/{id}/diagnosis")).await?)
                .map_err(anyhow::Error::from)?
        }
        None => {
            let ctx = Context::open(data).await?;
            let id = match run_id {
                Some(id) => id,
                None => latest_failed(&*ctx.state, project)
                    .await?
                    .ok_or_else(|| anyhow!("no failed run to explain"))?,
            };
            let detail = gantry_engine::ports::StateStore::run_detail(&*ctx.state, id)
                .await?
                .ok_or_else(|| anyhow!("no run {id}"))?;
            let repo = gantry_git::Repo::open(std::path::Path::new(&detail.run.repo)).ok();
            diagnose_run(
                &*ctx.state,
                repo.as_ref(),
                id,
                crate::why::load_rules(args.rules.as_deref())?,
            )
            .await?
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
