//! A checked pipeline: what `gantry-config` lowers the pipeline file into and what the engine plans
//! runs from. Every name here has already been validated (unique, non-empty), so code that walks a
//! `Pipeline` never has to re-check it.

use crate::status::TriggerEvent;
use std::time::Duration;

pub use crate::environment::EnvironmentSpec;

/// The pipeline of a project, as written in its `gantry.yml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// Optional project name; defaults to the repository's directory name.
    pub name: Option<String>,
    /// Variables for every step, in file order.
    pub env: Vec<(String, String)>,
    /// Names of variables of gantry's own environment passed through to every step.
    pub pass_env: Vec<String>,
    pub stages: Vec<Stage>,
    pub environments: Vec<EnvironmentSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    pub kind: StageKind,
    /// When the stage runs (`when:`); `None`: always.
    pub when: Option<Rules>,
}

/// `when:` of a stage: it runs only when every condition given holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Branch patterns (`*` matches any characters, `/` included); empty: any branch.
    pub branches: Vec<String>,
    /// Tag patterns: the run must be of a tag that matches one; empty: no condition.
    pub tags: Vec<String>,
    /// What started the run; empty: any.
    pub events: Vec<TriggerEvent>,
    /// `if:`: an expression over the run's variables that must hold.
    pub condition: Option<crate::expr::Condition>,
}

/// A stage runs jobs (in parallel), deploys an artifact, or holds the run for an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageKind {
    Jobs(Vec<Job>),
    Deploy(DeploySpec),
    Approval(ApprovalSpec),
}

/// `approval: { roles: [deployer], timeout: 24h }`: the run waits here until a token with one
/// of the roles (or a higher one) approves it; no approval within `timeout` fails the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    pub roles: Vec<crate::Role>,
    pub timeout: Duration,
    /// A newer run of the same branch waiting at this stage ends this run's wait (cancelled).
    pub supersede: bool,
}

impl ApprovalSpec {
    /// May a token with `role` approve? Any listed role, or a higher one.
    pub fn allows(&self, role: crate::Role) -> bool {
        self.roles.iter().any(|r| role.allows(*r))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Unique across the whole pipeline, so `gantry logs RUN JOB` is unambiguous.
    pub name: String,
    pub steps: Vec<Step>,
    /// Job variables, applied over the pipeline's.
    pub env: Vec<(String, String)>,
    pub pass_env: Vec<String>,
    /// Names of secrets this job receives as environment variables (values are masked in logs).
    pub secrets: Vec<String>,
    /// Limit for the whole job (all steps of one attempt).
    pub timeout: Option<Duration>,
    /// How many times a failed attempt is run again.
    pub retries: u32,
    /// A failure of this job does not fail its stage.
    pub allow_failure: bool,
    pub artifacts: Vec<ArtifactSpec>,
    /// Artifacts of earlier stages this job uses, by name: unpacked into its directory (digest
    /// checked) before its first step.
    pub needs: Vec<String>,
    /// Artifacts of other projects this job uses: the newest of a succeeded run, unpacked the
    /// same way.
    pub needs_from: Vec<ProjectArtifact>,
    /// Jobs this job waits for, by name (`needs: [job]`): it starts as soon as they have
    /// succeeded (or failed with `allow_failure`), whether or not the stages before its own
    /// have ended, and is skipped when one of them fails. Empty: it starts with its stage.
    pub after: Vec<String>,
    /// The combination of its matrix this job is, when it is one (`matrix:`).
    pub matrix: Option<MatrixCell>,
    /// When the job runs (`when:` and `if:` on the job); `None`: whenever its stage does.
    pub when: Option<Rules>,
    /// What it keeps between runs (`cache:`): restored before its steps, saved after.
    pub caches: Vec<crate::cache::CacheSpec>,
    /// The image its steps run in (`image: NAME`); `None`: on the host.
    pub container: Option<JobContainer>,
    /// Containers started beside the job, on its network (`services:`).
    pub services: Vec<ServiceSpec>,
    /// Labels a runner must have, all of them, to run this job (`runs_on: [linux, big]`):
    /// such a job runs only on a `gantry runner`, never in the server's own slots. Empty: any
    /// runner, or the server itself when it runs jobs.
    pub runs_on: Vec<String>,
}

/// Why `label` cannot name a runner's ability (`runs_on:`, `gantry runner --labels`), if it
/// cannot: 1 to 64 of lowercase ASCII letters, digits, `-`, `_` and `.`, starting with a
/// letter or digit.
pub fn label_problem(label: &str) -> Option<&'static str> {
    let first_ok = label
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if label.is_empty() || label.len() > 64 {
        Some("a label is 1 to 64 characters long")
    } else if !first_ok {
        Some("a label starts with a lowercase letter or a digit")
    } else if !label
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
    {
        Some("a label holds only lowercase letters, digits, `-`, `_` and `.`")
    } else {
        None
    }
}

/// `services: [{ name: db, image: postgres:16, env: {…}, health: { tcp: 5432 } }]`: a container
/// beside the job, reachable by `name` on the job's network, healthy before the first step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    /// The port that must accept a TCP connection before the steps start; `None`: started is
    /// enough.
    pub tcp: Option<u16>,
    /// How long it may take to become healthy.
    pub timeout: Duration,
}

