//! A run: its stages and jobs as a graph, one job's log (the tail, pages back on demand, live
//! while it runs), the diagnosis of a failure with its evidence linked into the log, its
//! artifacts, and cancel and re-run.
//!
//! A log of any length costs the same: the page carries at most [`PAGE`] lines around where
//! it looks (the tail, or a linked line), earlier lines come [`PAGE`] at a time, and the
//! download streams the whole log a page at a time.

use super::pages::{Chrome, CsrfForm, api_error_page, error_page, respond};
use super::render;
use super::session::Visitor;
use crate::state::AppState;
use crate::types;
use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use gantry_engine::ports::now_millis;
use gantry_model::Role;
use gantry_model::records::{LogRecord, RunDetail, Stream};
use serde::Deserialize;
use std::convert::Infallible;
use std::fmt::Write;
use std::time::Duration;

/// Lines a page or a fetch carries at most.
pub const PAGE: i64 = 500;
/// Bytes of log text a page or a fetch carries at most (long lines make fewer lines).
pub const BUDGET: usize = 48 * 1024;

/// The newest of `lines` (oldest first) whose text fits in [`BUDGET`]; whether any were left
/// out.
fn fit_newest(mut lines: Vec<LogRecord>) -> (Vec<LogRecord>, bool) {
    let mut total = 0;
    let keep = lines
        .iter()
        .rev()
        .take_while(|l| {
            total += l.text.len() + 64;
            total <= BUDGET
        })
        .count()
        .max(1.min(lines.len()));
    let dropped = lines.len() - keep;
    (lines.split_off(dropped), dropped > 0)
}

/// The oldest of `lines` (oldest first) that fit in [`BUDGET`]; whether any were left out.
fn fit_oldest(mut lines: Vec<LogRecord>) -> (Vec<LogRecord>, bool) {
    let mut total = 0;
    let keep = lines
        .iter()
        .take_while(|l| {
            total += l.text.len() + 64;
            total <= BUDGET
        })
        .count()
        .max(1.min(lines.len()));
    let cut = keep < lines.len();
    lines.truncate(keep);
    (lines, cut)
}

pub struct JobView {
    pub name: String,
    /// "waits for a, b" when it waits for jobs.
    pub waits_for: String,
    pub status: String,
    pub duration: String,
    pub href: String,
    pub selected: bool,
}

pub struct StageView {
    pub name: String,
    pub status: String,
    pub duration: String,
    pub note: Option<String>,
    pub jobs: Vec<JobView>,
}

pub struct EvidenceView {
    pub place: String,
    pub text: String,
    pub href: Option<String>,
}

pub struct DiagnosisView {
    pub category: String,
    pub sentence: String,
    pub fix: String,
    pub evidence: Vec<EvidenceView>,
    pub failing_tests: Vec<String>,
    pub commits: Vec<String>,
}

pub struct ArtifactView {
    pub name: String,
    pub digest: String,
    pub short: String,
    pub size: String,
    pub removed: bool,
}

#[derive(Template)]
#[template(path = "ui/run.html")]
struct RunPage {
    chrome: Chrome,
    id: i64,
    project: String,
    branch: String,
    commit: String,
    trigger: String,
    status: String,
    duration: String,
    error: Option<String>,
    finished: bool,
    can_deploy: bool,
    /// The approval stage the run waits at, and what its note says.
    waiting: Option<(String, String)>,
    stages: Vec<StageView>,
    job: Option<String>,
    job_query: String,
    lines: String,
    /// There are lines before the first shown.
    earlier: bool,
    /// The lines shown reach the newest: the page follows the log from `cursor`.
    at_end: bool,
    cursor: i64,
    logs_removed: bool,
    diagnosis: Option<DiagnosisView>,
    artifacts: Vec<ArtifactView>,
    csrf: String,
}

/// One line of a log as HTML: an anchor to link to, the step's line number, the text.
pub fn line_html(out: &mut String, l: &LogRecord) {
    let stream = if matches!(l.stream, Stream::Stderr) {
        " e"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<div class=\"ln{stream}\" id=\"L{id}\"><a href=\"#L{id}\">{line}</a><span>{text}</span></div>",
        id = l.id,
        line = l.line,
        text = render::ansi_html(&l.text),
    );
}

