//! The binary as an operator runs it: `relay` and `gateway` as separate
//! processes from TOML files, the shipped examples, `keygen`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use portcullis::client::McpClient;
use portcullis::config::gateway::GatewayConfig;
use portcullis::config::relay::RelayConfig;
use portcullis::secret;
use portcullis::tls::GeneratedCa;
use serde_json::json;

use crate::support::{Proc, scratch, within};

pub fn scratch_dir() -> PathBuf {
    let dir = scratch();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    dir
}

/// Writes a CA and a relay certificate for localhost into `dir/certs`;
/// returns the CA.
pub fn write_certs(dir: &Path) -> GeneratedCa {
    let ca = GeneratedCa::new("ops CA").unwrap();
    let id = ca.issue(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(dir.join("certs/ca.crt"), ca.pem()).unwrap();
    let chain = id.chain_pem();
    std::fs::write(dir.join("certs/relay.crt"), chain).unwrap();
    std::fs::write(dir.join("certs/relay.key"), id.key_pem()).unwrap();
    ca
}

#[test]
fn shipped_example_configs_parse_and_validate() {
    let dir = scratch_dir();
    write_certs(&dir);
    std::fs::write(dir.join("relay.toml"), portcullis::config::EXAMPLE_RELAY).unwrap();
    RelayConfig::load(&dir.join("relay.toml"))
        .unwrap_or_else(|e| panic!("example relay.toml: {e}"));
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/crm-token"), "upstream-secret\n").unwrap();
    let gw = portcullis::config::EXAMPLE_GATEWAY.replace(
        r#"token = { env = "PORTCULLIS_TUNNEL_TOKEN" }"#,
        r#"token = { file = "secrets/crm-token" }"#,
    );
    std::fs::write(dir.join("gateway.toml"), gw).unwrap();
    let cfg = GatewayConfig::load(&dir.join("gateway.toml"))
        .unwrap_or_else(|e| panic!("example gateway.toml: {e}"));
    let mut names: Vec<_> = cfg.gateway.server_names().collect();
    names.sort();
    assert_eq!(names, ["crm", "time"]);
}

#[test]
fn bad_configs_are_clear_errors() {
    let dir = scratch_dir();
    write_certs(&dir);
    let cases = [
        (
            "typo",
            portcullis::config::EXAMPLE_RELAY.replace("[limits]", "[limits]\nmax_mesage_bytes = 1"),
            "unknown field",
        ),
        (
            "bad hash",
            portcullis::config::EXAMPLE_RELAY.replace("3f4e0c0b", "zz"),
            "token_sha256",
        ),
        (
            "unknown tunnel",
            portcullis::config::EXAMPLE_RELAY
                .replace(r#"tunnels = ["acme-prod"]"#, r#"tunnels = ["nope"]"#),
            "unknown tunnel 'nope'",
        ),
        (
            "no idle timeout",
            portcullis::config::EXAMPLE_RELAY
                .replace("idle_timeout_secs = 60", "idle_timeout_secs = 0"),
            "limits.idle_timeout_secs",
        ),
        (
            "no connections",
            portcullis::config::EXAMPLE_RELAY
                .replace("max_agent_connections = 10000", "max_agent_connections = 0"),
            "limits.max_agent_connections",
        ),
        (
            "missing cert",
            portcullis::config::EXAMPLE_RELAY.replace("certs/relay.key", "certs/missing.key"),
            "missing.key",
        ),
        (
            "OAuth without a public URL",
            portcullis::config::EXAMPLE_RELAY
                .replace(r#"public_url = "https://relay.example.com""#, ""),
            "agent_listener.public_url",
        ),
        (
            "an OAuth tunnel naming an unknown issuer",
            portcullis::config::EXAMPLE_RELAY.replace(
                r#"issuers = ["https://sso.example.com/realms/acme"]"#,
                r#"issuers = ["https://elsewhere.example.com"]"#,
            ),
            "'https://elsewhere.example.com' is not in [[issuers]]",
        ),
        (
            "a plain-http issuer",
            portcullis::config::EXAMPLE_RELAY.replace(
                r#"issuer = "https://sso.example.com/realms/acme"  #"#,
                r#"issuer = "http://sso.example.com/realms/acme"  #"#,
            ),
            "issuers[0].issuer: must be an https URL",
        ),
    ];
    for (what, text, expect) in cases {
        std::fs::write(dir.join("relay.toml"), text).unwrap();
        let err = RelayConfig::load(&dir.join("relay.toml"))
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert!(err.to_string().contains(expect), "{what}: {err}");
    }
    let gw = portcullis::config::EXAMPLE_GATEWAY
        .replace("PORTCULLIS_TUNNEL_TOKEN", "PORTCULLIS_TEST_UNSET_VAR");
    std::fs::write(dir.join("gateway.toml"), gw).unwrap();
    let err = GatewayConfig::load(&dir.join("gateway.toml"))
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("PORTCULLIS_TEST_UNSET_VAR is not set"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_gateway_run_as_separate_processes() {
    let dir = scratch_dir();
    write_certs(&dir);
    let (_relay, tunnels_addr, agents_addr, [tunnel, token, key]) = relay_process(&dir, "");
    let demo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let demo_addr = demo.local_addr().unwrap();
    tokio::spawn(portcullis::demo::DemoServer::new().serve(demo, Default::default()));
    std::fs::write(dir.join("token"), &token).unwrap();
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            r#"
[tunnel]
id = "{tunnel}"
token = {{ file = "token" }}
relays = ["{tunnels_addr}"]
server_name = "localhost"
ca = "certs/ca.crt"
[servers.crm]
url = "http://{demo_addr}/mcp"
"#
        ),
    )
    .unwrap();
    let gateway = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["gateway", "--config"])
        .arg(dir.join("gateway.toml"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gateway = Proc(gateway);

    let url = format!("http://{agents_addr}/t/{tunnel}/crm/mcp");
    let mut c = McpClient::new(&url, Some(&key));
    within("gateway to connect", async {
        while c.initialize().await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let r = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1003"}))
        .await
        .unwrap();
    assert_eq!(r["result"]["structuredContent"]["name"], "Alan Turing");

    // SIGTERM drains and exits cleanly.
    let status = gateway.terminate().await;
    assert!(status.success(), "{status:?}");
}

#[test]
fn keygen_prints_a_secret_and_its_digest() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["keygen", "agent"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap();
    let digest = text
        .lines()
        .find_map(|l| l.strip_prefix("sha256: "))
        .unwrap();
    assert_eq!(secret::digest_hex(secret), digest);
}

#[test]
fn up_names_the_busy_address_when_it_cannot_listen() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["up", "--listen"])
        .arg(addr.to_string())
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen for agents on {addr}"))
            && stderr.contains("--listen"),
        "{stderr}"
    );
}

/// Starts `portcullis up --json` on a free loopback port with `extra`
/// flags; returns it, its JSON line and its stderr (unread).
fn start_up(extra: &[&str]) -> (Proc, serde_json::Value, std::process::ChildStderr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["up", "--json", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let up = serde_json::from_str(&line).unwrap();
    (Proc(child), up, stderr)
}

#[tokio::test]
async fn up_stops_on_sigterm_and_sigint_without_warnings() {
    for signal in ["-TERM", "-INT"] {
        let (guard, up, stderr) = start_up(&[]);
        // A call first, so the tunnel has carried traffic when it stops.
        let mut c = McpClient::new(up["url"].as_str().unwrap(), up["token"].as_str());
        within("a call through up", c.initialize()).await.unwrap();
        let pid = guard.0.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
        let log = within(
            "up to stop",
            tokio::task::spawn_blocking(move || {
                std::io::read_to_string(stderr).unwrap_or_default()
            }),
        )
        .await
        .unwrap();
        drop(guard);
        assert!(log.contains("shutting down"), "{signal}: {log}");
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        assert!(warnings.is_empty(), "{signal}: {warnings:#?}");
    }
}

/// Starts `portcullis relay` on `relay.toml` in `dir` (written from
/// `limits`), returns it with its tunnel and agent addresses, and the
/// tunnel id, token and an agent key it accepts.
fn relay_process(dir: &Path, limits: &str) -> (Proc, String, String, [String; 3]) {
    let tunnel = secret::random_id();
    let token = secret::generate(secret::TUNNEL_TOKEN_PREFIX);
    let key = secret::generate(secret::AGENT_KEY_PREFIX);
    std::fs::write(
        dir.join("relay.toml"),
        format!(
            r#"
[tunnel_listener]
listen = "127.0.0.1:0"
cert = "certs/relay.crt"
key = "certs/relay.key"
[agent_listener]
listen = "127.0.0.1:0"
[limits]
{limits}
[[tunnels]]
id = "{tunnel}"
token_sha256 = "{}"
[[agents]]
subject = "ops-test"
key_sha256 = "{}"
tunnels = ["{tunnel}"]
"#,
            secret::digest_hex(&token),
            secret::digest_hex(&key)
        ),
    )
    .unwrap();
    let mut relay = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["relay", "--config"])
        .arg(dir.join("relay.toml"))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = relay.stderr.take().unwrap();
    let relay = Proc(relay);
    let mut lines = BufReader::new(stderr).lines();
    let (tunnels_addr, agents_addr) = loop {
        let line = lines.next().expect("relay exited").unwrap();
        if line.contains("relay listening") {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .unwrap()
                    .to_owned()
            };
            break (field("tunnels"), field("agents"));
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (relay, tunnels_addr, agents_addr, [tunnel, token, key])
}

/// Starts `portcullis gateway` for `tunnel` with one connection to
/// `relay`, serving `crm` from `upstream`, with `extra` config appended;
/// returns once it is connected, with its admin listener's address when
/// `extra` configures one.
fn gateway_process(
    dir: &Path,
    name: &str,
    relay: &str,
    cred: &[String; 3],
    (upstream, extra): (&str, &str),
) -> (Proc, Option<String>) {
    let [tunnel, token, _] = cred;
    std::fs::write(dir.join("token"), token).unwrap();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            r#"
[tunnel]
id = "{tunnel}"
token = {{ file = "token" }}
relays = ["{relay}"]
server_name = "localhost"
ca = "certs/ca.crt"
connections = 1
[servers.crm]
url = "http://{upstream}/mcp"
{extra}
"#
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["gateway", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let gateway = Proc(child);
    let mut lines = BufReader::new(stderr).lines();
    let (mut admin, mut connected) = (None, false);
    // The tunnel and the admin listener come up in either order.
    while !connected || (admin.is_none() && extra.contains("[admin]")) {
        let line = lines.next().expect("gateway exited").unwrap();
        if line.contains("admin listener") {
            admin = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .map(str::to_owned);
        }
        connected |= line.contains("tunnel connected");
    }
    std::thread::spawn(move || for _ in lines {});
    (gateway, admin)
}

fn signal(p: &Proc, sig: &str) {
    let sent = Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_gateway_costs_each_call_at_most_the_relays_deadline() {
    let dir = scratch_dir();
    write_certs(&dir);
    let (_relay, tunnels, agents, cred) = relay_process(
        &dir,
        "call_deadline_secs = 3\ntunnel_ping_interval_secs = 1\ntunnel_ping_timeout_secs = 2",
    );
    let demo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = demo.local_addr().unwrap().to_string();
    tokio::spawn(portcullis::demo::DemoServer::new().serve(demo, Default::default()));
    let (frozen, _) = gateway_process(&dir, "a", &tunnels, &cred, (&upstream, ""));
    let (_live, _) = gateway_process(&dir, "b", &tunnels, &cred, (&upstream, ""));
    let url = format!("http://{agents}/t/{}/crm/mcp", cred[0]);
    let ping = || {
        let url = url.clone();
        let key = cred[2].clone();
        async move {
            // A stateless ping, answered by whichever gateway gets it.
            let c = McpClient::new(&url, Some(&key));
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}}"#;
            let started = std::time::Instant::now();
            let r = c
                .send(http::Method::POST, bytes::Bytes::from(body), &[])
                .await
                .unwrap();
            (r.status.as_u16(), started.elapsed())
        }
    };
    for _ in 0..10 {
        assert_eq!(ping().await.0, 200);
    }

    // Gateway A freezes (SIGSTOP): its connection stays open and silent.
    signal(&frozen, "-STOP");
    let froze = std::time::Instant::now();
    let mut answers = Vec::new();
    while froze.elapsed() < std::time::Duration::from_secs(10) {
        // Several calls at once, so some land on the frozen connection.
        let round: Vec<_> = (0..4).map(|_| tokio::spawn(ping())).collect();
        for r in round {
            let (status, took) = r.await.unwrap();
            answers.push((froze.elapsed(), status, took));
        }
    }
    signal(&frozen, "-CONT");
    // Every call was answered within the deadline (3 s, plus slack for a
    // loaded machine): 200 from the live gateway, or a clean error.
    for (at, status, took) in &answers {
        assert!(
            *took < std::time::Duration::from_secs(6),
            "a call at {at:?} took {took:?}"
        );
        assert!([200, 502, 504].contains(status), "{status} at {at:?}");
    }
    // Some calls did go to the frozen gateway (round robin), and got the
    // clean error.
    assert!(answers.iter().any(|(_, s, _)| *s != 200), "{answers:?}");
    // Once the PINGs have taken the frozen connection out (1 s + 2 s),
    // every call goes to the live gateway.
    let late: Vec<_> = answers
        .iter()
        .filter(|(at, _, _)| *at > std::time::Duration::from_secs(6))
        .collect();
    assert!(late.len() >= 8, "{answers:?}");
    assert!(late.iter().all(|(_, s, _)| *s == 200), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_a_full_disk_exports_its_losses_and_its_chain_verifies() {
    let dir = scratch_dir();
    write_certs(&dir);
    let disk = crate::audit::SmallDisk::mount(256 * 1024);
    let audit = disk.path.join("audit");
    let (_relay, tunnels, agents, cred) = relay_process(&dir, "");
    let demo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = demo.local_addr().unwrap();
    tokio::spawn(portcullis::demo::DemoServer::new().serve(demo, Default::default()));
    let extra = format!(
        "[audit]\ndir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"",
        audit.display()
    );
    let (gateway, admin) =
        gateway_process(&dir, "g", &tunnels, &cred, (&upstream.to_string(), &extra));
    let [tunnel, _, key] = &cred;
    let admin = admin.unwrap();
    let url = format!("http://{agents}/t/{tunnel}/crm/mcp");
    let mut c = McpClient::new(&url, Some(key));
    c.initialize().await.unwrap();
    let lookup = json!({"customer_id": "C-1001"});
    for _ in 0..5 {
        c.call_tool("lookup_customer", lookup.clone())
            .await
            .unwrap();
    }
    // The disk fills; calls go on (best effort) and the losses are counted
    // where a collector or Prometheus sees them, not only on /readyz.
    disk.fill();
    for _ in 0..40 {
        let r = c
            .call_tool("lookup_customer", lookup.clone())
            .await
            .unwrap();
        assert_eq!(r["result"]["isError"], false);
    }
    let lost_on_metrics = |admin: String| async move {
        let text = reqwest_metrics(&admin).await;
        text.lines()
            .filter(|l| l.starts_with("portcullis_audit_lost"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let lost = within("the loss on /metrics", async {
        loop {
            let lost = lost_on_metrics(admin.clone()).await;
            if lost > 0.0 {
                return lost;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    println!("lost on /metrics: {lost}");
    // Room again: the running gateway writes on, and after it stops the
    // chain verifies, the loss recorded as a gap.
    disk.free();
    for _ in 0..5 {
        c.call_tool("lookup_customer", lookup.clone())
            .await
            .unwrap();
    }
    // Records still queued when the count was first read may have been lost
    // since; once writing works again the count no longer moves.
    let lost = lost_on_metrics(admin.clone()).await.max(lost);
    assert!(gateway.terminate().await.success());
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("intact"), "{report}");
    let gaps = crate::audit::gaps(&audit);
    let gap: f64 = gaps.iter().filter_map(|g| g["lost"].as_f64()).sum();
    assert_eq!(gap, lost, "{gaps:?}");
}

/// The admin listener's `/metrics` text.
async fn reqwest_metrics(admin: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn gateway_identity_tokens_need_a_key_and_replace_the_bearer_token() {
    let dir = scratch_dir();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/crm-token"), "upstream-secret\n").unwrap();
    let base = portcullis::config::EXAMPLE_GATEWAY
        .replace(
            r#"token = { env = "PORTCULLIS_TUNNEL_TOKEN" }"#,
            r#"token = { file = "secrets/crm-token" }"#,
        )
        .replace(
            r#"# identity_audience = "https://crm.internal""#,
            r#"identity_audience = "https://crm.internal""#,
        );
    let load = |text: &str| {
        std::fs::write(dir.join("gateway.toml"), text).unwrap();
        GatewayConfig::load(&dir.join("gateway.toml"))
    };
    let err = load(&base).err().unwrap().to_string();
    assert!(err.contains("needs an [identity] section"), "{err}");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    std::fs::write(dir.join("secrets/identity.key"), key.serialize_pem()).unwrap();
    let with_identity = format!(
        "{base}\n[identity]\nissuer = \"https://gateway.acme.internal\"\nkey = \"secrets/identity.key\"\n"
    );
    let err = load(&with_identity).err().unwrap().to_string();
    assert!(err.contains("bearer_token or identity_audience"), "{err}");
    let cfg = load(&with_identity.replace(r#"bearer_token = { file = "secrets/crm-token" }"#, ""))
        .unwrap_or_else(|e| panic!("{e}"));
    let jwks = cfg.identity.unwrap().jwks();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    std::fs::write(dir.join("secrets/identity.key"), "not a key").unwrap();
    let err = load(&with_identity.replace(r#"bearer_token = { file = "secrets/crm-token" }"#, ""))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("identity.key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_no_audit_keeps_no_trail_and_says_so() {
    let (guard, up, stderr) = start_up(&["--no-audit"]);
    assert!(up["audit_dir"].is_null(), "{up}");
    let mut c = McpClient::new(up["url"].as_str().unwrap(), up["token"].as_str());
    within("a call through up", c.initialize()).await.unwrap();
    drop(guard);
    let log = within(
        "up's log",
        tokio::task::spawn_blocking(move || std::io::read_to_string(stderr).unwrap_or_default()),
    )
    .await
    .unwrap();
    assert!(log.contains("--no-audit: no decision is recorded"), "{log}");
    // And the flag cannot be combined with a spool directory.
    let both = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["up", "--no-audit", "--audit-dir", "/tmp/x"])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn bench_processes_measures_every_path_as_separate_processes() {
    // Tiny sizes: this checks that every process starts, carries calls and
    // is measured, not how fast anything is.
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "bench",
            "--processes",
            "--calls",
            "20",
            "--calls-per-task",
            "4",
            "--rounds",
            "1",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "direct (load generator",
        "reference: encrypted byte tunnel",
        "relay + gateway (2 processes), no policy, no audit",
        "default chain, audit best effort",
        "default chain, audit strict",
        "`up --no-policy --no-audit`",
        "bare tunnel CPU per call / byte tunnel's",
        "`up` CPU per call / split processes'",
    ] {
        assert!(text.contains(row), "no {row:?} in:\n{text}");
    }
}
