//! The gateway's tunnel connections: slots, each dialing a relay, serving
//! HTTP/2 on the upgraded stream, and reconnecting with jittered
//! exponential backoff; a graceful drain on shutdown. The slots are fixed
//! ([`Discovery::Static`]) or follow what the relay names resolve to
//! ([`Discovery::Dns`]): an address that appears gets slots, one that
//! disappears has its slots drained.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dial::{DialConfig, RelayTarget, dial_serving};
use super::discovery::{self, SlotKey};
use crate::body::Body;
use crate::limits;

/// Shape of the gateway's connection pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The relays as configured, `host:port` each.
    pub relays: Vec<RelayTarget>,
    /// How the relays become connections.
    pub discovery: Discovery,
    /// Concurrent streams per connection the gateway accepts.
    pub max_streams: u32,
    /// Grace period for in-flight streams on shutdown, and for the
    /// connections of a relay address that went away.
    pub drain_grace: Duration,
}

/// How a gateway finds the relay addresses it keeps connections to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// `connections` slots, slot `i` dialling `relays[i % relays.len()]`
    /// by name (each connect resolves it and takes the first address that
    /// answers).
    Static { connections: usize },
    /// Every `interval`, each relay name is resolved to all its addresses;
    /// each address gets `per_relay` connections (more when there are
    /// fewer than [`limits::MIN_TUNNEL_CONNECTIONS`] in all), dialled by
    /// IP and verified against the name's certificate.
    Dns {
        per_relay: usize,
        interval: Duration,
    },
}

/// Jittered exponential backoff between attempts to connect.
///
/// Only failures to connect grow it: a connection that came up sets it back
/// to [`limits::RECONNECT_BASE`], however soon it drops. For
/// [`limits::RECONNECT_AFTER_LOSS_WINDOW`] after a connection is lost the
/// delay stays under [`limits::RECONNECT_AFTER_LOSS_MAX`], so a relay that
/// restarts, even every few seconds, has every slot back about that soon
/// after it listens again; a relay that stays away is then tried less and
/// less often, up to [`limits::RECONNECT_MAX`].
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    lost_at: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: limits::RECONNECT_BASE,
            lost_at: None,
        }
    }
}

impl Backoff {
    /// The delay before the next attempt, at `now`: uniformly in `[d/2, d]`
    /// where `d` is the current step (capped as above); the step then
    /// doubles.
    pub fn delay(&mut self, now: Instant) -> Duration {
        let cap = match self.lost_at {
            Some(lost)
                if now.saturating_duration_since(lost) < limits::RECONNECT_AFTER_LOSS_WINDOW =>
            {
                limits::RECONNECT_AFTER_LOSS_MAX
            }
            _ => limits::RECONNECT_MAX,
        };
        let d = self.next.min(cap);
        self.next = (d * 2).min(limits::RECONNECT_MAX);
        let half = d / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    /// A connection came up: the next failure starts from the base.
    pub fn connected(&mut self) {
        self.next = limits::RECONNECT_BASE;
    }

    /// A connection that was up ended at `now`.
    pub fn lost(&mut self, now: Instant) {
        self.next = limits::RECONNECT_BASE;
        self.lost_at = Some(now);
    }
}

/// Connection counts the gateway publishes (for readiness and tests).
#[derive(Clone)]
pub struct PoolStatus {
    connected: watch::Receiver<usize>,
}

impl PoolStatus {
    /// Connections currently up.
    pub fn connected(&self) -> usize {
        *self.connected.borrow()
    }

    /// Waits until at least `n` connections are up.
    pub async fn wait_connected(&mut self, n: usize) {
        let _ = self.connected.wait_for(|c| *c >= n).await;
    }

    /// Waits until every connection is down.
    pub async fn wait_disconnected(&mut self) {
        let _ = self.connected.wait_for(|c| *c == 0).await;
    }
}

/// Starts the pool; returns its status handle. The pool runs until `shutdown`
/// is cancelled, then drains each connection within the grace period. The
/// returned join handle completes when every slot has stopped.
pub fn start<S, F>(
    dial_cfg: DialConfig,
    pool: PoolConfig,
    service: S,
    shutdown: CancellationToken,
) -> (PoolStatus, tokio::task::JoinHandle<()>)
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let (tx, rx) = watch::channel(0usize);
    let mut slots = Slots {
        dial_cfg: Arc::new(dial_cfg),
        pool: pool.clone(),
        service,
        connected: Arc::new(tx),
        tasks: JoinSet::new(),
        next_id: 0,
    };
    let all = tokio::spawn(async move {
        match pool.discovery {
            Discovery::Static { connections } => {
                for i in 0..connections {
                    let Some(target) = pool.relays.get(i % pool.relays.len().max(1)) else {
                        break;
                    };
                    slots.spawn(target.clone(), shutdown.clone());
                }
            }
            Discovery::Dns {
                per_relay,
                interval,
            } => discover(&pool.relays, per_relay, interval, &mut slots, &shutdown).await,
        }
        while slots.tasks.join_next().await.is_some() {}
    });
    (PoolStatus { connected: rx }, all)
}

