//! `gantry runner`: a process on any host that claims jobs from a server over its API and
//! runs them exactly as the server runs its own (`gantry_runner::remote::run_on_runner`). It
//! never sees the database. Its life: `concurrency` slots, each claiming (a long wait on the
//! server), running one job under a lease renewed every third of its length, and saying how it
//! ended; SIGTERM or Ctrl-C: no new claims, the jobs running finish, then it exits.
//!
//! A job is never run twice at once: a slot that cannot renew its lease for two thirds of it
//! (the server gone, the network cut) stops the job itself, before the server may call it lost
//! and hand it to another runner; told the lease is not its own any more (409), it stops at
//! once and reports nothing.

mod remote;

use crate::client::{Client, Lease, Refused};
use anyhow::{Context, Result};
use gantry_api::types::{ClaimBody, ClaimedJob, JobEnd};
use gantry_engine::run::{AttemptOutcome, JobRef};
use gantry_runner::remote::{AttemptEnd, RunnerAttempt, run_on_runner};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long one claim waits on the server for a job.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

pub struct RunnerConfig {
    pub client: Arc<Client>,
    pub name: String,
    pub labels: Vec<String>,
    pub concurrency: usize,
    /// Workspaces, the jobs' stores and the commits' files.
    pub work_dir: PathBuf,
    /// A JSON line per job ended, appended here: the runner's own record of what it ran.
    pub record: Option<PathBuf>,
}

/// Runs until `stop` resolves, then lets the running jobs finish.
pub async fn serve(cfg: RunnerConfig, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("creating the work directory {}", cfg.work_dir.display()))?;
    let _held = hold_work_dir(&cfg)?;
    let cfg = Arc::new(cfg);
    let (draining, drained) = watch::channel(false);
    let slots: Vec<_> = (0..cfg.concurrency.max(1))
        .map(|slot| tokio::spawn(claim_loop(cfg.clone(), slot, drained.clone())))
        .collect();
    println!(
        "runner {} serving {} with {} slot(s), labels [{}]",
        cfg.name,
        cfg.client.base,
        cfg.concurrency.max(1),
        cfg.labels.join(", ")
    );
    stop.await;
    println!(
        "runner {}: stopping: no new jobs; the running ones finish",
        cfg.name
    );
    let _ = draining.send(true);
    for s in slots {
        let _ = s.await;
    }
    println!("runner {}: stopped", cfg.name);
    Ok(())
}

/// One runner per work directory, held by an exclusive `flock` on `runner.lock` in it for as
/// long as the runner runs. So what is found under it at start is a dead runner's: its steps'
/// processes left running (a step's shell dies with its runner, what the shell started does
/// not) are killed, and its job directories removed.
fn hold_work_dir(cfg: &RunnerConfig) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use nix::fcntl::{Flock, FlockArg};
    let path = cfg.work_dir.join("runner.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut held = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, _)| {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        anyhow::anyhow!(
            "another runner uses the work directory {} ({}); give this one its own --work-dir",
            cfg.work_dir.display(),
            holder.trim()
        )
    })?;
    held.set_len(0)?;
    writeln!(held, "runner {} pid {}", cfg.name, std::process::id())?;
    let jobs = cfg.work_dir.join("jobs");
    let killed = gantry_runner::owner::kill_leftovers(&jobs);
    if killed > 0 {
        println!(
            "runner {}: killed {killed} process(es) left running under {} by a runner that stopped",
            cfg.name,
            jobs.display()
        );
    }
    if jobs.exists() {
        std::fs::remove_dir_all(&jobs).with_context(|| format!("clearing {}", jobs.display()))?;
    }
    Ok(held)
}

async fn claim_loop(cfg: Arc<RunnerConfig>, slot: usize, mut drained: watch::Receiver<bool>) {
    let body = ClaimBody {
        runner: cfg.name.clone(),
        labels: cfg.labels.clone(),
        wait_ms: Some(CLAIM_WAIT.as_millis() as u64),
    };
    let mut failing = false;
    while !*drained.borrow() {
        let asked = Instant::now();
        let claimed = tokio::select! {
            c = cfg.client.claim(&body) => c,
            _ = drained.changed() => break,
        };
        match claimed {
            Ok(Some(job)) => {
                failing = false;
                run_job(&cfg, slot, job, asked.elapsed()).await;
            }
            Ok(None) => failing = false,
            Err(e) => {
                if !failing {
                    eprintln!("runner {}: claiming a job: {e:#}; trying again", cfg.name);
                }
                failing = true;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = drained.changed() => {}
                }
            }
        }
    }
}

