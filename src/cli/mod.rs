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
mod pin;
pub mod plugin;
pub mod policy;
pub mod relay;
pub mod up;

/// A token cancelled on SIGTERM or Ctrl-C (SIGINT): the start of the drain.
///
/// The handlers are registered before this returns, not in the task that
/// waits on them: a signal sent as soon as the caller says it is up is
/// queued for the task, where otherwise it could still find the default
/// action and kill the process without a drain.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)))
    };
    tokio::spawn(async move {
        #[cfg(unix)]
        match handlers {
            Ok((mut term, mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGTERM; only Ctrl-C drains");
                let _ = tokio::signal::ctrl_c().await;
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
