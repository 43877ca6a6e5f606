//! Rolling restarts: two relays and two gateways, each its own `portcullis`
//! process, real TLS on the tunnel, the relays found by the gateways under
//! one name that resolves to both (`discovery = "dns"`, a hosts file of
//! their own), a TCP load balancer in front of the relays (as a Service or
//! cloud LB is), under continuous load from the
//! Python SDK (sessions) and plain HTTP (stateless 2026-07-28 calls). Each
//! of the four processes is restarted in turn with SIGTERM. Stateless
//! calls: none fails. Sessions of a restarted gateway end with the spec's
//! 404 and the client's new session works; no call hangs; sessions of the
//! other gateway, and every session across relay restarts, carry on. Every
//! audit chain verifies, with a start record per process start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use portcullis::client::McpClient;
use portcullis::secret;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;
use portcullis::tls::GeneratedCa;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn venv_python() -> PathBuf {
    require(peers_dir().join("venv/bin/python"))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

impl Daemon {
    /// `portcullis gateway --config config`; when `hosts` is given, in a
    /// mount namespace of its own that sees that file as `/etc/hosts`.
    fn gateway(config: &Path, hosts: Option<&Path>) -> Daemon {
        let Some(hosts) = hosts else {
            return Daemon::spawn(&["gateway", "--config", config.to_str().unwrap()]);
        };
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "sh", "-c"]).arg(format!(
            "mount --bind '{}' /etc/hosts && exec '{}' gateway --config '{}'",
            hosts.display(),
            env!("CARGO_BIN_EXE_portcullis"),
            config.display()
        ));
        Daemon::start(cmd)
    }
}

/// A TCP load balancer: each connection goes to the next backend that
/// accepts it.
struct Balancer {
    addr: SocketAddr,
    /// Relay `i`'s agent address, while it is in the balancer.
    backends: Arc<Mutex<Vec<Option<SocketAddr>>>>,
}

impl Balancer {
    async fn start() -> Balancer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = Balancer {
            addr: l.local_addr().unwrap(),
            backends: Arc::new(Mutex::new(vec![None; 2])),
        };
        let backends = b.backends.clone();
        tokio::spawn(async move {
            let next = Arc::new(AtomicUsize::new(0));
            while let Ok((mut client, _)) = l.accept().await {
                let list: Vec<SocketAddr> =
                    backends.lock().unwrap().iter().flatten().copied().collect();
                let start = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    for i in 0..list.len() {
                        let to = list[(start + i) % list.len()];
                        if let Ok(mut up) = TcpStream::connect(to).await {
                            let _ = up.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                            return;
                        }
                    }
                });
            }
        });
        b
    }

    /// Puts relay `i` in the balancer at `addr`, or (`None`) takes it out.
    fn set(&self, i: usize, addr: Option<SocketAddr>) {
        self.backends.lock().unwrap()[i] = addr;
    }
}

struct Setup {
    dir: PathBuf,
    tunnel: String,
    key: String,
    /// The relays' tunnel port, the same on 127.0.0.2 and 127.0.0.3.
    port: u16,
    /// A hosts file that names both `relays.test`, when the gateways can
    /// have one of their own (else they list both addresses).
    hosts: Option<PathBuf>,
}

impl Setup {
    fn relay_config(&self, i: usize) -> PathBuf {
        let token = std::fs::read_to_string(self.dir.join("token")).unwrap();
        let path = self.dir.join(format!("relay{i}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"
[tunnel_listener]
listen = "127.0.0.{host}:{port}"
cert = "certs/relay.crt"
key = "certs/relay.key"
[agent_listener]
listen = "127.0.0.1:0"
[audit]
dir = "relay{i}-audit"
[limits]
drain_grace_secs = 10
[[tunnels]]
id = "{tunnel}"
token_sha256 = "{digest}"
[[agents]]
subject = "rolling-test"
key_sha256 = "{key}"
tunnels = ["{tunnel}"]
"#,
                tunnel = self.tunnel,
                host = 2 + i,
                port = self.port,
                digest = secret::digest_hex(token.trim()),
                key = secret::digest_hex(&self.key),
            ),
        )
        .unwrap();
        path
    }

