//! The `gantry` binary: parses the command line and hands each subcommand to its module in
//! `cli/`. Wiring of adapters (state store, artifact store, runner) happens in `context.rs`.

mod cli;
mod client;
mod context;
mod gc;
mod pipeline_at;
mod render;
mod secrets;
mod server;
mod server_deployer;
mod why;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
