//! Checks a pipeline document and lowers it into [`gantry_model::Pipeline`]. Every problem is
//! collected (the checker never stops at the first), each with its position and field path. The
//! key tables below are the single source of truth for which keys exist: the JSON Schema in
//! `schema.rs` is built from them too.

use crate::diagnostic::{Diagnostic, Severity, suggest};
use crate::yaml::{Node, Pos, Value};
use gantry_model::duration::parse_duration;
use gantry_model::{
    AnalysisSpec, ArtifactSpec, CanarySpec, CanaryStep, DeploySpec, EnvironmentSpec, HealthCheck,
    HealthSpec, Job, Pipeline, ProjectArtifact, RESERVED_ENV_PREFIX, RouterSpec, Stage, StageKind,
    Step, TargetSpec, UserKey, UserSpec,
};
use std::collections::HashMap;
use std::time::Duration;

pub const TOP_KEYS: &[&str] = &["name", "env", "pass_env", "stages", "environments"];
pub const STAGE_KEYS: &[&str] = &["name", "jobs", "deploy"];
pub const JOB_KEYS: &[&str] = &[
    "name",
    "run",
    "steps",
    "env",
    "pass_env",
    "secrets",
    "timeout",
    "retries",
    "allow_failure",
    "artifacts",
    "needs",
];
pub const STEP_KEYS: &[&str] = &["name", "run", "env", "timeout"];
pub const ARTIFACT_KEYS: &[&str] = &["name", "path"];
pub const NEED_KEYS: &[&str] = &["project", "artifact", "branch", "path"];
pub const DEPLOY_KEYS: &[&str] = &["environment", "environments", "artifact", "bake"];
pub const ENVIRONMENT_KEYS: &[&str] = &[
    "target",
    "health",
    "keep",
    "router",
    "strategy",
    "bake",
    "keep_previous_running",
];
pub const PROCESS_TARGET_KEYS: &[&str] = &["command", "env"];
pub const COMMAND_TARGET_KEYS: &[&str] = &["deploy", "rollback", "env"];
pub const HEALTH_KEYS: &[&str] = &["http", "tcp", "command", "timeout", "interval"];
pub const ROUTER_KEYS: &[&str] = &["listen"];
pub const STRATEGY_KEYS: &[&str] = &["canary"];
pub const CANARY_KEYS: &[&str] = &["users", "steps", "analysis"];
pub const USERS_KEYS: &[&str] = &["header", "cookie", "allow"];
pub const CANARY_STEP_KEYS: &[&str] = &["weight", "pause", "approval"];
pub const ANALYSIS_KEYS: &[&str] = &[
    "max_error_rate",
    "max_p99_ms",
    "min_requests",
    "compare_to_stable",
    "deadline",
];
pub const TARGET_KINDS: &[&str] = &["process", "command", "docker", "lambda"];
pub const MAX_RETRIES: u32 = 10;

#[derive(Default)]
pub(crate) struct Checker {
    pub diags: Vec<Diagnostic>,
}

