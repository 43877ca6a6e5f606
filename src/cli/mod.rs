//! The composition roots: one module per subcommand, each with `run(args)`,
//! building the live objects (listeners, relay, gateway, spools, exporters)
//! from the library's settings and wiring them to the process (signals,
//! telemetry, stdout, the exit code). `main.rs` only parses and dispatches.

use std::sync::Arc;

use anyhow::{Context, Result};
use portcullis::audit::{Spool, SpoolConfig};
use portcullis::telemetry::Telemetry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod audit;
pub mod bench;
pub mod example;
pub mod gateway;
pub mod keygen;
pub mod policy;
pub mod relay;
pub mod up;

/// A token cancelled on SIGTERM or Ctrl-C: the start of the drain.
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

/// Starts the audit exporter when an OTLP logs endpoint is configured.
fn start_exporter(
    telemetry: &Telemetry,
    spool: Option<Arc<Spool>>,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<()>>> {
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
fn open_spool(cfg: SpoolConfig) -> Result<Arc<Spool>> {
    let dir = cfg.dir.clone();
    let spool = Spool::open(cfg).with_context(|| format!("audit spool {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), mode = ?spool.mode(), "audit spool open");
    Ok(Arc::new(spool))
}

/// Waits for the audit exporter, then flushes telemetry at exit.
async fn finish(telemetry: Telemetry, exporter: Option<JoinHandle<()>>) {
    if let Some(t) = exporter {
        let _ = t.await;
    }
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
}
