//! `gantry artifact ls | get | verify | share | revoke | pin | unpin`: find artifacts, copy one
//! out or check it (digest checked), and hand out or revoke share links (through the server,
//! which signs and serves them).

use super::CliResult;
use crate::context::Context;
use crate::render::human_size;
use anyhow::{Context as _, anyhow, bail};
use gantry_api::types::NewShare;
use gantry_engine::ports::ArtifactStore;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
#[command(defer = true)]
pub enum ArtifactCommand {
    /// List artifacts, newest first
    Ls {
        /// Of this project only
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        run: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Copy an artifact out of the store, checking its digest (a directory artifact is a .tar.zst)
    Get {
        #[command(flatten)]
        which: Which,
        /// Where to write it
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Check the stored object against its digest (reads it whole)
    Verify {
        #[command(flatten)]
        which: Which,
    },
    /// Print a link that anyone can download the artifact with (plain curl, no token)
    Share {
        #[command(flatten)]
        which: Which,
        /// How long the link works (30m, 1h, 7d; at most a year; default 1h)
        #[arg(long, conflicts_with = "stable")]
        expires: Option<String>,
        /// A link that lasts until revoked or the artifact is removed; each visit redirects to
        /// a freshly signed URL
        #[arg(long)]
        stable: bool,
        /// An S3 presigned URL (the artifact store must be S3; at most 7 days; cannot be
        /// revoked). With --stable: a stable link that redirects to fresh presigned URLs
        #[arg(long)]
        presign: bool,
    },
    /// Revoke a share link (its id is printed by `share`)
    Revoke { id: i64 },
    /// Replace the key share links are signed with: every link made before stops working
    /// (admin token)
    RotateShareKey,
    /// Pack and store paths of a directory as a job would, without recording an artifact
    /// (for benchmarks: prints the digest, size and whether anything new was stored)
    #[command(hide = true)]
    Store {
        /// The directory the paths are relative to
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Keep an artifact version whatever the retention settings
    Pin {
        #[command(flatten)]
        which: Which,
        #[arg(long, default_value = "by hand")]
        reason: String,
    },
    /// Remove a pin
    Unpin {
        #[command(flatten)]
        which: Which,
        #[arg(long, default_value = "by hand")]
        reason: String,
    },
}

// Which artifact version: the newest named NAME (of --project, of --run), or --digest. (Not a
// doc comment: clap would take it for the about of each command this is flattened into.)
#[derive(clap::Args)]
pub struct Which {
    /// The artifact's name (the newest of that name unless --run says which run)
    name: Option<String>,
    /// The project the artifact belongs to (names are per project)
    #[arg(long)]
    project: Option<String>,
    /// The run that made it
    #[arg(long)]
    run: Option<i64>,
    /// Exactly this version (sha256:…)
    #[arg(long)]
    digest: Option<String>,
}

#[derive(clap::Args)]
pub struct GcArgs {
    /// Show what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Keep the artifacts of the newest N runs of each project and branch
    #[arg(long, default_value_t = 10)]
    pub keep_runs: i64,
    /// Keep anything younger than this
    #[arg(long, default_value = "7d", value_parser = |s: &str| gantry_model::duration::parse_duration(s))]
    pub keep_younger_than: std::time::Duration,
}

/// `gantry gc`: apply retention to the local store.
pub async fn gc(args: GcArgs, data_dir: Option<PathBuf>) -> CliResult {
    let ctx = Context::open_here(data_dir).await?;
    let store = ctx.artifacts()?;
    let report = crate::gc::collect(
        &*ctx.state,
        &*store,
        args.keep_runs,
        args.keep_younger_than,
        args.dry_run,
    )
    .await?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for a in &report.removed {
        println!(
            "{verb} {} of run {} ({}, {})",
            a.name,
            a.run_id,
            a.digest,
            human_size(a.size as u64)
        );
    }
    if args.dry_run {
        println!(
            "{} artifacts, up to {} (dry run: nothing removed)",
            report.removed.len(),
            human_size(report.bytes_freed)
        );
    } else {
        println!(
            "{} artifacts removed, {} objects deleted, {} freed",
            report.removed.len(),
            report.objects_deleted,
            human_size(report.bytes_freed)
        );
    }
    Ok(())
}

pub async fn artifact(
    cmd: ArtifactCommand,
    server: Option<String>,
    data_dir: Option<PathBuf>,
) -> CliResult {
    match cmd {
        ArtifactCommand::Share {
            which,
            expires,
            stable,
            presign,
        } => {
            let c = super::remote::client(server.as_deref(), data_dir)?;
            let out = c
                .share(&NewShare {
                    project: which.project,
                    name: which.name,
                    run: which.run,
                    digest: which.digest,
                    expires: expires.clone(),
                    stable,
                    presign,
                })
                .await?;
            let what = &out.digest;
            let id = out.id.map_or("?".to_string(), |i| i.to_string());
            if out.presigned {
                eprintln!(
                    "S3 presigned URL of {what} (expires in {}; it cannot be revoked):",
                    expires.as_deref().unwrap_or("1h")
                );
            } else if stable {
                eprintln!(
                    "stable link {} of {what} (valid until revoked or the artifact is removed; revoke with `gantry artifact revoke {}`):",
                    id, id
                );
            } else {
                eprintln!(
                    "share {} of {what} (expires in {}; revoke with `gantry artifact revoke {}`):",
                    id,
                    expires.as_deref().unwrap_or("1h"),
                    id
                );
            }
            println!("{}", out.url);
            Ok(())
        }
        ArtifactCommand::Verify { which } => {
            let ctx = Context::open_here(data_dir).await?;
            let a = find(&ctx, &which).await?;
            let store = ctx.artifacts()?;
            let started = std::time::Instant::now();
            store
                .verify(&a.digest)
                .await
                .with_context(|| format!("{} {} in {}", a.name, a.digest, store.location()))?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{} {} ({}) is intact: sha256 checked in {secs:.2} s ({}/s)",
                a.name,
                a.digest,
                human_size(a.size as u64),
                human_size((a.size as f64 / secs.max(1e-9)) as u64)
            );
            Ok(())
        }
        ArtifactCommand::Store { workspace, paths } => {
            let ctx = Context::open_here(data_dir).await?;
            let stored = ctx.artifacts()?.store(&workspace, &paths).await?;
            println!(
                "{}",
                json!({ "digest": stored.digest, "size": stored.size, "media_type": stored.media_type, "newly_stored": stored.newly_stored })
            );
            Ok(())
        }
        ArtifactCommand::Revoke { id } => {
            let c = super::remote::client(server.as_deref(), data_dir)?;
            c.revoke_share(id).await?;
            println!("share {id} revoked");
            Ok(())
        }
        ArtifactCommand::RotateShareKey => {
            let c = super::remote::client(server.as_deref(), data_dir)?;
            c.rotate_share_key().await?;
            println!("the share-link key was replaced: every link made before now is refused");
            Ok(())
        }
        ArtifactCommand::Pin { which, reason } => {
            let ctx = Context::open_here(data_dir).await?;
            let a = find(&ctx, &which).await?;
            ctx.state
                .pin(&a.digest, &reason, gantry_engine::ports::now_millis())
                .await?;
            println!("pinned {} {} ({reason})", a.name, a.digest);
            Ok(())
        }
        ArtifactCommand::Unpin { which, reason } => {
            let ctx = Context::open_here(data_dir).await?;
            let a = find(&ctx, &which).await?;
            if !ctx.state.unpin(&a.digest, &reason).await? {
                return Err(anyhow!("{} {} has no pin `{reason}`", a.name, a.digest).into());
            }
            println!("unpinned {} {} ({reason})", a.name, a.digest);
            Ok(())
        }
        ArtifactCommand::Ls {
            project,
            run,
            limit,
            json,
        } => {
            let ctx = Context::open_here(data_dir).await?;
            let list = ctx
                .state
                .list_artifacts(project.as_deref(), run, limit)
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &list
                            .iter()
                            .map(gantry_api::types::ArtifactListing::from)
                            .collect::<Vec<_>>()
                    )
                    .map_err(anyhow::Error::from)?
                );
            } else if list.is_empty() {
                println!("no artifacts yet");
            } else {
                println!(
                    "{:<6} {:<14} {:<16} {:<10} {:<10} {:<8} {:<19} {:<10} PINNED BY",
                    "RUN", "PROJECT", "NAME", "SIZE", "TYPE", "COMMIT", "DIGEST", "CREATED"
                );
                for l in list {
                    let a = &l.artifact;
                    let kind = if a.media_type.ends_with("tar+zstd") {
                        "tar.zst"
                    } else {
                        a.media_type.rsplit('/').next().unwrap_or("")
                    };
                    let created = chrono::DateTime::from_timestamp_millis(a.created_at)
                        .map(|t| t.format("%Y-%m-%d").to_string())
                        .unwrap_or_default();
                    let kept = if a.removed_at.is_some() {
                        "(removed by retention)".to_string()
                    } else {
                        l.pins.join(", ")
                    };
                    let line = format!(
                        "{:<6} {:<14} {:<16} {:<10} {:<10} {:<8} {:<19} {:<10} {}",
                        a.run_id,
                        l.project,
                        a.name,
                        human_size(a.size as u64),
                        kind,
                        &l.commit[..l.commit.len().min(8)],
                        &a.digest[..a.digest.len().min(19)],
                        created,
                        kept
                    );
                    println!("{}", line.trim_end());
                }
            }
            Ok(())
        }
        ArtifactCommand::Get { which, output } => {
            let ctx = Context::open_here(data_dir).await?;
            let a = find(&ctx, &which).await?;
            if let Some(at) = a.removed_at {
                let when = chrono::DateTime::from_timestamp_millis(at)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                return Err(anyhow!("{} {} was removed by retention at {when}; pin artifacts you need to keep (gantry artifact pin)", a.name, a.digest).into());
            }
            let store = ctx.artifacts()?;
            copy_checked(&*store, &output, &a.digest, a.size as u64).await?;
            eprintln!(
                "{} {} ({}) -> {}",
                a.name,
                a.digest,
                human_size(a.size as u64),
                output.display()
            );
            Ok(())
        }
    }
}