    fn gateway_config(&self, i: usize, demo: SocketAddr) -> PathBuf {
        let path = self.dir.join(format!("gateway{i}.toml"));
        let port = self.port;
        // One name for the relays, resolved to every replica; or, where
        // the test cannot give the gateway a hosts file of its own, both
        // addresses, each verified as that name.
        let relays = match self.hosts {
            Some(_) => format!(
                "relays = [\"relays.test:{port}\"]\ndiscovery = \"dns\"\nresolve_interval_secs = 1"
            ),
            None => format!(
                "relays = [\"127.0.0.2:{port}\", \"127.0.0.3:{port}\"]\nserver_name = \"relays.test\"\nconnections = 2"
            ),
        };
        std::fs::write(
            &path,
            format!(
                r#"
[tunnel]
id = "{tunnel}"
token = {{ file = "token" }}
{relays}
ca = "certs/ca.crt"
[audit]
dir = "gateway{i}-audit"
[limits]
drain_grace_secs = 10
[servers.crm]
url = "http://{demo}/mcp"
[servers.time]
command = ["{python}", "-m", "mcp_server_time", "--local-timezone", "UTC"]
"#,
                tunnel = self.tunnel,
                python = venv_python().display(),
            ),
        )
        .unwrap();
        path
    }
}

/// A port free on both relay addresses.
fn free_port() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.3", port)).is_ok() {
            return port;
        }
    }
}

async fn start_relay_process(config: &Path) -> (Daemon, SocketAddr) {
    let d = Daemon::spawn(&["relay", "--config", config.to_str().unwrap()]);
    d.wait_for("relay listening", "relay listening", 1).await;
    let agents = d
        .field("relay listening", "agents")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no agents= in\n{}", d.text()));
    (d, agents)
}

