//! gantry as a library: the application behind the `gantry` binary. `main.rs` only calls
//! [`cli::main`]; everything else is here, so the server can be started and stopped from code
//! ([`server::Server::start`] → [`server::RunningServer::shutdown`]).
//!
//! Codemap:
//! - [`cli`]: one file per subcommand: parse, call an operation, render.
//! - [`server`]: `gantry serve`: the `Control` port's implementation, its start and stop,
//!   queue workers, pollers, mirrors, the in-process deployer, notifications.
//! - [`context`]: wiring of the adapters for a data directory (state store, artifact store).
//! - [`why`], [`gc`], [`pipeline_at`], [`secrets`]: operations shared by the CLI and the server.
//! - [`client`]: the HTTP client of a running server (`--server`), and [`server_deployer`], the
//!   deployer `gantry run` uses to ask the server for its deploy stages.
//! - [`render`]: terminal rendering of runs, releases and diagnoses.

pub mod agent;
pub mod cli;
pub mod client;
pub mod context;
pub mod gc;
pub mod pipeline_at;
pub mod render;
pub mod sandbox;
pub mod secrets;
pub mod server;
pub mod server_deployer;
pub mod why;
