//! Shared fixtures: in-process stacks, a header-recording upstream, a CONNECT
//! proxy, and the real peers installed by `.ci/install-peers`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::gateway::{Gateway, Upstream};
use portcullis::principal::Principal;
use portcullis::relay::auth::{AgentAuth, AgentGrant, TunnelScope};
use portcullis::relay::{Relay, RelaySettings, loopback_hosts};
use portcullis::secret;
use portcullis::tls::{self, GeneratedCa};
use portcullis::tunnel::acceptor::TunnelAuth;
use portcullis::tunnel::connector::{Discovery, PoolConfig, PoolStatus};
use portcullis::tunnel::dial::{DialConfig, ProxyConfig, RelayTarget};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(30);

/// Awaits `f` or fails the test after [`WAIT`].
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// One tunnel's credentials.
pub struct TunnelCred {
    pub id: String,
    pub token: String,
}

impl TunnelCred {
    pub fn new() -> TunnelCred {
        TunnelCred {
            id: secret::random_id(),
            token: secret::generate(secret::TUNNEL_TOKEN_PREFIX),
        }
    }
}

/// A relay running in this process.
pub struct TestRelay {
    pub relay: Arc<Relay>,
    pub tunnel_addr: SocketAddr,
    pub agent_addr: SocketAddr,
    pub shutdown: CancellationToken,
}

