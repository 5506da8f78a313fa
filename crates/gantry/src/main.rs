//! The `gantry` binary: hands the command line to [`gantry::cli::main`]; the application is the
//! library (`lib.rs`).

use std::process::ExitCode;

fn main() -> ExitCode {
    gantry::cli::main()
}
