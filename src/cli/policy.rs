//! `portcullis policy`: check a policy file, pin a server's tools in it,
//! run the test cases kept beside it, replay an audit spool through it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use portcullis::config::upstream::UpstreamSpec;
use portcullis::plugin::PluginEngine;
use portcullis::plugin::engine::default_cache_dir;
use portcullis::policy::{cases, pin, replay};

/// `portcullis policy`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Parse a policy, load every plugin and call its init.
    Check { file: PathBuf },
    /// Pin every tool a live server lists: write their definition digests into the policy's schema-guard pins.
    Pin {
        file: PathBuf,
        /// The server: http://host:port/mcp or stdio:COMMAND ARGS…
        #[arg(long, value_name = "SPEC")]
        server: String,
        /// The plugin entry to write to (default: the one schema-guard plugin).
        #[arg(long)]
        plugin: Option<String>,
    },
    /// Run the test cases kept beside a policy (NAME.cases.toml) through its real plugins.
    Test {
        file: PathBuf,
        /// Cases file; default: next to the policy, NAME.cases.toml.
        #[arg(long)]
        cases: Option<PathBuf>,
        /// Under each case, what every plugin decided (verdict, the rule or
        /// policy id and other annotations, the private reason) and what the
        /// chain did.
        #[arg(long)]
        explain: bool,
    },
    /// Replay the messages an audit spool recorded through a candidate policy and print what it decides differently. Exit status: 0 no difference, 1 differences, 2 the replay could not be made.
    Replay(ReplayArgs),
}

/// `portcullis policy replay`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The gateway's audit spool directory.
    #[arg(long, value_name = "DIR")]
    audit: PathBuf,
    /// The candidate policy file.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Environment variable holding the spool's HMAC key, if it is keyed.
    #[arg(long, value_name = "VAR")]
    key_env: Option<String>,
    /// Replay a spool whose hash chain does not verify (its problems are
    /// listed in the report).
    #[arg(long)]
    allow_broken_chain: bool,
    /// Only records of this server.
    #[arg(long)]
    server: Option<String>,
    /// Only records of this tunnel.
    #[arg(long)]
    tunnel: Option<String>,
    /// Show message contents, public messages and private reasons (left
    /// out by default: they can hold the values the audit protects).
    #[arg(long)]
    show_values: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Exit status of `policy replay` when the candidate decides differently.
const REPLAY_DIFFERS: i32 = 1;
/// Exit status of `policy replay` when it could not replay (unreadable or
/// broken spool, a policy that does not load): as diff(1), distinct from
/// a difference.
const REPLAY_FAILED: i32 = 2;

/// Runs one `policy` subcommand; a failed test case exits with status 1,
/// a replay as [`REPLAY_DIFFERS`] and [`REPLAY_FAILED`] say.
pub async fn run(command: Command) -> Result<()> {
    portcullis::telemetry::init_logging_only();
    match command {
        Command::Check { file } => check(file).await,
        Command::Pin {
            file,
            server,
            plugin,
        } => pin_tools(file, &server, plugin.as_deref()).await,
        Command::Test {
            file,
            cases,
            explain,
        } => run_cases(file, cases, explain).await,
        Command::Replay(args) => match replay_spool(args).await {
            Ok(false) => Ok(()),
            Ok(true) => std::process::exit(REPLAY_DIFFERS),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(REPLAY_FAILED);
            }
        },
    }
}

/// Replays the spool through the candidate and prints the report; true
/// when the candidate decides some message differently.
async fn replay_spool(args: ReplayArgs) -> Result<bool> {
    let key = match &args.key_env {
        Some(var) => Some(
            std::env::var(var)
                .with_context(|| format!("{var} is not set"))?
                .into_bytes(),
        ),
        None => None,
    };
    let engine = PluginEngine::new(default_cache_dir())?;
    let catalog = Arc::new(portcullis::policy::catalog::Catalog::default());
    let policy = portcullis::policy::load(&args.policy, &engine, catalog.clone()).await?;
    let opts = replay::Options {
        key,
        allow_broken_chain: args.allow_broken_chain,
        server: args.server,
        tunnel: args.tunnel,
        max_depth: portcullis::limits::MAX_JSON_DEPTH,
        show_values: args.show_values,
    };
    let report = replay::replay(&args.audit, &policy, &catalog, &opts).await?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(report.differs())
}

/// Loads `file` and every plugin it names.
async fn check(file: PathBuf) -> Result<()> {
    let engine = PluginEngine::new(default_cache_dir())?;
    let policy = portcullis::policy::load(&file, &engine, Default::default()).await?;
    println!("{}: ok (sha256 {})", file.display(), policy.digest);
    for (name, digest) in policy.plugins() {
        println!("  plugin {name}: sha256 {digest}");
    }
    Ok(())
}

/// Writes the digest of every tool `server` lists into `file`'s pins.
async fn pin_tools(file: PathBuf, server: &str, plugin: Option<&str>) -> Result<()> {
    let spec = UpstreamSpec::parse(server).map_err(|e| anyhow::anyhow!("--server: {e}"))?;
    let tools = super::pin::list_tools(&spec).await?;
    let mut pins = BTreeMap::new();
    for t in &tools {
        let name = t
            .get("name")
            .and_then(|n| n.as_str())
            .context("a listed tool has no name")?;
        pins.insert(name.to_owned(), pin::tool_digest(t));
    }
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let updated = pin::write_pins(&text, plugin, &pins)?;
    let tmp = file.with_extension("toml.pin-tmp");
    std::fs::write(&tmp, updated)?;
    std::fs::rename(&tmp, &file)?;
    for (name, digest) in &pins {
        println!("pinned {name:<24} {digest}");
    }
    println!("{}: {} tools pinned", file.display(), pins.len());
    Ok(())
}

/// Runs the cases file (default: beside `file`) through `file`'s plugins.
async fn run_cases(file: PathBuf, cases_file: Option<PathBuf>, explain: bool) -> Result<()> {
    let engine = PluginEngine::new(default_cache_dir())?;
    let catalog = Arc::new(portcullis::policy::catalog::Catalog::default());
    let policy = portcullis::policy::load(&file, &engine, catalog.clone()).await?;
    let cases_file = cases_file.unwrap_or_else(|| cases::cases_path(&file));
    let report = cases::run_with(
        &policy,
        &catalog,
        &cases_file,
        portcullis::limits::MAX_JSON_DEPTH,
        explain,
    )
    .await?;
    print!("{}", report.text);
    if report.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
