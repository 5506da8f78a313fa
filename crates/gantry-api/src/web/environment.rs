//! An environment: the live and previous releases, the traffic split, each serving release's
//! request rate, error rate and p99 over the last hour, the canary's step, share and numbers,
//! the release history with its events, and the buttons that act on it — each through a page
//! that names what will happen before it is done.

use super::pages::{Chrome, api_error_page, error_page, respond};
use super::render;
use super::session::Visitor;
use crate::state::AppState;
use crate::types;
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use gantry_engine::canary::CanaryAction;
use gantry_engine::ports::now_millis;
use gantry_model::Role;
use gantry_model::records::ReleaseState;
use serde::Deserialize;

pub struct ReleaseView {
    pub number: i64,
    pub artifact: String,
    pub short: String,
    pub state: String,
    pub run: Option<i64>,
    pub commit: String,
    pub by: String,
    pub when: String,
    pub reason: Option<String>,
    pub events: Vec<(String, String, String)>,
    /// May be rolled back to: kept, and not what serves now.
    pub kept: bool,
}

pub struct ChartView {
    pub release: i64,
    pub role: String,
    pub rate: String,
    pub errors: String,
    pub p99: String,
    pub now: String,
}

pub struct CanaryView {
    pub release: i64,
    pub state: String,
    pub percent: u32,
    pub step: String,
    pub canary: types::Window,
    pub stable: types::Window,
    pub paused: bool,
    pub analysis: String,
}

#[derive(Template)]
#[template(path = "ui/environment.html")]
struct EnvPage {
    chrome: Chrome,
    base: String,
    project: String,
    environment: String,
    status: types::EnvStatus,
    live: Option<ReleaseView>,
    previous: Option<ReleaseView>,
    split: String,
    charts: Vec<ChartView>,
    canary: Option<CanaryView>,
    releases: Vec<ReleaseView>,
    can_deploy: bool,
    done: Option<String>,
    uptime: String,
}

fn base(project: &str, environment: &str) -> String {
    format!(
        "/ui/projects/{}/environments/{}",
        render::url_encode(project),
        render::url_encode(environment)
    )
}

fn release_view(r: &types::Release, events: &[types::ReleaseEvent], now: i64) -> ReleaseView {
    ReleaseView {
        number: r.number,
        artifact: r.artifact.clone(),
        short: render::short_digest(&r.digest),
        state: r.state.to_string(),
        run: r.run_id,
        commit: r
            .commit
            .as_deref()
            .map(|c| c.chars().take(10).collect())
            .unwrap_or_default(),
        by: r.created_by.clone(),
        when: render::ago(r.created_at, now),
        reason: r.reason.clone(),
        events: events
            .iter()
            .map(|e| (render::ago(e.at, now), e.kind.clone(), e.message.clone()))
            .collect(),
        kept: r.retired_at.is_none()
            && !matches!(
                r.state,
                ReleaseState::Live | ReleaseState::Canary | ReleaseState::Deploying
            ),
    }
}

fn window_text(w: &types::Window) -> String {
    let p99 = w
        .p99_ms
        .map_or_else(|| "—".into(), |p| format!("{p:.1} ms"));
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{}, {} ({:.1}%), p99 {p99}",
        plural(w.requests, "request", "requests"),
        plural(w.errors, "error", "errors"),
        w.error_rate * 100.0
    )
}

#[derive(Deserialize, Default)]
pub struct EnvQuery {
    /// What was just done, to say at the top.
    done: Option<String>,
}

