//! OpenTelemetry end to end, against a real OTLP receiver: spans with the
//! MCP semantic conventions in one trace from the agent to the upstream,
//! decision records as log records, metrics, the admin listener; and the
//! audit exporter losing nothing through a collector outage and a killed
//! gateway.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use portcullis::audit::export::Exporter;
use portcullis::audit::{AuditMode, Spool, SpoolConfig};
use portcullis::client::McpClient;
use portcullis::telemetry::{Protocol, Target};
use portcullis::tunnel::dial::ProxyConfig;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::otlp::{Received, Receiver, attr, free_addr, str_value};
use crate::support::*;

const CANARY: &str = "CANARY-5e1f-payload";
const AGENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AGENT_SPAN: &str = "00f067aa0ba902b7";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every string a span or log record carries, for the canary check.
fn all_text(r: &Received) -> String {
    let mut out = String::new();
    for (_, s) in &r.spans {
        out.push_str(&s.name);
        for a in &s.attributes {
            out.push_str(&format!(" {}={:?}", a.key, a.value));
        }
        out.push('\n');
    }
    for (_, l) in &r.logs {
        out.push_str(&format!("{:?} {:?}\n", l.body, l.attributes));
    }
    out
}

async fn get(url: &str) -> (u16, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let resp = client.get(url.parse().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn one_trace_from_agent_to_upstream(protocol: &str) {
    let rx = if protocol == "grpc" {
        Receiver::grpc("127.0.0.1:0".parse().unwrap()).await
    } else {
        Receiver::http("127.0.0.1:0".parse().unwrap()).await
    };
    let (rec_addr, seen) = recording_upstream().await;
    let dir = scratch();
    let audit_dir = dir.join("audit");
    let stderr_path = dir.join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "up",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--server")
        .arg(format!("rec=http://{rec_addr}/mcp"))
        .arg("--audit-dir")
        .arg(&audit_dir)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{}", rx.addr))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_SERVICE_NAME", "portcullis-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut up = Proc(child);
    let stdout = up.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let info: Value = serde_json::from_str(&within("up --json", line).await.unwrap()).unwrap();
    let token = info["token"].as_str().unwrap().to_owned();
    let admin = info["admin"].as_str().unwrap().to_owned();
    let traceparent = format!("00-{AGENT_TRACE}-{AGENT_SPAN}-01");

    // A call the default policy allows, with the agent's trace context and
    // a canary value in the arguments.
    let mut demo = McpClient::new(info["url"].as_str().unwrap(), Some(&token));
    demo.initialize().await.unwrap();
    let body = demo.request_body(
        "tools/call",
        json!({"name": "lookup_customer", "arguments": {"customer_id": "C-1001", "note": CANARY}}),
    );
    let r = demo
        .send(Method::POST, body, &[("traceparent", &traceparent)])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // One it denies (over the refund limit), with a canary too.
    let body = demo.request_body(
        "tools/call",
        json!({"name": "issue_refund", "arguments": {"customer_id": "C-1001", "amount": 5000, "reason": CANARY}}),
    );
    let r = demo
        .send(Method::POST, body, &[("traceparent", &traceparent)])
        .await
        .unwrap();
    assert!(r.last().unwrap().get("error").is_some(), "{:?}", r.last());
    // The upstream sees the trace context of the gateway's client span.
    let rec = McpClient::new(info["servers"]["rec"].as_str().unwrap(), Some(&token));
    let body = Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{CANARY}"}}}}}}"#
    ));
    rec.send(Method::POST, body, &[("traceparent", &traceparent)])
        .await
        .unwrap();

    // The admin listener.
    let (status, metrics) = get(&format!("{admin}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("mcp_server_operation_duration"),
        "{metrics}"
    );
    assert!(metrics.contains("portcullis_decisions"), "{metrics}");
    assert!(
        metrics.contains("portcullis_tunnel_connections"),
        "{metrics}"
    );
    assert_eq!(get(&format!("{admin}/healthz")).await.0, 200);
    let (status, ready) = get(&format!("{admin}/readyz")).await;
    assert_eq!(status, 200, "{ready}");

    // Stopping flushes every exporter.
    let status = up.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    rx.wait_until("spans, decision logs and metrics", 20, |r| {
        r.spans.iter().any(|(_, s)| s.name == "policy authz")
            && r.logs
                .iter()
                .any(|(_, l)| l.event_name == "portcullis.decision")
            && r.metrics
                .iter()
                .any(|m| m == "mcp.server.operation.duration")
    })
    .await;

    let got = rx.state.lock();
    let in_trace: Vec<_> = got
        .spans
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == AGENT_TRACE)
        .map(|(svc, s)| {
            assert_eq!(svc, "portcullis-test");
            s
        })
        .collect();
    let named = |name: &str, kind: i32| {
        in_trace
            .iter()
            .filter(|s| s.name == name && s.kind == kind)
            .copied()
            .collect::<Vec<_>>()
    };
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    // Relay: the agent's span is its parent.
    let relay = named("tools/call lookup_customer", SERVER)
        .into_iter()
        .find(|s| hex(&s.parent_span_id) == AGENT_SPAN)
        .unwrap_or_else(|| {
            let all: Vec<_> = got
                .spans
                .iter()
                .map(|(_, s)| {
                    (
                        s.name.clone(),
                        s.kind,
                        hex(&s.trace_id),
                        hex(&s.span_id),
                        hex(&s.parent_span_id),
                    )
                })
                .collect();
            panic!("no relay span under the agent's; all spans: {all:#?}")
        });
    for (k, v) in [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "lookup_customer"),
        ("gen_ai.operation.name", "execute_tool"),
        ("network.transport", "tcp"),
        ("jsonrpc.request.id", "2"),
    ] {
        assert_eq!(attr(&relay.attributes, k).as_deref(), Some(v), "relay {k}");
    }
    assert!(attr(&relay.attributes, "mcp.session.id").is_some());
    // Gateway: a child of the relay's span, across the tunnel.
    let gateway = named("tools/call lookup_customer", SERVER)
        .into_iter()
        .find(|s| s.parent_span_id == relay.span_id)
        .expect("gateway span under the relay span");
    assert_eq!(
        attr(&gateway.attributes, "mcp.protocol.version").as_deref(),
        Some("2025-11-25")
    );
    // Plugins: children of the gateway's span.
    let plugin = in_trace
        .iter()
        .find(|s| s.name == "policy authz" && s.parent_span_id == gateway.span_id)
        .expect("plugin span under the gateway span");
    assert_eq!(
        attr(&plugin.attributes, "portcullis.decision").as_deref(),
        Some("allow")
    );
    // Upstream: a client span under the gateway's.
    let client = named("tools/call lookup_customer", CLIENT)
        .into_iter()
        .find(|s| s.parent_span_id == gateway.span_id)
        .expect("upstream client span");
    assert_eq!(
        attr(&client.attributes, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    // The denied call: its gateway span says why.
    let denied = named("tools/call issue_refund", SERVER)
        .into_iter()
        .find(|s| attr(&s.attributes, "portcullis.outcome").as_deref() == Some("denied"))
        .expect("denied gateway span");
    assert!(attr(&denied.attributes, "error.type").is_some());
    assert_eq!(
        denied.status.as_ref().map(|s| s.code),
        Some(2),
        "status ERROR"
    );

    // The upstream got the trace context of the gateway's client span.
    let rec_client = named("tools/call echo", CLIENT)
        .into_iter()
        .next()
        .expect("client span for the recording upstream");
    let tp = seen
        .all()
        .iter()
        .find_map(|(h, _)| h.get("traceparent").map(|v| v.to_str().unwrap().to_owned()))
        .expect("upstream received a traceparent");
    assert_eq!(
        tp,
        format!("00-{AGENT_TRACE}-{}-01", hex(&rec_client.span_id))
    );

    // Decision records as log records, each correlated with the span that
    // decided: the gateway's (policy chain) and the relay's (its own record
    // of the agent request).
    let decision_under = |span: &opentelemetry_proto::tonic::trace::v1::Span| {
        got.logs
            .iter()
            .map(|(_, l)| l)
            .find(|l| {
                l.event_name == "portcullis.decision"
                    && attr(&l.attributes, "gen_ai.tool.name").as_deref() == Some("lookup_customer")
                    && attr(&l.attributes, "portcullis.direction").as_deref() == Some("to-server")
                    && l.span_id == span.span_id
            })
            .cloned()
    };
    let relay_decision = decision_under(relay).expect("the relay's record, under its span");
    assert_eq!(hex(&relay_decision.trace_id), AGENT_TRACE);
    let decision = decision_under(gateway).expect("the gateway's record, under its span");
    assert_eq!(hex(&decision.trace_id), AGENT_TRACE);
    assert!(attr(&decision.attributes, "portcullis.audit.seq").is_some());
    let body = str_value(decision.body.as_ref()).unwrap();
    let line: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(line["body"]["outcome"], "forwarded");

    // No argument or result value anywhere: spans, log records, the spool,
    // the process log (at debug level).
    assert!(!all_text(&got).contains(CANARY), "canary in telemetry");
    assert!(
        !spool_text(&audit_dir).contains(CANARY),
        "canary in the spool"
    );
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(!stderr.contains(CANARY), "canary in the log");
    assert!(
        seen.all()
            .iter()
            .any(|(_, b)| String::from_utf8_lossy(b).contains(CANARY)),
        "the canary did travel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_agent_to_upstream_over_grpc() {
    one_trace_from_agent_to_upstream("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_agent_to_upstream_over_http() {
    one_trace_from_agent_to_upstream("http/protobuf").await;
}

/// Sequence number → hashes received for it.
fn by_seq(r: &Received) -> BTreeMap<u64, Vec<String>> {
    let mut m: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (_, l) in &r.logs {
        let seq: u64 = attr(&l.attributes, "portcullis.audit.seq")
            .unwrap()
            .parse()
            .unwrap();
        m.entry(seq)
            .or_default()
            .push(attr(&l.attributes, "portcullis.audit.hash").unwrap());
    }
    m
}

/// Every sequence number 1..=last arrived, and copies are identical.
fn assert_complete(r: &Received, last: u64) {
    let m = by_seq(r);
    let missing: Vec<u64> = (1..=last).filter(|s| !m.contains_key(s)).collect();
    assert!(missing.is_empty(), "missing sequence numbers: {missing:?}");
    for (seq, hashes) in &m {
        assert!(
            hashes.iter().all(|h| *h == hashes[0]),
            "record {seq} arrived with different contents"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_for_1000_calls_then_back_loses_nothing() {
    let t = OneTunnel::start().await;
    let demo = demo_server().await;
    let (gw, _stop, _task) = t
        .gateway(demo_upstreams(demo), 1, ProxyConfig::default())
        .await;
    let dir = scratch();
    let spool = Arc::new(Spool::open(SpoolConfig::new(dir.clone(), AuditMode::Strict)).unwrap());
    gw.set_audit(spool.clone());
    // The collector's address, with nothing listening yet.
    let addr = free_addr().await;
    let target = Target {
        protocol: Protocol::Grpc,
        endpoint: format!("http://{addr}"),
        headers: vec![],
        timeout: Duration::from_secs(2),
    };
    let stop = CancellationToken::new();
    let exporter = Exporter::start(
        &spool,
        &target,
        &opentelemetry_sdk::Resource::builder_empty().build(),
        stop.clone(),
    )
    .unwrap();

    let mut c = t.client("demo");
    c.initialize().await.unwrap();
    for i in 0..1000 {
        let r = c
            .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert!(r.get("result").is_some());
    }
    spool.flush().await.unwrap();
    let last = *spool.durable().borrow();
    assert!(last >= 2000, "two decisions per call, got {last}");

    let rx = Receiver::grpc(addr).await;
    rx.wait_until("every record after the outage", 60, |r| {
        by_seq(r).len() as u64 >= last
    })
    .await;
    assert_complete(&rx.state.lock(), last);
    // The cursor records the acknowledgement, for a restart to resume from.
    let mut acked = exporter.acked.clone();
    within("the exporter acknowledges", acked.wait_for(|s| *s >= last))
        .await
        .unwrap();
    assert!(portcullis::audit::export::load_cursor(&dir).seq >= last);
    stop.cancel();
    within("exporter stops", exporter.task).await.unwrap();
}

fn write_gateway_config(dir: &Path, t: &OneTunnel, demo: std::net::SocketAddr) -> PathBuf {
    std::fs::write(dir.join("ca.crt"), t.ca.pem()).unwrap();
    std::fs::write(dir.join("token"), &t.cred.token).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[tunnel]
id = "{}"
token = {{ file = "token" }}
relays = ["{}"]
server_name = "localhost"
ca = "ca.crt"
connections = 1

[audit]
dir = "audit"
mode = "strict"

[servers.demo]
url = "http://{demo}/mcp"
"#,
            t.cred.id, t.relay.tunnel_addr
        ),
    )
    .unwrap();
    path
}

fn spawn_gateway(config: &Path, collector: std::net::SocketAddr) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["gateway", "--config"])
            .arg(config)
            .env(
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                format!("http://{collector}/v1/logs"),
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

async fn wait_tunnel(t: &OneTunnel, up: bool) {
    within(
        "tunnel state",
        t.relay
            .relay
            .registry()
            .wait_until(&t.cred.id, |n| (n > 0) == up),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_mid_run_resumes_and_nothing_is_missing() {
    let t = OneTunnel::start().await;
    let demo = demo_server().await;
    let rx = Receiver::http("127.0.0.1:0".parse().unwrap()).await;
    let dir = scratch();
    let config = write_gateway_config(&dir, &t, demo);
    let mut gw = spawn_gateway(&config, rx.addr);
    wait_tunnel(&t, true).await;

    // Calls keep coming while the gateway is killed and restarted.
    let (ok_tx, mut ok) = tokio::sync::watch::channel(0u64);
    let done = CancellationToken::new();
    let mut c = t.client("demo");
    c.initialize().await.unwrap();
    let caller = {
        let done = done.clone();
        tokio::spawn(async move {
            for _ in 0..5000 {
                if done.is_cancelled() {
                    return;
                }
                // The restarted gateway knows no session from before it: the
                // client initializes again, as MCP clients do on a 404.
                if c.session.is_none() && c.initialize().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                match c
                    .call_tool("lookup_customer", json!({"customer_id": "C-1002"}))
                    .await
                {
                    Ok(r) if r.get("result").is_some() => ok_tx.send_modify(|n| *n += 1),
                    Ok(r) if r["error"]["message"] == "Session not found" => c.session = None,
                    // The tunnel is down: try again shortly, not in a hot loop.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
    };
    within("calls before the kill", ok.wait_for(|n| *n >= 150))
        .await
        .unwrap();
    gw.0.kill().unwrap(); // SIGKILL: no drain, no flush
    gw.0.wait().unwrap();
    wait_tunnel(&t, false).await;
    let before_restart = *ok.borrow();
    let _gw2 = spawn_gateway(&config, rx.addr);
    wait_tunnel(&t, true).await;
    within(
        "calls after the restart",
        ok.wait_for(|n| *n >= before_restart + 150),
    )
    .await
    .unwrap();
    done.cancel();
    caller.await.unwrap();
    let succeeded = *ok.borrow();

    // Everything in the spool reaches the collector; the chain is intact
    // (the restart is a `start` record in it).
    let spool_dir = dir.join("audit");
    let v = portcullis::audit::verify::verify(&spool_dir, None).unwrap();
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    let last = v.last_seq;
    rx.wait_until("every spooled record", 60, |r| {
        by_seq(r).len() as u64 >= last
    })
    .await;
    let got = rx.state.lock();
    assert_complete(&got, last);
    let starts = got
        .logs
        .iter()
        .filter(|(_, l)| l.event_name == "portcullis.audit.start")
        .count();
    assert!(starts >= 2, "the restart is in the exported chain");
    // Strict mode: every call that succeeded has its forwarded record.
    let forwarded_calls = spool_text(&spool_dir)
        .lines()
        .filter(|l| {
            l.contains(r#""direction":"to-server""#)
                && l.contains(r#""method":"tools/call""#)
                && l.contains(r#""outcome":"forwarded""#)
        })
        .count() as u64;
    assert!(
        forwarded_calls >= succeeded,
        "{forwarded_calls} records for {succeeded} successful calls"
    );
}
