//! `portcullis gateway`: the private side from `gateway.toml`: the gateway
//! and its upstreams, the policy and its reloader, the audit spool and its
//! exporter, the tunnel pool, the admin listener.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use portcullis::config::gateway::{GatewayConfig, GatewaySettings};
use portcullis::gateway::Gateway;
use portcullis::plugin::PluginEngine;
use portcullis::plugin::engine::default_cache_dir;

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
    // Upstream connections and stdio pipes, one or more per stream.
    portcullis::accept::fit_descriptor_limit(0);
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
    tracing::info!(instance = %gateway.instance(), tunnel = %cfg.dial.tunnel_id, "gateway instance");
    let (status, task) = gateway.connect(cfg.dial, cfg.pool, shutdown.clone());
    if let Some(addr) = cfg.admin {
        let a = portcullis::admin::Admin {
            registry: telemetry.registry.clone(),
            ready: portcullis::admin::gateway_readiness(gateway.clone(), status),
            jwks: cfg.identity.as_ref().map(|m| m.jwks()),
        };
        a.start(addr, shutdown).await?;
    }
    task.await?;
    if let Some(spool) = gateway.audit() {
        spool.flush_at_exit().await;
    }
    finish(telemetry, exporter).await;
    Ok(())
}
