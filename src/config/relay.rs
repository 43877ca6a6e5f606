//! `relay.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{ConfigError, read_toml, relative_to, valid_name};
use crate::principal::Principal;
use crate::relay::auth::{AgentAuth, AgentGrant, TunnelScope};
use crate::relay::oauth::{GroupsSource, Issuer, IssuerSettings, OAuthPolicy};
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
    /// OAuth authorization servers whose access tokens tunnels may accept.
    #[serde(default)]
    issuers: Vec<RawIssuer>,
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
    /// The agent endpoint's public base URL (`https://relay.example.com`),
    /// which OAuth tokens are bound to. Required when a tunnel takes OAuth.
    public_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    /// The issuer identifier, exactly as its tokens' `iss`.
    issuer: String,
    /// The JWKS URL; default: from the issuer's metadata.
    jwks_uri: Option<String>,
    /// CA (PEM) to verify the issuer's TLS with; default: system roots.
    ca: Option<PathBuf>,
    /// Shortest time between JWKS fetches for unknown key ids.
    refetch_interval_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnelOAuth {
    /// Issuers (their `issuer` values) whose tokens this tunnel accepts.
    issuers: Vec<String>,
    /// Audiences accepted besides the endpoint URL.
    #[serde(default)]
    audiences: Vec<String>,
    /// Scopes every token must carry.
    #[serde(default)]
    scopes: Vec<String>,
    /// The claim groups come from; `scope` for the token's scopes.
    groups_claim: Option<String>,
    /// Claims copied into the principal for policies.
    #[serde(default)]
    claims: Vec<String>,
    /// Whether API keys keep working on this tunnel (default true).
    api_keys: Option<bool>,
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
    /// Accept OAuth access tokens on this tunnel.
    oauth: Option<RawTunnelOAuth>,
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
            let (digest, principal) = agent_key(path, i, &a.subject, &a.groups, &a.key_sha256)?;
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
                    principal,
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
        let front = AgentFront::load(
            path,
            "agent_listener",
            al.listen,
            (al.cert.as_deref(), al.key.as_deref()),
            &al.allowed_origins,
            al.allowed_hosts.as_deref(),
        )?;
        let mut settings = RelaySettings::new(AgentAuth::new(agents), TunnelAuth::new(tunnels));
        settings.oauth = oauth_policies(&raw, path)?;
        if let Some(url) = &al.public_url {
            if !valid_public_url(url) {
                return Err(invalid(
                    "agent_listener.public_url",
                    format!("'{url}' is not http(s)://host[:port] without a path"),
                ));
            }
            settings.public_url = Some(url.clone());
        } else if !settings.oauth.is_empty() {
            return Err(invalid(
                "agent_listener.public_url",
                "required when a tunnel takes OAuth: tokens are bound to the endpoint's URL".into(),
            ));
        }
        settings.allowed_origins = front.allowed_origins;
        settings.allowed_hosts = front.allowed_hosts;
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
            agent_tls: front.tls,
            admin: raw.admin.as_ref().map(|a| a.listen),
            audit: raw.audit.as_ref().map(|a| a.resolve(path)).transpose()?,
        })
    }
}

/// `[[agents]]` entry `i`: its key's digest and the principal it names.
pub(crate) fn agent_key(
    path: &Path,
    i: usize,
    subject: &str,
    groups: &[String],
    key_sha256: &str,
) -> Result<([u8; 32], Principal), ConfigError> {
    let invalid = |field: &str, message: &str| {
        ConfigError::invalid(path, &format!("agents[{i}].{field}"), message)
    };
    let digest = secret::parse_digest(key_sha256).ok_or_else(|| {
        invalid(
            "key_sha256",
            "expected 64 hex digits (see `portcullis keygen`)",
        )
    })?;
    if subject.is_empty() {
        return Err(invalid("subject", "must not be empty"));
    }
    Ok((
        digest,
        Principal::named(subject.to_owned(), groups.to_vec()),
    ))
}

/// What an agent listener (a relay's, or a gateway's own) is configured
/// with besides its credentials.
pub(crate) struct AgentFront {
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) allowed_origins: Vec<String>,
    /// Defaults to the loopback names on a loopback listener.
    pub(crate) allowed_hosts: Option<Vec<String>>,
}

