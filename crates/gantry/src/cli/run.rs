//! `gantry run [REPO] [--rev REV]`: runs a repository's pipeline at a commit on this machine.

use super::{CliError, CliResult};
use crate::context::{Context, data_dir_for, work_root};
use crate::pipeline_at::{LoadError, load_pipeline, short};
use crate::render::{Renderer, Style};
use anyhow::anyhow;
use gantry_git::Repo;
use gantry_model::RunStatus;
use gantry_runner::owner::OwnerLock;
use gantry_runner::prefetch::Prefetch;
use gantry_runner::{RunOptions, RunRequest, Runner};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The repository (default: the current directory)
    pub repo: Option<PathBuf>,
    /// The revision to run: a branch, tag or commit (default: HEAD)
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Jobs running at once (default: number of cores)
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// One JSON event per line on stdout, for scripts
    #[arg(long)]
    pub json: bool,
    /// Plain lines even on a terminal (no live progress)
    #[arg(long)]
    pub plain: bool,
    /// Do not print job output, only progress and the summary
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// A file of secrets, one `NAME=value` per line; consulted before gantry's environment
    #[arg(long, value_name = "FILE", env = "GANTRY_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Keep job workspaces after the run (under the data directory's work/)
    #[arg(long)]
    pub keep_workspaces: bool,
    /// Time between SIGTERM and SIGKILL when a step times out or is cancelled
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// The most bytes of output a job's log keeps (later output is counted, not kept)
    #[arg(long, value_name = "BYTES", default_value_t = gantry_runner::DEFAULT_JOB_LOG_CAP)]
    pub max_job_log_bytes: u64,
    /// Run steps sandboxed (Landlock): they cannot read or write the data directory (its
    /// database, keys, artifacts, other workspaces) or the secrets file
    #[arg(long)]
    pub sandbox: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    gantry_model::duration::parse_duration(s)
}

pub async fn run(args: RunArgs, server: Option<String>, data_dir: Option<PathBuf>) -> CliResult {
    let repo_path = args.repo.clone().unwrap_or_else(|| PathBuf::from("."));
    let repo = Repo::open(&repo_path)?;
    let revision = repo.resolve(&args.rev)?;
    let root = repo.root()?;
    // The commit's tree is exported while the pipeline file is read and the database opened:
    // the first job finds its workspace ready (`gantry_runner::prefetch`).
    let data_dir = Context::prepare(data_dir_for(data_dir, &root))?;
    let prefetch = Arc::new(Prefetch::start(
        &repo,
        &revision.commit,
        &work_root(&data_dir),
    ));
    let at = Start {
        repo_path,
        repo,
        revision,
        root,
        data_dir,
        prefetch: prefetch.clone(),
    };
    let result = run_at(args, server, at).await;
    prefetch.discard().await;
    result
}

/// Where a run starts: the repository, its commit, the data directory, the checkout under way.
struct Start {
    repo_path: PathBuf,
    repo: Repo,
    revision: gantry_git::Revision,
    root: PathBuf,
    data_dir: PathBuf,
    prefetch: Arc<Prefetch>,
}

