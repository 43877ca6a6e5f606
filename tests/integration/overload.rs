//! Overload and faults on the tunnel: a saturated tunnel queues within
//! bounds and then answers 503 with `Retry-After`; calls whose agents went
//! away are never forwarded and cannot close the tunnel; a frozen gateway
//! costs each call at most the relay's deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::client::McpClient;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::support::*;

/// An upstream that holds every call until [`Held::release`], counting
/// what it received.
struct Held {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    open: watch::Sender<bool>,
}

impl Held {
    async fn start() -> Held {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let (open, gate) = watch::channel(false);
        let count = received.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (count, gate) = (count.clone(), gate.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (count, mut gate) = (count.clone(), gate.clone());
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            count.fetch_add(1, Ordering::SeqCst);
                            let v: serde_json::Value =
                                serde_json::from_slice(&body).unwrap_or_default();
                            let _ = gate.wait_for(|open| *open).await;
                            let reply = json!({"jsonrpc": "2.0", "id": v["id"], "result": {}});
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(reply.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Held {
            addr,
            received,
            open,
        }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    fn release(&self) {
        self.open.send_replace(true);
    }

    fn upstreams(&self) -> std::collections::HashMap<String, portcullis::gateway::Upstream> {
        std::collections::HashMap::from([(
            "held".to_owned(),
            http_upstream("held", &format!("http://{}/mcp", self.addr)),
        )])
    }
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    within(what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

fn spawn_ping(c: &McpClient) -> tokio::task::JoinHandle<(u16, Option<String>, String)> {
    let c = c.clone();
    tokio::spawn(async move {
        let resp = c
            .send(
                http::Method::POST,
                Bytes::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
                &[],
            )
            .await
            .unwrap();
        let retry = resp
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (
            resp.status.as_u16(),
            retry,
            String::from_utf8_lossy(&resp.body).into_owned(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_tunnel_queues_within_bounds_then_answers_503_with_retry_after() {
    let t = OneTunnel::start_with(|s| {
        s.queue.calls = 6;
        s.queue.wait = Duration::from_millis(1500);
    })
    .await;
    let held = Held::start().await;
    let (_gw, _stop, _task) = t.gateway_serving(held.upstreams(), 1, 4).await;
    let registry = t.relay.relay.registry().clone();
    let c = t.client("held");

    // Every stream in use, then the queue full.
    let in_flight: Vec<_> = (0..4).map(|_| spawn_ping(&c)).collect();
    until("four calls at the upstream", || held.received() == 4).await;
    let queued: Vec<_> = (0..6).map(|_| spawn_ping(&c)).collect();
    until("six calls queued", || registry.queued(&t.cred.id) == 6).await;

    // Beyond the queue: refused at once, with Retry-After.
    let started = Instant::now();
    let (status, retry, body) = spawn_ping(&c).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, 503);
    assert_eq!(retry.as_deref(), Some("1"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], -32000);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("overloaded"), "{message}");

    // Queued calls that wait too long get the same answer; none of them
    // ever reached the upstream.
    for q in queued {
        let (status, retry, _) = q.await.unwrap();
        assert_eq!((status, retry.as_deref()), (503, Some("1")));
    }
    assert_eq!(registry.queued(&t.cred.id), 0);
    assert_eq!(held.received(), 4);

    // The calls in flight were not disturbed, and the tunnel serves on.
    held.release();
    for f in in_flight {
        assert_eq!(f.await.unwrap().0, 200);
    }
    assert_eq!(registry.open_streams(&t.cred.id), 0);
    assert_eq!(spawn_ping(&c).await.unwrap().0, 200);
    assert_eq!(registry.connections(&t.cred.id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_calls_hold_at_most_the_byte_bound() {
    let t = OneTunnel::start_with(|s| {
        s.queue.bytes = 3 * 1024 * 1024;
    })
    .await;
    let held = Held::start().await;
    let (_gw, _stop, _task) = t.gateway_serving(held.upstreams(), 1, 1).await;
    let registry = t.relay.relay.registry().clone();
    let c = t.client("held");
    let big = |c: &McpClient| {
        let mut c = c.clone();
        let pad = "x".repeat(1024 * 1024);
        tokio::spawn(async move {
            c.request(
                "tools/call",
                json!({"name": "store", "arguments": {"blob": pad}}),
            )
            .await
            .unwrap()
            .status
        })
    };
    let first = big(&c);
    until("one call at the upstream", || held.received() == 1).await;
    // Two 1 MiB calls fit the 3 MiB bound; the third does not.
    let waiting: Vec<_> = (0..2).map(|_| big(&c)).collect();
    until("two calls queued", || registry.queued(&t.cred.id) == 2).await;
    assert_eq!(big(&c).await.unwrap(), 503);
    held.release();
    assert_eq!(first.await.unwrap(), 200);
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    assert_eq!(held.received(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_whose_agents_went_away_are_not_forwarded_and_cannot_close_the_tunnel() {
    let t = OneTunnel::start().await;
    let held = Held::start().await;
    let (_gw, _stop, _task) = t.gateway_serving(held.upstreams(), 2, 200).await;
    let registry = t.relay.relay.registry().clone();
    let c = t.client("held");

    // 400 streams in flight on two connections, 300 more queued.
    let in_flight: Vec<_> = (0..400).map(|_| spawn_ping(&c)).collect();
    until("400 calls at the upstream", || held.received() == 400).await;
    let queued: Vec<_> = (0..300).map(|_| spawn_ping(&c)).collect();
    until("300 calls queued", || registry.queued(&t.cred.id) == 300).await;

    // The queued calls' agents go away: the relay drops them while every
    // stream is still taken, so none can be forwarded later.
    for q in &queued {
        q.abort();
    }
    until("the queue emptied", || registry.queued(&t.cred.id) == 0).await;
    // Then every agent in flight goes away at once: 400 streams reset
    // together, which must not trip HTTP/2's rapid-reset guard.
    for f in &in_flight {
        f.abort();
    }
    until("the streams released", || {
        registry.open_streams(&t.cred.id) == 0
    })
    .await;
    held.release();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        held.received(),
        400,
        "a call whose agent left was forwarded"
    );

    // Agents that leave as soon as they have sent: streams reset in bursts
    // before the gateway has even taken them.
    for _ in 0..20 {
        let burst: Vec<_> = (0..100).map(|_| spawn_ping(&c)).collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        for b in &burst {
            b.abort();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Nothing queued reached the upstream, the tunnel is whole, and new
    // calls are served.
    assert_eq!(registry.connections(&t.cred.id), 2);
    let before = held.received();
    let after: Vec<_> = (0..50).map(|_| spawn_ping(&c)).collect();
    for a in after {
        assert_eq!(a.await.unwrap().0, 200);
    }
    assert_eq!(held.received(), before + 50);
}
