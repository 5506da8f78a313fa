//! The server's configuration file (`gantry.toml`): read with positions, checked with every error
//! reported at once (line, column, field, suggestion), the same way as the pipeline file.

use crate::diagnostic::{Diagnostic, Diagnostics, Severity};
use crate::field;
use crate::yaml::Pos;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub const TOP_KEYS: &[&str] = &[
    "listen",
    "public_url",
    "data_dir",
    "projects",
    "runner",
    "queue",
    "webhooks",
    "shutdown_grace",
    "secrets_file",
    "why_rules",
    "notify",
    "retention",
    "artifacts",
    "state",
    "tls",
];
pub const TLS_KEYS: &[&str] = &["cert", "key", "ca"];
pub const ARTIFACTS_KEYS: &[&str] = &[
    "url",
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key_env",
    "timeout",
    "retries",
];
pub const RETENTION_KEYS: &[&str] = &[
    "keep_runs",
    "keep_younger_than",
    "interval",
    "logs",
    "cache_bytes",
];
pub const NOTIFY_KEYS: &[&str] = &["url", "on", "secret_env"];
pub const PROJECT_KEYS: &[&str] = &[
    "name",
    "repo",
    "branches",
    "tags",
    "poll",
    "webhook_secret_env",
    "status",
    "schedules",
];
pub const SCHEDULE_KEYS: &[&str] = &["cron", "timezone", "branch", "vars"];
pub const STATUS_KEYS: &[&str] = &["forge", "api_url", "repo", "token_env", "context"];
pub const RUNNER_KEYS: &[&str] = &[
    "concurrency",
    "kill_grace",
    "max_job_log_bytes",
    "sandbox",
    "local_jobs",
    "lease",
    "retry_lost",
];
pub const QUEUE_KEYS: &[&str] = &["supersede", "requeue_interrupted"];
pub const WEBHOOK_KEYS: &[&str] = &["max_body_bytes"];

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The URL users reach the server at (a proxy's, a stable name), for the links it hands
    /// out; `None`: the address it listens on.
    pub public_url: Option<String>,
    /// As written (relative paths are relative to the config file's directory).
    pub data_dir: Option<PathBuf>,
    pub projects: Vec<ProjectConfig>,
    /// Runs executed at once.
    pub concurrency: usize,
    pub kill_grace: Duration,
    /// The most bytes of output a job's log keeps; the rest is counted, not kept.
    pub max_job_log_bytes: u64,
    /// Steps run sandboxed away from the data directory: `Some(true)` demands it (the server
    /// refuses to start without Landlock), `Some(false)` turns it off, `None` (not written)
    /// sandboxes when the kernel can.
    pub sandbox: Option<bool>,
    /// A newer commit on a branch cancels that branch's older queued runs.
    pub supersede: bool,
    /// Runs found interrupted at start (the server died mid-run) are queued again as new runs.
    pub requeue_interrupted: bool,
    pub max_body_bytes: usize,
    /// On SIGTERM: how long running steps may finish before they are cancelled.
    pub shutdown_grace: Duration,
    pub secrets_file: Option<PathBuf>,
    /// A TOML file of the user's own `gantry why` rules.
    pub why_rules: Option<PathBuf>,
    pub notify: Vec<NotifyConfig>,
    /// Artifacts of the newest N runs of each project and branch are kept.
    pub keep_runs: i64,
    /// The most bytes one project's job caches keep (least recently used removed first).
    pub cache_bytes: u64,
    /// Artifacts younger than this are kept.
    pub keep_younger_than: Duration,
    /// How often the server applies retention (zero: never).
    pub retention_interval: Duration,
    /// Log lines of runs that finished longer ago than this are removed (the runs stay);
    /// `None`: logs are kept.
    pub keep_logs: Option<Duration>,
    /// Where artifacts are kept; `None`: on local disk in the data directory.
    pub artifacts: Option<ArtifactsConfig>,
    /// The PostgreSQL database state is kept in (`postgres://…`); `None`: SQLite in the data
    /// directory.
    pub state: Option<String>,
    /// HTTPS (`[tls]`); `None`: plain HTTP.
    pub tls: Option<TlsConfig>,
    /// Jobs that name no labels run in the server's own slots (`runner.local_jobs`, default
    /// true); false: every job goes to `gantry runner`s.
    pub local_jobs: bool,
    /// How long a runner's claim on a job lasts unrenewed (`runner.lease`, default 30s).
    pub runner_lease: Duration,
    /// How many times a job whose runner was lost is started again on another before it
    /// fails (`runner.retry_lost`, default 1; 0: it fails at once).
    pub retry_lost: u32,
}

