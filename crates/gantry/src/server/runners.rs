//! The server's side of runners: jobs handed to them (`Dispatcher`, the run loop's
//! `RemoteJobs`) and claims answered (`Server::claim_for`), with the commit's files packed once
//! per commit for them (`Server::source_for`). Whichever server a runner asks, the job, its
//! lease and how it ended are in the shared store; the server driving the run watches them.

use super::Server;
use anyhow::{Context, Result};
use async_trait::async_trait;
use gantry_api::ControlError;
use gantry_api::auth::{generate_token, hash_token};
use gantry_api::types::{ClaimedJob, JobPayload};
use gantry_engine::ports::{JobClaim, NewQueuedJob, QueuedJobState, now_millis};
use gantry_engine::run::AttemptOutcome;
use gantry_git::Repo;
use gantry_model::Job;
use gantry_runner::remote::{AttemptEnd, JobTicket, RemoteJobs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a waiting claim looks at the store when nothing woke it sooner (a job queued on
/// another server).
const LOOK_EVERY: Duration = Duration::from_millis(200);
/// How often the run loop looks at a claimed job (its end told by another server, its lease
/// passing).
const WATCH_CLAIMED: Duration = Duration::from_millis(500);
/// The longest it waits between looks at a job still queued (thousands may wait at once).
const WATCH_QUEUED_MAX: Duration = Duration::from_secs(2);

/// Forgets a job's wake-up when its wait ends, however it ends.
struct Waiting<'a> {
    server: &'a Server,
    id: i64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.server
            .job_waits
            .lock()
            .expect("job waits")
            .remove(&self.id);
    }
}

/// Hands the run loop's jobs to runners.
pub struct Dispatcher {
    pub server: Arc<Server>,
}

fn end(outcome: AttemptOutcome, exit_code: Option<i32>, error: Option<String>) -> AttemptEnd {
    AttemptEnd {
        outcome,
        exit_code,
        error,
    }
}

#[async_trait]
impl RemoteJobs for Dispatcher {
    fn takes(&self, job: &Job) -> bool {
        !job.runs_on.is_empty() || !self.server.config.local_jobs
    }

    async fn run(&self, ticket: JobTicket, mut cancel: watch::Receiver<bool>) -> AttemptEnd {
        let server = &self.server;
        let payload = JobPayload {
            stage: ticket.job.stage,
            job: ticket.job.job,
            job_name: ticket.job_name.clone(),
            project: ticket.project.clone(),
            commit: ticket.commit.clone(),
            branch: ticket.branch.clone(),
            event: ticket.event.as_str().to_string(),
            vars: ticket.vars.clone(),
            pipeline_file: ticket.pipeline_file.clone(),
            subdir: ticket.subdir.as_ref().map(|s| s.display().to_string()),
            secrets: ticket.secrets.clone(),
            secrets_withheld: ticket.secrets_withheld.clone(),
        };
        let queued = server
            .store
            .enqueue_job(NewQueuedJob {
                run_id: ticket.run_id,
                job_id: ticket.job_id,
                attempt: ticket.attempt,
                labels: ticket.labels.clone(),
                payload: serde_json::to_string(&payload).expect("a payload serialises"),
                queued_at: now_millis(),
            })
            .await;
        let id = match queued {
            Ok(id) => id,
            Err(e) => {
                return end(
                    AttemptOutcome::Failed,
                    None,
                    Some(format!("queueing the job for a runner: {e:#}")),
                );
            }
        };
        let woken = Arc::new(tokio::sync::Notify::new());
        server
            .job_waits
            .lock()
            .expect("job waits")
            .insert(id, woken.clone());
        let _waiting = Waiting { server, id };
        server.jobs_queued.notify_waiters();
        let mut queued_wait = Duration::from_millis(250);
        let mut cancelled = *cancel.borrow();
        let mut asked_to_cancel = false;
        loop {
            if cancelled && !asked_to_cancel {
                asked_to_cancel = true;
                if let Ok(Some(QueuedJobState::Cancelled)) =
                    server.store.cancel_job(id, now_millis()).await
                {
                    return end(AttemptOutcome::Cancelled, None, None);
                }
            }
            let mut wait = WATCH_CLAIMED;
            match server.store.queued_job(id).await {
                Ok(Some(job)) => match job.state {
                    QueuedJobState::Finished => {
                        let outcome = match job.outcome.as_deref() {
                            Some("succeeded") => AttemptOutcome::Succeeded,
                            Some("timed_out") => AttemptOutcome::TimedOut,
                            Some("cancelled") => AttemptOutcome::Cancelled,
                            _ => AttemptOutcome::Failed,
                        };
                        return end(outcome, job.exit_code, job.error);
                    }
                    QueuedJobState::Cancelled => return end(AttemptOutcome::Cancelled, None, None),
                    QueuedJobState::Lost => return self.lost(&ticket, job.error),
                    QueuedJobState::Claimed
                        if job.lease_until.is_some_and(|until| until < now_millis()) =>
                    {
                        let runner = job.runner.as_deref().unwrap_or("?");
                        let why = format!(
                            "runner `{runner}` stopped renewing its lease on attempt {} (it lasts {}): it died or lost the network",
                            ticket.attempt,
                            gantry_model::duration::format_duration(server.config.runner_lease)
                        );
                        if let Ok(true) = server.store.lose_job(id, now_millis(), &why).await {
                            tracing::warn!(run = ticket.run_id, job = %ticket.job_name, runner, "job lost with its runner");
                            return self.lost(&ticket, Some(why));
                        }
                    }
                    QueuedJobState::Claimed => {}
                    QueuedJobState::Queued => {
                        wait = queued_wait;
                        queued_wait = (queued_wait * 2).min(WATCH_QUEUED_MAX);
                    }
                },
                Ok(None) => {
                    return end(
                        AttemptOutcome::Failed,
                        None,
                        Some(format!("queued job {id} vanished from the state store")),
                    );
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "reading a queued job"),
            }
            tokio::select! {
                _ = woken.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                changed = cancel.changed(), if !cancelled => {
                    cancelled = changed.is_err() || *cancel.borrow();
                }
            }
        }
    }
}