async fn find(
    ctx: &Context,
    which: &Which,
) -> anyhow::Result<gantry_engine::ports::ArtifactRecord> {
    if which.name.is_none() && which.digest.is_none() {
        bail!("name the artifact, or give --digest");
    }
    ctx.state
        .find_artifact(&gantry_engine::ports::ArtifactQuery {
            project: which.project.as_deref(),
            name: which.name.as_deref(),
            run: which.run,
            digest: which.digest.as_deref(),
        })
        .await?
        .ok_or_else(|| anyhow!("no such artifact"))
}

/// Streams the stored object to `dest` through a temp file beside it, with a progress bar,
/// checking the sha256 before the file appears under its name.
async fn copy_checked(
    store: &dyn ArtifactStore,
    dest: &std::path::Path,
    digest: &str,
    size: u64,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let stored = store.size(digest).await?.ok_or_else(|| {
        anyhow!(
            "the stored object of {digest} is missing from {}",
            store.location()
        )
    })?;
    if stored != size {
        bail!(
            "the stored object of {digest} has {stored} bytes, {size} were recorded: it is corrupt; nothing was written"
        );
    }
    let mut stream = store.read(digest, 0, size).await?;
    let mut tmp = tempfile_in(dir)?;
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(size)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut hasher = Sha256::new();
    let copied: anyhow::Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.with_context(|| format!("reading {digest} from {}", store.location()))?;
            hasher.update(&chunk);
            tmp.1.write_all(&chunk)?;
            bar.inc(chunk.len() as u64);
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp.0);
        return Err(e.context("nothing was written"));
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest {
        let _ = std::fs::remove_file(&tmp.0);
        bail!(
            "the stored object is corrupt: expected {digest}, found {actual}; nothing was written"
        );
    }
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, dest).with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

fn tempfile_in(dir: &std::path::Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!(".gantry-get-{}", std::process::id()));
    let f =
        std::fs::File::create(&path).with_context(|| format!("writing into {}", dir.display()))?;
    Ok((path, f))
}
