//! `gateway.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::upstream::UpstreamSpec;
use super::{ConfigError, SecretSource, read_toml, relative_to, valid_name};

use crate::gateway::outbound::OutboundLimits;
use crate::gateway::stdio::StdioCommand;
use crate::limits;
use crate::tls::{self, Identity};
use crate::tunnel::connector::{Discovery, PoolConfig};
use crate::tunnel::dial::{DialConfig, ProxyConfig, RelayTarget};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    /// The tunnel to the relays; none for a gateway that serves agents only
    /// on its own listener.
    tunnel: Option<RawTunnel>,
    /// Agents served by this gateway itself, without a relay.
    agent_listener: Option<RawAgentListener>,
    /// The API keys of the agents the gateway's own listener serves.
    #[serde(default)]
    agents: Vec<RawAgent>,
    /// Policy file (plugins and chains); no policy when absent.
    policy: Option<PathBuf>,
    /// The audit spool; no audit trail when absent.
    audit: Option<RawAudit>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    admin: Option<RawAdmin>,
    /// The key the gateway signs upstream identity tokens with.
    identity: Option<RawIdentity>,
    #[serde(default)]
    limits: RawLimits,
    servers: BTreeMap<String, RawServer>,
}

/// `[agent_listener]`: the relay's agent endpoints served by the gateway
/// itself, for agents on the private network or another vendor's tunnel
/// connector in front of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentListener {
    listen: std::net::SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    allowed_hosts: Option<Vec<String>>,
    /// The tunnel id in agent URLs (`/t/{tunnel}/{server}/mcp`); default:
    /// `[tunnel].id`. Required without a `[tunnel]`.
    tunnel: Option<String>,
    /// Serve plain HTTP on an address other than loopback (behind a
    /// connector that terminates TLS on the same private network). Off:
    /// such a listener needs `cert` and `key`.
    #[serde(default)]
    insecure_plaintext: bool,
}

/// `[[agents]]`: one API key the gateway's own listener accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    subject: String,
    #[serde(default)]
    groups: Vec<String>,
    key_sha256: String,
}

/// `[identity]`: the gateway as an issuer of identity tokens for upstreams.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    /// The `iss` of the tokens (a URL naming this gateway).
    issuer: String,
    /// PKCS#8 PEM file of a P-256 private key (ES256).
    key: PathBuf,
}

/// `[admin]` in relay and gateway configs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    /// Address of the admin listener; keep it private.
    pub(crate) listen: std::net::SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    id: String,
    token: SecretSource,
    /// `host:port` of each relay's tunnel listener.
    relays: Vec<String>,
    /// Name to verify the relay certificate against, when it differs from
    /// the host in `relays`.
    server_name: Option<String>,
    /// CA to verify the relay with; the system roots when absent.
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    /// `static` (default): dial each entry of `relays` by name. `dns`:
    /// resolve each to all its addresses and keep connections to every one.
    #[serde(default)]
    discovery: RawDiscovery,
    /// With `dns`: how often to resolve the names again, in seconds.
    resolve_interval_secs: Option<u64>,
    /// Connections to each relay (each address, with `dns`); at least
    /// [`limits::MIN_TUNNEL_CONNECTIONS`] in all. Default 1.
    connections_per_relay: Option<usize>,
    /// Static only: the connections in all, spread over `relays` in turn
    /// (what it always meant); instead of `connections_per_relay`.
    connections: Option<usize>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawDiscovery {
    #[default]
    Static,
    Dns,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    /// Spool directory.
    dir: PathBuf,
    /// `strict` (calls fail when their record cannot be persisted) or
    /// `best_effort` (default).
    #[serde(default)]
    mode: crate::audit::AuditMode,
    /// HMAC key for the hash chain, from env or file.
    key: Option<SecretSource>,
    /// Disk quota in MiB (default 1024).
    quota_mib: Option<u64>,
    /// At the quota, delete the oldest segments the collector has
    /// acknowledged (default false: new records are lost, and counted).
    #[serde(default)]
    prune_exported: bool,
}

