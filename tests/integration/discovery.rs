//! Relay discovery by DNS: a gateway (the real binary) whose relay name
//! resolves to two relays keeps a tunnel to each, and follows the answer as
//! it changes. The name lives in the gateway's own `/etc/hosts`: it runs in
//! a private mount namespace with a test hosts file bound over the real one
//! (what a Kubernetes headless Service gives a pod, through getaddrinfo).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use portcullis::client::McpClient;
use portcullis::principal::Principal;
use portcullis::relay::auth::{AgentAuth, AgentGrant, TunnelScope};
use portcullis::relay::{Relay, RelaySettings, loopback_hosts};
use portcullis::secret;
use portcullis::tls::{self, GeneratedCa};
use portcullis::tunnel::acceptor::TunnelAuth;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use portcullis::gateway::Gateway;
use portcullis::tunnel::connector::{Discovery, PoolConfig};
use portcullis::tunnel::dial::{DialConfig, ProxyConfig, RelayTarget};

use crate::support::{
    Proc, TestRelay, TunnelCred, WAIT, connect_proxy, demo_server, demo_upstreams,
    recording_upstream, scratch, start_relay, within,
};

/// The relays' shared name, on both certificates.
const RELAYS: &str = "relays.test";

/// Starts a relay whose tunnel listener is `tunnel` and whose certificate
/// is for [`RELAYS`]; `key` is an agent key for `cred`'s tunnel.
async fn relay_at(
    ca: &GeneratedCa,
    cred: &TunnelCred,
    key: &str,
    tunnel: TcpListener,
) -> TestRelay {
    let grants = [(
        secret::digest(key),
        AgentGrant {
            principal: Principal::named("agent", vec!["support".into()]),
            tunnels: TunnelScope::Only(vec![cred.id.clone()]),
        },
    )];
    let mut settings = RelaySettings::new(
        AgentAuth::new(grants),
        TunnelAuth::new([(cred.id.clone(), secret::digest(&cred.token))]),
    );
    settings.allowed_hosts = Some(loopback_hosts());
    let relay = Relay::new(settings);
    let shutdown = CancellationToken::new();
    let agents = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let id = ca.issue(&[RELAYS]).unwrap();
    let server_tls = tls::server_config(&id, None, &[b"http/1.1"]).unwrap();
    let tunnel_addr = tunnel.local_addr().unwrap();
    let agent_addr = agents.local_addr().unwrap();
    tokio::spawn(
        relay
            .clone()
            .serve_tunnels(tunnel, server_tls, shutdown.clone()),
    );
    tokio::spawn(relay.clone().serve_agents(agents, None, shutdown.clone()));
    TestRelay {
        relay,
        tunnel_addr,
        agent_addr,
        shutdown,
    }
}

/// Listeners on 127.0.0.2 and 127.0.0.3 with the same port, as two replicas
/// behind one name have.
async fn same_port_on_two_addresses() -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let a = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = TcpListener::bind(SocketAddr::from(([127, 0, 0, 3], port))).await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

