//! Environment commands, carried out by the server: `gantry deploy`, `gantry rollback`,
//! `gantry releases`, `gantry status`. The project is `--project`, else the current
//! repository's (its pipeline's `name`, or its directory name), else the only project on the
//! server that has the environment.

use super::{CliError, CliResult};
use crate::cli::remote::client;
use crate::client::Client;
use crate::render::short_digest;
use anyhow::{anyhow, bail};
use gantry_api::types::{
    DeployBody, EnvStatus, Release, ReleaseKind, ReleaseState, RollbackBody, StopBody, Window,
};
use gantry_engine::canary::CanaryAction;
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
    let mut with_env: Vec<String> = c
        .environment_names()
        .await?
        .into_iter()
        .filter(|n| env.is_none_or(|e| n.environment == e))
        .map(|n| n.project)
        .collect();
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

/// The server's client, and the project whose environment `environment` a command acts on.
async fn environment_of(
    server: Option<String>,
    data_dir: Option<PathBuf>,
    project: Option<String>,
    environment: &str,
) -> anyhow::Result<(Client, String)> {
    let c = client(server.as_deref(), data_dir)?;
    let project = resolve_project(&c, project, Some(environment)).await?;
    Ok((c, project))
}

/// A wire answer as `--json` prints it: one line, as the server sent it.
fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// Who is asking, for the release's record: `alice (cli)`.
fn who() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        Ok(u) if !u.is_empty() => format!("{u} (cli)"),
        _ => "cli".to_string(),
    }
}

