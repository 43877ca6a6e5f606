//! The accept loop shared by every HTTP listener Portcullis runs (agent
//! endpoint, demo server): optional TLS, HTTP/1.1 and HTTP/2, the header read
//! timeout, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::body::Body;

/// How a listener serves connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// TLS, or plain HTTP when `None`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time a client has to send complete request headers.
    pub header_read_timeout: Duration,
    /// Time in-flight requests get after shutdown before connections close.
    pub drain_grace: Duration,
}

/// Serves `service` on `listener` until `shutdown`, then drains.
pub async fn serve<S, F>(
    listener: TcpListener,
    opts: ServeOptions,
    service: S,
    shutdown: CancellationToken,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let tls = opts.tls.clone().map(TlsAcceptor::from);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let svc = hyper::service::service_fn(service.clone());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(opts.header_read_timeout);
        match &tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let timeout = opts.header_read_timeout;
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(%peer, error = %e, "connection ended with error");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(opts.drain_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain grace period over; closing connections with requests in flight");
    }
}
