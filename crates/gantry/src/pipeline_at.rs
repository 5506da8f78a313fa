//! Reading a project's pipeline file from a commit, shared by `gantry run` and the server's
//! workers: the file is looked up in the commit (never the working copy), then checked.

use gantry_config::{CheckedPipeline, Diagnostics, PIPELINE_FILE_NAMES, parse_pipeline_bytes};
use gantry_git::Repo;
use std::path::Path;

pub enum LoadError {
    /// The commit has no pipeline file; the message says where it was looked for.
    Missing(String),
    /// The file is there but wrong: every problem, rendered.
    Invalid(Diagnostics),
    Other(anyhow::Error),
}

impl LoadError {
    /// One message for a run's error field or the terminal.
    pub fn message(&self) -> String {
        match self {
            LoadError::Missing(m) => m.clone(),
            LoadError::Invalid(d) => format!("the pipeline file is invalid:\n{d}"),
            LoadError::Other(e) => format!("{e:#}"),
        }
    }
}

pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

/// The pipeline file's path in the repository and its checked content, at `commit`.
pub fn load_pipeline(
    repo: &Repo,
    commit: &str,
    subdir: Option<&Path>,
) -> Result<(String, CheckedPipeline), LoadError> {
    let prefix = subdir
        .map(|s| format!("{}/", s.display()))
        .unwrap_or_default();
    let mut found = None;
    for name in PIPELINE_FILE_NAMES {
        let path = format!("{prefix}{name}");
        match repo.read_file(commit, &path) {
            Ok(Some(bytes)) => {
                found = Some((path, bytes));
                break;
            }
            Ok(None) => {}
            Err(e) => return Err(LoadError::Other(e)),
        }
    }
    let Some((file, bytes)) = found else {
        let place = if prefix.is_empty() {
            "at the repository root".to_string()
        } else {
            format!("in {prefix}")
        };
        return Err(LoadError::Missing(format!(
            "commit {} has no pipeline file: add {} {place}",
            short(commit),
            PIPELINE_FILE_NAMES.join(" or ")
        )));
    };
    match parse_pipeline_bytes(&file, &bytes) {
        Ok(checked) => Ok((file, checked)),
        Err(diags) => Err(LoadError::Invalid(diags)),
    }
}
