//! `why` as an operation, shared by `gantry why` and the server's API: gathers the facts and
//! logs of a failed run from the state store, feeds them to the engine's diagnoser, and works out
//! what changed since the last good run of the same project and branch (commits and the
//! pipeline file from git; variable and secret names, never values; artifact digests; tool
//! versions printed in the logs).

use anyhow::{Result, anyhow};
use gantry_engine::ports::{ReleaseRecord, RunDetail, RunFilter, StateStore};
use gantry_engine::release::ReleaseState;
use gantry_engine::why::changes::{self, Changes};
use gantry_engine::why::{Diagnoser, Fact, rules};
use gantry_git::Repo;
use gantry_model::{JobStatus, Pipeline, RunStatus, StepStatus};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Why a run failed: what `gantry why` prints, the API answers and the store keeps.
pub type Report = gantry_api::types::RunDiagnosis;

/// A file of the user's own rules:
///
/// ```toml
/// [[rule]]
/// id = "flaky-registry"
/// category = "network"            # one of the categories of `gantry why`
/// patterns = ["registry.internal: i/o timeout"]
/// sentence = "The internal registry did not answer."
/// fix = "Check the registry VM; it restarts nightly at 03:00."
/// weight = 100                    # optional; built-in rules weigh 60 to 95
/// ```
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RuleEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleEntry {
    id: String,
    category: String,
    patterns: Vec<String>,
    sentence: String,
    fix: String,
    weight: Option<u8>,
}

/// The built-in rules, then the user's from `file` (if any). User rules weigh 100 unless they
/// say otherwise, so they win over built-in ones on the same line.
pub fn load_rules(file: Option<&std::path::Path>) -> Result<Vec<rules::Rule>> {
    let mut all = rules::builtin();
    let Some(path) = file else { return Ok(all) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("reading the rules file {}: {e}", path.display()))?;
    let parsed: RulesFile =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    for (i, r) in parsed.rule.into_iter().enumerate() {
        let category = rules::Category::parse(&r.category).ok_or_else(|| {
            let known: Vec<&str> = rules::Category::ALL.iter().map(|c| c.as_str()).collect();
            anyhow!(
                "{}: rule {} (`{}`): unknown category `{}`; use one of: {}",
                path.display(),
                i + 1,
                r.id,
                r.category,
                known.join(", ")
            )
        })?;
        if r.patterns.iter().any(|p| p.trim().is_empty()) || r.patterns.is_empty() {
            return Err(anyhow!(
                "{}: rule {} (`{}`) needs at least one non-empty pattern",
                path.display(),
                i + 1,
                r.id
            ));
        }
        all.push(rules::Rule {
            id: r.id,
            category,
            patterns: r.patterns.iter().map(|p| p.to_lowercase()).collect(),
            sentence: r.sentence,
            fix: r.fix,
            weight: r.weight.unwrap_or(100),
        });
    }
    Ok(all)
}

/// Log lines read per query while streaming a run's log through the diagnoser.
const PAGE: i64 = 5000;

