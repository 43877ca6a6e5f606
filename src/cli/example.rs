//! `portcullis example`: print a documented example config.

use anyhow::Result;

/// Which config.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// `relay.toml`, the public side.
    Relay,
    /// `gateway.toml`, the private side.
    Gateway,
}

/// `portcullis example`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    kind: Kind,
}

/// Prints the example.
pub fn run(args: Args) -> Result<()> {
    portcullis::telemetry::init_logging_only();
    print!(
        "{}",
        match args.kind {
            Kind::Relay => portcullis::config::EXAMPLE_RELAY,
            Kind::Gateway => portcullis::config::EXAMPLE_GATEWAY,
        }
    );
    Ok(())
}