impl AgentFront {
    /// Checks the `section`'s listener settings and loads its TLS identity.
    pub(crate) fn load(
        path: &Path,
        section: &str,
        listen: SocketAddr,
        (cert, key): (Option<&Path>, Option<&Path>),
        allowed_origins: &[String],
        allowed_hosts: Option<&[String]>,
    ) -> Result<AgentFront, ConfigError> {
        let invalid = |field: &str, message: String| {
            ConfigError::invalid(path, &format!("{section}{field}"), message)
        };
        let tls = match (cert, key) {
            (Some(c), Some(k)) => {
                let id = Identity::from_pem_files(&relative_to(path, c), &relative_to(path, k))?;
                Some(tls::server_config(&id, None, &[b"h2", b"http/1.1"])?)
            }
            (None, None) => None,
            _ => return Err(invalid("", "give both cert and key, or neither".into())),
        };
        for o in allowed_origins {
            if !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/') {
                return Err(invalid(
                    ".allowed_origins",
                    format!("'{o}' is not scheme://host[:port]"),
                ));
            }
        }
        let allowed_hosts = match allowed_hosts {
            Some(h) => Some(h.iter().map(|s| s.to_ascii_lowercase()).collect()),
            None if listen.ip().is_loopback() => Some(loopback_hosts()),
            None => None,
        };
        Ok(AgentFront {
            tls,
            allowed_origins: allowed_origins.to_vec(),
            allowed_hosts,
        })
    }
}

/// `http(s)://host[:port]`, no path, query or trailing slash.
fn valid_public_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@'])
        && rest.parse::<http::uri::Authority>().is_ok()
}

/// The issuers, built once each, and every OAuth tunnel's policy.
fn oauth_policies(
    raw: &RawRelay,
    path: &Path,
) -> Result<std::collections::HashMap<String, Arc<OAuthPolicy>>, ConfigError> {
    let invalid = |field: String, message: String| ConfigError::Invalid {
        path: path.display().to_string(),
        field,
        message,
    };
    let mut issuers: Vec<Arc<Issuer>> = Vec::new();
    for (i, r) in raw.issuers.iter().enumerate() {
        let field = |f: &str| format!("issuers[{i}].{f}");
        if !r.issuer.starts_with("https://") || r.issuer.parse::<http::Uri>().is_err() {
            return Err(invalid(field("issuer"), "must be an https URL".into()));
        }
        if issuers.iter().any(|x| x.issuer() == r.issuer) {
            return Err(invalid(field("issuer"), "listed twice".into()));
        }
        if let Some(u) = &r.jwks_uri
            && (!u.starts_with("https://") || u.parse::<http::Uri>().is_err())
        {
            return Err(invalid(field("jwks_uri"), "must be an https URL".into()));
        }
        let cas =
            r.ca.as_ref()
                .map(|p| tls::load_certs(&relative_to(path, p)))
                .transpose()?;
        let tls = issuer_tls(cas.as_deref())?;
        issuers.push(Arc::new(Issuer::new(IssuerSettings {
            issuer: r.issuer.clone(),
            jwks_uri: r.jwks_uri.clone(),
            tls,
            refetch_interval: r.refetch_interval_secs.map_or(
                crate::limits::JWKS_REFETCH_INTERVAL,
                std::time::Duration::from_secs,
            ),
        })));
    }
    let mut out = std::collections::HashMap::new();
    for (i, t) in raw.tunnels.iter().enumerate() {
        let Some(o) = &t.oauth else { continue };
        let field = |f: &str| format!("tunnels[{i}].oauth.{f}");
        if o.issuers.is_empty() {
            return Err(invalid(field("issuers"), "name at least one issuer".into()));
        }
        let mut trusted = Vec::new();
        for name in &o.issuers {
            let issuer = issuers.iter().find(|x| x.issuer() == name).ok_or_else(|| {
                invalid(field("issuers"), format!("'{name}' is not in [[issuers]]"))
            })?;
            trusted.push(issuer.clone());
        }
        for s in &o.scopes {
            if s.is_empty() || s.contains([' ', '"', '\\']) || !s.is_ascii() {
                return Err(invalid(
                    field("scopes"),
                    format!("'{s}' is not a scope token"),
                ));
            }
        }
        let groups = match o.groups_claim.as_deref() {
            None => GroupsSource::Claim("groups".into()),
            Some("scope" | "scp") => GroupsSource::Scopes,
            Some("") => return Err(invalid(field("groups_claim"), "must not be empty".into())),
            Some(c) => GroupsSource::Claim(c.to_owned()),
        };
        out.insert(
            t.id.clone(),
            Arc::new(OAuthPolicy {
                issuers: trusted,
                audiences: o.audiences.clone(),
                required_scopes: o.scopes.clone(),
                groups,
                claims: o.claims.clone(),
                api_keys: o.api_keys.unwrap_or(true),
                verified: Default::default(),
            }),
        );
    }
    Ok(out)
}

/// TLS for an issuer's fetches: its CA, else the system roots; with no
/// system roots (a minimal container), none, so every fetch fails to verify
/// and its tokens are refused (closed), and the log says why.
pub fn issuer_tls(
    cas: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<Arc<rustls::ClientConfig>, crate::tls::TlsError> {
    match tls::client_config(cas, None, &[]) {
        Err(e) if cas.is_none() => {
            tracing::warn!(error = %e, "no system roots: issuers without `ca` cannot be verified");
            tls::client_config(Some(&[]), None, &[])
        }
        other => other,
    }
}
