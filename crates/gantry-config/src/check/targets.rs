//! Targets: each kind's keys and checks, and what the rest of the file may assume of it.

use super::*;

/// Every target kind the file may name; `docker` and `lambda` are reserved (refused with a
/// clear message until they exist).
pub const TARGET_KINDS: &[&str] = &["process", "command", "docker", "lambda"];
pub const PROCESS_TARGET_KEYS: &[&str] = &["command", "env"];
pub const COMMAND_TARGET_KEYS: &[&str] = &["deploy", "rollback", "env"];

/// Each target kind's JSON Schema, keyed by kind (`object` builds a closed object from a key
/// table and its properties; `shell` and `env` are the schemas of a script and of variables).
pub fn target_schemas(
    shell: &serde_json::Value,
    env: &serde_json::Value,
    object: fn(&[&str], serde_json::Value, &[&str]) -> serde_json::Value,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut kinds = serde_json::Map::new();
    kinds.insert(
        "process".into(),
        object(
            PROCESS_TARGET_KEYS,
            json!({ "command": shell, "env": env }),
            &["command"],
        ),
    );
    kinds.insert(
        "command".into(),
        object(
            COMMAND_TARGET_KEYS,
            json!({ "deploy": shell, "rollback": shell, "env": env }),
            &["deploy"],
        ),
    );
    for k in TARGET_KINDS {
        kinds
            .entry(k.to_string())
            .or_insert_with(|| json!({ "type": "object", "description": "not available yet" }));
    }
    kinds
}

impl Checker {
    pub(super) fn target(&mut self, node: &Node, path: &str) -> Option<TargetSpec> {
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
}