pub async fn page_of(
    State(state): State<AppState>,
    visitor: Visitor,
    Path((project, environment)): Path<(String, String)>,
    Query(q): Query<EnvQuery>,
) -> Response {
    let status = match state
        .control
        .environment_status(&project, &environment)
        .await
    {
        Ok(s) => s,
        Err(e) => return api_error_page(e.into()),
    };
    let history = state
        .control
        .releases(&project, &environment)
        .await
        .unwrap_or_default();
    let now = now_millis();
    let find = |n: i64| history.iter().find(|h| h.release.number == n);
    let live = status
        .live
        .as_ref()
        .map(|r| release_view(r, find(r.number).map_or(&[][..], |h| &h.events), now));
    let previous = status.previous.as_ref().map(|r| release_view(r, &[], now));
    let mut shares = Vec::new();
    match (&status.canary, &status.live) {
        (Some(c), Some(l)) => {
            shares.push((
                format!("stable #{}", l.number),
                100 - c.percent.min(100),
                "stable",
            ));
            shares.push((
                format!("canary #{}", c.release),
                c.percent.min(100),
                "canary",
            ));
        }
        (None, Some(l)) => shares.push((format!("#{}", l.number), 100, "stable")),
        _ => {}
    }
    let split = if shares.is_empty() {
        String::new()
    } else {
        render::split_bar(&shares)
    };
    let charts = status
        .traffic
        .iter()
        .map(|t| {
            let s = state.history.series(&project, &environment, t.release);
            let last = |v: &Vec<(f64, f64)>, unit: &str| {
                v.last()
                    .map_or_else(|| "no data yet".into(), |p| format!("{:.1}{unit}", p.1))
            };
            ChartView {
                release: t.release,
                role: t.role.clone(),
                rate: render::sparkline(
                    &s.rate,
                    240,
                    48,
                    "requests per second",
                    &last(&s.rate, "/s"),
                ),
                errors: render::sparkline(&s.errors, 240, 48, "error rate", &last(&s.errors, "%")),
                p99: render::sparkline(&s.p99, 240, 48, "p99 latency", &last(&s.p99, " ms")),
                now: window_text(&t.last_minute),
            }
        })
        .collect();
    let canary = status.canary.as_ref().map(|c| CanaryView {
        release: c.release,
        state: c.state.clone(),
        percent: c.percent,
        step: match c.step {
            Some(s) => format!("step {} of {}", s + 1, c.steps),
            None => "no steps".into(),
        },
        canary: c.canary.clone(),
        stable: c.stable.clone(),
        paused: c.state == "paused",
        analysis: c.analysis.clone(),
    });
    let releases = history
        .iter()
        .map(|h| release_view(&h.release, &h.events, now))
        .collect();
    let uptime = status
        .uptime_ms
        .map_or_else(|| "—".into(), |u| render::duration(u as i64));
    respond(
        StatusCode::OK,
        &EnvPage {
            chrome: Chrome::new(format!("{environment} · {project}"), &visitor, 2000),
            base: base(&project, &environment),
            project,
            environment,
            status,
            live,
            previous,
            split,
            charts,
            canary,
            releases,
            can_deploy: visitor.can_deploy(),
            done: q.done.filter(|d| !d.is_empty()),
            uptime,
        },
    )
}

/// An action the page offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Rollback,
    Promote,
    PromoteFull,
    Pause,
    Resume,
    Abort,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "rollback" => Action::Rollback,
            "promote" => Action::Promote,
            "promote-full" => Action::PromoteFull,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "abort" => Action::Abort,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Action::Rollback => "rollback",
            Action::Promote => "promote",
            Action::PromoteFull => "promote-full",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
    fn button(self) -> &'static str {
        match self {
            Action::Rollback => "Roll back",
            Action::Promote => "Promote",
            Action::PromoteFull => "Promote to everyone",
            Action::Pause => "Pause",
            Action::Resume => "Resume",
            Action::Abort => "Abort",
        }
    }
}

