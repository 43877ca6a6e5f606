//! `portcullis bench`: the library's benchmark with the process around it.

use std::path::PathBuf;

use anyhow::Result;

/// The service name the benchmark reports its telemetry under.
const SERVICE: &str = "portcullis-bench";

/// Benchmark sizes.
pub type Args = portcullis::bench::BenchOptions;

/// `portcullis bench-gateways`' flags.
#[derive(Debug, clap::Args)]
pub struct GatewaysArgs {
    #[arg(long)]
    relay: String,
    #[arg(long)]
    dir: PathBuf,
}

/// Runs the benchmark (with the metrics pipeline a gateway runs) and
/// prints its tables.
pub async fn run(args: Args) -> Result<()> {
    let _telemetry = portcullis::telemetry::init(SERVICE)?;
    println!("{}", portcullis::bench::run(args).await?);
    Ok(())
}

/// The child side of the memory measurement.
pub async fn run_gateways(args: GatewaysArgs) -> Result<()> {
    portcullis::telemetry::init_logging_only();
    portcullis::bench::run_gateways(args.relay, args.dir).await
}
