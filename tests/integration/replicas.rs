//! Gateway replicas: several gateways serve one tunnel; every relay spreads
//! new sessions over them and pins each session's requests to the gateway
//! that owns it, reading the owner from the session id alone; a session
//! whose gateway left ends with the spec's 404 and a new one opens on a
//! gateway that is still there.

use std::collections::HashSet;
use std::sync::Arc;

use http::StatusCode;
use portcullis::client::McpClient;
use portcullis::config::gateway::default_limits;
use portcullis::gateway::Gateway;
use portcullis::secret;
use portcullis::session::owner::{Instance, stamped};
use portcullis::tls::GeneratedCa;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::*;

struct Replica {
    gateway: Arc<Gateway>,
    stop: CancellationToken,
}

/// A gateway for `cred` serving the demo upstream at `demo`, with one
/// tunnel connection to each of `relays`.
async fn replica(
    ca: &GeneratedCa,
    cred: &TunnelCred,
    relays: &[TestRelay],
    demo: std::net::SocketAddr,
) -> Replica {
    let gateway = Gateway::new(demo_upstreams(demo), default_limits());
    let stop = connect_gateway(ca, cred, relays, &gateway).await;
    Replica { gateway, stop }
}

fn owner(c: &McpClient) -> Instance {
    stamped(c.session.as_deref().expect("a session id")).expect("a stamped session id")
}

async fn lookup(c: &mut McpClient) -> (StatusCode, serde_json::Value) {
    let reply = c
        .request(
            "tools/call",
            json!({"name": "lookup_customer", "arguments": {"customer_id": "C-1001"}}),
        )
        .await
        .unwrap();
    (reply.status, reply.last().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stay_on_their_gateway_through_every_relay_and_end_cleanly_when_it_leaves() {
    let ca = Arc::new(GeneratedCa::new("replicas CA").unwrap());
    let cred = TunnelCred::new();
    let key = secret::generate(secret::AGENT_KEY_PREFIX);
    let agents = [(key.as_str(), vec![cred.id.clone()])];
    let mut relays = Vec::new();
    for _ in 0..2 {
        relays.push(start_relay(ca.clone(), &[&cred], &agents, None, None).await);
    }
    let demo = demo_server().await;
    let a = replica(&ca, &cred, &relays, demo).await;
    let b = replica(&ca, &cred, &relays, demo).await;
    assert_ne!(a.gateway.instance(), b.gateway.instance());
    for r in &relays {
        within(
            "both gateways at every relay",
            r.relay.registry().wait_for(&cred.id, 2),
        )
        .await;
    }
    let client = |relay: usize, session: Option<&str>| {
        let mut c = McpClient::new(&relays[relay].url(&cred.id, "demo"), Some(&key));
        c.session = session.map(str::to_owned);
        c
    };

    // New sessions go to both gateways.
    let mut sessions = Vec::new();
    let mut owners = HashSet::new();
    for i in 0..20 {
        let mut c = client(i % 2, None);
        within("initialize", c.initialize()).await.unwrap();
        owners.insert(owner(&c));
        sessions.push(c.session.clone().unwrap());
        if owners.len() == 2 && sessions.len() >= 6 {
            break;
        }
    }
    assert_eq!(
        owners,
        HashSet::from([a.gateway.instance(), b.gateway.instance()]),
        "new sessions were not spread over both gateways"
    );

    // Each session's calls, alternating between the relays, all reach the
    // gateway that owns it: with four connections and no pinning, about
    // half would land on the other gateway and get 404.
    for s in &sessions {
        for i in 0..6 {
            let (status, msg) =
                within("a call in the session", lookup(&mut client(i % 2, Some(s)))).await;
            assert_eq!(status, StatusCode::OK, "call {i} of {s}: {msg}");
            assert!(msg.get("result").is_some(), "call {i} of {s}: {msg}");
        }
    }

    // Gateway a leaves. Its sessions get the spec's 404 at once, through
    // either relay, and the agent's new session opens on b; b's sessions
    // carry on.
    a.stop.cancel();
    for r in &relays {
        within(
            "a's connections gone",
            r.relay.registry().wait_until(&cred.id, |n| n == 1),
        )
        .await;
    }
    for s in &sessions {
        let mine = stamped(s) == Some(b.gateway.instance());
        for relay in 0..2 {
            let (status, msg) =
                within("a call after a left", lookup(&mut client(relay, Some(s)))).await;
            if mine {
                assert_eq!(status, StatusCode::OK, "{msg}");
            } else {
                assert_eq!(status, StatusCode::NOT_FOUND, "{msg}");
            }
        }
        if !mine {
            let mut again = client(0, None);
            within("re-initialize", again.initialize()).await.unwrap();
            assert_eq!(owner(&again), b.gateway.instance());
            let (status, msg) = lookup(&mut again).await;
            assert_eq!(status, StatusCode::OK, "{msg}");
        }
    }
    b.stop.cancel();
}