/// Starts a relay for `tunnels`; `agents` are (key, tunnels it may use).
pub async fn start_relay(
    ca: Arc<GeneratedCa>,
    tunnels: &[&TunnelCred],
    agents: &[(&str, Vec<String>)],
    tunnel_addr: Option<SocketAddr>,
    client_ca: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> TestRelay {
    start_relay_with(ca, tunnels, agents, tunnel_addr, client_ca, |_| {}).await
}

/// [`start_relay`], with `tweak` applied to the settings before it starts.
pub async fn start_relay_with(
    ca: Arc<GeneratedCa>,
    tunnels: &[&TunnelCred],
    agents: &[(&str, Vec<String>)],
    tunnel_addr: Option<SocketAddr>,
    client_ca: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    tweak: impl FnOnce(&mut RelaySettings),
) -> TestRelay {
    let grants = agents.iter().map(|(key, ts)| {
        (
            secret::digest(key),
            AgentGrant {
                principal: Principal::named(format!("agent-{}", &key[..8]), vec!["support".into()]),
                tunnels: TunnelScope::Only(ts.clone()),
            },
        )
    });
    let mut settings = RelaySettings::new(
        AgentAuth::new(grants),
        TunnelAuth::new(
            tunnels
                .iter()
                .map(|t| (t.id.clone(), secret::digest(&t.token))),
        ),
    );
    settings.allowed_hosts = Some(loopback_hosts());
    settings.allowed_origins = vec!["https://agent.example.com".into()];
    tweak(&mut settings);
    let relay = Relay::new(settings);
    let shutdown = CancellationToken::new();
    let tl = TcpListener::bind(tunnel_addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let al = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let id = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
    let server_tls = tls::server_config(&id, client_ca, &[b"http/1.1"]).unwrap();
    let tunnel_addr = tl.local_addr().unwrap();
    let agent_addr = al.local_addr().unwrap();
    tokio::spawn(
        relay
            .clone()
            .serve_tunnels(tl, server_tls, shutdown.clone()),
    );
    tokio::spawn(relay.clone().serve_agents(al, None, shutdown.clone()));
    TestRelay {
        relay,
        tunnel_addr,
        agent_addr,
        shutdown,
    }
}

impl TestRelay {
    pub fn url(&self, tunnel: &str, server: &str) -> String {
        format!("http://{}/t/{tunnel}/{server}/mcp", self.agent_addr)
    }
}

/// The streams a test gateway serves per tunnel connection.
pub const TEST_GATEWAY_STREAMS: u32 = 64;

/// Starts a gateway for `cred` with `upstreams` against `relay_addr`.
pub fn start_gateway(
    ca: &GeneratedCa,
    cred: &TunnelCred,
    relay_addr: SocketAddr,
    upstreams: HashMap<String, Upstream>,
    connections: usize,
    proxy: ProxyConfig,
    identity: Option<&tls::Identity>,
) -> (
    Arc<Gateway>,
    PoolStatus,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    start_gateway_with(
        ca,
        cred,
        relay_addr,
        (upstreams, connections, TEST_GATEWAY_STREAMS),
        proxy,
        identity,
    )
}

/// [`start_gateway`] serving `max_streams` per connection.
pub fn start_gateway_with(
    ca: &GeneratedCa,
    cred: &TunnelCred,
    relay_addr: SocketAddr,
    (upstreams, connections, max_streams): (HashMap<String, Upstream>, usize, u32),
    proxy: ProxyConfig,
    identity: Option<&tls::Identity>,
) -> (
    Arc<Gateway>,
    PoolStatus,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let gateway = Gateway::new(upstreams, portcullis::config::gateway::default_limits());
    let shutdown = CancellationToken::new();
    let (status, task) = gateway.connect(
        DialConfig {
            tunnel_id: cred.id.clone(),
            token: cred.token.clone(),
            tls: tls::client_config(Some(&[ca.cert()]), identity, &[b"http/1.1"]).unwrap(),
            proxy,
            instance: None,
        },
        PoolConfig {
            relays: vec![RelayTarget {
                addr: relay_addr.to_string(),
                server_name: "localhost".into(),
                resolved: None,
            }],
            discovery: Discovery::Static { connections },
            max_streams,
            drain_grace: Duration::from_secs(10),
        },
        shutdown.clone(),
    );
    (gateway, status, shutdown, task)
}

/// Serves `gateway` for `cred` with one tunnel connection to each of
/// `relays`; returns once every relay has the tunnel. Cancel the token to
/// stop it (drain grace 1 s).
pub async fn connect_gateway(
    ca: &GeneratedCa,
    cred: &TunnelCred,
    relays: &[TestRelay],
    gateway: &Arc<Gateway>,
) -> CancellationToken {
    let stop = CancellationToken::new();
    let (mut status, _task) = gateway.connect(
        DialConfig {
            tunnel_id: cred.id.clone(),
            token: cred.token.clone(),
            tls: tls::client_config(Some(&[ca.cert()]), None, &[b"http/1.1"]).unwrap(),
            proxy: ProxyConfig::default(),
            instance: None,
        },
        PoolConfig {
            relays: relays
                .iter()
                .map(|r| RelayTarget {
                    addr: r.tunnel_addr.to_string(),
                    server_name: "localhost".into(),
                    resolved: None,
                })
                .collect(),
            discovery: Discovery::Static {
                connections: relays.len(),
            },
            max_streams: TEST_GATEWAY_STREAMS,
            drain_grace: Duration::from_secs(1),
        },
        stop.clone(),
    );
    within("tunnel connections", status.wait_connected(relays.len())).await;
    for r in relays {
        within(
            "the relay's tunnel",
            r.relay.registry().wait_for(&cred.id, 1),
        )
        .await;
    }
    stop
}

/// An HTTP upstream spec for `url`.
pub fn http_upstream(name: &str, url: &str) -> Upstream {
    portcullis::config::upstream::UpstreamSpec::parse(url)
        .unwrap()
        .build(name, portcullis::config::gateway::default_limits())
        .unwrap()
}

/// What the recording upstream saw.
#[derive(Default, Clone)]
pub struct Seen {
    pub requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

impl Seen {
    pub fn all(&self) -> Vec<(HeaderMap, Bytes)> {
        self.requests.lock().unwrap().clone()
    }
}

/// A minimal MCP upstream that records every request's headers and body and
/// answers each request with an empty result (no session).
pub async fn recording_upstream() -> (SocketAddr, Seen) {
    answering_upstream("{}").await
}

/// [`recording_upstream`], answering each request with `result` (JSON text).
pub async fn answering_upstream(result: &'static str) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let s = s.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        s.requests
                            .lock()
                            .unwrap()
                            .push((parts.headers, body.clone()));
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let resp = match v.get("id") {
                            Some(id) => Response::builder()
                                .header("content-type", "application/json")
                                .header("x-internal-secret", "must-not-leak")
                                .body(Full::new(Bytes::from(format!(
                                    r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#
                                ))))
                                .unwrap(),
                            None => Response::builder()
                                .status(202)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A real (minimal) HTTP CONNECT proxy; counts the tunnels it opened.
pub async fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let targets = Arc::new(Mutex::new(Vec::new()));
    let t = targets.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let t = t.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(b) = client.read_u8().await else {
                        return;
                    };
                    head.push(b);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let target = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                t.lock().unwrap().push(target.clone());
                let Ok(mut upstream) = TcpStream::connect(&target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, targets)
}

/// Root of the installed test peers.
pub fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers")
}

/// Fails with instructions when the real peers are not installed.
pub fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run `bash .ci/install-peers` once (it installs Node 22, server-everything, the conformance suite and the Python MCP SDK under target/peers)",
        path.display()
    );
    path
}

/// A relay with one tunnel and one agent key allowed on it.
pub struct OneTunnel {
    pub ca: Arc<GeneratedCa>,
    pub cred: TunnelCred,
    pub key: String,
    pub relay: TestRelay,
}

impl OneTunnel {
    pub async fn start() -> OneTunnel {
        OneTunnel::start_with(|_| {}).await
    }

    /// A tunnel whose relay has `tweak` applied to its settings.
    pub async fn start_with(tweak: impl FnOnce(&mut RelaySettings)) -> OneTunnel {
        let ca = Arc::new(GeneratedCa::new("test CA").unwrap());
        let cred = TunnelCred::new();
        let key = secret::generate(secret::AGENT_KEY_PREFIX);
        let relay = start_relay_with(
            ca.clone(),
            &[&cred],
            &[(&key, vec![cred.id.clone()])],
            None,
            None,
            tweak,
        )
        .await;
        OneTunnel {
            ca,
            cred,
            key,
            relay,
        }
    }

    /// Starts a gateway for the tunnel and waits until `connections` are up.
    pub async fn gateway(
        &self,
        upstreams: HashMap<String, Upstream>,
        connections: usize,
        proxy: ProxyConfig,
    ) -> (Arc<Gateway>, CancellationToken, tokio::task::JoinHandle<()>) {
        self.connect((upstreams, connections, TEST_GATEWAY_STREAMS), proxy)
            .await
    }

    /// [`OneTunnel::gateway`] serving `max_streams` per connection.
    pub async fn gateway_serving(
        &self,
        upstreams: HashMap<String, Upstream>,
        connections: usize,
        max_streams: u32,
    ) -> (Arc<Gateway>, CancellationToken, tokio::task::JoinHandle<()>) {
        self.connect(
            (upstreams, connections, max_streams),
            ProxyConfig::default(),
        )
        .await
    }

    async fn connect(
        &self,
        pool: (HashMap<String, Upstream>, usize, u32),
        proxy: ProxyConfig,
    ) -> (Arc<Gateway>, CancellationToken, tokio::task::JoinHandle<()>) {
        let connections = pool.1;
        let (gw, mut status, stop, task) = start_gateway_with(
            &self.ca,
            &self.cred,
            self.relay.tunnel_addr,
            pool,
            proxy,
            None,
        );
        within("tunnel connections", status.wait_connected(connections)).await;
        (gw, stop, task)
    }

    /// An agent client for `server` on this tunnel.
    pub fn client(&self, server: &str) -> portcullis::client::McpClient {
        portcullis::client::McpClient::new(&self.relay.url(&self.cred.id, server), Some(&self.key))
    }
}

/// The demo server on a loopback port.
pub async fn demo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(portcullis::demo::DemoServer::new().serve(l, Default::default()));
    addr
}

