//! Environment commands, carried out by the server: `gantry deploy`, `gantry rollback`,
//! `gantry releases`, `gantry status`. The project is `--project`, else the current
//! repository's (its pipeline's `name`, or its directory name), else the only project on the
//! server that has the environment.

use super::{CliError, CliResult};
use crate::cli::remote::client;
use crate::client::Client;
use crate::render::short_digest;
use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The environment (as named under `environments:` in gantry.yml)
    pub environment: String,
    /// The artifact to deploy (as named in the pipeline)
    #[arg(long)]
    pub artifact: String,
    /// Of this run (default: the newest run that made it)
    #[arg(long, conflicts_with = "digest")]
    pub run: Option<i64>,
    /// The artifact version with this digest (sha256:...)
    #[arg(long)]
    pub digest: Option<String>,
    #[arg(long)]
    pub project: Option<String>,
    /// Deploy even if it is older than the live release (use `rollback` to go back)
    #[arg(long)]
    pub force: bool,
    /// Wait until the bake period after the switch has passed
    #[arg(long)]
    pub wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    pub environment: String,
    /// Roll back (or forward) to this release (default: the previous healthy one)
    #[arg(long)]
    pub to: Option<i64>,
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct StopArgs {
    pub environment: String,
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(clap::Args)]
pub struct ReleasesArgs {
    pub environment: String,
    #[arg(long)]
    pub project: Option<String>,
    /// Also print what happened to each release (state changes, health checks, crashes)
    #[arg(long)]
    pub events: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct CanaryArgs {
    pub environment: String,
    #[arg(long)]
    pub project: Option<String>,
    /// (promote) Everyone to the canary now, skipping the remaining steps
    #[arg(long)]
    pub full: bool,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// One environment (default: all)
    pub environment: Option<String>,
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// The project of the current repository: its pipeline's name, else the directory's name.
/// The project of the working directory: the `name` in the nearest pipeline file of the working
/// copy, from here up to the repository's root (true: a pipeline file names it), else the
/// repository's directory name (false). Files only, no git process: every `gantry rollback`
/// asks this.
fn project_here() -> Option<(String, bool)> {
    let cwd = std::env::current_dir().ok()?;
    let mut dir = cwd.as_path();
    loop {
        for file in gantry_config::PIPELINE_FILE_NAMES {
            if let Ok(bytes) = std::fs::read(dir.join(file))
                && let Ok(checked) = gantry_config::parse_pipeline_bytes(file, &bytes)
                && let Some(name) = checked.pipeline.name
            {
                return Some((name, true));
            }
        }
        let bare = dir.join("HEAD").is_file() && dir.join("objects").is_dir();
        if dir.join(".git").exists() || bare {
            let name = dir.file_name()?.to_string_lossy().into_owned();
            return Some((
                name.strip_suffix(".git")
                    .map(str::to_string)
                    .unwrap_or(name),
                false,
            ));
        }
        dir = dir.parent()?;
    }
}

/// Which project a command acts on: `--project`; else the one whose repository the command runs
/// in, when its pipeline file names it (even if another project is the only one with the
/// environment so far: a deploy typed in one repository must never act on another); else the
/// only project with the environment.
async fn resolve_project(
    c: &Client,
    explicit: Option<String>,
    env: Option<&str>,
) -> anyhow::Result<String> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let here = project_here();
    if let Some((name, true)) = &here {
        return Ok(name.clone());
    }
    let all = c.get("/api/environments?brief=true").await?;
    let mut with_env: Vec<String> = all
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| env.is_none_or(|e| s["environment"] == e))
                .filter_map(|s| s["project"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    with_env.sort();
    with_env.dedup();
    if let [one] = with_env.as_slice() {
        return Ok(one.clone());
    }
    if let Some((here, _)) = &here
        && (with_env.is_empty() || with_env.contains(here))
    {
        return Ok(here.clone());
    }
    match with_env.as_slice() {
        [] => bail!(
            "which project? name it with --project (no environment{} on the server yet)",
            env.map(|e| format!(" `{e}`")).unwrap_or_default()
        ),
        many => bail!(
            "which project? several have environment `{}`: {}; name one with --project",
            env.unwrap_or("?"),
            many.join(", ")
        ),
    }
}

/// Who is asking, for the release's record: `alice (cli)`.
fn who() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(u) if !u.is_empty() => format!("{u} (cli)"),
        _ => "cli".to_string(),
    }
}

fn env_path(project: &str, env: &str) -> String {
    format!("/api/projects/{project}/environments/{env}")
}

