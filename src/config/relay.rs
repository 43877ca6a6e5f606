//! `relay.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{ConfigError, read_toml, relative_to, valid_name};
use crate::principal::Principal;
use crate::relay::auth::{AgentAuth, AgentGrant, TunnelScope};
use crate::relay::{RelaySettings, loopback_hosts};
use crate::secret;
use crate::tls::{self, Identity};
use crate::tunnel::acceptor::TunnelAuth;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelay {
    tunnel_listener: RawTunnelListener,
    agent_listener: RawAgentListener,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tunnels: Vec<RawTunnel>,
    #[serde(default)]
    agents: Vec<RawAgent>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    admin: Option<super::gateway::RawAdmin>,
    /// The audit spool for agent requests; none when absent.
    audit: Option<super::gateway::RawAudit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnelListener {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    /// CA whose client certificates gateways must present (mTLS).
    client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentListener {
    listen: SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    /// Agent connections with no request in flight this long are closed.
    idle_timeout_secs: Option<u64>,
    /// Agent connections open at once.
    max_agent_connections: Option<usize>,
    /// Tunnel-listener connections open at once.
    max_tunnel_connections: Option<usize>,
    drain_grace_secs: Option<u64>,
    /// Time a gateway has to answer a forwarded call with response headers.
    call_deadline_secs: Option<u64>,
    /// Calls that may wait for a free tunnel stream, per tunnel.
    queue_calls: Option<usize>,
    /// Request bytes those calls may hold, per tunnel, in MiB.
    queue_mib: Option<usize>,
    /// Longest wait for a free tunnel stream.
    queue_wait_secs: Option<u64>,
    /// The relay's PINGs on tunnel connections.
    tunnel_ping_interval_secs: Option<u64>,
    tunnel_ping_timeout_secs: Option<u64>,
}

/// Largest connection cap a config may set: far above any descriptor limit,
/// and within what one semaphore counts.
const MAX_CONNECTIONS_SETTING: usize = 1 << 24;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    id: String,
    token_sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    subject: String,
    #[serde(default)]
    groups: Vec<String>,
    key_sha256: String,
    /// Tunnel ids this key may use; `["*"]` for all.
    tunnels: Vec<String>,
}

/// A validated relay config: the relay's settings and where it listens.
/// The composition root (`portcullis relay`) builds the live relay from it.
pub struct RelayConfig {
    pub settings: RelaySettings,
    pub tunnel_listen: SocketAddr,
    pub tunnel_tls: Arc<rustls::ServerConfig>,
    pub agent_listen: SocketAddr,
    pub agent_tls: Option<Arc<rustls::ServerConfig>>,
    /// Where the admin listener binds, when configured.
    pub admin: Option<SocketAddr>,
    /// The audit spool to open.
    pub audit: Option<crate::audit::SpoolConfig>,
}

impl RelayConfig {
    /// Loads and validates `path`.
    pub fn load(path: &Path) -> Result<RelayConfig, ConfigError> {
        let raw: RawRelay = read_toml(path)?;
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.display().to_string(),
            field: field.to_owned(),
            message,
        };
        let mut tunnels = Vec::new();
        for (i, t) in raw.tunnels.iter().enumerate() {
            if !valid_name(&t.id) {
                return Err(invalid(
                    &format!("tunnels[{i}].id"),
                    "use 1-64 of A-Z a-z 0-9 _ -".into(),
                ));
            }
            let digest = secret::parse_digest(&t.token_sha256).ok_or_else(|| {
                invalid(
                    &format!("tunnels[{i}].token_sha256"),
                    "expected 64 hex digits (see `portcullis keygen`)".into(),
                )
            })?;
            tunnels.push((t.id.clone(), digest));
        }
        let mut agents = Vec::new();
        for (i, a) in raw.agents.iter().enumerate() {
            let digest = secret::parse_digest(&a.key_sha256).ok_or_else(|| {
                invalid(
                    &format!("agents[{i}].key_sha256"),
                    "expected 64 hex digits (see `portcullis keygen`)".into(),
                )
            })?;
            if a.subject.is_empty() {
                return Err(invalid(
                    &format!("agents[{i}].subject"),
                    "must not be empty".into(),
                ));
            }
            let scope = if a.tunnels.iter().any(|t| t == "*") {
                TunnelScope::All
            } else {
                for t in &a.tunnels {
                    if !tunnels.iter().any(|(id, _)| id == t) {
                        return Err(invalid(
                            &format!("agents[{i}].tunnels"),
                            format!("unknown tunnel '{t}'"),
                        ));
                    }
                }
                TunnelScope::Only(a.tunnels.clone())
            };
            agents.push((
                digest,
                AgentGrant {
                    principal: Principal {
                        subject: a.subject.clone(),
                        groups: a.groups.clone(),
                    },
                    tunnels: scope,
                },
            ));
        }
        let tl = &raw.tunnel_listener;
        let identity =
            Identity::from_pem_files(&relative_to(path, &tl.cert), &relative_to(path, &tl.key))?;
        let client_ca = tl
            .client_ca
            .as_ref()
            .map(|p| tls::load_certs(&relative_to(path, p)))
            .transpose()?;
        let tunnel_tls = tls::server_config(&identity, client_ca.as_deref(), &[b"http/1.1"])?;
        let al = &raw.agent_listener;
        let agent_tls = match (&al.cert, &al.key) {
            (Some(c), Some(k)) => {
                let id = Identity::from_pem_files(&relative_to(path, c), &relative_to(path, k))?;
                Some(tls::server_config(&id, None, &[b"h2", b"http/1.1"])?)
            }
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "agent_listener",
                    "give both cert and key, or neither".into(),
                ));
            }
        };
        for o in &al.allowed_origins {
            if !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/') {
                return Err(invalid(
                    "agent_listener.allowed_origins",
                    format!("'{o}' is not scheme://host[:port]"),
                ));
            }
        }
        let mut settings = RelaySettings::new(AgentAuth::new(agents), TunnelAuth::new(tunnels));
        settings.allowed_origins = al.allowed_origins.clone();
        settings.allowed_hosts = match &al.allowed_hosts {
            Some(h) => Some(h.iter().map(|s| s.to_ascii_lowercase()).collect()),
            None if al.listen.ip().is_loopback() => Some(loopback_hosts()),
            None => None,
        };
        if let Some(n) = raw.limits.max_message_bytes {
            settings.max_message_bytes = n;
        }
        if let Some(s) = raw.limits.header_read_timeout_secs {
            settings.header_read_timeout = std::time::Duration::from_secs(s);
        }
        if let Some(s) = raw.limits.idle_timeout_secs {
            if s == 0 {
                return Err(invalid(
                    "limits.idle_timeout_secs",
                    "must be at least 1".into(),
                ));
            }
            settings.idle_timeout = std::time::Duration::from_secs(s);
        }
        for (field, value, target) in [
            (
                "limits.max_agent_connections",
                raw.limits.max_agent_connections,
                &mut settings.max_connections,
            ),
            (
                "limits.max_tunnel_connections",
                raw.limits.max_tunnel_connections,
                &mut settings.max_tunnel_connections,
            ),
        ] {
            if let Some(n) = value {
                if !(1..=MAX_CONNECTIONS_SETTING).contains(&n) {
                    return Err(invalid(
                        field,
                        format!("must be between 1 and {MAX_CONNECTIONS_SETTING}"),
                    ));
                }
                *target = n;
            }
        }
        if let Some(s) = raw.limits.drain_grace_secs {
            settings.drain_grace = std::time::Duration::from_secs(s);
        }
        let secs = std::time::Duration::from_secs;
        let l = &raw.limits;
        if let Some(s) = l.call_deadline_secs {
            settings.call_deadline = secs(s.max(1));
        }
        if let Some(n) = l.queue_calls {
            settings.queue.calls = n;
        }
        if let Some(m) = l.queue_mib {
            settings.queue.bytes = m.saturating_mul(1024 * 1024);
        }
        if let Some(s) = l.queue_wait_secs {
            settings.queue.wait = secs(s);
        }
        if let Some(s) = l.tunnel_ping_interval_secs {
            settings.liveness.interval = secs(s.max(1));
        }
        if let Some(s) = l.tunnel_ping_timeout_secs {
            settings.liveness.timeout = secs(s.max(1));
        }
        Ok(RelayConfig {
            settings,
            tunnel_listen: tl.listen,
            tunnel_tls,
            agent_listen: al.listen,
            agent_tls,
            admin: raw.admin.as_ref().map(|a| a.listen),
            audit: raw.audit.as_ref().map(|a| a.resolve(path)).transpose()?,
        })
    }
}
