//! The server's mirrors of the repositories it watches (`<data>/repos/<project>.git`): fetched
//! on demand, one fetch per project at a time. Shared by the queue workers, the API's
//! triggers and the deploy manager's pipeline reader, so none of them needs the whole server.

use anyhow::Result;
use gantry_config::server::ProjectConfig;
use gantry_git::Repo;
use std::collections::HashMap;
use std::path::PathBuf;

pub struct Mirrors {
    root: PathBuf,
    projects: Vec<ProjectConfig>,
    /// Serialises git operations per project (fetches into one mirror must not overlap).
    locks: HashMap<String, tokio::sync::Mutex<()>>,
}

impl Mirrors {
    /// Mirrors of `projects` under `root`.
    pub fn new(root: PathBuf, projects: Vec<ProjectConfig>) -> Self {
        let locks = projects
            .iter()
            .map(|p| (p.name.clone(), tokio::sync::Mutex::new(())))
            .collect();
        Self {
            root,
            projects,
            locks,
        }
    }

    /// A watched project by name.
    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }

    fn path(&self, project: &str) -> PathBuf {
        self.root.join(format!("{project}.git"))
    }

    /// The project's mirror, fetched now (cloned first if new). Blocking git work runs off the
    /// async threads; fetches of one project never overlap.
    pub async fn fetch(&self, project: &ProjectConfig) -> Result<Repo> {
        let _guard = match self.locks.get(&project.name) {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let (url, path) = (project.repo.clone(), self.path(&project.name));
        tokio::task::spawn_blocking(move || {
            let fresh = !path.join("HEAD").is_file();
            let repo = Repo::mirror(&url, &path)?;
            if !fresh {
                repo.fetch()?;
            }
            Ok(repo)
        })
        .await?
    }

    /// The mirror as it is (no fetch); `None` before the first clone.
    pub fn get(&self, project: &str) -> Option<Repo> {
        let path = self.path(project);
        path.join("HEAD")
            .is_file()
            .then(|| Repo::open(&path).ok())
            .flatten()
    }
}
