//! `gantry migrate-state --to postgres://…`: moves a data directory's state from its own SQLite
//! file into a PostgreSQL database, history intact (every run, log line, artifact record,
//! release and token, with the same ids), so that servers on other machines can share it. The
//! data directory then remembers the database; `gantry.db` stays as it was, a backup.

use super::CliResult;
use crate::context::{self, STATE_FILE};
use crate::server::lock::ServerLock;
use anyhow::{Context as _, bail};
use gantry_engine::ports::{QueueStore, RunFilter, RunStore, StateStore};
use gantry_model::RunStatus;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct MigrateStateArgs {
    /// The PostgreSQL database to copy the state into (`postgres://USER@HOST:PORT/DATABASE`;
    /// the password from PGPASSWORD or ~/.pgpass). It must hold no state yet.
    #[arg(long, value_name = "URL")]
    pub to: String,
}

pub async fn migrate_state(args: MigrateStateArgs, data_dir: Option<PathBuf>) -> CliResult {
    Ok(migrate(args, data_dir).await?)
}

async fn migrate(args: MigrateStateArgs, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let data_dir = context::data_dir_here(data_dir)?;
    let db = data_dir.join("gantry.db");
    if !db.is_file() {
        bail!(
            "{} has no state to copy (no gantry.db in it)",
            data_dir.display()
        );
    }
    let target_shown = gantry_store::redact_url(&args.to);
    if !(args.to.starts_with("postgres://") || args.to.starts_with("postgresql://")) {
        bail!(
            "--to {target_shown}: state can be moved to PostgreSQL: write postgres://USER@HOST:PORT/DATABASE"
        );
    }
    if let Some(r) = context::remembered_state(&data_dir)? {
        bail!(
            "this data directory keeps its state in {} already ({}); nothing is copied",
            gantry_store::redact_url(&r),
            data_dir.join(STATE_FILE).display()
        );
    }
    // No server may change the state while it is copied, nor start on the old file after.
    let _lock = ServerLock::acquire(&data_dir)?;
    let source = gantry_store::open_sql(
        &context::sqlite_url(&data_dir),
        gantry_store::Sharing::Command,
    )
    .await?;
    // Every running run, as recovery reads them: one whose owner lives holds up the copy.
    let running = source
        .list_runs(&RunFilter {
            status: Some(RunStatus::Running),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    let mut live = Vec::new();
    for run in running {
        if let Some(owner) = &run.owner
            && !gantry_runner::owner::owner_gone(&source, &context::lock_dir(&data_dir), owner)
                .await?
        {
            live.push(run.id.to_string());
        }
    }
    if !live.is_empty() {
        bail!(
            "runs {} are running on this data directory: let them finish (or cancel them), then copy",
            live.join(", ")
        );
    }
    let queued = source
        .count_runs_by_status()
        .await?
        .into_iter()
        .find(|(s, _)| *s == RunStatus::Queued)
        .map_or(0, |(_, n)| n);
    let target = gantry_store::open_sql(&args.to, gantry_store::Sharing::Command).await?;
    let report = source.copy_into(&target).await.with_context(|| {
        format!(
            "copying {} into {target_shown}: nothing was copied",
            db.display()
        )
    })?;
    StateStore::close(&target).await;
    StateStore::close(&source).await;
    context::remember_state(&data_dir, &args.to)
        .context("the state was copied, but the data directory could not be pointed at it")?;
    let tables: Vec<String> = report
        .tables
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    match tables.is_empty() {
        true => println!("{target_shown} holds this data directory's state now (it had none)"),
        false => println!(
            "copied {} rows into {target_shown}: {}",
            report.rows(),
            tables.join(", ")
        ),
    }
    if queued > 0 {
        println!("{queued} queued runs were copied; the next server on the database runs them");
    }
    println!(
        "{} now keeps its state there; {} is left as it was, as a backup",
        data_dir.display(),
        db.display()
    );
    println!("add `state = \"{target_shown}\"` to the server's gantry.toml before it starts again");
    Ok(())
}
