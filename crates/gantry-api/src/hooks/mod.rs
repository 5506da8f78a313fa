//! Webhooks: `POST /hooks/{project}` with a GitHub, GitLab, Gitea/Forgejo or plain
//! `{"ref", "after"}` payload. Pushes of branches and tags start runs of the project's watched
//! branches and tags; pull (merge) request deliveries start runs of their head commit (event
//! `pull_request`); every other event (issues, `workflow_run`, …) is answered 200 "ignored" by
//! its event header and starts nothing. Authenticated by the project's secret only: an
//! HMAC-SHA256 of the body (GitHub `X-Hub-Signature-256`, Gitea `X-Gitea-Signature`, Forgejo
//! `X-Forgejo-Signature`, or gantry's `X-Gantry-Signature`), or GitLab's `X-Gitlab-Token`. Bad
//! or missing: 401 and nothing starts. Comparisons are constant-time.

mod payloads;

use crate::error::ApiError;
use crate::state::{AppState, TriggerRequest, TriggerSource};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hmac::{Hmac, KeyInit, Mac};
use payloads::{PullAction, Pushed, Shape};
use serde_json::{Value, json};
use sha2::Sha256;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn hmac_ok(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which sender signed the request, if the signature holds.
fn verify(headers: &HeaderMap, secret: &[u8], body: &[u8]) -> Result<&'static str, &'static str> {
    if let Some(sig) = header(headers, "x-hub-signature-256") {
        let hex = sig
            .strip_prefix("sha256=")
            .ok_or("X-Hub-Signature-256 must start with sha256=")?;
        return if hmac_ok(secret, body, hex) {
            Ok("github")
        } else {
            Err("bad signature")
        };
    }
    for (name, sender) in [
        ("x-gitea-signature", "gitea"),
        ("x-forgejo-signature", "forgejo"),
        ("x-gantry-signature", "plain"),
    ] {
        if let Some(sig) = header(headers, name) {
            let hex = sig.strip_prefix("sha256=").unwrap_or(sig);
            return if hmac_ok(secret, body, hex) {
                Ok(sender)
            } else {
                Err("bad signature")
            };
        }
    }
    if let Some(token) = header(headers, "x-gitlab-token") {
        return if constant_time_eq(token.as_bytes(), secret) {
            Ok("gitlab")
        } else {
            Err("bad token")
        };
    }
    Err("missing signature")
}

/// What a delivery is, by its event header (GitHub `X-GitHub-Event`, Gitea `X-Gitea-Event`,
/// Forgejo `X-Forgejo-Event`, GitLab `X-Gitlab-Event`), never by the shape of its body: a
/// `workflow_run` whose body carries a `ref` and an `after` is still not a push.
#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    /// A push (of a branch or a tag), or a plain `{"ref", "after"}` delivery without an event
    /// header.
    Push,
    /// A pull (merge) request event, in the shape of its forge.
    PullRequest(Shape),
    /// The forge checking the hook.
    Ping,
    /// Any other event, by the name the forge gave it.
    Other(String),
}

impl Delivery {
    fn of(headers: &HeaderMap) -> Self {
        let event = [
            "x-github-event",
            "x-forgejo-event",
            "x-gitea-event",
            "x-gitlab-event",
        ]
        .into_iter()
        .find_map(|name| header(headers, name).map(|v| (name, v.trim())));
        match event {
            None | Some((_, "push" | "Push Hook" | "Tag Push Hook")) => Delivery::Push,
            Some((_, "ping")) => Delivery::Ping,
            Some(("x-gitlab-event", "Merge Request Hook")) => Delivery::PullRequest(Shape::GitLab),
            Some((name, "pull_request")) if name != "x-gitlab-event" => {
                Delivery::PullRequest(Shape::GitHub)
            }
            Some((_, other)) => Delivery::Other(other.chars().take(100).collect()),
        }
    }
}

pub async fn receive(
    State(state): State<AppState>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let result = handle(&state, &project, &headers, &body).await;
    let label = match &result {
        Ok((StatusCode::CREATED, _)) => "queued",
        Ok(_) => "ignored",
        Err(e) if e.status == StatusCode::UNAUTHORIZED => "unauthorized",
        Err(_) => "error",
    };
    state.metrics.webhook(label);
    result
}

