//! `portcullis up`: a relay, a gateway and the demo MCP server in one
//! process, with certificates generated in memory, ready to call.
//!
//! Like `ngrok http 3000`, it also tunnels the user's own servers
//! (`--server NAME=URL` or `--server NAME=stdio:COMMAND`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::gateway::default_limits;
use crate::config::upstream::UpstreamSpec;
use crate::demo::DemoServer;
use crate::gateway::Gateway;
use crate::limits;
use crate::plugin::PluginEngine;
use crate::plugin::engine::default_cache_dir;
use crate::principal::Principal;
use crate::relay::auth::{AgentAuth, AgentGrant, TunnelScope};
use crate::relay::{Relay, RelaySettings, loopback_hosts};
use crate::secret;
use crate::tls::{self, GeneratedCa};
use crate::tunnel::acceptor::TunnelAuth;
use crate::tunnel::connector::{Discovery, PoolConfig, PoolStatus};
use crate::tunnel::dial::{DialConfig, ProxyConfig, RelayTarget};

/// The policy `up` runs with unless told otherwise (`policies/default.toml`).
pub const DEFAULT_POLICY: &str = include_str!("../policies/default.toml");

/// Name of the demo server in agent URLs.
pub const DEMO_SERVER: &str = "demo";

/// Which policy the gateway runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PolicySource {
    /// [`DEFAULT_POLICY`], built in.
    #[default]
    Builtin,
    /// A policy file.
    File(PathBuf),
    /// No policy chain at all (benchmarks of the bare tunnel).
    Off,
}

/// Where the audit spools go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuditSpool {
    /// A fresh directory under the system temp dir.
    #[default]
    Temp,
    /// This directory.
    Dir(PathBuf),
    /// No audit spool (benchmarks of the bare tunnel).
    Off,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Agent listener address.
    pub agent_listen: SocketAddr,
    /// Servers to tunnel besides (or instead of) the demo.
    pub servers: Vec<(String, UpstreamSpec)>,
    /// Start and tunnel the demo server.
    pub demo: bool,
    /// Skip agent authentication (loopback listener only).
    pub insecure_no_auth: bool,
    /// Tunnel connections.
    pub connections: usize,
    /// The gateway's policy.
    pub policy: PolicySource,
    /// The gateway's and the relay's audit spools.
    pub audit: AuditSpool,
    /// Take OAuth access tokens from this issuer instead of the demo key.
    pub oauth: Option<UpOAuth>,
}

/// `up --oauth-issuer`: the tunnel takes access tokens from one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpOAuth {
    /// The issuer identifier (an https URL), exactly as its tokens' `iss`.
    pub issuer: String,
    /// An audience accepted besides the endpoint's URL.
    pub audience: Option<String>,
    /// CA (PEM file) for the issuer's TLS; default: the system roots.
    pub ca: Option<PathBuf>,
    /// Scopes every token must carry.
    pub scopes: Vec<String>,
    /// Claims passed to policies.
    pub claims: Vec<String>,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            agent_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            servers: Vec::new(),
            demo: true,
            insecure_no_auth: false,
            connections: limits::DEFAULT_TUNNEL_CONNECTIONS,
            policy: PolicySource::default(),
            audit: AuditSpool::default(),
            oauth: None,
        }
    }
}

/// Why `up` could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("--insecure-no-auth only works on a loopback agent listener, not {0}")]
    InsecureNotLoopback(SocketAddr),
    #[error("server name '{0}' is invalid or used twice")]
    BadServerName(String),
    #[error("nothing to tunnel: give --server or drop --no-demo")]
    NoServers,
    #[error("cannot listen for agents on {addr} (choose another address with --listen)")]
    AgentListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Plugin(#[from] crate::plugin::PluginError),
    #[error(transparent)]
    Audit(#[from] crate::audit::SpoolError),
    #[error("--oauth-issuer '{0}' is not an https URL")]
    BadIssuer(String),
}

/// A running stack.
pub struct Running {
    pub tunnel_id: String,
    /// The demo agent key (absent under `--insecure-no-auth` and with OAuth).
    pub token: Option<String>,
    /// The issuer whose access tokens the tunnel takes, with OAuth.
    pub oauth_issuer: Option<String>,
    /// Agent listener address.
    pub agent_addr: SocketAddr,
    /// Agent URL per server name.
    pub servers: BTreeMap<String, String>,
    /// Address of the relay's tunnel listener.
    pub tunnel_addr: SocketAddr,
    /// Address of the demo server, when started.
    pub demo_addr: Option<SocketAddr>,
    pub relay: Arc<Relay>,
    pub gateway: Arc<Gateway>,
    pub pool: PoolStatus,
    /// The audit spool's directory, when one runs.
    pub audit_dir: Option<PathBuf>,
    pub shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Cancels everything and waits for the drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        for spool in [self.gateway.audit(), self.relay.audit()]
            .into_iter()
            .flatten()
        {
            spool.flush_at_exit().await;
        }
    }
}