/// The diagnosis of run `id`. `repo` is where its commits can be read (for what changed).
pub async fn diagnose_run(
    store: &dyn StateStore,
    repo: Option<&Repo>,
    id: i64,
    rules: Vec<rules::Rule>,
) -> Result<Report> {
    let detail = store
        .run_detail(id)
        .await?
        .ok_or_else(|| anyhow!("no run {id}"))?;
    match detail.run.status {
        RunStatus::Failed | RunStatus::Interrupted | RunStatus::Cancelled => {}
        other => {
            return Err(NothingToExplain {
                run: id,
                status: other,
            }
            .into());
        }
    }
    let mut d = Diagnoser::new(rules);
    if let Some(e) = &detail.run.error {
        d.fact(Fact::Error {
            job: None,
            text: e.clone(),
        });
    }
    let mut bad_tools = BTreeMap::new();
    for job in detail
        .jobs
        .iter()
        .filter(|j| j.status.is_failure() && !j.allow_failure || j.status == JobStatus::Interrupted)
    {
        if let Some(e) = &job.error {
            d.fact(Fact::Error {
                job: Some(job.name.clone()),
                text: e.clone(),
            });
        }
        for step in detail
            .steps
            .iter()
            .filter(|s| s.job_id == job.id && s.attempt == job.attempt)
        {
            match (step.status, step.exit_code) {
                (StepStatus::TimedOut, _) => d.fact(Fact::TimedOut {
                    job: job.name.clone(),
                    step: step.name.clone(),
                }),
                (StepStatus::Failed, Some(code)) => d.fact(Fact::Exit {
                    job: job.name.clone(),
                    step: step.name.clone(),
                    code,
                }),
                _ => {}
            }
        }
        let mut after = 0;
        loop {
            let page = store.logs(id, Some(&job.name), after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            for l in page.iter().filter(|l| l.attempt == job.attempt) {
                changes::tool_versions(&l.text, &mut bad_tools);
                d.line(&l.job, &l.step, l.line, &l.text);
            }
        }
    }
    // A failed deploy stage: what the deployment said is the evidence (health-check answers,
    // the release's crash output, who held the lock).
    for stage in detail
        .stages
        .iter()
        .filter(|s| s.kind == "deploy" && s.status == gantry_model::StageStatus::Failed)
    {
        for (i, line) in stage.note.as_deref().unwrap_or("").lines().enumerate() {
            d.line(&stage.name, "deploy", i as i64 + 1, line);
        }
    }
    let mut diagnosis = d.finish();
    // A deployment's note is short and all of it is evidence: the health check's answers and
    // the release's own last output, line by line.
    if let Some(stage) = detail.stages.iter().find(|s| {
        s.kind == "deploy" && s.status == gantry_model::StageStatus::Failed && s.note.is_some()
    }) && diagnosis
        .evidence
        .iter()
        .any(|e| e.job.as_deref() == Some(&stage.name))
    {
        let note = stage.note.as_deref().unwrap_or("");
        diagnosis.evidence = deployment_evidence(&stage.name, "deploy", note.lines());
    }
    let changes = what_changed(store, repo, &detail, bad_tools, None).await?;
    Ok(Report {
        run: (&detail.run).into(),
        diagnosis,
        changes,
    })
}

/// Why a release of an environment failed, compared with the release that was live then.
pub type ReleaseReport = gantry_api::types::ReleaseDiagnosis;

/// The latest failed (or interrupted) release of `project`/`environment`, if any.
pub async fn latest_failed_release(
    store: &dyn StateStore,
    project: &str,
    environment: &str,
) -> Result<Option<ReleaseRecord>> {
    Ok(store
        .releases(project, environment)
        .await?
        .into_iter()
        .find(|r| matches!(r.state, ReleaseState::Failed | ReleaseState::Interrupted)))
}

/// The diagnosis of a failed release: its recorded reason and events (health-check answers,
/// crashes with their output) through the same rules as run logs, and what changed since the
/// healthy release before it (commits, pipeline file, artifact).
pub async fn diagnose_release(
    store: &dyn StateStore,
    repo: Option<&Repo>,
    bad: ReleaseRecord,
    rules: Vec<rules::Rule>,
) -> Result<ReleaseReport> {
    let history = store.releases(&bad.project, &bad.environment).await?;
    let good = history
        .iter()
        .find(|r| r.number < bad.number && gantry_engine::release::healthy(r))
        .cloned();
    let place = format!("release {}", bad.number);
    let mut d = Diagnoser::new(rules);
    let reason = bad.reason.clone().unwrap_or_default();
    let mut lines: Vec<String> = reason.lines().map(str::to_string).collect();
    for e in store.release_events(bad.id).await? {
        if e.kind != "state" {
            lines.extend(e.message.lines().map(|l| format!("{}: {l}", e.kind)));
        }
    }
    for (i, line) in lines.iter().enumerate() {
        d.line(&bad.environment, &place, i as i64 + 1, line);
    }
    let mut diagnosis = d.finish();
    if !lines.is_empty() {
        diagnosis.evidence =
            deployment_evidence(&bad.environment, &place, lines.iter().map(String::as_str));
    }
    let bad_run = match bad.run_id {
        Some(id) => store.run_detail(id).await?,
        None => None,
    };
    let changes = match (&bad_run, good.as_ref().and_then(|g| g.run_id)) {
        (Some(detail), Some(good_run)) if Some(good_run) != bad.run_id => {
            what_changed(store, repo, detail, BTreeMap::new(), Some(good_run)).await?
        }
        _ => Changes::default(),
    };
    Ok(ReleaseReport {
        release: (&bad).into(),
        compared_to: good.as_ref().map(Into::into),
        diagnosis,
        changes,
    })
}

pub fn render_release(r: &ReleaseReport) -> String {
    let rel = &r.release;
    let mut out = format!(
        "release {} of {}/{} {} — {} {} from run {}{}\n\n{}: {}\n",
        rel.number,
        rel.project,
        rel.environment,
        rel.state,
        rel.artifact,
        crate::render::short_digest(&rel.digest),
        rel.run_id.map_or("?".to_string(), |r| r.to_string()),
        rel.commit
            .as_deref()
            .map(|c| format!(", commit {}", &c[..c.len().min(10)]))
            .unwrap_or_default(),
        r.diagnosis.category,
        r.diagnosis.sentence
    );
    if !r.diagnosis.evidence.is_empty() {
        out.push_str("\nevidence:\n");
        for e in &r.diagnosis.evidence {
            out.push_str(&format!("  {}:{}  {}\n", rel.environment, e.line, e.text));
        }
    }
    out.push_str(&format!("\nfix: {}\n", r.diagnosis.fix));
    match &r.compared_to {
        None => out.push_str("\nno earlier healthy release to compare with\n"),
        Some(good) => {
            out.push_str(&format!(
                "\nchanged since release {} (healthy, run {}):\n",
                good.number,
                good.run_id.map_or("?".to_string(), |r| r.to_string())
            ));
            let c = &r.changes;
            if good.digest != rel.digest {
                out.push_str(&format!(
                    "  artifact {}: {} -> {}\n",
                    rel.artifact,
                    crate::render::short_digest(&good.digest),
                    crate::render::short_digest(&rel.digest)
                ));
            }
            for l in &c.commits {
                out.push_str(&format!("  commit {l}\n"));
            }
            push_file_changes(&mut out, c);
        }
    }
    out
}

/// What a deployment recorded is short and all of it is evidence: its lines (at most 16), the
/// health check's answers and the release's own last output among them.
fn deployment_evidence<'a>(
    job: &str,
    step: &str,
    lines: impl Iterator<Item = &'a str>,
) -> Vec<gantry_engine::why::Evidence> {
    lines
        .take(16)
        .enumerate()
        .map(|(i, text)| gantry_engine::why::Evidence {
            job: Some(job.to_string()),
            step: Some(step.to_string()),
            line: i as i64 + 1,
            text: text.to_string(),
        })
        .collect()
}

