//! Tidy checks of the workspace itself: every source file says what it owns in a `//!` line,
//! crates depend only inward (ARCHITECTURE.md's table), and the engine and the model name no
//! crate or standard module that does I/O.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Every `.rs` file under `crates/`, every folder included, but cargo's own build output (a
/// folder holding `CACHEDIR.TAG`, should someone build inside a crate).
fn source_files() -> Vec<PathBuf> {
    crate::support::files_under(&workspace().join("crates"))
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
        .filter(|f| !f.ancestors().any(|a| a.join("CACHEDIR.TAG").is_file()))
        .collect()
}

#[test]
fn the_tidy_walk_sees_every_source_folder() {
    let files = source_files();
    for must in [
        "gantry-deploy/src/targets/process.rs",
        "gantry-engine/src/run/tests.rs",
        "gantry/tests/cli/tidy.rs",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(must)),
            "the tidy walk missed {must}"
        );
    }
}

#[test]
fn every_source_file_opens_with_a_module_doc() {
    let mut missing = Vec::new();
    for file in source_files() {
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
    ("gantry-docker", &[]),
    ("gantry-store", &["gantry-model", "gantry-engine"]),
    (
        "gantry-runner",
        &[
            "gantry-model",
            "gantry-engine",
            "gantry-git",
            "gantry-docker",
        ],
    ),
    ("gantry-api", &["gantry-model", "gantry-engine"]),
    (
        "gantry-deploy",
        &[
            "gantry-model",
            "gantry-engine",
            "gantry-runner",
            "gantry-docker",
        ],
    ),
    (
        "gantry",
        &[
            "gantry-api",
            "gantry-model",
            "gantry-config",
            "gantry-engine",
            "gantry-git",
            "gantry-docker",
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

/// Crates that do I/O (files, sockets, processes, clocks of a runtime): the engine and the model
/// decide, adapters do, so neither may name one.
const IO_CRATES: &[&str] = &[
    "tokio",
    "sqlx",
    "reqwest",
    "hyper",
    "hyper-util",
    "axum",
    "tower",
    "object_store",
    "nix",
    "tar",
    "zstd",
    "tempfile",
    "glob",
    "gix",
    "arc-swap",
    "tracing-subscriber",
];
/// Standard modules that do I/O, as they would be named in source.
const IO_MODULES: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::thread",
    "std::env",
];

#[test]
fn the_engine_and_the_model_name_no_io_crate() {
    for name in ["gantry-engine", "gantry-model"] {
        let dir = workspace().join("crates").join(name);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        for line in manifest.lines() {
            let dep = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
            assert!(
                !IO_CRATES.contains(&dep),
                "{name} depends on {dep}, a crate that does I/O"
            );
        }
        let patterns: Vec<String> = IO_MODULES
            .iter()
            .map(|m| m.to_string())
            .chain(
                IO_CRATES
                    .iter()
                    .map(|c| format!("{}::", c.replace('-', "_"))),
            )
            .collect();
        for file in crate::support::files_under(&dir.join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for m in &patterns {
                    assert!(
                        !code.contains(m),
                        "{}:{}: names {m}, which does I/O",
                        file.display(),
                        n + 1
                    );
                }
            }
        }
    }
}
