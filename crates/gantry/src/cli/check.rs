//! `gantry check [PATH]` and `gantry schema`.

use super::{CliError, CliResult};
use anyhow::Context;
use gantry_config::{PIPELINE_FILE_NAMES, find_pipeline_file, parse_pipeline_bytes};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// A pipeline file, or a directory holding gantry.yml / .gantry.yml (default: current directory)
    pub path: Option<PathBuf>,
}

pub fn check(args: CheckArgs) -> CliResult {
    let path = args.path.unwrap_or_else(|| PathBuf::from("."));
    let file = if path.is_dir() {
        find_pipeline_file(&path).ok_or_else(|| {
            anyhow::anyhow!(
                "no pipeline file in {}: expected one of {}",
                path.display(),
                PIPELINE_FILE_NAMES.join(", ")
            )
        })?
    } else {
        path
    };
    let source = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let shown = file.display().to_string();
    let shown = shown.strip_prefix("./").unwrap_or(&shown).to_string();
    match parse_pipeline_bytes(&shown, &source) {
        Ok(checked) => {
            if !checked.warnings.items.is_empty() {
                eprint!("{}", checked.warnings);
            }
            let p = &checked.pipeline;
            let jobs = p.jobs().count();
            println!("{shown}: ok ({} stages, {jobs} jobs)", p.stages.len());
            Ok(())
        }
        Err(diags) => {
            eprint!("{diags}");
            Err(CliError::silent(1))
        }
    }
}

pub fn schema() -> CliResult {
    let schema = gantry_config::schema::pipeline_schema();
    println!(
        "{}",
        serde_json::to_string_pretty(&schema).map_err(anyhow::Error::from)?
    );
    Ok(())
}