fn lines_html(lines: &[LogRecord]) -> String {
    let mut out = String::with_capacity(lines.len() * 80);
    let mut step: Option<(&str, i64)> = None;
    for l in lines {
        if step != Some((l.step.as_str(), l.attempt)) {
            step = Some((l.step.as_str(), l.attempt));
            let _ = write!(
                out,
                "<div class=\"step\">{}{}</div>",
                render::escape(&l.step),
                if l.attempt > 1 {
                    format!(" (attempt {})", l.attempt)
                } else {
                    String::new()
                }
            );
        }
        line_html(&mut out, l);
    }
    out
}

fn span(start: Option<i64>, end: Option<i64>, now: i64) -> String {
    match (start, end) {
        (Some(s), Some(e)) => render::duration(e - s),
        (Some(s), None) => format!("{} so far", render::duration(now - s)),
        _ => "—".into(),
    }
}

/// The job a run page shows when none is asked for: the first that failed, else the one
/// running, else the last that started.
fn default_job(detail: &RunDetail) -> Option<String> {
    use gantry_model::JobStatus;
    let by = |f: &dyn Fn(JobStatus) -> bool| detail.jobs.iter().find(|j| f(j.status));
    by(&|s| s == JobStatus::Failed)
        .or_else(|| by(&|s| s == JobStatus::Running))
        .or_else(|| detail.jobs.iter().rev().find(|j| j.started_at.is_some()))
        .or(detail.jobs.first())
        .map(|j| j.name.clone())
}

#[derive(Deserialize, Default)]
pub struct RunQuery {
    job: Option<String>,
    /// A line to show (its id), with the lines around it.
    at: Option<i64>,
}

async fn detail_or_404(state: &AppState, id: i64) -> Result<RunDetail, Response> {
    match state.store.run_detail(id).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => Err(error_page(StatusCode::NOT_FOUND, &format!("no run {id}"))),
        Err(e) => Err(api_error_page(e.into())),
    }
}

fn job_link(id: i64, job: &str) -> String {
    format!("/ui/runs/{id}?job={}", render::url_encode(job))
}

pub async fn page_impl(state: AppState, visitor: Visitor, id: i64, q: RunQuery) -> Response {
    let detail = match detail_or_404(&state, id).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let now = now_millis();
    let job = q
        .job
        .filter(|j| detail.jobs.iter().any(|x| &x.name == j))
        .or_else(|| default_job(&detail));
    let stages = detail
        .stages
        .iter()
        .map(|s| StageView {
            name: s.name.clone(),
            status: s.status.to_string(),
            duration: span(s.started_at, s.finished_at, now),
            note: s.note.clone(),
            jobs: detail
                .jobs
                .iter()
                .filter(|j| j.stage_id == s.id)
                .map(|j| JobView {
                    waits_for: if j.waits_for.is_empty() {
                        String::new()
                    } else {
                        format!("waits for {}", j.waits_for.join(", "))
                    },
                    href: job_link(id, &j.name),
                    selected: job.as_deref() == Some(j.name.as_str()),
                    name: j.name.clone(),
                    status: j.status.to_string(),
                    duration: span(j.started_at, j.finished_at, now),
                })
                .collect(),
        })
        .collect();
    let (mut shown, mut earlier, mut at_end) = (Vec::new(), false, true);
    if let Some(job) = &job {
        let store = &state.store;
        let result = match q.at {
            // Around a linked line: some before it, the rest from it on.
            Some(at) => {
                let before = store.logs_before(id, Some(job), Some(at), PAGE / 4).await;
                let after = store.logs(id, Some(job), at - 1, PAGE - PAGE / 4).await;
                before.and_then(|mut b| {
                    b.reverse();
                    let (mut b, cut) = fit_newest(b);
                    earlier = cut || b.len() as i64 == PAGE / 4;
                    let a = after?;
                    let full = a.len() as i64 == PAGE - PAGE / 4;
                    let (a, cut) = fit_oldest(a);
                    at_end = !full && !cut;
                    b.extend(a);
                    Ok(b)
                })
            }
            None => store
                .logs_before(id, Some(job), None, PAGE)
                .await
                .map(|mut t| {
                    let full = t.len() as i64 == PAGE;
                    t.reverse();
                    let (t, cut) = fit_newest(t);
                    earlier = full || cut;
                    t
                }),
        };
        match result {
            Ok(lines) => shown = lines,
            Err(e) => return api_error_page(e.into()),
        }
    }
    let cursor = shown.last().map_or(0, |l| l.id);
    let logs_removed = state
        .store
        .logs_removed_at(id)
        .await
        .ok()
        .flatten()
        .is_some();
    let diagnosis = diagnosis_view(&state, id).await;
    let run = &detail.run;
    let title = format!("Run {id} · {}", run.project);
    respond(
        StatusCode::OK,
        &RunPage {
            chrome: Chrome::new(
                title,
                &visitor,
                if run.status.is_finished() { 0 } else { 2000 },
            ),
            id,
            project: run.project.clone(),
            branch: run.lane(),
            commit: run.commit.clone(),
            trigger: run.trigger.clone(),
            status: run.status.to_string(),
            duration: span(run.started_at, run.finished_at, now),
            error: run.error.clone(),
            finished: run.status.is_finished(),
            can_deploy: visitor.can_deploy(),
            waiting: detail
                .stages
                .iter()
                .find(|s| {
                    s.kind == "approval"
                        && s.status == gantry_model::StageStatus::Running
                        && !run.status.is_finished()
                })
                .map(|s| (s.name.clone(), s.note.clone().unwrap_or_default())),
            stages,
            job_query: job.as_deref().map(render::url_encode).unwrap_or_default(),
            job,
            lines: lines_html(&shown),
            earlier,
            at_end,
            cursor,
            logs_removed,
            diagnosis,
            artifacts: detail
                .artifacts
                .iter()
                .map(|a| ArtifactView {
                    name: a.name.clone(),
                    short: render::short_digest(&a.digest),
                    digest: a.digest.clone(),
                    size: render::size(a.size),
                    removed: a.removed_at.is_some(),
                })
                .collect(),
            csrf: visitor.csrf.clone(),
        },
    )
}