/// How the lease watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseState {
    Held,
    /// The server said the job is not this runner's any more.
    Gone,
    /// No renewal got through for too long: stopped before the lease could pass.
    Unrenewed,
}

/// `claimed_in`: how long the claim that got it took (waiting on the server included).
async fn run_job(cfg: &Arc<RunnerConfig>, slot: usize, job: ClaimedJob, claimed_in: Duration) {
    let started = Instant::now();
    let lease = Lease {
        id: job.id,
        token: job.lease.clone(),
    };
    let label = format!(
        "job {} (run {}, `{}`, attempt {})",
        job.id, job.run_id, job.payload.job_name, job.attempt
    );
    println!("runner {} slot {slot}: claimed {label}", cfg.name);
    let (cancel_tx, cancel) = watch::channel(false);
    let (state_tx, state) = watch::channel(LeaseState::Held);
    let (done_tx, done) = watch::channel(false);
    let beats = tokio::spawn(keep_lease(
        cfg.client.clone(),
        lease.clone(),
        Duration::from_millis(job.lease_ms),
        cancel_tx,
        state_tx,
        done,
    ));
    let end = attempt(cfg, &job, &lease, cancel).await;
    let _ = done_tx.send(true);
    let _ = beats.await;
    let held = *state.borrow();
    let outcome = match end.outcome {
        AttemptOutcome::Succeeded => "succeeded",
        AttemptOutcome::TimedOut => "timed_out",
        AttemptOutcome::Cancelled => "cancelled",
        AttemptOutcome::Failed | AttemptOutcome::Lost { .. } => "failed",
    };
    let reported = match held {
        LeaseState::Held | LeaseState::Unrenewed => {
            report(
                cfg,
                &lease,
                outcome,
                &end,
                Duration::from_millis(job.lease_ms),
            )
            .await
        }
        LeaseState::Gone => false,
    };
    let said = match (held, reported) {
        (LeaseState::Gone, _) => {
            "stopped: the server gave the job up (its lease ran out)".to_string()
        }
        (_, false) => format!("{outcome}, but the server could not be told"),
        (_, true) => outcome.to_string(),
    };
    println!(
        "runner {} slot {slot}: {label} {said} in {:.1}s",
        cfg.name,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &cfg.record {
        let line = serde_json::json!({
            "runner": cfg.name,
            "queued_job": job.id,
            "run": job.run_id,
            "job_id": job.job_id,
            "job": job.payload.job_name,
            "attempt": job.attempt,
            "outcome": outcome,
            "reported": reported,
            "claim_ms": claimed_in.as_secs_f64() * 1000.0,
            "millis": started.elapsed().as_millis() as u64,
        });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            // One write of the whole line: slots append to the same file, and a line written
            // piecemeal would interleave with another slot's.
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "runner {}: recording {label} in {}: {e}",
                cfg.name,
                path.display()
            );
        }
    }
}

