//! The job graph: `needs: [name]` names a job (it waits for that job, and gets its artifacts)
//! or an artifact (as before: one of an earlier stage); a name that is both is an error, and
//! `{ job: x }` / `{ artifact: x }` say which. A matrix job's name as written stands for all its
//! combinations. Unknown jobs and cycles are errors with the position of the `needs` item.

use super::*;
use std::collections::HashSet;

/// What the file names, read before the stages are checked, so that `needs` can tell a job
/// from an artifact where it is written.
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// Jobs by the name written in the file (a matrix job once).
    pub jobs: HashSet<String>,
    /// Artifacts declared by any job (`artifacts[*].name`, `image.name`).
    pub artifacts: HashSet<String>,
}

impl Names {
    pub(crate) fn scan(root: &Node) -> Self {
        let mut names = Names::default();
        let items = |n: Option<&Node>| -> Vec<Node> {
            match n.map(|n| &n.value) {
                Some(Value::Seq(items)) => items.clone(),
                _ => Vec::new(),
            }
        };
        for stage in items(find_key_value(root, "stages")) {
            for job in items(find_key_value(&stage, "jobs")) {
                if let Some(name) = find_key_value(&job, "name").and_then(Node::as_scalar) {
                    names.jobs.insert(name.to_string());
                }
                for a in items(find_key_value(&job, "artifacts")) {
                    if let Some(name) = find_key_value(&a, "name").and_then(Node::as_scalar) {
                        names.artifacts.insert(name.to_string());
                    }
                }
                if let Some(name) = find_key_value(&job, "image")
                    .and_then(|i| find_key_value(i, "name"))
                    .and_then(Node::as_scalar)
                {
                    names.artifacts.insert(name.to_string());
                }
            }
        }
        names
    }
}

/// What one `needs` item names.
pub(super) enum Need {
    Job(String),
    Artifact(String),
}

