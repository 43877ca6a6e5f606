//! The relay's view of live tunnel connections, and how it spreads streams
//! over them.
//!
//! A call takes a [`Lease`] on one connection's stream for as long as its
//! response lives. When every stream of a tunnel is in use, calls wait in a
//! bounded queue (count, bytes and time: [`QueueLimits`]) and are refused as
//! [`Refused::Overloaded`] beyond it, so a flood of calls cannot grow the
//! relay's memory without limit. A waiting call is not a stream yet: an
//! agent that goes away while it waits costs nothing on the tunnel.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use tokio::sync::{Notify, watch};

use crate::body::Body;
use crate::limits;

/// One live tunnel connection.
#[derive(Clone)]
struct Conn {
    id: u64,
    sender: SendRequest<Body>,
    /// Streams sent so far.
    streams: Arc<AtomicU64>,
    /// Streams open now (leases held).
    open: Arc<AtomicUsize>,
    /// Streams it may carry at once: the lesser of the relay's limit and
    /// what the gateway announced.
    capacity: usize,
}

/// Calls waiting for a stream of one tunnel.
#[derive(Default)]
struct Queue {
    calls: AtomicUsize,
    bytes: AtomicUsize,
    /// Woken when a stream is released or a connection comes or goes.
    room: Notify,
}

#[derive(Default)]
struct Tunnel {
    conns: Vec<Conn>,
    next: usize,
    /// Kept while the tunnel has no connection, so waiting calls keep
    /// their accounting.
    queue: Arc<Queue>,
}

/// How long and how many calls may wait for a tunnel stream.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub calls: usize,
    pub bytes: usize,
    pub wait: Duration,
}

impl Default for QueueLimits {
    fn default() -> QueueLimits {
        QueueLimits {
            calls: limits::TUNNEL_QUEUE_MAX,
            bytes: limits::TUNNEL_QUEUE_BYTES,
            wait: limits::TUNNEL_QUEUE_WAIT,
        }
    }
}

/// Why no stream was leased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No live connection for the tunnel.
    Offline,
    /// Every stream in use and the queue full, or the wait too long.
    Overloaded,
}

/// One stream of a tunnel connection, held until dropped.
pub struct Lease {
    pub sender: SendRequest<Body>,
    open: Arc<AtomicUsize>,
    queue: Arc<Queue>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.queue.room.notify_one();
    }
}

/// A call's place in a tunnel's queue, given up when dropped.
struct Waiting {
    queue: Arc<Queue>,
    bytes: usize,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.queue.calls.fetch_sub(1, Ordering::AcqRel);
        self.queue.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Tunnel {
    /// A stream on a live connection with room, round robin.
    fn try_lease(&mut self) -> Option<Lease> {
        let n = self.conns.len();
        for _ in 0..n {
            let i = self.next % n;
            self.next = self.next.wrapping_add(1);
            let c = self.conns.get(i)?;
            if !c.sender.is_closed()
                && c.sender.is_ready()
                && c.open.load(Ordering::Acquire) < c.capacity
            {
                c.open.fetch_add(1, Ordering::AcqRel);
                c.streams.fetch_add(1, Ordering::Relaxed);
                return Some(Lease {
                    sender: c.sender.clone(),
                    open: c.open.clone(),
                    queue: self.queue.clone(),
                });
            }
        }
        None
    }

    fn live(&self) -> usize {
        self.conns.iter().filter(|c| !c.sender.is_closed()).count()
    }
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

    /// Adds a connection that may carry `capacity` streams at once; returns
    /// its id for [`Registry::remove`].
    pub fn add(&self, tunnel: &str, sender: SendRequest<Body>, capacity: usize) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        let t = map.entry(tunnel.to_owned()).or_default();
        t.conns.push(Conn {
            id,
            sender,
            streams: Arc::new(AtomicU64::new(0)),
            open: Arc::new(AtomicUsize::new(0)),
            capacity: capacity.max(1),
        });
        t.queue.room.notify_waiters();
        drop(map);
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
            // Waiting calls look again: at another connection, or find
            // the tunnel offline.
            t.queue.room.notify_waiters();
        }
        drop(map);
        self.bump();
    }

    /// A stream on one of the tunnel's live connections, round robin; when
    /// all are in use, waits in the tunnel's queue (a call of `bytes`) within
    /// `q`.
    pub async fn lease(
        &self,
        tunnel: &str,
        bytes: usize,
        q: QueueLimits,
    ) -> Result<Lease, Refused> {
        // The common case: a stream is free, one look under the lock.
        match self.lock().get_mut(tunnel) {
            Some(t) if t.live() > 0 => {
                if let Some(lease) = t.try_lease() {
                    return Ok(lease);
                }
            }
            _ => return Err(Refused::Offline),
        }
        let deadline = tokio::time::Instant::now() + q.wait;
        let mut waiting: Option<Waiting> = None;
        loop {
            let queue = match self.lock().get(tunnel) {
                Some(t) => t.queue.clone(),
                None => return Err(Refused::Offline),
            };
            // Registered before looking, so no release, new connection or
            // lost one between the look and the wait goes unseen.
            let notified = queue.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut map = self.lock();
                let t = match map.get_mut(tunnel) {
                    Some(t) if t.live() > 0 => t,
                    _ => return Err(Refused::Offline),
                };
                if let Some(lease) = t.try_lease() {
                    return Ok(lease);
                }
                if waiting.is_none() {
                    if queue.calls.load(Ordering::Acquire) >= q.calls
                        || queue.bytes.load(Ordering::Acquire).saturating_add(bytes) > q.bytes
                    {
                        return Err(Refused::Overloaded);
                    }
                    queue.calls.fetch_add(1, Ordering::AcqRel);
                    queue.bytes.fetch_add(bytes, Ordering::AcqRel);
                    waiting = Some(Waiting {
                        queue: queue.clone(),
                        bytes,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Refused::Overloaded);
            }
        }
    }

    /// Calls waiting for a stream of `tunnel` now.
    pub fn queued(&self, tunnel: &str) -> usize {
        self.lock()
            .get(tunnel)
            .map_or(0, |t| t.queue.calls.load(Ordering::Acquire))
    }

    /// Streams open now on `tunnel`'s connections.
    pub fn open_streams(&self, tunnel: &str) -> usize {
        self.lock().get(tunnel).map_or(0, |t| {
            t.conns.iter().map(|c| c.open.load(Ordering::Acquire)).sum()
        })
    }

    /// Whether `tunnel` has a live connection.
    pub fn is_online(&self, tunnel: &str) -> bool {
        self.lock()
            .get(tunnel)
            .is_some_and(|t| t.conns.iter().any(|c| !c.sender.is_closed()))
    }

    /// Live connections of a tunnel.
    pub fn connections(&self, tunnel: &str) -> usize {
        self.lock().get(tunnel).map_or(0, Tunnel::live)
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
        self.lock().values().filter(|t| !t.conns.is_empty()).count()
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