/// What `action` will do, in words, as things stand now.
fn consequence(
    action: Action,
    s: &types::EnvStatus,
    to: Option<&types::Release>,
) -> Result<String, String> {
    let env = format!("{} of {}", s.environment, s.project);
    let name = |r: &types::Release| {
        format!(
            "release #{} ({} {}{})",
            r.number,
            r.artifact,
            render::short_digest(&r.digest),
            r.run_id.map(|r| format!(", run {r}")).unwrap_or_default()
        )
    };
    let live = s.live.as_ref();
    let canary = s.canary.as_ref();
    let need_canary = || canary.ok_or_else(|| format!("{env} has no canary running"));
    Ok(match action {
        Action::Rollback => {
            let from = live.map_or_else(|| "nothing live".into(), name);
            let target = match (to, &s.previous) {
                (Some(t), _) => name(t),
                (None, Some(p)) => format!("the previous healthy release, {}", name(p)),
                (None, None) => "the previous healthy release".into(),
            };
            format!("Users of {env} move from {from} to {target}, at once.")
        }
        Action::Promote => {
            let c = need_canary()?;
            format!(
                "The canary, release #{}, moves from {}% of users to its next step.",
                c.release, c.percent
            )
        }
        Action::PromoteFull => {
            let c = need_canary()?;
            format!(
                "Every user of {env} goes to the canary, release #{}, now (it has {}%).",
                c.release, c.percent
            )
        }
        Action::Pause => {
            let c = need_canary()?;
            format!(
                "The canary, release #{}, stays at {}% of users and analysis waits until resumed.",
                c.release, c.percent
            )
        }
        Action::Resume => {
            let c = need_canary()?;
            format!(
                "The canary, release #{}, goes on from {}% and analysis resumes.",
                c.release, c.percent
            )
        }
        Action::Abort => {
            let c = need_canary()?;
            format!(
                "Every user of {env} goes back to {}; the canary, release #{}, is marked failed.",
                live.map_or_else(|| "the stable release".into(), name),
                c.release
            )
        }
    })
}

#[derive(Template)]
#[template(path = "ui/confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    back: String,
    action: String,
    button: String,
    what: String,
    to: Option<i64>,
    csrf: String,
    danger: bool,
}

#[derive(Deserialize)]
pub struct ConfirmQuery {
    action: String,
    to: Option<i64>,
}

pub async fn confirm(
    State(state): State<AppState>,
    visitor: Visitor,
    Path((project, environment)): Path<(String, String)>,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let Some(action) = Action::parse(&q.action) else {
        return error_page(StatusCode::BAD_REQUEST, "no such action");
    };
    if !visitor.can_deploy() {
        return error_page(
            StatusCode::FORBIDDEN,
            "your token's role may not do this (it needs the deployer role)",
        );
    }
    let status = match state
        .control
        .environment_status(&project, &environment)
        .await
    {
        Ok(s) => s,
        Err(e) => return api_error_page(e.into()),
    };
    let mut to = None;
    if let Some(n) = q.to {
        let history = state
            .control
            .releases(&project, &environment)
            .await
            .unwrap_or_default();
        match history.into_iter().find(|h| h.release.number == n) {
            Some(h) => to = Some(h.release),
            None => {
                return error_page(
                    StatusCode::NOT_FOUND,
                    &format!("{environment} of {project} has no release #{n}"),
                );
            }
        }
    }
    let what = match consequence(action, &status, to.as_ref()) {
        Ok(w) => w,
        Err(why) => return error_page(StatusCode::CONFLICT, &why),
    };
    respond(
        StatusCode::OK,
        &ConfirmPage {
            chrome: Chrome::new(format!("{} {environment}?", action.button()), &visitor, 0),
            back: base(&project, &environment),
            action: action.name().into(),
            button: action.button().into(),
            what,
            to: q.to,
            csrf: visitor.csrf.clone(),
            danger: matches!(action, Action::Rollback | Action::Abort),
        },
    )
}

#[derive(Deserialize)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    action: String,
    to: Option<i64>,
}

