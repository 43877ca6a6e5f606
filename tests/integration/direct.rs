//! A gateway serving agents on a listener of its own, no relay (issue 18,
//! item 5): behind another vendor's tunnel connector it is the policy and
//! audit layer. Real `portcullis gateway` processes, real TLS, the demo CRM
//! as the upstream, the shipped default policy, the Python SDK as a client
//! through a TCP forwarder standing in for the connector. What a relay
//! checks is checked here too: keys, their tunnel, `Host`, sessions bound to
//! their agent; what the gateway enforces is enforced: the chain, the audit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use portcullis::config::gateway::GatewayConfig;
use portcullis::secret;
use portcullis::tls::GeneratedCa;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Two agents' keys: one in group `support`, one in none.
struct Keys {
    support: String,
    outsider: String,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            support: secret::generate(secret::AGENT_KEY_PREFIX),
            outsider: secret::generate(secret::AGENT_KEY_PREFIX),
        }
    }
}

/// A gateway config with only an agent listener (`listener` is its extra
/// lines: TLS or not), the demo upstream at `demo`, the default policy.
fn direct_config(dir: &Path, keys: &Keys, demo: SocketAddr, listener: &str) -> PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"
policy = "{policy}"
[agent_listener]
listen = "127.0.0.1:0"
tunnel = "corp"
{listener}
[[agents]]
subject = "support-agent"
groups = ["support"]
key_sha256 = "{support}"
[[agents]]
subject = "outsider"
key_sha256 = "{outsider}"
[audit]
dir = "audit"
[servers.demo]
url = "http://{demo}/mcp"
"#,
            policy = repo("policies/default.toml").display(),
            support = secret::digest_hex(&keys.support),
            outsider = secret::digest_hex(&keys.outsider),
        ),
    )
    .unwrap();
    path
}

/// Starts `portcullis gateway` and returns it with its agent address.
async fn start(config: &Path) -> (Daemon, SocketAddr) {
    let d = Daemon::spawn(&["gateway", "--config", config.to_str().unwrap()]);
    let needle = "gateway serving agents on its own listener";
    d.wait_for("the agent listener", needle, 1).await;
    let addr = d
        .field(needle, "agents")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no agents= in\n{}", d.text()));
    (d, addr)
}

/// What one HTTPS exchange got.
struct Got {
    status: StatusCode,
    session: Option<String>,
    body: Value,
}

/// One POST over TLS (verified against `ca` as `localhost`) on a
/// connection of its own.
async fn post(
    addr: SocketAddr,
    ca: &GeneratedCa,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Got {
    let tls = portcullis::tls::client_config(Some(&[ca.cert()]), None, &[b"http/1.1"]).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::post(path);
    if !headers.iter().any(|(k, _)| *k == "host") {
        req = req.header("host", format!("localhost:{}", addr.port()));
    }
    req = req
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = within("an answer", send.send_request(req)).await.unwrap();
    let status = resp.status();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    // A JSON body, or the last `data:` of an SSE one.
    let body = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .rev()
            .filter_map(|l| l.strip_prefix("data:"))
            .find_map(|d| serde_json::from_str(d.trim()).ok())
            .unwrap_or(Value::Null)
    });
    Got {
        status,
        session,
        body,
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "direct-test", "version": "0"}}})
}

