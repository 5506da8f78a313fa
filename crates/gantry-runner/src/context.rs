//! What every job of a run shares (`RunContext`), and the environment its steps get from it.

use crate::job::set_env;
use gantry_engine::mask::Masker;
use gantry_engine::ports::{ArtifactStore, AttemptStore};
use gantry_model::{Job, Pipeline, SecretValue};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use crate::events::Observer;
use crate::logs::LogSender;

/// Variables of gantry's own environment every step gets; anything else must be asked for
/// (`pass_env`, `env`, `secrets`), so a secret of gantry's environment never leaks by default.
pub const BASE_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "TMPDIR",
    "SHELL",
];

/// What every job of a run shares.
pub(crate) struct RunContext {
    pub run_id: i64,
    pub project: String,
    /// Where workspaces come from.
    pub source: crate::remote::Source,
    pub commit: String,
    pub branch: Option<String>,
    /// What started the run, for `when:` rules and `GANTRY_EVENT`.
    pub event: gantry_model::TriggerEvent,
    pub vars: std::collections::BTreeMap<String, String>,
    pub subdir: Option<PathBuf>,
    pub pipeline: Pipeline,
    /// The pipeline file's path in the repository.
    pub pipeline_file: String,
    pub work_dir: PathBuf,
    pub jobs: usize,
    pub kill_grace: Duration,
    pub keep_workspaces: bool,
    pub log_cap: u64,
    pub sandbox: Option<crate::sandbox::Sandbox>,
    pub prefetched: Option<Arc<crate::prefetch::Prefetch>>,
    pub secrets: HashMap<String, SecretValue>,
    pub secrets_withheld: Option<String>,
    pub cache_cap: u64,
    /// The owner lock of this process: step containers carry it.
    pub owner: Option<String>,
    pub masker: Masker,
    /// Where the attempts' steps, logs, artifacts and caches are recorded.
    pub records: Arc<dyn AttemptStore>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub observer: Arc<dyn Observer>,
    pub logs: LogSender,
    pub cancel: watch::Receiver<bool>,
}

impl RunContext {
    /// What an `if:` reads: the run's own variables and gantry's, as every step sees them.
    pub(crate) fn rule_vars(&self) -> std::collections::BTreeMap<String, String> {
        let mut vars = self.vars.clone();
        for (k, v) in self.run_vars() {
            vars.insert(k.to_string(), v);
        }
        vars
    }

    /// gantry's variables of the run, the same for every job.
    fn run_vars(&self) -> [(&'static str, String); 5] {
        [
            ("GANTRY_RUN", self.run_id.to_string()),
            ("GANTRY_PROJECT", self.project.clone()),
            ("GANTRY_COMMIT", self.commit.clone()),
            ("GANTRY_BRANCH", self.branch.clone().unwrap_or_default()),
            ("GANTRY_EVENT", self.event.as_str().to_string()),
        ]
    }

    /// The environment of a job's steps, before step variables and secrets.
    pub fn env_for(&self, job: &Job, workspace: &Path, attempt: u32) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let passed = BASE_ENV
            .iter()
            .map(|s| s.to_string())
            .chain(self.pipeline.pass_env.iter().cloned())
            .chain(job.pass_env.iter().cloned());
        for name in passed {
            if let Ok(v) = std::env::var(&name) {
                set_env(&mut env, &name, &v);
            }
        }
        set_env(&mut env, "CI", "true");
        for (k, v) in self.pipeline.env.iter().chain(job.env.iter()) {
            set_env(&mut env, k, v);
        }
        // A matrix job's combination, over the job's own `env`.
        for (k, v) in job.matrix.iter().flat_map(|m| &m.values) {
            set_env(&mut env, k, v);
        }
        for (k, v) in &self.vars {
            set_env(&mut env, k, v);
        }
        let stage = self
            .pipeline
            .jobs()
            .find(|(_, j)| j.name == job.name)
            .map(|(i, _)| self.pipeline.stages[i].name.clone())
            .unwrap_or_default();
        let per_job = [
            ("GANTRY_STAGE", stage),
            ("GANTRY_JOB", job.name.clone()),
            ("GANTRY_ATTEMPT", attempt.to_string()),
            ("GANTRY_WORKSPACE", workspace.display().to_string()),
        ];
        for (k, v) in self.run_vars().into_iter().chain(per_job) {
            set_env(&mut env, k, &v);
        }
        env
    }
}
