//! Command-line interface: one file per subcommand, each a thin wrapper over the crates' operations.
//! Exit codes: 0 success; 1 a failed run, a failed check or an error; 2 bad usage; 130 cancelled.

mod artifact;
mod cache;
mod check;
mod dataplane;
mod demo;
pub mod deploy;
pub mod remote;
mod route;
pub mod run;
mod runner;
mod runs;
pub mod serve;
mod state;
mod why;

use clap::{Parser, Subcommand};
use gantry_engine::canary::CanaryAction;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gantry",
    version,
    about = "Continuous delivery in one binary: push, build, test, artifact, deploy, roll back"
)]
pub struct Cli {
    /// Data directory (state database, artifacts, workspaces). Default: `.gantry/` at the
    /// repository root.
    #[arg(long, global = true, env = "GANTRY_HOME", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// A gantry server to talk to (`runs`, `show`, `logs` read from it instead of the local
    /// database; `trigger`, `cancel`, `token` need one). Token: `GANTRY_TOKEN`, else the local
    /// admin token.
    #[arg(long, global = true, env = "GANTRY_SERVER", value_name = "URL")]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
// Each command's arguments are built only when it is the one invoked: building all 30
// commands' took 0.3-0.9 ms of every gantry process's start (bench/README.md, fifth stop).
#[command(defer = true)]
pub enum Command {
    /// See it all in half a minute: build, test, deploy, roll back, a broken release stopped
    Demo(demo::DemoArgs),
    /// Check a pipeline file (or a repository's) and report every problem
    Check(check::CheckArgs),
    /// Print the JSON Schema of the pipeline file, for editors
    Schema,
    /// Run a repository's pipeline at a commit, here, without a server
    Run(run::RunArgs),
    /// List runs, newest first
    Runs(runs::RunsArgs),
    /// Show a run: stages, jobs, steps, artifacts
    Show(runs::ShowArgs),
    /// Print a run's logs (all jobs, or one); -f follows a running run
    Logs(runs::LogsArgs),
    /// Run the server: watch repositories, take webhooks, queue and run, serve the API
    Serve(serve::ServeArgs),
    /// Run jobs for a server from this host: claim them over its API (a runner token)
    Runner(runner::RunnerArgs),
    /// Queue a run of a project on the server
    Trigger(remote::TriggerArgs),
    /// Cancel a queued or running run on the server
    Cancel(remote::CancelArgs),
    /// Approve the approval stage a run waits at (the token's role must be one it names)
    Approve(remote::ApproveArgs),
    /// Print a one-time link that logs a browser in to the dashboard with your token
    Dashboard,
    /// Manage API tokens on the server
    #[command(subcommand)]
    Token(remote::TokenCommand),
    /// Artifacts: list, copy out, share by link, revoke links
    #[command(subcommand)]
    Artifact(artifact::ArtifactCommand),
    /// Apply retention: remove old artifacts that are not pinned
    Gc(artifact::GcArgs),
    /// Job caches: list, remove
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Deploy an artifact to an environment (through the server)
    Deploy(deploy::DeployArgs),
    /// Roll an environment back to the previous healthy release (or --to one)
    Rollback(deploy::RollbackArgs),
    /// Stop an environment on purpose: its router and releases stop, and stay stopped across
    /// server restarts until the next deploy or rollback (stopping the server does not stop
    /// them)
    Stop(deploy::StopArgs),
    /// Promote the running canary to its next step (--full: to everyone)
    Promote(deploy::CanaryArgs),
    /// Abort the running canary: everyone back to stable
    Abort(deploy::CanaryArgs),
    /// Pause the running canary (its share holds, analysis waits)
    Pause(deploy::CanaryArgs),
    /// Resume a paused canary
    Resume(deploy::CanaryArgs),
    /// List an environment's releases, newest first
    Releases(deploy::ReleasesArgs),
    /// Show environments: live and previous release, health, uptime
    Status(deploy::StatusArgs),
    /// gantry's router alone in front of two backends (for benchmarks)
    #[command(hide = true)]
    Route(route::RouteArgs),
    /// The data plane of a data directory: every environment's router (gantry serve starts it)
    #[command(hide = true)]
    Dataplane(dataplane::DataplaneArgs),
    /// The shim a release runs under (gantry starts it)
    #[command(hide = true)]
    Shim,
    /// Copy this data directory's state into PostgreSQL, history intact, and keep it there
    MigrateState(state::MigrateStateArgs),
    /// Explain why a run failed: category, evidence, fix, and what changed since the last good run
    Why(why::WhyArgs),
}

/// An error with the exit code it should end the process with.
pub struct CliError {
    pub code: u8,
    pub error: Option<anyhow::Error>,
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        Self {
            code: 1,
            error: Some(error),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        anyhow::Error::from(error).into()
    }
}

impl CliError {
    /// Exit with `code`, the reason already printed.
    pub fn silent(code: u8) -> Self {
        Self { code, error: None }
    }
}

pub type CliResult = Result<(), CliError>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    if cli.command.only_prints() {
        die_quietly_on_a_closed_pipe();
    }
    let result = match cli.command {
        Command::Demo(args) => block_on(demo::demo(args)),
        Command::Check(args) => check::check(args),
        Command::Schema => check::schema(),
        // One worker beside the main thread: a run's own work is waiting (for steps, the
        // database, the server), and a second worker only adds wake-ups (tokio wakes an idle
        // worker to steal whenever a task is woken while another runs), each a thread woken on
        // another CPU (bench/README.md, "the first step's thread hand-offs").
        Command::Run(args) => {
            few_malloc_arenas();
            block_on_workers(Some(1), run::run(args, cli.server, cli.data_dir))
        }
        Command::Runs(args) => block_on(runs::runs(args, cli.server, cli.data_dir)),
        Command::Show(args) => block_on(runs::show(args, cli.server, cli.data_dir)),
        Command::Logs(args) => block_on(runs::logs(args, cli.server, cli.data_dir)),
        Command::Serve(args) => block_on(serve::serve(args, cli.data_dir)),
        Command::Runner(args) => block_on(runner::runner(args, cli.server)),
        Command::Trigger(args) => block_on(remote::trigger(args, cli.server, cli.data_dir)),
        Command::Cancel(args) => block_on(remote::cancel(args, cli.server, cli.data_dir)),
        Command::Approve(args) => block_on(remote::approve(args, cli.server, cli.data_dir)),
        Command::Dashboard => block_on(remote::dashboard(cli.server, cli.data_dir)),
        Command::Token(cmd) => block_on(remote::token(cmd, cli.server, cli.data_dir)),
        Command::Artifact(cmd) => block_on(artifact::artifact(cmd, cli.server, cli.data_dir)),
        Command::Gc(args) => block_on(artifact::gc(args, cli.data_dir)),
        Command::Cache(cmd) => block_on(cache::cache(cmd, cli.data_dir)),
        Command::Deploy(args) => block_on(deploy::deploy(args, cli.server, cli.data_dir)),
        Command::Rollback(args) => block_on(deploy::rollback(args, cli.server, cli.data_dir)),
        Command::Stop(args) => block_on(deploy::stop(args, cli.server, cli.data_dir)),
        Command::Promote(args) => block_on(deploy::canary(
            CanaryAction::Promote { full: args.full },
            args,
            cli.server,
            cli.data_dir,
        )),
        Command::Abort(args) => block_on(deploy::canary(
            CanaryAction::Abort,
            args,
            cli.server,
            cli.data_dir,
        )),
        Command::Pause(args) => block_on(deploy::canary(
            CanaryAction::Pause,
            args,
            cli.server,
            cli.data_dir,
        )),
        Command::Resume(args) => block_on(deploy::canary(
            CanaryAction::Resume,
            args,
            cli.server,
            cli.data_dir,
        )),
        Command::Releases(args) => block_on(deploy::releases(args, cli.server, cli.data_dir)),
        Command::Status(args) => block_on(deploy::status(args, cli.server, cli.data_dir)),
        Command::Route(args) => block_on(route::route(args)),
        Command::Dataplane(args) => block_on(dataplane::dataplane(args)),
        Command::Shim => dataplane::shim(),
        Command::Why(args) => block_on(why::why(args, cli.server, cli.data_dir)),
        Command::MigrateState(args) => block_on(state::migrate_state(args, cli.data_dir)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError { code, error }) => {
            if let Some(e) = error {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(code)
        }
    }
}

impl Command {
    /// Commands that print and hold nothing: piped into `head`, they may simply stop.
    fn only_prints(&self) -> bool {
        matches!(
            self,
            Command::Check(_)
                | Command::Schema
                | Command::Runs(_)
                | Command::Show(_)
                | Command::Logs(_)
                | Command::Releases(_)
                | Command::Status(_)
                | Command::Why(_)
        )
    }
}

/// `gantry runs | head`: when the reader goes away, stop as other Unix tools do (killed by
/// SIGPIPE, silently) instead of panicking on the failed write. Rust ignores SIGPIPE by default;
/// commands that serve, run or deploy keep it ignored (a closed socket must not kill them).
fn die_quietly_on_a_closed_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called once at start, before any thread is spawned, restoring the default
    // disposition; no handler function is installed.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

fn block_on<F: std::future::Future<Output = CliResult>>(f: F) -> CliResult {
    block_on_workers(None, f)
}

/// At most two malloc arenas for the threads to come (glibc gives each new thread one of its
/// own, up to eight a CPU): a run's few threads then reuse the heap pages already touched,
/// where each arena's first pages are fresh ones, and a fresh page costs a fault (more than
/// a microsecond here, more after a pause: bench/README.md, "a run started after a pause").
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of the allocator; no thread but this one exists yet.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

/// [`block_on`] on a runtime of `workers` worker threads (default: one a CPU).
fn block_on_workers<F: std::future::Future<Output = CliResult>>(
    workers: Option<usize>,
    f: F,
) -> CliResult {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        rt.worker_threads(n);
    }
    let rt = rt
        .enable_all()
        .build()
        .map_err(|e| CliError::from(anyhow::Error::from(e)))?;
    rt.block_on(f)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves at the first Ctrl-C or SIGTERM: `gantry run` cancels its run, `gantry serve` shuts
/// down.
pub(crate) async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    /// Each command's arguments are built only when that command is invoked (`defer`), and so
    /// are clap's checks of them (two arguments of one name or flag, a default that is not a
    /// possible value, ...): building the whole command line here runs them for every one.
    #[test]
    fn every_commands_arguments_are_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    /// A command's description in its parent's list is its variant's doc comment; once the
    /// command is built (only when invoked), a doc comment on its arguments' struct, or on one
    /// flattened into it, would take its place at the top of its own `--help`. Every command's
    /// help begins with what its parent lists it as.
    #[test]
    fn every_command_s_help_begins_with_what_its_parent_lists() {
        use clap::Parser;
        fn help(path: &[String]) -> String {
            let args = path.iter().map(String::as_str).chain(["--help"]);
            match super::Cli::try_parse_from(args) {
                Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => e.to_string(),
                _ => panic!("{path:?} --help printed no help"),
            }
        }
        let mut paths = vec![vec!["gantry".to_string()]];
        let mut checked = 0;
        while let Some(path) = paths.pop() {
            let text = help(&path);
            let listed = text
                .lines()
                .skip_while(|l| *l != "Commands:")
                .skip(1)
                .take_while(|l| !l.is_empty())
                .map(|l| {
                    l.trim_start()
                        .split_once("  ")
                        .expect("a name and its about")
                });
            for (name, about) in listed.filter(|(name, _)| *name != "help") {
                let sub = [path.clone(), vec![name.to_string()]].concat();
                assert_eq!(
                    help(&sub).lines().next(),
                    Some(about.trim()),
                    "{sub:?} --help"
                );
                checked += 1;
                paths.push(sub);
            }
        }
        assert!(checked > 30, "{checked} commands");
    }
}
