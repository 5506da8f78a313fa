//! Tidy checks of the workspace itself: every source file says what it owns in a `//!` line, and
//! crates depend only inward (ARCHITECTURE.md's table).

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    for file in crate::support::files_under(&workspace().join("crates")) {
        if file.extension().is_none_or(|e| e != "rs")
            || file.components().any(|c| c.as_os_str() == "target")
        {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(file.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc: {missing:#?}"
    );
}

/// Which workspace crates each crate may depend on. Arrows point inward: adapters to the engine,
/// the engine to the model; only the binary sees everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("gantry-model", &[]),
    ("gantry-config", &["gantry-model"]),
    ("gantry-engine", &["gantry-model"]),
    ("gantry-git", &[]),
    ("gantry-store", &["gantry-model", "gantry-engine"]),
    (
        "gantry-runner",
        &["gantry-model", "gantry-engine", "gantry-git"],
    ),
    ("gantry-api", &["gantry-model", "gantry-engine"]),
    (
        "gantry-deploy",
        &["gantry-model", "gantry-engine", "gantry-runner"],
    ),
    (
        "gantry",
        &[
            "gantry-api",
            "gantry-model",
            "gantry-config",
            "gantry-engine",
            "gantry-git",
            "gantry-store",
            "gantry-runner",
            "gantry-deploy",
        ],
    ),
];

#[test]
fn crates_depend_only_inward() {
    let crates_dir = workspace().join("crates");
    let mut seen = 0;
    for entry in std::fs::read_dir(&crates_dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(entry.path().join("Cargo.toml")).unwrap();
        let allowed = ALLOWED
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("crate {name} is not in the tidy table"))
            .1;
        let deps_section = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or("")
            .split("\n[")
            .next()
            .unwrap_or("");
        for line in deps_section.lines() {
            let dep = line.split(['=', '.']).next().unwrap_or("").trim();
            if dep.starts_with("gantry") {
                assert!(
                    allowed.contains(&dep),
                    "{name} depends on {dep}, which the architecture forbids"
                );
            }
        }
        seen += 1;
    }
    assert_eq!(seen, ALLOWED.len());
}