impl Dispatcher {
    /// The end of an attempt lost with its runner: started again elsewhere while
    /// `[runner] retry_lost` allows, else failed, the reason said either way.
    fn lost(&self, ticket: &JobTicket, why: Option<String>) -> AttemptEnd {
        let allowed = self.server.config.retry_lost;
        let retry = ticket.lost_before < allowed;
        let why = why.unwrap_or_else(|| "its runner was lost".into());
        let then = if retry {
            format!(
                "started again on another runner ({} of {allowed} such restarts)",
                ticket.lost_before + 1
            )
        } else {
            format!("not started again: [runner] retry_lost = {allowed}")
        };
        end(
            AttemptOutcome::Lost { retry },
            None,
            Some(format!("{why}; {then}")),
        )
    }
}

impl Server {
    /// The project's mirror with `commit` in it, fetched when it lacks it.
    async fn mirror_having(&self, project: &str, commit: &str) -> Result<Repo, ControlError> {
        let Some(config) = self.project(project).cloned() else {
            return Err(ControlError::not_found(format!(
                "project `{project}` is not in this server's configuration"
            )));
        };
        let repo = match self.mirror(project) {
            Some(m) if m.has_commit(commit) => m,
            _ => self.fetch_mirror(&config).await.map_err(|e| {
                ControlError::unavailable(format!(
                    "cannot reach the repository {}: {e:#}",
                    config.repo
                ))
            })?,
        };
        if !repo.has_commit(commit) {
            return Err(ControlError::not_found(format!(
                "commit {commit} is not in {}",
                config.repo
            )));
        }
        Ok(repo)
    }