pub use tables::TlsConfig;

/// An S3-compatible artifact store (`[artifacts]`). Unset fields come from the usual `AWS_*`
/// variables. Serialised into the data directory (it holds no secret, only the name of the
/// variable that does) so that CLI commands on the same data directory find the same store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactsConfig {
    /// `s3://bucket/prefix`.
    pub url: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// The variable holding the secret key (default: `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key_env: Option<String>,
    /// Longest wait for one request, in milliseconds.
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
}

/// A webhook gantry calls when runs end: `POST url` with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub url: String,
    /// Run statuses that notify (default: failed).
    pub on: Vec<String>,
    /// The variable holding a secret to sign the body with (`X-Gantry-Signature: sha256=...`).
    pub secret_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectConfig {
    pub name: String,
    /// A local path, `file://` or `https://` URL.
    pub repo: String,
    /// Patterns (`*` wildcard); empty means the repository's default branch.
    pub branches: Vec<String>,
    /// Tag patterns whose pushes start runs (event `tag`, `GANTRY_TAG`); empty: none.
    pub tags: Vec<String>,
    /// Zero: webhooks only.
    pub poll: Duration,
    pub webhook_secret_env: Option<String>,
    /// Where `webhook_secret_env` is written (`gantry.toml:LINE:COL`), for errors found when
    /// the server starts (the variable is not set).
    pub webhook_secret_env_at: Option<String>,
    /// Where runs' states are posted as commit statuses (`[projects.status]`).
    pub status: Option<StatusConfig>,
    /// Runs started by the clock (`[[projects.schedules]]`).
    pub schedules: Vec<ScheduleConfig>,
}

/// `schedules = [{ cron = "0 3 * * *", timezone = "Europe/Berlin", branch = "main" }]`: a run
/// of the branch's head at each tick (event `schedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Five fields (minute hour day month weekday), or six with seconds first; checked.
    pub cron: String,
    /// An IANA time zone (`UTC`, `Europe/Berlin`): ticks are read on its wall clock.
    pub timezone: String,
    /// `None`: the project's first branch named without `*`, else the repository's default.
    pub branch: Option<String>,
    /// Variables the scheduled runs' steps see.
    pub vars: std::collections::BTreeMap<String, String>,
}

/// Which forge's commit status API a project's statuses go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    /// Gitea and Forgejo (the same API).
    Gitea,
}

/// `[projects.status]`: post each run's state (pending, then success or failure, with a link
/// to the run) to the forge's commit status API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    pub forge: Forge,
    /// The API's base: `https://api.github.com` (default for GitHub),
    /// `https://gitlab.com/api/v4` (default for GitLab), `https://HOST/api/v1` for Gitea.
    pub api_url: String,
    /// `owner/name` (GitHub, Gitea); the project's path or numeric id (GitLab).
    pub repo: String,
    /// The variable holding the token (never the token itself).
    pub token_env: String,
    /// Where `token_env` is written, for the error when it is not set at start.
    pub token_env_at: String,
    /// The status's name on the forge (default `gantry`).
    pub context: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("a valid address"),
            public_url: None,
            data_dir: None,
            projects: Vec::new(),
            concurrency: 2,
            local_jobs: true,
            runner_lease: Duration::from_secs(30),
            retry_lost: 1,
            kill_grace: Duration::from_secs(10),
            max_job_log_bytes: 32 * 1024 * 1024,
            sandbox: None,
            supersede: true,
            requeue_interrupted: false,
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            secrets_file: None,
            why_rules: None,
            notify: Vec::new(),
            keep_runs: 10,
            cache_bytes: 5 * 1024 * 1024 * 1024,
            keep_younger_than: Duration::from_secs(7 * 86400),
            keep_logs: None,
            retention_interval: Duration::from_secs(3600),
            artifacts: None,
            state: None,
            tls: None,
        }
    }
}

