//! The tunnel: connections opened by the gateway, carrying HTTP/2 with the
//! roles reversed.
//!
//! The gateway dials the relay (TCP, optionally through an HTTPS proxy, then
//! TLS), sends an HTTP/1.1 upgrade request naming its tunnel and presenting its
//! token, and after `101 Switching Protocols` the same byte stream speaks
//! HTTP/2 with hyper's *server* in the gateway and an `h2` client in the
//! relay. Multiplexing, flow control and keep-alives are h2's.
//!
//! - [`dial`]: TCP, proxy CONNECT, TLS, upgrade (gateway side).
//! - [`connector`]: the gateway's pool of connections with reconnect and drain.
//! - [`discovery`]: relay names resolved to every replica's address, and
//!   which connections to start and stop when the answer changes.
//! - [`acceptor`]: the relay's side of the upgrade.
//! - [`client`]: the relay's HTTP/2 client on a tunnel connection.
//! - [`registry`]: the relay's live connections per tunnel.

pub mod acceptor;
pub mod client;
pub mod connector;
pub mod dial;
pub mod discovery;
pub mod registry;

/// The `Upgrade` protocol token of the tunnel handshake.
pub const UPGRADE_PROTOCOL: &str = "portcullis-tunnel/1";
/// Path of the upgrade request.
pub const UPGRADE_PATH: &str = "/portcullis/tunnel";
/// Header naming the tunnel in the upgrade request.
pub const TUNNEL_HEADER: &str = "portcullis-tunnel";
/// Upgrade request header: the concurrent streams the gateway serves on this
/// connection, so the relay queues calls beyond it itself (where it can
/// bound the queue and refuse cleanly) instead of inside HTTP/2.
pub const STREAMS_HEADER: &str = "portcullis-max-streams";
/// Most streams a relay lets one tunnel connection carry, whatever the
/// gateway announces.
pub const MAX_ANNOUNCED_STREAMS: usize = 4096;
/// Authority used in the URIs of requests the relay sends down a tunnel.
pub const TUNNEL_AUTHORITY: &str = "gateway.portcullis.internal";

/// Why a tunnel connection could not be made or kept.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("proxy {proxy} refused CONNECT to {target}: {status}")]
    Proxy {
        proxy: String,
        target: String,
        status: String,
    },
    #[error("invalid proxy setting: {0}")]
    ProxyConfig(String),
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid relay server name '{0}'")]
    ServerName(String),
    #[error("relay refused the tunnel: HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("tunnel handshake failed: {0}")]
    Handshake(String),
    #[error("handshake with {0} timed out")]
    Timeout(String),
}
