//! The `[artifacts]` table (where artifacts are kept), the `[[notify]]` tables (webhooks for
//! finished runs and failed releases) and a project's `status` table (commit statuses posted to
//! its forge) of the server's configuration.

use super::*;

/// `[tls]`: the server serves HTTPS with this certificate chain and key (PEM files; relative
/// paths are relative to the config file's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA certificate(s) the CLI on this data directory trusts the server by (a private
    /// CA's); `None`: the system's roots.
    pub ca: Option<PathBuf>,
}

impl Checker<'_> {
    /// `[runner]`: how the server runs jobs itself, and how it hands them to runners.
    pub(super) fn runner(&mut self, value: &Spanned<DeValue<'_>>, cfg: &mut ServerConfig) {
        let Some(t) = self.sub(value, "runner") else {
            return;
        };
        for (k, v) in self.table(t, "runner", "[runner]", RUNNER_KEYS) {
            let field = format!("runner.{k}");
            match k {
                "concurrency" => {
                    if let Some(n) = self.int(v, &field, 1, 256) {
                        cfg.concurrency = n as usize;
                    }
                }
                "kill_grace" => {
                    if let Some(d) = self.duration(v, &field) {
                        cfg.kill_grace = d;
                    }
                }
                "sandbox" => {
                    if let Some(b) = self.bool(v, &field) {
                        cfg.sandbox = Some(b);
                    }
                }
                "max_job_log_bytes" => {
                    if let Some(n) = self.int(v, &field, 4096, 1 << 40) {
                        cfg.max_job_log_bytes = n as u64;
                    }
                }
                "local_jobs" => {
                    if let Some(b) = self.bool(v, &field) {
                        cfg.local_jobs = b;
                    }
                }
                "lease" => match self.duration(v, &field) {
                    Some(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(3600) => {
                        cfg.runner_lease = d
                    }
                    Some(_) => self.error(
                        v.span(),
                        &field,
                        "a runner's lease lasts from 1s to 1h".into(),
                        Some("write lease = \"30s\"".into()),
                    ),
                    None => {}
                },
                "retry_lost" => {
                    if let Some(n) = self.int(v, &field, 0, 10) {
                        cfg.retry_lost = n as u32;
                    }
                }
                _ => {}
            }
        }
    }

    /// `state = "postgres://user@host:port/database"`: the PostgreSQL database the state is
    /// kept in (the password from the URL, `PGPASSWORD` or `~/.pgpass`).
    pub(super) fn state(&mut self, v: &Spanned<DeValue<'_>>) -> Option<String> {
        let url = self.string(v, "state")?;
        let rest = ["postgres://", "postgresql://"]
            .iter()
            .find_map(|p| url.strip_prefix(p));
        let host = rest.map(|r| r.split(['/', '?']).next().unwrap_or(""));
        if host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace)) {
            return Some(url);
        }
        // The text is not repeated: it may hold a password.
        let scheme = url.split_once("://").map(|(s, _)| s);
        let what = match (scheme, rest) {
            (Some(s), None) => format!("there are no state stores of kind `{s}`"),
            _ => "this is not a PostgreSQL URL".to_string(),
        };
        self.error(
            v.span(),
            "state",
            what,
            Some("write state = \"postgres://USER@HOST:PORT/DATABASE\" (the password in PGPASSWORD or ~/.pgpass); leave `state` out to keep state in the data directory (SQLite)".into()),
        );
        None
    }

    pub(super) fn artifacts(&mut self, v: &Spanned<DeValue<'_>>) -> Option<ArtifactsConfig> {
        let t = self.sub(v, "artifacts")?;
        let mut cfg = ArtifactsConfig {
            url: String::new(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key_env: None,
            timeout_ms: None,
            retries: None,
        };
        let mut ok = true;
        for (k, value) in self.table(t, "artifacts", "[artifacts]", ARTIFACTS_KEYS) {
            let field = format!("artifacts.{k}");
            match k {
                "url" => match self.string(value, &field) {
                    Some(u) => {
                        let bucket = u
                            .strip_prefix("s3://")
                            .map(|rest| rest.split('/').next().unwrap_or(""));
                        if bucket.is_none_or(str::is_empty) {
                            self.error(
                                value.span(),
                                &field,
                                format!("`{u}` is not an S3 location"),
                                Some("write s3://bucket/prefix; leave [artifacts] out to keep artifacts in the data directory".into()),
                            );
                            ok = false;
                        }
                        cfg.url = u;
                    }
                    None => ok = false,
                },
                "endpoint" => match self.string(value, &field) {
                    Some(e) if e.starts_with("http://") || e.starts_with("https://") => {
                        cfg.endpoint = Some(e)
                    }
                    Some(e) => {
                        self.error(
                            value.span(),
                            &field,
                            format!("`{e}` is not an http:// or https:// URL"),
                            Some("for example endpoint = \"http://127.0.0.1:9000\"".into()),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                "region" => cfg.region = self.string(value, &field),
                "access_key_id" => cfg.access_key_id = self.string(value, &field),
                "secret_access_key_env" => match self.string(value, &field) {
                    Some(e)
                        if !e.is_empty()
                            && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                    {
                        cfg.secret_access_key_env = Some(e)
                    }
                    Some(e) => {
                        self.error(
                            value.span(),
                            &field,
                            format!("`{e}` is not an environment variable name"),
                            Some("name the variable that holds the key; the key itself never goes in this file".into()),
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                "timeout" => match self.duration(value, &field) {
                    Some(d) => cfg.timeout_ms = Some(d.as_millis() as u64),
                    None => ok = false,
                },
                _ => match self.int(value, &field, 0, 20) {
                    Some(n) => cfg.retries = Some(n as u32),
                    None => ok = false,
                },
            }
        }
        if cfg.url.is_empty() && ok {
            self.error(
                v.span(),
                "artifacts",
                "[artifacts] needs a `url`".into(),
                Some("write url = \"s3://bucket/prefix\"".into()),
            );
            ok = false;
        }
        ok.then_some(cfg)
    }

    /// `[tls]`: the certificate chain and key the server serves HTTPS with, and the CA file
    /// that the CLI on this data directory trusts it by.
    pub(super) fn tls(&mut self, v: &Spanned<DeValue<'_>>) -> Option<TlsConfig> {
        let t = self.sub(v, "tls")?;
        let (mut cert, mut key, mut ca) = (None, None, None);
        let mut ok = true;
        for (k, value) in self.table(t, "tls", "[tls]", TLS_KEYS) {
            let field = format!("tls.{k}");
            let Some(path) = self.string(value, &field).filter(|p| !p.is_empty()) else {
                ok = false;
                continue;
            };
            let path = Some(PathBuf::from(path));
            match k {
                "cert" => cert = path,
                "key" => key = path,
                _ => ca = path,
            }
        }
        match (cert, key) {
            (Some(cert), Some(key)) if ok => Some(TlsConfig { cert, key, ca }),
            (cert, _) if ok => {
                let missing = if cert.is_none() { "cert" } else { "key" };
                self.error(
                    v.span(),
                    "tls",
                    format!("[tls] needs a `{missing}`"),
                    Some("write cert = \"server.pem\" and key = \"server.key\" (PEM files); leave [tls] out to serve plain HTTP".into()),
                );
                None
            }
            _ => None,
        }
    }

    pub(super) fn status(&mut self, v: &Spanned<DeValue<'_>>, path: &str) -> Option<StatusConfig> {
        let t = self.sub(v, path)?;
        let (mut forge, mut api_url, mut repo, mut token_env, mut token_env_at) =
            (None, None, None, None, String::new());
        let mut context = "gantry".to_string();
        let mut ok = true;
        for (key, value) in self.table(t, path, "a project's `status`", STATUS_KEYS) {
            let field = format!("{path}.{key}");
            let Some(text) = self.string(value, &field) else {
                ok = false;
                continue;
            };
            let mut bad = |c: &mut Self, message: String, help: &str| {
                c.error(value.span(), &field, message, Some(help.to_string()));
                ok = false;
            };
            match key {
                "forge" => match text.as_str() {
                    "github" => forge = Some(Forge::GitHub),
                    "gitlab" => forge = Some(Forge::GitLab),
                    "gitea" | "forgejo" => forge = Some(Forge::Gitea),
                    other => bad(
                        self,
                        format!("`{other}` is not a forge gantry posts statuses to"),
                        "use github, gitlab, gitea or forgejo",
                    ),
                },
                "api_url" if text.starts_with("http://") || text.starts_with("https://") => {
                    api_url = Some(text.trim_end_matches('/').to_string())
                }
                "api_url" => bad(
                    self,
                    format!("`{text}` is not an http:// or https:// URL"),
                    "for example api_url = \"https://gitea.example.com/api/v1\"",
                ),
                "repo" if !text.trim().is_empty() && !text.contains(char::is_whitespace) => {
                    repo = Some(text)
                }
                "repo" => bad(
                    self,
                    format!("`{text}` is not a repository"),
                    "write owner/name (GitLab: the project's path or id)",
                ),
                "token_env"
                    if !text.is_empty()
                        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    let at = self.pos(value.span().start);
                    token_env_at = format!("{}:{}:{}", self.file, at.line, at.col);
                    token_env = Some(text)
                }
                "token_env" => bad(
                    self,
                    format!("`{text}` is not an environment variable name"),
                    "name the variable that holds the token; the token itself never goes in this file",
                ),
                "context" if !text.trim().is_empty() && text.len() <= 100 => context = text,
                _ => bad(
                    self,
                    "a status context is 1 to 100 characters".into(),
                    "for example context = \"gantry/ci\"",
                ),
            }
        }
        if !ok {
            return None;
        }
        let missing: Vec<&str> = [
            ("forge", forge.is_none()),
            ("repo", repo.is_none()),
            ("token_env", token_env.is_none()),
        ]
        .into_iter()
        .filter_map(|(k, m)| m.then_some(k))
        .collect();
        let forge_default = match forge {
            Some(Forge::GitHub) => Some("https://api.github.com"),
            Some(Forge::GitLab) => Some("https://gitlab.com/api/v4"),
            _ => None,
        };
        if !missing.is_empty() || (api_url.is_none() && forge_default.is_none() && forge.is_some())
        {
            let mut missing = missing;
            if api_url.is_none() && forge == Some(Forge::Gitea) {
                missing.push("api_url");
            }
            self.error(
                v.span(),
                path,
                format!("a project's `status` needs {}", missing.join(", ")),
                Some("for example status = { forge = \"github\", repo = \"owner/name\", token_env = \"GITHUB_TOKEN\" }".into()),
            );
            return None;
        }
        Some(StatusConfig {
            forge: forge?,
            api_url: api_url.or(forge_default.map(str::to_string))?,
            repo: repo?,
            token_env: token_env?,
            token_env_at,
            context,
        })
    }

    pub(super) fn notify(
        &mut self,
        v: &Spanned<DeValue<'_>>,
        index: usize,
    ) -> Option<NotifyConfig> {
        let path = format!("notify[{index}]");
        let t = self.sub(v, &path)?;
        let mut n = NotifyConfig {
            url: String::new(),
            on: vec!["failed".to_string()],
            secret_env: None,
        };
        let mut ok = true;
        for (key, value) in self.table(t, &path, "a notification", NOTIFY_KEYS) {
            let field = format!("{path}.{key}");
            match key {
                "url" => match self.string(value, &field) {
                    Some(u) if u.starts_with("http://") || u.starts_with("https://") => n.url = u,
                    Some(u) => {
                        self.error(
                            value.span(),
                            &field,
                            format!("`{u}` is not an http(s) URL"),
                            None,
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                "on" => match value.get_ref() {
                    DeValue::Array(items) => {
                        n.on.clear();
                        for (i, item) in items.iter().enumerate() {
                            match self.string(item, &format!("{field}[{i}]")) {
                                Some(s)
                                    if s.parse::<gantry_model::RunStatus>().is_ok()
                                        || s == "deploy-failed" =>
                                {
                                    n.on.push(s)
                                }
                                Some(s) => {
                                    self.error(
                                        item.span(),
                                        &field,
                                        format!("`{s}` is not a run status or `deploy-failed`"),
                                        Some(
                                            "use succeeded, failed, cancelled, interrupted or deploy-failed"
                                                .into(),
                                        ),
                                    );
                                    ok = false;
                                }
                                None => ok = false,
                            }
                        }
                    }
                    other => {
                        self.error(
                            value.span(),
                            &field,
                            format!("expected a list of run statuses, found {}", kind(other)),
                            None,
                        );
                        ok = false;
                    }
                },
                "secret_env" => n.secret_env = self.string(value, &field),
                _ => {}
            }
        }
        if n.url.is_empty() && ok {
            self.error(v.span(), &path, "a notification needs a `url`".into(), None);
            ok = false;
        }
        ok.then_some(n)
    }
}
