//! Connections under faults and overload: idle and half-open connections
//! are closed, the connection cap, an accept loop out of descriptors, and a
//! relay that flaps.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::client::McpClient;
use portcullis::config::upstream::UpstreamSpec;
use portcullis::relay::auth::AgentAuth;
use portcullis::relay::{Relay, RelaySettings};
use portcullis::secret;
use portcullis::tunnel::dial::ProxyConfig;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::cli::{scratch_dir, write_certs};
use crate::support::*;

/// The idle timeout the tests set; short, so they run quickly.
const IDLE: Duration = Duration::from_millis(500);

/// Slack on every "closed within" bound: a noisy 2-core machine.
const SLACK: Duration = Duration::from_secs(5);

/// An in-process relay serving agents on a loopback port, with `tweak`
/// applied to its settings.
async fn agent_listener(tweak: impl FnOnce(&mut RelaySettings)) -> (SocketAddr, CancellationToken) {
    let mut settings = RelaySettings::new(AgentAuth::default(), Default::default());
    tweak(&mut settings);
    let relay = Relay::new(settings);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(relay.serve_agents(listener, None, stop.clone()));
    (addr, stop)
}

/// Waits (at most `bound`) for the peer to close `tcp`; returns how long
/// that took from `since`.
async fn closed_within(tcp: &mut TcpStream, since: Instant, bound: Duration) -> Duration {
    let mut buf = [0u8; 4096];
    let wait = async {
        // EOF or a reset: either way the relay let go of it.
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(bound, wait)
        .await
        .unwrap_or_else(|_| panic!("connection still open after {bound:?}"));
    since.elapsed()
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let (addr, _stop) = agent_listener(|s| {
        s.idle_timeout = IDLE;
        // Longer than the test's bound: only the idle timeout can close it.
        s.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut tcp, started, IDLE + SLACK).await;
    assert!(
        took >= IDLE - Duration::from_millis(50),
        "closed early: {took:?}"
    );
}

/// Makes one GET on a fresh connection to `addr` (HTTP/2 with prior
/// knowledge when `h2`), reads the response whole, then holds the
/// connection without using it. Returns when the response ended, and
/// when the relay closed the connection.
async fn one_request_then_idle(addr: SocketAddr, h2: bool) -> (Instant, Instant) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let io = TokioIo::new(tcp);
    let (done, closed) = if h2 {
        let req = Request::get(format!("http://{addr}/t/x/y/mcp"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        let closed = tokio::spawn(async move {
            let _ = conn.await;
            Instant::now()
        });
        let resp = send.send_request(req).await.unwrap();
        let _ = resp.into_body().collect().await.unwrap();
        let done = Instant::now();
        // The sender stays alive: the client itself does not close.
        let closed = tokio::time::timeout(IDLE + SLACK, closed).await;
        drop(send);
        (done, closed)
    } else {
        let req = Request::get("/t/x/y/mcp")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        let closed = tokio::spawn(async move {
            let _ = conn.await;
            Instant::now()
        });
        let resp = send.send_request(req).await.unwrap();
        let _ = resp.into_body().collect().await.unwrap();
        let done = Instant::now();
        let closed = tokio::time::timeout(IDLE + SLACK, closed).await;
        drop(send);
        (done, closed)
    };
    let closed = closed
        .unwrap_or_else(|_| {
            panic!(
                "connection still open {:?} after its response",
                IDLE + SLACK
            )
        })
        .unwrap();
    (done, closed)
}

#[tokio::test]
async fn an_http1_keep_alive_connection_idle_after_a_request_is_closed() {
    let (addr, _stop) = agent_listener(|s| {
        s.idle_timeout = IDLE;
        s.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let (done, closed) = one_request_then_idle(addr, false).await;
    let idle = closed - done;
    assert!(
        idle >= IDLE - Duration::from_millis(50),
        "closed early: {idle:?}"
    );
}

#[tokio::test]
async fn an_http2_connection_with_no_streams_is_closed() {
    let (addr, _stop) = agent_listener(|s| {
        s.idle_timeout = IDLE;
        s.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let (done, closed) = one_request_then_idle(addr, true).await;
    let idle = closed - done;
    assert!(
        idle >= IDLE - Duration::from_millis(50),
        "closed early: {idle:?}"
    );
}

/// An HTTP MCP upstream that answers every request after `delay`, sending
/// nothing until then.
async fn silent_slow_upstream(delay: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let msg: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    tokio::time::sleep(delay).await;
                    let reply = json!({"jsonrpc": "2.0", "id": msg["id"], "result": {}});
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(reply.to_string())))
                            .unwrap(),
                    )
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_call_in_flight_longer_than_the_idle_timeout_is_not_cut() {
    let ca = Arc::new(portcullis::tls::GeneratedCa::new("t").unwrap());
    let cred = TunnelCred::new();
    let key = secret::generate(secret::AGENT_KEY_PREFIX);
    let relay = start_relay_with(
        ca.clone(),
        &[&cred],
        &[(&key, vec![cred.id.clone()])],
        None,
        None,
        |s| {
            s.idle_timeout = Duration::from_millis(300);
            // A connection told to close gets this long; the call must
            // not depend on it.
            s.drain_grace = Duration::from_millis(300);
        },
    )
    .await;
    let slow = silent_slow_upstream(Duration::from_millis(1500)).await;
    let up = UpstreamSpec::parse(&format!("http://{slow}/mcp"))
        .unwrap()
        .build("slow", portcullis::config::gateway::default_limits())
        .unwrap();
    let (_gw, mut status, _stop, _task) = start_gateway(
        &ca,
        &cred,
        relay.tunnel_addr,
        HashMap::from([("slow".to_owned(), up)]),
        1,
        ProxyConfig::default(),
        None,
    );
    within("tunnel", status.wait_connected(1)).await;
    let mut c = McpClient::new(&relay.url(&cred.id, "slow"), Some(&key));
    // Five times the idle timeout with nothing on the wire: still answered.
    let reply = within("the slow answer", c.request("ping", json!({})))
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.last());
    assert_eq!(reply.last().unwrap()["id"], 1);
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_and_the_listener_serves_after() {
    let (addr, _stop) = agent_listener(|s| {
        s.max_connections = 3;
        s.idle_timeout = Duration::from_secs(60);
    })
    .await;
    // Three connections, each proven in service by one answered request.
    let mut held = Vec::new();
    for _ in 0..3 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        let req = Request::get("/t/x/y/mcp")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        within("a response", send.send_request(req)).await.unwrap();
        held.push((send, task));
    }
    // The fourth and fifth are closed at once, not left waiting.
    for _ in 0..2 {
        let started = Instant::now();
        let mut over = TcpStream::connect(addr).await.unwrap();
        closed_within(&mut over, started, SLACK).await;
    }
    // When the three leave, the listener serves again.
    held.clear();
    within("the listener to serve again", async {
        loop {
            let Ok(tcp) = TcpStream::connect(addr).await else {
                continue;
            };
            let Ok((mut send, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
            else {
                continue;
            };
            tokio::spawn(conn);
            let req = Request::get("/t/x/y/mcp")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap();
            if send.send_request(req).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// A `portcullis relay` child process and what it has logged so far.
struct RelayProcess {
    proc: Proc,
    pid: u32,
    log: Arc<Mutex<String>>,
    agents: SocketAddr,
    /// When the relay logged that it listens.
    listening: Instant,
}

/// Starts `portcullis relay --config config`, with at most `nofile` open
/// descriptors when set, and waits until it listens.
async fn spawn_relay(config: &Path, nofile: Option<u32>) -> RelayProcess {
    let bin = env!("CARGO_BIN_EXE_portcullis");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!(
                    "ulimit -n {n} && exec \"$0\" relay --config \"$1\""
                ))
                .arg(bin)
                .arg(config);
            c
        }
        None => {
            let mut c = Command::new(bin);
            c.args(["relay", "--config"]).arg(config);
            c
        }
    };
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        while let Some(Ok(line)) = lines.next() {
            if line.contains("relay listening") {
                let agents = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("agents="))
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                let _ = tx.send((agents, Instant::now()));
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let proc = Proc(child);
    let (agents, listening) = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT))
        .await
        .unwrap()
        .unwrap_or_else(|_| panic!("relay did not start"));
    RelayProcess {
        proc,
        pid,
        log,
        agents: agents.unwrap(),
        listening,
    }
}

/// A relay config for one tunnel and one agent key, tunnel listener on
/// `tunnel_port` (0 for any).
fn relay_config(dir: &Path, tunnel_port: u16, cred: &TunnelCred, key: &str) -> std::path::PathBuf {
    let path = dir.join("relay.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[tunnel_listener]
listen = "127.0.0.1:{tunnel_port}"
cert = "certs/relay.crt"
key = "certs/relay.key"
[agent_listener]
listen = "127.0.0.1:0"
[[tunnels]]
id = "{}"
token_sha256 = "{}"
[[agents]]
subject = "ops-test"
key_sha256 = "{}"
tunnels = ["{}"]
"#,
            cred.id,
            secret::digest_hex(&cred.token),
            secret::digest_hex(key),
            cred.id,
        ),
    )
    .unwrap();
    path
}

/// CPU time (user + system) the process `pid` has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz: u64 = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    Duration::from_millis(ticks * 1000 / hz)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_loop_out_of_descriptors_neither_spins_nor_floods_the_log() {
    let dir = scratch_dir();
    write_certs(&dir);
    let cred = TunnelCred::new();
    let key = secret::generate(secret::AGENT_KEY_PREFIX);
    let config = relay_config(&dir, 0, &cred, &key);
    let relay = spawn_relay(&config, Some(64)).await;
    // More connections than the relay has descriptors: the kernel
    // completes them all (within the listen backlog of 128), the relay
    // cannot accept them all.
    let mut clients = Vec::new();
    for _ in 0..120 {
        clients.push(TcpStream::connect(relay.agents).await.unwrap());
    }
    within("the relay to run out of descriptors", async {
        while !relay.log.lock().unwrap().contains("accept failed") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let cpu_before = cpu_time(relay.pid);
    let log_before = relay.log.lock().unwrap().len();
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let cpu = cpu_time(relay.pid) - cpu_before;
    let logged = relay.log.lock().unwrap().len() - log_before;
    // A spinning loop takes a whole core and logs megabytes in this time.
    assert!(cpu < window / 4, "relay used {cpu:?} of CPU in {window:?}");
    assert!(logged < 4096, "relay logged {logged} bytes in {window:?}");
    println!("out of descriptors for {window:?}: {cpu:?} of CPU, {logged} bytes of log");
    // When the clients leave, it serves again.
    drop(clients);
    let mut c = McpClient::new(
        &format!("http://{}/t/{}/demo/mcp", relay.agents, cred.id),
        Some(&key),
    );
    let reply = within("an answer after the flood", async {
        loop {
            if let Ok(r) = c.request("ping", json!({})).await {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // No gateway: the tunnel is offline, and the relay says so.
    assert_eq!(reply.status, 503);
    drop(relay.proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_is_back_within_about_a_second_of_each_relay_restart() {
    const SLOTS: usize = 4;
    const RESTARTS: usize = 6;
    let dir = scratch_dir();
    let ca = write_certs(&dir);
    let cred = TunnelCred::new();
    let key = secret::generate(secret::AGENT_KEY_PREFIX);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = relay_config(&dir, port, &cred, &key);
    let mut relay = spawn_relay(&config, None).await;
    let tunnel_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (_gw, mut status, _stop, _task) = start_gateway(
        &ca,
        &cred,
        tunnel_addr,
        demo_upstreams(demo_server().await),
        SLOTS,
        ProxyConfig::default(),
        None,
    );
    within("first connect", status.wait_connected(SLOTS)).await;
    let mut figures = Vec::new();
    for i in 0..RESTARTS {
        // Up a couple of seconds, then a crash or a clean stop, and back
        // at once or after a pause.
        tokio::time::sleep(Duration::from_secs(2)).await;
        if i % 2 == 0 {
            drop(relay.proc);
        } else {
            relay.proc.terminate().await;
        }
        within("the gateway to notice", status.wait_disconnected()).await;
        if i % 3 == 1 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        relay = spawn_relay(&config, None).await;
        within("every slot back", status.wait_connected(SLOTS)).await;
        figures.push(relay.listening.elapsed());
    }
    let ms: Vec<u128> = figures.iter().map(|d| d.as_millis()).collect();
    println!("slots back after each relay restart (ms): {ms:?}");
    for (i, d) in figures.iter().enumerate() {
        assert!(
            *d < Duration::from_secs(3),
            "restart {i}: {SLOTS} slots back only after {d:?} (all: {ms:?})"
        );
    }
    // And the tunnel carries calls.
    let mut c = McpClient::new(
        &format!("http://{}/t/{}/demo/mcp", relay.agents, cred.id),
        Some(&key),
    );
    within("a call after the restarts", c.initialize())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_tunnel_connection_that_never_upgrades_is_closed() {
    let t = OneTunnel::start().await;
    let bound = portcullis::limits::HANDSHAKE_TIMEOUT + SLACK;
    let started = Instant::now();
    // One sends nothing at all; the other finishes TLS, then nothing.
    let mut silent = TcpStream::connect(t.relay.tunnel_addr).await.unwrap();
    let tcp = TcpStream::connect(t.relay.tunnel_addr).await.unwrap();
    let tls = portcullis::tls::client_config(Some(&[t.ca.cert()]), None, &[b"http/1.1"]).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut after_tls = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let wait_tls = async {
        let mut buf = [0u8; 64];
        tokio::time::timeout(bound, async {
            while let Ok(n) = after_tls.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("TLS connection still open after {bound:?}"));
    };
    let ((), _) = tokio::join!(wait_tls, closed_within(&mut silent, started, bound));
}
