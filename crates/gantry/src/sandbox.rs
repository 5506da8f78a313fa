//! Which sandbox steps get: gantry's data directory and its secrets file hidden from them
//! (gantry-runner's `sandbox` module says how and what a step can still do).

use anyhow::{Result, bail};
use gantry_runner::sandbox::{Sandbox, available};
use std::path::Path;

/// The sandbox for steps of a gantry whose data directory is `data_dir`. `demand`: true when
/// the operator asked for it (an error without Landlock), false when it is the default (None
/// and a warning without Landlock).
pub fn steps_sandbox(
    data_dir: &Path,
    secrets_file: Option<&Path>,
    demand: bool,
) -> Result<Option<Sandbox>> {
    if !available() {
        if demand {
            bail!(
                "steps cannot be sandboxed: this kernel has no Landlock (Linux 5.13 or later, with landlock among its LSMs); turn the sandbox off to run steps unsandboxed"
            );
        }
        eprintln!(
            "gantry: warning: this kernel has no Landlock: steps run unsandboxed and can read the data directory {}",
            data_dir.display()
        );
        return Ok(None);
    }
    let mut hidden = vec![std::path::absolute(data_dir)?];
    if let Some(f) = secrets_file {
        hidden.push(std::path::absolute(f)?);
    }
    Ok(Some(Sandbox { hidden }))
}
