//! `portcullis keygen`: a new agent key or tunnel token, and the SHA-256
//! the relay config holds instead of it.

use anyhow::Result;
use portcullis::secret;

/// The kinds of secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// An agent's key (`Authorization: Bearer …` to the relay).
    Agent,
    /// A gateway's tunnel token, with a fresh tunnel id.
    Tunnel,
}

/// `portcullis keygen`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What the secret is for.
    #[arg(value_enum, default_value_t = Kind::Agent)]
    kind: Kind,
}

/// Prints the secret, its digest and, for a tunnel, an id.
pub fn run(args: Args) -> Result<()> {
    portcullis::telemetry::init_logging_only();
    let prefix = match args.kind {
        Kind::Agent => secret::AGENT_KEY_PREFIX,
        Kind::Tunnel => secret::TUNNEL_TOKEN_PREFIX,
    };
    let s = secret::generate(prefix);
    println!("secret: {s}");
    println!("sha256: {}", secret::digest_hex(&s));
    if args.kind == Kind::Tunnel {
        println!("tunnel id: {}", secret::random_id());
    }
    Ok(())
}
