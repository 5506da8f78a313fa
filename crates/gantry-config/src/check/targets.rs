//! Targets: each kind's keys and checks, and what the rest of the file may assume of it.

use super::*;

/// Every target kind the file may name.
pub const TARGET_KINDS: &[&str] = &["process", "command", "docker", "lambda"];
pub const PROCESS_TARGET_KEYS: &[&str] = &["command", "env"];
pub const COMMAND_TARGET_KEYS: &[&str] = &["deploy", "rollback", "env"];
pub const LAMBDA_TARGET_KEYS: &[&str] = &[
    "function", "region", "alias", "endpoint", "role", "runtime", "handler", "memory", "timeout",
    "env",
];
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
    kinds.insert(
        "lambda".into(),
        object(
            LAMBDA_TARGET_KEYS,
            json!({
                "function": { "type": "string", "description": "The function's name or ARN" },
                "region": { "type": "string", "description": "AWS region, e.g. eu-west-1" },
                "alias": { "type": "string", "description": "The alias users call (default live)" },
                "endpoint": { "type": "string", "description": "Another endpoint than AWS's (LocalStack, moto)" },
                "role": { "type": "string", "description": "Execution role ARN: with runtime and handler, the function is created when missing" },
                "runtime": { "type": "string", "description": "e.g. python3.12" },
                "handler": { "type": "string", "description": "e.g. app.handler" },
                "memory": { "type": "integer", "minimum": 128, "maximum": 10240, "description": "MB" },
                "timeout": { "type": "string", "description": "1s to 15m" },
                "env": env
            }),
            &["function", "region"],
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
            "lambda" => self.lambda_target(body, &field).map(TargetSpec::Lambda),
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
    fn lambda_target(&mut self, body: &Node, field: &str) -> Option<LambdaTarget> {
        let f = self.fields(body, field, "a lambda target", LAMBDA_TARGET_KEYS)?;
        let mut t = LambdaTarget {
            alias: "live".into(),
            ..LambdaTarget::default()
        };
        let mut ok = true;
        let text =
            |c: &mut Checker, key: &str, check: fn(&str) -> Option<&'static str>, help: &str| {
                let node = f.some(key)?;
                let kf = f.field(key);
                let value = c.string(node, &kf)?;
                match check(&value) {
                    None => Some(value),
                    Some(problem) => {
                        c.error(
                            node,
                            &kf,
                            format!("`{value}` {problem}"),
                            Some(help.to_string()),
                        );
                        None
                    }
                }
            };
        match text(
            self,
            "function",
            function_problem,
            "a name of letters, digits, `-` and `_` (at most 64), or the function's ARN",
        ) {
            Some(v) => t.function = v,
            None => {
                if f.some("function").is_none() {
                    self.required(&f, body, "function", "a lambda target");
                }
                ok = false;
            }
        }
        match text(
            self,
            "region",
            region_problem,
            "an AWS region such as us-east-1 or eu-west-1",
        ) {
            Some(v) => t.region = v,
            None => {
                if f.some("region").is_none() {
                    self.required(&f, body, "region", "a lambda target");
                }
                ok = false;
            }
        }
        if f.some("alias").is_some() {
            match text(
                self,
                "alias",
                alias_problem,
                "letters, digits, `-` and `_`, not only digits",
            ) {
                Some(v) => t.alias = v,
                None => ok = false,
            }
        }
        if f.some("endpoint").is_some() {
            match text(
                self,
                "endpoint",
                endpoint_problem,
                "write http://127.0.0.1:4566 or https://…",
            ) {
                Some(v) => t.endpoint = Some(v),
                None => ok = false,
            }
        }
        let role = f
            .some("role")
            .and_then(|n| self.string(n, &f.field("role")));
        let runtime = f
            .some("runtime")
            .and_then(|n| self.string(n, &f.field("runtime")));
        let handler = f
            .some("handler")
            .and_then(|n| self.string(n, &f.field("handler")));
        match (role, runtime, handler) {
            (Some(role), Some(runtime), Some(handler)) => {
                t.create = Some(LambdaCreate {
                    role,
                    runtime,
                    handler,
                })
            }
            (None, None, None) => {}
            (role, runtime, handler) => {
                let missing: Vec<&str> = [
                    ("role", role.is_none()),
                    ("runtime", runtime.is_none()),
                    ("handler", handler.is_none()),
                ]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(k, _)| *k)
                .collect();
                self.error(
                    body,
                    field,
                    format!("creating the function needs role, runtime and handler; missing: {}", missing.join(", ")),
                    Some("give all three (the function is created when it does not exist), or none (it must exist)".into()),
                );
                ok = false;
            }
        }
        if let Some(m) = f.some("memory") {
            match self.uint(m, &f.field("memory"), 10_240) {
                Some(mb) if mb >= 128 => t.memory_mb = Some(mb),
                Some(mb) => {
                    self.error(
                        m,
                        &f.field("memory"),
                        format!("{mb} MB is less than Lambda's 128 MB"),
                        None,
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(d) = f.some("timeout") {
            match self.duration(d, &f.field("timeout")) {
                Some(d) if (1..=900).contains(&d.as_secs()) && d.subsec_nanos() == 0 => {
                    t.timeout_secs = Some(d.as_secs() as u32)
                }
                Some(_) => {
                    self.error(
                        d,
                        &f.field("timeout"),
                        "a Lambda timeout is whole seconds from 1s to 15m",
                        None,
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(e) = f.some("env") {
            t.env = self.env(e, &f.field("env"));
        }
        ok.then_some(t)
    }

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
pub(super) fn memory_bytes(text: &str) -> Option<u64> {
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
pub(super) fn nano_cpus(text: &str) -> Option<u64> {
    let cpus: f64 = text.trim().parse().ok()?;
    (cpus > 0.0 && cpus <= 1024.0 && cpus.is_finite()).then(|| (cpus * 1e9).round() as u64)
}

fn function_problem(v: &str) -> Option<&'static str> {
    if v.starts_with("arn:") {
        return (!v.starts_with("arn:aws")).then_some("is not a Lambda function ARN");
    }
    if v.is_empty() || v.len() > 64 {
        return Some("is not a function name: 1 to 64 characters");
    }
    (!v.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then_some("is not a function name: letters, digits, `-` and `_` only")
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`, `ap-southeast-4`.
fn region_problem(v: &str) -> Option<&'static str> {
    let parts: Vec<&str> = v.split('-').collect();
    let good = parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok();
    (!good).then_some("is not an AWS region")
}

fn alias_problem(v: &str) -> Option<&'static str> {
    if v.is_empty() || v.len() > 128 {
        return Some("is not an alias name: 1 to 128 characters");
    }
    if v.chars().all(|c| c.is_ascii_digit()) || v == "$LATEST" {
        return Some("names a version, not an alias");
    }
    (!v.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then_some("is not an alias name: letters, digits, `-` and `_` only")
}

fn endpoint_problem(v: &str) -> Option<&'static str> {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"));
    (!rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace)))
        .then_some("is not an endpoint URL")
}

#[cfg(test)]
mod tests {
    use super::{
        alias_problem, endpoint_problem, function_problem, memory_bytes, nano_cpus, region_problem,
    };

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

    #[test]
    fn lambda_names_read_as_aws_has_them() {
        for r in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-4",
        ] {
            assert_eq!(region_problem(r), None, "{r}");
        }
        for r in [
            "eu_west_1",
            "us-east",
            "USEAST1",
            "us-east-one",
            "",
            "east-1",
        ] {
            assert!(region_problem(r).is_some(), "{r}");
        }
        assert_eq!(function_problem("my-fn_2"), None);
        assert_eq!(
            function_problem("arn:aws:lambda:us-east-1:123456789012:function:my-fn"),
            None
        );
        assert!(function_problem("my fn").is_some());
        assert!(function_problem(&"f".repeat(65)).is_some());
        assert_eq!(alias_problem("live"), None);
        assert!(alias_problem("7").is_some(), "a version number");
        assert!(alias_problem("$LATEST").is_some());
        assert_eq!(endpoint_problem("http://127.0.0.1:4566"), None);
        assert!(endpoint_problem("127.0.0.1:4566").is_some());
    }
}
