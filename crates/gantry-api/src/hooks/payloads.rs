//! What a delivery's body says: the ref and commit of a push (a branch or a tag), or the pull
//! request of a pull request event, in the shapes GitHub, Gitea/Forgejo (GitHub's shape) and
//! GitLab send. Tested with the forges' documented sample payloads (`samples/`).

use crate::state::PullRequestEvent;
use serde_json::Value;

/// Which shape a pull request delivery has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// GitHub's, which Gitea and Forgejo follow.
    GitHub,
    GitLab,
}

/// What a push delivery moved.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    Branch {
        branch: String,
        commit: String,
    },
    Tag {
        tag: String,
        commit: String,
    },
    /// The ref was deleted: nothing to run.
    Deleted,
    /// Neither a branch nor a tag (`refs/notes/…`).
    Other(String),
}

/// The ref and commit of a push body (`ref` and `after`, or GitLab's `checkout_sha`).
pub(super) fn pushed(payload: &Value) -> Result<Pushed, String> {
    let git_ref = payload["ref"].as_str().ok_or("the payload has no `ref`")?;
    // GitLab's `checkout_sha` is the commit (its `after` of a tag is the tag object).
    let after = payload["checkout_sha"]
        .as_str()
        .or(payload["after"].as_str())
        .ok_or("the payload has no `after` commit")?;
    if after.chars().all(|c| c == '0') {
        return Ok(Pushed::Deleted);
    }
    let (kind, name) = if let Some(b) = git_ref.strip_prefix("refs/heads/") {
        ("branch", b)
    } else if let Some(t) = git_ref.strip_prefix("refs/tags/") {
        ("tag", t)
    } else {
        return Ok(Pushed::Other(git_ref.chars().take(200).collect()));
    };
    full_commit(after)?;
    Ok(match kind {
        "branch" => Pushed::Branch {
            branch: name.to_string(),
            commit: after.to_string(),
        },
        _ => Pushed::Tag {
            tag: name.to_string(),
            commit: after.to_string(),
        },
    })
}

/// A full commit id only: the run's key holds the commit, and an abbreviated id would not
/// match the one the poller sees for the same commit.
fn full_commit(id: &str) -> Result<(), String> {
    if matches!(id.len(), 40 | 64) && id.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a full commit id (40 or 64 hex digits)",
            id.chars().take(80).collect::<String>()
        ))
    }
}

/// What a pull request delivery asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PullAction {
    /// Opened, reopened or given new commits: run `commit`, its head.
    Run {
        pr: PullRequestEvent,
        commit: String,
    },
    /// Closed, labelled, reviewed, …: nothing to run, and why.
    Ignore(String),
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Result<&'a str, String> {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .ok_or_else(|| format!("the payload has no `{}`", path.join(".")))
}

fn number(v: &Value, path: &[&str]) -> Result<u64, String> {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .ok_or_else(|| format!("the payload has no number `{}`", path.join(".")))
}