/// Rewrites the hosts file in place (same inode, so the bind mount shows
/// the new text): `relays.test` resolves to `addrs`.
fn point_relays_at(hosts: &Path, addrs: &[&str]) {
    let mut text = String::from("127.0.0.1 localhost\n");
    for a in addrs {
        text.push_str(&format!("{a} {RELAYS}\n"));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(hosts)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// Whether this machine lets the test give the gateway its own
/// `/etc/hosts`: `unshare -m` installed, and the privilege to mount.
pub(crate) fn private_mounts_work() -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "unshare -m with a bind mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Awaits `f` for at most [`WAIT`]; on timeout fails with the gateway's log.
async fn within_logged<F: std::future::Future>(what: &str, log: &Path, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!(
            "timed out waiting for {what}; gateway log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

/// Calls through `relay` until one reaches the upstream.
async fn call_until_answered(relay: &TestRelay, cred: &TunnelCred, key: &str) {
    loop {
        let url = format!("http://{}/t/{}/crm/mcp", relay.agent_addr, cred.id);
        let mut c = McpClient::new(&url, Some(key));
        if let Ok(r) = c.request("ping", json!({})).await
            && r.status == 200
            && r.last().is_some_and(|m| m.get("result").is_some())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One call through `relay`: its status and JSON-RPC error message.
async fn call(relay: &TestRelay, cred: &TunnelCred, key: &str) -> (u16, String) {
    let url = format!("http://{}/t/{}/crm/mcp", relay.agent_addr, cred.id);
    let mut c = McpClient::new(&url, Some(key));
    let r = c.request("ping", json!({})).await.unwrap();
    let msg = r
        .last()
        .and_then(|m| m["error"]["message"].as_str())
        .unwrap_or("")
        .to_owned();
    (r.status.as_u16(), msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_keeps_a_tunnel_to_every_relay_its_name_resolves_to() {
    if let Err(why) = private_mounts_work() {
        eprintln!("SKIPPED: the gateway needs a private /etc/hosts: {why}");
        return;
    }
    let dir: PathBuf = scratch();
    let ca = Arc::new(GeneratedCa::new("relays CA").unwrap());
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    let cred = TunnelCred::new();
    let key = secret::generate("pk_");
    let (la, lb) = same_port_on_two_addresses().await;
    let port = la.local_addr().unwrap().port();
    let a = relay_at(&ca, &cred, &key, la).await;
    let b = relay_at(&ca, &cred, &key, lb).await;
    let (upstream, _seen) = recording_upstream().await;

    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "").unwrap();
    point_relays_at(&hosts, &["127.0.0.2", "127.0.0.3"]);
    std::fs::write(dir.join("token"), &cred.token).unwrap();
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[tunnel]
id = "{id}"
token = {{ file = "token" }}
relays = ["{RELAYS}:{port}"]
discovery = "dns"
resolve_interval_secs = 1
ca = "ca.crt"
[limits]
drain_grace_secs = 1
[servers.crm]
url = "http://{upstream}/mcp"
"#,
            id = cred.id
        ),
    )
    .unwrap();
    let log = dir.join("gateway.log");
    let script = format!(
        "mount --bind '{}' /etc/hosts && exec '{}' gateway --config '{}'",
        hosts.display(),
        env!("CARGO_BIN_EXE_portcullis"),
        config.display()
    );
    let gateway = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let gateway = Proc(gateway);

    // Both replicas behind the name: a tunnel to each, calls through either.
    within_logged("a tunnel to the relay on 127.0.0.2", &log, async {
        a.relay.registry().wait_for(&cred.id, 1).await;
        call_until_answered(&a, &cred, &key).await;
    })
    .await;
    within_logged("a tunnel to the relay on 127.0.0.3", &log, async {
        b.relay.registry().wait_for(&cred.id, 1).await;
        call_until_answered(&b, &cred, &key).await;
    })
    .await;

    // 127.0.0.3 leaves the answer: its tunnel is drained, and the one
    // relay left gets both connections (at least two in all).
    point_relays_at(&hosts, &["127.0.0.2"]);
    within_logged(
        "the relay that left the answer to lose the tunnel",
        &log,
        b.relay.registry().wait_until(&cred.id, |n| n == 0),
    )
    .await;
    let (status, message) = call(&b, &cred, &key).await;
    assert_eq!(status, 503, "{message}");
    assert!(message.contains("offline"), "{message}");
    within_logged(
        "two connections to the remaining relay",
        &log,
        a.relay.registry().wait_for(&cred.id, 2),
    )
    .await;
    assert_eq!(call(&a, &cred, &key).await.0, 200);

    // It comes back: dialled again.
    point_relays_at(&hosts, &["127.0.0.2", "127.0.0.3"]);
    within_logged("the re-added relay to be dialled again", &log, async {
        b.relay.registry().wait_for(&cred.id, 1).await;
        call_until_answered(&b, &cred, &key).await;
    })
    .await;
    within_logged(
        "one connection per relay again",
        &log,
        a.relay.registry().wait_until(&cred.id, |n| n == 1),
    )
    .await;

    // A name that stops resolving keeps the connections there are.
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    let text = within_logged("a failed lookup to be logged", &log, async {
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("keeping the addresses already known") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(text.contains("relay address added"), "{text}");
    assert_eq!(a.relay.registry().connections(&cred.id), 1);
    assert_eq!(b.relay.registry().connections(&cred.id), 1);
    assert_eq!(call(&a, &cred, &key).await.0, 200);
    assert_eq!(call(&b, &cred, &key).await.0, 200);

    let status = gateway.terminate().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn through_a_proxy_a_discovered_relay_is_reached_by_its_address_and_verified_by_name() {
    let ca = Arc::new(GeneratedCa::new("t").unwrap());
    let cred = TunnelCred::new();
    let key = secret::generate("pk_");
    let relay = start_relay(
        ca.clone(),
        &[&cred],
        &[(&key, vec![cred.id.clone()])],
        None,
        None,
    )
    .await;
    let (proxy_addr, connects) = connect_proxy().await;
    let gateway = Gateway::new(
        demo_upstreams(demo_server().await),
        portcullis::config::gateway::default_limits(),
    );
    let stop = CancellationToken::new();
    let name = format!("localhost:{}", relay.tunnel_addr.port());
    let (mut status, task) = gateway.connect(
        DialConfig {
            tunnel_id: cred.id.clone(),
            token: cred.token.clone(),
            tls: tls::client_config(Some(&[ca.cert()]), None, &[b"http/1.1"]).unwrap(),
            proxy: ProxyConfig::parse(Some(&format!("http://{proxy_addr}")), None).unwrap(),
            instance: None,
        },
        PoolConfig {
            relays: vec![RelayTarget::new(&name)],
            discovery: Discovery::Dns {
                per_relay: 1,
                interval: Duration::from_secs(1),
            },
            max_streams: 16,
            drain_grace: Duration::from_secs(1),
        },
        stop.clone(),
    );
    // One address behind the name: both connections go to it.
    within("two tunnel connections", status.wait_connected(2)).await;
    let seen = connects.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|t| *t == relay.tunnel_addr.to_string()),
        "CONNECT went to {seen:?}, not the resolved {}",
        relay.tunnel_addr
    );
    let mut c = McpClient::new(&relay.url(&cred.id, "demo"), Some(&key));
    within("a call through the tunnel", c.initialize())
        .await
        .unwrap();
    stop.cancel();
    within("the pool to drain", task).await.unwrap();
    assert_eq!(status.connected(), 0);
}