impl RawAudit {
    /// The spool settings, paths and key files resolved against `config`.
    pub(crate) fn resolve(&self, config: &Path) -> Result<crate::audit::SpoolConfig, ConfigError> {
        Ok(crate::audit::SpoolConfig {
            dir: relative_to(config, &self.dir),
            mode: self.mode,
            key: self
                .key
                .as_ref()
                .map(|k| k.read(config, "audit.key").map(String::into_bytes))
                .transpose()?,
            quota_bytes: self
                .quota_mib
                .map_or(crate::audit::spool::DEFAULT_QUOTA_BYTES, |m| {
                    m * 1024 * 1024
                }),
            prune_exported: self.prune_exported,
            segment_bytes: crate::audit::spool::SEGMENT_BYTES,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_message_bytes: Option<usize>,
    max_json_depth: Option<usize>,
    max_streams_per_connection: Option<u32>,
    call_timeout_secs: Option<u64>,
    drain_grace_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// Streamable HTTP endpoint.
    url: Option<String>,
    /// Static headers sent to the upstream.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Bearer token for the upstream, from env or file.
    bearer_token: Option<SecretSource>,
    /// CA for an https upstream; the system roots when absent.
    ca: Option<PathBuf>,
    /// Send a gateway-minted identity token (`[identity]`) with this `aud`.
    identity_audience: Option<String>,
    /// Stdio command: program and arguments.
    command: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
}

/// A validated gateway config: settings only. The composition root
/// (`portcullis gateway`) builds the live gateway, spool and pool from it.
pub struct GatewayConfig {
    /// The servers and the limits on what they answer.
    pub gateway: GatewaySettings,
    /// The policy file to load, resolved against the config's directory.
    pub policy: Option<PathBuf>,
    /// The audit spool to open.
    pub audit: Option<crate::audit::SpoolConfig>,
    /// Where the admin listener binds, when configured.
    pub admin: Option<std::net::SocketAddr>,
    /// The identity-token signer, when configured (its JWKS goes on the
    /// admin listener).
    pub identity: Option<std::sync::Arc<crate::gateway::identity::Minter>>,
    /// The tunnel to the relays, when configured.
    pub tunnel: Option<TunnelSettings>,
    /// The gateway's own agent listener, when configured.
    pub direct: Option<DirectSettings>,
}

/// How the gateway reaches its relays.
pub struct TunnelSettings {
    pub dial: DialConfig,
    pub pool: PoolConfig,
}

/// The gateway's own agent listener: where, how, and for whom.
pub struct DirectSettings {
    pub listen: std::net::SocketAddr,
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The tunnel id agents name in their URLs.
    pub tunnel: String,
    /// Agent keys, origins, hosts and limits, as a relay's.
    pub settings: crate::relay::RelaySettings,
}

/// What a [`Gateway`](crate::gateway::Gateway) is built from: how each server is reached and the
/// limits on what comes back.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Each server by name.
    pub servers: BTreeMap<String, UpstreamSpec>,
    pub limits: OutboundLimits,
}

impl GatewaySettings {
    /// The configured servers' names, in order.
    pub fn server_names(&self) -> impl Iterator<Item = &str> {
        self.servers.keys().map(String::as_str)
    }
}

/// Limits with their documented defaults.
pub fn default_limits() -> OutboundLimits {
    OutboundLimits {
        max_message_bytes: limits::MAX_MESSAGE_BYTES,
        max_depth: limits::MAX_JSON_DEPTH,
        call_timeout: limits::UPSTREAM_CALL_TIMEOUT,
    }
}

impl GatewayConfig {
    /// Loads and validates `path`.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
        let raw: RawGateway = read_toml(path)?;
        let invalid = |field: &str, message: String| ConfigError::invalid(path, field, message);
        let mut out_limits = default_limits();
        let l = &raw.limits;
        if let Some(n) = l.max_message_bytes {
            out_limits.max_message_bytes = n;
        }
        if let Some(n) = l.max_json_depth {
            out_limits.max_depth = n;
        }
        if let Some(s) = l.call_timeout_secs {
            out_limits.call_timeout = Duration::from_secs(s);
        }
        let tunnel = raw
            .tunnel
            .as_ref()
            .map(|t| tunnel_settings(t, &raw.limits, path))
            .transpose()?;
        let direct = match &raw.agent_listener {
            Some(al) => Some(direct_settings(&raw, al, &out_limits, path)?),
            None if !raw.agents.is_empty() => {
                return Err(invalid(
                    "agents",
                    "[[agents]] keys are for the gateway's own [agent_listener]; agents of a relay are the relay's".into(),
                ));
            }
            None => None,
        };
        if tunnel.is_none() && direct.is_none() {
            return Err(invalid(
                "tunnel",
                "give a [tunnel] to relays, an [agent_listener], or both".into(),
            ));
        }
        let minter = match &raw.identity {
            None => None,
            Some(id) => {
                if !(id.issuer.starts_with("https://") || id.issuer.starts_with("http://")) {
                    return Err(invalid("identity.issuer", "must be a URL".into()));
                }
                let key_path = relative_to(path, &id.key);
                use rustls::pki_types::pem::PemObject as _;
                let key =
                    rustls::pki_types::PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
                        invalid(
                            "identity.key",
                            format!("cannot read {}: {e}", key_path.display()),
                        )
                    })?;
                let rustls::pki_types::PrivateKeyDer::Pkcs8(der) = key else {
                    return Err(invalid(
                        "identity.key",
                        "must be a PKCS#8 (BEGIN PRIVATE KEY) P-256 key".into(),
                    ));
                };
                let m = crate::gateway::identity::Minter::new(&id.issuer, der.secret_pkcs8_der())
                    .map_err(|e| invalid("identity.key", e.to_string()))?;
                Some(std::sync::Arc::new(m))
            }
        };
        let mut servers = BTreeMap::new();
        for (name, s) in &raw.servers {
            let field = format!("servers.{name}");
            if !valid_name(name) {
                return Err(invalid(
                    &field,
                    "server names use 1-64 of A-Z a-z 0-9 _ -".into(),
                ));
            }
            let spec = match (&s.url, &s.command) {
                (Some(url), None) => {
                    let UpstreamSpec::Http { url, .. } = UpstreamSpec::parse(url)
                        .map_err(|m| invalid(&format!("{field}.url"), m))?
                    else {
                        return Err(invalid(
                            &format!("{field}.url"),
                            "not an http(s) URL".into(),
                        ));
                    };
                    let mut headers = Vec::new();
                    for (k, v) in &s.headers {
                        let name = HeaderName::try_from(k.as_str()).map_err(|_| {
                            invalid(
                                &format!("{field}.headers"),
                                format!("bad header name '{k}'"),
                            )
                        })?;
                        let value = HeaderValue::try_from(v.as_str()).map_err(|_| {
                            invalid(&format!("{field}.headers"), format!("bad value for '{k}'"))
                        })?;
                        headers.push((name, value));
                    }
                    if let Some(src) = &s.bearer_token {
                        let token = src.read(path, &format!("{field}.bearer_token"))?;
                        let mut v =
                            HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                                invalid(
                                    &format!("{field}.bearer_token"),
                                    "not a valid header value".into(),
                                )
                            })?;
                        v.set_sensitive(true);
                        headers.push((http::header::AUTHORIZATION, v));
                    }
                    let tls = match &s.ca {
                        Some(p) => {
                            let cas = tls::load_certs(&relative_to(path, p))?;
                            Some(tls::client_config(Some(&cas), None, &[])?)
                        }
                        None => None,
                    };
                    let identity = match (&s.identity_audience, &minter) {
                        (None, _) => None,
                        (Some(_), None) => {
                            return Err(invalid(
                                &format!("{field}.identity_audience"),
                                "needs an [identity] section with the signing key".into(),
                            ));
                        }
                        (Some(_), Some(_)) if s.bearer_token.is_some() => {
                            return Err(invalid(
                                &format!("{field}.identity_audience"),
                                "give bearer_token or identity_audience, not both".into(),
                            ));
                        }
                        (Some(aud), Some(m)) => Some(crate::gateway::identity::UpstreamIdentity {
                            minter: m.clone(),
                            audience: aud.clone(),
                        }),
                    };
                    UpstreamSpec::Http {
                        url,
                        headers,
                        tls,
                        identity,
                    }
                }
                (None, Some(cmd)) => {
                    let (program, args) = cmd.split_first().ok_or_else(|| {
                        invalid(&format!("{field}.command"), "must not be empty".into())
                    })?;
                    UpstreamSpec::Stdio(StdioCommand {
                        program: program.clone(),
                        args: args.to_vec(),
                        env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        cwd: s.cwd.as_ref().map(|c| relative_to(path, c)),
                    })
                }
                _ => return Err(invalid(&field, "give exactly one of url or command".into())),
            };
            servers.insert(name.clone(), spec);
        }
        if servers.is_empty() {
            return Err(invalid("servers", "configure at least one server".into()));
        }
        let audit = raw.audit.as_ref().map(|a| a.resolve(path)).transpose()?;
        Ok(GatewayConfig {
            gateway: GatewaySettings {
                servers,
                limits: out_limits,
            },
            policy: raw.policy.as_ref().map(|p| relative_to(path, p)),
            audit,
            admin: raw.admin.as_ref().map(|a| a.listen),
            identity: minter,
            tunnel,
            direct,
        })
    }
}

