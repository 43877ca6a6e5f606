//! The relay's side of a tunnel connection: check the upgrade request, answer
//! 101, and run the relay's HTTP/2 client ([`super::client`]) over the
//! upgraded stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::registry::Registry;
use super::{TUNNEL_HEADER, UPGRADE_PATH, UPGRADE_PROTOCOL};
use crate::body::{Body, empty, full};
use crate::limits;
use crate::secret;

/// Tunnel ids and the SHA-256 digests of their tokens.
#[derive(Debug, Clone, Default)]
pub struct TunnelAuth {
    tokens: HashMap<String, [u8; 32]>,
}

impl TunnelAuth {
    /// From `(tunnel id, token digest)` pairs.
    pub fn new(entries: impl IntoIterator<Item = (String, [u8; 32])>) -> TunnelAuth {
        TunnelAuth {
            tokens: entries.into_iter().collect(),
        }
    }

    /// True when `token` is the credential of `tunnel`.
    pub fn check(&self, tunnel: &str, token: &str) -> bool {
        match self.tokens.get(tunnel) {
            Some(stored) => secret::digests_equal(stored, &secret::digest(token)),
            None => {
                // Same work for unknown tunnels, so timing does not reveal them.
                let _ = secret::digest(token);
                false
            }
        }
    }

    /// True when the tunnel id is configured.
    pub fn knows(&self, tunnel: &str) -> bool {
        self.tokens.contains_key(tunnel)
    }
}

/// Why the relay refused a tunnel upgrade request: the status and the text
/// the gateway is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: &'static str,
}

impl Refusal {
    fn response(self) -> Response<Body> {
        let mut r = Response::new(full(self.message));
        *r.status_mut() = self.status;
        r
    }
}

/// Validates a gateway's upgrade request (its path and headers, as hyper
/// parsed them); returns the tunnel id it may serve.
///
/// The only place the relay decides whether a connection becomes a tunnel:
/// the right path, `Upgrade: portcullis-tunnel/1`, a tunnel id of at most
/// [`limits::MAX_ID_LEN`] bytes, and `Authorization: Bearer` with that
/// tunnel's token. A pure function, so it is fuzzed (`fuzz/`).
pub fn check_upgrade(
    path: &str,
    headers: &HeaderMap,
    auth: &TunnelAuth,
) -> Result<String, Refusal> {
    let refuse = |status, message| Refusal { status, message };
    if path != UPGRADE_PATH {
        return Err(refuse(StatusCode::NOT_FOUND, "not a tunnel endpoint"));
    }
    let upgrade_ok = headers.get(header::UPGRADE).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes())
    });
    if !upgrade_ok {
        return Err(refuse(
            StatusCode::UPGRADE_REQUIRED,
            "expected Upgrade: portcullis-tunnel/1",
        ));
    }
    let tunnel = headers
        .get(TUNNEL_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty() && t.len() <= limits::MAX_ID_LEN)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "missing tunnel id"))?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !auth.check(tunnel, token) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unknown tunnel or wrong token for this tunnel",
        ));
    }
    Ok(tunnel.to_owned())
}

/// Serves one TLS connection from a gateway: the upgrade handshake, then the
/// tunnel until it closes.
///
/// When `shutdown` is cancelled the connection drains: it takes no new
/// streams (calls go to the tunnel's other connections, through other
/// relays), the streams open on it finish, within `grace`, and then it
/// closes, so the gateway reconnects to another relay (or this one,
/// restarted).
pub async fn serve_tunnel_connection<IO>(
    io: IO,
    auth: Arc<TunnelAuth>,
    registry: Arc<Registry>,
    ping: super::client::Liveness,
    (shutdown, grace): (CancellationToken, Duration),
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let auth = auth.clone();
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        async move {
            let tunnel = match check_upgrade(req.uri().path(), req.headers(), &auth) {
                Ok(t) => t,
                Err(refusal) => {
                    tracing::warn!(status = refusal.status.as_u16(), "tunnel upgrade refused");
                    return Ok::<_, Infallible>(refusal.response());
                }
            };
            // What the gateway serves on this connection (absent: the default).
            let capacity = req
                .headers()
                .get(super::STREAMS_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(limits::MAX_STREAMS_PER_CONNECTION as usize)
                .clamp(1, super::MAX_ANNOUNCED_STREAMS);
            let instance = req
                .headers()
                .get(crate::session::owner::INSTANCE_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::session::owner::Instance::parse);
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let upgraded = match on_upgrade.await {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::warn!(tunnel, error = %e, "tunnel upgrade failed");
                        return;
                    }
                };
                // The liveness signal is the relay's PINGs: a gateway that
                // stops answering is out of rotation within interval +
                // timeout.
                let (sender, conn) =
                    match super::client::handshake(TokioIo::new(upgraded), ping).await {
                        Ok(pair) => pair,
                        Err(e) => {
                            tracing::warn!(tunnel, error = %e, "tunnel h2 handshake failed");
                            return;
                        }
                    };
                let id = registry.add(&tunnel, sender, capacity, instance);
                tracing::info!(
                    tunnel,
                    conn = id,
                    instance = instance.map(|i| i.to_string()),
                    "tunnel connection up"
                );
                tokio::pin!(conn);
                let ended = tokio::select! {
                    r = conn.as_mut() => Some(r),
                    () = shutdown.cancelled() => None,
                };
                let ended = match ended {
                    Some(r) => r,
                    None => {
                        registry.retire(&tunnel, id);
                        let drained = async {
                            while registry.open_on(&tunnel, id) > 0 {
                                tokio::time::sleep(limits::DRAIN_POLL).await;
                            }
                        };
                        tokio::select! {
                            r = conn.as_mut() => r,
                            () = drained => {
                                tracing::info!(tunnel, conn = id, "relay shutting down; tunnel connection drained");
                                Ok(())
                            }
                            () = tokio::time::sleep(grace) => {
                                tracing::warn!(tunnel, conn = id, "drain grace period over; closing the tunnel connection with calls in flight");
                                Ok(())
                            }
                        }
                    }
                };
                match ended {
                    Err(e) => {
                        tracing::info!(tunnel, conn = id, error = %e, "tunnel connection ended")
                    }
                    Ok(()) => tracing::info!(tunnel, conn = id, "tunnel connection closed"),
                }
                registry.remove(&tunnel, id);
            });
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            Ok(resp)
        }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits::HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "tunnel listener connection ended with error");
    }
}