/// `{"demo": <HTTP upstream at addr>}`.
pub fn demo_upstreams(addr: SocketAddr) -> HashMap<String, Upstream> {
    HashMap::from([(
        "demo".to_owned(),
        http_upstream("demo", &format!("http://{addr}/mcp")),
    )])
}

/// A fresh directory under the test target's temp dir.
pub fn scratch() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(secret::random_id());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A child process, killed on drop.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Sends SIGTERM and waits (bounded) for the exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        within(
            "exit after SIGTERM",
            tokio::task::spawn_blocking(move || self.0.wait()),
        )
        .await
        .unwrap()
        .unwrap()
    }
}

/// Every line of every segment of the spool in `dir`.
pub fn spool_text(dir: &std::path::Path) -> String {
    portcullis::audit::segment::segments(dir)
        .unwrap()
        .iter()
        .map(|s| std::fs::read_to_string(s).unwrap())
        .collect()
}

/// An HTTP MCP upstream whose answer to each request is `answer(request)`
/// (its JSON body), or 202 when that is `None`.
pub async fn json_upstream<F>(answer: F) -> SocketAddr
where
    F: Fn(serde_json::Value) -> Option<serde_json::Value> + Send + Sync + 'static,
{
    serve_answers(move |req| answer(req).map(|reply| ("application/json", reply.to_string()))).await
}