/// `[tunnel]`: the relays and how to reach them.
fn tunnel_settings(
    t: &RawTunnel,
    l: &RawLimits,
    path: &Path,
) -> Result<TunnelSettings, ConfigError> {
    let invalid = |field: &str, message: String| ConfigError::invalid(path, field, message);
    if !valid_name(&t.id) {
        return Err(invalid("tunnel.id", "use 1-64 of A-Z a-z 0-9 _ -".into()));
    }
    let token = t.token.read(path, "tunnel.token")?;
    if t.relays.is_empty() {
        return Err(invalid(
            "tunnel.relays",
            "name at least one relay host:port".into(),
        ));
    }
    let mut relays = Vec::new();
    for r in &t.relays {
        if !is_host_port(r) {
            return Err(invalid("tunnel.relays", format!("'{r}' is not host:port")));
        }
        let mut target = RelayTarget::new(r);
        if let Some(n) = &t.server_name {
            target.server_name = n.clone();
        }
        relays.push(target);
    }
    let discovery = pool_discovery(t, relays.len()).map_err(|(f, m)| invalid(f, m))?;
    let ca =
        t.ca.as_ref()
            .map(|p| tls::load_certs(&relative_to(path, p)))
            .transpose()?;
    let identity = match (&t.client_cert, &t.client_key) {
        (Some(c), Some(k)) => Some(Identity::from_pem_files(
            &relative_to(path, c),
            &relative_to(path, k),
        )?),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "tunnel",
                "give both client_cert and client_key, or neither".into(),
            ));
        }
    };
    let tls = tls::client_config(ca.as_deref(), identity.as_ref(), &[b"http/1.1"])?;
    let proxy = ProxyConfig::from_env().map_err(|e| invalid("HTTPS_PROXY", e.to_string()))?;
    Ok(TunnelSettings {
        dial: DialConfig {
            tunnel_id: t.id.clone(),
            token,
            tls,
            proxy,
            instance: None,
        },
        pool: PoolConfig {
            relays,
            discovery,
            max_streams: l
                .max_streams_per_connection
                .unwrap_or(limits::MAX_STREAMS_PER_CONNECTION),
            drain_grace: l
                .drain_grace_secs
                .map_or(limits::DRAIN_GRACE, Duration::from_secs),
        },
    })
}