/// A short random name for per-run directories.
fn tunnel_id_hint() -> String {
    secret::random_id().chars().take(12).collect()
}

/// Where, inside `up`'s audit directory, the relay keeps its own spool.
pub const RELAY_AUDIT_SUBDIR: &str = "relay";

/// The demo tunnel's OAuth policy: tokens from one issuer, groups from
/// `groups`, no API keys.
fn oauth_policy(o: &UpOAuth) -> Result<crate::relay::oauth::OAuthPolicy, UpError> {
    use crate::relay::oauth::{GroupsSource, Issuer, IssuerSettings, OAuthPolicy};
    if !o.issuer.starts_with("https://") || o.issuer.parse::<http::Uri>().is_err() {
        return Err(UpError::BadIssuer(o.issuer.clone()));
    }
    let cas = o.ca.as_deref().map(tls::load_certs).transpose()?;
    let issuer = Issuer::new(IssuerSettings {
        issuer: o.issuer.clone(),
        jwks_uri: None,
        tls: crate::config::relay::issuer_tls(cas.as_deref())?,
        refetch_interval: limits::JWKS_REFETCH_INTERVAL,
    });
    Ok(OAuthPolicy {
        issuers: vec![Arc::new(issuer)],
        audiences: o.audience.iter().cloned().collect(),
        required_scopes: o.scopes.clone(),
        groups: GroupsSource::Claim("groups".into()),
        claims: o.claims.clone(),
        api_keys: false,
        verified: Default::default(),
    })
}

