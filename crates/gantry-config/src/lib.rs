//! The pipeline file (`gantry.yml`): read with positions, checked with every error reported at
//! once (file:line:column, field, suggestion), and lowered into [`gantry_model::Pipeline`].
//!
//! Codemap:
//! - [`yaml`]: YAML into a tree of nodes that remember their position.
//! - `check`: the checker and lowering; its key tables are the list of what the file may say.
//! - `field`: field primitives (unknown keys, durations) shared by both checkers.
//! - [`diagnostic`]: errors and warnings, rendered like a compiler's.
//! - [`schema`]: the JSON Schema of the file, for editors (`gantry schema`).
//! - [`server`]: the server's configuration file (`gantry.toml`), checked the same way.

mod check;
pub mod diagnostic;
mod field;
pub mod schema;
pub mod server;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
use gantry_model::Pipeline;
use std::path::{Path, PathBuf};

/// File names gantry looks for at the root of a repository, in order.
pub const PIPELINE_FILE_NAMES: &[&str] = &["gantry.yml", ".gantry.yml"];

/// A pipeline that passed its checks, with any warnings.
#[derive(Debug, Clone)]
pub struct CheckedPipeline {
    pub pipeline: Pipeline,
    pub warnings: Diagnostics,
}

/// Parses and checks a pipeline file's text. `file` names it in messages.
pub fn parse_pipeline(file: &str, source: &str) -> Result<CheckedPipeline, Diagnostics> {
    let mut diags = Diagnostics {
        file: file.to_string(),
        source: source.to_string(),
        items: Vec::new(),
    };
    let root = match yaml::parse(source) {
        Ok(root) => root,
        Err(e) => {
            diags.items.push(Diagnostic {
                severity: Severity::Error,
                pos: e.pos,
                width: 1,
                field: String::new(),
                help: yaml_help(&e.message),
                message: format!("invalid YAML: {}", e.message),
            });
            return Err(diags);
        }
    };
    let mut checker = check::Checker::default();
    let pipeline = checker.pipeline(&root);
    diags.items = checker.diags;
    diags.items.sort_by_key(|d| (d.pos.line, d.pos.col));
    match pipeline {
        Some(pipeline) => Ok(CheckedPipeline {
            pipeline,
            warnings: diags,
        }),
        None => Err(diags),
    }
}

/// Advice for the YAML mistakes people make most in pipeline files.
fn yaml_help(message: &str) -> Option<String> {
    if message.contains("mapping values are not allowed") {
        return Some("an unquoted value cannot contain `: `; quote the whole command, or write it as a block: `run: |` and the command on the next line, indented".into());
    }
    if message.contains("found character that cannot start any token") {
        return Some(
            "indent with spaces, not tabs; quote values that start with `@` or a backtick".into(),
        );
    }
    None
}

/// The pipeline file in a checked-out directory, if there is one.
pub fn find_pipeline_file(dir: &Path) -> Option<PathBuf> {
    PIPELINE_FILE_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests;
