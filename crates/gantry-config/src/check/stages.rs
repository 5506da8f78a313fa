//! The pipeline's top level, its stages, jobs, steps, needs, artifacts and deploys.

use super::*;

impl Checker {
    /// Checks the whole document. Returns the pipeline when nothing is wrong.
    pub(crate) fn pipeline(&mut self, root: &Node) -> Option<Pipeline> {
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
        self.names = graph::Names::scan(root);
        self.pipeline_image = top.some("image").and_then(|n| {
            let name = self.string(n, "image")?;
            if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    n,
                    "image",
                    format!("`{name}` is not an image name"),
                    Some("the image every job's steps run in, for example image: alpine:3".into()),
                );
                return None;
            }
            Some(name)
        });
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
        let mut stages = self.cross_check(stages, &environments);
        self.job_graph(&mut stages, root);
        let has_errors = self.diags.iter().any(|d| d.severity == Severity::Error);
        (!has_errors).then_some(Pipeline {
            name,
            env,
            pass_env,
            stages,
            environments: environments.into_iter().map(|(e, _)| e).collect(),
        })
    }

    pub(super) fn stage(&mut self, node: &Node, index: usize) -> Option<(Stage, Node)> {
        let path = named_path("stages", node, index);
        let fields = self.fields(node, &path, "a stage", STAGE_KEYS)?;
        let name = self
            .required(&fields, node, "name", "a stage")
            .and_then(|n| self.name(n, &fields.field("name")));
        let kinds = ["jobs", "deploy", "approval"];
        let given: Vec<(&str, &Node)> = kinds
            .iter()
            .filter_map(|k| fields.get(k).map(|n| (*k, n)))
            .collect();
        if let [(first, _), (second, node2), ..] = given.as_slice() {
            self.error(
                node2,
                &join(&path, second),
                format!("a stage has one of `jobs`, `deploy` or `approval`: this one has `{first}` and `{second}`"),
                Some(format!("move the `{second}` into a stage of its own")),
            );
        }
        let kind = match (fields.get("jobs"), fields.get("deploy")) {
            _ if given.len() > 1 => None,
            (None, None) if fields.get("approval").is_some() => fields
                .get("approval")
                .and_then(|n| self.approval(n, &join(&path, "approval")))
                .map(StageKind::Approval),
            (None, None) => {
                if !fields.suggested.iter().any(|k| kinds.contains(k)) {
                    self.error(
                        node,
                        &path,
                        "a stage needs `jobs`, `deploy` or `approval`",
                        None,
                    );
                }
                None
            }
            (Some(jobs), _) => self.jobs(jobs, &join(&path, "jobs")).map(StageKind::Jobs),
            (_, Some(deploy)) => self
                .deploy(deploy, &join(&path, "deploy"))
                .map(StageKind::Deploy),
        };
        let when = self
            .rules_of(fields.get("when"), fields.get("if"), &path)
            .ok()?;
        Some((
            Stage {
                name: name?,
                kind: kind?,
                when,
            },
            node.clone(),
        ))
    }

    pub(super) fn jobs(&mut self, node: &Node, path: &str) -> Option<Vec<Job>> {
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
        let jobs: Vec<Option<Vec<Job>>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| self.job(item, &named_path(path, item, i)))
            .collect();
        jobs.into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|j| j.into_iter().flatten().collect())
    }

    /// A job as written: one job, or one per combination of its `matrix`.
    pub(super) fn job(&mut self, node: &Node, path: &str) -> Option<Vec<Job>> {
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
            // A job may only build an image.
            (None, None)
                if fields
                    .get("image")
                    .is_some_and(|n| matches!(n.value, Value::Map(_))) =>
            {
                Some(Vec::new())
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
        let mut artifacts = fields
            .some("artifacts")
            .map(|n| self.artifacts(n, &field("artifacts")))
            .unwrap_or(Some(Vec::new()));
        // `image: NAME` runs the steps in that image; `image: { name, context, … }` builds one.
        let scalar = |n: &&Node| matches!(n.value, Value::Scalar { .. });
        let container = self.job_container(
            fields.some("image").filter(scalar),
            fields.some("resources"),
            path,
        );
        let services = fields
            .some("services")
            .map(|n| {
                let in_image = fields.some("image").is_some_and(|n| scalar(&n))
                    || self.pipeline_image.is_some();
                self.services(n, &field("services"), in_image)
            })
            .unwrap_or(Some(Vec::new()));
        if let Some(image) = fields.some("image").filter(|n| !scalar(n)) {
            match (self.image_build(image, &field("image")), &mut artifacts) {
                (Some(built), Some(list)) => list.push(built),
                (None, _) => artifacts = None,
                _ => {}
            }
        }
        let (needs, needs_from, after) = fields
            .some("needs")
            .map(|n| self.needs(n, &field("needs")))
            .unwrap_or_default();
        let matrix = fields
            .some("matrix")
            .map(|n| self.matrix(n, &field("matrix")));
        let when = self.rules_of(fields.get("when"), fields.get("if"), path);
        let caches = fields
            .some("cache")
            .map(|n| self.caches(n, &field("cache")))
            .unwrap_or(Some(Vec::new()));
        let runs_on = fields
            .some("runs_on")
            .map(|n| self.labels(n, &field("runs_on")))
            .unwrap_or(Some(Vec::new()));
        let job = Job {
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
            after,
            matrix: None,
            when: when.ok()?,
            caches: caches?,
            container: container.ok()?,
            services: services?,
            runs_on: runs_on?,
        };
        match matrix {
            None => Some(vec![job]),
            Some(cells) => Some(super::matrix::expand(job, cells?)),
        }
    }

    /// `runs_on: [linux, big]` (or one label as a string): labels a runner must all have.
    fn labels(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let before = self.diags.len();
        let items = self.string_list(node, path);
        let mut labels: Vec<String> = Vec::new();
        for (i, (label, item)) in items.into_iter().enumerate() {
            let f = format!("{path}[{i}]");
            if let Some(problem) = gantry_model::label_problem(&label) {
                self.error(
                    &item,
                    &f,
                    format!("`{label}` is not a label: {problem}"),
                    None,
                );
            } else if labels.contains(&label) {
                self.error(&item, &f, format!("`{label}` is listed twice"), None);
            } else {
                labels.push(label);
            }
        }
        labels.sort();
        (self.diags.len() == before).then_some(labels)
    }

    /// `approval: { roles: [deployer], timeout: 24h, supersede: true }` (every key optional).
    fn approval(&mut self, node: &Node, path: &str) -> Option<gantry_model::ApprovalSpec> {
        if node.value == Value::Null {
            return Some(gantry_model::ApprovalSpec {
                roles: vec![gantry_model::Role::Deployer],
                timeout: Duration::from_secs(24 * 3600),
                supersede: true,
            });
        }
        let fields = self.fields(node, path, "an approval", APPROVAL_KEYS)?;
        let roles = match fields.some("roles") {
            None => Some(vec![gantry_model::Role::Deployer]),
            Some(n) => {
                let before = self.diags.len();
                let mut roles = Vec::new();
                for (i, (text, item)) in self
                    .string_list(n, &fields.field("roles"))
                    .into_iter()
                    .enumerate()
                {
                    let f = format!("{}[{i}]", fields.field("roles"));
                    match text.parse::<gantry_model::Role>() {
                        Ok(gantry_model::Role::Runner) => self.error(
                            &item,
                            &f,
                            "a runner token approves nothing: it only runs jobs",
                            Some("roles are viewer, deployer and admin".into()),
                        ),
                        Ok(r) if roles.contains(&r) => {
                            self.error(&item, &f, format!("`{text}` is listed twice"), None)
                        }
                        Ok(r) => roles.push(r),
                        Err(_) => {
                            let help = suggest(&text, ["viewer", "deployer", "admin"])
                                .map(|s| format!("did you mean `{s}`?"))
                                .unwrap_or_else(|| "roles are viewer, deployer and admin".into());
                            self.error(&item, &f, format!("`{text}` is not a role"), Some(help));
                        }
                    }
                }
                if roles.is_empty() && self.diags.len() == before {
                    self.error(
                        n,
                        &fields.field("roles"),
                        "an empty `roles` list lets nobody approve",
                        Some("leave `roles` out for deployer (and admin)".into()),
                    );
                }
                (self.diags.len() == before).then_some(roles)
            }
        };
        let timeout = match fields.some("timeout") {
            None => Some(Duration::from_secs(24 * 3600)),
            Some(n) => match self.duration(n, &fields.field("timeout")) {
                Some(d) if d.is_zero() || d > Duration::from_secs(30 * 86400) => {
                    self.error(
                        n,
                        &fields.field("timeout"),
                        "an approval waits more than nothing and at most 30d",
                        None,
                    );
                    None
                }
                other => other,
            },
        };
        let supersede = match fields.some("supersede") {
            None => Some(true),
            Some(n) => self.bool(n, &fields.field("supersede")),
        };
        Some(gantry_model::ApprovalSpec {
            roles: roles?,
            timeout: timeout?,
            supersede: supersede?,
        })
    }

    pub(super) fn run_text(&mut self, node: &Node, field: &str) -> Option<String> {
        let run = self.string(node, field)?;
        if run.trim().is_empty() {
            self.error(node, field, "the command is empty", None);
            return None;
        }
        Some(run)
    }

    pub(super) fn steps(&mut self, node: &Node, path: &str) -> Option<Vec<Step>> {
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

    pub(super) fn artifacts(&mut self, node: &Node, path: &str) -> Option<Vec<ArtifactSpec>> {
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
            match (fields.some("path"), fields.some("image")) {
                (Some(_), Some(image)) => {
                    self.error(
                        image,
                        &fields.field("image"),
                        "an artifact is either files (`path`) or an image (`image`), not both",
                        Some("declare the image as an artifact of its own".into()),
                    );
                    ok = false;
                    continue;
                }
                (None, Some(image)) => {
                    let field = fields.field("image");
                    let image = self
                        .string(image, &field)
                        .and_then(|r| match image_problem(&r) {
                            Some(problem) => {
                                self.error(
                                    image,
                                    &field,
                                    format!("image `{r}` {problem}"),
                                    Some(
                                        "name the image the job's steps built, e.g. `app:dev`"
                                            .into(),
                                    ),
                                );
                                None
                            }
                            None => Some(r),
                        });
                    let push = fields
                        .some("push")
                        .map(|n| self.image_push(n, &fields.field("push")));
                    match (name, image, push) {
                        (Some(name), Some(image), push @ (None | Some(Some(_)))) => {
                            out.push(ArtifactSpec {
                                name,
                                paths: Vec::new(),
                                image: Some(image),
                                build: None,
                                push: push.flatten(),
                            })
                        }
                        _ => ok = false,
                    }
                    continue;
                }
                _ => {}
            }
            if let Some(push) = fields.some("push") {
                self.error(
                    push,
                    &fields.field("push"),
                    "only an image artifact can be pushed to a registry",
                    Some("push an `image:` artifact, or drop `push`".into()),
                );
                ok = false;
                continue;
            }
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
                (Some(name), Some(paths)) if !paths.is_empty() => out.push(ArtifactSpec {
                    name,
                    paths,
                    image: None,
                    build: None,
                    push: None,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A job's `image: { name, context, file }`: the artifact `name`, an image gantry builds.
    fn image_build(&mut self, node: &Node, path: &str) -> Option<ArtifactSpec> {
        let fields = self.fields(node, path, "an image build", IMAGE_BUILD_KEYS)?;
        let name = self
            .required(&fields, node, "name", "an image build")
            .and_then(|n| self.name(n, &fields.field("name")));
        let mut relative = |key: &str, default: &str| -> Option<String> {
            let Some(n) = fields.some(key) else {
                return Some(default.to_string());
            };
            let f = fields.field(key);
            let p = self.string(n, &f)?;
            match path_problem(&p) {
                Some(problem) => {
                    self.error(
                        n,
                        &f,
                        format!("`{p}` {problem}"),
                        Some("paths are relative to the job's directory".into()),
                    );
                    None
                }
                None => Some(p),
            }
        };
        let context = relative("context", ".");
        let file = relative("file", "Dockerfile");
        let push = match fields.some("push") {
            Some(n) => Some(self.image_push(n, &fields.field("push"))?),
            None => None,
        };
        Some(ArtifactSpec {
            name: name?,
            paths: Vec::new(),
            image: None,
            build: Some(ImageBuild {
                context: context?,
                file: file?,
            }),
            push,
        })
    }

    /// `push: registry:5000/team/app`, or `push: { to, username, password_secret }`.
    fn image_push(&mut self, node: &Node, path: &str) -> Option<ImagePush> {
        let (to, to_field, username, secret) = match &node.value {
            Value::Map(_) => {
                let fields = self.fields(node, path, "a push", IMAGE_PUSH_KEYS)?;
                let to = self.required(&fields, node, "to", "a push")?;
                let username = match fields.some("username") {
                    Some(n) => Some(self.string(n, &fields.field("username"))?),
                    None => None,
                };
                let secret = match fields.some("password_secret") {
                    Some(n) => {
                        let f = fields.field("password_secret");
                        let name = self.string(n, &f)?;
                        if !self.env_name(n, &f, &name) {
                            return None;
                        }
                        Some(name)
                    }
                    None => None,
                };
                if username.is_some() != secret.is_some() {
                    self.error(
                        node,
                        path,
                        "a registry login needs both `username` and `password_secret`",
                        Some("`password_secret` names a secret gantry holds, never the password itself".into()),
                    );
                    return None;
                }
                (to, fields.field("to"), username, secret)
            }
            _ => (node, path.to_string(), None, None),
        };
        let repository = self.string(to, &to_field)?;
        let problem = image_problem(&repository).or_else(|| {
            (repository.contains('@') || gantry_model::image_repository(&repository) != repository)
                .then_some(
                    "names a tag or digest; gantry tags what it pushes `run-N` and with the commit",
                )
        });
        if let Some(problem) = problem {
            self.error(
                to,
                &to_field,
                format!("repository `{repository}` {problem}"),
                Some("name the repository alone, e.g. `registry.example.com:5000/team/app`".into()),
            );
            return None;
        }
        Some(ImagePush {
            repository,
            username,
            password_secret: secret,
        })
    }

    pub(super) fn deploy(&mut self, node: &Node, path: &str) -> Option<DeploySpec> {
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
}

/// What is wrong with an image reference (`repo[:tag]` or `repo@sha256:…`), if anything.
fn image_problem(r: &str) -> Option<&'static str> {
    if r.is_empty() {
        return Some("is empty");
    }
    if r.len() > 255 {
        return Some("is longer than 255 characters");
    }
    if r.starts_with(['-', ':', '@', '/', '.']) {
        return Some("must start with a letter or digit");
    }
    if !r
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'))
    {
        return Some("may hold only letters, digits and `. _ - / : @`");
    }
    None
}