/// An HTTP MCP upstream that answers each request whose `answer` is
/// `Some(events)` with an SSE stream of those JSON-RPC messages (one event
/// each), and everything else with 202.
pub async fn sse_upstream<F>(answer: F) -> SocketAddr
where
    F: Fn(serde_json::Value) -> Option<Vec<serde_json::Value>> + Send + Sync + 'static,
{
    serve_answers(move |req| {
        let events = answer(req)?;
        let text = events
            .iter()
            .enumerate()
            .map(|(i, e)| format!("id: e{i}\ndata: {e}\n\n"))
            .collect();
        Some(("text/event-stream", text))
    })
    .await
}

/// The server behind [`json_upstream`] and [`sse_upstream`]: each request's
/// JSON body goes to `answer`, whose `(content type, body)` is sent with
/// 200, or 202 with no body when it is `None`.
async fn serve_answers<F>(answer: F) -> SocketAddr
where
    F: Fn(serde_json::Value) -> Option<(&'static str, String)> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let v = serde_json::from_slice(&body).unwrap_or_default();
                        let resp = match answer(v) {
                            Some((ctype, body)) => Response::builder()
                                .header("content-type", ctype)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                            None => Response::builder()
                                .status(202)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// `portcullis audit verify dir` passes (`what` names the spool).
pub fn assert_audit_verifies(what: &str, dir: &std::path::Path) {
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// A `portcullis` process and what it has logged.
pub struct Daemon {
    proc: Option<Proc>,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn spawn(args: &[&str]) -> Daemon {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.args(args);
        Daemon::start(cmd)
    }

    pub fn start(mut cmd: std::process::Command) -> Daemon {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Daemon {
            proc: Some(Proc(child)),
            log,
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().matches(needle).count()
    }

    /// The value of `key=` on the first line containing `needle`.
    pub fn field(&self, needle: &str, key: &str) -> Option<String> {
        let log = self.log.lock().unwrap();
        let line = log.lines().find(|l| l.contains(needle))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_owned())
    }

    pub async fn wait_for(&self, what: &str, needle: &str, n: usize) {
        within(what, async {
            while self.count(needle) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    pub async fn terminate(&mut self) {
        let status = self.proc.take().unwrap().terminate().await;
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            self.text()
        );
    }

    pub fn text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}