/// `[agent_listener]` and `[[agents]]`.
fn direct_settings(
    raw: &RawGateway,
    al: &RawAgentListener,
    gateway: &OutboundLimits,
    path: &Path,
) -> Result<DirectSettings, ConfigError> {
    use crate::relay::auth::{AgentAuth, AgentGrant, TunnelScope};
    let invalid = |field: &str, message: String| ConfigError::invalid(path, field, message);
    let tunnel = match (&al.tunnel, &raw.tunnel) {
        (Some(id), _) => id.clone(),
        (None, Some(t)) => t.id.clone(),
        (None, None) => {
            return Err(invalid(
                "agent_listener.tunnel",
                "name the tunnel id agent URLs carry (/t/{tunnel}/{server}/mcp) when there is no [tunnel]".into(),
            ));
        }
    };
    if !valid_name(&tunnel) {
        return Err(invalid(
            "agent_listener.tunnel",
            "use 1-64 of A-Z a-z 0-9 _ -".into(),
        ));
    }
    let front = super::relay::AgentFront::load(
        path,
        "agent_listener",
        al.listen,
        (al.cert.as_deref(), al.key.as_deref()),
        &al.allowed_origins,
        al.allowed_hosts.as_deref(),
    )?;
    // Agent keys and what they call travel in the clear otherwise.
    if front.tls.is_none() && !al.listen.ip().is_loopback() && !al.insecure_plaintext {
        return Err(invalid(
            "agent_listener",
            format!(
                "{} is not loopback: give cert and key, or set insecure_plaintext = true behind a connector that terminates TLS",
                al.listen
            ),
        ));
    }
    if raw.agents.is_empty() {
        return Err(invalid(
            "agents",
            "the agent listener needs at least one [[agents]] key (see `portcullis keygen`)".into(),
        ));
    }
    let mut grants = Vec::new();
    for (i, a) in raw.agents.iter().enumerate() {
        let (digest, principal) =
            super::relay::agent_key(path, i, &a.subject, &a.groups, &a.key_sha256)?;
        grants.push((
            digest,
            AgentGrant {
                principal,
                tunnels: TunnelScope::Only(vec![tunnel.clone()]),
            },
        ));
    }
    // Tunnel tokens are the relay's business: none are accepted here.
    let mut settings = crate::relay::RelaySettings::new(
        AgentAuth::new(grants),
        crate::tunnel::acceptor::TunnelAuth::new(Vec::new()),
    );
    settings.allowed_origins = front.allowed_origins;
    settings.allowed_hosts = front.allowed_hosts;
    settings.max_message_bytes = gateway.max_message_bytes;
    // An operator who gives upstreams longer than the default gets that
    // long here too; otherwise the relay's deadline, which answers before
    // an MCP SDK gives up waiting.
    if gateway.call_timeout > limits::UPSTREAM_CALL_TIMEOUT {
        settings.call_deadline = gateway.call_timeout;
    }
    if let Some(s) = raw.limits.drain_grace_secs {
        settings.drain_grace = Duration::from_secs(s);
    }
    Ok(DirectSettings {
        listen: al.listen,
        tls: front.tls,
        tunnel,
        settings,
    })
}