fn describe_release(r: &Value) -> String {
    let mut s = format!(
        "release {} ({} {}",
        r["number"],
        r["artifact"].as_str().unwrap_or("?"),
        short_digest(r["digest"].as_str().unwrap_or(""))
    );
    if let Some(run) = r["run_id"].as_i64() {
        s.push_str(&format!(", run {run}"));
    }
    if let Some(c) = r["commit"].as_str() {
        s.push_str(&format!(", commit {}", &c[..c.len().min(10)]));
    }
    s.push(')');
    s
}

pub async fn deploy(
    args: DeployArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    let project = resolve_project(&c, args.project, Some(&args.environment)).await?;
    let started = Instant::now();
    let (status, body) = c
        .post_full(
            &format!("{}/deploy", env_path(&project, &args.environment)),
            json!({
                "artifact": args.artifact,
                "run": args.run,
                "digest": args.digest,
                "force": args.force,
                "wait": args.wait,
                "by": who(),
            }),
        )
        .await?;
    if args.json {
        println!("{body}");
        return if status == 200 {
            Ok(())
        } else {
            Err(CliError::silent(1))
        };
    }
    match status {
        200 => {
            // A canary serves some users next to the live release; only a switch is "live".
            let now = match body["release"]["state"].as_str() {
                Some("canary") => "is a canary",
                _ => "is live",
            };
            println!(
                "{}: {} {now} ({} ms)",
                args.environment,
                describe_release(&body["release"]),
                started.elapsed().as_millis()
            );
            println!("  {}", body["message"].as_str().unwrap_or(""));
            Ok(())
        }
        422 if body["release"].is_object() => {
            eprintln!(
                "{}: deployment of {} failed; traffic stayed on the live release",
                args.environment,
                describe_release(&body["release"])
            );
            eprintln!(
                "  {}",
                body["message"].as_str().unwrap_or("").replace('\n', "\n  ")
            );
            Err(CliError::silent(1))
        }
        _ => Err(anyhow!(
            "the server answered {status}: {}",
            body["error"]["message"].as_str().unwrap_or("no details")
        )
        .into()),
    }
}

pub async fn stop(args: StopArgs, server: Option<String>, data_dir: Option<PathBuf>) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    let project = resolve_project(&c, args.project, Some(&args.environment)).await?;
    let body = c
        .post(
            &format!("{}/stop", env_path(&project, &args.environment)),
            json!({ "by": who() }),
        )
        .await?;
    println!("{}", body["message"].as_str().unwrap_or("stopped"));
    Ok(())
}

pub async fn rollback(
    args: RollbackArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    let project = resolve_project(&c, args.project, Some(&args.environment)).await?;
    let started = Instant::now();
    let body = c
        .post(
            &format!("{}/rollback", env_path(&project, &args.environment)),
            json!({
                "to": args.to,
                "by": who(),
            }),
        )
        .await?;
    let took = started.elapsed().as_millis();
    if args.json {
        println!("{body}");
    } else {
        println!(
            "{}: rolled back to release {}; now live as {} ({took} ms)",
            args.environment,
            body["source"],
            describe_release(&body)
        );
    }
    Ok(())
}

