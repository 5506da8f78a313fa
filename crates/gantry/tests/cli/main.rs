//! Integration tests of the `gantry` binary, driven the way users drive it: real git
//! repositories in temp dirs, real processes, the real SQLite file.
//!
//! Modules:
//! - `support`: repository fixtures, running the binary, process checks.
//! - `check`: `gantry check` and `gantry schema`.
//! - `pipeline`: stages, parallel jobs, failures, allow_failure, retries, timeouts, environment.
//! - `secrets`: masking, checked against everything gantry persisted.
//! - `artifacts`: content-addressed storage, dedupe, escaping paths.
//! - `crash`: kill -9 and Ctrl-C in the middle of a run.
//! - `tidy`: module docs and dependency direction of the workspace.

#![allow(clippy::disallowed_methods)] // Tests start the binary and helper processes.

mod artifacts;
mod check;
mod crash;
mod pipeline;
mod secrets;
mod support;
mod tidy;
