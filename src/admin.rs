//! The admin listener, for operators and orchestrators, never for agents:
//!
//! - `GET /metrics`: every metric in the Prometheus text format;
//! - `GET /healthz`: 200 while the process serves (liveness);
//! - `GET /readyz`: 200 when it can do its job, 503 with the reason when
//!   not (readiness: a gateway needs a live tunnel connection and a
//!   writable audit spool; a relay, its listeners);
//! - `GET /.well-known/jwks.json`: a gateway's identity-token public keys,
//!   when it mints identity tokens for upstreams.
//!
//! Bind it to a private address: metrics name servers, tools and subjects.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{Body, full};
use crate::server::{ServeOptions, serve};

/// Says whether the process is ready: `Ok(detail)` or `Err(reason)`.
pub type Readiness = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// What the admin listener serves.
#[derive(Clone)]
pub struct Admin {
    pub registry: prometheus::Registry,
    pub ready: Readiness,
    /// A gateway's identity-token keys, served at
    /// [`crate::gateway::identity::JWKS_PATH`] for upstreams to verify with.
    pub jwks: Option<serde_json::Value>,
}

fn text(status: StatusCode, body: String, ctype: &'static str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

impl Admin {
    /// Answers one admin request.
    pub fn handle(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "GET only\n".into(),
                "text/plain; charset=utf-8",
            );
        }
        match req.uri().path() {
            "/metrics" => text(
                StatusCode::OK,
                crate::telemetry::prometheus_text(&self.registry),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            "/healthz" => text(StatusCode::OK, "ok\n".into(), "text/plain; charset=utf-8"),
            crate::gateway::identity::JWKS_PATH if self.jwks.is_some() => text(
                StatusCode::OK,
                self.jwks
                    .as_ref()
                    .map(|j| j.to_string())
                    .unwrap_or_default(),
                "application/jwk-set+json",
            ),
            "/readyz" => match (self.ready)() {
                Ok(detail) => text(
                    StatusCode::OK,
                    format!("ready: {detail}\n"),
                    "text/plain; charset=utf-8",
                ),
                Err(reason) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {reason}\n"),
                    "text/plain; charset=utf-8",
                ),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "admin endpoints: /metrics /healthz /readyz\n".into(),
                "text/plain; charset=utf-8",
            ),
        }
    }

    /// Binds `addr` and serves until `shutdown`; returns the bound address.
    pub async fn start(
        self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let admin = Arc::new(self);
        let opts = ServeOptions {
            name: "admin",
            tls: None,
            header_read_timeout: crate::limits::ADMIN_HEADER_READ_TIMEOUT,
            idle_timeout: crate::limits::ADMIN_IDLE_TIMEOUT,
            max_connections: crate::limits::MAX_ADMIN_CONNECTIONS,
            drain_grace: crate::limits::ADMIN_DRAIN_GRACE,
        };
        let task = tokio::spawn(serve(
            listener,
            opts,
            move |req| {
                let admin = admin.clone();
                async move { Ok(admin.handle(&req)) }
            },
            shutdown,
        ));
        tracing::info!(addr = %local, "admin listener: /metrics /healthz /readyz");
        Ok((local, task))
    }
}

/// A gateway is ready when at least one tunnel connection is up; one that
/// has no tunnel (it serves agents only on its own listener) once it runs.
pub fn gateway_readiness(
    gateway: Arc<crate::gateway::Gateway>,
    pool: Option<crate::tunnel::connector::PoolStatus>,
) -> Readiness {
    Arc::new(move || {
        let audit = match gateway.audit() {
            Some(s) => format!(
                "audit spool at record {} ({} lost)",
                *s.durable().borrow(),
                s.lost()
            ),
            None => "no audit spool".into(),
        };
        let Some(pool) = &pool else {
            return Ok(format!("serving agents on its own listener; {audit}"));
        };
        match pool.connected() {
            0 => Err(format!("no tunnel connection to a relay; {audit}")),
            n => Ok(format!("{n} tunnel connections; {audit}")),
        }
    })
}