fn age(ms: i64) -> String {
    let now = gantry_engine::ports::now_millis();
    let s = ((now - ms).max(0) / 1000) as u64;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

pub async fn releases(
    args: ReleasesArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    let project = resolve_project(&c, args.project, Some(&args.environment)).await?;
    let body = c
        .get(&format!(
            "{}/releases",
            env_path(&project, &args.environment)
        ))
        .await?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    println!(
        "{:<4} {:<12} {:<9} {:<22} {:<5} {:<10} {:<9} BY / REASON",
        "#", "STATE", "KIND", "ARTIFACT", "RUN", "COMMIT", "CREATED"
    );
    for h in body.as_array().into_iter().flatten() {
        let r = &h["release"];
        let kind = match r["kind"].as_str() {
            Some("rollback") => format!("-> {}", r["source"]),
            _ => "deploy".to_string(),
        };
        let kept = if r["retired_at"].is_null() {
            ""
        } else {
            " (retired)"
        };
        println!(
            "{:<4} {:<12} {:<9} {:<22} {:<5} {:<10} {:<9} {}{}{}",
            r["number"].to_string(),
            r["state"].as_str().unwrap_or("?"),
            kind,
            format!(
                "{} {}",
                r["artifact"].as_str().unwrap_or("?"),
                short_digest(r["digest"].as_str().unwrap_or(""))
            ),
            r["run_id"]
                .as_i64()
                .map(|n| n.to_string())
                .unwrap_or_default(),
            r["commit"]
                .as_str()
                .map(|c| &c[..c.len().min(10)])
                .unwrap_or(""),
            r["created_at"].as_i64().map(age).unwrap_or_default(),
            r["created_by"].as_str().unwrap_or(""),
            kept,
            r["reason"]
                .as_str()
                .map(|x| format!(" — {}", x.lines().next().unwrap_or("")))
                .unwrap_or_default(),
        );
        if args.events {
            for e in h["events"].as_array().into_iter().flatten() {
                println!(
                    "       {} {}: {}",
                    e["at"].as_i64().map(age).unwrap_or_default(),
                    e["kind"].as_str().unwrap_or(""),
                    e["message"]
                        .as_str()
                        .unwrap_or("")
                        .replace('\n', "\n         ")
                );
            }
        }
    }
    Ok(())
}

/// `gantry promote|abort|pause|resume ENV`.
pub async fn canary(
    action: &str,
    args: CanaryArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    let project = resolve_project(&c, args.project, Some(&args.environment)).await?;
    let body = c
        .post(
            &format!("{}/{action}", env_path(&project, &args.environment)),
            json!({ "full": args.full, "by": who() }),
        )
        .await?;
    println!("{}", body["message"].as_str().unwrap_or("done"));
    Ok(())
}

fn window(w: &Value) -> String {
    let ms = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}"));
    format!(
        "{} requests, 5xx {:.2}%, p50/p90/p99 {}/{}/{} ms",
        w["requests"],
        w["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
        ms(&w["p50_ms"]),
        ms(&w["p90_ms"]),
        ms(&w["p99_ms"])
    )
}

fn uptime(ms: u64) -> String {
    gantry_model::duration::format_duration(std::time::Duration::from_secs(ms / 1000))
}

fn print_status(s: &Value) {
    println!(
        "{}/{}: {} target{}",
        s["project"].as_str().unwrap_or("?"),
        s["environment"].as_str().unwrap_or("?"),
        s["target"].as_str().unwrap_or("unknown"),
        s["router"]
            .as_str()
            .map(|r| format!(", router http://{r}"))
            .unwrap_or_default()
    );
    match s["live"].is_object() {
        true => println!("  live:     {}", describe_release(&s["live"])),
        false => println!("  live:     none"),
    }
    println!(
        "  health:   {}{}",
        s["health"].as_str().unwrap_or("unknown"),
        s["health_detail"]
            .as_str()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );
    if let Some(ms) = s["uptime_ms"].as_u64() {
        println!(
            "  uptime:   {} (pid {}, restarts {})",
            uptime(ms),
            s["pid"],
            s["restarts"]
        );
    }
    if s["previous"].is_object() {
        println!(
            "  previous: {} (gantry rollback goes here)",
            describe_release(&s["previous"])
        );
    }
    if s["lock"].is_object() {
        println!(
            "  locked:   {} by {}",
            s["lock"]["purpose"].as_str().unwrap_or("?"),
            s["lock"]["owner"].as_str().unwrap_or("?")
        );
    }
    if s["canary"].is_object() {
        let c = &s["canary"];
        println!(
            "  canary:   release {} {} at {}% (step {} of {})",
            c["release"],
            c["state"].as_str().unwrap_or("?"),
            c["percent"],
            c["step"]
                .as_u64()
                .map_or("-".to_string(), |x| (x + 1).to_string()),
            c["steps"]
        );
        println!("            canary this step: {}", window(&c["canary"]));
        println!("            stable this step: {}", window(&c["stable"]));
    }
    for t in s["traffic"].as_array().into_iter().flatten() {
        println!(
            "  traffic:  release {} ({}) last minute: {}; total {} requests, {} errors",
            t["release"],
            t["role"].as_str().unwrap_or("?"),
            window(&t["last_minute"]),
            t["total_requests"],
            t["total_errors"]
        );
    }
    if let Some(log) = s["log"].as_str() {
        println!("  log:      {log}");
    }
}

pub async fn status(
    args: StatusArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    let body = match &args.environment {
        Some(env) => {
            let project = resolve_project(&c, args.project, Some(env)).await?;
            c.get(&env_path(&project, env)).await?
        }
        None => {
            let path = match &args.project {
                Some(p) => format!("/api/environments?project={p}"),
                None => "/api/environments".to_string(),
            };
            c.get(&path).await?
        }
    };
    if args.json {
        println!("{body}");
        return Ok(());
    }
    match body.as_array() {
        Some(all) if all.is_empty() => println!(
            "no environment has releases yet (deploy with `gantry deploy ENV --artifact NAME`)"
        ),
        Some(all) => {
            for (i, s) in all.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_status(s);
            }
        }
        None => print_status(&body),
    }
    Ok(())
}
