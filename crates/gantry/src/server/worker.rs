//! Queue workers: each takes the oldest queued run (atomically, in the store), makes sure the
//! commit is in the project's mirror, reads and checks its pipeline file, and runs it with the
//! local runner. `runner.concurrency` workers run at once. A run whose pipeline file is missing
//! or invalid fails with the reason recorded on it.

use super::Server;
use crate::pipeline_at::load_pipeline;
use crate::secrets::load_secrets;
use gantry_api::metrics::{Metrics, StatusLabel};
use gantry_engine::ports::RunRecord;
use gantry_git::Revision;
use gantry_model::RunStatus;
use gantry_runner::{Observer, RunEvent, RunOptions, RunRequest, Runner};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Feeds run and step durations to the metrics, and notes runs in the server log.
struct ServerObserver {
    metrics: Arc<Metrics>,
}

impl Observer for ServerObserver {
    fn event(&self, event: &RunEvent) {
        match event {
            RunEvent::StepFinished { millis, .. } => {
                self.metrics.step_seconds.observe(*millis as f64 / 1000.0)
            }
            RunEvent::RunFinished {
                run,
                status,
                millis,
            } => {
                self.metrics
                    .run_seconds
                    .get_or_create(&StatusLabel {
                        status: status.as_str().to_string(),
                    })
                    .observe(*millis as f64 / 1000.0);
                tracing::info!(run, %status, millis, "run finished");
            }
            RunEvent::RunStarted {
                run,
                project,
                commit,
                ..
            } => tracing::info!(run, project, commit, "run started"),
            _ => {}
        }
    }
}

/// Hands the queue of the worker running `run` to a new worker (the run waits for an approval
/// and should not keep others waiting); that worker ends when `run` does. Once per run.
pub fn release(server: &Arc<Server>, run: i64) {
    if !server.released.lock().expect("released").insert(run) {
        return;
    }
    let handle = tokio::spawn(work(server.clone()));
    server
        .extra_workers
        .lock()
        .expect("extra workers")
        .push(handle);
}

pub fn spawn_workers(server: Arc<Server>) -> Vec<JoinHandle<()>> {
    (0..server.config.concurrency)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { work(server).await })
        })
        .collect()
}

async fn work(server: Arc<Server>) {
    let mut draining = server.draining.subscribe();
    loop {
        if *draining.borrow() {
            return;
        }
        match server
            .store
            .claim_next_run(&server.owner, gantry_engine::ports::now_millis())
            .await
        {
            Ok(Some(run)) => {
                let id = run.id;
                let phase = super::statuses::Phase::Running;
                server.statuses.post(&run.project, id, &run.commit, phase);
                if let Err(e) = process(&server, run).await {
                    tracing::error!(run = id, error = %format!("{e:#}"), "run failed to execute");
                    let _ = server
                        .store
                        .set_run_status(
                            id,
                            RunStatus::Failed,
                            gantry_engine::ports::now_millis(),
                            Some(&format!("{e:#}")),
                        )
                        .await;
                }
                // Its commit status, diagnosis and notifications off the worker: the next run
                // need not wait for them.
                tokio::spawn(super::notify::after_run(server.clone(), id));
                if server.released.lock().expect("released").remove(&id) {
                    // A new worker took the queue while this run waited for an approval.
                    return;
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = server.queued.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = draining.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not read the queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn process(server: &Arc<Server>, run: RunRecord) -> anyhow::Result<()> {
    // The cancel switch exists from the moment the run is claimed, so a cancel that arrives
    // while the run is being prepared is not lost.
    let (cancel_tx, cancel_rx) = watch::channel(false);
    server
        .running
        .lock()
        .expect("running map")
        .insert(run.id, cancel_tx);
    let result = prepare_and_run(server, &run, cancel_rx).await;
    server.running.lock().expect("running map").remove(&run.id);
    result
}

async fn prepare_and_run(
    server: &Arc<Server>,
    run: &RunRecord,
    cancel_rx: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let fail = |msg: String| async move {
        server
            .store
            .set_run_status(
                run.id,
                RunStatus::Failed,
                gantry_engine::ports::now_millis(),
                Some(&msg),
            )
            .await
    };
    let Some(project) = server.project(&run.project).cloned() else {
        return fail(format!(
            "project `{}` is not in this server's configuration",
            run.project
        ))
        .await;
    };
    let repo = match server.mirror(&project.name) {
        Some(m) if m.has_commit(&run.commit) => m,
        _ => match server.fetch_mirror(&project).await {
            Ok(m) => m,
            Err(e) => {
                return fail(format!(
                    "cannot reach the repository {}: {e:#}",
                    project.repo
                ))
                .await;
            }
        },
    };
    if !repo.has_commit(&run.commit) {
        return fail(format!("commit {} is not in {}", run.commit, project.repo)).await;
    }
    let (file, checked) = match load_pipeline(&repo, &run.commit, None) {
        Ok(found) => found,
        Err(e) => return fail(e.message()).await,
    };
    let pipeline = checked.pipeline;
    // A pull request from a fork runs code that nobody who may push has read: no secrets.
    let from_fork = run
        .vars
        .get(gantry_model::vars::PR_FORK)
        .map(String::as_str)
        == Some("true");
    let secrets = if from_fork {
        Default::default()
    } else {
        load_secrets(
            server.config.secrets_file.as_deref(),
            &pipeline.secret_names(),
        )?
    };
    let runner = Runner {
        state: server.store.clone(),
        artifacts: server.artifacts.clone(),
        observer: Arc::new(ServerObserver {
            metrics: server.metrics.clone(),
        }),
        deployer: Some(Arc::new(super::deploy::InProcessDeployer {
            manager: server.deploys.clone(),
        })),
        approvals: Some(Arc::new(super::approvals::RunApprovals {
            server: server.clone(),
        })),
        remote: Some(Arc::new(super::runners::Dispatcher {
            server: server.clone(),
        })),
    };
    let request = RunRequest {
        project: project.name.clone(),
        repo,
        revision: Revision {
            commit: run.commit.clone(),
            branch: run.branch.clone(),
        },
        pipeline,
        pipeline_file: file,
        subdir: None,
        trigger: run.trigger.clone(),
        event: run.event_kind(),
        vars: run.vars.clone(),
    };
    let mut options = RunOptions::new(
        server.data_dir.join("work"),
        server.config.kill_grace,
        secrets,
        server.owner.clone(),
    );
    options.log_cap = server.config.max_job_log_bytes;
    options.cache_cap = server.config.cache_bytes;
    if from_fork {
        options.secrets_withheld =
            Some("this run is of a pull request from a fork, and those get no secrets".into());
    }
    options.sandbox = server.sandbox.clone();
    runner
        .execute_claimed(run.id, request, options, cancel_rx)
        .await
        .map(|_| ())
}
