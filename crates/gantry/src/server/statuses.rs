//! Commit statuses: each run's state — pending when it is queued and while it runs, then
//! success or failure — posted to its project's forge (`[projects.status]`: GitHub's, GitLab's
//! or Gitea/Forgejo's commit status API) with a link to the run. Posts of one project go out in
//! order, one at a time, so that a forge never shows an older state over a newer one; a post
//! that fails is tried again (four tries in all, 1 s, 2 s and 4 s apart) and then logged. It never
//! fails or holds up the run.

use gantry_config::server::{Forge, ProjectConfig, StatusConfig};
use gantry_model::{RunStatus, SecretValue};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Running,
    Finished(RunStatus),
}

/// One status post, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPost {
    pub url: String,
    /// The header carrying the token, and its value.
    pub auth: (&'static str, String),
    pub body: Value,
}

/// The forge's name for `phase`, and a description of it.
fn state(forge: Forge, phase: Phase) -> (&'static str, &'static str) {
    use RunStatus::*;
    match (forge, phase) {
        (Forge::GitLab, Phase::Queued) => ("pending", "queued"),
        (Forge::GitLab, Phase::Running) => ("running", "running"),
        (_, Phase::Queued) => ("pending", "queued"),
        (_, Phase::Running) => ("pending", "running"),
        (_, Phase::Finished(Succeeded)) => ("success", "succeeded"),
        (Forge::GitLab, Phase::Finished(Cancelled)) => ("canceled", "cancelled"),
        (Forge::GitLab, Phase::Finished(_)) => ("failed", "failed"),
        (_, Phase::Finished(Cancelled)) => ("error", "cancelled"),
        (_, Phase::Finished(Interrupted)) => ("error", "interrupted"),
        (_, Phase::Finished(_)) => ("failure", "failed"),
    }
}

/// The request that tells `cfg`'s forge that the run at `link` of `commit` is at `phase`.
pub fn request(
    cfg: &StatusConfig,
    token: &str,
    commit: &str,
    phase: Phase,
    link: &str,
) -> anyhow::Result<StatusPost> {
    let (state, said) = state(cfg.forge, phase);
    let description = format!("gantry: {said}");
    let mut url = reqwest::Url::parse(&cfg.api_url)?;
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("{} cannot take a path", cfg.api_url))?;
        path.pop_if_empty();
        match cfg.forge {
            // The project's path is one segment, its slashes escaped.
            Forge::GitLab => path.extend(["projects", cfg.repo.as_str(), "statuses", commit]),
            Forge::GitHub | Forge::Gitea => path
                .push("repos")
                .extend(cfg.repo.split('/'))
                .extend(["statuses", commit]),
        };
    }
    let (auth, body) = match cfg.forge {
        Forge::GitHub => (
            ("authorization", format!("Bearer {token}")),
            json!({ "state": state, "target_url": link, "description": description, "context": cfg.context }),
        ),
        Forge::Gitea => (
            ("authorization", format!("token {token}")),
            json!({ "state": state, "target_url": link, "description": description, "context": cfg.context }),
        ),
        Forge::GitLab => (
            ("private-token", token.to_string()),
            json!({ "state": state, "target_url": link, "description": description, "name": cfg.context }),
        ),
    };
    Ok(StatusPost {
        url: url.to_string(),
        auth,
        body,
    })
}

struct Post {
    commit: String,
    run: i64,
    phase: Phase,
}

/// The status lanes of a server: one task per project that posts statuses.
#[derive(Default)]
pub struct Statuses {
    lanes: HashMap<String, mpsc::UnboundedSender<Post>>,
}

/// Tries of one post, and the waits between them.
const TRIES: u32 = 4;

impl Statuses {
    /// A lane for each project with a `status` table. Needs a tokio runtime. `base` is the
    /// server's URL: runs are linked as `{base}/ui/runs/{id}`.
    pub fn start(projects: &[ProjectConfig], base: &str) -> Self {
        let mut lanes = HashMap::new();
        for p in projects {
            let Some(cfg) = p.status.clone() else {
                continue;
            };
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(lane(p.name.clone(), cfg, base.to_string(), rx));
            lanes.insert(p.name.clone(), tx);
        }
        Self { lanes }
    }

    /// Posts (in the background) that run `run` of `project` at `commit` is at `phase`.
    pub fn post(&self, project: &str, run: i64, commit: &str, phase: Phase) {
        if let Some(lane) = self.lanes.get(project) {
            let _ = lane.send(Post {
                commit: commit.to_string(),
                run,
                phase,
            });
        }
    }
}