struct Checker<'s> {
    file: &'s str,
    source: &'s str,
    diags: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn pos(&self, offset: usize) -> Pos {
        let before = &self.source[..offset.min(self.source.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Pos { line, col }
    }

    fn error(
        &mut self,
        span: std::ops::Range<usize>,
        field: &str,
        message: String,
        help: Option<String>,
    ) {
        let pos = self.pos(span.start);
        let width = self
            .source
            .get(span.clone())
            .map_or(1, |t| t.lines().next().unwrap_or("").chars().count().max(1));
        self.diags.push(Diagnostic {
            severity: Severity::Error,
            pos,
            width,
            field: field.to_string(),
            message,
            help,
        });
    }

    fn table<'a, 'i>(
        &mut self,
        table: &'a DeTable<'i>,
        path: &str,
        what: &str,
        known: &[&str],
    ) -> Vec<(&'a str, &'a Spanned<DeValue<'i>>)> {
        let mut out = Vec::new();
        for (key, value) in table {
            let name: &str = key.get_ref();
            let field = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            if known.contains(&name) {
                out.push((name, value));
            } else {
                let (problem, _) = field::unknown_key(name, known, what);
                self.error(key.span(), &field, problem.message, problem.help);
            }
        }
        out
    }

    fn string(&mut self, v: &Spanned<DeValue<'_>>, field: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.error(
                    v.span(),
                    field,
                    format!("expected a string, found {}", kind(other)),
                    None,
                );
                None
            }
        }
    }

    fn duration(&mut self, v: &Spanned<DeValue<'_>>, field: &str) -> Option<Duration> {
        let text = self.string(v, field)?;
        field::duration(&text, true, "\"0s\", \"30s\", \"10m\"")
            .map_err(|p| self.error(v.span(), field, p.message, p.help))
            .ok()
    }

    fn int(&mut self, v: &Spanned<DeValue<'_>>, field: &str, min: i64, max: i64) -> Option<i64> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => {
                i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()
            }
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    v.span(),
                    field,
                    format!("expected a whole number from {min} to {max}"),
                    None,
                );
                None
            }
        }
    }

    fn bool(&mut self, v: &Spanned<DeValue<'_>>, field: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    v.span(),
                    field,
                    format!("expected true or false, found {}", kind(other)),
                    None,
                );
                None
            }
        }
    }

    fn sub<'a, 'i>(&mut self, v: &'a Spanned<DeValue<'i>>, field: &str) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    v.span(),
                    field,
                    format!("expected a table, found {}", kind(other)),
                    Some(format!("write it as `[{field}]`")),
                );
                None
            }
        }
    }

    /// A list of branch or tag (`what`) name patterns.
    fn patterns(
        &mut self,
        v: &Spanned<DeValue<'_>>,
        field: &str,
        what: &str,
    ) -> Option<Vec<String>> {
        let example = if what == "tag" {
            "tags = [\"v*\"]"
        } else {
            "branches = [\"main\", \"release/*\"]"
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.error(
                v.span(),
                field,
                format!(
                    "expected a list of {what} names, found {}",
                    kind(v.get_ref())
                ),
                Some(format!("for example {example}")),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            match self.string(item, &at) {
                Some(p) if p.trim().is_empty() || p.starts_with("refs/") => {
                    self.error(
                        item.span(),
                        &at,
                        format!("`{p}` is not a {what} name or pattern"),
                        Some(format!("write the short name, for example {example}")),
                    );
                    ok = false;
                }
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn project(&mut self, v: &Spanned<DeValue<'_>>, index: usize) -> Option<ProjectConfig> {
        let path = format!("projects[{index}]");
        let t = self.sub(v, &path)?;
        let mut name = None;
        let mut repo = None;
        let mut branches = Vec::new();
        let mut tags = Vec::new();
        let mut poll = Duration::from_secs(60);
        let mut secret_env = None;
        let mut secret_env_at = None;
        let mut status = None;
        let mut schedules = Vec::new();
        let mut ok = true;
        for (key, value) in self.table(t, &path, "a project", PROJECT_KEYS) {
            let field = format!("{path}.{key}");
            match key {
                "name" => match self.string(value, &field) {
                    Some(n)
                        if !n.is_empty()
                            && n.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                    {
                        name = Some(n)
                    }
                    Some(n) => {
                        self.error(
                            value.span(),
                            &field,
                            format!("`{n}` is not a valid project name"),
                            Some(
                                "use letters, digits, `-`, `_` and `.`; it appears in URLs".into(),
                            ),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                "repo" => match self.string(value, &field) {
                    Some(r) if !r.trim().is_empty() => repo = Some(r),
                    Some(_) => {
                        self.error(value.span(), &field, "the repository is empty".into(), None);
                        ok = false;
                    }
                    None => ok = false,
                },
                "branches" => match self.patterns(value, &field, "branch") {
                    Some(p) => branches = p,
                    None => ok = false,
                },
                "tags" => match self.patterns(value, &field, "tag") {
                    Some(p) => tags = p,
                    None => ok = false,
                },
                "status" => match self.status(value, &field) {
                    Some(s) => status = Some(s),
                    None => ok = false,
                },
                "schedules" => match self.schedules(value, &field) {
                    Some(s) => schedules = s,
                    None => ok = false,
                },
                "poll" => match self.duration(value, &field) {
                    Some(d) => poll = d,
                    None => ok = false,
                },
                "webhook_secret_env" => match self.string(value, &field) {
                    Some(e)
                        if !e.is_empty()
                            && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                    {
                        let at = self.pos(value.span().start);
                        secret_env_at = Some(format!("{}:{}:{}", self.file, at.line, at.col));
                        secret_env = Some(e)
                    }
                    Some(e) => {
                        self.error(
                            value.span(),
                            &field,
                            format!("`{e}` is not an environment variable name"),
                            None,
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                _ => {}
            }
        }
        let span = v.span();
        if name.is_none() && !t.keys().any(|k| k.get_ref() == "name") {
            self.error(span.clone(), &path, "a project needs a `name`".into(), None);
        }
        if repo.is_none() && !t.keys().any(|k| k.get_ref() == "repo") {
            self.error(
                span,
                &path,
                "a project needs a `repo` (a path, file:// or https:// URL)".into(),
                None,
            );
        }
        if !ok {
            return None;
        }
        Some(ProjectConfig {
            name: name?,
            repo: repo?,
            branches,
            tags,
            poll,
            webhook_secret_env: secret_env,
            webhook_secret_env_at: secret_env_at,
            status,
            schedules,
        })
    }
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// Parses and checks a server configuration file. `file` names it in messages.
/// `listen`: an IP and port, or a host name and port (`localhost:8080`); port 0 is any free one.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` is not an address: it has no port"));
    };
    let port: u16 = match port.parse::<u64>() {
        Ok(p) if p <= u16::MAX as u64 => p as u16,
        Ok(p) => {
            return Err(format!(
                "`{text}`: port {p} is out of range (1 to 65535, or 0 for any free port)"
            ));
        }
        Err(_) => {
            return Err(format!(
                "`{text}` is not an address: `{port}` is not a port"
            ));
        }
    };
    if host.is_empty() {
        return Err(format!("`{text}` is not an address: it has no host"));
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    use std::net::ToSocketAddrs;
    match (host, port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => Ok(a),
        _ => Err(format!(
            "`{text}` is not an address: the host `{host}` is not known"
        )),
    }
}

pub fn parse_server_config(file: &str, source: &str) -> Result<ServerConfig, Diagnostics> {
    let mut c = Checker {
        file,
        source,
        diags: Vec::new(),
    };
    let mut cfg = ServerConfig::default();
    let diags = |c: Checker<'_>| Diagnostics {
        file: file.to_string(),
        source: source.to_string(),
        items: c.diags,
    };
    let root = match DeTable::parse(source) {
        Ok(t) => t,
        Err(e) => {
            let span = e.span().unwrap_or(0..1);
            c.error(
                span,
                "",
                format!("invalid TOML: {}", e.message().trim()),
                None,
            );
            return Err(diags(c));
        }
    };
    let root_ref = root.get_ref();
    for (key, value) in c.table(root_ref, "", "the server configuration", TOP_KEYS) {
        match key {
            "public_url" => {
                if let Some(text) = c.string(value, key) {
                    let url = text.trim_end_matches('/').to_string();
                    let ok = ["http://", "https://"].iter().any(|p| {
                        url.strip_prefix(p)
                            .is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
                    });
                    if ok {
                        cfg.public_url = Some(url);
                    } else {
                        c.error(
                            value.span(),
                            key,
                            format!("`{text}` is not a URL"),
                            Some("write the URL users reach the server at, e.g. \"https://ci.example.com\"".into()),
                        );
                    }
                }
            }
            "listen" => {
                if let Some(text) = c.string(value, key) {
                    match listen_address(&text) {
                        Ok(a) => cfg.listen = a,
                        Err(message) => c.error(
                            value.span(),
                            key,
                            message,
                            Some("write host:port, e.g. \"127.0.0.1:8080\"".into()),
                        ),
                    }
                }
            }
            "data_dir" => cfg.data_dir = c.string(value, key).map(PathBuf::from),
            "secrets_file" => cfg.secrets_file = c.string(value, key).map(PathBuf::from),
            "why_rules" => cfg.why_rules = c.string(value, key).map(PathBuf::from),
            "retention" => {
                if let Some(t) = c.sub(value, key) {
                    for (k, v) in c.table(t, key, "[retention]", RETENTION_KEYS) {
                        let field = format!("retention.{k}");
                        match k {
                            "keep_runs" => {
                                if let Some(n) = c.int(v, &field, 1, 100_000) {
                                    cfg.keep_runs = n;
                                }
                            }
                            "keep_younger_than" => {
                                if let Some(d) = c.duration(v, &field) {
                                    cfg.keep_younger_than = d;
                                }
                            }
                            "logs" => {
                                if let Some(d) = c.duration(v, &field) {
                                    cfg.keep_logs = Some(d);
                                }
                            }
                            "cache_bytes" => {
                                if let Some(n) = c.int(v, &field, 0, i64::MAX) {
                                    cfg.cache_bytes = n as u64;
                                }
                            }
                            _ => {
                                if let Some(d) = c.duration(v, &field) {
                                    cfg.retention_interval = d;
                                }
                            }
                        }
                    }
                }
            }
            "artifacts" => cfg.artifacts = c.artifacts(value),
            "state" => cfg.state = c.state(value),
            "tls" => cfg.tls = c.tls(value),
            "notify" => match value.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(n) = c.notify(item, i) {
                            cfg.notify.push(n);
                        }
                    }
                }
                other => c.error(
                    value.span(),
                    key,
                    format!("expected [[notify]] tables, found {}", kind(other)),
                    None,
                ),
            },
            "shutdown_grace" => {
                if let Some(d) = c.duration(value, key) {
                    cfg.shutdown_grace = d;
                }
            }
            "projects" => match value.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(p) = c.project(item, i) {
                            if cfg.projects.iter().any(|q| q.name == p.name) {
                                c.error(
                                    item.span(),
                                    &format!("projects[{i}].name"),
                                    format!("duplicate project name `{}`", p.name),
                                    None,
                                );
                            } else {
                                cfg.projects.push(p);
                            }
                        }
                    }
                }
                other => c.error(
                    value.span(),
                    key,
                    format!("expected [[projects]] tables, found {}", kind(other)),
                    None,
                ),
            },
            "runner" => c.runner(value, &mut cfg),
            "queue" => {
                if let Some(t) = c.sub(value, key) {
                    for (k, v) in c.table(t, key, "[queue]", QUEUE_KEYS) {
                        if let Some(b) = c.bool(v, &format!("queue.{k}")) {
                            match k {
                                "supersede" => cfg.supersede = b,
                                _ => cfg.requeue_interrupted = b,
                            }
                        }
                    }
                }
            }
            "webhooks" => {
                if let Some(t) = c.sub(value, key) {
                    for (_, v) in c.table(t, key, "[webhooks]", WEBHOOK_KEYS) {
                        if let Some(n) = c.int(v, "webhooks.max_body_bytes", 1024, 64 * 1024 * 1024)
                        {
                            cfg.max_body_bytes = n as usize;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if c.diags.is_empty() {
        Ok(cfg)
    } else {
        let mut d = diags(c);
        d.items.sort_by_key(|d| (d.pos.line, d.pos.col));
        Err(d)
    }
}

mod schedules;
mod tables;
pub use schedules::{parse_cron, time_zone};

#[cfg(test)]
mod tests;
