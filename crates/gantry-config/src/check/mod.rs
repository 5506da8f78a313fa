//! Checks a pipeline document and lowers it into [`gantry_model::Pipeline`]. Every problem is
//! collected (the checker never stops at the first), each with its position and field path. The
//! key tables here and in [`targets`] are the single source of truth for which keys exist: the
//! JSON Schema in `schema.rs` is built from them too.
//!
//! This file holds the checker and its field primitives (strings, names, numbers, durations,
//! env maps); each section of the file is checked in a module of its own:
//! - [`stages`]: the top level, stages, jobs, steps, needs, artifacts, deploy stages.
//! - [`environments`]: environments, routers, health checks, and how their parts fit together.
//! - [`targets`]: each target kind's keys and checks.
//! - [`canary`]: canary strategies (users, steps, analysis).
//! - [`rules`]: `when:` on stages (branches, events).
//! - [`cross`]: checks across stages (unique names, artifacts made before they are used).
//! - [`graph`]: `needs` on jobs (the job graph), its cycles.
//! - [`caches`]: `cache:` on jobs (keys, paths, restore keys).
//! - [`container`]: `image:` (a name) and `resources:` on jobs.
//! - [`matrix`]: `matrix:` on jobs, expanded into one job per combination.

mod caches;
mod canary;
mod container;
mod cross;
mod environments;
mod graph;
mod matrix;
mod rules;
mod stages;
mod targets;

pub use caches::CACHE_KEYS;
pub use container::{SERVICE_HEALTH_KEYS, SERVICE_KEYS};
pub use rules::WHEN_KEYS;
pub use targets::target_schemas;

use crate::diagnostic::{Diagnostic, Severity, suggest};
use crate::field;
use crate::yaml::{Node, Pos, Value};
use gantry_model::{
    AnalysisSpec, ArtifactSpec, CanarySpec, CanaryStep, DeploySpec, DockerTarget, EnvironmentSpec,
    HealthCheck, HealthSpec, ImageBuild, ImagePush, Job, LambdaCreate, LambdaTarget, Pipeline,
    ProjectArtifact, RESERVED_ENV_PREFIX, RouterSpec, Routing, Stage, StageKind, Step, TargetSpec,
    UserKey, UserSpec,
};
use std::collections::HashMap;
use std::time::Duration;

pub const TOP_KEYS: &[&str] = &["name", "env", "pass_env", "image", "stages", "environments"];
pub const STAGE_KEYS: &[&str] = &["name", "when", "if", "jobs", "deploy", "approval"];
pub const APPROVAL_KEYS: &[&str] = &["roles", "timeout", "supersede"];
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
    "image",
    "matrix",
    "when",
    "if",
    "cache",
    "resources",
    "services",
    "runs_on",
];
pub const RESOURCES_KEYS: &[&str] = &["memory", "cpus"];
pub const IMAGE_BUILD_KEYS: &[&str] = &["name", "context", "file", "push"];
pub const IMAGE_PUSH_KEYS: &[&str] = &["to", "username", "password_secret"];
pub const STEP_KEYS: &[&str] = &["name", "run", "env", "timeout"];
pub const ARTIFACT_KEYS: &[&str] = &["name", "path", "image", "push"];
pub const NEED_KEYS: &[&str] = &["project", "artifact", "branch", "path", "job"];
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
pub const MAX_RETRIES: u32 = 10;

#[derive(Default)]
pub(crate) struct Checker {
    pub diags: Vec<Diagnostic>,
    /// The jobs and artifacts the file names (read first, for `needs`).
    names: graph::Names,
    /// The pipeline's `image:`: the image of every job that names none.
    pipeline_image: Option<String>,
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
                let (problem, guess) = field::unknown_key(name, known, what);
                suggested.extend(guess);
                self.error(key, &join(path, name), problem.message, problem.help);
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
        field::duration(&text, false, "90s, 10m, 1h30m")
            .map_err(|p| self.error(node, field, p.message, p.help))
            .ok()
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
}

/// `prefix[name]` when the node is a mapping with a plain `name`, else `prefix[index]`.
fn named_path(prefix: &str, node: &Node, index: usize) -> String {
    match find_key_value(node, "name").and_then(Node::as_scalar) {
        Some(name) if !name.is_empty() => format!("{prefix}[{name}]"),
        _ => format!("{prefix}[{index}]"),
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
