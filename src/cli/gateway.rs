//! `portcullis gateway`: the private side from `gateway.toml`: the gateway
//! and its upstreams, the policy and its reloader, the audit spool and its
//! exporter, the tunnel pool, its own agent listener, the admin listener.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use portcullis::config::gateway::{GatewayConfig, GatewaySettings};
use portcullis::gateway::Gateway;
use portcullis::plugin::PluginEngine;
use portcullis::plugin::engine::default_cache_dir;
use portcullis::relay::Relay;
use tokio::net::TcpListener;

use super::{finish, open_spool, shutdown_on_signal, start_exporter};

/// The service name the gateway reports its telemetry under.
const SERVICE: &str = "portcullis-gateway";

/// `portcullis gateway`'s flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, short)]
    config: PathBuf,
}

/// The live gateway: one upstream per configured server.
fn build(settings: &GatewaySettings) -> Result<Arc<Gateway>> {
    let upstreams = settings
        .servers
        .iter()
        .map(|(name, spec)| Ok((name.clone(), spec.build(name, settings.limits)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok(Gateway::new(upstreams, settings.limits))
}

/// Runs a gateway until a signal.
pub async fn run(args: Args) -> Result<()> {
    let telemetry = portcullis::telemetry::init(SERVICE)?;
    let cfg = GatewayConfig::load(&args.config)?;
    let gateway = build(&cfg.gateway)?;
    // Upstream connections and stdio pipes, one or more per stream, and
    // the agents of its own listener.
    let agents = cfg
        .direct
        .as_ref()
        .map_or(0, |d| d.settings.max_connections);
    portcullis::accept::fit_descriptor_limit(agents as u64);
    let shutdown = shutdown_on_signal();
    if let Some(audit) = cfg.audit {
        gateway.set_audit(open_spool(audit)?);
    }
    let exporter = start_exporter(&telemetry, gateway.audit(), shutdown.clone())?;
    if let Some(path) = &cfg.policy {
        let engine = PluginEngine::new(default_cache_dir())?;
        let policy = portcullis::policy::load(path, &engine, gateway.catalog()).await?;
        tracing::info!(policy = %path.display(), digest = policy.digest, "policy loaded");
        gateway.set_policy(Some(Arc::new(policy)));
        let reloader =
            portcullis::policy::reload::Reloader::new(gateway.clone(), path.clone(), engine);
        tokio::spawn(reloader.run(shutdown.clone()));
    }
    // Which replica this is: its sessions and event ids carry it.
    tracing::info!(instance = %gateway.instance(), "gateway instance");
    // Bound before anything says ready: a port in use is a start-up error.
    let direct = match cfg.direct {
        Some(d) => {
            let listener = TcpListener::bind(d.listen).await?;
            tracing::info!(
                agents = %listener.local_addr()?,
                tunnel = %d.tunnel,
                tls = d.tls.is_some(),
                "gateway serving agents on its own listener"
            );
            Some((listener, d))
        }
        None => None,
    };
    let (status, tunnel) = match cfg.tunnel {
        Some(t) => {
            tracing::info!(tunnel = %t.dial.tunnel_id, "dialling the relays");
            let (status, task) = gateway.connect(t.dial, t.pool, shutdown.clone());
            (Some(status), Some(task))
        }
        None => (None, None),
    };
    if let Some(addr) = cfg.admin {
        let a = portcullis::admin::Admin {
            registry: telemetry.registry.clone(),
            ready: portcullis::admin::gateway_readiness(gateway.clone(), status),
            jwks: cfg.identity.as_ref().map(|m| m.jwks()),
        };
        a.start(addr, shutdown.clone()).await?;
    }
    // The agent front end of a relay, with the gateway behind it in this
    // process; its records go to the gateway's chain.
    let direct = direct.map(|(listener, d)| {
        let front = Relay::direct(d.settings, d.tunnel, gateway.clone());
        if let Some(spool) = gateway.audit() {
            front.set_audit(spool);
        }
        tokio::spawn(front.serve_agents(listener, d.tls, shutdown.clone()))
    });
    if let Some(task) = tunnel {
        task.await?;
    }
    if let Some(task) = direct {
        task.await?;
    }
    if let Some(spool) = gateway.audit() {
        spool.flush_at_exit().await;
    }
    finish(telemetry, exporter).await;
    Ok(())
}
