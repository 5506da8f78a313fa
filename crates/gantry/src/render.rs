//! How a run looks on a terminal: live progress (a line per job with its status, elapsed time
//! and last log line), plain lines when output is not a terminal, or one JSON event per line.
//! Also the tables `show` and the end-of-run summary print.

use gantry_engine::ports::RunDetail;
use gantry_model::JobStatus;
use gantry_model::duration::format_duration;
use gantry_runner::{Observer, RunEvent};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Live,
    Plain,
    Json,
}

/// Lines of a failed job's log shown after the summary.
const TAIL: usize = 15;

pub struct Renderer {
    style: Style,
    quiet: bool,
    inner: Mutex<Inner>,
}

struct Inner {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    tails: HashMap<String, VecDeque<String>>,
}

impl Renderer {
    pub fn new(style: Style, quiet: bool) -> Self {
        let multi = MultiProgress::with_draw_target(if style == Style::Live {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Self {
            style,
            quiet,
            inner: Mutex::new(Inner {
                multi,
                bars: HashMap::new(),
                tails: HashMap::new(),
            }),
        }
    }

    fn say(&self, inner: &Inner, line: String) {
        match self.style {
            Style::Live => {
                let _ = inner.multi.println(line);
            }
            Style::Plain => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            Style::Json => {}
        }
    }

    /// Prints the summary of a finished run (not in JSON mode, where the events say it all).
    pub fn finish(&self, detail: &RunDetail) {
        if self.style == Style::Json {
            return;
        }
        let inner = self.inner.lock().expect("renderer lock");
        let mut out: Box<dyn Write> = if self.style == Style::Live {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        };
        let _ = writeln!(out);
        let _ = write!(out, "{}", summary(detail));
        // On a live terminal the log scrolled by as one line per job: show how failures ended.
        let failed = detail
            .jobs
            .iter()
            .filter(|j| j.status.is_failure() && !j.allow_failure);
        for job in failed.filter(|_| self.style == Style::Live) {
            let Some(tail) = inner.tails.get(&job.name).filter(|t| !t.is_empty()) else {
                continue;
            };
            let _ = writeln!(out, "\nlast lines of job `{}`:", job.name);
            for l in tail {
                let _ = writeln!(out, "  {l}");
            }
        }
        let _ = out.flush();
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {elapsed:>4} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Observer for Renderer {
    fn event(&self, event: &RunEvent) {
        if self.style == Style::Json {
            if let Ok(line) = serde_json::to_string(event) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            return;
        }
        let mut inner = self.inner.lock().expect("renderer lock");
        match event {
            RunEvent::RunStarted {
                run,
                project,
                commit,
                branch,
            } => {
                let on = branch
                    .as_deref()
                    .map(|b| format!(" on {b}"))
                    .unwrap_or_default();
                self.say(
                    &inner,
                    format!(
                        "run {run}: {project} at {}{on}",
                        &commit[..commit.len().min(10)]
                    ),
                );
            }
            RunEvent::StageStarted { stage, .. } => self.say(&inner, format!("▶ stage {stage}")),
            RunEvent::JobStarted { job, attempt, .. } => {
                let again = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                if self.style == Style::Live {
                    let bar = inner.multi.add(ProgressBar::new_spinner());
                    bar.set_style(bar_style());
                    bar.set_prefix(format!("{job:<16}"));
                    bar.set_message(format!("running{again}"));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    if let Some(old) = inner.bars.insert(job.clone(), bar) {
                        old.finish_and_clear();
                    }
                } else {
                    self.say(&inner, format!("  {job}: started{again}"));
                }
            }
            RunEvent::StepStarted { job, step, .. } => {
                if let Some(bar) = inner.bars.get(job) {
                    bar.set_message(format!("$ {step}"));
                } else if self.style == Style::Plain && !self.quiet {
                    self.say(&inner, format!("  {job}: $ {step}"));
                }
            }
            RunEvent::Log { job, text, .. } => {
                let tail = inner.tails.entry(job.clone()).or_default();
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(text.clone());
                if let Some(bar) = inner.bars.get(job) {
                    let shown: String = text.chars().take(120).collect();
                    bar.set_message(shown);
                } else if self.style == Style::Plain && !self.quiet {
                    self.say(&inner, format!("  {job} | {text}"));
                }
            }
            RunEvent::StepFinished { .. } => {}
            RunEvent::JobRetrying {
                job, next_attempt, ..
            } => {
                self.say(
                    &inner,
                    format!("  {job}: failed, retrying (attempt {next_attempt})"),
                );
            }
            RunEvent::JobFinished {
                job,
                status,
                attempts,
                allow_failure,
                error,
                millis,
                ..
            } => {
                let mark = status_mark(*status, *allow_failure);
                let allowed = if status.is_failure() && *allow_failure {
                    " (allowed)"
                } else {
                    ""
                };
                let tries = if *attempts > 1 {
                    format!(", {attempts} attempts")
                } else {
                    String::new()
                };
                let why = error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                let text = format!(
                    "{mark} {status}{allowed} in {}{tries}{why}",
                    format_duration(Duration::from_millis(*millis))
                );
                // A finished job leaves the live area and becomes a permanent line above it.
                if let Some(bar) = inner.bars.remove(job) {
                    bar.finish_and_clear();
                    inner.multi.remove(&bar);
                }
                self.say(&inner, format!("  {job}: {text}"));
            }
            RunEvent::ArtifactStored {
                job,
                name,
                digest,
                size,
                newly_stored,
                ..
            } => {
                let dedup = if *newly_stored {
                    ""
                } else {
                    ", already stored"
                };
                self.say(
                    &inner,
                    format!(
                        "  {job}: artifact {name} {} ({}{dedup})",
                        short_digest(digest),
                        human_size(*size)
                    ),
                );
            }
            RunEvent::StageFinished {
                stage,
                status,
                note,
                ..
            } => {
                if let Some(note) = note {
                    self.say(&inner, format!("  stage {stage} {status}: {note}"));
                }
            }
            RunEvent::RunFinished { .. } => {
                for (_, bar) in inner.bars.drain() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

fn status_mark(status: JobStatus, allow_failure: bool) -> &'static str {
    match status {
        JobStatus::Succeeded => "✓",
        s if s.is_failure() && allow_failure => "!",
        s if s.is_failure() => "✗",
        _ => "-",
    }
}

pub fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn span(start: Option<i64>, end: Option<i64>) -> String {
    match (start, end) {
        (Some(s), Some(e)) if e >= s => format_duration(Duration::from_millis((e - s) as u64)),
        (Some(_), None) => "…".into(),
        _ => "-".into(),
    }
}

/// A table of a run's jobs, then its artifacts.
pub fn summary(d: &RunDetail) -> String {
    let mut rows: Vec<[String; 6]> =
        vec![["STAGE", "JOB", "STATUS", "TRIES", "TIME", "DETAIL"].map(String::from)];
    for stage in &d.stages {
        let jobs: Vec<_> = d.jobs.iter().filter(|j| j.stage_id == stage.id).collect();
        if jobs.is_empty() {
            rows.push([
                stage.name.clone(),
                format!("({})", stage.kind),
                stage.status.to_string(),
                "-".into(),
                span(stage.started_at, stage.finished_at),
                stage.note.clone().unwrap_or_default(),
            ]);
        }
        for j in jobs {
            let mut status = j.status.to_string();
            if j.status.is_failure() && j.allow_failure {
                status.push_str(" (allowed)");
            }
            let mut detail = j.error.clone().unwrap_or_default();
            if !j.waits_for.is_empty() {
                let waits = format!("waits for {}", j.waits_for.join(", "));
                detail = if detail.is_empty() {
                    waits
                } else {
                    format!("{waits}; {detail}")
                };
            }
            rows.push([
                stage.name.clone(),
                j.name.clone(),
                status,
                if j.attempt > 0 {
                    j.attempt.to_string()
                } else {
                    "-".into()
                },
                span(j.started_at, j.finished_at),
                detail,
            ]);
        }
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let r = &d.run;
    let mut out = format!(
        "run {} {} in {} — {} at {}{}\n",
        r.id,
        r.status,
        span(r.started_at.or(Some(r.created_at)), r.finished_at),
        r.project,
        &r.commit[..r.commit.len().min(10)],
        match r.lane().as_str() {
            "(detached)" => String::new(),
            lane => format!(" on {lane}"),
        }
    );
    if let Some(e) = &r.error {
        out.push_str(&format!("  {e}\n"));
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 5 {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if !d.artifacts.is_empty() {
        out.push_str("artifacts:\n");
        for a in &d.artifacts {
            out.push_str(&format!(
                "  {}  {}  {}  {}\n",
                a.name,
                a.digest,
                human_size(a.size as u64),
                a.media_type
            ));
        }
    }
    out
}