/// Tells the server how the attempt ended, trying again for up to a lease's length.
async fn report(
    cfg: &RunnerConfig,
    lease: &Lease,
    outcome: &str,
    end: &AttemptEnd,
    lease_len: Duration,
) -> bool {
    let body = JobEnd {
        outcome: outcome.to_string(),
        exit_code: end.exit_code,
        error: end.error.clone(),
    };
    let until = Instant::now() + lease_len;
    loop {
        match cfg.client.finish(lease, &body).await {
            Ok(_) => return true,
            Err(e) if e.downcast_ref::<Refused>().is_some() => {
                eprintln!("runner {}: job {}: {e:#}", cfg.name, lease.id);
                return false;
            }
            Err(e) if Instant::now() >= until => {
                eprintln!(
                    "runner {}: job {}: giving up telling the server: {e:#}",
                    cfg.name, lease.id
                );
                return false;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Renews the lease every third of its length until `done`; asks the job to stop when the
/// server says so, when the lease is gone, or when no renewal got through for two thirds of it.
async fn keep_lease(
    client: Arc<Client>,
    lease: Lease,
    length: Duration,
    cancel: watch::Sender<bool>,
    state: watch::Sender<LeaseState>,
    mut done: watch::Receiver<bool>,
) {
    let every = length / 3;
    let mut last_held = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = done.changed() => return,
        }
        let sent = Instant::now();
        match client.heartbeat(&lease).await {
            Ok(beat) => {
                last_held = sent;
                if beat.cancel {
                    let _ = cancel.send(true);
                }
            }
            Err(e) if e.downcast_ref::<Refused>().is_some() => {
                eprintln!("gantry runner: job {}: {e:#}", lease.id);
                let _ = state.send(LeaseState::Gone);
                let _ = cancel.send(true);
                return;
            }
            Err(e) => {
                if last_held.elapsed() >= every * 2 {
                    eprintln!(
                        "gantry runner: job {}: no lease renewal for {:.0?} ({e:#}): stopping it before the lease runs out",
                        lease.id,
                        last_held.elapsed()
                    );
                    let _ = state.send(LeaseState::Unrenewed);
                    let _ = cancel.send(true);
                }
            }
        }
    }
}

/// Runs the claimed attempt: the pipeline parsed from the file the server sent, the job at the
/// place it named, the workspace from the commit's files.
async fn attempt(
    cfg: &Arc<RunnerConfig>,
    job: &ClaimedJob,
    lease: &Lease,
    cancel: watch::Receiver<bool>,
) -> AttemptEnd {
    let p = &job.payload;
    let pipeline = match gantry_config::parse_pipeline(&p.pipeline_file, &job.pipeline) {
        Ok(checked) => checked.pipeline,
        Err(diags) => {
            return AttemptEnd::failed(format!("the pipeline file is invalid here:\n{diags}"));
        }
    };
    let at = JobRef {
        stage: p.stage,
        job: p.job,
    };
    match gantry_runner::remote::job_at(&pipeline, at) {
        Some(j) if j.name == p.job_name => {}
        _ => {
            return AttemptEnd::failed(format!(
                "{} at {} has no job `{}` at stage {}, position {}",
                p.pipeline_file, p.commit, p.job_name, p.stage, p.job
            ));
        }
    }
    let job_dir = cfg.work_dir.join("jobs").join(job.id.to_string());
    let local = match gantry_store::artifacts::LocalArtifactStore::new(job_dir.join("store")) {
        Ok(l) => l,
        Err(e) => return AttemptEnd::failed(format!("{e:#}")),
    };
    let downloads = job_dir.join("downloads");
    if let Err(e) = std::fs::create_dir_all(&downloads) {
        return AttemptEnd::failed(format!("creating {}: {e}", downloads.display()));
    }
    let records = Arc::new(remote::HttpAttempts {
        client: cfg.client.clone(),
        lease: lease.clone(),
        project: p.project.clone(),
    });
    let artifacts = Arc::new(remote::HttpArtifacts {
        client: cfg.client.clone(),
        lease: lease.clone(),
        local,
        downloads,
    });
    let source = Arc::new(remote::HttpSource {
        client: cfg.client.clone(),
        lease: lease.clone(),
        sources: cfg.work_dir.join("sources"),
    });
    let attempt = RunnerAttempt {
        run_id: job.run_id,
        job_id: job.job_id,
        attempt: job.attempt,
        job: at,
        project: p.project.clone(),
        commit: p.commit.clone(),
        branch: p.branch.clone(),
        event: p
            .event
            .parse()
            .unwrap_or(gantry_model::TriggerEvent::Manual),
        vars: p.vars.clone(),
        subdir: p.subdir.as_ref().map(PathBuf::from),
        pipeline,
        pipeline_file: p.pipeline_file.clone(),
        secrets: job
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), gantry_model::SecretValue::new(v.clone())))
            .collect(),
        secrets_withheld: p.secrets_withheld.clone(),
        log_cap: job.log_cap,
        cache_cap: job.cache_cap,
        kill_grace: Duration::from_millis(job.kill_grace_ms),
        work_dir: job_dir.join("work"),
        owner: cfg.name.clone(),
        sandbox: None,
    };
    let end = run_on_runner(attempt, records, artifacts, source, Arc::new(Quiet), cancel).await;
    let _ = tokio::fs::remove_dir_all(&job_dir).await;
    end
}

/// The runner's records go to the server; nothing to watch here.
struct Quiet;

impl gantry_runner::Observer for Quiet {
    fn event(&self, _event: &gantry_runner::RunEvent) {}
}