/// One stateless 2026-07-28 tools/call through the balancer, on a
/// connection of its own; `Err` says what failed.
async fn stateless_call(url: &str, key: &str, id: u64) -> Result<(), String> {
    let c = McpClient::new(url, Some(key));
    let params = json!({
        "name": "get_current_time",
        "arguments": {"timezone": "UTC"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    });
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "get_current_time"),
        ("accept", "application/json, text/event-stream"),
    ];
    let sent = tokio::time::timeout(
        Duration::from_secs(20),
        c.send(Method::POST, body.to_string().into(), &headers),
    )
    .await
    .map_err(|_| "no answer within 20 s".to_owned())?
    .map_err(|e| format!("transport: {e}"))?;
    let last = sent.last().cloned().unwrap_or(Value::Null);
    if sent.status != 200 || last.get("result").is_none() {
        return Err(format!("HTTP {}: {last}", sent.status));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_each_relay_and_gateway_in_turn_under_load_fails_no_stateless_call_and_ends_only_the_restarted_gateways_sessions()
 {
    let dir = scratch();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let ca = GeneratedCa::new("rolling CA").unwrap();
    let id = ca.issue(&["relays.test"]).unwrap();
    std::fs::write(dir.join("certs/ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.join("certs/relay.crt"), id.chain_pem()).unwrap();
    std::fs::write(dir.join("certs/relay.key"), id.key_pem()).unwrap();
    let cred = TunnelCred::new();
    std::fs::write(dir.join("token"), &cred.token).unwrap();
    // The gateways find the relays by name where they can have a hosts
    // file of their own (a private mount namespace).
    let hosts = match crate::discovery::private_mounts_work() {
        Ok(()) => {
            let hosts = dir.join("hosts");
            std::fs::write(&hosts, "127.0.0.2 relays.test\n127.0.0.3 relays.test\n").unwrap();
            Some(hosts)
        }
        Err(why) => {
            eprintln!("the gateways list both relay addresses: {why}");
            None
        }
    };
    let setup = Setup {
        dir: dir.clone(),
        tunnel: cred.id.clone(),
        key: secret::generate(secret::AGENT_KEY_PREFIX),
        port: free_port(),
        hosts,
    };
    let demo = demo_server().await;
    let lb = Balancer::start().await;

    let mut relays = Vec::new();
    for i in 0..2 {
        let (d, agents) = start_relay_process(&setup.relay_config(i)).await;
        lb.set(i, Some(agents));
        relays.push(d);
    }
    // Gateway instances, per slot, in order of start.
    let mut instances: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let mut gateways = Vec::new();
    for (i, started) in instances.iter_mut().enumerate() {
        let config = setup.gateway_config(i, demo);
        let d = Daemon::gateway(&config, setup.hosts.as_deref());
        d.wait_for("gateway connected", "tunnel connected", 2).await;
        started.push(d.field("gateway instance", "instance").unwrap());
        gateways.push(d);
    }
    for r in &relays {
        r.wait_for("both gateways at the relay", "tunnel connection up", 2)
            .await;
    }
    let crm = format!("http://{}/t/{}/crm/mcp", lb.addr, cred.id);
    let time = format!("http://{}/t/{}/time/mcp", lb.addr, cred.id);
    // Warm: the time server's process for this principal on each gateway.
    for id in 0..4 {
        stateless_call(&time, &setup.key, id).await.unwrap();
    }

    // The load: stateless calls from two tasks, sessions from the SDK.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut stateless = Vec::new();
    for t in 0..8u64 {
        let (stop, failures, calls) = (stop.clone(), failures.clone(), calls.clone());
        let (url, key) = (time.clone(), setup.key.clone());
        stateless.push(tokio::spawn(async move {
            let mut id = 1000 * (t + 1);
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                match stateless_call(&url, &key, id).await {
                    Ok(()) => {
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().unwrap().push(format!("{:.3} {e}", now())),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let stop_file = dir.join("stop");
    let mut py = tokio::process::Command::new(venv_python());
    py.arg(repo("tests/peers/py_sessions.py"))
        .args(["--url", &crm, "--token", &setup.key, "--sessions", "4"])
        .args(["--tool", "lookup_customer"])
        .args(["--args", r#"{"customer_id":"C-1001"}"#])
        .arg("--stop-file")
        .arg(&stop_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let py = py.spawn().unwrap();
    let settle = || tokio::time::sleep(Duration::from_millis(1500));
    settle().await;

    // Restart windows of each gateway slot: (SIGTERM sent, back up).
    let mut windows: Vec<(usize, f64, f64)> = Vec::new();
    for (i, relay) in relays.iter_mut().enumerate() {
        // A relay: out of the balancer first (as endpoints are, or after a
        // preStop sleep), then SIGTERM; it drains and exits; back on the
        // same tunnel port, the gateways redial it.
        lb.set(i, None);
        tokio::time::sleep(Duration::from_millis(300)).await;
        relay.terminate().await;
        let config = setup.relay_config(i);
        let (d, agents) = start_relay_process(&config).await;
        d.wait_for("both gateways back at the relay", "tunnel connection up", 2)
            .await;
        lb.set(i, Some(agents));
        *relay = d;
        settle().await;
    }
    for i in 0..2 {
        let started = now();
        gateways[i].terminate().await;
        let config = setup.gateway_config(i, demo);
        let d = Daemon::gateway(&config, setup.hosts.as_deref());
        d.wait_for("restarted gateway connected", "tunnel connected", 2)
            .await;
        instances[i].push(d.field("gateway instance", "instance").unwrap());
        windows.push((i, started, now()));
        gateways[i] = d;
        settle().await;
    }

    std::fs::write(&stop_file, "").unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in stateless {
        within("stateless load to stop", t).await.unwrap();
    }
    let out = within("the SDK sessions to stop", py.wait_with_output())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "py_sessions: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("py_sessions printed {:?}: {e}", out.stdout));

    let failures = failures.lock().unwrap().clone();
    let calls = calls.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} stateless calls failed: {failures:#?}",
        failures.len(),
        calls + failures.len()
    );
    assert!(calls >= 20, "only {calls} stateless calls ran");

    let sessions = report["sessions"].as_array().unwrap();
    let owner_slot = |id: &str| {
        let stamp = id.split('.').next().unwrap();
        (0..2)
            .find(|s| instances[*s].iter().any(|i| i == stamp))
            .unwrap_or_else(|| panic!("session {id} names no gateway of {instances:?}"))
    };
    let mut expired = 0;
    for s in sessions {
        let ended = s["ended"].as_str().unwrap();
        let id = s["id"]
            .as_str()
            .unwrap_or_else(|| panic!("a session without an id: {s}"));
        match ended {
            "stopped" => assert!(s["ok"].as_u64().unwrap() >= 1, "{s}"),
            "expired" => {
                expired += 1;
                // Only while its own gateway was restarting, or on the
                // session's first call after.
                let slot = owner_slot(id);
                let (_, from, to) = windows.iter().find(|w| w.0 == slot).copied().unwrap();
                let at = s["at"].as_f64().unwrap();
                assert!(
                    at >= from && at <= to + 10.0,
                    "session {id} of gateway {slot} expired at {at}, outside its restart {from}-{to}: {s}"
                );
            }
            _ => panic!("a session {ended}: {s}\nsessions: {sessions:#?}"),
        }
    }
    // Every worker ended on a working session, and the restarts did end
    // sessions (else this checked nothing).
    let stopped = sessions.iter().filter(|s| s["ended"] == "stopped").count();
    assert_eq!(stopped, 4, "{sessions:#?}");
    assert!(
        expired >= 1,
        "no session was on a restarted gateway: {sessions:#?}"
    );

    // Every chain verifies, and says where each process started.
    for name in ["relay0", "relay1", "gateway0", "gateway1"] {
        let audit = dir.join(format!("{name}-audit"));
        assert_audit_verifies(name, &audit);
        let starts = spool_text(&audit)
            .lines()
            .filter(|l| l.contains(r#""type":"start""#))
            .count();
        assert_eq!(starts, 2, "{name}: one start record per process start");
    }
    for g in &mut gateways {
        g.terminate().await;
    }
    for r in &mut relays {
        r.terminate().await;
    }
}
