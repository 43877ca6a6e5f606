//! The tunnel itself: credentials, scoping, offline answers, reconnects,
//! spreading, proxies, mTLS and the drain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use portcullis::client::McpClient;
use portcullis::secret;
use portcullis::tls::GeneratedCa;
use portcullis::tunnel::TunnelError;
use portcullis::tunnel::dial::{DialConfig, ProxyConfig, RelayTarget, dial};
use portcullis::up::{self, UpOptions};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn offline_tunnel_is_an_immediate_503() {
    let ca = Arc::new(GeneratedCa::new("t").unwrap());
    let cred = TunnelCred::new();
    let key = secret::generate("pk_");
    let relay = start_relay(ca, &[&cred], &[(&key, vec![cred.id.clone()])], None, None).await;
    let mut c = McpClient::new(&relay.url(&cred.id, "demo"), Some(&key));
    let started = Instant::now();
    let reply = within("offline answer", c.request("ping", json!({})))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(reply.status, 503);
    let msg = reply.last().unwrap();
    assert_eq!(msg["error"]["code"], -32000);
    let text = msg["error"]["message"].as_str().unwrap();
    assert!(
        text.contains(&cred.id) && text.contains("offline"),
        "{text}"
    );
}

#[tokio::test]
async fn wrong_tunnel_token_is_refused() {
    let ca = Arc::new(GeneratedCa::new("t").unwrap());
    let cred = TunnelCred::new();
    let other = TunnelCred::new();
    let relay = start_relay(ca.clone(), &[&cred, &other], &[], None, None).await;
    let tls = portcullis::tls::client_config(Some(&[ca.cert()]), None, &[b"http/1.1"]).unwrap();
    let target = RelayTarget {
        addr: relay.tunnel_addr.to_string(),
        server_name: "localhost".into(),
        resolved: None,
    };
    // The token of another tunnel does not open this one.
    let cfg = DialConfig {
        tunnel_id: cred.id.clone(),
        token: other.token.clone(),
        tls: tls.clone(),
        proxy: ProxyConfig::default(),
        instance: None,
    };
    match dial(&cfg, &target).await {
        Err(TunnelError::Refused { status, .. }) => assert_eq!(status, 401),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a wrong token opened the tunnel"),
    }
    // The right one does.
    let ok = DialConfig {
        token: cred.token.clone(),
        ..cfg
    };
    assert!(dial(&ok, &target).await.is_ok());
    // A relay certificate from another CA is refused by the gateway.
    let stranger = GeneratedCa::new("other").unwrap();
    let bad_tls =
        portcullis::tls::client_config(Some(&[stranger.cert()]), None, &[b"http/1.1"]).unwrap();
    let cfg = DialConfig { tls: bad_tls, ..ok };
    assert!(matches!(
        dial(&cfg, &target).await,
        Err(TunnelError::Tls { .. })
    ));
}

#[tokio::test]
async fn agent_key_for_one_tunnel_cannot_reach_another() {
    let ca = Arc::new(GeneratedCa::new("t").unwrap());
    let a = TunnelCred::new();
    let b = TunnelCred::new();
    let key_a = secret::generate("pk_");
    let relay = start_relay(
        ca.clone(),
        &[&a, &b],
        &[(&key_a, vec![a.id.clone()])],
        None,
        None,
    )
    .await;
    let demo = demo_server().await;
    let (_ga, mut sa, _, _) = start_gateway(
        &ca,
        &a,
        relay.tunnel_addr,
        demo_upstreams(demo),
        1,
        ProxyConfig::default(),
        None,
    );
    let (_gb, mut sb, _, _) = start_gateway(
        &ca,
        &b,
        relay.tunnel_addr,
        demo_upstreams(demo),
        1,
        ProxyConfig::default(),
        None,
    );
    within("tunnels", async {
        sa.wait_connected(1).await;
        sb.wait_connected(1).await
    })
    .await;

    let mut ok = McpClient::new(&relay.url(&a.id, "demo"), Some(&key_a));
    ok.initialize().await.unwrap();
    let mut denied = McpClient::new(&relay.url(&b.id, "demo"), Some(&key_a));
    let reply = denied.request("ping", json!({})).await.unwrap();
    assert_eq!(reply.status, 403);
    let mut nokey = McpClient::new(&relay.url(&a.id, "demo"), Some("pk_wrong"));
    assert_eq!(nokey.request("ping", json!({})).await.unwrap().status, 401);
}

