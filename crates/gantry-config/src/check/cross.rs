//! Checks across the file: unique names, and artifacts used only after the stage that makes them.

use super::*;

impl Checker {
    /// Checks across stages: unique stage, job and artifact names; deploys name an artifact made
    /// by an earlier stage.
    pub(super) fn cross_check(
        &mut self,
        stages: Vec<Option<(Stage, Node)>>,
        environments: &[(EnvironmentSpec, Node)],
    ) -> Vec<Stage> {
        let mut stage_names: HashMap<String, usize> = HashMap::new(); // name -> line
        let mut job_names: HashMap<String, String> = HashMap::new();
        // artifact name -> (stage index, job name)
        let mut artifacts: HashMap<String, (usize, String)> = HashMap::new();
        let mut later_artifacts: Vec<(String, usize)> = Vec::new();
        for (i, s) in stages.iter().enumerate() {
            let Some((stage, _)) = s else { continue };
            if let StageKind::Jobs(jobs) = &stage.kind {
                for job in jobs {
                    for a in &job.artifacts {
                        later_artifacts.push((a.name.clone(), i));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (i, s) in stages.into_iter().enumerate() {
            let Some((stage, node)) = s else { continue };
            let name_node = find_key_value(&node, "name").unwrap_or(&node);
            if let Some(first) = stage_names.insert(stage.name.clone(), name_node.pos.line) {
                self.error(
                    name_node,
                    &format!("stages[{}].name", stage.name),
                    format!("duplicate stage name `{}`", stage.name),
                    Some(format!(
                        "the stage on line {first} has the same name; stage names are unique"
                    )),
                );
            }
            match &stage.kind {
                StageKind::Jobs(jobs) => {
                    // Needs resolve against earlier stages only: check them before this
                    // stage's own artifacts join the map.
                    let stage_node = &node;
                    let job_nodes = job_nodes_of(stage_node, jobs);
                    for (j, job) in jobs.iter().enumerate() {
                        let needs_node = job_nodes[j].and_then(|n| find_key_value(n, "needs"));
                        for need in &job.needs {
                            let need_node = needs_node
                                .and_then(|n| need_item(n, need))
                                .unwrap_or(stage_node);
                            let field = format!("stages[{}].jobs[{}].needs", stage.name, job.name);
                            self.artifact_ref(
                                need,
                                need_node,
                                &field,
                                &artifacts,
                                &later_artifacts,
                                i,
                                "a job",
                            );
                        }
                    }
                    for (j, job) in jobs.iter().enumerate() {
                        let job_node = job_nodes[j];
                        let jname_node = job_node
                            .and_then(|n| find_key_value(n, "name"))
                            .unwrap_or(&node);
                        let path = format!("stages[{}].jobs[{}]", stage.name, job.name);
                        if let Some(other_stage) =
                            job_names.insert(job.name.clone(), stage.name.clone())
                        {
                            self.error(jname_node, &join(&path, "name"), format!("duplicate job name `{}`", job.name), Some(format!("a job of stage `{other_stage}` has the same name; job names are unique in a pipeline")));
                        }
                        for (k, a) in job.artifacts.iter().enumerate() {
                            let anode = job_node
                                .and_then(|n| find_key_value(n, "artifacts"))
                                .and_then(|n| match &n.value {
                                    Value::Seq(items) => items.get(k),
                                    _ => None,
                                })
                                .and_then(|n| find_key_value(n, "name"))
                                .unwrap_or(jname_node);
                            if let Some((_, other_job)) =
                                artifacts.insert(a.name.clone(), (i, job.name.clone()))
                            {
                                self.error(anode, &format!("{path}.artifacts[{}]", a.name), format!("duplicate artifact name `{}`", a.name), Some(format!("job `{other_job}` already produces an artifact of this name")));
                            }
                        }
                    }
                }
                StageKind::Deploy(deploy) => {
                    let dnode = find_key_value(&node, "deploy").unwrap_or(&node);
                    let art_node = find_key_value(dnode, "artifact").unwrap_or(dnode);
                    let field = format!("stages[{}].deploy.artifact", stage.name);
                    self.artifact_ref(
                        &deploy.artifact,
                        art_node,
                        &field,
                        &artifacts,
                        &later_artifacts,
                        i,
                        "a deploy",
                    );
                    for env in &deploy.environments {
                        if !environments.iter().any(|(e, _)| &e.name == env) {
                            let env_node = find_key_value(dnode, "environment")
                                .or_else(|| find_key_value(dnode, "environments"))
                                .unwrap_or(dnode);
                            let help = match suggest(
                                env,
                                environments.iter().map(|(e, _)| e.name.as_str()),
                            ) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!(
                                    "describe it under `environments: {{ {env}: ... }}` to deploy"
                                ),
                            };
                            self.warning(
                                env_node,
                                &format!("stages[{}].deploy", stage.name),
                                format!("environment `{env}` is not described in `environments`"),
                                Some(help),
                            );
                        }
                    }
                }
                StageKind::Approval(_) => {}
            }
            out.push(stage);
        }
        out
    }
}

/// The node each job was written as: the n-th job written with a name is the n-th such item
/// (a matrix's combinations are one item).
fn job_nodes_of<'n>(stage: &'n Node, jobs: &[Job]) -> Vec<Option<&'n Node>> {
    let items: &[Node] = match find_key_value(stage, "jobs").map(|n| &n.value) {
        Some(Value::Seq(items)) => items,
        _ => &[],
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(jobs.len());
    for (j, job) in jobs.iter().enumerate() {
        let written = job
            .matrix
            .as_ref()
            .map_or(job.name.as_str(), |m| m.of.as_str());
        let same_group = j > 0
            && job.matrix.is_some()
            && jobs[j - 1].matrix.as_ref().map(|m| m.of.as_str()) == Some(written);
        let nth = seen.entry(written).or_insert(0);
        if !same_group {
            *nth += 1;
        }
        let node = items
            .iter()
            .filter(|i| find_key_value(i, "name").and_then(Node::as_scalar) == Some(written))
            .nth(*nth - 1);
        out.push(node);
    }
    out
}

/// The item of a `needs` list that names artifact `name` (plainly or as `{ artifact: … }`).
fn need_item<'n>(needs: &'n Node, name: &str) -> Option<&'n Node> {
    match &needs.value {
        Value::Seq(items) => items.iter().find(|i| {
            i.as_scalar() == Some(name)
                || (find_key_value(i, "project").is_none()
                    && find_key_value(i, "artifact").and_then(Node::as_scalar) == Some(name))
        }),
        _ => Some(needs),
    }
}

impl Checker {
    /// Checks that artifact `name`, used by a deploy or a job of stage `stage`, is produced by an
    /// earlier stage (`known`: artifacts of earlier stages; `later`: all, with their stage).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn artifact_ref(
        &mut self,
        name: &str,
        node: &Node,
        field: &str,
        known: &HashMap<String, (usize, String)>,
        later: &[(String, usize)],
        stage: usize,
        user: &str,
    ) {
        if known.contains_key(name) {
            return;
        }
        if later.iter().any(|(n, si)| n == name && *si >= stage) {
            self.error(
                node,
                field,
                format!("artifact `{name}` is produced by this or a later stage"),
                Some(if user == "a job" {
                    format!(
                        "{user} can only use artifacts of stages before its own, or wait for the job that makes it: `needs: [that-job]`"
                    )
                } else {
                    format!("{user} can only use artifacts of stages before its own")
                }),
            );
            return;
        }
        let help = match suggest(name, known.keys().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None if known.is_empty() => "no job before this stage declares `artifacts`".to_string(),
            None => {
                let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
                names.sort();
                format!("artifacts of earlier stages: {}", names.join(", "))
            }
        };
        self.error(
            node,
            field,
            format!("unknown artifact `{name}`"),
            Some(help),
        );
    }
}