    /// Claims a job for `runner`, waiting up to `wait` for one to come.
    pub(super) async fn claim_for(
        &self,
        runner: &str,
        labels: &[String],
        wait: Duration,
    ) -> Result<Option<ClaimedJob>, ControlError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut labels = labels.to_vec();
        labels.sort();
        labels.dedup();
        loop {
            // Registered before looking, so a job queued meanwhile is not missed.
            let queued = self.jobs_queued.notified();
            let lease = generate_token();
            let at = now_millis();
            let claim = JobClaim {
                runner: runner.to_string(),
                labels: labels.clone(),
                lease_hash: hash_token(&lease),
                at,
                until: at + self.config.runner_lease.as_millis() as i64,
            };
            if let Some(job) = self.store.claim_job(&claim).await? {
                match self.claimed(&job, lease).await {
                    Ok(claimed) => {
                        tracing::info!(job = job.id, run = job.run_id, runner, "job claimed");
                        return Ok(Some(claimed));
                    }
                    // The job cannot be run anywhere as things are: it fails with the reason,
                    // and the runner asks again.
                    Err(e) => {
                        let why = format!("handing the job to runner `{runner}`: {e}");
                        let _ = self
                            .store
                            .finish_job(
                                job.id,
                                &claim.lease_hash,
                                "failed",
                                None,
                                Some(&why),
                                now_millis(),
                            )
                            .await;
                        gantry_api::Control::job_finished(self, job.id);
                        continue;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                _ = queued => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// What a runner is told of a job it claimed: the payload, the pipeline file at the
    /// commit, the values of its secrets.
    async fn claimed(
        &self,
        job: &gantry_engine::ports::QueuedJob,
        lease: String,
    ) -> Result<ClaimedJob, String> {
        let mut payload: JobPayload = serde_json::from_str(&job.payload)
            .map_err(|e| format!("corrupt state: queued job {}: {e}", job.id))?;
        // Secrets cross the network only encrypted: over HTTPS, or never leaving this host.
        if self.config.tls.is_none() && !self.config.listen.ip().is_loopback() {
            payload.secrets_withheld.get_or_insert_with(|| {
                format!(
                    "this server serves plain HTTP on {}, and secrets go to runners only over TLS (add [tls] to gantry.toml)",
                    self.config.listen
                )
            });
        }
        let repo = self
            .mirror_having(&payload.project, &payload.commit)
            .await
            .map_err(|e| e.to_string())?;
        let text = repo
            .read_file(&payload.commit, &payload.pipeline_file)
            .map_err(|e| format!("{e:#}"))?
            .ok_or_else(|| {
                format!(
                    "{} is not in commit {}",
                    payload.pipeline_file, payload.commit
                )
            })?;
        let pipeline = String::from_utf8(text)
            .map_err(|_| format!("{} is not UTF-8 text", payload.pipeline_file))?;
        let secrets = if payload.secrets_withheld.is_some() {
            Default::default()
        } else {
            crate::secrets::load_secrets(self.config.secrets_file.as_deref(), &payload.secrets)
                .map_err(|e| format!("{e:#}"))?
                .into_iter()
                .map(|(k, v)| (k, v.expose().to_string()))
                .collect()
        };
        Ok(ClaimedJob {
            id: job.id,
            lease,
            lease_ms: self.config.runner_lease.as_millis() as u64,
            run_id: job.run_id,
            job_id: job.job_id,
            attempt: job.attempt,
            payload,
            pipeline,
            secrets,
            log_cap: self.config.max_job_log_bytes,
            cache_cap: self.config.cache_bytes,
            kill_grace_ms: self.config.kill_grace.as_millis() as u64,
        })
    }

    /// The commit's files packed (tar.zst) under `<data>/sources/`, made once per commit.
    pub(super) async fn source_for(
        &self,
        payload: &JobPayload,
    ) -> Result<(PathBuf, String), ControlError> {
        let dir = self.data_dir.join("sources");
        let name = format!(
            "{}-{}",
            sanitize(&payload.project),
            sanitize(&payload.commit)
        );
        let (file, digest_file) = (
            dir.join(format!("{name}.tar.zst")),
            dir.join(format!("{name}.digest")),
        );
        let _made_one_at_a_time = self.sources.lock().await;
        if let (true, Ok(digest)) = (file.is_file(), std::fs::read_to_string(&digest_file)) {
            return Ok((file, digest.trim().to_string()));
        }
        let repo = self
            .mirror_having(&payload.project, &payload.commit)
            .await?;
        let commit = payload.commit.clone();
        let made = tokio::task::spawn_blocking(move || {
            pack_commit(&repo, &commit, &dir, &file, &digest_file)
        })
        .await
        .map_err(|e| ControlError::Internal(anyhow::anyhow!("packing the commit: {e}")))?;
        made.map_err(ControlError::Internal)
    }
}

/// Exports `commit` into a temporary directory and packs it into `file` (temp file + rename),
/// its digest beside it.
fn pack_commit(
    repo: &Repo,
    commit: &str,
    dir: &std::path::Path,
    file: &std::path::Path,
    digest_file: &std::path::Path,
) -> Result<(PathBuf, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tree = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(dir)
        .context("making a directory to export the commit into")?;
    repo.export(commit, tree.path())?;
    let staged = gantry_store::artifacts::pack::pack_dir_staged(tree.path(), dir)
        .with_context(|| format!("packing commit {commit} for runners"))?;
    // The digest first: an archive is only ever found beside its own.
    let part = digest_file.with_extension("digest.part");
    std::fs::write(&part, &staged.digest)
        .and_then(|()| std::fs::rename(&part, digest_file))
        .with_context(|| format!("writing {}", digest_file.display()))?;
    staged
        .file
        .persist(file)
        .map_err(|e| e.error)
        .with_context(|| format!("keeping {}", file.display()))?;
    Ok((file.to_path_buf(), staged.digest))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
