//! `image: NAME` and `resources: { memory, cpus }` on a job: the container image its steps run
//! in, and that container's limits.

use super::*;

impl Checker {
    /// `image: NAME` and `resources: { memory, cpus }` of a job: the container its steps run in.
    pub(super) fn job_container(
        &mut self,
        image: Option<&Node>,
        resources: Option<&Node>,
        path: &str,
    ) -> Result<Option<gantry_model::JobContainer>, ()> {
        let Some(image) = image else {
            if let Some(r) = resources {
                self.error(
                    r,
                    &join(path, "resources"),
                    "`resources` limit the container of a job: give the job `image: NAME`",
                    None,
                );
                return Err(());
            }
            return Ok(None);
        };
        let field = join(path, "image");
        let name = self.string(image, &field).ok_or(())?;
        let mut ok = true;
        if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.error(
                image,
                &field,
                format!("`{name}` is not an image name"),
                Some("for example image: alpine:3, or the name an earlier job built".into()),
            );
            ok = false;
        }
        let mut c = gantry_model::JobContainer {
            image: name,
            memory_bytes: None,
            nano_cpus: None,
        };
        let Some(r) = resources else {
            return if ok { Ok(Some(c)) } else { Err(()) };
        };
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
        if ok { Ok(Some(c)) } else { Err(()) }
    }
}
