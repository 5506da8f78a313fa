//! `gantry dataplane` and `gantry shim` (hidden: gantry starts them): the data plane of a
//! data directory (every environment's router), and the shim a release runs under. Both
//! outlive the server. An operator replaces a data plane (after upgrading gantry) with
//! `gantry dataplane --data DIR --replace`, and stops one with `--stop`.

use super::CliResult;
use anyhow::Context as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DataplaneArgs {
    /// The data directory whose environments it routes
    #[arg(long)]
    pub data: PathBuf,
    /// Take over from the data plane serving the directory (its listening sockets are handed
    /// over: no connection is refused)
    #[arg(long, conflicts_with = "stop")]
    pub replace: bool,
    /// Stop the data plane serving the directory (every environment's router stops)
    #[arg(long)]
    pub stop: bool,
}

pub async fn dataplane(args: DataplaneArgs) -> CliResult {
    let data = std::path::absolute(&args.data)
        .with_context(|| format!("the data directory {}", args.data.display()))?;
    if args.stop {
        if gantry_deploy::dataplane::stop(&data).await? {
            println!("the data plane of {} stopped", data.display());
        } else {
            println!("no data plane serves {}", data.display());
        }
        return Ok(());
    }
    gantry_deploy::dataplane::run(&data, args.replace).await?;
    Ok(())
}

/// The shim's life: its release's spec on standard input, then supervision until SIGTERM.
pub fn shim() -> CliResult {
    use std::io::Read;
    let mut spec = Vec::new();
    std::io::stdin()
        .read_to_end(&mut spec)
        .context("reading the release's spec")?;
    let spec: gantry_deploy::shim::ShimSpec =
        serde_json::from_slice(&spec).context("reading the release's spec")?;
    // One thread: the service's PR_SET_PDEATHSIG is towards the thread that started it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(gantry_deploy::shim::main(spec))?;
    Ok(())
}
