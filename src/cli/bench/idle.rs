//! The relay's memory per idle tunnel: tunnels connected from gateways in a
//! child process (`portcullis bench-gateways`), the relay's RSS before and
//! after.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis::gateway::Gateway;
use portcullis::relay::auth::AgentAuth;
use portcullis::relay::{Relay, RelaySettings};
use portcullis::secret;
use portcullis::tls::{self, GeneratedCa};
use portcullis::tunnel::acceptor::TunnelAuth;
use portcullis::tunnel::connector::{Discovery, PoolConfig};
use portcullis::tunnel::dial::{DialConfig, ProxyConfig, RelayTarget};
use tokio_util::sync::CancellationToken;

/// `portcullis bench-gateways`' flags: where the parent's relay listens and
/// the directory with its CA and the tunnels to connect.
#[derive(Debug, clap::Args)]
pub struct GatewaysArgs {
    #[arg(long)]
    relay: String,
    #[arg(long)]
    dir: PathBuf,
}

/// Resident set size of this process, in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Connects `n` tunnels (default connection count each) to a relay in this
/// process, from gateways in a child process, and returns the relay's RSS
/// growth per tunnel in KiB.
pub async fn measure(n: usize) -> anyhow::Result<f64> {
    let ca = GeneratedCa::new("bench CA")?;
    let relay_id = ca.issue(&["localhost"])?;
    let ids: Vec<(String, String)> = (0..n)
        .map(|_| {
            (
                secret::random_id(),
                secret::generate(secret::TUNNEL_TOKEN_PREFIX),
            )
        })
        .collect();
    let relay = Relay::new(RelaySettings::new(
        AgentAuth::default(),
        TunnelAuth::new(ids.iter().map(|(id, t)| (id.clone(), secret::digest(t)))),
    ));
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_tls = tls::server_config(&relay_id, None, &[b"http/1.1"])?;
    tokio::spawn(
        relay
            .clone()
            .serve_tunnels(listener, server_tls, shutdown.clone()),
    );

    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", secret::random_id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let list: String = ids.iter().map(|(id, t)| format!("{id} {t}\n")).collect();
    std::fs::write(dir.join("tunnels"), list)?;

    // Let allocator arenas settle before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib().unwrap_or(0);
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("bench-gateways")
        .arg("--relay")
        .arg(addr.to_string())
        .arg("--dir")
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let conns = portcullis::limits::DEFAULT_TUNNEL_CONNECTIONS;
    let registry = Arc::clone(relay.registry());
    let connected = tokio::time::timeout(Duration::from_secs(120), async {
        for (id, _) in &ids {
            registry.wait_for(id, conns).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib().unwrap_or(0);
    let _ = child.kill().await;
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    connected.map_err(|_| anyhow::anyhow!("tunnels did not all connect within 120 s"))?;
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// The child side of the memory measurement: one gateway per tunnel listed
/// in `dir/tunnels`, connected to `relay`, until stdin closes.
/// `portcullis bench-gateways`, hidden.
pub async fn run_gateways(args: GatewaysArgs) -> anyhow::Result<()> {
    let GatewaysArgs { relay, dir } = args;
    let cas = tls::load_certs(&dir.join("ca.pem"))?;
    let client_tls = tls::client_config(Some(&cas), None, &[b"http/1.1"])?;
    let gateway = Gateway::new(
        Default::default(),
        portcullis::config::gateway::default_limits(),
    );
    let shutdown = CancellationToken::new();
    let list = std::fs::read_to_string(dir.join("tunnels"))?;
    for line in list.lines() {
        let Some((id, token)) = line.split_once(' ') else {
            continue;
        };
        let _ = gateway.connect(
            DialConfig {
                tunnel_id: id.to_owned(),
                token: token.to_owned(),
                tls: client_tls.clone(),
                proxy: ProxyConfig::default(),
                instance: None,
            },
            PoolConfig {
                relays: vec![RelayTarget {
                    addr: relay.clone(),
                    server_name: "localhost".into(),
                    resolved: None,
                }],
                discovery: Discovery::Static {
                    connections: portcullis::limits::DEFAULT_TUNNEL_CONNECTIONS,
                },
                max_streams: portcullis::limits::MAX_STREAMS_PER_CONNECTION,
                drain_grace: Duration::from_secs(1),
            },
            shutdown.clone(),
        );
    }
    // Blocks until the parent closes our stdin (or dies).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
    })
    .await;
    shutdown.cancel();
    Ok(())
}
