//! The `command` target: the user's own deploy and rollback scripts, run in the release
//! directory with `GANTRY_RELEASE`, `GANTRY_ARTIFACT` (the unpacked artifact's path),
//! `GANTRY_DIGEST` and `GANTRY_PREVIOUS_RELEASE`. Their output goes to the release log. Nothing
//! is supervised: the scripts switch traffic themselves. On a server that sandboxes steps the
//! scripts run in the same sandbox (everything but gantry's own files).

use super::{ReleaseContext, Running, Target};
use anyhow::{Context, bail};
use async_trait::async_trait;
use gantry_engine::mask::Masker;
use gantry_model::{TargetKind, TargetSpec};
use gantry_runner::process::{StepEnd, StepSpec, run_step};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

/// A deploy or rollback script may take this long.
const SCRIPT_LIMIT: Duration = Duration::from_secs(30 * 60);

#[derive(Default)]
pub struct CommandTarget;

async fn run_script(script: &str, r: &ReleaseContext, what: &str) -> anyhow::Result<()> {
    let Some(TargetSpec::Command { env, .. }) = &r.spec.target else {
        bail!("environment {} has no command target", r.environment);
    };
    let mut vars = r.env();
    vars.extend(env.iter().cloned());
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&r.log)
        .with_context(|| format!("opening {}", r.log.display()))?;
    let _ = writeln!(log, "--- {what} of release {} ---", r.number);
    let mut tail: Vec<String> = Vec::new();
    let (_keep, mut cancel) = tokio::sync::watch::channel(false);
    let grants = r.grants();
    let end = run_step(
        &StepSpec {
            script,
            cwd: &r.dir,
            env: &vars,
            deadline: Some(tokio::time::Instant::now() + SCRIPT_LIMIT),
            kill_grace: Duration::from_secs(10),
            sandbox: grants.as_ref(),
            backlog: None,
        },
        &Masker::new(std::iter::empty::<&str>()),
        |_, line| {
            let _ = writeln!(log, "{line}");
            tail.push(line);
            if tail.len() > 10 {
                tail.remove(0);
            }
        },
        &mut cancel,
    )
    .await;
    match end {
        StepEnd::Exited(0) => Ok(()),
        other => {
            let how = match other {
                StepEnd::TimedOut => "timed out".to_string(),
                StepEnd::SpawnFailed(e) => e,
                o => format!("exited with code {}", o.exit_code().unwrap_or(-1)),
            };
            bail!(
                "the {what} script {how}; its last output:\n  {}",
                if tail.is_empty() {
                    "(none)".to_string()
                } else {
                    tail.join("\n  ")
                }
            )
        }
    }
}

#[async_trait]
impl Target for CommandTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Command
    }

    async fn start(&self, r: &ReleaseContext) -> anyhow::Result<Option<SocketAddr>> {
        let Some(TargetSpec::Command { deploy, .. }) = &r.spec.target else {
            bail!("environment {} has no command target", r.environment);
        };
        run_script(deploy, r, "deploy").await?;
        Ok(None)
    }

    async fn roll_back(&self, to: &ReleaseContext, _from: &ReleaseContext) -> anyhow::Result<()> {
        let Some(TargetSpec::Command {
            deploy, rollback, ..
        }) = &to.spec.target
        else {
            bail!("environment {} has no command target", to.environment);
        };
        match rollback {
            Some(script) => run_script(script, to, "rollback").await,
            None => run_script(deploy, to, "deploy (as rollback)").await,
        }
    }

    fn running(&self, _source: i64) -> Option<Running> {
        None
    }

    async fn stop(&self, _source: i64) {}

    async fn stop_all(&self) {}
}
