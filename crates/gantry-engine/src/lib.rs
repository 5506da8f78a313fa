//! The verbs of gantry as pure code, and the ports adapters implement. Nothing here touches a
//! file, a process or the network, and nothing here can fail: a failed job is an event that the
//! run machine answers with commands, not an `Err`.
//!
//! Codemap:
//! - [`run`]: the run state machine: events in (`JobFinished`, `Cancel`), commands out
//!   (`StartJob`, `FinishRun`, ...). Stage order, retries, `allow_failure`, cancellation.
//! - [`canary`]: the canary state machine (steps, analysis, promote, abort, pause) and analysis.
//! - [`mask`]: streaming secret masking of step output, line by line.
//! - [`why`]: failure diagnosis: rules, the diagnoser, failing test names, what changed.
//! - [`release`]: releases of an environment: rollback target, what is kept, outdated deploys.
//! - [`ports`]: the traits the state store and artifact store implement, with their records.

pub mod canary;
pub mod mask;
pub mod ports;
pub mod release;
pub mod run;
pub mod why;
