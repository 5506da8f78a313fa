//! Targets: each kind's keys and checks, and what the rest of the file may assume of it.

use super::*;

/// Every target kind the file may name; `lambda` is reserved (refused with a clear message
/// until it exists).
pub const TARGET_KINDS: &[&str] = &["process", "command", "docker", "lambda"];
pub const PROCESS_TARGET_KEYS: &[&str] = &["command", "env"];
pub const COMMAND_TARGET_KEYS: &[&str] = &["deploy", "rollback", "env"];
pub const DOCKER_TARGET_KEYS: &[&str] = &[
    "port", "host", "env", "volumes", "memory", "cpus", "command", "labels",
];

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
    kinds.insert(
        "docker".into(),
        object(
            DOCKER_TARGET_KEYS,
            json!({
                "port": { "type": "integer", "minimum": 1, "maximum": 65535, "description": "The port the container listens on" },
                "host": { "type": "string", "description": "The Docker Engine API address (unix:///…, tcp://…); default DOCKER_HOST, else the usual sockets" },
                "env": env,
                "volumes": { "type": "array", "items": { "type": "string" }, "description": "host-path:container-path[:ro] or volume:container-path" },
                "memory": { "type": "string", "description": "Memory limit: 64m, 1g, 512k or bytes" },
                "cpus": { "type": ["string", "number"], "description": "CPU limit: 0.5, 2" },
                "command": { "type": "array", "items": { "type": "string" }, "description": "Replaces the image's command" },
                "labels": { "type": "object", "additionalProperties": { "type": "string" } }
            }),
            &["port"],
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
            "docker" => self.docker_target(body, &field).map(TargetSpec::Docker),
            other => {
                self.error(
                    kind_node,
                    &field,
                    format!("`{other}` targets are not available in this version of gantry"),
                    Some("use a `process` target (a supervised service), a `docker` target (a container per release) or a `command` target (your own deploy and rollback scripts)".into()),
                );
                None
            }
        }
    }
}

