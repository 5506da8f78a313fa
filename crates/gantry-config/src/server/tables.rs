//! The `[artifacts]` table (where artifacts are kept) and the `[[notify]]` tables (webhooks for
//! finished runs and failed releases) of the server's configuration.

use super::*;

impl Checker<'_> {
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
