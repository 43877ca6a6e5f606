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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::client::Sender;
use crate::limits;
use crate::session::owner::Instance;

/// One live tunnel connection.
#[derive(Clone)]
struct Conn {
    id: u64,
    sender: Sender,
    /// Streams sent so far.
    streams: Arc<AtomicU64>,
    /// Streams open now (leases held).
    open: Arc<AtomicUsize>,
    /// Streams it may carry at once: the lesser of the relay's limit and
    /// what the gateway announced.
    capacity: usize,
    /// The gateway instance that dialled it, when it said.
    instance: Option<Instance>,
    /// Takes no new streams: the relay is draining it, or the gateway
    /// refused a stream on it (it is going away).
    retired: Arc<AtomicBool>,
}

impl Conn {
    fn serves(&self, owner: Option<Instance>) -> bool {
        !self.sender.is_closed()
            && !self.retired.load(Ordering::Acquire)
            && owner.is_none_or(|o| self.instance == Some(o))
    }
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
    /// The tunnel is up, but no live connection comes from the gateway
    /// instance that owns the request's session (it restarted or left).
    OwnerGone,
    /// Every stream in use and the queue full, or the wait too long.
    Overloaded,
}

/// One stream of a tunnel connection, held until dropped.
pub struct Lease {
    pub sender: Sender,
    open: Arc<AtomicUsize>,
    retired: Arc<AtomicBool>,
    queue: Arc<Queue>,
}

impl Lease {
    /// Takes the stream's connection out of rotation: the gateway refused
    /// a stream on it, which it does only when going away.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
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
    /// A stream on a live connection of `owner` (any, when `None`) with
    /// room, round robin.
    fn try_lease(&mut self, owner: Option<Instance>) -> Option<Lease> {
        let n = self.conns.len();
        for _ in 0..n {
            let i = self.next % n;
            self.next = self.next.wrapping_add(1);
            let c = self.conns.get(i)?;
            if c.serves(owner) && c.open.load(Ordering::Acquire) < c.capacity {
                c.open.fetch_add(1, Ordering::AcqRel);
                c.streams.fetch_add(1, Ordering::Relaxed);
                return Some(Lease {
                    sender: c.sender.clone(),
                    open: c.open.clone(),
                    retired: c.retired.clone(),
                    queue: self.queue.clone(),
                });
            }
        }
        None
    }

    fn live(&self) -> usize {
        self.conns.iter().filter(|c| !c.sender.is_closed()).count()
    }

    /// Why no stream of `owner` can be had now, if none ever can: the
    /// tunnel offline, or the owner's connections gone.
    fn unservable(&self, owner: Option<Instance>) -> Option<Refused> {
        if !self.conns.iter().any(|c| c.serves(None)) {
            Some(Refused::Offline)
        } else if !self.conns.iter().any(|c| c.serves(owner)) {
            Some(Refused::OwnerGone)
        } else {
            None
        }
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

    /// Adds a connection that may carry `capacity` streams at once, from
    /// gateway `instance` when it said; returns its id for
    /// [`Registry::remove`].
    pub fn add(
        &self,
        tunnel: &str,
        sender: Sender,
        capacity: usize,
        instance: Option<Instance>,
    ) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        let t = map.entry(tunnel.to_owned()).or_default();
        t.conns.push(Conn {
            id,
            sender,
            streams: Arc::new(AtomicU64::new(0)),
            open: Arc::new(AtomicUsize::new(0)),
            capacity: capacity.max(1),
            instance,
            retired: Arc::default(),
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

    /// A stream on one of the tunnel's live connections, round robin; only
    /// on the connections of gateway `owner`, when the request belongs to
    /// one. When all are in use, waits in the tunnel's queue (a call of
    /// `bytes`) within `q`.
    pub async fn lease(
        &self,
        tunnel: &str,
        bytes: usize,
        q: QueueLimits,
        owner: Option<Instance>,
    ) -> Result<Lease, Refused> {
        // The common case: a stream is free, one look under the lock.
        match self.lock().get_mut(tunnel) {
            Some(t) => {
                if let Some(refused) = t.unservable(owner) {
                    return Err(refused);
                }
                if let Some(lease) = t.try_lease(owner) {
                    return Ok(lease);
                }
            }
            None => return Err(Refused::Offline),
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
                let Some(t) = map.get_mut(tunnel) else {
                    return Err(Refused::Offline);
                };
                if let Some(refused) = t.unservable(owner) {
                    return Err(refused);
                }
                if let Some(lease) = t.try_lease(owner) {
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

    /// Takes connection `id` out of rotation (the relay drains it): calls
    /// already on it finish, new ones go to the tunnel's other connections.
    pub fn retire(&self, tunnel: &str, id: u64) {
        let mut map = self.lock();
        if let Some(t) = map.get_mut(tunnel) {
            for c in t.conns.iter().filter(|c| c.id == id) {
                c.retired.store(true, Ordering::Release);
            }
            t.queue.room.notify_waiters();
        }
    }

    /// Streams open now on connection `id` of `tunnel`.
    pub fn open_on(&self, tunnel: &str, id: u64) -> usize {
        self.lock().get(tunnel).map_or(0, |t| {
            t.conns
                .iter()
                .filter(|c| c.id == id)
                .map(|c| c.open.load(Ordering::Acquire))
                .sum()
        })
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
