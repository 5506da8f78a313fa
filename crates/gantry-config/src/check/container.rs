//! `image: NAME` and `resources: { memory, cpus }` on a job: the container image its steps run
//! in, and that container's limits.

use super::*;

impl Checker {
    /// `image: NAME` and `resources: { memory, cpus }` of a job: the container its steps run in
    /// (the pipeline's `image:` when the job names none).
    pub(super) fn job_container(
        &mut self,
        image: Option<&Node>,
        resources: Option<&Node>,
        path: &str,
    ) -> Result<Option<gantry_model::JobContainer>, ()> {
        let (name, mut ok) = match image {
            Some(image) => {
                let field = join(path, "image");
                let name = self.string(image, &field).ok_or(())?;
                let bad = name.trim().is_empty()
                    || name.chars().any(|c| c.is_whitespace() || c.is_control());
                if bad {
                    self.error(
                        image,
                        &field,
                        format!("`{name}` is not an image name"),
                        Some(
                            "for example image: alpine:3, or the name an earlier job built".into(),
                        ),
                    );
                }
                (name, !bad)
            }
            None => match (self.pipeline_image.clone(), resources) {
                (Some(default), _) => (default, true),
                (None, Some(r)) => {
                    self.error(
                        r,
                        &join(path, "resources"),
                        "`resources` limit the container of a job: give the job `image: NAME`",
                        None,
                    );
                    return Err(());
                }
                (None, None) => return Ok(None),
            },
        };
        let mut c = gantry_model::JobContainer {
            image: name,
            memory_bytes: None,
            nano_cpus: None,
        };
        if let Some(r) = resources {
            let rf = join(path, "resources");
            let fields = self
                .fields(r, &rf, "`resources`", RESOURCES_KEYS)
                .ok_or(())?;
            if let Some(m) = fields.some("memory") {
                let f = fields.field("memory");
                match self
                    .string(m, &f)
                    .map(|t| (super::targets::memory_bytes(&t), t))
                {
                    Some((Some(b), _)) => c.memory_bytes = Some(b),
                    Some((None, t)) => {
                        self.error(
                            m,
                            &f,
                            format!("`{t}` is not an amount of memory"),
                            Some("write 64m, 1g, 512k or a number of bytes (at least 6m)".into()),
                        );
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            if let Some(n) = fields.some("cpus") {
                let f = fields.field("cpus");
                match self
                    .string(n, &f)
                    .map(|t| (super::targets::nano_cpus(&t), t))
                {
                    Some((Some(v), _)) => c.nano_cpus = Some(v),
                    Some((None, t)) => {
                        self.error(
                            n,
                            &f,
                            format!("`{t}` is not a number of CPUs"),
                            Some("write 0.5, 1 or 2 (more than 0, at most 1024)".into()),
                        );
                        ok = false;
                    }
                    None => ok = false,
                }
            }
        }
        if ok { Ok(Some(c)) } else { Err(()) }
    }
}

pub const SERVICE_KEYS: &[&str] = &["name", "image", "env", "health", "timeout"];
pub const SERVICE_HEALTH_KEYS: &[&str] = &["tcp"];

impl Checker {
    /// `services: [{ name, image, env, health: { tcp: PORT }, timeout }]` of a job with `image:`.
    pub(super) fn services(
        &mut self,
        node: &Node,
        path: &str,
        in_image: bool,
    ) -> Option<Vec<gantry_model::ServiceSpec>> {
        let Value::Seq(items) = &node.value else {
            self.error(
                node,
                path,
                format!("`services` must be a list, found {}", node.kind_name()),
                Some("each service is `- name: db` with `image: …`".into()),
            );
            return None;
        };
        if !in_image {
            self.error(
                node,
                path,
                "services run beside a job in a container: give the job `image: NAME`",
                Some("a job on the host has no network its services could share".into()),
            );
            return None;
        }
        let mut out: Vec<gantry_model::ServiceSpec> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let f = format!("{path}[{i}]");
            let what = "a service";
            let Some(fields) = self.fields(item, &f, what, SERVICE_KEYS) else {
                ok = false;
                continue;
            };
            let name = self.required(&fields, item, "name", what).and_then(|n| {
                let text = self.string(n, &fields.field("name"))?;
                let dns = !text.is_empty()
                    && text.len() <= 63
                    && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !text.starts_with('-');
                if !dns {
                    self.error(
                        n,
                        &fields.field("name"),
                        format!(
                            "`{text}` is not a service name: the steps reach it by this host name"
                        ),
                        Some("letters, digits and `-`, at most 63".into()),
                    );
                    return None;
                }
                if out.iter().any(|s| s.name == text) {
                    self.error(
                        n,
                        &fields.field("name"),
                        format!("two services are named `{text}`"),
                        None,
                    );
                    return None;
                }
                Some(text)
            });
            let image = self
                .required(&fields, item, "image", what)
                .and_then(|n| self.string(n, &fields.field("image")));
            let env = fields
                .some("env")
                .map(|n| self.env(n, &fields.field("env")))
                .unwrap_or_default();
            let tcp = match fields.some("health") {
                None => Some(None),
                Some(h) => self
                    .fields(
                        h,
                        &fields.field("health"),
                        "a service's health",
                        SERVICE_HEALTH_KEYS,
                    )
                    .and_then(|hf| match hf.some("tcp") {
                        Some(p) => self
                            .uint(p, &hf.field("tcp"), 65_535)
                            .map(|p| Some(p as u16)),
                        None => Some(None),
                    }),
            };
            let timeout = match fields.some("timeout") {
                None => Some(std::time::Duration::from_secs(60)),
                Some(t) => self.duration(t, &fields.field("timeout")),
            };
            match (name, image, tcp, timeout) {
                (Some(name), Some(image), Some(tcp), Some(timeout)) => {
                    out.push(gantry_model::ServiceSpec {
                        name,
                        image,
                        env,
                        tcp,
                        timeout,
                    })
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }
}