impl Checker {
    fn docker_target(&mut self, body: &Node, field: &str) -> Option<DockerTarget> {
        let f = self.fields(body, field, "a docker target", DOCKER_TARGET_KEYS)?;
        let mut t = DockerTarget::default();
        let mut ok = true;
        match self.required(&f, body, "port", "a docker target") {
            Some(p) => match self.uint(p, &f.field("port"), 65_535) {
                Some(0) => {
                    self.error(
                        p,
                        &f.field("port"),
                        "port 0 is not a port a container listens on",
                        None,
                    );
                    ok = false;
                }
                Some(n) => t.port = n as u16,
                None => ok = false,
            },
            None => ok = false,
        }
        if let Some(h) = f.some("host") {
            let hf = f.field("host");
            match self.string(h, &hf) {
                Some(host)
                    if ["unix://", "tcp://", "http://", "https://"]
                        .iter()
                        .any(|p| host.starts_with(p) && host.len() > p.len()) =>
                {
                    t.host = Some(host)
                }
                Some(host) => {
                    self.error(
                        h,
                        &hf,
                        format!("`{host}` is not a Docker Engine address"),
                        Some("write unix:///var/run/docker.sock, unix:///run/podman/podman.sock or tcp://HOST:2375".into()),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(e) = f.some("env") {
            t.env = self.env(e, &f.field("env"));
        }
        if let Some(v) = f.some("volumes") {
            let vf = f.field("volumes");
            for (spec, node) in self.string_list(v, &vf) {
                let parts: Vec<&str> = spec.split(':').collect();
                let good = (parts.len() == 2
                    || (parts.len() == 3 && matches!(parts[2], "ro" | "rw")))
                    && !parts[0].is_empty()
                    && parts[1].starts_with('/');
                if good {
                    t.volumes.push(spec);
                } else {
                    self.error(
                        &node,
                        &vf,
                        format!("`{spec}` is not a volume"),
                        Some("write /host/path:/container/path, /host/path:/container/path:ro or name:/container/path".into()),
                    );
                    ok = false;
                }
            }
        }
        if let Some(m) = f.some("memory") {
            let mf = f.field("memory");
            match self.string(m, &mf).map(|text| (memory_bytes(&text), text)) {
                Some((Some(bytes), _)) => t.memory_bytes = Some(bytes),
                Some((None, text)) => {
                    self.error(
                        m,
                        &mf,
                        format!("`{text}` is not an amount of memory"),
                        Some("write 64m, 1g, 512k or a number of bytes (at least 6m)".into()),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(c) = f.some("cpus") {
            let cf = f.field("cpus");
            match self.string(c, &cf).map(|text| (nano_cpus(&text), text)) {
                Some((Some(n), _)) => t.nano_cpus = Some(n),
                Some((None, text)) => {
                    self.error(
                        c,
                        &cf,
                        format!("`{text}` is not a number of CPUs"),
                        Some("write 0.5, 1 or 2 (more than 0, at most 1024)".into()),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(c) = f.some("command") {
            let words: Vec<String> = self
                .string_list(c, &f.field("command"))
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            if words.is_empty() {
                self.error(
                    c,
                    &f.field("command"),
                    "`command` needs at least the program",
                    None,
                );
                ok = false;
            } else {
                t.command = Some(words);
            }
        }
        if let Some(l) = f.some("labels") {
            let lf = f.field("labels");
            for (k, v) in self.env_like_map(l, &lf) {
                if k.starts_with("gantry.") {
                    self.error(
                        l,
                        &lf,
                        format!("label `{k}` is reserved: gantry sets the gantry.* labels itself"),
                        None,
                    );
                    ok = false;
                } else {
                    t.labels.push((k, v));
                }
            }
        }
        ok.then_some(t)
    }

    /// A mapping of strings to strings (labels), without the variable-name rules of `env`.
    fn env_like_map(&mut self, node: &Node, field: &str) -> Vec<(String, String)> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node,
                field,
                format!(
                    "expected a mapping of name: value, found {}",
                    node.kind_name()
                ),
                None,
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let key = k.as_scalar().unwrap_or_default().to_string();
            if let Some(value) = self.string(v, &format!("{field}.{key}")) {
                out.push((key, value));
            }
        }
        out
    }
}

/// `64m`, `1g`, `512k`, `1048576` → bytes; `None` if it is not one, or under the engine's 6 MiB.
fn memory_bytes(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (number, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    let bytes = number.parse::<u64>().ok()?.checked_mul(scale)?;
    (bytes >= 6 << 20 && bytes <= i64::MAX as u64).then_some(bytes)
}

/// `0.5` → 500_000_000 (the engine's NanoCPUs); `None` unless 0 < cpus <= 1024.
fn nano_cpus(text: &str) -> Option<u64> {
    let cpus: f64 = text.trim().parse().ok()?;
    (cpus > 0.0 && cpus <= 1024.0 && cpus.is_finite()).then(|| (cpus * 1e9).round() as u64)
}

#[cfg(test)]
mod docker_tests {
    use super::{memory_bytes, nano_cpus};

    #[test]
    fn limits_read_as_the_engine_counts_them() {
        for (text, bytes) in [
            ("64m", Some(64 << 20)),
            ("1g", Some(1 << 30)),
            ("1G", Some(1 << 30)),
            ("8192k", Some(8 << 20)),
            ("10485760", Some(10 << 20)),
            ("64mb", Some(64 << 20)),
            ("1m", None),
            ("lots", None),
            ("-5m", None),
            ("99999999999999999999g", None),
        ] {
            assert_eq!(memory_bytes(text), bytes, "{text}");
        }
        for (text, n) in [
            ("0.5", Some(500_000_000)),
            ("2", Some(2_000_000_000)),
            ("0", None),
            ("-1", None),
            ("NaN", None),
            ("inf", None),
            ("one", None),
        ] {
            assert_eq!(nano_cpus(text), n, "{text}");
        }
    }
}