async fn run_at(args: RunArgs, server: Option<String>, at: Start) -> CliResult {
    let Start {
        repo_path,
        repo,
        revision,
        root,
        data_dir,
        prefetch,
    } = at;
    let subdir = project_subdir(&root, &repo_path);
    let loading = {
        let (repo, commit, subdir) = (repo.clone(), revision.commit.clone(), subdir.clone());
        tokio::task::spawn_blocking(move || load_pipeline(&repo, &commit, subdir.as_deref()))
    };
    // The database is opened and this process's owner lock taken meanwhile.
    let opening = async {
        let ctx = Context::open_prepared(data_dir).await?;
        match OwnerLock::acquire(&ctx.lock_dir(), ctx.state.clone()).await {
            Ok(owner) => Ok((ctx, owner)),
            Err(e) => {
                ctx.state.close().await;
                Err(e)
            }
        }
    };
    let (loaded, opened) = tokio::join!(loading, opening);
    let loaded = loaded.map_err(|e| anyhow!("reading the pipeline file: {e}"))?;
    let (file_name, checked) = match loaded {
        Ok(found) => found,
        Err(e) => {
            if let Ok((ctx, owner)) = opened {
                drop(owner);
                ctx.state.close().await;
            }
            if let LoadError::Invalid(diags) = e {
                eprint!("{diags}");
                eprintln!("(pipeline file at commit {})", short(&revision.commit));
                return Err(CliError::silent(1));
            }
            return Err(CliError::from(anyhow!(e.message())));
        }
    };
    let (ctx, owner) = opened?;
    if !checked.warnings.items.is_empty() && !args.json {
        eprint!("{}", checked.warnings);
    }
    let pipeline = checked.pipeline;
    let project = pipeline
        .name
        .clone()
        .unwrap_or_else(|| project_name(&root.join(subdir.clone().unwrap_or_default())));
    let secrets = match crate::secrets::load_secrets(
        args.secrets_file.as_deref(),
        &pipeline.secret_names(),
    ) {
        Ok(s) => s,
        Err(e) => {
            ctx.state.close().await;
            return Err(e.into());
        }
    };

    let sandbox = match args.sandbox {
        true => Some(crate::sandbox::steps_sandbox(
            &ctx.data_dir,
            args.secrets_file.as_deref(),
            true,
        )?),
        false => None,
    }
    .flatten();
    let style = if args.json {
        Style::Json
    } else if !args.plain && std::io::stderr().is_terminal() {
        Style::Live
    } else {
        Style::Plain
    };
    let renderer = Arc::new(Renderer::new(style, args.quiet));
    let runner = Runner {
        state: ctx.state.clone(),
        artifacts: ctx.artifacts()?,
        observer: renderer.clone(),
        deployer: Some(Arc::new(crate::server_deployer::ServerDeployer {
            explicit: server,
            data_dir: ctx.data_dir.clone(),
        })),
        // Approvals are the server's: a local run stops at an approval stage.
        approvals: None,
        remote: None,
    };

    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        super::stop_signal().await;
        eprintln!("\ncancelling: stopping running steps...");
        let _ = cancel_tx.send(true);
    });

    let outcome = runner
        .execute(
            RunRequest {
                project,
                repo,
                revision,
                pipeline,
                pipeline_file: file_name,
                subdir,
                trigger: "cli".into(),
                event: gantry_model::TriggerEvent::Manual,
                vars: Default::default(),
            },
            {
                let mut o = RunOptions::new(
                    ctx.work_root(),
                    args.kill_grace,
                    secrets,
                    owner.name().to_string(),
                );
                o.jobs = args.jobs.unwrap_or(o.jobs);
                o.keep_workspaces = args.keep_workspaces;
                o.log_cap = args.max_job_log_bytes.max(1);
                o.sandbox = sandbox;
                o.prefetched = Some(prefetch);
                o
            },
            cancel_rx,
        )
        .await?;
    if let Some(detail) = ctx.state.run_detail(outcome.run_id).await? {
        renderer.finish(&detail);
    }
    if outcome.status == RunStatus::Failed && !args.json {
        // The first answer to "why?" right away; `gantry why N` has the rest.
        let repo = Repo::open(&repo_path).ok();
        let rules = gantry_engine::why::rules::builtin();
        if let Ok(report) =
            crate::why::diagnose_run(&*ctx.state, repo.as_ref(), outcome.run_id, rules).await
        {
            let d = &report.diagnosis;
            eprintln!("\nwhy: {}: {}", d.category, d.sentence);
            if let Some(e) = d.evidence.first() {
                eprintln!("  {}", e.text);
            }
            eprintln!(
                "  details and what changed since the last good run: gantry why {}",
                outcome.run_id
            );
        }
    }
    ctx.state.close().await;
    drop(owner);
    match outcome.status {
        RunStatus::Succeeded => Ok(()),
        RunStatus::Cancelled => Err(CliError::silent(130)),
        _ => Err(CliError::silent(1)),
    }
}

/// Where `path` lies inside the repository rooted at `root`, when it is not the root itself.
fn project_subdir(root: &Path, path: &Path) -> Option<PathBuf> {
    let (root, path) = (root.canonicalize().ok()?, path.canonicalize().ok()?);
    let rel = path.strip_prefix(&root).ok()?;
    (!rel.as_os_str().is_empty()).then(|| rel.to_path_buf())
}

/// The project's name from the repository directory (`hello` for `/src/hello` or `hello.git`).
fn project_name(root: &Path) -> String {
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "project".into());
    name.strip_suffix(".git")
        .map(str::to_string)
        .unwrap_or(name)
}
