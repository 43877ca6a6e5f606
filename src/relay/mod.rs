//! The relay: the public side. It accepts tunnel connections from gateways
//! and agent requests, authenticates agents, checks `Host` and `Origin`, and
//! forwards each exchange down one HTTP/2 stream of a live tunnel connection.
//! It runs no policy and keeps no payloads. It refuses a session id that an
//! agent other than the one that opened it presents (`src/session.rs`).
//!
//! - [`auth`]: agent API keys and their grants.
//! - [`oauth`]: OAuth 2.1 access tokens per tunnel: issuers and their JWKS,
//!   token verification, RFC 9728 metadata and challenges.
//! - [`agent`]: the agent endpoint `/t/{tunnel}/{server}/mcp`, and its
//!   protected-resource metadata.
//!
//! The same front end serves a gateway's own agent listener
//! ([`Relay::direct`]): one tunnel, no tunnel connections, each exchange
//! handed to that gateway in-process.

pub mod agent;
pub mod auth;
pub mod oauth;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::accept;
use crate::limits;
use crate::server::{ServeOptions, serve};
use crate::session::SessionTable;
use crate::tunnel::acceptor::{TunnelAuth, serve_tunnel_connection};
use crate::tunnel::registry::Registry;
use auth::AgentAuth;

/// Validated relay settings.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub agents: AgentAuth,
    pub tunnels: TunnelAuth,
    /// Tunnels that accept OAuth access tokens, and how. A tunnel not
    /// named here takes API keys only.
    pub oauth: std::collections::HashMap<String, Arc<oauth::OAuthPolicy>>,
    /// The agent endpoint's public base URL (`https://relay.example.com`):
    /// the resource tokens are bound to and metadata names. Required when
    /// any tunnel takes OAuth.
    pub public_url: Option<String>,
    /// `Origin` values (`scheme://host[:port]`) browsers may call from.
    pub allowed_origins: Vec<String>,
    /// Host names (without port) the agent endpoint answers to; `None`
    /// accepts any. Defaults to the loopback names on a loopback listener,
    /// which is the DNS-rebinding defence.
    pub allowed_hosts: Option<Vec<String>>,
    /// Skip agent authentication (loopback only; `up --insecure-no-auth`).
    pub insecure_no_auth: bool,
    pub max_message_bytes: usize,
    pub header_read_timeout: std::time::Duration,
    /// An agent connection with no request in flight this long is closed.
    pub idle_timeout: std::time::Duration,
    /// Agent connections open at once; more are closed when accepted.
    pub max_connections: usize,
    /// Tunnel-listener connections open at once (live and handshaking).
    pub max_tunnel_connections: usize,
    pub drain_grace: std::time::Duration,
    /// Time a gateway has to answer a forwarded call with response headers.
    pub call_deadline: std::time::Duration,
    /// Calls that may wait for a free tunnel stream, and for how long.
    pub queue: crate::tunnel::registry::QueueLimits,
    /// The relay's PINGs on tunnel connections.
    pub liveness: crate::tunnel::client::Liveness,
}

impl RelaySettings {
    /// Settings with the documented defaults and no keys or tunnels.
    pub fn new(agents: AgentAuth, tunnels: TunnelAuth) -> RelaySettings {
        RelaySettings {
            agents,
            tunnels,
            oauth: std::collections::HashMap::new(),
            public_url: None,
            allowed_origins: Vec::new(),
            allowed_hosts: None,
            insecure_no_auth: false,
            max_message_bytes: limits::MAX_MESSAGE_BYTES,
            header_read_timeout: limits::HEADER_READ_TIMEOUT,
            idle_timeout: limits::AGENT_IDLE_TIMEOUT,
            max_connections: limits::MAX_AGENT_CONNECTIONS,
            max_tunnel_connections: limits::MAX_TUNNEL_CONNECTIONS,
            drain_grace: limits::DRAIN_GRACE,
            call_deadline: limits::RELAY_CALL_DEADLINE,
            queue: crate::tunnel::registry::QueueLimits::default(),
            liveness: crate::tunnel::client::Liveness::default(),
        }
    }
}

