//! The `portcullis` command line: parse, load config, run.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use portcullis::config::gateway::{GatewayConfig, UpstreamSpec};
use portcullis::config::relay::RelayConfig;
use portcullis::plugin::PluginEngine;
use portcullis::plugin::engine::default_cache_dir;
use portcullis::telemetry::Telemetry;
use portcullis::{bench, secret, up};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc's malloc: the relay and gateway allocate and
/// free per message across worker threads, where glibc's arenas spent 11 %
/// of the path's CPU (perf, c=32) against a few percent with mimalloc.
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
enum PolicyCommand {
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
    },
}

#[derive(Subcommand)]
enum AuditCommand {
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

#[derive(Subcommand)]
enum Command {
    /// Relay, gateway and a demo MCP server in one process, ready to call.
    Up {
        /// Agent listener address.
        #[arg(long, default_value = "127.0.0.1:8640")]
        listen: SocketAddr,
        /// Print the agent URLs and token as one JSON line once ready.
        #[arg(long)]
        json: bool,
        /// Also tunnel NAME=http://host:port/mcp or NAME=stdio:COMMAND ARGS… (repeatable).
        #[arg(long = "server", value_name = "NAME=SPEC")]
        servers: Vec<String>,
        /// Do not start the demo server.
        #[arg(long)]
        no_demo: bool,
        /// Accept agents without a key. Loopback listeners only; for test tools that cannot send headers.
        #[arg(long)]
        insecure_no_auth: bool,
        /// Tunnel connections to keep.
        #[arg(long, default_value_t = portcullis::limits::DEFAULT_TUNNEL_CONNECTIONS)]
        connections: usize,
        /// Policy file (plugins and chains). Default: policies/default.toml, built in.
        #[arg(long, conflicts_with = "no_policy")]
        policy: Option<PathBuf>,
        /// Run with no policy chain at all.
        #[arg(long)]
        no_policy: bool,
        /// Directory for the audit spool (default: a new one under the temp dir; printed).
        #[arg(long)]
        audit_dir: Option<PathBuf>,
        /// Serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9464).
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Verify or read an audit spool.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Check policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Run a relay (public side) from a TOML config.
    Relay {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a gateway (private side) from a TOML config.
    Gateway {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Generate an agent key or tunnel token and print its SHA-256 for the relay config.
    Keygen {
        /// `agent` or `tunnel`.
        #[arg(default_value = "agent")]
        kind: String,
    },
    /// Print a documented example config (`relay` or `gateway`).
    Example { kind: String },
    /// Measure the tunnel against a direct call and print a table.
    Bench(bench::BenchOptions),
    /// Internal: the gateways of the benchmark's memory measurement.
    #[command(hide = true)]
    BenchGateways {
        #[arg(long)]
        relay: String,
        #[arg(long)]
        dir: PathBuf,
    },
}

fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    t.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: draining in-flight calls");
        t.cancel();
    });
    token
}

fn parse_server(s: &str) -> Result<(String, UpstreamSpec)> {
    let (name, spec) = s
        .split_once('=')
        .with_context(|| format!("--server '{s}': expected NAME=SPEC"))?;
    let spec = UpstreamSpec::parse(spec).map_err(|e| anyhow::anyhow!("--server {name}: {e}"))?;
    Ok((name.to_owned(), spec))
}

/// Starts the audit exporter when an OTLP logs endpoint is configured.
fn start_exporter(
    telemetry: &Telemetry,
    spool: Option<Arc<portcullis::audit::Spool>>,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    match (spool, &telemetry.settings.logs) {
        (Some(spool), Some(target)) => {
            let e = portcullis::audit::export::Exporter::start(
                &spool,
                target,
                &telemetry.resource,
                shutdown,
            )?;
            Ok(Some(e.task))
        }
        (None, Some(_)) => {
            tracing::warn!("an OTLP logs endpoint is set but there is no audit spool to export");
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Opens an audit spool and says where it is.
fn open_spool(cfg: portcullis::audit::SpoolConfig) -> Result<portcullis::audit::Spool> {
    let dir = cfg.dir.clone();
    let spool = portcullis::audit::Spool::open(cfg)
        .with_context(|| format!("audit spool {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), mode = ?spool.mode(), "audit spool open");
    Ok(spool)
}

/// Flushes telemetry at exit.
async fn finish(telemetry: Telemetry, exporter: Option<tokio::task::JoinHandle<()>>) {
    if let Some(t) = exporter {
        let _ = t.await;
    }
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let service = match &cli.command {
        Command::Up { .. } => Some("portcullis"),
        Command::Relay { .. } => Some("portcullis-relay"),
        Command::Gateway { .. } => Some("portcullis-gateway"),
        // The benchmark measures with the metrics pipeline a gateway runs.
        Command::Bench(_) => Some("portcullis-bench"),
        _ => None,
    };
    let telemetry = match service {
        Some(name) => Some(portcullis::telemetry::init(name)?),
        None => {
            portcullis::telemetry::init_logging_only();
            None
        }
    };
    match cli.command {
        Command::Up {
            listen,
            json,
            servers,
            no_demo,
            insecure_no_auth,
            connections,
            policy,
            no_policy,
            audit_dir,
            admin,
        } => {
            let telemetry = telemetry.context("telemetry")?;
            let servers = servers
                .iter()
                .map(|s| parse_server(s))
                .collect::<Result<Vec<_>>>()?;
            let opts = up::UpOptions {
                agent_listen: listen,
                servers,
                demo: !no_demo,
                insecure_no_auth,
                connections,
                policy,
                no_policy,
                audit_dir,
                no_audit: false,
            };
            let running = up::start(opts).await?;
            let exporter = start_exporter(
                &telemetry,
                running.gateway.audit(),
                running.shutdown.clone(),
            )?;
            let relay_exporter =
                start_exporter(&telemetry, running.relay.audit(), running.shutdown.clone())?;
            let admin_addr = match admin {
                Some(addr) => {
                    let a = portcullis::admin::Admin {
                        registry: telemetry.registry.clone(),
                        ready: portcullis::admin::gateway_readiness(
                            running.gateway.clone(),
                            running.pool.clone(),
                        ),
                    };
                    Some(a.start(addr, running.shutdown.clone()).await?.0)
                }
                None => None,
            };
            if insecure_no_auth {
                eprintln!(
                    "WARNING: --insecure-no-auth: ANY local process can call these servers without a key."
                );
            }
            let url = running
                .servers
                .get(up::DEMO_SERVER)
                .or_else(|| running.servers.values().next())
                .cloned()
                .unwrap_or_default();
            if json {
                let line = serde_json::json!({
                    "url": url,
                    "token": running.token,
                    "servers": running.servers,
                    "tunnel": running.tunnel_id,
                    "audit_dir": running.audit_dir,
                    "admin": admin_addr.map(|a| format!("http://{a}")),
                    "insecure_no_auth": insecure_no_auth,
                });
                println!("{line}");
            } else {
                print_banner(&running, &url);
            }
            let signal = shutdown_on_signal();
            signal.cancelled().await;
            running.stop().await;
            if let Some(t) = relay_exporter {
                let _ = t.await;
            }
            finish(telemetry, exporter).await;
            Ok(())
        }
        Command::Relay { config } => {
            let telemetry = telemetry.context("telemetry")?;
            let cfg = RelayConfig::load(&config)?;
            let caps = cfg.settings.max_connections + cfg.settings.max_tunnel_connections;
            portcullis::accept::fit_descriptor_limit(caps as u64);
            let shutdown = shutdown_on_signal();
            let spool = match cfg.audit.clone() {
                Some(audit) => Some(Arc::new(open_spool(audit)?)),
                None => None,
            };
            let exporter = start_exporter(&telemetry, spool.clone(), shutdown.clone())?;
            cfg.run(shutdown, Some(telemetry.registry.clone()), spool.clone())
                .await?;
            if let Some(spool) = spool {
                spool.flush_at_exit().await;
            }
            finish(telemetry, exporter).await;
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => {
            let engine = PluginEngine::new(default_cache_dir())?;
            let policy = portcullis::policy::load(&file, &engine, Default::default()).await?;
            println!("{}: ok (sha256 {})", file.display(), policy.digest);
            for (name, digest) in policy.plugins() {
                println!("  plugin {name}: sha256 {digest}");
            }
            Ok(())
        }
        Command::Policy {
            command:
                PolicyCommand::Pin {
                    file,
                    server,
                    plugin,
                },
        } => {
            let spec = portcullis::config::gateway::UpstreamSpec::parse(&server)
                .map_err(|e| anyhow::anyhow!("--server: {e}"))?;
            let tools = portcullis::policy::pin::list_tools(&spec).await?;
            let mut pins = std::collections::BTreeMap::new();
            for t in &tools {
                let name = t
                    .get("name")
                    .and_then(|n| n.as_str())
                    .context("a listed tool has no name")?;
                pins.insert(name.to_owned(), portcullis::policy::pin::tool_digest(t));
            }
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let updated = portcullis::policy::pin::write_pins(&text, plugin.as_deref(), &pins)?;
            let tmp = file.with_extension("toml.pin-tmp");
            std::fs::write(&tmp, updated)?;
            std::fs::rename(&tmp, &file)?;
            for (name, digest) in &pins {
                println!("pinned {name:<24} {digest}");
            }
            println!("{}: {} tools pinned", file.display(), pins.len());
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Test { file, cases },
        } => {
            let engine = PluginEngine::new(default_cache_dir())?;
            let catalog = Arc::new(portcullis::policy::catalog::Catalog::default());
            let policy = portcullis::policy::load(&file, &engine, catalog.clone()).await?;
            let cases = cases.unwrap_or_else(|| portcullis::policy::cases::cases_path(&file));
            let report = portcullis::policy::cases::run(
                &policy,
                &catalog,
                &cases,
                portcullis::limits::MAX_JSON_DEPTH,
            )
            .await?;
            print!("{}", report.text);
            if report.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Gateway { config } => {
            let telemetry = telemetry.context("telemetry")?;
            let cfg = GatewayConfig::load(&config)?;
            // Upstream connections and stdio pipes, one or more per stream.
            portcullis::accept::fit_descriptor_limit(0);
            let shutdown = shutdown_on_signal();
            if let Some(audit) = cfg.audit.clone() {
                cfg.gateway.set_audit(Arc::new(open_spool(audit)?));
            }
            let exporter = start_exporter(&telemetry, cfg.gateway.audit(), shutdown.clone())?;
            if let Some(path) = &cfg.policy {
                let engine = PluginEngine::new(default_cache_dir())?;
                let policy = portcullis::policy::load(path, &engine, cfg.gateway.catalog()).await?;
                tracing::info!(policy = %path.display(), digest = policy.digest, "policy loaded");
                cfg.gateway.set_policy(Some(std::sync::Arc::new(policy)));
                let reloader = portcullis::policy::reload::Reloader::new(
                    cfg.gateway.clone(),
                    path.clone(),
                    engine,
                );
                tokio::spawn(reloader.run(shutdown.clone()));
            }
            let (status, task) = cfg.gateway.connect(cfg.dial, cfg.pool, shutdown.clone());
            if let Some(addr) = cfg.admin {
                let a = portcullis::admin::Admin {
                    registry: telemetry.registry.clone(),
                    ready: portcullis::admin::gateway_readiness(cfg.gateway.clone(), status),
                };
                a.start(addr, shutdown).await?;
            }
            task.await?;
            if let Some(spool) = cfg.gateway.audit() {
                spool.flush_at_exit().await;
            }
            finish(telemetry, exporter).await;
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { dir, key_env },
        } => {
            let key = match &key_env {
                Some(var) => Some(
                    std::env::var(var)
                        .with_context(|| format!("{var} is not set"))?
                        .into_bytes(),
                ),
                None => None,
            };
            let v = portcullis::audit::verify::verify(&dir, key.as_deref())?;
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
        Command::Audit {
            command: AuditCommand::Tail { dir, n },
        } => {
            print!("{}", portcullis::audit::verify::tail(&dir, n)?);
            Ok(())
        }
        Command::Keygen { kind } => {
            let prefix = match kind.as_str() {
                "agent" => secret::AGENT_KEY_PREFIX,
                "tunnel" => secret::TUNNEL_TOKEN_PREFIX,
                other => bail!("unknown kind '{other}': use agent or tunnel"),
            };
            let s = secret::generate(prefix);
            println!("secret: {s}");
            println!("sha256: {}", secret::digest_hex(&s));
            if kind == "tunnel" {
                println!("tunnel id: {}", secret::random_id());
            }
            Ok(())
        }
        Command::Example { kind } => {
            match kind.as_str() {
                "relay" => print!("{}", portcullis::config::EXAMPLE_RELAY),
                "gateway" => print!("{}", portcullis::config::EXAMPLE_GATEWAY),
                other => bail!("unknown example '{other}': use relay or gateway"),
            }
            Ok(())
        }
        Command::BenchGateways { relay, dir } => bench::run_gateways(relay, dir).await,
        Command::Bench(opts) => {
            let report = bench::run(opts).await?;
            println!("{report}");
            Ok(())
        }
    }
}

fn print_banner(running: &up::Running, url: &str) {
    let auth = running
        .token
        .as_deref()
        .map(|t| format!("Authorization: Bearer {t}"));
    println!(
        "Portcullis is up: relay, gateway and tunnel ({} connections).\n",
        running.pool.connected()
    );
    for (name, u) in &running.servers {
        println!("  server {name:<10} {u}");
    }
    if let Some(t) = &running.token {
        println!("\n  agent token      {t}");
    }
    let header_flag = auth
        .as_deref()
        .map(|a| format!(" --header \"{a}\""))
        .unwrap_or_default();
    println!("\nCall a tool with the MCP Inspector CLI (Node 22+):\n");
    println!(
        "  npx -y @modelcontextprotocol/inspector --cli {url} --transport http{header_flag} \\\n    --method tools/call --tool-name lookup_customer --tool-arg customer_id=C-1001"
    );
    let headers = running
        .token
        .as_deref()
        .map(|t| format!("headers={{\"Authorization\": \"Bearer {t}\"}}"))
        .unwrap_or_default();
    println!("\nOr with the Python SDK (pip install 'mcp>=2'):\n");
    println!(
        r#"  python3 - <<'PY'
import asyncio, httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
async def main():
    async with httpx2.AsyncClient({headers}) as http:
        async with streamable_http_client("{url}", http_client=http) as (r, w, *_):
            async with ClientSession(r, w) as s:
                await s.initialize()
                print(await s.call_tool("lookup_customer", {{"customer_id": "C-1001"}}))
asyncio.run(main())
PY"#
    );
    if let Some(dir) = &running.audit_dir {
        println!(
            "\nAudit trail: {0}  (portcullis audit tail {0}; portcullis audit verify {0})",
            dir.display()
        );
    }
    println!("\nCtrl-C stops.");
}