/// `image: alpine:3` on a job, with `resources: { memory: 512m, cpus: 1 }`: each step runs in a
/// fresh container of the image, the job's directory bound at `/workspace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContainer {
    pub image: String,
    pub memory_bytes: Option<u64>,
    pub nano_cpus: Option<u64>,
}

/// One combination of a job's `matrix`: the job as written, and the values (in the matrix's key
/// order) that its steps see as variables and its name shows: `test (3.12, debian)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixCell {
    /// The job's name as written.
    pub of: String,
    pub values: Vec<(String, String)>,
}

/// `needs: [{ project: libs, artifact: core, branch: main, path: vendor/core.tar }]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectArtifact {
    pub project: String,
    pub artifact: String,
    /// Only runs of this branch; any branch when `None`.
    pub branch: Option<String>,
    /// Where a single-file artifact is written in the job's directory (default: the
    /// artifact's name); a packed directory is unpacked with its own paths.
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    /// Shell text run with `sh -c`.
    pub run: String,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
}

/// An artifact a job declares: files, directories or globs relative to the workspace, or an
/// image its steps built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSpec {
    pub name: String,
    /// Empty for an image artifact.
    pub paths: Vec<String>,
    /// An image in the Docker engine (`app:dev`), saved into the artifact store as an archive
    /// with its description once the job's steps succeeded.
    pub image: Option<String>,
    /// An image gantry builds through the Docker Engine API after the job's steps (the job's
    /// `image:` key), then saves like `image`.
    pub build: Option<ImageBuild>,
    /// A registry repository the image is also pushed to (`registry:5000/team/app`), tagged
    /// `run-N` and the commit. Optional: rollbacks never need it, the store holds the image.
    pub push: Option<ImagePush>,
}

/// `registry:5000/team/app:dev` → `registry:5000/team/app` (a port is not a tag).
pub fn image_repository(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

/// `push:` on an image artifact or a job's `image:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePush {
    /// `host[:port]/path`, no tag.
    pub repository: String,
    /// The registry login, with the password taken from the named secret.
    pub username: Option<String>,
    pub password_secret: Option<String>,
}

/// `image: { name, context, file }` on a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBuild {
    /// The build context, relative to the job's directory.
    pub context: String,
    /// The Dockerfile, relative to the job's directory (inside the context).
    pub file: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySpec {
    /// One environment, or several deployed in order (waves).
    pub environments: Vec<String>,
    pub artifact: String,
    /// Time a wave must stay healthy before the next one starts.
    pub bake: Option<Duration>,
}

impl Pipeline {
    /// All jobs with the index of their stage, in file order.
    pub fn jobs(&self) -> impl Iterator<Item = (usize, &Job)> {
        self.stages
            .iter()
            .enumerate()
            .flat_map(|(i, stage)| match &stage.kind {
                StageKind::Jobs(jobs) => jobs.iter().map(move |j| (i, j)).collect::<Vec<_>>(),
                StageKind::Deploy(_) | StageKind::Approval(_) => Vec::new(),
            })
    }

    /// Every secret name any job asks for (its `secrets` and the registry logins of its
    /// pushes), deduplicated, in file order.
    pub fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, job) in self.jobs() {
            let pushes = job.artifacts.iter().filter_map(|a| a.push.as_ref());
            let logins = pushes.filter_map(|p| p.password_secret.as_ref());
            for s in job.secrets.iter().chain(logins) {
                if !names.contains(s) {
                    names.push(s.clone());
                }
            }
        }
        names
    }
}

#[cfg(test)]
mod image_tests {
    use super::image_repository;

    #[test]
    fn an_image_repository_is_its_name_without_tag_or_digest() {
        for (image, repo) in [
            ("app:dev", "app"),
            ("app", "app"),
            ("registry:5000/team/app:dev", "registry:5000/team/app"),
            ("registry:5000/team/app", "registry:5000/team/app"),
            ("app@sha256:abc", "app"),
        ] {
            assert_eq!(image_repository(image), repo, "{image}");
        }
    }
}

/// Does `name` match `pattern`, where `*` stands for any characters (none, or `/` too)?
/// Linear in the lengths (no backtracking blow-up, whatever a pipeline file writes).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::pattern_matches;

    #[test]
    fn patterns() {
        let cases = [
            ("main", "main", true),
            ("main", "mainline", false),
            ("release/*", "release/1.2", true),
            ("release/*", "release/", true),
            ("release/*", "releases/1", false),
            ("*", "feature/a/b", true),
            ("*-hotfix", "v1-hotfix", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("", "", true),
            ("", "x", false),
            // What gantry.toml's `branches` patterns matched before they shared this matcher.
            ("release/*", "release/1.0", true),
            ("release/*", "main", false),
            ("*", "anything/at/all", true),
        ];
        for (p, n, want) in cases {
            assert_eq!(pattern_matches(p, n), want, "{p} {n}");
        }
        // A hostile pattern against a long name stays linear.
        let long = "a".repeat(10_000);
        assert!(!pattern_matches(
            &"*a".repeat(50).replace("*a*a", "*a*b"),
            &long
        ));
    }
}