/// Starts relay, gateway and demo; returns once the tunnel is connected.
pub async fn start(opts: UpOptions) -> Result<Running, UpError> {
    if opts.insecure_no_auth && !opts.agent_listen.ip().is_loopback() {
        return Err(UpError::InsecureNotLoopback(opts.agent_listen));
    }
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let out_limits = default_limits();

    let mut upstreams = HashMap::new();
    let mut demo_addr = None;
    if opts.demo {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        demo_addr = Some(addr);
        tasks.push(tokio::spawn(
            DemoServer::new().serve(listener, shutdown.clone()),
        ));
        let spec =
            UpstreamSpec::parse(&format!("http://{addr}/mcp")).map_err(|_| UpError::NoServers)?;
        upstreams.insert(DEMO_SERVER.to_owned(), spec.build(DEMO_SERVER, out_limits)?);
    }
    for (name, spec) in &opts.servers {
        if !crate::config::valid_name(name) || upstreams.contains_key(name) {
            return Err(UpError::BadServerName(name.clone()));
        }
        upstreams.insert(name.clone(), spec.build(name, out_limits)?);
    }
    if upstreams.is_empty() {
        return Err(UpError::NoServers);
    }
    let names: Vec<String> = upstreams.keys().cloned().collect();

    let ca = GeneratedCa::new("portcullis up CA")?;
    let relay_id = ca.issue(&["localhost", "127.0.0.1"])?;
    let tunnel_id = secret::random_id();
    let tunnel_token = secret::generate(secret::TUNNEL_TOKEN_PREFIX);
    let agent_key = secret::generate(secret::AGENT_KEY_PREFIX);

    let agents = AgentAuth::new([(
        secret::digest(&agent_key),
        AgentGrant {
            principal: Principal::named("demo-agent", vec!["support".into()]),
            tunnels: TunnelScope::Only(vec![tunnel_id.clone()]),
        },
    )]);
    let mut settings = RelaySettings::new(
        agents,
        TunnelAuth::new([(tunnel_id.clone(), secret::digest(&tunnel_token))]),
    );
    settings.insecure_no_auth = opts.insecure_no_auth;
    if opts.agent_listen.ip().is_loopback() {
        settings.allowed_hosts = Some(loopback_hosts());
    }
    let tunnel_listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let tunnel_addr = tunnel_listener.local_addr()?;
    let agent_listener = TcpListener::bind(opts.agent_listen)
        .await
        .map_err(|source| UpError::AgentListen {
            addr: opts.agent_listen,
            source,
        })?;
    let agent_addr = agent_listener.local_addr()?;
    if let Some(o) = &opts.oauth {
        settings.public_url = Some(format!("http://{agent_addr}"));
        settings
            .oauth
            .insert(tunnel_id.clone(), Arc::new(oauth_policy(o)?));
    }
    let relay = Relay::new(settings);
    let server_tls = tls::server_config(&relay_id, None, &[b"http/1.1"])?;
    tasks.push(tokio::spawn(relay.clone().serve_tunnels(
        tunnel_listener,
        server_tls,
        shutdown.clone(),
    )));
    tasks.push(tokio::spawn(relay.clone().serve_agents(
        agent_listener,
        None,
        shutdown.clone(),
    )));

    let gateway = Gateway::new(upstreams, out_limits);
    let policy = match &opts.policy {
        PolicySource::Off => None,
        PolicySource::File(path) => {
            let engine = PluginEngine::new(default_cache_dir())?;
            Some(crate::policy::load(path, &engine, gateway.catalog()).await?)
        }
        PolicySource::Builtin => {
            let engine = PluginEngine::new(default_cache_dir())?;
            let anchor = Path::new("policies/default.toml");
            Some(
                crate::policy::file::load_text(DEFAULT_POLICY, anchor, &engine, gateway.catalog())
                    .await?,
            )
        }
    };
    if let Some(policy) = policy {
        gateway.set_policy(Some(Arc::new(policy)));
    }
    let audit_dir = match &opts.audit {
        AuditSpool::Off => None,
        AuditSpool::Dir(dir) => Some(dir.clone()),
        AuditSpool::Temp => {
            Some(std::env::temp_dir().join(format!("portcullis-audit-{}", &tunnel_id_hint())))
        }
    };
    if let Some(dir) = &audit_dir {
        let open = |dir: PathBuf| {
            crate::audit::Spool::open(crate::audit::SpoolConfig::new(
                dir,
                crate::audit::AuditMode::BestEffort,
            ))
        };
        gateway.set_audit(Arc::new(open(dir.clone())?));
        // The relay's records of agent requests: their own chain, beside.
        relay.set_audit(Arc::new(open(dir.join(RELAY_AUDIT_SUBDIR))?));
    }
    let dial = DialConfig {
        tunnel_id: tunnel_id.clone(),
        token: tunnel_token,
        tls: tls::client_config(Some(&[ca.cert()]), None, &[b"http/1.1"])?,
        proxy: ProxyConfig::default(),
        instance: None,
    };
    let pool = PoolConfig {
        relays: vec![RelayTarget::new(&tunnel_addr.to_string())],
        discovery: Discovery::Static {
            connections: opts.connections.max(1),
        },
        max_streams: limits::MAX_STREAMS_PER_CONNECTION,
        drain_grace: limits::DRAIN_GRACE,
    };
    let (mut status, pool_task) = gateway.connect(dial, pool, shutdown.clone());
    tasks.push(pool_task);
    status.wait_connected(opts.connections.max(1)).await;
    relay
        .registry()
        .wait_for(&tunnel_id, opts.connections.max(1))
        .await;

    let base = format!("http://{agent_addr}/t/{tunnel_id}");
    let servers = names
        .iter()
        .map(|n| (n.clone(), format!("{base}/{n}/mcp")))
        .collect();
    Ok(Running {
        tunnel_id,
        token: (!opts.insecure_no_auth && opts.oauth.is_none()).then_some(agent_key),
        oauth_issuer: opts.oauth.as_ref().map(|o| o.issuer.clone()),
        agent_addr,
        servers,
        tunnel_addr,
        demo_addr,
        relay,
        gateway,
        pool: status,
        audit_dir,
        shutdown,
        tasks,
    })
}