/// The latest failed (or interrupted) run, of one project or of all.
pub async fn latest_failed(store: &dyn StateStore, project: Option<String>) -> Result<Option<i64>> {
    let mut best: Option<i64> = None;
    for status in [RunStatus::Failed, RunStatus::Interrupted] {
        let runs = store
            .list_runs(&RunFilter {
                project: project.clone(),
                status: Some(status),
                limit: 1,
                ..Default::default()
            })
            .await?;
        if let Some(r) = runs.first() {
            best = Some(best.map_or(r.id, |b| b.max(r.id)));
        }
    }
    Ok(best)
}

/// What changed from the good run (`good`, else the last succeeded run of the same branch
/// before `bad`) to `bad`.
async fn what_changed(
    store: &dyn StateStore,
    repo: Option<&Repo>,
    bad: &RunDetail,
    bad_tools: BTreeMap<String, String>,
    good: Option<i64>,
) -> Result<Changes> {
    let good = match good {
        Some(id) => store.run_detail(id).await?.map(|d| d.run),
        None => {
            let filter = RunFilter {
                project: Some(bad.run.project.clone()),
                branch: bad.run.branch.clone(),
                status: Some(RunStatus::Succeeded),
                before: Some(bad.run.id),
                limit: 1,
            };
            store.list_runs(&filter).await?.into_iter().next()
        }
    };
    let Some(good) = good else {
        return Ok(Changes::default());
    };
    let good_detail = store
        .run_detail(good.id)
        .await?
        .ok_or_else(|| anyhow!("run {} vanished", good.id))?;
    let mut c = Changes {
        good_run: Some(good.id),
        good_commit: Some(good.commit.clone()),
        ..Default::default()
    };

    if let Some(repo) = repo {
        if good.commit != bad.run.commit {
            c.commits = repo
                .log_between(&good.commit, &bad.run.commit, 50)
                .unwrap_or_default();
        }
        let read = |commit: &str, file: &str| {
            repo.read_file(commit, file)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let old = read(&good.commit, &good.pipeline_file);
        let new = read(&bad.run.commit, &bad.run.pipeline_file);
        if let (Some(old), Some(new)) = (&old, &new) {
            c.pipeline_diff = changes::diff_lines(old, new);
        }
        let names = |text: &Option<String>, file: &str| {
            text.as_deref()
                .and_then(|t| gantry_config::parse_pipeline(file, t).ok())
                .map(|p| (env_names(&p.pipeline), p.pipeline.secret_names()))
        };
        if let (Some((old_env, old_secrets)), Some((new_env, new_secrets))) = (
            names(&old, &good.pipeline_file),
            names(&new, &bad.run.pipeline_file),
        ) {
            (c.env_added, c.env_removed) = changes::names_diff(&old_env, &new_env);
            (c.secrets_added, c.secrets_removed) = changes::names_diff(&old_secrets, &new_secrets);
        }
    }
    for a in &bad.artifacts {
        if let Some(old) = good_detail
            .artifacts
            .iter()
            .find(|g| g.name == a.name && g.digest != a.digest)
        {
            c.artifacts_changed
                .push((a.name.clone(), old.digest.clone(), a.digest.clone()));
        }
    }
    let mut good_tools = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.logs(good.id, None, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for l in &page {
            changes::tool_versions(&l.text, &mut good_tools);
        }
    }
    c.tools_changed = changes::tools_diff(&good_tools, &bad_tools);
    Ok(c)
}

/// Every variable name a pipeline sets (top level, jobs, steps).
fn env_names(p: &Pipeline) -> Vec<String> {
    let mut names: Vec<String> = p.env.iter().map(|(k, _)| k.clone()).collect();
    for (_, job) in p.jobs() {
        names.extend(job.env.iter().map(|(k, _)| k.clone()));
        for s in &job.steps {
            names.extend(s.env.iter().map(|(k, _)| k.clone()));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The report as people read it.
pub fn render(r: &Report) -> String {
    let d = &r.diagnosis;
    let run = &r.run;
    let mut out = format!(
        "run {} {} — {} at {}{}\n\n{}: {}\n",
        run.id,
        run.status,
        run.project,
        &run.commit[..run.commit.len().min(10)],
        run.branch
            .as_deref()
            .map(|b| format!(" on {b}"))
            .unwrap_or_default(),
        d.category,
        d.sentence
    );
    if !d.evidence.is_empty() {
        out.push_str("\nevidence:\n");
        for e in &d.evidence {
            let place = match (&e.job, &e.step) {
                (Some(j), Some(s)) if e.line > 0 => format!("{j} › {s}:{}", e.line),
                (Some(j), _) => format!("{j} (recorded error)"),
                _ => "run (recorded error)".to_string(),
            };
            out.push_str(&format!("  {place}  {}\n", e.text));
        }
    }
    if !d.failing_tests.is_empty() {
        out.push_str(&format!(
            "\nfailing tests: {}\n",
            d.failing_tests.join(", ")
        ));
    }
    out.push_str(&format!("\nfix: {}\n", d.fix));
    let c = &r.changes;
    match c.good_run {
        None => out.push_str("\nno earlier good run of this branch to compare with\n"),
        Some(good) => {
            let commit = c
                .good_commit
                .as_deref()
                .map(|s| &s[..s.len().min(10)])
                .unwrap_or("?");
            out.push_str(&format!(
                "\nchanged since run {good} (the last good run, at {commit}):\n"
            ));
            if c.is_empty() {
                out.push_str("  nothing gantry can see (same commit, pipeline, secrets, artifacts and tools)\n");
            }
            if !c.commits.is_empty() {
                out.push_str("  commits:\n");
                for l in &c.commits {
                    out.push_str(&format!("    {l}\n"));
                }
            }
            push_file_changes(&mut out, c);
            for (name, old, new) in &c.artifacts_changed {
                out.push_str(&format!(
                    "  artifact {name}: {} -> {}\n",
                    crate::render::short_digest(old),
                    crate::render::short_digest(new)
                ));
            }
            for (tool, old, new) in &c.tools_changed {
                out.push_str(&format!("  {tool}: {old} -> {new}\n"));
            }
        }
    }
    out
}

/// The pipeline file's diff and the variables and secrets added or removed, as both the run's
/// and the release's "what changed" show them.
fn push_file_changes(out: &mut String, c: &Changes) {
    if !c.pipeline_diff.is_empty() {
        out.push_str("  pipeline file:\n");
        for l in &c.pipeline_diff {
            out.push_str(&format!("    {l}\n"));
        }
    }
    for (label, names) in [
        ("variables added", &c.env_added),
        ("variables removed", &c.env_removed),
        ("secrets added", &c.secrets_added),
        ("secrets removed", &c.secrets_removed),
    ] {
        if !names.is_empty() {
            out.push_str(&format!("  {label}: {}\n", names.join(", ")));
        }
    }
}

/// `gantry why` of a run that did not fail.
#[derive(Debug, thiserror::Error)]
#[error("run {run} is {status}: there is no failure to explain")]
pub struct NothingToExplain {
    pub run: i64,
    pub status: RunStatus,
}