pub async fn page(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Query(q): Query<RunQuery>,
) -> Response {
    page_impl(state, visitor, id, q).await
}

async fn diagnosis_view(state: &AppState, id: i64) -> Option<DiagnosisView> {
    let json = state.store.run_diagnosis(id).await.ok().flatten()?;
    let d: types::RunDiagnosis = serde_json::from_str(&json).ok()?;
    let mut evidence = Vec::new();
    for e in &d.diagnosis.evidence {
        let href = match (&e.job, &e.step) {
            (Some(job), Some(step)) if e.line > 0 => state
                .store
                .log_line_id(id, job, step, e.line)
                .await
                .ok()
                .flatten()
                .map(|at| format!("{}&at={at}#L{at}", job_link(id, job))),
            _ => None,
        };
        let place = match (&e.job, &e.step) {
            (Some(j), Some(s)) if e.line > 0 => format!("{j} › {s}, line {}", e.line),
            (Some(j), Some(s)) => format!("{j} › {s}"),
            (Some(j), None) => j.clone(),
            _ => "run".into(),
        };
        evidence.push(EvidenceView {
            place,
            text: e.text.clone(),
            href,
        });
    }
    Some(DiagnosisView {
        category: d.diagnosis.category.to_string(),
        sentence: d.diagnosis.sentence,
        fix: d.diagnosis.fix,
        evidence,
        failing_tests: d.diagnosis.failing_tests,
        commits: d.changes.commits,
    })
}

#[derive(Deserialize)]
pub struct EarlierQuery {
    job: String,
    before: i64,
}

/// `PAGE` lines before line `before`, as HTML; `X-Gantry-More: 0` when they are the first.
pub async fn earlier(
    State(state): State<AppState>,
    _visitor: Visitor,
    Path(id): Path<i64>,
    Query(q): Query<EarlierQuery>,
) -> Response {
    match state
        .store
        .logs_before(id, Some(&q.job), Some(q.before), PAGE)
        .await
    {
        Ok(mut lines) => {
            let full = lines.len() as i64 == PAGE;
            lines.reverse();
            let (lines, cut) = fit_newest(lines);
            let more = full || cut;
            let mut r = ([(header::CACHE_CONTROL, "no-store")], lines_html(&lines)).into_response();
            r.headers_mut().insert(
                "x-gantry-more",
                HeaderValue::from_static(if more { "1" } else { "0" }),
            );
            r
        }
        Err(e) => api_error_page(e.into()),
    }
}

#[derive(Deserialize)]
pub struct StreamQuery {
    job: String,
    after: Option<i64>,
}

