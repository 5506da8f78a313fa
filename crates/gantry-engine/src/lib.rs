//! The verbs of gantry as pure code, and the ports adapters implement. Nothing here touches a
//! file, a process or the network, and nothing here can fail: a failed job is an event that the
//! run machine answers with commands, not an `Err`.
//!
//! Codemap:
//! - [`run`]: the run state machine: events in (`JobFinished`, `Cancel`), commands out
//!   (`StartJob`, `FinishRun`, ...). Stage order, retries, `allow_failure`, cancellation.
//! - [`deployment`]: the deployment machine: bring a release up, switch, record, bake, roll
//!   back by itself; the canary is one of its phases.
//! - [`canary`]: the canary state machine (steps, analysis, promote, abort, pause) and analysis.
//! - [`waves`]: a deploy stage's environments in order, stopping at the first that fails.
//! - [`mask`]: streaming secret masking of step output, line by line.
//! - [`why`]: failure diagnosis: rules, the diagnoser, failing test names, what changed.
//! - [`release`]: releases of an environment: rollback target, what is kept, outdated deploys.
//! - [`ports`]: the traits the state store and artifact store implement, with their records.

pub mod canary;
pub mod deployment;
pub mod mask;
pub mod ports;
pub mod release;
pub mod run;
pub mod waves;
pub mod why;
