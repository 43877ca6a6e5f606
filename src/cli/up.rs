//! `portcullis up`: the embedded stack ([`portcullis::up::start`]) with the
//! process around it: telemetry, audit export, the admin listener, the
//! banner or JSON line, and the drain on a signal.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use portcullis::config::upstream::UpstreamSpec;
use portcullis::up::{self, AuditSpool, PolicySource, UpOptions};

use super::{finish, shutdown_on_signal, start_exporter};

/// The service name `up` reports its telemetry under.
const SERVICE: &str = "portcullis";

/// `portcullis up`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    #[arg(long, conflicts_with = "no_audit")]
    audit_dir: Option<PathBuf>,
    /// Keep no audit trail at all (for benchmarks: nothing is recorded).
    #[arg(long)]
    no_audit: bool,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9464).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Take OAuth access tokens from this issuer (an https URL, exactly its tokens' `iss`) instead of the demo key.
    #[arg(long, value_name = "URL")]
    oauth_issuer: Option<String>,
    /// With --oauth-issuer: an audience accepted besides the endpoint's URL.
    #[arg(long, requires = "oauth_issuer")]
    audience: Option<String>,
    /// With --oauth-issuer: a CA (PEM) for the issuer's TLS instead of the system roots.
    #[arg(long, value_name = "PEM", requires = "oauth_issuer")]
    oauth_ca: Option<PathBuf>,
    /// With --oauth-issuer: a scope every token must carry (repeatable).
    #[arg(long = "oauth-scope", value_name = "SCOPE", requires = "oauth_issuer")]
    oauth_scopes: Vec<String>,
    /// With --oauth-issuer: a token claim passed to policies (repeatable).
    #[arg(long = "oauth-claim", value_name = "CLAIM", requires = "oauth_issuer")]
    oauth_claims: Vec<String>,
}

impl Args {
    /// What to start, from the flags.
    fn options(&self) -> Result<UpOptions> {
        let servers = self
            .servers
            .iter()
            .map(|s| parse_server(s))
            .collect::<Result<Vec<_>>>()?;
        let policy = match (&self.policy, self.no_policy) {
            (_, true) => PolicySource::Off,
            (Some(path), false) => PolicySource::File(path.clone()),
            (None, false) => PolicySource::Builtin,
        };
        let audit = match (&self.audit_dir, self.no_audit) {
            (_, true) => AuditSpool::Off,
            (Some(dir), false) => AuditSpool::Dir(dir.clone()),
            (None, false) => AuditSpool::Temp,
        };
        Ok(UpOptions {
            agent_listen: self.listen,
            servers,
            demo: !self.no_demo,
            insecure_no_auth: self.insecure_no_auth,
            connections: self.connections,
            policy,
            audit,
            oauth: self.oauth_issuer.as_ref().map(|issuer| up::UpOAuth {
                issuer: issuer.clone(),
                audience: self.audience.clone(),
                ca: self.oauth_ca.clone(),
                scopes: self.oauth_scopes.clone(),
                claims: self.oauth_claims.clone(),
            }),
        })
    }
}

/// `--server NAME=SPEC`.
fn parse_server(s: &str) -> Result<(String, UpstreamSpec)> {
    let (name, spec) = s
        .split_once('=')
        .with_context(|| format!("--server '{s}': expected NAME=SPEC"))?;
    let spec = UpstreamSpec::parse(spec).map_err(|e| anyhow::anyhow!("--server {name}: {e}"))?;
    Ok((name.to_owned(), spec))
}

/// Starts the stack, says how to call it, and runs until a signal.
pub async fn run(args: Args) -> Result<()> {
    let telemetry = portcullis::telemetry::init(SERVICE)?;
    let running = up::start(args.options()?).await?;
    let exporter = start_exporter(
        &telemetry,
        running.gateway.audit(),
        running.shutdown.clone(),
    )?;
    let relay_exporter =
        start_exporter(&telemetry, running.relay.audit(), running.shutdown.clone())?;
    let admin_addr = match args.admin {
        Some(addr) => {
            let a = portcullis::admin::Admin {
                registry: telemetry.registry.clone(),
                ready: portcullis::admin::gateway_readiness(
                    running.gateway.clone(),
                    Some(running.pool.clone()),
                ),
                jwks: None,
            };
            Some(a.start(addr, running.shutdown.clone()).await?.0)
        }
        None => None,
    };
    if args.no_audit {
        eprintln!("WARNING: --no-audit: no decision is recorded.");
    }
    if args.insecure_no_auth {
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
    // Before the address is printed: whoever reads it may signal at once.
    let signal = shutdown_on_signal();
    if args.json {
        let line = serde_json::json!({
            "url": url,
            "token": running.token,
            "servers": running.servers,
            "tunnel": running.tunnel_id,
            "audit_dir": running.audit_dir,
            "admin": admin_addr.map(|a| format!("http://{a}")),
            "insecure_no_auth": args.insecure_no_auth,
            "oauth_issuer": args.oauth_issuer,
        });
        println!("{line}");
    } else {
        print_banner(&running, &url);
    }
    signal.cancelled().await;
    running.stop().await;
    if let Some(t) = relay_exporter {
        let _ = t.await;
    }
    finish(telemetry, exporter).await;
    Ok(())
}

/// The human-readable start-up text: the URLs, the token and two ways to
/// call a tool.
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
    if let Some(issuer) = &running.oauth_issuer {
        println!(
            "\n  OAuth            access tokens from {issuer}, audience the server URL\n                   (clients discover it from the 401 and /.well-known/oauth-protected-resource/t/…/mcp)"
        );
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