async fn handle(
    state: &AppState,
    project: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let secret = state.control.webhook_secret(project)?;
    let Some(secret) = secret else {
        return Err(ApiError::unauthorized(format!(
            "project `{project}` takes no webhooks: set webhook_secret_env in its config"
        )));
    };
    let sender = verify(headers, secret.expose().as_bytes(), body)
        .map_err(|why| ApiError::unauthorized(format!("webhook refused: {why}")))?;
    let delivery = Delivery::of(headers);
    let ignored = |event: &str, reason: String| {
        // Answered 2xx so that the forge does not list it as a failed delivery.
        Ok((
            StatusCode::OK,
            Json(json!({ "queued": false, "ignored": true, "event": event, "reason": reason })),
        ))
    };
    let shape = match delivery {
        Delivery::Ping => {
            return Ok((StatusCode::OK, Json(json!({ "ok": true, "event": "ping" }))));
        }
        Delivery::Other(event) => {
            let reason =
                format!("`{event}` events start nothing: gantry runs pushes and pull requests");
            return ignored(&event, reason);
        }
        Delivery::PullRequest(shape) => Some(shape),
        Delivery::Push => None,
    };
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let (branch, rev, source) = match shape {
        Some(shape) => {
            match payloads::pull_request(&payload, shape).map_err(ApiError::bad_request)? {
                PullAction::Run { pr, commit } => (None, commit, TriggerSource::PullRequest(pr)),
                PullAction::Ignore(reason) => return ignored("pull_request", reason),
            }
        }
        None => match payloads::pushed(&payload).map_err(ApiError::bad_request)? {
            Pushed::Branch { branch, commit } => (Some(branch), commit, TriggerSource::Webhook),
            Pushed::Tag { tag, commit } => (None, commit, TriggerSource::Tag(tag)),
            Pushed::Deleted => {
                return Ok((
                    StatusCode::OK,
                    Json(json!({ "queued": false, "reason": "the branch or tag was deleted" })),
                ));
            }
            Pushed::Other(git_ref) => {
                return Ok((
                    StatusCode::OK,
                    Json(
                        json!({ "queued": false, "reason": format!("`{git_ref}` is not a branch or a tag") }),
                    ),
                ));
            }
        },
    };
    let outcome = state
        .control
        .trigger(TriggerRequest {
            project: project.to_string(),
            branch,
            rev: Some(rev),
            source,
            vars: Default::default(),
        })
        .await?;
    let status = outcome.status();
    Ok((
        status,
        Json(
            json!({ "queued": outcome.queued, "run": outcome.run, "commit": outcome.commit, "branch": outcome.branch, "reason": outcome.reason, "sender": sender }),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_told_apart_by_their_event_header() {
        let cases: &[(&[(&str, &str)], Delivery)] = &[
            (&[], Delivery::Push),
            (&[("x-github-event", "push")], Delivery::Push),
            (&[("x-github-event", "ping")], Delivery::Ping),
            (
                &[("x-github-event", "pull_request")],
                Delivery::PullRequest(Shape::GitHub),
            ),
            (
                &[("x-github-event", "pull_request_review")],
                Delivery::Other("pull_request_review".into()),
            ),
            (
                &[("x-github-event", "workflow_run")],
                Delivery::Other("workflow_run".into()),
            ),
            (&[("x-gitlab-event", "Push Hook")], Delivery::Push),
            (
                &[("x-gitlab-event", "Merge Request Hook")],
                Delivery::PullRequest(Shape::GitLab),
            ),
            (&[("x-gitlab-event", "Tag Push Hook")], Delivery::Push),
            (
                &[("x-gitlab-event", "Note Hook")],
                Delivery::Other("Note Hook".into()),
            ),
            (&[("x-gitea-event", "push")], Delivery::Push),
            (
                &[
                    ("x-forgejo-event", "pull_request"),
                    ("x-gitea-event", "pull_request"),
                ],
                Delivery::PullRequest(Shape::GitHub),
            ),
            (
                &[("x-forgejo-event", "push"), ("x-gitea-event", "push")],
                Delivery::Push,
            ),
        ];
        for (given, want) in cases {
            let mut h = HeaderMap::new();
            for (k, v) in *given {
                h.insert(*k, v.parse().unwrap());
            }
            assert_eq!(&Delivery::of(&h), want, "{given:?}");
        }
    }

    #[test]
    fn github_documented_test_vector() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let sig = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(hmac_ok(secret, body, sig));
        assert!(!hmac_ok(secret, b"Hello, World?", sig));
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={sig}").parse().unwrap(),
        );
        assert_eq!(verify(&h, secret, body), Ok("github"));
        let mut h = HeaderMap::new();
        h.insert(
            "x-gitlab-token",
            "It's a Secret to Everybody".parse().unwrap(),
        );
        assert_eq!(verify(&h, secret, body), Ok("gitlab"));
        assert_eq!(
            verify(&HeaderMap::new(), secret, body),
            Err("missing signature")
        );
    }
}