/// A job's new lines as server-sent events of HTML (`lines`, id: the last line's id, so a
/// reconnect resumes after it), then `end` with the run's status once it finished and every
/// line was sent.
pub async fn stream(
    State(state): State<AppState>,
    _visitor: Visitor,
    Path(id): Path<i64>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let cursor = resume.or(q.after).unwrap_or(0);
    let start = (state, id, q.job, cursor, false);
    let events = futures_util::stream::unfold(start, |(state, id, job, cursor, done)| async move {
        if done {
            return None;
        }
        loop {
            // The status first: lines stored before it said "finished" are all there.
            let status = match state.store.run_detail(id).await {
                Ok(Some(d)) => d.run.status,
                _ => return None,
            };
            let lines = state
                .store
                .logs(id, Some(&job), cursor, PAGE)
                .await
                .unwrap_or_default();
            // Long lines go in several events rather than one huge one.
            let (lines, _) = fit_oldest(lines);
            if let Some(last) = lines.last() {
                let mut html = String::new();
                for l in &lines {
                    line_html(&mut html, l);
                }
                let ev = Event::default()
                    .event("lines")
                    .id(last.id.to_string())
                    .data(html);
                let next = last.id;
                return Some((Ok::<_, Infallible>(ev), (state, id, job, next, false)));
            }
            if status.is_finished() {
                let ev = Event::default().event("end").data(status.to_string());
                return Some((Ok(ev), (state, id, job, cursor, true)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    job: Option<String>,
}

/// The whole log (of one job, or of the run) as text, streamed a page at a time.
pub async fn download(
    State(state): State<AppState>,
    _visitor: Visitor,
    Path(id): Path<i64>,
    Query(q): Query<DownloadQuery>,
) -> Response {
    if let Err(r) = detail_or_404(&state, id).await {
        return r;
    }
    let name = match &q.job {
        Some(j) => format!(
            "run-{id}-{}.log",
            j.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
        ),
        None => format!("run-{id}.log"),
    };
    let pages = futures_util::stream::unfold(
        (state, q.job, 0i64, false),
        move |(state, job, cursor, done)| async move {
            if done {
                return None;
            }
            match state.store.logs(id, job.as_deref(), cursor, 5000).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let next = lines.last().map_or(cursor, |l| l.id);
                    let mut text = String::with_capacity(lines.len() * 80);
                    for l in &lines {
                        text.push_str(&l.text);
                        text.push('\n');
                    }
                    Some((Ok::<_, std::io::Error>(text), (state, job, next, false)))
                }
                Err(e) => Some((
                    Err(std::io::Error::other(format!("{e:#}"))),
                    (state, job, cursor, true),
                )),
            }
        },
    );
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(pages),
    )
        .into_response()
}

pub async fn cancel(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = visitor.check(&form.csrf, Role::Deployer) {
        return r.into_response();
    }
    match state.control.cancel(id).await {
        Ok(()) => Redirect::to(&format!("/ui/runs/{id}")).into_response(),
        Err(e) => api_error_page(e.into()),
    }
}

pub async fn approve(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    // Any role may ask; the stage's roles decide.
    if let Err(r) = visitor.check(&form.csrf, Role::Viewer) {
        return r.into_response();
    }
    match state.control.approve(id, &visitor.name, visitor.role).await {
        Ok(_) => Redirect::to(&format!("/ui/runs/{id}")).into_response(),
        Err(e) => api_error_page(e.into()),
    }
}

pub async fn rerun(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = visitor.check(&form.csrf, Role::Deployer) {
        return r.into_response();
    }
    match state.control.rerun(id).await {
        Ok(new) => Redirect::to(&format!("/ui/runs/{new}")).into_response(),
        Err(e) => api_error_page(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: i64, len: usize) -> LogRecord {
        LogRecord {
            id,
            job: "j".into(),
            attempt: 1,
            step: "s".into(),
            line: id,
            at: 0,
            stream: Stream::Stdout,
            text: "x".repeat(len),
        }
    }

    #[test]
    fn pages_keep_to_their_budget_from_the_right_end() {
        let lines: Vec<LogRecord> = (1..=100).map(|i| line(i, 1000)).collect();
        let (newest, cut) = fit_newest(lines.clone());
        assert!(cut);
        assert_eq!(newest.last().unwrap().id, 100);
        assert!(newest.len() < 50 && newest.len() > 40, "{}", newest.len());
        let (oldest, cut) = fit_oldest(lines);
        assert!(cut);
        assert_eq!(oldest[0].id, 1);
        assert_eq!(oldest.len(), newest.len());
        // A single line longer than the budget is still shown.
        let (one, _) = fit_newest(vec![line(1, 200_000)]);
        assert_eq!(one.len(), 1);
        let (few, cut) = fit_newest((1..=3).map(|i| line(i, 10)).collect());
        assert_eq!((few.len(), cut), (3, false));
        assert!(fit_newest(Vec::new()).0.is_empty());
    }
}
