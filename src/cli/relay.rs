//! `portcullis relay`: the public side from `relay.toml`: both listeners,
//! the audit spool and its exporter, the admin listener.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use portcullis::audit::Spool;
use portcullis::config::relay::RelayConfig;
use portcullis::relay::Relay;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{finish, open_spool, shutdown_on_signal, start_exporter};

/// The service name the relay reports its telemetry under.
const SERVICE: &str = "portcullis-relay";

/// `portcullis relay`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: PathBuf,
}

/// Runs a relay until a signal.
pub async fn run(args: Args) -> Result<()> {
    let telemetry = portcullis::telemetry::init(SERVICE)?;
    let cfg = RelayConfig::load(&args.config)?;
    let caps = cfg.settings.max_connections + cfg.settings.max_tunnel_connections;
    portcullis::accept::fit_descriptor_limit(caps as u64);
    let shutdown = shutdown_on_signal();
    let spool = cfg.audit.clone().map(open_spool).transpose()?;
    let exporter = start_exporter(&telemetry, spool.clone(), shutdown.clone())?;
    serve(cfg, shutdown, telemetry.registry.clone(), spool.clone()).await?;
    if let Some(spool) = spool {
        spool.flush_at_exit().await;
    }
    finish(telemetry, exporter).await;
    Ok(())
}

/// Binds both listeners (and the admin listener, serving `registry`,
/// when configured) and serves until `shutdown`.
async fn serve(
    cfg: RelayConfig,
    shutdown: CancellationToken,
    registry: prometheus::Registry,
    audit: Option<Arc<Spool>>,
) -> std::io::Result<()> {
    let tunnel_listener = TcpListener::bind(cfg.tunnel_listen).await?;
    let agent_listener = TcpListener::bind(cfg.agent_listen).await?;
    tracing::info!(
        tunnels = %tunnel_listener.local_addr()?,
        agents = %agent_listener.local_addr()?,
        "relay listening"
    );
    let relay = Relay::new(cfg.settings);
    if let Some(spool) = audit {
        relay.set_audit(spool);
    }
    if let Some(addr) = cfg.admin {
        let r = relay.clone();
        let admin = portcullis::admin::Admin {
            registry,
            ready: Arc::new(move || {
                Ok(format!("{} tunnels connected", r.registry().tunnel_count()))
            }),
            jwks: None,
        };
        admin.start(addr, shutdown.clone()).await?;
    }
    // The tunnels outlive the agents' drain: an agent connection still
    // open on a draining relay (HTTP/1.1 keep-alive until its next answer
    // says close) must still reach its gateway. Once the agents are done,
    // the tunnel connections close as their last calls end.
    let tunnels = CancellationToken::new();
    let t = tokio::spawn(relay.clone().serve_tunnels(
        tunnel_listener,
        cfg.tunnel_tls,
        tunnels.clone(),
    ));
    relay
        .serve_agents(agent_listener, cfg.agent_tls, shutdown)
        .await;
    tunnels.cancel();
    let _ = t.await;
    Ok(())
}
