//! What users and alerts ask of a running deployment — a canary's promote, abort, pause and
//! resume; an alarm — through any server. The server driving the environment carries it out
//! itself. A server that does not drive it (several servers on one store) writes the request
//! to the store; the driver's loop takes it within a second, carries it out the same way, and
//! writes its answer, which the asking server reads and returns as its own.

use super::canary::Msg;
use super::*;
use gantry_engine::canary::CanaryAction;

/// How long a server waits for the driver's answer before it says it has none yet.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// What may be asked of an environment's driver through another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Asked {
    Canary(CanaryAction),
    Alarm(String),
}

impl Asked {
    /// As the store keeps it.
    fn text(&self) -> String {
        match self {
            Asked::Canary(CanaryAction::Promote { full: false }) => "promote".into(),
            Asked::Canary(CanaryAction::Promote { full: true }) => "promote --full".into(),
            Asked::Canary(CanaryAction::Abort) => "abort".into(),
            Asked::Canary(CanaryAction::Pause) => "pause".into(),
            Asked::Canary(CanaryAction::Resume) => "resume".into(),
            Asked::Alarm(name) => format!("alarm {name}"),
        }
    }

    fn parse(text: &str) -> Option<Asked> {
        Some(match text {
            "promote" => Asked::Canary(CanaryAction::Promote { full: false }),
            "promote --full" => Asked::Canary(CanaryAction::Promote { full: true }),
            "abort" => Asked::Canary(CanaryAction::Abort),
            "pause" => Asked::Canary(CanaryAction::Pause),
            "resume" => Asked::Canary(CanaryAction::Resume),
            _ => Asked::Alarm(text.strip_prefix("alarm ")?.to_string()),
        })
    }
}

impl DeployManager {
    /// `gantry promote/abort/pause/resume ENV`: passes the action to the running canary, here
    /// or on the server that drives the environment.
    pub async fn canary_action(
        &self,
        project: &str,
        environment: &str,
        action: CanaryAction,
        by: &str,
    ) -> Result<String> {
        if let Some(driver) = self.driven_by_other(project, environment).await? {
            let asked = Asked::Canary(action);
            return self.ask(project, environment, &driver, &asked, by).await;
        }
        self.canary_action_here(project, environment, action, by)
            .await
    }

    async fn canary_action_here(
        &self,
        project: &str,
        environment: &str,
        action: CanaryAction,
        by: &str,
    ) -> Result<String> {
        let none_running = || {
            if action == CanaryAction::Abort {
                // Aborting what already ended changes nothing: a second abort is a no-op.
                Ok(format!(
                    "{project}/{environment} has no canary running; nothing to abort"
                ))
            } else {
                Err(DeployError::Conflict(format!(
                    "{project}/{environment} has no canary running"
                )))
            }
        };
        let Some(env) = self.known_env(project, environment) else {
            return none_running();
        };
        let done = {
            let mut slot = env.canary.lock().expect("canary");
            let Some(handle) = slot.as_mut() else {
                drop(slot);
                return none_running();
            };
            handle
                .tx
                .send(Msg::Action(action, by.to_string()))
                .map_err(|_| DeployError::Conflict("the canary has just ended".into()))?;
            matches!(action, CanaryAction::Abort)
                .then(|| handle.done.take())
                .flatten()
        };
        if let Some(done) = done {
            let _ = done.await;
            return Ok(format!(
                "the canary of {project}/{environment} was aborted; stable serves everyone"
            ));
        }
        Ok(format!(
            "{action:?} passed to the canary of {project}/{environment}"
        ))
    }

    /// An alarm about `environment` (of `project`, or of any project with that environment):
    /// a firing alarm aborts a running canary, or rolls back a release in its bake — here, or
    /// on the server that drives the environment. Returns what it did, per environment.
    pub async fn alarm(
        &self,
        project: Option<&str>,
        environment: &str,
        name: &str,
    ) -> Result<Vec<String>> {
        let here: Vec<Arc<Env>> = self
            .envs
            .lock()
            .expect("envs")
            .values()
            .filter(|e| e.name == environment && project.is_none_or(|p| p == e.project))
            .cloned()
            .collect();
        let now = now_millis();
        let elsewhere: Vec<(String, String)> = self
            .store
            .env_drivers()
            .await?
            .into_iter()
            .filter(|d| {
                d.environment == environment
                    && project.is_none_or(|p| p == d.project)
                    && d.owner != self.owner
                    && d.expires_at >= now
                    && !here.iter().any(|e| e.project == d.project)
            })
            .map(|d| (d.project, d.owner))
            .collect();
        if here.is_empty() && elsewhere.is_empty() {
            return Err(DeployError::NotFound(format!(
                "no environment `{environment}` runs on this server or on any server sharing its state"
            )));
        }
        if project.is_none() && here.len() + elsewhere.len() > 1 {
            // One alert must not act on every project that happens to name an environment
            // alike: the caller says which.
            let mut projects: Vec<&str> = here.iter().map(|e| e.project.as_str()).collect();
            projects.extend(elsewhere.iter().map(|(p, _)| p.as_str()));
            projects.sort();
            return Err(DeployError::Conflict(format!(
                "environment `{environment}` runs for projects {}: post the alarm to /api/projects/PROJECT/environments/{environment}/alarm",
                projects.join(", ")
            )));
        }
        let mut done = Vec::new();
        for env in here {
            done.push(self.alarm_here(&env, name).await?);
        }
        for (p, driver) in elsewhere {
            let asked = Asked::Alarm(name.to_string());
            done.push(self.ask(&p, environment, &driver, &asked, "alarm").await?);
        }
        Ok(done)
    }