/// True for `host:port`, the shape every `tunnel.relays` entry has.
fn is_host_port(r: &str) -> bool {
    r.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// The pool's [`Discovery`] from `[tunnel]` with `relays` entries, or the
/// offending field and why.
fn pool_discovery(t: &RawTunnel, relays: usize) -> Result<Discovery, (&'static str, String)> {
    let max = limits::MAX_POOL_CONNECTIONS;
    let per_relay = match t.connections_per_relay {
        Some(n) if n == 0 || n > max => {
            return Err(("tunnel.connections_per_relay", format!("must be 1-{max}")));
        }
        Some(n) => n,
        None => 1,
    };
    match t.discovery {
        RawDiscovery::Static => {
            if t.resolve_interval_secs.is_some() {
                return Err((
                    "tunnel.resolve_interval_secs",
                    "only with discovery = \"dns\"".into(),
                ));
            }
            let connections = match t.connections {
                Some(_) if t.connections_per_relay.is_some() => {
                    return Err((
                        "tunnel.connections",
                        "give connections (in all) or connections_per_relay, not both".into(),
                    ));
                }
                Some(n) if n == 0 || n > max => {
                    return Err(("tunnel.connections", format!("must be 1-{max}")));
                }
                Some(n) => n,
                None => relays * crate::tunnel::discovery::per_address(relays, per_relay),
            };
            Ok(Discovery::Static { connections })
        }
        RawDiscovery::Dns => {
            if t.connections.is_some() {
                return Err((
                    "tunnel.connections",
                    "with discovery = \"dns\" the number of relays varies: \
                     use connections_per_relay"
                        .into(),
                ));
            }
            let (lo, hi) = (
                limits::MIN_RESOLVE_INTERVAL.as_secs(),
                limits::MAX_RESOLVE_INTERVAL.as_secs(),
            );
            let interval = match t.resolve_interval_secs {
                Some(s) if s < lo || s > hi => {
                    return Err(("tunnel.resolve_interval_secs", format!("must be {lo}-{hi}")));
                }
                Some(s) => Duration::from_secs(s),
                None => limits::DEFAULT_RESOLVE_INTERVAL,
            };
            Ok(Discovery::Dns {
                per_relay,
                interval,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[tunnel]` with `extra` lines, the rest as a minimal config has it.
    fn tunnel(relays: &str, extra: &str) -> RawTunnel {
        let text = format!("id = \"t\"\ntoken = {{ env = \"T\" }}\nrelays = {relays}\n{extra}\n");
        toml::from_str(&text).unwrap()
    }

    fn discovery(relays: &str, extra: &str) -> Result<Discovery, String> {
        let t = tunnel(relays, extra);
        pool_discovery(&t, t.relays.len()).map_err(|(f, m)| format!("{f}: {m}"))
    }

    const ONE: &str = r#"["relay.example.com:8443"]"#;
    const TWO: &str = r#"["relay-0.example.com:8443", "relay-1.example.com:8443"]"#;
    const THREE: &str = r#"["a:1", "b:1", "c:1"]"#;

    #[test]
    fn static_lists_keep_at_least_two_connections_and_one_per_relay() {
        let s = |connections| Ok(Discovery::Static { connections });
        assert_eq!(discovery(ONE, ""), s(2));
        assert_eq!(discovery(TWO, ""), s(2));
        assert_eq!(discovery(THREE, ""), s(3));
        assert_eq!(discovery(TWO, "connections_per_relay = 2"), s(4));
        assert_eq!(discovery(ONE, "connections_per_relay = 3"), s(3));
        // The old key keeps meaning the total.
        assert_eq!(discovery(TWO, "connections = 4"), s(4));
        assert_eq!(discovery(ONE, "connections = 1"), s(1));
        assert_eq!(discovery(ONE, r#"discovery = "static""#), s(2));
    }

    #[test]
    fn relays_are_host_and_port() {
        for ok in ["relay.example.com:8443", "10.0.0.1:443", "[fd00::1]:8443"] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "relay.example.com",
            ":8443",
            "relay:https",
            "relay:99999",
            "",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }

    #[test]
    fn dns_discovery_takes_an_interval_and_a_count_per_address() {
        assert_eq!(
            discovery(ONE, r#"discovery = "dns""#),
            Ok(Discovery::Dns {
                per_relay: 1,
                interval: limits::DEFAULT_RESOLVE_INTERVAL
            })
        );
        assert_eq!(
            discovery(
                ONE,
                "discovery = \"dns\"\nresolve_interval_secs = 5\nconnections_per_relay = 2"
            ),
            Ok(Discovery::Dns {
                per_relay: 2,
                interval: Duration::from_secs(5)
            })
        );
    }

    #[test]
    fn contradictory_or_out_of_range_pool_settings_are_refused() {
        let cases = [
            (ONE, "connections = 0", "tunnel.connections: must be 1-64"),
            (ONE, "connections = 65", "tunnel.connections: must be 1-64"),
            (
                ONE,
                "connections_per_relay = 0",
                "tunnel.connections_per_relay: must be 1-64",
            ),
            (
                ONE,
                "connections = 2\nconnections_per_relay = 1",
                "not both",
            ),
            (
                ONE,
                "resolve_interval_secs = 5",
                "resolve_interval_secs: only with discovery = \"dns\"",
            ),
            (
                ONE,
                "discovery = \"dns\"\nconnections = 4",
                "use connections_per_relay",
            ),
            (
                ONE,
                "discovery = \"dns\"\nresolve_interval_secs = 0",
                "resolve_interval_secs: must be 1-3600",
            ),
            (
                ONE,
                "discovery = \"dns\"\nresolve_interval_secs = 3601",
                "must be 1-3600",
            ),
        ];
        for (relays, extra, expect) in cases {
            let got = discovery(relays, extra);
            assert!(
                matches!(&got, Err(m) if m.contains(expect)),
                "{extra}: {got:?}"
            );
        }
        let unknown: Result<RawTunnel, _> = toml::from_str(
            "id = \"t\"\ntoken = { env = \"T\" }\nrelays = []\ndiscovery = \"srv\"\n",
        );
        assert!(unknown.is_err());
    }
}
