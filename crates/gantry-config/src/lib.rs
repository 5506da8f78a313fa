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

/// The largest pipeline file gantry reads: far above any real one, and small enough that
/// checking it is quick and bounded.
pub const MAX_PIPELINE_BYTES: usize = 1024 * 1024;

/// Parses and checks a pipeline file as it is stored (bytes): text that is not UTF-8 is an
/// error at the line and column of the first byte that is not.
pub fn parse_pipeline_bytes(file: &str, bytes: &[u8]) -> Result<CheckedPipeline, Diagnostics> {
    match std::str::from_utf8(bytes) {
        Ok(source) => parse_pipeline(file, source),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let col = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
            Err(Diagnostics {
                file: file.to_string(),
                source: String::from_utf8_lossy(bytes).into_owned(),
                items: vec![Diagnostic {
                    severity: Severity::Error,
                    pos: yaml::Pos { line, col },
                    width: 1,
                    field: String::new(),
                    message: format!(
                        "the file is not UTF-8 text: byte {} (0x{:02x}) cannot start or continue a character",
                        e.valid_up_to() + 1,
                        bytes[e.valid_up_to()]
                    ),
                    help: Some("save the file as UTF-8".into()),
                }],
            })
        }
    }
}

/// Parses and checks a pipeline file's text. `file` names it in messages. A UTF-8 byte-order
/// mark at the start is skipped (editors on Windows write one).
pub fn parse_pipeline(file: &str, source: &str) -> Result<CheckedPipeline, Diagnostics> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut diags = Diagnostics {
        file: file.to_string(),
        source: source.to_string(),
        items: Vec::new(),
    };
    if source.len() > MAX_PIPELINE_BYTES {
        diags.items.push(Diagnostic {
            severity: Severity::Error,
            pos: yaml::Pos { line: 1, col: 1 },
            width: 1,
            field: String::new(),
            message: format!(
                "the pipeline file is {} bytes; gantry reads pipeline files of at most {MAX_PIPELINE_BYTES} bytes",
                source.len()
            ),
            help: Some("move long scripts into files of the repository and run them from the steps".into()),
        });
        return Err(diags);
    }
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
mod hostile;
#[cfg(test)]
mod tests;
