//! `portcullis audit`: verify a spool's hash chain, print its last records.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// `portcullis audit`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check the hash chain of a spool; report every edited, deleted, reordered or truncated record.
    Verify {
        dir: PathBuf,
        /// Environment variable holding the HMAC key, if the spool is keyed.
        #[arg(long)]
        key_env: Option<String>,
    },
    /// Print the last records of a spool, one line each.
    Tail {
        dir: PathBuf,
        #[arg(short, default_value_t = 20)]
        n: usize,
    },
}

/// Runs one `audit` subcommand; a chain with problems exits with status 1.
pub fn run(command: Command) -> Result<()> {
    portcullis::telemetry::init_logging_only();
    match command {
        Command::Verify { dir, key_env } => verify(&dir, key_env.as_deref()),
        Command::Tail { dir, n } => {
            print!("{}", portcullis::audit::verify::tail(&dir, n)?);
            Ok(())
        }
    }
}

/// Checks `dir`'s chain and prints each finding, or that it is intact.
fn verify(dir: &Path, key_env: Option<&str>) -> Result<()> {
    let key = match key_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("{var} is not set"))?
                .into_bytes(),
        ),
        None => None,
    };
    let v = portcullis::audit::verify::verify(dir, key.as_deref())?;
    for f in &v.findings {
        println!("{}: {}", f.at, f.problem);
    }
    if v.findings.is_empty() {
        let pruned = match v.pruned_through {
            0 => String::new(),
            n => format!(" (records 1..={n} pruned after export)"),
        };
        println!(
            "{}: intact, {} records, last sequence {}{pruned}",
            dir.display(),
            v.records,
            v.last_seq
        );
        Ok(())
    } else {
        println!(
            "{}: {} problems in {} records",
            dir.display(),
            v.findings.len(),
            v.records
        );
        std::process::exit(1);
    }
}
