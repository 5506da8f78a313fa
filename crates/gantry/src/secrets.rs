//! Secret values for runs: from a secrets file (`NAME=value` lines) first, then gantry's own
//! environment. Values only ever travel as `SecretValue`.

use anyhow::Context;
use gantry_model::SecretValue;
use std::collections::HashMap;
use std::path::Path;

/// Values of the secrets the pipeline asks for: from the secrets file first, then gantry's
/// environment. A secret found in neither is left out; the job that needs it fails saying so.
pub fn load_secrets(
    file: Option<&Path>,
    names: &[String],
) -> anyhow::Result<HashMap<String, SecretValue>> {
    let mut from_file: HashMap<String, String> = HashMap::new();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the secrets file {}", path.display()))?;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((k, v)) = line.split_once('=') else {
                anyhow::bail!("{}:{}: expected NAME=value", path.display(), i + 1);
            };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
                .unwrap_or(v);
            from_file.insert(k.trim().to_string(), v.replace("\\n", "\n"));
        }
    }
    let mut out = HashMap::new();
    for name in names {
        if let Some(v) = from_file.remove(name).or_else(|| std::env::var(name).ok()) {
            out.insert(name.clone(), SecretValue::new(v));
        }
    }
    Ok(out)
}
