//! The `portcullis` command line: parse, then hand the subcommand to its
//! composition root in [`cli`].

use anyhow::Result;
use clap::{Parser, Subcommand};

mod cli;

/// mimalloc instead of glibc's malloc: the relay and gateway allocate and
/// free per message across worker threads, where glibc's arenas are slow
/// (the README's "Build choices" has the profile and the throughput).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Hosted AI agents reach private MCP servers through an outbound-only tunnel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Relay, gateway and a demo MCP server in one process, ready to call.
    Up(cli::up::Args),
    /// Verify or read an audit spool.
    Audit {
        #[command(subcommand)]
        command: cli::audit::Command,
    },
    /// Check policy files.
    Policy {
        #[command(subcommand)]
        command: cli::policy::Command,
    },
    /// Start a policy plugin from a template (Python or Rust) and build it.
    Plugin {
        #[command(subcommand)]
        command: cli::plugin::Command,
    },
    /// Run a relay (public side) from a TOML config.
    Relay(cli::relay::Args),
    /// Run a gateway (private side) from a TOML config.
    Gateway(cli::gateway::Args),
    /// Generate an agent key or tunnel token and print its SHA-256 for the relay config.
    Keygen(cli::keygen::Args),
    /// Print a documented example config (`relay` or `gateway`).
    Example(cli::example::Args),
    /// Measure the tunnel against a direct call and print a table.
    Bench(cli::bench::Args),
    /// Internal: the gateways of the benchmark's memory measurement.
    #[command(hide = true)]
    BenchGateways(cli::bench::GatewaysArgs),
    /// Internal: the upstream of `bench --processes`.
    #[command(hide = true)]
    BenchUpstream,
    /// Internal: one end of `bench --processes`' reference byte tunnel.
    #[command(hide = true)]
    BenchByteTunnel(cli::bench::ByteTunnelArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Up(args) => cli::up::run(args).await,
        Command::Audit { command } => cli::audit::run(command),
        Command::Policy { command } => cli::policy::run(command).await,
        Command::Plugin { command } => cli::plugin::run(command),
        Command::Relay(args) => cli::relay::run(args).await,
        Command::Gateway(args) => cli::gateway::run(args).await,
        Command::Keygen(args) => cli::keygen::run(args),
        Command::Example(args) => cli::example::run(args),
        Command::Bench(args) => cli::bench::run(args).await,
        Command::BenchGateways(args) => cli::bench::run_gateways(args).await,
        Command::BenchUpstream => cli::bench::run_upstream().await,
        Command::BenchByteTunnel(args) => cli::bench::run_byte_tunnel(args).await,
    }
}
