//! What starts runs: pushes of watched branches and tags, pull requests and manual triggers,
//! from the API's `Control::trigger` (webhooks, `gantry trigger`) and the pollers, each turned
//! into an [`Order`] for the queue. Pushes, tags and pull requests are deduplicated by their
//! key (a redelivered webhook, a poll after a webhook: one run); manual runs never are.

use super::Server;
use gantry_api::{ControlError, PullRequestEvent, TriggerOutcome, TriggerRequest, TriggerSource};
use gantry_config::server::ProjectConfig;
use gantry_model::records::RunRecord;
use gantry_model::{TriggerEvent, pattern_matches, vars};
use std::collections::BTreeMap;

/// What a run is queued for.
#[derive(Debug, Clone)]
pub struct Order {
    /// The branch it runs for; `None` for a tag's or a pull request's run.
    pub branch: Option<String>,
    pub commit: String,
    /// How it was queued: `poll`, `webhook`, `manual`, `rerun`, `requeue`.
    pub trigger: &'static str,
    pub event: TriggerEvent,
    pub vars: BTreeMap<String, String>,
    /// The deduplication key: `None` always queues.
    pub key: Option<String>,
}

impl Order {
    /// A push seen on `branch` (a poll, a webhook): once per project, branch and commit.
    pub fn push(project: &str, branch: &str, commit: &str, trigger: &'static str) -> Self {
        Self {
            branch: Some(branch.to_string()),
            commit: commit.to_string(),
            trigger,
            event: TriggerEvent::Push,
            vars: BTreeMap::new(),
            key: Some(format!("{project}/{branch}/{commit}")),
        }
    }

    /// A watched tag seen at `commit`: once per project, tag and commit.
    pub fn tag(project: &str, tag: &str, commit: &str, trigger: &'static str) -> Self {
        Self {
            branch: None,
            commit: commit.to_string(),
            trigger,
            event: TriggerEvent::Tag,
            vars: [(vars::TAG.to_string(), tag.to_string())].into(),
            key: Some(format!("{project}/tags/{tag}/{commit}")),
        }
    }