pub async fn act(
    State(state): State<AppState>,
    visitor: Visitor,
    Path((project, environment)): Path<(String, String)>,
    Form(form): Form<ActForm>,
) -> Response {
    if let Err(r) = visitor.check(&form.csrf, Role::Deployer) {
        return r.into_response();
    }
    let Some(action) = Action::parse(&form.action) else {
        return error_page(StatusCode::BAD_REQUEST, "no such action");
    };
    let by = format!("token {} (dashboard)", visitor.name);
    let c = &state.control;
    let done = match action {
        Action::Rollback => c
            .rollback(&project, &environment, form.to, &by)
            .await
            .map(|r| format!("Rolled back: release #{} serves now.", r.number)),
        other => {
            let what = match other {
                Action::Promote => CanaryAction::Promote { full: false },
                Action::PromoteFull => CanaryAction::Promote { full: true },
                Action::Pause => CanaryAction::Pause,
                Action::Resume => CanaryAction::Resume,
                _ => CanaryAction::Abort,
            };
            c.canary_action(&project, &environment, what, &by)
                .await
                .map(|d| d.message)
        }
    };
    match done {
        Ok(message) => Redirect::to(&format!(
            "{}?done={}",
            base(&project, &environment),
            render::url_encode(&message)
        ))
        .into_response(),
        Err(e) => api_error_page(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(number: i64) -> types::Release {
        types::Release {
            id: number,
            project: "hello".into(),
            environment: "production".into(),
            number,
            kind: types::ReleaseKind::Deploy,
            source: number,
            artifact: "app".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            run_id: Some(number + 10),
            commit: None,
            created_by: "cli".into(),
            created_at: 0,
            state: ReleaseState::Live,
            reason: None,
            live_at: None,
            ended_at: None,
            retired_at: None,
        }
    }

    #[test]
    fn windows_say_one_request_and_many() {
        let w = |requests, errors| types::Window {
            requests,
            errors,
            error_rate: 0.0,
            p50_ms: None,
            p90_ms: None,
            p99_ms: Some(1.5),
        };
        assert_eq!(
            window_text(&w(1, 1)),
            "1 request, 1 error (0.0%), p99 1.5 ms"
        );
        assert_eq!(
            window_text(&w(2, 0)),
            "2 requests, 0 errors (0.0%), p99 1.5 ms"
        );
    }

    fn status(canary: Option<u32>) -> types::EnvStatus {
        types::EnvStatus {
            project: "hello".into(),
            environment: "production".into(),
            target: None,
            router: None,
            live: Some(release(5)),
            previous: Some(release(4)),
            health: "healthy".into(),
            health_detail: None,
            uptime_ms: None,
            restarts: None,
            pid: None,
            log: None,
            running: vec![],
            lock: None,
            driver: None,
            canary: canary.map(|percent| types::Canary {
                release: 6,
                state: "running".into(),
                percent,
                step: Some(0),
                steps: 3,
                canary: Default::default(),
                stable: Default::default(),
                analysis: "within its limits".into(),
            }),
            traffic: vec![],
        }
    }

    #[test]
    fn each_confirmation_names_what_will_happen() {
        let s = status(Some(10));
        let cases = [
            (
                Action::Rollback,
                None,
                "Users of production of hello move from release #5 (app abababababab, run 15) to the previous healthy release, release #4 (app abababababab, run 14), at once.",
            ),
            (
                Action::Rollback,
                Some(release(2)),
                "Users of production of hello move from release #5 (app abababababab, run 15) to release #2 (app abababababab, run 12), at once.",
            ),
            (
                Action::Promote,
                None,
                "The canary, release #6, moves from 10% of users to its next step.",
            ),
            (
                Action::Abort,
                None,
                "Every user of production of hello goes back to release #5 (app abababababab, run 15); the canary, release #6, is marked failed.",
            ),
        ];
        for (action, to, want) in cases {
            assert_eq!(consequence(action, &s, to.as_ref()).unwrap(), want);
        }
        assert_eq!(
            consequence(Action::Pause, &status(None), None).unwrap_err(),
            "production of hello has no canary running"
        );
    }

    #[test]
    fn actions_round_trip_by_name() {
        for a in [
            Action::Rollback,
            Action::Promote,
            Action::PromoteFull,
            Action::Pause,
            Action::Resume,
            Action::Abort,
        ] {
            assert_eq!(Action::parse(a.name()), Some(a));
        }
        assert_eq!(Action::parse("deploy"), None);
    }
}
