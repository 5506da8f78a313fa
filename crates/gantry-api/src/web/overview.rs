//! The overview: each project's branches with their latest run and the trend of their last 20
//! runs, and every environment with its live release, health and canary share.

use super::pages::{Chrome, respond};
use super::render;
use super::session::Visitor;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use gantry_engine::ports::{RunFilter, now_millis};
use gantry_model::records::RunRecord;

/// How many of a project's newest runs the overview looks at to find its branches.
const RECENT: i64 = 200;
/// The length of a branch's trend strip.
const STRIP: usize = 20;

pub struct RunCell {
    pub id: i64,
    pub status: String,
    pub label: String,
}

pub struct BranchRow {
    pub branch: String,
    pub run: i64,
    pub status: String,
    pub commit: String,
    pub full_commit: String,
    pub subject: String,
    pub trigger: String,
    pub when: String,
    pub duration: String,
    /// Oldest first.
    pub strip: Vec<RunCell>,
}

pub struct ProjectView {
    pub name: String,
    pub repo: String,
    pub poll_error: Option<String>,
    pub branches: Vec<BranchRow>,
}

pub struct EnvRow {
    pub href: String,
    pub project: String,
    pub environment: String,
    pub live: String,
    pub health: String,
    pub canary: String,
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct Overview {
    chrome: Chrome,
    projects: Vec<ProjectView>,
    environments: Vec<EnvRow>,
}

pub fn run_duration(r: &RunRecord, now: i64) -> String {
    match (r.started_at, r.finished_at) {
        (Some(s), Some(f)) => render::duration(f - s),
        (Some(s), None) => format!("{} so far", render::duration(now - s)),
        _ => "—".into(),
    }
}

fn branches(runs: &[RunRecord], now: i64) -> Vec<BranchRow> {
    let mut rows: Vec<BranchRow> = Vec::new();
    // Newest first: the first run of a branch is its latest.
    for r in runs {
        let branch = r.lane();
        let cell = RunCell {
            id: r.id,
            status: r.status.to_string(),
            label: format!("run {} {}", r.id, r.status),
        };
        match rows.iter_mut().find(|b| b.branch == branch) {
            Some(row) if row.strip.len() < STRIP => row.strip.insert(0, cell),
            Some(_) => {}
            None => rows.push(BranchRow {
                branch,
                run: r.id,
                status: r.status.to_string(),
                commit: r.commit.chars().take(10).collect(),
                full_commit: r.commit.clone(),
                subject: String::new(),
                trigger: r.trigger.clone(),
                when: render::ago(r.created_at, now),
                duration: run_duration(r, now),
                strip: vec![cell],
            }),
        }
    }
    rows
}

pub async fn page(State(state): State<AppState>, visitor: Visitor) -> Response {
    let now = now_millis();
    let errors = state.control.poll_errors();
    let projects = match state.store.list_projects().await {
        Ok(p) => p,
        Err(e) => return super::pages::api_error_page(e.into()),
    };
    let mut views = Vec::new();
    for p in projects {
        let runs = state
            .store
            .list_runs(&RunFilter {
                project: Some(p.name.clone()),
                branch: None,
                status: None,
                before: None,
                limit: RECENT,
            })
            .await
            .unwrap_or_default();
        let mut rows = branches(&runs, now);
        let commits: Vec<String> = rows.iter().map(|b| b.full_commit.clone()).collect();
        let subjects = state
            .control
            .commit_subjects(&p.name, &p.repo, &commits)
            .await;
        for row in &mut rows {
            if let Some(s) = subjects.get(&row.full_commit) {
                row.subject = s.clone();
            }
        }
        views.push(ProjectView {
            poll_error: errors.get(&p.name).cloned(),
            branches: rows,
            name: p.name,
            repo: p.repo,
        });
    }
    let environments = state
        .control
        .environment_statuses(None)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|e| EnvRow {
            href: format!(
                "/ui/projects/{}/environments/{}",
                render::url_encode(&e.project),
                render::url_encode(&e.environment)
            ),
            live: e.live.as_ref().map_or_else(
                || "nothing live".into(),
                |r| {
                    format!(
                        "#{} {} {}",
                        r.number,
                        r.artifact,
                        render::short_digest(&r.digest)
                    )
                },
            ),
            canary: e.canary.as_ref().map_or_else(
                || "—".into(),
                |c| format!("{}% to #{} ({})", c.percent, c.release, c.state),
            ),
            health: e.health,
            project: e.project,
            environment: e.environment,
        })
        .collect();
    respond(
        StatusCode::OK,
        &Overview {
            chrome: Chrome::new("Overview", &visitor, 3000),
            projects: views,
            environments,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_model::RunStatus;

    fn run(id: i64, branch: &str, status: RunStatus) -> RunRecord {
        RunRecord {
            id,
            project: "p".into(),
            repo: "/r".into(),
            commit: format!("{id:040}"),
            branch: Some(branch.into()),
            pipeline_file: "gantry.yml".into(),
            trigger: "push".into(),
            event: "push".into(),
            vars: Default::default(),
            status,
            created_at: 0,
            started_at: Some(0),
            finished_at: Some(1500),
            error: None,
            owner: None,
        }
    }

    #[test]
    fn each_branch_shows_its_latest_run_and_a_strip_oldest_first() {
        let mut runs: Vec<RunRecord> = (1..=30)
            .rev()
            .map(|i| {
                let status = if i % 2 == 0 {
                    RunStatus::Succeeded
                } else {
                    RunStatus::Failed
                };
                run(i, if i % 3 == 0 { "dev" } else { "main" }, status)
            })
            .collect();
        runs.push(run(0, "main", RunStatus::Succeeded));
        let rows = branches(&runs, 10_000);
        assert_eq!(rows.len(), 2);
        // Branches in the order of their latest runs: dev ran last.
        assert_eq!((rows[0].branch.as_str(), rows[0].run), ("dev", 30));
        let main = &rows[1];
        assert_eq!((main.branch.as_str(), main.run), ("main", 29));
        assert_eq!(main.status, "failed");
        assert_eq!(main.strip.len(), 20);
        assert_eq!(main.strip.last().unwrap().id, 29);
        assert!(main.strip.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(rows[0].strip.len(), 10);
        assert_eq!(main.duration, "1.5 s");
    }
}