/// The host names a loopback listener answers to by default.
pub fn loopback_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1", "[::1]"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// A running relay's shared state.
pub struct Relay {
    settings: RelaySettings,
    registry: Arc<Registry>,
    audit: std::sync::OnceLock<Arc<crate::audit::Spool>>,
    /// Which agent opened each session seen through this relay, per tunnel.
    sessions: SessionTable,
    /// Set for a gateway's own agent listener: the one tunnel it serves and
    /// the gateway that serves it, called in-process instead of down a
    /// tunnel connection.
    local: Option<Local>,
}

/// The gateway behind an agent listener of its own.
struct Local {
    tunnel: String,
    gateway: Arc<crate::gateway::Gateway>,
}

impl Relay {
    /// A relay with no connections yet.
    pub fn new(settings: RelaySettings) -> Arc<Relay> {
        Arc::new(Relay::with(settings, None))
    }

    /// The agent front end of `gateway` itself, for `tunnel` only: the same
    /// endpoints, checks and audit as a relay's, and each exchange handed to
    /// the gateway in-process (`[agent_listener]` in `gateway.toml`, for a
    /// gateway behind another vendor's tunnel or on a private network).
    pub fn direct(
        settings: RelaySettings,
        tunnel: String,
        gateway: Arc<crate::gateway::Gateway>,
    ) -> Arc<Relay> {
        Arc::new(Relay::with(settings, Some(Local { tunnel, gateway })))
    }

    fn with(settings: RelaySettings, local: Option<Local>) -> Relay {
        Relay {
            settings,
            registry: Arc::new(Registry::default()),
            audit: std::sync::OnceLock::new(),
            sessions: SessionTable::new(
                limits::RELAY_SESSIONS_PER_TUNNEL,
                limits::SESSION_BINDING_IDLE,
            ),
            local,
        }
    }

    /// Records every agent request addressed to an MCP endpoint in
    /// `spool` from now on (set once): forwarded ones before they go down
    /// the tunnel (strict mode: not at all unless recorded), refused ones
    /// with the reason.
    pub fn set_audit(&self, spool: Arc<crate::audit::Spool>) {
        let _ = self.audit.set(spool);
    }

    /// The audit spool, when one is set.
    pub fn audit(&self) -> Option<Arc<crate::audit::Spool>> {
        self.audit.get().cloned()
    }

    /// The live tunnel connections.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Serves gateways' tunnel connections on `listener` (TLS required).
    pub async fn serve_tunnels(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) {
        let acceptor = TlsAcceptor::from(tls);
        let auth = Arc::new(self.settings.tunnels.clone());
        let mut listener =
            accept::Listener::new(listener, "tunnels", self.settings.max_tunnel_connections);
        loop {
            let (tcp, peer, slot) = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.cancelled() => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let auth = auth.clone();
            let registry = self.registry.clone();
            let shutdown = shutdown.clone();
            let liveness = self.settings.liveness;
            let drain_grace = self.settings.drain_grace;
            tokio::spawn(async move {
                // Held until the tunnel connection (or its handshake) ends.
                let _slot = slot;
                match tokio::time::timeout(limits::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let drain = (shutdown, drain_grace);
                        serve_tunnel_connection(tls, auth, registry, liveness, drain).await
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %e, "tunnel TLS handshake failed"),
                    Err(_) => tracing::warn!(%peer, "tunnel TLS handshake timed out"),
                }
            });
        }
    }

    /// Serves agents on `listener`, over TLS when `tls` is set.
    pub async fn serve_agents(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: CancellationToken,
    ) {
        let opts = ServeOptions {
            name: "agents",
            tls,
            header_read_timeout: self.settings.header_read_timeout,
            idle_timeout: self.settings.idle_timeout,
            max_connections: self.settings.max_connections,
            drain_grace: self.settings.drain_grace,
        };
        let relay = self.clone();
        serve(
            listener,
            opts,
            move |req| {
                let relay = relay.clone();
                async move { Ok(relay.handle_agent(req).await) }
            },
            shutdown,
        )
        .await;
    }
}
