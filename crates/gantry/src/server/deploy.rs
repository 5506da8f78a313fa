//! The server's side of deployments: where environment descriptions come from (the pipeline
//! file at the deployed run's commit, read from the project's mirror or its local repository),
//! the in-process `Deployer` the server's runs use, and the `Control` operations on
//! environments, all carried out by `gantry-deploy`'s manager.

use super::Mirrors;
use crate::pipeline_at::{load_pipeline, short};
use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use gantry_api::{ControlError, types};
use gantry_deploy::{DeployError, DeployManager, ProjectSource};
use gantry_engine::ports::{DeployReport, DeployRequest, Deployer, RunFilter, StateStore};
use gantry_git::Repo;
use gantry_model::EnvironmentSpec;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads environments from the pipeline file at a run's commit.
pub struct PipelineSource {
    pub mirrors: Arc<Mirrors>,
    pub store: Arc<dyn StateStore>,
}

impl PipelineSource {
    /// The repository holding `commit` of `project`: the server's mirror for projects it
    /// watches (fetched when the commit is missing), else the run's own repository path.
    async fn repo_with(&self, project: &str, repo_path: &str, commit: &str) -> Result<Repo> {
        if let Some(p) = self.mirrors.project(project).cloned() {
            if let Some(m) = self.mirrors.get(project)
                && m.has_commit(commit)
            {
                return Ok(m);
            }
            return self.mirrors.fetch(&p).await;
        }
        let path = PathBuf::from(repo_path);
        let repo = Repo::open(&path)
            .with_context(|| format!("opening the repository {repo_path} of project {project}"))?;
        if !repo.has_commit(commit) {
            bail!("commit {} is not in {repo_path}", short(commit));
        }
        Ok(repo)
    }
}

#[async_trait]
impl ProjectSource for PipelineSource {
    async fn environment(
        &self,
        project: &str,
        run: Option<i64>,
        environment: &str,
    ) -> Result<EnvironmentSpec> {
        let run = match run {
            Some(id) => self.store.run_detail(id).await?.map(|d| d.run),
            None => self
                .store
                .list_runs(&RunFilter {
                    project: Some(project.to_string()),
                    limit: 1,
                    ..Default::default()
                })
                .await?
                .into_iter()
                .next(),
        }
        .ok_or_else(|| anyhow!("project {project} has no run to read its environments from"))?;
        let repo = self.repo_with(project, &run.repo, &run.commit).await?;
        let subdir = Path::new(&run.pipeline_file)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf);
        let commit = run.commit.clone();
        let (file, checked) =
            tokio::task::spawn_blocking(move || load_pipeline(&repo, &commit, subdir.as_deref()))
                .await?
                .map_err(|e| anyhow!(e.message()))?;
        let names: Vec<String> = checked
            .pipeline
            .environments
            .iter()
            .map(|e| e.name.clone())
            .collect();
        checked
            .pipeline
            .environments
            .into_iter()
            .find(|e| e.name == environment)
            .ok_or_else(|| {
                anyhow!(
                    "environment `{environment}` is not described in {file} at commit {} (run {}); it describes: {}",
                    short(&run.commit),
                    run.id,
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                )
            })
    }

    async fn is_ancestor(&self, project: &str, ancestor: &str, commit: &str) -> Option<bool> {
        let runs = self
            .store
            .list_runs(&RunFilter {
                project: Some(project.to_string()),
                limit: 1,
                ..Default::default()
            })
            .await
            .ok()?;
        let repo_path = runs.first()?.repo.clone();
        let repo = self.repo_with(project, &repo_path, commit).await.ok()?;
        let (a, c) = (ancestor.to_string(), commit.to_string());
        tokio::task::spawn_blocking(move || repo.is_ancestor(&a, &c).ok())
            .await
            .ok()?
    }
}

/// The deployer of the server's own runs: the deploy manager, waiting for the bake.
pub struct InProcessDeployer {
    pub manager: Arc<DeployManager>,
}

#[async_trait]
impl Deployer for InProcessDeployer {
    async fn deploy(&self, request: DeployRequest) -> Result<DeployReport> {
        self.manager
            .deploy(request, true)
            .await
            .map_err(|e| anyhow!("{e}"))
    }
}

pub fn api_error(e: DeployError) -> ControlError {
    match e {
        DeployError::NotFound(m) => ControlError::not_found(m),
        DeployError::Conflict(m) => ControlError::conflict(m),
        DeployError::Invalid(m) => ControlError::unprocessable(m),
        DeployError::Internal(e) => ControlError::from(e),
    }
}

/// The wire form of a deployment's outcome.
pub fn outcome(r: &DeployReport) -> types::DeployOutcome {
    types::DeployOutcome {
        release: r.release.as_ref().map(types::Release::from),
        succeeded: r.succeeded,
        message: r.message.clone(),
        error: None,
    }
}

fn window(w: &gantry_deploy::WindowView) -> types::Window {
    types::Window {
        requests: w.requests,
        errors: w.errors,
        error_rate: w.error_rate,
        p50_ms: w.p50_ms,
        p90_ms: w.p90_ms,
        p99_ms: w.p99_ms,
    }
}

/// The wire form of an environment's status.
pub fn status(s: &gantry_deploy::EnvStatus) -> types::EnvStatus {
    types::EnvStatus {
        project: s.project.clone(),
        environment: s.environment.clone(),
        target: s.target.clone(),
        router: s.router.clone(),
        live: s.live.as_ref().map(types::Release::from),
        previous: s.previous.as_ref().map(types::Release::from),
        health: s.health.clone(),
        health_detail: s.health_detail.clone(),
        uptime_ms: s.uptime_ms,
        restarts: s.restarts,
        pid: s.pid,
        log: s.log.clone(),
        running: s.running.clone(),
        lock: s.lock.as_ref().map(types::Lock::from),
        driver: s.driver.clone(),
        canary: s.canary.as_ref().map(|c| types::Canary {
            release: c.release,
            state: c.state.clone(),
            percent: c.percent,
            step: c.step,
            steps: c.steps,
            canary: window(&c.canary),
            stable: window(&c.stable),
            analysis: c.analysis.clone(),
        }),
        traffic: s
            .traffic
            .iter()
            .map(|t| types::Traffic {
                release: t.release,
                role: t.role.clone(),
                last_minute: window(&t.last_minute),
                total_requests: t.total_requests,
                total_errors: t.total_errors,
            })
            .collect(),
    }
}

/// The wire form of a release with its events.
pub fn history(h: &gantry_deploy::ReleaseHistory) -> types::ReleaseHistory {
    types::ReleaseHistory {
        release: (&h.release).into(),
        events: h.events.iter().map(types::ReleaseEvent::from).collect(),
    }
}