fn describe_release(r: &Release) -> String {
    let mut s = format!(
        "release {} ({} {}",
        r.number,
        r.artifact,
        short_digest(&r.digest)
    );
    if let Some(run) = r.run_id {
        s.push_str(&format!(", run {run}"));
    }
    if let Some(c) = &r.commit {
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
    let (c, project) = environment_of(server, data_dir, args.project, &args.environment).await?;
    let started = Instant::now();
    let body = DeployBody {
        artifact: args.artifact,
        run: args.run,
        digest: args.digest,
        force: args.force,
        wait: args.wait,
        by: Some(who()),
        bake_ms: None,
    };
    let outcome = c.deploy(&project, &args.environment, &body).await?;
    if args.json {
        print_json(&outcome)?;
        return if outcome.succeeded {
            Ok(())
        } else {
            Err(CliError::silent(1))
        };
    }
    let Some(release) = &outcome.release else {
        return Err(anyhow!("the server answered without a release: {}", outcome.message).into());
    };
    if outcome.succeeded {
        // A canary serves some users next to the live release; only a switch is "live".
        let now = match release.state {
            ReleaseState::Canary => "is a canary",
            _ => "is live",
        };
        println!(
            "{}: {} {now} ({} ms)",
            args.environment,
            describe_release(release),
            started.elapsed().as_millis()
        );
        println!("  {}", outcome.message);
        Ok(())
    } else {
        eprintln!(
            "{}: deployment of {} failed; traffic stayed on the live release",
            args.environment,
            describe_release(release)
        );
        eprintln!("  {}", outcome.message.replace('\n', "\n  "));
        Err(CliError::silent(1))
    }
}

pub async fn stop(args: StopArgs, server: Option<String>, data_dir: Option<PathBuf>) -> CliResult {
    let (c, project) = environment_of(server, data_dir, args.project, &args.environment).await?;
    let body = StopBody { by: Some(who()) };
    let stopped = c.stop(&project, &args.environment, &body).await?;
    println!("{}", stopped.message);
    Ok(())
}

pub async fn rollback(
    args: RollbackArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let (c, project) = environment_of(server, data_dir, args.project, &args.environment).await?;
    let started = Instant::now();
    let body = RollbackBody {
        to: args.to,
        by: Some(who()),
    };
    let release = c.rollback(&project, &args.environment, &body).await?;
    let took = started.elapsed().as_millis();
    if args.json {
        print_json(&release)?;
    } else {
        println!(
            "{}: rolled back to release {}; now live as {} ({took} ms)",
            args.environment,
            release.source,
            describe_release(&release)
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
    let (c, project) = environment_of(server, data_dir, args.project, &args.environment).await?;
    let history = c.releases(&project, &args.environment).await?;
    if args.json {
        print_json(&history)?;
        return Ok(());
    }
    println!(
        "{:<4} {:<12} {:<9} {:<22} {:<5} {:<10} {:<9} BY / REASON",
        "#", "STATE", "KIND", "ARTIFACT", "RUN", "COMMIT", "CREATED"
    );
    for h in &history {
        let r = &h.release;
        let kind = match r.kind {
            ReleaseKind::Rollback => format!("-> {}", r.source),
            ReleaseKind::Deploy => "deploy".to_string(),
        };
        let kept = if r.retired_at.is_none() {
            ""
        } else {
            " (retired)"
        };
        println!(
            "{:<4} {:<12} {:<9} {:<22} {:<5} {:<10} {:<9} {}{}{}",
            r.number.to_string(),
            r.state.as_str(),
            kind,
            format!("{} {}", r.artifact, short_digest(&r.digest)),
            r.run_id.map(|n| n.to_string()).unwrap_or_default(),
            r.commit
                .as_deref()
                .map(|c| &c[..c.len().min(10)])
                .unwrap_or(""),
            age(r.created_at),
            r.created_by,
            kept,
            r.reason
                .as_deref()
                .map(|x| format!(" — {}", x.lines().next().unwrap_or("")))
                .unwrap_or_default(),
        );
        if args.events {
            for e in &h.events {
                println!(
                    "       {} {}: {}",
                    age(e.at),
                    e.kind,
                    e.message.replace('\n', "\n         ")
                );
            }
        }
    }
    Ok(())
}

/// `gantry promote|abort|pause|resume ENV`.
pub async fn canary(
    action: CanaryAction,
    args: CanaryArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let (c, project) = environment_of(server, data_dir, args.project, &args.environment).await?;
    let done = c
        .canary(&project, &args.environment, action, Some(who()))
        .await?;
    println!("{}", done.message);
    Ok(())
}

fn window(w: &Window) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
    format!(
        "{} requests, 5xx {:.2}%, p50/p90/p99 {}/{}/{} ms",
        w.requests,
        w.error_rate * 100.0,
        ms(w.p50_ms),
        ms(w.p90_ms),
        ms(w.p99_ms)
    )
}

fn uptime(ms: u64) -> String {
    gantry_model::duration::format_duration(std::time::Duration::from_secs(ms / 1000))
}

fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".to_string(), |x| x.to_string())
}

fn print_status(s: &EnvStatus) {
    println!(
        "{}/{}: {} target{}",
        s.project,
        s.environment,
        s.target.as_deref().unwrap_or("unknown"),
        s.router
            .as_deref()
            .map(|r| format!(", router http://{r}"))
            .unwrap_or_default()
    );
    match &s.live {
        Some(live) => println!("  live:     {}", describe_release(live)),
        None => println!("  live:     none"),
    }
    println!(
        "  health:   {}{}",
        s.health,
        s.health_detail
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );
    if let Some(ms) = s.uptime_ms {
        println!(
            "  uptime:   {} (pid {}, restarts {})",
            uptime(ms),
            or_dash(s.pid),
            or_dash(s.restarts)
        );
    }
    if let Some(previous) = &s.previous {
        println!(
            "  previous: {} (gantry rollback goes here)",
            describe_release(previous)
        );
    }
    if let Some(lock) = &s.lock {
        println!("  locked:   {} by {}", lock.purpose, lock.owner);
    }
    if let Some(driver) = &s.driver {
        println!(
            "  driver:   {driver} (another server on this state: it serves and measures this environment; promote, abort and alarms asked here go to it)"
        );
    }
    if let Some(c) = &s.driver.as_ref().and(s.canary.as_ref()) {
        println!(
            "  canary:   release {} at {}% (step {} of {}), {}",
            c.release,
            c.percent,
            or_dash(c.step.map(|x| x + 1)),
            c.steps,
            c.analysis
        );
    } else if let Some(c) = &s.canary {
        println!(
            "  canary:   release {} {} at {}% (step {} of {})",
            c.release,
            c.state,
            c.percent,
            or_dash(c.step.map(|x| x + 1)),
            c.steps
        );
        println!("            canary this step: {}", window(&c.canary));
        println!("            stable this step: {}", window(&c.stable));
    }
    for t in &s.traffic {
        println!(
            "  traffic:  release {} ({}) last minute: {}; total {} requests, {} errors",
            t.release,
            t.role,
            window(&t.last_minute),
            t.total_requests,
            t.total_errors
        );
    }
    if let Some(log) = &s.log {
        println!("  log:      {log}");
    }
}

pub async fn status(
    args: StatusArgs,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    let c = client(server.as_deref(), data_dir)?;
    match &args.environment {
        Some(env) => {
            let project = resolve_project(&c, args.project, Some(env)).await?;
            let one = c.environment(&project, env).await?;
            if args.json {
                print_json(&one)?;
            } else {
                print_status(&one);
            }
        }
        None => {
            let all = c.environments(args.project.as_deref()).await?;
            if args.json {
                print_json(&all)?;
            } else if all.is_empty() {
                println!(
                    "no environment has releases yet (deploy with `gantry deploy ENV --artifact NAME`)"
                );
            } else {
                for (i, s) in all.iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    print_status(s);
                }
            }
        }
    }
    Ok(())
}