    /// A pull request's head commit: once per project, pull request and commit.
    pub fn pull_request(project: &str, pr: &PullRequestEvent, commit: &str) -> Self {
        Self {
            branch: None,
            commit: commit.to_string(),
            trigger: "webhook",
            event: TriggerEvent::PullRequest,
            vars: [
                (vars::PR, pr.number.to_string()),
                (vars::PR_BASE, pr.base.clone()),
                (vars::PR_HEAD, pr.head.clone()),
                (vars::PR_FORK, pr.fork.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            key: Some(format!("{project}/pulls/{}/{commit}", pr.number)),
        }
    }

    /// A new run of what `run` ran (a re-run, a re-queue after a crash): same branch, commit,
    /// event and variables; never deduplicated.
    pub fn again(run: &RunRecord, trigger: &'static str) -> Self {
        Self {
            branch: run.branch.clone().filter(|b| !b.is_empty()),
            commit: run.commit.clone(),
            trigger,
            event: run.event_kind(),
            vars: run.vars.clone(),
            key: None,
        }
    }
}

/// An answer that queued nothing, and why.
fn nothing(commit: String, branch: String, reason: String) -> TriggerOutcome {
    TriggerOutcome {
        run: None,
        queued: false,
        commit,
        branch,
        reason: Some(reason),
    }
}

fn unavailable(project: &ProjectConfig, e: anyhow::Error) -> ControlError {
    ControlError::unavailable(format!("fetching {}: {e:#}", project.repo))
}

impl Server {
    pub(super) async fn take_trigger(
        &self,
        request: TriggerRequest,
    ) -> Result<TriggerOutcome, ControlError> {
        let project = self
            .project(&request.project)
            .ok_or_else(|| ControlError::not_found(format!("no project `{}`", request.project)))?
            .clone();
        if !request.vars.is_empty() && request.source != TriggerSource::Manual {
            return Err(ControlError::bad_request("only manual runs take variables"));
        }
        let commit = request.rev.clone().unwrap_or_default();
        match request.source.clone() {
            TriggerSource::Webhook => {
                let branch = request.branch.clone().unwrap_or_default();
                self.pushed_branch(&project, branch, commit).await
            }
            TriggerSource::Tag(tag) => self.pushed_tag(&project, tag, commit).await,
            TriggerSource::PullRequest(pr) => self.pull_request(&project, pr, commit).await,
            TriggerSource::Manual => self.manual(&project, request).await,
        }
    }

    /// Queues `order` unless its key is taken; says which run has it then.
    async fn queue_once(
        &self,
        project: &ProjectConfig,
        order: Order,
        branch: String,
    ) -> Result<TriggerOutcome, ControlError> {
        let key = order.key.clone().unwrap_or_default();
        let commit = order.commit.clone();
        let queued = self.enqueue(project, order).await?;
        let (run, reason) = match queued {
            Some(id) => (Some(id), None),
            None => {
                let existing = self.store.run_by_trigger_key(&key).await?;
                let reason = match existing {
                    Some(id) => format!("run {id} is this commit's run already"),
                    None => "a run for this commit exists already".to_string(),
                };
                (existing, Some(reason))
            }
        };
        Ok(TriggerOutcome {
            run,
            queued: queued.is_some(),
            commit,
            branch,
            reason,
        })
    }

    /// The repository's default branch, from the mirror (fetched first when there is none
    /// yet); only asked when the project names no branches.
    async fn default_branch(
        &self,
        project: &ProjectConfig,
    ) -> Result<Option<String>, ControlError> {
        if !project.branches.is_empty() {
            return Ok(None);
        }
        if let Some(default) = self.mirror(&project.name).and_then(|m| m.default_branch()) {
            return Ok(Some(default));
        }
        let repo = self
            .fetch_mirror(project)
            .await
            .map_err(|e| unavailable(project, e))?;
        Ok(repo.default_branch())
    }

    async fn pushed_branch(
        &self,
        project: &ProjectConfig,
        branch: String,
        commit: String,
    ) -> Result<TriggerOutcome, ControlError> {
        let default = self.default_branch(project).await?;
        if !self.watches(project, &branch, default.as_deref()) {
            return Ok(nothing(commit, branch, "branch not watched".into()));
        }
        let order = Order::push(&project.name, &branch, &commit, "webhook");
        self.queue_once(project, order, branch).await
    }

    /// A pushed tag: run when the project watches it, of the commit the tag names in the
    /// mirror (the forge's id may be an annotated tag's object).
    async fn pushed_tag(
        &self,
        project: &ProjectConfig,
        tag: String,
        given: String,
    ) -> Result<TriggerOutcome, ControlError> {
        if !project.tags.iter().any(|p| pattern_matches(p, &tag)) {
            let reason = if project.tags.is_empty() {
                format!(
                    "tag `{tag}` not watched: the project watches no tags (`tags` in its config)"
                )
            } else {
                format!(
                    "tag `{tag}` not watched (tags: {})",
                    project.tags.join(", ")
                )
            };
            return Ok(nothing(given, String::new(), reason));
        }
        let repo = self
            .fetch_mirror(project)
            .await
            .map_err(|e| unavailable(project, e))?;
        let rev = format!("refs/tags/{tag}");
        let resolved = tokio::task::spawn_blocking(move || repo.resolve(&rev))
            .await
            .map_err(anyhow::Error::from)?;
        let commit = match resolved {
            Ok(r) => r.commit,
            // Deleted again, or never reached the repository gantry reads.
            Err(_) => {
                return Ok(nothing(
                    given,
                    String::new(),
                    format!("tag `{tag}` is not in {}", project.repo),
                ));
            }
        };
        let order = Order::tag(&project.name, &tag, &commit, "webhook");
        self.queue_once(project, order, String::new()).await
    }

    /// A pull request opened or updated: a run of its head commit when it targets a watched
    /// branch. The commit is read from the mirror, where forges publish it
    /// (`refs/pull/N/head`, `refs/merge-requests/N/head`) even for a fork's.
    async fn pull_request(
        &self,
        project: &ProjectConfig,
        pr: PullRequestEvent,
        commit: String,
    ) -> Result<TriggerOutcome, ControlError> {
        let repo = self
            .fetch_mirror(project)
            .await
            .map_err(|e| unavailable(project, e))?;
        let default = repo.default_branch();
        if !self.watches(project, &pr.base, default.as_deref()) {
            let reason = format!(
                "pull request #{} targets `{}`, which is not watched",
                pr.number, pr.base
            );
            return Ok(nothing(commit, String::new(), reason));
        }
        let (probe, id) = (repo.clone(), commit.clone());
        let present = tokio::task::spawn_blocking(move || probe.has_commit(&id))
            .await
            .map_err(anyhow::Error::from)?;
        if !present {
            return Err(ControlError::conflict(format!(
                "commit {commit} of pull request #{} is not in {} after a fetch: forges publish it as refs/pull/{n}/head (GitHub, Gitea, Forgejo) or refs/merge-requests/{n}/head (GitLab)",
                pr.number,
                project.repo,
                n = pr.number
            )));
        }
        let order = Order::pull_request(&project.name, &pr, &commit);
        self.queue_once(project, order, String::new()).await
    }

    async fn manual(
        &self,
        project: &ProjectConfig,
        request: TriggerRequest,
    ) -> Result<TriggerOutcome, ControlError> {
        if request.vars.len() > vars::MAX_GIVEN {
            return Err(ControlError::bad_request(format!(
                "{} variables given; at most {}",
                request.vars.len(),
                vars::MAX_GIVEN
            )));
        }
        for (name, value) in &request.vars {
            vars::check_given(name, value).map_err(ControlError::bad_request)?;
        }
        let repo = self
            .fetch_mirror(project)
            .await
            .map_err(|e| unavailable(project, e))?;
        let first_literal = project.branches.iter().find(|b| !b.contains('*')).cloned();
        let branch = match (&request.branch, first_literal) {
            (Some(b), _) => b.clone(),
            (None, Some(b)) => b,
            (None, None) => repo.default_branch().ok_or_else(|| {
                ControlError::bad_request(
                    "the repository has no default branch: name one with `branch`",
                )
            })?,
        };
        let rev = request.rev.clone().unwrap_or_else(|| branch.clone());
        let resolved = tokio::task::spawn_blocking(move || repo.resolve(&rev))
            .await
            .map_err(anyhow::Error::from)?
            .map_err(|e| ControlError::bad_request(format!("{e:#}")))?;
        let order = Order {
            branch: Some(branch.clone()),
            commit: resolved.commit.clone(),
            trigger: "manual",
            event: TriggerEvent::Manual,
            vars: request.vars,
            key: None,
        };
        let run = self.enqueue(project, order).await?;
        Ok(TriggerOutcome {
            queued: run.is_some(),
            run,
            commit: resolved.commit,
            branch,
            reason: None,
        })
    }
}