/// What every slot of a pool shares, and the slots' tasks.
struct Slots<S> {
    dial_cfg: Arc<DialConfig>,
    pool: PoolConfig,
    service: S,
    connected: Arc<watch::Sender<usize>>,
    tasks: JoinSet<()>,
    next_id: usize,
}

impl<S, F> Slots<S>
where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    /// Starts a slot dialling `target` until `stop` is cancelled.
    fn spawn(&mut self, target: RelayTarget, stop: CancellationToken) {
        let id = self.next_id;
        self.next_id += 1;
        self.tasks.spawn(run_slot(
            id,
            target,
            self.dial_cfg.clone(),
            self.pool.clone(),
            self.service.clone(),
            self.connected.clone(),
            stop,
        ));
    }

    /// Forgets the slots that were stopped and have drained.
    fn reap(&mut self) {
        while self.tasks.try_join_next().is_some() {}
    }
}

/// [`Discovery::Dns`]: resolves `names` every `interval` and starts and
/// stops slots to match, until `shutdown`. A name that fails to resolve,
/// or resolves to nothing, keeps the addresses it had; until some name has
/// resolved, lookups are retried with the reconnect backoff.
async fn discover<S, F>(
    names: &[RelayTarget],
    per_relay: usize,
    interval: Duration,
    slots: &mut Slots<S>,
    shutdown: &CancellationToken,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut answers = vec![Vec::new(); names.len()];
    let mut running: BTreeMap<SlotKey, CancellationToken> = BTreeMap::new();
    let mut backoff = Backoff::default();
    loop {
        let lookups =
            futures_util::future::join_all(names.iter().map(|n| discovery::resolve(&n.addr)));
        let results = tokio::select! {
            r = lookups => r,
            () = shutdown.cancelled() => return,
        };
        for ((name, result), known) in names.iter().zip(results).zip(answers.iter_mut()) {
            match result {
                Ok(addrs) => *known = addrs,
                Err(e) => tracing::warn!(
                    relay = %name.addr, error = %e, kept = known.len(),
                    "relay discovery failed; keeping the addresses already known"
                ),
            }
        }
        let targets = discovery::targets(names, &answers);
        if !targets.is_empty() {
            let keys: BTreeSet<SlotKey> = running.keys().copied().collect();
            let wanted: BTreeSet<_> = targets.keys().copied().collect();
            let plan = discovery::plan(&keys, &wanted, per_relay);
            for addr in &plan.added {
                let name = targets.get(addr).map_or("", |t| t.addr.as_str());
                tracing::info!(relay = name, %addr, "relay address added");
            }
            for addr in &plan.removed {
                tracing::info!(%addr, "relay address gone; draining its connections");
            }
            for key in &plan.stop {
                if let Some(stop) = running.remove(key) {
                    stop.cancel();
                }
            }
            for key in plan.start {
                if let Some(target) = targets.get(&key.addr) {
                    let stop = shutdown.child_token();
                    slots.spawn(target.clone(), stop.clone());
                    running.insert(key, stop);
                }
            }
        }
        slots.reap();
        let wait = if running.is_empty() {
            backoff.delay(Instant::now())
        } else {
            backoff.connected();
            interval
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn run_slot<S, F>(
    slot: usize,
    target: RelayTarget,
    dial_cfg: Arc<DialConfig>,
    pool: PoolConfig,
    service: S,
    connected: Arc<watch::Sender<usize>>,
    shutdown: CancellationToken,
) where
    S: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let mut backoff = Backoff::default();
    let mut ever_connected = false;
    let relay = match target.resolved {
        Some(ip) => format!("{} ({ip})", target.addr),
        None => target.addr.clone(),
    };
    let tunnel_attr = [
        opentelemetry::KeyValue::new("portcullis.tunnel", dial_cfg.tunnel_id.clone()),
        opentelemetry::KeyValue::new("portcullis.component", "gateway"),
    ];
    let metrics = crate::telemetry::metrics::get();
    while !shutdown.is_cancelled() {
        let attempt = tokio::time::timeout(
            limits::HANDSHAKE_TIMEOUT,
            dial_serving(&dial_cfg, &target, pool.max_streams),
        );
        let upgraded = tokio::select! {
            r = attempt => r,
            () = shutdown.cancelled() => break,
        };
        match upgraded {
            Ok(Ok(io)) => {
                backoff.connected();
                connected.send_modify(|c| *c += 1);
                metrics.tunnel_connections.add(1, &tunnel_attr);
                if ever_connected {
                    metrics.tunnel_reconnects.add(1, &tunnel_attr[..1]);
                }
                ever_connected = true;
                tracing::info!(slot, relay = %relay, tunnel = %dial_cfg.tunnel_id, "tunnel connected");
                let svc = hyper::service::service_fn(service.clone());
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(pool.max_streams)
                    // The relay is authenticated: agents that leave mid-call
                    // reset streams in bursts, which must not trip the
                    // rapid-reset guard and close the tunnel.
                    .max_pending_accept_reset_streams(limits::TUNNEL_MAX_PENDING_RESETS)
                    .keep_alive_interval(limits::KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(limits::KEEPALIVE_TIMEOUT)
                    .serve_connection(io, svc);
                tokio::pin!(conn);
                let result = tokio::select! {
                    r = conn.as_mut() => r,
                    () = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        match tokio::time::timeout(pool.drain_grace, conn.as_mut()).await {
                            Ok(r) => r,
                            Err(_) => {
                                tracing::warn!(slot, "drain grace period over; closing with streams in flight");
                                Ok(())
                            }
                        }
                    }
                };
                connected.send_modify(|c| *c = c.saturating_sub(1));
                metrics.tunnel_connections.add(-1, &tunnel_attr);
                match result {
                    Ok(()) => {
                        tracing::info!(slot, relay = %relay, "tunnel connection closed")
                    }
                    // Shutting down: the relay may close first (`up` stops
                    // both at once); that is the end asked for, not a loss.
                    Err(e) if shutdown.is_cancelled() => {
                        tracing::debug!(slot, relay = %relay, error = %e, "tunnel connection closed during shutdown")
                    }
                    Err(e) => {
                        tracing::warn!(slot, relay = %relay, error = %e, "tunnel connection lost")
                    }
                }
                backoff.lost(Instant::now());
            }
            Ok(Err(e)) => {
                tracing::warn!(slot, relay = %relay, error = %e, "tunnel connect failed")
            }
            Err(_) => tracing::warn!(slot, relay = %relay, "tunnel handshake timed out"),
        }
        if shutdown.is_cancelled() {
            break;
        }
        let delay = backoff.delay(Instant::now());
        tracing::debug!(slot, ?delay, "reconnecting after delay");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_to_connect_grow_the_backoff_with_jitter() {
        let now = Instant::now();
        let mut b = Backoff::default();
        let base = limits::RECONNECT_BASE;
        let first = b.delay(now);
        assert!(first >= base / 2 && first <= base);
        let second = b.delay(now);
        assert!(second >= base && second <= base * 2);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = b.delay(now);
            assert!(last <= limits::RECONNECT_MAX);
        }
        // A relay that was never reached is, in the end, tried rarely.
        assert!(last >= limits::RECONNECT_MAX / 2, "{last:?}");
        b.connected();
        assert!(b.delay(now) <= base);
    }

    #[test]
    fn a_connection_that_came_up_and_dropped_does_not_grow_the_backoff() {
        let mut now = Instant::now();
        let mut b = Backoff::default();
        // A relay that flaps: each connection comes up, lasts 2 s, drops;
        // two attempts fail while the relay restarts. Never more than the
        // after-loss cap, however many times it happens.
        for _ in 0..50 {
            b.connected();
            now += Duration::from_secs(2);
            b.lost(now);
            assert!(b.delay(now) <= limits::RECONNECT_BASE);
            for _ in 0..2 {
                assert!(b.delay(now) <= limits::RECONNECT_AFTER_LOSS_MAX);
            }
        }
    }

    #[test]
    fn after_a_loss_retries_stay_fast_for_the_window_then_slow_down() {
        let mut now = Instant::now();
        let mut b = Backoff::default();
        b.connected();
        b.lost(now);
        // The relay stays away: within the window every delay is capped.
        let mut waited = Duration::ZERO;
        while waited < limits::RECONNECT_AFTER_LOSS_WINDOW {
            let d = b.delay(now);
            assert!(d <= limits::RECONNECT_AFTER_LOSS_MAX, "{d:?} at {waited:?}");
            waited += d;
            now += d;
        }
        // After it, the backoff grows again, doubling from the cap.
        let mut after = Vec::new();
        for _ in 0..10 {
            after.push(b.delay(now));
        }
        assert!(after.iter().any(|d| *d > limits::RECONNECT_AFTER_LOSS_MAX));
        assert!(after.iter().all(|d| *d <= limits::RECONNECT_MAX));
        assert!(*after.last().unwrap() >= limits::RECONNECT_MAX / 2);
    }
}