fn call(name: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
           "params": {"name": name, "arguments": args}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_serves_agents_itself_with_the_relays_checks_its_chain_and_its_audit() {
    let dir = scratch();
    let ca = GeneratedCa::new("direct CA").unwrap();
    let id = ca.issue(&["localhost"]).unwrap();
    std::fs::write(dir.join("agents.crt"), id.chain_pem()).unwrap();
    std::fs::write(dir.join("agents.key"), id.key_pem()).unwrap();
    let keys = Keys::new();
    let demo = demo_server().await;
    let config = direct_config(
        &dir,
        &keys,
        demo,
        "cert = \"agents.crt\"\nkey = \"agents.key\"",
    );
    let (mut gateway, addr) = start(&config).await;
    let url = "/t/corp/demo/mcp";
    let support = format!("Bearer {}", keys.support);
    let outsider = format!("Bearer {}", keys.outsider);
    let auth = |k: &str| [("authorization", k.to_owned())];

    // The support agent: a session, a lookup, its card masked by the chain.
    let [(h, v)] = auth(&support);
    let opened = post(addr, &ca, url, &[(h, &v)], &initialize()).await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let session = opened.session.expect("a session id");
    let lookup = call("lookup_customer", json!({"customer_id": "C-1001"}));
    let in_session = [(h, v.as_str()), ("mcp-session-id", session.as_str())];
    let got = post(addr, &ca, url, &in_session, &lookup).await;
    assert_eq!(got.status, 200);
    let result = got.body["result"].to_string();
    assert!(result.contains("Ada Lovelace"), "{result}");
    assert!(
        !result.contains("4111 1111 1111 1111"),
        "the card left unredacted: {result}"
    );
    // Erasure is refused by the policy, like a tool that does not exist.
    let erase = call("delete_customer", json!({"customer_id": "C-1001"}));
    let refused = post(addr, &ca, url, &in_session, &erase).await;
    assert!(refused.body["error"].is_object(), "{}", refused.body);

    // No key, a wrong key: 401, and nothing reaches the gateway's chain.
    let none = post(addr, &ca, url, &[], &lookup).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let wrong = post(
        addr,
        &ca,
        url,
        &[("authorization", "Bearer pck_wrong")],
        &lookup,
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // Another agent with a valid key cannot use the support agent's
    // session: it does not exist for it.
    let [(h2, v2)] = auth(&outsider);
    let stolen = post(
        addr,
        &ca,
        url,
        &[(h2, v2.as_str()), ("mcp-session-id", session.as_str())],
        &lookup,
    )
    .await;
    assert_eq!(stolen.status, StatusCode::NOT_FOUND, "{}", stolen.body);
    // Keys name one tunnel; a Host not ours is the DNS-rebinding refusal.
    let other = post(addr, &ca, "/t/elsewhere/demo/mcp", &[(h, &v)], &lookup).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let rebound = post(
        addr,
        &ca,
        url,
        &[(h, v.as_str()), ("host", "attacker.example")],
        &initialize(),
    )
    .await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN);
    // The outsider is in no group the policy allows.
    let opened = post(addr, &ca, url, &[(h2, &v2)], &initialize()).await;
    let theirs = opened.session.expect("the outsider's own session");
    let denied = post(
        addr,
        &ca,
        url,
        &[(h2, v2.as_str()), ("mcp-session-id", theirs.as_str())],
        &lookup,
    )
    .await;
    assert!(denied.body["error"].is_object(), "{}", denied.body);

    // A plain-HTTP request to the TLS listener gets no MCP answer.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"POST /t/corp/demo/mcp HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = within("the plain-text refusal", plain.read_to_end(&mut answer)).await;
    assert!(!String::from_utf8_lossy(&answer).contains("jsonrpc"));

    gateway.terminate().await;
    // One chain: the front end's refusals and the gateway's decisions.
    let audit = dir.join("audit");
    assert_audit_verifies("the gateway's spool", &audit);
    let records: Vec<Value> = spool_text(&audit)
        .lines()
        .filter_map(|l| serde_json::from_str(l.rsplit_once('\t')?.0).ok())
        .collect();
    let text = serde_json::to_string(&records).unwrap();
    assert!(
        text.contains("(unauthenticated)"),
        "no 401 recorded: {text}"
    );
    assert!(text.contains("support-agent") && text.contains("outsider"));
    assert!(text.contains("lookup_customer") && text.contains("delete_customer"));
    assert!(
        !text.contains("4111 1111 1111 1111"),
        "a payload value in the audit trail"
    );
}

/// Bytes copied both ways to `to`: a vendor's tunnel connector forwarding
/// to a private HTTP MCP server, inspecting nothing.
async fn connector(to: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut agent, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut gw) = TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut agent, &mut gw).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_calls_through_a_connector_in_front_of_the_gateways_own_listener() {
    let dir = scratch();
    let keys = Keys::new();
    let demo = demo_server().await;
    // Plain HTTP on loopback: the connector terminates TLS next to it.
    let config = direct_config(&dir, &keys, demo, "");
    let (mut gateway, addr) = start(&config).await;
    let front = connector(addr).await;
    let url = format!("http://localhost:{}/t/corp/demo/mcp", front.port());
    let python = require(peers_dir().join("venv/bin/python"));
    let run = |key: String| {
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(repo("tests/peers/py_client.py"))
            .args(["--url", &url, "--token", &key, "--tool", "lookup_customer"])
            .args(["--args", r#"{"customer_id": "C-1002"}"#])
            .kill_on_drop(true);
        async move { within("the Python SDK client", cmd.output()).await.unwrap() }
    };
    let out = run(keys.support.clone()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tools: Vec<&str> = line["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // The listing went through the chain on its way out: erasure is hidden.
    assert!(tools.contains(&"lookup_customer"), "{tools:?}");
    assert!(!tools.iter().any(|t| t.starts_with("delete")), "{tools:?}");
    let result = line["result"].to_string();
    assert!(result.contains("Grace Hopper"), "{result}");
    assert!(!result.contains("5500 0000 0000 0004"), "{result}");
    // A key the gateway does not know: the SDK fails, clearly.
    let out = run(secret::generate(secret::AGENT_KEY_PREFIX)).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    gateway.terminate().await;
}

#[test]
fn an_agent_listener_is_configured_safely_or_refused() {
    let dir = scratch();
    let keys = Keys::new();
    let demo: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let base = std::fs::read_to_string(direct_config(&dir, &keys, demo, "")).unwrap();
    let load = |text: &str| {
        std::fs::write(dir.join("case.toml"), text).unwrap();
        GatewayConfig::load(&dir.join("case.toml"))
    };
    let ok = load(&base).unwrap_or_else(|e| panic!("{e}"));
    assert!(ok.tunnel.is_none());
    let direct = ok.direct.expect("the agent listener");
    assert_eq!(direct.tunnel, "corp");
    assert!(direct.tls.is_none());
    assert_eq!(
        direct.settings.call_deadline,
        portcullis::limits::RELAY_CALL_DEADLINE
    );
    // Upstreams given longer than the default: the listener waits as long.
    let slow = load(&base.replace("[audit]", "[limits]\ncall_timeout_secs = 120\n[audit]"))
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = slow
        .direct
        .expect("the agent listener")
        .settings
        .call_deadline;
    assert_eq!(deadline, std::time::Duration::from_secs(120));
    let cases = [
        (
            "plain text off loopback",
            base.replace("127.0.0.1:0", "0.0.0.0:0"),
            "insecure_plaintext",
        ),
        (
            "no tunnel id and no [tunnel]",
            base.replace("tunnel = \"corp\"\n", ""),
            "agent_listener.tunnel",
        ),
        (
            "no agents",
            base.split("[[agents]]").next().unwrap().to_owned()
                + &base[base.find("[audit]").unwrap()..],
            "[[agents]]",
        ),
        (
            "a cert without its key",
            base.replace("tunnel = \"corp\"", "tunnel = \"corp\"\ncert = \"a.crt\""),
            "give both cert and key",
        ),
        (
            "keys with no listener for them",
            base.replace(
                "[agent_listener]\nlisten = \"127.0.0.1:0\"\ntunnel = \"corp\"\n",
                "",
            ),
            "[[agents]] keys are for the gateway's own [agent_listener]",
        ),
    ];
    for (what, text, expect) in cases {
        let err = load(&text)
            .err()
            .unwrap_or_else(|| panic!("{what} accepted"));
        assert!(err.to_string().contains(expect), "{what}: {err}");
    }
    // Neither a tunnel nor a listener: nothing would ever reach the gateway.
    let nothing = base[..base.find("[agent_listener]").unwrap()].to_owned()
        + &base[base.find("[audit]").unwrap()..];
    let err = load(&nothing).err().expect("a gateway nobody can reach");
    assert!(err.to_string().contains("[agent_listener]"), "{err}");
    // Plain text off loopback, when asked for by name.
    let asked = base.replace("127.0.0.1:0", "0.0.0.0:0").replace(
        "tunnel = \"corp\"",
        "tunnel = \"corp\"\ninsecure_plaintext = true",
    );
    load(&asked).unwrap_or_else(|e| panic!("{e}"));
}