/// Reads a pull (merge) request delivery of `shape`.
pub(super) fn pull_request(payload: &Value, shape: Shape) -> Result<PullAction, String> {
    let (action, runs) = match shape {
        Shape::GitHub => (
            payload["action"].as_str().unwrap_or(""),
            // GitHub says `synchronize`, Gitea and Forgejo `synchronized`.
            &[
                "opened",
                "reopened",
                "synchronize",
                "synchronized",
                "ready_for_review",
            ][..],
        ),
        Shape::GitLab => (
            payload["object_attributes"]["action"]
                .as_str()
                .unwrap_or(""),
            &["open", "reopen", "update"][..],
        ),
    };
    if !runs.contains(&action) {
        let action = if action.is_empty() { "(none)" } else { action };
        return Ok(PullAction::Ignore(format!(
            "pull request action `{}` starts nothing: runs start on {}",
            action.chars().take(60).collect::<String>(),
            runs.join(", ")
        )));
    }
    let (pr, commit) = match shape {
        Shape::GitHub => {
            let p = &payload["pull_request"];
            let head_repo = p["head"]["repo"]["id"].as_u64();
            let base_repo = p["base"]["repo"]["id"].as_u64();
            let pr = PullRequestEvent {
                number: number(payload, &["number"]).or_else(|_| number(p, &["number"]))?,
                base: text(p, &["base", "ref"])?.to_string(),
                head: text(p, &["head", "ref"])?.to_string(),
                // A head repository that is gone (null) is someone else's too.
                fork: head_repo.is_none() || head_repo != base_repo,
            };
            (pr, text(p, &["head", "sha"])?)
        }
        Shape::GitLab => {
            let a = &payload["object_attributes"];
            let source = a["source_project_id"].as_u64();
            let pr = PullRequestEvent {
                number: number(a, &["iid"])?,
                base: text(a, &["target_branch"])?.to_string(),
                head: text(a, &["source_branch"])?.to_string(),
                fork: source.is_none() || source != a["target_project_id"].as_u64(),
            };
            (pr, text(a, &["last_commit", "id"])?)
        }
    };
    full_commit(commit)?;
    Ok(PullAction::Run {
        pr,
        commit: commit.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Value {
        let path = format!("{}/src/hooks/samples/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn the_forges_sample_pull_requests_are_read() {
        let cases = [
            (
                "github-pull_request-opened.json",
                Shape::GitHub,
                (2, "master", "changes", false),
                "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            ),
            (
                "gitlab-merge_request-open.json",
                Shape::GitLab,
                (1, "master", "ms-viewport", false),
                "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            ),
            (
                "gitea-pull_request-opened.json",
                Shape::GitHub,
                (1, "master", "feature/readme", true),
                "4a5a8c3b2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a",
            ),
        ];
        for (file, shape, (number, base, head, fork), commit) in cases {
            let want = PullAction::Run {
                pr: PullRequestEvent {
                    number,
                    base: base.into(),
                    head: head.into(),
                    fork,
                },
                commit: commit.into(),
            };
            assert_eq!(pull_request(&sample(file), shape), Ok(want), "{file}");
        }
    }

    #[test]
    fn pull_request_actions_and_forks() {
        let mut gh = sample("github-pull_request-opened.json");
        for (action, runs) in [
            ("synchronize", true),
            ("reopened", true),
            ("closed", false),
            ("labeled", false),
            ("edited", false),
        ] {
            gh["action"] = action.into();
            let got = pull_request(&gh, Shape::GitHub).unwrap();
            assert_eq!(matches!(got, PullAction::Run { .. }), runs, "{action}");
        }
        gh["action"] = "opened".into();
        gh["pull_request"]["head"]["repo"]["id"] = 5.into();
        let PullAction::Run { pr, .. } = pull_request(&gh, Shape::GitHub).unwrap() else {
            panic!("runs")
        };
        assert!(pr.fork, "another repository's branch");
        gh["pull_request"]["head"]["repo"] = Value::Null;
        let PullAction::Run { pr, .. } = pull_request(&gh, Shape::GitHub).unwrap() else {
            panic!("runs")
        };
        assert!(pr.fork, "a deleted head repository");

        let mut gl = sample("gitlab-merge_request-open.json");
        gl["object_attributes"]["action"] = "merge".into();
        assert!(matches!(
            pull_request(&gl, Shape::GitLab),
            Ok(PullAction::Ignore(_))
        ));
        gl["object_attributes"]["action"] = "update".into();
        gl["object_attributes"]["source_project_id"] = 15.into();
        let PullAction::Run { pr, .. } = pull_request(&gl, Shape::GitLab).unwrap() else {
            panic!("runs")
        };
        assert!(pr.fork);
        gl["object_attributes"]["last_commit"]["id"] = "da15608".into();
        assert!(
            pull_request(&gl, Shape::GitLab)
                .unwrap_err()
                .contains("not a full commit id")
        );
        assert_eq!(
            pull_request(&serde_json::json!({"action": "opened"}), Shape::GitHub),
            Err("the payload has no number `number`".into())
        );
    }

    #[test]
    fn pushes_of_branches_and_tags() {
        let c = "a".repeat(40);
        let push = |r: &str, after: &str| serde_json::json!({"ref": r, "after": after});
        assert_eq!(
            pushed(&push("refs/heads/main", &c)),
            Ok(Pushed::Branch {
                branch: "main".into(),
                commit: c.clone()
            })
        );
        assert_eq!(
            pushed(&push("refs/tags/v1.0.0", &c)),
            Ok(Pushed::Tag {
                tag: "v1.0.0".into(),
                commit: c.clone()
            })
        );
        assert_eq!(
            pushed(&push("refs/tags/v1.0.0", &"0".repeat(40))),
            Ok(Pushed::Deleted)
        );
        assert_eq!(
            pushed(&push("refs/notes/x", &c)),
            Ok(Pushed::Other("refs/notes/x".into()))
        );
        assert!(pushed(&push("refs/heads/main", "abc")).is_err());
        // GitLab's Tag Push Hook (its documented sample) names the commit in `checkout_sha`.
        assert_eq!(
            pushed(&sample("gitlab-tag_push.json")),
            Ok(Pushed::Tag {
                tag: "v1.0.0".into(),
                commit: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7".into()
            })
        );
        let mut deleted = sample("gitlab-tag_push.json");
        deleted["after"] = "0".repeat(40).into();
        deleted["checkout_sha"] = serde_json::Value::Null;
        assert_eq!(pushed(&deleted), Ok(Pushed::Deleted));
    }
}
