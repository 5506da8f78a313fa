//! Runs a planned pipeline on this machine: the I/O half of a run. It drives the engine's run
//! machine, gives each job attempt a fresh workspace exported from the commit, runs steps as
//! process groups with timeouts and cancellation, masks and stores their output, and stores the
//! artifacts jobs declare.
//!
//! Codemap:
//! - [`execute`]: the run loop (`Runner::execute`): events in, engine commands carried out.
//! - `job`: one attempt of one job: workspace, steps, artifacts.
//! - [`process`]: one step as a process group: spawn, stream output, time out, kill.
//! - [`events`]: what a run reports to whoever watches it (terminal, JSON, later the API).
//! - [`owner`]: the lock a live runner holds, and recovery of runs whose runner died.
//! - [`prefetch`]: the checkout `gantry run` begins before its run is recorded.

pub mod cache;
pub mod container;
mod context;
pub mod events;
pub mod execute;
mod images;
mod job;
mod logs;
mod plan;
pub mod prefetch;
pub use logs::DEFAULT_JOB_LOG_CAP;
pub mod owner;
pub mod process;
pub mod remote;
pub mod sandbox;
mod services;

pub use events::{Observer, RunEvent};
pub use execute::{RunOptions, RunOutcome, RunRequest, Runner};

pub(crate) use gantry_engine::ports::now_millis;
