//! The relay's view of live tunnel connections, and how it spreads streams
//! over them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::client::conn::http2::SendRequest;
use tokio::sync::watch;

use crate::body::Body;

/// One live tunnel connection.
#[derive(Clone)]
struct Conn {
    id: u64,
    sender: SendRequest<Body>,
    streams: Arc<AtomicU64>,
}

#[derive(Default)]
struct Tunnel {
    conns: Vec<Conn>,
    next: usize,
}

/// Live connections per tunnel id.
pub struct Registry {
    tunnels: Mutex<HashMap<String, Tunnel>>,
    next_conn: AtomicU64,
    changed: watch::Sender<u64>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            tunnels: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            changed: watch::channel(0).0,
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tunnel>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every update is a single push or retain), so poison is ignored.
        self.tunnels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    /// Adds a connection; returns its id for [`Registry::remove`].
    pub fn add(&self, tunnel: &str, sender: SendRequest<Body>) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(tunnel.to_owned())
            .or_default()
            .conns
            .push(Conn {
                id,
                sender,
                streams: Arc::new(AtomicU64::new(0)),
            });
        self.bump();
        crate::telemetry::metrics::get()
            .tunnel_connections
            .add(1, &relay_attrs(tunnel));
        id
    }

    /// Removes a connection that ended.
    pub fn remove(&self, tunnel: &str, id: u64) {
        let mut map = self.lock();
        if let Some(t) = map.get_mut(tunnel) {
            let before = t.conns.len();
            t.conns.retain(|c| c.id != id);
            if t.conns.len() < before {
                crate::telemetry::metrics::get()
                    .tunnel_connections
                    .add(-1, &relay_attrs(tunnel));
            }
            if t.conns.is_empty() {
                map.remove(tunnel);
            }
        }
        drop(map);
        self.bump();
    }

    /// A sender on one of the tunnel's live connections, round robin.
    pub fn pick(&self, tunnel: &str) -> Option<SendRequest<Body>> {
        let mut map = self.lock();
        let t = map.get_mut(tunnel)?;
        let n = t.conns.len();
        for _ in 0..n {
            let i = t.next % n;
            t.next = t.next.wrapping_add(1);
            let c = t.conns.get(i)?;
            if !c.sender.is_closed() && c.sender.is_ready() {
                c.streams.fetch_add(1, Ordering::Relaxed);
                return Some(c.sender.clone());
            }
        }
        None
    }

    /// Live connections of a tunnel.
    pub fn connections(&self, tunnel: &str) -> usize {
        self.lock().get(tunnel).map_or(0, |t| {
            t.conns.iter().filter(|c| !c.sender.is_closed()).count()
        })
    }

    /// Streams sent so far on each live connection of a tunnel.
    pub fn streams_per_connection(&self, tunnel: &str) -> Vec<u64> {
        self.lock().get(tunnel).map_or_else(Vec::new, |t| {
            t.conns
                .iter()
                .map(|c| c.streams.load(Ordering::Relaxed))
                .collect()
        })
    }

    /// Tunnels with at least one connection.
    pub fn tunnel_count(&self) -> usize {
        self.lock().len()
    }

    /// Waits until `tunnel` has at least `n` live connections.
    pub async fn wait_for(&self, tunnel: &str, n: usize) {
        self.wait_until(tunnel, |c| c >= n).await;
    }

    /// Waits until `tunnel`'s count of live connections satisfies `pred`.
    pub async fn wait_until(&self, tunnel: &str, pred: impl Fn(usize) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if pred(self.connections(tunnel)) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

fn relay_attrs(tunnel: &str) -> [opentelemetry::KeyValue; 2] {
    [
        opentelemetry::KeyValue::new("portcullis.tunnel", tunnel.to_owned()),
        opentelemetry::KeyValue::new("portcullis.component", "relay"),
    ]
}