/// A mapping whose keys were checked against a table; lookups return the value node.
struct Fields<'n> {
    path: String,
    pos: Pos,
    entries: Vec<(&'n Node, &'n Node)>,
    /// Known keys that an unknown key was taken for (`step` -> `steps`): a missing-key error
    /// for those would only repeat the typo's.
    suggested: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
            .map(|(_, v)| *v)
    }

    /// The value of `key` unless it is absent or written as null.
    fn some(&self, key: &str) -> Option<&'n Node> {
        self.get(key).filter(|n| n.value != Value::Null)
    }

    fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Checker {
    fn push(
        &mut self,
        severity: Severity,
        node_pos: Pos,
        width: usize,
        field: &str,
        message: String,
        help: Option<String>,
    ) {
        self.diags.push(Diagnostic {
            severity,
            pos: node_pos,
            width,
            field: field.to_string(),
            message,
            help,
        });
    }

    fn error(
        &mut self,
        node: &Node,
        field: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.push(
            Severity::Error,
            node.pos,
            node.width,
            field,
            message.into(),
            help,
        );
    }

    fn warning(
        &mut self,
        node: &Node,
        field: &str,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.push(
            Severity::Warning,
            node.pos,
            node.width,
            field,
            message.into(),
            help,
        );
    }

    /// Checks that `node` is a mapping with only `known` keys, each once.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        what: &str,
        known: &[&'static str],
    ) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node,
                path,
                format!("{what} must be a mapping, found {}", node.kind_name()),
                None,
            );
            return None;
        };
        let mut seen: HashMap<&str, &Node> = HashMap::new();
        let mut kept = Vec::new();
        let mut suggested = Vec::new();
        for (key, value) in entries {
            let Some(name) = key.as_scalar() else {
                self.error(
                    key,
                    path,
                    format!("keys of {what} must be plain names"),
                    None,
                );
                continue;
            };
            if !known.contains(&name) {
                let help = match suggest(name, known.iter().copied()) {
                    Some(s) => {
                        suggested.push(s);
                        format!("did you mean `{s}`?")
                    }
                    None => format!("known keys: {}", known.join(", ")),
                };
                self.error(
                    key,
                    &join(path, name),
                    format!("unknown key `{name}` in {what}"),
                    Some(help),
                );
                continue;
            }
            if let Some(first) = seen.get(name) {
                let line = first.pos.line;
                self.error(
                    key,
                    &join(path, name),
                    format!("duplicate key `{name}`"),
                    Some(format!("first set on line {line}")),
                );
                continue;
            }
            seen.insert(name, key);
            kept.push((key, value));
        }
        Some(Fields {
            path: path.to_string(),
            pos: node.pos,
            entries: kept,
            suggested,
        })
    }

    fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        owner: &Node,
        key: &str,
        what: &str,
    ) -> Option<&'n Node> {
        let found = fields.some(key);
        if found.is_none() && !fields.suggested.contains(&key) {
            self.push(
                Severity::Error,
                fields.pos,
                owner.width.max(1),
                &fields.path,
                format!("{what} is missing the required key `{key}`"),
                None,
            );
        }
        found
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.error(
                    node,
                    field,
                    format!("expected a string, found {}", node.kind_name()),
                    None,
                );
                None
            }
        }
    }

    fn name(&mut self, node: &Node, field: &str) -> Option<String> {
        let name = self.string(node, field)?;
        if name.trim().is_empty() {
            self.error(node, field, "a name may not be empty", None);
            return None;
        }
        if name.contains('/') || name.chars().any(char::is_control) {
            self.error(
                node,
                field,
                format!("`{name}` is not a valid name: no `/` or control characters"),
                None,
            );
            return None;
        }
        Some(name)
    }

    fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.value {
            Value::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                other => {
                    self.error(
                        node,
                        field,
                        format!("expected true or false, found `{other}`"),
                        Some("write `true` or `false`".into()),
                    );
                    None
                }
            },
            _ => {
                self.error(
                    node,
                    field,
                    format!("expected true or false, found {}", node.kind_name()),
                    None,
                );
                None
            }
        }
    }

    fn uint(&mut self, node: &Node, field: &str, max: u32) -> Option<u32> {
        let text = match &node.value {
            Value::Scalar { text, plain: true } => text,
            _ => {
                self.error(
                    node,
                    field,
                    format!("expected a whole number, found {}", node.kind_name()),
                    None,
                );
                return None;
            }
        };
        match text.parse::<u32>() {
            Ok(n) if n <= max => Some(n),
            Ok(n) => {
                self.error(
                    node,
                    field,
                    format!("{n} is too large"),
                    Some(format!("at most {max}")),
                );
                None
            }
            Err(_) => {
                self.error(
                    node,
                    field,
                    format!("expected a whole number from 0 to {max}, found `{text}`"),
                    None,
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, field: &str) -> Option<Duration> {
        let text = self.string(node, field)?;
        match parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                self.error(node, field, "a duration must be greater than zero", None);
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    node,
                    field,
                    format!("invalid duration: {e}"),
                    Some("examples: 90s, 10m, 1h30m".into()),
                );
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, field: &str) -> Vec<(String, Node)> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Scalar { .. } => vec![node],
            _ => {
                self.error(
                    node,
                    field,
                    format!("expected a list of strings, found {}", node.kind_name()),
                    None,
                );
                return Vec::new();
            }
        };
        items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let f = format!("{field}[{i}]");
                self.string(item, &f).map(|s| (s, item.clone()))
            })
            .collect()
    }

    fn env_name(&mut self, node: &Node, field: &str, name: &str) -> bool {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.error(
                node,
                field,
                format!("`{name}` is not a valid variable name"),
                Some("use letters, digits and `_`, not starting with a digit".into()),
            );
            return false;
        }
        if name.starts_with(RESERVED_ENV_PREFIX) {
            self.error(
                node,
                field,
                format!("`{name}` is reserved: gantry sets the GANTRY_* variables itself"),
                None,
            );
            return false;
        }
        true
    }

    fn env(&mut self, node: &Node, field: &str) -> Vec<(String, String)> {
        let Value::Map(entries) = &node.value else {
            if node.value != Value::Null {
                self.error(
                    node,
                    field,
                    format!(
                        "env must be a mapping of NAME: value, found {}",
                        node.kind_name()
                    ),
                    None,
                );
            }
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for (key, value) in entries {
            let Some(name) = key.as_scalar() else {
                self.error(key, field, "variable names must be plain strings", None);
                continue;
            };
            let f = join(field, name);
            if !self.env_name(key, &f, name) {
                continue;
            }
            if out.iter().any(|(n, _)| n == name) {
                self.error(key, &f, format!("duplicate variable `{name}`"), None);
                continue;
            }
            match &value.value {
                Value::Scalar { text, .. } => out.push((name.to_string(), text.clone())),
                Value::Null => out.push((name.to_string(), String::new())),
                _ => self.error(
                    value,
                    &f,
                    format!(
                        "the value of `{name}` must be a string, number or boolean, found {}",
                        value.kind_name()
                    ),
                    None,
                ),
            }
        }
        out
    }

    fn names_list(&mut self, node: &Node, field: &str, env_names: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (i, (name, item)) in self.string_list(node, field).into_iter().enumerate() {
            let f = format!("{field}[{i}]");
            if env_names && !self.env_name(&item, &f, &name) {
                continue;
            }
            if out.contains(&name) {
                self.error(&item, &f, format!("`{name}` is listed twice"), None);
                continue;
            }
            out.push(name);
        }
        out
    }

    /// Checks the whole document. Returns the pipeline when nothing is wrong.
    pub fn pipeline(&mut self, root: &Node) -> Option<Pipeline> {
        if root.value == Value::Null {
            self.error(
                root,
                "",
                "the pipeline file is empty",
                Some("start with `stages:`; see `gantry schema`".into()),
            );
            return None;
        }
        let top = self.fields(root, "", "the pipeline file", TOP_KEYS)?;
        let name = top.some("name").and_then(|n| self.name(n, "name"));
        let env = top
            .some("env")
            .map(|n| self.env(n, "env"))
            .unwrap_or_default();
        let pass_env = top
            .some("pass_env")
            .map(|n| self.names_list(n, "pass_env", true))
            .unwrap_or_default();
        let environments = top
            .get("environments")
            .map(|n| self.environments(n))
            .unwrap_or_default();

        let mut stages = Vec::new();
        match top.some("stages") {
            None => self.error(
                root,
                "stages",
                "the pipeline has no `stages`",
                Some("add `stages:` with at least one stage".into()),
            ),
            Some(node) => match &node.value {
                Value::Seq(items) if items.is_empty() => self.error(
                    node,
                    "stages",
                    "`stages` is empty",
                    Some("add at least one stage".into()),
                ),
                Value::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        stages.push(self.stage(item, i));
                    }
                }
                _ => self.error(
                    node,
                    "stages",
                    format!("`stages` must be a list, found {}", node.kind_name()),
                    None,
                ),
            },
        }
        let stages = self.cross_check(stages, &environments);
        let has_errors = self.diags.iter().any(|d| d.severity == Severity::Error);
        (!has_errors).then_some(Pipeline {
            name,
            env,
            pass_env,
            stages,
            environments: environments.into_iter().map(|(e, _)| e).collect(),
        })
    }

    fn stage(&mut self, node: &Node, index: usize) -> Option<(Stage, Node)> {
        let path = named_path("stages", node, index);
        let fields = self.fields(node, &path, "a stage", STAGE_KEYS)?;
        let name = self
            .required(&fields, node, "name", "a stage")
            .and_then(|n| self.name(n, &fields.field("name")));
        let kind = match (fields.get("jobs"), fields.get("deploy")) {
            (Some(_), Some(deploy)) => {
                self.error(
                    deploy,
                    &join(&path, "deploy"),
                    "a stage has either `jobs` or `deploy`, not both",
                    Some("move the deploy into a stage of its own".into()),
                );
                None
            }
            (None, None) => {
                if !fields
                    .suggested
                    .iter()
                    .any(|k| *k == "jobs" || *k == "deploy")
                {
                    self.error(node, &path, "a stage needs `jobs` or `deploy`", None);
                }
                None
            }
            (Some(jobs), None) => self.jobs(jobs, &join(&path, "jobs")).map(StageKind::Jobs),
            (None, Some(deploy)) => self
                .deploy(deploy, &join(&path, "deploy"))
                .map(StageKind::Deploy),
        };
        Some((
            Stage {
                name: name?,
                kind: kind?,
            },
            node.clone(),
        ))
    }

    fn jobs(&mut self, node: &Node, path: &str) -> Option<Vec<Job>> {
        let items = match &node.value {
            Value::Seq(items) if items.is_empty() => {
                self.error(
                    node,
                    path,
                    "empty stage: `jobs` has no job",
                    Some("add a job, or remove the stage".into()),
                );
                return None;
            }
            Value::Null => {
                self.error(
                    node,
                    path,
                    "empty stage: `jobs` has no job",
                    Some("add a job, or remove the stage".into()),
                );
                return None;
            }
            Value::Seq(items) => items,
            _ => {
                self.error(
                    node,
                    path,
                    format!("`jobs` must be a list, found {}", node.kind_name()),
                    None,
                );
                return None;
            }
        };
        let jobs: Vec<Option<Job>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| self.job(item, &named_path(path, item, i)))
            .collect();
        jobs.into_iter().collect()
    }

    fn job(&mut self, node: &Node, path: &str) -> Option<Job> {
        let fields = self.fields(node, path, "a job", JOB_KEYS)?;
        let name = self
            .required(&fields, node, "name", "a job")
            .and_then(|n| self.name(n, &fields.field("name")));
        let field = |k: &str| join(path, k);
        let steps = match (fields.get("run"), fields.get("steps")) {
            (Some(_), Some(steps)) => {
                self.error(
                    steps,
                    &field("steps"),
                    "a job has either `run` or `steps`, not both",
                    Some("put the `run` command in `steps` as its first step".into()),
                );
                None
            }
            (None, None) => {
                if !fields
                    .suggested
                    .iter()
                    .any(|k| *k == "run" || *k == "steps")
                {
                    self.error(
                        node,
                        path,
                        "a job needs `run` or `steps`",
                        Some("add `run: <shell command>`".into()),
                    );
                }
                None
            }
            (Some(run), None) => self.run_text(run, &field("run")).map(|run| {
                vec![Step {
                    name: step_name(&run),
                    run,
                    env: Vec::new(),
                    timeout: None,
                }]
            }),
            (None, Some(steps)) => self.steps(steps, &field("steps")),
        };
        let env = fields
            .some("env")
            .map(|n| self.env(n, &field("env")))
            .unwrap_or_default();
        let pass_env = fields
            .some("pass_env")
            .map(|n| self.names_list(n, &field("pass_env"), true))
            .unwrap_or_default();
        let secrets = fields
            .some("secrets")
            .map(|n| self.names_list(n, &field("secrets"), true))
            .unwrap_or_default();
        let timeout = fields
            .some("timeout")
            .map(|n| self.duration(n, &field("timeout")));
        let retries = fields
            .some("retries")
            .map(|n| self.uint(n, &field("retries"), MAX_RETRIES));
        let allow_failure = fields
            .some("allow_failure")
            .map(|n| self.bool(n, &field("allow_failure")));
        let artifacts = fields
            .some("artifacts")
            .map(|n| self.artifacts(n, &field("artifacts")))
            .unwrap_or(Some(Vec::new()));
        let (needs, needs_from) = fields
            .some("needs")
            .map(|n| self.needs(n, &field("needs")))
            .unwrap_or_default();
        Some(Job {
            name: name?,
            steps: steps?,
            env,
            pass_env,
            secrets,
            timeout: timeout.flatten(),
            retries: retries.unwrap_or(Some(0))?,
            allow_failure: allow_failure.unwrap_or(Some(false))?,
            artifacts: artifacts?,
            needs,
            needs_from,
        })
    }

    fn run_text(&mut self, node: &Node, field: &str) -> Option<String> {
        let run = self.string(node, field)?;
        if run.trim().is_empty() {
            self.error(node, field, "the command is empty", None);
            return None;
        }
        Some(run)
    }

    fn steps(&mut self, node: &Node, path: &str) -> Option<Vec<Step>> {
        let items = match &node.value {
            Value::Seq(items) if !items.is_empty() => items,
            _ => {
                self.error(
                    node,
                    path,
                    "`steps` must be a non-empty list of steps",
                    Some("each step is `- run: <command>` (with an optional `name`)".into()),
                );
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let f = format!("{path}[{i}]");
            // A bare string is a step too: `steps: [make, make test]`.
            if let Value::Scalar { .. } = item.value {
                match self.run_text(item, &f) {
                    Some(run) => out.push(Step {
                        name: step_name(&run),
                        run,
                        env: Vec::new(),
                        timeout: None,
                    }),
                    None => ok = false,
                }
                continue;
            }
            let Some(fields) = self.fields(item, &f, "a step", STEP_KEYS) else {
                ok = false;
                continue;
            };
            let run = self
                .required(&fields, item, "run", "a step")
                .and_then(|n| self.run_text(n, &fields.field("run")));
            let name = match fields.some("name") {
                Some(n) => self.name(n, &fields.field("name")),
                None => run.as_deref().map(step_name),
            };
            let env = fields
                .some("env")
                .map(|n| self.env(n, &fields.field("env")))
                .unwrap_or_default();
            let timeout = match fields.some("timeout") {
                Some(n) => match self.duration(n, &fields.field("timeout")) {
                    Some(d) => Some(d),
                    None => {
                        ok = false;
                        None
                    }
                },
                None => None,
            };
            match (name, run) {
                (Some(name), Some(run)) => out.push(Step {
                    name,
                    run,
                    env,
                    timeout,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `needs`: names of this run's artifacts, and `{ project, artifact, branch, path }` for
    /// another project's.
    fn needs(&mut self, node: &Node, field: &str) -> (Vec<String>, Vec<ProjectArtifact>) {
        let Value::Seq(items) = &node.value else {
            // One name alone is still a list of names.
            return (self.names_list(node, field, false), Vec::new());
        };
        let mut names: Vec<String> = Vec::new();
        let mut external = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            if !matches!(item.value, Value::Map(_)) {
                if let Some(name) = self.string(item, &f) {
                    if names.contains(&name) {
                        self.error(item, &f, format!("`{name}` is listed twice"), None);
                    } else {
                        names.push(name);
                    }
                }
                continue;
            }
            let what = "an artifact of another project";
            let Some(fields) = self.fields(item, &f, what, NEED_KEYS) else {
                continue;
            };
            let project = self
                .required(&fields, item, "project", what)
                .and_then(|n| self.name(n, &fields.field("project")));
            let artifact = self
                .required(&fields, item, "artifact", what)
                .and_then(|n| self.name(n, &fields.field("artifact")));
            let branch = fields
                .some("branch")
                .and_then(|n| self.string(n, &fields.field("branch")));
            let path = fields.some("path").and_then(|n| {
                let p = self.string(n, &fields.field("path"))?;
                if let Some(problem) = path_problem(&p) {
                    self.error(
                        n,
                        &fields.field("path"),
                        format!("path `{p}` {problem}"),
                        Some("paths are relative to the job's workspace".into()),
                    );
                    return None;
                }
                Some(p)
            });
            if let (Some(project), Some(artifact)) = (project, artifact) {
                external.push(ProjectArtifact {
                    project,
                    artifact,
                    branch,
                    path,
                });
            }
        }
        (names, external)
    }

    fn artifacts(&mut self, node: &Node, path: &str) -> Option<Vec<ArtifactSpec>> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node,
                path,
                format!("`artifacts` must be a list, found {}", node.kind_name()),
                Some("each artifact is `- name: app` with `path: dist/`".into()),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let f = format!("{path}[{i}]");
            let Some(fields) = self.fields(item, &f, "an artifact", ARTIFACT_KEYS) else {
                ok = false;
                continue;
            };
            let name = self
                .required(&fields, item, "name", "an artifact")
                .and_then(|n| self.name(n, &fields.field("name")));
            let paths = self
                .required(&fields, item, "path", "an artifact")
                .map(|n| {
                    let field = fields.field("path");
                    let mut good = Vec::new();
                    for (p, pnode) in self.string_list(n, &field) {
                        if let Some(problem) = path_problem(&p) {
                            self.error(
                                &pnode,
                                &field,
                                format!("artifact path `{p}` {problem}"),
                                Some("artifact paths are relative to the job's workspace".into()),
                            );
                        } else {
                            good.push(p);
                        }
                    }
                    good
                });
            match (name, paths) {
                (Some(name), Some(paths)) if !paths.is_empty() => {
                    out.push(ArtifactSpec { name, paths })
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn deploy(&mut self, node: &Node, path: &str) -> Option<DeploySpec> {
        let fields = self.fields(node, path, "a deploy", DEPLOY_KEYS)?;
        let environments = match (fields.some("environment"), fields.some("environments")) {
            (Some(_), Some(many)) => {
                self.error(
                    many,
                    &fields.field("environments"),
                    "use `environment` (one) or `environments` (waves), not both",
                    None,
                );
                None
            }
            (None, None) => {
                self.error(
                    node,
                    path,
                    "a deploy needs `environment` (or `environments` for waves)",
                    None,
                );
                None
            }
            (Some(one), None) => self
                .name(one, &fields.field("environment"))
                .map(|n| vec![n]),
            (None, Some(many)) => {
                let names = self.names_list(many, &fields.field("environments"), false);
                if names.is_empty() {
                    self.error(
                        many,
                        &fields.field("environments"),
                        "`environments` lists no environment",
                        None,
                    );
                    None
                } else {
                    Some(names)
                }
            }
        };
        let artifact = self
            .required(&fields, node, "artifact", "a deploy")
            .and_then(|n| self.name(n, &fields.field("artifact")));
        let bake = fields
            .some("bake")
            .map(|n| self.duration(n, &fields.field("bake")));
        Some(DeploySpec {
            environments: environments?,
            artifact: artifact?,
            bake: bake.flatten(),
        })
    }

    fn environments(&mut self, node: &Node) -> Vec<(EnvironmentSpec, Node)> {
        let Value::Map(entries) = &node.value else {
            if node.value != Value::Null {
                self.error(
                    node,
                    "environments",
                    format!(
                        "`environments` must be a mapping of name to environment, found {}",
                        node.kind_name()
                    ),
                    None,
                );
            }
            return Vec::new();
        };
        let mut out: Vec<(EnvironmentSpec, Node)> = Vec::new();
        for (key, value) in entries {
            let Some(name) = self.name(key, "environments") else {
                continue;
            };
            let path = format!("environments[{name}]");
            if out.iter().any(|(e, _)| e.name == name) {
                self.error(
                    key,
                    &path,
                    format!("environment `{name}` is described twice"),
                    None,
                );
                continue;
            }
            let mut spec = EnvironmentSpec::named(&name);
            if value.value != Value::Null {
                let Some(fields) = self.fields(value, &path, "an environment", ENVIRONMENT_KEYS)
                else {
                    continue;
                };
                self.environment(&mut spec, value, &fields);
            }
            out.push((spec, key.clone()));
        }
        out
    }

    /// Fills `spec` from an environment's mapping and checks that its parts fit together.
    fn environment(&mut self, spec: &mut EnvironmentSpec, node: &Node, fields: &Fields<'_>) {
        if let Some(k) = fields.some("keep") {
            match self.uint(k, &fields.field("keep"), 100) {
                Some(0) => self.error(
                    k,
                    &fields.field("keep"),
                    "`keep` must be at least 1: the live release is always kept",
                    None,
                ),
                Some(n) => spec.keep = n,
                None => {}
            }
        }
        if let Some(target) = fields.some("target") {
            spec.target = self.target(target, &fields.field("target"));
        }
        let health_node = fields.some("health");
        if let Some(h) = health_node
            && let Some(health) = self.health(h, &fields.field("health"))
        {
            spec.health = health;
        } else if matches!(spec.target, Some(TargetSpec::Process { .. })) {
            spec.health.check = HealthCheck::Tcp;
        }
        if let Some(r) = fields.some("router")
            && let Some(f) = self.fields(r, &fields.field("router"), "a router", ROUTER_KEYS)
            && let Some(listen) = self.required(&f, r, "listen", "a router")
        {
            let field = f.field("listen");
            if let Some(text) = self.string(listen, &field) {
                match text.parse::<std::net::SocketAddr>() {
                    Ok(_) => spec.router = Some(RouterSpec { listen: text }),
                    Err(_) => self.error(
                        listen,
                        &field,
                        format!("`{text}` is not an address to listen on"),
                        Some("write IP:PORT, for example 127.0.0.1:8102".into()),
                    ),
                }
            }
        }
        if let Some(b) = fields.some("bake") {
            spec.bake = self.duration(b, &fields.field("bake")).unwrap_or(spec.bake);
        }
        if let Some(p) = fields.some("keep_previous_running") {
            spec.keep_previous_running = self.duration(p, &fields.field("keep_previous_running"));
        }
        if let Some(n) = fields.some("strategy")
            && let Some(f) = self.fields(n, &fields.field("strategy"), "a strategy", STRATEGY_KEYS)
            && let Some(c) = f.some("canary")
        {
            spec.canary = self.canary(c, &f.field("canary"));
            if spec.canary.is_some() && !matches!(spec.target, Some(TargetSpec::Process { .. })) {
                self.error(
                    n,
                    &fields.field("strategy"),
                    "a canary splits traffic in gantry's router, which only `process` targets have",
                    None,
                );
            }
        }
        // The parts must fit together.
        match &spec.target {
            Some(TargetSpec::Process { .. })
                if spec.router.is_none() && fields.get("router").is_none() =>
            {
                self.error(
                    fields.some("target").unwrap_or(node),
                    &fields.field("target"),
                    "a `process` target serves users through gantry's router, and this environment has none",
                    Some("add `router: { listen: 127.0.0.1:8102 }` (any free address)".into()),
                );
            }
            Some(TargetSpec::Command { .. }) => {
                if let HealthCheck::Http { .. } | HealthCheck::Tcp = spec.health.check {
                    self.error(
                        health_node.unwrap_or(node),
                        &fields.field("health"),
                        "`http` and `tcp` checks need the release's port, which only `process` targets have",
                        Some("check a `command` target with `health: { command: ./check.sh }`".into()),
                    );
                }
            }
            _ => {}
        }
    }

    fn target(&mut self, node: &Node, path: &str) -> Option<TargetSpec> {
        let fields = self.fields(node, path, "a target", TARGET_KINDS)?;
        match fields.entries.len() {
            1 => {}
            0 => {
                self.error(
                    node,
                    path,
                    format!("a target needs one of: {}", TARGET_KINDS.join(", ")),
                    None,
                );
                return None;
            }
            _ => {
                self.error(
                    fields.entries[1].0,
                    path,
                    "a target has exactly one kind",
                    Some(format!("choose one of: {}", TARGET_KINDS.join(", "))),
                );
                return None;
            }
        }
        let (kind_node, body) = fields.entries[0];
        let kind = kind_node.as_scalar().unwrap_or_default();
        let field = fields.field(kind);
        match kind {
            "process" => {
                let f = self.fields(body, &field, "a process target", PROCESS_TARGET_KEYS)?;
                let command = self.required(&f, body, "command", "a process target");
                let command = command.and_then(|c| self.run_text(c, &f.field("command")));
                let env = f.some("env").map(|e| self.env(e, &f.field("env")));
                Some(TargetSpec::Process {
                    command: command?,
                    env: env.unwrap_or_default(),
                })
            }
            "command" => {
                let f = self.fields(body, &field, "a command target", COMMAND_TARGET_KEYS)?;
                let deploy = self.required(&f, body, "deploy", "a command target");
                let deploy = deploy.and_then(|c| self.run_text(c, &f.field("deploy")));
                let rollback = f
                    .some("rollback")
                    .and_then(|c| self.run_text(c, &f.field("rollback")));
                let env = f.some("env").map(|e| self.env(e, &f.field("env")));
                Some(TargetSpec::Command {
                    deploy: deploy?,
                    rollback,
                    env: env.unwrap_or_default(),
                })
            }
            other => {
                self.error(
                    kind_node,
                    &field,
                    format!("`{other}` targets are not available in this version of gantry"),
                    Some("use a `process` target (a supervised service) or a `command` target (your own deploy and rollback scripts)".into()),
                );
                None
            }
        }
    }

    fn canary(&mut self, node: &Node, path: &str) -> Option<CanarySpec> {
        let f = self.fields(node, path, "a canary", CANARY_KEYS)?;
        let mut ok = true;
        let users = match f.some("users") {
            Some(u) => {
                let users = self.users(u, &f.field("users"));
                ok &= users.is_some();
                users
            }
            None => None,
        };
        let mut steps = Vec::new();
        match f.some("steps") {
            Some(Node {
                value: Value::Seq(items),
                ..
            }) if !items.is_empty() => {
                let mut last = 0;
                for (i, item) in items.iter().enumerate() {
                    let field = format!("{}[{i}]", f.field("steps"));
                    match self.canary_step(item, &field) {
                        Some(CanaryStep::Weight { percent, pause }) => {
                            if percent < last {
                                self.error(
                                    item,
                                    &field,
                                    format!("weights only grow: {percent}% comes after {last}%"),
                                    Some("users only ever move from stable to the canary; to go back, abort".into()),
                                );
                                ok = false;
                            }
                            last = percent;
                            steps.push(CanaryStep::Weight { percent, pause });
                        }
                        Some(step) => steps.push(step),
                        None => ok = false,
                    }
                }
                if let Some(CanaryStep::Weight { percent: 0, .. }) = steps.first()
                    && users.as_ref().is_none_or(|u| u.allow.is_empty())
                {
                    self.warning(
                        &items[0],
                        &format!("{}[0]", f.field("steps")),
                        "a 0% step sends the canary no one: only named users (`users.allow`) and the X-Gantry-Release header reach it",
                        None,
                    );
                }
            }
            Some(other) => {
                self.error(
                    other,
                    &f.field("steps"),
                    "`steps` lists the canary's steps: `- weight: 10` with `pause: 5m`, or `- approval: true`",
                    None,
                );
                ok = false;
            }
            None => {
                self.required(&f, node, "steps", "a canary");
                ok = false;
            }
        }
        let analysis = match f.some("analysis") {
            Some(a) => {
                let analysis = self.analysis(a, &f.field("analysis"));
                ok &= analysis.is_some();
                analysis.unwrap_or_default()
            }
            None => AnalysisSpec::default(),
        };
        ok.then_some(CanarySpec {
            users,
            steps,
            analysis,
        })
    }

    fn users(&mut self, node: &Node, path: &str) -> Option<UserSpec> {
        let f = self.fields(node, path, "a user key", USERS_KEYS)?;
        let key = match (f.some("header"), f.some("cookie")) {
            (Some(h), None) => UserKey::Header(self.string(h, &f.field("header"))?),
            (None, Some(c)) => UserKey::Cookie(self.string(c, &f.field("cookie"))?),
            (Some(_), Some(c)) => {
                self.error(
                    c,
                    &f.field("cookie"),
                    "a user is named by a `header` or a `cookie`, not both",
                    None,
                );
                return None;
            }
            (None, None) => {
                self.error(
                    node,
                    path,
                    "`users` needs `header` (for example X-User) or `cookie` (its name)",
                    None,
                );
                return None;
            }
        };
        let allow = match f.some("allow") {
            Some(a) => self
                .string_list(a, &f.field("allow"))
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
            None => Vec::new(),
        };
        Some(UserSpec { key, allow })
    }

    fn canary_step(&mut self, node: &Node, path: &str) -> Option<CanaryStep> {
        let f = self.fields(node, path, "a canary step", CANARY_STEP_KEYS)?;
        if let Some(a) = f.some("approval") {
            if f.some("weight").is_some() || f.some("pause").is_some() {
                self.error(
                    node,
                    path,
                    "an approval step has only `approval: true`; put the weight in its own step",
                    None,
                );
                return None;
            }
            return match self.bool(a, &f.field("approval"))? {
                true => Some(CanaryStep::Approval),
                false => {
                    self.error(
                        a,
                        &f.field("approval"),
                        "write `approval: true`, or leave the step out",
                        None,
                    );
                    None
                }
            };
        }
        let weight = self.required(&f, node, "weight", "a canary step")?;
        let percent = self.uint(weight, &f.field("weight"), 100)?;
        let pause = match f.some("pause") {
            Some(p) => Some(self.duration(p, &f.field("pause"))?),
            None => None,
        };
        Some(CanaryStep::Weight { percent, pause })
    }

    fn analysis(&mut self, node: &Node, path: &str) -> Option<AnalysisSpec> {
        let f = self.fields(node, path, "an analysis", ANALYSIS_KEYS)?;
        let mut spec = AnalysisSpec::default();
        let mut ok = true;
        if let Some(r) = f.some("max_error_rate") {
            let field = f.field("max_error_rate");
            match r.as_scalar().and_then(|t| t.parse::<f64>().ok()) {
                Some(v) if (0.0..=1.0).contains(&v) => {
                    spec.max_error_rate_ppm = Some((v * 1_000_000.0).round() as u32)
                }
                _ => {
                    self.error(
                        r,
                        &field,
                        "`max_error_rate` is a share of requests from 0 to 1",
                        Some("for example 0.01 (1% of the canary's answers may be 5xx)".into()),
                    );
                    ok = false;
                }
            }
        }
        if let Some(p) = f.some("max_p99_ms") {
            match self.uint(p, &f.field("max_p99_ms"), 3_600_000) {
                Some(v) => spec.max_p99_ms = Some(u64::from(v)),
                None => ok = false,
            }
        }
        if let Some(m) = f.some("min_requests") {
            match self.uint(m, &f.field("min_requests"), 100_000_000) {
                Some(v) => spec.min_requests = u64::from(v),
                None => ok = false,
            }
        }
        if let Some(c) = f.some("compare_to_stable") {
            match self.bool(c, &f.field("compare_to_stable")) {
                Some(v) => spec.compare_to_stable = v,
                None => ok = false,
            }
        }
        if let Some(d) = f.some("deadline") {
            match self.duration(d, &f.field("deadline")) {
                Some(v) => spec.deadline = v,
                None => ok = false,
            }
        }
        ok.then_some(spec)
    }

    fn health(&mut self, node: &Node, path: &str) -> Option<HealthSpec> {
        let f = self.fields(node, path, "a health check", HEALTH_KEYS)?;
        let mut spec = EnvironmentSpec::named("").health;
        let mut ok = true;
        let kinds: Vec<&str> = ["http", "tcp", "command"]
            .into_iter()
            .filter(|k| f.some(k).is_some())
            .collect();
        if kinds.len() > 1 {
            self.error(
                f.some(kinds[1]).unwrap_or(node),
                &f.field(kinds[1]),
                format!(
                    "a health check is one of `http`, `tcp` or `command`; this one has `{}` and `{}`",
                    kinds[0], kinds[1]
                ),
                None,
            );
            ok = false;
        } else if let Some(h) = f.some("http") {
            match self.string(h, &f.field("http")) {
                Some(text) if text.starts_with('/') => {
                    spec.check = HealthCheck::Http { path: text }
                }
                Some(text) => {
                    self.error(
                        h,
                        &f.field("http"),
                        format!("`{text}` is not a path"),
                        Some("write the path the check requests, for example /healthz".into()),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        } else if let Some(t) = f.some("tcp") {
            match self.bool(t, &f.field("tcp")) {
                Some(true) => spec.check = HealthCheck::Tcp,
                Some(false) => spec.check = HealthCheck::None,
                None => ok = false,
            }
        } else if let Some(c) = f.some("command") {
            match self.run_text(c, &f.field("command")) {
                Some(command) => spec.check = HealthCheck::Command { command },
                None => ok = false,
            }
        }
        if let Some(t) = f.some("timeout") {
            match self.duration(t, &f.field("timeout")) {
                Some(d) => spec.timeout = d,
                None => ok = false,
            }
        }
        if let Some(i) = f.some("interval") {
            match self.duration(i, &f.field("interval")) {
                Some(d) => spec.interval = d,
                None => ok = false,
            }
        }
        ok.then_some(spec)
    }

    /// Checks across stages: unique stage, job and artifact names; deploys name an artifact made
    /// by an earlier stage.
    fn cross_check(
        &mut self,
        stages: Vec<Option<(Stage, Node)>>,
        environments: &[(EnvironmentSpec, Node)],
    ) -> Vec<Stage> {
        let mut stage_names: HashMap<String, usize> = HashMap::new(); // name -> line
        let mut job_names: HashMap<String, String> = HashMap::new();
        // artifact name -> (stage index, job name)
        let mut artifacts: HashMap<String, (usize, String)> = HashMap::new();
        let mut later_artifacts: Vec<(String, usize)> = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            let Some((stage, _)) = s else { continue };
            if let StageKind::Jobs(jobs) = &stage.kind {
                for job in jobs {
                    for a in &job.artifacts {
                        later_artifacts.push((a.name.clone(), i));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (i, s) in stages.into_iter().enumerate() {
            let Some((stage, node)) = s else { continue };
            let name_node = find_key_value(&node, "name").unwrap_or(&node);
            if let Some(first) = stage_names.insert(stage.name.clone(), name_node.pos.line) {
                self.error(
                    name_node,
                    &format!("stages[{}].name", stage.name),
                    format!("duplicate stage name `{}`", stage.name),
                    Some(format!(
                        "the stage on line {first} has the same name; stage names are unique"
                    )),
                );
            }
            match &stage.kind {
                StageKind::Jobs(jobs) => {
                    // Needs resolve against earlier stages only: check them before this
                    // stage's own artifacts join the map.
                    let stage_node = &node;
                    for (j, job) in jobs.iter().enumerate() {
                        let needs_node = find_key_value(stage_node, "jobs")
                            .and_then(|n| match &n.value {
                                Value::Seq(items) => items.get(j),
                                _ => None,
                            })
                            .and_then(|n| find_key_value(n, "needs"));
                        for (k, need) in job.needs.iter().enumerate() {
                            let need_node = needs_node
                                .and_then(|n| match &n.value {
                                    Value::Seq(items) => items
                                        .iter()
                                        .filter(|i| !matches!(i.value, Value::Map(_)))
                                        .nth(k),
                                    _ => Some(n),
                                })
                                .unwrap_or(stage_node);
                            let field = format!("stages[{}].jobs[{}].needs", stage.name, job.name);
                            self.artifact_ref(
                                need,
                                need_node,
                                &field,
                                &artifacts,
                                &later_artifacts,
                                i,
                                "a job",
                            );
                        }
                    }
                    let job_nodes = find_key_value(&node, "jobs").and_then(|n| match &n.value {
                        Value::Seq(items) => Some(items),
                        _ => None,
                    });
                    for (j, job) in jobs.iter().enumerate() {
                        let job_node = job_nodes.and_then(|n| n.get(j));
                        let jname_node = job_node
                            .and_then(|n| find_key_value(n, "name"))
                            .unwrap_or(&node);
                        let path = format!("stages[{}].jobs[{}]", stage.name, job.name);
                        if let Some(other_stage) =
                            job_names.insert(job.name.clone(), stage.name.clone())
                        {
                            self.error(jname_node, &join(&path, "name"), format!("duplicate job name `{}`", job.name), Some(format!("a job of stage `{other_stage}` has the same name; job names are unique in a pipeline")));
                        }
                        for (k, a) in job.artifacts.iter().enumerate() {
                            let anode = job_node
                                .and_then(|n| find_key_value(n, "artifacts"))
                                .and_then(|n| match &n.value {
                                    Value::Seq(items) => items.get(k),
                                    _ => None,
                                })
                                .and_then(|n| find_key_value(n, "name"))
                                .unwrap_or(jname_node);
                            if let Some((_, other_job)) =
                                artifacts.insert(a.name.clone(), (i, job.name.clone()))
                            {
                                self.error(anode, &format!("{path}.artifacts[{}]", a.name), format!("duplicate artifact name `{}`", a.name), Some(format!("job `{other_job}` already produces an artifact of this name")));
                            }
                        }
                    }
                }
                StageKind::Deploy(deploy) => {
                    let dnode = find_key_value(&node, "deploy").unwrap_or(&node);
                    let art_node = find_key_value(dnode, "artifact").unwrap_or(dnode);
                    let field = format!("stages[{}].deploy.artifact", stage.name);
                    self.artifact_ref(
                        &deploy.artifact,
                        art_node,
                        &field,
                        &artifacts,
                        &later_artifacts,
                        i,
                        "a deploy",
                    );
                    for env in &deploy.environments {
                        if !environments.iter().any(|(e, _)| &e.name == env) {
                            let env_node = find_key_value(dnode, "environment")
                                .or_else(|| find_key_value(dnode, "environments"))
                                .unwrap_or(dnode);
                            let help = match suggest(
                                env,
                                environments.iter().map(|(e, _)| e.name.as_str()),
                            ) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!(
                                    "describe it under `environments: {{ {env}: ... }}` to deploy"
                                ),
                            };
                            self.warning(
                                env_node,
                                &format!("stages[{}].deploy", stage.name),
                                format!("environment `{env}` is not described in `environments`"),
                                Some(help),
                            );
                        }
                    }
                }
            }
            out.push(stage);
        }
        out
    }
}

/// `prefix[name]` when the node is a mapping with a plain `name`, else `prefix[index]`.
fn named_path(prefix: &str, node: &Node, index: usize) -> String {
    match find_key_value(node, "name").and_then(Node::as_scalar) {
        Some(name) if !name.is_empty() => format!("{prefix}[{name}]"),
        _ => format!("{prefix}[{index}]"),
    }
}

impl Checker {
    /// Checks that artifact `name`, used by a deploy or a job of stage `stage`, is produced by an
    /// earlier stage (`known`: artifacts of earlier stages; `later`: all, with their stage).
    #[allow(clippy::too_many_arguments)]
    fn artifact_ref(
        &mut self,
        name: &str,
        node: &Node,
        field: &str,
        known: &HashMap<String, (usize, String)>,
        later: &[(String, usize)],
        stage: usize,
        user: &str,
    ) {
        if known.contains_key(name) {
            return;
        }
        if later.iter().any(|(n, si)| n == name && *si >= stage) {
            self.error(
                node,
                field,
                format!("artifact `{name}` is produced by this or a later stage"),
                Some(format!(
                    "{user} can only use artifacts of stages before its own"
                )),
            );
            return;
        }
        let help = match suggest(name, known.keys().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None if known.is_empty() => "no job before this stage declares `artifacts`".to_string(),
            None => {
                let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
                names.sort();
                format!("artifacts of earlier stages: {}", names.join(", "))
            }
        };
        self.error(
            node,
            field,
            format!("unknown artifact `{name}`"),
            Some(help),
        );
    }
}

fn find_key_value<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.as_scalar() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Why a declared artifact path can never be inside the workspace, if it cannot.
fn path_problem(p: &str) -> Option<&'static str> {
    if p.trim().is_empty() {
        return Some("is empty");
    }
    if p.starts_with('/') || p.starts_with('~') {
        return Some("is absolute");
    }
    if p.split(['/', '\\']).any(|part| part == "..") {
        return Some("leaves the workspace (`..`)");
    }
    None
}

/// A step's default name: its first line, shortened.
fn step_name(run: &str) -> String {
    let first = run
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("step");
    if first.chars().count() > 60 {
        let cut: String = first.chars().take(57).collect();
        format!("{cut}...")
    } else {
        first.to_string()
    }
}