async fn lane(
    project: String,
    cfg: StatusConfig,
    base: String,
    mut posts: mpsc::UnboundedReceiver<Post>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(project, error = %e, "commit statuses cannot be posted");
            return;
        }
    };
    while let Some(post) = posts.recv().await {
        // Read at each post, so that a rotated token is used without a restart.
        let token = SecretValue::new(std::env::var(&cfg.token_env).unwrap_or_default());
        let link = format!("{base}/ui/runs/{}", post.run);
        let req = match request(&cfg, token.expose(), &post.commit, post.phase, &link) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(project, run = post.run, error = %format!("{e:#}"), "commit status not posted");
                continue;
            }
        };
        send(&client, &project, post.run, &req).await;
    }
}

/// Sends one post, trying again after network errors, 429 and 5xx; another 4xx (a bad token,
/// an unknown repository) is logged at once: trying again would not help.
async fn send(client: &reqwest::Client, project: &str, run: i64, req: &StatusPost) {
    let state = req.body["state"].as_str().unwrap_or("");
    for attempt in 1..=TRIES {
        let sent = client
            .post(&req.url)
            .header(req.auth.0, &req.auth.1)
            .header("accept", "application/json")
            .json(&req.body)
            .send()
            .await;
        let retry = match sent {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(project, run, state, "commit status posted");
                return;
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                format!("the forge answered {}", r.status())
            }
            Ok(r) => {
                tracing::warn!(project, run, state, url = %req.url, status = %r.status(), "the forge refused the commit status");
                return;
            }
            // Without the URL's query or the token: reqwest's error names the URL only.
            Err(e) => format!("{e}"),
        };
        if attempt == TRIES {
            tracing::warn!(project, run, state, url = %req.url, error = %retry, "commit status not posted after {TRIES} tries");
            return;
        }
        tracing::info!(project, run, state, attempt, error = %retry, "commit status not posted; trying again");
        tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(forge: Forge, api: &str, repo: &str) -> StatusConfig {
        StatusConfig {
            forge,
            api_url: api.into(),
            repo: repo.into(),
            token_env: "T".into(),
            token_env_at: String::new(),
            context: "gantry".into(),
        }
    }

    #[test]
    fn each_forge_gets_its_own_request() {
        let c = "c".repeat(40);
        let link = "http://ci.example/ui/runs/7";
        let gh = request(
            &cfg(Forge::GitHub, "https://api.github.com", "acme/web"),
            "tok",
            &c,
            Phase::Queued,
            link,
        )
        .unwrap();
        assert_eq!(
            gh.url,
            format!("https://api.github.com/repos/acme/web/statuses/{c}")
        );
        assert_eq!(gh.auth, ("authorization", "Bearer tok".to_string()));
        assert_eq!(
            gh.body,
            json!({"state": "pending", "target_url": link, "description": "gantry: queued", "context": "gantry"})
        );
        let gl = request(
            &cfg(Forge::GitLab, "https://gitlab.com/api/v4/", "group/sub/app"),
            "tok",
            &c,
            Phase::Running,
            link,
        )
        .unwrap();
        assert_eq!(
            gl.url,
            format!("https://gitlab.com/api/v4/projects/group%2Fsub%2Fapp/statuses/{c}")
        );
        assert_eq!(gl.auth, ("private-token", "tok".to_string()));
        assert_eq!(gl.body["state"], "running");
        assert_eq!(gl.body["name"], "gantry");
        let gt = request(
            &cfg(Forge::Gitea, "https://code.example/api/v1", "acme/api"),
            "tok",
            &c,
            Phase::Finished(RunStatus::Failed),
            link,
        )
        .unwrap();
        assert_eq!(
            gt.url,
            format!("https://code.example/api/v1/repos/acme/api/statuses/{c}")
        );
        assert_eq!(gt.auth, ("authorization", "token tok".to_string()));
        assert_eq!(gt.body["state"], "failure");
    }

    #[test]
    fn states_as_a_table() {
        use Forge::*;
        use RunStatus::*;
        let cases = [
            (GitHub, Phase::Queued, "pending"),
            (GitHub, Phase::Running, "pending"),
            (GitHub, Phase::Finished(Succeeded), "success"),
            (GitHub, Phase::Finished(Failed), "failure"),
            (GitHub, Phase::Finished(Cancelled), "error"),
            (GitHub, Phase::Finished(Interrupted), "error"),
            (Gitea, Phase::Finished(Succeeded), "success"),
            (Gitea, Phase::Finished(Failed), "failure"),
            (GitLab, Phase::Queued, "pending"),
            (GitLab, Phase::Running, "running"),
            (GitLab, Phase::Finished(Succeeded), "success"),
            (GitLab, Phase::Finished(Failed), "failed"),
            (GitLab, Phase::Finished(Cancelled), "canceled"),
        ];
        for (forge, phase, want) in cases {
            assert_eq!(state(forge, phase).0, want, "{forge:?} {phase:?}");
        }
    }
}