#[tokio::test]
async fn calls_spread_over_both_connections() {
    let running = up::start(UpOptions::default()).await.unwrap();
    let mut c = McpClient::new(&running.servers["demo"], running.token.as_deref());
    c.initialize().await.unwrap();
    for _ in 0..20 {
        let r = c
            .call_tool("lookup_customer", json!({"customer_id": "C-1002"}))
            .await
            .unwrap();
        assert_eq!(r["result"]["structuredContent"]["name"], "Grace Hopper");
    }
    let per_conn = running
        .relay
        .registry()
        .streams_per_connection(&running.tunnel_id);
    assert_eq!(per_conn.len(), 2, "{per_conn:?}");
    assert!(
        per_conn.iter().all(|n| *n >= 5),
        "streams not spread: {per_conn:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn gateway_reconnects_after_relay_restart() {
    let ca = Arc::new(GeneratedCa::new("t").unwrap());
    let cred = TunnelCred::new();
    let key = secret::generate("pk_");
    let agents = [(key.as_str(), vec![cred.id.clone()])];
    let relay = start_relay(ca.clone(), &[&cred], &agents, None, None).await;
    let demo = demo_server().await;
    let (_gw, mut status, _stop, _t) = start_gateway(
        &ca,
        &cred,
        relay.tunnel_addr,
        demo_upstreams(demo),
        2,
        ProxyConfig::default(),
        None,
    );
    within("first connect", status.wait_connected(2)).await;

    let addr = relay.tunnel_addr;
    relay.shutdown.cancel();
    within("disconnect", status.wait_disconnected()).await;
    let relay2 = start_relay(ca.clone(), &[&cred], &agents, Some(addr), None).await;
    within("reconnect", relay2.relay.registry().wait_for(&cred.id, 2)).await;
    let mut c = McpClient::new(&relay2.url(&cred.id, "demo"), Some(&key));
    c.initialize().await.unwrap();
    let r = c
        .call_tool("lookup_customer", json!({"customer_id": "C-1001"}))
        .await
        .unwrap();
    assert_eq!(r["result"]["structuredContent"]["name"], "Ada Lovelace");
}

#[tokio::test]
async fn gateway_dials_through_a_connect_proxy() {
    let t = OneTunnel::start().await;
    let (proxy_addr, targets) = connect_proxy().await;
    let proxy =
        ProxyConfig::parse(Some(&format!("http://{proxy_addr}")), Some("example.com")).unwrap();
    let _gw = t
        .gateway(demo_upstreams(demo_server().await), 1, proxy)
        .await;
    assert_eq!(
        targets.lock().unwrap().as_slice(),
        [t.relay.tunnel_addr.to_string()]
    );
    t.client("demo").initialize().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_requires_a_gateway_certificate() {
    let ca = Arc::new(GeneratedCa::new("t").unwrap());
    let client_ca = GeneratedCa::new("gateways").unwrap();
    let cred = TunnelCred::new();
    let relay = start_relay(ca.clone(), &[&cred], &[], None, Some(&[client_ca.cert()])).await;
    let target = RelayTarget {
        addr: relay.tunnel_addr.to_string(),
        server_name: "localhost".into(),
        resolved: None,
    };
    let no_cert = DialConfig {
        tunnel_id: cred.id.clone(),
        token: cred.token.clone(),
        tls: portcullis::tls::client_config(Some(&[ca.cert()]), None, &[b"http/1.1"]).unwrap(),
        proxy: ProxyConfig::default(),
        instance: None,
    };
    // TLS 1.3: the relay's refusal of the missing certificate arrives as
    // the handshake ends or on the first read after it.
    let refused = dial(&no_cert, &target).await.err();
    assert!(
        matches!(
            refused,
            Some(TunnelError::Handshake(_) | TunnelError::Tls { .. })
        ),
        "{refused:?}"
    );
    let id = client_ca.issue(&["gateway.internal"]).unwrap();
    let with_cert = DialConfig {
        tls: portcullis::tls::client_config(Some(&[ca.cert()]), Some(&id), &[b"http/1.1"]).unwrap(),
        ..no_cert
    };
    assert!(dial(&with_cert, &target).await.is_ok());
}

#[tokio::test]
async fn drain_finishes_in_flight_calls() {
    let t = OneTunnel::start().await;
    let (_gw, stop, task) = t
        .gateway(
            demo_upstreams(demo_server().await),
            1,
            ProxyConfig::default(),
        )
        .await;
    let mut c = t.client("demo");
    c.initialize().await.unwrap();
    // 10 steps of 20 ms: the first event proves the call is in flight when
    // the gateway is told to stop.
    let body = c.request_body(
        "tools/call",
        json!({"name": "generate_report", "arguments": {"steps": 10},
                                                  "_meta": {"progressToken": "p"}}),
    );
    let resp = c
        .send_streaming(http::Method::POST, body, &[])
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = within("first event", body.frame()).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(first.data_ref().unwrap()).contains("notifications/progress"));
    stop.cancel();
    let rest = within("rest of the call", body.collect())
        .await
        .unwrap()
        .to_bytes();
    let rest = String::from_utf8_lossy(&rest);
    assert_eq!(rest.matches("notifications/progress").count(), 9, "{rest}");
    assert!(rest.contains("Revenue report"), "{rest}");
    within("gateway stop", task).await.unwrap();
    within("relay notices", async {
        while t.relay.relay.registry().connections(&t.cred.id) > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // New calls now find the tunnel offline.
    let mut c2 = t.client("demo");
    assert_eq!(c2.request("ping", json!({})).await.unwrap().status, 503);
}