impl Checker {
    /// `needs`: names of jobs to wait for and of this run's artifacts ([`graph`]), `{ job }`
    /// and `{ artifact }` to say which, and `{ project, artifact, branch, path }` for another
    /// project's artifact. Returns the artifacts, the other projects' artifacts and the jobs.
    pub(super) fn needs(
        &mut self,
        node: &Node,
        field: &str,
    ) -> (Vec<String>, Vec<ProjectArtifact>, Vec<String>) {
        let one = [node.clone()];
        let items: &[Node] = match &node.value {
            Value::Seq(items) => items,
            // One name alone is still a list of names.
            _ => &one,
        };
        let mut names: Vec<String> = Vec::new();
        let mut jobs: Vec<String> = Vec::new();
        let mut external = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let need = match &item.value {
                Value::Map(_) => {
                    let job = find_key_value(item, "job");
                    let project = find_key_value(item, "project");
                    match (job, project, find_key_value(item, "artifact")) {
                        (Some(j), None, None) => {
                            let _ = self.fields(item, &f, "a job to wait for", &["job"]);
                            self.need_job(j, &format!("{f}.job"))
                        }
                        (Some(j), _, _) => {
                            self.error(
                                j,
                                &format!("{f}.job"),
                                "`job` stands alone: a need is a job, or an artifact",
                                Some(
                                    "write the job and the artifact as two items of `needs`".into(),
                                ),
                            );
                            None
                        }
                        (None, None, Some(a)) => {
                            let _ = self.fields(item, &f, "an artifact of this run", &["artifact"]);
                            self.name(a, &format!("{f}.artifact")).map(Need::Artifact)
                        }
                        _ => {
                            external.extend(self.project_need(item, &f));
                            continue;
                        }
                    }
                }
                _ => self
                    .string(item, &f)
                    .and_then(|name| self.need_by_name(item, &f, name)),
            };
            let (list, name) = match need {
                Some(Need::Job(n)) => (&mut jobs, n),
                Some(Need::Artifact(n)) => (&mut names, n),
                None => continue,
            };
            if list.contains(&name) {
                self.error(item, &f, format!("`{name}` is listed twice"), None);
            } else {
                list.push(name);
            }
        }
        (names, external, jobs)
    }

    /// `{ project, artifact, branch, path }`: another project's artifact.
    fn project_need(&mut self, item: &Node, f: &str) -> Option<ProjectArtifact> {
        let what = "an artifact of another project";
        let fields = self.fields(item, f, what, NEED_KEYS)?;
        let project = self
            .required(&fields, item, "project", what)
            .and_then(|n| self.name(n, &fields.field("project")));
        let artifact = self
            .required(&fields, item, "artifact", what)
            .and_then(|n| self.name(n, &fields.field("artifact")));
        let branch = fields
            .some("branch")
            .and_then(|n| self.string(n, &fields.field("branch")));
        let path = fields.some("path").and_then(|n| {
            let p = self.string(n, &fields.field("path"))?;
            if let Some(problem) = path_problem(&p) {
                self.error(
                    n,
                    &fields.field("path"),
                    format!("path `{p}` {problem}"),
                    Some("paths are relative to the job's workspace".into()),
                );
                return None;
            }
            Some(p)
        });
        Some(ProjectArtifact {
            project: project?,
            artifact: artifact?,
            branch,
            path,
        })
    }

    /// Reads a plain `needs` item: a job's name or an artifact's.
    pub(super) fn need_by_name(&mut self, item: &Node, field: &str, name: String) -> Option<Need> {
        let job = self.names.jobs.contains(&name);
        let artifact = self.names.artifacts.contains(&name);
        match (job, artifact) {
            (true, true) => {
                self.error(
                    item,
                    field,
                    format!("`{name}` names both a job and an artifact"),
                    Some(format!(
                        "write `{{ job: {name} }}` to wait for the job, or `{{ artifact: {name} }}` for the artifact"
                    )),
                );
                None
            }
            (true, false) => Some(Need::Job(name)),
            // Unknown names are reported as artifacts, with their suggestions, by the cross
            // check; a near miss of a job's name is said there too.
            (false, _) => Some(Need::Artifact(name)),
        }
    }

    /// Reads `{ job: x }`: `x` must be a job of the file.
    pub(super) fn need_job(&mut self, node: &Node, field: &str) -> Option<Need> {
        let name = self.name(node, field)?;
        if self.names.jobs.contains(&name) {
            return Some(Need::Job(name));
        }
        let help = suggest(&name, self.names.jobs.iter().map(String::as_str))
            .map(|s| format!("did you mean `{s}`?"));
        self.error(node, field, format!("unknown job `{name}`"), help);
        None
    }

    /// Resolves the jobs' `after` (names as written) into the jobs they are (a matrix's name
    /// into all its combinations), gives each job the artifacts of the jobs it waits for, and
    /// reports jobs that wait for themselves or for each other in a cycle.
    pub(super) fn job_graph(&mut self, stages: &mut [Stage], root: &Node) {
        // Written name -> concrete names, and each concrete job's artifacts.
        let mut concrete: HashMap<String, Vec<String>> = HashMap::new();
        let mut made: HashMap<String, Vec<String>> = HashMap::new();
        for stage in stages.iter() {
            if let StageKind::Jobs(jobs) = &stage.kind {
                for job in jobs {
                    let written = job.matrix.as_ref().map_or(&job.name, |m| &m.of);
                    concrete
                        .entry(written.clone())
                        .or_default()
                        .push(job.name.clone());
                    made.insert(
                        job.name.clone(),
                        job.artifacts.iter().map(|a| a.name.clone()).collect(),
                    );
                }
            }
        }
        for stage in stages.iter_mut() {
            if let StageKind::Jobs(jobs) = &mut stage.kind {
                for job in jobs.iter_mut() {
                    let mut after: Vec<String> = Vec::new();
                    for name in &job.after {
                        for c in concrete.get(name).into_iter().flatten() {
                            if !after.contains(c) {
                                after.push(c.clone());
                            }
                        }
                    }
                    for dep in &after {
                        for a in made.get(dep).into_iter().flatten() {
                            if !job.needs.contains(a) {
                                job.needs.push(a.clone());
                            }
                        }
                    }
                    job.after = after;
                }
            }
        }
        self.cycles(stages, root);
    }

    /// Depth-first over the graph; each cycle is reported once, at the `needs` item of the
    /// job that closes it.
    fn cycles(&mut self, stages: &[Stage], root: &Node) {
        let owners: Vec<(&str, &Job)> = stages
            .iter()
            .flat_map(|s| match &s.kind {
                StageKind::Jobs(jobs) => jobs.iter().map(|j| (s.name.as_str(), j)).collect(),
                StageKind::Deploy(_) | StageKind::Approval(_) => Vec::new(),
            })
            .collect();
        let jobs: Vec<&Job> = owners.iter().map(|(_, j)| *j).collect();
        let index: HashMap<&str, usize> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.as_str(), i))
            .collect();
        // 0: not seen, 1: on the path, 2: done.
        let mut mark = vec![0u8; jobs.len()];
        let mut reported: HashSet<(usize, usize)> = HashSet::new();
        for start in 0..jobs.len() {
            if mark[start] != 0 {
                continue;
            }
            // Iterative: a hostile file may chain thousands of jobs.
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            mark[start] = 1;
            while let Some(top) = path.last_mut() {
                let at = top.0;
                let deps = &jobs[at].after;
                if top.1 == deps.len() {
                    mark[at] = 2;
                    path.pop();
                    continue;
                }
                let dep = index[deps[top.1].as_str()];
                top.1 += 1;
                match mark[dep] {
                    0 => {
                        mark[dep] = 1;
                        path.push((dep, 0));
                    }
                    1 if reported.insert((at, dep)) => {
                        let from = path.iter().position(|(j, _)| *j == dep).unwrap_or(0);
                        let mut names: Vec<&str> = path[from..]
                            .iter()
                            .map(|(j, _)| jobs[*j].name.as_str())
                            .collect();
                        names.push(jobs[dep].name.as_str());
                        let (job, target) = (jobs[at], jobs[dep]);
                        self.cycle_error(root, owners[at].0, job, target, &names);
                    }
                    _ => {}
                }
            }
        }
    }

    fn cycle_error(&mut self, root: &Node, stage: &str, job: &Job, target: &Job, names: &[&str]) {
        let written = |j: &Job| j.matrix.as_ref().map_or(j.name.clone(), |m| m.of.clone());
        let (job_w, target_w) = (written(job), written(target));
        let item = need_item(root, &job_w, &target_w);
        let field = format!("stages[{stage}].jobs[{}].needs", job.name);
        let message = if names.len() == 2 {
            format!("job `{}` waits for itself", job.name)
        } else {
            format!(
                "jobs wait for each other in a cycle: {}",
                names.join(" -> ")
            )
        };
        let help = Some("a job in a cycle never starts: remove one of these `needs`".to_string());
        match item {
            Some(node) => self.error(&node, &field, message, help),
            None => self.error(root, &field, message, help),
        }
    }
}

/// The `needs` item of the job written `job` that names `target` (plainly or as `{ job: … }`).
fn need_item(root: &Node, job: &str, target: &str) -> Option<Node> {
    let Value::Seq(stages) = &find_key_value(root, "stages")?.value else {
        return None;
    };
    for stage in stages {
        let Some(Value::Seq(jobs)) = find_key_value(stage, "jobs").map(|n| &n.value) else {
            continue;
        };
        for j in jobs {
            if find_key_value(j, "name").and_then(Node::as_scalar) != Some(job) {
                continue;
            }
            let items = match find_key_value(j, "needs").map(|n| &n.value) {
                Some(Value::Seq(items)) => items.clone(),
                Some(_) => vec![find_key_value(j, "needs")?.clone()],
                None => continue,
            };
            for item in items {
                let named = item.as_scalar().map(str::to_string).or_else(|| {
                    find_key_value(&item, "job")
                        .and_then(Node::as_scalar)
                        .map(str::to_string)
                });
                if named.as_deref() == Some(target) {
                    return Some(item);
                }
            }
        }
    }
    None
}