    async fn alarm_here(&self, env: &Env, name: &str) -> Result<String> {
        let sent_to_canary = {
            let slot = env.canary.lock().expect("canary");
            slot.as_ref()
                .is_some_and(|h| h.tx.send(Msg::Alarm(name.to_string())).is_ok())
        };
        let what = if sent_to_canary {
            "aborting the canary"
        } else if env.alarms.send(name.to_string()).is_ok() {
            "rolling back the release in its bake"
        } else {
            "nothing to roll back (no canary and no bake in progress); recorded"
        };
        let history = self.store.releases(&env.project, &env.name).await?;
        if let Some(live) = gantry_engine::release::live(&history) {
            let _ = self
                .store
                .add_release_event(
                    live.id,
                    "alarm",
                    &format!("alarm {name} firing: {what}"),
                    now_millis(),
                )
                .await;
        }
        Ok(format!("{}/{}: {what}", env.project, env.name))
    }

    /// The server that drives the environment, when it is another one whose lease holds.
    pub(super) async fn driven_by_other(
        &self,
        project: &str,
        environment: &str,
    ) -> Result<Option<String>> {
        if self.drives(project, environment) {
            return Ok(None);
        }
        let now = now_millis();
        Ok(self
            .store
            .env_drivers()
            .await?
            .into_iter()
            .find(|d| d.project == project && d.environment == environment)
            .filter(|d| d.owner != self.owner && d.expires_at >= now)
            .map(|d| d.owner))
    }

    /// Asks `driver` to carry out `asked` and returns its answer as this server's own.
    async fn ask(
        &self,
        project: &str,
        environment: &str,
        driver: &str,
        asked: &Asked,
        by: &str,
    ) -> Result<String> {
        let id = self
            .store
            .ask_driver(project, environment, &asked.text(), by, now_millis())
            .await?;
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Some(answer) = self.store.env_request(id).await?.and_then(|r| r.answer) else {
                continue;
            };
            let _ = self.store.forget_env_request(id).await;
            return match answer {
                (true, text) => Ok(format!("{text} (by {driver}, which drives it)")),
                (false, text) => Err(DeployError::Conflict(format!(
                    "{text} (said {driver}, which drives it)"
                ))),
            };
        }
        Ok(format!(
            "asked {driver}, which drives {project}/{environment}, to {}; it has not answered within {}s and will carry it out when it can",
            asked.text(),
            ANSWER_WITHIN.as_secs()
        ))
    }

    /// In the drivers' loop: what was asked of the environments this server drives, taken and
    /// carried out each in its own task (an abort waits for its canary to end), then answered.
    pub(super) async fn answer_requests(self: &Arc<Self>) -> anyhow::Result<()> {
        for r in self
            .store
            .take_env_requests(&self.owner, now_millis())
            .await?
        {
            let this = self.clone();
            tokio::spawn(async move {
                let result = match Asked::parse(&r.asked) {
                    Some(Asked::Canary(action)) => {
                        this.canary_action_here(&r.project, &r.environment, action, &r.by)
                            .await
                    }
                    Some(Asked::Alarm(name)) => match this.known_env(&r.project, &r.environment) {
                        Some(env) => this.alarm_here(&env, &name).await,
                        None => Err(DeployError::NotFound(format!(
                            "{}/{} runs nothing here",
                            r.project, r.environment
                        ))),
                    },
                    None => Err(DeployError::Invalid(format!(
                        "`{}` is not something a driver carries out",
                        r.asked
                    ))),
                };
                let (ok, text) = match result {
                    Ok(text) => (true, text),
                    Err(e) => (false, e.to_string()),
                };
                tracing::info!(
                    project = r.project,
                    environment = r.environment,
                    asked = r.asked,
                    by = r.by,
                    "{text}"
                );
                if let Err(e) = this
                    .store
                    .answer_env_request(r.id, ok, &text, now_millis())
                    .await
                {
                    tracing::warn!(error = %format!("{e:#}"), "answering a request");
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_asked_reads_back_as_written() {
        for asked in [
            Asked::Canary(CanaryAction::Promote { full: false }),
            Asked::Canary(CanaryAction::Promote { full: true }),
            Asked::Canary(CanaryAction::Abort),
            Asked::Canary(CanaryAction::Pause),
            Asked::Canary(CanaryAction::Resume),
            Asked::Alarm("HighErrorRate".into()),
        ] {
            assert_eq!(Asked::parse(&asked.text()), Some(asked));
        }
        assert_eq!(Asked::parse("rm -rf /"), None);
        assert_eq!(Asked::parse("alarm"), None);
    }
}
