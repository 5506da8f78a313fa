//! `gantry why` as pure code: the rule table ([`rules`]), the diagnoser that reads a failed
//! run's facts and log lines and picks the most telling evidence ([`diagnose`]), failing test
//! names from common test runners ([`tests`]), and what changed since the last good run
//! ([`changes`]). Streaming and line-based: a 100 MB log is read once, in constant memory.

pub mod changes;
pub mod diagnose;
pub mod rules;
pub mod test_names;

pub use diagnose::{Diagnoser, Diagnosis, Evidence, Fact};
pub use rules::{Category, Rule};
